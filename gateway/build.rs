//! Build script: records the git commit the binary is built from, for `ringcast --version`.
//!
//! Sets `GATEWAY_GIT_COMMIT` (for `env!`) to the variable of that name if the build is given one,
//! else `git rev-parse --short HEAD`, or `unknown` when git is missing or the source is not a git
//! checkout (a source tarball, a container build context without `.git`). Reruns when HEAD
//! moves: the HEAD file itself (a checkout), the ref it points to (a commit on the branch) and
//! `packed-refs` (where that ref may live after `git gc`). In a worktree these files are outside
//! the source tree; `git rev-parse --git-path` finds them.

use std::path::PathBuf;
use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8(out.stdout).ok()?.trim().to_string();
    (!text.is_empty()).then_some(text)
}

fn main() {
    // A build without the repository (the container build: `.git` is not in its context) can
    // pass the commit in: `GATEWAY_GIT_COMMIT=abc1234 cargo build` (a build variable, not a
    // RINGCAST_* one, which the gateway would read as configuration at run time).
    println!("cargo:rerun-if-env-changed=GATEWAY_GIT_COMMIT");
    let given = std::env::var("GATEWAY_GIT_COMMIT")
        .ok()
        .filter(|c| !c.trim().is_empty());
    let commit = given
        .or_else(|| git(&["rev-parse", "--short", "HEAD"]))
        .unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=GATEWAY_GIT_COMMIT={commit}");

    let mut watched: Vec<PathBuf> = Vec::new();
    if let Some(head) = git(&["rev-parse", "--git-path", "HEAD"]) {
        watched.push(head.into());
    }
    if let Some(reference) = git(&["symbolic-ref", "-q", "HEAD"]) {
        if let Some(path) = git(&["rev-parse", "--git-path", &reference]) {
            watched.push(path.into());
        }
    }
    if let Some(packed) = git(&["rev-parse", "--git-path", "packed-refs"]) {
        watched.push(packed.into());
    }
    for path in watched {
        // A relative --git-path is relative to the current directory, the crate's directory.
        if path.exists() {
            println!("cargo:rerun-if-changed={}", path.display());
        }
    }
    // Without any of these (no git), run once: nothing can change the answer but a new checkout.
    println!("cargo:rerun-if-changed=build.rs");
}
