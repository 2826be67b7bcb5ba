//! The network's event loop: what every connection reports, in order, and the timers (echo timeouts, netsplit
//! notices).

use std::sync::Arc;

use irc::proto::Command;
use lattice_bridge_core::event::{MessageType, RemoteEventKind};
use tokio::sync::mpsc;

use crate::network::{BOT_OWNER, Network, TICK, lock, render::backfill_target};
use crate::{
    conn::ConnEvent,
    ids::casefold,
    ircv3::{
        batch::{Batch, BatchTracker, Fed},
        chathistory,
        echo::Outgoing,
        tags,
    },
    message_id::MessageId,
};

impl Network {
    pub(super) async fn process(self: Arc<Self>, mut receiver: mpsc::Receiver<ConnEvent>) {
        let mut batches = BatchTracker::default();
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let event = tokio::select! {
                event = receiver.recv() => event,
                _ = tick.tick() => {
                    self.on_tick().await;
                    continue;
                }
            };
            let Some(event) = event else { return };
            self.on_event(event, &mut batches).await;
            self.dialer.handled_one();
        }
    }

    /// One event of one of the network's connections.
    async fn on_event(&self, event: ConnEvent, batches: &mut BatchTracker) {
        match event {
            ConnEvent::Registered { owner, nick } if owner != BOT_OWNER => {
                self.privacy.registered(&owner);
                self.puppet_nicks.insert(casefold(&nick), owner);
            }
            ConnEvent::Registered { .. } => {}
            ConnEvent::Disconnected { owner, nick } if owner != BOT_OWNER => {
                self.puppet_nicks.remove_if(&casefold(&nick), |_, user| *user == owner);
                self.watch_lost_puppet(&owner);
            }
            ConnEvent::LoginFailed { owner, account, reason } if owner != BOT_OWNER => {
                let text = format!(
                    "Your IRC login to {} as {account} failed: {reason}. You are connected without it; store the \
                     right password with `storepass` to try again.",
                    self.config.name
                );
                self.tell(&owner, None, &text).await;
            }
            ConnEvent::LoginFailed { .. } => {}
            ConnEvent::Disconnected { nick, .. } => {
                lock(&self.members).clear();
                // What an unfinished batch held is still news.
                for batch in batches.drain() {
                    self.on_batch(&nick, batch).await;
                }
            }
            ConnEvent::Message { owner, nick, message } if owner == BOT_OWNER => {
                if self.taps.receiver_count() > 0 {
                    let _ = self.taps.send(Arc::new((*message).clone()));
                }
                match batches.feed(*message) {
                    Fed::Pass(message) => self.on_listener(&nick, message).await,
                    Fed::Held => {}
                    Fed::Done(batch) => self.on_batch(&nick, batch).await,
                }
            }
            ConnEvent::Message { owner, nick, message } => self.on_puppet(&owner, &nick, *message).await,
        }
    }

    /// Timers: lines whose echo never came, netsplit notices whose burst is over, people not back from a split.
    pub(super) async fn on_tick(&self) {
        let now = tokio::time::Instant::now();
        let late = {
            let mut echoes = lock(&self.echoes);
            if echoes.is_idle() { Vec::new() } else { echoes.expired(now) }
        };
        for sent in late {
            self.tell_undelivered(&sent, "the IRC server did not confirm it in time").await;
        }
        let due = {
            let mut netsplits = lock(&self.netsplits);
            if netsplits.is_idle() { Default::default() } else { netsplits.due(now) }
        };
        for (channel, body) in due.notices {
            if let Some(portal) = self.portal_of(&channel) {
                let kind = RemoteEventKind::Message { msgtype: MessageType::Notice, body, html: None, reply_to: None };
                self.push(&portal, None, None, kind).await;
            }
        }
        for (nick, channels) in due.gone {
            let ghost = self.ghost(&nick).await;
            for channel in channels {
                let present =
                    lock(&self.members).get(&channel).is_some_and(|members| members.contains(&casefold(&nick)));
                if !present && let Some(portal) = self.portal_of(&channel) {
                    let kind = RemoteEventKind::Leave { reason: Some("Netsplit".into()) };
                    self.push(&portal, Some(ghost.clone()), None, kind).await;
                }
            }
        }
    }

    /// Tells a Matrix sender, in the room, that a message of theirs did not reach IRC; once per event, also when the
    /// event is handled again after a crash (the runtime's own delivery-failure notice shares the key).
    pub(super) async fn tell_undelivered(&self, sent: &Outgoing, reason: &str) {
        let text = format!("⚠ {}: your message was not delivered to {}: {reason}", sent.matrix_user, self.config.name);
        let key = format!("undelivered.{}", sent.event_id);
        if let Err(error) = self.bridge.notice_once(&sent.room_id, &text, &key).await {
            tracing::warn!(network = %self.id, room_id = %sent.room_id, %error, "cannot send a delivery-failure notice");
        }
    }

    /// A closed batch (IRCv3 `batch`): a netsplit's quits are collapsed, anything else is handled line by line.
    pub(super) async fn on_batch(&self, own_nick: &str, batch: Batch) {
        if batch.kind == "netsplit" {
            let servers = batch.params.join(" ");
            for message in batch.messages() {
                if let (Command::QUIT(_), Some(nick)) = (&message.command, message.source_nickname()) {
                    self.split_quit(nick, &servers);
                }
            }
            return;
        }
        if batch.kind == "chathistory" {
            // Backfill: what is not in the message map yet, in order, with its own server-time.
            for message in batch.messages().into_iter().filter(|message| chathistory::replayable(message)) {
                let (Some(nick), Some(target)) = (message.source_nickname(), backfill_target(message)) else {
                    continue;
                };
                let Some(portal) = self.portal_of(target) else { continue };
                let known =
                    self.bridge.messages().event_for(&portal, &MessageId::of_line(nick, message).to_string()).await;
                if tags::get(message, "msgid").is_some() && matches!(known, Ok(None)) {
                    self.on_listener(own_nick, message.clone()).await;
                }
            }
            return;
        }
        // netjoin: the joins find their people in the netsplit tracker and are swallowed there.
        for message in batch.messages() {
            self.on_listener(own_nick, message.clone()).await;
        }
    }

    /// Someone quit in a netsplit: their ghost stays in its rooms until the netjoin (or the hold runs out).
    pub(super) fn split_quit(&self, nick: &str, servers: &str) {
        let folded = casefold(nick);
        let channels: Vec<String> = lock(&self.members)
            .iter_mut()
            .filter_map(|(channel, members)| members.remove(&folded).then(|| channel.clone()))
            .collect();
        if !channels.is_empty() {
            lock(&self.netsplits).split(&folded, nick, channels, servers, tokio::time::Instant::now());
        }
    }
}
