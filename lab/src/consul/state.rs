//! The Consul twin's replicated state (the catalog, KV and sessions), typed, and the
//! operations that change it. Every operation carries its own inputs (IDs, times), so
//! applying it is deterministic on every server. The consensus core carries the state as
//! JSON; each table keeps the shape Consul's API shows (state/catalog.go, kvs.go,
//! session.go), with the fields the twin does not act on kept as they were registered.

use std::collections::BTreeMap;

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use crate::cluster::{Operation, TypedState};

/// Catalog nodes by name.
pub type Nodes = BTreeMap<String, Node>;
/// Node name → service ID → service.
pub type Services = BTreeMap<String, BTreeMap<String, Service>>;
/// Node name → check ID → check.
pub type Checks = BTreeMap<String, BTreeMap<String, Check>>;

/// The replicated state: one table per kind, keyed as Consul's state store keys them.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct State {
    pub nodes: Nodes,
    pub services: Services,
    pub checks: Checks,
    pub kv: BTreeMap<String, KvEntry>,
    pub sessions: BTreeMap<String, Session>,
    /// Session ID → when (ms since the epoch) it is invalidated unless renewed.
    pub session_expiry: BTreeMap<String, u64>,
    /// Key → until when (ms) a released lock stays out of reach (the session's LockDelay).
    pub lock_delay: BTreeMap<String, u64>,
}

impl TypedState for State {}

/// A catalog node (structs.Node as `/v1/catalog/nodes` shows it).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase", default)]
pub struct Node {
    #[serde(rename = "ID")]
    pub id: String,
    #[serde(rename = "Node")]
    pub name: String,
    pub address: String,
    /// Datacenter, TaggedAddresses, Meta: shown as registered.
    #[serde(flatten)]
    pub rest: Map<String, Value>,
    pub create_index: u64,
    pub modify_index: u64,
}

/// A service on a node (structs.NodeService).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase", default)]
pub struct Service {
    #[serde(rename = "ID")]
    pub id: String,
    /// The service's name.
    pub service: String,
    /// Tags, Address, Port, Meta, Weights...: shown as registered.
    #[serde(flatten)]
    pub rest: Map<String, Value>,
    pub create_index: u64,
    pub modify_index: u64,
}

impl Service {
    /// Its tags (none when registered without, or with `null`).
    pub fn tags(&self) -> impl Iterator<Item = &str> {
        self.rest
            .get("Tags")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
    }
}

/// A health check on a node (structs.HealthCheck); a node check has an empty ServiceID.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase", default)]
pub struct Check {
    pub node: String,
    #[serde(rename = "CheckID")]
    pub check_id: String,
    /// `passing`, `warning` or `critical`.
    pub status: String,
    #[serde(rename = "ServiceID")]
    pub service_id: String,
    pub service_name: String,
    /// Name, Notes, Output, ServiceTags, Type...: shown as registered.
    #[serde(flatten)]
    pub rest: Map<String, Value>,
    pub create_index: u64,
    pub modify_index: u64,
}

/// A KV entry (structs.DirEntry).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase", default)]
pub struct KvEntry {
    pub key: String,
    pub create_index: u64,
    pub modify_index: u64,
    pub lock_index: u64,
    pub flags: u64,
    /// Base64, `null` for an empty value (see `encode_value`).
    pub value: Option<String>,
    /// The session holding its lock.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session: Option<String>,
}

/// A session (structs.Session).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase", default)]
pub struct Session {
    #[serde(rename = "ID")]
    pub id: String,
    pub node: String,
    /// The node's checks it is tied to: one turning critical invalidates it.
    pub node_checks: Vec<String>,
    /// Nanoseconds a released lock stays out of reach.
    pub lock_delay: u64,
    /// The TTL as given (`"15s"`), empty for none.
    #[serde(rename = "TTL")]
    pub ttl: String,
    /// Name, Behavior, ServiceChecks, Namespace: shown as created.
    #[serde(flatten)]
    pub rest: Map<String, Value>,
    pub create_index: u64,
    pub modify_index: u64,
}

/// The operations that change the replicated state. Each carries its own inputs (IDs,
/// times), so applying it is deterministic on every server.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Op {
    /// `PUT /v1/kv/KEY`, with its `cas`, `acquire` and `release`.
    KvSet {
        key: String,
        /// Base64, `None` for an empty value (see `encode_value`).
        value: Option<String>,
        #[serde(default)]
        flags: u64,
        cas: Option<u64>,
        acquire: Option<String>,
        release: Option<String>,
        #[serde(default)]
        now_ms: u64,
    },
    KvDelete {
        key: String,
        #[serde(default)]
        recurse: bool,
        cas: Option<u64>,
    },
    /// A node with, in the same write, a service and a check of its own: Consul's
    /// structs.RegisterRequest, as leader.go handleAliveMember sends it (the node, the
    /// `consul` service of a server and serfHealth at once), so that no reader ever sees
    /// the node without them.
    RegisterNode {
        node: Node,
        #[serde(default)]
        service: Option<Service>,
        #[serde(default)]
        check: Option<Check>,
        #[serde(default)]
        now_ms: u64,
    },
    /// A node gone from the catalog, with its services, checks and sessions.
    DeregisterNode {
        node: String,
        #[serde(default)]
        now_ms: u64,
    },
    RegisterService {
        node: String,
        service: Service,
    },
    DeregisterService {
        node: String,
        id: String,
    },
    RegisterCheck {
        node: String,
        check: Check,
        #[serde(default)]
        now_ms: u64,
    },
    DeregisterCheck {
        node: String,
        id: String,
    },
    SessionCreate {
        session: Session,
        expires_ms: Option<u64>,
    },
    SessionRenew {
        id: String,
        expires_ms: Option<u64>,
    },
    SessionDestroy {
        id: String,
        #[serde(default)]
        now_ms: u64,
    },
    /// `PUT /v1/snapshot`: the whole state replaced by a snapshot's.
    Restore {
        state: Value,
    },
}

/// Why the state refuses an operation.
#[derive(Debug, PartialEq, thiserror::Error)]
pub enum StateError {
    /// A lock acquired with a session that does not exist (state/kvs.go kvsLockTxn).
    #[error("invalid session \"{0}\"")]
    InvalidSession(String),
    /// The state held (or a snapshot restored) is not the twin's.
    #[error("{0}")]
    Unreadable(String),
}

impl Operation for Op {
    type Error = StateError;

    fn apply(self, data: &mut Value, index: u64) -> Result<Value, StateError> {
        let mut state = match self {
            Op::Restore { .. } => State::default(),
            _ => State::from_json(data).map_err(StateError::Unreadable)?,
        };
        let answer = state.apply(self, index)?;
        *data = state.to_json();
        Ok(answer)
    }
}

impl State {
    /// Applies one operation at raft index `index`; its answer goes to the writer.
    pub fn apply(&mut self, op: Op, index: u64) -> Result<Value, StateError> {
        match op {
            Op::KvSet {
                key,
                value,
                flags,
                cas,
                acquire,
                release,
                now_ms,
            } => self.kv_set(
                KvSet {
                    key,
                    value,
                    flags,
                    cas,
                    acquire,
                    release,
                    now_ms,
                },
                index,
            ),
            Op::KvDelete { key, recurse, cas } => {
                Ok(Value::Bool(self.kv_delete(&key, recurse, cas)))
            }
            Op::RegisterNode {
                node,
                service,
                check,
                now_ms,
            } => {
                self.register_node(node, service, check, index, now_ms);
                Ok(Value::Bool(true))
            }
            Op::DeregisterNode { node, now_ms } => {
                self.deregister_node(&node, index, now_ms);
                Ok(Value::Bool(true))
            }
            Op::RegisterService { node, service } => {
                self.register_service(node, service, index);
                Ok(Value::Bool(true))
            }
            Op::DeregisterService { node, id } => {
                if let Some(services) = self.services.get_mut(&node) {
                    services.remove(&id);
                }
                if let Some(checks) = self.checks.get_mut(&node) {
                    checks.retain(|_, c| c.service_id != id);
                }
                Ok(Value::Bool(true))
            }
            Op::RegisterCheck {
                node,
                check,
                now_ms,
            } => {
                self.register_check(&node, check, index, now_ms);
                Ok(Value::Bool(true))
            }
            Op::DeregisterCheck { node, id } => {
                if let Some(checks) = self.checks.get_mut(&node) {
                    checks.remove(&id);
                }
                Ok(Value::Bool(true))
            }
            Op::SessionCreate {
                mut session,
                expires_ms,
            } => {
                let id = session.id.clone();
                session.create_index = index;
                session.modify_index = index;
                self.sessions.insert(id.clone(), session);
                if let Some(at) = expires_ms {
                    self.session_expiry.insert(id.clone(), at);
                }
                Ok(json!({ "ID": id }))
            }
            Op::SessionRenew { id, expires_ms } => {
                let Some(session) = self.sessions.get(&id).cloned() else {
                    return Ok(Value::Null);
                };
                if let Some(at) = expires_ms {
                    self.session_expiry.insert(id, at);
                }
                Ok(json!([session]))
            }
            Op::SessionDestroy { id, now_ms } => {
                self.destroy_session(&id, index, now_ms);
                Ok(Value::Bool(true))
            }
            Op::Restore { state } => {
                *self = State::from_json(&state).map_err(StateError::Unreadable)?;
                Ok(Value::Bool(true))
            }
        }
    }

    /// A node, with its service and check when the registration carries them.
    fn register_node(
        &mut self,
        mut node: Node,
        service: Option<Service>,
        check: Option<Check>,
        index: u64,
        now_ms: u64,
    ) {
        let name = node.name.clone();
        node.create_index = self.nodes.get(&name).map_or(index, |n| n.create_index);
        node.modify_index = index;
        self.nodes.insert(name.clone(), node);
        if let Some(service) = service {
            self.register_service(name.clone(), service, index);
        }
        if let Some(check) = check {
            self.register_check(&name, check, index, now_ms);
        }
    }

    /// A service on a node, its CreateIndex kept across updates.
    fn register_service(&mut self, node: String, mut service: Service, index: u64) {
        let per_node = self.services.entry(node).or_default();
        service.create_index = per_node.get(&service.id).map_or(index, |s| s.create_index);
        service.modify_index = index;
        per_node.insert(service.id.clone(), service);
    }

    /// A node leaves the catalog with its services and checks; sessions tied to it are
    /// invalidated, releasing their locks.
    fn deregister_node(&mut self, node: &str, index: u64, now_ms: u64) {
        self.nodes.remove(node);
        self.services.remove(node);
        self.checks.remove(node);
        let ids: Vec<String> = self
            .sessions
            .values()
            .filter(|s| s.node == node)
            .map(|s| s.id.clone())
            .collect();
        for id in ids {
            self.destroy_session(&id, index, now_ms);
        }
    }

    /// A check registered on a node. One turning critical invalidates the sessions tied
    /// to it (Consul's state/catalog.go ensureCheckTxn): serfHealth of a failed agent
    /// takes the sessions made through it with the default checks, not pure TTL ones.
    fn register_check(&mut self, node: &str, mut check: Check, index: u64, now_ms: u64) {
        let per_node = self.checks.entry(node.to_string()).or_default();
        check.create_index = per_node
            .get(&check.check_id)
            .map_or(index, |c| c.create_index);
        check.modify_index = index;
        let critical = check.status == "critical";
        let id = check.check_id.clone();
        per_node.insert(id.clone(), check);
        if critical {
            let tied: Vec<String> = self
                .sessions
                .values()
                .filter(|s| s.node == node && s.node_checks.contains(&id))
                .map(|s| s.id.clone())
                .collect();
            for sid in tied {
                self.destroy_session(&sid, index, now_ms);
            }
        }
    }

    /// An invalidated session (destroyed, expired, or its node gone): its locks are
    /// released (Behavior "release") and, as in Consul's state store, each stays out of
    /// reach of other sessions for the session's LockDelay (checked against real Consul
    /// 1.8.7: an acquire right after a destroy answers false, one after the delay true).
    fn destroy_session(&mut self, id: &str, index: u64, now_ms: u64) {
        let delay_ms = self
            .sessions
            .get(id)
            .map_or(0, |s| s.lock_delay / 1_000_000);
        self.sessions.remove(id);
        self.session_expiry.remove(id);
        for (key, entry) in &mut self.kv {
            if entry.session.as_deref() == Some(id) {
                entry.session = None;
                entry.modify_index = index;
                if delay_ms > 0 && now_ms > 0 {
                    self.lock_delay.insert(key.clone(), now_ms + delay_ms);
                }
            }
        }
    }

    fn kv_set(&mut self, op: KvSet, index: u64) -> Result<Value, StateError> {
        let existing = self.kv.get(&op.key);
        if let Some(cas) = op.cas {
            let ok = match (cas, existing) {
                (0, None) => true,
                (0, Some(_)) | (_, None) => false,
                (c, Some(e)) => c == e.modify_index,
            };
            if !ok {
                return Ok(Value::Bool(false));
            }
        }
        let mut lock_index = existing.map_or(0, |e| e.lock_index);
        let mut session = existing.and_then(|e| e.session.clone());
        let create_index = existing.map_or(index, |e| e.create_index);
        if let Some(acquire) = op.acquire {
            if !self.sessions.contains_key(&acquire) {
                return Err(StateError::InvalidSession(acquire));
            }
            let delayed = self
                .lock_delay
                .get(&op.key)
                .is_some_and(|until| op.now_ms < *until);
            match &session {
                Some(holder) if *holder != acquire => return Ok(Value::Bool(false)),
                Some(_) => {}
                None if delayed => return Ok(Value::Bool(false)),
                None => {
                    lock_index += 1;
                    session = Some(acquire);
                }
            }
        }
        if let Some(release) = op.release {
            match &session {
                Some(holder) if *holder == release => session = None,
                _ => return Ok(Value::Bool(false)),
            }
        }
        let entry = KvEntry {
            key: op.key.clone(),
            create_index,
            modify_index: index,
            lock_index,
            flags: op.flags,
            value: op.value,
            session,
        };
        self.kv.insert(op.key, entry);
        Ok(Value::Bool(true))
    }

    /// Whether the delete went ahead (a `cas` that does not match refuses it).
    fn kv_delete(&mut self, key: &str, recurse: bool, cas: Option<u64>) -> bool {
        if recurse {
            self.kv.retain(|k, _| !k.starts_with(key));
            return true;
        }
        if let Some(cas) = cas {
            let current = self.kv.get(key).map(|e| e.modify_index);
            if cas == 0 || current != Some(cas) {
                return false;
            }
        }
        self.kv.remove(key);
        true
    }
}

/// The inputs of `Op::KvSet`.
struct KvSet {
    key: String,
    value: Option<String>,
    flags: u64,
    cas: Option<u64>,
    acquire: Option<String>,
    release: Option<String>,
    now_ms: u64,
}

/// Base64 of raw bytes, `None` for an empty value (Consul shows it as `null`).
pub fn encode_value(bytes: &[u8]) -> Option<String> {
    (!bytes.is_empty()).then(|| base64::engine::general_purpose::STANDARD.encode(bytes))
}

pub fn decode_value(value: Option<&str>) -> Vec<u8> {
    value
        .and_then(|s| base64::engine::general_purpose::STANDARD.decode(s).ok())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(key: &str, cas: Option<u64>, acquire: Option<&str>) -> Op {
        Op::KvSet {
            key: key.into(),
            value: Some("dg==".into()),
            flags: 0,
            cas,
            acquire: acquire.map(str::to_string),
            release: None,
            now_ms: 0,
        }
    }

    fn session(id: &str, node: &str) -> Op {
        Op::SessionCreate {
            session: Session {
                id: id.into(),
                node: node.into(),
                ..Session::default()
            },
            expires_ms: None,
        }
    }

    #[test]
    fn cas_and_locks() {
        let mut data = State::default();
        assert_eq!(data.apply(set("a", Some(0), None), 5).unwrap(), true);
        assert_eq!(data.apply(set("a", Some(0), None), 6).unwrap(), false);
        assert_eq!(data.apply(set("a", Some(5), None), 7).unwrap(), true);
        assert_eq!(data.kv["a"].create_index, 5);
        assert_eq!(data.kv["a"].modify_index, 7);
        data.apply(session("s1", "n1"), 8).unwrap();
        assert_eq!(data.apply(set("lock", None, Some("s1")), 9).unwrap(), true);
        data.apply(session("s2", "n2"), 10).unwrap();
        assert_eq!(
            data.apply(set("lock", None, Some("s2")), 11).unwrap(),
            false
        );
        let destroy = Op::SessionDestroy {
            id: "s1".into(),
            now_ms: 0,
        };
        data.apply(destroy, 12).unwrap();
        assert_eq!(data.kv["lock"].session, None);
        assert_eq!(data.apply(set("lock", None, Some("s2")), 13).unwrap(), true);
        assert_eq!(data.kv["lock"].lock_index, 2);
    }

    /// Operations travel between servers as JSON tagged by `op`; an unknown one is an
    /// error, not a no-op.
    #[test]
    fn operations_round_trip_as_tagged_json() {
        let op = serde_json::to_value(set("k", Some(3), None)).unwrap();
        assert_eq!(op["op"], "kv_set");
        assert!(matches!(
            serde_json::from_value::<Op>(op).unwrap(),
            Op::KvSet { cas: Some(3), .. }
        ));
        assert!(serde_json::from_value::<Op>(json!({"op": "kv_frobnicate"})).is_err());
    }

    /// A session lock is released when its node leaves, and the key stays out of reach
    /// for the lock delay (Consul's state store).
    #[test]
    fn a_nodes_sessions_end_with_it_and_their_locks_wait_out_the_delay() {
        let mut data = State::default();
        let with_delay = Op::SessionCreate {
            session: Session {
                id: "s1".into(),
                node: "n1".into(),
                lock_delay: 1_000_000_000,
                ..Session::default()
            },
            expires_ms: None,
        };
        data.apply(with_delay, 1).unwrap();
        data.apply(set("lock", None, Some("s1")), 2).unwrap();
        let gone = Op::DeregisterNode {
            node: "n1".into(),
            now_ms: 10_000,
        };
        data.apply(gone, 3).unwrap();
        assert!(!data.sessions.contains_key("s1"));
        assert_eq!(data.kv["lock"].session, None);
        assert_eq!(data.lock_delay["lock"], 11_000);
    }
    /// The typed tables keep Consul's API shapes: a service comes back as registered plus
    /// its indexes (the agent's catalog sync compares them, so a field lost would make it
    /// register again on every round), a KV entry without a lock has no Session field and
    /// an empty value is null.
    #[test]
    fn entries_keep_the_shape_they_were_registered_in() {
        let registered = json!({
            "ID": "web-1", "Service": "web", "Tags": ["a"], "Meta": {}, "Port": 80,
            "Address": "", "Weights": {"Passing": 1, "Warning": 1},
            "EnableTagOverride": false, "Datacenter": "dc1",
        });
        let service: Service = serde_json::from_value(registered.clone()).unwrap();
        let mut data = json!({});
        let op = Op::RegisterService {
            node: "n1".into(),
            service,
        };
        op.apply(&mut data, 4).unwrap();
        let mut stored = data["services"]["n1"]["web-1"].clone();
        assert_eq!(stored["CreateIndex"], 4);
        let fields = stored.as_object_mut().unwrap();
        fields.remove("CreateIndex");
        fields.remove("ModifyIndex");
        assert_eq!(stored, registered);

        let empty = Op::KvSet {
            key: "k".into(),
            value: encode_value(b""),
            flags: 0,
            cas: None,
            acquire: None,
            release: None,
            now_ms: 0,
        };
        empty.apply(&mut data, 5).unwrap();
        assert_eq!(
            data["kv"]["k"],
            json!({"Key": "k", "CreateIndex": 5, "ModifyIndex": 5, "LockIndex": 0, "Flags": 0, "Value": null})
        );
    }

    /// A state the twin cannot read refuses the write; it is never taken for an empty one
    /// (the write would erase it).
    #[test]
    fn an_unreadable_state_refuses_writes() {
        let mut data = json!({"kv": {"k": "not an entry"}});
        let refused = set("other", None, None).apply(&mut data, 9);
        assert!(
            matches!(refused, Err(StateError::Unreadable(_))),
            "{refused:?}"
        );
        assert_eq!(data["kv"]["k"], "not an entry");
    }
    /// A member's registration is one write: a reader never sees its node without the
    /// `consul` service and serfHealth (leader.go handleAliveMember's RegisterRequest).
    #[test]
    fn a_node_registers_with_its_service_and_check_at_once() {
        let mut state = State::default();
        let op = Op::RegisterNode {
            node: Node {
                name: "c1".into(),
                address: "10.0.0.1".into(),
                ..Node::default()
            },
            service: Some(Service {
                id: "consul".into(),
                service: "consul".into(),
                ..Service::default()
            }),
            check: Some(Check {
                node: "c1".into(),
                check_id: "serfHealth".into(),
                status: "passing".into(),
                ..Check::default()
            }),
            now_ms: 0,
        };
        state.apply(op, 7).unwrap();
        assert_eq!(state.nodes["c1"].modify_index, 7);
        assert_eq!(state.services["c1"]["consul"].create_index, 7);
        assert_eq!(state.checks["c1"]["serfHealth"].status, "passing");
    }
}
