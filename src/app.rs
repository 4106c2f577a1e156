//! The one place where a run is set up, dispatched, and turned into an exit status.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use harun_runtime::diagnostic::Sources;
use harun_runtime::engine::globals;
use harun_runtime::logging::{self, LogFormat};
use harun_runtime::output::OutputMode;
use harun_runtime::plan::AuditLog;
use harun_runtime::{Bridge, Context, Diagnostic, EngineBuilder, Options, Redactor, Topology};
use rhai::{Dynamic, Engine, EvalAltResult};

use harun_runtime::codes::{self, exit::ERROR as EXIT_ERROR};

use crate::cli::{Cli, Command, Format};
use crate::finish::{finish, Run};
use clap::Parser;
use harun_runtime::diagnostic::fail;
use harun_runtime::modules::script_text;

pub fn run() -> i32 {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            use clap::error::ErrorKind::*;
            let code = match e.kind() {
                DisplayHelp | DisplayVersion | DisplayHelpOnMissingArgumentOrSubcommand => 0,
                _ => EXIT_ERROR,
            };
            let _ = e.print();
            return code;
        }
    };
    let redactor = Redactor::default();
    let verbosity = if cli.output.quiet {
        -1
    } else {
        cli.output.verbose as i8
    };
    let log_format = match cli.output.log_format {
        Format::Text => LogFormat::Text,
        Format::Json => LogFormat::Json,
    };
    logging::init(verbosity, log_format, redactor.clone());

    match &cli.command {
        Some(Command::Completions { shell }) => {
            let mut cmd = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(*shell, &mut cmd, "harun", &mut std::io::stdout());
            0
        }
        Some(Command::Doc) => match Session::new(&cli, Path::new("."), "doc", redactor) {
            Ok(session) => crate::doc::print(&session.engine, cli.output.format),
            Err(code) => code,
        },
        Some(Command::Check { files, run }) => check(&cli.with_run(run), files, redactor),
        Some(Command::Lab { command }) => crate::lab::run(command),
        Some(Command::Init {
            address,
            output,
            force,
            ca_file,
            consul_token_file,
            plain_http,
        }) => {
            let init = crate::init::Init {
                address: address.clone(),
                output: output.clone(),
                force: *force,
                ca_file: ca_file.clone(),
                consul_token_file: consul_token_file.clone(),
                plain_http: *plain_http,
            };
            match crate::init::run(&init) {
                Ok(line) => {
                    println!("{line}");
                    0
                }
                Err((code, message)) => fail(code, message, &redactor),
            }
        }
        Some(Command::Repl { run }) => {
            let cli = cli.with_run(run);
            with_lab(&cli, |cli| repl(cli, redactor))
        }
        None => with_lab(&cli, |cli| match (&cli.eval, &cli.script) {
            (Some(code), _) => eval(cli, code, redactor),
            (None, Some(script)) => run_script(cli, script, redactor),
            (None, None) => repl(cli, redactor),
        }),
    }
}

/// `--lab`: the run gets a fresh lab and its topology, and the lab goes away after.
fn with_lab(cli: &Cli, run: impl FnOnce(&Cli) -> i32) -> i32 {
    if !cli.run.lab {
        return run(cli);
    }
    if cli.run.topology.is_some() {
        return fail(
            codes::USAGE,
            "--lab brings its own topology; drop --topology",
            &Redactor::default(),
        );
    }
    let lab = match crate::lab::TempLab::start() {
        Ok(lab) => lab,
        Err(e) => return fail(e.code(), e.to_string(), &Redactor::default()),
    };
    let mut with_topology = cli.clone();
    with_topology.run.topology = Some(lab.topology.clone());
    // The snapshots a script takes before its changes belong to the lab, not to the
    // working directory: they go with it (and stay with it under --keep-lab).
    if !cli.run.set.iter().any(|(key, _)| key == "snapshot_dir") {
        with_topology.run.set.push((
            "snapshot_dir".to_string(),
            lab.dir.join("snapshots").display().to_string(),
        ));
    }
    let code = run(&with_topology);
    lab.finish(cli.run.keep_lab);
    code
}

/// A context and an engine for one run.
pub struct Session {
    pub context: Context,
    pub engine: Engine,
    pub base_dir: PathBuf,
}

impl Session {
    pub fn new(cli: &Cli, base_dir: &Path, name: &str, redactor: Redactor) -> Result<Session, i32> {
        Session::with_output(cli, base_dir, name, redactor, output_mode(cli))
    }

    fn with_output(
        cli: &Cli,
        base_dir: &Path,
        name: &str,
        redactor: Redactor,
        output: OutputMode,
    ) -> Result<Session, i32> {
        let flags = &cli.run;
        let topology = load_topology(flags.topology.as_deref(), &redactor)?;
        let bridge = Bridge::new().map_err(|e| {
            fail(
                codes::RUNTIME,
                format!("cannot start the I/O runtime: {e}"),
                &redactor,
            )
        })?;
        bridge.install_signal_handlers();
        if let Some(timeout) = flags.timeout {
            bridge.set_deadline(timeout);
        }
        let audit = if flags.dry_run {
            None
        } else {
            flags
                .audit_log
                .clone()
                .or_else(|| dirs::state_dir().map(|d| d.join("harun").join("audit.log")))
                .map(|path| AuditLog::new(path, name))
        };
        let options = Options {
            dry_run: flags.dry_run,
            yes: flags.yes,
            script: name.to_string(),
            base_dir: base_dir.to_path_buf(),
            output,
            params: flags
                .set
                .iter()
                .map(|(k, v)| (k.as_str().into(), Dynamic::from(v.clone())))
                .collect(),
            args: cli.args.clone(),
            topology: topology.map(Arc::new),
            ..Options::default()
        };
        let context = Context::new(options, bridge, redactor, audit);
        let engine = build_engine(context.clone());
        Ok(Session {
            context,
            engine,
            base_dir: base_dir.to_path_buf(),
        })
    }
}

/// The one engine builder for script runs, `-e`, `check`, `doc` and the REPL.
pub fn build_engine(context: Context) -> Engine {
    EngineBuilder::new(context)
        .with(harun_stdlib::register)
        .build()
}

fn output_mode(cli: &Cli) -> OutputMode {
    if cli.output.format == Format::Json || !std::io::stdout().is_terminal() {
        OutputMode::Hold
    } else {
        OutputMode::Stream
    }
}

/// The topology: `--topology` / `HARUN_TOPOLOGY`, else `./harun.hcl` when present.
fn load_topology(flag: Option<&Path>, redactor: &Redactor) -> Result<Option<Topology>, i32> {
    let default = Path::new("harun.hcl");
    let path = match flag {
        Some(path) => path,
        None if default.is_file() => default,
        None => return Ok(None),
    };
    Topology::load(path).map(Some).map_err(|d| {
        eprint!("{}", d.render(&Sources::default(), redactor));
        EXIT_ERROR
    })
}

fn cwd() -> PathBuf {
    std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."))
}

fn run_script(cli: &Cli, script: &Path, redactor: Redactor) -> i32 {
    let name = script.display().to_string();
    let text = match std::fs::read_to_string(script) {
        Ok(text) => script_text(&text),
        Err(e) => {
            return fail(
                codes::SCRIPT_READ,
                format!("cannot read the script {name}: {e}"),
                &redactor,
            )
        }
    };
    let base_dir = script
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .map_or_else(cwd, Path::to_path_buf);
    let Ok(session) = Session::new(cli, &base_dir, &name, redactor) else {
        return EXIT_ERROR;
    };
    // A person watching a terminal sees the steps; cron, pipes and JSON see none of it.
    if cli.output.format == Format::Text
        && !cli.output.quiet
        && std::io::stdout().is_terminal()
        && std::io::stderr().is_terminal()
    {
        harun_runtime::progress::enable();
    }
    execute(cli, session, &name, &text, false)
}

fn eval(cli: &Cli, code: &str, redactor: Redactor) -> i32 {
    let Ok(session) = Session::new(cli, &cwd(), "-e", redactor) else {
        return EXIT_ERROR;
    };
    execute(cli, session, "-e", code, true)
}

fn execute(cli: &Cli, session: Session, name: &str, text: &str, show_result: bool) -> i32 {
    let mut sources = Sources::default();
    sources.add(name, text);
    let mut scope = globals(&session.context);
    // Compiled without the globals: Rhai's optimizer would put the constants' values in
    // place of a function parameter of the same name (`fn save(params)` saw the --set
    // params, not its argument). They are in the scope the script runs with.
    let result = session
        .engine
        .compile(text)
        .map_err(|e| Box::new(EvalAltResult::from(e)))
        .and_then(|mut ast| {
            ast.set_source(name);
            session
                .engine
                .eval_ast_with_scope::<Dynamic>(&mut scope, &ast)
        });
    finish(Run {
        context: &session.context,
        result,
        show_result,
        format: cli.output.format,
        sources: &sources,
        main_source: name,
        base_dir: &session.base_dir,
    })
}

/// Compiles each file with its imports; prints diagnostics; runs nothing.
fn check(cli: &Cli, files: &[PathBuf], redactor: Redactor) -> i32 {
    let mut failed = 0;
    for file in files {
        let name = file.display().to_string();
        let text = match std::fs::read_to_string(file) {
            Ok(text) => script_text(&text),
            Err(e) => {
                fail(
                    codes::SCRIPT_READ,
                    format!("cannot read the script {name}: {e}"),
                    &redactor,
                );
                failed += 1;
                continue;
            }
        };
        let base_dir = file
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .map_or_else(cwd, Path::to_path_buf);
        let Ok(session) = Session::new(cli, &base_dir, &name, redactor.clone()) else {
            return EXIT_ERROR;
        };
        let mut sources = Sources::default();
        sources.add(&name, &text);
        // Self-contained compilation loads every `import`, so a broken module is reported
        // now rather than halfway through a cluster change.
        match session
            .engine
            .compile_into_self_contained(&rhai::Scope::new(), &text)
        {
            Ok(_) => println!("{name}: ok"),
            Err(e) => {
                failed += 1;
                let d = Diagnostic::from_rhai(&e, &name, &base_dir);
                eprint!("{}", d.render(&sources, session.context.redactor()));
            }
        }
    }
    if failed > 0 {
        EXIT_ERROR
    } else {
        0
    }
}

fn repl(cli: &Cli, redactor: Redactor) -> i32 {
    let Ok(session) = Session::with_output(cli, &cwd(), "repl", redactor, OutputMode::Stream)
    else {
        return EXIT_ERROR;
    };
    let scope = globals(&session.context);
    let context = session.context.clone();
    let code = harun_repl::run(session.engine, session.context, scope);
    context.finish();
    code
}
