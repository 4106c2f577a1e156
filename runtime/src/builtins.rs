//! The core script API that every script has, whatever modules it uses: check statuses,
//! `exit`, secrets, `confirm`, `sleep` and `param`.

use crate::codes;
use rhai::plugin::*;

/// Reporting check results; the run prints the summary line and exits with the worst.
/// The --set parameter `name` read by `parse`, or `default` when not given; a value
/// `parse` refuses is an error naming the flag and what was wanted.
fn typed_param<T>(
    ctx: &NativeCallContext,
    name: &str,
    default: T,
    wanted: &str,
    parse: impl Fn(&str) -> Option<T>,
) -> Result<T, Box<EvalAltResult>> {
    let Some(value) = crate::Context::of(ctx).options().params.get(name).cloned() else {
        return Ok(default);
    };
    let text = value.to_string();
    parse(text.trim()).ok_or_else(|| {
        crate::error::call_error(
            ctx,
            codes::PARAM_INVALID,
            format!("--set {name}={text}: not {wanted}"),
        )
    })
}

#[export_module]
pub mod core_api {
    use std::time::Duration;

    use super::typed_param;

    use crate::diagnostic::interrupt_error;
    use crate::error::call_error;
    use crate::secret::Secret;
    use crate::status::Status;
    use crate::Context;

    /// Reports an OK result: `ok("3 consul servers alive")`.
    #[rhai_fn(volatile)]
    pub fn ok(ctx: NativeCallContext, message: Dynamic) {
        let text = crate::json::script_text(&ctx, message);
        Context::of(&ctx).report(Status::Ok, text);
    }

    /// Reports a WARNING; the run exits with 1 unless something worse is reported.
    #[rhai_fn(volatile)]
    pub fn warning(ctx: NativeCallContext, message: Dynamic) {
        let text = crate::json::script_text(&ctx, message);
        Context::of(&ctx).report(Status::Warning, text);
    }

    /// Reports a CRITICAL problem; the run exits with 2.
    #[rhai_fn(volatile)]
    pub fn critical(ctx: NativeCallContext, message: Dynamic) {
        let text = crate::json::script_text(&ctx, message);
        Context::of(&ctx).report(Status::Critical, text);
    }

    /// Reports that a state could not be determined (a host unreachable); exit 3 unless
    /// a WARNING or CRITICAL outranks it.
    #[rhai_fn(volatile)]
    pub fn unknown(ctx: NativeCallContext, message: Dynamic) {
        let text = crate::json::script_text(&ctx, message);
        Context::of(&ctx).report(Status::Unknown, text);
    }

    /// Ends the script now with exit status `code` (0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN).
    #[rhai_fn(name = "exit", volatile, return_raw)]
    pub fn exit_with(ctx: NativeCallContext, code: i64) -> Result<(), Box<EvalAltResult>> {
        let code = i32::try_from(code)
            .ok()
            .filter(|c| (0..=255).contains(c))
            .ok_or_else(|| {
                call_error(
                    &ctx,
                    codes::EXIT_RANGE,
                    format!("exit status {code} is outside 0..=255"),
                )
            })?;
        Context::of(&ctx).request_exit(code);
        Err(Box::new(EvalAltResult::ErrorTerminated(
            Dynamic::UNIT,
            ctx.call_position(),
        )))
    }

    /// Ends the script now with the status of what it reported (0 when nothing was).
    #[rhai_fn(name = "exit", volatile, return_raw)]
    pub fn exit_now(ctx: NativeCallContext) -> Result<(), Box<EvalAltResult>> {
        let code = Context::of(&ctx).report_snapshot().worst().code();
        exit_with(ctx, code as i64)
    }

    /// Wraps a value as a Secret: it prints as `<secret>` in every output.
    #[rhai_fn(volatile)]
    pub fn secret(ctx: NativeCallContext, value: &str) -> Secret {
        Context::of(&ctx).secret(value)
    }

    /// Asks `question` before a destructive step and returns the answer. `--yes` answers
    /// yes; a dry run notes the question in the plan and goes on; without a terminal the
    /// step is refused with an error.
    #[rhai_fn(volatile, return_raw)]
    pub fn confirm(ctx: NativeCallContext, question: &str) -> Result<bool, Box<EvalAltResult>> {
        Context::of(&ctx)
            .confirm(question)
            .map_err(|e| call_error(&ctx, codes::CONFIRM_REFUSED, e))
    }

    /// Waits `seconds` (a whole or fractional number); Ctrl-C and `--timeout` cut it short.
    #[rhai_fn(name = "sleep", volatile, return_raw)]
    pub fn sleep_float(ctx: NativeCallContext, seconds: f64) -> Result<(), Box<EvalAltResult>> {
        if !seconds.is_finite() || seconds < 0.0 {
            return Err(call_error(
                &ctx,
                codes::SLEEP_RANGE,
                format!("cannot sleep {seconds} seconds"),
            ));
        }
        let duration = Duration::from_secs_f64(seconds);
        Context::of(&ctx)
            .block_on(duration + Duration::from_secs(1), async move {
                tokio::time::sleep(duration).await
            })
            .map_err(|i| interrupt_error(i, "sleep", ctx.call_position()))
    }

    /// Waits `seconds`; Ctrl-C and `--timeout` cut it short.
    #[rhai_fn(name = "sleep", volatile, return_raw)]
    pub fn sleep_int(ctx: NativeCallContext, seconds: i64) -> Result<(), Box<EvalAltResult>> {
        sleep_float(ctx, seconds as f64)
    }

    /// The `--set NAME=VALUE` parameter `name`, as a string; an error names the missing flag.
    #[rhai_fn(name = "param", volatile, return_raw)]
    pub fn param(ctx: NativeCallContext, name: &str) -> Result<Dynamic, Box<EvalAltResult>> {
        let context = Context::of(&ctx);
        context.options().params.get(name).cloned().ok_or_else(|| {
            call_error(
                &ctx,
                codes::PARAM_MISSING,
                format!("this script needs --set {name}=VALUE"),
            )
        })
    }

    /// The `--set NAME=VALUE` parameter `name`, or `default` when it was not given.
    #[rhai_fn(name = "param", volatile)]
    pub fn param_or(ctx: NativeCallContext, name: &str, default: Dynamic) -> Dynamic {
        Context::of(&ctx)
            .options()
            .params
            .get(name)
            .cloned()
            .unwrap_or(default)
    }

    /// The --set parameter `name` as a whole number, or `default`: `param_int("keep", 7)`.
    /// A value that is not one is an error naming the flag, never a silent default.
    #[rhai_fn(volatile, return_raw)]
    pub fn param_int(
        ctx: NativeCallContext,
        name: &str,
        default: i64,
    ) -> Result<i64, Box<EvalAltResult>> {
        typed_param(&ctx, name, default, "a whole number", |v| v.parse().ok())
    }

    /// The --set parameter `name` as a number (seconds, say), or `default`:
    /// `param_float("timeout", 120)`.
    #[rhai_fn(name = "param_float", volatile, return_raw)]
    pub fn param_float(
        ctx: NativeCallContext,
        name: &str,
        default: f64,
    ) -> Result<f64, Box<EvalAltResult>> {
        typed_param(&ctx, name, default, "a number", |v| {
            v.parse().ok().filter(|f: &f64| f.is_finite())
        })
    }

    /// `param_float` with a whole default.
    #[rhai_fn(name = "param_float", volatile, return_raw)]
    pub fn param_float_int(
        ctx: NativeCallContext,
        name: &str,
        default: i64,
    ) -> Result<f64, Box<EvalAltResult>> {
        param_float(ctx, name, default as f64)
    }

    /// The --set parameter `name` as true or false (also yes/no, 1/0), or `default`:
    /// `param_bool("files", false)`. `--set files=ture` is an error, not false.
    #[rhai_fn(volatile, return_raw)]
    pub fn param_bool(
        ctx: NativeCallContext,
        name: &str,
        default: bool,
    ) -> Result<bool, Box<EvalAltResult>> {
        typed_param(&ctx, name, default, "true or false", |v| match v {
            "true" | "yes" | "1" => Some(true),
            "false" | "no" | "0" => Some(false),
            _ => None,
        })
    }

    /// The --set parameter `name` as a comma-separated list, each item trimmed and empty
    /// ones dropped, or `default` split the same way: `param_list("services", "consul,vault")`.
    #[rhai_fn(volatile)]
    pub fn param_list(ctx: NativeCallContext, name: &str, default: &str) -> rhai::Array {
        let given = Context::of(&ctx).options().params.get(name).cloned();
        let text = given.map_or_else(|| default.to_string(), |v| v.to_string());
        text.split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| Dynamic::from(s.to_string()))
            .collect()
    }

    /// The time now in UTC, as RFC 3339 to the second: `2026-12-01T21:56:23Z`.
    #[rhai_fn(volatile)]
    pub fn now() -> String {
        humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string()
    }

    /// Names the step the script starts now: `step("migrate controller1 to raft")`. On a
    /// terminal the step shows with a spinner and, once the next one starts, as a line
    /// with its duration; elsewhere (cron, pipes) it goes to the log (`-v`).
    #[rhai_fn(volatile)]
    pub fn step(name: &str) {
        tracing::info!(target: "script", "step: {name}");
        crate::progress::step(name);
    }

    /// The directory of the script being run (where `import` looks), absolute: files that
    /// ship beside a script are found from wherever it is run.
    #[rhai_fn(volatile)]
    pub fn script_dir(ctx: NativeCallContext) -> String {
        let dir = Context::of(&ctx).options().base_dir.clone();
        std::path::absolute(&dir)
            .unwrap_or(dir)
            .display()
            .to_string()
    }

    /// True in `--dry-run`: mutating actions are being recorded, not performed.
    #[rhai_fn(volatile)]
    pub fn is_dry_run(ctx: NativeCallContext) -> bool {
        Context::of(&ctx).is_dry_run()
    }
}

/// Secret values: never printed, only sent.
#[export_module]
pub mod secret_type {
    use crate::secret::{Secret, REDACTED};
    use crate::Context;

    /// A Secret prints as `<secret>`.
    #[rhai_fn(global, name = "to_string", pure)]
    pub fn to_string(_secret: &mut Secret) -> String {
        REDACTED.to_string()
    }

    /// A Secret prints as `<secret>`, in debug output too.
    #[rhai_fn(global, name = "to_debug", pure)]
    pub fn to_debug(_secret: &mut Secret) -> String {
        REDACTED.to_string()
    }

    /// Joining text and a Secret gives a Secret: `"Bearer " + token`.
    #[rhai_fn(global, name = "+", volatile)]
    pub fn prepend(ctx: NativeCallContext, text: &str, secret: Secret) -> Secret {
        Context::of(&ctx).secret(format!("{text}{}", secret.expose()))
    }

    /// Joining a Secret and text gives a Secret.
    #[rhai_fn(global, name = "+", volatile)]
    pub fn append(ctx: NativeCallContext, secret: Secret, text: &str) -> Secret {
        Context::of(&ctx).secret(format!("{}{text}", secret.expose()))
    }

    /// Joining two Secrets gives a Secret (the lines of a key file).
    #[rhai_fn(global, name = "+", volatile)]
    pub fn join(ctx: NativeCallContext, first: Secret, second: Secret) -> Secret {
        Context::of(&ctx).secret(format!("{}{}", first.expose(), second.expose()))
    }

    /// True when the secret is the empty string.
    #[rhai_fn(global, name = "is_empty", pure)]
    pub fn is_empty(secret: &mut Secret) -> bool {
        secret.is_empty()
    }
}

/// Where secrets come from: `secret::env`, `secret::file`, `secret::prompt`.
#[export_module]
pub mod secret_sources {
    use std::io::IsTerminal;

    use crate::error::call_error;
    use crate::secret::Secret;
    use crate::Context;

    /// The secret in environment variable `name`; an error when it is unset or empty.
    #[rhai_fn(volatile, return_raw)]
    pub fn env(ctx: NativeCallContext, name: &str) -> Result<Secret, Box<EvalAltResult>> {
        match std::env::var(name) {
            Ok(value) if !value.is_empty() => Ok(Context::of(&ctx).secret(value)),
            _ => Err(call_error(
                &ctx,
                codes::SECRET_ENV_MISSING,
                format!("the environment variable {name} is not set"),
            )),
        }
    }

    /// The secret in the file at `path` (one trailing newline dropped). The file must not
    /// be readable by group or others: `chmod 600` it.
    #[rhai_fn(volatile, return_raw)]
    pub fn file(ctx: NativeCallContext, path: &str) -> Result<Secret, Box<EvalAltResult>> {
        let value = crate::secret::read_private_file(path)
            .map_err(|(code, message)| call_error(&ctx, code, message))?;
        Ok(Context::of(&ctx).secret(value))
    }

    /// Asks for a secret on the terminal without echoing it; an error without a terminal.
    #[rhai_fn(volatile, return_raw)]
    pub fn prompt(ctx: NativeCallContext, label: &str) -> Result<Secret, Box<EvalAltResult>> {
        if !std::io::stdin().is_terminal() {
            return Err(call_error(
                &ctx,
                codes::SECRET_NO_TERMINAL,
                format!("cannot prompt for {label}: no terminal; use secret::env or secret::file"),
            ));
        }
        let value = rpassword::prompt_password(format!("{label}: ")).map_err(|e| {
            call_error(
                &ctx,
                codes::SECRET_PROMPT,
                format!("cannot read {label}: {e}"),
            )
        })?;
        Ok(Context::of(&ctx).secret(value))
    }
}
