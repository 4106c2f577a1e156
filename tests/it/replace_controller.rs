//! A controller's machine dies for good and a fresh one takes its place
//! (`harun lab replace`): scripts/replace-controller.rhai takes the dead server out of
//! every raft at once, and brings the new machine in once it answers, with every KV
//! entry, job and secret kept.

use std::time::Duration;

use crate::common::http::{eventually, get, put};
use crate::common::lab::{script, wait_for_changes, Lab};

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The raft servers of each cluster as controller `via` sees them, by name.
fn raft_members(lab: &Lab, via: &str) -> [Vec<String>; 3] {
    let names = |v: serde_json::Value, list: &str, field: &str| -> Vec<String> {
        let mut out: Vec<String> = v[list]
            .as_array()
            .unwrap_or(&Vec::new())
            .iter()
            .map(|s| {
                let n = s[field].as_str().unwrap_or_default();
                n.split('.').next().unwrap().to_string()
            })
            .collect();
        out.sort();
        out
    };
    let consul = get(&lab.consul(via, "/v1/operator/raft/configuration")).json();
    let nomad = get(&format!(
        "http://{}:4646/v1/operator/raft/configuration",
        lab.address(via)
    ))
    .json();
    let vault = lab
        .vault_call("GET", via, "/v1/sys/storage/raft/configuration", "")
        .json();
    [
        names(consul, "Servers", "Node"),
        names(nomad, "Servers", "Node"),
        names(vault["data"]["config"].clone(), "servers", "node_id"),
    ]
}

#[test]
fn a_dead_controller_is_taken_out_of_every_raft_and_its_replacement_brought_in() {
    let lab = Lab::at_ha(&[]);
    let kv = lab.consul("controller1", "/v1/kv/homelab/before-the-card-died");
    assert_eq!(put(&kv, "kept").body.trim(), "true");
    let replace = |host: &str| {
        lab.harun(&[
            "--yes",
            "--set",
            &format!("host={host}"),
            script("replace-controller.rhai").to_str().unwrap(),
        ])
    };

    // controller2's card dies; the new machine is not installed yet (no consul.hcl).
    let out = lab.lab("replace", &["controller2"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let config = lab.dir.join("controller2/consul.hcl");
    let kept_aside = lab.dir.join("controller2-consul.hcl");
    std::fs::rename(&config, &kept_aside).unwrap();
    let removed = replace("controller2");
    let stdout = text(&removed.stdout);
    assert_eq!(
        removed.status.code(),
        Some(1),
        "{stdout}{}",
        text(&removed.stderr)
    );
    assert!(
        stdout.starts_with("WARNING - controller2: removed from consul (raft peer removed, member pruned), nomad (raft peer removed, member pruned), vault (raft peer removed); each cluster now has 2 voters"),
        "{stdout}"
    );
    let two = vec!["controller1".to_string(), "controller3".to_string()];
    assert_eq!(
        raft_members(&lab, "controller1"),
        [two.clone(), two.clone(), two]
    );
    let members = get(&lab.consul("controller1", "/v1/agent/members")).json();
    assert!(
        !members.to_string().contains("\"controller2\""),
        "pruned from consul's members: {members}"
    );

    // The new machine is up: brought in, nothing lost.
    std::fs::rename(&kept_aside, &config).unwrap();
    let back = replace("controller2");
    let stdout = text(&back.stdout);
    assert_eq!(
        back.status.code(),
        Some(0),
        "{stdout}{}",
        text(&back.stderr)
    );
    assert!(
        stdout.contains("back in consul, nomad and vault with 3 voters each"),
        "{stdout}"
    );
    let three: Vec<String> = ["controller1", "controller2", "controller3"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    assert_eq!(
        raft_members(&lab, "controller2"),
        [three.clone(), three.clone(), three.clone()]
    );
    lab.assert_secrets("after the replacement");
    assert_eq!(get(&format!("{kv}?raw")).body, "kept");
    let nomad =
        |path: &str| get(&format!("http://{}:4646{path}", lab.address("controller1"))).json();
    assert_eq!(nomad("/v1/jobs").as_array().map(Vec::len), Some(3));
    // One client node per controller: the dead machine's node is purged, not left down.
    let mut nodes: Vec<String> = nomad("/v1/nodes")
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["Name"].as_str().unwrap().to_string())
        .collect();
    nodes.sort();
    assert_eq!(nodes, three);
    let health = || lab.harun(&[script("health.rhai").to_str().unwrap()]);
    eventually(
        "health OK after the replacement",
        Duration::from_secs(30),
        || health().status.success().then_some(()),
    );
    let again = replace("controller2");
    assert_eq!(again.status.code(), Some(0), "{}", text(&again.stdout));
    assert!(
        text(&again.stdout).starts_with("OK - nothing to change: 3 nomad servers"),
        "{}",
        text(&again.stdout)
    );

    // The first controller, which the HA steps take as the one holding the data, dies
    // too: a survivor leads the way back.
    let out = lab.lab("replace", &["controller1"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let first = replace("controller1");
    assert_eq!(
        first.status.code(),
        Some(0),
        "{}{}",
        text(&first.stdout),
        text(&first.stderr)
    );
    assert_eq!(
        raft_members(&lab, "controller3"),
        [three.clone(), three.clone(), three.clone()]
    );
    lab.assert_secrets("after the first controller's replacement");
    // Every join list stays in the topology's order: the HA scripts find nothing to redo.
    let ha = lab.harun(&[script("ha.rhai").to_str().unwrap()]);
    assert!(
        text(&ha.stdout).starts_with("OK - nothing to change"),
        "{}",
        text(&ha.stdout)
    );

    // controller3's new machine comes at another address (the topology says so): every
    // cluster takes it there, and the catalog knows its node at the new address only.
    let old_address = lab.address("controller3");
    let out = lab.lab("replace", &["controller3", "--new-address"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let new_address = lab.address("controller3");
    assert_ne!(new_address, old_address);
    let moved = replace("controller3");
    assert_eq!(
        moved.status.code(),
        Some(0),
        "{}{}",
        text(&moved.stdout),
        text(&moved.stderr)
    );
    assert_eq!(
        raft_members(&lab, "controller1"),
        [three.clone(), three.clone(), three.clone()]
    );
    let raft = get(&lab.consul("controller1", "/v1/operator/raft/configuration")).json();
    assert!(
        raft.to_string()
            .contains(&format!("\"{new_address}:8300\""))
            && !raft
                .to_string()
                .contains(&format!("\"{old_address}:8300\"")),
        "{raft}"
    );
    lab.assert_secrets("after controller3 moved");
    eventually(
        "health OK after controller3 moved",
        Duration::from_secs(30),
        || health().status.success().then_some(()),
    );
    eventually(
        "health OK after the first controller's replacement",
        Duration::from_secs(30),
        || health().status.success().then_some(()),
    );
}

/// A replacement killed at any point (SIGKILL, or Ctrl-C's SIGINT) is finished by the next
/// run: in the removal (after Consul's, after all three) and while the new machine is
/// brought in.
#[test]
fn a_replacement_killed_at_each_step_is_finished_by_the_next_run() {
    // Its changes: consul remove-peer (1) and force-leave (2), nomad's (3, 4), vault's
    // remove-peer (5); then the HA steps: consul's snapshot and config (6, 7), start...
    for (changes, delay_ms, signal) in [
        (2, 0, libc::SIGKILL),
        (5, 0, libc::SIGINT),
        (8, 300, libc::SIGKILL),
    ] {
        let lab = Lab::at_ha(&[]);
        assert!(lab.lab("replace", &["controller3"]).status.success());
        let audit = lab.test.path("audit.log");
        let stderr = lab.test.path("first.stderr");
        let mut first = lab.spawn_script(
            "replace-controller.rhai",
            &audit,
            &stderr,
            &["--yes", "--set", "host=controller3"],
        );
        wait_for_changes(&audit, changes, &mut first, "replace-controller.rhai");
        std::thread::sleep(Duration::from_millis(delay_ms));
        // SAFETY: signalling the child we started.
        unsafe { libc::kill(first.id() as i32, signal) };
        let _ = first.wait().unwrap();
        let again = lab.harun(&[
            "--yes",
            "--set",
            "host=controller3",
            script("replace-controller.rhai").to_str().unwrap(),
        ]);
        let stdout = text(&again.stdout);
        assert_eq!(
            again.status.code(),
            Some(0),
            "killed after {changes} changes, then run again:\n{stdout}{}",
            text(&again.stderr)
        );
        let three: Vec<String> = ["controller1", "controller2", "controller3"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(
            raft_members(&lab, "controller1"),
            [three.clone(), three.clone(), three],
            "killed after {changes} changes"
        );
        lab.assert_secrets(&format!("killed after {changes} changes"));
    }
}
