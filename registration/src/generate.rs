//! Fresh registrations with random tokens, built from a bridge's namespace template.

use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use rand::{TryRngCore as _, rngs::OsRng};
use ruma::api::appservice::{Namespace, Namespaces, Registration, RegistrationInit};
use url::Url;

/// How many random bytes make up each token before base64url encoding (43 characters).
pub const TOKEN_BYTES: usize = 32;

/// What a bridge knows about itself when it writes its first registration file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RegistrationTemplate {
    /// Unique, never-changing ID of the application service, e.g. `lattice-irc`.
    pub id: String,
    /// Where the homeserver reaches the bridge.
    pub url: Url,
    /// Localpart of the bridge bot user.
    pub sender_localpart: String,
    /// Regexes of the users the bridge owns (see [`template_regex`](crate::template_regex)).
    pub user_regexes: Vec<String>,
    /// Regexes of the room aliases the bridge owns.
    pub alias_regexes: Vec<String>,
    /// Third-party protocols the bridge offers, e.g. `irc`.
    pub protocols: Vec<String>,
    /// Whether the bridge wants typing notifications, receipts and presence.
    pub receive_ephemeral: bool,
}

/// Builds a registration from `template` with new `as_token` and `hs_token`.
///
/// Each token is [`TOKEN_BYTES`] bytes from the operating system's CSPRNG, base64url-encoded
/// without padding; the two always differ. User and alias namespaces are exclusive, so the
/// homeserver keeps everyone else out of them, and the bridge's puppets are not rate-limited. A
/// trailing `/` is dropped from the URL, as Synapse does, because homeservers append
/// `/_matrix/app/…` to it.
///
/// # Panics
///
/// If the operating system cannot provide random bytes: no safe token can be made then.
pub fn generate(template: &RegistrationTemplate) -> Registration {
    let as_token = random_token();
    let mut hs_token = random_token();
    while hs_token == as_token {
        hs_token = random_token();
    }

    let mut namespaces = Namespaces::new();
    namespaces.users = exclusive(&template.user_regexes);
    namespaces.aliases = exclusive(&template.alias_regexes);

    let mut registration = Registration::from(RegistrationInit {
        id: template.id.clone(),
        url: Some(template.url.as_str().trim_end_matches('/').to_owned()),
        as_token,
        hs_token,
        sender_localpart: template.sender_localpart.clone(),
        namespaces,
        rate_limited: Some(false),
        protocols: (!template.protocols.is_empty()).then(|| template.protocols.clone()),
    });
    registration.receive_ephemeral = template.receive_ephemeral;
    registration
}

fn exclusive(regexes: &[String]) -> Vec<Namespace> {
    regexes.iter().map(|regex| Namespace::new(true, regex.clone())).collect()
}

fn random_token() -> String {
    let mut bytes = [0u8; TOKEN_BYTES];
    OsRng.try_fill_bytes(&mut bytes).expect("the operating system's random number generator failed");
    URL_SAFE_NO_PAD.encode(bytes)
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    fn template() -> RegistrationTemplate {
        RegistrationTemplate {
            id: "lattice-irc".to_owned(),
            url: Url::parse("http://127.0.0.1:9000/").expect("valid url"),
            sender_localpart: "ircbot".to_owned(),
            user_regexes: vec![r"^@irc_.+:example\.org$".to_owned()],
            alias_regexes: vec![r"^\#irc_.+:example\.org$".to_owned()],
            protocols: vec!["irc".to_owned()],
            receive_ephemeral: true,
        }
    }

    #[test]
    fn copies_the_template() {
        let registration = generate(&template());
        assert_eq!(registration.id, "lattice-irc");
        assert_eq!(registration.url.as_deref(), Some("http://127.0.0.1:9000"));
        assert_eq!(registration.sender_localpart, "ircbot");
        assert_eq!(registration.rate_limited, Some(false));
        assert_eq!(registration.protocols, Some(vec!["irc".to_owned()]));
        assert!(registration.receive_ephemeral);

        let users: Vec<_> = registration.namespaces.users.iter().map(|ns| (ns.exclusive, ns.regex.as_str())).collect();
        assert_eq!(users, [(true, r"^@irc_.+:example\.org$")]);
        let aliases: Vec<_> =
            registration.namespaces.aliases.iter().map(|ns| (ns.exclusive, ns.regex.as_str())).collect();
        assert_eq!(aliases, [(true, r"^\#irc_.+:example\.org$")]);
        assert!(registration.namespaces.rooms.is_empty());
    }

    #[test]
    fn url_keeps_its_path_without_trailing_slash() {
        let cases = [
            ("http://bridge:9000", "http://bridge:9000"),
            ("https://bridge.example.org/irc/", "https://bridge.example.org/irc"),
            ("http://[::1]:29331/", "http://[::1]:29331"),
        ];
        for (url, expected) in cases {
            let template = RegistrationTemplate { url: Url::parse(url).expect("valid url"), ..template() };
            assert_eq!(generate(&template).url.as_deref(), Some(expected), "{url}");
        }
    }

    #[test]
    fn no_protocols_are_omitted() {
        let template = RegistrationTemplate { protocols: Vec::new(), ..template() };
        assert_eq!(generate(&template).protocols, None);
    }

    #[test]
    fn tokens_are_long_distinct_and_url_safe() {
        let mut seen = HashSet::new();
        for _ in 0..200 {
            let registration = generate(&template());
            for token in [&registration.as_token, &registration.hs_token] {
                assert_eq!(token.len(), 43, "{token}");
                let decoded = URL_SAFE_NO_PAD.decode(token).expect("base64url without padding");
                assert_eq!(decoded.len(), TOKEN_BYTES);
                assert!(seen.insert(token.clone()), "token {token} was generated twice");
            }
            assert_ne!(registration.as_token, registration.hs_token);
        }
        assert_eq!(seen.len(), 400);
    }
}
