//! P3, latency both ways through a real Synapse, p50 and p99, one message at a time:
//! - Matrix → IRC: a Matrix user sends with the client API; a raw IRC client in the channel notes the line. A stub
//!   appservice in the same room notes when Synapse hands it the same event: the homeserver's floor. What the
//!   bridge adds is, per message, the IRC arrival minus the stub's.
//! - IRC → Matrix: a raw IRC client sends; the Matrix user's `/sync` notes the event. The floor: the stub appservice
//!   sends a message into the same room, timed the same way; what the bridge adds is the difference of the
//!   percentiles.
//! - The bridge's own part, per message, taken at its edges: relays ([`Tap`](crate::tap::Tap)) between Synapse and
//!   the bridge note when a transaction carrying the message reaches the bridge and when the bridge's call carrying
//!   it leaves for Synapse; a relay between the bridge and ngircd notes when the line leaves the bridge for IRC and
//!   when it reaches the bridge from IRC. Matrix → IRC: the line leaving minus the transaction arriving; IRC →
//!   Matrix: the call leaving minus the line arriving. (The stub's floor also holds Synapse's own time between
//!   handing an event to two appservices, which is not the bridge's.)

use std::{
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::Context as _;
use lattice_e2e::{MatrixUser, StateDir, Synapse};
use reqwest::Method;

use crate::{
    appservice::StubAppservice,
    arrivals::Arrivals,
    heisenbridge::{self, HeisenbridgeSetup},
    irc::{RawIrc, Tally},
    rig::{BridgeEdges, IrcEdge, IrcOptions, IrcRig},
    stats::p50_p99,
};

/// How long one message may take before the run fails.
const WAIT: Duration = Duration::from_secs(30);

/// One direction's samples, in milliseconds.
#[derive(Default)]
pub(crate) struct Direction {
    pub(crate) end_to_end: Vec<f64>,
    pub(crate) floor: Vec<f64>,
    /// Per-message bridge part, where it can be taken per message.
    pub(crate) added: Vec<f64>,
    /// Per-message bridge part taken at the bridge's edges (see the module docs).
    pub(crate) at_edges: Vec<f64>,
}

impl Direction {
    fn row(&self, bridge: &str, direction: &str) {
        let (e50, e99) = p50_p99(&self.end_to_end);
        let (f50, f99) = p50_p99(&self.floor);
        let (a50, a99) = if self.added.is_empty() { (e50 - f50, e99 - f99) } else { p50_p99(&self.added) };
        let edges = match self.at_edges.is_empty() {
            true => "–".to_owned(),
            false => {
                let (b50, b99) = p50_p99(&self.at_edges);
                format!("{b50:.2} / {b99:.2}")
            }
        };
        println!(
            "| {bridge} | {direction} | {e50:.1} / {e99:.1} | {f50:.1} / {f99:.1} | {a50:.1} / {a99:.1} | {edges} |"
        );
    }
}

/// The stub appservice's registration: its own `@benchstub…` namespace, so it sees every event in rooms its bot is in.
pub(crate) fn stub_registration(dir: &Path, url: &str) -> anyhow::Result<(PathBuf, String)> {
    let as_token = format!("{:032x}", rand::random::<u128>());
    let text = format!(
        "id: lattice-bench-stub\nurl: {url}\nas_token: {as_token}\nhs_token: {:032x}\nsender_localpart: benchstub\n\
         rate_limited: false\nnamespaces:\n  users:\n    - exclusive: true\n      regex: '@benchstub.*:localhost'\n  \
         aliases: []\n  rooms: []\n",
        rand::random::<u128>()
    );
    let path = dir.join("stub-registration.yaml");
    std::fs::write(&path, text).context("writing the stub registration")?;
    Ok((path, as_token))
}

pub(crate) async fn run(bin_dir: &Path, samples: usize, edge: IrcEdge) -> anyhow::Result<()> {
    println!("\n## P3 latency through Synapse ({samples} messages each way, one at a time, ngircd)");
    let dir = StateDir::new("bench-p3-")?;
    let (stub, stub_url) = StubAppservice::start().await?;
    let (stub_registration, stub_token) = stub_registration(dir.path(), &stub_url)?;
    let heisenbridge = match heisenbridge::python() {
        Some(python) => Some(HeisenbridgeSetup::new(python, dir.path())?),
        None => None,
    };
    let mut extra_registrations = vec![stub_registration];
    extra_registrations.extend(heisenbridge.as_ref().map(|setup| setup.registration.clone()));
    let options = IrcOptions {
        max_concurrent: 5,
        extra_registrations,
        seed_portals: 0,
        tap_marker: Some("p3 lattice to "),
        privacy: "kick",
        edge,
    };
    let rig = IrcRig::start(bin_dir, options).await?;
    let irc = RawIrc::connect(rig.ircd.port(), "p3irc", &["#p3"], Tally::new("p3", "", true)).await?;
    let alice = rig.synapse.register_user("alice", false).await?;
    let room = rig.portal(&alice, "#p3").await?;
    let sync = SyncRecorder::start(alice.clone()).await?;
    let stub_user = stub_joins(&rig.synapse, &stub_token, &alice, &room).await?;

    // Warm-up: the puppet connects and the IRC person's ghost joins the room; neither is timed.
    warm_up(&irc, "#p3", &alice, &room, &sync).await?;
    let floor = Floor { stub: &stub, user: &stub_user };
    let (to_irc, to_matrix) =
        measure("lattice", samples, &irc, "#p3", &alice, &room, Some(floor), rig.taps.as_ref(), &sync, Duration::ZERO)
            .await?;
    println!(
        "milliseconds, p50 / p99; the floor is Synapse alone (a stub appservice in the same room), same run; the \
         bridge's part at its edges is taken per message between what reaches it (a transaction, an IRC line) and \
         what leaves it (an IRC line, a homeserver call)"
    );
    println!(
        "| bridge | direction | end to end | Synapse floor | bridge adds (vs floor) | bridge adds (at its edges) |"
    );
    println!("|---|---|---|---|---|---|");
    to_irc.row("lattice-irc", "Matrix → IRC");
    to_matrix.row("lattice-irc", "IRC → Matrix");

    let Some(setup) = heisenbridge else {
        println!("Heisenbridge: not installed (scripts/install.sh heisenbridge), skipped");
        return Ok(());
    };
    // Heisenbridge throttles a connection that sends more than one line a second: space its samples out.
    let hb_samples = samples.min(40);
    let owner = rig.synapse.register_user("hbowner", false).await?;
    let _process = setup.start(&rig.synapse, owner.user_id(), &dir.join("heisenbridge.log")).await?;
    let irc = RawIrc::connect(rig.ircd.port(), "p3hbirc", &["#p3hb"], Tally::new("p3", "", true)).await?;
    let room = heisenbridge::join_channel(&owner, rig.ircd.port(), "hbowner", "#p3hb").await?;
    let sync = SyncRecorder::start(owner.clone()).await?;
    warm_up(&irc, "#p3hb", &owner, &room, &sync).await?;
    let (mut hb_to_irc, mut hb_to_matrix) =
        measure("hb", hb_samples, &irc, "#p3hb", &owner, &room, None, None, &sync, Duration::from_millis(1500)).await?;
    // Its rooms let only the bot invite, so the stub cannot join: the floor is the one measured above, same Synapse.
    (hb_to_irc.floor, hb_to_matrix.floor) = (to_irc.floor, to_matrix.floor);
    hb_to_irc.row("Heisenbridge 1.15.4", "Matrix → IRC");
    hb_to_matrix.row("Heisenbridge 1.15.4", "IRC → Matrix");
    println!("(Heisenbridge: {hb_samples} samples 1.5 s apart, below its throttle; its floor is lattice-irc's above)");
    Ok(())
}

/// One message each way, untimed: puppets connect, ghosts join.
async fn warm_up(
    irc: &RawIrc,
    channel: &str,
    matrix: &MatrixUser,
    room: &str,
    sync: &SyncRecorder,
) -> anyhow::Result<()> {
    let body = format!("p3 warm-up {channel}");
    matrix.send_text(room, &body).await?;
    irc.tally.wait(WAIT, "the warm-up reaching IRC", |t| t.arrival(&body).is_some()).await?;
    let back = format!("p3 warm-up back {channel}");
    irc.send_raw(format!("PRIVMSG {channel} :{back}\r\n").as_bytes()).await?;
    sync.arrival(&back, WAIT).await?;
    Ok(())
}

/// The stub's bot joins `room` (invited by `member` if the room is not public) and returns it as a client.
async fn stub_joins(synapse: &Synapse, token: &str, member: &MatrixUser, room: &str) -> anyhow::Result<MatrixUser> {
    let stub_user = MatrixUser::new(synapse.url(), "@benchstub:localhost", token)?;
    if stub_user.join(room).await.is_err() {
        member.invite(room, stub_user.user_id()).await?;
        stub_user.join(room).await?;
    }
    Ok(stub_user)
}

/// What measures the homeserver's floor: the stub appservice in the room, and its bot as a client.
pub(crate) struct Floor<'a> {
    pub(crate) stub: &'a StubAppservice,
    pub(crate) user: &'a MatrixUser,
}

/// Sends `samples` messages each way, one at a time, a round every `gap` at most; bodies start with `label`. With a `floor`, the
/// homeserver's floor is measured beside each message.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn measure(
    label: &str,
    samples: usize,
    irc: &RawIrc,
    channel: &str,
    matrix: &MatrixUser,
    room: &str,
    floor: Option<Floor<'_>>,
    edges: Option<&BridgeEdges>,
    sync: &SyncRecorder,
    gap: Duration,
) -> anyhow::Result<(Direction, Direction)> {
    let ms = |from: Instant, to: Instant| (to - from).as_secs_f64() * 1000.0;
    let (mut to_irc, mut to_matrix) = (Direction::default(), Direction::default());
    for i in 0..samples {
        let body = format!("p3 {label} to irc {i}");
        let sent = Instant::now();
        matrix.send_text(room, &body).await?;
        irc.tally.wait(WAIT, &format!("{body:?} reaching IRC"), |t| t.arrival(&body).is_some()).await?;
        let seen = irc.tally.arrival(&body).context("arrived")?;
        to_irc.end_to_end.push(ms(sent, seen));
        if let Some(floor) = &floor {
            let reached = floor.stub.arrival(&body, WAIT).await?;
            to_irc.floor.push(ms(sent, reached));
            // Signed: the stub may hear of the event after the bridge has already delivered it.
            to_irc.added.push(if seen >= reached { ms(reached, seen) } else { -ms(seen, reached) });
        }
        if let Some(edges) = edges {
            let left = edges.irc.arrival(&body, WAIT).await?;
            to_irc.at_edges.push(ms(edges.into_bridge.arrival(&body, WAIT).await?, left));
        }

        let body = format!("p3 {label} to matrix {i}");
        let sent = Instant::now();
        irc.send_raw(format!("PRIVMSG {channel} :{body}\r\n").as_bytes()).await?;
        to_matrix.end_to_end.push(ms(sent, sync.arrival(&body, WAIT).await?));
        if let Some(edges) = edges {
            let reached = edges.irc.return_arrival(&body, WAIT).await?;
            to_matrix.at_edges.push(ms(reached, edges.out_of_bridge.arrival(&body, WAIT).await?));
        }
        if let Some(floor) = &floor {
            let body = format!("p3 {label} floor {i}");
            let sent = Instant::now();
            floor.user.send_text(room, &body).await?;
            to_matrix.floor.push(ms(sent, sync.arrival(&body, WAIT).await?));
        }
        tokio::time::sleep(gap).await;
    }
    Ok((to_irc, to_matrix))
}

/// A Matrix user's `/sync` loop that notes when each message body arrived.
pub(crate) struct SyncRecorder {
    arrivals: Arrivals,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Drop for SyncRecorder {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl SyncRecorder {
    /// Starts long-polling as `user` from now on.
    pub(crate) async fn start(user: MatrixUser) -> anyhow::Result<Self> {
        let sync = ["_matrix", "client", "v3", "sync"];
        let filter =
            r#"{"room":{"timeline":{"limit":100},"state":{"lazy_load_members":true}},"presence":{"types":[]}}"#;
        let first = user.call(Method::GET, &sync, &[("filter", filter)], None).await?;
        let mut since = first["next_batch"].as_str().context("no next_batch")?.to_owned();
        let arrivals = Arrivals::default();
        let seen = arrivals.clone();
        let task = tokio::spawn(async move {
            loop {
                let query = [("filter", filter), ("since", since.as_str()), ("timeout", "30000")];
                let answer = user.call(Method::GET, &sync, &query, None).await?;
                let now = Instant::now();
                let rooms = answer["rooms"]["join"].as_object().into_iter().flat_map(|rooms| rooms.values());
                let events = rooms.flat_map(|room| room["timeline"]["events"].as_array().into_iter().flatten());
                seen.note(events.filter_map(|event| event["content"]["body"].as_str()), now);
                since = answer["next_batch"].as_str().map(str::to_owned).context("no next_batch")?;
            }
        });
        Ok(Self { arrivals, task })
    }

    /// When the message `body` arrived, waiting up to `timeout`.
    pub(crate) async fn arrival(&self, body: &str, timeout: Duration) -> anyhow::Result<Instant> {
        self.arrivals.wait(body, timeout, "Matrix (the /sync loop)", || self.task.is_finished()).await
    }
}
