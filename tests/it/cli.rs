//! The command-line contract: output, diagnostics and exit statuses a user (or a monitoring
//! system) sees.

use crate::common;

use common::Test;

#[test]
fn eval_prints_42() {
    Test::new()
        .args(["-e", "print(40 + 2)"])
        .run()
        .status(0)
        .stdout("42\n");
}

#[test]
fn eval_prints_a_non_unit_result() {
    Test::new()
        .args(["-e", "40 + 2"])
        .run()
        .status(0)
        .stdout("42\n");
    Test::new()
        .args(["-e", "let x = 1;"])
        .run()
        .status(0)
        .stdout("");
}

#[test]
fn syntax_error_shows_file_line_column_and_caret() {
    Test::new()
        .file("bad.rhai", "let x = 1;\nlet y = foo(1;\n")
        .args(["bad.rhai"])
        .run()
        .status(3)
        .stdout("")
        .stderr(
            "error[harun::script::syntax]: Expecting ',' to separate the arguments to function call 'foo'
 --> bad.rhai:2:14
  |
2 | let y = foo(1;
  |              ^
",
        );
}

#[test]
fn critical_exits_2_with_summary_line() {
    Test::new()
        .file("check.rhai", "critical(\"x\")")
        .args(["check.rhai"])
        .run()
        .status(2)
        .stdout("CRITICAL - x\n");
}

#[test]
fn summary_line_comes_first_and_worst_status_wins() {
    Test::new()
        .file(
            "health.rhai",
            r#"
print("checked 3 nodes");
ok("consul has 3 servers");
warning("disk 91% on controller2");
unknown("controller3 unreachable");
"#,
        )
        .args(["health.rhai"])
        .run()
        .status(1)
        .stdout("WARNING - disk 91% on controller2; controller3 unreachable; consul has 3 servers\nchecked 3 nodes\n");
}

#[test]
fn exit_ends_the_script_with_its_status() {
    Test::new()
        .args(["-e", "print(\"a\"); exit(2); print(\"never\")"])
        .run()
        .status(2)
        .stdout("a\n");
    // Not catchable: a `try` around it does not keep the script going.
    Test::new()
        .args(["-e", "try { exit(1) } catch (e) { print(\"caught\") }"])
        .run()
        .status(1)
        .stdout("");
    // exit() with no status exits with the worst reported.
    Test::new()
        .args(["-e", "warning(\"w\"); exit(); critical(\"never\")"])
        .run()
        .status(1)
        .stdout("WARNING - w\n");
}

#[test]
fn runtime_error_exits_3_with_position_and_call_stack() {
    let out = Test::new()
        .file(
            "lib/util.rhai",
            "// helpers\nfn check_node(n) {\n    let m = #{a: 1};\n    m.missing\n}\n",
        )
        .file(
            "main.rhai",
            "import \"lib/util\" as util;\nfn outer(x) {\n    util::check_node(x)\n}\nok(\"before\");\nouter(1);\n",
        )
        .args(["main.rhai"])
        .run()
        .status(3);
    assert_eq!(
        out.stderr,
        "error[harun::script::unknown_property]: Property not found: missing
 --> lib/util.rhai:4:7
  |
4 |     m.missing
  |       ^
  = in `check_node` called at main.rhai:3:11
  = in `outer` called at main.rhai:6:1
"
    );
    // Monitoring still gets a first line naming the problem.
    assert_eq!(
        out.stdout,
        "UNKNOWN - harun::script::unknown_property: Property not found: missing; before\n"
    );
}

#[test]
fn native_function_errors_carry_code_and_script_position() {
    Test::new()
        .file("r.rhai", "let x = 1;\nlet t = local::read(\"/nonexistent/x.txt\");\n")
        .args(["r.rhai"])
        .run()
        .status(3)
        .stderr(
            "error[harun::local::read]: cannot read /nonexistent/x.txt: No such file or directory (os error 2)
 --> r.rhai:2:16
  |
2 | let t = local::read(\"/nonexistent/x.txt\");
  |                ^
",
        );
}

#[test]
fn errors_are_catchable_by_code() {
    Test::new()
        .args([
            "-e",
            "try { local::read(\"/nonexistent\") } catch (e) { print(e.code) }",
        ])
        .run()
        .status(0)
        .stdout("harun::local::read\n");
}

#[test]
fn check_reports_errors_and_runs_nothing() {
    let t = Test::new()
        .file("good.rhai", "local::write(\"marker\", \"ran\");\n")
        .file("bad.rhai", "local::write(\"marker\", \"ran\");\nfn (\n")
        .args(["check", "good.rhai", "bad.rhai"]);
    let out = t.run().status(3).stdout("good.rhai: ok\n");
    assert!(out.stderr.contains("--> bad.rhai:2:4"), "{}", out.stderr);
    assert!(!t.path("marker").exists(), "check ran a script");
}

#[test]
fn check_compiles_imported_modules() {
    Test::new()
        .file("lib/broken.rhai", "fn x( { }\n")
        .file("main.rhai", "import \"lib/broken\" as b;\n")
        .args(["check", "main.rhai"])
        .run()
        .status(3)
        .stderr_has(" --> lib/broken.rhai:1:7");
}

#[test]
fn usage_errors_exit_3_and_help_exits_0() {
    Test::new()
        .args(["--no-such-flag"])
        .run()
        .status(3)
        .stderr_has("unexpected argument '--no-such-flag'");
    Test::new()
        .args(["--set", "novalue", "-e", "1"])
        .run()
        .status(3)
        .stderr_has("expected KEY=VALUE");
    Test::new()
        .args(["--timeout", "soon", "-e", "1"])
        .run()
        .status(3);
    Test::new()
        .args(["--help"])
        .run()
        .status(0)
        .stdout_has("Exit status: 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN");
    Test::new()
        .args(["missing.rhai"])
        .run()
        .status(3)
        .stderr_has("cannot read the script missing.rhai");
}

#[test]
fn params_and_args_reach_the_script() {
    Test::new()
        .file(
            "p.rhai",
            "print(params.node); print(param(\"count\", \"3\")); print(args);",
        )
        .args(["--set", "node=controller2", "p.rhai", "--", "a", "b c"])
        .run()
        .status(0)
        .stdout("controller2\n3\n[\"a\", \"b c\"]\n");
    // A function's own parameter named like a global is its argument.
    Test::new()
        .file(
            "shadow.rhai",
            "fn f(params, topology, args) { [params, topology, args] }\nprint(f(1, 2, 3));",
        )
        .args(["--set", "node=controller2", "shadow.rhai"])
        .run()
        .status(0)
        .stdout("[1, 2, 3]\n");
    Test::new()
        .args(["-e", "param(\"node\")"])
        .run()
        .status(3)
        .stderr_has("error[harun::param::missing]: this script needs --set node=VALUE");
}

/// Typed parameters: a value of the wrong kind stops a shipped script before it looks at
/// any host, naming the flag, where a string compare once took `files=ture` as false.
#[test]
fn a_param_of_the_wrong_kind_names_the_flag() {
    Test::new()
        .file(
            "t.hcl",
            "host \"c1\" {\n  address = \"127.0.0.1\"\n  transport = \"local\"\n}\n",
        )
        .args([
            "--topology",
            "t.hcl",
            "--set",
            "files=ture",
            crate::common::lab::script("health.rhai").to_str().unwrap(),
        ])
        .run()
        .status(3)
        .stderr_has("error[harun::param::invalid]: --set files=ture: not true or false");
    Test::new()
        .args(["--set", "timeout=2m", "--set", "keep=7", "--set", "on=yes", "--set", "l= a,,b "])
        .args([
            "-e",
            "print(param_int(\"keep\", 1)); print(param_bool(\"on\", false)); print(param_list(\"l\", \"x\")); print(param_list(\"none\", \"x, y\")); param_float(\"timeout\", 60)",
        ])
        .run()
        .status(3)
        .stdout("7\ntrue\n[\"a\", \"b\"]\n[\"x\", \"y\"]\n")
        .stderr_has("error[harun::param::invalid]: --set timeout=2m: not a number");
}

#[test]
fn map_typos_are_errors() {
    Test::new()
        .args(["-e", "let m = #{name: 1}; m.nmae"])
        .run()
        .status(3)
        .stderr_has("harun::script::unknown_property");
}

#[test]
fn json_format_is_one_document() {
    let out = Test::new()
        .file("c.rhai", "print(\"hello\"); warning(\"w1\"); #{a: 1}")
        .args(["--format", "json", "c.rhai"])
        .run()
        .status(1);
    let doc: serde_json::Value = serde_json::from_str(&out.stdout).expect("stdout is JSON");
    assert_eq!(doc["status"], "WARNING");
    assert_eq!(doc["code"], 1);
    assert_eq!(doc["summary"], "WARNING - w1");
    assert_eq!(doc["output"][0], "hello");
    assert_eq!(doc["messages"][0]["status"], "WARNING");

    let out = Test::new()
        .args(["--format", "json", "-e", "#{hosts: [1, 2]}"])
        .run()
        .status(0);
    let doc: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(doc["result"]["hosts"][1], 2);
}

/// Had the deadline not cut the sleep short, the run would end OK after 30 s.
#[test]
fn timeout_stops_a_blocked_call() {
    Test::new()
        .args(["--timeout", "1s", "-e", "sleep(30)"])
        .run()
        .status(3)
        .stderr_has("error[harun::deadline]");
}

#[test]
fn timeout_stops_a_busy_loop() {
    Test::new()
        .args(["--timeout", "500ms", "-e", "loop { }"])
        .run()
        .status(3)
        .stderr_has("error[harun::deadline]");
}

/// The signal is sent once the script has logged its first line (stderr is not held back
/// as stdout is: the run is under way); had harun ignored it, the sleep would end after
/// 30 s with status 0.
fn signal_stops_a_blocked_call(signal: i32, code: &str) {
    use std::io::{BufRead, Read};
    let t = Test::new().args([
        "-e",
        "print(\"printed\"); log::warn(\"started\"); sleep(30)",
    ]);
    let mut child = t
        .command()
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = std::io::BufReader::new(child.stderr.take().unwrap());
    let mut first = String::new();
    stderr.read_line(&mut first).unwrap();
    assert!(first.ends_with("started\n"), "{first}");
    // SAFETY: signalling the child we started.
    unsafe { libc::kill(child.id() as i32, signal) };
    let mut rest = String::new();
    stderr.read_to_string(&mut rest).unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(3), "{rest}");
    assert!(rest.contains(code), "{rest}");
    // What the script printed before the signal is not lost.
    assert_eq!(String::from_utf8_lossy(&out.stdout), "printed\n");
}

#[test]
fn sigterm_stops_a_blocked_call() {
    signal_stops_a_blocked_call(libc::SIGTERM, "error[harun::terminated]");
}

#[test]
fn ctrl_c_stops_a_blocked_call() {
    signal_stops_a_blocked_call(libc::SIGINT, "error[harun::interrupted]");
}

#[test]
fn wait_until_gives_up_with_what_it_waited_for() {
    Test::new()
        .args([
            "-e",
            "let n = 0; wait_until(\"three voters\", 0.3, 0.1, || { n += 1; false })",
        ])
        .run()
        .status(3)
        .stderr_has("error[harun::wait::timeout]: gave up waiting for three voters after 0.3s");
    Test::new()
        .args(["-e", "retry(3, 0.05, || 7)"])
        .run()
        .status(0)
        .stdout("7\n");
}

#[test]
fn confirm_refuses_without_a_terminal_unless_yes() {
    Test::new()
        .args(["-e", "confirm(\"wipe raft data on controller2?\")"])
        .run()
        .status(3)
        .stderr_has("error[harun::confirm::refused]: refused without confirmation: wipe raft data on controller2? (no terminal to ask on; pass --yes to confirm)");
    Test::new()
        .args(["--yes", "-e", "confirm(\"wipe?\")"])
        .run()
        .status(0)
        .stdout("true\n");
}

#[test]
fn secret_file_must_not_be_readable_by_others() {
    let t = Test::new().file("token", "s3cr3t\n");
    let path = t.path("token");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let t = t.args(["-e", "secret::file(\"token\")"]);
    t.run()
        .status(3)
        .stderr_has("error[harun::secret::file_mode]: the secret file token is readable by group or others (mode 0644); run `chmod 600 token`");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    t.run().status(0).stdout("<secret>\n");
}

#[test]
fn shipped_scripts_and_examples_compile() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files: Vec<String> = Vec::new();
    for dir in ["scripts", "examples"] {
        for entry in std::fs::read_dir(root.join(dir))
            .into_iter()
            .flatten()
            .flatten()
        {
            let path = entry.path();
            if path.extension().is_some_and(|e| e == "rhai") {
                files.push(path.display().to_string());
            }
        }
    }
    assert!(!files.is_empty());
    Test::new()
        .args(std::iter::once("check".to_string()).chain(files))
        .run()
        .status(0);
}

#[test]
fn topology_report_example_plans_its_write() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let t = Test::new().args([
        "--topology",
        root.join("examples/story.hcl").to_str().unwrap(),
        "--dry-run",
        root.join("examples/topology-report.rhai").to_str().unwrap(),
    ]);
    let out = t.run().status(0);
    assert!(
        out.stdout.starts_with("OK - 3 controllers in ")
            && out
                .stdout
                .lines()
                .next()
                .unwrap()
                .ends_with(", and 1 other host(s)"),
        "{}",
        out.stdout
    );
    assert!(out
        .stdout
        .contains("  1. [write] local: write topology-report.txt (mode 0644)"));
    assert!(!t.path("topology-report.txt").exists());
}

/// The lab's own errors carry their kind's code: a directory without a lab says how to
/// start one.
#[test]
fn a_lab_command_without_a_lab_names_the_directory_and_the_way_to_start_one() {
    let t = Test::new();
    let dir = t.path("nolab");
    std::fs::create_dir_all(&dir).unwrap();
    let dir = dir.to_str().unwrap().to_string();
    t.args(["lab", "status", "--dir", &dir])
        .run()
        .status(3)
        .stderr_has(&format!(
            "error[harun::lab::not_up]: no lab in {dir} (start one with `harun lab up --dir {dir}`)"
        ));
}

/// A script made executable with `#!/usr/bin/env harun` runs as cron runs it: no
/// terminal, an empty environment but PATH, its exit status and summary as harun's.
#[test]
fn an_executable_script_with_a_shebang_runs_under_cron_conditions() {
    let t = Test::new().file(
        "check.rhai",
        "#!/usr/bin/env harun\n// A health check.\nwarning(\"disk at 91%\");\n",
    );
    let script = t.path("check.rhai");
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let bin_dir = common::harun_bin().parent().unwrap().to_path_buf();
    let out = std::process::Command::new(&script)
        .env_clear()
        .env("PATH", format!("{}:/usr/bin:/bin", bin_dir.display()))
        .current_dir(t.path(""))
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "WARNING - disk at 91%\n"
    );
}

/// Editors on other systems start a file with a byte-order mark; a script's error still
/// names its true line.
#[test]
fn a_script_with_a_byte_order_mark_runs() {
    Test::new()
        .file("bom.rhai", "\u{feff}print(\"hi\");\nlet x = ;\n")
        .args(["bom.rhai"])
        .run()
        .status(3)
        .stderr_has("--> bom.rhai:2:");
    Test::new()
        .file("bom.rhai", "\u{feff}#!/usr/bin/env harun\nprint(\"hi\");\n")
        .args(["bom.rhai"])
        .run()
        .status(0)
        .stdout("hi\n");
}

/// A self-import and a cycle between two modules are reported with their chain, exit 3,
/// not a stack overflow (which aborted the process with 134).
#[test]
fn import_cycles_name_the_chain_and_exit_3() {
    Test::new()
        .file("self.rhai", "import \"self\" as me;\nprint(1);\n")
        .args(["self.rhai"])
        .run()
        .status(3)
        .stderr_has("error[harun::script::import_cycle]: import cycle: self.rhai -> self.rhai");
    let pair = Test::new()
        .file("main.rhai", "import \"lib/a\" as a;\nprint(a::x());\n")
        .file("lib/a.rhai", "import \"lib/b\" as b;\nfn x() { 1 }\n")
        .file("lib/b.rhai", "import \"lib/a\" as a;\n");
    let checked = pair.args(["check", "main.rhai"]).run();
    checked
        .status(3)
        .stderr_has("import cycle: lib/a.rhai -> lib/b.rhai -> lib/a.rhai");
    Test::new()
        .file("main.rhai", "import \"lib/a\" as a;\nprint(a::x());\n")
        .file("lib/a.rhai", "import \"lib/b\" as b;\nfn x() { 1 }\n")
        .file("lib/b.rhai", "import \"lib/a\" as a;\n")
        .args(["main.rhai"])
        .run()
        .status(3)
        .stderr_has("error[harun::script::import_cycle]: import cycle: lib/a.rhai -> lib/b.rhai -> lib/a.rhai");
}

/// A function of one name and number of parameters in two files of a run is refused at
/// the import, naming both places: Rhai 1.27 keeps one cache of resolved calls across
/// modules, and here b's last call of its own `helper` would run a's.
#[test]
fn a_function_defined_in_two_files_of_a_run_is_refused() {
    let files = |t: Test| {
        t.file("main.rhai", "import \"lib/b\" as b;\nb::run();\n")
            .file(
                "lib/a.rhai",
                "fn work() { helper(1); helper(1); helper(1) }\n\nfn helper(x) { \"a\" }\n",
            )
            .file(
                "lib/b.rhai",
                "import \"lib/a\" as a;\nfn run() { helper(1); a::work(); print(helper(1)); }\nfn helper(x) { \"b\" }\n",
            )
    };
    files(Test::new())
        .args(["main.rhai"])
        .run()
        .status(3)
        .stdout("")
        .stderr_has("error[harun::script::function_clash]: fn helper, 1 parameter(s), at lib/a.rhai line 3 is also defined at lib/b.rhai line 3");
    // The main script's own functions count too.
    Test::new()
        .file("main.rhai", "fn helper(x) { 0 }\nimport \"lib/a\" as a;\n")
        .file("lib/a.rhai", "fn helper(y) { 1 }\n")
        .args(["main.rhai"])
        .run()
        .status(3)
        .stderr_has("at lib/a.rhai line 1 is also defined at main.rhai line 1");
    // One name with another number of parameters is another function.
    Test::new()
        .file(
            "main.rhai",
            "fn helper(x) { 0 }\nimport \"lib/a\" as a;\nprint(helper(1) + a::helper(1, 2));\n",
        )
        .file("lib/a.rhai", "fn helper(x, y) { 1 }\n")
        .args(["main.rhai"])
        .run()
        .status(0)
        .stdout("1\n");
}

/// `harun lab` takes none of the flags that shape a script's run; its help lists none.
#[test]
fn lab_help_lists_only_what_lab_uses() {
    for args in [vec!["lab", "--help"], vec!["lab", "up", "--help"]] {
        let out = Test::new().args(&args).run().status(0);
        let help = out.stdout;
        for flag in [
            "--dry-run",
            "--set",
            "--topology",
            "--yes",
            "--audit-log",
            "--keep-lab",
        ] {
            assert!(!help.contains(flag), "{args:?} lists {flag}:\n{help}");
        }
    }
    let repl = Test::new().args(["repl", "--help"]).run().status(0);
    assert!(repl.stdout.contains("--topology"));
}

/// `-q` keeps errors only: warnings and progress go, the summary, the output and the
/// exit status stay, and an error still says what went wrong.
#[test]
fn quiet_keeps_errors_only() {
    let script =
        "log::warn(\"a warning\"); log::info(\"progress\"); print(\"output\"); warning(\"half\")";
    let loud = Test::new().args(["-e", script]).run().status(1);
    assert!(loud.stderr.contains("WARN a warning"), "{}", loud.stderr);
    let quiet = Test::new().args(["-q", "-e", script]).run().status(1);
    assert_eq!(quiet.stdout, "WARNING - half\noutput\n");
    assert_eq!(quiet.stderr, "");
    Test::new()
        .args([
            "-q",
            "-e",
            "log::warn(\"a warning\"); log::error(\"it broke\"); nope()",
        ])
        .run()
        .status(3)
        .stderr_has("ERROR it broke")
        .stderr_has("error[harun::script::unknown_function]");
    let failed = Test::new()
        .args(["-q", "-e", "log::warn(\"a warning\"); nope()"])
        .run()
        .status(3);
    assert!(!failed.stderr.contains("WARN"), "{}", failed.stderr);
}
