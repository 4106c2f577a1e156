//! The local transport: the same host API on this machine (cron on a controller, the lab).

use crate::common;

use common::Test;

const TOPOLOGY: &str =
    "defaults { transport = \"local\" }\nhost \"here\" {}\nhost \"also-here\" {}\n";

#[test]
fn commands_files_and_directories_on_this_machine() {
    let t = Test::new().file("harun.hcl", TOPOLOGY).file(
        "l.rhai",
        r#"
let h = host("here");
print(h.exec("echo local"));
print(h.exists("nope.txt"));
print(h.write("conf/app.hcl", "a = 1\n"));
"#,
    );
    // The directory does not exist yet: a clear error, nothing half-written.
    t.args(["l.rhai"])
        .run()
        .status(3)
        .stderr_has("error[harun::host::command_failed]: here: `write conf/app.hcl` exited with status 1: directory conf does not exist");
    let t = Test::new().file("harun.hcl", TOPOLOGY).file(
        "l.rhai",
        r#"
let h = host("here");
print(h.mkdir("conf/sub", #{mode: 0o750}));
print(h.write("conf/app.hcl", "a = 1\n", #{mode: 0o600}));
print(h.read("conf/app.hcl"));
print(h.write("conf/app.hcl", "a = 1\n"));
print(parallel(hosts(), |h| h.name));
try { host("elsewhere") } catch (e) { print(e.message) }
try { h.read("conf/missing.hcl") } catch (e) { print(e.code) }
"#,
    );
    let t = t.args(["l.rhai"]);
    t.run().status(0).stdout(
        "true\ntrue\na = 1\n\nfalse\n[\"here\", \"also-here\"]\nno host `elsewhere` in harun.hcl (hosts: here, also-here)\nharun::host::not_found\n",
    );
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &str| std::fs::metadata(t.path(p)).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode("conf/sub"), 0o750);
    assert_eq!(mode("conf/app.hcl"), 0o600);
}

#[test]
fn upload_and_download_copy_files_whole() {
    let t = Test::new()
        .file("harun.hcl", TOPOLOGY)
        .file("local.bin", "line one\nline two\n")
        .file(
            "u.rhai",
            r#"
let h = host("here");
print(h.upload("local.bin", "remote.bin", #{mode: 0o600}));
print(h.upload("local.bin", "remote.bin"));
h.download("remote.bin", "back.bin");
try { h.download("missing.bin", "x.bin") } catch (e) { print(e.code) }
"#,
        )
        .args(["u.rhai"]);
    t.run()
        .status(0)
        .stdout("true\nfalse\nharun::host::not_found\n");
    assert_eq!(
        std::fs::read_to_string(t.path("back.bin")).unwrap(),
        "line one\nline two\n"
    );
    assert!(!t.path("x.bin").exists());
}

#[test]
fn run_options_are_checked() {
    Test::new()
        .file("harun.hcl", TOPOLOGY)
        .args([
            "-e",
            "host(\"here\").run(\"true\", #{sudo: true, timout: 3})",
        ])
        .run()
        .status(3)
        .stderr_has(
            "error[harun::host::option]: unknown option `timout` (known: sudo, timeout, stdin)",
        );
    Test::new()
        .file("harun.hcl", TOPOLOGY)
        .args(["-e", "host(\"here\").exec(\"cat\", #{stdin: \"fed\"})"])
        .run()
        .status(0)
        .stdout("fed\n");
}

#[test]
fn a_command_past_its_timeout_is_stopped() {
    Test::new()
        .file("harun.hcl", TOPOLOGY)
        .args(["-e", "host(\"here\").exec(\"sleep 30\", #{timeout: 0.5})"])
        .run()
        .status(3)
        .stderr_has("error[harun::timeout]: here: `sleep 30`: timed out after");
}

#[test]
fn no_topology_is_a_clear_error() {
    Test::new()
        .args(["-e", "host(\"controller1\")"])
        .run()
        .status(3)
        .stderr_has("error[harun::host::no_topology]: no host `controller1`: there is no topology");
}

#[test]
fn hcl_module_reads_and_edits() {
    Test::new()
        .file(
            "h.rhai",
            r##"
let text = "# vault\nstorage \"file\" {\n  path = \"/vault_storage\"\n}\n";
let m = hcl::parse(text);
print(m.storage.file.path);
let doc = hcl::edit(text);
doc.replace_block("storage[file]", "storage[raft]", #{
    path: "/vault_data",
    node_id: "controller1",
    retry_join: [#{leader_api_addr: "https://controller2:8200"}],
});
doc.set("disable_mlock", true);
print(doc.to_string());
print(doc.has_block("storage[file]"));
try { hcl::edit("a = ") } catch (e) { print(e.code) }
"##,
        )
        .args(["h.rhai"])
        .run()
        .status(0)
        .stdout(
            "/vault_storage
# vault
storage \"raft\" {
  node_id = \"controller1\"
  path = \"/vault_data\"

  retry_join {
    leader_api_addr = \"https://controller2:8200\"
  }
}
disable_mlock = true

false
harun::hcl::syntax
",
        );
}
