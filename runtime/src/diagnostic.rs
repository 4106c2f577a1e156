//! Diagnostics: a stable code, the message, `--> file:line:col`, the source line and a
//! caret, and the script call stack where there is one.
//!
//! ```text
//! error[harun::script::syntax]: Expecting ')' to close the parameters list of function 'f'
//!   --> deploy.rhai:3:14
//!    |
//!  3 | let x = f(1;
//!    |              ^
//!    = in `check_node` called at lib/checks.rhai:12:5
//! ```

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use rhai::{EvalAltResult, Position};

use crate::bridge::Interrupt;
use crate::codes;
use crate::error::code_and_message;
use crate::secret::Redactor;

/// A position in a file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Location {
    pub file: String,
    pub line: usize,
    pub col: usize,
}

/// A frame of the script call stack: the function entered and where it was called.
#[derive(Clone, Debug)]
pub struct Frame {
    pub function: String,
    pub at: Option<Location>,
}

/// A rendered-to-be error: what went wrong and where.
#[derive(Clone, Debug)]
pub struct Diagnostic {
    pub code: String,
    pub message: String,
    pub location: Option<Location>,
    /// Outermost call first.
    pub stack: Vec<Frame>,
    pub notes: Vec<String>,
}

impl Diagnostic {
    pub fn new(code: impl Into<String>, message: impl Into<String>) -> Diagnostic {
        Diagnostic {
            code: code.into(),
            message: message.into(),
            location: None,
            stack: Vec::new(),
            notes: Vec::new(),
        }
    }

    pub fn at(mut self, file: impl Into<String>, line: usize, col: usize) -> Diagnostic {
        self.location = Some(Location {
            file: file.into(),
            line,
            col,
        });
        self
    }

    pub fn note(mut self, note: impl Into<String>) -> Diagnostic {
        self.notes.push(note.into());
        self
    }

    /// Builds a diagnostic from a Rhai error. `main_source` names the file (or `-e`) the
    /// top-level code came from; `base_dir` is where imports are resolved.
    pub fn from_rhai(err: &EvalAltResult, main_source: &str, base_dir: &Path) -> Diagnostic {
        let mut stack = Vec::new();
        let mut source = main_source.to_string();
        let mut err = err;
        loop {
            match err {
                EvalAltResult::ErrorInFunctionCall(name, fn_source, inner, pos) => {
                    stack.push(Frame {
                        function: name.clone(),
                        at: location(&source, *pos),
                    });
                    if !fn_source.is_empty() && fn_source != main_source {
                        source = display_source(fn_source, base_dir);
                    } else if fn_source == main_source {
                        source = main_source.to_string();
                    }
                    err = inner;
                }
                EvalAltResult::ErrorInModule(path, inner, pos) => {
                    stack.push(Frame {
                        function: format!("import \"{path}\""),
                        at: location(&source, *pos),
                    });
                    source = display_source(&module_file(path, base_dir), base_dir);
                    err = inner;
                }
                _ => break,
            }
        }
        let (code, message) = classify(err);
        Diagnostic {
            code,
            message,
            location: location(&source, err.position()),
            stack,
            notes: Vec::new(),
        }
    }

    /// The diagnostic as text, with source lines read through `sources`.
    pub fn render(&self, sources: &Sources, redactor: &Redactor) -> String {
        let mut out = format!("error[{}]: {}\n", self.code, self.message);
        if let Some(loc) = &self.location {
            let gutter = loc.line.to_string().len() + 1;
            let pad = " ".repeat(gutter);
            let _ = writeln!(
                out,
                "{}--> {}:{}:{}",
                &pad[1..],
                loc.file,
                loc.line,
                loc.col
            );
            if let Some(line) = sources.line(&loc.file, loc.line) {
                let _ = writeln!(out, "{pad}|");
                let _ = writeln!(out, "{:>w$} | {}", loc.line, line, w = gutter - 1);
                let caret_pad: String = line
                    .chars()
                    .take(loc.col.saturating_sub(1))
                    .map(|c| if c == '\t' { '\t' } else { ' ' })
                    .collect();
                let _ = writeln!(out, "{pad}| {caret_pad}^");
            }
        }
        let gutter = self
            .location
            .as_ref()
            .map_or(2, |l| l.line.to_string().len() + 1);
        let pad = " ".repeat(gutter);
        for frame in self.stack.iter().rev() {
            match &frame.at {
                Some(at) => {
                    let _ = writeln!(
                        out,
                        "{pad}= in `{}` called at {}:{}:{}",
                        frame.function, at.file, at.line, at.col
                    );
                }
                None => {
                    let _ = writeln!(out, "{pad}= in `{}`", frame.function);
                }
            }
        }
        for note in &self.notes {
            let _ = writeln!(out, "{pad}= {note}");
        }
        redactor.redact(&out).into_owned()
    }
}

/// The error at the bottom of a chain of function calls and module imports.
/// Prints `error[CODE]: message` through the renderer, redacted; returns harun's error
/// exit status. How the binary and the REPL report an error of their own, outside a
/// script.
pub fn fail(code: &'static str, message: impl Into<String>, redactor: &Redactor) -> i32 {
    eprint!(
        "{}",
        Diagnostic::new(code, message).render(&Sources::default(), redactor)
    );
    codes::exit::ERROR
}

pub fn root_cause(mut err: &EvalAltResult) -> &EvalAltResult {
    loop {
        match err {
            EvalAltResult::ErrorInFunctionCall(_, _, inner, _)
            | EvalAltResult::ErrorInModule(_, inner, _) => err = inner,
            other => return other,
        }
    }
}

/// The stable code and message of any script error.
pub fn code_and_message_of(err: &EvalAltResult) -> (String, String) {
    classify(root_cause(err))
}

fn location(file: &str, pos: Position) -> Option<Location> {
    Some(Location {
        file: file.to_string(),
        line: pos.line()?,
        col: pos.position().unwrap_or(1),
    })
}

/// `lib/util` -> `<base>/lib/util.rhai`, the file the module resolver loads.
fn module_file(path: &str, base_dir: &Path) -> String {
    let mut file = PathBuf::from(path);
    if file.extension().is_none() {
        file.set_extension("rhai");
    }
    if file.is_relative() {
        file = base_dir.join(file);
    }
    file.to_string_lossy().into_owned()
}

/// The file a Rhai source name refers to, as the user would type it: a module's source is
/// its import path (`lib/util`), resolved like the module resolver does; absolute paths
/// under the current directory print relative to it.
fn display_source(source: &str, base_dir: &Path) -> String {
    let mut path = PathBuf::from(source);
    if !path.is_file() {
        let candidate = PathBuf::from(module_file(source, base_dir));
        if candidate.is_file() {
            path = candidate;
        } else {
            return source.to_string();
        }
    }
    if path.is_absolute() {
        if let Ok(cwd) = std::env::current_dir() {
            if cwd.parent().is_some() {
                if let Ok(rel) = path.strip_prefix(&cwd) {
                    return rel.to_string_lossy().into_owned();
                }
            }
        }
    }
    path.to_string_lossy().into_owned()
}

/// The stable code and the message (without Rhai's "(line x, position y)" suffix).
fn classify(err: &EvalAltResult) -> (String, String) {
    use EvalAltResult::*;
    let code = match err {
        ErrorParsing(..) => codes::SCRIPT_SYNTAX,
        ErrorVariableNotFound(..) => codes::SCRIPT_UNKNOWN_VARIABLE,
        ErrorFunctionNotFound(..) => codes::SCRIPT_UNKNOWN_FUNCTION,
        ErrorPropertyNotFound(..) => codes::SCRIPT_UNKNOWN_PROPERTY,
        ErrorModuleNotFound(..) => codes::SCRIPT_MODULE_NOT_FOUND,
        ErrorMismatchDataType(..) | ErrorMismatchOutputType(..) => codes::SCRIPT_TYPE_MISMATCH,
        ErrorArrayBounds(..) | ErrorStringBounds(..) | ErrorIndexNotFound(..) => {
            codes::SCRIPT_INDEX
        }
        ErrorTooManyOperations(..)
        | ErrorTooManyVariables(..)
        | ErrorTooManyModules(..)
        | ErrorStackOverflow(..)
        | ErrorDataTooLarge(..) => codes::SCRIPT_LIMIT,
        ErrorArithmetic(..) => codes::SCRIPT_ARITHMETIC,
        ErrorRuntime(value, _) | ErrorTerminated(value, _) if !value.is_unit() => {
            return code_and_message(value);
        }
        _ => codes::SCRIPT_ERROR,
    };
    let message = match err {
        ErrorParsing(kind, _) => kind.to_string(),
        other => {
            let text = other.to_string();
            let suffix = format!(" ({})", other.position());
            text.strip_suffix(&suffix).unwrap_or(&text).to_string()
        }
    };
    (code.to_string(), message)
}

/// The error a cancelled run or a timed-out call raises in the script. A timeout can be
/// caught and retried; an interrupt, a SIGTERM or the run's deadline cannot.
pub fn interrupt_error(interrupt: Interrupt, what: &str, pos: Position) -> Box<EvalAltResult> {
    let message = if what.is_empty() {
        interrupt.message()
    } else {
        format!("{what}: {}", interrupt.message())
    };
    match interrupt {
        Interrupt::Timeout(_) => crate::error::script_error(interrupt.code(), message, pos),
        _ => {
            let mut map = rhai::Map::new();
            map.insert("code".into(), interrupt.code().into());
            map.insert("message".into(), message.into());
            Box::new(EvalAltResult::ErrorTerminated(map.into(), pos))
        }
    }
}

/// Source texts for diagnostics: those registered by name (the script, `-e` code),
/// otherwise read from disk.
#[derive(Default)]
pub struct Sources {
    texts: HashMap<String, String>,
}

impl Sources {
    pub fn add(&mut self, name: impl Into<String>, text: impl Into<String>) {
        self.texts.insert(name.into(), text.into());
    }

    /// A line of a script: a registered source, or a `.rhai` file read from disk. Never a
    /// line of any other file: an HCL or topology error names the place only, because the
    /// line may hold a token or key that failed to parse.
    pub fn line(&self, file: &str, line: usize) -> Option<String> {
        let text = match self.texts.get(file) {
            Some(text) => text.clone(),
            None if file.ends_with(".rhai") => std::fs::read_to_string(file).ok()?,
            None => return None,
        };
        text.lines()
            .nth(line.checked_sub(1)?)
            .map(|l| l.trim_end().to_string())
    }
}

/// 1-based line and column of a byte offset in `text`.
pub fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let col = before
        .rfind('\n')
        .map_or(before.chars().count(), |i| before[i + 1..].chars().count())
        + 1;
    (line, col)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_caret_under_column() {
        let mut sources = Sources::default();
        sources.add("x.rhai", "let a = 1;\nlet b = f(1;\n");
        let d = Diagnostic::new(codes::SCRIPT_SYNTAX, "Expecting ')'").at("x.rhai", 2, 12);
        let text = d.render(&sources, &Redactor::default());
        assert_eq!(
            text,
            "error[harun::script::syntax]: Expecting ')'\n --> x.rhai:2:12\n  |\n2 | let b = f(1;\n  |            ^\n"
        );
    }

    #[test]
    fn line_col_counts_from_one() {
        assert_eq!(line_col("ab\ncd", 0), (1, 1));
        assert_eq!(line_col("ab\ncd", 4), (2, 2));
    }
}
