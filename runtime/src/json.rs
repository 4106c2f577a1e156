//! Script values as JSON (`--format json`) and as text: secrets stay `<secret>`.

use rhai::Dynamic;
use serde_json::{Map, Number, Value};

use crate::secret::{Secret, REDACTED};

pub fn to_json(value: &Dynamic) -> Value {
    if value.is_unit() {
        return Value::Null;
    }
    if let Ok(b) = value.as_bool() {
        return Value::Bool(b);
    }
    if let Ok(i) = value.as_int() {
        return Value::Number(i.into());
    }
    if let Ok(f) = value.as_float() {
        return Number::from_f64(f).map_or(Value::Null, Value::Number);
    }
    if value.is_string() {
        return Value::String(value.clone().into_string().unwrap_or_default());
    }
    if value.is::<Secret>() {
        return Value::String(REDACTED.to_string());
    }
    if let Some(array) = value.read_lock::<rhai::Array>() {
        return Value::Array(array.iter().map(to_json).collect());
    }
    if let Some(map) = value.read_lock::<rhai::Map>() {
        let mut out = Map::new();
        for (k, v) in map.iter() {
            out.insert(k.to_string(), to_json(v));
        }
        return Value::Object(out);
    }
    Value::String(value.to_string())
}

/// A scalar as text: secrets as `<secret>`, strings bare, other values as Rhai prints
/// them (a custom type would otherwise print its Rust type name).
pub fn to_text(value: &Dynamic) -> String {
    if value.is::<Secret>() {
        REDACTED.to_string()
    } else {
        value.to_string()
    }
}

/// A value as the script's `print` shows it: through the engine's `to_string`, so a Secret
/// nested in a map or array still prints as `<secret>`.
pub fn script_text(ctx: &rhai::NativeCallContext, value: Dynamic) -> String {
    if value.is_string() {
        return value.into_string().unwrap_or_default();
    }
    if value.is::<Secret>() {
        return REDACTED.to_string();
    }
    ctx.call_native_fn::<String>("to_string", (value.clone(),))
        .unwrap_or_else(|_| to_text(&value))
}
