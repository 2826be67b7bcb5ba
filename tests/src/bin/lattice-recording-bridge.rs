//! `lattice-recording-bridge`: a bridge with no network behind it, for the durability test. Its connector appends the
//! `body` of each Matrix event it handles to a record file (fsynced before the event counts as handled), and with
//! `--block-after N` it stalls after N events, as a connector whose network went away would: every later event fails
//! transiently, forever.
//!
//! ```text
//! lattice-recording-bridge --registration FILE --database sqlite://… --listen 127.0.0.1:PORT --record FILE
//!                          [--block-after N] [--key-file FILE]
//! ```
//!
//! It prints `recorded N: BODY` for each event recorded, `blocked: BODY` the first time it refuses one and
//! `refused again: BODY` the second time (a retry, which the runtime makes only after the failure was counted).

use std::{
    fs::File,
    io::Write as _,
    net::SocketAddr,
    path::PathBuf,
    sync::{
        Mutex,
        atomic::{AtomicUsize, Ordering},
    },
};

use anyhow::{Context as _, bail};
use lattice_bridge_core::{
    Bridge, BridgeHandle, Connector, ConnectorError, RuntimeSettings,
    connector::{ConnectorInfo, ConnectorResult, InPortal, Sent},
    event::{MatrixEvent, Message, Relation},
    store::Store,
};
use lattice_config::{Permissions, PermissionsConfig};
use lattice_registration::AppserviceRegistration;

const USAGE: &str = "usage: lattice-recording-bridge --registration FILE --database URL --listen ADDR --record FILE \
                     [--block-after N] [--key-file FILE]";

struct Args {
    registration: PathBuf,
    database: String,
    listen: SocketAddr,
    record: PathBuf,
    block_after: Option<usize>,
    key_file: Option<PathBuf>,
}

impl Args {
    fn parse() -> anyhow::Result<Self> {
        let (mut registration, mut database, mut listen, mut record, mut block_after, mut key_file) =
            (None, None, None, None, None, None);
        let mut args = std::env::args().skip(1);
        while let Some(flag) = args.next() {
            let value = args.next().with_context(|| format!("{flag} needs a value\n{USAGE}"))?;
            match flag.as_str() {
                "--registration" => registration = Some(PathBuf::from(value)),
                "--database" => database = Some(value),
                "--listen" => listen = Some(value.parse().with_context(|| format!("--listen {value}: not ip:port"))?),
                "--record" => record = Some(PathBuf::from(value)),
                "--block-after" => {
                    block_after = Some(value.parse().with_context(|| format!("--block-after {value}: not a count"))?)
                }
                "--key-file" => key_file = Some(PathBuf::from(value)),
                other => bail!("unknown argument {other}\n{USAGE}"),
            }
        }
        Ok(Self {
            registration: registration.with_context(|| format!("--registration is required\n{USAGE}"))?,
            database: database.with_context(|| format!("--database is required\n{USAGE}"))?,
            listen: listen.with_context(|| format!("--listen is required\n{USAGE}"))?,
            record: record.with_context(|| format!("--record is required\n{USAGE}"))?,
            block_after,
            key_file,
        })
    }
}

/// Writes what it handles to the record file; stalls after `block_after` events.
struct RecordingConnector {
    record: Mutex<File>,
    handled: AtomicUsize,
    block_after: Option<usize>,
    refusals: AtomicUsize,
}

impl Connector for RecordingConnector {
    fn info(&self) -> ConnectorInfo {
        ConnectorInfo { protocol_id: "recording", protocol_name: "Recording", command_prefix: "!recording" }
    }

    async fn start(&self, _bridge: BridgeHandle) -> ConnectorResult<()> {
        Ok(())
    }

    async fn matrix_message(&self, at: InPortal<'_>, _message: &Message) -> ConnectorResult<Sent> {
        self.record(at.event).map(|()| Sent::Nothing)
    }

    async fn matrix_edit(&self, at: InPortal<'_>, _target: &Relation, _new: &Message) -> ConnectorResult<Sent> {
        self.record(at.event).map(|()| Sent::Nothing)
    }

    /// Rooms without a portal (the crash tests send to rooms the bridge never made portals of).
    async fn matrix_elsewhere(&self, event: &MatrixEvent) -> ConnectorResult<()> {
        self.record(event)
    }
}

impl RecordingConnector {
    /// Appends the event's body to the record file (synced), or refuses it once `block_after` were recorded.
    fn record(&self, event: &MatrixEvent) -> ConnectorResult<()> {
        let Some(body) = event.raw.pointer("/content/body").and_then(|body| body.as_str()) else { return Ok(()) };
        if self.block_after.is_some_and(|limit| self.handled.load(Ordering::SeqCst) >= limit) {
            match self.refusals.fetch_add(1, Ordering::SeqCst) {
                0 => println!("blocked: {body}"),
                1 => println!("refused again: {body}"),
                _ => {}
            }
            return Err(ConnectorError::transient("blocked"));
        }
        let mut record = self.record.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        writeln!(record, "{body}")
            .and_then(|()| record.sync_all())
            .map_err(|error| ConnectorError::transient(format!("cannot write the record file: {error}")))?;
        let count = self.handled.fetch_add(1, Ordering::SeqCst) + 1;
        println!("recorded {count}: {body}");
        Ok(())
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse()?;
    let registration = AppserviceRegistration::load(&args.registration)
        .with_context(|| format!("loading the registration {}", args.registration.display()))?;
    let key_file = args.key_file.clone().unwrap_or_else(|| args.record.with_extension("key"));
    let store = Store::open(&args.database, 4, &key_file)
        .await
        .with_context(|| format!("opening the store {}", args.database))?;
    let record = File::options()
        .create(true)
        .append(true)
        .open(&args.record)
        .with_context(|| format!("opening the record file {}", args.record.display()))?;
    let connector = RecordingConnector {
        record: Mutex::new(record),
        handled: AtomicUsize::new(0),
        block_after: args.block_after,
        refusals: AtomicUsize::new(0),
    };
    let settings = RuntimeSettings {
        // Nothing listens there: this bridge only receives.
        homeserver_url: "http://127.0.0.1:9".parse()?,
        server_name: "localhost".into(),
        permissions: Permissions::new(&PermissionsConfig::default())?,
        metrics_enabled: false,
        media_base_url: "http://127.0.0.1:9".parse().unwrap(),
        bot_displayname: None,
        listener: Default::default(),
    };
    let bridge = Bridge::from_parts(settings, registration, store, connector)?;
    println!("listening on {}", args.listen);
    bridge.run(args.listen).await.context("serving the appservice API")?;
    Ok(())
}
