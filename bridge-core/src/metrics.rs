//! Prometheus metrics, served as text at `GET /metrics` on the appservice listener.
//!
//! Transactions received, events handled per direction and outcome, queue depths, the time to persist a
//! transaction, homeserver request latency and errors, plus the process collector's CPU and memory figures.

use std::{sync::Arc, time::Duration};

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry, TextEncoder,
};

use crate::matrix::RequestObserver;

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
    /// Seconds from a transaction's arrival to its acknowledgement (persisting included).
    pub(crate) transaction_seconds: Histogram,
    /// Homeserver request latency by endpoint.
    homeserver_request_seconds: HistogramVec,
    /// Homeserver requests that failed, by endpoint and status (`none` when no answer came).
    homeserver_errors: IntCounterVec,
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
        for collector in [
            Box::new(transactions.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(events.clone()),
            Box::new(queue_depth.clone()),
            Box::new(transaction_seconds.clone()),
            Box::new(homeserver_request_seconds.clone()),
            Box::new(homeserver_errors.clone()),
            Box::new(prometheus::process_collector::ProcessCollector::for_self()),
        ] {
            registry.register(collector).expect("metric names are unique");
        }
        Self {
            registry,
            transactions,
            events,
            queue_depth,
            transaction_seconds,
            homeserver_request_seconds,
            homeserver_errors,
        }
    }

    /// The metrics in Prometheus' text exposition format.
    pub fn render(&self) -> String {
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
