//! Chat states and read markers both ways through real Prosody and Synapse: XEP-0085 chat states ⇄ Matrix typing,
//! XEP-0333 displayed markers (and XEP-0184 receipts) ⇄ read receipts, in MUC portals, gateway MUCs and direct
//! chats, with XEP-0421 occupant-ids in gateway MUCs.

use anyhow::Context as _;
use lattice_e2e::MatrixUser;
use serde_json::{Value, json};
use xmpp_parsers::minidom::Element;

use crate::{
    client::{XmppClient, stanza_id},
    fixture::{Fixture, WAIT},
    xeps::{body_of, muc_with_portal, public_room_and_xmpp_user},
};

/// XEP-0085 chat states ⇄ typing and XEP-0333 displayed markers ⇄ read receipts in a direct chat.
#[tokio::test]
async fn direct_chat_typing_and_read_markers_both_ways() -> anyhow::Result<()> {
    const STATES: &str = "http://jabber.org/protocol/chatstates";
    const MARKERS: &str = "urn:xmpp:chat-markers:0";
    let fixture = Fixture::start().await?;
    let mut xavier = fixture.xmpp_user("xavier").await?;
    let alice = fixture.matrix_user("alice").await?;
    let gateway_jid = r"alice\40localhost@bridge.localhost";
    let ghost = "@_xmpp_xavier=40localhost:localhost";
    xavier.send_message_with("chat", gateway_jid, "t-1", Some("are you there?"), "").await?;
    let room_id = alice.wait_for_invite(WAIT).await?;
    alice.join(&room_id).await?;
    let question = alice.wait_for_message(&room_id, WAIT, "are you there?").await?;

    // XMPP → Matrix: composing is typing, active is not.
    xavier.send_message_with("chat", gateway_jid, "t-2", None, &format!("<composing xmlns='{STATES}'/>")).await?;
    let typing = |expected: bool| {
        move |event: &Value| {
            event["type"] == "m.typing"
                && event["content"]["user_ids"].as_array().is_some_and(|ids| ids.iter().any(|id| id == ghost))
                    == expected
        }
    };
    alice.wait_for_event(&room_id, WAIT, typing(true)).await?;
    xavier.send_message_with("chat", gateway_jid, "t-3", None, &format!("<active xmlns='{STATES}'/>")).await?;
    alice.wait_for_event(&room_id, WAIT, typing(false)).await?;

    // Matrix → XMPP: Alice typing is composing; her read receipt on Xavier's message is a displayed marker.
    let typing_path = ["_matrix", "client", "v3", "rooms", room_id.as_str(), "typing", alice.user_id()];
    let body = json!({"typing": true, "timeout": 30_000});
    alice.call(reqwest::Method::PUT, &typing_path, &[], Some(&body)).await?;
    xavier.wait_for_message_from(gateway_jid, WAIT, |stanza| stanza.has_child("composing", STATES)).await?;
    let question_id = question["event_id"].as_str().context("event ID")?;
    let receipt_path = ["_matrix", "client", "v3", "rooms", room_id.as_str(), "receipt", "m.read", question_id];
    alice.call(reqwest::Method::POST, &receipt_path, &[], Some(&json!({}))).await?;
    let marker =
        xavier.wait_for_message_from(gateway_jid, WAIT, |stanza| stanza.has_child("displayed", MARKERS)).await?;
    assert_eq!(marker.get_child("displayed", MARKERS).and_then(|d| d.attr("id")), Some("t-1"));

    // XMPP → Matrix: Xavier's displayed marker on Alice's message is his ghost's read receipt.
    let answer = alice.send_text(&room_id, "yes").await?;
    let sent = xavier.wait_for_message_from(gateway_jid, WAIT, |stanza| body_of(stanza) == "yes").await?;
    let sent_id = sent.attr("id").context("an ID")?;
    xavier
        .send_message_with("chat", gateway_jid, "t-4", None, &format!("<displayed xmlns='{MARKERS}' id='{sent_id}'/>"))
        .await?;
    alice
        .wait_for_event(&room_id, WAIT, |event| {
            event["type"] == "m.receipt" && event["content"][answer.as_str()]["m.read"].get(ghost).is_some()
        })
        .await
        .context("Xavier's ghost's read receipt")?;
    Ok(())
}

/// XEP-0085 chat states in a MUC portal: an occupant composing is their ghost typing, and a Matrix user typing is
/// their occupant composing.
#[tokio::test]
async fn muc_chat_states_both_ways() -> anyhow::Result<()> {
    const STATES: &str = "http://jabber.org/protocol/chatstates";
    let room = "typing@conference.localhost";
    let (_fixture, mut xavier, alice, room_id, ghost) = muc_with_portal(room).await?;
    let ghost = ghost.as_str();
    xavier.send_message_with("groupchat", room, "s-1", None, &format!("<composing xmlns='{STATES}'/>")).await?;
    alice
        .wait_for_event(&room_id, WAIT, |event| {
            event["type"] == "m.typing"
                && event["content"]["user_ids"].as_array().is_some_and(|ids| ids.iter().any(|id| id == ghost))
        })
        .await?;
    let typing_path = ["_matrix", "client", "v3", "rooms", room_id.as_str(), "typing", alice.user_id()];
    alice.call(reqwest::Method::PUT, &typing_path, &[], Some(&json!({"typing": true, "timeout": 30_000}))).await?;
    // (The MUC reflects Xavier's own chat state to him too: look for Alice's occupant.)
    let from_alice = format!("{room}/alice");
    let state_of_alice = |state: &'static str| {
        let from_alice = from_alice.clone();
        move |stanza: &Element| stanza.attr("from") == Some(from_alice.as_str()) && stanza.has_child(state, STATES)
    };
    xavier.wait_for_message_from(room, WAIT, state_of_alice("composing")).await?;
    alice.call(reqwest::Method::PUT, &typing_path, &[], Some(&json!({"typing": false}))).await?;
    xavier.wait_for_message_from(room, WAIT, state_of_alice("active")).await?;
    Ok(())
}

const MARKERS: &str = "urn:xmpp:chat-markers:0";
const OCCUPANT_ID: &str = "urn:xmpp:occupant-id:0";

/// The XEP-0333 marker of the message `id`.
fn displayed(id: &str) -> String {
    format!("<displayed xmlns='{MARKERS}' id='{id}'/>")
}

/// Waits for `reader`'s read receipt on `event_id` in the room.
async fn read_receipt(alice: &MatrixUser, room_id: &str, event_id: &str, reader: &str) -> anyhow::Result<()> {
    alice
        .wait_for_event(room_id, WAIT, |event| {
            event["type"] == "m.receipt" && event["content"][event_id]["m.read"].get(reader).is_some()
        })
        .await
        .with_context(|| format!("{reader}'s read receipt on {event_id}"))?;
    Ok(())
}

/// Alice reads `event_id` (a Matrix read receipt).
async fn mark_read(alice: &MatrixUser, room_id: &str, event_id: &str) -> anyhow::Result<()> {
    let path = ["_matrix", "client", "v3", "rooms", room_id, "receipt", "m.read", event_id];
    alice.call(reqwest::Method::POST, &path, &[], Some(&json!({}))).await?;
    Ok(())
}

/// The `displayed` marker `from` sends in a MUC, as the ID it names.
async fn marker_from(xavier: &mut XmppClient, room: &str, from: &str) -> anyhow::Result<String> {
    let marker = xavier
        .wait_for_message_from(room, WAIT, |stanza| {
            stanza.attr("from") == Some(from) && stanza.has_child("displayed", MARKERS)
        })
        .await?;
    Ok(marker.get_child("displayed", MARKERS).and_then(|d| d.attr("id")).context("no id")?.to_owned())
}

/// XEP-0333 displayed markers in a MUC portal ⇄ Matrix read receipts, messages named by the MUC's stanza-ids.
#[tokio::test]
async fn muc_read_markers_both_ways() -> anyhow::Result<()> {
    let room = "markers@conference.localhost";
    let (_fixture, mut xavier, alice, room_id, ghost) = muc_with_portal(room).await?;
    let ghost = ghost.as_str();
    // Alice speaks first, so her occupant is in the MUC (a receipt never makes the gateway join).
    alice.send_text(&room_id, "hello").await?;
    let hello = xavier.wait_for_message_from(room, WAIT, |stanza| body_of(stanza) == "hello").await?;
    assert!(
        hello.get_child("markable", "urn:xmpp:chat-markers:0").is_some(),
        "a Matrix message asks for displayed markers: {hello:?}"
    );

    xavier.send_message_with("groupchat", room, "m-1", Some("read me"), "").await?;
    let read_me = alice.wait_for_message(&room_id, WAIT, "read me").await?;
    let reflection = xavier.wait_for_message_from(room, WAIT, |stanza| body_of(stanza) == "read me").await?;
    let read_me_name = stanza_id(&reflection, room).context("muc_mam stamps a stanza-id")?;
    mark_read(&alice, &room_id, read_me["event_id"].as_str().context("event ID")?).await?;
    assert_eq!(marker_from(&mut xavier, room, &format!("{room}/alice")).await?, read_me_name);

    // (Newer than Xavier's own message: Synapse never moves a read receipt backwards.)
    let answer = alice.send_text(&room_id, "answer").await?;
    let reflection = xavier.wait_for_message_from(room, WAIT, |stanza| body_of(stanza) == "answer").await?;
    let answer_name = stanza_id(&reflection, room).context("stanza-id")?;
    xavier.send_message_with("groupchat", room, "m-2", None, &displayed(&answer_name)).await?;
    read_receipt(&alice, &room_id, &answer, ghost).await
}

/// A gateway MUC stamps XEP-0421 occupant-ids (one per person, the sender's own replaced) and carries XEP-0333
/// markers ⇄ read receipts.
#[tokio::test]
async fn gateway_muc_occupant_ids_and_read_markers() -> anyhow::Result<()> {
    let (_fixture, alice, room_id, mut xavier, room) = public_room_and_xmpp_user("marks").await?;
    let room = room.as_str();
    let occupant_id =
        |stanza: &Element| stanza.get_child("occupant-id", OCCUPANT_ID).and_then(|o| o.attr("id")).map(str::to_owned);
    let own = xavier.join_muc(room, "Xavier").await?;
    let own_id = occupant_id(&own).context("no occupant-id in the self-presence")?;
    let from_alice = format!("{room}/alice");
    let alice_presence = xavier
        .wait_for(WAIT, |stanza| stanza.name() == "presence" && stanza.attr("from") == Some(from_alice.as_str()))
        .await?;
    let alice_id = occupant_id(&alice_presence).context("no occupant-id in Alice's presence")?;
    assert_ne!(alice_id, own_id);
    let info = xavier.iq("get", room, "<query xmlns='http://jabber.org/protocol/disco#info'/>").await?;
    assert!(crate::client::to_xml(&info).contains(OCCUPANT_ID), "{}", crate::client::to_xml(&info));

    // A forged occupant-id is replaced by the MUC's.
    let forged = format!("<occupant-id xmlns='{OCCUPANT_ID}' id='forged'/>");
    xavier.send_message_with("groupchat", room, "g-1", Some("mine"), &forged).await?;
    let mine = alice.wait_for_message(&room_id, WAIT, "mine").await?;
    let reflection = xavier.wait_for_message_from(room, WAIT, |stanza| body_of(stanza) == "mine").await?;
    let ids: Vec<_> = reflection.children().filter(|child| child.is("occupant-id", OCCUPANT_ID)).collect();
    assert_eq!(ids.len(), 1, "{}", crate::client::to_xml(&reflection));
    assert_eq!(occupant_id(&reflection), Some(own_id));
    let mine_name = stanza_id(&reflection, room).context("stanza-id")?;

    let theirs = alice.send_text(&room_id, "theirs").await?;
    let message = xavier.wait_for_message_from(room, WAIT, |stanza| body_of(stanza) == "theirs").await?;
    assert_eq!(occupant_id(&message), Some(alice_id));
    let theirs_name = stanza_id(&message, room).context("stanza-id")?;

    mark_read(&alice, &room_id, mine["event_id"].as_str().context("event ID")?).await?;
    assert_eq!(marker_from(&mut xavier, room, &from_alice).await?, mine_name);
    xavier.send_message_with("groupchat", room, "g-2", None, &displayed(&theirs_name)).await?;
    read_receipt(&alice, &room_id, &theirs, "@_xmpp_xavier=40localhost:localhost").await
}
