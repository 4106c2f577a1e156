//! The SSH transport: one multiplexed master per host (the system's OpenSSH, through the
//! `openssh` crate), so a host's commands share one TCP connection and one login.
//!
//! Masters live in a control directory of this process's own
//! (`$XDG_RUNTIME_DIR/harun-ssh/PID`, else `/run/user/UID/harun-ssh/PID`, else
//! `/dev/shm/harun-ssh-UID/PID`), so concurrent runs (cron and a person) never touch
//! each other's sockets. Directories of processes that died (a killed cron run) are removed
//! at the next start; their masters exit by themselves after a minute idle.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncWriteExt;

use super::error::HostError;
use super::shell::{after_greeting, greeting_command, greeting_marker, quote};
use super::target::{ExecOutput, Target};

/// Runs `command` in an SSH session of its own (one that takes input: its end of input is
/// the end of the data).
pub async fn exec_ssh(
    target: &Target,
    session: Arc<openssh::Session>,
    command: &str,
    stdin: Option<Vec<u8>>,
) -> Result<ExecOutput, HostError> {
    // Under sh, as in the resident shells, whatever the login shell; the greeting marker
    // parts the command's output from what the login printed before it.
    let greeting = greeting_marker();
    let script = format!("{}\n{command}", greeting_command(&greeting));
    let mut cmd = session.arc_raw_command(format!("exec sh -c {}", quote(&script)));
    cmd.stdin(if stdin.is_some() {
        openssh::Stdio::piped()
    } else {
        openssh::Stdio::null()
    })
    .stdout(openssh::Stdio::piped())
    .stderr(openssh::Stdio::piped());
    let mut pause = Duration::ZERO;
    let mut child = loop {
        match cmd.spawn().await {
            Err(e) if retry_refused_session(&e, &mut pause).await => continue,
            spawned => break spawned.map_err(|e| HostError::ssh(target, &e))?,
        }
    };
    if let (Some(input), Some(mut pipe)) = (stdin, child.stdin().take()) {
        pipe.write_all(&input)
            .await
            .map_err(|e| HostError::io(&target.name, "cannot feed the command", &e))?;
        pipe.shutdown().await.ok();
        drop(pipe);
    }
    let out = match child.wait_with_output().await {
        Ok(out) => out,
        Err(e) => return not_found_as_status(target, e),
    };
    Ok(ExecOutput {
        status: out.status.code().unwrap_or(-1),
        stdout: after_greeting(out.stdout, &greeting),
        stderr: after_greeting(out.stderr, &greeting),
    })
}

/// Whether to open a session again after `e`, having waited: while sshd refuses it, for
/// about a second. sshd frees a session only once the channel's close handshake is over,
/// which can trail the exit status the master passes on: a session opened right after
/// another one ended may be refused as one too many (MaxSessions). Nothing ran then, so
/// trying again is safe. `pause` starts at zero.
pub async fn retry_refused_session(e: &openssh::Error, pause: &mut Duration) -> bool {
    if *pause > Duration::from_millis(500) || !session_refused(e) {
        return false;
    }
    *pause = (*pause * 2).max(Duration::from_millis(5));
    tokio::time::sleep(*pause).await;
    true
}

fn session_refused(e: &openssh::Error) -> bool {
    let mut source: Option<&dyn std::error::Error> = Some(e);
    while let Some(s) = source {
        if s.to_string().contains("Session open refused") {
            return true;
        }
        source = s.source();
    }
    false
}

/// openssh turns a remote exit status 127 into an error; give it back as the status the
/// shell returned, so both transports report a missing command the same way.
fn not_found_as_status(target: &Target, e: openssh::Error) -> Result<ExecOutput, HostError> {
    let text = format!(
        "{e}: {}",
        std::error::Error::source(&e)
            .map(|s| s.to_string())
            .unwrap_or_default()
    );
    if text.contains("remote command not found") {
        Ok(ExecOutput {
            status: 127,
            stdout: Vec::new(),
            stderr: b"command not found".to_vec(),
        })
    } else {
        Err(HostError::ssh(target, &e))
    }
}

/// Opens the SSH master for a host: key authentication only, the topology's known-hosts
/// policy, a connect timeout, and a master that exits by itself when idle, so a killed run
/// leaves no process behind for long.
pub async fn connect_ssh(
    target: &Target,
    control_dir: &std::path::Path,
) -> Result<openssh::Session, HostError> {
    let mut builder = openssh::SessionBuilder::default();
    builder
        .port(target.port)
        .connect_timeout(target.connect_timeout)
        .server_alive_interval(Duration::from_secs(15))
        .control_directory(control_dir)
        .control_persist(openssh::ControlPersist::IdleFor(
            std::num::NonZeroUsize::new(60).expect("60 is not zero"),
        ))
        .known_hosts_check(if target.accept_new {
            openssh::KnownHosts::Add
        } else {
            openssh::KnownHosts::Strict
        });
    if let Some(user) = &target.user {
        builder.user(user.clone());
    }
    if let Some(key) = &target.key {
        builder.keyfile(key);
    }
    if let Some(config) = &target.ssh_config {
        builder.config_file(config);
    }
    if let Some(file) = &target.known_hosts_file {
        builder.user_known_hosts_file(file);
    }
    builder
        .connect_mux(&target.address)
        .await
        .map_err(|e| HostError::ssh(target, &e))
}

/// This process's control directory, made on first use (see the module's comment).
pub fn control_dir() -> Result<PathBuf, String> {
    // SAFETY: getuid has no preconditions and cannot fail.
    let uid = unsafe { libc::getuid() };
    let base = control_base(
        std::env::var_os("XDG_RUNTIME_DIR"),
        uid,
        &std::env::temp_dir(),
    );
    std::fs::create_dir_all(&base).map_err(|e| format!("cannot create {}: {e}", base.display()))?;
    own_directory(&base, uid)?;
    restrict(&base).map_err(|e| format!("cannot restrict {}: {e}", base.display()))?;
    remove_stale(&base);
    let dir = base.join(std::process::id().to_string());
    std::fs::create_dir_all(&dir)
        .and_then(|_| restrict(&dir))
        .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    Ok(dir)
}

/// Where the control directories live: memory, not disk, wherever the host offers it.
/// Cron and systemd timers often run without `XDG_RUNTIME_DIR`, and /tmp is often disk
/// (a Raspberry Pi's SD card): sockets and master logs created and removed there each run
/// cost filesystem journaling for nothing.
fn control_base(xdg_runtime_dir: Option<std::ffi::OsString>, uid: u32, temp: &Path) -> PathBuf {
    if let Some(dir) = xdg_runtime_dir.filter(|d| Path::new(d).is_dir()) {
        return PathBuf::from(dir).join("harun-ssh");
    }
    // systemd's per-user runtime directory, there while the user has a session or lingers.
    let user_runtime = PathBuf::from(format!("/run/user/{uid}"));
    if user_runtime.is_dir() {
        return user_runtime.join("harun-ssh");
    }
    let shared = [Path::new("/dev/shm"), temp]
        .into_iter()
        .find(|d| d.is_dir())
        .unwrap_or(temp);
    shared.join(format!("harun-ssh-{uid}"))
}

/// The base may sit in a directory every user can write (/dev/shm, /tmp): refuse one that
/// another user made, or a symlink, rather than put this user's masters in it.
fn own_directory(dir: &Path, uid: u32) -> Result<(), String> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::symlink_metadata(dir)
        .map_err(|e| format!("cannot read {}: {e}", dir.display()))?;
    if !meta.is_dir() || meta.uid() != uid {
        return Err(format!(
            "{} is not a directory of this user's own (uid {uid}): remove it, or set XDG_RUNTIME_DIR",
            dir.display()
        ));
    }
    Ok(())
}

fn restrict(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
}

/// Removes the control directories of harun processes that no longer run.
fn remove_stale(base: &Path) {
    let Ok(entries) = std::fs::read_dir(base) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        if pid != std::process::id() && !Path::new("/proc").join(pid.to_string()).exists() {
            tracing::debug!("removing the stale ssh control directory of process {pid}");
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_directories_stay_off_disk_where_the_host_allows() {
        let temp = Path::new("/var/tmp");
        let xdg = tempfile::tempdir().unwrap();
        assert_eq!(
            control_base(Some(xdg.path().into()), 1000, temp),
            xdg.path().join("harun-ssh")
        );
        // A uid with no /run/user directory, as under cron without a session.
        let uid = 3_999_999;
        let missing = Some(std::ffi::OsString::from("/nonexistent/run"));
        let expected = if Path::new("/dev/shm").is_dir() {
            PathBuf::from(format!("/dev/shm/harun-ssh-{uid}"))
        } else {
            temp.join(format!("harun-ssh-{uid}"))
        };
        assert_eq!(control_base(missing, uid, temp), expected);
        assert_eq!(control_base(None, uid, temp), expected);
    }

    #[test]
    fn a_control_base_that_is_a_symlink_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let link = dir.path().join("harun-ssh-1000");
        std::os::unix::fs::symlink(dir.path(), &link).unwrap();
        let err = own_directory(&link, 0).unwrap_err();
        assert!(
            err.contains("is not a directory of this user's own"),
            "{err}"
        );
        // SAFETY: getuid has no preconditions and cannot fail.
        own_directory(dir.path(), unsafe { libc::getuid() }).unwrap();
    }
}
