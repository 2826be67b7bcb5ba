//! Starting a gateway: the supervised component link, the stanza loop that hands each stanza to its conversation's
//! lane, the XEP-0410 self-pings, and a rejoin of every MUC on each new connection.

use std::sync::Arc;

use lattice_bridge_core::BridgeHandle;
use tokio::{
    sync::{mpsc, watch},
    task::JoinHandle,
};
use tokio_xmpp::Stanza;

use super::{Gateway, LinkState, lanes::Lanes, link, muc::occupant_copies};
use crate::{addressing::Addressing, config::XmppSection};

/// How many stanzas from the server may wait for the bridge before the connection stops being read.
const INBOUND_CAPACITY: usize = 1024;

/// A started gateway and the tasks that feed it. Dropping the gateway and aborting the tasks drops the last handle
/// on the component link, so the supervisor closes the connection.
#[derive(Debug)]
pub(crate) struct Started {
    /// The gateway.
    pub(crate) gateway: Arc<Gateway>,
    /// The stanza loop, the rejoiner and the self-pings.
    pub(crate) tasks: Vec<JoinHandle<()>>,
}

impl Gateway {
    /// Connects the component (`secret` resolved) and starts bridging. Gateway MUC occupants are restored before
    /// this returns, so no Matrix event handled afterwards misses one.
    pub(crate) async fn start(section: &XmppSection, secret: String, bridge: BridgeHandle) -> Started {
        let (inbound_sender, inbound) = mpsc::channel(INBOUND_CAPACITY);
        let skimmed = occupant_copies(&section.component.domain);
        let metrics = bridge.remote_metrics().clone();
        let link = link::spawn(&section.component, secret, inbound_sender, skimmed, metrics);
        let addressing = Addressing::new(section, bridge.server_name());
        let gateway = Self::new(section.clone(), addressing, bridge, link.clone());
        gateway.gateway_mucs().restore().await;
        let stanzas = tokio::spawn(Arc::clone(&gateway).read_stanzas(inbound));
        let self_pings = gateway.muc().spawn_self_pings();
        let rejoiner = tokio::spawn(Arc::clone(&gateway).rejoin_on_connect(link.subscribe()));
        Started { gateway, tasks: vec![stanzas, rejoiner, self_pings] }
    }

    /// The stanza loop: each stanza goes to its conversation's lane (or is handled here when it has none). Avatars
    /// named in presences are looked at first, in tasks of their own.
    async fn read_stanzas(self: Arc<Self>, mut inbound: mpsc::Receiver<Stanza>) {
        let handler = Arc::clone(&self);
        let lanes = Lanes::new(move |stanza| {
            let gateway = Arc::clone(&handler);
            async move { gateway.handle_stanza(stanza).await }
        });
        while let Some(stanza) = inbound.recv().await {
            if let Stanza::Presence(presence) = &stanza {
                self.avatars().sync_presence_avatar(presence);
            }
            match self.lane_of(&stanza) {
                Some(lane) => lanes.dispatch(lane, stanza).await,
                None => self.handle_stanza(stanza).await,
            }
        }
    }

    /// Every new connection is a fresh stream: rejoins every MUC on it.
    async fn rejoin_on_connect(self: Arc<Self>, mut state: watch::Receiver<LinkState>) {
        let mut rejoined = 0;
        loop {
            let current = *state.borrow_and_update();
            if current.online && current.generation != rejoined {
                rejoined = current.generation;
                let gateway = Arc::clone(&self);
                tokio::spawn(async move { gateway.muc().rejoin_all().await });
            }
            if state.changed().await.is_err() {
                return;
            }
        }
    }
}
