//! The snapshot archive the twins serve and take back, in the servers' format: Consul's
//! snapshot/archive.go (`write` and `read`), which Nomad's helper/snapshot copies and
//! Vault's raft snapshots extend with `SHA256SUMS.sealed`. A gzip-compressed tar of
//! `meta.json` (raft's SnapshotMeta: Version, ID, Index, Term, Configuration, Size),
//! `state.bin` and `SHA256SUMS` (`<hex>  <name>` for the other two).
//!
//! What differs from a real server: `state.bin` holds the twin's state as JSON, where a
//! real one holds its FSM's own encoding. Only the twins read it back.

use std::collections::BTreeMap;
use std::io::Read;

use serde_json::{json, Value};
use sha2::Digest;

use crate::cluster::{Cluster, Operation};

/// The archive of `cluster`'s state now, with `extra` files (Vault's sealed sums, made
/// from the `SHA256SUMS` text it is given).
pub fn make(
    cluster: &Cluster,
    extra: impl FnOnce(&[u8]) -> Vec<(&'static str, Vec<u8>)>,
) -> Result<Vec<u8>, String> {
    let state = cluster.read(|d| serde_json::to_vec(d).expect("state serializes"));
    let index = cluster.index();
    let servers: Vec<Value> = cluster
        .config()
        .iter()
        .map(|s| {
            json!({
                "Suffrage": if s.voter { 0 } else { 1 },
                "ID": s.id,
                "Address": s.address,
            })
        })
        .collect();
    let meta = serde_json::to_vec(&json!({
        "Version": 1,
        "ID": format!("{}-{index}", cluster.term()),
        "Index": index,
        "Term": cluster.term(),
        "Configuration": {"Servers": servers},
        "ConfigurationIndex": index,
        "Size": state.len(),
    }))
    .expect("meta serializes");
    let sums = format!(
        "{}  meta.json\n{}  state.bin\n",
        hex(&sha2::Sha256::digest(&meta)),
        hex(&sha2::Sha256::digest(&state))
    );
    let mut files: Vec<(&str, Vec<u8>)> = vec![
        ("meta.json", meta),
        ("state.bin", state),
        ("SHA256SUMS", sums.clone().into_bytes()),
    ];
    files.extend(extra(sums.as_bytes()));
    let mut archive = tar::Builder::new(flate2::write::GzEncoder::new(
        Vec::new(),
        flate2::Compression::default(),
    ));
    for (name, bytes) in &files {
        let mut header = tar::Header::new_gnu();
        header.set_size(bytes.len() as u64);
        header.set_mode(0o600);
        header.set_cksum();
        archive
            .append_data(&mut header, name, bytes.as_slice())
            .map_err(|e| format!("failed to write the snapshot: {e}"))?;
    }
    archive
        .into_inner()
        .and_then(|gz| gz.finish())
        .map_err(|e| format!("failed to write the snapshot: {e}"))
}

/// A snapshot taken back: its files, checked as Consul's `read` checks them (only the
/// files of the format, `extra` beside the three, and every sum matching).
pub struct Opened {
    pub meta: Value,
    pub state: Value,
    pub files: BTreeMap<String, Vec<u8>>,
}

pub fn open(bytes: &[u8], extra: &[&str]) -> Result<Opened, String> {
    let mut files = BTreeMap::new();
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(bytes));
    let entries = archive
        .entries()
        .map_err(|e| format!("failed reading snapshot: {e}"))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| format!("failed reading snapshot: {e}"))?;
        let name = entry
            .path()
            .map_err(|e| format!("failed reading snapshot: {e}"))?
            .to_string_lossy()
            .to_string();
        if !["meta.json", "state.bin", "SHA256SUMS"].contains(&name.as_str())
            && !extra.contains(&name.as_str())
        {
            return Err(format!("unexpected file {name:?} in snapshot"));
        }
        let mut data = Vec::new();
        entry
            .read_to_end(&mut data)
            .map_err(|e| format!("failed reading snapshot: {e}"))?;
        files.insert(name, data);
    }
    let integrity = |why: String| format!("failed checking integrity of snapshot: {why}");
    let sums = String::from_utf8_lossy(files.get("SHA256SUMS").map_or(&[][..], |s| s)).to_string();
    let mut seen = Vec::new();
    for line in sums.lines().filter(|l| !l.is_empty()) {
        let (sum, name) = line
            .split_once("  ")
            .ok_or_else(|| integrity(format!("bad line {line:?}")))?;
        let data = files
            .get(name)
            .ok_or_else(|| integrity(format!("file missing for {name:?}")))?;
        if hex(&sha2::Sha256::digest(data)) != sum {
            return Err(integrity(format!("hash check failed for {name:?}")));
        }
        seen.push(name.to_string());
    }
    for name in ["meta.json", "state.bin"] {
        if !seen.iter().any(|s| s == name) {
            return Err(integrity(format!("list missing hash for {name:?}")));
        }
    }
    let meta = serde_json::from_slice(&files["meta.json"])
        .map_err(|e| format!("failed to decode snapshot metadata: {e}"))?;
    let state = serde_json::from_slice(&files["state.bin"])
        .map_err(|e| format!("failed to read snapshot state: {e}"))?;
    Ok(Opened { meta, state, files })
}

/// Takes a snapshot (Consul's or Nomad's format) back into `cluster` as the twin's restore
/// operation. The error reads as the server's: `prefix` before a bad archive's reason.
pub async fn restore<O: Operation>(
    cluster: &Cluster,
    bytes: &[u8],
    prefix: &str,
    operation: impl FnOnce(Value) -> O,
) -> Result<(), String> {
    let opened = open(bytes, &[]).map_err(|e| format!("{prefix}: {e}"))?;
    cluster
        .write(operation(opened.state))
        .await
        .map(|_| ())
        .map_err(|e| e.to_string())
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
