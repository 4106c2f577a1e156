//! A lab started with `harun lab up` for one test, stopped when the test ends.

use std::path::Path;
use std::time::{Duration, Instant};

use super::http::{request, request_with, Reply};
use super::Test;

/// A shipped script: `scripts/NAME`.
pub fn script(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("scripts")
        .join(name)
}

/// The secrets `lab up` writes into Vault: path, field, value.
pub const SECRETS: [(&str, &str, &str); 3] = [
    ("homelab/nas", "password", "correct-horse-battery"),
    ("homelab/wifi", "psk", "not-a-real-psk"),
    ("homelab/grafana", "admin_password", "grafana-lab-only"),
];

pub struct Lab {
    pub test: Test,
    pub dir: std::path::PathBuf,
}

impl Lab {
    pub fn up() -> Lab {
        Lab::up_with(&[])
    }

    /// A lab started with extra `lab up` options (`--workers 2`, `--nomad-without-consul`).
    /// A lab (with `lab up` options) taken to HA by ha.rhai, which must end OK: the
    /// starting point of the tests of what HA is for.
    pub fn at_ha(options: &[&str]) -> Lab {
        let lab = Lab::up_with(options);
        let ha = lab.harun(&[script("ha.rhai").to_str().unwrap()]);
        assert_eq!(
            ha.status.code(),
            Some(0),
            "ha.rhai:\n{}\n{}",
            String::from_utf8_lossy(&ha.stdout),
            String::from_utf8_lossy(&ha.stderr)
        );
        lab
    }

    pub fn up_with(options: &[&str]) -> Lab {
        let test = Test::new();
        let dir = test.path("lab");
        let out = test
            .command()
            .args(["lab", "up", "--dir"])
            .arg(&dir)
            .args(options)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let printed = String::from_utf8_lossy(&out.stdout).trim().to_string();
        assert_eq!(
            Path::new(&printed),
            std::fs::canonicalize(&dir).unwrap().join("harun.hcl")
        );
        Lab { test, dir }
    }

    pub fn address(&self, host: &str) -> String {
        let topology = std::fs::read_to_string(self.dir.join("harun.hcl")).unwrap();
        let block = &topology[topology.find(&format!("host \"{host}\"")).unwrap()..];
        let value = &block[block.find("address").unwrap()..];
        value.split('"').nth(1).unwrap().to_string()
    }

    /// The lab's controllers, as its topology names them (`--controllers` decides how many).
    pub fn controllers(&self) -> Vec<String> {
        let topology = std::fs::read_to_string(self.dir.join("harun.hcl")).unwrap();
        topology
            .split("host \"")
            .skip(1)
            .filter(|block| block.contains("roles   = [\"controller\"]"))
            .map(|block| block.split('"').next().unwrap().to_string())
            .collect()
    }

    pub fn consul(&self, host: &str, path: &str) -> String {
        format!("http://{}:8500{path}", self.address(host))
    }

    pub fn vault(&self, host: &str, path: &str) -> String {
        format!("http://{}:8200{path}", self.address(host))
    }

    pub fn root_token(&self) -> String {
        std::fs::read_to_string(self.dir.join("vault-root-token"))
            .unwrap()
            .trim()
            .to_string()
    }

    pub fn unseal_keys(&self) -> Vec<String> {
        std::fs::read_to_string(self.dir.join("vault-unseal-keys"))
            .unwrap()
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// A Vault request with the root token.
    pub fn vault_call(&self, method: &str, host: &str, path: &str, body: &str) -> Reply {
        let token = self.root_token();
        request_with(
            method,
            &self.vault(host, path),
            body,
            &[("X-Vault-Token", token.as_str())],
        )
        .unwrap_or_else(|e| panic!("{method} {path} on {host}: {e}"))
    }

    pub fn harun(&self, args: &[&str]) -> std::process::Output {
        self.test
            .command()
            .args(["--topology"])
            .arg(self.dir.join("harun.hcl"))
            .args(args)
            .output()
            .unwrap()
    }

    /// `harun lab SUBCOMMAND --dir DIR ARGS...` on this lab.
    pub fn lab(&self, subcommand: &str, args: &[&str]) -> std::process::Output {
        self.test
            .command()
            .args(["lab", subcommand, "--dir"])
            .arg(&self.dir)
            .args(args)
            .output()
            .unwrap()
    }

    /// `harun lab status`'s line for one service of one host.
    pub fn status_line(&self, host: &str, service: &str) -> String {
        let out = self.lab("status", &[]);
        assert!(out.status.success(), "lab status failed: {out:?}");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.lines()
            .find(|l| {
                l.split_whitespace().next() == Some(host)
                    && l.split_whitespace().nth(2) == Some(service)
            })
            .unwrap_or_else(|| panic!("no {host} {service} line in:\n{text}"))
            .to_string()
    }

    /// Gives `path` and everything under it to the lab's Vault user (`chown -R`), as an
    /// operator must after making or migrating raft data as root.
    pub fn give_to_vault(&self, path: &Path) {
        let topology = std::fs::read_to_string(self.dir.join("harun.hcl")).unwrap();
        let line = topology
            .lines()
            .find(|l| l.trim_start().starts_with("user "))
            .expect("the topology names the vault user");
        let user = line.split('"').nth(1).unwrap();
        let out = std::process::Command::new("chown")
            .args(["-R", user])
            .arg(path)
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
    }

    pub fn ctl(&self, host: &str, service: &str, action: &str) -> std::process::Output {
        self.lab("ctl", &[host, service, action])
    }

    pub fn set_config(&self, host: &str, service: &str, edit: impl Fn(String) -> String) {
        let path = self.dir.join(host).join(format!("{service}.hcl"));
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::write(&path, edit(text)).unwrap();
    }
}

impl Lab {
    /// Every secret `lab up` wrote, read through every controller; `context` names the
    /// moment in the failure message.
    pub fn assert_secrets(&self, context: &str) {
        for host in self.controllers() {
            for (path, field, value) in SECRETS {
                let r = self.vault_call("GET", &host, &format!("/v1/secret/data/{path}"), "");
                assert_eq!(
                    r.json()["data"]["data"][field],
                    value,
                    "{context}: {host} {path}"
                );
            }
        }
    }

    /// `harun --topology LAB --audit-log AUDIT [ARGS] scripts/NAME`, started in the
    /// background with its stdout dropped and its stderr in `stderr`: a run to interrupt.
    pub fn spawn_script(
        &self,
        name: &str,
        audit: &Path,
        stderr: &Path,
        args: &[&str],
    ) -> std::process::Child {
        self.script_command(name, audit, args)
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(stderr).unwrap())
            .spawn()
            .unwrap()
    }

    /// `spawn_script` under coreutils `timeout -s KILL` (the child is `timeout`, in a
    /// process group of its own with harun): killing that group is what timeout does when
    /// its time is up, and harun, its parent gone, is left for init to reap.
    pub fn spawn_script_under_timeout(
        &self,
        name: &str,
        audit: &Path,
        stderr: &Path,
        args: &[&str],
    ) -> std::process::Child {
        let inner = self.script_command(name, audit, args);
        let mut cmd = std::process::Command::new("timeout");
        cmd.args(["-s", "KILL", "3600"])
            .arg(inner.get_program())
            .args(inner.get_args());
        if let Some(dir) = inner.get_current_dir() {
            cmd.current_dir(dir);
        }
        for (key, value) in inner.get_envs() {
            match value {
                Some(value) => cmd.env(key, value),
                None => cmd.env_remove(key),
            };
        }
        cmd.stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(stderr).unwrap())
            .spawn()
            .unwrap()
    }

    fn script_command(&self, name: &str, audit: &Path, args: &[&str]) -> std::process::Command {
        let mut cmd = self.test.command();
        cmd.arg("--topology")
            .arg(self.dir.join("harun.hcl"))
            .arg("--audit-log")
            .arg(audit)
            .args(args)
            .arg(script(name));
        cmd
    }
}

/// The audit log's lines as `TARGET SUMMARY`, in order.
pub fn audited(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            format!(
                "{} {}",
                v["target"].as_str().unwrap(),
                v["summary"].as_str().unwrap()
            )
        })
        .collect()
}

/// How many changes to the cluster the audit log holds: taking the run's lock is audited
/// too, and not counted.
pub fn changes_in(audit: &Path) -> usize {
    std::fs::read_to_string(audit)
        .map(|t| {
            t.lines()
                .filter(|l| !l.contains("consul: take the lock "))
                .count()
        })
        .unwrap_or(0)
}

/// Waits until the audit log holds `changes` changes to the cluster; fails when `run`
/// ends first.
pub fn wait_for_changes(audit: &Path, changes: usize, run: &mut std::process::Child, name: &str) {
    let started = Instant::now();
    loop {
        if changes_in(audit) >= changes {
            return;
        }
        assert!(
            run.try_wait().unwrap().is_none(),
            "{name} ended before change {changes}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(180),
            "{name}: no change {changes} in time"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.print_log_tails();
        }
        let _ = self.lab("down", &[]);
    }
}

impl Lab {
    /// The last lines each service of each host logged, for a failed test's output: the
    /// lab goes with the test.
    fn print_log_tails(&self) {
        let Ok(hosts) = std::fs::read_dir(&self.dir) else {
            return;
        };
        let mut logs: Vec<std::path::PathBuf> = hosts
            .flatten()
            .filter_map(|h| std::fs::read_dir(h.path().join("log")).ok())
            .flat_map(|logs| logs.flatten().map(|l| l.path()))
            .collect();
        logs.sort();
        for log in logs {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            let tail = lines[lines.len().saturating_sub(15)..].join("\n");
            eprintln!("--- {} (last lines)\n{tail}", log.display());
        }
    }
}

pub fn leader(url: &str) -> Option<String> {
    let reply = request("GET", url, "").ok()?;
    let leader: String = serde_json::from_str(&reply.body).ok()?;
    (!leader.is_empty()).then_some(leader)
}
