//! A real ejabberd XMPP server for one test: its own folder (config, Mnesia spool, log), ports, accounts and
//! component secret, run as the current user.
//!
//! Debian's `ejabberd` package is run without its `ejabberdctl` wrapper (which switches to the `ejabberd` user and
//! starts a distributed Erlang node): `erl -s ejabberd` with the package's libraries, no node name, the config and
//! log given by environment. The config mirrors the Prosody one ([`crate::prosody::prosody_config`]): c2s without
//! TLS and with PLAIN allowed, `mod_muc` with `mod_mam` archiving every room (so the MUC stamps stanza-ids), PEP,
//! vCards, in-band registration (how the harness makes accounts), and `ejabberd_service` for the external
//! components (XEP-0114).

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use anyhow::{Context as _, bail};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::{ServerProcess, StateDir, free_port, xmpp_client::escape};

/// How long ejabberd may take to listen (about 3 s on a fresh spool, on 2 busy cores more).
const START_DEADLINE: Duration = Duration::from_secs(60);
/// Lines of ejabberd's log quoted in an error.
const LOG_TAIL_LINES: usize = 40;
/// Where Debian's package keeps ejabberd's Erlang applications.
const ERL_LIBS: &str = "/usr/lib/x86_64-linux-gnu";
/// The Erlang runtime that runs it.
const ERL: &str = "/usr/bin/erl";

/// The config of an ejabberd on 127.0.0.1 serving `localhost` (clients on `c2s_port`), with MUCs at
/// `conference.localhost` and the external components `components` on `component_port`, each with `secret`.
pub fn ejabberd_config(c2s_port: u16, component_port: u16, components: &[&str], secret: &str) -> String {
    let components: String = components
        .iter()
        .map(|component| format!("      \"{component}\":\n        password: \"{secret}\"\n"))
        .collect();
    format!(
        r#"# Written by lattice-e2e.
hosts:
  - localhost
loglevel: info
log_rotate_count: 0
certfiles: []
auth_method: internal
auth_password_format: plain
# In-band registration is how the tests make accounts: no limit per address.
registration_timeout: infinity
listen:
  -
    port: {c2s_port}
    ip: "127.0.0.1"
    module: ejabberd_c2s
    starttls: false
    shaper: none
    max_stanza_size: 1048576
  -
    port: {component_port}
    ip: "127.0.0.1"
    module: ejabberd_service
    shaper_rule: none
    hosts:
{components}acl:
  local:
    user_regexp: ""
access_rules:
  local:
    allow: local
  register:
    allow: all
shaper_rules:
  max_user_sessions: 100
  max_user_offline_messages: 5000
modules:
  mod_caps: {{}}
  mod_disco: {{}}
  mod_ping: {{}}
  mod_roster: {{}}
  mod_vcard: {{}}
  mod_vcard_xupdate: {{}}
  mod_avatar: {{}}
  mod_pubsub:
    plugins: ["flat", "pep"]
  mod_register:
    ip_access: all
    access: register
  mod_mam:
    default: always
  mod_muc:
    host: "conference.localhost"
    access_create: all
    history_size: 20
    default_room_options:
      mam: true
      public: true
"#
    )
}

/// An ejabberd on 127.0.0.1 serving `localhost`, with MUCs at `conference.localhost` and external components.
/// Stopped when dropped; its folder is removed then too, unless `LATTICE_KEEP_TEST_STATE` is set.
#[derive(Debug)]
pub struct Ejabberd {
    // Declared before `dir`: the process stops before its folder is removed.
    process: Option<ServerProcess>,
    dir: StateDir,
    c2s_port: u16,
    component_port: u16,
    components: Vec<String>,
    component_secret: String,
}

impl Ejabberd {
    /// Why ejabberd cannot run on this machine, or `None` when Debian's package is installed.
    pub fn unavailable() -> Option<String> {
        let installed = Path::new(ERL).exists()
            && std::fs::read_dir(ERL_LIBS).is_ok_and(|entries| {
                entries.flatten().any(|entry| entry.file_name().to_string_lossy().starts_with("ejabberd-"))
            });
        (!installed).then(|| format!("no ejabberd in {ERL_LIBS} (scripts/install.sh ejabberd installs it)"))
    }

    /// Starts a fresh ejabberd whose external components are `components` (sharing one secret; the first is
    /// [`Ejabberd::component`]), and waits until its client and component ports accept connections.
    pub async fn start_with_components(components: &[&str]) -> anyhow::Result<Self> {
        anyhow::ensure!(!components.is_empty(), "ejabberd needs an external component");
        if let Some(reason) = Self::unavailable() {
            bail!("{reason}");
        }
        let dir = StateDir::new("ejabberd-")?;
        let c2s_port = free_port();
        let component_port = free_port();
        let component_secret = format!("{:032x}", rand::random::<u128>());
        std::fs::create_dir_all(dir.join("spool")).context("creating ejabberd's spool folder")?;
        let config = ejabberd_config(c2s_port, component_port, components, &component_secret);
        std::fs::write(dir.join("ejabberd.yml"), config).context("writing ejabberd.yml")?;
        let components = components.iter().map(|component| (*component).to_owned()).collect();
        let mut ejabberd = Self { process: None, dir, c2s_port, component_port, components, component_secret };
        ejabberd.launch().await?;
        Ok(ejabberd)
    }

    /// The config file ejabberd runs with.
    pub fn config_path(&self) -> PathBuf {
        self.dir.join("ejabberd.yml")
    }

    fn command(&self) -> Command {
        let mut command = Command::new(ERL);
        // The spool path is an Erlang string term; it also puts the state dir on the command line, where
        // scripts/test.sh looks for servers left behind.
        let spool = format!("\"{}\"", self.dir.join("spool").display());
        command
            .args(["-noinput", "-noshell", "-mnesia", "dir"])
            .arg(spool)
            .args(["-s", "ejabberd"])
            .env("ERL_LIBS", ERL_LIBS)
            .env("EJABBERD_CONFIG_PATH", self.config_path())
            .env("EJABBERD_LOG_PATH", self.dir.join("ejabberd.log"))
            .env("ERL_CRASH_DUMP", self.dir.join("erl_crash.dump"))
            .env("ERL_INETRC", "/etc/ejabberd/inetrc")
            .current_dir(self.dir.path());
        command
    }

    async fn launch(&mut self) -> anyhow::Result<()> {
        let process = ServerProcess::spawn("ejabberd", &mut self.command(), &self.dir.join("ejabberd.log"))?;
        let ports = [self.c2s_port, self.component_port];
        let poll = Duration::from_millis(50);
        self.process = Some(crate::xmpp_server::listening("ejabberd", process, ports, START_DEADLINE, poll).await?);
        Ok(())
    }

    /// Stops ejabberd (SIGTERM: the Erlang runtime shuts down in order) and starts it again on the same ports and
    /// spool, so accounts stay; MUCs that are not persistent are gone afterwards, as after any restart.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        if let Some(mut process) = self.process.take() {
            process.stop(Duration::from_secs(10));
        }
        self.launch().await
    }

    /// Creates the account `user@localhost` by in-band registration (XEP-0077) on the client port.
    pub async fn register(&self, user: &str, password: &str) -> anyhow::Result<()> {
        let mut stream =
            tokio::net::TcpStream::connect(("127.0.0.1", self.c2s_port)).await.context("connecting to ejabberd")?;
        let request = format!(
            "<?xml version='1.0'?><stream:stream to='localhost' xmlns='jabber:client' \
             xmlns:stream='http://etherx.jabber.org/streams' version='1.0'>\
             <iq type='set' id='register'><query xmlns='jabber:iq:register'>\
             <username>{}</username><password>{}</password></query></iq>",
            escape(user),
            escape(password)
        );
        stream.write_all(request.as_bytes()).await.context("writing to ejabberd")?;
        let mut answer = String::new();
        let mut chunk = vec![0; 8192];
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let read = tokio::time::timeout_at(deadline, stream.read(&mut chunk))
                .await
                .with_context(|| format!("no answer to registering {user}: {answer}"))?
                .context("reading from ejabberd")?;
            if read == 0 {
                bail!("ejabberd closed the connection while registering {user}: {answer}");
            }
            answer.push_str(&String::from_utf8_lossy(&chunk[..read]));
            if answer.contains("id='register'") || answer.contains("id=\"register\"") {
                if answer.contains("type='result'") || answer.contains("type=\"result\"") {
                    return Ok(());
                }
                if answer.contains("</iq>") {
                    bail!("ejabberd refused to register {user}: {answer}");
                }
            }
        }
    }

    /// The client-to-server port (plain TCP, PLAIN SASL allowed).
    pub fn c2s_port(&self) -> u16 {
        self.c2s_port
    }

    /// The external component port (XEP-0114), as `127.0.0.1:PORT`.
    pub fn component_address(&self) -> String {
        format!("127.0.0.1:{}", self.component_port)
    }

    /// The (first) external component's domain.
    pub fn component(&self) -> &str {
        &self.components[0]
    }

    /// The external components' handshake secret.
    pub fn component_secret(&self) -> &str {
        &self.component_secret
    }

    /// The last lines of ejabberd's log.
    pub fn log_tail(&self, lines: usize) -> String {
        self.process.as_ref().map(|process| process.log_tail(lines)).unwrap_or_default()
    }
}

impl Drop for Ejabberd {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("last lines of ejabberd's log:\n{}", self.log_tail(LOG_TAIL_LINES));
        }
    }
}
