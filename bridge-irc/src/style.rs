//! How Matrix features IRC lacks are written as IRC lines: reply quotes and `s/old/new/` corrections.

/// The first line of `text`, cut to `max_chars` characters with `…` when longer.
pub(crate) fn quote(text: &str, max_chars: usize) -> String {
    let first = text.lines().find(|line| !line.trim().is_empty()).unwrap_or_default().trim();
    let mut quoted: String = first.chars().take(max_chars).collect();
    if first.chars().count() > max_chars || text.trim().lines().count() > 1 {
        quoted.push('…');
    }
    quoted
}

/// A reply's text on IRC: `nick: "quote" text`, or `nick: text` without a quote.
pub(crate) fn reply(nick: &str, quoted: Option<&str>, text: &str) -> String {
    match quoted.filter(|quoted| !quoted.is_empty()) {
        Some(quoted) => format!("{nick}: \"{quoted}\" {text}"),
        None => format!("{nick}: {text}"),
    }
}

/// The edit from `old` to `new` as `s/before/after/`, when the change is one span of one line that a reader can
/// match (no `/`, not empty on the old side).
pub(crate) fn sed(old: &str, new: &str) -> Option<String> {
    if old.contains('\n') || new.contains('\n') || old == new {
        return None;
    }
    let old_chars: Vec<char> = old.chars().collect();
    let new_chars: Vec<char> = new.chars().collect();
    let prefix = old_chars.iter().zip(&new_chars).take_while(|(a, b)| a == b).count();
    let max_suffix = old_chars.len().min(new_chars.len()) - prefix;
    let suffix =
        old_chars.iter().rev().zip(new_chars.iter().rev()).take(max_suffix).take_while(|(a, b)| a == b).count();
    // Widen the span to whole words so the pattern means something to a person.
    let is_word = |c: &char| c.is_alphanumeric();
    let mut start = prefix;
    while start > 0 && is_word(&old_chars[start - 1]) {
        start -= 1;
    }
    let mut old_end = old_chars.len() - suffix;
    let mut new_end = new_chars.len() - suffix;
    while old_end < old_chars.len() && is_word(&old_chars[old_end]) {
        old_end += 1;
        new_end += 1;
    }
    let before: String = old_chars[start..old_end].iter().collect();
    let after: String = new_chars[start..new_end].iter().collect();
    (!before.trim().is_empty() && !before.contains('/') && !after.contains('/')).then(|| format!("s/{before}/{after}/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_are_one_short_line() {
        let cases = [
            ("hello there", 40, "hello there"),
            ("hello there", 5, "hello…"),
            ("first line\nsecond", 40, "first line…"),
            ("\n  padded  \n", 40, "padded"),
            ("héllo wörld", 4, "héll…"),
        ];
        for (text, max, expected) in cases {
            assert_eq!(quote(text, max), expected, "{text:?}");
        }
    }

    #[test]
    fn replies_name_the_nick_and_quote_when_asked() {
        assert_eq!(reply("bob", Some("the original"), "I agree"), "bob: \"the original\" I agree");
        assert_eq!(reply("bob", None, "I agree"), "bob: I agree");
        assert_eq!(reply("bob", Some(""), "I agree"), "bob: I agree");
    }

    #[test]
    fn sed_lines_cover_one_changed_span_in_whole_words() {
        let cases = [
            ("I like teh cat", "I like the cat", Some("s/teh/the/")),
            ("see you tomorow", "see you tomorrow", Some("s/tomorow/tomorrow/")),
            ("meet at 5", "meet at 6pm", Some("s/5/6pm/")),
            ("a b c", "a b c", None),
            ("one\ntwo", "one\nthree", None),
            ("path a/b", "path a/c", Some("s/b/c/")),
            ("go to a/b", "go to c/d", None),
            ("hello", "hello world", Some("s/hello/hello world/")),
            ("hi", "oh hi", Some("s/hi/oh hi/")),
        ];
        for (old, new, expected) in cases {
            assert_eq!(sed(old, new).as_deref(), expected, "{old:?} → {new:?}");
        }
    }
}
