//! Rich text: the intermediate representation ([`RichText`]) that messages take between Matrix and a remote
//! network, with Matrix's two encodings of it — `org.matrix.custom.html` ([`parse_matrix_html`],
//! [`render_matrix_html`]) and the plain-text `body` ([`parse_plain`], [`render_plain`]) — and
//! [`RichText::from_message`] / [`RichText::to_message`] for connectors.
//!
//! Protocol crates translate their network's markup (mIRC control codes, XEP-0393 message styling, …) to and from
//! the same IR, so each network needs one pair of conversions rather than one per pair of networks.
//!
//! The IR has no paragraphs, headings, lists, tables or rules, because no bridged network does: parsing flattens
//! them into lines of text, headings into bold, and list items into `• item` or `1. item` lines.

mod html;
mod ir;
mod message;
mod permalink;
mod plain;
#[cfg(test)]
mod strategy;

pub use html::{parse_matrix_html, render_matrix_html};
pub use ir::{Mention, MentionTarget, Node, ParseRgbError, Rgb, RichText};
pub use message::MATRIX_HTML_FORMAT;
pub use plain::{parse_plain, render_plain, strip_reply_fallback};
