//! The raft family every service shares (`raft_configuration`, `remove_peer`,
//! `wait_voters`, and where the API has them `peers`, `leader` and `wait_leader`), written
//! once and registered into the `consul`, `nomad` and `vault` modules. What differs
//! between the three APIs is a `Raft` description each.

use std::time::Duration;

use harun_runtime::service::Service;
use rhai::{Dynamic, EvalAltResult, FuncRegistration, Module, NativeCallContext};
use serde_json::{json, Value};

use crate::hosts::HostHandle;
use crate::http::{count_where, encode, json_body, to_dynamic, ApiClient, DEFAULT_TIMEOUT};

type RhaiResult<T> = Result<T, Box<EvalAltResult>>;

/// A request that changes the cluster: method, path and body.
type Request = (&'static str, String, Option<Vec<u8>>);

/// The leader's address as a host sees it, `""` for none, within a timeout.
type LeaderOf = fn(&NativeCallContext, &ApiClient, Duration) -> RhaiResult<String>;

/// How one service's API serves its raft state.
pub struct Raft {
    pub service: Service,
    /// `GET` path of the raft configuration.
    configuration: &'static str,
    /// Where in that answer the configuration sits (Vault's is under `data.config`).
    within: &'static [&'static str],
    /// The configuration's server list and a server's voter flag, as the API names them.
    servers: &'static str,
    voter: &'static str,
    /// `GET` path of the peers' addresses, for the APIs that have one.
    peers: Option<&'static str>,
    /// The request that removes the raft server `id`: method, path and body.
    remove: fn(&str) -> Request,
    /// The leader's address as the host sees it, `""` for none, for the APIs whose leader
    /// is an address (Vault's `leader` is a map of its own).
    leader: Option<LeaderOf>,
    /// Autopilot's view of every server (the leader's): its path, where the servers sit
    /// in the answer (a list, or Vault's map by id), and a server's last log index.
    health: &'static str,
    health_servers: &'static [&'static str],
    last_index: &'static str,
}

pub const CONSUL: Raft = Raft {
    service: Service::Consul,
    configuration: "/v1/operator/raft/configuration",
    within: &[],
    servers: "Servers",
    voter: "Voter",
    peers: Some("/v1/status/peers"),
    remove: remove_by_query,
    leader: Some(status_leader),
    health: "/v1/operator/autopilot/health",
    health_servers: &["Servers"],
    last_index: "LastIndex",
};

pub const NOMAD: Raft = Raft {
    service: Service::Nomad,
    leader: Some(crate::nomad::leader_of),
    ..CONSUL
};

pub const VAULT: Raft = Raft {
    service: Service::Vault,
    configuration: "/v1/sys/storage/raft/configuration",
    within: &["data", "config"],
    servers: "servers",
    voter: "voter",
    peers: None,
    // Vault's remove-peer is a POST with the server's id in the body.
    remove: |id| {
        let body = json_body(&json!({ "server_id": id }));
        ("POST", "/v1/sys/storage/raft/remove-peer".into(), body)
    },
    leader: None,
    health: "/v1/sys/storage/raft/autopilot/state",
    health_servers: &["data", "servers"],
    last_index: "last_index",
};

/// Consul's and Nomad's `DELETE /v1/operator/raft/peer?id=`.
fn remove_by_query(id: &str) -> Request {
    let path = format!("/v1/operator/raft/peer?id={}", encode(id));
    ("DELETE", path, None)
}

/// Consul's `/v1/status/leader`: the leader's address, `""` with none.
fn status_leader(ctx: &NativeCallContext, c: &ApiClient, timeout: Duration) -> RhaiResult<String> {
    let reply = c.read(ctx, "/v1/status/leader", timeout)?;
    let reply = c.check(ctx, "GET", "/v1/status/leader", reply, &[])?;
    Ok(reply.json().as_str().unwrap_or_default().to_string())
}

impl Raft {
    fn client(&self, ctx: &NativeCallContext, host: &HostHandle) -> RhaiResult<ApiClient> {
        ApiClient::for_host(ctx, host, self.service)
    }

    /// The configuration out of the API's answer.
    fn configuration_in<'v>(&self, answer: &'v Value) -> &'v Value {
        self.within.iter().fold(answer, |v, key| &v[key])
    }

    /// How many voters a configuration answer lists.
    pub fn voters(&self, answer: &Value) -> usize {
        count_where(&self.configuration_in(answer)[self.servers], |s| {
            s[self.voter] == true
        })
    }

    fn configuration(&self, ctx: &NativeCallContext, host: &HostHandle) -> RhaiResult<Dynamic> {
        let answer = self.client(ctx, host)?.get(ctx, self.configuration, &[])?;
        Ok(to_dynamic(self.configuration_in(&answer.json())))
    }

    fn remove_peer(
        &self,
        ctx: &NativeCallContext,
        host: &HostHandle,
        id: &str,
    ) -> RhaiResult<bool> {
        let (method, path, body) = (self.remove)(id);
        let summary = format!("{}: remove raft peer {id}", self.service);
        self.client(ctx, host)?
            .change(ctx, method, &path, body, &summary)
    }

    fn wait_voters(
        &self,
        ctx: &NativeCallContext,
        host: &HostHandle,
        n: i64,
        timeout_seconds: f64,
    ) -> RhaiResult<Dynamic> {
        let c = self.client(ctx, host)?;
        let what = format!("{n} {} raft voters", self.service);
        c.wait_count(
            ctx,
            &what,
            self.configuration,
            n,
            timeout_seconds,
            "voters",
            |v| self.voters(v),
        )
    }

    /// Every server's last log index in autopilot's answer, by server name or id.
    fn last_indexes(&self, answer: &Value) -> Vec<(String, u64)> {
        let servers = self.health_servers.iter().fold(answer, |v, key| &v[key]);
        let list: Vec<&Value> = match servers {
            Value::Array(list) => list.iter().collect(),
            Value::Object(map) => map.values().collect(),
            _ => vec![],
        };
        list.into_iter()
            .map(|s| {
                let name = s["Name"].as_str().or(s["id"].as_str()).unwrap_or("?");
                (name.to_string(), s[self.last_index].as_u64().unwrap_or(0))
            })
            .collect()
    }

    /// Waits until every server's log reaches the highest index any server had when it
    /// was first asked: after a snapshot restore, the followers install the leader's
    /// snapshot a moment later, and until then a node that serves reads itself (OpenBao's
    /// standbys, a `?stale` read) answers with the data from before. Returns that index.
    fn wait_caught_up(
        &self,
        ctx: &NativeCallContext,
        host: &HostHandle,
        timeout_seconds: f64,
    ) -> RhaiResult<Dynamic> {
        let c = self.client(ctx, host)?;
        let first = std::cell::Cell::new(None::<u64>);
        let last = std::cell::RefCell::new(String::from("no answer yet"));
        c.wait_for(
            ctx,
            &format!("every {} server at the leader's raft index", self.service),
            timeout_seconds,
            || {
                let answer = match c.get(ctx, self.health, &[]) {
                    Ok(a) => a.json(),
                    Err(e) => {
                        *last.borrow_mut() = harun_runtime::diagnostic::code_and_message_of(&e).1;
                        return None;
                    }
                };
                let indexes = self.last_indexes(&answer);
                let highest = indexes.iter().map(|(_, i)| *i).max().unwrap_or(0);
                let target = first.get().unwrap_or(highest);
                first.set(Some(target));
                let behind: Vec<String> = indexes
                    .iter()
                    .filter(|(_, i)| *i < target)
                    .map(|(n, i)| format!("{n} at {i}"))
                    .collect();
                if behind.is_empty() && !indexes.is_empty() {
                    return Some((target as i64).into());
                }
                *last.borrow_mut() = format!("{} of index {target}", behind.join(", "));
                None
            },
            || last.borrow().clone(),
        )
    }

    fn wait_leader(
        &self,
        ctx: &NativeCallContext,
        host: &HostHandle,
        leader: LeaderOf,
        timeout_seconds: f64,
    ) -> RhaiResult<Dynamic> {
        let c = self.client(ctx, host)?;
        let last = std::cell::RefCell::new(String::from("no answer yet"));
        c.wait_for(
            ctx,
            &format!("a {} leader (asking {})", self.service, c.host),
            timeout_seconds,
            || match leader(ctx, &c, Duration::from_secs(3)) {
                Ok(l) if l.is_empty() => {
                    *last.borrow_mut() = "no leader".into();
                    None
                }
                Ok(l) => Some(l.into()),
                Err(e) => {
                    *last.borrow_mut() = harun_runtime::diagnostic::code_and_message_of(&e).1;
                    None
                }
            },
            || last.borrow().clone(),
        )
    }
}

/// Adds the raft family to a service's script module, with the doc comments `harun doc`
/// prints.
pub fn register(module: &mut Module, raft: &'static Raft) {
    let service = raft.service.name();
    FuncRegistration::new("raft_configuration")
        .with_volatility(true)
        .with_params_info(["host: Host", "Dynamic"])
        .with_comments([format!(
            "/// The raft configuration: `{}` (with `{}`) and its index, as {service} names them.",
            raft.servers, raft.voter
        )])
        .set_into_module(module, move |ctx: NativeCallContext, host: HostHandle| {
            raft.configuration(&ctx, &host)
        });
    FuncRegistration::new("remove_peer")
        .with_volatility(true)
        .with_params_info(["host: Host", "id: &str", "bool"])
        .with_comments([
            "/// Removes a server from the raft configuration by its raft ID. A change (planned\n/// in a dry run).",
        ])
        .set_into_module(module, move |ctx: NativeCallContext, host: HostHandle, id: &str| {
            raft.remove_peer(&ctx, &host, id)
        });
    FuncRegistration::new("wait_voters")
        .with_volatility(true)
        .with_params_info(["host: Host", "n: i64", "timeout_seconds: f64", "Dynamic"])
        .with_comments(["/// Waits until the raft configuration has `n` voters; returns how many."])
        .set_into_module(
            module,
            move |ctx: NativeCallContext, host: HostHandle, n: i64, timeout_seconds: f64| {
                raft.wait_voters(&ctx, &host, n, timeout_seconds)
            },
        );
    FuncRegistration::new("wait_caught_up")
        .with_volatility(true)
        .with_params_info(["host: Host", "timeout_seconds: f64", "Dynamic"])
        .with_comments([
            "/// Waits until every server's raft log has the index the most advanced one had when\n/// asked (autopilot's view): after a snapshot restore, until every node serves it.\n/// Returns that index.",
        ])
        .set_into_module(
            module,
            move |ctx: NativeCallContext, host: HostHandle, timeout_seconds: f64| {
                raft.wait_caught_up(&ctx, &host, timeout_seconds)
            },
        );
    if let Some(path) = raft.peers {
        FuncRegistration::new("peers")
            .with_volatility(true)
            .with_params_info(["host: Host", "Dynamic"])
            .with_comments(["/// The raft peers' addresses."])
            .set_into_module(module, move |ctx: NativeCallContext, host: HostHandle| {
                Ok::<_, Box<EvalAltResult>>(to_dynamic(
                    &raft.client(&ctx, &host)?.get(&ctx, path, &[])?.json(),
                ))
            });
    }
    if let Some(leader) = raft.leader {
        FuncRegistration::new("leader")
            .with_volatility(true)
            .with_params_info(["host: Host", "String"])
            .with_comments([
                "/// The raft leader's address (`ip:port`) as this host sees it, or `\"\"` when\n/// there is none.",
            ])
            .set_into_module(module, move |ctx: NativeCallContext, host: HostHandle| {
                leader(&ctx, &raft.client(&ctx, &host)?, DEFAULT_TIMEOUT)
            });
        FuncRegistration::new("wait_leader")
            .with_volatility(true)
            .with_params_info(["host: Host", "timeout_seconds: f64", "Dynamic"])
            .with_comments(["/// Waits until the cluster has a leader; returns its address."])
            .set_into_module(
                module,
                move |ctx: NativeCallContext, host: HostHandle, timeout_seconds: f64| {
                    raft.wait_leader(&ctx, &host, leader, timeout_seconds)
                },
            );
    }
}
