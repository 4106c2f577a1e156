//! harun-lab: twins of Consul, Nomad and Vault servers, and the supervisor of a local lab
//! of three, five or seven controllers on loopback addresses.
//!
//! Each twin is a real process (`harun lab serve SERVICE --config FILE`) that reads the
//! same HCL config file a real server reads, so scripts edit and restart it exactly as
//! they would on a controller. The binary links this crate for `harun lab` and `--lab`;
//! the stdlib never depends on it.

// No function longer than a screenful outside tests (issue 29's yardstick).
#![warn(clippy::too_many_lines)]

pub mod cluster;
pub mod config;
pub mod consul;
pub mod error;
pub mod nomad;
pub mod pki;
pub mod real;
pub mod service_user;
pub mod snapshot;
pub mod supervisor;
pub mod tls;
pub mod vault;
