//! Avatars of 1:1 contacts and gateway MUC occupants (XEP-0153 vCards and XEP-0084 PEP, through Prosody's
//! `mod_pep` and `mod_vcard`), and Matrix avatars served as XEP-0084 items of gateway user JIDs.

use anyhow::Context as _;
use base64::Engine as _;
use lattice_e2e::MatrixUser;
use serde_json::{Value, json};
use xmpp_parsers::minidom::Element;

use crate::{
    client::{XmppClient, escape, to_xml},
    fixture::{Fixture, WAIT},
};

const PUBSUB: &str = "http://jabber.org/protocol/pubsub";
const METADATA: &str = "urn:xmpp:avatar:metadata";
const DATA: &str = "urn:xmpp:avatar:data";

fn base64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn sha1_hex(bytes: &[u8]) -> anyhow::Result<String> {
    let hash = xmpp_parsers::caps::hash_caps(bytes, xmpp_parsers::hashes::Algo::Sha_1).map_err(anyhow::Error::msg)?;
    Ok(hash.hash.iter().map(|byte| format!("{byte:02x}")).collect())
}

/// Publishes a picture on the account's PEP avatar nodes (data first, then metadata, as XEP-0084 §4 orders),
/// readable by anyone, as Conversations does.
async fn publish_pep_avatar(client: &mut XmppClient, account: &str, picture: &[u8]) -> anyhow::Result<()> {
    let id = sha1_hex(picture)?;
    let open = "<publish-options><x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE' type='hidden'>\
        <value>http://jabber.org/protocol/pubsub#publish-options</value></field>\
        <field var='pubsub#access_model'><value>open</value></field></x></publish-options>";
    for (node, payload) in [
        (DATA, format!("<data xmlns='{DATA}'>{}</data>", base64(picture))),
        (
            METADATA,
            format!(
                "<metadata xmlns='{METADATA}'><info bytes='{}' id='{id}' type='image/png'/></metadata>",
                picture.len()
            ),
        ),
    ] {
        let publish = format!(
            "<pubsub xmlns='{PUBSUB}'><publish node='{node}'><item id='{id}'>{payload}</item></publish>{open}</pubsub>"
        );
        let answer = client.iq("set", account, &publish).await?;
        anyhow::ensure!(answer.attr("type") == Some("result"), "publishing {node}: {}", to_xml(&answer));
    }
    Ok(())
}

/// Stores a picture in the account's vCard (XEP-0054) and returns its XEP-0153 hash.
async fn store_vcard_avatar(client: &mut XmppClient, account: &str, picture: &[u8]) -> anyhow::Result<String> {
    let vcard = format!(
        "<vCard xmlns='vcard-temp'><PHOTO><TYPE>image/gif</TYPE><BINVAL>{}</BINVAL></PHOTO></vCard>",
        base64(picture)
    );
    let stored = client.iq("set", account, &vcard).await?;
    anyhow::ensure!(stored.attr("type") == Some("result"), "storing the vCard: {}", to_xml(&stored));
    sha1_hex(picture)
}

/// Waits until `ghost`'s membership in the room shows an avatar, and returns its `mxc://` URI.
async fn ghost_avatar(user: &MatrixUser, room_id: &str, ghost: &str) -> anyhow::Result<String> {
    let member = user
        .wait_for_event(room_id, WAIT, |event: &Value| {
            event["type"] == "m.room.member"
                && event["state_key"] == ghost
                && event["content"]["avatar_url"].as_str().is_some_and(|url| url.starts_with("mxc://"))
        })
        .await
        .with_context(|| format!("{ghost}'s avatar"))?;
    Ok(member["content"]["avatar_url"].as_str().context("avatar_url")?.to_owned())
}

/// A contact's PEP picture reaches their ghost in the direct chat; an XMPP user in a gateway MUC with the same
/// picture in their vCard gets it on their ghost too, from the same upload (pictures are cached by SHA-1); a
/// contact whose presence names a vCard picture gets that one, and loses it when a presence says there is none.
#[tokio::test]
async fn contacts_and_gateway_muc_occupants_get_their_avatars() -> anyhow::Result<()> {
    let fixture = Fixture::start().await?;
    let alice = fixture.matrix_user("alice").await?;
    let gateway_jid = r"alice\40localhost@bridge.localhost";
    let picture = b"\x89PNG\r\n\x1a\n xavier's face, published by PEP".to_vec();

    // XEP-0084, 1:1: asked when the contact writes.
    let mut xavier = fixture.xmpp_user("xavier").await?;
    publish_pep_avatar(&mut xavier, "xavier@localhost", &picture).await?;
    xavier.send_chat(gateway_jid, "hello, with a face").await?;
    let dm = alice.wait_for_invite(WAIT).await?;
    alice.join(&dm).await?;
    let mxc = ghost_avatar(&alice, &dm, "@_xmpp_xavier=40localhost:localhost").await?;
    assert_eq!(alice.download(&mxc).await?, picture);

    // XEP-0153, gateway MUC: the hash in the join presence, the picture in the vCard.
    let room_id = alice.create_room(json!({"preset": "public_chat", "room_alias_name": "faces"})).await?;
    let mut yvonne = fixture.xmpp_user("yvonne").await?;
    let hash = store_vcard_avatar(&mut yvonne, "yvonne@localhost", &picture).await?;
    let update = format!("<x xmlns='vcard-temp:x:update'><photo>{hash}</photo></x>");
    yvonne.join_muc_with("#faces#localhost@bridge.localhost", "Yvonne", &update).await?;
    let same = ghost_avatar(&alice, &room_id, "@_xmpp_yvonne=40localhost:localhost").await?;
    assert_eq!(same, mxc, "one picture, one upload");

    // XEP-0153, 1:1: a contact's presence to the gateway JID names the picture.
    let other = b"GIF89a zoe's own picture".to_vec();
    let mut zoe = fixture.xmpp_user("zoe").await?;
    let hash = store_vcard_avatar(&mut zoe, "zoe@localhost", &other).await?;
    let update = format!("<x xmlns='vcard-temp:x:update'><photo>{hash}</photo></x>");
    zoe.send_raw(&format!("<presence to='{}'>{update}</presence>", escape(gateway_jid))).await?;
    zoe.send_chat(gateway_jid, "hi from zoe").await?;
    let dm = alice.wait_for_invite(WAIT).await?;
    alice.join(&dm).await?;
    let zoe_ghost = "@_xmpp_zoe=40localhost:localhost";
    let mxc = ghost_avatar(&alice, &dm, zoe_ghost).await?;
    assert_eq!(alice.download(&mxc).await?, other);

    // XEP-0153: an empty `photo` says zoe has no picture any more; her ghost's goes.
    zoe.send_raw(&format!(
        "<presence to='{}'><x xmlns='vcard-temp:x:update'><photo/></x></presence>",
        escape(gateway_jid)
    ))
    .await?;
    let state = ["_matrix", "client", "v3", "rooms", dm.as_str(), "state", "m.room.member", zoe_ghost];
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let member = alice.call(reqwest::Method::GET, &state, &[], None).await?;
        if member["avatar_url"].as_str().is_none_or(str::is_empty) {
            break;
        }
        anyhow::ensure!(tokio::time::Instant::now() < deadline, "zoe's ghost kept its avatar: {member}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    Ok(())
}

/// A contact who put a Matrix user on their roster approves the gateway's request to subscribe back; from then on
/// their server pushes their new PEP avatar to the gateway (XEP-0163 `+notify`), and it reaches their ghost although
/// the gateway asked for their avatar only minutes ago (it asks an account at most every 10 minutes).
#[tokio::test]
async fn a_subscribed_contacts_new_avatar_arrives_unasked() -> anyhow::Result<()> {
    let fixture = Fixture::start().await?;
    let alice = fixture.matrix_user("alice").await?;
    let gateway_jid = r"alice\40localhost@bridge.localhost";
    let mut xavier = fixture.xmpp_user("xavier").await?;
    xavier.request_roster().await?;
    // The first message: the gateway asks for xavier's avatar, finds none, and will not ask again for a while.
    xavier.send_chat(gateway_jid, "hello, no face yet").await?;
    let dm = alice.wait_for_invite(WAIT).await?;
    alice.join(&dm).await?;
    alice.wait_for_event(&dm, WAIT, |event: &Value| event["content"]["body"] == "hello, no face yet").await?;

    xavier.send_raw(&format!("<presence type='subscribe' to='{}'/>", escape(gateway_jid))).await?;
    xavier.wait_for_presence(gateway_jid, WAIT, |kind| kind == Some("subscribe")).await?;
    xavier.send_raw(&format!("<presence type='subscribed' to='{}'/>", escape(gateway_jid))).await?;
    xavier.send_raw("<presence/>").await?;

    let picture = b"\x89PNG\r\n\x1a\n xavier's new face, pushed".to_vec();
    publish_pep_avatar(&mut xavier, "xavier@localhost", &picture).await?;
    let mxc = ghost_avatar(&alice, &dm, "@_xmpp_xavier=40localhost:localhost").await?;
    assert_eq!(alice.download(&mxc).await?, picture);
    Ok(())
}

fn item_of<'a>(answer: &'a Element, node: &str) -> Option<&'a Element> {
    let items = answer.get_child("pubsub", PUBSUB)?.get_child("items", PUBSUB)?;
    (items.attr("node") == Some(node)).then_some(())?;
    items.get_child("item", PUBSUB)
}

/// A gateway user JID answers XEP-0084 queries with the Matrix user's avatar, and `item-not-found` without one.
#[tokio::test]
async fn matrix_avatars_are_pep_items_on_xmpp() -> anyhow::Result<()> {
    let fixture = Fixture::start().await?;
    let alice = fixture.matrix_user("alice").await?;
    let picture = b"\x89PNG\r\n\x1a\n alice's picture".to_vec();
    let mxc = alice.upload(picture.clone(), "image/png", "alice.png").await?;
    let path = ["_matrix", "client", "v3", "profile", alice.user_id(), "avatar_url"];
    alice.call(reqwest::Method::PUT, &path, &[], Some(&json!({"avatar_url": mxc}))).await?;
    fixture.matrix_user("bob").await?;
    let mut xavier = fixture.xmpp_user("xavier").await?;
    let alice_jid = r"alice\40localhost@bridge.localhost";

    let query =
        |node: &str, item: &str| format!("<pubsub xmlns='{PUBSUB}'><items node='{node}'>{item}</items></pubsub>");
    let answer = xavier.iq("get", alice_jid, &query(METADATA, "")).await?;
    let item = item_of(&answer, METADATA).with_context(|| format!("no metadata item: {}", to_xml(&answer)))?;
    let id = sha1_hex(&picture)?;
    assert_eq!(item.attr("id"), Some(id.as_str()));
    let info = item.get_child("metadata", METADATA).and_then(|m| m.get_child("info", METADATA)).context("info")?;
    assert_eq!((info.attr("id"), info.attr("type")), (Some(id.as_str()), Some("image/png")));
    assert_eq!(info.attr("bytes"), Some(picture.len().to_string().as_str()));

    let answer = xavier.iq("get", alice_jid, &query(DATA, &format!("<item id='{id}'/>"))).await?;
    let data = item_of(&answer, DATA).and_then(|item| item.get_child("data", DATA)).context("no data item")?;
    let bytes = base64::engine::general_purpose::STANDARD.decode(data.text().split_whitespace().collect::<String>())?;
    assert_eq!(bytes, picture);

    let none = xavier.iq("get", r"bob\40localhost@bridge.localhost", &query(METADATA, "")).await?;
    assert_eq!(none.attr("type"), Some("error"));
    assert!(to_xml(&none).contains("item-not-found"), "{}", to_xml(&none));
    Ok(())
}
