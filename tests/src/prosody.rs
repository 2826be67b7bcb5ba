//! A real Prosody XMPP server for one test: its own folder, ports, accounts and component secret.
//!
//! The config follows `../shared/reference/servers.md`: c2s without TLS and with PLAIN allowed (test clients speak
//! raw XML), a `muc` component whose new rooms are unlocked, PEP (XEP-0163, for XEP-0084 avatars), and one external
//! component (XEP-0114) for the bridge with a random secret.

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use anyhow::{Context as _, bail};

use crate::{ServerProcess, StateDir, free_port};

/// How long Prosody may take to listen (it takes about 0.1 s).
const START_DEADLINE: Duration = Duration::from_secs(20);
/// Lines of Prosody's log quoted in an error.
const LOG_TAIL_LINES: usize = 40;

/// The config of a Prosody on 127.0.0.1 serving `localhost` (clients on `c2s_port`), with MUCs at
/// `conference.localhost` and the external components `components` on `component_port`, each with `secret`; its pid,
/// data and (empty) certs folder are in `dir`. The tests and `scripts/demo.sh` (through `lattice-server-config`) run
/// this one config.
pub fn prosody_config(dir: &Path, c2s_port: u16, component_port: u16, components: &[&str], secret: &str) -> String {
    let components: String = components
        .iter()
        .map(|component| format!("\nComponent \"{component}\"\n    component_secret = \"{secret}\"\n"))
        .collect();
    format!(
        r#"-- Written by lattice-e2e.
run_as_root = true
pidfile = "{dir}/prosody.pid"
data_path = "{dir}/data"
certificates = "{dir}/certs"
log = {{ {{ levels = {{ min = "info" }}, to = "console" }} }}
interfaces = {{ "127.0.0.1" }}
c2s_ports = {{ {c2s_port} }}
c2s_direct_tls_ports = {{ }}
component_interfaces = {{ "127.0.0.1" }}
component_ports = {{ {component_port} }}
modules_enabled = {{ "roster"; "saslauth"; "disco"; "ping"; "register"; "posix"; "admin_shell"; "vcard"; "pep" }}
modules_disabled = {{ "s2s" }}
c2s_require_encryption = false
allow_unencrypted_plain_auth = true
authentication = "internal_plain"

VirtualHost "localhost"

Component "conference.localhost" "muc"
    muc_room_locking = false
    muc_room_default_public = true
    -- XEP-0313 archives: stanza-ids on messages and MAM queries. Kept in Prosody's default (file) storage: in
    -- memory, each archived message is kept as a compiled Lua chunk, and Prosody slowed down 1.7 to 2.7 times over
    -- a benchmark run as they piled up; on file storage its pace holds.
    modules_enabled = {{ "muc_mam" }}
    muc_log_by_default = true
{components}"#,
        dir = dir.display(),
    )
}

/// A Prosody on 127.0.0.1 serving `localhost`, with MUCs at `conference.localhost` and an external component.
/// Stopped when dropped; its folder is removed then too, unless `LATTICE_KEEP_TEST_STATE` is set.
#[derive(Debug)]
pub struct Prosody {
    // Declared before `dir`: the process stops before its folder is removed.
    process: Option<ServerProcess>,
    dir: StateDir,
    c2s_port: u16,
    component_port: u16,
    components: Vec<String>,
    component_secret: String,
}

impl Prosody {
    /// Starts a fresh Prosody whose external component is `component` (e.g. `bridge.localhost`), and waits until
    /// its client and component ports accept connections.
    pub async fn start(component: &str) -> anyhow::Result<Self> {
        Self::start_with_components(&[component]).await
    }

    /// Starts a fresh Prosody as [`Prosody::start`] does, with several external components sharing one secret; the
    /// first is [`Prosody::component`].
    pub async fn start_with_components(components: &[&str]) -> anyhow::Result<Self> {
        anyhow::ensure!(!components.is_empty(), "Prosody needs an external component");
        let dir = StateDir::new("prosody-")?;
        let c2s_port = free_port();
        let component_port = free_port();
        let component_secret = format!("{:032x}", rand::random::<u128>());
        std::fs::create_dir_all(dir.join("data")).context("creating Prosody's data folder")?;
        // An empty certs folder next to the config keeps Prosody from looking for certificates elsewhere.
        std::fs::create_dir_all(dir.join("certs")).context("creating Prosody's certs folder")?;
        let config = prosody_config(dir.path(), c2s_port, component_port, components, &component_secret);
        std::fs::write(dir.join("prosody.cfg.lua"), config).context("writing prosody.cfg.lua")?;
        let components = components.iter().map(|component| (*component).to_owned()).collect();
        let mut prosody = Self { process: None, dir, c2s_port, component_port, components, component_secret };
        prosody.launch().await?;
        Ok(prosody)
    }

    /// The config file Prosody runs with (also how to find its process).
    pub fn config_path(&self) -> PathBuf {
        self.dir.join("prosody.cfg.lua")
    }

    async fn launch(&mut self) -> anyhow::Result<()> {
        let mut command = Command::new("prosody");
        command.arg("-F").arg("--config").arg(self.config_path()).current_dir(self.dir.path());
        let process = ServerProcess::spawn("Prosody", &mut command, &self.dir.join("prosody.log"))?;
        let ports = [self.c2s_port, self.component_port];
        let poll = Duration::from_millis(20);
        self.process = Some(crate::xmpp_server::listening("Prosody", process, ports, START_DEADLINE, poll).await?);
        Ok(())
    }

    /// Stops Prosody (SIGTERM) and starts it again on the same ports with the same accounts; MUCs that are not
    /// persistent are gone afterwards, as after any restart.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        if let Some(mut process) = self.process.take() {
            process.stop(Duration::from_secs(5));
        }
        self.launch().await
    }

    /// Creates the account `user@localhost` with `prosodyctl register`.
    pub async fn register(&self, user: &str, password: &str) -> anyhow::Result<()> {
        let output = tokio::process::Command::new("prosodyctl")
            .arg("--config")
            .arg(self.config_path())
            .args(["register", user, "localhost", password])
            .output()
            .await
            .context("running prosodyctl register")?;
        if !output.status.success() {
            bail!(
                "prosodyctl register {user} failed ({}): {}{}",
                output.status,
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
        }
        Ok(())
    }

    /// Runs one command of Prosody's admin shell (`prosodyctl shell`, over the admin socket in the data folder)
    /// and returns what it printed; `> lua` evaluates Lua inside the running server.
    pub async fn shell(&self, command: &str) -> anyhow::Result<String> {
        let output = tokio::process::Command::new("prosodyctl")
            .arg("--config")
            .arg(self.config_path())
            .args(["shell", command])
            .output()
            .await
            .context("running prosodyctl shell")?;
        let printed = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
        if !output.status.success() || printed.contains("Error") {
            bail!("prosodyctl shell {command:?} failed ({}): {printed}", output.status);
        }
        Ok(printed)
    }

    /// Makes the MUC `room` (a bare JID on the MUC service) forget the occupant whose real JID is `real_jid`
    /// without telling anyone, as a MUC service restarted behind a server-to-server link does. Fails when the
    /// room has no such occupant.
    pub async fn forget_muc_occupant(&self, room: &str, real_jid: &str) -> anyhow::Result<()> {
        let lua = format!(
            "> local room = prosody.hosts[{muc:?}].modules.muc.get_room_from_jid({room:?}); \
             local occupant = room and room:get_occupant_by_real_jid({real_jid:?}); \
             if not occupant then return 'no such occupant' end; \
             room._occupants[occupant.nick] = nil; room._jid_nick[{real_jid:?}] = nil; return 'forgotten'",
            muc = self.muc_domain(),
        );
        let printed = self.shell(&lua).await?;
        if !printed.contains("forgotten") {
            bail!("Prosody did not forget {real_jid} in {room}: {printed}");
        }
        Ok(())
    }

    /// How many occupants the MUC `room` (a bare JID on the MUC service) has.
    pub async fn muc_occupant_count(&self, room: &str) -> anyhow::Result<usize> {
        let lua = format!(
            "> local room = prosody.hosts[{muc:?}].modules.muc.get_room_from_jid({room:?}); \
             if not room then return 'no such room' end; \
             local count = 0; for _ in room:each_occupant() do count = count + 1 end; return 'occupants=' .. count",
            muc = self.muc_domain(),
        );
        let printed = self.shell(&lua).await?;
        let count = printed.split_once("occupants=").and_then(|(_, rest)| {
            rest.split(|c: char| !c.is_ascii_digit()).next().and_then(|digits| digits.parse().ok())
        });
        count.with_context(|| format!("no occupant count for {room} from Prosody: {printed}"))
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

    /// The external component's handshake secret.
    pub fn component_secret(&self) -> &str {
        &self.component_secret
    }

    /// The domain of user accounts.
    pub fn domain(&self) -> &str {
        "localhost"
    }

    /// The MUC service's domain.
    pub fn muc_domain(&self) -> &str {
        "conference.localhost"
    }

    /// The last lines of Prosody's log.
    pub fn log_tail(&self, lines: usize) -> String {
        self.process.as_ref().map(|process| process.log_tail(lines)).unwrap_or_default()
    }
}

impl Drop for Prosody {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("last lines of Prosody's log:\n{}", self.log_tail(LOG_TAIL_LINES));
        }
    }
}
