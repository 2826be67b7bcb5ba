//! Matrix rooms joined from XMPP as MUCs on the gateway: discovery, occupants, history with delay stamps, subject,
//! and conversation both ways.

use lattice_e2e::{Servers, xmpp_server_tests};
use serde_json::json;

use crate::{
    client::{escape, to_xml},
    fixture::{Fixture, WAIT, html_message},
};

xmpp_server_tests!(matrix_room_as_gateway_muc_with_history_both_ways);

async fn matrix_room_as_gateway_muc_with_history_both_ways(servers: Servers) -> anyhow::Result<()> {
    let fixture = Fixture::between(servers).await?;
    let alice = fixture.matrix_user("alice").await?;
    alice.set_display_name("Alice Liddell").await?;
    let room_id = alice
        .create_room(json!({"preset": "public_chat", "room_alias_name": "Wonderland", "name": "Wonderland",
            "topic": "tea at four"}))
        .await?;
    alice.send_text(&room_id, "history one").await?;
    alice.send_message(&room_id, html_message("history two", "history <strong>two</strong>")).await?;

    let mut xavier = fixture.xmpp_user("xavier").await?;
    // XMPP lower-cases JID nodes: `^w` stands for the upper-case `W` of `#Wonderland:localhost`.
    let room = "#^wonderland#localhost@bridge.localhost";

    // Discovery: a text conference with the MUC features clients check before joining.
    xavier
        .send_raw(&format!(
            "<iq type='get' to='{}' id='disco1'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>",
            escape(room)
        ))
        .await?;
    let info = xavier.wait_for(WAIT, |stanza| stanza.name() == "iq" && stanza.attr("id") == Some("disco1")).await?;
    assert_eq!(info.attr("type"), Some("result"), "{}", to_xml(&info));
    let xml = to_xml(&info);
    assert!(xml.contains("category='conference'") && xml.contains("type='text'"), "{xml}");
    assert!(xml.contains("var='http://jabber.org/protocol/muc'"), "{xml}");
    assert!(xml.contains("name='#Wonderland:localhost'"), "{xml}");

    // Joining: Alice is an occupant under her display name; then history with delay stamps, then the subject.
    xavier.join_muc(room, "Xavier").await?;
    let alice_occupant = format!("{room}/Alice Liddell");
    xavier
        .wait_for(WAIT, |stanza| stanza.name() == "presence" && stanza.attr("from") == Some(alice_occupant.as_str()))
        .await?;
    for expected in ["history one", "history *two*"] {
        let (nick, body, stanza) = xavier.wait_for_groupchat(room, WAIT, |body| body.starts_with("history")).await?;
        assert_eq!((nick.as_str(), body.as_str()), ("Alice Liddell", expected));
        let delay = stanza.get_child("delay", "urn:xmpp:delay");
        assert!(delay.is_some_and(|delay| delay.attr("stamp").is_some()), "no delay stamp: {}", to_xml(&stanza));
    }
    let subject = xavier
        .wait_for(WAIT, |stanza| stanza.name() == "message" && stanza.children().any(|child| child.name() == "subject"))
        .await?;
    assert_eq!(subject.attr("from"), Some(room));
    assert!(to_xml(&subject).contains("tea at four"), "{}", to_xml(&subject));

    // XMPP → Matrix: from Xavier's ghost in the room, styled; the message is reflected to Xavier.
    xavier.send_groupchat(room, "hello from *xmpp*").await?;
    let (nick, _, _) = xavier.wait_for_groupchat(room, WAIT, |body| body == "hello from *xmpp*").await?;
    assert_eq!(nick, "Xavier");
    let message = alice.wait_for_message(&room_id, WAIT, "hello from xmpp").await?;
    assert_eq!(message["sender"], "@_xmpp_xavier=40localhost:localhost");
    assert_eq!(message["content"]["formatted_body"], "hello from <strong>xmpp</strong>");

    // Matrix → XMPP: from Alice's occupant, styled.
    alice.send_message(&room_id, html_message("welcome xavier", "welcome <em>xavier</em>")).await?;
    let (nick, body, _) = xavier.wait_for_groupchat(room, WAIT, |body| body.starts_with("welcome")).await?;
    assert_eq!((nick.as_str(), body.as_str()), ("Alice Liddell", "welcome _xavier_"));

    // An unknown alias is refused, not left hanging.
    xavier.send_raw("<presence to='#nowhere#localhost@bridge.localhost/X'><x xmlns='http://jabber.org/protocol/muc'/></presence>").await?;
    let refusal = xavier
        .wait_for(WAIT, |stanza| {
            stanza.name() == "presence"
                && stanza.attr("from").is_some_and(|from| from.starts_with("#nowhere#localhost@"))
        })
        .await?;
    assert_eq!(refusal.attr("type"), Some("error"), "{}", to_xml(&refusal));
    Ok(())
}

#[tokio::test]
async fn gateway_muc_occupants_stay_across_a_bridge_restart() -> anyhow::Result<()> {
    let mut fixture = Fixture::start().await?;
    let alice = fixture.matrix_user("alice").await?;
    let room_id = alice.create_room(json!({"preset": "public_chat", "room_alias_name": "Sturdy"})).await?;
    let room = "#^sturdy#localhost@bridge.localhost";
    let mut xavier = fixture.xmpp_user("xavier").await?;
    xavier.join_muc(room, "Xavier").await?;
    let ghost = "@_xmpp_xavier=40localhost:localhost";
    alice
        .wait_for_event(&room_id, WAIT, |event| {
            event["type"] == "m.room.member" && event["state_key"] == ghost && event["content"]["membership"] == "join"
        })
        .await?;
    alice.send_text(&room_id, "before the restart").await?;
    xavier.wait_for_groupchat(room, WAIT, |body| body == "before the restart").await?;

    fixture.restart_bridge().await?;
    // The gateway answers pings again once the restarted bridge handles stanzas.
    let deadline = tokio::time::Instant::now() + WAIT;
    while xavier.iq("get", "bridge.localhost", "<ping xmlns='urn:xmpp:ping'/>").await?.attr("type") != Some("result") {
        anyhow::ensure!(tokio::time::Instant::now() < deadline, "the restarted bridge never answered a ping");
        // Polling a restarting component for readiness, not synchronising test events.
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }

    // Xavier is still an occupant: his self-ping succeeds, Matrix messages reach him, his reach Matrix.
    let own = xavier.iq("get", &format!("{room}/Xavier"), "<ping xmlns='urn:xmpp:ping'/>").await?;
    assert_eq!(own.attr("type"), Some("result"), "{}", to_xml(&own));
    // A client unsure of its state joins again: it gets the whole join (self-presence) again.
    xavier.join_muc(room, "Xavier").await?;
    alice.send_text(&room_id, "after the restart").await?;
    let (nick, _, _) = xavier.wait_for_groupchat(room, WAIT, |body| body == "after the restart").await?;
    assert_eq!(nick, "alice");
    xavier.send_groupchat(room, "still here").await?;
    let message = alice.wait_for_message(&room_id, WAIT, "still here").await?;
    assert_eq!(message["sender"], ghost);
    let left = alice
        .wait_for_event(&room_id, std::time::Duration::from_millis(500), |event| {
            event["type"] == "m.room.member" && event["state_key"] == ghost && event["content"]["membership"] == "leave"
        })
        .await;
    assert!(left.is_err(), "Xavier's ghost left the room: {left:?}");
    Ok(())
}
