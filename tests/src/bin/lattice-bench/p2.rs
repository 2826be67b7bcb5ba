//! P2, Matrix → IRC throughput: messages pushed to the bridge in 100-event transactions (as Synapse sends them),
//! spread round-robin over many puppets in one portal, counted by a raw IRC client in the channel. The limit, in
//! the same run: as many raw clients writing the same number of lines straight to the same ngircd.

use std::{
    path::Path,
    time::{Duration, Instant},
};

use crate::{
    appservice::{join_event, message_event},
    irc::{RawIrc, Tally, connect_many},
    rig::{IrcOptions, IrcRig},
};

/// Sizes of a P2 run.
pub(crate) struct P2 {
    /// Puppets (and raw clients) sending.
    pub(crate) senders: usize,
    /// Messages in all.
    pub(crate) messages: usize,
}

pub(crate) async fn run(bin_dir: &Path, size: &P2) -> anyhow::Result<()> {
    println!("\n## P2 Matrix → IRC throughput ({} messages over {} senders, ngircd)", size.messages, size.senders);
    let rig = IrcRig::start(
        bin_dir,
        IrcOptions { max_concurrent: 50, extra_registrations: vec![], seed_portals: 0, tap_marker: None },
    )
    .await?;
    let port = rig.ircd.port();
    let wait = Duration::from_secs(600);

    // The limit: raw clients write the same lines, each its share in 100-line writes.
    let observer = RawIrc::connect(port, "p2obsraw", &["#p2raw"], Tally::new("p2 ", "", false)).await?;
    let clients = connect_many(port, "p2raw", size.senders, &["#p2raw"]).await?;
    let started = Instant::now();
    let writers: Vec<_> = clients
        .into_iter()
        .enumerate()
        .map(|(index, client)| {
            let lines: Vec<String> = (index..size.messages)
                .step_by(size.senders)
                .map(|seq| format!("PRIVMSG #p2raw :p2 message {seq}\r\n"))
                .collect();
            tokio::spawn(async move {
                for chunk in lines.chunks(100) {
                    client.send_raw(chunk.concat().as_bytes()).await?;
                }
                anyhow::Ok(client)
            })
        })
        .collect();
    let mut clients = Vec::new();
    for writer in writers {
        clients.push(writer.await??);
    }
    observer.tally.wait(wait, "raw lines reaching the observer", |t| t.messages() >= size.messages).await?;
    let raw_secs = (observer.tally.last_message().unwrap_or_else(Instant::now) - started).as_secs_f64();
    drop(clients);

    // Through the bridge: the puppets connect and join first (a membership event each), outside the timing.
    let admin = rig.synapse.register_user("admin", false).await?;
    let observer = RawIrc::connect(port, "p2obs", &["#p2"], Tally::new("p2 ", "p2s", false)).await?;
    let room = rig.portal(&admin, "#p2").await?;
    let senders: Vec<String> = (0..size.senders).map(|i| format!("@p2s{i}:localhost")).collect();
    let joins = senders.iter().enumerate().map(|(i, user)| join_event(&room, user, &format!("p2s{i}"))).collect();
    rig.pusher.push_all(joins).await?;
    observer.tally.wait(wait, "puppets joining #p2", |t| t.joins() >= size.senders).await?;

    let events: Vec<_> = (0..size.messages)
        .map(|seq| message_event(&room, &senders[seq % size.senders], &format!("p2 message {seq}")))
        .collect();
    let cpu_before = rig.bridge.cpu_secs()?;
    let started = Instant::now();
    rig.pusher.push_all(events).await?;
    let acknowledged = started.elapsed().as_secs_f64();
    observer.tally.wait(wait, "bridged lines reaching the observer", |t| t.messages() >= size.messages).await?;
    let bridge_secs = (observer.tally.last_message().unwrap_or_else(Instant::now) - started).as_secs_f64();
    let cpu = rig.bridge.cpu_secs()? - cpu_before;

    let (raw_rate, bridge_rate) = (size.messages as f64 / raw_secs, size.messages as f64 / bridge_secs);
    println!("flood control: off in the bridge (bucket of 1e6 lines, 1e6/s) and in ngircd (MaxPenaltyTime = 0)");
    println!("| path | lines/s | × limit |");
    println!("|---|---|---|");
    println!("| raw clients → ngircd (the limit) | {raw_rate:.0} | 1.00 |");
    println!("| transactions → lattice-irc → ngircd | {bridge_rate:.0} | {:.2} |", bridge_rate / raw_rate);
    println!(
        "all {} transactions acknowledged after {acknowledged:.2} s; bridge CPU {:.0} µs per message",
        size.messages.div_ceil(100),
        cpu * 1e6 / size.messages as f64
    );
    Ok(())
}
