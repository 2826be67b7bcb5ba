//! Direct messages: an IRC user's PRIVMSG to a puppet becomes a Matrix DM from their ghost, and the Matrix user's
//! answer goes back as a PRIVMSG from the puppet.

use lattice_e2e::HomeserverKind;

use crate::fixture::{Fixture, WAIT, ghost};

/// On Synapse only for now: on Conduit the invitee missed the DM's first message (sent by the ghost right after it
/// created the room and invited them) in 1 to 3 of 6 runs, with or without the day's other changes; until that is
/// traced, the README's Homeservers table says so.
#[tokio::test]
async fn direct_messages_both_ways_on_synapse() -> anyhow::Result<()> {
    direct_messages_both_ways(HomeserverKind::Synapse).await
}

async fn direct_messages_both_ways(homeserver: HomeserverKind) -> anyhow::Result<()> {
    let fixture = Fixture::on_homeserver(homeserver).await?;
    let (bob, alice, _room) = fixture.talking("bob", "alice", "#meet", "hi all").await?;

    bob.send("PRIVMSG alice :psst, \x02secret\x02").await?;
    let dm = alice.wait_for_invite(WAIT).await?;
    alice.join(&dm).await?;
    let seen = alice.wait_for_message(&dm, WAIT, "psst, secret").await?;
    assert_eq!(seen["sender"], ghost("bob"));
    assert_eq!(seen["content"]["formatted_body"], "psst, <strong>secret</strong>");

    alice.send_text(&dm, "tell me more").await?;
    bob.wait_for(WAIT, |line| line.starts_with(":alice!") && line.ends_with("PRIVMSG bob :tell me more")).await?;
    Ok(())
}
