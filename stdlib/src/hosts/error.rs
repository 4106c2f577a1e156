//! Host errors: one line that names the host and the reason a person can act on, with a
//! stable code; the full cause chain is kept for `-v`.

use std::error::Error as _;
use std::fmt;

use super::target::Target;
use harun_runtime::codes;

#[derive(Clone, Debug)]
pub struct HostError {
    pub code: &'static str,
    pub host: String,
    pub reason: String,
    /// The whole chain of causes, for the logs.
    pub detail: String,
}

impl fmt::Display for HostError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.host, self.reason)
    }
}

impl HostError {
    pub fn new(code: &'static str, host: &str, reason: impl Into<String>) -> HostError {
        let reason = reason.into();
        HostError {
            code,
            host: host.to_string(),
            detail: reason.clone(),
            reason,
        }
    }

    pub fn io(host: &str, what: &str, e: &std::io::Error) -> HostError {
        HostError::new(codes::HOST_IO, host, format!("{what}: {e}"))
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
        let (code, reason) = if lower.contains("host key verification failed")
            || lower.contains("remote host identification has changed")
        {
            (
                codes::HOST_HOST_KEY,
                format!(
                    "host key verification failed for {} (the key is not in known_hosts under the strict policy, or it changed)",
                    target.address
                ),
            )
        } else if lower.contains("permission denied") {
            (
                codes::HOST_AUTH,
                format!(
                    "the SSH key was refused for {}@{}",
                    target.user.as_deref().unwrap_or("(default user)"),
                    target.address
                ),
            )
        } else if lower.contains("session open refused") {
            (
                codes::HOST_SESSIONS,
                format!(
                    "sshd refused another session (is its MaxSessions lower than max_sessions = {} in the topology?)",
                    target.max_sessions
                ),
            )
        } else if lower.contains("connection refused") {
            (
                codes::HOST_UNREACHABLE,
                format!(
                    "connection refused by {}:{} (is sshd running?)",
                    target.address, target.port
                ),
            )
        } else if lower.contains("timed out") || lower.contains("timeout") {
            (
                codes::HOST_TIMEOUT,
                format!(
                    "no answer from {}:{} within {}",
                    target.address,
                    target.port,
                    humantime::format_duration(target.connect_timeout)
                ),
            )
        } else if lower.contains("could not resolve") || lower.contains("not known") {
            (
                codes::HOST_UNREACHABLE,
                format!("cannot resolve {}", target.address),
            )
        } else if lower.contains("no route to host") || lower.contains("network is unreachable") {
            (
                codes::HOST_UNREACHABLE,
                format!("no route to {}", target.address),
            )
        } else {
            (codes::HOST_SSH, format!("ssh failed: {chain}"))
        };
        HostError {
            code,
            host: target.name.clone(),
            reason,
            detail: chain,
        }
    }
}
