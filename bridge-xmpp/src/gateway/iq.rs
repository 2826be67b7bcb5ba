//! IQs to the gateway's own JIDs (the domain and Matrix users' gateway JIDs), answered as RFC 6120 §8.2.3 asks:
//! answers to the gateway's own requests and self-pings go back to their waiters; pings
//! ([XEP-0199](https://xmpp.org/extensions/xep-0199.html)), disco ([`super::disco`]), version and caps
//! ([`crate::xep::caps`]) and avatars ([`super::avatars`]) are answered; anything else gets `service-unavailable`.

use tokio_xmpp::parsers::{
    disco::DiscoInfoQuery,
    iq::Iq,
    ns,
    stanza_error::{DefinedCondition, ErrorType, StanzaError},
};

use super::Gateway;
use crate::xep::caps::{user_disco, version};

impl Gateway {
    /// Answers an IQ to one of the gateway's own JIDs, or hands an answer to the request waiting for it.
    pub(super) async fn on_iq(&self, iq: Iq) -> lattice_bridge_core::Result<()> {
        if self.muc().take_self_ping_answer(&iq) || self.requests.finish(&iq) {
            return Ok(());
        }
        let answer = match self.avatars().answer(&iq).await {
            Some(answer) => Some(answer),
            None => self.identity_answer(&iq),
        };
        if let Some(answer) = answer {
            let _ = self.link.send(answer).await;
            return Ok(());
        }
        let Iq::Get { from, to, id, payload } = iq else { return Ok(()) };
        let Some(from) = from else { return Ok(()) };
        let to = to.unwrap_or_else(|| self.gateway_jid());
        let reply = if payload.is("ping", ns::PING) {
            Iq::Result { from: Some(to), to: Some(from), id, payload: None }
        } else if payload.is("query", ns::DISCO_INFO) && DiscoInfoQuery::try_from(payload.clone()).is_ok() {
            Iq::from_result(id, Some(self.disco_info(&to))).with_from(to).with_to(from)
        } else if payload.is("query", ns::DISCO_ITEMS) {
            Iq::from_result(id, Some(self.disco_items(&to).await)).with_from(to).with_to(from)
        } else {
            let error =
                StanzaError::new(ErrorType::Cancel, DefinedCondition::ServiceUnavailable, "en", "not supported");
            Iq::Error { from: Some(to), to: Some(from), id, error, payload: None }
        };
        let _ = self.link.send(reply).await;
        Ok(())
    }

    /// The answer to a disco#info query to a gateway user JID, or to a version query to any gateway JID; `None`
    /// for other IQs.
    fn identity_answer(&self, iq: &Iq) -> Option<Iq> {
        let Iq::Get { from: Some(from), to: Some(to), id, payload } = iq else { return None };
        if !self.addressing.is_gateway_domain(to.domain().as_str()) {
            return None;
        }
        if payload.is("query", ns::VERSION) {
            return Some(Iq::from_result(id.clone(), Some(version())).with_from(to.clone()).with_to(from.clone()));
        }
        let user = to.node().is_some() && self.addressing.matrix_user_of(&to.to_bare()).is_some();
        if user && payload.is("query", ns::DISCO_INFO) {
            let query = DiscoInfoQuery::try_from(payload.clone()).ok()?;
            let info = user_disco(query.node);
            return Some(Iq::from_result(id.clone(), Some(info)).with_from(to.clone()).with_to(from.clone()));
        }
        None
    }
}
