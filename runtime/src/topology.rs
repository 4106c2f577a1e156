//! The topology file: which hosts a script operates on, how to reach them, and where each
//! service keeps its config, in HCL because its users write HCL every day.
//!
//! Built-in defaults, then the `defaults` block, then the host's own attributes; for each
//! service, its built-in defaults, then the top-level service block, then the host's. String
//! values may use `{name}` and `{address}`, expanded per host; other `{...}` (the service
//! manager's `{service}` and `{action}`) are left for the code that uses them. Every error
//! names the file and line.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use hcl_edit::expr::Expression;
use hcl_edit::structure::{Block, Body, Structure};
use hcl_edit::Span;
use rhai::{Array, Dynamic, Map};

use crate::codes;
use crate::diagnostic::{line_col, Diagnostic};
use crate::service::Service;

/// A setting's value.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    String(String),
    Int(i64),
    Bool(bool),
    List(Vec<String>),
}

impl Value {
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(s) => Some(s),
            _ => None,
        }
    }

    fn to_dynamic(&self) -> Dynamic {
        match self {
            Value::String(s) => s.clone().into(),
            Value::Int(i) => (*i).into(),
            Value::Bool(b) => (*b).into(),
            Value::List(items) => items
                .iter()
                .map(|s| Dynamic::from(s.clone()))
                .collect::<Array>()
                .into(),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Kind {
    String,
    Bool,
    List,
    OneOf(&'static [&'static str]),
    /// A duration as humantime reads it: "10s", "2m", "1h 30m".
    Duration,
    /// A TCP port, 1 to 65535.
    Port,
    /// A whole number, 1 or more.
    Count,
    /// An http(s) URL; `{name}` and `{address}` may stand for the host part.
    Url,
}

/// Host-level settings: allowed in `defaults` and in `host` blocks.
const HOST_SETTINGS: &[(&str, Kind)] = &[
    ("address", Kind::String),
    ("ssh_user", Kind::String),
    ("ssh_port", Kind::Port),
    ("ssh_key", Kind::String),
    ("ssh_config", Kind::String),
    ("known_hosts_file", Kind::String),
    ("max_sessions", Kind::Count),
    ("transport", Kind::OneOf(&["ssh", "local"])),
    ("known_hosts", Kind::OneOf(&["strict", "accept-new"])),
    ("service_manager", Kind::String),
    ("sudo", Kind::Bool),
    ("connect_timeout", Kind::Duration),
    ("command_timeout", Kind::Duration),
    // Where the host's boot id is read (service::reboot waits for a new one).
    ("boot_id_file", Kind::String),
    // The file whose existence says the OS wants a reboot (unattended-upgrades on Debian
    // and Raspberry Pi OS writes it): rolling-restart.rhai --set reboot=needed.
    ("reboot_required_file", Kind::String),
    ("roles", Kind::List),
    // Files whose content is never shown (a plan shows only which lines change), and more
    // attribute names whose values config diffs mask (runtime/src/config_secrets.rs).
    ("secret_paths", Kind::List),
    ("secret_attributes", Kind::List),
    // Where scripts/install.rhai puts harun on the host: the binary, the directory of its
    // scripts and topology (as examples/monitoring expects them), and systemd's unit files.
    ("harun_binary", Kind::String),
    ("harun_dir", Kind::String),
    ("systemd_dir", Kind::String),
];

/// Every host setting's default, the only place it is given.
const HOST_DEFAULTS: &[(&str, &str)] = &[
    ("transport", "ssh"),
    ("known_hosts", "strict"),
    ("service_manager", "systemd"),
    ("connect_timeout", "10s"),
    ("command_timeout", "60s"),
    ("harun_binary", "/usr/local/bin/harun"),
    ("harun_dir", "/etc/harun"),
    ("systemd_dir", "/etc/systemd/system"),
    ("reboot_required_file", "/var/run/reboot-required"),
];
const DEFAULT_SSH_PORT: u16 = 22;
// sshd's MaxSessions default: channels one master may carry at once.
const DEFAULT_MAX_SESSIONS: usize = 10;
const DEFAULT_BOOT_ID_FILE: &str = "/proc/sys/kernel/random/boot_id";

/// The services harun knows, with their built-in settings beside the addresses (see
/// `builtin_settings`).
const SERVICES: &[(&str, &[(&str, &str)])] = &[
    (
        "consul",
        &[
            ("config_file", "/etc/consul.d/consul.hcl"),
            ("service", "consul"),
            ("cli", "consul"),
        ],
    ),
    (
        "nomad",
        &[
            ("config_file", "/etc/nomad.d/nomad.hcl"),
            ("service", "nomad"),
            ("cli", "nomad"),
        ],
    ),
    (
        "vault",
        &[
            ("config_file", "/etc/vault.d/vault.hcl"),
            ("service", "vault"),
            ("cli", "vault"),
            ("raft_path", "/opt/vault/data"),
            ("unseal_share_file", "/etc/harun/vault-unseal-share"),
            // The packaged unit's User=: the owner of the raft path.
            ("user", "vault"),
        ],
    ),
];

/// Settings allowed in a service block.
const SERVICE_SETTINGS: &[(&str, Kind)] = &[
    ("address", Kind::Url),
    ("cluster_address", Kind::Url),
    ("config_file", Kind::String),
    ("service", Kind::String),
    ("cli", Kind::String),
    ("data_dir", Kind::String),
    ("raft_path", Kind::String),
    ("user", Kind::String),
    ("group", Kind::String),
    ("token_file", Kind::String),
    ("keys_file", Kind::String),
    // Where this host keeps its own part of the unseal keys (scripts/unseal.rhai).
    ("unseal_share_file", Kind::String),
    ("ca_file", Kind::String),
    // The CA file on the controllers that Vault's retry_join trusts (default: ca_file).
    ("join_ca_file", Kind::String),
    ("client_cert", Kind::String),
    ("client_key", Kind::String),
    ("tls_server_name", Kind::String),
    ("tls_skip_verify", Kind::Bool),
    ("dns_address", Kind::String),
    // Which server speaks Vault's API: HashiCorp Vault, or OpenBao (which cannot register
    // itself in Consul, so the scripts register it). The vault block only.
    ("flavor", Kind::OneOf(&["vault", "openbao"])),
];

/// How harun reaches a host.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    Ssh,
    /// Commands run on this machine, no SSH.
    Local,
}

/// How services are started and stopped on a host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ServiceManager {
    Systemd,
    OpenRc,
    /// A command such as `sudo rc-service {service} {action}`.
    Template(String),
}

/// A host's SSH settings, checked and defaulted when the topology was read.
#[derive(Clone, Debug)]
pub struct Ssh {
    pub user: Option<String>,
    pub port: u16,
    pub key: Option<PathBuf>,
    pub config: Option<PathBuf>,
    pub known_hosts_file: Option<PathBuf>,
    /// `known_hosts = "accept-new"`: a host key not yet known is recorded, not refused.
    pub accept_new: bool,
    /// How many sessions may run at once over the one connection.
    pub max_sessions: usize,
    pub connect_timeout: Duration,
    /// How long one command may run.
    pub command_timeout: Duration,
}

/// One service's settings on one host, merged and expanded. What only scripts read
/// (`cli`, `data_dir`, `raft_path`, ...) is in the script's view (`Host::to_dynamic`).
#[derive(Clone, Debug)]
pub struct ServiceSettings {
    /// The API's base URL.
    pub address: String,
    /// Whether the topology file itself sets `address` (not harun's built-in default):
    /// a token goes over plain HTTP only to an `http://` address written there.
    pub address_written: bool,
    /// The unit (or rc script) name.
    pub unit: String,
    pub config_file: String,
    pub token_file: Option<String>,
    pub keys_file: Option<String>,
    pub unseal_share_file: Option<String>,
    pub ca_file: Option<String>,
    pub client_cert: Option<String>,
    pub client_key: Option<String>,
    pub tls_server_name: Option<String>,
    pub tls_skip_verify: bool,
}

/// One host with every setting merged, expanded and typed.
#[derive(Clone, Debug)]
pub struct Host {
    pub name: String,
    pub address: String,
    /// Where the host block starts, for messages.
    pub line: usize,
    /// Empty: a controller.
    pub roles: Vec<String>,
    pub transport: Transport,
    pub ssh: Ssh,
    /// Whether privileged commands go through sudo (when not root already).
    pub sudo: bool,
    pub service_manager: ServiceManager,
    /// Where the boot id is read (service::reboot waits for a new one).
    pub boot_id_file: String,
    pub secret_paths: Vec<String>,
    pub secret_attributes: Vec<String>,
    consul: ServiceSettings,
    nomad: ServiceSettings,
    vault: ServiceSettings,
    /// Every setting as written and defaulted, for the scripts (`topology.hosts`).
    view: Settings,
    service_views: BTreeMap<String, Settings>,
}

impl Host {
    /// The machine harun runs on, as a host named `local` (what `local::run` runs on).
    pub fn local() -> Host {
        let mut own = Settings::new();
        own.insert("transport".into(), Value::String("local".into()));
        own.insert("address".into(), Value::String("localhost".into()));
        merge_host(
            "local".into(),
            &Settings::new(),
            own,
            &BTreeMap::new(),
            BTreeMap::new(),
            0,
        )
    }

    pub fn address(&self) -> &str {
        &self.address
    }

    /// Whether the host plays `role`. A host without `roles` is a controller, so a topology
    /// of controllers alone needs none.
    pub fn has_role(&self, role: &str) -> bool {
        if self.roles.is_empty() {
            role == "controller"
        } else {
            self.roles.iter().any(|r| r == role)
        }
    }

    /// How a diff of the file `path` on this host is shown: masked by attribute names, or
    /// not at all when it lies under one of the host's `secret_paths`.
    pub fn diff_policy(&self, path: &str) -> crate::plan::DiffPolicy {
        let under = |dir: &String| {
            let dir = dir.trim_end_matches('/');
            path == dir || path.starts_with(&format!("{dir}/"))
        };
        crate::plan::DiffPolicy {
            private: self.secret_paths.iter().any(under),
            secret_attributes: self.secret_attributes.clone(),
        }
    }

    /// One service's settings; every host has all three.
    pub fn service(&self, service: Service) -> &ServiceSettings {
        match service {
            Service::Consul => &self.consul,
            Service::Nomad => &self.nomad,
            Service::Vault => &self.vault,
        }
    }

    /// Whether a token may be sent to `service`'s address on this host: over TLS always,
    /// over plain HTTP only when the topology file itself says `http://` for it.
    pub fn token_allowed(&self, service: Service) -> bool {
        let settings = self.service(service);
        settings.address.starts_with("https://") || settings.address_written
    }

    pub fn to_dynamic(&self) -> Dynamic {
        let mut map = Map::new();
        map.insert("name".into(), self.name.clone().into());
        for (key, value) in &self.view {
            map.insert(key.into(), value.to_dynamic());
        }
        for (service, settings) in &self.service_views {
            let mut s = Map::new();
            for (key, value) in settings {
                s.insert(key.into(), value.to_dynamic());
            }
            map.insert(service.into(), s.into());
        }
        map.into()
    }
}

/// A parsed topology file.
#[derive(Clone, Debug, Default)]
pub struct Topology {
    pub path: PathBuf,
    /// In file order.
    pub hosts: Vec<Host>,
}

impl Topology {
    pub fn load(path: &Path) -> Result<Topology, Box<Diagnostic>> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            Box::new(Diagnostic::new(
                codes::TOPOLOGY_READ,
                format!("cannot read the topology file {}: {e}", path.display()),
            ))
        })?;
        Topology::parse(path, &text)
    }

    pub fn parse(path: &Path, text: &str) -> Result<Topology, Box<Diagnostic>> {
        Parser {
            file: path.display().to_string(),
            text,
        }
        .parse(path)
    }

    pub fn host(&self, name: &str) -> Option<&Host> {
        self.hosts.iter().find(|h| h.name == name)
    }

    /// The `topology` global: `#{ file, hosts: [ #{ name, address, ..., consul: #{..} } ] }`.
    pub fn to_dynamic(&self) -> Dynamic {
        let mut map = Map::new();
        map.insert("file".into(), self.path.display().to_string().into());
        let hosts: Array = self.hosts.iter().map(Host::to_dynamic).collect();
        map.insert("hosts".into(), hosts.into());
        map.into()
    }
}

struct Parser<'a> {
    file: String,
    text: &'a str,
}

type Settings = BTreeMap<String, Value>;

impl Parser<'_> {
    fn error(
        &self,
        span: Option<std::ops::Range<usize>>,
        message: impl Into<String>,
    ) -> Box<Diagnostic> {
        let (line, col) = line_col(self.text, span.map_or(0, |s| s.start));
        Box::new(Diagnostic::new(codes::TOPOLOGY, message).at(self.file.clone(), line, col))
    }

    fn parse(&self, path: &Path) -> Result<Topology, Box<Diagnostic>> {
        let body: Body = hcl_edit::parser::parse_body(self.text).map_err(|e| {
            Box::new(
                Diagnostic::new(codes::TOPOLOGY_SYNTAX, e.message().to_string()).at(
                    self.file.clone(),
                    e.location().line(),
                    e.location().column(),
                ),
            )
        })?;

        let mut defaults: Option<Settings> = None;
        let mut service_blocks: BTreeMap<String, Settings> = BTreeMap::new();
        let mut hosts: Vec<(String, Settings, BTreeMap<String, Settings>, usize)> = Vec::new();

        for structure in body.iter() {
            let block = match structure {
                Structure::Attribute(attr) => {
                    return Err(self.error(
                        attr.span(),
                        format!(
                            "unexpected attribute `{}` at the top level: settings go in a `defaults`, service or `host` block",
                            attr.key.as_str()
                        ),
                    ))
                }
                Structure::Block(block) => block,
            };
            let ident = block.ident.as_str();
            match ident {
                "defaults" => {
                    self.no_labels(block)?;
                    if defaults.is_some() {
                        return Err(self.error(block.span(), "a second `defaults` block"));
                    }
                    let (settings, nested) = self.host_body(block, false)?;
                    if let Some((name, span)) = nested.into_iter().next() {
                        return Err(self.error(
                            span,
                            format!("`{name}` blocks go at the top level or in a `host` block, not in `defaults`"),
                        ));
                    }
                    defaults = Some(settings);
                }
                "host" => {
                    let name = match block.labels.as_slice() {
                        [label] => label.as_str().to_string(),
                        _ => return Err(self.error(
                            block.span(),
                            "a host block takes one label, its name: host \"controller1\" { ... }",
                        )),
                    };
                    if hosts.iter().any(|h| h.0 == name) {
                        return Err(
                            self.error(block.span(), format!("host \"{name}\" is defined twice"))
                        );
                    }
                    let (settings, nested) = self.host_body(block, true)?;
                    let mut services = BTreeMap::new();
                    for (service, _) in nested {
                        let inner = block
                            .body
                            .get_blocks(service.as_str())
                            .next()
                            .expect("host_body found this block");
                        let settings = self.service_body(inner)?;
                        services.insert(service, settings);
                    }
                    let line = line_col(self.text, block.span().map_or(0, |s| s.start)).0;
                    hosts.push((name, settings, services, line));
                }
                service if is_service(service) => {
                    self.no_labels(block)?;
                    if service_blocks.contains_key(service) {
                        return Err(self.error(block.span(), format!("a second `{service}` block")));
                    }
                    service_blocks.insert(service.to_string(), self.service_body(block)?);
                }
                other => {
                    return Err(self.error(
                        block.ident.span(),
                        format!(
                        "unknown block `{other}` (expected defaults, host, consul, nomad or vault)"
                    ),
                    ))
                }
            }
        }

        let defaults = defaults.unwrap_or_default();
        let hosts = hosts
            .into_iter()
            .map(|(name, own, own_services, line)| {
                merge_host(name, &defaults, own, &service_blocks, own_services, line)
            })
            .collect();
        Ok(Topology {
            path: path.to_path_buf(),
            hosts,
        })
    }

    fn no_labels(&self, block: &Block) -> Result<(), Box<Diagnostic>> {
        if block.labels.is_empty() {
            Ok(())
        } else {
            Err(self.error(
                block.span(),
                format!("a `{}` block takes no labels", block.ident.as_str()),
            ))
        }
    }

    /// Attributes of a `defaults` or `host` block, and the names of service blocks in it.
    #[allow(clippy::type_complexity)]
    fn host_body(
        &self,
        block: &Block,
        is_host: bool,
    ) -> Result<(Settings, Vec<(String, Option<std::ops::Range<usize>>)>), Box<Diagnostic>> {
        let mut settings = Settings::new();
        let mut nested = Vec::new();
        for structure in block.body.iter() {
            match structure {
                Structure::Attribute(attr) => {
                    let key = attr.key.as_str();
                    if key == "address" && !is_host {
                        return Err(self.error(attr.span(), "`address` belongs in a host block"));
                    }
                    let kind = lookup(HOST_SETTINGS, key).ok_or_else(|| {
                        self.error(
                            attr.key.span(),
                            format!("unknown setting `{key}` (known: {})", names(HOST_SETTINGS)),
                        )
                    })?;
                    settings.insert(key.to_string(), self.value(&attr.value, kind, key)?);
                }
                Structure::Block(inner) => {
                    let ident = inner.ident.as_str();
                    if !is_service(ident) {
                        return Err(self.error(
                            inner.ident.span(),
                            format!("unknown block `{ident}` (expected consul, nomad or vault)"),
                        ));
                    }
                    self.no_labels(inner)?;
                    if nested.iter().any(|(n, _)| n == ident) {
                        return Err(self.error(inner.span(), format!("a second `{ident}` block")));
                    }
                    nested.push((ident.to_string(), inner.span()));
                }
            }
        }
        Ok((settings, nested))
    }

    fn service_body(&self, block: &Block) -> Result<Settings, Box<Diagnostic>> {
        let service = block.ident.as_str();
        let mut settings = Settings::new();
        for structure in block.body.iter() {
            match structure {
                Structure::Attribute(attr) => {
                    let key = attr.key.as_str();
                    if key == "token" {
                        return Err(self.error(
                            attr.key.span(),
                            format!("a literal token does not belong in the topology: put it in a mode-0600 file and set `token_file`, or use the {}_TOKEN environment variable", service.to_uppercase()),
                        ));
                    }
                    if key == "flavor" && service != "vault" {
                        return Err(self.error(
                            attr.key.span(),
                            format!("`flavor` belongs in the vault block, not in `{service}`"),
                        ));
                    }
                    let kind = lookup(SERVICE_SETTINGS, key).ok_or_else(|| {
                        self.error(
                            attr.key.span(),
                            format!(
                                "unknown `{service}` setting `{key}` (known: {})",
                                names(SERVICE_SETTINGS)
                            ),
                        )
                    })?;
                    settings.insert(key.to_string(), self.value(&attr.value, kind, key)?);
                }
                Structure::Block(inner) => {
                    return Err(self.error(
                        inner.span(),
                        format!("unexpected block `{}` in `{service}`", inner.ident.as_str()),
                    ))
                }
            }
        }
        Ok(settings)
    }

    fn value(&self, expr: &Expression, kind: Kind, key: &str) -> Result<Value, Box<Diagnostic>> {
        let wrong = |what: &str| self.error(expr.span(), format!("`{key}` must be {what}"));
        match (kind, expr) {
            (Kind::String, Expression::String(s)) => Ok(Value::String(s.value().to_string())),
            (Kind::OneOf(allowed), Expression::String(s)) => {
                let v = s.value().as_str();
                if allowed.contains(&v) {
                    Ok(Value::String(v.to_string()))
                } else {
                    Err(wrong(&format!("one of {}", allowed.join(", "))))
                }
            }
            (Kind::Port, Expression::Number(n)) => n
                .value()
                .as_i64()
                .filter(|p| (1..=65535).contains(p))
                .map(Value::Int)
                .ok_or_else(|| wrong("a port, 1 to 65535")),
            (Kind::Count, Expression::Number(n)) => n
                .value()
                .as_i64()
                .filter(|n| *n >= 1)
                .map(Value::Int)
                .ok_or_else(|| wrong("a whole number, 1 or more")),
            (Kind::Duration, Expression::String(s)) => {
                let v = s.value().as_str();
                humantime::parse_duration(v)
                    .map(|_| Value::String(v.to_string()))
                    .map_err(|e| wrong(&format!("a duration such as \"10s\" or \"2m\" ({e})")))
            }
            (Kind::Url, Expression::String(s)) => {
                let v = s.value().as_str();
                check_url(v)
                    .map(|()| Value::String(v.to_string()))
                    .map_err(|why| wrong(&format!("an http:// or https:// URL such as \"https://{{address}}:8501\" ({why})")))
            }
            (Kind::Bool, Expression::Bool(b)) => Ok(Value::Bool(*b.value())),
            (Kind::List, Expression::Array(items)) => items
                .iter()
                .map(|item| match item {
                    Expression::String(s) => Ok(s.value().to_string()),
                    _ => Err(self.error(item.span(), format!("`{key}` must be a list of strings"))),
                })
                .collect::<Result<Vec<_>, _>>()
                .map(Value::List),
            (_, Expression::StringTemplate(_)) => Err(wrong(
                "a plain string: HCL interpolation is not supported here; use {name} or {address}",
            )),
            (Kind::String, _) => Err(wrong("a string")),
            (Kind::OneOf(allowed), _) => Err(wrong(&format!("one of {}", allowed.join(", ")))),
            (Kind::Port, _) => Err(wrong("a port, 1 to 65535")),
            (Kind::Count, _) => Err(wrong("a whole number, 1 or more")),
            (Kind::Duration, _) => Err(wrong("a duration such as \"10s\" or \"2m\"")),
            (Kind::Url, _) => Err(wrong("an http:// or https:// URL")),
            (Kind::Bool, _) => Err(wrong("true or false")),
            (Kind::List, _) => Err(wrong("a list of strings")),
        }
    }
}

/// Whether `v` is an http(s) URL once `{name}` and `{address}` stand for a host.
fn check_url(v: &str) -> Result<(), String> {
    let filled = v.replace("{name}", "host").replace("{address}", "host");
    let url = url::Url::parse(&filled).map_err(|e| e.to_string())?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!("the scheme is {}", url.scheme()));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err("no host".to_string());
    }
    Ok(())
}

/// A service's built-in settings: its API address on the host (the packaged server's
/// default port) and the table's.
fn builtin_settings(service: &str, table: &[(&str, &str)]) -> Settings {
    let mut settings: Settings = table
        .iter()
        .map(|(k, v)| (k.to_string(), Value::String(v.to_string())))
        .collect();
    if let Some(s) = Service::from_name(service) {
        let address = format!("{}://{{address}}:{}", s.api_scheme(), s.api_port());
        settings.insert("address".into(), Value::String(address));
        if s == Service::Vault {
            let cluster = format!("https://{{address}}:{}", Service::VAULT_CLUSTER_PORT);
            settings.insert("cluster_address".into(), Value::String(cluster));
        }
    }
    settings
}

fn is_service(name: &str) -> bool {
    SERVICES.iter().any(|(s, _)| *s == name)
}

fn lookup(table: &[(&str, Kind)], key: &str) -> Option<Kind> {
    table.iter().find(|(k, _)| *k == key).map(|(_, kind)| *kind)
}

fn names(table: &[(&str, Kind)]) -> String {
    table.iter().map(|(k, _)| *k).collect::<Vec<_>>().join(", ")
}

fn merge_host(
    name: String,
    defaults: &Settings,
    own: Settings,
    service_blocks: &BTreeMap<String, Settings>,
    mut own_services: BTreeMap<String, Settings>,
    line: usize,
) -> Host {
    let mut settings: Settings = HOST_DEFAULTS
        .iter()
        .map(|(k, v)| (k.to_string(), Value::String(v.to_string())))
        .collect();
    settings.insert("ssh_port".into(), Value::Int(i64::from(DEFAULT_SSH_PORT)));
    settings.insert(
        "max_sessions".into(),
        Value::Int(DEFAULT_MAX_SESSIONS as i64),
    );
    settings.insert("sudo".into(), Value::Bool(false));
    settings.insert("roles".into(), Value::List(Vec::new()));
    settings.extend(defaults.clone());
    settings.extend(own);
    let address = text(&settings, "address").unwrap_or_else(|| name.clone());
    settings.insert("address".into(), Value::String(address.clone()));
    for value in settings.values_mut() {
        expand(value, &name, &address);
    }

    let mut service_views = BTreeMap::new();
    let mut written = Vec::new();
    for (service, builtin) in SERVICES {
        let mut merged = builtin_settings(service, builtin);
        if let Some(top) = service_blocks.get(*service) {
            if top.contains_key("address") {
                written.push(*service);
            }
            merged.extend(top.clone());
        }
        if let Some(mine) = own_services.remove(*service) {
            if mine.contains_key("address") {
                written.push(*service);
            }
            merged.extend(mine);
        }
        for value in merged.values_mut() {
            expand(value, &name, &address);
        }
        service_views.insert(service.to_string(), merged);
    }
    let service = |s: Service| {
        let view = service_views.get(s.name()).cloned().unwrap_or_default();
        service_settings(s, &view, written.contains(&s.name()))
    };
    let (consul, nomad, vault) = (
        service(Service::Consul),
        service(Service::Nomad),
        service(Service::Vault),
    );

    let duration = |key: &str| {
        text(&settings, key)
            .and_then(|s| humantime::parse_duration(&s).ok())
            .unwrap_or_default()
    };
    let ssh = Ssh {
        user: text(&settings, "ssh_user"),
        port: int(&settings, "ssh_port")
            .and_then(|p| u16::try_from(p).ok())
            .unwrap_or(DEFAULT_SSH_PORT),
        key: text(&settings, "ssh_key").map(PathBuf::from),
        config: text(&settings, "ssh_config").map(PathBuf::from),
        known_hosts_file: text(&settings, "known_hosts_file").map(PathBuf::from),
        accept_new: text(&settings, "known_hosts").as_deref() == Some("accept-new"),
        max_sessions: int(&settings, "max_sessions")
            .and_then(|n| usize::try_from(n).ok())
            .unwrap_or(DEFAULT_MAX_SESSIONS),
        connect_timeout: duration("connect_timeout"),
        command_timeout: duration("command_timeout"),
    };
    let service_manager = match text(&settings, "service_manager").as_deref() {
        None | Some("systemd") => ServiceManager::Systemd,
        Some("openrc") => ServiceManager::OpenRc,
        Some(template) => ServiceManager::Template(template.to_string()),
    };
    Host {
        address,
        line,
        roles: list(&settings, "roles"),
        transport: match text(&settings, "transport").as_deref() {
            Some("local") => Transport::Local,
            _ => Transport::Ssh,
        },
        ssh,
        sudo: flag(&settings, "sudo"),
        service_manager,
        boot_id_file: text(&settings, "boot_id_file")
            .unwrap_or_else(|| DEFAULT_BOOT_ID_FILE.to_string()),
        secret_paths: list(&settings, "secret_paths"),
        secret_attributes: list(&settings, "secret_attributes"),
        consul,
        nomad,
        vault,
        view: settings,
        service_views,
        name,
    }
}

/// One service's typed settings from its merged ones.
fn service_settings(service: Service, view: &Settings, address_written: bool) -> ServiceSettings {
    let get = |key: &str| text(view, key);
    ServiceSettings {
        address: get("address").unwrap_or_default(),
        address_written,
        unit: get("service").unwrap_or_else(|| service.name().to_string()),
        config_file: get("config_file").unwrap_or_default(),
        token_file: get("token_file"),
        keys_file: get("keys_file"),
        unseal_share_file: get("unseal_share_file"),
        ca_file: get("ca_file"),
        client_cert: get("client_cert"),
        client_key: get("client_key"),
        tls_server_name: get("tls_server_name"),
        tls_skip_verify: flag(view, "tls_skip_verify"),
    }
}

fn text(settings: &Settings, key: &str) -> Option<String> {
    settings
        .get(key)
        .and_then(Value::as_str)
        .map(str::to_string)
}

fn int(settings: &Settings, key: &str) -> Option<i64> {
    match settings.get(key) {
        Some(Value::Int(i)) => Some(*i),
        _ => None,
    }
}

fn flag(settings: &Settings, key: &str) -> bool {
    matches!(settings.get(key), Some(Value::Bool(true)))
}

fn list(settings: &Settings, key: &str) -> Vec<String> {
    match settings.get(key) {
        Some(Value::List(items)) => items.clone(),
        _ => Vec::new(),
    }
}

fn expand(value: &mut Value, name: &str, address: &str) {
    let fill = |s: &str| s.replace("{name}", name).replace("{address}", address);
    match value {
        Value::String(s) => *s = fill(s),
        Value::List(items) => items.iter_mut().for_each(|s| *s = fill(s)),
        Value::Int(_) | Value::Bool(_) => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = r#"
defaults {
  ssh_user = "pi"
  service_manager = "sudo rc-service {service} {action}"
}
consul { address = "https://{address}:8501" }
vault  { raft_path = "/vault_data" }
host "controller1" { address = "10.0.0.11" }
host "controller2" {}
host "controller3" {
  address  = "10.0.0.13"
  ssh_user = "admin"
  vault { config_file = "/opt/vault/etc/vault.hcl" }
}
"#;

    #[test]
    fn merges_defaults_services_and_host_overrides() {
        let t = Topology::parse(Path::new("harun.hcl"), SAMPLE).unwrap();
        let names: Vec<&str> = t.hosts.iter().map(|h| h.name.as_str()).collect();
        assert_eq!(names, ["controller1", "controller2", "controller3"]);
        let c1 = t.host("controller1").unwrap();
        assert_eq!(
            c1.service(Service::Consul).address,
            "https://10.0.0.11:8501"
        );
        assert_eq!(c1.ssh.user.as_deref(), Some("pi"));
        assert_eq!(
            c1.service_manager,
            ServiceManager::Template("sudo rc-service {service} {action}".into())
        );
        let c2 = t.host("controller2").unwrap();
        assert_eq!(c2.address(), "controller2");
        assert_eq!(c2.ssh.port, 22);
        assert!(!c2.token_allowed(Service::Nomad));
        assert!(c2.token_allowed(Service::Consul));
        let view = c2.to_dynamic().cast::<Map>();
        let vault = view["vault"].clone().cast::<Map>();
        assert_eq!(
            vault["raft_path"].clone().into_string().unwrap(),
            "/vault_data"
        );
        let c3 = t.host("controller3").unwrap();
        assert_eq!(c3.ssh.user.as_deref(), Some("admin"));
        assert_eq!(
            c3.service(Service::Vault).config_file,
            "/opt/vault/etc/vault.hcl"
        );
        let view = c3.to_dynamic().cast::<Map>();
        let vault = view["vault"].clone().cast::<Map>();
        assert_eq!(
            vault["cluster_address"].clone().into_string().unwrap(),
            "https://10.0.0.13:8201"
        );
    }

    fn error(text: &str) -> String {
        let d = Topology::parse(Path::new("t.hcl"), text).unwrap_err();
        let loc = d.location.unwrap();
        format!("{}:{}: {}", loc.line, loc.col, d.message)
    }

    #[test]
    fn errors_point_at_the_line() {
        assert_eq!(
            error("host \"a\" {\n  ssh_prot = 22\n}\n")
                .split(" (known")
                .next()
                .unwrap(),
            "2:3: unknown setting `ssh_prot`"
        );
        assert_eq!(
            error("defaults {\n  transport = \"telnet\"\n}\n"),
            "2:15: `transport` must be one of ssh, local"
        );
        assert_eq!(
            error("defaults {\n  connect_timeout = \"ten\"\n}\n"),
            "2:21: `connect_timeout` must be a duration such as \"10s\" or \"2m\" (expected number at 0)"
        );
        assert!(error("host \"a\" {\n  ssh_port = 70000\n}\n")
            .starts_with("2:14: `ssh_port` must be a port"));
        assert!(error("host \"a\" {\n  max_sessions = 0\n}\n")
            .starts_with("2:18: `max_sessions` must be a whole number, 1 or more"));
        assert!(error("consul {\n  address = \"10.0.0.11:8500\"\n}\n")
            .starts_with("2:13: `address` must be an http:// or https:// URL"));
        assert!(
            error("vault {\n  cluster_address = \"ftp://{address}\"\n}\n")
                .contains("the scheme is ftp")
        );
        assert!(error("vault {\n  token = \"abc\"\n}\n").starts_with("2:3: a literal token"));
        assert_eq!(
            error("host \"a\" {}\nhost \"a\" {}\n"),
            "2:1: host \"a\" is defined twice"
        );
        let syntax = error("host \"a\" {\n  address = \n}\n");
        assert!(
            syntax.starts_with("2:") || syntax.starts_with("3:"),
            "{syntax}"
        );
    }
}
