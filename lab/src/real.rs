//! Real server binaries the lab runs in place of its twins (`harun lab up --real`): the
//! operator's own `consul` and OpenBao `bao`, in the versions they run, so a rehearsal on
//! the lab is a rehearsal on their servers. What is not installed stays a twin (Nomad,
//! here).

use std::path::{Path, PathBuf};
use std::process::Command;

use serde::{Deserialize, Serialize};

/// One real server binary: where it is and the version it reports.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Binary {
    pub path: PathBuf,
    /// `major.minor.patch`, as `consul version` prints it after the `v`.
    pub version: String,
}

impl Binary {
    /// `(major, minor)`, for config keys that changed between versions.
    pub fn major_minor(&self) -> (u32, u32) {
        let mut parts = self.version.split('.').map(|p| p.parse().unwrap_or(0));
        (parts.next().unwrap_or(0), parts.next().unwrap_or(0))
    }
}

/// Which services run real servers; `None` is a twin.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct RealServers {
    #[serde(default)]
    pub consul: Option<Binary>,
    /// OpenBao's `bao`: it speaks Vault's API and reads Vault's config format, but has no
    /// file storage to start from and cannot register itself in Consul.
    #[serde(default)]
    pub openbao: Option<Binary>,
}

impl RealServers {
    /// The real binary of `service`, if it runs one.
    pub fn binary(&self, service: &str) -> Option<&Binary> {
        match service {
            "consul" => self.consul.as_ref(),
            "vault" => self.openbao.as_ref(),
            _ => None,
        }
    }

    /// `lab status`'s line: which services are real (path and version), which twins.
    pub fn describe(&self) -> String {
        let mut real = vec![];
        let mut twins = vec![];
        for service in ["consul", "nomad", "vault"] {
            let name = if service == "vault" {
                "openbao"
            } else {
                service
            };
            match self.binary(service) {
                Some(b) => real.push(format!("{name} {} ({})", b.version, b.path.display())),
                None => twins.push(service),
            }
        }
        let real = if real.is_empty() {
            "none".to_string()
        } else {
            real.join(", ")
        };
        format!("real servers: {real}; twins: {}", twins.join(", "))
    }
}

/// What the user asked for: `--real` looks on PATH; `--consul-bin` names the binary (and
/// implies `--real` for Consul).
#[derive(Clone, Debug, Default)]
pub struct Wanted {
    pub real: bool,
    pub consul_bin: Option<PathBuf>,
    /// OpenBao's `bao` (implies `--real` for Vault).
    pub vault_bin: Option<PathBuf>,
}

/// Finds the binaries asked for. A binary named explicitly must work; one looked up on
/// PATH may be missing (that service stays a twin, and the returned notes say so).
pub fn find(wanted: &Wanted) -> Result<(RealServers, Vec<String>), String> {
    let mut notes = vec![];
    let consul = match (&wanted.consul_bin, wanted.real) {
        (Some(path), _) => Some(binary(path, "Consul")?),
        (None, true) => match on_path("consul") {
            Some(path) => Some(binary(&path, "Consul")?),
            None => {
                notes.push("no `consul` on PATH: Consul runs as the lab's twin".to_string());
                None
            }
        },
        (None, false) => None,
    };
    let openbao = match (&wanted.vault_bin, wanted.real) {
        (Some(path), _) => Some(binary(path, "OpenBao").map_err(|e| {
            format!("{e} (the lab runs OpenBao's `bao`; HashiCorp Vault stays a twin)")
        })?),
        (None, true) => match on_path("bao") {
            Some(path) => Some(binary(&path, "OpenBao")?),
            None => {
                notes.push(
                    "no OpenBao `bao` on PATH: Vault runs as the lab's twin (a HashiCorp `vault` \
                     binary is not run by the lab)"
                        .to_string(),
                );
                None
            }
        },
        (None, false) => None,
    };
    if wanted.real || consul.is_some() || openbao.is_some() {
        notes.push("Nomad runs as the lab's twin".to_string());
    }
    Ok((RealServers { consul, openbao }, notes))
}

/// `name` on PATH, as the shell would run it.
fn on_path(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(name))
            .find(|p| is_executable(p))
    })
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// A server binary and its version: `version` prints `name`, ` v` and the version first
/// ("Consul v1.8.7", "OpenBao v2.7.2 (commit), committed ...").
fn binary(path: &Path, name: &str) -> Result<Binary, String> {
    let prefix = format!("{name} v");
    let out = Command::new(path)
        .arg("version")
        .output()
        .map_err(|e| format!("cannot run {} version: {e}", path.display()))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let version = text
        .lines()
        .next()
        .and_then(|l| l.strip_prefix(prefix.as_str()))
        .map(|v| v.split_whitespace().next().unwrap_or(v).to_string())
        .filter(|_| out.status.success())
        .ok_or_else(|| {
            format!(
                "{} is not {name}: its `version` printed {:?}",
                path.display(),
                text.lines().next().unwrap_or("")
            )
        })?;
    let path = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    Ok(Binary { path, version })
}

/// The line that turns on Consul's UI in the version that runs it: `ui_config` came in
/// 1.9; 1.8 refuses it as an unknown key and knows only `ui`.
pub fn consul_ui_line(real: Option<&Binary>) -> &'static str {
    match real.map(Binary::major_minor) {
        Some((1, minor)) if minor < 9 => "ui = true\n",
        _ => "ui_config {\n  enabled = true\n}\n",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consul_1_8_gets_the_ui_key_it_knows() {
        let b = |v: &str| Binary {
            path: "/usr/bin/consul".into(),
            version: v.into(),
        };
        assert_eq!(consul_ui_line(Some(&b("1.8.7"))), "ui = true\n");
        assert!(consul_ui_line(Some(&b("1.9.0"))).starts_with("ui_config"));
        assert!(consul_ui_line(Some(&b("1.17.2"))).starts_with("ui_config"));
        assert!(consul_ui_line(None).starts_with("ui_config"));
    }
}
