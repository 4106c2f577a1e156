//! Paths other local users cannot steer. harun runs as root on machines with other
//! accounts (service users own their config directories, a job may be compromised), so
//! a directory it writes into must be its own, and a file it creates beside someone
//! else's must be created, never opened through a name that another user prepared.
//! Every local write that lands in a shared or predictable place goes through here.

use std::io::Write;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Why a directory cannot be used.
#[derive(Debug, PartialEq, thiserror::Error)]
pub enum DirError {
    /// It could not be read or made.
    #[error("{0}")]
    Io(String),
    /// Another user could change it under harun.
    #[error("{0}")]
    Unsafe(String),
}

impl DirError {
    /// The catalogue's code for it.
    pub fn code(&self) -> &'static str {
        match self {
            DirError::Io(_) => crate::codes::LOCAL_WRITE,
            DirError::Unsafe(_) => crate::codes::PATH_UNSAFE,
        }
    }
}

/// This process's effective uid.
pub fn euid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// Refuses a directory that another user could change under harun: a symbolic link,
/// something not a directory, a directory of another user's, or one that group or others
/// may write to without the sticky bit. `what` names it in the message.
pub fn check_own_dir(dir: &Path, what: &str) -> Result<(), DirError> {
    check_dir(dir, what, true)
}

/// Like [`check_own_dir`], for a directory that may be shared with a group (a log
/// directory such as `/var/log`, group `adm` or `syslog`): a symbolic link, or a directory
/// of a user other than harun's own or root, is refused.
pub fn check_dir_owner(dir: &Path, what: &str) -> Result<(), DirError> {
    check_dir(dir, what, false)
}

fn check_dir(dir: &Path, what: &str, closed: bool) -> Result<(), DirError> {
    let meta = std::fs::symlink_metadata(dir)
        .map_err(|e| DirError::Io(format!("cannot read {what} {}: {e}", dir.display())))?;
    let refuse = |why: String| {
        Err(DirError::Unsafe(format!(
            "{what} {} {why}: harun writes only into a directory of its own user's \
             (remove it or choose another path)",
            dir.display()
        )))
    };
    if meta.file_type().is_symlink() {
        return refuse("is a symbolic link".into());
    }
    if !meta.is_dir() {
        return refuse("is not a directory".into());
    }
    let me = euid();
    if meta.uid() != me && (closed || meta.uid() != 0) {
        return refuse(format!("belongs to uid {}, not to uid {me}", meta.uid()));
    }
    let mode = meta.permissions().mode();
    if closed && mode & 0o022 != 0 && mode & 0o1000 == 0 {
        return refuse(format!(
            "is writable by others (mode {:04o})",
            mode & 0o7777
        ));
    }
    Ok(())
}

/// Makes `dir` (and missing parents) with `mode` when it is missing; an existing one must
/// pass [`check_own_dir`]. True when it made it.
pub fn make_own_dir(dir: &Path, mode: u32, what: &str) -> Result<bool, DirError> {
    use std::os::unix::fs::DirBuilderExt;
    let made = match std::fs::symlink_metadata(dir) {
        Ok(_) => false,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(mode)
                .create(dir)
                .map_err(|e| DirError::Io(format!("cannot make {what} {}: {e}", dir.display())))?;
            true
        }
        Err(e) => {
            return Err(DirError::Io(format!(
                "cannot read {what} {}: {e}",
                dir.display()
            )))
        }
    };
    check_own_dir(dir, what)?;
    Ok(made)
}

/// A new directory under the system's temporary directory, named `PREFIX` and random
/// characters, created exclusively with `mode` (never one that was there before).
pub fn fresh_temp_dir(prefix: &str, mode: u32) -> std::io::Result<PathBuf> {
    let dir = tempfile::Builder::new()
        .prefix(prefix)
        .permissions(std::fs::Permissions::from_mode(mode))
        .tempdir()?;
    let path = dir.keep();
    // The umask may have taken bits from `mode` (0711 needs its x for others).
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))?;
    Ok(path)
}

/// Keeps the current `target` as `target.harun-STAMP.bak` (or, when that name is taken,
/// `target.harun-STAMP-RANDOM.bak`) by a hard link: the backup is the old file itself, its
/// mode, owner and group included, and a link is never made through a name that exists,
/// so a symlink planted under the backup's name leads nowhere. Returns the backup's path.
pub fn link_backup(target: &Path, stamp: &str) -> std::io::Result<PathBuf> {
    let first = backup_name(target, stamp, None);
    match std::fs::hard_link(target, &first) {
        Ok(()) => Ok(first),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            let other = backup_name(target, stamp, Some(&random_hex()));
            std::fs::hard_link(target, &other)?;
            Ok(other)
        }
        Err(e) => Err(e),
    }
}

fn backup_name(target: &Path, stamp: &str, suffix: Option<&str>) -> PathBuf {
    let mut name = target.as_os_str().to_owned();
    name.push(format!(".harun-{stamp}"));
    if let Some(suffix) = suffix {
        name.push(format!("-{suffix}"));
    }
    name.push(".bak");
    PathBuf::from(name)
}

/// 64 random bits as 16 hex digits, from the standard library's per-process random hash
/// keys: a name no other user can guess ahead.
pub fn random_hex() -> String {
    use std::hash::{BuildHasher, Hasher};
    let n = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish();
    format!("{n:016x}")
}

/// Writes `content` to `target` atomically: a new file of a random name beside it
/// (created exclusively, its mode set through the open file), synced, then renamed over
/// `target`. A symlink at `target` is replaced, not followed. `owner` (uid, gid) is given
/// to the new file through its descriptor too.
pub fn write_atomic(
    target: &Path,
    content: &[u8],
    mode: u32,
    owner: Option<(u32, u32)>,
) -> std::io::Result<()> {
    let dir = target
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    remove_dead_writers_files(dir);
    let mut file = tempfile::Builder::new()
        .prefix(&format!(".harun.{}.", std::process::id()))
        .permissions(std::fs::Permissions::from_mode(0o600))
        .tempfile_in(dir)?;
    if let Some((uid, gid)) = owner {
        std::os::unix::fs::fchown(file.as_file(), Some(uid), Some(gid))?;
    }
    file.as_file()
        .set_permissions(std::fs::Permissions::from_mode(mode))?;
    file.write_all(content)?;
    file.as_file().sync_all()?;
    file.persist(target).map(|_| ()).map_err(|e| e.error)
}

/// Removes what a killed run's `write_atomic` left in `dir`: `.harun.PID.*` files of ours
/// whose writer (PID) no longer runs, or whose PID a later process now has. A write killed
/// between its temporary file and the rename cannot clean up after itself (SIGKILL); the
/// next write into the directory does.
/// Only regular files owned by this user go, never through a symlink; a live writer's,
/// or another user's, stay.
fn remove_dead_writers_files(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix(".harun."))
            .and_then(|rest| rest.split('.').next())
            .and_then(|pid| pid.parse::<i32>().ok())
        else {
            continue;
        };
        let Ok(meta) = std::fs::symlink_metadata(entry.path()) else {
            continue;
        };
        // A process under that PID that started after the file last changed is not its
        // writer: the PID was reused.
        let reused = match (crate::process::start_time(pid), meta.modified()) {
            (Some(started), Ok(changed)) => started > changed,
            _ => false,
        };
        if crate::process::is_running(pid) && !reused {
            continue;
        }
        if meta.file_type().is_file() && meta.uid() == euid() {
            tracing::info!("removing {}, left by a killed run", entry.path().display());
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// Opens `path` to append to, creating it with mode 0600: never through a symlink, only a
/// regular file of this user's, and one that group or others could read is made 0600.
/// Returns the file and whether its mode was tightened.
pub fn open_private_append(path: &Path) -> std::io::Result<(std::fs::File, bool)> {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .map_err(|e| {
            if e.raw_os_error() == Some(libc::ELOOP) {
                std::io::Error::other(format!("{} is a symbolic link", path.display()))
            } else {
                e
            }
        })?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(std::io::Error::other(format!(
            "{} is not a regular file",
            path.display()
        )));
    }
    if meta.uid() != euid() {
        return Err(std::io::Error::other(format!(
            "{} belongs to uid {}, not to uid {}",
            path.display(),
            meta.uid(),
            euid()
        )));
    }
    let tightened = meta.permissions().mode() & 0o077 != 0;
    if tightened {
        file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    }
    Ok((file, tightened))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A killed writer's temporary file goes with the next write into its directory, and
    /// so does one whose PID a later process has; a live writer's stays, and so does a
    /// symlink of that name.
    #[test]
    fn a_killed_writers_temporary_file_goes_with_the_next_write() {
        let tmp = tempfile::tempdir().unwrap();
        // PID 4194304 is beyond Linux's largest pid_max: no process has it.
        let dead = tmp.path().join(".harun.4194304.AbCdEf");
        let live = tmp
            .path()
            .join(format!(".harun.{}.GhIjKl", std::process::id()));
        // This process's PID on a file from before it started: a reused PID.
        let reused = tmp
            .path()
            .join(format!(".harun.{}.MnOpQr", std::process::id()));
        let link = tmp.path().join(".harun.4194304.link");
        std::fs::write(&dead, "half").unwrap();
        std::fs::write(&live, "under way").unwrap();
        std::fs::write(&reused, "half").unwrap();
        let an_hour_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
        std::fs::File::options()
            .write(true)
            .open(&reused)
            .unwrap()
            .set_modified(an_hour_ago)
            .unwrap();
        std::os::unix::fs::symlink("/etc/passwd", &link).unwrap();
        write_atomic(&tmp.path().join("nomad.hcl"), b"x = 1\n", 0o644, None).unwrap();
        assert!(!dead.exists());
        assert!(!reused.exists());
        assert!(live.exists());
        assert!(std::fs::symlink_metadata(&link).is_ok());
        assert_eq!(
            std::fs::read_to_string(tmp.path().join("nomad.hcl")).unwrap(),
            "x = 1\n"
        );
    }

    #[test]
    fn a_symlink_or_an_open_directory_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let real = tmp.path().join("real");
        std::fs::create_dir(&real).unwrap();
        std::fs::set_permissions(&real, std::fs::Permissions::from_mode(0o700)).unwrap();
        assert_eq!(check_own_dir(&real, "the directory"), Ok(()));
        let link = tmp.path().join("link");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        let e = check_own_dir(&link, "the snapshot directory")
            .unwrap_err()
            .to_string();
        assert!(e.contains("is a symbolic link"), "{e}");
        std::fs::set_permissions(&real, std::fs::Permissions::from_mode(0o777)).unwrap();
        let e = check_own_dir(&real, "the directory")
            .unwrap_err()
            .to_string();
        assert!(e.contains("writable by others (mode 0777)"), "{e}");
        // make_own_dir neither follows nor accepts the link.
        assert!(make_own_dir(&link, 0o700, "the directory").is_err());
    }

    #[test]
    fn a_backup_is_never_made_through_a_planted_name() {
        let tmp = tempfile::tempdir().unwrap();
        let target = tmp.path().join("vault.hcl");
        std::fs::write(&target, "old").unwrap();
        let victim = tmp.path().join("victim");
        std::fs::write(&victim, "untouched").unwrap();
        let planted = tmp.path().join("vault.hcl.harun-20261206T000000.bak");
        std::os::unix::fs::symlink(&victim, &planted).unwrap();
        let backup = link_backup(&target, "20261206T000000").unwrap();
        assert_ne!(backup, planted);
        assert_eq!(std::fs::read_to_string(&backup).unwrap(), "old");
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "untouched");
    }

    #[test]
    fn the_append_file_is_never_a_link_and_ends_private() {
        let tmp = tempfile::tempdir().unwrap();
        let log = tmp.path().join("audit.log");
        std::fs::write(&log, "").unwrap();
        std::fs::set_permissions(&log, std::fs::Permissions::from_mode(0o644)).unwrap();
        let (_, tightened) = open_private_append(&log).unwrap();
        assert!(tightened);
        let mode = std::fs::metadata(&log).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let link = tmp.path().join("link.log");
        std::os::unix::fs::symlink(&log, &link).unwrap();
        let e = open_private_append(&link).unwrap_err();
        assert!(e.to_string().contains("symbolic link"), "{e}");
    }
}
