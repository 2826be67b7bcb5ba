//! Going on with a connection another process registered (see [`crate::conn::handover`]): a session that starts
//! registered, handles the bytes read there first, then reads on.

use std::sync::Arc;

use tokio::{io::BufReader, sync::mpsc};

use super::{READ_BUFFER, Registration, Session, Shared, Writer, lock};
use crate::{
    conn::{ConnEvent, Settings, handover::FrozenState, transport::Stream},
    ircv3::cap::CapNegotiation,
};

/// A connection that registered in another process and was handed to this one (see [`super::handover`]): its
/// state as it was, the bytes read but not handled there handled first, then on as any registered connection.
pub(in crate::conn) async fn resumed_session(
    shared: &Arc<Shared>,
    settings: &Settings,
    events: &mpsc::Sender<ConnEvent>,
    frozen: FrozenState,
    stream: tokio::net::TcpStream,
) -> std::io::Result<bool> {
    let FrozenState { server, nick, max_nick_length, caps, unread, .. } = frozen;
    let _ident = settings.ident.register(stream.local_addr()?, stream.peer_addr()?, &settings.username);
    let (reader, writer) = tokio::io::split(Box::new(stream) as Box<dyn Stream>);
    let Writer { urgent_tx, normal_tx, receipts, mut writer_task } = Writer::start(shared, settings, writer);
    if let Some(session) = lock(&shared.session).as_mut() {
        session.sender = normal_tx.clone();
        session.urgent = urgent_tx.clone();
    }
    let mut session = Session {
        shared,
        settings,
        server: &server,
        events,
        permit: None,
        urgent_tx,
        normal_tx,
        receipts,
        caps: CapNegotiation::resumed(caps),
        sasl_login: None,
        exchange: None,
        failure: None,
        registration: Registration { nick, attempt: 0, max_nick_length },
        registered: true,
        pinged: false,
        folded_nick: (String::new(), String::new()),
        writer_done: false,
    };
    session.refold_nick();
    // Whole lines first; a cut line's start waits in the line buffer for its end.
    let cut = unread.iter().rposition(|byte| *byte == b'\n').map_or(0, |end| end + 1);
    for line in unread[..cut].split_inclusive(|byte| *byte == b'\n') {
        if !session.on_line(line).await? {
            return Ok(true);
        }
    }
    let reader = BufReader::with_capacity(READ_BUFFER, reader);
    session.run(reader, unread[cut..].to_vec(), &mut writer_task).await
}
