//! Stamps the build with the commit it was built from, for `--version`: `LATTICE_COMMIT` from the environment (a
//! package build from a source tarball sets it), else `git rev-parse`, else `unknown`.

use std::process::Command;

fn main() {
    println!("cargo:rerun-if-env-changed=LATTICE_COMMIT");
    let commit = std::env::var("LATTICE_COMMIT").ok().filter(|commit| !commit.is_empty()).or_else(|| {
        let output = Command::new("git").args(["rev-parse", "--short=12", "HEAD"]).output().ok()?;
        let commit = String::from_utf8(output.stdout).ok()?.trim().to_owned();
        (output.status.success() && !commit.is_empty()).then_some(commit)
    });
    // A new commit moves HEAD (or the branch it names): stamp again.
    if let Ok(output) = Command::new("git").args(["rev-parse", "--git-dir"]).output()
        && output.status.success()
    {
        let git_dir = String::from_utf8_lossy(&output.stdout).trim().to_owned();
        println!("cargo:rerun-if-changed={git_dir}/HEAD");
        println!("cargo:rerun-if-changed={git_dir}/refs/heads");
    }
    println!("cargo:rustc-env=LATTICE_COMMIT={}", commit.as_deref().unwrap_or("unknown"));
}
