//! The appservice's own client to its homeserver (AS → HS), authenticated with the `as_token`.
//!
//! Every request goes through one private function that percent-encodes the path, adds the [identity assertion]
//! (`?user_id=`) and [timestamp massaging] (`?ts=`) parameters, retries transient failures with the
//! [`RetryPolicy`], and reports each attempt to an optional [`RequestObserver`] (the metrics hook).
//!
//! Endpoints called from this file ([`Intent`] calls the per-user ones):
//! - [`GET /_matrix/client/versions`](https://spec.matrix.org/v1.16/client-server-api/#get_matrixclientversions)
//! - [`POST /_matrix/client/v1/appservice/{appserviceId}/ping`](https://spec.matrix.org/v1.16/application-service-api/#post_matrixclientv1appserviceappserviceidping)
//! - [`GET /_matrix/client/v3/directory/room/{roomAlias}`](https://spec.matrix.org/v1.16/client-server-api/#get_matrixclientv3directoryroomroomalias)
//! - [`PUT /_matrix/client/v3/directory/list/appservice/{networkId}/{roomId}`](https://spec.matrix.org/v1.16/application-service-api/#put_matrixclientv3directorylistappservicenetworkidroomid)
//! - [`GET /_matrix/client/v3/account/whoami`](https://spec.matrix.org/v1.16/client-server-api/#get_matrixclientv3accountwhoami)
//!
//! Media uploads and downloads are in [`media`]; requests are built in [`request`].
//!
//! [identity assertion]: https://spec.matrix.org/v1.16/application-service-api/#identity-assertion
//! [timestamp massaging]: https://spec.matrix.org/v1.16/application-service-api/#timestamp-massaging

use std::{
    collections::{BTreeMap, HashSet},
    fmt,
    sync::Arc,
    time::{Duration, Instant},
};

use bytes::{Bytes, BytesMut};
use dashmap::{DashMap, DashSet};
use reqwest::header::{self, HeaderMap, HeaderValue};
use ruma::{OwnedRoomId, OwnedServerName, OwnedUserId, RoomAliasId, RoomId, ServerName, UserId};
use serde::{Deserialize, de::DeserializeOwned};
use serde_json::json;
use url::Url;

mod media;
mod request;

pub(super) use self::request::Request;
use self::request::{Body, Retry, build_url};
use super::{
    error::{MatrixError, Result},
    intent::Intent,
    retry::RetryPolicy,
};

/// Connecting to the homeserver gives up after this long.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// A whole request (connect, send, answer) gives up after this long.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// The largest JSON answer we read (a `joined_members` of a very large room is a few MiB).
const MAX_JSON_BODY: usize = 32 * 1024 * 1024;
/// The most of an error body we read; the rest is dropped.
const MAX_ERROR_BODY: usize = 64 * 1024;
/// The default limit of [`MatrixClient::download_media`].
const DEFAULT_MAX_DOWNLOAD: usize = 100 * 1024 * 1024;

/// Receives one report per HTTP attempt to the homeserver, so that the crate's metrics can record latency and
/// errors without this module depending on them.
pub trait RequestObserver: Send + Sync {
    /// One attempt finished: `endpoint` is a low-cardinality label (`"send"`, `"state"`, `"join"`, …), `status` the
    /// HTTP status (`None` when no answer came: refused, reset, timed out), `elapsed` the time until the whole
    /// answer was read.
    fn observe(&self, endpoint: &'static str, status: Option<u16>, elapsed: Duration);

    /// A failed attempt will be retried after `delay`. Does nothing unless implemented.
    fn observe_retry(&self, endpoint: &'static str, delay: Duration) {
        let _ = (endpoint, delay);
    }
}

/// The client the appservice uses to act on its homeserver: as itself, or as any of its users through an
/// [`Intent`].
///
/// Cloning is cheap and clones share the HTTP connection pool and the registration and membership caches. The
/// `with_*` settings apply to the value they are called on and its later clones.
#[derive(Clone)]
pub struct MatrixClient {
    inner: Arc<Inner>,
    observer: Option<Arc<dyn RequestObserver>>,
    retry: RetryPolicy,
    max_download_bytes: usize,
}

struct Inner {
    http: reqwest::Client,
    homeserver: Url,
    server_name: OwnedServerName,
    bot_user_id: OwnedUserId,
    /// Users known to exist on the homeserver. A cache, not truth: a miss costs one `register` call.
    registered: DashSet<OwnedUserId>,
    /// Our users known to be joined, per room. A cache, not truth: kept current by [`MatrixClient::note_membership`].
    joined: DashMap<OwnedRoomId, HashSet<OwnedUserId>>,
    /// Serialises read-modify-write of a room's power levels within this process.
    power_level_locks: DashMap<OwnedRoomId, Arc<tokio::sync::Mutex<()>>>,
}

impl fmt::Debug for MatrixClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the token.
        f.debug_struct("MatrixClient")
            .field("homeserver", &self.inner.homeserver.as_str())
            .field("server_name", &self.inner.server_name)
            .field("bot_user_id", &self.inner.bot_user_id)
            .field("retry", &self.retry)
            .finish_non_exhaustive()
    }
}

/// The answer of `GET /_matrix/client/versions`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[non_exhaustive]
pub struct Versions {
    /// The spec versions supported, e.g. `v1.11`.
    #[serde(default)]
    pub versions: Vec<String>,
    /// Unstable features (MSCs) and whether they are enabled.
    #[serde(default)]
    pub unstable_features: BTreeMap<String, bool>,
}

impl MatrixClient {
    /// Creates the client of the appservice whose `as_token` is given, on the homeserver of `server_name`, reached
    /// at `homeserver_url`; `bot_user_id` is the registration's `sender_localpart` user.
    ///
    /// Fails when the URL is not `http(s)`, the token cannot be sent as a header, or the bot is not on
    /// `server_name`.
    pub fn new(
        homeserver_url: Url,
        as_token: String,
        server_name: OwnedServerName,
        bot_user_id: OwnedUserId,
    ) -> Result<Self> {
        if !matches!(homeserver_url.scheme(), "http" | "https") || homeserver_url.cannot_be_a_base() {
            return Err(MatrixError::InvalidInput {
                what: "homeserver URL",
                reason: format!("`{homeserver_url}` is not an http(s) URL; use e.g. http://127.0.0.1:8008"),
            });
        }
        if bot_user_id.server_name() != server_name {
            return Err(MatrixError::InvalidInput {
                what: "bot user ID",
                reason: format!("{bot_user_id} is not on {server_name}; check sender_localpart and server_name"),
            });
        }
        let mut auth = HeaderValue::from_str(&format!("Bearer {as_token}")).map_err(|_| MatrixError::InvalidInput {
            what: "as_token",
            reason: "it contains characters not allowed in an HTTP header; check the registration file".into(),
        })?;
        auth.set_sensitive(true);
        let mut headers = HeaderMap::new();
        headers.insert(header::AUTHORIZATION, auth);
        let http = reqwest::Client::builder()
            .default_headers(headers)
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(REQUEST_TIMEOUT)
            .pool_idle_timeout(Duration::from_secs(90))
            .user_agent(concat!("lattice/", env!("CARGO_PKG_VERSION")))
            .build()?;

        let mut homeserver = homeserver_url;
        homeserver.set_query(None);
        homeserver.set_fragment(None);
        // Not even the bot counts as registered yet: Synapse creates the `sender_localpart` user itself, but the spec
        // does not promise it and Conduit does not, so the bot is registered like any ghost.
        let registered = DashSet::new();
        Ok(Self {
            inner: Arc::new(Inner {
                http,
                homeserver,
                server_name,
                bot_user_id,
                registered,
                joined: DashMap::new(),
                power_level_locks: DashMap::new(),
            }),
            observer: None,
            retry: RetryPolicy::default(),
            max_download_bytes: DEFAULT_MAX_DOWNLOAD,
        })
    }

    /// This client, reporting every attempt to `observer`.
    pub fn with_observer(mut self, observer: Arc<dyn RequestObserver>) -> Self {
        self.observer = Some(observer);
        self
    }

    /// This client, retrying with `policy` instead of [`RetryPolicy::default`].
    pub fn with_retry_policy(mut self, policy: RetryPolicy) -> Self {
        self.retry = policy;
        self
    }

    /// This client, refusing to download media larger than `max_bytes` (default 100 MiB).
    pub fn with_max_download_size(mut self, max_bytes: usize) -> Self {
        self.max_download_bytes = max_bytes;
        self
    }

    /// The appservice's own user (`sender_localpart`), acting without identity assertion.
    pub fn bot(&self) -> Intent {
        Intent::new(self.clone(), self.inner.bot_user_id.clone())
    }

    /// One of the appservice's users, acting through identity assertion.
    pub fn intent(&self, user_id: OwnedUserId) -> Intent {
        Intent::new(self.clone(), user_id)
    }

    /// The homeserver's name, the part after `:` in its user IDs.
    pub fn server_name(&self) -> &ServerName {
        &self.inner.server_name
    }

    /// The appservice's own user.
    pub fn bot_user_id(&self) -> &UserId {
        &self.inner.bot_user_id
    }

    /// The URL the homeserver's client API is reached at.
    pub fn homeserver_url(&self) -> &Url {
        &self.inner.homeserver
    }

    /// Asks the homeserver to ping this appservice (`POST /_matrix/app/v1/ping` back to us) and returns the
    /// round-trip time the homeserver measured.
    ///
    /// Sent once, without retry: a caller waiting for the appservice to become reachable loops itself. A
    /// `transaction_id` is echoed in the homeserver's ping to us.
    pub async fn ping(&self, appservice_id: &str, transaction_id: Option<&str>) -> Result<Duration> {
        #[derive(Deserialize)]
        struct Answer {
            duration_ms: u64,
        }
        let body = match transaction_id {
            Some(txn) => json!({ "transaction_id": txn }),
            None => json!({}),
        };
        let path = ["_matrix", "client", "v1", "appservice", appservice_id, "ping"];
        let answer: Answer = self.send_json(Request::post("ping", &path).json(&body)?.no_retry()).await?;
        Ok(Duration::from_millis(answer.duration_ms))
    }

    /// Whom the homeserver takes the appservice's token for: the bot's user ID when it accepts the token
    /// (`GET /_matrix/client/v3/account/whoami`).
    pub async fn whoami(&self) -> Result<OwnedUserId> {
        #[derive(Deserialize)]
        struct Answer {
            user_id: OwnedUserId,
        }
        let path = ["_matrix", "client", "v3", "account", "whoami"];
        let answer: Answer = self.send_json(Request::get("whoami", &path)).await?;
        Ok(answer.user_id)
    }

    /// The room an alias points to, or `None` when the alias does not exist.
    pub async fn resolve_alias(&self, alias: &RoomAliasId) -> Result<Option<OwnedRoomId>> {
        #[derive(Deserialize)]
        struct Answer {
            room_id: OwnedRoomId,
        }
        let path = ["_matrix", "client", "v3", "directory", "room", alias.as_str()];
        match self.send_json::<Answer>(Request::get("resolve_alias", &path)).await {
            Ok(answer) => Ok(Some(answer.room_id)),
            Err(err) if err.is_not_found() => Ok(None),
            Err(err) => Err(err),
        }
    }

    /// Publishes (`public`) or hides a room in the homeserver's directory for the bridged network `network_id`.
    pub async fn set_room_directory_visibility_appservice(
        &self,
        network_id: &str,
        room_id: &RoomId,
        public: bool,
    ) -> Result<()> {
        let body = json!({ "visibility": if public { "public" } else { "private" } });
        let path = ["_matrix", "client", "v3", "directory", "list", "appservice", network_id, room_id.as_str()];
        self.send_raw(Request::put("directory_visibility", &path).json(&body)?).await.map(drop)
    }

    /// The spec versions and unstable features the homeserver supports.
    pub async fn versions(&self) -> Result<Versions> {
        self.send_json(Request::get("versions", &["_matrix", "client", "versions"])).await
    }

    /// Records a membership change the homeserver told us about (from a transaction), so that
    /// [`Intent::ensure_joined`] knows whether a join is needed. Users of other homeservers are ignored: no intent
    /// acts as them.
    pub fn note_membership(&self, room_id: &RoomId, user_id: &UserId, joined: bool) {
        if user_id.server_name() != self.inner.server_name {
            return;
        }
        if joined {
            self.inner.joined.entry(room_id.to_owned()).or_default().insert(user_id.to_owned());
            // A user the homeserver reports as joined exists.
            self.inner.registered.insert(user_id.to_owned());
        } else if let Some(mut members) = self.inner.joined.get_mut(room_id) {
            members.remove(user_id);
        }
    }

    /// Forgets what we believe about memberships in a room (after a room upgrade, a state reset, or when in doubt);
    /// the next [`Intent::ensure_joined`] asks the homeserver again.
    pub fn forget_membership_cache(&self, room_id: &RoomId) {
        self.inner.joined.remove(room_id);
    }

    pub(super) fn is_joined_cached(&self, room_id: &RoomId, user_id: &UserId) -> bool {
        self.inner.joined.get(room_id).is_some_and(|members| members.contains(user_id))
    }

    pub(super) fn is_registered_cached(&self, user_id: &UserId) -> bool {
        self.inner.registered.contains(user_id)
    }

    pub(super) fn note_registered(&self, user_id: &UserId) {
        self.inner.registered.insert(user_id.to_owned());
    }

    /// The lock serialising read-modify-write of `room_id`'s power levels in this process.
    pub(super) fn power_level_lock(&self, room_id: &RoomId) -> Arc<tokio::sync::Mutex<()>> {
        self.inner.power_level_locks.entry(room_id.to_owned()).or_default().clone()
    }

    /// Sends `request` and decodes the JSON answer.
    pub(super) async fn send_json<T: DeserializeOwned>(&self, request: Request<'_>) -> Result<T> {
        let endpoint = request.endpoint;
        let answer = self.send_raw(request).await?;
        serde_json::from_slice(&answer.body).map_err(|source| MatrixError::Decode { endpoint, source })
    }

    /// Sends `request`, retrying per the policy, and returns the successful answer read in full.
    pub(super) async fn send_raw(&self, request: Request<'_>) -> Result<Answer> {
        let url = build_url(&self.inner.homeserver, &request)?;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let started = Instant::now();
            let result = self.attempt(&request, &url).await;
            let elapsed = started.elapsed();
            let status = match &result {
                Ok(answer) => Some(answer.status),
                Err(err) => err.status(),
            };
            if let Some(observer) = &self.observer {
                observer.observe(request.endpoint, status, elapsed);
            }
            let err = match result {
                Ok(answer) => {
                    tracing::trace!(endpoint = request.endpoint, path = url.path(), status, ?elapsed, "matrix request");
                    return Ok(answer);
                }
                Err(err) => err,
            };
            let may_resend = match request.retry {
                Retry::Idempotent => true,
                Retry::NotIdempotent => err.request_not_processed(),
                Retry::Never => false,
            };
            let delay = if may_resend { self.retry.delay(attempt, &err, rand::random()) } else { None };
            let Some(delay) = delay else {
                tracing::debug!(endpoint = request.endpoint, path = url.path(), attempt, error = %err, "matrix request failed");
                return Err(err);
            };
            tracing::warn!(
                endpoint = request.endpoint,
                path = url.path(),
                attempt,
                ?delay,
                error = %err,
                "matrix request failed; retrying"
            );
            if let Some(observer) = &self.observer {
                observer.observe_retry(request.endpoint, delay);
            }
            tokio::time::sleep(delay).await;
        }
    }

    /// One HTTP exchange: an `Ok` answer has a success status and a body read in full within the limit.
    async fn attempt(&self, request: &Request<'_>, url: &Url) -> Result<Answer> {
        let mut builder = self.inner.http.request(request.method.clone(), url.clone());
        builder = match &request.body {
            Body::Empty => builder,
            Body::Json(bytes) => builder.header(header::CONTENT_TYPE, "application/json").body(bytes.clone()),
            Body::Raw { bytes, content_type } => {
                builder.header(header::CONTENT_TYPE, content_type.as_str()).body(bytes.clone())
            }
        };
        let mut response = builder.send().await?;
        let status = response.status().as_u16();
        if !response.status().is_success() {
            let retry_after = header_str(response.headers(), header::RETRY_AFTER);
            // The status alone is worth reporting if the body cannot be read.
            let (body, _) = read_body(&mut response, MAX_ERROR_BODY).await.unwrap_or_default();
            return Err(MatrixError::from_response(status, retry_after.as_deref(), &body));
        }
        let too_large = || MatrixError::InvalidResponse {
            endpoint: request.endpoint,
            reason: format!("the answer is larger than {} bytes", request.max_body),
        };
        if response.content_length().is_some_and(|length| length > request.max_body as u64) {
            return Err(too_large());
        }
        let content_type = header_str(response.headers(), header::CONTENT_TYPE);
        let (body, complete) = read_body(&mut response, request.max_body).await?;
        if !complete {
            return Err(too_large());
        }
        Ok(Answer { status, body, content_type })
    }
}

/// A successful answer, read in full.
#[derive(Debug)]
pub(super) struct Answer {
    status: u16,
    body: Bytes,
    content_type: Option<String>,
}

fn header_str(headers: &HeaderMap, name: header::HeaderName) -> Option<String> {
    headers.get(name).and_then(|value| value.to_str().ok()).map(str::to_owned)
}

/// Reads at most `limit` bytes of the body; the flag says whether that was all of it.
async fn read_body(response: &mut reqwest::Response, limit: usize) -> Result<(Bytes, bool), reqwest::Error> {
    let mut body = BytesMut::new();
    while let Some(chunk) = response.chunk().await? {
        let room = limit - body.len();
        if chunk.len() > room {
            body.extend_from_slice(&chunk[..room]);
            return Ok((body.freeze(), false));
        }
        body.extend_from_slice(&chunk);
    }
    Ok((body.freeze(), true))
}

#[cfg(test)]
mod tests;
