//! `cargo xtask dist`: harun's release binaries for the controllers, statically linked
//! (musl) and stripped, one per target, each with its SHA-256 sum, in `dist/`.
//!
//! The cross linker is zig, driven by cargo-zigbuild; both come from PyPI into a private
//! virtual environment under `target/xtask/`, so nothing is installed system-wide. A target
//! whose standard library rustup cannot fetch here gets it built from source (rust-src).

// No function longer than a screenful outside tests (issue 29's yardstick).
#![warn(clippy::too_many_lines)]

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use sha2::{Digest, Sha256};

/// The targets `dist` builds by default: a PC or VM, Raspberry Pi OS 64-bit (Pi 3, 4, 5)
/// and Raspberry Pi OS 32-bit.
const TARGETS: &[&str] = &[
    "x86_64-unknown-linux-musl",
    "aarch64-unknown-linux-musl",
    "armv7-unknown-linux-musleabihf",
];

/// The budget of one binary: it has to fit comfortably on a Pi's SD card and travel over
/// SSH to three controllers.
const MAX_SIZE: u64 = 20_000_000;

/// What the private virtual environment holds, pinned so a build is repeatable.
const PYPI_PACKAGES: &[&str] = &["ziglang==0.17.1", "cargo-zigbuild==0.24.1"];

#[derive(Parser)]
#[command(
    name = "cargo xtask",
    bin_name = "cargo xtask",
    about = "harun's build tasks"
)]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Build the static release binaries and their SHA-256 sums into dist/
    Dist {
        /// Build only this target (repeatable); default: x86_64, aarch64 and armv7 musl
        #[arg(long = "target", value_name = "TRIPLE")]
        targets: Vec<String>,
        /// Where the binaries go
        #[arg(long, default_value = "dist")]
        out: PathBuf,
    },
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.task {
        Task::Dist { targets, out } => dist(&targets, &out),
    };
    if let Err(e) = result {
        eprintln!("xtask: error: {e:#}");
        std::process::exit(1);
    }
}

fn say(what: &str) {
    eprintln!("xtask: {what}");
}

fn dist(targets: &[String], out: &Path) -> Result<()> {
    let root = workspace_root()?;
    std::env::set_current_dir(&root)?;
    let targets: Vec<&str> = if targets.is_empty() {
        TARGETS.to_vec()
    } else {
        targets.iter().map(String::as_str).collect()
    };
    for target in &targets {
        if !TARGETS.contains(target) {
            bail!(
                "{target} is not a target harun is built for (one of: {})",
                TARGETS.join(", ")
            );
        }
    }
    let zigbuild = zigbuild(&root)?;
    fs::create_dir_all(out).with_context(|| format!("cannot make {}", out.display()))?;
    for target in targets {
        let std = standard_library(target)?;
        // RUSTC_BOOTSTRAP (build-std below) changes what some build scripts see, so a
        // standard library built from source gets a build directory of its own: the
        // targets do not rebuild each other's dependencies in turn.
        let target_dir = match std {
            Std::Prebuilt => root.join("target"),
            Std::FromSource => root.join("target/build-std"),
        };
        // build.rs names the commit in `--version` (HARUN_COMMIT, when set, overrides it).
        say(&format!("building harun for {target}"));
        let mut cmd = Command::new(&zigbuild.cargo_zigbuild);
        cmd.args([
            "zigbuild",
            "--locked",
            "--profile",
            "dist",
            "--package",
            "harun",
        ])
        .args(["--bin", "harun", "--target", target])
        .arg("--target-dir")
        .arg(&target_dir)
        .env("PATH", &zigbuild.path)
        .env("CARGO_ZIGBUILD_ZIG_PATH", &zigbuild.zig);
        // `cargo run` gave this process its own package's variables, and flags meant for
        // this machine (target-cpu=native, a linker) would break a cross build.
        for (key, _) in std::env::vars() {
            if key.starts_with("CARGO_PKG_")
                || key.starts_with("CARGO_BIN_")
                || matches!(
                    key.as_str(),
                    "CARGO_MANIFEST_DIR"
                        | "CARGO_PRIMARY_PACKAGE"
                        | "CARGO_CRATE_NAME"
                        | "RUSTFLAGS"
                        | "CARGO_ENCODED_RUSTFLAGS"
                )
            {
                cmd.env_remove(key);
            }
        }
        if std == Std::FromSource {
            // A standard library built here has no crt objects of its own (rustup's has them
            // in self-contained/): zig's musl provides them.
            let flags = format!(
                "CARGO_TARGET_{}_RUSTFLAGS",
                target.to_uppercase().replace('-', "_")
            );
            cmd.arg("-Zbuild-std=std,panic_abort")
                .env("RUSTC_BOOTSTRAP", "1")
                .env(flags, "-C link-self-contained=no");
        }
        run(&mut cmd)?;
        let built = target_dir.join(target).join("dist").join("harun");
        let name = format!("harun-{target}");
        let size = publish(&built, &out.join(&name))?;
        let sum = sha256(&out.join(&name))?;
        write_atomic(
            &out.join(format!("{name}.sha256")),
            &format!("{sum}  {name}\n"),
        )?;
        say(&format!(
            "{}/{name}: {:.1} MB, sha256 {sum}",
            out.display(),
            size as f64 / 1e6
        ));
    }
    write_sums(out)
}

/// Copies the built binary into `dist/` (atomically) after checking what a controller
/// needs of it: statically linked, within the size budget. Returns its size.
fn publish(built: &Path, to: &Path) -> Result<u64> {
    let bytes = fs::read(built).with_context(|| format!("cannot read {}", built.display()))?;
    if let Some(interpreter) = elf_interpreter(&bytes)? {
        bail!(
            "{} is dynamically linked (interpreter {interpreter}); a controller may not have that libc",
            built.display()
        );
    }
    let size = bytes.len() as u64;
    if size > MAX_SIZE {
        bail!(
            "{} is {:.1} MB, over the budget of {:.0} MB",
            built.display(),
            size as f64 / 1e6,
            MAX_SIZE as f64 / 1e6
        );
    }
    let tmp = to.with_extension("tmp");
    fs::write(&tmp, &bytes).with_context(|| format!("cannot write {}", tmp.display()))?;
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(&tmp, fs::Permissions::from_mode(0o755))?;
    fs::rename(&tmp, to).with_context(|| format!("cannot write {}", to.display()))?;
    Ok(size)
}

/// `dist/SHA256SUMS`: every binary's sum, as `sha256sum -c` reads them.
fn write_sums(out: &Path) -> Result<()> {
    let mut sums: Vec<String> = Vec::new();
    for entry in fs::read_dir(out)? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "sha256") {
            sums.push(fs::read_to_string(&path)?);
        }
    }
    sums.sort();
    write_atomic(&out.join("SHA256SUMS"), &sums.concat())?;
    say(&format!(
        "{}/SHA256SUMS: {} binaries",
        out.display(),
        sums.len()
    ));
    Ok(())
}

fn write_atomic(path: &Path, text: &str) -> Result<()> {
    let tmp = path.with_extension("tmp");
    fs::File::create(&tmp)
        .and_then(|mut f| f.write_all(text.as_bytes()))
        .and_then(|_| fs::rename(&tmp, path))
        .with_context(|| format!("cannot write {}", path.display()))
}

fn sha256(path: &Path) -> Result<String> {
    let mut hasher = Sha256::new();
    std::io::copy(&mut fs::File::open(path)?, &mut hasher)?;
    Ok(format!("{:x}", hasher.finalize()))
}

/// The program interpreter an ELF file asks for (its PT_INTERP), None for a static binary.
fn elf_interpreter(bytes: &[u8]) -> Result<Option<String>> {
    if bytes.len() < 64 || &bytes[..4] != b"\x7fELF" || bytes[5] != 1 {
        bail!("not a little-endian ELF file");
    }
    let wide = bytes[4] == 2;
    let word = |at: usize, len: usize| -> u64 {
        let mut v = 0u64;
        for (i, b) in bytes[at..at + len].iter().enumerate() {
            v |= u64::from(*b) << (8 * i);
        }
        v
    };
    let (phoff, phentsize, phnum) = if wide {
        (word(0x20, 8), word(0x36, 2), word(0x38, 2))
    } else {
        (word(0x1c, 4), word(0x2a, 2), word(0x2c, 2))
    };
    for i in 0..phnum {
        let at = (phoff + i * phentsize) as usize;
        if word(at, 4) == 3 {
            let (offset, size) = if wide {
                (word(at + 8, 8), word(at + 32, 8))
            } else {
                (word(at + 4, 4), word(at + 16, 4))
            };
            let text = &bytes[offset as usize..(offset + size) as usize];
            return Ok(Some(
                String::from_utf8_lossy(text)
                    .trim_end_matches('\0')
                    .to_string(),
            ));
        }
    }
    Ok(None)
}

#[derive(PartialEq)]
enum Std {
    /// rustup's prebuilt standard library for the target.
    Prebuilt,
    /// Built with the program from rust-src (cargo's build-std).
    FromSource,
}

/// Makes sure the target's standard library is at hand: rustup's when it can be had, else
/// its source (some mirrors carry only the most common targets' libraries).
fn standard_library(target: &str) -> Result<Std> {
    let sysroot = PathBuf::from(output(Command::new("rustc").args(["--print", "sysroot"]))?.trim());
    if sysroot
        .join("lib/rustlib")
        .join(target)
        .join("lib")
        .is_dir()
    {
        return Ok(Std::Prebuilt);
    }
    say(&format!(
        "installing the Rust standard library for {target} (rustup target add {target})"
    ));
    // rustup's first error line says why (a mirror without that target: a 404); the rest
    // is its backtrace. A toolchain without rustup (a distribution's rustc) goes on too.
    let why = match Command::new("rustup")
        .args(["target", "add", target])
        .output()
    {
        Ok(added) if added.status.success() => return Ok(Std::Prebuilt),
        Ok(added) => String::from_utf8_lossy(&added.stderr)
            .lines()
            .find(|l| l.starts_with("error:"))
            .unwrap_or("rustup failed")
            .to_string(),
        Err(e) => format!("cannot run rustup: {e}"),
    };
    say(&format!(
        "rustup could not fetch it ({why}): building the standard library for {target} from its source instead"
    ));
    if !sysroot.join("lib/rustlib/src/rust/library").is_dir() {
        say("installing the standard library's source (rustup component add rust-src)");
        run(Command::new("rustup").args(["component", "add", "rust-src"]))?;
    }
    Ok(Std::FromSource)
}

struct Zigbuild {
    cargo_zigbuild: PathBuf,
    /// The pinned zig, so that another zig on PATH is not used.
    zig: PathBuf,
    /// PATH with the environment's bin first, where cargo-zigbuild finds zig.
    path: String,
}

/// zig and cargo-zigbuild in `target/xtask/venv`, installed from PyPI when missing.
fn zigbuild(root: &Path) -> Result<Zigbuild> {
    let venv = root.join("target/xtask/venv");
    let bin = venv.join("bin");
    let cargo_zigbuild = bin.join("cargo-zigbuild");
    // What the environment was made with: a change of the pins makes it again.
    let stamp = venv.join("harun-pins");
    let pins = PYPI_PACKAGES.join("\n");
    let ready =
        cargo_zigbuild.is_file() && fs::read_to_string(&stamp).is_ok_and(|made| made == pins);
    if !ready {
        say(&format!(
            "installing {} from PyPI into {}",
            PYPI_PACKAGES.join(" and "),
            venv.display()
        ));
        run(Command::new("python3").args(["-m", "venv"]).arg(&venv))
            .context("python3 with its venv module is needed (Debian: python3-venv)")?;
        run(Command::new(bin.join("pip"))
            .args(["install", "--quiet", "--disable-pip-version-check"])
            .args(PYPI_PACKAGES))?;
        fs::write(&stamp, &pins)?;
    }
    let zig_dir = output(Command::new(bin.join("python3")).args([
        "-c",
        "import os, ziglang; print(os.path.dirname(ziglang.__file__))",
    ]))?;
    let zig = PathBuf::from(zig_dir.trim()).join("zig");
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    Ok(Zigbuild {
        cargo_zigbuild,
        zig,
        path,
    })
}

fn workspace_root() -> Result<PathBuf> {
    // xtask/ sits in the workspace root.
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    Ok(manifest
        .parent()
        .context("xtask has no parent directory")?
        .to_path_buf())
}

fn run(cmd: &mut Command) -> Result<()> {
    let status = cmd
        .status()
        .with_context(|| format!("cannot run {:?}", cmd.get_program()))?;
    if !status.success() {
        bail!("{:?} failed ({status})", cmd.get_program());
    }
    Ok(())
}

fn output(cmd: &mut Command) -> Result<String> {
    let out = cmd
        .output()
        .with_context(|| format!("cannot run {:?}", cmd.get_program()))?;
    if !out.status.success() {
        bail!("{:?} failed ({})", cmd.get_program(), out.status);
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dynamic_binary_names_its_interpreter_and_a_static_one_none() {
        // The test binary itself is dynamically linked against glibc.
        let me = fs::read(std::env::current_exe().unwrap()).unwrap();
        let interpreter = elf_interpreter(&me).unwrap();
        assert!(interpreter.is_some_and(|i| i.contains("ld-linux")));
        assert!(elf_interpreter(b"#!/bin/sh\n").is_err());
    }
}
