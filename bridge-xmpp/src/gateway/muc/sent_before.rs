//! After a restart, whether a Matrix user's message the bridge sent to a MUC just before the process ended (its
//! reflection lost with it) reached the MUC: looked up in the MUC's archive
//! ([XEP-0313](https://xmpp.org/extensions/xep-0313.html)) by the ID it was sent with, which is made from the Matrix
//! event ID ([`crate::gateway::event_message_id`]) and is also its XEP-0359 origin-id. Found, it is not sent again.
//!
//! One query per MUC and run: the newest [`LOOK_BACK`] archived messages, read once, answer for every event left
//! from the earlier run (they were all sent before this process started, so before the query). A MUC without an
//! archive, or one busier than that since the event, cannot tell: the event is sent again.

use std::collections::HashMap;

use lattice_bridge_core::{connector::ConnectorResult, store::Portal};
use tokio_xmpp::parsers::{
    iq::Iq,
    jid::BareJid,
    mam::{Fin, Result_},
};

use super::MucPortals;
use crate::xep::ids::MessageIds;

/// How many of a MUC's newest archived messages are searched.
const LOOK_BACK: usize = 250;

/// Per MUC: the IDs its newest archived messages were sent with → the stanza-ids the MUC gave them.
pub(crate) type ArchivedIds = HashMap<BareJid, HashMap<String, String>>;

impl MucPortals<'_> {
    /// The stanza-id of the message sent to `room` with the ID `id`, if the MUC's archive has it.
    pub(crate) async fn archived_as(
        &self,
        room: &BareJid,
        portal: &Portal,
        id: &str,
    ) -> ConnectorResult<Option<String>> {
        if let Some(ids) = self.mucs.sent_before.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).get(room) {
            return Ok(ids.get(id).cloned());
        }
        // The listener asks, as for a new portal's history (a members-only MUC answers occupants only).
        self.ensure_listening(room, portal).await?;
        let ids = self.newest_archived_ids(room).await;
        let found = ids.get(id).cloned();
        tracing::info!(%room, searched = ids.len(), "looked in the MUC's archive for messages sent before a restart");
        self.mucs.sent_before.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).insert(room.clone(), ids);
        Ok(found)
    }

    /// The IDs (origin-id, else `id`) of the MUC's newest archived messages, with their stanza-ids, page by page
    /// back from the newest (a MUC answers a few dozen at a time) up to [`LOOK_BACK`]; what was read when the MUC has
    /// no archive, stops answering or has no more.
    async fn newest_archived_ids(&self, room: &BareJid) -> HashMap<String, String> {
        let mut ids = HashMap::new();
        let (mut before, mut read) = (String::new(), 0);
        while read < LOOK_BACK {
            let Some((results, fin)) = self.archive_page(room, before).await else { break };
            read += results.len();
            for result in results {
                if let Some(sent_as) = MessageIds::of(&result.forwarded.message, None).sender_id {
                    ids.insert(sent_as, result.id);
                }
            }
            match fin.set.first {
                Some(first) if !fin.complete && read > 0 => before = first.item,
                _ => break,
            }
        }
        ids
    }

    /// One page of the MUC's archive, newest first, ending before the archive ID `before` (empty: the newest).
    async fn archive_page(&self, room: &BareJid, before: String) -> Option<(Vec<Result_>, Fin)> {
        let (answer, results) = self.query_archive(room, LOOK_BACK, before).await;
        let fin = match answer {
            Some(Iq::Result { payload: Some(payload), .. }) => Fin::try_from(payload).ok(),
            _ => None,
        };
        if fin.is_none() {
            tracing::info!(%room, "the MUC's archive cannot say what reached it before a restart");
        }
        Some((results, fin?))
    }
}
