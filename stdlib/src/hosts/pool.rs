//! The run's connections: one per host for the whole run, shared by every call and
//! thread, and within each the host's session slots (sshd's MaxSessions) and the
//! resident shells between commands. `Connection::exec` is the one way a command reaches
//! a host, whichever the transport.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use parking_lot::Mutex;
use std::time::Duration;

use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};

use super::error::{Failure, HostError};
use super::resident::ResidentShell;
use super::target::{ExecOutput, Target};
use super::{local, ssh};

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
        let mut slots = self.slots.lock();
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
                .control_dir
                .get_or_init(ssh::control_dir)
                .clone()
                .map_err(|e| HostError::new(Failure::ControlDir, &target.name, e))?;
            tracing::debug!(host = %target.name, address = %target.address, "connecting over ssh");
            let _shown = harun_runtime::progress::waiting(
                &format!("an ssh connection to {}", target.name),
                Some(target.connect_timeout),
            );
            let session = ssh::connect_ssh(target, &dir).await?;
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

    /// Closes every master and removes the control directory (the end of the run).
    pub async fn close(&self) {
        let slots: Vec<Arc<Slot>> = self.slots.lock().drain().map(|(_, s)| s).collect();
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

/// An open way to run commands on one host, and the host's session slots.
pub struct Connection {
    kind: Kind,
    /// Commands in flight on this machine, or SSH sessions open on the host: sshd refuses
    /// more than its MaxSessions over one connection.
    sessions: Arc<Semaphore>,
    /// SSH: resident shells between commands. Each holds one of `sessions`.
    idle: Mutex<Vec<ResidentShell>>,
    shell_returned: Notify,
}

enum Kind {
    Local,
    Ssh(Arc<openssh::Session>),
}

impl Connection {
    pub fn local(max_sessions: usize) -> Connection {
        Connection::new(Kind::Local, max_sessions)
    }

    pub fn ssh(session: openssh::Session, max_sessions: usize) -> Connection {
        Connection::new(Kind::Ssh(Arc::new(session)), max_sessions)
    }

    fn new(kind: Kind, max_sessions: usize) -> Connection {
        Connection {
            kind,
            sessions: Arc::new(Semaphore::new(max_sessions)),
            idle: Mutex::new(Vec::new()),
            shell_returned: Notify::new(),
        }
    }

    /// Runs `command` through the host's `sh` (not the login shell), feeding `stdin` when
    /// given. Over SSH a command without input goes to a resident shell; one with input
    /// gets a session of its own, whose end of input is the end of the data.
    pub async fn exec(
        &self,
        target: &Target,
        command: &str,
        stdin: Option<Vec<u8>>,
    ) -> Result<ExecOutput, HostError> {
        if command.contains('\0') {
            return Err(HostError::new(
                Failure::Command,
                &target.name,
                "the command contains a NUL byte, which no shell can run",
            ));
        }
        match &self.kind {
            Kind::Local => {
                let _slot = self.sessions.acquire().await.map_err(|_| closed(target))?;
                local::exec_local(target, command, stdin).await
            }
            Kind::Ssh(session) if stdin.is_none() => {
                let mut shell = self.shell(target, session).await?;
                let out = shell.run(command).await.map_err(|e| {
                    HostError::io(&target.name, "the session ended before the command did", &e)
                })?;
                if shell.is_clean() {
                    self.lock_idle().push(shell);
                    self.shell_returned.notify_waiters();
                } else {
                    // Something the command left running still writes to the session;
                    // its output must not reach the next command.
                    tracing::debug!(host = %target.name, "retiring a shell with stray output");
                    drop(shell);
                }
                Ok(out)
            }
            Kind::Ssh(session) => {
                let _slot = self.free_session(target).await?;
                ssh::exec_ssh(target, session.clone(), command, stdin).await
            }
        }
    }

    /// An idle resident shell, or a new one once a session is free.
    async fn shell(
        &self,
        target: &Target,
        session: &Arc<openssh::Session>,
    ) -> Result<ResidentShell, HostError> {
        loop {
            let returned = self.shell_returned.notified();
            tokio::pin!(returned);
            returned.as_mut().enable();
            let idle = self.lock_idle().pop();
            if let Some(mut shell) = idle {
                if shell.is_still_clean() {
                    return Ok(shell);
                }
                tracing::debug!(host = %target.name, "retiring a shell with stray output");
                continue;
            }
            tokio::select! {
                slot = self.sessions.clone().acquire_owned() => {
                    let slot = slot.map_err(|_| closed(target))?;
                    return ResidentShell::open(target, session.clone(), slot).await;
                }
                _ = returned => {}
            }
        }
    }

    /// A session slot for a command of its own, closing an idle shell when that frees one.
    async fn free_session(&self, target: &Target) -> Result<OwnedSemaphorePermit, HostError> {
        loop {
            let returned = self.shell_returned.notified();
            tokio::pin!(returned);
            returned.as_mut().enable();
            if let Ok(slot) = self.sessions.clone().try_acquire_owned() {
                return Ok(slot);
            }
            let idle = self.lock_idle().pop();
            if let Some(shell) = idle {
                shell.close().await;
                continue;
            }
            tokio::select! {
                slot = self.sessions.clone().acquire_owned() => {
                    return slot.map_err(|_| closed(target));
                }
                _ = returned => {}
            }
        }
    }

    fn lock_idle(&self) -> parking_lot::MutexGuard<'_, Vec<ResidentShell>> {
        self.idle.lock()
    }

    /// Closes the SSH master (the end of the run); its sessions, resident shells included,
    /// end with it.
    pub async fn close(self) {
        self.lock_idle().clear();
        if let Kind::Ssh(session) = self.kind {
            if let Ok(session) = Arc::try_unwrap(session) {
                let _ = session.close().await;
            }
        }
    }
}

fn closed(target: &Target) -> HostError {
    HostError::new(Failure::Closed, &target.name, "connection pool closed")
}
