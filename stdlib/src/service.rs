//! `service`: start, stop, restart and query services through the host's service manager
//! (systemd, OpenRC, or a command template from the topology), waiting until the service
//! reaches the state asked for.

use std::time::{Duration, Instant};

use harun_runtime::codes;
use harun_runtime::diagnostic::interrupt_error;
use harun_runtime::error::call_error;
use harun_runtime::service::Service;
use harun_runtime::topology::ServiceManager;
use harun_runtime::{Action, Context};
use rhai::plugin::*;

use crate::hosts::{self, command_failed, read_command, shell, HostHandle};

type RhaiResult<T> = Result<T, Box<EvalAltResult>>;

const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

/// `consul` names the topology's consul service (its `service` setting, the unit name);
/// any other name is a unit name as is.
fn unit(host: &HostHandle, name: &str) -> String {
    match Service::from_name(name) {
        Some(service) => host.service(service).unit.clone(),
        None => name.to_string(),
    }
}

fn sudo(host: &HostHandle) -> bool {
    let target = host.target();
    target.sudo && target.needs_sudo()
}

fn action_command(host: &HostHandle, unit: &str, action: &str) -> String {
    let q = shell::quote(unit);
    match &host.service_manager {
        ServiceManager::Systemd => shell::command(&format!("systemctl {action} {q}"), sudo(host)),
        ServiceManager::OpenRc => shell::command(&format!("rc-service {q} {action}"), sudo(host)),
        ServiceManager::Template(t) => t.replace("{service}", &q).replace("{action}", action),
    }
}

/// The service's state: `active`, `inactive`, `failed`, `activating`, `deactivating`.
pub fn state(ctx: &NativeCallContext, host: &HostHandle, name: &str) -> RhaiResult<String> {
    let unit = unit(host, name);
    let out = read_command(
        ctx,
        host,
        &action_command(
            host,
            &unit,
            match &host.service_manager {
                ServiceManager::Systemd => "is-active",
                _ => "status",
            },
        ),
        None,
        None,
    )?;
    let state = match &host.service_manager {
        ServiceManager::Systemd => {
            let word = String::from_utf8_lossy(&out.stdout).trim().to_string();
            if word.is_empty() {
                // systemctl itself failed (not installed, no permission).
                return Err(command_failed(
                    ctx,
                    host.name(),
                    &format!("systemctl is-active {unit}"),
                    &out,
                ));
            }
            word
        }
        ServiceManager::OpenRc => match out.status {
            0 => "active".into(),
            3 => "inactive".into(),
            127 => {
                return Err(command_failed(
                    ctx,
                    host.name(),
                    &format!("rc-service {unit} status"),
                    &out,
                ))
            }
            _ => "failed".into(),
        },
        ServiceManager::Template(_) => match out.status {
            0 => "active".into(),
            127 => {
                return Err(command_failed(
                    ctx,
                    host.name(),
                    &format!("{unit} status"),
                    &out,
                ))
            }
            _ => "inactive".into(),
        },
    };
    Ok(state)
}

/// Polls until the service is in `wanted`, failing fast on `failed` when it wanted active.
pub fn wait_for(
    ctx: &NativeCallContext,
    host: &HostHandle,
    name: &str,
    wanted: &str,
    timeout: Duration,
) -> RhaiResult<()> {
    let started = Instant::now();
    let context = Context::of(ctx);
    let _shown = harun_runtime::progress::waiting(
        &format!("{name} on {} to be {wanted}", host.name()),
        Some(timeout),
    );
    loop {
        harun_runtime::progress::refresh();
        let now = state(ctx, host, name)?;
        if now == wanted {
            return Ok(());
        }
        let waited = started.elapsed();
        if (now == "failed" && wanted == "active" && waited > Duration::from_secs(2))
            || waited >= timeout
        {
            let hint = match &host.service_manager {
                ServiceManager::Systemd => format!("; see `journalctl -u {}`", unit(host, name)),
                _ => String::new(),
            };
            return Err(call_error(
                ctx,
                codes::SERVICE_STATE,
                format!(
                    "{}: {name} is {now}, not {wanted}, after {}{hint}",
                    host.name(),
                    humantime::format_duration(Duration::from_secs(waited.as_secs()))
                ),
            ));
        }
        let pause = Duration::from_millis(250).min(timeout.saturating_sub(waited));
        context
            .block_on(pause + Duration::from_secs(1), async move {
                tokio::time::sleep(pause).await
            })
            .map_err(|i| interrupt_error(i, "waiting for a service", ctx.call_position()))?;
    }
}

/// start / stop / restart: skipped when the service already is where `action` leads
/// (except restart), planned in a dry run, then waited for.
fn change(
    ctx: &NativeCallContext,
    host: &HostHandle,
    name: &str,
    action: &str,
    timeout: Duration,
) -> RhaiResult<bool> {
    let wanted = if action == "stop" {
        "inactive"
    } else {
        "active"
    };
    if action != "restart" && state(ctx, host, name)? == wanted {
        return Ok(false);
    }
    let unit = unit(host, name);
    let command = action_command(host, &unit, action);
    let action = Action::new("service", host.name(), format!("{action} {unit}"));
    let what = action.summary.clone();
    let done = hosts::change(ctx, host, action, |c| {
        c.run(ctx, &command, None, Some(timeout), &what)?;
        wait_for(ctx, host, name, wanted, timeout)
    })?;
    Ok(done.is_some())
}

/// The main process id of service `name`, 0 when it does not run: systemd's MainPID,
/// `pidof` under OpenRC, or the output of the template's action `main-pid`.
fn main_pid(ctx: &NativeCallContext, host: &HostHandle, name: &str) -> RhaiResult<i64> {
    let unit = unit(host, name);
    let q = shell::quote(&unit);
    let command = match &host.service_manager {
        ServiceManager::Systemd => shell::command(
            &format!("systemctl show --property MainPID --value {q}"),
            false,
        ),
        ServiceManager::OpenRc => shell::command(&format!("pidof -s {q}"), false),
        ServiceManager::Template(_) => action_command(host, &unit, "main-pid"),
    };
    let out = read_command(ctx, host, &command, None, Some(Duration::from_secs(10)))?;
    let text = String::from_utf8_lossy(&out.stdout);
    Ok(text.trim().parse().unwrap_or(0))
}

/// The host's boot id: a new one after each boot (Linux's
/// /proc/sys/kernel/random/boot_id, or the topology's `boot_id_file`).
fn boot_id(ctx: &NativeCallContext, host: &HostHandle) -> RhaiResult<String> {
    let file = &host.boot_id_file;
    let out = read_command(
        ctx,
        host,
        &shell::script(r#"cat -- "$1""#, &[file], false),
        None,
        Some(Duration::from_secs(10)),
    )?;
    let id = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if out.status != 0 || id.is_empty() {
        return Err(command_failed(
            ctx,
            host.name(),
            &format!("cat {file}"),
            &out,
        ));
    }
    Ok(id)
}

/// Reboots the host and waits until it is back: its boot id changed and it answers
/// commands again. The connection dropping under the reboot command is expected.
fn reboot(ctx: &NativeCallContext, host: &HostHandle, timeout: Duration) -> RhaiResult<bool> {
    let before = boot_id(ctx, host)?;
    let command = match &host.service_manager {
        ServiceManager::Systemd => shell::command("systemctl reboot", sudo(host)),
        ServiceManager::OpenRc => shell::command("reboot", sudo(host)),
        ServiceManager::Template(t) => t.replace("{service}", "host").replace("{action}", "reboot"),
    };
    let done = hosts::change(
        ctx,
        host,
        Action::new("service", host.name(), "reboot"),
        |c| {
            let started = Instant::now();
            match c.exec(ctx, &command, None, Some(timeout)) {
                // The connection dropping under the reboot is how a reboot looks from here
                // (ssh's 255); any other refusal (a sudo password, a manager that cannot
                // reboot) is the answer.
                Ok(out) if out.status != 0 && out.status != 255 => {
                    return Err(command_failed(ctx, host.name(), "reboot", &out));
                }
                Ok(_) => {}
                Err(e) => tracing::info!("{}: the reboot command: {e}", host.name()),
            }
            let mut last = String::from("its boot id has not changed");
            loop {
                match boot_id(ctx, host) {
                    Ok(now) if now != before => return Ok(()),
                    Ok(_) => {}
                    Err(e) => last = e.to_string(),
                }
                if started.elapsed() >= timeout {
                    return Err(call_error(
                        ctx,
                        codes::SERVICE_TIMEOUT,
                        format!(
                            "{}: not back from its reboot after {} ({last})",
                            host.name(),
                            humantime::format_duration(Duration::from_secs(timeout.as_secs()))
                        ),
                    ));
                }
                crate::wait::pause(ctx, 2.0, "a host to come back from its reboot")?;
            }
        },
    )?;
    Ok(done.is_some())
}

fn seconds(ctx: &NativeCallContext, s: f64) -> RhaiResult<Duration> {
    if s.is_finite() && s >= 0.0 {
        Ok(Duration::from_secs_f64(s))
    } else {
        Err(call_error(
            ctx,
            codes::SERVICE_TIMEOUT,
            format!("{s} is not a number of seconds"),
        ))
    }
}

#[export_module]
pub mod service_api {
    use super::*;

    /// The state of service `name` on the host: "active", "inactive", "failed",
    /// "activating", ... `name` may be a topology service (`"vault"` uses its `service`
    /// setting) or a unit name. A read: it runs in a dry run too.
    #[rhai_fn(volatile, return_raw)]
    pub fn status(
        ctx: NativeCallContext,
        host: HostHandle,
        name: &str,
    ) -> Result<String, Box<EvalAltResult>> {
        state(&ctx, &host, name)
    }

    /// True when service `name` is active on the host.
    #[rhai_fn(volatile, return_raw)]
    pub fn is_active(
        ctx: NativeCallContext,
        host: HostHandle,
        name: &str,
    ) -> Result<bool, Box<EvalAltResult>> {
        Ok(state(&ctx, &host, name)? == "active")
    }

    /// Starts service `name` and waits until it is active (60 s at most); nothing to do
    /// when it already runs. Returns true when it started it.
    #[rhai_fn(name = "start", volatile, return_raw)]
    pub fn start(
        ctx: NativeCallContext,
        host: HostHandle,
        name: &str,
    ) -> Result<bool, Box<EvalAltResult>> {
        change(&ctx, &host, name, "start", DEFAULT_TIMEOUT)
    }

    /// `start`, waiting at most `timeout_seconds`.
    #[rhai_fn(name = "start", volatile, return_raw)]
    pub fn start_within(
        ctx: NativeCallContext,
        host: HostHandle,
        name: &str,
        timeout_seconds: f64,
    ) -> Result<bool, Box<EvalAltResult>> {
        let timeout = seconds(&ctx, timeout_seconds)?;
        change(&ctx, &host, name, "start", timeout)
    }

    /// Stops service `name` and waits until it is inactive (60 s at most); nothing to do
    /// when it is not running. Returns true when it stopped it.
    #[rhai_fn(name = "stop", volatile, return_raw)]
    pub fn stop(
        ctx: NativeCallContext,
        host: HostHandle,
        name: &str,
    ) -> Result<bool, Box<EvalAltResult>> {
        change(&ctx, &host, name, "stop", DEFAULT_TIMEOUT)
    }

    /// `stop`, waiting at most `timeout_seconds`.
    #[rhai_fn(name = "stop", volatile, return_raw)]
    pub fn stop_within(
        ctx: NativeCallContext,
        host: HostHandle,
        name: &str,
        timeout_seconds: f64,
    ) -> Result<bool, Box<EvalAltResult>> {
        let timeout = seconds(&ctx, timeout_seconds)?;
        change(&ctx, &host, name, "stop", timeout)
    }

    /// Restarts service `name` and waits until it is active again (60 s at most).
    #[rhai_fn(name = "restart", volatile, return_raw)]
    pub fn restart(
        ctx: NativeCallContext,
        host: HostHandle,
        name: &str,
    ) -> Result<bool, Box<EvalAltResult>> {
        change(&ctx, &host, name, "restart", DEFAULT_TIMEOUT)
    }

    /// `restart`, waiting at most `timeout_seconds`.
    #[rhai_fn(name = "restart", volatile, return_raw)]
    pub fn restart_within(
        ctx: NativeCallContext,
        host: HostHandle,
        name: &str,
        timeout_seconds: f64,
    ) -> Result<bool, Box<EvalAltResult>> {
        let timeout = seconds(&ctx, timeout_seconds)?;
        change(&ctx, &host, name, "restart", timeout)
    }

    /// The main process id of service `name` (0 when it does not run), for `ps` and the
    /// like: systemd's MainPID, `pidof` under OpenRC, or the output of the service manager
    /// template's action `main-pid`. A read.
    #[rhai_fn(volatile, return_raw)]
    pub fn main_pid(
        ctx: NativeCallContext,
        host: HostHandle,
        name: &str,
    ) -> Result<i64, Box<EvalAltResult>> {
        super::main_pid(&ctx, &host, name)
    }

    /// Reboots the host (`systemctl reboot`, OpenRC's `reboot`, or the service manager
    /// template with `{service}` = host and `{action}` = reboot) and waits, at most
    /// `timeout_seconds`, until it is back: a new boot id (the topology's `boot_id_file`,
    /// default Linux's) and commands answered. Its services start as the host starts
    /// them; wait for each with `service::wait`. A change.
    #[rhai_fn(name = "reboot", volatile, return_raw)]
    pub fn reboot_within(
        ctx: NativeCallContext,
        host: HostHandle,
        timeout_seconds: f64,
    ) -> Result<bool, Box<EvalAltResult>> {
        let timeout = seconds(&ctx, timeout_seconds)?;
        reboot(&ctx, &host, timeout)
    }

    /// Waits until service `name` is in `state` ("active", "inactive"), at most
    /// `timeout_seconds`; throws `harun::service::state` with the state it is in.
    #[rhai_fn(name = "wait", volatile, return_raw)]
    pub fn wait(
        ctx: NativeCallContext,
        host: HostHandle,
        name: &str,
        wanted: &str,
        timeout_seconds: f64,
    ) -> Result<(), Box<EvalAltResult>> {
        let timeout = seconds(&ctx, timeout_seconds)?;
        wait_for(&ctx, &host, name, wanted, timeout)
    }
}
