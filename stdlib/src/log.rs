//! `log::info(msg)` and friends: script messages on stderr through tracing, shown by
//! verbosity (`-v` for info, `-vv` for debug, `-vvv` for trace), redacted like all output.

use rhai::plugin::*;

#[export_module]
pub mod log_api {
    /// Logs an error; shown even with `-q`.
    #[rhai_fn(volatile)]
    pub fn error(message: Dynamic) {
        tracing::error!(target: "script", "{message}");
    }

    /// Logs a warning; shown by default.
    #[rhai_fn(volatile)]
    pub fn warn(message: Dynamic) {
        tracing::warn!(target: "script", "{message}");
    }

    /// Logs progress; shown with `-v`.
    #[rhai_fn(volatile)]
    pub fn info(message: Dynamic) {
        tracing::info!(target: "script", "{message}");
    }

    /// Logs a detail; shown with `-vv`.
    #[rhai_fn(volatile)]
    pub fn debug(message: Dynamic) {
        tracing::debug!(target: "script", "{message}");
    }

    /// Logs a fine detail; shown with `-vvv`.
    #[rhai_fn(volatile)]
    pub fn trace(message: Dynamic) {
        tracing::trace!(target: "script", "{message:?}");
    }
}
