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

mod election;
mod error;
mod membership;
mod peers_json;
mod replication;
mod rpc;

pub use error::WriteError;
pub use peers_json::{take_peers_json, OwnPeer};
use rpc::{
    append, forwarded_write, hello, join_request, remove_request, shared_read, snapshot, vote,
};

/// A twin's replicated operations: a serde enum tagged by `op`, sent between servers as
/// JSON and applied to the state on each of them.
pub trait Operation: Serialize + DeserializeOwned + Send + 'static {
    /// Applies the operation to the state; must be deterministic. `index` is the index it
    /// commits at (Consul's ModifyIndex). Its answer goes back to the caller of `write`.
    fn apply(self, data: &mut Value, index: u64) -> Result<Value, Self::Error>;

    /// Why the state refuses an operation (a session that does not exist, a node not
    /// found): the twin's own typed errors, shown in its server's words.
    type Error: std::fmt::Display;
}

/// A twin's typed state. The consensus core carries it as JSON, in the shape the twin's
/// API shows, and each write reads it, applies the operation and writes it back.
pub trait TypedState: Serialize + DeserializeOwned + Default {
    /// The state as the core holds it. A state the twin cannot read is an error, never
    /// taken for an empty one (the write would then erase it).
    fn from_json(data: &Value) -> Result<Self, String> {
        if data.is_null() || data.as_object().is_some_and(|o| o.is_empty()) {
            return Ok(Self::default());
        }
        Self::deserialize(data).map_err(|e| format!("unreadable state: {e}"))
    }

    fn to_json(&self) -> Value {
        serde_json::to_value(self).unwrap_or_default()
    }
}

/// One table of a state as the core holds it, typed. A table the twin cannot read is
/// logged and read as empty (a read never writes it back).
pub fn table<T: DeserializeOwned + Default>(data: &Value, key: &str) -> T {
    match data.get(key) {
        None | Some(Value::Null) => T::default(),
        Some(v) => T::deserialize(v).unwrap_or_else(|e| {
            tracing::error!("replicated state, {key}: {e}");
            T::default()
        }),
    }
}

/// Applies one replicated operation, as it travels (JSON), to the state.
type ApplyFn = dyn Fn(&mut Value, &Value, u64) -> Result<Value, WriteError> + Send + Sync;
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
    /// Members erased by a force-leave with prune. Serf gossips the leave intent with its
    /// prune flag and every member erases the node (serf/serf.go handleNodeLeaveIntent,
    /// eraseNode), so no one brings it back; it returns only by joining again itself.
    pruned: std::collections::HashSet<String>,
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
    /// The members this node erased (force-leave with prune), for the others to erase.
    #[serde(default)]
    pruned: Vec<String>,
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
            let op: O = serde_json::from_value(op.clone()).map_err(|e| {
                WriteError::Garbled(format!("an operation this server cannot read: {e}"))
            })?;
            op.apply(data, index)
                .map_err(|e| WriteError::Refused(e.to_string()))
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
                pruned: Default::default(),
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

    /// Reads the replicated state.
    pub fn read<T>(&self, f: impl FnOnce(&Value) -> T) -> T {
        f(&lock(&self.inner).p.data)
    }

    /// One table of the replicated state, typed and read alone: a request needs only its
    /// table deserialized, not the whole state. Tables that must agree with each other
    /// (a service and its node) are read together, with [`table`] inside one `read`.
    pub fn part<T: DeserializeOwned + Default>(&self, key: &str) -> T {
        self.read(|d| table(d, key))
    }

    /// The members erased by a force-leave with prune (see `Inner::pruned`).
    pub fn pruned(&self) -> Vec<String> {
        lock(&self.inner).pruned.iter().cloned().collect()
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

    fn me_server(&self, voter: bool) -> Server {
        Server {
            id: self.opts.id.clone(),
            address: self.opts.address.clone(),
            http: self.opts.http.clone(),
            voter,
        }
    }
}

/// Writes a state file through a temporary file and a rename, mode 0600 as the servers'
/// own (Vault's vault.db, raft.db).
pub fn write_state_file(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    harun_runtime::private_fs::write_atomic(path, bytes, 0o600, None)
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
        type Error = String;

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
