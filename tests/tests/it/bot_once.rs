//! The bridge bot answers a command once, also when the bridge is killed (`kill -9`) right after answering it.
//!
//! A handled queue item leaves the queue in a group commit up to 250 ms later; killed before that, the restarted
//! bridge handles the command again. Its answer carries a transaction ID derived from the command's event, so the
//! homeserver answers the second send with the first notice and the room shows one. Runs the shipped `lattice-irc`
//! (sample config, no IRC network) against a real Synapse.

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use anyhow::{Context as _, bail, ensure};
use lattice_e2e::{MatrixUser, ServerProcess, Synapse, free_port};
use reqwest::Method;
use serde_json::{Value, json};

use crate::binaries::{build_binary, run, write_config};

const WAIT: Duration = Duration::from_secs(60);
/// The sample config's bot.
const BOT: &str = "@ircbot:localhost";
/// Rounds of command, kill and restart, until one kill lands before the command's removal was committed.
const MAX_ROUNDS: usize = 5;

/// `lattice-irc run` on one config and store, started again after each kill; each run logs to its own file.
struct Bridge {
    binary: PathBuf,
    config: PathBuf,
    dir: PathBuf,
    runs: usize,
    process: ServerProcess,
}

impl Bridge {
    async fn start(binary: PathBuf, config: PathBuf, dir: &Path) -> anyhow::Result<Self> {
        let process = spawn(&binary, &config, &dir.join("lattice-irc-1.log")).await?;
        Ok(Self { binary, config, dir: dir.to_owned(), runs: 1, process })
    }

    /// `kill -9`, then the same binary again on the same config and store; returns the new run's log.
    async fn kill_and_restart(&mut self) -> anyhow::Result<String> {
        self.process.kill()?;
        self.runs += 1;
        let log = self.dir.join(format!("lattice-irc-{}.log", self.runs));
        self.process = spawn(&self.binary, &self.config, &log).await?;
        Ok(std::fs::read_to_string(&log)?)
    }
}

/// Starts `lattice-irc run` and waits until the homeserver has reached it (its start-up ping succeeded).
async fn spawn(binary: &Path, config: &Path, log: &Path) -> anyhow::Result<ServerProcess> {
    let mut command = Command::new(binary);
    command.arg("run").arg("-c").arg(config).env("RUST_LOG", "info");
    let mut process = ServerProcess::spawn("lattice-irc", &mut command, log)?;
    let deadline = tokio::time::Instant::now() + WAIT;
    while !std::fs::read_to_string(log).unwrap_or_default().contains("appservice ping succeeded") {
        ensure!(process.exit_status().is_none(), "lattice-irc exited: {}", process.log_tail(40));
        ensure!(tokio::time::Instant::now() < deadline, "no successful ping within {WAIT:?}: {}", process.log_tail(40));
        // Polling another process's log: there is nothing to be notified by.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(process)
}

/// How many rooms' Matrix queues had items left when a run started, from its JSON log's `appservice listening`.
fn resumed_matrix(log: &str) -> anyhow::Result<u64> {
    log.lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .find(|entry| entry["fields"]["message"] == "appservice listening")
        .and_then(|entry| entry["fields"]["resumed_matrix"].as_u64())
        .with_context(|| format!("no `appservice listening` with `resumed_matrix` in the log:\n{log}"))
}

/// The IRC sample config as [`write_config`] makes it, logging JSON, so the test can read the log's fields.
fn write_json_logging_config(dir: &Path, homeserver: &str, port: u16) -> anyhow::Result<PathBuf> {
    let path = write_config(dir, homeserver, port)?;
    let mut config: serde_yaml::Value = serde_yaml::from_str(&std::fs::read_to_string(&path)?)?;
    config["logging"]["format"] = "json".into();
    std::fs::write(&path, serde_yaml::to_string(&config)?)?;
    Ok(path)
}

fn is_bot_message(event: &Value) -> bool {
    event["type"] == "m.room.message" && event["sender"] == BOT
}

/// The bodies of the bot's messages in `room`, oldest first, as `/messages` gives them.
async fn bot_messages(user: &MatrixUser, room: &str) -> anyhow::Result<Vec<String>> {
    let path = ["_matrix", "client", "v3", "rooms", room, "messages"];
    let page = user.call(Method::GET, &path, &[("dir", "f"), ("limit", "1000")], None).await?;
    let chunk = page["chunk"].as_array().context("no chunk in the /messages answer")?;
    Ok(chunk
        .iter()
        .filter(|event| is_bot_message(event))
        .filter_map(|e| e["content"]["body"].as_str())
        .map(Into::into)
        .collect())
}

/// What one round came to.
struct Round {
    /// The restarted bridge found items of the room still queued: the kill came before the command's removal was
    /// committed (removals commit in order, the command's last).
    handled_again: bool,
    /// How many times the command's answer is in the room.
    answers: usize,
}

/// A new admin room; `help` in it; `kill -9` as soon as the answer shows; a restart; `version` as a sentinel, handled
/// after anything the restart handled again in that room.
async fn round(bridge: &mut Bridge, admin: &MatrixUser) -> anyhow::Result<Round> {
    let room = admin.create_room(json!({"preset": "trusted_private_chat", "is_direct": true, "invite": [BOT]})).await?;
    admin
        .wait_for_event(&room, WAIT, |event| {
            is_bot_message(event) && event["content"]["body"].as_str().is_some_and(|body| body.starts_with("Hello!"))
        })
        .await
        .context("waiting for the bot's welcome in the new admin room")?;
    admin.send_text(&room, "help").await?;
    let answer = admin.wait_for_event(&room, WAIT, is_bot_message).await.context("waiting for the answer to `help`")?;
    let log = bridge.kill_and_restart().await?;
    let handled_again = resumed_matrix(&log)? > 0;

    admin.send_text(&room, "version").await?;
    let is_version = |event: &Value| {
        is_bot_message(event)
            && event["content"]["body"].as_str().is_some_and(|body| body.starts_with("Lattice IRC bridge, version"))
    };
    admin.wait_for_event(&room, WAIT, is_version).await.context("waiting for the answer to `version`")?;
    let answer = answer["content"]["body"].as_str().context("an answer without a body")?;
    let answers = bot_messages(admin, &room).await?.iter().filter(|body| *body == answer).count();
    Ok(Round { handled_again, answers })
}

#[tokio::test]
async fn a_command_answered_right_before_kill_9_is_answered_once_after_the_restart() -> anyhow::Result<()> {
    let binary = build_binary("lattice-bridge-irc", "lattice-irc")?;
    let dir = tempfile::tempdir()?;
    let port = free_port();
    let config = write_json_logging_config(dir.path(), "http://127.0.0.1:9", port)?;
    run(&binary, &["generate-registration", "-c", config.to_str().context("a UTF-8 temp path")?])?;
    let synapse = Synapse::start(&[dir.path().join("registration.yaml")]).await?;
    write_json_logging_config(dir.path(), synapse.url(), port)?;
    // The sample config's bridge admin: every command is open to it.
    let admin = synapse.register_user("admin", false).await?;

    let mut bridge = Bridge::start(binary, config, dir.path()).await?;
    for number in 1..=MAX_ROUNDS {
        let Round { handled_again, answers } = round(&mut bridge, &admin).await?;
        ensure!(answers == 1, "round {number}: the command was answered {answers} times");
        if handled_again {
            eprintln!("round {number}: killed before the command left the queue; handled again, answered once");
            return Ok(());
        }
        eprintln!("round {number}: the command had left the queue before the kill; again");
    }
    bail!("in {MAX_ROUNDS} rounds no kill landed before the command's removal was committed: nothing was tested")
}
