//! The lab supervisor: three controllers (or five, or seven) on a free 127.x.y.0/24 block,
//! their config files, and the processes of their services.
//!
//! `harun lab up` writes DIR/harun.hcl (transport local, a service manager that is this
//! program's `lab ctl`), one config file per controller and service, and starts the story's
//! first state: controller1 runs single-server Consul; the other controllers have configs
//! but their services are stopped. Optional workers (`--workers N`) run a Consul client and a
//! Nomad client that know only controller1.

use std::io::Write as _;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use harun_runtime::service::Service;

use crate::error::LabError;
use crate::real::RealServers;

/// How many controllers a lab may have: a majority of an odd number survives as many
/// failures as the next even number would, so only odd sizes are offered.
pub const CONTROLLER_COUNTS: [usize; 3] = [3, 5, 7];

/// The controllers of a lab that does not say (labs from before `--controllers`).
pub const DEFAULT_CONTROLLERS: usize = 3;

/// Refuses a number of controllers not in [`CONTROLLER_COUNTS`].
pub fn check_controllers(n: usize) -> Result<(), String> {
    if CONTROLLER_COUNTS.contains(&n) {
        return Ok(());
    }
    Err(format!(
        "a lab has 3, 5 or 7 controllers, not {n}: an even number tolerates no more \
         failures than the odd one below it"
    ))
}

fn default_controllers() -> usize {
    DEFAULT_CONTROLLERS
}

/// The most workers a lab can have: worker N is `127.x.y.(20+N)`.
pub const MAX_WORKERS: usize = 9;

/// The services a controller runs, with their HTTP ports.
/// Started in this order, stopped in the reverse one. Workers run the first two.
pub const SERVICES: &[(&str, u16)] = &[
    ("consul", Service::Consul.api_port()),
    ("nomad", Service::Nomad.api_port()),
    ("vault", Service::Vault.api_port()),
];

/// What `lab up` builds.
#[derive(Clone, Debug)]
pub struct Options {
    /// Servers of every cluster: one of [`CONTROLLER_COUNTS`].
    pub controllers: usize,
    /// Whether nomad.hcl has a consul stanza (Nomad finds its peers through Consul) or not
    /// (it needs server_join).
    pub nomad_consul: bool,
    /// Hosts that run only a Consul client and a Nomad client.
    pub workers: usize,
    /// Replace a stopped lab already in the directory (its data is past the first state).
    pub fresh: bool,
    /// The story's configuration: HTTPS everywhere under the lab's CA, Consul's API on
    /// 8501 with ACLs on and the token in a file.
    pub story: bool,
    /// The real server binaries to run in place of twins.
    pub real: RealServers,
}

/// How the lab initialises Vault: 5 shares, 3 of them to unseal.
const VAULT_SHARES: usize = 5;
const VAULT_THRESHOLD: usize = 3;

/// What `lab up` decided, kept in DIR/lab.json.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Lab {
    pub dir: PathBuf,
    /// `127.x.y`: controller N is `127.x.y.(10+N)`, worker N `127.x.y.(20+N)`.
    pub block: String,
    #[serde(default = "default_controllers")]
    pub controllers: usize,
    #[serde(default)]
    pub workers: usize,
    /// The user the Vault twins run as: the lab's own system user when the lab runs as
    /// root (as a packaged Vault runs as `vault`), else None (this process's user).
    #[serde(default)]
    pub vault_user: Option<String>,
    /// The story's configuration (see [`Options::story`]).
    #[serde(default)]
    pub story: bool,
    /// The services that run real servers (see [`Options::real`]).
    #[serde(default)]
    pub real: RealServers,
    /// Controllers replaced by a machine at another address (`lab replace --new-address`):
    /// controller N moved is `127.x.y.(40+N)`.
    #[serde(default)]
    pub moved: std::collections::BTreeSet<String>,
}

impl Lab {
    pub fn load(dir: &Path) -> Result<Lab, LabError> {
        let file = dir.join("lab.json");
        let bytes = std::fs::read(&file).map_err(|_| LabError::NotUp { dir: dir.into() })?;
        serde_json::from_slice(&bytes).map_err(|e| LabError::Damaged {
            file,
            reason: e.to_string(),
        })
    }

    pub fn address(&self, host: &str) -> String {
        match host.strip_prefix("worker") {
            Some(n) => format!("{}.{}", self.block, 20 + n.parse::<usize>().unwrap_or(1)),
            None => {
                let n: usize = host.trim_start_matches("controller").parse().unwrap_or(1);
                let base = if self.moved.contains(host) { 40 } else { 10 };
                format!("{}.{}", self.block, base + n)
            }
        }
    }

    /// Whether `host` is one of the workers, which run only a Consul and a Nomad client.
    pub fn is_worker(host: &str) -> bool {
        host.starts_with("worker")
    }

    /// The controllers, then the workers.
    pub fn hosts(&self) -> Vec<String> {
        self.controller_names()
            .into_iter()
            .chain((1..=self.workers).map(|n| format!("worker{n}")))
            .collect()
    }

    /// `controller1` to `controllerN`.
    pub fn controller_names(&self) -> Vec<String> {
        (1..=self.controllers)
            .map(|n| format!("controller{n}"))
            .collect()
    }

    /// The services a host runs, in start order.
    pub fn services(&self, host: &str) -> &'static [(&'static str, u16)] {
        if Lab::is_worker(host) {
            &SERVICES[..2]
        } else {
            SERVICES
        }
    }

    fn host_dir(&self, host: &str) -> PathBuf {
        self.dir.join(host)
    }

    /// Where Vault keeps its raft data on `host` (the topology's `raft_path`).
    pub fn raft_path(&self, host: &str) -> PathBuf {
        self.host_dir(host).join("vault").join("raft")
    }

    pub fn config_file(&self, host: &str, service: &str) -> PathBuf {
        self.host_dir(host).join(format!("{service}.hcl"))
    }

    fn pid_file(&self, host: &str, service: &str) -> PathBuf {
        self.host_dir(host)
            .join("run")
            .join(format!("{service}.pid"))
    }

    pub fn log_file(&self, host: &str, service: &str) -> PathBuf {
        self.host_dir(host)
            .join("log")
            .join(format!("{service}.log"))
    }

    pub fn topology_file(&self) -> PathBuf {
        self.dir.join("harun.hcl")
    }

    /// The file that holds Consul's management token in the story's configuration.
    pub fn consul_token_file(&self) -> PathBuf {
        self.dir.join("consul-token")
    }

    /// The API port of `service` here: Consul's is HTTPS 8501 in the story's configuration.
    pub fn port(&self, service: &str) -> Result<u16, String> {
        match (service, self.story) {
            ("consul", true) => Ok(CONSUL_HTTPS_PORT),
            _ => port_of(service),
        }
    }

    fn scheme(&self) -> &'static str {
        if self.story {
            "https"
        } else {
            "http"
        }
    }

    /// The API's base URL of `service` on `host`.
    pub fn base(&self, host: &str, service: &str) -> Result<String, String> {
        Ok(format!(
            "{}://{}:{}",
            self.scheme(),
            self.address(host),
            self.port(service)?
        ))
    }

    /// The supervisor's own calls to a service: its base URL, a client that trusts the
    /// lab's CA, and Consul's token in the story's configuration.
    fn api(&self, host: &str, service: &str) -> Result<Api, String> {
        let token = if self.story && service == "consul" {
            let token = std::fs::read_to_string(self.consul_token_file())
                .map_err(|e| format!("cannot read the lab's consul token: {e}"))?;
            Some(token.trim().to_string())
        } else {
            None
        };
        // A node whose config serves TLS (a test may turn it on) is read over TLS with its
        // own certificate, as an agent that requires client certificates wants.
        let config = self.config_file(host, service);
        let files = match service {
            // A real server's config is read by the real server; the twins' reader may
            // refuse what it accepts.
            _ if self.real.binary(service).is_some() => None,
            "nomad" => crate::nomad::Settings::load(&config)?.tls,
            "vault" => crate::vault::Settings::load(&config)?.tls,
            "consul" => crate::consul::Settings::load(&config)?.tls,
            _ => None,
        };
        let authority = format!("{}:{}", self.address(host), self.port(service)?);
        let (base, client) = match files {
            Some(files) if !self.story => (
                format!("https://{authority}"),
                crate::tls::supervisor_client(Some(&files), Duration::from_secs(5))?,
            ),
            _ => (self.base(host, service)?, lab_client(self)?),
        };
        Ok(Api {
            base,
            client,
            token,
        })
    }

    /// Removes what `up` wrote, and nothing else a user may keep in the directory.
    fn remove_files(&self) -> Result<(), String> {
        let dirs = self.hosts().into_iter().map(|h| self.host_dir(&h));
        for path in dirs {
            if path.exists() {
                std::fs::remove_dir_all(&path)
                    .map_err(|e| format!("cannot remove {}: {e}", path.display()))?;
            }
        }
        for name in [
            "harun.hcl",
            "vault-unseal-keys",
            "vault-root-token",
            "lab.json",
        ] {
            let path = self.dir.join(name);
            match std::fs::remove_file(&path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(format!("cannot remove {}: {e}", path.display()))
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// The pid of a running service, if it runs.
    pub fn pid(&self, host: &str, service: &str) -> Option<i32> {
        let pid: i32 = std::fs::read_to_string(self.pid_file(host, service))
            .ok()?
            .trim()
            .parse()
            .ok()?;
        // SAFETY: reaps the twin if this process started it and it ended (`--lab` runs
        // the lab inside the script's process, where an unreaped twin would look alive);
        // for anyone else's pid it fails harmlessly. One that init has yet to reap is a
        // zombie: stopped.
        unsafe { libc::waitpid(pid, std::ptr::null_mut(), libc::WNOHANG) };
        harun_runtime::process::is_running(pid).then_some(pid)
    }
}

/// Consul's HTTPS port, the story's (`ports { https = 8501 }`).
const CONSUL_HTTPS_PORT: u16 = 8501;

fn port_of(service: &str) -> Result<u16, String> {
    SERVICES
        .iter()
        .find(|(s, _)| *s == service)
        .map(|(_, p)| *p)
        .ok_or_else(|| format!("unknown service {service:?} (the lab runs {})", names()))
}

fn names() -> String {
    SERVICES
        .iter()
        .map(|(s, _)| *s)
        .collect::<Vec<_>>()
        .join(", ")
}

/// A 127.x.y block where nothing listens on the controllers' ports.
fn free_block() -> Result<String, String> {
    let seed = std::process::id() as u64
        ^ std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
    for attempt in 0..200u64 {
        let n = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(attempt * 1442695040888963407);
        let block = format!("127.{}.{}", 100 + (n >> 33) % 150, (n >> 17) % 256);
        let controllers = 11..=10 + CONTROLLER_COUNTS[CONTROLLER_COUNTS.len() - 1];
        let free = controllers.chain(21..=20 + MAX_WORKERS).all(|i| {
            SERVICES
                .iter()
                .map(|(_, port)| *port)
                .chain([CONSUL_HTTPS_PORT])
                .all(|port| TcpListener::bind(format!("{block}.{i}:{port}")).is_ok())
        });
        if free {
            return Ok(block);
        }
    }
    Err("no free 127.x.y.0/24 block found".into())
}

/// What the story's configuration adds to an agent's consul.hcl: a gossip key, the API on
/// HTTPS 8501 only, the lab's CA and the host's certificate, and ACLs with the token the
/// topology's token_file holds.
fn consul_story(lab: &Lab, host: &str, secrets: &StorySecrets) -> String {
    if !lab.story {
        return String::new();
    }
    let files = crate::pki::host_cert(&lab.dir, host);
    format!(
        r#"
ports {{
  http  = -1
  https = {CONSUL_HTTPS_PORT}
}}

ca_file         = "{ca}"
cert_file       = "{cert}"
key_file        = "{key}"
verify_incoming = false
verify_outgoing = true

acl {{
  enabled        = true
  default_policy = "deny"
  tokens {{
    master = "{token}"
    agent  = "{token}"
  }}
}}
"#,
        token = secrets.consul_token,
        ca = crate::pki::ca_file(&lab.dir).display(),
        cert = files.cert.display(),
        key = files.key.display(),
    )
}

/// The gossip key line of the story's configuration, a few lines above bootstrap_expect
/// as in the story's consul.hcl (a plan's diff context shows it, masked).
fn gossip_line(lab: &Lab, secrets: &StorySecrets) -> String {
    if lab.story {
        format!("encrypt    = \"{}\"\n", secrets.gossip_key)
    } else {
        String::new()
    }
}

/// The secrets of the story's configuration, as the configs hold them.
#[derive(Default)]
struct StorySecrets {
    consul_token: String,
    gossip_key: String,
}

impl StorySecrets {
    fn of(lab: &Lab) -> StorySecrets {
        if !lab.story {
            return StorySecrets::default();
        }
        use base64::Engine;
        let gossip: [u8; 32] = rand::random();
        StorySecrets {
            consul_token: uuid::Uuid::new_v4().to_string(),
            gossip_key: base64::engine::general_purpose::STANDARD.encode(gossip),
        }
    }
}

/// Nomad's consul stanza for the host's own agent, with TLS and the token in the story.
fn nomad_consul_stanza(lab: &Lab, host: &str, secrets: &StorySecrets) -> String {
    let address = lab.address(host);
    if !lab.story {
        return format!("\nconsul {{\n  address = \"{address}:8500\"\n}}\n");
    }
    format!(
        "\nconsul {{\n  address = \"{address}:{CONSUL_HTTPS_PORT}\"\n  ssl     = true\n  ca_file = \"{}\"\n  token   = \"{}\"\n}}\n",
        crate::pki::ca_file(&lab.dir).display(),
        secrets.consul_token
    )
}

/// Nomad's HTTP API on TLS in the story's configuration.
fn nomad_tls(lab: &Lab, host: &str) -> String {
    if !lab.story {
        return String::new();
    }
    let files = crate::pki::host_cert(&lab.dir, host);
    format!(
        "\ntls {{\n  http      = true\n  ca_file   = \"{}\"\n  cert_file = \"{}\"\n  key_file  = \"{}\"\n}}\n",
        crate::pki::ca_file(&lab.dir).display(),
        files.cert.display(),
        files.key.display()
    )
}

fn consul_config(lab: &Lab, host: &str, secrets: &StorySecrets) -> String {
    let address = lab.address(host);
    format!(
        r#"# Consul server on {host} (harun lab): a single server, as in the story's first state.
datacenter = "homelab"
data_dir   = "{data}"
node_name  = "{host}"
{gossip}
server           = true
bootstrap_expect = 1

bind_addr   = "{address}"
client_addr = "{address}"

{ui}{story}"#,
        data = lab.host_dir(host).join("consul").display(),
        ui = crate::real::consul_ui_line(lab.real.consul.as_ref()),
        gossip = gossip_line(lab, secrets),
        story = consul_story(lab, host, secrets),
    )
}

/// A worker's Consul client agent: the local agent its Nomad client registers with.
fn consul_client_config(lab: &Lab, host: &str, secrets: &StorySecrets) -> String {
    format!(
        r#"# Consul client on {host} (harun lab): the local agent of this worker's services.
datacenter = "homelab"
data_dir   = "{data}"
node_name  = "{host}"
{gossip}
server     = false
retry_join = ["{first}"]

bind_addr   = "{address}"
client_addr = "{address}"
{story}"#,
        address = lab.address(host),
        first = lab.address("controller1"),
        data = lab.host_dir(host).join("consul").display(),
        gossip = gossip_line(lab, secrets),
        story = consul_story(lab, host, secrets),
    )
}

/// A worker's Nomad client: it finds the servers through its local Consul agent, or
/// without Consul through server_join naming the one server of the story's first state.
fn nomad_client_config(lab: &Lab, host: &str, consul: bool, secrets: &StorySecrets) -> String {
    let address = lab.address(host);
    let (join, consul) = if consul {
        (String::new(), nomad_consul_stanza(lab, host, secrets))
    } else {
        (
            format!(
                "\n\n  server_join {{\n    retry_join = [\"{}\"]\n  }}",
                lab.address("controller1")
            ),
            String::new(),
        )
    };
    format!(
        r#"# Nomad client on {host} (harun lab): runs jobs, serves no raft.
datacenter = "homelab"
data_dir   = "{data}"
name       = "{host}"
bind_addr  = "{address}"

client {{
  enabled = true{join}
}}
{consul}{tls}"#,
        data = lab.host_dir(host).join("nomad").display(),
        tls = nomad_tls(lab, host),
    )
}

fn nomad_config(lab: &Lab, host: &str, consul: bool, secrets: &StorySecrets) -> String {
    let address = lab.address(host);
    let consul = if consul {
        nomad_consul_stanza(lab, host, secrets)
    } else {
        String::new()
    };
    format!(
        r#"# Nomad on {host} (harun lab): one server that is also a client, as in the story's
# first state.
datacenter = "homelab"
data_dir   = "{data}"
name       = "{host}"
bind_addr  = "{address}"

server {{
  enabled          = true
  bootstrap_expect = 1
}}

client {{
  enabled = true
}}
{consul}{tls}"#,
        data = lab.host_dir(host).join("nomad").display(),
        tls = nomad_tls(lab, host),
    )
}

/// A real OpenBao's vault.hcl: OpenBao has no file storage, so the first state is the
/// other common homelab start, a single-node raft server, which vault-raft.rhai grows to
/// three; and no service_registration (OpenBao refuses the block: vault-raft.rhai
/// registers it at the node's agent).
fn openbao_config(lab: &Lab, host: &str) -> String {
    let address = lab.address(host);
    let scheme = lab.scheme();
    let listener_tls = if lab.story {
        let files = crate::pki::host_cert(&lab.dir, host);
        format!(
            "tls_cert_file = \"{}\"\n  tls_key_file  = \"{}\"",
            files.cert.display(),
            files.key.display()
        )
    } else {
        "tls_disable = true".to_string()
    };
    format!(
        r#"# OpenBao on {host} (harun lab): a single raft node, as a homelab starts on OpenBao.
ui = true

storage "raft" {{
  path    = "{raft}"
  node_id = "{host}"
}}

listener "tcp" {{
  address     = "{address}:8200"
  {listener_tls}
}}

api_addr     = "{scheme}://{address}:8200"
cluster_addr = "{scheme}://{address}:8201"
"#,
        raft = lab.raft_path(host).display(),
    )
}

fn vault_config(lab: &Lab, host: &str, secrets: &StorySecrets) -> String {
    if lab.real.openbao.is_some() {
        return openbao_config(lab, host);
    }
    let address = lab.address(host);
    let scheme = lab.scheme();
    let data = lab.host_dir(host).join("vault").join("data");
    let (listener_tls, registration) = if lab.story {
        let files = crate::pki::host_cert(&lab.dir, host);
        (
            format!(
                "tls_cert_file = \"{}\"\n  tls_key_file  = \"{}\"",
                files.cert.display(),
                files.key.display()
            ),
            // The story's registration: the local agent on HTTPS with a token.
            format!(
                "address     = \"{address}:{CONSUL_HTTPS_PORT}\"\n  scheme      = \"https\"\n  token       = \"{}\"\n  tls_ca_file = \"{}\"",
                secrets.consul_token,
                crate::pki::ca_file(&lab.dir).display()
            ),
        )
    } else {
        (
            "tls_disable = true".to_string(),
            format!("address = \"{address}:8500\""),
        )
    };
    format!(
        r#"# Vault on {host} (harun lab): file storage, as in the story's first state.
ui = true

storage "file" {{
  path = "{data}"
}}

listener "tcp" {{
  address     = "{address}:8200"
  {listener_tls}
}}

api_addr     = "{scheme}://{address}:8200"
cluster_addr = "{scheme}://{address}:8201"

service_registration "consul" {{
  {registration}
}}
"#,
        data = data.display(),
    )
}

fn topology(lab: &Lab, harun: &Path) -> String {
    let dir = lab.dir.display();
    // The user and group that own Vault's raft data: the lab's Vault user as root, else
    // whoever runs the lab.
    let vault_user = lab
        .vault_user
        .clone()
        .unwrap_or_else(crate::service_user::current_user_name);
    let mut out = format!(
        r#"# The lab's topology, written by `harun lab up`: {controllers} controllers on loopback,
# services run by the lab's own service manager. Point scripts at it with
# --topology {dir}/harun.hcl (or HARUN_TOPOLOGY).
defaults {{
  transport       = "local"
  service_manager = "{harun} lab ctl --dir {dir} {{name}} {{service}} {{action}}"
  boot_id_file    = "{dir}/{{name}}/boot_id"
  # Touch it to have rolling-restart.rhai --set reboot=needed reboot the host; a reboot
  # removes it, as /var/run is emptied at boot.
  reboot_required_file = "{dir}/{{name}}/reboot-required"
  # Where scripts/install.rhai puts harun on each host.
  harun_binary    = "{dir}/{{name}}/bin/harun"
  harun_dir       = "{dir}/{{name}}/etc/harun"
  systemd_dir     = "{dir}/{{name}}/systemd"
}}

consul {{
  address     = "{scheme}://{{address}}:{consul_port}"
  config_file = "{dir}/{{name}}/consul.hcl"
  data_dir    = "{dir}/{{name}}/consul"{consul_tls}
}}

nomad {{
  address     = "{scheme}://{{address}}:4646"
  config_file = "{dir}/{{name}}/nomad.hcl"
  data_dir    = "{dir}/{{name}}/nomad"{ca}
}}

vault {{
  address         = "{scheme}://{{address}}:8200"
  cluster_address = "{scheme}://{{address}}:8201"{ca}
  config_file     = "{dir}/{{name}}/vault.hcl"
  raft_path       = "{dir}/{{name}}/vault/raft"
  cli             = "{vault_cli}"{flavor}
  keys_file       = "{dir}/vault-unseal-keys"
  # Each controller's own part of the keys (scripts/unseal.rhai --set split=true).
  unseal_share_file = "{dir}/{{name}}/vault-unseal-share"
  token_file      = "{dir}/vault-root-token"
  user            = "{vault_user}"{vault_group}
}}

"#,
        harun = harun.display(),
        controllers = lab.controllers,
        scheme = lab.scheme(),
        consul_port = lab.port("consul").unwrap_or(8500),
        consul_tls = if lab.story {
            format!(
                "\n  token_file  = \"{}\"\n  ca_file     = \"{}\"",
                lab.consul_token_file().display(),
                crate::pki::ca_file(&lab.dir).display()
            )
        } else {
            String::new()
        },
        ca = if lab.story {
            format!(
                "\n  ca_file     = \"{}\"",
                crate::pki::ca_file(&lab.dir).display()
            )
        } else {
            String::new()
        },
        vault_user = vault_user,
        vault_cli = match &lab.real.openbao {
            Some(bao) => bao.path.display().to_string(),
            None => format!("{} lab vault", harun.display()),
        },
        flavor = if lab.real.openbao.is_some() {
            "\n  flavor          = \"openbao\""
        } else {
            ""
        },
        vault_group = crate::service_user::lookup(&vault_user)
            .and_then(|a| crate::service_user::group_name(a.gid))
            .map(|g| format!("\n  group           = \"{g}\""))
            .unwrap_or_default(),
    );
    for host in lab.hosts() {
        let role = if Lab::is_worker(&host) {
            "worker"
        } else {
            "controller"
        };
        out.push_str(&format!(
            "host \"{host}\" {{\n  address = \"{}\"\n  roles   = [\"{role}\"]\n}}\n",
            lab.address(&host)
        ));
    }
    out
}

fn write_private(path: &Path, text: &str) -> Result<(), String> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    f.write_all(text.as_bytes())
        .map_err(|e| format!("cannot write {}: {e}", path.display()))
}

/// A lab directory ready for a new lab: empty, or an earlier stopped lab removed when
/// `fresh` says so. A running lab, or an earlier one without `fresh`, is refused.
fn make_room(dir: &Path, fresh: bool) -> Result<(), LabError> {
    if dir.join("lab.json").exists() {
        let existing = Lab::load(dir)?;
        let running: Vec<String> = existing
            .hosts()
            .iter()
            .flat_map(|h| existing.services(h).iter().map(move |(s, _)| (h, *s)))
            .filter(|(h, s)| existing.pid(h, s).is_some())
            .map(|(h, s)| format!("{s} on {h}"))
            .collect();
        if !running.is_empty() {
            return Err(format!(
                "a lab is already running in {} ({}); stop it with `harun lab down --dir {}`",
                dir.display(),
                running.join(", "),
                dir.display()
            )
            .into());
        }
        // Its raft and KV data would start the new lab past the story's first state: a
        // Consul that remembers three servers elects no leader alone.
        if !fresh {
            return Err(format!(
                "{} holds an earlier lab (stopped), whose data is past the story's first state; \
                 pass --fresh to replace it, or choose another --dir",
                dir.display()
            )
            .into());
        }
        existing.remove_files()?;
    } else if dir.join("controller1").exists() {
        return Err(format!(
            "{} holds a lab's controller1/ without its lab.json; remove what is left of that \
             lab, or choose another --dir",
            dir.display()
        )
        .into());
    }
    Ok(())
}

/// `harun lab up`: returns the topology path.
pub fn up(dir: &Path, harun: &Path, options: Options) -> Result<PathBuf, LabError> {
    if options.workers > MAX_WORKERS {
        return Err(format!("a lab has at most {MAX_WORKERS} workers").into());
    }
    check_controllers(options.controllers)?;
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    // The lab's topology decides what runs as whoever starts the lab: its directory must
    // be that user's own, not a symlink or a directory another user may write to.
    harun_runtime::private_fs::check_own_dir(dir, "the lab's directory")
        .map_err(|e| e.to_string())?;
    let dir = std::fs::canonicalize(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    make_room(&dir, options.fresh)?;
    let vault_account = if crate::service_user::is_root() {
        let account = crate::service_user::ensure_lab_user()?;
        crate::service_user::check_reachable(&dir, &account)?;
        Some(account)
    } else {
        None
    };
    let lab = Lab {
        dir: dir.clone(),
        block: free_block()?,
        controllers: options.controllers,
        moved: Default::default(),
        workers: options.workers,
        vault_user: vault_account.as_ref().map(|a| a.name.clone()),
        story: options.story,
        real: options.real.clone(),
    };
    let secrets = StorySecrets::of(&lab);
    if lab.story {
        let hosts: Vec<(String, String)> = lab
            .hosts()
            .into_iter()
            .map(|h| {
                let a = lab.address(&h);
                (h, a)
            })
            .collect();
        crate::pki::make(&dir, &hosts)?;
        write_private(
            &lab.consul_token_file(),
            &(secrets.consul_token.clone() + "\n"),
        )?;
        // Vault reads its key as its own user: the key's group is Vault's.
        if let Some(account) = &vault_account {
            for host in lab.controller_names() {
                let key = crate::pki::host_cert(&dir, &host).key;
                std::os::unix::fs::chown(&key, None, Some(account.gid)).map_err(|e| {
                    format!("cannot give {} to {}: {e}", key.display(), account.name)
                })?;
            }
        }
    }
    for host in lab.hosts() {
        make_host(
            &lab,
            &host,
            options.nomad_consul,
            &secrets,
            vault_account.as_ref(),
        )?;
    }
    write_private(
        &dir.join("lab.json"),
        &serde_json::to_string_pretty(&lab).expect("lab serializes"),
    )?;
    std::fs::write(lab.topology_file(), topology(&lab, harun))
        .map_err(|e| format!("cannot write the topology: {e}"))?;
    // A lab that failed half-way is stopped rather than left running in a state no script
    // expects; its logs stay for the reader.
    if let Err(e) = start_first_state(&lab, harun) {
        let _ = down(&dir);
        return Err(format!(
            "{e}; the lab was stopped (its logs are under {}/*/log)",
            dir.display()
        )
        .into());
    }
    Ok(lab.topology_file())
}

/// A host's directories, configs (the story's first state) and boot id; Vault's directory
/// given to its user.
fn make_host(
    lab: &Lab,
    host: &str,
    nomad_consul: bool,
    secrets: &StorySecrets,
    vault_account: Option<&crate::service_user::Account>,
) -> Result<(), LabError> {
    let configs = if Lab::is_worker(host) {
        vec![
            ("consul", consul_client_config(lab, host, secrets)),
            (
                "nomad",
                nomad_client_config(lab, host, nomad_consul, secrets),
            ),
        ]
    } else {
        vec![
            ("consul", consul_config(lab, host, secrets)),
            ("nomad", nomad_config(lab, host, nomad_consul, secrets)),
            ("vault", vault_config(lab, host, secrets)),
        ]
    };
    for sub in ["run", "log"]
        .into_iter()
        .chain(configs.iter().map(|c| c.0))
    {
        std::fs::create_dir_all(lab.host_dir(host).join(sub))
            .map_err(|e| format!("cannot create the lab's directories: {e}"))?;
    }
    for (service, text) in configs {
        let path = lab.config_file(host, service);
        std::fs::write(&path, text).map_err(|e| format!("cannot write a config: {e}"))?;
        // The story's configs hold the Consul token and the gossip key: not for others
        // to read (Vault's is readable by Vault's group).
        if lab.story {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640))
                .map_err(|e| format!("cannot set the mode of {}: {e}", path.display()))?;
            if let (Some(account), "vault") = (vault_account, service) {
                std::os::unix::fs::chown(&path, None, Some(account.gid)).map_err(|e| {
                    format!("cannot give {} to {}: {e}", path.display(), account.name)
                })?;
            }
        }
    }
    new_boot_id(lab, host)?;
    // The first state's single raft node keeps its data here from the start.
    if lab.real.openbao.is_some() && host == "controller1" {
        std::fs::create_dir_all(lab.raft_path(host))
            .map_err(|e| format!("cannot create the lab's directories: {e}"))?;
    }
    // Vault's directory belongs to its user, as a package's /opt/vault does.
    if let (Some(account), false) = (vault_account, Lab::is_worker(host)) {
        crate::service_user::chown(&lab.host_dir(host).join("vault"), account)?;
        if lab.raft_path(host).exists() {
            crate::service_user::chown(&lab.raft_path(host), account)?;
        }
    }
    Ok(())
}

/// `harun lab replace HOST`: the controller's machine dies for good and a fresh one takes
/// its place under the same name and address: its services stopped, their data gone, its
/// configs those of a new machine (the story's first state), its services installed but
/// not started, a new boot. With `new_address`, the new machine is at another address
/// (127.x.y.(40+N)), and the lab's topology says so (as its owner would write it).
/// scripts/replace-controller.rhai then brings it in.
pub fn replace(dir: &Path, harun: &Path, host: &str, new_address: bool) -> Result<(), LabError> {
    let mut lab = Lab::load(dir)?;
    if !lab.controller_names().iter().any(|h| h == host) {
        return Err(format!(
            "{host} is not one of the lab's controllers ({})",
            lab.controller_names().join(", ")
        )
        .into());
    }
    if lab.story {
        return Err(
            "a lab in the story's configuration cannot replace a controller yet: its \
                    gossip key and token are not kept apart from the configs"
                .to_string()
                .into(),
        );
    }
    for (service, _) in lab.services(host).iter().rev() {
        stop(&lab, host, service)?;
    }
    // Nothing of the old machine is left: data, configs, their backups, logs.
    let old = lab.host_dir(host);
    std::fs::remove_dir_all(&old).map_err(|e| format!("cannot remove {}: {e}", old.display()))?;
    if new_address && !lab.moved.contains(host) {
        lab.moved.insert(host.to_string());
        let address = lab.address(host);
        for (_, port) in SERVICES {
            TcpListener::bind(format!("{address}:{port}"))
                .map_err(|e| format!("{address}:{port} is taken: {e}"))?;
        }
        write_private(
            &lab.dir.join("lab.json"),
            &serde_json::to_string_pretty(&lab).expect("lab serializes"),
        )?;
        std::fs::write(lab.topology_file(), topology(&lab, harun))
            .map_err(|e| format!("cannot write the topology: {e}"))?;
    }
    let nomad_consul = std::fs::read_to_string(lab.config_file("controller1", "nomad"))
        .map(|t| t.contains("\nconsul {"))
        .unwrap_or(true);
    let account = lab
        .vault_user
        .as_deref()
        .and_then(crate::service_user::lookup);
    make_host(
        &lab,
        host,
        nomad_consul,
        &StorySecrets::default(),
        account.as_ref(),
    )
}

fn start_first_state(lab: &Lab, harun: &Path) -> Result<(), LabError> {
    start(lab, harun, "controller1", "consul")?;
    // A real Consul elects itself after its raft timeouts, a few seconds.
    wait_for_leader(lab, "controller1", "consul", Duration::from_secs(30))?;
    seed(lab)?;
    start(lab, harun, "controller1", "nomad")?;
    start(lab, harun, "controller1", "vault")?;
    init_vault(lab)?;
    wait_for_leader(lab, "controller1", "nomad", Duration::from_secs(10))?;
    seed_jobs(lab)?;
    for host in lab.hosts().iter().filter(|h| Lab::is_worker(h)) {
        start(lab, harun, host, "consul")?;
        start(lab, harun, host, "nomad")?;
    }
    Ok(())
}

/// Vault in the story's first state: initialised, unsealed, holding secrets; the unseal
/// keys and the root token go to mode-0600 files in the lab's directory.
fn init_vault(lab: &Lab) -> Result<(), String> {
    let vault = lab.api("controller1", "vault")?;
    // A raft node (real OpenBao) answers the init once it has elected itself: its raft
    // heartbeat timeout (5 s) and an election later.
    let reply = vault.call_within(
        "PUT",
        "/v1/sys/init",
        &format!("{{\"secret_shares\": {VAULT_SHARES}, \"secret_threshold\": {VAULT_THRESHOLD}}}"),
        &[],
        Duration::from_secs(60),
    )?;
    let init: serde_json::Value =
        serde_json::from_str(&reply).map_err(|e| format!("vault init answered {reply:?}: {e}"))?;
    let keys: Vec<String> = init["keys"]
        .as_array()
        .map(|k| {
            k.iter()
                .filter_map(|k| k.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    let token = init["root_token"].as_str().unwrap_or_default().to_string();
    write_private(
        &lab.dir.join("vault-unseal-keys"),
        &(keys.join("\n") + "\n"),
    )?;
    write_private(&lab.dir.join("vault-root-token"), &(token.clone() + "\n"))?;
    for key in keys.iter().take(VAULT_THRESHOLD) {
        vault.call(
            "PUT",
            "/v1/sys/unseal",
            &format!("{{\"key\": \"{key}\"}}"),
            &[],
        )?;
    }
    // A raft node (real OpenBao) is active only once it has elected itself, seconds after
    // its unseal; a KV v2 mount takes writes only once its upgrade has run.
    let within = |what: &str, call: &dyn Fn() -> Result<String, String>| {
        within_30s(&format!("vault on controller1: {what}"), call)
    };
    within("not active", &|| vault.get("/v1/sys/health"))?;
    let authed = |path: &str, body: &str| {
        vault.call("POST", path, body, &[("X-Vault-Token", token.as_str())])
    };
    authed(
        "/v1/sys/mounts/secret",
        r#"{"type": "kv", "options": {"version": "2"}}"#,
    )?;
    for (path, data) in [
        (
            "homelab/nas",
            r#"{"username": "backup", "password": "correct-horse-battery"}"#,
        ),
        (
            "homelab/wifi",
            r#"{"ssid": "homelab", "psk": "not-a-real-psk"}"#,
        ),
        (
            "homelab/grafana",
            r#"{"admin_password": "grafana-lab-only"}"#,
        ),
    ] {
        within("the KV v2 mount takes no writes", &|| {
            authed(
                &format!("/v1/secret/data/{path}"),
                &format!("{{\"data\": {data}}}"),
            )
        })?;
    }
    Ok(())
}

/// The story's first state holds data worth keeping: some KV entries.
fn seed(lab: &Lab) -> Result<(), String> {
    let consul = lab.api("controller1", "consul")?;
    for (key, value) in [
        ("homelab/dns/zone", "home.arpa"),
        ("homelab/backup/schedule", "0 3 * * *"),
        ("homelab/nomad/datacenter", "homelab"),
    ] {
        // A real Consul with ACLs puts its master token into the state a moment after it
        // leads (agent/consul/leader.go `initializeACLs`): until then, 403 ACL not found.
        within_30s("consul on controller1: KV not written", &|| {
            consul.call("PUT", &format!("/v1/kv/{key}"), value, &[])
        })?;
    }
    Ok(())
}

/// Calls `call` until it succeeds, for up to 30 s; the last error names `what`.
fn within_30s(what: &str, call: &dyn Fn() -> Result<String, String>) -> Result<(), String> {
    let started = Instant::now();
    loop {
        match call() {
            Ok(_) => return Ok(()),
            Err(e) if started.elapsed() > Duration::from_secs(30) => {
                return Err(format!("{what} within 30s: {e}"))
            }
            Err(_) => std::thread::sleep(Duration::from_millis(200)),
        }
    }
}

/// The homelab's jobs, so `nomad job status` has something to show and a drain has
/// allocations to move: traefik on every node, two grafana, a backup that has run.
fn seed_jobs(lab: &Lab) -> Result<(), String> {
    let nomad = lab.api("controller1", "nomad")?;
    for (id, kind, count) in [
        ("traefik", "system", 1),
        ("grafana", "service", 2),
        ("backup", "batch", 1),
    ] {
        nomad.call(
            "PUT",
            "/v1/jobs",
            &format!(
                r#"{{"Job": {{"ID": "{id}", "Name": "{id}", "Type": "{kind}", "Datacenters": ["homelab"], "TaskGroups": [{{"Name": "{id}", "Count": {count}}}]}}}}"#
            ),
            &[],
        )?;
    }
    Ok(())
}

/// The supervisor's own calls to one service of one host.
struct Api {
    base: String,
    client: reqwest::blocking::Client,
    /// Consul's token in the story's configuration.
    token: Option<String>,
}

impl Api {
    fn call(
        &self,
        method: &str,
        path: &str,
        body: &str,
        headers: &[(&str, &str)],
    ) -> Result<String, String> {
        self.call_within(method, path, body, headers, Duration::from_secs(5))
    }

    /// `call` with its own time limit.
    fn call_within(
        &self,
        method: &str,
        path: &str,
        body: &str,
        headers: &[(&str, &str)],
        limit: Duration,
    ) -> Result<String, String> {
        let url = format!("{}{path}", self.base);
        let method: reqwest::Method = method.parse().map_err(|_| format!("bad method {method}"))?;
        let mut request = self
            .client
            .request(method.clone(), &url)
            .timeout(limit)
            .body(body.to_string());
        if let Some(token) = &self.token {
            request = request.header("X-Consul-Token", token);
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = request.send().map_err(|e| format!("{url}: {e}"))?;
        let status = response.status();
        let text = response.text().map_err(|e| format!("{url}: {e}"))?;
        if !status.is_success() {
            return Err(format!("{method} {url}: {} {text}", status.as_u16()));
        }
        Ok(text)
    }

    fn get(&self, path: &str) -> Result<String, String> {
        self.call("GET", path, "", &[])
    }
}

/// The supervisor's client: plain HTTP, or in the story's configuration one that trusts
/// the lab's CA (and nothing else).
fn lab_client(lab: &Lab) -> Result<reqwest::blocking::Client, String> {
    crate::tls::install_crypto();
    let mut builder = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(5))
        .connect_timeout(Duration::from_secs(2))
        .no_proxy();
    if lab.story {
        let ca = crate::pki::ca_file(&lab.dir);
        let pem = std::fs::read(&ca).map_err(|e| format!("{}: {e}", ca.display()))?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem)
            .map_err(|e| format!("{}: {e}", ca.display()))?;
        builder = builder.tls_certs_only(certs);
    }
    builder.build().map_err(|e| e.to_string())
}

fn wait_for_leader(lab: &Lab, host: &str, service: &str, timeout: Duration) -> Result<(), String> {
    let api = lab.api(host, service)?;
    let started = Instant::now();
    loop {
        if let Ok(body) = api.get("/v1/status/leader") {
            if body.trim() != "\"\"" && !body.trim().is_empty() {
                return Ok(());
            }
        }
        if started.elapsed() > timeout {
            return Err(format!(
                "{service} on {host} elected no leader within {}s",
                timeout.as_secs()
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Starts a service's twin in the background and waits until it answers on its port; a
/// twin that refuses its config exits, and its own words are the error.
pub fn start(lab: &Lab, harun: &Path, host: &str, service: &str) -> Result<(), LabError> {
    let port = lab.port(service)?;
    if lab.pid(host, service).is_some() {
        return Ok(());
    }
    let log_path = lab.log_file(host, service);
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .map_err(|e| format!("cannot open {}: {e}", log_path.display()))?;
    let log_start = std::fs::metadata(&log_path).map(|m| m.len()).unwrap_or(0);
    // Started through a shell that exits at once, so the twin is never this process's
    // child: whoever stops it later (another `lab ctl`), init reaps it, and no zombie of
    // a long-running `--lab` script looks alive.
    let mut cmd = Command::new("/bin/sh");
    cmd.arg("-c")
        .arg(r#"log="$1"; shift; "$@" >>"$log" 2>&1 </dev/null & echo $!"#)
        .arg("sh")
        .arg(&log_path);
    match (lab.real.binary(service), service) {
        // The real agent, as its systemd unit starts it.
        (Some(real), "consul") => cmd.arg(&real.path).arg("agent").arg(format!(
            "-config-file={}",
            lab.config_file(host, service).display()
        )),
        // The real server as its own user (the unit's User=), as the twin runs.
        (Some(real), _) => {
            if let Some(account) = lab
                .vault_user
                .as_deref()
                .and_then(crate::service_user::lookup)
            {
                cmd.args([
                    "setpriv".to_string(),
                    format!("--reuid={}", account.uid),
                    format!("--regid={}", account.gid),
                    "--clear-groups".to_string(),
                ]);
            }
            cmd.arg(&real.path).arg("server").arg(format!(
                "-config={}",
                lab.config_file(host, service).display()
            ))
        }
        (None, _) => cmd
            .arg(harun)
            .args(["lab", "serve", service, "--config"])
            .arg(lab.config_file(host, service))
            .args(match (service, &lab.vault_user) {
                ("vault", Some(user)) => vec!["--user", user.as_str()],
                _ => vec![],
            }),
    };
    cmd.env("HARUN_LOG", "info")
        .stdin(Stdio::null())
        .stderr(Stdio::null());
    // Its own session: a Ctrl-C meant for a script does not stop the lab.
    unsafe {
        use std::os::unix::process::CommandExt;
        cmd.pre_exec(|| {
            libc::setsid();
            Ok(())
        });
    }
    let out = cmd
        .output()
        .map_err(|e| format!("cannot start {service} on {host}: {e}"))?;
    let pid: i32 = String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .map_err(|_| format!("cannot start {service} on {host}: no pid"))?;
    std::fs::write(lab.pid_file(host, service), pid.to_string())
        .map_err(|e| format!("cannot write the pid file: {e}"))?;
    let addr: SocketAddr = format!("{}:{port}", lab.address(host))
        .parse()
        .expect("an address");
    let started = Instant::now();
    // A real agent reads its data and opens its ports more slowly than a twin.
    let limit = Duration::from_secs(if lab.real.binary(service).is_some() {
        30
    } else {
        10
    });
    loop {
        if lab.pid(host, service).is_none() {
            let _ = std::fs::remove_file(lab.pid_file(host, service));
            let text = std::fs::read_to_string(&log_path).unwrap_or_default();
            let tail = text.get(log_start as usize..).unwrap_or("").trim();
            return Err(LabError::service(host, service, format!("exited: {tail}")));
        }
        if TcpStream::connect_timeout(&addr, Duration::from_millis(100)).is_ok() {
            return Ok(());
        }
        if started.elapsed() > limit {
            return Err(LabError::service(
                host,
                service,
                format!("did not answer on {addr} within {}s", limit.as_secs()),
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub fn stop(lab: &Lab, host: &str, service: &str) -> Result<(), LabError> {
    port_of(service)?;
    let Some(pid) = lab.pid(host, service) else {
        let _ = std::fs::remove_file(lab.pid_file(host, service));
        return Ok(());
    };
    // SAFETY: signalling a pid we started.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    let started = Instant::now();
    while lab.pid(host, service).is_some() {
        if started.elapsed() > Duration::from_secs(5) {
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = std::fs::remove_file(lab.pid_file(host, service));
    Ok(())
}

/// The lab's service manager: `lab ctl HOST SERVICE start|stop|restart|status`.
/// Exit status: 0 done (or active, for status), 3 inactive, 1 failed.
pub fn ctl(
    dir: &Path,
    harun: &Path,
    host: &str,
    service: &str,
    action: &str,
) -> Result<i32, LabError> {
    let lab = Lab::load(dir)?;
    if !lab.hosts().iter().any(|h| h == host) {
        return Err(LabError::Unknown(format!("no host {host:?} in the lab")));
    }
    if service == "host" {
        return match action {
            "reboot" if std::env::var_os(JOB).is_none() => {
                run_as_job(&lab, harun, host, service, action)
            }
            "reboot" => reboot(&lab, harun, host).map(|_| 0),
            "status" => Ok(0),
            other => Err(LabError::Unknown(format!(
                "unknown host action {other:?} (reboot, status)"
            ))),
        };
    }
    if port_of(service).is_ok() && !lab.services(host).iter().any(|(s, _)| *s == service) {
        return Err(LabError::Unknown(format!(
            "{host} runs no {service} in the lab"
        )));
    }
    let changes = matches!(action, "start" | "stop" | "restart");
    if changes && std::env::var_os(JOB).is_none() {
        return run_as_job(&lab, harun, host, service, action);
    }
    // One job at a time per service, as systemd queues jobs for a unit.
    let _queue = if changes {
        Some(job_lock(&lab, host, service)?)
    } else {
        None
    };
    match action {
        "start" => start(&lab, harun, host, service).map(|_| 0),
        "stop" => stop(&lab, host, service).map(|_| 0),
        "restart" => {
            stop(&lab, host, service)?;
            start(&lab, harun, host, service).map(|_| 0)
        }
        "status" => {
            port_of(service)?;
            Ok(if lab.pid(host, service).is_some() {
                0
            } else {
                3
            })
        }
        // The main process id, as systemd's MainPID (for `service::main_pid`).
        "main-pid" => {
            port_of(service)?;
            Ok(match lab.pid(host, service) {
                Some(pid) => {
                    println!("{pid}");
                    0
                }
                None => 3,
            })
        }
        other => Err(LabError::Unknown(format!(
            "unknown action {other:?} (start, stop, restart, status, main-pid)"
        ))),
    }
}

/// A reboot as the lab gives one (`lab ctl HOST host reboot`, the service manager's
/// `{service}` = host): every service of the host stops, the host gets a new boot id, and
/// after a moment the services that ran start again, as enabled units do at boot (Vault
/// sealed, as after a real boot). Like a real reboot it runs to its end even when the
/// script that asked for it dies.
fn reboot(lab: &Lab, harun: &Path, host: &str) -> Result<(), LabError> {
    let running: Vec<&str> = lab
        .services(host)
        .iter()
        .map(|(s, _)| *s)
        .filter(|s| lab.pid(host, s).is_some())
        .collect();
    for (service, _) in lab.services(host).iter().rev() {
        let _queue = job_lock(lab, host, service)?;
        stop(lab, host, service)?;
    }
    new_boot_id(lab, host)?;
    // /var/run is a tmpfs: what asked for the reboot is gone after it.
    let _ = std::fs::remove_file(lab.host_dir(host).join("reboot-required"));
    std::thread::sleep(Duration::from_secs(1));
    for service in running {
        let _queue = job_lock(lab, host, service)?;
        start(lab, harun, host, service)?;
    }
    Ok(())
}

/// Gives the host a boot id of its own (`boot_id_file` in the lab's topology).
fn new_boot_id(lab: &Lab, host: &str) -> Result<(), String> {
    let id = std::fs::read_to_string("/proc/sys/kernel/random/uuid")
        .map_err(|e| format!("cannot make a boot id: {e}"))?;
    let path = lab.host_dir(host).join("boot_id");
    std::fs::write(&path, id).map_err(|e| format!("cannot write {}: {e}", path.display()))
}

/// Set in a job's environment: this `lab ctl` carries the action out itself.
const JOB: &str = "HARUN_LAB_JOB";

/// Like systemd, which finishes a restart job whose client was killed, the lab carries
/// out a start, stop or restart in a job of its own (its own session, its output in a
/// file): a script killed half way through a restart (SIGKILL, or Ctrl-C, which drops the
/// `lab ctl` it waits on) does not leave the service stopped. The caller waits for the
/// job and relays its words and exit status.
fn run_as_job(
    lab: &Lab,
    harun: &Path,
    host: &str,
    service: &str,
    action: &str,
) -> Result<i32, LabError> {
    let out_path = lab
        .host_dir(host)
        .join("run")
        .join(format!("{service}.{action}.{}.out", std::process::id()));
    let mut out = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&out_path)
        .map_err(|e| format!("cannot create {}: {e}", out_path.display()))?;
    // Unlinked at once: the open handles keep it, and nothing is left behind when the
    // caller is killed.
    let _ = std::fs::remove_file(&out_path);
    let job_out = out.try_clone().map_err(|e| e.to_string())?;
    let job_err = out.try_clone().map_err(|e| e.to_string())?;
    let mut cmd = Command::new(harun);
    cmd.args(["lab", "ctl", "--dir"])
        .arg(&lab.dir)
        .args([host, service, action])
        .env(JOB, "1")
        .stdin(Stdio::null())
        .stdout(job_out)
        .stderr(job_err);
    unsafe {
        use std::os::unix::process::CommandExt;
        cmd.pre_exec(|| {
            libc::setsid();
            Ok(())
        });
    }
    let status = cmd
        .status()
        .map_err(|e| format!("cannot run the {action} job of {service} on {host}: {e}"))?;
    let mut text = String::new();
    {
        use std::io::{Read, Seek};
        let _ = out.seek(std::io::SeekFrom::Start(0));
        let _ = out.read_to_string(&mut text);
    }
    eprint!("{text}");
    Ok(status.code().unwrap_or(1))
}

/// The queue of one service's jobs: an exclusive lock held while a job runs.
fn job_lock(lab: &Lab, host: &str, service: &str) -> Result<std::fs::File, String> {
    let path = lab
        .host_dir(host)
        .join("run")
        .join(format!("{service}.job.lock"));
    let file = std::fs::File::create(&path)
        .map_err(|e| format!("cannot create {}: {e}", path.display()))?;
    loop {
        // SAFETY: flock on a file we hold open; released when it closes.
        if unsafe { libc::flock(std::os::fd::AsRawFd::as_raw_fd(&file), libc::LOCK_EX) } == 0 {
            return Ok(file);
        }
        let e = std::io::Error::last_os_error();
        if e.kind() != std::io::ErrorKind::Interrupted {
            return Err(format!("cannot lock {}: {e}", path.display()));
        }
    }
}

/// `harun lab status`: a line per controller and service.
pub fn status(dir: &Path) -> Result<String, LabError> {
    let lab = Lab::load(dir)?;
    let mut out = format!(
        "lab in {} (controllers at {}.11-{})\n{}\n",
        lab.dir.display(),
        lab.block,
        10 + lab.controllers,
        lab.real.describe()
    );
    for host in lab.hosts() {
        let host = host.as_str();
        for (service, _) in lab.services(host) {
            let address = lab.address(host);
            let api = || lab.api(host, service);
            let state = match lab.pid(host, service) {
                None => "stopped".to_string(),
                Some(pid) if *service == "vault" => {
                    let state = api().map_or_else(|e| e, |api| vault_state(&api));
                    format!("running (pid {pid}), {state}")
                }
                Some(pid) => {
                    let leader = api()
                        .and_then(|api| api.get("/v1/status/leader"))
                        .map(|b| b.trim().trim_matches('"').to_string())
                        .unwrap_or_default();
                    let role = if leader.is_empty() {
                        "no leader".to_string()
                    } else if leader.starts_with(&format!("{address}:")) {
                        "leader".to_string()
                    } else {
                        format!("follower of {leader}")
                    };
                    format!("running (pid {pid}), {role}")
                }
            };
            out.push_str(&format!("{host:<12} {address:<16} {service:<7} {state}\n"));
        }
    }
    Ok(out)
}

/// Sealed or not, active or standby, from the node's own unauthenticated endpoints.
fn vault_state(api: &Api) -> String {
    let Ok(status) = api.get("/v1/sys/seal-status") else {
        return "not answering".into();
    };
    let status: serde_json::Value = serde_json::from_str(&status).unwrap_or_default();
    let storage = status["storage_type"].as_str().unwrap_or("?");
    if status["initialized"] != true {
        return format!("not initialized, {storage} storage");
    }
    if status["sealed"] == true {
        return format!(
            "sealed ({}/{} keys given), {storage} storage",
            status["progress"], status["t"]
        );
    }
    let leader: serde_json::Value = api
        .get("/v1/sys/leader")
        .ok()
        .and_then(|l| serde_json::from_str(&l).ok())
        .unwrap_or_default();
    let role = if leader["ha_enabled"] != true || leader["is_self"] == true {
        "active"
    } else {
        "standby"
    };
    format!("unsealed, {role}, {storage} storage")
}

/// `harun lab down`: stops every service the lab started; the files stay.
pub fn down(dir: &Path) -> Result<(), LabError> {
    let lab = Lab::load(dir)?;
    for host in lab.hosts().iter().rev() {
        for (service, _) in lab.services(host).iter().rev() {
            stop(&lab, host, service)?;
        }
    }
    Ok(())
}
