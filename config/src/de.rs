//! Field deserializers whose errors say what is expected, for types whose own messages do not.

use std::{fmt, marker::PhantomData, net::IpAddr, str::FromStr};

use serde::{
    Deserializer,
    de::{Error, Visitor},
};
use url::Url;

/// An absolute URL; the http(s) scheme is checked by validation, which reports every problem.
pub(crate) fn url<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Url, D::Error> {
    deserializer.deserialize_str(Parsed::<Url>::new())
}

/// Like [`url`], for an optional field (`null` or absent means `None`).
pub(crate) fn optional_url<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<Url>, D::Error> {
    deserializer.deserialize_option(Optional(Parsed::<Url>::new()))
}

/// An IPv4 or IPv6 address.
pub(crate) fn ip_addr<'de, D: Deserializer<'de>>(deserializer: D) -> Result<IpAddr, D::Error> {
    deserializer.deserialize_str(Parsed::<IpAddr>::new())
}

/// A value parsed from a string, whose errors end with what is expected.
///
/// The parsing happens inside the visitor, while the deserializer is still at the scalar, so a
/// YAML error points at the value rather than at its key.
trait Expected: FromStr<Err: fmt::Display> {
    /// `expected …`, without parentheses.
    const EXPECTED: &'static str;
}

impl Expected for Url {
    const EXPECTED: &'static str = "expected an absolute http(s) URL such as https://matrix.example.org";
}

impl Expected for IpAddr {
    const EXPECTED: &'static str = "expected an IP address such as 127.0.0.1, 0.0.0.0 or ::";
}

struct Parsed<T>(PhantomData<T>);

impl<T> Parsed<T> {
    fn new() -> Self {
        Self(PhantomData)
    }
}

impl<T: Expected> Visitor<'_> for Parsed<T> {
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(T::EXPECTED.trim_start_matches("expected "))
    }

    fn visit_str<E: Error>(self, text: &str) -> Result<T, E> {
        text.parse().map_err(|err| E::custom(format!("{err} ({})", T::EXPECTED)))
    }
}

struct Optional<V>(V);

impl<'de, V: Visitor<'de>> Visitor<'de> for Optional<V> {
    type Value = Option<V::Value>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.expecting(f)
    }

    fn visit_none<E: Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_unit<E: Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_str(self.0).map(Some)
    }
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    use super::*;

    #[derive(Debug, Deserialize)]
    struct Fields {
        #[serde(deserialize_with = "url")]
        url: Url,
        #[serde(default, deserialize_with = "optional_url")]
        optional: Option<Url>,
        #[serde(deserialize_with = "ip_addr")]
        ip: IpAddr,
    }

    #[test]
    fn accepts_good_values() {
        let fields: Fields = serde_yaml::from_str("url: https://a.example\nip: '::1'\n").expect("valid");
        assert_eq!(fields.url.as_str(), "https://a.example/");
        assert_eq!(fields.optional, None);
        assert_eq!(fields.ip, IpAddr::from([0u16, 0, 0, 0, 0, 0, 0, 1]));

        let fields: Fields =
            serde_yaml::from_str("url: http://b\noptional: http://c:1\nip: 10.0.0.1\n").expect("valid");
        assert_eq!(fields.optional.map(String::from).as_deref(), Some("http://c:1/"));
        assert_eq!(fields.ip, IpAddr::from([10, 0, 0, 1]));
    }

    #[test]
    fn errors_say_what_is_expected() {
        let cases = [
            ("url: /relative\nip: ::1\n", "relative URL without a base (expected an absolute http(s) URL"),
            ("url: http://a\noptional: nope\nip: ::1\n", "relative URL without a base (expected"),
            ("url: http://a\nip: localhost\n", "(expected an IP address such as 127.0.0.1"),
            ("url: [x]\nip: ::1\n", "invalid type: sequence, expected an absolute http(s) URL"),
            (
                "url: http://a\noptional: [3]\nip: ::1\n",
                "invalid type: sequence, expected an absolute http(s) URL such as https://matrix.example.org",
            ),
        ];
        for (yaml, needle) in cases {
            let err = serde_yaml::from_str::<Fields>(yaml).expect_err(yaml).to_string();
            assert!(err.contains(needle), "{yaml}: {err}");
        }
    }
}
