//! A secret's value appears in no output: stdout, stderr at -vvv (text and JSON logs),
//! --format json, error messages, dry-run plans, the audit log. Only the file it was
//! written to holds it.

use crate::common;

use common::{Outcome, Test};

const VALUE: &str = "Zq9-unseal-key-42";

const SCRIPT: &str = r#"
let t = secret::env("HARUN_TEST_SECRET");
print(t);
print(`interpolated ${t}`);
print("joined " + t);
print([t, #{token: t}]);
log::error(t);
log::warn("warn " + t);
log::info(t);
debug(#{token: t});
log::trace(t);
warning("token " + t);
local::write("token.txt", "token = " + t);
local::write("notes.txt", `the token is ${t}`);
throw "failed with " + t;
"#;

fn run(extra: &[&str]) -> (Test, Outcome) {
    let t = Test::new()
        .file("s.rhai", SCRIPT)
        .env("HARUN_TEST_SECRET", VALUE)
        .args(extra.iter().copied().chain(["s.rhai"]));
    let out = t.run();
    (t, out)
}

fn assert_clean(what: &str, text: &str) {
    assert!(
        !text.contains(VALUE) && !text.contains("unseal-key"),
        "the secret leaked into {what}:\n{text}"
    );
}

#[test]
fn secret_never_appears_in_text_output_logs_errors_or_audit() {
    let (t, out) = run(&["-vvv", "--audit-log", "audit.jsonl"]);
    assert_eq!(out.status, 3, "{}", out.stderr);
    assert_clean("stdout", &out.stdout);
    assert_clean("stderr at -vvv", &out.stderr);
    // The script really ran with the secret: it is in the file written for it, and only there.
    assert_eq!(
        std::fs::read_to_string(t.path("token.txt")).unwrap(),
        format!("token = {VALUE}")
    );
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(t.path("token.txt"))
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600, "a file holding a secret is private");
    assert_eq!(
        std::fs::read_to_string(t.path("notes.txt")).unwrap(),
        "the token is <secret>"
    );
    let audit = std::fs::read_to_string(t.path("audit.jsonl")).unwrap();
    assert_eq!(audit.lines().count(), 2);
    assert_clean("the audit log", &audit);
    // What is printed instead, and the error message.
    assert!(
        out.stdout
            .starts_with("UNKNOWN - harun::script::thrown: <secret>; <secret>\n"),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains("interpolated <secret>"));
    assert!(
        out.stderr
            .contains("error[harun::script::thrown]: <secret>"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("WARN script: <secret>"),
        "{}",
        out.stderr
    );
}

#[test]
fn secret_never_appears_in_a_dry_run_plan() {
    let (t, out) = run(&["--dry-run", "-vvv"]);
    assert_eq!(out.status, 3);
    assert_clean("stdout", &out.stdout);
    assert_clean("stderr", &out.stderr);
    assert!(out
        .stdout
        .contains("Plan (dry run, nothing was changed): 2 actions"));
    assert!(
        out.stdout.contains("+the token is <secret>"),
        "{}",
        out.stdout
    );
    // A file of mode 0600 shows only which lines change.
    assert!(
        out.stdout
            .contains("@@ -1,0 +1,1 @@ added (a private file: its content is not shown)"),
        "{}",
        out.stdout
    );
    assert!(!t.path("token.txt").exists());
}

#[test]
fn secret_never_appears_in_json_output_or_json_logs() {
    let (_, out) = run(&["--format", "json", "--log-format", "json", "-vvv"]);
    assert_eq!(out.status, 3);
    assert_clean("JSON stdout", &out.stdout);
    assert_clean("JSON logs", &out.stderr);
    let doc: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(doc["output"][0], "<secret>");
    assert_eq!(doc["error"]["code"], "harun::script::thrown");
}

#[test]
fn secret_from_a_file_is_redacted_in_results_and_repl() {
    let t = Test::new().file("key", &format!("{VALUE}\n"));
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(t.path("key"), std::fs::Permissions::from_mode(0o600)).unwrap();
    let out = t
        .args(["repl"])
        .stdin("let k = secret::file(\"key\");\nk\n#{key: k}\n[k]\n")
        .run()
        .status(0);
    assert_clean("REPL output", &out.stdout);
    assert!(out.stdout.starts_with("<secret>\n"), "{}", out.stdout);
}

/// Attribute names and paths the topology marks secret: a diff masks the values of
/// `secret_attributes` (and says whether they change), and shows only which lines of a
/// file under `secret_paths` change; in the plan and in the audit log. Without the
/// settings, the same diff shows the values: the settings are what hides them.
#[test]
fn secret_attributes_and_secret_paths_mask_diffs() {
    let t = Test::new();
    let dir = t.dir.path().display().to_string();
    let topology = |extra: &str| {
        format!("defaults {{\n{extra}}}\nhost \"here\" {{\n  transport = \"local\"\n}}\n")
    };
    let t = t
        .file(
            "harun.hcl",
            &topology(&format!(
                "  secret_attributes = [\"license\"]\n  secret_paths = [\"{dir}/tls\"]\n"
            )),
        )
        .file("plain.hcl", &topology(""))
        .file("app.hcl", "license = \"LIC-OLD-1111\"\nname = \"a\"\n")
        .file("tls/key.pem", "KEY-OLD-3333\nline2\n");
    for file in ["app.hcl", "tls/key.pem"] {
        std::fs::set_permissions(
            t.path(file),
            std::os::unix::fs::PermissionsExt::from_mode(0o644),
        )
        .unwrap();
    }
    let script = format!(
        "let h = host(\"here\"); h.write(\"{dir}/app.hcl\", \"license = \\\"LIC-NEW-2222\\\"\\nname = \\\"b\\\"\\n\"); h.write(\"{dir}/tls/key.pem\", \"KEY-NEW-4444\\nline2\\n\");"
    );
    let plan = Test::new()
        .args(["--topology", t.path("harun.hcl").to_str().unwrap()])
        .args(["--dry-run", "-e", &script])
        .run()
        .status(0);
    assert!(
        plan.stdout.contains("       -license = \"<secret>\"\n")
            && plan
                .stdout
                .contains("       +license = \"<secret, changed>\"\n")
            && plan.stdout.contains("       +name = \"b\"\n")
            && plan
                .stdout
                .contains("@@ -1,1 +1,1 @@ changed (a private file: its content is not shown)"),
        "{}",
        plan.stdout
    );
    for value in ["LIC-OLD", "LIC-NEW", "KEY-OLD", "KEY-NEW"] {
        assert!(
            !plan.stdout.contains(value),
            "{value} in the plan:\n{}",
            plan.stdout
        );
    }
    let unmarked = Test::new()
        .args(["--topology", t.path("plain.hcl").to_str().unwrap()])
        .args(["--dry-run", "-e", &script])
        .run()
        .status(0);
    assert!(
        unmarked.stdout.contains("LIC-NEW-2222") && unmarked.stdout.contains("KEY-NEW-4444"),
        "{}",
        unmarked.stdout
    );
    // The real run: the files hold the new values, the audit log none of them.
    let audit = t.path("audit.log");
    Test::new()
        .args(["--topology", t.path("harun.hcl").to_str().unwrap()])
        .args(["--audit-log", audit.to_str().unwrap(), "-e", &script])
        .run()
        .status(0);
    assert!(std::fs::read_to_string(t.path("app.hcl"))
        .unwrap()
        .contains("LIC-NEW-2222"));
    assert_eq!(
        std::fs::read_to_string(t.path("tls/key.pem")).unwrap(),
        "KEY-NEW-4444\nline2\n"
    );
    let audited = std::fs::read_to_string(&audit).unwrap();
    assert_eq!(audited.lines().count(), 2, "{audited}");
    for value in ["LIC-OLD", "LIC-NEW", "KEY-OLD", "KEY-NEW"] {
        assert!(
            !audited.contains(value),
            "{value} in the audit log:\n{audited}"
        );
    }
}

/// An HCL syntax error, in a file a script parses or in the topology itself, names the
/// file, line and column and never quotes the line: the line that failed may be the one
/// with the token.
#[test]
fn an_hcl_syntax_error_never_quotes_the_line() {
    let t = Test::new()
        .file("harun.hcl", "host \"a\" {\n  transport = \"local\"\n}\n")
        .file("bad.hcl", "a = 1\ntoken = \"s3cr3t-one\" \"s3cr3t-two\"\n")
        .args(["-e", "hcl::parse(local::read(\"bad.hcl\"))"]);
    let out = t.run().status(3);
    assert!(
        out.stderr
            .contains("error[harun::hcl::syntax]: invalid HCL at line 2, column "),
        "{}",
        out.stderr
    );
    assert!(!out.stderr.contains("s3cr3t"), "{}", out.stderr);

    let topology = Test::new()
        .file(
            "harun.hcl",
            "host \"a\" {\n  address = \"127.0.0.1\"\n}\nconsul {\n  token = \"s3cr3t-tok\n}\n",
        )
        .args(["-e", "1"])
        .run()
        .status(3);
    assert!(
        topology
            .stderr
            .starts_with("error[harun::topology::syntax]: ")
            && topology.stderr.contains("--> harun.hcl:5:"),
        "{}",
        topology.stderr
    );
    assert!(!topology.stderr.contains("s3cr3t"), "{}", topology.stderr);
}

/// The second line of defence, end to end: a server that echoes the token back in its
/// error (as some proxies and old servers do) has it masked in the error harun prints.
/// The server saw the real token: the secret was sent, and hidden only on the way out.
#[test]
fn a_secret_a_server_echoes_back_is_masked() {
    use std::io::{Read, Write};
    const TOKEN: &str = "echoed-0b7c-4d1e-token";
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let record = seen.clone();
    std::thread::spawn(move || {
        for mut stream in listener.incoming().flatten() {
            let mut request = [0u8; 8192];
            let n = stream.read(&mut request).unwrap_or(0);
            let head = String::from_utf8_lossy(&request[..n]).to_string();
            let token = head
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("x-consul-token")
                        .then(|| v.trim().to_string())
                })
                .unwrap_or_default();
            *record.lock().unwrap() = token.clone();
            let body = format!("ACL not found for token {token}");
            let _ = write!(
                stream,
                "HTTP/1.1 403 Forbidden\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    let t = Test::new().file("consul-token", TOKEN);
    std::fs::set_permissions(
        t.path("consul-token"),
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    let token_file = t.path("consul-token").display().to_string();
    let t = t
        .file(
            "harun.hcl",
            &format!(
                "host \"c1\" {{\n  address = \"127.0.0.1\"\n  transport = \"local\"\n}}\nconsul {{\n  address = \"http://127.0.0.1:{port}\"\n  token_file = \"{token_file}\"\n}}\n"
            ),
        )
        .args(["-vvv", "-e", "consul::kv_get(host(\"c1\"), \"homelab/x\")"]);
    let out = t.run().status(3);
    assert_eq!(*seen.lock().unwrap(), TOKEN, "the token was not sent");
    assert!(
        out.stderr.contains("ACL not found for token <secret>"),
        "{}",
        out.stderr
    );
    assert!(
        !out.stderr.contains(TOKEN) && !out.stdout.contains(TOKEN),
        "{}",
        out.stderr
    );
}
