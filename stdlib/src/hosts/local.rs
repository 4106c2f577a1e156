//! The local transport (`transport = "local"`): a command runs under this machine's `sh`.

use std::process::Stdio;

use tokio::io::AsyncWriteExt;

use super::error::HostError;
use super::target::{ExecOutput, Target};

/// Runs `command` under `sh -c`, feeding `stdin` when given.
pub async fn exec_local(
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
