//! Entry points of the coverage-guided fuzz targets in `fuzz/` and of the test that replays their corpora: each takes
//! any bytes, reads them as the XMPP bridge reads what a server or a Matrix user sends, and panics when an invariant
//! breaks. See `docs/reliability.md` for how to run them.

use std::{str::FromStr as _, sync::Arc};

use lattice_bridge_core::formatting::parse_matrix_html;
use tokio_xmpp::parsers::{message::Message, minidom::Element};

use crate::{
    addressing::{decode_localpart, encode_localpart, escape_node, unescape_node},
    gateway::{
        messages::to_matrix::text_of,
        skim::{MAX_HEAD_BYTES, Skimmer},
    },
    styling::{parse_styling, render_styling},
    xhtml::incoming_text,
};

/// The skimmer over any byte stream split anywhere: the first bytes pick the split points. Dropping nothing, it
/// passes every byte unchanged but for a stanza start tag whose end has not come yet, which it holds (at most
/// `MAX_HEAD_BYTES`); dropping groupchat messages, it gives the same bytes however the stream is split.
pub fn skimmer(data: &[u8]) {
    let (splits, stream) = data.split_at(data.len().min(4));
    let cuts: Vec<usize> = {
        let mut cuts: Vec<usize> = splits.iter().map(|byte| usize::from(*byte) * stream.len() / 256).collect();
        cuts.sort_unstable();
        cuts
    };
    let run = |drop_groupchat: bool, pieces: &[&[u8]]| {
        let mut skimmer = Skimmer::new(Arc::new(move |head: &crate::gateway::skim::StanzaHead<'_>| {
            drop_groupchat && head.name == b"message" && head.kind == Some(b"groupchat")
        }));
        let mut out = Vec::new();
        for piece in pieces {
            skimmer.feed(piece, &mut out);
        }
        out
    };
    let mut pieces = Vec::new();
    let mut at = 0;
    for cut in cuts {
        pieces.push(&stream[at..cut]);
        at = cut;
    }
    pieces.push(&stream[at..]);
    let passed = run(false, &pieces);
    let held = stream.strip_prefix(passed.as_slice()).expect("the skimmer changed a stream it was to pass whole");
    assert!(
        held.is_empty() || (held[0] == b'<' && held.len() <= MAX_HEAD_BYTES),
        "the skimmer kept back {} bytes that are no start tag waiting for its end",
        held.len()
    );
    assert_eq!(run(true, &pieces), run(true, &[stream]), "the skimmer's output depends on how the stream is split");
}

/// A stanza as the gateway turns a message into Matrix text: parsed, read as a message, its reply fallback taken
/// off, its XHTML-IM or styling made into Matrix HTML.
pub fn stanza(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(element) = Element::from_str(text) else { return };
    let Ok(message) = Message::try_from(element) else { return };
    let body = message.bodies.values().next().cloned().unwrap_or_default();
    for reply in [false, true] {
        let (_, text) = text_of(&message.payloads, body.clone(), reply);
        let _ = incoming_text(&message.payloads, &text);
    }
}

/// JID node escaping (XEP-0106) and Matrix localpart encoding: each undoes the other for any text.
pub fn jid_escaping(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    assert_eq!(unescape_node(&escape_node(&text)), text, "XEP-0106 escaping does not round-trip");
    let encoded = encode_localpart(&text);
    assert!(
        encoded.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._=-".contains(&b)),
        "{encoded:?} is no Matrix localpart"
    );
    assert_eq!(decode_localpart(&encoded).as_deref(), Some(&*text), "the localpart encoding does not round-trip");
}

/// Matrix HTML → IR → XEP-0393 styling, and the styling read back: rendering settles after one round.
pub fn matrix_html_to_xmpp(data: &[u8]) {
    let Ok(html) = std::str::from_utf8(data) else { return };
    let styled = render_styling(&parse_matrix_html(html));
    let again = render_styling(&parse_styling(&styled));
    assert_eq!(render_styling(&parse_styling(&again)), again, "XMPP styling does not settle: {html:?}");
}

#[cfg(test)]
mod tests {
    fn replay(name: &str, target: fn(&[u8])) {
        lattice_bridge_core::testing::replay_corpus(env!("CARGO_MANIFEST_DIR"), name, target);
    }

    #[test]
    fn the_corpora_replay_without_a_failure() {
        replay("skimmer", super::skimmer);
        replay("stanza", super::stanza);
        replay("jid_escaping", super::jid_escaping);
        replay("matrix_html_to_xmpp", super::matrix_html_to_xmpp);
    }
}
