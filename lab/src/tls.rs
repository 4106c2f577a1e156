//! TLS on a twin's HTTP port, from the same `tls` settings the real agent reads
//! (cert_file, key_file, ca_file, verify_https_client), and the client the twins use among
//! themselves when their ports speak TLS.

use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;

#[derive(Clone, Debug)]
pub struct TlsFiles {
    pub cert_file: String,
    pub key_file: String,
    pub ca_file: Option<String>,
    /// Clients must present a certificate the CA signed.
    pub verify_client: bool,
}

/// A client as the real servers build one to call another service: it trusts only the
/// CA in `ca_pem` when given (else the system roots), or anything with `skip_verify`.
pub fn client_trusting(
    ca_pem: Option<&[u8]>,
    skip_verify: bool,
    timeout: std::time::Duration,
) -> Result<reqwest::ClientBuilder, String> {
    install_crypto();
    let mut builder = reqwest::Client::builder().timeout(timeout).no_proxy();
    if skip_verify {
        builder = builder.tls_danger_accept_invalid_certs(true);
    } else if let Some(pem) = ca_pem {
        let certs = reqwest::Certificate::from_pem_bundle(pem)
            .map_err(|e| format!("failed to parse the CA certificate: {e}"))?;
        builder = builder.tls_certs_only(certs);
    }
    Ok(builder)
}

/// The content of a CA file a config names, with the setting's name in the error.
pub fn read_ca(setting: &str, path: &str) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("{setting} {path}: {e}"))
}

/// An error with its causes, as Go prints a wrapped error ("...: invalid peer
/// certificate: UnknownIssuer"): reqwest's own text stops at the request.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    text
}

pub fn install_crypto() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

fn certs(path: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs: Vec<_> = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("Failed to load cert/key pair: {path}: {e}"))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("Failed to load cert/key pair: {path}: {e}"))?;
    if certs.is_empty() {
        return Err(format!(
            "Failed to load cert/key pair: no certificate in {path}"
        ));
    }
    Ok(certs)
}

/// The server side, as the agent's `tls { http = true }` configures it.
pub fn server_config(files: &TlsFiles) -> Result<Arc<rustls::ServerConfig>, String> {
    install_crypto();
    let chain = certs(&files.cert_file)?;
    let key = PrivateKeyDer::from_pem_file(&files.key_file)
        .map_err(|e| format!("Failed to load cert/key pair: {}: {e}", files.key_file))?;
    let builder = rustls::ServerConfig::builder();
    let builder = if files.verify_client {
        let ca = files
            .ca_file
            .as_deref()
            .ok_or("verify_https_client requires a ca_file")?;
        let mut roots = rustls::RootCertStore::empty();
        for cert in certs(ca)? {
            roots
                .add(cert)
                .map_err(|e| format!("Failed to parse CA file {ca}: {e}"))?;
        }
        let verifier = WebPkiClientVerifier::builder(Arc::new(roots))
            .build()
            .map_err(|e| format!("Failed to parse CA file {ca}: {e}"))?;
        builder.with_client_cert_verifier(verifier)
    } else {
        builder.with_no_client_auth()
    };
    let mut config = builder
        .with_single_cert(chain, key)
        .map_err(|e| format!("Failed to load cert/key pair: {e}"))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The client one twin uses to call another: it presents the agent's own certificate (as
/// Nomad agents do) and accepts the other's, since the lab's internal traffic stands in
/// for RPC and gossip, which have their own keys in the real servers.
pub fn internal_client(
    files: Option<&TlsFiles>,
    timeout: std::time::Duration,
) -> Result<reqwest::Client, String> {
    install_crypto();
    let mut builder = reqwest::Client::builder().timeout(timeout).no_proxy();
    if let Some(files) = files {
        builder = builder
            .identity(identity(files)?)
            .danger_accept_invalid_certs(true);
    }
    builder.build().map_err(|e| e.to_string())
}

/// `internal_client` for the supervisor, which calls the twins from plain threads.
pub fn supervisor_client(
    files: Option<&TlsFiles>,
    timeout: std::time::Duration,
) -> Result<reqwest::blocking::Client, String> {
    install_crypto();
    let mut builder = reqwest::blocking::Client::builder()
        .timeout(timeout)
        .connect_timeout(std::time::Duration::from_secs(2))
        .no_proxy();
    if let Some(files) = files {
        builder = builder
            .identity(identity(files)?)
            .danger_accept_invalid_certs(true);
    }
    builder.build().map_err(|e| e.to_string())
}

/// The agent's own certificate and key, as a client presents them.
fn identity(files: &TlsFiles) -> Result<reqwest::Identity, String> {
    let mut pem = std::fs::read(&files.cert_file)
        .map_err(|e| format!("Failed to load cert/key pair: {}: {e}", files.cert_file))?;
    pem.extend(
        std::fs::read(&files.key_file)
            .map_err(|e| format!("Failed to load cert/key pair: {}: {e}", files.key_file))?,
    );
    reqwest::Identity::from_pem(&pem).map_err(|e| format!("Failed to load cert/key pair: {e}"))
}

/// Serves `app` on `listener`, with TLS when `files` says so, until `shutdown` completes
/// (then requests in flight finish).
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: axum::Router,
    files: Option<&TlsFiles>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), String> {
    let Some(files) = files else {
        return axum::serve(listener, app)
            .with_graceful_shutdown(shutdown)
            .await
            .map_err(|e| e.to_string());
    };
    let config = axum_server::tls_rustls::RustlsConfig::from_config(server_config(files)?);
    let listener = listener.into_std().map_err(|e| e.to_string())?;
    let handle = axum_server::Handle::new();
    let h = handle.clone();
    tokio::spawn(async move {
        shutdown.await;
        h.graceful_shutdown(Some(std::time::Duration::from_secs(5)));
    });
    axum_server::from_tcp_rustls(listener, config)
        .map_err(|e| e.to_string())?
        .handle(handle)
        .serve(app.into_make_service())
        .await
        .map_err(|e| e.to_string())
}
