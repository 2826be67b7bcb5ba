//! Time to persist and acknowledge a 100-event transaction (`PUT /_matrix/app/v1/transactions/{txnId}`), the
//! homeserver's view of the bridge's ingest latency, on SQLite (and PostgreSQL when `LATTICE_TEST_POSTGRES_URL` is
//! set). Baseline, measured in the same run over the same HTTP connection: `POST /_matrix/app/v1/ping` with the same
//! body, which authenticates and parses but persists nothing — the difference is the store's share.
//!
//! Run: `cargo bench -p lattice-bridge-core --bench transactions` (prints figures; asserts nothing).

use std::time::{Duration, Instant};

use lattice_bridge_core::{
    Bridge, BridgeHandle, Connector, RuntimeSettings,
    connector::{ConnectorInfo, ConnectorResult},
    event::MatrixEvent,
    store::{Cipher, Store},
};
use lattice_config::{Permissions, PermissionsConfig};
use lattice_registration::{AppserviceRegistration, RegistrationTemplate};
use serde_json::{Value, json};

const EVENTS_PER_TRANSACTION: usize = 100;
const WARMUP: usize = 20;
const TRANSACTIONS: usize = 500;

/// Accepts every event at once (the bench measures the runtime, not a network), or — `stalled` — never returns,
/// so the queues only fill and ingest is measured without the workers' bookkeeping writes beside it.
struct Sink {
    stalled: bool,
}

impl Connector for Sink {
    fn info(&self) -> ConnectorInfo {
        ConnectorInfo { protocol_id: "bench", protocol_name: "Bench", command_prefix: "!bench" }
    }

    async fn start(&self, _bridge: BridgeHandle) -> ConnectorResult<()> {
        Ok(())
    }

    /// The bench's rooms are no portals: every event arrives here.
    async fn matrix_elsewhere(&self, _event: &MatrixEvent) -> ConnectorResult<()> {
        if self.stalled {
            std::future::pending::<()>().await;
        }
        Ok(())
    }
}

fn transaction(number: usize) -> Value {
    let events: Vec<Value> = (0..EVENTS_PER_TRANSACTION)
        .map(|index| {
            json!({
                "type": "m.room.message",
                "room_id": format!("!room{}:localhost", index % 10),
                "event_id": format!("$e{number}_{index}"),
                "sender": "@alice:localhost",
                "origin_server_ts": 1_700_000_000_000u64,
                "content": {"msgtype": "m.text", "body": format!("message {index} of transaction {number}, a typical line")},
            })
        })
        .collect();
    json!({"events": events})
}

fn percentile(sorted: &[Duration], fraction: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * fraction).round() as usize;
    sorted[index]
}

struct Figures {
    p50: Duration,
    p99: Duration,
    max: Duration,
}

fn summarise(mut samples: Vec<Duration>) -> Figures {
    samples.sort();
    Figures { p50: percentile(&samples, 0.5), p99: percentile(&samples, 0.99), max: *samples.last().unwrap() }
}

async fn measure(client: &reqwest::Client, token: &str, url_for: impl Fn(usize) -> String, put: bool) -> Figures {
    let mut samples = Vec::with_capacity(TRANSACTIONS);
    for number in 0..WARMUP + TRANSACTIONS {
        let body = serde_json::to_vec(&transaction(number)).unwrap();
        let request = if put { client.put(url_for(number)) } else { client.post(url_for(number)) };
        let started = Instant::now();
        let response = request.bearer_auth(token).header("content-type", "application/json").body(body).send().await;
        let response = response.unwrap();
        assert!(response.status().is_success(), "{}", response.status());
        response.bytes().await.unwrap();
        if number >= WARMUP {
            samples.push(started.elapsed());
        }
    }
    summarise(samples)
}

async fn run(backend: &str, store: Store, stalled: bool) {
    let registration = lattice_registration::generate(&RegistrationTemplate {
        id: "bench".into(),
        url: "http://127.0.0.1:9".parse().unwrap(),
        sender_localpart: "_bench_bot".into(),
        user_regexes: vec!["^@_bench_.*:localhost$".into()],
        alias_regexes: vec![],
        protocols: vec![],
        receive_ephemeral: true,
    });
    let registration = AppserviceRegistration::new(registration, "bench.yaml").unwrap();
    let token = registration.registration().hs_token.clone();
    let settings = RuntimeSettings {
        homeserver_url: "http://127.0.0.1:9".parse().unwrap(),
        server_name: "localhost".into(),
        permissions: Permissions::new(&PermissionsConfig::default()).unwrap(),
        metrics_enabled: true,
        media_base_url: "http://127.0.0.1:9".parse().unwrap(),
        bot_displayname: None,
        listener: Default::default(),
    };
    let bridge = Bridge::from_parts(settings, registration, store, Sink { stalled }).unwrap();
    let trigger = bridge.shutdown_trigger();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let server = tokio::spawn(bridge.serve(listener));
    let client = reqwest::Client::new();

    let baseline = measure(&client, &token, |_| format!("{base}/_matrix/app/v1/ping"), false).await;
    let persisted =
        measure(&client, &token, |number| format!("{base}/_matrix/app/v1/transactions/bench{number}"), true).await;
    let ms = |duration: Duration| duration.as_secs_f64() * 1e3;
    let backend = format!("{backend}{}", if stalled { " (ingest only)" } else { "" });
    println!(
        "{backend:<10} persist+ack of a {EVENTS_PER_TRANSACTION}-event transaction over {TRANSACTIONS} runs: \
         p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        ms(persisted.p50),
        ms(persisted.p99),
        ms(persisted.max)
    );
    println!(
        "{backend:<10} baseline (same body to /ping, nothing persisted):              p50 {:.2} ms, p99 {:.2} ms; \
         persist+ack / baseline at p50: {:.1}x",
        ms(baseline.p50),
        ms(baseline.p99),
        persisted.p50.as_secs_f64() / baseline.p50.as_secs_f64()
    );
    trigger.trigger();
    if !stalled {
        server.await.unwrap().unwrap();
    }
}

#[tokio::main]
async fn main() {
    let dir = tempfile::tempdir().unwrap();
    for stalled in [false, true] {
        let sqlite = format!("sqlite://{}", dir.path().join(format!("bench-{stalled}.db")).display());
        run("sqlite", Store::connect(&sqlite, 8, Cipher::random()).await.unwrap(), stalled).await;
    }
    match std::env::var("LATTICE_TEST_POSTGRES_URL") {
        Ok(url) => run("postgresql", Store::connect(&url, 8, Cipher::random()).await.unwrap(), false).await,
        Err(_) => println!("postgresql: skipped (set LATTICE_TEST_POSTGRES_URL to measure it too)"),
    }
}
