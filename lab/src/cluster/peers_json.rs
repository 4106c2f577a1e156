//! Outage recovery: raft/peers.json read at start, as Consul, Nomad and Vault read it.

use super::*;

/// This node as outage recovery's peers.json must name it.
pub struct OwnPeer<'a> {
    /// The raft ID the file uses for this node.
    pub id: &'a str,
    /// The ID the lab uses for this node in its raft configuration.
    pub lab_id: &'a str,
    /// The raft address it listens on (`127.0.0.1:8300`).
    pub address: &'a str,
    pub http: &'a str,
}

/// Outage recovery: reads raft's `peers.json` (`[{"id", "address", "non_voter"}]`), the
/// servers that become the whole raft configuration, and deletes the file, as Consul,
/// Nomad and Vault do at start. None when there is no such file. Errors start with
/// `prefix`, the words the real server starts its own with.
pub fn take_peers_json(
    file: &std::path::Path,
    own: &OwnPeer,
    prefix: &str,
) -> Result<Option<Vec<Server>>, String> {
    let Ok(bytes) = std::fs::read(file) else {
        return Ok(None);
    };
    tracing::info!("found peers.json file, recovering Raft configuration...");
    let bad = |why: String| {
        format!(
            "{prefix}: failed to read peers file: {}: {why}",
            file.display()
        )
    };
    let entries: Vec<Value> = serde_json::from_slice(&bytes).map_err(|e| bad(e.to_string()))?;
    let mut servers = Vec::new();
    for entry in &entries {
        let (Some(id), Some(address)) = (entry["id"].as_str(), entry["address"].as_str()) else {
            return Err(bad("every entry needs an id and an address".into()));
        };
        let is_own = id == own.id;
        if is_own && address != own.address {
            return Err(format!(
                "{prefix}: peers.json gives this server ({id}) the address {address}, but it listens on {}",
                own.address
            ));
        }
        servers.push(Server {
            id: if is_own { own.lab_id } else { id }.to_string(),
            address: address.to_string(),
            http: if is_own { own.http } else { "" }.to_string(),
            voter: entry["non_voter"] != true,
        });
    }
    std::fs::remove_file(file).map_err(|e| format!("cannot delete {}: {e}", file.display()))?;
    tracing::info!("deleted peers.json file after successful recovery");
    Ok(Some(servers))
}
