//! One builder for end-to-end tests of the binary: write files into a temporary directory,
//! run `harun` there with a clean environment, assert on what a user sees.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

pub struct Test {
    pub dir: tempfile::TempDir,
    args: Vec<String>,
    env: Vec<(String, String)>,
    stdin: Option<String>,
}

pub struct Outcome {
    pub status: i32,
    pub stdout: String,
    pub stderr: String,
    pub dir: PathBuf,
}

pub fn harun_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_harun"))
}

impl Test {
    pub fn new() -> Test {
        let dir = tempfile::tempdir().expect("a temporary directory");
        // Others may enter (not list): a lab here runs its Vault as a service user.
        std::fs::set_permissions(
            dir.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o711),
        )
        .expect("the test directory's mode");
        Test {
            dir,
            args: Vec::new(),
            env: Vec::new(),
            stdin: None,
        }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Writes `name` (relative to the test directory) with `content`.
    pub fn file(self, name: &str, content: &str) -> Test {
        let path = self.path(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).unwrap();
        }
        std::fs::write(path, content).unwrap();
        self
    }

    pub fn args<I: IntoIterator<Item = S>, S: AsRef<str>>(mut self, args: I) -> Test {
        self.args
            .extend(args.into_iter().map(|a| a.as_ref().to_string()));
        self
    }

    pub fn env(mut self, key: &str, value: &str) -> Test {
        self.env.push((key.to_string(), value.to_string()));
        self
    }

    pub fn stdin(mut self, text: &str) -> Test {
        self.stdin = Some(text.to_string());
        self
    }

    pub fn command(&self) -> Command {
        let mut cmd = Command::new(harun_bin());
        cmd.current_dir(self.dir.path())
            .args(&self.args)
            .env_remove("HARUN_TOPOLOGY")
            .env_remove("HARUN_AUDIT_LOG")
            .env_remove("HARUN_LOG")
            .env("HOME", self.dir.path())
            .env("XDG_STATE_HOME", self.dir.path().join(".state"))
            .env("NO_COLOR", "1");
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        cmd
    }

    /// Runs harun in the same directory with other arguments (a script run twice, ...).
    pub fn run_with(&mut self, args: &[&str]) -> Outcome {
        self.args = args.iter().map(|a| a.to_string()).collect();
        self.run()
    }

    pub fn run(&self) -> Outcome {
        let mut cmd = self.command();
        cmd.stdin(if self.stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("harun starts");
        if let Some(input) = &self.stdin {
            use std::io::Write;
            let mut stdin = child.stdin.take().unwrap();
            stdin.write_all(input.as_bytes()).unwrap();
        }
        let output: Output = child.wait_with_output().unwrap();
        Outcome {
            status: output.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
            dir: self.dir.path().to_path_buf(),
        }
    }
}

impl Outcome {
    pub fn status(self, expected: i32) -> Outcome {
        assert_eq!(
            self.status, expected,
            "exit status\n--- stdout\n{}\n--- stderr\n{}",
            self.stdout, self.stderr
        );
        self
    }

    pub fn stdout(self, expected: &str) -> Outcome {
        assert_eq!(self.stdout, expected, "stdout\n--- stderr\n{}", self.stderr);
        self
    }

    pub fn stderr(self, expected: &str) -> Outcome {
        assert_eq!(self.stderr, expected, "stderr\n--- stdout\n{}", self.stdout);
        self
    }

    pub fn stdout_has(self, part: &str) -> Outcome {
        assert!(
            self.stdout.contains(part),
            "stdout lacks {part:?}\n--- stdout\n{}\n--- stderr\n{}",
            self.stdout,
            self.stderr
        );
        self
    }

    pub fn stderr_has(self, part: &str) -> Outcome {
        assert!(
            self.stderr.contains(part),
            "stderr lacks {part:?}\n--- stdout\n{}\n--- stderr\n{}",
            self.stderr,
            self.stdout
        );
        self
    }

    pub fn read(&self, name: &str) -> String {
        std::fs::read_to_string(Path::new(&self.dir).join(name)).unwrap_or_default()
    }
}
pub mod http;
pub mod https;
pub mod lab;
pub mod sshd;
pub mod tls;

/// The path a changing script names as "snapshot before the change: PATH" in its summary.
pub fn snapshot_named(stdout: &str) -> String {
    stdout
        .split("snapshot before the change: ")
        .nth(1)
        .unwrap_or_else(|| panic!("no snapshot named in: {stdout}"))
        .split([';', '\n'])
        .next()
        .unwrap()
        .to_string()
}

/// A 127.x.y block (x from `first_octet` up, chosen from `seed`) where nothing listens yet
/// on any of `ports` at .11-.13: three servers of a conformance suite, side by side with
/// other test binaries.
pub fn free_loopback_block(seed: usize, first_octet: usize, ports: &[u16]) -> String {
    for attempt in 0..100 {
        let n = seed.wrapping_mul(2654435761).wrapping_add(attempt * 97);
        let block = format!("127.{}.{}", first_octet + n % 60, (n / 60) % 250 + 1);
        let free = (11..=13).all(|i| {
            ports
                .iter()
                .all(|port| std::net::TcpListener::bind(format!("{block}.{i}:{port}")).is_ok())
        });
        if free {
            return block;
        }
    }
    panic!("no free loopback block");
}
