//! scripts/consul-ha.rhai end to end: over real SSH (sshd on three loopback aliases) against
//! real Consul 1.8.7 servers started and stopped by a service-manager command template, from
//! one server holding KV data to three servers; then again, changing nothing. Also the
//! consul module's refusals and errors.

use crate::common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::http::{eventually, get, put};
use common::lab::{leader, Lab};
use common::sshd::{SshLab, USER};
use common::Test;

/// Real Consul servers on the SSH hosts' addresses, owned by the SSH user, controlled by a
/// small script the topology names as its service manager.
struct RealConsul {
    dir: PathBuf,
    hosts: Vec<(String, String)>,
}

const CTL: &str = r#"#!/bin/sh
# consulctl NAME SERVICE ACTION: the test's service manager for real Consul servers.
dir="$(dirname "$0")/$1"
pidfile="$dir/consul.pid"
alive() { [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; }
case "$3" in
  start)
    alive && exit 0
    setsid consul agent -config-file="$dir/consul.hcl" >>"$dir/consul.log" 2>&1 </dev/null &
    echo $! >"$pidfile" ;;
  stop)
    alive || exit 0
    kill "$(cat "$pidfile")"
    for i in $(seq 100); do alive || exit 0; sleep 0.1; done
    kill -9 "$(cat "$pidfile")" ;;
  restart) sh "$0" "$1" "$2" stop && sh "$0" "$1" "$2" start ;;
  status) alive || exit 3 ;;
esac
"#;

impl RealConsul {
    /// Three voters as Consul itself tells it, through every server, and every KV entry of
    /// `data` read through the third.
    fn assert_three_voters_with(&self, data: &[(&str, &str)]) {
        for i in 0..3 {
            let config = get(&self.url(i, "/v1/operator/raft/configuration")).json();
            assert_eq!(voters(&config), 3, "host{}: {config}", i + 1);
        }
        for (key, value) in data {
            assert_eq!(get(&self.url(2, &format!("/v1/kv/{key}?raw"))).body, *value);
        }
    }

    fn new(lab: &SshLab) -> RealConsul {
        let found = Command::new("consul").arg("version").output();
        assert!(
            found.is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("v1.8.7")),
            "real Consul 1.8.7 is missing: run tests/setup"
        );
        let dir = PathBuf::from(format!("/tmp/harun-consul-ha-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let hosts: Vec<(String, String)> = lab
            .hosts
            .iter()
            .map(|h| (h.name.clone(), h.address.clone()))
            .collect();
        for (name, address) in &hosts {
            let host_dir = dir.join(name);
            std::fs::create_dir_all(host_dir.join("data")).unwrap();
            std::fs::write(
                host_dir.join("consul.hcl"),
                format!(
                    "# Consul on {name}: the story's single server.\ndatacenter = \"homelab\"\ndata_dir   = \"{}\"\nnode_name  = \"{name}\"\n\nserver           = true\nbootstrap_expect = 1\n\nbind_addr   = \"{address}\"\nclient_addr = \"{address}\"\nlog_level   = \"warn\"\n",
                    host_dir.join("data").display()
                ),
            )
            .unwrap();
        }
        std::fs::write(dir.join("consulctl"), CTL).unwrap();
        let status = Command::new("chown")
            .args(["-R", &format!("{USER}:{USER}")])
            .arg(&dir)
            .status()
            .unwrap();
        assert!(status.success());
        RealConsul { dir, hosts }
    }

    fn ctl(&self, name: &str, action: &str) {
        let status = Command::new("runuser")
            .args(["-u", USER, "--", "sh"])
            .arg(self.dir.join("consulctl"))
            .args([name, "consul", action])
            .status()
            .unwrap();
        assert!(status.success(), "consulctl {name} {action}");
    }

    fn url(&self, i: usize, path: &str) -> String {
        format!("http://{}:8500{path}", self.hosts[i].1)
    }

    fn topology_defaults(&self) -> String {
        format!(
            "  service_manager = \"sh {}/consulctl {{name}} {{service}} {{action}}\"",
            self.dir.display()
        )
    }

    fn consul_block(&self) -> String {
        format!(
            "consul {{\n  address     = \"http://{{address}}:8500\"\n  config_file = \"{}/{{name}}/consul.hcl\"\n  dns_address = \"{{address}}:8600\"\n}}\n",
            self.dir.display()
        )
    }
}

impl Drop for RealConsul {
    fn drop(&mut self) {
        for (name, _) in self.hosts.clone() {
            let _ = Command::new("runuser")
                .args(["-u", USER, "--", "sh"])
                .arg(self.dir.join("consulctl"))
                .args([&name, "consul", "stop"])
                .status();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn voters(config: &serde_json::Value) -> usize {
    config["Servers"]
        .as_array()
        .map(|s| s.iter().filter(|x| x["Voter"] == true).count())
        .unwrap_or(0)
}

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/consul-ha.rhai")
}

#[test]
fn consul_ha_grows_real_consul_from_one_server_to_three_over_ssh() {
    let lab = SshLab::start(3);
    let consul = RealConsul::new(&lab);
    consul.ctl("host1", "start");
    eventually("a leader on host1", Duration::from_secs(30), || {
        // A leader's address, not "" or an error's text.
        common::lab::leader(&consul.url(0, "/v1/status/leader")).map(|_| ())
    });
    let data = [
        ("homelab/dns/zone", "home.arpa"),
        ("homelab/backup/schedule", "0 3 * * *"),
        ("homelab/nomad/datacenter", "homelab"),
    ];
    for (key, value) in data {
        assert_eq!(
            put(&consul.url(0, &format!("/v1/kv/{key}")), value)
                .body
                .trim(),
            "true"
        );
    }
    let topology = lab.topology(&consul.topology_defaults()) + &consul.consul_block();
    let mut t = Test::new().file("harun.hcl", &topology);

    // A dry run shows the plan and changes nothing.
    let plan = t
        .run_with(&["--dry-run", script().to_str().unwrap()])
        .status(0);
    assert!(plan.stdout.contains("+retry_join = ["), "{}", plan.stdout);
    assert!(
        plan.stdout.contains("[service] host2: start consul"),
        "{}",
        plan.stdout
    );
    assert!(std::fs::read_to_string(consul.dir.join("host2/consul.hcl"))
        .unwrap()
        .contains("bootstrap_expect = 1"));

    let run = t.run_with(&["--set", "timeout=90", script().to_str().unwrap()]);
    assert_eq!(run.status, 0, "{}\n{}", run.stdout, run.stderr);
    assert!(
        run.stdout
            .starts_with("OK - consul: 3 servers, 3 voters, leader "),
        "{}",
        run.stdout
    );
    // The cluster as Consul itself tells it, through every server.
    consul.assert_three_voters_with(&data);
    // Configs edited in place, comments kept, a backup beside each.
    let text = std::fs::read_to_string(consul.dir.join("host1/consul.hcl")).unwrap();
    assert!(
        text.starts_with("# Consul on host1: the story's single server.\n"),
        "{text}"
    );
    assert!(text.contains("bootstrap_expect = 3"), "{text}");
    let backups = std::fs::read_dir(consul.dir.join("host1"))
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().contains(".bak"))
        .count();
    assert_eq!(backups, 1);

    // DNS through one server's port 8600 lists all three.
    let dns = t.run_with(&[
        "-e",
        "let r = consul::dns_check(host(\"host2\"), \"consul\", host(\"host2\").address + \":8600\"); print(`${r.ok} ${r.dns.len()} ${r.catalog.len()}`)",
    ]);
    assert_eq!(dns.stdout, "true 3 3\n", "{}", dns.stderr);

    // Again: nothing to change.
    let again = t.run_with(&[script().to_str().unwrap()]);
    assert_eq!(again.status, 0, "{}\n{}", again.stdout, again.stderr);
    assert!(
        again
            .stdout
            .starts_with("OK - nothing to change: 3 consul servers, 3 voters"),
        "{}",
        again.stdout
    );

    // health.rhai on real Consul with a follower down: DNS (the consul block's
    // dns_address) answers fewer consul servers than the catalog holds.
    let leader = common::http::request("GET", &consul.url(0, "/v1/status/leader"), "")
        .unwrap()
        .body;
    let (down, _) = consul
        .hosts
        .iter()
        .rev()
        .find(|(_, address)| !leader.contains(&format!("\"{address}:")))
        .cloned()
        .unwrap();
    consul.ctl(&down, "stop");
    let health = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/health.rhai");
    let warned = eventually("DNS short of a server", Duration::from_secs(40), || {
        let out = t.run_with(&["--set", "services=consul", health.to_str().unwrap()]);
        (out.status == 1
            && out
                .stdout
                .contains("answers 2 of 3 consul servers for consul.service.consul"))
        .then_some(out)
    });
    assert!(
        warned
            .stdout
            .starts_with(&format!("WARNING - consul: no answer from {down}")),
        "{}",
        warned.stdout
    );
    consul.ctl(&down, "start");
    eventually("three voters again", Duration::from_secs(40), || {
        let out = t.run_with(&["--set", "services=consul", health.to_str().unwrap()]);
        (out.status == 0).then_some(())
    });

    // `harun init` writes a topology from what one server answers, and health.rhai runs
    // with it as written (this cluster runs only Consul).
    let init = t.run_with(&["init", &consul.hosts[0].1, "--output", "init.hcl"]);
    assert_eq!(init.status, 0, "{}\n{}", init.stdout, init.stderr);
    assert!(
        init.stdout
            .starts_with("init.hcl: 3 controllers, 0 workers"),
        "{}",
        init.stdout
    );
    let written = std::fs::read_to_string(t.path("init.hcl")).unwrap();
    for (name, address) in &consul.hosts {
        assert!(
            written.contains(&format!(
                "host \"{name}\" {{\n  address = \"{address}\"\n  roles   = [\"controller\"]"
            )),
            "{written}"
        );
    }
    let from_init = t.run_with(&[
        "--topology",
        "init.hcl",
        "--set",
        "services=consul",
        health.to_str().unwrap(),
    ]);
    assert_eq!(
        from_init.status, 0,
        "{}\n{}",
        from_init.stdout, from_init.stderr
    );
    assert!(
        from_init
            .stdout
            .starts_with("OK - consul: leader, 3 voters"),
        "{}",
        from_init.stdout
    );

    // backup.rhai saves real Consul's snapshot and passes its check; restore.rhai puts it
    // back: a key written after the snapshot is gone, the earlier ones are there.
    let backup_script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/backup.rhai");
    let backup = t.run_with(&[
        "--set",
        "services=consul",
        "--set",
        "dir=backups",
        backup_script.to_str().unwrap(),
    ]);
    assert_eq!(backup.status, 0, "{}\n{}", backup.stdout, backup.stderr);
    let file = std::fs::read_dir(t.path("backups"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().to_string())
        .find(|n| n.starts_with("consul-"))
        .expect("a consul snapshot");
    assert_eq!(
        put(&consul.url(0, "/v1/kv/homelab/after-backup"), "x")
            .body
            .trim(),
        "true"
    );
    let restore_script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/restore.rhai");
    let restored = t.run_with(&[
        "--yes",
        "--set",
        &format!("file=backups/{file}"),
        restore_script.to_str().unwrap(),
    ]);
    assert_eq!(
        restored.status, 0,
        "{}\n{}",
        restored.stdout, restored.stderr
    );
    eventually(
        "the key written after the snapshot gone",
        Duration::from_secs(20),
        || {
            let r = common::http::request("GET", &consul.url(0, "/v1/kv/homelab/after-backup"), "")
                .ok()?;
            (r.status == 404).then_some(())
        },
    );
    consul.assert_three_voters_with(&data);

    // A cold start with one server of three: real Consul elects no leader, whatever
    // bootstrap_expect says; consul-recover.rhai's peers.json brings it back with its
    // data, and consul-ha.rhai grows it to three again.
    consul.ctl("host2", "stop");
    consul.ctl("host3", "stop");
    consul.ctl("host1", "restart");
    // Not a wait for time to pass: host1 has stood for election (and lost) once its raft
    // state is Candidate, the moment a wrong bootstrap would have made it leader.
    eventually(
        "host1 standing for election",
        Duration::from_secs(30),
        || {
            let r = common::http::request("GET", &consul.url(0, "/v1/agent/self"), "").ok()?;
            (r.json()["Stats"]["raft"]["state"] == "Candidate").then_some(())
        },
    );
    let leader_of_host1 = || {
        common::http::request("GET", &consul.url(0, "/v1/status/leader"), "")
            .map(|r| r.body.trim().trim_matches('"').to_string())
            .unwrap_or_default()
    };
    assert_eq!(leader_of_host1(), "", "one server of three must not lead");
    let recover = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/consul-recover.rhai");
    let recovered = t.run_with(&["--yes", "--set", "timeout=90", recover.to_str().unwrap()]);
    assert_eq!(
        recovered.status,
        0,
        "{}\n{}\n{}",
        recovered.stdout,
        recovered.stderr,
        std::fs::read_to_string(consul.dir.join("host1/consul.log")).unwrap_or_default()
    );
    assert!(
        recovered
            .stdout
            .starts_with("OK - consul recovered: leader "),
        "{}",
        recovered.stdout
    );
    assert!(!consul.dir.join("host1/data/raft/peers.json").exists());
    let regrown = t.run_with(&["--set", "timeout=90", script().to_str().unwrap()]);
    assert_eq!(regrown.status, 0, "{}\n{}", regrown.stdout, regrown.stderr);
    consul.assert_three_voters_with(&data);
}

#[test]
fn consul_ha_passes_in_the_lab() {
    let t = Test::new().args(["--lab", script().to_str().unwrap()]);
    let out = t.run();
    assert_eq!(out.status, 0, "{}\n{}", out.stdout, out.stderr);
    assert!(
        out.stdout.starts_with("OK - consul: 3 servers, 3 voters"),
        "{}",
        out.stdout
    );
    // The way back, taken before the first change and named in the summary.
    // It is the lab's (gone with it): nothing is left in the working directory.
    let snapshot = common::snapshot_named(&out.stdout);
    assert!(
        snapshot.starts_with(&format!("{}/harun-lab-", std::env::temp_dir().display()))
            && snapshot.contains("/snapshots/consul-"),
        "{}",
        out.stdout
    );
    assert!(!t.path("harun-snapshots").exists());
}

/// The story's own configuration: Consul's API on HTTPS 8501 only, ACLs on with the token
/// in a file, a worker's client agent too.
#[test]
fn consul_ha_passes_in_the_story_configuration() {
    let out = Test::new()
        .env("HARUN_LAB_STORY", "true")
        .env("HARUN_LAB_WORKERS", "1")
        .args(["--lab", script().to_str().unwrap()])
        .run();
    assert_eq!(out.status, 0, "{}\n{}", out.stdout, out.stderr);
    assert!(
        out.stdout.starts_with("OK - consul: 3 servers, 3 voters"),
        "{}",
        out.stdout
    );
}

/// A worker's Consul client agent gets every server in retry_join and keeps its leader;
/// it is not counted as a server.
#[test]
fn consul_ha_gives_client_agents_every_server() {
    let lab = Lab::up_with(&["--workers", "1"]);
    let out = lab.harun(&[script().to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(
        stdout.starts_with("OK - consul: 3 servers, 3 voters")
            && stdout.contains("configs changed on 4, started 2"),
        "{stdout}"
    );
    let config = std::fs::read_to_string(lab.dir.join("worker1/consul.hcl")).unwrap();
    let joins: Vec<String> = ["controller1", "controller2", "controller3"]
        .iter()
        .map(|h| format!("\"{}\"", lab.address(h)))
        .collect();
    assert!(
        config.contains(&format!("retry_join = [{}]", joins.join(", "))),
        "{config}"
    );
    assert!(config.contains("server     = false"), "{config}");
    let leader = common::lab::leader(&lab.consul("worker1", "/v1/status/leader"));
    assert!(
        leader.as_deref().is_some_and(|l| l.ends_with(":8300")),
        "worker1's agent knows no leader: {leader:?}"
    );
    let again = lab.harun(&[script().to_str().unwrap()]);
    assert!(
        String::from_utf8_lossy(&again.stdout).starts_with("OK - nothing to change"),
        "{}",
        String::from_utf8_lossy(&again.stdout)
    );
}

#[test]
fn registering_through_a_name_for_every_server_is_refused() {
    let topology = "host \"controller1\" {\n  address = \"10.0.0.11\"\n  transport = \"local\"\n  consul { address = \"http://consul.service.consul:8500\" }\n}\n";
    let out = Test::new()
        .file("harun.hcl", topology)
        .args([
            "-e",
            "consul::register(host(\"controller1\"), #{ID: \"vault\", Name: \"vault\", Port: 8200})",
        ])
        .run()
        .status(3);
    assert!(
        out.stderr.contains("harun::consul::not_local_agent"),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("stale entry"), "{}", out.stderr);
}

#[test]
fn a_wrong_token_shows_consuls_403() {
    let lab = Lab::up();
    // Turn ACLs on for controller1's agent.
    lab.set_config("controller1", "consul", |t| {
        t + "\nacl {\n  enabled = true\n  default_policy = \"deny\"\n  tokens {\n    initial_management = \"d6c2ab12-0b71-4e8f-a1c5-7f3e5f6f0a01\"\n  }\n}\n"
    });
    assert!(lab.ctl("controller1", "consul", "restart").status.success());
    let token = lab.dir.join("wrong-token");
    std::fs::write(&token, "00000000-0000-0000-0000-000000000000\n").unwrap();
    std::fs::set_permissions(&token, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let topology = std::fs::read_to_string(lab.dir.join("harun.hcl"))
        .unwrap()
        .replace(
            "  data_dir    = ",
            &format!("  token_file  = \"{}\"\n  data_dir    = ", token.display()),
        );
    let out = Test::new()
        .file("harun.hcl", &topology)
        .args(["-e", "consul::kv_put(host(\"controller1\"), \"a\", \"b\")"])
        .run()
        .status(3);
    assert!(
        out.stderr.contains("harun::consul::forbidden"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("answered 403: ACL not found"),
        "{}",
        out.stderr
    );
    assert!(
        !out.stderr.contains("00000000-0000"),
        "the token leaked: {}",
        out.stderr
    );
}

#[test]
fn a_server_that_never_comes_up_fails_the_wait_in_time() {
    let lab = Lab::up();
    // Had the wait ignored its 2 s, the run's own deadline would end it (harun::deadline).
    let out = Test::new()
        .args(["--topology"])
        .args([lab.dir.join("harun.hcl").to_str().unwrap()])
        .args(["--timeout", "60s"])
        .args(["-e", "consul::wait_servers(host(\"controller1\"), 3, 2.0)"])
        .run()
        .status(3);
    assert!(
        out.stderr.contains("harun::consul::timeout"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains(
            "timed out after 2s waiting for 3 alive consul servers (asking controller1) (1 alive)"
        ),
        "{}",
        out.stderr
    );
}

#[test]
fn the_consul_module_on_the_lab() {
    let lab = Lab::up();
    let out = Test::new()
        .args(["--topology", lab.dir.join("harun.hcl").to_str().unwrap()])
        .args([
            "-e",
            r#"
let c1 = host("controller1");
print(consul::kv_get(c1, "homelab/dns/zone"));
print(consul::kv_get(c1, "homelab/nothing") == ());
print(consul::kv_put(c1, "homelab/new", "1", 0));
print(consul::kv_put(c1, "homelab/new", "2", 0));
print(consul::kv_list(c1, "homelab/").len());
print(consul::kv_delete(c1, "homelab/new"));
let id = consul::session_create(c1, #{Name: "t", TTL: "30s"});
print(consul::sessions(c1).len());
consul::session_destroy(c1, id);
print(consul::lock(c1, "harun/t", || 42));
consul::register(c1, #{ID: "web1", Name: "web", Port: 80});
print(consul::agent_services(c1).web1.Service);
try { consul::deregister(c1, "web2") } catch (e) { print(e.code) }
consul::deregister(c1, "web1");
print(consul::agent_services(c1).keys().contains("web1"));
"#,
        ])
        .run()
        .status(0);
    assert_eq!(
        out.stdout,
        "home.arpa\ntrue\ntrue\nfalse\n4\ntrue\n1\n42\nweb\nharun::consul::not_found\nfalse\n"
    );
}

/// The cold start the story gets wrong: with one server of three left, no leader comes
/// back whatever bootstrap_expect says. consul-recover.rhai asks first, then makes the
/// survivor the whole cluster through raft's peers.json, keeping its data, and sets the
/// others' raft data aside so that consul-ha.rhai brings them back fresh.
#[test]
fn a_lone_survivor_is_recovered_with_peers_json_and_grown_again() {
    let lab = Lab::up();
    let recover = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/consul-recover.rhai");
    let recover = recover.to_str().unwrap();
    assert!(lab.harun(&[script().to_str().unwrap()]).status.success());
    for host in ["controller2", "controller3"] {
        assert!(lab.ctl(host, "consul", "stop").status.success());
    }
    assert!(lab.ctl("controller1", "consul", "restart").status.success());
    let no_leader = || leader(&lab.consul("controller1", "/v1/status/leader")).is_none();
    assert!(no_leader());
    let stdout = |out: &std::process::Output| String::from_utf8_lossy(&out.stdout).to_string();

    // Without --yes and without a terminal, the destructive step is refused.
    let refused = lab.harun(&[recover]);
    assert_eq!(refused.status.code(), Some(3), "{}", stdout(&refused));
    let why = String::from_utf8_lossy(&refused.stderr);
    assert!(why.contains("error[harun::confirm::refused]"), "{why}");
    assert!(no_leader());
    let peers = lab.dir.join("controller1/consul/raft/peers.json");
    assert!(!peers.exists());
    // A dry run plans the peers.json and changes nothing.
    let plan = lab.harun(&["--dry-run", recover]);
    assert!(plan.status.success());
    assert!(stdout(&plan).contains("peers.json"), "{}", stdout(&plan));
    assert!(!peers.exists() && no_leader());

    let out = lab.harun(&["--yes", recover]);
    assert!(out.status.success(), "{}", stdout(&out));
    assert!(
        stdout(&out).starts_with(&format!(
            "OK - consul recovered: leader {}:8300, 1 voter(s) (controller1); KV keys: 4; the raft data of controller2, controller3 was set aside",
            lab.address("controller1")
        )),
        "{}",
        stdout(&out)
    );
    assert!(!peers.exists(), "consul deletes peers.json once read");
    for host in ["controller2", "controller3"] {
        let kept: Vec<String> = std::fs::read_dir(lab.dir.join(host))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
            .collect();
        assert!(
            kept.iter()
                .any(|n| n.starts_with("consul.harun-recovered-"))
                && !kept.contains(&"consul".to_string()),
            "{kept:?}"
        );
    }
    // Grown again: every server, every KV entry.
    let grown = lab.harun(&[script().to_str().unwrap()]);
    assert!(
        stdout(&grown).starts_with("OK - consul: 3 servers, 3 voters"),
        "{}",
        stdout(&grown)
    );
    let keys = get(&lab.consul("controller3", "/v1/kv/homelab/?keys")).json();
    assert_eq!(keys.as_array().unwrap().len(), 3, "{keys}");
    let again = lab.harun(&[recover]);
    assert!(
        stdout(&again).starts_with("OK - consul has a leader"),
        "{}",
        stdout(&again)
    );
}

/// A client host that cannot be reached does not stop the Consul step once the servers
/// have grown: it is named in a WARNING with what to give it.
#[test]
fn an_unreachable_client_host_is_reported_not_fatal() {
    let lab = Lab::up();
    let topology = lab.dir.join("harun.hcl");
    let mut text = std::fs::read_to_string(&topology).unwrap();
    text.push_str("host \"gone\" {\n  address         = \"127.0.0.1\"\n  transport       = \"ssh\"\n  ssh_port        = 1\n  connect_timeout = \"1s\"\n  roles           = [\"worker\"]\n}\n");
    std::fs::write(&topology, text).unwrap();
    let out = lab.harun(&[script().to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.starts_with(
            "WARNING - consul client agents not updated on [\"gone\"]: give them retry_join = "
        ) && stdout.contains("consul: 3 servers, 3 voters"),
        "{stdout}"
    );
}

/// A script that holds the changing scripts' lock across a wait longer than the lock's
/// session TTL (10 s), then makes a change.
const HOLDER: &str = r#"
consul::lock(host("controller1"), "harun/consul-ha", || {
    local::run("sleep 18");
    local::write("after-the-wait", "done\n");
    print("still held");
});
"#;

/// The lock is held as long as the run lives (its session renewed past its TTL), and a
/// second run meanwhile is refused with the holder's name; after a `kill -9` the next run
/// says the holder is gone and takes the lock over when asked (`--yes`).
#[test]
fn the_lock_outlives_its_ttl_and_a_dead_holders_lock_is_taken_over_when_asked() {
    let lab = Lab::up();
    let t = Test::new().file("hold.rhai", HOLDER);
    let script = t.path("hold.rhai");
    let run = |extra: &[&str]| {
        let mut cmd = t.command();
        cmd.arg("--topology")
            .arg(lab.dir.join("harun.hcl"))
            .args(extra)
            .arg(&script)
            .current_dir(t.path(""));
        cmd
    };
    let first = run(&[])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(12));
    let second = run(&[]).output().unwrap();
    assert_eq!(second.status.code(), Some(3));
    let refused = String::from_utf8_lossy(&second.stderr);
    assert!(
        refused.contains(&format!(
            "the consul lock harun/consul-ha is held by a run of {} (pid {}",
            script.display(),
            first.id()
        )),
        "{refused}"
    );
    assert!(refused.contains("lapses within 21 s"), "{refused}");
    let out = first.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "still held\n");
    assert!(t.path("after-the-wait").exists());

    // kill -9 while holding it: the next run names the dead holder; --yes takes it over.
    std::fs::remove_file(t.path("after-the-wait")).unwrap();
    let mut victim = run(&[]).spawn().unwrap();
    common::http::eventually("the lock taken", Duration::from_secs(10), || {
        let r = common::http::get(&lab.consul("controller1", "/v1/kv/harun/consul-ha"));
        (r.status == 200 && r.json()[0]["Session"].is_string()).then_some(())
    });
    victim.kill().unwrap();
    victim.wait().unwrap();
    let refused = run(&[]).output().unwrap();
    assert_eq!(refused.status.code(), Some(3));
    let message = String::from_utf8_lossy(&refused.stderr);
    assert!(
        message
            .contains("which no longer runs on this machine; run again with --yes to take it over"),
        "{message}"
    );
    let audit = t.path("takeover-audit.log");
    let taken = run(&["--yes", "--audit-log", audit.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        taken.status.success(),
        "{}",
        String::from_utf8_lossy(&taken.stderr)
    );
    // Taken over by destroying the dead run's session, not by waiting for it to lapse.
    let audited = std::fs::read_to_string(&audit).unwrap();
    assert!(
        audited.contains(&format!(
            "consul: take the lock harun/consul-ha over from dead pid {}: destroy its session, then take the lock",
            victim.id()
        )),
        "{audited}"
    );
    assert!(t.path("after-the-wait").exists());
}

/// A script that takes the changing scripts' lock, waits for a go-ahead file (so the test
/// decides when its change comes), then makes one change.
const WAITER: &str = r#"
consul::lock(host("controller1"), "harun/consul-ha", || {
    wait_until("the go-ahead", 120.0, 0.1, || local::exists("go"));
    local::write("after", "done\n");
});
"#;

/// `WAITER` started on `lab` in the background, with its stderr collected as it comes;
/// returns once it holds the lock, with the lock's session.
fn start_waiter(
    lab: &Lab,
    t: &Test,
) -> (
    std::process::Child,
    std::sync::Arc<std::sync::Mutex<String>>,
    String,
) {
    use std::io::Read;
    let mut child = t
        .command()
        .arg("--topology")
        .arg(lab.dir.join("harun.hcl"))
        .arg(t.path("waiter.rhai"))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let (mut pipe, sink) = (child.stderr.take().unwrap(), stderr.clone());
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n @ 1..) = pipe.read(&mut buf) {
            sink.lock()
                .unwrap()
                .push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    });
    let session = eventually("the lock taken", Duration::from_secs(30), || {
        let r = common::http::get(&lab.consul("controller1", "/v1/kv/harun/consul-ha"));
        (r.status == 200)
            .then(|| r.json()[0]["Session"].as_str().map(str::to_string))
            .flatten()
    });
    (child, stderr, session)
}

/// Whether the lock's KV entry still names a session.
fn lock_session(lab: &Lab) -> Option<String> {
    let r = common::http::get(&lab.consul("controller1", "/v1/kv/harun/consul-ha"));
    (r.status == 200)
        .then(|| r.json()[0]["Session"].as_str().map(str::to_string))
        .flatten()
}

/// After Ctrl-C the lock is released on the way out: its entry names no session, the
/// session is gone, and the next run takes the lock without `--yes`.
#[test]
fn ctrl_c_releases_the_lock_on_the_way_out() {
    let lab = Lab::up();
    let t = Test::new().file("waiter.rhai", WAITER);
    let (mut run, stderr, session) = start_waiter(&lab, &t);
    // SAFETY: signalling the child we started.
    unsafe { libc::kill(run.id() as i32, libc::SIGINT) };
    let status = run.wait().unwrap();
    // Its stderr thread ends with the pipe.
    let said = eventually(
        "the interrupted run's message",
        Duration::from_secs(5),
        || {
            let s = stderr.lock().unwrap().clone();
            s.contains("error[harun::interrupted]").then_some(s)
        },
    );
    assert_eq!(status.code(), Some(3), "{said}");
    assert_eq!(
        lock_session(&lab),
        None,
        "the lock is still held after Ctrl-C"
    );
    let info =
        common::http::get(&lab.consul("controller1", &format!("/v1/session/info/{session}")));
    assert!(
        matches!(info.body.trim(), "null" | "[]"),
        "the session outlived the run: {}",
        info.body
    );
    assert!(!t.path("after").exists());

    std::fs::write(t.path("go"), "").unwrap();
    let next = t
        .command()
        .arg("--topology")
        .arg(lab.dir.join("harun.hcl"))
        .arg(t.path("waiter.rhai"))
        .output()
        .unwrap();
    assert_eq!(
        next.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&next.stderr)
    );
    assert_eq!(std::fs::read_to_string(t.path("after")).unwrap(), "done\n");
}

/// A lock lost in the middle of a run (here its session destroyed, as an operator or a
/// lapse would) stops the run before its next change, and says why.
#[test]
fn a_lost_lock_stops_the_run_before_its_next_change() {
    let lab = Lab::up();
    let t = Test::new().file("waiter.rhai", WAITER);
    let (run, stderr, session) = start_waiter(&lab, &t);
    let destroyed = common::http::put(
        &lab.consul("controller1", &format!("/v1/session/destroy/{session}")),
        "",
    );
    assert_eq!(destroyed.status, 200, "{}", destroyed.body);
    // The run notices at its next renewal, and says so on stderr as it happens.
    eventually("the run to notice", Duration::from_secs(30), || {
        stderr
            .lock()
            .unwrap()
            .contains("the consul lock is lost: its session was invalidated")
            .then_some(())
    });
    std::fs::write(t.path("go"), "").unwrap();
    let out = run.wait_with_output().unwrap();
    let said = stderr.lock().unwrap().clone();
    assert_eq!(out.status.code(), Some(3), "{said}");
    assert!(
        said.contains("error[harun::consul::lock_lost]: the consul lock harun/consul-ha was lost (its session was invalidated (expired or destroyed)): stopping before the next change; run the script again to finish"),
        "{said}"
    );
    assert!(
        !t.path("after").exists(),
        "the change after the loss was made"
    );
}
