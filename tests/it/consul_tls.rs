//! The consul module over TLS against real Consul 1.8.7 (tests/setup installs it): HTTPS
//! only, client certificates required. The CA comes from the topology's `ca_file` or
//! CONSUL_CACERT, the client certificate from `client_cert`/`client_key` or
//! CONSUL_CLIENT_CERT/CONSUL_CLIENT_KEY; each missing piece is named in the error.

use crate::common;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::tls::Pki;
use common::Test;

struct RealConsul {
    child: Child,
    address: String,
    dir: tempfile::TempDir,
}

impl Drop for RealConsul {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A loopback address where nothing listens on Consul's ports.
fn free_address() -> String {
    let seed = std::process::id() as usize * 13 + 5;
    for attempt in 0..100 {
        let n = seed.wrapping_mul(2654435761).wrapping_add(attempt * 101);
        let address = format!("127.{}.{}.21", 90 + n % 60, (n / 60) % 250 + 1);
        let free = [8300, 8301, 8302, 8501, 8600]
            .iter()
            .all(|port| std::net::TcpListener::bind(format!("{address}:{port}")).is_ok());
        if free {
            return address;
        }
    }
    panic!("no free loopback address");
}

fn start() -> (RealConsul, Pki) {
    let found = Command::new("consul").arg("version").output();
    assert!(
        found.is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("v1.8.7")),
        "real Consul 1.8.7 is missing: run tests/setup (it installs Debian bullseye's consul)"
    );
    let dir = tempfile::tempdir().unwrap();
    let address = free_address();
    let pki = Pki::make(&dir.path().join("tls"), &address);
    let config = dir.path().join("consul.hcl");
    std::fs::write(
        &config,
        format!(
            "datacenter = \"homelab\"\ndata_dir = \"{data}\"\nnode_name = \"controller1\"\nserver = true\nbootstrap_expect = 1\nbind_addr = \"{address}\"\nclient_addr = \"{address}\"\nlog_level = \"warn\"\nports {{\n  http  = -1\n  https = 8501\n}}\nca_file = \"{ca}\"\ncert_file = \"{cert}\"\nkey_file = \"{key}\"\nverify_incoming_https = true\n",
            data = dir.path().join("data").display(),
            ca = pki.ca.display(),
            cert = pki.server_cert.display(),
            key = pki.server_key.display(),
        ),
    )
    .unwrap();
    let log = std::fs::File::create(dir.path().join("log")).unwrap();
    let child = Command::new("consul")
        .arg("agent")
        .arg(format!("-config-file={}", config.display()))
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    let consul = RealConsul {
        child,
        address,
        dir,
    };
    common::http::eventually("consul's HTTPS port", Duration::from_secs(20), || {
        std::net::TcpStream::connect(format!("{}:8501", consul.address)).ok()
    });
    (consul, pki)
}

#[test]
fn the_consul_module_speaks_tls_to_real_consul() {
    let (consul, pki) = start();
    let host = |settings: &str| {
        format!(
            "host \"controller1\" {{\n  address   = \"{}\"\n  transport = \"local\"\n  consul {{\n    address = \"https://{}:8501\"\n{settings}  }}\n}}\n",
            consul.address, consul.address
        )
    };
    let certs = format!(
        "    client_cert = \"{}\"\n    client_key  = \"{}\"\n",
        pki.client_cert.display(),
        pki.client_key.display()
    );
    let ca = format!("    ca_file = \"{}\"\n", pki.ca.display());
    let script = r#"let c1 = host("controller1");
consul::wait_leader(c1, 30.0);
consul::kv_put(c1, "homelab/tls", "yes");
print(consul::kv_get(c1, "homelab/tls"));"#;
    let full = Test::new()
        .file("harun.hcl", &host(&(ca.clone() + &certs)))
        .args(["-e", script])
        .run();
    assert_eq!(
        (full.status, full.stdout.as_str()),
        (0, "yes\n"),
        "{}\n{}",
        full.stderr,
        std::fs::read_to_string(consul.dir.path().join("log")).unwrap_or_default()
    );
    let read = "print(consul::kv_get(host(\"controller1\"), \"homelab/tls\"))";
    let from_env = Test::new()
        .file("harun.hcl", &host(""))
        .env("CONSUL_CACERT", pki.ca.to_str().unwrap())
        .env("CONSUL_CLIENT_CERT", pki.client_cert.to_str().unwrap())
        .env("CONSUL_CLIENT_KEY", pki.client_key.to_str().unwrap())
        .args(["-e", read])
        .run()
        .status(0);
    assert_eq!(from_env.stdout, "yes\n");
    // No CA: Consul's certificate is refused, and the message names the setting.
    let unknown = Test::new()
        .file("harun.hcl", &host(&certs))
        .args(["-e", read])
        .run()
        .status(3);
    assert!(
        unknown.stderr.contains(
            "invalid peer certificate: UnknownIssuer (trust its CA with ca_file in the topology or CONSUL_CACERT)"
        ),
        "{}",
        unknown.stderr
    );
    // No client certificate: Consul (verify_incoming_https) ends the handshake.
    let refused = Test::new()
        .file("harun.hcl", &host(&ca))
        .args(["-e", read])
        .run()
        .status(3);
    assert!(
        refused.stderr.contains("harun::consul::unreachable")
            && refused.stderr.contains("client_cert and client_key in the topology, or CONSUL_CLIENT_CERT and CONSUL_CLIENT_KEY"),
        "{}",
        refused.stderr
    );
}
