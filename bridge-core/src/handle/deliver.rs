//! The remote → Matrix half of the pipeline: [`RemoteHandler`] turns each queued [`RemoteEvent`] into homeserver
//! calls, sent by the event's ghost (or the bot) into its portal's room under a transaction ID derived from the
//! queue item, so a resend after a crash is dropped by the homeserver; the Matrix event a remote message became is
//! mapped to its remote ID.

use std::{sync::Weak, time::Duration};

use ruma::{MilliSecondsSinceUnixEpoch, OwnedEventId, OwnedRoomId, OwnedUserId, UInt};
use serde_json::{Value, json};

use super::{BridgeHandle, Core, message_content};
use crate::{
    Error, Result,
    dispatch::{Handler, Outcome},
    error::parse_id,
    event::{MessageType, RemoteEvent, RemoteEventKind},
    matrix::{Intent, MatrixError},
    store::{MessageMapping, Portal, QueuedItem},
};

/// How long a typing notification from a remote person lasts unless renewed.
const TYPING_TIMEOUT: Duration = Duration::from_secs(30);

/// Turns queued [`RemoteEvent`]s into homeserver calls.
pub(crate) struct RemoteHandler {
    pub(crate) core: Weak<Core>,
}

impl Handler for RemoteHandler {
    async fn handle(&self, item: &QueuedItem) -> Outcome {
        let Some(core) = self.core.upgrade() else {
            return Outcome::Retry { after: Some(Duration::from_secs(1)), reason: "the bridge is stopping".into() };
        };
        let event: RemoteEvent = match serde_json::from_str(&item.payload) {
            Ok(event) => event,
            Err(error) => return Outcome::GiveUp { reason: format!("unreadable remote event: {error}") },
        };
        match deliver(&BridgeHandle::new(core), item, &event).await {
            Ok(()) => Outcome::Done,
            Err(error) if error.is_transient() => {
                Outcome::Retry { after: error.retry_after(), reason: error.to_string() }
            }
            Err(error) => Outcome::GiveUp { reason: error.to_string() },
        }
    }
}

/// The transaction ID of a queued remote event: unique per store (`seq`) and per store lifetime (`enqueued_at`), so
/// the homeserver deduplicates a resend after a crash and never confuses two stores. A message or file with a
/// remote ID is named by that ID in its portal instead: a network message pushed twice (the connector heard it
/// again after a crash, before it could say it had handled it) is one Matrix event.
fn transaction_id(item: &QueuedItem, event: &RemoteEvent) -> String {
    let is_content = matches!(event.kind, RemoteEventKind::Message { .. } | RemoteEventKind::Media { .. });
    match &event.remote_id {
        Some(remote_id) if is_content => {
            use sha2::Digest as _;
            let digest = sha2::Sha256::new().chain_update(&event.portal).chain_update([0]).chain_update(remote_id);
            let name: String = digest.finalize().iter().take(12).map(|byte| format!("{byte:02x}")).collect();
            format!("lattice.m.{name}")
        }
        _ => format!("lattice.{}.{}", item.enqueued_at, item.seq),
    }
}

async fn deliver(bridge: &BridgeHandle, item: &QueuedItem, event: &RemoteEvent) -> Result<()> {
    let delivery = Delivery::prepare(bridge, item, event).await?;
    let event_id = delivery.send(&event.kind).await?;
    if let (Some(event_id), Some(remote_id)) = (event_id, &event.remote_id) {
        bridge.store().map_message(MessageMapping {
            event_id: event_id.to_string(),
            room_id: delivery.portal.room_id.clone(),
            portal_key: delivery.portal.remote_key.clone(),
            remote_id: remote_id.clone(),
        });
    }
    Ok(())
}

/// One remote event on its way into its portal's room: who sends it, when, and under which transaction ID.
struct Delivery<'a> {
    bridge: &'a BridgeHandle,
    portal: Portal,
    room_id: OwnedRoomId,
    /// The event's ghost, in the room (unless it is leaving), or the bot for events without a sender.
    intent: Intent,
    bot: Intent,
    ts: Option<MilliSecondsSinceUnixEpoch>,
    txn_id: String,
}

impl<'a> Delivery<'a> {
    /// Finds the event's portal and makes sure its sender exists, looks right and is in the room.
    async fn prepare(bridge: &'a BridgeHandle, item: &QueuedItem, event: &RemoteEvent) -> Result<Self> {
        let Some(portal) = bridge.store().portal_by_key(&event.portal).await? else {
            return Err(Error::Connector(crate::ConnectorError::permanent(format!(
                "no portal for `{}`: create it with ensure_portal before pushing events",
                event.portal
            ))));
        };
        let room_id: OwnedRoomId = parse_id("room ID", &portal.room_id)?;
        let bot = bridge.bot()?;
        let intent = match &event.sender {
            Some(ghost) => {
                let intent = bridge.sync_ghost(ghost).await?;
                if !matches!(event.kind, RemoteEventKind::Leave { .. }) {
                    intent.ensure_joined_via(&room_id, &bot).await?;
                }
                intent
            }
            None => {
                bot.ensure_joined(&room_id).await?;
                bot.clone()
            }
        };
        let ts = event.timestamp_ms.and_then(UInt::new).map(MilliSecondsSinceUnixEpoch);
        Ok(Self { bridge, portal, room_id, intent, bot, ts, txn_id: transaction_id(item, event) })
    }

    /// Sends what the event is on Matrix; returns the Matrix event it became, if it is one a later remote event
    /// may refer to.
    async fn send(&self, kind: &RemoteEventKind) -> Result<Option<OwnedEventId>> {
        let (room_id, intent) = (&self.room_id, &self.intent);
        Ok(match kind {
            RemoteEventKind::Message { msgtype, body, html, reply_to } => {
                Some(self.message(msgtype.as_msgtype(), body, html.as_deref(), reply_to.as_deref()).await?)
            }
            RemoteEventKind::Media { msgtype, filename, url, mimetype, size } => {
                let content = media_content(msgtype, filename, url, mimetype.as_deref(), *size);
                Some(self.send_message(&content).await?)
            }
            RemoteEventKind::Edit { target, body, html } => Some(self.edit(target, body, html.as_deref()).await?),
            RemoteEventKind::Redaction { target, reason } => match self.target(target).await? {
                Some(redacted) => Some(intent.redact(room_id, &redacted, reason.as_deref(), &self.txn_id).await?),
                None => None,
            },
            RemoteEventKind::Reaction { target, key } => match self.target(target).await? {
                Some(reacted) => Some(intent.react(room_id, &reacted, key, &self.txn_id).await?),
                None => None,
            },
            RemoteEventKind::Join | RemoteEventKind::Profile => None,
            RemoteEventKind::Leave { .. } => {
                intent.leave(room_id).await?;
                None
            }
            RemoteEventKind::Kick { user_id, reason } => {
                self.remove(Removal::Kick, user_id, reason.as_deref()).await?;
                None
            }
            RemoteEventKind::Ban { user_id, reason } => {
                self.remove(Removal::Ban, user_id, reason.as_deref()).await?;
                None
            }
            RemoteEventKind::Topic { topic } => Some(self.topic(topic).await?),
            RemoteEventKind::Receipt { target } => {
                if let Some(read) = self.target(target).await? {
                    intent.read_receipt(room_id, &read).await?;
                }
                None
            }
            RemoteEventKind::Typing { typing } => {
                intent.typing(room_id, *typing, TYPING_TIMEOUT).await?;
                None
            }
            RemoteEventKind::PowerLevel { user_id, level } => {
                let user: OwnedUserId = parse_id("user ID", user_id)?;
                self.bot.set_power_level(room_id, &user, *level).await?;
                None
            }
        })
    }

    async fn send_message(&self, content: &Value) -> Result<OwnedEventId> {
        Ok(self.intent.send_message_event(&self.room_id, "m.room.message", content, &self.txn_id, self.ts).await?)
    }

    /// The Matrix event a remote message of this portal became, if it reached Matrix.
    async fn target(&self, remote_id: &str) -> Result<Option<OwnedEventId>> {
        match self.bridge.store().event_for_remote(&self.portal.remote_key, remote_id).await? {
            Some(event_id) => Ok(Some(parse_id("event ID", &event_id)?)),
            None => Ok(None),
        }
    }

    /// A message, as a reply when the message it answers reached Matrix.
    async fn message(
        &self,
        msgtype: &str,
        body: &str,
        html: Option<&str>,
        reply_to: Option<&str>,
    ) -> Result<OwnedEventId> {
        let mut content = message_content(msgtype, body, html);
        if let Some(reply_to) = reply_to
            && let Some(parent) = self.target(reply_to).await?
        {
            content["m.relates_to"] = json!({"m.in_reply_to": {"event_id": parent}});
        }
        self.send_message(&content).await
    }

    /// A correction: an `m.replace` of the original, or, when the original never reached Matrix (sent before the
    /// bridge joined), the correction as it is.
    async fn edit(&self, target: &str, body: &str, html: Option<&str>) -> Result<OwnedEventId> {
        let mut content = message_content("m.text", &format!("* {body}"), None);
        if let Some(original) = self.target(target).await? {
            content["m.new_content"] = message_content("m.text", body, html);
            content["m.relates_to"] = json!({"rel_type": "m.replace", "event_id": original});
        }
        self.send_message(&content).await
    }

    /// Kicks or bans a member as the ghost, or as the bot when the ghost may not.
    async fn remove(&self, removal: Removal, user_id: &str, reason: Option<&str>) -> Result<()> {
        let user: OwnedUserId = parse_id("user ID", user_id)?;
        let room_id = &self.room_id;
        let by_ghost = match removal {
            Removal::Kick => self.intent.kick(room_id, &user, reason).await,
            Removal::Ban => self.intent.ban(room_id, &user, reason).await,
        };
        match by_ghost {
            Err(error) if is_forbidden(&error) => match removal {
                Removal::Kick => self.bot.kick(room_id, &user, reason).await?,
                Removal::Ban => self.bot.ban(room_id, &user, reason).await?,
            },
            other => other?,
        }
        Ok(())
    }

    /// Sets the room's topic as the ghost, or as the bot when the ghost may not, and keeps it with the portal.
    async fn topic(&self, topic: &str) -> Result<OwnedEventId> {
        let (room_id, ts) = (&self.room_id, self.ts);
        let content = json!({"topic": topic});
        let event_id = match self.intent.send_state_event(room_id, "m.room.topic", "", &content, ts).await {
            Err(error) if is_forbidden(&error) => {
                self.bot.send_state_event(room_id, "m.room.topic", "", &content, ts).await?
            }
            other => other?,
        };
        self.bridge.store().set_portal_topic(&self.portal.remote_key, Some(topic)).await?;
        Ok(event_id)
    }
}

/// How a remote moderator removes a member.
#[derive(Clone, Copy)]
enum Removal {
    Kick,
    Ban,
}

fn is_forbidden(error: &MatrixError) -> bool {
    error.is_errcode("M_FORBIDDEN")
}

/// A file's `m.room.message` content.
fn media_content(msgtype: &MessageType, filename: &str, url: &str, mimetype: Option<&str>, size: Option<u64>) -> Value {
    let mut info = serde_json::Map::new();
    if let Some(mimetype) = mimetype {
        info.insert("mimetype".into(), json!(mimetype));
    }
    if let Some(size) = size {
        info.insert("size".into(), json!(size));
    }
    json!({"msgtype": msgtype.as_msgtype(), "body": filename, "filename": filename, "url": url, "info": info})
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(seq: i64, enqueued_at: i64) -> QueuedItem {
        QueuedItem { seq, key: "k".into(), payload: "{}".into(), attempts: 0, enqueued_at }
    }

    #[test]
    fn transaction_ids_differ_across_stores_and_items() {
        let typing = RemoteEvent {
            portal: "p".into(),
            sender: None,
            remote_id: Some("r".into()),
            timestamp_ms: None,
            kind: RemoteEventKind::Typing { typing: true },
        };
        assert_eq!(transaction_id(&item(7, 1_000), &typing), "lattice.1000.7");
        assert_ne!(transaction_id(&item(7, 1_000), &typing), transaction_id(&item(7, 2_000), &typing));
    }

    /// A message pushed twice under one remote ID is one transaction, whichever queue items carry it; the same
    /// remote ID in another portal, or another remote ID, is another.
    #[test]
    fn a_message_is_named_by_its_remote_id_in_its_portal() {
        let message = |portal: &str, remote_id: &str| RemoteEvent {
            portal: portal.into(),
            sender: None,
            remote_id: Some(remote_id.into()),
            timestamp_ms: None,
            kind: RemoteEventKind::Message {
                msgtype: MessageType::Text,
                body: "hi".into(),
                html: None,
                reply_to: None,
            },
        };
        let first = transaction_id(&item(7, 1_000), &message("p", "nick/1"));
        assert!(first.starts_with("lattice.m."), "{first}");
        assert_eq!(first, transaction_id(&item(9, 2_000), &message("p", "nick/1")));
        assert_ne!(first, transaction_id(&item(7, 1_000), &message("q", "nick/1")));
        assert_ne!(first, transaction_id(&item(7, 1_000), &message("p", "nick/2")));
    }

    #[test]
    fn media_content_carries_what_is_known_of_the_file() {
        let content =
            media_content(&MessageType::Image, "cat.png", "mxc://example.org/cat", Some("image/png"), Some(3));
        assert_eq!(
            content,
            json!({
                "msgtype": "m.image", "body": "cat.png", "filename": "cat.png", "url": "mxc://example.org/cat",
                "info": {"mimetype": "image/png", "size": 3},
            })
        );
        assert_eq!(media_content(&MessageType::File, "a", "mxc://e/a", None, None)["info"], json!({}));
    }
}
