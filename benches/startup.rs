//! Start-up benchmark: `harun -e '1'` beside `python3 -c pass`, the interpreter an operator
//! would otherwise reach for. Wall time (median and 90th percentile of many runs) and peak
//! RSS per run. Targets on a 2-core machine: under 10 ms and under 15 MB.
//!
//! Run: `cargo bench --bench startup` (a release build). Not a test: it reports, it does
//! not fail.

use std::process::Command;
use std::time::{Duration, Instant};

const RUNS: usize = 60;

struct Sample {
    wall: Duration,
    max_rss_kib: i64,
}

/// Runs a command once and reads its own peak RSS from wait4's rusage.
#[allow(clippy::zombie_processes)] // reaped by wait4, which std's wait() cannot replace
fn run_once(program: &str, args: &[&str]) -> Sample {
    let started = Instant::now();
    let child = Command::new(program)
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {program}: {e}"));
    let mut status = 0;
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: waiting for our own child, with valid pointers to locals.
    let pid = unsafe { libc::wait4(child.id() as i32, &mut status, 0, &mut usage) };
    let wall = started.elapsed();
    assert_eq!(pid, child.id() as i32, "wait4 failed");
    assert_eq!(status, 0, "{program} failed");
    Sample {
        wall,
        max_rss_kib: usage.ru_maxrss,
    }
}

struct Summary {
    median: Duration,
    p90: Duration,
    rss_mib: f64,
}

fn measure(program: &str, args: &[&str]) -> Summary {
    for _ in 0..5 {
        run_once(program, args); // warm the page cache
    }
    let mut samples: Vec<Sample> = (0..RUNS).map(|_| run_once(program, args)).collect();
    samples.sort_by_key(|s| s.wall);
    let rss = samples.iter().map(|s| s.max_rss_kib).max().unwrap_or(0);
    Summary {
        median: samples[RUNS / 2].wall,
        p90: samples[RUNS * 9 / 10].wall,
        rss_mib: rss as f64 / 1024.0,
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn main() {
    // `cargo bench` passes --bench; a filter argument is not meaningful here.
    let harun = env!("CARGO_BIN_EXE_harun");
    let h = measure(harun, &["-e", "1"]);
    // The system interpreter, not a version-manager shim that would flatter harun.
    let python = if std::path::Path::new("/usr/bin/python3").exists() {
        "/usr/bin/python3"
    } else {
        "python3"
    };
    let p = measure(python, &["-c", "pass"]);
    println!("start-up, {RUNS} runs each (median / p90 wall, peak RSS)");
    println!(
        "  harun -e '1'        {:>7.2} ms / {:>7.2} ms   {:>6.1} MiB",
        ms(h.median),
        ms(h.p90),
        h.rss_mib
    );
    println!(
        "  python3 -c pass     {:>7.2} ms / {:>7.2} ms   {:>6.1} MiB",
        ms(p.median),
        ms(p.p90),
        p.rss_mib
    );
    println!(
        "  ratio harun/python  {:>7.2}x wall            {:>6.2}x RSS",
        ms(h.median) / ms(p.median),
        h.rss_mib / p.rss_mib
    );
    let wall_ok = h.median < Duration::from_millis(10);
    let rss_ok = h.rss_mib < 15.0;
    println!(
        "  targets: wall < 10 ms {}, RSS < 15 MiB {}",
        if wall_ok { "met" } else { "MISSED" },
        if rss_ok { "met" } else { "MISSED" }
    );
}
