//! Finds where a dotted field path such as `bridge.networks.libera.servers[0].host` is written in
//! a YAML document, so validation errors can point at a line and column.
//!
//! This reads block-style YAML by indentation only (keys of a mapping share one indentation; the
//! items of a sequence start with `- `); it does not need to understand every YAML feature,
//! because a field it cannot follow (a flow collection, an anchor) falls back to the nearest
//! parent it did find.

use crate::Location;

/// One meaningful line: not blank, not a comment, not a document marker.
#[derive(Clone, Copy, Debug)]
struct Line<'a> {
    /// 1-based line number.
    number: usize,
    /// Spaces before `content` (for an item's first key, including the `- ` before it).
    indent: usize,
    /// The line without its indentation and trailing spaces.
    content: &'a str,
}

#[derive(Debug, PartialEq, Eq)]
enum Segment<'p> {
    Key(&'p str),
    Index(usize),
}

/// Where `field` is written in `text`: the key of its last segment, or the `-` of a list item.
///
/// When the full path cannot be followed, returns the location of the deepest parent found, and
/// `None` when not even the first segment is there.
pub(crate) fn locate(text: &str, field: &str) -> Option<Location> {
    let mut block = lines(text);
    let mut found = None;
    for segment in segments(field) {
        let next = match segment {
            Segment::Key(key) => find_key(&block, key),
            Segment::Index(index) => find_item(&block, index),
        };
        let Some((location, children)) = next else { break };
        found = Some(location);
        block = children;
    }
    found
}

fn lines(text: &str) -> Vec<Line<'_>> {
    text.lines()
        .enumerate()
        .filter_map(|(index, raw)| {
            let content = raw.trim_start_matches(' ');
            let indent = raw.len() - content.len();
            let content = content.trim_end();
            let skip = content.is_empty()
                || content.starts_with('#')
                || (indent == 0 && (content == "---" || content.starts_with("--- ") || content == "..."));
            (!skip).then_some(Line { number: index + 1, indent, content })
        })
        .collect()
}

fn segments(field: &str) -> Vec<Segment<'_>> {
    let mut segments = Vec::new();
    for part in field.split('.').filter(|part| !part.is_empty()) {
        let (key, mut indices) = part.split_once('[').map_or((part, ""), |(k, rest)| (k, rest));
        if !key.is_empty() {
            segments.push(Segment::Key(key));
        }
        while let Some((index, rest)) = indices.split_once(']') {
            if let Ok(index) = index.parse() {
                segments.push(Segment::Index(index));
            }
            indices = rest.strip_prefix('[').unwrap_or(rest);
        }
    }
    segments
}

fn is_item(content: &str) -> bool {
    content == "-" || content.starts_with("- ")
}

/// The key of a `key: value` or `key:` line, unquoted.
fn mapping_key(content: &str) -> Option<&str> {
    if is_item(content) {
        return None;
    }
    if let Some(quote @ ('"' | '\'')) = content.chars().next() {
        let inner = &content[1..];
        let end = inner.find(quote)?;
        return inner[end + 1..].trim_start().starts_with(':').then(|| &inner[..end]);
    }
    let colon =
        content.char_indices().find(|&(i, c)| c == ':' && content[i + 1..].chars().next().is_none_or(|c| c == ' '))?.0;
    Some(content[..colon].trim_end())
}

/// Finds `key` among the keys of `block` and returns its location and the lines of its value.
fn find_key<'a>(block: &[Line<'a>], key: &str) -> Option<(Location, Vec<Line<'a>>)> {
    let indent = block.first()?.indent;
    let position = block.iter().position(|line| line.indent == indent && mapping_key(line.content) == Some(key))?;
    let line = block[position];
    // A sequence value may be written at the key's own indentation.
    let children = block[position + 1..]
        .iter()
        .take_while(|l| l.indent > indent || (l.indent == indent && is_item(l.content)))
        .copied()
        .collect();
    Some((Location { line: line.number, column: indent + 1 }, children))
}

/// Finds item `index` of the sequence in `block` and returns the location of its `-` and its
/// lines, the first one starting after the `- `.
fn find_item<'a>(block: &[Line<'a>], index: usize) -> Option<(Location, Vec<Line<'a>>)> {
    let indent = block.first()?.indent;
    let position =
        block.iter().enumerate().filter(|(_, line)| line.indent == indent && is_item(line.content)).nth(index)?.0;
    let line = block[position];
    let after_dash = &line.content[1..];
    let inline = after_dash.trim_start_matches(' ');
    let mut children = Vec::new();
    if !inline.is_empty() && !inline.starts_with('#') {
        let offset = 1 + after_dash.len() - inline.len();
        children.push(Line { number: line.number, indent: indent + offset, content: inline });
    }
    children.extend(block[position + 1..].iter().take_while(|l| l.indent > indent).copied());
    Some((Location { line: line.number, column: indent + 1 }, children))
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC: &str = "\
# Lattice configuration
---
homeserver:
  url: https://matrix.example.org   # comment
  server_name: example.org

appservice:
  id: lattice
  port: 0
  bot:
    localpart: Bot
permissions:
  admins:
  - '@alice:example.org'
  - '*:evil'
  users: ['*']
bridge:
  networks:
    libera:
      servers:
        - host: irc.libera.chat
          port: 6697
        -   host: ''
            tls: true
        -
          host: third
      'quoted key': 1
      \"double\": 2
  list_of_lists:
    - - a
      - b
";

    #[test]
    fn locates_fields() {
        let at = |line, column| Some(Location { line, column });
        let cases = [
            ("homeserver", at(3, 1)),
            ("homeserver.url", at(4, 3)),
            ("homeserver.server_name", at(5, 3)),
            ("appservice.port", at(9, 3)),
            ("appservice.bot.localpart", at(11, 5)),
            ("permissions.admins", at(13, 3)),
            ("permissions.admins[0]", at(14, 3)),
            ("permissions.admins[1]", at(15, 3)),
            ("permissions.users", at(16, 3)),
            // Flow sequence: falls back to the key.
            ("permissions.users[0]", at(16, 3)),
            ("bridge.networks.libera.servers[0]", at(21, 9)),
            ("bridge.networks.libera.servers[0].host", at(21, 11)),
            ("bridge.networks.libera.servers[0].port", at(22, 11)),
            ("bridge.networks.libera.servers[1].host", at(23, 13)),
            ("bridge.networks.libera.servers[1].tls", at(24, 13)),
            ("bridge.networks.libera.servers[2].host", at(26, 11)),
            ("bridge.networks.libera.quoted key", at(27, 7)),
            ("bridge.networks.libera.double", at(28, 7)),
            ("bridge.list_of_lists[0][1]", at(31, 7)),
            // Missing pieces fall back to the nearest parent.
            ("bridge.networks.libera.servers[7].host", at(20, 7)),
            ("appservice.public_url", at(7, 1)),
            ("homeserver.url.scheme", at(4, 3)),
            ("database.url", None),
            ("", None),
        ];
        for (field, expected) in cases {
            assert_eq!(locate(DOC, field), expected, "{field}");
        }
    }

    #[test]
    fn does_not_confuse_nested_keys_with_top_level_ones() {
        let doc = "a:\n  port: 1\nport: 2\n";
        assert_eq!(locate(doc, "port"), Some(Location { line: 3, column: 1 }));
        assert_eq!(locate(doc, "a.port"), Some(Location { line: 2, column: 3 }));
    }

    #[test]
    fn splits_paths() {
        use Segment::{Index, Key};
        let cases = [
            ("a", vec![Key("a")]),
            ("a.b", vec![Key("a"), Key("b")]),
            ("a[0].b", vec![Key("a"), Index(0), Key("b")]),
            ("a[1][2]", vec![Key("a"), Index(1), Index(2)]),
            ("[3].x", vec![Index(3), Key("x")]),
            ("", vec![]),
        ];
        for (field, expected) in cases {
            assert_eq!(segments(field), expected, "{field}");
        }
    }

    #[test]
    fn mapping_keys() {
        let cases = [
            ("key: value", Some("key")),
            ("key:", Some("key")),
            ("url: https://x:8448/y", Some("url")),
            ("'a b': 1", Some("a b")),
            ("\"a\" : 1", Some("a")),
            ("- key: v", None),
            ("plain scalar", None),
            ("http://x", None),
        ];
        for (content, expected) in cases {
            assert_eq!(mapping_key(content), expected, "{content}");
        }
    }
}
