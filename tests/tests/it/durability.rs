//! Crash safety of the Matrix → connector pipeline: transactions the bridge acknowledged survive `kill -9`, every
//! event reaches the connector once and in order after a restart, and a transaction the homeserver resends after the
//! restart is not processed twice; the largest transaction a homeserver sends (100 events of 64 KiB) is taken whole.
//! Runs `lattice-recording-bridge`, whose connector writes what it handles to a file.

use std::{
    fs::File,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail, ensure};
use lattice_registration::RegistrationTemplate;
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(30);
const ROOM: &str = "!durable:localhost";
const TRANSACTIONS: usize = 3;
const EVENTS_PER_TRANSACTION: usize = 10;

/// One run of the recording bridge, killed (SIGKILL) when dropped.
struct RecordingBridge {
    child: Child,
    log: PathBuf,
    url: String,
}

impl RecordingBridge {
    fn spawn(dir: &Path, run: &str, port: u16, block_after: Option<usize>) -> anyhow::Result<Self> {
        let log = dir.join(format!("bridge-{run}.log"));
        let output = File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let mut command = Command::new(env!("CARGO_BIN_EXE_lattice-recording-bridge"));
        command
            .arg("--registration")
            .arg(dir.join("registration.yaml"))
            .arg("--database")
            .arg(format!("sqlite://{}", dir.join("lattice.db").display()))
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .arg("--record")
            .arg(dir.join("record.txt"));
        if let Some(block_after) = block_after {
            command.args(["--block-after", &block_after.to_string()]);
        }
        let child = command
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(output.try_clone()?)
            .stderr(output)
            .spawn()
            .context("starting lattice-recording-bridge")?;
        Ok(Self { child, log, url: format!("http://127.0.0.1:{port}") })
    }

    fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until the appservice API answers.
    async fn wait_until_listening(&mut self, http: &reqwest::Client) -> anyhow::Result<()> {
        let health = format!("{}/health/live", self.url);
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(status) = self.child.try_wait()? {
                bail!("the bridge exited ({status}):\n{}", self.output());
            }
            if http.get(&health).send().await.is_ok_and(|answer| answer.status().is_success()) {
                return Ok(());
            }
            ensure!(Instant::now() < deadline, "the bridge did not answer {health} within {WAIT:?}");
            // Polling a starting process for readiness, not synchronising test events.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// `kill -9`: no shutdown code runs.
    fn kill(mut self) -> anyhow::Result<()> {
        self.child.kill().context("sending SIGKILL")?;
        self.child.wait()?;
        Ok(())
    }
}

impl Drop for RecordingBridge {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls `check` until it holds, failing after [`WAIT`].
async fn poll<F: Future<Output = anyhow::Result<bool>>>(
    what: &str,
    mut check: impl FnMut() -> F,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + WAIT;
    while !check().await? {
        ensure!(Instant::now() < deadline, "timed out after {WAIT:?} waiting for {what}");
        // Polling a file and a port of another process: there is nothing to be notified by.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

fn body(transaction: usize, event: usize) -> String {
    format!("transaction {transaction} event {event}")
}

fn transaction(transaction: usize) -> Value {
    let events: Vec<Value> = (0..EVENTS_PER_TRANSACTION)
        .map(|event| {
            json!({
                "type": "m.room.message", "room_id": ROOM, "sender": "@alice:localhost",
                "event_id": format!("$t{transaction}e{event}"), "origin_server_ts": 1_700_000_000_000u64,
                "content": {"msgtype": "m.text", "body": body(transaction, event)}
            })
        })
        .collect();
    json!({"events": events})
}

async fn put_transaction(
    http: &reqwest::Client,
    bridge: &RecordingBridge,
    hs_token: &str,
    txn_id: &str,
    body: &Value,
) -> anyhow::Result<()> {
    let url = format!("{}/_matrix/app/v1/transactions/{txn_id}", bridge.url);
    let answer = http.put(&url).bearer_auth(hs_token).json(body).send().await.with_context(|| format!("PUT {url}"))?;
    let status = answer.status();
    ensure!(status.is_success(), "PUT {url}: {status} {}", answer.text().await.unwrap_or_default());
    Ok(())
}

fn recorded(dir: &Path) -> Vec<String> {
    std::fs::read_to_string(dir.join("record.txt")).unwrap_or_default().lines().map(str::to_owned).collect()
}

/// Writes a registration for the recording bridge into `dir` and returns its `hs_token`.
fn write_registration(dir: &Path) -> anyhow::Result<String> {
    let registration = lattice_registration::generate(&RegistrationTemplate {
        id: "lattice-durability".into(),
        url: "http://127.0.0.1:9".parse()?,
        sender_localpart: "_rec_bot".into(),
        user_regexes: vec!["^@_rec_.*:localhost$".into()],
        alias_regexes: vec!["^#_rec_.*:localhost$".into()],
        protocols: Vec::new(),
        receive_ephemeral: true,
    });
    lattice_registration::write(dir.join("registration.yaml"), &registration)?;
    Ok(registration.hs_token)
}

#[tokio::test]
async fn acknowledged_events_survive_kill_9_and_arrive_once_in_order() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let hs_token = write_registration(dir.path())?;
    let http = reqwest::Client::builder().no_proxy().build()?;
    let port = lattice_e2e::free_port();

    // First run: the connector stalls after 5 events; every transaction is still acknowledged.
    let mut bridge = RecordingBridge::spawn(dir.path(), "1", port, Some(5))?;
    bridge.wait_until_listening(&http).await?;
    for number in 1..=TRANSACTIONS {
        put_transaction(&http, &bridge, &hs_token, &format!("txn-{number}"), &transaction(number)).await?;
    }
    // The fifth event's removal goes to the store's group commit while the sixth is tried. A failed try is counted
    // only after every earlier write has landed, and retried only after it is counted: once the sixth is refused a
    // second time, the fifth is marked done and what the record holds is all that was handled.
    poll("5 recorded events and a sixth refused twice", || async {
        Ok(recorded(dir.path()).len() >= 5 && bridge.output().contains("refused again: "))
    })
    .await?;
    assert_eq!(recorded(dir.path()), (0..5).map(|event| body(1, event)).collect::<Vec<_>>());
    bridge.kill()?;

    // Second run on the same database, nothing blocked; the homeserver resends the last transaction.
    let mut bridge = RecordingBridge::spawn(dir.path(), "2", port, None)?;
    bridge.wait_until_listening(&http).await?;
    let last = format!("txn-{TRANSACTIONS}");
    put_transaction(&http, &bridge, &hs_token, &last, &transaction(TRANSACTIONS)).await?;
    // A later event in the same room: it is handled after anything the resend could have queued.
    let sentinel = json!({"events": [{
        "type": "m.room.message", "room_id": ROOM, "sender": "@alice:localhost", "event_id": "$sentinel",
        "content": {"msgtype": "m.text", "body": "sentinel"}
    }]});
    put_transaction(&http, &bridge, &hs_token, "txn-sentinel", &sentinel).await?;
    poll("the sentinel to be recorded", || async {
        Ok(recorded(dir.path()).last().map(String::as_str) == Some("sentinel"))
    })
    .await?;

    let mut expected: Vec<String> = (1..=TRANSACTIONS)
        .flat_map(|number| (0..EVENTS_PER_TRANSACTION).map(move |event| body(number, event)))
        .collect();
    expected.push("sentinel".into());
    assert_eq!(recorded(dir.path()), expected, "bridge output:\n{}", bridge.output());
    Ok(())
}

#[tokio::test]
async fn a_transaction_of_100_events_of_64_kib_is_bridged_whole_and_in_order() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let hs_token = write_registration(dir.path())?;
    let http = reqwest::Client::builder().no_proxy().build()?;
    let mut bridge = RecordingBridge::spawn(dir.path(), "1", lattice_e2e::free_port(), None)?;
    bridge.wait_until_listening(&http).await?;

    // As Synapse batches them: 100 events, each just under its 64 KiB limit, about 6.5 MB in all.
    let bodies: Vec<String> = (0..100).map(|n| format!("large {n:03} {}", "x".repeat(64 * 1024 - 310))).collect();
    let events: Vec<Value> = bodies
        .iter()
        .enumerate()
        .map(|(n, body)| {
            json!({
                "type": "m.room.message", "room_id": ROOM, "sender": "@alice:localhost",
                "event_id": format!("$large{n}"), "origin_server_ts": 1_700_000_000_000u64,
                "content": {"msgtype": "m.text", "body": body}
            })
        })
        .collect();
    let transaction = json!({"events": events});
    let size = serde_json::to_vec(&transaction)?.len();
    ensure!(size > 6_500_000, "the transaction is only {size} bytes");
    put_transaction(&http, &bridge, &hs_token, "txn-large", &transaction).await?;
    poll("100 recorded events", || async { Ok(recorded(dir.path()).len() >= bodies.len()) }).await?;
    let recorded = recorded(dir.path());
    let first_wrong = recorded.iter().zip(&bodies).position(|(got, sent)| got != sent);
    ensure!(
        recorded.len() == bodies.len() && first_wrong.is_none(),
        "{} events recorded, {} sent; the first that differs is number {first_wrong:?}",
        recorded.len(),
        bodies.len()
    );
    Ok(())
}
