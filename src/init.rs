//! `harun init ADDRESS`: a topology for a cluster that already runs, written from what it
//! answers. Consul's members give the hosts (servers are controllers, clients workers) and
//! their addresses; each host's Nomad and Vault are asked where they answer, over https
//! first, then http. The file says in comments what was found and what to check.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use harun_runtime::codes;
use harun_runtime::service::Service;
use serde_json::Value;

/// What `harun init` was told.
pub struct Init {
    pub address: String,
    pub output: PathBuf,
    pub force: bool,
    /// A CA that signed the services' certificates (the story's private CA).
    pub ca_file: Option<PathBuf>,
    /// Consul's ACL token, as a file (CONSUL_HTTP_TOKEN works too).
    pub consul_token_file: Option<PathBuf>,
    /// The cluster speaks plain HTTP: tokens may go there (in clear).
    pub plain_http: bool,
}

/// One host as Consul's members show it.
struct Member {
    name: String,
    addr: String,
    server: bool,
}

/// How a service answered on a host: its base URL pattern (`https://{address}:8200`).
#[derive(Clone, PartialEq)]
struct Answer {
    scheme: &'static str,
    port: u16,
}

impl Answer {
    fn pattern(&self) -> String {
        format!("{}://{{address}}:{}", self.scheme, self.port)
    }
}

/// Runs `harun init`; the error is (code, message).
pub fn run(init: &Init) -> Result<String, (&'static str, String)> {
    if init.output.exists() && !init.force {
        return Err((
            codes::USAGE,
            format!(
                "{} exists: harun init does not overwrite it (pass --force to replace it)",
                init.output.display()
            ),
        ));
    }
    harun_stdlib::http::install_crypto();
    let probe = Probe::new(init)?;
    // Consul first: its members are the hosts. The story's HTTPS port, then the default.
    let consul_at = [("https", 8501), ("https", 8500), ("http", 8500)];
    let (consul, members) = probe
        .find(
            Service::Consul,
            &init.address,
            &consul_at,
            "/v1/agent/members",
        )?
        .ok_or_else(|| {
            (
                codes::CONSUL_UNREACHABLE,
                format!(
                    "no consul agent answered at {} on https 8501, https 8500 or http 8500{}",
                    init.address,
                    probe.hint()
                ),
            )
        })?;
    let mut hosts: Vec<Member> = members
        .as_array()
        .into_iter()
        .flatten()
        // Status 3 is a member that left: not part of the cluster any more.
        .filter(|m| m["Status"] != 3)
        .map(|m| Member {
            name: m["Name"].as_str().unwrap_or_default().to_string(),
            addr: m["Addr"].as_str().unwrap_or_default().to_string(),
            server: m["Tags"]["role"] == "consul",
        })
        .collect();
    hosts.sort_by(|a, b| (!a.server, &a.name).cmp(&(!b.server, &b.name)));

    // Nomad on every host, Vault on the servers: https first, then http.
    let at = |service: Service| [("https", service.api_port()), ("http", service.api_port())];
    let nomad = hosts
        .iter()
        .map(|m| {
            let found = probe.find(
                Service::Nomad,
                &m.addr,
                &at(Service::Nomad),
                "/v1/agent/self",
            )?;
            Ok(found.map(|(answer, _)| answer))
        })
        .collect::<Result<Vec<Option<Answer>>, _>>()?;
    // Every state answers sys/health with a body; these codes make each a 200.
    let vault_health =
        "/v1/sys/health?standbyok=true&perfstandbyok=true&sealedcode=200&uninitcode=200";
    let vault = hosts
        .iter()
        .map(|m| {
            if !m.server {
                return Ok(None);
            }
            let found = probe.find(Service::Vault, &m.addr, &at(Service::Vault), vault_health)?;
            Ok(found.map(|(answer, _)| answer))
        })
        .collect::<Result<Vec<Option<Answer>>, _>>()?;

    let text = render(init, &consul, &hosts, &nomad, &vault);
    // Checked as any topology is, before it is written.
    harun_runtime::Topology::parse(&init.output, &text)
        .map_err(|d| (codes::TOPOLOGY_SYNTAX, d.message))?;
    // Private like every file harun writes beside the user's (its comments name the hosts).
    harun_runtime::private_fs::write_atomic(&init.output, text.as_bytes(), 0o600, None).map_err(
        |e| {
            (
                codes::USAGE,
                format!("cannot write {}: {e}", init.output.display()),
            )
        },
    )?;
    let servers = hosts.iter().filter(|m| m.server).count();
    Ok(format!(
        "{}: {} controllers, {} workers (from consul at {}); check its comments before a script changes anything",
        init.output.display(),
        servers,
        hosts.len() - servers,
        init.address,
    ))
}

/// The file, with what was found and what to check in its comments.
fn render(
    init: &Init,
    consul: &Answer,
    hosts: &[Member],
    nomad: &[Option<Answer>],
    vault: &[Option<Answer>],
) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# Written by `harun init {}` from what the cluster answered on {}.",
        init.address,
        humantime::format_rfc3339_seconds(std::time::SystemTime::now())
    );
    out.push_str(
        "# Check before a script changes anything:\n\
         #   - how harun reaches each host: SSH as the current user with its keys and\n\
         #     known_hosts (set ssh_user, ssh_key or ssh_config in `defaults`), or\n\
         #     transport = \"local\" for this machine;\n\
         #   - the config files and data paths, here the packages' defaults;\n\
         #   - tokens: a token_file per service where ACLs are on.\n\n",
    );
    out.push_str("defaults {\n  # ssh_user = \"admin\"\n  # sudo     = true\n}\n\n");
    let ca = |answer: Option<&Answer>| match (&init.ca_file, answer) {
        (Some(ca), Some(a)) if a.scheme == "https" => {
            format!("\n  ca_file = \"{}\"", ca.display())
        }
        _ => String::new(),
    };
    // Consul: the scheme and port the agent answered on.
    let _ = writeln!(
        out,
        "# consul answered at {}://{}:{}.{}\nconsul {{\n  address = \"{}\"{}",
        consul.scheme,
        init.address,
        consul.port,
        plain_note(consul),
        consul.pattern(),
        ca(Some(consul))
    );
    match &init.consul_token_file {
        Some(file) => {
            let _ = writeln!(out, "  token_file = \"{}\"", file.display());
        }
        None => out.push_str(
            "  # token_file = \"/etc/harun/consul.token\"   # where ACLs are on (or CONSUL_HTTP_TOKEN)\n",
        ),
    }
    out.push_str("}\n\n");
    for (service, found) in [(Service::Nomad, nomad), (Service::Vault, vault)] {
        let answered: Vec<&Answer> = found.iter().flatten().collect();
        let who: Vec<&str> = hosts
            .iter()
            .zip(found)
            .filter(|(_, a)| a.is_some())
            .map(|(m, _)| m.name.as_str())
            .collect();
        match answered.first() {
            Some(first) => {
                let _ = writeln!(
                    out,
                    "# {service} answered on {} at {}.{}\n{service} {{\n  address = \"{}\"{}\n}}\n",
                    who.join(", "),
                    first.pattern().replace("{address}", "ADDRESS"),
                    plain_note(first),
                    first.pattern(),
                    ca(Some(first))
                );
            }
            None => {
                let _ = writeln!(
                    out,
                    "# {service} answered on no host at https or http, port {}: set its address\n# here if it runs elsewhere.\n",
                    service.api_port()
                );
            }
        }
    }
    for (i, m) in hosts.iter().enumerate() {
        let role = if m.server { "controller" } else { "worker" };
        let _ = writeln!(
            out,
            "host \"{}\" {{\n  address = \"{}\"\n  roles   = [\"{role}\"]",
            m.name, m.addr
        );
        // A host whose service answers differently from the first one found.
        for (service, found) in [(Service::Nomad, nomad), (Service::Vault, vault)] {
            let first = found.iter().flatten().next();
            if let (Some(mine), Some(first)) = (&found[i], first) {
                if mine != first {
                    let _ = writeln!(
                        out,
                        "  {service} {{\n    address = \"{}\"{}\n  }}",
                        mine.pattern(),
                        ca(Some(mine)).replace("\n  ", "\n    ")
                    );
                }
            }
        }
        out.push_str("}\n\n");
    }
    out.truncate(out.trim_end().len());
    out.push('\n');
    out
}

/// What an http:// address written here means: harun sends tokens there in clear.
fn plain_note(answer: &Answer) -> &'static str {
    if answer.scheme == "http" {
        "\n# Plain HTTP: because this file says http://, harun sends this service's token there\n# in clear; prefer its HTTPS listener (and ca_file) where it has a token."
    } else {
        ""
    }
}

/// What one probe found.
enum Probed {
    /// A 200 answer's JSON.
    Json(Value),
    /// Something answered with another status (403: ACLs without our token).
    Status,
    /// TLS answered with a certificate harun does not trust, or wants one of ours.
    Tls(String),
    /// Nothing there (refused, timed out, another protocol).
    Absent,
}

/// The HTTP client the probes share, and what they learned about tokens.
struct Probe {
    client: reqwest::blocking::Client,
    consul_token: Option<String>,
    plain_http: bool,
    forbidden: std::cell::Cell<bool>,
}

impl Probe {
    fn new(init: &Init) -> Result<Probe, (&'static str, String)> {
        let mut builder = reqwest::blocking::Client::builder()
            .no_proxy()
            .connect_timeout(Duration::from_secs(3))
            .timeout(Duration::from_secs(5));
        let ca = init
            .ca_file
            .clone()
            .or_else(|| std::env::var_os("CONSUL_CACERT").map(PathBuf::from));
        if let Some(ca) = ca {
            let pem = std::fs::read(&ca).map_err(|e| {
                (
                    codes::CONSUL_TLS,
                    format!("cannot read the CA file {}: {e}", ca.display()),
                )
            })?;
            // Only this CA is trusted, as the official CLIs do.
            let certs = reqwest::Certificate::from_pem_bundle(&pem)
                .ok()
                .filter(|c| !c.is_empty())
                .ok_or_else(|| {
                    (
                        codes::CONSUL_TLS,
                        format!("the CA file {} holds no PEM certificate", ca.display()),
                    )
                })?;
            builder = builder.tls_certs_only(certs);
        }
        let consul_token = match &init.consul_token_file {
            Some(file) => Some(
                harun_runtime::secret::read_private_file(&file.display().to_string())?
                    .trim()
                    .to_string(),
            ),
            None => std::env::var("CONSUL_HTTP_TOKEN")
                .ok()
                .filter(|t| !t.is_empty()),
        };
        let client = builder.build().map_err(|e| {
            (
                codes::CONSUL_TLS,
                format!("cannot build the HTTP client: {e}"),
            )
        })?;
        Ok(Probe {
            client,
            consul_token,
            plain_http: init.plain_http,
            forbidden: Default::default(),
        })
    }

    /// The token harun would send to `service` (the official CLIs' variables).
    fn token(&self, service: Service) -> Option<String> {
        match service {
            Service::Consul => self.consul_token.clone(),
            _ => service.env_value(harun_runtime::service::Env::Token),
        }
    }

    /// Where `service` answers on `address`, trying `candidates` in order. A certificate
    /// that is not trusted stops init (never a fall back to plain HTTP); over plain HTTP
    /// no token is sent, and a service that has a token and answers only there is refused
    /// unless `--plain-http` says the cluster speaks plain HTTP.
    fn find(
        &self,
        service: Service,
        address: &str,
        candidates: &[(&'static str, u16)],
        path: &str,
    ) -> Result<Option<(Answer, Value)>, (&'static str, String)> {
        let token = self.token(service);
        for &(scheme, port) in candidates {
            let url = format!("{scheme}://{address}:{port}{path}");
            let plain = scheme == "http";
            let send = if plain && !self.plain_http {
                None
            } else {
                token.as_deref()
            };
            let answer = Answer { scheme, port };
            let refused_plain = plain && token.is_some() && !self.plain_http;
            match self.get(&url, service, send) {
                Probed::Tls(why) => {
                    let env = service.env(harun_runtime::service::Env::CaCert);
                    return Err((
                        codes::api(service, codes::Api::Tls),
                        format!(
                            "{service} at {scheme}://{address}:{port}: {why}: pass --ca-file with the CA that \
                             signed it (or set {env}); harun does not fall back to plain HTTP; nothing was written"
                        ),
                    ));
                }
                Probed::Json(_) | Probed::Status if refused_plain => {
                    return Err((
                        codes::api(service, codes::Api::Tls),
                        format!(
                            "{service} at {address} answers only over plain HTTP (port {port}), and harun sends its \
                             token only over TLS: turn on {service}'s HTTPS listener and pass --ca-file, or pass \
                             --plain-http if this cluster speaks plain HTTP on a network you trust (tokens then \
                             travel in clear); nothing was written"
                        ),
                    ))
                }
                Probed::Json(value) => return Ok(Some((answer, value))),
                Probed::Status | Probed::Absent => {}
            }
        }
        Ok(None)
    }

    fn get(&self, url: &str, service: Service, token: Option<&str>) -> Probed {
        let mut request = self.client.get(url);
        if let Some(token) = token {
            request = request.header(service.token_header(), token);
        }
        match request.send() {
            Ok(reply) if reply.status().is_success() => {
                reply.json().map(Probed::Json).unwrap_or(Probed::Absent)
            }
            Ok(reply) => {
                if reply.status().as_u16() == 403 {
                    self.forbidden.set(true);
                }
                Probed::Status
            }
            Err(e) => {
                let text = format!("{e:?}");
                if !url.starts_with("https") {
                    Probed::Absent
                } else if text.contains("UnknownIssuer") {
                    Probed::Tls("its certificate is signed by a CA harun does not trust".into())
                } else if text.contains("InvalidCertificate") {
                    Probed::Tls("its certificate is not valid for this address".into())
                } else if text.contains("CertificateRequired") || text.contains("HandshakeFailure")
                {
                    Probed::Tls(
                        "its TLS handshake failed, most likely for a client certificate, which harun init does not send \
                         (write the topology by hand with client_cert and client_key)"
                            .into(),
                    )
                } else {
                    Probed::Absent
                }
            }
        }
    }

    /// Why nothing answered, when a probe said more than "no".
    fn hint(&self) -> String {
        if self.forbidden.get() {
            " (it refused without a token: pass --consul-token-file, or set CONSUL_HTTP_TOKEN)"
                .to_string()
        } else {
            String::new()
        }
    }
}
