//! What a command needs to reach one host (its topology settings, resolved once) and what
//! it leaves behind: the data every transport shares.

use std::path::PathBuf;
use std::time::Duration;

use harun_runtime::topology::Host;

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
        Target {
            name: host.name.clone(),
            address: host.address().to_string(),
            user: host.get("ssh_user").map(str::to_string),
            port: host.ssh_port(),
            key: host.get("ssh_key").map(PathBuf::from),
            ssh_config: host.get("ssh_config").map(PathBuf::from),
            known_hosts_file: host.get("known_hosts_file").map(PathBuf::from),
            accept_new: host.get("known_hosts") == Some("accept-new"),
            local: host.get("transport") == Some("local"),
            connect_timeout: host.connect_timeout(),
            command_timeout: host.command_timeout(),
            max_sessions: host.max_sessions(),
            sudo: host.get_bool("sudo").unwrap_or(false),
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
