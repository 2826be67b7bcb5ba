//! Shared fixtures: a runtime with a recording connector, and throw-away databases.

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use lattice_bridge_core::{
    Bridge, BridgeHandle, Connector, RuntimeSettings, ShutdownTrigger,
    appservice::ListenerLimits,
    connector::{CommandContext, CommandSpec, ConnectorInfo, ConnectorResult},
    event::MatrixEvent,
    store::{Cipher, Portal, Store},
};
use lattice_config::{PermissionLevel, Permissions, PermissionsConfig};
use lattice_registration::{AppserviceRegistration, RegistrationTemplate};
use serde_json::{Value, json};
use tokio::{net::TcpListener, sync::Notify, task::JoinHandle};

/// Records every Matrix event the runtime hands over, in arrival order.
#[derive(Clone, Default)]
pub struct Recorder {
    events: Arc<Mutex<Vec<MatrixEvent>>>,
    arrived: Arc<Notify>,
    commands: Arc<Mutex<Vec<(String, String)>>>,
}

impl Recorder {
    /// Waits until at least `count` events arrived (or panics after `timeout`) and returns all of them.
    pub async fn wait_for(&self, count: usize, timeout: Duration) -> Vec<MatrixEvent> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.arrived.notified();
            {
                let events = self.events.lock().unwrap();
                if events.len() >= count {
                    return events.clone();
                }
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                let events = self.events.lock().unwrap();
                panic!("waited {timeout:?} for {count} events, got {}: {:?}", events.len(), bodies(&events));
            }
        }
    }

    /// What has arrived so far.
    pub fn events(&self) -> Vec<MatrixEvent> {
        self.events.lock().unwrap().clone()
    }

    /// The connector's commands run so far: (sender, command).
    pub fn commands_run(&self) -> Vec<(String, String)> {
        self.commands.lock().unwrap().clone()
    }
}

/// The `body` of each message event, for readable assertions.
pub fn bodies(events: &[MatrixEvent]) -> Vec<String> {
    events.iter().filter_map(|event| event.raw.pointer("/content/body")?.as_str().map(str::to_owned)).collect()
}

impl Connector for Recorder {
    fn info(&self) -> ConnectorInfo {
        ConnectorInfo { protocol_id: "test", protocol_name: "Test", command_prefix: "!test" }
    }

    async fn start(&self, _bridge: BridgeHandle) -> ConnectorResult<()> {
        Ok(())
    }

    fn thirdparty_protocol(&self) -> Option<Value> {
        Some(json!({"user_fields": ["nick"], "location_fields": ["channel"], "instances": []}))
    }

    /// One command for users and one for admins.
    fn commands(&self) -> Vec<CommandSpec> {
        vec![
            CommandSpec { name: "userthing", usage: "", summary: "For users", level: PermissionLevel::User },
            CommandSpec { name: "adminthing", usage: "", summary: "For admins", level: PermissionLevel::Admin },
        ]
    }

    async fn run_command(&self, name: &str, context: CommandContext) -> ConnectorResult<String> {
        self.commands.lock().unwrap().push((context.sender, name.to_owned()));
        Ok(format!("ran {name}"))
    }

    /// One route of the connector's own, which the homeserver's token does not guard.
    fn http_routes(&self) -> Option<axum::Router> {
        Some(axum::Router::new().route("/_test/own", axum::routing::get(|| async { "the connector's own route" })))
    }

    async fn thirdparty_locations(
        &self,
        fields: &std::collections::BTreeMap<String, String>,
    ) -> ConnectorResult<Vec<Value>> {
        Ok(fields
            .get("channel")
            .map(
                |channel| json!({"alias": format!("#_test_{channel}:localhost"), "protocol": "test", "fields": fields}),
            )
            .into_iter()
            .collect())
    }

    lattice_bridge_core::record_every_matrix_event!();
}

impl Recorder {
    /// Keeps `event` (from whatever room) and wakes the waiters.
    fn record(&self, _portal: Option<&Portal>, event: &MatrixEvent) {
        self.events.lock().unwrap().push(event.clone());
        self.arrived.notify_waiters();
    }
}

/// A running bridge on a loopback port, with a recording connector. Its homeserver URL points at a closed port:
/// these tests play the homeserver themselves.
pub struct TestBridge {
    pub url: String,
    pub hs_token: String,
    pub recorder: Recorder,
    pub http: reqwest::Client,
    trigger: ShutdownTrigger,
    task: JoinHandle<lattice_bridge_core::Result<()>>,
}

pub fn registration() -> AppserviceRegistration {
    let registration = lattice_registration::generate(&RegistrationTemplate {
        id: "lattice-test".into(),
        url: "http://127.0.0.1:9".parse().unwrap(),
        sender_localpart: "_test_bot".into(),
        user_regexes: vec!["^@_test_.*:localhost$".into()],
        alias_regexes: vec!["^#_test_.*:localhost$".into()],
        protocols: vec!["test".into()],
        receive_ephemeral: true,
    });
    AppserviceRegistration::new(registration, "test-registration.yaml").unwrap()
}

impl TestBridge {
    /// Starts a bridge over `store` with the given registration.
    pub async fn start(store: Store, registration: AppserviceRegistration) -> Self {
        Self::start_with_limits(store, registration, ListenerLimits::default()).await
    }

    /// Starts a bridge whose listener has the given limits.
    pub async fn start_with_limits(store: Store, registration: AppserviceRegistration, limits: ListenerLimits) -> Self {
        Self::start_with(store, registration, limits, "http://127.0.0.1:9", &PermissionsConfig::default()).await
    }

    /// Starts a bridge with the given listener limits, homeserver and permissions.
    pub async fn start_with(
        store: Store,
        registration: AppserviceRegistration,
        limits: ListenerLimits,
        homeserver_url: &str,
        permissions: &PermissionsConfig,
    ) -> Self {
        let recorder = Recorder::default();
        let settings = RuntimeSettings {
            homeserver_url: homeserver_url.parse().unwrap(),
            server_name: "localhost".into(),
            permissions: Permissions::new(permissions).unwrap(),
            metrics_enabled: true,
            media_base_url: "http://127.0.0.1:9".parse().unwrap(),
            bot_displayname: None,
            listener: limits,
        };
        let hs_token = registration.registration().hs_token.clone();
        let bridge = Bridge::from_parts(settings, registration, store, recorder.clone()).unwrap();
        let trigger = bridge.shutdown_trigger();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address: SocketAddr = listener.local_addr().unwrap();
        let task = tokio::spawn(bridge.serve(listener));
        Self { url: format!("http://{address}"), hs_token, recorder, http: reqwest::Client::new(), trigger, task }
    }

    /// Stops the bridge and waits until it has released the store.
    pub async fn stop(self) {
        self.trigger.trigger();
        self.task.await.unwrap().unwrap();
    }

    /// `PUT /_matrix/app/v1/transactions/{txn_id}` with the right token.
    pub async fn put_transaction(&self, txn_id: &str, body: &Value) -> reqwest::Response {
        self.http
            .put(format!("{}/_matrix/app/v1/transactions/{txn_id}", self.url))
            .bearer_auth(&self.hs_token)
            .json(body)
            .send()
            .await
            .unwrap()
    }
}

/// A text message event in `room` from a Matrix user.
pub fn message(room: &str, event_id: &str, body: &str) -> Value {
    json!({
        "type": "m.room.message", "room_id": room, "event_id": event_id, "sender": "@alice:localhost",
        "origin_server_ts": 1_700_000_000_000u64, "content": {"msgtype": "m.text", "body": body}
    })
}

/// An SQLite store in a temporary directory (kept alive by the returned guard).
pub async fn sqlite_store() -> (Store, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("lattice.db").display());
    (Store::connect(&url, 4, Cipher::random()).await.unwrap(), dir)
}

/// A fresh PostgreSQL database, created on the server named by `LATTICE_TEST_POSTGRES_URL` (scripts/test.sh sets
/// it after starting PostgreSQL). Dropped by [`TestDatabase::drop_database`].
pub struct TestDatabase {
    pub url: String,
    admin_url: String,
    name: String,
}

impl TestDatabase {
    pub async fn create() -> Self {
        let admin_url = std::env::var("LATTICE_TEST_POSTGRES_URL").expect(
            "LATTICE_TEST_POSTGRES_URL is not set: run the suite with scripts/test.sh, which starts PostgreSQL, or \
             point it at a server where the user may create databases",
        );
        sqlx::any::install_default_drivers();
        let name = format!("lattice_test_{:016x}", rand::random::<u64>());
        let mut admin = sqlx::AnyConnection::connect(&admin_url).await.expect("connecting to PostgreSQL");
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}"))).execute(&mut admin).await.unwrap();
        let mut url: url::Url = admin_url.parse().unwrap();
        url.set_path(&name);
        Self { url: url.to_string(), admin_url, name }
    }

    pub async fn drop_database(self) {
        let mut admin = sqlx::AnyConnection::connect(&self.admin_url).await.unwrap();
        sqlx::query(sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name)))
            .execute(&mut admin)
            .await
            .unwrap();
    }
}

use sqlx::Connection as _;
