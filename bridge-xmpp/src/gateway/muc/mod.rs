//! XMPP MUCs as Matrix portals ([XEP-0045: Multi-User Chat](https://xmpp.org/extensions/xep-0045.html)).
//!
//! For each portal the gateway keeps one *listener* occupant in the MUC (`{gateway}/lattice`, nick
//! `muc.listener_nick`): every occupant receives every groupchat message and presence, so only what reaches the
//! listener is bridged into Matrix, exactly once and in the MUC's order. Each Matrix user in a portal (on joining
//! it, or on first speaking there) joins the MUC as their own occupant (`alice\40example.org@{gateway}/matrix`)
//! under their display name; the MUC's reflection of their message is the proof of delivery, and a message without
//! one is retried by the runtime, so a dropped connection loses nothing.

mod history;
mod join;
mod presence;
pub(crate) mod self_ping;
mod sent_before;
mod to_matrix;
mod to_xmpp;

use std::{
    collections::{HashMap, HashSet, VecDeque},
    str::FromStr,
    sync::{Arc, Mutex},
};

use lattice_bridge_core::connector::{BridgeInfoSpec, GhostSpec, PortalSpec};
use tokio::sync::oneshot;
use tokio_xmpp::{
    Stanza,
    parsers::{
        date::DateTime,
        disco::{DiscoInfoQuery, DiscoInfoResult},
        iq::Iq,
        jid::{BareJid, FullJid},
        message::MessageType,
        minidom::Element,
        muc::user::MucUser,
        ns,
        occupant_id::OccupantId,
        presence::Type as PresenceType,
        stanza_error::StanzaError,
    },
};

use super::{
    PortalKind, facade,
    portal::muc_key,
    skim::{DropStanza, StanzaHead},
};
use crate::{
    addressing::{Addressing, XmppIdentity},
    xep::payload,
};

facade!(
    /// The MUC portals: joins, both directions, self-pings and history.
    MucPortals,
    muc
);

/// The gateway's MUC state: each bridged MUC, and the waits for the server's answers.
#[derive(Debug, Default)]
pub(crate) struct State {
    rooms: Mutex<HashMap<BareJid, RoomState>>,
    joins: Mutex<HashMap<(BareJid, FullJid), JoinWaiter>>,
    acks: Mutex<HashMap<String, AckWaiter>>,
    /// One join at a time per MUC, so concurrent callers never send two joins for one occupant.
    join_locks: Mutex<HashMap<BareJid, Arc<tokio::sync::Mutex<()>>>>,
    /// XEP-0410 self-pings in flight and when each MUC was last heard from.
    self_pings: self_ping::SelfPings,
    /// Archive queries to MUCs waiting for their results.
    archive: history::ArchiveQueries,
    /// What each MUC's archive showed of messages sent before a restart.
    sent_before: Mutex<sent_before::ArchivedIds>,
}

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

/// The portal spec of a MUC, for alias queries and on-demand creation.
fn portal_spec(addressing: &Addressing, room: &BareJid) -> PortalSpec {
    let name = room.node().map_or_else(|| room.to_string(), |node| node.to_string());
    PortalSpec {
        remote_key: muc_key(room),
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
        metadata: PortalKind::Muc(room.clone()).metadata(),
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

/// Picks the MUCs' copies of groupchat messages for Matrix users' occupants (`…@{gateway}/matrix`, a gateway MUC's
/// JID excepted) to be skimmed off the component stream unparsed ([`crate::gateway::skim`]): only the listener's copy is
/// bridged, and it carries the reflection a Matrix user's message waits for too. A `to` with an entity reference is
/// kept, since the gateway's own JIDs need none.
pub(crate) fn occupant_copies(gateway: &str) -> DropStanza {
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
        && super::gateway_muc::alias_of_room(node).is_none()
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

impl MucPortals<'_> {
    /// The portal of the MUC a Matrix alias names (`#_xmpp_room@muc.example.org:{server}`), if it names one.
    pub(crate) fn portal_of_alias(&self, alias: &str) -> Option<PortalSpec> {
        self.addressing.muc_of_alias(alias).map(|room| portal_spec(&self.addressing, &room))
    }

    /// The listener's own JID (`{gateway}/lattice`), from which it joins every MUC.
    fn listener_jid(&self) -> FullJid {
        BareJid::from_str(self.addressing.gateway())
            .and_then(|jid| jid.with_resource_str(LISTENER_RESOURCE))
            .expect("the gateway domain was validated")
    }

    /// The ghost of an occupant, named after their nick.
    pub(crate) fn ghost(&self, identity: &XmppIdentity, nick: &str) -> Option<GhostSpec> {
        let user_id = self.addressing.ghost_for(identity)?;
        Some(GhostSpec {
            user_id,
            remote_id: identity.as_str().to_owned(),
            displayname: Some(nick.chars().take(MAX_DISPLAYNAME_CHARS).collect()),
            avatar_url: None,
        })
    }

    /// Who an occupant of a bridged MUC is ([`identity_of`], trusting occupant-ids if the MUC advertises them).
    pub(crate) fn occupant_identity(&self, payloads: &[Element], occupant: FullJid) -> Option<XmppIdentity> {
        let trusted = self.trusts_occupant_ids(&occupant.to_bare());
        identity_of(&self.addressing, payloads, occupant, trusted)
    }

    /// A message or presence from a bridged MUC to the listener proves the MUC still has it (XEP-0410).
    pub(crate) fn note_heard(&self, stanza: &Stanza) {
        let (from, to, error) = match stanza {
            Stanza::Message(message) => {
                (message.from.as_ref(), message.to.as_ref(), message.type_ == MessageType::Error)
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
            self.mucs.self_pings.heard_from(&room);
        }
    }

    /// The bridged MUCs.
    fn rooms(&self) -> std::sync::MutexGuard<'_, HashMap<BareJid, RoomState>> {
        self.mucs.rooms.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Records a message taken from the MUC's archive before the first join: remembered so the join's history does
    /// not bring it again, and the join asks for history since it. False when it was seen already.
    fn note_archived(&self, room: &BareJid, key: String, stamp: DateTime) -> bool {
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
    fn joined_occupant(&self, room: &BareJid, user_id: &str) -> Option<FullJid> {
        let generation = self.link.state().generation;
        let joined = self.rooms().get(room)?.puppets.get(user_id)?.joined_generation == Some(generation);
        if !joined {
            return None;
        }
        self.addressing.puppet_jid(user_id)?.with_resource_str(PUPPET_RESOURCE).ok()
    }

    /// Whether a bridged MUC stamps occupant-ids (XEP-0421) that can be trusted: it said so in its disco#info.
    fn trusts_occupant_ids(&self, room: &BareJid) -> bool {
        self.rooms().get(room).is_some_and(|state| state.occupant_ids)
    }

    /// Asks a MUC what it does (XEP-0030) and notes whether it stamps occupant-ids. Not on the stanza loop.
    async fn learn_muc_features(&self, room: &BareJid) {
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

    /// The listener's occupant JID in each MUC it joined on connection `generation`.
    fn listening_occupants(&self, generation: u64) -> Vec<(BareJid, FullJid)> {
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
    fn forget_listening(&self, room: &BareJid) {
        if let Some(state) = self.rooms().get_mut(room) {
            state.listener_generation = None;
            for puppet in state.puppets.values_mut() {
                puppet.joined_generation = None;
            }
        }
    }
}

/// Who a MUC occupant is: their account when the stanza shows the real JID (non-anonymous rooms), else their
/// occupant-id when the MUC stamps trusted ones (the room's JID with the occupant-id as resource), else the occupant
/// JID itself; `None` for the bridge's own occupants, which stand for Matrix users.
fn identity_of(
    addressing: &Addressing,
    payloads: &[Element],
    occupant: FullJid,
    trusted_occupant_ids: bool,
) -> Option<XmppIdentity> {
    let real_jid =
        payload::<MucUser>(payloads).and_then(|user| user.items.into_iter().next()).and_then(|item| item.jid);
    let occupant_id = payload::<OccupantId>(payloads).filter(|_| trusted_occupant_ids).map(|occupant| occupant.id);
    match (real_jid, occupant_id) {
        (Some(jid), _) if addressing.is_gateway_domain(jid.domain().as_str()) => None,
        (Some(jid), _) => Some(XmppIdentity::Account(jid.into_bare())),
        (None, Some(id)) => match occupant.to_bare().with_resource_str(&id) {
            Ok(by_id) => Some(XmppIdentity::Occupant(by_id)),
            Err(_) => Some(XmppIdentity::Occupant(occupant)),
        },
        (None, None) => Some(XmppIdentity::Occupant(occupant)),
    }
}

#[cfg(test)]
mod tests {
    use std::str::FromStr;

    use super::*;

    #[test]
    fn occupants_are_known_by_account_then_trusted_occupant_id_then_nick() {
        let addressing = Addressing::new(&crate::config::XmppSection::default(), "localhost");
        let occupant = FullJid::from_str("room@muc.example/Nick").unwrap();
        let parse = |xml: &str| vec![Element::from_str(xml).unwrap()];
        let occupant_id = parse("<occupant-id xmlns='urn:xmpp:occupant-id:0' id='abc+/='/>");
        let real = parse(
            "<x xmlns='http://jabber.org/protocol/muc#user'><item affiliation='none' role='participant' \
             jid='bob@example.net/phone'/></x>",
        );
        let gateway = parse(
            "<x xmlns='http://jabber.org/protocol/muc#user'><item affiliation='none' role='participant' \
             jid='alice\\40localhost@bridge.localhost/matrix'/></x>",
        );
        let identity = |payloads: &[Element], trusted| {
            identity_of(&addressing, payloads, occupant.clone(), trusted).map(|identity| identity.as_str().to_owned())
        };
        assert_eq!(identity(&real, true).as_deref(), Some("bob@example.net"));
        assert_eq!(identity(&occupant_id, true).as_deref(), Some("room@muc.example/abc+/="));
        assert_eq!(identity(&occupant_id, false).as_deref(), Some("room@muc.example/Nick"), "not advertised: forged");
        assert_eq!(identity(&[], true).as_deref(), Some("room@muc.example/Nick"));
        assert_eq!(identity(&gateway, true), None);
        // The same person after a nick change is the same identity, so the same ghost.
        let renamed =
            identity_of(&addressing, &occupant_id, FullJid::from_str("room@muc.example/Other").unwrap(), true);
        assert_eq!(renamed.map(|identity| identity.as_str().to_owned()).as_deref(), Some("room@muc.example/abc+/="));
    }

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
}
