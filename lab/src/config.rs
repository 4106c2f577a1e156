//! Reading a server's HCL config the way the real agent does: known keys only, types
//! checked, errors in the agent's own words.

use std::collections::BTreeMap;
use std::path::Path;

use hcl::Value;

/// A parsed config file: top-level keys to values (blocks become objects).
pub struct ConfigFile {
    pub path: String,
    pub root: hcl::Map<String, Value>,
}

impl ConfigFile {
    pub fn load(path: &Path) -> Result<ConfigFile, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("Error reading {}: {e}", path.display()))?;
        let root: hcl::Map<String, Value> =
            hcl::from_str(&text).map_err(|e| format!("Error parsing {}: {e}", path.display()))?;
        Ok(ConfigFile {
            path: path.display().to_string(),
            root,
        })
    }

    /// Fails on any key not in `known` (dotted paths for nested blocks, `block.*` for
    /// blocks whose content is free).
    pub fn check_keys(&self, known: &[&str], error: impl Fn(&str) -> String) -> Result<(), String> {
        fn walk(
            prefix: &str,
            map: &hcl::Map<String, Value>,
            known: &[&str],
            bad: &mut Vec<String>,
        ) {
            for (key, value) in map {
                let path = if prefix.is_empty() {
                    key.clone()
                } else {
                    format!("{prefix}.{key}")
                };
                if known.contains(&format!("{path}.*").as_str()) {
                    continue;
                }
                if let Value::Object(inner) = value {
                    if known.contains(&path.as_str())
                        && !known.iter().any(|k| k.starts_with(&format!("{path}.")))
                    {
                        continue;
                    }
                    if known.iter().any(|k| k.starts_with(&format!("{path}."))) {
                        walk(&path, inner, known, bad);
                        continue;
                    }
                }
                if !known.contains(&path.as_str()) {
                    bad.push(path);
                }
            }
        }
        let mut bad = Vec::new();
        walk("", &self.root, known, &mut bad);
        match bad.first() {
            Some(key) => Err(error(key)),
            None => Ok(()),
        }
    }

    pub fn get(&self, path: &str) -> Option<&Value> {
        let mut parts = path.split('.');
        let mut value = self.root.get(parts.next()?)?;
        for part in parts {
            value = value.as_object()?.get(part)?;
        }
        Some(value)
    }

    pub fn string(&self, path: &str) -> Result<Option<String>, String> {
        match self.get(path) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(other) => Err(format!("{path}: expected a string, got {other}")),
        }
    }

    pub fn bool(&self, path: &str) -> Result<Option<bool>, String> {
        match self.get(path) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(Value::String(s)) if s == "true" || s == "false" => Ok(Some(s == "true")),
            Some(other) => Err(format!("{path}: expected a bool, got {other}")),
        }
    }

    pub fn int(&self, path: &str) -> Result<Option<i64>, String> {
        match self.get(path) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Number(n)) => n
                .as_i64()
                .map(Some)
                .ok_or_else(|| format!("{path}: expected an integer")),
            Some(other) => Err(format!("{path}: expected an integer, got {other}")),
        }
    }

    pub fn strings(&self, path: &str) -> Result<Vec<String>, String> {
        match self.get(path) {
            None | Some(Value::Null) => Ok(Vec::new()),
            Some(Value::Array(items)) => items
                .iter()
                .map(|v| match v {
                    Value::String(s) => Ok(s.clone()),
                    other => Err(format!("{path}: expected strings, got {other}")),
                })
                .collect(),
            Some(other) => Err(format!("{path}: expected a list of strings, got {other}")),
        }
    }

    /// Labeled blocks such as `storage "raft" { ... }`: label to body.
    pub fn labeled(&self, ident: &str) -> BTreeMap<String, hcl::Map<String, Value>> {
        let mut out = BTreeMap::new();
        if let Some(Value::Object(map)) = self.root.get(ident) {
            for (label, body) in map {
                if let Value::Object(body) = body {
                    out.insert(label.clone(), body.clone());
                }
            }
        }
        out
    }
}

/// `host`, `host:port` or `[v6]:port` to `http://host:<http_port>`: twins answer
/// membership on their HTTP port, whatever gossip port the address names.
/// Where another agent's twin answers: `join_url`, over https when this agent's API is.
pub fn peer_url(entry: &str, http_port: u16, tls: bool) -> String {
    let url = join_url(entry, http_port);
    if tls {
        url.replacen("http://", "https://", 1)
    } else {
        url
    }
}

pub fn join_url(entry: &str, http_port: u16) -> String {
    let host = if let Some(rest) = entry.strip_prefix('[') {
        rest.split(']').next().unwrap_or(rest).to_string()
    } else {
        entry.split(':').next().unwrap_or(entry).to_string()
    };
    format!("http://{host}:{http_port}")
}
