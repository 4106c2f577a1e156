//! harun-runtime: everything a harun script runs inside of, independent of the built-in
//! modules that talk to clusters and hosts.
//!
//! The binary composes it: it builds a [`Context`] from the command line, an engine with
//! [`EngineBuilder`] (adding the stdlib modules), runs the script, and turns the context's
//! report into the Nagios-style summary line and exit status.

// No function longer than a screenful outside tests (issue 29's yardstick).
#![warn(clippy::too_many_lines)]

pub mod bridge;
pub mod builtins;
pub mod codes;
pub mod config_secrets;
pub mod context;
pub mod diagnostic;
pub mod engine;
pub mod error;
pub mod json;
pub mod logging;
pub mod modules;
pub mod output;
pub mod plan;
pub mod private_fs;
pub mod process;
pub mod progress;
pub mod secret;
pub mod service;
pub mod status;
pub mod topology;

pub use bridge::{Bridge, Interrupt};
pub use context::{Context, Options};
pub use diagnostic::Diagnostic;
pub use engine::EngineBuilder;
pub use error::{script_error, ErrorCode};
pub use plan::Action;
pub use secret::{Redactor, Secret};
pub use status::{Report, Status};
pub use topology::Topology;
