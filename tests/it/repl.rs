//! The REPL, driven through piped stdin (line mode) and through a pseudo-terminal.

use crate::common;

use common::Test;

#[test]
fn piped_session_defines_calls_survives_an_error() {
    let out = Test::new()
        .args(["repl"])
        .stdin("fn double(x) {\n  x * 2\n}\ndouble(21)\nno_such_function(1)\ndouble(5)\nlet hosts = [#{name: \"c1\", ok: true}, #{name: \"c2\", ok: false}];\nhosts\n")
        .run()
        .status(0);
    assert_eq!(
        out.stdout,
        "42\n10\n┌──────┬───────┐\n│ name ┆ ok    │\n╞══════╪═══════╡\n│ c1   ┆ true  │\n│ c2   ┆ false │\n└──────┴───────┘\n"
    );
    assert!(
        out.stderr.contains(
            "error[harun::script::unknown_function]: Function not found: no_such_function (i64)"
        ),
        "{}",
        out.stderr
    );
}

#[test]
fn piped_help_shows_doc_comment_and_signature() {
    Test::new()
        .args(["repl"])
        .stdin(":help log::info\n")
        .run()
        .status(0)
        .stdout("log::info(message: Dynamic)\n\nLogs progress; shown with `-v`.\n");
}

#[test]
fn bare_harun_with_piped_stdin_is_the_repl() {
    Test::new().stdin("1 + 2\n").run().status(0).stdout("3\n");
}

#[test]
fn terminal_session_completes_and_ctrl_c_clears_the_line() {
    let t = Test::new();
    let mut cmd = t.command();
    cmd.arg("repl").env("TERM", "xterm");
    let mut p = rexpect::session::spawn_command(cmd, Some(10_000)).expect("spawn harun repl");
    // A fresh prompt, not a redraw of the line being edited: rustyline turns bracketed
    // paste on (ESC[?2004h) when it enters raw mode for a new line. Typing before that
    // could be flushed with the mode switch, as it would be for a person.
    // A result is a line of its own: "3" alone would match rustyline's escape sequences
    // (`\x1b[23C`, `\x1b[?2004l`) before anything is printed.
    let result = |p: &mut rexpect::session::PtySession, value: &str| {
        p.exp_string(&format!("\r\n{value}\r\n")).unwrap();
    };
    let fresh_prompt = |p: &mut rexpect::session::PtySession| {
        p.exp_string("\x1b[?2004h").unwrap();
        p.exp_string("harun> ").unwrap();
    };
    fresh_prompt(&mut p);
    // Tab completes a module function.
    p.send("log::inf").unwrap();
    p.send("\t").unwrap();
    p.flush().unwrap();
    p.exp_string("log::info").unwrap();
    // Ctrl-C throws the half-typed line away and gives a new prompt.
    p.send_control('c').unwrap();
    fresh_prompt(&mut p);
    p.send_line("40 + 2").unwrap();
    result(&mut p, "42");
    fresh_prompt(&mut p);
    // Multi-line input through the validator.
    p.send_line("fn triple(x) {").unwrap();
    p.send_line("  x * 3").unwrap();
    p.send_line("}").unwrap();
    fresh_prompt(&mut p);
    p.send_line("triple(5)").unwrap();
    result(&mut p, "15");
    fresh_prompt(&mut p);
    // Tab completes a variable in scope.
    p.send_line("let controller_count = 3;").unwrap();
    fresh_prompt(&mut p);
    p.send("control").unwrap();
    p.send("\t").unwrap();
    p.flush().unwrap();
    p.exp_string("controller_count").unwrap();
    p.send_line("").unwrap();
    result(&mut p, "3");
    fresh_prompt(&mut p);
    // An error does not end the session.
    p.send_line("nope()").unwrap();
    p.exp_string("unknown_function").unwrap();
    fresh_prompt(&mut p);
    p.send_line("1 + 1").unwrap();
    result(&mut p, "2");
    fresh_prompt(&mut p);
    // Ctrl-C stops a running call without leaving the REPL.
    // The call is running once it has printed (the typed line's echo has `waiting")`).
    p.send_line("print(\"waiting\"); sleep(30)").unwrap();
    p.exp_string("waiting\r\n").unwrap();
    p.send_control('c').unwrap();
    p.exp_string("harun::interrupted").unwrap();
    fresh_prompt(&mut p);
    p.send_line("6 * 7").unwrap();
    result(&mut p, "42");
    fresh_prompt(&mut p);
    // Ctrl-D leaves, and the history was saved.
    p.send_control('d').unwrap();
    p.exp_eof().unwrap();
    // The history is written before the process ends.
    p.process.wait().unwrap();
    let history = std::fs::read_to_string(t.path(".state/harun/history")).unwrap_or_default();
    assert!(history.contains("triple(5)"), "history: {history}");
}
