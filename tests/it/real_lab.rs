//! The lab on real servers (`harun lab up --real`): the real Consul 1.8.7 that tests/setup
//! installs runs in place of the Consul twin, with configs written for its version, and
//! the story goes to HA on it in the story's configuration (HTTPS 8501, ACLs, gossip key)
//! with the Nomad and Vault twins registering at the real agents. A missing `consul` fails
//! the test, it never skips.

use std::path::PathBuf;

use crate::common::lab::{script, Lab};

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The real Consul tests/setup installed, as `lab up --real` finds it on PATH.
fn real_consul() -> PathBuf {
    let out = std::process::Command::new("sh")
        .args(["-c", "command -v consul"])
        .output()
        .unwrap();
    let path = text(&out.stdout).trim().to_string();
    assert!(
        !path.is_empty(),
        "real Consul is missing: run tests/setup (it installs Debian bullseye's consul)"
    );
    std::fs::canonicalize(path).unwrap()
}

/// What a script prints on stdout, run on the lab's topology; it must exit 0.
fn eval(lab: &Lab, code: &str) -> String {
    let out = lab.harun(&["-e", code]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{code}:\n{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout).trim().to_string()
}

/// `ha.rhai` takes a lab whose Consul is the real 1.8.7, in the story's configuration, from
/// one server to three; Consul itself then reports three voters with the first state's KV
/// entries, the Vault twins registered at their own real agents, and a second run and the
/// health check find nothing wrong.
#[test]
fn the_story_goes_to_ha_on_a_real_consul_with_tls_and_acls() {
    let consul = real_consul();
    let lab = Lab::up_with(&["--real", "--story"]);

    // `lab status` says what is real, and the process serving controller1's Consul is
    // that binary.
    let status = text(&lab.lab("status", &[]).stdout);
    assert_eq!(
        status.lines().nth(1),
        Some(
            format!(
                "real servers: consul 1.8.7 ({}); twins: nomad, vault",
                consul.display()
            )
            .as_str()
        ),
        "{status}"
    );
    let pid = std::fs::read_to_string(lab.dir.join("controller1/run/consul.pid")).unwrap();
    assert_eq!(
        std::fs::read_link(format!("/proc/{}/exe", pid.trim())).unwrap(),
        consul
    );
    // The config is one Consul 1.8 accepts (it refuses 1.9's ui_config).
    let validate = std::process::Command::new(&consul)
        .arg("validate")
        .arg(lab.dir.join("controller2/consul.hcl"))
        .output()
        .unwrap();
    assert!(validate.status.success(), "{}", text(&validate.stdout));

    let ha = lab.harun(&[script("ha.rhai").to_str().unwrap()]);
    let stdout = text(&ha.stdout);
    assert_eq!(ha.status.code(), Some(0), "{stdout}\n{}", text(&ha.stderr));
    assert!(
        stdout.starts_with("OK - ")
            && stdout.contains("; HA: consul, nomad and vault whole on 3 controllers"),
        "{stdout}"
    );

    // Consul's own answer, over HTTPS with the lab's token: three voters, each server's
    // agent on its real binary, and the first state's KV entries.
    let voters = eval(
        &lab,
        r#"print(consul::raft_configuration(host("controller3")).Servers.filter(|s| s.Voter).len())"#,
    );
    assert_eq!(voters, "3");
    for host in ["controller2", "controller3"] {
        let pid = std::fs::read_to_string(lab.dir.join(host).join("run/consul.pid")).unwrap();
        assert_eq!(
            std::fs::read_link(format!("/proc/{}/exe", pid.trim())).unwrap(),
            consul,
            "{host}"
        );
    }
    let zone = eval(
        &lab,
        r#"print(consul::kv_get(host("controller3"), "homelab/dns/zone"))"#,
    );
    assert_eq!(zone, "home.arpa");
    // Every Vault node registered at its own real agent (the story's rule), its check
    // passing while it is unsealed.
    let checks = eval(
        &lab,
        r#"let c = consul::health_state(host("controller1"), "any").filter(|c| c.ServiceName == "vault").map(|c| `${c.Node} ${c.Status}`); c.sort(); print(c)"#,
    );
    assert_eq!(
        checks,
        r#"["controller1 passing", "controller2 passing", "controller3 passing"]"#
    );

    let again = lab.harun(&[script("ha.rhai").to_str().unwrap()]);
    assert!(
        again.status.success() && text(&again.stdout).contains("nothing to change: 3 vault voters"),
        "{}{}",
        text(&again.stdout),
        text(&again.stderr)
    );
    let health = lab.harun(&[script("health.rhai").to_str().unwrap()]);
    assert_eq!(
        health.status.code(),
        Some(0),
        "{}{}",
        text(&health.stdout),
        text(&health.stderr)
    );
    assert!(
        text(&health.stdout).starts_with("OK - consul: leader, 3 voters; nomad: leader"),
        "{}",
        text(&health.stdout)
    );
}

/// A binary named with `--consul-bin` must be Consul: anything else is refused before the
/// lab starts, naming the file.
#[test]
fn a_consul_bin_that_is_not_consul_is_refused() {
    let test = crate::common::Test::new();
    let dir = test.path("lab");
    let out = test
        .command()
        .args(["lab", "up", "--dir"])
        .arg(&dir)
        .args(["--consul-bin", "/bin/true"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("/bin/true is not a Consul binary"),
        "{}",
        text(&out.stderr)
    );
    assert!(!dir.join("lab.json").exists());
}
