//! `vault`: the Vault HTTP API for scripts, one client per topology host (its `vault`
//! block). Unseal keys and tokens are Secrets: they go to Vault and nowhere else (not in
//! errors, logs, plans or the audit log). Each node is unsealed on its own, as Vault wants.

use std::time::Duration;

use harun_runtime::codes;
use harun_runtime::error::call_error;
use harun_runtime::service::Service;
use harun_runtime::{Context, Secret};
use rhai::plugin::*;
use serde_json::{json, Value};

use crate::hosts::HostHandle;
use crate::http::{encode, json_body as body, to_dynamic, ApiClient, DEFAULT_TIMEOUT};

type RhaiResult<T> = Result<T, Box<EvalAltResult>>;

fn client(ctx: &NativeCallContext, host: &HostHandle) -> RhaiResult<ApiClient> {
    ApiClient::for_host(ctx, host, Service::Vault)
}

/// The node's state from `/v1/sys/health` and its status code.
fn state_of(status: u16) -> &'static str {
    match status {
        200 => "active",
        429 => "standby",
        472 => "dr_secondary",
        473 => "performance_standby",
        474 => "standby_unhealthy",
        501 => "uninitialized",
        503 => "sealed",
        530 => "removed",
        _ => "unknown",
    }
}

fn health_of(ctx: &NativeCallContext, c: &ApiClient, timeout: Duration) -> RhaiResult<Value> {
    // Every state is an answer here, so no status is an error.
    let reply = c.read(ctx, "/v1/sys/health", timeout)?;
    let mut v = reply.json();
    if !v.is_object() {
        v = json!({});
    }
    v["state"] = json!(state_of(reply.status));
    v["status"] = json!(reply.status);
    Ok(v)
}

fn secrets_of(ctx: &NativeCallContext, keys: &rhai::Array) -> RhaiResult<Vec<Secret>> {
    keys.iter()
        .map(|k| {
            if let Some(s) = k.clone().try_cast::<Secret>() {
                Ok(s)
            } else {
                Err(call_error(
                    ctx,
                    codes::VAULT_KEY_NOT_SECRET,
                    "unseal keys must be Secrets (vault::keys(host), secret::file, secret::env): a plain string could end up in output",
                ))
            }
        })
        .collect()
}

/// How long `unseal` waits by default for a joining node to unseal after its threshold:
/// Vault polls for the leader's keyring every second; a Pi may take a few rounds.
const JOINING_UNSEAL_TIMEOUT: f64 = 60.0;

/// Whether a call failed for want of an answer in time (`ApiClient::send`'s "no answer
/// within").
fn is_timeout(e: &EvalAltResult) -> bool {
    match e {
        EvalAltResult::ErrorRuntime(v, _) => {
            let (code, message) = harun_runtime::error::code_and_message(v);
            code == codes::VAULT_UNREACHABLE && message.contains(": no answer within ")
        }
        _ => false,
    }
}

/// A threshold share that got no answer: what a joining node does when the shares do not
/// open the leader's keyring (vault/core.go `unsealWithRaft` holds the state lock while
/// it retries the join; OpenBao 2.7.2 answers nothing, seal-status included, until killed).
fn hung_unseal(ctx: &NativeCallContext, host: &str) -> Box<EvalAltResult> {
    call_error(
        ctx,
        codes::VAULT_UNSEAL_FAILED,
        format!(
            "vault on {host}: no answer to the threshold share within {}s: a node joining raft hangs when the shares do not open the leader's keyring (shares of another cluster, or mixed), and answers nothing until its process is killed; if {host} is joining, restart vault there (kill it if it does not stop) and unseal it with this cluster's keys; otherwise it is unreachable or overloaded",
            DEFAULT_TIMEOUT.as_secs()
        ),
    )
}

/// After the threshold share on a node joining raft: polls the seal status until the node
/// is unsealed, saying what it waits for.
fn wait_joining_unseal(
    ctx: &NativeCallContext,
    c: &ApiClient,
    timeout_seconds: f64,
) -> RhaiResult<Value> {
    tracing::info!(
        "vault on {}: the threshold is reached and the node is joining raft; waiting up to {timeout_seconds}s for it to unseal once the leader's keyring arrives",
        c.host
    );
    let status = std::cell::RefCell::new(Value::Null);
    let what = format!(
        "vault on {} to unseal (joining raft: the leader's keyring has to arrive first)",
        c.host
    );
    let _ = c.wait_for(
        ctx,
        &what,
        timeout_seconds,
        || {
            let v = c.get(ctx, "/v1/sys/seal-status", &[]).ok()?.json();
            let done = v["sealed"] == false;
            *status.borrow_mut() = v;
            done.then(|| Dynamic::from(true))
        },
        || {
            let v = status.borrow();
            format!(
                "sealed: {}, progress {}/{}",
                v["sealed"], v["progress"], v["t"]
            )
        },
    )?;
    Ok(status.into_inner())
}

#[export_module]
pub mod vault_api {
    use super::*;
    use rhai::{Array, Map};

    pub type Host = HostHandle;

    /// The node's health with its `state`: `active`, `standby`, `sealed`, `uninitialized`,
    /// `performance_standby`, `dr_secondary`, `standby_unhealthy`, `removed` or `unknown`,
    /// beside Vault's own fields (`initialized`, `sealed`, `standby`, `version`, ...).
    #[rhai_fn(volatile, return_raw)]
    pub fn health(ctx: NativeCallContext, host: Host) -> RhaiResult<Dynamic> {
        let c = client(&ctx, &host)?;
        Ok(to_dynamic(&health_of(&ctx, &c, DEFAULT_TIMEOUT)?))
    }

    /// The seal status: `initialized`, `sealed`, `t` (threshold), `n` (shares), `progress`,
    /// `storage_type`, ...
    #[rhai_fn(volatile, return_raw)]
    pub fn seal_status(ctx: NativeCallContext, host: Host) -> RhaiResult<Dynamic> {
        let c = client(&ctx, &host)?;
        Ok(to_dynamic(&c.get(&ctx, "/v1/sys/seal-status", &[])?.json()))
    }

    /// The active node as this node sees it: `ha_enabled`, `is_self`, `leader_address`.
    #[rhai_fn(volatile, return_raw)]
    pub fn leader(ctx: NativeCallContext, host: Host) -> RhaiResult<Dynamic> {
        let c = client(&ctx, &host)?;
        Ok(to_dynamic(&c.get(&ctx, "/v1/sys/leader", &[])?.json()))
    }

    /// Initializes a new Vault: `#{keys: [Secret], root_token: Secret}`. Refused on an
    /// initialized node. Store the keys before anything else. A change.
    #[rhai_fn(volatile, return_raw)]
    pub fn init(
        ctx: NativeCallContext,
        host: Host,
        shares: i64,
        threshold: i64,
    ) -> RhaiResult<Map> {
        let c = client(&ctx, &host)?;
        let reply = c.write(
            &ctx,
            "PUT",
            "/v1/sys/init",
            body(&json!({"secret_shares": shares, "secret_threshold": threshold})),
            &format!("vault: initialize with {shares} key shares, threshold {threshold}"),
        )?;
        let mut out = Map::new();
        let context = Context::of(&ctx);
        if let Some(reply) = reply {
            let v = reply.json();
            let keys: Array = v["keys"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .map(|k| Dynamic::from(context.secret(k)))
                .collect();
            out.insert("keys".into(), keys.into());
            out.insert(
                "root_token".into(),
                Dynamic::from(context.secret(v["root_token"].as_str().unwrap_or_default())),
            );
        }
        Ok(out)
    }

    /// Unseals this node with `keys` (Secrets), one at a time until Vault says unsealed;
    /// returns the seal status. A wrong key fails with Vault's words once the threshold is
    /// reached, and no key is ever shown. Each node must be unsealed on its own. A change.
    #[rhai_fn(volatile, return_raw)]
    pub fn unseal(ctx: NativeCallContext, host: Host, keys: Array) -> RhaiResult<Dynamic> {
        unseal_within(ctx, host, keys, JOINING_UNSEAL_TIMEOUT)
    }

    /// `unseal(host, keys)`, waiting at most `timeout_seconds` for a node that is joining
    /// raft to finish its unseal. A change.
    #[rhai_fn(name = "unseal", volatile, return_raw)]
    pub fn unseal_within(
        ctx: NativeCallContext,
        host: Host,
        keys: Array,
        timeout_seconds: f64,
    ) -> RhaiResult<Dynamic> {
        unseal_impl(ctx, host, keys, timeout_seconds, false)
    }

    /// Gives this node some of the unseal shares (Secrets), toward a threshold that other
    /// callers may complete: Vault counts shares from any caller toward one unseal and
    /// ignores a share it already has (vault/core.go `unsealFragment`). Returns the seal
    /// status after them: `sealed` and `progress` say whether more are needed. A wrong
    /// share fails with Vault's words once the threshold is reached. A change.
    #[rhai_fn(volatile, return_raw)]
    pub fn give_shares(ctx: NativeCallContext, host: Host, keys: Array) -> RhaiResult<Dynamic> {
        unseal_impl(ctx, host, keys, JOINING_UNSEAL_TIMEOUT, true)
    }

    /// This host's own unseal shares, from the file the vault block's `unseal_share_file`
    /// names (mode 0600, one per line), read where harun runs: on the controller itself,
    /// from its unseal timer (scripts/unseal.rhai).
    #[rhai_fn(volatile, return_raw)]
    pub fn shares(ctx: NativeCallContext, host: Host) -> RhaiResult<Array> {
        let path = host
            .service(Service::Vault)
            .unseal_share_file
            .clone()
            .ok_or_else(|| {
                call_error(
                    &ctx,
                    codes::VAULT_NO_KEYS,
                    format!(
                        "{}: no unseal_share_file in the topology's vault block",
                        host.name()
                    ),
                )
            })?;
        let text = harun_runtime::secret::read_private_file(&path)
            .map_err(|(code, message)| call_error(&ctx, code, message))?;
        let context = Context::of(&ctx);
        Ok(text
            .split_whitespace()
            .map(|k| Dynamic::from(context.secret(k)))
            .collect())
    }

    /// Seals this (active) node. A change.
    #[rhai_fn(volatile, return_raw)]
    pub fn seal(ctx: NativeCallContext, host: Host) -> RhaiResult<bool> {
        let c = client(&ctx, &host)?;
        c.change(&ctx, "PUT", "/v1/sys/seal", None, "vault: seal")
    }

    /// Asks this (sealed, uninitialized, raft) node to join the cluster whose leader
    /// answers at `leader_api_addr`; it must then be unsealed with the cluster's keys.
    /// A change.
    #[rhai_fn(volatile, return_raw)]
    pub fn raft_join(
        ctx: NativeCallContext,
        host: Host,
        leader_api_addr: &str,
    ) -> RhaiResult<bool> {
        let c = client(&ctx, &host)?;
        let reply = c.write(
            &ctx,
            "PUT",
            "/v1/sys/storage/raft/join",
            body(&json!({"leader_api_addr": leader_api_addr})),
            &format!("vault: join the raft cluster of {leader_api_addr}"),
        )?;
        Ok(reply.is_none_or(|r| r.json()["joined"] == true))
    }

    /// Asks the active node to step down (`sys/step-down`): with raft storage it hands
    /// raft leadership to another voter, which becomes active; the node stays a standby.
    /// For a rolling restart: the active node steps down before it restarts. A change.
    #[rhai_fn(volatile, return_raw)]
    pub fn step_down(ctx: NativeCallContext, host: Host) -> RhaiResult<bool> {
        let c = client(&ctx, &host)?;
        c.change(
            &ctx,
            "PUT",
            "/v1/sys/step-down",
            None,
            &format!("vault: step down on {}", host.name()),
        )
    }

    /// Autopilot's view: `healthy` (every server, non-voters included), `failure_tolerance`,
    /// `leader`, `voters`, `servers`; `()` while autopilot has not built its state yet (Vault
    /// answers 404 just after a leader is elected, and its Go client returns nil).
    #[rhai_fn(volatile, return_raw)]
    pub fn autopilot_state(ctx: NativeCallContext, host: Host) -> RhaiResult<Dynamic> {
        let c = client(&ctx, &host)?;
        let reply = c.get(&ctx, "/v1/sys/storage/raft/autopilot/state", &[404])?;
        if reply.status == 404 {
            return Ok(Dynamic::UNIT);
        }
        Ok(to_dynamic(&reply.json()["data"]))
    }

    /// Reads a KV version 2 secret's data (`mount` such as "secret", `path` under it);
    /// `()` when there is none.
    #[rhai_fn(volatile, return_raw)]
    pub fn kv_read(
        ctx: NativeCallContext,
        host: Host,
        mount: &str,
        path: &str,
    ) -> RhaiResult<Dynamic> {
        let c = client(&ctx, &host)?;
        let reply = c.get(
            &ctx,
            &format!("/v1/{}/data/{}", encode(mount), encode(path)),
            &[404],
        )?;
        if reply.status == 404 {
            return Ok(Dynamic::UNIT);
        }
        Ok(to_dynamic(&reply.json()["data"]["data"]))
    }

    /// Writes a KV version 2 secret; returns its new version (0 in a dry run). A change.
    #[rhai_fn(volatile, return_raw)]
    pub fn kv_write(
        ctx: NativeCallContext,
        host: Host,
        mount: &str,
        path: &str,
        data: Map,
    ) -> RhaiResult<i64> {
        let c = client(&ctx, &host)?;
        let data = crate::http::from_dynamic(&Dynamic::from_map(data));
        let reply = c.write(
            &ctx,
            "POST",
            &format!("/v1/{}/data/{}", encode(mount), encode(path)),
            body(&json!({"data": data})),
            &format!("vault: write {mount}/{path}"),
        )?;
        Ok(reply
            .and_then(|r| r.json()["data"]["version"].as_i64())
            .unwrap_or(0))
    }

    /// Every secret path under `path` in a KV version 2 mount, depth first ("" for all).
    #[rhai_fn(volatile, return_raw)]
    pub fn kv_list(
        ctx: NativeCallContext,
        host: Host,
        mount: &str,
        path: &str,
    ) -> RhaiResult<Array> {
        let c = client(&ctx, &host)?;
        let mut out = Array::new();
        let mut pending = vec![path.trim_matches('/').to_string()];
        while let Some(dir) = pending.pop() {
            let url = format!("/v1/{}/metadata/{}?list=true", encode(mount), encode(&dir));
            let reply = c.get(&ctx, &url, &[404])?;
            if reply.status == 404 {
                continue;
            }
            let keys = reply.json()["data"]["keys"].clone();
            let mut children: Vec<String> = keys
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .map(|k| {
                    if dir.is_empty() {
                        k.to_string()
                    } else {
                        format!("{dir}/{k}")
                    }
                })
                .collect();
            children.sort();
            for child in children.into_iter().rev() {
                match child.strip_suffix('/') {
                    Some(sub) => pending.push(sub.to_string()),
                    None => out.push(child.into()),
                }
            }
        }
        out.sort_by_key(|a| a.to_string());
        Ok(out)
    }

    /// The unseal keys for this host, as Secrets: from the topology's `keys_file` (mode
    /// 0600, one key per line), else `VAULT_UNSEAL_KEYS` (separated by commas or spaces),
    /// else asked for on the terminal, as many as the threshold.
    #[rhai_fn(volatile, return_raw)]
    pub fn keys(ctx: NativeCallContext, host: Host) -> RhaiResult<Array> {
        let context = Context::of(&ctx);
        let to_secrets = |text: &str| -> Array {
            text.split(|c: char| c == ',' || c.is_whitespace())
                .filter(|k| !k.is_empty())
                .map(|k| Dynamic::from(context.secret(k)))
                .collect()
        };
        if let Some(path) = &host.service(Service::Vault).keys_file {
            let text = harun_runtime::secret::read_private_file(path)
                .map_err(|(code, message)| call_error(&ctx, code, message))?;
            return Ok(to_secrets(&text));
        }
        if let Ok(text) = std::env::var("VAULT_UNSEAL_KEYS") {
            return Ok(to_secrets(&text));
        }
        let c = client(&ctx, &host)?;
        let status = c.get(&ctx, "/v1/sys/seal-status", &[])?.json();
        let threshold = status["t"].as_u64().unwrap_or(1).max(1);
        use std::io::IsTerminal;
        if !std::io::stdin().is_terminal() {
            return Err(call_error(
                &ctx,
                codes::VAULT_NO_KEYS,
                format!(
                    "no unseal keys for {}: set `keys_file` in the topology's vault block, or VAULT_UNSEAL_KEYS, or run on a terminal to be asked",
                    host.name()
                ),
            ));
        }
        let mut out = Array::new();
        for i in 1..=threshold {
            let key = rpassword::prompt_password(format!(
                "unseal key {i} of {threshold} for {}: ",
                host.name()
            ))
            .map_err(|e| {
                call_error(
                    &ctx,
                    codes::VAULT_NO_KEYS,
                    format!("cannot read an unseal key: {e}"),
                )
            })?;
            out.push(Dynamic::from(context.secret(key)));
        }
        Ok(out)
    }

    /// Waits until this node is unsealed.
    #[rhai_fn(volatile, return_raw)]
    pub fn wait_unsealed(
        ctx: NativeCallContext,
        host: Host,
        timeout_seconds: f64,
    ) -> RhaiResult<Dynamic> {
        let c = client(&ctx, &host)?;
        let seen = std::cell::RefCell::new(String::from("no answer"));
        c.wait_for(
            &ctx,
            &format!("vault on {} to be unsealed", c.host),
            timeout_seconds,
            || {
                let h = health_of(&ctx, &c, Duration::from_secs(3)).ok()?;
                let state = h["state"].as_str().unwrap_or("unknown").to_string();
                *seen.borrow_mut() = state.clone();
                (state == "active" || state == "standby").then(|| state.into())
            },
            || seen.borrow().clone(),
        )
    }

    /// Waits until this node has an active node in its cluster (itself or another); returns
    /// the active node's address.
    #[rhai_fn(volatile, return_raw)]
    pub fn wait_active(
        ctx: NativeCallContext,
        host: Host,
        timeout_seconds: f64,
    ) -> RhaiResult<Dynamic> {
        let c = client(&ctx, &host)?;
        let seen = std::cell::RefCell::new(String::from("no answer"));
        c.wait_for(
            &ctx,
            &format!("an active vault (asking {})", c.host),
            timeout_seconds,
            || {
                let r = c
                    .read(&ctx, "/v1/sys/leader", Duration::from_secs(3))
                    .ok()?;
                let v = r.json();
                if v["ha_enabled"] == false && r.status == 200 {
                    return Some(c.base.clone().into());
                }
                let leader = v["leader_address"].as_str().unwrap_or_default().to_string();
                *seen.borrow_mut() = if leader.is_empty() {
                    format!("status {}, no leader", r.status)
                } else {
                    leader.clone()
                };
                (!leader.is_empty()).then(|| leader.into())
            },
            || seen.borrow().clone(),
        )
    }
}

/// `unseal` and `give_shares`: with `partial`, fewer shares than the threshold are no
/// error; the status after them is the answer.
fn unseal_impl(
    ctx: NativeCallContext,
    host: HostHandle,
    keys: rhai::Array,
    timeout_seconds: f64,
    partial: bool,
) -> RhaiResult<Dynamic> {
    let timeout = timeout_seconds;
    let c = client(&ctx, &host)?;
    let keys = secrets_of(&ctx, &keys)?;
    let status = c.get(&ctx, "/v1/sys/seal-status", &[])?.json();
    if status["sealed"] == false {
        return Ok(to_dynamic(&status));
    }
    let threshold = status["t"].as_u64().unwrap_or(0) as usize;
    let summary = format!(
        "vault: unseal with {} key(s) (threshold {threshold})",
        keys.len().min(threshold.max(1))
    );
    let progress_before = status["progress"].as_u64().unwrap_or(0) as usize;
    let outcome = c.changes(&ctx, &summary, |w| -> RhaiResult<Value> {
            let mut last = status.clone();
            for (i, key) in keys.iter().enumerate() {
                let at_threshold = progress_before + i + 1 >= threshold;
                let reply = w
                    .send(
                        &ctx,
                        "PUT",
                        "/v1/sys/unseal",
                        body(&json!({"key": key.expose()})),
                        DEFAULT_TIMEOUT,
                    )
                    .map_err(|e| {
                        if at_threshold && is_timeout(&e) {
                            hung_unseal(&ctx, &c.host)
                        } else {
                            e
                        }
                    })?;
                if reply.status != 200 {
                    let v = reply.json();
                    let message = v["errors"][0].as_str().unwrap_or("unseal failed").to_string();
                    return Err(call_error(
                        &ctx,
                        codes::VAULT_UNSEAL_FAILED,
                        format!("vault on {}: {message} (after {} key(s); the node stays sealed and its progress was reset)", c.host, i + 1),
                    ));
                }
                last = reply.json();
                if last["sealed"] == false {
                    return Ok(last);
                }
                // vault/core.go `unsealWithRaft`: a node joining raft answers the
                // threshold share with sealed, progress 0, and unseals on its own once
                // the leader's keyring has arrived.
                if progress_before + i + 1 >= threshold && last["progress"] == 0 {
                    return wait_joining_unseal(&ctx, &c, timeout);
                }
            }
            if partial {
                return Ok(last);
            }
            Err(call_error(
                &ctx,
                codes::VAULT_NOT_ENOUGH_KEYS,
                format!(
                    "vault on {}: still sealed after {} key(s): progress {}/{}",
                    c.host,
                    keys.len(),
                    last["progress"],
                    last["t"]
                ),
            ))
        })?;
    Ok(outcome.map(|v| to_dynamic(&v)).unwrap_or(Dynamic::UNIT))
}
