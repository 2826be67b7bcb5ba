//! Matrix → IRC delivery: a Matrix event's queue item stays in the runtime's durable queue until the IRC server has
//! its lines, so lines held back by flood control, or written but not yet read by the server when the bridge dies,
//! go out again after a restart.
//!
//! The server has a line once it echoes it (`echo-message`, see [`crate::ircv3::echo`]) or, on servers without
//! echoes, once the `PONG` of a `PING` written after it came back ([`crate::receipt`]). The runtime then records a
//! delivered message's remote ID durably before it settles the item, so a replay after a crash finds it delivered
//! and does not send it twice. A sender whose messages wait behind flood control for more than [`QUEUED_NOTICE_AFTER`] is told
//! once, in the room, that they are on their way.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use dashmap::DashMap;
use lattice_bridge_core::{
    BridgeHandle,
    connector::{ConnectorError, ConnectorResult, RemoteId, Sent},
};
use tokio::sync::oneshot;

use crate::{ircv3::echo::Echoed, receipt::Receipt};

/// How long a message may wait for the server before its sender hears that it is queued.
pub(crate) const QUEUED_NOTICE_AFTER: Duration = Duration::from_secs(5);
/// How long after such a notice the same sender is not told again.
const QUEUED_NOTICE_QUIET: Duration = Duration::from_secs(300);

/// What a sent event waits for before its queue item is settled.
pub(crate) enum Confirmation {
    /// The echoes of its lines — or, where the edge found them sent before under the event's key by a bridge
    /// process that ended before it heard the echo, the server's reading of those (see [`crate::conn::Keyed`]).
    Echo { echo: oneshot::Receiver<Echoed>, earlier: Option<oneshot::Receiver<bool>> },
    /// The server's reading of its lines.
    Receipt(Receipt),
}

impl Confirmation {
    /// Whether the server has the lines: `Ok(true)` delivered, `Ok(false)` refused or lost with the sender told,
    /// an error when the connection ended first (the event is sent again).
    async fn wait(self) -> ConnectorResult<bool> {
        let lost = |_| ConnectorError::transient("the IRC connection ended before the server confirmed the lines");
        match self {
            Self::Echo { echo, earlier: None } => Ok(echo.await.map_err(lost)? == Echoed::Delivered),
            Self::Echo { echo, earlier: Some(earlier) } => {
                tokio::pin!(echo);
                tokio::select! {
                    echoed = &mut echo => Ok(echoed.map_err(lost)? == Echoed::Delivered),
                    sent_before = earlier => match sent_before {
                        // Sent before, and read then.
                        Ok(true) => Ok(true),
                        // Sent now and read: its echo tells.
                        Ok(false) => Ok(echo.await.map_err(lost)? == Echoed::Delivered),
                        // The edge went away (or handed over) before it said: the event is sent again.
                        Err(_) => Err(ConnectorError::transient("the IRC edge went away before the lines were confirmed")),
                    },
                }
            }
            Self::Receipt(receipt) => receipt.await.map(|()| true).map_err(lost),
        }
    }
}

/// One sent Matrix event, waiting for its confirmation.
pub(crate) struct Sending {
    /// What it waits for.
    pub(crate) confirmation: Confirmation,
    /// The remote ID the runtime records once it is delivered (new messages; other events are not looked up by
    /// their own ID).
    pub(crate) remote_id: Option<RemoteId>,
    /// Its sender, to tell when it waits long.
    pub(crate) sender: String,
    /// Its room.
    pub(crate) room_id: String,
}

/// Confirms a network's deliveries, and tells senders whose messages queue up.
#[derive(Clone)]
pub(crate) struct Deliveries {
    bridge: BridgeHandle,
    network_name: String,
    lines_per_second: f64,
    /// Matrix user → when they were last told their messages are queued.
    told: Arc<DashMap<String, Instant>>,
}

impl Deliveries {
    /// Deliveries on the network named `network_name`, whose flood control lets `lines_per_second` through.
    pub(crate) fn new(bridge: BridgeHandle, network_name: &str, lines_per_second: f64) -> Self {
        Self { bridge, network_name: network_name.to_owned(), lines_per_second, told: Arc::default() }
    }

    /// What `sending` comes to for the runtime: its queue item stays until the server confirmed it.
    pub(crate) fn sending(&self, sending: Sending) -> Sent {
        Sent::later(self.clone().settle(sending))
    }

    /// Waits for the server's confirmation: the remote ID of a delivered message, `None` for a refused one (its
    /// sender was told) or an event without one.
    async fn settle(self, sending: Sending) -> ConnectorResult<Option<RemoteId>> {
        let Sending { confirmation, remote_id, sender, room_id } = sending;
        let waiting = confirmation.wait();
        tokio::pin!(waiting);
        let delivered = tokio::select! {
            delivered = &mut waiting => delivered,
            () = tokio::time::sleep(QUEUED_NOTICE_AFTER) => {
                self.tell_queued(&sender, &room_id);
                waiting.await
            }
        }?;
        Ok(remote_id.filter(|_| delivered))
    }

    /// Tells `sender` once in a while that their messages wait behind the network's flood control. The notice goes
    /// out on its own task: the confirmation never waits for the homeserver (it may be away, and the room's next
    /// messages wait for this confirmation).
    fn tell_queued(&self, sender: &str, room_id: &str) {
        let now = Instant::now();
        let quiet = self.told.get(sender).is_some_and(|at| now.duration_since(*at) < QUEUED_NOTICE_QUIET);
        if quiet {
            return;
        }
        self.told.insert(sender.to_owned(), now);
        let text = format!(
            "{sender}: your messages are queued: {} lets {} lines per second through. They will arrive in order.",
            self.network_name, self.lines_per_second
        );
        let (bridge, network, room_id) = (self.bridge.clone(), self.network_name.clone(), room_id.to_owned());
        tokio::spawn(async move {
            if let Err(error) = bridge.notice(&room_id, &text).await {
                tracing::warn!(%network, %room_id, %error, "cannot tell a sender their messages wait");
            }
        });
    }
}
