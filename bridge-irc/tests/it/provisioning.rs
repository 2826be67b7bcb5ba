//! The provisioning API end to end: bearer-secret authentication, and each route against the running bridge —
//! link (approved by the channel operator over IRC), listlinks, querylink, querynetworks, limits, unlink — and the
//! OpenAPI document it serves.

use anyhow::Context as _;
use lattice_bridge_irc::config::ProvisioningConfig;
use lattice_config::Secret;
use lattice_e2e::ircd::IrcTestClient;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::fixture::{Fixture, NET, WAIT, assert_bridged, is_bot_notice, room_with_bot};

const SECRET: &str = "provisioning-s3cret";

/// The bridge's provisioning API as a client sees it.
struct Api {
    base: String,
    http: reqwest::Client,
}

impl Api {
    async fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> anyhow::Result<(StatusCode, Value)> {
        let method = reqwest::Method::from_bytes(method.as_bytes())?;
        let mut request = self.http.request(method, format!("{}/_matrix/provision/{path}", self.base));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.with_context(|| format!("calling {path}"))?;
        let status = response.status();
        let text = response.text().await?;
        let body = serde_json::from_str(&text).with_context(|| format!("{path} answered {status} with {text:?}"))?;
        Ok((status, body))
    }

    async fn ok(&self, method: &str, path: &str, body: Option<Value>) -> anyhow::Result<Value> {
        let (status, body) = self.call(method, path, Some(SECRET), body).await?;
        anyhow::ensure!(status == StatusCode::OK, "{method} {path} answered {status}: {body}");
        Ok(body)
    }
}

#[tokio::test]
async fn each_provisioning_route_works_behind_the_shared_secret() -> anyhow::Result<()> {
    let fixture = Fixture::configured(|section| {
        section.provisioning =
            ProvisioningConfig { enabled: true, shared_secret: Some(Secret::Value(SECRET.into())), max_links: 5 };
    })
    .await?;
    let api = Api { base: fixture.url(), http: reqwest::Client::new() };

    // No token, a wrong token.
    let (status, body) = api.call("GET", "limits", None, None).await?;
    assert_eq!((status, body["errcode"].as_str()), (StatusCode::UNAUTHORIZED, Some("M_UNAUTHORIZED")), "{body}");
    let (status, body) = api.call("GET", "limits", Some("wrong"), None).await?;
    assert_eq!((status, body["errcode"].as_str()), (StatusCode::FORBIDDEN, Some("M_FORBIDDEN")), "{body}");
    let (status, body) =
        api.call("POST", "link", Some(SECRET), Some(json!({"matrix_room_id": "!x:localhost"}))).await?;
    assert_eq!((status, body["errcode"].as_str()), (StatusCode::BAD_REQUEST, Some("M_BAD_JSON")), "{body}");

    // The OpenAPI document is public and is the one in the repository.
    let served = reqwest::get(format!("{}/_matrix/provision/openapi.yaml", fixture.url())).await?;
    assert_eq!(served.status(), StatusCode::OK);
    assert_eq!(served.text().await?, include_str!("../../src/provisioning/openapi.yaml"));

    // Until the networks have started, the API says so (503) rather than guess.
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let (status, body) = api.call("GET", "limits", Some(SECRET), None).await?;
        if status != StatusCode::SERVICE_UNAVAILABLE {
            break;
        }
        anyhow::ensure!(tokio::time::Instant::now() < deadline, "the networks never started: {body}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let networks = api.ok("GET", "querynetworks", None).await?;
    assert_eq!(networks["servers"][0]["network_id"], NET, "{networks}");
    assert_eq!(networks["servers"][0]["desc"], "Test IRC", "{networks}");
    assert_eq!(api.ok("GET", "limits", None).await?, json!({"count": 0, "limit": 5}));

    // carol opens #prov, so she is its operator.
    let carol = IrcTestClient::connect(fixture.ircd.port(), "carol").await?;
    carol.join("#prov").await?;
    let query = json!({"remote_room_server": NET, "remote_room_channel": "#prov"});
    let ops = api.ok("POST", "querylink", Some(query)).await?;
    assert_eq!(ops, json!({"operators": ["carol"], "approval_required": true}));
    let (status, body) = api
        .call(
            "POST",
            "querylink",
            Some(SECRET),
            Some(json!({"remote_room_server": "nowhere", "remote_room_channel": "#prov"})),
        )
        .await?;
    assert_eq!((status, body["errcode"].as_str()), (StatusCode::NOT_FOUND, Some("IRC_UNKNOWN_NETWORK")), "{body}");

    // A room owner links their room; carol approves over IRC.
    let alice = fixture.user("alice").await?;
    let room = room_with_bot(&alice, "Provisioned").await?;
    let link = json!({
        "matrix_room_id": room, "remote_room_server": NET, "remote_room_channel": "#prov",
        "op_nick": "carol", "user_id": alice.user_id(),
    });
    let pending = api.ok("POST", "link", Some(link.clone())).await?;
    assert_eq!(pending["status"], "pending", "{pending}");
    assert_eq!(pending["op_nick"], "carol", "{pending}");
    carol
        .wait_for(WAIT, |line| {
            line.starts_with(":lattice!") && line.contains("PRIVMSG carol :") && line.contains("reply yes or no")
        })
        .await
        .context("carol is asked")?;
    carol.send("PRIVMSG lattice :yes").await?;
    alice
        .wait_for_event(&room, WAIT, |event| is_bot_notice(event, "carol approved"))
        .await
        .context("alice hears of the approval")?;
    assert_bridged(&carol, &alice, &room, "#prov").await?;

    let listed = api.ok("GET", &format!("listlinks/{room}"), None).await?;
    assert_eq!(listed, json!([{"matrix_room_id": room, "remote_room_server": NET, "remote_room_channel": "#prov"}]));
    assert_eq!(api.ok("GET", "limits", None).await?, json!({"count": 1, "limit": 5}));
    let (status, body) = api.call("POST", "link", Some(SECRET), Some(link)).await?;
    assert_eq!((status, body["errcode"].as_str()), (StatusCode::CONFLICT, Some("IRC_DOUBLE_BRIDGE")), "{body}");

    // Only someone with power in the room may unlink it.
    let dave = fixture.user("dave").await?;
    alice.invite(&room, dave.user_id()).await?;
    dave.join(&room).await?;
    let unlink = |user: &str| json!({"matrix_room_id": room, "remote_room_server": NET, "remote_room_channel": "#prov", "user_id": user});
    let (status, body) = api.call("POST", "unlink", Some(SECRET), Some(unlink(dave.user_id()))).await?;
    assert_eq!((status, body["errcode"].as_str()), (StatusCode::FORBIDDEN, Some("IRC_NOT_ENOUGH_POWER")), "{body}");
    assert_eq!(api.ok("POST", "unlink", Some(unlink(alice.user_id()))).await?, json!({}));
    carol.wait_for(WAIT, |line| line.starts_with(":lattice!") && line.contains(" PART #prov")).await?;
    assert_eq!(api.ok("GET", &format!("listlinks/{room}"), None).await?, json!([]));
    assert_eq!(api.ok("GET", "limits", None).await?, json!({"count": 0, "limit": 5}));
    Ok(())
}
