//! A minimal XMPP client for tests, speaking raw XML over a TcpStream: PLAIN SASL without TLS, resource binding,
//! MUC joins and groupchat messages. It is not a tokio-xmpp client on purpose: the bridge's `component` feature
//! switches xmpp-parsers' default namespace for the whole build, which would break a client's parsing.

use std::{collections::VecDeque, str::FromStr, time::Duration};

use anyhow::{Context as _, bail};
use base64::Engine as _;
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::TcpStream,
    time::Instant,
};
use xmpp_parsers::minidom::Element;

const CLIENT_NS: &str = "jabber:client";

/// Escapes text for XML content and attribute values.
pub fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;").replace('\'', "&apos;")
}

/// A logged-in XMPP account.
pub struct XmppClient {
    stream: TcpStream,
    buffer: String,
    queue: VecDeque<Element>,
    jid: String,
}

impl XmppClient {
    /// Connects to `127.0.0.1:port` and logs in as `user@localhost` with resource `test`.
    pub async fn connect(port: u16, user: &str, password: &str) -> anyhow::Result<Self> {
        let stream = TcpStream::connect(("127.0.0.1", port)).await.context("connecting to Prosody's c2s port")?;
        let mut client = Self { stream, buffer: String::new(), queue: VecDeque::new(), jid: String::new() };
        client.open_stream().await?;
        client.read_until_contains("</stream:features>").await?;
        let credentials = base64::engine::general_purpose::STANDARD.encode(format!("\0{user}\0{password}"));
        client
            .send_raw(&format!("<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{credentials}</auth>"))
            .await?;
        let answer = client.read_until_contains("</success>").await.or_else(|_| {
            if client.buffer.contains("<success") {
                Ok(String::new())
            } else {
                bail!("login failed: {}", client.buffer)
            }
        })?;
        let _ = answer;
        client.buffer.clear();
        client.open_stream().await?;
        client.read_until_contains("</stream:features>").await?;
        client.buffer.clear();
        client
            .send_raw(
                "<iq type='set' id='bind'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource>test</resource></bind></iq>",
            )
            .await?;
        let bound = client.wait_for(Duration::from_secs(10), |stanza| stanza.attr("id") == Some("bind")).await?;
        client.jid = bound
            .get_child("bind", "urn:ietf:params:xml:ns:xmpp-bind")
            .and_then(|bind| bind.get_child("jid", "urn:ietf:params:xml:ns:xmpp-bind"))
            .map(Element::text)
            .context("no JID in the bind result")?;
        client.send_raw("<presence/>").await?;
        Ok(client)
    }

    async fn open_stream(&mut self) -> anyhow::Result<()> {
        self.send_raw(
            "<?xml version='1.0'?><stream:stream to='localhost' xmlns='jabber:client' \
             xmlns:stream='http://etherx.jabber.org/streams' version='1.0'>",
        )
        .await
    }

    /// Sends raw XML.
    pub async fn send_raw(&mut self, xml: &str) -> anyhow::Result<()> {
        self.stream.write_all(xml.as_bytes()).await.context("writing to Prosody")?;
        Ok(())
    }

    async fn read_more(&mut self, deadline: Instant) -> anyhow::Result<()> {
        let mut chunk = vec![0; 65536];
        let read = tokio::time::timeout_at(deadline, self.stream.read(&mut chunk))
            .await
            .context("timed out reading from Prosody")?
            .context("reading from Prosody")?;
        if read == 0 {
            bail!("Prosody closed the connection; unread: {}", self.buffer);
        }
        self.buffer.push_str(&String::from_utf8_lossy(&chunk[..read]));
        Ok(())
    }

    async fn read_until_contains(&mut self, marker: &str) -> anyhow::Result<String> {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.buffer.contains(marker) {
            self.read_more(deadline).await.with_context(|| format!("waiting for {marker}"))?;
        }
        Ok(self.buffer.clone())
    }

    /// Takes complete top-level elements out of the buffer.
    fn split_elements(&mut self) -> anyhow::Result<()> {
        loop {
            let Some(start) = self.buffer.find('<') else { return Ok(()) };
            let rest = &self.buffer[start..];
            if rest.starts_with("<?") || rest.starts_with("<stream:stream") {
                let Some(end) = rest.find('>') else { return Ok(()) };
                self.buffer.drain(..start + end + 1);
                continue;
            }
            let mut depth = 0usize;
            let mut position = 0;
            let mut end = None;
            while let Some(open) = rest[position..].find('<') {
                let tag_start = position + open;
                let Some(close) = rest[tag_start..].find('>') else { break };
                let tag = &rest[tag_start..tag_start + close + 1];
                if tag.starts_with("</") {
                    depth = depth.saturating_sub(1);
                } else if !tag.ends_with("/>") {
                    depth += 1;
                }
                position = tag_start + close + 1;
                if depth == 0 {
                    end = Some(position);
                    break;
                }
            }
            let Some(end) = end else { return Ok(()) };
            let xml: String = self.buffer.drain(..start + end).collect::<String>()[start..].to_owned();
            if xml.starts_with("<stream:") {
                continue;
            }
            // Stanzas inherit the stream's namespace: declare it so they parse on their own.
            let name_end = xml.find([' ', '>', '/']).unwrap_or(xml.len());
            let declared = format!("{} xmlns='{CLIENT_NS}'{}", &xml[..name_end], &xml[name_end..]);
            let element = match xml.contains(" xmlns=") && xml[..xml.find('>').unwrap_or(0)].contains(" xmlns=") {
                true => Element::from_str(&xml),
                false => Element::from_str(&declared),
            }
            .with_context(|| format!("parsing {xml}"))?;
            self.queue.push_back(element);
        }
    }

    /// Waits for a stanza `predicate` holds for and takes it; stanzas passed over stay queued for later waits.
    pub async fn wait_for(
        &mut self,
        timeout: Duration,
        predicate: impl Fn(&Element) -> bool,
    ) -> anyhow::Result<Element> {
        let deadline = Instant::now() + timeout;
        loop {
            self.split_elements()?;
            if let Some(index) = self.queue.iter().position(&predicate) {
                return Ok(self.queue.remove(index).expect("the index was just found"));
            }
            if Instant::now() >= deadline {
                let seen: Vec<String> = self.queue.iter().rev().take(10).map(to_xml).collect();
                bail!("{} saw no matching stanza within {timeout:?}; last seen: {seen:#?}", self.jid);
            }
            if let Err(error) = self.read_more(deadline).await {
                if Instant::now() >= deadline {
                    continue;
                }
                return Err(error);
            }
        }
    }

    /// Joins a MUC as `nick` (with the MUC's default history) and waits for the self-presence, which it returns.
    pub async fn join_muc(&mut self, room: &str, nick: &str) -> anyhow::Result<Element> {
        self.join_muc_with(room, nick, "").await
    }

    /// Like [`XmppClient::join_muc`], with more payload XML in the join presence.
    pub async fn join_muc_with(&mut self, room: &str, nick: &str, payloads: &str) -> anyhow::Result<Element> {
        self.send_raw(&format!(
            "<presence to='{}'><x xmlns='http://jabber.org/protocol/muc'/>{payloads}</presence>",
            escape(&format!("{room}/{nick}"))
        ))
        .await?;
        self.wait_for(Duration::from_secs(10), |stanza| {
            stanza.name() == "presence"
                && stanza.attr("from").is_some_and(|from| from.starts_with(room))
                && (stanza.attr("type") == Some("error") || is_self_presence(stanza))
        })
        .await
        .and_then(|presence| match presence.attr("type") {
            Some("error") => bail!("joining {room} as {nick} failed: {}", to_xml(&presence)),
            _ => Ok(presence),
        })
    }

    /// Sends a groupchat message with a fresh ID.
    pub async fn send_groupchat(&mut self, room: &str, body: &str) -> anyhow::Result<()> {
        let id = format!("test-{:016x}", rand::random::<u64>());
        self.send_message_with("groupchat", room, &id, Some(body), "").await
    }

    /// Waits for a groupchat message from `room` whose body `predicate` holds for; returns (nick, body, stanza).
    pub async fn wait_for_groupchat(
        &mut self,
        room: &str,
        timeout: Duration,
        predicate: impl Fn(&str) -> bool,
    ) -> anyhow::Result<(String, String, Element)> {
        let prefix = format!("{room}/");
        let stanza = self
            .wait_for(timeout, |stanza| {
                stanza.name() == "message"
                    && stanza.attr("type") == Some("groupchat")
                    && stanza.attr("from").is_some_and(|from| from.starts_with(&prefix))
                    && stanza.get_child("body", CLIENT_NS).is_some_and(|body| predicate(&body.text()))
            })
            .await?;
        let nick = stanza.attr("from").unwrap_or_default()[prefix.len()..].to_owned();
        let body = stanza.get_child("body", CLIENT_NS).map(Element::text).unwrap_or_default();
        Ok((nick, body, stanza))
    }
}

impl XmppClient {
    /// Sends a one-to-one `chat` message with a fresh ID.
    pub async fn send_chat(&mut self, to: &str, body: &str) -> anyhow::Result<()> {
        let id = format!("test-{:016x}", rand::random::<u64>());
        self.send_message_with("chat", to, &id, Some(body), "").await
    }

    /// Waits for a `chat` message from the bare JID `from` whose body `predicate` holds for; returns the body.
    pub async fn wait_for_chat(
        &mut self,
        from: &str,
        timeout: Duration,
        predicate: impl Fn(&str) -> bool,
    ) -> anyhow::Result<String> {
        let stanza = self
            .wait_for_message_from(from, timeout, |stanza| {
                stanza.attr("type") == Some("chat")
                    && stanza.get_child("body", CLIENT_NS).is_some_and(|body| predicate(&body.text()))
            })
            .await?;
        Ok(stanza.get_child("body", CLIENT_NS).map(Element::text).unwrap_or_default())
    }
}

impl XmppClient {
    /// Sends a message of `kind` (`groupchat`, `chat`) with the given ID, an optional body and extra payload XML.
    pub async fn send_message_with(
        &mut self,
        kind: &str,
        to: &str,
        id: &str,
        body: Option<&str>,
        payloads: &str,
    ) -> anyhow::Result<()> {
        let body = body.map(|body| format!("<body>{}</body>", escape(body))).unwrap_or_default();
        self.send_raw(&format!(
            "<message type='{kind}' to='{}' id='{}'>{body}{payloads}</message>",
            escape(to),
            escape(id)
        ))
        .await
    }

    /// Waits for a message from `from` (a bare JID, or a MUC whose occupants send) that `predicate` holds for.
    pub async fn wait_for_message_from(
        &mut self,
        from: &str,
        timeout: Duration,
        predicate: impl Fn(&Element) -> bool,
    ) -> anyhow::Result<Element> {
        self.wait_for(timeout, |stanza| {
            stanza.name() == "message"
                && stanza.attr("from").is_some_and(|jid| jid.split('/').next() == Some(from))
                && predicate(stanza)
        })
        .await
    }

    /// Sends an IQ of `kind` (`get` or `set`) to `to` with `payload` (raw XML) and waits for its answer.
    pub async fn iq(&mut self, kind: &str, to: &str, payload: &str) -> anyhow::Result<Element> {
        let id = format!("iq-{:016x}", rand::random::<u64>());
        self.iq_with_id(kind, to, &id, payload).await
    }

    /// [`XmppClient::iq`] with the given IQ ID (a MAM query names its results after it).
    pub async fn iq_with_id(&mut self, kind: &str, to: &str, id: &str, payload: &str) -> anyhow::Result<Element> {
        self.send_raw(&format!("<iq type='{kind}' to='{}' id='{}'>{payload}</iq>", escape(to), escape(id))).await?;
        self.wait_for(Duration::from_secs(30), |stanza| stanza.name() == "iq" && stanza.attr("id") == Some(id)).await
    }

    /// Fetches the roster, as clients do after login: only then does the server pass subscription answers and
    /// roster pushes on to this session (RFC 6121 §2.1.6 "interested resources").
    pub async fn request_roster(&mut self) -> anyhow::Result<Element> {
        // Addressed to the account's own bare JID, which RFC 6121 §2.1.3 treats as no `to` at all.
        let account = self.jid.split('/').next().unwrap_or_default().to_owned();
        self.iq("get", &account, "<query xmlns='jabber:iq:roster'/>").await
    }

    /// Waits for a presence from `from` (a full or bare JID, compared exactly) whose type `predicate` holds for
    /// (`None` is available).
    pub async fn wait_for_presence(
        &mut self,
        from: &str,
        timeout: Duration,
        predicate: impl Fn(Option<&str>) -> bool,
    ) -> anyhow::Result<Element> {
        self.wait_for(timeout, |stanza| {
            stanza.name() == "presence" && stanza.attr("from") == Some(from) && predicate(stanza.attr("type"))
        })
        .await
    }
}

/// The `<stanza-id/>` a message carries from `by`.
pub fn stanza_id(stanza: &Element, by: &str) -> Option<String> {
    stanza
        .children()
        .find(|child| child.is("stanza-id", "urn:xmpp:sid:0") && child.attr("by") == Some(by))
        .and_then(|child| child.attr("id"))
        .map(str::to_owned)
}

/// The `affiliation` and `role` of the MUC `<item/>` in a presence.
pub fn muc_item(presence: &Element) -> Option<(String, String)> {
    let item = presence
        .get_child("x", "http://jabber.org/protocol/muc#user")?
        .get_child("item", "http://jabber.org/protocol/muc#user")?;
    Some((item.attr("affiliation")?.to_owned(), item.attr("role")?.to_owned()))
}

/// Whether a MUC presence carries status 110 (it is about the receiver).
pub fn is_self_presence(stanza: &Element) -> bool {
    stanza
        .get_child("x", "http://jabber.org/protocol/muc#user")
        .is_some_and(|x| x.children().any(|child| child.name() == "status" && child.attr("code") == Some("110")))
}

/// An element as XML text, for messages.
pub fn to_xml(element: &Element) -> String {
    let mut out = Vec::new();
    let _ = element.write_to(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}
