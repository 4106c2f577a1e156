//! The services harun speaks to, and what differs between their APIs and CLIs, said once.
//! A leaf of the runtime: the topology, the error catalogue and the clients all use it.

/// The services harun speaks to. Their names are the topology's block names and the
/// script modules' names; what differs between their APIs is said here once.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Service {
    Consul,
    Nomad,
    Vault,
}

impl Service {
    pub const ALL: [Service; 3] = [Service::Consul, Service::Nomad, Service::Vault];

    /// `consul`, `nomad` or `vault`: the topology block and the script module.
    pub fn name(self) -> &'static str {
        match self {
            Service::Consul => "consul",
            Service::Nomad => "nomad",
            Service::Vault => "vault",
        }
    }

    /// The API's port and scheme as the packaged server listens by default (Vault's
    /// listener wants TLS unless told otherwise).
    pub const fn api_port(self) -> u16 {
        match self {
            Service::Consul => 8500,
            Service::Nomad => 4646,
            Service::Vault => 8200,
        }
    }

    pub const fn api_scheme(self) -> &'static str {
        match self {
            Service::Vault => "https",
            _ => "http",
        }
    }

    /// Vault's cluster port (request forwarding and raft), the API's port plus one.
    pub const VAULT_CLUSTER_PORT: u16 = 8201;

    pub fn from_name(name: &str) -> Option<Service> {
        Service::ALL.into_iter().find(|s| s.name() == name)
    }

    /// The header the API takes its token in.
    pub fn token_header(self) -> &'static str {
        match self {
            Service::Consul => "X-Consul-Token",
            Service::Nomad => "X-Nomad-Token",
            Service::Vault => "X-Vault-Token",
        }
    }

    /// The header a blocking query's index comes back in (Vault has none).
    pub fn index_header(self) -> &'static str {
        match self {
            Service::Consul => "X-Consul-Index",
            Service::Nomad => "X-Nomad-Index",
            Service::Vault => "X-Vault-Index",
        }
    }

    /// The environment variables that hold `what`, in the order they are read: the
    /// official CLI's ([`Service::env`]), then for Vault OpenBao's `BAO_*` one.
    pub fn env_names(self, what: Env) -> Vec<String> {
        let official = self.env(what);
        match self {
            Service::Vault => {
                let bao = official.replacen("VAULT_", "BAO_", 1);
                vec![official, bao]
            }
            _ => vec![official],
        }
    }

    /// The first non-empty value of [`Service::env_names`] in this process's environment.
    pub fn env_value(self, what: Env) -> Option<String> {
        self.env_names(what)
            .into_iter()
            .find_map(|name| std::env::var(name).ok().filter(|v| !v.is_empty()))
    }

    /// The official CLI's environment variables, by what they hold: `CONSUL_HTTP_TOKEN`
    /// but `NOMAD_TOKEN` and `VAULT_TOKEN`, `CONSUL_CACERT`, ...
    pub fn env(self, what: Env) -> String {
        let suffix = match (self, what) {
            (Service::Consul, Env::Token) => "HTTP_TOKEN",
            (_, Env::Token) => "TOKEN",
            (_, Env::CaCert) => "CACERT",
            (_, Env::ClientCert) => "CLIENT_CERT",
            (_, Env::ClientKey) => "CLIENT_KEY",
            (_, Env::TlsServerName) => "TLS_SERVER_NAME",
            (Service::Consul, Env::SkipVerify) => "HTTP_SSL_VERIFY",
            (_, Env::SkipVerify) => "SKIP_VERIFY",
        };
        format!("{}_{suffix}", self.name().to_uppercase())
    }

    /// Whether the value of the `Env::SkipVerify` variable turns verification off:
    /// `CONSUL_HTTP_SSL_VERIFY=false`, but `NOMAD_SKIP_VERIFY=true`.
    pub fn skips_verify(self, value: &str) -> bool {
        match self {
            Service::Consul => value == "false",
            _ => value == "true" || value == "1",
        }
    }
}

impl std::fmt::Display for Service {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The environment variables the official CLIs read, by what they hold.
#[derive(Clone, Copy, Debug)]
pub enum Env {
    Token,
    CaCert,
    ClientCert,
    ClientKey,
    TlsServerName,
    SkipVerify,
}
