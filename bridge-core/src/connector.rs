//! The connector interface: what a protocol crate (IRC, XMPP) implements to plug into the runtime.
//!
//! The runtime calls a connector with Matrix events strictly in order per portal, concurrently across portals, and
//! asks it to resolve ghosts and aliases on demand. A connector pushes what happens on its network through the
//! [`BridgeHandle`](crate::BridgeHandle) it receives in [`Connector::start`]; the runtime persists those events and
//! turns them into Matrix calls, again in order per portal.

use std::{future::Future, time::Duration};

use lattice_config::PermissionLevel;
use serde::{Deserialize, Serialize};

use crate::{BridgeHandle, event::MatrixEvent, store::Portal};

/// A connector's failure to handle something.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectorError {
    /// Worth retrying later: the network is unreachable, a connection is being re-established, a rate limit applies.
    /// The runtime retries with backoff, honouring `retry_after`, and keeps every later event of the portal waiting
    /// so order is never broken.
    #[error("temporarily unable: {message}")]
    Transient {
        /// What went wrong, for logs.
        message: String,
        /// When to try again, if the network said.
        retry_after: Option<Duration>,
    },
    /// Will never succeed: the event is set aside (dead-lettered) and the sender is told why.
    #[error("{message}")]
    Permanent {
        /// What went wrong, in words the Matrix sender can act on.
        message: String,
    },
}

impl ConnectorError {
    /// A transient error without a retry hint.
    pub fn transient(message: impl Into<String>) -> Self {
        Self::Transient { message: message.into(), retry_after: None }
    }

    /// A permanent error.
    pub fn permanent(message: impl Into<String>) -> Self {
        Self::Permanent { message: message.into() }
    }

    /// Whether retrying may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Transient { .. })
    }
}

impl From<crate::store::Error> for ConnectorError {
    fn from(error: crate::store::Error) -> Self {
        if error.is_transient() { Self::transient(error.to_string()) } else { Self::permanent(error.to_string()) }
    }
}

impl From<crate::matrix::MatrixError> for ConnectorError {
    fn from(error: crate::matrix::MatrixError) -> Self {
        match (error.is_transient(), error.retry_after()) {
            (true, retry_after) => Self::Transient { message: error.to_string(), retry_after },
            (false, _) => Self::permanent(error.to_string()),
        }
    }
}

/// The connector's result type.
pub type ConnectorResult<T> = Result<T, ConnectorError>;

/// A Matrix event's delivery that the remote network has yet to confirm (see [`confirm_later`]).
pub type PendingConfirmation = std::pin::Pin<Box<dyn Future<Output = ConnectorResult<()>> + Send>>;

tokio::task_local! {
    /// Where [`confirm_later`] leaves its confirmation for the runtime, while a Matrix event is being handled.
    pub(crate) static CONFIRMATION: std::sync::Arc<std::sync::Mutex<Option<PendingConfirmation>>>;
}

/// Lets the runtime go on with the room's next messages while the network confirms this event's delivery (an XMPP
/// MUC reflecting a message), instead of waiting for it in [`Connector::handle_matrix_event`]. Call it as the last
/// step of handling the event, once it is sent. The event stays queued until `confirmation` resolves: `Ok` settles
/// it; an error counts as if `handle_matrix_event` had returned it (a transient one sends the event again, after the
/// messages that ran ahead; a permanent one tells the sender). Events that refer to earlier ones (edits, replies,
/// reactions, redactions, receipts) wait until everything before them is confirmed, so the confirmation may record
/// what they look up. Outside the runtime's handling there is no one to hand it to: `confirmation` comes back, to
/// be awaited by the caller.
pub fn confirm_later(
    confirmation: impl Future<Output = ConnectorResult<()>> + Send + 'static,
) -> Result<(), PendingConfirmation> {
    let confirmation: PendingConfirmation = Box::pin(confirmation);
    match CONFIRMATION.try_with(std::sync::Arc::clone) {
        Ok(slot) => {
            *slot.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(confirmation);
            Ok(())
        }
        Err(_) => Err(confirmation),
    }
}

/// Who the connector is, for bridge-info state, third-party lookups, logs and commands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectorInfo {
    /// Protocol identifier, lower case: `irc`, `xmpp`. Also the third-party protocol name.
    pub protocol_id: &'static str,
    /// Human-readable protocol name: `IRC`, `XMPP`.
    pub protocol_name: &'static str,
    /// Prefix of bridge commands typed in portal rooms, e.g. `!irc`.
    pub command_prefix: &'static str,
}

/// What a portal can carry, declared by the connector per portal. The runtime does not hand a portal the ephemeral
/// events it cannot carry (typing, receipts); everything else reaches the connector, which degrades what its network
/// lacks in its own way (an edit to IRC becomes a correction line).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Capabilities {
    /// Longest text the remote side accepts in one message, in bytes; longer messages are split by the connector.
    pub max_text_length: usize,
    /// Rich formatting survives the trip.
    pub formatting: bool,
    /// Edits map onto the network's corrections.
    pub edits: bool,
    /// Replies map onto the network's replies.
    pub replies: bool,
    /// Reactions map onto the network's reactions.
    pub reactions: bool,
    /// Redactions map onto the network's deletions.
    pub redactions: bool,
    /// Typing notifications are carried.
    pub typing: bool,
    /// Read receipts are carried.
    pub receipts: bool,
}

impl Default for Capabilities {
    /// The least any text network can do: plain text, nothing else.
    fn default() -> Self {
        Self {
            max_text_length: 4096,
            formatting: false,
            edits: false,
            replies: false,
            reactions: false,
            redactions: false,
            typing: false,
            receipts: false,
        }
    }
}

/// The profile of a ghost the connector agreed exists, returned from [`Connector::resolve_user`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GhostSpec {
    /// The ghost's Matrix user ID (inside the bridge's exclusive namespace).
    pub user_id: String,
    /// The connector's stable ID for the remote person.
    pub remote_id: String,
    /// Display name to set.
    pub displayname: Option<String>,
    /// Avatar (mxc URI) to set.
    pub avatar_url: Option<String>,
}

/// MSC2346 bridge-info names for a portal: which network and which conversation it bridges.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BridgeInfoSpec {
    /// Network ID, e.g. `libera`.
    pub network_id: String,
    /// Network display name, e.g. `Libera.Chat`.
    pub network_name: String,
    /// Conversation ID, e.g. `#rust`.
    pub channel_id: String,
    /// Conversation display name.
    pub channel_name: String,
}

/// What the connector asks for when a portal must exist: from an alias query or because remote traffic arrived.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PortalSpec {
    /// The connector's key for the remote conversation; unique across the bridge.
    pub remote_key: String,
    /// Alias localpart to give the room (`irc_libera_#rust`), if it is reachable by alias.
    pub alias_localpart: Option<String>,
    /// Room name.
    pub name: Option<String>,
    /// Room topic.
    pub topic: Option<String>,
    /// Bridge-info state to place in the room.
    pub bridge_info: BridgeInfoSpec,
    /// Whether anyone may join (an alias portal) or only invitees (a DM).
    pub public: bool,
    /// For a direct chat: the ghost who owns the room and the Matrix user invited to it.
    pub direct: Option<DirectChat>,
    /// Connector-specific data kept with the portal.
    pub metadata: serde_json::Value,
}

/// The two parties of a bridged direct chat.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DirectChat {
    /// The remote person's ghost, who creates the room.
    pub ghost: GhostSpec,
    /// The Matrix user the chat is with.
    pub matrix_user: String,
}

/// A bridge command a connector offers in admin rooms (and, with the command prefix, in portals).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandSpec {
    /// The word that runs it.
    pub name: &'static str,
    /// Argument synopsis, e.g. `<nick>`.
    pub usage: &'static str,
    /// One line for `help`.
    pub summary: &'static str,
    /// Who may run it.
    pub level: PermissionLevel,
}

/// Everything a command handler needs to know about its invocation.
#[derive(Debug, Clone)]
pub struct CommandContext {
    /// Who typed the command.
    pub sender: String,
    /// Where: the admin room or a portal.
    pub room_id: String,
    /// The portal, when the command was typed in one.
    pub portal: Option<Portal>,
    /// The sender's permission level.
    pub level: PermissionLevel,
    /// The command's arguments, split shell-style.
    pub args: Vec<String>,
}

/// The interface a protocol connector implements.
///
/// Methods return `Send` futures so the runtime can drive them from its worker tasks. Defaults make every optional
/// part opt-in.
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

    /// Handles one Matrix event: in a portal, or (`portal` is `None`) in another room the bridge sees, such as a new
    /// direct chat a Matrix user opened with a ghost. Called in order per room; returning an error retries
    /// (transient) or sets the event aside and tells the sender (permanent). Echoes of the bridge's own users and
    /// events from users without permission never arrive here.
    fn handle_matrix_event(
        &self,
        portal: Option<&Portal>,
        event: &MatrixEvent,
    ) -> impl Future<Output = ConnectorResult<()>> + Send;

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
