//! What a network reports to the bridge's metrics at each scrape: its connections by role (`bot`: the bridge
//! bot's listener; `puppet`: Matrix users' own connections) and state, and the lines its connections read and
//! wrote and their reconnects since the last scrape.

use std::sync::Arc;

use lattice_bridge_core::metrics::{ConnectionState, RemoteMetrics};

use super::Network;

impl Network {
    /// Reports the network's connections and traffic before every scrape, for as long as the network runs.
    pub(super) fn report_metrics(self: &Arc<Self>) {
        let network = Arc::downgrade(self);
        self.bridge.remote_metrics().on_scrape(move |metrics| match network.upgrade() {
            Some(network) => {
                network.scraped(metrics);
                true
            }
            None => false,
        });
    }

    fn scraped(&self, metrics: &RemoteMetrics) {
        let traffic = self.dialer.take_traffic();
        metrics.received(&self.id, traffic.read);
        metrics.sent(&self.id, traffic.written);
        metrics.reconnected(&self.id, traffic.reconnects);
        let bot = usize::from(self.listener.is_connected());
        let (mut puppets, mut connected) = (0, 0);
        for puppet in self.puppets.iter() {
            puppets += 1;
            connected += usize::from(puppet.value().is_connected());
        }
        for (role, connected, all) in [("bot", bot, 1), ("puppet", connected, puppets)] {
            metrics.set_connections(&self.id, role, ConnectionState::Connected, connected);
            metrics.set_connections(&self.id, role, ConnectionState::Connecting, all - connected);
        }
    }
}
