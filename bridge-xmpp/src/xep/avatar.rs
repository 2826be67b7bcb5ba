//! Avatars both ways with [XEP-0054: vcard-temp](https://xmpp.org/extensions/xep-0054.html) and
//! [XEP-0153: vCard-Based Avatars](https://xmpp.org/extensions/xep-0153.html).
//!
//! Matrix → XMPP: gateway user JIDs answer vCard queries with the Matrix user's picture and name its hash in their
//! MUC presence. Pictures are fetched once per `mxc://` URI (a Matrix avatar never changes behind its URI).
//!
//! XMPP → Matrix: an occupant's presence names its picture's SHA-1; a hash the ghost does not have yet (recorded
//! per ghost in the store, so a restart fetches nothing again) makes the gateway fetch the vCard through the MUC,
//! upload the picture once per hash and set it as the ghost's avatar.

use std::sync::Arc;

use bytes::Bytes;
use dashmap::DashMap;
use lattice_bridge_core::connector::GhostSpec;
use xmpp_parsers::{
    caps,
    hashes::Algo,
    iq::Iq,
    jid::{FullJid, Jid},
    ns,
    presence::Presence,
    vcard::{Binval, Photo, Type, VCard, VCardQuery},
    vcard_update::{Photo as UpdatePhoto, VCardUpdate},
};

/// Largest avatar served, in bytes (XEP-0153 suggests small pictures; vCards travel inline, base64-encoded).
pub const MAX_AVATAR_BYTES: usize = 256 * 1024;

/// One Matrix avatar, ready to serve.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Avatar {
    /// The picture.
    pub bytes: Bytes,
    /// Its MIME type.
    pub mimetype: String,
    /// Its SHA-1, as XEP-0153 names pictures.
    pub sha1: [u8; 20],
}

impl Avatar {
    /// An avatar from the picture's bytes.
    pub fn new(bytes: Bytes, mimetype: Option<String>) -> Self {
        Self { sha1: sha1(&bytes), mimetype: mimetype.unwrap_or_else(|| "image/png".into()), bytes }
    }

    /// The vCard carrying the picture.
    pub fn vcard(&self) -> VCard {
        let photo = Photo { type_: Type { data: self.mimetype.clone() }, binval: Binval { data: self.bytes.to_vec() } };
        VCard { photo: Some(photo), payloads: Vec::new() }
    }

    /// The presence payload naming the picture.
    pub fn update(&self) -> VCardUpdate {
        VCardUpdate { photo: Some(UpdatePhoto { data: Some(self.sha1) }) }
    }
}

/// SHA-1 of a picture (xmpp-parsers' caps module hashes any bytes).
pub fn sha1(bytes: &[u8]) -> [u8; 20] {
    let hash = caps::hash_caps(bytes, Algo::Sha_1).expect("SHA-1 is one of the caps algorithms").hash;
    hash.try_into().expect("SHA-1 is 20 bytes")
}

/// Avatars by `mxc://` URI (Matrix pictures), and uploads by SHA-1 (XMPP pictures).
#[derive(Debug, Default)]
pub struct AvatarCache {
    by_mxc: DashMap<String, Avatar>,
    uploaded: DashMap<[u8; 20], String>,
}

/// The user setting that records which XMPP picture (SHA-1, hex) a ghost's avatar is.
const AVATAR_SETTING: &str = "xmpp.avatar_sha1";

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

impl crate::muc::Gateway {
    /// Brings a MUC occupant's ghost avatar in line with the picture its presence names (XEP-0153), in its own
    /// task: the vCard answer arrives on the stanza loop this is called from.
    pub(crate) fn sync_occupant_avatar(self: &Arc<Self>, presence: &Presence) {
        let (Some(from), Some(to)) = (presence.from.clone(), presence.to.as_ref()) else { return };
        let Some(update) = presence.payloads.iter().find_map(|element| VCardUpdate::try_from(element.clone()).ok())
        else {
            return;
        };
        let Some(Some(sha1)) = update.photo.map(|photo| photo.data) else { return };
        let (Ok(occupant), Some(nick)) = (from.clone().try_into_full(), from.resource().map(|nick| nick.to_string()))
        else {
            return;
        };
        let room = occupant.to_bare();
        if !self.is_bridged_muc(&room) || self.is_own_nick(&room, &nick) || to.node().is_some() {
            return;
        }
        let Some(identity) = self.occupant_identity(&presence.payloads, occupant.clone()) else { return };
        let Some(ghost) = self.ghost(&identity, &nick) else { return };
        let gateway = Arc::clone(self);
        let listener = to.clone();
        tokio::spawn(async move {
            if let Err(error) = gateway.sync_ghost_avatar(ghost, listener, occupant, sha1).await {
                tracing::info!(%error, "cannot bring an XMPP avatar to Matrix");
            }
        });
    }

    async fn sync_ghost_avatar(
        &self,
        ghost: GhostSpec,
        listener: Jid,
        occupant: FullJid,
        named: [u8; 20],
    ) -> lattice_bridge_core::Result<()> {
        let store = self.bridge.store();
        if store.user_setting(&ghost.user_id, AVATAR_SETTING).await?.as_deref() == Some(hex(&named).as_str()) {
            return Ok(());
        }
        let mxc = match self.avatars.uploaded.get(&named).map(|known| known.clone()) {
            Some(mxc) => mxc,
            None => {
                // The MUC passes vCard queries to an occupant on to their account (the bare JID).
                let query = Iq::from_get(String::new(), VCardQuery).with_from(listener).with_to(occupant.into());
                let Some(Iq::Result { payload: Some(payload), .. }) = self.request(query).await else { return Ok(()) };
                let Some(photo) = VCard::try_from(payload).ok().and_then(|vcard| vcard.photo) else { return Ok(()) };
                if photo.binval.data.len() > MAX_AVATAR_BYTES || sha1(&photo.binval.data) != named {
                    return Ok(());
                }
                let bytes = Bytes::from(photo.binval.data);
                let mxc = self.bridge.matrix().upload_media(bytes, &photo.type_.data, None).await?.to_string();
                self.avatars.uploaded.insert(named, mxc.clone());
                mxc
            }
        };
        self.bridge.sync_ghost(&GhostSpec { avatar_url: Some(mxc), ..ghost.clone() }).await?;
        store.set_user_setting(&ghost.user_id, AVATAR_SETTING, Some(&hex(&named))).await?;
        Ok(())
    }

    /// A Matrix user's avatar, fetched once per URI; `None` without one (or when it cannot be fetched).
    pub(crate) async fn matrix_avatar(&self, user_id: &str) -> Option<Avatar> {
        let user = ruma::OwnedUserId::try_from(user_id).ok()?;
        let matrix = self.bridge.matrix();
        let mxc = matrix.bot().get_profile(&user).await.ok()??.avatar_url?;
        if let Some(known) = self.avatars.by_mxc.get(mxc.as_str()) {
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
            tracing::info!(%user_id, size = bytes.len(), "a Matrix avatar is too large to put in a vCard");
            return None;
        }
        let avatar = Avatar::new(bytes, mimetype);
        self.avatars.by_mxc.insert(mxc.to_string(), avatar.clone());
        Some(avatar)
    }

    /// Answers a vcard-temp query to a gateway user JID with the Matrix user's avatar; `None` for other IQs.
    pub(crate) async fn vcard_answer(&self, iq: &Iq) -> Option<Iq> {
        let Iq::Get { from: Some(from), to: Some(to), id, payload } = iq else { return None };
        if !payload.is("vCard", ns::VCARD) || !self.addressing.is_gateway_domain(to.domain().as_str()) {
            return None;
        }
        let user = self.addressing.matrix_user_of(&to.to_bare())?;
        let vcard = match self.matrix_avatar(&user).await {
            Some(avatar) => avatar.vcard(),
            None => VCard { photo: None, payloads: Vec::new() },
        };
        Some(Iq::from_result(id.clone(), Some(vcard)).with_from(to.clone()).with_to(from.clone()))
    }
}

#[cfg(test)]
mod tests {
    use xmpp_parsers::minidom::Element;

    use super::*;

    #[test]
    fn pictures_are_named_by_their_sha1() {
        // SHA-1("abc"), FIPS 180-2 appendix A.1.
        let expected = "a9993e364706816aba3e25717850c26c9cd0d89d";
        assert_eq!(hex(&sha1(b"abc")), expected);
        let avatar = Avatar::new(Bytes::from_static(b"abc"), Some("image/jpeg".into()));
        let update = Element::from(avatar.update());
        assert_eq!(update.get_child("photo", ns::VCARD_UPDATE).map(Element::text).as_deref(), Some(expected));
        let vcard = VCard::try_from(Element::from(avatar.vcard())).unwrap();
        assert_eq!(
            vcard.photo.map(|photo| (photo.type_.data, photo.binval.data)),
            Some(("image/jpeg".into(), b"abc".to_vec()))
        );
    }
}
