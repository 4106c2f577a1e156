//! scripts/vault-raft.rhai on the lab (its Consul step first): file storage to a
//! three-voter raft cluster with every secret, registered at each node's own agent; a
//! failure half way (a wrong unseal key after the migration) loses nothing, and a second
//! run finishes the job; a finished cluster is left as it is.

mod common;

use std::path::{Path, PathBuf};

use common::http::get;
use common::lab::Lab;
use common::Test;

fn script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("scripts")
        .join(name)
}

const SECRETS: [(&str, &str, &str); 3] = [
    ("homelab/nas", "password", "correct-horse-battery"),
    ("homelab/wifi", "psk", "not-a-real-psk"),
    ("homelab/grafana", "admin_password", "grafana-lab-only"),
];

#[test]
fn vault_raft_moves_the_lab_to_three_raft_voters_and_resumes_after_a_failure() {
    let lab = Lab::up();
    let topology = lab.dir.join("harun.hcl");
    let mut t = Test::new();
    let mut run =
        |args: &[&str]| t.run_with(&[&["--topology", topology.to_str().unwrap()], args].concat());
    // A dry run changes nothing.
    let plan = run(&["--dry-run", script("vault-raft.rhai").to_str().unwrap()]);
    assert_eq!(plan.status, 0, "{}\n{}", plan.stdout, plan.stderr);
    assert!(
        plan.stdout.contains("operator migrate -config"),
        "{}",
        plan.stdout
    );
    assert!(!lab.dir.join("controller1/vault/raft").exists());

    // A wrong key: the migration happens, then the unseal fails and the run stops.
    let keys_file = lab.dir.join("vault-unseal-keys");
    let good = std::fs::read_to_string(&keys_file).unwrap();
    let forged = format!(
        "{}07\n{}01\n{}02\n",
        "ab".repeat(32),
        "cd".repeat(32),
        "ef".repeat(32)
    );
    std::fs::write(&keys_file, &forged).unwrap();
    let failed = run(&[script("vault-raft.rhai").to_str().unwrap()]);
    assert_eq!(failed.status, 3, "{}\n{}", failed.stdout, failed.stderr);
    assert!(
        failed.stderr.contains("Unseal failed, invalid key"),
        "{}",
        failed.stderr
    );
    assert!(lab.dir.join("controller1/vault/raft/vault.db").exists());
    assert!(lab.dir.join("controller1/vault/data.harun-backup").exists());

    // The right keys: a second run continues from there.
    std::fs::write(&keys_file, &good).unwrap();
    let audit = lab.dir.join("audit.jsonl");
    let done = run(&[
        "-vvv",
        "--audit-log",
        audit.to_str().unwrap(),
        "--set",
        "timeout=60",
        script("vault-raft.rhai").to_str().unwrap(),
    ]);
    let audit_text = std::fs::read_to_string(&audit).unwrap();
    for secret in lab.unseal_keys().iter().chain([lab.root_token()].iter()) {
        for (what, text) in [
            ("stdout", &done.stdout),
            ("stderr at -vvv", &done.stderr),
            ("audit log", &audit_text),
            ("the failed run's output", &failed.stderr),
        ] {
            assert!(!text.contains(secret.as_str()), "a key or token in {what}");
        }
    }
    assert_eq!(done.status, 0, "{}\n{}", done.stdout, done.stderr);
    assert!(
        done.stdout
            .starts_with("OK - nothing to change: 3 consul servers")
            && done.stdout.contains(
                "vault: 3 raft voters, 1 active, 2 standby, 3 secrets, registered at 3 agents"
            ),
        "{}",
        done.stdout
    );

    // What Vault and Consul say.
    let config = lab
        .vault_call(
            "GET",
            "controller2",
            "/v1/sys/storage/raft/configuration",
            "",
        )
        .json();
    let voters = config["data"]["config"]["servers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["voter"] == true)
        .count();
    assert_eq!(voters, 3);
    for host in ["controller1", "controller2", "controller3"] {
        for (path, field, value) in SECRETS {
            let r = lab.vault_call("GET", host, &format!("/v1/secret/data/{path}"), "");
            assert_eq!(r.json()["data"]["data"][field], value, "{host} {path}");
        }
        let local = get(&lab.consul(host, "/v1/agent/services")).json();
        let own = local
            .as_object()
            .unwrap()
            .values()
            .filter(|s| s["Service"] == "vault")
            .count();
        assert_eq!(
            own, 1,
            "{host}'s agent holds its vault registration: {local}"
        );
    }

    // A snapshot of the raft cluster, through a standby.
    let snap = lab.dir.join("vault.snap");
    let saved = run(&[
        "-e",
        &format!(
            "print(vault::snapshot_save(host(\"controller2\"), \"{}\") > 0)",
            snap.display()
        ),
    ]);
    assert_eq!(saved.stdout, "true\n", "{}", saved.stderr);
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&snap).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);

    // Finished: a third run leaves it as it is.
    let again = run(&[script("vault-raft.rhai").to_str().unwrap()]);
    assert_eq!(again.status, 0, "{}\n{}", again.stdout, again.stderr);
    assert!(
        again
            .stdout
            .starts_with("OK - nothing to change: 3 consul servers")
            && again
                .stdout
                .contains("nothing to change: 3 vault voters, 1 active, 3 secrets"),
        "{}",
        again.stdout
    );
}

#[test]
fn vault_raft_runs_on_a_fresh_lab() {
    let out = Test::new()
        .args(["--lab", script("vault-raft.rhai").to_str().unwrap()])
        .run();
    assert_eq!(out.status, 0, "{}\n{}", out.stdout, out.stderr);
    assert!(
        out.stdout.starts_with("OK - consul: 3 servers, 3 voters"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains(
            "vault: 3 raft voters, 1 active, 2 standby, 3 secrets, registered at 3 agents"
        ),
        "{}",
        out.stdout
    );
}

#[test]
fn a_failing_migration_and_a_node_that_never_comes_up_lose_nothing() {
    let lab = Lab::up();
    let topology_path = lab.dir.join("harun.hcl");
    let good_topology = std::fs::read_to_string(&topology_path).unwrap();
    let mut t = Test::new();
    let mut run = |args: &[&str]| {
        t.run_with(&[&["--topology", topology_path.to_str().unwrap()], args].concat())
    };

    // 1. The vault CLI fails: the run stops after stopping Vault, with the file storage
    // untouched and backed up.
    let broken_cli = good_topology.replace(" lab vault\"", " lab vault-missing\"");
    assert_ne!(broken_cli, good_topology);
    std::fs::write(&topology_path, &broken_cli).unwrap();
    let failed = run(&[script("vault-raft.rhai").to_str().unwrap()]);
    assert_eq!(failed.status, 3, "{}\n{}", failed.stdout, failed.stderr);
    assert!(
        failed
            .stderr
            .contains("vault operator migrate on controller1 failed"),
        "{}",
        failed.stderr
    );
    assert!(lab.dir.join("controller1/vault/data/core/_master").exists());
    assert!(lab
        .dir
        .join("controller1/vault/data.harun-backup/core/_master")
        .exists());

    // 2. controller3 never comes up (its raft path is a file, so Vault refuses to start).
    std::fs::write(&topology_path, &good_topology).unwrap();
    std::fs::write(lab.dir.join("controller3/vault/raft"), "not a directory").unwrap();
    let failed = run(&[
        "--set",
        "timeout=20",
        script("vault-raft.rhai").to_str().unwrap(),
    ]);
    assert_eq!(failed.status, 3, "{}\n{}", failed.stdout, failed.stderr);
    assert!(failed.stderr.contains("controller3"), "{}", failed.stderr);
    for (path, field, value) in SECRETS {
        let r = lab.vault_call("GET", "controller1", &format!("/v1/secret/data/{path}"), "");
        assert_eq!(
            r.json()["data"]["data"][field],
            value,
            "{path} after the failure"
        );
    }

    // 3. Fixed: a second run finishes the job.
    std::fs::remove_file(lab.dir.join("controller3/vault/raft")).unwrap();
    std::fs::create_dir(lab.dir.join("controller3/vault/raft")).unwrap();
    let done = run(&[script("vault-raft.rhai").to_str().unwrap()]);
    assert_eq!(done.status, 0, "{}\n{}", done.stdout, done.stderr);
    assert!(
        done.stdout.contains(
            "vault: 3 raft voters, 1 active, 2 standby, 3 secrets, registered at 3 agents"
        ),
        "{}",
        done.stdout
    );
    for host in ["controller1", "controller2", "controller3"] {
        for (path, field, value) in SECRETS {
            let r = lab.vault_call("GET", host, &format!("/v1/secret/data/{path}"), "");
            assert_eq!(r.json()["data"]["data"][field], value, "{host} {path}");
        }
    }
}

/// Two of three raft nodes lost for good: the survivor cannot elect a leader, whatever
/// its config says. vault-recover.rhai makes it the whole cluster with peers.json,
/// keeping every secret, and vault-raft.rhai then brings the other two back fresh.
#[test]
fn vault_recover_makes_a_lone_survivor_the_cluster_and_vault_raft_grows_it_back() {
    let lab = Lab::up();
    let topology = lab.dir.join("harun.hcl");
    let mut t = Test::new();
    let mut run =
        |args: &[&str]| t.run_with(&[&["--topology", topology.to_str().unwrap()], args].concat());
    let grown = run(&[script("vault-raft.rhai").to_str().unwrap()]);
    assert_eq!(grown.status, 0, "{}\n{}", grown.stdout, grown.stderr);

    // Nothing to recover while a node is active.
    let healthy = run(&["--yes", script("vault-recover.rhai").to_str().unwrap()]);
    assert_eq!(healthy.status, 0, "{}\n{}", healthy.stdout, healthy.stderr);
    assert!(
        healthy.stdout.starts_with("OK - vault has an active node"),
        "{}",
        healthy.stdout
    );

    // controller2 and controller3 are gone; controller1 restarts, sealed, without quorum.
    for host in ["controller2", "controller3"] {
        assert!(lab.ctl(host, "vault", "stop").status.success());
    }
    assert!(lab.ctl("controller1", "vault", "restart").status.success());
    let health = run(&[script("health.rhai").to_str().unwrap()]);
    assert_eq!(health.status, 2, "{}\n{}", health.stdout, health.stderr);
    assert!(
        health.stdout.contains("vault: no active node (controller1 sealed); 1 of 3 nodes answer, raft needs 2: start the others, or if they are gone for good, recover with scripts/vault-recover.rhai"),
        "{}",
        health.stdout
    );
    let refused = run(&[
        "--set",
        "timeout=5",
        script("vault-recover.rhai").to_str().unwrap(),
    ]);
    assert_eq!(refused.status, 3, "{}\n{}", refused.stdout, refused.stderr);
    assert!(
        refused.stderr.contains(
            "refused without confirmation: No active node and only controller1 of 3 Vault nodes answer."
        ),
        "{}",
        refused.stderr
    );
    assert!(lab.dir.join("controller2/vault/raft/vault.db").exists());
    // A dry run plans the recovery and changes nothing.
    let plan = run(&[
        "--dry-run",
        "--yes",
        script("vault-recover.rhai").to_str().unwrap(),
    ]);
    assert_eq!(plan.status, 0, "{}\n{}", plan.stdout, plan.stderr);
    assert!(
        plan.stdout
            .starts_with("OK - plan: recover vault with controller1 as the whole raft cluster"),
        "{}",
        plan.stdout
    );
    assert!(plan.stdout.contains("raft/peers.json"), "{}", plan.stdout);
    assert!(lab.dir.join("controller2/vault/raft/vault.db").exists());
    assert!(!lab
        .dir
        .join("controller1/vault/raft/raft/peers.json")
        .exists());

    let recovered = run(&["--yes", script("vault-recover.rhai").to_str().unwrap()]);
    assert_eq!(
        recovered.status, 0,
        "{}\n{}",
        recovered.stdout, recovered.stderr
    );
    assert_eq!(
        recovered.stdout.lines().next().unwrap(),
        "OK - vault recovered: 1 raft voter(s) (controller1), 1 active; the raft data of controller2, controller3 was set aside: run vault-raft.rhai to bring them back"
    );
    assert!(!lab
        .dir
        .join("controller1/vault/raft/raft/peers.json")
        .exists());
    assert!(!lab.dir.join("controller2/vault/raft/vault.db").exists());

    // Back to three voters, every secret kept.
    let regrown = run(&[script("vault-raft.rhai").to_str().unwrap()]);
    assert_eq!(regrown.status, 0, "{}\n{}", regrown.stdout, regrown.stderr);
    assert!(
        regrown
            .stdout
            .contains("vault: 3 raft voters, 1 active, 2 standby, 3 secrets"),
        "{}",
        regrown.stdout
    );
    let read = run(&[
        "-e",
        "print(vault::kv_read(host(\"controller3\"), \"secret\", \"homelab/nas\").password)",
    ]);
    assert_eq!(
        read.stdout,
        format!("{}\n", SECRETS[0].2),
        "{}",
        read.stderr
    );
}
