//! A bridge under measurement as its own process (`lattice-irc` / `lattice-xmpp run -c config.yaml`), so its
//! memory and CPU time are its own: `VmRSS` and `utime + stime` are read from `/proc/PID/…`. The IRC bridge's edge
//! (the process that holds its IRC connections, with its socket in the bridge's folder) counts with it.

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use lattice_e2e::{ServerProcess, free_port};

/// How long a bridge may take to answer `/health/live`.
const START_DEADLINE: Duration = Duration::from_secs(60);

/// A bridge's config and registration, written before the homeserver starts (which loads the registration).
pub(crate) struct BridgeSetup {
    /// `lattice-irc` or `lattice-xmpp`.
    binary: PathBuf,
    dir: PathBuf,
    /// The config with `HOMESERVER_URL` in place of the homeserver's URL.
    template: String,
    /// The appservice listener's address, `http://127.0.0.1:PORT`.
    pub(crate) url: String,
    /// The registration file the homeserver loads.
    pub(crate) registration: PathBuf,
    /// The token the homeserver sends (`hs_token`).
    pub(crate) hs_token: String,
}

/// What goes into `bridge:` of the config, and the binary that reads it.
pub(crate) struct Flavour<'a> {
    pub(crate) binary: &'a str,
    pub(crate) id: &'a str,
    pub(crate) bot_localpart: &'a str,
    /// The `bridge:` section, indented by two spaces.
    pub(crate) section: String,
    /// For the IRC bridge, `bridge.edge.mode`; its edge's socket is then put in the run's folder.
    pub(crate) edge_mode: Option<&'static str>,
}

impl BridgeSetup {
    /// Writes the config into `dir` and runs `generate-registration`.
    pub(crate) fn new(bin_dir: &Path, dir: &Path, flavour: Flavour<'_>) -> anyhow::Result<Self> {
        let port = free_port();
        let d = dir.display();
        let template = format!(
            "homeserver:\n  url: HOMESERVER_URL\n  server_name: localhost\n\
             appservice:\n  id: {id}\n  bind_address: 127.0.0.1\n  port: {port}\n  registration: {d}/registration.yaml\n  \
             bot:\n    localpart: {bot}\n\
             database:\n  url: sqlite://{d}/bridge.db\n  max_connections: 10\n\
             encryption:\n  key_file: {d}/bridge.key\n\
             logging:\n  filter: warn\n  format: pretty\n\
             metrics:\n  enabled: false\n\
             permissions:\n  users: [\"*\"]\n  admins: [\"@admin:localhost\"]\n\
             bridge:\n{section}{edge}",
            id = flavour.id,
            bot = flavour.bot_localpart,
            section = flavour.section,
            edge = match flavour.edge_mode {
                // The IRC edge's socket in the run's folder: found by the bench, stopped by its clean-up.
                Some(mode) => format!("  edge:\n    mode: {mode}\n    socket: {d}/edge.sock\n    linger_secs: 60\n"),
                None => String::new(),
            },
        );
        let binary = bin_dir.join(flavour.binary);
        if !binary.exists() {
            bail!(
                "{} is missing: build it with `cargo build --release -p …` (scripts/bench.sh does)",
                binary.display()
            );
        }
        let setup = Self {
            binary,
            dir: dir.to_owned(),
            template,
            url: format!("http://127.0.0.1:{port}"),
            registration: dir.join("registration.yaml"),
            hs_token: String::new(),
        };
        setup.write_config("http://127.0.0.1:1")?;
        let status = Command::new(&setup.binary)
            .args(["generate-registration", "-c"])
            .arg(setup.config_path())
            .status()
            .with_context(|| format!("running {} generate-registration", setup.binary.display()))?;
        if !status.success() {
            bail!("{} generate-registration failed: {status}", setup.binary.display());
        }
        let text = std::fs::read_to_string(&setup.registration).context("reading the registration")?;
        let yaml: serde_yaml::Value = serde_yaml::from_str(&text).context("parsing the registration")?;
        let token = |name: &str| yaml[name].as_str().map(str::to_owned).context("a token is missing");
        Ok(Self { hs_token: token("hs_token")?, ..setup })
    }

    fn config_path(&self) -> PathBuf {
        self.dir.join("config.yaml")
    }

    fn write_config(&self, homeserver_url: &str) -> anyhow::Result<()> {
        std::fs::write(self.config_path(), self.template.replace("HOMESERVER_URL", homeserver_url))
            .context("writing the bridge config")
    }

    /// Starts `run` against the homeserver at `homeserver_url` and waits until it answers `/health/live`.
    pub(crate) async fn start(&self, homeserver_url: &str) -> anyhow::Result<BridgeProcess> {
        self.write_config(homeserver_url)?;
        let mut command = Command::new(&self.binary);
        command.args(["run", "-c"]).arg(self.config_path());
        let name = self.binary.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let started = Instant::now();
        let mut process = ServerProcess::spawn(&name, &mut command, &self.dir.join("bridge.log"))?;
        let http = reqwest::Client::builder().no_proxy().build()?;
        let live = format!("{}/health/live", self.url);
        loop {
            if let Some(status) = process.exit_status() {
                bail!("{name} exited with {status}: {}", process.log_tail(30));
            }
            if matches!(http.get(&live).send().await, Ok(answer) if answer.status().is_success()) {
                break;
            }
            if started.elapsed() > START_DEADLINE {
                bail!("{name} did not answer {live} within {START_DEADLINE:?}: {}", process.log_tail(30));
            }
            // Polling a starting process that has nothing to wait on.
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(BridgeProcess { process, started, edge_pid_file: self.dir.join("edge.pid") })
    }
}

/// A running bridge.
pub(crate) struct BridgeProcess {
    process: ServerProcess,
    started: Instant,
    /// Where the IRC bridge's edge writes its process ID.
    edge_pid_file: PathBuf,
}

impl BridgeProcess {
    /// When the process was spawned.
    pub(crate) fn started(&self) -> Instant {
        self.started
    }

    /// The process ID.
    pub(crate) fn pid(&self) -> u32 {
        self.process.id()
    }

    /// The process ID of the IRC bridge's edge, if it has one.
    pub(crate) fn edge_pid(&self) -> Option<u32> {
        std::fs::read_to_string(&self.edge_pid_file).ok()?.trim().parse().ok()
    }

    /// How to upgrade the IRC bridge's edge with `lattice-irc` from `bin_dir` (see [`run_edge_upgrade`]).
    pub(crate) fn upgrade_edge_command(&self, bin_dir: &Path) -> EdgeUpgrade {
        EdgeUpgrade { binary: bin_dir.join("lattice-irc"), socket: self.edge_pid_file.with_extension("sock") }
    }

    /// Waits until its resident memory stops moving (two readings 1 s apart within 1%, at most 20 s) and returns it,
    /// with its edge's.
    pub(crate) async fn settled_rss_kib(&self) -> anyhow::Result<u64> {
        let edge = match self.edge_pid() {
            Some(edge) => settled_rss_kib(edge).await?,
            None => 0,
        };
        Ok(settled_rss_kib(self.pid()).await? + edge)
    }

    /// CPU time it (and its edge) used so far (user + system), in seconds.
    pub(crate) fn cpu_secs(&self) -> anyhow::Result<f64> {
        let edge = self.edge_pid().map_or(Ok(0.0), cpu_secs)?;
        Ok(cpu_secs(self.pid())? + edge)
    }

    /// The last lines of its log.
    pub(crate) fn log_tail(&self, lines: usize) -> String {
        self.process.log_tail(lines)
    }
}

/// `VmRSS` of a process, in KiB.
pub(crate) fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).context("reading /proc/PID/status")?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .context("no VmRSS in /proc/PID/status")
}

/// Waits until a process's resident memory stops moving and returns it.
pub(crate) async fn settled_rss_kib(pid: u32) -> anyhow::Result<u64> {
    let mut last = rss_kib(pid)?;
    for _ in 0..20 {
        // Memory settles with no event to wait for: allocators return pages, tasks finish.
        tokio::time::sleep(Duration::from_secs(1)).await;
        let now = rss_kib(pid)?;
        if now.abs_diff(last) * 100 <= last {
            return Ok(now);
        }
        last = now;
    }
    Ok(last)
}

/// `utime + stime` of a process (fields 14 and 15 of `/proc/PID/stat`), in seconds.
pub(crate) fn cpu_secs(pid: u32) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).context("reading /proc/PID/stat")?;
    // The command name may hold spaces: count fields after its closing parenthesis (field 3 is the first).
    let rest = stat.rsplit_once(") ").map(|(_, rest)| rest).context("malformed /proc/PID/stat")?;
    let fields: Vec<&str> = rest.split(' ').collect();
    let ticks = |index: usize| -> anyhow::Result<f64> {
        Ok(fields.get(index - 3).context("short /proc/PID/stat")?.parse::<f64>()?)
    };
    let per_second = clock_ticks_per_second();
    Ok((ticks(14)? + ticks(15)?) / per_second)
}

/// `getconf CLK_TCK` (100 on Linux everywhere we run).
fn clock_ticks_per_second() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|output| String::from_utf8(output.stdout).ok())
        .and_then(|text| text.trim().parse().ok())
        .unwrap_or(100.0)
}

/// An edge upgrade to run: the new binary and the socket.
pub(crate) struct EdgeUpgrade {
    binary: PathBuf,
    socket: PathBuf,
}

/// Upgrades the edge as an operator does (`lattice-irc edge --take-over`); returns how long it took until the new
/// edge listened.
pub(crate) async fn run_edge_upgrade(upgrade: EdgeUpgrade) -> anyhow::Result<Duration> {
    Ok(lattice_e2e::irc_edge::take_over_edge(&upgrade.binary, &upgrade.socket).await?.1)
}
