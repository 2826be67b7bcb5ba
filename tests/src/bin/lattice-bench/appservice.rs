//! The homeserver's side of the Application Service API as the benchmarks need it: transactions pushed straight to
//! a bridge (`PUT /_matrix/app/v1/transactions/{txnId}`, as Synapse sends them), and a stub appservice that only
//! notes when each event reaches it — the homeserver's own floor, against which the bridge's part is measured.

use std::{
    sync::atomic::{AtomicU64, Ordering},
    time::Instant,
};

use anyhow::{Context as _, bail};
use axum::{Json, Router, extract::State, routing::any};
use serde_json::{Value, json};
use tokio::net::TcpListener;

use crate::arrivals::Arrivals;

/// Pushes transactions to one bridge as its homeserver would.
pub(crate) struct Pusher {
    http: reqwest::Client,
    url: String,
    hs_token: String,
    next: AtomicU64,
    run: u64,
}

impl Pusher {
    /// A pusher for the bridge listening at `url` (`http://127.0.0.1:PORT`).
    pub(crate) fn new(url: &str, hs_token: &str) -> anyhow::Result<Self> {
        Ok(Self {
            http: reqwest::Client::builder().no_proxy().build()?,
            url: url.to_owned(),
            hs_token: hs_token.to_owned(),
            next: AtomicU64::new(0),
            run: rand::random::<u32>().into(),
        })
    }

    /// Sends one transaction and waits for its `200 {}` (the bridge has persisted it then).
    pub(crate) async fn push(&self, events: Vec<Value>) -> anyhow::Result<()> {
        let txn = format!("bench-{}-{}", self.run, self.next.fetch_add(1, Ordering::Relaxed));
        let answer = self
            .http
            .put(format!("{}/_matrix/app/v1/transactions/{txn}", self.url))
            .bearer_auth(&self.hs_token)
            .json(&json!({ "events": events }))
            .send()
            .await
            .context("pushing a transaction")?;
        if !answer.status().is_success() {
            bail!("transaction {txn}: {} {}", answer.status(), answer.text().await.unwrap_or_default());
        }
        Ok(())
    }

    /// Sends `events` in transactions of at most 100 (Synapse's limit), one after another (Synapse keeps one in
    /// flight per appservice).
    pub(crate) async fn push_all(&self, events: Vec<Value>) -> anyhow::Result<()> {
        let mut events = events.into_iter().peekable();
        while events.peek().is_some() {
            self.push(events.by_ref().take(100).collect()).await?;
        }
        Ok(())
    }
}

fn event_id() -> String {
    format!("$bench{:032x}", rand::random::<u128>())
}

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// An `m.room.message` event as Synapse delivers it.
pub(crate) fn message_event(room_id: &str, sender: &str, body: &str) -> Value {
    json!({
        "type": "m.room.message", "room_id": room_id, "sender": sender, "event_id": event_id(),
        "origin_server_ts": now_ms(), "content": {"msgtype": "m.text", "body": body}, "unsigned": {"age": 0},
    })
}

/// An `m.room.member` join as Synapse delivers it.
pub(crate) fn join_event(room_id: &str, user_id: &str, displayname: &str) -> Value {
    json!({
        "type": "m.room.member", "room_id": room_id, "sender": user_id, "state_key": user_id,
        "event_id": event_id(), "origin_server_ts": now_ms(),
        "content": {"membership": "join", "displayname": displayname}, "unsigned": {"age": 0},
    })
}

/// An appservice that acknowledges every transaction and notes when each message body reached it.
#[derive(Clone, Default)]
pub(crate) struct StubAppservice {
    arrivals: Arrivals,
}

impl StubAppservice {
    /// Starts it on a free port; returns it and its URL.
    pub(crate) async fn start() -> anyhow::Result<(Self, String)> {
        let stub = Self::default();
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}", listener.local_addr()?);
        let app = Router::new().fallback(any(record)).with_state(stub.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Ok((stub, url))
    }

    /// When the message `body` reached the stub, waiting up to `timeout` for it.
    pub(crate) async fn arrival(&self, body: &str, timeout: std::time::Duration) -> anyhow::Result<Instant> {
        self.arrivals.wait(body, timeout, "the stub appservice", || false).await
    }
}

async fn record(State(stub): State<StubAppservice>, body: Option<Json<Value>>) -> Json<Value> {
    let now = Instant::now();
    if let Some(Json(body)) = body {
        let events = body["events"].as_array().into_iter().flatten();
        stub.arrivals.note(events.filter_map(|event| event["content"]["body"].as_str()), now);
    }
    Json(json!({}))
}
