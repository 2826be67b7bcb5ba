//! One IRC network as the bridge runs it: the bridge bot's listener connection in every bridged channel, one
//! puppet connection per Matrix user, and the translation of what happens on either side.

use std::{
    collections::{HashMap, HashSet},
    str::FromStr as _,
    sync::{Arc, Mutex},
    time::Duration,
};

use dashmap::DashMap;
use irc::proto::{ChannelMode, Command, Message, Mode, Response};
use lattice_bridge_core::{
    BridgeHandle, ConnectorError,
    connector::{BridgeInfoSpec, ConnectorResult, DirectChat, GhostSpec, PortalSpec},
    event::{MatrixEvent, MatrixEventKind, MessageType, RemoteEvent, RemoteEventKind},
    formatting::{Mention, MentionTarget, RichText, render_plain, strip_reply_fallback},
    store::{MessageMapping, Portal},
};
use serde_json::json;
use tokio::sync::{Semaphore, broadcast, mpsc};

use crate::{
    client::{ChannelStatus, ConnEvent, Connection, Forward, Login, Settings},
    config::{AuthMethod, EditStyle, IrcSection, NetworkConfig, RedactionStyle},
    delivery::{Confirmation, Deliveries, Sending},
    ghosts,
    ident::IdentRegistry,
    ids::{
        Template, casefold, dm_key, is_valid_channel, is_valid_nick, portal_key, sanitise_nick, sanitise_username,
        split_dm_key, split_portal_key, unescape_nick,
    },
    ircv3::{
        batch::{Batch, BatchTracker, Fed},
        chathistory,
        echo::{Echoes, Sent},
        multiline,
        netsplit::{Netsplits, split_servers},
        people::{self, People},
        server_time, tags,
    },
    line::{Line, TextKind, text_lines},
    mirc,
    privacy::Privacy,
    spam::SpamGuard,
    style,
};

/// The owner name of the bridge bot's connection in [`ConnEvent`]s.
const BOT_OWNER: &str = "";
/// How long a Matrix message waits for its puppet to connect and join before the runtime retries it later.
const JOIN_WAIT: Duration = Duration::from_secs(5);
/// How long a line a puppet sent may go without its echo before its Matrix sender hears it was not delivered.
const ECHO_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a room's netsplit (or netjoin) notice waits for the rest of the burst.
const NETSPLIT_DEBOUNCE: Duration = Duration::from_secs(2);
/// How long ghosts that quit in a netsplit stay in their rooms waiting for the netjoin.
const NETSPLIT_HOLD: Duration = Duration::from_secs(120);
/// How often timers (echo timeouts, netsplit notices) are looked at.
const TICK: Duration = Duration::from_millis(250);
/// How much of a long message's first line goes before the link to the whole text.
const LONG_PREVIEW_CHARS: usize = 80;
/// The user setting holding a Matrix user's chosen nick on a network: `irc.nick.{network}`.
pub(crate) fn nick_setting(network: &str) -> String {
    format!("irc.nick.{network}")
}
/// The user setting holding a Matrix user's account name on a network (for `storepass`).
/// The user setting holding a Matrix user's chosen IRC username (ident) on a network: `irc.username.{network}`.
pub(crate) fn username_setting(network: &str) -> String {
    format!("irc.username.{network}")
}

/// The setting, kept under a ghost's Matrix user ID, naming the services account its IRC person is logged in to
/// (IRCv3 account-tag, account-notify, extended-join).
pub(crate) const GHOST_ACCOUNT_SETTING: &str = "irc.ghost.account";

/// The credential-store key of a Matrix user's TLS client certificate (CertFP) for a network.
pub(crate) fn certfp_credential(network: &str) -> String {
    format!("{network}/certfp")
}

pub(crate) fn account_setting(network: &str) -> String {
    format!("irc.account.{network}")
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A runtime error as a connector error, transient or not as the runtime says.
pub(crate) fn core_error(error: lattice_bridge_core::Error) -> ConnectorError {
    if error.is_transient() {
        ConnectorError::Transient { message: error.to_string(), retry_after: error.retry_after() }
    } else {
        ConnectorError::permanent(error.to_string())
    }
}

fn transient(message: impl Into<String>) -> ConnectorError {
    ConnectorError::Transient { message: message.into(), retry_after: Some(Duration::from_millis(500)) }
}

/// A running network.
pub(crate) struct Network {
    pub(crate) id: String,
    pub(crate) config: NetworkConfig,
    bridge: BridgeHandle,
    users: Template,
    aliases: Template,
    pub(crate) listener: Connection,
    pub(crate) puppets: Arc<DashMap<String, Connection>>,
    /// Casefolded nicks of puppets → their Matrix users: their lines are ours, never bridged back.
    puppet_nicks: DashMap<String, String>,
    /// IRC people seen this session, by casefolded current nick: a nick change keeps the ghost.
    ghosts: Mutex<HashMap<String, GhostSpec>>,
    /// Casefolded channel → casefolded nicks of the IRC people in it.
    members: Mutex<HashMap<String, HashSet<String>>>,
    /// Casefolded nicks of puppets → `nick!user@host` as the server shows them, to match ban masks against.
    puppet_masks: DashMap<String, String>,
    /// Casefolded channel → its portal key, for the channels that have a portal.
    portals: DashMap<String, String>,
    connecting: Arc<Semaphore>,
    events: mpsc::Sender<ConnEvent>,
    ident: IdentRegistry,
    /// Replies to `whois` and similar, by the puppet's owner: where to say what the server answered.
    pub(crate) pending_replies: DashMap<String, mpsc::Sender<Message>>,
    /// How long a puppet may go unused before it is closed, if ever.
    idle_timeout: Option<Duration>,
    /// When each puppet's Matrix user last used it, and in which room.
    activity: DashMap<String, Activity>,
    /// Everything the bridge bot's connection hears, for whoever waits for an answer (NAMES, an operator's reply).
    pub(crate) taps: broadcast::Sender<Arc<Message>>,
    /// Link requests waiting for an operator's answer: casefolded operator nick → the room asking.
    pub(crate) link_requests: DashMap<String, String>,
    /// Libera.Chat's privacy rule for Matrix users without a working connection.
    pub(crate) privacy: Privacy,
    /// Per-user spam limits on Matrix → IRC messages.
    spam: SpamGuard,
    /// Matrix events sent to IRC, waiting for the server to confirm them.
    deliveries: Deliveries,
    /// Lines puppets sent, waiting for their echo (`echo-message`).
    echoes: Mutex<Echoes>,
    /// People gone in a netsplit, and the notices being collected.
    netsplits: Mutex<Netsplits>,
    /// Room ID → the Matrix users whose typing was last sent to IRC there.
    typing: Mutex<HashMap<String, HashSet<String>>>,
    /// Accounts, away messages, real names and hosts of the IRC people in bridged channels.
    people: Mutex<People>,
    /// Casefolded channel → the msgid of the last message the listener heard there (for chathistory backfill).
    last_msgid: DashMap<String, String>,
}

/// A puppet's last use.
#[derive(Debug, Clone)]
struct Activity {
    at: tokio::time::Instant,
    room_id: Option<String>,
}

impl Network {
    /// Starts the network: the listener connects and joins every channel that has a portal.
    pub(crate) async fn start(
        id: &str,
        config: &NetworkConfig,
        section: &IrcSection,
        bridge: BridgeHandle,
        ident: IdentRegistry,
    ) -> ConnectorResult<Arc<Self>> {
        let server_name = bridge.server_name().to_owned();
        let (events, receiver) = mpsc::channel(1024);
        let connecting = Arc::new(Semaphore::new(config.reconnect.max_concurrent.max(1)));
        let listener = Connection::spawn(
            Settings {
                owner: BOT_OWNER.into(),
                network: id.into(),
                servers: config.servers.clone(),
                ca_file: config.tls_ca_file.clone(),
                nick: config.bot_nick.clone(),
                max_nick_length: config.max_nick_length.max(config.bot_nick.len()),
                username: sanitise_username(&config.bot_nick),
                realname: "Lattice Matrix bridge".into(),
                login: None,
                flood: config.flood,
                reconnect: config.reconnect,
                forward: Forward::All,
                ident: ident.clone(),
            },
            events.clone(),
            Arc::clone(&connecting),
        );
        let privacy_bridge = bridge.clone();
        let deliveries_bridge = bridge.clone();
        let puppets = Arc::new(DashMap::new());
        let network = Arc::new(Self {
            id: id.into(),
            config: config.clone(),
            users: Template::new(&section.user_template, "{nick}", id, &server_name),
            aliases: Template::new(&section.alias_template, "{channel}", id, &server_name),
            bridge,
            listener,
            puppets: Arc::clone(&puppets),
            puppet_nicks: DashMap::new(),
            puppet_masks: DashMap::new(),
            ghosts: Mutex::new(HashMap::new()),
            members: Mutex::new(HashMap::new()),
            portals: DashMap::new(),
            connecting,
            events,
            ident,
            pending_replies: DashMap::new(),
            idle_timeout: config.idle_timeout(section),
            activity: DashMap::new(),
            taps: broadcast::channel(256).0,
            link_requests: DashMap::new(),
            privacy: Privacy::new(
                config.privacy,
                Duration::from_secs(config.privacy_grace_secs),
                &config.name,
                privacy_bridge,
                puppets,
            ),
            spam: SpamGuard::new(config.spam, &config.name),
            deliveries: Deliveries::new(deliveries_bridge, &config.name, config.flood.lines_per_second),
            echoes: Mutex::new(Echoes::new(ECHO_TIMEOUT)),
            netsplits: Mutex::new(Netsplits::new(NETSPLIT_DEBOUNCE, NETSPLIT_HOLD)),
            typing: Mutex::new(HashMap::new()),
            people: Mutex::new(People::default()),
            last_msgid: DashMap::new(),
        });
        let mut channel_portals = Vec::new();
        for portal in network.bridge.store().portals().await? {
            if let Some((network_id, channel)) = split_portal_key(&portal.remote_key)
                && network_id == id
            {
                network.add_channel(&portal, channel);
                channel_portals.push((portal.room_id.clone(), Self::channel_name(&portal, channel)));
            }
        }
        tokio::spawn(Arc::clone(&network).process(receiver));
        if network.privacy.enabled() {
            // Under the privacy rule everyone in a portal is connected or removed, also after a restart.
            let restoring = Arc::clone(&network);
            tokio::spawn(async move {
                for (room_id, channel) in channel_portals {
                    restoring.connect_members(&room_id, &channel).await;
                }
            });
        }
        if let Some(timeout) = network.idle_timeout {
            tokio::spawn(Self::reap_idle(Arc::downgrade(&network), timeout));
        }
        Ok(network)
    }

    fn channel_name(portal: &Portal, fallback: &str) -> String {
        portal.metadata.get("channel").and_then(|value| value.as_str()).unwrap_or(fallback).to_owned()
    }

    /// Makes the listener join a portal's channel.
    pub(crate) fn add_channel(&self, portal: &Portal, channel_key: &str) {
        let channel = Self::channel_name(portal, channel_key);
        self.portals.insert(casefold(&channel), portal.remote_key.clone());
        self.listener.want_channel(&channel);
    }

    /// Stops bridging a channel: the listener leaves it and its lines no longer reach Matrix.
    pub(crate) fn remove_channel(&self, channel: &str) {
        self.portals.remove(&casefold(channel));
        lock(&self.members).remove(&casefold(channel));
        self.listener.part(channel, Some("Unlinked from Matrix"));
    }

    /// Notes that `user_id` just used their puppet (in `room_id`), which keeps it from being reaped as idle.
    fn touch(&self, user_id: &str, room_id: Option<&str>) {
        let mut entry = self
            .activity
            .entry(user_id.to_owned())
            .or_insert_with(|| Activity { at: tokio::time::Instant::now(), room_id: None });
        entry.at = tokio::time::Instant::now();
        if let Some(room_id) = room_id {
            entry.room_id = Some(room_id.to_owned());
        }
    }

    /// Closes puppets unused for `timeout`, telling their users first; a puppet comes back on its user's next
    /// message. Ends when the network is dropped.
    async fn reap_idle(network: std::sync::Weak<Self>, timeout: Duration) {
        let period = (timeout / 4).clamp(Duration::from_millis(250), Duration::from_secs(60));
        loop {
            tokio::time::sleep(period).await;
            let Some(network) = network.upgrade() else { return };
            let now = tokio::time::Instant::now();
            let idle: Vec<(String, Option<String>)> = network
                .activity
                .iter()
                .filter(|entry| now.duration_since(entry.at) >= timeout)
                .map(|entry| (entry.key().clone(), entry.room_id.clone()))
                .collect();
            for (user_id, room_id) in idle {
                // Used again since the scan: keep it.
                if network
                    .activity
                    .remove_if(&user_id, |_, activity| now.duration_since(activity.at) >= timeout)
                    .is_none()
                {
                    continue;
                }
                let Some((_, puppet)) = network.puppets.remove(&user_id) else { continue };
                network.tell_idle(&user_id, room_id.as_deref(), timeout).await;
                tracing::info!(network = %network.id, matrix_user = %user_id, "closing an idle puppet connection");
                puppet.quit("Idle");
                let why = format!("your connection was closed after {} s unused", timeout.as_secs());
                network.puppet_closed(&user_id, &puppet, &why).await;
            }
        }
    }

    /// Tells a Matrix user about their connection: in their admin room, else `room_id` (the room they last used).
    async fn tell(&self, user_id: &str, room_id: Option<&str>, text: &str) {
        let admin_room = self.bridge.store().admin_room(user_id).await.ok().flatten();
        let room_id = room_id.map(str::to_owned).or_else(|| self.activity.get(user_id)?.room_id.clone());
        let Some(room) = admin_room.or(room_id) else { return };
        if let Err(error) = self.bridge.notice(&room, text).await {
            tracing::warn!(network = %self.id, matrix_user = %user_id, %error, "cannot tell a user about their connection");
        }
    }

    /// Tells a Matrix user that their idle puppet is being closed.
    async fn tell_idle(&self, user_id: &str, room_id: Option<&str>, timeout: Duration) {
        let comeback = if self.privacy.enabled() {
            // The privacy rule removes the user from the portals too (see `puppet_closed`).
            "you leave its rooms too, as only people connected to IRC may read them; rejoin one to reconnect"
        } else {
            "it reconnects when you next send a message"
        };
        let text = format!(
            "Your IRC connection to {} was unused for {} s and is being closed; {comeback}.",
            self.config.name,
            timeout.as_secs()
        );
        self.tell(user_id, room_id, &text).await;
    }

    /// The ghost spec of a user ID in our namespace, under the nick its person uses now (which differs from the
    /// one in the ID after a nick change).
    pub(crate) async fn ghost_for_user_id(&self, user_id: &str) -> Option<GhostSpec> {
        let nick = unescape_nick(self.users.extract(user_id)?)?;
        if !is_valid_nick(&nick) {
            return None;
        }
        if let Some(known) = lock(&self.ghosts).values().find(|ghost| ghost.user_id == user_id).cloned() {
            return Some(known);
        }
        let stored = self.bridge.store().ghost_by_user(user_id).await.ok().flatten();
        let current = stored
            .and_then(|ghost| ghost.remote_id.strip_prefix(&format!("{}/", self.id)).map(str::to_owned))
            .filter(|nick| is_valid_nick(nick));
        Some(self.ghost(current.as_deref().unwrap_or(&nick)).await)
    }

    /// The portal an alias in our namespace names, if it names a valid channel.
    pub(crate) fn portal_for_alias(&self, alias: &str) -> Option<PortalSpec> {
        let channel = self.aliases.extract(alias)?;
        if !is_valid_channel(channel) {
            return None;
        }
        let mut spec = self.portal_spec(channel);
        spec.alias_localpart = Some(alias.strip_prefix('#')?.rsplit_once(':')?.0.to_owned());
        Some(spec)
    }

    /// The portal of a channel, with the alias the template gives it.
    pub(crate) fn portal_spec(&self, channel: &str) -> PortalSpec {
        let alias = self.aliases.fill(channel);
        let localpart =
            alias.strip_prefix('#').and_then(|rest| rest.rsplit_once(':')).map(|(local, _)| local.to_owned());
        PortalSpec {
            remote_key: portal_key(&self.id, channel),
            alias_localpart: localpart,
            name: Some(channel.to_owned()),
            topic: None,
            bridge_info: BridgeInfoSpec {
                network_id: self.id.clone(),
                network_name: self.config.name.clone(),
                channel_id: casefold(channel),
                channel_name: channel.to_owned(),
            },
            public: true,
            direct: None,
            metadata: json!({"network": self.id, "channel": channel}),
        }
    }

    /// The runtime handle.
    pub(crate) fn bridge(&self) -> &BridgeHandle {
        &self.bridge
    }

    /// The ghost of `nick`: the one its person had under an earlier nick (this session or, through the store,
    /// before a restart), else the one the nick names.
    async fn ghost(&self, nick: &str) -> GhostSpec {
        if let Some(known) = lock(&self.ghosts).get(&casefold(nick)) {
            return known.clone();
        }
        let ghost = ghosts::from_store(self.bridge.store(), &self.users, &self.id, nick).await;
        lock(&self.ghosts).entry(casefold(nick)).or_insert(ghost).clone()
    }

    fn is_ours(&self, nick: &str) -> bool {
        let folded = casefold(nick);
        self.puppet_nicks.contains_key(&folded)
            || self.listener.nick().is_some_and(|own| casefold(&own) == folded)
            || casefold(&self.config.bot_nick) == folded
    }

    async fn push(&self, portal: &str, sender: Option<GhostSpec>, remote_id: Option<String>, kind: RemoteEventKind) {
        self.push_at(portal, sender, remote_id, None, kind).await;
    }

    /// Pushes an event that happened at `timestamp_ms` on IRC (`server-time`).
    async fn push_at(
        &self,
        portal: &str,
        sender: Option<GhostSpec>,
        remote_id: Option<String>,
        timestamp_ms: Option<u64>,
        kind: RemoteEventKind,
    ) {
        let event = RemoteEvent { portal: portal.to_owned(), sender, remote_id, timestamp_ms, kind };
        if let Err(error) = self.bridge.push(event).await {
            tracing::error!(network = %self.id, %portal, %error, "cannot queue an IRC event for Matrix");
        }
    }

    async fn process(self: Arc<Self>, mut receiver: mpsc::Receiver<ConnEvent>) {
        let mut batches = BatchTracker::default();
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let event = tokio::select! {
                event = receiver.recv() => event,
                _ = tick.tick() => {
                    self.on_tick().await;
                    continue;
                }
            };
            let Some(event) = event else { return };
            match event {
                ConnEvent::Registered { owner, nick } if owner != BOT_OWNER => {
                    self.privacy.registered(&owner);
                    self.puppet_nicks.insert(casefold(&nick), owner);
                }
                ConnEvent::Registered { .. } => {}
                ConnEvent::Disconnected { owner, nick } if owner != BOT_OWNER => {
                    self.puppet_nicks.remove_if(&casefold(&nick), |_, user| *user == owner);
                    self.watch_lost_puppet(&owner);
                }
                ConnEvent::LoginFailed { owner, account, reason } if owner != BOT_OWNER => {
                    let text = format!(
                        "Your IRC login to {} as {account} failed: {reason}. You are connected without it; store the \
                         right password with `storepass` to try again.",
                        self.config.name
                    );
                    self.tell(&owner, None, &text).await;
                }
                ConnEvent::LoginFailed { .. } => {}
                ConnEvent::Disconnected { nick, .. } => {
                    lock(&self.members).clear();
                    // What an unfinished batch held is still news.
                    for batch in batches.drain() {
                        self.on_batch(&nick, batch).await;
                    }
                }
                ConnEvent::Message { owner, nick, message } if owner == BOT_OWNER => {
                    if self.taps.receiver_count() > 0 {
                        let _ = self.taps.send(Arc::new((*message).clone()));
                    }
                    match batches.feed(*message) {
                        Fed::Pass(message) => self.on_listener(&nick, message).await,
                        Fed::Held => {}
                        Fed::Done(batch) => self.on_batch(&nick, batch).await,
                    }
                }
                ConnEvent::Message { owner, nick, message } => self.on_puppet(&owner, &nick, *message).await,
            }
        }
    }

    /// The portal of a (bridged) channel.
    fn portal_of(&self, channel: &str) -> Option<String> {
        self.portals.get(&casefold(channel)).map(|entry| entry.clone())
    }

    /// Timers: lines whose echo never came, netsplit notices whose burst is over, people not back from a split.
    async fn on_tick(&self) {
        let now = tokio::time::Instant::now();
        let late = {
            let mut echoes = lock(&self.echoes);
            if echoes.is_idle() { Vec::new() } else { echoes.expired(now) }
        };
        for sent in late {
            self.tell_undelivered(&sent, "the IRC server did not confirm it in time").await;
        }
        let due = {
            let mut netsplits = lock(&self.netsplits);
            if netsplits.is_idle() { Default::default() } else { netsplits.due(now) }
        };
        for (channel, body) in due.notices {
            if let Some(portal) = self.portal_of(&channel) {
                let kind = RemoteEventKind::Message { msgtype: MessageType::Notice, body, html: None, reply_to: None };
                self.push(&portal, None, None, kind).await;
            }
        }
        for (nick, channels) in due.gone {
            let ghost = self.ghost(&nick).await;
            for channel in channels {
                let present =
                    lock(&self.members).get(&channel).is_some_and(|members| members.contains(&casefold(&nick)));
                if !present && let Some(portal) = self.portal_of(&channel) {
                    let kind = RemoteEventKind::Leave { reason: Some("Netsplit".into()) };
                    self.push(&portal, Some(ghost.clone()), None, kind).await;
                }
            }
        }
    }

    /// Tells a Matrix sender, in the room, that a message of theirs did not reach IRC; once per event, also when the
    /// event is handled again after a crash (the runtime's own delivery-failure notice shares the key).
    async fn tell_undelivered(&self, sent: &Sent, reason: &str) {
        let text = format!("⚠ {}: your message was not delivered to {}: {reason}", sent.matrix_user, self.config.name);
        let key = format!("undelivered.{}", sent.event_id);
        if let Err(error) = self.bridge.notice_once(&sent.room_id, &text, &key).await {
            tracing::warn!(network = %self.id, room_id = %sent.room_id, %error, "cannot send a delivery-failure notice");
        }
    }

    /// A closed batch (IRCv3 `batch`): a netsplit's quits are collapsed, anything else is handled line by line.
    async fn on_batch(&self, own_nick: &str, batch: Batch) {
        if batch.kind == "netsplit" {
            let servers = batch.params.join(" ");
            for message in batch.messages() {
                if let (Command::QUIT(_), Some(nick)) = (&message.command, message.source_nickname()) {
                    self.split_quit(nick, &servers);
                }
            }
            return;
        }
        if batch.kind == "chathistory" {
            // Backfill: what is not in the message map yet, in order, with its own server-time.
            for message in batch.messages().into_iter().filter(|message| chathistory::replayable(message)) {
                let (Some(nick), Some(target)) = (message.source_nickname(), backfill_target(message)) else {
                    continue;
                };
                let Some(portal) = self.portal_of(target) else { continue };
                let known = self.bridge.store().event_for_remote(&portal, &remote_message_id(nick, message)).await;
                if tags::get(message, "msgid").is_some() && matches!(known, Ok(None)) {
                    self.on_listener(own_nick, message.clone()).await;
                }
            }
            return;
        }
        // netjoin: the joins find their people in the netsplit tracker and are swallowed there.
        for message in batch.messages() {
            self.on_listener(own_nick, message.clone()).await;
        }
    }

    /// Someone quit in a netsplit: their ghost stays in its rooms until the netjoin (or the hold runs out).
    fn split_quit(&self, nick: &str, servers: &str) {
        let folded = casefold(nick);
        let channels: Vec<String> = lock(&self.members)
            .iter_mut()
            .filter_map(|(channel, members)| members.remove(&folded).then(|| channel.clone()))
            .collect();
        if !channels.is_empty() {
            lock(&self.netsplits).split(&folded, nick, channels, servers, tokio::time::Instant::now());
        }
    }

    /// The message-map ID of the message a received line names in `+draft/reply` (IRCv3 `message-tags`).
    async fn replied_to(&self, portal: &str, message: &Message) -> Option<String> {
        let msgid = tags::get(message, "+draft/reply").filter(|msgid| !msgid.is_empty())?;
        let found = self.bridge.store().remote_id_by_suffix(portal, &format!("/{msgid}")).await;
        found.inspect_err(|error| tracing::warn!(network = %self.id, %error, "cannot look up a reply target")).ok()?
    }

    /// Records the msgid a delivered Matrix message got on IRC, so IRC replies and reactions can name it.
    fn record_echo(&self, sent: Sent, own_nick: &str, msgid: &str) {
        let mapping = MessageMapping {
            event_id: sent.event_id,
            room_id: sent.room_id,
            portal_key: sent.portal_key,
            remote_id: format!("{own_nick}/{msgid}"),
        };
        self.bridge.store().map_message(mapping);
    }

    /// What the bridge knows about the IRC person using `nick`, for `whois`.
    pub(crate) fn describe_person(&self, nick: &str) -> Option<String> {
        lock(&self.people).get(&casefold(nick)).map(people::Person::describe)
    }

    /// Notes what a line tells about its sender (account, away, real name, host); a changed account is stored
    /// under the ghost's Matrix user ID, so it outlives the session.
    async fn note_person(&self, nick: &str, message: &Message) {
        let folded = casefold(nick);
        let account = {
            let mut people = lock(&self.people);
            let changed = people.apply(&folded, people::updates(message));
            changed.then(|| people.get(&folded).and_then(|person| person.account.clone()))
        };
        if let Some(account) = account {
            let ghost = self.ghost(nick).await;
            let stored =
                self.bridge.store().set_user_setting(&ghost.user_id, GHOST_ACCOUNT_SETTING, account.as_deref());
            if let Err(error) = stored.await {
                tracing::warn!(network = %self.id, %nick, %error, "cannot store a ghost's account");
            }
        }
    }

    /// What the bridge bot hears in its channels.
    async fn on_listener(&self, own_nick: &str, message: Message) {
        let source = message.source_nickname().map(str::to_owned);
        let from_ours = source.as_deref().is_none_or(|nick| self.is_ours(nick));
        if let Some(nick) = source.as_deref().filter(|_| {
            !from_ours
                && message.prefix.as_ref().is_some_and(|prefix| matches!(prefix, irc::proto::Prefix::Nickname(..)))
        }) {
            self.note_person(nick, &message).await;
        }
        match &message.command {
            Command::PRIVMSG(target, text) | Command::NOTICE(target, text) if !from_ours => {
                let Some(portal) = self.portals.get(&casefold(target)).map(|entry| entry.clone()) else { return };
                let nick = source.unwrap_or_default();
                let notice = matches!(message.command, Command::NOTICE(..));
                let Some((msgtype, text)) = classify(text, notice) else { return };
                let (body, html) = self.irc_to_matrix(text);
                let remote_id = remote_message_id(&nick, &message);
                if let Some(msgid) = tags::get(&message, "msgid") {
                    self.last_msgid.insert(casefold(target), msgid.to_owned());
                }
                let reply_to = self.replied_to(&portal, &message).await;
                let kind = RemoteEventKind::Message { msgtype, body, html, reply_to };
                let at = server_time::timestamp_ms(&message);
                self.push_at(&portal, Some(self.ghost(&nick).await), Some(remote_id), at, kind).await;
            }
            Command::Raw(command, params) if command == "TAGMSG" && !from_ours => {
                let Some(portal) = params.first().and_then(|target| self.portal_of(target)) else { return };
                let nick = source.unwrap_or_default();
                let at = server_time::timestamp_ms(&message);
                self.irc_typing(&portal, &nick, &message).await;
                if let Some(key) = tags::get(&message, "+draft/react").filter(|key| !key.is_empty())
                    && let Some(target) = self.replied_to(&portal, &message).await
                {
                    let kind = RemoteEventKind::Reaction { target, key: key.to_owned() };
                    let remote_id = remote_message_id(&nick, &message);
                    self.push_at(&portal, Some(self.ghost(&nick).await), Some(remote_id), at, kind).await;
                }
            }
            Command::Raw(command, params) if command == "REDACT" && !from_ours && params.len() >= 2 => {
                // draft/message-redaction: `REDACT <target> <msgid> [:reason]`.
                let Some(portal) = self.portal_of(&params[0]) else { return };
                let found = self.bridge.store().remote_id_by_suffix(&portal, &format!("/{}", params[1])).await;
                let Ok(Some(target)) = found else { return };
                let kind = RemoteEventKind::Redaction { target, reason: params.get(2).cloned() };
                self.push(&portal, Some(self.ghost(&source.unwrap_or_default()).await), None, kind).await;
            }
            Command::JOIN(channel, _, _) if from_ours => {
                if let Some(irc::proto::Prefix::Nickname(nick, user, host)) = &message.prefix {
                    self.puppet_masks.insert(casefold(nick), format!("{nick}!{user}@{host}"));
                }
                // The bridge bot (re)joined a bridged channel: ask for what was said meanwhile, where offered.
                if source.as_deref().is_some_and(|nick| casefold(nick) == casefold(own_nick))
                    && self.portal_of(channel).is_some()
                    && self.listener.has_cap("draft/chathistory")
                {
                    let after = self.last_msgid.get(&casefold(channel)).map(|entry| entry.clone());
                    if let Ok(line) = chathistory::request(channel, after.as_deref()) {
                        let _ = self.listener.send(line).await;
                    }
                }
            }
            Command::JOIN(channel, _, _) if !from_ours => {
                let Some(portal) = self.portals.get(&casefold(channel)).map(|entry| entry.clone()) else { return };
                let nick = source.unwrap_or_default();
                lock(&self.members).entry(casefold(channel)).or_default().insert(casefold(&nick));
                if lock(&self.netsplits).rejoin(&casefold(&nick), &casefold(channel), tokio::time::Instant::now()) {
                    // Back from a netsplit: the ghost never left.
                    return;
                }
                self.push(&portal, Some(self.ghost(&nick).await), None, RemoteEventKind::Join).await;
            }
            Command::PART(channel, reason) if !from_ours => {
                let Some(portal) = self.portals.get(&casefold(channel)).map(|entry| entry.clone()) else { return };
                let nick = source.unwrap_or_default();
                let still_seen = {
                    let mut members = lock(&self.members);
                    if let Some(members) = members.get_mut(&casefold(channel)) {
                        members.remove(&casefold(&nick));
                    }
                    members.values().any(|members| members.contains(&casefold(&nick)))
                };
                if !still_seen {
                    // Out of every bridged channel: the bridge hears no more about them.
                    lock(&self.people).remove(&casefold(&nick));
                }
                let kind = RemoteEventKind::Leave { reason: reason.clone() };
                self.push(&portal, Some(self.ghost(&nick).await), None, kind).await;
            }
            Command::QUIT(reason) if !from_ours => {
                if let Some((from, to)) = reason.as_deref().and_then(split_servers) {
                    self.split_quit(source.as_deref().unwrap_or_default(), &format!("{from} {to}"));
                    return;
                }
                let nick = casefold(&source.unwrap_or_default());
                lock(&self.people).remove(&nick);
                let channels: Vec<String> = lock(&self.members)
                    .iter_mut()
                    .filter_map(|(channel, members)| members.remove(&nick).then(|| channel.clone()))
                    .collect();
                let ghost = self.ghost(&nick).await;
                for channel in channels {
                    if let Some(portal) = self.portals.get(&channel).map(|entry| entry.clone()) {
                        let reason = reason.as_ref().map(|reason| format!("Quit: {reason}"));
                        self.push(&portal, Some(ghost.clone()), None, RemoteEventKind::Leave { reason }).await;
                    }
                }
            }
            Command::KICK(channel, kicked, reason) => {
                let Some(portal) = self.portals.get(&casefold(channel)).map(|entry| entry.clone()) else { return };
                if casefold(kicked) == casefold(own_nick) {
                    tracing::warn!(network = %self.id, %channel, ?reason, "the bridge bot was kicked; rejoining");
                    let listener = self.listener.clone();
                    let channel = channel.clone();
                    tokio::spawn(async move {
                        tokio::time::sleep(Duration::from_secs(5)).await;
                        listener.want_channel(&channel);
                    });
                    return;
                }
                let kicker = match source.filter(|nick| !self.is_ours(nick)) {
                    Some(nick) => Some(self.ghost(&nick).await),
                    None => None,
                };
                let user_id = match self.puppet_nicks.get(&casefold(kicked)) {
                    Some(matrix_user) => matrix_user.clone(),
                    None => {
                        if let Some(members) = lock(&self.members).get_mut(&casefold(channel)) {
                            members.remove(&casefold(kicked));
                        }
                        self.ghost(kicked).await.user_id
                    }
                };
                self.push(&portal, kicker, None, RemoteEventKind::Kick { user_id, reason: reason.clone() }).await;
            }
            Command::NICK(new) if !from_ours => {
                let old = casefold(&source.unwrap_or_default());
                lock(&self.people).rename(&old, &casefold(new));
                let mut ghost = self.ghost(&old).await;
                ghost.displayname = Some(new.clone());
                ghost.remote_id = ghosts::remote_id(&self.id, new);
                {
                    let mut ghosts = lock(&self.ghosts);
                    ghosts.remove(&old);
                    ghosts.insert(casefold(new), ghost.clone());
                }
                if let Err(error) = ghosts::follow_nick(self.bridge.store(), &ghost).await {
                    tracing::warn!(network = %self.id, %new, %error, "cannot record a nick change in the store");
                }
                let first_channel = {
                    let mut members = lock(&self.members);
                    let mut first = None;
                    for (channel, nicks) in members.iter_mut() {
                        if nicks.remove(&old) {
                            nicks.insert(casefold(new));
                            first.get_or_insert_with(|| channel.clone());
                        }
                    }
                    first
                };
                if let Some(portal) = first_channel.and_then(|channel| self.portals.get(&channel).map(|e| e.clone())) {
                    self.push(&portal, Some(ghost), None, RemoteEventKind::Profile).await;
                }
            }
            Command::TOPIC(channel, Some(topic)) if !from_ours => {
                let Some(portal) = self.portals.get(&casefold(channel)).map(|entry| entry.clone()) else { return };
                let ghost = match source {
                    Some(nick) => Some(self.ghost(&nick).await),
                    None => None,
                };
                self.push(&portal, ghost, None, RemoteEventKind::Topic { topic: topic.clone() }).await;
            }
            Command::Response(Response::RPL_TOPIC, params) if params.len() >= 3 => {
                let Some(portal) = self.portals.get(&casefold(&params[1])).map(|entry| entry.clone()) else { return };
                let known = self.bridge.store().portal_by_key(&portal).await.ok().flatten();
                if known.and_then(|portal| portal.topic).as_deref() != Some(params[2].as_str()) {
                    self.push(&portal, None, None, RemoteEventKind::Topic { topic: params[2].clone() }).await;
                }
            }
            Command::Response(Response::RPL_NAMREPLY, params) if params.len() >= 4 => {
                let channel = &params[2];
                let Some(portal) = self.portals.get(&casefold(channel)).map(|entry| entry.clone()) else { return };
                for entry in params[3].split_whitespace() {
                    let nick = entry.trim_start_matches(['~', '&', '@', '%', '+']);
                    if nick.is_empty() || self.is_ours(nick) {
                        continue;
                    }
                    let modes = &entry[..entry.len() - nick.len()];
                    let fresh = lock(&self.members).entry(casefold(channel)).or_default().insert(casefold(nick));
                    let ghost = self.ghost(nick).await;
                    // Back from a netsplit (seen in the names after our own reconnect): the ghost never left.
                    let returned = fresh
                        && lock(&self.netsplits).rejoin(
                            &casefold(nick),
                            &casefold(channel),
                            tokio::time::Instant::now(),
                        );
                    if fresh && !returned {
                        self.push(&portal, Some(ghost.clone()), None, RemoteEventKind::Join).await;
                    }
                    let level = power_level(modes);
                    if level > 0 {
                        let kind = RemoteEventKind::PowerLevel { user_id: ghost.user_id, level };
                        self.push(&portal, None, None, kind).await;
                    }
                }
            }
            Command::ChannelMODE(channel, modes) => {
                let Some(portal) = self.portals.get(&casefold(channel)).map(|entry| entry.clone()) else { return };
                for mode in modes {
                    let (plus, mode, Some(nick)) = (match mode {
                        Mode::Plus(mode, nick) => (true, mode, nick),
                        Mode::Minus(mode, nick) => (false, mode, nick),
                        Mode::NoPrefix(mode) => (true, mode, &None),
                    }) else {
                        continue;
                    };
                    if *mode == ChannelMode::Ban {
                        if plus {
                            self.ban_puppets(&portal, nick, source.as_deref()).await;
                        }
                        continue;
                    }
                    let prefix = match mode {
                        ChannelMode::Founder => "~",
                        ChannelMode::Admin => "&",
                        ChannelMode::Oper => "@",
                        ChannelMode::Halfop => "%",
                        ChannelMode::Voice => "+",
                        _ => continue,
                    };
                    if self.listener.nick().is_some_and(|own| casefold(&own) == casefold(nick)) {
                        continue;
                    }
                    let user_id = match self.puppet_nicks.get(&casefold(nick)) {
                        Some(matrix_user) => matrix_user.clone(),
                        None => self.ghost(nick).await.user_id,
                    };
                    let level = if plus { power_level(prefix) } else { 0 };
                    self.push(&portal, None, None, RemoteEventKind::PowerLevel { user_id, level }).await;
                }
            }
            _ => {}
        }
    }

    /// An IRC ban (`MODE +b mask`) that matches puppets bans their Matrix users from the portal room.
    async fn ban_puppets(&self, portal: &str, mask: &str, by: Option<&str>) {
        let banned: Vec<String> = self
            .puppet_masks
            .iter()
            .filter(|entry| mask_matches(mask, entry.value()))
            .filter_map(|entry| self.puppet_nicks.get(entry.key()).map(|user| user.clone()))
            .collect();
        if banned.is_empty() {
            return;
        }
        let room = match self.bridge.store().portal_by_key(portal).await {
            Ok(Some(portal)) => portal.room_id,
            _ => return,
        };
        let Ok(room) = room.parse::<ruma::OwnedRoomId>() else { return };
        let reason = format!("Banned on IRC by {} ({mask})", by.unwrap_or("the server"));
        for user in banned {
            let Ok(user) = user.parse::<ruma::OwnedUserId>() else { continue };
            if let Err(error) = self.bridge.matrix().bot().ban(&room, &user, Some(&reason)).await {
                tracing::warn!(network = %self.id, %portal, %user, %error, "cannot ban a Matrix user banned on IRC");
            }
        }
    }

    /// A `+typing` client tag on a TAGMSG from `nick` (IRCv3 typing) as typing in `portal`: a channel's or a DM's.
    async fn irc_typing(&self, portal: &str, nick: &str, message: &Message) {
        let Some(state) = tags::get(message, "+typing") else { return };
        // `paused` (text typed, not being typed now) is not typing for Matrix either.
        let kind = RemoteEventKind::Typing { typing: state == "active" };
        let at = server_time::timestamp_ms(message);
        self.push_at(portal, Some(self.ghost(nick).await), None, at, kind).await;
    }

    /// What a puppet hears about itself: private messages become Matrix DMs, server replies go to whoever asked.
    async fn on_puppet(&self, matrix_user: &str, own_nick: &str, message: Message) {
        let label = tags::get(&message, "label");
        let from_self = message.source_nickname().is_some_and(|nick| casefold(nick) == casefold(own_nick));
        match &message.command {
            // The echo of a draft/multiline batch: its opener carries the label and the msgid.
            Command::BATCH(reference, ..) if from_self => {
                let sent = match reference.starts_with('+') {
                    true => label.and_then(|label| lock(&self.echoes).echoed(matrix_user, Some(label), "", "")),
                    false => None,
                };
                if let (Some(sent), Some(msgid)) = (sent, tags::get(&message, "msgid")) {
                    self.record_echo(sent, own_nick, msgid);
                }
                return;
            }
            // echo-message: our own line came back, so it was delivered; its msgid names it from now on.
            Command::PRIVMSG(target, text) | Command::NOTICE(target, text) if from_self => {
                let sent = lock(&self.echoes).echoed(matrix_user, label, target, text);
                if let (Some(sent), Some(msgid)) = (sent, tags::get(&message, "msgid")) {
                    self.record_echo(sent, own_nick, msgid);
                }
                return;
            }
            // labeled-response: `ACK` means the server took the line and has nothing to say (no echo will come).
            Command::Raw(command, _) if command == "ACK" && label.is_some() => {
                lock(&self.echoes).echoed(matrix_user, label, "", "");
                return;
            }
            Command::Raw(_, _) | Command::Response(..) if !from_self && label.is_some() => {
                // labeled-response: an error reply to a labelled line (404 ERR_CANNOTSENDTOCHAN, FAIL …).
                let reason = match &message.command {
                    Command::Response(_, params) | Command::Raw(_, params) => params.last().cloned(),
                    _ => None,
                };
                let reason = reason.as_deref().unwrap_or("the IRC server refused it");
                let failed = lock(&self.echoes).failed(label.unwrap_or_default(), reason);
                if let Some(sent) = failed {
                    self.tell_undelivered(&sent, reason).await;
                    return;
                }
            }
            _ => {}
        }
        match &message.command {
            Command::NICK(new) => {
                self.puppet_nicks.remove(&casefold(own_nick));
                self.puppet_nicks.insert(casefold(new), matrix_user.to_owned());
            }
            Command::PRIVMSG(_, text) | Command::NOTICE(_, text) => {
                let Some(nick) = message.source_nickname().map(str::to_owned) else { return };
                if self.is_ours(&nick) || !is_valid_nick(&nick) {
                    return;
                }
                let notice = matches!(message.command, Command::NOTICE(..));
                let Some((msgtype, text)) = classify(text, notice) else { return };
                let ghost = self.ghost(&nick).await;
                let spec = PortalSpec {
                    remote_key: dm_key(&self.id, matrix_user, &nick),
                    alias_localpart: None,
                    name: None,
                    topic: None,
                    bridge_info: BridgeInfoSpec {
                        network_id: self.id.clone(),
                        network_name: self.config.name.clone(),
                        channel_id: casefold(&nick),
                        channel_name: nick.clone(),
                    },
                    public: false,
                    direct: Some(DirectChat { ghost: ghost.clone(), matrix_user: matrix_user.to_owned() }),
                    metadata: json!({"network": self.id, "nick": nick}),
                };
                let portal = match self.bridge.ensure_portal(&spec).await {
                    Ok(portal) => portal,
                    Err(error) => {
                        tracing::error!(network = %self.id, %error, "cannot create a DM room");
                        return;
                    }
                };
                let (body, html) = self.irc_to_matrix(text);
                let kind = RemoteEventKind::Message { msgtype, body, html, reply_to: None };
                self.push(&portal.remote_key, Some(ghost), Some(remote_message_id(&nick, &message)), kind).await;
            }
            // Typing in a DM: only where the DM room exists already (typing alone does not open one).
            Command::Raw(command, _) if command == "TAGMSG" => {
                let Some(nick) = message.source_nickname().filter(|nick| !self.is_ours(nick)) else { return };
                let key = dm_key(&self.id, matrix_user, nick);
                if let Ok(Some(_)) = self.bridge.store().portal_by_key(&key).await {
                    self.irc_typing(&key, nick, &message).await;
                }
            }
            Command::ERROR(reason) => self.privacy.closed_by_server(matrix_user, reason),
            Command::Response(..) => {
                if let Some(sender) = self.pending_replies.get(matrix_user).map(|entry| entry.clone()) {
                    let _ = sender.try_send(message);
                }
            }
            _ => {}
        }
    }

    /// An IRC message's text as a Matrix body and HTML; nicks of Matrix users become pills.
    fn irc_to_matrix(&self, text: &str) -> (String, Option<String>) {
        let mut rich = mirc::parse(text);
        self.pill_puppet_nicks(&mut rich);
        rich.to_message()
    }

    /// Replaces a puppet's nick at the start of a message (`alice: hi`) with a pill of its Matrix user.
    fn pill_puppet_nicks(&self, rich: &mut RichText) {
        let Some(lattice_bridge_core::formatting::Node::Text(first)) = rich.nodes.first() else { return };
        let Some((word, rest)) = first.split_once([':', ',']) else { return };
        let Some(user) = self.puppet_nicks.get(&casefold(word)).map(|entry| entry.clone()) else { return };
        let mention = Mention { target: MentionTarget::User(user), display: word.to_owned() };
        let rest = rest.to_owned();
        let separator = first[word.len()..].chars().next().unwrap_or(':');
        rich.nodes[0] = lattice_bridge_core::formatting::Node::Mention(mention);
        rich.nodes.insert(1, lattice_bridge_core::formatting::Node::Text(format!("{separator}{rest}")));
    }

    /// The nick to show for a Matrix pill on IRC: a ghost's nick, a puppet's nick, or the display text.
    fn nick_for_mention(&self, mention: &Mention) -> String {
        let MentionTarget::User(user_id) = &mention.target else { return mention.display.clone() };
        if let Some(ghost) = lock(&self.ghosts).iter().find(|(_, ghost)| ghost.user_id == *user_id) {
            return ghost.1.displayname.clone().unwrap_or_else(|| ghost.0.clone());
        }
        if let Some(nick) = self.users.extract(user_id).and_then(unescape_nick) {
            return nick;
        }
        if let Some(puppet) = self.puppets.get(user_id)
            && let Some(nick) = puppet.nick()
        {
            return nick;
        }
        mention.display.clone()
    }

    /// The puppet connection of a Matrix user, started on first use with the nick they chose, else one made from
    /// their display name or localpart.
    pub(crate) async fn puppet(&self, user_id: &str, displayname: Option<&str>) -> ConnectorResult<Connection> {
        if let Some(puppet) = self.puppets.get(user_id) {
            return Ok(puppet.clone());
        }
        self.touch(user_id, None);
        let store = self.bridge.store();
        let chosen = store.user_setting(user_id, &nick_setting(&self.id)).await?;
        let displayname = match (chosen.is_some(), displayname) {
            (true, _) => None,
            (false, Some(name)) => Some(name.to_owned()),
            (false, None) => match user_id.parse::<ruma::OwnedUserId>() {
                Ok(parsed) => self
                    .bridge
                    .matrix()
                    .bot()
                    .get_profile(&parsed)
                    .await
                    .ok()
                    .flatten()
                    .and_then(|profile| profile.displayname),
                Err(_) => None,
            },
        };
        let localpart = user_id.trim_start_matches('@').split(':').next().unwrap_or("matrix");
        let wanted = chosen.or(displayname).unwrap_or_else(|| localpart.to_owned());
        let nick = sanitise_nick(&wanted, self.config.max_nick_length);
        let username = store.user_setting(user_id, &username_setting(&self.id)).await?;
        let username = sanitise_username(username.as_deref().unwrap_or(localpart));
        let login = self.login(user_id, Some(&nick)).await?;
        if let Some(why) = self.limit_reached(user_id) {
            // A network's connection limit is the operator's rule: say so rather than queue forever.
            return Err(ConnectorError::permanent(why));
        }
        let puppet = self
            .puppets
            .entry(user_id.to_owned())
            .or_insert_with(|| {
                tracing::info!(network = %self.id, matrix_user = %user_id, %nick, "starting a puppet connection");
                Connection::spawn(
                    Settings {
                        owner: user_id.to_owned(),
                        network: self.id.clone(),
                        servers: self.config.servers.clone(),
                        ca_file: self.config.tls_ca_file.clone(),
                        nick,
                        max_nick_length: self.config.max_nick_length,
                        username,
                        realname: format!("{user_id} via Lattice"),
                        login,
                        flood: self.config.flood,
                        reconnect: self.config.reconnect,
                        forward: Forward::Own,
                        ident: self.ident.clone(),
                    },
                    self.events.clone(),
                    Arc::clone(&self.connecting),
                )
            })
            .clone();
        Ok(puppet)
    }

    /// Why no new puppet can be opened for `user_id` now, if the network's connection limit is reached.
    fn limit_reached(&self, user_id: &str) -> Option<String> {
        let max_clients = self.config.max_clients;
        (max_clients > 0 && !self.puppets.contains_key(user_id) && self.puppets.len() >= max_clients).then(|| {
            format!(
                "the bridge already holds {max_clients} connections to {}, its limit; try again later",
                self.config.name
            )
        })
    }

    /// The stored login of a Matrix user on this network, if the network uses one. Without a stored account name
    /// the account is the puppet's nick: `nick` for a puppet about to start, else the running puppet's.
    pub(crate) async fn login(&self, user_id: &str, nick: Option<&str>) -> ConnectorResult<Option<Login>> {
        if self.config.auth == AuthMethod::None {
            return Ok(None);
        }
        let store = self.bridge.store();
        let password = store.credential(user_id, &self.id).await?;
        let certificate = match self.config.auth {
            AuthMethod::Sasl => store.credential(user_id, &certfp_credential(&self.id)).await?,
            _ => None,
        };
        if password.is_none() && certificate.is_none() {
            return Ok(None);
        }
        let account = match store.user_setting(user_id, &account_setting(&self.id)).await? {
            Some(account) => account,
            None => {
                match nick.map(str::to_owned).or_else(|| self.puppets.get(user_id).and_then(|puppet| puppet.nick())) {
                    Some(nick) => nick,
                    None => sanitise_nick(user_id.trim_start_matches('@'), self.config.max_nick_length),
                }
            }
        };
        Ok(Some(Login { method: self.config.auth, account, password: password.unwrap_or_default(), certificate }))
    }

    /// Waits until `puppet` is in `channel`, asking it to join; transient while it connects, permanent if the
    /// server refuses.
    async fn joined(&self, puppet: &Connection, channel: &str) -> ConnectorResult<()> {
        puppet.want_channel(channel);
        let deadline = tokio::time::Instant::now() + JOIN_WAIT;
        loop {
            match puppet.channel_status(channel) {
                ChannelStatus::Joined => return Ok(()),
                ChannelStatus::Refused(reason) => {
                    // Forget the refusal, so a later message tries again.
                    puppet.part(channel, None);
                    return Err(ConnectorError::permanent(format!("IRC refused to let you join {channel}: {reason}")));
                }
                ChannelStatus::Pending | ChannelStatus::Unknown => {}
            }
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return Err(transient(format!("waiting for the IRC connection to join {channel}")));
            }
            puppet.changed(deadline - now).await;
            puppet.want_channel(channel);
        }
    }

    /// The plain text of a Matrix event (reply fallback removed), as the bridge bot can read it.
    async fn event_text(&self, room_id: &str, event_id: &str) -> Option<String> {
        let room: ruma::OwnedRoomId = room_id.try_into().ok()?;
        let event: ruma::OwnedEventId = event_id.try_into().ok()?;
        let fetched = self.bridge.matrix().bot().get_event(&room, &event).await;
        let event = fetched.inspect_err(|error| tracing::debug!(%error, event_id, "cannot read an event")).ok()??;
        let content = event.get("content")?;
        let body = content.pointer("/m.new_content/body").or_else(|| content.get("body"))?.as_str()?;
        Some(strip_reply_fallback(body).to_owned())
    }

    /// Handles a Matrix event in one of this network's portals (or, with `portal` `None`, a room that may become
    /// one).
    pub(crate) async fn matrix_event(&self, portal: Option<&Portal>, event: &MatrixEvent) -> ConnectorResult<()> {
        if let (MatrixEventKind::Typing { user_ids }, Some(portal)) = (&event.kind, portal) {
            self.matrix_typing(portal, &event.room_id, user_ids).await;
            return Ok(());
        }
        let Some(sender) = event.sender.as_deref() else { return Ok(()) };
        let Some(portal) = portal else { return self.maybe_direct_chat(event, sender).await };
        if self.puppets.contains_key(sender)
            && matches!(
                event.kind,
                MatrixEventKind::Message(_) | MatrixEventKind::Edit { .. } | MatrixEventKind::Topic(_)
            )
        {
            self.touch(sender, Some(&event.room_id));
        }
        let Some(target) = Target::of(portal, sender) else { return Ok(()) };
        match &event.kind {
            MatrixEventKind::Message(message) => {
                let lines = render_plain(&message.text).lines().count();
                self.spam.admit(sender, lines)?;
                let puppet = self.puppet(sender, None).await?;
                if let Target::Channel(channel) = &target {
                    self.joined(&puppet, channel).await?;
                } else if !puppet.is_connected() {
                    puppet.changed(JOIN_WAIT).await;
                }
                let kind = match message.msgtype {
                    MessageType::Emote => TextKind::Action,
                    MessageType::Notice => TextKind::Notice,
                    _ => TextKind::Privmsg,
                };
                let mut text = mirc::render(&message.text, &|mention| self.nick_for_mention(mention));
                if let Some(media) = &message.media {
                    // Matrix media needs authentication to fetch: IRC people get an unguessable link on the bridge.
                    let url = self
                        .bridge
                        .publish_media(&media.url, &media.filename, media.mimetype.as_deref())
                        .await
                        .map_err(core_error)?;
                    text = format!("{} {url}", media.filename);
                }
                if let Some(reply) = &message.reply_to
                    && let Some(nick) = reply.remote_ids.first().and_then(|id| id.split_once('/')).map(|(n, _)| n)
                {
                    let quote_chars = self.config.messages.reply_quote_chars;
                    let quoted = match quote_chars {
                        0 => None,
                        _ => self
                            .event_text(&event.room_id, &reply.event_id)
                            .await
                            .map(|t| style::quote(&t, quote_chars)),
                    };
                    text = style::reply(nick, quoted.as_deref(), &text);
                }
                let mut lines = text_lines(target.name(), kind, &text, puppet.prefix_len())
                    .map_err(|error| ConnectorError::permanent(error.to_string()))?;
                let reply_msgid = message.reply_to.as_ref().and_then(|reply| irc_msgid(&reply.remote_ids));
                let sent = event.event_id.as_ref().filter(|_| puppet.has_cap("echo-message")).map(|event_id| Sent {
                    event_id: event_id.clone(),
                    room_id: event.room_id.clone(),
                    portal_key: portal.remote_key.clone(),
                    matrix_user: sender.to_owned(),
                });
                // draft/multiline, where offered, carries several lines as one message.
                let batch = match message.media.is_none() && lines.len() > 1 {
                    true => self.multiline_batch(
                        &puppet,
                        kind,
                        target.name(),
                        &text,
                        sent.as_ref(),
                        reply_msgid.as_deref(),
                    )?,
                    false => None,
                };
                if batch.is_none() && message.media.is_none() && lines.len() > self.config.max_lines.max(1) {
                    // Too long for the channel: one line with a link to the whole text.
                    let full = render_plain(&message.text);
                    let url = self.bridge.publish_text(&full, "message.txt").await.map_err(core_error)?;
                    let first = text.lines().next().unwrap_or_default();
                    let preview: String = first.chars().take(LONG_PREVIEW_CHARS).collect();
                    let ellipsis = if preview.len() < text.len() { "…" } else { "" };
                    let short = format!("{preview}{ellipsis} (full message: {url})");
                    lines = text_lines(target.name(), kind, &short, puppet.prefix_len())
                        .map_err(|error| ConnectorError::permanent(error.to_string()))?;
                }
                let lines = match batch {
                    Some(batch) => batch,
                    None => self.tag_lines(&puppet, lines, sent.as_ref(), reply_msgid.as_deref())?,
                };
                // Waited for before a line goes out, so an echo cannot come before anyone waits for it.
                let echo = sent.as_ref().map(|sent| lock(&self.echoes).confirmation(&sent.event_id));
                let confirmation = match self.send_lines(&puppet, lines, echo.is_none()).await {
                    Ok(receipt) => echo.map(Confirmation::Echo).or(receipt.map(Confirmation::Receipt)),
                    Err(error) => {
                        // The runtime sends the whole message again later: stop waiting for this attempt's echoes.
                        if let Some(event_id) = &event.event_id {
                            lock(&self.echoes).forget(event_id);
                        }
                        return Err(error);
                    }
                };
                self.touch(sender, Some(&event.room_id));
                let record = event.event_id.as_ref().zip(puppet.nick()).map(|(event_id, nick)| MessageMapping {
                    event_id: event_id.clone(),
                    room_id: portal.room_id.clone(),
                    portal_key: portal.remote_key.clone(),
                    remote_id: format!("{nick}/{event_id}"),
                });
                let Some(confirmation) = confirmation else { return Ok(()) };
                let sending =
                    Sending { confirmation, record, sender: sender.to_owned(), room_id: event.room_id.clone() };
                self.deliveries.confirm(sending).await
            }
            MatrixEventKind::Edit { target: edited, new_content } => {
                // IRC has no edits: one line, as people write corrections by hand, never the whole message again.
                let edit_style = self.config.messages.edits;
                if edit_style == EditStyle::Ignore {
                    return Ok(());
                }
                // An edit is one more line on IRC, so it counts against the sender's rate like a message.
                self.spam.admit(sender, 1)?;
                let puppet = self.puppet(sender, None).await?;
                if let Target::Channel(channel) = &target {
                    self.joined(&puppet, channel).await?;
                }
                let text = render_plain(&new_content.text);
                let first_line = text.lines().next().unwrap_or_default();
                let sed = match edit_style {
                    EditStyle::Sed => self
                        .event_text(&event.room_id, &edited.event_id)
                        .await
                        .and_then(|original| style::sed(&original, &text)),
                    _ => None,
                };
                let correction = sed.unwrap_or_else(|| format!("* {first_line}"));
                let lines = text_lines(target.name(), TextKind::Privmsg, &correction, puppet.prefix_len())
                    .map_err(|error| ConnectorError::permanent(error.to_string()))?;
                let first = lines.into_iter().take(1).collect();
                self.deliver(&puppet, first, sender, &event.room_id).await
            }
            MatrixEventKind::Reaction { target: reacted, key } => {
                // +draft/react (IRCv3 message-tags): a TAGMSG naming the message by its msgid.
                let Some(msgid) = irc_msgid(&reacted.remote_ids) else { return Ok(()) };
                let puppet = self.puppet(sender, None).await?;
                if let Target::Channel(channel) = &target {
                    self.joined(&puppet, channel).await?;
                } else if !puppet.is_connected() {
                    puppet.changed(JOIN_WAIT).await;
                }
                if !puppet.has_cap("message-tags") {
                    return Ok(());
                }
                let line = Line::new("TAGMSG", &[target.name()], None)
                    .map_err(|error| ConnectorError::permanent(error.to_string()))?
                    .tagged(&[("+draft/react", Some(key)), ("+draft/reply", Some(&msgid))])
                    .map_err(|error| ConnectorError::permanent(error.to_string()))?;
                self.deliver(&puppet, vec![line], sender, &event.room_id).await
            }
            MatrixEventKind::Redaction { target: redacted, reason } => {
                // draft/message-redaction, where the server offers it, removes the line on IRC too.
                if let Some(msgid) = irc_msgid(&redacted.remote_ids)
                    && let Some(puppet) = self.puppets.get(sender).map(|entry| entry.clone())
                    && puppet.has_cap("draft/message-redaction")
                {
                    let line = Line::new("REDACT", &[target.name(), &msgid], reason.as_deref())
                        .map_err(|error| ConnectorError::permanent(error.to_string()))?;
                    return self.deliver(&puppet, vec![line], sender, &event.room_id).await;
                }
                // IRC cannot unsay a line; a notice at most, and only for what reached IRC.
                if self.config.messages.redactions == RedactionStyle::Ignore || redacted.remote_ids.is_empty() {
                    return Ok(());
                }
                let Some(puppet) = self.puppets.get(sender).map(|entry| entry.clone()) else { return Ok(()) };
                let lines = text_lines(target.name(), TextKind::Notice, "deleted a message", puppet.prefix_len())
                    .map_err(|error| ConnectorError::permanent(error.to_string()))?;
                self.deliver(&puppet, lines, sender, &event.room_id).await
            }
            MatrixEventKind::Membership { user_id, membership, displayname, .. } => {
                let Target::Channel(channel) = &target else { return Ok(()) };
                match membership.as_str() {
                    "join" if user_id == sender && !self.bridge.is_bridge_user(user_id) => {
                        self.member_joined(user_id, displayname.as_deref(), &event.room_id, channel).await?;
                    }
                    "leave" | "ban" if !self.bridge.is_bridge_user(user_id) => {
                        if let Some(puppet) = self.puppets.get(user_id) {
                            puppet.part(channel, Some("Left the Matrix room"));
                        }
                    }
                    "leave" | "ban" if user_id != sender => {
                        // A Matrix user removed an IRC person: kick them on IRC if the puppet may.
                        let Some(ghost) = self.ghost_for_user_id(user_id).await else { return Ok(()) };
                        let Some(puppet) = self.puppets.get(sender).map(|entry| entry.clone()) else { return Ok(()) };
                        let nick = ghost.displayname.unwrap_or_default();
                        let reason = match &event.kind {
                            MatrixEventKind::Membership { reason: Some(reason), .. } => reason.clone(),
                            _ => format!("Kicked by {sender}"),
                        };
                        if membership == "ban"
                            && let Ok(line) = Line::new("MODE", &[channel, "+b", &format!("{nick}!*@*")], None)
                        {
                            puppet.send(line).await.map_err(|error| transient(error.to_string()))?;
                        }
                        if let Ok(line) = Line::new("KICK", &[channel, &nick], Some(&reason)) {
                            puppet.send(line).await.map_err(|error| transient(error.to_string()))?;
                        }
                    }
                    _ => {}
                }
                Ok(())
            }
            MatrixEventKind::Topic(topic) => {
                let Target::Channel(channel) = &target else { return Ok(()) };
                if portal.topic.as_deref() == Some(topic.as_str()) {
                    return Ok(());
                }
                let puppet = self.puppet(sender, None).await?;
                self.joined(&puppet, channel).await?;
                let line = Line::new("TOPIC", &[channel], Some(topic))
                    .map_err(|error| ConnectorError::permanent(error.to_string()))?;
                self.bridge.store().set_portal_topic(&portal.remote_key, Some(topic)).await?;
                self.deliver(&puppet, vec![line], sender, &event.room_id).await
            }
            _ => Ok(()),
        }
    }

    /// Queues lines on a puppet, in order; with `receipt`, returns what resolves once the server has read them.
    async fn send_lines(
        &self,
        puppet: &Connection,
        lines: Vec<Line>,
        receipt: bool,
    ) -> ConnectorResult<Option<crate::receipt::Receipt>> {
        if receipt {
            return puppet.send_with_receipt(lines).await.map(Some).map_err(|error| transient(error.to_string()));
        }
        for line in lines {
            puppet.send(line).await.map_err(|error| transient(error.to_string()))?;
        }
        Ok(None)
    }

    /// Sends a Matrix event's lines (an edit, a reaction, a topic) and leaves its queue item until the server has
    /// read them.
    async fn deliver(&self, puppet: &Connection, lines: Vec<Line>, sender: &str, room_id: &str) -> ConnectorResult<()> {
        let Some(receipt) = self.send_lines(puppet, lines, true).await? else { return Ok(()) };
        let confirmation = Confirmation::Receipt(receipt);
        let sending = Sending { confirmation, record: None, sender: sender.to_owned(), room_id: room_id.to_owned() };
        self.deliveries.confirm(sending).await
    }

    /// How long the flood throttle of a connection on this network takes per line.
    fn line_interval(&self) -> Duration {
        Duration::from_secs_f64(1.0 / self.config.flood.lines_per_second.max(0.01))
    }

    /// Tags a Matrix message's lines: the first with `+draft/reply` (message-tags), each with a `label` when the
    /// puppet's echoes are awaited (echo-message, labeled-response; without labels they are matched by text).
    fn tag_lines(
        &self,
        puppet: &Connection,
        lines: Vec<Line>,
        sent: Option<&Sent>,
        reply_msgid: Option<&str>,
    ) -> ConnectorResult<Vec<Line>> {
        let owner = sent.map(|sent| sent.matrix_user.as_str()).unwrap_or_default();
        let mut tagged = Vec::with_capacity(lines.len());
        for (index, line) in lines.into_iter().enumerate() {
            let mut line_tags: Vec<(&str, Option<&str>)> = Vec::new();
            if index == 0
                && puppet.has_cap("message-tags")
                && let Some(msgid) = reply_msgid
            {
                line_tags.push(("+draft/reply", Some(msgid)));
            }
            let label = match (sent, sent_text(&line)) {
                (Some(sent), Some((to, text))) => lock(&self.echoes).expect(
                    owner,
                    &to,
                    &text,
                    sent.clone(),
                    puppet.has_cap("labeled-response"),
                    self.line_interval(),
                    tokio::time::Instant::now(),
                ),
                _ => None,
            };
            if let Some(label) = &label {
                line_tags.push(("label", Some(label)));
            }
            tagged.push(line.tagged(&line_tags).map_err(|error| ConnectorError::permanent(error.to_string()))?);
        }
        Ok(tagged)
    }

    /// A Matrix message of several lines as one `draft/multiline` batch, when the puppet's server offers it and the
    /// text is within its limits; its echo is awaited by the opener's label.
    fn multiline_batch(
        &self,
        puppet: &Connection,
        kind: TextKind,
        target: &str,
        text: &str,
        sent: Option<&Sent>,
        reply_msgid: Option<&str>,
    ) -> ConnectorResult<Option<Vec<Line>>> {
        let command = match kind {
            TextKind::Privmsg => "PRIVMSG",
            TextKind::Notice => "NOTICE",
            // CTCP ACTION has no multiline form.
            TextKind::Action => return Ok(None),
        };
        let Some(limits) = multiline::limits(puppet.cap_value("draft/multiline").as_deref()) else { return Ok(None) };
        if !puppet.has_cap("batch") {
            return Ok(None);
        }
        let label = match sent {
            Some(sent) if puppet.has_cap("labeled-response") => lock(&self.echoes).expect(
                &sent.matrix_user,
                target,
                text,
                sent.clone(),
                true,
                self.line_interval(),
                tokio::time::Instant::now(),
            ),
            // An echoed batch cannot be matched without a label: send the usual way.
            Some(_) => return Ok(None),
            None => None,
        };
        let mut opener: Vec<(&str, Option<&str>)> = Vec::new();
        if let Some(msgid) = reply_msgid.filter(|_| puppet.has_cap("message-tags")) {
            opener.push(("+draft/reply", Some(msgid)));
        }
        if let Some(label) = &label {
            opener.push(("label", Some(label)));
        }
        let reference = format!("ml{:08x}", rand::random::<u32>());
        let built = multiline::batch(command, target, text, puppet.prefix_len(), &reference, limits, &opener);
        let batch = built.map_err(|error| ConnectorError::permanent(error.to_string()))?;
        if batch.is_none()
            && let Some(sent) = sent
        {
            lock(&self.echoes).forget(&sent.event_id);
        }
        Ok(batch)
    }

    /// Matrix typing (`m.typing`) as `+typing` TAGMSGs (IRCv3 typing client tag) from the puppets of those who
    /// started or stopped, to the channel or, in a DM portal, to the nick; only puppets already in the channel (or
    /// connected, for a DM) take part, no connection is made for typing.
    async fn matrix_typing(&self, portal: &Portal, room_id: &str, user_ids: &[String]) {
        let now: HashSet<String> = user_ids.iter().filter(|user| self.puppets.contains_key(*user)).cloned().collect();
        let before = lock(&self.typing).insert(room_id.to_owned(), now.clone()).unwrap_or_default();
        let started = now.difference(&before).map(|user| (user, "active"));
        let stopped = before.difference(&now).map(|user| (user, "done"));
        for (user, state) in started.chain(stopped) {
            let Some(target) = Target::of(portal, user) else { continue };
            let Some(puppet) = self.puppets.get(user).map(|entry| entry.clone()) else { continue };
            let there = match &target {
                Target::Channel(channel) => puppet.channel_status(channel) == ChannelStatus::Joined,
                Target::Nick(_) => puppet.is_connected(),
            };
            if !puppet.has_cap("message-tags") || !there {
                continue;
            }
            let line = Line::new("TAGMSG", &[target.name()], None).map(|line| line.tagged(&[("+typing", Some(state))]));
            if let Ok(Ok(line)) = line {
                // Typing is a hint: a connection that is down just misses it.
                let _ = puppet.send(line).await;
            }
        }
    }

    /// A Matrix user invited one of our ghosts to a direct chat: the ghost joins and the room becomes the DM portal.
    async fn maybe_direct_chat(&self, event: &MatrixEvent, sender: &str) -> ConnectorResult<()> {
        let MatrixEventKind::Membership { user_id, membership, is_direct: true, .. } = &event.kind else {
            return Ok(());
        };
        if membership != "invite" {
            return Ok(());
        }
        let Some(ghost) = self.ghost_for_user_id(user_id).await else { return Ok(()) };
        let nick = ghost.displayname.clone().unwrap_or_default();
        let intent = self.bridge.sync_ghost(&ghost).await.map_err(core_error)?;
        let room: ruma::OwnedRoomId = event.room_id.parse().map_err(|_| ConnectorError::permanent("bad room ID"))?;
        intent.ensure_joined(&room).await?;
        self.bridge
            .store()
            .upsert_portal(&Portal {
                remote_key: dm_key(&self.id, sender, &nick),
                room_id: event.room_id.clone(),
                alias: None,
                name: None,
                topic: None,
                metadata: json!({"network": self.id, "nick": nick}),
            })
            .await?;
        self.puppet(sender, None).await?;
        Ok(())
    }

    /// A Matrix user is in the portal `room_id` of `channel`: their puppet connects and joins the channel, or, under
    /// the privacy rule, they are removed when it is refused outright (a failed attempt is watched from
    /// [`ConnEvent::Disconnected`]).
    pub(crate) async fn member_joined(
        &self,
        user_id: &str,
        displayname: Option<&str>,
        room_id: &str,
        channel: &str,
    ) -> ConnectorResult<()> {
        if self.privacy.enabled()
            && let Some(why) = self.limit_reached(user_id)
        {
            self.privacy.refused(user_id, &[room_id.to_owned()], &why).await;
            return Ok(());
        }
        let puppet = self.puppet(user_id, displayname).await?;
        self.touch(user_id, Some(room_id));
        puppet.want_channel(channel);
        self.privacy.watch_join(user_id, puppet, channel, room_id);
        Ok(())
    }

    /// The Matrix members of a portal get their puppets (see [`Network::member_joined`]): when it is linked, and at
    /// start under the privacy rule.
    pub(crate) async fn connect_members(&self, room_id: &str, channel: &str) {
        let Ok(room) = room_id.parse::<ruma::OwnedRoomId>() else { return };
        let members = match self.bridge.matrix().bot().joined_members(&room).await {
            Ok(members) => members,
            Err(error) => {
                tracing::warn!(network = %self.id, %room_id, %error, "cannot list the members of a linked room");
                return;
            }
        };
        for member in members.iter().map(|member| member.as_str()).filter(|m| !self.bridge.is_bridge_user(m)) {
            if let Err(error) = self.member_joined(member, None, room_id, channel).await {
                tracing::warn!(network = %self.id, %room_id, matrix_user = %member, %error, "cannot connect a member");
            }
        }
    }

    /// A puppet lost its connection, or an attempt to connect failed: unless it was closed on purpose, its user is
    /// removed from its portals if it has not registered within the grace period. A puppet still waiting for its
    /// turn to connect (the network's reconnect cap) has not failed and is left alone.
    fn watch_lost_puppet(&self, user_id: &str) {
        let Some(puppet) = self.puppets.get(user_id).map(|entry| entry.clone()) else { return };
        let keys = self.portal_keys(&puppet);
        self.privacy.watch(user_id, puppet, keys);
    }

    /// A puppet was closed on purpose (idle, `quit`): under the privacy rule its user leaves its portals too, for
    /// `why`; they come back by rejoining (or, under `block-messages`, once connected again).
    pub(crate) async fn puppet_closed(&self, user_id: &str, puppet: &Connection, why: &str) {
        if self.privacy.enabled() {
            let rooms = self.privacy.rooms_of(&self.portal_keys(puppet)).await;
            self.privacy.refused(user_id, &rooms, why).await;
        }
    }

    /// The portal keys of the channels a puppet is in or wants.
    fn portal_keys(&self, puppet: &Connection) -> Vec<String> {
        puppet
            .channels()
            .iter()
            .filter_map(|channel| self.portals.get(&casefold(channel)).map(|key| key.clone()))
            .collect()
    }

    /// Stops every connection of the network.
    pub(crate) fn shutdown(&self) {
        for puppet in self.puppets.iter() {
            puppet.quit("Bridge shutting down");
        }
        self.listener.quit("Bridge shutting down");
    }
}

/// Where a portal's messages go on IRC.
enum Target {
    Channel(String),
    Nick(String),
}

impl Target {
    /// Where what `user` does in `portal` goes: its channel, or, in a DM portal of theirs, the nick it is with.
    fn of(portal: &Portal, user: &str) -> Option<Self> {
        match (split_portal_key(&portal.remote_key), split_dm_key(&portal.remote_key)) {
            (Some((_, channel)), _) => Some(Self::Channel(Network::channel_name(portal, channel))),
            (None, Some((_, owner, nick))) if owner == user => {
                let nick = portal.metadata.get("nick").and_then(|nick| nick.as_str()).unwrap_or(nick);
                Some(Self::Nick(nick.to_owned()))
            }
            _ => None,
        }
    }

    fn name(&self) -> &str {
        match self {
            Self::Channel(name) | Self::Nick(name) => name,
        }
    }
}

/// What kind of Matrix message an IRC line is, and its text; `None` for CTCP other than ACTION.
fn classify(text: &str, notice: bool) -> Option<(MessageType, &str)> {
    if let Some(ctcp) = text.strip_prefix('\x01') {
        let ctcp = ctcp.strip_suffix('\x01').unwrap_or(ctcp);
        return ctcp.strip_prefix("ACTION ").map(|action| (MessageType::Emote, action));
    }
    Some((if notice { MessageType::Notice } else { MessageType::Text }, text))
}

/// The message-map ID of an IRC message: the sender's nick, then the IRCv3 `msgid` when the server gives one.
fn remote_message_id(nick: &str, message: &Message) -> String {
    let msgid = message
        .tags
        .iter()
        .flatten()
        .find(|tag| tag.0 == "msgid")
        .and_then(|tag| tag.1.clone())
        .unwrap_or_else(|| format!("{:016x}", rand::random::<u64>()));
    format!("{nick}/{msgid}")
}

/// The IRCv3 msgid among a Matrix event's remote IDs (`nick/msgid`), leaving out the IDs recorded before the
/// echo came (`nick/$event_id`).
fn irc_msgid(remote_ids: &[String]) -> Option<String> {
    remote_ids
        .iter()
        .rev()
        .filter_map(|id| id.split_once('/').map(|(_, msgid)| msgid))
        .find(|msgid| !msgid.starts_with('$'))
        .map(str::to_owned)
}

/// The channel a backfilled PRIVMSG or NOTICE was said in.
fn backfill_target(message: &Message) -> Option<&str> {
    match &message.command {
        Command::PRIVMSG(target, _) | Command::NOTICE(target, _) => Some(target),
        _ => None,
    }
}

/// The target and text of a PRIVMSG or NOTICE line we are about to send, as its echo will carry them.
fn sent_text(line: &Line) -> Option<(String, String)> {
    let text = String::from_utf8_lossy(line.as_bytes());
    match Message::from_str(text.trim_end_matches(['\r', '\n'])).ok()?.command {
        Command::PRIVMSG(target, text) | Command::NOTICE(target, text) => Some((target, text)),
        _ => None,
    }
}

/// Whether an IRC ban mask (`*` and `?` wildcards, RFC 1459 case folding) matches `nick!user@host`.
fn mask_matches(mask: &str, full: &str) -> bool {
    fn matches(pattern: &[char], text: &[char]) -> bool {
        match pattern.split_first() {
            None => text.is_empty(),
            Some(('*', rest)) => (0..=text.len()).any(|skip| matches(rest, &text[skip..])),
            Some((&first, rest)) => {
                text.split_first().is_some_and(|(&c, tail)| (first == '?' || first == c) && matches(rest, tail))
            }
        }
    }
    let pattern: Vec<char> = casefold(mask).chars().collect();
    let text: Vec<char> = casefold(full).chars().collect();
    matches(&pattern, &text)
}

/// Matrix power level for IRC channel-mode prefixes: founders, admins and ops 50, halfops 25, voice 10.
fn power_level(prefixes: &str) -> i64 {
    prefixes
        .chars()
        .map(|prefix| match prefix {
            '~' | '&' | '@' => 50,
            '%' => 25,
            '+' => 10,
            _ => 0,
        })
        .max()
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn irc_lines_are_classified() {
        assert_eq!(classify("hi", false), Some((MessageType::Text, "hi")));
        assert_eq!(classify("hi", true), Some((MessageType::Notice, "hi")));
        assert_eq!(classify("\x01ACTION waves\x01", false), Some((MessageType::Emote, "waves")));
        assert_eq!(classify("\x01VERSION\x01", false), None);
        assert_eq!(power_level("@+"), 50);
        assert_eq!(power_level("+"), 10);
        assert_eq!(power_level(""), 0);
    }

    #[test]
    fn ban_masks_match_with_wildcards() {
        for (mask, full, expected) in [
            ("alice!*@*", "Alice!alice@127.0.0.1", true),
            ("*!alice@*", "al!alice@host", true),
            ("a?ice!*@127.*", "alice!x@127.0.0.1", true),
            ("bob!*@*", "alice!alice@host", false),
            ("*", "anyone!u@h", true),
            ("alice!*@*.example", "alice!a@127.0.0.1", false),
        ] {
            assert_eq!(mask_matches(mask, full), expected, "{mask} ~ {full}");
        }
    }
}
