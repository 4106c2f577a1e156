//! The lab: `harun lab up/status/down`, `--lab`, and the Consul twin's behaviour that the
//! story depends on (bootstrap_expect, failover, stale registrations).

use crate::common;

use std::path::Path;
use std::time::Duration;

use common::http::{eventually, get, put, request};
use common::lab::{leader, Lab};
use common::Test;

#[test]
fn lab_up_starts_the_story_first_state() {
    let lab = Lab::up();
    let c1 = lab.address("controller1");
    assert_eq!(
        leader(&lab.consul("controller1", "/v1/status/leader")),
        Some(format!("{c1}:8300"))
    );
    let kv = get(&lab.consul("controller1", "/v1/kv/homelab?recurse"));
    assert_eq!(kv.status, 200);
    assert_eq!(kv.json().as_array().unwrap().len(), 3);
    let config = get(&lab.consul("controller1", "/v1/operator/raft/configuration")).json();
    assert_eq!(config["Servers"].as_array().unwrap().len(), 1);
    // Controllers 2 and 3 have single-server configs and nothing running.
    assert!(request("GET", &lab.consul("controller2", "/v1/status/leader"), "").is_err());
    let text = std::fs::read_to_string(lab.dir.join("controller2/consul.hcl")).unwrap();
    assert!(text.contains("bootstrap_expect = 1"));
    let words = |host: &str, service: &str| -> Vec<String> {
        let line = lab.status_line(host, service);
        line.split_whitespace().map(str::to_string).collect()
    };
    let c1_consul = words("controller1", "consul");
    assert_eq!(c1_consul[3], "running", "{c1_consul:?}");
    assert_eq!(c1_consul.last().unwrap(), "leader", "{c1_consul:?}");
    for host in ["controller2", "controller3"] {
        for service in ["consul", "nomad", "vault"] {
            assert_eq!(
                words(host, service)[1..],
                [
                    lab.address(host),
                    service.to_string(),
                    "stopped".to_string()
                ],
                "{host} {service}"
            );
        }
    }
    // A second lab in the same directory is refused while this one runs.
    let again = lab.lab("up", &[]);
    assert_eq!(again.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&again.stderr).contains("a lab is already running"));
    // Down stops everything.
    let extra = put(
        &lab.consul("controller1", "/v1/kv/homelab/extra"),
        "past the first state",
    );
    assert_eq!(extra.status, 200);
    let down = lab.lab("down", &[]);
    assert!(down.status.success());
    assert!(request("GET", &lab.consul("controller1", "/v1/status/leader"), "").is_err());

    // Up over the stopped lab is refused: its data is past the first state.
    let again = lab.lab("up", &[]);
    assert_eq!(again.status.code(), Some(3));
    let stderr = String::from_utf8_lossy(&again.stderr);
    assert!(
        stderr.contains("holds an earlier lab (stopped)") && stderr.contains("--fresh"),
        "{stderr}"
    );
    assert!(request("GET", &lab.consul("controller1", "/v1/status/leader"), "").is_err());
    // --fresh replaces the lab's own files and keeps the user's.
    std::fs::write(lab.dir.join("notes.txt"), "mine").unwrap();
    let fresh = lab.lab("up", &["--fresh"]);
    assert!(
        fresh.status.success(),
        "{}",
        String::from_utf8_lossy(&fresh.stderr)
    );
    let kv = get(&lab.consul("controller1", "/v1/kv/homelab?recurse"));
    assert_eq!(kv.json().as_array().unwrap().len(), 3, "{}", kv.body);
    assert_eq!(
        std::fs::read_to_string(lab.dir.join("notes.txt")).unwrap(),
        "mine"
    );
}

#[test]
fn scripts_control_lab_services_through_the_topology() {
    let lab = Lab::up();
    let out = lab.harun(&[
        "-e",
        "let h = host(\"controller3\"); print(service::status(h, \"consul\")); service::start(h, \"consul\"); print(service::is_active(h, \"consul\")); service::stop(h, \"consul\"); print(service::status(h, \"consul\"))",
    ]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "inactive\ntrue\ninactive\n",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_bad_config_fails_the_start_with_the_agents_words() {
    let lab = Lab::up();
    lab.set_config("controller2", "consul", |t| t + "\nbootstrap_exepct = 3\n");
    let out = lab.ctl("controller2", "consul", "start");
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("invalid config key bootstrap_exepct"),
        "{stderr}"
    );
}

fn go_ha(lab: &Lab) {
    let joins = format!(
        "retry_join = [\"{}\", \"{}\", \"{}\"]\n",
        lab.address("controller1"),
        lab.address("controller2"),
        lab.address("controller3")
    );
    for host in ["controller1", "controller2", "controller3"] {
        lab.set_config(host, "consul", |t| {
            t.replace("bootstrap_expect = 1", "bootstrap_expect = 3") + &joins
        });
    }
}

fn voters(lab: &Lab, host: &str) -> Option<usize> {
    let reply = request(
        "GET",
        &lab.consul(host, "/v1/operator/raft/configuration"),
        "",
    )
    .ok()?;
    if reply.status != 200 {
        return None;
    }
    Some(
        reply.json()["Servers"]
            .as_array()?
            .iter()
            .filter(|s| s["Voter"] == true)
            .count(),
    )
}

#[test]
fn new_servers_join_the_running_one_and_a_leader_survives_its_loss() {
    let lab = Lab::up();
    go_ha(&lab);
    assert!(lab.ctl("controller1", "consul", "restart").status.success());
    assert!(lab.ctl("controller2", "consul", "start").status.success());
    assert!(lab.ctl("controller3", "consul", "start").status.success());
    eventually("three voters", Duration::from_secs(20), || {
        (voters(&lab, "controller2")? == 3).then_some(())
    });
    // The KV data of the single server reached the new ones.
    let kv = get(&lab.consul("controller3", "/v1/kv/homelab/dns/zone?raw"));
    assert_eq!(kv.body, "home.arpa");
    // Stop the leader: another one takes over and writes go on.
    let old = leader(&lab.consul("controller1", "/v1/status/leader")).unwrap();
    let old_host = ["controller1", "controller2", "controller3"]
        .into_iter()
        .find(|h| old.starts_with(&format!("{}:", lab.address(h))))
        .unwrap();
    assert!(lab.ctl(old_host, "consul", "stop").status.success());
    let survivor = ["controller1", "controller2", "controller3"]
        .into_iter()
        .find(|h| *h != old_host)
        .unwrap();
    let new = eventually("a new leader", Duration::from_secs(15), || {
        leader(&lab.consul(survivor, "/v1/status/leader")).filter(|l| *l != old)
    });
    assert_ne!(new, old);
    assert_eq!(
        put(&lab.consul(survivor, "/v1/kv/after-failover"), "yes").body,
        "true"
    );
    // The stopped server comes back and catches up.
    assert!(lab.ctl(old_host, "consul", "start").status.success());
    eventually(
        "the returning server to catch up",
        Duration::from_secs(15),
        || {
            let r = request(
                "GET",
                &lab.consul(old_host, "/v1/kv/after-failover?raw"),
                "",
            )
            .ok()?;
            (r.body == "yes").then_some(())
        },
    );
}

#[test]
fn no_leader_until_bootstrap_expect_servers_are_up() {
    let lab = Lab::up();
    assert!(lab.ctl("controller1", "consul", "stop").status.success());
    // A cold start of a fresh three-server cluster: wipe the single server's state.
    std::fs::remove_dir_all(lab.dir.join("controller1/consul")).unwrap();
    std::fs::create_dir_all(lab.dir.join("controller1/consul")).unwrap();
    go_ha(&lab);
    assert!(lab.ctl("controller1", "consul", "start").status.success());
    assert!(lab.ctl("controller2", "consul", "start").status.success());
    // Not a wait for time to pass: once each sees the other alive, a server that ignored
    // bootstrap_expect would bootstrap.
    for (host, other) in [
        ("controller1", "controller2"),
        ("controller2", "controller1"),
    ] {
        eventually(
            &format!("{host} seeing {other} alive"),
            Duration::from_secs(15),
            || {
                let members = get(&lab.consul(host, "/v1/agent/members")).json();
                members
                    .as_array()?
                    .iter()
                    .any(|m| m["Name"] == other && m["Status"] == 1)
                    .then_some(())
            },
        );
    }
    assert_eq!(
        leader(&lab.consul("controller1", "/v1/status/leader")),
        None
    );
    let r = get(&lab.consul("controller1", "/v1/kv/x"));
    assert_eq!((r.status, r.body.as_str()), (500, "No cluster leader"));
    assert!(lab.ctl("controller3", "consul", "start").status.success());
    eventually(
        "a leader once three servers are up",
        Duration::from_secs(15),
        || leader(&lab.consul("controller2", "/v1/status/leader")),
    );
}

#[test]
fn deregistering_through_the_wrong_agent_leaves_a_stale_registration() {
    let lab = Lab::up();
    go_ha(&lab);
    assert!(lab.ctl("controller1", "consul", "restart").status.success());
    assert!(lab.ctl("controller2", "consul", "start").status.success());
    assert!(lab.ctl("controller3", "consul", "start").status.success());
    eventually("three voters", Duration::from_secs(20), || {
        (voters(&lab, "controller1")? == 3).then_some(())
    });
    // Vault registers through whichever server consul.service.consul gave it: controller2.
    let reply = put(
        &lab.consul("controller2", "/v1/agent/service/register"),
        r#"{"ID": "vault:controller1:8200", "Name": "vault", "Tags": ["active"], "Port": 8200}"#,
    );
    assert_eq!(reply.status, 200, "{}", reply.body);
    eventually(
        "the registration in the catalog",
        Duration::from_secs(10),
        || (by_hand(&lab).len() == 1).then_some(()),
    );
    // ... and deregisters through another one: controller3 does not know it.
    let reply = put(
        &lab.consul(
            "controller3",
            "/v1/agent/service/deregister/vault:controller1:8200",
        ),
        "",
    );
    // Consul 1.8.7 answers 200 and removes nothing: nobody notices.
    assert_eq!(reply.status, 200, "{}", reply.body);
    // Not a wait for time to pass: a marker registered through controller3 after the
    // deregistration reaches the catalog once controller3 has synced what it was told.
    let marker = put(
        &lab.consul("controller3", "/v1/agent/service/register"),
        r#"{"ID": "marker", "Name": "marker", "Port": 1}"#,
    );
    assert_eq!(marker.status, 200, "{}", marker.body);
    eventually("the marker in the catalog", Duration::from_secs(10), || {
        let m = get(&lab.consul("controller1", "/v1/catalog/service/marker")).json();
        (m.as_array()?.len() == 1).then_some(())
    });
    assert_eq!(
        put(
            &lab.consul("controller3", "/v1/agent/service/deregister/marker"),
            ""
        )
        .status,
        200
    );
    let stale = by_hand(&lab);
    assert_eq!(stale.len(), 1, "the stale entry stays");
    assert_eq!(stale[0]["Node"], "controller2");
    // Through the agent that owns it, it goes away.
    assert_eq!(
        put(
            &lab.consul(
                "controller2",
                "/v1/agent/service/deregister/vault:controller1:8200"
            ),
            ""
        )
        .status,
        200
    );
    eventually("the registration gone", Duration::from_secs(10), || {
        by_hand(&lab).is_empty().then_some(())
    });
}

/// The catalog's entries for the registration the test made by hand (the lab's own Vault
/// registers itself too, under another ID).
fn by_hand(lab: &Lab) -> Vec<serde_json::Value> {
    let all = get(&lab.consul("controller1", "/v1/catalog/service/vault")).json();
    all.as_array()
        .unwrap()
        .iter()
        .filter(|e| e["ServiceID"] == "vault:controller1:8200")
        .cloned()
        .collect()
}

#[test]
fn dash_dash_lab_runs_a_script_on_a_fresh_lab_and_removes_it() {
    let t = Test::new().args([
        "--lab",
        "-e",
        "print(topology.hosts.len()); print(service::status(host(\"controller1\"), \"consul\")); topology.file",
    ]);
    let out = t.run().status(0);
    let mut lines = out.stdout.lines();
    assert_eq!(lines.next(), Some("3"));
    assert_eq!(lines.next(), Some("active"));
    let topology = lines.next().unwrap();
    assert!(
        !Path::new(topology).exists(),
        "the temporary lab was kept: {topology}"
    );
}

/// HARUN_LAB_CONTROLLERS sizes the `--lab` lab; a lab of an even size is refused before
/// anything starts, by `lab up` and by `--lab` alike.
#[test]
fn a_lab_has_three_five_or_seven_controllers() {
    let seven = Test::new()
        .env("HARUN_LAB_CONTROLLERS", "7")
        .args([
            "--lab",
            "-e",
            "print(hosts(\"controller\").map(|h| h.name)); print(service::status(host(\"controller7\"), \"consul\"))",
        ])
        .run()
        .status(0);
    assert_eq!(
        seven.stdout,
        "[\"controller1\", \"controller2\", \"controller3\", \"controller4\", \"controller5\", \"controller6\", \"controller7\"]\ninactive\n"
    );
    let t = Test::new();
    let dir = t.path("lab");
    let even = t.args([
        "lab",
        "up",
        "--controllers",
        "4",
        "--dir",
        dir.to_str().unwrap(),
    ]);
    even.run()
        .status(3)
        .stderr_has("a lab has 3, 5 or 7 controllers, not 4");
    assert!(!dir.exists(), "a refused lab made its directory");
    Test::new()
        .env("HARUN_LAB_CONTROLLERS", "4")
        .args(["--lab", "-e", "1"])
        .run()
        .status(3)
        .stderr_has("a lab has 3, 5 or 7 controllers, not 4");
}

/// A `--lab` run leaves nothing in the working directory: the snapshot consul-ha takes
/// before its change is the lab's, and goes with it; under --keep-lab it stays there.
#[test]
fn a_lab_run_keeps_its_snapshots_in_the_lab() {
    let t = Test::new().args([
        "--lab",
        "--keep-lab",
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("scripts/consul-ha.rhai")
            .to_str()
            .unwrap(),
    ]);
    let out = t.run().status(0);
    let left: Vec<String> = std::fs::read_dir(t.dir.path())
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with('.'))
        .collect();
    assert!(left.is_empty(), "left in the working directory: {left:?}");
    let kept = out
        .stderr
        .lines()
        .chain(out.stdout.lines())
        .find_map(|l| {
            l.split_whitespace()
                .map(|w| w.trim_end_matches([')', ';']))
                .find(|w| w.ends_with("/harun.hcl"))
        })
        .map(|p| Path::new(p).parent().unwrap().to_path_buf())
        .unwrap_or_else(|| panic!("where the lab is kept:\n{}\n{}", out.stdout, out.stderr));
    let snapshots: Vec<_> = std::fs::read_dir(kept.join("snapshots"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        snapshots.len() == 1 && snapshots[0].starts_with("consul-"),
        "{snapshots:?}"
    );
    assert!(
        out.stdout.contains(&format!(
            "snapshot before the change: {}/snapshots/consul-",
            kept.display()
        )),
        "{}",
        out.stdout
    );
    let down = std::process::Command::new(common::harun_bin())
        .args(["lab", "down", "--dir"])
        .arg(&kept)
        .output()
        .unwrap();
    assert!(down.status.success());
}

fn consul_ha(lab: &Lab) {
    go_ha(lab);
    assert!(lab.ctl("controller1", "consul", "restart").status.success());
    assert!(lab.ctl("controller2", "consul", "start").status.success());
    assert!(lab.ctl("controller3", "consul", "start").status.success());
    eventually("three consul voters", Duration::from_secs(20), || {
        (voters(lab, "controller1")? == 3).then_some(())
    });
}

fn nomad(lab: &Lab, host: &str, path: &str) -> String {
    format!("http://{}:4646{path}", lab.address(host))
}

#[test]
fn nomad_servers_wait_for_bootstrap_expect_and_find_each_other_through_consul() {
    let lab = Lab::up();
    consul_ha(&lab);
    // A cold start of three Nomad servers that know no addresses: Consul introduces them.
    assert!(lab.ctl("controller1", "nomad", "stop").status.success());
    std::fs::remove_dir_all(lab.dir.join("controller1/nomad")).unwrap();
    for host in ["controller1", "controller2", "controller3"] {
        lab.set_config(host, "nomad", |t| {
            t.replace("bootstrap_expect = 1", "bootstrap_expect = 3")
        });
    }
    assert!(lab.ctl("controller1", "nomad", "start").status.success());
    assert!(lab.ctl("controller2", "nomad", "start").status.success());
    // Not a wait for time to pass: once each sees the other alive, a server that ignored
    // bootstrap_expect would bootstrap.
    for (host, other) in [
        ("controller1", "controller2"),
        ("controller2", "controller1"),
    ] {
        eventually(
            &format!("nomad on {host} seeing {other} alive"),
            Duration::from_secs(30),
            || {
                let members = get(&nomad(&lab, host, "/v1/agent/members")).json();
                members["Members"]
                    .as_array()?
                    .iter()
                    .any(|m| {
                        m["Name"].as_str().is_some_and(|n| n.starts_with(other))
                            && m["Status"] == "alive"
                    })
                    .then_some(())
            },
        );
    }
    // No leader: Nomad holds the request, then answers 500 (never `""`, Consul's answer).
    let r = get(&nomad(&lab, "controller1", "/v1/status/leader"));
    assert_eq!((r.status, r.body.as_str()), (500, "No cluster leader"));
    let r = get(&nomad(&lab, "controller2", "/v1/nodes"));
    assert_eq!((r.status, r.body.as_str()), (500, "No cluster leader"));
    assert!(lab.ctl("controller3", "nomad", "start").status.success());
    let leader = eventually("a nomad leader", Duration::from_secs(20), || {
        let r = get(&nomad(&lab, "controller3", "/v1/status/leader"));
        let l: String = serde_json::from_str(&r.body).ok()?;
        (!l.is_empty()).then_some(l)
    });
    assert!(leader.ends_with(":4647"), "{leader}");
    let config = get(&nomad(
        &lab,
        "controller1",
        "/v1/operator/raft/configuration",
    ))
    .json();
    assert_eq!(config["Servers"].as_array().unwrap().len(), 3);
    let members = get(&nomad(&lab, "controller2", "/v1/agent/members")).json();
    assert_eq!(members["Members"].as_array().unwrap().len(), 3);
    assert_eq!(members["Members"][0]["Status"], "alive");
    eventually("three ready client nodes", Duration::from_secs(10), || {
        let nodes = get(&nomad(&lab, "controller1", "/v1/nodes")).json();
        let ready = nodes
            .as_array()?
            .iter()
            .filter(|n| n["Status"] == "ready")
            .count();
        (ready == 3).then_some(())
    });
}

#[test]
fn nomad_nodes_drain_and_come_back_eligible() {
    let lab = Lab::up();
    let id = eventually("the client node", Duration::from_secs(10), || {
        let nodes = get(&nomad(&lab, "controller1", "/v1/nodes")).json();
        nodes.as_array()?.first()?["ID"]
            .as_str()
            .map(str::to_string)
    });
    let jobs = get(&nomad(&lab, "controller1", "/v1/jobs")).json();
    assert_eq!(jobs.as_array().unwrap().len(), 3);
    let drain = put(
        &nomad(&lab, "controller1", &format!("/v1/node/{id}/drain")),
        r#"{"DrainSpec": {"Deadline": 3600000000000, "IgnoreSystemJobs": true}, "Meta": {"message": "upgrade"}}"#,
    );
    assert_eq!(drain.status, 200, "{}", drain.body);
    assert!(drain.json()["NodeModifyIndex"].as_u64().unwrap() > 0);
    // The full node says so by its DrainStrategy; `Drain` is a field of the list's stubs
    // only (nomad/structs/structs.go Node and NodeListStub).
    let node = get(&nomad(&lab, "controller1", &format!("/v1/node/{id}"))).json();
    assert!(node.get("Drain").is_none(), "{node}");
    assert_eq!(
        (
            node["DrainStrategy"]["Deadline"].clone(),
            node["SchedulingEligibility"].clone()
        ),
        (3600000000000_u64.into(), "ineligible".into())
    );
    let stubs = get(&nomad(&lab, "controller1", "/v1/nodes")).json();
    assert_eq!(stubs[0]["Drain"], true, "{stubs}");
    let refused = put(
        &nomad(&lab, "controller1", &format!("/v1/node/{id}/eligibility")),
        r#"{"Eligibility": "eligible"}"#,
    );
    assert_eq!(refused.status, 500);
    assert!(
        refused.body.contains("while it is draining"),
        "{}",
        refused.body
    );
    let undrain = put(
        &nomad(&lab, "controller1", &format!("/v1/node/{id}/drain")),
        r#"{"DrainSpec": null, "MarkEligible": true}"#,
    );
    assert_eq!(undrain.status, 200);
    let node = get(&nomad(&lab, "controller1", &format!("/v1/node/{id}"))).json();
    assert_eq!(
        (
            node["DrainStrategy"].clone(),
            node["SchedulingEligibility"].clone()
        ),
        (serde_json::Value::Null, "eligible".into())
    );
    let unknown = put(
        &nomad(
            &lab,
            "controller1",
            "/v1/node/00000000-0000-0000-0000-000000000000/drain",
        ),
        r#"{"DrainSpec": null}"#,
    );
    assert_eq!(
        (unknown.status, unknown.body.as_str()),
        (500, "node not found")
    );
}

#[test]
fn the_controllers_example_reports_the_story_first_state() {
    let example =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/controllers.rhai");
    let out = Test::new()
        .args(["--lab", example.to_str().unwrap()])
        .run()
        .status(1);
    let mut lines = out.stdout.lines();
    let summary = lines.next().unwrap();
    assert!(
        summary.starts_with("WARNING - vault still uses file storage"),
        "{summary}"
    );
    assert!(summary.contains("1 of 3 controllers run consul, nomad and vault; 2 prepared"));
    let c1 = lines.next().unwrap();
    assert!(
        c1.contains(
            "consul active, nomad active, vault active; bootstrap_expect=1, vault storage file"
        ),
        "{c1}"
    );
}

/// A read-only Vault endpoint that vaultrs does not offer, sent through vaultrs's own
/// transport (its `/v1` prefix, headers and error handling).
macro_rules! vault_get {
    ($name:ident, $path:expr) => {
        struct $name;
        impl rustify::endpoint::Endpoint for $name {
            type Response = serde_json::Value;
            const REQUEST_BODY_TYPE: rustify::enums::RequestType =
                rustify::enums::RequestType::JSON;
            const RESPONSE_BODY_TYPE: rustify::enums::ResponseType =
                rustify::enums::ResponseType::JSON;
            fn path(&self) -> String {
                $path.into()
            }
            fn method(&self) -> rustify::enums::RequestMethod {
                rustify::enums::RequestMethod::GET
            }
        }
    };
}
vault_get!(SealStatus, "sys/seal-status");
vault_get!(Leader, "sys/leader");
vault_get!(RaftConfiguration, "sys/storage/raft/configuration");
vault_get!(AutopilotState, "sys/storage/raft/autopilot/state");

/// Published clients that this project did not write drive the twins through the calls
/// harun's scripts make, and get what real servers give them: vaultrs (the Vault API
/// client on crates.io) for init, unseal, health, seal status, KV v2, the leader, the raft
/// configuration and autopilot; nomad-client-rs for the leader, the peers, the nodes and
/// the jobs. Their response types fail on a missing or mistyped field.
#[test]
fn published_clients_get_from_the_twins_what_real_servers_give() {
    use vaultrs::client::{VaultClient, VaultClientSettingsBuilder};
    let lab = Lab::up();
    let _ = rustls::crypto::ring::default_provider().install_default();
    let vault = |host: &str, token: &str| {
        VaultClient::new(
            VaultClientSettingsBuilder::default()
                .address(format!("http://{}:8200", lab.address(host)))
                .token(token)
                .verify(false)
                .build()
                .unwrap(),
        )
        .unwrap()
    };
    let api_code = |e: vaultrs::error::ClientError| match e {
        vaultrs::error::ClientError::APIError { code, errors } => (code, errors.join("; ")),
        other => panic!("not an API error: {other}"),
    };
    let rt = tokio::runtime::Runtime::new().unwrap();

    // A new node: init (POST), a share too short (400, not counted), the threshold.
    assert!(lab.ctl("controller2", "vault", "start").status.success());
    rt.block_on(async {
        let c = vault("controller2", "");
        let fresh: serde_json::Value = vaultrs::api::exec_with_no_result(&c, SealStatus)
            .await
            .unwrap();
        assert_eq!(fresh["initialized"], false, "{fresh}");
        let init = vaultrs::sys::start_initialization(&c, 3, 2, None)
            .await
            .unwrap();
        assert_eq!(init.keys.len(), 3);
        let short = vaultrs::sys::unseal(&c, Some("00112233".into()), None, None)
            .await
            .unwrap_err();
        assert_eq!(
            api_code(short),
            (400, "key is shorter than minimum 16 bytes".into())
        );
        let first = vaultrs::sys::unseal(&c, Some(init.keys[0].clone()), None, None)
            .await
            .unwrap();
        assert_eq!(
            (first.sealed, first.progress, first.threshold),
            (true, 1, 2)
        );
        let done = vaultrs::sys::unseal(&c, Some(init.keys[1].clone()), None, None)
            .await
            .unwrap();
        assert!(!done.sealed);
        let health = vaultrs::sys::health(&c).await.unwrap();
        assert!(health.initialized && !health.sealed && !health.standby);
    });
    assert!(lab.ctl("controller2", "vault", "stop").status.success());
    std::fs::remove_dir_all(lab.dir.join("controller2/vault/data")).unwrap();

    // The lab's cluster as vault-raft.rhai leaves it: three raft voters.
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/vault-raft.rhai");
    let grown = lab.harun(&[script.to_str().unwrap()]);
    assert!(
        grown.status.success(),
        "{}",
        String::from_utf8_lossy(&grown.stderr)
    );
    let root = lab.root_token();
    rt.block_on(async {
        let hosts = ["controller1", "controller2", "controller3"];
        let mut active = Vec::new();
        for host in hosts {
            match vaultrs::sys::status(&vault(host, &root)).await.unwrap() {
                vaultrs::sys::ServerStatus::OK => active.push(host),
                vaultrs::sys::ServerStatus::STANDBY => {}
                other => panic!("{host}: {other:?}"),
            }
        }
        assert_eq!(active.len(), 1, "{active:?}");
        let c = vault(active[0], &root);
        let nas: serde_json::Value = vaultrs::kv2::read(&c, "secret", "homelab/nas")
            .await
            .unwrap();
        assert_eq!(nas["password"], "correct-horse-battery");
        let mut listed = vaultrs::kv2::list(&c, "secret", "homelab/").await.unwrap();
        listed.sort();
        assert_eq!(listed, ["grafana", "nas", "wifi"]);
        let written =
            vaultrs::kv2::set(&c, "secret", "conformance", &serde_json::json!({"k": "v"}))
                .await
                .unwrap();
        assert_eq!(written.version, 1);
        for host in hosts {
            // Through a standby too: it forwards to the active node.
            let read: serde_json::Value =
                vaultrs::kv2::read(&vault(host, &root), "secret", "conformance")
                    .await
                    .unwrap();
            assert_eq!(read["k"], "v", "{host}");
            let status: serde_json::Value =
                vaultrs::api::exec_with_no_result(&vault(host, ""), SealStatus)
                    .await
                    .unwrap();
            assert_eq!(
                (status["sealed"].clone(), status["storage_type"].clone()),
                (false.into(), "raft".into()),
                "{host}"
            );
        }
        let leader: serde_json::Value =
            vaultrs::api::exec_with_no_result(&c, Leader).await.unwrap();
        assert_eq!(
            (leader["ha_enabled"].clone(), leader["is_self"].clone()),
            (true.into(), true.into())
        );
        let raft: serde_json::Value = vaultrs::api::exec_with_result(&c, RaftConfiguration)
            .await
            .unwrap();
        let servers = raft["config"]["servers"].as_array().unwrap();
        assert_eq!(servers.len(), 3, "{raft}");
        assert!(servers.iter().all(|s| s["voter"] == true), "{raft}");
        let autopilot: serde_json::Value = vaultrs::api::exec_with_result(&c, AutopilotState)
            .await
            .unwrap();
        assert_eq!(autopilot["healthy"], true, "{autopilot}");
        assert_eq!(autopilot["voters"].as_array().unwrap().len(), 3);
    });

    // Nomad: the leader, the peers, the client node and the seeded jobs.
    rt.block_on(async {
        use nomad_client_rs::{Config, Connection, NomadClient};
        let nomad = NomadClient::new(Config {
            connection: Connection::HttpApi {
                address: format!("http://{}:4646", lab.address("controller1")),
                credential: None,
            },
            ..Default::default()
        })
        .unwrap();
        let leader = nomad.read_leader().await.unwrap();
        assert_eq!(leader, format!("{}:4647", lab.address("controller1")));
        assert_eq!(nomad.list_peers().await.unwrap(), [leader]);
        let nodes = nomad.list_nodes(&Default::default()).await.unwrap();
        assert_eq!(nodes.len(), 1);
        assert_eq!(nodes[0].name.as_deref(), Some("controller1"));
        assert_eq!(nodes[0].status.as_deref(), Some("ready"));
        let mut jobs: Vec<String> = nomad
            .list_jobs(&Default::default())
            .await
            .unwrap()
            .into_iter()
            .filter_map(|j| j.id)
            .collect();
        jobs.sort();
        assert_eq!(jobs, ["backup", "grafana", "traefik"]);
    });
}
