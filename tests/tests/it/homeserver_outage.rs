//! The homeserver stopped for minutes in the middle of a conversation both ways, with the shipped `lattice-irc run`
//! on the IRC sample config's flood control: Matrix messages already taken keep draining to IRC, IRC lines said
//! meanwhile wait in the bridge's durable queue, and when Synapse is back everything arrives once and in order. The
//! test prints how long after Synapse's return each direction resumed.
//!
//! `LATTICE_OUTAGE_SECS` sets the outage (default 300 s, five minutes).

use std::time::Duration;

use anyhow::ensure;
use lattice_e2e::ircd::IrcTestClient;
use serde_json::json;
use tokio::time::Instant;

use crate::irc_crash::{OnePortal, room_bodies};

const CHANNEL: &str = "#outage";
/// Matrix messages sent before the outage: more than flood control lets through before Synapse stops.
const BEFORE: usize = 40;
/// IRC lines said during the outage.
const DURING: usize = 30;
/// Matrix messages sent once Synapse is back.
const AFTER: usize = 10;

/// The numbers of `prefix N` lines an IRC client saw in the channel, in arrival order.
fn irc_numbers(client: &IrcTestClient, prefix: &str) -> Vec<usize> {
    let marker = format!(" PRIVMSG {CHANNEL} :{prefix} ");
    client.pending().iter().filter_map(|line| line.split_once(&marker)?.1.parse().ok()).collect()
}

fn in_order_once(numbers: &[usize], expected: usize) -> bool {
    numbers.iter().copied().eq(0..expected)
}

#[tokio::test]
async fn a_homeserver_outage_of_minutes_loses_nothing_either_way() -> anyhow::Result<()> {
    let outage = Duration::from_secs(
        std::env::var("LATTICE_OUTAGE_SECS").ok().and_then(|secs| secs.parse().ok()).unwrap_or(300),
    );
    let OnePortal { _ircd, mut synapse, bridge, talker, alice, room_id } = OnePortal::start(CHANNEL).await?;

    // Matrix → IRC: a burst that flood control holds back, so most of it is still in the bridge at the outage.
    for number in 0..BEFORE {
        alice.send_text(&room_id, &format!("matrix {number}")).await?;
    }
    // The homeserver sends an appservice its events in order: once the bridge bot has joined a room it was invited
    // to after the burst, the bridge has taken the whole burst.
    let bot = "@ircbot:localhost";
    let dm = alice.create_room(json!({"invite": [bot], "is_direct": true, "preset": "trusted_private_chat"})).await?;
    alice
        .wait_for_event(&dm, Duration::from_secs(60), |event| {
            event["type"] == "m.room.member" && event["state_key"] == bot && event["content"]["membership"] == "join"
        })
        .await?;
    let deadline = Instant::now() + Duration::from_secs(60);
    while irc_numbers(&talker, "matrix").len() < 5 {
        ensure!(
            Instant::now() < deadline,
            "the first Matrix messages never reached IRC: {}",
            bridge.process.log_tail(30)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    synapse.stop();
    let stopped = Instant::now();
    println!("Synapse stopped; {} of {BEFORE} Matrix messages on IRC", irc_numbers(&talker, "matrix").len());

    // IRC → Matrix while the homeserver is away, spread over the outage.
    for number in 0..DURING {
        talker.send(&format!("PRIVMSG {CHANNEL} :irc {number}")).await?;
        tokio::time::sleep(outage / u32::try_from(DURING + 1)?).await;
    }
    tokio::time::sleep(outage.saturating_sub(stopped.elapsed())).await;
    let drained = irc_numbers(&talker, "matrix");
    println!("after {:.0?} away: {} of {BEFORE} Matrix messages on IRC", stopped.elapsed(), drained.len());
    ensure!(
        in_order_once(&drained, BEFORE),
        "taken Matrix messages drain while the homeserver is away: {drained:?}; bridge log: {}",
        bridge.process.log_tail(60)
    );

    synapse.start_again().await?;
    let back = Instant::now();
    for number in 0..AFTER {
        alice.send_text(&room_id, &format!("after {number}")).await?;
    }
    // Both directions resume: the bridge's queue of IRC lines retries with backoff (capped at a minute).
    let deadline = back + Duration::from_secs(180);
    let (mut matrix_resumed, mut irc_resumed) = (None, None);
    while matrix_resumed.is_none() || irc_resumed.is_none() {
        ensure!(Instant::now() < deadline, "delivery did not resume within 180 s: {}", bridge.process.log_tail(40));
        if irc_resumed.is_none() && irc_numbers(&talker, "after").len() == AFTER {
            irc_resumed = Some(back.elapsed());
        }
        if matrix_resumed.is_none() && room_bodies(&alice, &room_id, "irc ").await?.len() >= DURING {
            matrix_resumed = Some(back.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    println!(
        "Synapse back: all {DURING} IRC lines in Matrix after {:.1?}; Matrix → IRC resumed after {:.1?}",
        matrix_resumed.unwrap_or_default(),
        irc_resumed.unwrap_or_default()
    );
    let in_matrix: Vec<usize> = room_bodies(&alice, &room_id, "irc ")
        .await?
        .iter()
        .filter_map(|body| body.strip_prefix("irc ")?.parse().ok())
        .collect();
    ensure!(in_order_once(&in_matrix, DURING), "IRC lines in Matrix: {in_matrix:?}");
    let after = irc_numbers(&talker, "after");
    ensure!(in_order_once(&after, AFTER), "Matrix messages after the outage on IRC: {after:?}");
    ensure!(in_order_once(&irc_numbers(&talker, "matrix"), BEFORE), "no Matrix message arrived twice");
    Ok(())
}
