//! The content of a room's [`m.room.power_levels`] state event, read and changed without losing fields we do not
//! know.
//!
//! [`Intent::set_power_level`](super::Intent::set_power_level) reads the event
//! (`GET /_matrix/client/v3/rooms/{roomId}/state/m.room.power_levels/`), changes one user's level here, and writes
//! it back (`PUT` of the same path). The content is kept as JSON rather than a typed struct so that keys added by
//! newer spec versions or other clients survive the round trip.
//!
//! [`m.room.power_levels`]: https://spec.matrix.org/v1.16/client-server-api/#mroompower_levels

use ruma::UserId;
use serde_json::{Map, Value};

/// The spec's default for `state_default`, `ban`, `kick` and `redact` when the event exists but omits them.
const DEFAULT_MODERATION_LEVEL: i64 = 50;

/// The content of an `m.room.power_levels` event.
///
/// Levels written as strings (`"50"`, seen in old rooms) are read as numbers. In room version 12 and later the
/// room's creators outrank every level and cannot be listed in `users`; this type does not know who they are.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PowerLevels {
    content: Map<String, Value>,
}

impl PowerLevels {
    /// Wraps the content of an `m.room.power_levels` event.
    pub fn from_content(content: Map<String, Value>) -> Self {
        Self { content }
    }

    /// The content, with all fields, as it would be sent.
    pub fn content(&self) -> &Map<String, Value> {
        &self.content
    }

    /// Unwraps the content.
    pub fn into_content(self) -> Map<String, Value> {
        self.content
    }

    /// The level of users not listed in `users` (default 0).
    pub fn users_default(&self) -> i64 {
        self.level_at(&["users_default"]).unwrap_or(0)
    }

    /// `user_id`'s level: their entry in `users`, or `users_default`.
    pub fn user_level(&self, user_id: &UserId) -> i64 {
        self.level_at(&["users", user_id.as_str()]).unwrap_or_else(|| self.users_default())
    }

    /// The level needed to send an event of `event_type`: its entry in `events`, or `state_default` (default 50)
    /// for state events and `events_default` (default 0) for the others.
    pub fn event_level(&self, event_type: &str, is_state: bool) -> i64 {
        self.level_at(&["events", event_type]).unwrap_or_else(|| {
            if is_state {
                self.level_at(&["state_default"]).unwrap_or(DEFAULT_MODERATION_LEVEL)
            } else {
                self.level_at(&["events_default"]).unwrap_or(0)
            }
        })
    }

    /// The level needed for `action`: `"ban"`, `"kick"`, `"redact"` (default 50) or `"invite"` (default 0).
    pub fn action_level(&self, action: &str) -> i64 {
        let default = if action == "invite" { 0 } else { DEFAULT_MODERATION_LEVEL };
        self.level_at(&[action]).unwrap_or(default)
    }

    /// Sets `user_id`'s level in `users`; returns whether that changed the content.
    pub fn set_user_level(&mut self, user_id: &UserId, level: i64) -> bool {
        if !self.content.get("users").is_some_and(Value::is_object) {
            self.content.insert("users".to_owned(), Value::Object(Map::new()));
        }
        let Some(Value::Object(users)) = self.content.get_mut("users") else {
            return false;
        };
        let new = Value::from(level);
        match users.get(user_id.as_str()) {
            Some(old) if *old == new => false,
            _ => {
                users.insert(user_id.as_str().to_owned(), new);
                true
            }
        }
    }

    fn level_at(&self, path: &[&str]) -> Option<i64> {
        let (last, parents) = path.split_last()?;
        let mut object = &self.content;
        for key in parents {
            object = object.get(*key)?.as_object()?;
        }
        as_level(object.get(*last)?)
    }
}

/// A power level as integer, accepting the strings and integral floats found in old rooms.
fn as_level(value: &Value) -> Option<i64> {
    match value {
        Value::Number(number) => {
            number.as_i64().or_else(|| number.as_f64().filter(|f| f.fract() == 0.0).map(|f| f as i64))
        }
        Value::String(text) => text.trim().parse().ok(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use ruma::user_id;
    use serde_json::json;

    use super::*;

    fn levels(content: Value) -> PowerLevels {
        let Value::Object(map) = content else { panic!("not an object") };
        PowerLevels::from_content(map)
    }

    #[test]
    fn levels_are_read_with_spec_defaults() {
        let pl = levels(json!({
            "users": {"@bridge:example.org": 100, "@old:example.org": "50"},
            "users_default": 0,
            "events": {"m.room.name": 50, "m.reaction": 10},
            "invite": 50,
        }));
        // (what, level)
        let cases = [
            (pl.user_level(user_id!("@bridge:example.org")), 100),
            (pl.user_level(user_id!("@old:example.org")), 50),
            (pl.user_level(user_id!("@nobody:example.org")), 0),
            (pl.event_level("m.room.name", true), 50),
            (pl.event_level("m.reaction", false), 10),
            (pl.event_level("m.room.topic", true), 50),
            (pl.event_level("m.room.message", false), 0),
            (pl.action_level("invite"), 50),
            (pl.action_level("ban"), 50),
            (pl.action_level("kick"), 50),
        ];
        for (index, (got, want)) in cases.into_iter().enumerate() {
            assert_eq!(got, want, "case {index}");
        }
        assert_eq!(PowerLevels::default().action_level("invite"), 0);
        assert_eq!(levels(json!({"users_default": 10.0})).users_default(), 10);
    }

    #[test]
    fn setting_a_level_keeps_unknown_fields() {
        let mut pl = levels(json!({
            "users": {"@bridge:example.org": 100},
            "notifications": {"room": 50},
            "org.example.future_key": true,
        }));
        assert!(pl.set_user_level(user_id!("@_irc_op:example.org"), 50));
        assert!(!pl.set_user_level(user_id!("@_irc_op:example.org"), 50));
        assert_eq!(
            Value::Object(pl.into_content()),
            json!({
                "users": {"@bridge:example.org": 100, "@_irc_op:example.org": 50},
                "notifications": {"room": 50},
                "org.example.future_key": true,
            })
        );
    }

    #[test]
    fn setting_a_level_creates_or_repairs_users() {
        let mut pl = PowerLevels::default();
        assert!(pl.set_user_level(user_id!("@a:example.org"), 100));
        assert_eq!(Value::Object(pl.content().clone()), json!({"users": {"@a:example.org": 100}}));

        let mut pl = levels(json!({"users": "garbage"}));
        assert!(pl.set_user_level(user_id!("@a:example.org"), 1));
        assert_eq!(pl.user_level(user_id!("@a:example.org")), 1);

        // A level stored as a string is rewritten as a number.
        let mut pl = levels(json!({"users": {"@a:example.org": "1"}}));
        assert!(pl.set_user_level(user_id!("@a:example.org"), 1));
        assert_eq!(pl.content()["users"]["@a:example.org"], json!(1));
    }
}
