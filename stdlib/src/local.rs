//! `local`: files and commands on the machine harun runs on (a controller running its own
//! health check from cron, or the lab). This machine is the host `local`: commands and
//! writes go through the hosts' runner and atomic write (with its backup), and every
//! change through the run's dry-run / audit path.

use std::os::unix::fs::PermissionsExt;

use harun_runtime::codes;
use harun_runtime::error::{call_error, code_and_message};
use harun_runtime::private_fs;
use rhai::plugin::*;

use crate::hosts::{write_file as write_on, FileOptions, HostHandle};

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
        write_file(&ctx, path, content, None, None, true)
    }

    /// Like `write(path, content)` without the backup: for a file harun makes afresh each
    /// time (a metrics textfile), whose old content nobody needs. Atomic all the same.
    #[rhai_fn(volatile, return_raw)]
    pub fn replace(
        ctx: NativeCallContext,
        path: &str,
        content: &str,
    ) -> Result<bool, Box<EvalAltResult>> {
        write_file(&ctx, path, content, None, None, false)
    }

    /// Like `write(path, content)`, with the file's `mode` (e.g. `0o600`).
    #[rhai_fn(name = "write", volatile, return_raw)]
    pub fn write_mode(
        ctx: NativeCallContext,
        path: &str,
        content: &str,
        mode: i64,
    ) -> Result<bool, Box<EvalAltResult>> {
        write_file(&ctx, path, content, None, Some(mode), true)
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
            Some("<secret>\n"),
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

/// A write to this machine: the hosts' atomic write on the host `local` (the same script,
/// backup and protections as `h.write`), with the mode always named in the plan: the
/// one given, the old file's, or 0644.
fn write_file(
    ctx: &NativeCallContext,
    path: &str,
    content: &str,
    shown: Option<&str>,
    mode: Option<i64>,
    backup: bool,
) -> Result<bool, Box<EvalAltResult>> {
    // A file that is there but cannot be read is a read error, as `local::read` gives it.
    if let Err(e) = std::fs::File::open(path) {
        if e.kind() != std::io::ErrorKind::NotFound {
            let message = format!("cannot read {path} before writing it: {e}");
            return Err(call_error(ctx, codes::LOCAL_READ, message));
        }
    }
    let old_mode = std::fs::metadata(path)
        .ok()
        .map(|m| m.permissions().mode() & 0o7777);
    let options = FileOptions {
        mode: Some(mode.map_or(old_mode.unwrap_or(0o644), |m| m as u32)),
        backup,
        // Only root may give the new file the old one's owner; anyone else's write is
        // theirs. A secret is always the writer's.
        writer_owns: shown.is_some() || private_fs::euid() != 0,
        failure_code: Some(codes::LOCAL_WRITE),
        ..FileOptions::default()
    };
    let host = HostHandle::local();
    write_on(ctx, &host, path, content.as_bytes(), shown, &options)
        .map_err(|e| as_local_write(ctx, e))
}

/// A failure of the host `local` (a timeout, a command that could not start) as
/// `local::write`'s own (`harun::local::write`); a refusal that is not the host's (the
/// run's lock lost) keeps its code.
fn as_local_write(ctx: &NativeCallContext, e: Box<EvalAltResult>) -> Box<EvalAltResult> {
    if let EvalAltResult::ErrorRuntime(value, _) = &*e {
        let (code, message) = code_and_message(value);
        // The host family of codes (`harun` `host` ...), written so because a code
        // spelled out here must be one of the catalogue's.
        if code.split("::").nth(1) == Some("host") {
            return call_error(ctx, codes::LOCAL_WRITE, message);
        }
    }
    e
}
