//! Files linked from XMPP with XEP-0066: fetched within the size cap and uploaded to Matrix, without holding up
//! other rooms; loopback targets are refused unless configured. Files both ways in gateway MUCs.

use std::sync::{
    Arc,
    atomic::{AtomicUsize, Ordering},
};

use anyhow::Context as _;
use lattice_e2e::{HomeserverKind, homeserver_tests};
use serde_json::json;
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::TcpListener,
    sync::Notify,
};

use crate::{
    client::{XmppClient, escape},
    fixture::{Fixture, WAIT},
    muc::{join_portal, xavier_and_alice_in_portal},
};

homeserver_tests!(files_reach_gateway_mucs_both_ways);

const PNG: &[u8] = b"\x89PNG\r\n\x1a\nnot really a picture";

/// A tiny HTTP server on loopback: `/tea.png` is a small image, `/gated.png` the same image once `gate` is
/// notified, anything else 4 KiB of bytes. Counts requests.
async fn file_server() -> anyhow::Result<(String, Arc<AtomicUsize>)> {
    gated_file_server(Arc::new(Notify::new())).await
}

async fn gated_file_server(gate: Arc<Notify>) -> anyhow::Result<(String, Arc<AtomicUsize>)> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&hits);
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
            let gate = Arc::clone(&gate);
            tokio::spawn(async move {
                let mut request = vec![0; 4096];
                let read = socket.read(&mut request).await.unwrap_or(0);
                let request = String::from_utf8_lossy(&request[..read]);
                if request.starts_with("GET /gated.png ") {
                    gate.notified().await;
                }
                let (mimetype, body): (&str, Vec<u8>) =
                    if request.starts_with("GET /tea.png ") || request.starts_with("GET /gated.png ") {
                        ("image/png", PNG.to_vec())
                    } else {
                        ("application/octet-stream", vec![7; 4096])
                    };
                let head = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: {mimetype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                );
                let _ = socket.write_all(head.as_bytes()).await;
                let _ = socket.write_all(&body).await;
            });
        }
    });
    Ok((base, hits))
}

async fn send_oob(xmpp: &mut XmppClient, room: &str, url: &str) -> anyhow::Result<()> {
    xmpp.send_raw(&format!(
        "<message type='groupchat' to='{}' id='oob-{:x}'><body>{url}</body><x xmlns='jabber:x:oob'><url>{url}</url></x></message>",
        escape(room),
        rand::random::<u64>(),
        url = escape(url)
    ))
    .await
}

#[tokio::test]
async fn xmpp_files_are_uploaded_to_matrix_within_the_cap() -> anyhow::Result<()> {
    let fixture = Fixture::start_with(|section| {
        section.media.allow_private_targets = true;
        section.media.max_download_bytes = 1024;
    })
    .await?;
    let (base, _) = file_server().await?;
    let room = "files@conference.localhost";
    let mut xavier = fixture.xmpp_user("xavier").await?;
    xavier.join_muc(room, "Xavier").await?;
    let alice = fixture.matrix_user("alice").await?;
    let room_id = join_portal(&alice, &mut xavier, room, "Xavier").await?;

    send_oob(&mut xavier, room, &format!("{base}/tea.png")).await?;
    let image = alice.wait_for_event(&room_id, WAIT, |event| event["content"]["msgtype"] == "m.image").await?;
    assert_eq!(image["content"]["body"], "tea.png");
    assert_eq!(image["content"]["info"]["mimetype"], "image/png");
    let mxc = image["content"]["url"].as_str().unwrap_or_default();
    assert_eq!(alice.download(mxc).await?, PNG);

    // Over the cap: the link reaches Matrix as text instead of vanishing.
    let big = format!("{base}/big.bin");
    send_oob(&mut xavier, room, &big).await?;
    let text = alice.wait_for_message(&room_id, WAIT, &big).await?;
    assert_eq!(text["content"]["msgtype"], "m.text");
    Ok(())
}

#[tokio::test]
async fn xmpp_links_to_loopback_are_not_fetched_by_default() -> anyhow::Result<()> {
    let fixture = Fixture::start().await?;
    let (base, hits) = file_server().await?;
    let room = "nofetch@conference.localhost";
    let mut xavier = fixture.xmpp_user("xavier").await?;
    xavier.join_muc(room, "Xavier").await?;
    let alice = fixture.matrix_user("alice").await?;
    let room_id = join_portal(&alice, &mut xavier, room, "Xavier").await?;

    let url = format!("{base}/tea.png");
    send_oob(&mut xavier, room, &url).await?;
    let text = alice.wait_for_message(&room_id, WAIT, &url).await?;
    assert_eq!(text["content"]["msgtype"], "m.text");
    assert_eq!(hits.load(Ordering::SeqCst), 0, "the bridge fetched from a loopback address");
    Ok(())
}

#[tokio::test]
async fn a_slow_download_holds_up_its_room_only() -> anyhow::Result<()> {
    let fixture = Fixture::start_with(|section| {
        section.media.allow_private_targets = true;
        // Longer than any wait below: the download ends only when the test lets it.
        section.media.download_timeout_secs = 600;
    })
    .await?;
    let gate = Arc::new(Notify::new());
    let (base, _) = gated_file_server(Arc::clone(&gate)).await?;
    let (slow, quick) = ("slowfiles@conference.localhost", "quick@conference.localhost");
    let (mut xavier, alice, slow_id) = xavier_and_alice_in_portal(&fixture, slow).await?;
    xavier.join_muc(quick, "Xavier").await?;
    let quick_id = join_portal(&alice, &mut xavier, quick, "Xavier").await?;

    send_oob(&mut xavier, slow, &format!("{base}/gated.png")).await?;
    xavier.send_groupchat(slow, "after the file").await?;
    xavier.send_groupchat(quick, "meanwhile").await?;
    // The other room goes on while the file is still downloading.
    alice.wait_for_message(&quick_id, WAIT, "meanwhile").await?;
    gate.notify_one();
    // Its own room keeps its order: the file, then what was said after it.
    let is_message = |event: &serde_json::Value| event["type"] == "m.room.message";
    let first = alice.wait_for_event(&slow_id, WAIT, is_message).await?;
    assert_eq!(first["content"]["msgtype"], "m.image", "{first}");
    let second = alice.wait_for_event(&slow_id, WAIT, is_message).await?;
    assert_eq!(second["content"]["body"], "after the file", "{second}");
    Ok(())
}

async fn files_reach_gateway_mucs_both_ways(homeserver: HomeserverKind) -> anyhow::Result<()> {
    let fixture = Fixture::on_homeserver_with(homeserver, |section| section.media.allow_private_targets = true).await?;
    let (base, _) = file_server().await?;
    let alice = fixture.matrix_user("alice").await?;
    let room_id = alice.create_room(json!({"preset": "public_chat", "room_alias_name": "pantry"})).await?;
    let room = "#pantry#localhost@bridge.localhost";
    let mut xavier = fixture.xmpp_user("xavier").await?;
    xavier.join_muc(room, "Xavier").await?;

    // Matrix → XMPP: a XEP-0066 link to the bridge's media endpoint, which serves the file.
    let mxc = alice.upload(b"tea leaves".to_vec(), "text/plain", "leaves.txt").await?;
    alice
        .send_message(
            &room_id,
            json!({"msgtype": "m.file", "body": "leaves.txt", "url": mxc, "info": {"mimetype": "text/plain"}}),
        )
        .await?;
    let (nick, url, stanza) = xavier.wait_for_groupchat(room, WAIT, |body| body.contains("/_lattice/media/")).await?;
    assert_eq!(nick, "alice");
    let oob = stanza.get_child("x", "jabber:x:oob").context("no XEP-0066 payload")?;
    assert_eq!(oob.get_child("url", "jabber:x:oob").map(|url| url.text()), Some(url.clone()));
    let fetched = reqwest::Client::builder().no_proxy().build()?.get(&url).send().await?.bytes().await?;
    assert_eq!(&fetched[..], b"tea leaves");

    // XMPP → Matrix: the linked file is downloaded and uploaded to the room, from Xavier's ghost.
    send_oob(&mut xavier, room, &format!("{base}/tea.png")).await?;
    let image = alice.wait_for_event(&room_id, WAIT, |event| event["content"]["msgtype"] == "m.image").await?;
    assert_eq!(image["sender"], "@_xmpp_xavier=40localhost:localhost");
    assert_eq!(alice.download(image["content"]["url"].as_str().unwrap_or_default()).await?, PNG);
    Ok(())
}
