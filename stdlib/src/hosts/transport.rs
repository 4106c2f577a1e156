//! How a command reaches a host: over SSH (one multiplexed master per host) or on this
//! machine. Everything else a host does (files, services) is a shell command run through
//! [`Connection::exec`], so the two transports behave the same.

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use harun_runtime::codes;
use harun_runtime::topology::Host;
use tokio::io::AsyncWriteExt;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};

use super::error::HostError;
use super::resident::{self, ResidentShell};
use super::shell::quote;

/// What a finished command left behind.
#[derive(Clone, Debug)]
pub struct ExecOutput {
    pub status: i32,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

/// How to reach one host, from its topology settings.
#[derive(Clone, Debug)]
pub struct Target {
    pub name: String,
    pub address: String,
    pub user: Option<String>,
    pub port: u16,
    pub key: Option<PathBuf>,
    pub ssh_config: Option<PathBuf>,
    pub known_hosts_file: Option<PathBuf>,
    pub accept_new: bool,
    pub local: bool,
    pub connect_timeout: Duration,
    pub command_timeout: Duration,
    pub max_sessions: usize,
    pub sudo: bool,
}

impl Target {
    pub fn from_host(host: &Host) -> Target {
        Target {
            name: host.name.clone(),
            address: host.address().to_string(),
            user: host.get("ssh_user").map(str::to_string),
            port: host.ssh_port(),
            key: host.get("ssh_key").map(PathBuf::from),
            ssh_config: host.get("ssh_config").map(PathBuf::from),
            known_hosts_file: host.get("known_hosts_file").map(PathBuf::from),
            accept_new: host.get("known_hosts") == Some("accept-new"),
            local: host.get("transport") == Some("local"),
            connect_timeout: host.connect_timeout(),
            command_timeout: host.command_timeout(),
            max_sessions: host.max_sessions(),
            sudo: host.get_bool("sudo").unwrap_or(false),
        }
    }

    /// Whether privileged commands need `sudo` in front: not when we already are root.
    pub fn needs_sudo(&self) -> bool {
        if self.local {
            // SAFETY: geteuid has no preconditions and cannot fail.
            unsafe { libc::geteuid() != 0 }
        } else {
            self.user.as_deref() != Some("root")
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
                codes::HOST_COMMAND,
                &target.name,
                "the command contains a NUL byte, which no shell can run",
            ));
        }
        match &self.kind {
            Kind::Local => {
                let _slot = self.sessions.acquire().await.map_err(|_| closed(target))?;
                exec_local(target, command, stdin).await
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
                exec_ssh(target, session.clone(), command, stdin).await
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

    fn lock_idle(&self) -> std::sync::MutexGuard<'_, Vec<ResidentShell>> {
        self.idle.lock().unwrap_or_else(|e| e.into_inner())
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
    HostError::new(codes::HOST_CLOSED, &target.name, "connection pool closed")
}

async fn exec_local(
    target: &Target,
    command: &str,
    stdin: Option<Vec<u8>>,
) -> Result<ExecOutput, HostError> {
    let mut child = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(command)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| HostError::io(&target.name, "cannot start sh", &e))?;
    if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(&input)
            .await
            .map_err(|e| HostError::io(&target.name, "cannot feed the command", &e))?;
        drop(pipe);
    }
    let out = child
        .wait_with_output()
        .await
        .map_err(|e| HostError::io(&target.name, "the command failed", &e))?;
    Ok(ExecOutput {
        status: out.status.code().unwrap_or(-1),
        stdout: out.stdout,
        stderr: out.stderr,
    })
}

async fn exec_ssh(
    target: &Target,
    session: Arc<openssh::Session>,
    command: &str,
    stdin: Option<Vec<u8>>,
) -> Result<ExecOutput, HostError> {
    // Under sh, as in the resident shells, whatever the login shell; the greeting marker
    // parts the command's output from what the login printed before it.
    let greeting = resident::greeting_marker();
    let script = format!("{}\n{command}", resident::greeting_command(&greeting));
    let mut cmd = session.arc_raw_command(format!("exec sh -c {}", quote(&script)));
    cmd.stdin(if stdin.is_some() {
        openssh::Stdio::piped()
    } else {
        openssh::Stdio::null()
    })
    .stdout(openssh::Stdio::piped())
    .stderr(openssh::Stdio::piped());
    let mut pause = Duration::ZERO;
    let mut child = loop {
        match cmd.spawn().await {
            Err(e) if retry_refused_session(&e, &mut pause).await => continue,
            spawned => break spawned.map_err(|e| HostError::ssh(target, &e))?,
        }
    };
    if let (Some(input), Some(mut pipe)) = (stdin, child.stdin().take()) {
        pipe.write_all(&input)
            .await
            .map_err(|e| HostError::io(&target.name, "cannot feed the command", &e))?;
        pipe.shutdown().await.ok();
        drop(pipe);
    }
    let out = match child.wait_with_output().await {
        Ok(out) => out,
        Err(e) => return not_found_as_status(target, e),
    };
    Ok(ExecOutput {
        status: out.status.code().unwrap_or(-1),
        stdout: resident::after_greeting(out.stdout, &greeting),
        stderr: resident::after_greeting(out.stderr, &greeting),
    })
}

/// Whether to open a session again after `e`, having waited: while sshd refuses it, for
/// about a second. sshd frees a session only once the channel's close handshake is over,
/// which can trail the exit status the master passes on: a session opened right after
/// another one ended may be refused as one too many (MaxSessions). Nothing ran then, so
/// trying again is safe. `pause` starts at zero.
pub async fn retry_refused_session(e: &openssh::Error, pause: &mut Duration) -> bool {
    if *pause > Duration::from_millis(500) || !session_refused(e) {
        return false;
    }
    *pause = (*pause * 2).max(Duration::from_millis(5));
    tokio::time::sleep(*pause).await;
    true
}

fn session_refused(e: &openssh::Error) -> bool {
    let mut source: Option<&dyn std::error::Error> = Some(e);
    while let Some(s) = source {
        if s.to_string().contains("Session open refused") {
            return true;
        }
        source = s.source();
    }
    false
}

/// openssh turns a remote exit status 127 into an error; give it back as the status the
/// shell returned, so both transports report a missing command the same way.
fn not_found_as_status(target: &Target, e: openssh::Error) -> Result<ExecOutput, HostError> {
    let text = format!(
        "{e}: {}",
        std::error::Error::source(&e)
            .map(|s| s.to_string())
            .unwrap_or_default()
    );
    if text.contains("remote command not found") {
        Ok(ExecOutput {
            status: 127,
            stdout: Vec::new(),
            stderr: b"command not found".to_vec(),
        })
    } else {
        Err(HostError::ssh(target, &e))
    }
}

/// Opens the SSH master for a host: key authentication only, the topology's known-hosts
/// policy, a connect timeout, and a master that exits by itself when idle, so a killed run
/// leaves no process behind for long.
pub async fn connect_ssh(
    target: &Target,
    control_dir: &std::path::Path,
) -> Result<openssh::Session, HostError> {
    let mut builder = openssh::SessionBuilder::default();
    builder
        .port(target.port)
        .connect_timeout(target.connect_timeout)
        .server_alive_interval(Duration::from_secs(15))
        .control_directory(control_dir)
        .control_persist(openssh::ControlPersist::IdleFor(
            std::num::NonZeroUsize::new(60).expect("60 is not zero"),
        ))
        .known_hosts_check(if target.accept_new {
            openssh::KnownHosts::Add
        } else {
            openssh::KnownHosts::Strict
        });
    if let Some(user) = &target.user {
        builder.user(user.clone());
    }
    if let Some(key) = &target.key {
        builder.keyfile(key);
    }
    if let Some(config) = &target.ssh_config {
        builder.config_file(config);
    }
    if let Some(file) = &target.known_hosts_file {
        builder.user_known_hosts_file(file);
    }
    builder
        .connect_mux(&target.address)
        .await
        .map_err(|e| HostError::ssh(target, &e))
}
