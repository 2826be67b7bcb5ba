//! What gateway user JIDs (`alice\40example.org@{gateway}`) say they can do:
//! [XEP-0030: Service Discovery](https://xmpp.org/extensions/xep-0030.html) answers,
//! [XEP-0115: Entity Capabilities](https://xmpp.org/extensions/xep-0115.html) in their presence, and
//! [XEP-0092: Software Version](https://xmpp.org/extensions/xep-0092.html).
//!
//! The feature list is what the bridge really carries for a Matrix user; the caps hash is computed over it with
//! xmpp-parsers' caps module, so a client that caches by hash sees exactly these features.

use xmpp_parsers::{
    caps::{self, Caps},
    disco::{DiscoInfoResult, Identity},
    hashes::Algo,
    ns,
    version::VersionResult,
};

use super::{chat_states::NS_MARKERS, reply, retract, user_avatar};

/// The XEP-0115 node naming the software behind gateway user JIDs.
pub(crate) const CAPS_NODE: &str = "urn:lattice:bridge-xmpp";

/// Every feature a gateway user JID handles, both ways.
pub(crate) const USER_FEATURES: &[&str] = &[
    ns::DISCO_INFO,
    ns::CAPS,
    ns::VERSION,
    ns::PING,
    ns::CHATSTATES,
    NS_MARKERS,
    ns::MESSAGE_CORRECT,
    retract::NS_RETRACT,
    ns::REACTIONS,
    reply::NS_REPLY,
    reply::NS_FALLBACK,
    ns::SID,
    ns::OOB,
    user_avatar::NOTIFY_METADATA,
];

/// The disco#info of a gateway user JID; `node` is echoed for a query on the caps node.
pub(crate) fn user_disco(node: Option<String>) -> DiscoInfoResult {
    DiscoInfoResult {
        node,
        identities: vec![Identity::new("client", "pc", "en", "Matrix user via Lattice")],
        features: USER_FEATURES.iter().map(|feature| (*feature).to_owned()).collect(),
        extensions: Vec::new(),
    }
}

/// The `<c/>` element a gateway user JID's presence carries.
pub(crate) fn user_caps() -> Caps {
    let hash = caps::hash_caps(&caps::compute_disco(&user_disco(None)), Algo::Sha_1)
        .expect("SHA-1 is one of the caps algorithms");
    Caps::new(CAPS_NODE, hash)
}

/// The caps node a disco#info query names when it asks about [`user_caps`] (`node#ver`).
#[cfg(test)]
fn caps_query_node() -> String {
    use base64::Engine as _;
    format!("{CAPS_NODE}#{}", base64::engine::general_purpose::STANDARD.encode(user_caps().ver))
}

/// The software version answer.
pub(crate) fn version() -> VersionResult {
    VersionResult { name: "Lattice".into(), version: env!("CARGO_PKG_VERSION").into(), os: None }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_caps_hash_covers_exactly_the_advertised_features() {
        let caps = user_caps();
        let recomputed = caps::hash_caps(&caps::compute_disco(&user_disco(Some(caps_query_node()))), Algo::Sha_1);
        assert_eq!(recomputed.map(|hash| hash.hash), Ok(caps.ver), "the node does not change the hash");
        let mut fewer = user_disco(None);
        fewer.features.pop_last();
        assert_ne!(
            caps::hash_caps(&caps::compute_disco(&fewer), Algo::Sha_1).map(|hash| hash.hash),
            Ok(user_caps().ver)
        );
        assert!(caps_query_node().starts_with("urn:lattice:bridge-xmpp#"));
    }
}
