//! Snapshots: backup.rhai saves a checked snapshot of each cluster, restore.rhai puts one
//! back (what was written after it is gone, what was there before is back), the changing
//! scripts take one before their first change, and a snapshot cut short is neither kept
//! nor restored.

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;

use crate::common;

use common::http::{get, request};
use common::lab::{script, Lab};
use common::Test;

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).to_string()
}

/// A Consul KV value, a Vault secret and a Nomad job, each named `tag`.
fn write_data(lab: &Lab, tag: &str) {
    let c1 = lab.address("controller1");
    let kv = request("PUT", &format!("http://{c1}:8500/v1/kv/data/{tag}"), tag).unwrap();
    assert_eq!(kv.body.trim(), "true");
    let job = format!(r#"{{"Job": {{"ID": "{tag}", "Name": "{tag}", "Type": "service"}}}}"#);
    let registered = request("POST", &format!("http://{c1}:4646/v1/jobs"), &job).unwrap();
    assert_eq!(registered.status, 200, "{}", registered.body);
    let secret = lab.harun(&[
        "-e",
        &format!(r#"vault::kv_write(host("controller1"), "secret", "{tag}", #{{v: "{tag}"}})"#),
    ]);
    assert!(secret.status.success(), "{}", text(&secret.stderr));
}

/// Which of the three hold `tag`'s data: (consul, nomad, vault).
fn has_data(lab: &Lab, tag: &str) -> (bool, bool, bool) {
    let c1 = lab.address("controller1");
    let consul = get(&format!("http://{c1}:8500/v1/kv/data/{tag}")).status == 200;
    let nomad = get(&format!("http://{c1}:4646/v1/job/{tag}")).status == 200;
    let vault = lab.harun(&[
        "-e",
        &format!(r#"print(vault::kv_read(host("controller1"), "secret", "{tag}") != ())"#),
    ]);
    (consul, nomad, text(&vault.stdout) == "true\n")
}

#[test]
fn backup_and_restore_bring_every_cluster_back_to_its_snapshot() {
    let lab = Lab::up();
    // ha.rhai's Consul step leaves a snapshot taken before its first change, and names it.
    let ha = lab.harun(&[script("ha.rhai").to_str().unwrap()]);
    let stdout = text(&ha.stdout);
    assert_eq!(ha.status.code(), Some(0), "{stdout}\n{}", text(&ha.stderr));
    let named = common::snapshot_named(&stdout);
    assert!(named.starts_with("harun-snapshots/consul-"), "{named}");
    let check = lab.harun(&[
        "-e",
        &format!("print(consul::snapshot_check({named:?}).ok)"),
    ]);
    assert_eq!(text(&check.stdout), "true\n", "{}", text(&check.stderr));

    write_data(&lab, "before");
    let backup = lab.harun(&[
        "--set",
        "dir=backups",
        script("backup.rhai").to_str().unwrap(),
    ]);
    let summary = text(&backup.stdout);
    assert_eq!(
        backup.status.code(),
        Some(0),
        "{summary}\n{}",
        text(&backup.stderr)
    );
    assert!(
        summary.starts_with("OK - saved consul backups/consul-"),
        "{summary}"
    );
    let mut files: Vec<String> = std::fs::read_dir(lab.test.path("backups"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().to_string())
        .collect();
    files.sort();
    assert_eq!(files.len(), 3, "{files:?}");
    for (file, service) in files.iter().zip(["consul", "nomad", "vault"]) {
        assert!(file.starts_with(&format!("{service}-")), "{files:?}");
        let mode = std::fs::metadata(lab.test.path(&format!("backups/{file}")))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{file}");
    }

    write_data(&lab, "after");
    assert_eq!(has_data(&lab, "after"), (true, true, true));
    for file in &files {
        let restored = lab.harun(&[
            "--yes",
            "--set",
            &format!("file=backups/{file}"),
            script("restore.rhai").to_str().unwrap(),
        ]);
        assert_eq!(
            restored.status.code(),
            Some(0),
            "{file}: {}\n{}",
            text(&restored.stdout),
            text(&restored.stderr)
        );
        assert!(text(&restored.stdout).contains(" restored from backups/"));
    }
    common::http::eventually(
        "the restored state on controller1",
        std::time::Duration::from_secs(20),
        || (has_data(&lab, "after") == (false, false, false)).then_some(()),
    );
    assert_eq!(has_data(&lab, "before"), (true, true, true));

    // A snapshot of one kind is refused for another, before anything is sent.
    let nomad_file = files.iter().find(|f| f.starts_with("nomad-")).unwrap();
    let wrong = lab.harun(&[
        "--yes",
        "--set",
        "service=consul",
        "--set",
        &format!("file=backups/{nomad_file}"),
        script("restore.rhai").to_str().unwrap(),
    ]);
    assert_eq!(wrong.status.code(), Some(2), "{}", text(&wrong.stdout));
    assert!(
        text(&wrong.stdout).contains("it is a nomad snapshot"),
        "{}",
        text(&wrong.stdout)
    );
}

/// A server that answers a leader and then sends half a snapshot; it records the first
/// line of every request it gets.
fn half_snapshot_server() -> (String, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let requests = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let record = requests.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let mut stream = stream;
            let mut request = [0u8; 4096];
            let n = stream.read(&mut request).unwrap_or(0);
            let head = String::from_utf8_lossy(&request[..n]).to_string();
            record
                .lock()
                .unwrap()
                .push(head.lines().next().unwrap_or("").to_string());
            let body: Vec<u8> = if head.starts_with("GET /v1/status/leader") {
                b"\"127.0.0.1:8300\"".to_vec()
            } else {
                // The first half of a gzip stream: a download cut short.
                let mut gz = Vec::new();
                let mut encoder =
                    flate2::write::GzEncoder::new(&mut gz, flate2::Compression::default());
                encoder.write_all(&[7u8; 20_000]).unwrap();
                encoder.finish().unwrap();
                gz[..gz.len() / 2].to_vec()
            };
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = stream.write_all(&body);
        }
    });
    (address, requests)
}

#[test]
fn a_snapshot_cut_short_is_neither_kept_nor_restored() {
    let (address, requests) = half_snapshot_server();
    let mut t = Test::new().file(
        "harun.hcl",
        &format!(
            "host \"c1\" {{\n  address = \"127.0.0.1\"\n  transport = \"local\"\n  roles = [\"controller\"]\n}}\nconsul {{\n  address = \"http://{address}\"\n}}\n"
        ),
    );
    let backup = t.run_with(&[
        "--set",
        "services=consul",
        "--set",
        "dir=backups",
        script("backup.rhai").to_str().unwrap(),
    ]);
    assert_eq!(backup.status, 2, "{}\n{}", backup.stdout, backup.stderr);
    assert!(
        backup.stdout.starts_with(
            "CRITICAL - no snapshot saved: consul on c1: the snapshot it sent fails the check ("
        ),
        "{}",
        backup.stdout
    );
    assert!(
        backup.stdout.contains("fails the check"),
        "{}",
        backup.stdout
    );
    let kept: Vec<_> = std::fs::read_dir(t.path("backups"))
        .unwrap()
        .flatten()
        .collect();
    assert!(kept.is_empty(), "{kept:?}");

    // The same half file given to restore is refused before anything is sent.
    let before_restore = requests.lock().unwrap().len();
    let mut gz = Vec::new();
    let mut encoder = flate2::write::GzEncoder::new(&mut gz, flate2::Compression::default());
    encoder.write_all(&[7u8; 20_000]).unwrap();
    encoder.finish().unwrap();
    std::fs::write(t.path("consul-cut.snap"), &gz[..gz.len() / 2]).unwrap();
    let restore = t.run_with(&[
        "--yes",
        "--set",
        "file=consul-cut.snap",
        script("restore.rhai").to_str().unwrap(),
    ]);
    assert_eq!(restore.status, 2, "{}\n{}", restore.stdout, restore.stderr);
    assert!(
        restore
            .stdout
            .starts_with("CRITICAL - refusing consul-cut.snap:"),
        "{}",
        restore.stdout
    );
    let sent: Vec<String> = requests.lock().unwrap()[before_restore..].to_vec();
    assert!(
        sent.iter().all(|r| !r.starts_with("PUT ")),
        "the restore sent {sent:?}"
    );
}
