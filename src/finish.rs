//! The end of a run: the summary line, the held output, the plan, the exit status.

use std::path::Path;

use harun_runtime::diagnostic::Sources;
use harun_runtime::output::write_stdout;
use harun_runtime::{json, Context, Diagnostic, Status};
use rhai::{Dynamic, EvalAltResult};
use serde_json::json;

use crate::cli::Format;
use harun_runtime::codes::exit::ERROR as EXIT_ERROR;

/// What a run produced.
pub struct Run<'a> {
    pub context: &'a Context,
    pub result: Result<Dynamic, Box<EvalAltResult>>,
    /// Print the value of the last expression (`-e`).
    pub show_result: bool,
    pub format: Format,
    pub sources: &'a Sources,
    pub main_source: &'a str,
    pub base_dir: &'a Path,
}

pub fn finish(run: Run) -> i32 {
    let ctx = run.context;
    // Close SSH masters and the like before printing: the run is over.
    ctx.finish();
    let report = ctx.report_snapshot();
    // `exit(n)` ends the script through a termination error; it is not a failure.
    let (value, error) = match run.result {
        Ok(value) => (Some(value), None),
        Err(e)
            if ctx.exit_requested().is_some()
                && matches!(*e, EvalAltResult::ErrorTerminated(..)) =>
        {
            (None, None)
        }
        Err(e) => (
            None,
            Some(Diagnostic::from_rhai(&e, run.main_source, run.base_dir)),
        ),
    };

    let (code, summary) = match &error {
        Some(d) => {
            let error = format!("{}: {}", d.code, d.message);
            (
                EXIT_ERROR,
                report.summary_line_led_by(Status::Unknown, Some(&error)),
            )
        }
        None => {
            let code = ctx
                .exit_requested()
                .unwrap_or_else(|| report.worst().code());
            let label = Status::from_code(code as i64).unwrap_or(report.worst());
            (code, report.summary_line_as(label))
        }
    };
    let summary = ctx.redactor().redact(&summary).into_owned();
    harun_runtime::progress::finish(error.is_none() && code != EXIT_ERROR);

    if let Some(d) = &error {
        eprint!("{}", d.render(run.sources, ctx.redactor()));
    }

    let shown_value = value.filter(|v| run.show_result && !v.is_unit());
    let output = ctx.output().take();
    match run.format {
        Format::Text => {
            if !report.is_empty() {
                write_stdout(&summary);
            }
            for line in &output {
                write_stdout(line);
            }
            if let Some(v) = &shown_value {
                write_stdout(&ctx.redactor().redact(&render_value(v)));
            }
            if ctx.is_dry_run() {
                let plan = ctx.plan().render();
                write_stdout(plan.trim_end());
            }
        }
        Format::Json => {
            let messages: Vec<_> = report
                .entries()
                .iter()
                .map(|(s, m)| json!({"status": s.label(), "message": m}))
                .collect();
            let mut doc = json!({
                "status": Status::from_code(code as i64).map_or("UNKNOWN", Status::label),
                "code": code,
                "summary": summary,
                "messages": messages,
                "output": output,
            });
            if let Some(v) = &shown_value {
                doc["result"] = json::to_json(v);
            }
            if ctx.is_dry_run() {
                doc["plan"] = serde_json::to_value(ctx.plan().actions()).unwrap_or_default();
            }
            if let Some(d) = &error {
                let mut e = json!({"code": d.code, "message": d.message});
                if let Some(loc) = &d.location {
                    e["file"] = json!(loc.file);
                    e["line"] = json!(loc.line);
                    e["column"] = json!(loc.col);
                }
                doc["error"] = e;
            }
            let text = serde_json::to_string_pretty(&doc).unwrap_or_default();
            write_stdout(&ctx.redactor().redact(&text));
        }
    }
    code
}

/// A result as a person reads it: strings bare, maps and arrays as indented JSON.
pub fn render_value(value: &Dynamic) -> String {
    if value.is_map() || value.is_array() {
        serde_json::to_string_pretty(&json::to_json(value)).unwrap_or_else(|_| value.to_string())
    } else {
        json::to_text(value)
    }
}
