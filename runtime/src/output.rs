//! Where script output goes.
//!
//! Monitoring reads the first line of a check's output, so when stdout is not a terminal
//! (cron, a Consul script check, a pipe) `print` output is held back and written after the
//! summary line at the end of the run. On a terminal it streams, since a person is
//! watching. `--format json` always holds it back: it becomes part of one JSON document.
//! Every line passes through the redactor.

use parking_lot::Mutex;
use std::io::Write;

use crate::secret::Redactor;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutputMode {
    /// Write each line to stdout as it is printed.
    Stream,
    /// Keep lines until the run ends.
    Hold,
}

pub struct Output {
    mode: OutputMode,
    held: Mutex<Vec<String>>,
    redactor: Redactor,
}

impl Output {
    pub fn new(mode: OutputMode, redactor: Redactor) -> Output {
        Output {
            mode,
            held: Mutex::new(Vec::new()),
            redactor,
        }
    }

    pub fn mode(&self) -> OutputMode {
        self.mode
    }

    /// One line of script output (`print`, a REPL result).
    pub fn line(&self, text: &str) {
        let text = self.redactor.redact(text);
        match self.mode {
            OutputMode::Stream => write_stdout(&text),
            OutputMode::Hold => self.held.lock().push(text.into_owned()),
        }
    }

    /// The lines held back so far, emptying the buffer.
    pub fn take(&self) -> Vec<String> {
        std::mem::take(&mut *self.held.lock())
    }
}

/// Writes one line to stdout. A closed pipe (`harun x.rhai | head -1`) is not an error
/// worth a panic: the reader has what it wanted.
pub fn write_stdout(text: &str) {
    crate::progress::suspend(|| {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{text}");
        let _ = out.flush();
    });
}
