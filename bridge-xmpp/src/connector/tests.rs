//! Unit tests of the Matrix → XMPP handlers, one or more per Matrix event kind the connector implements, against a
//! fake XMPP server on loopback (component handshake, IQ answers, a minimal MUC service; `crate::testing`) and the
//! runtime's fake homeserver. Prosody is in the end-to-end suite.

use std::{str::FromStr, time::Duration};

use lattice_bridge_core::{
    connector::{InPortal, MembershipChange, RemoteId, Sent},
    event::{MatrixEvent, MatrixEventKind, Message as MatrixMessage, Relation},
    store::{MessageMapping, Portal},
    testing::{FakeHomeserver, matrix_event, settled},
};
use lattice_config::Secret;
use serde_json::{Value, json};
use tokio_xmpp::parsers::{
    jid::{BareJid, Jid},
    message::{Message, MessageType},
    minidom::Element,
    ns,
    presence::{Presence, Type as PresenceType},
};

use super::*;
use crate::{
    addressing::Addressing,
    config::ComponentConfig,
    gateway::PortalKind,
    testing::{COMPONENT, FakeXmppServer},
    xep::reactions::ReactionRef,
};

const ALICE: &str = "@alice:example.org";
const ROOM: &str = "!room:example.org";
const MUC_ROOM: &str = "!muc:example.org";
const XAVIER: &str = "xavier@xmpp.test";
const MUC: &str = "lounge@conference.xmpp.test";
const YVONNE: &str = "yvonne@xmpp.test/phone";
const GATEWAY_MUC: &str = "#lounge#example.org@bridge.xmpp.test";
const GATEWAY_ROOM: &str = "!lounge:example.org";

/// The connector started on a fake XMPP server and a fake homeserver, with a direct chat between Alice and Xavier
/// and a MUC portal for the lounge.
struct Setup {
    xmpp: FakeXmppServer,
    homeserver: FakeHomeserver,
    connector: XmppConnector,
    bridge: BridgeHandle,
    direct: Portal,
    muc: Portal,
}

async fn setup() -> Setup {
    let xmpp = FakeXmppServer::start().await;
    let homeserver = FakeHomeserver::start().await;
    let section = XmppSection {
        component: ComponentConfig {
            domain: COMPONENT.into(),
            server: xmpp.address.clone(),
            secret: Secret::Value("secret".into()),
            ping_interval_secs: 30,
            response_timeout_secs: 5,
            max_reconnect_delay_secs: 1,
        },
        ..XmppSection::default()
    };
    let connector = XmppConnector::new(section);
    let bridge = homeserver.bridge(connector.info()).await;
    connector.start(bridge.clone()).await.unwrap();
    for _ in 0..400 {
        if connector.try_gateway().is_some_and(|gateway| gateway.is_online()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(connector.try_gateway().unwrap().is_online(), "the component never came online");
    let direct = portal(
        "dm/@alice:example.org/xavier@xmpp.test",
        ROOM,
        PortalKind::Direct { account: BareJid::from_str(XAVIER).unwrap(), matrix_user: ALICE.into() },
    );
    let muc = portal("muc/lounge@conference.xmpp.test", MUC_ROOM, PortalKind::Muc(BareJid::from_str(MUC).unwrap()));
    for portal in [&direct, &muc] {
        bridge.portals().upsert(portal).await.unwrap();
    }
    Setup { xmpp, homeserver, connector, bridge, direct, muc }
}

fn portal(remote_key: &str, room_id: &str, kind: PortalKind) -> Portal {
    Portal {
        remote_key: remote_key.into(),
        room_id: room_id.into(),
        alias: None,
        name: None,
        topic: None,
        metadata: kind.metadata(),
    }
}

fn event(kind: &str, content: Value) -> MatrixEvent {
    matrix_event(json!({
        "type": kind, "event_id": "$e1", "room_id": ROOM, "sender": ALICE, "origin_server_ts": 1, "content": content,
    }))
}

fn text(body: &str) -> MatrixEvent {
    event("m.room.message", json!({"msgtype": "m.text", "body": body}))
}

/// The event's relation resolved to `remote_ids`, as the runtime hands it over.
fn related(mut event: MatrixEvent, remote_ids: &[&str]) -> MatrixEvent {
    let ids = remote_ids.iter().map(|id| (*id).to_owned()).collect();
    match &mut event.kind {
        MatrixEventKind::Edit { target, .. }
        | MatrixEventKind::Reaction { target, .. }
        | MatrixEventKind::Redaction { target, .. } => target.remote_ids = ids,
        other => panic!("no relation in {other:?}"),
    }
    event
}

fn relation(event: &MatrixEvent) -> Relation {
    match &event.kind {
        MatrixEventKind::Edit { target, .. }
        | MatrixEventKind::Reaction { target, .. }
        | MatrixEventKind::Redaction { target, .. } => target.clone(),
        other => panic!("no relation in {other:?}"),
    }
}

fn content(event: &MatrixEvent) -> &MatrixMessage {
    match &event.kind {
        MatrixEventKind::Message(message) | MatrixEventKind::Edit { new_content: message, .. } => message,
        other => panic!("not a message: {other:?}"),
    }
}

/// A member event's change, as the runtime hands it over.
fn membership(event: &MatrixEvent) -> MembershipChange<'_> {
    let MatrixEventKind::Membership { user_id, membership, displayname, is_direct, reason } = &event.kind else {
        panic!("not a membership: {:?}", event.kind);
    };
    MembershipChange {
        user_id,
        membership,
        displayname: displayname.as_deref(),
        is_direct: *is_direct,
        reason: reason.as_deref(),
    }
}

fn at<'a>(portal: &'a Portal, event: &'a MatrixEvent) -> InPortal<'a> {
    InPortal { portal, event, sender: ALICE }
}

/// The first payload of a stanza named `name` in namespace `ns`.
fn payload<'a>(payloads: &'a [Element], name: &str, ns: &str) -> &'a Element {
    payloads.iter().find(|payload| payload.is(name, ns)).unwrap_or_else(|| panic!("no <{name} xmlns='{ns}'/>"))
}

fn body(message: &Message) -> Option<&str> {
    message.bodies.values().next().map(String::as_str)
}

fn is_to(message: &Message, jid: &str) -> bool {
    message.to.as_ref().is_some_and(|to| to.to_bare().as_str() == jid)
}

/// Who the direct chat's messages come from: Alice's gateway JID.
fn alice_jid() -> String {
    Addressing::new(
        &XmppSection {
            component: ComponentConfig { domain: COMPONENT.into(), ..Default::default() },
            ..Default::default()
        },
        "example.org",
    )
    .puppet_jid(ALICE)
    .unwrap()
    .to_string()
}

#[tokio::test]
async fn a_message_in_a_direct_chat_goes_from_the_senders_gateway_jid_and_settles_once_the_server_has_it() {
    let setup = setup().await;
    let message = text("hello XMPP");
    let sent = setup.connector.matrix_message(at(&setup.direct, &message), content(&message)).await.unwrap();
    let remote_id = settled(sent).await.expect("written").expect("mapped");
    let chat = setup.xmpp.wait_for("the chat message", |message: &Message| is_to(message, XAVIER)).await;
    assert_eq!(body(&chat), Some("hello XMPP"));
    assert_eq!(chat.type_, MessageType::Chat);
    assert_eq!(chat.from.as_ref().map(Jid::to_bare).map(|jid| jid.to_string()), Some(alice_jid()));
    assert_eq!(chat.id.as_ref().map(|id| id.0.as_str()), Some(remote_id.as_str()), "mapped under its own ID");
    // Confirmed by the answer to a ping written after it.
    let written = setup.xmpp.received();
    let message_at = written.iter().position(|stanza| stanza.is("message", ns::COMPONENT)).unwrap();
    assert!(written[message_at..].iter().any(|stanza| stanza.is("iq", ns::COMPONENT)), "no ping after the message");
}

#[tokio::test]
async fn a_message_in_a_muc_portal_joins_the_senders_occupant_and_settles_on_the_reflection() {
    let setup = setup().await;
    let message = text("hello MUC");
    let sent = setup.connector.matrix_message(at(&setup.muc, &message), content(&message)).await.unwrap();
    let remote_id = settled(sent).await.expect("written").expect("mapped");
    let groupchat = setup.xmpp.wait_for("the groupchat message", |message: &Message| is_to(message, MUC)).await;
    assert_eq!(body(&groupchat), Some("hello MUC"));
    assert_eq!(groupchat.type_, MessageType::Groupchat);
    let id = groupchat.id.as_ref().unwrap().0.clone();
    assert_eq!(remote_id.as_str(), format!("sid-{id}"), "mapped under the stanza-id the MUC stamped");
    let joins: Vec<Presence> = setup.xmpp.presences().into_iter().filter(|presence| presence.to.is_some()).collect();
    assert_eq!(joins.len(), 2, "the listener, then Alice's occupant: {joins:?}");
    assert!(joins.iter().all(|presence| presence.to.as_ref().unwrap().to_bare().as_str() == MUC));
}

#[tokio::test]
async fn an_edit_is_a_correction_of_the_original_message() {
    let setup = setup().await;
    let content_json = json!({
        "msgtype": "m.text", "body": "* fixed",
        "m.new_content": {"msgtype": "m.text", "body": "fixed"},
        "m.relates_to": {"rel_type": "m.replace", "event_id": "$earlier"},
    });
    let edit = related(event("m.room.message", content_json), &["original-id"]);
    let sent = setup.connector.matrix_edit(at(&setup.direct, &edit), &relation(&edit), content(&edit)).await.unwrap();
    assert!(settled(sent).await.is_some());
    let correction = setup.xmpp.wait_for("the correction", |message: &Message| is_to(message, XAVIER)).await;
    assert_eq!(body(&correction), Some("fixed"));
    let replace = payload(&correction.payloads, "replace", "urn:xmpp:message-correct:0");
    assert_eq!(replace.attr("id"), Some("original-id"));
}

#[tokio::test]
async fn a_reaction_is_the_senders_set_of_reactions_mapped_under_a_reference_to_it() {
    let setup = setup().await;
    let content_json = json!({"m.relates_to": {"rel_type": "m.annotation", "event_id": "$earlier", "key": "👍"}});
    let reaction = related(event("m.reaction", content_json), &["target-id"]);
    let sent = setup.connector.matrix_reaction(at(&setup.direct, &reaction), &relation(&reaction), "👍").await;
    let remote_id = settled(sent.unwrap()).await.expect("written").expect("mapped");
    assert!(ReactionRef::decode(remote_id.as_str()).is_some(), "mapped as a reaction: {remote_id}");
    let message = setup.xmpp.wait_for("the reactions", |message: &Message| is_to(message, XAVIER)).await;
    let reactions = payload(&message.payloads, "reactions", "urn:xmpp:reactions:0");
    assert_eq!(reactions.attr("id"), Some("target-id"));
    assert_eq!(reactions.children().map(Element::text).collect::<Vec<_>>(), ["👍"]);
}

#[tokio::test]
async fn redacting_ones_own_message_retracts_it_and_an_unbridged_one_sends_nothing() {
    let setup = setup().await;
    setup.homeserver.route("GET", "/event/", 200, json!({"sender": ALICE, "type": "m.room.message", "content": {}}));
    let redaction = related(event("m.room.redaction", json!({"redacts": "$earlier"})), &["mine"]);
    let sent = setup.connector.matrix_redaction(at(&setup.direct, &redaction), &relation(&redaction), None).await;
    assert!(settled(sent.unwrap()).await.is_some());
    let message = setup.xmpp.wait_for("the retraction", |message: &Message| is_to(message, XAVIER)).await;
    assert_eq!(payload(&message.payloads, "retract", "urn:xmpp:message-retract:1").attr("id"), Some("mine"));

    let unbridged = related(event("m.room.redaction", json!({"redacts": "$other"})), &[]);
    let sent = setup.connector.matrix_redaction(at(&setup.direct, &unbridged), &relation(&unbridged), None).await;
    assert!(matches!(sent.unwrap(), Sent::Nothing));
}

#[tokio::test]
async fn joining_a_muc_portal_seats_the_users_occupant_and_leaving_takes_it_out() {
    let setup = setup().await;
    let join = matrix_event(json!({
        "type": "m.room.member", "state_key": ALICE, "event_id": "$j", "room_id": MUC_ROOM, "sender": ALICE,
        "origin_server_ts": 1, "content": {"membership": "join", "displayname": "Alice"},
    }));
    let change = membership(&join);
    let sent = setup.connector.matrix_membership(at(&setup.muc, &join), change).await.unwrap();
    assert!(matches!(sent, Sent::Nothing));
    let seated = |presence: &Presence| presence.to.as_ref().is_some_and(|to| to.to_string() == format!("{MUC}/Alice"));
    let presence = setup.xmpp.wait_for("Alice's join", seated).await;
    assert_eq!(presence.type_, PresenceType::None);
    assert!(presence.payloads.iter().any(|payload| payload.is("x", ns::MUC)), "a MUC join");

    let leave = MembershipChange { membership: "leave", ..change };
    let sent = setup.connector.matrix_membership(at(&setup.muc, &join), leave).await.unwrap();
    assert!(matches!(sent, Sent::Nothing));
    let left = |presence: &Presence| seated(presence) && presence.type_ == PresenceType::Unavailable;
    setup.xmpp.wait_for("Alice's leave", left).await;
}

#[tokio::test]
async fn a_topic_is_the_mucs_subject_set_by_the_senders_occupant() {
    let setup = setup().await;
    let topic = event("m.room.topic", json!({"topic": "Rust and more"}));
    let sent = setup.connector.matrix_topic(at(&setup.muc, &topic), "Rust and more").await.unwrap();
    assert!(matches!(sent, Sent::Nothing));
    let subject = |message: &Message| is_to(message, MUC) && !message.subjects.is_empty();
    let message = setup.xmpp.wait_for("the subject", subject).await;
    assert_eq!(message.subjects.values().next().map(String::as_str), Some("Rust and more"));
    assert_eq!(message.type_, MessageType::Groupchat);
}

#[tokio::test]
async fn a_rooms_name_and_its_power_levels_in_a_muc_portal_send_nothing() {
    let setup = setup().await;
    let name = event("m.room.name", json!({"name": "Lounge"}));
    assert!(matches!(setup.connector.matrix_name(at(&setup.muc, &name), "Lounge").await.unwrap(), Sent::Nothing));
    let levels = matrix_event(json!({
        "type": "m.room.power_levels", "state_key": "", "event_id": "$p", "room_id": ROOM, "sender": ALICE,
        "origin_server_ts": 1, "content": {"users": {ALICE: 100}},
    }));
    assert!(matches!(setup.connector.matrix_other(at(&setup.muc, &levels)).await.unwrap(), Sent::Nothing));
    assert!(setup.xmpp.messages().is_empty() && setup.xmpp.presences().is_empty(), "{:?}", setup.xmpp.received());
}

#[tokio::test]
async fn typing_is_a_chat_state_to_the_direct_chat_and_stopping_another() {
    let setup = setup().await;
    let typing = event("m.typing", json!({"user_ids": [ALICE]}));
    setup.connector.matrix_typing(&setup.direct, &typing, &[ALICE.to_owned()]).await.unwrap();
    let states = "http://jabber.org/protocol/chatstates";
    let composing = |message: &Message| message.payloads.iter().any(|payload| payload.is("composing", states));
    let message = setup.xmpp.wait_for("composing", composing).await;
    assert!(is_to(&message, XAVIER) && body(&message).is_none());
    setup.connector.matrix_typing(&setup.direct, &typing, &[]).await.unwrap();
    let stopped = |message: &Message| !composing(message) && message.payloads.iter().any(|p| p.ns() == states);
    setup.xmpp.wait_for("a chat state after composing", stopped).await;
}

#[tokio::test]
async fn a_read_receipt_is_a_displayed_marker_for_the_message_read() {
    let setup = setup().await;
    let mapping = MessageMapping {
        event_id: "$read".into(),
        room_id: ROOM.into(),
        portal_key: setup.direct.remote_key.clone(),
        remote_id: "xmpp-msg".into(),
    };
    setup.bridge.messages().also_known_as(mapping);
    for _ in 0..200 {
        if !setup.bridge.messages().remotes_for("$read").await.unwrap().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let receipt = event("m.receipt", json!({}));
    let receipts = [("$read".to_owned(), ALICE.to_owned())];
    setup.connector.matrix_receipts(&setup.direct, &receipt, &receipts).await.unwrap();
    let displayed =
        |message: &Message| message.payloads.iter().any(|payload| payload.is("displayed", "urn:xmpp:chat-markers:0"));
    let message = setup.xmpp.wait_for("the displayed marker", displayed).await;
    assert!(is_to(&message, XAVIER));
    assert_eq!(payload(&message.payloads, "displayed", "urn:xmpp:chat-markers:0").attr("id"), Some("xmpp-msg"));
}

#[tokio::test]
async fn a_direct_invite_to_a_ghost_opens_the_direct_chat_and_others_are_ignored() {
    let setup = setup().await;
    let invite = matrix_event(json!({
        "type": "m.room.member", "event_id": "$i", "room_id": "!dm:example.org", "sender": ALICE,
        "state_key": "@someone:example.org", "content": {"membership": "invite", "is_direct": true},
    }));
    setup.connector.matrix_direct_invite(&invite, ALICE, "@someone:example.org").await.unwrap();
    assert!(setup.bridge.portals().by_room("!dm:example.org").await.unwrap().is_none(), "not a ghost: no portal");

    let ghost = setup
        .connector
        .try_gateway()
        .unwrap()
        .addressing()
        .ghost_for(&XmppIdentity::Account(BareJid::from_str("yvonne@xmpp.test").unwrap()))
        .unwrap();
    setup.connector.matrix_direct_invite(&invite, ALICE, &ghost).await.unwrap();
    let portal = setup.bridge.portals().by_room("!dm:example.org").await.unwrap().expect("the direct chat's portal");
    assert_eq!(portal.remote_key, "dm/@alice:example.org/yvonne@xmpp.test");
    let joined = setup.homeserver.received().into_iter().any(|request| {
        request.method == "POST" && request.path.contains("/join/") && request.path.contains("user_id=%40_xmpp_yvonne")
    });
    assert!(joined, "the ghost joined: {:?}", setup.homeserver.received());
}

/// Yvonne joins the gateway MUC of `#lounge:example.org` from XMPP, where Alice (power 100) said "earlier"; returns
/// the gateway MUC's portal once the join is through.
async fn yvonne_joins_the_lounge(setup: &Setup) -> Portal {
    let homeserver = &setup.homeserver;
    homeserver.route("GET", "/directory/room/%23lounge%3Aexample.org", 200, json!({"room_id": GATEWAY_ROOM}));
    homeserver.route("GET", "/joined_members", 200, json!({"joined": {ALICE: {"display_name": "Alice"}}}));
    let levels = json!({"type": "m.room.power_levels", "state_key": "", "content": {"users": {ALICE: 100}}});
    homeserver.route("GET", "/rooms/%21lounge%3Aexample.org/state", 200, json!([levels]));
    let earlier = json!({
        "type": "m.room.message", "event_id": "$earlier", "sender": ALICE, "origin_server_ts": 1_700_000_000_000u64,
        "content": {"msgtype": "m.text", "body": "earlier"},
    });
    homeserver.route("GET", "/messages", 200, json!({"chunk": [earlier], "start": "t1"}));
    let mut join = Presence::available()
        .with_from(Jid::from_str(YVONNE).unwrap())
        .with_to(Jid::from_str(&format!("{GATEWAY_MUC}/Yvonne")).unwrap());
    join.payloads.push(Element::builder("x", ns::MUC).build());
    setup.xmpp.send(join);
    let history = |message: &Message| is_to(message, "yvonne@xmpp.test") && body(message) == Some("earlier");
    setup.xmpp.wait_for("the history", history).await;
    setup.bridge.portals().by_key(&format!("hosted/{GATEWAY_ROOM}")).await.unwrap().expect("the gateway MUC's portal")
}

#[tokio::test]
async fn an_xmpp_user_joining_a_gateway_muc_sees_the_matrix_members_and_history_read_through_the_core_client() {
    let setup = setup().await;
    yvonne_joins_the_lounge(&setup).await;
    let alice = |presence: &Presence| {
        presence.from.as_ref().is_some_and(|from| from.to_string() == format!("{GATEWAY_MUC}/Alice"))
    };
    let presence = setup.xmpp.wait_for("Alice's occupant presence", alice).await;
    let item = payload(&presence.payloads, "x", "http://jabber.org/protocol/muc#user").children().next().unwrap();
    assert_eq!(item.attr("affiliation"), Some("owner"), "power 100 is an owner");
    let paths: Vec<String> = setup.homeserver.received().into_iter().map(|request| request.path).collect();
    for read in ["/joined_members", "/state", "/messages?dir=b&limit=20"] {
        assert!(paths.iter().any(|path| path.contains(read)), "no {read} read: {paths:#?}");
    }
}

#[tokio::test]
async fn a_message_in_a_gateway_muc_reaches_its_xmpp_occupants_under_its_event_id() {
    let setup = setup().await;
    let portal = yvonne_joins_the_lounge(&setup).await;
    let message = text("hello occupants");
    let sent = setup.connector.matrix_message(at(&portal, &message), content(&message)).await.unwrap();
    assert_eq!(settled(sent).await, Some(Some(RemoteId::new("$e1"))));
    let received = |message: &Message| is_to(message, "yvonne@xmpp.test") && body(message) == Some("hello occupants");
    let message = setup.xmpp.wait_for("the message to Yvonne", received).await;
    assert_eq!(message.from.as_ref().map(Jid::to_string), Some(format!("{GATEWAY_MUC}/Alice")));
    assert_eq!(message.id.as_ref().map(|id| id.0.as_str()), Some("$e1"));
    assert_eq!(payload(&message.payloads, "stanza-id", "urn:xmpp:sid:0").attr("id"), Some("$e1"));
}

#[test]
fn protocol_metadata_names_the_gateway() {
    let metadata = XmppConnector::new(XmppSection::default()).thirdparty_protocol().unwrap();
    assert_eq!(metadata["instances"][0]["network_id"], "bridge.localhost");
    assert_eq!(metadata["user_fields"], json!(["jid"]));
}
