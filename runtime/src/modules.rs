//! How scripts are read and their imports resolved: `import "lib/consul"` loads
//! `<script dir>/lib/consul.rhai`, from the main script and from modules alike.
//!
//! Script text is taken as editors and cron users write it: a UTF-8 byte-order mark is
//! dropped, and a `#!/usr/bin/env harun` first line becomes an empty line (so line numbers
//! stay true). An import cycle (a module importing itself, or two importing each other)
//! is an error naming the chain, not a stack overflow.
//!
//! Two functions of one name and number of parameters in two files of a run (the main
//! script and its modules) are refused at the import: Rhai 1.27 keeps one cache of
//! resolved calls across modules (a call into a module pushes no new cache level), so a
//! call to one may run the other. Seen here: nomad's `write_configs` ran consul's, and
//! wrote nomad.hcl's text into consul.hcl.

use parking_lot::Mutex;
use std::cell::RefCell;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

use rhai::{Engine, EvalAltResult, GlobalRuntimeState, Module, ModuleResolver, Position, Scope};

/// A loaded module, shared by every script that imports it.
type SharedModule = rhai::Shared<Module>;

use crate::codes;
use crate::error::script_error;

/// Script text as the engine should see it: no byte-order mark, no shebang.
pub fn script_text(raw: &str) -> String {
    let text = raw.strip_prefix('\u{feff}').unwrap_or(raw);
    if text.starts_with("#!") {
        // The line's end stays, so every later line keeps its number.
        return text
            .find('\n')
            .map_or_else(String::new, |n| text[n..].to_string());
    }
    text.to_string()
}

thread_local! {
    /// The modules being loaded on this thread, outermost first: the import chain.
    static LOADING: RefCell<Vec<PathBuf>> = const { RefCell::new(Vec::new()) };
}

/// Resolves imports against one directory, each module loaded once per run.
pub struct ScriptResolver {
    base: PathBuf,
    /// The main script, the chain's first link when a module imports it back.
    main: Option<PathBuf>,
    cache: Mutex<HashMap<PathBuf, SharedModule>>,
    /// Every script-defined function of the run so far, by name and number of parameters:
    /// where it is defined (file and line).
    defined: Mutex<HashMap<(String, usize), Definition>>,
}

/// Where a script-defined function is: `lib/consul.rhai line 122`.
#[derive(Clone, PartialEq)]
struct Definition {
    file: String,
    line: Option<usize>,
}

impl std::fmt::Display for Definition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.line {
            Some(line) => write!(f, "{} line {line}", self.file),
            None => f.write_str(&self.file),
        }
    }
}

/// The line of `fn name(` (or `private fn name(`) in `text`, counted from 1.
fn line_of(text: &str, name: &str) -> Option<usize> {
    let wanted = format!("fn {name}(");
    text.lines()
        .position(|l| {
            let l = l.trim_start();
            l.strip_prefix("private ").unwrap_or(l).starts_with(&wanted)
        })
        .map(|i| i + 1)
}

impl ScriptResolver {
    pub fn new(base: &Path, main: Option<&Path>) -> ScriptResolver {
        ScriptResolver {
            base: base.to_path_buf(),
            main: main.map(|m| m.canonicalize().unwrap_or_else(|_| m.to_path_buf())),
            cache: Mutex::new(HashMap::new()),
            defined: Mutex::new(HashMap::new()),
        }
    }

    /// The name a file goes by in messages: relative to the scripts' directory.
    fn label(&self, file: &Path) -> String {
        file.strip_prefix(&self.base)
            .unwrap_or(file)
            .display()
            .to_string()
    }

    /// Records the functions of a module about to run, refusing one whose name and number
    /// of parameters another file of the run already defines (see the module's docs). The
    /// functions running now (the main script's, an importing module's) are recorded first.
    fn record_functions(
        &self,
        global: &GlobalRuntimeState,
        ast: &rhai::AST,
        file: &Path,
        text: &str,
        pos: Position,
    ) -> Result<(), Box<EvalAltResult>> {
        let mut defined = self.defined.lock();
        let main = self.main.as_ref().map_or_else(
            || Definition {
                file: "the script".into(),
                line: None,
            },
            |m| Definition {
                file: self.label(m),
                line: None,
            },
        );
        let main_text = self
            .main
            .as_ref()
            .and_then(|m| std::fs::read_to_string(m).ok());
        for lib in &global.lib {
            for (_, _, name, params, _) in lib.iter_script_fn_info() {
                defined
                    .entry((name.to_string(), params))
                    .or_insert_with(|| Definition {
                        line: main_text.as_deref().and_then(|t| line_of(t, name)),
                        ..main.clone()
                    });
            }
        }
        let here = self.label(file);
        for f in ast.iter_functions() {
            let at = Definition {
                file: here.clone(),
                line: line_of(text, f.name),
            };
            let key = (f.name.to_string(), f.params.len());
            match defined.get(&key) {
                Some(other) if other.file != at.file => {
                    return Err(script_error(
                        codes::SCRIPT_FUNCTION_CLASH,
                        format!(
                            "fn {}, {} parameter(s), at {at} is also defined at {other}: rename one \
                             (Rhai may call either for the other across modules)",
                            f.name,
                            f.params.len()
                        ),
                        pos,
                    ));
                }
                Some(_) => {}
                None => {
                    defined.insert(key, at);
                }
            }
        }
        Ok(())
    }

    fn file_of(&self, path: &str) -> PathBuf {
        let mut file = self.base.join(path);
        file.set_extension("rhai");
        file
    }

    /// `a.rhai -> b.rhai -> a.rhai`, the names relative to the scripts' directory.
    fn chain(&self, loading: &[PathBuf], again: &Path) -> String {
        let name = |p: &Path| {
            p.strip_prefix(&self.base)
                .unwrap_or(p)
                .display()
                .to_string()
        };
        let mut links: Vec<String> = self.main.iter().map(|m| name(m)).collect();
        links.extend(loading.iter().map(|p| name(p)));
        links.push(name(again));
        // A cycle through the main script starts there; one among modules, at its start.
        let start = links.iter().position(|l| *l == name(again)).unwrap_or(0);
        links[start..].join(" -> ")
    }

    fn load(
        &self,
        engine: &Engine,
        global: &mut GlobalRuntimeState,
        path: &str,
        file: &Path,
        pos: Position,
    ) -> Result<SharedModule, Box<EvalAltResult>> {
        let raw = std::fs::read_to_string(file).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => {
                Box::new(EvalAltResult::ErrorModuleNotFound(path.to_string(), pos))
            }
            _ => script_error(
                codes::SCRIPT_READ,
                format!("cannot read the module {}: {e}", file.display()),
                pos,
            ),
        })?;
        let in_module = |err| Box::new(EvalAltResult::ErrorInModule(path.to_string(), err, pos));
        let text = script_text(&raw);
        let mut ast = engine.compile(&text).map_err(|e| in_module(e.into()))?;
        ast.set_source(path);
        self.record_functions(global, &ast, file, &text, pos)?;
        let module = Module::eval_ast_as_new_raw(engine, &mut Scope::new(), global, &ast)
            .map_err(in_module)?;
        Ok(module.into())
    }
}

impl ModuleResolver for ScriptResolver {
    fn resolve_raw(
        &self,
        engine: &Engine,
        global: &mut GlobalRuntimeState,
        _scope: &mut Scope,
        path: &str,
        pos: Position,
    ) -> Result<SharedModule, Box<EvalAltResult>> {
        let file = self.file_of(path);
        let key = file.canonicalize().unwrap_or_else(|_| file.clone());
        let cached = self.cache.lock().get(&key).cloned();
        if let Some(module) = cached {
            return Ok(module);
        }
        let cycle = LOADING.with_borrow(|loading| {
            (loading.contains(&key) || self.main.as_ref() == Some(&key))
                .then(|| self.chain(loading, &key))
        });
        if let Some(chain) = cycle {
            return Err(script_error(
                codes::SCRIPT_IMPORT_CYCLE,
                format!("import cycle: {chain}"),
                pos,
            ));
        }
        LOADING.with_borrow_mut(|loading| loading.push(key.clone()));
        let loaded = self.load(engine, global, path, &file, pos);
        LOADING.with_borrow_mut(|loading| loading.pop());
        let module = loaded?;
        self.cache.lock().insert(key, module.clone());
        Ok(module)
    }

    fn resolve(
        &self,
        engine: &Engine,
        _source: Option<&str>,
        path: &str,
        pos: Position,
    ) -> Result<SharedModule, Box<EvalAltResult>> {
        let mut global = engine.new_global_runtime_state();
        self.resolve_raw(engine, &mut global, &mut Scope::new(), path, pos)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_shebang_and_a_byte_order_mark_are_dropped_and_lines_keep_their_numbers() {
        assert_eq!(
            script_text("#!/usr/bin/env harun\nprint(1)\n"),
            "\nprint(1)\n"
        );
        assert_eq!(script_text("\u{feff}print(1)"), "print(1)");
        assert_eq!(script_text("\u{feff}#!/usr/bin/env harun\nx"), "\nx");
        assert_eq!(script_text("print(1)"), "print(1)");
    }
}
