//! [XEP-0084: User Avatar](https://xmpp.org/extensions/xep-0084.html) pictures of XMPP accounts, asked of their
//! PEP nodes (the stanzas are in [`crate::xep::user_avatar`]): the metadata when the account is first seen and again
//! after [`RECHECK`], the data item it names when the ghost lacks that picture, and `+notify` events at once.

use std::time::Instant;

use dashmap::DashMap;
use lattice_bridge_core::connector::GhostSpec;
use tokio_xmpp::parsers::{
    avatar::Metadata,
    iq::Iq,
    jid::{BareJid, Jid},
    message::Message,
    ns,
    stanza_error::{DefinedCondition, ErrorType, StanzaError},
};

use super::Avatars;
use crate::xep::{
    avatar::{Picture, hex},
    user_avatar::{RECHECK, Request, data_in, items_query, metadata_in, notified, published},
};

/// When each account's metadata was last asked.
#[derive(Debug, Default)]
pub(super) struct Checked {
    accounts: DashMap<BareJid, Instant>,
}

impl Checked {
    /// Whether the account is due a check, and if so notes that it is being checked now.
    fn due(&self, account: &BareJid) -> bool {
        let now = Instant::now();
        let mut due = true;
        self.accounts
            .entry(account.clone())
            .and_modify(|last| {
                due = now.duration_since(*last) >= RECHECK;
                if due {
                    *last = now;
                }
            })
            .or_insert(now);
        due
    }
}

impl Avatars<'_> {
    /// Answers an `items` query on an avatar node to a gateway user JID; `None` for other IQs.
    pub(super) async fn user_avatar_answer(&self, iq: &Iq, user: &str) -> Option<Iq> {
        let Iq::Get { from: Some(from), to: Some(to), id, payload } = iq else { return None };
        let request = Request::of(payload)?;
        let avatar = self.matrix_avatar(user).await;
        Some(match request.answer(avatar.as_ref()) {
            Some(items) => Iq::from_result(id.clone(), Some(items)).with_from(to.clone()).with_to(from.clone()),
            None => {
                let error = StanzaError::new(ErrorType::Cancel, DefinedCondition::ItemNotFound, "en", "no avatar");
                Iq::Error { from: Some(to.clone()), to: Some(from.clone()), id: id.clone(), error, payload: None }
            }
        })
    }

    /// Asks an account's metadata node (unless asked within [`RECHECK`]) and brings the picture to its ghost. The
    /// answers arrive on the stanza loop: this runs in a task or a lane, never on the loop itself.
    pub(crate) async fn check_user_avatar(&self, ghost: GhostSpec, asker: Jid, account: BareJid) {
        if !self.pictures.pep_checked.due(&account) {
            return;
        }
        let query = Iq::from_get(String::new(), items_query(ns::AVATAR_METADATA, None))
            .with_from(asker.clone())
            .with_to(account.clone().into());
        let Some(metadata) = self.request(query).await.and_then(metadata_in) else { return };
        self.take_user_avatar(ghost, asker, account, metadata).await;
    }

    /// A `+notify` event about an account's avatar: its ghost gets the new picture. False for other messages.
    pub(crate) async fn on_event(&self, message: &Message) -> bool {
        let (Some(from), Some(to)) = (&message.from, &message.to) else { return false };
        let Some(metadata) = notified(message) else { return false };
        let account = from.to_bare();
        if let Some(ghost) = self.account_ghost(&account) {
            self.take_user_avatar(ghost, to.clone(), account, metadata).await;
        }
        true
    }

    /// Fetches the picture `metadata` names from the account's data node, unless the ghost has it already; metadata
    /// naming no picture removes the ghost's.
    async fn take_user_avatar(&self, ghost: GhostSpec, asker: Jid, account: BareJid, metadata: Metadata) {
        if metadata.infos.is_empty() {
            // XEP-0084 §4.5: the account stopped publishing a picture.
            if let Err(error) = self.remove_ghost_picture(&ghost).await {
                tracing::info!(%error, "cannot remove a withdrawn XMPP user avatar (XEP-0084) from Matrix");
            }
            return;
        }
        let Some(info) = published(&metadata) else { return };
        let Ok(named) = <[u8; 20]>::try_from(info.id.hash.as_slice()) else { return };
        let mimetype = info.type_.clone();
        let fetch = async {
            let query = Iq::from_get(String::new(), items_query(ns::AVATAR_DATA, Some(hex(&named))))
                .with_from(asker)
                .with_to(account.into());
            let bytes = self.request(query).await.and_then(data_in)?;
            Some(Picture { bytes, mimetype })
        };
        if let Err(error) = self.set_ghost_picture(&ghost, named, fetch).await {
            tracing::info!(%error, "cannot bring an XMPP user avatar (XEP-0084) to Matrix");
        }
    }
}

#[cfg(test)]
mod tests {
    use std::str::FromStr;

    use super::*;

    #[test]
    fn accounts_are_checked_once_per_interval() {
        let checked = Checked::default();
        let account = BareJid::from_str("x@localhost").unwrap();
        assert!(checked.due(&account));
        assert!(!checked.due(&account), "asked just now");
        assert!(checked.due(&BareJid::from_str("y@localhost").unwrap()));
    }
}
