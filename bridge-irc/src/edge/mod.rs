//! The IRC edge: a small process that holds the bridge's IRC connections, so that stopping, killing or upgrading
//! the bridge is invisible on IRC — no QUIT, no reconnect — and what IRC said meanwhile reaches Matrix after.
//!
//! `lattice-irc run` finds the edge on its Unix socket or starts it ([`spawn`]), and talks to it over the link
//! ([`wire`], [`link`]); the bridge's handles on the edge's connections are [`RemoteConnection`]s. The edge itself
//! ([`server`]) runs the same connection code the bridge runs in-process ([`crate::conn::LocalConnection`]), keeps
//! every event until the bridge acknowledges it ([`log`]) and every Matrix event's lines by key, so a restarted
//! bridge that sends them again does not double them on IRC ([`keys`]).

use std::{path::PathBuf, process::ExitCode, time::Duration};

use clap::Parser;

mod held;
mod keys;
mod link;
mod log;
mod remote;
mod server;
mod spawn;
#[cfg(test)]
mod tests;
mod wire;

pub(crate) use self::{
    link::{Acks, EdgeLink},
    remote::RemoteConnection,
    spawn::EdgeCommand,
    wire::EDGE_ID_TAG,
};

/// The edge's socket when the config names none: `lattice-irc-<digest>.sock` in `$XDG_RUNTIME_DIR` (else the temp
/// directory), the digest naming the registration file and appservice ID, so each bridge finds its own edge.
pub(crate) fn default_socket(registration: &std::path::Path, appservice_id: &str) -> PathBuf {
    use sha2::Digest as _;
    let registration = std::fs::canonicalize(registration).unwrap_or_else(|_| registration.to_owned());
    let mut digest = sha2::Sha256::new();
    digest.update(registration.as_os_str().as_encoded_bytes());
    digest.update(b"\0");
    digest.update(appservice_id.as_bytes());
    let name: String = digest.finalize().iter().take(8).map(|byte| format!("{byte:02x}")).collect();
    let dir = std::env::var_os("XDG_RUNTIME_DIR").map_or_else(std::env::temp_dir, PathBuf::from);
    dir.join(format!("lattice-irc-{name}.sock"))
}

/// `lattice-irc edge`: holds the IRC connections of the bridge that started it (the bridge starts it itself).
#[derive(Debug, Parser)]
#[command(name = "lattice-irc edge")]
struct EdgeCli {
    /// The Unix socket the bridge attaches on.
    #[arg(long)]
    socket: PathBuf,
    /// Seconds to keep the IRC connections with no bridge attached, then quit them and exit.
    #[arg(long, default_value_t = 600)]
    linger_secs: u64,
    /// Run the ident server (RFC 1413) on this address.
    #[arg(long)]
    ident_bind: Option<String>,
    /// Take the IRC connections over from the edge running on the socket (to upgrade it to this binary without
    /// reconnecting), then serve in its place.
    #[arg(long)]
    take_over: bool,
}

/// Runs the edge: the arguments after `edge` on the command line.
pub fn main(args: impl IntoIterator<Item = std::ffi::OsString>) -> ExitCode {
    let cli = match EdgeCli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(error) => error.exit(),
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt().with_env_filter(filter).try_init();
    let options = server::EdgeOptions {
        take_over: cli.take_over,
        socket: cli.socket,
        linger: Duration::from_secs(cli.linger_secs),
        ident_bind: cli.ident_bind,
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the runtime: {error}");
            return ExitCode::from(2);
        }
    };
    match runtime.block_on(server::serve(options)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(%error, "the IRC edge failed");
            ExitCode::from(2)
        }
    }
}
