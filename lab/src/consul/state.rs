//! The Consul twin's replicated state (the catalog, KV and sessions) and the operations
//! that change it. Every operation carries its own inputs (IDs, times), so applying it is
//! deterministic on every server.

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use crate::cluster::Operation;

fn obj<'a>(data: &'a mut Value, key: &str) -> &'a mut Map<String, Value> {
    if !data.get(key).is_some_and(Value::is_object) {
        data[key] = json!({});
    }
    data[key].as_object_mut().expect("just made an object")
}

/// A node's entries in the per-node table `table` (`services`, `checks`), made when
/// missing.
fn per_node<'a>(data: &'a mut Value, table: &str, node: &str) -> &'a mut Map<String, Value> {
    let entry = obj(data, table).entry(node).or_insert_with(|| json!({}));
    if !entry.is_object() {
        *entry = json!({});
    }
    entry.as_object_mut().expect("just made an object")
}

/// The operations that change the replicated state. Each carries its own inputs (IDs,
/// times), so applying it is deterministic on every server.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Op {
    /// `PUT /v1/kv/KEY`, with its `cas`, `acquire` and `release`.
    KvSet {
        key: String,
        /// Base64, `null` for an empty value (see `encode_value`).
        value: Value,
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
    /// A catalog node (its `Node`, `Address`, ...).
    RegisterNode {
        node: Value,
    },
    /// A node gone from the catalog, with its services, checks and sessions.
    DeregisterNode {
        node: String,
        #[serde(default)]
        now_ms: u64,
    },
    RegisterService {
        node: String,
        service: Value,
    },
    DeregisterService {
        node: String,
        id: String,
    },
    RegisterCheck {
        node: String,
        check: Value,
        #[serde(default)]
        now_ms: u64,
    },
    DeregisterCheck {
        node: String,
        id: String,
    },
    SessionCreate {
        session: Value,
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
}

impl Operation for Op {
    type Error = StateError;

    fn apply(self, data: &mut Value, index: u64) -> Result<Value, StateError> {
        apply(data, self, index)
    }
}

/// Applies one operation at raft index `index`.
pub fn apply(data: &mut Value, op: Op, index: u64) -> Result<Value, StateError> {
    match op {
        Op::KvSet {
            key,
            value,
            flags,
            cas,
            acquire,
            release,
            now_ms,
        } => kv_set(
            data,
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
        Op::KvDelete { key, recurse, cas } => Ok(kv_delete(data, &key, recurse, cas)),
        Op::RegisterNode { mut node } => {
            let name = node["Node"].as_str().unwrap_or_default().to_string();
            let nodes = obj(data, "nodes");
            let create = nodes
                .get(&name)
                .and_then(|n| n["CreateIndex"].as_u64())
                .unwrap_or(index);
            node["CreateIndex"] = json!(create);
            node["ModifyIndex"] = json!(index);
            nodes.insert(name, node);
            Ok(Value::Bool(true))
        }
        Op::DeregisterNode { node, now_ms } => Ok(deregister_node(data, &node, index, now_ms)),
        Op::RegisterService { node, service } => Ok(register_service(data, node, service, index)),
        Op::DeregisterService { node, id } => {
            if let Some(per_node) = obj(data, "services")
                .get_mut(&node)
                .and_then(Value::as_object_mut)
            {
                per_node.remove(&id);
            }
            if let Some(checks) = obj(data, "checks")
                .get_mut(&node)
                .and_then(Value::as_object_mut)
            {
                checks.retain(|_, c| c["ServiceID"] != id.as_str());
            }
            Ok(Value::Bool(true))
        }
        Op::RegisterCheck {
            node,
            check,
            now_ms,
        } => Ok(register_check(data, &node, check, index, now_ms)),
        Op::DeregisterCheck { node, id } => {
            if let Some(checks) = obj(data, "checks")
                .get_mut(&node)
                .and_then(Value::as_object_mut)
            {
                checks.remove(&id);
            }
            Ok(Value::Bool(true))
        }
        Op::SessionCreate {
            mut session,
            expires_ms,
        } => {
            let id = session["ID"].as_str().unwrap_or_default().to_string();
            session["CreateIndex"] = json!(index);
            session["ModifyIndex"] = json!(index);
            obj(data, "sessions").insert(id.clone(), session);
            if let Some(at) = expires_ms {
                obj(data, "session_expiry").insert(id.clone(), json!(at));
            }
            Ok(json!({ "ID": id }))
        }
        Op::SessionRenew { id, expires_ms } => {
            let Some(session) = data["sessions"].get(&id).cloned() else {
                return Ok(Value::Null);
            };
            if let Some(at) = expires_ms {
                obj(data, "session_expiry").insert(id, json!(at));
            }
            Ok(json!([session]))
        }
        Op::SessionDestroy { id, now_ms } => {
            destroy_session(data, &id, index, now_ms);
            Ok(Value::Bool(true))
        }
        Op::Restore { state } => {
            *data = state;
            Ok(Value::Bool(true))
        }
    }
}

/// A service registered on a node (its CreateIndex kept across updates).
fn register_service(data: &mut Value, node: String, mut service: Value, index: u64) -> Value {
    let id = service["ID"].as_str().unwrap_or_default().to_string();
    let per_node = per_node(data, "services", &node);
    let create = per_node
        .get(&id)
        .and_then(|s| s["CreateIndex"].as_u64())
        .unwrap_or(index);
    service["CreateIndex"] = json!(create);
    service["ModifyIndex"] = json!(index);
    per_node.insert(id, service);
    Value::Bool(true)
}

/// A node leaves the catalog with its services and checks; sessions tied to it are
/// invalidated, releasing their locks.
fn deregister_node(data: &mut Value, node: &str, index: u64, now_ms: u64) -> Value {
    obj(data, "nodes").remove(node);
    obj(data, "services").remove(node);
    obj(data, "checks").remove(node);
    let ids: Vec<String> = obj(data, "sessions")
        .iter()
        .filter(|(_, s)| s["Node"] == node)
        .map(|(id, _)| id.clone())
        .collect();
    for id in ids {
        destroy_session(data, &id, index, now_ms);
    }
    Value::Bool(true)
}

/// A check registered on a node. One turning critical invalidates the sessions tied to
/// it (Consul's state/catalog.go ensureCheckTxn): serfHealth of a failed agent takes the
/// sessions made through it with the default checks, not pure TTL ones.
fn register_check(
    data: &mut Value,
    node: &str,
    mut check: Value,
    index: u64,
    now_ms: u64,
) -> Value {
    let id = check["CheckID"].as_str().unwrap_or_default().to_string();
    let per_node = per_node(data, "checks", node);
    let create = per_node
        .get(&id)
        .and_then(|c| c["CreateIndex"].as_u64())
        .unwrap_or(index);
    check["CreateIndex"] = json!(create);
    check["ModifyIndex"] = json!(index);
    let critical = check["Status"] == "critical";
    per_node.insert(id.clone(), check);
    if critical {
        let tied: Vec<String> = obj(data, "sessions")
            .iter()
            .filter(|(_, s)| {
                s["Node"] == node
                    && s["NodeChecks"]
                        .as_array()
                        .is_some_and(|c| c.iter().any(|c| c == id.as_str()))
            })
            .map(|(sid, _)| sid.clone())
            .collect();
        for sid in tied {
            destroy_session(data, &sid, index, now_ms);
        }
    }
    Value::Bool(true)
}

/// An invalidated session (destroyed, expired, or its node gone): its locks are released
/// (Behavior "release") and, as in Consul's state store, each stays out of reach of other
/// sessions for the session's LockDelay (checked against real Consul 1.8.7: an acquire
/// right after a destroy answers false, one after the delay true).
fn destroy_session(data: &mut Value, id: &str, index: u64, now_ms: u64) {
    let delay_ms = data["sessions"][id]["LockDelay"].as_u64().unwrap_or(0) / 1_000_000;
    obj(data, "sessions").remove(id);
    obj(data, "session_expiry").remove(id);
    let mut held = Vec::new();
    for (key, entry) in obj(data, "kv").iter_mut() {
        if entry["Session"] == id {
            entry.as_object_mut().expect("an entry").remove("Session");
            entry["ModifyIndex"] = json!(index);
            held.push(key.clone());
        }
    }
    if delay_ms > 0 && now_ms > 0 {
        for key in held {
            obj(data, "lock_delay").insert(key, json!(now_ms + delay_ms));
        }
    }
}

/// The inputs of `Op::KvSet`.
struct KvSet {
    key: String,
    value: Value,
    flags: u64,
    cas: Option<u64>,
    acquire: Option<String>,
    release: Option<String>,
    now_ms: u64,
}

fn kv_set(data: &mut Value, op: KvSet, index: u64) -> Result<Value, StateError> {
    let key = op.key;
    let existing = data.get("kv").and_then(|kv| kv.get(&key)).cloned();
    if let Some(cas) = op.cas {
        let current = existing.as_ref().and_then(|e| e["ModifyIndex"].as_u64());
        let ok = match (cas, current) {
            (0, None) => true,
            (0, Some(_)) => false,
            (c, Some(m)) => c == m,
            (_, None) => false,
        };
        if !ok {
            return Ok(Value::Bool(false));
        }
    }
    let mut lock_index = existing
        .as_ref()
        .and_then(|e| e["LockIndex"].as_u64())
        .unwrap_or(0);
    let mut session = existing
        .as_ref()
        .and_then(|e| e["Session"].as_str())
        .map(str::to_string);
    if let Some(acquire) = op.acquire {
        if data
            .get("sessions")
            .is_none_or(|s| s.get(&acquire).is_none())
        {
            return Err(StateError::InvalidSession(acquire));
        }
        let delayed = data["lock_delay"][&key]
            .as_u64()
            .is_some_and(|until| op.now_ms < until);
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
    let create = existing
        .as_ref()
        .and_then(|e| e["CreateIndex"].as_u64())
        .unwrap_or(index);
    let mut entry = json!({
        "Key": key,
        "CreateIndex": create,
        "ModifyIndex": index,
        "LockIndex": lock_index,
        "Flags": op.flags,
        "Value": op.value,
    });
    if let Some(s) = session {
        entry["Session"] = json!(s);
    }
    obj(data, "kv").insert(key, entry);
    Ok(Value::Bool(true))
}

fn kv_delete(data: &mut Value, key: &str, recurse: bool, cas: Option<u64>) -> Value {
    let kv = obj(data, "kv");
    if recurse {
        kv.retain(|k, _| !k.starts_with(key));
        return Value::Bool(true);
    }
    if let Some(cas) = cas {
        let current = kv.get(key).and_then(|e| e["ModifyIndex"].as_u64());
        if cas == 0 || current != Some(cas) {
            return Value::Bool(false);
        }
    }
    kv.remove(key);
    Value::Bool(true)
}

/// Base64 of raw bytes, `null` for an empty value (as Consul shows it).
pub fn encode_value(bytes: &[u8]) -> Value {
    if bytes.is_empty() {
        Value::Null
    } else {
        Value::String(base64::engine::general_purpose::STANDARD.encode(bytes))
    }
}

pub fn decode_value(value: &Value) -> Vec<u8> {
    value
        .as_str()
        .and_then(|s| base64::engine::general_purpose::STANDARD.decode(s).ok())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(key: &str, cas: Option<u64>, acquire: Option<&str>) -> Op {
        Op::KvSet {
            key: key.into(),
            value: json!("dg=="),
            flags: 0,
            cas,
            acquire: acquire.map(str::to_string),
            release: None,
            now_ms: 0,
        }
    }

    fn session(id: &str, node: &str) -> Op {
        Op::SessionCreate {
            session: json!({"ID": id, "Node": node}),
            expires_ms: None,
        }
    }

    #[test]
    fn cas_and_locks() {
        let mut data = json!({});
        assert_eq!(apply(&mut data, set("a", Some(0), None), 5).unwrap(), true);
        assert_eq!(apply(&mut data, set("a", Some(0), None), 6).unwrap(), false);
        assert_eq!(apply(&mut data, set("a", Some(5), None), 7).unwrap(), true);
        assert_eq!(data["kv"]["a"]["CreateIndex"], 5);
        assert_eq!(data["kv"]["a"]["ModifyIndex"], 7);
        apply(&mut data, session("s1", "n1"), 8).unwrap();
        assert_eq!(
            apply(&mut data, set("lock", None, Some("s1")), 9).unwrap(),
            true
        );
        apply(&mut data, session("s2", "n2"), 10).unwrap();
        assert_eq!(
            apply(&mut data, set("lock", None, Some("s2")), 11).unwrap(),
            false
        );
        let destroy = Op::SessionDestroy {
            id: "s1".into(),
            now_ms: 0,
        };
        apply(&mut data, destroy, 12).unwrap();
        assert!(data["kv"]["lock"].get("Session").is_none());
        assert_eq!(
            apply(&mut data, set("lock", None, Some("s2")), 13).unwrap(),
            true
        );
        assert_eq!(data["kv"]["lock"]["LockIndex"], 2);
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
        let mut data = json!({});
        let with_delay = Op::SessionCreate {
            session: json!({"ID": "s1", "Node": "n1", "LockDelay": 1_000_000_000u64}),
            expires_ms: None,
        };
        apply(&mut data, with_delay, 1).unwrap();
        apply(&mut data, set("lock", None, Some("s1")), 2).unwrap();
        let gone = Op::DeregisterNode {
            node: "n1".into(),
            now_ms: 10_000,
        };
        apply(&mut data, gone, 3).unwrap();
        assert!(data["sessions"].get("s1").is_none());
        assert!(data["kv"]["lock"].get("Session").is_none());
        assert_eq!(data["lock_delay"]["lock"], 11_000);
    }
}
