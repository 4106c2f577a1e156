//! Mutating actions: one path for all of them.
//!
//! Every built-in that changes something (runs a command, writes a file, starts a service,
//! sends an HTTP write) describes it as an [`Action`] and hands it to
//! [`crate::Context::perform`]. In `--dry-run` the action is recorded into the numbered
//! [`Plan`] instead of running; otherwise it runs and is appended to the [`AuditLog`].
//! Both pass through the redactor, so neither ever holds a secret.

use parking_lot::Mutex;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde::Serialize;

use crate::secret::Redactor;

/// A change a built-in is about to make.
#[derive(Clone, Debug, Serialize)]
pub struct Action {
    /// What kind of change: `exec`, `write`, `mkdir`, `service`, `http`, ...
    pub kind: String,
    /// Where: a host name from the topology, or `local`.
    pub target: String,
    /// One line a person can read: `write /etc/consul.d/consul.hcl (mode 0640)`.
    pub summary: String,
    /// A unified diff, for a file change.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub diff: Option<String>,
}

impl Action {
    pub fn new(
        kind: impl Into<String>,
        target: impl Into<String>,
        summary: impl Into<String>,
    ) -> Action {
        Action {
            kind: kind.into(),
            target: target.into(),
            summary: summary.into(),
            diff: None,
        }
    }

    /// Adds a unified diff from `old` to `new` for the file `path`, the values of secret
    /// attributes masked (runtime/src/config_secrets.rs).
    pub fn with_diff(self, path: &str, old: &str, new: &str) -> Action {
        self.with_file_diff(path, old, new, &DiffPolicy::default())
    }

    /// `with_diff` under a policy: more secret attribute names, or a private file whose
    /// diff shows only which lines change.
    pub fn with_file_diff(
        mut self,
        path: &str,
        old: &str,
        new: &str,
        policy: &DiffPolicy,
    ) -> Action {
        self.diff = Some(if policy.private {
            crate::config_secrets::private_diff(path, old, new)
        } else {
            let (old, new) = crate::config_secrets::mask_pair(old, new, &policy.secret_attributes);
            unified_diff(path, &old, &new)
        });
        self
    }

    fn redacted(&self, redactor: &Redactor) -> Action {
        Action {
            kind: self.kind.clone(),
            target: redactor.redact(&self.target).into_owned(),
            summary: redactor.redact(&self.summary).into_owned(),
            diff: self.diff.as_ref().map(|d| redactor.redact(d).into_owned()),
        }
    }
}

/// How a file's diff is shown.
#[derive(Clone, Debug, Default)]
pub struct DiffPolicy {
    /// Only which lines change: a file of mode 0600, or under the topology's
    /// `secret_paths`.
    pub private: bool,
    /// Attribute names masked beyond the built-in ones (the topology's
    /// `secret_attributes`).
    pub secret_attributes: Vec<String>,
}

/// A unified diff in the `diff -u` format, with `a/` and `b/` headers.
pub fn unified_diff(path: &str, old: &str, new: &str) -> String {
    let path = path.trim_start_matches('/');
    similar::TextDiff::from_lines(old, new)
        .unified_diff()
        .context_radius(3)
        .header(&format!("a/{path}"), &format!("b/{path}"))
        .to_string()
}

/// The actions a dry run would have performed, in order.
#[derive(Default)]
pub struct Plan {
    actions: Mutex<Vec<Action>>,
}

impl Plan {
    pub fn record(&self, action: &Action, redactor: &Redactor) {
        self.lock().push(action.redacted(redactor));
    }

    fn lock(&self) -> parking_lot::MutexGuard<'_, Vec<Action>> {
        self.actions.lock()
    }

    pub fn actions(&self) -> Vec<Action> {
        self.lock().clone()
    }

    /// The plan as a person reads it: a numbered line per action, diffs indented below.
    pub fn render(&self) -> String {
        let actions = self.lock();
        let mut out = format!(
            "Plan (dry run, nothing was changed): {} action{}\n",
            actions.len(),
            if actions.len() == 1 { "" } else { "s" }
        );
        for (i, action) in actions.iter().enumerate() {
            out.push_str(&format!(
                "{:>3}. [{}] {}: {}\n",
                i + 1,
                action.kind,
                action.target,
                action.summary
            ));
            if let Some(diff) = &action.diff {
                for line in diff.lines() {
                    out.push_str("       ");
                    out.push_str(line);
                    out.push('\n');
                }
            }
        }
        out
    }
}

#[derive(Serialize)]
struct AuditRecord<'a> {
    time: String,
    user: String,
    script: &'a str,
    kind: &'a str,
    target: &'a str,
    summary: &'a str,
    outcome: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

/// The audit log: one JSON line per mutating action that ran, appended as it happens so a
/// killed run still leaves its trail.
pub struct AuditLog {
    path: PathBuf,
    file: Mutex<Option<File>>,
    script: String,
}

impl AuditLog {
    pub fn new(path: PathBuf, script: impl Into<String>) -> AuditLog {
        AuditLog {
            path,
            file: Mutex::new(None),
            script: script.into(),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Opens the log to append: its directory made when missing, refused when it is a
    /// symlink or another user's; the file never through a symlink, and made 0600 when
    /// group or others could read it (it names every change and who made it).
    fn open(&self) -> std::io::Result<File> {
        if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            if !dir.exists() {
                std::fs::create_dir_all(dir)?;
            }
            crate::private_fs::check_dir_owner(dir, "the audit log's directory")
                .map_err(|e| std::io::Error::other(e.to_string()))?;
        }
        let (file, tightened) = crate::private_fs::open_private_append(&self.path)?;
        if tightened {
            tracing::warn!(
                "the audit log {} could be read by group or others: it is 0600 now",
                self.path.display()
            );
        }
        Ok(file)
    }

    /// Opens the log now (once): a change is made only when it can be audited.
    pub fn ready(&self) -> std::io::Result<()> {
        let mut file = self.file.lock();
        if file.is_none() {
            *file = Some(self.open()?);
        }
        Ok(())
    }

    /// Appends a record; `error` is the failure of the action, if it failed.
    pub fn append(
        &self,
        action: &Action,
        error: Option<&str>,
        redactor: &Redactor,
    ) -> std::io::Result<()> {
        let action = action.redacted(redactor);
        let record = AuditRecord {
            time: humantime::format_rfc3339_millis(SystemTime::now()).to_string(),
            user: user_name(),
            script: &self.script,
            kind: &action.kind,
            target: &action.target,
            summary: &action.summary,
            outcome: if error.is_some() { "error" } else { "ok" },
            error: error.map(|e| redactor.redact(e).into_owned()),
        };
        let mut line = serde_json::to_string(&record).map_err(std::io::Error::other)?;
        line.push('\n');
        let mut file = self.file.lock();
        if file.is_none() {
            *file = Some(self.open()?);
        }
        let f = file.as_mut().expect("opened above");
        f.write_all(line.as_bytes())?;
        f.flush()
    }
}

/// Who ran the change: `$USER`, `$LOGNAME`, else the numeric uid (cron sets neither).
fn user_name() -> String {
    std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .ok()
        .filter(|u| !u.is_empty())
        .unwrap_or_else(|| {
            use std::os::unix::fs::MetadataExt;
            // The uid that owns our own /proc entry is the real uid, without unsafe code.
            std::fs::metadata("/proc/self")
                .map(|m| format!("uid {}", m.uid()))
                .unwrap_or_else(|_| "unknown".into())
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_numbers_actions_and_redacts() {
        let redactor = Redactor::default();
        redactor.register("s3cr3t-token");
        let plan = Plan::default();
        plan.record(
            &Action::new("write", "controller1", "write /etc/x.hcl").with_diff(
                "/etc/x.hcl",
                "a = 1\n",
                "a = 2\ntoken = \"s3cr3t-token\"\n",
            ),
            &redactor,
        );
        let text = plan.render();
        assert!(text.contains("  1. [write] controller1: write /etc/x.hcl"));
        assert!(text.contains("-a = 1"));
        // A token in a config file is masked by its name, and says that it is new.
        assert!(text.contains("+token = \"<secret, changed>\""), "{text}");
        assert!(!text.contains("s3cr3t"));
    }
}
