//! Avatars both ways: Matrix users' pictures served to XMPP, and XMPP people's pictures brought to their ghosts.
//! The stanzas are built and read in [`crate::xep::avatar`] (XEP-0054/0153 vCards) and
//! [`crate::xep::user_avatar`] (XEP-0084 PEP); this module fetches, caches and uploads.
//!
//! Matrix → XMPP: gateway user JIDs answer vCard queries with the Matrix user's picture and name its hash in their
//! MUC presence. Pictures are fetched once per `mxc://` URI (a Matrix avatar never changes behind its URI).
//!
//! XMPP → Matrix: a presence names its sender's picture's SHA-1 — an occupant's in a bridged MUC, an XMPP user's in
//! a gateway MUC, or a contact's to a Matrix user's gateway JID. A hash the ghost does not have yet (recorded per
//! ghost in the store, so a restart fetches nothing again) makes the gateway fetch the vCard (through the MUC for
//! occupants), upload the picture once per hash (the upload is kept in the store too) and set it as the ghost's
//! avatar. An empty `photo` says the sender has no picture: the avatar the bridge gave their ghost is removed. A
//! presence without a `photo` from someone whose account is known makes the gateway look for a XEP-0084 picture
//! instead ([`pep`]).

mod pep;

use std::future::Future;

use bytes::Bytes;
use dashmap::DashMap;
use lattice_bridge_core::connector::GhostSpec;
use tokio_xmpp::parsers::{
    iq::Iq,
    jid::{BareJid, Jid},
    ns,
    presence::{Presence, Type as PresenceType},
    vcard::{VCard, VCardQuery},
};

use super::facade;
use crate::{
    addressing::XmppIdentity,
    xep::avatar::{Avatar, MAX_AVATAR_BYTES, Picture, hex, named_picture, sha1},
};

facade!(
    /// Avatars both ways.
    Avatars,
    avatars
);

/// The user setting that records which XMPP picture (SHA-1, hex) a ghost's avatar is.
const AVATAR_SETTING: &str = "xmpp.avatar_sha1";
/// The bridge bot's setting (with the SHA-1 in hex after it) that records where a picture was uploaded.
const UPLOAD_SETTING_PREFIX: &str = "xmpp.avatar_upload.";

/// What the gateway knows of pictures: Matrix avatars by `mxc://` URI, uploads of XMPP pictures by SHA-1, and when
/// each XMPP account's XEP-0084 avatar was last asked for.
#[derive(Debug, Default)]
pub(crate) struct State {
    by_mxc: DashMap<String, Avatar>,
    uploaded: DashMap<[u8; 20], String>,
    pep_checked: pep::Checked,
}

impl Avatars<'_> {
    /// The ghost of an XMPP account, without a display name (avatars leave the name as it is).
    fn account_ghost(&self, account: &BareJid) -> Option<GhostSpec> {
        let identity = XmppIdentity::Account(account.clone());
        Some(GhostSpec {
            user_id: self.addressing.ghost_for(&identity)?,
            remote_id: identity.as_str().to_owned(),
            displayname: None,
            avatar_url: None,
        })
    }

    /// Brings a ghost's avatar in line with what a presence says of its sender's picture, in a task of its own:
    /// the answers to the gateway's queries arrive on the stanza loop this is called from. Presences from occupants
    /// of bridged MUCs (to the listener), from XMPP users in gateway MUCs and from contacts to gateway user JIDs count.
    pub(crate) fn sync_presence_avatar(&self, presence: &Presence) {
        let (Some(from), Some(to)) = (presence.from.clone(), presence.to.clone()) else { return };
        let Ok(sender) = from.try_into_full() else { return };
        if presence.type_ != PresenceType::None || self.addressing.is_gateway_domain(sender.domain().as_str()) {
            return;
        }
        // Whose ghost, who holds the vCard, who asks, and the account when it is known.
        let (ghost, holder, asker, account) = if self.gateway_mucs().is_gateway_muc_jid(&to) {
            let account = sender.to_bare();
            let Some(ghost) = self.account_ghost(&account) else { return };
            (ghost, Jid::from(account.clone()), to, Some(account))
        } else if self.muc().is_bridged_muc(&sender.to_bare()) {
            let nick = sender.resource().to_string();
            if to.node().is_some() || self.muc().is_own_nick(&sender.to_bare(), &nick) {
                return;
            }
            let Some(identity) = self.muc().occupant_identity(&presence.payloads, sender.clone()) else { return };
            let Some(ghost) = self.muc().ghost(&identity, &nick) else { return };
            let account = match identity {
                XmppIdentity::Account(account) => Some(account),
                XmppIdentity::Occupant(_) => None,
            };
            // The MUC passes vCard queries to an occupant on to their account.
            (ghost, Jid::from(sender), to, account)
        } else if to.node().is_some() && self.addressing.matrix_user_of(&to.to_bare()).is_some() {
            let account = sender.to_bare();
            let Some(ghost) = self.account_ghost(&account) else { return };
            (ghost, Jid::from(account.clone()), to, Some(account))
        } else {
            return;
        };
        let gateway = self.arc();
        match (named_picture(presence), account) {
            (Some(Some(named)), _) => {
                tokio::spawn(async move {
                    let avatars = gateway.avatars();
                    let fetch = avatars.vcard_picture(asker, holder);
                    if let Err(error) = avatars.set_ghost_picture(&ghost, named, fetch).await {
                        tracing::info!(%error, "cannot bring an XMPP vCard avatar to Matrix");
                    }
                });
            }
            (Some(None), _) => {
                tokio::spawn(async move {
                    if let Err(error) = gateway.avatars().remove_ghost_picture(&ghost).await {
                        tracing::info!(%error, "cannot remove a withdrawn XMPP avatar from Matrix");
                    }
                });
            }
            (None, Some(account)) => {
                tokio::spawn(async move { gateway.avatars().check_user_avatar(ghost, asker, account).await });
            }
            (None, None) => {}
        }
    }

    /// The picture in the vCard `holder` answers `asker` with.
    async fn vcard_picture(&self, asker: Jid, holder: Jid) -> Option<Picture> {
        let query = Iq::from_get(String::new(), VCardQuery).with_from(asker).with_to(holder);
        let Some(Iq::Result { payload: Some(payload), .. }) = self.request(query).await else { return None };
        let photo = VCard::try_from(payload).ok()?.photo?;
        Some(Picture { bytes: photo.binval.data, mimetype: photo.type_.data })
    }

    /// Makes the picture whose SHA-1 is `named` the ghost's avatar, unless it is already. The picture is uploaded
    /// to Matrix once per SHA-1; `fetch` is awaited only when it was not uploaded before, and what it brings must be
    /// the named picture and not too large.
    async fn set_ghost_picture(
        &self,
        ghost: &GhostSpec,
        named: [u8; 20],
        fetch: impl Future<Output = Option<Picture>>,
    ) -> lattice_bridge_core::Result<()> {
        let bridge = &self.bridge;
        let id = hex(&named);
        if bridge.settings().get(&ghost.user_id, AVATAR_SETTING).await?.as_deref() == Some(id.as_str()) {
            return Ok(());
        }
        let bot = self.bridge.bot_user_id();
        let upload_setting = format!("{UPLOAD_SETTING_PREFIX}{id}");
        let known = match self.pictures.uploaded.get(&named).map(|known| known.clone()) {
            Some(mxc) => Some(mxc),
            None => bridge.settings().get(&bot, &upload_setting).await?,
        };
        let mxc = match known {
            Some(mxc) => mxc,
            None => {
                let Some(picture) = fetch.await else { return Ok(()) };
                if picture.bytes.len() > MAX_AVATAR_BYTES || sha1(&picture.bytes) != named {
                    tracing::info!(user_id = %ghost.user_id, %id, "an XMPP avatar is too large or not the picture named");
                    return Ok(());
                }
                let bytes = Bytes::from(picture.bytes);
                let mxc = self.bridge.matrix().upload_media(bytes, &picture.mimetype, None).await?.to_string();
                bridge.settings().set(&bot, &upload_setting, Some(&mxc)).await?;
                mxc
            }
        };
        self.pictures.uploaded.insert(named, mxc.clone());
        // The name stays what the ghost has (a nick in one room must not rename it elsewhere).
        let displayname = bridge.ghosts().by_user(&ghost.user_id).await?.and_then(|known| known.displayname);
        let displayname = displayname.or_else(|| ghost.displayname.clone());
        self.bridge.sync_ghost(&GhostSpec { avatar_url: Some(mxc), displayname, ..ghost.clone() }).await?;
        bridge.settings().set(&ghost.user_id, AVATAR_SETTING, Some(&id)).await?;
        Ok(())
    }

    /// Removes the ghost's avatar, if the bridge gave it one: its XMPP account says it has no picture (an empty
    /// XEP-0153 `photo`, or XEP-0084 metadata without `info`).
    async fn remove_ghost_picture(&self, ghost: &GhostSpec) -> lattice_bridge_core::Result<()> {
        let bridge = &self.bridge;
        if bridge.settings().get(&ghost.user_id, AVATAR_SETTING).await?.is_none() {
            return Ok(());
        }
        self.bridge.remove_ghost_avatar(&ghost.user_id).await?;
        bridge.settings().set(&ghost.user_id, AVATAR_SETTING, None).await?;
        Ok(())
    }

    /// A Matrix user's avatar, fetched once per URI; `None` without one (or when it cannot be fetched).
    pub(crate) async fn matrix_avatar(&self, user_id: &str) -> Option<Avatar> {
        let user = ruma::OwnedUserId::try_from(user_id).ok()?;
        let matrix = self.bridge.matrix();
        let mxc = matrix.bot().get_profile(&user).await.ok()??.avatar_url?;
        if let Some(known) = self.pictures.by_mxc.get(mxc.as_str()) {
            return Some(known.clone());
        }
        let (bytes, mimetype) = match matrix.download_media(&mxc).await {
            Ok(download) => download,
            Err(error) => {
                tracing::info!(%user_id, %error, "cannot fetch a Matrix avatar for XMPP");
                return None;
            }
        };
        if bytes.len() > MAX_AVATAR_BYTES {
            tracing::info!(%user_id, size = bytes.len(), "a Matrix avatar is too large to serve on XMPP");
            return None;
        }
        let avatar = Avatar::new(bytes, mimetype);
        self.pictures.by_mxc.insert(mxc.to_string(), avatar.clone());
        Some(avatar)
    }

    /// Answers an avatar query to a gateway user JID with the Matrix user's picture: a vcard-temp query, or an
    /// `items` query on a XEP-0084 node; `None` for other IQs.
    pub(crate) async fn answer(&self, iq: &Iq) -> Option<Iq> {
        let Iq::Get { from: Some(from), to: Some(to), id, payload } = iq else { return None };
        if !self.addressing.is_gateway_domain(to.domain().as_str()) {
            return None;
        }
        let user = self.addressing.matrix_user_of(&to.to_bare())?;
        if payload.is("pubsub", ns::PUBSUB) {
            return self.user_avatar_answer(iq, &user).await;
        }
        if !payload.is("vCard", ns::VCARD) {
            return None;
        }
        let vcard = match self.matrix_avatar(&user).await {
            Some(avatar) => avatar.vcard(),
            None => VCard { photo: None, payloads: Vec::new() },
        };
        Some(Iq::from_result(id.clone(), Some(vcard)).with_from(to.clone()).with_to(from.clone()))
    }
}
