//! Vault's physical storage: `file` in Vault's on-disk layout, or `raft` replicated through
//! the lab's consensus core. Values are raw bytes, already encrypted by the barrier.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use base64::Engine;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::cluster::{Cluster, Operation, TypedState};

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

pub enum Storage {
    File(FileBackend),
    Raft(Arc<Cluster>),
}

impl Storage {
    pub fn kind(&self) -> &'static str {
        match self {
            Storage::File(_) => "file",
            Storage::Raft(_) => "raft",
        }
    }

    pub fn get(&self, key: &str) -> Option<Vec<u8>> {
        match self {
            Storage::File(f) => f.get(key),
            Storage::Raft(c) => c.read(|d| RaftState::entry(d, key)),
        }
    }

    pub async fn put(&self, key: &str, value: &[u8]) -> Result<(), String> {
        match self {
            Storage::File(f) => f.put(key, value),
            Storage::Raft(c) => c
                .write(Op::Put {
                    key: key.to_string(),
                    value: Ciphertext(value.to_vec()),
                })
                .await
                .map(|_| ())
                .map_err(|e| e.to_string()),
        }
    }

    pub async fn delete(&self, key: &str) -> Result<(), String> {
        match self {
            Storage::File(f) => f.delete(key),
            Storage::Raft(c) => c
                .write(Op::Delete {
                    key: key.to_string(),
                })
                .await
                .map(|_| ())
                .map_err(|e| e.to_string()),
        }
    }

    /// Every key under `prefix`, sorted.
    pub fn keys(&self, prefix: &str) -> Vec<String> {
        match self {
            Storage::File(f) => f
                .all_keys()
                .into_iter()
                .filter(|k| k.starts_with(prefix))
                .collect(),
            Storage::Raft(c) => c.read(|d| RaftState::keys_in(d, prefix)),
        }
    }
}

/// Vault's raft FSM (physical/raft/fsm.go): every storage entry by key, its value as the
/// barrier wrote it. The consensus core carries it as JSON, values in base64.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RaftState {
    #[serde(default)]
    pub vault: BTreeMap<String, Ciphertext>,
}

/// A stored value: bytes the barrier encrypted (or the few it keeps in the clear, such as
/// the seal configuration), base64 in JSON.
#[derive(Clone, Debug, PartialEq)]
pub struct Ciphertext(pub Vec<u8>);

impl Serialize for Ciphertext {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&B64.encode(&self.0))
    }
}

impl<'de> Deserialize<'de> for Ciphertext {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        B64.decode(text)
            .map(Ciphertext)
            .map_err(serde::de::Error::custom)
    }
}

impl TypedState for RaftState {}

impl RaftState {
    /// One entry, read alone from the state as held (no need to decode the rest).
    pub fn entry(data: &Value, key: &str) -> Option<Vec<u8>> {
        let value = data.get("vault")?.get(key)?;
        Ciphertext::deserialize(value).ok().map(|c| c.0)
    }

    /// The keys under `prefix`, sorted, from the state as held.
    pub fn keys_in(data: &Value, prefix: &str) -> Vec<String> {
        data.get("vault")
            .and_then(Value::as_object)
            .into_iter()
            .flat_map(|o| o.keys())
            .filter(|k| k.starts_with(prefix))
            .cloned()
            .collect()
    }
}

/// The storage operations raft replicates: Vault's physical `Put` and `Delete`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Op {
    Put {
        key: String,
        value: Ciphertext,
    },
    Delete {
        key: String,
    },
    /// A raft snapshot restored: the whole state replaced by the snapshot's.
    Restore {
        state: Value,
    },
}

/// Why raft storage refuses an operation: only a state it cannot read (what Vault
/// refuses, it refuses before the write reaches raft).
#[derive(Debug, PartialEq, thiserror::Error)]
pub enum StateError {
    #[error("raft: {0}")]
    Unreadable(String),
}

impl Operation for Op {
    type Error = StateError;

    fn apply(self, data: &mut Value, _index: u64) -> Result<Value, StateError> {
        let mut state = match &self {
            Op::Restore { state } => RaftState::from_json(state),
            _ => RaftState::from_json(data),
        }
        .map_err(StateError::Unreadable)?;
        match self {
            Op::Restore { .. } => {}
            Op::Put { key, value } => {
                state.vault.insert(key, value);
            }
            Op::Delete { key } => {
                state.vault.remove(&key);
            }
        }
        *data = state.to_json();
        Ok(Value::Null)
    }
}

/// `storage "file"`: key `a/b/c` lives in `<path>/a/b/_c` as `{"Value":"<base64>"}` and a
/// newline; written through a temp file with mode 0600, directories 0700.
pub struct FileBackend {
    pub root: PathBuf,
}

impl FileBackend {
    fn path_of(&self, key: &str) -> Result<PathBuf, String> {
        if key.split('/').any(|p| p == "..") {
            return Err("path cannot contain parent references".into());
        }
        let (dir, base) = key.rsplit_once('/').unwrap_or(("", key));
        Ok(self.root.join(dir).join(format!("_{base}")))
    }

    pub fn get(&self, key: &str) -> Option<Vec<u8>> {
        let bytes = std::fs::read(self.path_of(key).ok()?).ok()?;
        if bytes.is_empty() {
            return None;
        }
        let entry: Value = serde_json::from_slice(&bytes).ok()?;
        B64.decode(entry["Value"].as_str()?).ok()
    }

    pub fn put(&self, key: &str, value: &[u8]) -> Result<(), String> {
        use std::os::unix::fs::DirBuilderExt;
        let path = self.path_of(key)?;
        let dir = path.parent().expect("a key has a directory");
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| format!("failed to create {}: {e}", dir.display()))?;
        let mut text = serde_json::to_string(&json!({"Value": B64.encode(value)}))
            .expect("an entry serializes");
        text.push('\n');
        crate::cluster::write_state_file(&path, text.as_bytes())
            .map_err(|e| format!("failed to write {}: {e}", path.display()))
    }

    pub fn delete(&self, key: &str) -> Result<(), String> {
        let path = self.path_of(key)?;
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(format!("failed to remove {}: {e}", path.display())),
        }
        // Empty parents go too, up to the root.
        let mut dir = path.parent().map(Path::to_path_buf);
        while let Some(d) = dir {
            if d == self.root || std::fs::remove_dir(&d).is_err() {
                break;
            }
            dir = d.parent().map(Path::to_path_buf);
        }
        Ok(())
    }

    /// Every key in the tree, sorted (`operator migrate` and prefix scans).
    pub fn all_keys(&self) -> Vec<String> {
        fn walk(dir: &Path, prefix: &str, out: &mut Vec<String>) {
            let Ok(entries) = std::fs::read_dir(dir) else {
                return;
            };
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().to_string();
                let path = entry.path();
                if path.is_dir() {
                    walk(&path, &format!("{prefix}{name}/"), out);
                } else if let Some(base) = name.strip_prefix('_') {
                    out.push(format!("{prefix}{base}"));
                }
            }
        }
        let mut out = Vec::new();
        walk(&self.root, "", &mut out);
        out.sort();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_layout_is_vaults() {
        let dir = tempfile::tempdir().unwrap();
        let f = FileBackend {
            root: dir.path().to_path_buf(),
        };
        f.put("core/seal-config", b"{}").unwrap();
        let text = std::fs::read_to_string(dir.path().join("core/_seal-config")).unwrap();
        assert_eq!(text, "{\"Value\":\"e30=\"}\n");
        // Old Vault wrote the key too; it is ignored on read.
        std::fs::write(
            dir.path().join("core/_old"),
            "{\"Key\":\"core/old\",\"Value\":\"e30=\"}\n",
        )
        .unwrap();
        assert_eq!(f.get("core/old").unwrap(), b"{}");
        assert_eq!(f.all_keys(), vec!["core/old", "core/seal-config"]);
        f.delete("core/old").unwrap();
        f.delete("core/seal-config").unwrap();
        assert!(!dir.path().join("core").exists());
        assert!(f.put("../escape", b"x").is_err());
    }
    /// Raft storage keeps each value as the barrier wrote it, base64 in the state; an
    /// entry reads back alone; a state that is not Vault's refuses the write.
    #[test]
    fn raft_state_keeps_values_and_refuses_a_state_it_cannot_read() {
        let mut data = json!({});
        let put = Op::Put {
            key: "core/keyring".into(),
            value: Ciphertext(vec![0, 1, 255]),
        };
        put.apply(&mut data, 1).unwrap();
        assert_eq!(data, json!({"vault": {"core/keyring": "AAH/"}}));
        assert_eq!(
            RaftState::entry(&data, "core/keyring"),
            Some(vec![0, 1, 255])
        );
        assert_eq!(RaftState::keys_in(&data, "core/"), ["core/keyring"]);
        let delete = Op::Delete {
            key: "core/keyring".into(),
        };
        delete.apply(&mut data, 2).unwrap();
        assert_eq!(RaftState::entry(&data, "core/keyring"), None);

        let mut garbled = json!({"vault": {"core/keyring": "not base64!"}});
        let put = Op::Put {
            key: "other".into(),
            value: Ciphertext(vec![1]),
        };
        assert!(matches!(
            put.apply(&mut garbled, 3),
            Err(StateError::Unreadable(_))
        ));
        assert_eq!(garbled["vault"]["core/keyring"], "not base64!");
    }
}
