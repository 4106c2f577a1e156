//! One HTTP-level client suite for the Consul endpoints harun uses, run against three real
//! Consul 1.8.7 servers (tests/setup installs Debian bullseye's package) and against three
//! lab twins, started from the same config files. What differs is fixed in the twin or
//! written down in lab/README.md; a missing `consul` binary fails the run, it never skips.

use crate::common;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::http::{eventually, get, put, request, Reply};

#[derive(Clone, Copy, PartialEq, Debug)]
enum Kind {
    Twin,
    Real,
}

struct Servers {
    kind: Kind,
    block: String,
    dir: tempfile::TempDir,
    children: Vec<Option<Child>>,
}

/// A 127.x.y block where nothing answers on Consul's ports yet.
fn free_block(kind: Kind) -> String {
    let seed = std::process::id() as usize * 7 + if kind == Kind::Real { 3 } else { 0 };
    common::free_loopback_block(seed, 20, &[8300, 8301, 8302, 8500, 8600])
}

impl Servers {
    fn new(kind: Kind) -> Servers {
        if kind == Kind::Real {
            let found = Command::new("consul").arg("version").output();
            assert!(
                found.is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("v1.8.7")),
                "real Consul 1.8.7 is missing: run tests/setup (it installs Debian bullseye's consul)"
            );
        }
        Servers {
            kind,
            block: free_block(kind),
            dir: tempfile::tempdir().unwrap(),
            children: vec![None, None, None],
        }
    }

    fn address(&self, i: usize) -> String {
        format!("{}.{}", self.block, 11 + i)
    }

    fn url(&self, i: usize, path: &str) -> String {
        format!("http://{}:8500{path}", self.address(i))
    }

    /// The same consul.hcl for both: what the story's controllers run.
    fn config(&self, i: usize) -> PathBuf {
        let data = self.dir.path().join(format!("data{i}"));
        std::fs::create_dir_all(&data).unwrap();
        let joins: Vec<String> = (0..3).map(|j| format!("\"{}\"", self.address(j))).collect();
        let text = format!(
            "datacenter = \"homelab\"\ndata_dir = \"{}\"\nnode_name = \"controller{}\"\nserver = true\nbootstrap_expect = 3\nbind_addr = \"{address}\"\nclient_addr = \"{address}\"\nretry_join = [{}]\nlog_level = \"warn\"\n",
            data.display(),
            i + 1,
            joins.join(", "),
            address = self.address(i),
        );
        let path = self.dir.path().join(format!("consul{i}.hcl"));
        std::fs::write(&path, text).unwrap();
        path
    }

    fn start(&mut self, i: usize) {
        let config = self.config(i);
        let log = std::fs::File::create(self.dir.path().join(format!("log{i}"))).unwrap();
        let mut command = match self.kind {
            Kind::Real => {
                let mut c = Command::new("consul");
                c.arg("agent")
                    .arg(format!("-config-file={}", config.display()));
                c
            }
            Kind::Twin => {
                let mut c = Command::new(common::harun_bin());
                c.args(["lab", "serve", "consul", "--config"]).arg(&config);
                c
            }
        };
        let child = command
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        self.children[i] = Some(child);
        eventually("the HTTP API", Duration::from_secs(20), || {
            request("GET", &self.url(i, "/v1/agent/self"), "").ok()
        });
    }

    fn stop(&mut self, i: usize) {
        if let Some(mut child) = self.children[i].take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn log(&self) -> String {
        (0..3)
            .map(|i| {
                std::fs::read_to_string(self.dir.path().join(format!("log{i}"))).unwrap_or_default()
            })
            .collect::<Vec<_>>()
            .join("\n---\n")
    }
}

impl Drop for Servers {
    fn drop(&mut self) {
        for i in 0..3 {
            self.stop(i);
        }
    }
}

fn leader(s: &Servers, i: usize) -> String {
    serde_json::from_str(&get(&s.url(i, "/v1/status/leader")).body).unwrap_or_default()
}

fn header(reply: &Reply, name: &str) -> Option<String> {
    reply.headers.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.eq_ignore_ascii_case(name).then(|| v.trim().to_string())
    })
}

fn suite(kind: Kind) {
    let mut s = Servers::new(kind);
    // bootstrap_expect = 3: two servers elect nobody, and reads that need a leader fail.
    s.start(0);
    s.start(1);
    // Not a wait for time to pass: once each sees the other alive, a server that ignored
    // bootstrap_expect would bootstrap.
    for (me, other) in [(0, 1), (1, 0)] {
        let other_address = s.address(other);
        eventually(
            "two servers seeing each other",
            Duration::from_secs(30),
            || {
                let members = get(&s.url(me, "/v1/agent/members")).json();
                members
                    .as_array()?
                    .iter()
                    .any(|m| m["Addr"] == other_address.as_str() && m["Status"] == 1)
                    .then_some(())
            },
        );
    }
    assert_eq!(leader(&s, 0), "", "{kind:?}: a leader with 2 of 3 servers");
    let r = get(&s.url(1, "/v1/kv/x"));
    assert_eq!(r.status, 500, "{kind:?}");
    assert!(r.body.contains("No cluster leader"), "{kind:?}: {}", r.body);
    s.start(2);
    let elected = eventually("a leader", Duration::from_secs(30), || {
        let l = leader(&s, 2);
        (!l.is_empty()).then_some(l)
    });
    assert!(elected.ends_with(":8300"), "{kind:?}: {elected}");
    eventually("three voters", Duration::from_secs(30), || {
        let c = get(&s.url(0, "/v1/operator/raft/configuration"));
        let c = c.json();
        let voters = c["Servers"]
            .as_array()?
            .iter()
            .filter(|x| x["Voter"] == true)
            .count();
        (voters == 3).then_some(())
    });
    // The configuration each agent loaded, as health.rhai and consul-ha.rhai read it
    // (agent/config/builder.go: bootstrap_expect = 1 would read as Bootstrap mode).
    for i in 0..3 {
        let loaded = get(&s.url(i, "/v1/agent/self")).json();
        assert_eq!(
            (
                loaded["DebugConfig"]["Bootstrap"].clone(),
                loaded["DebugConfig"]["BootstrapExpect"].clone(),
                loaded["DebugConfig"]["RetryJoinLAN"]
                    .as_array()
                    .map(Vec::len)
            ),
            (false.into(), 3.into(), Some(3)),
            "{kind:?}: {}",
            loaded["DebugConfig"]
        );
    }
    let config = get(&s.url(1, "/v1/operator/raft/configuration")).json();
    for server in config["Servers"].as_array().unwrap() {
        for field in [
            "ID",
            "Node",
            "Address",
            "Leader",
            "Voter",
            "ProtocolVersion",
        ] {
            assert!(
                server.get(field).is_some(),
                "{kind:?}: raft server without {field}: {server}"
            );
        }
    }
    assert!(config["Index"].as_u64().is_some(), "{kind:?}");
    let peers = get(&s.url(0, "/v1/status/peers")).json();
    assert_eq!(peers.as_array().unwrap().len(), 3, "{kind:?}");

    // Members: Status is a number (1 = alive), the serf port, role tag.
    let members = eventually("three alive members", Duration::from_secs(15), || {
        let m = get(&s.url(2, "/v1/agent/members")).json();
        let alive = m.as_array()?.iter().filter(|x| x["Status"] == 1).count();
        (alive == 3).then_some(m)
    });
    let one = &members[0];
    assert_eq!(one["Port"], 8301, "{kind:?}: {one}");
    assert_eq!(one["Tags"]["role"], "consul", "{kind:?}: {one}");
    assert!(
        one["Name"].as_str().unwrap().starts_with("controller"),
        "{kind:?}"
    );

    // Catalog.
    assert_eq!(
        get(&s.url(0, "/v1/catalog/datacenters")).json(),
        serde_json::json!(["homelab"])
    );
    eventually("three catalog nodes", Duration::from_secs(15), || {
        let n = get(&s.url(0, "/v1/catalog/nodes")).json();
        (n.as_array()?.len() == 3).then_some(())
    });
    let consul = get(&s.url(0, "/v1/catalog/service/consul")).json();
    assert_eq!(consul.as_array().unwrap().len(), 3, "{kind:?}: {consul}");
    assert_eq!(consul[0]["ServicePort"], 8300, "{kind:?}");

    // KV: written through one server, read through another.
    let w = put(&s.url(0, "/v1/kv/homelab/dns/zone"), "home.arpa");
    assert_eq!((w.status, w.body.trim()), (200, "true"), "{kind:?}");
    let r = get(&s.url(2, "/v1/kv/homelab/dns/zone"));
    assert_eq!(r.status, 200, "{kind:?}");
    assert!(
        header(&r, "X-Consul-Index").is_some(),
        "{kind:?}: {}",
        r.headers
    );
    let entry = &r.json()[0];
    assert_eq!(entry["Key"], "homelab/dns/zone");
    assert_eq!(entry["Value"], "aG9tZS5hcnBh");
    assert_eq!(entry["Flags"], 0);
    for field in ["CreateIndex", "ModifyIndex", "LockIndex"] {
        assert!(entry[field].is_u64(), "{kind:?}: {field} in {entry}");
    }
    assert_eq!(
        get(&s.url(1, "/v1/kv/homelab/dns/zone?raw")).body,
        "home.arpa"
    );
    let missing = get(&s.url(1, "/v1/kv/homelab/nothing"));
    assert_eq!(
        (missing.status, missing.body.as_str()),
        (404, ""),
        "{kind:?}"
    );
    put(&s.url(0, "/v1/kv/homelab/backup/schedule"), "0 3 * * *");
    let keys = get(&s.url(1, "/v1/kv/homelab/?keys")).json();
    assert_eq!(
        keys,
        serde_json::json!(["homelab/backup/schedule", "homelab/dns/zone"]),
        "{kind:?}"
    );
    let cas = put(&s.url(1, "/v1/kv/homelab/dns/zone?cas=0"), "other");
    assert_eq!(
        cas.body.trim(),
        "false",
        "{kind:?}: cas=0 on an existing key"
    );
    let d = request("DELETE", &s.url(2, "/v1/kv/homelab/backup/schedule"), "").unwrap();
    assert_eq!((d.status, d.body.trim()), (200, "true"), "{kind:?}");

    // Services belong to the agent they were registered at.
    let reg = put(
        &s.url(1, "/v1/agent/service/register"),
        r#"{"ID": "vault:127.0.0.1:8200", "Name": "vault", "Tags": ["active"], "Port": 8200,
            "Check": {"CheckID": "vault-sealed", "Name": "Vault Sealed Status", "TTL": "30s"}}"#,
    );
    assert_eq!(reg.status, 200, "{kind:?}: {}", reg.body);
    let local = get(&s.url(1, "/v1/agent/services")).json();
    assert_eq!(
        local["vault:127.0.0.1:8200"]["Service"], "vault",
        "{kind:?}: {local}"
    );
    assert!(get(&s.url(2, "/v1/agent/services"))
        .json()
        .get("vault:127.0.0.1:8200")
        .is_none());
    eventually(
        "the service in the catalog",
        Duration::from_secs(15),
        || {
            let c = get(&s.url(0, "/v1/catalog/service/vault")).json();
            (c.as_array()?.len() == 1 && c[0]["Node"] == "controller2").then_some(())
        },
    );
    // A TTL check starts critical; passing it makes the service healthy.
    let healthy = get(&s.url(0, "/v1/health/service/vault?passing")).json();
    assert_eq!(healthy.as_array().unwrap().len(), 0, "{kind:?}: {healthy}");
    let pass = put(
        &s.url(1, "/v1/agent/check/pass/vault-sealed?note=unsealed"),
        "",
    );
    assert_eq!(pass.status, 200, "{kind:?}: {}", pass.body);
    eventually("the service healthy", Duration::from_secs(15), || {
        let h = get(&s.url(2, "/v1/health/service/vault?passing")).json();
        (h.as_array()?.len() == 1).then_some(())
    });
    let wrong = put(
        &s.url(2, "/v1/agent/service/deregister/vault:127.0.0.1:8200"),
        "",
    );
    // 1.8.7 says 200 and removes nothing (newer Consul says 404 "Unknown service ID").
    assert_eq!(wrong.status, 200, "{kind:?}: {}", wrong.body);
    // Not a wait for time to pass: a marker registered through the same agent after the
    // deregistration reaches the catalog once that agent has synced what it was told.
    let marker = put(
        &s.url(2, "/v1/agent/service/register"),
        r#"{"ID": "marker", "Name": "marker", "Port": 1}"#,
    );
    assert_eq!(marker.status, 200, "{kind:?}: {}", marker.body);
    eventually("the marker in the catalog", Duration::from_secs(15), || {
        let m = get(&s.url(0, "/v1/catalog/service/marker")).json();
        (m.as_array()?.len() == 1).then_some(())
    });
    assert_eq!(
        put(&s.url(2, "/v1/agent/service/deregister/marker"), "").status,
        200
    );
    let stale = get(&s.url(0, "/v1/catalog/service/vault")).json();
    assert_eq!(
        stale.as_array().unwrap().len(),
        1,
        "{kind:?}: the stale entry stays"
    );
    // HTTP checks run by the agent every Interval (agent/checks/check.go `CheckHTTP`):
    // 2xx passing, anything else critical, with the answer in the output.
    for (name, path) in [
        ("probe-ok", "/v1/status/leader"),
        ("probe-404", "/v1/kv/no-such-key"),
    ] {
        let reg = put(
            &s.url(2, "/v1/agent/service/register"),
            &format!(
                r#"{{"ID": "{name}", "Name": "{name}", "Port": 1,
                    "Check": {{"HTTP": "{}", "Interval": "1s", "Timeout": "2s"}}}}"#,
                s.url(0, path)
            ),
        );
        assert_eq!(reg.status, 200, "{kind:?}: {}", reg.body);
    }
    let check_of = |name: &str| {
        let h = get(&s.url(0, &format!("/v1/health/checks/{name}"))).json();
        let c = h.as_array()?.first()?.clone();
        Some((
            c["Status"].as_str()?.to_string(),
            c["Output"].as_str()?.to_string(),
        ))
    };
    // The output as the agent that runs the check has it: Consul syncs a change of output
    // alone to the catalog only every check_update_interval (5 m), a change of status at
    // once (agent/local/state.go `UpdateCheck`).
    let output_of = |name: &str| {
        let checks = get(&s.url(2, "/v1/agent/checks")).json();
        let check = checks
            .as_object()?
            .values()
            .find(|c| c["ServiceID"] == name)?
            .clone();
        Some(check["Output"].as_str()?.to_string())
    };
    let started = std::time::Instant::now();
    loop {
        let (ok, missing) = (check_of("probe-ok"), check_of("probe-404"));
        let output = output_of("probe-404").unwrap_or_default();
        if let (Some(ok), Some(missing)) = (&ok, &missing) {
            if ok.0 == "passing" && missing.0 == "critical" && !output.is_empty() {
                break;
            }
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "{kind:?}: the HTTP checks did not run: {ok:?} {missing:?}"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    let output = output_of("probe-404").unwrap();
    assert!(
        output.starts_with(&format!(
            "HTTP GET {}: 404 Not Found Output: ",
            s.url(0, "/v1/kv/no-such-key")
        )),
        "{kind:?}: {output}"
    );
    for name in ["probe-ok", "probe-404"] {
        put(
            &s.url(2, &format!("/v1/agent/service/deregister/{name}")),
            "",
        );
    }
    let right = put(
        &s.url(1, "/v1/agent/service/deregister/vault:127.0.0.1:8200"),
        "",
    );
    assert_eq!(right.status, 200, "{kind:?}");
    eventually("the service gone", Duration::from_secs(15), || {
        let c = get(&s.url(0, "/v1/catalog/service/vault")).json();
        c.as_array()?.is_empty().then_some(())
    });

    // Sessions and locks.
    let session = put(
        &s.url(0, "/v1/session/create"),
        r#"{"Name": "harun", "TTL": "30s"}"#,
    )
    .json();
    let id = session["ID"].as_str().unwrap().to_string();
    let lock = put(
        &s.url(1, &format!("/v1/kv/homelab/lock?acquire={id}")),
        "me",
    );
    assert_eq!(lock.body.trim(), "true", "{kind:?}");
    let other = put(&s.url(2, "/v1/session/create"), "{}").json();
    let other = other["ID"].as_str().unwrap().to_string();
    let again = put(
        &s.url(2, &format!("/v1/kv/homelab/lock?acquire={other}")),
        "you",
    );
    assert_eq!(
        again.body.trim(),
        "false",
        "{kind:?}: a held lock was taken"
    );
    let held = get(&s.url(0, "/v1/kv/homelab/lock")).json();
    assert_eq!(held[0]["Session"], id.as_str(), "{kind:?}");
    let release = put(&s.url(0, &format!("/v1/kv/homelab/lock?release={id}")), "");
    assert_eq!(release.body.trim(), "true", "{kind:?}");
    let info = get(&s.url(2, &format!("/v1/session/info/{id}"))).json();
    assert_eq!(info[0]["Name"], "harun", "{kind:?}");

    // What harun's lock relies on: renewal, a 404 for a session Consul no longer has, a
    // TTL below 10 s refused, and a lock delay after a holder's session is destroyed.
    let renewed = put(&s.url(1, &format!("/v1/session/renew/{id}")), "");
    assert_eq!(renewed.status, 200, "{kind:?}: {}", renewed.body);
    assert_eq!(renewed.json()[0]["ID"], id.as_str(), "{kind:?}");
    let unknown = "00000000-0000-0000-0000-000000000000";
    let gone = put(&s.url(1, &format!("/v1/session/renew/{unknown}")), "");
    assert_eq!(
        (gone.status, gone.body.trim()),
        (404, format!("Session id '{unknown}' not found").as_str()),
        "{kind:?}"
    );
    let short = put(&s.url(0, "/v1/session/create"), r#"{"TTL": "5s"}"#);
    assert_eq!(short.status, 500, "{kind:?}");
    assert!(
        short
            .body
            .contains("Invalid Session TTL '5000000000', must be between [10s=24h0m0s]"),
        "{kind:?}: {}",
        short.body
    );
    let delayed = put(
        &s.url(0, "/v1/session/create"),
        r#"{"TTL": "10s", "LockDelay": "2s"}"#,
    )
    .json();
    let delayed = delayed["ID"].as_str().unwrap().to_string();
    assert_eq!(
        put(
            &s.url(0, &format!("/v1/kv/homelab/delayed?acquire={delayed}")),
            "a"
        )
        .body
        .trim(),
        "true"
    );
    put(&s.url(0, &format!("/v1/session/destroy/{delayed}")), "");
    let too_soon = put(
        &s.url(0, &format!("/v1/kv/homelab/delayed?acquire={other}")),
        "b",
    );
    assert_eq!(too_soon.body.trim(), "false", "{kind:?}: the lock delay");
    eventually("the lock delay to end", Duration::from_secs(15), || {
        let after = put(
            &s.url(0, &format!("/v1/kv/homelab/delayed?acquire={other}")),
            "b",
        );
        (after.body.trim() == "true").then_some(())
    });

    // The leader stops: the other two elect a new one and keep the data.
    let old = leader(&s, 0);
    let gone = (0..3)
        .find(|i| old.starts_with(&format!("{}:", s.address(*i))))
        .unwrap();
    s.stop(gone);
    let survivor = (gone + 1) % 3;
    eventually("a new leader", Duration::from_secs(30), || {
        let l = leader(&s, survivor);
        (!l.is_empty() && l != old).then_some(())
    });
    let kept = get(&s.url(survivor, "/v1/kv/homelab/dns/zone?raw"));
    assert_eq!(kept.body, "home.arpa", "{kind:?}: {}", s.log());
}

#[test]
fn the_consul_twin_passes_the_client_suite() {
    suite(Kind::Twin);
}

#[test]
fn real_consul_passes_the_client_suite() {
    suite(Kind::Real);
}
