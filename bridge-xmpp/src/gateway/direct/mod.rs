//! One-to-one chats ([RFC 6121 §5](https://www.rfc-editor.org/rfc/rfc6121#section-5)): an XMPP user's `chat`
//! message to a Matrix user's gateway JID (`alice\40example.org@{gateway}`) becomes a Matrix DM from the XMPP user's
//! ghost, and the Matrix user's replies go back as `chat` messages from that gateway JID.
//!
//! A Matrix user who left the DM room is invited again by the next XMPP message, so nothing vanishes into a room
//! nobody reads (matrix-bifrost #213).

pub(crate) mod subscription;
mod to_matrix;
mod to_xmpp;

use lattice_bridge_core::connector::{BridgeInfoSpec, DirectChat, GhostSpec, PortalSpec};
use tokio_xmpp::parsers::jid::BareJid;

use super::{Gateway, PortalKind, facade, portal::direct_key};
use crate::addressing::XmppIdentity;

facade!(
    /// One-to-one chats and presence subscriptions.
    Direct,
    direct
);

/// The resource Matrix users' chat messages come from.
pub(super) const DIRECT_RESOURCE: &str = "matrix";

pub(super) fn ghost_of(gateway: &Gateway, jid: &BareJid) -> Option<GhostSpec> {
    let identity = XmppIdentity::Account(jid.clone());
    Some(GhostSpec {
        user_id: gateway.addressing.ghost_for(&identity)?,
        remote_id: jid.to_string(),
        displayname: Some(jid.to_string()),
        avatar_url: None,
    })
}

pub(super) fn direct_spec(jid: &BareJid, matrix_user: &str, ghost: GhostSpec) -> PortalSpec {
    PortalSpec {
        remote_key: direct_key(matrix_user, jid),
        alias_localpart: None,
        name: None,
        topic: None,
        bridge_info: BridgeInfoSpec {
            network_id: jid.domain().to_string(),
            network_name: jid.domain().to_string(),
            channel_id: jid.to_string(),
            channel_name: jid.to_string(),
        },
        public: false,
        direct: Some(DirectChat { ghost, matrix_user: matrix_user.to_owned() }),
        metadata: PortalKind::Direct { account: jid.clone(), matrix_user: matrix_user.to_owned() }.metadata(),
    }
}
