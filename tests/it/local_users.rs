//! Another local user cannot steer or read a run of root's. Each test plants, as `nobody`,
//! what an unprivileged user can plant (a directory for the next lab, symlinks under the
//! next backups' names, a symlink for a directory harun makes, a snapshot directory), runs
//! harun as root, and checks that the run refused or stayed unaffected and that the
//! planted targets are unchanged.

use crate::common;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::Test;

const NOBODY: u32 = 65534;

/// Runs `script` with `sh -c` as `nobody`, in `dir`.
fn as_nobody(dir: &Path, script: &str) {
    let out = Command::new("sh")
        .arg("-c")
        .arg(script)
        .current_dir(dir)
        .uid(NOBODY)
        .gid(NOBODY)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "planting as nobody failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A directory every user may write to, as /tmp is (mode 1777), under /tmp.
fn shared_dir() -> tempfile::TempDir {
    let dir = tempfile::Builder::new()
        .prefix("harun-shared-")
        .tempdir_in("/tmp")
        .unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o1777)).unwrap();
    dir
}

/// A directory of nobody's (as a service user owns its config directory).
fn nobodys_dir(path: &Path) {
    std::fs::create_dir_all(path).unwrap();
    std::os::unix::fs::chown(path, Some(NOBODY), Some(NOBODY)).unwrap();
}

/// A root-owned file that nobody may not touch; returns its path.
fn victim(t: &Test, name: &str) -> PathBuf {
    let path = t.path(name);
    std::fs::write(&path, "untouched\n").unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    path
}

fn mode(path: &Path) -> u32 {
    std::fs::symlink_metadata(path)
        .unwrap()
        .permissions()
        .mode()
        & 0o7777
}

/// The names in `dir` that start with `prefix` and are real files (not planted links).
fn real_files(dir: &Path, prefix: &str) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(prefix))
        .filter(|e| e.file_type().unwrap().is_file())
        .map(|e| e.path())
        .collect();
    found.sort();
    found
}

#[test]
fn the_temporary_lab_is_a_fresh_private_directory_that_no_other_user_prepared() {
    let t = Test::new();
    let victim = victim(&t, "victim");
    let tmp = shared_dir();
    // nobody prepares `harun-lab-PID` for the next pids, each with its topology and token
    // names linked to root's file.
    let last: u64 = std::fs::read_to_string("/proc/sys/kernel/ns_last_pid")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    // One process (perl), so that planting uses up no pids of the range.
    as_nobody(
        tmp.path(),
        &format!(
            "exec perl -e 'for my $p ({}..{}) {{ my $d = \"harun-lab-$p\"; mkdir $d or die; chmod 0777, $d; \
             symlink(\"{v}\", \"$d/harun.hcl\") or die; symlink(\"{v}\", \"$d/consul-token\") or die; }}'",
            last + 1,
            last + 2000,
            v = victim.display()
        ),
    );
    let t = t.env("TMPDIR", tmp.path().to_str().unwrap()).args([
        "--lab",
        "-e",
        r#"let dir = topology.file.sub_string(0, topology.file.len() - "/harun.hcl".len());
print(dir);
let mode = local::run(`stat -c '%a %u' ${dir}`).stdout;
mode.trim();
print(mode);"#,
    ]);
    let out = t.run().status(0);
    let mut lines = out.stdout.lines();
    let dir = PathBuf::from(lines.next().unwrap());
    assert_eq!(dir.parent(), Some(tmp.path()), "{}", out.stdout);
    let name = dir.file_name().unwrap().to_string_lossy().to_string();
    assert!(name.starts_with("harun-lab-"), "{name}");
    // Made by root's run: root's, closed to others but for passing through (the lab's
    // Vault user enters it).
    assert_eq!(lines.next(), Some("711 0"), "{}", out.stdout);
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "untouched\n");
    assert!(
        !dir.exists(),
        "the lab's directory is removed after the run"
    );
    // What nobody planted is as it was: each directory holds its two links and nothing else.
    for p in [last + 1, last + 1000, last + 2000] {
        let planted = tmp.path().join(format!("harun-lab-{p}"));
        let names: Vec<String> = std::fs::read_dir(&planted)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().to_string())
            .collect();
        assert_eq!(names.len(), 2, "{}: {names:?}", planted.display());
    }
}

#[test]
fn a_write_keeps_its_backup_through_no_name_another_user_planted() {
    let t = Test::new().file(
        "harun.hcl",
        "defaults { transport = \"local\" }\nhost \"here\" {}\n",
    );
    let victim = victim(&t, "victim");
    let victim_dir = t.path("victim.d");
    std::fs::create_dir(&victim_dir).unwrap();
    std::fs::set_permissions(&victim_dir, std::fs::Permissions::from_mode(0o700)).unwrap();
    // The config directory is nobody's (a service user's); the configs in it are root's.
    let conf = t.path("conf");
    nobodys_dir(&conf);
    for name in ["vault.hcl", "local.hcl"] {
        let path = conf.join(name);
        std::fs::write(&path, "token = \"old-secret\"\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    // nobody links every backup name of the next two minutes (UTC seconds) to root's file,
    // and the directory a script will make to a directory of root's.
    as_nobody(
        &conf,
        &format!(
            "now=$(date -u +%s); for s in $(seq $((now - 2)) $((now + 120))); do st=$(date -u -d @$s +%Y%m%dT%H%M%S); \
             ln -s {v} vault.hcl.harun-$st.bak; ln -s {v} local.hcl.harun-$st.bak; done; ln -s {d} data",
            v = victim.display(),
            d = victim_dir.display()
        ),
    );
    let planted_links = || {
        std::fs::read_dir(&conf)
            .unwrap()
            .flatten()
            .filter(|e| e.file_type().unwrap().is_symlink())
            .count()
    };
    let links_before = planted_links();
    let t = t.file(
        "w.rhai",
        &format!(
            r#"let h = host("here");
print(h.write("{c}/vault.hcl", "token = \"new-secret\"\n"));
print(local::write("{c}/local.hcl", "token = \"new-secret\"\n"));
try {{ h.mkdir("{c}/data", #{{owner: "nobody", mode: 0o777}}) }} catch (e) {{ print(e.message) }}
"#,
            c = conf.display()
        ),
    );
    let t = t.args(["w.rhai"]);
    let out = t.run().status(0);
    let mut lines = out.stdout.lines();
    assert_eq!(lines.next(), Some("true"));
    assert_eq!(lines.next(), Some("true"));
    assert!(
        lines
            .next()
            .is_some_and(|l| l
                .ends_with("data is a symbolic link: harun changes no owner or mode through it")),
        "{}",
        out.stdout
    );
    // Root's file and directory are untouched; nobody's links are all still there.
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "untouched\n");
    let meta = std::fs::metadata(&victim_dir).unwrap();
    assert_eq!((meta.uid(), mode(&victim_dir)), (0, 0o700));
    assert_eq!(planted_links(), links_before);
    for name in ["vault.hcl", "local.hcl"] {
        let path = conf.join(name);
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "token = \"new-secret\"\n"
        );
        assert_eq!(mode(&path), 0o600, "{name} keeps its mode");
        // The backup is a real file of root's with the old content and the old mode.
        let backups = real_files(&conf, &format!("{name}.harun-"));
        assert_eq!(backups.len(), 1, "{name}: {backups:?}");
        assert_eq!(
            std::fs::read_to_string(&backups[0]).unwrap(),
            "token = \"old-secret\"\n"
        );
        let meta = std::fs::symlink_metadata(&backups[0]).unwrap();
        assert_eq!((meta.uid(), mode(&backups[0])), (0, 0o600), "{name}");
    }
    // No temporary file or directory is left beside the configs.
    let left: Vec<String> = std::fs::read_dir(&conf)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().to_string())
        .filter(|n| n.starts_with(".harun") || n.contains(".tmp"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn snapshots_go_only_into_a_directory_of_roots_own() {
    let t = Test::new().file(
        "harun.hcl",
        "defaults { transport = \"local\" }\nhost \"controller1\" {}\n",
    );
    let tmp = shared_dir();
    let roots = t.path("root-only");
    std::fs::create_dir(&roots).unwrap();
    // nobody makes the snapshot directory a link into a directory of root's, or a directory
    // of its own.
    as_nobody(
        tmp.path(),
        &format!("ln -s {} linked && mkdir -m 0755 owned", roots.display()),
    );
    for (name, why) in [
        ("linked", "is a symbolic link"),
        ("owned", "belongs to uid 65534, not to uid 0"),
    ] {
        let dir = tmp.path().join(name);
        let set = format!("dir={}", dir.display());
        for dry in [false, true] {
            let mut args = vec!["--set", &set];
            if dry {
                args.push("--dry-run");
            }
            let backup = common::lab::script("backup.rhai");
            args.push(backup.to_str().unwrap());
            let out = Test::new()
                .file(
                    "harun.hcl",
                    &std::fs::read_to_string(t.path("harun.hcl")).unwrap(),
                )
                .args(args)
                .run()
                .status(3);
            assert!(
                out.stderr.contains("error[harun::path::unsafe]")
                    && out
                        .stderr
                        .contains(&format!("the directory {} {why}", dir.display())),
                "{}",
                out.stderr
            );
        }
    }
    assert_eq!(std::fs::read_dir(&roots).unwrap().count(), 0);
    assert_eq!(
        std::fs::read_dir(tmp.path().join("owned")).unwrap().count(),
        0
    );
}

#[test]
fn copies_keep_their_privacy() {
    let t = Test::new()
        .file(
            "harun.hcl",
            "defaults { transport = \"local\" }\nhost \"here\" {}\n",
        )
        .file("private.hcl", "token = \"s\"\n")
        .file(
            "c.rhai",
            r#"let h = host("here");
h.upload("private.hcl", "uploaded.hcl");
h.download("private.hcl", "downloaded.hcl");
"#,
        );
    std::fs::set_permissions(
        t.path("private.hcl"),
        std::fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    let t = t.args(["c.rhai"]);
    t.run().status(0);
    assert_eq!(mode(&t.path("uploaded.hcl")), 0o600);
    assert_eq!(mode(&t.path("downloaded.hcl")), 0o600);
    assert_eq!(
        std::fs::read_to_string(t.path("downloaded.hcl")).unwrap(),
        "token = \"s\"\n"
    );
}

#[test]
fn the_audit_log_is_never_written_through_a_link_and_never_left_readable() {
    let t = Test::new()
        .file(
            "harun.hcl",
            "defaults { transport = \"local\" }\nhost \"here\" {}\n",
        )
        .file("readable.log", "")
        .file("victim.log", "untouched\n");
    std::fs::set_permissions(
        t.path("readable.log"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    std::os::unix::fs::symlink(t.path("victim.log"), t.path("linked.log")).unwrap();
    let change = "local::write(\"out.txt\", \"x\\n\")";
    // A log that others could read becomes 0600, and holds the change.
    Test::new()
        .args([
            "--audit-log",
            t.path("readable.log").to_str().unwrap(),
            "-e",
            change,
        ])
        .run()
        .status(0);
    assert_eq!(mode(&t.path("readable.log")), 0o600);
    assert!(std::fs::read_to_string(t.path("readable.log"))
        .unwrap()
        .contains("write out.txt"));
    // A log that is a symlink is refused before the change is made.
    let refused = Test::new();
    let out = Command::new(common::harun_bin())
        .args([
            "--audit-log",
            t.path("linked.log").to_str().unwrap(),
            "-e",
            change,
        ])
        .current_dir(refused.dir.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(
        stderr.contains("error[harun::audit_log]") && stderr.contains("is a symbolic link"),
        "{stderr}"
    );
    assert!(
        !refused.path("out.txt").exists(),
        "no change without its audit"
    );
    assert_eq!(
        std::fs::read_to_string(t.path("victim.log")).unwrap(),
        "untouched\n"
    );
}
