//! The Consul twin's HTTP API: paths, methods, status codes, plain-text errors and field
//! names as in the API facts (../shared/reference/apifacts/consul.md).

// Handlers return `Result<_, Response>` so `?` turns a refusal into the HTTP answer; axum's
// Response is large, but these are cold paths in a test double.
#![allow(clippy::result_large_err)]

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use axum::body::Bytes;
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, put};
use axum::Router;
use serde_json::{json, Value};

use super::state::{
    decode_value, encode_value, Check, Checks, KvEntry, Nodes, Op, Services, Session,
};
use super::{Agent, LocalCheck};
use crate::cluster::{table, MemberStatus};

type Q = Query<HashMap<String, String>>;
type A = State<Arc<Agent>>;

pub fn routes(agent: Arc<Agent>) -> Router {
    Router::new()
        .route("/v1/agent/self", get(agent_self))
        .route("/v1/agent/members", get(members))
        .route("/v1/agent/join/{address}", put(join))
        .route("/v1/agent/leave", put(leave))
        .route("/v1/agent/reload", put(reload))
        .route("/v1/agent/force-leave/{node}", put(force_leave))
        .route("/v1/agent/services", get(agent_services))
        .route("/v1/agent/checks", get(agent_checks))
        .route("/v1/agent/service/register", put(register_service))
        .route("/v1/agent/service/deregister/{id}", put(deregister_service))
        .route("/v1/agent/check/register", put(register_check))
        .route("/v1/agent/check/deregister/{id}", put(deregister_check))
        .route("/v1/agent/check/pass/{id}", put(check_pass))
        .route("/v1/agent/check/warn/{id}", put(check_warn))
        .route("/v1/agent/check/fail/{id}", put(check_fail))
        .route("/v1/agent/check/update/{id}", put(check_update))
        .route("/v1/status/leader", get(status_leader))
        .route("/v1/status/peers", get(status_peers))
        .route("/v1/operator/raft/configuration", get(raft_configuration))
        .route("/v1/operator/raft/peer", delete(raft_remove_peer))
        .route("/v1/operator/autopilot/health", get(autopilot_health))
        .route("/v1/snapshot", get(snapshot_save).put(snapshot_restore))
        .route("/v1/catalog/datacenters", get(datacenters))
        .route("/v1/catalog/nodes", get(catalog_nodes))
        .route("/v1/catalog/services", get(catalog_services))
        .route("/v1/catalog/service/{name}", get(catalog_service))
        .route("/v1/health/service/{name}", get(health_service))
        .route("/v1/health/state/{state}", get(health_state))
        .route("/v1/health/node/{node}", get(health_node))
        .route("/v1/health/checks/{service}", get(health_checks))
        .route(
            "/v1/kv/",
            get(kv_get_root).put(kv_put_root).delete(kv_delete_root),
        )
        .route("/v1/kv/{*key}", get(kv_get).put(kv_put).delete(kv_delete))
        .route("/v1/session/create", put(session_create))
        .route("/v1/session/destroy/{id}", put(session_destroy))
        .route("/v1/session/renew/{id}", put(session_renew))
        .route("/v1/session/info/{id}", get(session_info))
        .route("/v1/session/list", get(session_list))
        .layer(middleware::from_fn_with_state(agent.clone(), forward_reads))
        .with_state(agent)
}

/// Consul's default consistency: a follower hands catalog, health, KV and session reads
/// to the leader; `?stale` reads the local copy. Without a known leader the handler
/// itself answers "No cluster leader". Autopilot's server health is the leader's too
/// (agent/consul/operator_autopilot_endpoint.go ServerHealth forwards the RPC): only the
/// leader tracks its contact with each server.
async fn forward_reads(State(agent): A, request: Request, next: Next) -> Response {
    let path = request.uri().path();
    let replicated = [
        "/v1/kv/",
        "/v1/catalog/",
        "/v1/health/",
        "/v1/session/",
        "/v1/operator/autopilot/health",
    ]
    .iter()
    .any(|prefix| path.starts_with(prefix))
        && path != "/v1/catalog/datacenters";
    let stale = request.uri().query().is_some_and(|q| {
        q.split('&')
            .any(|pair| pair == "stale" || pair.starts_with("stale="))
    });
    if request.method() != Method::GET
        || !replicated
        || (stale && agent.settings.server)
        || agent.cluster.is_leader()
        || agent.cluster.leader().is_none()
    {
        return next.run(request).await;
    }
    let target = request
        .uri()
        .path_and_query()
        .map_or(path.to_string(), |pq| pq.to_string());
    let Some(reply) = agent.cluster.forward_read(&target, request.headers()).await else {
        return text(StatusCode::INTERNAL_SERVER_ERROR, "No cluster leader");
    };
    let status =
        StatusCode::from_u16(reply.status().as_u16()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut headers = HeaderMap::new();
    for (name, value) in reply.headers() {
        if name.as_str().starts_with("x-consul-") || name.as_str() == "content-type" {
            headers.insert(name.clone(), value.clone());
        }
    }
    let body = reply.bytes().await.unwrap_or_default();
    (status, headers, body).into_response()
}

// ----- responses -----

fn text(status: StatusCode, message: impl Into<String>) -> Response {
    (status, message.into()).into_response()
}

fn empty() -> Response {
    StatusCode::OK.into_response()
}

/// JSON with the blocking-query headers Consul sets on catalog, health and KV reads.
fn indexed(agent: &Agent, value: Value) -> Response {
    let mut response = axum::Json(value).into_response();
    add_index_headers(agent, response.headers_mut());
    response
}

fn add_index_headers(agent: &Agent, headers: &mut HeaderMap) {
    let index = agent.cluster.index().max(1);
    headers.insert("X-Consul-Index", HeaderValue::from(index));
    let known = agent.cluster.leader().is_some();
    headers.insert(
        "X-Consul-KnownLeader",
        HeaderValue::from_static(if known { "true" } else { "false" }),
    );
    headers.insert("X-Consul-LastContact", HeaderValue::from_static("0"));
}

fn flag(q: &HashMap<String, String>, name: &str) -> bool {
    q.contains_key(name)
}

/// The request's token: `?token=`, then `X-Consul-Token`, then `Authorization: Bearer`.
fn token(headers: &HeaderMap, q: &HashMap<String, String>) -> Option<String> {
    if let Some(t) = q.get("token").filter(|t| !t.is_empty()) {
        return Some(t.clone());
    }
    if let Some(t) = headers.get("X-Consul-Token").and_then(|v| v.to_str().ok()) {
        if !t.is_empty() {
            return Some(t.to_string());
        }
    }
    headers
        .get("Authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(|t| t.trim().to_string())
}

/// ACLs: with `acl { enabled = true }` only the management token may act (a lab needs
/// no finer policies); an unknown token is "ACL not found", none is "Permission denied".
fn authorize(
    agent: &Agent,
    headers: &HeaderMap,
    q: &HashMap<String, String>,
) -> Result<(), Response> {
    let s = &agent.settings;
    if !s.acl_enabled {
        return Ok(());
    }
    match token(headers, q) {
        Some(t) if Some(&t) == s.management_token.as_ref() => Ok(()),
        Some(_) => Err(text(StatusCode::FORBIDDEN, "ACL not found")),
        None if s.default_allow => Ok(()),
        None => Err(text(StatusCode::FORBIDDEN, "Permission denied")),
    }
}

macro_rules! authorize {
    ($agent:expr, $headers:expr, $q:expr) => {
        if let Err(r) = authorize(&$agent, &$headers, &$q) {
            return r;
        }
    };
}

/// Reads need a leader unless `?stale` (Consul's default consistency).
fn need_leader(agent: &Agent, q: &HashMap<String, String>) -> Result<(), Response> {
    if flag(q, "stale") || agent.cluster.leader().is_some() {
        Ok(())
    } else {
        Err(text(StatusCode::INTERNAL_SERVER_ERROR, "No cluster leader"))
    }
}

macro_rules! need_leader {
    ($agent:expr, $q:expr) => {
        if let Err(r) = need_leader(&$agent, &$q) {
            return r;
        }
    };
}

/// A body field in PascalCase or snake_case (`Name` / `name`).
fn field<'a>(body: &'a Value, name: &str) -> Option<&'a Value> {
    body.get(name)
        .or_else(|| body.get(name.to_lowercase()))
        .or_else(|| {
            let snake: String = name
                .chars()
                .enumerate()
                .flat_map(|(i, c)| {
                    if c.is_uppercase() && i > 0 {
                        vec!['_', c.to_ascii_lowercase()]
                    } else {
                        vec![c.to_ascii_lowercase()]
                    }
                })
                .collect();
            body.get(snake)
        })
        .filter(|v| !v.is_null())
}

fn parse_body(bytes: &Bytes) -> Result<Value, Response> {
    if bytes.is_empty() {
        return Ok(json!({}));
    }
    serde_json::from_slice(bytes).map_err(|e| {
        text(
            StatusCode::BAD_REQUEST,
            format!("Request decode failed: {e}"),
        )
    })
}

fn member_status_code(status: MemberStatus) -> u8 {
    match status {
        MemberStatus::Alive => 1,
        MemberStatus::Leaving => 2,
        MemberStatus::Left => 3,
        MemberStatus::Failed => 4,
    }
}

// ----- agent -----

async fn agent_self(State(agent): A, headers: HeaderMap, q: Q) -> Response {
    authorize!(agent, headers, q);
    let s = &agent.settings;
    let me = agent
        .cluster
        .members()
        .into_iter()
        .find(|m| m.name == s.node_name);
    let leader = agent.cluster.leader();
    axum::Json(json!({
        "Config": {
            "Datacenter": s.datacenter,
            "PrimaryDatacenter": s.datacenter,
            "NodeName": s.node_name,
            "NodeID": s.node_id,
            "Revision": "lab",
            "Server": s.server,
            "Version": "1.8.7",
        },
        // agent/config/builder.go: `bootstrap_expect = 1` is loaded as Bootstrap mode,
        // BootstrapExpect 0 ("BootstrapExpect is set to 1; this is the same as Bootstrap
        // mode").
        "DebugConfig": {
            "Bootstrap": s.bootstrap_expect == 1,
            "BootstrapExpect": if s.bootstrap_expect == 1 { 0 } else { s.bootstrap_expect },
            "RetryJoinLAN": s.retry_join,
        },
        "Coord": {"Adjustment": 0, "Error": 1.5, "Vec": [0, 0, 0, 0, 0, 0, 0, 0]},
        "Member": me.map(|m| member_json(&m)),
        "Stats": {
            "consul": {
                "server": s.server.to_string(),
                "leader": agent.cluster.is_leader().to_string(),
                "leader_addr": leader.map(|l| l.address).unwrap_or_default(),
                "bootstrap": (s.bootstrap_expect == 1).to_string(),
                "known_datacenters": "1",
            },
            "raft": {"num_peers": agent.cluster.config().len().saturating_sub(1).to_string()},
            "agent": {"checks": agent.local().checks.len().to_string(), "services": agent.local().services.len().to_string()},
        },
        "Meta": {},
    }))
    .into_response()
}

fn member_json(m: &crate::cluster::Member) -> Value {
    json!({
        "Name": m.name,
        "Addr": m.addr,
        "Port": 8301,
        "Tags": m.tags,
        "Status": member_status_code(m.status),
        "ProtocolMin": 1, "ProtocolMax": 5, "ProtocolCur": 2,
        "DelegateMin": 2, "DelegateMax": 5, "DelegateCur": 4,
    })
}

async fn members(State(agent): A, headers: HeaderMap, q: Q) -> Response {
    authorize!(agent, headers, q);
    if flag(&q, "wan") {
        return axum::Json(json!([])).into_response();
    }
    let list: Vec<Value> = agent.cluster.members().iter().map(member_json).collect();
    axum::Json(Value::Array(list)).into_response()
}

async fn join(State(agent): A, headers: HeaderMap, q: Q, Path(address): Path<String>) -> Response {
    authorize!(agent, headers, q);
    match agent
        .cluster
        .join_member(&agent.settings.peer_url(&address))
        .await
    {
        Ok(()) => empty(),
        Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

async fn leave(State(agent): A, headers: HeaderMap, q: Q) -> Response {
    authorize!(agent, headers, q);
    agent.cluster.leave().await;
    let a = agent.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(100)).await;
        a.shutdown.notify_waiters();
        tokio::time::sleep(Duration::from_millis(300)).await;
        std::process::exit(0);
    });
    empty()
}

/// agent/agent_endpoint.go AgentReload: agent:write, then the agent reads its config files
/// again and answers 200 with no body (real Consul 1.8.7 answered 200 here even with a
/// config file it could not parse). The twin reads its config only at start, so a check
/// file written beside it is accepted here but not run: the script check is tested on real
/// Consul (tests/it/dist.rs).
async fn reload(State(agent): A, headers: HeaderMap, q: Q) -> Response {
    authorize!(agent, headers, q);
    empty()
}

async fn force_leave(
    State(agent): A,
    headers: HeaderMap,
    q: Q,
    Path(node): Path<String>,
) -> Response {
    authorize!(agent, headers, q);
    match agent.cluster.force_leave(&node, flag(&q, "prune")).await {
        Ok(()) => empty(),
        Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

async fn agent_services(State(agent): A, headers: HeaderMap, q: Q) -> Response {
    authorize!(agent, headers, q);
    let services: serde_json::Map<String, Value> = agent
        .local()
        .services
        .iter()
        .map(|(id, s)| (id.clone(), s.clone()))
        .collect();
    axum::Json(Value::Object(services)).into_response()
}

async fn agent_checks(State(agent): A, headers: HeaderMap, q: Q) -> Response {
    authorize!(agent, headers, q);
    let checks: serde_json::Map<String, Value> = agent
        .local()
        .checks
        .iter()
        .map(|(id, c)| (id.clone(), c.def.clone()))
        .collect();
    axum::Json(Value::Object(checks)).into_response()
}

fn parse_ttl(value: Option<&Value>) -> Result<Option<Duration>, String> {
    match value.and_then(Value::as_str) {
        None | Some("") => Ok(None),
        Some(s) => humantime::parse_duration(s)
            .map(Some)
            .map_err(|_| format!("Invalid check: TTL must be a duration, got {s:?}")),
    }
}

/// A check definition in the catalog's shape.
fn check_def(
    agent: &Agent,
    body: &Value,
    service: Option<(&str, &str, &Value)>,
    default_id: String,
    default_name: String,
) -> Result<(Value, Option<Duration>), Response> {
    if (field(body, "Args").is_some() || field(body, "ScriptArgs").is_some())
        && !agent.settings.enable_script_checks
    {
        return Err(text(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Scripts are disabled on this agent from remote calls; to enable, configure 'enable_script_checks' to true",
        ));
    }
    let status = field(body, "Status")
        .and_then(Value::as_str)
        .unwrap_or("critical");
    if !matches!(status, "passing" | "warning" | "critical") {
        return Err(text(
            StatusCode::BAD_REQUEST,
            "Status for checks must 'passing', 'warning', 'critical'",
        ));
    }
    let ttl = parse_ttl(field(body, "TTL")).map_err(|e| text(StatusCode::BAD_REQUEST, e))?;
    let kind = if ttl.is_some() {
        "ttl"
    } else if field(body, "HTTP").is_some() {
        "http"
    } else if field(body, "TCP").is_some() {
        "tcp"
    } else if field(body, "Args").is_some() || field(body, "ScriptArgs").is_some() {
        "script"
    } else {
        ""
    };
    let (service_id, service_name, service_tags) = match service {
        Some((id, name, tags)) => (id.to_string(), name.to_string(), tags.clone()),
        None => (String::new(), String::new(), json!([])),
    };
    // What the agent runs, as `/v1/agent/checks` shows it (structs.HealthCheckDefinition).
    let definition = if kind == "http" {
        let interval = parse_ttl(field(body, "Interval"))
            .map_err(|_| {
                text(
                    StatusCode::BAD_REQUEST,
                    "Invalid check: Interval must be a duration",
                )
            })?
            .ok_or_else(|| {
                text(
                    StatusCode::BAD_REQUEST,
                    "Interval must be > 0 for Script, HTTP, or TCP checks",
                )
            })?;
        json!({
            "HTTP": field(body, "HTTP"),
            "TLSSkipVerify": field(body, "TLSSkipVerify").and_then(Value::as_bool).unwrap_or(false),
            "Interval": format!("{}s", interval.as_secs_f64()),
            "Timeout": field(body, "Timeout").and_then(Value::as_str).unwrap_or("10s"),
        })
    } else {
        json!({})
    };
    let def = json!({
        "Node": agent.settings.node_name,
        "CheckID": field(body, "CheckID").or(field(body, "ID")).and_then(Value::as_str).unwrap_or(&default_id),
        "Name": field(body, "Name").and_then(Value::as_str).unwrap_or(&default_name),
        "Status": status,
        "Notes": field(body, "Notes").and_then(Value::as_str).unwrap_or(""),
        "Output": "",
        "ServiceID": service_id,
        "ServiceName": service_name,
        "ServiceTags": service_tags,
        "Type": kind,
        "Definition": definition,
        "Namespace": "default",
    });
    Ok((def, ttl))
}

fn add_check(agent: &Agent, def: Value, ttl: Option<Duration>) {
    let id = def["CheckID"].as_str().unwrap_or_default().to_string();
    agent.local().checks.insert(
        id,
        LocalCheck {
            def,
            deadline: ttl.map(|t| Instant::now() + t),
            ttl: ttl.map(|t| t.as_millis() as u64),
            next_probe: None,
        },
    );
}

async fn register_service(State(agent): A, headers: HeaderMap, q: Q, body: Bytes) -> Response {
    authorize!(agent, headers, q);
    let body = match parse_body(&body) {
        Ok(b) => b,
        Err(r) => return r,
    };
    let Some(name) = field(&body, "Name")
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
    else {
        return text(StatusCode::BAD_REQUEST, "Missing service name");
    };
    let id = field(&body, "ID")
        .and_then(Value::as_str)
        .unwrap_or(name)
        .to_string();
    let address = field(&body, "Address")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    if address == "0.0.0.0" || address == "::" || address == "[::]" {
        return text(StatusCode::BAD_REQUEST, "Invalid service address");
    }
    let tags = field(&body, "Tags").cloned().unwrap_or(json!([]));
    let service = json!({
        "ID": id,
        "Service": name,
        "Tags": tags,
        "Meta": field(&body, "Meta").cloned().unwrap_or(json!({})),
        "Port": field(&body, "Port").and_then(Value::as_i64).unwrap_or(0),
        "Address": address,
        "Weights": field(&body, "Weights").cloned().unwrap_or(json!({"Passing": 1, "Warning": 1})),
        "EnableTagOverride": field(&body, "EnableTagOverride").and_then(Value::as_bool).unwrap_or(false),
        "Datacenter": agent.settings.datacenter,
    });
    let mut checks = Vec::new();
    if let Some(check) = field(&body, "Check") {
        checks.push(check.clone());
    }
    if let Some(Value::Array(list)) = field(&body, "Checks") {
        checks.extend(list.iter().cloned());
    }
    let mut defs = Vec::new();
    let many = checks.len() > 1;
    for (i, check) in checks.iter().enumerate() {
        let default_id = if many {
            format!("service:{id}:{}", i + 1)
        } else {
            format!("service:{id}")
        };
        match check_def(
            &agent,
            check,
            Some((&id, name, &tags)),
            default_id,
            format!("Service '{name}' check"),
        ) {
            Ok(def) => defs.push(def),
            Err(r) => return r,
        }
    }
    {
        let mut local = agent.local();
        if flag(&q, "replace-existing-checks") {
            local
                .checks
                .retain(|_, c| c.def["ServiceID"] != id.as_str());
        }
        local.services.insert(id.clone(), service);
    }
    for (def, ttl) in defs {
        add_check(&agent, def, ttl);
    }
    agent.save_local();
    agent.sync().await;
    empty()
}

async fn deregister_service(
    State(agent): A,
    headers: HeaderMap,
    q: Q,
    Path(id): Path<String>,
) -> Response {
    authorize!(agent, headers, q);
    {
        let mut local = agent.local();
        if local.services.remove(&id).is_none() {
            // Consul 1.8.7 (what the lab mimics, checked by the conformance suite) answers
            // 200 and removes nothing: the story's silent stale registration. Newer
            // versions answer 404 "Unknown service ID" (lab/README.md).
            return StatusCode::OK.into_response();
        }
        local
            .checks
            .retain(|_, c| c.def["ServiceID"] != id.as_str());
    }
    agent.save_local();
    agent.sync().await;
    empty()
}

async fn register_check(State(agent): A, headers: HeaderMap, q: Q, body: Bytes) -> Response {
    authorize!(agent, headers, q);
    let body = match parse_body(&body) {
        Ok(b) => b,
        Err(r) => return r,
    };
    let Some(name) = field(&body, "Name")
        .and_then(Value::as_str)
        .map(str::to_string)
    else {
        return text(StatusCode::BAD_REQUEST, "Missing check name");
    };
    let service = match field(&body, "ServiceID").and_then(Value::as_str) {
        Some(sid) if !sid.is_empty() => match agent.local().services.get(sid) {
            Some(s) => Some((
                sid.to_string(),
                s["Service"].as_str().unwrap_or_default().to_string(),
                s["Tags"].clone(),
            )),
            None => {
                return text(
                    StatusCode::NOT_FOUND,
                    format!("ServiceID {sid:?} does not exist"),
                )
            }
        },
        _ => None,
    };
    let default_id = name.clone();
    let service_ref = service
        .as_ref()
        .map(|(a, b, c)| (a.as_str(), b.as_str(), c));
    let (def, ttl) = match check_def(&agent, &body, service_ref, default_id, name) {
        Ok(d) => d,
        Err(r) => return r,
    };
    add_check(&agent, def, ttl);
    agent.save_local();
    agent.sync().await;
    empty()
}

async fn deregister_check(
    State(agent): A,
    headers: HeaderMap,
    q: Q,
    Path(id): Path<String>,
) -> Response {
    authorize!(agent, headers, q);
    if agent.local().checks.remove(&id).is_none() {
        return text(
            StatusCode::NOT_FOUND,
            format!(
                "Unknown check ID {id:?}. Ensure that the check ID is passed, not the check name."
            ),
        );
    }
    agent.save_local();
    agent.sync().await;
    empty()
}

async fn set_check(agent: Arc<Agent>, id: String, status: &str, output: String) -> Response {
    {
        let mut local = agent.local();
        let Some(check) = local.checks.get_mut(&id) else {
            return text(StatusCode::NOT_FOUND, format!("Unknown check ID {id:?}. Ensure that the check ID is passed, not the check name."));
        };
        check.def["Status"] = json!(status);
        check.def["Output"] = json!(output);
        if let Some(ttl) = check.ttl {
            check.deadline = Some(Instant::now() + Duration::from_millis(ttl));
        }
    }
    agent.save_local();
    agent.sync().await;
    empty()
}

async fn check_pass(State(agent): A, headers: HeaderMap, q: Q, Path(id): Path<String>) -> Response {
    authorize!(agent, headers, q);
    let note = q.get("note").cloned().unwrap_or_default();
    set_check(agent, id, "passing", note).await
}

async fn check_warn(State(agent): A, headers: HeaderMap, q: Q, Path(id): Path<String>) -> Response {
    authorize!(agent, headers, q);
    let note = q.get("note").cloned().unwrap_or_default();
    set_check(agent, id, "warning", note).await
}

async fn check_fail(State(agent): A, headers: HeaderMap, q: Q, Path(id): Path<String>) -> Response {
    authorize!(agent, headers, q);
    let note = q.get("note").cloned().unwrap_or_default();
    set_check(agent, id, "critical", note).await
}

async fn check_update(
    State(agent): A,
    headers: HeaderMap,
    q: Q,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    authorize!(agent, headers, q);
    let body = match parse_body(&body) {
        Ok(b) => b,
        Err(r) => return r,
    };
    let status = field(&body, "Status")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    if !matches!(status.as_str(), "passing" | "warning" | "critical") {
        return text(
            StatusCode::BAD_REQUEST,
            format!("Invalid check status: '{status}'"),
        );
    }
    let output = field(&body, "Output")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    set_check(agent, id, &status, output).await
}

// ----- status and operator -----

async fn status_leader(State(agent): A) -> Response {
    let leader = agent
        .cluster
        .leader()
        .map(|l| l.address)
        .unwrap_or_default();
    axum::Json(json!(leader)).into_response()
}

async fn status_peers(State(agent): A) -> Response {
    if agent.cluster.leader().is_none() {
        return text(StatusCode::INTERNAL_SERVER_ERROR, "No cluster leader");
    }
    let peers: Vec<String> = agent
        .cluster
        .config()
        .into_iter()
        .map(|s| s.address)
        .collect();
    axum::Json(json!(peers)).into_response()
}

/// Raft IDs are node IDs, as with Consul's raft protocol 3.
fn raft_id(agent: &Agent, name: &str) -> String {
    agent
        .cluster
        .members()
        .into_iter()
        .find(|m| m.name == name)
        .and_then(|m| m.tags.get("id").cloned())
        .unwrap_or_else(|| name.to_string())
}

async fn raft_configuration(State(agent): A, headers: HeaderMap, q: Q) -> Response {
    authorize!(agent, headers, q);
    need_leader!(agent, q);
    let leader = agent.cluster.leader().map(|l| l.id);
    let servers: Vec<Value> = agent
        .cluster
        .config()
        .iter()
        .map(|s| {
            json!({
                "ID": raft_id(&agent, &s.id),
                "Node": s.id,
                "Address": s.address,
                "Leader": leader.as_deref() == Some(s.id.as_str()),
                "Voter": s.voter,
                "ProtocolVersion": "3",
            })
        })
        .collect();
    axum::Json(json!({"Servers": servers, "Index": agent.cluster.index()})).into_response()
}

/// agent/snapshot_endpoint.go and agent/consul/snapshot_endpoint.go: GET answers the
/// leader's snapshot (any server's with `?stale`) with its index in X-Consul-Index; PUT
/// restores one through the leader: 200 with no body, or 500 "failed to read snapshot
/// file: ..." for an archive that fails its check.
async fn snapshot_save(State(agent): A, headers: HeaderMap, q: Q) -> Response {
    authorize!(agent, headers, q);
    need_leader!(agent, q);
    match crate::snapshot::make(&agent.cluster, |_| Vec::new()) {
        Ok(bytes) => {
            let mut reply = (StatusCode::OK, bytes).into_response();
            reply
                .headers_mut()
                .insert("X-Consul-Index", HeaderValue::from(agent.cluster.index()));
            reply
        }
        Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

async fn snapshot_restore(State(agent): A, headers: HeaderMap, q: Q, body: Bytes) -> Response {
    authorize!(agent, headers, q);
    let restored = crate::snapshot::restore(
        &agent.cluster,
        &body,
        "failed to read snapshot file",
        |state| Op::Restore { state },
    );
    match restored.await {
        Ok(()) => StatusCode::OK.into_response(),
        Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

async fn raft_remove_peer(State(agent): A, headers: HeaderMap, q: Q) -> Response {
    authorize!(agent, headers, q);
    let (id, address) = (q.get("id"), q.get("address"));
    let target = match (id, address) {
        (None, None) => {
            return text(
                StatusCode::BAD_REQUEST,
                "Must specify either ?id with the server's ID or ?address with IP:port of peer to remove",
            )
        }
        (Some(_), Some(_)) => return text(StatusCode::BAD_REQUEST, "Must specify only one of ?id or ?address"),
        (Some(id), None) => agent
            .cluster
            .config()
            .into_iter()
            .find(|s| raft_id(&agent, &s.id) == *id || s.id == *id)
            .map(|s| s.id)
            .ok_or_else(|| format!("id \"{id}\" was not found in the Raft configuration")),
        (None, Some(addr)) => agent
            .cluster
            .config()
            .into_iter()
            .find(|s| s.address == *addr)
            .map(|s| s.id)
            .ok_or_else(|| format!("address \"{addr}\" was not found in the Raft configuration")),
    };
    let result = match target {
        Ok(name) => agent.cluster.remove_server(&name).await,
        Err(e) => Err(e),
    };
    match result {
        Ok(()) => empty(),
        Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

async fn autopilot_health(State(agent): A, headers: HeaderMap, q: Q) -> Response {
    authorize!(agent, headers, q);
    need_leader!(agent, q);
    let leader = agent.cluster.leader().map(|l| l.id);
    let members = agent.cluster.members();
    let servers: Vec<Value> = agent
        .cluster
        .config()
        .iter()
        .map(|s| {
            let alive = members.iter().any(|m| m.name == s.id && m.status == MemberStatus::Alive);
            let contact = agent.cluster.last_contact(&s.id);
            let healthy = alive && contact.is_some_and(|c| c < Duration::from_secs(2));
            json!({
                "ID": raft_id(&agent, &s.id),
                "Name": s.id,
                "Address": s.address,
                "SerfStatus": if alive { "alive" } else { "failed" },
                "Version": "1.8.7",
                "Leader": leader.as_deref() == Some(s.id.as_str()),
                "LastContact": contact.map(|c| format!("{}ms", c.as_millis())).unwrap_or_else(|| "-1ns".into()),
                "LastTerm": 0,
                "LastIndex": agent.cluster.index(),
                "Healthy": healthy,
                "Voter": s.voter,
                "StableSince": humantime::format_rfc3339_seconds(SystemTime::now()).to_string(),
            })
        })
        .collect();
    let healthy_voters = servers
        .iter()
        .filter(|s| s["Voter"] == true && s["Healthy"] == true)
        .count();
    let voters = servers.iter().filter(|s| s["Voter"] == true).count();
    let healthy = servers.iter().all(|s| s["Healthy"] == true);
    let tolerance = healthy_voters.saturating_sub(voters / 2 + 1);
    axum::Json(json!({"Healthy": healthy, "FailureTolerance": tolerance, "Servers": servers}))
        .into_response()
}

// ----- catalog and health -----

async fn datacenters(State(agent): A) -> Response {
    axum::Json(json!([agent.settings.datacenter])).into_response()
}

async fn catalog_nodes(State(agent): A, headers: HeaderMap, q: Q) -> Response {
    authorize!(agent, headers, q);
    need_leader!(agent, q);
    let nodes: Nodes = agent.cluster.part("nodes");
    indexed(&agent, json!(nodes.values().collect::<Vec<_>>()))
}

async fn catalog_services(State(agent): A, headers: HeaderMap, q: Q) -> Response {
    authorize!(agent, headers, q);
    need_leader!(agent, q);
    let services: Services = agent.cluster.part("services");
    let mut out: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for s in services.values().flat_map(BTreeMap::values) {
        let tags = out.entry(&s.service).or_default();
        for t in s.tags() {
            if !tags.contains(&t) {
                tags.push(t);
            }
        }
    }
    indexed(&agent, json!(out))
}

/// Every (node, service) pair of a service name, in node order, each as the API shows it,
/// with the node's checks: read together, so that none is missing a node or a check that
/// a write between two reads would have brought.
fn instances(agent: &Agent, name: &str, tag: Option<&str>) -> (Vec<(Value, Value)>, Checks) {
    let (nodes, services, checks): (Nodes, Services, Checks) = agent
        .cluster
        .read(|d| (table(d, "nodes"), table(d, "services"), table(d, "checks")));
    let mut out = Vec::new();
    for (node, per_node) in &services {
        for s in per_node.values() {
            if s.service != name || tag.is_some_and(|tag| !s.tags().any(|t| t == tag)) {
                continue;
            }
            out.push((json!(nodes.get(node)), json!(s)));
        }
    }
    (out, checks)
}

async fn catalog_service(
    State(agent): A,
    headers: HeaderMap,
    q: Q,
    Path(name): Path<String>,
) -> Response {
    authorize!(agent, headers, q);
    need_leader!(agent, q);
    let (found, _) = instances(&agent, &name, q.get("tag").map(String::as_str));
    let list: Vec<Value> = found
        .into_iter()
        .map(|(node, s)| {
            json!({
                "ID": node["ID"], "Node": node["Node"], "Address": node["Address"],
                "Datacenter": node["Datacenter"], "TaggedAddresses": node["TaggedAddresses"],
                "NodeMeta": node["Meta"],
                "ServiceID": s["ID"], "ServiceName": s["Service"], "ServiceTags": s["Tags"],
                "ServiceAddress": s["Address"], "ServicePort": s["Port"], "ServiceMeta": s["Meta"],
                "ServiceWeights": s["Weights"], "ServiceEnableTagOverride": s["EnableTagOverride"],
                "CreateIndex": s["CreateIndex"], "ModifyIndex": s["ModifyIndex"],
                "Namespace": "default",
            })
        })
        .collect();
    indexed(&agent, Value::Array(list))
}

/// Every check of every node, in node order.
fn all_checks(checks: &Checks) -> impl Iterator<Item = &Check> {
    checks.values().flat_map(BTreeMap::values)
}

async fn health_service(
    State(agent): A,
    headers: HeaderMap,
    q: Q,
    Path(name): Path<String>,
) -> Response {
    authorize!(agent, headers, q);
    need_leader!(agent, q);
    let passing_only = match q.get("passing").map(String::as_str) {
        None => false,
        Some("" | "true" | "1") => true,
        Some("false" | "0") => false,
        Some(_) => return text(StatusCode::BAD_REQUEST, "Invalid value for ?passing"),
    };
    let (found, all) = instances(&agent, &name, q.get("tag").map(String::as_str));
    let list: Vec<Value> = found
        .into_iter()
        .filter_map(|(node, mut service)| {
            let node_name = node["Node"].as_str().unwrap_or_default();
            let checks: Vec<&Check> = all
                .get(node_name)
                .into_iter()
                .flat_map(BTreeMap::values)
                .filter(|c| c.service_id.is_empty() || service["ID"] == c.service_id.as_str())
                .collect();
            if passing_only && !checks.iter().all(|c| c.status == "passing") {
                return None;
            }
            service.as_object_mut().map(|o| o.remove("Datacenter"));
            Some(json!({"Node": node, "Service": service, "Checks": checks}))
        })
        .collect();
    indexed(&agent, Value::Array(list))
}

async fn health_state(
    State(agent): A,
    headers: HeaderMap,
    q: Q,
    Path(state): Path<String>,
) -> Response {
    authorize!(agent, headers, q);
    need_leader!(agent, q);
    if !matches!(state.as_str(), "any" | "passing" | "warning" | "critical") {
        return text(
            StatusCode::BAD_REQUEST,
            format!("Invalid check state: '{state}'"),
        );
    }
    let checks: Checks = agent.cluster.part("checks");
    let list: Vec<&Check> = all_checks(&checks)
        .filter(|c| state == "any" || c.status == state)
        .collect();
    indexed(&agent, json!(list))
}

async fn health_node(
    State(agent): A,
    headers: HeaderMap,
    q: Q,
    Path(node): Path<String>,
) -> Response {
    authorize!(agent, headers, q);
    need_leader!(agent, q);
    let checks: Checks = agent.cluster.part("checks");
    let list: Vec<&Check> = checks
        .get(&node)
        .into_iter()
        .flat_map(BTreeMap::values)
        .collect();
    indexed(&agent, json!(list))
}

async fn health_checks(
    State(agent): A,
    headers: HeaderMap,
    q: Q,
    Path(service): Path<String>,
) -> Response {
    authorize!(agent, headers, q);
    need_leader!(agent, q);
    let checks: Checks = agent.cluster.part("checks");
    let list: Vec<&Check> = all_checks(&checks)
        .filter(|c| c.service_name == service)
        .collect();
    indexed(&agent, json!(list))
}

// ----- KV -----

async fn kv_get_root(s: A, h: HeaderMap, q: Q) -> Response {
    kv_get(s, h, q, Path(String::new())).await
}

async fn kv_put_root(s: A, h: HeaderMap, q: Q, body: Bytes) -> Response {
    kv_put(s, h, q, Path(String::new()), body).await
}

async fn kv_delete_root(s: A, h: HeaderMap, q: Q) -> Response {
    kv_delete(s, h, q, Path(String::new())).await
}

async fn kv_get(State(agent): A, headers: HeaderMap, q: Q, Path(key): Path<String>) -> Response {
    authorize!(agent, headers, q);
    let keys = flag(&q, "keys");
    let recurse = flag(&q, "recurse") || keys;
    if key.is_empty() && !recurse {
        return text(StatusCode::BAD_REQUEST, "Missing key name");
    }
    need_leader!(agent, q);
    let kv: BTreeMap<String, KvEntry> = agent.cluster.part("kv");
    let entries: Vec<&KvEntry> = kv
        .iter()
        .filter(|(k, _)| {
            if recurse {
                k.starts_with(&key)
            } else {
                **k == key
            }
        })
        .map(|(_, e)| e)
        .collect();
    if keys {
        let separator = q
            .get("separator")
            .or(q.get("seperator"))
            .cloned()
            .unwrap_or_default();
        let mut names: Vec<String> = Vec::new();
        for e in &entries {
            let k = e.key.as_str();
            let name = match separator.chars().next() {
                Some(_) => match k[key.len()..].find(&separator) {
                    Some(i) => k[..key.len() + i + separator.len()].to_string(),
                    None => k.to_string(),
                },
                None => k.to_string(),
            };
            if !names.contains(&name) {
                names.push(name);
            }
        }
        if names.is_empty() && !key.is_empty() {
            let mut r = StatusCode::NOT_FOUND.into_response();
            add_index_headers(&agent, r.headers_mut());
            return r;
        }
        return indexed(&agent, json!(names));
    }
    if entries.is_empty() {
        let mut r = StatusCode::NOT_FOUND.into_response();
        add_index_headers(&agent, r.headers_mut());
        return r;
    }
    if flag(&q, "raw") {
        let bytes = decode_value(entries[0].value.as_deref());
        let mut r = (StatusCode::OK, bytes).into_response();
        r.headers_mut()
            .insert("Content-Type", HeaderValue::from_static("text/plain"));
        r.headers_mut().insert(
            "X-Content-Type-Options",
            HeaderValue::from_static("nosniff"),
        );
        add_index_headers(&agent, r.headers_mut());
        return r;
    }
    indexed(&agent, json!(entries))
}

fn parse_u64(q: &HashMap<String, String>, name: &str) -> Result<Option<u64>, Response> {
    match q.get(name) {
        None => Ok(None),
        Some(v) => v
            .parse::<u64>()
            .map(Some)
            .map_err(|_| text(StatusCode::BAD_REQUEST, format!("Invalid {name} index"))),
    }
}

async fn kv_put(
    State(agent): A,
    headers: HeaderMap,
    q: Q,
    Path(key): Path<String>,
    body: Bytes,
) -> Response {
    authorize!(agent, headers, q);
    if key.is_empty() {
        return text(StatusCode::BAD_REQUEST, "Missing key name");
    }
    let set: Vec<&str> = ["cas", "acquire", "release"]
        .into_iter()
        .filter(|f| q.contains_key(*f))
        .collect();
    if set.len() > 1 {
        return text(
            StatusCode::BAD_REQUEST,
            format!("Conflicting flags: {}\n", set.join("&")),
        );
    }
    if body.len() > 512 * 1024 {
        return text(StatusCode::PAYLOAD_TOO_LARGE, "Request body(%d bytes) too large, max size: 524288 bytes. See https://www.consul.io/docs/agent/options.html#kv_max_value_size.".replace("%d", &body.len().to_string()));
    }
    let cas = match parse_u64(&q, "cas") {
        Ok(c) => c,
        Err(r) => return r,
    };
    let flags = match parse_u64(&q, "flags") {
        Ok(f) => f,
        Err(r) => return r,
    };
    let op = Op::KvSet {
        key,
        value: encode_value(&body),
        flags: flags.unwrap_or(0),
        cas,
        acquire: q.get("acquire").cloned(),
        release: q.get("release").cloned(),
        now_ms: now_ms(),
    };
    match agent.cluster.write(op).await {
        Ok(v) => axum::Json(v).into_response(),
        Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

async fn kv_delete(State(agent): A, headers: HeaderMap, q: Q, Path(key): Path<String>) -> Response {
    authorize!(agent, headers, q);
    let recurse = flag(&q, "recurse");
    if key.is_empty() && !recurse {
        return text(StatusCode::BAD_REQUEST, "Missing key name");
    }
    if recurse && q.contains_key("cas") {
        return text(StatusCode::BAD_REQUEST, "Conflicting flags: cas&recurse\n");
    }
    let cas = match parse_u64(&q, "cas") {
        Ok(c) => c,
        Err(r) => return r,
    };
    let op = Op::KvDelete { key, recurse, cas };
    match agent.cluster.write(op).await {
        Ok(v) => axum::Json(v).into_response(),
        Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

// ----- sessions -----

async fn session_create(State(agent): A, headers: HeaderMap, q: Q, body: Bytes) -> Response {
    authorize!(agent, headers, q);
    let body = match parse_body(&body) {
        Ok(b) => b,
        Err(r) => return r,
    };
    let node = field(&body, "Node")
        .and_then(Value::as_str)
        .unwrap_or(&agent.settings.node_name)
        .to_string();
    let behavior = field(&body, "Behavior")
        .and_then(Value::as_str)
        .unwrap_or("release");
    if !matches!(behavior, "release" | "delete") {
        return text(
            StatusCode::BAD_REQUEST,
            format!("Invalid Behavior setting '{behavior}'"),
        );
    }
    // LockDelay: a duration string, or nanoseconds; 15 s by default.
    let lock_delay = match field(&body, "LockDelay") {
        None => Duration::from_secs(15),
        Some(Value::String(d)) => match humantime::parse_duration(d) {
            Ok(d) => d,
            Err(_) => {
                return text(
                    StatusCode::BAD_REQUEST,
                    format!("Request decode failed: time: invalid duration \"{d}\""),
                )
            }
        },
        Some(v) => Duration::from_nanos(v.as_u64().unwrap_or(0)),
    };
    // TTL: between 10 s and 24 h; Consul invalidates a session not renewed within twice
    // its TTL (its sessionTTLMultiplier).
    let ttl_text = field(&body, "TTL").and_then(Value::as_str).unwrap_or("");
    let ttl = if ttl_text.is_empty() {
        None
    } else {
        match humantime::parse_duration(ttl_text) {
            Ok(t) if t >= Duration::from_secs(10) && t <= Duration::from_secs(86_400) => Some(t),
            // Consul 1.8.7's words and status (the check runs in the server's RPC; through
            // a follower they come after "rpc error making call: ").
            Ok(t) => {
                return text(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!(
                        "Invalid Session TTL '{}', must be between [10s=24h0m0s]",
                        t.as_nanos()
                    ),
                )
            }
            Err(_) => {
                return text(
                    StatusCode::BAD_REQUEST,
                    format!("Request decode failed: time: invalid duration \"{ttl_text}\""),
                )
            }
        }
    };
    let node_checks = session_checks(&body);
    let rest = json!({
        "Name": field(&body, "Name").and_then(Value::as_str).unwrap_or(""),
        "Behavior": behavior,
        "ServiceChecks": null,
        "Namespace": "default",
    });
    let session = Session {
        id: uuid::Uuid::new_v4().to_string(),
        node: node.to_string(),
        node_checks,
        lock_delay: lock_delay.as_nanos() as u64,
        ttl: ttl_text.to_string(),
        rest: rest.as_object().cloned().unwrap_or_default(),
        ..Session::default()
    };
    let expires_ms = ttl.map(|t| now_ms() + 2 * t.as_millis() as u64);
    match agent
        .cluster
        .write(Op::SessionCreate {
            session,
            expires_ms,
        })
        .await
    {
        Ok(v) => axum::Json(v).into_response(),
        Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

/// The node checks a new session is tied to, as Consul 1.8.7's SessionCreate decides them
/// (agent/session_endpoint.go, fixupEmptySessionChecks): serfHealth by default; `Checks:
/// []` or `NodeChecks: []` leaves none (a pure TTL session); `Checks` naming others adds
/// them to serfHealth unless `NodeChecks` is empty, which drops them all.
fn session_checks(body: &Value) -> Vec<String> {
    let list = |name: &str| -> Option<Vec<String>> {
        field(body, name).map(|v| {
            v.as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|c| c.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default()
        })
    };
    let serf = vec!["serfHealth".to_string()];
    let mut checks = list("Checks").unwrap_or_else(|| serf.clone());
    let mut node_checks = list("NodeChecks").unwrap_or_else(|| serf.clone());
    if checks.is_empty() {
        node_checks.clear();
    } else if checks == serf || node_checks.is_empty() {
        checks.clear();
    }
    for c in checks {
        if !node_checks.contains(&c) {
            node_checks.push(c);
        }
    }
    node_checks
}

/// Wall-clock milliseconds, carried in operations so that every node applies them alike.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// `PUT /v1/session/renew/:id`: the session again, its TTL timer reset; 404 `Session id
/// '...' not found` for one Consul no longer has (checked against Consul 1.8.7).
async fn session_renew(
    State(agent): A,
    headers: HeaderMap,
    q: Q,
    Path(id): Path<String>,
) -> Response {
    authorize!(agent, headers, q);
    let sessions: BTreeMap<String, Session> = agent.cluster.part("sessions");
    let ttl = sessions
        .get(&id)
        .and_then(|s| humantime::parse_duration(&s.ttl).ok());
    let op = Op::SessionRenew {
        id: id.clone(),
        expires_ms: ttl.map(|t| now_ms() + 2 * t.as_millis() as u64),
    };
    match agent.cluster.write(op).await {
        Ok(Value::Null) => text(
            StatusCode::NOT_FOUND,
            format!("Session id '{id}' not found"),
        ),
        Ok(v) => axum::Json(v).into_response(),
        Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

async fn session_destroy(
    State(agent): A,
    headers: HeaderMap,
    q: Q,
    Path(id): Path<String>,
) -> Response {
    authorize!(agent, headers, q);
    match agent
        .cluster
        .write(Op::SessionDestroy {
            id,
            now_ms: now_ms(),
        })
        .await
    {
        Ok(v) => axum::Json(v).into_response(),
        Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

async fn session_info(
    State(agent): A,
    headers: HeaderMap,
    q: Q,
    Path(id): Path<String>,
) -> Response {
    authorize!(agent, headers, q);
    need_leader!(agent, q);
    let sessions: BTreeMap<String, Session> = agent.cluster.part("sessions");
    match sessions.get(&id) {
        Some(session) => indexed(&agent, json!([session])),
        None => indexed(&agent, Value::Null),
    }
}

async fn session_list(State(agent): A, headers: HeaderMap, q: Q) -> Response {
    authorize!(agent, headers, q);
    need_leader!(agent, q);
    let sessions: BTreeMap<String, Session> = agent.cluster.part("sessions");
    indexed(&agent, json!(sessions.values().collect::<Vec<_>>()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// agent/session_endpoint.go fixupEmptySessionChecks, case by case (Consul 1.8.7).
    #[test]
    fn a_sessions_checks_follow_consul() {
        let checks = |body: Value| session_checks(&body);
        assert_eq!(checks(json!({})), ["serfHealth"]);
        assert!(checks(json!({"Checks": []})).is_empty());
        assert!(checks(json!({"NodeChecks": []})).is_empty());
        assert!(checks(json!({"Checks": [], "NodeChecks": []})).is_empty());
        assert_eq!(checks(json!({"Checks": ["disk"]})), ["serfHealth", "disk"]);
        assert!(checks(json!({"Checks": ["disk"], "NodeChecks": []})).is_empty());
        assert_eq!(checks(json!({"Checks": ["serfHealth"]})), ["serfHealth"]);
    }
}
