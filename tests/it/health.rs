//! scripts/health.rhai, the monitoring check: its exit status and summary line on the lab
//! in the story's first state, after the HA scripts, with a consul.hcl left at
//! bootstrap_expect = 1, while a node drains, with every Vault node sealed, with Consul
//! short of a majority, and with nothing answering.

use crate::common;

use std::time::Duration;

use common::http::eventually;
use common::lab::{script, Lab};

fn health(lab: &Lab) -> (i32, String) {
    health_with(lab, &[])
}

/// health.rhai with extra options (`--set files=true`): its status and summary line.
fn health_with(lab: &Lab, options: &[&str]) -> (i32, String) {
    let out = lab.harun(&[options, &[script("health.rhai").to_str().unwrap()]].concat());
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .next()
            .unwrap_or("")
            .to_string(),
    )
}

/// health.rhai with another topology than the lab's own, and extra options.
fn health_on(lab: &Lab, topology: &std::path::Path, extra: &[&str]) -> std::process::Output {
    lab.test
        .command()
        .arg("--topology")
        .arg(topology)
        .args(extra)
        .arg(script("health.rhai"))
        .output()
        .unwrap()
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

    // A consul.hcl left at bootstrap_expect = 1 in a three-server cluster is a WARNING:
    // from the file only when files are read (the agent still runs with 3)...
    let lone = "WARNING - consul: bootstrap_expect = 1 on controller3 in a cluster of 3 voters: with an empty data_dir it would bootstrap a cluster of its own";
    lab.set_config("controller3", "consul", |t| {
        t.replace("bootstrap_expect = 3", "bootstrap_expect = 1")
    });
    assert_eq!(health(&lab).0, 0);
    let (status, line) = health_with(&lab, &["--set", "files=true"]);
    assert_eq!(status, 1, "{line}");
    assert!(line.starts_with(lone), "{line}");
    // ... and from the agent's own API once it runs with it (once it is back in the
    // cluster after its restart).
    assert!(lab.ctl("controller3", "consul", "restart").status.success());
    let (status, line) = eventually("the agent's warning", Duration::from_secs(30), || {
        let (status, line) = health(&lab);
        line.starts_with(lone).then_some((status, line))
    });
    assert_eq!(status, 1, "{line}");
    lab.set_config("controller3", "consul", |t| {
        t.replace("bootstrap_expect = 1", "bootstrap_expect = 3")
    });
    assert!(lab.ctl("controller3", "consul", "restart").status.success());
    eventually("health OK again", Duration::from_secs(30), || {
        (health(&lab).0 == 0).then_some(())
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
            "UNKNOWN - no controller answers for consul, nomad, vault: controller1 connection refused, controller2 connection refused, controller3 connection refused".to_string()
        )
    );
}

/// What the story warns about, each set up on an HA lab and then undone: a stale
/// registration at another node's agent, a critical check, a Nomad agent registering
/// through another Consul agent, a Vault retry_join naming one server, a topology address
/// that is another controller's; the Prometheus textfile after a healthy and a degraded
/// run; the cost of each server process; and a host that hangs, named within the deadline.
#[test]
fn health_warns_about_what_the_story_warns_about() {
    let lab = Lab::at_ha(&["--workers", "1"]);
    let default_topology = lab.dir.join("harun.hcl");
    let run_on = |topology: &std::path::Path, extra: &[&str]| {
        let out = health_on(&lab, topology, extra);
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr),
        )
    };
    let run = |extra: &[&str]| run_on(&default_topology, extra);
    let c1 = lab.address("controller1");
    let c2 = lab.address("controller2");

    // Healthy: no warning; the textfile says so; the cost of each process.
    let textfile = lab.test.path("harun.prom");
    let textfile_arg = format!("textfile={}", textfile.display());
    let (status, out) = run(&["--set", &textfile_arg, "--set", "cost=true"]);
    assert_eq!(status, 0, "{out}");
    assert!(out.starts_with("OK - consul: leader, 3 voters; nomad: leader, 3 voters, 4 nodes ready; vault: 1 active, 2 standby, raft\n"), "{out}");
    assert!(out.contains("cost: controller1 consul: "), "{out}");
    let metrics = std::fs::read_to_string(&textfile).unwrap();
    for line in [
        "# TYPE harun_health_status gauge",
        "harun_health_status{check=\"consul\"} 0",
        "harun_health_status{check=\"practice\"} 0",
        "harun_cluster_voters{service=\"consul\"} 3",
        "harun_cluster_leader{service=\"vault\"} 1",
        "harun_cluster_failure_tolerance{service=\"nomad\"} 1",
        "harun_vault_sealed_nodes 0",
    ] {
        assert!(metrics.lines().any(|l| l == line), "{line} in\n{metrics}");
    }
    assert!(
        metrics.contains("harun_process_resident_bytes{host=\"controller2\",service=\"vault\"} ")
    );

    let warned = |expected: &str, extra: &[&str]| {
        let (status, out) = run(extra);
        assert_eq!(status, 1, "{out}");
        assert!(
            out.starts_with("WARNING - ") && out.contains(expected),
            "{expected}\n{out}"
        );
    };

    // The story's stale registration: controller2's vault, at controller1's agent.
    let register =
        format!("{{\"ID\":\"vault-stale\",\"Name\":\"vault\",\"Address\":\"{c2}\",\"Port\":8200}}");
    let r = common::http::put(
        &lab.consul("controller1", "/v1/agent/service/register"),
        &register,
    );
    assert_eq!(r.status, 200, "{}", r.body);
    warned(
        &format!("consul: vault of {c2} is registered at controller1's agent, not its own"),
        &[],
    );
    warned(
        &format!("consul: vault at {c2}:8200 is registered 2 times"),
        &[],
    );
    common::http::put(
        &lab.consul("controller1", "/v1/agent/service/deregister/vault-stale"),
        "",
    );

    // A critical check.
    let check = "{\"ID\":\"disk\",\"Name\":\"disk\",\"TTL\":\"30s\"}";
    common::http::put(
        &lab.consul("controller2", "/v1/agent/check/register"),
        check,
    );
    common::http::put(&lab.consul("controller2", "/v1/agent/check/fail/disk"), "");
    warned("consul: disk critical on controller2", &[]);
    common::http::put(
        &lab.consul("controller2", "/v1/agent/check/deregister/disk"),
        "",
    );

    // Restarts worker1's Nomad agent and waits until health sees it again.
    let restart_worker = || {
        assert!(lab.ctl("worker1", "nomad", "restart").status.success());
        eventually("worker1's agent back", Duration::from_secs(30), || {
            let url = format!("http://{}:4646/v1/agent/self", lab.address("worker1"));
            common::http::request("GET", &url, "")
                .ok()
                .filter(|r| r.status == 200)
        });
    };

    // A Nomad agent registering through a name for every Consul server: in its file, seen
    // only when files are read (the running agent still has its own)...
    let own = format!("address = \"{}:8500\"", lab.address("worker1"));
    let shared = "address = \"consul.service.consul:8500\"";
    lab.set_config("worker1", "nomad", |t| t.replace(&own, shared));
    assert_eq!(run(&[]).0, 0);
    warned("worker1: ", &["--set", "files=true"]);
    let (_, out) = run(&["--set", "files=true"]);
    assert!(out.contains("nomad.hcl registers through the Consul agent at consul.service.consul:8500, not its own"), "{out}");
    // ... and through another host's agent, once the agent runs with it: from its API.
    let other = format!("address = \"{c1}:8500\"");
    lab.set_config("worker1", "nomad", |t| t.replace(shared, &other));
    restart_worker();
    let (status, out) = run(&[]);
    assert_eq!(status, 1, "{out}");
    assert!(out.contains(&format!("worker1: {}/worker1/nomad.hcl registers through the Consul agent at {c1}:8500, not its own", lab.dir.display())), "{out}");
    lab.set_config("worker1", "nomad", |t| t.replace(&other, &own));
    restart_worker();
    // What it registered at controller1's agent stays there (the story's stale entry).
    let at_c1 = common::http::get(&lab.consul("controller1", "/v1/agent/services")).json();
    for (id, service) in at_c1.as_object().unwrap() {
        if service["Service"] == "nomad-client" {
            let gone = common::http::put(
                &lab.consul("controller1", &format!("/v1/agent/service/deregister/{id}")),
                "",
            );
            assert_eq!(gone.status, 200, "{}", gone.body);
        }
    }

    // A Nomad client that names one server where every server (or Consul) belongs, as its
    // agent loaded it.
    let one = format!("enabled = true\n  servers = [\"{c1}:4647\"]");
    lab.set_config("worker1", "nomad", |t| {
        t.replacen("enabled = true", &one, 1)
    });
    restart_worker();
    let (status, out) = run(&[]);
    assert_eq!(status, 1, "{out}");
    assert!(
        out.contains("worker1: ")
            && out.contains(&format!(
                "nomad.hcl client.servers names one server ({c1}:4647): list every server, or let Consul find them"
            )),
        "{out}"
    );
    lab.set_config("worker1", "nomad", |t| {
        t.replacen(&one, "enabled = true", 1)
    });
    restart_worker();
    eventually("health OK again", Duration::from_secs(30), || {
        (run(&[]).0 == 0).then_some(())
    });

    // A Vault retry_join that names one server.
    let vault_hcl = lab.dir.join("controller3/vault.hcl");
    let original = std::fs::read_to_string(&vault_hcl).unwrap();
    let edit = format!(
        "let p = {:?}; let t = local::read(p); let r = hcl::parse(t).storage.raft; r.retry_join = [r.retry_join[0]]; let d = hcl::edit(t); d.set_block(\"storage[raft]\", r); local::write(p, d.to_string());",
        vault_hcl.display().to_string()
    );
    assert!(lab.harun(&["-e", &edit]).status.success());
    // Only the file tells: Vault's API shows no retry_join.
    assert_eq!(run(&[]).0, 0);
    warned("controller3: ", &["--set", "files=true"]);
    let (_, out) = run(&["--set", "files=true"]);
    assert!(out.contains("vault.hcl has one retry_join"), "{out}");
    std::fs::write(&vault_hcl, original).unwrap();

    // A topology whose controller2 talks to controller1's Consul agent.
    let topology = std::fs::read_to_string(lab.dir.join("harun.hcl")).unwrap();
    let wrong = lab.test.path("wrong.hcl");
    std::fs::write(
        &wrong,
        topology.replace(
            "host \"controller2\" {",
            &format!(
                "host \"controller2\" {{\n  consul {{\n    address = \"http://{c1}:8500\"\n  }}"
            ),
        ),
    )
    .unwrap();
    let (status, out) = run_on(&wrong, &[]);
    assert_eq!(status, 1, "{out}");
    assert!(
        out.contains(&format!(
            "topology: controller2's consul address http://{c1}:8500 is controller1's"
        )),
        "{out}"
    );

    // Degraded: controller3's Vault stopped; the textfile says so.
    assert!(lab.ctl("controller3", "vault", "stop").status.success());
    let (status, out) = run(&["--set", &textfile_arg]);
    assert_eq!(status, 1, "{out}");
    assert!(out.contains("vault: no answer from controller3"), "{out}");
    let metrics = std::fs::read_to_string(&textfile).unwrap();
    for line in [
        "harun_health_status{check=\"vault\"} 1",
        "harun_health_status{check=\"consul\"} 0",
        "harun_cluster_failure_tolerance{service=\"vault\"} 0",
    ] {
        assert!(metrics.lines().any(|l| l == line), "{line} in\n{metrics}");
    }
    assert!(lab.ctl("controller3", "vault", "start").status.success());

    // A host that accepts connections and never answers: named, within the deadline.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in listener.incoming().flatten() {
            held.push(stream);
        }
    });
    let hung = lab.test.path("hung.hcl");
    let url = format!("http://127.0.0.1:{port}");
    std::fs::write(
        &hung,
        topology.replace(
            "host \"controller3\" {",
            &format!("host \"controller3\" {{\n  consul {{\n    address = \"{url}\"\n  }}\n  nomad {{\n    address = \"{url}\"\n  }}\n  vault {{\n    address = \"{url}\"\n  }}"),
        ),
    )
    .unwrap();
    // Had a call waited on the hung controller without its timeout, the run's own
    // deadline would end it (exit 3, harun::deadline) instead of this WARNING.
    let (status, out) = run_on(&hung, &["--timeout", "60s"]);
    assert_eq!(status, 1, "{out}");
    assert!(
        out.contains("consul: no answer from controller3")
            && out.contains("vault: no answer from controller3"),
        "{out}"
    );
}

/// The default health run opens no SSH connection: with every host reached over SSH (to a
/// port that counts the connections it gets), it gives the same verdict as with the local
/// transport, and the port gets none; nor does a backup; `--set files=true` is what
/// connects.
#[test]
fn a_default_health_run_opens_no_ssh_connection() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let lab = Lab::at_ha(&["--workers", "1"]);
    let listener = std::net::TcpListener::bind("0.0.0.0:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let connections = std::sync::Arc::new(AtomicUsize::new(0));
    let counted = connections.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            counted.fetch_add(1, Ordering::SeqCst);
            drop(stream);
        }
    });
    let topology = std::fs::read_to_string(lab.dir.join("harun.hcl")).unwrap();
    let over_ssh = lab.test.path("over-ssh.hcl");
    let replaced = topology.replace(
        "  transport       = \"local\"\n",
        &format!("  transport       = \"ssh\"\n  ssh_port        = {port}\n  ssh_config      = \"/dev/null\"\n  connect_timeout = \"2s\"\n"),
    );
    assert_ne!(replaced, topology);
    std::fs::write(&over_ssh, replaced).unwrap();
    let run = |topology: &std::path::Path, extra: &[&str]| {
        let out = health_on(&lab, topology, extra);
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .next()
                .unwrap_or("")
                .to_string(),
        )
    };
    let local = run(&lab.dir.join("harun.hcl"), &[]);
    assert_eq!(
        local,
        (
            Some(0),
            "OK - consul: leader, 3 voters; nomad: leader, 3 voters, 4 nodes ready; vault: 1 active, 2 standby, raft".to_string()
        )
    );
    assert_eq!(run(&over_ssh, &[]), local);
    assert_eq!(
        connections.load(Ordering::SeqCst),
        0,
        "the default run connected"
    );
    // backup.rhai, the other script a timer runs, connects to no host either.
    let backups = lab.test.path("backups");
    let backup = lab
        .test
        .command()
        .arg("--topology")
        .arg(&over_ssh)
        .args(["--set", &format!("dir={}", backups.display())])
        .arg(script("backup.rhai"))
        .output()
        .unwrap();
    assert_eq!(
        backup.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&backup.stdout)
    );
    assert_eq!(std::fs::read_dir(&backups).unwrap().count(), 3);
    assert_eq!(
        connections.load(Ordering::SeqCst),
        0,
        "the backup connected"
    );
    // The counting port does count: reading the files connects.
    run(&over_ssh, &["--set", "files=true"]);
    assert!(connections.load(Ordering::SeqCst) > 0);
}
