//! The plain data a connector and the runtime exchange: who the connector is, what a portal carries, and the specs
//! of ghosts, portals and commands.

use lattice_config::PermissionLevel;
use serde::{Deserialize, Serialize};

use crate::store::Portal;

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
