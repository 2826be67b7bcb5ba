//! Handing a registered connection to another process, the way irssi's `/UPGRADE` keeps its server connections:
//! the connection stops between two lines, waits for the server to confirm what it wrote, and gives up its TCP
//! socket with its state (nick, capabilities, channels, the bytes read but not handled yet); the other process
//! goes on with it as if it had registered it. The edge hands its connections to its successor this way (see
//! [`crate::edge`]). A TLS session's state cannot be handed over: such a connection is not frozen.

use std::{collections::HashMap, sync::Arc, time::Duration};

use serde::{Deserialize, Serialize};
use tokio::sync::{Notify, Semaphore, mpsc, oneshot, watch};

use super::{ChannelState, ConnEvent, LocalConnection, SessionHandle, Settings, Shared, lock, supervise};
use crate::{config::ServerConfig, ids::casefold, ircv3::cap::CapSet};

/// How long freezing may take: the drain of written lines, then the hand-over.
const FREEZE_TIMEOUT: Duration = Duration::from_secs(10);

/// What goes with a frozen connection's socket.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct FrozenState {
    pub(crate) settings: Settings,
    /// The server it is connected to.
    pub(crate) server: ServerConfig,
    pub(crate) nick: String,
    pub(crate) prefix_len: usize,
    pub(crate) max_nick_length: usize,
    pub(crate) caps: CapSet,
    /// The channels it is in.
    pub(crate) channels: Vec<String>,
    /// Bytes read from the socket and not handled yet.
    pub(crate) unread: Vec<u8>,
}

/// A frozen connection: its state and its socket.
#[derive(Debug)]
pub(crate) struct Frozen {
    pub(crate) state: FrozenState,
    pub(crate) stream: std::net::TcpStream,
}

impl LocalConnection {
    /// Stops the connection between two lines, once the server has confirmed what it wrote (or a few seconds
    /// passed), and takes it out of this process. `None` if it cannot be handed over (not registered, or TLS):
    /// it then goes on here.
    pub(crate) async fn freeze(&self) -> Option<Frozen> {
        let tls = lock(&self.shared.settings).servers.iter().any(|server| server.tls);
        if tls || !self.is_connected() {
            return None;
        }
        let (taker, frozen) = oneshot::channel();
        *lock(&self.shared.handed) = Some(taker);
        self.shared.freeze.send_replace(true);
        tokio::time::timeout(FREEZE_TIMEOUT, frozen).await.ok()?.ok()
    }

    /// Goes on with a connection frozen in another process: registered as it was, in its channels.
    pub(crate) fn resume(
        frozen: Frozen,
        events: mpsc::Sender<ConnEvent>,
        connecting: Arc<Semaphore>,
    ) -> std::io::Result<Self> {
        let Frozen { state, stream } = frozen;
        stream.set_nonblocking(true)?;
        let stream = tokio::net::TcpStream::from_std(stream)?;
        let channels: HashMap<String, ChannelState> = state
            .channels
            .iter()
            .map(|name| {
                let channel = ChannelState { name: name.clone(), joined: true, join_sent: true, refused: None };
                (casefold(name), channel)
            })
            .collect();
        // The queues are the resumed session's; these stand in until it starts.
        let (sender, _) = mpsc::channel(1);
        let (urgent, _) = mpsc::channel(1);
        let session = SessionHandle { sender, urgent, nick: state.nick.clone(), prefix_len: state.prefix_len };
        let (stop, _) = watch::channel(false);
        let shared = Arc::new(Shared {
            settings: std::sync::Mutex::new(state.settings.clone()),
            session: std::sync::Mutex::new(Some(session)),
            channels: std::sync::Mutex::new(channels),
            caps: std::sync::Mutex::new(state.caps.clone()),
            stop,
            reconnect_now: Notify::new(),
            changed: Notify::new(),
            version: watch::channel(0).0,
            freeze: watch::channel(false).0,
            handed: std::sync::Mutex::new(None),
        });
        tokio::spawn(supervise(Arc::clone(&shared), events, connecting, Some((state, stream))));
        Ok(Self { shared })
    }
}
