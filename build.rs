//! Names what `harun --version` reports besides the version: the target it was built for and
//! the commit it was built from (`-dirty` when the tree had changes), so that a binary found
//! on a controller says where it came from. Outside a git checkout (a source tarball) the
//! commit is `HARUN_COMMIT` or "unknown".

use std::path::Path;
use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    let text = String::from_utf8(out.stdout).ok()?;
    (out.status.success() && !text.trim().is_empty()).then(|| text.trim().to_string())
}

/// Cargo reruns a build script whose watched path is missing on every build, so only
/// paths that exist are watched.
fn watch(path: &str) {
    if Path::new(path).exists() {
        println!("cargo:rerun-if-changed={path}");
    }
}

fn main() {
    let target = std::env::var("TARGET").unwrap_or_else(|_| "unknown".into());
    println!("cargo:rustc-env=HARUN_TARGET={target}");
    println!("cargo:rerun-if-env-changed=HARUN_COMMIT");

    let commit = std::env::var("HARUN_COMMIT")
        .ok()
        .or_else(|| {
            // Never a tag name: the commit itself, and whether the tree differed from it.
            git(&[
                "describe",
                "--always",
                "--dirty",
                "--abbrev=12",
                "--match=^",
            ])
        })
        .unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=HARUN_COMMIT={commit}");

    // Again when HEAD moves (a commit, a checkout), and when the sources change (-dirty).
    for what in ["HEAD", "packed-refs"] {
        if let Some(path) = git(&["rev-parse", "--git-path", what]) {
            watch(&path);
        }
    }
    if let Some(head_ref) = git(&["symbolic-ref", "-q", "HEAD"]) {
        if let Some(path) = git(&["rev-parse", "--git-path", &head_ref]) {
            watch(&path);
        }
    }
    for dir in [
        "Cargo.toml",
        "Cargo.lock",
        "src",
        "runtime",
        "stdlib",
        "repl",
        "lab",
    ] {
        watch(dir);
    }
}
