//! The three kinds of portal the gateway keeps, read once from a portal's stored key and metadata.
//!
//! The store knows a portal by its remote key and keeps what the connector needs in its metadata; the key and the
//! metadata names are written here alone, so they stay what existing stores hold: a MUC portal is `muc/{room}` with
//! `{"muc": room}`, a gateway MUC `hosted/{room_id}` with `{"hosted": room}`, a direct chat `dm/{user}/{jid}` with
//! `{"dm": jid, "user": user}`.

use std::str::FromStr;

use lattice_bridge_core::store::Portal;
use serde_json::{Value, json};
use tokio_xmpp::parsers::jid::BareJid;

/// What a portal bridges.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum PortalKind {
    /// An XMPP MUC bridged into a Matrix room.
    Muc(BareJid),
    /// A Matrix room XMPP users join as a MUC on the gateway (its JID).
    GatewayMuc(BareJid),
    /// A one-to-one chat between a Matrix user and an XMPP account.
    Direct {
        /// The XMPP account.
        account: BareJid,
        /// The Matrix user.
        matrix_user: String,
    },
}

impl PortalKind {
    /// What `portal` bridges; `None` for a portal of another kind (or with metadata that does not parse).
    pub(crate) fn of(portal: &Portal) -> Option<Self> {
        let jid =
            |name: &str| portal.metadata.get(name).and_then(Value::as_str).and_then(|jid| BareJid::from_str(jid).ok());
        if let Some(room) = jid("hosted") {
            return Some(Self::GatewayMuc(room));
        }
        if let Some(account) = jid("dm") {
            let matrix_user = portal.metadata.get("user")?.as_str()?.to_owned();
            return Some(Self::Direct { account, matrix_user });
        }
        jid("muc").map(Self::Muc)
    }

    /// The metadata a new portal of this kind is stored with.
    pub(crate) fn metadata(&self) -> Value {
        match self {
            Self::Muc(room) => json!({"muc": room.as_str()}),
            Self::GatewayMuc(room) => json!({"hosted": room.as_str()}),
            Self::Direct { account, matrix_user } => json!({"dm": account.as_str(), "user": matrix_user}),
        }
    }
}

/// The portal key of a bridged MUC.
pub(crate) fn muc_key(room: &BareJid) -> String {
    format!("muc/{room}")
}

/// The portal key of a Matrix room XMPP users join as a gateway MUC.
pub(crate) fn gateway_muc_key(room_id: &str) -> String {
    format!("hosted/{room_id}")
}

/// The portal key of the direct chat between a Matrix user and an XMPP account.
pub(crate) fn direct_key(matrix_user: &str, account: &BareJid) -> String {
    format!("dm/{matrix_user}/{account}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn portal(metadata: Value) -> Portal {
        Portal { remote_key: String::new(), room_id: "!r:hs".into(), alias: None, name: None, topic: None, metadata }
    }

    #[test]
    fn each_kind_reads_back_from_the_metadata_it_writes() {
        let room = BareJid::from_str("room@conference.example.org").unwrap();
        let account = BareJid::from_str("xavier@example.org").unwrap();
        for kind in [
            PortalKind::Muc(room.clone()),
            PortalKind::GatewayMuc(BareJid::from_str("#r#hs.org@bridge.example.org").unwrap()),
            PortalKind::Direct { account, matrix_user: "@alice:hs.org".into() },
        ] {
            assert_eq!(PortalKind::of(&portal(kind.metadata())), Some(kind));
        }
    }

    #[test]
    fn portals_of_other_kinds_are_none() {
        assert_eq!(PortalKind::of(&portal(json!({}))), None);
        assert_eq!(PortalKind::of(&portal(json!({"muc": "not a jid@@"}))), None);
        assert_eq!(PortalKind::of(&portal(json!({"dm": "x@example.org"}))), None, "a direct chat names its user");
        // The store keeps a gateway MUC's occupants beside its JID.
        let hosted = json!({"hosted": "#r#hs.org@g.org", "occupants": []});
        assert!(matches!(PortalKind::of(&portal(hosted)), Some(PortalKind::GatewayMuc(_))));
    }

    #[test]
    fn keys_are_what_stores_hold() {
        let room = BareJid::from_str("room@conference.example.org").unwrap();
        assert_eq!(muc_key(&room), "muc/room@conference.example.org");
        assert_eq!(gateway_muc_key("!r:hs"), "hosted/!r:hs");
        assert_eq!(direct_key("@a:hs", &room), "dm/@a:hs/room@conference.example.org");
    }
}
