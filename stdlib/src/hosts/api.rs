//! The `ssh` module as scripts see it. Every function is also a method of `Host`:
//! `host("controller1").exec("uptime")` is `ssh::exec(ssh::host("controller1"), "uptime")`.

use harun_runtime::codes;
use rhai::plugin::*;

#[export_module]
pub mod ssh_api {
    use parking_lot::Mutex;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use harun_runtime::error::call_error;
    use harun_runtime::{Context, Secret};
    use rhai::{Array, FnPtr, Map};

    use super::super::{
        command_failed, exists as exists_impl, label, lookup, mkdir as mkdir_impl, perform_command,
        read_command, read_optional, result_map, run_command, write_file, FileOptions, HostHandle,
        RunOptions,
    };

    pub type Host = HostHandle;

    /// The topology host named `name`: `let c1 = host("controller1");`
    #[rhai_fn(global, name = "host", volatile, return_raw)]
    pub fn host(ctx: NativeCallContext, name: &str) -> Result<Host, Box<EvalAltResult>> {
        lookup(&ctx, name)
    }

    /// The host of a `topology.hosts` entry: `for h in topology.hosts { host(h) }`.
    #[rhai_fn(global, name = "host", volatile, return_raw)]
    pub fn host_of(ctx: NativeCallContext, entry: Map) -> Result<Host, Box<EvalAltResult>> {
        let name = entry
            .get("name")
            .and_then(|n| n.clone().into_string().ok())
            .ok_or_else(|| {
                call_error(
                    &ctx,
                    codes::HOST_UNKNOWN,
                    "this map has no `name` of a topology host",
                )
            })?;
        lookup(&ctx, &name)
    }

    /// Every host of the topology, in file order.
    #[rhai_fn(global, volatile, return_raw)]
    pub fn hosts(ctx: NativeCallContext) -> Result<Array, Box<EvalAltResult>> {
        let context = Context::of(&ctx);
        let Some(topology) = context.options().topology.clone() else {
            return Ok(Array::new());
        };
        Ok(topology
            .hosts
            .iter()
            .map(|h| Dynamic::from(HostHandle::new(h)))
            .collect())
    }

    /// The hosts with `role` in their `roles`, in file order: `hosts("controller")`,
    /// `hosts("worker")`. A host without `roles` counts as a controller.
    #[rhai_fn(global, name = "hosts", volatile, return_raw)]
    pub fn hosts_in_role(ctx: NativeCallContext, role: &str) -> Result<Array, Box<EvalAltResult>> {
        Ok(hosts(ctx)?
            .into_iter()
            .filter(|h| {
                h.clone()
                    .try_cast::<Host>()
                    .is_some_and(|h| h.has_role(role))
            })
            .collect())
    }

    /// The host's name in the topology.
    #[rhai_fn(global, get = "name", pure)]
    pub fn name(host: &mut Host) -> String {
        host.name().to_string()
    }

    /// The address harun connects to.
    #[rhai_fn(global, get = "address", pure)]
    pub fn address(host: &mut Host) -> String {
        host.address.clone()
    }

    /// All the host's settings as in `topology.hosts`, service blocks included:
    /// `h.settings.vault.config_file`.
    #[rhai_fn(global, get = "settings", pure)]
    pub fn settings(host: &mut Host) -> Dynamic {
        host.to_dynamic()
    }

    /// A host prints as `host(controller1)`.
    #[rhai_fn(global, name = "to_string", pure)]
    pub fn to_string(host: &mut Host) -> String {
        format!("host({})", host.name())
    }

    /// A host prints as `host(controller1)`.
    #[rhai_fn(global, name = "to_debug", pure)]
    pub fn to_debug(host: &mut Host) -> String {
        format!("host({})", host.name())
    }

    /// Runs `command` on the host and returns `#{host, command, status, ok, stdout, stderr}`;
    /// a non-zero status is returned, not thrown. A change: planned in a dry run (status 0,
    /// `dry_run: true`), audited otherwise.
    #[rhai_fn(global, name = "run", volatile, return_raw)]
    pub fn run(
        ctx: NativeCallContext,
        host: Host,
        command: &str,
    ) -> Result<Map, Box<EvalAltResult>> {
        run_with(ctx, host, command, Map::new())
    }

    /// `run` with options `#{sudo: true, timeout: 120, stdin: "text"}`.
    #[rhai_fn(global, name = "run", volatile, return_raw)]
    pub fn run_with(
        ctx: NativeCallContext,
        host: Host,
        command: &str,
        options: Map,
    ) -> Result<Map, Box<EvalAltResult>> {
        let options = RunOptions::parse(&ctx, &options)?;
        run_command(&ctx, &host, command, options)
    }

    /// Runs `command` and returns its stdout without the trailing newline; throws
    /// `harun::host::command_failed` (or a more precise code) naming the host, the command,
    /// the status and the end of stderr when it fails. A change, like `run`.
    #[rhai_fn(global, name = "exec", volatile, return_raw)]
    pub fn exec(
        ctx: NativeCallContext,
        host: Host,
        command: &str,
    ) -> Result<String, Box<EvalAltResult>> {
        exec_with(ctx, host, command, Map::new())
    }

    /// `exec` with options `#{sudo: true, timeout: 120, stdin: "text"}`.
    #[rhai_fn(global, name = "exec", volatile, return_raw)]
    pub fn exec_with(
        ctx: NativeCallContext,
        host: Host,
        command: &str,
        options: Map,
    ) -> Result<String, Box<EvalAltResult>> {
        let options = RunOptions::parse(&ctx, &options)?;
        match perform_command(&ctx, &host, command, options)? {
            Some(out) if out.status != 0 => Err(command_failed(&ctx, host.name(), command, &out)),
            Some(out) => Ok(String::from_utf8_lossy(&out.stdout)
                .trim_end_matches('\n')
                .to_string()),
            None => Ok(String::new()),
        }
    }

    /// `exec` under sudo (`sudo -n`: a password prompt is an error, never a hang).
    #[rhai_fn(global, name = "sudo", volatile, return_raw)]
    pub fn sudo(
        ctx: NativeCallContext,
        host: Host,
        command: &str,
    ) -> Result<String, Box<EvalAltResult>> {
        let mut options = Map::new();
        options.insert("sudo".into(), true.into());
        exec_with(ctx, host, command, options)
    }

    /// Runs a command that only reads (`systemctl is-active vault`, `cat /etc/hostname`):
    /// it runs in a dry run too, and is not audited. Returns the same map as `run`. Never
    /// pass it a command that changes anything.
    #[rhai_fn(global, name = "query", volatile, return_raw)]
    pub fn query(
        ctx: NativeCallContext,
        host: Host,
        command: &str,
    ) -> Result<Map, Box<EvalAltResult>> {
        query_with(ctx, host, command, Map::new())
    }

    /// `query` with options `#{sudo: true, timeout: 120, stdin: "text"}`.
    #[rhai_fn(global, name = "query", volatile, return_raw)]
    pub fn query_with(
        ctx: NativeCallContext,
        host: Host,
        command: &str,
        options: Map,
    ) -> Result<Map, Box<EvalAltResult>> {
        let options = RunOptions::parse(&ctx, &options)?;
        let target = host.target();
        let sudo = (options.sudo || target.sudo) && target.needs_sudo();
        let cmd = super::super::shell::command(command, sudo);
        let out = read_command(&ctx, &host, &cmd, options.stdin, options.timeout)?;
        Ok(result_map(&host, command, Some(&out)))
    }

    /// The content of the text file `path` on the host (with sudo when the host has
    /// `sudo = true`); `harun::host::not_found` when it does not exist.
    #[rhai_fn(global, name = "read", volatile, return_raw)]
    pub fn read(
        ctx: NativeCallContext,
        host: Host,
        path: &str,
    ) -> Result<String, Box<EvalAltResult>> {
        match read_optional(&ctx, &host, path)? {
            Some(bytes) => String::from_utf8(bytes).map_err(|_| {
                call_error(
                    &ctx,
                    codes::HOST_BINARY,
                    format!("{}: {path} is not text (use download)", host.name()),
                )
            }),
            None => Err(call_error(
                &ctx,
                codes::HOST_NOT_FOUND,
                format!("{}: {path} does not exist", host.name()),
            )),
        }
    }

    /// True when `path` exists on the host.
    #[rhai_fn(global, name = "exists", volatile, return_raw)]
    pub fn exists(
        ctx: NativeCallContext,
        host: Host,
        path: &str,
    ) -> Result<bool, Box<EvalAltResult>> {
        exists_impl(&ctx, &host, path)
    }

    /// Writes `content` to `path` on the host atomically (a temporary file renamed into
    /// place), keeping the old file's mode and owner and a timestamped backup
    /// `path.harun-YYYYmmddTHHMMSS.bak`. Identical content changes nothing. Returns true
    /// when the file changed. A change: a diff in the dry-run plan, audited otherwise.
    #[rhai_fn(global, name = "write", volatile, return_raw)]
    pub fn write(
        ctx: NativeCallContext,
        host: Host,
        path: &str,
        content: &str,
    ) -> Result<bool, Box<EvalAltResult>> {
        write_file(
            &ctx,
            &host,
            path,
            content.as_bytes(),
            None,
            &FileOptions {
                backup: true,
                ..FileOptions::default()
            },
        )
    }

    /// `write` with options `#{mode: 0o640, owner: "consul", group: "consul", backup: true}`.
    #[rhai_fn(global, name = "write", volatile, return_raw)]
    pub fn write_with(
        ctx: NativeCallContext,
        host: Host,
        path: &str,
        content: &str,
        options: Map,
    ) -> Result<bool, Box<EvalAltResult>> {
        let options = FileOptions::parse(&ctx, &options)?;
        write_file(&ctx, &host, path, content.as_bytes(), None, &options)
    }

    /// Writes a Secret to `path` (mode 0600 unless given); plans show `<secret>`.
    #[rhai_fn(global, name = "write", volatile, return_raw)]
    pub fn write_secret(
        ctx: NativeCallContext,
        host: Host,
        path: &str,
        content: Secret,
        options: Map,
    ) -> Result<bool, Box<EvalAltResult>> {
        let mut options = FileOptions::parse(&ctx, &options)?;
        options.mode.get_or_insert(0o600);
        options.writer_owns = true;
        write_file(
            &ctx,
            &host,
            path,
            content.expose().as_bytes(),
            Some("<secret>\n"),
            &options,
        )
    }

    /// Creates the directory `path` and its parents (`mkdir -p`). Returns true when it
    /// changed something.
    #[rhai_fn(global, name = "mkdir", volatile, return_raw)]
    pub fn mkdir(
        ctx: NativeCallContext,
        host: Host,
        path: &str,
    ) -> Result<bool, Box<EvalAltResult>> {
        mkdir_impl(&ctx, &host, path, &FileOptions::default())
    }

    /// `mkdir` with `#{owner: "vault", group: "vault", mode: 0o750}`: the story's trap, a
    /// raft directory created by hand as root that Vault cannot write.
    #[rhai_fn(global, name = "mkdir", volatile, return_raw)]
    pub fn mkdir_with(
        ctx: NativeCallContext,
        host: Host,
        path: &str,
        options: Map,
    ) -> Result<bool, Box<EvalAltResult>> {
        let options = FileOptions::parse(&ctx, &options)?;
        mkdir_impl(&ctx, &host, path, &options)
    }

    /// Gives `path` and everything under it to `#{owner: "vault", group: "vault"}`
    /// (`chown -R`), as a service that runs as its own user needs of its data directory
    /// (Vault's raft files after a `vault operator migrate` run as root). Returns true when
    /// it changed something; nothing when all of it already has that owner. A change.
    #[rhai_fn(global, name = "chown", volatile, return_raw)]
    pub fn chown(
        ctx: NativeCallContext,
        host: Host,
        path: &str,
        options: Map,
    ) -> Result<bool, Box<EvalAltResult>> {
        let options = FileOptions::parse(&ctx, &options)?;
        let Some(owner) = options.owner.as_deref() else {
            return Err(call_error(
                &ctx,
                codes::HOST_OPTION,
                "option `owner` must be given to chown: #{owner: \"vault\"}",
            ));
        };
        crate::hosts::chown(
            &ctx,
            &host,
            path,
            owner,
            options.group.as_deref().unwrap_or(""),
        )
    }

    /// Renames `path` to `path.harun-LABEL-STAMP` (never over anything, never deleting) and
    /// returns the new name; () when `path` does not exist. A change.
    #[rhai_fn(global, name = "set_aside", volatile, return_raw)]
    pub fn set_aside(
        ctx: NativeCallContext,
        host: Host,
        path: &str,
        label: &str,
    ) -> Result<Dynamic, Box<EvalAltResult>> {
        crate::hosts::set_aside(&ctx, &host, path, label)
    }

    /// Copies the local file `local` to `remote` on the host (atomically, with a backup).
    #[rhai_fn(global, name = "upload", volatile, return_raw)]
    pub fn upload(
        ctx: NativeCallContext,
        host: Host,
        local: &str,
        remote: &str,
    ) -> Result<bool, Box<EvalAltResult>> {
        upload_with(ctx, host, local, remote, Map::new())
    }

    /// `upload` with `#{mode, owner, group, backup}`.
    #[rhai_fn(global, name = "upload", volatile, return_raw)]
    pub fn upload_with(
        ctx: NativeCallContext,
        host: Host,
        local: &str,
        remote: &str,
        options: Map,
    ) -> Result<bool, Box<EvalAltResult>> {
        let mut options = FileOptions::parse(&ctx, &options)?;
        let read_error = |e: std::io::Error| {
            call_error(&ctx, codes::LOCAL_READ, format!("cannot read {local}: {e}"))
        };
        let bytes = std::fs::read(local).map_err(read_error)?;
        // A copy keeps its source's mode unless told otherwise: a 0600 file stays 0600.
        if options.mode.is_none() {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(local)
                .map_err(read_error)?
                .permissions()
                .mode();
            options.mode = Some(mode & 0o7777);
        }
        write_file(&ctx, &host, remote, &bytes, None, &options)
    }

    /// Copies `remote` from the host to the local file `local`, with the remote file's
    /// mode (a 0600 file stays 0600): written atomically, through no name another user
    /// could have prepared (a symlink at `local` is replaced, not followed).
    #[rhai_fn(global, name = "download", volatile, return_raw)]
    pub fn download(
        ctx: NativeCallContext,
        host: Host,
        remote: &str,
        local: &str,
    ) -> Result<(), Box<EvalAltResult>> {
        let bytes = read_optional(&ctx, &host, remote)?.ok_or_else(|| {
            call_error(
                &ctx,
                codes::HOST_NOT_FOUND,
                format!("{}: {remote} does not exist", host.name()),
            )
        })?;
        // Unknown (unreadable) means private.
        let mode = crate::hosts::file_mode(&ctx, &host, remote)?.unwrap_or(0o600);
        harun_runtime::private_fs::write_atomic(
            std::path::Path::new(local),
            &bytes,
            mode & 0o777,
            None,
        )
        .map_err(|e| {
            call_error(
                &ctx,
                codes::LOCAL_WRITE,
                format!("cannot write {local}: {e}"),
            )
        })
    }

    /// Calls `f(host)` for every host at once (up to 16 at a time) and returns the results
    /// in host order. When some fail, throws `harun::parallel::failed` naming every failed
    /// host and its error; `e.errors` maps host to message, `e.results` holds the others.
    #[rhai_fn(global, name = "parallel", volatile, return_raw)]
    pub fn parallel(
        ctx: NativeCallContext,
        hosts: Array,
        f: FnPtr,
    ) -> Result<Array, Box<EvalAltResult>> {
        parallel_limit(ctx, hosts, 16, f)
    }

    /// `parallel` with at most `limit` hosts at a time.
    #[rhai_fn(global, name = "parallel", volatile, return_raw)]
    pub fn parallel_limit(
        ctx: NativeCallContext,
        hosts: Array,
        limit: i64,
        f: FnPtr,
    ) -> Result<Array, Box<EvalAltResult>> {
        let n = hosts.len();
        // A dry run goes one host at a time, so the plan lists hosts in a stable order.
        let workers = if Context::of(&ctx).is_dry_run() {
            1
        } else {
            usize::try_from(limit)
                .unwrap_or(1)
                .clamp(1, 64)
                .min(n.max(1))
        };
        // Each thread calls `f` in a context of its own, made from this call's state;
        // rhai marks the API volatile, not deprecated.
        #[allow(deprecated)]
        let store = ctx.store_data();
        let engine = ctx.engine();
        let next = AtomicUsize::new(0);
        type Outcome = Option<Result<Dynamic, Box<EvalAltResult>>>;
        let results: Vec<Mutex<Outcome>> = (0..n).map(|_| Mutex::new(None)).collect();
        std::thread::scope(|scope| {
            for _ in 0..workers {
                scope.spawn(|| loop {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    if i >= n {
                        break;
                    }
                    #[allow(deprecated)]
                    let call_ctx = store.create_context(engine);
                    let outcome = f.call_within_context::<Dynamic>(&call_ctx, (hosts[i].clone(),));
                    *results[i].lock() = Some(outcome);
                });
            }
        });
        let mut values = Array::with_capacity(n);
        let mut errors = Map::new();
        let mut lines = Vec::new();
        for (i, slot) in results.into_iter().enumerate() {
            let outcome = slot.into_inner().unwrap_or(Ok(Dynamic::UNIT));
            match outcome {
                Ok(value) => values.push(value),
                Err(e) if !e.is_catchable() => return Err(e),
                Err(e) => {
                    let who = label(&hosts[i], i);
                    let (_, message) = harun_runtime::diagnostic::code_and_message_of(&e);
                    // Host errors already start with the host's name.
                    if message.starts_with(&format!("{who}: ")) {
                        lines.push(message.clone());
                    } else {
                        lines.push(format!("{who}: {message}"));
                    }
                    errors.insert(who.into(), message.into());
                    values.push(Dynamic::UNIT);
                }
            }
        }
        if errors.is_empty() {
            return Ok(values);
        }
        let mut value = Map::new();
        value.insert("code".into(), codes::PARALLEL_FAILED.into());
        value.insert(
            "message".into(),
            format!("{} of {n} failed: {}", lines.len(), lines.join("; ")).into(),
        );
        value.insert("errors".into(), errors.into());
        value.insert("results".into(), values.into());
        Err(Box::new(EvalAltResult::ErrorRuntime(
            value.into(),
            ctx.call_position(),
        )))
    }
}
