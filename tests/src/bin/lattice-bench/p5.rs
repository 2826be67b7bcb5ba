//! P5, cold start: portals seeded straight into the bridge's store (SQLite, through bridge-core's Store API), then
//! `lattice-irc` starts: the time until its listener is in every portal's channel, counted by ngircd (`LUSERS`:
//! channels formed). lattice-irc keeps no puppet connections across restarts (a puppet reconnects on its Matrix
//! user's next event), so the puppets are then woken all at once — a membership event each, one per portal — and
//! timed until all are registered (`LUSERS`, every 100 ms) and `WHOIS` has shown each one in its channel.
//! Beside the configured cap on connections registering at once (`reconnect.max_concurrent`) go the most
//! registrations seen within a second and the most connections ngircd counted as registering at once (`LUSERS` 253).

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
    rig::{IrcEdge, IrcOptions, IrcRig, NET},
};

/// Sizes of a P5 run.
pub(crate) struct P5 {
    pub(crate) portals: usize,
    pub(crate) puppets: usize,
}

/// Connections of the network registering at once.
const MAX_CONCURRENT: usize = 5;
/// How often the server's counts are asked for (`LUSERS`).
const SAMPLE: Duration = Duration::from_millis(100);
/// WHOIS questions per sample: each costs ngircd a walk over every channel membership on the server.
const WHOIS_PER_SAMPLE: usize = 200;
/// The nicks (and Matrix localparts) of the woken puppets.
const PUPPET_PREFIX: &str = "p5u";

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

pub(crate) async fn run(bin_dir: &Path, size: &P5, edge: IrcEdge) -> anyhow::Result<()> {
    println!(
        "\n## P5 cold start ({} portals in the store, then {} puppets woken at once; max_concurrent {MAX_CONCURRENT}, ngircd)",
        size.portals, size.puppets
    );
    let options = IrcOptions {
        max_concurrent: MAX_CONCURRENT,
        extra_registrations: vec![],
        seed_portals: size.portals,
        tap_marker: None,
        privacy: "kick",
        edge,
    };
    let rig = IrcRig::start(bin_dir, options).await?;
    let observer = RawIrc::connect(rig.ircd.port(), "p5obs", &[], Tally::new("\u{0}", PUPPET_PREFIX, false)).await?;
    let wait = Duration::from_secs(120 + size.portals as u64 / 20);
    let deadline = Instant::now() + wait;
    while observer.tally.channels() < size.portals {
        if Instant::now() > deadline {
            bail!("the listener joined {} of {} channels within {wait:?}", observer.tally.channels(), size.portals);
        }
        observer.send_raw(b"LUSERS\r\n").await?;
        // ngircd reports counts only when asked.
        tokio::time::sleep(SAMPLE).await;
    }
    let listener_secs = rig.bridge.started().elapsed().as_secs_f64();

    let puppets = size.puppets.min(size.portals);
    let joins = (0..puppets)
        .map(|i| join_event(&room(i), &format!("@{PUPPET_PREFIX}{i}:localhost"), &format!("{PUPPET_PREFIX}{i}")))
        .collect();
    let woken = Instant::now();
    rig.pusher.push_all(joins).await?;
    // (seconds since woken, puppets registered), from LUSERS (the listener and the observer are the other two users).
    let mut samples = vec![(0.0, 0)];
    let mut connected_secs = None;
    // The puppets not yet seen in their channel, asked after with WHOIS a few at a time. (Polling LIST instead
    // starved ngircd: it counts a channel's members by walking every membership on the server, so a LIST of 10,000
    // channels took it over half a second, LISTs queued up, and registrations waited behind them until they timed
    // out. An observer in every channel would be seen by the bridge, which would bridge its 10,000 joins meanwhile.)
    let mut unseen: Vec<String> = (0..puppets).map(|i| format!("{PUPPET_PREFIX}{i}")).collect();
    while !unseen.is_empty() {
        if Instant::now() > deadline + wait {
            bail!("{} of {puppets} puppets joined their channels within {wait:?}", puppets - unseen.len());
        }
        let asked = WHOIS_PER_SAMPLE.min(unseen.len());
        let mut asks = String::from("LUSERS\r\n");
        for nick in &unseen[..asked] {
            asks.push_str(&format!("WHOIS {nick}\r\n"));
        }
        observer.send_raw(asks.as_bytes()).await?;
        tokio::time::sleep(SAMPLE).await;
        // Those just asked after go to the back; all that are in their channel by now leave the list.
        unseen.rotate_left(asked);
        unseen.retain(|nick| !observer.tally.in_a_channel(nick));
        let registered = observer.tally.users().saturating_sub(2);
        samples.push((woken.elapsed().as_secs_f64(), registered));
        if connected_secs.is_none() && registered >= puppets {
            connected_secs = Some(woken.elapsed().as_secs_f64());
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
        "| {puppets} puppets woken → all connected | {connected_secs:.1} s | {:.0} connections/s on average, at most \
         {} in any 1 s; at most {} registering at once as ngircd counted them (cap: {MAX_CONCURRENT} at once) |",
        puppets as f64 / connected_secs,
        peak_per_second(&samples),
        observer.tally.peak_unregistered(),
    );
    println!("| {puppets} puppets woken → all in their channels | {joined_secs:.1} s | |");
    Ok(())
}

/// The most registrations within any second, from (seconds, registered) samples: each sample against the latest one
/// at least a second older, so a window is never shorter than a second.
fn peak_per_second(samples: &[(f64, usize)]) -> usize {
    let start = samples.first().map_or(0, |&(_, registered)| registered);
    samples
        .iter()
        .map(|&(at, registered)| {
            // Within the first second, the window reaches back to the start.
            let before = samples.iter().rev().find(|(then, _)| *then <= at - 1.0);
            registered.saturating_sub(before.map_or(start, |&(_, earlier)| earlier))
        })
        .max()
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_peak_is_over_windows_of_at_least_a_second() {
        assert_eq!(peak_per_second(&[(0.0, 0)]), 0);
        // 10 by 0.5 s and 30 by 1.0 s: the window ending at 1.0 s holds 30; at 1.5 s, 50 − 10 = 40.
        assert_eq!(peak_per_second(&[(0.0, 0), (0.5, 10), (1.0, 30), (1.5, 50), (2.5, 55)]), 40);
        // A run shorter than a second: everything since the start falls in one window.
        assert_eq!(peak_per_second(&[(0.0, 0), (0.2, 100), (0.9, 200)]), 200);
    }
}
