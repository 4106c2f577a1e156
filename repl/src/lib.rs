//! harun-repl placeholder until the REPL lands.
use harun_runtime::Context;
use rhai::{Engine, Scope};

pub fn run(_engine: Engine, _context: Context, _scope: Scope<'static>) -> i32 {
    0
}
