//! Unit tests of [`MatrixClient`]: construction, caches, retries, observation, media and versions.

use std::sync::Mutex;

use ruma::{MxcUri, owned_room_id, owned_server_name, owned_user_id, user_id};

use super::{super::testing::FakeHomeserver, *};

fn base() -> Url {
    Url::parse("http://127.0.0.1:8008").unwrap()
}

fn client() -> MatrixClient {
    MatrixClient::new(
        base(),
        "as_token_secret".into(),
        owned_server_name!("example.org"),
        owned_user_id!("@bridge:example.org"),
    )
    .unwrap()
}

#[test]
fn construction_is_validated() {
    let new = |url: &str, token: &str, bot| {
        MatrixClient::new(Url::parse(url).unwrap(), token.into(), owned_server_name!("example.org"), bot)
    };
    assert!(new("http://localhost:8008", "t", owned_user_id!("@bridge:example.org")).is_ok());
    assert!(matches!(
        new("ftp://localhost", "t", owned_user_id!("@bridge:example.org")),
        Err(MatrixError::InvalidInput { what: "homeserver URL", .. })
    ));
    assert!(matches!(
        new("http://localhost", "t", owned_user_id!("@bridge:elsewhere.org")),
        Err(MatrixError::InvalidInput { what: "bot user ID", .. })
    ));
    assert!(matches!(
        new("http://localhost", "bad\ntoken", owned_user_id!("@bridge:example.org")),
        Err(MatrixError::InvalidInput { what: "as_token", .. })
    ));
}

#[test]
fn debug_output_hides_the_token() {
    let debug = format!("{:?}", client());
    assert!(debug.contains("@bridge:example.org"));
    assert!(!debug.contains("as_token_secret"));
}

#[test]
fn membership_cache_follows_notes() {
    let client = client();
    let room = owned_room_id!("!abc:example.org");
    let ghost = user_id!("@_irc_bob:example.org");
    assert!(!client.is_joined_cached(&room, ghost));
    client.note_membership(&room, ghost, true);
    assert!(client.is_joined_cached(&room, ghost));
    assert!(client.is_registered_cached(ghost));
    // Clones share the caches.
    assert!(client.clone().is_joined_cached(&room, ghost));
    client.note_membership(&room, ghost, false);
    assert!(!client.is_joined_cached(&room, ghost));
    client.note_membership(&room, ghost, true);
    client.forget_membership_cache(&room);
    assert!(!client.is_joined_cached(&room, ghost));
    // Remote users are not cached at all.
    client.note_membership(&room, user_id!("@alice:elsewhere.org"), true);
    assert!(!client.is_joined_cached(&room, user_id!("@alice:elsewhere.org")));
    assert!(!client.is_registered_cached(user_id!("@alice:elsewhere.org")));
}

#[test]
fn the_bot_is_not_taken_as_registered() {
    let client = client();
    assert!(!client.is_registered_cached(client.bot_user_id()));
}

#[derive(Default)]
struct Recorder(Mutex<Vec<(&'static str, Option<u16>)>>);

impl RequestObserver for Recorder {
    fn observe(&self, endpoint: &'static str, status: Option<u16>, _elapsed: Duration) {
        self.0.lock().unwrap().push((endpoint, status));
    }
}

#[tokio::test]
async fn every_attempt_is_observed_and_refused_connections_retried() {
    // Nothing listens on this port: each attempt is refused at once.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let recorder = Arc::new(Recorder::default());
    let mut policy = RetryPolicy::default().with_max_attempts(3);
    policy.base = Duration::from_millis(1);
    let client = MatrixClient::new(
        Url::parse(&format!("http://127.0.0.1:{port}")).unwrap(),
        "t".into(),
        owned_server_name!("example.org"),
        owned_user_id!("@bridge:example.org"),
    )
    .unwrap()
    .with_observer(recorder.clone())
    .with_retry_policy(policy);

    let err = client.versions().await.unwrap_err();
    assert!(matches!(err, MatrixError::Transport(_)), "{err}");
    assert_eq!(*recorder.0.lock().unwrap(), [("versions", None); 3]);

    // Pinging is never retried.
    recorder.0.lock().unwrap().clear();
    client.ping("lattice", None).await.unwrap_err();
    assert_eq!(recorder.0.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn malformed_mxc_uris_are_refused_before_sending() {
    let err = client().download_media(<&MxcUri>::from("https://example.org/cat.png")).await.unwrap_err();
    assert!(matches!(err, MatrixError::InvalidInput { what: "mxc URI", .. }), "{err}");
}

#[tokio::test]
async fn rate_limits_are_waited_out_by_resending_the_same_request() {
    let homeserver = FakeHomeserver::start(vec![
        (429, r#"{"errcode":"M_LIMIT_EXCEEDED","error":"Too many requests","retry_after_ms":20}"#),
        (200, r#"{"room_id":"!abc:example.org","servers":["example.org"]}"#),
    ])
    .await;
    let recorder = Arc::new(Recorder::default());
    let client = homeserver.client().with_observer(recorder.clone());

    let started = Instant::now();
    let room = client.resolve_alias(<&RoomAliasId>::try_from("#room:example.org").unwrap()).await.unwrap();
    assert_eq!(room, Some(owned_room_id!("!abc:example.org")));
    assert!(started.elapsed() >= Duration::from_millis(20), "retry_after_ms was not honoured");

    let received = homeserver.received();
    assert_eq!(received.len(), 2);
    for request in &received {
        assert_eq!(request.line, "GET /_matrix/client/v3/directory/room/%23room%3Aexample.org HTTP/1.1");
        assert_eq!(request.header("authorization"), Some("Bearer t"));
    }
    assert_eq!(*recorder.0.lock().unwrap(), [("resolve_alias", Some(429)), ("resolve_alias", Some(200))]);
}

#[tokio::test]
async fn a_missing_alias_is_none_and_asked_once() {
    let homeserver =
        FakeHomeserver::start(vec![(404, r#"{"errcode":"M_NOT_FOUND","error":"Room alias not found"}"#)]).await;
    let alias = <&RoomAliasId>::try_from("#nope:example.org").unwrap();
    assert_eq!(homeserver.client().resolve_alias(alias).await.unwrap(), None);
    assert_eq!(homeserver.received().len(), 1);
}

#[tokio::test]
async fn downloads_fall_back_to_unauthenticated_media_on_older_homeservers() {
    let homeserver = FakeHomeserver::start(vec![
        (404, r#"{"errcode":"M_UNRECOGNIZED","error":"Unrecognized request"}"#),
        (200, r#"{"cat":true}"#),
    ])
    .await;
    let (bytes, _) = homeserver.client().download_media(<&MxcUri>::from("mxc://example.org/abc")).await.unwrap();
    assert_eq!(&bytes[..], br#"{"cat":true}"#);
    let lines: Vec<String> = homeserver.received().into_iter().map(|request| request.line).collect();
    assert_eq!(
        lines,
        [
            "GET /_matrix/client/v1/media/download/example.org/abc?allow_redirect=true HTTP/1.1",
            "GET /_matrix/media/v3/download/example.org/abc?allow_redirect=true HTTP/1.1",
        ]
    );
}

#[tokio::test]
async fn missing_media_is_not_taken_for_a_missing_endpoint() {
    let homeserver = FakeHomeserver::start(vec![(404, r#"{"errcode":"M_NOT_FOUND","error":"Media not found"}"#)]).await;
    let err = homeserver.client().download_media(<&MxcUri>::from("mxc://example.org/abc")).await.unwrap_err();
    assert!(err.is_not_found(), "{err}");
    assert_eq!(homeserver.received().len(), 1);
}

#[tokio::test]
async fn uploads_carry_content_type_and_filename() {
    let homeserver = FakeHomeserver::start(vec![(200, r#"{"content_uri":"mxc://example.org/abc"}"#)]).await;
    let mxc =
        homeserver.client().upload_media(Bytes::from_static(b"GIF89a"), "image/gif", Some("cat.gif")).await.unwrap();
    assert_eq!(mxc.as_str(), "mxc://example.org/abc");
    let [request] = &homeserver.received()[..] else { panic!("expected one request") };
    assert_eq!(request.line, "POST /_matrix/media/v3/upload?filename=cat.gif HTTP/1.1");
    assert_eq!(request.header("content-type"), Some("image/gif"));
    assert_eq!(request.body, "GIF89a");
}

#[tokio::test]
async fn an_invalid_content_uri_is_an_invalid_response() {
    let homeserver = FakeHomeserver::start(vec![(200, r#"{"content_uri":"https://example.org/abc"}"#)]).await;
    let err = homeserver.client().upload_media(Bytes::new(), "text/plain", None).await.unwrap_err();
    assert!(matches!(err, MatrixError::InvalidResponse { endpoint: "upload", .. }), "{err}");
}

#[tokio::test]
async fn versions_decode() {
    let homeserver = FakeHomeserver::start(vec![(
        200,
        r#"{"versions":["v1.11","v1.12"],"unstable_features":{"org.matrix.msc3030":true}}"#,
    )])
    .await;
    let versions = homeserver.client().versions().await.unwrap();
    assert_eq!(versions.versions, ["v1.11", "v1.12"]);
    assert_eq!(versions.unstable_features.get("org.matrix.msc3030"), Some(&true));
}
