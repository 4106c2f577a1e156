//! Health benchmark: one run of scripts/health.rhai on a lab taken to HA (3 controllers x
//! Consul, Nomad and Vault, a worker), beside the shell script an operator would write for
//! the same verdict: curl on each controller's agents (leaders, raft configurations, Nomad
//! members and nodes, Vault health) and jq to count. Wall time (median of ROUNDS) and
//! harun's peak RSS.
//!
//! Targets: at least 5x less wall time than the script, under 100 ms, under 20 MB.
//! Run: `cargo bench --bench health` (it needs curl and jq: `tests/setup --bench`).

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const ROUNDS: usize = 15;

struct Sample {
    wall: Duration,
    max_rss_kib: i64,
}

/// Runs a command once and reads its peak RSS from wait4's rusage. A health check's
/// WARNING (1) is a result, not a failure.
#[allow(clippy::zombie_processes)] // reaped by wait4, which std's wait() cannot replace
fn run_once(cmd: &mut Command) -> Sample {
    let started = Instant::now();
    let child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("starts");
    let mut status = 0;
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: waiting for our own child, with valid pointers to locals.
    let pid = unsafe { libc::wait4(child.id() as i32, &mut status, 0, &mut usage) };
    let wall = started.elapsed();
    assert_eq!(pid, child.id() as i32, "wait4 failed");
    let code = libc::WEXITSTATUS(status);
    assert!(code <= 1, "{cmd:?} exited {code}");
    Sample {
        wall,
        max_rss_kib: usage.ru_maxrss,
    }
}

fn median(cmd: &mut Command) -> (Duration, f64) {
    for _ in 0..3 {
        run_once(cmd);
    }
    let mut samples: Vec<Sample> = (0..ROUNDS).map(|_| run_once(cmd)).collect();
    samples.sort_by_key(|s| s.wall);
    let rss = samples.iter().map(|s| s.max_rss_kib).max().unwrap_or(0);
    (samples[ROUNDS / 2].wall, rss as f64 / 1024.0)
}

/// The script an operator would write: the same questions, one curl each, counted by jq.
fn shell_script(addresses: &[String]) -> String {
    let mut s = String::from("set -e\n");
    for a in addresses {
        s.push_str(&format!(
            "curl -sf http://{a}:8500/v1/status/leader >/dev/null\n\
             curl -sf http://{a}:4646/v1/agent/self | jq -e '.stats.nomad.leader_addr' >/dev/null\n\
             curl -s http://{a}:8200/v1/sys/health | jq -e '.initialized' >/dev/null\n"
        ));
    }
    let a = &addresses[0];
    s.push_str(&format!(
        "curl -sf http://{a}:8500/v1/operator/raft/configuration | jq '[.Servers[] | select(.Voter)] | length' >/dev/null\n\
         curl -sf http://{a}:4646/v1/operator/raft/configuration | jq '[.Servers[] | select(.Voter)] | length' >/dev/null\n\
         curl -sf http://{a}:4646/v1/agent/members | jq '[.Members[] | select(.Status == \"alive\")] | length' >/dev/null\n\
         curl -sf http://{a}:4646/v1/nodes | jq '[.[] | select(.Status != \"ready\")] | length' >/dev/null\n\
         curl -sf http://{a}:8200/v1/sys/seal-status | jq -r '.storage_type' >/dev/null\n\
         curl -sf http://{a}:8500/v1/health/state/critical | jq 'length' >/dev/null\n"
    ));
    s
}

fn main() {
    let harun = env!("CARGO_BIN_EXE_harun");
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = tempfile::tempdir().unwrap();
    let lab = dir.path().join("lab");
    let up = Command::new(harun)
        .args(["lab", "up", "--workers", "1", "--dir"])
        .arg(&lab)
        .output()
        .unwrap();
    assert!(
        up.status.success(),
        "{}",
        String::from_utf8_lossy(&up.stderr)
    );
    let topology = lab.join("harun.hcl");
    let ha = Command::new(harun)
        .arg("--topology")
        .arg(&topology)
        .arg(root.join("scripts/ha.rhai"))
        .output()
        .unwrap();
    assert!(
        ha.status.success(),
        "{}",
        String::from_utf8_lossy(&ha.stdout)
    );
    let text = std::fs::read_to_string(&topology).unwrap();
    let addresses: Vec<String> = ["controller1", "controller2", "controller3"]
        .iter()
        .map(|h| {
            let block = &text[text.find(&format!("host \"{h}\"")).unwrap()..];
            let value = &block[block.find("address").unwrap()..];
            value.split('"').nth(1).unwrap().to_string()
        })
        .collect();

    let (harun_wall, harun_rss) = median(
        Command::new(harun)
            .arg("--topology")
            .arg(&topology)
            .arg(root.join("scripts/health.rhai")),
    );
    let script = shell_script(&addresses);
    let (shell_wall, _) = median(Command::new("sh").args(["-c", &script]));
    let _ = Command::new(harun)
        .args(["lab", "down", "--dir"])
        .arg(&lab)
        .output();

    println!("One health check of 3 controllers x Consul, Nomad, Vault, median of {ROUNDS}:");
    println!(
        "  harun health.rhai   {:>8.1} ms, peak {harun_rss:.1} MiB",
        harun_wall.as_secs_f64() * 1000.0
    );
    println!(
        "  curl + jq script    {:>8.1} ms",
        shell_wall.as_secs_f64() * 1000.0
    );
    let ratio = shell_wall.as_secs_f64() / harun_wall.as_secs_f64();
    let met = |ok: bool| if ok { "met" } else { "MISSED" };
    println!(
        "  ratio {ratio:.1}x; target at least 5x: {}",
        met(ratio >= 5.0)
    );
    println!(
        "  under 100 ms: {}; under 20 MB: {}",
        met(harun_wall < Duration::from_millis(100)),
        met(harun_rss < 20.0)
    );
}
