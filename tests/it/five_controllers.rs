//! A lab of five controllers (`harun lab up --controllers 5`): the fork the scripts invite
//! rehearsed on a larger cluster. ha.rhai takes it to five voters in every cluster; the
//! health check counts a failure tolerance of two, and two controllers lost at once leave
//! every cluster serving; a rolling restart never leaves a cluster without a majority.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::common::http::{eventually, request_with, request_within};
use crate::common::lab::{audited, script, Lab};

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The services and how a controller shows its server is up: Consul's and Nomad's agent
/// answers (a leader's restart leaves every server without a leader for an election, up
/// all the same), Vault is unsealed (active 200, standby 429).
const SERVING: [(&str, u16, &str); 3] = [
    ("consul", 8500, "/v1/agent/self"),
    ("nomad", 4646, "/v1/agent/self"),
    ("vault", 8200, "/v1/sys/health"),
];

fn serving(address: &str, port: u16, path: &str) -> bool {
    let url = format!("http://{address}:{port}{path}");
    match request_within("GET", &url, "", &[], Duration::from_secs(3)) {
        Ok(r) if port == 8200 => r.status == 200 || r.status == 429,
        Ok(r) => r.status == 200,
        Err(_) => false,
    }
}

/// Samples, every 50 ms until stopped, how many controllers serve each service; keeps the
/// fewest seen. A restart cannot slip between two samples: a controller whose process for
/// the service changed since the last sample (the lab's pid file, `run/SERVICE.pid`) was
/// down in between and counts as not serving in that sample; the restarts seen per
/// controller and service are counted too.
struct Watch {
    stop: Arc<AtomicBool>,
    handle: std::thread::JoinHandle<Watched>,
}

#[derive(Default)]
struct Watched {
    fewest: BTreeMap<&'static str, usize>,
    /// (controller, service) → how many times its process changed.
    restarts: BTreeMap<(String, &'static str), usize>,
}

/// The pid the lab wrote for a service; none while the file is missing or half-written.
fn pid(lab_dir: &std::path::Path, host: &str, service: &str) -> Option<i32> {
    let file = lab_dir
        .join(host)
        .join("run")
        .join(format!("{service}.pid"));
    std::fs::read_to_string(file).ok()?.trim().parse().ok()
}

impl Watch {
    fn start(lab: &Lab) -> Watch {
        let hosts: Vec<(String, String)> = lab
            .controllers()
            .into_iter()
            .map(|h| (lab.address(&h), h))
            .collect();
        let dir = lab.dir.clone();
        // The processes at the start, taken before the run can restart any.
        let mut last: BTreeMap<(String, &'static str), Option<i32>> = BTreeMap::new();
        for (_, host) in &hosts {
            for (service, _, _) in SERVING {
                last.insert((host.clone(), service), pid(&dir, host, service));
            }
        }
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let handle = std::thread::spawn(move || {
            let mut watched = Watched {
                fewest: SERVING.iter().map(|(s, _, _)| (*s, usize::MAX)).collect(),
                ..Watched::default()
            };
            while !flag.load(Ordering::SeqCst) {
                for (service, port, path) in SERVING {
                    let mut n = 0;
                    for (address, host) in &hosts {
                        let up = serving(address, port, path);
                        let now = pid(&dir, host, service);
                        let key = (host.clone(), service);
                        let same = last.get(&key) == Some(&now);
                        if !same && now.is_some() {
                            *watched.restarts.entry(key.clone()).or_default() += 1;
                        }
                        if up && same && now.is_some() {
                            n += 1;
                        }
                        if !same {
                            last.insert(key, now);
                        }
                    }
                    let least = watched.fewest.get_mut(service).unwrap();
                    *least = (*least).min(n);
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            watched
        });
        Watch { stop, handle }
    }

    fn stop(self) -> Watched {
        self.stop.store(true, Ordering::SeqCst);
        self.handle.join().unwrap()
    }
}

#[test]
fn five_controllers_go_to_ha_tolerate_two_failures_and_restart_in_turn() {
    let lab = Lab::up_with(&["--controllers", "5"]);
    let controllers = lab.controllers();
    assert_eq!(
        controllers,
        [
            "controller1",
            "controller2",
            "controller3",
            "controller4",
            "controller5"
        ]
    );

    let ha = lab.harun(&[script("ha.rhai").to_str().unwrap()]);
    let stdout = text(&ha.stdout);
    assert_eq!(ha.status.code(), Some(0), "{stdout}\n{}", text(&ha.stderr));
    for part in [
        "consul: 5 servers, 5 voters",
        "nomad: 5 servers",
        "vault: 5 raft voters, 1 active, 4 standby",
        "HA: consul, nomad and vault whole on 5 controllers",
    ] {
        assert!(stdout.contains(part), "{part}: {stdout}");
    }
    lab.assert_secrets("after ha.rhai");

    // The health check's figures: five voters, two of which may fail.
    let metrics = lab.test.path("health.prom");
    let health = || {
        lab.harun(&[
            "--set",
            &format!("textfile={}", metrics.display()),
            script("health.rhai").to_str().unwrap(),
        ])
    };
    let healthy = health();
    assert_eq!(healthy.status.code(), Some(0), "{}", text(&healthy.stdout));
    assert!(
        text(&healthy.stdout)
            .starts_with("OK - consul: leader, 5 voters; nomad: leader, 5 voters, 5 nodes ready; vault: 1 active, 4 standby"),
        "{}",
        text(&healthy.stdout)
    );
    let figures = std::fs::read_to_string(&metrics).unwrap();
    for (service, _, _) in SERVING {
        assert!(
            figures.contains(&format!(
                "harun_cluster_failure_tolerance{{service=\"{service}\"}} 2\n"
            )),
            "{service}: {figures}"
        );
    }

    // A rolling restart, watched: every service of every controller restarted once, and
    // never fewer than a majority (3) up; the watch saw the restarts (4 at times).
    let audit = lab.test.path("rolling.log");
    let watch = Watch::start(&lab);
    let rolling = lab.harun(&[
        "--audit-log",
        audit.to_str().unwrap(),
        "--yes",
        script("rolling-restart.rhai").to_str().unwrap(),
    ]);
    let watched = watch.stop();
    let stdout = text(&rolling.stdout);
    assert_eq!(
        rolling.status.code(),
        Some(0),
        "{stdout}\n{}",
        text(&rolling.stderr)
    );
    assert!(
        stdout.starts_with("OK - rolling restart done: "),
        "{stdout}"
    );
    for (service, least) in &watched.fewest {
        assert!(
            (3..5).contains(least),
            "{service}: {least} of 5 serving at the least"
        );
    }
    for host in &controllers {
        for (service, _, _) in SERVING {
            let seen = watched.restarts.get(&(host.clone(), service));
            assert_eq!(seen, Some(&1), "{host} {service}: new processes seen");
        }
    }
    let log = audited(&audit);
    for host in &controllers {
        for (service, _, _) in SERVING {
            let n = log
                .iter()
                .filter(|l| **l == format!("{host} restart {service}"))
                .count();
            assert_eq!(n, 1, "{host} {service}: {log:#?}");
        }
    }
    lab.assert_secrets("after the rolling restart");

    // Two controllers lost at once: every cluster still has a leader and serves writes.
    for host in ["controller4", "controller5"] {
        for service in ["vault", "nomad", "consul"] {
            assert!(lab.ctl(host, service, "stop").status.success());
        }
    }
    let kv = lab.consul("controller1", "/v1/kv/homelab/five");
    eventually(
        "a Consul write with two of five servers down",
        Duration::from_secs(30),
        || {
            request_within("PUT", &kv, "still-here", &[], Duration::from_secs(5))
                .ok()
                .filter(|r| r.status == 200 && r.body.trim() == "true")
        },
    );
    let token = lab.root_token();
    eventually(
        "a Vault write with two of five servers down",
        Duration::from_secs(30),
        || {
            request_with(
                "PUT",
                &lab.vault("controller1", "/v1/secret/data/homelab/five"),
                "{\"data\":{\"still\":\"here\"}}",
                &[("X-Vault-Token", token.as_str())],
            )
            .ok()
            .filter(|r| r.status == 200)
        },
    );
    // WARNING, not CRITICAL: Vault has its active node (the worst status wins).
    let degraded = eventually(
        "health WARNING with a leader in each cluster",
        Duration::from_secs(30),
        || {
            let out = health();
            let stdout = text(&out.stdout);
            (out.status.code() == Some(1)
                && stdout.contains("consul: leader")
                && stdout.contains("nomad: leader"))
            .then_some(stdout)
        },
    );
    assert!(
        degraded.starts_with("WARNING - consul: no answer from controller4, controller5"),
        "{degraded}"
    );

    // Back: started, their Vaults unsealed, the health check is OK again once they have
    // rejoined.
    for host in ["controller4", "controller5"] {
        for service in ["consul", "nomad", "vault"] {
            assert!(lab.ctl(host, service, "start").status.success());
        }
    }
    let unseal = lab.harun(&["--yes", script("unseal.rhai").to_str().unwrap()]);
    assert_eq!(
        unseal.status.code(),
        Some(0),
        "{}\n{}",
        text(&unseal.stdout),
        text(&unseal.stderr)
    );
    eventually("health OK again", Duration::from_secs(60), || {
        health().status.success().then_some(())
    });
    lab.assert_secrets("after two controllers came back");
}
