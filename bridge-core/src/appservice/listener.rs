//! The appservice port's accept loop: HTTP/1.1 ([RFC 9112]) served by hyper with the limits a port that strangers
//! can reach needs.
//!
//! - **Header timeout**: a client that has not sent a whole request line and headers within
//!   [`ListenerLimits::header_timeout`] is disconnected; the same timer bounds how long a kept-alive connection may sit
//!   idle between requests (hyper's `header_read_timeout`).
//! - **Request timeout**: from its headers to its answer, body included, a request has
//!   [`ListenerLimits::request_timeout`]; later it is answered `408` and the connection closed (tower-http's
//!   `TimeoutLayer`). A body that stops sending for a header timeout is cut sooner (`RequestBodyTimeoutLayer`).
//! - **Connection cap**: at most [`ListenerLimits::max_connections`] connections are served at once; one more is
//!   answered `503` with `Retry-After` and closed at once, so a flood neither queues in the kernel's backlog nor
//!   starves the homeserver for longer than a header timeout.
//!
//! Only HTTP/1.1 is spoken: every homeserver calls an appservice that way, and HTTP/2's version sniffing would read
//! the first bytes without a timeout. The `Host` header is not looked at: nothing the bridge answers depends on it.
//!
//! [RFC 9112]: https://www.rfc-editor.org/rfc/rfc9112

use std::{future::Future, io, sync::Arc, time::Duration};

use axum::{Router, http::StatusCode};
use hyper::server::conn::http1;
use hyper_util::{
    rt::{TokioIo, TokioTimer},
    server::graceful::GracefulShutdown,
    service::TowerToHyperService,
};
use lattice_config::ListenerLimitsConfig;
use tokio::{
    net::{TcpListener, TcpStream},
    sync::Semaphore,
};
use tower_http::timeout::{RequestBodyTimeoutLayer, TimeoutLayer};

/// The answer to a connection over the cap, written in one go without reading the request.
const BUSY: &[u8] =
    b"HTTP/1.1 503 Service Unavailable\r\nretry-after: 1\r\ncontent-length: 0\r\nconnection: close\r\n\r\n";

/// How long accepting pauses after the system refuses a connection (out of file descriptors, say).
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// What the listener allows a client; see the [module documentation](self).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ListenerLimits {
    /// Time to send a request's line and headers; also the longest idle time between requests.
    pub header_timeout: Duration,
    /// Time from a request's headers to its answer, body included.
    pub request_timeout: Duration,
    /// Connections served at once.
    pub max_connections: usize,
}

impl Default for ListenerLimits {
    fn default() -> Self {
        Self::from(&ListenerLimitsConfig::default())
    }
}

impl From<&ListenerLimitsConfig> for ListenerLimits {
    fn from(config: &ListenerLimitsConfig) -> Self {
        Self {
            header_timeout: Duration::from_secs(config.header_timeout_secs),
            request_timeout: Duration::from_secs(config.request_timeout_secs),
            max_connections: config.max_connections,
        }
    }
}

/// Serves `router` on `listener` within `limits` until `shutdown` completes, then waits (up to a request timeout) for
/// the requests under way to be answered.
pub(crate) async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ListenerLimits,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    let router = router
        .layer(RequestBodyTimeoutLayer::new(limits.header_timeout))
        .layer(TimeoutLayer::with_status_code(StatusCode::REQUEST_TIMEOUT, limits.request_timeout));
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let graceful = GracefulShutdown::new();
    let mut refused_since_full = 0u64;
    tokio::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(error) => {
                    tracing::warn!(%error, "cannot accept a connection on the appservice port");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            },
        };
        let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
            if refused_since_full == 0 {
                tracing::warn!(limit = limits.max_connections, "the appservice port is full; refusing connections");
            }
            refused_since_full += 1;
            refuse(stream);
            continue;
        };
        if refused_since_full > 0 {
            tracing::info!(refused = refused_since_full, "the appservice port accepts connections again");
            refused_since_full = 0;
        }
        let _ = stream.set_nodelay(true);
        let connection = http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(limits.header_timeout)
            .keep_alive(true)
            .serve_connection(TokioIo::new(stream), TowerToHyperService::new(router.clone()));
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%error, "appservice connection ended");
            }
            drop(slot);
        });
    }
    drop(listener);
    if tokio::time::timeout(limits.request_timeout, graceful.shutdown()).await.is_err() {
        tracing::warn!("requests still under way at shutdown were cut off");
    }
    Ok(())
}

/// Answers `503` to a connection over the cap, as far as the socket takes it without waiting, and closes it.
fn refuse(stream: TcpStream) {
    let _ = stream.try_write(BUSY);
}
