//! Unit tests of [`Intent`]'s requests against the scripted fake homeserver.

use ruma::{event_id, owned_server_name, owned_user_id, room_id, user_id};
use url::Url;

use super::{
    super::{RetryPolicy, testing::FakeHomeserver},
    *,
};

fn client() -> MatrixClient {
    MatrixClient::new(
        Url::parse("http://127.0.0.1:8008").unwrap(),
        "t".into(),
        owned_server_name!("example.org"),
        owned_user_id!("@bridge:example.org"),
    )
    .unwrap()
}

#[test]
fn only_ghosts_assert_an_identity() {
    let client = client();
    let bot = client.bot();
    assert!(bot.is_bot());
    assert_eq!(bot.asserted(), None);
    let ghost = client.intent(owned_user_id!("@_irc_bob:example.org"));
    assert!(!ghost.is_bot());
    assert_eq!(ghost.asserted(), Some(user_id!("@_irc_bob:example.org")));
    assert_eq!(format!("{ghost:?}"), r#"Intent { user_id: "@_irc_bob:example.org", .. }"#);
}

#[tokio::test]
async fn remote_users_cannot_be_registered() {
    let ghost = client().intent(owned_user_id!("@alice:elsewhere.org"));
    let err = ghost.ensure_registered().await.unwrap_err();
    assert!(matches!(err, MatrixError::InvalidInput { what: "user ID", .. }), "{err}");
}

#[tokio::test]
async fn cached_registration_and_membership_send_nothing() {
    // The homeserver URL points nowhere: any request would fail.
    let client = client();
    let room = room_id!("!abc:example.org");
    let ghost = client.intent(owned_user_id!("@_irc_bob:example.org"));
    client.note_membership(room, ghost.user_id(), true);
    ghost.ensure_registered().await.unwrap();
    ghost.ensure_joined(room).await.unwrap();
    // The bot counts as registered once the self-check registered it.
    client.note_registered(client.bot_user_id());
    ghost.ensure_joined_via(room, &client.bot()).await.unwrap();
    client.bot().ensure_registered().await.unwrap();
}

#[test]
fn create_room_options_serialise_to_the_request_body() {
    assert_eq!(serde_json::to_value(CreateRoomOptions::default()).unwrap(), json!({"visibility": "private"}));

    let options = CreateRoomOptions {
        name: Some("#rust".into()),
        topic: Some("Rust on Libera".into()),
        alias_localpart: Some("_irc_libera_#rust".into()),
        invite: vec![owned_user_id!("@alice:example.org")],
        is_direct: true,
        preset: Some(RoomPreset::PrivateChat),
        visibility: Visibility::Public,
        initial_state: vec![json!({"type": "m.bridge", "state_key": "lattice:/libera/#rust", "content": {}})],
        power_level_content_override: Some(json!({"users": {"@bridge:example.org": 100}})),
        creation_content: Some(json!({"m.federate": false})),
        room_version: Some("12".into()),
    };
    assert_eq!(
        serde_json::to_value(&options).unwrap(),
        json!({
            "name": "#rust",
            "topic": "Rust on Libera",
            "room_alias_name": "_irc_libera_#rust",
            "invite": ["@alice:example.org"],
            "is_direct": true,
            "preset": "private_chat",
            "visibility": "public",
            "initial_state": [{"type": "m.bridge", "state_key": "lattice:/libera/#rust", "content": {}}],
            "power_level_content_override": {"users": {"@bridge:example.org": 100}},
            "creation_content": {"m.federate": false},
            "room_version": "12",
        })
    );
}

#[test]
fn reactions_are_annotations() {
    assert_eq!(
        reaction_content(event_id!("$abc:example.org"), "👍"),
        json!({"m.relates_to": {"rel_type": "m.annotation", "event_id": "$abc:example.org", "key": "👍"}})
    );
}

#[test]
fn typing_bodies() {
    assert_eq!(typing_content(true, Duration::from_secs(30)), json!({"typing": true, "timeout": 30000}));
    assert_eq!(typing_content(false, Duration::from_secs(30)), json!({"typing": false}));
}

#[test]
fn profiles_decode_with_empty_avatars_as_unset() {
    // (body, displayname, avatar)
    let cases = [
        (
            json!({"displayname": "Bob", "avatar_url": "mxc://example.org/abc"}),
            Some("Bob"),
            Some("mxc://example.org/abc"),
        ),
        (json!({"displayname": "Bob", "avatar_url": ""}), Some("Bob"), None),
        (json!({"avatar_url": null}), None, None),
        (json!({}), None, None),
    ];
    for (body, displayname, avatar) in cases {
        let profile: Profile = serde_json::from_value(body.clone()).unwrap();
        assert_eq!(profile.displayname.as_deref(), displayname, "{body}");
        assert_eq!(profile.avatar_url.as_deref().map(MxcUri::as_str), avatar, "{body}");
    }
}

#[tokio::test]
async fn ghosts_send_with_identity_assertion_and_ts_and_retry_with_the_same_txn_id() {
    let homeserver =
        FakeHomeserver::start(vec![(502, "<html>Bad Gateway</html>"), (200, r#"{"event_id":"$ev:example.org"}"#)])
            .await;
    let ghost = homeserver.client().intent(owned_user_id!("@_irc_bob:example.org"));
    let ts = MilliSecondsSinceUnixEpoch(ruma::UInt::new(1_600_000_000_000).unwrap());
    let content = json!({"msgtype": "m.text", "body": "hello"});
    let event_id = ghost
        .send_message_event(room_id!("!abc:example.org"), "m.room.message", &content, "lattice.1", Some(ts))
        .await
        .unwrap();
    assert_eq!(event_id, "$ev:example.org");

    let received = homeserver.received();
    assert_eq!(received.len(), 2);
    for request in &received {
        assert_eq!(
            request.line,
            "PUT /_matrix/client/v3/rooms/%21abc%3Aexample.org/send/m.room.message/lattice.1\
             ?user_id=%40_irc_bob%3Aexample.org&ts=1600000000000 HTTP/1.1"
        );
        assert_eq!(serde_json::from_str::<Value>(&request.body).unwrap(), content);
    }
}

#[tokio::test]
async fn creating_a_room_is_not_resent_after_a_server_error() {
    let homeserver =
        FakeHomeserver::start(vec![(500, r#"{"errcode":"M_UNKNOWN","error":"Internal server error"}"#)]).await;
    let client = homeserver.client();
    // Registered at start by the self-check.
    client.note_registered(client.bot_user_id());
    let err = client.bot().create_room(&CreateRoomOptions::default()).await.unwrap_err();
    assert_eq!(err.status(), Some(500));
    let [request] = &homeserver.received()[..] else { panic!("expected exactly one request") };
    // The bot acts as itself: no identity assertion.
    assert_eq!(request.line, "POST /_matrix/client/v3/createRoom HTTP/1.1");
}

#[tokio::test]
async fn creating_a_room_is_resent_after_a_rate_limit() {
    let homeserver = FakeHomeserver::start(vec![
        (429, r#"{"errcode":"M_LIMIT_EXCEEDED","retry_after_ms":1}"#),
        (200, r#"{"room_id":"!new:example.org"}"#),
    ])
    .await;
    let client = homeserver.client();
    client.note_registered(client.bot_user_id());
    let room = client.bot().create_room(&CreateRoomOptions::default()).await.unwrap();
    assert_eq!(room, "!new:example.org");
    assert_eq!(homeserver.received().len(), 2);
    assert!(client.is_joined_cached(&room, client.bot_user_id()));
}

#[tokio::test]
async fn ensure_joined_via_registers_invites_joins_and_then_remembers() {
    let homeserver = FakeHomeserver::start(vec![
        (400, r#"{"errcode":"M_USER_IN_USE","error":"User ID already taken."}"#),
        (403, r#"{"errcode":"M_FORBIDDEN","error":"You are not invited to this room."}"#),
        (200, "{}"),
        (200, r#"{"room_id":"!abc:example.org"}"#),
    ])
    .await;
    let client = homeserver.client().with_retry_policy(RetryPolicy::never());
    let ghost = client.intent(owned_user_id!("@_irc_bob:example.org"));
    let room = room_id!("!abc:example.org");
    ghost.ensure_joined_via(room, &client.bot()).await.unwrap();
    // Cached: the fake homeserver has no answers left, so any request would fail.
    ghost.ensure_joined_via(room, &client.bot()).await.unwrap();
    ghost.ensure_registered().await.unwrap();

    let received = homeserver.received();
    let lines: Vec<&str> = received.iter().map(|request| request.line.as_str()).collect();
    assert_eq!(
        lines,
        [
            "POST /_matrix/client/v3/register HTTP/1.1",
            "POST /_matrix/client/v3/join/%21abc%3Aexample.org?user_id=%40_irc_bob%3Aexample.org HTTP/1.1",
            "POST /_matrix/client/v3/rooms/%21abc%3Aexample.org/invite HTTP/1.1",
            "POST /_matrix/client/v3/join/%21abc%3Aexample.org?user_id=%40_irc_bob%3Aexample.org HTTP/1.1",
        ]
    );
    assert_eq!(
        serde_json::from_str::<Value>(&received[0].body).unwrap(),
        json!({"type": "m.login.application_service", "username": "_irc_bob", "inhibit_login": true})
    );
    assert_eq!(serde_json::from_str::<Value>(&received[2].body).unwrap(), json!({"user_id": "@_irc_bob:example.org"}));
}

#[tokio::test]
async fn set_power_level_keeps_the_rest_of_the_content() {
    let homeserver = FakeHomeserver::start(vec![
        (200, r#"{"users":{"@bridge:example.org":100},"events":{"m.room.name":50},"org.example.x":1}"#),
        (200, r#"{"event_id":"$pl:example.org"}"#),
    ])
    .await;
    let bot = homeserver.client().bot();
    let room = room_id!("!abc:example.org");
    let event_id = bot.set_power_level(room, user_id!("@_irc_op:example.org"), 50).await.unwrap();
    assert_eq!(event_id.as_deref().map(EventId::as_str), Some("$pl:example.org"));

    let received = homeserver.received();
    assert_eq!(
        received[0].line,
        "GET /_matrix/client/v3/rooms/%21abc%3Aexample.org/state/m.room.power_levels/ HTTP/1.1"
    );
    assert_eq!(
        received[1].line,
        "PUT /_matrix/client/v3/rooms/%21abc%3Aexample.org/state/m.room.power_levels/ HTTP/1.1"
    );
    assert_eq!(
        serde_json::from_str::<Value>(&received[1].body).unwrap(),
        json!({
            "users": {"@bridge:example.org": 100, "@_irc_op:example.org": 50},
            "events": {"m.room.name": 50},
            "org.example.x": 1,
        })
    );
}

#[tokio::test]
async fn missing_state_and_unknown_profiles_are_none() {
    let homeserver = FakeHomeserver::start(vec![
        (404, r#"{"errcode":"M_NOT_FOUND","error":"Event not found."}"#),
        (404, r#"{"errcode":"M_UNKNOWN","error":"No row found (profiles)"}"#),
        (404, r#"{"errcode":"M_UNRECOGNIZED","error":"Unrecognized request"}"#),
    ])
    .await;
    let bot = homeserver.client().bot();
    let room = room_id!("!abc:example.org");
    assert_eq!(bot.get_state_event(room, "m.bridge", "lattice:/irc/#chan").await.unwrap(), None);
    assert_eq!(bot.get_profile(user_id!("@nobody:example.org")).await.unwrap(), None);
    // An endpoint the homeserver does not know is an error, not an absence.
    let err = bot.get_state_event(room, "m.bridge", "x").await.unwrap_err();
    assert!(err.is_errcode("M_UNRECOGNIZED"), "{err}");
    assert_eq!(
        homeserver.received()[0].line,
        "GET /_matrix/client/v3/rooms/%21abc%3Aexample.org/state/m.bridge/lattice%3A%2Firc%2F%23chan HTTP/1.1"
    );
}
