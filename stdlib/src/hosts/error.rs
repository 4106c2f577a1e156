//! Host errors: one line that names the host and the reason a person can act on, with a
//! kind whose code is stable; the full cause chain is kept for `-v`.

use std::error::Error as _;

use super::target::Target;
use harun_runtime::codes;

/// What went wrong in reaching a host or running a command there.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Failure {
    /// The host key is unknown under the strict policy, or it changed.
    HostKey,
    /// The SSH key was refused.
    Auth,
    /// sshd refused another session (MaxSessions).
    Sessions,
    /// Refused, unresolvable or unroutable.
    Unreachable,
    /// No answer within the connect timeout.
    Timeout,
    /// Any other SSH failure, in ssh's words.
    Ssh,
    /// Reading, writing or running locally failed.
    Io,
    /// The run's connections were closed (the run is ending).
    Closed,
    /// The SSH control directory cannot be made.
    ControlDir,
    /// The command itself cannot be run.
    Command,
}

impl Failure {
    pub fn code(self) -> &'static str {
        match self {
            Failure::HostKey => codes::HOST_HOST_KEY,
            Failure::Auth => codes::HOST_AUTH,
            Failure::Sessions => codes::HOST_SESSIONS,
            Failure::Unreachable => codes::HOST_UNREACHABLE,
            Failure::Timeout => codes::HOST_TIMEOUT,
            Failure::Ssh => codes::HOST_SSH,
            Failure::Io => codes::HOST_IO,
            Failure::Closed => codes::HOST_CLOSED,
            Failure::ControlDir => codes::HOST_CONTROL_DIR,
            Failure::Command => codes::HOST_COMMAND,
        }
    }
}

#[derive(Clone, Debug, thiserror::Error)]
#[error("{host}: {reason}")]
pub struct HostError {
    pub failure: Failure,
    pub host: String,
    pub reason: String,
    /// The whole chain of causes, for the logs.
    pub detail: String,
}

impl HostError {
    pub fn new(failure: Failure, host: &str, reason: impl Into<String>) -> HostError {
        let reason = reason.into();
        HostError {
            failure,
            host: host.to_string(),
            detail: reason.clone(),
            reason,
        }
    }

    pub fn code(&self) -> &'static str {
        self.failure.code()
    }

    pub fn io(host: &str, what: &str, e: &std::io::Error) -> HostError {
        HostError::new(Failure::Io, host, format!("{what}: {e}"))
    }

    /// Classifies an openssh error by the words ssh itself printed, which `Display` hides
    /// in the source chain.
    pub fn ssh(target: &Target, e: &openssh::Error) -> HostError {
        let mut chain = e.to_string();
        let mut source = e.source();
        while let Some(s) = source {
            chain.push_str(": ");
            chain.push_str(&s.to_string());
            source = s.source();
        }
        let lower = chain.to_lowercase();
        let (failure, reason) = if lower.contains("host key verification failed")
            || lower.contains("remote host identification has changed")
        {
            (
                Failure::HostKey,
                format!(
                    "host key verification failed for {} (the key is not in known_hosts under the strict policy, or it changed)",
                    target.address
                ),
            )
        } else if lower.contains("permission denied") {
            (
                Failure::Auth,
                format!(
                    "the SSH key was refused for {}@{}",
                    target.user.as_deref().unwrap_or("(default user)"),
                    target.address
                ),
            )
        } else if lower.contains("session open refused") {
            (
                Failure::Sessions,
                format!(
                    "sshd refused another session (is its MaxSessions lower than max_sessions = {} in the topology?)",
                    target.max_sessions
                ),
            )
        } else if lower.contains("connection refused") {
            (
                Failure::Unreachable,
                format!(
                    "connection refused by {}:{} (is sshd running?)",
                    target.address, target.port
                ),
            )
        } else if lower.contains("timed out") || lower.contains("timeout") {
            (
                Failure::Timeout,
                format!(
                    "no answer from {}:{} within {}",
                    target.address,
                    target.port,
                    humantime::format_duration(target.connect_timeout)
                ),
            )
        } else if lower.contains("could not resolve") || lower.contains("not known") {
            (
                Failure::Unreachable,
                format!("cannot resolve {}", target.address),
            )
        } else if lower.contains("no route to host") || lower.contains("network is unreachable") {
            (
                Failure::Unreachable,
                format!("no route to {}", target.address),
            )
        } else {
            (Failure::Ssh, format!("ssh failed: {chain}"))
        };
        HostError {
            failure,
            host: target.name.clone(),
            reason,
            detail: chain,
        }
    }
}
