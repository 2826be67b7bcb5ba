//! What IRCv3 tells about the people behind ghosts, besides their nick: services accounts (`account-tag`
//! <https://ircv3.net/specs/extensions/account-tag>, `account-notify`
//! <https://ircv3.net/specs/extensions/account-notify>, `extended-join`
//! <https://ircv3.net/specs/extensions/extended-join>), away messages (`away-notify`
//! <https://ircv3.net/specs/extensions/away-notify>), user and host changes (`chghost`
//! <https://ircv3.net/specs/extensions/chghost>) and real names (`setname`
//! <https://ircv3.net/specs/extensions/setname>).
//!
//! The bridge keeps these beside the ghost rather than in its display name: a `chghost` or `setname` never makes
//! a new ghost (the nick decides who it is), and the account is what `whois` shows and what permission decisions
//! can rely on. The network persists account changes; [`People`] is the in-memory view, one entry per person seen
//! in a bridged channel, dropped when they quit.

use std::collections::HashMap;

use irc::proto::{Command, Message};

use super::tags;

/// What is known about one person.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Person {
    /// The services account they are logged in to.
    pub(crate) account: Option<String>,
    /// Their away message, while away.
    pub(crate) away: Option<String>,
    /// Their real name (gecos).
    pub(crate) realname: Option<String>,
    /// `user@host`, as the server last showed it.
    pub(crate) userhost: Option<String>,
}

impl Person {
    /// One line for people reading `whois`: `account alice, away (lunch), real name Alice A.`.
    pub(crate) fn describe(&self) -> String {
        let mut parts = vec![match &self.account {
            Some(account) => format!("logged in as {account}"),
            None => "not logged in".to_owned(),
        }];
        if let Some(away) = &self.away {
            parts.push(format!("away ({away})"));
        }
        if let Some(realname) = &self.realname {
            parts.push(format!("real name {realname}"));
        }
        if let Some(userhost) = &self.userhost {
            parts.push(format!("connected as {userhost}"));
        }
        parts.join(", ")
    }
}

/// One change a message reveals.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Update {
    /// Logged in (`Some`) or out.
    Account(Option<String>),
    /// Away (`Some` message) or back.
    Away(Option<String>),
    /// A new real name.
    Realname(String),
    /// A new `user@host`.
    Userhost(String),
}

/// The changes a received message reveals about its sender.
pub(crate) fn updates(message: &Message) -> Vec<Update> {
    let account = |name: &str| (name != "*").then(|| name.to_owned());
    let mut out = Vec::new();
    match &message.command {
        // extended-join: `JOIN #chan account :realname`.
        Command::JOIN(_, Some(name), Some(realname)) => {
            out.push(Update::Account(account(name)));
            out.push(Update::Realname(realname.clone()));
        }
        Command::ACCOUNT(name) => out.push(Update::Account(account(name))),
        Command::AWAY(message) => out.push(Update::Away(message.clone().filter(|text| !text.is_empty()))),
        Command::CHGHOST(user, host) => out.push(Update::Userhost(format!("{user}@{host}"))),
        Command::Raw(command, params) if command == "SETNAME" => {
            out.extend(params.last().map(|realname| Update::Realname(realname.clone())));
        }
        _ => {
            // account-tag: any message from a logged-in person names the account; its absence says nothing
            // (servers send the tag only to those who asked for it).
            if let Some(name) = tags::get(message, "account") {
                out.push(Update::Account(account(name)));
            }
        }
    }
    if let Some(irc::proto::Prefix::Nickname(_, user, host)) = &message.prefix
        && !user.is_empty()
        && !matches!(message.command, Command::CHGHOST(..))
    {
        out.push(Update::Userhost(format!("{user}@{host}")));
    }
    out
}

/// People by casefolded nick.
#[derive(Debug, Default)]
pub(crate) struct People {
    by_nick: HashMap<String, Person>,
}

impl People {
    /// Applies `updates` to the person using `folded_nick`; `true` if their account changed.
    pub(crate) fn apply(&mut self, folded_nick: &str, updates: Vec<Update>) -> bool {
        if updates.is_empty() {
            return false;
        }
        let person = self.by_nick.entry(folded_nick.to_owned()).or_default();
        let mut account_changed = false;
        for update in updates {
            match update {
                Update::Account(account) => {
                    account_changed |= person.account != account;
                    person.account = account;
                }
                Update::Away(away) => person.away = away,
                Update::Realname(realname) => person.realname = Some(realname),
                Update::Userhost(userhost) => person.userhost = Some(userhost),
            }
        }
        account_changed
    }

    /// What is known about the person using `folded_nick`.
    pub(crate) fn get(&self, folded_nick: &str) -> Option<&Person> {
        self.by_nick.get(folded_nick)
    }

    /// The person changed nick: same person.
    pub(crate) fn rename(&mut self, old: &str, new: &str) {
        if let Some(person) = self.by_nick.remove(old) {
            self.by_nick.insert(new.to_owned(), person);
        }
    }

    /// The person left the network.
    pub(crate) fn remove(&mut self, folded_nick: &str) {
        self.by_nick.remove(folded_nick);
    }
}

#[cfg(test)]
mod tests {
    use std::str::FromStr as _;

    use super::*;

    fn parse(line: &str) -> Message {
        Message::from_str(line).unwrap()
    }

    #[test]
    fn messages_reveal_accounts_away_names_and_hosts() {
        for (line, expected) in [
            (
                ":amy!a@h JOIN #c amy :Amy A.",
                vec![
                    Update::Account(Some("amy".into())),
                    Update::Realname("Amy A.".into()),
                    Update::Userhost("a@h".into()),
                ],
            ),
            (
                ":amy!a@h JOIN #c * :Amy A.",
                vec![Update::Account(None), Update::Realname("Amy A.".into()), Update::Userhost("a@h".into())],
            ),
            (":amy!a@h ACCOUNT *", vec![Update::Account(None), Update::Userhost("a@h".into())]),
            (":amy!a@h AWAY :lunch", vec![Update::Away(Some("lunch".into())), Update::Userhost("a@h".into())]),
            (":amy!a@h AWAY", vec![Update::Away(None), Update::Userhost("a@h".into())]),
            (":amy!a@h CHGHOST amy new.host", vec![Update::Userhost("amy@new.host".into())]),
            (":amy!a@h SETNAME :Amy B.", vec![Update::Realname("Amy B.".into()), Update::Userhost("a@h".into())]),
            (
                "@account=amy :amy!a@h PRIVMSG #c :hi",
                vec![Update::Account(Some("amy".into())), Update::Userhost("a@h".into())],
            ),
            (":irc.localhost 001 amy :hi", vec![]),
        ] {
            assert_eq!(updates(&parse(line)), expected, "{line}");
        }
    }

    #[test]
    fn people_follow_nick_changes_and_report_account_changes() {
        let mut people = People::default();
        assert!(people.apply("amy", updates(&parse(":amy!a@h JOIN #c amy :Amy"))));
        assert!(!people.apply("amy", updates(&parse("@account=amy :amy!a@h PRIVMSG #c :hi"))));
        people.apply("amy", updates(&parse(":amy!a@h AWAY :lunch")));
        people.rename("amy", "amy2");
        let amy = people.get("amy2").unwrap();
        assert_eq!(amy.describe(), "logged in as amy, away (lunch), real name Amy, connected as a@h");
        assert!(people.apply("amy2", updates(&parse(":amy2!a@h ACCOUNT *"))));
        people.remove("amy2");
        assert_eq!(people.get("amy2"), None);
    }
}
