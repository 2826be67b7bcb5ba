//! An XMPP server (Prosody, or ejabberd for the tests that run on each), a homeserver (Synapse, or Conduit for the
//! tests that run on each) and the XMPP bridge between them, for one test.

use std::time::Duration;

use lattice_bridge_xmpp::{
    XmppConnector, XmppSection,
    config::{ComponentConfig, MucConfig},
};
use lattice_config::{PermissionsConfig, Secret};
use lattice_e2e::{
    Homeserver, HomeserverKind, MatrixUser, Servers, XmppServer, XmppServerKind,
    bridge::{RunningBridge, registration},
};

use crate::client::XmppClient;

/// An `m.text` message with HTML formatting.
pub fn html_message(body: &str, html: &str) -> serde_json::Value {
    serde_json::json!({"msgtype": "m.text", "body": body, "format": "org.matrix.custom.html", "formatted_body": html})
}

/// How long a user waits for what the bridge should make visible.
pub const WAIT: Duration = Duration::from_secs(30);
const COMPONENT: &str = "bridge.localhost";

/// The servers and the bridge; the bridge stops first when dropped.
pub struct Fixture {
    bridge: RunningBridge<XmppConnector>,
    pub homeserver: Homeserver,
    pub xmpp: XmppServer,
}

impl Fixture {
    pub async fn start() -> anyhow::Result<Self> {
        Self::start_with(|_| {}).await
    }

    /// Like [`Fixture::start`], with the bridge's section adjusted by `configure`.
    pub async fn start_with(configure: impl FnOnce(&mut XmppSection)) -> anyhow::Result<Self> {
        Self::on_homeserver_with(HomeserverKind::Synapse, configure).await
    }

    /// Like [`Fixture::start`], on a homeserver of `kind`.
    pub async fn on_homeserver(kind: HomeserverKind) -> anyhow::Result<Self> {
        Self::on_homeserver_with(kind, |_| {}).await
    }

    /// Like [`Fixture::start_with`], on a homeserver of `kind`.
    pub async fn on_homeserver_with(
        kind: HomeserverKind,
        configure: impl FnOnce(&mut XmppSection),
    ) -> anyhow::Result<Self> {
        Self::between_with(Servers { homeserver: kind, xmpp: XmppServerKind::Prosody }, configure).await
    }

    /// Like [`Fixture::start`], between the servers `servers` names.
    pub async fn between(servers: Servers) -> anyhow::Result<Self> {
        Self::between_with(servers, |_| {}).await
    }

    /// Like [`Fixture::start_with`], between the servers `servers` names.
    pub async fn between_with(servers: Servers, configure: impl FnOnce(&mut XmppSection)) -> anyhow::Result<Self> {
        let xmpp = XmppServer::start(servers.xmpp, COMPONENT).await?;
        let mut section = XmppSection {
            component: ComponentConfig {
                domain: COMPONENT.into(),
                server: xmpp.component_address(),
                secret: Secret::Value(xmpp.component_secret().into()),
                ping_interval_secs: 5,
                response_timeout_secs: 5,
                max_reconnect_delay_secs: 2,
            },
            muc: MucConfig { self_ping_interval_secs: 2, ..MucConfig::default() },
            ..XmppSection::default()
        };
        configure(&mut section);
        let template = registration("lattice-xmpp", "xmppbot", "_xmpp_", "xmpp");
        let build = move |_: &lattice_registration::AppserviceRegistration| XmppConnector::new(section.clone());
        let (homeserver, bridge) =
            RunningBridge::start(servers.homeserver, template, &PermissionsConfig::default(), build).await?;
        Ok(Self { bridge, homeserver, xmpp })
    }

    /// Stops the bridge and starts it again on the same store and address, as an operator's restart does.
    pub async fn restart_bridge(&mut self) -> anyhow::Result<()> {
        self.bridge.restart().await
    }

    /// Hands the bridge `events` in one homeserver transaction (see [`RunningBridge::push_transaction`]).
    pub async fn push_transaction(&self, txn_id: &str, events: Vec<serde_json::Value>) -> anyhow::Result<()> {
        self.bridge.push_transaction(txn_id, events).await
    }

    /// A new Matrix user.
    pub async fn matrix_user(&self, localpart: &str) -> anyhow::Result<MatrixUser> {
        self.homeserver.register_user(localpart).await
    }

    /// A new XMPP account, logged in.
    pub async fn xmpp_user(&self, user: &str) -> anyhow::Result<XmppClient> {
        let password = format!("{:016x}", rand::random::<u64>());
        self.xmpp.register(user, &password).await?;
        XmppClient::connect(self.xmpp.c2s_port(), user, &password).await
    }
}
