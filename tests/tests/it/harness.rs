//! The harness itself: a real Synapse starts, users register, and messages, invites, state and
//! media go between them as a Matrix client sees them.

use std::time::Duration;

use lattice_e2e::{MatrixError, Synapse};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(20);

#[tokio::test]
async fn a_message_sent_by_one_user_reaches_another() -> anyhow::Result<()> {
    let synapse = Synapse::start(&[]).await?;
    let alice = synapse.register_user("alice", false).await?;
    let bob = synapse.register_user("bob", false).await?;
    assert_eq!(alice.user_id(), "@alice:localhost");

    let room = alice.create_room(json!({ "preset": "public_chat" })).await?;
    assert_eq!(bob.join(&room).await?, room);

    let sent = alice.send_text(&room, "hello from alice").await?;
    let seen = bob.wait_for_message(&room, WAIT, "hello from alice").await?;
    assert_eq!(seen["event_id"], sent.as_str());
    assert_eq!(seen["sender"], "@alice:localhost");
    assert_eq!(seen["content"]["msgtype"], "m.text");

    bob.send_text(&room, "hello from bob").await?;
    let seen = alice.wait_for_message(&room, WAIT, "hello from bob").await?;
    assert_eq!(seen["sender"], "@bob:localhost");
    Ok(())
}

#[tokio::test]
async fn invites_state_aliases_and_media_work() -> anyhow::Result<()> {
    let synapse = Synapse::start(&[]).await?;
    let admin = synapse.register_user("admin", true).await?;
    let carol = synapse.register_user("carol", false).await?;

    let room = admin.create_room(json!({ "preset": "private_chat", "room_alias_name": "harness" })).await?;
    assert_eq!(admin.resolve_alias("#harness:localhost").await?.as_deref(), Some(room.as_str()));
    assert_eq!(admin.resolve_alias("#nowhere:localhost").await?, None);

    admin.invite(&room, carol.user_id()).await?;
    assert_eq!(carol.wait_for_invite(WAIT).await?, room);
    carol.join("#harness:localhost").await?;
    assert_eq!(admin.joined_members(&room).await?, ["@admin:localhost", "@carol:localhost"]);

    admin.send_state(&room, "m.room.topic", "", json!({ "topic": "harness topic" })).await?;
    let topic = carol.wait_for_event(&room, WAIT, |e| e["type"] == "m.room.topic").await?;
    assert_eq!(topic["content"]["topic"], "harness topic");
    assert_eq!(carol.get_state(&room, "m.room.topic", "").await?, Some(json!({ "topic": "harness topic" })));
    assert_eq!(carol.get_state(&room, "org.lattice.none", "").await?, None);

    let bytes = b"\x89PNG not really".to_vec();
    let mxc = carol.upload(bytes.clone(), "image/png", "picture.png").await?;
    assert!(mxc.starts_with("mxc://localhost/"), "{mxc}");
    assert_eq!(admin.download(&mxc).await?, bytes);

    // Errors carry the HTTP status and the Matrix errcode.
    let error = carol
        .send_state(&room, "m.room.power_levels", "", json!({}))
        .await
        .expect_err("carol may not change power levels");
    let matrix = error.downcast_ref::<MatrixError>().expect("a Matrix error");
    assert_eq!((matrix.status, matrix.errcode.as_deref()), (403, Some("M_FORBIDDEN")));

    carol.leave(&room).await?;
    admin
        .wait_for_event(&room, WAIT, |e| {
            e["type"] == "m.room.member"
                && e["state_key"] == "@carol:localhost"
                && e["content"]["membership"] == "leave"
        })
        .await?;
    Ok(())
}
