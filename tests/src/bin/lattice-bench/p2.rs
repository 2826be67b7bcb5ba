//! P2, Matrix → IRC throughput: messages pushed to the bridge in 100-event transactions (as Synapse sends them),
//! spread round-robin over many puppets in one portal, counted by a raw IRC client in the channel. The limit, in
//! the same run: as many raw clients writing the same number of lines straight to the same ngircd. Beside both, what
//! the homeserver's side of the protocol alone allows: the same transactions pushed the same way to a relay that
//! keeps nothing (it parses each transaction, writes each event's body as a line on its sender's raw connection and
//! answers), the ceiling of any appservice on this machine.

use std::{
    collections::HashMap,
    fmt::Write as _,
    path::Path,
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use axum::{Json, Router, extract::State, http::StatusCode, routing::put};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::net::TcpListener;

use crate::{
    appservice::{Pusher, join_event, message_event},
    irc::{RawIrc, Tally, connect_many},
    rig::{IrcEdge, IrcOptions, IrcRig},
};

/// How long any step of a run may take before it fails.
const WAIT: Duration = Duration::from_secs(600);

/// Sizes of a P2 run.
pub(crate) struct P2 {
    /// Puppets (and raw clients) sending.
    pub(crate) senders: usize,
    /// Messages in all.
    pub(crate) messages: usize,
}

pub(crate) async fn run(bin_dir: &Path, size: &P2, edge: IrcEdge) -> anyhow::Result<()> {
    println!("\n## P2 Matrix → IRC throughput ({} messages over {} senders, ngircd)", size.messages, size.senders);
    let rig = IrcRig::start(
        bin_dir,
        IrcOptions {
            max_concurrent: 50,
            extra_registrations: vec![],
            seed_portals: 0,
            tap_marker: None,
            privacy: "kick",
            edge,
        },
    )
    .await?;
    let port = rig.ircd.port();

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
    let raw_secs = seconds_until_all(&observer, started, size.messages, "raw lines").await?;
    drop(clients);

    // The protocol's ceiling: the same transactions through a relay that keeps nothing.
    let observer = RawIrc::connect(port, "p2obsrelay", &["#p2relay"], Tally::new("p2 ", "", false)).await?;
    let relay = Relay::start(connect_many(port, "p2relay", size.senders, &["#p2relay"]).await?, "#p2relay").await?;
    let events: Vec<_> = (0..size.messages)
        .map(|seq| message_event("!relay:localhost", &Relay::sender(seq % size.senders), &format!("p2 message {seq}")))
        .collect();
    let started = Instant::now();
    relay.pusher.push_all(events).await?;
    let relay_secs = seconds_until_all(&observer, started, size.messages, "relayed lines").await?;
    drop(relay);

    // Through the bridge: the puppets connect and join first (a membership event each), outside the timing.
    let admin = rig.synapse.register_user("admin", false).await?;
    let observer = RawIrc::connect(port, "p2obs", &["#p2"], Tally::new("p2 ", "p2s", false)).await?;
    let room = rig.portal(&admin, "#p2").await?;
    let senders: Vec<String> = (0..size.senders).map(|i| format!("@p2s{i}:localhost")).collect();
    let joins = senders.iter().enumerate().map(|(i, user)| join_event(&room, user, &format!("p2s{i}"))).collect();
    rig.pusher.push_all(joins).await?;
    observer.tally.wait(WAIT, "puppets joining #p2", |t| t.joins() >= size.senders).await?;

    let events: Vec<_> = (0..size.messages)
        .map(|seq| message_event(&room, &senders[seq % size.senders], &format!("p2 message {seq}")))
        .collect();
    let cpu_before = rig.bridge.cpu_secs()?;
    let started = Instant::now();
    rig.pusher.push_all(events).await?;
    let acknowledged = started.elapsed().as_secs_f64();
    let bridge_secs = seconds_until_all(&observer, started, size.messages, "bridged lines").await?;
    let cpu = rig.bridge.cpu_secs()? - cpu_before;

    let rate = |secs: f64| size.messages as f64 / secs;
    let (raw_rate, relay_rate, bridge_rate) = (rate(raw_secs), rate(relay_secs), rate(bridge_secs));
    println!("flood control: off in the bridge (bucket of 1e6 lines, 1e6/s) and in ngircd (MaxPenaltyTime = 0)");
    println!("| path | lines/s | × limit |");
    println!("|---|---|---|");
    println!("| raw clients → ngircd (the limit) | {raw_rate:.0} | 1.00 |");
    println!("| transactions → a relay keeping nothing → ngircd | {relay_rate:.0} | {:.2} |", relay_rate / raw_rate);
    println!(
        "| transactions → lattice-irc → ngircd | {bridge_rate:.0} | {:.2} ({:.2} × the relay) |",
        bridge_rate / raw_rate,
        bridge_rate / relay_rate
    );
    println!(
        "all {} transactions acknowledged after {acknowledged:.2} s; bridge CPU {:.0} µs per message",
        size.messages.div_ceil(100),
        cpu * 1e6 / size.messages as f64
    );
    Ok(())
}

/// How long after `started` the last of `messages` lines reached `observer` (`what` names them in a timeout).
async fn seconds_until_all(observer: &RawIrc, started: Instant, messages: usize, what: &str) -> anyhow::Result<f64> {
    let what = format!("{what} reaching the observer");
    observer.tally.wait(WAIT, &what, |t| t.messages() >= messages).await?;
    Ok((observer.tally.last_message().unwrap_or_else(Instant::now) - started).as_secs_f64())
}

/// An appservice that keeps nothing: each event of a transaction becomes a line on its sender's raw IRC connection,
/// each connection's lines in one write, and the transaction is answered once they are written.
struct Relay {
    pusher: Pusher,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// What the relay reads of a transaction.
#[derive(Deserialize)]
struct RelayTransaction {
    events: Vec<RelayEvent>,
}

#[derive(Deserialize)]
struct RelayEvent {
    sender: String,
    content: RelayContent,
}

#[derive(Deserialize)]
struct RelayContent {
    body: String,
}

/// The relay's state: a raw connection per sender, and the channel they write to.
struct Relaying {
    by_sender: HashMap<String, RawIrc>,
    channel: String,
}

impl Relay {
    /// Serves on a free port, one sender per client of `clients`, writing to `channel`.
    async fn start(clients: Vec<RawIrc>, channel: &str) -> anyhow::Result<Self> {
        let by_sender = clients.into_iter().enumerate().map(|(i, client)| (Self::sender(i), client)).collect();
        let relaying = Arc::new(Relaying { by_sender, channel: channel.to_owned() });
        let listener = TcpListener::bind("127.0.0.1:0").await.context("binding the relay")?;
        let url = format!("http://{}", listener.local_addr()?);
        let app = Router::new().route("/_matrix/app/v1/transactions/{txn}", put(relay)).with_state(relaying);
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Self { pusher: Pusher::new(&url, "unused")?, server })
    }

    /// The Matrix ID the relay writes for on connection `index`.
    fn sender(index: usize) -> String {
        format!("@p2relay{index}:localhost")
    }
}

async fn relay(
    State(relaying): State<Arc<Relaying>>,
    Json(transaction): Json<RelayTransaction>,
) -> Result<Json<Value>, (StatusCode, String)> {
    let mut lines: HashMap<&str, String> = HashMap::new();
    for event in &transaction.events {
        let text = lines.entry(event.sender.as_str()).or_default();
        // Written in place: the relay stands for the least an appservice can do per line.
        let _ = write!(text, "PRIVMSG {} :{}\r\n", relaying.channel, event.content.body);
    }
    for (sender, text) in lines {
        let client =
            relaying.by_sender.get(sender).ok_or((StatusCode::BAD_REQUEST, format!("unknown sender {sender}")))?;
        client.send_raw(text.as_bytes()).await.map_err(|error| (StatusCode::BAD_GATEWAY, format!("{error:#}")))?;
    }
    Ok(Json(json!({})))
}
