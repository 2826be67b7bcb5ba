//! A small real Matrix client for tests: one user, its access token, and its `/sync` position.

use std::{
    collections::{HashSet, VecDeque},
    fmt,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use reqwest::{Method, RequestBuilder, Response};
use serde_json::{Value, json};
use tokio::sync::Mutex;
use url::Url;

/// How many timeline events one `/sync` may return per room: far more than a test makes
/// between two syncs, so no event is skipped (`limited`). Nothing is filtered out.
const SYNC_FILTER: &str = r#"{"room":{"timeline":{"limit":1000}}}"#;
/// The longest single `/sync` long-poll: short, because Conduit 0.11 sometimes misses waking a long poll for a new
/// event; a missed wake-up then costs this much instead of the whole wait.
const MAX_LONG_POLL: Duration = Duration::from_secs(2);
/// How long a `/sync` may take beyond its long poll (an initial sync of a busy homeserver on a loaded machine).
const SYNC_SLACK: Duration = Duration::from_secs(30);

/// An error answer of the homeserver: the HTTP status and the Matrix `errcode` and `error`.
///
/// The [`MatrixUser`] methods return it inside `anyhow::Error`; find it with
/// `err.downcast_ref::<MatrixError>()` to check an errcode.
#[derive(Debug, Clone)]
pub struct MatrixError {
    /// The request's method, e.g. `PUT`.
    pub method: String,
    /// The request's path, without the query string.
    pub path: String,
    /// The HTTP status code.
    pub status: u16,
    /// The Matrix error code, e.g. `M_FORBIDDEN`, when the body had one.
    pub errcode: Option<String>,
    /// The human-readable `error`, or the raw body when it was not a Matrix error.
    pub error: String,
}

impl fmt::Display for MatrixError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}: HTTP {}", self.method, self.path, self.status)?;
        if let Some(errcode) = &self.errcode {
            write!(f, " {errcode}")?;
        }
        write!(f, ": {}", self.error)
    }
}

impl std::error::Error for MatrixError {}

/// The body of a successful answer, or a [`MatrixError`] for an error status.
async fn body_or_error(response: Response, method: &str, url: &str) -> anyhow::Result<Vec<u8>> {
    let status = response.status();
    let body = response.bytes().await.with_context(|| format!("{method} {url}: reading the body"))?;
    if status.is_success() {
        return Ok(body.to_vec());
    }
    let parsed: Option<Value> = serde_json::from_slice(&body).ok();
    let path = Url::parse(url).map(|u| u.path().to_owned()).unwrap_or_else(|_| url.to_owned());
    Err(MatrixError {
        method: method.to_owned(),
        path,
        status: status.as_u16(),
        errcode: parsed.as_ref().and_then(|v| v["errcode"].as_str()).map(str::to_owned),
        error: parsed
            .as_ref()
            .and_then(|v| v["error"].as_str())
            .map(str::to_owned)
            .unwrap_or_else(|| String::from_utf8_lossy(&body).into_owned()),
    }
    .into())
}

/// Reads a JSON answer (`Null` for an empty body), or turns an error status into a [`MatrixError`].
pub(crate) async fn json_or_error(response: Response, method: &str, url: &str) -> anyhow::Result<Value> {
    let body = body_or_error(response, method, url).await?;
    if body.is_empty() {
        return Ok(Value::Null);
    }
    serde_json::from_slice(&body).with_context(|| format!("{method} {url}: the answer is not JSON"))
}

/// One Matrix user, logged in: a real client-server API client for tests.
///
/// Cloning is cheap and shares the `/sync` position, so events are seen once per user.
#[derive(Clone)]
pub struct MatrixUser {
    inner: Arc<Inner>,
    password: Option<String>,
}

struct Inner {
    http: reqwest::Client,
    homeserver: Url,
    user_id: String,
    access_token: String,
    txn_prefix: String,
    txn_counter: AtomicU64,
    sync: Mutex<SyncState>,
}

/// What `/sync` delivered and no wait has taken yet.
#[derive(Default)]
struct SyncState {
    since: Option<String>,
    /// Rooms `/sync` has shown as joined.
    joined: HashSet<String>,
    /// (room ID, event), oldest first: state, timeline and ephemeral events of joined and left rooms.
    events: VecDeque<(String, Value)>,
    /// The IDs of the events queued so far, so that a gap filled from `/messages` queues none twice.
    seen: HashSet<String>,
    /// (room ID, invite state events), oldest first.
    invites: VecDeque<(String, Value)>,
}

impl fmt::Debug for MatrixUser {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MatrixUser")
            .field("user_id", &self.inner.user_id)
            .field("homeserver", &self.inner.homeserver.as_str())
            .finish_non_exhaustive()
    }
}

impl MatrixUser {
    /// A client for `user_id` on `homeserver` (e.g. `http://127.0.0.1:8008`) with an access token
    /// got elsewhere, e.g. an appservice's `as_token`.
    pub fn new(homeserver: &str, user_id: &str, access_token: &str) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder().no_proxy().build().context("building an HTTP client")?;
        Self::with_client(http, homeserver, user_id, access_token)
    }

    pub(crate) fn with_client(
        http: reqwest::Client,
        homeserver: &str,
        user_id: &str,
        access_token: &str,
    ) -> anyhow::Result<Self> {
        let homeserver = Url::parse(homeserver).with_context(|| format!("homeserver URL {homeserver:?}"))?;
        Ok(Self {
            inner: Arc::new(Inner {
                http,
                homeserver,
                user_id: user_id.to_owned(),
                access_token: access_token.to_owned(),
                txn_prefix: format!("lattice-e2e-{:08x}", rand::random::<u32>()),
                txn_counter: AtomicU64::new(0),
                sync: Mutex::default(),
            }),
            password: None,
        })
    }

    pub(crate) fn set_password(&mut self, password: String) {
        self.password = Some(password);
    }

    /// The full user ID, e.g. `@alice:localhost`.
    pub fn user_id(&self) -> &str {
        &self.inner.user_id
    }

    /// The access token.
    pub fn access_token(&self) -> &str {
        &self.inner.access_token
    }

    /// The password, when the harness registered the user.
    pub fn password(&self) -> Option<&str> {
        self.password.as_deref()
    }

    /// The homeserver's base URL.
    pub fn homeserver(&self) -> &Url {
        &self.inner.homeserver
    }

    /// Sends a request to the homeserver as this user and returns the JSON answer (`Null` for an
    /// empty body). `path` is a list of raw segments, each percent-encoded here, e.g.
    /// `&["_matrix", "client", "v3", "rooms", room_id, "joined_members"]`.
    pub async fn call(
        &self,
        method: Method,
        path: &[&str],
        query: &[(&str, &str)],
        body: Option<&Value>,
    ) -> anyhow::Result<Value> {
        let url = self.endpoint(path, query);
        let mut request = self.request(method.clone(), url.clone());
        if let Some(body) = body {
            request = request.json(body);
        }
        self.send(request, method.as_str(), &url).await
    }

    fn endpoint(&self, path: &[&str], query: &[(&str, &str)]) -> Url {
        let mut url = self.inner.homeserver.clone();
        url.path_segments_mut().expect("an http URL has a path").clear().extend(path);
        if !query.is_empty() {
            url.query_pairs_mut().extend_pairs(query);
        }
        url
    }

    fn request(&self, method: Method, url: Url) -> RequestBuilder {
        self.inner.http.request(method, url).bearer_auth(&self.inner.access_token)
    }

    async fn send(&self, request: RequestBuilder, method: &str, url: &Url) -> anyhow::Result<Value> {
        let mut shown = url.clone();
        shown.set_query(None);
        let response = request.send().await.with_context(|| format!("{method} {shown} as {}", self.user_id()))?;
        json_or_error(response, method, shown.as_str()).await.with_context(|| format!("as {}", self.user_id()))
    }

    async fn client(&self, method: Method, rest: &[&str], body: Option<&Value>) -> anyhow::Result<Value> {
        let mut path = vec!["_matrix", "client", "v3"];
        path.extend_from_slice(rest);
        self.call(method, &path, &[], body).await
    }

    fn next_txn_id(&self) -> String {
        let n = self.inner.txn_counter.fetch_add(1, Ordering::Relaxed);
        format!("{}-{n}", self.inner.txn_prefix)
    }

    /// Creates a room (`POST /createRoom` with `body`, e.g. `json!({"preset": "public_chat"})`)
    /// and returns its ID.
    pub async fn create_room(&self, body: Value) -> anyhow::Result<String> {
        let answer = self.client(Method::POST, &["createRoom"], Some(&body)).await?;
        string_field(&answer, "room_id")
    }

    /// Joins a room by ID or alias and returns the room ID.
    pub async fn join(&self, room_id_or_alias: &str) -> anyhow::Result<String> {
        let answer = self.client(Method::POST, &["join", room_id_or_alias], Some(&json!({}))).await?;
        string_field(&answer, "room_id")
    }

    /// Leaves a room.
    pub async fn leave(&self, room_id: &str) -> anyhow::Result<()> {
        self.client(Method::POST, &["rooms", room_id, "leave"], Some(&json!({}))).await?;
        Ok(())
    }

    /// Invites `user_id` into a room.
    pub async fn invite(&self, room_id: &str, user_id: &str) -> anyhow::Result<()> {
        let body = json!({ "user_id": user_id });
        self.client(Method::POST, &["rooms", room_id, "invite"], Some(&body)).await?;
        Ok(())
    }

    /// Sends an `m.text` message and returns its event ID.
    pub async fn send_text(&self, room_id: &str, body: &str) -> anyhow::Result<String> {
        self.send_message(room_id, json!({ "msgtype": "m.text", "body": body })).await
    }

    /// Sends an `m.room.message` with the given content and returns its event ID.
    pub async fn send_message(&self, room_id: &str, content: Value) -> anyhow::Result<String> {
        self.send_event(room_id, "m.room.message", content).await
    }

    /// Sends a message event of any type and returns its event ID.
    pub async fn send_event(&self, room_id: &str, event_type: &str, content: Value) -> anyhow::Result<String> {
        let txn_id = self.next_txn_id();
        let answer = self.client(Method::PUT, &["rooms", room_id, "send", event_type, &txn_id], Some(&content)).await?;
        string_field(&answer, "event_id")
    }

    /// Redacts an event and returns the redaction's event ID.
    pub async fn redact(&self, room_id: &str, event_id: &str, reason: Option<&str>) -> anyhow::Result<String> {
        let txn_id = self.next_txn_id();
        let body = match reason {
            Some(reason) => json!({ "reason": reason }),
            None => json!({}),
        };
        let answer = self.client(Method::PUT, &["rooms", room_id, "redact", event_id, &txn_id], Some(&body)).await?;
        string_field(&answer, "event_id")
    }

    /// Sends a state event and returns its event ID.
    pub async fn send_state(
        &self,
        room_id: &str,
        event_type: &str,
        state_key: &str,
        content: Value,
    ) -> anyhow::Result<String> {
        let answer =
            self.client(Method::PUT, &["rooms", room_id, "state", event_type, state_key], Some(&content)).await?;
        string_field(&answer, "event_id")
    }

    /// The content of a room's state event, or `None` when the room has no such state.
    pub async fn get_state(&self, room_id: &str, event_type: &str, state_key: &str) -> anyhow::Result<Option<Value>> {
        match self.client(Method::GET, &["rooms", room_id, "state", event_type, state_key], None).await {
            Ok(content) => Ok(Some(content)),
            Err(e) if has_errcode(&e, "M_NOT_FOUND") => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The room ID an alias (`#name:server`) points to, or `None` when it points nowhere.
    pub async fn resolve_alias(&self, alias: &str) -> anyhow::Result<Option<String>> {
        match self.client(Method::GET, &["directory", "room", alias], None).await {
            Ok(answer) => string_field(&answer, "room_id").map(Some),
            Err(e) if has_errcode(&e, "M_NOT_FOUND") => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The user IDs of a room's joined members, sorted.
    pub async fn joined_members(&self, room_id: &str) -> anyhow::Result<Vec<String>> {
        let answer = self.client(Method::GET, &["rooms", room_id, "joined_members"], None).await?;
        let joined = answer["joined"].as_object().context("no `joined` in the answer")?;
        let mut members: Vec<String> = joined.keys().cloned().collect();
        members.sort();
        Ok(members)
    }

    /// Sets this user's display name.
    pub async fn set_display_name(&self, name: &str) -> anyhow::Result<()> {
        let body = json!({ "displayname": name });
        let user_id = self.inner.user_id.clone();
        self.client(Method::PUT, &["profile", &user_id, "displayname"], Some(&body)).await?;
        Ok(())
    }

    /// Uploads media and returns its `mxc://` URI.
    pub async fn upload(&self, bytes: Vec<u8>, content_type: &str, filename: &str) -> anyhow::Result<String> {
        let url = self.endpoint(&["_matrix", "media", "v3", "upload"], &[("filename", filename)]);
        let request =
            self.request(Method::POST, url.clone()).header(reqwest::header::CONTENT_TYPE, content_type).body(bytes);
        let answer = self.send(request, "POST", &url).await?;
        string_field(&answer, "content_uri")
    }

    /// Downloads media by its `mxc://server/id` URI (authenticated media,
    /// `/_matrix/client/v1/media/download`).
    pub async fn download(&self, mxc: &str) -> anyhow::Result<Vec<u8>> {
        let (server, media_id) = mxc
            .strip_prefix("mxc://")
            .and_then(|rest| rest.split_once('/'))
            .with_context(|| format!("{mxc:?} is not an mxc://server/id URI"))?;
        let url = self.endpoint(&["_matrix", "client", "v1", "media", "download", server, media_id], &[]);
        let response =
            self.request(Method::GET, url.clone()).send().await.with_context(|| format!("downloading {mxc}"))?;
        body_or_error(response, "GET", url.as_str())
            .await
            .with_context(|| format!("downloading {mxc} as {}", self.user_id()))
    }

    /// Waits until an event in `room_id` for which `predicate` holds reaches this user, and
    /// returns it (the event JSON as `/sync` gives it).
    ///
    /// Built on `/sync` long-polling: every event is seen once per user and taken by at most one
    /// wait; events that a wait passed over stay for later waits. Counts state, timeline and
    /// ephemeral (typing, receipts) events of joined rooms and of rooms the user left.
    pub async fn wait_for_event(
        &self,
        room_id: &str,
        timeout: Duration,
        predicate: impl Fn(&Value) -> bool,
    ) -> anyhow::Result<Value> {
        let deadline = Instant::now() + timeout;
        loop {
            // Locked per round, so concurrent waits of one user take turns.
            let mut state = self.inner.sync.lock().await;
            let found = state.events.iter().position(|(room, event)| room == room_id && predicate(event));
            if let Some(index) = found {
                let (_, event) = state.events.remove(index).expect("the index was just found");
                return Ok(event);
            }
            let now = Instant::now();
            if now >= deadline {
                let seen: Vec<String> = state
                    .events
                    .iter()
                    .filter(|(room, _)| room == room_id)
                    .map(|(_, event)| summarize(event))
                    .collect();
                bail!(
                    "{} saw no matching event in {room_id} within {timeout:?}; events seen there \
                     and not taken ({}): [{}]",
                    self.user_id(),
                    seen.len(),
                    seen[seen.len().saturating_sub(20)..].join(", ")
                );
            }
            self.sync_once(&mut state, (deadline - now).min(MAX_LONG_POLL)).await?;
        }
    }

    /// Waits for an `m.room.message` in `room_id` whose `content.body` is `body`.
    pub async fn wait_for_message(&self, room_id: &str, timeout: Duration, body: &str) -> anyhow::Result<Value> {
        self.wait_for_event(room_id, timeout, |event| {
            event["type"] == "m.room.message" && event["content"]["body"] == body
        })
        .await
        .with_context(|| format!("waiting for the message {body:?}"))
    }

    /// Waits until this user is invited to a room and returns the room's ID. Each invite is
    /// returned once.
    pub async fn wait_for_invite(&self, timeout: Duration) -> anyhow::Result<String> {
        let deadline = Instant::now() + timeout;
        loop {
            let mut state = self.inner.sync.lock().await;
            if let Some((room_id, _)) = state.invites.pop_front() {
                return Ok(room_id);
            }
            let now = Instant::now();
            if now >= deadline {
                bail!("{} got no invite within {timeout:?}", self.user_id());
            }
            self.sync_once(&mut state, (deadline - now).min(MAX_LONG_POLL)).await?;
        }
    }

    /// One `/sync` from the kept `since` position (the first one is a full initial sync),
    /// queueing what it brings.
    async fn sync_once(&self, state: &mut SyncState, long_poll: Duration) -> anyhow::Result<()> {
        let timeout_ms = long_poll.as_millis().to_string();
        let mut query = vec![("timeout", timeout_ms.as_str()), ("filter", SYNC_FILTER)];
        let since = state.since.clone();
        if let Some(since) = &since {
            query.push(("since", since));
        }
        let url = self.endpoint(&["_matrix", "client", "v3", "sync"], &query);
        let request = self.request(Method::GET, url.clone()).timeout(long_poll + SYNC_SLACK);
        let answer = self.send(request, "GET", &url).await?;

        for section in ["join", "leave"] {
            let Some(rooms) = answer["rooms"][section].as_object() else { continue };
            for (room_id, room) in rooms {
                let known = state.joined.contains(room_id);
                // Joined since the last sync (by the room's section, or by the user's own join in the timeline, as
                // Conduit may not show a room left in between): Conduit shows only what came after the join, not
                // the events before it that a client shows (a direct chat's message, sent while the user was
                // invited).
                let own_join = |event: &Value| {
                    event["type"] == "m.room.member"
                        && event["state_key"] == self.user_id()
                        && event["content"]["membership"] == "join"
                };
                let newly_joined = section == "join"
                    && since.is_some()
                    && (!known
                        || room["timeline"]["events"].as_array().is_some_and(|events| events.iter().any(own_join)));
                if section == "join" {
                    state.joined.insert(room_id.clone());
                } else {
                    state.joined.remove(room_id);
                }
                // A limited timeline skipped events (Conduit sends at most 10 per room, whatever the filter says,
                // also in an initial sync): what was missed is fetched from `/messages` and queued first, as a
                // client's backfill does.
                // A room left (or banned from) shows only the leave on Conduit: what came before it is fetched too.
                let mut gap = Vec::new();
                if room["timeline"]["limited"] == true || newly_joined || section == "leave" {
                    let from = room["timeline"]["prev_batch"].as_str();
                    // Best effort: a server that refuses the history leaves the gap, as before.
                    match self.events_before(room_id, from, since.as_deref(), &state.seen).await {
                        Ok(missed) => gap = missed,
                        Err(error) => {
                            eprintln!("warning: {} cannot fill a gap in {room_id}: {error:#}", self.user_id())
                        }
                    }
                }
                let parts = ["state", "timeline", "ephemeral"].map(|part| room[part]["events"].as_array());
                for event in gap.iter().chain(parts.into_iter().flatten().flatten()) {
                    if let Some(event_id) = event["event_id"].as_str()
                        && !state.seen.insert(event_id.to_owned())
                    {
                        continue;
                    }
                    state.events.push_back((room_id.clone(), event.clone()));
                }
            }
        }
        if let Some(invites) = answer["rooms"]["invite"].as_object() {
            for (room_id, room) in invites {
                state.invites.push_back((room_id.clone(), room["invite_state"].clone()));
            }
        }
        state.since = Some(string_field(&answer, "next_batch")?);
        Ok(())
    }
}

impl MatrixUser {
    /// The events of `room_id` before the pagination token `from` (the latest without one) that are not in `seen`,
    /// oldest first: pages of `GET /rooms/{roomId}/messages` backwards until one reaches an event already seen, or
    /// `to`.
    async fn events_before(
        &self,
        room_id: &str,
        from: Option<&str>,
        to: Option<&str>,
        seen: &HashSet<String>,
    ) -> anyhow::Result<Vec<Value>> {
        let mut missed = Vec::new();
        let mut from = from.map(str::to_owned);
        loop {
            let mut query = vec![("dir", "b"), ("limit", "100")];
            query.extend(from.as_deref().map(|from| ("from", from)));
            query.extend(to.map(|to| ("to", to)));
            let url = self.endpoint(&["_matrix", "client", "v3", "rooms", room_id, "messages"], &query);
            let page = self.send(self.request(Method::GET, url.clone()), "GET", &url).await?;
            let chunk = page["chunk"].as_array().map(Vec::as_slice).unwrap_or_default();
            let mut reached_seen = false;
            for event in chunk {
                if event["event_id"].as_str().is_some_and(|event_id| seen.contains(event_id)) {
                    reached_seen = true;
                    break;
                }
                missed.push(event.clone());
            }
            match page["end"].as_str() {
                Some(end) if !reached_seen && !chunk.is_empty() => from = Some(end.to_owned()),
                _ => break,
            }
        }
        missed.reverse();
        Ok(missed)
    }
}

fn string_field(answer: &Value, field: &str) -> anyhow::Result<String> {
    answer[field].as_str().map(str::to_owned).with_context(|| format!("no string `{field}` in the answer {answer}"))
}

fn has_errcode(error: &anyhow::Error, errcode: &str) -> bool {
    error.downcast_ref::<MatrixError>().is_some_and(|e| e.errcode.as_deref() == Some(errcode))
}

/// A short description of an event for error messages: type, sender and body or state key.
fn summarize(event: &Value) -> String {
    let mut text = event["type"].as_str().unwrap_or("?").to_owned();
    if let Some(sender) = event["sender"].as_str() {
        text += &format!(" from {sender}");
    }
    if let Some(body) = event["content"]["body"].as_str() {
        text += &format!(" {body:?}");
    } else if let Some(state_key) = event["state_key"].as_str() {
        text += &format!(" [{state_key}]");
    }
    text
}
