//! The XMPP server a test runs on, Prosody or ejabberd, behind one interface, and [`xmpp_server_tests!`] to run one
//! test body on each.
//!
//! [`xmpp_server_tests!`]: crate::xmpp_server_tests

use std::{
    future::Future,
    net::TcpStream,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

use crate::{HomeserverKind, ServerProcess, ejabberd::Ejabberd, prosody::Prosody};

/// Lines of a server's log shown when it fails to start.
const LOG_TAIL_LINES: usize = 40;

/// Waits until the XMPP server `name` that `process` runs listens on `ports` on loopback, checking every `poll`;
/// fails with its log's last lines if it exits first or does not listen within `deadline`.
pub(crate) async fn listening(
    name: &str,
    mut process: ServerProcess,
    ports: [u16; 2],
    deadline: Duration,
    poll: Duration,
) -> anyhow::Result<ServerProcess> {
    let started = Instant::now();
    loop {
        if let Some(status) = process.exit_status() {
            bail!(
                "{name} exited ({status}) before listening; last lines of its log:\n{}",
                process.log_tail(LOG_TAIL_LINES)
            );
        }
        let listening = ports.iter().all(|port| {
            TcpStream::connect_timeout(&([127, 0, 0, 1], *port).into(), Duration::from_millis(200)).is_ok()
        });
        if listening {
            return Ok(process);
        }
        if started.elapsed() > deadline {
            bail!(
                "{name} did not listen within {deadline:?}; last lines of its log:\n{}",
                process.log_tail(LOG_TAIL_LINES)
            );
        }
        // Polling a starting server for readiness, not synchronising test events.
        tokio::time::sleep(poll).await;
    }
}

/// Which XMPP server a test runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum XmppServerKind {
    /// Debian's Prosody.
    Prosody,
    /// Debian's ejabberd.
    Ejabberd,
}

impl XmppServerKind {
    /// Why tests on this server cannot run on this machine, or `None` when they can.
    pub fn unavailable(self) -> Option<String> {
        match self {
            Self::Prosody => None,
            Self::Ejabberd => Ejabberd::unavailable(),
        }
    }
}

/// The servers one XMPP bridge test runs between.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Servers {
    /// The homeserver.
    pub homeserver: HomeserverKind,
    /// The XMPP server.
    pub xmpp: XmppServerKind,
}

impl Servers {
    /// Synapse and Prosody, the servers of tests that run on one pair.
    pub const DEFAULT: Self = Self { homeserver: HomeserverKind::Synapse, xmpp: XmppServerKind::Prosody };
}

/// A running XMPP server serving `localhost`, with MUCs at `conference.localhost` and external components; stopped
/// when dropped.
#[derive(Debug)]
pub enum XmppServer {
    /// A Prosody.
    Prosody(Prosody),
    /// An ejabberd.
    Ejabberd(Ejabberd),
}

impl XmppServer {
    /// Starts a fresh server of `kind` whose external component is `component` (e.g. `bridge.localhost`).
    pub async fn start(kind: XmppServerKind, component: &str) -> anyhow::Result<Self> {
        Self::start_with_components(kind, &[component]).await
    }

    /// Starts a fresh server of `kind` with several external components sharing one secret; the first is
    /// [`XmppServer::component`].
    pub async fn start_with_components(kind: XmppServerKind, components: &[&str]) -> anyhow::Result<Self> {
        Ok(match kind {
            XmppServerKind::Prosody => Self::Prosody(Prosody::start_with_components(components).await?),
            XmppServerKind::Ejabberd => Self::Ejabberd(Ejabberd::start_with_components(components).await?),
        })
    }

    /// Which server this is.
    pub fn kind(&self) -> XmppServerKind {
        match self {
            Self::Prosody(_) => XmppServerKind::Prosody,
            Self::Ejabberd(_) => XmppServerKind::Ejabberd,
        }
    }

    /// The Prosody, for what only Prosody's admin shell can do (e.g. [`Prosody::forget_muc_occupant`]); an error
    /// on another server.
    pub fn prosody(&self) -> anyhow::Result<&Prosody> {
        match self {
            Self::Prosody(prosody) => Ok(prosody),
            Self::Ejabberd(_) => None.context("this test needs Prosody's admin shell, and runs on ejabberd"),
        }
    }

    /// Creates the account `user@localhost`: `prosodyctl register` on Prosody, in-band registration on ejabberd.
    pub async fn register(&self, user: &str, password: &str) -> anyhow::Result<()> {
        match self {
            Self::Prosody(prosody) => prosody.register(user, password).await,
            Self::Ejabberd(ejabberd) => ejabberd.register(user, password).await,
        }
    }

    /// Stops the server and starts it again on the same ports with the same accounts; MUCs that are not persistent
    /// are gone afterwards.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        match self {
            Self::Prosody(prosody) => prosody.restart().await,
            Self::Ejabberd(ejabberd) => ejabberd.restart().await,
        }
    }

    /// The client-to-server port (plain TCP, PLAIN SASL allowed).
    pub fn c2s_port(&self) -> u16 {
        match self {
            Self::Prosody(prosody) => prosody.c2s_port(),
            Self::Ejabberd(ejabberd) => ejabberd.c2s_port(),
        }
    }

    /// The external component port (XEP-0114), as `127.0.0.1:PORT`.
    pub fn component_address(&self) -> String {
        match self {
            Self::Prosody(prosody) => prosody.component_address(),
            Self::Ejabberd(ejabberd) => ejabberd.component_address(),
        }
    }

    /// The (first) external component's domain.
    pub fn component(&self) -> &str {
        match self {
            Self::Prosody(prosody) => prosody.component(),
            Self::Ejabberd(ejabberd) => ejabberd.component(),
        }
    }

    /// The external components' handshake secret.
    pub fn component_secret(&self) -> &str {
        match self {
            Self::Prosody(prosody) => prosody.component_secret(),
            Self::Ejabberd(ejabberd) => ejabberd.component_secret(),
        }
    }

    /// The domain of user accounts.
    pub fn domain(&self) -> &str {
        "localhost"
    }

    /// The MUC service's domain.
    pub fn muc_domain(&self) -> &str {
        "conference.localhost"
    }

    /// The last lines of the server's log.
    pub fn log_tail(&self, lines: usize) -> String {
        match self {
            Self::Prosody(prosody) => prosody.log_tail(lines),
            Self::Ejabberd(ejabberd) => ejabberd.log_tail(lines),
        }
    }
}

/// Runs `case` between the servers `servers` names, or prints `skipped: …` and passes where the homeserver is
/// missing (Conduit's binary is optional). A missing XMPP server is an error: `scripts/install.sh` installs both.
pub async fn run_between<F, Fut>(servers: Servers, case: F) -> anyhow::Result<()>
where
    F: FnOnce(Servers) -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    if let Some(reason) = servers.xmpp.unavailable() {
        anyhow::bail!("{:?}: {reason}", servers.xmpp);
    }
    crate::homeserver::run_on(servers.homeserver, |_| case(servers)).await
}

/// One test per XMPP server for each `async fn case(servers: Servers) -> anyhow::Result<()>` named: a module named
/// like the function, holding the tests `prosody` and `ejabberd`, both on Synapse. With `homeservers:` before the
/// names, the module holds `synapse` and `conduit` (each with Prosody; the Conduit one prints `skipped: …` and
/// passes where Conduit's binary is missing) and `ejabberd` (with Synapse).
#[macro_export]
macro_rules! xmpp_server_tests {
    (homeservers: $($case:ident),+ $(,)?) => {$(
        mod $case {
            use $crate::{homeserver::HomeserverKind as H, xmpp_server::{Servers, XmppServerKind as X}};

            #[::tokio::test]
            async fn synapse() -> ::anyhow::Result<()> {
                let servers = Servers { homeserver: H::Synapse, xmpp: X::Prosody };
                $crate::xmpp_server::run_between(servers, super::$case).await
            }

            #[::tokio::test]
            async fn conduit() -> ::anyhow::Result<()> {
                let servers = Servers { homeserver: H::Conduit, xmpp: X::Prosody };
                $crate::xmpp_server::run_between(servers, super::$case).await
            }

            #[::tokio::test]
            async fn ejabberd() -> ::anyhow::Result<()> {
                let servers = Servers { homeserver: H::Synapse, xmpp: X::Ejabberd };
                $crate::xmpp_server::run_between(servers, super::$case).await
            }
        }
    )+};
    ($($case:ident),+ $(,)?) => {$(
        mod $case {
            use $crate::{homeserver::HomeserverKind as H, xmpp_server::{Servers, XmppServerKind as X}};

            #[::tokio::test]
            async fn prosody() -> ::anyhow::Result<()> {
                let servers = Servers { homeserver: H::Synapse, xmpp: X::Prosody };
                $crate::xmpp_server::run_between(servers, super::$case).await
            }

            #[::tokio::test]
            async fn ejabberd() -> ::anyhow::Result<()> {
                let servers = Servers { homeserver: H::Synapse, xmpp: X::Ejabberd };
                $crate::xmpp_server::run_between(servers, super::$case).await
            }
        }
    )+};
}
