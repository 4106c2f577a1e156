//! Secrets: values that must never reach any output.
//!
//! Two lines of defence. A [`Secret`] prints as `<secret>` wherever it is formatted (print,
//! logs, errors, plans, JSON). And every value that became a Secret is remembered by the
//! [`Redactor`], which every output sink runs its text through, so a value that escaped the
//! type (an HTTP body echoed in an error, a config file in a diff) is still masked.

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;

use parking_lot::RwLock;

use crate::codes;
use secrecy::{ExposeSecret, SecretString};

/// What a secret looks like in every output.
pub const REDACTED: &str = "<secret>";

/// Values shorter than this are not searched for in output text: masking every `1` or `ab`
/// would garble output for no gain. The Secret type still hides them when printed.
const MIN_REDACTED_LEN: usize = 3;

/// A secret value. Cloning shares it; the memory is zeroed when the last clone is dropped.
#[derive(Clone)]
pub struct Secret(Arc<SecretString>);

impl Secret {
    /// Wraps a value and registers it with the redactor so no sink ever prints it.
    pub fn new(value: impl Into<String>, redactor: &Redactor) -> Secret {
        let value: String = value.into();
        redactor.register(&value);
        Secret(Arc::new(SecretString::from(value)))
    }

    /// The value, for the code that sends it (an HTTP header, an unseal request). Never
    /// format it.
    pub fn expose(&self) -> &str {
        self.0.expose_secret()
    }

    pub fn is_empty(&self) -> bool {
        self.expose().is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

/// Remembers every secret value of the run and masks them in text bound for output.
#[derive(Clone, Default)]
pub struct Redactor {
    values: Arc<RwLock<Vec<SecretString>>>,
}

impl Redactor {
    pub fn register(&self, value: &str) {
        if value.len() < MIN_REDACTED_LEN {
            return;
        }
        let mut values = self.values.write();
        if values.iter().any(|v| v.expose_secret() == value) {
            return;
        }
        values.push(SecretString::from(value.to_string()));
        // Longest first, so a secret that contains another is masked whole.
        values.sort_by_key(|v| std::cmp::Reverse(v.expose_secret().len()));
    }

    /// The text with every registered secret value replaced by `<secret>`.
    pub fn redact<'a>(&self, text: &'a str) -> Cow<'a, str> {
        let values = self.values.read();
        let mut out = Cow::Borrowed(text);
        for value in values.iter() {
            let value = value.expose_secret();
            if out.contains(value) {
                out = Cow::Owned(out.replace(value, REDACTED));
            }
        }
        out
    }
}

/// Reads a secret kept in a file: it must not be readable by group or others, and one
/// trailing newline is dropped. Errors are `(code, message)`.
pub fn read_private_file(path: &str) -> Result<String, (&'static str, String)> {
    use std::os::unix::fs::PermissionsExt;
    let unreadable = |e: std::io::Error| {
        (
            codes::SECRET_FILE_READ,
            format!("cannot read the secret file {path}: {e}"),
        )
    };
    let meta = std::fs::metadata(path).map_err(unreadable)?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err((
            codes::SECRET_FILE_MODE,
            format!(
                "the secret file {path} is readable by group or others (mode {mode:04o}); run `chmod 600 {path}`"
            ),
        ));
    }
    let mut value = std::fs::read_to_string(path).map_err(unreadable)?;
    if value.ends_with('\n') {
        value.pop();
        if value.ends_with('\r') {
            value.pop();
        }
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_formats_as_placeholder() {
        let redactor = Redactor::default();
        let secret = Secret::new("hunter22", &redactor);
        assert_eq!(format!("{secret} {secret:?}"), "<secret> <secret>");
        assert_eq!(secret.expose(), "hunter22");
    }

    #[test]
    fn redactor_masks_longest_first() {
        let redactor = Redactor::default();
        redactor.register("abcd");
        redactor.register("abcdefgh");
        assert_eq!(
            redactor.redact("x abcdefgh abcd y"),
            "x <secret> <secret> y"
        );
        assert_eq!(redactor.redact("ab"), "ab");
    }
}
