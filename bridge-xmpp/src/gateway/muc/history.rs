//! History for MUC portals ([XEP-0313: Message Archive Management](https://xmpp.org/extensions/xep-0313.html)): a
//! new MUC portal is first filled from the MUC's own archive (Prosody's `muc_mam`): the newest
//! [`BACKFILL_MESSAGES`] messages reach Matrix with their original time, and the first join then asks the MUC only
//! for history after them.

use std::{collections::HashMap, sync::Mutex};

use lattice_bridge_core::{connector::ConnectorResult, store::Portal};
use tokio_xmpp::parsers::{
    forwarding::Forwarded,
    iq::Iq,
    jid::BareJid,
    mam::{Query, QueryId, Result_},
    message::Message,
    ns,
    rsm::SetQuery,
};

use super::MucPortals;
use crate::{
    gateway::{core_error, messages::Inbound, new_id},
    xep::{forward::in_component_namespace, ids::MessageIds},
};

/// How many archived messages a new portal is filled with.
const BACKFILL_MESSAGES: usize = 50;
/// Most results kept for one query.
const MAX_RESULTS: usize = 250;

/// Results of the gateway's archive queries to MUCs, by query ID, gathered until the MUC answers the query's
/// IQ (which the gateway's request waits for): the MUC sends each result as a message first.
#[derive(Debug, Default)]
pub(crate) struct ArchiveQueries {
    results: Mutex<HashMap<String, Vec<Result_>>>,
}

impl ArchiveQueries {
    fn results(&self) -> std::sync::MutexGuard<'_, HashMap<String, Vec<Result_>>> {
        self.results.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Gathers the results of the query `queryid` from now on.
    fn expect(&self, queryid: &str) {
        self.results().insert(queryid.to_owned(), Vec::new());
    }

    /// The results of the query `queryid` gathered so far; no more are gathered.
    fn take(&self, queryid: &str) -> Vec<Result_> {
        self.results().remove(queryid).unwrap_or_default()
    }

    /// Takes a message that is a result of one of the gateway's queries; false for any other message.
    fn collect(&self, message: &Message) -> bool {
        let Some(result) = message
            .payloads
            .iter()
            .find(|element| element.is("result", ns::MAM))
            .and_then(|element| Result_::try_from(in_component_namespace(element.clone())).ok())
        else {
            return false;
        };
        let Some(queryid) = &result.queryid else { return false };
        let mut queries = self.results();
        let Some(results) = queries.get_mut(&queryid.0) else { return false };
        if results.len() < MAX_RESULTS {
            results.push(result);
        }
        true
    }
}

impl MucPortals<'_> {
    /// A new portal: first its MUC's recent archive, then the join asks for history after it. In a task of its own.
    pub(crate) fn spawn_first_join(&self, room: BareJid, portal: Portal) {
        let gateway = self.arc();
        tokio::spawn(async move {
            let muc = gateway.muc();
            if let Err(error) = muc.backfill(&room, &portal).await {
                tracing::warn!(%room, %error, "cannot fill the new portal from the MUC's archive");
            }
            if let Err(error) = muc.ensure_listening(&room, &portal).await {
                tracing::warn!(%room, %error, "cannot join the MUC of a new portal yet; it is joined on reconnection");
            }
        });
    }

    /// Takes a message that is a result of one of the gateway's archive queries; false for any other message.
    pub(crate) fn collect_archived(&self, message: &Message) -> bool {
        self.mucs.archive.collect(message)
    }

    /// Asks the MUC's archive, as the listener, for at most `max` messages ending before the archive ID `before`
    /// (empty: the newest); the MUC's answer to the query, and the results it sent before it.
    pub(super) async fn query_archive(&self, room: &BareJid, max: usize, before: String) -> (Option<Iq>, Vec<Result_>) {
        let queryid = new_id();
        self.mucs.archive.expect(&queryid);
        let set = SetQuery { max: Some(max), after: None, before: Some(before), index: None };
        let query =
            Query { queryid: Some(QueryId(queryid.clone())), node: None, form: None, set: Some(set), flip_page: false };
        let iq = Iq::from_set(String::new(), query).with_from(self.listener_jid().into()).with_to(room.clone().into());
        let answer = self.request(iq).await;
        (answer, self.mucs.archive.take(&queryid))
    }

    /// Fills a new portal from its MUC's archive, before the first join: the newest messages, oldest first, with
    /// their original time. A MUC without an archive (or one that refuses) leaves the portal as it is.
    async fn backfill(&self, room: &BareJid, portal: &Portal) -> ConnectorResult<()> {
        // Whether archived messages' occupant-ids can be trusted, before the first join asks again.
        self.learn_muc_features(room).await;
        let (answer, results) = self.query_archive(room, BACKFILL_MESSAGES, String::new()).await;
        match answer {
            Some(Iq::Result { .. }) => {}
            Some(Iq::Error { error, .. }) => {
                tracing::info!(%room, condition = ?error.defined_condition, "the MUC has no archive to fill the new portal from");
                return Ok(());
            }
            _ => {
                tracing::warn!(%room, "the MUC did not answer the archive query; the portal starts empty");
                return Ok(());
            }
        }
        let count = results.len();
        for result in results {
            let Forwarded { delay, message } = result.forwarded;
            let (Some(delay), Some(from)) = (delay, message.from.clone()) else { continue };
            let Some(nick) = from.resource().map(|nick| nick.to_string()) else { continue };
            let key = format!("{nick}\u{0}{}", message.id.as_ref().map_or(result.id.as_str(), |id| id.0.as_str()));
            if !self.note_archived(room, key, delay.stamp.clone()) {
                continue;
            }
            // The bridge's own occupants' messages came from Matrix: they are there already.
            let Ok(occupant) = from.try_into_full() else { continue };
            let Some(identity) = self.occupant_identity(&message.payloads, occupant) else { continue };
            let mut ids = MessageIds::of(&message, None);
            ids.stanza_id = Some(result.id.clone());
            let timestamp_ms = u64::try_from(delay.stamp.0.timestamp_millis()).ok();
            let inbound = Inbound { portal: &portal.remote_key, sender: self.ghost(&identity, &nick), timestamp_ms };
            self.messages().push_inbound(inbound, &message, &ids).await.map_err(core_error)?;
        }
        tracing::info!(%room, count, "filled the new portal from the MUC's archive");
        Ok(())
    }
}
