//! Lab start-up benchmark: `harun lab up` (3 controllers x Consul, Nomad and Vault in the
//! story's first state: a Consul and a Nomad leader, Vault initialised and unsealed) and
//! `harun lab down`, beside what an operator would otherwise start to rehearse on: one real
//! `consul agent -dev`, until it has a leader. Wall time, median of ROUNDS.
//!
//! Target: lab up under 3 s (it starts every lab test; a timing that belongs here, not in
//! the tests). Run: `cargo bench --bench lab_up` (it needs consul: `tests/setup`).

use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const ROUNDS: usize = 7;

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// One `lab up` and one `lab down` in a fresh directory.
fn lab_round(harun: &str) -> (Duration, Duration) {
    let dir = tempfile::tempdir().unwrap();
    let lab = dir.path().join("lab");
    let started = Instant::now();
    let up = Command::new(harun)
        .args(["lab", "up", "--dir"])
        .arg(&lab)
        .output()
        .unwrap();
    let up_took = started.elapsed();
    assert!(
        up.status.success(),
        "{}",
        String::from_utf8_lossy(&up.stderr)
    );
    let started = Instant::now();
    let down = Command::new(harun)
        .args(["lab", "down", "--dir"])
        .arg(&lab)
        .output()
        .unwrap();
    assert!(
        down.status.success(),
        "{}",
        String::from_utf8_lossy(&down.stderr)
    );
    (up_took, started.elapsed())
}

/// One `consul agent -dev`, from exec to a leader on its HTTP port; then stopped.
fn consul_dev_round() -> Duration {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let data = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let mut agent = Command::new("consul")
        .args([
            "agent",
            "-dev",
            "-bind",
            "127.0.0.1",
            "-client",
            "127.0.0.1",
        ])
        .args(["-http-port", &port.to_string(), "-dns-port", "-1"])
        .arg(format!("-data-dir={}", data.path().display()))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("consul runs (tests/setup installs it)");
    let url = format!("http://127.0.0.1:{port}/v1/status/leader");
    let took = loop {
        let leader = Command::new("curl")
            .args(["-sf", "--max-time", "1", &url])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default();
        if leader.len() > 2 {
            break started.elapsed();
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "no consul leader"
        );
        std::thread::sleep(Duration::from_millis(10));
    };
    let _ = agent.kill();
    let _ = agent.wait();
    took
}

fn main() {
    let harun = env!("CARGO_BIN_EXE_harun");
    lab_round(harun);
    let (ups, downs): (Vec<_>, Vec<_>) = (0..ROUNDS).map(|_| lab_round(harun)).unzip();
    consul_dev_round();
    let devs: Vec<Duration> = (0..ROUNDS).map(|_| consul_dev_round()).collect();
    let (up, down, dev) = (median(ups), median(downs), median(devs));
    println!("Lab start-up, median of {ROUNDS}:");
    println!("  harun lab up (9 services)    {:>8.1} ms", ms(up));
    println!("  harun lab down               {:>8.1} ms", ms(down));
    println!("  consul agent -dev to leader  {:>8.1} ms", ms(dev));
    println!(
        "  lab up / one consul -dev: {:.2}x; target under 3 s: {}",
        up.as_secs_f64() / dev.as_secs_f64(),
        if up < Duration::from_secs(3) {
            "met"
        } else {
            "MISSED"
        }
    );
}
