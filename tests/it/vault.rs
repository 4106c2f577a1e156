//! The lab's Vault twin as the story meets it: sealed on every start, opened only by the
//! threshold of genuine shares; file storage migrated to raft keeping every secret; two new
//! nodes joined and unsealed one by one; a standby's 429 and forwarding; failover.

use crate::common;

use std::time::Duration;

use common::http::{eventually, get, put, request};
use common::lab::{Lab, SECRETS};

fn unseal(lab: &Lab, host: &str, key: &str) -> serde_json::Value {
    let reply = put(
        &lab.vault(host, "/v1/sys/unseal"),
        &format!("{{\"key\": \"{key}\"}}"),
    );
    assert_eq!(reply.status, 200, "{}", reply.body);
    reply.json()
}

fn secret(lab: &Lab, host: &str, path: &str, field: &str) -> Option<String> {
    let reply = lab.vault_call("GET", host, &format!("/v1/secret/data/{path}"), "");
    if reply.status != 200 {
        return None;
    }
    reply.json()["data"]["data"][field]
        .as_str()
        .map(str::to_string)
}

fn health(lab: &Lab, host: &str) -> u16 {
    request("GET", &lab.vault(host, "/v1/sys/health"), "")
        .map(|r| r.status)
        .unwrap_or(0)
}

#[test]
fn vault_opens_only_with_the_threshold_of_genuine_shares() {
    let lab = Lab::up();
    // The story's first state: unsealed, holding secrets.
    assert_eq!(health(&lab, "controller1"), 200);
    for (path, field, value) in SECRETS {
        assert_eq!(
            secret(&lab, "controller1", path, field).as_deref(),
            Some(value)
        );
    }
    // A restart seals it.
    assert!(lab.ctl("controller1", "vault", "restart").status.success());
    let status = get(&lab.vault("controller1", "/v1/sys/seal-status")).json();
    assert_eq!(
        (
            status["sealed"].clone(),
            status["t"].clone(),
            status["n"].clone()
        ),
        (true.into(), 3.into(), 5.into())
    );
    assert_eq!(health(&lab, "controller1"), 503);
    let sealed = lab.vault_call("GET", "controller1", "/v1/secret/data/homelab/nas", "");
    assert_eq!(sealed.status, 503);
    assert_eq!(sealed.json()["errors"][0], "Vault is sealed");
    // Two genuine keys and a forged one reach the threshold but open nothing.
    let keys = lab.unseal_keys();
    assert_eq!(unseal(&lab, "controller1", &keys[0])["progress"], 1);
    assert_eq!(unseal(&lab, "controller1", &keys[1])["progress"], 2);
    let forged = format!("{}{:02x}", "ab".repeat(32), 7);
    let reply = put(
        &lab.vault("controller1", "/v1/sys/unseal"),
        &format!("{{\"key\": \"{forged}\"}}"),
    );
    assert_eq!(reply.status, 400);
    assert_eq!(reply.json()["errors"][0], "Unseal failed, invalid key");
    let status = get(&lab.vault("controller1", "/v1/sys/seal-status")).json();
    assert_eq!(
        (status["sealed"].clone(), status["progress"].clone()),
        (true.into(), 0.into())
    );
    // Not a share at all.
    let reply = put(
        &lab.vault("controller1", "/v1/sys/unseal"),
        r#"{"key": "zz!"}"#,
    );
    assert_eq!(reply.status, 400);
    // Any three genuine shares open it, and the data is there.
    for key in [&keys[4], &keys[2]] {
        assert_eq!(unseal(&lab, "controller1", key)["sealed"], true);
    }
    assert_eq!(unseal(&lab, "controller1", &keys[0])["sealed"], false);
    assert_eq!(
        secret(&lab, "controller1", "homelab/nas", "password").as_deref(),
        Some("correct-horse-battery")
    );
    // Data is encrypted at rest: no secret appears in the storage files.
    let data = lab.dir.join("controller1/vault/data");
    for entry in walk(&data) {
        let text = std::fs::read_to_string(&entry).unwrap();
        assert!(
            !text.contains("correct-horse"),
            "{} holds plaintext",
            entry.display()
        );
    }
    // Without a token, nothing.
    let reply = get(&lab.vault("controller1", "/v1/secret/data/homelab/nas"));
    assert_eq!(reply.status, 403);
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}

fn raft_config(lab: &Lab, host: &str) -> String {
    let joins: String = ["controller1", "controller2", "controller3"]
        .iter()
        .map(|h| {
            format!(
                "  retry_join {{\n    leader_api_addr = \"http://{}:8200\"\n  }}\n",
                lab.address(h)
            )
        })
        .collect();
    let address = lab.address(host);
    format!(
        "storage \"raft\" {{\n  path    = \"{raft}\"\n  node_id = \"{host}\"\n{joins}}}\n\nlistener \"tcp\" {{\n  address     = \"{address}:8200\"\n  tls_disable = true\n}}\n\napi_addr      = \"http://{address}:8200\"\ncluster_addr  = \"http://{address}:8201\"\ndisable_mlock = true\n",
        raft = lab.dir.join(host).join("vault/raft").display(),
    )
}

fn voters(lab: &Lab, host: &str) -> Option<usize> {
    let reply = lab.vault_call("GET", host, "/v1/sys/storage/raft/configuration", "");
    (reply.status == 200).then(|| {
        reply.json()["data"]["config"]["servers"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|s| s["voter"] == true)
            .count()
    })
}

#[test]
fn file_storage_becomes_a_three_node_raft_cluster_that_survives_its_leader() {
    let lab = Lab::up();
    let keys = lab.unseal_keys();
    let harun = common::harun_bin();
    let migrate = lab.dir.join("migrate.hcl");
    std::fs::write(
        &migrate,
        format!(
            "storage_source \"file\" {{\n  path = \"{}\"\n}}\n\nstorage_destination \"raft\" {{\n  path    = \"{}\"\n  node_id = \"controller1\"\n}}\n\ncluster_addr = \"http://{}:8201\"\n",
            lab.dir.join("controller1/vault/data").display(),
            lab.dir.join("controller1/vault/raft").display(),
            lab.address("controller1"),
        ),
    )
    .unwrap();
    assert!(lab.ctl("controller1", "vault", "stop").status.success());
    // The story's trap: the raft directory must exist before the migration.
    let out = std::process::Command::new(&harun)
        .args(["lab", "vault", "operator", "migrate", "-config"])
        .arg(&migrate)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("Error migrating: error mounting 'storage_destination'"),
        "{stderr}"
    );
    for host in ["controller1", "controller2", "controller3"] {
        std::fs::create_dir_all(lab.dir.join(host).join("vault/raft")).unwrap();
    }
    let out = std::process::Command::new(&harun)
        .args(["lab", "vault", "operator", "migrate", "-config"])
        .arg(&migrate)
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "Success! All of the keys have been migrated.\n",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success());
    // Migrated as root: Vault, running as its own user, cannot open the files.
    let refused = {
        lab.set_config("controller1", "vault", |_| raft_config(&lab, "controller1"));
        lab.ctl("controller1", "vault", "start")
    };
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("permission denied"),
        "{refused:?}"
    );
    for host in ["controller1", "controller2", "controller3"] {
        lab.give_to_vault(&lab.dir.join(host).join("vault/raft"));
        lab.set_config(host, "vault", |_| raft_config(&lab, host));
    }
    // controller1 on raft: sealed, then unsealed it leads a one-node cluster.
    assert!(lab.ctl("controller1", "vault", "start").status.success());
    for key in &keys[..3] {
        unseal(&lab, "controller1", key);
    }
    eventually("controller1 active", Duration::from_secs(10), || {
        (health(&lab, "controller1") == 200).then_some(())
    });
    for (path, field, value) in SECRETS {
        assert_eq!(
            secret(&lab, "controller1", path, field).as_deref(),
            Some(value),
            "{path}"
        );
    }
    // Two new nodes join through retry_join but stay sealed until each is unsealed.
    assert!(lab.ctl("controller2", "vault", "start").status.success());
    assert!(lab.ctl("controller3", "vault", "start").status.success());
    for host in ["controller2", "controller3"] {
        eventually("the join's challenge", Duration::from_secs(10), || {
            let s = get(&lab.vault(host, "/v1/sys/seal-status")).json();
            (s["initialized"] == true).then_some(())
        });
        assert_eq!(health(&lab, host), 503, "{host} is sealed until unsealed");
    }
    for key in &keys[2..5] {
        unseal(&lab, "controller2", key);
    }
    eventually("controller2 a standby", Duration::from_secs(10), || {
        (health(&lab, "controller2") == 429).then_some(())
    });
    assert_eq!(
        health(&lab, "controller3"),
        503,
        "unsealing one node leaves the other sealed"
    );
    for key in [&keys[1], &keys[3], &keys[0]] {
        unseal(&lab, "controller3", key);
    }
    eventually("three voters", Duration::from_secs(20), || {
        (voters(&lab, "controller1")? == 3).then_some(())
    });
    // A standby answers 429 (or 200 with standbyok) and forwards reads and writes.
    assert_eq!(health(&lab, "controller3"), 429);
    let ok = get(&lab.vault("controller3", "/v1/sys/health?standbyok=true"));
    assert_eq!(ok.status, 200);
    assert_eq!(ok.json()["standby"], true);
    assert_eq!(
        secret(&lab, "controller3", "homelab/wifi", "psk").as_deref(),
        Some("not-a-real-psk")
    );
    let write = lab.vault_call(
        "POST",
        "controller2",
        "/v1/secret/data/homelab/new",
        r#"{"data": {"added": "after-join"}}"#,
    );
    assert_eq!(write.status, 200, "{}", write.body);
    assert_eq!(
        secret(&lab, "controller1", "homelab/new", "added").as_deref(),
        Some("after-join")
    );
    // The leader stops: an unsealed survivor takes over with every secret.
    assert!(lab.ctl("controller1", "vault", "stop").status.success());
    let survivor = eventually("a new active node", Duration::from_secs(15), || {
        ["controller2", "controller3"]
            .into_iter()
            .find(|h| health(&lab, h) == 200)
    });
    for (path, field, value) in SECRETS {
        assert_eq!(secret(&lab, survivor, path, field).as_deref(), Some(value));
    }
    let leader = get(&lab.vault(survivor, "/v1/sys/leader")).json();
    assert_eq!(leader["is_self"], true);
    assert_eq!(leader["ha_enabled"], true);
}

#[test]
fn vault_registers_in_consul_with_its_state() {
    let lab = Lab::up();
    let passing = |tag: &str| {
        let r = get(&lab.consul("controller1", "/v1/health/service/vault?passing"));
        let entries = r.json();
        let entries = entries.as_array()?;
        (entries.len() == 1
            && entries[0]["Service"]["Tags"]
                .as_array()?
                .iter()
                .any(|t| t == tag))
        .then_some(())
    };
    eventually("vault active and passing", Duration::from_secs(10), || {
        passing("active")
    });
    // Sealed: the check turns critical, and a healthy-only query finds nothing.
    let sealed = lab.vault_call("PUT", "controller1", "/v1/sys/seal", "");
    assert_eq!(sealed.status, 204, "{}", sealed.body);
    eventually(
        "vault critical once sealed",
        Duration::from_secs(10),
        || {
            let r = get(&lab.consul("controller1", "/v1/health/service/vault?passing"));
            r.json().as_array()?.is_empty().then_some(())
        },
    );
    // Stopped: it deregisters itself.
    assert!(lab.ctl("controller1", "vault", "stop").status.success());
    eventually(
        "vault gone from the catalog",
        Duration::from_secs(10),
        || {
            let r = get(&lab.consul("controller1", "/v1/catalog/service/vault"));
            r.json().as_array()?.is_empty().then_some(())
        },
    );
}

#[test]
fn vault_refuses_raft_configs_the_real_server_refuses() {
    let lab = Lab::up();
    let raft = raft_config(&lab, "controller2");
    // The story's trap: the raft path does not exist yet.
    lab.set_config("controller2", "vault", |_| raft.clone());
    let out = lab.ctl("controller2", "vault", "start");
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("failed to create fsm"), "{stderr}");
    std::fs::create_dir_all(lab.dir.join("controller2/vault/raft")).unwrap();
    lab.give_to_vault(&lab.dir.join("controller2/vault/raft"));
    // raft without cluster_addr, or without an explicit disable_mlock.
    for (cut, words) in [
        (
            "cluster_addr",
            "Cluster address must be set when using raft storage",
        ),
        ("disable_mlock", "disable_mlock must be set explicitly"),
    ] {
        lab.set_config("controller2", "vault", |_| {
            raft.lines()
                .filter(|l| !l.starts_with(cut))
                .collect::<Vec<_>>()
                .join("\n")
        });
        let out = lab.ctl("controller2", "vault", "start");
        assert_eq!(out.status.code(), Some(1), "without {cut}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(words), "{stderr}");
    }
    lab.set_config("controller2", "vault", |_| raft.clone());
    assert!(lab.ctl("controller2", "vault", "start").status.success());
    let status = get(&lab.vault("controller2", "/v1/sys/seal-status")).json();
    assert_eq!(status["storage_type"], "raft");
    // An unknown key is only a warning, as in Vault (command/server.go).
    assert!(lab.ctl("controller2", "vault", "stop").status.success());
    lab.set_config("controller2", "vault", |t| {
        t + "\nstorage_path = \"/tmp\"\n"
    });
    let out = lab.ctl("controller2", "vault", "start");
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let log = std::fs::read_to_string(lab.dir.join("controller2/log/vault.log")).unwrap();
    assert!(
        log.contains("unknown or unsupported field storage_path"),
        "{log}"
    );
}

/// After a power cut every Vault node is sealed. `unseal.rhai --set split=true` gave each
/// controller two of the five shares (threshold three); controller1's unseal timer alone
/// opens nothing, controller2's completes every node, and controller3's share file is not
/// needed (it is gone). No key is ever in the output.
#[test]
fn a_power_cut_is_healed_by_two_controllers_unseal_timers() {
    let lab = Lab::up();
    let raft = lab.harun(&[common::lab::script("vault-raft.rhai").to_str().unwrap()]);
    assert!(
        raft.status.success(),
        "{}",
        String::from_utf8_lossy(&raft.stdout)
    );
    let keys = lab.unseal_keys();
    let mut said = String::new();
    let mut run = |args: &[&str]| {
        let mut all = args.to_vec();
        let script = common::lab::script("unseal.rhai");
        all.push(script.to_str().unwrap());
        let out = lab.harun(&all);
        let (stdout, stderr) = (
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        );
        said.push_str(&stdout);
        said.push_str(&stderr);
        (out.status.code(), stdout, stderr)
    };

    let share = |host: &str| lab.dir.join(host).join("vault-unseal-share");
    // Killed after its first share file (by SIGKILL, and as `timeout -s KILL` kills: its
    // whole process group), the next run places the rest.
    for by_timeout in [false, true] {
        let audit = lab.test.path("split.audit");
        let stderr = lab.test.path("split.stderr");
        let _ = std::fs::remove_file(&audit);
        let args = ["--yes", "--set", "split=true"];
        let mut first = if by_timeout {
            lab.spawn_script_under_timeout("unseal.rhai", &audit, &stderr, &args)
        } else {
            lab.spawn_script("unseal.rhai", &audit, &stderr, &args)
        };
        common::lab::wait_for_changes(&audit, 1, &mut first, "unseal.rhai");
        // SAFETY: signalling the child we started (or, as timeout does, its group).
        unsafe {
            if by_timeout {
                libc::kill(-(first.id() as i32), libc::SIGKILL);
            } else {
                libc::kill(first.id() as i32, libc::SIGKILL);
            }
        }
        let _ = first.wait();
        let (code, stdout, stderr) = run(&args);
        assert_eq!(code, Some(0), "{stdout}{stderr}");
        assert!(stdout.starts_with("OK - unseal shares "), "{stdout}");
        for (host, held) in [("controller1", [0, 1]), ("controller3", [4, 0])] {
            let text = std::fs::read_to_string(share(host)).unwrap();
            let expected: Vec<&str> = held.iter().map(|&k| keys[k].as_str()).collect();
            assert_eq!(text.lines().collect::<Vec<_>>(), expected, "{host}");
        }
        let leftovers: Vec<_> = std::fs::read_dir(lab.dir.join("controller1"))
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with(".harun."))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
        for host in ["controller1", "controller2", "controller3"] {
            std::fs::remove_file(share(host)).unwrap();
        }
    }
    let (code, stdout, stderr) = run(&["--yes", "--set", "split=true"]);
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    assert_eq!(
        stdout,
        "OK - unseal shares placed on controller1, controller2, controller3: each controller holds 2 of 5 (threshold 3); any 2 of 3 controllers together reach it, none alone\n"
    );
    for (host, held) in [
        ("controller1", [0, 1]),
        ("controller2", [2, 3]),
        ("controller3", [4, 0]),
    ] {
        use std::os::unix::fs::PermissionsExt;
        let text = std::fs::read_to_string(share(host)).unwrap();
        let expected: Vec<&str> = held.iter().map(|&k| keys[k].as_str()).collect();
        assert_eq!(text.lines().collect::<Vec<_>>(), expected, "{host}");
        let mode = std::fs::metadata(share(host)).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "{host}");
    }
    let (code, stdout, _) = run(&["--yes", "--set", "split=true"]);
    assert_eq!(code, Some(0));
    assert!(
        stdout.starts_with("OK - unseal shares in place already:"),
        "{stdout}"
    );

    // The power cut: every node restarts sealed; controller3's part is lost with its card.
    std::fs::remove_file(share("controller3")).unwrap();
    for host in ["controller1", "controller2", "controller3"] {
        assert!(lab.ctl(host, "vault", "restart").status.success());
        assert_eq!(health(&lab, host), 503, "{host} sealed");
    }
    let (code, stdout, stderr) = run(&["--set", "host=controller1"]);
    assert_eq!(code, Some(1), "{stdout}{stderr}");
    assert_eq!(
        stdout,
        "WARNING - vault waits for another controller's shares: controller1 sealed (2/3 shares), controller2 sealed (2/3 shares), controller3 sealed (2/3 shares)\n"
    );
    for host in ["controller1", "controller2", "controller3"] {
        assert_eq!(
            health(&lab, host),
            503,
            "{host}: one controller's shares open nothing"
        );
    }
    let (code, stdout, stderr) = run(&["--set", "host=controller2"]);
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    assert_eq!(
        stdout,
        "OK - vault: every node unsealed (controller1, controller2, controller3 by controller2's shares with the others')\n"
    );
    eventually("one active node", Duration::from_secs(30), || {
        let states: Vec<u16> = ["controller1", "controller2", "controller3"]
            .iter()
            .map(|h| health(&lab, h))
            .collect();
        (states.iter().filter(|s| **s == 200).count() == 1
            && states.iter().filter(|s| **s == 429).count() == 2)
            .then_some(())
    });
    let (code, stdout, _) = run(&["--set", "host=controller1"]);
    assert_eq!(
        (code, stdout.as_str()),
        (Some(0), "OK - vault: every node unsealed\n")
    );
    // Controller3's timer cannot run without its part, and says where it looked.
    let (code, _, stderr) = run(&["--set", "host=controller3"]);
    assert_eq!(code, Some(3));
    assert!(stderr.contains("vault-unseal-share"), "{stderr}");
    for key in &keys {
        assert!(!said.contains(key.as_str()), "a key in the output:\n{said}");
    }
}
