//! Allocations: where the jobs' task groups run, how the leader places them, how each
//! client runs and stops its own, and how a drain moves them off a node. Each rule names
//! the Nomad source it follows (read at v1.6.0); where the lab simplifies, it says so.
//!
//! The replicated state (state.rs) keeps allocations under `allocs`, beside the nodes and
//! the jobs.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant, SystemTime};

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::state::{Job, Migrate, Node, State, TaskGroup};
/// The lab's batch tasks (a backup) finish this long after they start.
const BATCH_RUNS_FOR: Duration = Duration::from_secs(5);

/// One allocation, with the fields of Nomad's `structs.Allocation` that the API shows.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase", default)]
pub struct Alloc {
    #[serde(rename = "ID")]
    pub id: String,
    #[serde(rename = "EvalID")]
    pub eval_id: String,
    /// `job.group[index]`.
    pub name: String,
    pub namespace: String,
    #[serde(rename = "NodeID")]
    pub node_id: String,
    pub node_name: String,
    #[serde(rename = "JobID")]
    pub job_id: String,
    pub job_type: String,
    pub task_group: String,
    /// `run` or `stop`: what the servers want.
    pub desired_status: String,
    pub desired_description: String,
    /// `pending`, `running`, `complete`, `failed` or `lost`: what the client reports.
    pub client_status: String,
    pub client_description: String,
    pub desired_transition: Transition,
    pub deployment_status: Option<Health>,
    pub previous_allocation: String,
    pub next_allocation: String,
    pub create_index: u64,
    pub modify_index: u64,
    /// Nanoseconds since the epoch.
    pub create_time: i64,
    pub modify_time: i64,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase", default)]
pub struct Transition {
    pub migrate: bool,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase", default)]
pub struct Health {
    pub healthy: Option<bool>,
}

impl Alloc {
    /// structs.go `ClientTerminalStatus`.
    pub fn client_terminal(&self) -> bool {
        matches!(self.client_status.as_str(), "complete" | "failed" | "lost")
    }

    /// Neither stopped by the servers nor ended on the client.
    fn live(&self) -> bool {
        self.desired_status == "run" && !self.client_terminal()
    }

    /// structs.go `AllocListStub`: the list endpoints leave out PreviousAllocation.
    pub fn stub(&self) -> Value {
        let mut v = json!(self);
        if let Some(m) = v.as_object_mut() {
            m.remove("PreviousAllocation");
        }
        v
    }
}

/// The task groups of a job registration, canonicalized as api/tasks.go does: service
/// groups get the default migrate block (each field defaulted on its own).
pub fn canonical_groups(kind: &str, groups: Vec<TaskGroup>) -> Vec<TaskGroup> {
    groups
        .into_iter()
        .map(|mut g| {
            if kind == "service" {
                g.migrate = Some(g.migrate.unwrap_or_default());
            }
            g
        })
        .collect()
}

/// How long an allocation of `group` must run before it counts as healthy.
fn min_healthy(group: Option<&TaskGroup>) -> Duration {
    let m = group.and_then(|g| g.migrate.clone()).unwrap_or_default();
    Duration::from_nanos(m.min_healthy_time)
}

fn max_parallel(group: &TaskGroup) -> u64 {
    group
        .migrate
        .as_ref()
        .map_or(Migrate::default().max_parallel, |m| m.max_parallel)
}

/// A stop the scheduler decided, as a plan carries it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Stop {
    pub id: String,
    pub description: String,
    /// The node is down: the client cannot say, so the servers mark it lost.
    pub lost: bool,
}

/// What a client reports about one of its allocations (Node.UpdateAlloc).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ClientUpdate {
    pub id: String,
    pub client_status: String,
    pub healthy: Option<bool>,
}

pub fn now_nanos() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i64)
}

/// Applies a plan (nomad/plan_apply.go applyPlan, state_store.go upsertAllocsImpl): the
/// stops, then the placements; a replacement's predecessor learns its NextAllocation.
pub fn apply_plan(state: &mut State, stops: Vec<Stop>, places: Vec<Alloc>, index: u64) {
    let now = now_nanos();
    for stop in stops {
        if let Some(a) = state.allocs.get_mut(&stop.id) {
            a.desired_status = "stop".into();
            a.desired_description = stop.description;
            if stop.lost {
                a.client_status = "lost".into();
            }
            a.modify_index = index;
            a.modify_time = now;
        }
    }
    for mut alloc in places {
        alloc.create_index = index;
        alloc.modify_index = index;
        if let Some(prev) = state.allocs.get_mut(&alloc.previous_allocation) {
            prev.next_allocation = alloc.id.clone();
            prev.modify_index = index;
        }
        state.allocs.insert(alloc.id.clone(), alloc);
    }
}

/// Applies clients' updates (state_store.go UpdateAllocsFromClient): only the client's
/// fields change.
pub fn apply_client_updates(state: &mut State, updates: Vec<ClientUpdate>, index: u64) {
    let now = now_nanos();
    for u in updates {
        if let Some(a) = state.allocs.get_mut(&u.id) {
            a.client_status = u.client_status;
            if u.healthy.is_some() {
                a.deployment_status = Some(Health { healthy: u.healthy });
            }
            a.modify_index = index;
            a.modify_time = now;
        }
    }
}

/// Marks allocations for migration (state_store.go UpdateAllocsDesiredTransitions).
pub fn apply_migrate(state: &mut State, ids: Vec<String>, index: u64) {
    for id in ids {
        if let Some(a) = state.allocs.get_mut(&id) {
            a.desired_transition.migrate = true;
            a.modify_index = index;
        }
    }
}

/// A node as placement sees it.
struct NodeView<'a> {
    id: &'a str,
    name: &'a str,
    down: bool,
    ready: bool,
    datacenter: &'a str,
}

fn nodes(state: &State) -> Vec<NodeView<'_>> {
    state
        .nodes
        .iter()
        .map(|(id, n): (&String, &Node)| NodeView {
            id,
            name: &n.name,
            down: n.status == "down",
            ready: n.ready(),
            datacenter: &n.datacenter,
        })
        .collect()
}

/// structs.go Node.IsInAnyDC: the job's datacenters are glob patterns (the lab knows `*`).
fn in_datacenters(dc: &str, patterns: &[String]) -> bool {
    patterns.iter().any(|p| glob_matches(p, dc))
}

fn glob_matches(pattern: &str, text: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern == text,
        Some((head, rest)) => {
            let Some(tail) = text.strip_prefix(head) else {
                return false;
            };
            (0..=tail.len())
                .filter(|i| tail.is_char_boundary(*i))
                .any(|i| glob_matches(rest, &tail[i..]))
        }
    }
}

/// One scheduling pass of the leader over every job (scheduler/generic_sched.go for
/// service and batch jobs, scheduler_system.go for system jobs): the stops and
/// placements that bring each task group to its count.
///
/// - An allocation on a node that is down or gone is lost (reconcile.go computeStop,
///   "alloc is lost since its node is down") and replaced.
/// - One marked for migration is stopped ("alloc is being migrated") and replaced, the
///   replacement naming it as PreviousAllocation (reconcile.go computeMigrations). The stop
///   stands even when nothing can take the replacement: only destructive updates back
///   their stop out (allocPlaceResult.StopPreviousAlloc is false); the placement waits,
///   as a blocked evaluation would, for a node to become ready.
/// - New allocations go to ready nodes in the job's datacenters, the node with the fewest
///   of the job's allocations first (the lab's stand-in for binpacking with job
///   anti-affinity, rank.go JobAntiAffinityIterator).
/// - A system job runs one allocation per ready node; on a node no longer ready its
///   allocation stays until marked for migration, and is then stopped, not replaced
///   ("alloc not needed as node is tainted", system_util.go diffSystemAllocsForNode).
pub fn schedule(state: &State) -> (Vec<Stop>, Vec<Alloc>) {
    let allocs = &state.allocs;
    let nodes = nodes(state);
    let mut stops = Vec::new();
    let mut places = Vec::new();
    let eval_id = uuid::Uuid::new_v4().to_string();
    for job in state.jobs.values().filter(|j| !j.stop) {
        let datacenters = job.datacenters();
        let feasible: Vec<&NodeView> = nodes
            .iter()
            .filter(|n| n.ready && in_datacenters(n.datacenter, &datacenters))
            .collect();
        // Live allocations of this job per node, counting this pass's placements.
        let mut per_node: HashMap<&str, usize> = HashMap::new();
        for a in allocs.values().filter(|a| a.job_id == job.id && a.live()) {
            *per_node.entry(a.node_id.as_str()).or_default() += 1;
        }
        for group in &job.task_groups {
            let mine: Vec<&Alloc> = allocs
                .values()
                .filter(|a| a.job_id == job.id && a.task_group == group.name)
                .collect();
            let (keep, replace) = triage(job, &mine, &nodes, &mut stops, &mut per_node);
            let new = |node: &NodeView, name: String, previous: &str| Alloc {
                eval_id: eval_id.clone(),
                previous_allocation: previous.to_string(),
                ..new_alloc(job, group, node, name)
            };
            if job.kind == "system" {
                for node in &feasible {
                    if !keep.iter().any(|a| a.node_id == node.id) {
                        let name = format!("{}.{}[0]", job.id, group.name);
                        places.push(new(node, name, ""));
                    }
                }
                continue;
            }
            // A batch allocation that finished counts toward the group's count.
            let finished = if job.kind == "batch" {
                mine.iter()
                    .filter(|a| a.desired_status == "run" && a.client_status == "complete")
                    .count()
            } else {
                0
            };
            let wanted = (group.count as usize).saturating_sub(keep.len() + finished);
            let mut taken: Vec<String> = keep.iter().map(|a| a.name.clone()).collect();
            for i in 0..wanted {
                let previous = replace.get(i);
                let Some(node) = feasible
                    .iter()
                    .min_by_key(|n| (per_node.get(n.id).copied().unwrap_or(0), n.name))
                else {
                    break;
                };
                let name = match previous {
                    Some(p) => p.name.clone(),
                    None => (0..)
                        .map(|k| format!("{}.{}[{k}]", job.id, group.name))
                        .find(|n| !taken.contains(n))
                        .unwrap_or_default(),
                };
                taken.push(name.clone());
                *per_node.entry(node.id).or_default() += 1;
                places.push(new(node, name, previous.map_or("", |p| p.id.as_str())));
            }
        }
    }
    (stops, places)
}

/// A group's live allocations sorted: those kept where they are, and those stopped (lost
/// with their node, or migrated) that want a replacement; the stops go to `stops`.
fn triage<'a>(
    job: &Job,
    mine: &[&'a Alloc],
    nodes: &[NodeView],
    stops: &mut Vec<Stop>,
    per_node: &mut HashMap<&str, usize>,
) -> (Vec<&'a Alloc>, Vec<&'a Alloc>) {
    let mut keep = Vec::new();
    let mut replace = Vec::new();
    for a in mine.iter().filter(|a| a.live()) {
        let node = nodes.iter().find(|n| n.id == a.node_id);
        let (description, lost) = match node {
            None => ("alloc is lost since its node is down", true),
            Some(n) if n.down => ("alloc is lost since its node is down", true),
            Some(_) if a.desired_transition.migrate && job.kind == "system" => {
                ("alloc not needed as node is tainted", false)
            }
            Some(_) if a.desired_transition.migrate => ("alloc is being migrated", false),
            Some(_) => {
                keep.push(*a);
                continue;
            }
        };
        stops.push(Stop {
            id: a.id.clone(),
            description: description.into(),
            lost,
        });
        if let Some(c) = per_node.get_mut(a.node_id.as_str()) {
            *c = c.saturating_sub(1);
        }
        if job.kind != "system" {
            replace.push(*a);
        }
    }
    (keep, replace)
}

/// A new allocation of `group` on `node`, pending until its client starts it.
fn new_alloc(job: &Job, group: &TaskGroup, node: &NodeView, name: String) -> Alloc {
    let now = now_nanos();
    Alloc {
        id: uuid::Uuid::new_v4().to_string(),
        name,
        namespace: "default".into(),
        node_id: node.id.to_string(),
        node_name: node.name.to_string(),
        job_id: job.id.clone(),
        job_type: job.kind.clone(),
        task_group: group.name.clone(),
        desired_status: "run".into(),
        client_status: "pending".into(),
        create_time: now,
        modify_time: now,
        ..Alloc::default()
    }
}

/// What the drainer decides in one pass (nomad/drainer/): allocations to mark for
/// migration and drains that are over.
#[derive(Debug, Default)]
pub struct DrainPass {
    pub migrate: Vec<String>,
    /// The nodes whose drain is over (done, or at its deadline).
    pub done: Vec<String>,
}

/// One pass of the drainer over the draining nodes whose drain began at least `settle`
/// ago (drainer.go batches its updates each second).
///
/// - Per service task group, allocations on draining nodes are marked for migration so
///   that no more than MaxParallel of the group are unhealthy at once:
///   `min(drainable, healthy - (count - max_parallel))`, where healthy counts the group's
///   live allocations whose health is set (watch_jobs.go handleTaskGroup). Batch
///   allocations are left to finish; system ones stay (IgnoreSystemJobs, or until the end).
/// - A node is done when none but system allocations is still running on its client
///   (draining_node.go IsDone); its remaining allocations are then marked, unless system
///   jobs are ignored.
/// - At the deadline every remaining allocation is marked and the drain ends at once,
///   without waiting for them to stop (drainer.go handleDeadlinedNodes).
pub fn drain_pass(state: &State, settle: Duration) -> DrainPass {
    let allocs = &state.allocs;
    let now = SystemTime::now();
    let mut pass = DrainPass::default();
    let parse = |t: &str| humantime::parse_rfc3339(t).ok();
    let draining: Vec<(&String, &super::state::DrainStrategy)> = state
        .nodes
        .iter()
        .filter(|(_, n)| n.drain)
        .filter_map(|(id, n)| Some((id, n.drain_strategy.as_ref()?)))
        .filter(|(_, s)| parse(&s.started_at).is_none_or(|t| t + settle <= now))
        .collect();
    let is_draining = |node: &str| draining.iter().any(|(id, _)| *id == node);
    let jobs = &state.jobs;

    // Service groups with allocations on a draining node.
    let mut groups: Vec<(&str, &str)> = allocs
        .values()
        .filter(|a| a.job_type == "service" && is_draining(&a.node_id))
        .map(|a| (a.job_id.as_str(), a.task_group.as_str()))
        .collect();
    groups.sort_unstable();
    groups.dedup();
    for (job_id, group_name) in groups {
        let Some(group) = jobs
            .get(job_id)
            .filter(|j| !j.stop)
            .and_then(|j| j.group(group_name))
        else {
            continue;
        };
        let of_group = || {
            allocs
                .values()
                .filter(move |a| a.job_id == job_id && a.task_group == group_name)
        };
        let healthy = of_group()
            .filter(|a| !a.client_terminal() && a.desired_status == "run")
            .filter(|a| {
                a.deployment_status
                    .as_ref()
                    .is_some_and(|h| h.healthy.is_some())
            })
            .count();
        let drainable: Vec<&Alloc> = of_group()
            .filter(|a| is_draining(&a.node_id))
            .filter(|a| !a.client_terminal() && !a.desired_transition.migrate)
            .collect();
        let room = healthy.saturating_sub(group.count.saturating_sub(max_parallel(group)) as usize);
        pass.migrate
            .extend(drainable.iter().take(room).map(|a| a.id.clone()));
    }

    for (id, strategy) in &draining {
        let ignore_system = strategy.ignore_system_jobs;
        let on_node: Vec<&Alloc> = allocs
            .values()
            .filter(|a| &a.node_id == *id && !a.client_terminal())
            .collect();
        let deadline = parse(&strategy.force_deadline).filter(|_| strategy.deadline != 0);
        let over = deadline.is_some_and(|d| d <= now);
        if over || on_node.iter().all(|a| a.job_type == "system") {
            let remaining = on_node
                .iter()
                .filter(|a| !(ignore_system && a.job_type == "system"))
                .filter(|a| !a.desired_transition.migrate)
                .map(|a| a.id.clone());
            pass.migrate.extend(remaining);
            pass.done.push((*id).clone());
        }
    }
    pass.migrate.sort_unstable();
    pass.migrate.dedup();
    pass
}

/// What one client does with its own allocations (client/client.go runAllocs, the alloc
/// runner): a new allocation starts; a running one turns healthy once it has run its
/// group's min_healthy_time (allocrunner/health_hook.go, the migrate block's settings
/// when there is no deployment); a stopped one ends complete. The lab's batch tasks end
/// on their own after a few seconds.
pub fn client_pass(
    allocs: &BTreeMap<String, Alloc>,
    jobs: &BTreeMap<String, Job>,
    node_id: &str,
    started: &mut HashMap<String, Instant>,
) -> Vec<ClientUpdate> {
    let mut updates = Vec::new();
    let update = |a: &Alloc, status: &str, healthy: Option<bool>| ClientUpdate {
        id: a.id.clone(),
        client_status: status.into(),
        healthy,
    };
    started.retain(|id, _| allocs.contains_key(id));
    for a in allocs.values().filter(|a| a.node_id == node_id) {
        if a.client_terminal() {
            started.remove(&a.id);
            continue;
        }
        if a.desired_status != "run" {
            updates.push(update(a, "complete", None));
            continue;
        }
        let since = *started.entry(a.id.clone()).or_insert_with(Instant::now);
        if a.client_status == "pending" {
            updates.push(update(a, "running", None));
            continue;
        }
        let min_healthy = min_healthy(jobs.get(&a.job_id).and_then(|j| j.group(&a.task_group)));
        match a.job_type.as_str() {
            "batch" if since.elapsed() >= BATCH_RUNS_FOR => {
                updates.push(update(a, "complete", None));
            }
            // allocrunner/health_hook.go watches service jobs' allocations only.
            "service" if a.deployment_status.is_none() && since.elapsed() >= min_healthy => {
                updates.push(update(a, "running", Some(true)));
            }
            _ => {}
        }
    }
    updates
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nomad::state::{DrainStrategy, State};

    fn state() -> State {
        let node = |name: &str| json!({"Name": name, "Status": "ready", "SchedulingEligibility": "eligible", "Datacenter": "homelab"});
        let mut state: State = serde_json::from_value(json!({
            "nodes": {"n1": node("c1"), "n2": node("c2"), "n3": node("c3")},
            "jobs": {
                "web": {"ID": "web", "Type": "service", "Datacenters": ["homelab"],
                        "TaskGroups": [{"Name": "web", "Count": 3}]},
                "proxy": {"ID": "proxy", "Type": "system", "Datacenters": ["*"], "TaskGroups": [{"Name": "proxy"}]},
            },
        }))
        .unwrap();
        let web = state.jobs.get_mut("web").unwrap();
        web.task_groups = canonical_groups("service", std::mem::take(&mut web.task_groups));
        state
    }

    fn settle(state: &mut State) {
        let (stops, places) = schedule(state);
        apply_plan(state, stops, places, 1);
        let updates: Vec<ClientUpdate> = state
            .allocs
            .values()
            .filter(|a| !a.client_terminal())
            .map(|a| ClientUpdate {
                id: a.id.clone(),
                client_status: if a.desired_status == "run" {
                    "running"
                } else {
                    "complete"
                }
                .into(),
                healthy: (a.desired_status == "run").then_some(true),
            })
            .collect();
        apply_client_updates(state, updates, 2);
    }

    fn running_on(state: &State, job: &str) -> Vec<String> {
        let mut v: Vec<String> = state
            .allocs
            .values()
            .filter(|a| a.job_id == job && a.live())
            .map(|a| a.node_name.clone())
            .collect();
        v.sort();
        v
    }

    fn drain(state: &mut State, node: &str) {
        let n = state.nodes.get_mut(node).unwrap();
        n.drain = true;
        n.scheduling_eligibility = "ineligible".into();
        n.drain_strategy = Some(DrainStrategy {
            ignore_system_jobs: true,
            ..DrainStrategy::default()
        });
    }

    #[test]
    fn places_spread_and_one_system_alloc_per_node() {
        let mut state = state();
        settle(&mut state);
        assert_eq!(running_on(&state, "web"), ["c1", "c2", "c3"]);
        assert_eq!(running_on(&state, "proxy"), ["c1", "c2", "c3"]);
        // A second pass changes nothing.
        let (stops, places) = schedule(&state);
        assert!(stops.is_empty() && places.is_empty());
    }

    #[test]
    fn a_drain_moves_one_at_a_time_and_keeps_system_allocs() {
        let mut state = state();
        settle(&mut state);
        drain(&mut state, "n2");
        let pass = drain_pass(&state, Duration::ZERO);
        assert_eq!(pass.migrate.len(), 1, "{pass:?}");
        assert!(pass.done.is_empty());
        apply_migrate(&mut state, pass.migrate, 3);
        settle(&mut state);
        let web = running_on(&state, "web");
        assert!(
            !web.contains(&"c2".to_string()) && web.len() == 3,
            "{web:?}"
        );
        let moved = state
            .allocs
            .values()
            .find(|a| a.node_name == "c2" && a.job_id == "web")
            .unwrap();
        assert_eq!(moved.desired_description, "alloc is being migrated");
        assert!(!moved.next_allocation.is_empty());
        let pass = drain_pass(&state, Duration::ZERO);
        assert_eq!(pass.done, ["n2"]);
        assert!(pass.migrate.is_empty(), "system allocs stay: {pass:?}");
    }

    #[test]
    fn a_migration_with_nowhere_to_go_still_stops_the_old_alloc() {
        let mut state = state();
        settle(&mut state);
        for n in ["n1", "n3"] {
            state.nodes.get_mut(n).unwrap().scheduling_eligibility = "ineligible".into();
        }
        drain(&mut state, "n2");
        let pass = drain_pass(&state, Duration::ZERO);
        apply_migrate(&mut state, pass.migrate, 3);
        settle(&mut state);
        assert_eq!(running_on(&state, "web"), ["c1", "c3"]);
    }

    #[test]
    fn allocs_of_a_down_node_are_lost_and_replaced() {
        let mut state = state();
        settle(&mut state);
        state.nodes.get_mut("n3").unwrap().status = "down".into();
        settle(&mut state);
        assert_eq!(running_on(&state, "web").len(), 3);
        assert!(state
            .allocs
            .values()
            .any(|a| a.node_name == "c3" && a.client_status == "lost"));
    }
}
