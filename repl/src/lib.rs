//! harun-repl: explore and fix a cluster interactively.
//!
//! On a terminal: rustyline with multi-line input (the validator waits for the closing `}`),
//! history in the XDG state dir, tab completion of built-ins and variables, `:help NAME`.
//! With stdin not a terminal (a pipe, a test) it reads plain lines with the same rules for
//! incomplete input, so sessions can be scripted. An error never ends the session.

// No function longer than a screenful outside tests (issue 29's yardstick).
#![warn(clippy::too_many_lines)]

mod catalog;
mod display;
mod helper;
mod incomplete;

use harun_runtime::codes;
use harun_runtime::diagnostic::fail;
use std::io::{BufRead, IsTerminal};
use std::sync::Arc;

use parking_lot::Mutex;

use harun_runtime::diagnostic::Sources;
use harun_runtime::output::write_stdout;
use harun_runtime::{Context, Diagnostic};
use rhai::{Dynamic, Engine, EvalAltResult, Scope, AST};
use rustyline::error::ReadlineError;

pub use catalog::Catalog;
pub use incomplete::is_incomplete;

const PROMPT: &str = "harun> ";
const CONTINUATION: &str = "  ...> ";

/// The REPL's state: the engine, the variables and the functions defined so far.
struct Session {
    engine: Engine,
    context: Context,
    scope: Scope<'static>,
    /// Functions defined in earlier inputs, kept so later inputs can call them.
    functions: AST,
    catalog: Arc<Catalog>,
    variables: Arc<Mutex<Vec<String>>>,
}

/// Runs the REPL until Ctrl-D or end of input; returns the exit status (0).
pub fn run(engine: Engine, context: Context, scope: Scope<'static>) -> i32 {
    let catalog = Arc::new(Catalog::new(&engine));
    let mut session = Session {
        engine,
        context,
        scope,
        functions: AST::empty(),
        catalog,
        variables: Arc::new(Mutex::new(Vec::new())),
    };
    session.refresh_variables();
    if std::io::stdin().is_terminal() {
        interactive(&mut session)
    } else {
        lines(&mut session)
    }
}

impl Session {
    /// Evaluates one complete input, printing its result or its error.
    fn eval(&mut self, input: &str) {
        let input = input.trim();
        if input.is_empty() {
            return;
        }
        if let Some(command) = input.strip_prefix(':') {
            self.command(command.trim());
            return;
        }
        // A fresh cancellation token: a Ctrl-C that stopped the last input must not
        // stop this one.
        self.context.bridge().reset();
        // Not compiled with the scope: the optimizer would put its constants in place of
        // function parameters of the same name.
        let result = self
            .engine
            .compile(input)
            .map_err(|e| Box::new(EvalAltResult::from(e)))
            .and_then(|ast| {
                let ast = self.functions.merge(&ast);
                let value = self
                    .engine
                    .eval_ast_with_scope::<Dynamic>(&mut self.scope, &ast);
                self.functions = ast.clone_functions_only();
                value
            });
        match result {
            Ok(value) if value.is_unit() => {}
            Ok(value) => {
                let text = display::render(&value);
                write_stdout(&self.context.redactor().redact(&text));
            }
            Err(e) => {
                let mut sources = Sources::default();
                sources.add("repl", input);
                let d = Diagnostic::from_rhai(&e, "repl", &self.context.options().base_dir);
                eprint!("{}", d.render(&sources, self.context.redactor()));
            }
        }
        self.refresh_variables();
    }

    fn command(&self, command: &str) {
        let (name, arg) = command
            .split_once(char::is_whitespace)
            .map_or((command, ""), |(n, a)| (n, a.trim()));
        match name {
            "help" | "h" if arg.is_empty() => write_stdout(&self.catalog.overview()),
            "help" | "h" => write_stdout(&self.catalog.help(arg)),
            "vars" => {
                let names = self.variables.lock();
                write_stdout(&names.join("  "));
            }
            "quit" | "q" | "exit" => std::process::exit(0),
            other => eprintln!("unknown command :{other} (try :help)"),
        }
    }

    fn refresh_variables(&self) {
        let mut names: Vec<String> = self
            .scope
            .iter_raw()
            .map(|(name, _, _)| name.to_string())
            .collect();
        names.sort();
        names.dedup();
        *self.variables.lock() = names;
    }
}

fn interactive(session: &mut Session) -> i32 {
    let config = rustyline::Config::builder()
        .auto_add_history(false)
        .completion_type(rustyline::CompletionType::List)
        .max_history_size(10_000)
        .unwrap_or_default()
        .build();
    let mut editor: rustyline::Editor<helper::ReplHelper, rustyline::history::DefaultHistory> =
        match rustyline::Editor::with_config(config) {
            Ok(editor) => editor,
            Err(e) => {
                return fail(
                    codes::REPL,
                    format!("cannot start the line editor: {e}"),
                    session.context.redactor(),
                )
            }
        };
    editor.set_helper(Some(helper::ReplHelper::new(
        session.catalog.clone(),
        session.variables.clone(),
    )));
    let history = dirs::state_dir().map(|d| d.join("harun").join("history"));
    if let Some(path) = &history {
        let _ = editor.load_history(path);
    }
    eprintln!(
        "harun {} REPL: :help for help, Ctrl-D to leave",
        env!("CARGO_PKG_VERSION")
    );
    loop {
        match editor.readline(PROMPT) {
            Ok(line) => {
                if !line.trim().is_empty() {
                    let _ = editor.add_history_entry(line.as_str());
                }
                session.eval(&line);
            }
            // Ctrl-C clears the line being typed; it does not leave.
            Err(ReadlineError::Interrupted) => continue,
            Err(ReadlineError::Eof) => break,
            Err(e) => {
                fail(codes::REPL, e.to_string(), session.context.redactor());
                break;
            }
        }
    }
    if let Some(path) = &history {
        if let Some(dir) = path.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        let _ = editor.save_history(path);
    }
    0
}

/// Plain line mode: a line that leaves the input incomplete (an open `{`) waits for more.
fn lines(session: &mut Session) -> i32 {
    let stdin = std::io::stdin();
    let mut buffer = String::new();
    for line in stdin.lock().lines() {
        let Ok(line) = line else { break };
        buffer.push_str(&line);
        buffer.push('\n');
        if is_incomplete(&session.engine, &buffer) {
            continue;
        }
        let input = std::mem::take(&mut buffer);
        session.eval(&input);
    }
    if !buffer.trim().is_empty() {
        session.eval(&buffer);
    }
    let _ = CONTINUATION;
    0
}
