//! Capability negotiation, IRCv3 `CAP` version 302 (<https://ircv3.net/specs/extensions/capability-negotiation>)
//! with `cap-notify` (<https://ircv3.net/specs/extensions/capability-negotiation#cap-notify>).
//!
//! Every connection opens with `CAP LS 302`, reads the (possibly multi-line, `*`-continued) list with its values
//! (`sasl=PLAIN,EXTERNAL`), requests what the bridge uses and the server offers, starts SASL when a login wants it,
//! and ends negotiation with `CAP END`. A server without `CAP` never answers and registers the plain way; `NEW` and
//! `DEL` after registration change the set as the server says. [`CapNegotiation`] is the state machine, free of I/O,
//! so the connection only writes the [`CapStep`]s it returns.

use std::collections::BTreeMap;

use super::sasl;

/// The capabilities the bridge uses, each requested when offered.
///
/// `userhost-in-names` is left out on purpose: it changes `NAMES` replies into `nick!user@host`, which the bridge
/// does not need. `sasl` is requested only when a login wants it (see [`CapNegotiation::new`]).
pub(crate) const WANTED: &[&str] = &[
    "account-notify",
    "account-tag",
    "away-notify",
    "batch",
    "cap-notify",
    "chghost",
    "draft/chathistory",
    "draft/message-redaction",
    "draft/multiline",
    "echo-message",
    "extended-join",
    "labeled-response",
    "message-tags",
    "multi-prefix",
    "server-time",
    "setname",
];

/// The capabilities a connection negotiated, as the server acknowledged them, with the values it offered them
/// with (`draft/multiline` → `max-bytes=4096,max-lines=24`).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct CapSet(BTreeMap<String, Option<String>>);

impl CapSet {
    /// Whether `cap` is enabled.
    pub(crate) fn has(&self, cap: &str) -> bool {
        self.0.contains_key(cap)
    }

    /// The value an enabled capability was offered with.
    pub(crate) fn value(&self, cap: &str) -> Option<&str> {
        self.0.get(cap).and_then(Option::as_deref)
    }

    /// The enabled capabilities, sorted, space-separated (for logs).
    pub(crate) fn list(&self) -> String {
        self.0.keys().map(String::as_str).collect::<Vec<_>>().join(" ")
    }
}

/// What the connection must send next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum CapStep {
    /// `CAP REQ :caps`.
    Request(String),
    /// `AUTHENTICATE mechanism`: the server acknowledged `sasl`.
    Authenticate(String),
    /// `CAP END`: negotiation is over, registration may complete.
    End,
}

/// One connection's negotiation.
#[derive(Debug)]
pub(crate) struct CapNegotiation {
    /// What the server offers, with values (`sasl` → `PLAIN,EXTERNAL`).
    offered: BTreeMap<String, Option<String>>,
    enabled: CapSet,
    /// SASL mechanisms the login can use, best first; empty when no SASL login is wanted.
    sasl: Vec<&'static str>,
    /// The mechanism started, once `sasl` is acknowledged.
    mechanism: Option<&'static str>,
    /// `CAP REQ`s not answered yet.
    outstanding: usize,
    /// `CAP END` was sent (or registration finished): later steps never end negotiation again.
    ended: bool,
    /// SASL is running: `CAP END` waits for its result.
    authenticating: bool,
}

impl CapNegotiation {
    /// A negotiation that will log in with the first of `sasl` mechanisms the server offers (none: no SASL).
    pub(crate) fn new(sasl: Vec<&'static str>) -> Self {
        Self {
            offered: BTreeMap::new(),
            enabled: CapSet::default(),
            sasl,
            mechanism: None,
            outstanding: 0,
            ended: false,
            authenticating: false,
        }
    }

    /// The negotiation of a connection that registered in another process with `enabled` (see
    /// [`crate::conn::LocalConnection::resume`]): over, with those capabilities.
    pub(crate) fn resumed(enabled: CapSet) -> Self {
        let offered = enabled.0.clone();
        Self { offered, enabled, ended: true, ..Self::new(Vec::new()) }
    }

    /// The capabilities enabled so far.
    pub(crate) fn enabled(&self) -> &CapSet {
        &self.enabled
    }

    /// The value the server gave a capability (`sasl=PLAIN,EXTERNAL` → `PLAIN,EXTERNAL`).
    pub(crate) fn value(&self, cap: &str) -> Option<&str> {
        self.offered.get(cap).and_then(Option::as_deref)
    }

    /// The SASL mechanism in use, once started.
    pub(crate) fn mechanism(&self) -> Option<&'static str> {
        self.mechanism
    }

    /// Registration finished (001): negotiation is over whatever happened.
    pub(crate) fn registered(&mut self) {
        self.ended = true;
    }

    /// Handles one `CAP` reply: `subcommand` (`LS`, `ACK`, …) and the parameters after it.
    pub(crate) fn on_cap(&mut self, subcommand: &str, params: &[&str]) -> Vec<CapStep> {
        // `CAP * LS * :a b` continues; `CAP * LS :c d` is the last line.
        let (more, list) = match params {
            ["*", list] => (true, *list),
            [list, ..] => (false, *list),
            [] => (false, ""),
        };
        match subcommand {
            "LS" => {
                self.offered.extend(parse_list(list));
                if more { Vec::new() } else { self.request(false) }
            }
            "NEW" => {
                self.offered.extend(parse_list(list));
                self.request(true)
            }
            "DEL" => {
                for (cap, _) in parse_list(list) {
                    self.offered.remove(&cap);
                    self.enabled.0.remove(&cap);
                }
                Vec::new()
            }
            "ACK" => {
                self.outstanding = self.outstanding.saturating_sub(1);
                for (cap, _) in parse_list(list) {
                    match cap.strip_prefix('-') {
                        Some(disabled) => {
                            self.enabled.0.remove(disabled);
                        }
                        None => {
                            let value = self.offered.get(&cap).cloned().flatten();
                            self.enabled.0.insert(cap, value);
                        }
                    }
                }
                self.after_answer()
            }
            "NAK" => {
                self.outstanding = self.outstanding.saturating_sub(1);
                self.after_answer()
            }
            _ => Vec::new(),
        }
    }

    /// SASL finished (success or failure): negotiation may end.
    pub(crate) fn sasl_done(&mut self) -> Vec<CapStep> {
        self.authenticating = false;
        self.finish()
    }

    /// `CAP REQ` for what is offered, wanted and not enabled yet; or the end of negotiation when nothing is.
    fn request(&mut self, renewal: bool) -> Vec<CapStep> {
        let mut wanted: Vec<&str> =
            WANTED.iter().copied().filter(|cap| self.offered.contains_key(*cap) && !self.enabled.has(cap)).collect();
        if !renewal && !self.sasl.is_empty() && self.offered.contains_key("sasl") && self.sasl_mechanism().is_some() {
            wanted.push("sasl");
        }
        let mut steps = Vec::new();
        // Servers take one REQ line of 512 bytes; our list is far shorter, but keep each REQ well within it.
        let mut line = String::new();
        for cap in wanted {
            if line.len() + cap.len() + 1 > 400 {
                steps.push(CapStep::Request(std::mem::take(&mut line)));
            }
            if !line.is_empty() {
                line.push(' ');
            }
            line.push_str(cap);
        }
        if !line.is_empty() {
            steps.push(CapStep::Request(line));
        }
        self.outstanding += steps.len();
        if steps.is_empty() && !renewal {
            return self.finish();
        }
        steps
    }

    fn after_answer(&mut self) -> Vec<CapStep> {
        if self.outstanding > 0 || self.ended {
            return Vec::new();
        }
        if self.enabled.has("sasl")
            && self.mechanism.is_none()
            && let Some(mechanism) = self.sasl_mechanism()
        {
            self.mechanism = Some(mechanism);
            self.authenticating = true;
            return vec![CapStep::Authenticate(mechanism.to_owned())];
        }
        self.finish()
    }

    fn finish(&mut self) -> Vec<CapStep> {
        if self.ended || self.authenticating || self.outstanding > 0 {
            return Vec::new();
        }
        self.ended = true;
        vec![CapStep::End]
    }

    /// The first of our mechanisms the server lists; a `sasl` without a value (CAP 301 style) is taken to offer
    /// those every SASL server has (see [`sasl::assumed_offered`]).
    fn sasl_mechanism(&self) -> Option<&'static str> {
        match self.value("sasl") {
            None => self.sasl.iter().copied().find(|ours| sasl::assumed_offered(ours)),
            Some(offered) => {
                let offered: Vec<&str> = offered.split(',').collect();
                self.sasl.iter().copied().find(|ours| offered.iter().any(|theirs| theirs.eq_ignore_ascii_case(ours)))
            }
        }
    }
}

/// Parses a capability list: `a b=1 c=x,y` → `a`, `b` = `1`, `c` = `x,y`.
pub(crate) fn parse_list(list: &str) -> impl Iterator<Item = (String, Option<String>)> + '_ {
    list.split(' ').filter(|cap| !cap.is_empty()).map(|cap| match cap.split_once('=') {
        Some((name, value)) => (name.to_owned(), Some(value.to_owned())),
        None => (cap.to_owned(), None),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(steps: &[CapStep]) -> Vec<String> {
        steps
            .iter()
            .filter_map(|step| match step {
                CapStep::Request(caps) => Some(caps.clone()),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn lists_parse_with_values() {
        let parsed: Vec<_> = parse_list("a  sasl=PLAIN,EXTERNAL draft/x= b").collect();
        assert_eq!(
            parsed,
            [
                ("a".into(), None),
                ("sasl".into(), Some("PLAIN,EXTERNAL".into())),
                ("draft/x".into(), Some(String::new())),
                ("b".into(), None)
            ]
        );
    }

    #[test]
    fn multi_line_ls_is_read_whole_before_requesting() {
        let mut negotiation = CapNegotiation::new(vec!["PLAIN"]);
        assert_eq!(negotiation.on_cap("LS", &["*", "server-time message-tags sasl=EXTERNAL,PLAIN"]), []);
        let steps = negotiation.on_cap("LS", &["echo-message unknown-cap batch"]);
        assert_eq!(request(&steps), ["batch echo-message message-tags server-time sasl"]);
        assert_eq!(negotiation.value("sasl"), Some("EXTERNAL,PLAIN"));
        assert_eq!(
            negotiation.on_cap("ACK", &["batch echo-message message-tags server-time sasl"]),
            [CapStep::Authenticate("PLAIN".into())]
        );
        assert!(negotiation.enabled().has("server-time"));
        assert_eq!(negotiation.enabled().value("sasl"), Some("EXTERNAL,PLAIN"));
        assert_eq!(negotiation.sasl_done(), [CapStep::End]);
        assert_eq!(negotiation.sasl_done(), []);
    }

    #[test]
    fn without_sasl_or_with_a_nak_negotiation_ends() {
        let mut negotiation = CapNegotiation::new(Vec::new());
        let steps = negotiation.on_cap("LS", &["multi-prefix sasl=PLAIN"]);
        assert_eq!(request(&steps), ["multi-prefix"]);
        assert_eq!(negotiation.on_cap("NAK", &["multi-prefix"]), [CapStep::End]);
        assert!(!negotiation.enabled().has("multi-prefix"));

        // Nothing we want: END at once (ngircd without multi-prefix, say).
        let mut negotiation = CapNegotiation::new(vec!["PLAIN"]);
        assert_eq!(negotiation.on_cap("LS", &["away-notify-not-really"]), [CapStep::End]);

        // A login that wants SASL on a server that offers other mechanisms only.
        let mut negotiation = CapNegotiation::new(vec!["PLAIN"]);
        let steps = negotiation.on_cap("LS", &["sasl=EXTERNAL"]);
        assert_eq!(steps, [CapStep::End]);
    }

    #[test]
    fn scram_is_chosen_only_where_it_is_listed() {
        let password = || CapNegotiation::new(sasl::mechanisms(false, true));
        let chosen = |offered: &str| {
            let mut negotiation = password();
            negotiation.on_cap("LS", &[offered]);
            negotiation.on_cap("ACK", &["sasl"]);
            negotiation.mechanism()
        };
        assert_eq!(chosen("sasl=PLAIN,SCRAM-SHA-256"), Some("SCRAM-SHA-256"));
        assert_eq!(chosen("sasl=PLAIN,EXTERNAL"), Some("PLAIN"));
        assert_eq!(chosen("sasl"), Some("PLAIN"));
        assert_eq!(chosen("sasl=scram-sha-256"), Some("SCRAM-SHA-256"));
    }

    #[test]
    fn external_is_chosen_when_the_login_has_a_certificate() {
        let mut negotiation = CapNegotiation::new(vec!["EXTERNAL", "PLAIN"]);
        negotiation.on_cap("LS", &["sasl=PLAIN,EXTERNAL"]);
        assert_eq!(negotiation.on_cap("ACK", &["sasl"]), [CapStep::Authenticate("EXTERNAL".into())]);
        assert_eq!(negotiation.mechanism(), Some("EXTERNAL"));
    }

    #[test]
    fn new_and_del_change_the_set_after_registration() {
        let mut negotiation = CapNegotiation::new(Vec::new());
        negotiation.on_cap("LS", &["cap-notify"]);
        negotiation.on_cap("ACK", &["cap-notify"]);
        negotiation.registered();
        let steps = negotiation.on_cap("NEW", &["away-notify sasl=PLAIN"]);
        assert_eq!(steps, [CapStep::Request("away-notify".into())]);
        assert_eq!(negotiation.on_cap("ACK", &["away-notify"]), []);
        assert!(negotiation.enabled().has("away-notify"));
        negotiation.on_cap("DEL", &["away-notify"]);
        assert!(!negotiation.enabled().has("away-notify"));
        assert_eq!(negotiation.enabled().list(), "cap-notify");
    }
}
