//! Is this input unfinished? Then Enter continues it on a new line instead of running it.

use rhai::{Engine, LexError, ParseErrorType};

/// True when `input` fails to parse only because it ends too early: an open `{`, `[` or
/// `(`, or an unterminated string. A real syntax error is complete (and gets reported).
pub fn is_incomplete(engine: &Engine, input: &str) -> bool {
    if input.trim_start().starts_with(':') {
        return false;
    }
    let Err(err) = engine.compile(input) else {
        return false;
    };
    // The parser stops where the text ends: past the last character of the last line.
    let trimmed = input.trim_end();
    let last_line = trimmed.lines().count().max(1);
    let last_len = trimmed.lines().last().map_or(0, |l| l.chars().count());
    let at_end = match (err.1.line(), err.1.position()) {
        (None, _) => true,
        (Some(line), _) if line > last_line => true,
        (Some(line), Some(col)) => line == last_line && col > last_len,
        (Some(_), None) => false,
    };
    match &*err.0 {
        ParseErrorType::UnexpectedEOF => true,
        ParseErrorType::MissingToken(..) => at_end,
        ParseErrorType::BadInput(LexError::UnterminatedString) => true,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_blocks_are_incomplete() {
        let engine = Engine::new();
        assert!(is_incomplete(&engine, "fn f(x) {\n"));
        assert!(is_incomplete(&engine, "let a = [1,\n2,\n"));
        assert!(is_incomplete(&engine, "let s = \"abc"));
        assert!(is_incomplete(&engine, "fn f(x) {\n  x * 2\n"));
        assert!(!is_incomplete(&engine, "fn f(x) {\n x + 1\n}\n"));
        assert!(!is_incomplete(&engine, "let y = foo(1;"));
        assert!(!is_incomplete(&engine, "1 +* 2"));
    }
}
