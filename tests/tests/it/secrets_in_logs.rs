//! No secret in the shipped IRC bridge's log, even at `trace`: the registration's `as_token` and `hs_token`, a
//! server password, the provisioning secret, the key file, and the IRC passwords two Matrix users store with
//! `storepass` — one logged in with SASL PLAIN, one with NickServ IDENTIFY — in plain text, in the SASL PLAIN encoding
//! and as sealed in the store. The run touches each: the puppets log in, the homeserver authenticates with its token
//! in the header and (as older homeservers do) in the query string, a provisioning client calls with the secret, and
//! callers with wrong tokens are refused.

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Duration,
};

use anyhow::{Context as _, ensure};
use base64::{Engine as _, engine::general_purpose::STANDARD};
use lattice_e2e::{
    MatrixUser, ServerProcess, Synapse, free_port,
    ircd::{IrcTestClient, Ircd},
    workspace_root,
};
use serde_json::json;
use serde_yaml::Value;

use crate::binaries::build_binary;

const WAIT: Duration = Duration::from_secs(60);
const SERVER_PASSWORD: &str = "srvpass-Q7d2LmX9";
const PROVISIONING_SECRET: &str = "provsecret-Hz4kWq81";
const SASL_PASSWORD: &str = "saslpass-V3nR8tY2";
const NICKSERV_PASSWORD: &str = "nspass-K6pJ0sE5";

/// The sample config with two networks on the InspIRCd at `irc_port`: `sasl` and `ns`, by how puppets log in.
fn write_config(dir: &Path, homeserver: &str, port: u16, irc_port: u16) -> anyhow::Result<PathBuf> {
    let sample = std::fs::read_to_string(workspace_root().join("bridge-irc/config.sample.yaml"))?;
    let mut config: Value = serde_yaml::from_str(&sample)?;
    config["homeserver"]["url"] = homeserver.into();
    config["appservice"]["port"] = u64::from(port).into();
    config["logging"]["filter"] = "trace".into();
    config["bridge"]["provisioning"] =
        serde_yaml::from_str(&format!("{{enabled: true, shared_secret: {PROVISIONING_SECRET}}}"))?;
    let template = config["bridge"]["networks"]["libera"].clone();
    let mut networks = serde_yaml::Mapping::new();
    for (id, auth) in [("sasl", "sasl"), ("ns", "nickserv")] {
        let mut network = template.clone();
        network["name"] = format!("Test IRC {id}").into();
        network["servers"] = serde_yaml::from_str(&format!(
            "[{{host: 127.0.0.1, port: {irc_port}, tls: false, password: {SERVER_PASSWORD}}}]"
        ))?;
        network["bot_nick"] = format!("lattice{id}").into();
        network["max_nick_length"] = 30.into();
        network["auth"] = auth.into();
        network["privacy"] = "off".into();
        network["reconnect"] = serde_yaml::from_str("{initial_delay_ms: 200, max_delay_secs: 2, max_concurrent: 5}")?;
        networks.insert(id.into(), network);
    }
    config["bridge"]["networks"] = Value::Mapping(networks);
    // The edge, which holds the IRC connections and traces their lines, logs beside its socket.
    config["bridge"]["edge"] =
        serde_yaml::from_str(&format!("{{socket: {}, linger_secs: 60}}", dir.join("edge.sock").display()))?;
    let path = dir.join("config.yaml");
    std::fs::write(&path, serde_yaml::to_string(&config)?)?;
    Ok(path)
}

/// Opens an admin room with the bot, runs `line` there and returns the bot's answer.
async fn command(user: &MatrixUser, line: &str) -> anyhow::Result<String> {
    let room =
        user.create_room(json!({"preset": "private_chat", "is_direct": true, "invite": ["@ircbot:localhost"]})).await?;
    user.wait_for_event(&room, WAIT, |event| {
        event["type"] == "m.room.member"
            && event["state_key"] == "@ircbot:localhost"
            && event["content"]["membership"] == "join"
    })
    .await
    .context("waiting for the bot to join the admin room")?;
    user.send_text(&room, line).await?;
    let answer = user
        .wait_for_event(&room, WAIT, |event| {
            event["sender"] == "@ircbot:localhost"
                && event["type"] == "m.room.message"
                && !event["content"]["body"].as_str().unwrap_or_default().contains("This is your admin room")
        })
        .await
        .with_context(|| format!("waiting for the bot's answer to `{line}`"))?;
    Ok(answer["content"]["body"].as_str().unwrap_or_default().to_owned())
}

/// `nick` registers an account with `password`, stores it on `network`, and talks in `channel` through the
/// bridge until the IRC server says the puppet is logged in to the account.
async fn log_in_through_the_bridge(
    synapse: &Synapse,
    irc_port: u16,
    network: &str,
    nick: &str,
    password: &str,
) -> anyhow::Result<()> {
    let owner = IrcTestClient::connect(irc_port, nick).await?;
    owner.register_account(password, &format!("{nick}@example.com")).await?;
    owner.quit("done").await?;
    let watcher = IrcTestClient::connect(irc_port, &format!("{nick}watch")).await?;
    let channel = format!("#secrets{network}");
    watcher.join(&channel).await?;

    let user = synapse.register_user(nick, false).await?;
    let answer = command(&user, &format!("storepass {network} {password}")).await?;
    ensure!(answer.starts_with("Password stored"), "storepass answered {answer:?}");
    let room = user.join(&format!("#irc_{network}_{channel}:localhost")).await?;
    user.send_text(&room, "hello, logged in").await?;
    watcher.wait_for(WAIT, |line| line.starts_with(&format!(":{nick}!")) && line.ends_with("hello, logged in")).await?;
    let deadline = tokio::time::Instant::now() + WAIT;
    while watcher.whois_account(nick).await.is_err() {
        ensure!(tokio::time::Instant::now() < deadline, "{nick} never logged in on {network}");
    }
    Ok(())
}

/// The homeserver's token in the query string, a provisioning call with the secret, and wrong tokens of both.
async fn call_with_tokens(url: &str, hs_token: &str) -> anyhow::Result<()> {
    let http = reqwest::Client::new();
    let legacy = http
        .put(format!("{url}/_matrix/app/v1/transactions/legacy-auth?access_token={hs_token}"))
        .json(&json!({"events": []}))
        .send()
        .await?;
    ensure!(legacy.status() == 200, "query-string authentication answered {}", legacy.status());
    let wrong = http.get(format!("{url}/_matrix/app/v1/users/@x:localhost?access_token={hs_token}x")).send().await?;
    ensure!(wrong.status() == 403, "a wrong token answered {}", wrong.status());
    let networks =
        http.get(format!("{url}/_matrix/provision/querynetworks")).bearer_auth(PROVISIONING_SECRET).send().await?;
    ensure!(networks.status() == 200, "provisioning answered {}", networks.status());
    let refused = http
        .get(format!("{url}/_matrix/provision/querynetworks"))
        .bearer_auth(format!("{PROVISIONING_SECRET}x"))
        .send()
        .await?;
    ensure!(refused.status() == 401 || refused.status() == 403, "a wrong secret answered {}", refused.status());
    Ok(())
}

/// The sealed credentials in the bridge's SQLite store.
fn sealed_credentials(database: &Path) -> anyhow::Result<Vec<String>> {
    let output = Command::new("sqlite3")
        .arg(database)
        .arg("SELECT sealed FROM credentials")
        .output()
        .context("running sqlite3 to read the sealed credentials")?;
    ensure!(output.status.success(), "sqlite3: {}", String::from_utf8_lossy(&output.stderr));
    Ok(String::from_utf8(output.stdout)?.lines().map(str::to_owned).collect())
}

#[tokio::test]
async fn no_token_password_or_sealed_credential_appears_in_a_trace_log() -> anyhow::Result<()> {
    let ircd = Ircd::inspircd().await?;
    let binary = build_binary("lattice-bridge-irc", "lattice-irc")?;
    let dir = tempfile::tempdir()?;
    let port = free_port();
    let config = write_config(dir.path(), "http://127.0.0.1:9", port, ircd.port())?;
    let status = Command::new(&binary).arg("generate-registration").arg("-c").arg(&config).status()?;
    ensure!(status.success(), "generate-registration failed");
    let synapse = Synapse::start(&[dir.path().join("registration.yaml")]).await?;
    write_config(dir.path(), synapse.url(), port, ircd.port())?;

    let log = dir.path().join("lattice-irc.log");
    let mut command = Command::new(&binary);
    command.arg("run").arg("-c").arg(&config).env_remove("RUST_LOG").stdin(Stdio::null());
    let mut bridge = ServerProcess::spawn("lattice-irc", &mut command, &log)?;
    let deadline = tokio::time::Instant::now() + WAIT;
    while !std::fs::read_to_string(&log).unwrap_or_default().contains("appservice ping succeeded") {
        ensure!(bridge.exit_status().is_none(), "lattice-irc exited: {}", bridge.log_tail(40));
        ensure!(tokio::time::Instant::now() < deadline, "no successful ping: {}", bridge.log_tail(40));
        // Polling another process's log: there is nothing to be notified by.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    log_in_through_the_bridge(&synapse, ircd.port(), "sasl", "alice", SASL_PASSWORD).await?;
    log_in_through_the_bridge(&synapse, ircd.port(), "ns", "carol", NICKSERV_PASSWORD).await?;
    let registration: Value = serde_yaml::from_str(&std::fs::read_to_string(dir.path().join("registration.yaml"))?)?;
    let token = |name: &str| registration[name].as_str().map(str::to_owned).context("a token in the registration");
    let (as_token, hs_token) = (token("as_token")?, token("hs_token")?);
    call_with_tokens(&format!("http://127.0.0.1:{port}"), &hs_token).await?;
    bridge.stop(Duration::from_secs(10));
    let edge_socket = dir.path().join("edge.sock");
    if let Some(edge) = lattice_e2e::irc_edge::edge_pid(&edge_socket) {
        let _ = Command::new("kill").args(["-TERM", &edge.to_string()]).status();
    }

    let mut secrets = vec![
        ("as_token", as_token),
        ("hs_token", hs_token),
        ("server password", SERVER_PASSWORD.to_owned()),
        ("provisioning secret", PROVISIONING_SECRET.to_owned()),
        ("SASL password", SASL_PASSWORD.to_owned()),
        ("NickServ password", NICKSERV_PASSWORD.to_owned()),
        ("key file", std::fs::read_to_string(dir.path().join("lattice-irc.key"))?.trim().to_owned()),
    ];
    for (authzid, authcid) in [("", "alice"), ("alice", "alice")] {
        let plain = STANDARD.encode(format!("{authzid}\0{authcid}\0{SASL_PASSWORD}"));
        secrets.push(("SASL PLAIN payload", plain));
    }
    let sealed = sealed_credentials(&dir.path().join("lattice-irc.db"))?;
    ensure!(sealed.len() == 2, "two stored credentials, found {sealed:?}");
    secrets.extend(sealed.into_iter().map(|sealed| ("sealed credential", sealed)));

    // The bridge's log and its edge's.
    let text = std::fs::read_to_string(&log)? + &std::fs::read_to_string(edge_socket.with_extension("log"))?;
    ensure!(
        text.contains("→ IRC") && text.contains("← IRC"),
        "no IRC lines traced: the log is not at trace level ({} lines)",
        text.lines().count()
    );
    let leaks: Vec<String> = secrets
        .iter()
        .flat_map(|(what, secret)| {
            text.lines().filter(move |line| line.contains(secret.as_str())).map(move |line| format!("{what}: {line}"))
        })
        .collect();
    ensure!(leaks.is_empty(), "secrets in the log ({}):\n{}", leaks.len(), leaks[..leaks.len().min(20)].join("\n"));
    Ok(())
}
