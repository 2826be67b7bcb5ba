//! The schema, as one ordered migration set that runs on SQLite and PostgreSQL alike.
//!
//! The two dialects differ only in how an auto-incrementing key is spelled, so each migration is written once with
//! an `{serial}` placeholder. Applied versions are recorded in `lattice_migrations`; each migration runs in its own
//! transaction, so a failure leaves the database at the previous version.

use sqlx::{AssertSqlSafe, Connection};

use super::{Backend, Error, Result, Store, now_ms};

/// One schema step.
struct Migration {
    version: i64,
    name: &'static str,
    sql: &'static str,
}

/// Every migration, oldest first. Never edit one that has shipped: add a new one.
const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "initial schema",
        sql: r#"
CREATE TABLE processed_transactions (
    txn_id TEXT PRIMARY KEY,
    event_count BIGINT NOT NULL,
    received_at BIGINT NOT NULL
);
CREATE TABLE matrix_queue (
    seq {serial},
    queue_key TEXT NOT NULL,
    payload TEXT NOT NULL,
    attempts BIGINT NOT NULL DEFAULT 0,
    enqueued_at BIGINT NOT NULL
);
CREATE INDEX matrix_queue_by_key ON matrix_queue (queue_key, seq);
CREATE TABLE remote_queue (
    seq {serial},
    queue_key TEXT NOT NULL,
    payload TEXT NOT NULL,
    attempts BIGINT NOT NULL DEFAULT 0,
    enqueued_at BIGINT NOT NULL
);
CREATE INDEX remote_queue_by_key ON remote_queue (queue_key, seq);
CREATE TABLE dead_letters (
    id {serial},
    queue TEXT NOT NULL,
    queue_key TEXT NOT NULL,
    payload TEXT NOT NULL,
    error TEXT NOT NULL,
    failed_at BIGINT NOT NULL
);
CREATE TABLE portals (
    remote_key TEXT PRIMARY KEY,
    room_id TEXT NOT NULL UNIQUE,
    alias TEXT,
    name TEXT,
    topic TEXT,
    metadata TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE TABLE ghosts (
    user_id TEXT PRIMARY KEY,
    remote_id TEXT NOT NULL UNIQUE,
    displayname TEXT,
    avatar_url TEXT,
    metadata TEXT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE TABLE message_map (
    event_id TEXT NOT NULL,
    room_id TEXT NOT NULL,
    portal_key TEXT NOT NULL,
    remote_id TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (event_id, remote_id)
);
CREATE INDEX message_map_by_remote ON message_map (portal_key, remote_id);
CREATE TABLE user_settings (
    user_id TEXT NOT NULL,
    name TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (user_id, name)
);
CREATE TABLE credentials (
    user_id TEXT NOT NULL,
    network TEXT NOT NULL,
    sealed TEXT NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (user_id, network)
);
CREATE TABLE admin_rooms (
    user_id TEXT PRIMARY KEY,
    room_id TEXT NOT NULL
);
"#,
    },
    Migration {
        version: 2,
        name: "published media",
        sql: r#"
CREATE TABLE published_media (
    token TEXT PRIMARY KEY,
    mxc TEXT NOT NULL,
    filename TEXT NOT NULL,
    mimetype TEXT,
    created_at BIGINT NOT NULL
);
"#,
    },
    Migration {
        version: 3,
        name: "reaction sets and remote ID aliases",
        sql: r#"
CREATE TABLE reactions (
    portal_key TEXT NOT NULL,
    target TEXT NOT NULL,
    user_id TEXT NOT NULL,
    reaction_keys TEXT NOT NULL,
    PRIMARY KEY (portal_key, target, user_id)
);
CREATE TABLE remote_aliases (
    portal_key TEXT NOT NULL,
    alias TEXT NOT NULL,
    remote_id TEXT NOT NULL,
    PRIMARY KEY (portal_key, alias)
);
CREATE INDEX remote_aliases_by_remote ON remote_aliases (portal_key, remote_id);
"#,
    },
];

fn render(sql: &str, backend: Backend) -> String {
    let serial = match backend {
        Backend::Sqlite => "INTEGER PRIMARY KEY AUTOINCREMENT",
        Backend::Postgres => "BIGSERIAL PRIMARY KEY",
    };
    sql.replace("{serial}", serial)
}

/// Splits a migration into statements: the `Any` driver runs one statement per prepared query on PostgreSQL.
fn statements(sql: &str) -> impl Iterator<Item = &str> {
    sql.split(';').map(str::trim).filter(|statement| !statement.is_empty())
}

/// Applies every migration newer than the database's version.
pub(super) async fn run(store: &Store) -> Result<()> {
    let mut connection = store.pool().acquire().await?;
    sqlx::query(
        "CREATE TABLE IF NOT EXISTS lattice_migrations (version BIGINT PRIMARY KEY, name TEXT NOT NULL, \
         applied_at BIGINT NOT NULL)",
    )
    .execute(&mut *connection)
    .await?;
    let applied: Option<i64> =
        sqlx::query_scalar("SELECT MAX(version) FROM lattice_migrations").fetch_one(&mut *connection).await?;
    let applied = applied.unwrap_or(0);

    for migration in MIGRATIONS.iter().filter(|migration| migration.version > applied) {
        let failed = |source| Error::Migration { version: migration.version, name: migration.name, source };
        let mut transaction = connection.begin().await.map_err(failed)?;
        for statement in statements(&render(migration.sql, store.backend())) {
            // Migration text is a compile-time constant of this file.
            sqlx::query(AssertSqlSafe(statement.to_owned())).execute(&mut *transaction).await.map_err(failed)?;
        }
        sqlx::query("INSERT INTO lattice_migrations (version, name, applied_at) VALUES ($1, $2, $3)")
            .bind(migration.version)
            .bind(migration.name)
            .bind(now_ms())
            .execute(&mut *transaction)
            .await
            .map_err(failed)?;
        transaction.commit().await.map_err(failed)?;
        tracing::info!(version = migration.version, name = migration.name, "applied database migration");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_increase_strictly() {
        for pair in MIGRATIONS.windows(2) {
            assert!(pair[0].version < pair[1].version, "{} then {}", pair[0].name, pair[1].name);
        }
    }

    #[test]
    fn serial_placeholder_is_rendered_per_dialect() {
        let sqlite = render(MIGRATIONS[0].sql, Backend::Sqlite);
        let postgres = render(MIGRATIONS[0].sql, Backend::Postgres);
        assert!(!sqlite.contains("{serial}") && !postgres.contains("{serial}"));
        assert!(sqlite.contains("INTEGER PRIMARY KEY AUTOINCREMENT"));
        assert!(postgres.contains("BIGSERIAL PRIMARY KEY"));
    }

    #[test]
    fn statements_skip_blank_fragments() {
        let parts: Vec<_> = statements("CREATE TABLE a (x TEXT);\n\n CREATE TABLE b (y TEXT);\n").collect();
        assert_eq!(parts, ["CREATE TABLE a (x TEXT)", "CREATE TABLE b (y TEXT)"]);
    }
}
