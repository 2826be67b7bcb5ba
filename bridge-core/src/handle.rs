//! [`BridgeHandle`]: what connectors hold to act on Matrix, and the remote → Matrix half of the pipeline.
//!
//! A connector pushes [`RemoteEvent`]s; each is persisted in the remote queue under its portal before `push`
//! returns, and a per-portal worker turns it into homeserver calls in order ([`RemoteHandler`], in `deliver.rs`).

pub(crate) use self::deliver::RemoteHandler;
pub use self::facades::{Credentials, Ghosts, Messages, Portals, Settings};

mod deliver;
mod facades;

use std::sync::{
    Arc, OnceLock,
    atomic::{AtomicBool, Ordering},
};

use dashmap::DashMap;
use lattice_config::{PermissionLevel, Permissions};
use lattice_registration::AppserviceRegistration;
use ruma::{OwnedMxcUri, OwnedRoomId, OwnedUserId};
use serde_json::{Value, json};

use crate::{
    Error, Result, bridge_info,
    connector::{ConnectorInfo, GhostSpec, PortalSpec},
    dispatch::Dispatcher,
    error::parse_id,
    event::RemoteEvent,
    matrix::{CreateRoomOptions, Intent, MatrixClient},
    metrics::Metrics,
    store::{Ghost, Portal, PublishedMedia, QueueKind, QueuedItem, Store},
};

/// The shared state behind every [`BridgeHandle`].
pub(crate) struct Core {
    pub(crate) store: Store,
    pub(crate) matrix: MatrixClient,
    pub(crate) metrics: Metrics,
    pub(crate) registration: AppserviceRegistration,
    pub(crate) server_name: String,
    pub(crate) permissions: Permissions,
    pub(crate) info: ConnectorInfo,
    pub(crate) remote: OnceLock<Dispatcher<RemoteHandler>>,
    pub(crate) homeserver_reachable: AtomicBool,
    /// Base URL of files published to the network (`GET /_lattice/media/…` on this bridge).
    pub(crate) media_base_url: url::Url,
    portal_creation: DashMap<String, Arc<tokio::sync::Mutex<()>>>,
}

/// A connector's handle on the runtime. Cheap to clone.
#[derive(Clone)]
pub struct BridgeHandle {
    core: Arc<Core>,
}

impl std::fmt::Debug for BridgeHandle {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.debug_struct("BridgeHandle").field("protocol", &self.core.info.protocol_id).finish_non_exhaustive()
    }
}

impl Core {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        store: Store,
        matrix: MatrixClient,
        metrics: Metrics,
        registration: AppserviceRegistration,
        server_name: String,
        permissions: Permissions,
        info: ConnectorInfo,
        media_base_url: url::Url,
    ) -> Self {
        Self {
            store,
            matrix,
            metrics,
            registration,
            server_name,
            permissions,
            info,
            remote: OnceLock::new(),
            homeserver_reachable: AtomicBool::new(false),
            media_base_url,
            portal_creation: DashMap::new(),
        }
    }

    pub(crate) fn appservice_id(&self) -> &str {
        &self.registration.registration().id
    }
}

impl BridgeHandle {
    pub(crate) fn new(core: Arc<Core>) -> Self {
        Self { core }
    }

    pub(crate) fn core(&self) -> &Core {
        &self.core
    }

    /// The whole store, for the runtime's own parts (bot, operations); connectors get the narrow views of
    /// [`BridgeHandle::portals`] and the like.
    pub(crate) fn store(&self) -> &Store {
        &self.core.store
    }

    /// The Matrix client, for what the pipeline does not cover.
    pub fn matrix(&self) -> &MatrixClient {
        &self.core.matrix
    }

    /// The homeserver's server name.
    pub fn server_name(&self) -> &str {
        &self.core.server_name
    }

    /// The bridge bot's user ID.
    pub fn bot_user_id(&self) -> String {
        self.core.registration.sender_user_id(&self.core.server_name)
    }

    /// Whether a user ID is one of the bridge's own (a ghost or the bot): events they send are echoes.
    pub fn is_bridge_user(&self, user_id: &str) -> bool {
        self.core.registration.is_interested_in_user(user_id, &self.core.server_name)
    }

    /// A Matrix user's permission level from the config's permission globs.
    pub fn permission_level(&self, user_id: &str) -> PermissionLevel {
        self.core.permissions.level(user_id)
    }

    /// Where the connector reports its own side of the bridge: connections to its network, reconnects, protocol
    /// messages in and out (served at `/metrics` with the runtime's own).
    pub fn remote_metrics(&self) -> &crate::metrics::RemoteMetrics {
        self.core.metrics.remote()
    }

    /// Whether the homeserver has reached the bridge: its start-up ping got through, or a transaction arrived.
    pub fn homeserver_reachable(&self) -> bool {
        self.core.homeserver_reachable.load(Ordering::Relaxed)
    }

    /// Persists a remote event and schedules its delivery to Matrix. Delivery happens in push order per portal,
    /// after this returns; a crash after it returns loses nothing.
    pub async fn push(&self, event: RemoteEvent) -> Result<()> {
        let payload = serde_json::to_string(&event)?;
        let dispatcher = self.core.remote.get().expect("the remote dispatcher is set at construction");
        // The portal's worker gets the event as soon as it is numbered; it is sent on while the store writes it.
        let hand_over = |item: QueuedItem| dispatcher.hand_over(&item.key.clone(), [item]);
        dispatcher.queue().push_handing_over(&event.portal, &payload, hand_over).await?;
        self.core.metrics.events.with_label_values(&[QueueKind::Remote.label(), "queued"]).inc();
        self.core.metrics.queue_depth.with_label_values(&[QueueKind::Remote.label()]).inc();
        Ok(())
    }

    /// Sends a notice from the bridge bot that answers no Matrix event, e.g. news from the network. Each call posts
    /// a new notice; a notice in answer to an event is [`reply_notice`](Self::reply_notice).
    pub async fn notice(&self, room_id: &str, text: &str) -> Result<()> {
        self.send_notice(room_id, text, &format!("lattice.notice.{}", random_suffix())).await
    }

    /// Sends a notice from the bridge bot in answer to the Matrix event `in_reply_to` (a command, say), once.
    ///
    /// An event is handled again when the bridge is killed after handling it but before its queue item's removal
    /// was committed. The notice's transaction ID is derived from the event, so the homeserver answers the second
    /// send with the first notice instead of posting another: the user reads one answer.
    pub async fn reply_notice(&self, room_id: &str, in_reply_to: &str, text: &str) -> Result<()> {
        self.notice_once(room_id, text, &format!("reply.{in_reply_to}")).await
    }

    /// Sends a notice from the bridge bot at most once per `key`: a repeated key posts nothing new, as with
    /// [`reply_notice`](Self::reply_notice). `key` names what the notice answers, e.g. `undelivered.{event_id}`;
    /// the homeserver remembers it for a while (Synapse: about 30 minutes), long enough for a restart.
    pub async fn notice_once(&self, room_id: &str, text: &str, key: &str) -> Result<()> {
        self.send_notice(room_id, text, &once_txn_id(key)).await
    }

    async fn send_notice(&self, room_id: &str, text: &str, txn_id: &str) -> Result<()> {
        let room: OwnedRoomId = parse_id("room ID", room_id)?;
        self.bot()?
            .send_message_event(&room, "m.room.message", &json!({"msgtype": "m.notice", "body": text}), txn_id, None)
            .await?;
        Ok(())
    }

    /// Makes a Matrix file reachable from the bridged network and returns its URL: an unguessable path on this
    /// bridge's media endpoint, which fetches the file from the homeserver with the bridge's credentials.
    pub async fn publish_media(&self, mxc: &str, filename: &str, mimetype: Option<&str>) -> Result<String> {
        let token = format!("{:032x}", rand::random::<u128>());
        let media =
            PublishedMedia { mxc: mxc.to_owned(), filename: filename.to_owned(), mimetype: mimetype.map(Into::into) };
        self.core.store.publish_media(&token, &media).await?;
        let mut url = self.core.media_base_url.clone();
        url.path_segments_mut()
            .map_err(|()| Error::InvalidId { kind: "media base URL", value: self.core.media_base_url.to_string() })?
            .pop_if_empty()
            .extend(["_lattice", "media", &token, filename]);
        Ok(url.to_string())
    }

    /// Uploads text (a long message) to the homeserver as a file and publishes it; returns its URL.
    pub async fn publish_text(&self, text: &str, filename: &str) -> Result<String> {
        let mimetype = "text/plain; charset=utf-8";
        let mxc = self.core.matrix.upload_media(bytes::Bytes::from(text.to_owned()), mimetype, Some(filename)).await?;
        self.publish_media(mxc.as_str(), filename, Some(mimetype)).await
    }

    pub(crate) fn bot(&self) -> Result<Intent> {
        Ok(self.core.matrix.bot())
    }

    /// Registers a ghost and brings its profile in line with `ghost`, touching the homeserver only for what
    /// changed since the store last recorded it.
    pub async fn sync_ghost(&self, ghost: &GhostSpec) -> Result<Intent> {
        let user_id: OwnedUserId = parse_id("user ID", &ghost.user_id)?;
        let intent = self.core.matrix.intent(user_id);
        let known = self.core.store.ghost_by_user(&ghost.user_id).await?;
        intent.ensure_registered().await?;
        let known_name = known.as_ref().and_then(|known| known.displayname.as_deref());
        let known_avatar = known.as_ref().and_then(|known| known.avatar_url.as_deref());
        if let Some(name) = ghost.displayname.as_deref().filter(|name| Some(*name) != known_name) {
            intent.set_displayname(name).await?;
        }
        if ghost.avatar_url.as_deref() != known_avatar && ghost.avatar_url.is_some() {
            let avatar: Option<OwnedMxcUri> = ghost.avatar_url.as_deref().map(Into::into);
            intent.set_avatar_url(avatar.as_deref()).await?;
        }
        let unchanged = known.as_ref().is_some_and(|known| {
            known.remote_id == ghost.remote_id
                && known.displayname == ghost.displayname
                && (ghost.avatar_url.is_none() || known.avatar_url == ghost.avatar_url)
        });
        if !unchanged {
            self.core
                .store
                .upsert_ghost(&Ghost {
                    user_id: ghost.user_id.clone(),
                    remote_id: ghost.remote_id.clone(),
                    displayname: ghost.displayname.clone(),
                    avatar_url: ghost.avatar_url.clone().or_else(|| known.and_then(|known| known.avatar_url)),
                    metadata: Value::Object(Default::default()),
                })
                .await?;
        }
        Ok(intent)
    }

    /// Removes a ghost's avatar, when the remote person withdrew their picture.
    pub async fn remove_ghost_avatar(&self, user_id: &str) -> Result<()> {
        let user: OwnedUserId = parse_id("user ID", user_id)?;
        self.core.matrix.intent(user).set_avatar_url(None).await?;
        if let Some(mut ghost) = self.core.store.ghost_by_user(user_id).await?
            && ghost.avatar_url.take().is_some()
        {
            self.core.store.upsert_ghost(&ghost).await?;
        }
        Ok(())
    }

    /// Returns the portal for `spec.remote_key`, creating its room first if there is none.
    ///
    /// Alias portals are created by the bot, public to join; a direct chat is created by the remote person's ghost,
    /// which invites the Matrix user. Either way the room carries bridge-info state. Concurrent calls for the same
    /// key create one room.
    pub async fn ensure_portal(&self, spec: &PortalSpec) -> Result<Portal> {
        let lock = self.core.portal_creation.entry(spec.remote_key.clone()).or_default().clone();
        let _guard = lock.lock().await;
        if let Some(portal) = self.core.store.portal_by_key(&spec.remote_key).await? {
            return Ok(portal);
        }
        let bot = self.bot()?;
        bot.ensure_registered().await?;
        let bot_id = self.bot_user_id();
        let creator = match &spec.direct {
            Some(direct) => self.sync_ghost(&direct.ghost).await?,
            None => bot.clone(),
        };
        // The creator (the bot, or the ghost of a direct chat) holds full power in every room version; room
        // version 12 even forbids naming it in the power levels.
        let invite = match &spec.direct {
            Some(direct) => vec![parse_id("user ID", &direct.matrix_user)?],
            None => Vec::new(),
        };
        let options = CreateRoomOptions {
            name: spec.name.clone(),
            topic: spec.topic.clone(),
            alias_localpart: spec.alias_localpart.clone(),
            initial_state: bridge_info::initial_state(
                self.core.appservice_id(),
                &bot_id,
                &self.core.info,
                &spec.bridge_info,
            ),
            preset: Some(if spec.public { "public_chat" } else { "trusted_private_chat" }.into()),
            is_direct: spec.direct.is_some(),
            invite,
            ..CreateRoomOptions::default()
        };
        let room_id = creator.create_room(&options).await?;
        let alias = spec.alias_localpart.as_ref().map(|localpart| format!("#{localpart}:{}", self.core.server_name));
        let portal = Portal {
            remote_key: spec.remote_key.clone(),
            room_id: room_id.to_string(),
            alias,
            name: spec.name.clone(),
            topic: spec.topic.clone(),
            metadata: spec.metadata.clone(),
        };
        self.core.store.upsert_portal(&portal).await?;
        // Later callers find the portal in the store; the lock only guards creation, so it does not outlive it.
        self.core.portal_creation.remove(&spec.remote_key);
        self.core.matrix.note_membership(&room_id, creator.user_id(), true);
        tracing::info!(remote_key = %portal.remote_key, room_id = %portal.room_id, "created portal room");
        Ok(portal)
    }
}

fn random_suffix() -> String {
    format!("{:016x}", rand::random::<u64>())
}

/// The transaction ID of a notice sent once per `key`, apart from every other transaction ID the bridge makes.
fn once_txn_id(key: &str) -> String {
    format!("lattice.once.{key}")
}

/// An `m.room.message` content with an HTML body when there is one.
pub(crate) fn message_content(msgtype: &str, body: &str, html: Option<&str>) -> Value {
    let mut content = json!({"msgtype": msgtype, "body": body});
    if let Some(html) = html {
        content["format"] = json!("org.matrix.custom.html");
        content["formatted_body"] = json!(html);
    }
    content
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_content_adds_html_only_when_given() {
        assert_eq!(message_content("m.text", "hi", None), json!({"msgtype": "m.text", "body": "hi"}));
        let formatted = message_content("m.emote", "*hi*", Some("<b>hi</b>"));
        assert_eq!(formatted["format"], "org.matrix.custom.html");
        assert_eq!(formatted["formatted_body"], "<b>hi</b>");
        assert_eq!(formatted["msgtype"], "m.emote");
    }

    /// A handle whose homeserver is `homeserver`, over a store in `dir`.
    async fn handle_on(homeserver: &crate::matrix::testing::FakeHomeserver, dir: &std::path::Path) -> BridgeHandle {
        let url = format!("sqlite://{}", dir.join("lattice.db").display());
        let store = Store::connect(&url, 2, crate::store::Cipher::random()).await.unwrap();
        let registration = lattice_registration::generate(&lattice_registration::RegistrationTemplate {
            id: "lattice-test".into(),
            url: "http://127.0.0.1:9".parse().unwrap(),
            sender_localpart: "bridge".into(),
            user_regexes: vec!["^@_test_.*:example.org$".into()],
            alias_regexes: Vec::new(),
            protocols: Vec::new(),
            receive_ephemeral: false,
        });
        let info = ConnectorInfo { protocol_id: "test", protocol_name: "Test", command_prefix: "!test" };
        BridgeHandle::new(Arc::new(Core::new(
            store,
            homeserver.client(),
            Metrics::new(),
            AppserviceRegistration::new(registration, "registration.yaml").unwrap(),
            "example.org".into(),
            Permissions::new(&lattice_config::PermissionsConfig::default()).unwrap(),
            info,
            "http://127.0.0.1:9".parse().unwrap(),
        )))
    }

    #[tokio::test]
    async fn a_reply_notice_is_sent_under_a_transaction_id_derived_from_the_event_it_answers() {
        let sent = (200, r#"{"event_id":"$notice:example.org"}"#);
        let homeserver = crate::matrix::testing::FakeHomeserver::start(vec![sent; 4]).await;
        let dir = tempfile::tempdir().unwrap();
        let handle = handle_on(&homeserver, dir.path()).await;
        let room = "!admin:example.org";
        // The same command handled twice (again after a crash), another command, and an unsolicited notice.
        handle.reply_notice(room, "$command:example.org", "the answer").await.unwrap();
        handle.reply_notice(room, "$command:example.org", "the answer").await.unwrap();
        handle.reply_notice(room, "$other:example.org", "the answer").await.unwrap();
        handle.notice(room, "news").await.unwrap();

        let paths: Vec<String> = homeserver.received().iter().map(|request| request.line.clone()).collect();
        let send = "PUT /_matrix/client/v3/rooms/%21admin%3Aexample.org/send/m.room.message/";
        let once = format!("{send}lattice.once.reply.%24command%3Aexample.org HTTP/1.1");
        assert_eq!(paths[..2], [once.clone(), once], "the same event, the same transaction ID");
        assert_eq!(paths[2], format!("{send}lattice.once.reply.%24other%3Aexample.org HTTP/1.1"));
        assert!(paths[3].starts_with(&format!("{send}lattice.notice.")), "{}", paths[3]);
        let body: Value = serde_json::from_str(&homeserver.received()[0].body).unwrap();
        assert_eq!(body, json!({"msgtype": "m.notice", "body": "the answer"}));
    }
}
