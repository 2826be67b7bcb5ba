//! The start-up self-check, spec-only: the bridge registers its own bot (`POST /_matrix/client/v3/register` with
//! `m.login.application_service`; the spec does not promise that the homeserver creates the registration's
//! `sender_localpart` user, and Conduit does not), then asks the homeserver to ping it (the appservice ping of
//! Matrix v1.7, MSC2659). A homeserver without the ping endpoint gets a token check (`whoami`) instead, and a log
//! line saying what cannot be checked. Every failure is logged with the fix it points to, and retried.

use std::{
    sync::atomic::Ordering,
    time::{Duration, Instant},
};

use tokio::sync::watch;

use crate::{
    BridgeHandle,
    matrix::{MatrixClient, MatrixError},
};

/// What the self-check found out about the homeserver.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Reachability {
    /// The homeserver's ping reached the bridge, in this many milliseconds as the homeserver measured.
    Pinged {
        /// The homeserver → bridge time.
        homeserver_to_bridge: Duration,
    },
    /// The homeserver has no ping endpoint; it accepts our token, but whether it reaches the bridge shows only
    /// when its first transaction arrives.
    NoPingEndpoint,
}

/// One failed step of the self-check: what was being done, what the homeserver said, and what to do.
#[derive(Debug)]
pub(crate) struct Failure {
    step: &'static str,
    error: MatrixError,
    advice: &'static str,
}

/// Runs [`check`] until it passes (backing off up to a minute), then marks the homeserver reachable and sets the
/// bot's display name if the config gives one.
pub(crate) async fn run(handle: BridgeHandle, bot_displayname: Option<String>, mut shutdown: watch::Receiver<bool>) {
    let core = handle.core();
    let mut delay = Duration::from_secs(1);
    loop {
        let started = Instant::now();
        match check(&core.matrix, core.appservice_id()).await {
            Ok(Reachability::Pinged { homeserver_to_bridge }) => {
                core.homeserver_reachable.store(true, Ordering::Relaxed);
                tracing::info!(
                    homeserver_to_bridge_ms = homeserver_to_bridge.as_millis() as u64,
                    round_trip_ms = started.elapsed().as_millis() as u64,
                    "the homeserver reached the bridge: appservice ping succeeded"
                );
                break;
            }
            Ok(Reachability::NoPingEndpoint) => {
                tracing::warn!(
                    "the homeserver has no appservice ping endpoint (Matrix v1.7, MSC2659): it accepts our as_token, \
                     but whether it reaches the bridge at the registration's url shows only when its first \
                     transaction arrives; /health/ready reports homeserver_reachable once one has"
                );
                break;
            }
            Err(Failure { step, error, advice }) => {
                tracing::error!(%error, step, advice, retry_in = ?delay, "appservice self-check failed");
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = shutdown.changed() => return,
        }
        delay = (delay * 2).min(Duration::from_secs(60));
    }
    if let Some(name) = bot_displayname
        && let Err(error) = core.matrix.bot().set_displayname(&name).await
    {
        tracing::warn!(%error, "cannot set the bot's display name");
    }
}

/// Registers the bot (an existing one is fine), then asks for the appservice ping, falling back to a token check
/// on a homeserver that does not know the ping endpoint.
pub(crate) async fn check(matrix: &MatrixClient, appservice_id: &str) -> Result<Reachability, Failure> {
    matrix.bot().ensure_registered().await.map_err(|error| Failure {
        step: "registering the bridge bot",
        advice: registration_advice(&error),
        error,
    })?;
    match matrix.ping(appservice_id, None).await {
        Ok(homeserver_to_bridge) => Ok(Reachability::Pinged { homeserver_to_bridge }),
        Err(error) if error.is_unrecognized_endpoint() => match matrix.whoami().await {
            Ok(user_id) if user_id == matrix.bot_user_id() => Ok(Reachability::NoPingEndpoint),
            Ok(user_id) => Err(Failure {
                step: "checking the as_token (whoami)",
                error: MatrixError::InvalidResponse {
                    endpoint: "whoami",
                    reason: format!("the as_token belongs to {user_id}, not to the bot {}", matrix.bot_user_id()),
                },
                advice: "the registration's sender_localpart differs from the one the homeserver has: register the \
                         bridge's current registration file with the homeserver again",
            }),
            Err(error) => Err(Failure { step: "checking the as_token (whoami)", advice: ping_advice(&error), error }),
        },
        Err(error) => Err(Failure { step: "appservice ping", advice: ping_advice(&error), error }),
    }
}

fn registration_advice(error: &MatrixError) -> &'static str {
    match error.errcode() {
        Some("M_UNKNOWN_TOKEN" | "M_MISSING_TOKEN" | "M_FORBIDDEN") => TOKEN_ADVICE,
        Some("M_EXCLUSIVE" | "M_INVALID_USERNAME") => {
            "the homeserver will not let the appservice register its sender_localpart user: check that \
             sender_localpart is a valid localpart and that no other appservice claims it"
        }
        _ if error.is_transient() => "the homeserver is unreachable at homeserver.url, or overloaded",
        _ => "the homeserver refused to register the bot: see the error",
    }
}

const TOKEN_ADVICE: &str = "the homeserver does not accept our as_token: is this registration file the one the \
                            homeserver has (Synapse: listed in app_service_config_files, then restart; Conduit: sent \
                            to its admin room with register-appservice), and unchanged since?";

fn ping_advice(error: &MatrixError) -> &'static str {
    match error.errcode() {
        Some("M_UNKNOWN_TOKEN" | "M_MISSING_TOKEN" | "M_FORBIDDEN") => TOKEN_ADVICE,
        Some("M_URL_NOT_SET") => "the registration has no url: set appservice.public_url and regenerate it",
        Some("M_CONNECTION_FAILED" | "M_CONNECTION_TIMEOUT") => {
            "the homeserver cannot reach the bridge at the registration's url: check appservice.public_url, the bind \
             address and any firewall"
        }
        Some("M_BAD_STATUS") => {
            "the bridge answered the homeserver's ping with an error: the hs_token in the homeserver's copy of the \
             registration differs from ours"
        }
        _ => "the homeserver is unreachable at homeserver.url",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::matrix::testing::FakeHomeserver;

    fn paths(homeserver: &FakeHomeserver) -> Vec<String> {
        homeserver.received().into_iter().map(|request| request.line).collect()
    }

    #[tokio::test]
    async fn registers_the_bot_then_pings() {
        let homeserver =
            FakeHomeserver::start(vec![(200, r#"{"user_id":"@bridge:example.org"}"#), (200, r#"{"duration_ms":7}"#)])
                .await;
        let outcome = check(&homeserver.client(), "lattice").await.unwrap();
        assert_eq!(outcome, Reachability::Pinged { homeserver_to_bridge: Duration::from_millis(7) });
        let received = homeserver.received();
        assert_eq!(received[0].line, "POST /_matrix/client/v3/register HTTP/1.1");
        let body: serde_json::Value = serde_json::from_str(&received[0].body).unwrap();
        assert_eq!(body["type"], "m.login.application_service");
        assert_eq!(body["username"], "bridge");
        assert_eq!(received[1].line, "POST /_matrix/client/v1/appservice/lattice/ping HTTP/1.1");
    }

    #[tokio::test]
    async fn a_bot_that_exists_and_a_homeserver_without_ping_are_fine() {
        let homeserver = FakeHomeserver::start(vec![
            (400, r#"{"errcode":"M_USER_IN_USE","error":"Desired user ID is already taken."}"#),
            (404, r#"{"errcode":"M_UNRECOGNIZED","error":"Unrecognized request"}"#),
            (200, r#"{"user_id":"@bridge:example.org"}"#),
        ])
        .await;
        assert_eq!(check(&homeserver.client(), "lattice").await.unwrap(), Reachability::NoPingEndpoint);
        assert_eq!(paths(&homeserver)[2], "GET /_matrix/client/v3/account/whoami HTTP/1.1");
    }

    #[tokio::test]
    async fn a_refused_token_is_a_permanent_failure_naming_the_registration() {
        let homeserver =
            FakeHomeserver::start(vec![(401, r#"{"errcode":"M_UNKNOWN_TOKEN","error":"Unknown access token"}"#)]).await;
        let failure = check(&homeserver.client(), "lattice").await.unwrap_err();
        assert_eq!(failure.step, "registering the bridge bot");
        assert!(!failure.error.is_transient());
        assert!(failure.advice.contains("register-appservice"), "{}", failure.advice);
        assert_eq!(paths(&homeserver).len(), 1, "no ping after a failed registration");
    }

    #[tokio::test]
    async fn a_homeserver_that_cannot_reach_the_bridge_is_told_apart_from_one_without_ping() {
        let homeserver = FakeHomeserver::start(vec![
            (200, r#"{"user_id":"@bridge:example.org"}"#),
            (502, r#"{"errcode":"M_CONNECTION_FAILED","error":"Failed to ping appservice"}"#),
        ])
        .await;
        let failure = check(&homeserver.client(), "lattice").await.unwrap_err();
        assert_eq!(failure.step, "appservice ping");
        assert!(failure.advice.contains("public_url"), "{}", failure.advice);
    }
}
