//! What the message map's remote IDs name on the XMPP side, read once from the stored string.

use std::fmt;

use crate::xep::reactions::ReactionRef;

/// A remote ID of the message map: an XMPP message (its stanza-id, else the sender's ID), or one person's reaction
/// to one (XEP-0444 gives a reaction no ID of its own, so the Matrix reaction maps to what it stands for).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum RemoteId {
    /// An XMPP message.
    Message(String),
    /// A reaction.
    Reaction(ReactionRef),
}

impl RemoteId {
    /// Reads a stored remote ID.
    pub(crate) fn parse(stored: &str) -> Self {
        ReactionRef::decode(stored).map_or_else(|| Self::Message(stored.to_owned()), Self::Reaction)
    }
}

/// The stored form.
impl fmt::Display for RemoteId {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Message(id) => formatter.write_str(id),
            Self::Reaction(reference) => formatter.write_str(&reference.encode()),
        }
    }
}

/// The runtime's opaque form, to record in the message map.
impl From<RemoteId> for lattice_bridge_core::connector::RemoteId {
    fn from(id: RemoteId) -> Self {
        Self::new(id.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_ids_read_back_as_what_they_name() {
        let reaction = ReactionRef { user_id: "@a:hs".into(), target: "s1".into(), key: "👍".into() };
        for id in [RemoteId::Message("s1".into()), RemoteId::Message("@a:hs".into()), RemoteId::Reaction(reaction)] {
            assert_eq!(RemoteId::parse(&id.to_string()), id);
        }
        assert_eq!(RemoteId::parse("lattice-reaction"), RemoteId::Message("lattice-reaction".into()));
    }
}
