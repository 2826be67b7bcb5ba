//! A real Synapse homeserver for one test: its own folder, port, SQLite database and secrets.

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use hmac::{Hmac, KeyInit as _, Mac as _};
use serde_json::{Value, json};
use sha1::Sha1;

use crate::{MatrixUser, ServerProcess, StateDir, cache_dir, free_port, workspace_root};

/// How long Synapse may take to answer `/_matrix/client/versions` (it takes about 3 s).
const START_DEADLINE: Duration = Duration::from_secs(60);

/// A Synapse homeserver on 127.0.0.1, `server_name` `localhost`, with every rate limit off.
/// Stopped when dropped; its folder is removed then too, unless `LATTICE_KEEP_TEST_STATE` is set.
#[derive(Debug)]
pub struct Synapse {
    // Declared before `dir`: the process stops before its folder is removed.
    process: ServerProcess,
    dir: StateDir,
    url: String,
    port: u16,
    shared_secret: String,
    http: reqwest::Client,
}

impl Synapse {
    /// Starts a fresh Synapse that loads the given appservice registration files, and waits
    /// until it answers.
    ///
    /// The config comes from `scripts/synapse-config.py`, the template the demo uses too. Synapse
    /// runs from `$LATTICE_SYNAPSE_PYTHON` (default `<workspace>/.cache/synapse-venv/bin/python`,
    /// made by `scripts/install.sh synapse`).
    pub async fn start(registrations: &[PathBuf]) -> anyhow::Result<Synapse> {
        let python = synapse_python()?;
        let mut dir = StateDir::new("synapse-")?;
        let shared_secret = random_hex(32);
        let http = reqwest::Client::builder().no_proxy().build().context("building an HTTP client")?;

        // A port that was free a moment ago may be taken by the time Synapse binds it: retry.
        let started = Instant::now();
        let mut attempt = 0;
        loop {
            attempt += 1;
            let port = free_port();
            write_config(&python, &dir, port, &shared_secret, registrations).await?;
            let log_path = dir.join("homeserver.log");
            let _ = std::fs::remove_file(&log_path);
            let mut command = Command::new(&python);
            command
                .args(["-m", "synapse.app.homeserver", "-c"])
                .arg(dir.join("homeserver.yaml"))
                .current_dir(dir.path());
            let mut process = ServerProcess::spawn("Synapse", &mut command, &log_path)?;
            let url = format!("http://127.0.0.1:{port}");
            match process.wait_for_homeserver(&http, &url, START_DEADLINE).await {
                Ok(()) => {
                    eprintln!(
                        "Synapse answers on {url} after {:.1?} (state in {})",
                        started.elapsed(),
                        dir.path().display()
                    );
                    return Ok(Synapse { process, dir, url, port, shared_secret, http });
                }
                Err(e) if attempt < 3 && process.lost_port_race() => {
                    eprintln!("Synapse lost port {port} to another process, retrying: {e:#}");
                }
                Err(e) => {
                    // The error names the log: keep it.
                    dir.keep();
                    return Err(e);
                }
            }
        }
    }

    /// Stops Synapse (SIGTERM, as an operator's restart does), keeping its state for [`Synapse::start_again`].
    pub fn stop(&mut self) {
        self.process.stop(Duration::from_secs(10));
    }

    /// Starts the stopped Synapse again on the same state, port and config, and waits until it answers.
    pub async fn start_again(&mut self) -> anyhow::Result<()> {
        let python = synapse_python()?;
        let mut command = Command::new(&python);
        command
            .args(["-m", "synapse.app.homeserver", "-c"])
            .arg(self.dir.join("homeserver.yaml"))
            .current_dir(self.dir.path());
        self.process = ServerProcess::spawn("Synapse", &mut command, &self.dir.join("homeserver.log"))?;
        self.process.wait_for_homeserver(&self.http, &self.url, START_DEADLINE).await
    }

    /// The event IDs in appservice transactions Synapse has stored but not yet sent (it deletes a transaction once
    /// the appservice acknowledged it): read from its SQLite database with its own Python.
    pub fn unsent_appservice_events(&self) -> anyhow::Result<std::collections::BTreeSet<String>> {
        let script = "import json, sqlite3, sys\n\
            rows = sqlite3.connect(sys.argv[1]).execute('SELECT event_ids FROM application_services_txns')\n\
            print(json.dumps([e for (ids,) in rows for e in json.loads(ids)]))";
        let output = Command::new(synapse_python()?)
            .arg("-c")
            .arg(script)
            .arg(self.dir.join("homeserver.db"))
            .output()
            .context("reading Synapse's appservice transactions")?;
        anyhow::ensure!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
        serde_json::from_slice(&output.stdout).context("Synapse's unsent appservice events")
    }

    /// The client-server API's base URL, `http://127.0.0.1:PORT` (no trailing slash).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The port Synapse listens on, on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The server name: `localhost`, so user IDs look like `@alice:localhost`.
    pub fn server_name(&self) -> &str {
        "localhost"
    }

    /// Synapse's log (its stdout and stderr).
    pub fn log_path(&self) -> &Path {
        self.process.log_path()
    }

    /// The folder holding `homeserver.yaml`, the database and the media store.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The registration shared secret (`registration_shared_secret` in `homeserver.yaml`).
    pub fn shared_secret(&self) -> &str {
        &self.shared_secret
    }

    /// Registers `@localpart:localhost` with a random password through the shared-secret admin
    /// API (`/_synapse/admin/v1/register`) and returns a client logged in as that user.
    pub async fn register_user(&self, localpart: &str, admin: bool) -> anyhow::Result<MatrixUser> {
        let endpoint = format!("{}/_synapse/admin/v1/register", self.url);
        let context = || format!("registering @{localpart}:localhost");
        let nonce = self.http.get(&endpoint).send().await.with_context(context)?;
        let nonce: Value = crate::matrix_user::json_or_error(nonce, "GET", &endpoint).await.with_context(context)?;
        let nonce = nonce["nonce"].as_str().context("no nonce in the answer")?.to_owned();

        let password = random_hex(12);
        let mut mac =
            Hmac::<Sha1>::new_from_slice(self.shared_secret.as_bytes()).expect("HMAC takes keys of any length");
        for (i, part) in [nonce.as_str(), localpart, &password].iter().enumerate() {
            if i > 0 {
                mac.update(b"\0");
            }
            mac.update(part.as_bytes());
        }
        mac.update(if admin { b"\0admin" } else { b"\0notadmin" });
        let mac: String = mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect();

        let body = json!({
            "nonce": nonce,
            "username": localpart,
            "password": password,
            "admin": admin,
            "mac": mac,
        });
        let answer = self.http.post(&endpoint).json(&body).send().await.with_context(context)?;
        let answer = crate::matrix_user::json_or_error(answer, "POST", &endpoint).await.with_context(context)?;
        let user_id = answer["user_id"].as_str().context("no user_id in the answer")?;
        let token = answer["access_token"].as_str().context("no access_token in the answer")?;
        let mut user = MatrixUser::with_client(self.http.clone(), &self.url, user_id, token)?;
        user.set_password(password);
        Ok(user)
    }
}

impl Drop for Synapse {
    fn drop(&mut self) {
        self.process.show_log_if_panicking();
    }
}

/// The Python that has Synapse: `$LATTICE_SYNAPSE_PYTHON`, or the venv `scripts/install.sh` makes.
fn synapse_python() -> anyhow::Result<PathBuf> {
    let python = match std::env::var_os("LATTICE_SYNAPSE_PYTHON") {
        Some(python) if !python.is_empty() => PathBuf::from(python),
        _ => cache_dir().join("synapse-venv/bin/python"),
    };
    if !python.exists() {
        bail!(
            "no Synapse: {} does not exist. Run `scripts/install.sh synapse` (or `scripts/test.sh`, \
             which installs it), or point LATTICE_SYNAPSE_PYTHON at a Python that has matrix-synapse",
            python.display()
        );
    }
    Ok(python)
}

async fn write_config(
    python: &Path,
    dir: &StateDir,
    port: u16,
    shared_secret: &str,
    registrations: &[PathBuf],
) -> anyhow::Result<()> {
    let script = workspace_root().join("scripts/synapse-config.py");
    let output = tokio::process::Command::new(python)
        .arg(&script)
        .args(["--shared-secret", shared_secret])
        .arg(dir.path())
        .arg(port.to_string())
        .args(registrations)
        .output()
        .await
        .with_context(|| format!("running {}", script.display()))?;
    if !output.status.success() {
        bail!("{} failed ({}): {}", script.display(), output.status, String::from_utf8_lossy(&output.stderr));
    }
    Ok(())
}

fn random_hex(bytes: usize) -> String {
    (0..bytes).map(|_| format!("{:02x}", rand::random::<u8>())).collect()
}
