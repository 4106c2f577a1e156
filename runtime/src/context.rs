//! The state of one harun run, shared by the engine and every built-in.
//!
//! Built-ins reach it through the engine's tag: `Context::of(&ctx)` in any native function.

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;
use std::sync::Arc;

use parking_lot::Mutex;
use std::time::Duration;

use rhai::NativeCallContext;

use crate::bridge::{Bridge, Interrupt};
use crate::output::{Output, OutputMode};
use crate::plan::{Action, AuditLog, Plan};
use crate::secret::{Redactor, Secret};
use crate::status::{Report, Status};
use crate::topology::Topology;

/// What the command line decided for this run.
#[derive(Clone, Debug)]
pub struct Options {
    /// Record mutating actions into the plan instead of performing them.
    pub dry_run: bool,
    /// Answer every `confirm()` with yes.
    pub yes: bool,
    /// The default timeout of one native call (an HTTP request, a command).
    pub call_timeout: Duration,
    /// The script's name, for the audit log.
    pub script: String,
    /// Where `import` looks for modules: the script's directory.
    pub base_dir: PathBuf,
    /// Hold `print` output until the end of the run, or stream it.
    pub output: OutputMode,
    /// The `--set KEY=VALUE` parameters (the `params` global).
    pub params: rhai::Map,
    /// The arguments after `--` (the `args` global).
    pub args: Vec<String>,
    /// The topology file, when there is one (the `topology` global).
    pub topology: Option<Arc<Topology>>,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            dry_run: false,
            yes: false,
            call_timeout: Duration::from_secs(30),
            script: "-".to_string(),
            base_dir: PathBuf::from("."),
            output: OutputMode::Stream,
            params: rhai::Map::new(),
            args: Vec::new(),
            topology: None,
        }
    }
}

struct Inner {
    options: Options,
    bridge: Bridge,
    redactor: Redactor,
    output: Output,
    report: Mutex<Report>,
    plan: Plan,
    audit: Option<AuditLog>,
    exit: Mutex<Option<i32>>,
    extensions: Mutex<HashMap<TypeId, Arc<dyn Any + Send + Sync>>>,
    finalizers: Mutex<Vec<Box<dyn FnOnce() + Send>>>,
    guards: Mutex<Vec<(u64, Guard)>>,
}

/// A condition every change of the run depends on (the Consul lock it holds): checked
/// before each change; `Err` stops the run there.
pub type Guard = Arc<dyn Fn() -> Result<(), Refusal> + Send + Sync>;

/// Why a change was not made: a guard of the run no longer holds.
#[derive(Clone, Debug)]
pub struct Refusal {
    pub code: &'static str,
    pub message: String,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl From<Refusal> for Box<rhai::EvalAltResult> {
    fn from(r: Refusal) -> Self {
        crate::error::script_error(r.code, r.message, rhai::Position::NONE)
    }
}

impl From<Refusal> for std::io::Error {
    fn from(r: Refusal) -> Self {
        std::io::Error::other(r.message)
    }
}

impl From<Refusal> for String {
    fn from(r: Refusal) -> Self {
        r.message
    }
}

/// One run's shared state. Cheap to clone.
#[derive(Clone)]
pub struct Context(Arc<Inner>);

impl Context {
    pub fn new(
        options: Options,
        bridge: Bridge,
        redactor: Redactor,
        audit: Option<AuditLog>,
    ) -> Context {
        let output = Output::new(options.output, redactor.clone());
        Context(Arc::new(Inner {
            options,
            bridge,
            redactor,
            output,
            report: Mutex::new(Report::default()),
            plan: Plan::default(),
            audit,
            exit: Mutex::new(None),
            extensions: Mutex::new(HashMap::new()),
            finalizers: Mutex::new(Vec::new()),
            guards: Mutex::new(Vec::new()),
        }))
    }

    /// The run's context, from inside a native function.
    ///
    /// # Panics
    /// When the engine was not built by [`crate::EngineBuilder`], which always sets it.
    pub fn of(ctx: &NativeCallContext) -> Context {
        ctx.tag()
            .and_then(|tag| tag.clone().try_cast::<Context>())
            .expect("the engine's tag is the harun Context (set by EngineBuilder)")
    }

    pub fn options(&self) -> &Options {
        &self.0.options
    }

    pub fn is_dry_run(&self) -> bool {
        self.0.options.dry_run
    }

    pub fn bridge(&self) -> &Bridge {
        &self.0.bridge
    }

    pub fn redactor(&self) -> &Redactor {
        &self.0.redactor
    }

    pub fn output(&self) -> &Output {
        &self.0.output
    }

    pub fn plan(&self) -> &Plan {
        &self.0.plan
    }

    /// A new secret, registered for redaction.
    pub fn secret(&self, value: impl Into<String>) -> Secret {
        Secret::new(value, &self.0.redactor)
    }

    pub fn report(&self, status: Status, message: impl Into<String>) {
        let message = message.into();
        let message = self.0.redactor.redact(&message).into_owned();
        self.lock_report().add(status, message);
    }

    pub fn report_snapshot(&self) -> Report {
        self.lock_report().clone()
    }

    fn lock_report(&self) -> parking_lot::MutexGuard<'_, Report> {
        self.0.report.lock()
    }

    /// Records `exit(n)`.
    pub fn request_exit(&self, code: i32) {
        *self.0.exit.lock() = Some(code);
    }

    /// The code given to `exit(n)`, if the script called it.
    pub fn exit_requested(&self) -> Option<i32> {
        *self.0.exit.lock()
    }

    /// Waits on a future for at most `timeout`, or until the run is cancelled.
    pub fn block_on<F: std::future::Future>(
        &self,
        timeout: Duration,
        future: F,
    ) -> Result<F::Output, Interrupt> {
        self.0.bridge.block_on(timeout, future)
    }

    /// The one path for every mutating action. In a dry run the action joins the plan and
    /// `Ok(None)` comes back; otherwise `run` performs it and the outcome is audited.
    pub fn perform<T, E: std::fmt::Display + From<Refusal>>(
        &self,
        action: Action,
        run: impl FnOnce() -> Result<T, E>,
    ) -> Result<Option<T>, E> {
        if self.is_dry_run() {
            tracing::info!(kind = %action.kind, target = %action.target, "dry run: would {}", action.summary);
            self.0.plan.record(&action, &self.0.redactor);
            return Ok(None);
        }
        self.check_guards()?;
        tracing::info!(kind = %action.kind, target = %action.target, "{}", action.summary);
        let outcome = run();
        if outcome.is_ok() {
            crate::progress::changed(&action.target, &self.0.redactor.redact(&action.summary));
        }
        if let Some(audit) = &self.0.audit {
            let error = outcome.as_ref().err().map(|e| e.to_string());
            if let Err(e) = audit.append(&action, error.as_deref(), &self.0.redactor) {
                tracing::error!(
                    "could not append to the audit log {}: {e}",
                    audit.path().display()
                );
            }
        }
        outcome.map(Some)
    }

    /// Adds a guard that every later change must pass; returns its id for `remove_guard`.
    pub fn add_guard(&self, guard: Guard) -> u64 {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        let id = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.0.guards.lock().push((id, guard));
        id
    }

    pub fn remove_guard(&self, id: u64) {
        self.0.guards.lock().retain(|(g, _)| *g != id);
    }

    /// Whether every guard still holds, and the audit log (when there is one) can take the
    /// change.
    pub fn check_guards(&self) -> Result<(), Refusal> {
        let guards: Vec<Guard> = self
            .0
            .guards
            .lock()
            .iter()
            .map(|(_, g)| g.clone())
            .collect();
        guards.iter().try_for_each(|g| g())?;
        // A change that cannot be audited is not made.
        if let Some(audit) = &self.0.audit {
            audit.ready().map_err(|e| Refusal {
                code: crate::codes::AUDIT_LOG,
                message: format!(
                    "cannot open the audit log {}: {e}; nothing was changed",
                    audit.path().display()
                ),
            })?;
        }
        Ok(())
    }

    /// Asks before a destructive step. `--yes` answers yes; a dry run records the question
    /// and goes on; a terminal asks; without one the step is refused.
    pub fn confirm(&self, question: &str) -> Result<bool, String> {
        let question = self.0.redactor.redact(question).into_owned();
        if self.0.options.yes {
            tracing::info!("confirmed by --yes: {question}");
            return Ok(true);
        }
        if self.is_dry_run() {
            self.0.plan.record(
                &Action::new("confirm", "local", format!("ask: {question}")),
                &self.0.redactor,
            );
            return Ok(true);
        }
        if !(std::io::stdin().is_terminal() && std::io::stderr().is_terminal()) {
            return Err(format!(
                "refused without confirmation: {question} (no terminal to ask on; pass --yes to confirm)"
            ));
        }
        let mut stderr = std::io::stderr();
        let _ = write!(stderr, "{question} [y/N] ");
        let _ = stderr.flush();
        let mut answer = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut answer)
            .map_err(|e| format!("could not read the answer: {e}"))?;
        Ok(matches!(answer.trim(), "y" | "Y" | "yes" | "YES" | "Yes"))
    }

    /// Per-run state of a module (an SSH connection pool, an HTTP client), created on
    /// first use and shared by every call of the run.
    pub fn extension<T: Default + Send + Sync + 'static>(&self) -> Arc<T> {
        let mut map = self.0.extensions.lock();
        let entry = map
            .entry(TypeId::of::<T>())
            .or_insert_with(|| Arc::new(T::default()) as Arc<dyn Any + Send + Sync>)
            .clone();
        entry
            .downcast::<T>()
            .expect("extensions are keyed by their own type")
    }

    /// Registers clean-up for the end of the run (closing SSH masters).
    pub fn on_finish(&self, f: impl FnOnce() + Send + 'static) {
        self.0.finalizers.lock().push(Box::new(f));
    }

    /// Runs the clean-up registered with `on_finish`, once, newest first.
    pub fn finish(&self) {
        let finalizers = std::mem::take(&mut *self.0.finalizers.lock());
        for f in finalizers.into_iter().rev() {
            f();
        }
    }

    /// Cancels the run (used by the script deadline and the signal handlers).
    pub fn cancel(&self, reason: Interrupt) {
        self.0.bridge.cancel(reason);
    }
}
