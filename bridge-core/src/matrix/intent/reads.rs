//! What a user of the appservice reads of rooms and people: profiles, state, members, history and the room
//! directory. Every read goes through the client's retries and metrics.
//!
//! Endpoints called here (all under `/_matrix/client/v3`):
//! - [`GET /profile/{userId}`](https://spec.matrix.org/v1.16/client-server-api/#get_matrixclientv3profileuserid)
//! - [`GET /rooms/{roomId}/state/{eventType}/{stateKey}`](https://spec.matrix.org/v1.16/client-server-api/#get_matrixclientv3roomsroomidstateeventtypestatekey)
//!   and [`GET /rooms/{roomId}/state`](https://spec.matrix.org/v1.16/client-server-api/#get_matrixclientv3roomsroomidstate)
//! - [`GET /rooms/{roomId}/event/{eventId}`](https://spec.matrix.org/v1.16/client-server-api/#get_matrixclientv3roomsroomideventeventid)
//! - [`GET /rooms/{roomId}/joined_members`](https://spec.matrix.org/v1.16/client-server-api/#get_matrixclientv3roomsroomidjoined_members)
//! - [`GET /rooms/{roomId}/messages`](https://spec.matrix.org/v1.16/client-server-api/#get_matrixclientv3roomsroomidmessages)
//! - [`GET /rooms/{roomId}/context/{eventId}`](https://spec.matrix.org/v1.16/client-server-api/#get_matrixclientv3roomsroomidcontexteventid)
//! - [`GET /publicRooms`](https://spec.matrix.org/v1.16/client-server-api/#get_matrixclientv3publicrooms)

use std::collections::BTreeMap;

use ruma::{EventId, OwnedUserId, RoomId, UserId};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::{Intent, POWER_LEVELS, Profile};
use crate::matrix::{
    client::Request,
    error::{MatrixError, Result},
    power_levels::PowerLevels,
};

/// A joined member of a room as `joined_members` lists it: the name and avatar they have in that room.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[non_exhaustive]
pub struct Member {
    /// The display name in the room, if any.
    #[serde(default)]
    pub display_name: Option<String>,
    /// The avatar in the room (an `mxc://` URI), if any.
    #[serde(default)]
    pub avatar_url: Option<String>,
}

/// Which way a history read runs from where it starts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Direction {
    /// Towards newer events.
    Forward,
    /// Towards older events (from the newest when no start is given).
    #[default]
    Backward,
}

/// What [`Intent::messages`] reads.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MessagesQuery {
    /// The pagination token to start at (a page's `end`, a context's `start`/`end`); `None` starts at the newest
    /// event backwards, at the oldest forwards.
    pub from: Option<String>,
    /// Which way to read.
    pub direction: Direction,
    /// How many events at most.
    pub limit: usize,
    /// Only events of these types (all types when empty).
    pub types: Vec<String>,
}

impl MessagesQuery {
    /// The `limit` events of type `m.room.message` that way from `from`.
    pub fn room_messages(direction: Direction, limit: usize, from: Option<String>) -> Self {
        Self { from, direction, limit, types: vec!["m.room.message".to_owned()] }
    }
}

/// One page of a room's history.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[non_exhaustive]
pub struct Messages {
    /// The events, in the order read.
    #[serde(default)]
    pub chunk: Vec<Value>,
    /// The token the page started at.
    #[serde(default)]
    pub start: Option<String>,
    /// The token to read on from; `None` once the history ends that way.
    #[serde(default)]
    pub end: Option<String>,
}

/// Pagination tokens around one event.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[non_exhaustive]
pub struct EventContext {
    /// Reading backwards from here starts just before the event.
    #[serde(default)]
    pub start: Option<String>,
    /// Reading forwards from here starts just after the event.
    #[serde(default)]
    pub end: Option<String>,
}

impl Intent {
    /// Any user's profile, or `None` when the homeserver knows no such user.
    pub async fn get_profile(&self, user_id: &UserId) -> Result<Option<Profile>> {
        let path = ["_matrix", "client", "v3", "profile", user_id.as_str()];
        match self.client.send_json(Request::get("get_profile", &path).user_id(self.asserted())).await {
            Ok(profile) => Ok(Some(profile)),
            // Synapse answers an unknown user with `404 M_UNKNOWN` ("No row found (profiles)").
            Err(err) if err.is_not_found() || (err.status() == Some(404) && err.is_errcode("M_UNKNOWN")) => Ok(None),
            Err(err) => Err(err),
        }
    }

    /// The content of a piece of room state, or `None` when it is not set. The user must be able to see the room.
    pub async fn get_state_event(&self, room_id: &RoomId, event_type: &str, state_key: &str) -> Result<Option<Value>> {
        let path = ["_matrix", "client", "v3", "rooms", room_id.as_str(), "state", event_type, state_key];
        match self.client.send_json(Request::get("get_state", &path).user_id(self.asserted())).await {
            Ok(content) => Ok(Some(content)),
            Err(err) if err.is_not_found() => Ok(None),
            Err(err) => Err(err),
        }
    }

    /// One event of a room (`GET /_matrix/client/v3/rooms/{roomId}/event/{eventId}`), or `None` when it does not
    /// exist or the user may not see it — e.g. the text a reply quotes or an edit changes.
    pub async fn get_event(&self, room_id: &RoomId, event_id: &EventId) -> Result<Option<Value>> {
        let path = ["_matrix", "client", "v3", "rooms", room_id.as_str(), "event", event_id.as_str()];
        match self.client.send_json(Request::get("get_event", &path).user_id(self.asserted())).await {
            Ok(event) => Ok(Some(event)),
            Err(err) if err.is_not_found() => Ok(None),
            Err(err) => Err(err),
        }
    }

    /// The users joined to a room, as the homeserver sees it now. The user must be in the room.
    pub async fn joined_members(&self, room_id: &RoomId) -> Result<Vec<OwnedUserId>> {
        Ok(self.joined_member_profiles(room_id).await?.into_keys().collect())
    }

    /// The users joined to a room with their display names and avatars in it (`GET
    /// /rooms/{roomId}/joined_members`). The user must be in the room.
    pub async fn joined_member_profiles(&self, room_id: &RoomId) -> Result<BTreeMap<OwnedUserId, Member>> {
        #[derive(Deserialize)]
        struct Answer {
            #[serde(default)]
            joined: BTreeMap<OwnedUserId, Member>,
        }
        let path = ["_matrix", "client", "v3", "rooms", room_id.as_str(), "joined_members"];
        let answer: Answer =
            self.client.send_json(Request::get("joined_members", &path).user_id(self.asserted())).await?;
        Ok(answer.joined)
    }

    /// The room's whole current state, as events (`GET /rooms/{roomId}/state`). The user must be able to see the
    /// room.
    pub async fn room_state(&self, room_id: &RoomId) -> Result<Vec<Value>> {
        let path = ["_matrix", "client", "v3", "rooms", room_id.as_str(), "state"];
        self.client.send_json(Request::get("room_state", &path).user_id(self.asserted())).await
    }

    /// One page of a room's history (`GET /rooms/{roomId}/messages`), in the order read: newest first when
    /// reading backwards. The user must be able to see the room.
    pub async fn messages(&self, room_id: &RoomId, query: &MessagesQuery) -> Result<Messages> {
        let path = ["_matrix", "client", "v3", "rooms", room_id.as_str(), "messages"];
        let dir = match query.direction {
            Direction::Forward => "f",
            Direction::Backward => "b",
        };
        let mut request = Request::get("messages", &path).query("dir", dir).query("limit", query.limit.to_string());
        if let Some(from) = &query.from {
            request = request.query("from", from.as_str());
        }
        if !query.types.is_empty() {
            request = request.query("filter", json!({ "types": query.types }).to_string());
        }
        self.client.send_json(request.user_id(self.asserted())).await
    }

    /// The pagination tokens around one event (`GET /rooms/{roomId}/context/{eventId}?limit=0`), to read the
    /// history before or after it with [`messages`](Self::messages).
    pub async fn event_context(&self, room_id: &RoomId, event_id: &EventId) -> Result<EventContext> {
        let path = ["_matrix", "client", "v3", "rooms", room_id.as_str(), "context", event_id.as_str()];
        let request = Request::get("context", &path).query("limit", "0").user_id(self.asserted());
        self.client.send_json(request).await
    }

    /// The first `limit` rooms of the homeserver's public room directory (`GET /publicRooms`), as its `chunk`
    /// entries (`room_id`, `canonical_alias`, `name`, `topic`, …).
    pub async fn public_rooms(&self, limit: u32) -> Result<Vec<Value>> {
        #[derive(Deserialize)]
        struct Answer {
            #[serde(default)]
            chunk: Vec<Value>,
        }
        let path = ["_matrix", "client", "v3", "publicRooms"];
        let request = Request::get("public_rooms", &path).query("limit", limit.to_string()).user_id(self.asserted());
        let answer: Answer = self.client.send_json(request).await?;
        Ok(answer.chunk)
    }

    /// The room's power levels; empty (every default) when the room has no `m.room.power_levels` event.
    pub async fn power_levels(&self, room_id: &RoomId) -> Result<PowerLevels> {
        let Some(content) = self.get_state_event(room_id, POWER_LEVELS, "").await? else {
            return Ok(PowerLevels::default());
        };
        let content: Map<String, Value> =
            serde_json::from_value(content).map_err(|source| MatrixError::Decode { endpoint: "get_state", source })?;
        Ok(PowerLevels::from_content(content))
    }
}

#[cfg(test)]
mod tests {
    use ruma::{event_id, room_id};

    use super::*;
    use crate::{connector::ConnectorInfo, testing::FakeHomeserver};

    async fn bot(homeserver: &FakeHomeserver) -> Intent {
        let info = ConnectorInfo { protocol_id: "test", protocol_name: "Test", command_prefix: "!test" };
        homeserver.bridge(info).await.matrix().bot()
    }

    fn last_path(homeserver: &FakeHomeserver) -> String {
        homeserver.received().last().map(|request| request.path.clone()).unwrap_or_default()
    }

    #[tokio::test]
    async fn members_come_with_their_names_in_the_room() {
        let homeserver = FakeHomeserver::start().await;
        homeserver.route(
            "GET",
            "/joined_members",
            200,
            json!({"joined": {
                "@alice:example.org": {"display_name": "Alice", "avatar_url": "mxc://example.org/a"},
                "@bob:example.org": {},
            }}),
        );
        let bot = bot(&homeserver).await;
        let members = bot.joined_member_profiles(room_id!("!r:example.org")).await.unwrap();
        let names: Vec<(&str, Option<&str>)> =
            members.iter().map(|(user, member)| (user.as_str(), member.display_name.as_deref())).collect();
        assert_eq!(names, [("@alice:example.org", Some("Alice")), ("@bob:example.org", None)]);
        assert_eq!(members.values().next().unwrap().avatar_url.as_deref(), Some("mxc://example.org/a"));
        assert_eq!(last_path(&homeserver), "/_matrix/client/v3/rooms/%21r%3Aexample.org/joined_members");
        let users = bot.joined_members(room_id!("!r:example.org")).await.unwrap();
        assert_eq!(users, ["@alice:example.org", "@bob:example.org"]);
    }

    #[tokio::test]
    async fn room_state_is_the_list_of_state_events() {
        let homeserver = FakeHomeserver::start().await;
        let bot = bot(&homeserver).await;
        assert_eq!(bot.room_state(room_id!("!r:example.org")).await.unwrap(), Vec::<Value>::new());
        let create = json!({"type": "m.room.create", "state_key": "", "sender": "@a:example.org", "content": {}});
        homeserver.route("GET", "/state", 200, json!([create]));
        assert_eq!(bot.room_state(room_id!("!r:example.org")).await.unwrap(), [create]);
        assert_eq!(last_path(&homeserver), "/_matrix/client/v3/rooms/%21r%3Aexample.org/state");
    }

    #[tokio::test]
    async fn history_pages_carry_direction_limit_start_and_type_filter() {
        let homeserver = FakeHomeserver::start().await;
        let message = json!({"type": "m.room.message", "event_id": "$m", "content": {"body": "hi"}});
        homeserver.route("GET", "/messages", 200, json!({"chunk": [message], "start": "t1", "end": "t2"}));
        let bot = bot(&homeserver).await;
        let room = room_id!("!r:example.org");

        let query = MessagesQuery::room_messages(Direction::Backward, 20, None);
        let page = bot.messages(room, &query).await.unwrap();
        assert_eq!((page.chunk, page.start.as_deref(), page.end.as_deref()), (vec![message], Some("t1"), Some("t2")));
        assert_eq!(
            last_path(&homeserver),
            "/_matrix/client/v3/rooms/%21r%3Aexample.org/messages?dir=b&limit=20\
             &filter=%7B%22types%22%3A%5B%22m.room.message%22%5D%7D"
        );

        let query = MessagesQuery { from: Some("t2".into()), direction: Direction::Forward, limit: 5, types: vec![] };
        bot.messages(room, &query).await.unwrap();
        assert_eq!(
            last_path(&homeserver),
            "/_matrix/client/v3/rooms/%21r%3Aexample.org/messages?dir=f&limit=5&from=t2"
        );
    }

    #[tokio::test]
    async fn history_reads_are_retried_through_the_client() {
        let homeserver = FakeHomeserver::start().await;
        homeserver.route("GET", "/messages", 502, json!({"errcode": "M_UNKNOWN", "error": "bad gateway"}));
        let bot = bot(&homeserver).await;
        let query = MessagesQuery::room_messages(Direction::Backward, 1, None);
        let err = bot.messages(room_id!("!r:example.org"), &query).await.unwrap_err();
        assert_eq!(err.status(), Some(502));
        let attempts = homeserver.received().iter().filter(|request| request.path.contains("/messages")).count();
        assert_eq!(attempts, crate::matrix::RetryPolicy::default().max_attempts as usize);
    }

    #[tokio::test]
    async fn an_event_context_gives_tokens_either_side() {
        let homeserver = FakeHomeserver::start().await;
        homeserver.route("GET", "/context/", 200, json!({"start": "before", "end": "after", "events_before": []}));
        let bot = bot(&homeserver).await;
        let context = bot.event_context(room_id!("!r:example.org"), event_id!("$e:example.org")).await.unwrap();
        assert_eq!((context.start.as_deref(), context.end.as_deref()), (Some("before"), Some("after")));
        assert_eq!(
            last_path(&homeserver),
            "/_matrix/client/v3/rooms/%21r%3Aexample.org/context/%24e%3Aexample.org?limit=0"
        );
    }

    #[tokio::test]
    async fn the_room_directory_lists_its_chunk() {
        let homeserver = FakeHomeserver::start().await;
        let bot = bot(&homeserver).await;
        assert!(bot.public_rooms(10).await.unwrap().is_empty());
        let room = json!({"room_id": "!r:example.org", "canonical_alias": "#rust:example.org", "name": "Rust"});
        homeserver.route("GET", "/publicRooms", 200, json!({"chunk": [room], "next_batch": "n"}));
        assert_eq!(bot.public_rooms(10).await.unwrap(), [room]);
        assert_eq!(last_path(&homeserver), "/_matrix/client/v3/publicRooms?limit=10");
    }
}
