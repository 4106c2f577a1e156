//! harun: run Rhai scripts that operate Consul, Nomad and Vault clusters and their hosts.

// No function longer than a screenful outside tests (issue 29's yardstick).
#![warn(clippy::too_many_lines)]

mod app;
mod cli;
mod doc;
mod finish;
mod init;
mod lab;

fn main() {
    harun_stdlib::http::install_crypto();
    std::process::exit(app::run());
}
