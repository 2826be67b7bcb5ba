//! Entry points of the coverage-guided fuzz targets in `fuzz/` and of the tests that replay their corpora: each takes
//! any bytes, reads them as the bridge reads what a homeserver or a Matrix user sends, and panics when an invariant
//! breaks. See `docs/reliability.md` for how to run them.

use crate::formatting::{RichText, parse_matrix_html, render_matrix_html, render_plain};

/// A transaction body (`PUT /transactions/{txnId}`), read as the appservice reads it: the body, the queue key of
/// each event, the deduplication key, and each queued event as the runtime parses it.
pub fn transaction_body(data: &[u8]) {
    crate::appservice::peek_transaction(data);
}

/// Matrix HTML → IR → Matrix HTML and plain text: rendering what was parsed and parsing it again changes nothing
/// more (the second round is a fixpoint).
pub fn matrix_html(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let (body, html) = text.split_once('\0').unwrap_or((text, text));
    let rich = RichText::from_message(body, Some(html), Some(crate::formatting::MATRIX_HTML_FORMAT));
    let _ = rich.to_message();
    let _ = render_plain(&rich);
    let rendered = render_matrix_html(&parse_matrix_html(html));
    let again = render_matrix_html(&parse_matrix_html(&rendered));
    assert_eq!(render_matrix_html(&parse_matrix_html(&again)), again, "Matrix HTML does not settle: {html:?}");
}

#[cfg(test)]
mod tests {
    pub(crate) fn replay(name: &str, target: fn(&[u8])) {
        crate::testing::replay_corpus(env!("CARGO_MANIFEST_DIR"), name, target);
    }

    #[test]
    fn the_corpora_replay_without_a_failure() {
        replay("transaction_body", super::transaction_body);
        replay("matrix_html", super::matrix_html);
    }
}
