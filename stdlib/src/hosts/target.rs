//! What a command needs to reach one host (its topology settings, resolved once) and what
//! it leaves behind: the data every transport shares.

use std::path::PathBuf;
use std::time::Duration;

use harun_runtime::topology::{Host, Transport};

/// What a finished command left behind.
#[derive(Clone, Debug)]
pub struct ExecOutput {
    pub status: i32,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

/// How to reach one host, from its topology settings.
#[derive(Clone, Debug)]
pub struct Target {
    pub name: String,
    pub address: String,
    pub user: Option<String>,
    pub port: u16,
    pub key: Option<PathBuf>,
    pub ssh_config: Option<PathBuf>,
    pub known_hosts_file: Option<PathBuf>,
    pub accept_new: bool,
    pub local: bool,
    pub connect_timeout: Duration,
    pub command_timeout: Duration,
    pub max_sessions: usize,
    pub sudo: bool,
}

impl Target {
    pub fn from_host(host: &Host) -> Target {
        let ssh = &host.ssh;
        Target {
            name: host.name.clone(),
            address: host.address.clone(),
            user: ssh.user.clone(),
            port: ssh.port,
            key: ssh.key.clone(),
            ssh_config: ssh.config.clone(),
            known_hosts_file: ssh.known_hosts_file.clone(),
            accept_new: ssh.accept_new,
            local: host.transport == Transport::Local,
            connect_timeout: ssh.connect_timeout,
            command_timeout: ssh.command_timeout,
            max_sessions: ssh.max_sessions,
            sudo: host.sudo,
        }
    }

    /// Whether privileged commands need `sudo` in front: not when we already are root.
    pub fn needs_sudo(&self) -> bool {
        if self.local {
            // SAFETY: geteuid has no preconditions and cannot fail.
            unsafe { libc::geteuid() != 0 }
        } else {
            self.user.as_deref() != Some("root")
        }
    }
}
