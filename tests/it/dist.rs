//! harun on the controllers themselves: the static aarch64 build (`cargo xtask dist`, which
//! tests/run makes before the tests) run under qemu-user against a lab run natively, and
//! scripts/install.rhai putting harun onto the lab's hosts and onto real sshd hosts.

use crate::common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::lab::{script, Lab};
use common::sshd::SshLab;
use common::{harun_bin, Test};

const AARCH64: &str = "aarch64-unknown-linux-musl";

fn dist_binary(target: &str) -> PathBuf {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("dist")
        .join(format!("harun-{target}"));
    assert!(
        path.is_file(),
        "{} is missing: build it with `cargo xtask dist --target {target}` (tests/run does)",
        path.display()
    );
    path
}

/// The aarch64 binary under qemu-user, with the arguments given.
fn under_qemu(args: &[&str], cwd: &Path) -> (i32, String, String) {
    let qemu = ["/usr/bin/qemu-aarch64-static", "/usr/bin/qemu-aarch64"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .expect("qemu-user is missing: tests/setup installs qemu-user-static");
    let out = Command::new(qemu)
        .arg(dist_binary(AARCH64))
        .args(args)
        .current_dir(cwd)
        .env_remove("HARUN_TOPOLOGY")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn first_line(text: &str) -> &str {
    text.lines().next().unwrap_or("")
}

/// `harun 0.1.0 (commit abc, target)` -> the commit.
fn commit_of(version: &str) -> String {
    version
        .split("(commit ")
        .nth(1)
        .and_then(|rest| rest.split(',').next())
        .unwrap_or_else(|| panic!("no commit in {version:?}"))
        .to_string()
}

#[test]
fn the_aarch64_build_runs_under_qemu_as_the_native_one_does() {
    let lab = Lab::up();
    let cwd = lab.test.dir.path();

    // The build: static (no interpreter to find on a Pi), for aarch64, of this commit.
    let bytes = std::fs::read(dist_binary(AARCH64)).unwrap();
    assert_eq!(&bytes[..4], b"\x7fELF");
    assert_eq!(
        u16::from_le_bytes([bytes[18], bytes[19]]),
        183,
        "EM_AARCH64"
    );
    assert!(
        bytes.len() <= 20_000_000,
        "{} bytes, over the 20 MB budget",
        bytes.len()
    );
    let (status, version, stderr) = under_qemu(&["--version"], cwd);
    assert_eq!(status, 0, "{stderr}");
    assert!(
        version.starts_with("harun ") && version.contains(AARCH64),
        "{version}"
    );
    let native = Command::new(harun_bin()).arg("--version").output().unwrap();
    let native = String::from_utf8_lossy(&native.stdout).into_owned();
    assert_eq!(
        commit_of(&version),
        commit_of(&native),
        "{version} / {native}"
    );

    let (status, out, stderr) = under_qemu(
        &[
            "-e",
            "let x = [1, 2, 3]; print(x.reduce(|s, v| s + v, 40) - 4)",
        ],
        cwd,
    );
    assert_eq!((status, out.as_str()), (0, "42\n"), "{stderr}");

    // Every shipped script compiles on the ARM build.
    let scripts: Vec<String> = std::fs::read_dir(script(""))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "rhai"))
        .map(|p| p.display().to_string())
        .collect();
    assert!(scripts.len() >= 10, "{scripts:?}");
    let mut args = vec!["check"];
    args.extend(scripts.iter().map(String::as_str));
    let (status, out, stderr) = under_qemu(&args, cwd);
    assert_eq!(status, 0, "{out}{stderr}");

    // health.rhai against the lab (native twins on loopback): the same line and status.
    let topology = lab.dir.join("harun.hcl");
    let health = script("health.rhai");
    let native = lab.harun(&[health.to_str().unwrap()]);
    let native_line = String::from_utf8_lossy(&native.stdout).into_owned();
    let (status, arm, stderr) = under_qemu(
        &[
            "--topology",
            topology.to_str().unwrap(),
            health.to_str().unwrap(),
        ],
        cwd,
    );
    assert_eq!(
        (status, first_line(&arm)),
        (native.status.code().unwrap(), first_line(&native_line)),
        "{stderr}"
    );
    assert!(
        first_line(&arm).starts_with("WARNING - consul: no answer from controller2"),
        "{arm}"
    );
}

/// A binary for install.rhai to put on hosts of this machine's architecture: the test
/// build of harun without its debug information (a tenth of the size, the same program).
fn native_dist(test: &Test) -> PathBuf {
    let dist = test.path("dist");
    std::fs::create_dir_all(&dist).unwrap();
    let arch = std::env::consts::ARCH;
    let status = Command::new("strip")
        .arg("--strip-debug")
        .arg("-o")
        .arg(dist.join(format!("harun-{arch}-unknown-linux-musl")))
        .arg(harun_bin())
        .status()
        .expect("strip (binutils) runs");
    assert!(status.success());
    dist
}

fn sha256(path: &Path) -> String {
    let out = Command::new("sha256sum").arg(path).output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split(' ')
        .next()
        .unwrap()
        .to_string()
}

fn stdout(out: &std::process::Output) -> String {
    format!(
        "{}\n--- stderr\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn install_puts_harun_on_the_lab_hosts_and_their_health_check_runs_there() {
    let lab = Lab::up();
    let dist = native_dist(&lab.test);
    let arch = std::env::consts::ARCH;
    let binary = dist.join(format!("harun-{arch}-unknown-linux-musl"));
    let install = script("install.rhai");
    let scripts = script("");
    let install_with = |extra: &[&str]| {
        let mut args = vec![
            install.to_str().unwrap().to_string(),
            "--set".into(),
            format!("dist={}", dist.display()),
            "--set".into(),
            format!("scripts={}", scripts.display()),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        lab.harun(&args)
    };

    // No build for the hosts' architecture: each host named, nothing put on any.
    let empty = lab.test.path("empty-dist");
    std::fs::create_dir_all(&empty).unwrap();
    let out = lab.harun(&[
        install.to_str().unwrap(),
        "--set",
        &format!("dist={}", empty.display()),
        "--set",
        &format!("scripts={}", scripts.display()),
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", stdout(&out));
    assert!(
        stdout(&out).starts_with(&format!(
            "CRITICAL - install failed on 3 of 3 hosts: controller1: it needs {}/harun-{arch}-unknown-linux-musl ({arch}), which does not exist: build it with cargo xtask dist --target {arch}-unknown-linux-musl; controller2: ",
            empty.display()
        )),
        "{}",
        stdout(&out)
    );
    assert!(!lab.dir.join("controller1/etc/harun").exists());

    // A dry run: the plan, and nothing on the hosts.
    let out = install_with(&["--dry-run"]);
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    assert!(
        stdout(&out).contains("would install on 3 hosts"),
        "{}",
        stdout(&out)
    );
    let host_binary = |host: &str| lab.dir.join(host).join("bin/harun");
    for host in ["controller1", "controller2", "controller3"] {
        assert!(!host_binary(host).exists());
        assert!(!lab.dir.join(host).join("etc/harun").exists());
    }

    let out = install_with(&[]);
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    let text = stdout(&out);
    assert!(
        text.starts_with(&format!(
            "OK - harun installed on 3 hosts: controller1 ({arch}): binary, "
        )),
        "{text}"
    );
    for host in ["controller1", "controller2", "controller3"] {
        assert_eq!(sha256(&host_binary(host)), sha256(&binary), "{host}");
        let etc = lab.dir.join(host).join("etc/harun");
        assert_eq!(
            std::fs::read_to_string(etc.join("harun.hcl")).unwrap(),
            std::fs::read_to_string(lab.dir.join("harun.hcl")).unwrap()
        );
        assert_eq!(
            std::fs::read_to_string(etc.join("scripts/lib/text.rhai")).unwrap(),
            std::fs::read_to_string(script("lib/text.rhai")).unwrap()
        );
        assert!(!lab.dir.join(host).join("bin/harun.harun-new").exists());
    }

    // The installed health check, run on the host as its timer or Consul would run it:
    // the same summary and status as the operator's run.
    let etc = lab.dir.join("controller2/etc/harun");
    let installed = Command::new(host_binary("controller2"))
        .arg("--topology")
        .arg(etc.join("harun.hcl"))
        .arg(etc.join("scripts/health.rhai"))
        .current_dir(lab.test.dir.path())
        .output()
        .unwrap();
    let native = lab.harun(&[script("health.rhai").to_str().unwrap()]);
    assert_eq!(installed.status.code(), native.status.code());
    assert_eq!(
        first_line(&String::from_utf8_lossy(&installed.stdout)),
        first_line(&String::from_utf8_lossy(&native.stdout)),
    );
    assert!(String::from_utf8_lossy(&installed.stdout).starts_with("WARNING - consul"));

    // Again: nothing to change.
    let out = install_with(&[]);
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    assert!(
        stdout(&out).starts_with("OK - harun is up to date on 3 hosts, nothing to change"),
        "{}",
        stdout(&out)
    );

    // A binary that does not run there: the old one stays, nothing is left beside it.
    let before = sha256(&host_binary("controller1"));
    let good = std::fs::read(&binary).unwrap();
    std::fs::write(
        &binary,
        "#!/bin/sh\necho 'Illegal instruction' >&2\nexit 132\n",
    )
    .unwrap();
    let out = install_with(&[]);
    assert_eq!(out.status.code(), Some(2), "{}", stdout(&out));
    assert!(
        stdout(&out)
            .starts_with("CRITICAL - install failed on 3 of 3 hosts: controller1: the new binary"),
        "{}",
        stdout(&out)
    );
    assert!(
        stdout(&out).contains("Illegal instruction"),
        "{}",
        stdout(&out)
    );
    assert_eq!(sha256(&host_binary("controller1")), before);
    assert!(!lab.dir.join("controller1/bin/harun.harun-new").exists());

    // A newer binary replaces the old one; the timer is written, and named as not enabled
    // (the lab's service manager is not systemd).
    let mut newer = good;
    newer.extend_from_slice(b"\0a newer build");
    std::fs::write(&binary, &newer).unwrap();
    // The Consul check only where script checks are on: controller1's Consul runs and
    // reloads; controller3's is down (the story's first state) and reads it when it starts.
    for host in ["controller1", "controller3"] {
        lab.set_config(host, "consul", |text| {
            format!("{text}\nenable_local_script_checks = true\n")
        });
    }
    let out = install_with(&[
        "--set",
        "timer=true",
        "--set",
        "consul_check=true",
        "--set",
        "unseal_timer=true",
        "--set",
        "reboot_timer=true",
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    for said in [
        format!("controller1 ({arch}): binary, timer units, unseal timer units, reboot timer units, consul check;"),
        format!("controller2 ({arch}): binary, timer units, unseal timer units, reboot timer units;"),
        "controller1, controller2, controller3: their service manager is not systemd: start harun-health.timer yourself".into(),
        "controller1, controller2, controller3: their service manager is not systemd: start harun-unseal.timer yourself".into(),
        "controller1, controller2, controller3: their service manager is not systemd: start harun-reboot.timer yourself".into(),
        "controller3: their Consul agent did not reload".into(),
        "controller2: no config file of their Consul sets enable_local_script_checks = true, so the check is not written".into(),
    ] {
        assert!(stdout(&out).contains(&said), "{said}\n{}", stdout(&out));
    }
    assert!(!lab.dir.join("controller2/harun-health.hcl").exists());
    let check = std::fs::read_to_string(lab.dir.join("controller1/harun-health.hcl")).unwrap();
    assert!(
        check.contains(&format!(
            "args     = [\"{}\", \"--topology\", \"{}/harun.hcl\"",
            host_binary("controller1").display(),
            lab.dir.join("controller1/etc/harun").display()
        )),
        "{check}"
    );
    assert_eq!(sha256(&host_binary("controller3")), sha256(&binary));
    let unit =
        std::fs::read_to_string(lab.dir.join("controller1/systemd/harun-health.service")).unwrap();
    assert!(
        unit.contains(&format!(
            "ExecStart=\"{}\" --timeout 4m \"{}/scripts/health.rhai\"",
            host_binary("controller1").display(),
            lab.dir.join("controller1/etc/harun").display()
        )),
        "{unit}"
    );
    // Each controller's unseal timer gives its own shares; the reboot timer reboots only
    // the hosts that ask.
    let unseal =
        std::fs::read_to_string(lab.dir.join("controller2/systemd/harun-unseal.service")).unwrap();
    assert!(
        unseal.contains(&format!(
            "ExecStart=\"{}\" --timeout 50s --set \"host=controller2\" \"{}/scripts/unseal.rhai\"",
            host_binary("controller2").display(),
            lab.dir.join("controller2/etc/harun").display()
        )) && unseal.contains("SuccessExitStatus=1"),
        "{unseal}"
    );
    let reboot =
        std::fs::read_to_string(lab.dir.join("controller3/systemd/harun-reboot.service")).unwrap();
    assert!(
        reboot.contains("--yes --timeout 2h --set reboot=needed")
            && reboot.contains("/scripts/rolling-restart.rhai"),
        "{reboot}"
    );
    assert!(lab
        .dir
        .join("controller3/systemd/harun-reboot.timer")
        .exists());
}

#[test]
fn install_over_ssh_then_nothing_to_change() {
    let hosts = SshLab::start(2);
    let root = hosts.path("hosts");
    let topology = hosts.topology(&format!(
        "  sudo = true\n  harun_binary = \"{0}/{{name}}/bin/harun\"\n  harun_dir = \"{0}/{{name}}/etc/harun\"",
        root.display()
    ));
    let test = Test::new().file("harun.hcl", &topology);
    let dist = native_dist(&test);
    let run = |test: &Test| {
        test.command()
            .arg(script("install.rhai"))
            // No `scripts`: the ones beside install.rhai, whatever the working directory.
            .args(["--set", &format!("dist={}", dist.display())])
            .output()
            .unwrap()
    };
    let out = run(&test);
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    assert!(
        stdout(&out).starts_with(&format!(
            "OK - harun installed on 2 hosts: host1 ({}): binary, ",
            std::env::consts::ARCH
        )),
        "{}",
        stdout(&out)
    );
    for host in ["host1", "host2"] {
        let installed = root.join(host).join("bin/harun");
        // Written through sudo (the topology's `sudo = true`), as /usr/local/bin needs.
        use std::os::unix::fs::MetadataExt;
        assert_eq!(std::fs::metadata(&installed).unwrap().uid(), 0, "{host}");
        let version = Command::new(&installed).arg("--version").output().unwrap();
        assert!(String::from_utf8_lossy(&version.stdout).starts_with("harun "));
        assert_eq!(
            std::fs::read_to_string(root.join(host).join("etc/harun/harun.hcl")).unwrap(),
            topology
        );
    }
    let out = run(&test);
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    assert!(
        stdout(&out).starts_with("OK - harun is up to date on 2 hosts, nothing to change"),
        "{}",
        stdout(&out)
    );
}

/// A loopback address where nothing answers on Consul's ports.
fn free_consul_address() -> String {
    let seed = std::process::id() as usize;
    (0..100)
        .map(|attempt| {
            let n = seed.wrapping_mul(2654435761).wrapping_add(attempt * 131);
            format!("127.{}.{}.11", 90 + n % 60, (n / 60) % 250 + 1)
        })
        .find(|address| {
            [8300, 8301, 8302, 8500, 8502, 8600]
                .iter()
                .all(|port| std::net::TcpListener::bind(format!("{address}:{port}")).is_ok())
        })
        .expect("a free loopback address")
}

/// The Consul script check on real Consul 1.8.7 (the twin runs no checks): written beside
/// the agent's config only where script checks are on, loaded by the reload.
#[test]
fn install_gives_real_consul_the_script_check() {
    let found = Command::new("consul").arg("version").output();
    assert!(
        found.is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("v1.8.7")),
        "real Consul 1.8.7 is missing: run tests/setup (it installs Debian bullseye's consul)"
    );
    let test = Test::new();
    let address = free_consul_address();
    let conf = test.path("consul.d");
    std::fs::create_dir_all(&conf).unwrap();
    std::fs::write(
        conf.join("consul.hcl"),
        format!("bind_addr = \"{address}\"\nclient_addr = \"{address}\"\nlog_level = \"warn\"\n"),
    )
    .unwrap();
    let topology = format!(
        "defaults {{\n  transport = \"local\"\n  harun_binary = \"{dir}/bin/harun\"\n  harun_dir = \"{dir}/etc/harun\"\n}}\nconsul {{\n  address = \"http://{address}:8500\"\n  config_file = \"{conf}/consul.hcl\"\n}}\nhost \"controller1\" {{ address = \"{address}\" }}\n",
        dir = test.path("c1").display(),
        conf = conf.display(),
    );
    let test = test.file("harun.hcl", &topology);
    let dist = native_dist(&test);
    let checks_url = format!("http://{address}:8500/v1/agent/checks");
    // A dev agent on the config directory, its output appended to consul.log.
    let start_consul = || {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(test.path("consul.log"))
            .unwrap();
        let consul = Command::new("consul")
            .args(["agent", "-dev", "-config-dir"])
            .arg(&conf)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        common::http::eventually("consul's API", std::time::Duration::from_secs(20), || {
            common::http::request("GET", &checks_url, "").ok()
        });
        consul
    };
    let mut consul = start_consul();
    let install = |extra: &str| {
        let mut args = vec![
            script("install.rhai").display().to_string(),
            "--set".into(),
            format!("dist={}", dist.display()),
            "--set".into(),
            format!("scripts={}", script("").display()),
            "--set".into(),
            "consul_check=true".into(),
        ];
        if !extra.is_empty() {
            args.push(extra.into());
        }
        test.command().args(&args).output().unwrap()
    };

    // Script checks off: the check is not written (Consul would not start again with it).
    let out = install("");
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    assert!(
        stdout(&out).contains(
            "controller1: no config file of their Consul sets enable_local_script_checks = true"
        ),
        "{}",
        stdout(&out)
    );
    assert!(!conf.join("harun-health.hcl").exists());

    // On: written, and the agent reloaded knows it.
    std::fs::write(
        conf.join("checks.hcl"),
        "enable_local_script_checks = true\n",
    )
    .unwrap();
    // The setting itself takes a restart: reload does not turn script checks on.
    let _ = consul.kill();
    let _ = consul.wait();
    let mut consul = start_consul();
    let out = install("");
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    assert!(stdout(&out).contains(": consul check"), "{}", stdout(&out));
    let checks = common::http::get(&checks_url).json();
    let again = install("");
    let _ = consul.kill();
    let _ = consul.wait();
    assert_eq!(
        checks["harun-health"]["Name"],
        "harun health",
        "{checks}\n{}",
        std::fs::read_to_string(test.path("consul.log")).unwrap_or_default()
    );
    assert!(conf.join("harun-health.hcl").exists());
    assert!(
        stdout(&again).starts_with("OK - harun is up to date on 1 host, nothing to change"),
        "{}",
        stdout(&again)
    );
}
