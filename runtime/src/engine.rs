//! One engine builder for script runs, `-e`, `check` and the REPL, so all four see the same
//! language, limits, modules and globals.

use std::path::Path;

use rhai::{Array, Dynamic, Engine, Scope};

use crate::builtins::{core_api, secret_sources, secret_type};
use crate::diagnostic::interrupt_error;
use crate::secret::Secret;
use crate::Context;

type Register = Box<dyn Fn(&mut Engine)>;

/// Builds the engine for a run: limits, the core API, and the modules added with `with`.
pub struct EngineBuilder {
    context: Context,
    modules: Vec<Register>,
}

impl EngineBuilder {
    pub fn new(context: Context) -> EngineBuilder {
        EngineBuilder {
            context,
            modules: Vec::new(),
        }
    }

    /// Adds modules: the binary passes the stdlib's registration function here.
    pub fn with(mut self, register: impl Fn(&mut Engine) + 'static) -> EngineBuilder {
        self.modules.push(Box::new(register));
        self
    }

    pub fn build(self) -> Engine {
        let mut engine = Engine::new();
        let context = self.context;

        // Limits: generous for operations scripts, but a runaway recursion or a string
        // doubling in a loop fails with a clear error instead of eating the controller's RAM.
        engine
            .set_max_call_levels(64)
            .set_max_expr_depths(128, 64)
            .set_max_string_size(64 << 20)
            .set_max_array_size(1 << 20)
            .set_max_map_size(1 << 20)
            .set_max_modules(256)
            .set_fail_on_invalid_map_property(true);

        // Imports resolve against the script's directory, also from nested modules:
        // `import "lib/consul"` from scripts/consul-ha.rhai loads scripts/lib/consul.rhai.
        let base = absolute(&context.options().base_dir);
        let script = Path::new(&context.options().script);
        let main = script.is_file().then_some(script);
        engine.set_module_resolver(crate::modules::ScriptResolver::new(&base, main));

        let out = context.clone();
        engine.on_print(move |text| out.output().line(text));
        engine.on_debug(|text, source, pos| match (source, pos.line()) {
            (Some(source), Some(line)) => {
                tracing::debug!(target: "script", "{source}:{line}: {text}")
            }
            _ => tracing::debug!(target: "script", "{text}"),
        });

        // The script stops at its next step once the run is cancelled (Ctrl-C, SIGTERM,
        // --timeout); calls blocked in I/O are woken by the bridge itself.
        let cancel = context.clone();
        engine.on_progress(move |_| {
            cancel.bridge().cancelled().map(|interrupt| {
                match *interrupt_error(interrupt, "", rhai::Position::NONE) {
                    rhai::EvalAltResult::ErrorTerminated(value, _)
                    | rhai::EvalAltResult::ErrorRuntime(value, _) => value,
                    _ => Dynamic::UNIT,
                }
            })
        });

        engine.register_type_with_name::<Secret>("Secret");
        engine.register_global_module(rhai::exported_module!(core_api).into());
        engine.register_global_module(rhai::exported_module!(secret_type).into());
        engine.register_static_module("secret", rhai::exported_module!(secret_sources).into());
        for register in &self.modules {
            register(&mut engine);
        }
        engine.set_default_tag(Dynamic::from(context));
        engine
    }
}

/// The globals every script sees: `topology`, `params` and `args`.
pub fn globals(context: &Context) -> Scope<'static> {
    let options = context.options();
    let mut scope = Scope::new();
    let topology = options
        .topology
        .as_ref()
        .map_or_else(empty_topology, |t| t.to_dynamic());
    scope.push_constant("topology", topology);
    scope.push_constant("params", options.params.clone());
    let args: Array = options.args.iter().map(|a| a.clone().into()).collect();
    scope.push_constant("args", args);
    scope
}

fn empty_topology() -> Dynamic {
    let mut map = rhai::Map::new();
    map.insert("file".into(), Dynamic::UNIT);
    map.insert("hosts".into(), Array::new().into());
    map.into()
}

fn absolute(path: &Path) -> std::path::PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}
