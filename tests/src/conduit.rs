//! A real Conduit homeserver for one test, driven as an operator drives it: registrations are sent to its admin room
//! (`#admins:localhost`) by its first user, and users register through the client-server API with `m.login.dummy`.

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use serde_json::{Value, json};

use crate::{MatrixUser, ServerProcess, StateDir, free_port, workspace_root};

/// How long Conduit may take to answer `/_matrix/client/versions` (it takes a few milliseconds).
const START_DEADLINE: Duration = Duration::from_secs(30);
/// How long Conduit's server user may take to answer a command in its admin room.
const COMMAND_DEADLINE: Duration = Duration::from_secs(30);
/// The user the harness registers first, so that it is Conduit's server admin; tests never use this localpart.
const ADMIN_LOCALPART: &str = "harness-admin";
/// Conduit's own server user, which answers admin commands.
const SERVER_USER: &str = "@conduit:localhost";

/// A Conduit homeserver on 127.0.0.1, `server_name` `localhost`, SQLite, open registration, no federation.
/// Stopped when dropped; its folder is removed then too, unless `LATTICE_KEEP_TEST_STATE` is set.
#[derive(Debug)]
pub struct Conduit {
    // Declared before `dir`: the process stops before its folder is removed.
    process: ServerProcess,
    dir: StateDir,
    url: String,
    http: reqwest::Client,
    admin: MatrixUser,
    admin_room: String,
}

impl Conduit {
    /// The Conduit binary: `$LATTICE_CONDUIT`, or `../shared/homeservers/conduit/conduit` beside the workspace; an
    /// error saying which path is missing when there is none, for the tests to report as skipped.
    pub fn binary() -> Result<PathBuf, String> {
        let (binary, source) = match std::env::var_os("LATTICE_CONDUIT") {
            Some(path) if !path.is_empty() => (PathBuf::from(path), "LATTICE_CONDUIT"),
            _ => (workspace_root().join("../shared/homeservers/conduit/conduit"), "the default path"),
        };
        if binary.is_file() {
            Ok(binary)
        } else {
            Err(format!("no Conduit binary at {} ({source}); set LATTICE_CONDUIT to one", binary.display()))
        }
    }

    /// Starts a fresh Conduit, makes its admin user, and registers each appservice registration file through the
    /// admin room, as Conduit's operators do.
    pub async fn start(registrations: &[PathBuf]) -> anyhow::Result<Conduit> {
        let binary = Self::binary().map_err(anyhow::Error::msg)?;
        let mut dir = StateDir::new("conduit-")?;
        let http = reqwest::Client::builder().no_proxy().build().context("building an HTTP client")?;
        let started = Instant::now();
        let mut attempt = 0;
        let (process, url) = loop {
            attempt += 1;
            let port = free_port();
            write_config(&dir, port)?;
            let log_path = dir.join("conduit.log");
            let _ = std::fs::remove_file(&log_path);
            let mut command = Command::new(&binary);
            command.env("CONDUIT_CONFIG", dir.join("conduit.toml")).current_dir(dir.path());
            let mut process = ServerProcess::spawn("Conduit", &mut command, &log_path)?;
            let url = format!("http://127.0.0.1:{port}");
            match process.wait_for_homeserver(&http, &url, START_DEADLINE).await {
                Ok(()) => break (process, url),
                Err(e) if attempt < 3 && process.lost_port_race() => {
                    eprintln!("Conduit lost port {port} to another process, retrying: {e:#}");
                }
                Err(e) => {
                    dir.keep();
                    return Err(e);
                }
            }
        };
        // The first user registered on a fresh database is the server admin, joined to the admin room.
        let admin = register(&http, &url, ADMIN_LOCALPART).await.context("registering Conduit's admin")?;
        let admin_room = admin.join("#admins:localhost").await.context("Conduit's admin room")?;
        let conduit = Conduit { process, dir, url, http, admin, admin_room };
        for registration in registrations {
            conduit.register_appservice(registration).await?;
        }
        eprintln!(
            "Conduit answers on {} after {:.1?} (state in {})",
            conduit.url,
            started.elapsed(),
            conduit.dir.path().display()
        );
        Ok(conduit)
    }

    /// Registers an appservice: its registration file, in a plain code block after `register-appservice`, sent to
    /// the admin room; fails with Conduit's answer unless it says the appservice is registered.
    pub async fn register_appservice(&self, registration: &Path) -> anyhow::Result<()> {
        let yaml = std::fs::read_to_string(registration)
            .with_context(|| format!("reading the registration {}", registration.display()))?;
        let body = format!("{SERVER_USER}: register-appservice\n```\n{}\n```", yaml.trim_end());
        let command = self.admin.send_text(&self.admin_room, &body).await?;
        let command =
            self.admin.wait_for_event(&self.admin_room, COMMAND_DEADLINE, |event| event["event_id"] == command);
        let sent_at = command.await.context("waiting for the register-appservice command")?["origin_server_ts"].clone();
        let answer = self
            .admin
            .wait_for_event(&self.admin_room, COMMAND_DEADLINE, |event| {
                // The server user's welcome message came before the command; its answer comes after.
                event["type"] == "m.room.message"
                    && event["sender"] == SERVER_USER
                    && event["origin_server_ts"].as_u64() >= sent_at.as_u64()
            })
            .await
            .context("waiting for Conduit to answer register-appservice")?;
        let said = answer["content"]["body"].as_str().unwrap_or_default();
        anyhow::ensure!(
            said.starts_with("Appservice registered"),
            "Conduit refused the registration {}: {said}",
            registration.display()
        );
        Ok(())
    }

    /// Registers `@localpart:localhost` through the client-server API (open registration, `m.login.dummy`) with
    /// a random password, and returns a client logged in as that user.
    pub async fn register_user(&self, localpart: &str) -> anyhow::Result<MatrixUser> {
        register(&self.http, &self.url, localpart).await
    }

    /// The client-server API's base URL, `http://127.0.0.1:PORT` (no trailing slash).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Conduit's log (its stdout and stderr).
    pub fn log_path(&self) -> &Path {
        self.process.log_path()
    }

    /// The folder holding `conduit.toml` and the database.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Conduit {
    fn drop(&mut self) {
        self.process.show_log_if_panicking();
    }
}

/// `POST /_matrix/client/v3/register` twice: the first answer (401) opens a session, the second completes it
/// with `m.login.dummy`.
async fn register(http: &reqwest::Client, url: &str, localpart: &str) -> anyhow::Result<MatrixUser> {
    let endpoint = format!("{url}/_matrix/client/v3/register");
    let password = format!("{:024x}", rand::random::<u128>());
    let mut body = json!({"username": localpart, "password": password});
    let context = || format!("registering @{localpart}:localhost on Conduit");
    let first = http.post(&endpoint).json(&body).send().await.with_context(context)?;
    let first: Value = first.json().await.with_context(context)?;
    let session = first["session"].as_str().with_context(|| format!("no session in Conduit's answer {first}"))?;
    body["auth"] = json!({"type": "m.login.dummy", "session": session});
    let answer = http.post(&endpoint).json(&body).send().await.with_context(context)?;
    let answer = crate::matrix_user::json_or_error(answer, "POST", &endpoint).await.with_context(context)?;
    let user_id = answer["user_id"].as_str().context("no user_id in the answer")?;
    let token = answer["access_token"].as_str().context("no access_token in the answer")?;
    let mut user = MatrixUser::with_client(http.clone(), url, user_id, token)?;
    user.set_password(password);
    Ok(user)
}

fn write_config(dir: &StateDir, port: u16) -> anyhow::Result<()> {
    let config = format!(
        "[global]\n\
         server_name = \"localhost\"\n\
         database_backend = \"sqlite\"\n\
         database_path = \"{}\"\n\
         address = \"127.0.0.1\"\n\
         port = {port}\n\
         max_request_size = 40_000_000\n\
         allow_registration = true\n\
         allow_federation = false\n\
         allow_check_for_updates = false\n\
         enable_lightning_bolt = false\n\
         trusted_servers = []\n\
         log = \"warn,conduit=info\"\n",
        dir.join("db").display()
    );
    std::fs::create_dir_all(dir.join("db")).context("creating Conduit's database folder")?;
    std::fs::write(dir.join("conduit.toml"), config).context("writing conduit.toml")
}
