//! Matrix topic changes → IRC `TOPIC`, by the sender's puppet (the server decides whether it may).

use lattice_bridge_core::{
    ConnectorError,
    connector::{ConnectorResult, InPortal, Sent},
};

use crate::{
    line::Line,
    network::{Network, channels::Target},
};

impl Network {
    /// A new topic for a channel portal; nothing if the channel has it already (it came from IRC).
    pub(crate) async fn matrix_topic(&self, at: InPortal<'_>, topic: &str) -> ConnectorResult<Sent> {
        let Some(Target::Channel(channel)) = self.target_of(at, true) else { return Ok(Sent::Nothing) };
        if at.portal.topic.as_deref() == Some(topic) {
            return Ok(Sent::Nothing);
        }
        let puppet = self.puppet(at.sender, None).await?;
        self.joined(&puppet, &channel).await?;
        let line = Line::new("TOPIC", &[&channel], Some(topic))
            .map_err(|error| ConnectorError::permanent(error.to_string()))?;
        self.bridge.portals().set_topic(&at.portal.remote_key, Some(topic)).await?;
        self.deliver(&puppet, vec![line], at).await
    }
}
