//! `local`: files and commands on the machine harun runs on (a controller running its own
//! health check from cron, or the lab). Writes are atomic and keep a backup; every change
//! goes through the run's dry-run / audit path.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use harun_runtime::codes;
use harun_runtime::error::call_error;
use harun_runtime::private_fs;
use harun_runtime::{Action, Context};
use rhai::plugin::*;

#[export_module]
pub mod local_api {
    use harun_runtime::private_fs;
    use std::path::Path;

    use super::write_file;
    use crate::hosts::{run_command, HostHandle, RunOptions};
    use harun_runtime::error::call_error;
    use harun_runtime::{Action, Context, Secret};
    use rhai::Map;

    /// The contents of the text file at `path`.
    #[rhai_fn(volatile, return_raw)]
    pub fn read(ctx: NativeCallContext, path: &str) -> Result<String, Box<EvalAltResult>> {
        std::fs::read_to_string(path)
            .map_err(|e| call_error(&ctx, codes::LOCAL_READ, format!("cannot read {path}: {e}")))
    }

    /// True when `path` exists.
    #[rhai_fn(volatile)]
    pub fn exists(path: &str) -> bool {
        Path::new(path).exists()
    }

    /// The SHA-256 of the file at `path`, in hex (as `sha256sum` prints it), read in chunks.
    #[rhai_fn(volatile, return_raw)]
    pub fn sha256(ctx: NativeCallContext, path: &str) -> Result<String, Box<EvalAltResult>> {
        use sha2::{Digest, Sha256};
        let mut hasher = Sha256::new();
        std::fs::File::open(path)
            .and_then(|mut f| std::io::copy(&mut f, &mut hasher))
            .map_err(|e| call_error(&ctx, codes::LOCAL_READ, format!("cannot read {path}: {e}")))?;
        Ok(format!("{:x}", hasher.finalize()))
    }

    /// The names in the directory `dir`, sorted; `[]` when it does not exist.
    #[rhai_fn(volatile, return_raw)]
    pub fn list(ctx: NativeCallContext, dir: &str) -> Result<rhai::Array, Box<EvalAltResult>> {
        let entries = match std::fs::read_dir(dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(rhai::Array::new()),
            Err(e) => {
                return Err(call_error(
                    &ctx,
                    codes::LOCAL_READ,
                    format!("cannot list {dir}: {e}"),
                ))
            }
        };
        let mut names: Vec<String> = entries
            .flatten()
            .map(|e| e.file_name().to_string_lossy().to_string())
            .collect();
        names.sort();
        Ok(names.into_iter().map(Into::into).collect())
    }

    /// Makes the directory `path` (and its parents) with mode 0700 when it is missing;
    /// true when it made it. A change (planned in a dry run). An existing `path` must be a
    /// directory of this user's that others cannot write to, not a symlink: what harun
    /// keeps there (snapshots, backups) must not be another user's to replace.
    #[rhai_fn(volatile, return_raw)]
    pub fn mkdir(ctx: NativeCallContext, path: &str) -> Result<bool, Box<EvalAltResult>> {
        let what = "the directory";
        let refused = |e: private_fs::DirError| call_error(&ctx, e.code(), e.to_string());
        if std::fs::symlink_metadata(path).is_ok() {
            private_fs::check_own_dir(Path::new(path), what).map_err(refused)?;
            return Ok(false);
        }
        let action = Action::new("mkdir", "local", format!("mkdir -m 0700 {path}"));
        let made = Context::of(&ctx).perform(action, || {
            private_fs::make_own_dir(Path::new(path), 0o700, what).map_err(refused)
        })?;
        Ok(made.is_some())
    }

    /// Removes the file `path`; true when it was there. A change (planned in a dry run).
    #[rhai_fn(volatile, return_raw)]
    pub fn remove(ctx: NativeCallContext, path: &str) -> Result<bool, Box<EvalAltResult>> {
        if !Path::new(path).is_file() {
            return Ok(false);
        }
        let action = Action::new("remove", "local", format!("rm {path}"));
        let removed = Context::of(&ctx).perform(action, || {
            std::fs::remove_file(path).map_err(|e| {
                call_error(
                    &ctx,
                    codes::LOCAL_WRITE,
                    format!("cannot remove {path}: {e}"),
                )
            })
        })?;
        Ok(removed.is_some())
    }

    /// Writes `content` to `path` atomically (a temporary file renamed into place), keeping
    /// the mode of the file it replaces (0644 for a new one) and a timestamped backup
    /// `path.harun-YYYYmmddTHHMMSS.bak` of the old content. Returns true when the file
    /// changed; writing identical content changes nothing.
    #[rhai_fn(name = "write", volatile, return_raw)]
    pub fn write(
        ctx: NativeCallContext,
        path: &str,
        content: &str,
    ) -> Result<bool, Box<EvalAltResult>> {
        write_file(&ctx, path, content, content, None, true)
    }

    /// Like `write(path, content)` without the backup: for a file harun makes afresh each
    /// time (a metrics textfile), whose old content nobody needs. Atomic all the same.
    #[rhai_fn(volatile, return_raw)]
    pub fn replace(
        ctx: NativeCallContext,
        path: &str,
        content: &str,
    ) -> Result<bool, Box<EvalAltResult>> {
        write_file(&ctx, path, content, content, None, false)
    }

    /// Like `write(path, content)`, with the file's `mode` (e.g. `0o600`).
    #[rhai_fn(name = "write", volatile, return_raw)]
    pub fn write_mode(
        ctx: NativeCallContext,
        path: &str,
        content: &str,
        mode: i64,
    ) -> Result<bool, Box<EvalAltResult>> {
        write_file(&ctx, path, content, content, Some(mode), true)
    }

    /// Writes a Secret to `path` with mode 0600; plans and logs show `<secret>`.
    #[rhai_fn(name = "write", volatile, return_raw)]
    pub fn write_secret(
        ctx: NativeCallContext,
        path: &str,
        content: Secret,
    ) -> Result<bool, Box<EvalAltResult>> {
        write_file(
            &ctx,
            path,
            content.expose(),
            "<secret>\n",
            Some(0o600),
            true,
        )
    }

    /// Runs `command` with `sh -c` on this machine, as `h.run(command)` runs it on a host
    /// (this machine is the host `local`): returns `#{host, command, status, ok, stdout,
    /// stderr}`; a non-zero status is returned, not thrown. In a dry run the command is
    /// planned, not run, and the result has status 0 and `dry_run: true`.
    #[rhai_fn(volatile, return_raw)]
    pub fn run(ctx: NativeCallContext, command: &str) -> Result<Map, Box<EvalAltResult>> {
        let options = RunOptions {
            timeout: Some(Context::of(&ctx).options().call_timeout),
            ..RunOptions::default()
        };
        run_command(&ctx, &HostHandle::local(), command, options)
    }
}

fn write_file(
    ctx: &NativeCallContext,
    path: &str,
    content: &str,
    shown: &str,
    mode: Option<i64>,
    backup: bool,
) -> Result<bool, Box<EvalAltResult>> {
    let target = Path::new(path);
    let old = match std::fs::read_to_string(target) {
        Ok(old) => Some(old),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => {
            return Err(call_error(
                ctx,
                codes::LOCAL_READ,
                format!("cannot read {path} before writing it: {e}"),
            ))
        }
    };
    if old.as_deref() == Some(content) {
        return Ok(false);
    }
    let old_mode = std::fs::metadata(target)
        .ok()
        .map(|m| m.permissions().mode() & 0o7777);
    let mode = mode.map(|m| m as u32).or(old_mode).unwrap_or(0o644);
    let old_shown = match (&old, shown == content) {
        (Some(old), true) => old.clone(),
        (Some(_), false) => "<secret>\n".to_string(),
        (None, _) => String::new(),
    };
    let policy = harun_runtime::plan::DiffPolicy {
        private: mode & 0o077 == 0 || old_mode.is_some_and(|m| m & 0o077 == 0),
        ..Default::default()
    };
    let action = Action::new("write", "local", format!("write {path} (mode {mode:04o})"))
        .with_file_diff(path, &old_shown, shown, &policy);
    let context = Context::of(ctx);
    // A refusal (the run's lock lost) keeps its own code, not local::write's.
    context.check_guards()?;
    let done = context
        .perform(action, || {
            atomic_write(target, content, mode, backup && old.is_some())
        })
        .map_err(|e| call_error(ctx, codes::LOCAL_WRITE, format!("cannot write {path}: {e}")))?;
    Ok(done.is_some())
}

/// The new file replaces the old one by a rename; the old one stays as its backup (a hard
/// link, never through a name someone else made: see `private_fs::link_backup`), and the
/// new one keeps its owner and group where this user may give them.
fn atomic_write(target: &Path, content: &str, mode: u32, backup: bool) -> std::io::Result<()> {
    use std::os::unix::fs::MetadataExt;
    if backup {
        private_fs::link_backup(target, &crate::hosts::stamp())?;
    }
    let owner = std::fs::metadata(target)
        .ok()
        .filter(|_| private_fs::euid() == 0)
        .map(|m| (m.uid(), m.gid()));
    private_fs::write_atomic(target, content.as_bytes(), mode, owner)
}
