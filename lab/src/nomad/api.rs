//! The Nomad twin's HTTP API: JSON on success, plain-text errors, `No cluster leader`
//! (500) for reads that need one unless `?stale`.

// Handlers return `Result<_, Response>` so `?` turns a refusal into the HTTP answer.
#![allow(clippy::result_large_err)]

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::Router;
use serde_json::{json, Value};

use super::state::{AclBootstrap, DrainStrategy, Job, LastDrain, Node, NodeChange, TaskGroup};

/// The state's tables, by ID.
type Nodes = std::collections::BTreeMap<String, Node>;
type Jobs = std::collections::BTreeMap<String, Job>;
type Allocs = std::collections::BTreeMap<String, allocs::Alloc>;
use super::{allocs, Agent, Op, VERSION};
use crate::cluster::{MemberStatus, WriteError};

type A = State<Arc<Agent>>;
type Q = Query<HashMap<String, String>>;

pub fn routes(agent: Arc<Agent>) -> Router {
    Router::new()
        .route("/v1/agent/self", get(agent_self))
        .route("/v1/agent/members", get(members))
        .route("/v1/agent/join", post(join).put(join))
        .route("/v1/agent/force-leave", post(force_leave).put(force_leave))
        .route("/v1/agent/health", get(health))
        .route("/v1/status/leader", get(status_leader))
        .route("/v1/status/peers", get(status_peers))
        .route("/v1/operator/raft/configuration", get(raft_configuration))
        .route(
            "/v1/operator/snapshot",
            get(snapshot_save).put(snapshot_restore),
        )
        .route(
            "/v1/operator/raft/peer",
            delete(raft_remove_peer).fallback(invalid_404),
        )
        .route("/v1/operator/autopilot/health", get(autopilot_health))
        .route("/v1/nodes", get(nodes))
        .route("/v1/node/{id}", get(node))
        .route("/v1/node/{id}/drain", post(drain).put(drain))
        .route("/v1/node/{id}/purge", post(purge).put(purge))
        .route(
            "/v1/node/{id}/eligibility",
            post(eligibility).put(eligibility),
        )
        .route("/v1/jobs", get(jobs).post(register_job).put(register_job))
        .route("/v1/job/{id}", get(job))
        .route("/v1/job/{id}/allocations", get(job_allocations))
        .route("/v1/node/{id}/allocations", get(node_allocations))
        .route("/v1/allocations", get(allocations))
        .route("/v1/allocation/{id}", get(allocation))
        .route("/v1/acl/bootstrap", post(acl_bootstrap).put(acl_bootstrap))
        .layer(middleware::from_fn_with_state(agent.clone(), acl_check))
        .layer(middleware::from_fn(invalid_method))
        .with_state(agent)
}

/// Nomad's wrong-method answer is `Invalid method` in plain text.
async fn invalid_method(request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    if response.status() == StatusCode::METHOD_NOT_ALLOWED {
        return text(StatusCode::METHOD_NOT_ALLOWED, "Invalid method");
    }
    response
}

/// With ACLs on, only the bootstrap (management) token may act: a lab needs no finer
/// policies. An unknown token is "ACL token not found", none is "Permission denied".
async fn acl_check(State(agent): A, request: Request, next: Next) -> Response {
    let open = [
        "/v1/acl/bootstrap",
        "/v1/status/leader",
        "/v1/status/peers",
        "/v1/agent/health",
    ];
    if !agent.settings.acl || open.contains(&request.uri().path()) {
        return next.run(request).await;
    }
    let headers = request.headers();
    let token = headers
        .get("X-Nomad-Token")
        .and_then(|v| v.to_str().ok())
        .map(|t| t.trim().to_string())
        .or_else(|| {
            headers
                .get("Authorization")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.split_once(' '))
                .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
                .map(|(_, t)| t.trim().to_string())
        })
        .unwrap_or_default();
    let management = agent
        .cluster
        .part::<Option<AclBootstrap>>("acl_bootstrap")
        .map(|b| b.secret);
    match (token.is_empty(), management) {
        (false, Some(m)) if m == token => next.run(request).await,
        (true, _) => text(StatusCode::FORBIDDEN, "Permission denied"),
        _ => text(StatusCode::FORBIDDEN, "ACL token not found"),
    }
}

async fn acl_bootstrap(State(agent): A) -> Response {
    if !agent.settings.acl {
        return text(StatusCode::BAD_REQUEST, "ACL support disabled");
    }
    let secret = uuid::Uuid::new_v4().to_string();
    let accessor = uuid::Uuid::new_v4().to_string();
    match agent
        .cluster
        .write(Op::AclBootstrap {
            secret: secret.clone(),
            accessor: accessor.clone(),
        })
        .await
    {
        Ok(index) => with_index(
            &agent,
            json!({"AccessorID": accessor, "SecretID": secret, "Name": "Bootstrap Token", "Type": "management", "Policies": null, "Global": true, "CreateIndex": index, "ModifyIndex": index}),
        ),
        // The one refusal of a bootstrap: it was done already (StateError::AclBootstrapped).
        Err(e @ WriteError::Refused(_)) => text(StatusCode::BAD_REQUEST, e.to_string()),
        Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

async fn invalid_404() -> Response {
    text(StatusCode::NOT_FOUND, "Invalid method")
}

fn text(status: StatusCode, message: impl Into<String>) -> Response {
    let mut r = (status, message.into()).into_response();
    r.headers_mut().insert(
        "Content-Type",
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

fn with_index(agent: &Agent, value: Value) -> Response {
    let mut r = axum::Json(value).into_response();
    let h = r.headers_mut();
    h.insert(
        "X-Nomad-Index",
        HeaderValue::from(agent.cluster.index().max(1)),
    );
    h.insert(
        "X-Nomad-KnownLeader",
        HeaderValue::from_static(if agent.cluster.leader().is_some() {
            "true"
        } else {
            "false"
        }),
    );
    h.insert("X-Nomad-LastContact", HeaderValue::from_static("0"));
    r
}

/// How long a request that needs the leader is held while there is none: nomad/config.go
/// `RPCHoldTimeout`.
const RPC_HOLD_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// A request forwarded to the leader (nomad/rpc.go `forward` and `getLeaderForRPC`): held
/// while there is no leader, retried every RPCHoldTimeout/16 as Nomad does, and failed
/// with 500 `No cluster leader` (nomad/structs/errors.go `errNoLeader`) after
/// RPCHoldTimeout. `?stale` reads are answered by any server at once.
async fn need_leader(agent: &Agent, q: &HashMap<String, String>) -> Result<(), Response> {
    if q.contains_key("stale") {
        return Ok(());
    }
    let deadline = tokio::time::Instant::now() + RPC_HOLD_TIMEOUT;
    loop {
        if agent.cluster.leader().is_some() {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(text(StatusCode::INTERNAL_SERVER_ERROR, "No cluster leader"));
        }
        tokio::time::sleep(RPC_HOLD_TIMEOUT / 16).await;
    }
}

fn member_json(m: &crate::cluster::Member) -> Value {
    json!({
        "Name": m.name,
        "Addr": m.addr,
        "Port": 4648,
        "Tags": m.tags,
        "Status": match m.status {
            MemberStatus::Alive => "alive",
            MemberStatus::Leaving => "leaving",
            MemberStatus::Left => "left",
            MemberStatus::Failed => "failed",
        },
        "ProtocolMin": 1, "ProtocolMax": 5, "ProtocolCur": 2,
        "DelegateMin": 2, "DelegateMax": 5, "DelegateCur": 4,
    })
}

async fn agent_self(State(agent): A) -> Response {
    let s = &agent.settings;
    let leader = agent.cluster.leader();
    let me = agent
        .cluster
        .members()
        .into_iter()
        .find(|m| m.name == s.member_name());
    axum::Json(json!({
        "config": {
            "Region": s.region,
            "Datacenter": s.datacenter,
            "NodeName": s.name,
            "DataDir": s.data_dir,
            "Version": {"Version": VERSION},
            // command/agent/config.go `ServerConfig`, `ClientConfig`, `ServerJoin`: the
            // settings as written in the file the agent loaded.
            "Server": {
                "Enabled": s.server,
                "BootstrapExpect": s.bootstrap_expect,
                "ServerJoin": {"RetryJoin": s.loaded_joins.server_retry_join},
            },
            "Client": {
                "Enabled": s.client,
                "Servers": s.loaded_joins.client_servers,
                "ServerJoin": {"RetryJoin": s.loaded_joins.client_retry_join},
            },
            "Consuls": s.consul.iter().map(|c| json!({
                "Name": "default",
                "Addr": c.address,
                "ServerServiceName": c.server_service_name,
                "ServerAutoJoin": c.server_auto_join,
                "AutoAdvertise": c.auto_advertise,
                "Token": if c.token.is_some() { "<redacted>" } else { "" },
            })).collect::<Vec<_>>(),
        },
        "member": me.as_ref().map(member_json).unwrap_or(json!({})),
        "stats": {
            "nomad": {
                "server": s.server.to_string(),
                "leader": agent.cluster.is_leader().to_string(),
                "leader_addr": leader.map(|l| l.address).unwrap_or_default(),
                "bootstrap": (s.bootstrap_expect == 1).to_string(),
                "known_regions": "1",
            },
            "client": {"node_id": agent.node_id},
        },
    }))
    .into_response()
}

async fn members(State(agent): A) -> Response {
    let s = &agent.settings;
    let members: Vec<Value> = agent
        .cluster
        .members()
        .iter()
        .filter(|m| m.server)
        .map(member_json)
        .collect();
    axum::Json(json!({
        "ServerName": s.name,
        "ServerRegion": s.region,
        "ServerDC": s.datacenter,
        "Members": members,
    }))
    .into_response()
}

async fn join(State(agent): A, request: Request) -> Response {
    if !agent.settings.server {
        return text(StatusCode::NOT_IMPLEMENTED, "Invalid method");
    }
    // `address` may repeat, so read the raw query.
    let addresses: Vec<String> = request
        .uri()
        .query()
        .unwrap_or("")
        .split('&')
        .filter_map(|kv| kv.strip_prefix("address="))
        .map(|a| a.replace("%3A", ":").replace("%3a", ":"))
        .collect();
    if addresses.is_empty() {
        return text(StatusCode::BAD_REQUEST, "missing address to join");
    }
    let mut joined = 0;
    let mut errors = Vec::new();
    for address in &addresses {
        match agent
            .cluster
            .join_member(&agent.settings.peer_url(address))
            .await
        {
            Ok(()) => joined += 1,
            Err(e) => errors.push(format!("{address}: {e}")),
        }
    }
    axum::Json(json!({"num_joined": joined, "error": errors.join("; ")})).into_response()
}

async fn force_leave(State(agent): A, Query(q): Q) -> Response {
    let Some(node) = q.get("node").filter(|n| !n.is_empty()) else {
        return text(StatusCode::BAD_REQUEST, "missing node to force leave");
    };
    let prune = match q.get("prune").map(String::as_str) {
        None | Some("false") => false,
        Some("" | "true") => true,
        Some(_) => return text(StatusCode::BAD_REQUEST, "invalid prune value"),
    };
    match agent.cluster.force_leave(node, prune).await {
        Ok(()) => StatusCode::OK.into_response(),
        Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

async fn health(State(agent): A) -> Response {
    let ok = json!({"message": "ok", "ok": true});
    let mut body = json!({});
    if agent.settings.client {
        body["client"] = ok.clone();
    }
    if agent.settings.server {
        if agent.cluster.leader().is_some() {
            body["server"] = ok;
        } else {
            body["server"] = json!({"message": "No cluster leader", "ok": false});
            return (StatusCode::INTERNAL_SERVER_ERROR, axum::Json(body)).into_response();
        }
    }
    axum::Json(body).into_response()
}

/// nomad/status_endpoint.go `Leader` goes through `forward`: without a leader it is held,
/// then fails with `No cluster leader`; it never answers `""` (Consul does).
async fn status_leader(State(agent): A) -> Response {
    if let Err(r) = need_leader(&agent, &HashMap::new()).await {
        return r;
    }
    let leader = agent
        .cluster
        .leader()
        .map(|l| l.address)
        .unwrap_or_default();
    axum::Json(json!(leader)).into_response()
}

async fn status_peers(State(agent): A) -> Response {
    if let Err(r) = need_leader(&agent, &HashMap::new()).await {
        return r;
    }
    let peers: Vec<String> = agent
        .cluster
        .config()
        .into_iter()
        .filter(|s| s.voter)
        .map(|s| s.address)
        .collect();
    axum::Json(json!(peers)).into_response()
}

/// command/agent/operator_endpoint.go SnapshotRequest: GET answers the leader's snapshot
/// (nomad/operator_endpoint.go snapshotSave forwards unless stale) with a `Digest:
/// sha-256=<base64>` header; PUT restores one through the leader, 500 "failed to restore
/// from snapshot: ..." on a bad archive.
async fn snapshot_save(State(agent): A, Query(q): Q) -> Response {
    if let Err(r) = need_leader(&agent, &q).await {
        return r;
    }
    match crate::snapshot::make(&agent.cluster, |_| Vec::new()) {
        Ok(bytes) => {
            let sum = digest(&bytes);
            let mut reply = (StatusCode::OK, bytes).into_response();
            if let Ok(value) = HeaderValue::from_str(&format!("sha-256={sum}")) {
                reply.headers_mut().insert("Digest", value);
            }
            reply
        }
        Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

/// The SHA-256 of a snapshot, base64, as Nomad's Snapshot.Checksum gives it.
fn digest(bytes: &[u8]) -> String {
    use base64::Engine;
    use sha2::Digest;
    base64::engine::general_purpose::STANDARD.encode(sha2::Sha256::digest(bytes))
}

async fn snapshot_restore(State(agent): A, body: Bytes) -> Response {
    let restored = crate::snapshot::restore(
        &agent.cluster,
        &body,
        "failed to restore from snapshot",
        |state| Op::Restore { state },
    );
    match restored.await {
        Ok(()) => StatusCode::OK.into_response(),
        Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

async fn raft_configuration(State(agent): A, Query(q): Q) -> Response {
    if let Err(r) = need_leader(&agent, &q).await {
        return r;
    }
    let leader = agent.cluster.leader().map(|l| l.id);
    let servers: Vec<Value> = agent
        .cluster
        .config()
        .iter()
        .map(|s| {
            json!({
                "Address": s.address,
                "ID": raft_id(&s.id),
                "Leader": Some(&s.id) == leader.as_ref(),
                "Node": s.id,
                "RaftProtocol": "3",
                "Voter": s.voter,
            })
        })
        .collect();
    with_index(
        &agent,
        json!({"Index": agent.cluster.index(), "Servers": servers}),
    )
}

/// `GET /v1/operator/autopilot/health`: the leader's view of each server, as Nomad's
/// OperatorServerHealth answers it (command/agent/operator_endpoint.go; the reply is
/// nomad/structs/operator.go OperatorHealthReply, Consul's shape). A twin's servers share
/// one log, so each has the cluster's index.
async fn autopilot_health(State(agent): A, Query(q): Q) -> Response {
    if let Err(r) = need_leader(&agent, &q).await {
        return r;
    }
    let leader = agent.cluster.leader().map(|l| l.id);
    let members = agent.cluster.members();
    let servers: Vec<Value> = agent
        .cluster
        .config()
        .iter()
        .map(|s| {
            let alive = members
                .iter()
                .any(|m| m.name == s.id && m.status == MemberStatus::Alive);
            let contact = agent.cluster.last_contact(&s.id);
            let healthy = alive && contact.is_some_and(|c| c < std::time::Duration::from_secs(2));
            json!({
                "ID": raft_id(&s.id),
                "Name": s.id,
                "Address": s.address,
                "SerfStatus": if alive { "alive" } else { "failed" },
                "Leader": Some(&s.id) == leader.as_ref(),
                "LastContact": contact.map(|c| format!("{}ms", c.as_millis())).unwrap_or_else(|| "-1ns".into()),
                "LastTerm": 0,
                "LastIndex": agent.cluster.index(),
                "Healthy": healthy,
                "Voter": s.voter,
            })
        })
        .collect();
    let voters = servers.iter().filter(|s| s["Voter"] == true).count();
    let healthy_voters = servers
        .iter()
        .filter(|s| s["Voter"] == true && s["Healthy"] == true)
        .count();
    axum::Json(json!({
        "Healthy": servers.iter().all(|s| s["Healthy"] == true),
        "FailureTolerance": healthy_voters.saturating_sub(voters / 2 + 1),
        "Servers": servers,
    }))
    .into_response()
}

async fn raft_remove_peer(State(agent): A, Query(q): Q) -> Response {
    if q.contains_key("address") {
        return text(
            StatusCode::BAD_REQUEST,
            "Removing a peer by address is not supported in the current raft protocol version",
        );
    }
    let Some(id) = q.get("id").filter(|i| !i.is_empty()) else {
        return text(
            StatusCode::BAD_REQUEST,
            "Must specify the peer's ID to remove",
        );
    };
    let Some(server) = agent
        .cluster
        .config()
        .into_iter()
        .find(|s| raft_id(&s.id) == *id)
    else {
        return text(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("id {id:?} was not found in the Raft configuration"),
        );
    };
    match agent.cluster.remove_server(&server.id).await {
        Ok(()) => StatusCode::OK.into_response(),
        Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

/// A server's raft ID: with raft protocol 3 Nomad uses the server's node UUID, not its
/// `name.region` (nomad/serf.go, `Servers[].ID` of /v1/operator/raft/configuration). The
/// twin derives a stable UUID from the member name.
pub fn raft_id(member: &str) -> String {
    use sha2::Digest;
    let hash = sha2::Sha256::digest(member.as_bytes());
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&hash[..16]);
    uuid::Builder::from_random_bytes(bytes)
        .into_uuid()
        .to_string()
}

fn node_stub(n: &Node) -> Value {
    let mut stub = json!(n);
    if let Some(o) = stub.as_object_mut() {
        o.remove("Member");
    }
    stub
}

async fn nodes(State(agent): A, Query(q): Q) -> Response {
    if let Err(r) = need_leader(&agent, &q).await {
        return r;
    }
    let prefix = q.get("prefix").cloned().unwrap_or_default();
    let list: Vec<Value> = agent
        .cluster
        .part::<Nodes>("nodes")
        .iter()
        .filter(|(id, _)| id.starts_with(&prefix))
        .map(|(_, n)| node_stub(n))
        .collect();
    with_index(&agent, json!(list))
}

async fn node(State(agent): A, Path(id): Path<String>, Query(q): Q) -> Response {
    if let Err(r) = need_leader(&agent, &q).await {
        return r;
    }
    match agent.cluster.part::<Nodes>("nodes").get(&id) {
        // nomad/structs/structs.go: Node has no `Drain` (NodeListStub has): a drain shows
        // as the full node's DrainStrategy.
        Some(n) => {
            let mut full = node_stub(n);
            if let Some(o) = full.as_object_mut() {
                o.remove("Drain");
            }
            with_index(&agent, full)
        }
        None => text(StatusCode::NOT_FOUND, "node not found"),
    }
}

fn parse(body: &Bytes) -> Result<Value, Response> {
    if body.is_empty() {
        return Ok(json!({}));
    }
    serde_json::from_slice(body).map_err(|e| text(StatusCode::BAD_REQUEST, e.to_string()))
}

async fn update_node(agent: &Agent, id: &str, change: NodeChange) -> Response {
    match agent
        .cluster
        .write(Op::UpdateNode {
            id: id.to_string(),
            change,
        })
        .await
    {
        Ok(index) => with_index(
            agent,
            json!({"EvalCreateIndex": 0, "EvalIDs": null, "Index": index, "NodeModifyIndex": index}),
        ),
        Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

/// command/agent/node_endpoint.go nodePurge: Node.Deregister, answered with
/// NodeUpdateResponse; an unknown node is a 500 "node not found".
async fn purge(State(agent): A, Path(id): Path<String>) -> Response {
    match agent.cluster.write(Op::DeleteNode { id }).await {
        Ok(index) => with_index(
            &agent,
            json!({"EvalCreateIndex": 0, "EvalIDs": null, "Index": index, "NodeModifyIndex": index}),
        ),
        Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

async fn drain(State(agent): A, Path(id): Path<String>, body: Bytes) -> Response {
    let body = match parse(&body) {
        Ok(b) => b,
        Err(r) => return r,
    };
    let now = std::time::SystemTime::now();
    let stamp = |t: std::time::SystemTime| humantime::format_rfc3339_nanos(t).to_string();
    let change = match body.get("DrainSpec").filter(|s| !s.is_null()) {
        Some(spec) => {
            // Deadline in nanoseconds: > 0 forces the drain at now + Deadline, < 0 at once,
            // 0 never (Nomad's zero time).
            let deadline = spec["Deadline"].as_i64().unwrap_or(0);
            let force = match deadline {
                0 => "0001-01-01T00:00:00Z".to_string(),
                d if d < 0 => stamp(now),
                d => stamp(now + Duration::from_nanos(d as u64)),
            };
            NodeChange::Drain {
                strategy: DrainStrategy {
                    deadline,
                    ignore_system_jobs: spec["IgnoreSystemJobs"].as_bool().unwrap_or(false),
                    force_deadline: force,
                    started_at: stamp(now),
                },
                last: LastDrain {
                    status: "draining".into(),
                    started_at: stamp(now),
                    updated_at: stamp(now),
                    accessor_id: String::new(),
                    meta: body["Meta"].clone(),
                },
            }
        }
        None => NodeChange::EndDrain {
            at: stamp(now),
            mark_eligible: body["MarkEligible"] == true,
        },
    };
    update_node(&agent, &id, change).await
}

async fn eligibility(State(agent): A, Path(id): Path<String>, body: Bytes) -> Response {
    let body = match parse(&body) {
        Ok(b) => b,
        Err(r) => return r,
    };
    let wanted = body["Eligibility"].as_str().unwrap_or_default();
    if wanted != "eligible" && wanted != "ineligible" {
        return text(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("invalid scheduling eligibility {wanted:?}"),
        );
    }
    let draining = agent
        .cluster
        .part::<Nodes>("nodes")
        .get(&id)
        .is_some_and(|n| n.drain);
    if draining && wanted == "eligible" {
        return text(
            StatusCode::INTERNAL_SERVER_ERROR,
            "can not set node's scheduling eligibility to eligible while it is draining",
        );
    }
    let eligible = wanted == "eligible";
    update_node(&agent, &id, NodeChange::Eligibility { eligible }).await
}

async fn jobs(State(agent): A, Query(q): Q) -> Response {
    if let Err(r) = need_leader(&agent, &q).await {
        return r;
    }
    let prefix = q.get("prefix").cloned().unwrap_or_default();
    let list: Vec<Value> = agent
        .cluster
        .part::<Jobs>("jobs")
        .iter()
        .filter(|(id, _)| id.starts_with(&prefix))
        .map(|(_, j)| job_stub(j))
        .collect();
    with_index(&agent, json!(list))
}

async fn job(State(agent): A, Path(id): Path<String>, Query(q): Q) -> Response {
    if let Err(r) = need_leader(&agent, &q).await {
        return r;
    }
    match agent.cluster.part::<Jobs>("jobs").get(&id) {
        Some(j) => with_index(&agent, json!(j)),
        None => text(StatusCode::NOT_FOUND, "job not found"),
    }
}

/// `/v1/jobs` lists stubs (structs.go JobListStub): no task groups.
fn job_stub(job: &Job) -> Value {
    let mut stub = json!(job);
    if let Some(m) = stub.as_object_mut() {
        m.remove("TaskGroups");
    }
    stub
}

/// The allocations matching `keep`, full (a node's, as node_endpoint.go nodeAllocations
/// answers) or as list stubs (a job's and `/v1/allocations`, AllocListStub).
fn allocs_where(agent: &Agent, keep: impl Fn(&allocs::Alloc) -> bool, full: bool) -> Value {
    let jobs: Jobs = if full {
        agent.cluster.part("jobs")
    } else {
        Jobs::new()
    };
    let list: Vec<Value> = agent
        .cluster
        .part::<Allocs>("allocs")
        .values()
        .filter(|a| keep(a))
        .map(|a| if full { full_alloc(a, &jobs) } else { a.stub() })
        .collect();
    json!(list)
}

/// An allocation in full, as nomad/structs/structs.go Allocation is (what
/// command/agent/node_endpoint.go nodeAllocations answers): its job embedded (`Job`), no
/// `JobType` (only the list stubs carry that).
fn full_alloc(a: &allocs::Alloc, jobs: &Jobs) -> Value {
    let mut v = json!(a);
    if let Some(o) = v.as_object_mut() {
        o.remove("JobType");
        o.insert(
            "Job".into(),
            jobs.get(&a.job_id).map_or(Value::Null, |j| json!(j)),
        );
    }
    v
}

async fn job_allocations(State(agent): A, Path(id): Path<String>, Query(q): Q) -> Response {
    if let Err(r) = need_leader(&agent, &q).await {
        return r;
    }
    let list = allocs_where(&agent, |a| a.job_id == id, false);
    with_index(&agent, list)
}

async fn node_allocations(State(agent): A, Path(id): Path<String>, Query(q): Q) -> Response {
    if let Err(r) = need_leader(&agent, &q).await {
        return r;
    }
    let list = allocs_where(&agent, |a| a.node_id == id, true);
    with_index(&agent, list)
}

async fn allocations(State(agent): A, Query(q): Q) -> Response {
    if let Err(r) = need_leader(&agent, &q).await {
        return r;
    }
    let list = allocs_where(&agent, |_| true, false);
    with_index(&agent, list)
}

async fn allocation(State(agent): A, Path(id): Path<String>, Query(q): Q) -> Response {
    if let Err(r) = need_leader(&agent, &q).await {
        return r;
    }
    match agent.cluster.part::<Allocs>("allocs").get(&id) {
        Some(a) => with_index(&agent, full_alloc(a, &agent.cluster.part("jobs"))),
        None => text(StatusCode::NOT_FOUND, "alloc not found"),
    }
}

/// A job registration keeps the job's stub fields and its task groups, canonicalized;
/// the leader's scheduler places them (allocs.rs).
async fn register_job(State(agent): A, body: Bytes) -> Response {
    let body = match parse(&body) {
        Ok(b) => b,
        Err(r) => return r,
    };
    let job = &body["Job"];
    let Some(id) = job["ID"].as_str().filter(|i| !i.is_empty()) else {
        return text(StatusCode::BAD_REQUEST, "Job ID does not match name");
    };
    let kind = job["Type"].as_str().unwrap_or("service").to_string();
    let groups: Vec<TaskGroup> = match serde_json::from_value(job["TaskGroups"].clone()) {
        Ok(groups) => groups,
        Err(_) if job["TaskGroups"].is_null() => Vec::new(),
        Err(e) => return text(StatusCode::BAD_REQUEST, format!("TaskGroups: {e}")),
    };
    let stub = Job {
        id: id.to_string(),
        name: job["Name"].as_str().unwrap_or(id).to_string(),
        namespace: "default".into(),
        datacenters: job["Datacenters"].clone(),
        priority: job["Priority"].as_u64().unwrap_or(50),
        status: "running".into(),
        task_groups: allocs::canonical_groups(&kind, groups),
        kind,
        ..Job::default()
    };
    match agent
        .cluster
        .write(Op::UpsertJob {
            job: Box::new(stub),
        })
        .await
    {
        Ok(index) => with_index(
            &agent,
            json!({"EvalID": uuid::Uuid::new_v4().to_string(), "EvalCreateIndex": index, "JobModifyIndex": index, "Warnings": "", "Index": index}),
        ),
        Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}
