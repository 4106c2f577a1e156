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
