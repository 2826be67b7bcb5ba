//! [XEP-0444: Message Reactions](https://xmpp.org/extensions/xep-0444.html) ⇄ Matrix `m.reaction` annotations.
//!
//! XMPP sends a person's *whole* set of reactions to a message each time it changes (an empty set withdraws them
//! all); Matrix has one event per reaction, redacted to withdraw it. The bridge keeps each person's set in the
//! store: an incoming set is [`diff`]ed against it (new keys become reactions, missing ones redactions), and a Matrix
//! reaction or its redaction changes the stored set, which goes out whole.

use xmpp_parsers::reactions::{Reaction, Reactions};

/// Most reactions one person may put on one message; more are ignored rather than flooding Matrix.
pub(crate) const MAX_REACTIONS: usize = 32;
/// Longest reaction key kept, in characters (an emoji sequence is a handful).
pub(crate) const MAX_KEY_CHARS: usize = 64;

/// A set cleaned up: keys trimmed; empty, overlong, repeated and control-character keys dropped, at most [`MAX_REACTIONS`],
/// in the order given.
pub(crate) fn normalise<'a>(keys: impl IntoIterator<Item = &'a str>) -> Vec<String> {
    let mut set: Vec<String> = Vec::new();
    for key in keys {
        let key = key.trim();
        if key.is_empty() || key.chars().count() > MAX_KEY_CHARS || key.chars().any(char::is_control) {
            continue;
        }
        if !set.iter().any(|known| known == key) {
            set.push(key.to_owned());
        }
        if set.len() == MAX_REACTIONS {
            break;
        }
    }
    set
}

/// The change from `old` to `new`: (keys added, keys removed), each in its set's order.
pub(crate) fn diff(old: &[String], new: &[String]) -> (Vec<String>, Vec<String>) {
    let added = new.iter().filter(|key| !old.contains(key)).cloned().collect();
    let removed = old.iter().filter(|key| !new.contains(key)).cloned().collect();
    (added, removed)
}

/// The keys of a received `<reactions/>`, normalised.
pub(crate) fn keys_of(reactions: &Reactions) -> Vec<String> {
    normalise(reactions.reactions.iter().map(|reaction| reaction.emoji.as_str()))
}

/// The `<reactions/>` element carrying a whole set for the message `id`.
pub(crate) fn reactions_element(id: &str, keys: &[String]) -> Reactions {
    Reactions { id: id.to_owned(), reactions: keys.iter().map(|key| Reaction { emoji: key.clone() }).collect() }
}

/// One person's reaction to one message, as the message map names it: a Matrix reaction event maps to the reaction
/// it stands for (not to an XMPP message — XEP-0444 has no per-reaction ID), so its redaction can withdraw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ReactionRef {
    /// The Matrix user (a real user or an XMPP user's ghost) who reacted.
    pub user_id: String,
    /// The remote ID of the message reacted to.
    pub target: String,
    /// The reaction key.
    pub key: String,
}

/// Marks a message-map remote ID as a [`ReactionRef`]; the unit separator never occurs in Matrix IDs or keys.
const REACTION_PREFIX: &str = "lattice-reaction\u{1f}";

impl ReactionRef {
    /// The remote ID the reaction is mapped under.
    pub(crate) fn encode(&self) -> String {
        format!("{REACTION_PREFIX}{}\u{1f}{}\u{1f}{}", self.user_id, self.key, self.target)
    }

    /// Reads a remote ID written by [`ReactionRef::encode`]; `None` for any other remote ID.
    pub(crate) fn decode(remote_id: &str) -> Option<Self> {
        let rest = remote_id.strip_prefix(REACTION_PREFIX)?;
        let (user_id, rest) = rest.split_once('\u{1f}')?;
        let (key, target) = rest.split_once('\u{1f}')?;
        Some(Self { user_id: user_id.to_owned(), target: target.to_owned(), key: key.to_owned() })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use proptest::prelude::*;

    use super::*;

    #[test]
    fn sets_are_cleaned_up() {
        assert_eq!(normalise([" 👍 ", "", "👍", "❤️", "a\nb"]), ["👍", "❤️"]);
        let many: Vec<String> = (0..100).map(|n| n.to_string()).collect();
        assert_eq!(normalise(many.iter().map(String::as_str)).len(), MAX_REACTIONS);
        assert!(normalise(["x".repeat(MAX_KEY_CHARS + 1).as_str()]).is_empty());
    }

    #[test]
    fn a_changed_set_is_what_was_added_and_removed() {
        let set = |keys: &[&str]| keys.iter().map(|key| (*key).to_owned()).collect::<Vec<_>>();
        assert_eq!(diff(&set(&["a", "b"]), &set(&["b", "c"])), (set(&["c"]), set(&["a"])));
        assert_eq!(diff(&set(&["a"]), &set(&[])), (set(&[]), set(&["a"])));
        assert_eq!(diff(&set(&[]), &set(&["a"])), (set(&["a"]), set(&[])));
    }

    fn key_set() -> impl Strategy<Value = Vec<String>> {
        prop::collection::vec(prop::sample::select(vec!["👍", "❤️", "😂", "🎉", "a", "b", "c", "+1"]), 0..8)
            .prop_map(normalise)
    }

    proptest! {
        /// Reaction references survive the message map, whatever the message ID holds.
        #[test]
        fn reaction_refs_round_trip(user in "@[a-z]{1,8}:[a-z]{1,8}", target in "\\PC{0,40}", key in key_set()) {
            let reference = ReactionRef { user_id: user, target, key: key.concat() };
            prop_assert_eq!(ReactionRef::decode(&reference.encode()), Some(reference));
        }

        /// Applying the diff to the old set gives the new set, and nothing is both added and removed.
        #[test]
        fn diff_applied_to_old_gives_new(old in key_set(), new in key_set()) {
            let (added, removed) = diff(&old, &new);
            let mut result: BTreeSet<&String> = old.iter().collect();
            for key in &removed {
                prop_assert!(result.remove(key), "removed {key} was not in the old set");
            }
            for key in &added {
                prop_assert!(result.insert(key), "added {key} was already there");
            }
            prop_assert_eq!(result, new.iter().collect::<BTreeSet<_>>());
            prop_assert!(added.iter().all(|key| !removed.contains(key)));
        }

        /// The element carries exactly the set, and reading it back gives the set.
        #[test]
        fn elements_round_trip(keys in key_set()) {
            let element = reactions_element("m1", &keys);
            prop_assert_eq!(keys_of(&element), keys);
        }
    }
}
