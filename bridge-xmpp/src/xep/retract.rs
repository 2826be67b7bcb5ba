//! [XEP-0424: Message Retraction](https://xmpp.org/extensions/xep-0424.html) and
//! [XEP-0425: Moderated Message Retraction](https://xmpp.org/extensions/xep-0425.html) ⇄ Matrix redactions.
//!
//! Current form (`urn:xmpp:message-retract:1`): `<retract id='…'/>` naming the sender's ID of the message (or, in a
//! MUC, its stanza-id); a moderator's retraction, sent by the MUC itself, carries `<moderated by='room/nick'/>` and a
//! `<reason/>` inside. The older form wrapped both in XEP-0422 `<apply-to/>` (`urn:xmpp:fasten:0`); it is read too,
//! never sent. A moderator asks the MUC to retract with an IQ carrying [`ModerateRequest`].

use xmpp_parsers::{jid::Jid, minidom::Element};

use super::{ElementError, expect, required};

/// XEP-0424's namespace.
pub(crate) const NS_RETRACT: &str = "urn:xmpp:message-retract:1";
/// XEP-0424's namespace before version 0.4.
pub(crate) const NS_RETRACT_0: &str = "urn:xmpp:message-retract:0";
/// XEP-0425's namespace.
pub(crate) const NS_MODERATE: &str = "urn:xmpp:message-moderate:1";
/// XEP-0425's namespace before version 0.3.
pub(crate) const NS_MODERATE_0: &str = "urn:xmpp:message-moderate:0";
/// XEP-0422's namespace (the older form's wrapper).
pub(crate) const NS_FASTEN: &str = "urn:xmpp:fasten:0";
/// The body a client without retraction support shows instead (XEP-0424 §5, with a XEP-0428 fallback marker).
pub(crate) const FALLBACK_BODY: &str =
    "This person attempted to retract a previous message, but it's unsupported by your client.";

/// A retraction of an earlier message, by its sender or (with [`Moderated`]) by a moderator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Retract {
    /// The retracted message: its sender's ID, or its stanza-id in a MUC.
    pub id: String,
    /// Set when a moderator retracted someone else's message.
    pub moderated: Option<Moderated>,
    /// Why, if said.
    pub reason: Option<String>,
}

/// Who moderated a message away.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Moderated {
    /// The moderator's occupant JID, if given.
    pub by: Option<Jid>,
}

fn reason_of(element: &Element, namespace: &str) -> Option<String> {
    element.get_child("reason", namespace).map(Element::text).filter(|reason| !reason.is_empty())
}

fn moderated_of(element: &Element) -> Moderated {
    Moderated { by: element.attr("by").and_then(|by| by.parse().ok()) }
}

impl TryFrom<Element> for Retract {
    type Error = ElementError;

    fn try_from(element: Element) -> Result<Self, Self::Error> {
        if element.is("apply-to", NS_FASTEN) {
            let id = required(&element, "apply-to", "id")?.to_owned();
            if element.has_child("retract", NS_RETRACT_0) {
                return Ok(Self { id, moderated: None, reason: None });
            }
            if let Some(moderated) = element.get_child("moderated", NS_MODERATE_0)
                && moderated.has_child("retract", NS_RETRACT_0)
            {
                let reason = reason_of(moderated, NS_MODERATE_0);
                return Ok(Self { id, moderated: Some(moderated_of(moderated)), reason });
            }
            return Err(ElementError::Unexpected { name: "retract", namespace: NS_RETRACT });
        }
        expect(&element, "retract", NS_RETRACT)?;
        let id = required(&element, "retract", "id")?.to_owned();
        let moderated = element.get_child("moderated", NS_MODERATE).map(moderated_of);
        Ok(Self { id, moderated, reason: reason_of(&element, NS_RETRACT) })
    }
}

impl From<Retract> for Element {
    fn from(retract: Retract) -> Self {
        let mut builder = Element::builder("retract", NS_RETRACT).attr(super::name("id"), retract.id);
        if let Some(moderated) = retract.moderated {
            let mut inner = Element::builder("moderated", NS_MODERATE);
            if let Some(by) = moderated.by {
                inner = inner.attr(super::name("by"), by.to_string());
            }
            builder = builder.append(inner.build());
        }
        if let Some(reason) = retract.reason {
            builder = builder.append(Element::builder("reason", NS_RETRACT).append(reason).build());
        }
        builder.build()
    }
}

/// A moderator's request to the MUC (`<iq type='set'>`) to retract an occupant's message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModerateRequest {
    /// The stanza-id of the message.
    pub id: String,
    /// Why, if said.
    pub reason: Option<String>,
}

impl TryFrom<Element> for ModerateRequest {
    type Error = ElementError;

    fn try_from(element: Element) -> Result<Self, Self::Error> {
        expect(&element, "moderate", NS_MODERATE)?;
        if !element.has_child("retract", NS_RETRACT) {
            return Err(ElementError::Unexpected { name: "retract", namespace: NS_RETRACT });
        }
        let id = required(&element, "moderate", "id")?.to_owned();
        Ok(Self { id, reason: reason_of(&element, NS_MODERATE) })
    }
}

impl From<ModerateRequest> for Element {
    fn from(request: ModerateRequest) -> Self {
        let mut builder = Element::builder("moderate", NS_MODERATE)
            .attr(super::name("id"), request.id)
            .append(Element::builder("retract", NS_RETRACT).build());
        if let Some(reason) = request.reason {
            builder = builder.append(Element::builder("reason", NS_MODERATE).append(reason).build());
        }
        builder.build()
    }
}

#[cfg(test)]
mod tests {
    use std::str::FromStr;

    use super::*;

    fn parse(xml: &str) -> Result<Retract, ElementError> {
        Retract::try_from(Element::from_str(xml).unwrap())
    }

    #[test]
    fn each_form_of_retraction_parses() {
        let table = [
            ("<retract xmlns='urn:xmpp:message-retract:1' id='m1'/>", Some(("m1", false, None))),
            (
                "<retract xmlns='urn:xmpp:message-retract:1' id='s1'><moderated xmlns='urn:xmpp:message-moderate:1' \
                 by='room@muc/mod'/><reason>spam</reason></retract>",
                Some(("s1", true, Some("spam"))),
            ),
            (
                "<apply-to xmlns='urn:xmpp:fasten:0' id='m0'><retract xmlns='urn:xmpp:message-retract:0'/></apply-to>",
                Some(("m0", false, None)),
            ),
            (
                "<apply-to xmlns='urn:xmpp:fasten:0' id='s0'><moderated xmlns='urn:xmpp:message-moderate:0' by='r@m/x'>\
                 <retract xmlns='urn:xmpp:message-retract:0'/><reason>rude</reason></moderated></apply-to>",
                Some(("s0", true, Some("rude"))),
            ),
            ("<apply-to xmlns='urn:xmpp:fasten:0' id='x'><other xmlns='urn:x'/></apply-to>", None),
            ("<retract xmlns='urn:xmpp:message-retract:1'/>", None),
            ("<retract xmlns='urn:other'/>", None),
        ];
        for (xml, expected) in table {
            let parsed = parse(xml).ok();
            let got = parsed.as_ref().map(|r| (r.id.as_str(), r.moderated.is_some(), r.reason.as_deref()));
            assert_eq!(got, expected, "{xml}");
        }
    }

    #[test]
    fn retractions_and_requests_round_trip() {
        let retract = Retract {
            id: "s1".into(),
            moderated: Some(Moderated { by: Some(Jid::new("room@muc/mod").unwrap()) }),
            reason: Some("spam".into()),
        };
        assert_eq!(Retract::try_from(Element::from(retract.clone())), Ok(retract));
        let request = ModerateRequest { id: "s2".into(), reason: Some("why".into()) };
        assert_eq!(ModerateRequest::try_from(Element::from(request.clone())), Ok(request));
    }
}
