//! The connector interface: what a protocol crate (IRC, XMPP) implements to plug into the runtime.
//!
//! The runtime calls a connector with Matrix events strictly in order per portal, concurrently across portals, and
//! asks it to resolve ghosts and aliases on demand. A connector pushes what happens on its network through the
//! [`BridgeHandle`](crate::BridgeHandle) it receives in [`Connector::start`]; the runtime persists those events and
//! turns them into Matrix calls, again in order per portal.

use std::future::Future;

pub use self::{
    error::{ConnectorError, ConnectorResult},
    sent::{Confirmation, RemoteId, Sent},
    specs::{
        BridgeInfoSpec, Capabilities, CommandContext, CommandSpec, ConnectorInfo, DirectChat, GhostSpec, PortalSpec,
    },
};
use crate::{
    BridgeHandle,
    event::{MatrixEvent, Message, Relation},
    store::Portal,
};

mod error;
mod sent;
mod specs;

/// A Matrix event in a portal, as the per-kind methods of [`Connector`] receive it.
#[derive(Debug, Clone, Copy)]
pub struct InPortal<'a> {
    /// The portal the event happened in.
    pub portal: &'a Portal,
    /// The whole event (its ID, room, timestamp, raw JSON).
    pub event: &'a MatrixEvent,
    /// Who sent it: a Matrix user with permission to use the bridge, never one of the bridge's own users.
    pub sender: &'a str,
}

/// A membership change (`m.room.member`), as [`Connector::matrix_membership`] receives it.
#[derive(Debug, Clone, Copy)]
pub struct MembershipChange<'a> {
    /// Whose membership changed (the state key).
    pub user_id: &'a str,
    /// `join`, `leave`, `invite`, `ban` or `knock`.
    pub membership: &'a str,
    /// The display name in the member event.
    pub displayname: Option<&'a str>,
    /// Whether the invite marks a direct chat.
    pub is_direct: bool,
    /// The reason given (kicks, bans).
    pub reason: Option<&'a str>,
}

/// The interface a protocol connector implements.
///
/// Methods return `Send` futures so the runtime can drive them from its worker tasks. Defaults make every optional
/// part opt-in: a Matrix event kind a connector does not implement comes to nothing on its network.
///
/// A Matrix event handler's error retries the event (transient; the room's later events wait) or sets it aside and
/// tells the sender (permanent). What a handler returns ([`Sent`]) is what the runtime records in the message map.
pub trait Connector: Send + Sync + 'static {
    /// Who the connector is.
    fn info(&self) -> ConnectorInfo;

    /// Starts the connector's network work. Called once, after the runtime's HTTP server listens; `bridge` stays
    /// valid for the life of the process.
    fn start(&self, bridge: BridgeHandle) -> impl Future<Output = ConnectorResult<()>> + Send;

    /// Stops the connector's network work: called once when the bridge stops serving, so its connections close
    /// (and a bridge started again on the same network is not refused as a duplicate).
    fn stop(&self) -> impl Future<Output = ()> + Send {
        async {}
    }

    /// What a portal supports.
    fn capabilities(&self, portal: &Portal) -> Capabilities {
        let _ = portal;
        Capabilities::default()
    }

    /// A new message in a portal.
    fn matrix_message(
        &self,
        at: InPortal<'_>,
        message: &Message,
    ) -> impl Future<Output = ConnectorResult<Sent>> + Send {
        let _ = (at, message);
        async { Ok(Sent::Nothing) }
    }

    /// A replacement (`m.replace`) of an earlier message; `target` carries the remote messages it became.
    fn matrix_edit(
        &self,
        at: InPortal<'_>,
        target: &Relation,
        new_content: &Message,
    ) -> impl Future<Output = ConnectorResult<Sent>> + Send {
        let _ = (at, target, new_content);
        async { Ok(Sent::Nothing) }
    }

    /// A reaction (`m.annotation`) with `key` to an earlier event.
    fn matrix_reaction(
        &self,
        at: InPortal<'_>,
        target: &Relation,
        key: &str,
    ) -> impl Future<Output = ConnectorResult<Sent>> + Send {
        let _ = (at, target, key);
        async { Ok(Sent::Nothing) }
    }

    /// A redaction of an earlier event.
    fn matrix_redaction(
        &self,
        at: InPortal<'_>,
        target: &Relation,
        reason: Option<&str>,
    ) -> impl Future<Output = ConnectorResult<Sent>> + Send {
        let _ = (at, target, reason);
        async { Ok(Sent::Nothing) }
    }

    /// A membership change in a portal (joins, leaves, kicks, bans, invites).
    fn matrix_membership(
        &self,
        at: InPortal<'_>,
        change: MembershipChange<'_>,
    ) -> impl Future<Output = ConnectorResult<Sent>> + Send {
        let _ = (at, change);
        async { Ok(Sent::Nothing) }
    }

    /// The portal room's topic changed.
    fn matrix_topic(&self, at: InPortal<'_>, topic: &str) -> impl Future<Output = ConnectorResult<Sent>> + Send {
        let _ = (at, topic);
        async { Ok(Sent::Nothing) }
    }

    /// The portal room's name changed.
    fn matrix_name(&self, at: InPortal<'_>, name: &str) -> impl Future<Output = ConnectorResult<Sent>> + Send {
        let _ = (at, name);
        async { Ok(Sent::Nothing) }
    }

    /// An event the runtime does not parse (its kind is [`MatrixEventKind::Other`](crate::event::MatrixEventKind)):
    /// state events such as power levels, read from [`MatrixEvent::raw`].
    fn matrix_other(&self, at: InPortal<'_>) -> impl Future<Output = ConnectorResult<Sent>> + Send {
        let _ = at;
        async { Ok(Sent::Nothing) }
    }

    /// A message, edit, reaction or redaction left from an earlier run (the process ended after it was handed over,
    /// before it was confirmed) that the message map does not show delivered: whether the network has it anyway,
    /// found by what the connector sent it as. `Some` records the event as delivered under that remote ID instead of
    /// sending it again. The default: the network cannot tell, so it is sent again.
    fn matrix_delivered_before(
        &self,
        at: InPortal<'_>,
    ) -> impl Future<Output = ConnectorResult<Option<RemoteId>>> + Send {
        let _ = at;
        async { Ok(None) }
    }

    /// Who is typing in a portal now (ephemeral; only for portals whose [`Capabilities::typing`] is set).
    fn matrix_typing(
        &self,
        portal: &Portal,
        event: &MatrixEvent,
        user_ids: &[String],
    ) -> impl Future<Output = ConnectorResult<()>> + Send {
        let _ = (portal, event, user_ids);
        async { Ok(()) }
    }

    /// Read receipts in a portal, as (event ID, user ID) pairs (ephemeral; only for portals whose
    /// [`Capabilities::receipts`] is set).
    fn matrix_receipts(
        &self,
        portal: &Portal,
        event: &MatrixEvent,
        receipts: &[(String, String)],
    ) -> impl Future<Output = ConnectorResult<()>> + Send {
        let _ = (portal, event, receipts);
        async { Ok(()) }
    }

    /// An event in a room that is no portal: `sender` invited the bridge's ghost `invitee` to a direct chat (the
    /// invite marks it direct), which may become a portal.
    fn matrix_direct_invite(
        &self,
        event: &MatrixEvent,
        sender: &str,
        invitee: &str,
    ) -> impl Future<Output = ConnectorResult<()>> + Send {
        let _ = (event, sender, invitee);
        async { Ok(()) }
    }

    /// Any other event in a room that is no portal (nothing the bridge must act on; a connector that records
    /// everything sees it here).
    fn matrix_elsewhere(&self, event: &MatrixEvent) -> impl Future<Output = ConnectorResult<()>> + Send {
        let _ = event;
        async { Ok(()) }
    }

    /// Whether a user ID inside the bridge's namespace names a remote person that exists; called from the
    /// homeserver's `GET /_matrix/app/v1/users/{userId}`, so it must be quick.
    fn resolve_user(&self, user_id: &str) -> impl Future<Output = ConnectorResult<Option<GhostSpec>>> + Send {
        let _ = user_id;
        async { Ok(None) }
    }

    /// Whether an alias inside the bridge's namespace names a remote conversation; called from the homeserver's
    /// `GET /_matrix/app/v1/rooms/{roomAlias}`. Returning a spec makes the runtime create the portal room.
    fn resolve_alias(&self, alias: &str) -> impl Future<Output = ConnectorResult<Option<PortalSpec>>> + Send {
        let _ = alias;
        async { Ok(None) }
    }

    /// Called after the runtime created a portal room on the connector's request (for example to join the channel).
    fn portal_created(&self, portal: &Portal) -> impl Future<Output = ConnectorResult<()>> + Send {
        let _ = portal;
        async { Ok(()) }
    }

    /// Third-party protocol metadata (`GET /_matrix/app/v1/thirdparty/protocol/{protocol}`), or `None`.
    fn thirdparty_protocol(&self) -> Option<serde_json::Value> {
        None
    }

    /// Third-party locations matching `fields` (`GET /_matrix/app/v1/thirdparty/location/{protocol}`).
    fn thirdparty_locations(
        &self,
        fields: &std::collections::BTreeMap<String, String>,
    ) -> impl Future<Output = ConnectorResult<Vec<serde_json::Value>>> + Send {
        let _ = fields;
        async { Ok(Vec::new()) }
    }

    /// Third-party users matching `fields` (`GET /_matrix/app/v1/thirdparty/user/{protocol}`).
    fn thirdparty_users(
        &self,
        fields: &std::collections::BTreeMap<String, String>,
    ) -> impl Future<Output = ConnectorResult<Vec<serde_json::Value>>> + Send {
        let _ = fields;
        async { Ok(Vec::new()) }
    }

    /// HTTP routes of the connector's own (a provisioning API, say), served on the bridge's listener beside the
    /// appservice API. They are outside the homeserver's `hs_token` check: the connector authenticates them itself.
    /// Called once, before [`Connector::start`]; the routes must answer sensibly until the connector has started.
    fn http_routes(&self) -> Option<axum::Router> {
        None
    }

    /// The commands the connector adds to the bridge bot.
    fn commands(&self) -> Vec<CommandSpec> {
        Vec::new()
    }

    /// Runs one of [`Connector::commands`]; the returned text is the bot's reply (Markdown-free plain text).
    fn run_command(&self, name: &str, context: CommandContext) -> impl Future<Output = ConnectorResult<String>> + Send {
        let _ = context;
        let message = format!("the command `{name}` is not implemented by this bridge");
        async move { Err(ConnectorError::permanent(message)) }
    }
}
