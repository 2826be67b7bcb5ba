//! XMPP MUCs as Matrix portals ([XEP-0045: Multi-User Chat](https://xmpp.org/extensions/xep-0045.html)).
//!
//! For each portal the gateway keeps one *listener* occupant in the MUC (`{gateway}/lattice`, nick
//! `muc.listener_nick`): every occupant receives every groupchat message and presence, so only what reaches the
//! listener is bridged into Matrix, exactly once and in the MUC's order. Each Matrix user in a portal (on joining
//! it, or on first speaking there) joins the MUC as their own occupant (`alice\40example.org@{gateway}/matrix`)
//! under their display name; the MUC's reflection of their message is the proof of delivery, and a message without
//! one is retried by the runtime, so a dropped connection loses nothing.

use std::{
    collections::{HashMap, HashSet, VecDeque},
    str::FromStr,
    sync::{Arc, Mutex},
    time::Duration,
};

use lattice_bridge_core::{
    BridgeHandle, ConnectorError,
    connector::{BridgeInfoSpec, ConnectorResult, GhostSpec, PortalSpec},
    event::{Media, RemoteEvent, RemoteEventKind},
    store::{MessageMapping, Portal},
};
use serde_json::json;
use tokio::sync::oneshot;
use tokio_xmpp::{
    Stanza,
    parsers::{
        date::DateTime,
        delay::Delay,
        disco::{DiscoInfoQuery, DiscoInfoResult},
        iq::Iq,
        jid::{BareJid, FullJid, Jid},
        message::{Id, Lang, Message, MessageType as XmppMessageType},
        minidom::Element,
        muc::{
            Muc,
            muc::History,
            user::{MucUser, Status},
        },
        ns,
        oob::Oob,
        presence::{Presence, Type as PresenceType},
        stanza_error::{DefinedCondition, ErrorType, StanzaError},
    },
};

use crate::{
    addressing::{Addressing, XmppIdentity},
    component::{Link, LinkState},
    config::XmppSection,
    messages::Inbound,
    skim::{DropStanza, StanzaHead},
    xep::ids::MessageIds,
};

/// The resource of the listener occupant and of Matrix users' occupants.
pub(crate) const LISTENER_RESOURCE: &str = "lattice";
const PUPPET_RESOURCE: &str = "matrix";
/// How many recent message keys per MUC are remembered to drop history replayed after a rejoin.
const RECENT_KEYS: usize = 2048;
/// Longest display name given to a ghost, in characters (Synapse refuses more than 256).
const MAX_DISPLAYNAME_CHARS: usize = 200;
/// Longest nick the gateway asks for, in characters.
const MAX_NICK_CHARS: usize = 64;
/// How often a conflicting nick is retried with a numbered suffix.
const NICK_ATTEMPTS: usize = 8;
/// How long a sender waits before retrying while the component is offline.
const OFFLINE_RETRY: Duration = Duration::from_secs(1);

/// The portal key of a MUC.
pub fn portal_key(room: &BareJid) -> String {
    format!("muc/{room}")
}

/// The MUC a portal bridges, if it bridges one.
pub fn portal_room(portal: &Portal) -> Option<BareJid> {
    portal.metadata.get("muc").and_then(|muc| muc.as_str()).and_then(|muc| BareJid::from_str(muc).ok())
}

/// The portal spec of a MUC, for alias queries and on-demand creation.
pub fn portal_spec(addressing: &Addressing, room: &BareJid) -> PortalSpec {
    let name = room.node().map_or_else(|| room.to_string(), |node| node.to_string());
    PortalSpec {
        remote_key: portal_key(room),
        alias_localpart: Some(addressing.muc_alias_localpart(room)),
        name: Some(name.clone()),
        topic: None,
        bridge_info: BridgeInfoSpec {
            network_id: room.domain().to_string(),
            network_name: room.domain().to_string(),
            channel_id: room.to_string(),
            channel_name: name,
        },
        public: true,
        direct: None,
        metadata: json!({"muc": room.as_str()}),
    }
}

/// Why joining a MUC failed.
#[derive(Debug, Clone)]
enum JoinError {
    /// The nick is taken.
    Conflict,
    /// The MUC refused for another reason, e.g. a ban or a members-only room.
    Refused(String),
}

/// One occupant of a MUC that is not the bridge's own.
#[derive(Debug, Clone)]
struct Occupant {
    identity: XmppIdentity,
}

/// A Matrix user's occupant in a MUC.
#[derive(Debug, Clone)]
struct Puppet {
    nick: String,
    /// The connection on which the MUC confirmed the join; anything else means not joined (now).
    joined_generation: Option<u64>,
}

/// What the gateway knows about one bridged MUC. Memory only: the store holds the portal, and everything here is
/// learnt again from the MUC after a (re)join.
#[derive(Debug, Default)]
struct RoomState {
    listener_nick: Option<String>,
    listener_generation: Option<u64>,
    occupants: HashMap<String, Occupant>,
    puppets: HashMap<String, Puppet>,
    /// Nicks the bridge's own occupants are joining with: the MUC may announce such a join to the listener before
    /// it answers the joiner, and the bridge must not mistake its own occupant for an XMPP person.
    joining: HashSet<String>,
    recent: VecDeque<String>,
    recent_set: HashSet<String>,
    last_seen: Option<DateTime>,
    topic: Option<String>,
    /// The power level last given to each ghost in the portal, by Matrix user ID.
    levels: crate::affiliations::KnownLevels,
    /// Whether the MUC's disco#info advertises XEP-0421, so its occupant-ids can be trusted.
    occupant_ids: bool,
}

impl RoomState {
    fn is_ours(&self, nick: &str) -> bool {
        self.listener_nick.as_deref() == Some(nick)
            || self.joining.contains(nick)
            || self.puppets.values().any(|puppet| puppet.nick == nick)
    }

    /// Remembers a message key; false when it was seen before.
    fn remember(&mut self, key: String) -> bool {
        if !self.recent_set.insert(key.clone()) {
            return false;
        }
        self.recent.push_back(key);
        if self.recent.len() > RECENT_KEYS
            && let Some(old) = self.recent.pop_front()
        {
            self.recent_set.remove(&old);
        }
        true
    }
}

type JoinWaiter = oneshot::Sender<Result<String, JoinError>>;
/// Answered with the stanza-id the MUC stamped on the reflection, if it stamped one.
type AckWaiter = oneshot::Sender<Result<Option<String>, StanzaError>>;
/// Hears of a sent message's reflection (see [`AckWaiter`]).
type Reflection = oneshot::Receiver<Result<Option<String>, StanzaError>>;

/// The MUC side of the gateway: state of each bridged MUC, and the waits for the server's answers.
pub struct Gateway {
    pub(crate) addressing: Addressing,
    pub(crate) section: XmppSection,
    pub(crate) bridge: BridgeHandle,
    pub(crate) link: Link,
    /// The Matrix rooms XMPP users occupy as gateway MUCs.
    pub(crate) hosted: crate::hosted::Hosted,
    /// History and member names for gateway MUCs; `None` when the bridge has no appservice token to ask with.
    pub(crate) matrix_api: Option<crate::hosted::MatrixApi>,
    pub(crate) timeout: Duration,
    /// XEP-0410 self-pings in flight and when each MUC was last heard from.
    pub(crate) self_pings: crate::self_ping::SelfPings,
    rooms: Mutex<HashMap<BareJid, RoomState>>,
    joins: Mutex<HashMap<(BareJid, FullJid), JoinWaiter>>,
    acks: Mutex<HashMap<String, AckWaiter>>,
    /// One join at a time per MUC, so concurrent callers never send two joins for one occupant.
    join_locks: Mutex<HashMap<BareJid, Arc<tokio::sync::Mutex<()>>>>,
    /// Who was typing in each Matrix room, to send XMPP chat states only for changes.
    pub(crate) typing: crate::messages::TypingState,
    /// Archive queries to MUCs waiting for their results.
    pub(crate) archive: crate::history::ArchiveQueries,
    /// Matrix users' avatars, by URI.
    pub(crate) avatars: crate::xep::avatar::AvatarCache,
    /// IQs the gateway sent and waits for.
    pub(crate) requests: crate::requests::IqRequests,
    /// When each XMPP account's XEP-0084 avatar was last asked for.
    pub(crate) pep_checked: crate::xep::user_avatar::Checked,
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.debug_struct("Gateway").field("gateway", &self.addressing.gateway()).finish_non_exhaustive()
    }
}

pub(crate) fn transient(message: impl Into<String>) -> ConnectorError {
    ConnectorError::Transient { message: message.into(), retry_after: Some(OFFLINE_RETRY) }
}

pub(crate) fn new_id() -> String {
    format!("lattice-{:016x}", rand::random::<u64>())
}

/// `message` as a Matrix user's message leaves for XMPP: with `body` (refused when longer than the section allows), a
/// new ID that is also its XEP-0359 origin-id, and `payloads`. The caller sets who it is from. Returns it and its ID.
pub(crate) fn outgoing(
    section: &XmppSection,
    mut message: Message,
    body: Option<String>,
    payloads: Vec<Element>,
) -> ConnectorResult<(Message, String)> {
    if let Some(body) = body {
        section.check_message_size(&body)?;
        message = message.with_body(Lang::new(), body);
    }
    let id = new_id();
    message.id = Some(Id(id.clone()));
    message.payloads.push(crate::xep::ids::origin_id(&id).into());
    message.payloads.extend(payloads);
    Ok((message, id))
}

/// Picks the MUCs' copies of groupchat messages for Matrix users' occupants (`…@{gateway}/matrix`, a gateway MUC's
/// JID excepted) to be skimmed off the component stream unparsed ([`crate::skim`]): only the listener's copy is
/// bridged, and it carries the reflection a Matrix user's message waits for too. A `to` with an entity reference is
/// kept, since the gateway's own JIDs need none.
pub fn occupant_copies(gateway: &str) -> DropStanza {
    let gateway = gateway.to_owned();
    Arc::new(move |head: &StanzaHead<'_>| {
        head.name == b"message"
            && head.kind == Some(b"groupchat")
            && head.to.and_then(|to| std::str::from_utf8(to).ok()).is_some_and(|to| is_matrix_occupant(to, &gateway))
    })
}

/// Whether `jid` is a Matrix user's occupant JID on `gateway`, as the gateway writes them.
fn is_matrix_occupant(jid: &str, gateway: &str) -> bool {
    let Some((bare, resource)) = jid.split_once('/') else { return false };
    let Some((node, domain)) = bare.split_once('@') else { return false };
    resource == PUPPET_RESOURCE
        && domain.eq_ignore_ascii_case(gateway)
        && !node.is_empty()
        && !jid.contains('&')
        && crate::hosted::alias_of_room(node).is_none()
}

fn error_text(error: &StanzaError) -> String {
    let condition = format!("{:?}", error.defined_condition);
    match error.texts.values().next() {
        Some(text) => format!("{condition}: {text}"),
        None => condition,
    }
}

/// A nick made from a display name: one line, no control characters, not too long, never empty.
fn sanitize_nick(name: &str) -> String {
    let nick: String =
        name.chars().map(|c| if c.is_control() { ' ' } else { c }).take(MAX_NICK_CHARS).collect::<String>();
    let nick = nick.trim();
    if nick.is_empty() { "matrix user".into() } else { nick.to_owned() }
}

pub(crate) fn find_payload<T: TryFrom<Element>>(payloads: &[Element], name: &str, namespace: &str) -> Option<T> {
    payloads.iter().find(|element| element.is(name, namespace)).and_then(|element| T::try_from(element.clone()).ok())
}

impl Gateway {
    /// A gateway on a supervised link.
    pub fn new(
        section: XmppSection,
        addressing: Addressing,
        bridge: BridgeHandle,
        link: Link,
        matrix_api: Option<crate::hosted::MatrixApi>,
    ) -> Self {
        Self {
            hosted: crate::hosted::Hosted::default(),
            matrix_api,
            timeout: Duration::from_secs(section.component.response_timeout_secs),
            self_pings: crate::self_ping::SelfPings::default(),
            addressing,
            section,
            bridge,
            link,
            rooms: Mutex::default(),
            joins: Mutex::default(),
            acks: Mutex::default(),
            join_locks: Mutex::default(),
            typing: crate::messages::TypingState::default(),
            archive: crate::history::ArchiveQueries::default(),
            avatars: crate::xep::avatar::AvatarCache::default(),
            requests: crate::requests::IqRequests::default(),
            pep_checked: crate::xep::user_avatar::Checked::default(),
        }
    }

    /// The bridge's mappings.
    pub fn addressing(&self) -> &Addressing {
        &self.addressing
    }

    pub(crate) fn listener_jid(&self) -> FullJid {
        BareJid::from_str(self.addressing.gateway())
            .and_then(|jid| jid.with_resource_str(LISTENER_RESOURCE))
            .expect("the gateway domain was validated")
    }

    pub(crate) fn gateway_jid(&self) -> Jid {
        Jid::new(self.addressing.gateway()).expect("the gateway domain was validated")
    }

    fn rooms(&self) -> std::sync::MutexGuard<'_, HashMap<BareJid, RoomState>> {
        self.rooms.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Records a message taken from the MUC's archive before the first join: remembered so the join's history does
    /// not bring it again, and the join asks for history since it. False when it was seen already.
    pub(crate) fn note_archived(&self, room: &BareJid, key: String, stamp: DateTime) -> bool {
        let mut rooms = self.rooms();
        let state = rooms.entry(room.clone()).or_default();
        if state.last_seen.as_ref().is_none_or(|seen| seen.0 < stamp.0) {
            state.last_seen = Some(stamp);
        }
        state.remember(key)
    }

    /// Whether a nick in a MUC is one of the bridge's own occupants.
    pub(crate) fn is_own_nick(&self, room: &BareJid, nick: &str) -> bool {
        self.rooms().get(room).is_some_and(|state| state.is_ours(nick))
    }

    /// The gateway JID a Matrix user speaks from in a MUC, if their occupant is joined on the current connection
    /// (ephemeral traffic such as chat states never makes the gateway join).
    pub(crate) fn joined_occupant(&self, room: &BareJid, user_id: &str) -> Option<FullJid> {
        let generation = self.link.state().generation;
        let joined = self.rooms().get(room)?.puppets.get(user_id)?.joined_generation == Some(generation);
        if !joined {
            return None;
        }
        self.addressing.puppet_jid(user_id)?.with_resource_str(PUPPET_RESOURCE).ok()
    }

    /// Whether a bridged MUC stamps occupant-ids (XEP-0421) that can be trusted: it said so in its disco#info.
    pub(crate) fn trusts_occupant_ids(&self, room: &BareJid) -> bool {
        self.rooms().get(room).is_some_and(|state| state.occupant_ids)
    }

    /// Asks a MUC what it does (XEP-0030) and notes whether it stamps occupant-ids. Not on the stanza loop.
    pub(crate) async fn learn_muc_features(&self, room: &BareJid) {
        let query = Iq::from_get(String::new(), DiscoInfoQuery { node: None })
            .with_from(self.listener_jid().into())
            .with_to(room.clone().into());
        let Some(Iq::Result { payload: Some(payload), .. }) = self.request(query).await else { return };
        let Ok(info) = DiscoInfoResult::try_from(payload) else { return };
        let occupant_ids = info.features.iter().any(|feature| feature == ns::OID);
        self.rooms().entry(room.clone()).or_default().occupant_ids = occupant_ids;
    }

    /// Whether a JID is one of the MUCs the gateway bridges (its private messages are not direct chats).
    pub(crate) fn is_bridged_muc(&self, jid: &BareJid) -> bool {
        self.rooms().contains_key(jid)
    }

    fn online(&self) -> ConnectorResult<LinkState> {
        let state = self.link.state();
        if state.online { Ok(state) } else { Err(transient("the XMPP component is reconnecting")) }
    }

    pub(crate) async fn send(&self, stanza: impl Into<Stanza>) -> ConnectorResult<()> {
        self.link.send(stanza).await.map_err(|error| transient(error.to_string()))
    }

    fn join_lock(&self, room: &BareJid) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.join_locks.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        Arc::clone(locks.entry(room.clone()).or_default())
    }

    /// Makes sure the portal's MUC has a listener on the current connection.
    pub async fn ensure_listening(&self, room: &BareJid, portal: &Portal) -> ConnectorResult<()> {
        let lock = self.join_lock(room);
        let _guard = lock.lock().await;
        let state = self.online()?;
        let (joined, history) = {
            let mut rooms = self.rooms();
            let entry = rooms
                .entry(room.clone())
                .or_insert_with(|| RoomState { topic: portal.topic.clone(), ..RoomState::default() });
            (entry.listener_generation == Some(state.generation), entry.last_seen.clone())
        };
        if joined {
            return Ok(());
        }
        // The MUC announces every occupant again on this join.
        if let Some(state) = self.rooms().get_mut(room) {
            state.occupants.clear();
        }
        self.learn_muc_features(room).await;
        // History since the last message seen fills the gap of a reconnection; a first join takes none.
        let history = match history {
            Some(since) => History::new().with_since(since),
            None => History::new().with_maxstanzas(0),
        };
        let base = sanitize_nick(&self.section.muc.listener_nick);
        let nick = self.join_with_nicks(room, &self.listener_jid(), &base, history).await?;
        let mut rooms = self.rooms();
        let entry = rooms.entry(room.clone()).or_default();
        entry.joining.remove(&nick);
        entry.listener_nick = Some(nick);
        entry.listener_generation = Some(state.generation);
        Ok(())
    }

    /// Joins under `base`, then `base` with the conflict suffix and a number, until a nick is free.
    async fn join_with_nicks(
        &self,
        room: &BareJid,
        occupant: &FullJid,
        base: &str,
        history: History,
    ) -> ConnectorResult<String> {
        let suffix = &self.section.muc.nick_conflict_suffix;
        for attempt in 0..NICK_ATTEMPTS {
            let nick = match attempt {
                0 => base.to_owned(),
                1 => format!("{base}{suffix}"),
                n => format!("{base}{suffix}{n}"),
            };
            let taken = {
                let rooms = self.rooms();
                rooms.get(room).is_some_and(|state| state.occupants.contains_key(&nick))
            };
            if taken {
                continue;
            }
            match self.join(room, occupant, &nick, history.clone()).await? {
                Ok(nick) => return Ok(nick),
                Err(JoinError::Conflict) => continue,
                Err(JoinError::Refused(reason)) => {
                    return Err(ConnectorError::permanent(format!("the MUC {room} refused {occupant}: {reason}")));
                }
            }
        }
        Err(ConnectorError::permanent(format!("no free nick like {base:?} in the MUC {room}")))
    }

    /// Sends one join presence and waits for the MUC's self-presence or error.
    async fn join(
        &self,
        room: &BareJid,
        occupant: &FullJid,
        nick: &str,
        history: History,
    ) -> ConnectorResult<Result<String, JoinError>> {
        let to = room
            .with_resource_str(nick)
            .map_err(|error| ConnectorError::permanent(format!("{nick:?} is not a valid nick: {error}")))?;
        let (sender, receiver) = oneshot::channel();
        self.rooms().entry(room.clone()).or_default().joining.insert(nick.to_owned());
        self.joins
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .insert((room.clone(), occupant.clone()), sender);
        let presence = Presence::available()
            .with_from(occupant.clone())
            .with_to(to)
            .with_id(new_id())
            .with_payload(Muc::new().with_history(history));
        // A Matrix user's occupant says what its gateway JID can do (XEP-0115) and names its avatar (XEP-0153); the
        // listener is the gateway itself.
        let user = occupant.node().and_then(|_| self.addressing.matrix_user_of(&occupant.to_bare()));
        let presence = match user {
            Some(user) => {
                let avatar = self.matrix_avatar(&user).await;
                let mut presence = presence.with_payload(crate::xep::caps::user_caps());
                if let Some(avatar) = avatar {
                    presence.payloads.push(avatar.update().into());
                }
                presence
            }
            None => presence,
        };
        let outcome = match self.send(presence).await {
            Ok(()) => tokio::time::timeout(self.timeout, receiver)
                .await
                .ok()
                .and_then(Result::ok)
                .ok_or_else(|| transient(format!("the MUC {room} did not confirm the join of {occupant}"))),
            Err(error) => Err(error),
        };
        // The nick the MUC gave stays in `joining` until the caller records whose it is.
        if !matches!(&outcome, Ok(Ok(given)) if given == nick) {
            self.forget_joining(room, nick);
        }
        if let Ok(Ok(given)) = &outcome
            && given != nick
        {
            self.rooms().entry(room.clone()).or_default().joining.insert(given.clone());
        }
        if outcome.is_err() {
            self.joins
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .remove(&(room.clone(), occupant.clone()));
        }
        outcome
    }

    /// Makes sure a Matrix user is an occupant of the MUC on the current connection; returns their nick.
    pub async fn ensure_puppet(
        &self,
        room: &BareJid,
        portal: &Portal,
        user_id: &str,
        displayname: Option<&str>,
    ) -> ConnectorResult<(FullJid, String)> {
        self.ensure_listening(room, portal).await?;
        let lock = self.join_lock(room);
        let _guard = lock.lock().await;
        let state = self.online()?;
        let Some(puppet) = self.addressing.puppet_jid(user_id) else {
            return Err(ConnectorError::permanent(format!("{user_id} cannot be represented on XMPP")));
        };
        let occupant = puppet
            .with_resource_str(PUPPET_RESOURCE)
            .map_err(|error| ConnectorError::permanent(format!("{user_id} has no valid gateway JID: {error}")))?;
        let known = self.rooms().get(room).and_then(|state| state.puppets.get(user_id).cloned());
        let wanted = displayname.map(sanitize_nick);
        if let Some(known) = &known
            && known.joined_generation == Some(state.generation)
            && wanted.as_ref().is_none_or(|wanted| known.nick.starts_with(wanted.as_str()))
        {
            return Ok((occupant, known.nick.clone()));
        }
        let base = match wanted {
            Some(wanted) => wanted,
            None => match known {
                Some(known) => known.nick,
                None => sanitize_nick(&self.displayname_of(user_id).await),
            },
        };
        let nick = self.join_with_nicks(room, &occupant, &base, History::new().with_maxstanzas(0)).await?;
        self.rooms()
            .entry(room.clone())
            .or_default()
            .puppets
            .insert(user_id.to_owned(), Puppet { nick: nick.clone(), joined_generation: Some(state.generation) });
        self.forget_joining(room, &nick);
        Ok((occupant, nick))
    }

    pub(crate) async fn displayname_of(&self, user_id: &str) -> String {
        let fallback = || user_id.trim_start_matches('@').split(':').next().unwrap_or(user_id).to_owned();
        let Ok(parsed) = ruma_user_id(user_id) else { return fallback() };
        match self.bridge.matrix().bot().get_profile(&parsed).await {
            Ok(Some(profile)) => profile.displayname.unwrap_or_else(fallback),
            _ => fallback(),
        }
    }

    /// A Matrix user left the portal: their occupant leaves the MUC.
    pub async fn leave_puppet(&self, room: &BareJid, user_id: &str) -> ConnectorResult<()> {
        let removed = self.rooms().get_mut(room).and_then(|state| state.puppets.remove(user_id));
        let (Some(puppet), Some(jid)) = (removed, self.addressing.puppet_jid(user_id)) else { return Ok(()) };
        if puppet.joined_generation != Some(self.link.state().generation) {
            return Ok(());
        }
        let Ok(from) = jid.with_resource_str(PUPPET_RESOURCE) else { return Ok(()) };
        let Ok(to) = room.with_resource_str(&puppet.nick) else { return Ok(()) };
        self.send(Presence::unavailable().with_from(from).with_to(to)).await
    }

    /// Sends a groupchat message from a Matrix user. The returned future waits for the MUC to reflect it and comes
    /// to its remote ID: the stanza-id the MUC stamped (the bridge's own ID recorded as its alias), else the bridge's
    /// own ID.
    pub async fn send_groupchat(
        self: &Arc<Self>,
        room: &BareJid,
        portal: &Portal,
        user_id: &str,
        body: Option<String>,
        mut payloads: Vec<Element>,
    ) -> ConnectorResult<impl Future<Output = ConnectorResult<String>> + Send + 'static> {
        let groupchat = Message::groupchat(Some(Jid::from(room.clone())));
        if body.is_some() {
            // XEP-0333: readers' clients send displayed markers, which become the sender's read receipts.
            payloads.push(crate::xep::chat_states::markable());
        }
        let (mut message, id) = outgoing(&self.section, groupchat, body, payloads)?;
        let (occupant, _) = self.ensure_puppet(room, portal, user_id, None).await?;
        message.from = Some(occupant.into());
        let reflection = self.send_for_reflection(message, &id).await?;
        let (gateway, room, user_id, portal_key) =
            (Arc::clone(self), room.clone(), user_id.to_owned(), portal.remote_key.clone());
        Ok(async move {
            let Some(stanza_id) = gateway.await_reflection(&room, &user_id, &id, reflection).await? else {
                return Ok(id);
            };
            gateway.bridge.store().alias_remote(&portal_key, &id, &stanza_id);
            Ok(stanza_id)
        })
    }

    /// Sends a subject change from a Matrix user.
    pub async fn send_subject(
        &self,
        room: &BareJid,
        portal: &Portal,
        user_id: &str,
        topic: &str,
    ) -> ConnectorResult<()> {
        let (occupant, _) = self.ensure_puppet(room, portal, user_id, None).await?;
        let mut message = Message::groupchat(Some(Jid::from(room.clone())));
        message.from = Some(occupant.into());
        message.id = Some(Id(new_id()));
        message.subjects.insert(Lang::new(), topic.to_owned());
        if let Some(state) = self.rooms().get_mut(room) {
            state.topic = Some(topic.to_owned());
        }
        self.send(message).await
    }

    /// Sends `message` (whose ID is `id`), ready to hear of its reflection.
    async fn send_for_reflection(&self, message: Message, id: &str) -> ConnectorResult<Reflection> {
        let (sender, receiver) = oneshot::channel();
        self.acks.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).insert(id.to_owned(), sender);
        if let Err(error) = self.send(message).await {
            self.acks.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).remove(id);
            return Err(error);
        }
        Ok(receiver)
    }

    /// Waits for the reflection of the message `id` that `user_id` sent to `room`; comes to the stanza-id the MUC
    /// stamped on it, if any.
    async fn await_reflection(
        &self,
        room: &BareJid,
        user_id: &str,
        id: &str,
        reflection: Reflection,
    ) -> ConnectorResult<Option<String>> {
        match tokio::time::timeout(self.timeout, reflection).await {
            Ok(Ok(Ok(stanza_id))) => Ok(stanza_id),
            Ok(Ok(Err(error))) => {
                // Not (or no longer) an occupant: join again on the next attempt.
                if matches!(error.defined_condition, DefinedCondition::NotAcceptable | DefinedCondition::ItemNotFound) {
                    if let Some(puppet) = self.rooms().get_mut(room).and_then(|state| state.puppets.get_mut(user_id)) {
                        puppet.joined_generation = None;
                    }
                    return Err(transient(format!("the MUC {room} did not take the message: {}", error_text(&error))));
                }
                Err(ConnectorError::permanent(format!("the MUC {room} refused the message: {}", error_text(&error))))
            }
            _ => {
                self.acks.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).remove(id);
                Err(transient(format!("the MUC {room} did not reflect the message in time")))
            }
        }
    }

    /// After a (re)connection: joins every portal's MUC again and the Matrix users who were in it.
    pub async fn rejoin_all(self: &Arc<Self>) {
        let portals = match self.bridge.store().portals().await {
            Ok(portals) => portals,
            Err(error) => {
                tracing::error!(%error, "cannot list portals to rejoin their MUCs");
                return;
            }
        };
        let mut tasks = Vec::new();
        for portal in portals {
            let Some(room) = portal_room(&portal) else { continue };
            let gateway = Arc::clone(self);
            tasks.push(tokio::spawn(async move { gateway.rejoin_room(&room, &portal).await }));
        }
        for task in tasks {
            let _ = task.await;
        }
    }

    /// Joins one portal's MUC again, then the Matrix users who were in it.
    pub(crate) async fn rejoin_room(&self, room: &BareJid, portal: &Portal) {
        if let Err(error) = self.ensure_listening(room, portal).await {
            tracing::warn!(%room, %error, "cannot rejoin the MUC");
            return;
        }
        let puppets: Vec<(String, String)> = self
            .rooms()
            .get(room)
            .map(|state| state.puppets.iter().map(|(user, puppet)| (user.clone(), puppet.nick.clone())).collect())
            .unwrap_or_default();
        for (user_id, nick) in puppets {
            if let Err(error) = self.ensure_puppet(room, portal, &user_id, Some(&nick)).await {
                tracing::warn!(%room, %user_id, %error, "cannot rejoin a Matrix user to the MUC");
            }
        }
        tracing::info!(%room, "rejoined the MUC");
    }

    /// The listener's occupant JID in each MUC it joined on connection `generation`.
    pub(crate) fn listening_occupants(&self, generation: u64) -> Vec<(BareJid, FullJid)> {
        self.rooms()
            .iter()
            .filter(|(_, state)| state.listener_generation == Some(generation))
            .filter_map(|(room, state)| {
                let occupant = room.with_resource_str(state.listener_nick.as_deref()?).ok()?;
                Some((room.clone(), occupant))
            })
            .collect()
    }

    /// The MUC forgot the bridge: its listener and every Matrix user's occupant must join again.
    pub(crate) fn forget_listening(&self, room: &BareJid) {
        if let Some(state) = self.rooms().get_mut(room) {
            state.listener_generation = None;
            for puppet in state.puppets.values_mut() {
                puppet.joined_generation = None;
            }
        }
    }

    /// Whether a stanza is addressed to a gateway MUC (or one of its occupants).
    pub(crate) fn addresses_hosted(&self, stanza: &Stanza) -> bool {
        match stanza {
            Stanza::Message(message) => message.to.as_ref(),
            Stanza::Presence(presence) => presence.to.as_ref(),
            Stanza::Iq(iq) => iq.to(),
        }
        .is_some_and(|to| self.is_hosted_jid(to))
    }

    /// The conversation whose lane a stanza is handled in ([`crate::lanes`]).
    pub fn lane_of(&self, stanza: &Stanza) -> Option<BareJid> {
        crate::lanes::lane_of(stanza, self.addresses_hosted(stanza))
    }

    /// Handles one stanza from the server. Called in the server's order within each conversation (its lane).
    pub async fn handle_stanza(&self, stanza: Stanza) {
        let hosted = self.addresses_hosted(&stanza);
        self.note_heard(&stanza);
        let outcome = match stanza {
            Stanza::Presence(presence) if !hosted && crate::subscription::is_subscription(&presence.type_) => {
                self.on_subscription(presence).await
            }
            Stanza::Message(message) if hosted => self.on_hosted_message(message).await,
            Stanza::Presence(presence) if hosted => self.on_hosted_presence(presence).await,
            Stanza::Iq(iq) if hosted => {
                self.on_hosted_iq(iq).await;
                Ok(())
            }
            Stanza::Message(message) => self.on_message(message).await,
            Stanza::Presence(presence) => self.on_presence(presence).await,
            Stanza::Iq(iq) => self.on_iq(iq).await,
        };
        if let Err(error) = outcome {
            tracing::warn!(%error, "cannot bridge a stanza from XMPP");
        }
    }

    /// A message or presence from a bridged MUC to the listener proves the MUC still has it (XEP-0410).
    fn note_heard(&self, stanza: &Stanza) {
        let (from, to, error) = match stanza {
            Stanza::Message(message) => {
                (message.from.as_ref(), message.to.as_ref(), message.type_ == XmppMessageType::Error)
            }
            Stanza::Presence(presence) => {
                (presence.from.as_ref(), presence.to.as_ref(), presence.type_ == PresenceType::Error)
            }
            Stanza::Iq(_) => return,
        };
        let (Some(from), Some(to)) = (from, to) else { return };
        if error || to.as_str() != self.listener_jid().as_str() {
            return;
        }
        let room = from.to_bare();
        if self.is_bridged_muc(&room) {
            self.self_pings.heard_from(&room);
        }
    }

    async fn on_message(&self, message: Message) -> lattice_bridge_core::Result<()> {
        let Some(from) = message.from.clone() else { return Ok(()) };
        if self.archive.collect(&message) || self.on_avatar_event(&message).await {
            return Ok(());
        }
        let room = from.to_bare();
        let id = message.id.as_ref().map(|id| id.0.clone());
        if message.type_ == XmppMessageType::Error {
            if let Some(waiter) = id.as_ref().and_then(|id| self.take_ack(id)) {
                let error =
                    find_payload::<StanzaError>(&message.payloads, "error", ns::DEFAULT_NS).unwrap_or_else(|| {
                        StanzaError::new(ErrorType::Cancel, DefinedCondition::UndefinedCondition, "en", "unknown")
                    });
                let _ = waiter.send(Err(error));
            }
            return Ok(());
        }
        if matches!(message.type_, XmppMessageType::Chat | XmppMessageType::Normal) {
            return self.on_direct_message(message).await;
        }
        if message.type_ != XmppMessageType::Groupchat {
            return Ok(());
        }
        let nick = from.resource().map(|resource| resource.to_string());
        // The reflection of a Matrix user's message, on the listener's copy (the others are skimmed off).
        if let Some(waiter) = id.as_ref().and_then(|id| self.take_ack(id)) {
            let _ = waiter.send(Ok(MessageIds::of(&message, Some(&room)).stanza_id));
        }
        // Every occupant the bridge has in the MUC gets a copy: only the listener's is bridged (the Matrix users'
        // occupants' copies seldom get here: `occupant_copies` skims them off before parsing).
        if message.to.as_ref().map(Jid::as_str) != Some(self.listener_jid().as_str()) {
            return Ok(());
        }
        let ids = MessageIds::of(&message, Some(&room));
        let delay = find_payload::<Delay>(&message.payloads, "delay", ns::DELAY);
        let (sender, portal_topic) = {
            let mut rooms = self.rooms();
            let Some(state) = rooms.get_mut(&room) else { return Ok(()) };
            if nick.as_deref().is_some_and(|nick| state.is_ours(nick)) {
                return Ok(());
            }
            let body_key = message.bodies.values().next().cloned().unwrap_or_default();
            let key = match &id {
                Some(id) => format!("{}\u{0}{id}", nick.as_deref().unwrap_or_default()),
                None => format!(
                    "{}\u{0}{body_key}\u{0}{:?}",
                    nick.as_deref().unwrap_or_default(),
                    delay.as_ref().map(|d| d.stamp.0)
                ),
            };
            if !message.bodies.is_empty() && !state.remember(key) {
                return Ok(());
            }
            if delay.is_none() || state.last_seen.is_none() {
                state.last_seen = Some(delay.as_ref().map_or_else(now, |delay| delay.stamp.clone()));
            } else if let Some(delay) = &delay {
                state.last_seen = Some(delay.stamp.clone());
            }
            let sender = nick.as_ref().and_then(|nick| {
                let identity = state.occupants.get(nick).map(|occupant| occupant.identity.clone()).or_else(|| {
                    let occupant = from.clone().try_into_full().ok()?;
                    crate::xep::ids::identity_of(&self.addressing, &message.payloads, occupant, state.occupant_ids)
                })?;
                self.ghost(&identity, nick)
            });
            (sender, state.topic.clone())
        };
        let portal = portal_key(&room);
        let timestamp_ms = delay.as_ref().and_then(|delay| u64::try_from(delay.stamp.0.timestamp_millis()).ok());
        let subject = message.get_best_subject_cloned(vec![]).filter(|_| message.bodies.is_empty());
        if let Some((_, subject)) = subject {
            if portal_topic.as_deref().unwrap_or_default() == subject {
                return Ok(());
            }
            if let Some(state) = self.rooms().get_mut(&room) {
                state.topic = Some(subject.clone());
            }
            let kind = RemoteEventKind::Topic { topic: subject };
            self.bridge.push(RemoteEvent { portal, sender, remote_id: None, timestamp_ms, kind }).await?;
            return Ok(());
        }
        self.push_inbound(Inbound { portal: &portal, sender, timestamp_ms }, &message, &ids).await
    }

    fn take_ack(&self, id: &str) -> Option<AckWaiter> {
        self.acks.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).remove(id)
    }

    pub(crate) fn ghost(&self, identity: &XmppIdentity, nick: &str) -> Option<GhostSpec> {
        let user_id = self.addressing.ghost_for(identity)?;
        Some(GhostSpec {
            user_id,
            remote_id: identity.as_str().to_owned(),
            displayname: Some(nick.chars().take(MAX_DISPLAYNAME_CHARS).collect()),
            avatar_url: None,
        })
    }

    async fn on_presence(&self, presence: Presence) -> lattice_bridge_core::Result<()> {
        let (Some(from), Some(to)) = (presence.from.clone(), presence.to.clone()) else { return Ok(()) };
        let room = from.to_bare();
        let Some(nick) = from.resource().map(|resource| resource.to_string()) else { return Ok(()) };
        let Ok(to) = to.try_into_full() else { return Ok(()) };
        if presence.type_ == PresenceType::Error {
            let error = find_payload::<StanzaError>(&presence.payloads, "error", ns::DEFAULT_NS);
            let outcome = match error {
                Some(error) if error.defined_condition == DefinedCondition::Conflict => JoinError::Conflict,
                Some(error) => JoinError::Refused(error_text(&error)),
                None => JoinError::Refused("an error without a reason".into()),
            };
            if let Some(waiter) = self.take_join(&room, &to) {
                let _ = waiter.send(Err(outcome));
            }
            return Ok(());
        }
        let muc_user = find_payload::<MucUser>(&presence.payloads, "x", ns::MUC_USER);
        let statuses = muc_user.as_ref().map(|user| user.status.clone()).unwrap_or_default();
        let item = muc_user.and_then(|user| user.items.into_iter().next());
        if statuses.contains(&Status::SelfPresence) {
            if presence.type_ == PresenceType::Unavailable {
                self.forget_own_occupant(&room, &to);
            } else if let Some(waiter) = self.take_join(&room, &to) {
                let _ = waiter.send(Ok(nick));
            }
            return Ok(());
        }
        if to != self.listener_jid() {
            return Ok(());
        }
        let Ok(occupant) = from.clone().try_into_full() else { return Ok(()) };
        let Some(identity) = self.occupant_identity(&presence.payloads, occupant.clone()) else { return Ok(()) };
        // Known by nick only (no real JID, no trusted occupant-id): a new nick is a new person to Matrix.
        let by_nick = identity == XmppIdentity::Occupant(occupant);
        let portal = portal_key(&room);
        let level = item.as_ref().map_or(0, |item| crate::affiliations::level_of(&item.affiliation, &item.role));
        let mut events = Vec::new();
        let mut level_change = None;
        {
            let mut rooms = self.rooms();
            let Some(state) = rooms.get_mut(&room) else { return Ok(()) };
            if state.is_ours(&nick) {
                return Ok(());
            }
            let leaving = presence.type_ == PresenceType::Unavailable;
            match (leaving, state.occupants.contains_key(&nick)) {
                (false, false) => {
                    state.occupants.insert(nick.clone(), Occupant { identity: identity.clone() });
                    events.push((self.ghost(&identity, &nick), RemoteEventKind::Join));
                }
                (false, true) => {}
                (true, _) => {
                    state.occupants.remove(&nick);
                    let new_nick = item.as_ref().and_then(|item| item.nick.clone());
                    match new_nick.filter(|_| statuses.contains(&Status::NewNick)) {
                        Some(new_nick) => {
                            let new_identity = if by_nick {
                                match room.with_resource_str(&new_nick) {
                                    Ok(full) => XmppIdentity::Occupant(full),
                                    Err(_) => return Ok(()),
                                }
                            } else {
                                identity.clone()
                            };
                            state.occupants.insert(new_nick.clone(), Occupant { identity: new_identity.clone() });
                            if new_identity == identity {
                                events.push((self.ghost(&identity, &new_nick), RemoteEventKind::Profile));
                            } else {
                                events.push((self.ghost(&identity, &nick), RemoteEventKind::Leave { reason: None }));
                                events.push((self.ghost(&new_identity, &new_nick), RemoteEventKind::Join));
                            }
                        }
                        None => {
                            let reason =
                                item.as_ref().and_then(|item| item.reason.as_ref()).map(|reason| reason.0.clone());
                            let reason = if statuses.contains(&Status::Banned) {
                                Some(format!("banned{}", reason.map(|r| format!(": {r}")).unwrap_or_default()))
                            } else if statuses.contains(&Status::Kicked) {
                                Some(format!("kicked{}", reason.map(|r| format!(": {r}")).unwrap_or_default()))
                            } else {
                                presence.statuses.values().next().cloned().or(reason)
                            };
                            events.push((self.ghost(&identity, &nick), RemoteEventKind::Leave { reason }));
                        }
                    }
                }
            }
            // The affiliation outlives the visit, so a leave keeps the level; any presence while in the room
            // carries the current affiliation and role.
            let current = state.occupants.values().find(|occupant| occupant.identity == identity).or_else(|| {
                item.as_ref().and_then(|item| item.nick.as_ref()).and_then(|new_nick| state.occupants.get(new_nick))
            });
            if let Some(user_id) = current.and_then(|occupant| self.addressing.ghost_for(&occupant.identity))
                && state.levels.get(&user_id).copied().unwrap_or(0) != level
            {
                state.levels.insert(user_id.clone(), level);
                level_change = Some(RemoteEventKind::PowerLevel { user_id, level });
            }
        }
        for (sender, kind) in events {
            if sender.is_none() {
                continue;
            }
            self.bridge
                .push(RemoteEvent { portal: portal.clone(), sender, remote_id: None, timestamp_ms: None, kind })
                .await?;
        }
        // After the join, from the bridge bot: ghosts have no power to give themselves any.
        if let Some(kind) = level_change {
            self.bridge.push(RemoteEvent { portal, sender: None, remote_id: None, timestamp_ms: None, kind }).await?;
        }
        Ok(())
    }

    fn take_join(&self, room: &BareJid, occupant: &FullJid) -> Option<JoinWaiter> {
        self.joins.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).remove(&(room.clone(), occupant.clone()))
    }

    /// The MUC removed one of the bridge's occupants (kick, shutdown): join again on next use.
    fn forget_joining(&self, room: &BareJid, nick: &str) {
        if let Some(state) = self.rooms().get_mut(room) {
            state.joining.remove(nick);
        }
    }

    fn forget_own_occupant(&self, room: &BareJid, occupant: &FullJid) {
        let mut rooms = self.rooms();
        let Some(state) = rooms.get_mut(room) else { return };
        if *occupant == self.listener_jid() {
            state.listener_generation = None;
            return;
        }
        let user = self.addressing.matrix_user_of(&occupant.to_bare());
        if let Some(puppet) = user.and_then(|user| state.puppets.get_mut(&user)) {
            puppet.joined_generation = None;
        }
    }

    async fn on_iq(&self, iq: Iq) -> lattice_bridge_core::Result<()> {
        if self.self_pings.answer(&iq) || self.requests.finish(&iq) {
            return Ok(());
        }
        if let Some(answer) = self.avatar_answer(&iq).await {
            let _ = self.link.send(answer).await;
            return Ok(());
        }
        if let Some(answer) = self.identity_answer(&iq) {
            let _ = self.link.send(answer).await;
            return Ok(());
        }
        let Iq::Get { from, to, id, payload } = iq else { return Ok(()) };
        let Some(from) = from else { return Ok(()) };
        let to = to.unwrap_or_else(|| self.gateway_jid());
        let reply = if payload.is("ping", ns::PING) {
            Iq::Result { from: Some(to), to: Some(from), id, payload: None }
        } else if payload.is("query", ns::DISCO_INFO) && DiscoInfoQuery::try_from(payload.clone()).is_ok() {
            Iq::from_result(id, Some(self.disco_info(&to))).with_from(to).with_to(from)
        } else if payload.is("query", ns::DISCO_ITEMS) {
            Iq::from_result(id, Some(self.disco_items(&to).await)).with_from(to).with_to(from)
        } else {
            let error =
                StanzaError::new(ErrorType::Cancel, DefinedCondition::ServiceUnavailable, "en", "not supported");
            Iq::Error { from: Some(to), to: Some(from), id, error, payload: None }
        };
        let _ = self.link.send(reply).await;
        Ok(())
    }

    /// Makes a Matrix file reachable from XMPP through the bridge's media endpoint (Matrix media needs
    /// authentication) and returns the XEP-0066 out-of-band payload and the body that carries the same URL.
    pub async fn publish_media(&self, media: &Media) -> ConnectorResult<(String, Oob)> {
        let url = self.bridge.publish_media(&media.url, &media.filename, media.mimetype.as_deref()).await.map_err(
            |error| {
                if error.is_transient() {
                    transient(error.to_string())
                } else {
                    ConnectorError::permanent(format!("cannot publish {}: {error}", media.filename))
                }
            },
        )?;
        Ok((url.clone(), Oob { url, desc: Some(media.filename.clone()) }))
    }

    /// Records which XMPP message a Matrix event became, for corrections.
    pub async fn map_sent(&self, portal: &Portal, event_id: &str, stanza_id: String) -> ConnectorResult<()> {
        self.bridge.store().map_message(MessageMapping {
            event_id: event_id.to_owned(),
            room_id: portal.room_id.clone(),
            portal_key: portal.remote_key.clone(),
            remote_id: stanza_id,
        });
        Ok(())
    }
}

fn now() -> DateTime {
    DateTime::from_str(&format_now()).expect("a formatted timestamp parses")
}

/// The current time as an XEP-0082 timestamp.
fn format_now() -> String {
    let since_epoch = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    let seconds = since_epoch.as_secs() as i64;
    let (days, rest) = (seconds.div_euclid(86_400), seconds.rem_euclid(86_400));
    let (year, month, day) = civil_from_days(days);
    format!("{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z", rest / 3600, rest % 3600 / 60, rest % 60)
}

/// Days since 1970-01-01 to a (year, month, day) date: Howard Hinnant's `civil_from_days`.
pub(crate) fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

fn ruma_user_id(user_id: &str) -> Result<ruma::OwnedUserId, ruma::IdParseError> {
    ruma::OwnedUserId::try_from(user_id.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_groupchat_copies_for_matrix_users_occupants_are_skimmed_off() {
        let picks = occupant_copies("bridge.localhost");
        let skimmed = |tag: &str| picks(&StanzaHead::parse(tag.as_bytes()));
        assert!(skimmed("<message type='groupchat' to='alice\\40example.org@bridge.localhost/matrix'>"));
        assert!(skimmed("<message to=\"bob\\40example.org@Bridge.Localhost/matrix\" type=\"groupchat\">"));
        // The listener's copy, which is bridged and carries reflections.
        assert!(!skimmed("<message type='groupchat' to='bridge.localhost/lattice'>"));
        // Errors, private messages and presences to a Matrix user's occupant are read.
        for kind in ["error", "chat", "normal"] {
            assert!(!skimmed(&format!("<message type='{kind}' to='a\\40b@bridge.localhost/matrix'>")), "{kind}");
        }
        assert!(!skimmed("<message to='a\\40b@bridge.localhost/matrix'>"));
        assert!(!skimmed("<presence type='groupchat' to='a\\40b@bridge.localhost/matrix'>"));
        // A gateway MUC (a Matrix room XMPP users joined), another domain, resource or spelling.
        assert!(!skimmed("<message type='groupchat' to='#room#example.org@bridge.localhost/matrix'>"));
        assert!(!skimmed("<message type='groupchat' to='a\\40b@other.localhost/matrix'>"));
        assert!(!skimmed("<message type='groupchat' to='a\\40b@bridge.localhost/matrix2'>"));
        assert!(!skimmed("<message type='groupchat' to='a\\40b@bridge.localhost'>"));
        assert!(!skimmed("<message type='groupchat' to='a&amp;b@bridge.localhost/matrix'>"));
    }

    #[test]
    fn nicks_are_one_clean_line() {
        assert_eq!(sanitize_nick("  Alice\nSmith\u{0} "), "Alice Smith");
        assert_eq!(sanitize_nick("\n\t"), "matrix user");
        assert_eq!(sanitize_nick(&"x".repeat(500)).chars().count(), MAX_NICK_CHARS);
    }

    #[test]
    fn timestamps_are_xep_0082() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(19_723), (2024, 1, 1));
        assert!(DateTime::from_str(&format_now()).is_ok());
    }
}
