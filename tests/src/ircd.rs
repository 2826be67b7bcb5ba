//! Real IRC servers for one test ([`Ircd`]: ngircd, the plain-IRC server), and a raw IRC client
//! over a TCP socket ([`IrcTestClient`]) that sees exactly what an IRC user would.

use std::{
    collections::VecDeque,
    process::Command,
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use tokio::{
    io::{AsyncBufReadExt, AsyncWriteExt, BufReader},
    net::{TcpStream, tcp::OwnedWriteHalf},
    sync::{Mutex, Notify},
};

use crate::{ServerProcess, StateDir, free_port};

/// How long an IRC server may take to accept connections.
const START_DEADLINE: Duration = Duration::from_secs(20);

/// An IRC server on 127.0.0.1 with its own folder and port; stopped when dropped.
#[derive(Debug)]
pub struct Ircd {
    // Declared before `dir`: the process stops before its folder is removed.
    process: Option<ServerProcess>,
    dir: StateDir,
    port: u16,
}

impl Ircd {
    /// Starts ngircd (`-n`, foreground) with every flood limit off and nicks up to 30 characters.
    pub async fn ngircd() -> anyhow::Result<Self> {
        let dir = StateDir::new("ngircd-")?;
        let port = free_port();
        let config = format!(
            "[Global]\nName = irc.localhost\nInfo = Lattice test server\nListen = 127.0.0.1\nPorts = {port}\n\
             MotdPhrase = \"Lattice test\"\n\
             [Limits]\nMaxConnections = 0\nMaxConnectionsIP = 0\nMaxJoins = 0\nMaxNickLength = 30\n\
             MaxPenaltyTime = 0\nPingTimeout = 120\nPongTimeout = 60\n\
             [Options]\nDNS = no\nIdent = no\nPAM = no\n"
        );
        std::fs::write(dir.join("ngircd.conf"), config).context("writing ngircd.conf")?;
        let mut ircd = Self { process: None, dir, port };
        ircd.start().await?;
        Ok(ircd)
    }

    /// The port clients connect to.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Starts the server (again, after [`Ircd::stop`]) on the same port and waits until it accepts.
    pub async fn start(&mut self) -> anyhow::Result<()> {
        let mut command = Command::new("ngircd");
        command.arg("-n").arg("-f").arg(self.dir.join("ngircd.conf"));
        let process = ServerProcess::spawn("ngircd", &mut command, &self.dir.join("ngircd.log"))?;
        self.process = Some(process);
        let deadline = Instant::now() + START_DEADLINE;
        loop {
            if TcpStream::connect(("127.0.0.1", self.port)).await.is_ok() {
                return Ok(());
            }
            if let Some(status) = self.process.as_mut().and_then(ServerProcess::exit_status) {
                bail!("ngircd exited with {status}: {}", self.log_tail());
            }
            if Instant::now() > deadline {
                bail!("ngircd did not accept connections within {START_DEADLINE:?}: {}", self.log_tail());
            }
            // Polling a port that has no event to wait on.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Stops the server; every client connection drops.
    pub fn stop(&mut self) {
        if let Some(mut process) = self.process.take() {
            process.stop(Duration::from_secs(5));
        }
    }

    fn log_tail(&self) -> String {
        self.process.as_ref().map(|process| process.log_tail(20)).unwrap_or_default()
    }
}

/// A raw IRC client: registers with a nick, then sends lines and waits for lines it receives.
#[derive(Clone)]
pub struct IrcTestClient {
    nick: String,
    writer: Arc<Mutex<OwnedWriteHalf>>,
    lines: Arc<std::sync::Mutex<VecDeque<String>>>,
    arrived: Arc<Notify>,
}

impl std::fmt::Debug for IrcTestClient {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.debug_struct("IrcTestClient").field("nick", &self.nick).finish_non_exhaustive()
    }
}

impl IrcTestClient {
    /// Connects to 127.0.0.1:`port` as `nick` and waits for the welcome (001).
    pub async fn connect(port: u16, nick: &str) -> anyhow::Result<Self> {
        let stream = TcpStream::connect(("127.0.0.1", port)).await.context("connecting to the IRC server")?;
        let (reader, writer) = stream.into_split();
        let client = Self {
            nick: nick.to_owned(),
            writer: Arc::new(Mutex::new(writer)),
            lines: Arc::default(),
            arrived: Arc::default(),
        };
        let (lines, arrived, writer) = (client.lines.clone(), client.arrived.clone(), client.writer.clone());
        // Reads promptly, so the server never drops us for unread output; answers PINGs.
        tokio::spawn(async move {
            let mut reader = BufReader::new(reader).lines();
            while let Ok(Some(line)) = reader.next_line().await {
                if let Some(token) = line.strip_prefix("PING ") {
                    let _ = writer.lock().await.write_all(format!("PONG {token}\r\n").as_bytes()).await;
                    continue;
                }
                lines.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).push_back(line);
                arrived.notify_waiters();
            }
        });
        client.send(&format!("NICK {nick}")).await?;
        client.send(&format!("USER {nick} 0 * :Lattice test user")).await?;
        client.wait_for(Duration::from_secs(30), |line| line.split(' ').nth(1) == Some("001")).await?;
        Ok(client)
    }

    /// The nick.
    pub fn nick(&self) -> &str {
        &self.nick
    }

    /// Sends one raw line (CR LF is added).
    pub async fn send(&self, line: &str) -> anyhow::Result<()> {
        self.writer.lock().await.write_all(format!("{line}\r\n").as_bytes()).await.context("writing to IRC")
    }

    /// Joins `channel` and waits for the end of its names list.
    pub async fn join(&self, channel: &str) -> anyhow::Result<()> {
        self.send(&format!("JOIN {channel}")).await?;
        self.wait_for(Duration::from_secs(30), |line| line.split(' ').nth(1) == Some("366")).await?;
        Ok(())
    }

    /// Waits for the first line not taken yet that `predicate` holds for, and takes it.
    pub async fn wait_for(&self, timeout: Duration, predicate: impl Fn(&str) -> bool) -> anyhow::Result<String> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.arrived.notified();
            {
                let mut lines = self.lines.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
                if let Some(index) = lines.iter().position(|line| predicate(line)) {
                    return Ok(lines.remove(index).expect("the index was just found"));
                }
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                let lines = self.lines.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
                let seen: Vec<&String> = lines.iter().rev().take(20).collect();
                bail!("{} saw no matching IRC line within {timeout:?}; last lines: {seen:#?}", self.nick);
            }
        }
    }

    /// Every line received and not taken yet.
    pub fn pending(&self) -> Vec<String> {
        self.lines.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).iter().cloned().collect()
    }
}
