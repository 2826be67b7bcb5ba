//! Direct messages: an IRC user's PRIVMSG to a puppet becomes a Matrix DM from their ghost, and the Matrix user's
//! answer goes back as a PRIVMSG from the puppet.

use lattice_e2e::ircd::IrcTestClient;

use crate::fixture::{Fixture, WAIT, alias, ghost};

#[tokio::test]
async fn direct_messages_both_ways() -> anyhow::Result<()> {
    let fixture = Fixture::start().await?;
    let bob = IrcTestClient::connect(fixture.ircd.port(), "bob").await?;
    bob.join("#meet").await?;
    let alice = fixture.user("alice").await?;
    let room = alice.join(&alias("#meet")).await?;
    alice.send_text(&room, "hi all").await?;
    bob.wait_for(WAIT, |line| line.starts_with(":alice!") && line.ends_with("PRIVMSG #meet :hi all")).await?;

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
