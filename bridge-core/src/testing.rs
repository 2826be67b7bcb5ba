//! Fast fakes for connectors' unit tests (the `testing` feature): a homeserver on loopback that answers every
//! client-server request the way a homeserver would in the common case and records what it received, and a
//! [`BridgeHandle`] over it with an in-memory store. Real homeserver behaviour is tested end to end against Synapse.

use std::sync::{Arc, Mutex};

use lattice_config::PermissionsConfig;
use lattice_registration::{AppserviceRegistration, RegistrationTemplate};
use ruma::{OwnedServerName, OwnedUserId};
use serde_json::{Value, json};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};
use url::Url;

use crate::{
    BridgeHandle,
    connector::{ConnectorInfo, RemoteId, Sent},
    handle::Core,
    matrix::{MatrixClient, RetryPolicy},
    metrics::Metrics,
    store::{Cipher, Store},
};

/// One request the fake homeserver received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// The method, e.g. `PUT`.
    pub method: String,
    /// The path and query, percent-encoded as sent.
    pub path: String,
    /// The JSON body (`Null` when there was none or it was not JSON).
    pub body: Value,
}

/// A canned answer for the requests of one method whose path contains a string.
#[derive(Debug, Clone)]
struct Route {
    method: String,
    path: String,
    status: u16,
    body: Value,
}

impl Route {
    fn matches(&self, path: &str) -> bool {
        if self.path.ends_with('/') { path.contains(&self.path) } else { path.ends_with(&self.path) }
    }
}

/// A homeserver on loopback that says yes: sends get an event ID, room creation a room ID, reads of events and
/// profiles `M_NOT_FOUND`, reads of lists empty lists, everything else `{}` — unless a test set a
/// [route](Self::route).
#[derive(Debug, Clone)]
pub struct FakeHomeserver {
    url: Url,
    received: Arc<Mutex<Vec<Request>>>,
    routes: Arc<Mutex<Vec<Route>>>,
}

impl FakeHomeserver {
    /// Starts one on a free loopback port.
    ///
    /// # Panics
    /// If no loopback port can be bound.
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("a loopback port for the fake homeserver");
        let url = Url::parse(&format!("http://{}", listener.local_addr().expect("its address"))).expect("a URL");
        let received = Arc::new(Mutex::new(Vec::new()));
        let routes = Arc::new(Mutex::new(Vec::new()));
        let (log, answers) = (Arc::clone(&received), Arc::clone(&routes));
        tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                tokio::spawn(serve(socket, Arc::clone(&log), Arc::clone(&answers)));
            }
        });
        Self { url, received, routes }
    }

    /// From now on, answers requests of `method` whose path (without the query, percent-encoded as sent) ends
    /// with `path` — or, when `path` ends with `/`, contains it — with `status` and the JSON `body`; the route set
    /// last wins over earlier ones and the defaults.
    pub fn route(&self, method: &str, path: &str, status: u16, body: Value) {
        let route = Route { method: method.to_owned(), path: path.to_owned(), status, body };
        self.routes.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(route);
    }

    /// Its base URL, for a runtime's `homeserver_url`.
    pub fn url(&self) -> &Url {
        &self.url
    }

    /// Everything received so far, in order.
    pub fn received(&self) -> Vec<Request> {
        self.received.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    /// The bodies of the messages sent (`PUT …/send/m.room.message/…`) so far.
    pub fn messages(&self) -> Vec<Value> {
        self.received()
            .into_iter()
            .filter(|request| request.method == "PUT" && request.path.contains("/send/m.room.message/"))
            .map(|request| request.body)
            .collect()
    }

    /// A handle on a runtime of server `example.org` (bot `@bridge:example.org`, ghosts `@_test_…`) over this
    /// homeserver and an in-memory store, as a connector receives it in `start`.
    ///
    /// # Panics
    /// If the in-memory store cannot be opened.
    pub async fn bridge(&self, info: ConnectorInfo) -> BridgeHandle {
        let store = Store::connect("sqlite::memory:", 1, Cipher::random()).await.expect("an in-memory store");
        let registration = lattice_registration::generate(&RegistrationTemplate {
            id: "lattice-test".into(),
            url: "http://127.0.0.1:9".parse().expect("a URL"),
            sender_localpart: "bridge".into(),
            user_regexes: vec!["^@_test_.*:example.org$".into()],
            alias_regexes: vec!["^#_test_.*:example.org$".into()],
            protocols: Vec::new(),
            receive_ephemeral: true,
        });
        let server_name: OwnedServerName = "example.org".try_into().expect("a server name");
        let bot: OwnedUserId = "@bridge:example.org".try_into().expect("a user ID");
        let policy = RetryPolicy { base: std::time::Duration::from_millis(1), ..RetryPolicy::default() };
        let matrix = MatrixClient::new(self.url.clone(), "t".into(), server_name, bot)
            .expect("a Matrix client")
            .with_retry_policy(policy);
        let permissions = PermissionsConfig::default();
        BridgeHandle::new(Arc::new(Core::new(
            store,
            matrix,
            Metrics::new(),
            AppserviceRegistration::new(registration, "registration.yaml").expect("a registration"),
            "example.org".into(),
            lattice_config::Permissions::new(&permissions).expect("default permissions"),
            info,
            "http://127.0.0.1:9".parse().expect("a URL"),
        )))
    }
}

/// What a handler's [`Sent`] comes to: `None` for `Nothing`, `Now`'s remote ID as it is, and what a `Later`
/// confirmation resolves to.
///
/// # Panics
/// If a confirmation takes more than 10 s or fails.
pub async fn settled(sent: Sent) -> Option<Option<RemoteId>> {
    match sent {
        Sent::Nothing => None,
        Sent::Now(id) => Some(id),
        Sent::Later(confirmation) => Some(
            tokio::time::timeout(std::time::Duration::from_secs(10), confirmation)
                .await
                .expect("the confirmation within 10 s")
                .expect("a confirmation"),
        ),
    }
}

/// Implements every Matrix event method of [`Connector`](crate::Connector) for a connector that treats all events
/// alike (the recording connectors of tests): each calls the connector's own
/// `fn record(&self, portal: Option<&Portal>, event: &MatrixEvent)` and comes to [`Sent::Nothing`]. Use it inside
/// `impl Connector for …`.
#[macro_export]
macro_rules! record_every_matrix_event {
    () => {
        $crate::record_every_matrix_event!(@in_portal matrix_message(_message: &$crate::event::Message));
        $crate::record_every_matrix_event!(@in_portal matrix_edit(
            _target: &$crate::event::Relation,
            _new_content: &$crate::event::Message
        ));
        $crate::record_every_matrix_event!(@in_portal matrix_reaction(_target: &$crate::event::Relation, _key: &str));
        $crate::record_every_matrix_event!(@in_portal matrix_redaction(
            _target: &$crate::event::Relation,
            _reason: Option<&str>
        ));
        $crate::record_every_matrix_event!(@in_portal matrix_membership(
            _change: $crate::connector::MembershipChange<'_>
        ));
        $crate::record_every_matrix_event!(@in_portal matrix_topic(_topic: &str));
        $crate::record_every_matrix_event!(@in_portal matrix_name(_name: &str));
        $crate::record_every_matrix_event!(@in_portal matrix_other());

        async fn matrix_typing(
            &self,
            portal: &$crate::store::Portal,
            event: &$crate::event::MatrixEvent,
            _user_ids: &[String],
        ) -> $crate::connector::ConnectorResult<()> {
            self.record(Some(portal), event);
            Ok(())
        }

        async fn matrix_receipts(
            &self,
            portal: &$crate::store::Portal,
            event: &$crate::event::MatrixEvent,
            _receipts: &[(String, String)],
        ) -> $crate::connector::ConnectorResult<()> {
            self.record(Some(portal), event);
            Ok(())
        }

        async fn matrix_direct_invite(
            &self,
            event: &$crate::event::MatrixEvent,
            _sender: &str,
            _invitee: &str,
        ) -> $crate::connector::ConnectorResult<()> {
            self.record(None, event);
            Ok(())
        }

        async fn matrix_elsewhere(&self, event: &$crate::event::MatrixEvent) -> $crate::connector::ConnectorResult<()> {
            self.record(None, event);
            Ok(())
        }
    };
    (@in_portal $method:ident($($argument:ident: $type:ty),*)) => {
        async fn $method(
            &self,
            at: $crate::connector::InPortal<'_>,
            $($argument: $type),*
        ) -> $crate::connector::ConnectorResult<$crate::connector::Sent> {
            self.record(Some(at.portal), at.event);
            Ok($crate::connector::Sent::Nothing)
        }
    };
}

/// A Matrix event as the runtime hands it to a connector, parsed from the homeserver's JSON (relations left
/// unresolved: set their `remote_ids` by hand).
///
/// # Panics
/// If `raw` is not a room event.
pub fn matrix_event(raw: Value) -> crate::event::MatrixEvent {
    crate::event::MatrixEvent::parse(raw).expect("a room event")
}

/// Answers the requests of one connection.
async fn serve(mut socket: TcpStream, log: Arc<Mutex<Vec<Request>>>, routes: Arc<Mutex<Vec<Route>>>) {
    let mut buffer = Vec::new();
    loop {
        let Some(request) = read_request(&mut socket, &mut buffer).await else { return };
        let path = request.path.split('?').next().unwrap_or_default();
        let routed = routes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .rev()
            .find(|route| route.method == request.method && route.matches(path))
            .map(|route| (route.status, route.body.clone()));
        let (status, body) = routed.unwrap_or_else(|| answer(&request));
        log.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(request);
        let body = body.to_string();
        let response = format!(
            "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        );
        if socket.write_all(response.as_bytes()).await.is_err() {
            return;
        }
    }
}

/// What a homeserver that says yes answers.
fn answer(request: &Request) -> (u16, Value) {
    let path = request.path.split('?').next().unwrap_or_default();
    let not_found = (404, json!({"errcode": "M_NOT_FOUND", "error": "not here"}));
    match request.method.as_str() {
        "PUT" if path.contains("/send/") || path.contains("/redact/") => (200, json!({"event_id": "$fake"})),
        "PUT" if path.contains("/state/") => (200, json!({"event_id": "$state"})),
        "POST" if path.ends_with("/createRoom") => (200, json!({"room_id": "!created:example.org"})),
        "POST" if path.ends_with("/join") || path.contains("/join/") => {
            (200, json!({"room_id": "!joined:example.org"}))
        }
        "GET" if path.contains("/event/") || path.contains("/profile/") => not_found,
        "GET" if path.ends_with("/joined_members") => (200, json!({"joined": {}})),
        "GET" if path.ends_with("/state") => (200, json!([])),
        "GET" if path.ends_with("/messages") || path.ends_with("/publicRooms") => (200, json!({"chunk": []})),
        _ => (200, json!({})),
    }
}

/// Reads one HTTP/1.1 request, keeping what follows it in `buffer`; `None` once the client closed.
async fn read_request(socket: &mut TcpStream, buffer: &mut Vec<u8>) -> Option<Request> {
    let head_end = loop {
        if let Some(end) = buffer.windows(4).position(|window| window == b"\r\n\r\n") {
            break end;
        }
        let mut chunk = [0; 4096];
        let read = socket.read(&mut chunk).await.ok().filter(|read| *read > 0)?;
        buffer.extend_from_slice(&chunk[..read]);
    };
    let head = String::from_utf8_lossy(&buffer[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let mut first = lines.next()?.split(' ');
    let (method, path) = (first.next()?.to_owned(), first.next()?.to_owned());
    let length: usize = lines
        .filter_map(|line| line.split_once(':'))
        .find(|(key, _)| key.trim().eq_ignore_ascii_case("content-length"))
        .and_then(|(_, value)| value.trim().parse().ok())
        .unwrap_or(0);
    while buffer.len() < head_end + 4 + length {
        let mut chunk = [0; 4096];
        let read = socket.read(&mut chunk).await.ok().filter(|read| *read > 0)?;
        buffer.extend_from_slice(&chunk[..read]);
    }
    let body = serde_json::from_slice(&buffer[head_end + 4..head_end + 4 + length]).unwrap_or(Value::Null);
    buffer.drain(..head_end + 4 + length);
    Some(Request { method, path, body })
}

/// Runs `target` over every file of the fuzz corpus `name` (`fuzz/corpus/{name}` in the workspace whose crate's
/// manifest folder is `crate_dir`): a quick smoke of what the fuzzer keeps, in the crates' unit tests.
pub fn replay_corpus(crate_dir: &str, name: &str, target: fn(&[u8])) {
    let dir = std::path::Path::new(crate_dir).join("../fuzz/corpus").join(name);
    let entries = std::fs::read_dir(&dir).unwrap_or_else(|error| panic!("{}: {error}", dir.display()));
    let mut count = 0;
    for entry in entries {
        target(&std::fs::read(entry.expect("a corpus entry").path()).expect("a corpus file"));
        count += 1;
    }
    assert!(count > 0, "the corpus {} is empty", dir.display());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_fake_homeserver_answers_sends_and_records_them() {
        let homeserver = FakeHomeserver::start().await;
        let info = ConnectorInfo { protocol_id: "test", protocol_name: "Test", command_prefix: "!test" };
        let bridge = homeserver.bridge(info).await;
        bridge.notice("!room:example.org", "hello").await.unwrap();
        bridge.notice("!room:example.org", "again").await.unwrap();
        let messages = homeserver.messages();
        assert_eq!(messages.len(), 2, "{:?}", homeserver.received());
        assert_eq!(messages[0]["body"], "hello");
        assert_eq!(messages[1]["body"], "again");
        assert!(bridge.store().portals().await.unwrap().is_empty());
    }
}
