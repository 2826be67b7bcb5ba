//! A scripted stand-in for the homeserver on loopback, for unit tests of retries and request shapes.
//!
//! It answers each request with the next canned response, in order, and records what it received. Real homeserver
//! behaviour is tested end-to-end against Synapse in the workspace's `tests` crate.

use std::sync::{Arc, Mutex};

use ruma::{owned_server_name, owned_user_id};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpListener,
};
use url::Url;

use super::{MatrixClient, RetryPolicy};

/// One request as received: the request line, the lower-cased headers and the body.
#[derive(Clone, Debug)]
pub(crate) struct Received {
    pub(crate) line: String,
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) body: String,
}

impl Received {
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(key, _)| key == name).map(|(_, value)| value.as_str())
    }
}

/// The fake homeserver: its URL and what it has received so far.
pub(crate) struct FakeHomeserver {
    pub(crate) url: Url,
    received: Arc<Mutex<Vec<Received>>>,
}

impl FakeHomeserver {
    /// Serves `responses` (status, JSON body) in order, one per connection; then closes connections unanswered.
    pub(crate) async fn start(responses: Vec<(u16, &'static str)>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = Url::parse(&format!("http://{}", listener.local_addr().unwrap())).unwrap();
        let received = Arc::new(Mutex::new(Vec::new()));
        let log = received.clone();
        tokio::spawn(async move {
            for (status, body) in responses {
                let Ok((mut socket, _)) = listener.accept().await else { return };
                let request = read_request(&mut socket).await;
                log.lock().unwrap().push(request);
                let answer = format!(
                    "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\
                     connection: close\r\n\r\n{body}",
                    body.len()
                );
                socket.write_all(answer.as_bytes()).await.unwrap();
            }
        });
        Self { url, received }
    }

    /// Everything received so far.
    pub(crate) fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }

    /// A client of this homeserver (`example.org`, bot `@bridge:example.org`, token `t`) retrying fast.
    pub(crate) fn client(&self) -> MatrixClient {
        let policy = RetryPolicy { base: std::time::Duration::from_millis(1), ..RetryPolicy::default() };
        MatrixClient::new(
            self.url.clone(),
            "t".into(),
            owned_server_name!("example.org"),
            owned_user_id!("@bridge:example.org"),
        )
        .unwrap()
        .with_retry_policy(policy)
    }
}

async fn read_request(socket: &mut tokio::net::TcpStream) -> Received {
    let mut buffer = Vec::new();
    let head_end = loop {
        if let Some(end) = buffer.windows(4).position(|window| window == b"\r\n\r\n") {
            break end;
        }
        let mut chunk = [0; 4096];
        let read = socket.read(&mut chunk).await.unwrap();
        assert!(read > 0, "connection closed mid-request");
        buffer.extend_from_slice(&chunk[..read]);
    };
    let head = String::from_utf8(buffer[..head_end].to_vec()).unwrap();
    let mut lines = head.split("\r\n");
    let line = lines.next().unwrap().to_owned();
    let headers: Vec<(String, String)> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(key, value)| (key.trim().to_ascii_lowercase(), value.trim().to_owned()))
        .collect();
    let length: usize =
        headers.iter().find(|(key, _)| key == "content-length").map_or(0, |(_, value)| value.parse().unwrap());
    let mut body = buffer[head_end + 4..].to_vec();
    while body.len() < length {
        let mut chunk = [0; 4096];
        let read = socket.read(&mut chunk).await.unwrap();
        assert!(read > 0, "connection closed mid-body");
        body.extend_from_slice(&chunk[..read]);
    }
    Received { line, headers, body: String::from_utf8(body).unwrap() }
}
