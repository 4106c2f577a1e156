//! Real OpenSSH servers on loopback aliases (127.x.y.z, port 2222), one per simulated host,
//! with generated host and user keys, for tests that go over SSH. `tests/setup` installs
//! sshd and creates the `harun-test` user with passwordless sudo.

use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

pub const USER: &str = "harun-test";
/// A user that may sudo, but only with a password it does not have (`tests/setup`).
pub const PASSWORD_SUDO_USER: &str = "harun-sudo-pw";
pub const PORT: u16 = 2222;

pub struct Sshd {
    pub name: String,
    pub address: String,
    child: Option<Child>,
    config: PathBuf,
}

pub struct SshLab {
    pub dir: tempfile::TempDir,
    pub hosts: Vec<Sshd>,
    pub user_key: PathBuf,
    pub known_hosts: PathBuf,
}

fn keygen(path: &Path) {
    let status = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(path)
        .stdout(Stdio::null())
        .status()
        .expect("ssh-keygen runs (tests/setup installs openssh)");
    assert!(status.success(), "ssh-keygen failed");
}

/// A 127.x.y.0/24 block of our own, so tests and test binaries can run side by side.
fn block() -> (u32, u32) {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::SeqCst);
    (100 + std::process::id() % 150, 1 + n % 250)
}

impl SshLab {
    /// Starts `n` sshd processes named `host1..hostN`.
    pub fn start(n: usize) -> SshLab {
        SshLab::start_with(n, "")
    }

    /// `start` with sshd_config lines of the test's own, ahead of the defaults (sshd
    /// takes the first value of a keyword): `"MaxSessions 2\n"`.
    pub fn start_with(n: usize, sshd_options: &str) -> SshLab {
        let (x, y) = block();
        let hosts: Vec<(String, String)> = (1..=n)
            .map(|i| (format!("host{i}"), format!("127.{x}.{y}.{i}")))
            .collect();
        SshLab::start_on(&hosts, sshd_options)
    }

    /// sshd on the given (name, address) pairs: on the addresses of hosts whose services
    /// already run there (the lab's controllers), for a topology that reaches them over SSH.
    pub fn start_on(hosts_wanted: &[(String, String)], sshd_options: &str) -> SshLab {
        assert!(
            Path::new("/usr/sbin/sshd").exists(),
            "sshd is missing: run tests/setup (tests/run does)"
        );
        let status = Command::new("id")
            .arg(USER)
            .stdout(Stdio::null())
            .status()
            .unwrap();
        assert!(
            status.success(),
            "the user {USER} is missing: run tests/setup (tests/run does)"
        );
        let _ = std::fs::create_dir_all("/run/sshd");

        let dir = tempfile::tempdir().unwrap();
        use std::os::unix::fs::PermissionsExt;
        // sshd reads authorized_keys as the user, who must be able to reach it.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let user_key = dir.path().join("id_ed25519");
        keygen(&user_key);
        let authorized = dir.path().join("authorized_keys");
        std::fs::copy(user_key.with_extension("pub"), &authorized).unwrap();
        std::fs::set_permissions(&authorized, std::fs::Permissions::from_mode(0o644)).unwrap();

        let mut known_hosts = String::new();
        let mut hosts = Vec::new();
        for (name, address) in hosts_wanted.iter().cloned() {
            let host_key = dir.path().join(format!("{name}_host_key"));
            keygen(&host_key);
            let public = std::fs::read_to_string(host_key.with_extension("pub")).unwrap();
            let mut parts = public.split_whitespace();
            known_hosts.push_str(&format!(
                "[{address}]:{PORT} {} {}\n",
                parts.next().unwrap(),
                parts.next().unwrap()
            ));
            let config = dir.path().join(format!("{name}_sshd_config"));
            std::fs::write(
                &config,
                format!(
                    "{sshd_options}ListenAddress {address}:{PORT}\n\
                     HostKey {}\n\
                     PidFile {}\n\
                     AuthorizedKeysFile {}\n\
                     PasswordAuthentication no\n\
                     KbdInteractiveAuthentication no\n\
                     PubkeyAuthentication yes\n\
                     UsePAM no\n\
                     StrictModes no\n\
                     AllowUsers {USER}\n\
                     MaxSessions 20\n\
                     MaxStartups 200\n\
                     LogLevel ERROR\n\
                     Subsystem sftp /usr/lib/openssh/sftp-server\n",
                    host_key.display(),
                    dir.path().join(format!("{name}.pid")).display(),
                    authorized.display(),
                ),
            )
            .unwrap();
            let mut sshd = Sshd {
                name,
                address,
                child: None,
                config,
            };
            sshd.start();
            hosts.push(sshd);
        }
        let known_hosts_path = dir.path().join("known_hosts");
        std::fs::write(&known_hosts_path, known_hosts).unwrap();
        SshLab {
            dir,
            hosts,
            user_key,
            known_hosts: known_hosts_path,
        }
    }

    /// A topology for these hosts; `defaults` adds lines to the defaults block.
    pub fn topology(&self, defaults: &str) -> String {
        let mut out = format!(
            "defaults {{\n  ssh_user = \"{USER}\"\n  ssh_port = {PORT}\n  ssh_key = \"{}\"\n  ssh_config = \"/dev/null\"\n  known_hosts_file = \"{}\"\n  connect_timeout = \"5s\"\n{defaults}\n}}\n",
            self.user_key.display(),
            self.known_hosts.display()
        );
        for h in &self.hosts {
            out.push_str(&format!(
                "host \"{}\" {{ address = \"{}\" }}\n",
                h.name, h.address
            ));
        }
        out
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

impl Sshd {
    pub fn start(&mut self) {
        let child = Command::new("/usr/sbin/sshd")
            .args(["-D", "-e", "-f"])
            .arg(&self.config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("sshd starts");
        self.child = Some(child);
        let addr: SocketAddr = format!("{}:{PORT}", self.address).parse().unwrap();
        let started = Instant::now();
        while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "sshd on {addr} did not start"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The listening sshd's pid, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        self.stop();
    }
}
