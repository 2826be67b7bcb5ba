//! P1, memory per idle puppet: N Matrix users join a portal (membership events pushed to the bridge as Synapse
//! sends them), so the bridge opens N puppet connections to ngircd and joins each to the channel; the growth of the
//! bridge's settled `VmRSS` divided by N. For context, in the same run: what N bare idle IRC connections (a tokio task
//! and a 512-byte read buffer each, the least an idle client can be) cost a process of their own.

use std::{
    path::Path,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use tokio::{
    io::{AsyncBufReadExt, AsyncWriteExt, BufReader},
    net::TcpStream,
};

use crate::{
    appservice::join_event,
    bridge::settled_rss_kib,
    irc::{RawIrc, Tally},
    rig::{IrcEdge, IrcOptions, IrcRig},
};

pub(crate) async fn run(bin_dir: &Path, puppets: usize, edge: IrcEdge) -> anyhow::Result<()> {
    println!("\n## P1 memory per idle puppet ({puppets} puppets in one channel, ngircd)");
    let rig = IrcRig::start(
        bin_dir,
        IrcOptions {
            max_concurrent: 50,
            extra_registrations: vec![],
            seed_portals: 0,
            tap_marker: None,
            // With thousands of puppets joining one channel at once, ngircd (one core, a walk over the channel per
            // join) takes minutes and lets some connections time out; under Libera.Chat's rule a user whose
            // connection has not registered within the grace period is removed, which is not what P1 measures.
            privacy: "off",
            edge,
        },
    )
    .await?;
    let port = rig.ircd.port();
    let observer = RawIrc::connect(port, "p1obs", &["#p1"], Tally::new("\u{0}", "p1u", false)).await?;
    let admin = rig.synapse.register_user("admin", false).await?;
    let room = rig.portal(&admin, "#p1").await?;
    let before = rig.bridge.settled_rss_kib().await?;

    let joins = (0..puppets).map(|i| join_event(&room, &format!("@p1u{i}:localhost"), &format!("p1u{i}"))).collect();
    let started = Instant::now();
    rig.pusher.push_all(joins).await?;
    let wait = Duration::from_secs(60 + puppets as u64 / 5);
    observer.tally.wait(wait, "puppets joining #p1", |t| t.joins() >= puppets).await?;
    let joined = started.elapsed();
    let after = rig.bridge.settled_rss_kib().await?;
    let per_puppet = (after as f64 - before as f64) / puppets as f64;

    println!("{puppets} puppets connected and joined in {:.1} s", joined.as_secs_f64());
    println!("| process | RSS before | RSS after | per connection |");
    println!("|---|---|---|---|");
    println!("| lattice-irc, {puppets} idle puppets | {before} KiB | {after} KiB | {per_puppet:.1} KiB |");
    let (raw_before, raw_after) = raw_idle_in_child(port, puppets).await?;
    let per_raw = (raw_after as f64 - raw_before as f64) / puppets as f64;
    println!("| bare idle tokio IRC clients (the floor) | {raw_before} KiB | {raw_after} KiB | {per_raw:.1} KiB |");
    println!("(measured elsewhere on this machine: matrix-appservice-irc 110–150 KiB, Heisenbridge 558 KiB)");
    Ok(())
}

/// Runs `lattice-bench raw-idle PORT COUNT` and returns its RSS before and after.
async fn raw_idle_in_child(port: u16, count: usize) -> anyhow::Result<(u64, u64)> {
    let exe = std::env::current_exe().context("finding lattice-bench itself")?;
    let output = tokio::process::Command::new(exe)
        .args(["raw-idle", &port.to_string(), &count.to_string()])
        .output()
        .await
        .context("running raw-idle")?;
    let text = String::from_utf8_lossy(&output.stdout);
    let figures: Vec<u64> = text.split_whitespace().filter_map(|word| word.parse().ok()).collect();
    match (output.status.success(), figures.as_slice()) {
        (true, [before, after]) => Ok((*before, *after)),
        _ => bail!("raw-idle failed ({}): {text} {}", output.status, String::from_utf8_lossy(&output.stderr)),
    }
}

/// The child's side: `count` bare connections registered and joined to `#p1raw`, then prints `BEFORE AFTER` (KiB).
pub(crate) async fn raw_idle(port: u16, count: usize) -> anyhow::Result<()> {
    let pid = std::process::id();
    let before = settled_rss_kib(pid).await?;
    let joined = Arc::new(AtomicUsize::new(0));
    for i in 0..count {
        let stream = TcpStream::connect(("127.0.0.1", port)).await?;
        let (reader, mut writer) = stream.into_split();
        writer.write_all(format!("NICK p1raw{i}\r\nUSER p1raw{i} 0 * :raw\r\nJOIN #p1raw\r\n").as_bytes()).await?;
        let joined = Arc::clone(&joined);
        tokio::spawn(async move {
            let mut reader = BufReader::with_capacity(512, reader);
            let mut line = String::new();
            loop {
                line.clear();
                match reader.read_line(&mut line).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
                if let Some(token) = line.strip_prefix("PING ") {
                    let _ = writer.write_all(format!("PONG {token}").as_bytes()).await;
                } else if line.split(' ').nth(1) == Some("366") {
                    joined.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
    }
    let deadline = Instant::now() + Duration::from_secs(60 + count as u64 / 5);
    while joined.load(Ordering::Relaxed) < count {
        if Instant::now() > deadline {
            bail!("only {} of {count} bare clients joined", joined.load(Ordering::Relaxed));
        }
        // A counter shared by many tasks: polling it is simpler than a notification per join.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let after = settled_rss_kib(pid).await?;
    println!("{before} {after}");
    Ok(())
}
