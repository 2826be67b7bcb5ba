//! Netsplits and netjoins: the `netsplit` / `netjoin` batch types of IRCv3 `batch`
//! (<https://ircv3.net/specs/extensions/batch/netsplit>), and the classic sign of a split on servers without them —
//! a QUIT whose reason is two server names (`irc.hub.net irc.leaf.net`).
//!
//! When a server link breaks, everyone behind it quits at once, and usually comes back within a minute. Mirroring
//! that literally floods Matrix (5 people in 5 rooms: 25 leaves, then 25 joins). Instead the [`Netsplits`] tracker
//! keeps the ghosts in their rooms, posts one notice per room once the burst is over ("netsplit: a, b, c left"), and
//! one for the return ("netjoin: a, b, c are back"), swallowing the rejoins. Only people still gone after the hold
//! time leave their rooms, quietly (no notice each). The tracker holds no I/O: the network drives it with [`due`].
//!
//! [`due`]: Netsplits::due

use std::{
    collections::{BTreeMap, HashMap},
    time::Duration,
};

use tokio::time::Instant;

/// The two server names of a netsplit QUIT reason (`irc.hub.net irc.leaf.net`), if it is one.
///
/// Both must look like host names with a dot, and nothing else may follow: a person quitting with "going home" or
/// one URL is not a netsplit.
pub(crate) fn split_servers(reason: &str) -> Option<(&str, &str)> {
    let (first, second) = reason.split_once(' ')?;
    let is_server = |name: &str| {
        name.contains('.')
            && !name.starts_with('.')
            && !name.ends_with('.')
            && !name.contains("..")
            && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b'*'))
    };
    (is_server(first) && is_server(second)).then_some((first, second))
}

/// Someone who quit in a netsplit, with the channels they are still shown in on Matrix.
#[derive(Debug)]
struct Departed {
    nick: String,
    channels: Vec<String>,
    at: Instant,
}

/// A room's notice being collected.
#[derive(Debug, Default)]
struct Pending {
    nicks: Vec<String>,
    servers: Option<String>,
    last: Option<Instant>,
}

/// What is due now.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Due {
    /// One notice per channel (casefolded name), the burst being over.
    pub(crate) notices: Vec<(String, String)>,
    /// People still gone after the hold time, with the channels to take their ghosts out of.
    pub(crate) gone: Vec<(String, Vec<String>)>,
}

/// The netsplit state of one network.
#[derive(Debug)]
pub(crate) struct Netsplits {
    debounce: Duration,
    hold: Duration,
    /// By casefolded nick.
    departed: HashMap<String, Departed>,
    splits: BTreeMap<String, Pending>,
    joins: BTreeMap<String, Pending>,
}

impl Netsplits {
    /// A tracker that posts a room's notice once `debounce` passed without more of the burst, and takes ghosts out
    /// of their rooms when they are not back within `hold`.
    pub(crate) fn new(debounce: Duration, hold: Duration) -> Self {
        Self { debounce, hold, departed: HashMap::new(), splits: BTreeMap::new(), joins: BTreeMap::new() }
    }

    /// Someone quit in a split between `servers`; `channels` are the (casefolded) bridged channels they were in.
    pub(crate) fn split(&mut self, folded_nick: &str, nick: &str, channels: Vec<String>, servers: &str, now: Instant) {
        for channel in &channels {
            let pending = self.splits.entry(channel.clone()).or_default();
            if !pending.nicks.iter().any(|known| known == nick) {
                pending.nicks.push(nick.to_owned());
            }
            pending.servers = Some(servers.to_owned());
            pending.last = Some(now);
        }
        self.departed.insert(folded_nick.to_owned(), Departed { nick: nick.to_owned(), channels, at: now });
    }

    /// Someone joined `channel` (casefolded). `true` when they are back from a split there: their ghost never left,
    /// so the join is not mirrored.
    pub(crate) fn rejoin(&mut self, folded_nick: &str, channel: &str, now: Instant) -> bool {
        let Some(departed) = self.departed.get_mut(folded_nick) else { return false };
        let Some(index) = departed.channels.iter().position(|known| known == channel) else { return false };
        departed.channels.swap_remove(index);
        let nick = departed.nick.clone();
        if departed.channels.is_empty() {
            self.departed.remove(folded_nick);
        }
        let pending = self.joins.entry(channel.to_owned()).or_default();
        if !pending.nicks.contains(&nick) {
            pending.nicks.push(nick);
        }
        pending.last = Some(now);
        true
    }

    /// Whether anything is waiting (the network polls only then).
    pub(crate) fn is_idle(&self) -> bool {
        self.departed.is_empty() && self.splits.is_empty() && self.joins.is_empty()
    }

    /// Notices whose burst is over and people whose hold ran out.
    pub(crate) fn due(&mut self, now: Instant) -> Due {
        let mut due = Due::default();
        let debounce = self.debounce;
        let quiet = |pending: &Pending| pending.last.is_some_and(|last| now.duration_since(last) >= debounce);
        let ready: Vec<String> = self.splits.iter().filter(|(_, p)| quiet(p)).map(|(c, _)| c.clone()).collect();
        for channel in ready {
            if let Some(pending) = self.splits.remove(&channel) {
                let servers = pending.servers.map(|servers| format!(" ({servers})")).unwrap_or_default();
                due.notices.push((channel, format!("netsplit{servers}: {} left", pending.nicks.join(", "))));
            }
        }
        let ready: Vec<String> = self.joins.iter().filter(|(_, p)| quiet(p)).map(|(c, _)| c.clone()).collect();
        for channel in ready {
            if let Some(pending) = self.joins.remove(&channel) {
                let verb = if pending.nicks.len() == 1 { "is" } else { "are" };
                due.notices.push((channel, format!("netjoin: {} {verb} back", pending.nicks.join(", "))));
            }
        }
        let hold = self.hold;
        let gone: Vec<String> =
            self.departed.iter().filter(|(_, d)| now.duration_since(d.at) >= hold).map(|(n, _)| n.clone()).collect();
        for folded in gone {
            if let Some(departed) = self.departed.remove(&folded) {
                due.gone.push((departed.nick, departed.channels));
            }
        }
        due.gone.sort();
        due
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_reasons_are_two_server_names() {
        for (reason, expected) in [
            ("irc.hub.net irc.leaf.net", Some(("irc.hub.net", "irc.leaf.net"))),
            ("*.net *.split", Some(("*.net", "*.split"))),
            ("going home", None),
            ("see example.com", None),
            ("a.b c.d e.f", None),
            ("irc.hub.net", None),
            ("a..b c.d", None),
        ] {
            assert_eq!(split_servers(reason), expected, "{reason}");
        }
    }

    #[test]
    fn five_people_in_five_rooms_make_one_notice_per_room_each_way() {
        let start = Instant::now();
        let debounce = Duration::from_secs(2);
        let mut splits = Netsplits::new(debounce, Duration::from_secs(60));
        let rooms: Vec<String> = (0..5).map(|room| format!("#r{room}")).collect();
        for person in 0..5 {
            let nick = format!("P{person}");
            let at = start + Duration::from_millis(100 * person);
            splits.split(&nick.to_lowercase(), &nick, rooms.clone(), "a.net b.net", at);
        }
        // Still within the burst: nothing yet.
        assert_eq!(splits.due(start + Duration::from_secs(1)), Due::default());
        let due = splits.due(start + Duration::from_secs(3));
        assert_eq!(due.notices.len(), 5);
        assert_eq!(due.notices[0], ("#r0".into(), "netsplit (a.net b.net): P0, P1, P2, P3, P4 left".into()));
        assert!(due.gone.is_empty());

        let back = start + Duration::from_secs(10);
        for person in 0..5 {
            for room in &rooms {
                assert!(splits.rejoin(&format!("p{person}"), room, back));
            }
        }
        assert!(!splits.rejoin("p0", "#r0", back), "a second join is an ordinary one");
        let due = splits.due(back + debounce);
        assert_eq!(due.notices.len(), 5);
        assert_eq!(due.notices[4], ("#r4".into(), "netjoin: P0, P1, P2, P3, P4 are back".into()));
        assert!(splits.is_idle());
    }

    #[test]
    fn people_not_back_within_the_hold_leave() {
        let start = Instant::now();
        let mut splits = Netsplits::new(Duration::from_secs(1), Duration::from_secs(30));
        splits.split("amy", "Amy", vec!["#a".into(), "#b".into()], "x.net y.net", start);
        splits.split("bo", "Bo", vec!["#a".into()], "x.net y.net", start);
        assert!(splits.rejoin("amy", "#a", start + Duration::from_secs(5)));
        let due = splits.due(start + Duration::from_secs(31));
        assert_eq!(due.gone, [("Amy".into(), vec!["#b".into()]), ("Bo".into(), vec!["#a".into()])]);
        // Both rooms' split notices, and Amy's return to #a.
        assert_eq!(due.notices.len(), 3);
        assert!(splits.is_idle());
    }
}
