//! The private CA of the lab's story configuration and a certificate per host, as an
//! operator makes them with `consul tls ca create` and `consul tls cert create`: the host's
//! address and name, `localhost` and 127.0.0.1, for serving and for presenting to others.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};

/// Where a host's certificate and key are.
pub struct HostCert {
    pub cert: PathBuf,
    pub key: PathBuf,
}

pub fn ca_file(dir: &Path) -> PathBuf {
    dir.join("tls").join("ca.pem")
}

pub fn host_cert(dir: &Path, host: &str) -> HostCert {
    HostCert {
        cert: dir.join("tls").join(format!("{host}.pem")),
        key: dir.join("tls").join(format!("{host}-key.pem")),
    }
}

/// Makes DIR/tls/ca.pem and DIR/tls/HOST.pem, HOST-key.pem for each (host, address).
/// The CA's key is not kept: the lab never signs again.
pub fn make(dir: &Path, hosts: &[(String, String)]) -> Result<(), String> {
    let fail = |e: rcgen::Error| format!("cannot make the lab's certificates: {e}");
    let tls = dir.join("tls");
    std::fs::create_dir_all(&tls).map_err(|e| format!("cannot create {}: {e}", tls.display()))?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).map_err(fail)?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "harun lab CA");
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().map_err(fail)?)
        .map_err(fail)?;
    let write = |path: &Path, text: &str, mode: u32| -> Result<(), String> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .mode(mode)
            .open(path)
            .and_then(|mut f| f.write_all(text.as_bytes()))
            .map_err(|e| format!("cannot write {}: {e}", path.display()))
    };
    write(&ca_file(dir), &ca.pem(), 0o644)?;
    for (host, address) in hosts {
        let key = KeyPair::generate().map_err(fail)?;
        let names = vec![
            host.clone(),
            address.clone(),
            "localhost".into(),
            "127.0.0.1".into(),
            // The names Consul and Nomad check between servers.
            "server.homelab.consul".into(),
            "server.global.nomad".into(),
        ];
        let mut params = CertificateParams::new(names).map_err(fail)?;
        params.distinguished_name.push(DnType::CommonName, host);
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let cert = params.signed_by(&key, &ca).map_err(fail)?;
        let files = host_cert(dir, host);
        write(&files.cert, &cert.pem(), 0o644)?;
        write(&files.key, &key.serialize_pem(), 0o640)?;
    }
    Ok(())
}
