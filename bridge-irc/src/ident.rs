//! The ident server (RFC 1413): an IRC server that sees a connection from us asks "who owns the connection from
//! your port A to my port B?", and we answer with the puppet's username, so the network can tell Matrix users
//! apart (and ban one without banning the bridge).

use std::{net::SocketAddr, sync::Arc, time::Duration};

use dashmap::DashMap;
use tokio::{
    io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader},
    net::{TcpListener, TcpStream},
};

/// How long a query may take to arrive.
const QUERY_TIMEOUT: Duration = Duration::from_secs(30);
/// The longest query line read (RFC 1413 queries are a few bytes).
const MAX_QUERY: u64 = 1000;

/// Our open IRC connections by local port: the remote port and the username to answer with. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub(crate) struct IdentRegistry {
    connections: Arc<DashMap<u16, (u16, String)>>,
}

/// A connection's entry in the registry, removed when dropped.
#[derive(Debug)]
pub(crate) struct IdentEntry {
    registry: IdentRegistry,
    local_port: u16,
}

impl Drop for IdentEntry {
    fn drop(&mut self) {
        self.registry.connections.remove(&self.local_port);
    }
}

impl IdentRegistry {
    /// Answers queries about the connection `local` → `remote` with `username` until the entry is dropped.
    pub(crate) fn register(&self, local: SocketAddr, remote: SocketAddr, username: &str) -> IdentEntry {
        self.connections.insert(local.port(), (remote.port(), username.to_owned()));
        IdentEntry { registry: self.clone(), local_port: local.port() }
    }

    /// The answer to one query line (without CR LF).
    fn answer(&self, query: &str) -> String {
        let ports = query
            .split_once(',')
            .and_then(|(ours, theirs)| Some((ours.trim().parse::<u16>().ok()?, theirs.trim().parse::<u16>().ok()?)));
        let Some((ours, theirs)) = ports.filter(|(ours, theirs)| *ours != 0 && *theirs != 0) else {
            return format!("{} : ERROR : INVALID-PORT", query.trim());
        };
        match self.connections.get(&ours) {
            Some(entry) if entry.0 == theirs => format!("{ours} , {theirs} : USERID : UNIX : {}", entry.1),
            _ => format!("{ours} , {theirs} : ERROR : NO-USER"),
        }
    }
}

/// Serves ident queries on `listener` until the task is dropped.
pub(crate) async fn serve(listener: TcpListener, registry: IdentRegistry) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                tokio::spawn(answer(stream, registry.clone()));
            }
            Err(error) => {
                tracing::warn!(%error, "ident: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Answers the queries of one connection, one per line.
async fn answer(stream: TcpStream, registry: IdentRegistry) {
    let (reader, mut writer) = stream.into_split();
    let mut reader = BufReader::new(reader);
    loop {
        let mut line = String::new();
        let read = tokio::time::timeout(QUERY_TIMEOUT, (&mut reader).take(MAX_QUERY).read_line(&mut line)).await;
        let Ok(Ok(1..)) = read else { return };
        let query = line.trim_end_matches(['\r', '\n']);
        let reply = registry.answer(query);
        tracing::debug!(%query, %reply, "ident");
        if writer.write_all(format!("{reply}\r\n").as_bytes()).await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_are_answered() {
        let registry = IdentRegistry::default();
        let entry = registry.register("127.0.0.1:6193".parse().unwrap(), "127.0.0.1:6667".parse().unwrap(), "alice");
        for (query, reply) in [
            ("6193, 6667", "6193 , 6667 : USERID : UNIX : alice"),
            (" 6193 ,6667 ", "6193 , 6667 : USERID : UNIX : alice"),
            ("6193, 6668", "6193 , 6668 : ERROR : NO-USER"),
            ("6194, 6667", "6194 , 6667 : ERROR : NO-USER"),
            ("0, 6667", "0, 6667 : ERROR : INVALID-PORT"),
            ("x", "x : ERROR : INVALID-PORT"),
        ] {
            assert_eq!(registry.answer(query), reply, "{query}");
        }
        drop(entry);
        assert_eq!(registry.answer("6193, 6667"), "6193 , 6667 : ERROR : NO-USER");
    }

    #[tokio::test]
    async fn a_real_connection_is_answered_over_loopback() {
        let registry = IdentRegistry::default();
        let ident = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let ident_address = ident.local_addr().unwrap();
        let server = tokio::spawn(serve(ident, registry.clone()));
        // An "IRC server" and our connection to it.
        let irc = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let ours = TcpStream::connect(irc.local_addr().unwrap()).await.unwrap();
        let _entry = registry.register(ours.local_addr().unwrap(), ours.peer_addr().unwrap(), "alice");

        // The server asks, as it would, about the connection it accepted.
        let (accepted, peer) = irc.accept().await.unwrap();
        let query = format!("{}, {}\r\n", peer.port(), accepted.local_addr().unwrap().port());
        let mut asker = TcpStream::connect(ident_address).await.unwrap();
        asker.write_all(query.as_bytes()).await.unwrap();
        asker.write_all(b"1, 2\r\n").await.unwrap();
        let mut lines = BufReader::new(asker).lines();
        let reply = lines.next_line().await.unwrap().unwrap();
        assert_eq!(reply, format!("{} : USERID : UNIX : alice", query.trim().replace(", ", " , ")));
        assert_eq!(lines.next_line().await.unwrap().unwrap(), "1 , 2 : ERROR : NO-USER");
        server.abort();
    }
}
