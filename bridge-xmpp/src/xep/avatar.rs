//! Matrix avatars for gateway user JIDs: [XEP-0054: vcard-temp](https://xmpp.org/extensions/xep-0054.html) answers
//! with the picture, and [XEP-0153: vCard-Based Avatars](https://xmpp.org/extensions/xep-0153.html) photo hashes
//! in their MUC presence, so XMPP clients show (and cache by hash) the Matrix user's avatar.
//!
//! Pictures are fetched from the homeserver once per `mxc://` URI and kept by URI: a Matrix avatar never changes
//! behind its URI, and an unchanged avatar is neither downloaded nor hashed again.

use bytes::Bytes;
use dashmap::DashMap;
use xmpp_parsers::{
    caps,
    hashes::Algo,
    iq::Iq,
    ns,
    vcard::{Binval, Photo, Type, VCard},
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

/// Avatars by `mxc://` URI.
#[derive(Debug, Default)]
pub struct AvatarCache {
    by_mxc: DashMap<String, Avatar>,
}

impl crate::muc::Gateway {
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
        let hex: String = sha1(b"abc").iter().map(|byte| format!("{byte:02x}")).collect();
        assert_eq!(hex, expected);
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
