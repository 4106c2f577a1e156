//! A throwaway PKI for TLS tests: a CA, a server certificate for one IP address and a
//! client certificate, written as PEM files.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};

pub struct Pki {
    pub ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
}

impl Pki {
    /// Nomad's names: `server.global.nomad` (with the IP) and `client.global.nomad`.
    pub fn make(dir: &Path, server_ip: &str) -> Pki {
        Pki::make_named(dir, &["server.global.nomad", server_ip])
    }

    /// A server certificate for exactly `names` (DNS names or IP addresses).
    pub fn make_named(dir: &Path, names: &[&str]) -> Pki {
        std::fs::create_dir_all(dir).unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "harun test CA");
        ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
        let write = |name: &str, text: String| {
            let path = dir.join(name);
            std::fs::write(&path, text).unwrap();
            path
        };
        let leaf = |names: Vec<String>, usages: Vec<ExtendedKeyUsagePurpose>, name: &str| {
            let key = KeyPair::generate().unwrap();
            let mut params = CertificateParams::new(names).unwrap();
            params.distinguished_name.push(DnType::CommonName, name);
            params.extended_key_usages = usages;
            let cert = params.signed_by(&key, &ca).unwrap();
            (
                write(&format!("{name}.pem"), cert.pem()),
                write(&format!("{name}-key.pem"), key.serialize_pem()),
            )
        };
        // Like `nomad tls cert create -server`: a server certificate serves and also
        // authenticates the agent to others.
        let (server_cert, server_key) = leaf(
            names.iter().map(|n| n.to_string()).collect(),
            vec![
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ],
            "server",
        );
        let (client_cert, client_key) = leaf(
            vec!["client.global.nomad".into()],
            vec![ExtendedKeyUsagePurpose::ClientAuth],
            "client",
        );
        Pki {
            ca: write("ca.pem", ca.pem()),
            server_cert,
            server_key,
            client_cert,
            client_key,
        }
    }
}
