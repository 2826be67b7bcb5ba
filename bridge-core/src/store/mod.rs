//! The bridge's durable state, through sqlx: SQLite by default (WAL), PostgreSQL by URL.
//!
//! The store is the truth; in-memory maps elsewhere are caches. One migration set runs at start on either backend
//! (see [`migrations`]). Queries use `$n` placeholders, which both backends accept through sqlx's `Any` driver.

mod cache;
mod crypto;
mod ghosts;
mod group;
mod media;
mod messages;
mod migrations;
mod portals;
mod queue;
mod reactions;
mod seen_transactions;
mod users;

use std::{
    path::Path,
    sync::{Arc, Once},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use sqlx::{
    AnyPool, AssertSqlSafe, Executor,
    any::{AnyConnectOptions, AnyPoolOptions},
};

pub use self::{
    crypto::{Cipher, CryptoError},
    ghosts::Ghost,
    media::PublishedMedia,
    messages::MessageMapping,
    portals::Portal,
    queue::{Queue, QueueKind, QueuedItem, TransactionOutcome},
};

/// Errors from the store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The database URL names no backend Lattice supports.
    #[error("unsupported database URL `{0}`: expected sqlite://… or postgres://…")]
    UnsupportedUrl(String),
    /// The database refused or failed a query.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// A schema migration failed; the database is left at the previous version.
    #[error("database migration {version} ({name}) failed: {source}")]
    Migration {
        /// The migration's version number.
        version: i64,
        /// The migration's name.
        name: &'static str,
        /// What the database said.
        source: sqlx::Error,
    },
    /// Encrypting or decrypting a stored secret failed.
    #[error(transparent)]
    Crypto(#[from] CryptoError),
    /// A stored JSON value could not be read back.
    #[error("stored JSON is unreadable: {0}")]
    Json(#[from] serde_json::Error),
    /// A group commit this write was part of failed (the error was another writer's to report in full).
    #[error("a grouped write failed: {message}")]
    GroupCommit {
        /// What the database said.
        message: String,
        /// Whether retrying may succeed.
        transient: bool,
    },
}

impl Error {
    /// Whether retrying the same operation later may succeed (pool timeouts, lost connections, a busy SQLite file).
    pub fn is_transient(&self) -> bool {
        match self {
            Self::GroupCommit { transient, .. } => *transient,
            Self::Database(error) => match error {
                sqlx::Error::PoolTimedOut | sqlx::Error::Io(_) | sqlx::Error::PoolClosed => true,
                sqlx::Error::Database(db) => {
                    let code = db.code().unwrap_or_default();
                    // SQLite BUSY/LOCKED; PostgreSQL serialization failure, deadlock, connection exceptions.
                    matches!(&*code, "5" | "6" | "40001" | "40P01") || code.starts_with("08")
                }
                _ => false,
            },
            _ => false,
        }
    }
}

/// The store's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Which SQL dialect the connected database speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// SQLite, the embedded default.
    Sqlite,
    /// PostgreSQL, for larger deployments.
    Postgres,
}

impl Backend {
    /// The backend a database URL names.
    pub fn from_url(url: &str) -> Result<Self> {
        if url.starts_with("sqlite:") {
            Ok(Self::Sqlite)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(Self::Postgres)
        } else {
            Err(Error::UnsupportedUrl(redact_url(url)))
        }
    }

    /// The `n`th (from 1) bind parameter of a statement built at run time: PostgreSQL's `$n`; on SQLite a plain
    /// `?`, because binding to numbered parameters looks each one up by name in a list, which makes a multi-row
    /// statement's binds cost the square of its parameters.
    pub(crate) fn parameter(self, n: usize) -> String {
        match self {
            Self::Sqlite => "?".to_owned(),
            Self::Postgres => format!("${n}"),
        }
    }
}

/// Strips a password from a URL before it reaches a log or an error message.
fn redact_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) if parsed.password().is_some() => {
            let _ = parsed.set_password(Some("***"));
            parsed.to_string()
        }
        _ => url.to_owned(),
    }
}

/// The bridge's database: a connection pool plus the cipher for secrets at rest.
#[derive(Clone, Debug)]
pub struct Store {
    pool: AnyPool,
    /// Where group commits are made, flushed to disk: on SQLite a connection of its own with `synchronous = FULL`
    /// (the pool's run `NORMAL`), so no commit switches modes back and forth and its page cache stays warm; on
    /// PostgreSQL, where every commit is durable, the main pool.
    durable_pool: AnyPool,
    backend: Backend,
    cipher: Cipher,
    /// Serialises this process's writes on SQLite, which allows one writer at a time: waiting in order here is
    /// cheap, whereas colliding writers fall into SQLite's busy handler, which sleeps for milliseconds.
    sqlite_writer: Arc<tokio::sync::Mutex<()>>,
    /// Per queue, the last sequence number given out: items are numbered in memory, before they are written (see
    /// [`group`]).
    last_seqs: Arc<[std::sync::atomic::AtomicI64; 2]>,
    /// Held while a homeserver transaction is persisted, with the transaction IDs recorded lately (see
    /// [`Store::persist_transaction`]).
    intake: Arc<tokio::sync::Mutex<seen_transactions::SeenTransactions>>,
    /// Small writes committed together (see [`group`]).
    group: Arc<group::GroupCommit>,
    /// Rows read on every event's way through.
    caches: Arc<Caches>,
}

/// The store's read caches (see [`cache`]).
#[derive(Debug, Default)]
struct Caches {
    portals_by_key: cache::ReadCache<Portal>,
    portals_by_room: cache::ReadCache<Portal>,
    ghosts_by_user: cache::ReadCache<Ghost>,
}

impl Store {
    /// Connects to `url`, creating an SQLite file when missing, and brings the schema up to date.
    ///
    /// SQLite runs in WAL mode with its default page cache: a bigger cache and a memory-mapped file were tried for
    /// throughput (within noise in P2; 64 MiB on the commit connection gained 8% over 100,000 messages, a gain that
    /// shrinks as the message map outgrows any cache) and cost resident memory that grows with the database; so
    /// were 1 KiB pages (fewer bytes per page a commit writes, more pages: slower). Temporary files stay in memory: a
    /// multi-row statement keeps a journal of its own to undo it alone, and on disk each one was a file created,
    /// written and unlinked inside the commit. Group commits — writes that take in what cannot be fetched again (a
    /// homeserver transaction about to be acknowledged, an event pushed by a connector) and the bookkeeping handed
    /// over to them — commit with `synchronous = FULL` and survive a crash of the process or the machine; other
    /// writes commit with `NORMAL`, which survives a process crash.
    pub async fn connect(url: &str, max_connections: u32, cipher: Cipher) -> Result<Self> {
        static DRIVERS: Once = Once::new();
        DRIVERS.call_once(sqlx::any::install_default_drivers);

        let backend = Backend::from_url(url)?;
        let url = match backend {
            Backend::Sqlite if !url.contains("mode=") && !url.contains(":memory:") => {
                let separator = if url.contains('?') { '&' } else { '?' };
                format!("{url}{separator}mode=rwc")
            }
            _ => url.to_owned(),
        };
        let options: AnyConnectOptions = url.parse()?;
        let pool_options =
            AnyPoolOptions::new().max_connections(max_connections.max(1)).acquire_timeout(Duration::from_secs(30));
        let (pool, durable_pool) = match backend {
            Backend::Sqlite => {
                // A connection to a local file does not drop: no ping before each use.
                let sqlite = |options: AnyPoolOptions, synchronous: &'static str| {
                    options.test_before_acquire(false).after_connect(move |connection, _| {
                        Box::pin(async move {
                            connection
                                .execute(AssertSqlSafe(format!(
                                    "PRAGMA journal_mode = WAL; PRAGMA synchronous = {synchronous}; \
                                     PRAGMA wal_autocheckpoint = 0; PRAGMA busy_timeout = 10000; \
                                     PRAGMA foreign_keys = ON; PRAGMA temp_store = MEMORY; \
                                     PRAGMA journal_size_limit = {WAL_SIZE_LIMIT};"
                                )))
                                .await?;
                            Ok(())
                        })
                    })
                };
                let pool = sqlite(pool_options, "NORMAL").connect_with(options.clone()).await?;
                if url.contains(":memory:") {
                    // Nothing reaches a disk, and a second connection would open a database of its own.
                    (pool.clone(), pool)
                } else {
                    // Durable commits take the write turn, so one connection serves them all.
                    let durable = sqlite(AnyPoolOptions::new().max_connections(1), "FULL");
                    (pool, durable.connect_with(options).await?)
                }
            }
            Backend::Postgres => {
                let pool = pool_options.connect_with(options).await?;
                (pool.clone(), pool)
            }
        };
        let store = Self {
            pool,
            durable_pool,
            backend,
            cipher,
            sqlite_writer: Arc::default(),
            last_seqs: Arc::default(),
            intake: Arc::default(),
            group: Arc::default(),
            caches: Arc::default(),
        };
        migrations::run(&store).await?;
        store.load_last_seqs().await?;
        store.load_seen_transactions().await?;
        tokio::spawn(store.clone().flush_deferred());
        if backend == Backend::Sqlite {
            tokio::spawn(checkpoint_wal(store.clone()));
        }
        Ok(store)
    }

    /// Connects as [`Store::connect`] does, with the cipher key read from (or first written to) `key_file`.
    pub async fn open(url: &str, max_connections: u32, key_file: &Path) -> Result<Self> {
        let cipher = Cipher::load_or_create(key_file)?;
        Self::connect(url, max_connections, cipher).await
    }

    /// The connection pool, for queries of the store's own modules.
    pub(crate) fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// Holds this process's SQLite write turn (see `sqlite_writer`); a no-op on PostgreSQL, which takes
    /// concurrent writers.
    pub(crate) async fn write_turn(&self) -> Option<tokio::sync::MutexGuard<'_, ()>> {
        match self.backend {
            Backend::Sqlite => Some(self.sqlite_writer.lock().await),
            Backend::Postgres => None,
        }
    }

    /// A connection whose commits are flushed to disk before they return (see `durable_pool`).
    pub(crate) async fn durable_connection(&self) -> Result<sqlx::pool::PoolConnection<sqlx::Any>> {
        Ok(self.durable_pool.acquire().await?)
    }

    /// The SQL dialect in use.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Checks that the database answers; used by the readiness probe.
    pub async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    /// Commits what was handed over to the group commit, then closes every connection; pending queries finish
    /// first.
    pub async fn close(&self) {
        if let Err(error) = self.settle().await {
            tracing::warn!(%error, "closing the store with writes it could not commit");
        }
        self.pool.close().await;
        self.durable_pool.close().await;
        self.group.wake_flusher();
    }
}

/// The size, in bytes, an SQLite write-ahead log is cut back to when it starts over after it grew past it (a burst
/// of writes while a checkpoint waited on a reader): big enough to be reused as it is in steady work.
const WAL_SIZE_LIMIT: u64 = 64 << 20;

/// How often the SQLite write-ahead log is folded back into the database file.
const CHECKPOINT_INTERVAL: Duration = Duration::from_millis(500);

/// Checkpoints the SQLite WAL in the background until the pool closes.
///
/// SQLite's automatic checkpoint runs inside whichever commit crosses the threshold, adding its fsyncs of the
/// database file to that commit — the worst latencies of acknowledging a transaction. Connections turn it off, and
/// this task does the work between commits instead. It holds the write turn while it does: a `PASSIVE` checkpoint
/// never blocks readers or writers, but one that runs beside a writer never copies the last frames, and the log
/// starts over from its beginning only after a checkpoint that copied them all. Under a steady stream of commits the
/// log then grew without end (1 GB in P2's 100,000 messages), each commit extending the file into fresh pages the
/// kernel zeroes first; folded back while nothing writes, it starts over every interval and its pages are reused.
async fn checkpoint_wal(store: Store) {
    let mut interval = tokio::time::interval(CHECKPOINT_INTERVAL);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        if store.pool.is_closed() {
            return;
        }
        let checkpointed = {
            let _turn = store.write_turn().await;
            sqlx::query("PRAGMA wal_checkpoint(PASSIVE)").execute(&store.pool).await
        };
        if let Err(error) = checkpointed {
            if store.pool.is_closed() {
                return;
            }
            tracing::warn!(%error, "SQLite WAL checkpoint failed; retrying");
        }
    }
}

/// Milliseconds since the Unix epoch, the store's timestamp unit.
pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| i64::try_from(elapsed.as_millis()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backend_is_chosen_by_url_scheme() {
        let cases = [
            ("sqlite://lattice.db", Some(Backend::Sqlite)),
            ("sqlite::memory:", Some(Backend::Sqlite)),
            ("postgres://u@localhost/db", Some(Backend::Postgres)),
            ("postgresql://u@localhost/db", Some(Backend::Postgres)),
            ("mysql://u@localhost/db", None),
        ];
        for (url, expected) in cases {
            assert_eq!(Backend::from_url(url).ok(), expected, "{url}");
        }
    }

    #[test]
    fn unsupported_url_error_hides_the_password() {
        let error = Backend::from_url("mysql://user:secret@db/x").unwrap_err();
        let message = error.to_string();
        assert!(!message.contains("secret"), "{message}");
        assert!(message.contains("***"), "{message}");
    }
}
