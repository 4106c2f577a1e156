//! The consensus every twin shares: membership by polling, a Raft-like election, and a
//! replicated state machine, all over the twins' own HTTP ports (`/_twin/...`).
//!
//! What is real, because scripts observe it (ARCHITECTURE.md, Lab): at most one leader per
//! term, elected only by a majority of voters and only with every committed write; a write
//! is committed only when a majority of voters has it, so it survives the loss of any
//! minority; a stopped process is a node down whose state survives on disk; servers that
//! join later start as non-voters and are promoted after a short stable period (autopilot).
//!
//! What is simplified: there is no log, only the state and its index (a follower that is
//! behind or diverged gets the whole state, like Raft's InstallSnapshot); gossip is polling;
//! election timeouts are staggered by rank instead of random, so elections converge fast.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::Mutex;
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::routing::post;
use axum::{Json, Router};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// A twin's replicated operations: a serde enum tagged by `op`, sent between servers as
/// JSON and applied to the state on each of them.
pub trait Operation: Serialize + DeserializeOwned + Send + 'static {
    /// Applies the operation to the state; must be deterministic. `index` is the index it
    /// commits at (Consul's ModifyIndex). Its answer goes back to the caller of `write`.
    fn apply(self, data: &mut Value, index: u64) -> Result<Value, String>;
}

/// Applies one replicated operation, as it travels (JSON), to the state.
type ApplyFn = dyn Fn(&mut Value, &Value, u64) -> Result<Value, String> + Send + Sync;
/// Whether this node may take part in consensus right now (a sealed Vault may not).
pub type ActiveFn = dyn Fn() -> bool + Send + Sync;

const HEARTBEAT: Duration = Duration::from_millis(150);
const MEMBERSHIP_POLL: Duration = Duration::from_millis(400);
const FAILED_AFTER: Duration = Duration::from_millis(1500);
const RPC_TIMEOUT: Duration = Duration::from_millis(800);

/// A server in the raft configuration.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Server {
    pub id: String,
    /// The raft address as the APIs show it (`127.0.0.1:8300`).
    pub address: String,
    /// Where its twin answers (`http://127.0.0.1:8500`).
    pub http: String,
    pub voter: bool,
}

#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum MemberStatus {
    Alive,
    Leaving,
    Left,
    Failed,
}

/// An agent known through membership (Consul's serf members).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Member {
    pub name: String,
    pub addr: String,
    pub http: String,
    pub server: bool,
    pub status: MemberStatus,
    pub tags: BTreeMap<String, String>,
}

/// What survives a restart.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Persistent {
    pub term: u64,
    pub voted_for: Option<String>,
    pub index: u64,
    pub last_term: u64,
    pub config: Vec<Server>,
    pub data: Value,
    pub bootstrapped: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Follower,
    Candidate,
    Leader,
}

pub struct Options {
    /// Node name: the raft ID (Consul and Vault use node names in the lab).
    pub id: String,
    pub address: String,
    pub http: String,
    pub server: bool,
    /// 0: no automatic bootstrap (Vault bootstraps at init or migration).
    pub bootstrap_expect: usize,
    pub state_file: PathBuf,
    /// Base URLs to join at start and keep trying (retry_join).
    pub join: Vec<String>,
    pub tags: BTreeMap<String, String>,
    /// How long a new server must be healthy before it becomes a voter.
    pub promote_after: Duration,
    /// Whether members call clients too (Consul's gossip) or clients only call in (Nomad
    /// clients heartbeat to servers; a server never looks for a client, so a restarted
    /// client must find the servers from its own config).
    pub call_clients: bool,
    /// The agent's TLS files when its HTTP port speaks TLS (`http` is then `https://`).
    pub tls: Option<crate::tls::TlsFiles>,
}

struct Inner {
    p: Persistent,
    role: Role,
    leader: Option<String>,
    last_contact: Instant,
    members: BTreeMap<String, (Member, Instant)>,
    acked: HashMap<String, Instant>,
    healthy_since: HashMap<String, Instant>,
    left: bool,
    /// A client (not a server) holds no raft state: it learns the leader from the servers'
    /// hello replies, as a real client learns it over RPC.
    client_leader: Option<Server>,
    /// After a leadership transfer: this node does not stand for election before then, so
    /// that another voter takes over.
    no_candidacy_until: Option<Instant>,
}

/// One node's view of the cluster.
pub struct Cluster {
    pub opts: Options,
    inner: Mutex<Inner>,
    writes: tokio::sync::Mutex<()>,
    client: reqwest::Client,
    apply: Box<ApplyFn>,
    active: Box<ActiveFn>,
}

#[derive(Serialize, Deserialize)]
struct Hello {
    member: Member,
}

#[derive(Serialize, Deserialize)]
struct HelloReply {
    members: Vec<Member>,
    leader: Option<String>,
    bootstrapped: bool,
    /// The leader as a server entry, for clients.
    #[serde(default)]
    leader_server: Option<Server>,
}

#[derive(Serialize, Deserialize)]
struct VoteRequest {
    term: u64,
    candidate: String,
    index: u64,
    last_term: u64,
}

#[derive(Serialize, Deserialize)]
struct VoteReply {
    term: u64,
    granted: bool,
}

/// What the log carries: a change of the raft configuration (the core's own), or one of
/// the twin's operations.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Entry {
    Configuration(Vec<Server>),
    Operation(Value),
}

#[derive(Serialize, Deserialize)]
struct Append {
    term: u64,
    leader: String,
    /// The leader's committed index and the term of its last write.
    index: u64,
    last_term: u64,
    /// A new entry at `index + 1`, or None for a heartbeat.
    entry: Option<Entry>,
}

#[derive(Serialize, Deserialize)]
struct AppendReply {
    term: u64,
    ok: bool,
}

#[derive(Serialize, Deserialize)]
struct Snapshot {
    term: u64,
    leader: String,
    index: u64,
    last_term: u64,
    config: Vec<Server>,
    data: Value,
}

fn lock(m: &Mutex<Inner>) -> parking_lot::MutexGuard<'_, Inner> {
    m.lock()
}

impl Cluster {
    /// One node of a twin whose operations are `O`.
    pub fn new<O: Operation>(opts: Options, active: Box<ActiveFn>) -> Arc<Cluster> {
        let apply: Box<ApplyFn> = Box::new(|data, op, index| {
            let op: O = serde_json::from_value(op.clone())
                .map_err(|e| format!("an operation this server cannot read: {e}"))?;
            op.apply(data, index)
        });
        let p: Persistent = std::fs::read(&opts.state_file)
            .ok()
            .and_then(|bytes| serde_json::from_slice(&bytes).ok())
            .unwrap_or_else(|| Persistent {
                data: json!({}),
                ..Persistent::default()
            });
        let me = Member {
            name: opts.id.clone(),
            addr: opts
                .address
                .split(':')
                .next()
                .unwrap_or_default()
                .to_string(),
            http: opts.http.clone(),
            server: opts.server,
            status: MemberStatus::Alive,
            tags: opts.tags.clone(),
        };
        let mut members = BTreeMap::new();
        members.insert(me.name.clone(), (me, Instant::now()));
        let client =
            crate::tls::internal_client(opts.tls.as_ref(), RPC_TIMEOUT).unwrap_or_else(|e| {
                tracing::error!("the internal client cannot use the agent's TLS files: {e}");
                reqwest::Client::new()
            });
        Arc::new(Cluster {
            opts,
            inner: Mutex::new(Inner {
                p,
                role: Role::Follower,
                leader: None,
                last_contact: Instant::now(),
                members,
                acked: HashMap::new(),
                healthy_since: HashMap::new(),
                left: false,
                client_leader: None,
                no_candidacy_until: None,
            }),
            writes: tokio::sync::Mutex::new(()),
            client,
            apply,
            active,
        })
    }

    /// The internal routes, to merge into the twin's router.
    pub fn routes(self: &Arc<Self>) -> Router {
        Router::new()
            .route("/_twin/hello", post(hello))
            .route("/_twin/vote", post(vote))
            .route("/_twin/append", post(append))
            .route("/_twin/snapshot", post(snapshot))
            .route("/_twin/write", post(forwarded_write))
            .route("/_twin/read", post(shared_read))
            .route("/_twin/join", post(join_request))
            .route("/_twin/remove", post(remove_request))
            .with_state(self.clone())
    }

    /// Starts the membership and consensus loops.
    pub fn spawn(self: &Arc<Self>) {
        let c = self.clone();
        tokio::spawn(async move {
            loop {
                c.membership_round().await;
                tokio::time::sleep(MEMBERSHIP_POLL).await;
            }
        });
        let c = self.clone();
        tokio::spawn(async move {
            loop {
                c.consensus_round().await;
                tokio::time::sleep(HEARTBEAT).await;
            }
        });
    }

    fn persist(&self, p: &Persistent) {
        let bytes = serde_json::to_vec(p).expect("state serializes");
        if write_state_file(&self.opts.state_file, &bytes).is_err() {
            tracing::error!("cannot persist state to {}", self.opts.state_file.display());
        }
    }

    // ----- what twins ask -----

    pub fn is_leader(&self) -> bool {
        let inner = lock(&self.inner);
        inner.role == Role::Leader
    }

    /// The leader's server entry, if one is known.
    pub fn leader(&self) -> Option<Server> {
        let inner = lock(&self.inner);
        if !self.opts.server {
            return inner.client_leader.clone();
        }
        let id = inner.leader.clone()?;
        inner.p.config.iter().find(|s| s.id == id).cloned()
    }

    pub fn config(&self) -> Vec<Server> {
        lock(&self.inner).p.config.clone()
    }

    pub fn term(&self) -> u64 {
        lock(&self.inner).p.term
    }

    pub fn index(&self) -> u64 {
        lock(&self.inner).p.index
    }

    pub fn bootstrapped(&self) -> bool {
        lock(&self.inner).p.bootstrapped
    }

    /// Sends a follower's read to the leader, as Consul's default consistency mode does,
    /// so a write through one server shows at once through every other one.
    /// None when no leader answers.
    pub async fn forward_read(
        &self,
        path_and_query: &str,
        headers: &axum::http::HeaderMap,
    ) -> Option<reqwest::Response> {
        let leader = self.leader()?;
        let mut request = self.client.get(format!("{}{path_and_query}", leader.http));
        for name in ["x-consul-token", "authorization"] {
            if let Some(value) = headers.get(name) {
                request = request.header(name, value.as_bytes());
            }
        }
        request.send().await.ok()
    }

    /// Reads the replicated state.
    pub fn read<T>(&self, f: impl FnOnce(&Value) -> T) -> T {
        f(&lock(&self.inner).p.data)
    }

    /// The replicated value at a JSON pointer (`/nodes/worker1`). A client holds no
    /// replicated state and asks the leader; Null when no leader answers.
    pub async fn read_at(&self, pointer: &str) -> Value {
        if self.opts.server {
            return self.read(|d| d.pointer(pointer).cloned().unwrap_or(Value::Null));
        }
        let Some(leader) = self.leader() else {
            return Value::Null;
        };
        let reply = self
            .client
            .post(format!("{}/_twin/read", leader.http))
            .json(&json!({"pointer": pointer}))
            .send()
            .await;
        match reply {
            Ok(r) => r.json().await.unwrap_or(Value::Null),
            Err(_) => Value::Null,
        }
    }

    pub fn members(&self) -> Vec<Member> {
        let inner = lock(&self.inner);
        inner.members.values().map(|(m, _)| m.clone()).collect()
    }

    /// When each server was last heard from by this leader.
    pub fn last_contact(&self, id: &str) -> Option<Duration> {
        let inner = lock(&self.inner);
        if id == self.opts.id {
            return Some(Duration::ZERO);
        }
        inner.acked.get(id).map(|t| t.elapsed())
    }

    pub fn healthy_since(&self, id: &str) -> Option<Instant> {
        lock(&self.inner).healthy_since.get(id).copied()
    }

    /// A state written offline (by `operator migrate`) names this node without knowing
    /// where it answers: fill in our own addresses before anyone is told of them.
    /// Outage recovery (raft's peers.json): the raft configuration becomes `servers`, kept
    /// as this node's own bootstrapped state. Call before [`Cluster::spawn`].
    pub fn recover(&self, servers: Vec<Server>) {
        let p = {
            let mut inner = lock(&self.inner);
            inner.p.config = servers;
            inner.p.bootstrapped = true;
            inner.p.clone()
        };
        self.persist(&p);
    }

    pub fn claim_own_address(&self) {
        let mut inner = lock(&self.inner);
        let (http, address) = (self.opts.http.clone(), self.opts.address.clone());
        let mut changed = false;
        for s in inner.p.config.iter_mut().filter(|s| s.id == self.opts.id) {
            if s.http != http || s.address != address {
                s.http = http.clone();
                s.address = address.clone();
                changed = true;
            }
        }
        if changed {
            let p = inner.p.clone();
            drop(inner);
            self.persist(&p);
        }
    }

    /// Sets up a single-server configuration with `data` as the state (Vault init and
    /// `operator migrate`, or an explicit bootstrap).
    pub fn bootstrap_alone(&self, data: Value) {
        let mut inner = lock(&self.inner);
        inner.p.config = vec![self.me_server(true)];
        inner.p.bootstrapped = true;
        inner.p.data = data;
        inner.p.index = inner.p.index.max(1);
        let p = inner.p.clone();
        drop(inner);
        self.persist(&p);
    }

    /// Applies an entry at `index` to a node's state and configuration.
    fn apply_entry(
        &self,
        data: &mut Value,
        config: &mut Vec<Server>,
        entry: &Entry,
        index: u64,
    ) -> Result<Value, String> {
        match entry {
            Entry::Configuration(servers) => {
                *config = servers.clone();
                Ok(Value::Null)
            }
            Entry::Operation(op) => (self.apply)(data, op, index),
        }
    }

    fn me_server(&self, voter: bool) -> Server {
        Server {
            id: self.opts.id.clone(),
            address: self.opts.address.clone(),
            http: self.opts.http.clone(),
            voter,
        }
    }

    /// Commits an operation through the leader and returns what it produced.
    pub async fn write(&self, op: impl Operation) -> Result<Value, String> {
        let op = serde_json::to_value(op).expect("an operation serializes");
        self.write_json(op).await
    }

    async fn write_json(&self, op: Value) -> Result<Value, String> {
        if !(self.active)() {
            return Err("node is not active".into());
        }
        if self.is_leader() {
            return self.propose(Entry::Operation(op)).await;
        }
        let leader = self
            .leader()
            .ok_or_else(|| "No cluster leader".to_string())?;
        let reply = self
            .client
            .post(format!("{}/_twin/write", leader.http))
            .json(&op)
            .send()
            .await
            .map_err(|_| "No cluster leader".to_string())?;
        let body: Value = reply.json().await.map_err(|e| e.to_string())?;
        match body.get("ok") {
            Some(v) => Ok(v.clone()),
            None => Err(body["error"].as_str().unwrap_or("write failed").to_string()),
        }
    }

    async fn propose(&self, entry: Entry) -> Result<Value, String> {
        let _serial = self.writes.lock().await;
        let (term, index, last_term, mut data, servers) = {
            let inner = lock(&self.inner);
            if inner.role != Role::Leader {
                return Err("No cluster leader".into());
            }
            (
                inner.p.term,
                inner.p.index,
                inner.p.last_term,
                inner.p.data.clone(),
                inner.p.config.clone(),
            )
        };
        let mut config = servers.clone();
        let result = self.apply_entry(&mut data, &mut config, &entry, index + 1)?;
        let message = Append {
            term,
            leader: self.opts.id.clone(),
            index,
            last_term,
            entry: Some(entry),
        };
        let acks = self.broadcast_append(&servers, &message).await;
        let voters: Vec<&Server> = servers.iter().filter(|s| s.voter).collect();
        let granted = voters
            .iter()
            .filter(|s| s.id == self.opts.id || acks.contains(&s.id))
            .count();
        if granted * 2 <= voters.len() {
            return Err("No cluster leader".into());
        }
        let mut inner = lock(&self.inner);
        if inner.role != Role::Leader || inner.p.term != term {
            return Err("leadership lost".into());
        }
        inner.p.data = data;
        inner.p.config = config;
        inner.p.index = index + 1;
        inner.p.last_term = term;
        let p = inner.p.clone();
        drop(inner);
        self.persist(&p);
        Ok(result)
    }

    /// Sends an append to every other server; returns the ids that accepted it. Servers
    /// that refused (behind or diverged) get the whole state.
    async fn broadcast_append(&self, servers: &[Server], message: &Append) -> Vec<String> {
        let body = serde_json::to_value(message).expect("append serializes");
        let calls = servers.iter().filter(|s| s.id != self.opts.id).map(|s| {
            let url = format!("{}/_twin/append", s.http);
            let body = body.clone();
            let id = s.id.clone();
            let client = self.client.clone();
            async move {
                let reply = client.post(url).json(&body).send().await.ok()?;
                let reply: AppendReply = reply.json().await.ok()?;
                Some((id, reply))
            }
        });
        let replies = futures::future::join_all(calls).await;
        let mut ok = Vec::new();
        let mut behind = Vec::new();
        for (id, reply) in replies.into_iter().flatten() {
            if reply.term > message.term {
                self.step_down(reply.term);
                return Vec::new();
            }
            lock(&self.inner).acked.insert(id.clone(), Instant::now());
            if reply.ok {
                ok.push(id);
            } else {
                behind.push(id);
            }
        }
        for id in behind {
            if let Some(server) = servers.iter().find(|s| s.id == id) {
                if self.send_snapshot(server).await && message.entry.is_none() {
                    ok.push(id);
                }
            }
        }
        ok
    }

    async fn send_snapshot(&self, server: &Server) -> bool {
        let snapshot = {
            let inner = lock(&self.inner);
            Snapshot {
                term: inner.p.term,
                leader: self.opts.id.clone(),
                index: inner.p.index,
                last_term: inner.p.last_term,
                config: inner.p.config.clone(),
                data: inner.p.data.clone(),
            }
        };
        let reply = self
            .client
            .post(format!("{}/_twin/snapshot", server.http))
            .json(&snapshot)
            .send()
            .await;
        match reply {
            Ok(r) => r.json::<AppendReply>().await.map(|a| a.ok).unwrap_or(false),
            Err(_) => false,
        }
    }

    /// Hands leadership to another voter, as raft's LeadershipTransfer does (Vault's
    /// `RaftLock.Unlock` on a step-down): this node becomes a follower and stays out of
    /// elections for `keep_out`, so a follower that stops hearing heartbeats takes over;
    /// with no other voter able to, this node leads again after it. False when this node
    /// does not lead or is the only voter.
    pub fn transfer_leadership(&self, keep_out: Duration) -> bool {
        let mut inner = lock(&self.inner);
        let voters = inner.p.config.iter().filter(|s| s.voter).count();
        if inner.role != Role::Leader || voters < 2 {
            return false;
        }
        inner.role = Role::Follower;
        inner.leader = None;
        inner.last_contact = Instant::now();
        inner.no_candidacy_until = Some(Instant::now() + keep_out);
        tracing::info!(
            "leadership transfer: stepping down from term {}",
            inner.p.term
        );
        true
    }

    fn step_down(&self, term: u64) {
        let mut inner = lock(&self.inner);
        if term > inner.p.term {
            inner.p.term = term;
            inner.p.voted_for = None;
            let p = inner.p.clone();
            inner.role = Role::Follower;
            inner.leader = None;
            drop(inner);
            self.persist(&p);
        }
    }

    // ----- the loops -----

    /// Says hello to every known member and every join address: a member that answers is
    /// alive (and tells us whom it knows); one silent for a while is failed.
    async fn membership_round(&self) {
        let (me, targets) = {
            let inner = lock(&self.inner);
            if inner.left {
                return;
            }
            let Some((me, _)) = inner.members.get(&self.opts.id) else {
                return;
            };
            let mut targets: Vec<(Option<String>, String)> = inner
                .members
                .values()
                .filter(|(m, _)| m.name != self.opts.id && m.status != MemberStatus::Left)
                .filter(|(m, _)| m.server || self.opts.call_clients)
                .map(|(m, _)| (Some(m.name.clone()), m.http.clone()))
                .collect();
            for url in &self.opts.join {
                if *url != self.opts.http && !targets.iter().any(|(_, t)| t == url) {
                    targets.push((None, url.clone()));
                }
            }
            (me.clone(), targets)
        };
        let calls = targets.into_iter().map(|(name, url)| {
            let client = self.client.clone();
            let body = Hello { member: me.clone() };
            async move {
                let reply = async {
                    let r = client
                        .post(format!("{url}/_twin/hello"))
                        .json(&body)
                        .send()
                        .await
                        .ok()?;
                    r.json::<HelloReply>().await.ok()
                }
                .await;
                (name, url, reply)
            }
        });
        let results = futures::future::join_all(calls).await;
        let now = Instant::now();
        let mut inner = lock(&self.inner);
        if !self.opts.call_clients {
            // Clients that stopped calling in have failed.
            for (m, seen) in inner.members.values_mut() {
                if !m.server && m.status == MemberStatus::Alive && seen.elapsed() > FAILED_AFTER {
                    m.status = MemberStatus::Failed;
                }
            }
        }
        if !self.opts.server {
            inner.client_leader = results
                .iter()
                .filter_map(|(_, _, r)| r.as_ref()?.leader_server.clone())
                .next();
        }
        for (name, url, reply) in results {
            match reply {
                Some(reply) => {
                    for m in reply.members {
                        if m.name == self.opts.id {
                            continue;
                        }
                        let answered = m.http == url;
                        match inner.members.get_mut(&m.name) {
                            Some((known, seen)) => {
                                if answered {
                                    *seen = now;
                                    known.status = m.status;
                                    known.tags = m.tags.clone();
                                } else if m.status == MemberStatus::Left {
                                    known.status = MemberStatus::Left;
                                }
                            }
                            None => {
                                let seen = if answered { now } else { now - FAILED_AFTER };
                                inner.members.insert(m.name.clone(), (m, seen));
                            }
                        }
                    }
                }
                None => {
                    if let Some((m, seen)) = name.and_then(|n| inner.members.get_mut(&n)) {
                        if m.status == MemberStatus::Alive && seen.elapsed() > FAILED_AFTER {
                            m.status = MemberStatus::Failed;
                        }
                    }
                }
            }
        }
    }

    async fn consensus_round(&self) {
        if !self.opts.server || lock(&self.inner).left {
            return;
        }
        if !(self.active)() {
            let mut inner = lock(&self.inner);
            inner.role = Role::Follower;
            return;
        }
        if !self.bootstrapped() {
            self.try_bootstrap().await;
            return;
        }
        let role = lock(&self.inner).role;
        match role {
            Role::Leader => self.lead().await,
            Role::Follower | Role::Candidate => self.maybe_elect().await,
        }
    }

    /// bootstrap_expect: wait until that many servers are alive, then all of them start
    /// with the same configuration. A server that finds a cluster asks to join it instead.
    async fn try_bootstrap(&self) {
        let alive_servers: Vec<Member> = {
            let inner = lock(&self.inner);
            inner
                .members
                .values()
                .filter(|(m, _)| m.server && m.status == MemberStatus::Alive)
                .map(|(m, _)| m.clone())
                .collect()
        };
        // Is there a cluster already? Ask the others.
        for m in alive_servers.iter().filter(|m| m.name != self.opts.id) {
            let url = format!("{}/_twin/join", m.http);
            let reply = self
                .client
                .post(url)
                .json(&self.me_server(false))
                .send()
                .await;
            if let Ok(r) = reply {
                if r.status().is_success() {
                    // The leader will send us the state; until then we wait.
                    return;
                }
            }
        }
        let expect = self.opts.bootstrap_expect;
        if expect == 0 || alive_servers.len() < expect {
            return;
        }
        // As Consul does: a server that reports raft peers of its own disables bootstrap
        // mode, even if it could not take our join just now (say, mid-election).
        for m in alive_servers.iter().filter(|m| m.name != self.opts.id) {
            let hello = Hello {
                member: lock(&self.inner).members[&self.opts.id].0.clone(),
            };
            let reply = self
                .client
                .post(format!("{}/_twin/hello", m.http))
                .json(&hello)
                .send()
                .await;
            let bootstrapped = match reply {
                Ok(r) => r.json::<HelloReply>().await.map(|h| h.bootstrapped),
                Err(e) => Err(e),
            };
            if bootstrapped.unwrap_or(true) {
                return;
            }
        }
        let mut config: Vec<Server> = alive_servers
            .iter()
            .map(|m| Server {
                id: m.name.clone(),
                address: format!(
                    "{}:{}",
                    m.addr,
                    self.opts.address.rsplit(':').next().unwrap_or("8300")
                ),
                http: m.http.clone(),
                voter: true,
            })
            .collect();
        config.sort_by(|a, b| a.id.cmp(&b.id));
        let mut inner = lock(&self.inner);
        inner.p.config = config;
        inner.p.bootstrapped = true;
        inner.last_contact = Instant::now();
        let p = inner.p.clone();
        drop(inner);
        tracing::info!("bootstrapped with {} servers", p.config.len());
        self.persist(&p);
    }

    async fn maybe_elect(&self) {
        let (request, voters) = {
            let inner = lock(&self.inner);
            if inner.no_candidacy_until.is_some_and(|t| Instant::now() < t) {
                return;
            }
            let voters: Vec<Server> = inner.p.config.iter().filter(|s| s.voter).cloned().collect();
            let Some(rank) = voters.iter().position(|s| s.id == self.opts.id) else {
                return;
            };
            // The only voter needs nobody's vote: it leads at once (a one-server start).
            let timeout = if voters.len() == 1 {
                Duration::ZERO
            } else {
                Duration::from_millis(900 + 350 * rank as u64)
            };
            if inner.last_contact.elapsed() < timeout {
                return;
            }
            (
                VoteRequest {
                    term: inner.p.term + 1,
                    candidate: self.opts.id.clone(),
                    index: inner.p.index,
                    last_term: inner.p.last_term,
                },
                voters,
            )
        };
        {
            let mut inner = lock(&self.inner);
            inner.p.term = request.term;
            inner.p.voted_for = Some(self.opts.id.clone());
            inner.role = Role::Candidate;
            inner.leader = None;
            inner.last_contact = Instant::now();
            let p = inner.p.clone();
            drop(inner);
            self.persist(&p);
        }
        let body = serde_json::to_value(&request).expect("vote serializes");
        let calls = voters.iter().filter(|s| s.id != self.opts.id).map(|s| {
            let client = self.client.clone();
            let url = format!("{}/_twin/vote", s.http);
            let body = body.clone();
            async move {
                let r = client.post(url).json(&body).send().await.ok()?;
                r.json::<VoteReply>().await.ok()
            }
        });
        let replies = futures::future::join_all(calls).await;
        let mut granted = 1;
        for reply in replies.into_iter().flatten() {
            if reply.term > request.term {
                self.step_down(reply.term);
                return;
            }
            if reply.granted {
                granted += 1;
            }
        }
        let elected = {
            let mut inner = lock(&self.inner);
            let won = inner.role == Role::Candidate
                && inner.p.term == request.term
                && granted * 2 > voters.len();
            if won {
                tracing::info!("elected leader for term {}", request.term);
                inner.role = Role::Leader;
                inner.leader = Some(self.opts.id.clone());
                inner.acked.clear();
            }
            won
        };
        if elected {
            self.lead().await;
        }
    }

    /// Heartbeats, catching followers up, promoting new servers, and stepping down when
    /// a majority is out of reach.
    async fn lead(&self) {
        // Heartbeats and writes take turns, so a heartbeat never overtakes an entry.
        let serial = self.writes.lock().await;
        let (term, index, last_term, servers) = {
            let inner = lock(&self.inner);
            (
                inner.p.term,
                inner.p.index,
                inner.p.last_term,
                inner.p.config.clone(),
            )
        };
        let message = Append {
            term,
            leader: self.opts.id.clone(),
            index,
            last_term,
            entry: None,
        };
        let ok = self.broadcast_append(&servers, &message).await;
        drop(serial);
        let voters: Vec<&Server> = servers.iter().filter(|s| s.voter).collect();
        let reachable = voters
            .iter()
            .filter(|s| s.id == self.opts.id || ok.contains(&s.id))
            .count();
        let now = Instant::now();
        {
            let mut inner = lock(&self.inner);
            if inner.role != Role::Leader {
                return;
            }
            if reachable * 2 > voters.len() {
                inner.last_contact = now;
            } else if inner.last_contact.elapsed() > Duration::from_secs(2) {
                tracing::warn!("lost the majority of voters; stepping down");
                inner.role = Role::Follower;
                inner.leader = None;
                return;
            }
            for s in &servers {
                if s.id == self.opts.id || ok.contains(&s.id) {
                    inner.healthy_since.entry(s.id.clone()).or_insert(now);
                } else {
                    inner.healthy_since.remove(&s.id);
                }
            }
        }
        // Autopilot: a non-voter that has been healthy long enough becomes a voter.
        let promote: Vec<String> = {
            let inner = lock(&self.inner);
            servers
                .iter()
                .filter(|s| !s.voter)
                .filter(|s| {
                    inner
                        .healthy_since
                        .get(&s.id)
                        .is_some_and(|t| t.elapsed() >= self.opts.promote_after)
                })
                .map(|s| s.id.clone())
                .collect()
        };
        for id in promote {
            let mut config = servers.clone();
            for s in config.iter_mut().filter(|s| s.id == id) {
                s.voter = true;
            }
            let _ = self.propose(Entry::Configuration(config)).await;
            tracing::info!("promoted {id} to voter");
        }
    }

    /// Adds a server as a non-voter (leader only).
    pub async fn add_server(&self, server: Server) -> Result<(), String> {
        if !self.is_leader() {
            let leader = self.leader().ok_or("No cluster leader")?;
            let r = self
                .client
                .post(format!("{}/_twin/join", leader.http))
                .json(&server)
                .send()
                .await
                .map_err(|e| e.to_string())?;
            return if r.status().is_success() {
                Ok(())
            } else {
                Err(r.text().await.unwrap_or_default())
            };
        }
        let mut config = self.config();
        if let Some(existing) = config.iter_mut().find(|s| s.id == server.id) {
            if existing.http == server.http {
                return Ok(());
            }
            existing.http = server.http;
            existing.address = server.address;
        } else {
            config.push(Server {
                voter: false,
                ..server
            });
        }
        self.propose(Entry::Configuration(config)).await.map(|_| ())
    }

    /// Removes a server from the configuration (leader only, forwarded otherwise).
    pub async fn remove_server(&self, id: &str) -> Result<(), String> {
        if !self.is_leader() {
            let leader = self.leader().ok_or("No cluster leader")?;
            let r = self
                .client
                .post(format!("{}/_twin/remove", leader.http))
                .json(&json!({"id": id}))
                .send()
                .await
                .map_err(|e| e.to_string())?;
            return if r.status().is_success() {
                Ok(())
            } else {
                Err(r.text().await.unwrap_or_default())
            };
        }
        let mut config = self.config();
        let before = config.len();
        config.retain(|s| s.id != id);
        if config.len() == before {
            return Err(format!(
                "id \"{id}\" was not found in the Raft configuration"
            ));
        }
        self.propose(Entry::Configuration(config)).await.map(|_| ())
    }

    /// Joins the cluster of the agent at `http` (Consul's agent join): learn its members.
    pub async fn join_member(&self, http: &str) -> Result<(), String> {
        let me = {
            lock(&self.inner)
                .members
                .get(&self.opts.id)
                .map(|(m, _)| m.clone())
        };
        let me = me.ok_or("no local member")?;
        let reply = self
            .client
            .post(format!("{http}/_twin/hello"))
            .json(&Hello { member: me })
            .send()
            .await
            .map_err(|e| format!("1 error occurred:\n\t* Failed to join {http}: {e}\n\n"))?;
        let reply: HelloReply = reply.json().await.map_err(|e| e.to_string())?;
        let now = Instant::now();
        let mut inner = lock(&self.inner);
        for m in reply.members {
            if m.name != self.opts.id {
                inner.members.entry(m.name.clone()).or_insert((m, now));
            }
        }
        Ok(())
    }

    /// Graceful leave: out of the raft configuration, marked left for everyone.
    pub async fn leave(&self) {
        if self.opts.server && self.bootstrapped() {
            let _ = self.remove_server(&self.opts.id.clone()).await;
        }
        let (me, others) = {
            let mut inner = lock(&self.inner);
            inner.left = true;
            if let Some((m, _)) = inner.members.get_mut(&self.opts.id) {
                m.status = MemberStatus::Left;
            }
            let me = inner.members.get(&self.opts.id).map(|(m, _)| m.clone());
            let others: Vec<String> = inner
                .members
                .values()
                .filter(|(m, _)| m.name != self.opts.id)
                .map(|(m, _)| m.http.clone())
                .collect();
            (me, others)
        };
        if let Some(me) = me {
            for url in others {
                let _ = self
                    .client
                    .post(format!("{url}/_twin/hello"))
                    .json(&Hello { member: me.clone() })
                    .send()
                    .await;
            }
        }
    }

    /// Marks a failed member as left (force-leave); `prune` forgets it entirely.
    pub async fn force_leave(&self, name: &str, prune: bool) -> Result<(), String> {
        let server = {
            let mut inner = lock(&self.inner);
            let Some((m, _)) = inner.members.get_mut(name) else {
                return Err(format!("agent: No node found with name '{name}'"));
            };
            m.status = MemberStatus::Left;
            let server = m.server;
            if prune {
                inner.members.remove(name);
            }
            server
        };
        if server && self.config().iter().any(|s| s.id == name) {
            let _ = self.remove_server(name).await;
        }
        Ok(())
    }
}

// ----- handlers of the internal routes -----

async fn hello(State(c): State<Arc<Cluster>>, Json(h): Json<Hello>) -> Json<HelloReply> {
    let now = Instant::now();
    let mut inner = lock(&c.inner);
    let incoming = h.member;
    if incoming.name != c.opts.id {
        match inner.members.get_mut(&incoming.name) {
            Some((m, seen)) => {
                *seen = now;
                m.http = incoming.http.clone();
                m.addr = incoming.addr.clone();
                m.tags = incoming.tags.clone();
                m.status = incoming.status;
            }
            None => {
                inner.members.insert(incoming.name.clone(), (incoming, now));
            }
        }
    }
    let leader_server = inner
        .leader
        .as_ref()
        .and_then(|id| inner.p.config.iter().find(|s| &s.id == id))
        .cloned();
    Json(HelloReply {
        members: inner.members.values().map(|(m, _)| m.clone()).collect(),
        leader: inner.leader.clone(),
        bootstrapped: inner.p.bootstrapped,
        leader_server,
    })
}

async fn vote(State(c): State<Arc<Cluster>>, Json(v): Json<VoteRequest>) -> Json<VoteReply> {
    let mut inner = lock(&c.inner);
    // A node that hears from a live leader, or that may not take part, votes for no one.
    let leader_alive =
        inner.leader.is_some() && inner.last_contact.elapsed() < Duration::from_millis(800);
    if v.term > inner.p.term && !leader_alive {
        inner.p.term = v.term;
        inner.p.voted_for = None;
        inner.role = Role::Follower;
        inner.leader = None;
    }
    let up_to_date = (v.last_term, v.index) >= (inner.p.last_term, inner.p.index);
    let free = inner.p.voted_for.is_none() || inner.p.voted_for.as_deref() == Some(&v.candidate);
    let granted = v.term == inner.p.term && free && up_to_date && !leader_alive && (c.active)();
    if granted {
        inner.p.voted_for = Some(v.candidate.clone());
        inner.last_contact = Instant::now();
    }
    let reply = VoteReply {
        term: inner.p.term,
        granted,
    };
    let p = inner.p.clone();
    drop(inner);
    c.persist(&p);
    Json(reply)
}

async fn append(State(c): State<Arc<Cluster>>, Json(a): Json<Append>) -> Json<AppendReply> {
    if !(c.active)() {
        return Json(AppendReply { term: 0, ok: false });
    }
    let mut inner = lock(&c.inner);
    if a.term < inner.p.term {
        return Json(AppendReply {
            term: inner.p.term,
            ok: false,
        });
    }
    if a.term > inner.p.term {
        inner.p.term = a.term;
        inner.p.voted_for = None;
    }
    inner.role = if a.leader == c.opts.id {
        Role::Leader
    } else {
        Role::Follower
    };
    inner.leader = Some(a.leader.clone());
    inner.last_contact = Instant::now();
    let in_step =
        inner.p.index == a.index && inner.p.last_term == a.last_term && inner.p.bootstrapped;
    let ok = match (&a.entry, in_step) {
        (None, true) => true,
        (Some(entry), true) => {
            let (mut data, mut config) = (inner.p.data.clone(), inner.p.config.clone());
            match c.apply_entry(&mut data, &mut config, entry, a.index + 1) {
                Ok(_) => {
                    inner.p.data = data;
                    inner.p.config = config;
                    inner.p.index = a.index + 1;
                    inner.p.last_term = a.term;
                    true
                }
                Err(_) => false,
            }
        }
        (_, false) => false,
    };
    let reply = AppendReply {
        term: inner.p.term,
        ok,
    };
    let p = inner.p.clone();
    drop(inner);
    if ok && a.entry.is_some() {
        c.persist(&p);
    }
    Json(reply)
}

async fn snapshot(State(c): State<Arc<Cluster>>, Json(s): Json<Snapshot>) -> Json<AppendReply> {
    if !(c.active)() {
        return Json(AppendReply { term: 0, ok: false });
    }
    let mut inner = lock(&c.inner);
    if s.term < inner.p.term {
        return Json(AppendReply {
            term: inner.p.term,
            ok: false,
        });
    }
    inner.p.term = s.term;
    inner.p.index = s.index;
    inner.p.last_term = s.last_term;
    inner.p.config = s.config;
    inner.p.data = s.data;
    inner.p.bootstrapped = true;
    inner.role = Role::Follower;
    inner.leader = Some(s.leader);
    inner.last_contact = Instant::now();
    let p = inner.p.clone();
    drop(inner);
    tracing::info!("installed a snapshot at index {}", p.index);
    c.persist(&p);
    Json(AppendReply {
        term: p.term,
        ok: true,
    })
}

async fn shared_read(State(c): State<Arc<Cluster>>, Json(q): Json<Value>) -> Json<Value> {
    let pointer = q["pointer"].as_str().unwrap_or_default();
    Json(c.read(|d| d.pointer(pointer).cloned().unwrap_or(Value::Null)))
}

async fn forwarded_write(State(c): State<Arc<Cluster>>, Json(op): Json<Value>) -> Json<Value> {
    if !c.is_leader() {
        return Json(json!({"error": "No cluster leader"}));
    }
    match c.propose(Entry::Operation(op)).await {
        Ok(v) => Json(json!({"ok": v})),
        Err(e) => Json(json!({"error": e})),
    }
}

async fn join_request(
    State(c): State<Arc<Cluster>>,
    Json(server): Json<Server>,
) -> (axum::http::StatusCode, String) {
    if !c.bootstrapped() {
        return (
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            "not bootstrapped".into(),
        );
    }
    match c.add_server(server).await {
        Ok(()) => (axum::http::StatusCode::OK, String::new()),
        Err(e) => (axum::http::StatusCode::INTERNAL_SERVER_ERROR, e),
    }
}

async fn remove_request(
    State(c): State<Arc<Cluster>>,
    Json(body): Json<Value>,
) -> (axum::http::StatusCode, String) {
    let id = body["id"].as_str().unwrap_or_default().to_string();
    match c.remove_server(&id).await {
        Ok(()) => (axum::http::StatusCode::OK, String::new()),
        Err(e) => (axum::http::StatusCode::INTERNAL_SERVER_ERROR, e),
    }
}

/// This node as outage recovery's peers.json must name it.
/// Writes a state file through a temporary file and a rename, mode 0600 as the servers'
/// own (Vault's vault.db, raft.db).
pub fn write_state_file(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    harun_runtime::private_fs::write_atomic(path, bytes, 0o600, None)
}

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

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};

    /// A twin's state machine at its smallest: set a key.
    #[derive(Serialize, Deserialize)]
    #[serde(tag = "op", rename_all = "snake_case")]
    enum Set {
        Set { key: String, value: u64 },
    }

    impl Operation for Set {
        fn apply(self, data: &mut Value, index: u64) -> Result<Value, String> {
            let Set::Set { key, value } = self;
            data[&key] = json!(value);
            Ok(json!(index))
        }
    }

    struct Node {
        cluster: Arc<Cluster>,
        up: Arc<AtomicBool>,
    }

    /// Three servers on loopback that bootstrap together (bootstrap_expect 3).
    async fn three_servers(dir: &Path) -> Vec<Node> {
        let mut listeners = Vec::new();
        for _ in 0..3 {
            listeners.push(tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap());
        }
        let urls: Vec<String> = listeners
            .iter()
            .map(|l| format!("http://{}", l.local_addr().unwrap()))
            .collect();
        let mut nodes = Vec::new();
        for (i, listener) in listeners.into_iter().enumerate() {
            let up = Arc::new(AtomicBool::new(true));
            let flag = up.clone();
            let cluster = Cluster::new::<Set>(
                Options {
                    id: format!("s{i}"),
                    address: format!("127.0.0.{}:8300", i + 1),
                    http: urls[i].clone(),
                    server: true,
                    bootstrap_expect: 3,
                    state_file: dir.join(format!("s{i}.json")),
                    join: urls.clone(),
                    tags: BTreeMap::new(),
                    promote_after: Duration::from_secs(1),
                    call_clients: true,
                    tls: None,
                },
                Box::new(move || flag.load(Ordering::SeqCst)),
            );
            let router = cluster.routes();
            tokio::spawn(async move { axum::serve(listener, router).await });
            cluster.spawn();
            nodes.push(Node { cluster, up });
        }
        nodes
    }

    async fn until<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
        for _ in 0..200 {
            if let Some(v) = f() {
                return v;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("timed out waiting for {what}");
    }

    /// Waits until exactly one server leads; its position.
    async fn one_leader(nodes: &[Node]) -> usize {
        until("a leader", || match leaders(nodes)[..] {
            [one] => Some(one),
            _ => None,
        })
        .await
    }

    fn leaders(nodes: &[Node]) -> Vec<usize> {
        (0..nodes.len())
            .filter(|&i| nodes[i].cluster.is_leader())
            .collect()
    }

    /// One leader, a write through a follower replicated to every server with the
    /// configuration as a typed field, and no commit without a majority.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn three_servers_elect_one_leader_replicate_and_refuse_writes_without_a_majority() {
        let dir = tempfile::tempdir().unwrap();
        let nodes = three_servers(dir.path()).await;
        let leader = one_leader(&nodes).await;
        let follower = (leader + 1) % 3;
        let index = nodes[follower]
            .cluster
            .write(Set::Set {
                key: "a".into(),
                value: 7,
            })
            .await
            .unwrap();
        assert!(index.as_u64().unwrap() > 0);
        for node in &nodes {
            until("the write on every server", || {
                (node.cluster.read(|d| d["a"].clone()) == json!(7)).then_some(())
            })
            .await;
            let config = node.cluster.config();
            assert_eq!(config.len(), 3);
            assert!(config.iter().all(|s| s.voter));
            // Membership is the configuration, not a key of the twin's state.
            assert!(node.cluster.read(|d| d.get("_config").is_none()));
        }
        // Two of three servers down: the leader cannot commit.
        for (i, node) in nodes.iter().enumerate() {
            if i != leader {
                node.up.store(false, Ordering::SeqCst);
            }
        }
        let refused = nodes[leader]
            .cluster
            .write(Set::Set {
                key: "b".into(),
                value: 1,
            })
            .await;
        assert!(refused.is_err(), "{refused:?}");
        assert_eq!(nodes[leader].cluster.read(|d| d["b"].clone()), Value::Null);
    }

    /// A server that was down gets what it missed, and the survivors' index, when it
    /// comes back.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_server_that_missed_writes_catches_up() {
        let dir = tempfile::tempdir().unwrap();
        let nodes = three_servers(dir.path()).await;
        let leader = one_leader(&nodes).await;
        let away = (leader + 1) % 3;
        nodes[away].up.store(false, Ordering::SeqCst);
        for value in 1..=3 {
            let set = Set::Set {
                key: "n".into(),
                value,
            };
            nodes[leader].cluster.write(set).await.unwrap();
        }
        assert_eq!(nodes[away].cluster.read(|d| d["n"].clone()), Value::Null);
        nodes[away].up.store(true, Ordering::SeqCst);
        until("the returning server to catch up", || {
            (nodes[away].cluster.read(|d| d["n"].clone()) == json!(3)
                && nodes[away].cluster.index() == nodes[leader].cluster.index())
            .then_some(())
        })
        .await;
    }
}
