//! SASL authentication, IRCv3 `sasl` 3.1/3.2 (<https://ircv3.net/specs/extensions/sasl-3.1>): the `AUTHENTICATE`
//! payloads for PLAIN (RFC 4616) and EXTERNAL (RFC 4422 appendix A: the TLS client certificate, CertFP, is the
//! credential).
//!
//! SCRAM-SHA-256 is not offered: neither server we run against advertises it (InspIRCd with atheme lists PLAIN, and
//! EXTERNAL with a certificate), and doing it well needs a SCRAM crate we do not carry yet.

use base64::Engine as _;

/// The longest `AUTHENTICATE` argument; longer payloads are split, and a payload of a multiple of it is followed by
/// `+` so the server knows it ended.
const CHUNK: usize = 400;

/// The mechanisms a login can use, best first: EXTERNAL when the connection presents a client certificate.
pub(crate) fn mechanisms(has_certificate: bool, has_password: bool) -> Vec<&'static str> {
    let mut mechanisms = Vec::new();
    if has_certificate {
        mechanisms.push("EXTERNAL");
    }
    if has_password {
        mechanisms.push("PLAIN");
    }
    mechanisms
}

/// The `AUTHENTICATE` arguments answering the server's empty challenge (`AUTHENTICATE +`) for `mechanism`.
pub(crate) fn response(mechanism: &str, account: &str, password: &str) -> Vec<String> {
    match mechanism {
        // The identity is the certificate's; an empty authorization identity says "the account it belongs to".
        "EXTERNAL" => vec!["+".to_owned()],
        _ => {
            let payload = format!("{account}\0{account}\0{password}");
            chunks(&base64::engine::general_purpose::STANDARD.encode(payload))
        }
    }
}

/// Splits an encoded payload into `AUTHENTICATE` arguments.
fn chunks(encoded: &str) -> Vec<String> {
    let mut out: Vec<String> =
        encoded.as_bytes().chunks(CHUNK).map(|chunk| String::from_utf8_lossy(chunk).into_owned()).collect();
    if encoded.len().is_multiple_of(CHUNK) {
        out.push("+".to_owned());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_is_base64_of_three_fields_in_chunks() {
        assert_eq!(response("PLAIN", "alice", "pw"), ["YWxpY2UAYWxpY2UAcHc="]);
        let long = response("PLAIN", "a", &"x".repeat(600));
        assert_eq!(long.len(), 3);
        assert_eq!(long[0].len(), CHUNK);
        assert_eq!(chunks(&"A".repeat(CHUNK)), ["A".repeat(CHUNK), "+".to_owned()]);
        assert_eq!(response("EXTERNAL", "alice", ""), ["+"]);
        assert_eq!(mechanisms(true, true), ["EXTERNAL", "PLAIN"]);
        assert_eq!(mechanisms(false, true), ["PLAIN"]);
    }
}
