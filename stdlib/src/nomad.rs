//! `nomad`: the Nomad HTTP API for scripts, one client per topology host (its `nomad`
//! block; token from `token_file` or `NOMAD_TOKEN`). Results keep the API's field names.

use std::time::Duration;

use harun_runtime::codes;
use harun_runtime::error::call_error;
use harun_runtime::service::Service;
use rhai::plugin::*;
use serde_json::{json, Value};

use crate::hosts::HostHandle;
use crate::http::{count_where, encode, json_body as body, to_dynamic, ApiClient};

type RhaiResult<T> = Result<T, Box<EvalAltResult>>;

fn client(ctx: &NativeCallContext, host: &HostHandle) -> RhaiResult<ApiClient> {
    ApiClient::for_host(ctx, host, Service::Nomad)
}

fn get_json(ctx: &NativeCallContext, host: &HostHandle, path: &str) -> RhaiResult<Value> {
    Ok(client(ctx, host)?.get(ctx, path, &[])?.json())
}

/// The leader as `host` sees it, `""` for none. A server's `/v1/agent/self` carries
/// `stats.nomad.leader_addr` from its own raft state (nomad/server.go `Stats`), answered
/// without the leader. A client agent has no such stats: its `/v1/status/leader` is
/// forwarded to a server and, with no leader, held up to 5 s (nomad/rpc.go `forward`,
/// `RPCHoldTimeout`) and then answered 500 `No cluster leader`, which means no leader,
/// not an agent that is down.
pub fn leader_of(ctx: &NativeCallContext, c: &ApiClient, timeout: Duration) -> RhaiResult<String> {
    let me = c.read(ctx, "/v1/agent/self", timeout)?;
    if me.status == 200 {
        let nomad = &me.json()["stats"]["nomad"];
        if nomad["server"] == "true" {
            return Ok(nomad["leader_addr"]
                .as_str()
                .unwrap_or_default()
                .to_string());
        }
    }
    let reply = c.read(ctx, "/v1/status/leader", timeout)?;
    if reply.status == 500 && reply.text().contains("No cluster leader") {
        return Ok(String::new());
    }
    Ok(c.check(ctx, "GET", "/v1/status/leader", reply, &[])?
        .json()
        .as_str()
        .unwrap_or_default()
        .to_string())
}

fn job_json(ctx: &NativeCallContext, host: &HostHandle, id: &str) -> RhaiResult<Value> {
    get_json(ctx, host, &format!("/v1/job/{}", encode(id)))
}

#[export_module]
pub mod nomad_api {
    use super::*;
    use rhai::Map;

    pub type Host = HostHandle;

    /// The agent's configuration, member entry and stats (`/v1/agent/self`).
    #[rhai_fn(volatile, return_raw)]
    pub fn agent_self(ctx: NativeCallContext, host: Host) -> RhaiResult<Dynamic> {
        Ok(to_dynamic(&get_json(&ctx, &host, "/v1/agent/self")?))
    }

    /// The server members: `Name` (`node.region`), `Addr`, `Status` ("alive", ...), `Tags`.
    #[rhai_fn(volatile, return_raw)]
    pub fn members(ctx: NativeCallContext, host: Host) -> RhaiResult<Dynamic> {
        let v = get_json(&ctx, &host, "/v1/agent/members")?;
        Ok(to_dynamic(&v["Members"]))
    }

    /// Marks a failed server as left (`prune`: forgotten altogether), so that a new machine
    /// may join under its name. A change.
    #[rhai_fn(volatile, return_raw)]
    pub fn force_leave(
        ctx: NativeCallContext,
        host: Host,
        node: &str,
        prune: bool,
    ) -> RhaiResult<bool> {
        let c = client(&ctx, &host)?;
        let (prune_query, how) = if prune {
            ("&prune=true", " -prune")
        } else {
            ("", "")
        };
        c.change(
            &ctx,
            "PUT",
            &format!("/v1/agent/force-leave?node={}{prune_query}", encode(node)),
            None,
            &format!("nomad: force-leave{how} {node}"),
        )
    }

    /// Purges the client node `id` (a machine gone for good): it leaves `nodes`. A change.
    #[rhai_fn(volatile, return_raw)]
    pub fn node_purge(ctx: NativeCallContext, host: Host, id: &str) -> RhaiResult<bool> {
        let c = client(&ctx, &host)?;
        c.change(
            &ctx,
            "PUT",
            &format!("/v1/node/{}/purge", encode(id)),
            None,
            &format!("nomad: purge node {id}"),
        )
    }

    /// Asks this server to join the server at `address`; the number joined. A change.
    #[rhai_fn(volatile, return_raw)]
    pub fn join(ctx: NativeCallContext, host: Host, address: &str) -> RhaiResult<i64> {
        let c = client(&ctx, &host)?;
        let reply = c.write(
            &ctx,
            "PUT",
            &format!("/v1/agent/join?address={}", encode(address)),
            None,
            &format!("nomad: join {address}"),
        )?;
        let Some(reply) = reply else { return Ok(0) };
        let v = reply.json();
        if let Some(e) = v["error"].as_str().filter(|e| !e.is_empty()) {
            return Err(call_error(
                &ctx,
                codes::NOMAD_JOIN,
                format!("nomad on {}: join {address}: {e}", c.host),
            ));
        }
        Ok(v["num_joined"].as_i64().unwrap_or(0))
    }

    /// The client nodes: `ID`, `Name`, `Status`, `Drain`, `SchedulingEligibility`, ...
    #[rhai_fn(volatile, return_raw)]
    pub fn nodes(ctx: NativeCallContext, host: Host) -> RhaiResult<Dynamic> {
        Ok(to_dynamic(&get_json(&ctx, &host, "/v1/nodes")?))
    }

    /// One client node in full, including `DrainStrategy` and `LastDrain`.
    #[rhai_fn(volatile, return_raw)]
    pub fn node(ctx: NativeCallContext, host: Host, node_id: &str) -> RhaiResult<Dynamic> {
        let path = format!("/v1/node/{}", encode(node_id));
        Ok(to_dynamic(&get_json(&ctx, &host, &path)?))
    }

    /// Drains a node; a change. Its allocations are forced off after `deadline_seconds`
    /// (-1: at once; 0: no deadline). System jobs are kept. Wait with `wait_drained`.
    #[rhai_fn(volatile, return_raw)]
    pub fn drain(
        ctx: NativeCallContext,
        host: Host,
        node_id: &str,
        deadline_seconds: i64,
    ) -> RhaiResult<bool> {
        let c = client(&ctx, &host)?;
        let spec = json!({"DrainSpec": {"Deadline": deadline_seconds * 1_000_000_000, "IgnoreSystemJobs": true}});
        c.change(
            &ctx,
            "PUT",
            &format!("/v1/node/{}/drain", encode(node_id)),
            body(&spec),
            &format!("nomad: drain node {node_id}"),
        )
    }

    /// Ends a drain and makes the node eligible again. A change.
    #[rhai_fn(volatile, return_raw)]
    pub fn undrain(ctx: NativeCallContext, host: Host, node_id: &str) -> RhaiResult<bool> {
        let c = client(&ctx, &host)?;
        c.change(
            &ctx,
            "PUT",
            &format!("/v1/node/{}/drain", encode(node_id)),
            body(&json!({"DrainSpec": null, "MarkEligible": true})),
            &format!("nomad: end the drain of node {node_id}"),
        )
    }

    /// Sets a node's scheduling eligibility (`true`: eligible). A change.
    #[rhai_fn(volatile, return_raw)]
    pub fn eligibility(
        ctx: NativeCallContext,
        host: Host,
        node_id: &str,
        eligible: bool,
    ) -> RhaiResult<bool> {
        let c = client(&ctx, &host)?;
        let value = if eligible { "eligible" } else { "ineligible" };
        c.change(
            &ctx,
            "PUT",
            &format!("/v1/node/{}/eligibility", encode(node_id)),
            body(&json!({"Eligibility": value})),
            &format!("nomad: mark node {node_id} {value}"),
        )
    }

    /// The allocations placed on a node, in full: `ID`, `Name`, `JobID`, `JobType`,
    /// `DesiredStatus` ("run", "stop"), `ClientStatus` ("pending", "running", "complete",
    /// "failed", "lost"), `NextAllocation` (its replacement), ...
    #[rhai_fn(volatile, return_raw)]
    pub fn allocations(ctx: NativeCallContext, host: Host, node_id: &str) -> RhaiResult<Dynamic> {
        let path = format!("/v1/node/{}/allocations", encode(node_id));
        Ok(to_dynamic(&get_json(&ctx, &host, &path)?))
    }

    /// One allocation in full (as `allocations` gives them).
    #[rhai_fn(volatile, return_raw)]
    pub fn allocation(ctx: NativeCallContext, host: Host, id: &str) -> RhaiResult<Dynamic> {
        let path = format!("/v1/allocation/{}", encode(id));
        Ok(to_dynamic(&get_json(&ctx, &host, &path)?))
    }

    /// The jobs: `ID`, `Type`, `Status`, ...
    #[rhai_fn(volatile, return_raw)]
    pub fn jobs(ctx: NativeCallContext, host: Host) -> RhaiResult<Dynamic> {
        Ok(to_dynamic(&get_json(&ctx, &host, "/v1/jobs")?))
    }

    /// One job in full: `ID`, `Type`, `Status` ("pending", "running", "dead"), `Stop`, ...
    #[rhai_fn(volatile, return_raw)]
    pub fn job(ctx: NativeCallContext, host: Host, id: &str) -> RhaiResult<Dynamic> {
        Ok(to_dynamic(&job_json(&ctx, &host, id)?))
    }

    /// A job's status: "pending", "running" or "dead".
    #[rhai_fn(volatile, return_raw)]
    pub fn job_status(ctx: NativeCallContext, host: Host, id: &str) -> RhaiResult<String> {
        Ok(job_json(&ctx, &host, id)?["Status"]
            .as_str()
            .unwrap_or_default()
            .to_string())
    }

    /// Waits until a node's drain has ended; returns how it ended (`LastDrain.Status`:
    /// "complete", or "canceled" when it was turned off).
    #[rhai_fn(volatile, return_raw)]
    pub fn wait_drained(
        ctx: NativeCallContext,
        host: Host,
        node_id: &str,
        timeout_seconds: f64,
    ) -> RhaiResult<Dynamic> {
        let c = client(&ctx, &host)?;
        let path = format!("/v1/node/{}", encode(node_id));
        // A missing node must fail at once, not after the timeout.
        let first = c.get(&ctx, &path, &[])?.json();
        let name = first["Name"].as_str().unwrap_or(node_id).to_string();
        let seen = std::cell::RefCell::new(first);
        c.wait_for(
            &ctx,
            &format!("the drain of nomad node {name} to end (asking {})", c.host),
            timeout_seconds,
            || {
                let r = c.read(&ctx, &path, Duration::from_secs(3)).ok()?;
                if r.status != 200 {
                    return None;
                }
                let node = r.json();
                let done = node["DrainStrategy"].is_null() && node["Drain"] != true;
                let status = node["LastDrain"]["Status"]
                    .as_str()
                    .unwrap_or("")
                    .to_string();
                seen.replace(node);
                done.then(|| status.into())
            },
            || {
                let strategy = &seen.borrow()["DrainStrategy"];
                match strategy["ForceDeadline"].as_str() {
                    _ if strategy["Deadline"] == 0 => "still draining, with no deadline".into(),
                    Some(t) => format!("still draining, forced at {t}"),
                    None => "still draining".into(),
                }
            },
        )
    }

    /// Waits until `n` servers are alive members.
    #[rhai_fn(volatile, return_raw)]
    pub fn wait_servers(
        ctx: NativeCallContext,
        host: Host,
        n: i64,
        timeout_seconds: f64,
    ) -> RhaiResult<Dynamic> {
        let c = client(&ctx, &host)?;
        let what = format!("{n} alive nomad servers");
        c.wait_count(
            &ctx,
            &what,
            "/v1/agent/members",
            n,
            timeout_seconds,
            "alive",
            |v| count_where(&v["Members"], |m| m["Status"] == "alive"),
        )
    }

    /// Waits until `n` client nodes are ready.
    #[rhai_fn(volatile, return_raw)]
    pub fn wait_nodes_ready(
        ctx: NativeCallContext,
        host: Host,
        n: i64,
        timeout_seconds: f64,
    ) -> RhaiResult<Dynamic> {
        let c = client(&ctx, &host)?;
        let what = format!("{n} ready nomad client nodes");
        c.wait_count(&ctx, &what, "/v1/nodes", n, timeout_seconds, "ready", |v| {
            count_where(v, |node| node["Status"] == "ready")
        })
    }

    /// The client nodes' IDs by node name.
    #[rhai_fn(name = "node_ids", volatile, return_raw)]
    pub fn node_ids(ctx: NativeCallContext, host: Host) -> RhaiResult<Map> {
        let nodes = get_json(&ctx, &host, "/v1/nodes")?;
        let mut out = Map::new();
        for n in nodes.as_array().into_iter().flatten() {
            if let (Some(name), Some(id)) = (n["Name"].as_str(), n["ID"].as_str()) {
                out.insert(name.into(), id.into());
            }
        }
        Ok(out)
    }
}
