//! P6, the XMPP bridge against Prosody (which serves MUCs on one core):
//! - Matrix → XMPP messages/s: transactions pushed to `lattice-xmpp` (as Synapse sends them) from 20 Matrix users
//!   in a MUC portal, counted by an XMPP client in the MUC. The limit, in the same run: a raw XEP-0114 component with
//!   20 occupants in a MUC of the same size writing the same messages round robin.
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
    /// Messages Matrix → XMPP (and raw).
    pub(crate) messages: usize,
    /// Matrix users joined to the MUC.
    pub(crate) users: usize,
    /// Stanzas XMPP → Matrix.
    pub(crate) stanzas: usize,
}

/// Senders of the Matrix → XMPP messages, taken from the joined users.
const SENDERS: usize = 20;
const MARKER: &str = "<body>p6 to xmpp ";

pub(crate) async fn run(bin_dir: &Path, size: &P6) -> anyhow::Result<()> {
    println!(
        "\n## P6 XMPP ({} messages Matrix → XMPP, {} stanzas XMPP → Matrix, {} Matrix users in one MUC, Prosody)",
        size.messages, size.stanzas, size.users
    );
    let wait = Duration::from_secs(120 + (size.messages + size.users) as u64 / 20);
    let prosody = Prosody::start("bridge.localhost").await?;
    // Memory is measured in a big MUC, rates in small ones of the same size for both paths, so each message fans out
    // to as many occupants on the bridge's path as on the raw one.
    let big = format!("p6@{}", prosody.muc_domain());
    let raw_rooms = [format!("p6raw@{}", prosody.muc_domain()), format!("p6rawafter@{}", prosody.muc_domain())];
    let rate_room = format!("p6rate@{}", prosody.muc_domain());
    prosody.register("p6obs", "p6obs").await?;
    let observer = RawXmpp::client(
        prosody.c2s_port(),
        "p6obs",
        "p6obs",
        XmlTally::new(&[MARKER, &format!("{big}/p6u"), "code='110'", &format!("{rate_room}/p6u")]),
    )
    .await?;
    for (joined, room) in [&big, &raw_rooms[0], &raw_rooms[1], &rate_room].into_iter().enumerate() {
        observer
            .send(&format!("<presence to='{room}/observer'><x xmlns='http://jabber.org/protocol/muc'/></presence>"))
            .await?;
        observer.tally.wait(2, joined + 1, wait, "the observer joining the MUCs").await?;
    }

    // The limit: a raw component with as many occupants as the bridge's senders writes the same messages, round
    // robin, 100 per write; measured before the bridge runs and again after it stopped, since Prosody's pace drifts
    // over a run (between runs, the same measurement has differed by 2.5 times).
    let raw = RawLimit { prosody: &prosody, observer: &observer, messages: size.messages, wait };
    let raw_before = raw.measure(&raw_rooms[0], 1).await?;
    // The bridge takes the component domain over.
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
    let events =
        (0..size.messages).map(|seq| message_event(&rate_portal, &sender(seq), &format!("p6 to xmpp {seq}"))).collect();
    let cpu_before = bridge.cpu_secs()?;
    // Prosody serves MUCs on one core: its CPU time per message shows whether it is what bounds either path.
    let prosody_before = prosody_cpu(&prosody)?;
    let started = Instant::now();
    pusher.push_all(events).await?;
    observer.tally.wait(0, 2 * size.messages, wait, "bridged messages reaching the observer").await?;
    let bridge_secs = (observer.tally.last_first().context("a message arrived")? - started).as_secs_f64();
    let to_xmpp_cpu = bridge.cpu_secs()? - cpu_before;
    let bridge_prosody_cpu = prosody_before.zip(prosody_cpu(&prosody)?).map(|(before, after)| after - before);

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
    let raw_after = raw.measure(&raw_rooms[1], 3).await?;

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
    let raw_secs = (raw_before.secs + raw_after.secs) / 2.0;
    let raw_prosody_cpu =
        raw_before.prosody_cpu.zip(raw_after.prosody_cpu).map(|(before, after)| (before + after) / 2.0);
    let (raw_rate, bridge_rate) = (size.messages as f64 / raw_secs, size.messages as f64 / bridge_secs);
    println!("| figure | lattice-xmpp | baseline (same run) |");
    println!("|---|---|---|");
    println!(
        "| Matrix → XMPP MUC messages/s | {bridge_rate:.0} ({:.2} × limit) | raw component occupant: {raw_rate:.0} \
         (before the bridge {:.0}, after it {:.0}) |",
        bridge_rate / raw_rate,
        size.messages as f64 / raw_before.secs,
        size.messages as f64 / raw_after.secs
    );
    println!("| Matrix → XMPP bridge CPU per message | {:.0} µs | |", to_xmpp_cpu * 1e6 / size.messages as f64);
    let per_message = |cpu: Option<f64>, secs: f64| {
        cpu.map_or_else(
            || "not found".to_owned(),
            |cpu| format!("{:.0} µs ({:.0}% of a core)", cpu * 1e6 / size.messages as f64, cpu / secs * 100.0),
        )
    };
    println!(
        "| Matrix → XMPP Prosody CPU per message | {} | raw component: {} |",
        per_message(bridge_prosody_cpu, bridge_secs),
        per_message(raw_prosody_cpu, raw_secs)
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

/// The limit of P6: a raw XEP-0114 component, on the domain the bridge uses when it runs.
struct RawLimit<'a> {
    prosody: &'a Prosody,
    observer: &'a RawXmpp,
    messages: usize,
    wait: Duration,
}

/// What one measurement of the limit took.
struct RawRun {
    secs: f64,
    /// Prosody's CPU time over it, if its process was found.
    prosody_cpu: Option<f64>,
}

impl RawLimit<'_> {
    /// Joins as many occupants as the bridge has senders to `room` and writes the messages round robin, 100 per write;
    /// this is the `nth` batch of marked messages the observer counts.
    async fn measure(&self, room: &str, nth: usize) -> anyhow::Result<RawRun> {
        let prosody = self.prosody;
        let component = RawXmpp::component(
            &prosody.component_address(),
            prosody.component(),
            prosody.component_secret(),
            XmlTally::new(&["code='110'"]),
        )
        .await?;
        let from = |sender: usize| format!("raw{sender}@{}/r", prosody.component());
        for sender in 0..SENDERS {
            component
                .send(&format!(
                    "<presence from='{}' to='{room}/rawsender{sender}'><x xmlns='http://jabber.org/protocol/muc'>\
                     <history maxstanzas='0'/></x></presence>",
                    from(sender)
                ))
                .await?;
        }
        component.tally.wait(0, SENDERS, self.wait, "the raw component's occupants joining the MUC").await?;
        // The stanzas the bridge writes for a Matrix text message: its ID again as the XEP-0359 origin-id, and the
        // XEP-0333 markable hint. Prosody spends about a quarter more CPU on such a message than on a bare body.
        let lines: Vec<String> = (0..self.messages)
            .map(|seq| {
                format!(
                    "<message from='{}' to='{room}' type='groupchat' id='raw{seq}'><body>p6 to xmpp {seq}</body>\
                     <origin-id xmlns='urn:xmpp:sid:0' id='raw{seq}'/><markable xmlns='urn:xmpp:chat-markers:0'/>\
                     </message>",
                    from(seq % SENDERS)
                )
            })
            .collect();
        let cpu_before = prosody_cpu(prosody)?;
        let started = Instant::now();
        for chunk in lines.chunks(100) {
            component.send(&chunk.concat()).await?;
        }
        let what = "raw messages reaching the observer";
        self.observer.tally.wait(0, nth * self.messages, self.wait, what).await?;
        let secs = (self.observer.tally.last_first().context("a message arrived")? - started).as_secs_f64();
        let prosody_cpu = cpu_before.zip(prosody_cpu(prosody)?).map(|(before, after)| after - before);
        Ok(RawRun { secs, prosody_cpu })
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
            prosody.component(),
            prosody.component_address(),
            prosody.component_secret()
        ),
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
