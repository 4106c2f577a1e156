//! The end-to-end tests, one binary (it links once): a module per subject, on the
//! helpers in `common` (`Test`, `Lab`, `script`).

mod common;

mod cli;
mod consul_conformance;
mod consul_ha;
mod consul_tls;
mod day2;
mod dist;
mod doc;
mod five_controllers;
mod health;
mod hosts_local;
mod interrupted;
mod lab;
mod local_users;
mod nomad_ha;
mod nomad_module;
mod plan;
mod real_lab;
mod repl;
mod replace_controller;
mod secrets;
mod snapshots;
mod ssh;
mod topology;
mod vault;
mod vault_conformance;
mod vault_module;
mod vault_raft;
