//! The vault module on the lab: health states, KV v2, unsealing with Secret keys (a wrong
//! one fails with Vault's words), and no key or token in any output, plan or audit log.

use crate::common;

use common::lab::Lab;
use common::Test;

#[test]
fn vault_module_reads_unseals_and_never_shows_a_key() {
    let lab = Lab::up();
    let topology = lab.dir.join("harun.hcl");
    let run = |args: &[&str]| {
        let mut t = Test::new();
        t.run_with(&[&["--topology", topology.to_str().unwrap()], args].concat())
    };
    let out = run(&[
        "-e",
        r#"let c1 = host("controller1");
print(vault::health(c1).state);
print(vault::kv_list(c1, "secret", ""));
print(vault::kv_read(c1, "secret", "homelab/nas").username);
print(vault::kv_read(c1, "secret", "homelab/none") == ());
try { vault::snapshot_save(c1, "snap") } catch (e) { print(e.message) }"#,
    ])
    .status(0);
    assert_eq!(
        out.stdout,
        "active\n[\"homelab/grafana\", \"homelab/nas\", \"homelab/wifi\"]\nbackup\ntrue\nvault on controller1: GET /v1/sys/storage/raft/snapshot answered 400: raft storage is not in use\n"
    );
    assert!(lab.ctl("controller1", "vault", "restart").status.success());
    let forged = format!("{}07", "ab".repeat(32));
    let audit = lab.dir.join("audit.jsonl");
    let script = format!(
        r#"let c1 = host("controller1");
print(vault::health(c1).state);
let keys = vault::keys(c1);
try {{ vault::unseal(c1, [keys[0], keys[1], secret("{forged}")]) }} catch (e) {{ print(e.code); print(e.message) }}
try {{ vault::unseal(c1, ["plain text"]) }} catch (e) {{ print(e.code) }}
print(vault::unseal(c1, keys).sealed);
print(vault::health(c1).state);
print(keys);"#
    );
    let out = run(&[
        "-vvv",
        "--audit-log",
        audit.to_str().unwrap(),
        "-e",
        &script,
    ])
    .status(0);
    assert_eq!(
        out.stdout,
        "sealed\nharun::vault::unseal_failed\nvault on controller1: Unseal failed, invalid key (after 3 key(s); the node stays sealed and its progress was reset)\nharun::vault::key_not_secret\nfalse\nactive\n[<secret>, <secret>, <secret>, <secret>, <secret>]\n"
    );
    // A dry run of a seal and init plans without secrets too.
    let plan = run(&["--dry-run", "-e", "vault::seal(host(\"controller1\")); vault::unseal(host(\"controller1\"), vault::keys(host(\"controller1\")))"]).status(0);
    let audit_text = std::fs::read_to_string(&audit).unwrap();
    for secret in lab.unseal_keys().iter().chain([lab.root_token()].iter()) {
        for (what, text) in [
            ("stdout", &out.stdout),
            ("stderr at -vvv", &out.stderr),
            ("audit log", &audit_text),
            ("plan", &plan.stdout),
        ] {
            assert!(!text.contains(secret.as_str()), "a secret in the {what}");
        }
    }
    assert!(plan.stdout.contains("vault: seal"), "{}", plan.stdout);
    // A dry run of the seal alone leaves the node unsealed.
    run(&["--dry-run", "-e", "vault::seal(host(\"controller1\"))"]).status(0);
    let status = lab.vault_call("GET", "controller1", "/v1/sys/seal-status", "");
    assert_eq!(status.json()["sealed"], false, "{}", status.body);
}

/// Vault's listener serves TLS unless `tls_disable`: without a certificate the node does not
/// start; with one, the module trusts the CA from `ca_file` or VAULT_CACERT and unseals and
/// reads through it, and without the CA it says which setting is missing.
#[test]
fn the_vault_module_speaks_tls_and_a_listener_without_a_certificate_is_refused() {
    let lab = Lab::up();
    let address = lab.address("controller1");
    let pki = common::tls::Pki::make(&lab.dir.join("tls"), &address);
    lab.set_config("controller1", "vault", |t| {
        t.replace("  tls_disable = true\n", "")
    });
    let refused = lab.ctl("controller1", "vault", "restart");
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("tls_cert_file and tls_key_file are required unless tls_disable = true"),
        "{stderr}"
    );
    lab.set_config("controller1", "vault", |t| {
        t.replace(
            &format!("  address     = \"{address}:8200\"\n"),
            &format!(
                "  address     = \"{address}:8200\"\n  tls_cert_file = \"{}\"\n  tls_key_file  = \"{}\"\n",
                pki.server_cert.display(),
                pki.server_key.display()
            ),
        )
        .replace(
            &format!("api_addr     = \"http://{address}:8200\""),
            &format!("api_addr     = \"https://{address}:8200\""),
        )
    });
    assert!(lab.ctl("controller1", "vault", "start").status.success());
    let status = lab.status_line("controller1", "vault");
    assert!(status.contains("sealed (0/3 keys given)"), "{status}");
    let plain = std::fs::read_to_string(lab.dir.join("harun.hcl")).unwrap();
    let http = "address         = \"http://{address}:8200\"";
    assert!(plain.contains(http));
    let https = "address         = \"https://{address}:8200\"";
    let with_ca = plain.replace(
        http,
        &format!("{https}\n  ca_file         = \"{}\"", pki.ca.display()),
    );
    let script = r#"let c1 = host("controller1");
print(vault::health(c1).state);
vault::unseal(c1, vault::keys(c1));
print(vault::health(c1).state);
print(vault::kv_read(c1, "secret", "homelab/nas").username);"#;
    let out = Test::new()
        .file("harun.hcl", &with_ca)
        .args(["-e", script])
        .run()
        .status(0);
    assert_eq!(out.stdout, "sealed\nactive\nbackup\n");
    let status = lab.status_line("controller1", "vault");
    assert!(
        status.contains("unsealed, active, file storage"),
        "{status}"
    );
    let from_env = Test::new()
        .file("harun.hcl", &plain.replace(http, https))
        .env("VAULT_CACERT", pki.ca.to_str().unwrap())
        .args(["-e", "print(vault::health(host(\"controller1\")).state)"])
        .run()
        .status(0);
    assert_eq!(from_env.stdout, "active\n");
    // OpenBao's variable counts where Vault's is not set, and only there.
    let from_bao = Test::new()
        .file("harun.hcl", &plain.replace(http, https))
        .env("BAO_CACERT", pki.ca.to_str().unwrap())
        .args(["-e", "print(vault::health(host(\"controller1\")).state)"])
        .run()
        .status(0);
    assert_eq!(from_bao.stdout, "active\n");
    let other = common::tls::Pki::make_named(&lab.test.path("other-ca"), &["nobody"]);
    Test::new()
        .file("harun.hcl", &plain.replace(http, https))
        .env("VAULT_CACERT", other.ca.to_str().unwrap())
        .env("BAO_CACERT", pki.ca.to_str().unwrap())
        .args(["-e", "print(vault::health(host(\"controller1\")).state)"])
        .run()
        .status(3)
        // (The other CA has the same name: rustls finds the signature wrong.)
        .stderr_has("invalid peer certificate: BadSignature");
    let unknown = Test::new()
        .file("harun.hcl", &plain.replace(http, https))
        .args(["-e", "print(vault::health(host(\"controller1\")).state)"])
        .run()
        .status(3);
    assert!(
        unknown
            .stderr
            .contains("invalid peer certificate: UnknownIssuer (trust its CA with ca_file in the topology or VAULT_CACERT)"),
        "{}",
        unknown.stderr
    );
}
