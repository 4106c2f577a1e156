//! The Vault server twin: reads the same vault.hcl a real server reads, starts sealed
//! every time, opens only with the threshold of genuine Shamir shares, keeps its data
//! encrypted at rest in `file` (Vault's on-disk layout) or `raft` storage, and answers
//! the HTTP API as the API facts describe (../shared/reference/apifacts/vault.md).
//!
//! With raft storage the active node is the raft leader among the unsealed nodes; a
//! standby forwards everything but the node-local endpoints to it.

mod api;
pub mod barrier;
pub mod migrate;
mod registration;
pub mod storage;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;
use std::time::Duration;

use base64::Engine;
use serde_json::{json, Value};

use crate::cluster::{Cluster, Options, TypedState};
use crate::config::ConfigFile;
use barrier::SealConfig;
use storage::{FileBackend, Storage};

/// Keys a vault.hcl may hold; others are warned about, as Vault warns.
const KNOWN_KEYS: &[&str] = &[
    "storage.*",
    "ha_storage.*",
    "listener.*",
    "seal.*",
    "service_registration.*",
    "api_addr",
    "cluster_addr",
    "cluster_name",
    "disable_mlock",
    "disable_cache",
    "ui",
    "log_level",
    "log_format",
    "log_file",
    "pid_file",
    "plugin_directory",
    "default_lease_ttl",
    "max_lease_ttl",
    "telemetry.*",
    "raw_storage_endpoint",
    "disable_clustering",
];

pub const VERSION: &str = "1.15.6";

/// raft's `autopilot_update_interval` default: autopilot builds its state this long after
/// a leader is elected.
pub const AUTOPILOT_UPDATE_INTERVAL: Duration = Duration::from_secs(2);

#[derive(Clone, Debug)]
pub enum StorageSettings {
    File {
        path: PathBuf,
    },
    Raft {
        path: PathBuf,
        node_id: Option<String>,
        retry_join: Vec<JoinTarget>,
    },
}

/// A leader to join and how to trust it: a `retry_join` block or a join request's body
/// (vault/raft.go `LeaderJoinInfo`). The joining node trusts only `leader_ca_cert` /
/// `leader_ca_cert_file` (else the system roots), never VAULT_CACERT nor its own
/// listener's certificate, and checks the name `leader_tls_servername` when given.
#[derive(Clone, Debug, Default)]
pub struct JoinTarget {
    pub leader_api_addr: String,
    pub ca_cert: Option<String>,
    pub ca_cert_file: Option<String>,
    pub client_cert: Option<String>,
    pub client_cert_file: Option<String>,
    pub client_key: Option<String>,
    pub client_key_file: Option<String>,
    pub tls_servername: Option<String>,
}

impl JoinTarget {
    /// From a retry_join block or a join request (the same field names).
    pub fn from_fields(get: impl Fn(&str) -> Option<String>) -> Result<JoinTarget, String> {
        let target = JoinTarget {
            leader_api_addr: get("leader_api_addr")
                .map(|a| a.trim_end_matches('/').to_string())
                .unwrap_or_default(),
            ca_cert: get("leader_ca_cert"),
            ca_cert_file: get("leader_ca_cert_file"),
            client_cert: get("leader_client_cert"),
            client_cert_file: get("leader_client_cert_file"),
            client_key: get("leader_client_key"),
            client_key_file: get("leader_client_key_file"),
            tls_servername: get("leader_tls_servername"),
        };
        if target.ca_cert.is_some() && target.ca_cert_file.is_some() {
            return Err(
                "retry_join: leader_ca_cert and leader_ca_cert_file cannot both be set".into(),
            );
        }
        Ok(target)
    }

    fn pem(inline: &Option<String>, file: &Option<String>) -> Result<Option<Vec<u8>>, String> {
        match (inline, file) {
            (Some(text), _) => Ok(Some(text.replace("\\n", "\n").into_bytes())),
            (None, Some(path)) => std::fs::read(path)
                .map(Some)
                .map_err(|e| format!("failed to read {path}: {e}")),
            (None, None) => Ok(None),
        }
    }

    /// The client this join uses, and the URL it calls the leader at.
    pub fn client(&self) -> Result<(reqwest::Client, String), String> {
        let ca = Self::pem(&self.ca_cert, &self.ca_cert_file)?;
        let mut builder =
            crate::tls::client_trusting(ca.as_deref(), false, Duration::from_secs(5))?;
        let cert = Self::pem(&self.client_cert, &self.client_cert_file)?;
        let key = Self::pem(&self.client_key, &self.client_key_file)?;
        if let (Some(mut cert), Some(key)) = (cert, key) {
            cert.extend(key);
            let identity = reqwest::Identity::from_pem(&cert)
                .map_err(|e| format!("failed to parse the client certificate: {e}"))?;
            builder = builder.identity(identity);
        }
        let mut url = self.leader_api_addr.clone();
        // leader_tls_servername: the leader's certificate is checked for this name.
        if let Some(name) = &self.tls_servername {
            let parsed = reqwest::Url::parse(&url).map_err(|e| format!("{url}: {e}"))?;
            let port = parsed.port_or_known_default().unwrap_or(8200);
            let ip: std::net::IpAddr = parsed
                .host_str()
                .unwrap_or_default()
                .trim_matches(['[', ']'])
                .parse()
                .map_err(|_| format!("{url}: the lab joins leaders by IP address"))?;
            builder = builder.resolve(name, SocketAddr::new(ip, port));
            url = format!("{}://{name}:{port}", parsed.scheme());
        }
        let client = builder.build().map_err(|e| e.to_string())?;
        Ok((client, url))
    }
}

#[derive(Clone, Debug)]
pub struct Registration {
    /// Base URL of the Consul agent (`http://127.0.0.1:8500`).
    pub agent: String,
    pub service: String,
    pub tags: Vec<String>,
    pub token: Option<String>,
    /// The CA Vault trusts for an https agent (else the system roots), as
    /// serviceregistration/consul/consul_service_registration.go sets up its client.
    pub tls_ca_file: Option<String>,
    pub tls_skip_verify: bool,
}

impl Registration {
    /// The client Vault calls its Consul agent with: the agent's certificate is checked
    /// against tls_ca_file (or the system roots), unless tls_skip_verify.
    pub fn client(&self) -> Result<reqwest::Client, String> {
        let pem = match &self.tls_ca_file {
            Some(path) => Some(crate::tls::read_ca(
                "service_registration: tls_ca_file",
                path,
            )?),
            None => None,
        };
        crate::tls::client_trusting(pem.as_deref(), self.tls_skip_verify, Duration::from_secs(5))?
            .build()
            .map_err(|e| e.to_string())
    }
}

#[derive(Clone, Debug)]
pub struct Settings {
    pub listen: SocketAddr,
    /// The tcp listener's TLS: on unless `tls_disable`, as in Vault.
    pub tls: Option<crate::tls::TlsFiles>,
    pub api_addr: String,
    pub cluster_addr: Option<String>,
    pub storage: StorageSettings,
    pub registration: Option<Registration>,
    pub cluster_name: String,
}

/// The tcp listener's TLS settings. Vault serves TLS unless `tls_disable` is true, and then
/// needs a certificate and key.
fn listener_tls(
    tcp: &hcl::Map<String, hcl::Value>,
) -> Result<Option<crate::tls::TlsFiles>, String> {
    let flag = |k: &str| match tcp.get(k) {
        Some(hcl::Value::Bool(b)) => *b,
        Some(hcl::Value::String(s)) => matches!(s.as_str(), "true" | "1"),
        Some(hcl::Value::Number(n)) => n.as_i64() == Some(1),
        _ => false,
    };
    if flag("tls_disable") {
        return Ok(None);
    }
    let string = |k: &str| match tcp.get(k) {
        Some(hcl::Value::String(s)) if !s.is_empty() => Some(s.clone()),
        _ => None,
    };
    let (Some(cert_file), Some(key_file)) = (string("tls_cert_file"), string("tls_key_file"))
    else {
        return Err("Error initializing listener of type tcp: error loading TLS cert: tls_cert_file and tls_key_file are required unless tls_disable = true".into());
    };
    Ok(Some(crate::tls::TlsFiles {
        cert_file,
        key_file,
        ca_file: string("tls_client_ca_file"),
        verify_client: flag("tls_require_and_verify_client_cert"),
    }))
}

/// `http://host:port/` to `host:port`.
pub fn host_port(url: &str) -> String {
    let rest = url.split("://").nth(1).unwrap_or(url);
    rest.trim_end_matches('/').to_string()
}

fn storage_block(file: &ConfigFile, ident: &str) -> Result<StorageSettings, String> {
    let blocks = file.labeled(ident);
    let Some((kind, body)) = blocks.iter().next() else {
        return Err(format!("Error: A {ident} backend must be specified"));
    };
    let path = |b: &hcl::Map<String, hcl::Value>| -> Result<PathBuf, String> {
        match b.get("path") {
            Some(hcl::Value::String(p)) if !p.is_empty() => Ok(PathBuf::from(p)),
            _ => Err(format!(
                "Error initializing {ident} of type {kind}: 'path' must be set"
            )),
        }
    };
    match kind.as_str() {
        "file" => Ok(StorageSettings::File { path: path(body)? }),
        "raft" => {
            let retry_join = match body.get("retry_join") {
                None => Vec::new(),
                Some(hcl::Value::Object(one)) => vec![one.clone()],
                Some(hcl::Value::Array(many)) => {
                    many.iter().filter_map(|v| v.as_object().cloned()).collect()
                }
                Some(_) => return Err("retry_join: expected blocks".into()),
            };
            let retry_join = retry_join
                .iter()
                .map(|b| {
                    let target = JoinTarget::from_fields(|k| match b.get(k) {
                        Some(hcl::Value::String(v)) if !v.is_empty() => Some(v.clone()),
                        _ => None,
                    })?;
                    if target.leader_api_addr.is_empty() {
                        return Err("Error parsing retry_join: leader_api_addr or auto_join must be set (the lab does not support auto_join)".to_string());
                    }
                    Ok(target)
                })
                .collect::<Result<Vec<_>, _>>()?;
            Ok(StorageSettings::Raft {
                path: path(body)?,
                // physical/raft/raft.go: VAULT_RAFT_NODE_ID overrides the config's node_id.
                node_id: match (std::env::var("VAULT_RAFT_NODE_ID"), body.get("node_id")) {
                    (Ok(id), _) if !id.is_empty() => Some(id),
                    (_, Some(hcl::Value::String(id))) => Some(id.clone()),
                    _ => None,
                },
                retry_join,
            })
        }
        other => Err(format!(
            "Error initializing {ident} of type {other}: the lab's Vault twin knows file and raft"
        )),
    }
}

/// A `service_registration "consul"` block, with Vault's defaults
/// (serviceregistration/consul: the local agent, service `vault`).
fn registration(body: &hcl::Map<String, hcl::Value>) -> Registration {
    let string = |k: &str| match body.get(k) {
        Some(hcl::Value::String(s)) => Some(s.clone()),
        _ => None,
    };
    let address = string("address").unwrap_or_else(|| "127.0.0.1:8500".into());
    let agent = if address.contains("://") {
        address
    } else {
        format!(
            "{}://{address}",
            string("scheme").unwrap_or_else(|| "http".into())
        )
    };
    let mut tags: Vec<String> = string("service_tags")
        .unwrap_or_default()
        .split(',')
        .map(|t| t.trim().to_string())
        .filter(|t| !t.is_empty())
        .collect();
    tags.sort();
    tags.dedup();
    Registration {
        agent: agent.trim_end_matches('/').to_string(),
        service: string("service").unwrap_or_else(|| "vault".into()),
        tags,
        token: string("token"),
        tls_ca_file: string("tls_ca_file"),
        tls_skip_verify: matches!(body.get("tls_skip_verify"), Some(hcl::Value::Bool(true)))
            || string("tls_skip_verify").as_deref() == Some("true"),
    }
}

impl Settings {
    pub fn load(path: &Path) -> Result<Settings, String> {
        let file = ConfigFile::load(path)?;
        // Vault reports unknown keys as warnings and starts (command/server.go: "unknown
        // or unsupported field ... found in configuration"), unlike Consul.
        if let Err(warning) = file.check_keys(KNOWN_KEYS, |key| {
            format!(
                "WARNING! unknown or unsupported field {key} found in configuration at {}",
                file.path
            )
        }) {
            eprintln!("{warning}");
        }
        let wrap = |e: String| format!("Error loading configuration from {}: {e}", file.path);
        let listeners = file.labeled("listener");
        let tcp = listeners
            .get("tcp")
            .ok_or("Error: no listener \"tcp\" block (the lab's Vault twin listens on TCP)")?;
        let address = match tcp.get("address") {
            Some(hcl::Value::String(a)) => a.clone(),
            _ => "127.0.0.1:8200".to_string(),
        };
        let listen: SocketAddr = address.parse().map_err(|_| {
            format!("Error initializing listener of type tcp: bad address {address:?}")
        })?;
        let tls = listener_tls(tcp)?;
        let storage = storage_block(&file, "storage")?;
        if !file.labeled("ha_storage").is_empty() && matches!(storage, StorageSettings::Raft { .. })
        {
            return Err("HA storage cannot be declared when Raft is the storage type".into());
        }
        let api_addr = file
            .string("api_addr")
            .map_err(wrap)?
            .unwrap_or_else(|| format!("http://{listen}"))
            .trim_end_matches('/')
            .to_string();
        let cluster_addr = file.string("cluster_addr").map_err(wrap)?;
        if let StorageSettings::Raft { path, .. } = &storage {
            if cluster_addr.is_none() {
                return Err("Cluster address must be set when using raft storage".into());
            }
            if file.get("disable_mlock").is_none() {
                return Err("Error: disable_mlock must be set explicitly to true or false when using integrated storage (Vault 1.20 and later refuse to start without it)".into());
            }
            if !path.is_dir() {
                return Err(format!(
                    "Error initializing storage of type raft: failed to create fsm: failed to open bolt file: open {}: no such file or directory",
                    path.join("vault.db").display()
                ));
            }
        }
        if let Some(c) = &cluster_addr {
            if host_port(c) == host_port(&api_addr) {
                return Err(format!(
                    "Address {api_addr:?} used for both API and cluster addresses"
                ));
            }
        }
        let registration = file
            .labeled("service_registration")
            .get("consul")
            .map(registration);
        Ok(Settings {
            listen,
            tls,
            api_addr,
            cluster_addr,
            storage,
            registration,
            cluster_name: file
                .string("cluster_name")
                .map_err(wrap)?
                .unwrap_or_else(|| "vault-cluster-lab".into()),
        })
    }
}

/// A raft join in progress: what the leader's challenge gave, until the node is unsealed.
#[derive(Clone)]
pub struct PendingJoin {
    /// The URL the leader answered at, and the client that trusts it.
    pub leader: String,
    pub client: reqwest::Client,
    pub seal_config: SealConfig,
    pub master: Vec<u8>,
    pub challenge: Vec<u8>,
}

#[derive(Default)]
struct Core {
    barrier_key: Option<Vec<u8>>,
    progress: Vec<Vec<u8>>,
    nonce: String,
    pending_join: Option<PendingJoin>,
    /// The seal config a join brought, until the leader's snapshot lands here.
    joined_config: Option<SealConfig>,
    /// A joining node past its threshold, waiting for the leader's keyring.
    unsealing: bool,
    /// A joining node whose shares did not open the leader's keyring: it answers nothing
    /// more until its process is killed.
    join_stuck: bool,
    /// Since when this node has been active, as the watcher last saw it.
    active_since: Option<std::time::Instant>,
    /// Challenges this node (as leader) handed out: server id to nonce.
    challenges: std::collections::HashMap<String, Vec<u8>>,
}

pub struct Node {
    pub settings: Settings,
    pub storage: Storage,
    pub node_id: String,
    unsealed: Arc<AtomicBool>,
    /// Whether raft runs here: from the unseal on, or, on a joining node, from the moment
    /// the leader took its answer, which is before the node is unsealed (vault/core.go
    /// `unsealWithRaft`: raft is set up first, the keyring arrives through it).
    raft_running: Arc<AtomicBool>,
    core: Mutex<Core>,
    pub client: reqwest::Client,
    pub shutdown: tokio::sync::Notify,
}

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

impl Node {
    fn core(&self) -> parking_lot::MutexGuard<'_, Core> {
        self.core.lock()
    }

    pub fn cluster(&self) -> Option<&Arc<Cluster>> {
        match &self.storage {
            Storage::Raft(c) => Some(c),
            Storage::File(_) => None,
        }
    }

    pub fn sealed(&self) -> bool {
        !self.unsealed.load(Ordering::SeqCst)
    }

    pub fn seal_config(&self) -> Option<SealConfig> {
        if let Some(bytes) = self.storage.get("core/seal-config") {
            return serde_json::from_slice(&bytes).ok();
        }
        let core = self.core();
        core.pending_join
            .as_ref()
            .map(|p| p.seal_config.clone())
            .or(core.joined_config.clone())
    }

    pub fn initialized(&self) -> bool {
        self.seal_config().is_some()
    }

    pub fn ha_enabled(&self) -> bool {
        self.cluster().is_some()
    }

    /// Active: unsealed and, with HA storage, the raft leader.
    pub fn active(&self) -> bool {
        !self.sealed() && self.cluster().is_none_or(|c| c.is_leader())
    }

    /// Since when this node has been the active one (None while it is not).
    pub fn active_since(&self) -> Option<std::time::Instant> {
        self.core().active_since
    }

    /// Keeps `active_since` in step with leadership (a quarter-second watcher).
    async fn watch_leadership(self: Arc<Self>) {
        loop {
            let active = self.active();
            {
                let mut core = self.core();
                match (active, core.active_since) {
                    (true, None) => core.active_since = Some(std::time::Instant::now()),
                    (false, Some(_)) => core.active_since = None,
                    _ => {}
                }
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    pub fn standby(&self) -> bool {
        !self.sealed() && !self.active()
    }

    /// The active node's API address, as seen from here.
    pub fn leader_api(&self) -> Option<String> {
        self.cluster()?.leader().map(|s| s.http)
    }

    pub fn seal_status(&self) -> Value {
        let config = self.seal_config();
        let sealed = self.sealed();
        let cluster_id = if sealed {
            String::new()
        } else {
            self.cluster_id()
        };
        let core = self.core();
        let mut status = json!({
            "type": "shamir",
            "initialized": config.is_some(),
            "sealed": sealed,
            "t": config.as_ref().map_or(0, |c| c.secret_threshold),
            "n": config.as_ref().map_or(0, |c| c.secret_shares),
            "progress": core.progress.len(),
            "nonce": core.nonce,
            "version": VERSION,
            "build_date": "2024-02-28T17:07:34Z",
            "migration": false,
            "recovery_seal": false,
            "storage_type": self.storage.kind(),
        });
        if !sealed {
            status["cluster_name"] = json!(self.settings.cluster_name);
            status["cluster_id"] = json!(cluster_id);
        }
        status
    }

    fn cluster_id(&self) -> String {
        self.read("core/cluster/local/info")
            .and_then(|v| v["id"].as_str().map(str::to_string))
            .unwrap_or_default()
    }

    // ----- the barrier -----

    /// Reads and decrypts an entry; None while sealed or when missing.
    pub fn read(&self, key: &str) -> Option<Value> {
        let barrier = self.core().barrier_key.clone()?;
        let sealed = self.storage.get(key)?;
        let plain = barrier::decrypt(&barrier, &sealed)?;
        serde_json::from_slice(&plain).ok()
    }

    pub async fn write(&self, key: &str, value: &Value) -> Result<(), String> {
        let barrier = self.core().barrier_key.clone().ok_or("Vault is sealed")?;
        let plain = serde_json::to_vec(value).expect("a value serializes");
        self.storage
            .put(key, &barrier::encrypt(&barrier, &plain))
            .await
    }

    pub async fn delete(&self, key: &str) -> Result<(), String> {
        if self.sealed() {
            return Err("Vault is sealed".into());
        }
        self.storage.delete(key).await
    }

    // ----- init, unseal, seal -----

    /// Initializes storage; returns the key shares and the root token. Stays sealed.
    pub async fn init(
        &self,
        shares: usize,
        threshold: usize,
    ) -> Result<(Vec<Vec<u8>>, String), String> {
        barrier::check_params(shares, threshold)?;
        if self.initialized() {
            return Err("Vault is already initialized".into());
        }
        let unseal_key = barrier::random_bytes(barrier::KEY_LEN);
        let barrier_key = barrier::random_bytes(barrier::KEY_LEN);
        let keys = barrier::split(&unseal_key, shares, threshold)?;
        let root_token = format!(
            "hvs.{}",
            B64.encode(barrier::random_bytes(18))
                .replace(['+', '/'], "x")
        );
        let seal_config = SealConfig {
            kind: "shamir".into(),
            secret_shares: shares,
            secret_threshold: threshold,
        };
        let mut entries: Vec<(String, Vec<u8>)> = vec![
            (
                "core/seal-config".into(),
                serde_json::to_vec(&seal_config).expect("serializes"),
            ),
            (
                "core/master".into(),
                barrier::encrypt(&unseal_key, &barrier_key),
            ),
        ];
        let mut encrypted = |key: &str, value: Value| {
            let plain = serde_json::to_vec(&value).expect("serializes");
            entries.push((key.to_string(), barrier::encrypt(&barrier_key, &plain)));
        };
        encrypted(
            &token_key(&root_token),
            json!({"policies": ["root"], "display_name": "root"}),
        );
        encrypted(
            "core/cluster/local/info",
            json!({"id": uuid::Uuid::new_v4().to_string(), "name": self.settings.cluster_name}),
        );
        encrypted("core/mounts", json!({}));
        match &self.storage {
            Storage::File(f) => {
                for (key, value) in &entries {
                    f.put(key, value)?;
                }
            }
            Storage::Raft(cluster) => {
                let state = storage::RaftState {
                    vault: entries
                        .into_iter()
                        .map(|(key, value)| (key, storage::Ciphertext(value)))
                        .collect(),
                };
                cluster.bootstrap_alone(state.to_json());
            }
        }
        Ok((keys, root_token))
    }

    /// One key share; at the threshold the shares are combined and tried.
    pub async fn unseal(self: &Arc<Self>, share: Vec<u8>) -> Result<Value, (u16, String)> {
        let Some(config) = self.seal_config() else {
            return Err((400, "Vault is not initialized".into()));
        };
        if !self.sealed() {
            return Ok(self.seal_status());
        }
        // vault/core.go `unsealFragment`: a share's length is checked before it counts.
        if share.len() < 16 {
            return Err((400, "key is shorter than minimum 16 bytes".into()));
        }
        if share.len() > 33 {
            return Err((400, "key is longer than maximum 33 bytes".into()));
        }
        if self.core().unsealing {
            // The shares of this round were consumed; the node unseals on its own.
            return Ok(self.seal_status());
        }
        let shares = {
            let mut core = self.core();
            if core.progress.is_empty() {
                core.nonce = uuid::Uuid::new_v4().to_string();
            }
            if !core.progress.contains(&share) {
                core.progress.push(share);
            }
            if core.progress.len() < config.secret_threshold {
                drop(core);
                return Ok(self.seal_status());
            }
            core.nonce.clear();
            std::mem::take(&mut core.progress)
        };
        let key = barrier::combine(&shares).map_err(|e| (400, e))?;
        let pending = self.core().pending_join.clone();
        let master = match &pending {
            Some(p) => p.master.clone(),
            None => self
                .storage
                .get("core/master")
                .ok_or((500, "no root key in storage".to_string()))?,
        };
        let Some(barrier_key) = barrier::decrypt(&key, &master) else {
            if let Some(p) = pending {
                return self.hang_on_a_wrong_join_key(p).await;
            }
            return Err((400, "Unseal failed, invalid key".into()));
        };
        if let Some(p) = pending {
            self.answer_challenge(&p, &barrier_key)
                .await
                .map_err(|e| (500, e))?;
            {
                let mut core = self.core();
                core.pending_join = None;
                core.joined_config = Some(p.seal_config.clone());
                core.unsealing = true;
            }
            // vault/core.go `unsealWithRaft`: raft starts, and a goroutine polls every
            // second until the keyring has been replicated from the leader; only then is
            // the node unsealed. The call answers at once: sealed, progress 0.
            self.raft_running.store(true, Ordering::SeqCst);
            tokio::spawn(self.clone().finish_joining_unseal(key, barrier_key));
            tracing::info!(
                "joined the raft cluster; unsealing once the keyring arrives from the leader"
            );
            return Ok(self.seal_status());
        }
        self.open_barrier(barrier_key);
        Ok(self.seal_status())
    }

    fn open_barrier(&self, barrier_key: Vec<u8>) {
        self.core().barrier_key = Some(barrier_key);
        self.raft_running.store(true, Ordering::SeqCst);
        self.unsealed.store(true, Ordering::SeqCst);
        tracing::info!("vault is unsealed");
    }

    /// A joining node's unseal, after the threshold: waits (polling every second, as
    /// Vault does) until the leader's keyring is in the local raft state and opens with
    /// the combined key, then unseals.
    async fn finish_joining_unseal(self: Arc<Self>, key: Vec<u8>, barrier_key: Vec<u8>) {
        loop {
            tokio::time::sleep(Duration::from_secs(1)).await;
            if !self.core().unsealing {
                return; // sealed meanwhile
            }
            let keyring = self.storage.get("core/master");
            if keyring.is_some_and(|m| barrier::decrypt(&key, &m).as_deref() == Some(&barrier_key))
            {
                self.core().unsealing = false;
                self.open_barrier(barrier_key);
                return;
            }
        }
    }

    /// vault/core.go `unsealWithRaft` on a joining node: the join routine retries the
    /// challenge with the combined key every 2 s while the unseal holds the state lock, so
    /// the request, and every later seal-status, health or seal call, never answers (as a
    /// real OpenBao 2.7.2 does, checked 2026-12-06, whose process then stops only on
    /// SIGKILL; the twin's own stop still ends it).
    async fn hang_on_a_wrong_join_key(
        self: &Arc<Self>,
        p: PendingJoin,
    ) -> Result<Value, (u16, String)> {
        self.core().join_stuck = true;
        loop {
            tracing::error!(
                "failed to retry join raft cluster: retry=2s err=\"failed to send answer to raft leader node: error decrypting challenge: cipher: message authentication failed\" leader_addr={}",
                p.leader
            );
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
    }

    /// Whether a wrong share left this joining node hanging.
    pub fn join_stuck(&self) -> bool {
        self.core().join_stuck
    }

    pub fn reset_progress(&self) {
        let mut core = self.core();
        core.progress.clear();
        core.nonce.clear();
    }

    pub fn seal(&self) {
        self.unsealed.store(false, Ordering::SeqCst);
        self.raft_running.store(false, Ordering::SeqCst);
        let mut core = self.core();
        // A joining unseal still waiting for the keyring is abandoned.
        core.unsealing = false;
        core.barrier_key = None;
        core.progress.clear();
        tracing::info!("vault is sealed");
    }

    /// Encrypts a snapshot's checksums under the barrier key; None while sealed.
    pub fn seal_sums(&self, sums: &[u8]) -> Option<Vec<u8>> {
        let key = self.core().barrier_key.clone()?;
        Some(barrier::encrypt(&key, sums))
    }

    /// The sums a snapshot sealed, opened with this cluster's barrier key (None when the
    /// snapshot comes from another keyring).
    pub fn open_sums(&self, sealed: &[u8]) -> Option<Vec<u8>> {
        let key = self.core().barrier_key.clone()?;
        barrier::decrypt(&key, sealed)
    }

    // ----- tokens -----

    pub fn token_valid(&self, token: &str) -> bool {
        !token.is_empty() && self.read(&token_key(token)).is_some()
    }

    // ----- raft join -----

    /// The joining side: fetch the leader's challenge; the answer waits for the unseal.
    pub async fn join(&self, target: &JoinTarget) -> Result<(), String> {
        let leader = target.leader_api_addr.as_str();
        let (client, base) = target.client()?;
        let reply = client
            .post(format!("{base}/v1/sys/storage/raft/bootstrap/challenge"))
            .json(&json!({"server_id": self.node_id}))
            .send()
            .await
            .map_err(|e| {
                format!(
                    "error during raft bootstrap init call: {}",
                    crate::tls::error_chain(&e)
                )
            })?;
        let status = reply.status();
        let body: Value = reply.json().await.unwrap_or(Value::Null);
        if !status.is_success() {
            return Err(format!(
                "error during raft bootstrap init call: Error making API request. URL: PUT {leader}/v1/sys/storage/raft/bootstrap/challenge Code: {}. Errors: {}",
                status.as_u16(),
                body["errors"]
            ));
        }
        let decode = |field: &str| {
            body[field]
                .as_str()
                .and_then(|s| B64.decode(s).ok())
                .ok_or_else(|| format!("the leader's challenge has no {field}"))
        };
        let pending = PendingJoin {
            leader: base,
            client,
            seal_config: serde_json::from_value(body["seal_config"].clone())
                .map_err(|e| format!("the leader's seal config: {e}"))?,
            master: decode("master")?,
            challenge: decode("challenge")?,
        };
        self.core().pending_join = Some(pending);
        Ok(())
    }

    pub fn pending_join(&self) -> bool {
        self.core().pending_join.is_some()
    }

    async fn answer_challenge(&self, p: &PendingJoin, barrier_key: &[u8]) -> Result<(), String> {
        let answer = barrier::decrypt(barrier_key, &p.challenge)
            .ok_or("the leader's challenge cannot be opened with these keys")?;
        let reply = p
            .client
            .post(format!("{}/v1/sys/storage/raft/bootstrap/answer", p.leader))
            .json(&json!({
                "server_id": self.node_id,
                "answer": B64.encode(answer),
                "cluster_addr": self.settings.cluster_addr,
                "api_addr": self.settings.api_addr,
            }))
            .send()
            .await
            .map_err(|e| format!("error during raft bootstrap answer call: {e}"))?;
        if reply.status().is_success() {
            return Ok(());
        }
        let body: Value = reply.json().await.unwrap_or(Value::Null);
        Err(format!(
            "failed to send answer to raft leader node: {}",
            body["errors"]
        ))
    }

    /// The leader's side of a join: a nonce encrypted under the barrier key.
    pub fn challenge(&self, server_id: &str) -> Result<Value, String> {
        let barrier_key = self.core().barrier_key.clone().ok_or("Vault is sealed")?;
        let nonce = barrier::random_bytes(16);
        let challenge = barrier::encrypt(&barrier_key, &nonce);
        self.core().challenges.insert(server_id.to_string(), nonce);
        Ok(json!({
            "challenge": B64.encode(challenge),
            "seal_config": self.seal_config(),
            "master": B64.encode(self.storage.get("core/master").unwrap_or_default()),
        }))
    }

    pub async fn answer(&self, body: &Value) -> Result<Value, (u16, String)> {
        let server_id = body["server_id"].as_str().unwrap_or_default();
        if server_id.is_empty() {
            return Err((400, "no server id provided".into()));
        }
        let answer = body["answer"]
            .as_str()
            .and_then(|a| B64.decode(a).ok())
            .ok_or((400, "no answer provided".to_string()))?;
        let cluster_addr = body["cluster_addr"].as_str().unwrap_or_default();
        if cluster_addr.is_empty() {
            return Err((400, "no cluster_addr provided".into()));
        }
        let expected = self.core().challenges.remove(server_id);
        if expected.as_deref() != Some(answer.as_slice()) {
            return Err((400, "invalid answer given".into()));
        }
        let cluster = self
            .cluster()
            .ok_or((400, "raft storage is not in use".to_string()))?;
        let address = host_port(cluster_addr);
        if let Some(other) = cluster
            .config()
            .iter()
            .find(|s| s.id == server_id && s.address != address)
        {
            return Err((
                400,
                format!(
                    "node ID {server_id:?} is already in use by {} in the raft configuration",
                    other.address
                ),
            ));
        }
        cluster
            .add_server(crate::cluster::Server {
                id: server_id.to_string(),
                address,
                http: body["api_addr"].as_str().unwrap_or_default().to_string(),
                voter: false,
            })
            .await
            .map_err(|e| (500, e))?;
        Ok(json!({"peers": cluster.config()}))
    }
}

fn token_key(token: &str) -> String {
    use sha2::Digest;
    let hash = sha2::Sha256::digest(token.as_bytes());
    format!("sys/token/id/h{}", barrier::hex(&hash))
}

/// The raft node id: from the config, else kept in `<path>/node-id` (made on first start).
fn raft_node_id(path: &Path, configured: Option<&String>) -> String {
    if let Some(id) = configured {
        return id.clone();
    }
    let file = path.join("node-id");
    if let Ok(id) = std::fs::read_to_string(&file) {
        return id.trim().to_string();
    }
    let id = uuid::Uuid::new_v4().to_string();
    let _ = std::fs::write(&file, &id);
    id
}

/// Where a raft node keeps its replicated state.
pub fn raft_state_file(path: &Path) -> PathBuf {
    path.join("vault.db")
}

/// What Vault's raft backend opens at start, with its errors: physical/raft/fsm.go
/// `openDBFile` opens (or creates) `vault.db` read-write with mode 0600, and
/// physical/raft/raft.go `NewRaftBackend` makes `<path>/raft` (0700) for raft.db and the
/// snapshots. A path or a file that belongs to another user (root, after a migration run
/// as root) stops the server: "permission denied".
fn open_raft_files(path: &Path) -> Result<(), String> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    let prefix = "Error initializing storage of type raft";
    let db = raft_state_file(path);
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(&db)
        .map_err(|e| {
            format!(
                "{prefix}: failed to create fsm: failed to open bolt file: open {}: {}",
                db.display(),
                io_reason(&e)
            )
        })?;
    let raft_dir = path.join("raft");
    let made = std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&raft_dir);
    // The twin keeps its state through a temporary file beside vault.db, so the path
    // itself must be writable too (bolt would write its own files there as well).
    let writable = unsafe {
        let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap_or_default();
        libc::access(c.as_ptr(), libc::W_OK) == 0
    };
    let denied = |p: &Path| {
        format!(
            "{prefix}: failed to create raft storage: mkdir {}: permission denied",
            p.display()
        )
    };
    made.map_err(|_| denied(&raft_dir))?;
    if !writable {
        return Err(denied(path));
    }
    Ok(())
}

/// Go's wording of an OS error ("permission denied", "no such file or directory").
fn io_reason(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::PermissionDenied => "permission denied".into(),
        std::io::ErrorKind::NotFound => "no such file or directory".into(),
        _ => e.to_string(),
    }
}

/// Runs the Vault twin until SIGTERM or SIGINT.
/// The node's storage as its config says, and its raft node ID (empty on file storage).
/// A file backend with a migration lock refuses to start (command/server.go); raft runs
/// only while `raft_running` says so: once unsealed, or once a join's answer is taken.
fn open_storage(
    settings: &Settings,
    raft_running: &Arc<AtomicBool>,
) -> Result<(Storage, String), String> {
    Ok(match &settings.storage {
        StorageSettings::File { path } => {
            std::fs::create_dir_all(path)
                .map_err(|e| format!("Error initializing storage of type file: {e}"))?;
            let backend = FileBackend { root: path.clone() };
            if let Some(lock) = backend.get("core/migration") {
                let lock: Value = serde_json::from_slice(&lock).unwrap_or(Value::Null);
                return Err(format!(
                    "ERROR! Storage migration in progress (started: {}). Server startup is prevented until the migration completes. Use 'vault operator migrate -reset' to force clear the migration lock.",
                    lock["start"].as_str().unwrap_or("unknown")
                ));
            }
            (Storage::File(backend), String::new())
        }
        StorageSettings::Raft { path, node_id, .. } => {
            open_raft_files(path)?;
            let id = raft_node_id(path, node_id.as_ref());
            let flag = raft_running.clone();
            let cluster = Cluster::new::<storage::Op>(
                Options {
                    id: id.clone(),
                    address: host_port(settings.cluster_addr.as_deref().unwrap_or_default()),
                    http: settings.api_addr.clone(),
                    server: true,
                    bootstrap_expect: 0,
                    state_file: raft_state_file(path),
                    join: Vec::new(),
                    tags: Default::default(),
                    promote_after: Duration::from_secs(3),
                    call_clients: true,
                    tls: settings.tls.clone(),
                },
                // Vault runs raft only once unsealed (or, joining, once its answer is
                // taken): a sealed node neither votes nor takes entries, and cannot lead.
                Box::new(move || flag.load(Ordering::SeqCst)),
            );
            // Outage recovery: `<path>/raft/peers.json`, ids being node_ids.
            let own = crate::cluster::OwnPeer {
                id: &id,
                lab_id: &id,
                address: &host_port(settings.cluster_addr.as_deref().unwrap_or_default()),
                http: &settings.api_addr,
            };
            let peers = path.join("raft").join("peers.json");
            let prefix = "Error initializing storage of type raft";
            if let Some(servers) = crate::cluster::take_peers_json(&peers, &own, prefix)? {
                cluster.recover(servers);
            }
            cluster.claim_own_address();
            (Storage::Raft(cluster), id)
        }
    })
}

pub async fn serve(config: &Path) -> Result<(), String> {
    let settings = Settings::load(config)?;
    let unsealed = Arc::new(AtomicBool::new(false));
    let raft_running = Arc::new(AtomicBool::new(false));
    let (storage, node_id) = open_storage(&settings, &raft_running)?;
    // Bad TLS files stop the start, as they stop Vault.
    if let Some(files) = &settings.tls {
        crate::tls::server_config(files)
            .map_err(|e| format!("Error initializing listener of type tcp: {e}"))?;
    }
    // Calls to other nodes (raft join, forwarding) and to Consul; with TLS it presents this
    // node's certificate and accepts the others'.
    let client = crate::tls::internal_client(settings.tls.as_ref(), Duration::from_secs(5))?;
    let node = Arc::new(Node {
        settings: settings.clone(),
        storage,
        node_id,
        unsealed,
        raft_running,
        core: Mutex::new(Core::default()),
        client,
        shutdown: tokio::sync::Notify::new(),
    });
    let listener = tokio::net::TcpListener::bind(settings.listen)
        .await
        .map_err(|e| {
            format!(
                "Error initializing listener of type tcp: listen tcp {}: {e}",
                settings.listen
            )
        })?;
    let mut app = api::routes(node.clone());
    if let Some(cluster) = node.cluster() {
        cluster.spawn();
        tokio::spawn(node.clone().watch_leadership());
        app = app.merge(cluster.routes());
    }
    if let StorageSettings::Raft { retry_join, .. } = &settings.storage {
        if !retry_join.is_empty() {
            tokio::spawn(retry_join_loop(node.clone(), retry_join.clone()));
        }
    }
    let registration = settings
        .registration
        .clone()
        .map(|r| tokio::spawn(registration::run(node.clone(), r)));
    let n = node.clone();
    tokio::spawn(async move {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate()).expect("a SIGTERM handler");
        let mut int = signal(SignalKind::interrupt()).expect("a SIGINT handler");
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        n.shutdown.notify_waiters();
        // A request that never finishes must not keep a stopped server alive.
        tokio::time::sleep(Duration::from_secs(5)).await;
        std::process::exit(0);
    });
    tracing::info!(
        "vault twin listening on {} ({} storage), sealed",
        settings.listen,
        node.storage.kind()
    );
    let n = node.clone();
    let served = crate::tls::serve(listener, app, settings.tls.as_ref(), async move {
        n.shutdown.notified().await
    })
    .await;
    if let (Some(task), Some(r)) = (registration, &settings.registration) {
        task.abort();
        registration::deregister(&node, r).await;
    }
    served
}

/// `retry_join`: an uninitialised raft node keeps asking the listed leaders for a
/// challenge until one answers; the node still has to be unsealed by hand.
async fn retry_join_loop(node: Arc<Node>, leaders: Vec<JoinTarget>) {
    loop {
        if node.initialized() || !node.sealed() {
            return;
        }
        for leader in &leaders {
            let addr = &leader.leader_api_addr;
            match node.join(leader).await {
                Ok(()) => {
                    tracing::info!(
                        "join: fetched the challenge from {addr}; unseal this node to finish"
                    );
                    return;
                }
                // Vault logs each failed attempt (an x509 error with a private CA that
                // the block does not name) in these words and tries again (vault/raft.go
                // `JoinRaftCluster`; OpenBao 2.7.2 logs the same).
                Err(e) => tracing::error!(
                    "failed to get raft challenge: leader_addr={addr} error=\"{e}\""
                ),
            }
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}
