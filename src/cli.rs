//! The command line. Usage errors exit with 3 (UNKNOWN), not clap's 2, which would read as
//! CRITICAL to the monitoring that runs harun's health scripts.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// `harun --version`: the version, the commit and the target (set by build.rs), so that a
/// binary on a controller says which build it is.
pub const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("HARUN_COMMIT"),
    ", ",
    env!("HARUN_TARGET"),
    ")"
);

#[derive(Parser, Debug, Clone)]
#[command(
    name = "harun",
    version = VERSION,
    about = "Operate Consul, Nomad and Vault clusters with scripts: safer than a runbook, faster than Ansible",
    long_about = None,
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true,
    after_help = "\
Exit status: 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN (also script, compile and usage errors).

Examples:
  harun scripts/health.rhai                 run a script against ./harun.hcl
  harun --dry-run scripts/consul-ha.rhai    show what it would change, change nothing
  harun -e 'print(40 + 2)'                  evaluate code
  harun check scripts/*.rhai                compile only, report errors
  harun repl                                explore interactively"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,

    /// The script to run; its directory is where `import` looks for modules
    #[arg(value_name = "SCRIPT")]
    pub script: Option<PathBuf>,

    /// Arguments for the script, after `--` (the `args` array)
    #[arg(last = true, value_name = "ARGS")]
    pub args: Vec<String>,

    /// Evaluate CODE instead of a script file and print its result
    #[arg(
        short = 'e',
        long = "eval",
        value_name = "CODE",
        conflicts_with = "script"
    )]
    pub eval: Option<String>,

    #[command(flatten)]
    pub run: RunFlags,

    #[command(flatten)]
    pub output: OutputFlags,
}

/// Flags that shape a run.
#[derive(Args, Debug, Clone)]
pub struct RunFlags {
    /// The topology file [default: ./harun.hcl when present]
    #[arg(long, env = "HARUN_TOPOLOGY", value_name = "FILE")]
    pub topology: Option<PathBuf>,

    /// A script parameter, KEY=VALUE; repeatable (the `params` map)
    #[arg(long = "set", value_name = "KEY=VALUE", value_parser = parse_key_value)]
    pub set: Vec<(String, String)>,

    /// Show what would change, as a numbered plan with diffs; change nothing
    #[arg(long)]
    pub dry_run: bool,

    /// Answer yes to every confirmation (needed to confirm without a terminal)
    #[arg(long)]
    pub yes: bool,

    /// Stop the run after this long, e.g. 90s, 5m
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub timeout: Option<Duration>,

    /// Run against a fresh temporary lab of three controllers (see `harun lab up`)
    #[arg(long)]
    pub lab: bool,

    /// With --lab: keep the lab running afterwards and print where it is
    #[arg(long, requires = "lab")]
    pub keep_lab: bool,

    /// Append every change made to this JSON-lines file [default: $XDG_STATE_HOME/harun/audit.log]
    #[arg(long, env = "HARUN_AUDIT_LOG", value_name = "FILE")]
    pub audit_log: Option<PathBuf>,
}

impl Cli {
    /// This command line with a subcommand's own run flags (`harun repl --topology F`).
    pub fn with_run(&self, run: &RunFlags) -> Cli {
        let mut cli = self.clone();
        cli.run = run.or(&self.run);
        cli
    }
}

impl RunFlags {
    /// These flags, with `outer`'s (given before the subcommand) where these have none.
    pub fn or(&self, outer: &RunFlags) -> RunFlags {
        RunFlags {
            topology: self.topology.clone().or_else(|| outer.topology.clone()),
            set: outer.set.iter().chain(&self.set).cloned().collect(),
            dry_run: self.dry_run || outer.dry_run,
            yes: self.yes || outer.yes,
            timeout: self.timeout.or(outer.timeout),
            lab: self.lab || outer.lab,
            keep_lab: self.keep_lab || outer.keep_lab,
            audit_log: self.audit_log.clone().or_else(|| outer.audit_log.clone()),
        }
    }
}

/// Flags that shape what is printed.
#[derive(Args, Debug, Clone)]
pub struct OutputFlags {
    /// More log detail on stderr: -v progress, -vv details, -vvv everything
    #[arg(short, long, global = true, action = clap::ArgAction::Count, conflicts_with = "quiet")]
    pub verbose: u8,

    /// Only errors on stderr
    #[arg(short, long, global = true)]
    pub quiet: bool,

    /// Log lines as text or JSON
    #[arg(long, global = true, value_enum, default_value_t = Format::Text, value_name = "FORMAT")]
    pub log_format: Format,

    /// Results as text (a summary line, then output) or one JSON document; `md` is text
    #[arg(long, global = true, value_enum, default_value_t = Format::Text, value_name = "FORMAT")]
    pub format: Format,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// Text for people (Markdown for `harun doc`)
    #[value(alias = "md")]
    Text,
    /// JSON for programs
    Json,
}

#[derive(Subcommand, Debug, Clone)]
pub enum Command {
    /// Compile scripts and their imports, report errors, run nothing
    Check {
        /// The scripts to check
        #[arg(required = true, value_name = "FILE")]
        files: Vec<PathBuf>,
        #[command(flatten)]
        run: RunFlags,
    },
    /// Explore and fix a cluster interactively (also: bare `harun` on a terminal)
    Repl {
        #[command(flatten)]
        run: RunFlags,
    },
    /// Print the reference of every built-in function, from its doc comment
    /// (Markdown; `--format json` for the raw metadata)
    Doc,
    /// A local lab of three controllers running twins of Consul, Nomad and Vault
    Lab {
        #[command(subcommand)]
        command: LabCommand,
    },
    /// Write a topology (harun.hcl) for a running cluster from one controller's address:
    /// its hosts from Consul's members, each service's address as it answers
    Init {
        /// A controller's address (its Consul agent answers there)
        address: String,
        /// Where to write the topology
        #[arg(long, short, default_value = "harun.hcl", value_name = "FILE")]
        output: PathBuf,
        /// Replace the file when it exists
        #[arg(long)]
        force: bool,
        /// The CA that signed the services' certificates [default: $CONSUL_CACERT]
        #[arg(long, value_name = "FILE")]
        ca_file: Option<PathBuf>,
        /// Consul's ACL token, in a file of mode 0600 [default: $CONSUL_HTTP_TOKEN]
        #[arg(long, value_name = "FILE")]
        consul_token_file: Option<PathBuf>,
        /// The cluster speaks plain HTTP on a network you trust: send tokens there, in
        /// clear (without it a service with a token is looked for over TLS only)
        #[arg(long)]
        plain_http: bool,
    },
    /// Print a shell completion script: harun completions bash > /etc/bash_completion.d/harun
    Completions {
        /// The shell
        shell: clap_complete::Shell,
    },
}

#[derive(Subcommand, Debug, Clone)]
pub enum LabCommand {
    /// Start a lab: three controllers (or --controllers 5 or 7) on loopback in the story's
    /// first state; prints the path of its topology file
    Up {
        /// Where the lab keeps its configs, data and logs
        #[arg(long, default_value = "harun-lab")]
        dir: PathBuf,
        /// Controllers: 3, 5 or 7, to rehearse a fork of the scripts for a larger
        /// cluster. For `--lab`, set HARUN_LAB_CONTROLLERS=N.
        #[arg(long, default_value_t = 3, value_parser = controller_count)]
        controllers: usize,
        /// Nomad without a consul stanza: its servers and clients need server_join (the
        /// story's other branch). For `--lab`, set HARUN_LAB_NOMAD_CONSUL=false.
        #[arg(long)]
        nomad_without_consul: bool,
        /// Workers beside the controllers (at most 9): each runs a Consul client and a Nomad
        /// client that know only controller1. For `--lab`, set HARUN_LAB_WORKERS=N.
        #[arg(long, default_value_t = 0)]
        workers: usize,
        /// Replace a stopped lab already in --dir (its configs, data and logs) rather than
        /// refuse: the story's first state needs fresh data.
        #[arg(long)]
        fresh: bool,
        /// The story's configuration: Consul's API on HTTPS 8501 with ACLs on (tokens in
        /// files), Nomad and Vault on HTTPS, all under the lab's private CA. For `--lab`,
        /// set HARUN_LAB_STORY=true.
        #[arg(long)]
        story: bool,
        /// Run the real servers installed here in place of twins: `consul` and OpenBao's
        /// `bao` from PATH (the lab writes their configs for the version it finds); what is
        /// not installed stays a twin, and `lab status` says which is which. For `--lab`,
        /// set HARUN_LAB_REAL=true.
        #[arg(long)]
        real: bool,
        /// The Consul binary to run (implies a real Consul). For `--lab`, set
        /// HARUN_LAB_CONSUL_BIN.
        #[arg(long, value_name = "FILE")]
        consul_bin: Option<PathBuf>,
        /// The OpenBao binary (`bao`) to run in place of the Vault twin. For `--lab`, set
        /// HARUN_LAB_VAULT_BIN.
        #[arg(long, value_name = "FILE")]
        vault_bin: Option<PathBuf>,
    },
    /// Show each controller's services and who leads
    Status {
        #[arg(long, default_value = "harun-lab")]
        dir: PathBuf,
    },
    /// A controller's machine dies for good and a fresh one takes its place: same name
    /// and address, services stopped, data gone, a new machine's configs (rehearses
    /// scripts/replace-controller.rhai)
    Replace {
        #[arg(long, default_value = "harun-lab")]
        dir: PathBuf,
        /// The controller to replace
        host: String,
        /// The new machine has another address (the lab's topology is rewritten with it)
        #[arg(long)]
        new_address: bool,
    },
    /// Stop every service of the lab (its files stay)
    Down {
        #[arg(long, default_value = "harun-lab")]
        dir: PathBuf,
    },
    /// The lab's service manager: start, stop, restart or query one service
    #[command(hide = true)]
    Ctl {
        #[arg(long)]
        dir: PathBuf,
        host: String,
        service: String,
        action: String,
    },
    /// The lab's stand-in for the `vault` CLI (what the topology's `vault { cli }` names):
    /// `operator migrate -config FILE`
    #[command(hide = true)]
    Vault {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Run one twin in the foreground (what the lab's service manager starts)
    #[command(hide = true)]
    Serve {
        /// consul, nomad or vault
        service: String,
        /// The server's HCL config file
        #[arg(long)]
        config: PathBuf,
        /// Run as this user (from root), as a packaged unit's `User=` does
        #[arg(long)]
        user: Option<String>,
    },
}

fn parse_key_value(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((key, value)) if !key.is_empty() => Ok((key.to_string(), value.to_string())),
        _ => Err(format!("expected KEY=VALUE, got `{s}`")),
    }
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    if let Ok(secs) = s.parse::<u64>() {
        return Ok(Duration::from_secs(secs));
    }
    humantime::parse_duration(s).map_err(|e| format!("`{s}` is not a duration like 90s or 5m: {e}"))
}

/// `--controllers`: 3, 5 or 7 (the lab's own check words the refusal).
fn controller_count(text: &str) -> Result<usize, String> {
    let n: usize = text
        .parse()
        .map_err(|_| format!("{text:?} is not a number of controllers"))?;
    harun_lab::supervisor::check_controllers(n)?;
    Ok(n)
}
