//! Files linked from XMPP with XEP-0066: fetched within the size cap and uploaded to Matrix; loopback targets are
//! refused unless configured.

use std::sync::{
    Arc,
    atomic::{AtomicUsize, Ordering},
};

use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::TcpListener,
};

use crate::{
    client::{XmppClient, escape},
    fixture::{Fixture, WAIT},
    muc::join_portal,
};

const PNG: &[u8] = b"\x89PNG\r\n\x1a\nnot really a picture";

/// A tiny HTTP server on loopback: `/tea.png` is a small image, anything else 4 KiB of bytes. Counts requests.
async fn file_server() -> anyhow::Result<(String, Arc<AtomicUsize>)> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&hits);
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut request = vec![0; 4096];
                let read = socket.read(&mut request).await.unwrap_or(0);
                let request = String::from_utf8_lossy(&request[..read]);
                let (mimetype, body): (&str, Vec<u8>) = if request.starts_with("GET /tea.png ") {
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
