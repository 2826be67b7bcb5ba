//! Message XEPs both ways through real Prosody (with `muc_mam`, so the MUC stamps stanza-ids) and Synapse:
//! XEP-0308 corrections, XEP-0424 retractions, XEP-0444 reactions and XEP-0461 replies with XEP-0428 fallbacks, in
//! MUC portals, gateway MUCs and direct chats; and a bridge restart between a message and its correction.

use anyhow::Context as _;
use lattice_e2e::{MatrixUser, Servers, xmpp_server_tests};
use serde_json::{Value, json};
use xmpp_parsers::minidom::Element;

use crate::{
    client::{XmppClient, escape, stanza_id},
    fixture::{Fixture, WAIT},
    muc::{join_portal, occupant_ghost, occupant_ghost_on},
};

const REACTIONS: &str = "urn:xmpp:reactions:0";
const RETRACT: &str = "urn:xmpp:message-retract:1";
const REPLY: &str = "urn:xmpp:reply:0";
const FALLBACK: &str = "urn:xmpp:fallback:0";
const CORRECT: &str = "urn:xmpp:message-correct:0";
const BODY_NS: &str = "jabber:client";

pub(crate) fn body_of(stanza: &Element) -> String {
    stanza.get_child("body", BODY_NS).map(Element::text).unwrap_or_default()
}

fn reaction_keys(stanza: &Element) -> Option<(String, Vec<String>)> {
    let reactions = stanza.get_child("reactions", REACTIONS)?;
    let keys = reactions.children().filter(|child| child.is("reaction", REACTIONS)).map(Element::text).collect();
    Some((reactions.attr("id")?.to_owned(), keys))
}

fn relates_to<'a>(event: &'a Value, rel_type: &str, target: &str) -> Option<&'a Value> {
    let relation = &event["content"]["m.relates_to"];
    (relation["rel_type"] == rel_type && relation["event_id"] == target).then_some(event)
}

/// An `m.replace` edit of `event_id` to `body`.
fn edit_of(event_id: &str, body: &str) -> Value {
    json!({"msgtype": "m.text", "body": format!("* {body}"),
        "m.new_content": {"msgtype": "m.text", "body": body},
        "m.relates_to": {"rel_type": "m.replace", "event_id": event_id}})
}

/// A picture's SHA-1 in hex, as XEP-0153 names it.
fn sha1_hex(bytes: &[u8]) -> anyhow::Result<String> {
    let hash = xmpp_parsers::caps::hash_caps(bytes, xmpp_parsers::hashes::Algo::Sha_1).map_err(anyhow::Error::msg)?;
    Ok(hash.hash.iter().map(|byte| format!("{byte:02x}")).collect())
}

fn is_redaction_of(event: &Value, target: &str) -> bool {
    event["type"] == "m.room.redaction" && (event["redacts"] == target || event["content"]["redacts"] == target)
}

xmpp_server_tests!(
    homeservers: muc_corrections_reactions_replies_and_retractions_reach_matrix,
    matrix_edits_reactions_replies_and_redactions_reach_the_muc,
);
xmpp_server_tests!(direct_chat_xeps_both_ways, gateway_muc_xeps_both_ways);

/// Servers, bridge, an XMPP user in `room` and a Matrix user in its portal; the last is Xavier's ghost.
pub(crate) async fn muc_with_portal(room: &str) -> anyhow::Result<(Fixture, XmppClient, MatrixUser, String, String)> {
    muc_with_portal_on(Servers::DEFAULT, room).await
}

/// Xavier in the MUC `room`, Alice in its portal, between `servers`; also returns Xavier's ghost.
async fn muc_with_portal_on(
    servers: Servers,
    room: &str,
) -> anyhow::Result<(Fixture, XmppClient, MatrixUser, String, String)> {
    let fixture = Fixture::between(servers).await?;
    let mut xavier = fixture.xmpp_user("xavier").await?;
    let ghost = occupant_ghost_on(servers.xmpp, room, &xavier.join_muc(room, "Xavier").await?)?;
    let alice = fixture.matrix_user("alice").await?;
    let room_id = join_portal(&alice, &mut xavier, room, "Xavier").await?;
    Ok((fixture, xavier, alice, room_id, ghost))
}

/// Servers, bridge, Alice in a new public Matrix room `#{alias}:localhost`, and Xavier, not yet in its gateway MUC
/// (the last).
pub(crate) async fn public_room_and_xmpp_user(
    alias: &str,
) -> anyhow::Result<(Fixture, MatrixUser, String, XmppClient, String)> {
    public_room_and_xmpp_user_on(Servers::DEFAULT, alias).await
}

/// Like [`public_room_and_xmpp_user`], between `servers`.
pub(crate) async fn public_room_and_xmpp_user_on(
    servers: Servers,
    alias: &str,
) -> anyhow::Result<(Fixture, MatrixUser, String, XmppClient, String)> {
    let fixture = Fixture::between(servers).await?;
    let alice = fixture.matrix_user("alice").await?;
    let room_id = alice.create_room(json!({"preset": "public_chat", "room_alias_name": alias})).await?;
    let xavier = fixture.xmpp_user("xavier").await?;
    Ok((fixture, alice, room_id, xavier, format!("#{alias}#localhost@bridge.localhost")))
}

fn reactions_xml(id: &str, keys: &[&str]) -> String {
    let keys: String = keys.iter().map(|key| format!("<reaction>{key}</reaction>")).collect();
    format!("<reactions xmlns='{REACTIONS}' id='{id}'>{keys}</reactions>")
}

/// Every mapping from XMPP to Matrix in a MUC portal, naming messages by the MUC's stanza-id and the sender's ID.
async fn muc_corrections_reactions_replies_and_retractions_reach_matrix(servers: Servers) -> anyhow::Result<()> {
    let room = "xeps@conference.localhost";
    let (_fixture, mut xavier, alice, room_id, ghost) = muc_with_portal_on(servers, room).await?;

    xavier.send_message_with("groupchat", room, "x-1", Some("first words"), "").await?;
    let original = alice.wait_for_message(&room_id, WAIT, "first words").await?;
    let original_id = original["event_id"].as_str().context("no event ID")?.to_owned();
    let reflection = xavier.wait_for_message_from(room, WAIT, |stanza| body_of(stanza) == "first words").await?;
    let stanza = stanza_id(&reflection, room).context("muc_mam stamps a stanza-id")?;

    // XEP-0308 names the sender's ID.
    let correction = format!("<replace xmlns='{CORRECT}' id='x-1'/>");
    xavier.send_message_with("groupchat", room, "x-2", Some("better words"), &correction).await?;
    let edit =
        alice.wait_for_event(&room_id, WAIT, |event| relates_to(event, "m.replace", &original_id).is_some()).await?;
    assert_eq!(edit["content"]["m.new_content"]["body"], "better words");

    // XEP-0444 names the stanza-id; each whole set is diffed against the last one.
    xavier.send_message_with("groupchat", room, "x-3", None, &reactions_xml(&stanza, &["👍", "🎉"])).await?;
    let mut seen = Vec::new();
    for _ in 0..2 {
        let reaction = alice
            .wait_for_event(&room_id, WAIT, |event| {
                event["type"] == "m.reaction" && relates_to(event, "m.annotation", &original_id).is_some()
            })
            .await?;
        seen.push((reaction["content"]["m.relates_to"]["key"].as_str().unwrap_or_default().to_owned(), reaction));
    }
    seen.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(seen.iter().map(|(key, _)| key.as_str()).collect::<Vec<_>>(), ["🎉", "👍"]);
    let thumbs = seen[1].1["event_id"].as_str().unwrap_or_default().to_owned();
    assert_eq!(seen[1].1["sender"], ghost.as_str());
    xavier.send_message_with("groupchat", room, "x-4", None, &reactions_xml(&stanza, &["🎉"])).await?;
    alice
        .wait_for_event(&room_id, WAIT, |event| is_redaction_of(event, &thumbs))
        .await
        .context("withdrawing 👍 redacts its reaction")?;

    // XEP-0461 with a XEP-0428 fallback: the quote is cut out, the reply relates to the original.
    let quote = "> Xavier: first words\n";
    let reply = format!(
        "<reply xmlns='{REPLY}' id='{stanza}' to='{room}/Xavier'/><fallback xmlns='{FALLBACK}' for='{REPLY}'>\
         <body start='0' end='{}'/></fallback>",
        quote.chars().count()
    );
    xavier.send_message_with("groupchat", room, "x-5", Some(&format!("{quote}my answer")), &reply).await?;
    let answer = alice.wait_for_message(&room_id, WAIT, "my answer").await?;
    assert_eq!(answer["content"]["m.relates_to"]["m.in_reply_to"]["event_id"], original_id.as_str());

    // XEP-0424 retraction redacts the original.
    let retract = format!("<retract xmlns='{RETRACT}' id='{stanza}'/>");
    xavier.send_message_with("groupchat", room, "x-6", Some("retracted"), &retract).await?;
    alice
        .wait_for_event(&room_id, WAIT, |event| is_redaction_of(event, &original_id))
        .await
        .context("the retraction redacts the message")?;
    Ok(())
}

/// Every mapping from Matrix to XMPP in a MUC portal: the XMPP side names Matrix messages by the MUC's stanza-id
/// and corrections by the bridge's own ID.
async fn matrix_edits_reactions_replies_and_redactions_reach_the_muc(servers: Servers) -> anyhow::Result<()> {
    let room = "xeps-out@conference.localhost";
    let (_fixture, mut xavier, alice, room_id, _ghost) = muc_with_portal_on(servers, room).await?;

    let event_id = alice.send_text(&room_id, "from matrix").await?;
    let sent = xavier.wait_for_message_from(room, WAIT, |stanza| body_of(stanza) == "from matrix").await?;
    let stanza = stanza_id(&sent, room).context("muc_mam stamps a stanza-id")?;
    let own_id = sent.attr("id").context("the message has an ID")?.to_owned();

    alice.send_message(&room_id, edit_of(&event_id, "from matrix, fixed")).await?;
    let correction = xavier.wait_for_message_from(room, WAIT, |stanza| body_of(stanza) == "from matrix, fixed").await?;
    assert_eq!(correction.get_child("replace", CORRECT).and_then(|r| r.attr("id")), Some(own_id.as_str()));

    let reaction = alice
        .send_event(
            &room_id,
            "m.reaction",
            json!({"m.relates_to": {"rel_type": "m.annotation", "event_id": event_id, "key": "👍"}}),
        )
        .await?;
    let set = xavier.wait_for_message_from(room, WAIT, |stanza| reaction_keys(stanza).is_some()).await?;
    assert_eq!(reaction_keys(&set), Some((stanza.clone(), vec!["👍".to_owned()])));
    alice.redact(&room_id, &reaction, None).await?;
    let set = xavier.wait_for_message_from(room, WAIT, |stanza| reaction_keys(stanza).is_some()).await?;
    assert_eq!(reaction_keys(&set), Some((stanza.clone(), vec![])), "withdrawn: the whole set is now empty");

    // A reply to Xavier's message names its stanza-id and quotes it as a marked fallback.
    xavier.send_message_with("groupchat", room, "x-1", Some("question?"), "").await?;
    let question = alice.wait_for_message(&room_id, WAIT, "question?").await?;
    let asked = xavier.wait_for_message_from(room, WAIT, |stanza| body_of(stanza) == "question?").await?;
    let asked_id = stanza_id(&asked, room).context("stanza-id")?;
    alice
        .send_message(
            &room_id,
            json!({"msgtype": "m.text", "body": "answer!",
                "m.relates_to": {"m.in_reply_to": {"event_id": question["event_id"]}}}),
        )
        .await?;
    let reply = xavier.wait_for_message_from(room, WAIT, |stanza| body_of(stanza).ends_with("answer!")).await?;
    assert_eq!(reply.get_child("reply", REPLY).and_then(|r| r.attr("id")), Some(asked_id.as_str()));
    let body = body_of(&reply);
    assert!(body.starts_with("> ") && body.contains("question?"), "{body}");
    let range = reply.get_child("fallback", FALLBACK).and_then(|f| f.get_child("body", FALLBACK)).context("range")?;
    let end: usize = range.attr("end").context("end")?.parse()?;
    assert_eq!(body.chars().skip(end).collect::<String>(), "answer!");

    // Alice's redaction of her own message retracts it by stanza-id.
    alice.redact(&room_id, &event_id, None).await?;
    let retraction = xavier.wait_for_message_from(room, WAIT, |stanza| stanza.has_child("retract", RETRACT)).await?;
    assert_eq!(retraction.get_child("retract", RETRACT).and_then(|r| r.attr("id")), Some(stanza.as_str()));
    Ok(())
}

/// Messages go out without waiting for each other's reflection, and an event that refers to one of them waits until
/// it is reflected: handed over in one transaction right after five messages, a reaction to the first still names
/// it by the stanza-id the MUC gave it.
#[tokio::test]
async fn a_reaction_in_the_same_transaction_as_its_message_names_its_stanza_id() -> anyhow::Result<()> {
    let room = "xeps-batch@conference.localhost";
    let (fixture, mut xavier, alice, room_id, _ghost) = muc_with_portal(room).await?;
    let event = |n: usize, kind: &str, content: Value| {
        json!({"event_id": format!("$batch{n}"), "room_id": room_id, "sender": alice.user_id(), "type": kind,
            "content": content, "origin_server_ts": 1})
    };
    let mut events: Vec<Value> = (0..5)
        .map(|n| event(n, "m.room.message", json!({"msgtype": "m.text", "body": format!("batch {n}")})))
        .collect();
    let annotation = json!({"m.relates_to": {"rel_type": "m.annotation", "event_id": "$batch0", "key": "👍"}});
    events.push(event(5, "m.reaction", annotation));
    fixture.push_transaction("batch", events).await?;

    let first = xavier.wait_for_message_from(room, WAIT, |stanza| body_of(stanza) == "batch 0").await?;
    let first_id = stanza_id(&first, room).context("muc_mam stamps a stanza-id")?;
    for n in 1..5 {
        xavier.wait_for_message_from(room, WAIT, |stanza| body_of(stanza) == format!("batch {n}")).await?;
    }
    let set = xavier.wait_for_message_from(room, WAIT, |stanza| reaction_keys(stanza).is_some()).await?;
    assert_eq!(reaction_keys(&set), Some((first_id, vec!["👍".to_owned()])));
    Ok(())
}

/// The maps are in the store: a correction and a retraction after a bridge restart still find their message.
#[tokio::test]
async fn a_restart_between_a_message_and_its_correction_keeps_the_mapping() -> anyhow::Result<()> {
    let room = "xeps-restart@conference.localhost";
    let (mut fixture, mut xavier, alice, room_id, _ghost) = muc_with_portal(room).await?;
    xavier.send_message_with("groupchat", room, "r-1", Some("before restart"), "").await?;
    let original = alice.wait_for_message(&room_id, WAIT, "before restart").await?;
    let original_id = original["event_id"].as_str().context("event ID")?.to_owned();
    let reflection = xavier.wait_for_message_from(room, WAIT, |stanza| body_of(stanza) == "before restart").await?;
    let stanza = stanza_id(&reflection, room).context("stanza-id")?;
    let event_id = alice.send_text(&room_id, "mine before restart").await?;
    xavier.wait_for_message_from(room, WAIT, |stanza| body_of(stanza) == "mine before restart").await?;

    fixture.restart_bridge().await?;
    // The restarted bridge rejoins the MUC; wait for its listener before speaking.
    xavier
        .wait_for(WAIT, |stanza| {
            stanza.name() == "presence"
                && stanza.attr("type").is_none()
                && stanza.attr("from") == Some(format!("{room}/Matrix bridge").as_str())
        })
        .await
        .context("the restarted bridge rejoins")?;

    let correction = format!("<replace xmlns='{CORRECT}' id='r-1'/>");
    xavier.send_message_with("groupchat", room, "r-2", Some("after restart"), &correction).await?;
    let edit =
        alice.wait_for_event(&room_id, WAIT, |event| relates_to(event, "m.replace", &original_id).is_some()).await?;
    assert_eq!(edit["content"]["m.new_content"]["body"], "after restart");
    let retract = format!("<retract xmlns='{RETRACT}' id='{stanza}'/>");
    xavier.send_message_with("groupchat", room, "r-3", Some("retracted"), &retract).await?;
    alice.wait_for_event(&room_id, WAIT, |event| is_redaction_of(event, &original_id)).await?;
    // And the other way: Alice's edit of her message from before the restart corrects it on XMPP.
    alice.send_message(&room_id, edit_of(&event_id, "mine, edited")).await?;
    let corrected = xavier.wait_for_message_from(room, WAIT, |stanza| body_of(stanza) == "mine, edited").await?;
    assert!(corrected.has_child("replace", CORRECT), "{corrected:?}");
    Ok(())
}

/// Where an XMPP user talks with a Matrix user: a direct chat or a gateway MUC.
struct Conversation {
    /// `chat` or `groupchat`.
    kind: &'static str,
    /// The JID the XMPP user writes to and hears from.
    jid: String,
    /// Who stamps stanza-ids in it (the gateway MUC); `None` when messages are named by their own ID (chats).
    stamped_by: Option<String>,
}

impl Conversation {
    /// How the XMPP side names a message it received.
    fn name_of(&self, stanza: &Element) -> Option<String> {
        match &self.stamped_by {
            Some(by) => stanza_id(stanza, by),
            None => stanza.attr("id").map(str::to_owned),
        }
    }
}

/// The XEP mappings both ways in a conversation where Xavier's message `c-1` ("one") became `first` in Matrix.
async fn xeps_both_ways(
    conversation: &Conversation,
    xavier: &mut XmppClient,
    alice: &MatrixUser,
    room_id: &str,
    first: &Value,
) -> anyhow::Result<()> {
    let (kind, jid) = (conversation.kind, conversation.jid.as_str());
    let first_id = first["event_id"].as_str().context("event ID")?.to_owned();
    let name = match &conversation.stamped_by {
        Some(_) => {
            let reflection = xavier.wait_for_message_from(jid, WAIT, |stanza| body_of(stanza) == "one").await?;
            conversation.name_of(&reflection).context("the gateway MUC stamps a stanza-id")?
        }
        None => "c-1".to_owned(),
    };
    // XMPP → Matrix.
    let correction = format!("<replace xmlns='{CORRECT}' id='c-1'/>");
    xavier.send_message_with(kind, jid, "c-2", Some("one, fixed"), &correction).await?;
    let edit = alice.wait_for_event(room_id, WAIT, |event| relates_to(event, "m.replace", &first_id).is_some()).await?;
    assert_eq!(edit["content"]["m.new_content"]["body"], "one, fixed");
    xavier.send_message_with(kind, jid, "c-3", None, &reactions_xml(&name, &["👍"])).await?;
    let reaction = alice
        .wait_for_event(room_id, WAIT, |event| {
            event["type"] == "m.reaction" && relates_to(event, "m.annotation", &first_id).is_some()
        })
        .await?;
    assert_eq!(reaction["content"]["m.relates_to"]["key"], "👍");
    let quote = "> alice: one\n";
    let reply = format!(
        "<reply xmlns='{REPLY}' id='{name}'/><fallback xmlns='{FALLBACK}' for='{REPLY}'><body start='0' end='{}'/>\
         </fallback>",
        quote.chars().count()
    );
    xavier.send_message_with(kind, jid, "c-4", Some(&format!("{quote}a reply")), &reply).await?;
    let answer = alice.wait_for_message(room_id, WAIT, "a reply").await?;
    assert_eq!(answer["content"]["m.relates_to"]["m.in_reply_to"]["event_id"], first_id.as_str());
    let retract = format!("<retract xmlns='{RETRACT}' id='{name}'/>");
    xavier.send_message_with(kind, jid, "c-5", Some("retracted"), &retract).await?;
    alice.wait_for_event(room_id, WAIT, |event| is_redaction_of(event, &first_id)).await?;

    // Matrix → XMPP.
    let event_id = alice.send_text(room_id, "two").await?;
    let sent = xavier.wait_for_message_from(jid, WAIT, |stanza| body_of(stanza) == "two").await?;
    let sent_name = conversation.name_of(&sent).context("a name for Alice's message")?;
    let sent_id = sent.attr("id").context("an ID")?.to_owned();
    alice.send_message(room_id, edit_of(&event_id, "two, fixed")).await?;
    let correction = xavier.wait_for_message_from(jid, WAIT, |stanza| body_of(stanza) == "two, fixed").await?;
    assert_eq!(correction.get_child("replace", CORRECT).and_then(|r| r.attr("id")), Some(sent_id.as_str()));
    let content = json!({"m.relates_to": {"rel_type": "m.annotation", "event_id": event_id, "key": "🎉"}});
    alice.send_event(room_id, "m.reaction", content).await?;
    // (A gateway MUC reflects Xavier's own reactions and retractions to him too: look for Alice's.)
    let set = xavier
        .wait_for_message_from(jid, WAIT, |stanza| reaction_keys(stanza).is_some_and(|(id, _)| id == sent_name))
        .await?;
    assert_eq!(reaction_keys(&set), Some((sent_name.clone(), vec!["🎉".to_owned()])));
    alice.redact(room_id, &event_id, None).await?;
    xavier
        .wait_for_message_from(jid, WAIT, |stanza| {
            stanza.get_child("retract", RETRACT).and_then(|r| r.attr("id")) == Some(sent_name.as_str())
        })
        .await?;
    Ok(())
}

async fn direct_chat_xeps_both_ways(servers: Servers) -> anyhow::Result<()> {
    let fixture = Fixture::between(servers).await?;
    let mut xavier = fixture.xmpp_user("xavier").await?;
    let alice = fixture.matrix_user("alice").await?;
    let conversation =
        Conversation { kind: "chat", jid: r"alice\40localhost@bridge.localhost".into(), stamped_by: None };
    xavier.send_message_with("chat", &conversation.jid, "c-1", Some("one"), "").await?;
    let room_id = alice.wait_for_invite(WAIT).await?;
    alice.join(&room_id).await?;
    let first = alice.wait_for_message(&room_id, WAIT, "one").await?;
    xeps_both_ways(&conversation, &mut xavier, &alice, &room_id, &first).await
}

async fn gateway_muc_xeps_both_ways(servers: Servers) -> anyhow::Result<()> {
    let (_fixture, alice, room_id, mut xavier, room) = public_room_and_xmpp_user_on(servers, "xeps").await?;
    let room = room.as_str();
    xavier.join_muc(room, "Xavier").await?;
    let conversation = Conversation { kind: "groupchat", jid: room.into(), stamped_by: Some(room.into()) };
    xavier.send_message_with("groupchat", room, "c-1", Some("one"), "").await?;
    let first = alice.wait_for_message(&room_id, WAIT, "one").await?;
    xeps_both_ways(&conversation, &mut xavier, &alice, &room_id, &first).await?;

    // The gateway is the MUC: Alice (the room's admin) redacting Xavier's message is a XEP-0425 moderation.
    xavier.send_message_with("groupchat", room, "c-9", Some("spam"), "").await?;
    let spam = alice.wait_for_message(&room_id, WAIT, "spam").await?;
    let reflection = xavier.wait_for_message_from(room, WAIT, |stanza| body_of(stanza) == "spam").await?;
    let spam_name = conversation.name_of(&reflection).context("stanza-id")?;
    alice.redact(&room_id, spam["event_id"].as_str().context("event ID")?, Some("no spam")).await?;
    let moderation = xavier
        .wait_for_message_from(room, WAIT, |stanza| {
            stanza.get_child("retract", RETRACT).and_then(|r| r.attr("id")) == Some(spam_name.as_str())
        })
        .await?;
    let retract = moderation.get_child("retract", RETRACT).context("retract")?;
    assert!(retract.has_child("moderated", "urn:xmpp:message-moderate:1"), "{moderation:?}");
    assert_eq!(retract.get_child("reason", RETRACT).map(Element::text).as_deref(), Some("no spam"));
    // An XMPP occupant asking to moderate is refused, not left waiting.
    let moderate = format!(
        "<moderate xmlns='urn:xmpp:message-moderate:1' id='{spam_name}'><retract xmlns='{RETRACT}'/></moderate>"
    );
    let refusal = xavier.iq_with_id("set", room, "mod1", &moderate).await?;
    assert_eq!(refusal.attr("type"), Some("error"));
    assert!(crate::client::to_xml(&refusal).contains("forbidden"), "{}", crate::client::to_xml(&refusal));
    Ok(())
}

/// XEP-0115 caps in a Matrix user's occupant presence hash exactly the features their gateway JID's XEP-0030
/// disco#info lists, and XEP-0092 names the software.
#[tokio::test]
async fn gateway_user_jids_advertise_what_they_handle() -> anyhow::Result<()> {
    use xmpp_parsers::{caps, disco::DiscoInfoResult, hashes::Algo};
    let room = "caps@conference.localhost";
    let (_fixture, mut xavier, _alice, _room_id, _ghost) = muc_with_portal(room).await?;
    let occupant = format!("{room}/alice");
    let presence = xavier
        .wait_for(WAIT, |stanza| stanza.name() == "presence" && stanza.attr("from") == Some(occupant.as_str()))
        .await?;
    let c = presence.get_child("c", "http://jabber.org/protocol/caps").context("no caps in the presence")?;
    let (node, ver) = (c.attr("node").context("node")?, c.attr("ver").context("ver")?);
    assert_eq!(c.attr("hash"), Some("sha-1"));
    let user = r"alice\40localhost@bridge.localhost";
    let query =
        format!("<query xmlns='http://jabber.org/protocol/disco#info' node='{}'/>", escape(&format!("{node}#{ver}")));
    let answer = xavier.iq_with_id("get", user, "caps1", &query).await?;
    let query = answer.get_child("query", "http://jabber.org/protocol/disco#info").context("no disco#info")?;
    let info = DiscoInfoResult::try_from(query.clone())?;
    let notify = "urn:xmpp:avatar:metadata+notify";
    for feature in [REACTIONS, RETRACT, REPLY, CORRECT, "urn:xmpp:chat-markers:0", "jabber:iq:version", notify] {
        assert!(info.features.iter().any(|known| known == feature), "{feature} missing from {:?}", info.features);
    }
    let hash = caps::hash_caps(&caps::compute_disco(&info), Algo::Sha_1).map_err(anyhow::Error::msg)?;
    use base64::Engine as _;
    assert_eq!(base64::engine::general_purpose::STANDARD.encode(hash.hash), ver, "the caps hash matches disco#info");

    let version = xavier.iq_with_id("get", user, "version1", "<query xmlns='jabber:iq:version'/>").await?;
    let name =
        version.get_child("query", "jabber:iq:version").and_then(|query| query.get_child("name", "jabber:iq:version"));
    assert_eq!(name.map(Element::text).as_deref(), Some("Lattice"));
    Ok(())
}

/// A Matrix user's avatar reaches XMPP: its XEP-0153 hash in their occupant's presence, the picture in the
/// XEP-0054 vCard of their gateway JID.
#[tokio::test]
async fn matrix_avatars_are_vcard_photos_on_xmpp() -> anyhow::Result<()> {
    use base64::Engine as _;
    const VCARD: &str = "vcard-temp";
    let fixture = Fixture::start().await?;
    let alice = fixture.matrix_user("alice").await?;
    let picture = b"\x89PNG\r\n\x1a\n not really a picture, but bytes are bytes".to_vec();
    let mxc = alice.upload(picture.clone(), "image/png", "alice.png").await?;
    let path = ["_matrix", "client", "v3", "profile", alice.user_id(), "avatar_url"];
    alice.call(reqwest::Method::PUT, &path, &[], Some(&json!({"avatar_url": mxc}))).await?;
    let room = "avatars@conference.localhost";
    let mut xavier = fixture.xmpp_user("xavier").await?;
    xavier.join_muc(room, "Xavier").await?;
    join_portal(&alice, &mut xavier, room, "Xavier").await?;

    let occupant = format!("{room}/alice");
    let presence = xavier
        .wait_for(WAIT, |stanza| stanza.name() == "presence" && stanza.attr("from") == Some(occupant.as_str()))
        .await?;
    let hash = presence
        .get_child("x", "vcard-temp:x:update")
        .and_then(|x| x.get_child("photo", "vcard-temp:x:update"))
        .map(Element::text)
        .context("no XEP-0153 photo hash")?;
    let expected = sha1_hex(&picture)?;
    assert_eq!(hash, expected);

    let user = r"alice\40localhost@bridge.localhost";
    let answer = xavier.iq_with_id("get", user, "vc1", &format!("<vCard xmlns='{VCARD}'/>")).await?;
    let photo =
        answer.get_child("vCard", VCARD).and_then(|vcard| vcard.get_child("PHOTO", VCARD)).context("no PHOTO")?;
    assert_eq!(photo.get_child("TYPE", VCARD).map(Element::text).as_deref(), Some("image/png"));
    let binval = photo.get_child("BINVAL", VCARD).map(Element::text).context("no BINVAL")?;
    let bytes = base64::engine::general_purpose::STANDARD.decode(binval.split_whitespace().collect::<String>())?;
    assert_eq!(bytes, picture);
    Ok(())
}

/// An XMPP occupant's XEP-0153 avatar becomes their ghost's Matrix avatar, the picture fetched from their vCard.
#[tokio::test]
async fn xmpp_avatars_become_ghost_avatars() -> anyhow::Result<()> {
    use base64::Engine as _;
    let fixture = Fixture::start().await?;
    let mut xavier = fixture.xmpp_user("xavier").await?;
    let picture = b"GIF89a a tiny picture of xavier".to_vec();
    let binval = base64::engine::general_purpose::STANDARD.encode(&picture);
    let vcard =
        format!("<vCard xmlns='vcard-temp'><PHOTO><TYPE>image/gif</TYPE><BINVAL>{binval}</BINVAL></PHOTO></vCard>");
    let stored = xavier.iq_with_id("set", "xavier@localhost", "vc-set", &vcard).await?;
    assert_eq!(stored.attr("type"), Some("result"), "{}", crate::client::to_xml(&stored));
    let hash = sha1_hex(&picture)?;
    let room = "faces@conference.localhost";
    let update = format!("<x xmlns='vcard-temp:x:update'><photo>{hash}</photo></x>");
    let ghost = occupant_ghost(room, &xavier.join_muc_with(room, "Xavier", &update).await?)?;
    let alice = fixture.matrix_user("alice").await?;
    // (The ghost may join with the avatar already set, or set it later: either member event shows it.)
    let room_id = alice.join("#_xmpp_faces@conference.localhost:localhost").await?;
    let member = alice
        .wait_for_event(&room_id, WAIT, |event| {
            event["type"] == "m.room.member"
                && event["state_key"] == ghost
                && event["content"]["avatar_url"].as_str().is_some_and(|url| url.starts_with("mxc://"))
        })
        .await
        .context("the ghost's avatar")?;
    let mxc = member["content"]["avatar_url"].as_str().context("avatar_url")?;
    assert_eq!(alice.download(mxc).await?, picture);
    Ok(())
}
