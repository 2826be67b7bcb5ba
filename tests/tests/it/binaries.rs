//! The shipped binaries as an admin uses them: `lattice-irc generate-registration` writes the registration, Synapse
//! loads it, `lattice-irc check-config` agrees with it, and `lattice-irc run` is reached by the homeserver's ping.

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Duration,
};

use anyhow::{Context, ensure};
use lattice_e2e::{ServerProcess, Synapse, free_port, workspace_root};
use serde_yaml::Value;

/// Builds a binary of the workspace with the cargo that runs these tests, and returns its path.
pub(crate) fn build_binary(package: &str, binary: &str) -> anyhow::Result<PathBuf> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .current_dir(workspace_root())
        .args(["build", "--quiet", "-p", package, "--bin", binary])
        .status()
        .context("running cargo build")?;
    ensure!(status.success(), "cargo build -p {package} failed");
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| workspace_root().join("target"), PathBuf::from);
    Ok(target.join("debug").join(binary))
}

/// The IRC sample config, pointed at `homeserver` and listening on `port`, with its files in `dir`.
pub(crate) fn write_config(dir: &Path, homeserver: &str, port: u16) -> anyhow::Result<PathBuf> {
    let sample = std::fs::read_to_string(workspace_root().join("bridge-irc/config.sample.yaml"))?;
    let mut config: Value = serde_yaml::from_str(&sample)?;
    config["homeserver"]["url"] = homeserver.into();
    config["appservice"]["port"] = u64::from(port).into();
    config["permissions"]["admins"] = Value::Sequence(vec!["@admin:localhost".into()]);
    // No IRC network: this test is about the appservice side.
    config["bridge"]["networks"] = Value::Mapping(Default::default());
    let path = dir.join("config.yaml");
    std::fs::write(&path, serde_yaml::to_string(&config)?)?;
    Ok(path)
}

pub(crate) fn run(binary: &Path, args: &[&str]) -> anyhow::Result<String> {
    let output = Command::new(binary).args(args).output().with_context(|| format!("running {}", binary.display()))?;
    let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    ensure!(output.status.success(), "{} {args:?} failed: {text}", binary.display());
    Ok(text)
}

#[tokio::test]
async fn generated_registration_is_loaded_by_synapse_and_the_ping_reaches_the_bridge() -> anyhow::Result<()> {
    let binary = build_binary("lattice-bridge-irc", "lattice-irc")?;
    let version = run(&binary, &["--version"])?;
    ensure!(
        version.starts_with(&format!("lattice-irc {} (commit ", env!("CARGO_PKG_VERSION"))),
        "--version names the release and the commit: {version}"
    );
    let dir = tempfile::tempdir()?;
    let port = free_port();
    // The homeserver URL is not known before Synapse starts; the registration does not depend on it.
    let config = write_config(dir.path(), "http://127.0.0.1:9", port)?;
    let config_arg = config.to_str().context("a UTF-8 temp path")?;
    run(&binary, &["generate-registration", "-c", config_arg])?;
    let registration = dir.path().join("registration.yaml");
    let refused = Command::new(&binary).args(["generate-registration", "-c", config_arg]).output()?;
    ensure!(!refused.status.success(), "an existing registration must not be overwritten without --force");

    let synapse = Synapse::start(std::slice::from_ref(&registration)).await?;
    write_config(dir.path(), synapse.url(), port)?;
    let checked = run(&binary, &["check-config", "-c", config_arg])?;
    ensure!(checked.contains("consistent"), "check-config output: {checked}");

    let log = dir.path().join("lattice-irc.log");
    let mut command = Command::new(&binary);
    command.args(["run", "-c", config_arg]).env("RUST_LOG", "info").stdin(Stdio::null());
    let mut bridge = ServerProcess::spawn("lattice-irc", &mut command, &log)?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if text.contains("appservice ping succeeded") {
            break;
        }
        ensure!(bridge.exit_status().is_none(), "lattice-irc exited: {}", bridge.log_tail(40));
        ensure!(tokio::time::Instant::now() < deadline, "no successful ping within 60 s: {}", bridge.log_tail(40));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let ready: serde_json::Value = reqwest::get(format!("http://127.0.0.1:{port}/health/ready")).await?.json().await?;
    ensure!(ready["homeserver_reachable"] == true, "{ready}");
    bridge.stop(Duration::from_secs(5));
    Ok(())
}
