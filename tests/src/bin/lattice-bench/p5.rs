//! P5, cold start: portals seeded straight into the bridge's store (SQLite, through bridge-core's Store API), then
//! `lattice-irc` starts: the time until its listener is in every portal's channel, counted by ngircd (`LUSERS`:
//! channels formed). lattice-irc keeps no puppet connections across restarts (a puppet reconnects on its Matrix
//! user's next event), so the puppets are then woken all at once — a membership event each, one per portal — and
//! timed until ngircd (`LIST`) shows each of their channels with its puppet in it, against the configured cap on
//! connections registering at once (`reconnect.max_concurrent`).

use std::{
    path::Path,
    time::{Duration, Instant},
};

use anyhow::bail;
use lattice_bridge_core::store::{Portal, Store};
use serde_json::json;

use crate::{
    appservice::join_event,
    irc::{RawIrc, Tally},
    rig::{IrcOptions, IrcRig, NET},
};

/// Sizes of a P5 run.
pub(crate) struct P5 {
    pub(crate) portals: usize,
    pub(crate) puppets: usize,
}

/// Connections of the network registering at once.
const MAX_CONCURRENT: usize = 5;

/// The room of seeded portal `i`.
fn room(i: usize) -> String {
    format!("!p5room{i}:localhost")
}

/// Writes `count` channel portals (`#p5c{i}`) into the store at `url`, as the bridge would have made them.
pub(crate) async fn seed(url: &str, key_file: &Path, count: usize) -> anyhow::Result<()> {
    let store = Store::open(url, 4, key_file).await?;
    for i in 0..count {
        let channel = format!("#p5c{i}");
        store
            .upsert_portal(&Portal {
                remote_key: format!("{NET}/{channel}"),
                room_id: room(i),
                alias: Some(format!("#irc_{NET}_{channel}:localhost")),
                name: Some(channel.clone()),
                topic: None,
                metadata: json!({"network": NET, "channel": channel}),
            })
            .await?;
    }
    store.close().await;
    Ok(())
}

pub(crate) async fn run(bin_dir: &Path, size: &P5) -> anyhow::Result<()> {
    println!(
        "\n## P5 cold start ({} portals in the store, then {} puppets woken at once; max_concurrent {MAX_CONCURRENT}, ngircd)",
        size.portals, size.puppets
    );
    let options =
        IrcOptions { max_concurrent: MAX_CONCURRENT, extra_registrations: vec![], seed_portals: size.portals };
    let rig = IrcRig::start(bin_dir, options).await?;
    let observer = RawIrc::connect(rig.ircd.port(), "p5obs", &[], Tally::quiet()).await?;
    let wait = Duration::from_secs(120 + size.portals as u64 / 20);
    let deadline = Instant::now() + wait;
    while observer.tally.channels() < size.portals {
        if Instant::now() > deadline {
            bail!("the listener joined {} of {} channels within {wait:?}", observer.tally.channels(), size.portals);
        }
        observer.send_raw(b"LUSERS\r\n").await?;
        // ngircd reports counts only when asked.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let listener_secs = rig.bridge.started().elapsed().as_secs_f64();

    let puppets = size.puppets.min(size.portals);
    let joins = (0..puppets).map(|i| join_event(&room(i), &format!("@p5u{i}:localhost"), &format!("p5u{i}"))).collect();
    let woken = Instant::now();
    rig.pusher.push_all(joins).await?;
    let (mut connected_secs, lists_before) = (None, observer.tally.shared_channels().1);
    loop {
        if Instant::now() > deadline + wait {
            bail!("{} of {puppets} puppets joined within {wait:?}", observer.tally.shared_channels().0);
        }
        observer.send_raw(b"LUSERS\r\nLIST\r\n").await?;
        // ngircd reports counts only when asked; a LIST of thousands of channels takes a moment.
        tokio::time::sleep(Duration::from_millis(250)).await;
        if connected_secs.is_none() && observer.tally.users() >= puppets + 2 {
            connected_secs = Some(woken.elapsed().as_secs_f64());
        }
        let (shared, lists) = observer.tally.shared_channels();
        if lists > lists_before && shared >= puppets {
            break;
        }
    }
    let joined_secs = woken.elapsed().as_secs_f64();
    let connected_secs = connected_secs.unwrap_or(joined_secs);
    println!("| step | time | rate |");
    println!("|---|---|---|");
    println!(
        "| start → listener in all {} channels | {listener_secs:.1} s | {:.0} joins/s |",
        size.portals,
        size.portals as f64 / listener_secs
    );
    println!(
        "| {puppets} puppets woken → all connected | {connected_secs:.1} s | {:.0} connections/s (cap: {MAX_CONCURRENT} registering at once) |",
        puppets as f64 / connected_secs
    );
    println!("| {puppets} puppets woken → all in their channels | {joined_secs:.1} s | |");
    Ok(())
}
