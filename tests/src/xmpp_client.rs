//! A small XMPP client for end-to-end tests, speaking raw XML over plain-text c2s: SASL PLAIN (the test Prosody
//! allows it without TLS), resource binding, MUC joins and IQs, and every stanza it receives kept in arrival order.
//!
//! It is not a tokio-xmpp client on purpose: the bridge's `component` feature switches xmpp-parsers' default
//! namespace for the whole build, which would break a client's parsing. A background task reads the socket at once,
//! so a test that only counts what arrived never leaves the server's output unread.

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use anyhow::{Context as _, bail};
use base64::Engine as _;
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::{TcpStream, tcp::OwnedWriteHalf},
    sync::{Mutex, Notify},
    time::Instant,
};

/// How long login steps and IQ answers may take.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(30);

/// One top-level element the server sent: its name, the attributes of its opening tag and its XML.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stanza {
    /// The element's name with any prefix (`message`, `presence`, `stream:features`).
    pub name: String,
    /// The attributes of the opening tag, unescaped.
    pub attributes: BTreeMap<String, String>,
    /// The whole element as the server wrote it.
    pub xml: String,
}

impl Stanza {
    /// Reads one complete element.
    fn parse(xml: String) -> Self {
        let tag_end = xml.find('>').unwrap_or(xml.len());
        let tag = xml[1..tag_end].trim_end_matches('/');
        let (name, mut rest) = tag.split_once(char::is_whitespace).unwrap_or((tag, ""));
        let mut attributes = BTreeMap::new();
        while let Some((key, value)) = rest.split_once('=') {
            let value = value.trim_start();
            let Some(quote) = value.chars().next() else { break };
            let Some(end) = value[1..].find(quote) else { break };
            attributes.insert(key.trim().to_owned(), unescape(&value[1..=end]));
            rest = &value[end + 2..];
        }
        Self { name: name.to_owned(), attributes, xml }
    }

    /// The value of the opening tag's attribute `name`.
    pub fn attr(&self, name: &str) -> Option<&str> {
        self.attributes.get(name).map(String::as_str)
    }

    /// The text of the first `<body>` child, unescaped.
    pub fn body(&self) -> Option<String> {
        let start = self
            .xml
            .match_indices("<body")
            .map(|(index, _)| index)
            .find(|&index| self.xml[index + "<body".len()..].starts_with(['>', ' ']))?;
        let content = &self.xml[start..];
        let open_end = content.find('>')?;
        if content[..open_end].ends_with('/') {
            return Some(String::new());
        }
        let close = content.find("</body>")?;
        Some(unescape(&content[open_end + 1..close]))
    }

    /// Whether the stanza has a child or descendant written `<{name} xmlns='{namespace}'` (either quote).
    pub fn has_child(&self, name: &str, namespace: &str) -> bool {
        [format!("<{name} xmlns='{namespace}'"), format!("<{name} xmlns=\"{namespace}\"")]
            .iter()
            .any(|opening| self.xml.contains(opening.as_str()))
    }

    /// Whether this is a MUC presence carrying status `code` (110: it is about the receiver).
    pub fn has_muc_status(&self, code: &str) -> bool {
        [format!("<status code='{code}'"), format!("<status code=\"{code}\"")]
            .iter()
            .any(|status| self.xml.contains(status.as_str()))
    }
}

/// Escapes text for XML content and attribute values.
pub fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;").replace('\'', "&apos;")
}

/// Undoes [`escape`] and numeric character references.
fn unescape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find('&') {
        out.push_str(&rest[..start]);
        let Some(end) = rest[start..].find(';') else { break };
        let entity = &rest[start + 1..start + end];
        let character = match entity {
            "amp" => Some('&'),
            "lt" => Some('<'),
            "gt" => Some('>'),
            "quot" => Some('"'),
            "apos" => Some('\''),
            _ => entity
                .strip_prefix("#x")
                .map_or_else(
                    || entity.strip_prefix('#').and_then(|n| n.parse().ok()),
                    |hex| u32::from_str_radix(hex, 16).ok(),
                )
                .and_then(char::from_u32),
        };
        match character {
            Some(character) => out.push(character),
            None => out.push_str(&rest[start..=start + end]),
        }
        rest = &rest[start + end + 1..];
    }
    out.push_str(rest);
    out
}

/// Takes the complete top-level elements off the front of `buffer`; stream headers and the stream's end are
/// dropped. Works on bytes: `<` and `>` never occur inside a multi-byte UTF-8 character.
fn split_elements(buffer: &mut Vec<u8>) -> Vec<Stanza> {
    let mut stanzas = Vec::new();
    loop {
        let Some(start) = buffer.iter().position(|&byte| byte == b'<') else { return stanzas };
        let rest = &buffer[start..];
        if rest.starts_with(b"<?") || rest.starts_with(b"<stream:stream") || rest.starts_with(b"</") {
            let Some(end) = rest.iter().position(|&byte| byte == b'>') else { return stanzas };
            buffer.drain(..start + end + 1);
            continue;
        }
        let mut depth = 0usize;
        let mut position = 0;
        let mut end = None;
        while let Some(open) = rest[position..].iter().position(|&byte| byte == b'<') {
            let tag_start = position + open;
            let Some(close) = rest[tag_start..].iter().position(|&byte| byte == b'>') else { break };
            let tag = &rest[tag_start..=tag_start + close];
            if tag.starts_with(b"</") {
                depth = depth.saturating_sub(1);
            } else if !tag.ends_with(b"/>") {
                depth += 1;
            }
            position = tag_start + close + 1;
            if depth == 0 {
                end = Some(position);
                break;
            }
        }
        let Some(end) = end else { return stanzas };
        let element: Vec<u8> = buffer.drain(..start + end).skip(start).collect();
        stanzas.push(Stanza::parse(String::from_utf8_lossy(&element).into_owned()));
    }
}

/// A logged-in XMPP account whose received stanzas are all kept, in arrival order.
#[derive(Debug)]
pub struct XmppTestClient {
    jid: String,
    writer: Mutex<OwnedWriteHalf>,
    received: Arc<std::sync::Mutex<Vec<Stanza>>>,
    arrived: Arc<Notify>,
}

impl XmppTestClient {
    /// Connects to Prosody's c2s port on 127.0.0.1 and logs in as `user@localhost` with resource `test`.
    pub async fn connect(port: u16, user: &str, password: &str) -> anyhow::Result<Self> {
        let stream = TcpStream::connect(("127.0.0.1", port)).await.context("connecting to Prosody's c2s port")?;
        let (mut reader, writer) = stream.into_split();
        let received: Arc<std::sync::Mutex<Vec<Stanza>>> = Arc::default();
        let arrived = Arc::new(Notify::new());
        let (sink, notify) = (received.clone(), arrived.clone());
        tokio::spawn(async move {
            let mut buffer = Vec::new();
            let mut chunk = vec![0; 65536];
            while let Ok(read @ 1..) = reader.read(&mut chunk).await {
                buffer.extend_from_slice(&chunk[..read]);
                let stanzas = split_elements(&mut buffer);
                sink.lock().unwrap_or_else(std::sync::PoisonError::into_inner).extend(stanzas);
                notify.notify_waiters();
            }
            notify.notify_waiters();
        });
        let client = Self { jid: String::new(), writer: Mutex::new(writer), received, arrived };
        client.login(user, password).await.with_context(|| format!("logging in as {user}@localhost"))
    }

    async fn login(mut self, user: &str, password: &str) -> anyhow::Result<Self> {
        let features = |stanza: &Stanza| stanza.name == "stream:features";
        self.request(&stream_header(), features).await?;
        let credentials = base64::engine::general_purpose::STANDARD.encode(format!("\0{user}\0{password}"));
        let auth = format!("<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{credentials}</auth>");
        let outcome = self.request(&auth, |stanza| ["success", "failure"].contains(&stanza.name.as_str())).await?;
        if outcome.name != "success" {
            bail!("SASL PLAIN refused: {}", outcome.xml);
        }
        self.request(&stream_header(), features).await?;
        let bind = "<iq type='set' id='bind'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>\
                    <resource>test</resource></bind></iq>";
        let bound = self.request(bind, |stanza| stanza.name == "iq" && stanza.attr("id") == Some("bind")).await?;
        let jid = bound.xml.split_once("<jid>").and_then(|(_, rest)| rest.split_once("</jid>"));
        self.jid = jid.map(|(jid, _)| unescape(jid)).with_context(|| format!("no JID in {}", bound.xml))?;
        self.send_raw("<presence/>").await?;
        Ok(self)
    }

    /// The full JID the server bound.
    pub fn jid(&self) -> &str {
        &self.jid
    }

    /// Writes raw XML to the server.
    pub async fn send_raw(&self, xml: &str) -> anyhow::Result<()> {
        self.writer.lock().await.write_all(xml.as_bytes()).await.context("writing to Prosody")
    }

    /// Every stanza received so far, in arrival order.
    pub fn received(&self) -> Vec<Stanza> {
        self.received.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    /// Writes `xml` and waits for the first stanza after it that `predicate` holds for.
    pub async fn request(&self, xml: &str, predicate: impl Fn(&Stanza) -> bool) -> anyhow::Result<Stanza> {
        let mark = self.received.lock().unwrap_or_else(std::sync::PoisonError::into_inner).len();
        self.send_raw(xml).await?;
        self.wait_since(mark, ANSWER_TIMEOUT, predicate).await
    }

    /// Waits for a stanza `predicate` holds for among those received from index `mark` on.
    pub async fn wait_since(
        &self,
        mark: usize,
        timeout: Duration,
        predicate: impl Fn(&Stanza) -> bool,
    ) -> anyhow::Result<Stanza> {
        let deadline = Instant::now() + timeout;
        loop {
            let notified = self.arrived.notified();
            let found = {
                let received = self.received.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                received.iter().skip(mark).find(|stanza| predicate(stanza)).cloned()
            };
            if let Some(stanza) = found {
                return Ok(stanza);
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                let received = self.received();
                let last: Vec<&str> = received.iter().rev().take(5).map(|stanza| stanza.xml.as_str()).collect();
                bail!("{} saw no matching stanza within {timeout:?}; last received: {last:#?}", self.jid);
            }
        }
    }

    /// Sends an IQ of `kind` (`get`, `set`) to `to` with `payload` and waits for its answer.
    pub async fn iq(&self, kind: &str, to: &str, payload: &str) -> anyhow::Result<Stanza> {
        let id = format!("iq-{:016x}", rand::random::<u64>());
        let iq = format!("<iq type='{kind}' to='{}' id='{id}'>{payload}</iq>", escape(to));
        self.request(&iq, |stanza| stanza.name == "iq" && stanza.attr("id") == Some(id.as_str())).await
    }

    /// Joins the MUC `room` (a bare JID) as `nick` without history and returns the self-presence.
    pub async fn join_muc(&self, room: &str, nick: &str) -> anyhow::Result<Stanza> {
        let occupant = format!("{room}/{nick}");
        let join = format!(
            "<presence to='{}'><x xmlns='http://jabber.org/protocol/muc'><history maxstanzas='0'/></x></presence>",
            escape(&occupant)
        );
        let answer = self
            .request(&join, |stanza| {
                stanza.name == "presence"
                    && stanza.attr("from").is_some_and(|from| from.starts_with(room))
                    && (stanza.attr("type") == Some("error") || stanza.has_muc_status("110"))
            })
            .await?;
        if answer.attr("type") == Some("error") {
            bail!("joining {room} as {nick} failed: {}", answer.xml);
        }
        Ok(answer)
    }

    /// Waits until an occupant `nick` of `room` is present (its presence arrived from the index `mark` on).
    pub async fn wait_for_occupant(&self, mark: usize, room: &str, nick: &str) -> anyhow::Result<()> {
        let occupant = format!("{room}/{nick}");
        self.wait_since(mark, ANSWER_TIMEOUT, |stanza| {
            stanza.name == "presence" && stanza.attr("from") == Some(occupant.as_str()) && stanza.attr("type").is_none()
        })
        .await
        .with_context(|| format!("waiting for {occupant}"))?;
        Ok(())
    }

    /// The live groupchat messages with a body from occupants of `room`, as (nick, body) in arrival order; history
    /// a MUC replays on join (marked with a XEP-0203 delay) is left out.
    pub fn groupchat(&self, room: &str) -> Vec<(String, String)> {
        let prefix = format!("{room}/");
        let received = self.received.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        received
            .iter()
            .filter(|stanza| stanza.name == "message" && stanza.attr("type") == Some("groupchat"))
            .filter(|stanza| !stanza.has_child("delay", "urn:xmpp:delay"))
            .filter_map(|stanza| {
                let nick = stanza.attr("from")?.strip_prefix(&prefix)?.to_owned();
                Some((nick, stanza.body()?))
            })
            .collect()
    }
}

fn stream_header() -> String {
    "<?xml version='1.0'?><stream:stream to='localhost' xmlns='jabber:client' \
     xmlns:stream='http://etherx.jabber.org/streams' version='1.0'>"
        .to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn elements_are_split_off_whole_and_read() {
        let mut buffer = b"<?xml version='1.0'?><stream:stream xmlns='jabber:client'><message from='r@m/a &amp; b' \
            type=\"groupchat\"><body>1 &lt; 2 &#x263A;</body><delay xmlns='urn:xmpp:delay'/></message><presence"
            .to_vec();
        let stanzas = split_elements(&mut buffer);
        assert_eq!(stanzas.len(), 1);
        let message = &stanzas[0];
        assert_eq!(message.name, "message");
        assert_eq!(message.attr("from"), Some("r@m/a & b"));
        assert_eq!(message.attr("type"), Some("groupchat"));
        assert_eq!(message.body().as_deref(), Some("1 < 2 \u{263A}"));
        assert!(message.has_child("delay", "urn:xmpp:delay"));
        assert_eq!(buffer, b"<presence");
        buffer.extend_from_slice(b" to='x'/><success xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/></stream:stream>");
        let names: Vec<String> = split_elements(&mut buffer).into_iter().map(|stanza| stanza.name).collect();
        assert_eq!(names, ["presence", "success"]);
        assert!(buffer.is_empty());
    }
}
