//! One IRC network as the bridge runs it: the bridge bot's listener connection in every bridged channel, one
//! puppet connection per Matrix user, and the translation of what happens on either side.

mod channels;
mod events;
mod from_irc;
mod metrics;
mod puppets;
mod render;
mod to_irc;

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex},
    time::Duration,
};

use dashmap::DashMap;
use irc::proto::Message;
use lattice_bridge_core::{
    BridgeHandle, ConnectorError,
    connector::{ConnectorResult, GhostSpec},
    event::{RemoteEvent, RemoteEventKind},
};
use tokio::sync::{broadcast, mpsc};

use crate::{
    config::{IrcSection, NetworkConfig},
    conn::{Connection, Dialer, Forward, Settings, Traffic},
    delivery::Deliveries,
    edge::EdgeLink,
    ghosts,
    ident::IdentRegistry,
    ids::{PortalKind, Template, casefold, is_valid_nick, sanitise_username, unescape_nick},
    ircv3::{
        echo::Echoes,
        netsplit::Netsplits,
        people::{self, People},
    },
    privacy::Privacy,
    spam::SpamGuard,
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

fn transient(message: impl Into<String>) -> ConnectorError {
    ConnectorError::Transient { message: message.into(), retry_after: Some(Duration::from_millis(500)) }
}

/// A running network.
pub(crate) struct Network {
    id: String,
    config: NetworkConfig,
    bridge: BridgeHandle,
    users: Template,
    aliases: Template,
    listener: Connection,
    puppets: Arc<DashMap<String, Connection>>,
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
    /// Where the network's connections are opened (here or on the edge).
    dialer: Dialer,
    ident: IdentRegistry,
    /// Replies to `whois` and similar, by the puppet's owner: where to say what the server answered.
    pending_replies: DashMap<String, mpsc::Sender<Message>>,
    /// How long a puppet may go unused before it is closed, if ever.
    idle_timeout: Option<Duration>,
    /// When each puppet's Matrix user last used it, and in which room.
    activity: DashMap<String, Activity>,
    /// Everything the bridge bot's connection hears, for whoever waits for an answer (NAMES, an operator's reply).
    taps: broadcast::Sender<Arc<Message>>,
    /// Link requests waiting for an operator's answer: casefolded operator nick → the room asking.
    link_requests: DashMap<String, String>,
    /// Libera.Chat's privacy rule for Matrix users without a working connection.
    privacy: Privacy,
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
        edge: Option<EdgeLink>,
    ) -> ConnectorResult<Arc<Self>> {
        let server_name = bridge.server_name().to_owned();
        let (events, receiver) = mpsc::channel(1024);
        let dialer = Dialer::new(id, config.reconnect.max_concurrent, events, edge);
        let listener = dialer.open(bot_settings(id, config, ident.clone()));
        let privacy_bridge = bridge.clone();
        let deliveries_bridge = bridge.clone();
        let network = Arc::new(Self {
            id: id.into(),
            config: config.clone(),
            users: Template::new(&section.user_template, "{nick}", id, &server_name),
            aliases: Template::new(&section.alias_template, "{channel}", id, &server_name),
            bridge,
            listener,
            puppets: Arc::new(DashMap::new()),
            puppet_nicks: DashMap::new(),
            puppet_masks: DashMap::new(),
            ghosts: Mutex::new(HashMap::new()),
            members: Mutex::new(HashMap::new()),
            portals: DashMap::new(),
            dialer,
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
        for portal in network.bridge.portals().all().await? {
            if let Some(PortalKind::Channel { network: network_id, channel }) = PortalKind::parse(&portal.remote_key)
                && network_id == id
            {
                network.add_channel(&portal, channel);
                channel_portals.push((portal.room_id.clone(), Self::channel_name(&portal, channel)));
            }
        }
        tokio::spawn(Arc::clone(&network).process(receiver));
        network.adopt_held_puppets();
        if network.privacy.enabled() {
            // Under the privacy rule everyone in a portal is connected or removed, also after a restart.
            let restoring = Arc::clone(&network);
            tokio::spawn(async move {
                for (room_id, channel) in channel_portals {
                    restoring.connect_members(&room_id, &channel).await;
                }
            });
        }
        network.report_metrics();
        if let Some(timeout) = network.idle_timeout {
            tokio::spawn(Self::reap_idle(Arc::downgrade(&network), timeout));
        }
        Ok(network)
    }

    /// The runtime handle.
    pub(crate) fn bridge(&self) -> &BridgeHandle {
        &self.bridge
    }

    /// The network's ID in the configuration (`libera`).
    pub(crate) fn id(&self) -> &str {
        &self.id
    }

    /// The network's configuration.
    pub(crate) fn config(&self) -> &NetworkConfig {
        &self.config
    }

    /// The bridge bot's own connection.
    pub(crate) fn bot(&self) -> &Connection {
        &self.listener
    }

    /// Everything the bridge bot's connection hears from now on, for whoever waits for an answer (NAMES, an
    /// operator's reply).
    pub(crate) fn hear(&self) -> broadcast::Receiver<Arc<Message>> {
        self.taps.subscribe()
    }

    /// Link requests waiting for an operator's answer: casefolded operator nick → the room asking.
    pub(crate) fn link_requests(&self) -> &DashMap<String, String> {
        &self.link_requests
    }

    /// Whether Libera.Chat's privacy rule applies: only Matrix users connected to IRC may read a portal.
    pub(crate) fn privacy_enabled(&self) -> bool {
        self.privacy.enabled()
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
        let stored = self.bridge.ghosts().by_user(user_id).await.ok().flatten();
        let current = stored
            .and_then(|ghost| ghost.remote_id.strip_prefix(&format!("{}/", self.id)).map(str::to_owned))
            .filter(|nick| is_valid_nick(nick));
        Some(self.ghost(current.as_deref().unwrap_or(&nick)).await)
    }

    /// The ghost of `nick`: the one its person had under an earlier nick (this session or, through the store,
    /// before a restart), else the one the nick names.
    async fn ghost(&self, nick: &str) -> GhostSpec {
        if let Some(known) = lock(&self.ghosts).get(&casefold(nick)) {
            return known.clone();
        }
        let ghost = ghosts::from_store(self.bridge.ghosts(), &self.users, &self.id, nick).await;
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

    /// Tells a Matrix user about their connection: in their admin room, else `room_id` (the room they last used).
    async fn tell(&self, user_id: &str, room_id: Option<&str>, text: &str) {
        let admin_room = self.bridge.settings().admin_room(user_id).await.ok().flatten();
        let room_id = room_id.map(str::to_owned).or_else(|| self.activity.get(user_id)?.room_id.clone());
        let Some(room) = admin_room.or(room_id) else { return };
        if let Err(error) = self.bridge.notice(&room, text).await {
            tracing::warn!(network = %self.id, matrix_user = %user_id, %error, "cannot tell a user about their connection");
        }
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
            let stored = self.bridge.settings().set(&ghost.user_id, GHOST_ACCOUNT_SETTING, account.as_deref());
            if let Err(error) = stored.await {
                tracing::warn!(network = %self.id, %nick, %error, "cannot store a ghost's account");
            }
        }
    }

    /// Stops every connection of the network.
    pub(crate) fn shutdown(&self) {
        for puppet in self.puppets.iter() {
            puppet.quit("Bridge shutting down");
        }
        self.listener.quit("Bridge shutting down");
    }
}

/// The settings of the bridge bot's own connection to a network.
fn bot_settings(id: &str, config: &NetworkConfig, ident: IdentRegistry) -> Settings {
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
        ident,
        // The dialer counts the network's connections together.
        traffic: Traffic::default(),
    }
}
