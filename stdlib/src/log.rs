//! `log::info(msg)` and friends: script messages on stderr through tracing, shown by
//! verbosity (`-v` for info, `-vv` for debug, `-vvv` for trace), redacted like all output.
//! The debug level is Rhai's own `debug(value)` (`debug` is a keyword, so there is no
//! `log::debug`); the engine routes it here.

use rhai::plugin::*;

#[export_module]
pub mod log_api {
    use harun_runtime::json::script_text;

    /// Logs an error; shown even with `-q`.
    #[rhai_fn(volatile)]
    pub fn error(ctx: NativeCallContext, message: Dynamic) {
        tracing::error!(target: "script", "{}", script_text(&ctx, message));
    }

    /// Logs a warning; shown by default.
    #[rhai_fn(volatile)]
    pub fn warn(ctx: NativeCallContext, message: Dynamic) {
        tracing::warn!(target: "script", "{}", script_text(&ctx, message));
    }

    /// Logs progress; shown with `-v`.
    #[rhai_fn(volatile)]
    pub fn info(ctx: NativeCallContext, message: Dynamic) {
        tracing::info!(target: "script", "{}", script_text(&ctx, message));
    }

    /// Logs a fine detail; shown with `-vvv`.
    #[rhai_fn(volatile)]
    pub fn trace(ctx: NativeCallContext, message: Dynamic) {
        tracing::trace!(target: "script", "{}", script_text(&ctx, message));
    }
}
