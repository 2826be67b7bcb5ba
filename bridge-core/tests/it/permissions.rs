//! Who may run which bot command: each command, built in or the connector's, for a user at each permission level,
//! through a real transaction and the bot's answer as the homeserver receives it. Refused commands never reach the
//! connector (matrix-appservice-irc's GHSA-3pmj-jqqp-2mj3 and GHSA-c7hh-3v6c-fj4q were such bypasses).

use std::time::Duration;

use lattice_bridge_core::{appservice::ListenerLimits, testing::FakeHomeserver};
use lattice_config::PermissionsConfig;
use serde_json::json;

use crate::support::{TestBridge, registration, sqlite_store};

const ADMIN: &str = "@admin:localhost";
const USER: &str = "@alice:localhost";
const STRANGER: &str = "@mallory:elsewhere";

/// What the sender sees in answer to a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Answer {
    /// The command ran; the answer starts so.
    Ran(&'static str),
    /// Refused: admins only.
    AdminsOnly,
    /// Refused: not a user of the bridge.
    NotAllowed,
}

#[tokio::test]
async fn each_command_runs_only_for_the_levels_it_allows() {
    let homeserver = FakeHomeserver::start().await;
    let permissions = PermissionsConfig { admins: vec![ADMIN.into()], users: vec!["*:localhost".into()] };
    let (store, _dir) = sqlite_store().await;
    let url = homeserver.url().to_string();
    let bridge = TestBridge::start_with(store, registration(), ListenerLimits::default(), &url, &permissions).await;
    let ran = |text| Answer::Ran(text);
    let cases = [
        ("help", [ran("bridge commands"), ran("bridge commands"), Answer::NotAllowed]),
        ("version", [ran("Lattice"), ran("Lattice"), Answer::NotAllowed]),
        ("portals", [ran("No bridged rooms"), Answer::AdminsOnly, Answer::NotAllowed]),
        ("userthing", [ran("ran userthing"), ran("ran userthing"), Answer::NotAllowed]),
        ("adminthing", [ran("ran adminthing"), Answer::AdminsOnly, Answer::NotAllowed]),
    ];
    let mut expected_runs = Vec::new();
    for (index, (command, answers)) in cases.iter().enumerate() {
        for (sender, answer) in [ADMIN, USER, STRANGER].into_iter().zip(answers) {
            let event_id = format!("$cmd-{index}-{}", &sender[1..4]);
            let event = json!({
                "type": "m.room.message", "room_id": "!somewhere:localhost", "sender": sender, "event_id": event_id,
                "origin_server_ts": 1_700_000_000_000u64, "content": {"msgtype": "m.text", "body": format!("!test {command}")}
            });
            let before = homeserver.messages().len();
            let response =
                bridge.put_transaction(&format!("perm-{index}-{}", &sender[1..4]), &json!({"events": [event]})).await;
            assert_eq!(response.status(), 200);
            let reply = wait_for_reply(&homeserver, before, &event_id).await;
            match answer {
                Answer::Ran(start) => assert!(reply.contains(start), "{sender} `{command}`: {reply:?}"),
                Answer::AdminsOnly => {
                    assert!(reply.contains("is for bridge admins only"), "{sender} `{command}`: {reply:?}")
                }
                Answer::NotAllowed => {
                    assert!(reply.contains("not allowed to use this bridge"), "{sender} `{command}`: {reply:?}")
                }
            }
            if matches!(answer, Answer::Ran(_)) && command.ends_with("thing") {
                expected_runs.push((sender.to_owned(), (*command).to_owned()));
            }
        }
    }
    assert_eq!(bridge.recorder.commands_run(), expected_runs, "the connector ran exactly the allowed commands");
    bridge.stop().await;
}

/// The bot's notice in reply to `event_id`: the first message after the `before` ones, waited for.
async fn wait_for_reply(homeserver: &FakeHomeserver, before: usize, event_id: &str) -> String {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(reply) = homeserver.messages().get(before) {
            return reply["body"].as_str().unwrap_or_default().to_owned();
        }
        assert!(tokio::time::Instant::now() < deadline, "no reply to {event_id}: {:?}", homeserver.messages());
        // The fake homeserver records requests as they come; there is nothing to be notified by.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
