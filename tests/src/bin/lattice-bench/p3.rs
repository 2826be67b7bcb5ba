//! P3, latency both ways through a real Synapse, p50 and p99, one message at a time:
//! - Matrix → IRC: a Matrix user sends with the client API; a raw IRC client in the channel notes the line. A stub
//!   appservice in the same room notes when Synapse hands it the same event: the homeserver's floor. What the
//!   bridge adds is, per message, the IRC arrival minus the stub's.
//! - IRC → Matrix: a raw IRC client sends; the Matrix user's `/sync` notes the event. The floor: the stub appservice
//!   sends a message into the same room, timed the same way; what the bridge adds is the difference of the
//!   percentiles.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use lattice_e2e::{MatrixUser, StateDir, Synapse};
use reqwest::Method;

use crate::{
    appservice::StubAppservice,
    irc::{RawIrc, Tally},
    rig::{IrcOptions, IrcRig},
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
}

impl Direction {
    fn row(&self, name: &str) {
        let (e50, e99) = p50_p99(&self.end_to_end);
        let (f50, f99) = p50_p99(&self.floor);
        let (a50, a99) = if self.added.is_empty() { (e50 - f50, e99 - f99) } else { p50_p99(&self.added) };
        println!("| {name} | {e50:.1} / {e99:.1} | {f50:.1} / {f99:.1} | {a50:.1} / {a99:.1} |");
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

pub(crate) async fn run(bin_dir: &Path, samples: usize) -> anyhow::Result<()> {
    println!("\n## P3 latency through Synapse ({samples} messages each way, one at a time, ngircd)");
    let dir = StateDir::new("bench-p3-")?;
    let (stub, stub_url) = StubAppservice::start().await?;
    let (stub_registration, stub_token) = stub_registration(dir.path(), &stub_url)?;
    let options = IrcOptions { max_concurrent: 5, extra_registrations: vec![stub_registration] };
    let rig = IrcRig::start(bin_dir, options).await?;
    let irc = RawIrc::connect(rig.ircd.port(), "p3irc", &["#p3"], Tally::new("p3", "", true)).await?;
    let alice = rig.synapse.register_user("alice", false).await?;
    let room = rig.portal(&alice, "#p3").await?;
    let sync = SyncRecorder::start(alice.clone()).await?;
    let stub_user = stub_joins(&rig.synapse, &stub_token, &alice, &room).await?;

    // Warm-up: the puppet connects and the IRC person's ghost joins the room; neither is timed.
    alice.send_text(&room, "p3 warm-up").await?;
    irc.tally.wait(WAIT, "the warm-up reaching IRC", |t| t.arrival("p3 warm-up").is_some()).await?;
    irc.send_raw(b"PRIVMSG #p3 :p3 warm-up back\r\n").await?;
    sync.arrival("p3 warm-up back", WAIT).await?;

    let (to_irc, to_matrix) =
        measure(samples, &irc, "#p3", &alice, &room, &stub, &stub_user, &sync, Duration::ZERO).await?;
    println!("milliseconds, p50 / p99; the floor is Synapse alone (stub appservice), measured in the same run");
    println!("| lattice-irc | end to end | Synapse floor | bridge adds |");
    println!("|---|---|---|---|");
    to_irc.row("Matrix → IRC");
    to_matrix.row("IRC → Matrix");
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

/// Sends `samples` messages each way, one at a time, `gap` apart.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn measure(
    samples: usize,
    irc: &RawIrc,
    channel: &str,
    matrix: &MatrixUser,
    room: &str,
    stub: &StubAppservice,
    stub_user: &MatrixUser,
    sync: &SyncRecorder,
    gap: Duration,
) -> anyhow::Result<(Direction, Direction)> {
    let ms = |from: Instant, to: Instant| (to - from).as_secs_f64() * 1000.0;
    let (mut to_irc, mut to_matrix) = (Direction::default(), Direction::default());
    for i in 0..samples {
        let body = format!("p3 to irc {i}");
        let sent = Instant::now();
        matrix.send_text(room, &body).await?;
        irc.tally.wait(WAIT, &format!("{body:?} reaching IRC"), |t| t.arrival(&body).is_some()).await?;
        let seen = irc.tally.arrival(&body).context("arrived")?;
        let floor = stub.arrival(&body, WAIT).await?;
        to_irc.end_to_end.push(ms(sent, seen));
        to_irc.floor.push(ms(sent, floor));
        to_irc.added.push(ms(floor, seen) * if seen >= floor { 1.0 } else { -1.0 });
        if i == 0 || !gap.is_zero() {
            tokio::time::sleep(gap).await;
        }

        let body = format!("p3 to matrix {i}");
        let sent = Instant::now();
        irc.send_raw(format!("PRIVMSG {channel} :{body}\r\n").as_bytes()).await?;
        to_matrix.end_to_end.push(ms(sent, sync.arrival(&body, WAIT).await?));
        let body = format!("p3 floor {i}");
        let sent = Instant::now();
        stub_user.send_text(room, &body).await?;
        to_matrix.floor.push(ms(sent, sync.arrival(&body, WAIT).await?));
        tokio::time::sleep(gap).await;
    }
    Ok((to_irc, to_matrix))
}

/// A Matrix user's `/sync` loop that notes when each message body arrived.
pub(crate) struct SyncRecorder {
    arrivals: Arc<Mutex<HashMap<String, Instant>>>,
    changed: Arc<tokio::sync::Notify>,
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
        let (arrivals, changed) =
            (Arc::<Mutex<HashMap<String, Instant>>>::default(), Arc::<tokio::sync::Notify>::default());
        let (seen, notify) = (Arc::clone(&arrivals), Arc::clone(&changed));
        let task = tokio::spawn(async move {
            loop {
                let query = [("filter", filter), ("since", since.as_str()), ("timeout", "30000")];
                let answer = user.call(Method::GET, &sync, &query, None).await?;
                let now = Instant::now();
                for room in answer["rooms"]["join"].as_object().into_iter().flat_map(|rooms| rooms.values()) {
                    for event in room["timeline"]["events"].as_array().into_iter().flatten() {
                        if let Some(body) = event["content"]["body"].as_str() {
                            seen.lock().unwrap_or_else(|p| p.into_inner()).entry(body.to_owned()).or_insert(now);
                        }
                    }
                }
                notify.notify_waiters();
                since = answer["next_batch"].as_str().map(str::to_owned).context("no next_batch")?;
            }
        });
        Ok(Self { arrivals, changed, task })
    }

    /// When the message `body` arrived, waiting up to `timeout`.
    pub(crate) async fn arrival(&self, body: &str, timeout: Duration) -> anyhow::Result<Instant> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let changed = self.changed.notified();
            if let Some(at) = self.arrivals.lock().unwrap_or_else(|p| p.into_inner()).get(body) {
                return Ok(*at);
            }
            if self.task.is_finished() {
                bail!("the /sync loop ended");
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                bail!("{body:?} did not reach Matrix within {timeout:?}");
            }
        }
    }
}
