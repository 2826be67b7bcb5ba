//! A server process a test started, with its output in a log file, stopped when dropped.

use std::{
    fs::File,
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    time::{Duration, Instant},
};

use anyhow::Context as _;

/// A child process whose stdout and stderr go to a log file. Dropping it stops it: SIGTERM,
/// then SIGKILL after 5 s.
#[derive(Debug)]
pub struct ServerProcess {
    name: String,
    child: Child,
    log_path: PathBuf,
}

impl ServerProcess {
    /// Spawns `command` with stdin closed and its output appended to `log_path`; `name` is
    /// used in messages.
    pub fn spawn(name: &str, command: &mut Command, log_path: &Path) -> anyhow::Result<Self> {
        let log = File::options()
            .create(true)
            .append(true)
            .open(log_path)
            .with_context(|| format!("opening {name}'s log file {}", log_path.display()))?;
        let child = command
            .stdin(Stdio::null())
            .stdout(log.try_clone().context("duplicating a file handle")?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {name}: {command:?}"))?;
        Ok(Self { name: name.to_owned(), child, log_path: log_path.to_owned() })
    }

    /// The process id.
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// The log file holding the process's output.
    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// The last `lines` lines of the log, for error messages.
    pub fn log_tail(&self, lines: usize) -> String {
        match std::fs::read(&self.log_path) {
            Ok(bytes) => {
                let text = String::from_utf8_lossy(&bytes);
                let all: Vec<&str> = text.lines().collect();
                all[all.len().saturating_sub(lines)..].join("\n")
            }
            Err(e) => format!("(cannot read {}: {e})", self.log_path.display()),
        }
    }

    /// How the process ended, or `None` while it runs.
    pub fn exit_status(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// `kill -9`: ends the process at once with SIGKILL, so none of its shutdown code runs, and waits until it is
    /// gone.
    pub fn kill(&mut self) -> anyhow::Result<()> {
        self.child.kill().with_context(|| format!("sending SIGKILL to {} (pid {})", self.name, self.id()))?;
        self.child.wait().with_context(|| format!("waiting for {} to end", self.name))?;
        Ok(())
    }

    /// Stops the process: SIGTERM, then SIGKILL when it still runs after `grace`.
    pub fn stop(&mut self, grace: Duration) {
        if self.exit_status().is_some() {
            return;
        }
        // No libc: the crate forbids unsafe code, and kill(1) is everywhere.
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let started = Instant::now();
        let deadline = started + grace;
        while Instant::now() < deadline {
            match self.child.try_wait() {
                Ok(Some(_)) => {
                    eprintln!("{} stopped in {:.1?}", self.name, started.elapsed());
                    return;
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(20)),
                Err(_) => break,
            }
        }
        eprintln!("{} (pid {}) ignored SIGTERM for {grace:?}: killing it", self.name, self.id());
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Lines of a server's log quoted in an error.
const LOG_TAIL_LINES: usize = 40;

impl ServerProcess {
    /// Polls the homeserver at `url` (`/_matrix/client/versions`) until it answers, the process exits, or `deadline`
    /// passes; the error quotes the end of the log.
    pub(crate) async fn wait_for_homeserver(
        &mut self,
        http: &reqwest::Client,
        url: &str,
        deadline: Duration,
    ) -> anyhow::Result<()> {
        let started = Instant::now();
        let versions = format!("{url}/_matrix/client/versions");
        loop {
            if let Some(status) = self.exit_status() {
                anyhow::bail!(
                    "{} exited ({status}) before answering; last lines of {}:\n{}",
                    self.name,
                    self.log_path.display(),
                    self.log_tail(LOG_TAIL_LINES)
                );
            }
            let answer = http.get(&versions).timeout(Duration::from_secs(2)).send().await;
            if matches!(&answer, Ok(response) if response.status().is_success()) {
                return Ok(());
            }
            if started.elapsed() > deadline {
                self.stop(Duration::from_secs(5));
                anyhow::bail!(
                    "{} did not answer {versions} within {deadline:?} (last try: {}); last lines of {}:\n{}",
                    self.name,
                    match answer {
                        Ok(response) => response.status().to_string(),
                        Err(e) => e.to_string(),
                    },
                    self.log_path.display(),
                    self.log_tail(LOG_TAIL_LINES)
                );
            }
            // Polling a starting server for readiness, not synchronising test events.
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Prints the end of the log when the thread is panicking: a failing test's output tells what the server said.
    pub(crate) fn show_log_if_panicking(&self) {
        if std::thread::panicking() {
            eprintln!(
                "last lines of {}'s log {}:\n{}",
                self.name,
                self.log_path.display(),
                self.log_tail(LOG_TAIL_LINES)
            );
        }
    }

    /// Whether the process exited because its port was taken between choosing it and binding it.
    pub(crate) fn lost_port_race(&mut self) -> bool {
        self.exit_status().is_some() && self.log_tail(LOG_TAIL_LINES).contains("Address already in use")
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        self.stop(Duration::from_secs(5));
    }
}
