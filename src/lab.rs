//! `harun lab ...` and `--lab`: the local lab's commands.

use std::path::{Path, PathBuf};

use harun_lab::error::LabError;
use harun_lab::real::{RealServers, Wanted};
use harun_lab::supervisor;

use crate::cli::LabCommand;

fn harun() -> PathBuf {
    std::env::current_exe().unwrap_or_else(|_| PathBuf::from("harun"))
}

pub fn run(command: &LabCommand) -> i32 {
    let outcome = match command {
        LabCommand::Serve {
            service,
            config,
            user,
        } => return serve(service, config, user.as_deref()),
        LabCommand::Vault { args } => return vault_cli(args),
        LabCommand::Up {
            dir,
            controllers,
            nomad_without_consul,
            workers,
            fresh,
            story,
            real,
            consul_bin,
            vault_bin,
        } => real_servers(&Wanted {
            real: *real,
            consul_bin: consul_bin.clone(),
            vault_bin: vault_bin.clone(),
        })
        .and_then(|real| {
            supervisor::up(
                dir,
                &harun(),
                supervisor::Options {
                    controllers: *controllers,
                    nomad_consul: !nomad_without_consul,
                    workers: *workers,
                    fresh: *fresh,
                    story: *story,
                    real,
                },
            )
        })
        .map(|path| {
            println!("{}", path.display());
            0
        }),
        LabCommand::Status { dir } => supervisor::status(dir).map(|text| {
            print!("{text}");
            0
        }),
        LabCommand::Down { dir } => supervisor::down(dir).map(|_| 0),
        LabCommand::Replace {
            dir,
            host,
            new_address,
        } => supervisor::replace(dir, &harun(), host, *new_address).map(|_| 0),
        LabCommand::Ctl {
            dir,
            host,
            service,
            action,
        } => supervisor::ctl(dir, &harun(), host, service, action),
    };
    match outcome {
        Ok(code) => code,
        Err(e) => {
            let code = harun_runtime::diagnostic::fail(
                e.code(),
                e.to_string(),
                &harun_runtime::Redactor::default(),
            );
            // `lab ctl` answers as systemctl does: 1 for a job that failed.
            if matches!(command, LabCommand::Ctl { .. }) {
                1
            } else {
                code
            }
        }
    }
}

/// Whether the environment variable `name` says yes.
fn yes(name: &str) -> bool {
    matches!(std::env::var(name).as_deref(), Ok("true" | "1" | "yes"))
}

/// The real servers asked for; what stays a twin is said on stderr.
fn real_servers(wanted: &Wanted) -> Result<RealServers, LabError> {
    let (real, notes) = harun_lab::real::find(wanted).map_err(LabError::Step)?;
    for note in notes {
        eprintln!("harun lab: {note}");
    }
    Ok(real)
}

/// A fresh lab in a temporary directory for `--lab`; removed by [`TempLab::finish`]
/// unless kept.
pub struct TempLab {
    pub dir: PathBuf,
    pub topology: PathBuf,
}

impl TempLab {
    pub fn start() -> Result<TempLab, LabError> {
        // A fresh directory of a random name, made here and never one that was there
        // before: another user must not prepare what root's run reads (its topology) or
        // writes (tokens). As root the lab's Vault user must pass through it (0711).
        let mode = if harun_lab::service_user::is_root() {
            0o711
        } else {
            0o700
        };
        let dir = harun_runtime::private_fs::fresh_temp_dir("harun-lab-", mode)
            .map_err(|e| LabError::Step(format!("cannot make the lab's directory: {e}")))?;
        // HARUN_LAB_NOMAD_CONSUL=false: the lab's Nomad without Consul (server_join).
        let nomad_consul = !matches!(
            std::env::var("HARUN_LAB_NOMAD_CONSUL").as_deref(),
            Ok("false" | "0" | "no")
        );
        // HARUN_LAB_WORKERS=N: N workers beside the controllers.
        let workers = match std::env::var("HARUN_LAB_WORKERS") {
            Ok(n) => n.trim().parse().map_err(|_| {
                LabError::Unknown(format!(
                    "HARUN_LAB_WORKERS={n:?} is not a number of workers"
                ))
            })?,
            Err(_) => 0,
        };
        // HARUN_LAB_CONTROLLERS=N: 3, 5 or 7 controllers.
        let controllers = match std::env::var("HARUN_LAB_CONTROLLERS") {
            Ok(n) => {
                let n = n.trim().parse().map_err(|_| {
                    LabError::Unknown(format!(
                        "HARUN_LAB_CONTROLLERS={n:?} is not a number of controllers"
                    ))
                })?;
                supervisor::check_controllers(n).map_err(LabError::Unknown)?;
                n
            }
            Err(_) => supervisor::DEFAULT_CONTROLLERS,
        };
        // HARUN_LAB_STORY=true: the story's configuration (HTTPS, Consul ACLs).
        let story = yes("HARUN_LAB_STORY");
        // HARUN_LAB_REAL=true: the real servers installed here (HARUN_LAB_CONSUL_BIN and
        // HARUN_LAB_VAULT_BIN name their binaries).
        let real = real_servers(&Wanted {
            real: yes("HARUN_LAB_REAL"),
            consul_bin: std::env::var_os("HARUN_LAB_CONSUL_BIN").map(PathBuf::from),
            vault_bin: std::env::var_os("HARUN_LAB_VAULT_BIN").map(PathBuf::from),
        })?;
        let options = supervisor::Options {
            controllers,
            nomad_consul,
            workers,
            fresh: true,
            story,
            real,
        };
        let topology = supervisor::up(&dir, &harun(), options)?;
        Ok(TempLab { dir, topology })
    }

    pub fn finish(self, keep: bool) {
        if keep {
            eprintln!(
                "harun: the lab keeps running in {} (topology {}); stop it with `harun lab down --dir {}`",
                self.dir.display(),
                self.topology.display(),
                self.dir.display()
            );
            return;
        }
        if let Err(e) = supervisor::down(&self.dir) {
            tracing::warn!("could not stop the lab in {}: {e}", self.dir.display());
            return;
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The lab's `vault` command: only what scripts need of it offline.
fn vault_cli(args: &[String]) -> i32 {
    match args {
        [operator, migrate, rest @ ..] if operator == "operator" && migrate == "migrate" => {
            harun_lab::vault::migrate::run(rest)
        }
        _ => {
            eprintln!("Usage: vault operator migrate -config FILE [-start PREFIX] [-reset] (the lab's vault CLI knows only this command)");
            1
        }
    }
}

/// Runs one twin until it stops; a config it refuses exits 1 with the reason on stderr,
/// as the real agent does.
fn serve(service: &str, config: &Path, user: Option<&str>) -> i32 {
    // Before any thread starts: setuid applies to the calling thread only.
    if let Some(user) = user {
        if let Err(e) = harun_lab::service_user::become_user(user) {
            eprintln!("{e}");
            return 1;
        }
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            return 1;
        }
    };
    let outcome = runtime.block_on(async {
        match service {
            "consul" => harun_lab::consul::serve(config).await,
            "vault" => harun_lab::vault::serve(config).await,
            "nomad" => harun_lab::nomad::serve(config).await,
            other => Err(format!(
                "unknown service {other:?} (consul, nomad or vault)"
            )),
        }
    });
    match outcome {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("{e}");
            1
        }
    }
}
