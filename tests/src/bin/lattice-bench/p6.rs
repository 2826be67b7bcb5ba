//! P6, the XMPP bridge against Prosody (which serves MUCs on one core):
//! - Matrix → XMPP messages/s: transactions pushed to `lattice-xmpp` (as Synapse sends them) from 20 Matrix users
//!   in a MUC portal, counted by an XMPP client in the MUC. The limit, in the same run: a raw XEP-0114 component
//!   (a second component domain of the same length) with as many occupants in a MUC of its own, 20 of them writing
//!   the same messages round robin. Prosody's pace wanders by up to twice between back-to-back measurements of the same
//!   thing, so the two paths take turns over several rounds and the rates are pooled over all of them.
//! - XMPP → Matrix: the bridge's CPU time (utime + stime) per groupchat stanza carried into Matrix (in the small
//!   MUC), beside Synapse's CPU time per event over the same interval.
//! - Memory: growth of the bridge's settled `VmRSS` per Matrix user joined to the MUC (an occupant each).

use std::{
    path::Path,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use lattice_e2e::{StateDir, Synapse, prosody::Prosody};

use crate::{
    appservice::{Pusher, join_event, message_event},
    bridge::{BridgeSetup, Flavour, cpu_secs},
    p3::SyncRecorder,
    xmpp::{RawXmpp, XmlTally},
};

/// Sizes of a P6 run.
pub(crate) struct P6 {
    /// Messages Matrix → XMPP (and raw) in each round.
    pub(crate) messages: usize,
    /// Matrix users joined to the MUC.
    pub(crate) users: usize,
    /// Stanzas XMPP → Matrix.
    pub(crate) stanzas: usize,
}

/// Senders of the Matrix → XMPP messages, taken from the joined users.
const SENDERS: usize = 20;
/// Rounds of the Matrix → XMPP rate, each path measured once a round.
const ROUNDS: usize = 6;
const MARKER: &str = "<body>p6 to xmpp ";
/// The bridge's component domain, and the raw component's: as long, so both write stanzas of the same size.
const BRIDGE_COMPONENT: &str = "bridge.localhost";
const RAW_COMPONENT: &str = "direct.localhost";

pub(crate) async fn run(bin_dir: &Path, size: &P6) -> anyhow::Result<()> {
    println!(
        "\n## P6 XMPP ({ROUNDS} × {} messages Matrix → XMPP, {} stanzas XMPP → Matrix, {} Matrix users in one MUC, \
         Prosody)",
        size.messages, size.stanzas, size.users
    );
    let wait = Duration::from_secs(120 + (size.messages + size.users) as u64 / 20);
    let prosody = Prosody::start_with_components(&[BRIDGE_COMPONENT, RAW_COMPONENT]).await?;
    // Memory is measured in a big MUC, rates in small ones of the same size for both paths, so each message fans out
    // to as many occupants on the bridge's path as on the raw one.
    let big = format!("p6@{}", prosody.muc_domain());
    let raw_room = format!("p6raw@{}", prosody.muc_domain());
    let rate_room = format!("p6rate@{}", prosody.muc_domain());
    prosody.register("p6obs", "p6obs").await?;
    let observer = RawXmpp::client(
        prosody.c2s_port(),
        "p6obs",
        "p6obs",
        XmlTally::new(&[MARKER, &format!("{big}/p6u"), "code='110'", &format!("{rate_room}/p6u")]),
    )
    .await?;
    for (joined, room) in [&big, &raw_room, &rate_room].into_iter().enumerate() {
        observer
            .send(&format!("<presence to='{room}/observer'><x xmlns='http://jabber.org/protocol/muc'/></presence>"))
            .await?;
        observer.tally.wait(2, joined + 1, wait, "the observer joining the MUCs").await?;
    }

    let dir = StateDir::new("bench-xmpp-")?;
    let setup = BridgeSetup::new(bin_dir, dir.path(), xmpp_flavour(&prosody))?;
    let synapse = Synapse::start(std::slice::from_ref(&setup.registration)).await?;
    let bridge = setup.start(synapse.url()).await?;
    let pusher = Pusher::new(&setup.url, &setup.hs_token)?;
    let admin = synapse.register_user("admin", false).await?;
    let rate_portal =
        admin.join(&format!("#_xmpp_{rate_room}:localhost")).await.context("joining the small MUC's portal")?;
    let sync = SyncRecorder::start(admin.clone()).await?;

    let sender = |seq: usize| format!("@p6u{}:localhost", seq % SENDERS);
    let joins = (0..SENDERS).map(|i| join_event(&rate_portal, &sender(i), &format!("p6u{i}"))).collect();
    pusher.push_all(joins).await?;
    observer.tally.wait(3, SENDERS, wait, "the senders joining the small MUC").await?;
    // The raw MUC gets as many occupants as the bridge's: beside its senders, the bridge has its listener and the
    // admin's occupant there (the admin joined the portal to watch it), and every occupant gets every message.
    let occupants = prosody.muc_occupant_count(&rate_room).await?;
    let raw = RawLimit::join(&prosody, &raw_room, occupants.saturating_sub(1), wait).await?;

    // The rounds: raw then bridge, then bridge then raw, and so on, so a drift in Prosody's pace weighs on both.
    let timer = Timer { prosody: &prosody, observer: &observer, wait };
    let (mut raw_runs, mut bridge_runs, mut acknowledged, mut to_xmpp_cpu) = (Vec::new(), Vec::new(), Vec::new(), 0.0);
    for round in 0..ROUNDS {
        let seqs = round * size.messages..(round + 1) * size.messages;
        for bridge_turn in [round % 2 == 1, round % 2 == 0] {
            let total = observer.tally.count(0) + size.messages;
            if bridge_turn {
                let events = seqs
                    .clone()
                    .map(|seq| message_event(&rate_portal, &sender(seq), &format!("p6 to xmpp {seq}")))
                    .collect();
                let cpu_before = bridge.cpu_secs()?;
                let started = Instant::now();
                let push = async {
                    pusher.push_all(events).await?;
                    acknowledged.push(started.elapsed().as_secs_f64());
                    Ok(())
                };
                bridge_runs.push(timer.time(total, "bridged messages", push).await?);
                to_xmpp_cpu += bridge.cpu_secs()? - cpu_before;
            } else {
                let lines = raw.messages(seqs.clone());
                raw_runs.push(timer.time(total, "raw messages", raw.send(&lines)).await?);
            }
        }
    }
    drop(raw);
    // XMPP → Matrix: the observer speaks in the small MUC; the admin's /sync sees the last stanza arrive.
    let synapse_pid = pid_with_argument(&synapse.dir().join("homeserver.yaml").display().to_string());
    let synapse_before = synapse_pid.map(cpu_secs).transpose()?;
    let cpu_before = bridge.cpu_secs()?;
    let stanzas: Vec<String> = (0..size.stanzas)
        .map(|seq| {
            format!("<message to='{rate_room}' type='groupchat' id='s{seq}'><body>p6 to matrix {seq}</body></message>")
        })
        .collect();
    for chunk in stanzas.chunks(100) {
        observer.send(&chunk.concat()).await?;
    }
    let last = format!("p6 to matrix {}", size.stanzas.saturating_sub(1));
    sync.arrival(&last, wait)
        .await
        .with_context(|| format!("last lines of the bridge's log:\n{}", bridge.log_tail(20)))?;
    let cpu = bridge.cpu_secs()? - cpu_before;
    let synapse_cpu = match (synapse_pid, synapse_before) {
        (Some(pid), Some(before)) => Some(cpu_secs(pid)? - before),
        _ => None,
    };

    drop(bridge);

    // Memory comes last, in the bridge started again: with a thousand occupants in one of its MUCs, Prosody slowed
    // down 1.5 to 3 times for all that came after, so the rates are taken before they join.
    let bridge = setup.start(synapse.url()).await?;
    let portal = admin.join(&format!("#_xmpp_{big}:localhost")).await.context("joining the big MUC's portal")?;
    let before = bridge.settled_rss_kib().await?;
    let users = size.users.max(SENDERS);
    let joins = (0..users).map(|i| join_event(&portal, &format!("@p6u{i}:localhost"), &format!("p6u{i}"))).collect();
    pusher.push_all(joins).await?;
    observer.tally.wait(1, users, wait, "Matrix users joining the big MUC").await?;
    let after = bridge.settled_rss_kib().await?;
    drop(bridge);
    let (raw, bridged) = (Pooled::of(&raw_runs, size.messages), Pooled::of(&bridge_runs, size.messages));
    let ratios = by_round(bridge_runs.iter().zip(&raw_runs).map(|(bridged, raw)| raw.secs / bridged.secs), 2);
    println!("occupants of each rate MUC, the observer included: {occupants}");
    println!("| figure | lattice-xmpp | baseline (same run) |");
    println!("|---|---|---|");
    println!(
        "| Matrix → XMPP MUC messages/s, {ROUNDS} rounds pooled | {:.0} ({:.2} × limit; by round {}) | raw component \
         occupant: {:.0} |",
        bridged.rate,
        bridged.rate / raw.rate,
        ratios,
        raw.rate
    );
    println!(
        "| Matrix → XMPP messages/s by round | {} | {} |",
        by_round(bridge_runs.iter().map(|run| size.messages as f64 / run.secs), 0),
        by_round(raw_runs.iter().map(|run| size.messages as f64 / run.secs), 0)
    );
    println!("| Matrix → XMPP transactions acknowledged after, by round | {} s | |", by_round(acknowledged, 2));
    println!(
        "| Matrix → XMPP bridge CPU per message | {:.0} µs | |",
        to_xmpp_cpu * 1e6 / (ROUNDS * size.messages) as f64
    );
    println!(
        "| Matrix → XMPP Prosody CPU per message | {} | raw component: {} |",
        bridged.prosody_text(),
        raw.prosody_text()
    );
    let per_stanza = cpu * 1e6 / size.stanzas as f64;
    let synapse_text = synapse_cpu.map_or_else(
        || "Synapse: not found".to_owned(),
        |cpu| format!("Synapse: {:.0} µs per event", cpu * 1e6 / size.stanzas as f64),
    );
    println!("| XMPP → Matrix CPU per stanza | {per_stanza:.0} µs | {synapse_text} |");
    println!(
        "| RSS per Matrix user in the MUC | {:.1} KiB ({before} → {after} KiB for {users}) | (matrix-bifrost ≈ 400 KiB, measured earlier) |",
        (after as f64 - before as f64) / users as f64
    );
    Ok(())
}

/// What one timed run took.
struct Run {
    secs: f64,
    /// Prosody's CPU time over it, if its process was found.
    prosody_cpu: Option<f64>,
}

/// Runs of one path taken together.
struct Pooled {
    /// Messages per second over all runs.
    rate: f64,
    /// Prosody's CPU time per message in µs, and its share of a core, over all runs.
    prosody: Option<(f64, f64)>,
}

impl Pooled {
    fn of(runs: &[Run], messages_per_run: usize) -> Self {
        let messages = (runs.len() * messages_per_run) as f64;
        let secs: f64 = runs.iter().map(|run| run.secs).sum();
        let prosody: Option<f64> = runs.iter().map(|run| run.prosody_cpu).sum();
        Self { rate: messages / secs, prosody: prosody.map(|cpu| (cpu * 1e6 / messages, cpu / secs * 100.0)) }
    }

    fn prosody_text(&self) -> String {
        self.prosody
            .map_or_else(|| "not found".to_owned(), |(per, share)| format!("{per:.0} µs ({share:.0}% of a core)"))
    }
}

/// Figures of the rounds in order, with `decimals` places, for a table cell.
fn by_round(figures: impl IntoIterator<Item = f64>, decimals: usize) -> String {
    figures.into_iter().map(|figure| format!("{figure:.decimals$}")).collect::<Vec<_>>().join(", ")
}

/// Times runs of marked messages until the observer has seen them all.
struct Timer<'a> {
    prosody: &'a Prosody,
    observer: &'a RawXmpp,
    wait: Duration,
}

impl Timer<'_> {
    /// Runs `send` and waits until the observer has seen `total` marked messages since it joined; the run ends at the
    /// last one.
    async fn time(
        &self,
        total: usize,
        what: &str,
        send: impl Future<Output = anyhow::Result<()>>,
    ) -> anyhow::Result<Run> {
        let cpu_before = prosody_cpu(self.prosody)?;
        let started = Instant::now();
        send.await?;
        self.observer.tally.wait(0, total, self.wait, &format!("{what} reaching the observer")).await?;
        let secs = (self.observer.tally.last_first().context("a message arrived")? - started).as_secs_f64();
        let prosody_cpu = cpu_before.zip(prosody_cpu(self.prosody)?).map(|(before, after)| after - before);
        Ok(Run { secs, prosody_cpu })
    }
}

/// The limit of P6: a raw XEP-0114 component with as many occupants in its MUC as the bridge has (beside the
/// observer), of which as many speak as the bridge has senders.
struct RawLimit {
    component: RawXmpp,
    room: String,
}

impl RawLimit {
    /// Connects the raw component and joins `occupants` to `room`.
    async fn join(prosody: &Prosody, room: &str, occupants: usize, wait: Duration) -> anyhow::Result<Self> {
        let occupants = occupants.max(SENDERS);
        let component = RawXmpp::component(
            &prosody.component_address(),
            RAW_COMPONENT,
            prosody.component_secret(),
            XmlTally::new(&["code='110'"]),
        )
        .await?;
        for sender in 0..occupants {
            component
                .send(&format!(
                    "<presence from='{}' to='{room}/rawsender{sender}'><x xmlns='http://jabber.org/protocol/muc'>\
                     <history maxstanzas='0'/></x></presence>",
                    Self::from(sender)
                ))
                .await?;
        }
        component.tally.wait(0, occupants, wait, "the raw component's occupants joining the MUC").await?;
        Ok(Self { component, room: room.to_owned() })
    }

    fn from(sender: usize) -> String {
        format!("raw{sender}@{RAW_COMPONENT}/r")
    }

    /// The stanzas the bridge writes for the Matrix text messages `seqs`, round robin over the occupants: each ID
    /// again as the XEP-0359 origin-id, and the XEP-0333 markable hint (Prosody spends about a quarter more CPU on
    /// such a message than on a bare body).
    fn messages(&self, seqs: std::ops::Range<usize>) -> Vec<String> {
        seqs.map(|seq| {
            format!(
                "<message from='{}' to='{}' type='groupchat' id='raw{seq}'><body>p6 to xmpp {seq}</body>\
                 <origin-id xmlns='urn:xmpp:sid:0' id='raw{seq}'/><markable xmlns='urn:xmpp:chat-markers:0'/>\
                 </message>",
                Self::from(seq % SENDERS),
                self.room
            )
        })
        .collect()
    }

    /// Writes `lines`, 100 per write.
    async fn send(&self, lines: &[String]) -> anyhow::Result<()> {
        for chunk in lines.chunks(100) {
            self.component.send(&chunk.concat()).await?;
        }
        Ok(())
    }
}

/// Prosody's CPU time so far, if its process is found.
fn prosody_cpu(prosody: &Prosody) -> anyhow::Result<Option<f64>> {
    pid_with_argument(&prosody.config_path().display().to_string()).map(cpu_secs).transpose()
}

/// The `lattice-xmpp` config: the component on the run's Prosody.
fn xmpp_flavour(prosody: &Prosody) -> Flavour<'static> {
    Flavour {
        binary: "lattice-xmpp",
        id: "lattice-xmpp-bench",
        bot_localpart: "xmppbot",
        section: format!(
            "  component:\n    domain: {}\n    server: {}\n    secret: \"{}\"\n",
            BRIDGE_COMPONENT,
            prosody.component_address(),
            prosody.component_secret()
        ),
        edge_mode: None,
    }
}

/// The process whose command line has `argument` (Synapse's, by its config path).
fn pid_with_argument(argument: &str) -> Option<u32> {
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|entry| {
        let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
        let cmdline = std::fs::read(entry.path().join("cmdline")).ok()?;
        cmdline.split(|b| *b == 0).any(|arg| arg == argument.as_bytes()).then_some(pid)
    })
}
