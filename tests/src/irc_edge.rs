//! The IRC bridge's edge as a test or benchmark drives it from outside: an upgrade the way an operator runs it
//! (`lattice-irc edge --take-over` on the running edge's socket) and the edge's process ID from the file beside its
//! socket.

use std::{
    os::unix::process::CommandExt as _,
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::ensure;

/// The process ID the edge on `socket` wrote beside it (`edge.sock` → `edge.pid`).
pub fn edge_pid(socket: &Path) -> Option<u32> {
    std::fs::read_to_string(socket.with_extension("pid")).ok()?.trim().parse().ok()
}

/// Starts `binary edge --take-over` on `socket` (its output appended to the log beside it, in its own process
/// group, reaped when it ends) and waits until it has taken over: its pid file names it. Returns its process ID
/// and how long the take-over took.
pub async fn take_over_edge(binary: &Path, socket: &Path) -> anyhow::Result<(u32, Duration)> {
    let started = Instant::now();
    let log = std::fs::OpenOptions::new().create(true).append(true).open(socket.with_extension("log"))?;
    let mut child = Command::new(binary)
        .args(["edge", "--take-over", "--linger-secs", "300", "--socket"])
        .arg(socket)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .process_group(0)
        .spawn()?;
    let pid = child.id();
    std::thread::spawn(move || child.wait());
    while edge_pid(socket) != Some(pid) {
        ensure!(started.elapsed() < Duration::from_secs(60), "the new edge (pid {pid}) did not take over in 60 s");
        // The new edge writes its pid file once it listens; nothing to be notified by.
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Ok((pid, started.elapsed()))
}
