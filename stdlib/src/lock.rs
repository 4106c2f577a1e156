//! The Consul lock the changing scripts hold (`consul::lock`): a session that the run
//! renews for as long as it lives, a value that names the holder, a clear word when
//! another run holds it, and a guard that stops the run before its next change when the
//! lock is lost.

use std::collections::HashSet;
use std::sync::Arc;

use parking_lot::Mutex;
use std::time::{Duration, Instant};

use base64::Engine;
use harun_runtime::codes;
use harun_runtime::context::Refusal;
use harun_runtime::error::call_error;
use harun_runtime::Context;
use rhai::{EvalAltResult, NativeCallContext};
use serde_json::{json, Value};

use crate::http::{encode, json_body, ApiClient, Background, Changes, DEFAULT_TIMEOUT};

type RhaiResult<T> = Result<T, Box<EvalAltResult>>;

/// The session's TTL: Consul's minimum. The run renews it every third of that; Consul
/// invalidates a session it has not heard from in up to twice its TTL.
const TTL: Duration = Duration::from_secs(10);
/// How long the run goes on without a renewal before it counts its lock as lost. Consul
/// invalidates a session not renewed within twice its TTL (agent/consul/session_ttl.go,
/// `SessionTTLMultiplier`), on the leader's timer, and a new leader starts every session's
/// timer afresh: a run whose renewals meet an election (a rolling restart of the Consul
/// leader; real Consul takes over 10 s) still holds its lock. It gives up 3 s before
/// the earliest invalidation, so that it stops before another run could take the lock.
const RENEWAL_GRACE: Duration = Duration::from_secs(2 * TTL.as_secs() - 3);

/// After a session is invalidated, Consul keeps its locks from a new holder this long
/// (its default is 15 s): enough for a dead holder's last request to land.
const LOCK_DELAY: Duration = Duration::from_secs(1);

/// A lock this run holds.
pub struct Held {
    /// The agents it renews and releases through, the first that answers.
    agents: Vec<Background>,
    key: String,
    session: String,
    renewal: tokio::task::JoinHandle<()>,
    guard: u64,
}

/// Who holds a lock, as its value records.
fn holder(context: &Context) -> Value {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_default();
    let user = std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| format!("uid {}", unsafe { libc::geteuid() }));
    json!({
        "holder": "harun",
        "host": host,
        "user": user,
        "pid": std::process::id(),
        "script": context.options().script,
        "started": humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
    })
}

fn this_host() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_default()
}

/// Whether the process `pid` runs on this machine: not a zombie waiting to be reaped (a
/// run killed by `timeout -s KILL` or a supervisor), not dying of SIGKILL.
fn alive(pid: i64) -> bool {
    i32::try_from(pid).is_ok_and(|pid| {
        harun_runtime::process::is_running(pid) && !harun_runtime::process::is_dying(pid)
    })
}

/// The locks this run holds, by key: a script's steps may each ask for the lock the run
/// already holds (vault-raft's Consul step inside its own hold).
#[derive(Default)]
pub struct HeldKeys(Mutex<HashSet<String>>);

impl HeldKeys {
    pub fn of(context: &Context) -> Arc<HeldKeys> {
        context.extension::<HeldKeys>()
    }

    pub fn contains(&self, key: &str) -> bool {
        self.0.lock().contains(key)
    }

    fn insert(&self, key: &str) {
        self.0.lock().insert(key.to_string());
    }

    fn remove(&self, key: &str) {
        self.0.lock().remove(key);
    }
}

/// A session of this run's, destroyed when dropped unless it became a held lock.
struct Session<'a> {
    id: String,
    ctx: &'a NativeCallContext<'a>,
    via: Background,
}

impl<'a> Session<'a> {
    fn create(ctx: &'a NativeCallContext<'a>, w: &Changes, key: &str) -> RhaiResult<Self> {
        let path = "/v1/session/create";
        let spec = json!({
            "Name": format!("harun lock {key}"),
            "TTL": format!("{}s", TTL.as_secs()),
            "LockDelay": format!("{}s", LOCK_DELAY.as_secs()),
            "Behavior": "release",
            // A pure TTL session: the run's renewals are its liveness. With the default
            // check (serfHealth of the agent that created it), restarting that agent, as
            // a rolling restart does, would take the lock away.
            "Checks": [],
            "NodeChecks": [],
        });
        let created = w.send(ctx, "PUT", path, json_body(&spec), DEFAULT_TIMEOUT)?;
        let id = w.check(ctx, "PUT", path, created)?.json()["ID"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        Ok(Session {
            id,
            ctx,
            via: w.in_background(),
        })
    }

    /// The session's id, no longer destroyed on drop: the held lock owns it now.
    fn keep(mut self) -> String {
        std::mem::take(&mut self.id)
    }
}

impl Drop for Session<'_> {
    /// Sent on its own, outside the run's cancellation: a session left behind by a run
    /// that Ctrl-C interrupted mid-acquire could hold the lock until it lapses.
    fn drop(&mut self) {
        if !self.id.is_empty() {
            let destroy = self.via.put(
                &format!("/v1/session/destroy/{}", self.id),
                Duration::from_secs(3),
            );
            let _ = Context::of(self.ctx).bridge().runtime().block_on(destroy);
        }
    }
}

/// Whether `e` says another run holds the lock (not that the agent could not be asked).
pub fn is_locked(e: &EvalAltResult) -> bool {
    harun_runtime::diagnostic::code_and_message_of(e).0 == codes::CONSUL_LOCKED
}

/// The holder a lock's KV entry names ("a run of SCRIPT (pid, user@host) since TIME"),
/// the value it recorded, and its session.
fn describe(entry: &Value) -> (String, Value, String) {
    let value: Value = entry["Value"]
        .as_str()
        .and_then(|v| base64::engine::general_purpose::STANDARD.decode(v).ok())
        .and_then(|v| serde_json::from_slice(&v).ok())
        .unwrap_or(Value::Null);
    let who = format!(
        "a run of {} (pid {}, {}@{}) since {}",
        value["script"]
            .as_str()
            .filter(|s| !s.is_empty())
            .unwrap_or("a script"),
        value["pid"],
        value["user"].as_str().unwrap_or("?"),
        value["host"].as_str().unwrap_or("?"),
        value["started"].as_str().unwrap_or("an unknown time"),
    );
    let session = entry["Session"].as_str().unwrap_or_default().to_string();
    (who, value, session)
}

/// A holder that was on this machine and whose process is gone: its name and session.
struct DeadHolder {
    who: String,
    pid: Value,
    session: String,
}

/// Takes the lock `key` through the agent of `c` or fails naming its holder; renewals go
/// through `c` or, while it does not answer, through the agents of `others`. Every
/// session it creates is destroyed on the way out unless it holds the lock. Taking the
/// lock, and taking it over from a dead run, are each one recorded change.
pub fn acquire(
    ctx: &NativeCallContext,
    c: &ApiClient,
    others: &[ApiClient],
    key: &str,
) -> RhaiResult<Held> {
    let context = Context::of(ctx);
    let me = serde_json::to_vec(&holder(&context)).expect("serializes");
    let try_acquire = |w: &Changes, session: &str| -> RhaiResult<bool> {
        let path = format!("/v1/kv/{}?acquire={session}", encode(key));
        let reply = w.send(ctx, "PUT", &path, Some(me.clone()), DEFAULT_TIMEOUT)?;
        Ok(w.check(ctx, "PUT", "/v1/kv", reply)?.text() == "true")
    };
    let read_entry = || -> RhaiResult<Value> {
        Ok(c.get(ctx, &format!("/v1/kv/{}", encode(key)), &[404])?
            .json())
    };
    // A lock just freed is kept from a new holder for its lock delay: while nobody holds
    // it, try a moment more.
    let acquire_within = |w: &Changes, session: &str, limit: Duration| -> RhaiResult<bool> {
        let started = Instant::now();
        loop {
            if try_acquire(w, session)? {
                return Ok(true);
            }
            let held = read_entry()?[0]["Session"].is_string();
            if held || started.elapsed() >= limit {
                return Ok(false);
            }
            crate::wait::pause(ctx, 0.25, "the consul lock's lock delay")?;
        }
    };
    let lapse = format!(
        "if that run is gone, the lock lapses within {} s of its last renewal",
        2 * TTL.as_secs() + LOCK_DELAY.as_secs()
    );
    let dead: std::cell::RefCell<Option<DeadHolder>> = Default::default();
    let take = format!(
        "consul: take the lock {key} (a session renewed every {} s, released at the end of the run)",
        (TTL / 3).as_secs()
    );
    let first = c.changes(ctx, &take, |w| {
        let session = Session::create(ctx, w, key)?;
        if acquire_within(w, &session.id, LOCK_DELAY + Duration::from_secs(1))? {
            return Ok(hold(ctx, w, others, key, session.keep()));
        }
        // Taken: who holds it, since when, and whether that run still exists. Only a
        // holder known to be on this machine (a host name recorded and equal to ours)
        // can be known dead here.
        let (who, value, their_session) = describe(&read_entry()?[0]);
        let here = this_host();
        let dead_here = !here.is_empty()
            && value["host"].as_str() == Some(here.as_str())
            && value["pid"].as_i64().is_some_and(|pid| !alive(pid));
        if dead_here && !their_session.is_empty() {
            *dead.borrow_mut() = Some(DeadHolder {
                who: who.clone(),
                pid: value["pid"].clone(),
                session: their_session,
            });
        }
        Err(call_error(
            ctx,
            codes::CONSUL_LOCKED,
            format!("the consul lock {key} is held by {who}; try again when it ends ({lapse})"),
        ))
    });
    let refused = match first {
        Ok(held) => return Ok(held.expect("the lock is not taken in a dry run")),
        Err(e) => e,
    };
    // The session made for the first try is gone (dropped): none is renewed while a
    // person thinks it over, and a fresh one is made after the answer.
    let Some(DeadHolder { who, pid, session }) = dead.into_inner() else {
        return Err(refused);
    };
    let question = format!(
        "the consul lock {key} is held by {who}, and that process no longer runs on this machine; take the lock over?"
    );
    // Without a terminal (cron, CI) there is nobody to ask: the error below says how.
    if !context.confirm(&question).unwrap_or(false) {
        return Err(call_error(
            ctx,
            codes::CONSUL_LOCKED,
            format!(
                "the consul lock {key} is held by {who}, which no longer runs on this machine; run again with --yes to take it over, or wait: {lapse}"
            ),
        ));
    }
    let takeover = format!(
        "consul: take the lock {key} over from dead pid {pid}: destroy its session, then take the lock"
    );
    let second = c.changes(ctx, &takeover, |w| {
        tracing::info!("taking over the consul lock {key} from dead pid {pid}");
        let path = format!("/v1/session/destroy/{}", encode(&session));
        let _ = w.send(ctx, "PUT", &path, None, DEFAULT_TIMEOUT);
        let mine = Session::create(ctx, w, key)?;
        if acquire_within(w, &mine.id, LOCK_DELAY + Duration::from_secs(2))? {
            return Ok(hold(ctx, w, others, key, mine.keep()));
        }
        // Between the takeover and our acquire, another live run took it.
        let (now, _, _) = describe(&read_entry()?[0]);
        Err(call_error(
            ctx,
            codes::CONSUL_LOCKED,
            format!("the consul lock {key} was freed from the dead run, but {now} took it first; try again when it ends ({lapse})"),
        ))
    })?;
    Ok(second.expect("the lock is not taken in a dry run"))
}

/// From the acquire on: renews the session in the background (through the agent that
/// took it, or while it does not answer the `others`) and stops the run's changes if it
/// is lost.
fn hold(
    ctx: &NativeCallContext,
    w: &Changes,
    others: &[ApiClient],
    key: &str,
    session: String,
) -> Held {
    let context = Context::of(ctx);
    let agents: Vec<Background> = std::iter::once(w.in_background())
        .chain(w.through(others))
        .collect();
    let lost: Arc<Mutex<Option<String>>> = Arc::new(Mutex::new(None));
    // When the last renewal that Consul took was sent: Consul's timer restarted no
    // earlier than that.
    let renewed = Arc::new(Mutex::new(Instant::now()));
    let renew_path = format!("/v1/session/renew/{session}");
    let (renewers, lost_in_task, renewed_in_task) = (agents.clone(), lost.clone(), renewed.clone());
    // Stopped by `release` (abort).
    let renewal = context.bridge().runtime().spawn(async move {
        loop {
            tokio::time::sleep(TTL / 3).await;
            let sent = Instant::now();
            let outcome = put_through(&renewers, &renew_path).await;
            let last = *renewed_in_task.lock();
            let reason = match outcome {
                Ok(200) => {
                    *renewed_in_task.lock() = sent;
                    continue;
                }
                // Consul answers 404 for a session it no longer has.
                Ok(404) => "its session was invalidated (expired or destroyed)".to_string(),
                _ if last.elapsed() < RENEWAL_GRACE => continue,
                Ok(status) => format!("Consul refused to renew its session ({status})"),
                Err(e) => format!(
                    "its session could not be renewed for {}s: {e}",
                    RENEWAL_GRACE.as_secs()
                ),
            };
            tracing::error!("the consul lock is lost: {reason}");
            *lost_in_task.lock() = Some(reason);
            return;
        }
    });
    let (key_owned, lost_in_guard) = (key.to_string(), lost.clone());
    // Before every change: lost as the renewals found, or by the clock (the renewals may
    // still be trying agents one after another when the grace runs out).
    let guard = context.add_guard(Arc::new(move || {
        let since = renewed.lock().elapsed();
        let overdue = (since > RENEWAL_GRACE).then(|| {
            format!(
                "its session was last renewed {}s ago",
                since.as_secs()
            )
        });
        match lost_in_guard
            .lock()
            .clone()
            .or(overdue)
        {
            None => Ok(()),
            Some(reason) => Err(Refusal {
                code: codes::CONSUL_LOCK_LOST,
                message: format!(
                    "the consul lock {key_owned} was lost ({reason}): stopping before the next change; run the script again to finish"
                ),
            }),
        }
    }));
    HeldKeys::of(&context).insert(key);
    Held {
        agents,
        key: key.to_string(),
        session,
        renewal,
        guard,
    }
}

/// `path` PUT through the first agent that gives a verdict (200, or 404 for a session it
/// no longer has): sessions live in the servers, so any agent of the datacenter serves
/// one, and one that is restarting (no answer, or no leader yet) is passed over. The last
/// answer or failure when none gives a verdict.
async fn put_through(
    agents: &[Background],
    path: &str,
) -> Result<u16, Box<dyn std::error::Error + Send + Sync>> {
    let mut outcome = Err("no consul agent to ask".into());
    for agent in agents {
        outcome = agent
            .put(path, Duration::from_secs(3))
            .await
            .map_err(Into::into);
        if matches!(outcome, Ok(200 | 404)) {
            break;
        }
    }
    outcome
}

impl Held {
    /// Releases the lock and destroys its session (unless it was lost).
    pub fn release(self, context: &Context) {
        self.renewal.abort();
        context.remove_guard(self.guard);
        HeldKeys::of(context).remove(&self.key);
        // Sent even when the lock counts as lost: a session that only could not be
        // renewed for a while may still hold it (Consul answers 404 otherwise).
        // Also after Ctrl-C, which cancels the run's calls: the release goes out on its own,
        // within a few seconds, so that the next run need not wait for the session to lapse.
        let release = format!("/v1/kv/{}?release={}", encode(&self.key), self.session);
        let destroy = format!("/v1/session/destroy/{}", self.session);
        let agents = self.agents;
        let _ = context.bridge().runtime().block_on(async move {
            let _ = put_through(&agents, &release).await;
            put_through(&agents, &destroy).await
        });
    }
}
