//! The gateway: one XEP-0114 component link to the XMPP server, and the bridge's conversations on it.
//!
//! [`Gateway`] holds what every conversation shares — the supervised [`link`], the [`Addressing`] rules, the
//! runtime's [`BridgeHandle`], the IQs waiting for answers ([`requests`]) — and each feature's state. The features
//! are its child modules, each reached through a small facade that borrows the gateway (`gateway.muc()`, as
//! matrix-sdk's `client.media()`):
//!
//! - [`muc`]: XMPP MUCs as Matrix portals (join, to-Matrix, to-XMPP, self-ping, history);
//! - [`gateway_muc`]: Matrix rooms that XMPP users join as MUCs on the gateway (join, to-Matrix, to-XMPP, archive,
//!   disco);
//! - [`direct`]: one-to-one chats and presence subscriptions;
//! - [`avatars`]: pictures both ways (vCards and PEP);
//! - [`messages`]: message content both ways, shared by the three kinds of conversation.
//!
//! [`run`] starts it. Stanzas from the server go through [`stanzas`] (one lane per conversation, see [`lanes`]);
//! IQs to the gateway's own JIDs are answered in [`iq`]. Matrix events arrive through [`matrix_events`], one entry
//! point per event kind, which hands each to the feature of the portal's kind ([`PortalKind`]) and returns what was
//! sent (the runtime's [`Sent`](lattice_bridge_core::connector::Sent)).

mod avatars;
mod clock;
mod delivery;
mod direct;
mod disco;
mod gateway_muc;
mod iq;
mod lanes;
mod link;
mod matrix_events;
pub(crate) mod messages;
mod muc;
mod portal;
mod requests;
mod run;
pub(crate) mod skim;
mod stanzas;

use std::{
    sync::{Arc, Weak},
    time::Duration,
};

use lattice_bridge_core::{BridgeHandle, ConnectorError, connector::ConnectorResult, store::Portal};
use tokio_xmpp::{
    Stanza,
    parsers::{
        jid::Jid,
        message::{Id, Lang, Message},
        minidom::Element,
    },
};

pub(crate) use self::{
    link::{Link, LinkState},
    portal::PortalKind,
    run::Started,
};
use crate::{addressing::Addressing, config::XmppSection};

/// How long a sender waits before retrying while the component is offline.
const OFFLINE_RETRY: Duration = Duration::from_secs(1);

/// The gateway on one component link: shared services and each feature's state.
pub(crate) struct Gateway {
    /// This gateway, for the tasks it spawns.
    this: Weak<Gateway>,
    addressing: Addressing,
    section: XmppSection,
    bridge: BridgeHandle,
    link: Link,
    /// How long the gateway waits for the server's answers.
    timeout: Duration,
    /// IQs the gateway sent and waits for.
    requests: requests::IqRequests,
    /// The bridged MUCs.
    mucs: muc::State,
    /// The Matrix rooms XMPP users occupy as gateway MUCs.
    gateway_mucs: gateway_muc::State,
    /// Who was typing in each Matrix room, to send XMPP chat states only for changes.
    typing: messages::TypingState,
    /// Pictures known both ways.
    pictures: avatars::State,
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.debug_struct("Gateway").field("gateway", &self.addressing.gateway()).finish_non_exhaustive()
    }
}

/// A failure worth retrying soon: the link is down or the server did not answer in time.
pub(crate) fn transient(message: impl Into<String>) -> ConnectorError {
    ConnectorError::Transient { message: message.into(), retry_after: Some(OFFLINE_RETRY) }
}

/// A runtime error as the connector reports it.
pub(crate) fn core_error(error: lattice_bridge_core::Error) -> ConnectorError {
    if error.is_transient() { transient(error.to_string()) } else { ConnectorError::permanent(error.to_string()) }
}

/// A fresh stanza ID.
pub(crate) fn new_id() -> String {
    format!("lattice-{:016x}", rand::random::<u64>())
}

/// The ID (and XEP-0359 origin-id) of the message a Matrix event becomes: made from the event ID, so the same event
/// sent again after a restart carries the same ID and can be found where it arrived before.
pub(crate) fn event_message_id(event_id: &str) -> String {
    use sha2::Digest as _;
    let digest = sha2::Sha256::digest(event_id.as_bytes());
    let hex: String = digest[..12].iter().map(|byte| format!("{byte:02x}")).collect();
    format!("lattice-m{hex}")
}

/// `message` as a Matrix user's message leaves for XMPP: with `body` (refused when longer than the section allows),
/// the ID made from `event_id` (a new one without it) that is also its XEP-0359 origin-id, and `payloads`. The caller
/// sets who it is from. Returns it and its ID.
pub(crate) fn outgoing(
    section: &XmppSection,
    mut message: Message,
    body: Option<String>,
    payloads: Vec<Element>,
    event_id: Option<&str>,
) -> ConnectorResult<(Message, String)> {
    if let Some(body) = body {
        section.check_message_size(&body)?;
        message = message.with_body(Lang::new(), body);
    }
    let id = event_id.map_or_else(new_id, event_message_id);
    message.id = Some(Id(id.clone()));
    message.payloads.push(crate::xep::ids::origin_id(&id).into());
    message.payloads.extend(payloads);
    Ok((message, id))
}

/// The first payload named `name` in `namespace` that parses as `T`.
pub(crate) fn find_payload<T: TryFrom<Element>>(payloads: &[Element], name: &str, namespace: &str) -> Option<T> {
    payloads.iter().find(|element| element.is(name, namespace)).and_then(|element| T::try_from(element.clone()).ok())
}

/// Defines a feature's facade: a borrowed view of the gateway, reached as `gateway.$method()`, that dereferences
/// to the gateway for its shared services.
macro_rules! facade {
    ($(#[$doc:meta])* $name:ident, $method:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy)]
        pub(crate) struct $name<'a> {
            gateway: &'a crate::gateway::Gateway,
        }

        impl std::ops::Deref for $name<'_> {
            type Target = crate::gateway::Gateway;

            fn deref(&self) -> &crate::gateway::Gateway {
                self.gateway
            }
        }

        impl crate::gateway::Gateway {
            $(#[$doc])*
            pub(crate) fn $method(&self) -> $name<'_> {
                $name { gateway: self }
            }
        }
    };
}
pub(crate) use facade;

impl Gateway {
    /// A gateway on a supervised link.
    pub(crate) fn new(section: XmppSection, addressing: Addressing, bridge: BridgeHandle, link: Link) -> Arc<Self> {
        Arc::new_cyclic(|this| Self {
            this: this.clone(),
            timeout: Duration::from_secs(section.component.response_timeout_secs),
            addressing,
            section,
            bridge,
            link,
            requests: requests::IqRequests::default(),
            mucs: muc::State::default(),
            gateway_mucs: gateway_muc::State::default(),
            typing: messages::TypingState::default(),
            pictures: avatars::State::default(),
        })
    }

    /// This gateway as an owned handle, for a task that outlives the borrow.
    pub(crate) fn arc(&self) -> Arc<Self> {
        self.this.upgrade().expect("a gateway is only reached through its Arc")
    }

    /// The bridge's mappings between Matrix and XMPP names.
    pub(crate) fn addressing(&self) -> &Addressing {
        &self.addressing
    }

    /// The gateway's own JID (its domain).
    pub(crate) fn gateway_jid(&self) -> Jid {
        Jid::new(self.addressing.gateway()).expect("the gateway domain was validated")
    }

    /// Closes the component link at once, so the XMPP server drops the component now rather than after a timeout.
    pub(crate) fn close(&self) {
        self.link.close();
    }

    /// The link's state when it is online; a transient error while it reconnects.
    fn online(&self) -> ConnectorResult<LinkState> {
        let state = self.link.state();
        if state.online { Ok(state) } else { Err(transient("the XMPP component is reconnecting")) }
    }

    /// Writes a stanza to the server; a transient error while the link is down.
    pub(crate) async fn send(&self, stanza: impl Into<Stanza>) -> ConnectorResult<()> {
        self.link.send(stanza).await.map_err(|error| transient(error.to_string()))
    }

    /// A Matrix user's display name, or their localpart when they have none (or the homeserver cannot say).
    pub(crate) async fn displayname_of(&self, user_id: &str) -> String {
        let fallback = || user_id.trim_start_matches('@').split(':').next().unwrap_or(user_id).to_owned();
        let Ok(parsed) = ruma::OwnedUserId::try_from(user_id) else { return fallback() };
        match self.bridge.matrix().bot().get_profile(&parsed).await {
            Ok(Some(profile)) => profile.displayname.unwrap_or_else(fallback),
            _ => fallback(),
        }
    }

    /// Every stored portal of a kind this gateway keeps, with its kind; none (and an error logged) when the store
    /// cannot list them, in order `to` do something with them.
    pub(crate) async fn portals(&self, to: &str) -> Vec<(PortalKind, Portal)> {
        match self.bridge.portals().all().await {
            Ok(portals) => portals.into_iter().filter_map(|portal| Some((PortalKind::of(&portal)?, portal))).collect(),
            Err(error) => {
                tracing::error!(%error, "cannot list portals to {to}");
                Vec::new()
            }
        }
    }

    /// Whether a Matrix user is a person (neither one of this bridge's ghosts nor its bot).
    /// Whether the component link is up now.
    #[cfg(test)]
    pub(crate) fn is_online(&self) -> bool {
        self.link.state().online
    }

    pub(crate) fn is_matrix_person(&self, user_id: &str) -> bool {
        !self.addressing.is_ghost(user_id) && !self.bridge.is_bridge_user(user_id)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_matrix_events_message_id_is_the_same_each_time_and_its_own() {
        let one = super::event_message_id("$one:localhost");
        assert_eq!(one, super::event_message_id("$one:localhost"), "the same event, sent again, has the same ID");
        assert_ne!(one, super::event_message_id("$two:localhost"));
        assert!(one.starts_with("lattice-m") && one.len() == "lattice-m".len() + 24, "{one}");
        assert_ne!(super::new_id(), super::new_id());
    }
}
