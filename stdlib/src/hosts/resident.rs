//! A resident shell: one SSH session running `sh`, kept open for the whole run, that runs
//! one command after another. A fresh session per command costs the remote sshd a fork, an
//! exec of the login shell and a channel set-up; here each command costs a subshell. This
//! is what makes a script's many small commands (reads, tests, service states) cheap.
//!
//! Each command runs as `( eval 'COMMAND' ) </dev/null` in a subshell of its own, so a
//! `cd`, a variable or an `exit` does not leak into the next one, and nothing reads the
//! command stream. After it the shell prints a marker on stdout (with the exit status) and
//! on stderr; the marker holds a random token and the command's number, so no output can
//! pass for it. Anything unexpected (the shell ends, a stream closes, the caller gives up
//! half-way) and the shell is dropped rather than reused.
//!
//! Whatever the login runs before `sh` starts (a `.bashrc` that echoes, `~/.ssh/rc`) prints
//! to the same session: the shell's first words are a greeting marker, and what came
//! before it is dropped, so that it cannot pass for the first command's output.

use std::future::Future;
use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::sync::OwnedSemaphorePermit;

use super::error::{Failure, HostError};
use super::shell::{greeting_command, quote, random_token};
use super::ssh::retry_refused_session;
use super::target::{ExecOutput, Target};

pub struct ResidentShell {
    child: openssh::Child<Arc<openssh::Session>>,
    stdin: openssh::ChildStdin,
    stdout: Stream<openssh::ChildStdout>,
    stderr: Stream<openssh::ChildStderr>,
    token: String,
    count: u64,
    /// The greeting marker is still to be read, ahead of the first command's output.
    greeted: bool,
    clean: bool,
    /// The host's session slot (sshd's MaxSessions), held while the shell is open.
    _permit: OwnedSemaphorePermit,
}

impl ResidentShell {
    /// Opens a session running `sh` on the master's host.
    pub async fn open(
        target: &Target,
        session: Arc<openssh::Session>,
        permit: OwnedSemaphorePermit,
    ) -> Result<ResidentShell, HostError> {
        let mut command = session.arc_raw_command("exec sh");
        command
            .stdin(openssh::Stdio::piped())
            .stdout(openssh::Stdio::piped())
            .stderr(openssh::Stdio::piped());
        let mut pause = std::time::Duration::ZERO;
        let mut child = loop {
            match command.spawn().await {
                Err(e) if retry_refused_session(&e, &mut pause).await => continue,
                spawned => break spawned.map_err(|e| HostError::ssh(target, &e))?,
            }
        };
        let (Some(stdin), Some(stdout), Some(stderr)) = (
            child.stdin().take(),
            child.stdout().take(),
            child.stderr().take(),
        ) else {
            return Err(HostError::new(
                Failure::Ssh,
                &target.name,
                "the new session came without its streams",
            ));
        };
        let mut shell = ResidentShell {
            child,
            stdin,
            stdout: Stream::new(stdout),
            stderr: Stream::new(stderr),
            token: random_token(),
            count: 0,
            greeted: false,
            clean: true,
            _permit: permit,
        };
        // Sent now and read with the first command's output: no round trip of its own.
        let greeting = format!("{}\n", greeting_command(&shell.marker(0)));
        shell
            .stdin
            .write_all(greeting.as_bytes())
            .await
            .map_err(|e| HostError::io(&target.name, "cannot start the remote shell", &e))?;
        Ok(shell)
    }

    fn marker(&self, count: u64) -> String {
        format!("\x1eharun-{}-{}:", self.token, count)
    }

    /// Runs one command and waits for it. An error means the shell is no longer usable.
    pub async fn run(&mut self, command: &str) -> std::io::Result<ExecOutput> {
        self.count += 1;
        let marker = self.marker(self.count);
        let line = format!(
            "( eval {} ) </dev/null; printf '%s%d\\n' '{marker}' \"$?\"; printf '%s' '{marker}' >&2\n",
            quote(command)
        );
        self.stdin.write_all(line.as_bytes()).await?;
        self.stdin.flush().await?;
        if !self.greeted {
            let greeting = self.marker(0);
            let greeting = greeting.as_bytes();
            let (before, before_err) = tokio::try_join!(
                self.stdout.skip_past(greeting),
                self.stderr.skip_past(greeting)
            )?;
            if before > 0 || before_err > 0 {
                tracing::debug!(
                    stdout = before,
                    stderr = before_err,
                    "dropped what the login printed before the resident shell started"
                );
            }
            self.greeted = true;
        }
        let marker = marker.as_bytes();
        let (stdout, stderr) = tokio::try_join!(
            self.stdout.until(marker, true),
            self.stderr.until(marker, false)
        )?;
        let (stdout, status) = stdout;
        if self.stdout.stray || self.stderr.stray {
            self.clean = false;
        }
        Ok(ExecOutput {
            status,
            stdout,
            stderr: stderr.0,
        })
    }

    /// False once output came that no command was waiting for: something a command left
    /// in the background writes to the session, and would garble the next command's.
    pub fn is_clean(&self) -> bool {
        self.clean
    }

    /// `is_clean`, having looked for output that came while the shell was idle, or for
    /// the shell's end.
    pub fn is_still_clean(&mut self) -> bool {
        let quiet = matches!(self.stdout.pending(), Ok(false))
            && matches!(self.stderr.pending(), Ok(false));
        self.clean &= quiet;
        self.clean
    }

    /// Ends the shell: end of input makes `sh` exit, and the session closes with it, so
    /// that sshd counts it no more.
    pub async fn close(self) {
        let ResidentShell {
            child,
            mut stdin,
            _permit: permit,
            ..
        } = self;
        let _ = stdin.shutdown().await;
        drop(stdin);
        // A command's background process can hold the session open: do not wait on it.
        let _ = tokio::time::timeout(std::time::Duration::from_secs(3), child.wait()).await;
        // Only now may another session take the slot.
        drop(permit);
    }
}

/// One output stream of the shell, read up to each command's marker.
struct Stream<R> {
    reader: R,
    buffer: Vec<u8>,
    /// Output came after a command's marker.
    stray: bool,
}

impl<R: AsyncRead + Unpin> Stream<R> {
    fn new(reader: R) -> Stream<R> {
        Stream {
            reader,
            buffer: Vec::new(),
            stray: false,
        }
    }

    /// Whether the stream has something to read now: output, or its end. It looks once,
    /// without waiting: a timer, even of zero, would wait for the next tick of tokio's
    /// clock (a millisecond), longer than a whole command takes.
    fn pending(&mut self) -> std::io::Result<bool> {
        let mut chunk = [0u8; 1024];
        let read = std::pin::pin!(self.reader.read(&mut chunk));
        let mut look = std::task::Context::from_waker(std::task::Waker::noop());
        match read.poll(&mut look) {
            std::task::Poll::Ready(Ok(_)) => Ok(true),
            std::task::Poll::Ready(Err(e)) => Err(e),
            std::task::Poll::Pending => Ok(false),
        }
    }

    /// What came before `marker`, and after it (on stdout) the exit status up to the end of
    /// the line. Output after that belongs to no command: it is dropped, and marks the
    /// stream as having a stray writer.
    async fn until(&mut self, marker: &[u8], with_status: bool) -> std::io::Result<(Vec<u8>, i32)> {
        let mut searched = 0;
        loop {
            if let Some(at) =
                memchr::memmem::find(&self.buffer[searched..], marker).map(|i| i + searched)
            {
                let rest = &self.buffer[at + marker.len()..];
                let end = if with_status {
                    rest.iter().position(|b| *b == b'\n').map(|end| end + 1)
                } else {
                    Some(0)
                };
                if let Some(end) = end {
                    let status = std::str::from_utf8(&rest[..end])
                        .ok()
                        .and_then(|s| s.trim_end().parse().ok())
                        .unwrap_or(if with_status { -1 } else { 0 });
                    self.stray |= rest.len() > end;
                    let output = self.buffer[..at].to_vec();
                    self.buffer.clear();
                    return Ok((output, status));
                }
            } else {
                searched = self.buffer.len().saturating_sub(marker.len());
            }
            self.fill().await?;
        }
    }

    /// Drops what came before `marker` and the marker itself, and keeps what follows (the
    /// next command's output may share a read with it); returns how much was dropped.
    async fn skip_past(&mut self, marker: &[u8]) -> std::io::Result<usize> {
        let mut searched = 0;
        loop {
            if let Some(at) =
                memchr::memmem::find(&self.buffer[searched..], marker).map(|i| i + searched)
            {
                self.buffer.drain(..at + marker.len());
                return Ok(at);
            }
            searched = self.buffer.len().saturating_sub(marker.len());
            self.fill().await?;
        }
    }

    /// Reads what the stream has next into the buffer; its end is an error.
    async fn fill(&mut self) -> std::io::Result<()> {
        let mut chunk = [0u8; 16 * 1024];
        let n = self.reader.read(&mut chunk).await?;
        if n == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "the remote shell ended",
            ));
        }
        self.buffer.extend_from_slice(&chunk[..n]);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block_on<F: Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(f)
    }

    /// The greeting, the first command's output and its marker in one read: the output
    /// stays for the command.
    #[test]
    fn a_greeting_read_with_the_first_output_keeps_that_output() {
        let data = b"Welcome\n\x1eG:first\n\x1eM1:0\n";
        let mut stream = Stream::new(&data[..]);
        assert_eq!(block_on(stream.skip_past(b"\x1eG:")).unwrap(), 8);
        let (output, status) = block_on(stream.until(b"\x1eM1:", true)).unwrap();
        assert_eq!((output.as_slice(), status), (&b"first\n"[..], 0));
        assert!(!stream.stray);
    }
}
