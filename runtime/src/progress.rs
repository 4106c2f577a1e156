//! What a person at a terminal sees while a long script runs: the current step with a
//! spinner and its elapsed time, what it waits for and until when, each finished step as
//! one line with a mark and its duration, and at the end a table of what changed on each
//! host.
//!
//! Only when stdout and stderr are both terminals and the output is text (not `-q`, not
//! `--format json`): cron, pipes and monitoring get exactly the summary line and output
//! they always got. It draws on stderr; logs and streamed `print` output go above the
//! progress line through [`suspend`]. One run per process, so the state is global.

use parking_lot::{Mutex, MutexGuard};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

struct State {
    enabled: bool,
    /// The step now running, since when, and its spinner.
    step: Option<(String, Instant)>,
    bar: Option<ProgressBar>,
    /// What the step waits for now: (id, text, since, deadline).
    waits: Vec<(u64, String, Instant, Option<Duration>)>,
    next_wait: u64,
    /// Per host (the target of each change), the changes made, in order.
    changes: BTreeMap<String, Vec<String>>,
}

static STATE: Mutex<State> = Mutex::new(State {
    enabled: false,
    step: None,
    bar: None,
    waits: Vec::new(),
    next_wait: 0,
    changes: BTreeMap::new(),
});

fn state() -> MutexGuard<'static, State> {
    STATE.lock()
}

/// Turns progress on for this run (the caller decides: terminals, text output, not -q).
pub fn enable() {
    state().enabled = true;
}

pub fn is_enabled() -> bool {
    state().enabled
}

/// Starts a named step, ending the one before it with a mark and its duration.
pub fn step(name: &str) {
    let mut s = state();
    if !s.enabled {
        return;
    }
    end_step(&mut s, true);
    s.step = Some((name.to_string(), Instant::now()));
    redraw(&mut s);
}

/// Shows what the run waits for, and until when, while the guard lives.
pub fn waiting(what: &str, deadline: Option<Duration>) -> Waiting {
    let mut s = state();
    if !s.enabled {
        return Waiting(None);
    }
    s.next_wait += 1;
    let id = s.next_wait;
    s.waits
        .push((id, what.to_string(), Instant::now(), deadline));
    redraw(&mut s);
    Waiting(Some(id))
}

/// A wait shown on the progress line; gone from it when dropped.
pub struct Waiting(Option<u64>);

/// Refreshes the times on the progress line (the waits' loops call it as they poll).
pub fn refresh() {
    let mut s = state();
    if s.enabled {
        redraw(&mut s);
    }
}

impl Drop for Waiting {
    fn drop(&mut self) {
        if let Some(id) = self.0 {
            let mut s = state();
            s.waits.retain(|w| w.0 != id);
            redraw(&mut s);
        }
    }
}

/// Records a change made on `target`, for the table at the end.
pub fn changed(target: &str, summary: &str) {
    let mut s = state();
    if s.enabled {
        let changes = s.changes.entry(target.to_string()).or_default();
        changes.push(summary.to_string());
    }
}

/// Runs `f` (a log line, a line of output) with the progress line out of the way.
pub fn suspend<R>(f: impl FnOnce() -> R) -> R {
    let bar = state().bar.clone();
    match bar {
        Some(bar) => bar.suspend(f),
        None => f(),
    }
}

/// The end of the run: the last step's mark (✘ when the run failed) and the table of
/// changes per host. Progress is off afterwards.
pub fn finish(succeeded: bool) {
    let mut s = state();
    if !s.enabled {
        return;
    }
    end_step(&mut s, succeeded);
    s.waits.clear();
    let changes = std::mem::take(&mut s.changes);
    s.enabled = false;
    drop(s);
    if changes.is_empty() {
        eprintln!("No changes.");
        return;
    }
    eprintln!("{}", changes_table(&changes));
}

/// The longest a change is shown in the table; the audit log has it whole.
const CHANGE_WIDTH: usize = 72;

fn shortened(change: &str) -> String {
    if change.chars().count() <= CHANGE_WIDTH {
        return change.to_string();
    }
    let cut: String = change.chars().take(CHANGE_WIDTH - 1).collect();
    format!("{cut}…")
}

/// Per host, what changed: the table `finish` prints.
pub fn changes_table(changes: &BTreeMap<String, Vec<String>>) -> comfy_table::Table {
    let mut table = comfy_table::Table::new();
    table
        .load_style(comfy_table::presets::UTF8_FULL_CONDENSED)
        .set_header(["Host", "Changes"]);
    for (host, list) in changes {
        let shown: Vec<String> = list.iter().map(|c| shortened(c)).collect();
        table.add_row([host.clone(), shown.join("\n")]);
    }
    table
}

fn end_step(s: &mut State, succeeded: bool) {
    if let Some(bar) = s.bar.take() {
        bar.finish_and_clear();
    }
    if let Some((name, since)) = s.step.take() {
        let mark = if succeeded { "✔" } else { "✘" };
        eprintln!("{mark} {name} ({})", seconds(since.elapsed()));
    }
}

fn seconds(d: Duration) -> String {
    format!("{:.1}s", d.as_secs_f64())
}

/// The progress line: the step (or, without steps, the wait) and the latest wait.
fn redraw(s: &mut State) {
    let wait = s.waits.last().map(|(_, what, since, deadline)| {
        let waited = since.elapsed().as_secs();
        match deadline {
            Some(d) => format!("waiting for {what} ({waited}s of {}s)", d.as_secs()),
            None => format!("waiting for {what} ({waited}s)"),
        }
    });
    let line = match (&s.step, wait) {
        (Some((name, since)), Some(wait)) => {
            format!("{name} ({}) · {wait}", seconds(since.elapsed()))
        }
        (Some((name, since)), None) => format!("{name} ({})", seconds(since.elapsed())),
        (None, Some(wait)) => wait,
        (None, None) => {
            if let Some(bar) = s.bar.take() {
                bar.finish_and_clear();
            }
            return;
        }
    };
    let bar = s.bar.get_or_insert_with(|| {
        let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
        bar.set_style(
            ProgressStyle::with_template("{spinner} {wide_msg}")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        );
        bar.enable_steady_tick(Duration::from_millis(120));
        bar
    });
    bar.set_message(line);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_lists_each_hosts_changes() {
        let mut changes = BTreeMap::new();
        changes.insert(
            "controller1".to_string(),
            vec![
                "restart vault".to_string(),
                "write /etc/vault.d/vault.hcl".into(),
            ],
        );
        let text = changes_table(&changes).to_string();
        assert!(text.contains("Host"), "{text}");
        assert!(text.contains("controller1"), "{text}");
        assert!(text.contains("write /etc/vault.d/vault.hcl"), "{text}");
    }
}
