//! One-to-one chats between an XMPP account and a Matrix user's gateway JID, both ways, and after the Matrix user
//! left the DM room.

use lattice_e2e::{HomeserverKind, Servers, homeserver_tests, xmpp_server_tests};
use serde_json::json;

use crate::fixture::{Fixture, WAIT, html_message};

homeserver_tests!(matrix_user_opens_a_direct_chat_with_an_xmpp_ghost);
xmpp_server_tests!(direct_chats_both_ways_and_after_leaving);

async fn direct_chats_both_ways_and_after_leaving(servers: Servers) -> anyhow::Result<()> {
    let fixture = Fixture::between(servers).await?;
    let mut xavier = fixture.xmpp_user("xavier").await?;
    let alice = fixture.matrix_user("alice").await?;
    let gateway_jid = r"alice\40localhost@bridge.localhost";

    // XMPP → Matrix: the first message opens a DM from Xavier's ghost, which invites Alice.
    xavier.send_chat(gateway_jid, "hello *alice*").await?;
    let room_id = alice.wait_for_invite(WAIT).await?;
    alice.join(&room_id).await?;
    let message = alice.wait_for_message(&room_id, WAIT, "hello alice").await?;
    assert_eq!(message["sender"], "@_xmpp_xavier=40localhost:localhost");
    assert_eq!(message["content"]["formatted_body"], "hello <strong>alice</strong>");

    // Matrix → XMPP: Alice's reply comes from her gateway JID, styled.
    alice.send_message(&room_id, html_message("hi xavier", "hi <em>xavier</em>")).await?;
    let body = xavier.wait_for_chat(gateway_jid, WAIT, |body| body.starts_with("hi ")).await?;
    assert_eq!(body, "hi _xavier_");

    // Alice leaves the DM; Xavier's next message invites her back instead of vanishing.
    alice.leave(&room_id).await?;
    xavier.send_chat(gateway_jid, "are you there?").await?;
    let again = alice.wait_for_invite(WAIT).await?;
    assert_eq!(again, room_id, "the DM room is reused");
    alice.join(&room_id).await?;
    alice.wait_for_message(&room_id, WAIT, "are you there?").await?;
    alice.send_text(&room_id, "back again").await?;
    xavier.wait_for_chat(gateway_jid, WAIT, |body| body == "back again").await?;
    Ok(())
}

async fn matrix_user_opens_a_direct_chat_with_an_xmpp_ghost(homeserver: HomeserverKind) -> anyhow::Result<()> {
    let fixture = Fixture::on_homeserver(homeserver).await?;
    let mut yvonne = fixture.xmpp_user("yvonne").await?;
    let alice = fixture.matrix_user("alice").await?;
    let ghost = "@_xmpp_yvonne=40localhost:localhost";
    let room_id =
        alice.create_room(json!({"preset": "trusted_private_chat", "is_direct": true, "invite": [ghost]})).await?;
    alice
        .wait_for_event(&room_id, WAIT, |event| {
            event["type"] == "m.room.member" && event["state_key"] == ghost && event["content"]["membership"] == "join"
        })
        .await?;
    alice.send_text(&room_id, "hi yvonne").await?;
    yvonne.wait_for_chat(r"alice\40localhost@bridge.localhost", WAIT, |body| body == "hi yvonne").await?;
    yvonne.send_chat(r"alice\40localhost@bridge.localhost", "hi alice").await?;
    let message = alice.wait_for_message(&room_id, WAIT, "hi alice").await?;
    assert_eq!(message["sender"], ghost);
    Ok(())
}
