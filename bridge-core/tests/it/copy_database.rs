//! `copy-database`: an SQLite store filled through the store's API moves to a fresh PostgreSQL database, and the
//! PostgreSQL store then holds the same portals, ghosts, message map, settings, media, sealed passwords (opened with
//! the same key file), queued events in order and dead letters; new rows get keys after the copied ones; a second
//! copy into the now filled database is refused.

use lattice_bridge_core::{
    cli::copy_database,
    store::{Cipher, Ghost, MessageMapping, Portal, PublishedMedia, QueueKind, Store},
};
use serde_json::json;

use crate::support::TestDatabase;

fn portal() -> Portal {
    Portal {
        remote_key: "libera/#lattice".into(),
        room_id: "!portal:localhost".into(),
        alias: Some("#irc_libera_#lattice:localhost".into()),
        name: Some("#lattice".into()),
        topic: None,
        metadata: json!({"modes": "+nt"}),
    }
}

fn ghost() -> Ghost {
    Ghost {
        user_id: "@irc_libera_bob:localhost".into(),
        remote_id: "libera/bob".into(),
        displayname: Some("bob (IRC)".into()),
        avatar_url: None,
        metadata: json!({}),
    }
}

fn mapping() -> MessageMapping {
    MessageMapping {
        event_id: "$event".into(),
        room_id: "!portal:localhost".into(),
        portal_key: "libera/#lattice".into(),
        remote_id: "msgid-1".into(),
    }
}

/// An SQLite store with a row in every kind of table, closed as a stopped bridge leaves it.
async fn filled_sqlite_store(dir: &std::path::Path) -> String {
    let url = format!("sqlite://{}", dir.join("lattice.db").display());
    let store = Store::open(&url, 4, &dir.join("lattice.key")).await.unwrap();
    store.upsert_portal(&portal()).await.unwrap();
    store.upsert_ghost(&ghost()).await.unwrap();
    store.record_delivery(mapping()).await.unwrap();
    store.alias_remote("libera/#lattice", "label-1", "msgid-1");
    store.store_credential("@alice:localhost", "libera", "hunter2").await.unwrap();
    store.set_user_setting("@alice:localhost", "nick", Some("alice_m")).await.unwrap();
    store.set_admin_room("@alice:localhost", "!admin:localhost").await.unwrap();
    let media = PublishedMedia { mxc: "mxc://localhost/abc".into(), filename: "a.png".into(), mimetype: None };
    store.publish_media("token", &media).await.unwrap();
    let events: Vec<(String, String)> = (0..1_500).map(|n| ("!portal:localhost".into(), format!("{n}"))).collect();
    store.persist_transaction("txn-1", &events, drop).await.unwrap();
    let remote = store.queue(QueueKind::Remote);
    let failed = remote.push("libera/#lattice", "refused").await.unwrap();
    let item = remote.peek_after("libera/#lattice", failed - 1, 1).await.unwrap().remove(0);
    remote.dead_letter(&item, "M_FORBIDDEN").await.unwrap();
    remote.push("libera/#lattice", "waiting").await.unwrap();
    store.queue(QueueKind::Matrix).await_commits().await.unwrap();
    remote.settle().await.unwrap();
    store.close().await;
    url
}

#[tokio::test]
async fn an_sqlite_store_moves_to_postgresql_with_everything_in_it() {
    let dir = tempfile::tempdir().unwrap();
    let sqlite = filled_sqlite_store(dir.path()).await;
    let key_file = dir.path().join("lattice.key");
    let database = TestDatabase::create().await;

    let report = copy_database(&sqlite, &database.url, &key_file).await.unwrap();
    assert_eq!(report["portals"], 1, "{report:?}");
    assert_eq!(report["matrix_queue"], 1_500, "{report:?}");
    assert_eq!(report["remote_queue"], 1, "{report:?}");
    assert_eq!(report["dead_letters"], 1, "{report:?}");
    assert_eq!(report["credentials"], 1, "{report:?}");
    assert_eq!(report["processed_transactions"], 1, "{report:?}");

    let store = Store::open(&database.url, 4, &key_file).await.unwrap();
    assert_eq!(store.portal_by_key("libera/#lattice").await.unwrap(), Some(portal()));
    assert_eq!(store.ghost_by_user("@irc_libera_bob:localhost").await.unwrap(), Some(ghost()));
    assert!(store.was_delivered("$event").await.unwrap());
    assert_eq!(store.resolve_remote("libera/#lattice", "label-1").await.unwrap(), "msgid-1");
    assert_eq!(store.credential("@alice:localhost", "libera").await.unwrap().as_deref(), Some("hunter2"));
    assert_eq!(store.user_setting("@alice:localhost", "nick").await.unwrap().as_deref(), Some("alice_m"));
    assert_eq!(store.admin_room("@alice:localhost").await.unwrap().as_deref(), Some("!admin:localhost"));
    assert_eq!(store.published_media("token").await.unwrap().map(|media| media.filename), Some("a.png".into()));
    let dead = store.queue(QueueKind::Remote).dead_letters(10).await.unwrap();
    assert_eq!(dead.len(), 1, "{dead:?}");

    // Queued events are still there, in order, and new ones come after them.
    let matrix = store.queue(QueueKind::Matrix);
    let (mut seen, mut cursor) = (Vec::new(), 0);
    loop {
        let batch = matrix.peek_after("!portal:localhost", cursor, 500).await.unwrap();
        let Some(last) = batch.last() else { break };
        cursor = last.seq;
        seen.extend(batch.iter().map(|item| item.payload.parse::<usize>().unwrap()));
    }
    assert_eq!(seen, (0..1_500).collect::<Vec<_>>());
    let next = matrix.push("!portal:localhost", "after the move").await.unwrap();
    assert!(next > cursor, "a new item's sequence number {next} follows the copied {cursor}");
    let remote = store.queue(QueueKind::Remote);
    let item = remote.peek_after("libera/#lattice", 0, 10).await.unwrap().remove(0);
    remote.dead_letter(&item, "another failure").await.unwrap();
    assert_eq!(remote.dead_letters(10).await.unwrap().len(), 2, "a new dead letter gets a key of its own");
    store.close().await;

    let again = copy_database(&sqlite, &database.url, &key_file).await.unwrap_err();
    assert!(format!("{again:#}").contains("already holds"), "{again:#}");
    // A store without its key file is not moved: its sealed passwords could never be opened again.
    let other = TestDatabase::create().await;
    let keyless = copy_database(&sqlite, &other.url, &dir.path().join("missing.key")).await.unwrap_err();
    assert!(format!("{keyless:#}").contains("no key file"), "{keyless:#}");
    database.drop_database().await;
    other.drop_database().await;
}

#[tokio::test]
async fn only_an_existing_sqlite_store_moves_to_postgresql() {
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("lattice.key");
    Cipher::load_or_create(&key_file).unwrap();
    let missing = format!("sqlite://{}", dir.path().join("none.db").display());
    let error = copy_database(&missing, "postgres://localhost/x", &key_file).await.unwrap_err();
    assert!(format!("{error:#}").contains("no SQLite store at"), "{error:#}");
    assert!(!dir.path().join("none.db").exists(), "a missing store is not created");
    let error = copy_database("postgres://localhost/a", "postgres://localhost/b", &key_file).await.unwrap_err();
    assert!(format!("{error:#}").contains("not an SQLite store"), "{error:#}");
    let error = copy_database(&missing, "sqlite://other.db", &key_file).await.unwrap_err();
    assert!(format!("{error:#}").contains("--to must be"), "{error:#}");
}
