//! Finding the edge on its socket, or starting it: the same binary as the bridge, `edge` subcommand, in its own
//! process group (a Ctrl-C or a signal to the bridge's group does not reach it) with its output in a log file
//! beside the socket.

use std::{
    os::unix::process::CommandExt as _,
    path::PathBuf,
    process::{Command, Stdio},
    time::Duration,
};

use tokio::net::UnixStream;

use super::{link::EdgeError, wire::Link};

/// How long a started edge may take to listen.
const START_TIMEOUT: Duration = Duration::from_secs(15);

/// How to reach the edge, and how to start it.
#[derive(Debug, Clone)]
pub(crate) struct EdgeCommand {
    /// Its Unix socket.
    pub(crate) socket: PathBuf,
    /// The program to start it with (`lattice-irc`).
    pub(crate) binary: PathBuf,
    /// Seconds it keeps the connections with no bridge attached.
    pub(crate) linger_secs: u64,
    /// Where its ident server listens, if it runs one.
    pub(crate) ident_bind: Option<String>,
    /// What it logs (`RUST_LOG`), unless the environment says: the bridge's `logging.filter`.
    pub(crate) log_filter: Option<String>,
}

impl EdgeCommand {
    /// Where the edge's output goes.
    pub(crate) fn log_path(&self) -> PathBuf {
        self.socket.with_extension("log")
    }

    fn start(&self) -> std::io::Result<()> {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.log_path())?;
        let mut command = Command::new(&self.binary);
        command
            .arg("edge")
            .arg("--socket")
            .arg(&self.socket)
            .arg("--linger-secs")
            .arg(self.linger_secs.to_string())
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .process_group(0);
        if let Some(bind) = &self.ident_bind {
            command.arg("--ident-bind").arg(bind);
        }
        if std::env::var_os("RUST_LOG").is_none()
            && let Some(filter) = &self.log_filter
        {
            command.env("RUST_LOG", filter);
        }
        let mut child = command.spawn()?;
        tracing::info!(pid = child.id(), socket = %self.socket.display(), log = %self.log_path().display(),
            "started the IRC edge");
        // Reaped when it exits, so it never lingers as a zombie of the bridge.
        std::thread::spawn(move || child.wait());
        Ok(())
    }
}

/// A link to the edge on `command.socket`, starting the edge if nobody listens there.
pub(crate) async fn connect_or_start(command: &EdgeCommand) -> Result<Link, EdgeError> {
    let unreachable = |source| EdgeError::Unreachable { socket: command.socket.clone(), source };
    if let Ok(stream) = UnixStream::connect(&command.socket).await {
        return Ok(Link::new(stream));
    }
    if let Some(parent) = command.socket.parent() {
        std::fs::create_dir_all(parent).map_err(unreachable)?;
    }
    command.start().map_err(unreachable)?;
    let deadline = tokio::time::Instant::now() + START_TIMEOUT;
    loop {
        match UnixStream::connect(&command.socket).await {
            Ok(stream) => return Ok(Link::new(stream)),
            Err(error) if tokio::time::Instant::now() >= deadline => return Err(unreachable(error)),
            // The edge binds its socket a moment after it starts; nothing to be notified by.
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
}

/// A link to an edge that listens on `command.socket` before `deadline` (a successor taking over), or `None`.
pub(crate) async fn connect_waiting(command: &EdgeCommand, deadline: tokio::time::Instant) -> Option<Link> {
    while tokio::time::Instant::now() < deadline {
        if let Ok(stream) = UnixStream::connect(&command.socket).await {
            return Some(Link::new(stream));
        }
        // Nothing to be notified by: the successor binds the socket when it is ready.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    None
}
