//! The end-to-end test harness of Lattice: real servers on loopback, and small clients for them.
//!
//! Each test starts its own servers ([`Synapse::start`]) and makes its own users
//! ([`Synapse::register_user`]), so tests run in parallel and never depend on order. Waiting is
//! for an observable event with a deadline ([`MatrixUser::wait_for_event`]), never a sleep.
//!
//! Tests that run on each homeserver ([`homeserver_tests!`]) start a [`Homeserver`] of the kind given, Synapse or
//! Conduit; the XMPP bridge's tests that run on each XMPP server ([`xmpp_server_tests!`]) start an [`XmppServer`],
//! Prosody or ejabberd (Debian's packages, run as the current user).
//!
//! Environment:
//! - `LATTICE_CONDUIT`: the Conduit binary (default `../shared/homeservers/conduit/conduit` beside the workspace);
//!   where there is none, the Conduit tests print `skipped: …` and pass.
//! - `LATTICE_SYNAPSE_PYTHON`: the Python that has Synapse (default
//!   `<workspace>/.cache/synapse-venv/bin/python`, which `scripts/install.sh synapse` makes).
//! - `LATTICE_CACHE`: the cache dir of `scripts/` (default `<workspace>/.cache`).
//! - `LATTICE_TEST_STATE_DIR`: where each server's state dir goes (default
//!   `$LATTICE_CACHE/test-state`); `scripts/test.sh` kills any server left behind there.
//! - `LATTICE_KEEP_TEST_STATE`: when set, state dirs (configs, logs, databases) are kept.
//! - `LATTICE_TEST_POSTGRES_URL`: a PostgreSQL for tests that need one (`scripts/postgres.sh url`).
#![warn(missing_docs, unreachable_pub)]

pub mod bridge;
mod conduit;
pub mod ejabberd;
pub mod homeserver;
pub mod irc_edge;
pub mod ircd;
mod matrix_user;
mod process;
pub mod prosody;
mod state_dir;
mod synapse;
pub mod xmpp_client;
pub mod xmpp_server;

use std::{
    collections::HashSet,
    net::{Ipv4Addr, TcpListener},
    path::{Path, PathBuf},
    sync::{LazyLock, Mutex},
};

pub use crate::{
    conduit::Conduit,
    homeserver::{Homeserver, HomeserverKind},
    matrix_user::{MatrixError, MatrixUser},
    process::ServerProcess,
    state_dir::StateDir,
    synapse::Synapse,
    xmpp_server::{Servers, XmppServer, XmppServerKind},
};

/// The workspace root: the folder holding `scripts/` and the root `Cargo.toml`.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("the tests crate lives in the workspace").to_path_buf()
}

/// The cache dir `scripts/` install into: `$LATTICE_CACHE`, or `<workspace>/.cache`.
pub fn cache_dir() -> PathBuf {
    match std::env::var_os("LATTICE_CACHE") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => workspace_root().join(".cache"),
    }
}

/// The folder each test server's state dir is made in: `$LATTICE_TEST_STATE_DIR`, or
/// `test-state` in [`cache_dir`].
pub fn test_state_dir() -> PathBuf {
    match std::env::var_os("LATTICE_TEST_STATE_DIR") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => cache_dir().join("test-state"),
    }
}

/// Binds `address` again for a restarted bridge, retrying for up to 5 s while the stopped bridge's listener still
/// holds the port.
pub async fn bind_again(address: std::net::SocketAddr) -> anyhow::Result<tokio::net::TcpListener> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        match tokio::net::TcpListener::bind(address).await {
            Ok(listener) => return Ok(listener),
            Err(error) if std::time::Instant::now() >= deadline => {
                return Err(anyhow::Error::new(error).context(format!("binding {address} again")));
            }
            // Waiting for the port to be released, not for a test event.
            Err(_) => tokio::time::sleep(std::time::Duration::from_millis(100)).await,
        }
    }
}

/// A TCP port on 127.0.0.1 that nothing listens on now.
///
/// The kernel picks it (bind to port 0); this process never hands out the same port twice, so
/// servers of parallel tests, which bind a moment later, don't collide with each other.
pub fn free_port() -> u16 {
    static HANDED_OUT: LazyLock<Mutex<HashSet<u16>>> = LazyLock::new(Default::default);
    let mut handed_out = HANDED_OUT.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    loop {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("binding 127.0.0.1:0");
        let port = listener.local_addr().expect("a bound socket has an address").port();
        if handed_out.insert(port) {
            return port;
        }
    }
}
