//! Errors raised by built-ins: a Rhai runtime error whose value is a map with a stable
//! `code` and a `message`, at the script position of the call.
//!
//! Scripts can catch them and branch on `e.code` (the prose may improve, the code stays);
//! the diagnostic renderer prints both.

use crate::codes;
use rhai::{Dynamic, EvalAltResult, Map, NativeCallContext, Position};

/// A stable error code such as `harun::secret::file_mode`.
pub type ErrorCode = &'static str;

/// A script error with a code, a message and the position of the failing call.
pub fn script_error(code: &str, message: impl Into<String>, pos: Position) -> Box<EvalAltResult> {
    let mut map = Map::new();
    map.insert("code".into(), code.into());
    map.insert("message".into(), message.into().into());
    Box::new(EvalAltResult::ErrorRuntime(Dynamic::from_map(map), pos))
}

/// [`script_error`] at the position of the native call `ctx`.
pub fn call_error(
    ctx: &NativeCallContext,
    code: &str,
    message: impl Into<String>,
) -> Box<EvalAltResult> {
    script_error(code, message, ctx.call_position())
}

/// The `(code, message)` of an error value thrown by a built-in or by `throw`.
pub fn code_and_message(value: &Dynamic) -> (String, String) {
    if let Some(map) = value.read_lock::<Map>() {
        let code = map.get("code").map(|c| c.to_string());
        let message = map.get("message").map(|m| m.to_string());
        if let (Some(code), Some(message)) = (code, message) {
            return (code, message);
        }
    }
    let message = if value.is_string() {
        value.clone().into_string().unwrap_or_default()
    } else {
        crate::json::to_text(value)
    };
    (codes::SCRIPT_THROWN.to_string(), message)
}
