//! The Debian packages as an operator installs them: `scripts/package.sh` builds `lattice-irc` and `lattice-xmpp`
//! with cargo-deb, `dpkg -i` installs them (system users, conffiles, units), `systemd-analyze verify` checks the
//! units and `systemd-analyze security --offline` rates their sandbox, and the IRC unit's own `ExecStartPre=` and
//! `ExecStart=` lines run as the unit's user against a test Synapse until the homeserver's ping reaches the bridge,
//! `/health/ready` says so, and a Matrix message reaches IRC. Then the stopped bridge's store moves to PostgreSQL
//! (`lattice-irc copy-database`, as docs/operating.md has the operator run it), and the bridge started on it still
//! bridges the room.
//!
//! The packages here hold the debug build the other tests make (`scripts/package.sh --profile dev`), so CI spends
//! seconds packaging instead of a release build's quarter of an hour; their layout and scripts are the release's.
//! No systemd runs as PID 1 on this machine (nor in CI), so systemd does not start the unit: its command lines run
//! under `setpriv` with the unit's `User=`, `Group=`, `WorkingDirectory=`, `Environment=`, no new privileges and an
//! empty capability bounding set. The rest of the sandbox (`ProtectSystem=`, `SystemCallFilter=`, …) is checked by
//! `systemd-analyze` but not enforced here. The test needs root (dpkg): as another user it is skipped with a
//! message. The packages are purged at the end, and other runs of this test wait for a lock meanwhile.

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use anyhow::{Context as _, ensure};
use lattice_e2e::{
    ServerProcess, Synapse, free_port,
    ircd::{IrcTestClient, Ircd},
    workspace_root,
};
use serde_yaml::Value;

use crate::binaries::build_binary;

/// The highest `systemd-analyze security` exposure the units may have, in tenths as `--threshold=` takes it: the
/// report says 0.0 (best) to 10.0 (worst), and up to 2.0 is rated "OK".
const MAX_EXPOSURE: &str = "20";
const CHANNEL: &str = "#packaged";

/// The settings of a unit file's `[Service]` section, in order (a key may repeat).
struct Unit {
    path: PathBuf,
    service: Vec<(String, String)>,
}

impl Unit {
    fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let mut section = "";
        let mut service = Vec::new();
        for line in text.lines().map(str::trim) {
            if line.starts_with('[') {
                section = line;
            } else if section == "[Service]"
                && !line.starts_with('#')
                && let Some((key, value)) = line.split_once('=')
            {
                service.push((key.to_owned(), value.to_owned()));
            }
        }
        Ok(Self { path: path.to_owned(), service })
    }

    fn values<'a>(&'a self, key: &str) -> impl Iterator<Item = &'a str> {
        self.service.iter().filter(move |(k, _)| k == key).map(|(_, value)| value.as_str())
    }

    fn one(&self, key: &str) -> anyhow::Result<&str> {
        self.values(key).next().with_context(|| format!("{} has no {key}=", self.path.display()))
    }

    /// `line` (an `Exec…=` value) run as systemd would for this unit, as far as that is possible without systemd.
    fn command(&self, line: &str) -> anyhow::Result<Command> {
        // Our units use plain command lines: no prefixes (`-`, `+`, `!`, `@`), quotes or variables.
        ensure!(!line.contains(['"', '\'', '$']) && line.starts_with('/'), "an unexpected command line: {line}");
        let mut command = Command::new("setpriv");
        command
            .arg(format!("--reuid={}", self.one("User")?))
            .arg(format!("--regid={}", self.one("Group")?))
            .args(["--init-groups", "--no-new-privs", "--inh-caps=-all", "--bounding-set=-all", "--"])
            .args(line.split_whitespace())
            .current_dir(self.one("WorkingDirectory")?)
            .env_clear()
            .env("PATH", "/usr/bin:/bin");
        for assignment in self.values("Environment").flat_map(str::split_whitespace) {
            let (name, value) = assignment.split_once('=').context("Environment= holds NAME=value")?;
            command.env(name, value);
        }
        Ok(command)
    }
}

/// Whether this process runs as root (effective UID 0), from `/proc/self/status`.
fn effective_uid() -> anyhow::Result<u32> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    let line = status.lines().find(|line| line.starts_with("Uid:")).context("no Uid: line")?;
    Ok(line.split_whitespace().nth(2).context("Uid: has four fields")?.parse()?)
}

fn output(command: &mut Command) -> anyhow::Result<String> {
    let output = command.output().with_context(|| format!("running {command:?}"))?;
    let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    ensure!(output.status.success(), "{command:?} failed ({}): {text}", output.status);
    Ok(text)
}

fn has_command(name: &str) -> bool {
    Command::new("sh").args(["-c", &format!("command -v {name}")]).output().is_ok_and(|out| out.status.success())
}

/// The installed packages; purged when dropped, so the machine is left as it was even when the test fails.
struct Installed {
    /// Exists while the packages on the machine are this test's, so a run after a killed one may purge them.
    marker: PathBuf,
}

impl Installed {
    fn install(debs: &[PathBuf]) -> anyhow::Result<Self> {
        let marker = std::env::temp_dir().join("lattice-packages-test.installed");
        let mut query = Command::new("dpkg-query");
        query.args(["-W", "-f=${db:Status-Status} ", "lattice-irc", "lattice-xmpp"]);
        // `installed`, or `config-files` after a remove (its store and key are still there), …
        let states = String::from_utf8_lossy(&query.output()?.stdout).into_owned();
        let present = states.split_whitespace().any(|state| state != "not-installed");
        // A machine's own bridge, with its store and key, is not this test's to purge.
        ensure!(
            !present || marker.exists(),
            "lattice-irc or lattice-xmpp is installed on this machine, not by this test: purge it to run the test"
        );
        std::fs::write(&marker, "")?;
        let installed = Self { marker };
        output(Command::new("dpkg").arg("-i").args(debs))?;
        Ok(installed)
    }
}

impl Drop for Installed {
    fn drop(&mut self) {
        // Not installed is fine: dpkg says so and exits 0.
        let purged = Command::new("dpkg").args(["--purge", "lattice-irc", "lattice-xmpp"]).output();
        if purged.is_ok_and(|purged| purged.status.success()) {
            let _ = std::fs::remove_file(&self.marker);
        }
    }
}

/// Builds the packages from the debug build with `scripts/package.sh`, returning their paths.
fn build_packages() -> anyhow::Result<Vec<PathBuf>> {
    build_binary("lattice-bridge-irc", "lattice-irc")?;
    build_binary("lattice-bridge-xmpp", "lattice-xmpp")?;
    let script = workspace_root().join("scripts/package.sh");
    let printed = Command::new(&script).args(["--profile", "dev", "--no-build"]).output()?;
    let stdout = String::from_utf8_lossy(&printed.stdout);
    ensure!(printed.status.success(), "package.sh failed: {stdout}{}", String::from_utf8_lossy(&printed.stderr));
    let debs: Vec<PathBuf> = stdout.lines().filter(|line| line.ends_with(".deb")).map(PathBuf::from).collect();
    ensure!(debs.len() == 2, "package.sh printed {stdout}");
    Ok(debs)
}

/// What the packages put on the machine: binaries, the configs as conffiles readable by the bridge's group only,
/// the users, their state folders.
fn check_installed(name: &str) -> anyhow::Result<()> {
    output(Command::new(format!("/usr/bin/{name}")).arg("--version"))?;
    let conffiles = output(Command::new("dpkg-query").args(["-W", "-f=${Conffiles}", name]))?;
    ensure!(conffiles.contains(&format!("/etc/{name}/config.yaml")), "{name} conffiles: {conffiles}");
    let user = output(Command::new("getent").args(["passwd", name]))?;
    ensure!(user.contains(&format!(":/var/lib/{name}:")), "{name}'s home is its state folder: {user}");
    let config = output(Command::new("stat").args(["-c", "%a %U:%G", &format!("/etc/{name}/config.yaml")]))?;
    ensure!(config.trim() == format!("640 root:{name}"), "/etc/{name}/config.yaml: {config}");
    let state = output(Command::new("stat").args(["-c", "%a %U:%G", &format!("/var/lib/{name}")]))?;
    ensure!(state.trim() == format!("750 {name}:{name}"), "/var/lib/{name}: {state}");
    Ok(())
}

/// `systemd-analyze verify` and `security --offline`, or a clear word that they could not run.
fn analyze(units: &[&Unit]) -> anyhow::Result<()> {
    if !has_command("systemd-analyze") {
        println!("systemd-analyze is missing (scripts/install.sh packaging installs it): the units were NOT verified");
        return Ok(());
    }
    output(Command::new("systemd-analyze").arg("verify").args(units.iter().map(|unit| &unit.path)))?;
    for unit in units {
        let rating = output(
            Command::new("systemd-analyze")
                .args(["security", "--offline=true", &format!("--threshold={MAX_EXPOSURE}")])
                .arg(&unit.path),
        )?;
        let overall = rating.lines().find(|line| line.contains("Overall exposure")).unwrap_or_default();
        println!("{overall}");
    }
    Ok(())
}

/// Points the installed IRC config at `homeserver`, `port`, the IRC server on `irc_port` and, when given, the
/// database at `database`, as an operator edits it.
fn configure_irc(homeserver: &str, port: u16, irc_port: u16, database: Option<&str>) -> anyhow::Result<()> {
    let path = Path::new("/etc/lattice-irc/config.yaml");
    let mut config: Value = serde_yaml::from_str(&std::fs::read_to_string(path)?)?;
    config["homeserver"]["url"] = homeserver.into();
    config["appservice"]["port"] = u64::from(port).into();
    if let Some(url) = database {
        config["database"]["url"] = url.into();
    }
    // The sample's network (Libera.Chat), turned into the test IRC server.
    let networks = config["bridge"]["networks"].as_mapping().context("bridge.networks is a mapping")?;
    let mut network = networks.values().next().context("the sample config has a network")?.clone();
    network["name"] = "Test IRC".into();
    network["servers"] = serde_yaml::from_str(&format!("[{{host: 127.0.0.1, port: {irc_port}, tls: false}}]"))?;
    network["max_nick_length"] = 30.into();
    network["auth"] = "none".into();
    network["privacy"] = "off".into();
    let mut networks = serde_yaml::Mapping::new();
    networks.insert("test".into(), network);
    config["bridge"]["networks"] = Value::Mapping(networks);
    // Written in place: the file keeps its owner and mode.
    std::fs::write(path, serde_yaml::to_string(&config)?)?;
    Ok(())
}

/// The unit's `RuntimeDirectory=` folders under /run, made as systemd makes them (owned by its user, kept across
/// restarts with `RuntimeDirectoryPreserve=`): the IRC edge's socket lives there. When dropped, the edge that the
/// bridge started there is stopped (`KillMode=process` leaves it running, as it should for restarts) and the
/// folders removed.
struct RuntimeDirectories(Vec<PathBuf>);

impl RuntimeDirectories {
    fn make(unit: &Unit) -> anyhow::Result<Self> {
        let mut made = Vec::new();
        for name in unit.values("RuntimeDirectory") {
            let path = Path::new("/run").join(name);
            std::fs::create_dir_all(&path)?;
            output(Command::new("chown").arg(format!("{}:{}", unit.one("User")?, unit.one("Group")?)).arg(&path))?;
            made.push(path);
        }
        Ok(Self(made))
    }
}

impl Drop for RuntimeDirectories {
    fn drop(&mut self) {
        for dir in &self.0 {
            if let Ok(pid) = std::fs::read_to_string(dir.join("edge.pid")) {
                let _ = Command::new("kill").args(["-TERM", pid.trim()]).status();
                // The edge quits its IRC connections, then removes its socket and this file.
                for _ in 0..100 {
                    if !dir.join("edge.pid").exists() {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// The unit's `ExecStartPre=` (check-config), then its `ExecStart=` with its output in `log`, until the homeserver's
/// ping reached the bridge and `/health/ready` on `port` says so.
async fn start_unit(unit: &Unit, port: u16, log: &Path) -> anyhow::Result<ServerProcess> {
    let checked = output(&mut unit.command(unit.one("ExecStartPre")?)?)?;
    ensure!(checked.contains("consistent"), "ExecStartPre= (check-config): {checked}");
    let mut bridge = ServerProcess::spawn("lattice-irc", &mut unit.command(unit.one("ExecStart")?)?, log)?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while !std::fs::read_to_string(log).unwrap_or_default().contains("appservice ping succeeded") {
        ensure!(bridge.exit_status().is_none(), "the unit's ExecStart exited: {}", bridge.log_tail(40));
        ensure!(tokio::time::Instant::now() < deadline, "no successful ping within 60 s: {}", bridge.log_tail(40));
        // Polling another process's log: there is nothing to be notified by.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let ready = reqwest::get(format!("http://127.0.0.1:{port}/health/ready")).await?;
    ensure!(ready.status().is_success(), "/health/ready: {}", ready.status());
    let ready: serde_json::Value = ready.json().await?;
    ensure!(ready["homeserver_reachable"] == true, "/health/ready: {ready}");
    Ok(bridge)
}

/// Runs SQL on the test PostgreSQL server (`LATTICE_TEST_POSTGRES_URL`, which scripts/test.sh sets) with `psql`.
fn psql(sql: &str) -> anyhow::Result<String> {
    let server = std::env::var("LATTICE_TEST_POSTGRES_URL")
        .context("LATTICE_TEST_POSTGRES_URL is not set: run the suite with scripts/test.sh, which starts PostgreSQL")?;
    output(Command::new("psql").args(["-X", "-q", "-v", "ON_ERROR_STOP=1", &server, "-c", sql]))
}

/// A fresh PostgreSQL database on the test server, as a URL.
fn create_database() -> anyhow::Result<(String, String)> {
    let name = format!("lattice_test_{:016x}", rand::random::<u64>());
    psql(&format!("CREATE DATABASE {name}"))?;
    let mut url: url::Url = std::env::var("LATTICE_TEST_POSTGRES_URL")?.parse()?;
    url.set_path(&name);
    Ok((name, url.to_string()))
}

#[tokio::test]
async fn the_debian_packages_install_and_the_irc_units_command_line_bridges_as_its_user() -> anyhow::Result<()> {
    let uid = effective_uid()?;
    if uid != 0 {
        println!("SKIPPED: installing the Debian packages (dpkg -i) needs root; this test runs as UID {uid}");
        return Ok(());
    }
    for tool in ["dpkg", "setpriv", "psql"] {
        ensure!(has_command(tool), "{tool} is missing (Debian's dpkg, util-linux and postgresql-client packages)");
    }
    println!("no systemd runs here: the unit's command lines run under setpriv as its user, not started by systemd");
    let started = std::time::Instant::now();
    let debs = build_packages()?;
    println!("packages built in {:.1?}", started.elapsed());
    let lock = std::fs::File::create(std::env::temp_dir().join("lattice-packages-test.lock"))?;
    lock.lock().context("waiting for another run of this test")?;
    let _installed = Installed::install(&debs)?;
    check_installed("lattice-irc")?;
    check_installed("lattice-xmpp")?;
    let irc = Unit::load(Path::new("/usr/lib/systemd/system/lattice-irc.service"))?;
    let xmpp = Unit::load(Path::new("/usr/lib/systemd/system/lattice-xmpp.service"))?;
    analyze(&[&irc, &xmpp])?;
    ensure!(irc.one("CapabilityBoundingSet")?.is_empty(), "the IRC unit grants no capability");
    // The XMPP unit's check before the start, as its user, on the config as installed.
    let checked = output(&mut xmpp.command(xmpp.one("ExecStartPre")?)?)?;
    ensure!(checked.contains("OK"), "lattice-xmpp check-config: {checked}");
    println!("packages installed and checked after {:.1?}", started.elapsed());
    irc_unit_bridges_and_moves_to_postgresql(&irc).await?;
    println!("done after {:.1?}", started.elapsed());
    Ok(())
}

/// The IRC unit's command lines against a test Synapse: a Matrix message reaches IRC; then, as docs/operating.md
/// has the operator do it, the stopped bridge's store moves to PostgreSQL (`copy-database` as the unit's user), and
/// the bridge started on it still knows the portal.
async fn irc_unit_bridges_and_moves_to_postgresql(irc: &Unit) -> anyhow::Result<()> {
    let _runtime = RuntimeDirectories::make(irc)?;
    // The registration made as the bridge's user, into its state folder.
    let ircd = Ircd::ngircd().await?;
    let port = free_port();
    configure_irc("http://127.0.0.1:9", port, ircd.port(), None)?;
    output(&mut irc.command("/usr/bin/lattice-irc generate-registration -c /etc/lattice-irc/config.yaml")?)?;
    let synapse = Synapse::start(&[PathBuf::from("/var/lib/lattice-irc/registration.yaml")]).await?;
    configure_irc(synapse.url(), port, ircd.port(), None)?;
    let log_dir = tempfile::tempdir()?;
    let mut bridge = start_unit(irc, port, &log_dir.path().join("lattice-irc.log")).await?;

    let talker = IrcTestClient::connect(ircd.port(), "talker").await?;
    talker.join(CHANNEL).await?;
    let alice = synapse.register_user("alice", false).await?;
    let room_id = alice.join(&format!("#irc_test_{CHANNEL}:localhost")).await?;
    alice.send_text(&room_id, "hello from a packaged bridge").await?;
    talker
        .wait_for(Duration::from_secs(60), |line| line.ends_with(" :hello from a packaged bridge"))
        .await
        .with_context(|| format!("the message did not reach IRC: {}", bridge.log_tail(40)))?;
    // The store and key file were made by the unit's user in its state folder.
    for file in ["lattice-irc.db", "lattice-irc.key"] {
        let owner = output(Command::new("stat").args(["-c", "%U", &format!("/var/lib/lattice-irc/{file}")]))?;
        ensure!(owner.trim() == "lattice-irc", "/var/lib/lattice-irc/{file} belongs to {owner}");
    }
    bridge.stop(Duration::from_secs(10));

    let (database, url) = create_database()?;
    let copy = "/usr/bin/lattice-irc copy-database -c /etc/lattice-irc/config.yaml";
    let copied = output(irc.command(copy)?.env("LATTICE_COPY_DATABASE_TO", &url))?;
    println!("{}", copied.lines().last().unwrap_or_default());
    ensure!(copied.contains("portals: 1 rows"), "copy-database: {copied}");
    configure_irc(synapse.url(), port, ircd.port(), Some(&url))?;
    let mut bridge = start_unit(irc, port, &log_dir.path().join("lattice-irc-postgresql.log")).await?;
    alice.send_text(&room_id, "hello from PostgreSQL").await?;
    talker
        .wait_for(Duration::from_secs(60), |line| line.ends_with(" :hello from PostgreSQL"))
        .await
        .with_context(|| format!("the portal did not survive the move: {}", bridge.log_tail(40)))?;
    bridge.stop(Duration::from_secs(10));
    psql(&format!("DROP DATABASE {database} WITH (FORCE)"))?;
    Ok(())
}
