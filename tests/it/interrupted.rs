//! An interrupted run is finished by the next one. Each changing script runs on a fresh
//! lab and is killed (SIGKILL, or SIGINT as Ctrl-C sends it) at a step boundary (when the
//! audit log holds a given number of changes) or inside a long step (a moment after one);
//! a second run (with `--yes`, to take a dead run's lock over) must end OK with the
//! cluster whole, every KV entry and secret of the first state there, and every config
//! file whole.

use crate::common;

use std::os::unix::process::ExitStatusExt;
use std::time::Duration;

use common::http::{eventually, get};
use common::lab::{script, wait_for_changes, Lab};

const KV: [(&str, &str); 3] = [
    ("homelab/dns/zone", "home.arpa"),
    ("homelab/backup/schedule", "0 3 * * *"),
    ("homelab/nomad/datacenter", "homelab"),
];

/// Where to kill a run: once the audit log holds `changes` entries, after `delay`.
#[derive(Clone, Copy, Debug)]
struct KillPoint {
    changes: usize,
    delay: Duration,
    signal: i32,
}

const fn at(changes: usize, signal: i32) -> KillPoint {
    KillPoint {
        changes,
        delay: Duration::ZERO,
        signal,
    }
}

const fn inside(changes: usize, delay_ms: u64, signal: i32) -> KillPoint {
    KillPoint {
        changes,
        delay: Duration::from_millis(delay_ms),
        signal,
    }
}

/// Not a signal: the run started under `timeout -s KILL` and killed as timeout kills it
/// (SIGKILL to its process group), so that init reaps it a moment later and the next run
/// meets a zombie holding the lock.
const TIMEOUT_KILL: i32 = -1;

/// The same points, each killed as `timeout -s KILL` kills (issue 28: the re-run must
/// finish after both ways of killing, at every kill point). A test of their own, so that
/// the two ways run side by side.
fn by_timeout(points: &[KillPoint]) -> Vec<KillPoint> {
    points
        .iter()
        .map(|p| KillPoint {
            signal: TIMEOUT_KILL,
            ..*p
        })
        .collect()
}

/// Runs `name` on a fresh lab, kills it at `point`, runs it again, and returns the lab
/// and the second run's stdout for the script's own checks.
fn kill_and_finish(name: &str, point: KillPoint) -> (Lab, String) {
    let lab = Lab::up();
    let stdout = kill_and_finish_on(&lab, name, point);
    check_consul_whole(&lab, name, point);
    check_configs_whole(&lab, name, point);
    (lab, stdout)
}

/// How far the killed run got, by its audit log (a change is recorded once it is made).
#[derive(Debug, PartialEq)]
enum Reached {
    /// Its last change was recorded: nothing is left for the next run.
    End,
    /// The change before the last was recorded: the last one may have been under way, and
    /// done by the servers, when the run died.
    LastUnderWay,
    /// Changes were left: the next run must make them.
    Short,
}

fn reached(name: &str, audit: &std::path::Path) -> Reached {
    let text = std::fs::read_to_string(audit).unwrap_or_default();
    let Some(last) = text
        .lines()
        .rfind(|l| !l.contains("consul: take the lock "))
    else {
        return Reached::Short;
    };
    let last: serde_json::Value = serde_json::from_str(last).unwrap();
    let (target, summary) = (
        last["target"].as_str().unwrap_or(""),
        last["summary"].as_str().unwrap(),
    );
    let (end, before_end) = match name {
        "consul-ha.rhai" => (
            target == "controller1" && summary == "restart consul",
            target == "controller3" && summary == "start consul",
        ),
        "nomad-ha.rhai" => (
            target == "controller1" && summary == "restart nomad",
            summary.starts_with("nomad: join ")
                || (target == "controller3" && summary == "start nomad"),
        ),
        "vault-raft.rhai" => (
            target == "controller3" && summary.starts_with("vault: unseal"),
            target == "controller3" && summary == "start vault",
        ),
        // Both recover scripts end by removing their record of the recovery, right after
        // controller3's raft data is set aside (Consul) or made anew (Vault): a run killed
        // there may have removed the record without recording it.
        "consul-recover.rhai" | "nomad-recover.rhai" | "vault-recover.rhai" => (
            summary.starts_with("rm -f -- ") && summary.contains("harun-recovery.json"),
            target == "controller3"
                && if name == "vault-recover.rhai" {
                    summary.starts_with("mkdir -p ")
                } else {
                    summary.starts_with("mv ")
                },
        ),
        other => panic!("no end known for {other}"),
    };
    if end {
        Reached::End
    } else if before_end {
        Reached::LastUnderWay
    } else {
        Reached::Short
    }
}

/// `kill_and_finish` on a lab already prepared; returns the second run's stdout. The
/// killed run's own status is what a user sees: killed by SIGKILL, exit 3 with
/// `harun::interrupted` after Ctrl-C. The second run says "nothing to change" (or
/// "nothing to recover") only when the first had made every change.
fn kill_and_finish_on(lab: &Lab, name: &str, point: KillPoint) -> String {
    let audit = lab.test.path("audit.log");
    let first_stderr = lab.test.path("first.stderr");
    let _ = std::fs::remove_file(&audit);
    let mut first = if point.signal == TIMEOUT_KILL {
        lab.spawn_script_under_timeout(name, &audit, &first_stderr, &["--yes"])
    } else {
        lab.spawn_script(name, &audit, &first_stderr, &["--yes"])
    };
    wait_for_changes(&audit, point.changes, &mut first, name);
    std::thread::sleep(point.delay);
    // SAFETY: signalling the child we started (or, as timeout does, its process group).
    unsafe {
        match point.signal {
            TIMEOUT_KILL => libc::kill(-(first.id() as i32), libc::SIGKILL),
            signal => libc::kill(first.id() as i32, signal),
        }
    };
    let status = first.wait().unwrap();
    let made = common::lab::changes_in(&audit);
    let reached = reached(name, &audit);
    let finished = reached == Reached::End;
    let said = std::fs::read_to_string(&first_stderr).unwrap_or_default();
    match (point.signal, status.code()) {
        // It may have ended on its own, every change made, just before the signal.
        (_, Some(0)) => assert!(
            finished,
            "{name} at {point:?} ended OK after {made} changes"
        ),
        (libc::SIGINT, code) => {
            assert_eq!(code, Some(3), "{name} at {point:?}: {said}");
            assert!(
                said.contains("error[harun::interrupted]"),
                "{name} at {point:?}: {said}"
            );
        }
        _ => assert_eq!(status.signal(), Some(libc::SIGKILL), "{name} at {point:?}"),
    }
    let second = lab.harun(&["--yes", script(name).to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&second.stdout).into_owned();
    assert_eq!(
        second.status.code(),
        Some(0),
        "{name} killed at {point:?}, then run again:\n{stdout}\n{}",
        String::from_utf8_lossy(&second.stderr)
    );
    let nothing_left =
        stdout.contains("nothing to change") || stdout.contains("nothing to recover");
    if reached != Reached::LastUnderWay {
        assert_eq!(
            nothing_left, finished,
            "{name} killed at {point:?} after {made} changes ({reached:?}), then run again:\n{stdout}"
        );
    }
    stdout
}

/// Three voters under one leader, and every KV entry of the first state.
fn check_consul_whole(lab: &Lab, name: &str, point: KillPoint) {
    eventually("three consul voters", Duration::from_secs(20), || {
        let config = get(&lab.consul("controller1", "/v1/operator/raft/configuration"));
        let voters = config.json()["Servers"]
            .as_array()?
            .iter()
            .filter(|s| s["Voter"] == true)
            .count();
        (voters == 3).then_some(())
    });
    for (key, value) in KV {
        let r = get(&lab.consul("controller2", &format!("/v1/kv/{key}?raw")));
        assert_eq!(r.body, value, "{name} killed at {point:?}: {key}");
    }
}

/// Every config file parses, and no temporary file of a write is left beside it.
fn check_configs_whole(lab: &Lab, name: &str, point: KillPoint) {
    for host in ["controller1", "controller2", "controller3"] {
        for service in ["consul", "nomad", "vault"] {
            let path = lab.dir.join(host).join(format!("{service}.hcl"));
            let text = std::fs::read_to_string(&path).unwrap();
            let parsed = lab.harun(&[
                "-e",
                &format!(
                    "hcl::parse(local::read({:?})); 1",
                    path.display().to_string()
                ),
            ]);
            assert!(
                parsed.status.success() && text.ends_with('\n'),
                "{name} killed at {point:?}: {} is not whole:\n{text}",
                path.display()
            );
        }
        let leftovers: Vec<String> = std::fs::read_dir(lab.dir.join(host))
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            // A write's temporary directory or file (`mktemp -d "$dir/.harun.PID.XXXXXX"` on a
            // host, private_fs::write_atomic's `.harun.` name locally).
            .filter(|n| n.starts_with(".harun."))
            .collect();
        assert!(leftovers.is_empty(), "{name} at {point:?}: {leftovers:?}");
    }
}

fn check_vault_whole(lab: &Lab, stdout: &str, point: KillPoint) {
    // Whether "nothing to change" was right is kill_and_finish_on's check.
    assert!(
        stdout.contains("3 raft voters, 1 active, 2 standby")
            || stdout.contains("nothing to change: 3 vault voters"),
        "killed at {point:?}: {stdout}"
    );
    lab.assert_secrets(&format!("killed at {point:?}"));
}

#[test]
fn consul_ha_killed_at_each_step_is_finished_by_the_next_run() {
    for point in CONSUL_HA_POINTS {
        consul_ha_killed_at(*point);
    }
}

#[test]
fn consul_ha_killed_by_timeout_at_each_step_is_finished_by_the_next_run() {
    for point in by_timeout(CONSUL_HA_POINTS) {
        consul_ha_killed_at(point);
    }
}

const CONSUL_HA_POINTS: &[KillPoint] = &[
    at(1, libc::SIGKILL),
    at(3, libc::SIGKILL),
    at(4, libc::SIGINT),
    at(5, libc::SIGKILL),
    inside(6, 300, libc::SIGKILL),
    at(7, libc::SIGKILL),
    inside(7, 200, libc::SIGINT),
    inside(8, 300, libc::SIGKILL),
];

fn consul_ha_killed_at(point: KillPoint) {
    // consul-ha's changes on a fresh lab: the snapshot directory (1) and the snapshot (2),
    // three consul.hcl writes (3-5), two starts (6-7), one restart (8), then waits.
    kill_and_finish("consul-ha.rhai", point);
}

#[test]
fn vault_raft_killed_at_each_step_is_finished_by_the_next_run() {
    for point in VAULT_RAFT_POINTS {
        vault_raft_killed_at(*point);
    }
}

#[test]
fn vault_raft_killed_by_timeout_at_each_step_is_finished_by_the_next_run() {
    for point in by_timeout(VAULT_RAFT_POINTS) {
        vault_raft_killed_at(point);
    }
}

const VAULT_RAFT_POINTS: &[KillPoint] = &[
    inside(7, 300, libc::SIGKILL),
    at(9, libc::SIGKILL),
    inside(12, 30, libc::SIGINT),
    at(13, libc::SIGKILL),
    at(16, libc::SIGKILL),
    at(19, libc::SIGINT),
    inside(22, 300, libc::SIGKILL),
    at(24, libc::SIGKILL),
    inside(26, 500, libc::SIGKILL),
];

fn vault_raft_killed_at(point: KillPoint) {
    // Its 27 changes: the Consul step (1-8, as consul-ha's), Vault stopped (9), the
    // migration (10-16: the raft directory, the backup, the migration's config, migrate,
    // its removal, its mark, the owner), the configs (17-21), then each node started and
    // unsealed (22-27).
    let (lab, stdout) = kill_and_finish("vault-raft.rhai", point);
    check_vault_whole(&lab, &stdout, point);
}

#[test]
fn nomad_ha_killed_at_each_step_is_finished_by_the_next_run() {
    for point in NOMAD_HA_POINTS {
        nomad_ha_killed_at(*point);
    }
}

#[test]
fn nomad_ha_killed_by_timeout_at_each_step_is_finished_by_the_next_run() {
    for point in by_timeout(NOMAD_HA_POINTS) {
        nomad_ha_killed_at(point);
    }
}

const NOMAD_HA_POINTS: &[KillPoint] = &[
    at(10, libc::SIGKILL),
    at(12, libc::SIGINT),
    at(13, libc::SIGKILL),
    inside(14, 100, libc::SIGKILL),
    inside(14, 1500, libc::SIGKILL),
];

fn nomad_ha_killed_at(point: KillPoint) {
    // Its changes: the Consul step (1-8, as consul-ha's), Nomad's snapshot (9), the three
    // nomad.hcl (10-12), two servers started (13-14), those not yet members joined to the
    // first, the first restarted.
    let (lab, _) = kill_and_finish("nomad-ha.rhai", point);
    let url = |path: &str| format!("http://{}:4646{path}", lab.address("controller1"));
    eventually("three nomad voters", Duration::from_secs(20), || {
        let config = get(&url("/v1/operator/raft/configuration")).json();
        let voters = config["Servers"]
            .as_array()?
            .iter()
            .filter(|s| s["Voter"] == true)
            .count();
        (voters == 3).then_some(())
    });
    let jobs = get(&url("/v1/jobs")).json();
    assert_eq!(
        jobs.as_array().map(Vec::len),
        Some(3),
        "killed at {point:?}: {jobs}"
    );
}

/// How a recover script is set up and checked: the script that grows the cluster, the
/// service whose quorum is lost, where the record lives (under the lab), the data of a
/// left-out node that must be set aside (under the host), and the summary it ends with.
struct Recovery {
    grow: &'static str,
    service: &'static str,
    recover: &'static str,
    record: &'static str,
    left_data: &'static str,
    summary: &'static str,
}

/// A lab grown to three, two servers lost and the survivor restarted without quorum;
/// the recover script killed at `point` and run again; then the record gone, the others'
/// data set aside, and the grow script bringing them back. Returns the lab and the last
/// grow's stdout.
fn recover_killed(r: &Recovery, point: KillPoint) -> (Lab, String) {
    let lab = Lab::up();
    let grown = lab.harun(&[script(r.grow).to_str().unwrap()]);
    assert!(grown.status.success());
    for host in ["controller2", "controller3"] {
        assert!(lab.ctl(host, r.service, "stop").status.success());
    }
    assert!(lab
        .ctl("controller1", r.service, "restart")
        .status
        .success());
    let recovered = kill_and_finish_on(&lab, r.recover, point);
    // Killed late, the first run may have finished before the signal landed (then
    // kill_and_finish_on saw every change in its audit log).
    assert!(
        recovered.contains(r.summary) || recovered.contains("nothing to recover"),
        "killed at {point:?}: {recovered}"
    );
    assert!(
        !lab.dir.join(r.record).exists(),
        "killed at {point:?}: the record is left"
    );
    for host in ["controller2", "controller3"] {
        assert!(
            !lab.dir.join(host).join(r.left_data).exists(),
            "killed at {point:?}: {host}'s old raft data was not set aside"
        );
    }
    let again = lab.harun(&[script(r.grow).to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&again.stdout).into_owned();
    assert!(again.status.success(), "killed at {point:?}: {stdout}");
    (lab, stdout)
}

/// consul-recover.rhai, killed while it makes a lone survivor the whole cluster, is
/// finished by the next run (its record of the recovery says what was decided), and
/// consul-ha.rhai then grows the cluster back with every KV entry.
#[test]
fn consul_recover_killed_at_each_step_is_finished_by_the_next_run() {
    for point in CONSUL_RECOVER_POINTS {
        consul_recover_killed_at(*point);
    }
}

#[test]
fn consul_recover_killed_by_timeout_at_each_step_is_finished_by_the_next_run() {
    for point in by_timeout(CONSUL_RECOVER_POINTS) {
        consul_recover_killed_at(point);
    }
}

const CONSUL_RECOVER_POINTS: &[KillPoint] = &[
    at(1, libc::SIGKILL),
    at(3, libc::SIGINT),
    at(4, libc::SIGKILL),
    inside(5, 200, libc::SIGKILL),
    at(6, libc::SIGKILL),
];

fn consul_recover_killed_at(point: KillPoint) {
    // Its changes: the record (1), peers.json (2-3), the survivor stopped (4) and started
    // (5), the two others' data set aside (6-7), the record removed (8).
    let recovery = Recovery {
        grow: "consul-ha.rhai",
        service: "consul",
        recover: "consul-recover.rhai",
        record: "controller1/consul/harun-recovery.json",
        left_data: "consul",
        summary: "consul recovered",
    };
    let (lab, _) = recover_killed(&recovery, point);
    check_consul_whole(&lab, "consul-recover.rhai", point);
}

/// nomad-recover.rhai, killed while it makes a lone survivor the whole cluster, is
/// finished by the next run, and nomad-ha.rhai then grows the cluster back with every job.
#[test]
fn nomad_recover_killed_at_each_step_is_finished_by_the_next_run() {
    for point in NOMAD_RECOVER_POINTS {
        nomad_recover_killed_at(*point);
    }
}

#[test]
fn nomad_recover_killed_by_timeout_at_each_step_is_finished_by_the_next_run() {
    for point in by_timeout(NOMAD_RECOVER_POINTS) {
        nomad_recover_killed_at(point);
    }
}

const NOMAD_RECOVER_POINTS: &[KillPoint] = &[
    at(1, libc::SIGKILL),
    at(3, libc::SIGINT),
    inside(5, 200, libc::SIGKILL),
    at(6, libc::SIGKILL),
];

fn nomad_recover_killed_at(point: KillPoint) {
    // Its changes, as consul-recover's: the record (1), peers.json (2-3), the survivor
    // stopped (4) and started (5), the two others' server state set aside (6-7), the
    // record removed (8).
    let recovery = Recovery {
        grow: "nomad-ha.rhai",
        service: "nomad",
        recover: "nomad-recover.rhai",
        record: "controller1/nomad/harun-recovery.json",
        left_data: "nomad/server",
        summary: "nomad recovered",
    };
    let (lab, stdout) = recover_killed(&recovery, point);
    assert!(
        stdout.contains("3 servers") || stdout.contains("nothing to change: 3 nomad servers"),
        "killed at {point:?}: {stdout}"
    );
    let jobs = get(&format!(
        "http://{}:4646/v1/jobs",
        lab.address("controller2")
    ))
    .json();
    assert_eq!(
        jobs.as_array().map(Vec::len),
        Some(3),
        "killed at {point:?}: {jobs}"
    );
}

/// vault-recover.rhai, killed while it makes a lone survivor the whole raft cluster, is
/// finished by the next run (its record of the recovery says what was decided), and
/// vault-raft.rhai then grows the cluster back with every secret.
#[test]
fn vault_recover_killed_at_each_step_is_finished_by_the_next_run() {
    for point in VAULT_RECOVER_POINTS {
        vault_recover_killed_at(*point);
    }
}

#[test]
fn vault_recover_killed_by_timeout_at_each_step_is_finished_by_the_next_run() {
    for point in by_timeout(VAULT_RECOVER_POINTS) {
        vault_recover_killed_at(point);
    }
}

const VAULT_RECOVER_POINTS: &[KillPoint] = &[
    at(2, libc::SIGKILL),
    at(3, libc::SIGINT),
    at(6, libc::SIGKILL),
    inside(7, 100, libc::SIGKILL),
    at(8, libc::SIGKILL),
];

fn vault_recover_killed_at(point: KillPoint) {
    // Its changes: the survivor unsealed (1), the record (2), the survivor stopped (3),
    // raft/ made (4), peers.json (5), started (6), unsealed (7), each other node's raft
    // data set aside and made anew (8-11), the record removed (12).
    let recovery = Recovery {
        grow: "vault-raft.rhai",
        service: "vault",
        recover: "vault-recover.rhai",
        record: "controller1/vault/raft/harun-recovery.json",
        left_data: "vault/raft/vault.db",
        summary: "vault recovered: 1 raft voter(s) (controller1), 1 active",
    };
    let (lab, stdout) = recover_killed(&recovery, point);
    check_vault_whole(&lab, &stdout, point);
}

/// vault-raft.rhai holds the changing scripts' lock from its Consul step to its end: a
/// consul-ha.rhai started while it migrates Vault is refused and names it, and the lock is
/// free once it ends.
#[test]
fn vault_raft_holds_the_lock_through_its_vault_steps() {
    let lab = Lab::up();
    let audit = lab.test.path("audit.log");
    let mut first = lab.spawn_script(
        "vault-raft.rhai",
        &audit,
        &lab.test.path("first.stderr"),
        &[],
    );
    // Change 10: the Vault step's migration has begun (its raft directory); the Consul
    // step (1-8) is done.
    wait_for_changes(&audit, 10, &mut first, "vault-raft.rhai");
    let second = lab.harun(&[script("consul-ha.rhai").to_str().unwrap()]);
    let refused = String::from_utf8_lossy(&second.stderr);
    assert_eq!(second.status.code(), Some(3), "{refused}");
    assert!(
        refused.contains("the consul lock harun/consul-ha is held by a run of")
            && refused.contains(&format!("vault-raft.rhai (pid {}", first.id())),
        "{refused}"
    );
    assert!(first.wait().unwrap().success());
    let entry = get(&lab.consul("controller1", "/v1/kv/harun/consul-ha"));
    assert!(
        entry.status == 404 || !entry.json()[0]["Session"].is_string(),
        "the lock is still held after the run: {}",
        entry.body
    );
}
