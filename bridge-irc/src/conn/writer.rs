//! The writing half of a connection: urgent lines first, the rest through the network's flood bucket, lines
//! already waiting gathered into one write, and a receipt `PING` after lines whose reading is awaited.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use tokio::{
    io::AsyncWriteExt,
    sync::{mpsc, watch},
};

use super::{Outgoing, Traffic, lock, transport::Stream};
use crate::{config::FloodConfig, line::Line, receipt::Receipts};

/// A token bucket: `burst` lines at once, then `rate` per second.
struct Throttle {
    tokens: f64,
    burst: f64,
    rate: f64,
    last: tokio::time::Instant,
}

impl Throttle {
    fn new(config: &FloodConfig) -> Self {
        let burst = f64::from(config.burst.max(1));
        Self { tokens: burst, burst, rate: config.lines_per_second.max(0.01), last: tokio::time::Instant::now() }
    }

    /// Refills the bucket for the time since the last look.
    fn refill(&mut self) {
        let now = tokio::time::Instant::now();
        self.tokens = (self.tokens + (now - self.last).as_secs_f64() * self.rate).min(self.burst);
        self.last = now;
    }

    /// Takes a token if one is there now.
    fn try_take(&mut self) -> bool {
        self.refill();
        let available = self.tokens >= 1.0;
        if available {
            self.tokens -= 1.0;
        }
        available
    }

    async fn take(&mut self) {
        self.refill();
        if self.tokens < 1.0 {
            let wait = Duration::from_secs_f64((1.0 - self.tokens) / self.rate);
            tokio::time::sleep(wait).await;
            self.tokens = 1.0;
            self.last = tokio::time::Instant::now();
        }
        self.tokens -= 1.0;
    }
}

/// The writing half, given back when the connection is frozen for a handover (see [`super::handover`]).
pub(super) type WriteHalf = tokio::io::WriteHalf<Box<dyn Stream>>;

/// Writes the connection's lines until its queues close (`Ok(None)`) or it is frozen: then it stops between two
/// writes and gives its half back; the lines still queued are dropped, with their receipts (they fail, so their
/// senders send them again).
pub(super) async fn write_lines(
    mut writer: WriteHalf,
    mut urgent: mpsc::Receiver<Line>,
    mut normal: mpsc::Receiver<Outgoing>,
    flood: FloodConfig,
    receipts: Arc<Mutex<Receipts>>,
    mut frozen: watch::Receiver<bool>,
    traffic: Traffic,
) -> std::io::Result<Option<WriteHalf>> {
    let mut throttle = Throttle::new(&flood);
    let mut written = Vec::new();
    loop {
        let line = tokio::select! {
            biased;
            changed = frozen.changed() => {
                let freeze = changed.is_err() || *frozen.borrow_and_update();
                if freeze {
                    return Ok(Some(writer));
                }
                continue;
            }
            line = urgent.recv() => line.map(|line| Outgoing { line, receipt: None }),
            line = normal.recv() => {
                throttle.take().await;
                line
            }
        };
        let Some(Outgoing { line, receipt }) = line else { return Ok(None) };
        written.extend(receipt);
        tracing::trace!(?line, "→ IRC");
        match waiting_line(&mut urgent, &mut normal, &mut throttle) {
            None => {
                writer.write_all(line.as_bytes()).await?;
                traffic.wrote(1);
            }
            Some(next) => {
                // Lines already waiting go out in one write (a backlog would otherwise cost a system call per
                // line). The buffer lives only as long as the backlog and grows with it, so an idle connection
                // holds none and a connection's first lines (registration) do not each claim a full chunk.
                let mut buffer = Vec::with_capacity(line.as_bytes().len() + next.line.as_bytes().len());
                buffer.extend_from_slice(line.as_bytes());
                let mut next = Some(next);
                let mut lines = 1;
                while let Some(Outgoing { line, receipt }) = next.take() {
                    lines += 1;
                    tracing::trace!(?line, "→ IRC");
                    buffer.extend_from_slice(line.as_bytes());
                    written.extend(receipt);
                    if buffer.len() < WRITE_CHUNK {
                        next = waiting_line(&mut urgent, &mut normal, &mut throttle);
                    }
                }
                writer.write_all(&buffer).await?;
                traffic.wrote(lines);
            }
        }
        if written.is_empty() {
            continue;
        }
        let ping = lock(&receipts).written(written.drain(..));
        if let Some(token) = ping
            && let Ok(line) = Line::new("PING", &[&token], None)
        {
            writer.write_all(line.as_bytes()).await?;
            traffic.wrote(1);
        }
    }
}

/// Bytes gathered into one write at most.
const WRITE_CHUNK: usize = 16 * 1024;

/// A line that can go out now without waiting: an urgent one, or a normal one the flood bucket has a token for.
fn waiting_line(
    urgent: &mut mpsc::Receiver<Line>,
    normal: &mut mpsc::Receiver<Outgoing>,
    throttle: &mut Throttle,
) -> Option<Outgoing> {
    if let Ok(line) = urgent.try_recv() {
        return Some(Outgoing { line, receipt: None });
    }
    if normal.is_empty() || !throttle.try_take() {
        return None;
    }
    normal.try_recv().ok()
}
