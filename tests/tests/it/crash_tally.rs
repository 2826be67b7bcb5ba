//! What the crash tests count: numbered messages from several Matrix senders, tallied as they arrive on the other
//! network — lost, doubled, out of order per sender — and, for the lost ones, whether the homeserver ever sent
//! them to the bridge.
//!
//! Synapse 1.163 can strand an event in an appservice transaction it never sends: when an event is created while
//! its recoverer is finishing the catch-up after the bridge was unreachable, the event's transaction is stored as
//! for a service that is down, and the recoverer, which found nothing left a moment before, marks the service up
//! without sending it (`synapse/appservice/scheduler.py`: `_TransactionController.send` and `_Recoverer.retry`).
//! It stays in `application_services_txns` until the next time the bridge is unreachable. Such an event never
//! reached the bridge, so it is counted apart from what the bridge lost.

use std::{
    collections::{BTreeMap, BTreeSet},
    time::Duration,
};

use lattice_e2e::{MatrixUser, Synapse};
use tokio::task::JoinHandle;

/// How long everything missing must have been stranded in Synapse before the wait for it ends.
const STRANDED_FOR: Duration = Duration::from_secs(20);

/// The events Synapse holds unsent while the bridge is up: in its unsent transactions now and half a second later
/// (an event merely on its way is gone by then). Taken before each kill.
pub(crate) async fn stranded_now(synapse: &Synapse) -> anyhow::Result<BTreeSet<String>> {
    let first = synapse.unsent_appservice_events()?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let second = synapse.unsent_appservice_events()?;
    Ok(first.intersection(&second).cloned().collect())
}

/// The numbered messages of a crash test: `senders` Matrix users, `per_sender` messages each.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Stream {
    pub(crate) senders: usize,
    pub(crate) per_sender: usize,
}

/// What arrived, counted against what was sent.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Tally {
    /// Sent and never arrived, the homeserver's strandings included.
    pub(crate) lost: usize,
    /// Of those, the events the homeserver never sent to the bridge.
    pub(crate) never_sent_by_homeserver: usize,
    pub(crate) doubled: usize,
    pub(crate) out_of_order: usize,
    /// First arrivals after a later message of their sender's that Synapse held back: stranded (see above) when the
    /// bridge was killed, so sent only at that next outage, after what came since. Not counted as out of order.
    pub(crate) late_from_homeserver: usize,
}

impl Tally {
    /// Lost by the bridge: lost, less what the homeserver never sent it.
    pub(crate) fn lost_by_bridge(&self) -> usize {
        self.lost - self.never_sent_by_homeserver
    }
}

impl Stream {
    /// The body of message `number` of `sender`.
    pub(crate) fn body(sender: usize, number: usize) -> String {
        format!("crash {sender}/{number}")
    }

    /// The (sender, number) a body names, if it is one of the stream's.
    pub(crate) fn parse(body: &str) -> Option<(usize, usize)> {
        let (sender, number) = body.strip_prefix("crash ")?.split_once('/')?;
        Some((sender.parse().ok()?, number.parse().ok()?))
    }

    /// Starts each sender sending its messages in order; each task returns the event IDs, by number.
    pub(crate) fn start(self, users: Vec<MatrixUser>, room_id: &str) -> Vec<JoinHandle<anyhow::Result<Vec<String>>>> {
        users
            .into_iter()
            .enumerate()
            .map(|(sender, user)| {
                let room_id = room_id.to_owned();
                tokio::spawn(async move {
                    let mut event_ids = Vec::with_capacity(self.per_sender);
                    for number in 0..self.per_sender {
                        event_ids.push(user.send_text(&room_id, &Self::body(sender, number)).await?);
                    }
                    anyhow::Ok(event_ids)
                })
            })
            .collect()
    }

    /// The messages that did not arrive, as (sender, number).
    pub(crate) fn missing(self, arrived: &[(usize, usize)]) -> Vec<(usize, usize)> {
        let arrived: BTreeSet<_> = arrived.iter().collect();
        (0..self.senders)
            .flat_map(|sender| (0..self.per_sender).map(move |number| (sender, number)))
            .filter(|sent| !arrived.contains(sent))
            .collect()
    }

    /// Waits up to `wait` until everything arrived. It stops sooner once, for [`STRANDED_FOR`], all that is missing
    /// has been among the events Synapse holds unsent (see above): those do not come.
    pub(crate) async fn wait_for_all(
        self,
        arrived: impl Fn() -> Vec<(usize, usize)>,
        event_ids: &[Vec<String>],
        synapse: &Synapse,
        wait: Duration,
    ) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + wait;
        let mut stranded_since = None;
        let mut rounds = 0u32;
        while tokio::time::Instant::now() < deadline {
            let missing = self.missing(&arrived());
            if missing.is_empty() {
                return Ok(());
            }
            // Asking Synapse starts a Python process: every few rounds.
            if rounds.is_multiple_of(10) {
                let unsent = synapse.unsent_appservice_events()?;
                let stranded = missing.iter().all(|&(sender, number)| {
                    event_ids.get(sender).and_then(|ids| ids.get(number)).is_some_and(|id| unsent.contains(id))
                });
                stranded_since =
                    if stranded { stranded_since.or_else(|| Some(tokio::time::Instant::now())) } else { None };
                if stranded_since.is_some_and(|since| since.elapsed() >= STRANDED_FOR) {
                    return Ok(());
                }
            }
            rounds += 1;
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        Ok(())
    }

    /// The numbers of each sender's messages in the order they arrived (to show a reordering).
    pub(crate) fn arrivals_by_sender(self, arrived: &[(usize, usize)]) -> Vec<Vec<usize>> {
        (0..self.senders)
            .map(|sender| arrived.iter().filter(|(from, _)| *from == sender).map(|(_, number)| *number).collect())
            .collect()
    }

    /// Counts what arrived (without asking the homeserver about the lost ones).
    pub(crate) fn tally(self, arrived: &[(usize, usize)]) -> Tally {
        self.tally_excusing(arrived, |_, _| false)
    }

    /// Counts what arrived; a late first arrival of a message `held_back(sender, number)` says the homeserver held
    /// back is counted apart from the out-of-order ones.
    fn tally_excusing(self, arrived: &[(usize, usize)], held_back: impl Fn(usize, usize) -> bool) -> Tally {
        let mut per_sender: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
        for &(sender, number) in arrived {
            per_sender.entry(sender).or_default().push(number);
        }
        let mut tally = Tally::default();
        for sender in 0..self.senders {
            let numbers = per_sender.remove(&sender).unwrap_or_default();
            let mut seen = vec![false; self.per_sender];
            let mut last_new = None;
            for number in numbers {
                match seen.get_mut(number) {
                    Some(true) => tally.doubled += 1,
                    Some(slot) => {
                        *slot = true;
                        // A first arrival must come after every earlier first arrival of the sender's.
                        if last_new.is_none_or(|last| number > last) {
                            last_new = Some(number);
                        } else if held_back(sender, number) {
                            tally.late_from_homeserver += 1;
                        } else {
                            tally.out_of_order += 1;
                            last_new = Some(number);
                        }
                    }
                    None => tally.out_of_order += 1,
                }
            }
            tally.lost += seen.iter().filter(|seen| !**seen).count();
        }
        tally.out_of_order += per_sender.values().map(Vec::len).sum::<usize>();
        tally
    }

    /// Counts what arrived, and asks `synapse` which of the lost events it still holds unsent; prints the lost ones.
    /// `held_back`: the events Synapse held stranded at one of the kills (see [`stranded_now`]).
    pub(crate) fn tally_against(
        self,
        arrived: &[(usize, usize)],
        event_ids: &[Vec<String>],
        synapse: &Synapse,
        held_back: &BTreeSet<String>,
    ) -> anyhow::Result<Tally> {
        let mut tally = self.tally_excusing(arrived, |sender, number| {
            event_ids.get(sender).and_then(|ids| ids.get(number)).is_some_and(|id| held_back.contains(id))
        });
        if tally.lost == 0 {
            return Ok(tally);
        }
        let unsent = synapse.unsent_appservice_events()?;
        for (sender, number) in self.missing(arrived) {
            let event_id = event_ids.get(sender).and_then(|ids| ids.get(number)).map_or("?", String::as_str);
            let stranded = unsent.contains(event_id);
            tally.never_sent_by_homeserver += usize::from(stranded);
            let whose = if stranded { "never sent to the bridge by Synapse" } else { "lost by the bridge" };
            println!("lost {} ({event_id}): {whose}", Self::body(sender, number));
        }
        Ok(tally)
    }
}

#[test]
fn the_tally_counts_losses_doubles_and_reordering() {
    let stream = Stream { senders: 5, per_sender: 20 };
    let mut arrived: Vec<(usize, usize)> = (0..5).flat_map(|s| (0..20).map(move |n| (s, n))).collect();
    assert_eq!(stream.tally(&arrived), Tally::default());
    arrived.retain(|&(s, n)| !(s == 3 && n == 7));
    arrived.push((2, 5));
    arrived.push((4, 0));
    arrived.push((9, 0));
    let swap = arrived.iter().position(|&(s, n)| s == 1 && n == 10).unwrap();
    arrived.swap(swap, swap + 1);
    let tally = stream.tally(&arrived);
    assert_eq!(tally, Tally { lost: 1, doubled: 2, out_of_order: 2, ..Tally::default() });
    // Held back by the homeserver, the late message is counted apart; the unknown sender's still counts.
    let excused = stream.tally_excusing(&arrived, |sender, number| (sender, number) == (1, 10));
    assert_eq!(excused, Tally { lost: 1, doubled: 2, out_of_order: 1, late_from_homeserver: 1, ..Tally::default() });
    assert_eq!(stream.missing(&arrived), [(3, 7)]);
    assert_eq!(Stream::parse(&Stream::body(3, 7)), Some((3, 7)));
}
