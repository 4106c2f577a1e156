//! The user a twin runs as. A packaged Vault runs as the `vault` user (its systemd unit's
//! `User=vault`), so files that root leaves in its raft path (a `vault operator migrate`
//! run as root, a directory made by hand) stop it at start. The lab reproduces that when
//! it runs as root: the Vault twins run as a system user of their own.

use std::ffi::{CStr, CString};
use std::path::Path;

/// The system user the lab's Vault twins run as when the lab runs as root.
pub const LAB_VAULT_USER: &str = "harun-vault";

/// A user's uid, gid and name, from the password database.
#[derive(Clone, Debug)]
pub struct Account {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
}

/// Looks a user up by name; None when there is no such user.
pub fn lookup(name: &str) -> Option<Account> {
    let c_name = CString::new(name).ok()?;
    let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
    let mut buf = vec![0 as libc::c_char; 16 * 1024];
    let mut result: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: every pointer is valid for the call; the buffer outlives `pwd`'s strings,
    // which are not kept past it.
    let rc = unsafe {
        libc::getpwnam_r(
            c_name.as_ptr(),
            &mut pwd,
            buf.as_mut_ptr(),
            buf.len(),
            &mut result,
        )
    };
    (rc == 0 && !result.is_null()).then(|| Account {
        name: name.to_string(),
        uid: pwd.pw_uid,
        gid: pwd.pw_gid,
    })
}

/// The name of the user this process runs as.
pub fn current_user_name() -> String {
    let uid = unsafe { libc::geteuid() };
    let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
    let mut buf = vec![0 as libc::c_char; 16 * 1024];
    let mut result: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: as in `lookup`.
    let rc = unsafe { libc::getpwuid_r(uid, &mut pwd, buf.as_mut_ptr(), buf.len(), &mut result) };
    if rc == 0 && !result.is_null() {
        // SAFETY: pw_name points into `buf`, NUL-terminated.
        unsafe { CStr::from_ptr(pwd.pw_name) }
            .to_string_lossy()
            .into_owned()
    } else {
        uid.to_string()
    }
}

/// The name of the group `gid`, or None when the group database has no such group.
pub fn group_name(gid: u32) -> Option<String> {
    let mut grp: libc::group = unsafe { std::mem::zeroed() };
    let mut buf = vec![0 as libc::c_char; 16 * 1024];
    let mut result: *mut libc::group = std::ptr::null_mut();
    // SAFETY: as in `lookup`.
    let rc = unsafe { libc::getgrgid_r(gid, &mut grp, buf.as_mut_ptr(), buf.len(), &mut result) };
    // SAFETY: gr_name points into `buf`, NUL-terminated.
    (rc == 0 && !result.is_null()).then(|| {
        unsafe { CStr::from_ptr(grp.gr_name) }
            .to_string_lossy()
            .into_owned()
    })
}

pub fn is_root() -> bool {
    unsafe { libc::geteuid() == 0 }
}

/// The lab's Vault user: made (a system user, no home, no login) when it is missing.
pub fn ensure_lab_user() -> Result<Account, String> {
    if let Some(account) = lookup(LAB_VAULT_USER) {
        return Ok(account);
    }
    // Labs started at once (parallel tests) make the user once: one at a time here.
    let lock = std::fs::File::create("/run/harun-lab-user.lock")
        .map_err(|e| format!("cannot lock /run/harun-lab-user.lock: {e}"))?;
    // SAFETY: flock on a file we hold open; released when it closes.
    unsafe { libc::flock(std::os::fd::AsRawFd::as_raw_fd(&lock), libc::LOCK_EX) };
    if let Some(account) = lookup(LAB_VAULT_USER) {
        return Ok(account);
    }
    eprintln!(
        "harun lab: creating the system user {LAB_VAULT_USER}, as whom the lab's Vault twins run (a packaged Vault runs as `vault`)"
    );
    let out = std::process::Command::new("useradd")
        .args([
            "--system",
            "--no-create-home",
            "--home-dir",
            "/nonexistent",
            "--shell",
            "/usr/sbin/nologin",
            LAB_VAULT_USER,
        ])
        .output()
        .map_err(|e| format!("cannot run useradd to create {LAB_VAULT_USER}: {e}"))?;
    if !out.status.success() && lookup(LAB_VAULT_USER).is_none() {
        return Err(format!(
            "cannot create the system user {LAB_VAULT_USER}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    lookup(LAB_VAULT_USER).ok_or_else(|| format!("useradd did not create {LAB_VAULT_USER}"))
}

/// Gives `path` (not what is inside) to `account`.
pub fn chown(path: &Path, account: &Account) -> Result<(), String> {
    std::os::unix::fs::chown(path, Some(account.uid), Some(account.gid))
        .map_err(|e| format!("cannot give {} to {}: {e}", path.display(), account.name))
}

/// Every ancestor of `dir` must let others through, or the service user cannot reach its
/// files there.
pub fn check_reachable(dir: &Path, account: &Account) -> Result<(), String> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    for ancestor in dir.ancestors() {
        let Ok(meta) = std::fs::metadata(ancestor) else {
            continue;
        };
        let mode = meta.permissions().mode();
        if meta.uid() != account.uid && mode & 0o001 == 0 {
            return Err(format!(
                "the lab's Vault runs as {}, which cannot enter {} (mode {:o}): choose a --dir \
                 under a directory that others may enter, such as /tmp, or `chmod o+x {}`",
                account.name,
                ancestor.display(),
                mode & 0o7777,
                ancestor.display()
            ));
        }
    }
    Ok(())
}

/// Becomes `name` for good (groups, gid, then uid). Call before any thread starts.
pub fn become_user(name: &str) -> Result<(), String> {
    let account = lookup(name).ok_or_else(|| format!("no user {name:?} to run as"))?;
    if unsafe { libc::geteuid() } == account.uid {
        return Ok(());
    }
    // SAFETY: plain system calls on this single-threaded process.
    let failed = unsafe {
        libc::setgroups(0, std::ptr::null()) != 0
            || libc::setgid(account.gid) != 0
            || libc::setuid(account.uid) != 0
    };
    if failed {
        return Err(format!(
            "cannot run as {name}: {}",
            std::io::Error::last_os_error()
        ));
    }
    Ok(())
}
