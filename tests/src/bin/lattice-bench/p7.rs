//! P7, the IRC edge (the process that holds `lattice-irc`'s IRC connections): N Matrix users join a portal, so the
//! edge holds N puppet connections in one channel on ngircd, then
//! - the edge's memory per puppet connection (the growth of its settled `VmRSS` over N);
//! - an **edge upgrade** (`lattice-irc edge --take-over`, as an operator runs it) while an IRC client says a line
//!   every 100 ms: reconnects (puppet JOINs the channel sees after it; target 0) and the pause it makes in the
//!   traffic — each line's time from ngircd to the homeserver through the edge and the bridge (taps on both sides),
//!   its p50/p99/max during the upgrade beside the same figures in the seconds before it;
//! - a **cold start after `kill -9` of the edge**: the bridge starts a new edge and brings every connection back
//!   under `reconnect.max_concurrent`; the time until every puppet is in the channel again (target ≤ 60 s for 5,000;
//!   matrix-appservice-irc needed about 83 minutes for 500 on Libera.Chat at its default flood settings).

use std::{
    path::Path,
    time::{Duration, Instant},
};

use anyhow::Context as _;

use crate::{
    appservice::join_event,
    bridge::settled_rss_kib,
    irc::{RawIrc, Tally},
    rig::{IrcEdge, IrcOptions, IrcRig},
    stats::p50_p99,
};

/// Sizes of a P7 run.
pub(crate) struct P7 {
    pub(crate) puppets: usize,
}

/// Connections of the network registering at once.
const MAX_CONCURRENT: usize = 50;
/// How often the metronome speaks: slow enough that no backlog builds up behind the homeserver (each line is one
/// Matrix event, sent in order), so a line's time is the bridge's and the edge's, not a queue's.
const BEAT: Duration = Duration::from_millis(100);
/// Lines said before the upgrade, for the baseline.
const BEFORE: usize = 50;
/// Lines said after the upgrade finished, so its tail is seen.
const AFTER: usize = 50;

pub(crate) async fn run(bin_dir: &Path, size: &P7) -> anyhow::Result<()> {
    let puppets = size.puppets;
    println!("\n## P7 the IRC edge ({puppets} puppets in one channel, max_concurrent {MAX_CONCURRENT}, ngircd)");
    let options = IrcOptions {
        max_concurrent: MAX_CONCURRENT,
        extra_registrations: vec![],
        seed_portals: 0,
        tap_marker: Some("beat"),
        privacy: "off",
        // What P7 measures.
        edge: IrcEdge::On,
    };
    let rig = IrcRig::start(bin_dir, options).await?;
    let port = rig.ircd.port();
    let observer = RawIrc::connect(port, "p7obs", &["#p7"], Tally::new("\u{0}", "p7u", false)).await?;
    let admin = rig.synapse.register_user("admin", false).await?;
    let room = rig.portal(&admin, "#p7").await?;
    let edge = rig.bridge.edge_pid().context("the bridge started no edge")?;
    let edge_before = settled_rss_kib(edge).await?;
    let joins = (0..puppets).map(|i| join_event(&room, &format!("@p7u{i}:localhost"), &format!("p7u{i}"))).collect();
    let started = Instant::now();
    rig.pusher.push_all(joins).await?;
    observer
        .tally
        .wait(Duration::from_secs(60 + puppets as u64 / 5), "puppets joining #p7", |t| t.joins() >= puppets)
        .await?;
    println!("{puppets} puppets connected and joined in {:.1} s", started.elapsed().as_secs_f64());
    let edge_after = settled_rss_kib(edge).await?;
    println!(
        "edge memory: {edge_before} KiB with the bot's connection, {edge_after} KiB with {puppets} puppets too: {:.1} KiB \
         per puppet connection",
        (edge_after as f64 - edge_before as f64) / puppets as f64
    );

    upgrade(bin_dir, &rig, &observer, puppets).await?;
    cold_start(&rig, &observer, puppets).await
}

/// The upgrade under a steady beat: pauses and reconnects.
async fn upgrade(bin_dir: &Path, rig: &IrcRig, observer: &RawIrc, puppets: usize) -> anyhow::Result<()> {
    let taps = rig.taps.as_ref().context("P7 runs with taps")?;
    let metronome = RawIrc::connect(rig.ircd.port(), "metronome", &["#p7"], Tally::quiet()).await?;
    let joins_before = observer.tally.joins();
    let mut said = Vec::new();
    let mut beat = tokio::time::interval(BEAT);
    let mut upgrading: Option<tokio::task::JoinHandle<anyhow::Result<Duration>>> = None;
    let mut upgrade_window = (0, 0);
    let mut number = 0;
    loop {
        beat.tick().await;
        let text = format!("beat {number}");
        metronome.send_raw(format!("PRIVMSG #p7 :{text}\r\n").as_bytes()).await?;
        said.push(text);
        number += 1;
        if number == BEFORE {
            let bridge = rig.bridge.upgrade_edge_command(bin_dir);
            upgrade_window.0 = number;
            upgrading = Some(tokio::spawn(async move { crate::bridge::run_edge_upgrade(bridge).await }));
        }
        if let Some(task) = &upgrading
            && task.is_finished()
            && upgrade_window.1 == 0
        {
            upgrade_window.1 = number;
        }
        if upgrade_window.1 > 0 && number >= upgrade_window.1 + AFTER {
            break;
        }
        anyhow::ensure!(number < 10_000, "the upgrade did not finish");
    }
    let took = upgrading.context("no upgrade")?.await??;
    let mut latencies = Vec::with_capacity(said.len());
    for text in &said {
        let read = taps.irc.return_arrival(text, Duration::from_secs(60)).await?;
        let sent = taps.out_of_bridge.arrival(text, Duration::from_secs(60)).await?;
        latencies.push(sent.saturating_duration_since(read).as_secs_f64() * 1000.0);
    }
    let before = &latencies[..upgrade_window.0];
    let during = &latencies[upgrade_window.0..];
    let max = |samples: &[f64]| samples.iter().copied().fold(0.0, f64::max);
    let ((b50, b99), (d50, d99)) = (p50_p99(before), p50_p99(during));
    let reconnects = observer.tally.joins() - joins_before;
    println!(
        "edge upgrade: took {:.2} s (the new edge listening), {reconnects} reconnects of {puppets} puppets",
        took.as_secs_f64()
    );
    println!("| a line from IRC to the homeserver (ms) | p50 | p99 | max |");
    println!("|---|---|---|---|");
    println!("| {} lines before the upgrade | {b50:.2} | {b99:.2} | {:.2} |", before.len(), max(before));
    println!(
        "| {} lines from its start to {AFTER} lines after it | {d50:.2} | {d99:.2} | {:.2} |",
        during.len(),
        max(during)
    );
    Ok(())
}

/// `kill -9` of the edge, and the time until every puppet is back in the channel.
async fn cold_start(rig: &IrcRig, observer: &RawIrc, puppets: usize) -> anyhow::Result<()> {
    let edge = rig.bridge.edge_pid().context("no edge")?;
    let joins_before = observer.tally.joins();
    let killed = Instant::now();
    std::process::Command::new("kill").args(["-KILL", &edge.to_string()]).status()?;
    let wait = Duration::from_secs(120 + puppets as u64 / 10);
    observer
        .tally
        .wait(wait, "puppets back after the edge was killed", |t| t.joins() >= joins_before + puppets)
        .await?;
    let back = killed.elapsed().as_secs_f64();
    println!(
        "edge killed: all {puppets} puppets back in the channel after {back:.1} s ({:.0} per second, at most \
         {MAX_CONCURRENT} registering at once); target ≤ 60 s for 5,000",
        puppets as f64 / back
    );
    Ok(())
}
