//! Hostile clients on the appservice port, over real sockets: half-sent requests, idle and kept-alive connections,
//! slowly sent bodies, a flood over the connection cap, a 100 MB body, deeply nested JSON and odd `Host` headers.
//! Each test checks what a client sees (an answer, or the connection closed) and that the bridge goes on serving.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use lattice_bridge_core::appservice::ListenerLimits;
use reqwest::StatusCode;
use serde_json::json;
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::TcpStream,
};

use crate::support::{TestBridge, message, registration, sqlite_store};

/// Short limits, so the tests see them act.
const LIMITS: ListenerLimits = ListenerLimits {
    header_timeout: Duration::from_secs(2),
    request_timeout: Duration::from_secs(4),
    max_connections: 4096,
};

/// How long a test waits for something the limits make happen within a few seconds.
const DEADLINE: Duration = Duration::from_secs(30);

async fn start(limits: ListenerLimits) -> (TestBridge, tempfile::TempDir) {
    let (store, dir) = sqlite_store().await;
    (TestBridge::start_with_limits(store, registration(), limits).await, dir)
}

async fn connect(bridge: &TestBridge) -> TcpStream {
    TcpStream::connect(bridge.url.trim_start_matches("http://")).await.expect("connecting to the bridge")
}

/// Everything the server sends until it closes the connection, or `None` when it is still open at `deadline`.
async fn read_until_closed(stream: &mut TcpStream, deadline: Duration) -> Option<Vec<u8>> {
    let mut received = Vec::new();
    let read = async {
        let mut buffer = [0u8; 4096];
        loop {
            match stream.read(&mut buffer).await {
                Ok(0) | Err(_) => break,
                Ok(count) => received.extend_from_slice(&buffer[..count]),
            }
        }
    };
    tokio::time::timeout(deadline, read).await.ok().map(|()| received)
}

/// The status line of a raw response.
fn status_line(response: &[u8]) -> String {
    String::from_utf8_lossy(response).lines().next().unwrap_or_default().to_owned()
}

/// The process's resident memory in KiB.
fn resident_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("reading /proc/self/status");
    let line = status.lines().find(|line| line.starts_with("VmRSS:")).expect("a VmRSS line");
    line.split_whitespace().nth(1).and_then(|kib| kib.parse().ok()).expect("VmRSS in kB")
}

/// Samples resident memory until dropped; [`PeakMemory::growth_mib`] is the peak over the start, in MiB.
struct PeakMemory {
    start: u64,
    peak: Arc<AtomicU64>,
    sampler: tokio::task::JoinHandle<()>,
}

impl PeakMemory {
    fn start() -> Self {
        let start = resident_kib();
        let peak = Arc::new(AtomicU64::new(start));
        let sampling = Arc::clone(&peak);
        let sampler = tokio::spawn(async move {
            loop {
                sampling.fetch_max(resident_kib(), Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        });
        Self { start, peak, sampler }
    }

    fn growth_mib(&self) -> u64 {
        self.peak.load(Ordering::Relaxed).saturating_sub(self.start) / 1024
    }
}

impl Drop for PeakMemory {
    fn drop(&mut self) {
        self.sampler.abort();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_thousand_half_sent_requests_are_closed_after_the_header_timeout() {
    let (bridge, _dir) = start(LIMITS).await;
    let mut streams = Vec::new();
    for index in 0..2000 {
        let mut stream = connect(&bridge).await;
        if index % 20 != 0 {
            // One in twenty sends nothing at all; the others stop in the middle of a header.
            stream
                .write_all(b"PUT /_matrix/app/v1/transactions/half HTTP/1.1\r\nhost: bridge\r\ncontent-le")
                .await
                .unwrap();
        }
        streams.push(stream);
    }
    let served = bridge.put_transaction("whole", &json!({"events": [message("!r:localhost", "$w", "whole")]})).await;
    assert_eq!(served.status(), StatusCode::OK, "a whole request is served while 2,000 half ones are held");

    let started = Instant::now();
    let closed = futures::future::join_all(streams.iter_mut().map(|stream| read_until_closed(stream, DEADLINE))).await;
    let still_open = closed.iter().filter(|closed| closed.is_none()).count();
    assert_eq!(still_open, 0, "connections still open {DEADLINE:?} after a header timeout of 2 s");
    println!("2,000 half-sent requests closed {:?} after the last was opened", started.elapsed());
    let bodies = crate::support::bodies(&bridge.recorder.wait_for(1, DEADLINE).await);
    assert_eq!(bodies, ["whole"]);
    bridge.stop().await;
}

#[tokio::test]
async fn a_kept_alive_connection_left_idle_is_closed() {
    let (bridge, _dir) = start(LIMITS).await;
    let mut stream = connect(&bridge).await;
    stream.write_all(b"GET /health/live HTTP/1.1\r\nhost: bridge\r\n\r\n").await.unwrap();
    let received = read_until_closed(&mut stream, DEADLINE).await.expect("the idle connection is closed");
    assert_eq!(status_line(&received), "HTTP/1.1 200 OK", "the request before the idle time is answered");
    bridge.stop().await;
}

#[tokio::test]
async fn a_body_sent_a_byte_at_a_time_is_cut_at_the_request_timeout() {
    let (bridge, _dir) = start(LIMITS).await;
    let mut stream = connect(&bridge).await;
    let head = format!(
        "PUT /_matrix/app/v1/transactions/slow HTTP/1.1\r\nhost: bridge\r\nauthorization: Bearer {}\r\n\
         content-type: application/json\r\ncontent-length: 100000\r\n\r\n",
        bridge.hs_token
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let (mut reader, mut writer) = stream.into_split();
    // A byte every half second: never idle for a header timeout, never done.
    let trickle = tokio::spawn(async move {
        while writer.write_all(b" ").await.is_ok() {
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    });
    let mut received = Vec::new();
    let answered = tokio::time::timeout(DEADLINE, reader.read_to_end(&mut received)).await;
    assert!(answered.is_ok(), "the slow body is still being read after {DEADLINE:?}");
    assert_eq!(status_line(&received), "HTTP/1.1 408 Request Timeout");
    trickle.abort();

    let after =
        bridge.put_transaction("after-slow", &json!({"events": [message("!r:localhost", "$a", "after")]})).await;
    assert_eq!(after.status(), StatusCode::OK);
    assert_eq!(crate::support::bodies(&bridge.recorder.wait_for(1, DEADLINE).await), ["after"]);
    bridge.stop().await;
}

#[tokio::test]
async fn a_body_that_stops_is_cut_after_a_header_timeout() {
    let (bridge, _dir) = start(ListenerLimits { request_timeout: Duration::from_secs(120), ..LIMITS }).await;
    let mut stream = connect(&bridge).await;
    let head = format!(
        "PUT /_matrix/app/v1/transactions/stalled HTTP/1.1\r\nhost: bridge\r\nauthorization: Bearer {}\r\n\
         content-length: 1000\r\n\r\n{{\"events\": [",
        bridge.hs_token
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let received = read_until_closed(&mut stream, DEADLINE).await.expect("the stalled body is cut");
    assert_eq!(status_line(&received), "HTTP/1.1 400 Bad Request", "{}", String::from_utf8_lossy(&received));
    bridge.stop().await;
}

#[tokio::test]
async fn a_connection_over_the_cap_is_answered_503_and_the_port_recovers() {
    let (bridge, _dir) = start(ListenerLimits { max_connections: 20, ..LIMITS }).await;
    let mut held = Vec::new();
    for _ in 0..20 {
        held.push(connect(&bridge).await);
    }
    let mut over = connect(&bridge).await;
    let refused = read_until_closed(&mut over, DEADLINE).await.expect("the connection over the cap is closed");
    assert_eq!(status_line(&refused), "HTTP/1.1 503 Service Unavailable");

    for stream in &mut held {
        assert!(read_until_closed(stream, DEADLINE).await.is_some(), "a held connection outlived the header timeout");
    }
    let live = bridge.http.get(format!("{}/health/live", bridge.url)).send().await.unwrap();
    assert_eq!(live.status(), StatusCode::OK, "the port serves again once the idle connections are gone");
    bridge.stop().await;
}

/// Sends a 100 MB transaction body (declared, or chunked when `declared` is false) and returns the status line.
async fn send_hundred_megabytes(bridge: &TestBridge, declared: bool) -> String {
    const SIZE: usize = 100 * 1024 * 1024;
    let length = if declared { format!("content-length: {SIZE}") } else { "transfer-encoding: chunked".into() };
    let head = format!(
        "PUT /_matrix/app/v1/transactions/huge HTTP/1.1\r\nhost: bridge\r\nauthorization: Bearer {}\r\n{length}\r\n\r\n",
        bridge.hs_token
    );
    let (mut reader, mut writer) = connect(bridge).await.into_split();
    let sender = tokio::spawn(async move {
        writer.write_all(head.as_bytes()).await?;
        let chunk = vec![b' '; 64 * 1024];
        let framed = [format!("{:x}\r\n", chunk.len()).into_bytes(), chunk.clone(), b"\r\n".to_vec()].concat();
        for _ in 0..SIZE / chunk.len() {
            writer.write_all(if declared { &chunk } else { &framed }).await?;
        }
        std::io::Result::Ok(())
    });
    let mut received = Vec::new();
    let _ = tokio::time::timeout(DEADLINE, reader.read_to_end(&mut received)).await;
    sender.abort();
    status_line(&received)
}

#[tokio::test]
async fn a_hundred_megabyte_body_is_refused_with_memory_bounded() {
    let (bridge, _dir) = start(LIMITS).await;
    for declared in [true, false] {
        let memory = PeakMemory::start();
        let started = Instant::now();
        let status = send_hundred_megabytes(&bridge, declared).await;
        assert_eq!(status, "HTTP/1.1 413 Payload Too Large", "declared length: {declared}");
        let growth = memory.growth_mib();
        println!("100 MB body (declared length: {declared}): 413 after {:?}, memory +{growth} MiB", started.elapsed());
        // A transaction body is held up to its 32 MiB limit, never the whole 100 MB.
        assert!(growth < 80, "resident memory grew by {growth} MiB for a refused 100 MB body");
    }
    let after =
        bridge.put_transaction("after-huge", &json!({"events": [message("!r:localhost", "$h", "after")]})).await;
    assert_eq!(after.status(), StatusCode::OK);
    bridge.stop().await;
}

#[tokio::test]
async fn deeply_nested_json_is_set_aside_and_nothing_else_is_lost() {
    let (bridge, _dir) = start(LIMITS).await;
    let depth = 100_000;
    let nested = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
    let as_event = format!(r#"{{"events": {nested}}}"#);
    let in_event = format!(
        r#"{{"events": [{{"type": "m.room.message", "room_id": "!r:localhost", "sender": "@alice:localhost",
            "event_id": "$deep", "content": {{"body": "deep", "nested": {nested}}}}}]}}"#
    );
    for (txn_id, body) in [("deep-1", as_event), ("deep-2", in_event)] {
        let response = bridge
            .http
            .put(format!("{}/_matrix/app/v1/transactions/{txn_id}", bridge.url))
            .bearer_auth(&bridge.hs_token)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        // The homeserver must not resend it forever: the transaction is taken, the event in it skipped.
        assert_eq!(response.status(), StatusCode::OK, "{txn_id}");
    }
    let after =
        bridge.put_transaction("after-deep", &json!({"events": [message("!r:localhost", "$d", "after")]})).await;
    assert_eq!(after.status(), StatusCode::OK);
    assert_eq!(crate::support::bodies(&bridge.recorder.wait_for(1, DEADLINE).await), ["after"]);
    let metrics = bridge.http.get(format!("{}/metrics", bridge.url)).send().await.unwrap().text().await.unwrap();
    // The bare array is no event; the event with deep content is queued, but cannot be read past serde_json's
    // depth limit of 128 and goes to the dead letters at once, where an operator sees it.
    for expected in [
        r#"lattice_events_total{outcome="malformed",queue="matrix"} 1"#,
        r#"lattice_events_total{outcome="dead_lettered",queue="matrix"} 1"#,
    ] {
        assert!(metrics.lines().any(|line| line == expected), "no `{expected}` in\n{metrics}");
    }
    bridge.stop().await;
}

#[tokio::test]
async fn an_unknown_missing_or_huge_host_gets_the_usual_answer() {
    let (bridge, _dir) = start(LIMITS).await;
    let long_host = "h".repeat(8000);
    let cases = [
        ("host: evil.example.org\r\n".to_owned(), "HTTP/1.1 200 OK"),
        (String::new(), "HTTP/1.1 200 OK"),
        ("host: a\r\nhost: b\r\n".to_owned(), "HTTP/1.1 200 OK"),
        (format!("host: {long_host}\r\n"), "HTTP/1.1 200 OK"),
        ("host: \u{e9}\u{1f600}\r\n".to_owned(), "HTTP/1.1 200 OK"),
    ];
    for (index, (host, expected)) in cases.iter().enumerate() {
        let mut stream = connect(&bridge).await;
        let body = r#"{"events": []}"#;
        let request = format!(
            "PUT /_matrix/app/v1/transactions/host-{index} HTTP/1.1\r\n{host}authorization: Bearer {}\r\n\
             content-length: {}\r\nconnection: close\r\n\r\n{body}",
            bridge.hs_token,
            body.len()
        );
        stream.write_all(request.as_bytes()).await.unwrap();
        let received = read_until_closed(&mut stream, DEADLINE).await.expect("an answer, then the connection closed");
        assert_eq!(status_line(&received), *expected, "case {index}");
    }
    let mut stream = connect(&bridge).await;
    stream
        .write_all(b"GET /_matrix/app/v1/users/@x:localhost HTTP/1.1\r\nhost: evil.example.org\r\n\r\n")
        .await
        .unwrap();
    let unauthenticated = read_until_closed(&mut stream, DEADLINE).await.expect("closed after the idle time");
    assert_eq!(status_line(&unauthenticated), "HTTP/1.1 401 Unauthorized", "another Host grants nothing");
    bridge.stop().await;
}
