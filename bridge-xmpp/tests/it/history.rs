//! History: XEP-0313 archive queries with XEP-0059 paging on a gateway MUC, served from the Matrix room.

use anyhow::Context as _;
use lattice_e2e::{Servers, xmpp_server_tests};
use serde_json::json;
use xmpp_parsers::minidom::Element;

use crate::{
    client::XmppClient,
    fixture::{Fixture, WAIT},
};

const MAM: &str = "urn:xmpp:mam:2";
const RSM: &str = "http://jabber.org/protocol/rsm";
const FORWARD: &str = "urn:xmpp:forward:0";

/// Sends one MAM query with the RSM `set` XML and collects the page: the forwarded bodies with their archive IDs,
/// and the `<fin/>`.
async fn query_page(
    xavier: &mut XmppClient,
    room: &str,
    id: &str,
    set: &str,
) -> anyhow::Result<(Vec<(String, String)>, Element)> {
    let answer =
        xavier.iq_with_id("set", room, id, &format!("<query xmlns='{MAM}' queryid='q-{id}'>{set}</query>")).await?;
    let fin = answer
        .get_child("fin", MAM)
        .with_context(|| format!("no <fin/> in {}", crate::client::to_xml(&answer)))?
        .clone();
    let mut page = Vec::new();
    // The results were sent before the IQ result, so they are all queued by now.
    while let Ok(result) = xavier
        .wait_for(std::time::Duration::from_millis(1), |stanza| {
            stanza
                .get_child("result", MAM)
                .is_some_and(|result| result.attr("queryid") == Some(format!("q-{id}").as_str()))
        })
        .await
    {
        let result = result.get_child("result", MAM).context("result")?;
        let forwarded = result.get_child("forwarded", FORWARD).context("forwarded")?;
        assert!(forwarded.get_child("delay", "urn:xmpp:delay").is_some(), "archived messages carry their time");
        let message = forwarded.get_child("message", "jabber:client").context("forwarded message")?;
        let body = message.get_child("body", "jabber:client").map(Element::text).unwrap_or_default();
        page.push((result.attr("id").unwrap_or_default().to_owned(), body));
    }
    Ok((page, fin))
}

fn rsm_text(fin: &Element, name: &str) -> Option<String> {
    fin.get_child("set", RSM).and_then(|set| set.get_child(name, RSM)).map(Element::text)
}

#[tokio::test]
async fn gateway_muc_archive_pages_through_matrix_history() -> anyhow::Result<()> {
    let fixture = Fixture::start().await?;
    let alice = fixture.matrix_user("alice").await?;
    let room_id = alice.create_room(json!({"preset": "public_chat", "room_alias_name": "archive"})).await?;
    let mut event_ids = Vec::new();
    for index in 1..=5 {
        event_ids.push(alice.send_text(&room_id, &format!("archived {index}")).await?);
    }
    let mut xavier = fixture.xmpp_user("xavier").await?;
    let room = "#archive#localhost@bridge.localhost";
    xavier.join_muc(room, "Xavier").await?;

    // The newest page, then the one before it, then the rest; then forwards from the first.
    let (page, fin) =
        query_page(&mut xavier, room, "p1", &format!("<set xmlns='{RSM}'><max>2</max><before/></set>")).await?;
    let bodies = |page: &[(String, String)]| page.iter().map(|(_, body)| body.clone()).collect::<Vec<_>>();
    assert_eq!(bodies(&page), ["archived 4", "archived 5"]);
    assert_eq!(page.iter().map(|(id, _)| id.as_str()).collect::<Vec<_>>(), [&event_ids[3], &event_ids[4]]);
    assert_eq!(rsm_text(&fin, "first").as_deref(), Some(event_ids[3].as_str()));
    assert_eq!(rsm_text(&fin, "last").as_deref(), Some(event_ids[4].as_str()));
    assert_eq!(rsm_text(&fin, "count").as_deref(), Some("5"), "RSM count: the room's messages");
    let first = fin.get_child("set", RSM).and_then(|set| set.get_child("first", RSM)).context("first")?;
    assert_eq!(first.attr("index"), Some("3"), "the newest two of five start at index 3");
    assert_ne!(fin.attr("complete"), Some("true"));
    let before = &event_ids[3];
    let (page, _) =
        query_page(&mut xavier, room, "p2", &format!("<set xmlns='{RSM}'><max>2</max><before>{before}</before></set>"))
            .await?;
    assert_eq!(bodies(&page), ["archived 2", "archived 3"]);
    let before = &event_ids[1];
    let (page, fin) =
        query_page(&mut xavier, room, "p3", &format!("<set xmlns='{RSM}'><max>2</max><before>{before}</before></set>"))
            .await?;
    assert_eq!(bodies(&page), ["archived 1"]);
    assert_eq!(fin.attr("complete"), Some("true"), "the start of the room's history");
    let after = &event_ids[0];
    let (page, fin) =
        query_page(&mut xavier, room, "p4", &format!("<set xmlns='{RSM}'><max>10</max><after>{after}</after></set>"))
            .await?;
    assert_eq!(bodies(&page), ["archived 2", "archived 3", "archived 4", "archived 5"]);
    assert_eq!(fin.attr("complete"), Some("true"));
    Ok(())
}

xmpp_server_tests!(a_new_portal_is_filled_from_the_muc_archive_with_original_times);

async fn a_new_portal_is_filled_from_the_muc_archive_with_original_times(servers: Servers) -> anyhow::Result<()> {
    let fixture = Fixture::between(servers).await?;
    let room = "archived@conference.localhost";
    let mut xavier = fixture.xmpp_user("xavier").await?;
    let joined = xavier.join_muc(room, "Xavier").await?;
    let ghost = crate::muc::occupant_ghost_on(servers.xmpp, room, &joined)?;
    for index in 1..=3 {
        xavier.send_groupchat(room, &format!("before the portal {index}")).await?;
        xavier.wait_for_groupchat(room, WAIT, |body| body == format!("before the portal {index}")).await?;
    }
    let alice = fixture.matrix_user("alice").await?;
    let room_id = crate::muc::join_portal(&alice, &mut xavier, room, "Xavier").await?;
    let created = alice.wait_for_event(&room_id, WAIT, |event| event["type"] == "m.room.create").await?;
    let created_at = created["origin_server_ts"].as_u64().context("creation time")?;
    for index in 1..=3 {
        let message = alice.wait_for_message(&room_id, WAIT, &format!("before the portal {index}")).await?;
        // A semi-anonymous MUC: the ghost stands for the occupant, as for live messages.
        assert_eq!(message["sender"], ghost.as_str());
        let sent_at = message["origin_server_ts"].as_u64().context("message time")?;
        assert!(
            sent_at <= created_at,
            "message {index} keeps its XMPP time ({sent_at}), before the portal ({created_at})"
        );
    }
    // Live traffic follows, and the join's history did not bring the archived messages again.
    xavier.send_groupchat(room, "after the portal").await?;
    alice.wait_for_message(&room_id, WAIT, "after the portal").await?;
    let again = alice.wait_for_message(&room_id, std::time::Duration::from_millis(500), "before the portal 3").await;
    assert!(again.is_err(), "an archived message arrived twice: {again:?}");
    Ok(())
}
