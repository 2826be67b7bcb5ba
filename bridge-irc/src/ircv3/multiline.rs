//! `draft/multiline` (<https://ircv3.net/specs/extensions/multiline>): a message of several lines sent as one
//! `draft/multiline` batch, so clients that support it show one message (and servers count it as one), instead of
//! the bridge's usual split into separate lines or a link to the whole text.
//!
//! The capability's value gives the limits (`max-bytes=4096,max-lines=24`); a message beyond them takes the usual
//! path. A line longer than an IRC line is cut into pieces; every piece after the first carries
//! `draft/multiline-concat`, so the receiver joins them again without a line break.

use super::tags::TagError;
use crate::line::{Line, LineError, MAX_LINE};

/// The server's limits for one multiline message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Limits {
    /// The most bytes of message text (line breaks count as one byte each).
    pub(crate) max_bytes: usize,
    /// The most lines (pieces) in the batch.
    pub(crate) max_lines: usize,
}

/// Reads the capability's value; `max-bytes` is required by the spec, `max-lines` is optional.
pub(crate) fn limits(value: Option<&str>) -> Option<Limits> {
    let mut max_bytes = None;
    let mut max_lines = usize::MAX;
    for pair in value?.split(',') {
        match pair.split_once('=') {
            Some(("max-bytes", bytes)) => max_bytes = bytes.parse().ok(),
            Some(("max-lines", lines)) => max_lines = lines.parse().ok()?,
            _ => {}
        }
    }
    Some(Limits { max_bytes: max_bytes?, max_lines })
}

/// Why a multiline batch could not be built.
#[derive(Debug, thiserror::Error)]
pub(crate) enum MultilineError {
    /// A line did not encode.
    #[error(transparent)]
    Line(#[from] LineError),
    /// A tag did not encode.
    #[error(transparent)]
    Tag(#[from] TagError),
}

/// The lines of a `draft/multiline` batch carrying `text` to `target` with `command` (`PRIVMSG` or `NOTICE`), the
/// opening line tagged with `opener_tags` (a `label`). `None` when the text is within one line (no batch needed)
/// or beyond the server's limits.
pub(crate) fn batch(
    command: &str,
    target: &str,
    text: &str,
    prefix_len: usize,
    reference: &str,
    limits: Limits,
    opener_tags: &[(&str, Option<&str>)],
) -> Result<Option<Vec<Line>>, MultilineError> {
    let overhead = prefix_len + command.len() + 1 + target.len() + 2 + 2;
    let room = MAX_LINE.saturating_sub(overhead).max(16);
    let mut pieces: Vec<(String, bool)> = Vec::new();
    for line in text.split('\n') {
        let line = line.trim_end_matches('\r').replace('\0', "");
        for (index, piece) in cut(&line, room).into_iter().enumerate() {
            pieces.push((piece.to_owned(), index > 0));
        }
    }
    if pieces.len() < 2 || pieces.len() > limits.max_lines || text.len() > limits.max_bytes {
        return Ok(None);
    }
    let batch_tag = [("batch", Some(reference))];
    let mut lines =
        vec![Line::new("BATCH", &[&format!("+{reference}"), "draft/multiline", target], None)?.tagged(opener_tags)?];
    for (piece, concat) in &pieces {
        let line = Line::new(command, &[target], Some(piece))?;
        let line = if *concat {
            line.tagged(&[("batch", Some(reference)), ("draft/multiline-concat", None)])?
        } else {
            line.tagged(&batch_tag)?
        };
        lines.push(line);
    }
    lines.push(Line::new("BATCH", &[&format!("-{reference}")], None)?);
    Ok(Some(lines))
}

/// Cuts a line into pieces of at most `room` bytes at character boundaries, keeping every byte: the receiver
/// concatenates them as they are (unlike the usual split, which breaks at spaces and drops them).
fn cut(line: &str, room: usize) -> Vec<&str> {
    let mut pieces = Vec::new();
    let mut rest = line;
    while rest.len() > room {
        let mut at = room;
        while !rest.is_char_boundary(at) {
            at -= 1;
        }
        let at = if at == 0 { rest.chars().next().map_or(rest.len(), char::len_utf8) } else { at };
        pieces.push(&rest[..at]);
        rest = &rest[at..];
    }
    pieces.push(rest);
    pieces
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(lines: &[Line]) -> Vec<String> {
        lines.iter().map(|line| String::from_utf8_lossy(line.as_bytes()).trim_end().to_owned()).collect()
    }

    #[test]
    fn limits_come_from_the_cap_value() {
        assert_eq!(limits(Some("max-bytes=4096,max-lines=24")), Some(Limits { max_bytes: 4096, max_lines: 24 }));
        assert_eq!(limits(Some("max-bytes=100")), Some(Limits { max_bytes: 100, max_lines: usize::MAX }));
        assert_eq!(limits(Some("max-lines=5")), None);
        assert_eq!(limits(None), None);
    }

    #[test]
    fn several_lines_become_one_batch_and_long_lines_are_concatenated() {
        let limits = Limits { max_bytes: 4096, max_lines: 24 };
        let long = "word ".repeat(120);
        let message = format!("first\n\n{}", long.trim_end());
        let lines = batch("PRIVMSG", "#c", &message, 80, "ml1", limits, &[("label", Some("L1"))]).unwrap().unwrap();
        let lines = text(&lines);
        assert_eq!(lines[0], "@label=L1 BATCH +ml1 draft/multiline #c");
        assert_eq!(lines[1], "@batch=ml1 PRIVMSG #c :first");
        assert_eq!(lines[2], "@batch=ml1 PRIVMSG #c :");
        assert!(lines[3].starts_with("@batch=ml1 PRIVMSG #c :word word"));
        assert!(lines[4].starts_with("@batch=ml1;draft/multiline-concat PRIVMSG #c :"), "{}", lines[4]);
        assert_eq!(lines.last().unwrap(), "BATCH -ml1");
        let rejoined: String = lines[3..lines.len() - 1].iter().map(|line| line.split_once(" :").unwrap().1).collect();
        assert_eq!(rejoined, long.trim_end());
        assert_eq!(cut("日本語", 4), ["日", "本", "語"]);
    }

    #[test]
    fn one_line_or_too_much_takes_the_usual_path() {
        let limits = Limits { max_bytes: 50, max_lines: 3 };
        assert!(batch("PRIVMSG", "#c", "one line", 80, "r", limits, &[]).unwrap().is_none());
        assert!(batch("PRIVMSG", "#c", "a\nb\nc\nd", 80, "r", limits, &[]).unwrap().is_none());
        assert!(
            batch("PRIVMSG", "#c", &"x\n".repeat(30), 80, "r", Limits { max_lines: 100, ..limits }, &[])
                .unwrap()
                .is_none()
        );
        assert!(batch("NOTICE", "#c", "a\nb", 80, "r", limits, &[]).unwrap().is_some());
    }
}
