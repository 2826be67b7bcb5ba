//! One user of the appservice — a ghost of a remote user, or the bridge bot — acting on the homeserver.
//!
//! Ghosts act through [identity assertion]: the appservice's token plus `?user_id=@ghost:server`. Sends and state
//! events may carry `?ts=` ([timestamp massaging]) so that bridged history keeps the remote network's times.
//!
//! Endpoints called here (all under `/_matrix/client/v3`):
//! - [`POST /register`](https://spec.matrix.org/v1.16/application-service-api/#server-admin-style-permissions)
//!   with `m.login.application_service`
//! - [`POST /join/{roomIdOrAlias}`](https://spec.matrix.org/v1.16/client-server-api/#post_matrixclientv3joinroomidoralias)
//! - [`POST /rooms/{roomId}/leave`](https://spec.matrix.org/v1.16/client-server-api/#post_matrixclientv3roomsroomidleave),
//!   `…/invite`, `…/kick`, `…/ban`, `…/unban`
//! - [`PUT /profile/{userId}/displayname`](https://spec.matrix.org/v1.16/client-server-api/#put_matrixclientv3profileuseriddisplayname),
//!   `PUT /profile/{userId}/avatar_url`
//! - [`PUT /rooms/{roomId}/send/{eventType}/{txnId}`](https://spec.matrix.org/v1.16/client-server-api/#put_matrixclientv3roomsroomidsendeventtypetxnid)
//! - [`PUT /rooms/{roomId}/state/{eventType}/{stateKey}`](https://spec.matrix.org/v1.16/client-server-api/#put_matrixclientv3roomsroomidstateeventtypestatekey)
//! - [`PUT /rooms/{roomId}/redact/{eventId}/{txnId}`](https://spec.matrix.org/v1.16/client-server-api/#put_matrixclientv3roomsroomidredacteventidtxnid)
//! - [`PUT /rooms/{roomId}/typing/{userId}`](https://spec.matrix.org/v1.16/client-server-api/#put_matrixclientv3roomsroomidtypinguserid)
//! - [`POST /rooms/{roomId}/receipt/m.read/{eventId}`](https://spec.matrix.org/v1.16/client-server-api/#post_matrixclientv3roomsroomidreceiptreceipttypeeventid)
//! - [`POST /createRoom`](https://spec.matrix.org/v1.16/client-server-api/#post_matrixclientv3createroom)
//! - [`PUT /directory/room/{roomAlias}`](https://spec.matrix.org/v1.16/client-server-api/#put_matrixclientv3directoryroomroomalias)
//!
//! Reads (profiles, state, members, history, the room directory) are in [`reads`].
//!
//! [identity assertion]: https://spec.matrix.org/v1.16/application-service-api/#identity-assertion
//! [timestamp massaging]: https://spec.matrix.org/v1.16/application-service-api/#timestamp-massaging

use std::{fmt, time::Duration};

use ruma::{
    EventId, MilliSecondsSinceUnixEpoch, MxcUri, OwnedEventId, OwnedMxcUri, OwnedRoomId, OwnedUserId, RoomAliasId,
    RoomId, RoomOrAliasId, UserId,
    api::client::room::{Visibility, create_room::v3::RoomPreset},
};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Value, json};

use super::{
    client::{MatrixClient, Request},
    error::{MatrixError, Result},
};

pub use self::reads::{Direction, EventContext, Member, Messages, MessagesQuery};

mod reads;

const POWER_LEVELS: &str = "m.room.power_levels";

/// One user of the appservice acting on the homeserver; made by [`MatrixClient::bot`] and [`MatrixClient::intent`].
///
/// Cheap to clone. All intents of a client share its registration and membership caches, which are caches, not
/// truth: a stale entry costs one failed request, and [`MatrixClient::note_membership`] keeps them current.
#[derive(Clone)]
pub struct Intent {
    client: MatrixClient,
    user_id: OwnedUserId,
}

impl fmt::Debug for Intent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Intent").field("user_id", &self.user_id).finish_non_exhaustive()
    }
}

/// A user's public profile.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[non_exhaustive]
pub struct Profile {
    /// The display name, if set.
    #[serde(default)]
    pub displayname: Option<String>,
    /// The avatar, if set (an empty string counts as unset).
    #[serde(default, deserialize_with = "non_empty_mxc")]
    pub avatar_url: Option<OwnedMxcUri>,
}

fn non_empty_mxc<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<OwnedMxcUri>, D::Error> {
    let text = Option::<String>::deserialize(deserializer)?;
    Ok(text.filter(|text| !text.is_empty()).map(OwnedMxcUri::from))
}

/// What to create a room with; see [`Intent::create_room`].
///
/// Start from [`Default`] (a private room with no name) and set the fields needed. Serialises to the body of
/// `POST /_matrix/client/v3/createRoom`.
#[derive(Clone, Debug, Default, Serialize)]
#[non_exhaustive]
pub struct CreateRoomOptions {
    /// The room's name (`m.room.name`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The room's topic (`m.room.topic`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub topic: Option<String>,
    /// The localpart of an alias to create on this homeserver, e.g. `_irc_libera_#rust` without `#` and server.
    #[serde(rename = "room_alias_name", skip_serializing_if = "Option::is_none")]
    pub alias_localpart: Option<String>,
    /// Users to invite.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub invite: Vec<OwnedUserId>,
    /// Marks the invites as direct chats.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub is_direct: bool,
    /// Join rules and history visibility by preset; the homeserver picks by `visibility` when unset.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub preset: Option<RoomPreset>,
    /// Whether the room is published in the room directory (default: private).
    pub visibility: Visibility,
    /// State events to set at creation: `{"type": …, "state_key": …, "content": …}` each.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub initial_state: Vec<Value>,
    /// Merged over the default `m.room.power_levels` content.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub power_level_content_override: Option<Value>,
    /// Extra content of `m.room.create`, e.g. `{"m.federate": false}`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub creation_content: Option<Value>,
    /// The room version; the homeserver's default when unset.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub room_version: Option<String>,
}

#[derive(Deserialize)]
struct EventIdAnswer {
    event_id: OwnedEventId,
}

#[derive(Deserialize)]
struct RoomIdAnswer {
    room_id: OwnedRoomId,
}

impl Intent {
    pub(super) fn new(client: MatrixClient, user_id: OwnedUserId) -> Self {
        Self { client, user_id }
    }

    /// The user this intent acts as.
    pub fn user_id(&self) -> &UserId {
        &self.user_id
    }

    /// The client this intent sends through.
    pub fn client(&self) -> &MatrixClient {
        &self.client
    }

    /// Whether this is the appservice's own user.
    pub fn is_bot(&self) -> bool {
        self.user_id == self.client.bot_user_id()
    }

    /// The `?user_id=` to assert: none for the bot, whose identity is the token's.
    fn asserted(&self) -> Option<&UserId> {
        (!self.is_bot()).then_some(&*self.user_id)
    }

    /// Makes sure the user exists on the homeserver, registering it if needed (`M_USER_IN_USE` counts as done).
    ///
    /// A no-op once it succeeded for this user through any intent of the client. Only users of this homeserver
    /// within the registration's namespaces can be registered (else `M_EXCLUSIVE`).
    pub async fn ensure_registered(&self) -> Result<()> {
        if self.client.is_registered_cached(&self.user_id) {
            return Ok(());
        }
        if self.user_id.server_name() != self.client.server_name() {
            return Err(MatrixError::InvalidInput {
                what: "user ID",
                reason: format!(
                    "{} is not on this homeserver ({}), so the appservice cannot register it",
                    self.user_id,
                    self.client.server_name()
                ),
            });
        }
        let body = json!({
            "type": "m.login.application_service",
            "username": self.user_id.localpart(),
            "inhibit_login": true,
        });
        let path = ["_matrix", "client", "v3", "register"];
        match self.client.send_raw(Request::post("register", &path).json(&body)?).await {
            Ok(_) => {}
            Err(err) if err.is_errcode("M_USER_IN_USE") => {}
            Err(err) => return Err(err),
        }
        self.client.note_registered(&self.user_id);
        Ok(())
    }

    /// Makes sure the user is joined to `room_id`: registers it if needed, then joins unless the membership cache
    /// says it already is.
    ///
    /// Fails with `M_FORBIDDEN` when the room needs an invite; see [`ensure_joined_via`](Self::ensure_joined_via).
    pub async fn ensure_joined(&self, room_id: &RoomId) -> Result<()> {
        if self.client.is_joined_cached(room_id, &self.user_id) {
            return Ok(());
        }
        self.join(room_id.into()).await.map(drop)
    }

    /// Like [`ensure_joined`](Self::ensure_joined), but when the join is forbidden (the room is invite-only),
    /// `inviter` — usually the bot — invites the user and the join is tried again.
    pub async fn ensure_joined_via(&self, room_id: &RoomId, inviter: &Intent) -> Result<()> {
        match self.ensure_joined(room_id).await {
            Err(err) if err.is_errcode("M_FORBIDDEN") && inviter.user_id != self.user_id => {
                tracing::debug!(room = %room_id, user = %self.user_id, inviter = %inviter.user_id, "join forbidden; inviting");
                inviter.invite(room_id, &self.user_id).await?;
                self.ensure_joined(room_id).await
            }
            result => result,
        }
    }

    /// Joins a room by ID or alias (registering the user first if needed) and returns the room's ID.
    pub async fn join(&self, room_id_or_alias: &RoomOrAliasId) -> Result<OwnedRoomId> {
        self.ensure_registered().await?;
        let path = ["_matrix", "client", "v3", "join", room_id_or_alias.as_str()];
        let request = Request::post("join", &path).user_id(self.asserted()).json(&json!({}))?;
        let answer: RoomIdAnswer = self.client.send_json(request).await?;
        self.client.note_membership(&answer.room_id, &self.user_id, true);
        Ok(answer.room_id)
    }

    /// Leaves a room.
    pub async fn leave(&self, room_id: &RoomId) -> Result<()> {
        let path = ["_matrix", "client", "v3", "rooms", room_id.as_str(), "leave"];
        let request = Request::post("leave", &path).user_id(self.asserted()).json(&json!({}))?;
        self.client.send_raw(request).await?;
        self.client.note_membership(room_id, &self.user_id, false);
        Ok(())
    }

    /// Invites `user_id` to a room.
    pub async fn invite(&self, room_id: &RoomId, user_id: &UserId) -> Result<()> {
        self.membership_action("invite", room_id, user_id, None, false).await
    }

    /// Kicks `user_id` from a room.
    pub async fn kick(&self, room_id: &RoomId, user_id: &UserId, reason: Option<&str>) -> Result<()> {
        // A resent kick of someone already gone fails: resend only when the first surely did not arrive.
        self.membership_action("kick", room_id, user_id, reason, true).await?;
        self.client.note_membership(room_id, user_id, false);
        Ok(())
    }

    /// Bans `user_id` from a room.
    pub async fn ban(&self, room_id: &RoomId, user_id: &UserId, reason: Option<&str>) -> Result<()> {
        self.membership_action("ban", room_id, user_id, reason, false).await?;
        self.client.note_membership(room_id, user_id, false);
        Ok(())
    }

    /// Lifts a ban of `user_id` from a room.
    pub async fn unban(&self, room_id: &RoomId, user_id: &UserId, reason: Option<&str>) -> Result<()> {
        self.membership_action("unban", room_id, user_id, reason, true).await
    }

    /// `POST /rooms/{roomId}/{action}` with `{"user_id", "reason"}`.
    async fn membership_action(
        &self,
        action: &'static str,
        room_id: &RoomId,
        user_id: &UserId,
        reason: Option<&str>,
        not_idempotent: bool,
    ) -> Result<()> {
        let mut body = json!({ "user_id": user_id });
        if let Some(reason) = reason {
            body["reason"] = reason.into();
        }
        let path = ["_matrix", "client", "v3", "rooms", room_id.as_str(), action];
        let mut request = Request::post(action, &path).user_id(self.asserted()).json(&body)?;
        if not_idempotent {
            request = request.not_idempotent();
        }
        self.client.send_raw(request).await.map(drop)
    }

    /// Sets the user's display name (the homeserver also updates it in every room the user is in).
    pub async fn set_displayname(&self, displayname: &str) -> Result<()> {
        self.ensure_registered().await?;
        let path = ["_matrix", "client", "v3", "profile", self.user_id.as_str(), "displayname"];
        let request =
            Request::put("profile", &path).user_id(self.asserted()).json(&json!({ "displayname": displayname }))?;
        self.client.send_raw(request).await.map(drop)
    }

    /// Sets the user's avatar; `None` removes it.
    pub async fn set_avatar_url(&self, avatar_url: Option<&MxcUri>) -> Result<()> {
        self.ensure_registered().await?;
        let path = ["_matrix", "client", "v3", "profile", self.user_id.as_str(), "avatar_url"];
        let body = json!({ "avatar_url": avatar_url.map_or("", MxcUri::as_str) });
        let request = Request::put("profile", &path).user_id(self.asserted()).json(&body)?;
        self.client.send_raw(request).await.map(drop)
    }

    /// Sends a message event and returns its ID. The user must be joined (see [`ensure_joined`](Self::ensure_joined)).
    ///
    /// `txn_id` makes the send idempotent: the homeserver answers a repeated `txn_id` with the first event's ID
    /// instead of sending again, so the caller derives it from what is being bridged (the remote message's ID) and
    /// persists it *before* sending — then a resend after a crash, and every retry here, cannot duplicate the
    /// message. Synapse scopes transaction IDs per appservice, not per asserted user, and remembers them for about
    /// 30 minutes: make them unique across all ghosts of the bridge (for example `lattice.{network}.{msgid}`).
    ///
    /// `ts` (timestamp massaging) sets the event's `origin_server_ts`, e.g. to the remote message's time.
    pub async fn send_message_event(
        &self,
        room_id: &RoomId,
        event_type: &str,
        content: &impl Serialize,
        txn_id: &str,
        ts: Option<MilliSecondsSinceUnixEpoch>,
    ) -> Result<OwnedEventId> {
        let path = ["_matrix", "client", "v3", "rooms", room_id.as_str(), "send", event_type, txn_id];
        let request = Request::put("send", &path).user_id(self.asserted()).ts(ts).json(content)?;
        let answer: EventIdAnswer = self.client.send_json(request).await?;
        Ok(answer.event_id)
    }

    /// Sets a piece of room state and returns the event's ID; `ts` as in
    /// [`send_message_event`](Self::send_message_event).
    pub async fn send_state_event(
        &self,
        room_id: &RoomId,
        event_type: &str,
        state_key: &str,
        content: &impl Serialize,
        ts: Option<MilliSecondsSinceUnixEpoch>,
    ) -> Result<OwnedEventId> {
        let path = ["_matrix", "client", "v3", "rooms", room_id.as_str(), "state", event_type, state_key];
        let request = Request::put("state", &path).user_id(self.asserted()).ts(ts).json(content)?;
        let answer: EventIdAnswer = self.client.send_json(request).await?;
        Ok(answer.event_id)
    }

    /// Redacts an event and returns the redaction's ID; `txn_id` as in
    /// [`send_message_event`](Self::send_message_event).
    pub async fn redact(
        &self,
        room_id: &RoomId,
        event_id: &EventId,
        reason: Option<&str>,
        txn_id: &str,
    ) -> Result<OwnedEventId> {
        let path = ["_matrix", "client", "v3", "rooms", room_id.as_str(), "redact", event_id.as_str(), txn_id];
        let body = match reason {
            Some(reason) => json!({ "reason": reason }),
            None => json!({}),
        };
        let request = Request::put("redact", &path).user_id(self.asserted()).json(&body)?;
        let answer: EventIdAnswer = self.client.send_json(request).await?;
        Ok(answer.event_id)
    }

    /// Reacts to an event with `key` (an emoji, usually): an `m.reaction` with an `m.annotation` relation.
    pub async fn react(&self, room_id: &RoomId, event_id: &EventId, key: &str, txn_id: &str) -> Result<OwnedEventId> {
        self.send_message_event(room_id, "m.reaction", &reaction_content(event_id, key), txn_id, None).await
    }

    /// Starts (for `timeout`) or stops showing the user as typing.
    pub async fn typing(&self, room_id: &RoomId, typing: bool, timeout: Duration) -> Result<()> {
        let path = ["_matrix", "client", "v3", "rooms", room_id.as_str(), "typing", self.user_id.as_str()];
        let request = Request::put("typing", &path).user_id(self.asserted()).json(&typing_content(typing, timeout))?;
        self.client.send_raw(request).await.map(drop)
    }

    /// Marks the room read up to `event_id` (a public `m.read` receipt).
    pub async fn read_receipt(&self, room_id: &RoomId, event_id: &EventId) -> Result<()> {
        let path = ["_matrix", "client", "v3", "rooms", room_id.as_str(), "receipt", "m.read", event_id.as_str()];
        let request = Request::post("receipt", &path).user_id(self.asserted()).json(&json!({}))?;
        self.client.send_raw(request).await.map(drop)
    }

    /// Creates a room with this user as creator and returns its ID.
    ///
    /// Not retried after a timeout or a dropped connection, since the room may have been created; rate limits and
    /// refused connections are retried.
    pub async fn create_room(&self, options: &CreateRoomOptions) -> Result<OwnedRoomId> {
        self.ensure_registered().await?;
        let path = ["_matrix", "client", "v3", "createRoom"];
        let request = Request::post("create_room", &path).user_id(self.asserted()).json(options)?.not_idempotent();
        let answer: RoomIdAnswer = self.client.send_json(request).await?;
        self.client.note_membership(&answer.room_id, &self.user_id, true);
        Ok(answer.room_id)
    }

    /// Points an alias of this homeserver at a room. Fails (`M_UNKNOWN`, 409) when the alias exists.
    pub async fn set_room_alias(&self, alias: &RoomAliasId, room_id: &RoomId) -> Result<()> {
        let path = ["_matrix", "client", "v3", "directory", "room", alias.as_str()];
        let request = Request::put("set_alias", &path)
            .user_id(self.asserted())
            .json(&json!({ "room_id": room_id }))?
            .not_idempotent();
        self.client.send_raw(request).await.map(drop)
    }

    /// Sets `user_id`'s power level in a room by reading `m.room.power_levels`, changing that one entry and writing
    /// it back; returns the new event's ID, or `None` when the level already was `level`.
    ///
    /// Changes through this client are serialised per room, so two of them do not overwrite each other; a change by
    /// someone else between the read and the write is lost. In room version 12 and later, the creators' levels
    /// cannot be set.
    pub async fn set_power_level(
        &self,
        room_id: &RoomId,
        user_id: &UserId,
        level: i64,
    ) -> Result<Option<OwnedEventId>> {
        let lock = self.client.power_level_lock(room_id);
        let _guard = lock.lock().await;
        let mut levels = self.power_levels(room_id).await?;
        if !levels.set_user_level(user_id, level) {
            return Ok(None);
        }
        let content = Value::Object(levels.into_content());
        self.send_state_event(room_id, POWER_LEVELS, "", &content, None).await.map(Some)
    }
}

fn reaction_content(event_id: &EventId, key: &str) -> Value {
    json!({ "m.relates_to": { "rel_type": "m.annotation", "event_id": event_id, "key": key } })
}

fn typing_content(typing: bool, timeout: Duration) -> Value {
    if typing {
        json!({ "typing": true, "timeout": u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX) })
    } else {
        json!({ "typing": false })
    }
}

#[cfg(test)]
mod tests;
