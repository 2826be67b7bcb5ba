//! The edge in this process against a fake IRC server: a connection opened by one bridge link is taken over by the
//! next without reconnecting, lines sent under a key already sent are not sent again, and events a bridge did not
//! acknowledge are handed to the next, named the same.

use std::time::Duration;

use tokio::{
    io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader},
    net::TcpListener,
    sync::mpsc,
};

use super::{EdgeCommand, EdgeLink, server};
use crate::{
    conn::{ConnEvent, Connection, Dialer, Settings},
    ircv3::tags,
    line::Line,
};

/// A server that registers whoever sends USER, answers PINGs and JOINs, reports every line it reads and every
/// connection it accepts, and says to the client whatever the test sends on `say`.
async fn fake_server() -> (u16, mpsc::UnboundedReceiver<String>, mpsc::UnboundedSender<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (heard, hearing) = mpsc::unbounded_channel();
    let (say, mut saying) = mpsc::unbounded_channel::<String>();
    tokio::spawn(async move {
        let (stream, _) = listener.accept().await.unwrap();
        let _ = heard.send("<connected>".to_owned());
        let (reader, mut writer) = stream.into_split();
        let mut lines = BufReader::new(reader).lines();
        loop {
            let reply = tokio::select! {
                line = lines.next_line() => {
                    let Ok(Some(line)) = line else { return };
                    let _ = heard.send(line.clone());
                    match line.split_once(' ') {
                        Some(("USER", _)) => ":srv 001 Me :Welcome\r\n".to_owned(),
                        Some(("PING", token)) => format!(":srv PONG srv {token}\r\n"),
                        Some(("JOIN", channel)) => format!(":Me!u@h JOIN {channel}\r\n"),
                        _ => continue,
                    }
                }
                said = saying.recv() => match said { Some(said) => said, None => return },
            };
            if writer.write_all(reply.as_bytes()).await.is_err() {
                return;
            }
        }
    });
    (port, hearing, say)
}

fn options(socket: &std::path::Path, take_over: bool) -> server::EdgeOptions {
    server::EdgeOptions { take_over, socket: socket.to_owned(), linger: Duration::from_secs(60), ident_bind: None }
}

/// An edge on a fresh socket, and how a bridge reaches it.
async fn edge() -> (tempfile::TempDir, EdgeCommand) {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("edge.sock");
    tokio::spawn(server::serve(options(&socket, false)));
    // The edge starts listening a moment after it is spawned.
    while !socket.exists() {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    (dir, EdgeCommand { socket, binary: "/nonexistent".into(), linger_secs: 60, ident_bind: None, log_filter: None })
}

/// A bridge's side: its link, the connection it opened, and its network's events.
async fn attach(command: &EdgeCommand, port: u16) -> (Dialer, Connection, mpsc::Receiver<ConnEvent>) {
    let link = EdgeLink::start(command.clone()).await.unwrap();
    let (events, received) = mpsc::channel(64);
    let dialer = Dialer::new("test", 1, events, Some(link));
    let connection = dialer.open(Settings::for_test(port));
    (dialer, connection, received)
}

async fn next_event(events: &mut mpsc::Receiver<ConnEvent>) -> ConnEvent {
    tokio::time::timeout(Duration::from_secs(10), events.recv()).await.unwrap().unwrap()
}

async fn next_line(heard: &mut mpsc::UnboundedReceiver<String>, wanted: impl Fn(&str) -> bool) -> String {
    loop {
        let line = tokio::time::timeout(Duration::from_secs(10), heard.recv()).await.unwrap().unwrap();
        if wanted(&line) {
            return line;
        }
    }
}

fn privmsg(text: &str) -> Line {
    Line::new("PRIVMSG", &["#c"], Some(text)).unwrap()
}

#[tokio::test]
async fn a_new_bridge_takes_over_the_connection_and_what_the_last_one_did_not_handle() {
    let (_dir, command) = edge().await;
    let (port, mut heard, say) = fake_server().await;
    let mut first = attach(&command, port).await;
    assert!(matches!(next_event(&mut first.2).await, ConnEvent::Registered { nick, .. } if nick == "Me"));
    first.0.handled_one();
    // Acknowledgements go out every 50 ms.
    tokio::time::sleep(Duration::from_millis(300)).await;

    // Sent under a key: once on IRC, read by the server.
    let keyed = first.1.send_keyed(vec![privmsg("one")], "$one", true).await.unwrap();
    keyed.read.unwrap().await.unwrap();
    next_line(&mut heard, |line| line == "PRIVMSG #c :one").await;
    // Heard from IRC and not handled by this bridge.
    say.send(":bob!b@h PRIVMSG Me :unhandled\r\n".into()).unwrap();
    let ConnEvent::Message { message, .. } = next_event(&mut first.2).await else { panic!("not a message") };
    let stamp = tags::get(&message, super::EDGE_ID_TAG).unwrap().to_owned();

    // The next bridge: the same connection, registered, and the event the first did not handle, named the same.
    let mut second = attach(&command, port).await;
    let mut replayed = Vec::new();
    while replayed.len() < 2 {
        replayed.push(next_event(&mut second.2).await);
    }
    assert!(
        matches!(&replayed[0], ConnEvent::Message { message, .. }
        if tags::get(message, super::EDGE_ID_TAG) == Some(stamp.as_str())),
        "{replayed:?}"
    );
    assert!(matches!(&replayed[1], ConnEvent::Registered { nick, .. } if nick == "Me"), "{replayed:?}");
    second.0.handled_one();
    second.0.handled_one();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(second.1.is_connected());

    // The first message again, as a restarted bridge sends what it never heard confirmed: not sent twice.
    let again = second.1.send_keyed(vec![privmsg("one")], "$one", false).await.unwrap();
    assert!(again.earlier.unwrap().await.unwrap(), "sent before, and read then");
    second.1.send_keyed(vec![privmsg("two")], "$two", true).await.unwrap().read.unwrap().await.unwrap();
    let next = next_line(&mut heard, |line| line.starts_with("PRIVMSG") || line == "<connected>").await;
    assert_eq!(next, "PRIVMSG #c :two");

    // The third bridge gets nothing the second handled: only the connection's registration again.
    let mut third = attach(&command, port).await;
    assert!(matches!(next_event(&mut third.2).await, ConnEvent::Registered { .. }));
    assert!(tokio::time::timeout(Duration::from_millis(300), third.2.recv()).await.is_err());
}

/// A successor edge takes the connection over: the server sees no new connection, the bridge finds it registered
/// and in its channel, and lines go both ways through the successor.
#[tokio::test]
async fn a_successor_edge_takes_the_connections_over_without_reconnecting() {
    let (_dir, command) = edge().await;
    let (port, mut heard, say) = fake_server().await;
    let (dialer, connection, mut events) = attach(&command, port).await;
    assert!(matches!(next_event(&mut events).await, ConnEvent::Registered { .. }));
    dialer.handled_one();
    connection.want_channel("#c");
    next_line(&mut heard, |line| line == "JOIN #c").await;
    while connection.channel_status("#c") != crate::conn::ChannelStatus::Joined {
        connection.changed(Duration::from_secs(1)).await;
    }
    connection.send_keyed(vec![privmsg("before")], "$before", true).await.unwrap().read.unwrap().await.unwrap();
    next_line(&mut heard, |line| line == "PRIVMSG #c :before").await;

    // The successor: in this test the same program, started with --take-over on the same socket.
    let successor = tokio::spawn(server::serve(options(&command.socket, true)));
    say.send(":bob!b@h PRIVMSG Me :during\r\n".into()).unwrap();
    next_privmsg(&mut events, &dialer, "during").await;
    // The bridge attaches to the successor by itself; it sends again what the old edge had read under the key.
    let mut waited = 0;
    loop {
        let sent = connection.send_keyed(vec![privmsg("before")], "$before", false).await;
        if let Ok(keyed) = sent
            && tokio::time::timeout(Duration::from_millis(500), keyed.earlier.unwrap())
                .await
                .is_ok_and(|r| r == Ok(true))
        {
            break;
        }
        waited += 1;
        assert!(waited < 40, "the bridge never reached the successor");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(!successor.is_finished());
    assert!(connection.is_connected());
    assert_eq!(connection.channel_status("#c"), crate::conn::ChannelStatus::Joined);
    connection.send_keyed(vec![privmsg("after")], "$after", true).await.unwrap().read.unwrap().await.unwrap();
    let line = next_line(&mut heard, |line| line.starts_with("PRIVMSG #c") || line == "<connected>").await;
    assert_eq!(line, "PRIVMSG #c :after", "the server saw a new connection or a line again");
    say.send(":bob!b@h PRIVMSG Me :after\r\n".into()).unwrap();
    let meanwhile = next_privmsg(&mut events, &dialer, "after").await;
    // The bridge kept the connection as it was: it did not open it again, so it did not hear it register again.
    assert!(!meanwhile.iter().any(|event| matches!(event, ConnEvent::Registered { .. })), "{meanwhile:?}");
}

/// Handles events until a private message saying `text`; the events before it.
async fn next_privmsg(events: &mut mpsc::Receiver<ConnEvent>, dialer: &Dialer, text: &str) -> Vec<ConnEvent> {
    let mut before = Vec::new();
    loop {
        let event = next_event(events).await;
        dialer.handled_one();
        if let ConnEvent::Message { message, .. } = &event
            && matches!(&message.command, irc::proto::Command::PRIVMSG(_, said) if said == text)
        {
            return before;
        }
        before.push(event);
    }
}
