//! `batch` (<https://ircv3.net/specs/extensions/batch>): messages tagged `batch=ref` between `BATCH +ref type …` and
//! `BATCH -ref` belong together. The tracker holds them until the outermost batch closes and hands the whole
//! (nested batches inside) to the caller: `netsplit` / `netjoin` batches feed the netsplit collapser, `chathistory`
//! batches feed backfill, anything else is replayed message by message.
//!
//! Remote input never grows it without bound: past [`MAX_OPEN`] open batches or [`MAX_MESSAGES`] messages in one,
//! further messages pass through unbatched rather than being held (or lost).

use std::collections::HashMap;

use irc::proto::{Command, Message};

use super::tags;

/// The most batches held open at once.
pub(crate) const MAX_OPEN: usize = 64;
/// The most messages held in one batch.
pub(crate) const MAX_MESSAGES: usize = 10_000;

/// A closed batch with everything in it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Batch {
    /// The type, lower case (`netsplit`, `netjoin`, `chathistory`, `labeled-response`, …).
    pub(crate) kind: String,
    /// The parameters after the type (the two server names of a netsplit, the target of chat history).
    pub(crate) params: Vec<String>,
    /// The `BATCH +ref` line's own tags (`label` for `labeled-response`).
    pub(crate) opener: Message,
    /// The messages in order; a nested batch sits where it opened.
    pub(crate) items: Vec<Item>,
}

/// One entry of a batch.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Item {
    /// A message.
    Message(Message),
    /// A nested batch.
    Batch(Batch),
}

impl Batch {
    /// Every message, nested batches flattened, in order.
    pub(crate) fn messages(&self) -> Vec<&Message> {
        let mut out = Vec::new();
        for item in &self.items {
            match item {
                Item::Message(message) => out.push(message),
                Item::Batch(batch) => out.extend(batch.messages()),
            }
        }
        out
    }
}

/// What feeding a message did.
#[derive(Debug, PartialEq)]
pub(crate) enum Fed {
    /// Not part of a batch: handle it now.
    Pass(Message),
    /// Held in an open batch.
    Held,
    /// An outermost batch closed.
    Done(Batch),
}

#[derive(Debug)]
struct Open {
    batch: Batch,
    parent: Option<String>,
}

/// The open batches of one connection.
#[derive(Debug, Default)]
pub(crate) struct BatchTracker {
    open: HashMap<String, Open>,
}

impl BatchTracker {
    /// Feeds one received message.
    pub(crate) fn feed(&mut self, message: Message) -> Fed {
        let parent =
            tags::get(&message, "batch").filter(|reference| self.open.contains_key(*reference)).map(str::to_owned);
        if let Command::BATCH(reference, kind, params) = &message.command {
            if let Some(reference) = reference.strip_prefix('+') {
                if self.open.len() >= MAX_OPEN {
                    return Fed::Pass(message);
                }
                let batch = Batch {
                    kind: kind.as_ref().map(|kind| kind.to_str().to_ascii_lowercase()).unwrap_or_default(),
                    params: params.clone().unwrap_or_default(),
                    opener: message.clone(),
                    items: Vec::new(),
                };
                self.open.insert(reference.to_owned(), Open { batch, parent });
                return Fed::Held;
            }
            if let Some(reference) = reference.strip_prefix('-') {
                let Some(closed) = self.open.remove(reference) else { return Fed::Pass(message) };
                return match closed.parent.and_then(|parent| self.open.get_mut(&parent)) {
                    Some(parent) => {
                        parent.batch.items.push(Item::Batch(closed.batch));
                        Fed::Held
                    }
                    None => Fed::Done(closed.batch),
                };
            }
        }
        match parent.and_then(|parent| self.open.get_mut(&parent)) {
            Some(open) if open.batch.items.len() < MAX_MESSAGES => {
                open.batch.items.push(Item::Message(message));
                Fed::Held
            }
            _ => Fed::Pass(message),
        }
    }

    /// Forgets every open batch (the connection dropped), returning what they held so nothing is lost.
    pub(crate) fn drain(&mut self) -> Vec<Batch> {
        let mut batches: Vec<Batch> = self.open.drain().map(|(_, open)| open.batch).collect();
        batches.sort_by_key(|batch| batch.opener.to_string());
        batches
    }
}

#[cfg(test)]
mod tests {
    use std::str::FromStr as _;

    use super::*;

    fn feed(tracker: &mut BatchTracker, line: &str) -> Fed {
        tracker.feed(Message::from_str(line).unwrap())
    }

    #[test]
    fn a_netsplit_batch_is_held_until_it_closes() {
        let mut tracker = BatchTracker::default();
        assert_eq!(feed(&mut tracker, ":irc BATCH +yXNAbvnRHTRBv netsplit irc.hub other.host"), Fed::Held);
        assert_eq!(feed(&mut tracker, "@batch=yXNAbvnRHTRBv :aa!a@h QUIT :irc.hub other.host"), Fed::Held);
        assert!(matches!(feed(&mut tracker, ":bb!b@h PRIVMSG #c :not batched"), Fed::Pass(_)));
        assert_eq!(feed(&mut tracker, "@batch=yXNAbvnRHTRBv :bb!b@h QUIT :irc.hub other.host"), Fed::Held);
        let Fed::Done(batch) = feed(&mut tracker, ":irc BATCH -yXNAbvnRHTRBv") else { panic!("not closed") };
        assert_eq!(batch.kind, "netsplit");
        assert_eq!(batch.params, ["irc.hub", "other.host"]);
        let quitters: Vec<_> = batch.messages().iter().filter_map(|message| message.source_nickname()).collect();
        assert_eq!(quitters, ["aa", "bb"]);
    }

    #[test]
    fn nested_batches_close_into_their_parent() {
        let mut tracker = BatchTracker::default();
        assert_eq!(feed(&mut tracker, "@label=L1 :irc BATCH +outer labeled-response"), Fed::Held);
        assert_eq!(feed(&mut tracker, "@batch=outer :irc BATCH +inner chathistory #c"), Fed::Held);
        assert_eq!(feed(&mut tracker, "@batch=inner;msgid=1 :a!a@h PRIVMSG #c :one"), Fed::Held);
        assert_eq!(feed(&mut tracker, ":irc BATCH -inner"), Fed::Held);
        assert_eq!(feed(&mut tracker, "@batch=outer :irc NOTICE me :done"), Fed::Held);
        let Fed::Done(batch) = feed(&mut tracker, ":irc BATCH -outer") else { panic!("not closed") };
        assert_eq!(tags::get(&batch.opener, "label"), Some("L1"));
        let Item::Batch(inner) = &batch.items[0] else { panic!("no nested batch") };
        assert_eq!((inner.kind.as_str(), inner.params.as_slice()), ("chathistory", ["#c".to_owned()].as_slice()));
        assert_eq!(batch.messages().len(), 2);
    }

    #[test]
    fn unknown_references_and_overflow_pass_through() {
        let mut tracker = BatchTracker::default();
        assert!(matches!(feed(&mut tracker, "@batch=nope :a!a@h PRIVMSG #c :hi"), Fed::Pass(_)));
        assert!(matches!(feed(&mut tracker, ":irc BATCH -nope"), Fed::Pass(_)));
        for index in 0..MAX_OPEN {
            assert_eq!(feed(&mut tracker, &format!(":irc BATCH +b{index} netjoin")), Fed::Held);
        }
        assert!(matches!(feed(&mut tracker, ":irc BATCH +one-too-many netjoin"), Fed::Pass(_)));
        assert_eq!(tracker.drain().len(), MAX_OPEN);
    }
}
