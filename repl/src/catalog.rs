//! What the REPL knows about the built-ins: names to complete, doc comments for `:help`,
//! read once from the engine's own metadata.

use std::collections::BTreeMap;

use rhai::Engine;
use serde_json::Value;

const KEYWORDS: &[&str] = &[
    "let", "const", "fn", "if", "else", "while", "loop", "for", "in", "return", "throw", "try",
    "catch", "break", "continue", "import", "export", "true", "false", "topology", "params",
    "args",
];

struct Entry {
    signatures: Vec<String>,
    doc: String,
}

pub struct Catalog {
    entries: BTreeMap<String, Entry>,
    modules: Vec<String>,
}

impl Catalog {
    pub fn new(engine: &Engine) -> Catalog {
        let meta: Value = engine
            .gen_fn_metadata_to_json(false)
            .ok()
            .and_then(|json| serde_json::from_str(&json).ok())
            .unwrap_or_default();
        let mut catalog = Catalog {
            entries: BTreeMap::new(),
            modules: Vec::new(),
        };
        for f in meta["functions"].as_array().into_iter().flatten() {
            catalog.add("", f);
        }
        for (module, m) in meta["modules"].as_object().into_iter().flatten() {
            catalog.modules.push(module.clone());
            for f in m["functions"].as_array().into_iter().flatten() {
                catalog.add(&format!("{module}::"), f);
            }
        }
        catalog
    }

    fn add(&mut self, prefix: &str, f: &Value) {
        let Some(name) = f["name"].as_str() else {
            return;
        };
        if !name.starts_with(|c: char| c.is_alphabetic() || c == '_') {
            return; // operators are not typed by name
        }
        let entry = self
            .entries
            .entry(format!("{prefix}{name}"))
            .or_insert_with(|| Entry {
                signatures: Vec::new(),
                doc: String::new(),
            });
        entry.signatures.push(format!(
            "{prefix}{}",
            f["signature"].as_str().unwrap_or(name)
        ));
        if entry.doc.is_empty() {
            let lines: Vec<String> = f["docComments"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .flat_map(str::lines)
                .map(|l| {
                    let l = l.trim_start().trim_start_matches("///");
                    l.strip_prefix(' ').unwrap_or(l).to_string()
                })
                .collect();
            entry.doc = lines.join("\n");
        }
    }

    /// Every name to complete: functions, `module::function`, keywords.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.entries
            .keys()
            .map(String::as_str)
            .chain(KEYWORDS.iter().copied())
    }

    /// `:help NAME`: signatures and the doc comment.
    pub fn help(&self, name: &str) -> String {
        if let Some(entry) = self.entries.get(name) {
            let mut out = entry.signatures.join("\n");
            out.push_str("\n\n");
            out.push_str(&entry.doc);
            return out;
        }
        if self.modules.iter().any(|m| m == name) {
            let prefix = format!("{name}::");
            let names: Vec<&str> = self
                .entries
                .keys()
                .filter(|k| k.starts_with(&prefix))
                .map(String::as_str)
                .collect();
            return format!("module {name}: {}", names.join(", "));
        }
        format!("no built-in named `{name}` (try :help for the list of modules)")
    }

    /// `:help` alone.
    pub fn overview(&self) -> String {
        format!(
            "Type Rhai code; Enter runs it, an open {{ continues on the next line.\n\
             :help NAME   the signature and documentation of a built-in (e.g. :help log::info)\n\
             :vars        the variables in scope\n\
             :quit        leave (or Ctrl-D); Ctrl-C clears the line or stops a running call\n\
             Globals: topology, params, args\n\
             Modules: {}",
            self.modules.join(", ")
        )
    }
}
