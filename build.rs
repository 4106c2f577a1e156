//! Names what `harun --version` reports besides the version: the target it was built for and
//! the commit it was built from, so that a binary found on a controller says where it came
//! from. Outside a git checkout (a source tarball) the commit is `HARUN_COMMIT` or "unknown".

use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    let text = String::from_utf8(out.stdout).ok()?;
    (out.status.success() && !text.trim().is_empty()).then(|| text.trim().to_string())
}

fn main() {
    let target = std::env::var("TARGET").unwrap_or_else(|_| "unknown".into());
    println!("cargo:rustc-env=HARUN_TARGET={target}");
    println!("cargo:rerun-if-env-changed=HARUN_COMMIT");

    let commit = std::env::var("HARUN_COMMIT")
        .ok()
        .or_else(|| git(&["rev-parse", "--short=12", "HEAD"]))
        .unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=HARUN_COMMIT={commit}");

    // Build again when HEAD moves: a new commit, a checkout or a rebase.
    if let Some(git_dir) = git(&["rev-parse", "--git-dir"]) {
        println!("cargo:rerun-if-changed={git_dir}/HEAD");
        println!("cargo:rerun-if-changed={git_dir}/packed-refs");
        if let Some(head_ref) = git(&["symbolic-ref", "-q", "HEAD"]) {
            println!("cargo:rerun-if-changed={git_dir}/{head_ref}");
        }
    }
}
