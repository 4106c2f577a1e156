//! The `hcl` module: read HCL into maps, edit config files in place keeping every comment,
//! and diff two texts.
//!
//! ```rhai
//! let doc = hcl::edit(h.read("/etc/consul.d/consul.hcl"));
//! doc.set("bootstrap_expect", 3);
//! doc.set("retry_join", ["controller1", "controller2", "controller3"]);
//! h.write("/etc/consul.d/consul.hcl", doc.to_string());
//! ```

use harun_runtime::codes;
use harun_runtime::Secret;
use rhai::plugin::*;
use rhai::Dynamic;

use super::edit::Document;

fn fail(ctx: &NativeCallContext, message: String) -> Box<EvalAltResult> {
    harun_runtime::error::call_error(ctx, codes::HCL_EDIT, message)
}

/// A script value as an HCL value. A Secret becomes its text: the file needs it, and the
/// run's redactor still masks it in every output, diffs included.
pub fn to_hcl(value: &Dynamic) -> Result<hcl::Value, String> {
    if value.is_unit() {
        return Ok(hcl::Value::Null);
    }
    if let Ok(b) = value.as_bool() {
        return Ok(hcl::Value::from(b));
    }
    if let Ok(i) = value.as_int() {
        return Ok(hcl::Value::from(i));
    }
    if let Ok(f) = value.as_float() {
        return Ok(hcl::Value::from(f));
    }
    if value.is_string() {
        return Ok(hcl::Value::from(
            value.clone().into_string().unwrap_or_default(),
        ));
    }
    if let Some(secret) = value.read_lock::<Secret>() {
        return Ok(hcl::Value::from(secret.expose().to_string()));
    }
    if let Some(array) = value.read_lock::<rhai::Array>() {
        return array
            .iter()
            .map(to_hcl)
            .collect::<Result<Vec<_>, _>>()
            .map(hcl::Value::Array);
    }
    if let Some(map) = value.read_lock::<rhai::Map>() {
        let mut out = hcl::Map::new();
        for (k, v) in map.iter() {
            out.insert(k.to_string(), to_hcl(v)?);
        }
        return Ok(hcl::Value::Object(out));
    }
    Err(format!("a {} cannot be written as HCL", value.type_name()))
}

/// A map as the entries of a block body, in the map's order.
fn entries(map: &rhai::Map) -> Result<Vec<(String, hcl::Value)>, String> {
    map.iter()
        .map(|(k, v)| Ok((k.to_string(), to_hcl(v)?)))
        .collect()
}

#[export_module]
pub mod hcl_api {
    use harun_runtime::error::call_error;
    use harun_runtime::plan::unified_diff;
    use rhai::Map;

    use super::super::edit::body_from;
    use super::Document;
    use super::{entries, fail, to_hcl};

    pub type HclDocument = Document;

    /// Reads HCL text into a map: attributes as values, blocks as nested maps keyed by
    /// identifier and labels (`m.storage.raft.path`), repeated blocks as arrays. Comments
    /// are dropped; use `hcl::edit` to change a file.
    #[rhai_fn(return_raw)]
    pub fn parse(ctx: NativeCallContext, text: &str) -> Result<Dynamic, Box<EvalAltResult>> {
        // The error names the place, never quotes the line: it may hold a token.
        let value: hcl::Value = hcl::from_str(text).map_err(|e| {
            let message = match &e {
                hcl::Error::Parse(p) => format!(
                    "line {}, column {}: {}",
                    p.location().line(),
                    p.location().column(),
                    p.message()
                ),
                other => other.to_string(),
            };
            call_error(&ctx, codes::HCL_SYNTAX, format!("invalid HCL at {message}"))
        })?;
        rhai::serde::to_dynamic(&value)
    }

    /// Opens HCL text for editing in place: every comment and untouched line is kept.
    #[rhai_fn(return_raw)]
    pub fn edit(ctx: NativeCallContext, text: &str) -> Result<HclDocument, Box<EvalAltResult>> {
        Document::parse(text)
            .map_err(|e| call_error(&ctx, codes::HCL_SYNTAX, format!("invalid HCL at {e}")))
    }

    /// The document's text.
    #[rhai_fn(global, name = "to_string", pure)]
    pub fn to_string(doc: &mut HclDocument) -> String {
        doc.render()
    }

    /// The document's text.
    #[rhai_fn(global, name = "to_debug", pure)]
    pub fn to_debug(doc: &mut HclDocument) -> String {
        doc.render()
    }

    /// The document's text.
    #[rhai_fn(global, pure)]
    pub fn render(doc: &mut HclDocument) -> String {
        doc.render()
    }

    /// The value of the attribute at `path` (`"server.bootstrap_expect"`,
    /// `"storage[raft].path"`), or `()` when there is none.
    #[rhai_fn(global, name = "get", pure, return_raw)]
    pub fn get(
        ctx: NativeCallContext,
        doc: &mut HclDocument,
        path: &str,
    ) -> Result<Dynamic, Box<EvalAltResult>> {
        match doc.get(path).map_err(|e| fail(&ctx, e))? {
            Some(value) => rhai::serde::to_dynamic(&value),
            None => Ok(Dynamic::UNIT),
        }
    }

    /// Sets the attribute at `path` to `value`, keeping its comment; creates it (and the
    /// blocks on the way) when absent. Returns true when the text changed.
    #[rhai_fn(global, name = "set", return_raw)]
    pub fn set(
        ctx: NativeCallContext,
        doc: &mut HclDocument,
        path: &str,
        value: Dynamic,
    ) -> Result<bool, Box<EvalAltResult>> {
        let value = to_hcl(&value).map_err(|e| fail(&ctx, format!("`{path}`: {e}")))?;
        doc.set(path, &value).map_err(|e| fail(&ctx, e))
    }

    /// Removes the attribute or block at `path` (`"storage[file]"`); true when it was there.
    #[rhai_fn(global, name = "remove", return_raw)]
    pub fn remove(
        ctx: NativeCallContext,
        doc: &mut HclDocument,
        path: &str,
    ) -> Result<bool, Box<EvalAltResult>> {
        doc.remove(path).map_err(|e| fail(&ctx, e))
    }

    /// True when the block at `path` exists (`"storage[raft]"`).
    #[rhai_fn(global, name = "has_block", pure, return_raw)]
    pub fn has_block(
        ctx: NativeCallContext,
        doc: &mut HclDocument,
        path: &str,
    ) -> Result<bool, Box<EvalAltResult>> {
        doc.has_block(path).map_err(|e| fail(&ctx, e))
    }

    /// Adds or replaces the block at `path` with `content`: values become attributes, maps
    /// nested blocks, arrays of maps repeated blocks (`retry_join: [#{..}, #{..}]`). A
    /// replaced block keeps its place and leading comment. True when the text changed.
    #[rhai_fn(global, name = "set_block", return_raw)]
    pub fn set_block(
        ctx: NativeCallContext,
        doc: &mut HclDocument,
        path: &str,
        content: Map,
    ) -> Result<bool, Box<EvalAltResult>> {
        let body = entries(&content)
            .and_then(|e| body_from(&e))
            .map_err(|e| fail(&ctx, e))?;
        doc.set_block(path, &body).map_err(|e| fail(&ctx, e))
    }

    /// Replaces the block at `old` by a block at `new` with `content`, in the old one's
    /// place with its comment: `doc.replace_block("storage[file]", "storage[raft]", #{..})`.
    /// Adds it when neither exists. True when the text changed.
    #[rhai_fn(global, name = "replace_block", return_raw)]
    pub fn replace_block(
        ctx: NativeCallContext,
        doc: &mut HclDocument,
        old: &str,
        new: &str,
        content: Map,
    ) -> Result<bool, Box<EvalAltResult>> {
        let body = entries(&content)
            .and_then(|e| body_from(&e))
            .map_err(|e| fail(&ctx, e))?;
        doc.replace_block(old, new, &body)
            .map_err(|e| fail(&ctx, e))
    }

    /// A unified diff from `old` to `new`, empty when they are the same.
    pub fn diff(old: &str, new: &str) -> String {
        if old == new {
            String::new()
        } else {
            unified_diff("file", old, new)
        }
    }
}
