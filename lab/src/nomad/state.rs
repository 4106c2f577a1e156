//! The Nomad twin's replicated state, typed: client nodes (structs.Node), jobs (the
//! fields of structs.JobListStub and the task groups), allocations (allocs.rs) and the ACL
//! bootstrap. The consensus core carries it as JSON, in the shape Nomad's API shows.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::allocs::Alloc;

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct State {
    pub nodes: BTreeMap<String, Node>,
    pub jobs: BTreeMap<String, Job>,
    pub allocs: BTreeMap<String, Alloc>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub acl_bootstrap: Option<AclBootstrap>,
}

impl crate::cluster::TypedState for State {}

/// A client node as `GET /v1/node/:id` shows it.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase", default)]
pub struct Node {
    #[serde(rename = "ID")]
    pub id: String,
    pub name: String,
    pub datacenter: String,
    pub address: String,
    pub node_class: String,
    pub node_pool: String,
    pub version: String,
    pub drain: bool,
    /// `eligible` or `ineligible`.
    pub scheduling_eligibility: String,
    /// `ready`, `down` (or `initializing`).
    pub status: String,
    pub status_description: String,
    pub drivers: Value,
    pub host_volumes: Value,
    pub drain_strategy: Option<DrainStrategy>,
    pub last_drain: Option<LastDrain>,
    /// The gossip member of the node's agent: the lab's stand-in for its heartbeats. Not
    /// a field of Nomad's; the API leaves it out.
    pub member: String,
    pub create_index: u64,
    pub modify_index: u64,
}

impl Node {
    /// structs.go Node.Ready: ready, not draining, eligible.
    pub fn ready(&self) -> bool {
        self.status == "ready"
            && self.drain_strategy.is_none()
            && !self.drain
            && self.scheduling_eligibility == "eligible"
    }
}

/// structs.DrainStrategy as the API shows it.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase", default)]
pub struct DrainStrategy {
    /// Nanoseconds: > 0 forces the drain at ForceDeadline, < 0 at once, 0 never.
    pub deadline: i64,
    pub ignore_system_jobs: bool,
    pub force_deadline: String,
    pub started_at: String,
}

/// structs.DrainMetadata: the node's last drain.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase", default)]
pub struct LastDrain {
    /// `draining`, `complete` or `canceled`.
    pub status: String,
    pub started_at: String,
    pub updated_at: String,
    #[serde(rename = "AccessorID")]
    pub accessor_id: String,
    pub meta: Value,
}

/// A registered job: its list-stub fields and its task groups.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase", default)]
pub struct Job {
    #[serde(rename = "ID")]
    pub id: String,
    #[serde(rename = "ParentID")]
    pub parent_id: String,
    pub name: String,
    pub namespace: String,
    pub datacenters: Value,
    /// `service`, `batch` or `system`.
    #[serde(rename = "Type")]
    pub kind: String,
    pub priority: u64,
    pub periodic: bool,
    pub parameterized_job: bool,
    pub stop: bool,
    pub status: String,
    pub status_description: String,
    pub task_groups: Vec<TaskGroup>,
    pub create_index: u64,
    pub modify_index: u64,
    pub job_modify_index: u64,
}

impl Job {
    /// The datacenters it may run in, as glob patterns (structs.go Job.Canonicalize: none
    /// given means every one).
    pub fn datacenters(&self) -> Vec<String> {
        let given: Vec<String> = self
            .datacenters
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|d| d.as_str().map(String::from))
            .collect();
        if given.is_empty() {
            vec!["*".to_string()]
        } else {
            given
        }
    }

    pub fn group(&self, name: &str) -> Option<&TaskGroup> {
        self.task_groups.iter().find(|g| g.name == name)
    }
}

/// A task group: what the scheduler and the drainer read, and the rest as registered.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub struct TaskGroup {
    #[serde(default)]
    pub name: String,
    /// api/tasks.go Canonicalize: 1 when not given.
    #[serde(default = "one")]
    pub count: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub migrate: Option<Migrate>,
    #[serde(flatten)]
    pub rest: serde_json::Map<String, Value>,
}

fn one() -> u64 {
    1
}

/// The migrate block, each field defaulted as structs.DefaultMigrateStrategy: one at a
/// time, healthy by its checks after 10 s, within 5 minutes.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase", default)]
pub struct Migrate {
    pub max_parallel: u64,
    pub health_check: String,
    /// Nanoseconds.
    pub min_healthy_time: u64,
    pub healthy_deadline: u64,
}

impl Default for Migrate {
    fn default() -> Migrate {
        Migrate {
            max_parallel: 1,
            health_check: "checks".into(),
            min_healthy_time: 10_000_000_000,
            healthy_deadline: 300_000_000_000,
        }
    }
}

/// The management token `PUT /v1/acl/bootstrap` made, and the index it was made at.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct AclBootstrap {
    pub secret: String,
    pub accessor: String,
    pub index: u64,
}

/// A change of one node's fields (Node.UpdateStatus, Node.UpdateDrain,
/// Node.UpdateEligibility, the drainer's NodesDrainComplete).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "change", rename_all = "snake_case")]
pub enum NodeChange {
    /// Its heartbeats stopped.
    Down,
    /// A drain begins: the node ineligible, its strategy and last drain set.
    Drain {
        strategy: DrainStrategy,
        last: LastDrain,
    },
    /// The operator ends a drain (`DrainSpec: null`): one under way is canceled; the
    /// node is eligible again only with MarkEligible.
    EndDrain {
        at: String,
        mark_eligible: bool,
    },
    /// The drainer ends a drain: complete, the node left ineligible
    /// (state_store.go updateNodeDrainImpl without MarkEligible).
    DrainComplete {
        at: String,
    },
    Eligibility {
        eligible: bool,
    },
}

impl NodeChange {
    pub fn apply(self, node: &mut Node) {
        match self {
            NodeChange::Down => node.status = "down".into(),
            // A drain asked again of a draining node keeps when it began and its record
            // (nomad/node_endpoint.go UpdateDrain, state_store.go updateNodeDrainImpl).
            NodeChange::Drain { mut strategy, last } => {
                let under_way = node.drain_strategy.as_ref().map(|s| s.started_at.clone());
                if let Some(started_at) = under_way {
                    strategy.started_at = started_at;
                } else {
                    node.last_drain = Some(last);
                }
                node.drain = true;
                node.scheduling_eligibility = "ineligible".into();
                node.drain_strategy = Some(strategy);
            }
            NodeChange::EndDrain { at, mark_eligible } => {
                node.drain = false;
                node.drain_strategy = None;
                if let Some(last) = node.last_drain.as_mut().filter(|l| l.status == "draining") {
                    last.status = "canceled".into();
                    last.updated_at = at;
                }
                if mark_eligible {
                    node.scheduling_eligibility = "eligible".into();
                }
            }
            NodeChange::DrainComplete { at } => {
                node.drain = false;
                node.drain_strategy = None;
                if let Some(last) = node.last_drain.as_mut() {
                    last.status = "complete".into();
                    last.updated_at = at;
                }
            }
            NodeChange::Eligibility { eligible } => {
                node.scheduling_eligibility =
                    if eligible { "eligible" } else { "ineligible" }.into();
            }
        }
    }
}
