//! Matrix `org.matrix.custom.html` (the `formatted_body` of `m.room.message`) to and from [`RichText`].
//!
//! See the client-server spec, "m.room.message msgtypes" for the HTML subset clients send, and "Rich replies" for
//! the `<mx-reply>` fallback that this parser drops. Parsing goes through html5ever (via `scraper`), so entities,
//! unclosed tags and misnested markup are handled as a browser would.

use scraper::Html;

use self::{parse::Parser, render::render_nodes};
use crate::formatting::RichText;

mod parse;
mod render;
#[cfg(test)]
mod tests;

/// Parses a Matrix `formatted_body` into the normalised IR.
///
/// Reply fallbacks (`<mx-reply>`), `<script>` and `<style>` content are dropped; unknown elements keep their text.
/// Links to matrix.to (or `matrix:`) permalinks of users, room aliases and room IDs become
/// [`Node::Mention`](crate::formatting::Node::Mention)s. Colours come from `data-mx-color`, `data-mx-bg-color` and
/// `<font color>`. Paragraphs, headings, lists, tables and rules are flattened into lines (see the
/// [module docs](crate::formatting)). Newlines in the HTML source are whitespace, not line breaks, except inside
/// `<pre>` and `<code>`.
pub fn parse_matrix_html(html: &str) -> RichText {
    let fragment = Html::parse_fragment(html);
    let mut parser = Parser::new();
    parser.children(fragment.root_element(), 0);
    let mut rich = RichText { nodes: parser.finish() };
    rich.normalise();
    rich
}

/// Renders the IR as a Matrix `formatted_body`. For normalised input, [`parse_matrix_html`] gives the input back.
pub fn render_matrix_html(rich: &RichText) -> String {
    let mut html = String::new();
    render_nodes(&mut html, &rich.nodes);
    html
}
