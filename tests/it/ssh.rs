//! Hosts over real SSH: sshd processes on loopback aliases, a test user with sudo.

use crate::common;

use common::sshd::{SshLab, PASSWORD_SUDO_USER, USER};
use common::{Outcome, Test};

fn test_with(lab: &SshLab, defaults: &str) -> Test {
    Test::new().file("harun.hcl", &lab.topology(defaults))
}

/// Runs `script` as a file against the lab's hosts.
fn run_script(lab: &SshLab, script: &str) -> Outcome {
    test_with(lab, "")
        .file("t.rhai", script)
        .args(["t.rhai"])
        .run()
}

#[test]
fn commands_return_output_and_status() {
    let lab = SshLab::start(1);
    run_script(
        &lab,
        r#"
let h = host("host1");
print(h.exec("echo hello; whoami"));
let r = h.run("echo oops >&2; exit 3");
print(`${r.status} ${r.ok} ${r.stderr}`);
print(h.sudo("whoami"));
print(h.query("echo read-only").stdout);
try { h.exec("echo fine; echo broken >&2; exit 5") } catch (e) { print(e.code); print(e.message) }
try { h.exec("no-such-command-here") } catch (e) { print(e.code) }
"#,
    )
    .status(0)
        .stdout(&format!(
            "hello\n{USER}\n3 false oops\n\nroot\nread-only\n\nharun::host::command_failed\nhost1: `echo fine; echo broken >&2; exit 5` exited with status 5: broken\nharun::host::command_not_found\n"
        ));
}

/// Commands without input run one after another in a resident `sh` per host: each must
/// still start from a clean state and get exactly its own output and status.
#[test]
fn commands_in_a_resident_shell_keep_apart() {
    let lab = SshLab::start(1);
    run_script(
        &lab,
        r#"
let h = host("host1");
h.exec("cd /tmp; X=set; export Y=set; umask 077; set -e");
print(h.exec("pwd; echo ${X:-unset} ${Y:-unset}; umask"));
let r = h.run("printf 'no newline'; printf 'err' >&2; exit 7");
print(`${r.status}|${r.stdout}|${r.stderr}`);
print(h.exec("cat; echo read nothing"));
print(h.run("if then").status);
let big = h.run("head -c 300000 /dev/zero | tr '\\000' e >&2; head -c 2000000 /dev/zero | tr '\\000' o");
print(`${big.stdout.len} ${big.stderr.len} ${big.stdout.index_of("e")}`);
print(h.exec("echo 'quotes \" and $HOME'\\''s'"));
try { h.run("sleep 5", #{timeout: 1}) } catch (e) { print(e.code) }
print(h.exec("echo after a timeout"));
try { h.run("kill -9 $$") } catch (e) { print(e.message) }
print(h.exec("echo after the shell died"));
// Left in the background, still writing to the session: not the next command's output.
print(h.exec("(sleep 0.2; echo stray; echo stray >&2) & echo started"));
sleep(0.6);
print(h.run("echo next; echo $0"));
"#,
    )
    .status(0)
        .stdout(
            "/home/harun-test\nunset unset\n0022\n\
             7|no newline|err\n\
             read nothing\n\
             2\n\
             2000000 300000 -1\n\
             quotes \" and $HOME's\n\
             harun::timeout\n\
             after a timeout\n\
             host1: the session ended before the command did: the remote shell ended\n\
             after the shell died\n\
             started\n\
             #{\"command\": \"echo next; echo $0\", \"host\": \"host1\", \"ok\": true, \"status\": 0, \"stderr\": \"\", \"stdout\": \"next\\nsh\\n\"}\n",
        );
}

/// A login that prints (a `.bashrc` that echoes, `~/.ssh/rc`, a forced banner): none of it
/// may pass for a command's output, in a resident shell or in a session of its own, or a
/// file read over SSH would come back with the banner in front.
#[test]
fn what_the_login_prints_is_no_commands_output() {
    let lab = SshLab::start_with(
        1,
        "ForceCommand echo Welcome to host1; echo mind the banner >&2; eval \"$SSH_ORIGINAL_COMMAND\"\n",
    );
    run_script(
        &lab,
        r#"
let h = host("host1");
let r = h.run("echo first; echo err >&2");
print(`${r.stdout}|${r.stderr}`);
print(h.exec("echo second"));
let file = h.exec("mktemp");
file.trim();
let w = h.run(`cat > ${file}; echo written >&2`, #{stdin: "exact\ncontent"});
print(`${w.stdout}|${w.stderr}`);
print(h.read(file));
print(h.run("if then").status);
h.exec(`rm ${file}`);
"#,
    )
    .status(0)
    .stdout("first\n|err\n\nsecond\n|written\n\nexact\ncontent\n2\n");
}

/// Resident shells hold sessions too: with sshd allowing 2 per connection, eight
/// concurrent callers mixing commands with and without input must all get through.
#[test]
fn sessions_stay_within_max_sessions() {
    let lab = SshLab::start_with(1, "MaxSessions 2\n");
    test_with(&lab, "  max_sessions = 2\n")
        .args([
            "-e",
            r#"let h = host("host1");
let out = parallel([h, h, h, h, h, h, h, h], 8, |h| {
    let a = h.exec("sleep 0.2; echo a");
    let b = h.exec("cat", #{stdin: "b"});
    a + b + h.exec("echo c")
});
print(out)"#,
        ])
        .run()
        .status(0)
        .stdout(&format!("{:?}\n", ["abc"; 8]));
    // More than sshd allows: the error says which two settings disagree.
    test_with(&lab, "  max_sessions = 4\n")
        .args([
            "-e",
            r#"let h = host("host1"); parallel([h, h, h, h], |h| h.exec("sleep 0.5"))"#,
        ])
        .run()
        .status(3)
        .stderr_has("host1: sshd refused another session (is its MaxSessions lower than max_sessions = 4 in the topology?)");
}

#[test]
fn config_file_edited_over_ssh_keeps_comments_and_a_backup() {
    let lab = SshLab::start(1);
    // A root-owned config, as on the story's controllers: the edit needs sudo.
    let dir = lab.path("etc");
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("consul.hcl");
    std::fs::write(
        &config,
        "# consul on host1\nserver = true\nbootstrap_expect = 1 # single server\n",
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o640)).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let script = format!(
        r#"
let h = host("host1");
let path = "{}";
let doc = hcl::edit(h.read(path));
doc.set("bootstrap_expect", 3);
doc.set("retry_join", ["host1", "host2", "host3"]);
print(h.write(path, doc.to_string()));
print(h.write(path, doc.to_string()));
"#,
        config.display()
    );
    let t = test_with(&lab, "  sudo = true").file("edit.rhai", &script);
    t.args(["edit.rhai"])
        .run()
        .status(0)
        .stdout("true\nfalse\n");
    assert_eq!(
        std::fs::read_to_string(&config).unwrap(),
        "# consul on host1\nserver = true\nbootstrap_expect = 3 # single server\nretry_join = [\"host1\", \"host2\", \"host3\"]\n"
    );
    let meta = std::fs::metadata(&config).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o640, "mode kept");
    use std::os::unix::fs::MetadataExt;
    assert_eq!(meta.uid(), 0, "owner kept");
    let backups: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("consul.hcl.harun-")
        })
        .collect();
    assert_eq!(backups.len(), 1);
    assert_eq!(
        std::fs::read_to_string(backups[0].path()).unwrap(),
        "# consul on host1\nserver = true\nbootstrap_expect = 1 # single server\n"
    );
}

#[test]
fn without_sudo_a_root_owned_file_is_a_permission_error() {
    let lab = SshLab::start(1);
    let dir = lab.path("private");
    std::fs::create_dir_all(&dir).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
    std::fs::write(dir.join("vault.hcl"), "ui = true\n").unwrap();
    test_with(&lab, "")
        .args([
            "-e",
            &format!("host(\"host1\").read(\"{}/vault.hcl\")", dir.display()),
        ])
        .run()
        .status(3)
        .stderr_has("error[harun::host::permission]: host1: `cat ")
        .stderr_has("permission denied (set `sudo = true` for this host");
}

#[test]
fn dry_run_over_ssh_plans_the_diff_and_changes_nothing() {
    let lab = SshLab::start(1);
    let file = lab.path("nomad.hcl");
    std::fs::write(&file, "server {\n  bootstrap_expect = 1\n}\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o666)).unwrap();
    let never = lab.path("never");
    let script = format!(
        "let h = host(\"host1\");\nlet doc = hcl::edit(h.read(\"{0}\"));\ndoc.set(\"server.bootstrap_expect\", 3);\nh.write(\"{0}\", doc.to_string());\nh.exec(\"touch {1}\");\n",
        file.display(),
        never.display()
    );
    let out = test_with(&lab, "")
        .file("d.rhai", &script)
        .args(["--dry-run", "d.rhai"])
        .run()
        .status(0);
    assert!(
        out.stdout.contains("  1. [write] host1: write "),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout
            .contains("-  bootstrap_expect = 1\n       +  bootstrap_expect = 3"),
        "{}",
        out.stdout
    );
    assert!(out
        .stdout
        .contains(&format!("  2. [exec] host1: touch {}", never.display())));
    assert!(!never.exists(), "the planned command ran");
    assert_eq!(
        std::fs::read_to_string(&file).unwrap(),
        "server {\n  bootstrap_expect = 1\n}\n"
    );
}

#[test]
fn host_key_mismatch_is_refused_under_the_strict_policy() {
    let lab = SshLab::start(2);
    // known_hosts claims host2's key for host1's address.
    let text = std::fs::read_to_string(&lab.known_hosts).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let host2_key: Vec<&str> = lines[1].split_whitespace().skip(1).collect();
    let first_addr = lines[0].split_whitespace().next().unwrap();
    std::fs::write(
        &lab.known_hosts,
        format!("{first_addr} {}\n{}\n", host2_key.join(" "), lines[1]),
    )
    .unwrap();
    test_with(&lab, "")
        .args(["-e", "host(\"host1\").exec(\"true\")"])
        .run()
        .status(3)
        .stderr_has("error[harun::host::host_key]: host1: host key verification failed");
    // A host missing from known_hosts is refused too, unless accept-new is chosen.
    std::fs::write(&lab.known_hosts, "").unwrap();
    test_with(&lab, "")
        .args(["-e", "host(\"host2\").exec(\"true\")"])
        .run()
        .status(3)
        .stderr_has("error[harun::host::host_key]: host2:");
    test_with(&lab, "  known_hosts = \"accept-new\"")
        .args(["-e", "host(\"host2\").exec(\"echo in\")"])
        .run()
        .status(0)
        .stdout("in\n");
    assert!(std::fs::read_to_string(&lab.known_hosts)
        .unwrap()
        .contains("ssh-ed25519"));
}

#[test]
fn a_refused_key_names_the_user_and_host() {
    let lab = SshLab::start(1);
    let other = lab.path("other_key");
    let status = std::process::Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&other)
        .status()
        .unwrap();
    assert!(status.success());
    let topology = lab.topology("").replace(
        &lab.user_key.display().to_string(),
        &other.display().to_string(),
    );
    Test::new()
        .file("harun.hcl", &topology)
        .args(["-e", "host(\"host1\").exec(\"true\")"])
        .run()
        .status(3)
        .stderr_has(&format!(
            "error[harun::host::auth]: host1: the SSH key was refused for {USER}@"
        ));
}

#[test]
fn a_stopped_sshd_is_unreachable_within_the_timeout() {
    let mut lab = SshLab::start(2);
    lab.hosts[1].stop();
    test_with(&lab, "")
        .args(["-e", "host(\"host2\").exec(\"true\")"])
        .run()
        .status(3)
        .stderr_has("error[harun::host::unreachable]: host2: connection refused by ");
}

#[test]
fn a_host_that_never_answers_times_out() {
    let lab = SshLab::start(1);
    // Accepts TCP connections and never says a word, like a hung machine, for as long as
    // the test lives.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in listener.incoming().flatten() {
            held.push(stream);
        }
    });
    let topology = format!(
        "{}host \"hung\" {{\n  address = \"127.0.0.1\"\n  ssh_port = {port}\n  connect_timeout = \"2s\"\n  command_timeout = \"1s\"\n}}\n",
        lab.topology("")
    );
    // Had harun ignored connect_timeout, the run's own deadline would end it instead
    // (harun::deadline).
    Test::new()
        .file("harun.hcl", &topology)
        .args(["--timeout", "60s", "-e", "host(\"hung\").exec(\"true\")"])
        .run()
        .status(3)
        .stderr_has("error[harun::host::timeout]: hung: ");
}

#[test]
fn one_command_in_parallel_over_twenty_hosts() {
    let lab = SshLab::start(20);
    let out = test_with(&lab, "")
        .file(
            "p.rhai",
            r#"
let results = parallel(hosts(), |h| h.exec("echo $SSH_CONNECTION"));
for i in 0..results.len() {
    // The server address sshd saw: proof that each host was reached on its own.
    print(`${hosts()[i].name} ${results[i].split(" ")[2]}`);
}
"#,
        )
        .args(["p.rhai"])
        .run()
        .status(0);
    let expected: String = lab
        .hosts
        .iter()
        .map(|h| format!("{} {}\n", h.name, h.address))
        .collect();
    assert_eq!(out.stdout, expected);
}

#[test]
fn parallel_reports_every_failed_host() {
    let mut lab = SshLab::start(4);
    lab.hosts[1].stop();
    lab.hosts[3].stop();
    test_with(&lab, "")
        .args([
            "-e",
            "try { parallel(hosts(), |h| h.exec(\"true\")) } catch (e) { print(e.message); print(e.errors.keys()); print(e.results) }",
        ])
        .run()
        .status(0)
        .stdout_has("2 of 4 failed: host2: connection refused by ")
        .stdout_has("; host4: connection refused by ")
        .stdout_has("[\"host2\", \"host4\"]")
        .stdout_has("[\"\", (), \"\", ()]");
}

#[test]
fn services_start_stop_through_a_command_template() {
    let lab = SshLab::start(1);
    // A tiny service manager: a `sleep` process with a pid file stands for the service.
    let state = lab.path("svc");
    std::fs::create_dir_all(&state).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o777)).unwrap();
    let manager = lab.path("svc.sh");
    std::fs::write(
        &manager,
        format!(
            r#"#!/bin/sh
pid={0}/$1.pid
case "$2" in
  start) [ -f "$pid" ] && kill -0 "$(cat "$pid")" 2>/dev/null && exit 0
         nohup sleep 300 >/dev/null 2>&1 & echo $! > "$pid" ;;
  stop) [ -f "$pid" ] && kill "$(cat "$pid")" 2>/dev/null; rm -f "$pid" ;;
  restart) "$0" "$1" stop; "$0" "$1" start ;;
  status) [ -f "$pid" ] && kill -0 "$(cat "$pid")" 2>/dev/null ;;
esac
"#,
            state.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&manager, std::fs::Permissions::from_mode(0o755)).unwrap();
    test_with(
        &lab,
        &format!(
            "  service_manager = \"{} {{service}} {{action}}\"",
            manager.display()
        ),
    )
    .file(
        "s.rhai",
        r#"
let h = host("host1");
print(service::status(h, "consul"));
print(service::start(h, "consul"));
print(service::is_active(h, "consul"));
print(service::start(h, "consul"));
print(service::restart(h, "consul"));
print(service::stop(h, "consul"));
print(service::status(h, "consul"));
"#,
    )
    .args(["s.rhai"])
    .run()
    .status(0)
    .stdout("inactive\ntrue\ntrue\nfalse\ntrue\ntrue\ninactive\n");
}

#[test]
fn control_directories_of_dead_runs_are_removed() {
    let lab = SshLab::start(1);
    let t = test_with(&lab, "");
    let runtime = t.path("run");
    // A run that was killed left its control directory behind (pid 4194303 is not alive).
    let stale = runtime.join("harun-ssh/4194303");
    std::fs::create_dir_all(&stale).unwrap();
    std::fs::write(stale.join("master"), "").unwrap();
    let t = t
        .env("XDG_RUNTIME_DIR", runtime.to_str().unwrap())
        .args(["-e", "host(\"host1\").exec(\"echo ok\")"]);
    t.run().status(0).stdout("ok\n");
    assert!(!stale.exists(), "the stale control directory was kept");
    let left: Vec<_> = std::fs::read_dir(runtime.join("harun-ssh"))
        .unwrap()
        .collect();
    assert!(
        left.is_empty(),
        "this run's control directory was kept: {left:?}"
    );
}

/// A host without an address is reached as ssh itself would reach its name: here an
/// ssh_config `Host` alias, whose HostName, User and IdentityFile are used (the port is the
/// topology's `ssh_port`, 22 unless set).
#[test]
fn a_host_without_an_address_is_reached_through_its_ssh_config_alias() {
    let lab = SshLab::start(1);
    let target = &lab.hosts[0];
    let config = lab.path("ssh_config");
    std::fs::write(
        &config,
        format!(
            "Host story-pi\n  HostName {}\n  User {USER}\n  IdentityFile {}\n",
            target.address,
            lab.user_key.display()
        ),
    )
    .unwrap();
    let topology = format!(
        "defaults {{\n  ssh_config = \"{}\"\n  ssh_port = {}\n  known_hosts_file = \"{}\"\n}}\nhost \"story-pi\" {{}}\n",
        config.display(),
        common::sshd::PORT,
        lab.known_hosts.display()
    );
    let out = Test::new()
        .file("harun.hcl", &topology)
        .args(["-e", "let h = host(\"story-pi\"); print(h.exec(\"whoami\")); print(h.exec(\"echo $SSH_CONNECTION\").split(\" \")[2])"])
        .run()
        .status(0);
    assert_eq!(out.stdout, format!("{USER}\n{}\n", target.address));
}

/// sudo that wants a password (the user may sudo, but not without one) is named as such,
/// not left to hang on a prompt.
#[test]
fn sudo_that_wants_a_password_is_harun_host_sudo() {
    let lab = SshLab::start_with(1, &format!("AllowUsers {PASSWORD_SUDO_USER}\n"));
    let topology = lab.topology("  sudo = true\n").replace(
        &format!("ssh_user = \"{USER}\""),
        &format!("ssh_user = \"{PASSWORD_SUDO_USER}\""),
    );
    Test::new()
        .file("harun.hcl", &topology)
        .args(["--timeout", "60s", "-e", "host(\"host1\").sudo(\"true\")"])
        .run()
        .status(3)
        .stderr_has("error[harun::host::sudo]: host1: ");
}
