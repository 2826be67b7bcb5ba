//! Heisenbridge (PyPI, `scripts/install.sh heisenbridge`), the bouncer-style IRC bridge P3 compares against, on the
//! same Synapse and ngircd: its own registration (users `@hb_…`, apart from ours), an owner who opens a network and
//! joins a channel through its control room, as its users do.

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use lattice_e2e::{MatrixUser, ServerProcess, Synapse, cache_dir, free_port};
use serde_json::Value;

/// How long Heisenbridge may take to answer a step of its setup.
const WAIT: Duration = Duration::from_secs(60);
const BOT: &str = "@heisenbridge:localhost";

/// Heisenbridge's Python: `$LATTICE_HEISENBRIDGE_PYTHON`, or the venv `scripts/install.sh heisenbridge` makes.
pub(crate) fn python() -> Option<PathBuf> {
    let python = match std::env::var_os("LATTICE_HEISENBRIDGE_PYTHON") {
        Some(path) if !path.is_empty() => PathBuf::from(path),
        _ => cache_dir().join("heisenbridge-venv/bin/python"),
    };
    python.exists().then_some(python)
}

/// Heisenbridge's registration, written before Synapse starts.
pub(crate) struct HeisenbridgeSetup {
    python: PathBuf,
    pub(crate) registration: PathBuf,
    port: u16,
}

impl HeisenbridgeSetup {
    /// Writes the registration into `dir`.
    pub(crate) fn new(python: PathBuf, dir: &Path) -> anyhow::Result<Self> {
        let port = free_port();
        let token = || format!("{:032x}", rand::random::<u128>());
        // Its namespace regex must be a plain prefix with a separator; it names the puppets.
        let text = format!(
            "id: heisenbridge\nurl: http://127.0.0.1:{port}\nas_token: {}\nhs_token: {}\nrate_limited: false\n\
             sender_localpart: heisenbridge\nnamespaces:\n  users:\n    - regex: '@hb_.*'\n      exclusive: true\n  \
             aliases: []\n  rooms: []\n",
            token(),
            token()
        );
        let registration = dir.join("heisenbridge.yaml");
        std::fs::write(&registration, text).context("writing Heisenbridge's registration")?;
        Ok(Self { python, registration, port })
    }

    /// Starts it with `owner` as its owner and waits until it listens.
    pub(crate) async fn start(&self, synapse: &Synapse, owner: &str, log: &Path) -> anyhow::Result<ServerProcess> {
        let mut command = Command::new(&self.python);
        command.args(["-m", "heisenbridge", "-c"]).arg(&self.registration);
        command.args(["-o", owner, "-l", "127.0.0.1", "-p", &self.port.to_string(), synapse.url()]);
        let mut process = ServerProcess::spawn("heisenbridge", &mut command, log)?;
        let started = Instant::now();
        while tokio::net::TcpStream::connect(("127.0.0.1", self.port)).await.is_err() {
            if let Some(status) = process.exit_status() {
                bail!("Heisenbridge exited with {status}: {}", process.log_tail(30));
            }
            if started.elapsed() > WAIT {
                bail!("Heisenbridge did not listen within {WAIT:?}: {}", process.log_tail(30));
            }
            // Polling a starting process that has nothing to wait on.
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(process)
    }
}

/// The owner opens the network on `irc_port` through the control room, connects as `nick` and joins `channel`;
/// returns the channel's room.
pub(crate) async fn join_channel(
    owner: &MatrixUser,
    irc_port: u16,
    nick: &str,
    channel: &str,
) -> anyhow::Result<String> {
    // On start it invites its owner to a control room and greets them there with the command list.
    let control = owner.wait_for_invite(WAIT).await.context("Heisenbridge inviting its owner")?;
    owner.join(&control).await?;
    owner.wait_for_event(&control, WAIT, from_bot).await.context("Heisenbridge greeting its owner")?;
    command(owner, &control, "ADDNETWORK bench").await?;
    command(owner, &control, &format!("ADDSERVER bench 127.0.0.1 {irc_port}")).await?;
    owner.send_text(&control, "OPEN bench").await?;
    let network = owner.wait_for_invite(WAIT).await.context("Heisenbridge opening the network room")?;
    owner.join(&network).await?;
    command(owner, &network, &format!("NICK {nick}")).await?;
    owner.send_text(&network, "CONNECT").await?;
    owner
        // ngircd's welcome (001), which Heisenbridge shows in the network room.
        .wait_for_event(&network, WAIT, |event| from_bot(event) && body(event).contains("Internet Relay Network"))
        .await
        .context("Heisenbridge connecting to IRC")?;
    owner.send_text(&network, &format!("JOIN {channel}")).await?;
    let room = owner.wait_for_invite(WAIT).await.context("Heisenbridge opening the channel room")?;
    owner.join(&room).await?;
    Ok(room)
}

fn from_bot(event: &Value) -> bool {
    event["type"] == "m.room.message" && event["sender"] == BOT
}

fn body(event: &Value) -> &str {
    event["content"]["body"].as_str().unwrap_or_default()
}

/// Sends a command to the bot and waits for its answer.
async fn command(owner: &MatrixUser, room: &str, text: &str) -> anyhow::Result<()> {
    owner.send_text(room, text).await?;
    owner.wait_for_event(room, WAIT, from_bot).await.with_context(|| format!("Heisenbridge answering {text:?}"))?;
    Ok(())
}
