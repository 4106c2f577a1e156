//! Snapshots of Consul, Nomad and Vault: saved from the API to a local file, checked as
//! the servers' own clients check them, and restored.
//!
//! All three speak one archive format (Consul's snapshot/archive.go, which Nomad's
//! helper/snapshot and Vault's raft snapshots follow): a gzip-compressed tar holding
//! `meta.json` (raft's snapshot metadata), `state.bin` (the state) and `SHA256SUMS` (the
//! sums of those two, `<hex>  <name>` per line); Vault adds `SHA256SUMS.sealed`, the sums
//! encrypted by its barrier. A snapshot is streamed into a temporary file beside its final
//! name (mode 0600: a Consul snapshot holds ACL tokens and KV in clear), checked there, and
//! renamed only when it passes, so no half file ever has the final name.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;
use std::time::Duration;

use harun_runtime::codes;
use harun_runtime::error::call_error;
use harun_runtime::service::Service;
use harun_runtime::{Action, Context};
use rhai::{EvalAltResult, Map, NativeCallContext};
use serde_json::Value;
use sha2::Digest;

use crate::hosts::HostHandle;
use crate::http::ApiClient;

type RhaiResult<T> = Result<T, Box<EvalAltResult>>;

/// How long a snapshot may take to arrive or to be restored: a large state on a Pi.
const TRANSFER_TIMEOUT: Duration = Duration::from_secs(300);

/// Where each service serves its snapshots: the path, and the method of a restore.
fn endpoint(service: Service) -> (&'static str, &'static str) {
    match service {
        // agent/snapshot_endpoint.go: GET saves, PUT restores.
        Service::Consul => ("/v1/snapshot", "PUT"),
        // command/agent/operator_endpoint.go: GET /v1/operator/snapshot, PUT restores.
        Service::Nomad => ("/v1/operator/snapshot", "PUT"),
        // http/sys_raft.go: GET saves, POST restores (snapshot-force skips the keyring check).
        Service::Vault => ("/v1/sys/storage/raft/snapshot", "POST"),
    }
}

/// What a checked snapshot holds.
#[derive(Debug)]
pub struct Checked {
    /// The raft index the snapshot was taken at.
    pub index: u64,
    /// The raft servers' addresses in the snapshot's configuration.
    pub servers: Vec<String>,
    /// Which service's snapshot it looks like, from its raft ports, when they say.
    pub kind: Option<Service>,
}

/// Checks a snapshot archive as the servers' clients do: it opens, holds exactly the
/// files of its service's format, and the sums match. The error says what is wrong.
pub fn check(service: Service, bytes: &[u8]) -> Result<Checked, String> {
    check_from(service, bytes)
}

/// [`check`] reading the archive as a stream: the state, the large part, is hashed as it
/// is read and never held whole.
pub fn check_from(service: Service, archive: impl Read) -> Result<Checked, String> {
    let mut small: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    let mut state_sum = None;
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(archive));
    let entries = archive
        .entries()
        .map_err(|e| format!("not a gzip tar archive: {e}"))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| format!("the archive is damaged or cut short: {e}"))?;
        let name = entry
            .path()
            .map_err(|e| format!("a bad file name in the archive: {e}"))?
            .to_string_lossy()
            .to_string();
        let cut = |e: std::io::Error| format!("the archive is damaged or cut short in {name}: {e}");
        if name == "state.bin" {
            let mut hasher = sha2::Sha256::new();
            std::io::copy(&mut entry, &mut hasher).map_err(cut)?;
            state_sum = Some(hex(&hasher.finalize()));
        } else {
            let mut data = Vec::new();
            entry.read_to_end(&mut data).map_err(cut)?;
            small.insert(name, data);
        }
    }
    let mut expected = vec!["SHA256SUMS", "meta.json", "state.bin"];
    if service == Service::Vault {
        expected.push("SHA256SUMS.sealed");
    }
    expected.sort_unstable();
    let mut found: Vec<&str> = small.keys().map(String::as_str).collect();
    if state_sum.is_some() {
        found.push("state.bin");
    }
    found.sort_unstable();
    if found != expected {
        return Err(format!(
            "holds {} where a {service} snapshot holds {}",
            if found.is_empty() {
                "no files".to_string()
            } else {
                found.join(", ")
            },
            expected.join(", ")
        ));
    }
    // Every file the sums name matches, and both data files are named.
    let sums = String::from_utf8_lossy(&small["SHA256SUMS"]).to_string();
    let mut summed = Vec::new();
    for line in sums.lines().filter(|l| !l.is_empty()) {
        let (sum, name) = line
            .split_once("  ")
            .ok_or_else(|| format!("SHA256SUMS has a bad line: {line:?}"))?;
        let actual = match name {
            "state.bin" => state_sum.clone(),
            _ => small.get(name).map(|data| hex(&sha2::Sha256::digest(data))),
        }
        .ok_or_else(|| format!("SHA256SUMS names {name:?}, which the archive lacks"))?;
        if actual != sum.to_ascii_lowercase() {
            return Err(format!(
                "the SHA-256 sum of {name} does not match SHA256SUMS"
            ));
        }
        summed.push(name);
    }
    for name in ["meta.json", "state.bin"] {
        if !summed.contains(&name) {
            return Err(format!("SHA256SUMS has no sum for {name}"));
        }
    }
    if service == Service::Vault && small["SHA256SUMS.sealed"].is_empty() {
        return Err("SHA256SUMS.sealed is empty".into());
    }
    let meta: Value = serde_json::from_slice(&small["meta.json"])
        .map_err(|e| format!("meta.json is not JSON: {e}"))?;
    let servers: Vec<String> = meta["Configuration"]["Servers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| s["Address"].as_str().map(str::to_string))
        .collect();
    Ok(Checked {
        index: meta["Index"].as_u64().unwrap_or(0),
        kind: kind_of(&servers),
        servers,
    })
}

/// The service whose default raft port every server of the configuration uses: Consul's
/// 8300, Nomad's 4647, Vault's cluster port 8201. None when they say nothing certain.
fn kind_of(servers: &[String]) -> Option<Service> {
    let port = |s: &String| s.rsplit_once(':').map(|(_, p)| p.to_string());
    let ports: Vec<Option<String>> = servers.iter().map(port).collect();
    let all = |p: &str| !ports.is_empty() && ports.iter().all(|x| x.as_deref() == Some(p));
    if all("8300") {
        Some(Service::Consul)
    } else if all("4647") {
        Some(Service::Nomad)
    } else if all("8201") {
        Some(Service::Vault)
    } else {
        None
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Saves a snapshot of `service` through `host` to the local `path`; returns its size.
/// A change of this machine's files, planned in a dry run.
pub fn save(
    ctx: &NativeCallContext,
    host: &HostHandle,
    service: Service,
    path: &str,
    stale: bool,
) -> RhaiResult<i64> {
    let c = ApiClient::for_host(ctx, host, service)?;
    let (api, _) = endpoint(service);
    // `?stale`: the server's own copy of the state, leader or not (Consul's
    // agent/snapshot_endpoint.go and Nomad's operator_endpoint.go serve it without
    // forwarding), for a cluster that has lost its leader.
    let api = if stale {
        format!("{api}?stale")
    } else {
        api.to_string()
    };
    let api = api.as_str();
    let action = Action::new(
        "write",
        "local",
        format!(
            "{service}: save a snapshot of the cluster (through {}{}) to {path}",
            c.host,
            if stale { ", its own copy" } else { "" }
        ),
    );
    let dir = Path::new(path)
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    // A snapshot is what a later restore loads: never into a directory another user could
    // swap it in. A directory still to be made (in a dry run) has nothing to check yet.
    if std::fs::symlink_metadata(dir).is_ok() {
        harun_runtime::private_fs::check_own_dir(dir, "the snapshot directory")
            .map_err(|e| call_error(ctx, e.code(), e.to_string()))?;
    }
    let saved = Context::of(ctx).perform(action, || -> RhaiResult<i64> {
        let write_error =
            |e: std::io::Error| call_error(ctx, codes::SNAPSHOT_WRITE, format!("cannot write {path}: {e}"));
        // Streamed into a temporary file beside the final one (tempfile makes it 0600),
        // checked from there, and renamed only when whole: never a half file under `path`.
        let mut file = tempfile::NamedTempFile::new_in(dir).map_err(write_error)?;
        let size = c.read_into(ctx, api, TRANSFER_TIMEOUT, file.as_file_mut())?;
        let checked = std::fs::File::open(file.path())
            .map_err(|e| e.to_string())
            .and_then(|f| check_from(service, std::io::BufReader::new(f)));
        if let Err(why) = checked {
            return Err(call_error(
                ctx,
                codes::SNAPSHOT_INVALID,
                format!("{service} on {}: the snapshot it sent fails the check ({why}); nothing was written to {path}", c.host),
            ));
        }
        file.as_file().sync_all().map_err(write_error)?;
        file.persist(path).map_err(|e| write_error(e.error))?;
        Ok(size as i64)
    })?;
    Ok(saved.unwrap_or(0))
}

/// Checks the local snapshot file `path` for `service`: `#{ok, index, servers, error}`.
pub fn check_file(service: Service, path: &str) -> Map {
    let mut out = Map::new();
    let outcome = std::fs::read(path)
        .map_err(|e| format!("cannot read {path}: {e}"))
        .and_then(|bytes| check(service, &bytes))
        .and_then(|checked| match checked.kind {
            Some(kind) if kind != service => Err(format!(
                "it is a {kind} snapshot (its raft servers: {})",
                checked.servers.join(", ")
            )),
            _ => Ok(checked),
        });
    match outcome {
        Ok(checked) => {
            out.insert("ok".into(), true.into());
            out.insert("index".into(), (checked.index as i64).into());
            let servers: rhai::Array = checked.servers.into_iter().map(Into::into).collect();
            out.insert("servers".into(), servers.into());
        }
        Err(why) => {
            out.insert("ok".into(), false.into());
            out.insert("error".into(), why.into());
        }
    }
    out
}

/// Restores the local snapshot `path` into the cluster of `host`, after the same check
/// `check_file` makes: a file that fails it, or another service's, is refused before
/// anything is sent. Vault's `force` restores a snapshot of another cluster (another
/// keyring). A change.
pub fn restore(
    ctx: &NativeCallContext,
    host: &HostHandle,
    service: Service,
    path: &str,
    force: bool,
) -> RhaiResult<bool> {
    let checked = check_file(service, path);
    if checked.get("ok").and_then(|v| v.as_bool().ok()) != Some(true) {
        let why = checked
            .get("error")
            .map(|e| e.to_string())
            .unwrap_or_default();
        return Err(call_error(
            ctx,
            codes::SNAPSHOT_INVALID,
            format!("refusing to restore {path} into {service}: {why}"),
        ));
    }
    let bytes = std::fs::read(path).map_err(|e| {
        call_error(
            ctx,
            codes::SNAPSHOT_INVALID,
            format!("cannot read {path}: {e}"),
        )
    })?;
    let c = ApiClient::for_host(ctx, host, service)?;
    let (api, method) = endpoint(service);
    let api = if force && service == Service::Vault {
        "/v1/sys/storage/raft/snapshot-force"
    } else {
        api
    };
    let summary = format!(
        "{service}: restore the snapshot {path} (index {}) into the cluster{}",
        checked
            .get("index")
            .map(|i| i.to_string())
            .unwrap_or_default(),
        if force { ", forced" } else { "" }
    );
    c.changes(ctx, &summary, |w| {
        let reply = w.send(ctx, method, api, Some(bytes), TRANSFER_TIMEOUT)?;
        w.check(ctx, method, api, reply).map(|_| ())
    })
    .map(|done| done.is_some())
}

/// Adds `snapshot_save`, `snapshot_check` and `snapshot_restore` to a service's script
/// module, with the doc comments `harun doc` prints.
pub fn register(module: &mut rhai::Module, service: Service) {
    use rhai::FuncRegistration;
    let (api, method) = endpoint(service);
    FuncRegistration::new("snapshot_save")
        .with_volatility(true)
        .with_params_info(["host: Host", "path: &str", "i64"])
        .with_comments([format!(
            "/// Saves a snapshot of the cluster (`GET {api}` through `host`) to the local file\n/// `path`, mode 0600, written atomically, and only when it passes the check of its\n/// format; returns its size in bytes. A change (planned in a dry run)."
        )])
        .set_into_module(module, move |ctx: NativeCallContext, host: HostHandle, path: &str| {
            save(&ctx, &host, service, path, false)
        });
    if service != Service::Vault {
        FuncRegistration::new("snapshot_save_stale")
            .with_volatility(true)
            .with_params_info(["host: Host", "path: &str", "i64"])
            .with_comments([format!(
                "/// `snapshot_save` from this server's own copy of the state (`GET {api}?stale`):
/// it works without a leader, when a cluster has lost its majority, and may lag the
/// last writes. A change (planned in a dry run)."
            )])
            .set_into_module(
                module,
                move |ctx: NativeCallContext, host: HostHandle, path: &str| {
                    save(&ctx, &host, service, path, true)
                },
            );
    }
    FuncRegistration::new("snapshot_check")
        .with_volatility(true)
        .with_params_info(["path: &str", "Map"])
        .with_comments([format!(
            "/// Checks the local snapshot file `path` as a {service} snapshot: `#{{ok, index,\n/// servers}}`, or `#{{ok: false, error}}` saying what is wrong (cut short, altered,\n/// another service's)."
        )])
        .set_into_module(module, move |path: &str| check_file(service, path));
    FuncRegistration::new("snapshot_restore")
        .with_volatility(true)
        .with_params_info(["host: Host", "path: &str", "bool"])
        .with_comments([format!(
            "/// Restores the local snapshot `path` into the cluster (`{method} {api}` through\n/// `host`): everything written since it was taken is gone. Refused, with nothing\n/// sent, when the file fails `snapshot_check`. A change."
        )])
        .set_into_module(module, move |ctx: NativeCallContext, host: HostHandle, path: &str| {
            restore(&ctx, &host, service, path, false)
        });
    if service == Service::Vault {
        FuncRegistration::new("snapshot_restore")
            .with_volatility(true)
            .with_params_info(["host: Host", "path: &str", "force: bool", "bool"])
            .with_comments([
                "/// `snapshot_restore(host, path)`; with `force`, a snapshot of another Vault\n/// cluster (another keyring) too (`snapshot-force`): Vault warns that the cluster then\n/// needs that cluster's unseal keys. A change.",
            ])
            .set_into_module(
                module,
                move |ctx: NativeCallContext, host: HostHandle, path: &str, force: bool| {
                    restore(&ctx, &host, service, path, force)
                },
            );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn archive(files: &[(&str, &[u8])]) -> Vec<u8> {
        let mut tar = tar::Builder::new(flate2::write::GzEncoder::new(
            Vec::new(),
            flate2::Compression::default(),
        ));
        for (name, data) in files {
            let mut header = tar::Header::new_gnu();
            header.set_size(data.len() as u64);
            header.set_mode(0o600);
            header.set_cksum();
            tar.append_data(&mut header, name, *data).unwrap();
        }
        tar.into_inner().unwrap().finish().unwrap()
    }

    fn consul_snapshot() -> Vec<u8> {
        let meta = br#"{"Index":42,"Configuration":{"Servers":[{"Address":"10.0.0.11:8300"}]}}"#;
        let state = b"state";
        let sums = format!(
            "{}  meta.json\n{}  state.bin\n",
            hex(&sha2::Sha256::digest(meta)),
            hex(&sha2::Sha256::digest(state))
        );
        archive(&[
            ("meta.json", meta),
            ("state.bin", state),
            ("SHA256SUMS", sums.as_bytes()),
        ])
    }

    #[test]
    fn a_whole_snapshot_passes_and_says_its_index_and_kind() {
        let checked = check(Service::Consul, &consul_snapshot()).unwrap();
        assert_eq!(checked.index, 42);
        assert_eq!(checked.kind, Some(Service::Consul));
    }

    #[test]
    fn a_cut_or_altered_snapshot_fails() {
        let whole = consul_snapshot();
        let cut = &whole[..whole.len() / 2];
        assert!(check(Service::Consul, cut).is_err());
        let meta = br#"{"Index":42}"#;
        let altered = archive(&[
            ("meta.json", meta),
            ("state.bin", b"other"),
            (
                "SHA256SUMS",
                format!(
                    "{}  meta.json\n{}  state.bin\n",
                    "00".repeat(32),
                    "00".repeat(32)
                )
                .as_bytes(),
            ),
        ]);
        let err = check(Service::Consul, &altered).unwrap_err();
        assert!(err.contains("does not match"), "{err}");
        // A Consul snapshot is not a Vault one: it lacks SHA256SUMS.sealed.
        let err = check(Service::Vault, &whole).unwrap_err();
        assert!(err.contains("SHA256SUMS.sealed"), "{err}");
    }
}
