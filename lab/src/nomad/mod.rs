//! The Nomad agent twin: reads the same nomad.hcl a real agent reads, runs as server (raft
//! membership, bootstrap_expect, server_join / retry_join, auto-join through the local
//! Consul agent) and as client (its node in the replicated state, with drain and
//! eligibility, running the allocations the leader places: allocs.rs), and answers the HTTP
//! API as the API facts describe.

mod allocs;
mod api;
mod state;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::cluster::{Cluster, MemberStatus, Operation, Options, TypedState};
use crate::config::ConfigFile;
use crate::tls::TlsFiles;
use state::{AclBootstrap, Job, Node, NodeChange, State};

pub const VERSION: &str = "1.7.7";

const KNOWN_KEYS: &[&str] = &[
    "datacenter",
    "region",
    "name",
    "data_dir",
    "bind_addr",
    "log_level",
    "log_file",
    "leave_on_interrupt",
    "leave_on_terminate",
    "disable_update_check",
    "addresses.*",
    "advertise.*",
    "ports.*",
    "server.*",
    "client.*",
    "consul.*",
    "vault.*",
    "acl.*",
    "tls.*",
    "telemetry.*",
    "plugin.*",
    "ui.*",
    "limits.*",
];

/// A Nomad agent's join settings as written in its config.
#[derive(Clone, Debug, Default)]
pub struct LoadedJoins {
    pub server_retry_join: Vec<String>,
    pub client_servers: Vec<String>,
    pub client_retry_join: Vec<String>,
}

#[derive(Clone, Debug)]
pub struct ConsulSettings {
    /// The agent's address as written (`consul { address }`), which Nomad reports.
    pub address: String,
    pub agent: String,
    pub server_service_name: String,
    pub client_service_name: String,
    pub server_auto_join: bool,
    pub client_auto_join: bool,
    pub auto_advertise: bool,
    pub token: Option<String>,
    /// `ssl`, `ca_file`, `verify_ssl`: how Nomad trusts an https agent (the Consul API
    /// client's TLS config: the CA file, else the system roots).
    pub ca_file: Option<String>,
    pub verify_ssl: bool,
}

impl ConsulSettings {
    pub fn client(&self) -> Result<reqwest::Client, String> {
        let pem = match &self.ca_file {
            Some(path) => Some(crate::tls::read_ca("consul.ca_file", path)?),
            None => None,
        };
        crate::tls::client_trusting(pem.as_deref(), !self.verify_ssl, Duration::from_secs(5))?
            .build()
            .map_err(|e| e.to_string())
    }
}

/// nomad/server.go, the Consul server discovery loop: a server that finds no other servers
/// in Consul tries again only after 45 s plus up to half of that as jitter.
const CONSUL_DISCOVERY_RETRY: Duration = Duration::from_secs(45);

#[derive(Clone, Debug)]
pub struct Settings {
    pub name: String,
    pub region: String,
    pub datacenter: String,
    pub data_dir: PathBuf,
    pub bind: String,
    pub http: SocketAddr,
    pub server: bool,
    pub client: bool,
    pub bootstrap_expect: usize,
    pub retry_join: Vec<String>,
    /// The join settings one by one, as the agent reports them.
    pub loaded_joins: LoadedJoins,
    pub consul: Option<ConsulSettings>,
    /// `acl { enabled = true }`: every request needs the bootstrap (management) token.
    pub acl: bool,
    /// `tls { http = true ... }`: the HTTP API speaks TLS.
    pub tls: Option<TlsFiles>,
}

/// nomad.hcl's `consul` stanza, with Nomad's defaults (command/agent/config.go
/// DefaultConsulConfig); None without one.
fn consul_settings(file: &ConfigFile) -> Result<Option<ConsulSettings>, String> {
    if file.get("consul").is_none() {
        return Ok(None);
    }
    let s = |k: &str, d: &str| -> Result<String, String> {
        Ok(file
            .string(&format!("consul.{k}"))?
            .unwrap_or_else(|| d.to_string()))
    };
    let flag = |k: &str, d: bool| -> Result<bool, String> {
        Ok(file.bool(&format!("consul.{k}"))?.unwrap_or(d))
    };
    let address = s("address", "127.0.0.1:8500")?;
    let ssl = flag("ssl", false)?;
    Ok(Some(ConsulSettings {
        address: address.clone(),
        agent: if address.contains("://") {
            address
        } else {
            format!("{}://{address}", if ssl { "https" } else { "http" })
        },
        ca_file: file.string("consul.ca_file")?,
        verify_ssl: flag("verify_ssl", true)?,
        server_service_name: s("server_service_name", "nomad")?,
        client_service_name: s("client_service_name", "nomad-client")?,
        server_auto_join: flag("server_auto_join", true)?,
        client_auto_join: flag("client_auto_join", true)?,
        auto_advertise: flag("auto_advertise", true)?,
        token: file.string("consul.token")?,
    }))
}

/// nomad.hcl's `tls` stanza when `http = true`: the HTTP API's certificate and key.
fn tls_settings(file: &ConfigFile) -> Result<Option<TlsFiles>, String> {
    if !file.bool("tls.http")?.unwrap_or(false) {
        return Ok(None);
    }
    let path = |key: &str| -> Result<String, String> {
        file.string(&format!("tls.{key}"))?
            .ok_or_else(|| format!("tls.{key} is required when tls.http is true"))
    };
    Ok(Some(TlsFiles {
        cert_file: path("cert_file")?,
        key_file: path("key_file")?,
        ca_file: file.string("tls.ca_file")?,
        verify_client: file.bool("tls.verify_https_client")?.unwrap_or(false),
    }))
}

impl Settings {
    pub fn load(path: &Path) -> Result<Settings, String> {
        let file = ConfigFile::load(path)?;
        file.check_keys(KNOWN_KEYS, |key| {
            format!(
                "Error loading configuration from {}: unexpected keys {key}",
                file.path
            )
        })?;
        let wrap = |e: String| format!("Error loading configuration from {}: {e}", file.path);
        let data_dir = file
            .string("data_dir")
            .map_err(wrap)?
            .ok_or("Must specify data directory")?;
        let server = file.bool("server.enabled").map_err(wrap)?.unwrap_or(false);
        let client = file.bool("client.enabled").map_err(wrap)?.unwrap_or(false);
        if !server && !client {
            return Err("Must specify either server, client or dev mode for the agent.".into());
        }
        let expect = file
            .int("server.bootstrap_expect")
            .map_err(wrap)?
            .unwrap_or(0);
        if server && expect < 1 {
            return Err(
                "Error: bootstrap_expect must be set to a value greater than 0 for servers".into(),
            );
        }
        let bind = file
            .string("bind_addr")
            .map_err(wrap)?
            .unwrap_or_else(|| "0.0.0.0".into());
        let http_host = file
            .string("addresses.http")
            .map_err(wrap)?
            .unwrap_or_else(|| bind.clone());
        let http_port = file.int("ports.http").map_err(wrap)?.unwrap_or(4646);
        let http: SocketAddr = format!("{http_host}:{http_port}")
            .parse()
            .map_err(|_| format!("Invalid HTTP address {http_host}:{http_port}"))?;
        let advertise = file
            .string("advertise.rpc")
            .map_err(wrap)?
            .map(|a| a.split(':').next().unwrap_or_default().to_string())
            .unwrap_or_else(|| http.ip().to_string());
        // As loaded, for /v1/agent/self (command/agent/config.go `ServerJoin`,
        // `ClientConfig.Servers`): what health.rhai reads instead of the file.
        let loaded_joins = LoadedJoins {
            server_retry_join: file
                .strings("server.server_join.retry_join")
                .map_err(wrap)?,
            client_servers: file.strings("client.servers").map_err(wrap)?,
            client_retry_join: file
                .strings("client.server_join.retry_join")
                .map_err(wrap)?,
        };
        let mut retry_join = file
            .strings("server.server_join.retry_join")
            .map_err(wrap)?;
        retry_join.extend(file.strings("server.retry_join").map_err(wrap)?);
        retry_join.extend(
            file.strings("server.server_join.start_join")
                .map_err(wrap)?,
        );
        // A client finds servers through its own server_join or `servers` (RPC addresses).
        retry_join.extend(
            file.strings("client.server_join.retry_join")
                .map_err(wrap)?,
        );
        retry_join.extend(file.strings("client.servers").map_err(wrap)?);
        let consul = consul_settings(&file).map_err(wrap)?;
        Ok(Settings {
            name: file
                .string("name")
                .map_err(wrap)?
                .unwrap_or_else(|| "localhost".into()),
            region: file
                .string("region")
                .map_err(wrap)?
                .unwrap_or_else(|| "global".into()),
            datacenter: file
                .string("datacenter")
                .map_err(wrap)?
                .unwrap_or_else(|| "dc1".into()),
            data_dir: PathBuf::from(data_dir),
            bind: advertise,
            http,
            server,
            client,
            bootstrap_expect: expect as usize,
            retry_join,
            loaded_joins,
            consul,
            acl: file.bool("acl.enabled").map_err(wrap)?.unwrap_or(false),
            tls: tls_settings(&file).map_err(wrap)?,
        })
    }

    pub fn member_name(&self) -> String {
        format!("{}.{}", self.name, self.region)
    }

    /// Where another agent's twin answers: the same port and scheme as this one's.
    pub fn peer_url(&self, entry: &str) -> String {
        crate::config::peer_url(entry, self.http.port(), self.tls.is_some())
    }
}

pub struct Agent {
    pub settings: Settings,
    pub cluster: Arc<Cluster>,
    pub node_id: String,
    pub client: reqwest::Client,
    /// The leader's heartbeat timers, in the lab's terms (nomad/heartbeat.go).
    pub heartbeats: parking_lot::Mutex<Heartbeats>,
    /// When this client saw each of its allocations start (for min_healthy_time).
    pub started: parking_lot::Mutex<std::collections::HashMap<String, std::time::Instant>>,
}

/// A node is down when its client has been silent longer than its heartbeat TTL (at
/// least MinHeartbeatTTL 10 s plus HeartbeatGrace 10 s, nomad/config.go). A new leader
/// first gives every node FailoverHeartbeatTTL, 5 minutes (heartbeat.go
/// initializeHeartbeatTimers): a leader election, as in a rolling restart of the servers,
/// marks no node down.
#[derive(Default)]
pub struct Heartbeats {
    leader_since: Option<std::time::Instant>,
    /// Nodes heard from since this server became leader: their timers run on the TTL.
    heard: std::collections::HashSet<String>,
    silent_since: std::collections::HashMap<String, std::time::Instant>,
}

const HEARTBEAT_TTL: Duration = Duration::from_secs(20);
const FAILOVER_HEARTBEAT_TTL: Duration = Duration::from_secs(300);

impl Heartbeats {
    /// The nodes whose timer ran out, from the leader's view of which members are alive.
    fn expired(&mut self, alive: &BTreeMap<String, bool>) -> Vec<String> {
        let now = std::time::Instant::now();
        let leader_since = *self.leader_since.get_or_insert(now);
        let mut out = Vec::new();
        for (node, is_alive) in alive {
            if *is_alive {
                self.heard.insert(node.clone());
                self.silent_since.remove(node);
                continue;
            }
            let since = *self.silent_since.entry(node.clone()).or_insert(now);
            let ttl = if self.heard.contains(node) {
                HEARTBEAT_TTL
            } else {
                FAILOVER_HEARTBEAT_TTL.saturating_sub(since.saturating_duration_since(leader_since))
            };
            if now.duration_since(since) >= ttl {
                out.push(node.clone());
            }
        }
        out
    }

    /// This server no longer leads: its timers go.
    fn clear(&mut self) {
        *self = Heartbeats::default();
    }
}

/// The operations that change the replicated state: client nodes, jobs and the ACL
/// bootstrap.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Op {
    /// A client node's registration.
    UpsertNode {
        node: Box<Node>,
    },
    /// A change of a registered node (down, a drain, its eligibility).
    UpdateNode {
        id: String,
        change: NodeChange,
    },
    /// A node deregistered (`PUT /v1/node/:id/purge`, Node.Deregister).
    DeleteNode {
        id: String,
    },
    AclBootstrap {
        secret: String,
        accessor: String,
    },
    UpsertJob {
        job: Box<Job>,
    },
    /// A scheduler's plan: allocations stopped and placed (nomad/plan_apply.go).
    Plan {
        stops: Vec<allocs::Stop>,
        places: Vec<allocs::Alloc>,
    },
    /// Clients' reports on their allocations (Node.UpdateAlloc).
    UpdateAllocs {
        updates: Vec<allocs::ClientUpdate>,
    },
    /// The drainer's marks (Alloc.UpdateDesiredTransition).
    MigrateAllocs {
        ids: Vec<String>,
    },
    /// `PUT /v1/operator/snapshot`: the whole state replaced by a snapshot's.
    Restore {
        state: Value,
    },
}

/// Why the state refuses an operation.
#[derive(Debug, PartialEq, thiserror::Error)]
pub enum StateError {
    /// nomad/node_endpoint.go: an update or deregistration of an unknown node.
    #[error("node not found")]
    NodeNotFound,
    /// nomad/acl_endpoint.go Bootstrap: done once; the reset index names the way back.
    #[error("ACL bootstrap already done (reset index: {0})")]
    AclBootstrapped(u64),
    /// The state on disk or from a snapshot is not one the twin wrote.
    #[error("{0}")]
    Unreadable(String),
}

impl Operation for Op {
    type Error = StateError;

    fn apply(self, data: &mut Value, index: u64) -> Result<Value, StateError> {
        if let Op::Restore { state } = self {
            *data = state;
            return Ok(json!(index));
        }
        let mut state = State::from_json(data).map_err(StateError::Unreadable)?;
        match self {
            Op::UpsertNode { node } => {
                let mut node = *node;
                node.create_index = state.nodes.get(&node.id).map_or(index, |n| n.create_index);
                node.modify_index = index;
                state.nodes.insert(node.id.clone(), node);
            }
            Op::UpdateNode { id, change } => {
                let node = state.nodes.get_mut(&id).ok_or(StateError::NodeNotFound)?;
                change.apply(node);
                node.modify_index = index;
            }
            // nomad/node_endpoint.go Deregister: an unknown node is an error.
            Op::DeleteNode { id } => {
                state.nodes.remove(&id).ok_or(StateError::NodeNotFound)?;
            }
            Op::AclBootstrap { secret, accessor } => {
                if let Some(done) = &state.acl_bootstrap {
                    return Err(StateError::AclBootstrapped(done.index));
                }
                state.acl_bootstrap = Some(AclBootstrap {
                    secret,
                    accessor,
                    index,
                });
            }
            Op::UpsertJob { job } => {
                let mut job = *job;
                job.create_index = state.jobs.get(&job.id).map_or(index, |j| j.create_index);
                job.modify_index = index;
                job.job_modify_index = index;
                state.jobs.insert(job.id.clone(), job);
            }
            Op::Plan { stops, places } => allocs::apply_plan(&mut state, stops, places, index),
            Op::UpdateAllocs { updates } => {
                allocs::apply_client_updates(&mut state, updates, index)
            }
            Op::MigrateAllocs { ids } => allocs::apply_migrate(&mut state, ids, index),
            Op::Restore { .. } => {}
        }
        *data = state.to_json();
        Ok(json!(index))
    }
}

/// The server's node ID, kept as command/agent/agent.go setupNodeID keeps it: in the
/// server's data dir, DATA_DIR/server/node-id.
fn server_node_id(data_dir: &Path) -> String {
    let file = data_dir.join("server").join("node-id");
    if let Ok(id) = std::fs::read_to_string(&file) {
        return id.trim().to_string();
    }
    let id = uuid::Uuid::new_v4().to_string();
    let _ = std::fs::create_dir_all(data_dir.join("server"));
    let _ = std::fs::write(&file, &id);
    id
}

/// The client's node ID, kept in the data dir.
fn node_id(data_dir: &Path) -> String {
    let file = data_dir.join("client").join("client-id");
    if let Ok(id) = std::fs::read_to_string(&file) {
        return id.trim().to_string();
    }
    let id = uuid::Uuid::new_v4().to_string();
    let _ = std::fs::create_dir_all(data_dir.join("client"));
    let _ = std::fs::write(&file, &id);
    id
}

impl Agent {
    /// The client's node in the replicated state: registered once a leader exists; the
    /// leader marks nodes whose agent failed as down.
    async fn client_round(&self) {
        if self.cluster.leader().is_none() {
            return;
        }
        if self.settings.client {
            let existing = self.own_node().await;
            if existing.as_ref().is_none_or(|n| n.status != "ready") {
                let existing = existing.unwrap_or_default();
                let node = Node {
                    id: self.node_id.clone(),
                    name: self.settings.name.clone(),
                    datacenter: self.settings.datacenter.clone(),
                    address: self.settings.bind.clone(),
                    node_pool: "default".into(),
                    version: VERSION.into(),
                    drain: existing.drain,
                    scheduling_eligibility: if existing.scheduling_eligibility.is_empty() {
                        "eligible".into()
                    } else {
                        existing.scheduling_eligibility
                    },
                    status: "ready".into(),
                    drivers: json!({"docker": {"Attributes": {}, "Detected": true, "Healthy": true, "HealthDescription": "Healthy"}}),
                    host_volumes: json!({}),
                    drain_strategy: existing.drain_strategy,
                    last_drain: existing.last_drain,
                    member: self.settings.member_name(),
                    ..Node::default()
                };
                let node = Box::new(node);
                let _ = self.cluster.write(Op::UpsertNode { node }).await;
            } else {
                self.run_allocs().await;
            }
        }
        if !self.cluster.is_leader() {
            self.heartbeats.lock().clear();
        } else {
            let members: BTreeMap<String, MemberStatus> = self
                .cluster
                .members()
                .into_iter()
                .map(|m| (m.name, m.status))
                .collect();
            // Each ready node: is its client alive (the lab's stand-in for its heartbeats)?
            // Heartbeats are per node ID (nomad/heartbeat.go resetHeartbeatTimer): when a
            // fresh machine registers a new node under an old name, only the newest node of
            // that member heartbeats; the old one goes silent and is marked down.
            let nodes: BTreeMap<String, Node> = self.cluster.part("nodes");
            let newest = |member: &str| {
                nodes
                    .iter()
                    .filter(|(_, n)| n.member == member)
                    .max_by_key(|(_, n)| n.create_index)
                    .map(|(id, _)| id.as_str())
            };
            let alive: BTreeMap<String, bool> = nodes
                .iter()
                .filter(|(_, n)| n.status == "ready")
                .filter_map(|(id, n)| {
                    let status = members.get(&n.member)?;
                    let heartbeats = newest(&n.member) == Some(id.as_str());
                    Some((id.clone(), heartbeats && *status == MemberStatus::Alive))
                })
                .collect();
            let down = self.heartbeats.lock().expired(&alive);
            for id in down {
                let _ = self
                    .cluster
                    .write(Op::UpdateNode {
                        id,
                        change: NodeChange::Down,
                    })
                    .await;
            }
            self.drain_and_schedule().await;
        }
    }

    /// This client runs, watches and stops its own allocations (allocs.rs client_pass).
    async fn run_allocs(&self) {
        let all = self.cluster.read_at("/allocs").await;
        let jobs = self.cluster.read_at("/jobs").await;
        let (Ok(all), Ok(jobs)) = (serde_json::from_value(all), serde_json::from_value(jobs))
        else {
            return;
        };
        let updates = {
            let mut started = self.started.lock();
            allocs::client_pass(&all, &jobs, &self.node_id, &mut started)
        };
        if !updates.is_empty() {
            let _ = self.cluster.write(Op::UpdateAllocs { updates }).await;
        }
    }

    /// This client's node as the servers hold it (a client-only agent asks the leader).
    async fn own_node(&self) -> Option<Node> {
        let node = self
            .cluster
            .read_at(&format!("/nodes/{}", self.node_id))
            .await;
        serde_json::from_value(node).ok()
    }

    /// The replicated state as this server holds it (empty when it cannot be read).
    pub fn state(&self) -> State {
        self.cluster.read(|d| {
            State::from_json(d).unwrap_or_else(|e| {
                tracing::error!("nomad state: {e}");
                State::default()
            })
        })
    }

    /// The leader's drainer and scheduler, one pass each round (allocs.rs drain_pass and
    /// schedule). A drain that is over leaves the node ineligible, as Nomad's does
    /// (state_store.go updateNodeDrainImpl with no MarkEligible).
    async fn drain_and_schedule(&self) {
        let state = self.state();
        let pass = allocs::drain_pass(&state, Duration::from_secs(1));
        if !pass.migrate.is_empty() {
            let ids = pass.migrate;
            let _ = self.cluster.write(Op::MigrateAllocs { ids }).await;
        }
        let now = std::time::SystemTime::now();
        // Complete whether done or at the deadline: Nomad notes a deadline in the node's
        // events (which the twin does not keep), not in LastDrain.
        for id in pass.done {
            let at = humantime::format_rfc3339_nanos(now).to_string();
            let change = NodeChange::DrainComplete { at };
            let _ = self.cluster.write(Op::UpdateNode { id, change }).await;
        }
        let (stops, places) = allocs::schedule(&self.state());
        if !stops.is_empty() || !places.is_empty() {
            let _ = self.cluster.write(Op::Plan { stops, places }).await;
        }
    }

    /// auto_advertise and server_auto_join: register `nomad` (http, rpc, serf) at the local
    /// Consul agent, and while there is no leader join the servers found in its catalog.
    async fn consul_round(
        &self,
        consul: &ConsulSettings,
        client: &reqwest::Client,
        advertised: &mut bool,
        next_discovery: &mut tokio::time::Instant,
    ) {
        let with_token = |r: reqwest::RequestBuilder| match &consul.token {
            Some(t) => r.header("X-Consul-Token", t),
            None => r,
        };
        if consul.auto_advertise && !*advertised {
            // Servers advertise `nomad` (http, rpc, serf), clients `nomad-client` (http).
            let mut services = Vec::new();
            if self.settings.server {
                let name = &consul.server_service_name;
                services.push(("server", name, "http", self.settings.http.port()));
                services.push(("server", name, "rpc", 4647));
                services.push(("server", name, "serf", 4648));
            }
            if self.settings.client {
                let name = &consul.client_service_name;
                services.push(("client", name, "http", self.settings.http.port()));
            }
            let mut ok = true;
            for (role, name, tag, port) in services {
                let service = json!({
                    "ID": format!("_nomad-{role}-{}-{tag}", self.settings.name),
                    "Name": name,
                    "Tags": [tag],
                    "Address": self.settings.bind,
                    "Port": port,
                });
                let sent =
                    with_token(client.put(format!("{}/v1/agent/service/register", consul.agent)))
                        .json(&service)
                        .send()
                        .await;
                ok &= sent.is_ok_and(|r| r.status().is_success());
            }
            *advertised = ok;
        }
        // Auto-join only while no leader is known: servers look for `serf`, clients for `rpc`.
        let tag = if self.settings.server { "serf" } else { "rpc" };
        let wanted = if self.settings.server {
            consul.server_auto_join
        } else {
            consul.client_auto_join
        };
        if !wanted || self.cluster.leader().is_some() {
            return;
        }
        if tokio::time::Instant::now() < *next_discovery {
            return;
        }
        let url = format!(
            "{}/v1/catalog/service/{}?tag={tag}&stale",
            consul.agent, consul.server_service_name
        );
        let entries: Value = match with_token(client.get(url)).send().await {
            Ok(reply) => reply.json().await.unwrap_or(Value::Null),
            Err(e) => {
                tracing::warn!("unable to query Consul at {}: {e}", consul.agent);
                Value::Null
            }
        };
        let others = entries
            .as_array()
            .into_iter()
            .flatten()
            .filter(|e| {
                e["ServiceAddress"].as_str().or(e["Address"].as_str()) != Some(&self.settings.bind)
            })
            .count();
        if self.settings.server && others == 0 {
            let jitter = Duration::from_millis(rand::random::<u64>() % 22_500);
            *next_discovery = tokio::time::Instant::now() + CONSUL_DISCOVERY_RETRY + jitter;
            tracing::info!(
                "discover: no other Nomad servers found in Consul; retrying in {:?}",
                CONSUL_DISCOVERY_RETRY + jitter
            );
            return;
        }
        for entry in entries.as_array().into_iter().flatten() {
            let address = entry["ServiceAddress"]
                .as_str()
                .filter(|a| !a.is_empty())
                .or(entry["Address"].as_str())
                .unwrap_or_default();
            if address.is_empty() || address == self.settings.bind {
                continue;
            }
            let _ = self
                .cluster
                .join_member(&self.settings.peer_url(address))
                .await;
        }
    }
}

/// The gossip tags of this server (nomad/server.go setupSerf): its node ID, which is its
/// raft ID (protocol 3), region, datacenter, port, build and bootstrap mode.
fn serf_tags(settings: &Settings, server_id: &str) -> BTreeMap<String, String> {
    let mut tags = BTreeMap::new();
    let mut tag = |k: &str, v: &str| tags.insert(k.to_string(), v.to_string());
    tag("role", "nomad");
    tag("id", server_id);
    tag("region", &settings.region);
    tag("dc", &settings.datacenter);
    tag("port", "4647");
    tag("build", VERSION);
    if settings.bootstrap_expect == 1 {
        tag("bootstrap", "1");
    } else if settings.bootstrap_expect > 1 {
        tag("expect", &settings.bootstrap_expect.to_string());
    }
    tags
}

/// nomad/server.go setupRaft: DATA_DIR/server/raft/peers.json replaces the raft
/// configuration at start, and is deleted.
fn recover_from_peers_json(
    settings: &Settings,
    server_id: &str,
    scheme: &str,
    cluster: &Cluster,
) -> Result<(), String> {
    let own = crate::cluster::OwnPeer {
        id: server_id,
        // The lab's raft IDs are member names.
        lab_id: &settings.member_name(),
        address: &format!("{}:4647", settings.bind),
        http: &format!("{scheme}://{}", settings.http),
    };
    let file = settings
        .data_dir
        .join("server")
        .join("raft")
        .join("peers.json");
    let prefix = "Error starting agent: server setup failed";
    if let Some(servers) = crate::cluster::take_peers_json(&file, &own, prefix)? {
        cluster.recover(servers);
    }
    Ok(())
}

pub async fn serve(config: &Path) -> Result<(), String> {
    let settings = Settings::load(config)?;
    std::fs::create_dir_all(settings.data_dir.join("server")).map_err(|e| {
        format!(
            "Error creating data_dir {}: {e}",
            settings.data_dir.display()
        )
    })?;
    let node_id = node_id(&settings.data_dir);
    let server_id = server_node_id(&settings.data_dir);
    let tags = serf_tags(&settings, &server_id);
    // Bad TLS files stop the start, as they stop Nomad.
    if let Some(files) = &settings.tls {
        crate::tls::server_config(files)?;
    }
    let scheme = if settings.tls.is_some() {
        "https"
    } else {
        "http"
    };
    let cluster = Cluster::new::<Op>(
        Options {
            id: settings.member_name(),
            address: format!("{}:4647", settings.bind),
            http: format!("{scheme}://{}", settings.http),
            server: settings.server,
            bootstrap_expect: settings.bootstrap_expect,
            state_file: settings.data_dir.join("server").join("raft-state.json"),
            join: settings
                .retry_join
                .iter()
                .map(|j| settings.peer_url(j))
                .collect(),
            tags,
            promote_after: Duration::from_secs(3),
            call_clients: false,
            tls: settings.tls.clone(),
        },
        Box::new(|| true),
    );
    if settings.server {
        recover_from_peers_json(&settings, &server_id, scheme, &cluster)?;
    }
    let agent = Arc::new(Agent {
        heartbeats: Default::default(),
        started: Default::default(),
        settings: settings.clone(),
        cluster: cluster.clone(),
        node_id,
        client: reqwest::Client::builder()
            .timeout(Duration::from_secs(3))
            .no_proxy()
            .build()
            .map_err(|e| e.to_string())?,
    });
    // Everything that can refuse the start comes before the port opens: the lab takes an
    // open port for a started agent.
    let consul_client = match &settings.consul {
        Some(c) => Some(c.client()?),
        None => None,
    };
    let listener = tokio::net::TcpListener::bind(settings.http)
        .await
        .map_err(|e| {
            format!(
                "Error starting agent: failed to start HTTP server on {}: {e}",
                settings.http
            )
        })?;
    cluster.spawn();
    let a = agent.clone();
    tokio::spawn(async move {
        let mut advertised = false;
        let mut next_discovery = tokio::time::Instant::now();
        loop {
            a.client_round().await;
            if let (Some(consul), Some(client)) = (a.settings.consul.clone(), &consul_client) {
                a.consul_round(&consul, client, &mut advertised, &mut next_discovery)
                    .await;
            }
            tokio::time::sleep(Duration::from_millis(700)).await;
        }
    });
    let app = api::routes(agent.clone()).merge(cluster.routes());
    tracing::info!(
        "nomad twin {} listening on {}",
        settings.member_name(),
        settings.http
    );
    crate::tls::serve(listener, app, settings.tls.as_ref(), std::future::pending()).await
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A new leader marks no node down for the failover TTL; a node it has heard from
    /// and that then goes silent is not down before the heartbeat TTL either.
    #[test]
    fn no_node_is_down_at_once() {
        let mut timers = Heartbeats::default();
        let silent = BTreeMap::from([("worker1".to_string(), false)]);
        assert!(timers.expired(&silent).is_empty());
        let alive = BTreeMap::from([("worker1".to_string(), true)]);
        assert!(timers.expired(&alive).is_empty());
        assert!(timers.expired(&silent).is_empty());
        // Heard from, then silent past the TTL: down.
        timers
            .silent_since
            .insert("worker1".into(), std::time::Instant::now() - HEARTBEAT_TTL);
        assert_eq!(timers.expired(&silent), ["worker1"]);
        // Never heard from by this leader: the failover TTL.
        let mut fresh = Heartbeats {
            leader_since: Some(std::time::Instant::now()),
            ..Default::default()
        };
        fresh
            .silent_since
            .insert("worker2".into(), std::time::Instant::now() - HEARTBEAT_TTL);
        let silent2 = BTreeMap::from([("worker2".to_string(), false)]);
        assert!(fresh.expired(&silent2).is_empty());
    }
}
