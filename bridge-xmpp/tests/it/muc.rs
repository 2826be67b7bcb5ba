//! XMPP MUCs carried into Matrix portals: conversation both ways with styling, bursts in order, an XMPP server
//! restart, hostile nicks.

use std::time::Duration;

use anyhow::{Context as _, bail};
use lattice_e2e::{MatrixUser, Servers, XmppServerKind, xmpp_server_tests};
use serde_json::{Value, json};

use crate::{
    client::XmppClient,
    fixture::{Fixture, WAIT, html_message},
};

/// A Matrix user in the portal of `room`, with the XMPP side's view of the bridge set up: the bridge's listener is
/// in the MUC and the XMPP user's ghost has joined the Matrix room.
pub(crate) async fn join_portal(
    matrix: &MatrixUser,
    xmpp: &mut XmppClient,
    room: &str,
    xmpp_nick: &str,
) -> anyhow::Result<String> {
    let alias = format!("#_xmpp_{room}:localhost");
    let room_id = matrix.join(&alias).await.with_context(|| format!("joining {alias}"))?;
    let listener = format!("{room}/Matrix bridge");
    xmpp.wait_for(WAIT, |stanza| stanza.name() == "presence" && stanza.attr("from") == Some(listener.as_str()))
        .await
        .context("waiting for the bridge's occupant in the MUC")?;
    matrix
        .wait_for_event(&room_id, WAIT, |event| {
            event["type"] == "m.room.member"
                && event["content"]["membership"] == "join"
                && event["content"]["displayname"] == xmpp_nick
        })
        .await
        .context("waiting for the XMPP user's ghost to join")?;
    Ok(room_id)
}

/// The ghost of the occupant whose presence this is: a Prosody MUC stamps XEP-0421 occupant-ids, and the bridge
/// names the ghosts of semi-anonymous occupants after them.
pub(crate) fn occupant_ghost(room: &str, presence: &xmpp_parsers::minidom::Element) -> anyhow::Result<String> {
    occupant_ghost_on(XmppServerKind::Prosody, room, presence)
}

/// The ghost of the occupant whose presence this is, in a MUC on `server`. Prosody stamps XEP-0421 occupant-ids and
/// the ghost is named after the id; ejabberd 23.01 has no occupant-ids (its `mod_muc_occupantid` came in 23.10), so
/// the ghost is named after the occupant's nick, and a new nick is a new person to Matrix.
pub(crate) fn occupant_ghost_on(
    server: XmppServerKind,
    room: &str,
    presence: &xmpp_parsers::minidom::Element,
) -> anyhow::Result<String> {
    use lattice_bridge_xmpp::{
        XmppSection,
        addressing::{Addressing, XmppIdentity},
    };
    let stamped = presence.get_child("occupant-id", "urn:xmpp:occupant-id:0").and_then(|occupant| occupant.attr("id"));
    let occupant = match (server, stamped) {
        (XmppServerKind::Prosody, Some(id)) => format!("{room}/{id}"),
        (XmppServerKind::Ejabberd, None) => presence.attr("from").context("a presence without from")?.to_owned(),
        (server, _) => bail!(
            "{server:?} should {}stamp occupant-ids: {}",
            if stamped.is_some() { "not " } else { "" },
            crate::client::to_xml(presence)
        ),
    };
    let occupant = occupant.parse().context("occupant JID")?;
    let addressing = Addressing::new(&XmppSection::default(), "localhost");
    addressing.ghost_for(&XmppIdentity::Occupant(occupant)).context("no ghost")
}

/// The usual start of a MUC portal test: Xavier in the MUC `room` as `Xavier`, and Alice in its portal; returns
/// both and the portal's room ID.
pub(crate) async fn xavier_and_alice_in_portal(
    fixture: &Fixture,
    room: &str,
) -> anyhow::Result<(XmppClient, MatrixUser, String)> {
    let mut xavier = fixture.xmpp_user("xavier").await?;
    xavier.join_muc(room, "Xavier").await?;
    let alice = fixture.matrix_user("alice").await?;
    let room_id = join_portal(&alice, &mut xavier, room, "Xavier").await?;
    Ok((xavier, alice, room_id))
}

xmpp_server_tests!(homeservers: muc_conversation_both_ways_with_styling);
xmpp_server_tests!(xmpp_server_restart_loses_nothing);

fn is_message_with_prefix(event: &Value, prefix: &str) -> bool {
    event["type"] == "m.room.message" && event["content"]["body"].as_str().is_some_and(|body| body.starts_with(prefix))
}

/// Alice's file in the portal reaches the MUC as a XEP-0066 link to the bridge's media endpoint, which serves it.
async fn file_becomes_a_link(
    alice: &MatrixUser,
    room_id: &str,
    xavier: &mut XmppClient,
    room: &str,
) -> anyhow::Result<()> {
    let mxc = alice.upload(b"file contents".to_vec(), "text/plain", "notes.txt").await?;
    alice
        .send_message(
            room_id,
            json!({"msgtype": "m.file", "body": "notes.txt", "url": mxc,
            "info": {"mimetype": "text/plain", "size": 13}}),
        )
        .await?;
    let (_, url, stanza) = xavier.wait_for_groupchat(room, WAIT, |body| body.contains("/_lattice/media/")).await?;
    let oob = stanza.get_child("x", "jabber:x:oob").context("no XEP-0066 payload")?;
    assert_eq!(oob.get_child("url", "jabber:x:oob").map(|url| url.text()), Some(url.clone()));
    assert!(url.ends_with("/notes.txt"), "{url}");
    let fetched = reqwest::Client::builder().no_proxy().build()?.get(&url).send().await?.bytes().await?;
    assert_eq!(&fetched[..], b"file contents");
    Ok(())
}

async fn muc_conversation_both_ways_with_styling(servers: Servers) -> anyhow::Result<()> {
    let fixture = Fixture::between(servers).await?;
    let room = "lobby@conference.localhost";
    let mut xavier = fixture.xmpp_user("xavier").await?;
    let joined = xavier.join_muc(room, "Xavier").await?;
    let alice = fixture.matrix_user("alice").await?;
    let room_id = join_portal(&alice, &mut xavier, room, "Xavier").await?;

    // XMPP → Matrix: XEP-0393 styling becomes HTML, from the occupant's ghost.
    xavier.send_groupchat(room, "hello *bold* and _soft_ ~old~ `code`").await?;
    let message = alice.wait_for_message(&room_id, WAIT, "hello bold and soft old code").await?;
    assert_eq!(message["sender"], occupant_ghost_on(servers.xmpp, room, &joined)?.as_str());
    let html = message["content"]["formatted_body"].as_str().unwrap_or_default();
    for fragment in ["<strong>bold</strong>", "<em>soft</em>", "<del>old</del>", "<code>code</code>"] {
        assert!(html.contains(fragment), "{fragment} missing in {html:?}");
    }

    // Matrix → XMPP: HTML becomes styling, from Alice's own occupant named by her display name.
    alice.send_message(&room_id, html_message("hi there gone", "hi <strong>there</strong> <del>gone</del>")).await?;
    let (nick, body, _) = xavier.wait_for_groupchat(room, WAIT, |body| body.starts_with("hi ")).await?;
    assert_eq!((nick.as_str(), body.as_str()), ("alice", "hi *there* ~gone~"));
    alice.send_message(&room_id, json!({"msgtype": "m.emote", "body": "waves"})).await?;
    let (_, body, _) = xavier.wait_for_groupchat(room, WAIT, |body| body.contains("waves")).await?;
    assert_eq!(body, "/me waves");

    // A Matrix file becomes a XEP-0066 link to the bridge's media endpoint, which serves the file.
    file_becomes_a_link(&alice, &room_id, &mut xavier, room).await?;

    // An oversize message is refused with a notice to its sender instead of vanishing.
    let oversize = "x".repeat(20_000);
    alice.send_text(&room_id, &oversize).await?;
    let notice = alice
        .wait_for_event(&room_id, WAIT, |event| {
            event["content"]["msgtype"] == "m.notice"
                && event["content"]["body"].as_str().is_some_and(|body| body.contains("max_message_bytes"))
        })
        .await?;
    assert!(notice["content"]["body"].as_str().unwrap_or_default().contains("20000 bytes"), "{notice}");

    // Nothing echoes: neither Alice's message back into Matrix nor the bridge's own traffic.
    xavier.send_groupchat(room, "marker").await?;
    alice.wait_for_message(&room_id, WAIT, "marker").await?;
    let echo = alice
        .wait_for_event(&room_id, Duration::from_millis(500), |event| {
            event["type"] == "m.room.message" && event["sender"].as_str().is_some_and(|s| s.starts_with("@_xmpp_"))
        })
        .await;
    assert!(echo.is_err(), "an echo reached Matrix: {echo:?}");
    // Alice's own occupant never becomes a ghost, although this semi-anonymous MUC hides its real JID: the
    // listener may hear of her join before her occupant's join is answered.
    let members = alice.joined_members(&room_id).await?;
    assert!(
        !members.iter().any(|member| member.contains("=2falice")),
        "Alice's occupant came back as a ghost: {members:?}"
    );

    // The MUC subject becomes the portal topic (portal members cannot change the topic: it is the bridge's).
    xavier.send_raw(&format!("<message type='groupchat' to='{room}'><subject>from xmpp</subject></message>")).await?;
    alice
        .wait_for_event(&room_id, WAIT, |event| {
            event["type"] == "m.room.topic" && event["content"]["topic"] == "from xmpp"
        })
        .await?;

    // Leaving the portal leaves the MUC.
    alice.leave(&room_id).await?;
    xavier
        .wait_for(WAIT, |stanza| {
            stanza.name() == "presence"
                && stanza.attr("type") == Some("unavailable")
                && stanza.attr("from") == Some(format!("{room}/alice").as_str())
        })
        .await?;
    Ok(())
}

#[tokio::test]
async fn bursts_of_500_messages_arrive_complete_and_in_order() -> anyhow::Result<()> {
    const COUNT: usize = 500;
    let fixture = Fixture::start().await?;
    let room = "burst@conference.localhost";
    let mut xavier = fixture.xmpp_user("xavier").await?;
    xavier.join_muc(room, "Xavier").await?;
    let alice = fixture.matrix_user("alice").await?;
    let room_id = join_portal(&alice, &mut xavier, room, "Xavier").await?;

    for index in 0..COUNT {
        xavier.send_groupchat(room, &format!("burst {index}")).await?;
    }
    for index in 0..COUNT {
        let event = alice.wait_for_event(&room_id, WAIT, |event| is_message_with_prefix(event, "burst ")).await?;
        assert_eq!(event["content"]["body"], format!("burst {index}"), "XMPP → Matrix, position {index}");
    }

    for index in 0..COUNT {
        alice.send_text(&room_id, &format!("reverse {index}")).await?;
    }
    for index in 0..COUNT {
        let (nick, body, _) = xavier.wait_for_groupchat(room, WAIT, |body| body.starts_with("reverse ")).await?;
        assert_eq!((nick.as_str(), body), ("alice", format!("reverse {index}")), "Matrix → XMPP, position {index}");
    }
    Ok(())
}

async fn xmpp_server_restart_loses_nothing(servers: Servers) -> anyhow::Result<()> {
    let mut fixture = Fixture::between(servers).await?;
    let room = "sturdy@conference.localhost";
    let password = "xavier-password";
    fixture.xmpp.register("xavier", password).await?;
    let mut xavier = XmppClient::connect(fixture.xmpp.c2s_port(), "xavier", password).await?;
    xavier.join_muc(room, "Xavier").await?;
    let alice = fixture.matrix_user("alice").await?;
    let room_id = join_portal(&alice, &mut xavier, room, "Xavier").await?;
    alice.send_text(&room_id, "before restart").await?;
    xavier.wait_for_groupchat(room, WAIT, |body| body == "before restart").await?;

    fixture.xmpp.restart().await?;
    // Sent while the component is down or reconnecting: held in the bridge's queue, delivered after the rejoin.
    for index in 0..3 {
        alice.send_text(&room_id, &format!("during outage {index}")).await?;
    }
    let mut xavier = XmppClient::connect(fixture.xmpp.c2s_port(), "xavier", password).await?;
    xavier.join_muc(room, "Xavier").await?;
    for index in 0..3 {
        let (nick, body, _) = xavier.wait_for_groupchat(room, WAIT, |body| body.starts_with("during outage")).await?;
        assert_eq!((nick.as_str(), body), ("alice", format!("during outage {index}")));
    }
    // The bridge's listener is back in the MUC, and XMPP reaches Matrix again.
    xavier.send_groupchat(room, "after restart").await?;
    alice.wait_for_message(&room_id, WAIT, "after restart").await?;
    Ok(())
}

#[tokio::test]
async fn hostile_nicks_and_display_names() -> anyhow::Result<()> {
    let fixture = Fixture::start().await?;
    let room = "hostile@conference.localhost";
    let hostile = "<script>alert(\"x\")</script> & 'q' @home/..";
    let mut mallory = fixture.xmpp_user("mallory").await?;
    let joined = mallory.join_muc(room, hostile).await?;
    let alice = fixture.matrix_user("alice").await?;
    let room_id = join_portal(&alice, &mut mallory, room, hostile).await?;

    mallory.send_groupchat(room, "<b>not html</b> & more").await?;
    let message = alice.wait_for_message(&room_id, WAIT, "<b>not html</b> & more").await?;
    // The ghost is named after the occupant-id, never the nick.
    assert_eq!(message["sender"], occupant_ghost(room, &joined)?.as_str());
    if let Some(html) = message["content"]["formatted_body"].as_str() {
        assert!(!html.contains("<b>"), "raw HTML from XMPP reached Matrix: {html}");
    }

    // A nick far longer than a Matrix user ID can hold still gets its own ghost.
    let long_nick = "n".repeat(400);
    let mut long = fixture.xmpp_user("long").await?;
    long.join_muc(room, &long_nick).await?;
    long.send_groupchat(room, "from the long nick").await?;
    let message = alice.wait_for_message(&room_id, WAIT, "from the long nick").await?;
    let sender = message["sender"].as_str().unwrap_or_default();
    assert!(sender.starts_with("@_xmpp_") && sender.len() <= 255, "{sender}");

    // A Matrix display name that is markup, and one that collides with an XMPP occupant's nick.
    let bob = fixture.matrix_user("bob").await?;
    bob.set_display_name("<img src=x>\"&'").await?;
    let bob_room = bob.join(&format!("#_xmpp_{room}:localhost")).await?;
    bob.send_text(&bob_room, "bob speaks").await?;
    let (nick, _, _) = mallory.wait_for_groupchat(room, WAIT, |body| body == "bob speaks").await?;
    assert_eq!(nick, "<img src=x>\"&'");

    let carol = fixture.matrix_user("carol").await?;
    carol.set_display_name(hostile).await?;
    let carol_room = carol.join(&format!("#_xmpp_{room}:localhost")).await?;
    carol.send_text(&carol_room, "carol speaks").await?;
    let (nick, _, _) = mallory.wait_for_groupchat(room, WAIT, |body| body == "carol speaks").await?;
    assert_eq!(nick, format!("{hostile} [m]"), "a taken nick gets the conflict suffix");
    Ok(())
}

#[tokio::test]
async fn xhtml_im_formatting_reaches_matrix_sanitised() -> anyhow::Result<()> {
    let fixture = Fixture::start().await?;
    let room = "xhtml@conference.localhost";
    let (mut xavier, alice, room_id) = xavier_and_alice_in_portal(&fixture, room).await?;
    // As Gajim sends it: a plain body beside XEP-0071 markup with CSS emphasis, and markup that must not pass.
    xavier
        .send_raw(&format!(
            "<message type='groupchat' to='{room}' id='x1'><body>tea is *hot* and sweet</body>\
             <html xmlns='http://jabber.org/protocol/xhtml-im'><body xmlns='http://www.w3.org/1999/xhtml'>\
             <p>tea is <strong>hot</strong> and <span style='font-style: italic'>sweet</span>\
             <script>alert(1)</script><a href='javascript:alert(2)'>!</a></p></body></html></message>"
        ))
        .await?;
    let message = alice.wait_for_event(&room_id, WAIT, |event| is_message_with_prefix(event, "tea is")).await?;
    let html = message["content"]["formatted_body"].as_str().unwrap_or_default();
    assert!(html.contains("<strong>hot</strong>") && html.contains("<em>sweet</em>"), "{html}");
    assert!(!html.contains("script") && !html.contains("javascript") && !html.contains("alert"), "{html}");
    Ok(())
}
