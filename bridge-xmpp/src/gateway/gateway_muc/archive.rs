//! [XEP-0313: Message Archive Management](https://xmpp.org/extensions/xep-0313.html) with
//! [XEP-0059: Result Set Management](https://xmpp.org/extensions/xep-0059.html) paging, served on gateway MUCs from
//! the Matrix room's history (`GET /rooms/{roomId}/messages` and `/context/{eventId}`, as the bridge bot).
//!
//! In the other direction, a new MUC portal is first filled from the MUC's own archive (Prosody's `muc_mam`):
//! the newest [`BACKFILL_MESSAGES`] messages reach Matrix with their original time, and the first join then asks
//! the MUC only for history after them.
//!
//! Archive IDs are Matrix event IDs (the same names the gateway MUC stamps as stanza-ids), so `<before/>` and
//! `<after/>` point at events: the page starts at the event's pagination token from `/context`. Only messages are
//! archived. Matrix has no count of a room's messages, so the gateway counts them, reading the history backwards in
//! large batches, for RSM's `<count/>` (and the first item's `index` where it follows from it); a history longer
//! than [`MAX_COUNTED`] messages is served without a count rather than with a wrong one.

use lattice_bridge_core::matrix::{self, Direction, Intent, MessagesQuery};
use ruma::{EventId, RoomId};
use serde_json::Value;
use tokio_xmpp::parsers::{
    delay::Delay,
    forwarding::Forwarded,
    iq::Iq,
    jid::{BareJid, Jid},
    mam::{Fin, Query, QueryId, Result_},
    message::{Id, Lang, Message, MessageType},
    minidom::Element,
    rsm::{First, SetQuery, SetResult},
    stanza_error::{DefinedCondition, ErrorType, StanzaError},
};

use super::{GatewayMucs, alias_of_room, content_text};
use crate::{gateway::clock::stamp, xep::forward::in_client_namespace};

/// Most messages counted for an archive's `<count/>`; a longer history is served without one.
pub(super) const MAX_COUNTED: usize = 10_000;
/// Events asked for per request while counting.
const COUNT_BATCH: usize = 1000;

/// An event the archive serves, as its ID and text: a message with an ID and a text (a redacted one has none).
fn archived(event: &Value) -> Option<(&str, String)> {
    Some((event.get("event_id")?.as_str()?, event.get("content").and_then(content_text)?))
}

/// Page size when the query names none.
pub(super) const DEFAULT_PAGE: usize = 50;
/// Largest page served.
pub(super) const MAX_PAGE: usize = 250;

/// Where a page of history starts and which way it runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Page {
    /// The oldest messages (no RSM position given).
    Oldest,
    /// The newest messages (`<before/>` empty).
    Newest,
    /// The messages just before an event.
    Before(String),
    /// The messages just after an event.
    After(String),
}

impl Page {
    /// The page an RSM query asks for, and its size.
    pub(super) fn of(set: Option<&SetQuery>) -> (Self, usize) {
        let max = set.and_then(|set| set.max).unwrap_or(DEFAULT_PAGE).min(MAX_PAGE);
        let page = match set {
            Some(SetQuery { before: Some(before), .. }) if before.is_empty() => Self::Newest,
            Some(SetQuery { before: Some(before), .. }) => Self::Before(before.clone()),
            Some(SetQuery { after: Some(after), .. }) => Self::After(after.clone()),
            _ => Self::Oldest,
        };
        (page, max)
    }

    /// Whether the page runs backwards in time from its anchor (and must be reversed to be served oldest first).
    pub(super) fn backwards(&self) -> bool {
        matches!(self, Self::Newest | Self::Before(_))
    }
}

/// How many messages a room's archive holds (the events [`archived`] serves); `None` past `limit`.
async fn count(bot: &Intent, room_id: &RoomId, limit: usize) -> matrix::Result<Option<usize>> {
    let mut query = MessagesQuery::room_messages(Direction::Backward, COUNT_BATCH, None);
    let mut count = 0;
    loop {
        let page = bot.messages(room_id, &query).await?;
        count += page.chunk.iter().filter(|event| archived(event).is_some()).count();
        if count > limit {
            return Ok(None);
        }
        // Synapse leaves `end` out once the start of the room is reached.
        match page.end {
            Some(end) if !page.chunk.is_empty() => query.from = Some(end),
            _ => return Ok(Some(count)),
        }
    }
}

/// One page of a room's messages, oldest first, and whether the history ends there.
async fn page(bot: &Intent, room_id: &RoomId, page: &Page, max: usize) -> Result<(Vec<Value>, bool), String> {
    let from = match page {
        Page::Before(event_id) | Page::After(event_id) => {
            let event_id = <&EventId>::try_from(event_id.as_str()).map_err(|error| error.to_string())?;
            let context = bot.event_context(room_id, event_id).await.map_err(|error| error.to_string())?;
            let token = if page.backwards() { context.start } else { context.end };
            Some(token.ok_or("no pagination token")?)
        }
        Page::Oldest | Page::Newest => None,
    };
    let direction = if page.backwards() { Direction::Backward } else { Direction::Forward };
    let query = MessagesQuery::room_messages(direction, max, from);
    let read = bot.messages(room_id, &query).await.map_err(|error| error.to_string())?;
    let complete = read.end.is_none() || read.chunk.len() < max;
    let mut events = read.chunk;
    if page.backwards() {
        events.reverse();
    }
    Ok((events, complete))
}

impl GatewayMucs<'_> {
    /// Answers a MAM query to a gateway MUC: the page as `<result/>` messages, then `<fin/>` in the IQ result.
    pub(super) async fn serve_archive(&self, from: &Jid, to: &Jid, id: &str, payload: &Element) {
        let answer = match Query::try_from(payload.clone()) {
            Ok(query) => self.archive_page(from, &to.to_bare(), query).await,
            Err(error) => {
                Err(StanzaError::new(ErrorType::Modify, DefinedCondition::BadRequest, "en", error.to_string()))
            }
        };
        let reply = match answer {
            Ok(fin) => Iq::from_result(id, Some(fin)).with_from(to.clone()).with_to(from.clone()),
            Err(error) => {
                Iq::Error { from: Some(to.clone()), to: Some(from.clone()), id: id.to_owned(), error, payload: None }
            }
        };
        let _ = self.send(reply).await;
    }

    async fn archive_page(&self, requester: &Jid, room: &BareJid, query: Query) -> Result<Fin, StanzaError> {
        let failure = |condition, text: String| StanzaError::new(ErrorType::Cancel, condition, "en", text);
        let alias = room.node().and_then(|node| alias_of_room(node.as_str())).unwrap_or_default();
        let alias_id = ruma::OwnedRoomAliasId::try_from(alias.as_str())
            .map_err(|_| failure(DefinedCondition::ItemNotFound, format!("{alias} is not a Matrix room alias")))?;
        let room_id =
            self.bridge.matrix().resolve_alias(&alias_id).await.ok().flatten().ok_or_else(|| {
                failure(DefinedCondition::ItemNotFound, format!("no Matrix room has the alias {alias}"))
            })?;
        let (page, max) = Page::of(query.set.as_ref());
        let bot = self.bridge.matrix().bot();
        let (events, complete) = self::page(&bot, &room_id, &page, max)
            .await
            .map_err(|error| failure(DefinedCondition::ItemNotFound, error))?;
        let mut ids = Vec::new();
        for event in &events {
            let Some((event_id, text)) = archived(event) else { continue };
            let sender = event.get("sender").and_then(Value::as_str).unwrap_or_default();
            let Ok(occupant) = room.with_resource_str(&self.nick_of(room, sender).await) else { continue };
            let mut archived = Message::groupchat(None::<Jid>).with_body(Lang::new(), text);
            archived.from = Some(occupant.into());
            archived.id = Some(Id(event_id.to_owned()));
            archived.payloads.push(crate::xep::ids::gateway_muc_occupant_id(room, sender).into());
            let delay = event.get("origin_server_ts").and_then(Value::as_u64).and_then(stamp).map(|stamp| Delay {
                from: None,
                stamp,
                data: None,
            });
            let result = Result_ {
                id: event_id.to_owned(),
                queryid: query.queryid.as_ref().map(|queryid| QueryId(queryid.0.clone())),
                forwarded: Forwarded { delay, message: archived },
            };
            let mut envelope = Message::new(Some(requester.clone()));
            envelope.payloads.push(in_client_namespace(result.into()));
            envelope.type_ = MessageType::Normal;
            envelope.from = Some(room.clone().into());
            if self.send(envelope).await.is_err() {
                return Err(failure(DefinedCondition::ServiceUnavailable, "the XMPP link dropped".into()));
            }
            ids.push(event_id.to_owned());
        }
        let count = match count(&bot, &room_id, MAX_COUNTED).await {
            Ok(count) => count,
            Err(error) => {
                tracing::info!(%room, %error, "cannot count the messages of a gateway MUC's archive");
                None
            }
        };
        let set = SetResult {
            first: ids.first().map(|item| First { index: first_index(&page, count, ids.len()), item: item.clone() }),
            last: ids.last().cloned(),
            count,
        };
        Ok(Fin { complete, set })
    }
}

/// The position of a page's first item in the whole archive, where it is known: 0 for the oldest page, the count
/// less the page for the newest.
fn first_index(page: &Page, count: Option<usize>, served: usize) -> Option<usize> {
    match page {
        Page::Oldest => Some(0),
        Page::Newest => count?.checked_sub(served),
        Page::Before(_) | Page::After(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn set(max: Option<usize>, before: Option<&str>, after: Option<&str>) -> SetQuery {
        SetQuery { max, after: after.map(str::to_owned), before: before.map(str::to_owned), index: None }
    }

    #[test]
    fn rsm_positions_become_pages() {
        let table = [
            (None, (Page::Oldest, DEFAULT_PAGE)),
            (Some(set(Some(2), Some(""), None)), (Page::Newest, 2)),
            (Some(set(None, Some("$e"), None)), (Page::Before("$e".into()), DEFAULT_PAGE)),
            (Some(set(Some(10_000), None, Some("$e"))), (Page::After("$e".into()), MAX_PAGE)),
            (Some(set(Some(5), None, None)), (Page::Oldest, 5)),
        ];
        for (query, expected) in table {
            assert_eq!(Page::of(query.as_ref()), expected, "{query:?}");
        }
        assert!(Page::Newest.backwards() && Page::Before("$e".into()).backwards());
        assert!(!Page::Oldest.backwards() && !Page::After("$e".into()).backwards());
    }

    #[test]
    fn first_items_are_placed_only_where_known() {
        assert_eq!(first_index(&Page::Oldest, None, 5), Some(0));
        assert_eq!(first_index(&Page::Newest, Some(12), 5), Some(7));
        assert_eq!(first_index(&Page::Newest, None, 5), None);
        assert_eq!(first_index(&Page::Newest, Some(3), 5), None, "a count older than the page is no position");
        assert_eq!(first_index(&Page::Before("$e".into()), Some(12), 5), None);
        assert_eq!(first_index(&Page::After("$e".into()), Some(12), 5), None);
    }

    #[test]
    fn archived_events_are_messages_with_text() {
        let message = json!({"event_id": "$m", "content": {"msgtype": "m.text", "body": "hi"}});
        assert_eq!(archived(&message), Some(("$m", "hi".to_owned())));
        assert_eq!(archived(&json!({"event_id": "$r", "content": {}})), None, "redacted");
        assert_eq!(archived(&json!({"content": {"body": "hi"}})), None, "no ID");
    }
}
