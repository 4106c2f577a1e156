//! What the lab's own commands (`harun lab up|ctl|status|down`, `--lab`) report when they
//! fail, each kind with its code from the catalogue. The twins answer API calls in their
//! servers' own words (plain text, as Consul, Nomad and Vault do), not with these.

use std::path::PathBuf;

use harun_runtime::codes;

#[derive(Debug, thiserror::Error)]
pub enum LabError {
    /// The directory holds no lab.
    #[error("no lab in {} (start one with `harun lab up --dir {}`)", .dir.display(), .dir.display())]
    NotUp { dir: PathBuf },
    /// The lab's own record cannot be read.
    #[error("{} is damaged: {reason}", .file.display())]
    Damaged { file: PathBuf, reason: String },
    /// A host, service or action the lab does not have.
    #[error("{0}")]
    Unknown(String),
    /// A twin did not start, or did not answer once started.
    #[error("{service} on {host}: {reason}")]
    Service {
        host: String,
        service: String,
        reason: String,
    },
    /// Anything else a lab step could not do (files, ports, certificates, the first
    /// state), in that step's words.
    #[error("{0}")]
    Step(String),
}

impl LabError {
    /// The code the error is reported with.
    pub fn code(&self) -> &'static str {
        match self {
            LabError::NotUp { .. } => codes::LAB_NOT_UP,
            LabError::Unknown(_) => codes::LAB_UNKNOWN,
            LabError::Service { .. } => codes::LAB_SERVICE,
            LabError::Damaged { .. } | LabError::Step(_) => codes::LAB,
        }
    }

    pub fn service(host: &str, service: &str, reason: impl Into<String>) -> LabError {
        LabError::Service {
            host: host.to_string(),
            service: service.to_string(),
            reason: reason.into(),
        }
    }
}

/// A lab step's error in its own words.
impl From<String> for LabError {
    fn from(message: String) -> LabError {
        LabError::Step(message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_kind_has_its_code_and_says_what_to_do() {
        let not_up = LabError::NotUp {
            dir: PathBuf::from("/tmp/lab"),
        };
        assert_eq!(not_up.code(), "harun::lab::not_up");
        assert_eq!(
            not_up.to_string(),
            "no lab in /tmp/lab (start one with `harun lab up --dir /tmp/lab`)"
        );
        let failed = LabError::service("controller1", "vault", "exited: bad config");
        assert_eq!(failed.code(), "harun::lab::service");
        assert_eq!(
            failed.to_string(),
            "vault on controller1: exited: bad config"
        );
        assert_eq!(LabError::from("no ports".to_string()).code(), "harun::lab");
    }
}
