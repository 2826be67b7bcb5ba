//! Crash safety of Matrix → IRC delivery with the shipped `lattice-irc run`: Matrix users stream numbered messages
//! into an IRC portal under the sample config's flood control (burst 5, 2 lines/s per connection), the bridge is
//! killed with `kill -9` at random points and started again, and an IRC client in the channel counts what arrived:
//! nothing lost, each sender's order kept, and doubles only where a line was written but its confirmation (echo,
//! or the `PONG` after it) had not come back when the process died.
//!
//! The other way, IRC → Matrix across kills, is in [`crate::irc_continuity`]: the edge keeps the connections and
//! what they heard.
//!
//! The kill points come from a seed: `LATTICE_CRASH_SEED` picks it, else it is random and printed.

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Duration,
};

use anyhow::{Context as _, ensure};
use lattice_e2e::{
    MatrixUser, ServerProcess, Synapse, free_port,
    ircd::{IrcTestClient, Ircd},
    workspace_root,
};
use rand::{Rng as _, SeedableRng as _};
use reqwest::Method;
use serde_yaml::Value;

use crate::{
    binaries::build_binary,
    crash_tally::{Stream, Tally, stranded_now},
};

/// Ten Matrix users, each through their own puppet with its own flood bucket, send 100 messages each.
const STREAM: Stream = Stream { senders: 10, per_sender: 100 };
/// Kills during the stream.
const KILLS: usize = 2;
/// How long the whole stream may take to arrive: 1,000 lines at 20 lines/s, two restarts and reconnects.
const ARRIVAL: Duration = Duration::from_secs(300);
/// The channel.
const CHANNEL: &str = "#crash";

/// The IRC sample config pointed at `homeserver` and the IRC server on `irc_port`, with its files in `dir`. The
/// flood control stays the sample's; per-user spam limits and the privacy rule are off (they hold back or remove
/// senders on purpose, which this test does not measure).
fn write_config(dir: &Path, homeserver: &str, port: u16, irc_port: u16) -> anyhow::Result<PathBuf> {
    let sample = std::fs::read_to_string(workspace_root().join("bridge-irc/config.sample.yaml"))?;
    let mut config: Value = serde_yaml::from_str(&sample)?;
    config["homeserver"]["url"] = homeserver.into();
    config["appservice"]["port"] = u64::from(port).into();
    config["permissions"]["admins"] = Value::Sequence(vec!["@admin:localhost".into()]);
    let mut network = config["bridge"]["networks"]["libera"].clone();
    network["name"] = "Test IRC".into();
    network["servers"] = serde_yaml::from_str(&format!("[{{host: 127.0.0.1, port: {irc_port}, tls: false}}]"))?;
    network["max_nick_length"] = 30.into();
    network["auth"] = "none".into();
    network["privacy"] = "off".into();
    network["spam"] = serde_yaml::from_str("{messages_per_minute: 0, burst: 0, max_lines_per_message: 0}")?;
    network["reconnect"] = serde_yaml::from_str("{initial_delay_ms: 200, max_delay_secs: 2, max_concurrent: 5}")?;
    let mut networks = serde_yaml::Mapping::new();
    networks.insert("test".into(), network);
    config["bridge"]["networks"] = Value::Mapping(networks);
    // The edge that holds the IRC connections: its socket beside the config, where the test finds it to stop it.
    config["bridge"]["edge"] =
        serde_yaml::from_str(&format!("{{socket: {}, linger_secs: 300}}", dir.join("edge.sock").display()))?;
    let path = dir.join("config.yaml");
    std::fs::write(&path, serde_yaml::to_string(&config)?)?;
    Ok(path)
}

/// `lattice-irc run` on `config`, with its output in `dir`; waits for the homeserver's ping to reach it.
async fn start_bridge(binary: &Path, config: &Path, dir: &Path, run: usize) -> anyhow::Result<ServerProcess> {
    let log = dir.join(format!("lattice-irc-{run}.log"));
    let mut command = Command::new(binary);
    command.arg("run").arg("-c").arg(config).env("RUST_LOG", "info").stdin(Stdio::null());
    let mut bridge = ServerProcess::spawn("lattice-irc", &mut command, &log)?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while !std::fs::read_to_string(&log).unwrap_or_default().contains("appservice ping succeeded") {
        ensure!(bridge.exit_status().is_none(), "lattice-irc exited: {}", bridge.log_tail(40));
        ensure!(tokio::time::Instant::now() < deadline, "no successful ping within 60 s: {}", bridge.log_tail(40));
        // Polling another process's log: there is nothing to be notified by.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(bridge)
}

/// The shipped `lattice-irc run` on the sample config, bridging `ircd` to a Synapse of its own; started again on the
/// same config and store after each kill.
pub(crate) struct ShippedBridge {
    binary: PathBuf,
    config: PathBuf,
    dir: tempfile::TempDir,
    port: u16,
    runs: usize,
    /// The running process.
    pub(crate) process: ServerProcess,
}

impl ShippedBridge {
    /// Writes the config and registration, starts Synapse with it, then the bridge.
    pub(crate) async fn start(ircd: &Ircd) -> anyhow::Result<(Synapse, Self)> {
        let binary = build_binary("lattice-bridge-irc", "lattice-irc")?;
        let dir = tempfile::tempdir()?;
        let port = free_port();
        let config = write_config(dir.path(), "http://127.0.0.1:9", port, ircd.port())?;
        let status = Command::new(&binary).arg("generate-registration").arg("-c").arg(&config).status()?;
        ensure!(status.success(), "generate-registration failed");
        let synapse = Synapse::start(&[dir.path().join("registration.yaml")]).await?;
        write_config(dir.path(), synapse.url(), port, ircd.port())?;
        let process = start_bridge(&binary, &config, dir.path(), 0).await?;
        Ok((synapse, Self { binary, config, dir, port, runs: 1, process }))
    }

    /// The bridge's HTTP base URL (appservice API, `/metrics`, `/health/…`).
    pub(crate) fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// `kill -9`, then a fresh start on the same config and store.
    pub(crate) async fn kill_and_restart(&mut self) -> anyhow::Result<()> {
        self.process.kill()?;
        self.start_again().await
    }

    /// A fresh start on the same config and store, after the process ended.
    pub(crate) async fn start_again(&mut self) -> anyhow::Result<()> {
        self.process = start_bridge(&self.binary, &self.config, self.dir.path(), self.runs).await?;
        self.runs += 1;
        Ok(())
    }

    /// The process ID of the edge that holds the bridge's IRC connections, from the file beside its socket.
    pub(crate) fn edge_pid(&self) -> Option<u32> {
        lattice_e2e::irc_edge::edge_pid(&self.dir.path().join("edge.sock"))
    }

    /// Upgrades the edge as an operator would: a new `lattice-irc edge --take-over` on the same socket takes the
    /// IRC connections over from the running one. Returns the new edge's process ID.
    pub(crate) async fn upgrade_edge(&self) -> anyhow::Result<u32> {
        let socket = self.dir.path().join("edge.sock");
        let (pid, _) = lattice_e2e::irc_edge::take_over_edge(&self.binary, &socket).await?;
        Ok(pid)
    }

    /// The edge's log (it logs to a file beside its socket).
    pub(crate) fn edge_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("edge.log")).unwrap_or_default()
    }
}

impl Drop for ShippedBridge {
    /// The edge outlives the bridge on purpose; the test's does not outlive the test.
    fn drop(&mut self) {
        self.process.stop(Duration::from_secs(5));
        if let Some(pid) = self.edge_pid() {
            let _ = Command::new("kill").args(["-KILL", &pid.to_string()]).status();
        }
    }
}

/// The shipped bridge on ngircd with one portal: `talker` in a channel on IRC, Alice in its room on Matrix. The
/// IRC server lives as long as this does.
pub(crate) struct OnePortal {
    pub(crate) _ircd: Ircd,
    pub(crate) synapse: Synapse,
    pub(crate) bridge: ShippedBridge,
    pub(crate) talker: IrcTestClient,
    pub(crate) alice: MatrixUser,
    pub(crate) room_id: String,
}

impl OnePortal {
    /// Servers, bridge and the two people, both in `channel`'s portal.
    pub(crate) async fn start(channel: &str) -> anyhow::Result<Self> {
        let ircd = Ircd::ngircd().await?;
        let (synapse, bridge) = ShippedBridge::start(&ircd).await?;
        let talker = IrcTestClient::connect(ircd.port(), "talker").await?;
        talker.join(channel).await?;
        let alice = synapse.register_user("alice", false).await?;
        let room_id = alice.join(&format!("#irc_test_{channel}:localhost")).await?;
        Ok(Self { _ircd: ircd, synapse, bridge, talker, alice, room_id })
    }
}

/// A random number generator from `LATTICE_CRASH_SEED`, or from a random seed; `label` and the seed are printed.
fn seeded(label: &str) -> rand::rngs::StdRng {
    let seed = std::env::var("LATTICE_CRASH_SEED").ok().and_then(|seed| seed.parse().ok()).unwrap_or_else(rand::random);
    println!("{label}: seed {seed} (LATTICE_CRASH_SEED={seed} repeats these kill points)");
    rand::rngs::StdRng::seed_from_u64(seed)
}

/// The numbered messages the IRC client has seen in the channel, as (sender, number), in arrival order.
fn arrived(observer: &IrcTestClient) -> Vec<(usize, usize)> {
    observer
        .pending()
        .iter()
        .filter_map(|line| line.split_once(&format!(" PRIVMSG {CHANNEL} :")).map(|(_, text)| text))
        .filter_map(Stream::parse)
        .collect()
}

async fn stream_with_kills(ircd: Ircd, server: &str) -> anyhow::Result<Tally> {
    let mut rng = seeded(server);
    let (synapse, mut bridge) = ShippedBridge::start(&ircd).await?;

    let observer = IrcTestClient::connect(ircd.port(), "observer").await?;
    observer.join(CHANNEL).await?;
    let alias = format!("#irc_test_{CHANNEL}:localhost");
    let mut senders: Vec<MatrixUser> = Vec::new();
    let mut room_id = String::new();
    for index in 0..STREAM.senders {
        let user = synapse.register_user(&format!("crash{index}"), false).await?;
        room_id = user.join(&alias).await.with_context(|| format!("crash{index} joining {alias}"))?;
        senders.push(user);
    }
    let streams = STREAM.start(senders, &room_id);

    // Kill points: after a random share of the stream has reached IRC, between a tenth and nine tenths of it.
    let total = STREAM.senders * STREAM.per_sender;
    let mut points: Vec<usize> = (0..KILLS).map(|_| rng.random_range(total / 10..total * 9 / 10)).collect();
    points.sort_unstable();
    let mut held_back = std::collections::BTreeSet::new();
    for point in points {
        let deadline = tokio::time::Instant::now() + ARRIVAL;
        while arrived(&observer).len() < point {
            let log = bridge.process.log_tail(30);
            ensure!(tokio::time::Instant::now() < deadline, "{point} lines did not arrive: {log}");
            tokio::time::sleep(Duration::from_millis(rng.random_range(1..40))).await;
        }
        held_back.extend(stranded_now(&synapse).await?);
        bridge.kill_and_restart().await?;
        println!("{server}: killed the bridge after {} lines arrived, started it again", arrived(&observer).len());
    }
    let mut event_ids = Vec::new();
    for stream in streams {
        event_ids.push(stream.await??);
    }
    STREAM.wait_for_all(|| arrived(&observer), &event_ids, &synapse, ARRIVAL).await?;
    // A little longer, so a late double shows.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let counted = STREAM.tally_against(&arrived(&observer), &event_ids, &synapse, &held_back)?;
    println!("{server}: {total} sent, {counted:?}");
    ensure!(counted.lost_by_bridge() == 0, "{counted:?}; bridge log: {}", bridge.process.log_tail(40));
    ensure!(counted.out_of_order == 0, "{counted:?}");
    Ok(counted)
}

#[tokio::test]
async fn nothing_acknowledged_is_lost_on_ngircd_when_the_bridge_is_killed_twice() -> anyhow::Result<()> {
    let counted = stream_with_kills(Ircd::ngircd().await?, "ngircd").await?;
    // Without echoes, a line the server read but whose PONG had not come back is sent again: at most the lines a
    // puppet wrote within one round trip, which flood control keeps to its burst.
    ensure!(counted.doubled <= KILLS * STREAM.senders * 5, "{counted:?}");
    Ok(())
}

#[tokio::test]
async fn nothing_acknowledged_is_lost_on_inspircd_when_the_bridge_is_killed_twice() -> anyhow::Result<()> {
    let counted = stream_with_kills(Ircd::inspircd().await?, "InspIRCd").await?;
    ensure!(counted.doubled <= KILLS * STREAM.senders * 5, "{counted:?}");
    Ok(())
}

/// The bodies of the room's messages that start with `prefix`, oldest first, as `user` reads them.
pub(crate) async fn room_bodies(user: &MatrixUser, room_id: &str, prefix: &str) -> anyhow::Result<Vec<String>> {
    let path = ["_matrix", "client", "v3", "rooms", room_id, "messages"];
    let page = user.call(Method::GET, &path, &[("dir", "b"), ("limit", "1000")], None).await?;
    let events = page["chunk"].as_array().cloned().unwrap_or_default();
    let mut bodies: Vec<String> = events
        .iter()
        .filter(|event| event["type"] == "m.room.message")
        .filter_map(|event| event["content"]["body"].as_str().map(str::to_owned))
        .filter(|body| body.starts_with(prefix))
        .collect::<Vec<_>>();
    bodies.reverse();
    Ok(bodies)
}
