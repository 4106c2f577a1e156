//! The async bridge: one tokio runtime per process, and the one way native functions wait
//! on I/O.
//!
//! Rhai evaluates on the main thread and cannot be interrupted inside a native call
//! (`on_progress` runs only between operations). So every blocking call goes through
//! [`Bridge::block_on`], which races the future against its own timeout and against the
//! run's cancellation token. Ctrl-C, SIGTERM and the `--timeout` deadline all cancel that
//! token, so a call blocked on a dead host gives up within moments, not minutes.

use std::future::Future;
use std::sync::Arc;

use parking_lot::Mutex;
use std::time::Duration;

use crate::codes;
use tokio::runtime::Runtime;
use tokio_util::sync::CancellationToken;

/// Why a blocked call or a script run stopped early.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Interrupt {
    /// The call's own timeout passed.
    Timeout(Duration),
    /// The run's `--timeout` deadline passed.
    Deadline(Duration),
    /// Ctrl-C (SIGINT).
    Interrupted,
    /// SIGTERM, as sent by systemd or a supervisor stopping the run.
    Terminated,
}

impl Interrupt {
    pub fn code(self) -> &'static str {
        match self {
            Interrupt::Timeout(_) => codes::TIMEOUT,
            Interrupt::Deadline(_) => codes::DEADLINE,
            Interrupt::Interrupted => codes::INTERRUPTED,
            Interrupt::Terminated => codes::TERMINATED,
        }
    }

    pub fn message(self) -> String {
        match self {
            Interrupt::Timeout(d) => format!("timed out after {}", humantime::format_duration(d)),
            Interrupt::Deadline(d) => format!(
                "the run's --timeout of {} passed",
                humantime::format_duration(d)
            ),
            Interrupt::Interrupted => "interrupted (Ctrl-C)".to_string(),
            Interrupt::Terminated => "terminated (SIGTERM)".to_string(),
        }
    }
}

struct Cancel {
    token: CancellationToken,
    reason: Option<Interrupt>,
}

/// The process's tokio runtime plus the cancellation state of the current run.
pub struct Bridge {
    runtime: Runtime,
    cancel: Arc<Mutex<Cancel>>,
}

impl Bridge {
    pub fn new() -> std::io::Result<Bridge> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("harun-io")
            .enable_all()
            .build()?;
        Ok(Bridge {
            runtime,
            cancel: Arc::new(Mutex::new(Cancel {
                token: CancellationToken::new(),
                reason: None,
            })),
        })
    }

    pub fn runtime(&self) -> &Runtime {
        &self.runtime
    }

    fn lock(&self) -> parking_lot::MutexGuard<'_, Cancel> {
        self.cancel.lock()
    }

    /// Why the current run was cancelled, if it was.
    pub fn cancelled(&self) -> Option<Interrupt> {
        let cancel = self.lock();
        if cancel.token.is_cancelled() {
            cancel.reason
        } else {
            None
        }
    }

    /// Cancels the current run: blocked calls return, the script stops at its next step.
    pub fn cancel(&self, reason: Interrupt) {
        cancel_with(&self.cancel, reason);
    }

    /// A fresh token for the next evaluation (the REPL calls this after a Ctrl-C).
    pub fn reset(&self) {
        let mut cancel = self.lock();
        if cancel.token.is_cancelled() {
            cancel.token = CancellationToken::new();
            cancel.reason = None;
        }
    }

    /// Cancels the run when `after` has passed (the `--timeout` flag).
    pub fn set_deadline(&self, after: Duration) {
        let cancel = self.cancel.clone();
        let token = self.lock().token.clone();
        self.runtime.spawn(async move {
            tokio::select! {
                _ = tokio::time::sleep(after) => cancel_with(&cancel, Interrupt::Deadline(after)),
                _ = token.cancelled() => {}
            }
        });
    }

    /// Ctrl-C and SIGTERM cancel the current run instead of killing the process, so that
    /// nothing is left half-done (files are written by rename, and the script's next step
    /// sees the cancellation). A second signal within the same run exits at once.
    ///
    /// The handlers are in place when this returns (registered here, not in the spawned
    /// task, which a busy machine may start late): a SIGTERM sent as soon as the script
    /// has begun must not find the default action, which kills the process mid-change.
    pub fn install_signal_handlers(&self) {
        use tokio::signal::unix::{signal, SignalKind};
        let cancel = self.cancel.clone();
        let _runtime = self.runtime.enter();
        let (Ok(mut int), Ok(mut term)) = (
            signal(SignalKind::interrupt()),
            signal(SignalKind::terminate()),
        ) else {
            tracing::warn!("could not install signal handlers");
            return;
        };
        self.runtime.spawn(async move {
            loop {
                let reason = tokio::select! {
                    _ = int.recv() => Interrupt::Interrupted,
                    _ = term.recv() => Interrupt::Terminated,
                };
                let already = {
                    let c = cancel.lock();
                    c.token.is_cancelled()
                };
                if already {
                    eprintln!("harun: second signal, exiting now");
                    std::process::exit(3);
                }
                cancel_with(&cancel, reason);
            }
        });
    }

    /// Runs a future to completion on the runtime, giving up after `timeout` or when the
    /// run is cancelled. Call it from synchronous code only (native functions), never from
    /// inside the runtime, and pass an `async` block: a tokio future built outside the
    /// runtime (a bare `tokio::time::sleep(..)`) panics for want of a reactor.
    pub fn block_on<F, T>(&self, timeout: Duration, future: F) -> Result<T, Interrupt>
    where
        F: Future<Output = T>,
    {
        let token = self.lock().token.clone();
        let cancel = self.cancel.clone();
        self.runtime.block_on(async move {
            tokio::select! {
                biased;
                _ = token.cancelled() => {
                    let reason = cancel.lock().reason;
                    Err(reason.unwrap_or(Interrupt::Interrupted))
                }
                out = future => Ok(out),
                _ = tokio::time::sleep(timeout) => Err(Interrupt::Timeout(timeout)),
            }
        })
    }
}

fn cancel_with(cancel: &Mutex<Cancel>, reason: Interrupt) {
    let mut c = cancel.lock();
    if !c.token.is_cancelled() {
        c.reason = Some(reason);
        c.token.cancel();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_on_times_out() {
        let bridge = Bridge::new().unwrap();
        let out = bridge.block_on(Duration::from_millis(50), async {
            tokio::time::sleep(Duration::from_secs(10)).await
        });
        assert!(matches!(out, Err(Interrupt::Timeout(_))));
    }

    #[test]
    fn cancel_wakes_a_blocked_call_and_reset_clears_it() {
        let bridge = Arc::new(Bridge::new().unwrap());
        let b = bridge.clone();
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            b.cancel(Interrupt::Terminated);
        });
        let out = bridge.block_on(Duration::from_secs(10), async {
            tokio::time::sleep(Duration::from_secs(10)).await
        });
        t.join().unwrap();
        assert_eq!(out, Err(Interrupt::Terminated));
        bridge.reset();
        assert_eq!(bridge.cancelled(), None);
        assert_eq!(bridge.block_on(Duration::from_secs(1), async { 7 }), Ok(7));
    }
}
