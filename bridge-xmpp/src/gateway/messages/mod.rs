//! Message content both ways, shared by MUC portals ([`muc`](crate::gateway::muc)), gateway MUCs ([`gateway_muc`](crate::gateway::gateway_muc))
//! and direct chats ([`direct`](crate::gateway::direct)): what an incoming stanza's payloads mean for Matrix, and which
//! payloads a Matrix event becomes. The XEPs themselves live in [`xep`](crate::xep); this module resolves the
//! messages they name through the store's message map and remote ID aliases, so every mapping survives a restart.

mod ephemeral;
pub(crate) mod media;
pub(crate) mod remote_id;
pub(crate) mod to_matrix;
mod to_xmpp;

use std::{
    collections::{BTreeSet, HashMap},
    sync::Mutex,
};

use lattice_bridge_core::connector::GhostSpec;
use tokio_xmpp::parsers::minidom::Element;

pub(crate) use self::remote_id::RemoteId;
use super::facade;
use crate::xep::retract::ModerateRequest;

facade!(
    /// Message content both ways, for every kind of conversation.
    Messages,
    messages
);

/// A Matrix read receipt: the event read, and the reader.
pub(crate) type Receipt = (String, String);

/// Who an incoming message is from and where it goes.
#[derive(Debug, Clone)]
pub(crate) struct Inbound<'a> {
    /// The portal's remote key.
    pub(crate) portal: &'a str,
    /// The sender's ghost; `None` for the MUC itself (moderation).
    pub(crate) sender: Option<GhostSpec>,
    /// When it was sent, for history.
    pub(crate) timestamp_ms: Option<u64>,
}

/// Who was typing in each Matrix room when the last `m.typing` came. Memory only: after a restart the first
/// `m.typing` is taken as the full change.
#[derive(Debug, Default)]
pub(crate) struct TypingState {
    rooms: Mutex<HashMap<String, BTreeSet<String>>>,
}

impl TypingState {
    /// Records who types in a room now; returns who started and who stopped.
    fn change(&self, room_id: &str, now: BTreeSet<String>) -> (Vec<String>, Vec<String>) {
        let mut rooms = self.rooms.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let before = rooms.remove(room_id).unwrap_or_default();
        let started = now.difference(&before).cloned().collect();
        let stopped = before.difference(&now).cloned().collect();
        if !now.is_empty() {
            rooms.insert(room_id.to_owned(), now);
        }
        (started, stopped)
    }
}

/// What a Matrix event becomes on XMPP.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Outgoing {
    /// A message stanza from the sender.
    Message {
        /// The body, if the stanza has one (reactions have none).
        body: Option<String>,
        /// XEP payloads.
        payloads: Vec<Element>,
        /// What the Matrix event is mapped under when not the sent stanza's own ID (a reaction).
        map_as: Option<RemoteId>,
    },
    /// A moderator retracts someone else's message: an IQ to the MUC (XEP-0425).
    Moderate(ModerateRequest),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typing_changes_are_who_started_and_who_stopped() {
        let state = TypingState::default();
        let set = |users: &[&str]| users.iter().map(|user| (*user).to_owned()).collect::<BTreeSet<_>>();
        let list = |users: &[&str]| users.iter().map(|user| (*user).to_owned()).collect::<Vec<_>>();
        assert_eq!(state.change("!r", set(&["@a:hs", "@b:hs"])), (list(&["@a:hs", "@b:hs"]), list(&[])));
        assert_eq!(state.change("!r", set(&["@b:hs", "@c:hs"])), (list(&["@c:hs"]), list(&["@a:hs"])));
        assert_eq!(state.change("!other", set(&[])), (list(&[]), list(&[])));
        assert_eq!(state.change("!r", set(&[])), (list(&[]), list(&["@b:hs", "@c:hs"])));
        assert_eq!(state.change("!r", set(&[])), (list(&[]), list(&[])), "nothing left to stop");
    }
}
