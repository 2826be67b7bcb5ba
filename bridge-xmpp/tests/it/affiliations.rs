//! MUC affiliations and roles become ghosts' power levels, and Matrix power levels become the affiliations and
//! roles XMPP occupants of gateway MUCs see.

use lattice_e2e::{Servers, xmpp_server_tests};
use serde_json::{Value, json};

use crate::{
    client::{muc_item, to_xml},
    fixture::{Fixture, WAIT},
    muc::{join_portal, occupant_ghost_on},
};

fn sets_level(event: &Value, user: &str, level: i64) -> bool {
    event["type"] == "m.room.power_levels" && event["content"]["users"][user].as_i64() == Some(level)
}

xmpp_server_tests!(muc_owners_admins_and_moderators_get_power_levels);

async fn muc_owners_admins_and_moderators_get_power_levels(servers: Servers) -> anyhow::Result<()> {
    let fixture = Fixture::between(servers).await?;
    let room = "ranks@conference.localhost";
    // The first occupant creates the room and owns it.
    let mut xavier = fixture.xmpp_user("xavier").await?;
    let xavier_ghost = occupant_ghost_on(servers.xmpp, room, &xavier.join_muc(room, "Xavier").await?)?;
    let alice = fixture.matrix_user("alice").await?;
    let room_id = join_portal(&alice, &mut xavier, room, "Xavier").await?;
    let mut yvonne = fixture.xmpp_user("yvonne").await?;
    let yvonne_ghost = occupant_ghost_on(servers.xmpp, room, &yvonne.join_muc(room, "Yvonne").await?)?;
    let (xavier_ghost, yvonne_ghost) = (xavier_ghost.as_str(), yvonne_ghost.as_str());
    alice.wait_for_event(&room_id, WAIT, |event| sets_level(event, xavier_ghost, 100)).await?;

    // The owner makes Yvonne an admin (a moderator too), then takes it back.
    let grant = |affiliation: &str| {
        format!(
            "<query xmlns='http://jabber.org/protocol/muc#admin'><item affiliation='{affiliation}' jid='yvonne@localhost'/></query>"
        )
    };
    let answer = xavier.iq("set", room, &grant("admin")).await?;
    assert_eq!(answer.attr("type"), Some("result"), "{}", to_xml(&answer));
    alice.wait_for_event(&room_id, WAIT, |event| sets_level(event, yvonne_ghost, 50)).await?;
    let answer = xavier.iq("set", room, &grant("none")).await?;
    assert_eq!(answer.attr("type"), Some("result"), "{}", to_xml(&answer));
    alice.wait_for_event(&room_id, WAIT, |event| sets_level(event, yvonne_ghost, 0)).await?;
    Ok(())
}

#[tokio::test]
async fn matrix_power_levels_show_as_affiliations_in_gateway_mucs() -> anyhow::Result<()> {
    let fixture = Fixture::start().await?;
    let alice = fixture.matrix_user("alice").await?;
    let room_id = alice.create_room(json!({"preset": "public_chat", "room_alias_name": "court"})).await?;
    let bob = fixture.matrix_user("bob").await?;
    bob.join(&room_id).await?;
    let room = "#court#localhost@bridge.localhost";
    let mut xavier = fixture.xmpp_user("xavier").await?;
    xavier.join_muc(room, "Xavier").await?;

    // Alice created the room (version 12: creators outrank every level): owner. Bob: a member.
    let alice_occupant = format!("{room}/alice");
    let bob_occupant = format!("{room}/bob");
    let presence = xavier.wait_for_presence(&alice_occupant, WAIT, |kind| kind.is_none()).await?;
    assert_eq!(muc_item(&presence), Some(("owner".into(), "moderator".into())), "{}", to_xml(&presence));
    let presence = xavier.wait_for_presence(&bob_occupant, WAIT, |kind| kind.is_none()).await?;
    assert_eq!(muc_item(&presence), Some(("member".into(), "participant".into())), "{}", to_xml(&presence));

    // Alice makes Bob a moderator (50): Xavier sees Bob become an admin and moderator.
    let mut levels = alice.get_state(&room_id, "m.room.power_levels", "").await?.unwrap_or_default();
    levels["users"][bob.user_id()] = json!(50);
    alice.send_state(&room_id, "m.room.power_levels", "", levels).await?;
    let presence = xavier.wait_for_presence(&bob_occupant, WAIT, |kind| kind.is_none()).await?;
    assert_eq!(muc_item(&presence), Some(("admin".into(), "moderator".into())), "{}", to_xml(&presence));
    Ok(())
}
