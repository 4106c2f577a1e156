//! Retrying and waiting with a deadline: the loops every cluster change needs ("wait for
//! three voters"), written once, interruptible by Ctrl-C and `--timeout`.

use std::time::Duration;

use harun_runtime::codes;
use harun_runtime::diagnostic::interrupt_error;
use harun_runtime::Context;
use rhai::plugin::*;

#[export_module]
pub mod wait_api {
    use std::time::{Duration, Instant};

    use super::{humantime_secs, pause};
    use harun_runtime::error::call_error;
    use rhai::FnPtr;

    /// Calls `f` until it returns without an error, at most `attempts` times,
    /// `delay_seconds` apart; returns its value, or throws its last error.
    /// `retry(5, 2, || consul::leader(host))`
    #[rhai_fn(volatile, return_raw)]
    pub fn retry(
        ctx: NativeCallContext,
        attempts: i64,
        delay_seconds: f64,
        f: FnPtr,
    ) -> Result<Dynamic, Box<EvalAltResult>> {
        if attempts < 1 {
            return Err(call_error(
                &ctx,
                codes::RETRY_ATTEMPTS,
                "retry needs at least one attempt",
            ));
        }
        let mut attempt = 1;
        loop {
            match f.call_within_context::<Dynamic>(&ctx, ()) {
                Ok(value) => return Ok(value),
                Err(e) if attempt >= attempts || !e.is_catchable() => return Err(e),
                Err(e) => {
                    tracing::info!(target: "script", "attempt {attempt} of {attempts} failed: {e}");
                }
            }
            attempt += 1;
            pause(&ctx, delay_seconds, "retrying")?;
        }
    }

    /// Calls `f` every `interval_seconds` until it returns `true` (or any value other than
    /// `false` and `()`), and returns that value; after `timeout_seconds` throws
    /// `harun::wait::timeout` naming `what`. Errors thrown by `f` count as "not yet".
    /// `wait_until("three raft voters", 60, 2, || consul::voters(host).len() == 3)`
    #[rhai_fn(volatile, return_raw)]
    pub fn wait_until(
        ctx: NativeCallContext,
        what: &str,
        timeout_seconds: f64,
        interval_seconds: f64,
        f: FnPtr,
    ) -> Result<Dynamic, Box<EvalAltResult>> {
        let started = Instant::now();
        let deadline = started + Duration::from_secs_f64(timeout_seconds.max(0.0));
        let mut last_error = None;
        let _shown = harun_runtime::progress::waiting(
            what,
            Some(Duration::from_secs_f64(timeout_seconds.max(0.0))),
        );
        loop {
            match f.call_within_context::<Dynamic>(&ctx, ()) {
                Ok(value) if !(value.is_unit() || value.as_bool() == Ok(false)) => {
                    return Ok(value)
                }
                Ok(_) => {}
                Err(e) if !e.is_catchable() => return Err(e),
                Err(e) => last_error = Some(e.to_string()),
            }
            let now = Instant::now();
            if now >= deadline {
                let mut message = format!(
                    "gave up waiting for {what} after {}",
                    humantime_secs(timeout_seconds)
                );
                if let Some(e) = last_error {
                    message.push_str(&format!(" (last error: {e})"));
                }
                return Err(call_error(&ctx, codes::WAIT_TIMEOUT, message));
            }
            let left = (deadline - now).as_secs_f64();
            pause(&ctx, interval_seconds.min(left), what)?;
        }
    }
}

/// Sleeps `seconds`, or stops early on Ctrl-C or `--timeout`, naming `what` was awaited.
pub fn pause(ctx: &NativeCallContext, seconds: f64, what: &str) -> Result<(), Box<EvalAltResult>> {
    harun_runtime::progress::refresh();
    let d = Duration::from_secs_f64(seconds.max(0.0));
    Context::of(ctx)
        .block_on(d + Duration::from_secs(1), async move {
            tokio::time::sleep(d).await
        })
        .map_err(|i| interrupt_error(i, what, ctx.call_position()))
}

fn humantime_secs(seconds: f64) -> String {
    if seconds.fract() == 0.0 {
        format!("{seconds:.0}s")
    } else {
        format!("{seconds:.1}s")
    }
}
