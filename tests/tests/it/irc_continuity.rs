//! Continuity: the shipped `lattice-irc run` holds its IRC connections in an edge process it starts itself, so
//! stopping it (SIGTERM) or killing it (`kill -9`) and starting it again is invisible on IRC — no QUIT, no JOIN,
//! no new connection of the bot or of any puppet — and what IRC said meanwhile reaches Matrix, once and in order,
//! as what Matrix said meanwhile reaches IRC. The same holds when the edge itself is upgraded: a new
//! `lattice-irc edge --take-over` takes the connections over from the running one.
//!
//! An IRC client in the channel watches: every line it sees of the bridge's nicks joining, parting or quitting is
//! a reconnect; the server's own client count (`LUSERS`) must not move.

use std::time::Duration;

use anyhow::{Context as _, ensure};
use lattice_e2e::{
    MatrixUser,
    ircd::{IrcTestClient, Ircd},
};
use rand::{Rng as _, SeedableRng as _};

use crate::irc_crash::{ShippedBridge, room_bodies};

const CHANNEL: &str = "#cont";
/// Matrix users in the portal, each with a puppet on IRC.
const PUPPETS: usize = 3;
/// Lines said on IRC while the bridge is away.
const GAP_LINES: usize = 10;

/// How the bridge goes away, or the edge is replaced.
#[derive(Debug, Clone, Copy)]
enum Away {
    Killed,
    Stopped,
    /// The bridge stays; the edge is upgraded (a new edge process takes the connections over).
    EdgeUpgraded,
}

/// Lines the observer saw of `nicks` joining, parting or quitting (the bridge's connections coming and going).
fn comings_and_goings(observer: &IrcTestClient, nicks: &[String]) -> Vec<String> {
    observer
        .pending()
        .into_iter()
        .filter(|line| {
            let Some((prefix, rest)) = line.strip_prefix(':').and_then(|line| line.split_once(' ')) else {
                return false;
            };
            let nick = prefix.split('!').next().unwrap_or_default();
            let command = rest.split(' ').next().unwrap_or_default();
            nicks.iter().any(|ours| ours.eq_ignore_ascii_case(nick)) && matches!(command, "JOIN" | "PART" | "QUIT")
        })
        .collect()
}

/// The server's count of its clients (`LUSERS`: `255 … :I have N clients and M servers`).
async fn client_count(observer: &IrcTestClient) -> anyhow::Result<usize> {
    // Replies to earlier LUSERS (and the registration burst's) are not the answer.
    while observer.wait_for(Duration::ZERO, |line| line.contains(" 255 ")).await.is_ok() {}
    observer.send("LUSERS").await?;
    let line = observer.wait_for(Duration::from_secs(10), |line| line.contains(" 255 ")).await?;
    let count = line.split(":I have ").nth(1).and_then(|rest| rest.split(' ').next()).and_then(|n| n.parse().ok());
    count.with_context(|| format!("no client count in {line:?}"))
}

/// The portal with `PUPPETS` Matrix users who each said hello (so each has a puppet in the channel) and an IRC
/// observer; returns the bridge's nicks on IRC (bot first).
async fn portal_with_puppets(
    synapse: &lattice_e2e::Synapse,
    observer: &IrcTestClient,
) -> anyhow::Result<(Vec<MatrixUser>, String, Vec<String>)> {
    let alias = format!("#irc_test_{CHANNEL}:localhost");
    let mut users = Vec::new();
    let mut room_id = String::new();
    let mut nicks = vec!["lattice".to_owned()];
    for index in 0..PUPPETS {
        let user = synapse.register_user(&format!("cont{index}"), false).await?;
        room_id = user.join(&alias).await?;
        user.send_text(&room_id, &format!("hello from {index}")).await?;
        let text = format!(" PRIVMSG {CHANNEL} :hello from {index}");
        let line = observer.wait_for(Duration::from_secs(60), |line| line.ends_with(&text)).await?;
        let nick = line.trim_start_matches(':').split('!').next().unwrap_or_default().to_owned();
        nicks.push(nick);
        users.push(user);
    }
    Ok((users, room_id, nicks))
}

/// The bridge goes away `how`; IRC and Matrix talk meanwhile; it comes back, and everything said arrives.
async fn away_and_back(
    synapse: &lattice_e2e::Synapse,
    bridge: &mut ShippedBridge,
    how: Away,
    round: usize,
    observer: &IrcTestClient,
    users: &[MatrixUser],
    room_id: &str,
) -> anyhow::Result<Duration> {
    let started = tokio::time::Instant::now();
    let from_matrix = format!("from matrix {round}");
    let talk = async {
        for number in 0..GAP_LINES {
            observer.send(&format!("PRIVMSG {CHANNEL} :gap {round} {number}")).await?;
        }
        users[1].send_text(room_id, &from_matrix).await
    };
    let event_id = match how {
        Away::Killed | Away::Stopped => {
            if matches!(how, Away::Killed) {
                bridge.process.kill()?;
            } else {
                bridge.process.stop(Duration::from_secs(10));
            }
            let event_id = talk.await?;
            bridge.start_again().await?;
            event_id
        }
        Away::EdgeUpgraded => {
            // Both ways while the new edge takes over.
            let (upgraded, talked) = tokio::join!(bridge.upgrade_edge(), talk);
            upgraded?;
            talked?
        }
    };
    let last = format!("gap {round} {}", GAP_LINES - 1);
    users[0].wait_for_message(room_id, Duration::from_secs(60), &last).await?;
    on_irc(synapse, &users[1], room_id, observer, &from_matrix, &event_id).await?;
    let bodies = room_bodies(&users[0], room_id, &format!("gap {round} ")).await?;
    let expected: Vec<String> = (0..GAP_LINES).map(|number| format!("gap {round} {number}")).collect();
    ensure!(bodies == expected, "IRC lines said while the bridge was {how:?} reached Matrix as {bodies:?}");
    Ok(started.elapsed())
}

async fn irc_sees_nothing_of_restarts(ircd: Ircd, server: &str) -> anyhow::Result<()> {
    let (synapse, mut bridge) = ShippedBridge::start(&ircd).await?;
    let observer = IrcTestClient::connect(ircd.port(), "observer").await?;
    observer.join(CHANNEL).await?;
    let (users, room_id, nicks) = portal_with_puppets(&synapse, &observer).await?;
    let edge = bridge.edge_pid().context("the bridge started no edge")?;
    let clients = client_count(&observer).await?;
    let seen_before = comings_and_goings(&observer, &nicks);
    println!("{server}: bridge nicks {nicks:?}, {clients} clients on the server, edge pid {edge}");

    let mut edge = edge;
    let rounds = [Away::Killed, Away::Stopped, Away::EdgeUpgraded, Away::Killed];
    for (round, how) in rounds.into_iter().enumerate() {
        let took = away_and_back(&synapse, &mut bridge, how, round, &observer, &users, &room_id).await?;
        let seen = comings_and_goings(&observer, &nicks);
        let count = client_count(&observer).await?;
        println!(
            "{server}: {how:?}: all said meanwhile arrived {took:.1?} after it began, {} joins/parts/quits of the \
             bridge's nicks, {count} clients",
            seen.len() - seen_before.len()
        );
        ensure!(
            seen == seen_before,
            "IRC saw the bridge's connections come and go: {seen:?}; edge log: {}",
            bridge.edge_log()
        );
        ensure!(count == clients, "the server counts {count} clients, {clients} before");
        if matches!(how, Away::EdgeUpgraded) {
            let upgraded = bridge.edge_pid().context("no edge after the upgrade")?;
            ensure!(upgraded != edge, "the edge was not replaced");
            edge = upgraded;
        }
        ensure!(bridge.edge_pid() == Some(edge), "the edge was replaced");
    }
    // The puppets are the bridge's again: they still speak for their Matrix users.
    let line = said_on_irc(&synapse, &users[2], &room_id, &observer, "still here").await;
    let line =
        line.with_context(|| format!("bridge log: {}\nedge log: {}", bridge.process.log_tail(60), bridge.edge_log()))?;
    ensure!(line.starts_with(&format!(":{}!", nicks[3])), "sent by another nick: {line}");
    Ok(())
}

/// `user` says `body` in the portal; the line IRC saw (see [`on_irc`]).
async fn said_on_irc(
    synapse: &lattice_e2e::Synapse,
    user: &MatrixUser,
    room_id: &str,
    observer: &IrcTestClient,
    body: &str,
) -> anyhow::Result<String> {
    let event_id = user.send_text(room_id, body).await?;
    on_irc(synapse, user, room_id, observer, body, &event_id).await
}

/// Waits for the line of `user`'s message `body` (event `event_id`) on IRC. Synapse can strand an event created
/// while its appservice recoverer finishes catching up with a bridge that was down (see `crash_tally`): such an
/// event never reaches the bridge, so, found among Synapse's unsent events, it is said once more.
async fn on_irc(
    synapse: &lattice_e2e::Synapse,
    user: &MatrixUser,
    room_id: &str,
    observer: &IrcTestClient,
    body: &str,
    event_id: &str,
) -> anyhow::Result<String> {
    let text = format!(" PRIVMSG {CHANNEL} :{body}");
    match observer.wait_for(Duration::from_secs(120), |line| line.ends_with(&text)).await {
        Ok(line) => Ok(line),
        Err(_) if synapse.unsent_appservice_events()?.contains(event_id) => {
            println!("Synapse never sent {event_id} to the bridge (stranded by its appservice recoverer): said again");
            let again = format!("{body}, again");
            user.send_text(room_id, &again).await?;
            let text = format!(" PRIVMSG {CHANNEL} :{again}");
            observer.wait_for(Duration::from_secs(60), |line| line.ends_with(&text)).await
        }
        Err(error) => Err(error),
    }
}

#[tokio::test]
async fn ngircd_sees_no_quit_and_no_reconnect_across_bridge_restarts_and_an_edge_upgrade() -> anyhow::Result<()> {
    irc_sees_nothing_of_restarts(Ircd::ngircd().await?, "ngircd").await
}

#[tokio::test]
async fn inspircd_sees_no_quit_and_no_reconnect_across_bridge_restarts_and_an_edge_upgrade() -> anyhow::Result<()> {
    irc_sees_nothing_of_restarts(Ircd::inspircd().await?, "InspIRCd").await
}

/// IRC talks at a steady pace while the bridge is killed at a random moment and started again: every line reaches
/// Matrix once and in order — the edge heard them all and kept what the bridge had not handled.
#[tokio::test]
async fn every_irc_line_reaches_matrix_once_in_order_across_kill_9() -> anyhow::Result<()> {
    const LINES: usize = 600;
    let seed = std::env::var("LATTICE_CRASH_SEED").ok().and_then(|seed| seed.parse().ok()).unwrap_or_else(rand::random);
    println!("IRC → Matrix: seed {seed} (LATTICE_CRASH_SEED={seed} repeats the kill point)");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let ircd = Ircd::ngircd().await?;
    let (synapse, mut bridge) = ShippedBridge::start(&ircd).await?;
    let talker = IrcTestClient::connect(ircd.port(), "talker").await?;
    talker.join(CHANNEL).await?;
    let reader = synapse.register_user("reader", false).await?;
    let room_id = reader.join(&format!("#irc_test_{CHANNEL}:localhost")).await?;
    let talking = {
        let talker = talker.clone();
        tokio::spawn(async move {
            for number in 0..LINES {
                talker.send(&format!("PRIVMSG {CHANNEL} :talk {number}")).await?;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            anyhow::Ok(())
        })
    };
    tokio::time::sleep(Duration::from_millis(rng.random_range(2_000..5_000))).await;
    bridge.kill_and_restart().await?;
    talking.await??;
    let last = format!("talk {}", LINES - 1);
    reader.wait_for_message(&room_id, Duration::from_secs(120), &last).await?;
    let bodies = room_bodies(&reader, &room_id, "talk ").await?;
    let numbers: Vec<usize> = bodies.iter().filter_map(|body| body.strip_prefix("talk ")?.parse().ok()).collect();
    let expected: Vec<usize> = (0..LINES).collect();
    let missing = expected.iter().filter(|number| !numbers.contains(number)).count();
    println!("IRC → Matrix: {LINES} said, {} arrived, {missing} missing", numbers.len());
    ensure!(numbers == expected, "lost, doubled or out of order: {numbers:?}");
    Ok(())
}

/// The edge itself is killed: the bridge starts a new one and opens every connection it had on it — the bot and
/// each puppet rejoin at once, not on their users' next message — and both ways work again.
#[tokio::test]
async fn a_killed_edge_is_replaced_and_every_puppet_comes_back_at_once() -> anyhow::Result<()> {
    let ircd = Ircd::ngircd().await?;
    let (synapse, bridge) = ShippedBridge::start(&ircd).await?;
    let observer = IrcTestClient::connect(ircd.port(), "observer").await?;
    observer.join(CHANNEL).await?;
    let (users, room_id, nicks) = portal_with_puppets(&synapse, &observer).await?;
    let edge = bridge.edge_pid().context("the bridge started no edge")?;
    let joins = |observer: &IrcTestClient| {
        comings_and_goings(observer, &nicks).into_iter().filter(|line| line.contains(" JOIN ")).count()
    };
    let joined_before = joins(&observer);
    let killed = std::process::Command::new("kill").args(["-KILL", &edge.to_string()]).status()?;
    ensure!(killed.success(), "kill -9 of the edge failed");
    let started = tokio::time::Instant::now();
    while joins(&observer) < joined_before + nicks.len() {
        ensure!(
            started.elapsed() < Duration::from_secs(60),
            "not everyone rejoined: {:?}; bridge log: {}",
            comings_and_goings(&observer, &nicks),
            bridge.process.log_tail(40)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    println!("edge killed: the bot and {PUPPETS} puppets back in {:.1?}", started.elapsed());
    ensure!(bridge.edge_pid().is_some_and(|pid| pid != edge), "no new edge");
    observer.send(&format!("PRIVMSG {CHANNEL} :after the edge")).await?;
    users[0].wait_for_message(&room_id, Duration::from_secs(30), "after the edge").await?;
    users[1].send_text(&room_id, "matrix after the edge").await?;
    let text = format!(" PRIVMSG {CHANNEL} :matrix after the edge");
    observer.wait_for(Duration::from_secs(30), |line| line.ends_with(&text)).await?;
    Ok(())
}
