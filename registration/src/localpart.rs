//! The character set of Matrix user-ID localparts.

/// Whether `c` may appear in a user-ID localpart: `a-z`, `0-9`, `.`, `_`, `=`, `-`, `/` and `+`
/// ([spec: user identifiers](https://spec.matrix.org/latest/appendices/#user-identifiers)).
pub(crate) fn is_localpart_char(c: char) -> bool {
    matches!(c, 'a'..='z' | '0'..='9' | '.' | '_' | '=' | '-' | '/' | '+')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn localpart_characters() {
        let cases = [
            ('a', true),
            ('z', true),
            ('0', true),
            ('9', true),
            ('.', true),
            ('_', true),
            ('=', true),
            ('-', true),
            ('/', true),
            ('+', true),
            ('A', false),
            (' ', false),
            (':', false),
            ('@', false),
            ('é', false),
        ];
        for (c, expected) in cases {
            assert_eq!(is_localpart_char(c), expected, "{c:?}");
        }
    }
}
