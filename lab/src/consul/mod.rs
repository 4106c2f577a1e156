//! The Consul server twin: reads the same consul.hcl a real agent reads and answers the
//! HTTP API as documented in the API facts, for the endpoints harun and its scripts use.
//!
//! Services and checks belong to the agent they were registered at (kept in its data_dir
//! and synced into the catalog under its node): deregistering through another agent finds
//! nothing to remove, and the registration goes stale, as in the story.

mod api;
pub mod state;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::Mutex;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::cluster::{table, Cluster, Member, MemberStatus, Options};
use crate::config::ConfigFile;
use state::Op;

/// Keys a consul.hcl may hold; others are refused as the real agent refuses them.
const KNOWN_KEYS: &[&str] = &[
    "datacenter",
    "data_dir",
    "node_name",
    "node_id",
    "server",
    "bootstrap",
    "bootstrap_expect",
    "retry_join",
    "retry_interval",
    "retry_max",
    "start_join",
    "rejoin_after_leave",
    "leave_on_terminate",
    "bind_addr",
    "client_addr",
    "advertise_addr",
    "addresses.*",
    "ports.*",
    "ui",
    "ui_config.*",
    "log_level",
    "log_file",
    "encrypt",
    "enable_script_checks",
    "enable_local_script_checks",
    "acl.*",
    "connect.*",
    "performance.*",
    "telemetry.*",
    "tls.*",
    "verify_incoming",
    "verify_incoming_https",
    "verify_incoming_rpc",
    "verify_outgoing",
    "verify_server_hostname",
    "ca_file",
    "cert_file",
    "key_file",
    "recursors",
    "domain",
    "node_meta.*",
    "autopilot.*",
    "dns_config.*",
];

#[derive(Clone, Debug)]
pub struct Settings {
    pub datacenter: String,
    pub node_name: String,
    pub node_id: String,
    pub server: bool,
    pub bind: String,
    pub http: SocketAddr,
    pub data_dir: PathBuf,
    pub bootstrap_expect: usize,
    pub retry_join: Vec<String>,
    pub management_token: Option<String>,
    pub acl_enabled: bool,
    pub default_allow: bool,
    pub enable_script_checks: bool,
    pub server_port: u16,
    /// HTTPS on `ports.https` (Consul 1.8's top-level cert_file, key_file, ca_file); with
    /// `ports.http = -1` the API answers only there, as a secured agent does.
    pub tls: Option<crate::tls::TlsFiles>,
}

impl Settings {
    /// The API's base URL as other agents reach it.
    pub fn api_url(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://{}", self.http)
    }

    /// Where another agent's twin answers: the same port and scheme as this one's.
    pub fn peer_url(&self, entry: &str) -> String {
        crate::config::peer_url(entry, self.http.port(), self.tls.is_some())
    }
}

/// The HTTPS API's certificate and key when `ports.https` is set (the twin serves its API
/// on one port: HTTPS when configured and plain HTTP is off, `ports { http = -1 }`).
fn tls_settings(
    file: &ConfigFile,
    https_port: i64,
) -> Result<Option<crate::tls::TlsFiles>, String> {
    if https_port <= 0 {
        return Ok(None);
    }
    let need = |k: &str| -> Result<String, String> {
        file.string(k)?
            .ok_or_else(|| format!("HTTPS requires {k} (ports.https = {https_port})"))
    };
    let flag = |k: &str| -> Result<bool, String> { Ok(file.bool(k)?.unwrap_or(false)) };
    Ok(Some(crate::tls::TlsFiles {
        cert_file: need("cert_file")?,
        key_file: need("key_file")?,
        ca_file: file.string("ca_file")?,
        verify_client: flag("verify_incoming")? || flag("verify_incoming_https")?,
    }))
}

impl Settings {
    pub fn load(path: &Path) -> Result<Settings, String> {
        let file = ConfigFile::load(path)?;
        file.check_keys(KNOWN_KEYS, |key| {
            format!(
                "Error parsing {}: 1 error occurred:\n\t* invalid config key {key}\n",
                file.path
            )
        })?;
        let wrap = |e: String| format!("Error parsing {}: {e}", file.path);
        let data_dir = file
            .string("data_dir")
            .map_err(wrap)?
            .ok_or("data_dir cannot be empty")?;
        let server = file.bool("server").map_err(wrap)?.unwrap_or(false);
        let bootstrap = file.bool("bootstrap").map_err(wrap)?.unwrap_or(false);
        let expect = file.int("bootstrap_expect").map_err(wrap)?.unwrap_or(0);
        if expect < 0 {
            return Err("bootstrap_expect cannot be negative".into());
        }
        if expect > 0 && !server {
            return Err("'bootstrap_expect = N' requires 'server = true'".into());
        }
        if expect > 0 && bootstrap {
            return Err(
                "'bootstrap_expect > 0' and 'bootstrap = true' are mutually exclusive".into(),
            );
        }
        let bind = file
            .string("bind_addr")
            .map_err(wrap)?
            .unwrap_or_else(|| "127.0.0.1".into());
        let client = file
            .string("addresses.http")
            .map_err(wrap)?
            .or(file.string("client_addr").map_err(wrap)?)
            .unwrap_or_else(|| "127.0.0.1".into());
        let http_port = file.int("ports.http").map_err(wrap)?.unwrap_or(8500);
        let https_port = file.int("ports.https").map_err(wrap)?.unwrap_or(-1);
        // The twin serves its API on one port: HTTPS when configured and plain HTTP is
        // off (`ports { http = -1 }`), else HTTP.
        let tls = tls_settings(&file, https_port).map_err(wrap)?;
        if tls.is_some() && http_port > 0 {
            return Err("the lab's Consul twin serves HTTP or HTTPS, not both: set ports { http = -1 } beside https".into());
        }
        let api_port = if tls.is_some() { https_port } else { http_port };
        let http: SocketAddr = format!("{client}:{api_port}")
            .parse()
            .map_err(|_| format!("Invalid HTTP address {client}:{api_port}"))?;
        let node_name = file
            .string("node_name")
            .map_err(wrap)?
            .unwrap_or_else(hostname);
        let management_token = file
            .string("acl.tokens.initial_management")
            .map_err(wrap)?
            .or(file.string("acl.tokens.master").map_err(wrap)?);
        let acl_enabled = file.bool("acl.enabled").map_err(wrap)?.unwrap_or(false);
        let default_allow = file
            .string("acl.default_policy")
            .map_err(wrap)?
            .is_none_or(|p| p == "allow");
        let data_dir = PathBuf::from(data_dir);
        Ok(Settings {
            datacenter: file
                .string("datacenter")
                .map_err(wrap)?
                .unwrap_or_else(|| "dc1".into()),
            node_id: node_id(&data_dir),
            node_name,
            server,
            bind,
            http,
            data_dir,
            bootstrap_expect: if bootstrap { 1 } else { expect as usize },
            retry_join: file
                .strings("retry_join")
                .map_err(wrap)?
                .into_iter()
                .chain(file.strings("start_join").map_err(wrap)?)
                .collect(),
            management_token,
            acl_enabled,
            default_allow,
            enable_script_checks: file
                .bool("enable_script_checks")
                .map_err(wrap)?
                .unwrap_or(false),
            server_port: file.int("ports.server").map_err(wrap)?.unwrap_or(8300) as u16,
            tls,
        })
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/etc/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "localhost".into())
}

/// The node ID kept in the data dir, made on first start.
fn node_id(data_dir: &Path) -> String {
    let file = data_dir.join("node-id");
    if let Ok(id) = std::fs::read_to_string(&file) {
        return id.trim().to_string();
    }
    uuid::Uuid::new_v4().to_string()
}

/// A check registered at this agent, with its live status.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct LocalCheck {
    pub def: Value,
    #[serde(skip)]
    pub deadline: Option<Instant>,
    pub ttl: Option<u64>,
    /// When an HTTP check runs next (at once after a start).
    #[serde(skip)]
    pub next_probe: Option<Instant>,
}

#[derive(Default, serde::Serialize, serde::Deserialize)]
struct Local {
    services: BTreeMap<String, Value>,
    checks: BTreeMap<String, LocalCheck>,
}

pub struct Agent {
    pub settings: Settings,
    pub cluster: Arc<Cluster>,
    local: Mutex<Local>,
    pub shutdown: tokio::sync::Notify,
}

impl Agent {
    fn local(&self) -> parking_lot::MutexGuard<'_, Local> {
        self.local.lock()
    }

    fn save_local(&self) {
        let text = serde_json::to_vec(&*self.local()).expect("local state serializes");
        let path = self.settings.data_dir.join("agent-local.json");
        let _ = crate::cluster::write_state_file(&path, &text);
    }

    /// Anti-entropy: the catalog entries of this node follow what the agent holds.
    async fn sync(&self) {
        if self.cluster.leader().is_none() {
            return;
        }
        let me = self.settings.node_name.clone();
        // Services join the catalog once their node is in it (the leader adds members'
        // nodes), so a catalog entry never lacks its node's address.
        // A client agent holds no catalog: read_at asks the leader.
        if self
            .cluster
            .read_at(&format!("/nodes/{me}"))
            .await
            .is_null()
        {
            return;
        }
        let catalog_services = self
            .cluster
            .read_at(&format!("/services/{me}"))
            .await
            .as_object()
            .cloned()
            .unwrap_or_default();
        let catalog_checks = self
            .cluster
            .read_at(&format!("/checks/{me}"))
            .await
            .as_object()
            .cloned()
            .unwrap_or_default();
        let (services, checks) = {
            let local = self.local();
            (local.services.clone(), local.checks.clone())
        };
        let mut ops = Vec::new();
        for (id, service) in &services {
            let same = catalog_services
                .get(id)
                .is_some_and(|c| strip_indexes(c) == strip_indexes(service));
            if !same {
                match serde_json::from_value(service.clone()) {
                    Ok(service) => ops.push(Op::RegisterService {
                        node: me.clone(),
                        service,
                    }),
                    Err(e) => tracing::error!("service {id}: {e}"),
                }
            }
        }
        for id in catalog_services.keys() {
            if !services.contains_key(id) && id != "consul" {
                ops.push(Op::DeregisterService {
                    node: me.clone(),
                    id: id.clone(),
                });
            }
        }
        for (id, check) in &checks {
            let same = catalog_checks
                .get(id)
                .is_some_and(|c| strip_indexes(c) == strip_indexes(&check.def));
            if !same {
                match serde_json::from_value(check.def.clone()) {
                    Ok(check) => ops.push(Op::RegisterCheck {
                        node: me.clone(),
                        check,
                        now_ms: api::now_ms(),
                    }),
                    Err(e) => tracing::error!("check {id}: {e}"),
                }
            }
        }
        for (id, check) in &catalog_checks {
            let service_check = check["ServiceID"].as_str().is_some_and(|s| !s.is_empty());
            if !checks.contains_key(id)
                && id != "serfHealth"
                && (service_check || check["CheckID"] != "serfHealth")
            {
                ops.push(Op::DeregisterCheck {
                    node: me.clone(),
                    id: id.clone(),
                });
            }
        }
        for op in ops {
            if let Err(e) = self.cluster.write(op).await {
                tracing::debug!("catalog sync: {e}");
                return;
            }
        }
    }

    /// A node out of the catalog, its services and checks with it (the leader's
    /// reconcile; a failure is tried again on its next round).
    async fn deregister_node(&self, name: &str) {
        let _ = self
            .cluster
            .write(Op::DeregisterNode {
                node: name.to_string(),
                now_ms: api::now_ms(),
            })
            .await;
    }

    /// The leader keeps every member's node and its serfHealth check in the catalog.
    async fn reconcile(&self) {
        if !self.cluster.is_leader() {
            return;
        }
        self.expire_sessions().await;
        let members = self.cluster.members();
        let (nodes, services, checks): (state::Nodes, state::Services, state::Checks) = self
            .cluster
            .read(|d| (table(d, "nodes"), table(d, "services"), table(d, "checks")));
        // leader.go reconcileReaped: a node pruned from the members leaves the catalog.
        for gone in self.cluster.pruned() {
            if nodes.contains_key(&gone) && !members.iter().any(|m| m.name == gone) {
                self.deregister_node(&gone).await;
            }
        }
        for m in members {
            let status = match m.status {
                MemberStatus::Alive => "passing",
                MemberStatus::Failed | MemberStatus::Leaving => "critical",
                MemberStatus::Left => {
                    if nodes.contains_key(&m.name) {
                        self.deregister_node(&m.name).await;
                    }
                    continue;
                }
            };
            // leader.go handleAliveMember: a node registered anew when the catalog lacks
            // it or knows it at another address or ID (a new machine under an old name),
            // or a server's node lacks its `consul` service.
            let id = m.tags.get("id").cloned().unwrap_or_default();
            let known = nodes.get(&m.name);
            let stale =
                known.is_some_and(|n| n.address != m.addr || (!id.is_empty() && n.id != id));
            if stale {
                self.deregister_node(&m.name).await;
            }
            let no_service = m.server
                && !services
                    .get(&m.name)
                    .is_some_and(|s| s.contains_key("consul"));
            if known.is_none() || stale || no_service {
                if !self.register_member(&m, id, status).await {
                    return;
                }
                continue;
            }
            let current = checks
                .get(&m.name)
                .and_then(|c| c.get("serfHealth"))
                .map(|c| c.status.as_str());
            if current != Some(status) {
                self.set_serf_health(&m.name, status).await;
            }
        }
    }

    /// Sessions whose TTL ran out twice over without a renewal are invalidated.
    async fn expire_sessions(&self) {
        let now = api::now_ms();
        let expiry: BTreeMap<String, u64> = self.cluster.part("session_expiry");
        let expired = expiry
            .into_iter()
            .filter(|(_, at)| *at <= now)
            .map(|(id, _)| id);
        for id in expired {
            tracing::info!("session {id} expired: invalidated");
            let _ = self
                .cluster
                .write(Op::SessionDestroy { id, now_ms: now })
                .await;
        }
    }

    /// A member's node put in the catalog with its serfHealth check (`status`) and the
    /// `consul` service of a server, in one write as Consul's leader makes it; false when
    /// the write fails (this round ends; the next tries again).
    async fn register_member(&self, m: &Member, id: String, status: &str) -> bool {
        let rest = json!({
            "Datacenter": m.tags.get("dc").cloned().unwrap_or_else(|| "dc1".into()),
            "TaggedAddresses": {"lan": m.addr, "wan": m.addr},
            "Meta": {"consul-network-segment": ""},
        });
        let node = state::Node {
            id,
            name: m.name.clone(),
            address: m.addr.clone(),
            rest: as_map(rest),
            ..state::Node::default()
        };
        let service = m.server.then(|| {
            let rest = json!({
                "Tags": [], "Meta": {}, "Address": "", "Port": self.settings.server_port,
                "Weights": {"Passing": 1, "Warning": 1}, "EnableTagOverride": false,
            });
            state::Service {
                id: "consul".into(),
                service: "consul".into(),
                rest: as_map(rest),
                ..state::Service::default()
            }
        });
        let op = Op::RegisterNode {
            node,
            service,
            check: Some(serf_health(&m.name, status)),
            now_ms: api::now_ms(),
        };
        self.cluster.write(op).await.is_ok()
    }

    /// A member's serfHealth check set to `passing` or `critical`.
    async fn set_serf_health(&self, node: &str, status: &str) {
        let _ = self
            .cluster
            .write(Op::RegisterCheck {
                node: node.to_string(),
                check: serf_health(node, status),
                now_ms: api::now_ms(),
            })
            .await;
    }

    /// Runs the HTTP checks that are due, each in the background, as Consul's agent does
    /// every Interval (agent/checks/check.go `CheckHTTP.check`): a GET with Consul's
    /// headers, within Timeout (default 10 s); 2xx passing, 429 warning, anything else or
    /// no answer critical; the output line in Consul's words. TLSSkipVerify turns off
    /// verification; otherwise the system's roots are trusted (a private CA needs the
    /// agent's enable_agent_tls_for_checks, which the twin does not know).
    fn run_http_checks(self: &Arc<Self>) {
        let now = Instant::now();
        let due: Vec<(String, String, Duration, bool)> = {
            let mut local = self.local();
            local
                .checks
                .iter_mut()
                .filter(|(_, c)| c.def["Type"] == "http")
                .filter_map(|(id, c)| {
                    if c.next_probe.is_some_and(|t| t > now) {
                        return None;
                    }
                    let d = &c.def["Definition"];
                    let every = d["Interval"]
                        .as_str()
                        .and_then(|i| humantime::parse_duration(i).ok())
                        .unwrap_or(Duration::from_secs(10));
                    c.next_probe = Some(now + every);
                    let timeout = d["Timeout"]
                        .as_str()
                        .and_then(|t| humantime::parse_duration(t).ok())
                        .unwrap_or(Duration::from_secs(10));
                    Some((
                        id.clone(),
                        d["HTTP"].as_str()?.to_string(),
                        timeout,
                        d["TLSSkipVerify"] == true,
                    ))
                })
                .collect()
        };
        for (id, url, timeout, skip) in due {
            let agent = self.clone();
            tokio::spawn(async move {
                let (status, output) = http_probe(&url, timeout, skip).await;
                let changed = {
                    let mut local = agent.local();
                    match local.checks.get_mut(&id) {
                        Some(c) if c.def["Status"] != status || c.def["Output"] != output => {
                            c.def["Status"] = json!(status);
                            c.def["Output"] = json!(output);
                            true
                        }
                        _ => false,
                    }
                };
                if changed {
                    agent.save_local();
                }
            });
        }
    }

    /// TTL checks that were not refreshed in time turn critical; whether any did.
    fn expire_ttls(&self) -> bool {
        let mut changed = false;
        let mut local = self.local();
        for check in local.checks.values_mut() {
            if let Some(deadline) = check.deadline {
                if Instant::now() > deadline && check.def["Status"] != "critical" {
                    check.def["Status"] = json!("critical");
                    check.def["Output"] = json!("TTL expired");
                    check.deadline = None;
                    changed = true;
                }
            }
        }
        changed
    }
}

/// One run of an HTTP check: its status and Consul's output line.
async fn http_probe(url: &str, timeout: Duration, skip_verify: bool) -> (&'static str, String) {
    let client = match crate::tls::client_trusting(None, skip_verify, timeout)
        .and_then(|b| b.build().map_err(|e| e.to_string()))
    {
        Ok(c) => c,
        Err(e) => return ("critical", e),
    };
    let sent = client
        .get(url)
        .header("User-Agent", "Consul Health Check")
        .header("Accept", "text/plain, text/*, */*")
        .send()
        .await;
    match sent {
        Err(e) => (
            "critical",
            format!("Get \"{url}\": {}", crate::tls::error_chain(&e)),
        ),
        Ok(reply) => {
            let code = reply.status();
            let body = reply.text().await.unwrap_or_default();
            let body: String = body.chars().take(4096).collect();
            let status = match code.as_u16() {
                200..=299 => "passing",
                429 => "warning",
                _ => "critical",
            };
            (status, format!("HTTP GET {url}: {code} Output: {body}"))
        }
    }
}

fn strip_indexes(v: &Value) -> Value {
    let mut v = v.clone();
    if let Some(o) = v.as_object_mut() {
        o.remove("CreateIndex");
        o.remove("ModifyIndex");
    }
    v
}

/// A member's serfHealth check, `passing` or `critical`, in Consul's words.
fn serf_health(node: &str, status: &str) -> state::Check {
    let output = if status == "passing" {
        "Agent alive and reachable"
    } else {
        "Agent not live or unreachable"
    };
    let rest = json!({
        "Name": "Serf Health Status", "Notes": "", "Output": output,
        "ServiceTags": [], "Type": "",
    });
    state::Check {
        node: node.to_string(),
        check_id: "serfHealth".into(),
        status: status.into(),
        rest: as_map(rest),
        ..state::Check::default()
    }
}

/// A JSON object's fields (the parts of a catalog entry kept as registered).
fn as_map(value: Value) -> serde_json::Map<String, Value> {
    match value {
        Value::Object(map) => map,
        _ => serde_json::Map::new(),
    }
}

/// Runs the Consul twin until it is stopped or leaves.
/// Consul's outage recovery: `data_dir/raft/peers.json` (ids from each server's
/// `node-id`) replaces the raft configuration at start.
fn recover_from_peers_json(settings: &Settings, cluster: &Cluster) -> Result<(), String> {
    let file = settings.data_dir.join("raft").join("peers.json");
    let own = crate::cluster::OwnPeer {
        id: &settings.node_id,
        // The lab's raft IDs are node names.
        lab_id: &settings.node_name,
        address: &format!("{}:{}", settings.bind, settings.server_port),
        http: &settings.api_url(),
    };
    if let Some(servers) = crate::cluster::take_peers_json(&file, &own, "Error starting agent")? {
        cluster.recover(servers);
    }
    Ok(())
}

pub async fn serve(config: &Path) -> Result<(), String> {
    let settings = Settings::load(config)?;
    std::fs::create_dir_all(&settings.data_dir).map_err(|e| {
        format!(
            "Error creating data_dir {}: {e}",
            settings.data_dir.display()
        )
    })?;
    let _ = std::fs::write(settings.data_dir.join("node-id"), &settings.node_id);
    let http_url = settings.api_url();
    // Bad TLS files stop the start, as they stop Consul.
    if let Some(files) = &settings.tls {
        crate::tls::server_config(files).map_err(|e| format!("Error starting agent: {e}"))?;
    }
    let mut tags = BTreeMap::new();
    tags.insert("dc".to_string(), settings.datacenter.clone());
    tags.insert("id".to_string(), settings.node_id.clone());
    tags.insert(
        "role".to_string(),
        if settings.server { "consul" } else { "node" }.to_string(),
    );
    if settings.server {
        tags.insert("port".to_string(), settings.server_port.to_string());
        if settings.bootstrap_expect == 1 {
            tags.insert("bootstrap".to_string(), "1".to_string());
        } else if settings.bootstrap_expect > 1 {
            tags.insert("expect".to_string(), settings.bootstrap_expect.to_string());
        }
    }
    let join = settings
        .retry_join
        .iter()
        .map(|j| settings.peer_url(j))
        .collect();
    let cluster = Cluster::new::<Op>(
        Options {
            id: settings.node_name.clone(),
            address: format!("{}:{}", settings.bind, settings.server_port),
            http: http_url,
            server: settings.server,
            bootstrap_expect: settings.bootstrap_expect,
            state_file: settings.data_dir.join("raft-state.json"),
            join,
            tags,
            promote_after: Duration::from_secs(3),
            call_clients: true,
            tls: settings.tls.clone(),
        },
        Box::new(|| true),
    );
    recover_from_peers_json(&settings, &cluster)?;
    let local: Local = std::fs::read(settings.data_dir.join("agent-local.json"))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default();
    let agent = Arc::new(Agent {
        settings: settings.clone(),
        cluster: cluster.clone(),
        local: Mutex::new(local),
        shutdown: tokio::sync::Notify::new(),
    });
    let listener = tokio::net::TcpListener::bind(settings.http)
        .await
        .map_err(|e| {
            format!(
                "Error starting agent: Failed to start Consul HTTP server on {}: {e}",
                settings.http
            )
        })?;
    cluster.spawn();
    let a = agent.clone();
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_millis(500)).await;
            a.reconcile().await;
            a.run_http_checks();
            if a.expire_ttls() {
                a.save_local();
            }
            a.sync().await;
        }
    });
    let app = api::routes(agent.clone()).merge(cluster.routes());
    tracing::info!(
        "consul twin {} listening on {}",
        settings.node_name,
        settings.http
    );
    let a = agent.clone();
    crate::tls::serve(listener, app, settings.tls.as_ref(), async move {
        a.shutdown.notified().await
    })
    .await
}
