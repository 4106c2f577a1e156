//! Day 2: the whole story in one command (ha.rhai), then what HA is for: restarting and
//! rebooting the controllers one at a time (rolling-restart.rhai) while clients keep
//! reading and writing through their own agents.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::common::http::{request, request_with};
use crate::common::lab::{audited, script, wait_for_changes, Lab};

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// One thing a client does; `Err` says what went wrong.
type Step<'a> = dyn Fn() -> Result<(), String> + 'a;

/// What a client on the worker does, over and over: a Consul KV write and read through
/// the worker's own Consul agent, a Nomad job listing through its own Nomad agent, and a
/// Vault secret written and read through the first node that answers (as a client that
/// follows vault.service.consul would). Each step may be retried for 5 s, as clients
/// retry; a step that still fails counts.
struct Client {
    stop: Arc<AtomicBool>,
    handle: std::thread::JoinHandle<(usize, Vec<String>)>,
}

impl Client {
    fn start(lab: &Lab) -> Client {
        let stop = Arc::new(AtomicBool::new(false));
        let worker = lab.address("worker1");
        let vaults: Vec<String> = ["controller1", "controller2", "controller3"]
            .iter()
            .map(|h| lab.address(h))
            .collect();
        let token = lab.root_token();
        let flag = stop.clone();
        let handle = std::thread::spawn(move || {
            let mut rounds = 0;
            let mut failures = Vec::new();
            let retry = |what: &str, step: &Step| {
                let started = Instant::now();
                loop {
                    match step() {
                        Ok(()) => return None,
                        Err(e) if started.elapsed() > Duration::from_secs(5) => {
                            return Some(format!("{what}: {e}"))
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(200)),
                    }
                }
            };
            while !flag.load(Ordering::SeqCst) {
                rounds += 1;
                let value = format!("round-{rounds}");
                let kv = format!("http://{worker}:8500/v1/kv/homelab/rolling");
                let steps: [(&str, Box<Step>); 3] = [
                    (
                        "consul kv",
                        Box::new(|| {
                            let put = request("PUT", &kv, &value)?;
                            let got = request("GET", &format!("{kv}?raw"), "")?;
                            (put.status == 200 && got.body == value)
                                .then_some(())
                                .ok_or(format!("{} {} {:?}", put.status, got.status, got.body))
                        }),
                    ),
                    (
                        "nomad jobs",
                        Box::new(|| {
                            let r = request("GET", &format!("http://{worker}:4646/v1/jobs"), "")?;
                            (r.status == 200)
                                .then_some(())
                                .ok_or(format!("{}", r.status))
                        }),
                    ),
                    (
                        "vault secret",
                        Box::new(|| {
                            let auth = [("X-Vault-Token", token.as_str())];
                            let body = format!("{{\"data\":{{\"round\":\"{value}\"}}}}");
                            let mut last = String::from("no node answered");
                            for address in &vaults {
                                let url = |p: &str| format!("http://{address}:8200{p}");
                                let Ok(w) = request_with(
                                    "PUT",
                                    &url("/v1/secret/data/homelab/rolling"),
                                    &body,
                                    &auth,
                                ) else {
                                    continue;
                                };
                                if w.status != 200 {
                                    last = format!("write {}: {}", w.status, w.body);
                                    continue;
                                }
                                let r = request_with(
                                    "GET",
                                    &url("/v1/secret/data/homelab/rolling"),
                                    "",
                                    &auth,
                                )?;
                                if r.status == 200 && r.body.contains(&value) {
                                    return Ok(());
                                }
                                last = format!("read {}: {}", r.status, r.body);
                            }
                            Err(last)
                        }),
                    ),
                ];
                for (what, step) in &steps {
                    if let Some(failure) = retry(what, step.as_ref()) {
                        failures.push(failure);
                    }
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            (rounds, failures)
        });
        Client { stop, handle }
    }

    fn stop(self) -> (usize, Vec<String>) {
        self.stop.store(true, Ordering::SeqCst);
        self.handle.join().unwrap()
    }
}

/// ha.rhai takes a fresh lab to HA in one run; rolling-restart.rhai then refuses while a
/// server is down, plans, restarts every service of every controller (leaders last, Vault's
/// active node stepped down first) while a client keeps working, reboots a controller,
/// and finishes a run that was killed half way.
#[test]
fn ha_then_rolling_restarts_and_reboots_keep_every_cluster_serving() {
    let lab = Lab::up_with(&["--workers", "1"]);
    let ha = lab.harun(&[script("ha.rhai").to_str().unwrap()]);
    let stdout = text(&ha.stdout);
    assert_eq!(ha.status.code(), Some(0), "{stdout}\n{}", text(&ha.stderr));
    assert!(
        stdout.contains("HA: consul, nomad and vault whole on 3 controllers")
            && stdout.contains("consul: 3 servers")
            && stdout.contains("nomad: 3 servers")
            && stdout.contains("vault: 3 raft voters"),
        "{stdout}"
    );
    let again = lab.harun(&[script("ha.rhai").to_str().unwrap()]);
    assert!(
        again.status.success() && text(&again.stdout).contains("nothing to change: 3 vault voters"),
        "{}",
        text(&again.stdout)
    );

    // `harun init` from one controller's address writes a topology with which
    // health.rhai runs as written; a second init does not overwrite it.
    let written = lab.test.path("init.hcl");
    let init = |extra: &[&str]| {
        let mut cmd = lab.test.command();
        cmd.args(["init", &lab.address("controller1"), "--output"])
            .arg(&written)
            .args(extra);
        cmd.output().unwrap()
    };
    let first = init(&[]);
    assert_eq!(first.status.code(), Some(0), "{}", text(&first.stderr));
    let topology = std::fs::read_to_string(&written).unwrap();
    assert!(
        topology.contains("nomad answered on controller1, controller2, controller3"),
        "{topology}"
    );
    let health = lab
        .test
        .command()
        .arg("--topology")
        .arg(&written)
        .arg(script("health.rhai"))
        .output()
        .unwrap();
    assert_eq!(health.status.code(), Some(0), "{}", text(&health.stdout));
    assert!(text(&health.stdout).starts_with("OK - consul: leader, 3 voters; nomad: leader"));
    let refused = init(&[]);
    assert_eq!(refused.status.code(), Some(3));
    assert!(text(&refused.stderr).contains("does not overwrite it (pass --force"));
    assert_eq!(std::fs::read_to_string(&written).unwrap(), topology);

    // A server down: refused, nothing changed.
    let audit = lab.test.path("rolling.log");
    let rolling_script = script("rolling-restart.rhai");
    let rolling = |extra: &[&str]| {
        let mut args = vec!["--audit-log", audit.to_str().unwrap(), "--yes"];
        args.extend_from_slice(extra);
        args.push(rolling_script.to_str().unwrap());
        lab.harun(&args)
    };
    assert!(lab.ctl("controller3", "nomad", "stop").status.success());
    let refused = rolling(&[]);
    assert_eq!(refused.status.code(), Some(2), "{}", text(&refused.stdout));
    assert!(
        text(&refused.stdout)
            .starts_with("CRITICAL - refusing to restart: nomad on controller3 does not answer"),
        "{}",
        text(&refused.stdout)
    );
    // Nothing changed in any cluster: the audit log holds only the lock the run took
    // before it looked.
    let refused_log = audited(&audit);
    assert!(
        !refused_log.is_empty()
            && refused_log
                .iter()
                .all(|l| l.contains(" consul: take the lock harun/consul-ha ")),
        "the audit log holds the lock and nothing else: {refused_log:?}"
    );
    assert!(lab.ctl("controller3", "nomad", "start").status.success());

    // The plan, once controller3's Nomad has rejoined.
    let started = Instant::now();
    let plan = loop {
        let plan = lab.harun(&[
            "--dry-run",
            script("rolling-restart.rhai").to_str().unwrap(),
        ]);
        if plan.status.success() || started.elapsed() > Duration::from_secs(60) {
            break plan;
        }
        std::thread::sleep(Duration::from_secs(1));
    };
    assert!(
        plan.status.success(),
        "{}\n{}",
        text(&plan.stdout),
        text(&plan.stderr)
    );
    assert!(
        text(&plan.stdout).starts_with(
            "OK - plan: rolling restart of controller1, controller2, controller3 (consul, nomad, vault)"
        ),
        "{}",
        text(&plan.stdout)
    );

    // Every service of every controller, while a client works through its own agents.
    let client = Client::start(&lab);
    std::thread::sleep(Duration::from_secs(1));
    let done = rolling(&[]);
    let (rounds, failures) = client.stop();
    let stdout = text(&done.stdout);
    assert_eq!(
        done.status.code(),
        Some(0),
        "{stdout}\n{}",
        text(&done.stderr)
    );
    assert!(
        stdout.starts_with("OK - rolling restart done: "),
        "{stdout}"
    );
    assert!(
        failures.is_empty(),
        "{rounds} rounds, failures: {failures:?}"
    );
    assert!(rounds > 5, "{rounds} rounds");
    let log = audited(&audit);
    for host in ["controller1", "controller2", "controller3"] {
        for service in ["consul", "nomad", "vault"] {
            let n = log
                .iter()
                .filter(|l| **l == format!("{host} restart {service}"))
                .count();
            assert_eq!(n, 1, "{host} {service}: {log:#?}");
        }
    }
    let step_down = log
        .iter()
        .position(|l| l.contains(" vault: step down on "))
        .expect("the active node stepped down");
    let stepped = log[step_down].split(' ').next().unwrap().to_string();
    let restarted = log
        .iter()
        .position(|l| *l == format!("{stepped} restart vault"))
        .unwrap();
    assert!(step_down < restarted, "{log:#?}");
    lab.assert_secrets("day 2");
    let health = lab.harun(&[script("health.rhai").to_str().unwrap()]);
    assert_eq!(health.status.code(), Some(0), "{}", text(&health.stdout));

    // A reboot of one controller: a new boot id, every service back, Vault unsealed.
    let boot_id = || std::fs::read_to_string(lab.dir.join("controller2/boot_id")).unwrap();
    let before = boot_id();
    let rebooted = rolling(&["--set", "reboot=true", "--set", "hosts=controller2"]);
    assert_eq!(
        rebooted.status.code(),
        Some(0),
        "{}\n{}",
        text(&rebooted.stdout),
        text(&rebooted.stderr)
    );
    assert!(text(&rebooted.stdout).starts_with("OK - rolling reboot done: controller2"));
    assert_ne!(boot_id(), before);
    lab.assert_secrets("day 2");

    // reboot=needed: only the controller whose OS asks (its reboot_required_file exists)
    // reboots, and the reboot clears the flag; then a run finds nothing to do.
    let boot_ids = || {
        ["controller1", "controller2", "controller3"]
            .map(|h| std::fs::read_to_string(lab.dir.join(h).join("boot_id")).unwrap())
    };
    //
    // The flagged controller runs a job's only allocation. While no other node is eligible
    // the drain would only stop it: the host is named and left alone (WARNING, no reboot).
    let nomad_at = |path: &str| format!("http://{}:4646{path}", lab.address("controller1"));
    let node_ids = || -> Vec<(String, String)> {
        let nodes = request("GET", &nomad_at("/v1/nodes"), "").unwrap().json();
        nodes
            .as_array()
            .unwrap()
            .iter()
            .filter(|n| n["Status"] == "ready")
            .map(|n| {
                (
                    n["Name"].as_str().unwrap().into(),
                    n["ID"].as_str().unwrap().into(),
                )
            })
            .collect()
    };
    let set_eligible = |names: &[&str], eligible: &str| {
        for (name, id) in node_ids() {
            if names.contains(&name.as_str()) {
                let body = format!(r#"{{"Eligibility": "{eligible}"}}"#);
                let path = format!("/v1/node/{id}/eligibility");
                let r = request("PUT", &nomad_at(&path), &body).unwrap();
                assert_eq!(r.status, 200, "{}", r.body);
            }
        }
    };
    let others = ["controller1", "controller2", "worker1", "worker2"];
    set_eligible(&others, "ineligible");
    let job = r#"{"Job": {"ID": "web", "Name": "web", "Type": "service", "Datacenters": ["homelab"],
        "TaskGroups": [{"Name": "web", "Count": 1}]}}"#;
    assert_eq!(
        request("PUT", &nomad_at("/v1/jobs"), job).unwrap().status,
        200
    );
    let web_allocs = || {
        let list = request("GET", &nomad_at("/v1/job/web/allocations"), "")
            .unwrap()
            .json();
        list.as_array().unwrap().clone()
    };
    crate::common::http::eventually(
        "web running on controller3",
        Duration::from_secs(30),
        || {
            let running = web_allocs()
                .into_iter()
                .any(|a| a["NodeName"] == "controller3" && a["ClientStatus"] == "running");
            running.then_some(())
        },
    );
    let first_web = web_allocs()[0]["ID"].as_str().unwrap().to_string();
    let flag = lab.dir.join("controller3/reboot-required");
    std::fs::write(&flag, "*** System restart required ***\n").unwrap();
    let before = boot_ids();
    let nowhere = rolling(&["--set", "reboot=needed"]);
    let stdout = text(&nowhere.stdout);
    assert_eq!(
        nowhere.status.code(),
        Some(1),
        "{stdout}\n{}",
        text(&nowhere.stderr)
    );
    assert!(
        stdout.starts_with("WARNING - rolling reboot done: no host;")
            && stdout.contains("left alone: nomad node controller3: its allocation(s) of ")
            && stdout.contains("web")
            && stdout.contains(
                "would have nowhere to go (no other node of their datacenters and node pool is ready and eligible)"
            ),
        "{stdout}"
    );
    assert_eq!(boot_ids(), before);
    assert!(flag.exists());
    assert!(web_allocs()
        .iter()
        .any(|a| a["ID"] == first_web.as_str() && a["ClientStatus"] == "running"));

    // With somewhere to go: the allocation moves before the reboot, none is lost, and the
    // rebooted node is eligible again.
    set_eligible(&others, "eligible");
    let needed = rolling(&["--set", "reboot=needed"]);
    assert_eq!(
        needed.status.code(),
        Some(0),
        "{}\n{}",
        text(&needed.stdout),
        text(&needed.stderr)
    );
    assert!(
        text(&needed.stdout).starts_with("OK - rolling reboot done: controller3;"),
        "{}",
        text(&needed.stdout)
    );
    let after = boot_ids();
    assert_eq!((&after[0], &after[1]), (&before[0], &before[1]));
    assert_ne!(after[2], before[2]);
    assert!(!flag.exists());
    let web = web_allocs();
    let old = web.iter().find(|a| a["ID"] == first_web.as_str()).unwrap();
    assert_eq!(
        old["DesiredDescription"], "alloc is being migrated",
        "{old}"
    );
    assert_eq!(old["ClientStatus"], "complete", "{old}");
    let next = old["NextAllocation"].as_str().unwrap();
    let replacement = web.iter().find(|a| a["ID"] == next).expect("a replacement");
    assert_eq!(replacement["ClientStatus"], "running", "{replacement}");
    assert_ne!(replacement["NodeName"], "controller3", "{replacement}");
    let lost = request("GET", &nomad_at("/v1/allocations"), "")
        .unwrap()
        .json();
    assert!(
        !lost
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["ClientStatus"] == "lost"),
        "{lost}"
    );
    let c3 = node_ids()
        .into_iter()
        .find(|(n, _)| n == "controller3")
        .unwrap()
        .1;
    let node = request("GET", &nomad_at(&format!("/v1/node/{c3}")), "")
        .unwrap()
        .json();
    assert_eq!(node["SchedulingEligibility"], "eligible", "{node}");
    assert_eq!(node["LastDrain"]["Status"], "complete", "{node}");
    let quiet = rolling(&["--set", "reboot=needed"]);
    assert_eq!(
        text(&quiet.stdout),
        "OK - nothing to do: no controller asks for a reboot (none has its reboot_required_file)\n"
    );
    assert_eq!(quiet.status.code(), Some(0));
    lab.assert_secrets("day 2");

    // Workers too (role=all): only the worker that asks reboots, and is back with its
    // Consul agent and its Nomad node ready.
    let worker_flag = lab.dir.join("worker1/reboot-required");
    std::fs::write(&worker_flag, "*** System restart required ***\n").unwrap();
    let worker_boot = || std::fs::read_to_string(lab.dir.join("worker1/boot_id")).unwrap();
    let before = (boot_ids(), worker_boot());
    // The operator has taken worker1 out of scheduling: drained for its reboot all the
    // same, it stays ineligible afterwards.
    set_eligible(&["worker1"], "ineligible");
    let workers = rolling(&["--set", "reboot=needed", "--set", "role=all"]);
    assert_eq!(
        workers.status.code(),
        Some(0),
        "{}\n{}",
        text(&workers.stdout),
        text(&workers.stderr)
    );
    assert!(
        text(&workers.stdout).starts_with("OK - rolling reboot done: worker1;"),
        "{}",
        text(&workers.stdout)
    );
    assert_eq!(boot_ids(), before.0);
    assert_ne!(worker_boot(), before.1);
    assert!(!worker_flag.exists());
    let nodes = request(
        "GET",
        &format!("http://{}:4646/v1/nodes", lab.address("controller1")),
        "",
    )
    .unwrap()
    .json();
    assert!(
        nodes
            .as_array()
            .unwrap()
            .iter()
            .any(|n| n["Name"] == "worker1"
                && n["Status"] == "ready"
                && n["SchedulingEligibility"] == "ineligible"),
        "{nodes}"
    );
    set_eligible(&["worker1"], "eligible");

    // Killed (SIGKILL, or Ctrl-C's SIGINT) at its first change, inside the second
    // controller's turn, and as the third begins: the next run finishes from the record.
    // Each point also as `timeout -s KILL` kills (the whole process group, reaped by init a
    // moment later: the next run meets a zombie holding the lock).
    const TIMEOUT_KILL: i32 = -1;
    let points = [2, 7, 12].into_iter().flat_map(|changes| {
        let first_way = if changes == 2 {
            libc::SIGINT
        } else {
            libc::SIGKILL
        };
        [(changes, first_way), (changes, TIMEOUT_KILL)]
    });
    for (changes, signal) in points {
        let _ = std::fs::remove_file(&audit);
        let stderr = lab.test.path("first.stderr");
        let name = "rolling-restart.rhai";
        let mut first = if signal == TIMEOUT_KILL {
            lab.spawn_script_under_timeout(name, &audit, &stderr, &[])
        } else {
            lab.spawn_script(name, &audit, &stderr, &[])
        };
        wait_for_changes(&audit, changes, &mut first, name);
        // SAFETY: signalling the child we started (or, as timeout does, its group).
        unsafe {
            match signal {
                TIMEOUT_KILL => libc::kill(-(first.id() as i32), libc::SIGKILL),
                signal => libc::kill(first.id() as i32, signal),
            }
        };
        first.wait().unwrap();
        let finished = rolling(&[]);
        let stderr = text(&finished.stderr);
        assert_eq!(
            finished.status.code(),
            Some(0),
            "killed at {changes}: {}\n{stderr}",
            text(&finished.stdout)
        );
        // Ctrl-C lets the run end its turn's step and keep the record for the next.
        assert!(
            stderr.contains("finishing the rolling restart an interrupted run began"),
            "killed at {changes}: {stderr}"
        );
    }
    let kv = request(
        "GET",
        &lab.consul("controller1", "/v1/kv/harun/rolling-restart"),
        "",
    )
    .unwrap();
    assert_eq!(kv.status, 404, "the record is left: {}", kv.body);
    // No node is left drained or ineligible by a killed run.
    let nodes = request("GET", &nomad_at("/v1/nodes"), "").unwrap().json();
    for n in nodes.as_array().unwrap() {
        assert!(
            n["SchedulingEligibility"] == "eligible" && n["Drain"] == false,
            "{n}"
        );
    }
    lab.assert_secrets("day 2");
}
