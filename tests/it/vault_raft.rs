//! scripts/vault-raft.rhai on the lab (its Consul step first): file storage to a
//! three-voter raft cluster with every secret, registered at each node's own agent; a
//! failure half way (a wrong unseal key after the migration) loses nothing, and a second
//! run finishes the job; a finished cluster is left as it is.

use crate::common;

use common::http::get;
use common::lab::{script, Lab, SECRETS};
use common::Test;

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
        done.stdout.starts_with("OK - vault: 3 raft voters")
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
            .starts_with("OK - nothing to change: 3 vault voters")
            && again
                .stdout
                .contains("nothing to change: 3 vault voters, 1 active, 3 secrets"),
        "{}",
        again.stdout
    );
}

#[test]
fn vault_raft_runs_on_a_fresh_lab() {
    let t = Test::new().args(["--lab", script("vault-raft.rhai").to_str().unwrap()]);
    let out = t.run();
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
    // Its first change is Consul's: the snapshot taken before it is named.
    // It is the lab's (gone with it): nothing is left in the working directory.
    let snapshot = common::snapshot_named(&out.stdout);
    assert!(
        snapshot.starts_with(&format!("{}/harun-lab-", std::env::temp_dir().display()))
            && snapshot.contains("/snapshots/consul-"),
        "{}",
        out.stdout
    );
    assert!(!t.path("harun-snapshots").exists());
    // Into a pipe: the summary line and nothing else, no progress on either stream.
    assert_eq!(out.stdout.lines().count(), 1, "{}", out.stdout);
    for progress in ["✔", "waiting for", "Changes"] {
        assert!(!out.stderr.contains(progress), "{}", out.stderr);
    }
}

/// On a terminal the same run shows its steps, what it waits for, and at the end a table
/// of what changed on each host, before the summary line.
#[test]
fn vault_raft_on_a_terminal_shows_steps_waits_and_the_changes() {
    let t = Test::new();
    let mut cmd = t.command();
    cmd.args(["--lab", script("vault-raft.rhai").to_str().unwrap()])
        .env("TERM", "xterm");
    let mut p = rexpect::session::spawn_command(cmd, Some(240_000)).expect("spawn harun");
    // rexpect reads the pty byte by byte: "✔" (E2 9C 94) arrives as three chars, of
    // which the last two mark a finished step (a spinner frame is E2 A0 ..).
    let done = |step: &str| format!("\u{9c}\u{94} {step} (");
    p.exp_string("waiting for").unwrap();
    p.exp_string(&done("consul: preflight")).unwrap();
    p.exp_string(&done("vault: migrate the first controller"))
        .unwrap();
    p.exp_string(&done("vault: verify")).unwrap();
    p.exp_string("Host").unwrap();
    p.exp_string("controller2").unwrap();
    p.exp_string("vault: unseal with 3 key(s)").unwrap();
    p.exp_string("OK - consul: 3 servers, 3 voters").unwrap();
    p.exp_eof().unwrap();
    match p.process.wait().unwrap() {
        rexpect::process::wait::WaitStatus::Exited(_, code) => assert_eq!(code, 0),
        other => panic!("harun ended as {other:?}"),
    }
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
    assert!(
        failed.stderr.starts_with(
            "error[harun::host::command_failed]: controller3: `start vault` exited with status 1: error[harun::lab::service]: vault on controller3: exited: Error initializing storage of type raft: failed to create fsm: failed to open bolt file: open "
        ) && failed.stderr.contains("/controller3/vault/raft/vault.db: "),
        "{}",
        failed.stderr
    );
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

/// The uid of the lab's Vault user (the lab runs as root here, as CI does).
fn vault_uid() -> u32 {
    let out = std::process::Command::new("id")
        .args(["-u", "harun-vault"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
}

/// The story's own configuration (Consul on HTTPS 8501 with ACLs, Vault and Nomad on
/// HTTPS under a private CA), with Vault running as its own user as the packaged unit
/// does: vault-raft.rhai migrates, gives the raft paths to that user, joins over HTTPS
/// with the CA in retry_join, and registers `vault` at every local agent with the token.
/// Then, on that cluster, what real Vault does and the twin must do too: a raft file of
/// another user stops Vault; a join trusts only the CA its retry_join block names; the
/// threshold share on a joining node answers sealed with progress 0 and the node unseals
/// a moment later.
#[test]
fn vault_raft_in_the_story_configuration_as_the_vault_user() {
    use std::os::unix::fs::MetadataExt;
    let lab = Lab::up_with(&["--story"]);
    let https = common::https::Https::trusting(&lab.dir.join("tls/ca.pem"));
    let consul_token = std::fs::read_to_string(lab.dir.join("consul-token"))
        .unwrap()
        .trim()
        .to_string();
    let root = lab.root_token();
    let hosts = ["controller1", "controller2", "controller3"];
    let vault_url = |host: &str, path: &str| format!("https://{}:8200{path}", lab.address(host));

    let out = lab.harun(&[script("vault-raft.rhai").to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    assert!(
        stdout.contains(
            "vault: 3 raft voters, 1 active, 2 standby, 3 secrets, registered at 3 agents"
        ),
        "{stdout}"
    );
    for host in hosts {
        // `vault` registered at the host's own agent, over HTTPS with the ACL token.
        let services = https.call(
            "GET",
            &format!("https://{}:8501/v1/agent/services", lab.address(host)),
            "",
            &[("X-Consul-Token", consul_token.as_str())],
        );
        assert_eq!(services.status, 200, "{}", services.body);
        let services = services.json();
        let vault = services
            .as_object()
            .unwrap()
            .values()
            .find(|s| s["Service"] == "vault")
            .unwrap_or_else(|| panic!("no vault at {host}'s agent: {services}"));
        assert_eq!(vault["Address"], lab.address(host));
        // Every secret through every node.
        for (path, field, value) in SECRETS {
            let r = https.call(
                "GET",
                &vault_url(host, &format!("/v1/secret/data/{path}")),
                "",
                &[("X-Vault-Token", root.as_str())],
            );
            assert_eq!(r.json()["data"]["data"][field], value, "{host} {path}");
        }
        // The raft path and its files belong to Vault's user.
        for file in ["vault/raft", "vault/raft/vault.db"] {
            let meta = std::fs::metadata(lab.dir.join(host).join(file)).unwrap();
            assert_eq!(meta.uid(), vault_uid(), "{host} {file}");
        }
    }
    // Without the token, Consul refuses: ACLs are on.
    let anonymous = https.call(
        "GET",
        &format!(
            "https://{}:8501/v1/agent/services",
            lab.address("controller1")
        ),
        "",
        &[],
    );
    assert_eq!(anonymous.status, 403, "{}", anonymous.body);

    // A raft file that belongs to root (a migration or a copy made as root) stops Vault,
    // with Vault's own message.
    assert!(lab.ctl("controller3", "vault", "stop").status.success());
    let db = lab.dir.join("controller3/vault/raft/vault.db");
    std::os::unix::fs::chown(&db, Some(0), Some(0)).unwrap();
    let refused = lab.ctl("controller3", "vault", "start");
    assert!(!refused.status.success());
    let message = String::from_utf8_lossy(&refused.stderr);
    assert!(
        message.contains(&format!(
            "failed to open bolt file: open {}: permission denied",
            db.display()
        )),
        "{message}"
    );

    // controller3 comes back empty and joins again: with a CA in retry_join that did not
    // sign the leaders' certificates, it never gets the challenge; with the right one it
    // does.
    let raft = lab.dir.join("controller3/vault/raft");
    std::fs::rename(&raft, lab.dir.join("controller3/vault/raft.old")).unwrap();
    std::fs::create_dir(&raft).unwrap();
    std::os::unix::fs::chown(&raft, Some(vault_uid()), None).unwrap();
    let other = common::tls::Pki::make_named(&lab.test.path("other-ca"), &["nobody"]);
    let right_ca = lab.dir.join("tls/ca.pem").display().to_string();
    lab.set_config("controller3", "vault", |t| {
        t.replace(
            &format!("leader_ca_cert_file = \"{right_ca}\""),
            &format!("leader_ca_cert_file = \"{}\"", other.ca.display()),
        )
    });
    assert!(lab.ctl("controller3", "vault", "start").status.success());
    // Not a wait for time to pass: the join attempt the wrong CA fails is in its log.
    let refused_join = common::http::eventually(
        "controller3's join refused for the leader's certificate",
        std::time::Duration::from_secs(30),
        || {
            let log = std::fs::read_to_string(lab.dir.join("controller3/log/vault.log")).ok()?;
            log.lines()
                .find(|l| l.contains("failed to get raft challenge") && l.contains("certificate"))
                .map(str::to_string)
        },
    );
    let status = https.call(
        "GET",
        &vault_url("controller3", "/v1/sys/seal-status"),
        "",
        &[],
    );
    assert_eq!(
        status.json()["initialized"],
        false,
        "{}\n{refused_join}",
        status.body
    );

    assert!(lab.ctl("controller3", "vault", "stop").status.success());
    lab.set_config("controller3", "vault", |t| {
        t.replace(&other.ca.display().to_string(), &right_ca)
    });
    assert!(lab.ctl("controller3", "vault", "start").status.success());
    common::http::eventually(
        "controller3 to fetch the leader's challenge",
        std::time::Duration::from_secs(15),
        || {
            let s = https.call(
                "GET",
                &vault_url("controller3", "/v1/sys/seal-status"),
                "",
                &[],
            );
            (s.json()["initialized"] == true).then_some(())
        },
    );
    // The threshold share: still sealed, progress 0; unsealed a moment later.
    let keys = lab.unseal_keys();
    let mut last = serde_json::Value::Null;
    for key in keys.iter().take(3) {
        let r = https.call(
            "PUT",
            &vault_url("controller3", "/v1/sys/unseal"),
            &format!("{{\"key\": \"{key}\"}}"),
            &[],
        );
        assert_eq!(r.status, 200, "{}", r.body);
        last = r.json();
    }
    assert_eq!(
        (last["sealed"].clone(), last["progress"].clone()),
        (true.into(), 0.into()),
        "{last}"
    );
    common::http::eventually(
        "controller3 to unseal once the keyring arrives",
        std::time::Duration::from_secs(15),
        || {
            let s = https.call(
                "GET",
                &vault_url("controller3", "/v1/sys/seal-status"),
                "",
                &[],
            );
            (s.json()["sealed"] == false).then_some(())
        },
    );
    let health = https.call("GET", &vault_url("controller3", "/v1/sys/health"), "", &[]);
    assert_eq!(health.status, 429, "standby: {}", health.body);
}

/// `vault operator migrate` bootstraps its raft destination before it copies a key, so a
/// migration killed half way leaves a vault.db that looks like data and holds only part
/// of it. vault-raft.rhai does not take it for a finished migration: the re-run sets it
/// aside (never deletes it), clears the source's migration lock, migrates again, and
/// every secret is on all three nodes.
#[test]
fn a_migration_killed_in_the_middle_is_set_aside_and_done_again() {
    let lab = Lab::up();
    let topology_path = lab.dir.join("harun.hcl");
    let good_topology = std::fs::read_to_string(&topology_path).unwrap();
    let harun = common::harun_bin();
    // The lab's vault CLI, whose migration is killed with SIGKILL after three keys.
    let wrapper = lab.test.path("vault-killed-mid-migration");
    std::fs::write(
        &wrapper,
        format!(
            r#"#!/bin/sh
log=$(mktemp)
HARUN_LAB_MIGRATE_PAUSE_AFTER=3 {harun} lab vault "$@" 2>"$log" &
pid=$!
while kill -0 $pid 2>/dev/null; do
  if grep -q pausing "$log"; then kill -9 $pid; cat "$log" >&2; exit 137; fi
  sleep 0.05
done
cat "$log" >&2
wait $pid
"#,
            harun = harun.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(
        &wrapper,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let killing = good_topology.replace(
        &format!("{} lab vault\"", harun.display()),
        &format!("{}\"", wrapper.display()),
    );
    assert_ne!(killing, good_topology);
    std::fs::write(&topology_path, &killing).unwrap();
    let mut t = Test::new();
    let mut run = || {
        t.run_with(&[
            "--topology",
            topology_path.to_str().unwrap(),
            script("vault-raft.rhai").to_str().unwrap(),
        ])
    };
    let failed = run();
    assert_eq!(failed.status, 3, "{}\n{}", failed.stdout, failed.stderr);
    assert!(
        failed
            .stderr
            .contains("vault operator migrate on controller1 failed"),
        "{}",
        failed.stderr
    );
    // What the kill left: a bootstrapped raft store with three of the keys, and the
    // migration lock in the source.
    let raft = lab.dir.join("controller1/vault/raft");
    let state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(raft.join("vault.db")).unwrap()).unwrap();
    assert_eq!(state["bootstrapped"], true, "{state}");
    assert_eq!(
        state["data"]["vault"].as_object().unwrap().len(),
        3,
        "{state}"
    );
    assert!(lab
        .dir
        .join("controller1/vault/data/core/_migration")
        .exists());

    std::fs::write(&topology_path, &good_topology).unwrap();
    let done = run();
    assert_eq!(done.status, 0, "{}\n{}", done.stdout, done.stderr);
    assert!(
        done.stderr
            .contains("held a migration that did not complete"),
        "{}",
        done.stderr
    );
    for host in ["controller1", "controller2", "controller3"] {
        for (path, field, value) in SECRETS {
            let r = lab.vault_call("GET", host, &format!("/v1/secret/data/{path}"), "");
            assert_eq!(r.json()["data"]["data"][field], value, "{host} {path}");
        }
    }
    let aside: Vec<_> = std::fs::read_dir(lab.dir.join("controller1/vault"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("raft.harun-failed-"))
        .collect();
    assert_eq!(aside.len(), 1, "{aside:?}");
    assert!(lab
        .dir
        .join("controller1/vault")
        .join(&aside[0])
        .join("vault.db")
        .exists());
}
