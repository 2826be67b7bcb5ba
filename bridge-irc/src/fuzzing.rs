//! Entry points of the coverage-guided fuzz targets in `fuzz/` and of the test that replays their corpora: each takes
//! any bytes, reads them as the IRC bridge reads what an IRC server, a Matrix user or an operator sends, and panics
//! when an invariant breaks. See `docs/reliability.md` for how to run them.

use std::str::FromStr as _;

use lattice_bridge_core::formatting::{Mention, parse_matrix_html};
use lattice_config::Config;

use crate::{
    IrcSection,
    line::{Line, TextKind, loggable, text_lines, worst_case_prefix},
    mirc,
};

/// IRC lines as a server sends them, then the encoder: whatever command, parameters and text it is given, it makes
/// exactly one line of at most 512 bytes that reads back as the same command and parameters.
pub fn irc_line(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    for line in text.split(['\r', '\n']) {
        let _ = loggable(line);
        if let Ok(message) = irc::proto::Message::from_str(line) {
            let _ = message.to_string();
            let _ = message.source_nickname();
        }
    }
    let mut fields = text.split('\0');
    let command = fields.next().unwrap_or_default();
    let middle: Vec<&str> = fields.next().unwrap_or_default().split(' ').filter(|p| !p.is_empty()).collect();
    let trailing = fields.next();
    if let Ok(line) = Line::new(command, &middle, trailing) {
        let (read_command, params) = read_back(&line);
        assert_eq!(read_command, command, "the command changed");
        let mut expected: Vec<String> = middle.iter().map(|p| (*p).to_owned()).collect();
        expected.extend(trailing.map(|t| t.replace(['\r', '\n', '\0'], " ")));
        assert_eq!(params, expected, "the parameters changed");
    }
    for (kind, target) in [(TextKind::Privmsg, "#chan"), (TextKind::Action, "nick"), (TextKind::Notice, "#a")] {
        if let Ok(lines) = text_lines(target, kind, &text, worst_case_prefix("somebody")) {
            for line in lines {
                let (_, params) = read_back(&line);
                assert_eq!(params.first().map(String::as_str), Some(target), "a line went elsewhere");
            }
        }
    }
}

/// The command and parameters of an encoded line, read as RFC 1459 says; checks it is one line within 512 bytes.
fn read_back(line: &Line) -> (String, Vec<String>) {
    let bytes = line.as_bytes();
    assert!(bytes.len() <= crate::line::MAX_LINE, "a line of {} bytes", bytes.len());
    let body = bytes.strip_suffix(b"\r\n").expect("a line ends with CR LF");
    assert!(!body.iter().any(|b| matches!(b, b'\r' | b'\n' | 0)), "a second line inside: {body:?}");
    let text = std::str::from_utf8(body).expect("lines are built from text");
    let (head, trailing) = match text.split_once(" :") {
        Some((head, trailing)) => (head, Some(trailing)),
        None => (text, None),
    };
    let mut words = head.split(' ');
    let command = words.next().unwrap_or_default().to_owned();
    let mut params: Vec<String> = words.map(str::to_owned).collect();
    params.extend(trailing.map(str::to_owned));
    (command, params)
}

/// mIRC codes → IR → mIRC codes: the second round changes nothing, and stripping leaves no formatting code.
pub fn mirc(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let mention = |mention: &Mention| mention.display.clone();
    let rendered = mirc::render(&mirc::parse(&text), &mention);
    let again = mirc::render(&mirc::parse(&rendered), &mention);
    assert_eq!(mirc::render(&mirc::parse(&again), &mention), again, "mIRC formatting does not settle: {text:?}");
    let stripped = mirc::strip(&text);
    assert!(
        !stripped.contains(['\x02', '\x03', '\x04', '\x0f', '\x11', '\x16', '\x1d', '\x1e', '\x1f']),
        "{stripped:?}"
    );
    let _ = mirc::codes_to_restore(&text);
}

/// Matrix HTML → IR → IRC lines: each line a single command of at most 512 bytes to the right target.
pub fn matrix_html_to_irc(data: &[u8]) {
    let Ok(html) = std::str::from_utf8(data) else { return };
    let text = mirc::render(&parse_matrix_html(html), &|mention: &Mention| mention.display.clone());
    if let Ok(lines) = text_lines("#chan", TextKind::Privmsg, &text, worst_case_prefix("somebody")) {
        for line in lines {
            let (command, params) = read_back(&line);
            assert_eq!((command.as_str(), params.first().map(String::as_str)), ("PRIVMSG", Some("#chan")));
        }
    }
}

/// A configuration file of the IRC bridge: loaded and validated, or refused with an error that can be shown.
pub fn config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    // Secrets may be read from files; the fuzzer is not to read the system's endless ones.
    if ["/dev", "/proc", "/sys"].iter().any(|special| text.contains(special)) {
        return;
    }
    if let Err(error) = Config::<IrcSection>::from_yaml_str(text, "/nonexistent/lattice-fuzz/config.yaml") {
        let _ = error.to_string();
    }
}

#[cfg(test)]
mod tests {
    fn replay(name: &str, target: fn(&[u8])) {
        lattice_bridge_core::testing::replay_corpus(env!("CARGO_MANIFEST_DIR"), name, target);
    }

    #[test]
    fn the_corpora_replay_without_a_failure() {
        replay("irc_line", super::irc_line);
        replay("mirc", super::mirc);
        replay("matrix_html_to_irc", super::matrix_html_to_irc);
        replay("config", super::config);
    }
}
