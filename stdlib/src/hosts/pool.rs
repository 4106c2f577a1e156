//! One connection per host for the whole run, shared by every call and thread.
//!
//! SSH masters live in a control directory of this process's own
//! (`$XDG_RUNTIME_DIR/harun-ssh/PID`, else `/run/user/UID/harun-ssh/PID`, else
//! `/dev/shm/harun-ssh-UID/PID`), so concurrent runs (cron and a person) never touch
//! each other's sockets. Directories of processes that died (a killed cron run) are removed
//! at the next start; their masters exit by themselves after a minute idle.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use super::error::HostError;
use super::transport::{connect_ssh, Connection, Target};
use harun_runtime::codes;

struct Slot {
    connection: tokio::sync::Mutex<Option<Arc<Connection>>>,
}

#[derive(Default)]
pub struct Pool {
    slots: Mutex<HashMap<String, Arc<Slot>>>,
    control_dir: OnceLock<Result<PathBuf, String>>,
}

impl Pool {
    fn slot(&self, target: &Target) -> Arc<Slot> {
        let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        slots
            .entry(target.name.clone())
            .or_insert_with(|| {
                Arc::new(Slot {
                    connection: tokio::sync::Mutex::new(None),
                })
            })
            .clone()
    }

    /// The host's connection, connecting on first use.
    pub async fn acquire(&self, target: &Target) -> Result<Arc<Connection>, HostError> {
        let slot = self.slot(target);
        let mut connection = slot.connection.lock().await;
        if let Some(c) = connection.as_ref() {
            return Ok(c.clone());
        }
        let fresh = if target.local {
            Arc::new(Connection::local(target.max_sessions))
        } else {
            let dir = self
                .control_dir()
                .map_err(|e| HostError::new(codes::HOST_CONTROL_DIR, &target.name, e))?;
            tracing::debug!(host = %target.name, address = %target.address, "connecting over ssh");
            let session = connect_ssh(target, &dir).await?;
            Arc::new(Connection::ssh(session, target.max_sessions))
        };
        *connection = Some(fresh.clone());
        Ok(fresh)
    }

    /// Forgets a broken connection so the next call reconnects (a host that rebooted).
    pub async fn invalidate(&self, target: &Target) {
        let slot = self.slot(target);
        slot.connection.lock().await.take();
    }

    fn control_dir(&self) -> Result<PathBuf, String> {
        self.control_dir
            .get_or_init(|| {
                // SAFETY: getuid has no preconditions and cannot fail.
                let uid = unsafe { libc::getuid() };
                let base = control_base(
                    std::env::var_os("XDG_RUNTIME_DIR"),
                    uid,
                    &std::env::temp_dir(),
                );
                std::fs::create_dir_all(&base)
                    .map_err(|e| format!("cannot create {}: {e}", base.display()))?;
                own_directory(&base, uid)?;
                restrict(&base).map_err(|e| format!("cannot restrict {}: {e}", base.display()))?;
                remove_stale(&base);
                let dir = base.join(std::process::id().to_string());
                std::fs::create_dir_all(&dir)
                    .and_then(|_| restrict(&dir))
                    .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
                Ok(dir)
            })
            .clone()
    }

    /// Closes every master and removes the control directory (the end of the run).
    pub async fn close(&self) {
        let slots: Vec<Arc<Slot>> = self
            .slots
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain()
            .map(|(_, s)| s)
            .collect();
        // All masters at once: a run over 30 hosts should not wait 30 times in a row.
        let mut closing = tokio::task::JoinSet::new();
        for slot in slots {
            closing.spawn(async move {
                let connection = slot.connection.lock().await.take();
                if let Some(connection) = connection.and_then(|c| Arc::try_unwrap(c).ok()) {
                    let _ = tokio::time::timeout(Duration::from_secs(6), connection.close()).await;
                }
            });
        }
        while closing.join_next().await.is_some() {}
        if let Some(Ok(dir)) = self.control_dir.get() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
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
