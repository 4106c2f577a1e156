//! `vault operator migrate -config FILE`, as the lab's Vault CLI: copies every storage
//! entry (still encrypted) from `storage_source` to `storage_destination`, with the real
//! command's flags, lock key, preconditions, messages and exit codes (1 for usage and
//! config errors, 2 for migration errors).

use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use super::storage::{Ciphertext, FileBackend, RaftState};
use super::{host_port, raft_node_id, raft_state_file, storage_block, StorageSettings};
use crate::cluster::{Persistent, Server, TypedState};
use crate::config::ConfigFile;

const LOCK: &str = "core/migration";

/// A storage opened for migration: file on disk or a raft node's state file.
enum Side {
    File(FileBackend),
    Raft {
        state_file: PathBuf,
        p: Persistent,
        state: RaftState,
    },
}

impl Side {
    fn open(
        settings: &StorageSettings,
        cluster_addr: Option<&str>,
        role: &str,
    ) -> Result<Side, String> {
        match settings {
            StorageSettings::File { path } => Ok(Side::File(FileBackend { root: path.clone() })),
            StorageSettings::Raft { path, node_id, .. } => {
                let mount = |e: String| format!("error mounting '{role}': {e}");
                if !path.is_dir() {
                    return Err(mount(format!(
                        "failed to create fsm: failed to open bolt file: open {}: no such file or directory",
                        raft_state_file(path).display()
                    )));
                }
                let state_file = raft_state_file(path);
                let mut p: Persistent = std::fs::read(&state_file)
                    .ok()
                    .and_then(|b| serde_json::from_slice(&b).ok())
                    .unwrap_or_default();
                let state = RaftState::from_json(&p.data).map_err(mount)?;
                if role == "storage_destination" {
                    let cluster_addr =
                        cluster_addr.ok_or_else(|| mount("cluster_addr config not set".into()))?;
                    // command/operator_migrate.go `createDestinationBackend` bootstraps
                    // the raft destination; a store that already has state refuses it
                    // (hashicorp/vault #10769, #11026).
                    if p.bootstrapped {
                        return Err(mount(
                            "could not bootstrap clustered storage: error bootstrapping cluster: cluster already has state".into(),
                        ));
                    }
                    {
                        // The migrator bootstraps a one-node cluster: id node_id, address cluster_addr.
                        let me = Server {
                            id: raft_node_id(path, node_id.as_ref()),
                            address: host_port(cluster_addr),
                            http: String::new(),
                            voter: true,
                        };
                        p.config = vec![me];
                        p.bootstrapped = true;
                        p.index = p.index.max(1);
                    }
                }
                Ok(Side::Raft {
                    state_file,
                    p,
                    state,
                })
            }
        }
    }

    fn keys(&self) -> Vec<String> {
        match self {
            Side::File(f) => f.all_keys(),
            Side::Raft { state, .. } => state.vault.keys().cloned().collect(),
        }
    }

    fn get(&self, key: &str) -> Option<Vec<u8>> {
        match self {
            Side::File(f) => f.get(key),
            Side::Raft { state, .. } => state.vault.get(key).map(|c| c.0.clone()),
        }
    }

    fn put(&mut self, key: &str, value: &[u8]) -> Result<(), String> {
        match self {
            Side::File(f) => f.put(key, value),
            Side::Raft { state, .. } => {
                state
                    .vault
                    .insert(key.to_string(), Ciphertext(value.to_vec()));
                Ok(())
            }
        }
    }

    fn delete(&mut self, key: &str) -> Result<(), String> {
        match self {
            Side::File(f) => f.delete(key),
            Side::Raft { state, .. } => {
                state.vault.remove(key);
                Ok(())
            }
        }
    }

    fn commit(&self) -> Result<(), String> {
        if let Side::Raft {
            state_file,
            p,
            state,
        } = self
        {
            let p = Persistent {
                data: state.to_json(),
                ..p.clone()
            };
            let bytes = serde_json::to_vec(&p).expect("serializes");
            crate::cluster::write_state_file(state_file, &bytes)
                .map_err(|e| format!("failed to write {}: {e}", state_file.display()))?;
        }
        Ok(())
    }
}

fn log(message: &str) {
    let now = humantime::format_rfc3339_millis(std::time::SystemTime::now());
    eprintln!("{now} [INFO]  {message}");
}

struct Flags {
    config: Vec<String>,
    start: String,
    reset: bool,
}

fn parse_flags(args: &[String]) -> Result<Flags, String> {
    let mut flags = Flags {
        config: Vec::new(),
        start: String::new(),
        reset: false,
    };
    let mut i = 0;
    while i < args.len() {
        let arg = args[i].trim_start_matches('-');
        let (name, inline) = match arg.split_once('=') {
            Some((n, v)) => (n, Some(v.to_string())),
            None => (arg, None),
        };
        let value = |i: &mut usize| -> Result<String, String> {
            if let Some(v) = inline.clone() {
                return Ok(v);
            }
            *i += 1;
            args.get(*i)
                .cloned()
                .ok_or_else(|| format!("flag needs an argument: -{name}"))
        };
        match name {
            "config" => flags.config.push(value(&mut i)?),
            "start" => flags.start = value(&mut i)?,
            "reset" => flags.reset = inline.as_deref().is_none_or(|v| v == "true"),
            "max-parallel" => {
                let n: i64 = value(&mut i)?
                    .parse()
                    .map_err(|_| "invalid value for -max-parallel".to_string())?;
                if n < 1 {
                    return Err(format!(
                        "Argument to flag -max-parallel must be between 1 and {}",
                        i64::MAX
                    ));
                }
            }
            "log-level" => {
                value(&mut i)?;
            }
            other => return Err(format!("flag provided but not defined: -{other}")),
        }
        i += 1;
    }
    Ok(flags)
}

/// `operator migrate ARGS`: returns the exit status.
pub fn run(args: &[String]) -> i32 {
    let flags = match parse_flags(args) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("{e}");
            return 1;
        }
    };
    if flags.config.len() != 1 {
        eprintln!("Must specify exactly one config path using -config");
        return 1;
    }
    let path = Path::new(&flags.config[0]);
    let loaded = ConfigFile::load(path).and_then(|file| {
        for block in ["storage_source", "storage_destination"] {
            if file.labeled(block).len() != 1 {
                return Err(format!("exactly one {block:?} block is required"));
            }
        }
        let source = storage_block(&file, "storage_source")?;
        let destination = storage_block(&file, "storage_destination")?;
        let cluster_addr = file.string("cluster_addr")?;
        Ok((source, destination, cluster_addr))
    });
    let (source, destination, cluster_addr) = match loaded {
        Ok(l) => l,
        Err(e) => {
            let e = e
                .trim_start_matches(&format!("Error parsing {}: ", path.display()))
                .to_string();
            eprintln!("Error loading configuration from {}: {e}", path.display());
            return 1;
        }
    };
    let outcome = (|| -> Result<&'static str, String> {
        let mut from = Side::open(&source, None, "storage_source")?;
        if flags.reset {
            from.delete(LOCK)?;
            from.commit()?;
            return Ok("Success! Migration lock reset (if it was set).");
        }
        let mut to = Side::open(&destination, cluster_addr.as_deref(), "storage_destination")?;
        // The destination is bootstrapped and on disk before the lock is checked and
        // before a single key is copied (command/operator_migrate.go `migrate`): a
        // migration that fails or is killed from here on leaves a bootstrapped store
        // holding some of the keys or none.
        to.commit()?;
        let lockable = !matches!(source, StorageSettings::Raft { .. });
        if lockable {
            if let Some(lock) = from.get(LOCK) {
                let lock: Value = serde_json::from_slice(&lock).unwrap_or(Value::Null);
                return Err(format!(
                    "storage migration in progress (started: {})",
                    lock["start"].as_str().unwrap_or("unknown")
                ));
            }
            let start = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
            from.put(
                LOCK,
                &serde_json::to_vec(&json!({"start": start})).expect("serializes"),
            )?;
        }
        // The lab's kill tests: HARUN_LAB_MIGRATE_PAUSE_AFTER=N stops after N copied keys
        // and waits there ("pausing" on stderr), so that a test can kill the migration in
        // the middle, with what it copied so far on disk.
        let pause_after: Option<usize> = std::env::var("HARUN_LAB_MIGRATE_PAUSE_AFTER")
            .ok()
            .and_then(|n| n.parse().ok());
        let copied = (|| -> Result<(), String> {
            let mut copied = 0;
            for key in from.keys() {
                if key == LOCK || key == "core/lock" || key.as_str() < flags.start.as_str() {
                    continue;
                }
                let value = from
                    .get(&key)
                    .ok_or_else(|| format!("error reading entry {key:?}"))?;
                to.put(&key, &value)?;
                // Raft applies each put as it goes: what was copied is on disk.
                to.commit()?;
                log(&format!("copied key: path={key}"));
                copied += 1;
                if pause_after == Some(copied) {
                    log("pausing (HARUN_LAB_MIGRATE_PAUSE_AFTER)");
                    std::thread::sleep(std::time::Duration::from_secs(600));
                }
            }
            Ok(())
        })();
        if lockable {
            let _ = from.delete(LOCK);
        }
        copied.map(|_| "Success! All of the keys have been migrated.")
    })();
    match outcome {
        Ok(text) => {
            println!("{text}");
            0
        }
        Err(e) => {
            eprintln!("Error migrating: {e}");
            2
        }
    }
}
