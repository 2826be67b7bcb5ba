//! A fake XMPP server on loopback for unit tests: it accepts the gateway's
//! [XEP-0114](https://xmpp.org/extensions/xep-0114.html) component stream, records every stanza the gateway writes,
//! answers IQs (an empty result; disco#info of a MUC as a MUC), and hosts a minimal
//! [XEP-0045](https://xmpp.org/extensions/xep-0045.html) service on `conference.{server}`: joins get the
//! self-presence (status 110), leaves the unavailable one, and groupchat messages (subjects too) go to every
//! occupant with a stanza-id. Real servers (Prosody) are in the end-to-end suite.

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    sync::mpsc,
};
use tokio_xmpp::parsers::{
    disco::{DiscoInfoQuery, DiscoInfoResult, Identity},
    iq::Iq,
    jid::{BareJid, FullJid, Jid},
    message::{Message, MessageType},
    minidom::Element,
    muc::user::{Affiliation, Item, MucUser, Role, Status},
    ns,
    presence::{Presence, Type as PresenceType},
    stanza_id::StanzaId,
};

/// The component's domain; the server is `xmpp.test`, MUCs live on `conference.xmpp.test`.
pub(crate) const COMPONENT: &str = "bridge.xmpp.test";
const MUC_SERVICE: &str = "conference.xmpp.test";

/// Who is in each MUC: nick → real full JID.
type Rooms = BTreeMap<BareJid, BTreeMap<String, FullJid>>;

/// The fake server: its address, what the gateway wrote, and a way to write to the gateway.
pub(crate) struct FakeXmppServer {
    /// `host:port` to connect the component to.
    pub(crate) address: String,
    received: Arc<Mutex<Vec<Element>>>,
    to_gateway: Arc<Mutex<Option<mpsc::UnboundedSender<Element>>>>,
}

impl FakeXmppServer {
    /// Listens on a free loopback port; serves one component connection at a time.
    pub(crate) async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let received = Arc::new(Mutex::new(Vec::new()));
        let to_gateway = Arc::new(Mutex::new(None));
        let (log, outlet) = (Arc::clone(&received), Arc::clone(&to_gateway));
        tokio::spawn(async move {
            let rooms = Arc::new(Mutex::new(Rooms::new()));
            while let Ok((socket, _)) = listener.accept().await {
                let (sender, outbound) = mpsc::unbounded_channel();
                *outlet.lock().unwrap() = Some(sender.clone());
                tokio::spawn(serve(socket, Arc::clone(&log), sender, outbound, Arc::clone(&rooms)));
            }
        });
        Self { address, received, to_gateway }
    }

    /// Every stanza the gateway wrote so far, in order.
    pub(crate) fn received(&self) -> Vec<Element> {
        self.received.lock().unwrap().clone()
    }

    /// The messages the gateway wrote so far (MUC copies and IQs aside).
    pub(crate) fn messages(&self) -> Vec<Message> {
        self.received().into_iter().filter_map(|stanza| Message::try_from(stanza).ok()).collect()
    }

    /// The presences the gateway wrote so far.
    pub(crate) fn presences(&self) -> Vec<Presence> {
        self.received().into_iter().filter_map(|stanza| Presence::try_from(stanza).ok()).collect()
    }

    /// Waits until the gateway wrote a stanza `matches` picks; panics after 10 s with what it wrote.
    pub(crate) async fn wait_for<T: TryFrom<Element>>(&self, what: &str, matches: impl Fn(&T) -> bool) -> T {
        for _ in 0..400 {
            let found = self.received().into_iter().filter_map(|stanza| T::try_from(stanza).ok()).find(&matches);
            if let Some(found) = found {
                return found;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        let written: Vec<String> = self.received().iter().map(String::from).collect();
        panic!("the gateway never wrote {what}; it wrote {written:#?}");
    }

    /// Writes a stanza to the gateway, as the server routing it from someone.
    pub(crate) fn send(&self, stanza: impl Into<Element>) {
        let outlet = self.to_gateway.lock().unwrap();
        outlet.as_ref().expect("the component is connected").send(stanza.into()).unwrap();
    }
}

/// One component connection: the stream header and handshake, then stanzas both ways.
async fn serve(
    mut socket: TcpStream,
    log: Arc<Mutex<Vec<Element>>>,
    sender: mpsc::UnboundedSender<Element>,
    mut outbound: mpsc::UnboundedReceiver<Element>,
    rooms: Arc<Mutex<Rooms>>,
) {
    let mut buffer = String::new();
    let mut chunk = [0; 16 * 1024];
    let mut greeted = false;
    loop {
        tokio::select! {
            read = socket.read(&mut chunk) => {
                let Ok(read @ 1..) = read else { return };
                buffer.push_str(&String::from_utf8_lossy(&chunk[..read]));
                if !greeted {
                    let Some(end) = stream_header_end(&buffer) else { continue };
                    buffer.drain(..end);
                    let header = format!(
                        "<?xml version='1.0'?><stream:stream xmlns='{}' xmlns:stream='{}' from='{COMPONENT}' \
                         id='fake-stream'>",
                        ns::COMPONENT, ns::STREAM
                    );
                    greeted = socket.write_all(header.as_bytes()).await.is_ok();
                }
                while let Some(stanza) = next_stanza(&mut buffer) {
                    if stanza.starts_with("<handshake") {
                        let _ = socket.write_all(b"<handshake/>").await;
                        continue;
                    }
                    let Ok(element) = parse(&stanza) else { continue };
                    log.lock().unwrap().push(element.clone());
                    for answer in answers(element, &mut rooms.lock().unwrap()) {
                        let _ = sender.send(answer);
                    }
                }
            }
            Some(stanza) = outbound.recv() => {
                if socket.write_all(String::from(&stanza).as_bytes()).await.is_err() {
                    return;
                }
            }
        }
    }
}

/// Where the component's stream header ends in `buffer`, once it is all there.
fn stream_header_end(buffer: &str) -> Option<usize> {
    let start = buffer.find("<stream:stream")?;
    Some(start + buffer[start..].find('>')? + 1)
}

/// Takes the first whole top-level element off `buffer`, following tags alone (text holds no `<`, and a `>` inside
/// an attribute's quotes ends nothing).
fn next_stanza(buffer: &mut String) -> Option<String> {
    let start = buffer.find('<')?;
    let bytes = buffer.as_bytes();
    let (mut depth, mut position) = (0_usize, start);
    loop {
        let open = position + buffer[position..].find('<')?;
        let mut quote = None;
        let mut close = open + 1;
        loop {
            let byte = *bytes.get(close)?;
            match (quote, byte) {
                (None, b'"' | b'\'') => quote = Some(byte),
                (Some(q), _) if byte == q => quote = None,
                (None, b'>') => break,
                _ => {}
            }
            close += 1;
        }
        let tag = &buffer[open..=close];
        if tag.starts_with("</") {
            depth = depth.saturating_sub(1);
        } else if !tag.ends_with("/>") && !tag.starts_with("<?") {
            depth += 1;
        }
        position = close + 1;
        if depth == 0 && !tag.starts_with("<?") {
            let stanza = buffer[start..position].to_owned();
            buffer.drain(..position);
            return Some(stanza);
        }
    }
}

/// A stanza as written inside the stream, whose default namespace it inherits.
fn parse(stanza: &str) -> Result<Element, tokio_xmpp::parsers::minidom::Error> {
    let wrapped = format!("<stream xmlns='{}' xmlns:stream='{}'>{stanza}</stream>", ns::COMPONENT, ns::STREAM);
    let wrapper: Element = wrapped.parse()?;
    Ok(wrapper.children().next().cloned().expect("one stanza inside"))
}

/// What the server sends back for a stanza from the gateway.
fn answers(stanza: Element, rooms: &mut Rooms) -> Vec<Element> {
    if let Ok(iq) = Iq::try_from(stanza.clone()) {
        return answer_iq(iq).into_iter().collect();
    }
    if let Ok(presence) = Presence::try_from(stanza.clone()) {
        return muc_presence(presence, rooms);
    }
    if let Ok(message) = Message::try_from(stanza) {
        return muc_message(message, rooms);
    }
    Vec::new()
}

/// A result for every IQ get or set: empty, or a MUC's disco#info.
fn answer_iq(iq: Iq) -> Option<Element> {
    let (from, to, id, payload) = match iq {
        Iq::Get { from, to, id, payload } | Iq::Set { from, to, id, payload } => (from?, to, id, payload),
        Iq::Result { .. } | Iq::Error { .. } => return None,
    };
    let to_muc = to.as_ref().is_some_and(|to| to.domain().as_str() == MUC_SERVICE);
    let payload = DiscoInfoQuery::try_from(payload).ok().filter(|_| to_muc).map(|_| {
        let identities = vec![Identity::new("conference", "text", "en", "Room")];
        let features = [ns::MUC, "urn:xmpp:sid:0"].into_iter().map(str::to_owned).collect();
        DiscoInfoResult { node: None, identities, features, extensions: Vec::new() }
    });
    let mut result = Iq::from_result(id, payload);
    if let Some(to) = to {
        result = result.with_from(to);
    }
    Some(result.with_to(from).into())
}

/// A join or leave of a MUC on `conference.{server}`: the occupant's presence, to every occupant.
fn muc_presence(presence: Presence, rooms: &mut Rooms) -> Vec<Element> {
    let (Some(Ok(from)), Some(Ok(to))) =
        (presence.from.clone().map(Jid::try_into_full), presence.to.clone().map(Jid::try_into_full))
    else {
        return Vec::new();
    };
    if to.domain().as_str() != MUC_SERVICE {
        return Vec::new();
    }
    let (room, nick) = (to.to_bare(), to.resource().to_string());
    let occupants = rooms.entry(room).or_default();
    let leaving = presence.type_ == PresenceType::Unavailable;
    if leaving {
        occupants.remove(&nick);
    } else {
        occupants.insert(nick.clone(), from.clone());
    }
    let mut targets: Vec<FullJid> = occupants.values().cloned().collect();
    if leaving {
        targets.push(from.clone());
    }
    targets
        .into_iter()
        .map(|target| {
            let item = Item::new(Affiliation::Member, Role::Participant).with_jid(from.clone());
            let status = if target == from { vec![Status::SelfPresence] } else { vec![] };
            let mut answer = Presence::new(presence.type_.clone()).with_from(to.clone()).with_to(target);
            answer.payloads.push(MucUser::new().with_statuses(status).with_items(vec![item]).into());
            answer.into()
        })
        .collect()
}

/// A groupchat message to a MUC: from the sender's nick, with a stanza-id, to every occupant.
fn muc_message(message: Message, rooms: &mut Rooms) -> Vec<Element> {
    let (Some(Ok(from)), Some(to)) = (message.from.clone().map(Jid::try_into_full), message.to.clone()) else {
        return Vec::new();
    };
    if message.type_ != MessageType::Groupchat {
        return Vec::new();
    }
    let room = to.to_bare();
    let Some(occupants) = rooms.get(&room) else { return Vec::new() };
    let Some(nick) = occupants.iter().find(|(_, jid)| **jid == from).map(|(nick, _)| nick.clone()) else {
        return Vec::new();
    };
    let stanza_id = format!("sid-{}", message.id.as_ref().map_or("none", |id| id.0.as_str()));
    occupants
        .values()
        .map(|occupant| {
            let mut copy = message.clone();
            copy.from = Some(room.with_resource_str(&nick).expect("a nick").into());
            copy.to = Some(occupant.clone().into());
            copy.payloads.push(StanzaId { id: stanza_id.clone(), by: room.clone().into() }.into());
            copy.into()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stanzas_are_cut_at_their_end_tags_whatever_quotes_and_self_closing_tags_hold() {
        let mut buffer = String::from(
            "<message to='a>b' id=\"1\"><body>x &lt; y</body><active xmlns='c'/></message><iq id='2'/><presence",
        );
        assert_eq!(
            next_stanza(&mut buffer).as_deref(),
            Some("<message to='a>b' id=\"1\"><body>x &lt; y</body><active xmlns='c'/></message>")
        );
        assert_eq!(next_stanza(&mut buffer).as_deref(), Some("<iq id='2'/>"));
        assert_eq!(next_stanza(&mut buffer), None, "an unfinished stanza waits");
        assert_eq!(buffer, "<presence");
    }

    #[test]
    fn stanzas_parse_in_the_streams_namespace() {
        let message = Message::try_from(parse("<message to='a@b' type='chat'><body>hi</body></message>").unwrap());
        assert_eq!(message.unwrap().bodies.values().next().map(String::as_str), Some("hi"));
    }
}
