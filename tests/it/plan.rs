//! Dry run and audit: one path for every change. A dry run changes nothing and prints a
//! numbered plan with diffs; a real run changes files atomically, keeps a backup, and
//! appends to the audit log.

use crate::common;

use common::Test;

const SCRIPT: &str = r#"
local::write("consul.hcl", "server = true\nbootstrap_expect = 3\n");
local::run("touch ran-a-command");
print("done");
"#;

#[test]
fn dry_run_prints_a_plan_and_changes_nothing() {
    let t = Test::new()
        .file("consul.hcl", "server = true\nbootstrap_expect = 1\n")
        .file("change.rhai", SCRIPT)
        .args(["--dry-run", "change.rhai"]);
    t.run().status(0).stdout(
        "done
Plan (dry run, nothing was changed): 2 actions
  1. [write] local: write consul.hcl (mode 0644)
       --- a/consul.hcl
       +++ b/consul.hcl
       @@ -1,2 +1,2 @@
        server = true
       -bootstrap_expect = 1
       +bootstrap_expect = 3
  2. [exec] local: touch ran-a-command
",
    );
    assert_eq!(
        std::fs::read_to_string(t.path("consul.hcl")).unwrap(),
        "server = true\nbootstrap_expect = 1\n"
    );
    assert!(!t.path("ran-a-command").exists());
    assert!(!t.path(".state/harun/audit.log").exists());
}

#[test]
fn real_run_writes_atomically_keeps_a_backup_and_audits() {
    let t = Test::new()
        .file("consul.hcl", "server = true\nbootstrap_expect = 1\n")
        .file("change.rhai", SCRIPT)
        .args(["change.rhai"]);
    // A reader that opened the file before the write: it must go on reading the old
    // file whole (a new file renamed into place), never a truncated or mixed one.
    let reader = std::fs::File::open(t.path("consul.hcl")).unwrap();
    let old_inode = std::os::unix::fs::MetadataExt::ino(&reader.metadata().unwrap());
    t.run().status(0).stdout("done\n");
    assert_eq!(
        std::fs::read_to_string(t.path("consul.hcl")).unwrap(),
        "server = true\nbootstrap_expect = 3\n"
    );
    assert_eq!(
        std::io::read_to_string(&reader).unwrap(),
        "server = true\nbootstrap_expect = 1\n",
        "the old file was written in place"
    );
    let new_inode =
        std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(t.path("consul.hcl")).unwrap());
    assert_ne!(old_inode, new_inode, "the file was written in place");
    assert!(t.path("ran-a-command").exists());
    let backups: Vec<String> = std::fs::read_dir(t.dir.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("consul.hcl.harun-") && n.ends_with(".bak"))
        .collect();
    assert_eq!(backups.len(), 1, "one backup: {backups:?}");
    assert_eq!(
        std::fs::read_to_string(t.path(&backups[0])).unwrap(),
        "server = true\nbootstrap_expect = 1\n"
    );
    let audit = std::fs::read_to_string(t.path(".state/harun/audit.log")).unwrap();
    let records: Vec<serde_json::Value> = audit
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(records.len(), 2);
    assert_eq!(records[0]["kind"], "write");
    assert_eq!(records[0]["summary"], "write consul.hcl (mode 0644)");
    assert_eq!(records[0]["outcome"], "ok");
    assert_eq!(records[0]["script"], "change.rhai");
    assert_eq!(records[1]["kind"], "exec");

    // A second run changes nothing: no new backup, no new audit record.
    t.run().status(0);
    let audit = std::fs::read_to_string(t.path(".state/harun/audit.log")).unwrap();
    assert_eq!(audit.lines().count(), 3, "only the command ran again");
}

#[test]
fn audit_log_flag_chooses_the_file_and_records_failures() {
    let t = Test::new()
        .file("f.rhai", "local::write(\"no/such/dir/x.conf\", \"a\")")
        .args(["--audit-log", "audit.jsonl", "f.rhai"]);
    t.run().status(3).stderr_has("error[harun::local::write]");
    let audit = std::fs::read_to_string(t.path("audit.jsonl")).unwrap();
    let record: serde_json::Value = serde_json::from_str(audit.trim()).unwrap();
    assert_eq!(record["outcome"], "error");
}

#[test]
fn dry_run_plan_in_json() {
    let out = Test::new()
        .file("change.rhai", SCRIPT)
        .file("consul.hcl", "bootstrap_expect = 1\n")
        .args(["--dry-run", "--format", "json", "change.rhai"])
        .run()
        .status(0);
    let doc: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(doc["plan"][0]["kind"], "write");
    assert!(doc["plan"][0]["diff"]
        .as_str()
        .unwrap()
        .contains("+bootstrap_expect = 3"));
    assert_eq!(doc["plan"][1]["summary"], "touch ran-a-command");
}

/// The secrets that live inside the config files the scripts edit (the story's Consul ACL
/// tokens and gossip key, the token of Vault's service registration and of Nomad's consul
/// stanza) never show in a plan (text or JSON), in `-vvv` logs or in the audit log. The
/// plan still shows which lines change, and whether a masked value changed.
#[test]
fn config_file_secrets_never_show_in_plans_logs_or_the_audit_log() {
    let lab = common::lab::Lab::up_with(&["--story"]);
    let script = |name: &str| {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("scripts")
            .join(name)
            .display()
            .to_string()
    };
    let consul_hcl = std::fs::read_to_string(lab.dir.join("controller1/consul.hcl")).unwrap();
    let gossip = consul_hcl
        .lines()
        .find(|l| l.starts_with("encrypt"))
        .and_then(|l| l.split('"').nth(1))
        .unwrap()
        .to_string();
    let consul_token = std::fs::read_to_string(lab.dir.join("consul-token"))
        .unwrap()
        .trim()
        .to_string();
    let mut secrets = vec![gossip, consul_token, lab.root_token()];
    secrets.extend(lab.unseal_keys());
    let clean = |what: &str, text: &str| {
        for s in &secrets {
            assert!(!text.contains(s.as_str()), "a secret in {what}:\n{text}");
        }
    };
    for name in ["consul-ha.rhai", "nomad-ha.rhai", "vault-raft.rhai"] {
        let text = lab.harun(&["--dry-run", "-vvv", &script(name)]);
        let stdout = String::from_utf8_lossy(&text.stdout);
        assert!(text.status.success(), "{name}: {stdout}");
        clean(&format!("{name}'s plan"), &stdout);
        clean(
            &format!("{name}'s -vvv logs"),
            &String::from_utf8_lossy(&text.stderr),
        );
        // Which lines change is still there: the masked gossip key beside a changed line.
        assert!(
            stdout.contains("encrypt    = \"<secret>\""),
            "{name}: {stdout}"
        );
        assert!(stdout.contains("+bootstrap_expect = 3"), "{name}: {stdout}");
        let json = lab.harun(&["--dry-run", "--format", "json", &script(name)]);
        let out = String::from_utf8_lossy(&json.stdout);
        clean(&format!("{name}'s JSON plan"), &out);
        let plan: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert!(plan.to_string().contains("<secret>"), "{out}");
    }
    // A real run, audited: its output, its logs and the audit log (which names each write,
    // without the file's content) hold no secret.
    let audit = lab.test.path("audit.log");
    let run = lab.harun(&[
        "--audit-log",
        audit.to_str().unwrap(),
        "-vvv",
        &script("vault-raft.rhai"),
    ]);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    clean("the run's output", &String::from_utf8_lossy(&run.stdout));
    clean("the run's -vvv logs", &String::from_utf8_lossy(&run.stderr));
    let log = std::fs::read_to_string(&audit).unwrap();
    clean("the audit log", &log);
    assert!(log.contains("controller1/vault.hcl"), "{log}");
}

/// A dry run on a running cluster changes nothing through any path a change takes: a
/// service action (the service keeps running, same pid), an HTTP write (the KV entry is
/// not there), a Vault seal (the node stays unsealed), a host command (its file is not
/// made); and it writes no audit record.
#[test]
fn a_dry_run_changes_nothing_through_services_http_or_vault() {
    let lab = common::lab::Lab::up();
    let pid_before = lab.status_line("controller1", "consul");
    let made = lab.test.path("dry-run-made-this");
    let script = format!(
        r#"let c1 = host("controller1");
service::stop(c1, "consul");
consul::kv_put(c1, "homelab/dry-run", "planned");
vault::seal(c1);
c1.exec("touch {}");"#,
        made.display()
    );
    let plan = lab.harun(&[
        "--dry-run",
        "--audit-log",
        lab.test.path("audit.log").to_str().unwrap(),
        "-e",
        &script,
    ]);
    let stdout = String::from_utf8_lossy(&plan.stdout);
    assert!(
        plan.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&plan.stderr)
    );
    for planned in [
        "1. [service] controller1: stop consul",
        "2. [http] controller1: consul: put kv homelab/dry-run",
        "3. [http] controller1: vault: seal",
        &format!("4. [exec] controller1: touch {}", made.display()),
    ] {
        assert!(
            stdout.contains(planned),
            "{planned} not in the plan:\n{stdout}"
        );
    }
    assert_eq!(lab.status_line("controller1", "consul"), pid_before);
    let kv = common::http::get(&lab.consul("controller1", "/v1/kv/homelab/dry-run"));
    assert_eq!(kv.status, 404, "{}", kv.body);
    let seal = lab.vault_call("GET", "controller1", "/v1/sys/seal-status", "");
    assert_eq!(seal.json()["sealed"], false, "{}", seal.body);
    assert!(!made.exists());
    assert!(!lab.test.path("audit.log").exists());
}
