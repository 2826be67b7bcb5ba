//! Stanzas from the XMPP server handled one lane per conversation: in the server's order within a room, chat
//! contact or subscriber, and side by side across them.
//!
//! Handling a stanza can take long: a file linked with [XEP-0066](https://xmpp.org/extensions/xep-0066.html) is
//! downloaded and uploaded to Matrix before its message is pushed, and everything after it in that room must wait
//! for it, or order is lost. Other rooms must not wait: each conversation gets a task with a bounded queue (when
//! one is full, reading from the server waits: backpressure, not an unbounded buffer). A lane that has been idle
//! for a while ends, so senders that come and go leave nothing behind.

use std::{
    collections::HashMap,
    future::Future,
    sync::{Arc, Mutex},
    time::Duration,
};

use tokio::sync::mpsc;
use tokio_xmpp::{
    Stanza,
    parsers::{iq::Iq, jid::BareJid, ns},
};

/// Stanzas one conversation may have waiting before reading from the server waits for it.
const LANE_CAPACITY: usize = 256;
/// How long a lane without stanzas lives on.
const LANE_IDLE: Duration = Duration::from_secs(60);

/// The conversation a stanza belongs to: the addressed gateway MUC for stanzas to one (`to_gateway_muc`), else the
/// sender's bare JID (a MUC, or an XMPP account in a direct chat). `None` for a stanza without a sender, and for
/// answers to the gateway's IQs: they only wake their waiter, which a slow lane must not hold up (a self-ping
/// answer stuck behind a download would read as a MUC that forgot the bridge). XEP-0313 archive results are such
/// answers too: they must be collected before the IQ that ends their query, which skips the lanes.
pub(crate) fn lane_of(stanza: &Stanza, to_gateway_muc: bool) -> Option<BareJid> {
    let (from, to) = match stanza {
        Stanza::Message(message) if message.payloads.iter().any(|payload| payload.is("result", ns::MAM)) => {
            return None;
        }
        Stanza::Message(message) => (message.from.as_ref(), message.to.as_ref()),
        Stanza::Presence(presence) => (presence.from.as_ref(), presence.to.as_ref()),
        Stanza::Iq(Iq::Result { .. } | Iq::Error { .. }) => return None,
        Stanza::Iq(iq) => (iq.from(), iq.to()),
    };
    if to_gateway_muc { to.map(|to| to.to_bare()) } else { from.map(|from| from.to_bare()) }
}

/// The lanes, each a task that hands its stanzas one at a time to the handler.
pub(crate) struct Lanes<H> {
    handler: H,
    lanes: Arc<Mutex<HashMap<BareJid, mpsc::Sender<Stanza>>>>,
}

impl<H, F> Lanes<H>
where
    H: Fn(Stanza) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = ()> + Send + 'static,
{
    /// Lanes that hand stanzas to `handler`.
    pub(crate) fn new(handler: H) -> Self {
        Self { handler, lanes: Arc::default() }
    }

    /// Queues `stanza` on the lane of `key`, starting the lane if needed; waits while that lane is full.
    pub(crate) async fn dispatch(&self, key: BareJid, mut stanza: Stanza) {
        // A lane can end between looking it up and sending to it; then the stanza comes back and a new one starts.
        for _ in 0..2 {
            let sender = self.sender(&key);
            match sender.send(stanza).await {
                Ok(()) => return,
                Err(mpsc::error::SendError(returned)) => {
                    stanza = returned;
                    let mut lanes = self.lanes.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
                    if lanes.get(&key).is_some_and(|current| current.same_channel(&sender)) {
                        lanes.remove(&key);
                    }
                }
            }
        }
        tracing::error!(lane = %key, "an XMPP stanza found no lane to run in");
    }

    fn sender(&self, key: &BareJid) -> mpsc::Sender<Stanza> {
        let mut lanes = self.lanes.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(sender) = lanes.get(key) {
            return sender.clone();
        }
        let (sender, receiver) = mpsc::channel(LANE_CAPACITY);
        lanes.insert(key.clone(), sender.clone());
        tokio::spawn(run_lane(key.clone(), receiver, self.handler.clone(), Arc::clone(&self.lanes)));
        sender
    }

    /// How many lanes run now.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.lanes.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).len()
    }
}

async fn run_lane<H, F>(
    key: BareJid,
    mut receiver: mpsc::Receiver<Stanza>,
    handler: H,
    lanes: Arc<Mutex<HashMap<BareJid, mpsc::Sender<Stanza>>>>,
) where
    H: Fn(Stanza) -> F,
    F: Future<Output = ()>,
{
    loop {
        match tokio::time::timeout(LANE_IDLE, receiver.recv()).await {
            Ok(Some(stanza)) => handler(stanza).await,
            Ok(None) => return,
            Err(_) => {
                // Idle. Under the map's lock no new sender can be taken: either a stanza slipped in and the lane
                // goes on, or it leaves the map and closes, and a sender taken earlier gets its stanza back.
                let slipped_in = {
                    let mut lanes = lanes.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
                    let slipped_in = receiver.try_recv().ok();
                    if slipped_in.is_none() {
                        lanes.remove(&key);
                        receiver.close();
                    }
                    slipped_in
                };
                match slipped_in {
                    Some(stanza) => handler(stanza).await,
                    None => return,
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::str::FromStr;

    use tokio::sync::Notify;
    use tokio_xmpp::parsers::{
        jid::Jid,
        message::{Lang, Message},
    };

    use super::*;

    fn message(from: &str, body: &str) -> Stanza {
        let mut message = Message::groupchat(None).with_body(Lang::new(), body.to_owned());
        message.from = Some(Jid::from_str(from).unwrap());
        message.into()
    }

    fn body(stanza: &Stanza) -> String {
        match stanza {
            Stanza::Message(message) => message.bodies.values().next().cloned().unwrap_or_default(),
            _ => String::new(),
        }
    }

    #[test]
    fn stanzas_to_gateway_mucs_go_by_room_the_rest_by_sender() {
        let mut stanza = message("a@muc.example/nick", "x");
        assert_eq!(lane_of(&stanza, false).unwrap().as_str(), "a@muc.example");
        if let Stanza::Message(message) = &mut stanza {
            message.to = Some(Jid::from_str("#r#s.org@gateway.example/Nick").unwrap());
        }
        assert_eq!(lane_of(&stanza, true).unwrap().as_str(), "#r#s.org@gateway.example");
        let answer = Iq::Result {
            from: Some(Jid::from_str("a@muc.example/n").unwrap()),
            to: None,
            id: "p".into(),
            payload: None,
        };
        assert_eq!(lane_of(&answer.into(), false), None);
    }

    #[tokio::test]
    async fn a_slow_stanza_holds_up_its_lane_only() {
        let gate = Arc::new(Notify::new());
        let (done_sender, mut done) = mpsc::channel(16);
        let handler = {
            let gate = Arc::clone(&gate);
            move |stanza: Stanza| {
                let (gate, done) = (Arc::clone(&gate), done_sender.clone());
                async move {
                    let text = body(&stanza);
                    if text == "slow" {
                        gate.notified().await;
                    }
                    let _ = done.send(text).await;
                }
            }
        };
        let lanes = Lanes::new(handler);
        let (a, b) = (BareJid::from_str("a@muc.example").unwrap(), BareJid::from_str("b@muc.example").unwrap());
        lanes.dispatch(a.clone(), message("a@muc.example/x", "slow")).await;
        lanes.dispatch(a.clone(), message("a@muc.example/x", "after slow")).await;
        lanes.dispatch(b.clone(), message("b@muc.example/x", "other room")).await;
        assert_eq!(done.recv().await.as_deref(), Some("other room"));
        gate.notify_one();
        assert_eq!(done.recv().await.as_deref(), Some("slow"));
        assert_eq!(done.recv().await.as_deref(), Some("after slow"));
        assert_eq!(lanes.len(), 2);
    }
}
