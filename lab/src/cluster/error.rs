//! Why a replicated write did not commit, typed, so that each twin answers it in its
//! server's own words (Consul's and Nomad's 500 "No cluster leader") and the reason
//! travels whole when a follower forwards the write to the leader.

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[serde(tag = "kind", content = "message", rename_all = "snake_case")]
pub enum WriteError {
    /// This node takes no part in consensus now (a sealed Vault).
    #[error("node is not active")]
    NotActive,
    /// No leader, or the leader could not reach a majority of voters.
    #[error("No cluster leader")]
    NoLeader,
    /// Leadership moved while the write was under way: it may not have committed.
    #[error("leadership lost")]
    LeadershipLost,
    /// The state refused the operation, in the twin's words (its `Operation::Error`).
    #[error("{0}")]
    Refused(String),
    /// The operation or the leader's answer could not be read.
    #[error("{0}")]
    Garbled(String),
}
