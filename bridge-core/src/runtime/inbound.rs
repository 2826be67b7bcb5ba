//! The Matrix → connector half of the pipeline: a queued Matrix event goes to the bridge bot or to the connector's
//! method for its kind, and is settled by what it came to on the network — the remote message it became recorded
//! durably first, so a replay after a crash does not send it twice.

use std::{
    sync::{Weak, atomic::Ordering},
    time::Duration,
};

use ruma::OwnedUserId;

use super::Runtime;
use crate::{
    Error, Result, bot,
    connector::{Connector, InPortal, MembershipChange, RemoteId, Sent},
    dispatch::{Handler, Outcome},
    error::parse_id,
    event::{MatrixEvent, MatrixEventKind},
    store::{MessageMapping, Portal, QueuedItem},
};

/// What handling an event came to, and where to record the remote message it became.
struct Delivery {
    sent: Sent,
    record: Option<Record>,
}

impl Delivery {
    /// Nothing went to the network.
    const NOTHING: Self = Self { sent: Sent::Nothing, record: None };
}

/// The portal and event a remote message is recorded under.
struct Record {
    event_id: String,
    room_id: String,
    portal_key: String,
}

/// Hands queued Matrix events to the bot or the connector.
pub(crate) struct InboundHandler<C> {
    pub(super) runtime: Weak<Runtime<C>>,
}

impl<C: Connector> Handler for InboundHandler<C> {
    async fn handle(&self, item: &QueuedItem) -> Outcome {
        let Some(runtime) = self.runtime.upgrade() else {
            return Outcome::Retry { after: Some(Duration::from_secs(1)), reason: "the bridge is stopping".into() };
        };
        let Some(mut event) = serde_json::from_str(&item.payload).ok().and_then(MatrixEvent::parse) else {
            return Outcome::GiveUp { reason: "not a room event".into() };
        };
        let replayed = item.seq <= runtime.replay_horizon.load(Ordering::SeqCst);
        if replayed {
            match runtime.delivered_before(&event).await {
                Ok(true) => return Outcome::Done,
                Ok(false) => {}
                Err(error) => return Outcome::Retry { after: None, reason: error.to_string() },
            }
        }
        match runtime.handle_matrix_event(&mut event, replayed).await {
            Ok(Delivery { sent: Sent::Later(confirmation), record }) => Outcome::Confirming(Box::pin(async move {
                let confirmed = match confirmation.await {
                    Ok(remote_id) => runtime.record(record, remote_id).await,
                    Err(error) => Err(error.into()),
                };
                runtime.outcome(&event, confirmed).await
            })),
            Ok(Delivery { sent: Sent::Now(remote_id), record }) => {
                let recorded = runtime.record(record, remote_id).await;
                runtime.outcome(&event, recorded).await
            }
            Ok(Delivery { sent: Sent::Nothing, .. }) => Outcome::Done,
            Err(error) => runtime.outcome(&event, Err(error)).await,
        }
    }

    fn may_run_ahead(&self, item: &QueuedItem) -> bool {
        is_new_message(&item.payload)
    }
}

impl<C: Connector> Runtime<C> {
    /// `replayed`: the event is left from an earlier run (see [`Connector::matrix_delivered_before`]).
    async fn handle_matrix_event(&self, event: &mut MatrixEvent, replayed: bool) -> Result<Delivery> {
        let core = self.handle.core();
        for relation in event.relations_mut() {
            relation.remote_ids = core
                .store
                .remotes_for_event(&relation.event_id)
                .await?
                .into_iter()
                .map(|mapping| mapping.remote_id)
                .collect();
        }
        if let MatrixEventKind::Membership { user_id, membership, .. } = &event.kind
            && let (Ok(room), Ok(user)) =
                (parse_id("room ID", &event.room_id), parse_id::<OwnedUserId>("user ID", user_id))
        {
            let room: ruma::OwnedRoomId = room;
            core.matrix.note_membership(&room, &user, membership == "join");
        }
        if bot::handle(self, event).await? {
            return Ok(Delivery::NOTHING);
        }
        if let Some(sender) = &event.sender {
            if self.handle.is_bridge_user(sender) {
                return Ok(Delivery::NOTHING);
            }
            if self.handle.permission_level(sender) < lattice_config::PermissionLevel::User {
                tracing::debug!(%sender, room_id = %event.room_id, "ignoring an event from a user without permission");
                return Ok(Delivery::NOTHING);
            }
        }
        let portal = core.store.portal_by_room(&event.room_id).await?;
        if let Some(portal) = &portal {
            let capabilities = self.connector.capabilities(portal);
            let carried = match &event.kind {
                MatrixEventKind::Typing { .. } => capabilities.typing,
                MatrixEventKind::Receipts(_) => capabilities.receipts,
                _ => true,
            };
            if !carried {
                return Ok(Delivery::NOTHING);
            }
        }
        let record = portal.as_ref().zip(event.event_id.as_ref()).map(|(portal, event_id)| Record {
            event_id: event_id.clone(),
            room_id: portal.room_id.clone(),
            portal_key: portal.remote_key.clone(),
        });
        if replayed
            && let Some(portal) = &portal
            && let Some(remote_id) = self.found_on_network(portal, event).await?
        {
            return Ok(Delivery { sent: Sent::Now(Some(remote_id)), record });
        }
        let sent = self.route(portal.as_ref(), event).await?;
        Ok(Delivery { sent, record })
    }

    /// What a content event left from an earlier run became on the network, if the connector finds it there.
    async fn found_on_network(&self, portal: &Portal, event: &MatrixEvent) -> Result<Option<RemoteId>> {
        let content = matches!(
            event.kind,
            MatrixEventKind::Message(_)
                | MatrixEventKind::Edit { .. }
                | MatrixEventKind::Reaction { .. }
                | MatrixEventKind::Redaction { .. }
        );
        let (true, Some(sender), Some(event_id)) = (content, event.sender.as_deref(), &event.event_id) else {
            return Ok(None);
        };
        let found = self.connector.matrix_delivered_before(InPortal { portal, event, sender }).await?;
        if let Some(remote_id) = &found {
            tracing::info!(%event_id, room_id = %event.room_id, remote_id = remote_id.as_str(),
                "not sending again: the network has it from before a restart");
        }
        Ok(found)
    }

    /// Hands an event to the connector's method for its kind.
    async fn route(&self, portal: Option<&Portal>, event: &MatrixEvent) -> Result<Sent> {
        let connector = &self.connector;
        let Some(portal) = portal else {
            if let (Some(sender), MatrixEventKind::Membership { user_id, membership, is_direct: true, .. }) =
                (&event.sender, &event.kind)
                && membership == "invite"
            {
                connector.matrix_direct_invite(event, sender, user_id).await?;
            } else {
                connector.matrix_elsewhere(event).await?;
            }
            return Ok(Sent::Nothing);
        };
        match &event.kind {
            MatrixEventKind::Typing { user_ids } => connector.matrix_typing(portal, event, user_ids).await?,
            MatrixEventKind::Receipts(receipts) => connector.matrix_receipts(portal, event, receipts).await?,
            _ => {}
        }
        let Some(sender) = event.sender.as_deref() else { return Ok(Sent::Nothing) };
        let at = InPortal { portal, event, sender };
        let sent = match &event.kind {
            MatrixEventKind::Message(message) => connector.matrix_message(at, message).await,
            MatrixEventKind::Edit { target, new_content } => connector.matrix_edit(at, target, new_content).await,
            MatrixEventKind::Reaction { target, key } => connector.matrix_reaction(at, target, key).await,
            MatrixEventKind::Redaction { target, reason } => {
                connector.matrix_redaction(at, target, reason.as_deref()).await
            }
            MatrixEventKind::Membership { user_id, membership, displayname, is_direct, reason } => {
                let change = MembershipChange {
                    user_id,
                    membership,
                    displayname: displayname.as_deref(),
                    is_direct: *is_direct,
                    reason: reason.as_deref(),
                };
                connector.matrix_membership(at, change).await
            }
            MatrixEventKind::Topic(topic) => connector.matrix_topic(at, topic).await,
            MatrixEventKind::Name(name) => connector.matrix_name(at, name).await,
            MatrixEventKind::Typing { .. } | MatrixEventKind::Receipts(_) => Ok(Sent::Nothing),
            _ => connector.matrix_other(at).await,
        };
        Ok(sent?)
    }

    /// Records durably what a delivered event became on the network, before its queue item is settled: a replay
    /// after a crash then finds it delivered ([`Runtime::delivered_before`]).
    async fn record(&self, record: Option<Record>, remote_id: Option<RemoteId>) -> Result<()> {
        let (Some(Record { event_id, room_id, portal_key }), Some(remote_id)) = (record, remote_id) else {
            return Ok(());
        };
        let mapping = MessageMapping { event_id, room_id, portal_key, remote_id: remote_id.into_string() };
        Ok(self.handle.core().store.record_delivery(mapping).await?)
    }

    /// Whether an event left from an earlier run reached the network then: the connector recorded its delivery
    /// (confirmed by the network) before the run ended, but not the removal of its queue item. Sending it again would
    /// show it twice.
    async fn delivered_before(&self, event: &MatrixEvent) -> Result<bool> {
        let Some(event_id) = &event.event_id else { return Ok(false) };
        let delivered = self.handle.core().store.was_delivered(event_id).await?;
        if delivered {
            tracing::info!(%event_id, room_id = %event.room_id, "not sending again: delivered before a restart");
        }
        Ok(delivered)
    }

    /// What handling `event` came to, telling its sender of a failure that will not be retried.
    async fn outcome(&self, event: &MatrixEvent, handled: Result<()>) -> Outcome {
        match handled {
            Ok(()) => Outcome::Done,
            Err(error) if error.is_transient() => {
                Outcome::Retry { after: error.retry_after(), reason: error.to_string() }
            }
            Err(error) => {
                self.tell_sender_about_failure(event, &error).await;
                Outcome::GiveUp { reason: error.to_string() }
            }
        }
    }

    /// Tells the sender of an event that could not be delivered why, in the room, once.
    async fn tell_sender_about_failure(&self, event: &MatrixEvent, error: &Error) {
        let (Some(sender), MatrixEventKind::Message(_) | MatrixEventKind::Edit { .. }) = (&event.sender, &event.kind)
        else {
            return;
        };
        let reason = match error {
            Error::Connector(error) => error.to_string(),
            other => format!("internal error ({other})"),
        };
        let text = format!(
            "⚠ {sender}: your message was not delivered to {}: {reason}",
            self.handle.core().info.protocol_name
        );
        // Keyed by the failed event: if it is handled again after a crash, the sender still reads one notice.
        let sent = match event.event_id.as_deref() {
            Some(failed) => self.handle.notice_once(&event.room_id, &text, &format!("undelivered.{failed}")).await,
            None => self.handle.notice(&event.room_id, &text).await,
        };
        if let Err(error) = sent {
            tracing::warn!(%error, room_id = %event.room_id, "cannot send a delivery-failure notice");
        }
    }
}

/// Whether a queued Matrix event is a new message: nothing in it refers to an earlier event.
fn is_new_message(payload: &str) -> bool {
    #[derive(serde::Deserialize)]
    struct Peek<'a> {
        #[serde(rename = "type", borrow)]
        event_type: std::borrow::Cow<'a, str>,
        #[serde(default)]
        content: Option<PeekContent>,
    }
    #[derive(serde::Deserialize)]
    struct PeekContent {
        #[serde(rename = "m.relates_to", default)]
        relates_to: Option<serde::de::IgnoredAny>,
    }
    serde_json::from_str::<Peek<'_>>(payload).is_ok_and(|peek| {
        peek.event_type == "m.room.message" && peek.content.is_some_and(|content| content.relates_to.is_none())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_new_messages_may_run_ahead() {
        let cases = [
            (r#"{"type":"m.room.message","content":{"msgtype":"m.text","body":"hi \"m.relates_to\""}}"#, true),
            (r#"{"type":"m.room.message","content":{"body":"* hi","m.relates_to":{"rel_type":"m.replace"}}}"#, false),
            (r#"{"type":"m.room.message","content":{"body":"re","m.relates_to":{"m.in_reply_to":{}}}}"#, false),
            (r#"{"type":"m.reaction","content":{"m.relates_to":{"key":"👍"}}}"#, false),
            (r#"{"type":"m.room.redaction","redacts":"$e","content":{}}"#, false),
            (r#"{"type":"m.receipt","content":{}}"#, false),
            (r#"{"type":"m.room.message"}"#, false),
            ("not json", false),
        ];
        for (payload, expected) in cases {
            assert_eq!(is_new_message(payload), expected, "{payload}");
        }
    }
}
