//! `consul`: the Consul HTTP API for scripts, one client per topology host (its `consul`
//! block). Results are maps and arrays with the API's own field names; errors carry the
//! status and Consul's message. Registrations go only through a host's local agent.

use std::net::ToSocketAddrs;
use std::time::Duration;

use harun_runtime::codes;
use harun_runtime::error::call_error;
use harun_runtime::service::Service;
use harun_runtime::Context;
use rhai::plugin::*;
use serde_json::{json, Value};

use crate::hosts::HostHandle;
use crate::http::{count_where, encode, json_body as body, to_dynamic, ApiClient};

type RhaiResult<T> = Result<T, Box<EvalAltResult>>;

fn client(ctx: &NativeCallContext, host: &HostHandle) -> RhaiResult<ApiClient> {
    ApiClient::for_host(ctx, host, Service::Consul)
}

fn get_json(ctx: &NativeCallContext, host: &HostHandle, path: &str) -> RhaiResult<Value> {
    Ok(client(ctx, host)?.get(ctx, path, &[])?.json())
}

/// Holds the lock `key` until the run ends, through the first of `hosts` whose agent
/// answers, renewing through any of them.
fn hold_through(ctx: &NativeCallContext, hosts: &[HostHandle], key: &str) -> RhaiResult<()> {
    let context = Context::of(ctx);
    if context.is_dry_run() {
        tracing::info!("dry run: would hold the consul lock {key}");
        return Ok(());
    }
    if crate::lock::HeldKeys::of(&context).contains(key) {
        return Ok(());
    }
    let clients = hosts
        .iter()
        .map(|h| client(ctx, h))
        .collect::<RhaiResult<Vec<ApiClient>>>()?;
    if clients.is_empty() {
        return Err(call_error(
            ctx,
            codes::HOST_OPTION,
            "consul::hold wants at least one host",
        ));
    }
    // Through the first agent with a leader; the others stand by for renewals.
    let mut last = None;
    for (i, c) in clients.iter().enumerate() {
        let others: Vec<ApiClient> = clients
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != i)
            .map(|(_, o)| o.clone())
            .collect();
        match crate::lock::acquire(ctx, c, &others, key) {
            Ok(held) => {
                let at_end = context.clone();
                context.on_finish(move || held.release(&at_end));
                return Ok(());
            }
            // Another run holds it: that is the answer, whichever agent says it.
            Err(e) if crate::lock::is_locked(&e) => return Err(e),
            Err(e) => last = Some(e),
        }
    }
    Err(last.expect("at least one host was tried"))
}

/// The trap of the story: an address such as consul.service.consul names every server, so
/// a registration lands on one agent and its deregistration maybe on another, leaving a
/// stale entry. Registrations must go to the host's own agent.
fn refuse_shared_address(ctx: &NativeCallContext, c: &ApiClient) -> RhaiResult<()> {
    let authority = c
        .base
        .split("://")
        .nth(1)
        .unwrap_or(&c.base)
        .split('/')
        .next()
        .unwrap_or_default();
    let name = authority
        .rsplit_once(':')
        .map_or(authority, |(h, _)| h)
        .trim_matches(['[', ']']);
    let refuse = |why: String| {
        Err(call_error(
            ctx,
            codes::CONSUL_NOT_LOCAL_AGENT,
            format!(
                "{}: refusing to register through {} ({why}): a registration made there lands on one Consul agent and its deregistration maybe on another, leaving a stale entry; set the host's consul address to its local agent",
                c.host, c.base
            ),
        ))
    };
    let lower = name.to_ascii_lowercase();
    if lower.ends_with(".consul") && lower.contains(".service.") {
        return refuse(format!(
            "{name} is a Consul service name that resolves to every server"
        ));
    }
    let port = authority
        .rsplit_once(':')
        .and_then(|(_, p)| p.parse().ok())
        .unwrap_or(8500u16);
    if name.parse::<std::net::IpAddr>().is_err() {
        let mut addresses: Vec<std::net::IpAddr> = (name, port)
            .to_socket_addrs()
            .map(|a| a.map(|s| s.ip()).filter(|ip| !ip.is_loopback()).collect())
            .unwrap_or_default();
        addresses.sort();
        addresses.dedup();
        if addresses.len() > 1 {
            let list: Vec<String> = addresses.iter().map(|a| a.to_string()).collect();
            return refuse(format!("{name} resolves to {}", list.join(", ")));
        }
    }
    Ok(())
}

/// A KV entry with its value decoded to text (`Value` is base64 on the wire).
fn decode_entry(entry: &Value) -> Value {
    use base64::Engine;
    let mut e = entry.clone();
    if let Some(v) = entry["Value"].as_str() {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(v)
            .unwrap_or_default();
        e["Value"] = json!(String::from_utf8_lossy(&bytes));
    }
    e
}

fn alive_servers(members: &Value) -> usize {
    count_where(members, |m| {
        m["Status"] == 1 && m["Tags"]["role"] == "consul"
    })
}

#[export_module]
pub mod consul_api {
    use super::*;
    use rhai::{Array, FnPtr, Map};

    pub type Host = HostHandle;

    /// The agent's own configuration and member entry (`/v1/agent/self`).
    #[rhai_fn(volatile, return_raw)]
    pub fn agent_self(ctx: NativeCallContext, host: Host) -> RhaiResult<Dynamic> {
        Ok(to_dynamic(&get_json(&ctx, &host, "/v1/agent/self")?))
    }

    /// The LAN members the agent knows: `Name`, `Addr`, `Port`, `Status` (1 = alive),
    /// `Tags` (`role` is `consul` for servers).
    #[rhai_fn(volatile, return_raw)]
    pub fn members(ctx: NativeCallContext, host: Host) -> RhaiResult<Dynamic> {
        Ok(to_dynamic(&get_json(&ctx, &host, "/v1/agent/members")?))
    }

    /// Autopilot's health of the servers: `Healthy`, `FailureTolerance`, and `Servers`
    /// (`Name`, `Address`, `SerfStatus`, `Leader`, `Voter`, `Healthy`, `LastContact`).
    #[rhai_fn(volatile, return_raw)]
    pub fn autopilot_health(ctx: NativeCallContext, host: Host) -> RhaiResult<Dynamic> {
        Ok(to_dynamic(&get_json(
            &ctx,
            &host,
            "/v1/operator/autopilot/health",
        )?))
    }

    /// Asks the agent to join the cluster of the agent at `address`. A change.
    #[rhai_fn(volatile, return_raw)]
    pub fn join(ctx: NativeCallContext, host: Host, address: &str) -> RhaiResult<bool> {
        let c = client(&ctx, &host)?;
        c.change(
            &ctx,
            "PUT",
            &format!("/v1/agent/join/{}", encode(address)),
            None,
            &format!("consul: join {address}"),
        )
    }

    /// Makes the agent leave its cluster gracefully (it shuts down). A change.
    #[rhai_fn(volatile, return_raw)]
    pub fn leave(ctx: NativeCallContext, host: Host) -> RhaiResult<bool> {
        let c = client(&ctx, &host)?;
        c.change(
            &ctx,
            "PUT",
            "/v1/agent/leave",
            None,
            "consul: leave the cluster",
        )
    }

    /// Makes the agent read its configuration files again (`consul reload`), as after a
    /// check or service file was added beside its config. A change.
    #[rhai_fn(volatile, return_raw)]
    pub fn reload(ctx: NativeCallContext, host: Host) -> RhaiResult<bool> {
        let c = client(&ctx, &host)?;
        c.change(
            &ctx,
            "PUT",
            "/v1/agent/reload",
            None,
            "consul: reload the agent's configuration",
        )
    }

    /// Marks a failed member as left. A change.
    #[rhai_fn(volatile, return_raw)]
    pub fn force_leave(ctx: NativeCallContext, host: Host, node: &str) -> RhaiResult<bool> {
        force_leave_pruned(ctx, host, node, false)
    }

    /// `force_leave`; with `prune` the member is removed from the member list altogether
    /// (Consul 1.6.2+, `?prune`), so that a new machine may join under its name.
    #[rhai_fn(name = "force_leave", volatile, return_raw)]
    pub fn force_leave_pruned(
        ctx: NativeCallContext,
        host: Host,
        node: &str,
        prune: bool,
    ) -> RhaiResult<bool> {
        let c = client(&ctx, &host)?;
        let (query, how) = if prune {
            ("?prune=1", " -prune")
        } else {
            ("", "")
        };
        c.change(
            &ctx,
            "PUT",
            &format!("/v1/agent/force-leave/{}{query}", encode(node)),
            None,
            &format!("consul: force-leave{how} {node}"),
        )
    }

    /// The catalog's services: name to tags.
    #[rhai_fn(volatile, return_raw)]
    pub fn services(ctx: NativeCallContext, host: Host) -> RhaiResult<Dynamic> {
        Ok(to_dynamic(&get_json(&ctx, &host, "/v1/catalog/services")?))
    }

    /// The catalog's nodes.
    #[rhai_fn(volatile, return_raw)]
    pub fn nodes(ctx: NativeCallContext, host: Host) -> RhaiResult<Dynamic> {
        Ok(to_dynamic(&get_json(&ctx, &host, "/v1/catalog/nodes")?))
    }

    /// The catalog's entries of one service (`Node`, `ServiceID`, `ServiceTags`, ...).
    #[rhai_fn(volatile, return_raw)]
    pub fn service(ctx: NativeCallContext, host: Host, name: &str) -> RhaiResult<Dynamic> {
        let path = format!("/v1/catalog/service/{}", encode(name));
        Ok(to_dynamic(&get_json(&ctx, &host, &path)?))
    }

    /// A service's instances with their node and checks; `passing_only` keeps the healthy.
    #[rhai_fn(volatile, return_raw)]
    pub fn health_service(
        ctx: NativeCallContext,
        host: Host,
        name: &str,
        passing_only: bool,
    ) -> RhaiResult<Dynamic> {
        let mut path = format!("/v1/health/service/{}", encode(name));
        if passing_only {
            path.push_str("?passing");
        }
        Ok(to_dynamic(&get_json(&ctx, &host, &path)?))
    }

    /// The checks of one node.
    #[rhai_fn(volatile, return_raw)]
    pub fn health_node(ctx: NativeCallContext, host: Host, node: &str) -> RhaiResult<Dynamic> {
        let path = format!("/v1/health/node/{}", encode(node));
        Ok(to_dynamic(&get_json(&ctx, &host, &path)?))
    }

    /// Every check in a state: `passing`, `warning`, `critical` or `any`.
    #[rhai_fn(volatile, return_raw)]
    pub fn health_state(ctx: NativeCallContext, host: Host, state: &str) -> RhaiResult<Dynamic> {
        let path = format!("/v1/health/state/{}", encode(state));
        Ok(to_dynamic(&get_json(&ctx, &host, &path)?))
    }

    /// The services registered at this host's agent (ID to definition).
    #[rhai_fn(volatile, return_raw)]
    pub fn agent_services(ctx: NativeCallContext, host: Host) -> RhaiResult<Dynamic> {
        Ok(to_dynamic(&get_json(&ctx, &host, "/v1/agent/services")?))
    }

    /// Registers a service at this host's local agent (the map is the API's definition:
    /// `ID`, `Name`, `Tags`, `Port`, `Check`, ...). Refused through an address that names
    /// several servers. A change.
    #[rhai_fn(volatile, return_raw)]
    pub fn register(ctx: NativeCallContext, host: Host, definition: Map) -> RhaiResult<bool> {
        let c = client(&ctx, &host)?;
        refuse_shared_address(&ctx, &c)?;
        let definition = crate::http::from_dynamic(&Dynamic::from_map(definition));
        let name = definition["Name"].as_str().unwrap_or("?").to_string();
        c.change(
            &ctx,
            "PUT",
            "/v1/agent/service/register",
            body(&definition),
            &format!("consul: register service {name} at {}", c.host),
        )
    }

    /// Deregisters a service by ID at this host's local agent, then checks that the
    /// agent no longer has it: Consul 1.8 answers 200 even for an ID it does not know,
    /// and the entry would stay. Refused through an address that names several servers.
    /// A change.
    #[rhai_fn(volatile, return_raw)]
    pub fn deregister(ctx: NativeCallContext, host: Host, id: &str) -> RhaiResult<bool> {
        let c = client(&ctx, &host)?;
        refuse_shared_address(&ctx, &c)?;
        let known = c.get(&ctx, "/v1/agent/services", &[])?.json();
        if known.get(id).is_none() {
            return Err(call_error(
                &ctx,
                codes::CONSUL_NOT_FOUND,
                format!(
                    "consul on {}: the agent has no service {id:?}; it was registered at another agent (look for it in consul::service(...) and deregister it there)",
                    c.host
                ),
            ));
        }
        c.change(
            &ctx,
            "PUT",
            &format!("/v1/agent/service/deregister/{}", encode(id)),
            None,
            &format!("consul: deregister service {id} at {}", c.host),
        )
    }

    /// A KV value as text, or `()` when the key does not exist.
    #[rhai_fn(volatile, return_raw)]
    pub fn kv_get(ctx: NativeCallContext, host: Host, key: &str) -> RhaiResult<Dynamic> {
        let c = client(&ctx, &host)?;
        let reply = c.get(&ctx, &format!("/v1/kv/{}?raw", encode(key)), &[404])?;
        if reply.status == 404 {
            return Ok(Dynamic::UNIT);
        }
        Ok(String::from_utf8_lossy(&reply.body).to_string().into())
    }

    /// Every entry under `prefix` (`Key`, `Value` as text, `Flags`, `CreateIndex`,
    /// `ModifyIndex`, `LockIndex`, `Session`); `[]` when there is none.
    #[rhai_fn(volatile, return_raw)]
    pub fn kv_list(ctx: NativeCallContext, host: Host, prefix: &str) -> RhaiResult<Array> {
        let c = client(&ctx, &host)?;
        let reply = c.get(&ctx, &format!("/v1/kv/{}?recurse", encode(prefix)), &[404])?;
        if reply.status == 404 {
            return Ok(Array::new());
        }
        Ok(reply
            .json()
            .as_array()
            .map(|a| a.iter().map(|e| to_dynamic(&decode_entry(e))).collect())
            .unwrap_or_default())
    }

    /// The keys under `prefix`.
    #[rhai_fn(volatile, return_raw)]
    pub fn kv_keys(ctx: NativeCallContext, host: Host, prefix: &str) -> RhaiResult<Array> {
        let c = client(&ctx, &host)?;
        let reply = c.get(&ctx, &format!("/v1/kv/{}?keys", encode(prefix)), &[404])?;
        if reply.status == 404 {
            return Ok(Array::new());
        }
        Ok(reply
            .json()
            .as_array()
            .map(|a| a.iter().map(to_dynamic).collect())
            .unwrap_or_default())
    }

    /// Writes a KV value; true when written. A change.
    #[rhai_fn(name = "kv_put", volatile, return_raw)]
    pub fn kv_put(ctx: NativeCallContext, host: Host, key: &str, value: &str) -> RhaiResult<bool> {
        kv_write(&ctx, &host, key, value, None)
    }

    /// Writes a KV value only if its ModifyIndex is still `cas` (0: only if the key does
    /// not exist); false when someone changed it first. A change.
    #[rhai_fn(name = "kv_put", volatile, return_raw)]
    pub fn kv_put_cas(
        ctx: NativeCallContext,
        host: Host,
        key: &str,
        value: &str,
        cas: i64,
    ) -> RhaiResult<bool> {
        kv_write(&ctx, &host, key, value, Some(cas))
    }

    /// Deletes a key; true when done. A change.
    #[rhai_fn(volatile, return_raw)]
    pub fn kv_delete(ctx: NativeCallContext, host: Host, key: &str) -> RhaiResult<bool> {
        let c = client(&ctx, &host)?;
        let reply = c.write(
            &ctx,
            "DELETE",
            &format!("/v1/kv/{}", encode(key)),
            None,
            &format!("consul: delete kv {key}"),
        )?;
        Ok(reply.is_some_and(|r| r.text() == "true"))
    }

    /// Creates a session (`#{Name, TTL, Behavior, LockDelay, ...}` as the API takes it);
    /// returns its ID ("" in a dry run). A change.
    #[rhai_fn(volatile, return_raw)]
    pub fn session_create(
        ctx: NativeCallContext,
        host: Host,
        definition: Map,
    ) -> RhaiResult<String> {
        let c = client(&ctx, &host)?;
        let definition = crate::http::from_dynamic(&Dynamic::from_map(definition));
        let reply = c.write(
            &ctx,
            "PUT",
            "/v1/session/create",
            body(&definition),
            "consul: create a session",
        )?;
        Ok(reply
            .and_then(|r| r.json()["ID"].as_str().map(str::to_string))
            .unwrap_or_default())
    }

    /// Destroys a session, releasing its locks. A change.
    #[rhai_fn(volatile, return_raw)]
    pub fn session_destroy(ctx: NativeCallContext, host: Host, id: &str) -> RhaiResult<bool> {
        let c = client(&ctx, &host)?;
        c.change(
            &ctx,
            "PUT",
            &format!("/v1/session/destroy/{}", encode(id)),
            None,
            &format!("consul: destroy session {id}"),
        )
    }

    /// The live sessions (`ID`, `Name`, `Node`, `TTL`, ...).
    #[rhai_fn(volatile, return_raw)]
    pub fn sessions(ctx: NativeCallContext, host: Host) -> RhaiResult<Dynamic> {
        Ok(to_dynamic(&get_json(&ctx, &host, "/v1/session/list")?))
    }

    /// Runs `f` while holding the Consul lock `key`, so two runs of a script cannot change
    /// a cluster at once. The lock lives as long as this run: its session (TTL 10 s) is
    /// renewed in the background, and lapses within about 20 s of the last renewal when
    /// the process dies (Consul may keep a session up to twice its TTL), plus a lock delay
    /// of 1 s. Its value names the holder (host, user, pid, script, start). A taken lock
    /// fails at once naming its holder; a holder on this machine whose process is gone is
    /// taken over after confirmation (`--yes`). A lock lost during the run (the session
    /// expired or was destroyed) stops the run before its next change. The lock is
    /// released however `f` ends; when the run already holds `key`, `f` just runs.
    #[rhai_fn(volatile, return_raw)]
    pub fn lock(ctx: NativeCallContext, host: Host, key: &str, f: FnPtr) -> RhaiResult<Dynamic> {
        let context = Context::of(&ctx);
        if context.is_dry_run() {
            tracing::info!("dry run: would hold the consul lock {key}");
            return f.call_within_context(&ctx, ());
        }
        if crate::lock::HeldKeys::of(&context).contains(key) {
            return f.call_within_context(&ctx, ());
        }
        let c = client(&ctx, &host)?;
        let held = crate::lock::acquire(&ctx, &c, &[], key)?;
        let outcome = f.call_within_context(&ctx, ());
        held.release(&context);
        outcome
    }

    /// Takes the Consul lock `key` (as `lock` does) and holds it until the run ends,
    /// however it ends: for a script whose every later step must not overlap another
    /// run. Nothing happens when the run already holds it.
    #[rhai_fn(volatile, return_raw)]
    pub fn hold(ctx: NativeCallContext, host: Host, key: &str) -> RhaiResult<()> {
        hold_through(&ctx, &[host], key)
    }

    /// `hold` through the agents of several hosts: taken through the first, renewed and
    /// released through whichever answers, so the lock outlives the restart of any one
    /// agent (a rolling restart restarts them all, one at a time).
    #[rhai_fn(name = "hold", volatile, return_raw)]
    pub fn hold_on(ctx: NativeCallContext, hosts: Array, key: &str) -> RhaiResult<()> {
        let hosts = hosts
            .into_iter()
            .map(|h| {
                h.try_cast::<Host>().ok_or_else(|| {
                    call_error(
                        &ctx,
                        codes::HOST_OPTION,
                        "consul::hold wants hosts: hold([h1, h2], key)",
                    )
                })
            })
            .collect::<RhaiResult<Vec<Host>>>()?;
        hold_through(&ctx, &hosts, key)
    }

    /// Resolves `NAME.service.consul` through the DNS server `dns` (`ip:port`: Consul's
    /// 8600 or the site's resolver) and compares with the catalog's addresses of `name`:
    /// `#{name, dns, catalog, missing, ok}`. The story: DNS must know all three servers.
    #[rhai_fn(volatile, return_raw)]
    pub fn dns_check(ctx: NativeCallContext, host: Host, name: &str, dns: &str) -> RhaiResult<Map> {
        let server: std::net::SocketAddr = dns
            .parse()
            .or_else(|_| format!("{dns}:53").parse())
            .map_err(|_| {
                call_error(
                    &ctx,
                    codes::CONSUL_DNS,
                    format!("{dns:?} is not an ip:port of a DNS server"),
                )
            })?;
        let catalog_entries = get_json(
            &ctx,
            &host,
            &format!("/v1/catalog/service/{}", encode(name)),
        )?;
        let mut catalog: Vec<String> = catalog_entries
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|e| {
                e["ServiceAddress"]
                    .as_str()
                    .filter(|a| !a.is_empty())
                    .or(e["Address"].as_str())
                    .map(str::to_string)
            })
            .collect();
        catalog.sort();
        catalog.dedup();
        let fqdn = format!("{name}.service.consul.");
        let lookup = async move { super::resolve(server, &fqdn).await };
        let outcome = Context::of(&ctx)
            .block_on(Duration::from_secs(10), lookup)
            .map_err(|i| {
                harun_runtime::diagnostic::interrupt_error(
                    i,
                    &format!("DNS lookup of {name}.service.consul"),
                    ctx.call_position(),
                )
            })?;
        // "No records" is an answer (nothing known), not a failure.
        let mut found = match outcome {
            Ok(ips) => ips,
            Err(e) if e.to_string().to_lowercase().contains("no record") => Vec::new(),
            Err(e) => {
                return Err(call_error(
                    &ctx,
                    codes::CONSUL_DNS,
                    format!("DNS lookup of {name}.service.consul through {server}: {e}"),
                ))
            }
        };
        found.sort();
        found.dedup();
        let missing: Vec<String> = catalog
            .iter()
            .filter(|a| !found.contains(a))
            .cloned()
            .collect();
        let mut out = Map::new();
        out.insert("name".into(), name.into());
        out.insert(
            "ok".into(),
            (missing.is_empty() && !found.is_empty()).into(),
        );
        let list = |items: Vec<String>| -> Dynamic {
            items
                .into_iter()
                .map(Dynamic::from)
                .collect::<Array>()
                .into()
        };
        out.insert("dns".into(), list(found));
        out.insert("catalog".into(), list(catalog));
        out.insert("missing".into(), list(missing));
        Ok(out)
    }

    /// Waits until `n` Consul servers are alive members.
    #[rhai_fn(volatile, return_raw)]
    pub fn wait_servers(
        ctx: NativeCallContext,
        host: Host,
        n: i64,
        timeout_seconds: f64,
    ) -> RhaiResult<Dynamic> {
        let c = client(&ctx, &host)?;
        let what = format!("{n} alive consul servers");
        c.wait_count(
            &ctx,
            &what,
            "/v1/agent/members",
            n,
            timeout_seconds,
            "alive",
            alive_servers,
        )
    }
}

fn kv_write(
    ctx: &NativeCallContext,
    host: &HostHandle,
    key: &str,
    value: &str,
    cas: Option<i64>,
) -> RhaiResult<bool> {
    let c = client(ctx, host)?;
    let mut path = format!("/v1/kv/{}", encode(key));
    if let Some(cas) = cas {
        path.push_str(&format!("?cas={cas}"));
    }
    let reply = c.write(
        ctx,
        "PUT",
        &path,
        Some(value.as_bytes().to_vec()),
        &format!("consul: put kv {key}"),
    )?;
    Ok(reply.is_none_or(|r| r.text() == "true"))
}

/// The addresses `fqdn` resolves to through the DNS server `server` alone (UDP).
async fn resolve(
    server: std::net::SocketAddr,
    fqdn: &str,
) -> Result<Vec<String>, hickory_resolver::net::NetError> {
    use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolverConfig};
    let mut connection = ConnectionConfig::udp();
    connection.port = server.port();
    let config = ResolverConfig::from_name_servers(vec![NameServerConfig::new(
        server.ip(),
        true,
        vec![connection],
    )]);
    let resolver = hickory_resolver::Resolver::builder_with_config(
        config,
        hickory_resolver::net::runtime::TokioRuntimeProvider::default(),
    )
    .build()?;
    let ips = resolver.lookup_ip(fqdn).await?;
    Ok(ips.iter().map(|ip| ip.to_string()).collect())
}
