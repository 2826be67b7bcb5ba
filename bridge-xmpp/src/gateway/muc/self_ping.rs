//! [XEP-0410: MUC Self-Ping (Schrödinger's Chat)](https://xmpp.org/extensions/xep-0410.html), both sides.
//!
//! A MUC service that restarts, or a server-to-server link that drops, can forget the bridge's occupant without a
//! word: the portal then silently stops receiving. After `muc.self_ping_interval_secs` without a stanza from a
//! bridged MUC the gateway pings its own listener occupant (`room@muc/nick`); the MUC answers for it while it is an
//! occupant, and says `not-acceptable` (or nothing) once it forgot it, and then the gateway joins again. Traffic
//! from the MUC already proves membership, so a busy room is never pinged.
//!
//! The other side: XMPP clients (Conversations, Dino, Gajim) self-ping their occupant in a gateway MUC; the gateway
//! answers for occupants it knows and refuses the others with `not-acceptable`, so a client that the bridge forgot
//! rejoins on its own.

use std::{collections::HashMap, sync::Mutex, time::Duration};

use tokio::{sync::oneshot, task::JoinHandle, time::Instant};
use tokio_xmpp::parsers::{
    iq::Iq,
    jid::{BareJid, FullJid},
    ping::Ping,
    stanza_error::DefinedCondition,
};

use super::MucPortals;
use crate::gateway::{new_id, portal::muc_key};

/// What a self-ping found out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PingOutcome {
    /// The MUC still has the occupant.
    Joined,
    /// The MUC no longer knows the occupant: join again.
    NotJoined,
    /// The MUC's server could not be reached: ask again later rather than rejoin into a void.
    Unreachable,
}

/// Reads an answer to a self-ping as XEP-0410 §3 says: a result, or an error the occupant's own client would give
/// (`service-unavailable`, `feature-not-implemented`), means joined; `remote-server-*` means the MUC's server is
/// not reachable now; any other error, and silence, means the occupant is gone.
fn outcome_of(answer: Option<Result<(), DefinedCondition>>) -> PingOutcome {
    match answer {
        Some(Ok(())) => PingOutcome::Joined,
        Some(Err(DefinedCondition::ServiceUnavailable | DefinedCondition::FeatureNotImplemented)) => {
            PingOutcome::Joined
        }
        Some(Err(DefinedCondition::RemoteServerNotFound | DefinedCondition::RemoteServerTimeout)) => {
            PingOutcome::Unreachable
        }
        Some(Err(_)) | None => PingOutcome::NotJoined,
    }
}

type PingWaiter = oneshot::Sender<Result<(), DefinedCondition>>;

/// The gateway's self-ping state: pings awaiting an answer, and when each bridged MUC was last heard from.
#[derive(Debug, Default)]
pub(crate) struct SelfPings {
    pending: Mutex<HashMap<String, PingWaiter>>,
    heard: Mutex<HashMap<BareJid, Instant>>,
}

impl SelfPings {
    fn pending(&self) -> std::sync::MutexGuard<'_, HashMap<String, PingWaiter>> {
        self.pending.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn heard(&self) -> std::sync::MutexGuard<'_, HashMap<BareJid, Instant>> {
        self.heard.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Notes a stanza from `room` to the listener (proof that the MUC still routes to it) or a check of it.
    pub(super) fn heard_from(&self, room: &BareJid) {
        self.heard().insert(room.clone(), Instant::now());
    }

    /// Whether `room` has been silent for `idle` (or never heard from).
    fn is_idle(&self, room: &BareJid, idle: Duration) -> bool {
        self.heard().get(room).is_none_or(|heard| heard.elapsed() >= idle)
    }

    /// Hands an IQ answer to the self-ping waiting for it; false when it answers something else.
    fn answer(&self, iq: &Iq) -> bool {
        let (id, outcome) = match iq {
            Iq::Result { id, .. } => (id, Ok(())),
            Iq::Error { id, error, .. } => (id, Err(error.defined_condition.clone())),
            Iq::Get { .. } | Iq::Set { .. } => return false,
        };
        match self.pending().remove(id) {
            Some(waiter) => {
                let _ = waiter.send(outcome);
                true
            }
            None => false,
        }
    }
}

impl MucPortals<'_> {
    /// Starts pinging idle MUCs' listener occupants, until the link is closed.
    pub(crate) fn spawn_self_pings(&self) -> JoinHandle<()> {
        let gateway = self.arc();
        tokio::spawn(async move { gateway.muc().self_ping_loop().await })
    }

    /// Hands an IQ answer to the self-ping waiting for it; false when it answers something else.
    pub(crate) fn take_self_ping_answer(&self, iq: &Iq) -> bool {
        self.mucs.self_pings.answer(iq)
    }

    /// Pings idle MUCs' listener occupants until the link is closed.
    async fn self_ping_loop(&self) {
        let idle = Duration::from_secs(self.section.muc.self_ping_interval_secs);
        let mut ticks = tokio::time::interval((idle / 2).max(Duration::from_secs(1)));
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            if self.link.is_closed() {
                return;
            }
            let state = self.link.state();
            if !state.online {
                continue;
            }
            for (room, occupant) in self.listening_occupants(state.generation) {
                if !self.mucs.self_pings.is_idle(&room, idle) {
                    continue;
                }
                // Counts as a check from now on: one ping per idle period, however long its answer takes.
                self.mucs.self_pings.heard_from(&room);
                let gateway = self.arc();
                tokio::spawn(async move { gateway.muc().self_ping(room, occupant).await });
            }
        }
    }

    /// Pings the listener's occupant JID in `room`; rejoins when the MUC no longer knows it.
    async fn self_ping(&self, room: BareJid, occupant: FullJid) {
        let id = new_id();
        let (sender, receiver) = oneshot::channel();
        self.mucs.self_pings.pending().insert(id.clone(), sender);
        let ping = Iq::from_get(id.clone(), Ping).with_from(self.listener_jid().into()).with_to(occupant.into());
        if self.send(ping).await.is_err() {
            self.mucs.self_pings.pending().remove(&id);
            return;
        }
        let answer = tokio::time::timeout(self.timeout, receiver).await.ok().and_then(Result::ok);
        self.mucs.self_pings.pending().remove(&id);
        match outcome_of(answer) {
            PingOutcome::Joined => self.mucs.self_pings.heard_from(&room),
            PingOutcome::Unreachable => tracing::info!(%room, "the MUC's server is unreachable; pinging again later"),
            PingOutcome::NotJoined => {
                tracing::warn!(%room, "the MUC forgot the bridge's occupant (XEP-0410 self-ping); joining again");
                self.forget_listening(&room);
                // Counts as heard: the rejoin itself is the check until the next idle period.
                self.mucs.self_pings.heard_from(&room);
                match self.bridge.portals().by_key(&muc_key(&room)).await {
                    Ok(Some(portal)) => self.rejoin_room(&room, &portal).await,
                    Ok(None) => {}
                    Err(error) => tracing::warn!(%room, %error, "cannot read the portal of a MUC to rejoin it"),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_read_as_xep_0410_says() {
        for (answer, outcome) in [
            (Some(Ok(())), PingOutcome::Joined),
            (Some(Err(DefinedCondition::ServiceUnavailable)), PingOutcome::Joined),
            (Some(Err(DefinedCondition::FeatureNotImplemented)), PingOutcome::Joined),
            (Some(Err(DefinedCondition::NotAcceptable)), PingOutcome::NotJoined),
            (Some(Err(DefinedCondition::ItemNotFound)), PingOutcome::NotJoined),
            (Some(Err(DefinedCondition::RemoteServerNotFound)), PingOutcome::Unreachable),
            (Some(Err(DefinedCondition::RemoteServerTimeout)), PingOutcome::Unreachable),
            (None, PingOutcome::NotJoined),
        ] {
            assert_eq!(outcome_of(answer.clone()), outcome, "{answer:?}");
        }
    }

    #[test]
    fn only_awaited_answers_are_taken() {
        let pings = SelfPings::default();
        let (sender, mut receiver) = oneshot::channel();
        pings.pending().insert("p1".into(), sender);
        assert!(!pings.answer(&Iq::Result { from: None, to: None, id: "other".into(), payload: None }));
        assert!(pings.answer(&Iq::Result { from: None, to: None, id: "p1".into(), payload: None }));
        assert_eq!(receiver.try_recv(), Ok(Ok(())));
        assert!(!pings.answer(&Iq::Result { from: None, to: None, id: "p1".into(), payload: None }));
    }
}
