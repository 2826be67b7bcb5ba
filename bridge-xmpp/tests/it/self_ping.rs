//! XEP-0410 self-pings: the bridge notices that a MUC forgot its occupant and joins again; the gateway answers
//! XMPP clients' self-pings in gateway MUCs.

use lattice_e2e::{Servers, XmppServer, xmpp_server_tests};
use serde_json::json;

use crate::{
    client::{XmppClient, escape, to_xml},
    fixture::{Fixture, WAIT},
    muc::xavier_and_alice_in_portal,
};

const PING: &str = "<ping xmlns='urn:xmpp:ping'/>";

xmpp_server_tests!(the_muc_service_answers_self_pings_as_the_bridge_reads_them);

/// The MUC service's side of XEP-0410, which the bridge's self-pings rely on: an occupant's ping to its own occupant
/// JID is answered, and a ping from a JID that is no occupant gets `not-acceptable` (the bridge then joins again).
/// Only the XMPP server runs: the answers are the server's own.
async fn the_muc_service_answers_self_pings_as_the_bridge_reads_them(servers: Servers) -> anyhow::Result<()> {
    let server = XmppServer::start(servers.xmpp, "bridge.localhost").await?;
    let room = format!("pings@{}", server.muc_domain());
    let mut clients = Vec::new();
    for user in ["xavier", "yvonne"] {
        server.register(user, "password").await?;
        clients.push(XmppClient::connect(server.c2s_port(), user, "password").await?);
    }
    let [xavier, yvonne] = &mut clients[..] else { unreachable!("two clients") };
    xavier.join_muc(&room, "Xavier").await?;
    let own = xavier.iq("get", &format!("{room}/Xavier"), PING).await?;
    assert_eq!(own.attr("type"), Some("result"), "{}", to_xml(&own));
    let stranger = yvonne.iq("get", &format!("{room}/Xavier"), PING).await?;
    assert_eq!(stranger.attr("type"), Some("error"), "{}", to_xml(&stranger));
    assert!(to_xml(&stranger).contains("not-acceptable"), "{}", to_xml(&stranger));
    Ok(())
}

#[tokio::test]
async fn a_muc_that_forgot_the_bridge_is_joined_again() -> anyhow::Result<()> {
    let fixture = Fixture::start().await?;
    let room = "forgetful@conference.localhost";
    let (mut xavier, alice, room_id) = xavier_and_alice_in_portal(&fixture, room).await?;
    xavier.send_groupchat(room, "before").await?;
    alice.wait_for_message(&room_id, WAIT, "before").await?;

    // The MUC drops the bridge's listener without a word, as a restarted remote MUC service would.
    fixture.xmpp.prosody()?.forget_muc_occupant(room, "bridge.localhost/lattice").await?;
    // The self-ping finds out and the listener joins again: the occupants see it arrive.
    xavier
        .wait_for_presence(&format!("{room}/Matrix bridge"), WAIT, |kind| kind.is_none())
        .await
        .map_err(|error| error.context("the bridge did not rejoin the MUC that forgot it"))?;
    xavier.send_groupchat(room, "after").await?;
    alice.wait_for_message(&room_id, WAIT, "after").await?;
    Ok(())
}

#[tokio::test]
async fn gateway_mucs_answer_self_pings() -> anyhow::Result<()> {
    let fixture = Fixture::start().await?;
    let alice = fixture.matrix_user("alice").await?;
    alice.create_room(json!({"preset": "public_chat", "room_alias_name": "pingroom"})).await?;
    let room = "#pingroom#localhost@bridge.localhost";
    let mut xavier = fixture.xmpp_user("xavier").await?;

    // Not an occupant yet: not-acceptable, which tells a client to join (again).
    let answer = xavier.iq("get", &format!("{room}/Xavier"), PING).await?;
    assert_eq!(answer.attr("type"), Some("error"), "{}", to_xml(&answer));
    assert!(to_xml(&answer).contains("not-acceptable"), "{}", to_xml(&answer));

    xavier.join_muc(room, "Xavier").await?;
    let own = xavier.iq("get", &format!("{room}/Xavier"), PING).await?;
    assert_eq!(own.attr("type"), Some("result"), "{}", to_xml(&own));
    let member = xavier.iq("get", &format!("{room}/alice"), PING).await?;
    assert_eq!(member.attr("type"), Some("result"), "{}", to_xml(&member));
    let nobody = xavier.iq("get", &format!("{room}/{}", escape("nobody here")), PING).await?;
    assert!(to_xml(&nobody).contains("item-not-found"), "{}", to_xml(&nobody));
    Ok(())
}
