//! The appservice HTTP API as the homeserver sees it.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::support::{TestBridge, bodies, message, registration, sqlite_store};

const WAIT: Duration = Duration::from_secs(10);

async fn error_body(response: reqwest::Response) -> (StatusCode, String) {
    let status = response.status();
    let body: Value = response.json().await.unwrap();
    (status, body["errcode"].as_str().unwrap_or_default().to_owned())
}

#[tokio::test]
async fn every_authentication_case_is_answered_as_the_spec_says() {
    let (store, _dir) = sqlite_store().await;
    let bridge = TestBridge::start(store, registration()).await;
    let url = format!("{}/_matrix/app/v1/transactions/auth-1", bridge.url);
    let body = json!({"events": []});
    let token = bridge.hs_token.clone();

    let missing = bridge.http.put(&url).json(&body).send().await.unwrap();
    assert_eq!(error_body(missing).await, (StatusCode::UNAUTHORIZED, "M_UNAUTHORIZED".into()));

    let wrong = bridge.http.put(&url).bearer_auth("not-the-token").json(&body).send().await.unwrap();
    assert_eq!(error_body(wrong).await, (StatusCode::FORBIDDEN, "M_FORBIDDEN".into()));

    let wrong_query = bridge.http.put(format!("{url}?access_token=nope")).json(&body).send().await.unwrap();
    assert_eq!(error_body(wrong_query).await, (StatusCode::FORBIDDEN, "M_FORBIDDEN".into()));

    let disagreeing =
        bridge.http.put(format!("{url}?access_token=other")).bearer_auth(&token).json(&body).send().await.unwrap();
    assert_eq!(error_body(disagreeing).await, (StatusCode::FORBIDDEN, "M_FORBIDDEN".into()));

    let header = bridge.http.put(&url).bearer_auth(&token).json(&body).send().await.unwrap();
    assert_eq!(header.status(), StatusCode::OK);
    assert_eq!(header.json::<Value>().await.unwrap(), json!({}));

    let query = bridge.http.put(format!("{url}?access_token={token}")).json(&body).send().await.unwrap();
    assert_eq!(query.status(), StatusCode::OK);

    let both = bridge.http.put(format!("{url}?access_token={token}")).bearer_auth(&token).json(&body).send().await;
    assert_eq!(both.unwrap().status(), StatusCode::OK);
    bridge.stop().await;
}

#[tokio::test]
async fn unknown_paths_and_methods_are_unrecognized() {
    let (store, _dir) = sqlite_store().await;
    let bridge = TestBridge::start(store, registration()).await;
    let unknown =
        bridge.http.get(format!("{}/_matrix/app/v1/nothing-here", bridge.url)).bearer_auth(&bridge.hs_token).send();
    assert_eq!(error_body(unknown.await.unwrap()).await, (StatusCode::NOT_FOUND, "M_UNRECOGNIZED".into()));
    let wrong_method =
        bridge.http.get(format!("{}/_matrix/app/v1/transactions/1", bridge.url)).bearer_auth(&bridge.hs_token).send();
    assert_eq!(
        error_body(wrong_method.await.unwrap()).await,
        (StatusCode::METHOD_NOT_ALLOWED, "M_UNRECOGNIZED".into())
    );
    bridge.stop().await;
}

#[tokio::test]
async fn a_connectors_own_routes_are_served_beside_the_appservice_api() {
    let (store, _dir) = sqlite_store().await;
    let bridge = TestBridge::start(store, registration()).await;
    let own = bridge.http.get(format!("{}/_test/own", bridge.url)).send().await.unwrap();
    assert_eq!(own.status(), StatusCode::OK, "served without the homeserver's token");
    assert_eq!(own.text().await.unwrap(), "the connector's own route");
    let wrong_method = bridge.http.post(format!("{}/_test/own", bridge.url)).send().await.unwrap();
    assert_eq!(wrong_method.status(), StatusCode::METHOD_NOT_ALLOWED);
    let unknown = bridge.http.get(format!("{}/_test/other", bridge.url)).send().await.unwrap();
    assert_eq!(
        error_body(unknown).await,
        (StatusCode::NOT_FOUND, "M_UNRECOGNIZED".into()),
        "the fallback still answers"
    );
    let guarded =
        bridge.http.post(format!("{}/_matrix/app/v1/ping", bridge.url)).json(&json!({})).send().await.unwrap();
    assert_eq!(
        error_body(guarded).await,
        (StatusCode::UNAUTHORIZED, "M_UNAUTHORIZED".into()),
        "the AS API keeps its guard"
    );
    bridge.stop().await;
}

#[tokio::test]
async fn ping_and_queries_answer() {
    let (store, _dir) = sqlite_store().await;
    let bridge = TestBridge::start(store, registration()).await;
    let ping = bridge
        .http
        .post(format!("{}/_matrix/app/v1/ping", bridge.url))
        .bearer_auth(&bridge.hs_token)
        .json(&json!({"transaction_id": "mypinger"}))
        .send()
        .await
        .unwrap();
    assert_eq!(ping.status(), StatusCode::OK);
    assert_eq!(ping.json::<Value>().await.unwrap(), json!({}));

    // Outside the namespace, and inside it but unknown to the connector: both do not exist.
    for user in ["@someone:localhost", "@_test_nobody:localhost"] {
        let response = bridge
            .http
            .get(format!("{}/_matrix/app/v1/users/{}", bridge.url, user.replace('@', "%40")))
            .bearer_auth(&bridge.hs_token)
            .send()
            .await
            .unwrap();
        assert_eq!(error_body(response).await, (StatusCode::NOT_FOUND, "M_NOT_FOUND".into()), "{user}");
    }
    let alias = bridge
        .http
        .get(format!("{}/_matrix/app/v1/rooms/%23_test_room:localhost", bridge.url))
        .bearer_auth(&bridge.hs_token)
        .send()
        .await
        .unwrap();
    assert_eq!(error_body(alias).await, (StatusCode::NOT_FOUND, "M_NOT_FOUND".into()));
    let protocol = bridge
        .http
        .get(format!("{}/_matrix/app/v1/thirdparty/protocol/other", bridge.url))
        .bearer_auth(&bridge.hs_token)
        .send()
        .await
        .unwrap();
    assert_eq!(error_body(protocol).await, (StatusCode::NOT_FOUND, "M_NOT_FOUND".into()));
    bridge.stop().await;
}

#[tokio::test]
async fn a_malformed_event_is_skipped_and_the_rest_processed_in_order() {
    let (store, _dir) = sqlite_store().await;
    let bridge = TestBridge::start(store, registration()).await;
    let room = "!room:localhost";
    let body = json!({"events": [
        message(room, "$1", "first"),
        {"type": "m.room.message", "content": {"body": "no room"}},
        "not even an object",
        message(room, "$2", "second"),
        {"type": "m.room.message", "room_id": room, "sender": "@_test_ghost:localhost",
         "content": {"msgtype": "m.text", "body": "an echo of our own ghost"}},
        message(room, "$3", "third"),
    ]});
    assert_eq!(bridge.put_transaction("mixed-1", &body).await.status(), StatusCode::OK);
    let events = bridge.recorder.wait_for(3, WAIT).await;
    assert_eq!(bodies(&events), ["first", "second", "third"]);

    let not_json = bridge
        .http
        .put(format!("{}/_matrix/app/v1/transactions/broken", bridge.url))
        .bearer_auth(&bridge.hs_token)
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(error_body(not_json).await, (StatusCode::BAD_REQUEST, "M_NOT_JSON".into()));
    let counted = metrics(&bridge).await;
    assert!(counted.contains(r#"lattice_appservice_transactions_total{outcome="refused_not_json"} 1"#), "{counted}");
    bridge.stop().await;
}

#[tokio::test]
async fn a_retried_transaction_is_processed_once_also_across_a_restart() {
    let (store, dir) = sqlite_store().await;
    let registration = registration();
    let room = "!dedupe:localhost";
    let bridge = TestBridge::start(store.clone(), registration.clone()).await;
    let first = json!({"events": [message(room, "$a", "once")]});
    assert_eq!(bridge.put_transaction("txn-1", &first).await.status(), StatusCode::OK);
    assert_eq!(bridge.put_transaction("txn-1", &first).await.status(), StatusCode::OK);
    bridge.put_transaction("txn-2", &json!({"events": [message(room, "$b", "marker")]})).await;
    // Events of one room arrive in order, so once the marker is in, a duplicate would have been seen before it.
    assert_eq!(bodies(&bridge.recorder.wait_for(2, WAIT).await), ["once", "marker"]);
    bridge.stop().await;

    let again = TestBridge::start(reopen(&dir).await, registration).await;
    assert_eq!(again.put_transaction("txn-1", &first).await.status(), StatusCode::OK);
    again.put_transaction("txn-3", &json!({"events": [message(room, "$c", "after restart")]})).await;
    assert_eq!(bodies(&again.recorder.wait_for(1, WAIT).await), ["after restart"]);
    assert_eq!(again.recorder.events().len(), 1);
    again.stop().await;
}

/// Synapse on SQLite numbers transactions from its highest unsent one, so after a restart with nothing pending it
/// sends `1` again, with new events: they are new, and bridged.
#[tokio::test]
async fn a_transaction_id_used_again_for_other_events_is_processed() {
    let (store, _dir) = sqlite_store().await;
    let bridge = TestBridge::start(store, registration()).await;
    let room = "!reused:localhost";
    let before = json!({"events": [message(room, "$a", "before the homeserver restarted")]});
    let after = json!({"events": [message(room, "$b", "after it restarted")]});
    assert_eq!(bridge.put_transaction("1", &before).await.status(), StatusCode::OK);
    assert_eq!(bridge.put_transaction("1", &after).await.status(), StatusCode::OK);
    assert_eq!(bridge.put_transaction("1", &after).await.status(), StatusCode::OK, "a retry of the new one");
    bridge.put_transaction("2", &json!({"events": [message(room, "$c", "marker")]})).await;
    let seen = bodies(&bridge.recorder.wait_for(3, WAIT).await);
    assert_eq!(seen, ["before the homeserver restarted", "after it restarted", "marker"]);
    bridge.stop().await;
}

async fn reopen(dir: &tempfile::TempDir) -> lattice_bridge_core::store::Store {
    let url = format!("sqlite://{}", dir.path().join("lattice.db").display());
    lattice_bridge_core::store::Store::connect(&url, 4, lattice_bridge_core::store::Cipher::random()).await.unwrap()
}

#[tokio::test]
async fn events_keep_their_order_per_room_across_transactions() {
    let (store, _dir) = sqlite_store().await;
    let bridge = TestBridge::start(store, registration()).await;
    let rooms = ["!a:localhost", "!b:localhost", "!c:localhost"];
    let per_room = 60;
    for batch in 0..6 {
        let events: Vec<Value> = (0..per_room / 6)
            .flat_map(|index| {
                let n = batch * (per_room / 6) + index;
                rooms.iter().map(move |room| message(room, &format!("${room}{n}"), &format!("{room} {n}")))
            })
            .collect();
        let response = bridge.put_transaction(&format!("order-{batch}"), &json!({"events": events})).await;
        assert_eq!(response.status(), StatusCode::OK);
    }
    let events = bridge.recorder.wait_for(rooms.len() * per_room, WAIT).await;
    for room in rooms {
        let seen: Vec<String> =
            bodies(&events.iter().filter(|event| event.room_id == room).cloned().collect::<Vec<_>>());
        let expected: Vec<String> = (0..per_room).map(|n| format!("{room} {n}")).collect();
        assert_eq!(seen, expected, "order in {room}");
    }
    bridge.stop().await;
}

#[tokio::test]
async fn ephemeral_events_are_queued_with_the_room() {
    let (store, _dir) = sqlite_store().await;
    let bridge = TestBridge::start(store, registration()).await;
    let room = "!typing:localhost";
    let body = json!({
        "events": [message(room, "$m", "hello")],
        "de.sorunome.msc2409.ephemeral": [{"type": "m.typing", "room_id": room, "content": {"user_ids": ["@alice:localhost"]}}],
    });
    assert_eq!(bridge.put_transaction("ephemeral-1", &body).await.status(), StatusCode::OK);
    let events = bridge.recorder.wait_for(2, WAIT).await;
    assert_eq!(events[1].event_type, "m.typing");
    bridge.stop().await;
}

#[tokio::test]
async fn health_and_metrics_report_the_runtime() {
    let (store, _dir) = sqlite_store().await;
    let bridge = TestBridge::start(store, registration()).await;
    let ready = || async {
        let answer = bridge.http.get(format!("{}/health/ready", bridge.url)).send().await.unwrap();
        answer.json::<Value>().await.unwrap()
    };
    let before = ready().await;
    assert_eq!(before["status"], "ready");
    assert_eq!(before["homeserver_reachable"], false, "the fake homeserver URL is a closed port: the ping fails");
    bridge.put_transaction("metrics-1", &json!({"events": [message("!m:localhost", "$1", "x")]})).await;
    bridge.recorder.wait_for(1, WAIT).await;
    let after = ready().await;
    assert_eq!(after["homeserver_reachable"], true, "a homeserver that sends a transaction is up");
    let live = bridge.http.get(format!("{}/health/live", bridge.url)).send().await.unwrap();
    assert_eq!(live.status(), StatusCode::OK);
    // The item leaves the queue just after the connector returns: poll until the metrics show it, with a deadline.
    let handled = r#"lattice_events_total{outcome="handled",queue="matrix"} 1"#;
    let deadline = tokio::time::Instant::now() + WAIT;
    let metrics = loop {
        let metrics = bridge.http.get(format!("{}/metrics", bridge.url)).send().await.unwrap().text().await.unwrap();
        if metrics.contains(handled) || tokio::time::Instant::now() > deadline {
            break metrics;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(metrics.contains(handled), "{metrics}");
    assert!(metrics.contains(r#"lattice_appservice_transactions_total{outcome="persisted"} 1"#), "{metrics}");
    assert!(metrics.contains(r#"lattice_queue_depth{queue="matrix"} 0"#), "{metrics}");
    bridge.stop().await;
}

#[tokio::test]
async fn ephemeral_events_a_portal_cannot_carry_are_not_handed_over() {
    let (store, _dir) = sqlite_store().await;
    let room = "!portal:localhost";
    store
        .upsert_portal(&lattice_bridge_core::store::Portal {
            remote_key: "net/#chan".into(),
            room_id: room.into(),
            alias: None,
            name: None,
            topic: None,
            metadata: json!({}),
        })
        .await
        .unwrap();
    let bridge = TestBridge::start(store, registration()).await;
    let body = json!({
        "events": [message(room, "$m1", "before")],
        "ephemeral": [
            {"type": "m.typing", "room_id": room, "content": {"user_ids": ["@alice:localhost"]}},
            {"type": "m.receipt", "room_id": room, "content": {"$m1": {"m.read": {"@alice:localhost": {"ts": 1}}}}},
        ],
    });
    assert_eq!(bridge.put_transaction("portal-ephemeral", &body).await.status(), StatusCode::OK);
    bridge.put_transaction("portal-after", &json!({"events": [message(room, "$m2", "after")]})).await;
    // The recorder's default capabilities carry neither typing nor receipts; the later message proves both passed.
    let events = bridge.recorder.wait_for(2, WAIT).await;
    assert_eq!(bodies(&events), ["before", "after"]);
    assert!(events.iter().all(|event| event.event_type == "m.room.message"), "{events:?}");
    bridge.stop().await;
}

#[tokio::test]
async fn third_party_lookups_are_answered_by_the_connector() {
    let (store, _dir) = sqlite_store().await;
    let bridge = TestBridge::start(store, registration()).await;
    let get = |path: &str| {
        bridge.http.get(format!("{}/_matrix/app/v1/thirdparty/{path}", bridge.url)).bearer_auth(&bridge.hs_token).send()
    };
    let protocol: Value = get("protocol/test").await.unwrap().json().await.unwrap();
    assert_eq!(protocol["location_fields"], json!(["channel"]));
    let found: Value = get("location/test?channel=lobby").await.unwrap().json().await.unwrap();
    assert_eq!(found[0]["alias"], "#_test_lobby:localhost");
    let by_alias: Value = get("location?channel=lobby").await.unwrap().json().await.unwrap();
    assert_eq!(by_alias, found);
    assert_eq!(
        error_body(get("location/test?other=x").await.unwrap()).await,
        (StatusCode::NOT_FOUND, "M_NOT_FOUND".into())
    );
    assert_eq!(
        error_body(get("location/irc?channel=x").await.unwrap()).await,
        (StatusCode::NOT_FOUND, "M_NOT_FOUND".into())
    );
    assert_eq!(error_body(get("user/test?nick=x").await.unwrap()).await, (StatusCode::NOT_FOUND, "M_NOT_FOUND".into()));
    bridge.stop().await;
}

/// The bridge's `/metrics` text.
async fn metrics(bridge: &TestBridge) -> String {
    bridge.http.get(format!("{}/metrics", bridge.url)).send().await.unwrap().text().await.unwrap()
}

#[tokio::test]
async fn a_transaction_of_100_events_of_64_kib_is_accepted_and_every_event_handled() {
    let (store, _dir) = sqlite_store().await;
    let bridge = TestBridge::start(store, registration()).await;
    let room = "!large:localhost";
    // Each event just under Synapse's 64 KiB limit once the rest of the event is around its body.
    let sent: Vec<String> = (0..100).map(|n| format!("{n:03} {}", "x".repeat(64 * 1024 - 300 - 4))).collect();
    let events: Vec<Value> = sent.iter().enumerate().map(|(n, body)| message(room, &format!("${n}"), body)).collect();
    let body = json!({"events": events});
    let size = serde_json::to_vec(&body).unwrap().len();
    assert!(size > 6_500_000, "the transaction is {size} bytes");

    let response = bridge.put_transaction("large-1", &body).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.json::<Value>().await.unwrap(), json!({}));
    let handled = bridge.recorder.wait_for(100, WAIT).await;
    assert_eq!(bodies(&handled), sent, "every event, in order");
    assert!(metrics(&bridge).await.contains(r#"lattice_appservice_transactions_total{outcome="persisted"} 1"#));
    bridge.stop().await;
}

#[tokio::test]
async fn a_transaction_over_the_body_limit_is_refused_with_m_too_large_and_counted() {
    let (store, _dir) = sqlite_store().await;
    let bridge = TestBridge::start(store, registration()).await;
    let limit = lattice_bridge_core::appservice::TRANSACTION_BODY_LIMIT;
    let url = |txn_id: &str| format!("{}/_matrix/app/v1/transactions/{txn_id}", bridge.url);

    // With a Content-Length over the limit, and sent in chunks without one: both are answered, not reset.
    let declared = bridge.http.put(url("too-large-1")).bearer_auth(&bridge.hs_token).body(vec![b' '; limit + 1]);
    assert_eq!(error_body(declared.send().await.unwrap()).await, (StatusCode::PAYLOAD_TOO_LARGE, "M_TOO_LARGE".into()));
    let chunks = (0..(limit / (1 << 20) + 1)).map(|_| Ok::<_, std::io::Error>(vec![b' '; 1 << 20]));
    let streamed = bridge
        .http
        .put(url("too-large-2"))
        .bearer_auth(&bridge.hs_token)
        .body(reqwest::Body::wrap_stream(futures::stream::iter(chunks)));
    assert_eq!(error_body(streamed.send().await.unwrap()).await, (StatusCode::PAYLOAD_TOO_LARGE, "M_TOO_LARGE".into()));
    let counted = metrics(&bridge).await;
    assert!(counted.contains(r#"lattice_appservice_transactions_total{outcome="refused_too_large"} 2"#), "{counted}");

    // The bridge goes on taking transactions.
    let room = "!after:localhost";
    let after = bridge.put_transaction("after-1", &json!({"events": [message(room, "$a", "after")]})).await;
    assert_eq!(after.status(), StatusCode::OK);
    assert_eq!(bodies(&bridge.recorder.wait_for(1, WAIT).await), ["after"]);
    bridge.stop().await;
}
