//! One connection attempt, from connect to close: registration (`CAP LS 302`, SASL before `CAP END`, nick retries,
//! NickServ after), then the read loop — whole lines out of a small buffer, `PING` on silence, our own JOIN, PART,
//! KICK and NICK kept in the connection's state — handing the owner what it wants (see [`super::forward`]).

use std::{
    str::FromStr,
    sync::{Arc, Mutex},
    time::Duration,
};

use irc::proto::{Command, Message, Prefix, Response};
use tokio::{
    io::{AsyncBufReadExt, AsyncReadExt, BufReader, ReadHalf},
    sync::{OwnedSemaphorePermit, Semaphore, mpsc},
    task::JoinHandle,
};

use super::{
    ConnEvent, Forward, Login, MAX_READ_LINE, Outgoing, READ_BUFFER, READ_IDLE, REGISTER_TIMEOUT, SessionHandle,
    Settings, Shared,
    forward::{is_others_channel_chatter, join_lines, wants},
    handover::{Frozen, FrozenState},
    lock,
    transport::{Stream, connect},
    writer::{WriteHalf, write_lines},
};
use crate::{
    config::{AuthMethod, ServerConfig},
    ids::{casefold, casefolds_to, next_nick},
    ircv3::{
        cap::{CapNegotiation, CapStep},
        sasl::{self, Exchange, SaslError},
    },
    line::{Line, LineError, worst_case_prefix},
    receipt::Receipts,
};

/// Registration progress of one connection attempt.
struct Registration {
    nick: String,
    attempt: u32,
    max_nick_length: usize,
}

mod resume;

pub(super) use self::resume::resumed_session;

/// What reading the next line came to.
enum Read {
    /// A whole line is in the buffer.
    Line,
    /// Nothing to hand on yet (a PING went out, or only part of a line came).
    Again,
    /// The connection ended, cleanly or not: `Ok(true)` if it had registered.
    Ended(std::io::Result<bool>),
    /// The writer stopped for a handover and gave its half back.
    WriterFrozen(WriteHalf),
}

/// A session's writing half at work, and the queues into it.
struct Writer {
    urgent_tx: mpsc::Sender<Line>,
    normal_tx: mpsc::Sender<Outgoing>,
    receipts: Arc<Mutex<Receipts>>,
    writer_task: JoinHandle<std::io::Result<Option<WriteHalf>>>,
}

impl Writer {
    /// Starts writing to `writer`: urgent lines first, the rest through the flood bucket (see [`write_lines`]).
    fn start(shared: &Shared, settings: &Settings, writer: WriteHalf) -> Self {
        let (urgent_tx, urgent_rx) = mpsc::channel::<Line>(256);
        let (normal_tx, normal_rx) = mpsc::channel::<Outgoing>(64);
        let receipts = Arc::new(Mutex::new(Receipts::default()));
        let frozen = shared.freeze.subscribe();
        let traffic = settings.traffic.clone();
        let writer_task = tokio::spawn(write_lines(
            writer,
            urgent_rx,
            normal_rx,
            settings.flood,
            Arc::clone(&receipts),
            frozen,
            traffic,
        ));
        Self { urgent_tx, normal_tx, receipts, writer_task }
    }
}

/// How long a frozen connection waits for the server to confirm the lines it wrote before it is handed over.
const DRAIN: Duration = Duration::from_secs(3);

/// One connection attempt's state.
struct Session<'a> {
    shared: &'a Arc<Shared>,
    settings: &'a Settings,
    server: &'a ServerConfig,
    events: &'a mpsc::Sender<ConnEvent>,
    /// The turn to register, given back once registered (the network caps how many register at once).
    permit: Option<OwnedSemaphorePermit>,
    urgent_tx: mpsc::Sender<Line>,
    normal_tx: mpsc::Sender<Outgoing>,
    receipts: Arc<Mutex<Receipts>>,
    caps: CapNegotiation,
    sasl_login: Option<&'a Login>,
    exchange: Option<Exchange>,
    /// Why we ended a SASL exchange ourselves (a wrong SCRAM signature), reported with the server's answer.
    failure: Option<SaslError>,
    registration: Registration,
    registered: bool,
    pinged: bool,
    /// Our nick and its casefolded form, for telling our own lines from others'; folded again only when it changes.
    folded_nick: (String, String),
    /// The writer has ended (its task may not be polled again).
    writer_done: bool,
}

/// One connection, from connect to close. `Ok(true)` if it registered before it ended.
pub(super) async fn session(
    shared: &Arc<Shared>,
    settings: &Settings,
    server: &ServerConfig,
    events: &mpsc::Sender<ConnEvent>,
    connecting: &Arc<Semaphore>,
) -> std::io::Result<bool> {
    let permit = connecting.clone().acquire_owned().await.map_err(std::io::Error::other)?;
    let (stream, ident) = tokio::time::timeout(REGISTER_TIMEOUT, connect(server, settings))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out"))??;
    let (reader, writer) = tokio::io::split(stream);
    let Writer { urgent_tx, normal_tx, receipts, mut writer_task } = Writer::start(shared, settings, writer);
    let sasl_login = settings.login.as_ref().filter(|login| login.method == AuthMethod::Sasl);
    let has_certificate = server.tls && sasl_login.is_some_and(|login| login.certificate.is_some());
    let has_password = sasl_login.is_some_and(|login| !login.password.is_empty());
    let mut session = Session {
        shared,
        settings,
        server,
        events,
        permit: Some(permit),
        urgent_tx,
        normal_tx,
        receipts,
        caps: CapNegotiation::new(sasl::mechanisms(has_certificate, has_password)),
        sasl_login,
        exchange: None,
        failure: None,
        registration: Registration {
            nick: settings.nick.clone(),
            attempt: 0,
            max_nick_length: settings.max_nick_length,
        },
        registered: false,
        pinged: false,
        folded_nick: (String::new(), String::new()),
        writer_done: false,
    };
    session.register();
    let result = session.run(BufReader::with_capacity(READ_BUFFER, reader), Vec::new(), &mut writer_task).await;
    drop(ident);
    result
}

impl Session<'_> {
    /// Queues a line ahead of the flood-controlled ones.
    fn urgent(&self, line: Result<Line, LineError>) {
        if let Ok(line) = line {
            let _ = self.urgent_tx.try_send(line);
        }
    }

    /// The first lines: PASS, `CAP LS 302` (a server without CAP ignores it and registers us plainly), NICK, USER.
    fn register(&self) {
        if let Some(password) = &self.server.password {
            self.urgent(Line::new("PASS", &[], Some(password)));
        }
        self.urgent(Line::new("CAP", &["LS", "302"], None));
        self.urgent(Line::new("NICK", &[&self.registration.nick], None));
        self.urgent(Line::new("USER", &[&self.settings.username, "0", "*"], Some(&self.settings.realname)));
    }

    /// Reads and handles lines until the connection ends or is handed over; `buffer` holds the start of a line
    /// read before.
    async fn run(
        &mut self,
        mut reader: BufReader<ReadHalf<Box<dyn Stream>>>,
        mut buffer: Vec<u8>,
        writer_task: &mut JoinHandle<std::io::Result<Option<WriteHalf>>>,
    ) -> std::io::Result<bool> {
        buffer.reserve(1024);
        let register_deadline = tokio::time::Instant::now() + REGISTER_TIMEOUT;
        let mut frozen: Option<(WriteHalf, tokio::time::Instant)> = None;
        loop {
            if let Some((_, drained_by)) = &frozen
                && (lock(&self.receipts).is_idle() || tokio::time::Instant::now() >= *drained_by)
                && let Some((writer, _)) = frozen.take()
            {
                self.hand_over(reader, writer, buffer);
                return Ok(true);
            }
            let deadline = frozen.as_ref().map_or(register_deadline, |(_, drained_by)| *drained_by);
            match self.read_line(&mut reader, &mut buffer, writer_task, deadline).await {
                Read::Line => self.settings.traffic.read_one(),
                Read::Again => continue,
                Read::Ended(result) => return result,
                Read::WriterFrozen(writer) => {
                    frozen = Some((writer, tokio::time::Instant::now() + DRAIN));
                    continue;
                }
            }
            let line = std::mem::take(&mut buffer);
            let go_on = self.on_line(&line).await?;
            buffer = line;
            buffer.clear();
            if !go_on {
                return Ok(self.registered);
            }
        }
    }

    /// One whole line read: handled, and handed to the owner if it wants it; `Ok(false)` when the owner is gone.
    async fn on_line(&mut self, line: &[u8]) -> std::io::Result<bool> {
        self.pinged = false;
        self.refold_nick();
        let chatter = self.settings.forward == Forward::Own
            && std::str::from_utf8(line)
                .is_ok_and(|line| is_others_channel_chatter(line.trim_end_matches(['\r', '\n']), &self.folded_nick.1));
        if chatter {
            return Ok(true);
        }
        let text = String::from_utf8_lossy(line).trim_end_matches(['\r', '\n']).to_owned();
        if text.is_empty() {
            return Ok(true);
        }
        let message = match Message::from_str(&text) {
            Ok(message) => message,
            Err(error) => {
                tracing::debug!(%error, line = %crate::line::loggable(&text), "unreadable IRC line");
                return Ok(true);
            }
        };
        tracing::trace!(owner = %self.settings.owner, line = %crate::line::loggable(&text), "← IRC");
        if !self.handle(&message).await? {
            return Ok(true);
        }
        if wants(self.settings.forward, &message, &self.folded_nick.1) {
            let owner = self.settings.owner.clone();
            let event = ConnEvent::Message { owner, nick: self.folded_nick.0.clone(), message: Box::new(message) };
            if self.events.send(event).await.is_err() {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// The connection, frozen between two lines with everything it wrote confirmed (or the drain's time up), goes
    /// to whoever asked for it: the TCP stream, the bytes read and not handled, and its state.
    fn hand_over(&mut self, reader: BufReader<ReadHalf<Box<dyn Stream>>>, writer: WriteHalf, buffer: Vec<u8>) {
        let mut unread = buffer;
        unread.extend_from_slice(reader.buffer());
        let stream = reader.into_inner().unsplit(writer);
        let Some(taker) = lock(&self.shared.handed).take() else { return };
        let Ok(tcp) = stream.into_any().downcast::<tokio::net::TcpStream>() else { return };
        let Ok(stream) = tcp.into_std() else { return };
        let channels =
            lock(&self.shared.channels).values().filter(|state| state.joined).map(|state| state.name.clone()).collect();
        let state = FrozenState {
            settings: lock(&self.shared.settings).clone(),
            server: self.server.clone(),
            nick: self.folded_nick.0.clone(),
            prefix_len: lock(&self.shared.session).as_ref().map_or(0, |session| session.prefix_len),
            max_nick_length: self.registration.max_nick_length,
            caps: self.caps.enabled().clone(),
            channels,
            unread,
        };
        let _ = taker.send(Frozen { state, stream });
    }

    /// Reads until `buffer` holds a whole line. A line already in the read buffer is taken as it is, without a
    /// timer or a wake-up: a puppet in a busy channel receives every line said there, many to a read.
    async fn read_line(
        &mut self,
        reader: &mut BufReader<ReadHalf<Box<dyn Stream>>>,
        buffer: &mut Vec<u8>,
        writer_task: &mut JoinHandle<std::io::Result<Option<WriteHalf>>>,
        register_deadline: tokio::time::Instant,
    ) -> Read {
        let buffered = reader.buffer();
        if let Some(end) = memchr::memchr(b'\n', buffered).filter(|end| buffer.len() + end < MAX_READ_LINE) {
            buffer.extend_from_slice(&buffered[..=end]);
            std::pin::Pin::new(reader).consume(end + 1);
            return Read::Line;
        }
        let draining = self.writer_done;
        let until_deadline = register_deadline.saturating_duration_since(tokio::time::Instant::now());
        let idle = if self.registered && !draining { READ_IDLE } else { until_deadline };
        let mut limited = reader.take(MAX_READ_LINE as u64);
        let read = tokio::select! {
            read = tokio::time::timeout(idle, limited.read_until(b'\n', buffer)) => read,
            written = writer_task, if !self.writer_done => {
                self.writer_done = true;
                return match written {
                    Ok(Ok(Some(writer))) => Read::WriterFrozen(writer),
                    _ => Read::Ended(Err(std::io::Error::other("the connection's writer stopped"))),
                };
            }
            _ = self.shared.reconnect_now.notified() => {
                self.urgent(Line::new("QUIT", &[], Some("Reconnecting")));
                tokio::time::sleep(Duration::from_millis(200)).await;
                return Read::Ended(Ok(self.registered));
            }
        };
        let timed_out = |what| Read::Ended(Err(std::io::Error::new(std::io::ErrorKind::TimedOut, what)));
        match read {
            // Draining for a handover: the time is up, or a line came.
            Err(_) if draining => Read::Again,
            Err(_) if !self.registered => timed_out("registration timed out"),
            Err(_) if self.pinged => timed_out("ping timeout"),
            Err(_) => {
                self.pinged = true;
                self.urgent(Line::new("PING", &["lattice"], None));
                Read::Again
            }
            Ok(Err(error)) => Read::Ended(Err(error)),
            Ok(Ok(0)) if buffer.is_empty() => Read::Ended(Ok(self.registered)),
            Ok(Ok(0)) => Read::Ended(Err(std::io::Error::other("line too long"))),
            Ok(Ok(_)) if !buffer.ends_with(b"\n") && buffer.len() < MAX_READ_LINE => Read::Again,
            Ok(Ok(_)) => Read::Line,
        }
    }

    /// Folds our nick again if it changed since the last line.
    fn refold_nick(&mut self) {
        let session = lock(&self.shared.session);
        let own_nick = session.as_ref().map_or(&self.registration.nick, |session| &session.nick);
        if self.folded_nick.0 != *own_nick {
            self.folded_nick = (own_nick.clone(), casefold(own_nick));
        }
    }

    /// Acts on a line; `Ok(false)` when it is the connection's business alone and not for the owner.
    async fn handle(&mut self, message: &Message) -> std::io::Result<bool> {
        let own = self.folded_nick.1.as_str();
        let from_self = message.source_nickname().is_some_and(|nick| casefolds_to(nick, own));
        let kicked_self = matches!(&message.command, Command::KICK(_, kicked, _) if casefolds_to(kicked, own));
        match &message.command {
            Command::PING(token, _) => self.urgent(Line::new("PONG", &[], Some(token))),
            Command::PONG(first, second) => self.ponged(second.as_deref().unwrap_or(first)),
            Command::Response(Response::RPL_WELCOME, params) => {
                self.welcomed(params.first()).await;
                return Ok(false);
            }
            Command::Response(Response::RPL_ISUPPORT, params) => self.isupport(params),
            Command::Response(
                Response::ERR_NICKNAMEINUSE | Response::ERR_ERRONEOUSNICKNAME | Response::ERR_NICKCOLLISION,
                _,
            ) if !self.registered => self.nick_refused(message)?,
            Command::CAP(_, subcommand, first, second) => {
                let params: Vec<&str> = [first, second].into_iter().flatten().map(String::as_str).collect();
                self.cap(subcommand.to_str(), &params);
            }
            Command::AUTHENTICATE(argument) => return Ok(self.authenticate(argument)),
            Command::Response(Response::RPL_SASLSUCCESS, _) => self.sasl_succeeded().await,
            Command::Response(
                Response::ERR_SASLFAIL | Response::ERR_SASLTOOLONG | Response::ERR_SASLABORT | Response::ERR_NICKLOCKED,
                params,
            ) => self.sasl_failed(params).await,
            Command::JOIN(channel, _, _) if from_self => self.joined(channel, message.prefix.as_ref()),
            Command::PART(channel, _) if from_self => {
                lock(&self.shared.channels).remove(&casefold(channel));
                self.shared.touch();
            }
            Command::KICK(channel, _, _) if kicked_self => {
                lock(&self.shared.channels).remove(&casefold(channel));
                self.shared.touch();
            }
            Command::NICK(new) if from_self => self.renamed(new),
            Command::Response(
                Response::ERR_CHANNELISFULL
                | Response::ERR_INVITEONLYCHAN
                | Response::ERR_BANNEDFROMCHAN
                | Response::ERR_BADCHANNELKEY
                | Response::ERR_NOSUCHCHANNEL
                | Response::ERR_TOOMANYCHANNELS,
                params,
            ) => self.join_refused(params),
            Command::ERROR(reason) => {
                let (network, owner) = (&self.settings.network, &self.settings.owner);
                tracing::warn!(%network, %owner, %reason, "the server closed the connection");
            }
            _ => {}
        }
        Ok(true)
    }

    /// A `PONG`: a receipt `PING` came back (see [`crate::receipt`]); the next one goes out if lines wait for it.
    fn ponged(&self, token: &str) {
        let next = lock(&self.receipts).ponged(token);
        if let Some(next) = next {
            self.urgent(Line::new("PING", &[&next], None));
        }
    }

    /// `RPL_WELCOME`: registered. The owner hears of the nick before any JOIN goes out, so it never mistakes our own
    /// lines for someone else's; then NickServ, then every wanted channel.
    async fn welcomed(&mut self, nick: Option<&String>) {
        self.registered = true;
        self.caps.registered();
        self.permit.take();
        let nick = nick.cloned().unwrap_or_else(|| self.registration.nick.clone());
        let (owner, network) = (&self.settings.owner, &self.settings.network);
        let _ = self.events.send(ConnEvent::Registered { owner: owner.clone(), nick: nick.clone() }).await;
        *lock(&self.shared.session) = Some(SessionHandle {
            sender: self.normal_tx.clone(),
            urgent: self.urgent_tx.clone(),
            nick: nick.clone(),
            prefix_len: worst_case_prefix(&nick),
        });
        tracing::info!(%network, %owner, %nick, server = %self.server.host, caps = %self.caps.enabled().list(),
            "IRC connection registered");
        if let Some(login) = self.settings.login.as_ref().filter(|login| login.method == AuthMethod::Nickserv) {
            let identify = format!("IDENTIFY {} {}", login.account, login.password);
            self.urgent(Line::new("PRIVMSG", &["NickServ"], Some(&identify)));
        }
        let joins: Vec<String> = lock(&self.shared.channels)
            .values_mut()
            .map(|state| {
                state.join_sent = true;
                state.refused = None;
                state.name.clone()
            })
            .collect();
        for line in join_lines(&joins) {
            // Awaited, not try_send: a bridge with thousands of portals has more JOINs than the urgent queue holds,
            // and a JOIN dropped here would never be sent again.
            if self.urgent_tx.send(line).await.is_err() {
                break;
            }
        }
        self.shared.touch();
    }

    /// `RPL_ISUPPORT`: the server's longest nick.
    fn isupport(&mut self, params: &[String]) {
        for token in params {
            if let Some(length) = token.strip_prefix("NICKLEN=").and_then(|n| n.parse().ok()) {
                self.registration.max_nick_length = length;
            }
        }
    }

    /// The nick was refused while registering: shorten it, fall back to one every server takes, or number it.
    fn nick_refused(&mut self, message: &Message) -> std::io::Result<()> {
        let registration = &mut self.registration;
        registration.attempt += 1;
        if registration.attempt > 20 {
            return Err(std::io::Error::other("no free nick after 20 attempts"));
        }
        let refused = registration.nick.clone();
        registration.nick = if registration.nick.len() > registration.max_nick_length {
            registration.nick[..registration.max_nick_length].to_owned()
        } else if matches!(message.command, Command::Response(Response::ERR_ERRONEOUSNICKNAME, _)) {
            // Invalid even at a fitting length: fall back to a nick every server takes.
            format!("matrix{}", registration.attempt).chars().take(registration.max_nick_length).collect()
        } else {
            next_nick(&registration.nick, registration.attempt, registration.max_nick_length)
        };
        tracing::debug!(%refused, next = %registration.nick, "nick refused, trying another");
        self.urgent(Line::new("NICK", &[&self.registration.nick], None));
        Ok(())
    }

    /// `CAP`: the negotiation's next steps (see [`crate::ircv3::cap`]).
    fn cap(&mut self, subcommand: &str, params: &[&str]) {
        let steps = self.caps.on_cap(subcommand, params);
        *lock(&self.shared.caps) = self.caps.enabled().clone();
        if self.registered {
            // cap-notify: NEW or DEL after registration.
            self.shared.touch();
        }
        for step in steps {
            match step {
                CapStep::Request(list) => self.urgent(Line::new("CAP", &["REQ"], Some(&list))),
                CapStep::Authenticate(mechanism) => {
                    self.exchange = self
                        .sasl_login
                        .zip(self.caps.mechanism())
                        .map(|(login, chosen)| Exchange::new(chosen, &login.account, &login.password));
                    self.urgent(Line::new("AUTHENTICATE", &[&mechanism], None));
                }
                CapStep::End => {
                    if self.sasl_login.is_some() && self.caps.mechanism().is_none() {
                        let (network, owner) = (&self.settings.network, &self.settings.owner);
                        tracing::warn!(%network, %owner, "the server offers no SASL mechanism the login can use");
                    }
                    self.urgent(Line::new("CAP", &["END"], None));
                }
            }
        }
    }

    /// `AUTHENTICATE`: the next step of the SASL exchange; `false` (not for the owner) when none is under way.
    fn authenticate(&mut self, argument: &str) -> bool {
        let Some(login) = self.exchange.as_mut() else { return false };
        match login.on_server(argument) {
            Ok(answer) => {
                for chunk in answer {
                    self.urgent(Line::new("AUTHENTICATE", &[&chunk], None));
                }
            }
            Err(error) => {
                // The server's 906 (aborted) reports it, with this reason.
                self.urgent(Line::new("AUTHENTICATE", &["*"], None));
                self.failure = Some(error);
            }
        }
        true
    }

    /// `RPL_SASLSUCCESS`: logged in, if the server proved itself too (SCRAM).
    async fn sasl_succeeded(&mut self) {
        let verified = self.exchange.take().map_or(Ok(()), |login| login.succeeded());
        let (network, owner) = (&self.settings.network, &self.settings.owner);
        match verified {
            Ok(()) => tracing::info!(%network, %owner, mechanism = ?self.caps.mechanism(), "SASL login succeeded"),
            Err(error) => login_failed(self.settings, self.events, error).await,
        }
        if self.caps.sasl_done().contains(&CapStep::End) {
            self.urgent(Line::new("CAP", &["END"], None));
        }
    }

    /// The SASL login failed: the owner hears why, and registration goes on without it.
    async fn sasl_failed(&mut self, params: &[String]) {
        self.exchange = None;
        let said = params.last().cloned().unwrap_or_default();
        login_failed(self.settings, self.events, self.failure.take().unwrap_or(SaslError::Refused(said))).await;
        if self.caps.sasl_done().contains(&CapStep::End) {
            self.urgent(Line::new("CAP", &["END"], None));
        }
    }

    /// Our own `JOIN`: the channel is joined, and the server's prefix on our lines is now known exactly.
    fn joined(&self, channel: &str, prefix: Option<&Prefix>) {
        if let Some(state) = lock(&self.shared.channels).get_mut(&casefold(channel)) {
            state.joined = true;
            state.refused = None;
        }
        if let Some(Prefix::Nickname(nick, user, host)) = prefix
            && let Some(session) = lock(&self.shared.session).as_mut()
        {
            session.prefix_len = 1 + nick.len() + 1 + user.len() + 1 + host.len() + 1;
        }
        self.shared.touch();
    }

    /// Our own `NICK`: the new nick is ours now and after reconnects.
    fn renamed(&mut self, new: &str) {
        if let Some(session) = lock(&self.shared.session).as_mut() {
            session.nick = new.to_owned();
        }
        lock(&self.shared.settings).nick = new.to_owned();
        self.registration.nick = new.to_owned();
        self.shared.touch();
    }

    /// A JOIN the server refused: the channel says why until it is wanted again.
    fn join_refused(&self, params: &[String]) {
        if let Some(channel) = params.get(1)
            && let Some(state) = lock(&self.shared.channels).get_mut(&casefold(channel))
        {
            state.join_sent = false;
            state.refused = Some(params.last().cloned().unwrap_or_else(|| "refused".into()));
        }
        self.shared.touch();
    }
}

/// Reports a failed SASL login: in the log, and to the owner (who tells the Matrix user).
async fn login_failed(settings: &Settings, events: &mpsc::Sender<ConnEvent>, error: SaslError) {
    let account = settings.login.as_ref().map(|login| login.account.clone()).unwrap_or_default();
    tracing::warn!(network = %settings.network, owner = %settings.owner, %account, %error, "SASL login failed");
    let event = ConnEvent::LoginFailed { owner: settings.owner.clone(), account, reason: error.to_string() };
    let _ = events.send(event).await;
}
