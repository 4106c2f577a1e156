//! The local transport: the same host API on this machine (cron on a controller, the lab).

use crate::common;

use common::Test;

const TOPOLOGY: &str =
    "defaults { transport = \"local\" }\nhost \"here\" {}\nhost \"also-here\" {}\n";

/// The names of write leftovers (`.harun.*`) in `dir`, sorted.
fn writes_left_in(dir: &std::path::Path) -> Vec<String> {
    let mut left: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".harun."))
        .collect();
    left.sort();
    left
}

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

/// A host write puts a new file in place by rename: a reader that opened the old file
/// goes on reading it whole, and no temporary name is left beside it.
#[test]
fn a_host_write_never_writes_the_old_file_in_place() {
    let t = Test::new()
        .file("harun.hcl", TOPOLOGY)
        .file("app.hcl", "a = 1\n")
        .args(["-e", "host(\"here\").write(\"app.hcl\", \"a = 2\\n\")"]);
    let reader = std::fs::File::open(t.path("app.hcl")).unwrap();
    t.run().status(0);
    assert_eq!(
        std::fs::read_to_string(t.path("app.hcl")).unwrap(),
        "a = 2\n"
    );
    assert_eq!(std::io::read_to_string(&reader).unwrap(), "a = 1\n");
    let left = writes_left_in(t.dir.path());
    assert!(left.is_empty(), "{left:?}");
}

/// What a write killed with its shell left (its `.harun.PID.XXXXXX` directory) goes with
/// the next write into that directory, also one that changes nothing (a kill after the
/// rename leaves a file already right). A writer still running keeps its directory, and a
/// PID now used by a process that started after the directory last changed is not it.
#[test]
fn what_killed_writes_left_goes_with_the_next_write() {
    let t = Test::new()
        .file("harun.hcl", TOPOLOGY)
        .file("app.hcl", "a = 1\n")
        .args([
            "-e",
            "print(host(\"here\").write(\"app.hcl\", \"a = 1\\n\"))",
        ]);
    let mut gone = std::process::Command::new("true").spawn().unwrap();
    let gone_pid = gone.id();
    gone.wait().unwrap();
    let mut running = std::process::Command::new("sleep")
        .arg("60")
        .spawn()
        .unwrap();
    let pid = running.id();
    let dead = format!(".harun.{gone_pid}.aaaaaa");
    let reused = format!(".harun.{pid}.bbbbbb");
    let live = format!(".harun.{pid}.cccccc");
    for name in [&dead, &reused, &live] {
        std::fs::create_dir(t.path(name)).unwrap();
    }
    let touched = std::process::Command::new("touch")
        .args(["-d", "1 hour ago"])
        .arg(t.path(&reused))
        .status()
        .unwrap();
    assert!(touched.success());
    t.run().status(0).stdout("false\n");
    let left = writes_left_in(t.dir.path());
    let _ = running.kill();
    let _ = running.wait();
    assert_eq!(left, [live], "{dead} and {reused} should be gone");
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

/// `parallel` runs up to 16 hosts at a time, and really 16: over 20 hosts, each command
/// marks itself in, notes how many are in, and waits until 16 are in (or the first to see
/// 16 let everyone go); the most ever in at once is 16.
#[test]
fn parallel_runs_sixteen_hosts_at_a_time() {
    let mut topology = String::from("defaults { transport = \"local\" }\n");
    for i in 1..=20 {
        topology.push_str(&format!("host \"h{i}\" {{}}\n"));
    }
    let t = Test::new().file("harun.hcl", &topology);
    let dir = t.path("");
    std::fs::create_dir(t.path("in")).unwrap();
    let d = dir.display();
    let script = format!(
        r#"parallel(hosts(), |h| h.exec(`mkdir {d}/in/${{h.name}}
ls {d}/in | wc -l >> {d}/counts
i=0
while [ "$(ls {d}/in | wc -l)" -lt 16 ] && [ ! -e {d}/released ] && [ "$i" -lt 1200 ]; do sleep 0.05; i=$((i+1)); done
touch {d}/released
ls {d}/in | wc -l >> {d}/counts
rmdir {d}/in/${{h.name}}`)); print("done")"#
    );
    let t = t.args(["-e", &script]);
    t.run().status(0).stdout("done\n");
    let counts: Vec<usize> = std::fs::read_to_string(dir.join("counts"))
        .unwrap()
        .split_whitespace()
        .map(|n| n.parse().unwrap())
        .collect();
    assert_eq!(counts.len(), 40, "{counts:?}");
    assert_eq!(counts.iter().max(), Some(&16), "{counts:?}");
}
