//! The store on both backends: every test runs on SQLite and on PostgreSQL.

use lattice_bridge_core::store::{
    Cipher, Ghost, MessageMapping, Portal, QueueKind, QueuedItem, Store, TransactionOutcome,
};
use serde_json::json;
use sqlx::Connection as _;

/// Runs a test body against a fresh SQLite store and a fresh PostgreSQL database. The body gets the store and its
/// URL (to open raw connections or reopen the store).
macro_rules! on_both_backends {
    ($($name:ident => $body:expr;)*) => {
        mod sqlite {
            $(
                #[tokio::test]
                async fn $name() {
                    let dir = tempfile::tempdir().unwrap();
                    let url = format!("sqlite://{}", dir.path().join("store.db").display());
                    let store = lattice_bridge_core::store::Store::connect(&url, 4, super::cipher()).await.unwrap();
                    ($body)(store, url).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test]
                async fn $name() {
                    let database = crate::support::TestDatabase::create().await;
                    let store =
                        lattice_bridge_core::store::Store::connect(&database.url, 4, super::cipher()).await.unwrap();
                    ($body)(store.clone(), database.url.clone()).await;
                    store.close().await;
                    database.drop_database().await;
                }
            )*
        }
    };
}

fn cipher() -> Cipher {
    Cipher::new(&[7; 32])
}

fn events(items: &[(&str, &str)]) -> Vec<(String, String)> {
    items.iter().map(|(key, payload)| ((*key).to_owned(), (*payload).to_owned())).collect()
}

async fn migrations_are_idempotent(store: Store, url: String) {
    store.close().await;
    let reopened = Store::connect(&url, 2, cipher()).await.unwrap();
    reopened.ping().await.unwrap();
    reopened.close().await;
}

async fn transactions_are_recorded_once(store: Store, _url: String) {
    let mut items = Vec::new();
    let outcome = store
        .persist_transaction("t1", &events(&[("!a", "1"), ("!b", "2"), ("!a", "3")]), |handed| items = handed)
        .await
        .unwrap();
    assert_eq!(outcome, TransactionOutcome::Persisted { queued: 3 });
    let queued: Vec<(&str, &str)> = items.iter().map(|item| (item.key.as_str(), item.payload.as_str())).collect();
    assert_eq!(queued, [("!a", "1"), ("!b", "2"), ("!a", "3")]);
    assert!(items.windows(2).all(|pair| pair[0].seq < pair[1].seq), "sequence numbers rise in order: {items:?}");
    let again = store
        .persist_transaction("t1", &events(&[("!a", "9")]), |_| panic!("a transaction seen before hands nothing over"))
        .await
        .unwrap();
    assert_eq!(again, TransactionOutcome::AlreadyProcessed);
    let queue = store.queue(QueueKind::Matrix);
    let stored = queue.peek_after("!a", 0, 10).await.unwrap();
    let handed: Vec<&QueuedItem> = items.iter().filter(|item| item.key == "!a").collect();
    assert_eq!(stored.iter().collect::<Vec<_>>(), handed, "what was handed over is what the store holds");
    assert_eq!(queue.depth().await.unwrap(), 3);
    let mut keys = queue.pending_keys().await.unwrap();
    keys.sort();
    assert_eq!(keys, ["!a", "!b"]);
}

async fn large_transactions_keep_their_order(store: Store, _url: String) {
    // More rows than one multi-row statement carries: written, and removed, in three statements.
    let items: Vec<(String, String)> = (0..1200).map(|n| ("!big".to_owned(), n.to_string())).collect();
    store.persist_transaction("big", &items, drop).await.unwrap();
    let queue = store.queue(QueueKind::Matrix);
    let (mut seen, mut cursor) = (Vec::new(), 0);
    loop {
        let batch = queue.peek_after("!big", cursor, 100).await.unwrap();
        if batch.is_empty() {
            break;
        }
        for item in batch {
            seen.push(item.payload.parse::<usize>().unwrap());
            queue.complete(item.seq);
            cursor = item.seq;
        }
    }
    assert_eq!(seen, (0..1200).collect::<Vec<_>>());
    queue.settle().await.unwrap();
    assert_eq!(queue.depth().await.unwrap(), 0, "every handed-over removal is committed once settled");
}

async fn queues_complete_retry_and_dead_letter(store: Store, _url: String) {
    let queue = store.queue(QueueKind::Remote);
    let first = queue.push("net/#chan", r#"{"n":1}"#).await.unwrap();
    let second = queue.push("net/#chan", r#"{"n":2}"#).await.unwrap();
    assert!(second > first);
    let items = queue.peek_after("net/#chan", 0, 10).await.unwrap();
    assert_eq!(items.len(), 2);
    assert_eq!(queue.record_failure(first).await.unwrap(), 1);
    assert_eq!(queue.record_failure(first).await.unwrap(), 2);
    queue.dead_letter(&items[0], "refused").await.unwrap();
    queue.complete(second);
    queue.settle().await.unwrap();
    assert_eq!(queue.depth().await.unwrap(), 0);
    let dead = queue.dead_letters(10).await.unwrap();
    assert_eq!(dead, [("net/#chan".to_owned(), r#"{"n":1}"#.to_owned(), "refused".to_owned())]);
    assert!(store.queue(QueueKind::Matrix).dead_letters(10).await.unwrap().is_empty());
}

async fn concurrent_pushes_commit_together_and_keep_order_per_key(store: Store, _url: String) {
    let queue = store.queue(QueueKind::Remote);
    let pushers: Vec<_> = (0..8)
        .map(|pusher| {
            let queue = queue.clone();
            tokio::spawn(async move {
                let mut seqs = Vec::new();
                for n in 0..25 {
                    seqs.push(queue.push(&format!("portal-{pusher}"), &format!("{pusher}:{n}")).await.unwrap());
                }
                seqs
            })
        })
        .collect();
    let mut all = Vec::new();
    for pusher in pushers {
        let seqs = pusher.await.unwrap();
        assert!(seqs.windows(2).all(|pair| pair[0] < pair[1]), "one pusher's items keep their order: {seqs:?}");
        all.extend(seqs);
    }
    all.sort_unstable();
    all.dedup();
    assert_eq!(all.len(), 200, "every push got its own sequence number");
    for pusher in 0..8 {
        let payloads: Vec<String> = queue
            .peek_after(&format!("portal-{pusher}"), 0, 100)
            .await
            .unwrap()
            .into_iter()
            .map(|item| item.payload)
            .collect();
        let expected: Vec<String> = (0..25).map(|n| format!("{pusher}:{n}")).collect();
        assert_eq!(payloads, expected);
    }
}

async fn portals_map_both_ways(store: Store, _url: String) {
    let portal = Portal {
        remote_key: "libera/#rust".into(),
        room_id: "!rust:hs".into(),
        alias: Some("#irc_libera_#rust:hs".into()),
        name: Some("#rust".into()),
        topic: None,
        metadata: json!({"network": "libera"}),
    };
    store.upsert_portal(&portal).await.unwrap();
    assert_eq!(store.portal_by_key("libera/#rust").await.unwrap(), Some(portal.clone()));
    assert_eq!(store.portal_by_room("!rust:hs").await.unwrap(), Some(portal.clone()));
    store.set_portal_topic("libera/#rust", Some("Rust!")).await.unwrap();
    assert_eq!(store.portal_by_room("!rust:hs").await.unwrap().unwrap().topic.as_deref(), Some("Rust!"));
    assert_eq!(store.portals().await.unwrap().len(), 1);
    assert!(store.delete_portal("libera/#rust").await.unwrap());
    assert!(!store.delete_portal("libera/#rust").await.unwrap());
    assert_eq!(store.portal_by_room("!rust:hs").await.unwrap(), None);
}

async fn ghosts_follow_their_remote_identity(store: Store, _url: String) {
    let ghost = Ghost {
        user_id: "@irc_libera_bob:hs".into(),
        remote_id: "libera/account:bob".into(),
        displayname: Some("bob".into()),
        avatar_url: None,
        metadata: json!({}),
    };
    store.upsert_ghost(&ghost).await.unwrap();
    assert_eq!(store.ghost_by_remote("libera/account:bob").await.unwrap(), Some(ghost.clone()));
    let renamed = Ghost { user_id: "@irc_libera_robert:hs".into(), displayname: Some("robert".into()), ..ghost };
    store.upsert_ghost(&renamed).await.unwrap();
    assert_eq!(store.ghost_by_remote("libera/account:bob").await.unwrap(), Some(renamed));
    assert_eq!(store.ghost_by_user("@irc_libera_bob:hs").await.unwrap(), None);
}

async fn messages_map_both_ways(store: Store, _url: String) {
    for remote_id in ["line-1", "line-2"] {
        let mapping = MessageMapping {
            event_id: "$split".into(),
            room_id: "!r".into(),
            portal_key: "p".into(),
            remote_id: remote_id.into(),
        };
        store.map_message(mapping.clone());
        store.map_message(mapping);
    }
    let remotes: Vec<String> =
        store.remotes_for_event("$split").await.unwrap().into_iter().map(|mapping| mapping.remote_id).collect();
    assert_eq!(remotes, ["line-1", "line-2"]);
    assert_eq!(store.event_for_remote("p", "line-2").await.unwrap().as_deref(), Some("$split"));
    assert_eq!(store.event_for_remote("other", "line-2").await.unwrap(), None);
    assert_eq!(store.remote_id_by_suffix("p", "-2").await.unwrap().as_deref(), Some("line-2"));
    assert_eq!(store.remote_id_by_suffix("p", "xline-2").await.unwrap(), None);
    assert_eq!(store.remote_id_by_suffix("other", "-2").await.unwrap(), None);
}

async fn remote_aliases_resolve(store: Store, _url: String) {
    store.alias_remote("p", "origin-1", "stanza-1");
    store.alias_remote("p", "origin-1", "stanza-2");
    store.alias_remote("p", "same", "same");
    assert_eq!(store.resolve_remote("p", "origin-1").await.unwrap(), "stanza-1", "the first record stays");
    assert_eq!(store.resolve_remote("p", "stanza-1").await.unwrap(), "stanza-1");
    assert_eq!(store.resolve_remote("other", "origin-1").await.unwrap(), "origin-1");
    assert_eq!(store.remote_aliases("p", "stanza-1").await.unwrap(), ["origin-1"]);
    assert!(store.remote_aliases("p", "same").await.unwrap().is_empty());
    // A remote ID used again maps to the latest event.
    for event_id in ["$first", "$second"] {
        let mapping = MessageMapping {
            event_id: event_id.into(),
            room_id: "!r".into(),
            portal_key: "p".into(),
            remote_id: "r".into(),
        };
        store.map_message(mapping);
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    assert_eq!(store.event_for_remote("p", "r").await.unwrap().as_deref(), Some("$second"));
}

async fn reaction_sets_are_replaced_whole(store: Store, _url: String) {
    assert!(store.reactions("p", "m", "@a:hs").await.unwrap().is_empty());
    let keys = |keys: &[&str]| keys.iter().map(|key| (*key).to_owned()).collect::<Vec<_>>();
    store.set_reactions("p", "m", "@a:hs", &keys(&["👍", "❤️", "bad\nkey"])).await.unwrap();
    assert_eq!(store.reactions("p", "m", "@a:hs").await.unwrap(), ["👍", "❤️"]);
    assert!(store.reactions("p", "m", "@b:hs").await.unwrap().is_empty());
    store.set_reactions("p", "m", "@a:hs", &keys(&["❤️"])).await.unwrap();
    assert_eq!(store.reactions("p", "m", "@a:hs").await.unwrap(), ["❤️"]);
    store.set_reactions("p", "m", "@a:hs", &[]).await.unwrap();
    assert!(store.reactions("p", "m", "@a:hs").await.unwrap().is_empty());
}

async fn credentials_are_encrypted_at_rest(store: Store, url: String) {
    store.store_credential("@alice:hs", "libera", "correct horse battery staple").await.unwrap();
    assert_eq!(store.credential("@alice:hs", "libera").await.unwrap().as_deref(), Some("correct horse battery staple"));
    let mut raw = sqlx::AnyConnection::connect(&url).await.unwrap();
    let sealed: String = sqlx::query_scalar("SELECT sealed FROM credentials").fetch_one(&mut raw).await.unwrap();
    assert!(!sealed.contains("horse"), "stored in the clear: {sealed}");
    raw.close().await.unwrap();
    let other_key = Store::connect(&url, 1, Cipher::new(&[8; 32])).await.unwrap();
    assert!(other_key.credential("@alice:hs", "libera").await.is_err(), "another key must not open it");
    assert!(store.delete_credential("@alice:hs", "libera").await.unwrap());
    assert_eq!(store.credential("@alice:hs", "libera").await.unwrap(), None);
}

async fn settings_and_admin_rooms(store: Store, _url: String) {
    store.set_user_setting("@a:hs", "nick", Some("alice")).await.unwrap();
    store.set_user_setting("@a:hs", "nick", Some("alice2")).await.unwrap();
    assert_eq!(store.user_setting("@a:hs", "nick").await.unwrap().as_deref(), Some("alice2"));
    store.set_user_setting("@a:hs", "nick", None).await.unwrap();
    assert_eq!(store.user_setting("@a:hs", "nick").await.unwrap(), None);
    store.set_admin_room("@a:hs", "!dm1").await.unwrap();
    store.set_admin_room("@a:hs", "!dm2").await.unwrap();
    assert_eq!(store.admin_room("@a:hs").await.unwrap().as_deref(), Some("!dm2"));
    assert_eq!(store.admin_room_owner("!dm2").await.unwrap().as_deref(), Some("@a:hs"));
    assert_eq!(store.admin_room_owner("!dm1").await.unwrap(), None);
}

/// The SQLite log starts over while writes go on: the number of frames in it (`mxFrame` in the wal-index header,
/// at byte 16 of the `-shm` file) falls back. A checkpoint that ran beside the writers never let it.
#[tokio::test]
async fn the_sqlite_log_starts_over_under_steady_writes() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("store.db").display());
    let store = Store::connect(&url, 4, cipher()).await.unwrap();
    let queue = store.queue(QueueKind::Remote);
    let writer = tokio::spawn({
        let queue = queue.clone();
        async move {
            let payload = "x".repeat(500);
            for n in 0.. {
                let seq = queue.push(&format!("portal-{}", n % 7), &payload).await.unwrap();
                queue.complete(seq);
                if n % 50 == 0 {
                    tokio::task::yield_now().await;
                }
            }
        }
    });
    let shm = dir.path().join("store.db-shm");
    let frames = || {
        let header = std::fs::read(&shm).unwrap_or_default();
        header.get(16..20).map_or(0, |bytes| u32::from_ne_bytes(bytes.try_into().unwrap()))
    };
    let (mut peak, mut started_over) = (0, false);
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(3);
    while !started_over && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        let now = frames();
        started_over = now < peak;
        peak = peak.max(now);
    }
    writer.abort();
    assert!(peak > 0, "writes reached the log");
    assert!(started_over, "the log never started over in 3 s of writes; it reached {peak} frames");
}

on_both_backends! {
    migrations_run_again_without_harm => super::migrations_are_idempotent;
    transactions_are_recorded_once => super::transactions_are_recorded_once;
    large_transactions_keep_their_order => super::large_transactions_keep_their_order;
    queues_complete_retry_and_dead_letter => super::queues_complete_retry_and_dead_letter;
    concurrent_pushes_commit_together_and_keep_order_per_key =>
        super::concurrent_pushes_commit_together_and_keep_order_per_key;
    portals_map_both_ways => super::portals_map_both_ways;
    ghosts_follow_their_remote_identity => super::ghosts_follow_their_remote_identity;
    messages_map_both_ways => super::messages_map_both_ways;
    remote_aliases_resolve => super::remote_aliases_resolve;
    reaction_sets_are_replaced_whole => super::reaction_sets_are_replaced_whole;
    credentials_are_encrypted_at_rest => super::credentials_are_encrypted_at_rest;
    settings_and_admin_rooms => super::settings_and_admin_rooms;
}
