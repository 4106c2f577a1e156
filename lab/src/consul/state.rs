//! The Consul twin's replicated state (the catalog, KV and sessions) and the operations
//! that change it. Every operation carries its own inputs (IDs, times), so applying it is
//! deterministic on every server.

use base64::Engine as _;
use serde_json::{json, Map, Value};

fn obj<'a>(data: &'a mut Value, key: &str) -> &'a mut Map<String, Value> {
    if !data.get(key).is_some_and(Value::is_object) {
        data[key] = json!({});
    }
    data[key].as_object_mut().expect("just made an object")
}

/// Applies one operation at raft index `index`.
pub fn apply(data: &mut Value, op: &Value, index: u64) -> Result<Value, String> {
    let kind = op["op"].as_str().unwrap_or_default();
    match kind {
        "kv_set" => kv_set(data, op, index),
        "kv_delete" => kv_delete(data, op, index),
        "register_node" => {
            let node = op["node"].clone();
            let name = node["Node"].as_str().unwrap_or_default().to_string();
            let nodes = obj(data, "nodes");
            let create = nodes
                .get(&name)
                .and_then(|n| n["CreateIndex"].as_u64())
                .unwrap_or(index);
            let mut node = node;
            node["CreateIndex"] = json!(create);
            node["ModifyIndex"] = json!(index);
            nodes.insert(name, node);
            Ok(Value::Bool(true))
        }
        "deregister_node" => {
            let name = op["node"].as_str().unwrap_or_default();
            obj(data, "nodes").remove(name);
            obj(data, "services").remove(name);
            obj(data, "checks").remove(name);
            // Sessions tied to the node are invalidated, releasing their locks.
            let ids: Vec<String> = obj(data, "sessions")
                .iter()
                .filter(|(_, s)| s["Node"] == name)
                .map(|(id, _)| id.clone())
                .collect();
            for id in ids {
                destroy_session(data, &id, index, op["now_ms"].as_u64().unwrap_or(0));
            }
            Ok(Value::Bool(true))
        }
        "register_service" => {
            let node = op["node"].as_str().unwrap_or_default().to_string();
            let mut service = op["service"].clone();
            let id = service["ID"].as_str().unwrap_or_default().to_string();
            let services = obj(data, "services");
            let per_node = services
                .entry(node)
                .or_insert_with(|| json!({}))
                .as_object_mut()
                .expect("an object");
            let create = per_node
                .get(&id)
                .and_then(|s| s["CreateIndex"].as_u64())
                .unwrap_or(index);
            service["CreateIndex"] = json!(create);
            service["ModifyIndex"] = json!(index);
            per_node.insert(id, service);
            Ok(Value::Bool(true))
        }
        "deregister_service" => {
            let node = op["node"].as_str().unwrap_or_default();
            let id = op["id"].as_str().unwrap_or_default();
            if let Some(per_node) = obj(data, "services")
                .get_mut(node)
                .and_then(Value::as_object_mut)
            {
                per_node.remove(id);
            }
            if let Some(checks) = obj(data, "checks")
                .get_mut(node)
                .and_then(Value::as_object_mut)
            {
                checks.retain(|_, c| c["ServiceID"] != id);
            }
            Ok(Value::Bool(true))
        }
        "register_check" => {
            let node = op["node"].as_str().unwrap_or_default().to_string();
            let mut check = op["check"].clone();
            let id = check["CheckID"].as_str().unwrap_or_default().to_string();
            let checks = obj(data, "checks");
            let per_node = checks
                .entry(node.clone())
                .or_insert_with(|| json!({}))
                .as_object_mut()
                .expect("an object");
            let create = per_node
                .get(&id)
                .and_then(|c| c["CreateIndex"].as_u64())
                .unwrap_or(index);
            check["CreateIndex"] = json!(create);
            check["ModifyIndex"] = json!(index);
            let critical = check["Status"] == "critical";
            per_node.insert(id.clone(), check);
            // A check turning critical invalidates the sessions tied to it (Consul's
            // state/catalog.go ensureCheckTxn): serfHealth of a failed agent takes the
            // sessions made through it with the default checks, not pure TTL ones.
            if critical {
                let tied: Vec<String> = obj(data, "sessions")
                    .iter()
                    .filter(|(_, s)| {
                        s["Node"] == node.as_str()
                            && s["NodeChecks"]
                                .as_array()
                                .is_some_and(|c| c.iter().any(|c| c == id.as_str()))
                    })
                    .map(|(sid, _)| sid.clone())
                    .collect();
                for sid in tied {
                    destroy_session(data, &sid, index, op["now_ms"].as_u64().unwrap_or(0));
                }
            }
            Ok(Value::Bool(true))
        }
        "deregister_check" => {
            let node = op["node"].as_str().unwrap_or_default();
            let id = op["id"].as_str().unwrap_or_default();
            if let Some(checks) = obj(data, "checks")
                .get_mut(node)
                .and_then(Value::as_object_mut)
            {
                checks.remove(id);
            }
            Ok(Value::Bool(true))
        }
        "session_create" => {
            let mut session = op["session"].clone();
            let id = session["ID"].as_str().unwrap_or_default().to_string();
            session["CreateIndex"] = json!(index);
            session["ModifyIndex"] = json!(index);
            obj(data, "sessions").insert(id.clone(), session);
            if let Some(at) = op["expires_ms"].as_u64() {
                obj(data, "session_expiry").insert(id.clone(), json!(at));
            }
            Ok(json!({ "ID": id }))
        }
        "session_renew" => {
            let id = op["id"].as_str().unwrap_or_default().to_string();
            let Some(session) = data["sessions"].get(&id).cloned() else {
                return Ok(Value::Null);
            };
            if let Some(at) = op["expires_ms"].as_u64() {
                obj(data, "session_expiry").insert(id, json!(at));
            }
            Ok(json!([session]))
        }
        "session_destroy" => {
            let id = op["id"].as_str().unwrap_or_default().to_string();
            destroy_session(data, &id, index, op["now_ms"].as_u64().unwrap_or(0));
            Ok(Value::Bool(true))
        }
        other => Err(format!("unknown operation {other:?}")),
    }
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

fn kv_set(data: &mut Value, op: &Value, index: u64) -> Result<Value, String> {
    let key = op["key"].as_str().unwrap_or_default().to_string();
    let existing = data.get("kv").and_then(|kv| kv.get(&key)).cloned();
    if let Some(cas) = op["cas"].as_u64() {
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
    if let Some(acquire) = op["acquire"].as_str() {
        if data
            .get("sessions")
            .is_none_or(|s| s.get(acquire).is_none())
        {
            return Err(format!("invalid session \"{acquire}\""));
        }
        let delayed = data["lock_delay"][&key]
            .as_u64()
            .is_some_and(|until| op["now_ms"].as_u64().unwrap_or(0) < until);
        match &session {
            Some(holder) if holder != acquire => return Ok(Value::Bool(false)),
            Some(_) => {}
            None if delayed => return Ok(Value::Bool(false)),
            None => {
                lock_index += 1;
                session = Some(acquire.to_string());
            }
        }
    }
    if let Some(release) = op["release"].as_str() {
        match &session {
            Some(holder) if holder == release => session = None,
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
        "Flags": op["flags"].as_u64().unwrap_or(0),
        "Value": op["value"].clone(),
    });
    if let Some(s) = session {
        entry["Session"] = json!(s);
    }
    obj(data, "kv").insert(key, entry);
    Ok(Value::Bool(true))
}

fn kv_delete(data: &mut Value, op: &Value, _index: u64) -> Result<Value, String> {
    let key = op["key"].as_str().unwrap_or_default().to_string();
    let kv = obj(data, "kv");
    if op["recurse"].as_bool().unwrap_or(false) {
        kv.retain(|k, _| !k.starts_with(&key));
        return Ok(Value::Bool(true));
    }
    if let Some(cas) = op["cas"].as_u64() {
        let current = kv.get(&key).and_then(|e| e["ModifyIndex"].as_u64());
        if cas == 0 || current != Some(cas) {
            return Ok(Value::Bool(false));
        }
    }
    kv.remove(&key);
    Ok(Value::Bool(true))
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

    #[test]
    fn cas_and_locks() {
        let mut data = json!({});
        let set = |key: &str, extra: Value| {
            let mut op = json!({"op": "kv_set", "key": key, "value": "dg=="});
            for (k, v) in extra.as_object().unwrap() {
                op[k] = v.clone();
            }
            op
        };
        assert_eq!(
            apply(&mut data, &set("a", json!({"cas": 0})), 5).unwrap(),
            true
        );
        assert_eq!(
            apply(&mut data, &set("a", json!({"cas": 0})), 6).unwrap(),
            false
        );
        assert_eq!(
            apply(&mut data, &set("a", json!({"cas": 5})), 7).unwrap(),
            true
        );
        assert_eq!(data["kv"]["a"]["CreateIndex"], 5);
        assert_eq!(data["kv"]["a"]["ModifyIndex"], 7);
        apply(
            &mut data,
            &json!({"op": "session_create", "session": {"ID": "s1", "Node": "n1"}}),
            8,
        )
        .unwrap();
        assert_eq!(
            apply(&mut data, &set("lock", json!({"acquire": "s1"})), 9).unwrap(),
            true
        );
        apply(
            &mut data,
            &json!({"op": "session_create", "session": {"ID": "s2", "Node": "n2"}}),
            10,
        )
        .unwrap();
        assert_eq!(
            apply(&mut data, &set("lock", json!({"acquire": "s2"})), 11).unwrap(),
            false
        );
        apply(&mut data, &json!({"op": "session_destroy", "id": "s1"}), 12).unwrap();
        assert!(data["kv"]["lock"].get("Session").is_none());
        assert_eq!(
            apply(&mut data, &set("lock", json!({"acquire": "s2"})), 13).unwrap(),
            true
        );
        assert_eq!(data["kv"]["lock"]["LockIndex"], 2);
    }
}
