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
    // Tests of this binary run at once: each call starts from another address.
    static CALLS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let call = CALLS.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let seed = std::process::id() as usize * 13 + 5 + call * 7919;
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
    start_with(true)
}

/// Real Consul on HTTPS 8501 only (its HTTP port off, as in the story); with
/// `verify_incoming` it wants a client certificate.
fn start_with(verify_incoming: bool) -> (RealConsul, Pki) {
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
            "datacenter = \"homelab\"\ndata_dir = \"{data}\"\nnode_name = \"controller1\"\nserver = true\nbootstrap_expect = 1\nbind_addr = \"{address}\"\nclient_addr = \"{address}\"\nlog_level = \"warn\"\nports {{\n  http  = -1\n  https = 8501\n}}\nca_file = \"{ca}\"\ncert_file = \"{cert}\"\nkey_file = \"{key}\"\nverify_incoming_https = {verify_incoming}\n",
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

/// A listener where Consul's HTTP port would be: any local user can bind a port that
/// Consul leaves free. It records what it receives.
struct Spy {
    address: String,
    received: std::sync::Arc<std::sync::Mutex<Vec<u8>>>,
}

impl Spy {
    fn listen(address: String) -> Spy {
        let listener = std::net::TcpListener::bind(&address).unwrap();
        let received = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = received.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let mut stream = stream;
                stream
                    .set_read_timeout(Some(Duration::from_secs(10)))
                    .unwrap();
                let mut bytes = Vec::new();
                let _ = std::io::Read::read_to_end(&mut stream, &mut bytes);
                let done = bytes == b"END";
                sink.lock().unwrap().extend(bytes);
                if done {
                    break;
                }
            }
        });
        Spy { address, received }
    }

    /// Everything it received, once every earlier connection has been read.
    fn received(self) -> String {
        let mut end = std::net::TcpStream::connect(&self.address).unwrap();
        std::io::Write::write_all(&mut end, b"END").unwrap();
        drop(end);
        common::http::eventually("the spy's last read", Duration::from_secs(30), || {
            let got = self.received.lock().unwrap().clone();
            got.ends_with(b"END")
                .then(|| String::from_utf8_lossy(&got[..got.len() - 3]).into_owned())
        })
    }
}

#[test]
fn a_token_never_falls_back_to_plain_http_and_a_given_ca_is_the_only_one_trusted() {
    let (consul, pki) = start_with(false);
    let spy = Spy::listen(format!("{}:8500", consul.address));
    let token = "harun-test-token-0f9e8d7c";
    let ca = pki.ca.to_str().unwrap();

    // harun init without the CA: the TLS error and its remedy; nothing written, and no
    // request to the plain HTTP port.
    let init = Test::new().env("CONSUL_HTTP_TOKEN", token).args([
        "init",
        &consul.address,
        "--output",
        "init.hcl",
    ]);
    let refused = init.run().status(3);
    assert!(
        refused.stderr.contains(&format!(
            "error[harun::consul::tls]: consul at https://{}:8501: its certificate is signed by a CA harun does not trust: pass --ca-file",
            consul.address
        )) && refused.stderr.contains("harun does not fall back to plain HTTP; nothing was written"),
        "{}",
        refused.stderr
    );
    assert!(!init.path("init.hcl").exists());

    // With the CA, the story's port and the CA go into the topology.
    let init = Test::new().env("CONSUL_HTTP_TOKEN", token).args([
        "init",
        &consul.address,
        "--output",
        "init.hcl",
        "--ca-file",
        ca,
    ]);
    init.run().status(0);
    let written = std::fs::read_to_string(init.path("init.hcl")).unwrap();
    assert!(
        written.contains(&format!(
            "consul {{\n  address = \"https://{{address}}:8501\"\n  ca_file = \"{ca}\""
        )),
        "{written}"
    );

    // `ca_file` pins: Consul's CA among the system's roots (SSL_CERT_FILE) does not make a
    // server trusted when the topology names another CA.
    let other = Pki::make_named(&consul.dir.path().join("other"), &[&consul.address]);
    let host = |settings: &str| {
        format!(
            "host \"controller1\" {{\n  address   = \"{a}\"\n  transport = \"local\"\n{settings}}}\n",
            a = consul.address
        )
    };
    let https = |ca: &str| {
        format!(
            "  consul {{\n    address = \"https://{a}:8501\"\n{ca}  }}\n",
            a = consul.address
        )
    };
    let read = "print(consul::kv_get(host(\"controller1\"), \"homelab/none\"))";
    let wait_read = format!("consul::wait_leader(host(\"controller1\"), 30.0);\n{read}");
    let system_roots = Test::new()
        .file("harun.hcl", &host(&https("")))
        .env("SSL_CERT_FILE", ca)
        .env("CONSUL_HTTP_TOKEN", token)
        .args(["-e", &wait_read]);
    // The system's roots are used when no CA is given (so the pin below is what refuses).
    system_roots.run().status(0).stdout("\n");
    let pinned = Test::new()
        .file(
            "harun.hcl",
            &host(&https(&format!(
                "    ca_file = \"{}\"\n",
                other.ca.display()
            ))),
        )
        .env("SSL_CERT_FILE", ca)
        .env("CONSUL_HTTP_TOKEN", token)
        .args(["-e", read])
        .run()
        .status(3);
    assert!(
        pinned.stderr.contains("error[harun::consul::unreachable]")
            && pinned.stderr.contains("invalid peer certificate"),
        "{}",
        pinned.stderr
    );

    // No consul address in the topology: harun's built-in one is plain HTTP, and the token
    // does not go there.
    let default = Test::new()
        .file("harun.hcl", &host(""))
        .env("CONSUL_HTTP_TOKEN", token)
        .args(["-e", read])
        .run()
        .status(3);
    assert!(
        default.stderr.contains(&format!(
            "error[harun::consul::config]: controller1: harun sends no consul token over plain HTTP to http://{}:8500 unless the topology says so",
            consul.address
        )),
        "{}",
        default.stderr
    );
    assert_eq!(spy.received(), "", "nothing reaches the plain HTTP port");
}
