//! [XEP-0030: Service Discovery](https://xmpp.org/extensions/xep-0030.html) on the gateway's own JIDs: the gateway
//! domain is a Matrix gateway and a conference service whose items are the browsable Matrix rooms; a Matrix user's
//! gateway JID is a registered account. Gateway MUCs answer for themselves in [`crate::gateway::gateway_muc`].
//!
//! The room list is the homeserver's public room directory (`GET /_matrix/client/v3/publicRooms`), like biboumi
//! listing an IRC server's public channels and bifrost its homeserver's directory: rooms someone chose to publish.
//! Rooms XMPP users happen to occupy are not listed on that account alone, so joining a private room from XMPP does
//! not advertise it to everyone who browses the gateway.

use serde_json::Value;
use tokio_xmpp::parsers::{
    disco::{DiscoInfoResult, DiscoItemsResult, Identity, Item},
    jid::{BareJid, Jid},
    ns,
};

use super::{Gateway, gateway_muc::room_node_of_alias};

/// How many rooms of the directory a disco#items answer lists at most; clients show the list as one page.
pub(super) const MAX_LISTED_ROOMS: u32 = 200;

/// The features the gateway domain offers.
const GATEWAY_FEATURES: [&str; 5] = [ns::DISCO_INFO, ns::DISCO_ITEMS, ns::MUC, ns::PING, ns::VERSION];

/// The gateway MUC item of one `publicRooms` entry: `#alias#server@gateway` named by the room's name. Rooms without
/// a canonical alias have no gateway JID and are left out.
pub(super) fn directory_item(gateway: &str, room: &Value) -> Option<Item> {
    let alias = room.get("canonical_alias")?.as_str()?;
    let node = room_node_of_alias(alias)?;
    let jid = BareJid::new(&format!("{node}@{gateway}")).ok()?;
    let name = room.get("name").and_then(Value::as_str).filter(|name| !name.is_empty()).unwrap_or(alias);
    Some(Item { jid: jid.into(), node: None, name: Some(name.to_owned()) })
}

impl Gateway {
    /// disco#info of the gateway domain or of a Matrix user's gateway JID.
    pub(crate) fn disco_info(&self, to: &Jid) -> DiscoInfoResult {
        let (identities, features): (Vec<Identity>, &[&str]) = if to.node().is_none() {
            let identities = vec![
                Identity::new("gateway", "matrix", "en", "Matrix"),
                Identity::new("conference", "text", "en", "Matrix rooms"),
            ];
            (identities, &GATEWAY_FEATURES)
        } else {
            (vec![Identity::new("account", "registered", "en", to.to_bare().to_string())], &[ns::DISCO_INFO, ns::PING])
        };
        DiscoInfoResult {
            node: None,
            identities,
            features: features.iter().map(|feature| (*feature).to_owned()).collect(),
            extensions: Vec::new(),
        }
    }

    /// disco#items of the gateway domain (the public room directory as gateway MUCs) or of a user JID (none).
    pub(crate) async fn disco_items(&self, to: &Jid) -> DiscoItemsResult {
        let mut items = Vec::new();
        if to.node().is_none() {
            match self.public_rooms().await {
                Ok(rooms) => {
                    items = rooms.iter().filter_map(|room| directory_item(self.addressing.gateway(), room)).collect();
                }
                // An empty list is still a true answer about what can be browsed now; the log says why.
                Err(error) => tracing::warn!(%error, "cannot read the Matrix room directory for disco#items"),
            }
        }
        DiscoItemsResult { node: None, items, rsm: None }
    }

    async fn public_rooms(&self) -> lattice_bridge_core::matrix::Result<Vec<Value>> {
        self.bridge.matrix().bot().public_rooms(MAX_LISTED_ROOMS).await
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn directory_rooms_become_gateway_mucs() {
        let item =
            directory_item("bridge.example.org", &json!({"canonical_alias": "#Rust:matrix.org", "name": "Rust"}));
        let item = item.unwrap();
        assert_eq!(item.jid.as_str(), "#^rust#matrix.org@bridge.example.org");
        assert_eq!(item.name.as_deref(), Some("Rust"));
        let unnamed = directory_item("g.org", &json!({"canonical_alias": "#a:b.org", "name": ""})).unwrap();
        assert_eq!(unnamed.name.as_deref(), Some("#a:b.org"));
        assert!(directory_item("g.org", &json!({"room_id": "!x", "name": "no alias"})).is_none());
        assert!(directory_item("g.org", &json!({"canonical_alias": "not an alias"})).is_none());
    }
}
