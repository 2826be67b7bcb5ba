//! Prometheus metrics, served as text at `GET /metrics` on the appservice listener.
//!
//! Transactions received, events handled per direction and outcome, queue depths and how long the oldest item of
//! each queue has waited, the time to persist a transaction, homeserver request latency and errors, what the
//! connector reports of its network ([`remote`]), plus the process collector's CPU and memory figures.

use std::{sync::Arc, time::Duration};

use prometheus::{
    Encoder, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry, TextEncoder,
};

pub use self::remote::{ConnectionState, RemoteMetrics};
use crate::{
    matrix::RequestObserver,
    store::{QueueKind, Store, now_ms},
};

mod remote;

/// How long a scrape waits for the store to say when each queue's oldest item was queued; past it, the age is left
/// out of that scrape rather than holding the scrape up.
const QUEUE_AGE_READ_TIMEOUT: Duration = Duration::from_secs(2);

/// The bridge's metrics. Cloning shares them.
#[derive(Clone, Debug)]
pub struct Metrics {
    registry: Registry,
    /// Homeserver transactions received, by outcome: `persisted`, `duplicate`, or not taken — `refused_too_large`,
    /// `refused_unreadable`, `refused_not_json`, `store_failed` (see `appservice::transactions`).
    pub(crate) transactions: IntCounterVec,
    /// Events by queue (`matrix`, `remote`) and outcome (`queued`, `skipped`, `handled`, `retried`, `dead_lettered`).
    pub(crate) events: IntCounterVec,
    /// Items waiting per queue.
    pub(crate) queue_depth: IntGaugeVec,
    /// Seconds the oldest item still in each queue has waited (0 when the queue is empty), read at scrape time.
    queue_oldest_age: GaugeVec,
    /// Seconds from a transaction's arrival to its acknowledgement (persisting included).
    pub(crate) transaction_seconds: Histogram,
    /// Homeserver request latency by endpoint.
    homeserver_request_seconds: HistogramVec,
    /// Homeserver requests that failed, by endpoint and status (`none` when no answer came).
    homeserver_errors: IntCounterVec,
    /// What the connector reports of its network.
    remote: RemoteMetrics,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A fresh registry with every metric registered.
    pub fn new() -> Self {
        let registry = Registry::new_custom(Some("lattice".into()), None).expect("a valid metric prefix");
        let transactions = IntCounterVec::new(
            Opts::new("appservice_transactions_total", "Homeserver transactions received, by outcome"),
            &["outcome"],
        )
        .expect("valid metric");
        let events =
            IntCounterVec::new(Opts::new("events_total", "Events by queue and outcome"), &["queue", "outcome"])
                .expect("valid metric");
        let queue_depth =
            IntGaugeVec::new(Opts::new("queue_depth", "Items waiting per queue"), &["queue"]).expect("valid metric");
        let queue_oldest_age = GaugeVec::new(
            Opts::new("queue_oldest_age_seconds", "Seconds the oldest item still in each queue has waited"),
            &["queue"],
        )
        .expect("valid metric");
        let transaction_seconds = Histogram::with_opts(
            HistogramOpts::new("appservice_transaction_seconds", "Time to persist and acknowledge a transaction")
                .buckets(vec![0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0]),
        )
        .expect("valid metric");
        let homeserver_request_seconds = HistogramVec::new(
            HistogramOpts::new("homeserver_request_seconds", "Homeserver request latency by endpoint")
                .buckets(vec![0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0]),
            &["endpoint"],
        )
        .expect("valid metric");
        let homeserver_errors = IntCounterVec::new(
            Opts::new("homeserver_errors_total", "Failed homeserver requests by endpoint and status"),
            &["endpoint", "status"],
        )
        .expect("valid metric");
        let remote = RemoteMetrics::new();
        let own = [
            Box::new(transactions.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(events.clone()),
            Box::new(queue_depth.clone()),
            Box::new(queue_oldest_age.clone()),
            Box::new(transaction_seconds.clone()),
            Box::new(homeserver_request_seconds.clone()),
            Box::new(homeserver_errors.clone()),
            Box::new(prometheus::process_collector::ProcessCollector::for_self()),
        ];
        for collector in own.into_iter().chain(remote.collectors()) {
            registry.register(collector).expect("metric names are unique");
        }
        Self {
            registry,
            transactions,
            events,
            queue_depth,
            queue_oldest_age,
            transaction_seconds,
            homeserver_request_seconds,
            homeserver_errors,
            remote,
        }
    }

    /// What connectors report of their network (see [`RemoteMetrics`]).
    pub fn remote(&self) -> &RemoteMetrics {
        &self.remote
    }

    /// Reads from the store how long the oldest item of each queue has waited, for the next [`Metrics::render`].
    /// Items left in the store by an earlier run count from when they were first queued. A queue whose read fails
    /// or takes too long has no age in that scrape (an absent series, not a stale or made-up one).
    pub(crate) async fn refresh_queue_ages(&self, store: &Store) {
        for kind in [QueueKind::Matrix, QueueKind::Remote] {
            let read = tokio::time::timeout(QUEUE_AGE_READ_TIMEOUT, store.queue(kind).oldest_enqueued_at()).await;
            let error = match read {
                Ok(Ok(oldest)) => {
                    let age = oldest_age_seconds(oldest, now_ms());
                    self.queue_oldest_age.with_label_values(&[kind.label()]).set(age);
                    continue;
                }
                Ok(Err(error)) => error.to_string(),
                Err(_) => format!("no answer within {QUEUE_AGE_READ_TIMEOUT:?}"),
            };
            tracing::warn!(queue = kind.label(), %error, "cannot read the age of the queue's oldest item");
            let _ = self.queue_oldest_age.remove_label_values(&[kind.label()]);
        }
    }

    /// The metrics in Prometheus' text exposition format, after the connector's scrape hooks have run.
    pub fn render(&self) -> String {
        self.remote.run_hooks();
        let mut buffer = Vec::new();
        TextEncoder::new().encode(&self.registry.gather(), &mut buffer).expect("text encoding into memory");
        String::from_utf8(buffer).expect("the text format is UTF-8")
    }

    /// An observer that records the Matrix client's requests into these metrics.
    pub fn request_observer(&self) -> Arc<dyn RequestObserver> {
        Arc::new(self.clone())
    }
}

impl RequestObserver for Metrics {
    fn observe(&self, endpoint: &'static str, status: Option<u16>, elapsed: Duration) {
        self.homeserver_request_seconds.with_label_values(&[endpoint]).observe(elapsed.as_secs_f64());
        match status {
            Some(status) if status < 400 => {}
            Some(status) => self.homeserver_errors.with_label_values(&[endpoint, &status.to_string()]).inc(),
            None => self.homeserver_errors.with_label_values(&[endpoint, "none"]).inc(),
        }
    }
}

/// Seconds from `oldest_enqueued_ms` (the oldest item's queueing time, milliseconds since the Unix epoch; `None`
/// for an empty queue) to `now_ms`: 0 for an empty queue, and 0 rather than a negative age when the clock was set
/// back since the item was queued.
fn oldest_age_seconds(oldest_enqueued_ms: Option<i64>, now_ms: i64) -> f64 {
    let waited_ms = oldest_enqueued_ms.map_or(0, |queued| now_ms.saturating_sub(queued).max(0));
    // Milliseconds up to 2^53 (285,000 years) are exact in an f64.
    waited_ms as f64 / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Cipher;

    #[test]
    fn render_lists_recorded_values() {
        let metrics = Metrics::new();
        metrics.transactions.with_label_values(&["persisted"]).inc();
        metrics.observe("send", Some(200), Duration::from_millis(12));
        metrics.observe("send", Some(429), Duration::from_millis(3));
        metrics.observe("join", None, Duration::from_millis(3));
        let text = metrics.render();
        assert!(text.contains(r#"lattice_appservice_transactions_total{outcome="persisted"} 1"#), "{text}");
        assert!(text.contains(r#"lattice_homeserver_request_seconds_count{endpoint="send"} 2"#), "{text}");
        assert!(text.contains(r#"lattice_homeserver_errors_total{endpoint="send",status="429"} 1"#), "{text}");
        assert!(text.contains(r#"lattice_homeserver_errors_total{endpoint="join",status="none"} 1"#), "{text}");
    }

    #[test]
    fn oldest_age_is_the_wait_of_the_oldest_item_in_seconds() {
        let now = 1_700_000_000_000;
        assert_eq!(oldest_age_seconds(None, now), 0.0, "an empty queue");
        assert_eq!(oldest_age_seconds(Some(now), now), 0.0);
        assert_eq!(oldest_age_seconds(Some(now - 1_500), now), 1.5);
        assert_eq!(oldest_age_seconds(Some(now - 3_600_000), now), 3600.0);
        assert_eq!(oldest_age_seconds(Some(now + 2_000), now), 0.0, "the clock was set back");
        assert_eq!(oldest_age_seconds(Some(i64::MIN), i64::MAX), i64::MAX as f64 / 1000.0, "no overflow");
    }

    /// The value of the sample `series` (`name{labels}`) in a text exposition.
    fn sample(text: &str, series: &str) -> Option<f64> {
        text.lines().find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
    }

    #[tokio::test]
    async fn a_scrape_reports_the_age_of_each_queues_oldest_item_from_the_store() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("ages.db").display());
        let store = Store::connect(&url, 2, Cipher::random()).await.unwrap();
        let metrics = Metrics::new();
        metrics.refresh_queue_ages(&store).await;
        let text = metrics.render();
        assert_eq!(sample(&text, r#"lattice_queue_oldest_age_seconds{queue="matrix"}"#), Some(0.0), "{text}");
        assert_eq!(sample(&text, r#"lattice_queue_oldest_age_seconds{queue="remote"}"#), Some(0.0), "{text}");

        store.queue(QueueKind::Remote).push("portal", "{}").await.unwrap();
        store.close().await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        // A new process: the item left in the store has waited since it was queued, not since the restart.
        let store = Store::connect(&url, 2, Cipher::random()).await.unwrap();
        let metrics = Metrics::new();
        metrics.refresh_queue_ages(&store).await;
        let text = metrics.render();
        let remote = sample(&text, r#"lattice_queue_oldest_age_seconds{queue="remote"}"#).unwrap();
        assert!(remote >= 0.05, "{text}");
        assert_eq!(sample(&text, r#"lattice_queue_oldest_age_seconds{queue="matrix"}"#), Some(0.0), "{text}");

        // The store gone: the ages are left out rather than kept stale.
        store.close().await;
        metrics.refresh_queue_ages(&store).await;
        let text = metrics.render();
        assert!(!text.contains("lattice_queue_oldest_age_seconds{"), "{text}");
    }

    #[test]
    fn connector_reports_and_scrape_hooks_are_rendered() {
        let metrics = Metrics::new();
        let remote = metrics.remote().clone();
        remote.sent("net", 3);
        remote.received("net", 0);
        remote.reconnected("net", 1);
        let (watched, calls) = (Arc::new(()), Arc::new(std::sync::atomic::AtomicUsize::new(0)));
        let (weak, counted) = (Arc::downgrade(&watched), Arc::clone(&calls));
        remote.on_scrape(move |remote| {
            counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let Some(_alive) = weak.upgrade() else { return false };
            remote.set_connections("net", "puppet", ConnectionState::Connected, 2);
            remote.set_connections("net", "puppet", ConnectionState::Connecting, 0);
            true
        });
        let text = metrics.render();
        for (series, value) in [
            (r#"lattice_remote_protocol_messages_total{direction="sent",network="net"}"#, 3.0),
            (r#"lattice_remote_protocol_messages_total{direction="received",network="net"}"#, 0.0),
            (r#"lattice_remote_reconnects_total{network="net"}"#, 1.0),
            (r#"lattice_remote_connections{network="net",role="puppet",state="connected"}"#, 2.0),
            (r#"lattice_remote_connections{network="net",role="puppet",state="connecting"}"#, 0.0),
        ] {
            assert_eq!(sample(&text, series), Some(value), "{series} in {text}");
        }
        // What the hook watched is gone: it is dropped after saying so once.
        drop(watched);
        metrics.render();
        metrics.render();
        assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 2);
    }
}
