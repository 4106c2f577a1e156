//! `harun lab ...`: the local lab's commands.

use crate::cli::LabCommand;

pub fn run(command: &LabCommand) -> i32 {
    match command {
        LabCommand::Serve { service, config } => serve(service, config),
    }
}

/// Runs one twin until it stops; a config it refuses exits 1 with the reason on stderr,
/// as the real agent does.
fn serve(service: &str, config: &std::path::Path) -> i32 {
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
