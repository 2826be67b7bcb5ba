//! Service discovery on the gateway: the gateway domain's identities and its room list (the homeserver's public
//! room directory), and a gateway MUC's features and (private) item list.

use serde_json::json;

use crate::{
    client::to_xml,
    fixture::{Fixture, WAIT},
};

const DISCO_INFO: &str = "<query xmlns='http://jabber.org/protocol/disco#info'/>";
const DISCO_ITEMS: &str = "<query xmlns='http://jabber.org/protocol/disco#items'/>";

#[tokio::test]
async fn the_gateway_lists_the_public_room_directory() -> anyhow::Result<()> {
    let fixture = Fixture::start().await?;
    let alice = fixture.matrix_user("alice").await?;
    alice
        .create_room(json!({"preset": "public_chat", "visibility": "public", "room_alias_name": "Teahouse",
            "name": "The Teahouse"}))
        .await?;
    alice.create_room(json!({"preset": "private_chat", "room_alias_name": "hideout", "name": "Hideout"})).await?;
    let mut xavier = fixture.xmpp_user("xavier").await?;

    // The gateway domain: a Matrix gateway and a conference service that can be browsed.
    let info = to_xml(&xavier.iq("get", "bridge.localhost", DISCO_INFO).await?);
    for expected in [
        "type='result'",
        "category='gateway'",
        "type='matrix'",
        "category='conference'",
        "type='text'",
        "var='http://jabber.org/protocol/disco#items'",
        "var='http://jabber.org/protocol/muc'",
    ] {
        assert!(info.contains(expected), "{expected} missing in {info}");
    }

    // Its items: the published room, by name, as a gateway MUC with its alias's case encoded; not the private one.
    let items = xavier.iq("get", "bridge.localhost", DISCO_ITEMS).await?;
    assert_eq!(items.attr("type"), Some("result"), "{}", to_xml(&items));
    let query = items.get_child("query", "http://jabber.org/protocol/disco#items").expect("a disco#items query");
    let listed: Vec<(String, String)> = query
        .children()
        .map(|item| (item.attr("jid").unwrap_or_default().to_owned(), item.attr("name").unwrap_or_default().to_owned()))
        .collect();
    assert_eq!(listed, [("#^teahouse#localhost@bridge.localhost".to_owned(), "The Teahouse".to_owned())]);

    // The room: the features clients check, no MAM claimed, and an empty (private) occupant list.
    let room = "#^teahouse#localhost@bridge.localhost";
    let info = to_xml(&xavier.iq("get", room, DISCO_INFO).await?);
    for expected in [
        "category='conference'",
        "var='muc_public'",
        "var='muc_open'",
        "var='muc_persistent'",
        "var='muc_nonanonymous'",
        "var='http://jabber.org/protocol/muc#stable_id'",
        // The room's Matrix history is its archive.
        "var='urn:xmpp:mam:2'",
    ] {
        assert!(info.contains(expected), "{expected} missing in {info}");
    }
    let room_items = xavier.iq("get", room, DISCO_ITEMS).await?;
    assert_eq!(room_items.attr("type"), Some("result"), "{}", to_xml(&room_items));

    // The listed JID is a room XMPP users can enter, with Alice in it.
    xavier.join_muc(room, "Xavier").await?;
    xavier.wait_for_presence(&format!("{room}/alice"), WAIT, |kind| kind.is_none()).await?;
    Ok(())
}
