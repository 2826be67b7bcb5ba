//! A bridge under test: registered with its own homeserver (Synapse or Conduit), served on loopback from a SQLite
//! store, and restartable on the same store and address, as an operator's restart is.

use std::{net::SocketAddr, path::Path, time::Duration};

use anyhow::Context as _;
use lattice_bridge_core::{
    Bridge, BridgeHandle, Connector, RuntimeSettings, ShutdownTrigger,
    store::{Cipher, Store},
};
use lattice_config::{Permissions, PermissionsConfig};
use lattice_registration::{AppserviceRegistration, RegistrationTemplate};
use tokio::{net::TcpListener, task::JoinHandle};

use crate::{Homeserver, HomeserverKind};

/// How long a stopping bridge gets to finish before its task is aborted.
const STOP_WAIT: Duration = Duration::from_secs(30);

/// Builds a bridge's connector, once per start, from the bridge's registration.
type BuildConnector<C> = Box<dyn Fn(&AppserviceRegistration) -> C + Send + Sync>;

/// A running bridge and what it takes to start it again; it stops when dropped.
pub struct RunningBridge<C: Connector> {
    build: BuildConnector<C>,
    settings: RuntimeSettings,
    registration: AppserviceRegistration,
    store_url: String,
    address: SocketAddr,
    connector: C,
    handle: BridgeHandle,
    trigger: ShutdownTrigger,
    task: JoinHandle<lattice_bridge_core::Result<()>>,
    _dir: tempfile::TempDir,
}

impl<C: Connector> Drop for RunningBridge<C> {
    fn drop(&mut self) {
        self.trigger.trigger();
        self.task.abort();
    }
}

impl<C: Connector + Clone> RunningBridge<C> {
    /// Starts a homeserver of `kind` with the bridge registered as `template` says for the bridge's URL (its address
    /// is bound before the homeserver starts), then the bridge, with the connector `build` makes and `permissions`.
    pub async fn start(
        kind: HomeserverKind,
        template: impl FnOnce(url::Url) -> RegistrationTemplate,
        permissions: &PermissionsConfig,
        build: impl Fn(&AppserviceRegistration) -> C + Send + Sync + 'static,
    ) -> anyhow::Result<(Homeserver, Self)> {
        let dir = tempfile::tempdir().context("creating a folder for the registration and the store")?;
        let listener = TcpListener::bind("127.0.0.1:0").await.context("binding the appservice listener")?;
        let address = listener.local_addr()?;
        let url: url::Url = format!("http://{address}").parse()?;
        let (homeserver, registration) =
            Homeserver::start_for_appservice(kind, dir.path(), &template(url.clone())).await?;
        let settings = RuntimeSettings {
            homeserver_url: homeserver.url().parse()?,
            server_name: "localhost".into(),
            permissions: Permissions::new(permissions)?,
            metrics_enabled: false,
            media_base_url: url,
            bot_displayname: None,
            listener: Default::default(),
        };
        let store_url = store_url(dir.path());
        let build: BuildConnector<C> = Box::new(build);
        let (connector, handle, trigger, task) = serve(&build, &settings, &registration, &store_url, listener).await?;
        let bridge =
            Self { build, settings, registration, store_url, address, connector, handle, trigger, task, _dir: dir };
        Ok((homeserver, bridge))
    }

    /// Stops the bridge and starts it again, with a new connector, on the same store and address.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.trigger.trigger();
        if tokio::time::timeout(STOP_WAIT, &mut self.task).await.is_err() {
            self.task.abort();
        }
        let listener = crate::bind_again(self.address).await?;
        (self.connector, self.handle, self.trigger, self.task) =
            serve(&self.build, &self.settings, &self.registration, &self.store_url, listener).await?;
        Ok(())
    }

    /// The bridge's registration, as the homeserver has it (its tokens included).
    pub fn registration(&self) -> &AppserviceRegistration {
        &self.registration
    }

    /// The running bridge's connector.
    pub fn connector(&self) -> &C {
        &self.connector
    }

    /// The running bridge's handle, as its connector has it.
    pub fn handle(&self) -> &BridgeHandle {
        &self.handle
    }

    /// The bridge's HTTP base URL (appservice API, provisioning API, media).
    pub fn url(&self) -> String {
        format!("http://{}", self.address)
    }

    /// Hands the bridge `events` in one transaction, as the homeserver does when events pile up while it waits
    /// for the bridge (`PUT /_matrix/app/v1/transactions/{txnId}`): a homeserver's own batching cannot be steered.
    pub async fn push_transaction(&self, txn_id: &str, events: Vec<serde_json::Value>) -> anyhow::Result<()> {
        let response = reqwest::Client::new()
            .put(format!("{}/_matrix/app/v1/transactions/{txn_id}", self.url()))
            .bearer_auth(&self.registration.registration().hs_token)
            .json(&serde_json::json!({ "events": events }))
            .send()
            .await
            .context("pushing a transaction to the bridge")?;
        anyhow::ensure!(
            response.status().is_success(),
            "the bridge answered the transaction with {}",
            response.status()
        );
        Ok(())
    }
}

/// The registration of a bridge whose users and aliases on `localhost` all start with `prefix` (`@prefix…`,
/// `#prefix…`), for [`RunningBridge::start`].
pub fn registration(
    id: &str,
    sender_localpart: &str,
    prefix: &str,
    protocol: &str,
) -> impl FnOnce(url::Url) -> RegistrationTemplate {
    let (id, sender_localpart, protocol) = (id.to_owned(), sender_localpart.to_owned(), protocol.to_owned());
    let (user_regex, alias_regex) = (format!("^@{prefix}.*:localhost$"), format!("^#{prefix}.*:localhost$"));
    move |url| RegistrationTemplate {
        id,
        url,
        sender_localpart,
        user_regexes: vec![user_regex],
        alias_regexes: vec![alias_regex],
        protocols: vec![protocol],
        receive_ephemeral: true,
    }
}

fn store_url(dir: &Path) -> String {
    format!("sqlite://{}", dir.join("lattice.db").display())
}

async fn serve<C: Connector + Clone>(
    build: &BuildConnector<C>,
    settings: &RuntimeSettings,
    registration: &AppserviceRegistration,
    store_url: &str,
    listener: TcpListener,
) -> anyhow::Result<(C, BridgeHandle, ShutdownTrigger, JoinHandle<lattice_bridge_core::Result<()>>)> {
    // A fixed key: the store outlives a restart, and sealed credentials must open again.
    let store = Store::connect(store_url, 4, Cipher::new(&[3; 32])).await?;
    let connector = build(registration);
    let bridge = Bridge::from_parts(settings.clone(), registration.clone(), store, connector.clone())?;
    let handle = bridge.handle();
    let trigger = bridge.shutdown_trigger();
    Ok((connector, handle, trigger, tokio::spawn(bridge.serve(listener))))
}
