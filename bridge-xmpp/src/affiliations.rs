//! MUC affiliations and roles ([XEP-0045 §5](https://xmpp.org/extensions/xep-0045.html#connections)) ⇄ Matrix
//! power levels ([`m.room.power_levels`](https://spec.matrix.org/v1.16/client-server-api/#mroompower_levels)).
//!
//! XMPP → Matrix (MUC portals): an occupant's ghost gets the higher of two levels, one for the affiliation (kept
//! by the MUC across visits) and one for the role (this visit): owner 100, admin 50, moderator 50, everyone else
//! 0. Matrix has nothing like a visitor without voice short of lowering `events_default`, which would silence
//! every ghost, so a visitor is 0 like a participant.
//!
//! Matrix → XMPP (gateway MUCs): a member at 100 or more (and a room version 12 creator, who outranks every
//! level) is an owner and moderator, one at 50 or more an admin and moderator, anyone else a member and
//! participant. The occupants see the change when `m.room.power_levels` changes.

use std::collections::{HashMap, HashSet};

use lattice_bridge_core::matrix::PowerLevels;
use serde_json::{Map, Value};
use tokio_xmpp::parsers::muc::user::{Affiliation, Role};

/// The level of a MUC owner's ghost.
pub(crate) const OWNER_LEVEL: i64 = 100;
/// The level of a MUC admin's or moderator's ghost, and the least level a Matrix user needs to be a moderator.
pub(crate) const MODERATOR_LEVEL: i64 = 50;

/// The Matrix power level of a MUC occupant's ghost.
pub(crate) fn level_of(affiliation: &Affiliation, role: &Role) -> i64 {
    let by_affiliation = match affiliation {
        Affiliation::Owner => OWNER_LEVEL,
        Affiliation::Admin => MODERATOR_LEVEL,
        Affiliation::Member | Affiliation::None | Affiliation::Outcast => 0,
    };
    let by_role = match role {
        Role::Moderator => MODERATOR_LEVEL,
        Role::Participant | Role::Visitor | Role::None => 0,
    };
    by_affiliation.max(by_role)
}

/// The affiliation and role shown to XMPP occupants of a gateway MUC for a Matrix power level.
pub(crate) fn rank_of(level: i64) -> (Affiliation, Role) {
    if level >= OWNER_LEVEL {
        (Affiliation::Owner, Role::Moderator)
    } else if level >= MODERATOR_LEVEL {
        (Affiliation::Admin, Role::Moderator)
    } else {
        (Affiliation::Member, Role::Participant)
    }
}

/// Who holds which level in a Matrix room: its power levels, and the room version 12 creators above them.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct RoomPower {
    levels: PowerLevels,
    creators: HashSet<String>,
}

impl RoomPower {
    /// Reads the room's state (`GET /_matrix/client/v3/rooms/{roomId}/state`): `m.room.power_levels`, and
    /// `m.room.create` for the creators of rooms whose version (12 and later) makes them outrank every level.
    pub(crate) fn from_state(state: &[Value]) -> Self {
        let mut power = Self::default();
        for event in state {
            let content = event.get("content").and_then(Value::as_object);
            match event.get("type").and_then(Value::as_str) {
                Some("m.room.power_levels") => {
                    power.levels = PowerLevels::from_content(content.cloned().unwrap_or_default());
                }
                Some("m.room.create") => {
                    let version = content.and_then(|content| content.get("room_version")).and_then(Value::as_str);
                    if version.and_then(|version| version.parse::<u32>().ok()).is_some_and(|version| version >= 12) {
                        let sender = event.get("sender").and_then(Value::as_str).map(str::to_owned);
                        let additional = content
                            .and_then(|content| content.get("additional_creators"))
                            .and_then(Value::as_array)
                            .into_iter()
                            .flatten()
                            .filter_map(Value::as_str)
                            .map(str::to_owned);
                        power.creators = sender.into_iter().chain(additional).collect();
                    }
                }
                _ => {}
            }
        }
        power
    }

    /// The same creators with new power levels content.
    pub(crate) fn with_levels(&self, content: Map<String, Value>) -> Self {
        Self { levels: PowerLevels::from_content(content), creators: self.creators.clone() }
    }

    /// A user's level; creators of version 12 rooms count as owners.
    pub(crate) fn level(&self, user_id: &str) -> i64 {
        if self.creators.contains(user_id) {
            return OWNER_LEVEL;
        }
        match ruma::UserId::parse(user_id) {
            Ok(user) => self.levels.user_level(&user),
            Err(_) => self.levels.users_default(),
        }
    }

    /// The users among `users` whose rank differs between `self` and `new`.
    pub(crate) fn changed_ranks<'a>(&self, new: &Self, users: impl IntoIterator<Item = &'a String>) -> Vec<String> {
        users.into_iter().filter(|user| rank_of(self.level(user)) != rank_of(new.level(user))).cloned().collect()
    }
}

/// Levels remembered per ghost, to push a change only when there is one.
pub(crate) type KnownLevels = HashMap<String, i64>;

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn occupants_map_to_levels() {
        use Affiliation as A;
        use Role as R;
        for (affiliation, role, level) in [
            (A::Owner, R::Moderator, 100),
            (A::Admin, R::Moderator, 50),
            (A::Member, R::Moderator, 50),
            (A::None, R::Moderator, 50),
            (A::Member, R::Participant, 0),
            (A::None, R::Visitor, 0),
            (A::Outcast, R::None, 0),
        ] {
            assert_eq!(level_of(&affiliation, &role), level, "{affiliation:?}/{role:?}");
        }
    }

    #[test]
    fn levels_map_to_ranks() {
        assert_eq!(rank_of(150), (Affiliation::Owner, Role::Moderator));
        assert_eq!(rank_of(100), (Affiliation::Owner, Role::Moderator));
        assert_eq!(rank_of(99), (Affiliation::Admin, Role::Moderator));
        assert_eq!(rank_of(50), (Affiliation::Admin, Role::Moderator));
        assert_eq!(rank_of(49), (Affiliation::Member, Role::Participant));
        assert_eq!(rank_of(-1), (Affiliation::Member, Role::Participant));
    }

    #[test]
    fn creators_of_version_12_rooms_are_owners() {
        let state = [
            json!({"type": "m.room.create", "sender": "@a:x", "content": {"room_version": "12",
                "additional_creators": ["@b:x"]}}),
            json!({"type": "m.room.power_levels", "content": {"users": {"@c:x": 50, "@d:x": "100"}}}),
        ];
        let power = RoomPower::from_state(&state);
        assert_eq!(
            [power.level("@a:x"), power.level("@b:x"), power.level("@c:x"), power.level("@e:x")],
            [100, 100, 50, 0]
        );
        let old_room = RoomPower::from_state(&[json!({"type": "m.room.create", "sender": "@a:x",
            "content": {"room_version": "10"}})]);
        assert_eq!(old_room.level("@a:x"), 0);
        let changed = power.with_levels(json!({"users": {"@c:x": 0, "@e:x": 100}}).as_object().unwrap().clone());
        let users = ["@a:x", "@c:x", "@e:x"].map(String::from);
        assert_eq!(power.changed_ranks(&changed, &users), ["@c:x", "@e:x"]);
    }
}
