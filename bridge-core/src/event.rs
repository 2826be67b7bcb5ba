//! Events as connectors see them: Matrix events parsed from the homeserver's JSON (with their relations resolved to
//! remote message IDs through the message map), and remote events the connectors push towards Matrix.
//!
//! Matrix events arrive as raw JSON (`Raw<T>` at the HTTP edge) and are parsed here, one at a time, when their turn in
//! the portal queue comes: an event whose content is not what its type promises becomes [`MatrixEventKind::Other`]
//! rather than an error, so nothing after it is held up.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::formatting::RichText;

/// An event from the homeserver, ready for a connector.
#[derive(Debug, Clone, PartialEq)]
pub struct MatrixEvent {
    /// The event ID (absent on ephemeral events: typing, receipts).
    pub event_id: Option<String>,
    /// The room it happened in.
    pub room_id: String,
    /// Who sent it (absent on ephemeral events).
    pub sender: Option<String>,
    /// The event type, e.g. `m.room.message`.
    pub event_type: String,
    /// The homeserver's timestamp, in milliseconds since the Unix epoch.
    pub origin_server_ts: Option<u64>,
    /// What happened.
    pub kind: MatrixEventKind,
    /// The whole event as received, for what the parsed form does not carry.
    pub raw: Value,
}

/// What a Matrix event means to a bridge.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum MatrixEventKind {
    /// A new message.
    Message(Message),
    /// A replacement (`m.replace`) of an earlier message.
    Edit {
        /// The edited event.
        target: Relation,
        /// The new content.
        new_content: Message,
    },
    /// A redaction of an earlier event.
    Redaction {
        /// The redacted event.
        target: Relation,
        /// The reason given.
        reason: Option<String>,
    },
    /// A reaction (`m.annotation`) to an earlier event.
    Reaction {
        /// The event reacted to.
        target: Relation,
        /// The reaction key, usually an emoji.
        key: String,
    },
    /// A membership change (`m.room.member`).
    Membership {
        /// Whose membership changed (the state key).
        user_id: String,
        /// `join`, `leave`, `invite`, `ban` or `knock`.
        membership: String,
        /// The display name in the member event.
        displayname: Option<String>,
        /// Whether the invite marks a direct chat.
        is_direct: bool,
        /// The reason given (kicks, bans).
        reason: Option<String>,
    },
    /// The room topic changed.
    Topic(String),
    /// The room name changed.
    Name(String),
    /// Who is typing now (ephemeral `m.typing`).
    Typing {
        /// Everyone typing in the room.
        user_ids: Vec<String>,
    },
    /// Read receipts (ephemeral `m.receipt`): (event ID, user ID) pairs.
    Receipts(Vec<(String, String)>),
    /// Anything else.
    Other,
}

/// An earlier event that a new one relates to, with the remote messages it became (empty if it was never bridged).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Relation {
    /// The related Matrix event.
    pub event_id: String,
    /// The remote message IDs it maps to, oldest first.
    pub remote_ids: Vec<String>,
}

/// The kind of a message, from its `msgtype`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MessageType {
    /// `m.text`.
    Text,
    /// `m.notice`.
    Notice,
    /// `m.emote` (`/me`).
    Emote,
    /// `m.image`.
    Image,
    /// `m.file`.
    File,
    /// `m.video`.
    Video,
    /// `m.audio`.
    Audio,
}

impl MessageType {
    /// Parses a `msgtype`; unknown types are carried as text, as the spec asks clients to do.
    pub fn from_msgtype(msgtype: &str) -> Self {
        match msgtype {
            "m.notice" => Self::Notice,
            "m.emote" => Self::Emote,
            "m.image" => Self::Image,
            "m.file" => Self::File,
            "m.video" => Self::Video,
            "m.audio" => Self::Audio,
            _ => Self::Text,
        }
    }

    /// The `msgtype` string.
    pub fn as_msgtype(&self) -> &'static str {
        match self {
            Self::Text => "m.text",
            Self::Notice => "m.notice",
            Self::Emote => "m.emote",
            Self::Image => "m.image",
            Self::File => "m.file",
            Self::Video => "m.video",
            Self::Audio => "m.audio",
        }
    }

    /// Whether the message carries a file rather than text.
    pub fn is_media(&self) -> bool {
        matches!(self, Self::Image | Self::File | Self::Video | Self::Audio)
    }
}

/// A Matrix message's content.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    /// Its kind.
    pub msgtype: MessageType,
    /// The text, parsed into the rich-text IR (reply fallbacks removed).
    pub text: RichText,
    /// The attached file, for media messages.
    pub media: Option<Media>,
    /// The message it replies to.
    pub reply_to: Option<Relation>,
}

/// A file attached to a Matrix message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Media {
    /// The `mxc://` URI.
    pub url: String,
    /// The file name shown to people.
    pub filename: String,
    /// The MIME type, if given.
    pub mimetype: Option<String>,
    /// The size in bytes, if given.
    pub size: Option<u64>,
}

fn string(value: &Value, pointer: &str) -> Option<String> {
    value.pointer(pointer).and_then(Value::as_str).map(str::to_owned)
}

/// Parses a message content object. `None` when it has no usable `body`.
fn parse_message(content: &Value) -> Option<(Message, Option<String>)> {
    let body = content.get("body")?.as_str()?;
    let msgtype = MessageType::from_msgtype(content.get("msgtype").and_then(Value::as_str).unwrap_or("m.text"));
    let text = RichText::from_message(
        body,
        content.get("formatted_body").and_then(Value::as_str),
        content.get("format").and_then(Value::as_str),
    );
    let media = if msgtype.is_media() {
        string(content, "/url").map(|url| Media {
            url,
            filename: string(content, "/filename").unwrap_or_else(|| body.to_owned()),
            mimetype: string(content, "/info/mimetype"),
            size: content.pointer("/info/size").and_then(Value::as_u64),
        })
    } else {
        None
    };
    let reply_to = string(content, "/m.relates_to/m.in_reply_to/event_id");
    Some((Message { msgtype, text, media, reply_to: None }, reply_to))
}

impl MatrixEvent {
    /// Parses one event, leaving the relations' remote IDs empty for the caller to fill from the message map.
    /// `None` when it lacks the fields every room event has (`type`, `room_id`).
    pub(crate) fn parse(raw: Value) -> Option<Self> {
        let event_type = string(&raw, "/type")?;
        let room_id = string(&raw, "/room_id")?;
        let kind = kind_of(&event_type, &raw);
        Some(Self {
            event_id: string(&raw, "/event_id"),
            room_id,
            sender: string(&raw, "/sender"),
            event_type,
            origin_server_ts: raw.get("origin_server_ts").and_then(Value::as_u64),
            kind,
            raw,
        })
    }

    /// The relations whose remote IDs must be looked up before the event is complete.
    pub(crate) fn relations_mut(&mut self) -> Vec<&mut Relation> {
        match &mut self.kind {
            MatrixEventKind::Message(message) => message.reply_to.iter_mut().collect(),
            MatrixEventKind::Edit { target, new_content } => {
                let mut relations = vec![target];
                relations.extend(new_content.reply_to.iter_mut());
                relations
            }
            MatrixEventKind::Redaction { target, .. } | MatrixEventKind::Reaction { target, .. } => vec![target],
            _ => Vec::new(),
        }
    }
}

/// What an event of `event_type` is, from its JSON (`raw`); relations' remote IDs are left empty.
fn kind_of(event_type: &str, raw: &Value) -> MatrixEventKind {
    let empty = Value::Object(Default::default());
    let content = raw.get("content").unwrap_or(&empty);
    let relation = |event_id: String| Relation { event_id, remote_ids: Vec::new() };
    let rel_type = content.pointer("/m.relates_to/rel_type").and_then(Value::as_str);
    match event_type {
        "m.room.message" | "m.sticker" if rel_type == Some("m.replace") => {
            let target = string(content, "/m.relates_to/event_id");
            let new_content = content.get("m.new_content").and_then(parse_message);
            match (target, new_content) {
                (Some(target), Some((new_content, _))) => {
                    MatrixEventKind::Edit { target: relation(target), new_content }
                }
                _ => MatrixEventKind::Other,
            }
        }
        "m.room.message" | "m.sticker" => match parse_message(content) {
            Some((mut message, reply_to)) => {
                message.reply_to = reply_to.map(relation);
                MatrixEventKind::Message(message)
            }
            None => MatrixEventKind::Other,
        },
        "m.room.redaction" => {
            // Room versions 11+ carry `redacts` in the content; older ones at the top level.
            match string(content, "/redacts").or_else(|| string(raw, "/redacts")) {
                Some(target) => {
                    MatrixEventKind::Redaction { target: relation(target), reason: string(content, "/reason") }
                }
                None => MatrixEventKind::Other,
            }
        }
        "m.reaction" if rel_type == Some("m.annotation") => {
            match (string(content, "/m.relates_to/event_id"), string(content, "/m.relates_to/key")) {
                (Some(target), Some(key)) => MatrixEventKind::Reaction { target: relation(target), key },
                _ => MatrixEventKind::Other,
            }
        }
        "m.room.member" => match (string(raw, "/state_key"), string(content, "/membership")) {
            (Some(user_id), Some(membership)) => MatrixEventKind::Membership {
                user_id,
                membership,
                displayname: string(content, "/displayname"),
                is_direct: content.get("is_direct").and_then(Value::as_bool).unwrap_or(false),
                reason: string(content, "/reason"),
            },
            _ => MatrixEventKind::Other,
        },
        "m.room.topic" => string(content, "/topic").map_or(MatrixEventKind::Other, MatrixEventKind::Topic),
        "m.room.name" => string(content, "/name").map_or(MatrixEventKind::Other, MatrixEventKind::Name),
        "m.typing" => MatrixEventKind::Typing {
            user_ids: content
                .get("user_ids")
                .and_then(Value::as_array)
                .map(|ids| ids.iter().filter_map(Value::as_str).map(str::to_owned).collect())
                .unwrap_or_default(),
        },
        "m.receipt" => MatrixEventKind::Receipts(read_receipts(content)),
        _ => MatrixEventKind::Other,
    }
}

/// The public read receipts (`m.read`) of an `m.receipt` content, as (event ID, user ID) pairs.
fn read_receipts(content: &Value) -> Vec<(String, String)> {
    content
        .as_object()
        .into_iter()
        .flatten()
        .flat_map(|(event_id, receipts)| {
            receipts
                .get("m.read")
                .and_then(Value::as_object)
                .into_iter()
                .flat_map(|readers| readers.keys())
                .map(move |user_id| (event_id.clone(), user_id.clone()))
        })
        .collect()
}

/// Something that happened on a remote network, pushed by a connector towards a portal room.
///
/// It is persisted before anything is sent to the homeserver, so its fields are serialisable.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoteEvent {
    /// The portal's remote key.
    pub portal: String,
    /// The remote person it came from; `None` for the network itself (the bridge bot speaks).
    pub sender: Option<crate::connector::GhostSpec>,
    /// The network's ID for this message, recorded in the message map.
    pub remote_id: Option<String>,
    /// When it happened on the network (milliseconds since the Unix epoch), for the homeserver's `ts` massaging.
    pub timestamp_ms: Option<u64>,
    /// What happened.
    pub kind: RemoteEventKind,
}

/// What a [`RemoteEvent`] carries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
#[non_exhaustive]
pub enum RemoteEventKind {
    /// A message.
    Message {
        /// Text, notice or emote (media is sent as a link in the text for now).
        msgtype: MessageType,
        /// Plain-text body.
        body: String,
        /// `org.matrix.custom.html` body, when formatted.
        html: Option<String>,
        /// The remote ID of the message it replies to.
        reply_to: Option<String>,
    },
    /// A file, already uploaded to the homeserver (see [`MatrixClient::upload_media`](crate::matrix::MatrixClient)).
    Media {
        /// Image, file, video or audio.
        msgtype: MessageType,
        /// The file name shown to people.
        filename: String,
        /// The `mxc://` URI of the upload.
        url: String,
        /// The MIME type.
        mimetype: Option<String>,
        /// The size in bytes.
        size: Option<u64>,
    },
    /// A correction of an earlier message.
    Edit {
        /// The remote ID of the corrected message.
        target: String,
        /// New plain-text body.
        body: String,
        /// New HTML body.
        html: Option<String>,
    },
    /// A deletion of an earlier message.
    Redaction {
        /// The remote ID of the deleted message.
        target: String,
        /// Why.
        reason: Option<String>,
    },
    /// A reaction to an earlier message.
    Reaction {
        /// The remote ID of the message reacted to.
        target: String,
        /// The reaction key.
        key: String,
    },
    /// The sender joined the conversation.
    Join,
    /// The sender left the conversation.
    Leave {
        /// The reason given (a quit message).
        reason: Option<String>,
    },
    /// The sender removed someone.
    Kick {
        /// The Matrix user ID of who was removed.
        user_id: String,
        /// Why.
        reason: Option<String>,
    },
    /// The sender banned someone from the conversation.
    Ban {
        /// The Matrix user ID of who was banned.
        user_id: String,
        /// Why.
        reason: Option<String>,
    },
    /// The topic changed.
    Topic {
        /// The new topic.
        topic: String,
    },
    /// The sender's profile changed.
    Profile,
    /// The sender read the conversation up to a message (their read receipt moves there).
    Receipt {
        /// The remote ID of the message read.
        target: String,
    },
    /// The sender started or stopped typing.
    Typing {
        /// Typing now.
        typing: bool,
    },
    /// A Matrix user's power level should change (mode changes).
    PowerLevel {
        /// Whose.
        user_id: String,
        /// The new level.
        level: i64,
    },
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn parse(raw: Value) -> MatrixEventKind {
        MatrixEvent::parse(raw).expect("parses").kind
    }

    #[test]
    fn receipts_survive_the_remote_queue() {
        let event = RemoteEvent {
            portal: "p".into(),
            sender: None,
            remote_id: None,
            timestamp_ms: None,
            kind: RemoteEventKind::Receipt { target: "m1".into() },
        };
        let json = serde_json::to_string(&event).unwrap();
        assert!(json.contains(r#""kind":"receipt""#), "{json}");
        assert_eq!(serde_json::from_str::<RemoteEvent>(&json).unwrap(), event);
    }

    #[test]
    fn events_without_type_or_room_are_rejected() {
        assert!(MatrixEvent::parse(json!({"room_id": "!r"})).is_none());
        assert!(MatrixEvent::parse(json!({"type": "m.room.message"})).is_none());
        assert!(MatrixEvent::parse(json!("not an object")).is_none());
    }

    #[test]
    fn each_event_type_maps_to_its_kind() {
        let room = "!r:hs";
        let cases = [
            (
                json!({"type": "m.room.message", "room_id": room, "content": {"msgtype": "m.emote", "body": "waves"}}),
                "message",
            ),
            (json!({"type": "m.room.message", "room_id": room, "content": {"msgtype": "m.text"}}), "other"),
            (
                json!({"type": "m.room.message", "room_id": room, "content": {"body": "* fixed", "msgtype": "m.text",
                    "m.new_content": {"body": "fixed", "msgtype": "m.text"},
                    "m.relates_to": {"rel_type": "m.replace", "event_id": "$orig"}}}),
                "edit",
            ),
            (json!({"type": "m.room.redaction", "room_id": room, "redacts": "$old", "content": {}}), "redaction"),
            (json!({"type": "m.room.redaction", "room_id": room, "content": {"redacts": "$new"}}), "redaction"),
            (
                json!({"type": "m.reaction", "room_id": room, "content": {"m.relates_to":
                    {"rel_type": "m.annotation", "event_id": "$m", "key": "👍"}}}),
                "reaction",
            ),
            (
                json!({"type": "m.room.member", "room_id": room, "state_key": "@a:hs",
                    "content": {"membership": "invite", "is_direct": true}}),
                "membership",
            ),
            (json!({"type": "m.room.topic", "room_id": room, "content": {"topic": "t"}}), "topic"),
            (json!({"type": "m.typing", "room_id": room, "content": {"user_ids": ["@a:hs"]}}), "typing"),
            (
                json!({"type": "m.receipt", "room_id": room, "content": {"$e": {"m.read": {"@a:hs": {"ts": 1}}}}}),
                "receipts",
            ),
            (json!({"type": "org.example.custom", "room_id": room, "content": {}}), "other"),
        ];
        for (raw, expected) in cases {
            let kind = parse(raw.clone());
            let name = match kind {
                MatrixEventKind::Message(_) => "message",
                MatrixEventKind::Edit { .. } => "edit",
                MatrixEventKind::Redaction { .. } => "redaction",
                MatrixEventKind::Reaction { .. } => "reaction",
                MatrixEventKind::Membership { .. } => "membership",
                MatrixEventKind::Topic(_) => "topic",
                MatrixEventKind::Name(_) => "name",
                MatrixEventKind::Typing { .. } => "typing",
                MatrixEventKind::Receipts(_) => "receipts",
                MatrixEventKind::Other => "other",
            };
            assert_eq!(name, expected, "{raw}");
        }
    }

    #[test]
    fn message_fields_are_carried() {
        let kind = parse(json!({"type": "m.room.message", "room_id": "!r", "content": {
            "msgtype": "m.image", "body": "cat.png", "url": "mxc://hs/abc",
            "info": {"mimetype": "image/png", "size": 42},
            "m.relates_to": {"m.in_reply_to": {"event_id": "$parent"}}}}));
        let MatrixEventKind::Message(message) = kind else { panic!("not a message: {kind:?}") };
        assert_eq!(message.msgtype, MessageType::Image);
        assert_eq!(
            message.media,
            Some(Media {
                url: "mxc://hs/abc".into(),
                filename: "cat.png".into(),
                mimetype: Some("image/png".into()),
                size: Some(42)
            })
        );
        assert_eq!(message.reply_to.map(|relation| relation.event_id), Some("$parent".to_owned()));
    }

    #[test]
    fn receipts_list_every_reader() {
        let kind = parse(json!({"type": "m.receipt", "room_id": "!r", "content": {
            "$e1": {"m.read": {"@a:hs": {"ts": 1}, "@b:hs": {"ts": 2}}}}}));
        let MatrixEventKind::Receipts(mut receipts) = kind else { panic!() };
        receipts.sort();
        assert_eq!(receipts, [("$e1".to_owned(), "@a:hs".to_owned()), ("$e1".to_owned(), "@b:hs".to_owned())]);
    }

    #[test]
    fn remote_events_round_trip_through_json() {
        let event = RemoteEvent {
            portal: "net/#chan".into(),
            sender: None,
            remote_id: Some("msg1".into()),
            timestamp_ms: Some(1_700_000_000_000),
            kind: RemoteEventKind::Message {
                msgtype: MessageType::Emote,
                body: "waves".into(),
                html: None,
                reply_to: None,
            },
        };
        let text = serde_json::to_string(&event).unwrap();
        assert_eq!(serde_json::from_str::<RemoteEvent>(&text).unwrap(), event);
    }
}
