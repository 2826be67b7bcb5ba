//! Raw client-server calls the runtime's Matrix client does not offer: a room's members with their names, its
//! state, recent and paged history ([`super::gateway_muc`]) and the public room directory ([`super::disco`]),
//! asked with the appservice token as the bridge bot.

use std::collections::HashMap;

use serde_json::{Value, json};

/// Raw client-server calls the runtime's Matrix client does not offer (history, members with names).
#[derive(Debug, Clone)]
pub(crate) struct MatrixApi {
    http: reqwest::Client,
    homeserver: url::Url,
    token: String,
}

impl MatrixApi {
    /// A client for `homeserver` acting with the appservice token.
    pub(crate) fn new(homeserver: url::Url, token: String) -> Self {
        let http = reqwest::Client::builder().no_proxy().build().unwrap_or_default();
        Self { http, homeserver, token }
    }

    pub(crate) async fn get(&self, path: &[&str], query: &[(&str, &str)], as_user: &str) -> Result<Value, String> {
        let mut url = self.homeserver.clone();
        url.path_segments_mut().map_err(|()| "bad homeserver URL".to_owned())?.pop_if_empty().extend(path);
        url.query_pairs_mut().extend_pairs(query).append_pair("user_id", as_user);
        let response = self.http.get(url).bearer_auth(&self.token).send().await.map_err(|e| e.to_string())?;
        let status = response.status();
        let body: Value = response.json().await.map_err(|e| e.to_string())?;
        if status.is_success() { Ok(body) } else { Err(format!("{status}: {body}")) }
    }

    /// Joined members and their display names (`GET /rooms/{roomId}/joined_members`).
    pub(crate) async fn members(&self, room_id: &str, as_user: &str) -> Result<HashMap<String, String>, String> {
        let body = self.get(&["_matrix", "client", "v3", "rooms", room_id, "joined_members"], &[], as_user).await?;
        let joined = body.get("joined").and_then(Value::as_object).cloned().unwrap_or_default();
        Ok(joined
            .into_iter()
            .map(|(user, profile)| {
                let name = profile.get("display_name").and_then(Value::as_str).map(str::to_owned);
                let name = name.unwrap_or_else(|| localpart(&user));
                (user, name)
            })
            .collect())
    }

    /// The room's current state events (`GET /rooms/{roomId}/state`).
    pub(crate) async fn room_state(&self, room_id: &str, as_user: &str) -> Result<Vec<Value>, String> {
        let body = self.get(&["_matrix", "client", "v3", "rooms", room_id, "state"], &[], as_user).await?;
        Ok(body.as_array().cloned().unwrap_or_default())
    }

    /// The last `limit` message events, oldest first (`GET /rooms/{roomId}/messages?dir=b`).
    pub(crate) async fn recent_messages(
        &self,
        room_id: &str,
        as_user: &str,
        limit: usize,
    ) -> Result<Vec<Value>, String> {
        let limit = limit.to_string();
        let filter = json!({"types": ["m.room.message"]}).to_string();
        let query = [("dir", "b"), ("limit", limit.as_str()), ("filter", filter.as_str())];
        let body = self.get(&["_matrix", "client", "v3", "rooms", room_id, "messages"], &query, as_user).await?;
        let mut events = body.get("chunk").and_then(Value::as_array).cloned().unwrap_or_default();
        events.reverse();
        Ok(events)
    }
}

/// A Matrix user ID's localpart.
pub(crate) fn localpart(user_id: &str) -> String {
    user_id.trim_start_matches('@').split(':').next().unwrap_or(user_id).to_owned()
}
