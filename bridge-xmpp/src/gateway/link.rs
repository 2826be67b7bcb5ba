//! The [XEP-0114](https://xmpp.org/extensions/xep-0114.html) component connection and its supervisor.
//!
//! tokio-xmpp's component stream simply ends on any error, and a half-open TCP connection never errors at all (the
//! top complaint about matrix-bifrost, #114 and #338). The supervisor therefore owns the connection: it reconnects
//! with jittered exponential backoff, pings the server ([XEP-0199](https://xmpp.org/extensions/xep-0199.html)) to
//! catch silent drops, and publishes each connection as a new [`LinkState::generation`] so the gateway can rejoin
//! its MUCs. Stanzas queued for a connection that died are dropped, not sent on the next one: whoever queued them
//! waits for an answer that never comes and retries after the gateway has rejoined.
//!
//! The supervisor counts what goes through it in the runtime's metrics, under the component's domain: stanzas
//! received and sent (pings included), reconnects, and the link's state (role `component`) at each scrape.

use std::{sync::Arc, time::Duration};

use futures::{SinkExt as _, StreamExt as _};
use lattice_bridge_core::metrics::{ConnectionState, RemoteMetrics};
use tokio::{
    io::BufStream,
    net::TcpStream,
    sync::{mpsc, watch},
    time::Instant,
};
use tokio_xmpp::{
    Component, Stanza,
    connect::{DnsConfig, ServerConnector},
    parsers::{iq::Iq, jid::Jid, ping::Ping},
    xmlstream::{PendingFeaturesRecv, StreamHeader, Timeouts, initiate_stream},
};

use crate::{
    config::ComponentConfig,
    gateway::skim::{DropStanza, SkimmedStream},
};

/// How many outgoing stanzas may wait for the connection before senders wait too.
const OUTBOUND_CAPACITY: usize = 1024;
/// Waiting stanzas written together at most, so a backlog still lets the connection's reads and pings take turns.
const MAX_STANZAS_PER_WRITE: usize = 64;

/// The state of the component connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct LinkState {
    /// Counts connections: a new value means a new stream, on which every MUC must be joined again.
    pub generation: u64,
    /// Whether the handshake succeeded and the stream is up.
    pub online: bool,
}

/// The component is not connected; try again after it reconnects.
#[derive(Debug, Clone, thiserror::Error)]
#[error("the XMPP component is not connected to {server}")]
pub(crate) struct Offline {
    server: String,
}

/// A handle on the supervised connection: send stanzas, watch its state. Cheap to clone.
#[derive(Debug, Clone)]
pub(crate) struct Link {
    outbound: mpsc::Sender<(u64, Stanza)>,
    state: watch::Receiver<LinkState>,
    server: String,
    stop: Arc<watch::Sender<bool>>,
}

impl Link {
    /// The connection's current state.
    pub(crate) fn state(&self) -> LinkState {
        *self.state.borrow()
    }

    /// A receiver that sees every change of state.
    pub(crate) fn subscribe(&self) -> watch::Receiver<LinkState> {
        self.state.clone()
    }

    /// Queues a stanza on the current connection. Fails at once while offline.
    pub(crate) async fn send(&self, stanza: impl Into<Stanza>) -> Result<(), Offline> {
        let state = self.state();
        let offline = || Offline { server: self.server.clone() };
        if !state.online {
            return Err(offline());
        }
        self.outbound.send((state.generation, stanza.into())).await.map_err(|_| offline())
    }

    /// Closes the connection for good (a bridge shutting down): the stream is ended cleanly and not reconnected.
    pub(crate) fn close(&self) {
        self.stop.send_replace(true);
    }

    /// Whether [`Link::close`] was called.
    pub(crate) fn is_closed(&self) -> bool {
        *self.stop.borrow()
    }
}

/// Starts the supervisor; incoming stanzas go to `inbound`, in the order the server sent them, except those
/// `drop_stanza` picks, which are skimmed off the stream unparsed (see [`crate::gateway::skim`]).
pub(crate) fn spawn(
    config: &ComponentConfig,
    secret: String,
    inbound: mpsc::Sender<Stanza>,
    drop_stanza: DropStanza,
    metrics: RemoteMetrics,
) -> Link {
    let (outbound, outbound_receiver) = mpsc::channel(OUTBOUND_CAPACITY);
    let (state_sender, state) = watch::channel(LinkState::default());
    report_state(&metrics, &config.domain, state.clone());
    let (stop, stopped) = watch::channel(false);
    let supervisor = Supervisor {
        domain: config.domain.clone(),
        server: config.server.clone(),
        secret,
        ping_interval: Duration::from_secs(config.ping_interval_secs),
        response_timeout: Duration::from_secs(config.response_timeout_secs),
        max_delay: Duration::from_secs(config.max_reconnect_delay_secs),
        ping_target: ping_target(&config.domain),
        drop_stanza,
        metrics,
    };
    tokio::spawn(supervisor.run(outbound_receiver, state_sender, inbound, stopped));
    Link { outbound, state, server: config.server.clone(), stop: Arc::new(stop) }
}

/// Counts the series of `domain` from zero, and reports the link's state at each scrape until the supervisor ends
/// (the hook holds only a receiver of the state, so it does not keep the link open).
fn report_state(metrics: &RemoteMetrics, domain: &str, state: watch::Receiver<LinkState>) {
    metrics.received(domain, 0);
    metrics.sent(domain, 0);
    metrics.reconnected(domain, 0);
    let domain = domain.to_owned();
    metrics.on_scrape(move |metrics| {
        if state.has_changed().is_err() {
            // The supervisor ended: the link is gone.
            metrics.set_connections(&domain, "component", ConnectionState::Connected, 0);
            metrics.set_connections(&domain, "component", ConnectionState::Connecting, 0);
            return false;
        }
        let online = usize::from(state.borrow().online);
        metrics.set_connections(&domain, "component", ConnectionState::Connected, online);
        metrics.set_connections(&domain, "component", ConnectionState::Connecting, 1 - online);
        true
    });
}

/// The server the component pings: the parent domain of the component (`bridge.example.org` → `example.org`),
/// which is the XMPP server's own host in every usual set-up. Any answer, even an error, proves the link alive.
fn ping_target(domain: &str) -> String {
    domain.split_once('.').map_or(domain, |(_, parent)| parent).to_owned()
}

struct Supervisor {
    domain: String,
    server: String,
    secret: String,
    ping_interval: Duration,
    response_timeout: Duration,
    max_delay: Duration,
    ping_target: String,
    drop_stanza: DropStanza,
    metrics: RemoteMetrics,
}

impl Supervisor {
    async fn run(
        self,
        mut outbound: mpsc::Receiver<(u64, Stanza)>,
        state: watch::Sender<LinkState>,
        inbound: mpsc::Sender<Stanza>,
        mut stop: watch::Receiver<bool>,
    ) {
        let mut failures: u32 = 0;
        let mut generation = 0;
        loop {
            if *stop.borrow_and_update() {
                return;
            }
            let timeouts = Timeouts {
                // Pings keep the stream busy; silence longer than two ping intervals is a dead stream.
                read_timeout: self.ping_interval * 2 + self.response_timeout,
                response_timeout: self.response_timeout,
            };
            let connector =
                NoDelayConnector { server: DnsConfig::addr(&self.server), drop_stanza: Arc::clone(&self.drop_stanza) };
            let connect = Component::new_with_connector(&self.domain, &self.secret, connector, timeouts);
            match tokio::time::timeout(self.response_timeout * 2, connect).await {
                Ok(Ok(component)) => {
                    generation += 1;
                    failures = 0;
                    tracing::info!(domain = %self.domain, server = %self.server, generation, "XMPP component connected");
                    // Stanzas queued for the previous connection are stale: their senders retry.
                    while outbound.try_recv().is_ok() {}
                    state.send_replace(LinkState { generation, online: true });
                    let reason = self.serve(component, generation, &mut outbound, &inbound, &mut stop).await;
                    state.send_replace(LinkState { generation, online: false });
                    tracing::warn!(domain = %self.domain, generation, %reason, "XMPP component disconnected");
                    if inbound.is_closed() || *stop.borrow() {
                        return;
                    }
                }
                Ok(Err(error)) => {
                    tracing::warn!(server = %self.server, %error, attempt = failures + 1, "XMPP component connection failed");
                }
                Err(_) => {
                    tracing::warn!(server = %self.server, attempt = failures + 1, "XMPP component handshake timed out");
                }
            }
            failures = failures.saturating_add(1);
            tokio::select! {
                () = tokio::time::sleep(backoff(failures, self.max_delay)) => {}
                _ = stop.changed() => return,
            }
            self.metrics.reconnected(&self.domain, 1);
        }
    }

    /// Pumps one connection until it ends; returns why it ended.
    async fn serve(
        &self,
        component: Component<NoDelayConnector>,
        generation: u64,
        outbound: &mut mpsc::Receiver<(u64, Stanza)>,
        inbound: &mpsc::Sender<Stanza>,
        stop: &mut watch::Receiver<bool>,
    ) -> String {
        let (mut sink, mut stream) = component.split();
        let mut ping_timer = tokio::time::interval_at(Instant::now() + self.ping_interval, self.ping_interval);
        let mut pending_ping: Option<(String, Instant)> = None;
        let mut ping_count: u64 = 0;
        loop {
            let ping_deadline = pending_ping.as_ref().map(|(_, deadline)| *deadline);
            tokio::select! {
                _ = stop.changed() => {
                    // Ends the stream with `</stream:stream>` so the server drops the component at once.
                    let _ = tokio::time::timeout(self.response_timeout, sink.close()).await;
                    return "the bridge is stopping".into();
                }
                stanza = stream.next() => {
                    let Some(stanza) = stanza else { return "the stream ended".into() };
                    self.metrics.received(&self.domain, 1);
                    if let Stanza::Iq(Iq::Result { id, .. } | Iq::Error { id, .. }) = &stanza
                        && pending_ping.as_ref().is_some_and(|(ping_id, _)| ping_id == id)
                    {
                        pending_ping = None;
                        continue;
                    }
                    if inbound.send(stanza).await.is_err() {
                        return "the bridge is stopping".into();
                    }
                }
                queued = outbound.recv() => {
                    let Some(first) = queued else { return "the bridge is stopping".into() };
                    // Stanzas already waiting (a room's messages sent ahead of their reflections) go out in one
                    // write: one system call here and one read for the server, not one each.
                    let mut next = Some(first);
                    let mut written = 0;
                    while let Some((queued_generation, stanza)) = next.take() {
                        if queued_generation == generation {
                            if let Err(error) = sink.feed(stanza).await {
                                return format!("sending failed: {error}");
                            }
                            written += 1;
                        }
                        if written < MAX_STANZAS_PER_WRITE {
                            next = outbound.try_recv().ok();
                        }
                    }
                    if let Err(error) = sink.flush().await {
                        return format!("sending failed: {error}");
                    }
                    self.metrics.sent(&self.domain, u64::try_from(written).unwrap_or(u64::MAX));
                }
                _ = ping_timer.tick(), if pending_ping.is_none() => {
                    ping_count += 1;
                    let id = format!("lattice-ping-{generation}-{ping_count}");
                    let ping = Iq::from_get(id.clone(), Ping)
                        .with_from(Jid::new(&self.domain).expect("the domain was validated"))
                        .with_to(Jid::new(&self.ping_target).expect("a parent of a valid domain is valid"));
                    if let Err(error) = sink.send(ping.into()).await {
                        return format!("sending a ping failed: {error}");
                    }
                    self.metrics.sent(&self.domain, 1);
                    pending_ping = Some((id, Instant::now() + self.response_timeout));
                }
                () = sleep_until(ping_deadline) => {
                    return format!("no answer to a ping within {:?}", self.response_timeout);
                }
            }
        }
    }
}

/// Plain TCP to the XMPP server (XEP-0114 runs on loopback or a private link), with Nagle's algorithm off and
/// delayed ACKs off: the bridge often sends one small stanza and waits for the MUC to reflect it (a message in a
/// quiet room), and Nagle's algorithm on either side together with the other side's delayed ACKs holds each such
/// exchange back by 40 ms (measured: a MUC's reflection, written by Prosody in two parts, waited for the bridge's delayed ACK).
/// What it reads is skimmed before the parser sees it.
#[derive(Clone)]
pub(crate) struct NoDelayConnector {
    server: DnsConfig,
    drop_stanza: DropStanza,
}

impl std::fmt::Debug for NoDelayConnector {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.debug_struct("NoDelayConnector").field("server", &self.server).finish_non_exhaustive()
    }
}

impl ServerConnector for NoDelayConnector {
    type Stream = BufStream<SkimmedStream<QuickAckStream>>;

    async fn connect(
        &self,
        jid: &Jid,
        ns: &'static str,
        timeouts: Timeouts,
    ) -> Result<(PendingFeaturesRecv<Self::Stream>, sasl::common::ChannelBinding), tokio_xmpp::Error> {
        let tcp = self.server.resolve().await?;
        tcp.set_nodelay(true)?;
        let header = StreamHeader { to: Some(jid.domain().as_str().to_owned().into()), from: None, id: None };
        let skimmed = SkimmedStream::new(QuickAckStream(tcp), Arc::clone(&self.drop_stanza));
        let stream = initiate_stream(BufStream::new(skimmed), ns, header, timeouts).await?;
        Ok((stream, sasl::common::ChannelBinding::None))
    }
}

/// A TCP stream that acknowledges what it reads at once (`TCP_QUICKACK`, which the kernel clears again on its own,
/// so it is set after every read). Elsewhere than Linux it is a plain stream.
#[derive(Debug)]
pub(crate) struct QuickAckStream(TcpStream);

impl tokio::io::AsyncRead for QuickAckStream {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        context: &mut std::task::Context<'_>,
        buffer: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let polled = std::pin::Pin::new(&mut self.0).poll_read(context, buffer);
        #[cfg(target_os = "linux")]
        if polled.is_ready() {
            // Best effort: a socket that refuses only keeps the kernel's default.
            let _ = self.0.set_quickack(true);
        }
        polled
    }
}

impl tokio::io::AsyncWrite for QuickAckStream {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        context: &mut std::task::Context<'_>,
        data: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.0).poll_write(context, data)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        context: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_flush(context)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        context: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_shutdown(context)
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// Full-jitter exponential backoff: up to 250 ms × 2^failures, capped at `max`, never under 100 ms.
fn backoff(failures: u32, max: Duration) -> Duration {
    let ceiling = Duration::from_millis(250).saturating_mul(1 << failures.min(16)).min(max);
    let jittered = ceiling.mul_f64(rand::random::<f64>());
    jittered.max(Duration::from_millis(100))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        let max = Duration::from_secs(30);
        for failures in [1, 2, 5, 20, u32::MAX] {
            let delay = backoff(failures, max);
            assert!(delay >= Duration::from_millis(100) && delay <= max, "{failures}: {delay:?}");
        }
        assert!(backoff(1, max) <= Duration::from_millis(500));
    }

    #[test]
    fn pings_go_to_the_parent_server() {
        assert_eq!(ping_target("bridge.example.org"), "example.org");
        assert_eq!(ping_target("localhost"), "localhost");
    }
}
