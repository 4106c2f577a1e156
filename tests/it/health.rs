//! scripts/health.rhai, the monitoring check: its exit status and summary line on the lab
//! in the story's first state, after the HA scripts, with a consul.hcl left at
//! bootstrap_expect = 1, while a node drains, with every Vault node sealed, with Consul
//! short of a majority, and with nothing answering.

use crate::common;

use common::lab::{script, Lab};

fn health(lab: &Lab) -> (i32, String) {
    let out = lab.harun(&[script("health.rhai").to_str().unwrap()]);
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .next()
            .unwrap_or("")
            .to_string(),
    )
}

#[test]
fn health_follows_the_cluster_from_the_first_state_to_ha_and_back() {
    let lab = Lab::up();
    let (status, line) = health(&lab);
    assert_eq!(status, 1, "{line}");
    assert!(
        line.starts_with("WARNING - consul: no answer from controller2, controller3; consul: 1 of 3 raft voters;"),
        "{line}"
    );
    assert!(line.contains("vault: file storage, no HA"), "{line}");

    for name in ["vault-raft.rhai", "nomad-ha.rhai"] {
        let out = lab.harun(&[script(name).to_str().unwrap()]);
        assert!(
            out.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
    assert_eq!(
        health(&lab),
        (
            0,
            "OK - consul: leader, 3 voters; nomad: leader, 3 voters, 3 nodes ready; vault: 1 active, 2 standby, raft".to_string()
        )
    );

    // A consul.hcl left at bootstrap_expect = 1 in a three-server cluster is a WARNING.
    lab.set_config("controller3", "consul", |t| {
        t.replace("bootstrap_expect = 3", "bootstrap_expect = 1")
    });
    let (status, line) = health(&lab);
    assert_eq!(status, 1, "{line}");
    assert!(
        line.starts_with("WARNING - consul: bootstrap_expect = 1 on controller3 in a cluster of 3 voters: with an empty data_dir it would bootstrap a cluster of its own"),
        "{line}"
    );
    lab.set_config("controller3", "consul", |t| {
        t.replace("bootstrap_expect = 1", "bootstrap_expect = 3")
    });

    // Maintenance: a drained node is a WARNING. A drain with nothing to move ends at once,
    // as Nomad's drainer ends it, and leaves the node ineligible until it is marked back.
    let drain = lab.harun(&[
        "-e",
        r#"let c1 = host("controller1"); let id = nomad::node_ids(c1)["controller2"]; nomad::drain(c1, id, 0); nomad::wait_drained(c1, id, 10.0);"#,
    ]);
    assert!(
        drain.status.success(),
        "{}",
        String::from_utf8_lossy(&drain.stderr)
    );
    let (status, line) = health(&lab);
    assert_eq!(status, 1, "{line}");
    assert!(line.contains("nomad: ineligible controller2"), "{line}");

    // Every Vault node restarted, so sealed: nothing serves secrets.
    for host in ["controller1", "controller2", "controller3"] {
        assert!(lab.ctl(host, "vault", "restart").status.success());
    }
    let (status, line) = health(&lab);
    assert_eq!(status, 2, "{line}");
    assert!(
        line.starts_with("CRITICAL - ") && line.contains("vault: no active node (controller1 sealed, controller2 sealed, controller3 sealed)"),
        "{line}"
    );

    // Consul without a majority: no leader, and the line says how many a majority needs.
    for host in ["controller2", "controller3"] {
        assert!(lab.ctl(host, "consul", "stop").status.success());
    }
    assert!(lab.ctl("controller1", "consul", "restart").status.success());
    let (status, line) = health(&lab);
    assert_eq!(status, 2, "{line}");
    assert!(
        line.contains("consul: no leader (asking controller1); 1 of 3 servers alive, a majority needs 2: start the others"),
        "{line}"
    );

    // Nothing answers: the check cannot see the cluster, which is UNKNOWN, not CRITICAL.
    let down = lab.lab("down", &[]);
    assert!(down.status.success());
    assert_eq!(
        health(&lab),
        (
            3,
            "UNKNOWN - no controller answers for consul, nomad, vault".to_string()
        )
    );
}
