//! Bridge-info room state per [MSC2346]: `m.bridge` and its unstable predecessor `uk.half-shot.bridge`, which
//! clients read to show which network and conversation a room bridges.
//!
//! [MSC2346]: https://github.com/matrix-org/matrix-spec-proposals/pull/2346

use serde_json::{Value, json};

use crate::connector::{BridgeInfoSpec, ConnectorInfo};

/// The stable and the unstable event type; both are set, as clients read either.
pub const EVENT_TYPES: [&str; 2] = ["m.bridge", "uk.half-shot.bridge"];

/// The state key: `<bridge>:/<network>/<channel>`, as the MSC suggests, with `/` in parts percent-encoded.
pub fn state_key(appservice_id: &str, spec: &BridgeInfoSpec) -> String {
    let part = |text: &str| text.replace('%', "%25").replace('/', "%2F");
    format!("{}:/{}/{}", appservice_id, part(&spec.network_id), part(&spec.channel_id))
}

/// The content of the bridge-info event.
pub fn content(bot_user_id: &str, info: &ConnectorInfo, spec: &BridgeInfoSpec) -> Value {
    json!({
        "bridgebot": bot_user_id,
        "creator": bot_user_id,
        "protocol": {"id": info.protocol_id, "displayname": info.protocol_name},
        "network": {"id": spec.network_id, "displayname": spec.network_name},
        "channel": {"id": spec.channel_id, "displayname": spec.channel_name},
    })
}

/// Both bridge-info events as `initial_state` entries of a room creation.
pub fn initial_state(
    appservice_id: &str,
    bot_user_id: &str,
    info: &ConnectorInfo,
    spec: &BridgeInfoSpec,
) -> Vec<Value> {
    let content = content(bot_user_id, info, spec);
    let state_key = state_key(appservice_id, spec);
    EVENT_TYPES
        .iter()
        .map(|event_type| json!({"type": event_type, "state_key": state_key, "content": content}))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(channel: &str) -> BridgeInfoSpec {
        BridgeInfoSpec {
            network_id: "libera".into(),
            network_name: "Libera.Chat".into(),
            channel_id: channel.into(),
            channel_name: channel.into(),
        }
    }

    #[test]
    fn state_key_escapes_slashes_in_parts() {
        assert_eq!(state_key("lattice-irc", &spec("#rust")), "lattice-irc:/libera/#rust");
        assert_eq!(state_key("lattice-irc", &spec("#a/b%")), "lattice-irc:/libera/#a%2Fb%25");
    }

    #[test]
    fn initial_state_sets_both_event_types_with_the_same_content() {
        let info = ConnectorInfo { protocol_id: "irc", protocol_name: "IRC", command_prefix: "!irc" };
        let state = initial_state("lattice-irc", "@bot:hs", &info, &spec("#rust"));
        assert_eq!(state.len(), 2);
        assert_eq!(state[0]["type"], "m.bridge");
        assert_eq!(state[1]["type"], "uk.half-shot.bridge");
        assert_eq!(state[0]["content"], state[1]["content"]);
        assert_eq!(state[0]["content"]["protocol"]["id"], "irc");
        assert_eq!(state[0]["content"]["network"]["displayname"], "Libera.Chat");
        assert_eq!(state[0]["content"]["channel"]["id"], "#rust");
        assert_eq!(state[0]["content"]["bridgebot"], "@bot:hs");
    }
}
