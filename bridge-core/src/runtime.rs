//! [`Bridge`]: the runtime that ties the appservice listener, the store, the Matrix client, the two queues and a
//! connector together, and the Matrix → connector half of the pipeline.

use std::{
    net::SocketAddr,
    sync::{
        Arc, Weak,
        atomic::{AtomicI64, Ordering},
    },
    time::Duration,
};

use lattice_config::{Config, Permissions};
use lattice_registration::AppserviceRegistration;
use ruma::{OwnedServerName, OwnedUserId};
use tokio::{net::TcpListener, sync::watch};
use url::Url;

use crate::{
    BridgeHandle, Error, Result, appservice, bot,
    connector::{CONFIRMATION, Connector},
    dispatch::{Dispatcher, Handler, Outcome},
    error::parse_id,
    event::{MatrixEvent, MatrixEventKind},
    handle::{Core, RemoteHandler},
    matrix::MatrixClient,
    metrics::Metrics,
    self_check,
    store::{QueueKind, QueuedItem, Store},
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
        axum::serve(listener, router)
            .with_graceful_shutdown(async move {
                let _ = shutdown.wait_for(|stopping| *stopping).await;
            })
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

/// Hands queued Matrix events to the bot or the connector.
pub(crate) struct InboundHandler<C> {
    runtime: Weak<Runtime<C>>,
}

impl<C: Connector> Handler for InboundHandler<C> {
    async fn handle(&self, item: &QueuedItem) -> Outcome {
        let Some(runtime) = self.runtime.upgrade() else {
            return Outcome::Retry { after: Some(Duration::from_secs(1)), reason: "the bridge is stopping".into() };
        };
        let Some(mut event) = serde_json::from_str(&item.payload).ok().and_then(MatrixEvent::parse) else {
            return Outcome::GiveUp { reason: "not a room event".into() };
        };
        if item.seq <= runtime.replay_horizon.load(Ordering::SeqCst) {
            match runtime.delivered_before(&event).await {
                Ok(true) => return Outcome::Done,
                Ok(false) => {}
                Err(error) => return Outcome::Retry { after: None, reason: error.to_string() },
            }
        }
        let confirmation = Arc::default();
        let handled = CONFIRMATION.scope(Arc::clone(&confirmation), runtime.handle_matrix_event(&mut event)).await;
        let confirmation = confirmation.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take();
        match (handled, confirmation) {
            (Ok(()), Some(confirmation)) => Outcome::Confirming(Box::pin(async move {
                let confirmed = confirmation.await.map_err(Error::from);
                runtime.outcome(&event, confirmed).await
            })),
            (handled, _) => runtime.outcome(&event, handled).await,
        }
    }

    fn may_run_ahead(&self, item: &QueuedItem) -> bool {
        is_new_message(&item.payload)
    }
}

impl<C: Connector> Runtime<C> {
    async fn handle_matrix_event(&self, event: &mut MatrixEvent) -> Result<()> {
        let core = self.handle.core();
        for relation in event.relations_mut() {
            relation.remote_ids = core
                .store
                .remotes_for_event(&relation.event_id)
                .await?
                .into_iter()
                .map(|mapping| mapping.remote_id)
                .collect();
        }
        if let MatrixEventKind::Membership { user_id, membership, .. } = &event.kind
            && let (Ok(room), Ok(user)) =
                (parse_id("room ID", &event.room_id), parse_id::<OwnedUserId>("user ID", user_id))
        {
            let room: ruma::OwnedRoomId = room;
            core.matrix.note_membership(&room, &user, membership == "join");
        }
        if bot::handle(self, event).await? {
            return Ok(());
        }
        if let Some(sender) = &event.sender {
            if self.handle.is_bridge_user(sender) {
                return Ok(());
            }
            if self.handle.permission_level(sender) < lattice_config::PermissionLevel::User {
                tracing::debug!(%sender, room_id = %event.room_id, "ignoring an event from a user without permission");
                return Ok(());
            }
        }
        let portal = core.store.portal_by_room(&event.room_id).await?;
        if let Some(portal) = &portal {
            let capabilities = self.connector.capabilities(portal);
            let carried = match &event.kind {
                MatrixEventKind::Typing { .. } => capabilities.typing,
                MatrixEventKind::Receipts(_) => capabilities.receipts,
                _ => true,
            };
            if !carried {
                return Ok(());
            }
        }
        self.connector.handle_matrix_event(portal.as_ref(), event).await?;
        Ok(())
    }

    /// Whether an event left from an earlier run reached the network then: the connector recorded its delivery
    /// (confirmed by the network) before the run ended, but not the removal of its queue item. Sending it again would
    /// show it twice.
    async fn delivered_before(&self, event: &MatrixEvent) -> Result<bool> {
        let Some(event_id) = &event.event_id else { return Ok(false) };
        let delivered = self.handle.core().store.was_delivered(event_id).await?;
        if delivered {
            tracing::info!(%event_id, room_id = %event.room_id, "not sending again: delivered before a restart");
        }
        Ok(delivered)
    }

    /// What handling `event` came to, telling its sender of a failure that will not be retried.
    async fn outcome(&self, event: &MatrixEvent, handled: Result<()>) -> Outcome {
        match handled {
            Ok(()) => Outcome::Done,
            Err(error) if error.is_transient() => {
                Outcome::Retry { after: error.retry_after(), reason: error.to_string() }
            }
            Err(error) => {
                self.tell_sender_about_failure(event, &error).await;
                Outcome::GiveUp { reason: error.to_string() }
            }
        }
    }

    /// Tells the sender of an event that could not be delivered why, in the room, once.
    async fn tell_sender_about_failure(&self, event: &MatrixEvent, error: &Error) {
        let (Some(sender), MatrixEventKind::Message(_) | MatrixEventKind::Edit { .. }) = (&event.sender, &event.kind)
        else {
            return;
        };
        let reason = match error {
            Error::Connector(error) => error.to_string(),
            other => format!("internal error ({other})"),
        };
        let text = format!(
            "⚠ {sender}: your message was not delivered to {}: {reason}",
            self.handle.core().info.protocol_name
        );
        // Keyed by the failed event: if it is handled again after a crash, the sender still reads one notice.
        let sent = match event.event_id.as_deref() {
            Some(failed) => self.handle.notice_once(&event.room_id, &text, &format!("undelivered.{failed}")).await,
            None => self.handle.notice(&event.room_id, &text).await,
        };
        if let Err(error) = sent {
            tracing::warn!(%error, room_id = %event.room_id, "cannot send a delivery-failure notice");
        }
    }
}

/// Whether a queued Matrix event is a new message: nothing in it refers to an earlier event.
fn is_new_message(payload: &str) -> bool {
    #[derive(serde::Deserialize)]
    struct Peek<'a> {
        #[serde(rename = "type", borrow)]
        event_type: std::borrow::Cow<'a, str>,
        #[serde(default)]
        content: Option<PeekContent>,
    }
    #[derive(serde::Deserialize)]
    struct PeekContent {
        #[serde(rename = "m.relates_to", default)]
        relates_to: Option<serde::de::IgnoredAny>,
    }
    serde_json::from_str::<Peek<'_>>(payload).is_ok_and(|peek| {
        peek.event_type == "m.room.message" && peek.content.is_some_and(|content| content.relates_to.is_none())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_new_messages_may_run_ahead() {
        let cases = [
            (r#"{"type":"m.room.message","content":{"msgtype":"m.text","body":"hi \"m.relates_to\""}}"#, true),
            (r#"{"type":"m.room.message","content":{"body":"* hi","m.relates_to":{"rel_type":"m.replace"}}}"#, false),
            (r#"{"type":"m.room.message","content":{"body":"re","m.relates_to":{"m.in_reply_to":{}}}}"#, false),
            (r#"{"type":"m.reaction","content":{"m.relates_to":{"key":"👍"}}}"#, false),
            (r#"{"type":"m.room.redaction","redacts":"$e","content":{}}"#, false),
            (r#"{"type":"m.receipt","content":{}}"#, false),
            (r#"{"type":"m.room.message"}"#, false),
            ("not json", false),
        ];
        for (payload, expected) in cases {
            assert_eq!(is_new_message(payload), expected, "{payload}");
        }
    }
}
