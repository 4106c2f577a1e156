//! The error catalogue: every code harun reports, written once, here, with what it means,
//! and harun's own exit statuses. Scripts match on `e.code`, monitoring and tests on the
//! `error[CODE]` line; `harun doc` lists the catalogue.

use crate::service::Service;

/// harun's exit statuses, as monitoring plugins use them.
pub mod exit {
    /// Everything is fine.
    pub const OK: i32 = 0;
    /// The script reported a warning.
    pub const WARNING: i32 = 1;
    /// The script reported a critical state.
    pub const CRITICAL: i32 = 2;
    /// harun could not do what it was asked (a bad topology, a script error, a refusal).
    pub const ERROR: i32 = 3;
}

/// Declares each code as a constant and lists them all, with their doc comments, in
/// [`ALL`].
macro_rules! catalogue {
    ($( #[doc = $doc:literal] $name:ident = $code:literal; )*) => {
        $( #[doc = $doc] pub const $name: &str = $code; )*
        /// Every code with what it means, in catalogue order.
        pub const ALL: &[(&str, &str)] = &[ $( ($code, $doc) ),* ];
    };
}

catalogue! {
    // ----- the command line and the run -----
    /// The command line asks for something harun cannot do (conflicting options).
    USAGE = "harun::usage";
    /// The audit log cannot be opened (a symlink, another user's file or directory): no change is made.
    AUDIT_LOG = "harun::audit_log";
    /// A path harun would write into is a symlink, another user's, or open to others.
    PATH_UNSAFE = "harun::path::unsafe";
    /// The script file cannot be read.
    SCRIPT_READ = "harun::script::read";
    /// harun cannot start its I/O runtime.
    RUNTIME = "harun::runtime";
    /// `harun doc` cannot read the built-ins' metadata.
    DOC = "harun::doc";
    /// The REPL's line editor failed.
    REPL = "harun::repl";
    /// `harun lab` failed (the message says which lab step and why).
    LAB = "harun::lab";
    /// `harun lab` found no lab in the directory (`harun lab up --dir DIR` makes one).
    LAB_NOT_UP = "harun::lab::not_up";
    /// `harun lab` was asked for a host, service or action the lab does not have.
    LAB_UNKNOWN = "harun::lab::unknown";
    /// A twin of the lab did not start, or did not answer once started (its log says why).
    LAB_SERVICE = "harun::lab::service";
    /// The run's --timeout passed.
    TIMEOUT = "harun::timeout";
    /// A network or host call's own deadline passed.
    DEADLINE = "harun::deadline";
    /// Ctrl-C (SIGINT) stopped the run.
    INTERRUPTED = "harun::interrupted";
    /// SIGTERM stopped the run.
    TERMINATED = "harun::terminated";

    // ----- the topology file -----
    /// The topology file cannot be read.
    TOPOLOGY_READ = "harun::topology::read";
    /// The topology file is not valid HCL.
    TOPOLOGY_SYNTAX = "harun::topology::syntax";
    /// A block or setting of the topology file is unknown or has a wrong value.
    TOPOLOGY = "harun::topology";

    // ----- the script language -----
    /// The script does not parse.
    SCRIPT_SYNTAX = "harun::script::syntax";
    /// The script uses a variable that does not exist.
    SCRIPT_UNKNOWN_VARIABLE = "harun::script::unknown_variable";
    /// The script calls a function that does not exist (or with other argument types).
    SCRIPT_UNKNOWN_FUNCTION = "harun::script::unknown_function";
    /// The script reads a property that the value does not have.
    SCRIPT_UNKNOWN_PROPERTY = "harun::script::unknown_property";
    /// An `import` names a module that cannot be found.
    SCRIPT_MODULE_NOT_FOUND = "harun::script::module_not_found";
    /// A module imports itself, or modules import each other (the message names the chain).
    SCRIPT_IMPORT_CYCLE = "harun::script::import_cycle";
    /// Two files of a run define a function of one name and number of parameters (Rhai may call one for the other): rename one.
    SCRIPT_FUNCTION_CLASH = "harun::script::function_clash";
    /// A value has another type than the operation needs.
    SCRIPT_TYPE_MISMATCH = "harun::script::type_mismatch";
    /// An index is out of range.
    SCRIPT_INDEX = "harun::script::index";
    /// The script hit one of the engine's limits (call depth, operations).
    SCRIPT_LIMIT = "harun::script::limit";
    /// Arithmetic failed (division by zero, overflow).
    SCRIPT_ARITHMETIC = "harun::script::arithmetic";
    /// The script threw a value of its own (`throw "..."`).
    SCRIPT_THROWN = "harun::script::thrown";
    /// Any other script error.
    SCRIPT_ERROR = "harun::script::error";

    // ----- the run's built-ins -----
    /// `exit(n)` was given a status outside 0 to 3.
    EXIT_RANGE = "harun::exit::range";
    /// `sleep(s)` was given a negative or too long time.
    SLEEP_RANGE = "harun::sleep::range";
    /// A change needed confirmation, and there was no yes (no terminal, no --yes).
    CONFIRM_REFUSED = "harun::confirm::refused";
    /// `param(name)` names a parameter that no --set gave, with no default.
    PARAM_MISSING = "harun::param::missing";
    /// A --set value is not of the kind the script reads it as (param_int, param_float, param_bool).
    PARAM_INVALID = "harun::param::invalid";
    /// A secret's environment variable is not set.
    SECRET_ENV_MISSING = "harun::secret::env_missing";
    /// A secret's file cannot be read.
    SECRET_FILE_READ = "harun::secret::file_read";
    /// A secret's file can be read by others than its owner (it must be mode 0600 or 0400).
    SECRET_FILE_MODE = "harun::secret::file_mode";
    /// A secret must be typed, and there is no terminal to type it on.
    SECRET_NO_TERMINAL = "harun::secret::no_terminal";
    /// Reading a typed secret failed.
    SECRET_PROMPT = "harun::secret::prompt";
    /// `retry` used up its attempts.
    RETRY_ATTEMPTS = "harun::retry::attempts";
    /// `wait_until` did not see its condition in time.
    WAIT_TIMEOUT = "harun::wait::timeout";
    /// An item of `parallel` failed (the message names which).
    PARALLEL_FAILED = "harun::parallel::failed";
    /// `local::read` cannot read the file.
    LOCAL_READ = "harun::local::read";
    /// `local::write` cannot write the file.
    LOCAL_WRITE = "harun::local::write";
    /// `hcl::parse` or `hcl::edit` was given text that is not HCL.
    HCL_SYNTAX = "harun::hcl::syntax";
    /// An HCL edit cannot be made (a path that names no block, a value HCL cannot hold).
    HCL_EDIT = "harun::hcl::edit";

    // ----- hosts -----
    /// `host(name)` names no host of the topology.
    HOST_UNKNOWN = "harun::host::unknown";
    /// A host is asked for, and no topology was given.
    HOST_NO_TOPOLOGY = "harun::host::no_topology";
    /// A host call was given an option it does not know, or a wrong value.
    HOST_OPTION = "harun::host::option";
    /// The host cannot be reached (refused, no route, name unknown).
    HOST_UNREACHABLE = "harun::host::unreachable";
    /// SSH authentication failed.
    HOST_AUTH = "harun::host::auth";
    /// The host's key is unknown or has changed.
    HOST_HOST_KEY = "harun::host::host_key";
    /// The host's sshd refused another session (MaxSessions).
    HOST_SESSIONS = "harun::host::sessions";
    /// Connecting or a command took longer than the host's timeout.
    HOST_TIMEOUT = "harun::host::timeout";
    /// Any other SSH failure.
    HOST_SSH = "harun::host::ssh";
    /// The SSH connection closed during a command.
    HOST_CLOSED = "harun::host::closed";
    /// Local I/O failed while talking to the host.
    HOST_IO = "harun::host::io";
    /// The SSH control directory cannot be made.
    HOST_CONTROL_DIR = "harun::host::control_dir";
    /// A command could not be started on the host.
    HOST_COMMAND = "harun::host::command";
    /// A command ended with a non-zero status (`exec`, `sudo`).
    HOST_COMMAND_FAILED = "harun::host::command_failed";
    /// The command does not exist on the host (status 127).
    HOST_COMMAND_NOT_FOUND = "harun::host::command_not_found";
    /// Permission denied on the host.
    HOST_PERMISSION = "harun::host::permission";
    /// sudo wants a password (harun runs `sudo -n`).
    HOST_SUDO = "harun::host::sudo";
    /// A file on the host does not exist.
    HOST_NOT_FOUND = "harun::host::not_found";
    /// A file on the host is not text.
    HOST_BINARY = "harun::host::binary";

    // ----- services -----
    /// `service::start`, `stop` or `restart` did not reach the state asked for in time.
    SERVICE_TIMEOUT = "harun::service::timeout";
    /// The service manager answered with a state harun cannot read.
    SERVICE_STATE = "harun::service::state";

    /// The topology's consul block lacks what the call needs (an address, a token file).
    CONSUL_CONFIG = "harun::consul::config";
    /// Consul's CA, client certificate or key cannot be used.
    CONSUL_TLS = "harun::consul::tls";
    /// Consul's API cannot be reached.
    CONSUL_UNREACHABLE = "harun::consul::unreachable";
    /// Consul answered 403: the token lacks a permission.
    CONSUL_FORBIDDEN = "harun::consul::forbidden";
    /// Consul answered 404.
    CONSUL_NOT_FOUND = "harun::consul::not_found";
    /// Consul answered another error status.
    CONSUL_HTTP = "harun::consul::http";
    /// A wait on Consul did not see its condition in time.
    CONSUL_TIMEOUT = "harun::consul::timeout";
    /// A registration through an address that is not the host's own agent.
    CONSUL_NOT_LOCAL_AGENT = "harun::consul::not_local_agent";
    /// `consul::dns_check` was given a bad DNS address or the lookup failed.
    CONSUL_DNS = "harun::consul::dns";
    /// Another run holds the changing scripts' Consul lock.
    CONSUL_LOCKED = "harun::consul::locked";
    /// The run lost its Consul lock: it stops before its next change.
    CONSUL_LOCK_LOST = "harun::consul::lock_lost";

    /// The topology's nomad block lacks what the call needs.
    NOMAD_CONFIG = "harun::nomad::config";
    /// Nomad's CA, client certificate or key cannot be used.
    NOMAD_TLS = "harun::nomad::tls";
    /// Nomad's API cannot be reached.
    NOMAD_UNREACHABLE = "harun::nomad::unreachable";
    /// Nomad answered 403.
    NOMAD_FORBIDDEN = "harun::nomad::forbidden";
    /// Nomad answered 404.
    NOMAD_NOT_FOUND = "harun::nomad::not_found";
    /// Nomad answered another error status.
    NOMAD_HTTP = "harun::nomad::http";
    /// A wait on Nomad did not see its condition in time.
    NOMAD_TIMEOUT = "harun::nomad::timeout";
    /// A Nomad server join failed.
    NOMAD_JOIN = "harun::nomad::join";

    /// The topology's vault block lacks what the call needs.
    VAULT_CONFIG = "harun::vault::config";
    /// Vault's CA, client certificate or key cannot be used.
    VAULT_TLS = "harun::vault::tls";
    /// Vault's API cannot be reached.
    VAULT_UNREACHABLE = "harun::vault::unreachable";
    /// Vault answered 403: the token lacks a policy.
    VAULT_FORBIDDEN = "harun::vault::forbidden";
    /// Vault answered 404.
    VAULT_NOT_FOUND = "harun::vault::not_found";
    /// Vault answered another error status.
    VAULT_HTTP = "harun::vault::http";
    /// A wait on Vault did not see its condition in time.
    VAULT_TIMEOUT = "harun::vault::timeout";
    /// An unseal key was given as plain text, not as a Secret.
    VAULT_KEY_NOT_SECRET = "harun::vault::key_not_secret";
    /// No unseal keys: no keys_file, no VAULT_UNSEAL_KEYS, no terminal.
    VAULT_NO_KEYS = "harun::vault::no_keys";
    /// Fewer unseal keys than the threshold.
    VAULT_NOT_ENOUGH_KEYS = "harun::vault::not_enough_keys";
    /// The keys were sent and the node stayed sealed.
    VAULT_UNSEAL_FAILED = "harun::vault::unseal_failed";
    /// A snapshot fails its format's check (cut short, altered, another service's): not kept or restored.
    SNAPSHOT_INVALID = "harun::snapshot::invalid";
    /// A snapshot cannot be written to its file.
    SNAPSHOT_WRITE = "harun::snapshot::write";
}

/// The kinds of error every service API shares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Api {
    Config,
    Tls,
    Unreachable,
    Forbidden,
    NotFound,
    Http,
    Timeout,
}

/// The code of an API error of `service`.
pub fn api(service: Service, kind: Api) -> &'static str {
    use Api::*;
    match (service, kind) {
        (Service::Consul, Config) => CONSUL_CONFIG,
        (Service::Consul, Tls) => CONSUL_TLS,
        (Service::Consul, Unreachable) => CONSUL_UNREACHABLE,
        (Service::Consul, Forbidden) => CONSUL_FORBIDDEN,
        (Service::Consul, NotFound) => CONSUL_NOT_FOUND,
        (Service::Consul, Http) => CONSUL_HTTP,
        (Service::Consul, Timeout) => CONSUL_TIMEOUT,
        (Service::Nomad, Config) => NOMAD_CONFIG,
        (Service::Nomad, Tls) => NOMAD_TLS,
        (Service::Nomad, Unreachable) => NOMAD_UNREACHABLE,
        (Service::Nomad, Forbidden) => NOMAD_FORBIDDEN,
        (Service::Nomad, NotFound) => NOMAD_NOT_FOUND,
        (Service::Nomad, Http) => NOMAD_HTTP,
        (Service::Nomad, Timeout) => NOMAD_TIMEOUT,
        (Service::Vault, Config) => VAULT_CONFIG,
        (Service::Vault, Tls) => VAULT_TLS,
        (Service::Vault, Unreachable) => VAULT_UNREACHABLE,
        (Service::Vault, Forbidden) => VAULT_FORBIDDEN,
        (Service::Vault, NotFound) => VAULT_NOT_FOUND,
        (Service::Vault, Http) => VAULT_HTTP,
        (Service::Vault, Timeout) => VAULT_TIMEOUT,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_is_listed_once_and_means_something() {
        let mut seen = std::collections::HashSet::new();
        for (code, meaning) in ALL {
            assert!(code.starts_with("harun::"), "{code}");
            assert!(seen.insert(code), "{code} twice");
            assert!(meaning.trim().len() > 10, "{code}: {meaning:?}");
        }
        for service in Service::ALL {
            let code = api(service, Api::Forbidden);
            assert_eq!(code, format!("harun::{service}::forbidden"));
            assert!(ALL.iter().any(|(c, _)| *c == code));
        }
    }
}
