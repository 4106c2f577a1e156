//! Health benchmark: one run of scripts/health.rhai on a lab taken to HA (3 controllers x
//! Consul, Nomad and Vault, a worker), beside the shell script an operator would write for
//! the same verdict: curl on each controller's agents (leaders, raft configurations, Nomad
//! members and nodes, Vault health) and jq to count. Wall time (median of ROUNDS) and
//! harun's peak RSS.
//!
//! Targets: at least 5x less wall time than the script, under 100 ms, under 20 MB.
//!
//! Then the cost of the check run every minute when the controllers are reached over SSH
//! (real sshd on the controllers' addresses, the installed topology's transport): CPU per
//! run of harun and its ssh processes, and of sshd on the controllers, for the default run,
//! beside the local-transport run and the full run (`files=true cost=true`). Targets for
//! the default run: at most 30 ms of CPU in all per run, at most 2x the local run's, wall
//! under 100 ms.
//! Run: `cargo bench --bench health` (as root; it needs curl and jq: `tests/setup --bench`).

#[path = "../tests/it/common/sshd.rs"]
#[allow(dead_code)]
mod sshd;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const ROUNDS: usize = 15;

struct Sample {
    wall: Duration,
    max_rss_kib: i64,
    /// User and system CPU of the run (and the children it waited for).
    cpu: Duration,
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
    let time = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    Sample {
        wall,
        max_rss_kib: usage.ru_maxrss,
        cpu: time(usage.ru_utime) + time(usage.ru_stime),
    }
}

/// CPU a process has used (utime + stime), and that of its children it reaped (cutime +
/// cstime), from /proc/PID/stat.
fn proc_cpu(pid: u32) -> Duration {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return Duration::ZERO;
    };
    // Fields after the command's closing parenthesis: state is field 3, utime 14.
    let rest = &stat[stat.rfind(')').map_or(0, |i| i + 2)..];
    let fields: Vec<u64> = rest
        .split_whitespace()
        .skip(11)
        .take(4)
        .filter_map(|f| f.parse().ok())
        .collect();
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as u64;
    Duration::from_millis(fields.iter().sum::<u64>() * 1000 / ticks.max(1))
}

/// The pids of the processes named `name` whose command line mentions `needle`.
fn pids_of(name: &str, needle: &str) -> Vec<u32> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        if comm.trim() == name && String::from_utf8_lossy(&cmdline).contains(needle) {
            found.push(pid);
        }
    }
    found
}

/// CPU per run of `ROUNDS` runs of `cmd`: harun and what it waited for; the ssh masters it
/// left behind (ControlPersist), measured and then stopped; sshd on the controllers (the
/// listeners and every session process they reaped once the masters were gone).
fn cpu_per_run(
    cmd: &mut Command,
    sshd_pids: &[u32],
    control_dir: &Path,
) -> (Duration, Duration, Duration) {
    let sshd_before: Duration = sshd_pids.iter().map(|p| proc_cpu(*p)).sum();
    let mut harun = Duration::ZERO;
    let mut walls = Vec::new();
    for _ in 0..ROUNDS {
        let s = run_once(cmd);
        harun += s.cpu;
        walls.push(s.wall);
    }
    let needle = control_dir.display().to_string();
    let masters = pids_of("ssh", &needle);
    let client: Duration = masters.iter().map(|p| proc_cpu(*p)).sum();
    for pid in &masters {
        unsafe { libc::kill(*pid as i32, libc::SIGTERM) };
    }
    // The session processes end with their masters and are reaped into the listeners'.
    let started = Instant::now();
    while !pids_of("ssh", &needle).is_empty() && started.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(500));
    let sshd_after: Duration = sshd_pids.iter().map(|p| proc_cpu(*p)).sum();
    walls.sort();
    let rounds = ROUNDS as u32;
    (
        (harun + client) / rounds,
        sshd_after.saturating_sub(sshd_before) / rounds,
        walls[ROUNDS / 2],
    )
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

    // The same checks with the controllers (and the worker) reached over real SSH.
    let names = ["controller1", "controller2", "controller3", "worker1"];
    let hosts: Vec<(String, String)> = names
        .iter()
        .map(|h| {
            let block = &text[text.find(&format!("host \"{h}\"")).unwrap()..];
            let value = &block[block.find("address").unwrap()..];
            (h.to_string(), value.split('"').nth(1).unwrap().to_string())
        })
        .collect();
    let ssh = sshd::SshLab::start_on(&hosts, "");
    let sshd_pids: Vec<u32> = ssh.hosts.iter().filter_map(|h| h.pid()).collect();
    let over_ssh = dir.path().join("over-ssh.hcl");
    std::fs::write(
        &over_ssh,
        text.replace(
            "  transport       = \"local\"\n",
            &format!(
                "  transport       = \"ssh\"\n  sudo            = true\n  ssh_user        = \"{}\"\n  ssh_port        = {}\n  ssh_key         = \"{}\"\n  ssh_config      = \"/dev/null\"\n  known_hosts_file = \"{}\"\n",
                sshd::USER,
                sshd::PORT,
                ssh.user_key.display(),
                ssh.known_hosts.display()
            ),
        ),
    )
    .unwrap();
    // harun's ssh masters live under $XDG_RUNTIME_DIR (else /run/user/UID or /dev/shm):
    // a directory of the bench's own, to find them.
    let runtime = tempfile::tempdir().unwrap();
    let health = root.join("scripts/health.rhai");
    let cost = |topology: &Path, extra: &[&str]| {
        cpu_per_run(
            Command::new(harun)
                .env("XDG_RUNTIME_DIR", runtime.path())
                .arg("--topology")
                .arg(topology)
                .args(extra)
                .arg(&health),
            &sshd_pids,
            runtime.path(),
        )
    };
    let local = cost(&topology, &[]);
    let default = cost(&over_ssh, &[]);
    let full = cost(&over_ssh, &["--set", "files=true", "--set", "cost=true"]);
    drop(ssh);
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

    println!("CPU per run, {ROUNDS} runs each (harun and its ssh; sshd on the controllers):");
    let row = |what: &str, (client, server, wall): (Duration, Duration, Duration)| {
        println!(
            "  {what:<34} {:>7.1} ms + {:>7.1} ms = {:>7.1} ms CPU, wall {:>7.1} ms; one a minute: {:.3} % of a core",
            ms(client),
            ms(server),
            ms(client + server),
            ms(wall),
            (client + server).as_secs_f64() / 60.0 * 100.0
        );
    };
    row("local transport (API only)", local);
    row("over SSH, default (API only)", default);
    row("over SSH, files=true cost=true", full);
    let total = default.0 + default.1;
    let local_total = local.0 + local.1;
    println!(
        "  default over SSH: at most 30 ms CPU: {}; at most 2x the local run ({:.2}x): {}; wall under 100 ms: {}",
        met(total <= Duration::from_millis(30)),
        total.as_secs_f64() / local_total.as_secs_f64(),
        met(total.as_secs_f64() <= 2.0 * local_total.as_secs_f64()),
        met(default.2 < Duration::from_millis(100))
    );
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
