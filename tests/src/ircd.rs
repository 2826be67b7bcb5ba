//! Real IRC servers for one test ([`Ircd`]: ngircd, the plain-IRC server, or InspIRCd linked to atheme
//! services for IRCv3, SASL and NickServ), and a raw IRC client over a TCP socket ([`IrcTestClient`]) that sees
//! exactly what an IRC user would.

use std::{
    collections::VecDeque,
    path::Path,
    process::Command,
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use tokio::{
    io::{AsyncBufReadExt, AsyncWriteExt, BufReader},
    net::{TcpStream, tcp::OwnedWriteHalf},
    sync::{Mutex, Notify},
};

use crate::{ServerProcess, StateDir, free_port};

/// How long an IRC server may take to accept connections.
const START_DEADLINE: Duration = Duration::from_secs(20);

/// The password atheme and InspIRCd link with.
const LINK_PASSWORD: &str = "lattice-link";
/// What atheme logs once it has linked and synced with InspIRCd: SASL and NickServ work from then on.
const SERVICES_SYNCED: &str = "finished synching with uplink";

/// Which server runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Ngircd,
    /// InspIRCd, with atheme linked on `link_port`, and TLS clients on `tls_port`.
    Inspircd {
        link_port: u16,
        tls_port: u16,
    },
}

/// An IRC server on 127.0.0.1 with its own folder and port; stopped when dropped.
#[derive(Debug)]
pub struct Ircd {
    // Declared before `process` and `dir`: services stop before their uplink, and both before the folder goes.
    services: Option<ServerProcess>,
    process: Option<ServerProcess>,
    dir: StateDir,
    port: u16,
    kind: Kind,
}

impl Ircd {
    /// Starts ngircd (`-n`, foreground) with every flood limit off, nicks up to 30 characters and `LIST` unbounded.
    pub async fn ngircd() -> anyhow::Result<Self> {
        let dir = StateDir::new("ngircd-")?;
        let port = free_port();
        let config = format!(
            "[Global]\nName = irc.localhost\nInfo = Lattice test server\nListen = 127.0.0.1\nPorts = {port}\n\
             MotdPhrase = \"Lattice test\"\n\
             [Limits]\nMaxConnections = 0\nMaxConnectionsIP = 0\nMaxJoins = 0\nMaxNickLength = 30\n\
             MaxPenaltyTime = 0\nMaxListSize = 100000\nPingTimeout = 120\nPongTimeout = 60\n\
             [Options]\nDNS = no\nIdent = no\nPAM = no\n"
        );
        std::fs::write(dir.join("ngircd.conf"), config).context("writing ngircd.conf")?;
        let mut ircd = Self { services: None, process: None, dir, port, kind: Kind::Ngircd };
        ircd.start().await?;
        Ok(ircd)
    }

    /// Starts InspIRCd 3 (IRCv3 caps, SASL, no flood limits) and atheme services linked to it (NickServ,
    /// SaslServ), and waits until the services have synced, so SASL and NickServ work at once.
    ///
    /// Accounts are made as people do: `PRIVMSG NickServ :REGISTER password x@example.com`
    /// ([`IrcTestClient::register_account`]).
    pub async fn inspircd() -> anyhow::Result<Self> {
        Self::inspircd_with("").await
    }

    /// [`Ircd::inspircd`] with `extra` appended to InspIRCd's config, e.g. a K-line:
    /// `<badhost host="*banned@*" reason="…">`.
    pub async fn inspircd_with(extra: &str) -> anyhow::Result<Self> {
        let dir = StateDir::new("inspircd-")?;
        // atheme runs as nobody (it refuses root) and writes its database and log here.
        make_world_writable(dir.path())?;
        let (port, link_port, tls_port) = (free_port(), free_port(), free_port());
        // A leaf server may link later (see [`Ircd::start_leaf`]); the hub only has to know it.
        let leaf = format!(
            r#"<link name="{LEAF_NAME}" ipaddr="127.0.0.1" port="{link_port}" allowmask="127.0.0.0/8"
  sendpass="{LINK_PASSWORD}" recvpass="{LINK_PASSWORD}">
{extra}
"#
        );
        write_motd(dir.path())?;
        let config = inspircd_hub_config(dir.path(), port, link_port, LINK_PASSWORD, &leaf);
        let config = format!("{config}{}", tls_listener(&dir, tls_port)?);
        std::fs::write(dir.join("inspircd.conf"), config).context("writing inspircd.conf")?;
        let services = atheme_config(link_port, LINK_PASSWORD);
        std::fs::write(dir.join("atheme.conf"), services).context("writing atheme.conf")?;
        let mut ircd = Self { services: None, process: None, dir, port, kind: Kind::Inspircd { link_port, tls_port } };
        if let Err(error) = ircd.start().await {
            ircd.dir.keep();
            return Err(error);
        }
        Ok(ircd)
    }

    /// The port clients connect to.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Starts a second InspIRCd (`leaf.localhost`) linked to this one, and waits until the link is up: people on it
    /// share channels with people on the hub, and stopping it is a netsplit for everyone on the hub.
    pub async fn start_leaf(&self) -> anyhow::Result<Leaf> {
        let Kind::Inspircd { link_port, .. } = self.kind else { bail!("only the InspIRCd test network links a leaf") };
        let dir = StateDir::new("inspircd-leaf-")?;
        let port = free_port();
        let links = format!(
            r#"<link name="{HUB_NAME}" ipaddr="127.0.0.1" port="{link_port}" sendpass="{LINK_PASSWORD}"
  recvpass="{LINK_PASSWORD}">
<autoconnect period="1" server="{HUB_NAME}">
"#
        );
        write_motd(dir.path())?;
        let config = inspircd_config(dir.path(), LEAF_NAME, "002", port, &links);
        // Linked servers load the same modules, and InspIRCd's TLS module wants a profile to serve.
        let config = format!("{config}{}", tls_listener(&dir, free_port())?);
        std::fs::write(dir.join("inspircd.conf"), config).context("writing the leaf's inspircd.conf")?;
        let mut leaf = Leaf { process: None, dir, port };
        leaf.start().await?;
        Ok(leaf)
    }

    /// The port TLS clients connect to (InspIRCd; it asks them for a client certificate, for CertFP).
    pub fn tls_port(&self) -> Option<u16> {
        match self.kind {
            Kind::Inspircd { tls_port, .. } => Some(tls_port),
            Kind::Ngircd => None,
        }
    }

    /// The PEM file of the certificate authority that signed the TLS port's certificate (for `127.0.0.1`).
    pub fn ca_file(&self) -> std::path::PathBuf {
        self.dir.join("ca.pem")
    }

    /// Whether the server has SASL and NickServ (InspIRCd with atheme).
    pub fn has_services(&self) -> bool {
        matches!(self.kind, Kind::Inspircd { .. })
    }

    /// Starts the server (again, after [`Ircd::stop`]) on the same port and waits until it accepts, and for
    /// InspIRCd until atheme has linked.
    pub async fn start(&mut self) -> anyhow::Result<()> {
        let (name, mut command) = match self.kind {
            Kind::Ngircd => {
                let mut command = Command::new("ngircd");
                command.arg("-n").arg("-f").arg(self.dir.join("ngircd.conf"));
                ("ngircd", command)
            }
            Kind::Inspircd { .. } => ("inspircd", inspircd_command(&self.dir)),
        };
        let process = ServerProcess::spawn(name, &mut command, &self.dir.join(&format!("{name}.log")))?;
        self.process = Some(process);
        let deadline = Instant::now() + START_DEADLINE;
        loop {
            if TcpStream::connect(("127.0.0.1", self.port)).await.is_ok() {
                break;
            }
            if let Some(status) = self.process.as_mut().and_then(ServerProcess::exit_status) {
                bail!("{name} exited with {status}: {}", self.log_tail());
            }
            if Instant::now() > deadline {
                bail!("{name} did not accept connections within {START_DEADLINE:?}: {}", self.log_tail());
            }
            // Polling a port that has no event to wait on.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if let Kind::Inspircd { .. } = self.kind {
            self.start_services(deadline).await?;
        }
        Ok(())
    }

    /// Starts atheme as nobody and waits until it has synced with InspIRCd.
    async fn start_services(&mut self, deadline: Instant) -> anyhow::Result<()> {
        let log = self.dir.join("atheme.log");
        let _ = std::fs::remove_file(&log);
        let mut command = Command::new("runuser");
        command.args(["-u", "nobody", "--", "atheme-services", "-n"]);
        command.arg("-c").arg(self.dir.join("atheme.conf"));
        command.arg("-l").arg(self.dir.join("atheme-services.log"));
        command.arg("-p").arg(self.dir.join("atheme.pid"));
        command.arg("-D").arg(self.dir.path());
        self.services = Some(ServerProcess::spawn("atheme", &mut command, &log)?);
        loop {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            if text.contains(SERVICES_SYNCED) {
                return Ok(());
            }
            if let Some(status) = self.services.as_mut().and_then(ServerProcess::exit_status) {
                bail!("atheme exited with {status}: {text}");
            }
            if Instant::now() > deadline {
                bail!("atheme did not link to InspIRCd within {START_DEADLINE:?}: {text}");
            }
            // atheme says it has synced only in its log.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Stops the server (and its services); every client connection drops.
    pub fn stop(&mut self) {
        if let Some(mut services) = self.services.take() {
            services.stop(Duration::from_secs(5));
        }
        if let Some(mut process) = self.process.take() {
            process.stop(Duration::from_secs(5));
        }
    }

    fn log_tail(&self) -> String {
        self.process.as_ref().map(|process| process.log_tail(20)).unwrap_or_default()
    }
}

/// The command (or numeric) of a received IRC line, after its IRCv3 tags and source.
pub fn command_of(line: &str) -> Option<&str> {
    let line = match line.strip_prefix('@') {
        Some(tagged) => tagged.split_once(' ')?.1,
        None => line,
    };
    let line = if line.starts_with(':') { line.split_once(' ')?.1 } else { line };
    line.split(' ').next()
}

/// The hub InspIRCd's server name (the one the bridge and services connect to).
const HUB_NAME: &str = "irc.localhost";
/// The leaf InspIRCd's server name.
const LEAF_NAME: &str = "leaf.localhost";

/// The modules every InspIRCd of a test network loads (linked servers must agree on them).
const INSPIRCD_MODULES: &[&str] = &[
    "cap",
    "ircv3",
    "ircv3_accounttag",
    "ircv3_batch",
    "ircv3_capnotify",
    "ircv3_chghost",
    "ircv3_ctctags",
    "ircv3_echomessage",
    "ircv3_invitenotify",
    "ircv3_labeledresponse",
    "ircv3_msgid",
    "ircv3_servertime",
    "namesx",
    "uhnames",
    "monitor",
    "setname",
    "services_account",
    "sasl",
    "spanningtree",
];

fn write_motd(dir: &Path) -> anyhow::Result<()> {
    std::fs::write(dir.join("motd.txt"), "Lattice test\n").context("writing the InspIRCd motd")
}

/// The config of the InspIRCd hub `irc.localhost` taking clients on `port`, linked to atheme services
/// (`services.localhost`, see [`atheme_config`]) on `link_port` with `password`, with `extra` appended; it writes its
/// pid and log into `dir` and reads `motd.txt` there. The tests and `scripts/demo.sh` (through
/// `lattice-server-config`) run this one config.
pub fn inspircd_hub_config(dir: &Path, port: u16, link_port: u16, password: &str, extra: &str) -> String {
    let links = format!(
        r#"<bind address="127.0.0.1" port="{link_port}" type="servers">
<link name="services.localhost" ipaddr="127.0.0.1" port="{link_port}" allowmask="127.0.0.0/8"
  sendpass="{password}" recvpass="{password}">
{extra}"#
    );
    inspircd_config(dir, HUB_NAME, "001", port, &links)
}

/// The config of atheme services (NickServ, SaslServ with PLAIN and EXTERNAL, CertFP) linking to the InspIRCd hub
/// of [`inspircd_hub_config`] on `link_port` with `password`.
pub fn atheme_config(link_port: u16, password: &str) -> String {
    format!(
        r#"loadmodule "modules/protocol/inspircd";
loadmodule "modules/backend/opensex";
loadmodule "modules/crypto/pbkdf2v2";
loadmodule "modules/nickserv/main";
loadmodule "modules/nickserv/register";
loadmodule "modules/nickserv/identify";
loadmodule "modules/nickserv/help";
loadmodule "modules/saslserv/main";
loadmodule "modules/saslserv/plain";
loadmodule "modules/saslserv/external";
loadmodule "modules/nickserv/cert";
serverinfo {{
  name = "services.localhost"; desc = "Lattice services"; numeric = "00A"; recontime = 1;
  netname = "Lattice"; hidehostsuffix = "users.localhost"; adminname = "Lattice";
  adminemail = "admin@example.com"; registeremail = "noreply@example.com"; auth = none;
  casemapping = rfc1459; loglevel = {{ error; info; }}; maxcertfp = 5; maxlogins = 5; maxusers = 50;
  mdlimit = 30; emaillimit = 1000; emailtime = 300;
}};
uplink "{HUB_NAME}" {{
  host = "127.0.0.1"; port = {link_port}; send_password = "{password}"; receive_password = "{password}";
}};
nickserv {{ nick = "NickServ"; user = "NickServ"; host = "services.localhost"; real = "Nickname Services"; }};
saslserv {{ nick = "SaslServ"; user = "SaslServ"; host = "services.localhost"; real = "SASL Agent"; }};
general {{ commit_interval = 5; }};
"#
    )
}

/// An InspIRCd config for server `name` (`id` its SID) taking clients on `port`, with `links` (server binds, link
/// blocks) appended, writing its pid and log into `dir` and reading `motd.txt` there.
fn inspircd_config(dir: &Path, name: &str, id: &str, port: u16, links: &str) -> String {
    let path = |file: &str| dir.join(file).display().to_string();
    let modules: String = INSPIRCD_MODULES.iter().map(|name| format!("<module name=\"{name}\">\n")).collect();
    format!(
        r#"<server name="{name}" description="Lattice IRC server" id="{id}" network="Lattice">
<admin name="Lattice" nick="admin" email="admin@example.com">
<bind address="127.0.0.1" port="{port}" type="clients">
<connect name="main" allow="*" timeout="60" pingfreq="120" hardsendq="1048576" softsendq="1048576"
  recvq="1048576" threshold="1000000" commandrate="1000000" fakelag="no" localmax="1000" globalmax="1000"
  resolvehostnames="no" useident="no" limit="5000" maxchans="100">
<performance netbuffersize="65534" somaxconn="128" softlimit="5000" clonesonconnect="no" timeskipwarn="0">
<security hideserver="" hidesplits="no" hideulines="no" hidebans="no" maxtargets="20"
  restrictbannedusers="no" genericoper="no" announceinvites="dynamic">
<limits maxnick="30" maxchan="64" maxmodes="20" maxident="10" maxhost="64" maxquit="255" maxtopic="307"
  maxkick="255" maxreal="128" maxgecos="128" maxaway="200">
<pid file="{pid}">
<log method="file" type="* -USERINPUT -USEROUTPUT" level="default" target="{log}">
<files motd="{motd}">
<dns timeout="1">
{modules}<sasl target="services.localhost" requiressl="no">
<uline server="services.localhost" silent="yes">
{links}"#,
        pid = path("inspircd.pid"),
        log = path("inspircd-server.log"),
        motd = path("motd.txt"),
    )
}

/// A second InspIRCd linked to the hub of an [`Ircd`] (see [`Ircd::start_leaf`]); stopped when dropped.
#[derive(Debug)]
pub struct Leaf {
    process: Option<ServerProcess>,
    dir: StateDir,
    port: u16,
}

impl Leaf {
    /// The port clients of the leaf connect to.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Starts the leaf (again, after [`Leaf::stop`]) and waits until it has linked to the hub and burst.
    pub async fn start(&mut self) -> anyhow::Result<()> {
        let mut command = inspircd_command(&self.dir);
        self.process = Some(ServerProcess::spawn("inspircd-leaf", &mut command, &self.dir.join("inspircd.log"))?);
        let deadline = Instant::now() + START_DEADLINE;
        while TcpStream::connect(("127.0.0.1", self.port)).await.is_err() {
            if let Some(status) = self.process.as_mut().and_then(ServerProcess::exit_status) {
                bail!("the leaf InspIRCd exited with {status}");
            }
            anyhow::ensure!(Instant::now() < deadline, "the leaf InspIRCd did not accept connections");
            // Polling a port that has no event to wait on.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // The server log is buffered: ask the leaf itself which servers it sees.
        let asker = IrcTestClient::connect(self.port, "linkcheck").await?;
        loop {
            asker.send("LINKS").await?;
            asker.wait_for(START_DEADLINE, |line| command_of(line) == Some("365")).await?;
            let links = asker.pending();
            if links.iter().any(|line| command_of(line) == Some("364") && line.contains(HUB_NAME)) {
                asker.send("QUIT").await?;
                return Ok(());
            }
            anyhow::ensure!(Instant::now() < deadline, "the leaf InspIRCd did not link within {START_DEADLINE:?}");
            // The autoconnect runs once a second.
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Stops the leaf: the link breaks and everyone on it quits, as the hub sees it, in a netsplit.
    pub fn stop(&mut self) {
        if let Some(mut process) = self.process.take() {
            process.stop(Duration::from_secs(5));
        }
    }
}

/// The command that runs InspIRCd in the foreground on `dir`'s `inspircd.conf`.
///
/// Debian's InspIRCd 3.15 crashes in `ssl_gnutls` when told to stop (SIGTERM), after everything a test needs:
/// core dumps are turned off so none lands in the test's working directory.
fn inspircd_command(dir: &StateDir) -> Command {
    let mut command = Command::new("sh");
    command.args(["-c", "ulimit -c 0 && exec \"$0\" \"$@\"", "inspircd"]);
    command.arg(format!("--config={}", dir.join("inspircd.conf").display()));
    command.args(["--nofork", "--runasroot"]);
    command
}

/// A TLS client listener on `port` with a certificate for 127.0.0.1 signed by a test CA (`ca.pem` in `dir`),
/// asking clients for their certificate and showing its SHA-256 fingerprint (CertFP).
fn tls_listener(dir: &StateDir, port: u16) -> anyhow::Result<String> {
    let path = |file: &str| dir.join(file).display().to_string();
    std::fs::write(dir.join("san.ext"), "subjectAltName=IP:127.0.0.1,DNS:irc.localhost\n")?;
    let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
    let steps: [Vec<String>; 3] = [
        ["req", "-x509"]
            .iter()
            .chain(&ec)
            .map(|a| (*a).to_owned())
            .chain(
                ["-keyout", &path("ca.key"), "-out", &path("ca.pem"), "-days", "2", "-subj", "/CN=Lattice test CA"]
                    .map(str::to_owned),
            )
            .collect(),
        ["req"]
            .iter()
            .chain(&ec)
            .map(|a| (*a).to_owned())
            .chain(
                ["-keyout", &path("key.pem"), "-out", &path("server.csr"), "-subj", "/CN=irc.localhost"]
                    .map(str::to_owned),
            )
            .collect(),
        [
            "x509",
            "-req",
            "-in",
            &path("server.csr"),
            "-CA",
            &path("ca.pem"),
            "-CAkey",
            &path("ca.key"),
            "-CAcreateserial",
            "-out",
            &path("cert.pem"),
            "-days",
            "2",
            "-extfile",
            &path("san.ext"),
        ]
        .map(str::to_owned)
        .to_vec(),
    ];
    for args in steps {
        let output = Command::new("openssl").args(&args).output().context("running openssl")?;
        anyhow::ensure!(output.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&output.stderr));
    }
    Ok(format!(
        r#"<module name="ssl_gnutls">
<module name="sslinfo">
<sslprofile name="tls" provider="gnutls" certfile="{cert}" keyfile="{key}" requestclientcert="yes"
  hash="sha256">
<bind address="127.0.0.1" port="{port}" type="clients" sslprofile="tls">
"#,
        cert = path("cert.pem"),
        key = path("key.pem"),
    ))
}

/// Lets every user create files in `dir` (atheme runs as nobody in a root-owned test folder).
fn make_world_writable(dir: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o777))
        .with_context(|| format!("opening {} to the services' user", dir.display()))
}

/// A raw IRC client: registers with a nick, then sends lines and waits for lines it receives.
#[derive(Clone)]
pub struct IrcTestClient {
    nick: String,
    writer: Arc<Mutex<OwnedWriteHalf>>,
    lines: Arc<std::sync::Mutex<VecDeque<String>>>,
    arrived: Arc<Notify>,
}

impl std::fmt::Debug for IrcTestClient {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.debug_struct("IrcTestClient").field("nick", &self.nick).finish_non_exhaustive()
    }
}

impl IrcTestClient {
    /// Connects to 127.0.0.1:`port` as `nick` and waits for the welcome (001).
    pub async fn connect(port: u16, nick: &str) -> anyhow::Result<Self> {
        Self::connect_with_caps(port, nick, &[]).await
    }

    /// Connects as `nick` with the IRCv3 capabilities `caps` requested (`CAP REQ` before registering; the server
    /// must offer them all) and waits for the welcome (001).
    pub async fn connect_with_caps(port: u16, nick: &str, caps: &[&str]) -> anyhow::Result<Self> {
        let stream = TcpStream::connect(("127.0.0.1", port)).await.context("connecting to the IRC server")?;
        let (reader, writer) = stream.into_split();
        let client = Self {
            nick: nick.to_owned(),
            writer: Arc::new(Mutex::new(writer)),
            lines: Arc::default(),
            arrived: Arc::default(),
        };
        let (lines, arrived, writer) = (client.lines.clone(), client.arrived.clone(), client.writer.clone());
        // Reads promptly, so the server never drops us for unread output; answers PINGs.
        tokio::spawn(async move {
            let mut reader = BufReader::new(reader).lines();
            while let Ok(Some(line)) = reader.next_line().await {
                if let Some(token) = line.strip_prefix("PING ") {
                    let _ = writer.lock().await.write_all(format!("PONG {token}\r\n").as_bytes()).await;
                    continue;
                }
                lines.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).push_back(line);
                arrived.notify_waiters();
            }
        });
        if !caps.is_empty() {
            client.send(&format!("CAP REQ :{}", caps.join(" "))).await?;
        }
        client.send(&format!("NICK {nick}")).await?;
        client.send(&format!("USER {nick} 0 * :Lattice test user")).await?;
        if !caps.is_empty() {
            client
                .wait_for(Duration::from_secs(30), |line| line.contains(" CAP ") && line.contains(" ACK "))
                .await
                .context("waiting for the server to acknowledge the capabilities")?;
            client.send("CAP END").await?;
        }
        client.wait_for(Duration::from_secs(30), |line| command_of(line) == Some("001")).await?;
        Ok(client)
    }

    /// The nick.
    pub fn nick(&self) -> &str {
        &self.nick
    }

    /// Sends one raw line (CR LF is added).
    pub async fn send(&self, line: &str) -> anyhow::Result<()> {
        self.writer.lock().await.write_all(format!("{line}\r\n").as_bytes()).await.context("writing to IRC")
    }

    /// Joins `channel` and waits for the end of its names list.
    pub async fn join(&self, channel: &str) -> anyhow::Result<()> {
        self.send(&format!("JOIN {channel}")).await?;
        self.wait_for(Duration::from_secs(30), |line| command_of(line) == Some("366")).await?;
        Ok(())
    }

    /// Waits for the first line not taken yet that `predicate` holds for, and takes it.
    pub async fn wait_for(&self, timeout: Duration, predicate: impl Fn(&str) -> bool) -> anyhow::Result<String> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.arrived.notified();
            {
                let mut lines = self.lines.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
                if let Some(index) = lines.iter().position(|line| predicate(line)) {
                    return Ok(lines.remove(index).expect("the index was just found"));
                }
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                let lines = self.lines.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
                let seen: Vec<&String> = lines.iter().rev().take(20).collect();
                bail!("{} saw no matching IRC line within {timeout:?}; last lines: {seen:#?}", self.nick);
            }
        }
    }

    /// Registers an account named after the nick with NickServ and waits for NickServ to confirm it.
    pub async fn register_account(&self, password: &str, email: &str) -> anyhow::Result<()> {
        self.send(&format!("PRIVMSG NickServ :REGISTER {password} {email}")).await?;
        self.wait_for(Duration::from_secs(30), |line| {
            line.starts_with(":NickServ!") && line.contains(" NOTICE ") && line.contains("registered")
        })
        .await
        .context("waiting for NickServ to register the account")?;
        Ok(())
    }

    /// Quits and waits for the server to close the connection (its `ERROR` line).
    pub async fn quit(&self, reason: &str) -> anyhow::Result<()> {
        self.send(&format!("QUIT :{reason}")).await?;
        self.wait_for(Duration::from_secs(30), |line| line.starts_with("ERROR")).await?;
        Ok(())
    }

    /// Asks `WHOIS nick` and waits for the line saying which account `nick` is logged in to (`330`).
    pub async fn whois_account(&self, nick: &str) -> anyhow::Result<String> {
        self.send(&format!("WHOIS {nick}")).await?;
        self.wait_for(Duration::from_secs(30), |line| command_of(line) == Some("330"))
            .await
            .with_context(|| format!("waiting for the account {nick} is logged in to"))
    }

    /// Every line received and not taken yet.
    pub fn pending(&self) -> Vec<String> {
        self.lines.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).iter().cloned().collect()
    }
}
