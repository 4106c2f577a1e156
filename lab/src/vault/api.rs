//! The Vault twin's HTTP API. Node-local endpoints (init, seal-status, unseal, seal, health,
//! leader, raft join) are answered by every node, sealed or not; everything else goes
//! through the logical path: 503 while sealed, forwarded by a standby to the active node,
//! checked against the token, then served.

// Handlers return `Result<_, Response>` so `?` turns a refusal into the HTTP answer.
#![allow(clippy::result_large_err)]

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use base64::Engine;
use serde_json::{json, Value};

use super::barrier;
use super::{Node, VERSION};

type N = State<Arc<Node>>;
type Q = Query<HashMap<String, String>>;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

pub fn routes(node: Arc<Node>) -> Router {
    Router::new()
        .route("/v1/sys/init", get(init_status).put(init).post(init))
        .route("/v1/sys/seal-status", get(seal_status))
        .route("/v1/sys/unseal", post(unseal).put(unseal))
        .route("/v1/sys/seal", post(seal).put(seal))
        .route("/v1/sys/health", get(health).head(health))
        .route("/v1/sys/leader", get(leader))
        .route("/v1/sys/storage/raft/join", post(raft_join).put(raft_join))
        .fallback(logical)
        .layer(middleware::from_fn(no_store))
        .with_state(node)
}

/// Every answer carries `Cache-Control: no-store`; a wrong method gets Vault's 405 body.
async fn no_store(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    if response.status() == StatusCode::METHOD_NOT_ALLOWED {
        response = errors(StatusCode::METHOD_NOT_ALLOWED, &[]);
    }
    response
        .headers_mut()
        .insert("Cache-Control", HeaderValue::from_static("no-store"));
    response
}

// ----- responses -----

fn errors(status: StatusCode, messages: &[&str]) -> Response {
    // Any error that mentions the seal is a 503, whatever the handler chose.
    let status = if messages.iter().any(|m| m.contains("Vault is sealed")) {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        status
    };
    (status, axum::Json(json!({"errors": messages}))).into_response()
}

fn error(code: u16, message: &str) -> Response {
    errors(
        StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        &[message],
    )
}

fn ok(value: Value) -> Response {
    (StatusCode::OK, axum::Json(value)).into_response()
}

fn no_content() -> Response {
    StatusCode::NO_CONTENT.into_response()
}

/// The logical envelope around `data`.
fn envelope(data: Value) -> Response {
    ok(json!({
        "request_id": uuid::Uuid::new_v4().to_string(),
        "lease_id": "",
        "renewable": false,
        "lease_duration": 0,
        "data": data,
        "wrap_info": null,
        "warnings": null,
        "auth": null,
    }))
}

fn body_json(bytes: &Bytes) -> Result<Value, Response> {
    if bytes.is_empty() {
        return Ok(json!({}));
    }
    serde_json::from_slice(bytes)
        .map_err(|e| error(400, &format!("failed to parse JSON input: {e}")))
}

/// A body field matched without regard to case (Vault's untagged Go structs).
fn field<'a>(body: &'a Value, name: &str) -> Option<&'a Value> {
    body.as_object()?
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v)
}

fn token(headers: &HeaderMap) -> String {
    if let Some(t) = headers.get("X-Vault-Token").and_then(|v| v.to_str().ok()) {
        return t.trim().to_string();
    }
    headers
        .get("Authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(|t| t.trim().to_string())
        .unwrap_or_default()
}

/// Go's strconv.ParseBool through WeakDecode: empty is false, junk is an error.
fn parse_bool(value: &str) -> Option<bool> {
    match value {
        "" | "0" | "f" | "F" | "false" | "FALSE" | "False" => Some(false),
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Some(true),
        _ => None,
    }
}

// ----- node-local endpoints -----

async fn init_status(State(node): N) -> Response {
    ok(json!({"initialized": node.initialized()}))
}

async fn init(State(node): N, body: Bytes) -> Response {
    let body = match body_json(&body) {
        Ok(b) => b,
        Err(r) => return r,
    };
    if node.initialized() {
        return error(400, "Vault is already initialized");
    }
    let number = |name: &str| field(&body, name).and_then(Value::as_u64).unwrap_or(0) as usize;
    let (shares, threshold) = (number("secret_shares"), number("secret_threshold"));
    if field(&body, "pgp_keys").is_some_and(|k| !k.is_null()) {
        return error(400, "the lab's Vault twin does not encrypt keys with PGP");
    }
    match node.init(shares, threshold).await {
        Ok((keys, root_token)) => ok(json!({
            "keys": keys.iter().map(|k| barrier::hex(k)).collect::<Vec<_>>(),
            "keys_base64": keys.iter().map(|k| B64.encode(k)).collect::<Vec<_>>(),
            "root_token": root_token,
        })),
        Err(e) => error(400, &e),
    }
}

async fn seal_status(State(node): N) -> Response {
    hang_if_stuck(&node).await;
    ok(node.seal_status())
}

/// A joining node that a wrong share left holding its state lock answers nothing
/// (`Node::hang_on_a_wrong_join_key`).
async fn hang_if_stuck(node: &Node) {
    if node.join_stuck() {
        std::future::pending::<()>().await;
    }
}

async fn unseal(State(node): N, body: Bytes) -> Response {
    hang_if_stuck(&node).await;
    let body = match body_json(&body) {
        Ok(b) => b,
        Err(r) => return r,
    };
    let reset = field(&body, "reset")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    if reset {
        if !node.sealed() {
            return error(400, "vault is unsealed");
        }
        node.reset_progress();
        return ok(node.seal_status());
    }
    let key = field(&body, "key").and_then(Value::as_str).unwrap_or("");
    if key.is_empty() {
        return error(
            400,
            "'key' must be specified in request body as JSON, or 'reset' set to true",
        );
    }
    let Some(share) = barrier::parse_share(key) else {
        return error(400, "'key' must be a valid hex or base64 string");
    };
    // Run to its end even when the client goes away mid-call, as Go's net/http handler
    // does (vault/core.go `unsealWithRaft` answers the leader's challenge on its own
    // context): a dropped future would keep a challenge the leader has already used.
    let unsealing = tokio::spawn(async move { node.unseal(share).await });
    match unsealing.await {
        Ok(Ok(status)) => ok(status),
        Ok(Err((code, message))) => error(code, &message),
        Err(e) => error(500, &format!("the unseal stopped: {e}")),
    }
}

async fn seal(State(node): N, headers: HeaderMap) -> Response {
    hang_if_stuck(&node).await;
    if node.sealed() {
        return error(503, "Vault is sealed");
    }
    if !node.token_valid(&token(&headers)) {
        return error(403, "permission denied");
    }
    if node.standby() {
        return error(
            500,
            "vault cannot seal when in standby mode; please restart instead",
        );
    }
    node.seal();
    no_content()
}

async fn health(State(node): N, method: Method, Query(q): Q) -> Response {
    hang_if_stuck(&node).await;
    let code = |name: &str, default: u16| match q.get(name) {
        None => Some(default),
        Some(v) => v.parse::<u16>().ok(),
    };
    let flag = |name: &str| match q.get(name) {
        None => Some(false),
        Some(v) => parse_bool(v),
    };
    // A code that is not a number, or a flag that is not a bool: 400 with no message.
    let (Some(active), Some(standby), Some(sealed), Some(uninit), Some(standby_ok), Some(_)) = (
        code("activecode", 200),
        code("standbycode", 429),
        code("sealedcode", 503),
        code("uninitcode", 501),
        flag("standbyok"),
        flag("perfstandbyok"),
    ) else {
        return errors(StatusCode::BAD_REQUEST, &[]);
    };
    let initialized = node.initialized();
    let is_sealed = node.sealed();
    let is_standby = node.standby();
    let status = if !initialized {
        uninit
    } else if is_sealed {
        sealed
    } else if is_standby && !standby_ok {
        standby
    } else {
        active
    };
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
    if method == Method::HEAD {
        return status.into_response();
    }
    let mut body = json!({
        "initialized": initialized,
        "sealed": is_sealed,
        "standby": is_standby,
        "performance_standby": false,
        "replication_performance_mode": "disabled",
        "replication_dr_mode": "disabled",
        "server_time_utc": std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
        "version": VERSION,
        "enterprise": false,
        "echo_duration_ms": 0,
        "clock_skew_ms": 0,
        "replication_primary_canary_age_ms": 0,
    });
    if !is_sealed && initialized {
        body["cluster_name"] = json!(node.settings.cluster_name);
        body["cluster_id"] = node.seal_status()["cluster_id"].clone();
    }
    if is_standby {
        body["ha_connection_healthy"] = json!(node.leader_api().is_some());
        body["removed_from_cluster"] = json!(false);
    }
    (status, axum::Json(body)).into_response()
}

async fn leader(State(node): N) -> Response {
    let Some(cluster) = node.cluster() else {
        return ok(json!({
            "ha_enabled": false,
            "is_self": false,
            "active_time": "0001-01-01T00:00:00Z",
            "leader_address": "",
            "leader_cluster_address": "",
            "performance_standby": false,
            "performance_standby_last_remote_wal": 0,
        }));
    };
    if node.sealed() {
        return error(503, "Vault is sealed");
    }
    let leader = cluster.leader();
    ok(json!({
        "ha_enabled": true,
        "is_self": node.active(),
        "active_time": "0001-01-01T00:00:00Z",
        "leader_address": leader.as_ref().map(|l| l.http.clone()).unwrap_or_default(),
        "leader_cluster_address": leader.as_ref().map(|l| format!("https://{}", l.address)).unwrap_or_default(),
        "performance_standby": false,
        "performance_standby_last_remote_wal": 0,
        "raft_committed_index": cluster.index(),
        "raft_applied_index": cluster.index(),
    }))
}

async fn raft_join(State(node): N, body: Bytes) -> Response {
    let body = match body_json(&body) {
        Ok(b) => b,
        Err(r) => return r,
    };
    if node.cluster().is_none() {
        return error(500, "raft backend not in use");
    }
    if node.initialized() && !node.pending_join() {
        return ok(json!({"joined": true}));
    }
    if !node.sealed() {
        return error(500, "node must be sealed before joining");
    }
    if field(&body, "non_voter").and_then(Value::as_bool) == Some(true) {
        return error(400, "non-voting nodes not allowed");
    }
    let target = match super::JoinTarget::from_fields(|k| {
        field(&body, k)
            .and_then(Value::as_str)
            .filter(|v| !v.is_empty())
            .map(str::to_string)
    }) {
        Ok(t) => t,
        Err(e) => return error(400, &e),
    };
    if target.leader_api_addr.is_empty() {
        return error(
            400,
            "either leader_api_addr or auto_join must be provided (the lab's twin supports leader_api_addr)",
        );
    }
    if field(&body, "retry").and_then(Value::as_bool) == Some(true) {
        let n = node.clone();
        tokio::spawn(async move {
            while !n.initialized() {
                if n.join(&target).await.is_ok() {
                    return;
                }
                tokio::time::sleep(std::time::Duration::from_secs(2)).await;
            }
        });
        return ok(json!({"joined": true}));
    }
    match node.join(&target).await {
        Ok(()) => ok(json!({"joined": true})),
        Err(e) => error(500, &e),
    }
}

// ----- the logical path -----

/// A standby's answer to a logical request: http/handler.go puts the snapshot paths in
/// alwaysRedirectPaths, so a standby answers them with a 307 to the active node
/// (respondStandby); anything else it forwards.
async fn standby_answer(
    node: &Arc<Node>,
    path: &str,
    method: &Method,
    uri: &axum::http::Uri,
    headers: &axum::http::HeaderMap,
    body: Bytes,
) -> Response {
    let snapshot_path = matches!(
        path.trim_end_matches('/'),
        "sys/storage/raft/snapshot" | "sys/storage/raft/snapshot-force"
    );
    if snapshot_path {
        if let Some(active) = node.leader_api() {
            let target = format!(
                "{active}{}",
                uri.path_and_query().map_or(uri.path(), |pq| pq.as_str())
            );
            let mut reply = StatusCode::TEMPORARY_REDIRECT.into_response();
            if let Ok(location) = HeaderValue::from_str(&target) {
                reply.headers_mut().insert("Location", location);
            }
            return reply;
        }
    }
    forward(node, method, uri, headers, body).await
}

async fn logical(State(node): N, request: Request) -> Response {
    let method = request.method().clone();
    let uri = request.uri().clone();
    let headers = request.headers().clone();
    let Some(path) = uri.path().strip_prefix("/v1/").map(str::to_string) else {
        return errors(StatusCode::NOT_FOUND, &[]);
    };
    let body = match axum::body::to_bytes(request.into_body(), 32 << 20).await {
        Ok(b) => b,
        Err(_) => return error(413, "http: request body too large"),
    };
    if node.sealed() {
        return error(503, "Vault is sealed");
    }
    if node.standby() {
        return standby_answer(&node, &path, &method, &uri, &headers, body).await;
    }
    let query: HashMap<String, String> = uri
        .query()
        .map(|q| {
            q.split('&')
                .map(|kv| {
                    let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
                    (k.to_string(), v.to_string())
                })
                .collect()
        })
        .unwrap_or_default();
    let list = method.as_str() == "LIST"
        || (method == Method::GET && query.get("list").and_then(|v| parse_bool(v)) == Some(true));
    if !path.starts_with("sys/storage/raft/bootstrap/") && !node.token_valid(&token(&headers)) {
        return error(403, "permission denied");
    }
    // The snapshot's body is the archive, not JSON.
    if matches!(method.as_str(), "POST" | "PUT") {
        match path.trim_end_matches('/') {
            "sys/storage/raft/snapshot" => return restore_snapshot(&node, &body, false).await,
            "sys/storage/raft/snapshot-force" => return restore_snapshot(&node, &body, true).await,
            _ => {}
        }
    }
    let body = match body_json(&body) {
        Ok(b) => b,
        Err(r) => return r,
    };
    let path = path.trim_end_matches('/').to_string();
    match (method.as_str(), path.as_str()) {
        ("POST" | "PUT", "sys/storage/raft/bootstrap/challenge") => {
            let id = field(&body, "server_id")
                .and_then(Value::as_str)
                .unwrap_or("");
            if id.is_empty() {
                return error(400, "no server id provided");
            }
            if node.cluster().is_none() {
                return error(400, "raft storage is not in use");
            }
            match node.challenge(id) {
                Ok(v) => ok(v),
                Err(e) => error(500, &e),
            }
        }
        ("POST" | "PUT", "sys/storage/raft/bootstrap/answer") => match node.answer(&body).await {
            Ok(v) => ok(v),
            Err((code, e)) => error(code, &e),
        },
        // http/sys_seal.go handleSysStepDown -> vault/ha.go StepDown: 204 at once (the
        // step-down is only queued); a standby forwards it (above). With raft the HA lock's
        // Unlock is raft's LeadershipTransfer (physical/raft/raft.go RaftLock.Unlock), and
        // the old node keeps out for manualStepDownSleepPeriod (10 s, vault/core.go).
        // Without HA storage StepDown does nothing.
        ("POST" | "PUT", "sys/step-down") => {
            if let Some(cluster) = node.cluster() {
                cluster.transfer_leadership(Duration::from_secs(10));
            }
            StatusCode::NO_CONTENT.into_response()
        }
        ("GET", "sys/storage/raft/configuration") => raft_configuration(&node),
        ("POST" | "PUT", "sys/storage/raft/remove-peer") => remove_peer(&node, &body).await,
        ("GET", "sys/storage/raft/autopilot/state") => autopilot_state(&node),
        ("GET", "sys/storage/raft/snapshot") => snapshot(&node),
        ("GET", "sys/mounts") => {
            let mounts = node.read("core/mounts").unwrap_or(json!({}));
            envelope(mounts)
        }
        (_, p) if p.starts_with("sys/mounts/") => {
            mount(&node, &method, p.trim_start_matches("sys/mounts/"), &body).await
        }
        (_, p) if p.starts_with("sys/") => {
            error(404, "1 error occurred:\n\t* unsupported path\n\n")
        }
        _ => kv(&node, &method, list, &path, &query, &body).await,
    }
}

/// A standby hands the request to the active node and relays its answer.
async fn forward(
    node: &Node,
    method: &Method,
    uri: &axum::http::Uri,
    headers: &HeaderMap,
    body: Bytes,
) -> Response {
    let Some(leader) = node.leader_api() else {
        return error(
            500,
            "local node not active but active cluster node not found",
        );
    };
    let target = format!(
        "{leader}{}",
        uri.path_and_query().map_or(uri.path(), |pq| pq.as_str())
    );
    let method =
        reqwest::Method::from_bytes(method.as_str().as_bytes()).unwrap_or(reqwest::Method::GET);
    let mut request = node.client.request(method, target).body(body);
    for name in ["x-vault-token", "authorization", "content-type"] {
        if let Some(v) = headers.get(name) {
            request = request.header(name, v.as_bytes());
        }
    }
    let Ok(reply) = request.send().await else {
        return error(500, "error forwarding request to the active node");
    };
    let status = StatusCode::from_u16(reply.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
    let mut out = HeaderMap::new();
    if let Some(ct) = reply.headers().get("content-type") {
        out.insert("content-type", ct.clone());
    }
    let body = reply.bytes().await.unwrap_or_default();
    (status, out, body).into_response()
}

fn raft_configuration(node: &Node) -> Response {
    let Some(cluster) = node.cluster() else {
        return error(400, "raft storage is not in use");
    };
    let leader = cluster.leader().map(|l| l.id);
    let servers: Vec<Value> = cluster
        .config()
        .iter()
        .map(|s| {
            json!({
                "address": s.address,
                "leader": Some(&s.id) == leader.as_ref(),
                "node_id": s.id,
                "protocol_version": "3",
                "voter": s.voter,
            })
        })
        .collect();
    envelope(json!({"config": {"index": cluster.index(), "servers": servers}}))
}

async fn remove_peer(node: &Node, body: &Value) -> Response {
    let Some(cluster) = node.cluster() else {
        return error(400, "raft storage is not in use");
    };
    let id = field(body, "server_id")
        .and_then(Value::as_str)
        .unwrap_or("");
    if id.is_empty() {
        return error(400, "no server id provided");
    }
    // vault/logical_system_raft.go `handleRaftRemovePeerUpdate` hands the id to
    // raft-autopilot's `RemoveServer`, which ignores one it does not know: 204 for an
    // unknown or already removed id, as a real OpenBao 2.7.2 answers (Consul's and Nomad's
    // twins keep their own "not found" errors).
    if !cluster.config().iter().any(|s| s.id == id) {
        return no_content();
    }
    match cluster.remove_server(id).await {
        Ok(()) => no_content(),
        Err(e) => error(500, &e),
    }
}

/// `sys/storage/raft/autopilot/state` (raft-autopilot `state.go`): 404 until autopilot has
/// built its state, an update interval (2 s) after this node became the leader; `healthy`
/// only while every server, non-voters included, is healthy.
fn autopilot_state(node: &Node) -> Response {
    let Some(cluster) = node.cluster() else {
        return error(400, "raft storage is not in use");
    };
    if node
        .active_since()
        .is_none_or(|t| t.elapsed() < super::AUTOPILOT_UPDATE_INTERVAL)
    {
        return error(404, "");
    }
    let leader = cluster.leader().map(|l| l.id).unwrap_or_default();
    let config = cluster.config();
    let mut servers = serde_json::Map::new();
    let mut healthy_voters: usize = 0;
    let mut all_healthy = true;
    for s in &config {
        let contact = cluster.last_contact(&s.id);
        let healthy = contact.is_some_and(|c| c.as_secs_f64() < 5.0);
        all_healthy &= healthy;
        if healthy && s.voter {
            healthy_voters += 1;
        }
        let status = if s.id == leader {
            "leader"
        } else if s.voter {
            "voter"
        } else {
            "non-voter"
        };
        servers.insert(
            s.id.clone(),
            json!({
                "id": s.id,
                "name": s.id,
                "address": s.address,
                "node_status": if contact.is_some() { "alive" } else { "left" },
                "last_contact": contact.map(|c| format!("{}ms", c.as_millis())).unwrap_or_else(|| "0s".into()),
                "last_term": 0,
                "last_index": cluster.index(),
                "healthy": healthy,
                "stable_since": "0001-01-01T00:00:00Z",
                "status": status,
                "version": VERSION,
                "node_type": if s.voter { "voter" } else { "non-voter" },
            }),
        );
    }
    let voters: Vec<&String> = config.iter().filter(|s| s.voter).map(|s| &s.id).collect();
    let quorum = voters.len() / 2 + 1;
    envelope(json!({
        "healthy": all_healthy,
        "failure_tolerance": healthy_voters.saturating_sub(quorum),
        "leader": leader,
        "voters": voters,
        "non_voters": config.iter().filter(|s| !s.voter).map(|s| &s.id).collect::<Vec<_>>(),
        "servers": servers,
    }))
}

/// A raft snapshot as Vault sends one: the archive (lab/src/snapshot.rs) with
/// SHA256SUMS.sealed, the sums encrypted under the barrier key, which the official client
/// insists on.
fn snapshot(node: &Node) -> Response {
    let Some(cluster) = node.cluster() else {
        return error(400, "raft storage is not in use");
    };
    if node.seal_sums(b"").is_none() {
        return error(503, "Vault is sealed");
    }
    let made = crate::snapshot::make(cluster, |sums| {
        node.seal_sums(sums)
            .map(|sealed| vec![("SHA256SUMS.sealed", sealed)])
            .unwrap_or_default()
    });
    match made {
        Ok(bytes) => (StatusCode::OK, bytes).into_response(),
        Err(e) => error(500, &e),
    }
}

/// vault/logical_system_raft.go handleStorageRaftSnapshotWrite: the body is the archive.
/// Its sealed sums must open with this cluster's seal (a snapshot of another cluster, with
/// other unseal keys, is refused with 400) unless the request is snapshot-force; 204 on
/// success.
async fn restore_snapshot(node: &Node, bytes: &[u8], force: bool) -> Response {
    let Some(cluster) = node.cluster() else {
        return error(400, "raft storage is not in use");
    };
    let opened = match crate::snapshot::open(bytes, &["SHA256SUMS.sealed"]) {
        Ok(o) => o,
        Err(e) => return error(400, &e),
    };
    let verified = opened
        .files
        .get("SHA256SUMS.sealed")
        .and_then(|sealed| node.open_sums(sealed))
        .is_some_and(|sums| Some(&sums) == opened.files.get("SHA256SUMS"));
    if !verified && !force {
        return error(
            400,
            "could not verify hash file, possibly the snapshot is using a different set of unseal keys; use the snapshot-force API to bypass this check",
        );
    }
    match cluster
        .write(super::storage::Op::Restore {
            state: opened.state,
        })
        .await
    {
        Ok(_) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => error(500, &e.to_string()),
    }
}

// ----- mounts and KV version 2 -----

async fn mount(node: &Node, method: &Method, path: &str, body: &Value) -> Response {
    let path = format!("{}/", path.trim_end_matches('/'));
    let mut mounts = node.read("core/mounts").unwrap_or(json!({}));
    match method.as_str() {
        "POST" | "PUT" => {
            if mounts.get(&path).is_some() {
                return error(400, &format!("path is already in use at {path}"));
            }
            let kind = field(body, "type").and_then(Value::as_str).unwrap_or("");
            let version = body["options"]["version"].as_str().unwrap_or("1");
            if !(kind == "kv-v2" || (kind == "kv" && version == "2")) {
                return error(
                    400,
                    &format!("the lab's Vault twin mounts kv version 2 only, not {kind:?} version {version}"),
                );
            }
            mounts[&path] = json!({
                "type": "kv",
                "options": {"version": "2"},
                "uuid": uuid::Uuid::new_v4().to_string(),
                "description": field(body, "description").cloned().unwrap_or(json!("")),
            });
        }
        "DELETE" => {
            if let Some(m) = mounts.as_object_mut().and_then(|o| o.remove(&path)) {
                let prefix = format!("logical/{}/", m["uuid"].as_str().unwrap_or_default());
                for key in node.storage.keys(&prefix) {
                    if let Err(e) = node.delete(&key).await {
                        return error(500, &e);
                    }
                }
            }
        }
        _ => return errors(StatusCode::METHOD_NOT_ALLOWED, &[]),
    }
    match node.write("core/mounts", &mounts).await {
        Ok(()) => no_content(),
        Err(e) => error(500, &e),
    }
}

fn now_rfc3339() -> String {
    humantime::format_rfc3339_nanos(std::time::SystemTime::now()).to_string()
}

async fn kv(
    node: &Node,
    method: &Method,
    list: bool,
    path: &str,
    query: &HashMap<String, String>,
    body: &Value,
) -> Response {
    let mounts = node.read("core/mounts").unwrap_or(json!({}));
    let Some((mount, entry)) = mounts.as_object().and_then(|o| {
        o.iter()
            .find(|(m, _)| path.starts_with(m.as_str()) || format!("{path}/") == **m)
    }) else {
        return error(
            404,
            &format!("no handler for route \"{path}\". route entry not found."),
        );
    };
    let rest = path.strip_prefix(mount.as_str()).unwrap_or("");
    let uuid = entry["uuid"].as_str().unwrap_or_default();
    let (kind, secret) = rest.split_once('/').unwrap_or((rest, ""));
    let key = format!("logical/{uuid}/{secret}");
    let record = node.read(&key);
    match (kind, method.as_str(), list) {
        ("metadata", _, true) => kv_list(node, uuid, secret),
        ("data", "GET", false) => kv_read(record, query),
        ("data", "POST" | "PUT", _) => kv_write(node, &key, record, body).await,
        ("data", "DELETE", _) => {
            if let Some(mut r) = record {
                let current = r["current_version"].as_u64().unwrap_or(0).to_string();
                if r["versions"][&current].is_object() {
                    r["versions"][&current]["deletion_time"] = json!(now_rfc3339());
                }
                if let Err(e) = node.write(&key, &r).await {
                    return error(500, &e);
                }
            }
            no_content()
        }
        ("metadata", "GET", false) => {
            let Some(r) = record else {
                return errors(StatusCode::NOT_FOUND, &[]);
            };
            let versions: serde_json::Map<String, Value> = r["versions"]
                .as_object()
                .map(|o| {
                    o.iter()
                        .map(|(k, v)| {
                            (
                                k.clone(),
                                json!({
                                    "created_time": v["created_time"],
                                    "deletion_time": v["deletion_time"],
                                    "destroyed": v["destroyed"],
                                }),
                            )
                        })
                        .collect()
                })
                .unwrap_or_default();
            envelope(json!({
                "cas_required": false,
                "created_time": r["created_time"],
                "current_version": r["current_version"],
                "custom_metadata": null,
                "delete_version_after": "0s",
                "max_versions": 0,
                "oldest_version": 0,
                "updated_time": r["updated_time"],
                "versions": versions,
            }))
        }
        ("metadata", "DELETE", _) => match node.delete(&key).await {
            Ok(()) => no_content(),
            Err(e) => error(500, &e),
        },
        _ => error(
            404,
            &format!("no handler for route \"{path}\". route entry not found."),
        ),
    }
}

/// LIST of a KV v2 mount's metadata: the keys under `secret/`, one level deep.
fn kv_list(node: &Node, uuid: &str, secret: &str) -> Response {
    let prefix = if secret.is_empty() {
        format!("logical/{uuid}/")
    } else {
        format!("logical/{uuid}/{}/", secret.trim_end_matches('/'))
    };
    let mut keys: Vec<String> = node
        .storage
        .keys(&prefix)
        .iter()
        .filter_map(|k| {
            let rest = k.strip_prefix(&prefix)?;
            Some(match rest.split_once('/') {
                Some((dir, _)) => format!("{dir}/"),
                None => rest.to_string(),
            })
        })
        .collect();
    keys.dedup();
    if keys.is_empty() {
        return errors(StatusCode::NOT_FOUND, &[]);
    }
    envelope(json!({"keys": keys}))
}

/// GET of a KV v2 secret's data, the current version or `?version=`.
fn kv_read(record: Option<Value>, query: &HashMap<String, String>) -> Response {
    let Some(record) = record else {
        return errors(StatusCode::NOT_FOUND, &[]);
    };
    let version = match query.get("version").map(|v| v.parse::<u64>()) {
        None | Some(Ok(0)) => record["current_version"].as_u64().unwrap_or(0),
        Some(Ok(v)) => v,
        Some(Err(_)) => return error(400, "invalid version"),
    };
    let v = &record["versions"][version.to_string()];
    if v.is_null() {
        return errors(StatusCode::NOT_FOUND, &[]);
    }
    let gone = v["deletion_time"] != "" || v["destroyed"] == true;
    let metadata = json!({
        "created_time": v["created_time"],
        "custom_metadata": null,
        "deletion_time": v["deletion_time"],
        "destroyed": v["destroyed"],
        "version": version,
    });
    if gone {
        return (
            StatusCode::NOT_FOUND,
            axum::Json(json!({"errors": [], "data": {"data": null, "metadata": metadata}})),
        )
            .into_response();
    }
    envelope(json!({"data": v["data"], "metadata": metadata}))
}

/// POST or PUT of a KV v2 secret's data: a new version (check-and-set with `options.cas`).
async fn kv_write(node: &Node, key: &str, mut record: Option<Value>, body: &Value) -> Response {
    let Some(data) = body.get("data").filter(|d| d.is_object()) else {
        return error(400, "no data provided");
    };
    let mut r = record
        .take()
        .unwrap_or(json!({"current_version": 0, "versions": {}, "created_time": now_rfc3339()}));
    let current = r["current_version"].as_u64().unwrap_or(0);
    if let Some(cas) = body["options"]["cas"].as_u64() {
        if cas != current {
            return error(
                400,
                "check-and-set parameter did not match the current version",
            );
        }
    }
    let version = current + 1;
    let created = now_rfc3339();
    r["versions"][version.to_string()] = json!({
        "data": data, "created_time": created, "deletion_time": "", "destroyed": false,
    });
    r["current_version"] = json!(version);
    r["updated_time"] = json!(created);
    if let Err(e) = node.write(key, &r).await {
        return error(500, &e);
    }
    envelope(json!({
        "created_time": created, "custom_metadata": null, "deletion_time": "",
        "destroyed": false, "version": version,
    }))
}
