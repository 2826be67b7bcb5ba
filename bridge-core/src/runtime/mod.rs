//! [`Bridge`]: the runtime that ties the appservice listener, the store, the Matrix client, the two queues and a
//! connector together, and the Matrix → connector half of the pipeline.

use std::{
    net::SocketAddr,
    sync::{
        Arc, Weak,
        atomic::{AtomicI64, Ordering},
    },
};

use lattice_config::{Config, Permissions};
use lattice_registration::AppserviceRegistration;
use ruma::{OwnedServerName, OwnedUserId};
use tokio::{net::TcpListener, sync::watch};
use url::Url;

mod inbound;

pub(crate) use self::inbound::InboundHandler;
use crate::{
    BridgeHandle, Error, Result,
    appservice::{self, ListenerLimits},
    connector::Connector,
    dispatch::Dispatcher,
    error::parse_id,
    handle::{Core, RemoteHandler},
    matrix::MatrixClient,
    metrics::Metrics,
    self_check,
    store::{QueueKind, Store},
};

/// What the runtime needs from the configuration, apart from the connector's own section.
#[derive(Debug, Clone)]
pub struct RuntimeSettings {
    /// The homeserver's client-server API base URL.
    pub homeserver_url: Url,
    /// The homeserver's server name.
    pub server_name: String,
    /// Who may use the bridge, and who administers it.
    pub permissions: Permissions,
    /// Serve `/metrics`.
    pub metrics_enabled: bool,
    /// Base URL of files the bridge publishes to the network.
    pub media_base_url: Url,
    /// The bot's display name, set at start when given.
    pub bot_displayname: Option<String>,
    /// The appservice listener's timeouts and connection cap.
    pub listener: ListenerLimits,
}

impl RuntimeSettings {
    /// The runtime settings of a loaded configuration.
    pub fn from_config<B>(config: &Config<B>) -> Result<Self> {
        Ok(Self {
            homeserver_url: config.homeserver.url.clone(),
            server_name: config.homeserver.server_name.clone(),
            permissions: Permissions::new(&config.permissions)?,
            metrics_enabled: config.metrics.enabled,
            media_base_url: config.appservice.media_url(),
            bot_displayname: config.appservice.bot.displayname.clone(),
            listener: ListenerLimits::from(&config.appservice.limits),
        })
    }
}

/// Everything one running bridge holds.
pub(crate) struct Runtime<C> {
    pub(crate) handle: BridgeHandle,
    pub(crate) connector: C,
    pub(crate) inbound: Dispatcher<InboundHandler<C>>,
    pub(crate) metrics_enabled: bool,
    bot_displayname: Option<String>,
    listener_limits: ListenerLimits,
    shutdown: watch::Sender<bool>,
    /// The last Matrix queue item left from an earlier run: items up to it may have reached the network already.
    replay_horizon: AtomicI64,
}

/// A bridge ready to serve. Build with [`Bridge::new`] (from a config) or [`Bridge::from_parts`], then
/// [`Bridge::serve`].
pub struct Bridge<C> {
    runtime: Arc<Runtime<C>>,
}

/// Stops a serving bridge from elsewhere (a signal handler, a test).
#[derive(Clone, Debug)]
pub struct ShutdownTrigger(watch::Sender<bool>);

impl ShutdownTrigger {
    /// Asks the bridge to stop: the listener stops accepting, queue workers stop between items.
    pub fn trigger(&self) {
        self.0.send_replace(true);
    }
}

impl<C: Connector> Bridge<C> {
    /// Builds a bridge from its configuration: loads the registration file, opens the store (creating the key file
    /// for secrets at rest if needed).
    pub async fn new<B>(config: &Config<B>, connector: C) -> Result<Self> {
        let registration = AppserviceRegistration::load(&config.appservice.registration)?;
        let database_url = config.database.url.resolve()?;
        let store = Store::open(&database_url, config.database.max_connections, &config.encryption.key_file).await?;
        Self::from_parts(RuntimeSettings::from_config(config)?, registration, store, connector)
    }

    /// Builds a bridge from parts already made.
    pub fn from_parts(
        settings: RuntimeSettings,
        registration: AppserviceRegistration,
        store: Store,
        connector: C,
    ) -> Result<Self> {
        let metrics = Metrics::new();
        let server_name: OwnedServerName = parse_id("server name", &settings.server_name)?;
        let bot_user_id: OwnedUserId = parse_id("user ID", &registration.sender_user_id(&settings.server_name))?;
        let matrix = MatrixClient::new(
            settings.homeserver_url.clone(),
            registration.registration().as_token.clone(),
            server_name,
            bot_user_id,
        )?
        .with_observer(metrics.request_observer());
        let core = Arc::new(Core::new(
            store.clone(),
            matrix,
            metrics.clone(),
            registration,
            settings.server_name.clone(),
            settings.permissions,
            connector.info(),
            settings.media_base_url,
        ));
        let (shutdown, shutdown_receiver) = watch::channel(false);
        let remote = Dispatcher::new(
            store.queue(QueueKind::Remote),
            RemoteHandler { core: Arc::downgrade(&core) },
            metrics.clone(),
            shutdown_receiver.clone(),
        );
        assert!(core.remote.set(remote).is_ok(), "a new core has no remote dispatcher yet");
        let runtime = Arc::new_cyclic(|weak: &Weak<Runtime<C>>| Runtime {
            handle: BridgeHandle::new(core),
            connector,
            inbound: Dispatcher::new(
                store.queue(QueueKind::Matrix),
                InboundHandler { runtime: weak.clone() },
                metrics,
                shutdown_receiver,
            ),
            metrics_enabled: settings.metrics_enabled,
            bot_displayname: settings.bot_displayname,
            listener_limits: settings.listener,
            shutdown,
            replay_horizon: AtomicI64::new(0),
        });
        Ok(Self { runtime })
    }

    /// The connectors' handle on this bridge.
    pub fn handle(&self) -> BridgeHandle {
        self.runtime.handle.clone()
    }

    /// A trigger that stops [`Bridge::serve`].
    pub fn shutdown_trigger(&self) -> ShutdownTrigger {
        ShutdownTrigger(self.runtime.shutdown.clone())
    }

    /// Binds `address` and serves until shut down (SIGINT/SIGTERM or the trigger).
    pub async fn run(self, address: SocketAddr) -> Result<()> {
        let listener = TcpListener::bind(address)
            .await
            .map_err(|source| Error::Io { context: format!("cannot listen on {address}"), source })?;
        let trigger = self.shutdown_trigger();
        tokio::spawn(async move {
            wait_for_signal().await;
            tracing::info!("shutting down on signal");
            trigger.trigger();
        });
        self.serve(listener).await
    }

    /// Serves the appservice API on `listener`: resumes queued work, starts the connector, checks that the
    /// homeserver can reach the bridge, and runs until the shutdown trigger fires.
    pub async fn serve(self, listener: TcpListener) -> Result<()> {
        let runtime = self.runtime;
        let address = listener.local_addr().ok();
        let router = appservice::router(Arc::clone(&runtime));
        runtime.replay_horizon.store(runtime.inbound.queue().last_seq().await?, Ordering::SeqCst);
        let resumed_matrix = runtime.inbound.resume().await?;
        let resumed_remote = runtime.handle.core().remote.get().expect("set at construction").resume().await?;
        tracing::info!(?address, resumed_matrix, resumed_remote, "appservice listening");

        let starting = Arc::clone(&runtime);
        tokio::spawn(async move {
            if let Err(error) = starting.connector.start(starting.handle.clone()).await {
                tracing::error!(%error, "the connector failed to start; stopping the bridge");
                starting.shutdown.send_replace(true);
            }
        });
        tokio::spawn(self_check::run(
            runtime.handle.clone(),
            runtime.bot_displayname.clone(),
            runtime.shutdown.subscribe(),
        ));

        let mut shutdown = runtime.shutdown.subscribe();
        let stopping = async move {
            let _ = shutdown.wait_for(|stopping| *stopping).await;
        };
        appservice::serve(listener, router, runtime.listener_limits, stopping)
            .await
            .map_err(|source| Error::Io { context: "the appservice listener failed".into(), source })?;
        runtime.shutdown.send_replace(true);
        runtime.connector.stop().await;
        runtime.handle.store().close().await;
        tracing::info!("bridge stopped");
        Ok(())
    }
}

async fn wait_for_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("installing a SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {}
            _ = terminate.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
