//! scripts/nomad-ha.rhai on the lab, in both branches of the story: servers that find each
//! other through Consul, and servers and clients given server_join retry_join.

use crate::common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::http::eventually;
use common::lab::Lab;
use common::Test;

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/nomad-ha.rhai")
}

#[test]
fn nomad_ha_through_consul_on_a_fresh_lab() {
    let out = Test::new()
        .args(["--lab", script().to_str().unwrap()])
        .run();
    assert_eq!(out.status, 0, "{}\n{}", out.stdout, out.stderr);
    assert!(
        out.stdout
            .contains("nomad: 3 servers (joined through consul), 3 voters, leader "),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("3 client nodes ready"),
        "{}",
        out.stdout
    );
}

/// The story's own configuration: Nomad on HTTPS, its consul stanza on HTTPS 8501 with a
/// token and the CA; with Nomad's real Consul auto-join timing (45 s before a server that
/// found nobody looks again), within the default timeout.
#[test]
fn nomad_ha_through_consul_in_the_story_configuration() {
    let out = Test::new()
        .env("HARUN_LAB_STORY", "true")
        .args(["--lab", script().to_str().unwrap()])
        .run();
    assert_eq!(out.status, 0, "{}\n{}", out.stdout, out.stderr);
    assert!(
        out.stdout
            .contains("nomad: 3 servers (joined through consul), 3 voters, leader "),
        "{}",
        out.stdout
    );
}

#[test]
fn nomad_ha_without_consul_on_a_fresh_lab() {
    let out = Test::new()
        .env("HARUN_LAB_NOMAD_CONSUL", "false")
        .args(["--lab", script().to_str().unwrap()])
        .run();
    assert_eq!(out.status, 0, "{}\n{}", out.stdout, out.stderr);
    assert!(
        out.stdout
            .starts_with("OK - nomad: 3 servers (joined through server_join), 3 voters"),
        "{}",
        out.stdout
    );
}

#[test]
fn nomad_ha_without_consul_uses_server_join_and_a_second_run_changes_nothing() {
    let lab = Lab::up();
    for host in ["controller1", "controller2", "controller3"] {
        lab.set_config(host, "nomad", |t| {
            let start = t.find("consul {").unwrap();
            let end = start + t[start..].find("}\n").unwrap() + 2;
            format!("{}{}", &t[..start], &t[end..])
        });
    }
    assert!(lab.ctl("controller1", "nomad", "restart").status.success());
    let topology = lab.dir.join("harun.hcl");
    let mut t = Test::new();
    let mut run =
        |args: &[&str]| t.run_with(&[&["--topology", topology.to_str().unwrap()], args].concat());
    let out = run(&[script().to_str().unwrap()]);
    assert_eq!(out.status, 0, "{}\n{}", out.stdout, out.stderr);
    assert!(
        out.stdout
            .starts_with("OK - nomad: 3 servers (joined through server_join), 3 voters"),
        "{}",
        out.stdout
    );
    let config = std::fs::read_to_string(lab.dir.join("controller2/nomad.hcl")).unwrap();
    assert!(config.contains("server_join"), "{config}");
    assert!(config.contains(&lab.address("controller3")), "{config}");
    let again = run(&[script().to_str().unwrap()]);
    assert!(
        again
            .stdout
            .starts_with("OK - nothing to change: 3 nomad servers, 3 voters"),
        "{}\n{}",
        again.stdout,
        again.stderr
    );
}

#[test]
fn a_nomad_server_that_never_joins_fails_the_wait_in_time() {
    let lab = Lab::up();
    // Had the wait ignored its 2 s, the run's own deadline would end it (harun::deadline).
    let out = Test::new()
        .args(["--topology", lab.dir.join("harun.hcl").to_str().unwrap()])
        .args(["--timeout", "60s"])
        .args(["-e", "nomad::wait_servers(host(\"controller1\"), 3, 2.0)"])
        .run()
        .status(3);
    assert!(
        out.stderr.contains(
            "timed out after 2s waiting for 3 alive nomad servers (asking controller1) (1 alive)"
        ),
        "{}",
        out.stderr
    );
}

#[test]
fn a_wrong_token_shows_nomads_403() {
    let lab = Lab::up();
    lab.set_config("controller1", "nomad", |t| {
        t + "\nacl {\n  enabled = true\n}\n"
    });
    assert!(lab.ctl("controller1", "nomad", "restart").status.success());
    let url = format!("http://{}:4646", lab.address("controller1"));
    eventually("a nomad leader", Duration::from_secs(10), || {
        // Nomad answers 500 "No cluster leader" without one: only an address counts.
        common::lab::leader(&format!("{url}/v1/status/leader")).map(|_| ())
    });
    let boot = common::http::put(&format!("{url}/v1/acl/bootstrap"), "");
    assert_eq!(boot.status, 200, "{}", boot.body);
    let good = boot.json()["SecretID"].as_str().unwrap().to_string();
    let token = lab.dir.join("nomad-token");
    let topology_with = |secret: &str| {
        std::fs::write(&token, format!("{secret}\n")).unwrap();
        std::fs::set_permissions(&token, std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .unwrap();
        std::fs::read_to_string(lab.dir.join("harun.hcl"))
            .unwrap()
            .replace(
                "  data_dir    = \"",
                &format!(
                    "  token_file  = \"{}\"\n  data_dir    = \"",
                    token.display()
                ),
            )
    };
    let script = "print(nomad::members(host(\"controller1\")).len())";
    let wrong = Test::new()
        .file(
            "harun.hcl",
            &topology_with("00000000-1111-2222-3333-444444444444"),
        )
        .args(["-e", script])
        .run()
        .status(3);
    assert!(
        wrong.stderr.contains("harun::nomad::forbidden"),
        "{}",
        wrong.stderr
    );
    assert!(
        wrong.stderr.contains("answered 403: ACL token not found"),
        "{}",
        wrong.stderr
    );
    assert!(!wrong.stderr.contains("00000000-1111"), "the token leaked");
    let right = Test::new()
        .file("harun.hcl", &topology_with(&good))
        .args(["-e", script])
        .run()
        .status(0);
    assert_eq!(right.stdout, "1\n");
    // Without a token_file, NOMAD_TOKEN is the token, as for the nomad CLI.
    let topology = lab.dir.join("harun.hcl");
    let from_env = |secret: &str| {
        Test::new()
            .env("NOMAD_TOKEN", secret)
            .args(["--topology", topology.to_str().unwrap(), "-e", script])
            .run()
    };
    assert_eq!(from_env(&good).status(0).stdout, "1\n");
    let wrong = from_env("00000000-1111-2222-3333-444444444444").status(3);
    assert!(
        wrong.stderr.contains("answered 403: ACL token not found"),
        "{}",
        wrong.stderr
    );
}

/// The story's other branch with clients that are not servers: a worker's client config
/// gets every server, so it rejoins while the server it first knew is down.
#[test]
fn without_consul_workers_get_every_server_and_rejoin_without_the_first() {
    let lab = Lab::up_with(&["--workers", "1", "--nomad-without-consul"]);
    let topology = lab.dir.join("harun.hcl");
    let out = Test::new()
        .args([
            "--topology",
            topology.to_str().unwrap(),
            script().to_str().unwrap(),
        ])
        .run();
    assert_eq!(out.status, 0, "{}\n{}", out.stdout, out.stderr);
    assert!(
        out.stdout.contains("(joined through server_join)")
            && out.stdout.contains("4 client nodes ready"),
        "{}",
        out.stdout
    );
    let worker = std::fs::read_to_string(lab.dir.join("worker1/nomad.hcl")).unwrap();
    let joins: Vec<String> = ["controller1", "controller2", "controller3"]
        .iter()
        .map(|h| format!("\"{}\"", lab.address(h)))
        .collect();
    assert!(
        worker.contains(&format!("retry_join = [{}]", joins.join(", "))),
        "{worker}"
    );
    assert!(!worker.contains("bootstrap_expect"), "{worker}");
    // With controller1's Nomad down, the restarted worker finds a leader through the others.
    assert!(lab.ctl("controller1", "nomad", "stop").status.success());
    assert!(lab.ctl("worker1", "nomad", "restart").status.success());
    let check = Test::new()
        .args(["--topology", topology.to_str().unwrap(), "-e"])
        .args([r#"let w1 = host("worker1");
print(nomad::wait_leader(w1, 20.0) != "");
let c2 = host("controller2");
// Gossip notices a stopped server a moment later.
let alive = || nomad::members(c2).filter(|m| m.Status == "alive").len();
wait_until("controller1's server seen gone", 20.0, 0.5, || alive.call() == 2);
print(alive.call());
let id = nomad::node_ids(c2)["worker1"];
wait_until("worker1's node ready", 20.0, 0.5, || nomad::node(c2, id).Status == "ready");
print(nomad::node(c2, id).Status);"#])
        .run();
    assert_eq!(check.stdout, "true\n2\nready\n", "{}", check.stderr);
}

/// The story's trap: Nomad registering through a name for every Consul server (or another
/// host's agent) is refused before anything changes.
#[test]
fn a_consul_stanza_that_is_not_the_hosts_own_agent_is_refused_before_any_change() {
    let lab = Lab::up();
    let own = format!("address = \"{}:8500\"", lab.address("controller2"));
    let run = || lab.harun(&[script().to_str().unwrap()]);
    for (wrong, shown) in [
        (
            "address = \"consul.service.consul:8500\"".to_string(),
            "consul.service.consul:8500".to_string(),
        ),
        (
            format!("address = \"http://{}:8500\"", lab.address("controller1")),
            format!("http://{}:8500", lab.address("controller1")),
        ),
    ] {
        lab.set_config("controller2", "nomad", |t| {
            assert!(t.contains(&own), "{t}");
            t.replace(&own, &wrong)
        });
        let out = run();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.code(), Some(2), "{stdout}");
        assert!(
            stdout.starts_with(&format!(
                "CRITICAL - controller2: nomad.hcl registers through the Consul agent at {shown}, not this host's own"
            )),
            "{stdout}"
        );
        // Nothing changed: Consul still a single server, controller2's agents stopped.
        let consul = std::fs::read_to_string(lab.dir.join("controller1/consul.hcl")).unwrap();
        assert!(consul.contains("bootstrap_expect = 1"), "{consul}");
        assert_eq!(
            lab.ctl("controller2", "consul", "status").status.code(),
            Some(3)
        );
        lab.set_config("controller2", "nomad", |t| t.replace(&wrong, &own));
    }
}

/// A Nomad server without a leader answers `/v1/status/leader` with 500 `No cluster
/// leader` (after its RPC hold time; it never answers `""`, which is Consul's way).
/// health.rhai reads that as no leader, not as an agent that is down, and gives the
/// quorum advice.
#[test]
fn without_a_leader_nomad_answers_500_and_health_gives_the_quorum_advice() {
    let lab = Lab::up();
    let grown = lab.harun(&[script().to_str().unwrap()]);
    assert!(
        grown.status.success(),
        "{}",
        String::from_utf8_lossy(&grown.stderr)
    );
    for host in ["controller2", "controller3"] {
        assert!(lab.ctl(host, "nomad", "stop").status.success());
    }
    let health = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/health.rhai");
    let advice = "nomad: no leader (asking controller1); 1 of 3 servers alive, a majority needs 2";
    let line = eventually("the quorum advice", Duration::from_secs(30), || {
        let out = lab.harun(&[health.to_str().unwrap()]);
        let line = String::from_utf8_lossy(&out.stdout)
            .lines()
            .next()
            .unwrap_or("")
            .to_string();
        line.contains(advice).then(|| {
            assert_eq!(out.status.code(), Some(2), "{line}");
            line
        })
    });
    assert!(!line.contains("no controller's agent answers"), "{line}");

    let url = format!(
        "http://{}:4646/v1/status/leader",
        lab.address("controller1")
    );
    let reply = common::http::get(&url);
    assert_eq!(
        (reply.status, reply.body.trim()),
        (500, "No cluster leader")
    );
}
