//! The provisioning endpoints, one function each, with matrix-appservice-irc's body shapes
//! (`matrix_room_id`, `remote_room_server` — a network ID or one of its server hosts —, `remote_room_channel`,
//! `op_nick`, `user_id`).

use std::sync::Arc;

use axum::{
    Json,
    body::Bytes,
    extract::{Path, State},
    http::{StatusCode, header::CONTENT_TYPE},
    response::IntoResponse,
};
use ruma::{OwnedRoomId, OwnedUserId};
use serde::{Deserialize, de::DeserializeOwned};
use serde_json::{Value, json};

use super::{ApiError, OPENAPI, Shared};
use crate::{
    ids::PortalKind,
    network::Network,
    plumbing::{self, LinkRequest, PlumbingError, Requested},
};

type Answer = Result<Json<Value>, ApiError>;

/// A JSON body, or a Matrix-style 400 naming what is wrong with it.
fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|error| {
        let errcode = if error.is_syntax() || error.is_eof() { "M_NOT_JSON" } else { "M_BAD_JSON" };
        ApiError::new(StatusCode::BAD_REQUEST, errcode, format!("invalid request body: {error}"))
    })
}

fn room_id(room: &str) -> Result<OwnedRoomId, ApiError> {
    room.parse()
        .map_err(|_| ApiError::new(StatusCode::BAD_REQUEST, "M_INVALID_PARAM", format!("`{room}` is not a room ID")))
}

fn user_id(user: &str) -> Result<OwnedUserId, ApiError> {
    user.parse()
        .map_err(|_| ApiError::new(StatusCode::BAD_REQUEST, "M_INVALID_PARAM", format!("`{user}` is not a user ID")))
}

/// Any running network, for what all share (the store, the bot).
fn any_network(shared: &Shared) -> Result<Arc<Network>, ApiError> {
    let networks = shared.connector.networks().map_err(PlumbingError::from)?;
    networks
        .values()
        .next()
        .cloned()
        .ok_or_else(|| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "M_UNKNOWN", "no IRC networks are configured"))
}

fn matrix_failure(context: &str, error: impl std::fmt::Display) -> ApiError {
    ApiError::new(StatusCode::BAD_GATEWAY, "M_UNKNOWN", format!("{context}: {error}"))
}

/// Whether `user` is in `room` with the power to change its power levels, as matrix-appservice-irc requires
/// before it links or unlinks. In room version 12 and later the room's creators outrank every level.
async fn require_power(network: &Network, room: &OwnedRoomId, user: &OwnedUserId) -> Result<(), ApiError> {
    let bot = network.bridge().matrix().bot();
    bot.ensure_joined(room).await.map_err(|error| {
        ApiError::new(
            StatusCode::FORBIDDEN,
            "M_FORBIDDEN",
            format!("the bridge bot cannot join {room} ({error}); invite it first"),
        )
    })?;
    let members =
        bot.joined_members(room).await.map_err(|error| matrix_failure("cannot list the room's members", error))?;
    if !members.contains(user) {
        return Err(PlumbingError::NotEnoughPower(format!("{user} is not in {room}")).into());
    }
    let levels = bot.power_levels(room).await.map_err(|error| matrix_failure("cannot read power levels", error))?;
    if levels.user_level(user) >= levels.event_level("m.room.power_levels", true) {
        return Ok(());
    }
    // Room version 12: the room ID is the create event's ID; its sender and `additional_creators` are creators.
    if !room.as_str().contains(':')
        && let Ok(create_id) = format!("${}", &room.as_str()[1..]).parse::<ruma::OwnedEventId>()
        && let Ok(Some(create)) = bot.get_event(room, &create_id).await
    {
        let additional = create["content"]["additional_creators"].as_array().cloned().unwrap_or_default();
        if create["sender"] == user.as_str() || additional.iter().any(|creator| creator == user.as_str()) {
            return Ok(());
        }
    }
    Err(PlumbingError::NotEnoughPower(format!(
        "{user} may not change the power levels of {room}, so may not change its bridging"
    ))
    .into())
}

#[derive(Deserialize)]
struct LinkBody {
    matrix_room_id: String,
    remote_room_server: String,
    remote_room_channel: String,
    #[serde(default)]
    op_nick: Option<String>,
    user_id: String,
    #[serde(default)]
    key: Option<String>,
}

/// `POST /_matrix/provision/link`: asks the operator `op_nick` to approve bridging the room to the channel.
pub(super) async fn link(State(shared): State<Shared>, body: Bytes) -> Answer {
    let body: LinkBody = parse(&body)?;
    if body.key.as_deref().is_some_and(|key| !key.is_empty()) {
        return Err(ApiError::new(StatusCode::BAD_REQUEST, "M_INVALID_PARAM", "channels with a key cannot be linked"));
    }
    let network = plumbing::network_named(&shared.connector, &body.remote_room_server)?;
    let (room, user) = (room_id(&body.matrix_room_id)?, user_id(&body.user_id)?);
    if shared.max_links > 0 && channel_portals(&network).await? >= shared.max_links {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "IRC_LIMIT_REACHED",
            format!("the bridge already bridges {} channels, its limit", shared.max_links),
        ));
    }
    require_power(&network, &room, &user).await?;
    let request = LinkRequest {
        room_id: room.to_string(),
        channel: body.remote_room_channel,
        op_nick: body.op_nick,
        requester: user.to_string(),
    };
    Ok(Json(match plumbing::request_link(network, request).await? {
        Requested::Linked(_) => json!({"status": "linked"}),
        Requested::Asked { op, timeout } => {
            json!({"status": "pending", "op_nick": op, "timeout_secs": timeout.as_secs()})
        }
    }))
}

#[derive(Deserialize)]
struct UnlinkBody {
    matrix_room_id: String,
    remote_room_server: String,
    remote_room_channel: String,
    user_id: String,
}

/// `POST /_matrix/provision/unlink`: stops the room bridging the channel.
pub(super) async fn unlink(State(shared): State<Shared>, body: Bytes) -> Answer {
    let body: UnlinkBody = parse(&body)?;
    let network = plumbing::network_named(&shared.connector, &body.remote_room_server)?;
    let (room, user) = (room_id(&body.matrix_room_id)?, user_id(&body.user_id)?);
    let bridge = network.bridge();
    let portal = bridge
        .portals()
        .by_key(&network.portal_spec(&body.remote_room_channel).remote_key)
        .await
        .map_err(PlumbingError::from)?
        .filter(|portal| portal.room_id == room.as_str())
        .ok_or_else(|| {
            PlumbingError::NotLinked(format!("{room} does not bridge {} on {}", body.remote_room_channel, network.id()))
        })?;
    require_power(&network, &room, &user).await?;
    plumbing::unlink_room(&network, &portal).await.map_err(PlumbingError::from)?;
    Ok(Json(json!({})))
}

/// `GET /_matrix/provision/listlinks/{roomId}`: the channels a room bridges.
pub(super) async fn list_links(State(shared): State<Shared>, Path(room): Path<String>) -> Answer {
    let room = room_id(&room)?;
    let network = any_network(&shared)?;
    let portal = network.bridge().portals().by_room(room.as_str()).await.map_err(PlumbingError::from)?;
    let links: Vec<Value> = portal
        .into_iter()
        .filter_map(|portal| {
            let PortalKind::Channel { network: network_id, channel } = PortalKind::parse(&portal.remote_key)? else {
                return None;
            };
            let channel = portal.metadata.get("channel").and_then(Value::as_str).unwrap_or(channel).to_owned();
            Some(json!({
                "matrix_room_id": portal.room_id,
                "remote_room_server": network_id,
                "remote_room_channel": channel,
            }))
        })
        .collect();
    Ok(Json(Value::Array(links)))
}

#[derive(Deserialize)]
struct QueryLinkBody {
    remote_room_server: String,
    remote_room_channel: String,
}

/// `POST /_matrix/provision/querylink`: who may approve a link to the channel.
pub(super) async fn query_link(State(shared): State<Shared>, body: Bytes) -> Answer {
    let body: QueryLinkBody = parse(&body)?;
    let network = plumbing::network_named(&shared.connector, &body.remote_room_server)?;
    if !crate::ids::is_valid_channel(&body.remote_room_channel) {
        return Err(
            PlumbingError::Invalid(format!("`{}` is not a valid channel name", body.remote_room_channel)).into()
        );
    }
    let operators = plumbing::operators(&network, &body.remote_room_channel).await?;
    Ok(Json(json!({
        "operators": operators,
        "approval_required": network.config().plumbing.require_approval,
    })))
}

/// `GET /_matrix/provision/querynetworks`: the networks, as the third-party protocol lists them.
pub(super) async fn query_networks(State(shared): State<Shared>) -> Answer {
    use lattice_bridge_core::Connector as _;
    let instances = shared.connector.thirdparty_protocol().map(|protocol| protocol["instances"].clone());
    Ok(Json(json!({"servers": instances.unwrap_or_else(|| json!([]))})))
}

/// `GET /_matrix/provision/limits`: how many channels are bridged, and the most the API may bridge.
pub(super) async fn limits(State(shared): State<Shared>) -> Answer {
    let network = any_network(&shared)?;
    let count = channel_portals(&network).await?;
    let limit = (shared.max_links > 0).then_some(shared.max_links);
    Ok(Json(json!({"count": count, "limit": limit})))
}

/// `GET /_matrix/provision/openapi.yaml`: this API's OpenAPI 3 document.
pub(super) async fn openapi() -> impl IntoResponse {
    ([(CONTENT_TYPE, "application/yaml")], OPENAPI)
}

/// Channel portals (not direct chats) over every network.
async fn channel_portals(network: &Network) -> Result<usize, ApiError> {
    let portals = network.bridge().portals().all().await.map_err(PlumbingError::from)?;
    Ok(portals
        .iter()
        .filter(|portal| PortalKind::parse(&portal.remote_key).and_then(PortalKind::channel).is_some())
        .count())
}
