//! Logs: tracing on stderr, as text or JSON lines, every line redacted.

use std::io::{IsTerminal, Write};

use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::EnvFilter;

use crate::secret::Redactor;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// Installs the global subscriber. `verbosity`: -1 for `-q`, 0 by default, 1..=3 for
/// `-v`..`-vvv`. `HARUN_LOG` (an EnvFilter directive) overrides it.
pub fn init(verbosity: i8, format: LogFormat, redactor: Redactor) {
    let level = match verbosity {
        i8::MIN..=-1 => "error",
        0 => "warn",
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    let filter = std::env::var("HARUN_LOG")
        .ok()
        .and_then(|directive| EnvFilter::try_new(directive).ok())
        .unwrap_or_else(|| {
            // rustls logs a failed handshake as an ERROR of its own; harun's error already
            // says it, with the host, so rustls speaks only from -vv.
            if verbosity < 2 {
                EnvFilter::new(format!("{level},rustls=off"))
            } else {
                EnvFilter::new(level)
            }
        });
    let writer = RedactingStderr { redactor };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_target(verbosity >= 2)
        .with_ansi(std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none());
    let _ = match format {
        LogFormat::Text => builder.without_time().try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}

/// Hands tracing a buffer per event and writes it to stderr redacted, in one piece.
#[derive(Clone)]
struct RedactingStderr {
    redactor: Redactor,
}

impl<'a> MakeWriter<'a> for RedactingStderr {
    type Writer = EventWriter;

    fn make_writer(&'a self) -> EventWriter {
        EventWriter {
            redactor: self.redactor.clone(),
            buf: Vec::new(),
        }
    }
}

struct EventWriter {
    redactor: Redactor,
    buf: Vec<u8>,
}

impl Write for EventWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for EventWriter {
    fn drop(&mut self) {
        if self.buf.is_empty() {
            return;
        }
        let text = String::from_utf8_lossy(&self.buf);
        let text = self.redactor.redact(&text);
        let _ = crate::progress::suspend(|| std::io::stderr().write_all(text.as_bytes()));
    }
}
