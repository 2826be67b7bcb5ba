//! An edge handing its connections to its successor — a new `lattice-irc` binary started with
//! `edge --take-over` on the same socket — so that upgrading the edge is invisible on IRC, as irssi's `/UPGRADE`
//! keeps its server connections across a new binary.
//!
//! The successor connects and asks (`Handover`). The edge tells its bridge to attach to the successor
//! (`Moving`), freezes every connection between two lines once the server confirmed what it wrote (see
//! [`crate::conn::LocalConnection::freeze`]), and sends the successor its state: the edge's ID, each network's
//! unacknowledged events, the keys of lines the server has read, and the frozen connections. The sockets follow as
//! `SCM_RIGHTS` messages (unix(7)) once the successor is `Ready`. The edge then gives up the socket's path and
//! exits; the successor binds the path, resumes the connections and serves the bridge, which finds everything as
//! it was. TLS connections cannot be handed over (their session keys live in the TLS library): they quit, and the
//! bridge opens them again on the successor.

use std::{
    io::{IoSlice, IoSliceMut, Read as _, Write as _},
    mem::MaybeUninit,
    os::{fd::OwnedFd, unix::net::UnixStream as StdUnixStream},
    path::Path,
    sync::Arc,
};

use rustix::net::{
    RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer, SendAncillaryMessage, SendFlags,
};

use super::{Edge, lock};
use crate::{
    conn::{Frozen, LocalConnection},
    edge::{
        held::Held,
        keys::SentKeys,
        log::EventLog,
        wire::{ConnKey, HandedLog, Handing, Link, ToBridge, ToEdge, VERSION, WireError},
    },
};

/// Sockets per `SCM_RIGHTS` message (Linux takes at most 253).
const FDS_PER_MESSAGE: usize = 200;
/// The byte that follows the sockets: the old edge has let go of the socket's path.
const DONE: u8 = 0xd0;

impl Edge {
    /// Hands every connection to the successor on `link`, then lets the main loop end.
    pub(super) async fn hand_over(self: &Arc<Self>, mut link: Link) -> Result<(), WireError> {
        tracing::info!("a successor edge takes the IRC connections over");
        if self.handing_over.swap(true, std::sync::atomic::Ordering::SeqCst) {
            return Err(WireError::Closed);
        }
        if let Some(attached) = lock(&self.attached).take() {
            let _ = attached.sender.send(ToBridge::Moving);
        }
        let held: Vec<(ConnKey, Held)> = lock(&self.held).drain().collect();
        let frozen = futures::future::join_all(held.iter().map(|(_, held)| held.connection.freeze())).await;
        let (mut connections, mut sockets) = (Vec::new(), Vec::new());
        for ((key, held), frozen) in held.iter().zip(frozen) {
            match frozen {
                Some(Frozen { state, stream }) => {
                    connections.push(state);
                    sockets.push(OwnedFd::from(stream));
                }
                None => {
                    tracing::info!(network = %key.network, owner = %key.owner, "cannot hand this connection over");
                    held.connection.quit("Upgrading");
                }
            }
        }
        let networks = lock(&self.networks)
            .iter()
            .map(|(name, hold)| {
                let (last_seq, waiting) = hold.log.export();
                HandedLog { network: name.clone(), last_seq, waiting }
            })
            .collect();
        let keys = lock(&self.sent).read_keys();
        tracing::info!(connections = connections.len(), "handing over");
        let handing = Handing { edge_id: self.id, networks, keys, connections };
        link.send(&ToBridge::Handing(Box::new(handing))).await?;
        if !matches!(link.next::<ToEdge>().await?, ToEdge::Ready) {
            return Err(WireError::Closed);
        }
        let stream = link.into_std()?;
        let socket_path = stream.local_addr()?.as_pathname().map(Path::to_owned);
        tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            let mut stream = stream;
            send_sockets(&stream, &sockets)?;
            // The successor binds the path once it is free; the pid file is its to write.
            if let Some(path) = socket_path {
                std::fs::remove_file(path)?;
            }
            stream.write_all(&[DONE])
        })
        .await
        .map_err(std::io::Error::other)??;
        self.handed_over.notify_one();
        Ok(())
    }
}

/// Takes the connections over from the edge on `socket`: an edge that holds them, with its ID, logs and keys.
pub(super) async fn take_over(socket: &Path) -> std::io::Result<Arc<Edge>> {
    let mut link = Link::new(tokio::net::UnixStream::connect(socket).await?);
    let wire = |error: WireError| std::io::Error::other(error.to_string());
    link.send(&ToEdge::Handover { version: VERSION }).await.map_err(wire)?;
    let handing = match link.next::<ToBridge>().await.map_err(wire)? {
        ToBridge::Handing(handing) => handing,
        other => return Err(std::io::Error::other(format!("the edge answered the hand-over with {other:?}"))),
    };
    link.send(&ToEdge::Ready).await.map_err(wire)?;
    let stream = link.into_std()?;
    let count = handing.connections.len();
    let sockets = tokio::task::spawn_blocking(move || -> std::io::Result<Vec<OwnedFd>> {
        let mut stream = stream;
        let sockets = receive_sockets(&stream, count)?;
        let mut done = [0u8];
        stream.read_exact(&mut done)?;
        Ok(sockets)
    })
    .await
    .map_err(std::io::Error::other)??;
    let Handing { edge_id, networks, keys, connections } = *handing;
    let edge = Edge::new(edge_id, false);
    for HandedLog { network, last_seq, waiting } in networks {
        let mut hold = edge.network_hold(&network, 1);
        hold.log = EventLog::import(last_seq, waiting);
        lock(&edge.networks).insert(network, hold);
    }
    *lock(&edge.sent) = SentKeys::import(keys);
    for (state, socket) in connections.into_iter().zip(sockets) {
        edge.resume(Frozen { state, stream: socket.into() })?;
    }
    tracing::info!(connections = count, "took the IRC connections over");
    Ok(edge)
}

impl Edge {
    /// Goes on with a connection handed over by the predecessor.
    fn resume(self: &Arc<Self>, frozen: Frozen) -> std::io::Result<()> {
        let key = ConnKey::of(&frozen.state.settings);
        let forward = frozen.state.settings.forward;
        let max_concurrent = frozen.state.settings.reconnect.max_concurrent;
        let (events, connecting, traffic) = {
            let mut networks = lock(&self.networks);
            let hold =
                networks.entry(key.network.clone()).or_insert_with(|| self.network_hold(&key.network, max_concurrent));
            (hold.events.clone(), Arc::clone(&hold.connecting), hold.traffic.clone())
        };
        let mut frozen = frozen;
        frozen.state.settings.ident = self.ident.clone();
        frozen.state.settings.traffic = traffic;
        let connection = LocalConnection::resume(frozen, events, connecting)?;
        let held = Held::start(connection, key.clone(), forward, self);
        lock(&self.held).insert(key, held);
        Ok(())
    }
}

fn send_sockets(stream: &StdUnixStream, sockets: &[OwnedFd]) -> std::io::Result<()> {
    use std::os::fd::AsFd;
    for batch in sockets.chunks(FDS_PER_MESSAGE) {
        let fds: Vec<_> = batch.iter().map(AsFd::as_fd).collect();
        let mut space = vec![MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(fds.len()))];
        let mut control = SendAncillaryBuffer::new(&mut space);
        if !control.push(SendAncillaryMessage::ScmRights(&fds)) {
            return Err(std::io::Error::other("the sockets do not fit in one message"));
        }
        rustix::net::sendmsg(stream, &[IoSlice::new(&[1])], &mut control, SendFlags::empty())?;
    }
    Ok(())
}

fn receive_sockets(stream: &StdUnixStream, count: usize) -> std::io::Result<Vec<OwnedFd>> {
    let mut sockets = Vec::with_capacity(count);
    while sockets.len() < count {
        let mut space = vec![MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(FDS_PER_MESSAGE))];
        let mut control = RecvAncillaryBuffer::new(&mut space);
        let mut byte = [0u8];
        let received =
            rustix::net::recvmsg(stream, &mut [IoSliceMut::new(&mut byte)], &mut control, RecvFlags::CMSG_CLOEXEC)?;
        if received.bytes == 0 {
            return Err(std::io::Error::other("the edge closed the link before it handed every socket over"));
        }
        for message in control.drain() {
            if let RecvAncillaryMessage::ScmRights(fds) = message {
                sockets.extend(fds);
            }
        }
    }
    Ok(sockets)
}
