//! Presence subscriptions to Matrix users' gateway JIDs
//! ([RFC 6121 §3–4](https://www.rfc-editor.org/rfc/rfc6121#section-3)): an XMPP user can put
//! `alice\40example.org@{gateway}` on their roster and see her available.
//!
//! The gateway approves every subscription to a Matrix user who exists and refuses the others, answers probes,
//! and confirms unsubscriptions. The presence it reports is kept truthful and simple: available while the Matrix
//! user exists (Matrix presence is often disabled on homeservers, and a guess would be worse than this), with the
//! XEP-0115 caps of a gateway user JID.
//!
//! It asks to subscribe back: an XMPP server sends PEP notifications
//! ([XEP-0163 §4](https://xmpp.org/extensions/xep-0163.html#notify)) only to contacts with a subscription to the
//! publisher whose caps include `+notify`, so once the XMPP user approves, a new avatar of theirs (XEP-0084) reaches
//! their ghost at once instead of when the gateway next asks.

use tokio_xmpp::parsers::{
    jid::{BareJid, Jid},
    presence::{Presence, Type as PresenceType},
};

use super::Direct;

/// The resource the gateway's presences for Matrix users come from.
const PRESENCE_RESOURCE: &str = "matrix";

/// What the gateway sends back for a subscription-related presence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reply {
    /// `subscribed`: the request is approved.
    Subscribed,
    /// `unsubscribed`: refused, or the subscription is cancelled.
    Unsubscribed,
    /// An available presence from the Matrix user, with caps.
    Available,
    /// `subscribe`: the Matrix user's gateway JID asks to see the XMPP user's presence in return.
    Subscribe,
    /// An unavailable presence from the Matrix user.
    Unavailable,
}

/// The replies to a presence of `kind` sent to the gateway JID of a Matrix user who does (or does not) `exist`.
/// The XMPP user approving the gateway's own request (`subscribed`) gets the Matrix user's presence again, which
/// their server now reads for caps; a refusal (`unsubscribed`) needs none.
fn replies(kind: &PresenceType, exists: bool) -> &'static [Reply] {
    match (kind, exists) {
        (PresenceType::Subscribe, true) => &[Reply::Subscribed, Reply::Available, Reply::Subscribe],
        (PresenceType::Subscribed, true) => &[Reply::Available],
        (PresenceType::Subscribe, false) => &[Reply::Unsubscribed],
        (PresenceType::Probe, true) => &[Reply::Available],
        (PresenceType::Probe, false) => &[Reply::Unsubscribed],
        (PresenceType::Unsubscribe, _) => &[Reply::Unsubscribed, Reply::Unavailable],
        _ => &[],
    }
}

/// Whether a presence is about subscriptions (RFC 6121 §3) or a probe (§4.3), rather than availability.
pub(crate) fn is_subscription(kind: &PresenceType) -> bool {
    matches!(
        kind,
        PresenceType::Subscribe
            | PresenceType::Subscribed
            | PresenceType::Unsubscribe
            | PresenceType::Unsubscribed
            | PresenceType::Probe
    )
}

impl Direct<'_> {
    /// A subscription request, cancellation or probe from an XMPP user to a Matrix user's gateway JID.
    pub(crate) async fn on_subscription(&self, presence: Presence) -> lattice_bridge_core::Result<()> {
        let (Some(from), Some(to)) = (presence.from.as_ref(), presence.to.as_ref()) else { return Ok(()) };
        let contact = to.to_bare();
        let subscriber = from.to_bare();
        if self.addressing.is_gateway_domain(subscriber.domain().as_str()) {
            return Ok(());
        }
        let Some(matrix_user) = self.addressing.matrix_user_of(&contact) else { return Ok(()) };
        let needs_lookup =
            matches!(presence.type_, PresenceType::Subscribe | PresenceType::Subscribed | PresenceType::Probe);
        let exists = needs_lookup && self.matrix_user_exists(&matrix_user).await;
        for reply in replies(&presence.type_, exists) {
            let stanza = self.subscription_reply(*reply, &contact, &subscriber);
            // A reply lost to a reconnection is asked again by the XMPP server's next probe.
            let _ = self.send(stanza).await;
        }
        Ok(())
    }

    fn subscription_reply(&self, reply: Reply, contact: &BareJid, subscriber: &BareJid) -> Presence {
        let full = || -> Jid {
            contact.with_resource_str(PRESENCE_RESOURCE).map_or_else(|_| contact.clone().into(), Into::into)
        };
        let (presence, from) = match reply {
            Reply::Subscribed => (Presence::new(PresenceType::Subscribed), contact.clone().into()),
            Reply::Unsubscribed => (Presence::new(PresenceType::Unsubscribed), contact.clone().into()),
            Reply::Available => (Presence::available().with_payload(crate::xep::caps::user_caps()), full()),
            Reply::Subscribe => (Presence::new(PresenceType::Subscribe), contact.clone().into()),
            Reply::Unavailable => (Presence::unavailable(), full()),
        };
        presence.with_from(from).with_to(subscriber.clone())
    }

    /// Whether the homeserver knows `user_id` (its profile can be read). A failed lookup counts as not existing:
    /// the XMPP user can ask again, while a wrong approval would show a contact that is not there.
    async fn matrix_user_exists(&self, user_id: &str) -> bool {
        let Ok(user) = ruma::OwnedUserId::try_from(user_id) else { return false };
        matches!(self.bridge.matrix().bot().get_profile(&user).await, Ok(Some(_)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subscriptions_are_answered_per_rfc_6121() {
        use PresenceType as T;
        for (kind, exists, expected) in [
            (T::Subscribe, true, &[Reply::Subscribed, Reply::Available, Reply::Subscribe][..]),
            (T::Subscribe, false, &[Reply::Unsubscribed][..]),
            (T::Probe, true, &[Reply::Available][..]),
            (T::Probe, false, &[Reply::Unsubscribed][..]),
            (T::Unsubscribe, true, &[Reply::Unsubscribed, Reply::Unavailable][..]),
            (T::Subscribed, true, &[Reply::Available][..]),
            (T::Subscribed, false, &[][..]),
            (T::Unsubscribed, true, &[][..]),
        ] {
            assert_eq!(replies(&kind, exists), expected, "{kind:?} exists={exists}");
        }
        assert!(is_subscription(&T::Probe) && !is_subscription(&T::None) && !is_subscription(&T::Unavailable));
    }
}
