//! harun-stdlib: the built-in modules scripts call.
//!
//! Each module is a `#[export_module]` whose `///` comments are the reference `harun doc`
//! prints. Everything that changes state goes through `Context::perform`, so `--dry-run`
//! and the audit log cover it.

// No function longer than a screenful outside tests (issue 29's yardstick).
#![warn(clippy::too_many_lines)]

pub mod consul;
pub mod hcl;
pub mod hosts;
pub mod http;
pub mod local;
pub mod lock;
pub mod log;
pub mod nomad;
pub mod raft;
pub mod service;
pub mod snapshot;
pub mod vault;
pub mod wait;

use rhai::Engine;

/// Registers every built-in module with `engine` (passed to `EngineBuilder::with`).
pub fn register(engine: &mut Engine) {
    engine.register_type_with_name::<hosts::HostHandle>("Host");
    engine.register_type_with_name::<hcl::edit::Document>("HclDocument");
    engine.register_static_module("log", rhai::exported_module!(log::log_api).into());
    engine.register_static_module("local", rhai::exported_module!(local::local_api).into());
    engine.register_static_module("ssh", rhai::exported_module!(hosts::api::ssh_api).into());
    for (name, mut module, raft) in [
        (
            "consul",
            rhai::exported_module!(consul::consul_api),
            &raft::CONSUL,
        ),
        (
            "nomad",
            rhai::exported_module!(nomad::nomad_api),
            &raft::NOMAD,
        ),
        (
            "vault",
            rhai::exported_module!(vault::vault_api),
            &raft::VAULT,
        ),
    ] {
        raft::register(&mut module, raft);
        snapshot::register(&mut module, raft.service);
        engine.register_static_module(name, module.into());
    }
    engine.register_static_module("hcl", rhai::exported_module!(hcl::api::hcl_api).into());
    engine.register_static_module(
        "service",
        rhai::exported_module!(service::service_api).into(),
    );
    engine.register_global_module(rhai::exported_module!(wait::wait_api).into());
}
