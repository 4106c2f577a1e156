//! One HTTP client per host and service (Consul, Nomad, Vault), built from the topology:
//! the service's `address`, `token_file`, `ca_file`, `client_cert` / `client_key` and
//! `tls_skip_verify`, falling back to the official CLIs' environment variables
//! (`CONSUL_HTTP_TOKEN`, `CONSUL_CACERT`, ...). Every call has a timeout and stops on
//! Ctrl-C. A request is a read or a change by the method called: `read` and `get` only
//! GET, and a change goes out only through `write`, `change` or `changes`, which plan it
//! in a dry run and audit it otherwise. There is no other way to send one.

use parking_lot::Mutex;
use std::collections::HashMap;
use std::time::Duration;

use harun_runtime::codes::{self, Api};
use harun_runtime::diagnostic::interrupt_error;
use harun_runtime::error::call_error;
use harun_runtime::secret::read_private_file;
use harun_runtime::service::{Env, Service};
use harun_runtime::{Action, Context};
use rhai::{EvalAltResult, NativeCallContext};
use serde_json::Value;

use crate::hosts::HostHandle;

type RhaiResult<T> = Result<T, Box<EvalAltResult>>;

pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a read waits out an election: a few of Consul's and Nomad's own request holds
/// (`RPCHoldTimeout`, 7 s and 5 s), and Vault's standby takeover (its step-down sleep is
/// 10 s).
pub const ELECTION_WAIT: Duration = Duration::from_secs(30);

/// Whether an answer says only that the cluster is between leaders, which passes by
/// itself: Consul's and Nomad's 500 `No cluster leader` (agent/structs/errors.go and
/// nomad/structs/errors.go `ErrNoLeader`; through a client agent `rpc error...: No
/// cluster leader`), and a Vault standby's 500 `local node not active but active cluster
/// node not found` or 503 `no active Vault instance found` (http/handler.go
/// `handleRequestForwarding`, `respondStandby`), which Vault's own client retries.
pub fn in_election(service: Service, reply: &Reply) -> bool {
    let text = reply.text();
    match (service, reply.status) {
        (Service::Consul | Service::Nomad, 500) => text.contains("No cluster leader"),
        (Service::Vault, 500) => text.contains("active cluster node not found"),
        (Service::Vault, 503) => text.contains("no active Vault instance found"),
        _ => false,
    }
}

/// An API's answer: status, the headers scripts care about, and the body.
pub struct Reply {
    pub status: u16,
    pub index: Option<String>,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).trim().to_string()
    }
}

#[derive(Clone)]
pub struct ApiClient {
    /// Names the error codes and the topology block.
    pub service: Service,
    pub host: String,
    /// The address from the topology, as messages show it.
    pub base: String,
    /// Where requests go: `base`, or with `tls_server_name` that name (resolved to the
    /// address), so the certificate is checked against the name it was made for.
    url_base: String,
    client: reqwest::Client,
    token: Option<String>,
    /// An https address and no client certificate: a connection the server closes at
    /// once may be its refusal of a client without one.
    https_without_identity: bool,
}

/// Clients are built once per run, host and service.
#[derive(Default)]
struct Clients(Mutex<HashMap<(String, Service), ApiClient>>);

impl ApiClient {
    pub fn for_host(
        ctx: &NativeCallContext,
        host: &HostHandle,
        service: Service,
    ) -> RhaiResult<ApiClient> {
        let context = Context::of(ctx);
        let clients = context.extension::<Clients>();
        let key = (host.name().to_string(), service);
        if let Some(c) = clients.0.lock().get(&key) {
            return Ok(c.clone());
        }
        let client = Self::build(ctx, host, service)?;
        clients.0.lock().insert(key, client.clone());
        Ok(client)
    }

    fn build(
        ctx: &NativeCallContext,
        host: &HostHandle,
        service: Service,
    ) -> RhaiResult<ApiClient> {
        let code = |kind: Api| codes::api(service, kind);
        let settings = host.service(service);
        let env = |what: Env| service.env_value(what);
        let base = settings.address.trim_end_matches('/').to_string();
        let token = match &settings.token_file {
            Some(path) => Some(
                read_private_file(path)
                    .map_err(|(code, message)| call_error(ctx, code, message))?
                    .trim()
                    .to_string(),
            ),
            None => env(Env::Token),
        };
        if let Some(t) = &token {
            // The token is a secret from here on: no output shows it.
            Context::of(ctx).secret(t.clone());
            // Over plain HTTP any local user who can bind the port reads it: only where the
            // topology file itself says http:// for this service.
            if !host.token_allowed(service) {
                return Err(call_error(
                    ctx,
                    code(Api::Config),
                    format!(
                        "{}: harun sends no {service} token over plain HTTP to {base} unless the topology says so: \
                         set the address to https:// (and ca_file) in the topology's {service} block, or write \
                         `address = \"http://{{address}}:{port}\"` there if this {service} speaks only plain HTTP",
                        host.name(),
                        port = service.api_port(),
                    ),
                ));
            }
        }
        install_crypto();
        let mut builder = reqwest::Client::builder()
            .no_proxy()
            .connect_timeout(Duration::from_secs(5));
        // Plain HTTP verifies no certificate: skip loading the system's roots (a few ms
        // and some memory per client).
        if base.starts_with("http://") {
            builder = builder.tls_certs_only(Vec::<reqwest::Certificate>::new());
        }
        let tls_error =
            |what: String| call_error(ctx, code(Api::Tls), format!("{}: {what}", host.name()));
        if let Some(ca) = settings.ca_file.clone().or_else(|| env(Env::CaCert)) {
            let pem = std::fs::read(&ca)
                .map_err(|e| tls_error(format!("cannot read the CA file {ca}: {e}")))?;
            // The CA given is the only one trusted, as the official CLIs do: a server with
            // a certificate from any CA in the system's store gets no token.
            let certs = reqwest::Certificate::from_pem_bundle(&pem)
                .ok()
                .filter(|c| !c.is_empty())
                .ok_or_else(|| tls_error(format!("the CA file {ca} holds no PEM certificate")))?;
            builder = builder.tls_certs_only(certs);
        }
        let cert = settings
            .client_cert
            .clone()
            .or_else(|| env(Env::ClientCert));
        let key = settings.client_key.clone().or_else(|| env(Env::ClientKey));
        let https_without_identity =
            base.starts_with("https://") && (cert.is_none() || key.is_none());
        if let (Some(cert), Some(key)) = (cert, key) {
            let mut pem = std::fs::read(&cert).map_err(|e| {
                tls_error(format!("cannot read the client certificate {cert}: {e}"))
            })?;
            pem.extend(
                std::fs::read(&key)
                    .map_err(|e| tls_error(format!("cannot read the client key {key}: {e}")))?,
            );
            builder = builder.identity(
                reqwest::Identity::from_pem(&pem)
                    .map_err(|e| tls_error(format!("bad client certificate or key: {e}")))?,
            );
        }
        let skip = settings.tls_skip_verify
            || env(Env::SkipVerify).is_some_and(|v| service.skips_verify(&v));
        if skip {
            builder = builder.danger_accept_invalid_certs(true);
        }
        let mut url_base = base.clone();
        if let Some(name) = settings
            .tls_server_name
            .clone()
            .or_else(|| env(Env::TlsServerName))
        {
            let (url, addr) = with_server_name(&base, &name)
                .map_err(|e| call_error(ctx, code(Api::Config), format!("{}: {e}", host.name())))?;
            builder = builder.resolve(&name, addr);
            url_base = url;
        }
        let client = builder
            .build()
            .map_err(|e| tls_error(format!("cannot build the HTTP client: {e}")))?;
        Ok(ApiClient {
            service,
            host: host.name().to_string(),
            base,
            url_base,
            client,
            token,
            https_without_identity,
        })
    }

    /// A read: `GET path` within `timeout`. Any status comes back (a probe or a wait
    /// judges it); connection failures and timeouts are errors naming the host.
    pub fn read(
        &self,
        ctx: &NativeCallContext,
        path: &str,
        timeout: Duration,
    ) -> RhaiResult<Reply> {
        self.send(ctx, reqwest::Method::GET, path, None, timeout)
    }

    /// A request to `path` with the token and `timeout`, not yet sent.
    fn request(
        &self,
        method: reqwest::Method,
        path: &str,
        timeout: Duration,
    ) -> reqwest::RequestBuilder {
        let request = self
            .client
            .request(method, format!("{}{path}", self.url_base))
            .timeout(timeout);
        match &self.token {
            Some(token) => request.header(self.service.token_header(), token),
            None => request,
        }
    }

    /// Sends one request and waits for the answer, within `timeout` and the run's limits.
    /// Private: a change must come through `write` or `changes`, which record it.
    fn send(
        &self,
        ctx: &NativeCallContext,
        method: reqwest::Method,
        path: &str,
        body: Option<Vec<u8>>,
        timeout: Duration,
    ) -> RhaiResult<Reply> {
        let mut request = self.request(method.clone(), path, timeout);
        if let Some(body) = body {
            request = request.body(body);
        }
        let future = async move {
            let reply = request.send().await?;
            let status = reply.status().as_u16();
            let index = reply
                .headers()
                .get(self.service.index_header())
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            let body = reply.bytes().await?.to_vec();
            Ok::<Reply, reqwest::Error>(Reply {
                status,
                index,
                body,
            })
        };
        let what = format!("{} {} on {}", method, path_only(path), self.host);
        let outcome = Context::of(ctx)
            .block_on(timeout + Duration::from_secs(1), future)
            .map_err(|i| interrupt_error(i, &what, ctx.call_position()))?;
        outcome.map_err(|e| {
            let reason = if e.is_timeout() {
                format!("no answer within {}s", timeout.as_secs())
            } else if e.is_connect() {
                format!("cannot connect to {}: {}", self.base, root_cause(&e))
            } else {
                root_cause(&e)
            };
            let hint = tls_hint(&reason, self.service, self.https_without_identity);
            call_error(
                ctx,
                codes::api(self.service, Api::Unreachable),
                format!("{}: {what}: {reason}{hint}", self.service),
            )
        })
    }

    /// A read whose body goes into `sink` as it arrives (a snapshot into its file), within
    /// `timeout`; the number of bytes. A status other than 2xx is an error with the API's
    /// message, and nothing goes into `sink`.
    pub fn read_into(
        &self,
        ctx: &NativeCallContext,
        path: &str,
        timeout: Duration,
        sink: &mut impl std::io::Write,
    ) -> RhaiResult<u64> {
        let request = self.request(reqwest::Method::GET, path, timeout);
        let future = async move {
            let mut reply = request.send().await?;
            let status = reply.status().as_u16();
            if !(200..300).contains(&status) {
                let body = reply.bytes().await?.to_vec();
                return Ok(Err(Reply {
                    status,
                    index: None,
                    body,
                }));
            }
            let mut written = 0u64;
            while let Some(chunk) = reply.chunk().await? {
                if let Err(e) = sink.write_all(&chunk) {
                    return Ok(Ok(Err(e)));
                }
                written += chunk.len() as u64;
            }
            Ok::<_, reqwest::Error>(Ok(Ok(written)))
        };
        let what = format!("GET {} on {}", path_only(path), self.host);
        let outcome = Context::of(ctx)
            .block_on(timeout + Duration::from_secs(1), future)
            .map_err(|i| interrupt_error(i, &what, ctx.call_position()))?;
        match outcome {
            Ok(Ok(Ok(written))) => Ok(written),
            Ok(Ok(Err(e))) => Err(call_error(
                ctx,
                codes::api(self.service, Api::Unreachable),
                format!("{}: {what}: cannot keep the answer: {e}", self.service),
            )),
            Ok(Err(reply)) => self.check(ctx, "GET", path, reply, &[]).map(|_| 0),
            Err(e) => Err(call_error(
                ctx,
                codes::api(self.service, Api::Unreachable),
                format!("{}: {what}: {}", self.service, root_cause(&e)),
            )),
        }
    }

    /// Waits until `count` of what `GET path` answers reaches `n` and returns it: the
    /// modules' "n servers, n voters, n nodes" waits. A failed request or a status other
    /// than 200 counts as not yet; a timeout names `what` and the last count with `unit`.
    #[allow(clippy::too_many_arguments)]
    pub fn wait_count(
        &self,
        ctx: &NativeCallContext,
        what: &str,
        path: &str,
        n: i64,
        timeout_seconds: f64,
        unit: &str,
        count: impl Fn(&Value) -> usize,
    ) -> RhaiResult<rhai::Dynamic> {
        let seen = std::cell::Cell::new(0usize);
        self.wait_for(
            ctx,
            &format!("{what} (asking {})", self.host),
            timeout_seconds,
            || {
                let r = self.read(ctx, path, Duration::from_secs(3)).ok()?;
                if r.status != 200 {
                    return None;
                }
                let c = count(&r.json());
                seen.set(c);
                (c as i64 >= n).then(|| (c as i64).into())
            },
            || format!("{} {unit}", seen.get()),
        )
    }

    /// Polls `check` until it gives Some (see `wait_for`), in this service's codes.
    pub fn wait_for(
        &self,
        ctx: &NativeCallContext,
        what: &str,
        timeout_seconds: f64,
        check: impl FnMut() -> Option<rhai::Dynamic>,
        last: impl Fn() -> String,
    ) -> RhaiResult<rhai::Dynamic> {
        wait_for(ctx, self.service, what, timeout_seconds, check, last)
    }

    /// A read: errors for any status but 2xx (and those in `ok`), with the API's message.
    /// A read that meets an election under way (see [`in_election`]) is asked again for
    /// up to [`ELECTION_WAIT`]: a run started right after a restart must not end on it.
    pub fn get(&self, ctx: &NativeCallContext, path: &str, ok: &[u16]) -> RhaiResult<Reply> {
        let started = std::time::Instant::now();
        let mut told = false;
        loop {
            let reply = self.read(ctx, path, DEFAULT_TIMEOUT)?;
            if !in_election(self.service, &reply) || started.elapsed() >= ELECTION_WAIT {
                return self.check(ctx, "GET", path, reply, ok);
            }
            if !told {
                tracing::info!(
                    "{} on {}: an election is under way ({}); asking again for up to {}s",
                    self.service,
                    self.host,
                    reply.text(),
                    ELECTION_WAIT.as_secs()
                );
                told = true;
            }
            crate::wait::pause(ctx, 0.5, &format!("{} on {}", self.service, self.host))?;
        }
    }

    /// A write whose answer is not needed: true when it ran, false when a dry run planned
    /// it.
    pub fn change(
        &self,
        ctx: &NativeCallContext,
        method: &str,
        path: &str,
        body: Option<Vec<u8>>,
        summary: &str,
    ) -> RhaiResult<bool> {
        Ok(self.write(ctx, method, path, body, summary)?.is_some())
    }

    /// A write, through the runtime's one path for changes: planned in a dry run (None),
    /// audited otherwise.
    pub fn write(
        &self,
        ctx: &NativeCallContext,
        method: &str,
        path: &str,
        body: Option<Vec<u8>>,
        summary: &str,
    ) -> RhaiResult<Option<Reply>> {
        self.changes(ctx, summary, |w| {
            let reply = w.send(ctx, method, path, body, DEFAULT_TIMEOUT)?;
            self.check(ctx, method, path, reply, &[])
        })
    }

    /// Several requests that make one change (an unseal, a key at a time; taking a lock),
    /// recorded as one action: `run` sends them through the `Changes` it is given, and is
    /// not called in a dry run (None).
    pub fn changes<T>(
        &self,
        ctx: &NativeCallContext,
        summary: &str,
        run: impl FnOnce(&Changes) -> RhaiResult<T>,
    ) -> RhaiResult<Option<T>> {
        let action = Action::new("http", self.host.clone(), summary.to_string());
        Context::of(ctx).perform(action, || run(&Changes { client: self }))
    }

    pub fn check(
        &self,
        ctx: &NativeCallContext,
        method: &str,
        path: &str,
        reply: Reply,
        ok: &[u16],
    ) -> RhaiResult<Reply> {
        if (200..300).contains(&reply.status) || ok.contains(&reply.status) {
            return Ok(reply);
        }
        let message = api_message(&reply);
        let code = match reply.status {
            403 => Api::Forbidden,
            404 => Api::NotFound,
            _ => Api::Http,
        };
        Err(call_error(
            ctx,
            codes::api(self.service, code),
            format!(
                "{} on {}: {method} {} answered {}: {message}",
                self.service,
                self.host,
                path_only(path),
                reply.status
            ),
        ))
    }
}

/// The sending side of a recorded change (see `ApiClient::changes`).
pub struct Changes<'a> {
    client: &'a ApiClient,
}

impl Changes<'_> {
    /// One request of the change; any status comes back (see `ApiClient::check`).
    pub fn send(
        &self,
        ctx: &NativeCallContext,
        method: &str,
        path: &str,
        body: Option<Vec<u8>>,
        timeout: Duration,
    ) -> RhaiResult<Reply> {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("a valid method");
        self.client.send(ctx, method, path, body, timeout)
    }

    /// Checks an answer of this change as `ApiClient::check` does.
    pub fn check(
        &self,
        ctx: &NativeCallContext,
        method: &str,
        path: &str,
        reply: Reply,
    ) -> RhaiResult<Reply> {
        self.client.check(ctx, method, path, reply, &[])
    }

    /// The same change's background requests, sent through other agents of the cluster
    /// (a lock's renewals while its own agent restarts).
    pub fn through(&self, others: &[ApiClient]) -> Vec<Background> {
        others.iter().cloned().map(Background).collect()
    }

    /// What this change goes on sending beside the script after it returns (a lock's
    /// renewals and its release), as part of the same recorded change.
    pub fn in_background(&self) -> Background {
        Background(self.client.clone())
    }
}

/// Requests that belong to a recorded change and go out beside the script, outside the
/// run's cancellation; only `Changes::in_background` hands one out.
#[derive(Clone)]
pub struct Background(ApiClient);

impl Background {
    /// `PUT path` as a future of its own: the status, or the transport's error.
    pub fn put(
        &self,
        path: &str,
        timeout: Duration,
    ) -> impl std::future::Future<Output = Result<u16, reqwest::Error>> + Send + 'static {
        let request = self.0.request(reqwest::Method::PUT, path, timeout);
        async move { Ok(request.send().await?.status().as_u16()) }
    }

    pub fn host(&self) -> &str {
        &self.0.host
    }
}

/// Chooses rustls's ring provider for every HTTP client of the process (the lab's twins
/// included): reqwest is built without a provider of its own.
pub fn install_crypto() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// `https://10.0.0.11:4646` with server name `server.global.nomad`: the URL to request
/// (`https://server.global.nomad:4646`) and the socket address that name stands for.
fn with_server_name(base: &str, name: &str) -> Result<(String, std::net::SocketAddr), String> {
    let mut url = reqwest::Url::parse(base).map_err(|e| format!("bad address {base}: {e}"))?;
    if url.scheme() != "https" {
        return Err(format!(
            "tls_server_name {name:?} needs an https:// address, not {base}"
        ));
    }
    let addr = url
        .socket_addrs(|| None)
        .map_err(|e| format!("cannot resolve the address {base}: {e}"))?
        .into_iter()
        .next()
        .ok_or_else(|| format!("cannot resolve the address {base}"))?;
    url.set_host(Some(name))
        .map_err(|e| format!("bad tls_server_name {name:?}: {e}"))?;
    Ok((url.as_str().trim_end_matches('/').to_string(), addr))
}

/// How many entries of a JSON array match; 0 when it is not an array.
pub fn count_where(list: &Value, matches: impl Fn(&Value) -> bool) -> usize {
    list.as_array()
        .map_or(0, |items| items.iter().filter(|x| matches(x)).count())
}

/// What to set when TLS failed for a reason a setting mends (rustls names the reason).
fn tls_hint(reason: &str, service: Service, https_without_identity: bool) -> String {
    let env = service.name().to_uppercase();
    if reason.contains("UnknownIssuer") {
        format!(" (trust its CA with ca_file in the topology or {env}_CACERT)")
    } else if reason.contains("CertificateRequired") {
        format!(
            " (it wants a client certificate: client_cert and client_key in the topology, or {env}_CLIENT_CERT and {env}_CLIENT_KEY)"
        )
    } else if reason.contains("BadCertificate") {
        // Go servers (Consul, Nomad, Vault) answer a missing client certificate this way.
        format!(
            " (it refused this client's certificate, or wanted one: client_cert and client_key in the topology, or {env}_CLIENT_CERT and {env}_CLIENT_KEY)"
        )
    } else if https_without_identity
        && (reason.contains("connection was not ready") || reason.contains("connection closed"))
    {
        // TLS 1.3: the server checks the client's certificate after the client has
        // finished its handshake, and its refusal may reach the client only as a closed
        // connection.
        format!(
            " (the server closed the connection; if it wants a client certificate: client_cert and client_key in the topology, or {env}_CLIENT_CERT and {env}_CLIENT_KEY)"
        )
    } else if reason.contains("NotValidForName") || reason.contains("not valid for name") {
        format!(
            " (its certificate does not name this address: set tls_server_name in the topology, or {env}_TLS_SERVER_NAME, to a name it holds)"
        )
    } else {
        String::new()
    }
}

/// The API's own words: Vault's `{"errors": [...]}` or the plain text of Consul and Nomad.
fn api_message(reply: &Reply) -> String {
    if let Ok(v) = serde_json::from_slice::<Value>(&reply.body) {
        if let Some(errors) = v["errors"].as_array() {
            return errors
                .iter()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join("; ");
        }
    }
    let text = reply.text();
    if text.is_empty() {
        "(no message)".into()
    } else {
        text
    }
}

fn path_only(path: &str) -> &str {
    path.split('?').next().unwrap_or(path)
}

fn root_cause(e: &dyn std::error::Error) -> String {
    let mut cause = e;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string()
}

/// JSON to a Rhai value, keeping the API's field names.
pub fn to_dynamic(value: &Value) -> rhai::Dynamic {
    rhai::serde::to_dynamic(value).unwrap_or(rhai::Dynamic::UNIT)
}

/// A Rhai value to JSON (maps to objects, arrays to arrays).
pub fn from_dynamic(value: &rhai::Dynamic) -> Value {
    harun_runtime::json::to_json(value)
}

/// Percent-encodes a path segment or query value.
pub fn encode(s: &str) -> String {
    use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
    // RFC 3986's unreserved characters stay, and `/`, which KV keys use as a path.
    const KEEP: &AsciiSet = &NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'_')
        .remove(b'.')
        .remove(b'~')
        .remove(b'/');
    utf8_percent_encode(s, KEEP).to_string()
}

/// A JSON request body.
pub fn json_body(value: &Value) -> Option<Vec<u8>> {
    Some(serde_json::to_vec(value).expect("JSON serializes"))
}

/// Polls `check` every half second until it gives Some or `timeout_seconds` pass; the
/// error (`harun::SERVICE::timeout`) says what was awaited and what `last` saw. In a dry
/// run nothing was started, so one look is taken and the wait is only logged.
pub fn wait_for(
    ctx: &NativeCallContext,
    service: Service,
    what: &str,
    timeout_seconds: f64,
    mut check: impl FnMut() -> Option<rhai::Dynamic>,
    last: impl Fn() -> String,
) -> RhaiResult<rhai::Dynamic> {
    let context = Context::of(ctx);
    if context.is_dry_run() {
        if let Some(v) = check() {
            return Ok(v);
        }
        tracing::info!("dry run: would wait up to {timeout_seconds}s for {what}");
        return Ok(rhai::Dynamic::UNIT);
    }
    let deadline = std::time::Instant::now() + Duration::from_secs_f64(timeout_seconds.max(0.0));
    let _shown = harun_runtime::progress::waiting(
        what,
        Some(Duration::from_secs_f64(timeout_seconds.max(0.0))),
    );
    loop {
        if let Some(v) = check() {
            return Ok(v);
        }
        if std::time::Instant::now() >= deadline {
            return Err(call_error(
                ctx,
                codes::api(service, Api::Timeout),
                format!(
                    "timed out after {timeout_seconds}s waiting for {what} ({})",
                    last()
                ),
            ));
        }
        crate::wait::pause(ctx, 0.5, what)?;
    }
}
