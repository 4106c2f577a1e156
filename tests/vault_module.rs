//! The vault module on the lab: health states, KV v2, unsealing with Secret keys (a wrong
//! one fails with Vault's words), and no key or token in any output, plan or audit log.

mod common;

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
}
