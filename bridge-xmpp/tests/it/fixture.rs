//! A Prosody, a Synapse and the XMPP bridge between them, for one test.

use std::time::Duration;

use anyhow::Context as _;
use lattice_bridge_core::{
    Bridge, RuntimeSettings, ShutdownTrigger,
    store::{Cipher, Store},
};
use lattice_bridge_xmpp::{
    XmppConnector, XmppSection,
    config::{ComponentConfig, MucConfig},
};
use lattice_config::{Permissions, PermissionsConfig, Secret};
use lattice_e2e::{MatrixUser, Synapse, prosody::Prosody};
use lattice_registration::RegistrationTemplate;
use tokio::{net::TcpListener, task::JoinHandle};

use crate::client::XmppClient;

/// How long a user waits for what the bridge should make visible.
pub const WAIT: Duration = Duration::from_secs(30);
const COMPONENT: &str = "bridge.localhost";

/// The servers and the bridge; the bridge stops first when dropped.
pub struct Fixture {
    trigger: ShutdownTrigger,
    task: JoinHandle<lattice_bridge_core::Result<()>>,
    /// What the bridge is built from, to build it again in [`Fixture::restart_bridge`].
    parts: BridgeParts,
    pub synapse: Synapse,
    pub prosody: Prosody,
    _dir: tempfile::TempDir,
}

/// Everything a bridge is made of but its store connection and listener.
struct BridgeParts {
    settings: RuntimeSettings,
    registration: lattice_registration::AppserviceRegistration,
    section: XmppSection,
    store_url: String,
    address: std::net::SocketAddr,
}

impl BridgeParts {
    async fn serve(
        &self,
        listener: TcpListener,
    ) -> anyhow::Result<(ShutdownTrigger, JoinHandle<lattice_bridge_core::Result<()>>)> {
        // A fixed key: the store outlives a restart, and sealed credentials must open again.
        let store = Store::connect(&self.store_url, 4, Cipher::new(&[3; 32])).await?;
        let connector = XmppConnector::new(self.section.clone())
            .with_appservice_token(self.registration.registration().as_token.clone());
        let bridge = Bridge::from_parts(self.settings.clone(), self.registration.clone(), store, connector)?;
        let trigger = bridge.shutdown_trigger();
        Ok((trigger, tokio::spawn(bridge.serve(listener))))
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        self.trigger.trigger();
        self.task.abort();
    }
}

impl Fixture {
    pub async fn start() -> anyhow::Result<Self> {
        Self::start_with(|_| {}).await
    }

    /// Like [`Fixture::start`], with the bridge's section adjusted by `configure`.
    pub async fn start_with(configure: impl FnOnce(&mut XmppSection)) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir().context("creating a folder for the registration and the store")?;
        let prosody = Prosody::start(COMPONENT).await?;
        let listener = TcpListener::bind("127.0.0.1:0").await.context("binding the appservice listener")?;
        let address = listener.local_addr()?;
        let (synapse, registration) = Synapse::start_for_appservice(
            dir.path(),
            &RegistrationTemplate {
                id: "lattice-xmpp".into(),
                url: format!("http://{address}").parse()?,
                sender_localpart: "xmppbot".into(),
                user_regexes: vec!["^@_xmpp_.*:localhost$".into()],
                alias_regexes: vec!["^#_xmpp_.*:localhost$".into()],
                protocols: vec!["xmpp".into()],
                receive_ephemeral: true,
            },
        )
        .await?;

        let store_url = format!("sqlite://{}", dir.path().join("lattice.db").display());
        let settings = RuntimeSettings {
            homeserver_url: synapse.url().parse()?,
            server_name: "localhost".into(),
            permissions: Permissions::new(&PermissionsConfig::default())?,
            metrics_enabled: false,
            media_base_url: format!("http://{address}").parse()?,
            bot_displayname: None,
        };
        let mut section = XmppSection {
            component: ComponentConfig {
                domain: COMPONENT.into(),
                server: prosody.component_address(),
                secret: Secret::Value(prosody.component_secret().into()),
                ping_interval_secs: 5,
                response_timeout_secs: 5,
                max_reconnect_delay_secs: 2,
            },
            muc: MucConfig { self_ping_interval_secs: 2, ..MucConfig::default() },
            ..XmppSection::default()
        };
        configure(&mut section);
        let parts = BridgeParts { settings, registration, section, store_url, address };
        let (trigger, task) = parts.serve(listener).await?;
        Ok(Self { trigger, task, parts, synapse, prosody, _dir: dir })
    }

    /// Stops the bridge and starts it again on the same store and address, as an operator's restart does.
    pub async fn restart_bridge(&mut self) -> anyhow::Result<()> {
        self.trigger.trigger();
        let stopped = tokio::time::timeout(WAIT, &mut self.task).await;
        if stopped.is_err() {
            self.task.abort();
        }
        let listener = lattice_e2e::bind_again(self.parts.address).await?;
        (self.trigger, self.task) = self.parts.serve(listener).await?;
        Ok(())
    }

    /// A new Matrix user.
    pub async fn matrix_user(&self, localpart: &str) -> anyhow::Result<MatrixUser> {
        self.synapse.register_user(localpart, false).await
    }

    /// A new XMPP account, logged in.
    pub async fn xmpp_user(&self, user: &str) -> anyhow::Result<XmppClient> {
        let password = format!("{:016x}", rand::random::<u64>());
        self.prosody.register(user, &password).await?;
        XmppClient::connect(self.prosody.c2s_port(), user, &password).await
    }
}
