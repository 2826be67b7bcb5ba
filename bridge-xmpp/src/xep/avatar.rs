//! Avatars both ways with [XEP-0054: vcard-temp](https://xmpp.org/extensions/xep-0054.html) and
//! [XEP-0153: vCard-Based Avatars](https://xmpp.org/extensions/xep-0153.html); the pieces both these and
//! [XEP-0084](super::user_avatar) share: Matrix pictures fetched once per `mxc://` URI, XMPP pictures uploaded once
//! per SHA-1, and the answer to a gateway user JID's avatar queries (vCard or PEP).
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
//! instead.

use bytes::Bytes;
use xmpp_parsers::{
    caps,
    hashes::Algo,
    presence::Presence,
    vcard::{Binval, Photo, Type, VCard},
    vcard_update::{Photo as UpdatePhoto, VCardUpdate},
};

/// Largest avatar served or taken, in bytes (XEP-0153 suggests small pictures; vCards travel inline,
/// base64-encoded).
pub(crate) const MAX_AVATAR_BYTES: usize = 256 * 1024;

/// One Matrix avatar, ready to serve.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Avatar {
    /// The picture.
    pub bytes: Bytes,
    /// Its MIME type.
    pub mimetype: String,
    /// Its SHA-1, as XEP-0153 and XEP-0084 name pictures.
    pub sha1: [u8; 20],
}

impl Avatar {
    /// An avatar from the picture's bytes.
    pub(crate) fn new(bytes: Bytes, mimetype: Option<String>) -> Self {
        Self { sha1: sha1(&bytes), mimetype: mimetype.unwrap_or_else(|| "image/png".into()), bytes }
    }

    /// The vCard carrying the picture.
    pub(crate) fn vcard(&self) -> VCard {
        let photo = Photo { type_: Type { data: self.mimetype.clone() }, binval: Binval { data: self.bytes.to_vec() } };
        VCard { photo: Some(photo), payloads: Vec::new() }
    }

    /// The presence payload naming the picture.
    pub(crate) fn update(&self) -> VCardUpdate {
        VCardUpdate { photo: Some(UpdatePhoto { data: Some(self.sha1) }) }
    }
}

/// An XMPP person's picture as fetched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Picture {
    /// The picture.
    pub bytes: Vec<u8>,
    /// Its MIME type.
    pub mimetype: String,
}

/// SHA-1 of a picture (xmpp-parsers' caps module hashes any bytes).
pub(crate) fn sha1(bytes: &[u8]) -> [u8; 20] {
    let hash = caps::hash_caps(bytes, Algo::Sha_1).expect("SHA-1 is one of the caps algorithms").hash;
    hash.try_into().expect("SHA-1 is 20 bytes")
}

/// Lower-case hex digits, as XEP-0153 and XEP-0084 write SHA-1s.
pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// The SHA-1 a presence names with XEP-0153, if it names one.
pub(crate) fn named_picture(presence: &Presence) -> Option<Option<[u8; 20]>> {
    let update = presence.payloads.iter().find_map(|element| VCardUpdate::try_from(element.clone()).ok())?;
    Some(update.photo?.data)
}

#[cfg(test)]
mod tests {
    use xmpp_parsers::{minidom::Element, ns};

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
