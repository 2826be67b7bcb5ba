//! SASL SCRAM-SHA-256 (RFC 5802, RFC 7677) against a scripted IRC server: neither of our real servers offers it
//! (atheme 7.2's SaslServ has PLAIN, EXTERNAL, ECDSA and AUTHCOOKIE only; ngircd has no SASL), so this test runs a
//! small server of its own that speaks `CAP LS 302` and `AUTHENTICATE`, offers `sasl=PLAIN,SCRAM-SHA-256`, and checks
//! the bridge's proofs with the `sasl` crate's SCRAM server — code that shares nothing with the bridge's client.
//!
//! Three Matrix users store passwords and connect: alice's is right and she is logged in; bob's is wrong and the
//! server refuses it; carol's is right, but the server forges its signature, which the bridge must catch and abort.
//! The two failures reach their users in their admin rooms.

use std::collections::HashMap;

use anyhow::Context as _;
use base64::{Engine as _, engine::general_purpose::STANDARD as BASE64};
use lattice_e2e::{MatrixUser, ircd::Ircd};
use sasl::{
    common::{ChannelBinding, Identity, scram::Sha256},
    secret::Pbkdf2Sha256,
    server::{
        Mechanism as _, Provider, ProviderError, Response, Validator, ValidatorError, mechanisms::Scram as ScramServer,
    },
};
use tokio::{
    io::{AsyncBufReadExt, AsyncWriteExt, BufReader},
    net::{TcpListener, TcpStream},
    sync::mpsc,
};

use crate::{
    auth::{admin_room, command},
    fixture::{AuthMethod, Fixture, WAIT},
};

/// Every account's password on the scripted server.
const PASSWORD: &str = "correct-horse-battery";
/// The account whose login the server answers with a forged signature.
const FORGED_FOR: &str = "carol";

/// How a SASL exchange on the scripted server ended.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Outcome {
    /// SCRAM-SHA-256: the proof was right and the client accepted the server's signature (`AUTHENTICATE +`): 903
    /// sent.
    LoggedIn,
    /// The proof was wrong: 904 sent.
    Refused,
    /// The client ended the exchange itself (`AUTHENTICATE *`): 906 sent.
    Aborted,
    /// The client asked for PLAIN although SCRAM-SHA-256 is offered: 904 sent.
    Plain,
}

/// The scripted server's account store: every account has [`PASSWORD`].
struct Accounts;

impl Provider<Pbkdf2Sha256> for Accounts {
    fn provide(&self, _identity: &Identity) -> Result<Pbkdf2Sha256, ProviderError> {
        Ok(Pbkdf2Sha256::derive(PASSWORD, b"the scripted server's salt", 4096)?)
    }
}

impl Validator<Pbkdf2Sha256> for Accounts {
    fn validate(&self, identity: &Identity, value: &Pbkdf2Sha256) -> Result<(), ValidatorError> {
        if self.provide(identity)? == *value { Ok(()) } else { Err(ValidatorError::AuthenticationFailed) }
    }
}

/// Starts the scripted server on a free port; each finished SASL exchange is reported as (account, outcome).
async fn scripted_server() -> anyhow::Result<(u16, mpsc::UnboundedReceiver<(String, Outcome)>)> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    let (outcomes, received) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(serve(stream, outcomes.clone()));
        }
    });
    Ok((port, received))
}

/// The command and parameters of a client line (the trailing one without its colon).
fn parse(line: &str) -> (String, Vec<String>) {
    let (head, trailing) = match line.split_once(" :") {
        Some((head, trailing)) => (head, Some(trailing)),
        None => (line, None),
    };
    let mut words = head.split(' ').filter(|word| !word.is_empty()).map(str::to_owned);
    let command = words.next().unwrap_or_default().to_ascii_uppercase();
    (command, words.chain(trailing.map(str::to_owned)).collect())
}

/// One client connection: registration with `CAP` and SASL as a real server does it, then JOIN and PING.
async fn serve(stream: TcpStream, outcomes: mpsc::UnboundedSender<(String, Outcome)>) -> anyhow::Result<()> {
    let (reader, mut writer) = stream.into_split();
    let mut lines = BufReader::new(reader).lines();
    let mut nick = "*".to_owned();
    let mut scram: Option<ScramServer<Sha256, Accounts>> = None;
    let mut account: Option<String> = None;
    let mut signed = false;
    while let Some(line) = lines.next_line().await? {
        let (command, params) = parse(&line);
        let first = params.first().cloned().unwrap_or_default();
        let mut out: Vec<String> = Vec::new();
        match command.as_str() {
            "CAP" if first == "LS" => out.push(":scripted CAP * LS :message-tags sasl=PLAIN,SCRAM-SHA-256".into()),
            "CAP" if first == "REQ" => out.push(format!(":scripted CAP * ACK :{}", params[1..].join(" "))),
            "CAP" if first == "END" => out.push(format!(":scripted 001 {nick} :Welcome to the scripted network")),
            "NICK" => nick = first,
            "PING" => out.push(format!(":scripted PONG scripted :{first}")),
            "JOIN" => out.push(format!(":{nick}!u@scripted JOIN {first}")),
            "QUIT" => return Ok(()),
            "AUTHENTICATE" if first == "SCRAM-SHA-256" => {
                scram = Some(ScramServer::new(Accounts, ChannelBinding::TlsUnique(Vec::new())));
                out.push("AUTHENTICATE +".into());
            }
            "AUTHENTICATE" if first == "PLAIN" => {
                let _ = outcomes.send((nick.clone(), Outcome::Plain));
                out.push(format!(":scripted 904 {nick} :PLAIN is not for you when SCRAM is offered"));
            }
            "AUTHENTICATE" if first == "*" => {
                let _ = outcomes.send((account.clone().unwrap_or_else(|| nick.clone()), Outcome::Aborted));
                out.push(format!(":scripted 906 {nick} :SASL authentication aborted"));
                scram = None;
            }
            "AUTHENTICATE" if first == "+" && signed => {
                let who = account.clone().unwrap_or_default();
                let _ = outcomes.send((who.clone(), Outcome::LoggedIn));
                out.push(format!(":scripted 900 {nick} {nick}!u@scripted {who} :You are now logged in as {who}"));
                out.push(format!(":scripted 903 {nick} :SASL authentication successful"));
                (scram, signed) = (None, false);
            }
            "AUTHENTICATE" => {
                let Some(server) = scram.as_mut() else { continue };
                let payload = BASE64.decode(&first)?;
                if account.is_none() {
                    // client-first: `n,,n=NAME,r=…`.
                    account = String::from_utf8_lossy(&payload)
                        .split(',')
                        .find_map(|part| part.strip_prefix("n=").map(str::to_owned));
                }
                match server.respond(&payload) {
                    Ok(Response::Proceed(challenge)) => out.push(format!("AUTHENTICATE {}", BASE64.encode(challenge))),
                    Ok(Response::Success(_, mut server_final)) => {
                        if account.as_deref() == Some(FORGED_FOR) {
                            // A server that does not hold the key: some signature, not the right one.
                            server_final = format!("v={}", BASE64.encode([7u8; 32])).into_bytes();
                        }
                        out.push(format!("AUTHENTICATE {}", BASE64.encode(server_final)));
                        signed = true;
                    }
                    Err(_) => {
                        let _ = outcomes.send((account.clone().unwrap_or_default(), Outcome::Refused));
                        out.push(format!(":scripted 904 {nick} :SASL authentication failed"));
                        scram = None;
                    }
                }
            }
            _ => {}
        }
        for reply in out {
            writer.write_all(format!("{reply}\r\n").as_bytes()).await?;
        }
    }
    Ok(())
}

/// Stores `password` for `user` and connects their puppet; the admin room.
async fn connect_with(user: &MatrixUser, password: &str) -> anyhow::Result<String> {
    let admin = admin_room(user).await?;
    let answer = command(user, &admin, &format!("storepass {password}")).await?;
    assert!(answer.starts_with("Password stored"), "{answer}");
    let answer = command(user, &admin, "reconnect").await?;
    assert!(answer.starts_with("Reconnecting"), "{answer}");
    Ok(admin)
}

/// The bot's notice in `room` that `user`'s login failed.
async fn login_failure(user: &MatrixUser, room: &str) -> anyhow::Result<String> {
    let notice = user
        .wait_for_event(room, WAIT, |event| {
            event["sender"] == "@ircbot:localhost"
                && event["content"]["body"].as_str().is_some_and(|body| body.contains("IRC login to Test IRC"))
        })
        .await
        .context("waiting for the login failure notice")?;
    Ok(notice["content"]["body"].as_str().unwrap_or_default().to_owned())
}

#[tokio::test]
async fn scram_logs_in_refuses_a_wrong_password_and_catches_a_forged_server() -> anyhow::Result<()> {
    let (port, mut outcomes) = scripted_server().await?;
    // ngircd only fills the fixture's server slot: the network the bridge uses is the scripted server.
    let fixture = Fixture::on(Ircd::ngircd().await?, |section| {
        for network in section.networks.values_mut() {
            network.auth = AuthMethod::Sasl;
            for server in &mut network.servers {
                server.port = port;
            }
        }
    })
    .await?;
    let (alice, bob, carol) = (fixture.user("alice").await?, fixture.user("bob").await?, fixture.user("carol").await?);
    connect_with(&alice, PASSWORD).await?;
    let bob_admin = connect_with(&bob, "Tr0ub4dor&3").await?;
    let carol_admin = connect_with(&carol, PASSWORD).await?;

    let mut seen: HashMap<String, Outcome> = HashMap::new();
    let deadline = tokio::time::Instant::now() + WAIT;
    while seen.len() < 3 {
        let (account, outcome) = tokio::time::timeout_at(deadline, outcomes.recv())
            .await
            .with_context(|| format!("SASL outcomes so far: {seen:?}"))?
            .context("the scripted server stopped")?;
        seen.entry(account).or_insert(outcome);
    }
    assert_eq!(seen["alice"], Outcome::LoggedIn, "{seen:?}");
    assert_eq!(seen["bob"], Outcome::Refused, "{seen:?}");
    assert_eq!(seen["carol"], Outcome::Aborted, "{seen:?}");

    let told_bob = login_failure(&bob, &bob_admin).await?;
    assert!(
        told_bob.contains("as bob failed: the server refused the login (SASL authentication failed)"),
        "{told_bob}"
    );
    let told_carol = login_failure(&carol, &carol_admin).await?;
    assert!(told_carol.contains("as carol failed: the server could not prove it knows the password"), "{told_carol}");
    Ok(())
}
