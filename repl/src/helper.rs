//! The rustyline helper: completion and multi-line validation.

use std::sync::Arc;

use parking_lot::Mutex;

use rustyline::completion::{Completer, Pair};
use rustyline::validate::{ValidationContext, ValidationResult, Validator};
use rustyline::{Helper, Highlighter, Hinter};

use crate::catalog::Catalog;

#[derive(Helper, Hinter, Highlighter)]
pub struct ReplHelper {
    catalog: Arc<Catalog>,
    variables: Arc<Mutex<Vec<String>>>,
    /// Only to parse input for the validator; never evaluates.
    parser: rhai::Engine,
}

impl ReplHelper {
    pub fn new(catalog: Arc<Catalog>, variables: Arc<Mutex<Vec<String>>>) -> ReplHelper {
        ReplHelper {
            catalog,
            variables,
            parser: rhai::Engine::new_raw(),
        }
    }
}

impl Completer for ReplHelper {
    type Candidate = Pair;

    fn complete(
        &self,
        line: &str,
        pos: usize,
        _ctx: &rustyline::Context<'_>,
    ) -> rustyline::Result<(usize, Vec<Pair>)> {
        let before = &line[..pos];
        let start = before
            .rfind(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':'))
            .map_or(0, |i| i + 1);
        let word = &before[start..];
        if word.is_empty() {
            return Ok((pos, Vec::new()));
        }
        let variables = self.variables.lock();
        let mut matches: Vec<String> = self
            .catalog
            .names()
            .chain(variables.iter().map(String::as_str))
            .filter(|name| name.starts_with(word))
            .map(str::to_string)
            .collect();
        matches.sort();
        matches.dedup();
        Ok((
            start,
            matches
                .into_iter()
                .map(|m| Pair {
                    display: m.clone(),
                    replacement: m,
                })
                .collect(),
        ))
    }
}

impl Validator for ReplHelper {
    fn validate(&self, ctx: &mut ValidationContext) -> rustyline::Result<ValidationResult> {
        if crate::incomplete::is_incomplete(&self.parser, ctx.input()) {
            Ok(ValidationResult::Incomplete)
        } else {
            Ok(ValidationResult::Valid(None))
        }
    }
}
