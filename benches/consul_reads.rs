//! Consul reads benchmark: members, raft configuration and leader from a real three-server
//! Consul 1.8.7 cluster (loopback aliases), by harun in one run beside what an operator
//! would otherwise script: `consul members`, `consul operator raft list-peers` and curl on
//! /v1/status/leader. Wall time of the whole command, median of ROUNDS.
//!
//! Target: harun at least 5x less wall time.
//! Run: `tests/setup --bench && cargo bench --bench consul_reads`.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const ROUNDS: usize = 15;

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn timed(cmd: &mut Command) -> Duration {
    let started = Instant::now();
    let out = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .expect("runs");
    let took = started.elapsed();
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    took
}

struct Cluster {
    children: Vec<Child>,
    _dir: tempfile::TempDir,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn start(block: &str) -> Cluster {
    let dir = tempfile::tempdir().unwrap();
    let mut children = Vec::new();
    for i in 1..=3 {
        let data = dir.path().join(format!("data{i}"));
        std::fs::create_dir_all(&data).unwrap();
        let config = dir.path().join(format!("consul{i}.hcl"));
        std::fs::write(
            &config,
            format!(
                "datacenter = \"homelab\"\ndata_dir = \"{}\"\nnode_name = \"controller{i}\"\nserver = true\nbootstrap_expect = 3\nbind_addr = \"{block}.1{i}\"\nclient_addr = \"{block}.1{i}\"\nretry_join = [\"{block}.11\", \"{block}.12\", \"{block}.13\"]\nlog_level = \"error\"\n",
                data.display()
            ),
        )
        .unwrap();
        children.push(
            Command::new("consul")
                .arg("agent")
                .arg(format!("-config-file={}", config.display()))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("consul is installed (tests/setup)"),
        );
    }
    Cluster {
        children,
        _dir: dir,
    }
}

fn main() {
    let block = format!(
        "127.{}.{}",
        200 + std::process::id() % 40,
        std::process::id() % 250
    );
    let cluster = start(&block);
    let api = format!("http://{block}.11:8500");
    let started = Instant::now();
    loop {
        let out = Command::new("curl")
            .args(["-s", &format!("{api}/v1/operator/raft/configuration")])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        if text.matches("\"Voter\":true").count() == 3 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "no three-voter cluster: {text}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    let dir = tempfile::tempdir().unwrap();
    let topology = dir.path().join("harun.hcl");
    std::fs::write(
        &topology,
        format!("host \"controller1\" {{\n  address = \"{block}.11\"\n  transport = \"local\"\n  consul {{ address = \"http://{{address}}:8500\" }}\n}}\n"),
    )
    .unwrap();
    let script = "let h = host(\"controller1\"); let m = consul::members(h); let r = consul::raft_configuration(h); let l = consul::leader(h); print(`${m.len()} ${r.Servers.len()} ${l}`);";
    let harun = median(
        (0..ROUNDS)
            .map(|_| {
                timed(
                    Command::new(env!("CARGO_BIN_EXE_harun"))
                        .arg("--topology")
                        .arg(&topology)
                        .args(["-e", script]),
                )
            })
            .collect(),
    );
    let shell = format!(
        "consul members -http-addr={api} && consul operator raft list-peers -http-addr={api} && curl -sf {api}/v1/status/leader"
    );
    let cli = median(
        (0..ROUNDS)
            .map(|_| timed(Command::new("sh").args(["-c", &shell])))
            .collect(),
    );
    println!("Consul reads (members, raft configuration, leader), median of {ROUNDS}:");
    println!(
        "  harun            {:>8.1} ms",
        harun.as_secs_f64() * 1000.0
    );
    println!("  consul CLI+curl  {:>8.1} ms", cli.as_secs_f64() * 1000.0);
    let ratio = cli.as_secs_f64() / harun.as_secs_f64();
    println!(
        "  ratio {ratio:.1}x; target at least 5x less wall time: {}",
        if ratio >= 5.0 { "met" } else { "MISSED" }
    );
    drop(cluster);
}
