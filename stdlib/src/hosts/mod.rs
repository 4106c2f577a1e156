//! Hosts from the topology, and what scripts do on them: run commands, read and write
//! files, in parallel over many hosts. Registered as the `ssh` module; its functions are
//! also methods of `Host` (`h.exec("uptime")`).

pub mod error;
pub mod local;
pub mod pool;
pub mod resident;
pub mod shell;
pub mod ssh;
pub mod target;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use harun_runtime::codes;
use harun_runtime::diagnostic::interrupt_error;
use harun_runtime::error::call_error;
use harun_runtime::topology::Host;
use harun_runtime::{Action, Context};
use rhai::{Dynamic, EvalAltResult, Map, NativeCallContext};

use error::HostError;
use pool::Pool;
use target::{ExecOutput, Target};

type RhaiResult<T> = Result<T, Box<EvalAltResult>>;

/// A host of the topology, as scripts hold it, with how to reach it resolved once.
#[derive(Clone)]
pub struct HostHandle {
    host: Arc<Host>,
    target: Arc<Target>,
}

impl HostHandle {
    pub fn new(host: &Host) -> HostHandle {
        HostHandle {
            target: Arc::new(Target::from_host(host)),
            host: Arc::new(host.clone()),
        }
    }

    /// This machine: commands under its own `sh`, as a host of `transport = "local"`.
    pub fn local() -> HostHandle {
        HostHandle::new(&Host::local())
    }

    pub fn name(&self) -> &str {
        &self.host.name
    }

    pub fn target(&self) -> Arc<Target> {
        self.target.clone()
    }
}

impl std::ops::Deref for HostHandle {
    type Target = Host;

    fn deref(&self) -> &Host {
        &self.host
    }
}

/// The run's connection pool; closed when the run ends.
#[derive(Default)]
struct Hosts {
    pool: Arc<Pool>,
    closing: AtomicBool,
}

fn pool(context: &Context) -> Arc<Pool> {
    let hosts = context.extension::<Hosts>();
    if !hosts.closing.swap(true, Ordering::SeqCst) {
        let pool = hosts.pool.clone();
        let ctx = context.clone();
        context.on_finish(move || {
            let _ = ctx
                .bridge()
                .block_on(Duration::from_secs(5), async move { pool.close().await });
        });
    }
    hosts.pool.clone()
}

/// The topology host `name`, or an error listing the known ones.
pub fn lookup(ctx: &NativeCallContext, name: &str) -> RhaiResult<HostHandle> {
    let context = Context::of(ctx);
    let topology = context.options().topology.clone();
    let Some(topology) = topology else {
        return Err(call_error(
            ctx,
            codes::HOST_NO_TOPOLOGY,
            format!("no host `{name}`: there is no topology (pass --topology FILE or create ./harun.hcl)"),
        ));
    };
    match topology.host(name) {
        Some(host) => Ok(HostHandle::new(host)),
        None => Err(call_error(
            ctx,
            codes::HOST_UNKNOWN,
            format!(
                "no host `{name}` in {} (hosts: {})",
                topology.path.display(),
                topology
                    .hosts
                    .iter()
                    .map(|h| h.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        )),
    }
}

/// Options of `run` / `exec` / `query`: `#{sudo: true, timeout: 120, stdin: "..."}`.
#[derive(Default)]
pub struct RunOptions {
    pub sudo: bool,
    pub timeout: Option<Duration>,
    pub stdin: Option<Vec<u8>>,
}

impl RunOptions {
    pub fn parse(ctx: &NativeCallContext, options: &Map) -> RhaiResult<RunOptions> {
        let mut out = RunOptions::default();
        for (key, value) in options {
            match key.as_str() {
                "sudo" => {
                    out.sudo = value
                        .as_bool()
                        .map_err(|_| bad_option(ctx, "sudo", "true or false"))?
                }
                "timeout" => {
                    let secs = value
                        .as_float()
                        .or_else(|_| value.as_int().map(|i| i as f64))
                        .map_err(|_| bad_option(ctx, "timeout", "a number of seconds"))?;
                    out.timeout = Some(Duration::from_secs_f64(secs.max(0.0)));
                }
                "stdin" => {
                    out.stdin = Some(
                        value
                            .clone()
                            .into_string()
                            .map_err(|_| bad_option(ctx, "stdin", "a string"))?
                            .into_bytes(),
                    )
                }
                other => {
                    return Err(call_error(
                        ctx,
                        codes::HOST_OPTION,
                        format!("unknown option `{other}` (known: sudo, timeout, stdin)"),
                    ))
                }
            }
        }
        Ok(out)
    }
}

fn bad_option(ctx: &NativeCallContext, key: &str, what: &str) -> Box<EvalAltResult> {
    call_error(
        ctx,
        codes::HOST_OPTION,
        format!("option `{key}` must be {what}"),
    )
}

/// A command that only reads (a service's state, a file, a probe): sent at once, in a
/// dry run too, and not audited. A command that changes anything goes through [`change`]
/// or [`change_command`], the only other ways a command reaches a host.
pub fn read_command(
    ctx: &NativeCallContext,
    host: &HostHandle,
    command: &str,
    stdin: Option<Vec<u8>>,
    timeout: Option<Duration>,
) -> RhaiResult<ExecOutput> {
    exec_raw(ctx, host, command, stdin, timeout)
}

/// A change made by commands, recorded as one action: planned in a dry run (None, and
/// `run` is not called), audited otherwise. `run` sends the change's commands through the
/// [`HostChange`] it is given, which exists only here.
pub fn change<T>(
    ctx: &NativeCallContext,
    host: &HostHandle,
    action: Action,
    run: impl FnOnce(&HostChange) -> RhaiResult<T>,
) -> RhaiResult<Option<T>> {
    Context::of(ctx).perform(action, || run(&HostChange { host }))
}

/// A change that is one command, which must exit 0 (a non-zero status is the error
/// `command_failed` makes, naming `what`): its output, or None in a dry run.
pub fn change_command(
    ctx: &NativeCallContext,
    host: &HostHandle,
    action: Action,
    command: &str,
    stdin: Option<Vec<u8>>,
    what: &str,
) -> RhaiResult<Option<ExecOutput>> {
    change(ctx, host, action, |c| {
        c.run(ctx, command, stdin, None, what)
    })
}

/// The sending side of a recorded change (see [`change`]).
pub struct HostChange<'a> {
    host: &'a HostHandle,
}

impl HostChange<'_> {
    /// One command of the change; any exit status comes back.
    pub fn exec(
        &self,
        ctx: &NativeCallContext,
        command: &str,
        stdin: Option<Vec<u8>>,
        timeout: Option<Duration>,
    ) -> RhaiResult<ExecOutput> {
        exec_raw(ctx, self.host, command, stdin, timeout)
    }

    /// One command of the change that must exit 0; `what` names it in the error.
    pub fn run(
        &self,
        ctx: &NativeCallContext,
        command: &str,
        stdin: Option<Vec<u8>>,
        timeout: Option<Duration>,
        what: &str,
    ) -> RhaiResult<ExecOutput> {
        let out = self.exec(ctx, command, stdin, timeout)?;
        if out.status != 0 {
            return Err(command_failed(ctx, self.host.name(), what, &out));
        }
        Ok(out)
    }
}

/// Runs a command on a host and waits for it, within the host's timeouts and the run's
/// cancellation. The one place where commands reach hosts; private to hosts/, so that a
/// command is sent either as a read or inside a recorded change.
fn exec_raw(
    ctx: &NativeCallContext,
    host: &HostHandle,
    command: &str,
    stdin: Option<Vec<u8>>,
    timeout: Option<Duration>,
) -> RhaiResult<ExecOutput> {
    let context = Context::of(ctx);
    let target = host.target();
    let pool = pool(&context);
    tracing::debug!(host = %target.name, "exec: {command}");
    let interrupted = |interrupt| {
        interrupt_error(
            interrupt,
            &format!("{}: `{command}`", target.name),
            ctx.call_position(),
        )
    };
    // Connecting and running have their own limits: a slow handshake does not eat the
    // command's time, and a local command waits for no handshake at all.
    let (t, p) = (target.clone(), pool.clone());
    let connection = context
        .block_on(
            target.connect_timeout + Duration::from_secs(1),
            async move { p.acquire(&t).await },
        )
        .map_err(interrupted)?
        .map_err(|e| host_error(ctx, &e))?;
    let (t, p, cmd) = (target.clone(), pool.clone(), command.to_string());
    let outcome = context
        .block_on(timeout.unwrap_or(target.command_timeout), async move {
            let result = connection.exec(&t, &cmd, stdin).await;
            if result.is_err() {
                p.invalidate(&t).await;
            }
            result
        })
        .map_err(interrupted)?;
    outcome.map_err(|e| host_error(ctx, &e))
}

/// A host error as a script error; the full cause chain goes to the log (`-v`).
pub fn host_error(ctx: &NativeCallContext, e: &HostError) -> Box<EvalAltResult> {
    if e.detail != e.reason {
        tracing::info!(host = %e.host, "{}", e.detail);
    }
    call_error(ctx, e.code(), e.to_string())
}

/// Whether this operation should run under sudo on this host.
fn use_sudo(target: &Target, asked: bool) -> bool {
    (asked || target.sudo) && target.needs_sudo()
}

fn result_map(host: &HostHandle, command: &str, out: Option<&ExecOutput>) -> Map {
    let mut map = Map::new();
    map.insert("host".into(), host.name().into());
    map.insert("command".into(), command.into());
    match out {
        Some(out) => {
            map.insert("status".into(), (out.status as i64).into());
            map.insert("ok".into(), (out.status == 0).into());
            map.insert(
                "stdout".into(),
                String::from_utf8_lossy(&out.stdout).into_owned().into(),
            );
            map.insert(
                "stderr".into(),
                String::from_utf8_lossy(&out.stderr).into_owned().into(),
            );
        }
        None => {
            map.insert("status".into(), 0_i64.into());
            map.insert("ok".into(), true.into());
            map.insert("stdout".into(), "".into());
            map.insert("stderr".into(), "".into());
            map.insert("dry_run".into(), true.into());
        }
    }
    map
}

/// The last lines of stderr, for an error message.
fn tail(stderr: &[u8]) -> String {
    let text = String::from_utf8_lossy(stderr);
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(5)..].join(" | ")
}

/// The error for a command that exited non-zero, classified by status and stderr.
pub fn command_failed(
    ctx: &NativeCallContext,
    host: &str,
    command: &str,
    out: &ExecOutput,
) -> Box<EvalAltResult> {
    let stderr = tail(&out.stderr);
    let lower = stderr.to_lowercase();
    let (code, what) =
        if lower.contains("a password is required") || lower.contains("a terminal is required") {
            (
                codes::HOST_SUDO,
                "sudo needs a password; allow the command without one (NOPASSWD) for this user"
                    .to_string(),
            )
        } else if out.status == 127 {
            (
                codes::HOST_COMMAND_NOT_FOUND,
                "command not found".to_string(),
            )
        } else if out.status == 126
            || lower.contains("permission denied")
            || lower.contains("operation not permitted")
        {
            (
                codes::HOST_PERMISSION,
                "permission denied (set `sudo = true` for this host, or use the `sudo` option)"
                    .to_string(),
            )
        } else {
            (
                codes::HOST_COMMAND_FAILED,
                format!("exited with status {}", out.status),
            )
        };
    let mut message = format!("{host}: `{command}` {what}");
    if !stderr.is_empty() {
        message.push_str(": ");
        message.push_str(&stderr);
    }
    call_error(ctx, code, message)
}

/// Runs a command as a change and returns `#{host, command, status, ok, stdout, stderr}`
/// (`dry_run: true` and status 0 in a dry run); a non-zero status is returned, not thrown.
pub fn run_command(
    ctx: &NativeCallContext,
    host: &HostHandle,
    command: &str,
    options: RunOptions,
) -> RhaiResult<Map> {
    let out = perform_command(ctx, host, command, options)?;
    Ok(result_map(host, command, out.as_ref()))
}

/// Runs a command as a change: planned in a dry run, audited otherwise.
fn perform_command(
    ctx: &NativeCallContext,
    host: &HostHandle,
    command: &str,
    options: RunOptions,
) -> RhaiResult<Option<ExecOutput>> {
    let target = host.target();
    let sudo = use_sudo(&target, options.sudo);
    let shown = if sudo {
        format!("sudo {command}")
    } else {
        command.to_string()
    };
    let command = shell::command(command, sudo);
    change(ctx, host, Action::new("exec", host.name(), shown), |c| {
        c.exec(ctx, &command, options.stdin, options.timeout)
    })
}

/// An error of a file call served in-process for a local host, coded as its shell
/// counterpart would be.
fn local_error(
    ctx: &NativeCallContext,
    host: &HostHandle,
    what: &str,
    e: &std::io::Error,
) -> Box<EvalAltResult> {
    let code = if e.kind() == std::io::ErrorKind::PermissionDenied {
        codes::HOST_PERMISSION
    } else {
        codes::HOST_IO
    };
    call_error(ctx, code, format!("{}: {what}: {e}", host.name()))
}

/// The content of `path` on `host`, or `None` when it does not exist.
pub fn read_optional(
    ctx: &NativeCallContext,
    host: &HostHandle,
    path: &str,
) -> RhaiResult<Option<Vec<u8>>> {
    let target = host.target();
    // A local host without sudo: the file is ours to read, no shell needed.
    if target.local && !use_sudo(&target, false) {
        return match std::fs::read(path) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(local_error(ctx, host, &format!("cannot read {path}"), &e)),
        };
    }
    let cmd = shell::script(shell::READ, &[path], use_sudo(&target, false));
    let out = read_command(ctx, host, &cmd, None, None)?;
    match out.status {
        0 => Ok(Some(out.stdout)),
        shell::MISSING => Ok(None),
        _ => Err(command_failed(
            ctx,
            host.name(),
            &format!("cat {path}"),
            &out,
        )),
    }
}

/// Options of `write` / `upload` / `mkdir`: `#{mode: 0o640, owner: "vault", group: "vault",
/// backup: true}`.
#[derive(Default)]
pub struct FileOptions {
    pub mode: Option<u32>,
    pub owner: Option<String>,
    pub group: Option<String>,
    pub backup: bool,
    /// Without an owner given, the new file is the writer's, not the old one's owner's: a
    /// secret must not go to whoever owns (or planted) the file it replaces.
    pub writer_owns: bool,
    /// The code a failed write is reported with, as `cannot write PATH: REASON`, in place
    /// of the host command's classified error (`local::write`'s own code).
    pub failure_code: Option<&'static str>,
}

impl FileOptions {
    pub fn parse(ctx: &NativeCallContext, options: &Map) -> RhaiResult<FileOptions> {
        let mut out = FileOptions {
            backup: true,
            ..FileOptions::default()
        };
        for (key, value) in options {
            let text = || {
                value
                    .clone()
                    .into_string()
                    .map_err(|_| bad_option(ctx, key, "a string"))
            };
            match key.as_str() {
                "mode" => {
                    let mode = value
                        .as_int()
                        .map_err(|_| bad_option(ctx, "mode", "a number such as 0o640"))?;
                    if !(0..=0o7777).contains(&mode) {
                        return Err(bad_option(ctx, "mode", "between 0o000 and 0o7777"));
                    }
                    out.mode = Some(mode as u32);
                }
                "owner" => out.owner = Some(text()?),
                "group" => out.group = Some(text()?),
                "backup" => {
                    out.backup = value
                        .as_bool()
                        .map_err(|_| bad_option(ctx, "backup", "true or false"))?
                }
                other => {
                    return Err(call_error(
                        ctx,
                        codes::HOST_OPTION,
                        format!("unknown option `{other}` (known: mode, owner, group, backup)"),
                    ))
                }
            }
        }
        Ok(out)
    }

    fn describe(&self) -> String {
        let mut parts = Vec::new();
        if let Some(mode) = self.mode {
            parts.push(format!("mode {mode:04o}"));
        }
        match (&self.owner, &self.group) {
            (Some(o), Some(g)) => parts.push(format!("owner {o}:{g}")),
            (Some(o), None) => parts.push(format!("owner {o}")),
            (None, Some(g)) => parts.push(format!("group {g}")),
            (None, None) => {}
        }
        if parts.is_empty() {
            String::new()
        } else {
            format!(" ({})", parts.join(", "))
        }
    }
}

fn as_text(bytes: &[u8]) -> String {
    match std::str::from_utf8(bytes) {
        Ok(text) => text.to_string(),
        Err(_) => format!("<{} bytes of binary data>\n", bytes.len()),
    }
}

/// Writes `content` to `path` on `host` atomically, with a backup of the old file; a
/// change only when the content differs. `shown` is what the plan shows as the new content
/// (`<secret>` for a secret). Returns true when the file changed.
pub fn write_file(
    ctx: &NativeCallContext,
    host: &HostHandle,
    path: &str,
    content: &[u8],
    shown: Option<&str>,
    options: &FileOptions,
) -> RhaiResult<bool> {
    let old = read_optional(ctx, host, path)?;
    if old.as_deref() == Some(content) {
        clear_dead_writes(ctx, host, path)?;
        return Ok(false);
    }
    let new_shown = shown.map_or_else(|| as_text(content), str::to_string);
    let old_shown = match (&old, shown) {
        (Some(_), Some(_)) => "<secret>\n".to_string(),
        (Some(old), None) => as_text(old),
        (None, _) => String::new(),
    };
    // A private file (no access for group or others, now or after the write) shows only
    // which lines change; others have their secret attributes masked.
    let mut policy = host.diff_policy(path);
    let private_mode = |m: u32| m & 0o077 == 0;
    if options.mode.is_some_and(private_mode)
        || (old.is_some() && file_mode(ctx, host, path)?.is_some_and(private_mode))
    {
        policy.private = true;
    }
    let action = Action::new(
        "write",
        host.name(),
        format!("write {path}{}", options.describe()),
    )
    .with_file_diff(path, &old_shown, &new_shown, &policy);
    let target = host.target();
    let mode = options.mode.map(|m| format!("{m:o}")).unwrap_or_default();
    let stamp = stamp();
    let size = content.len().to_string();
    let cmd = shell::script(
        shell::WRITE,
        &[
            path,
            &mode,
            options
                .owner
                .as_deref()
                .unwrap_or(if options.writer_owns { "." } else { "" }),
            options.group.as_deref().unwrap_or(""),
            if options.backup && old.is_some() {
                "1"
            } else {
                "0"
            },
            &stamp,
            &size,
            &harun_runtime::private_fs::random_hex(),
        ],
        use_sudo(&target, false),
    );
    let what = format!("write {path}");
    let done = change(ctx, host, action, |c| {
        let out = c.exec(ctx, &cmd, Some(content.to_vec()), None)?;
        match (out.status, options.failure_code) {
            (0, _) => Ok(()),
            (_, Some(code)) => Err(call_error(
                ctx,
                code,
                format!("cannot write {path}: {}", tail(&out.stderr)),
            )),
            (_, None) => Err(command_failed(ctx, host.name(), &what, &out)),
        }
    })?;
    Ok(done.is_some())
}

/// What writes killed with their shell left beside `path` (`shell::DEAD_WRITES`), removed
/// as a change of its own. A write that changes the file removes them itself; this is for
/// the write that finds nothing to change, such as the next run's after a kill between a
/// write's rename and its last step. Looked for once per host and directory in a run.
fn clear_dead_writes(ctx: &NativeCallContext, host: &HostHandle, path: &str) -> RhaiResult<()> {
    static LOOKED: std::sync::LazyLock<parking_lot::Mutex<std::collections::BTreeSet<String>>> =
        std::sync::LazyLock::new(Default::default);
    let dir = std::path::Path::new(path)
        .parent()
        .map_or(String::new(), |d| d.display().to_string());
    if !LOOKED.lock().insert(format!("{}\0{dir}", host.name())) {
        return Ok(());
    }
    let target = host.target();
    let sudo = use_sudo(&target, false);
    let listed = read_command(
        ctx,
        host,
        &shell::script(shell::DEAD_WRITES, &[path], sudo),
        None,
        None,
    );
    let Some(found) = listed
        .ok()
        .filter(|out| out.status == 0 && !out.stdout.is_empty())
        .map(|out| {
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .collect::<Vec<_>>()
                .join(", ")
        })
    else {
        return Ok(());
    };
    let what = format!("remove what killed writes left: {found}");
    let action = Action::new("remove", host.name(), what.clone());
    let cmd = shell::script(shell::CLEAR_DEAD_WRITES, &[path], sudo);
    change_command(ctx, host, action, &cmd, None, &what).map(|_| ())
}

/// The permission bits of `path` on `host`, None when it cannot be read.
pub fn file_mode(
    ctx: &NativeCallContext,
    host: &HostHandle,
    path: &str,
) -> RhaiResult<Option<u32>> {
    let target = host.target();
    let cmd = shell::script(
        r#"stat -L -c %a -- "$1""#,
        &[path],
        use_sudo(&target, false),
    );
    let out = read_command(ctx, host, &cmd, None, None)?;
    Ok((out.status == 0)
        .then(|| u32::from_str_radix(String::from_utf8_lossy(&out.stdout).trim(), 8).ok())
        .flatten())
}

/// `20261124T175109`, UTC, for backup names that sort by time.
pub fn stamp() -> String {
    let now = humantime::format_rfc3339_seconds(SystemTime::now()).to_string();
    now.trim_end_matches('Z').replace(['-', ':'], "")
}

pub fn mkdir(
    ctx: &NativeCallContext,
    host: &HostHandle,
    path: &str,
    options: &FileOptions,
) -> RhaiResult<bool> {
    let target = host.target();
    let check = shell::script(r#"[ -d "$1" ]"#, &[path], use_sudo(&target, false));
    if read_command(ctx, host, &check, None, None)?.status == 0
        && options.owner.is_none()
        && options.group.is_none()
        && options.mode.is_none()
    {
        return Ok(false);
    }
    let mode = options.mode.map(|m| format!("{m:o}")).unwrap_or_default();
    let cmd = shell::script(
        shell::MKDIR,
        &[
            path,
            options.owner.as_deref().unwrap_or(""),
            options.group.as_deref().unwrap_or(""),
            &mode,
        ],
        use_sudo(&target, false),
    );
    let action = Action::new(
        "mkdir",
        host.name(),
        format!("mkdir -p {path}{}", options.describe()),
    );
    let done = change_command(ctx, host, action, &cmd, None, &format!("mkdir -p {path}"))?;
    Ok(done.is_some())
}

/// Gives `path` and everything under it to `owner` (and `group`), as `chown -R`; does
/// nothing (returns false) when all of it already has that owner and group.
pub fn chown(
    ctx: &NativeCallContext,
    host: &HostHandle,
    path: &str,
    owner: &str,
    group: &str,
) -> RhaiResult<bool> {
    let target = host.target();
    let sudo = use_sudo(&target, false);
    let probe = shell::script(shell::FOREIGN_OWNED, &[path, owner, group], sudo);
    let found = read_command(ctx, host, &probe, None, None)?;
    if found.status == 0 && found.stdout.iter().all(u8::is_ascii_whitespace) {
        return Ok(false);
    }
    let who = if group.is_empty() {
        owner.to_string()
    } else {
        format!("{owner}:{group}")
    };
    let cmd = shell::script(shell::CHOWN_R, &[path, owner, group], sudo);
    let action = Action::new("chown", host.name(), format!("chown -R {who} {path}"));
    let done = change_command(
        ctx,
        host,
        action,
        &cmd,
        None,
        &format!("chown -R {who} {path}"),
    )?;
    Ok(done.is_some())
}

/// Renames `path` to `path.harun-LABEL-STAMP` (`.N` added when two land in one second),
/// never over anything and never deleting: data a run must not use again (a failed
/// migration, a server's raft state left out of a recovery). Returns the new name, or ()
/// when `path` does not exist.
pub fn set_aside(
    ctx: &NativeCallContext,
    host: &HostHandle,
    path: &str,
    label: &str,
) -> RhaiResult<Dynamic> {
    if !exists(ctx, host, path)? {
        return Ok(Dynamic::UNIT);
    }
    let target = host.target();
    let base = format!("{}.harun-{label}-{}", path.trim_end_matches('/'), stamp());
    let cmd = shell::script(shell::SET_ASIDE, &[path, &base], use_sudo(&target, true));
    let action = Action::new("set-aside", host.name(), format!("mv {path} {base}"));
    // In a dry run the plan names the base name.
    let chosen = change_command(ctx, host, action, &cmd, None, &format!("mv {path} {base}"))?
        .map_or(base, |out| {
            String::from_utf8_lossy(&out.stdout).into_owned()
        });
    Ok(chosen.into())
}

/// True when `path` exists on `host`.
pub fn exists(ctx: &NativeCallContext, host: &HostHandle, path: &str) -> RhaiResult<bool> {
    let target = host.target();
    if target.local && !use_sudo(&target, false) {
        return Ok(std::path::Path::new(path).exists());
    }
    let cmd = shell::script(r#"[ -e "$1" ]"#, &[path], use_sudo(&target, false));
    Ok(read_command(ctx, host, &cmd, None, None)?.status == 0)
}

/// How `parallel` names an item in its errors: the host name, a map's `name`, or `#i`.
pub fn label(item: &Dynamic, index: usize) -> String {
    if let Some(host) = item.read_lock::<HostHandle>() {
        return host.name().to_string();
    }
    if let Some(map) = item.read_lock::<Map>() {
        if let Some(name) = map.get("name") {
            return name.to_string();
        }
    }
    format!("#{index}")
}

pub mod api;
