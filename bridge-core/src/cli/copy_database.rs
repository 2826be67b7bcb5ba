//! `copy-database --to postgres://…`: moves a stopped bridge's SQLite store to an empty PostgreSQL database.
//!
//! The target gets the schema from the same migration set the bridge runs at start, then every table's rows in one
//! PostgreSQL transaction (all or nothing), read from one SQLite read transaction (a consistent snapshot); the
//! serial keys' sequences continue after the copied rows, and each table's row count is compared at the end. The
//! SQLite file is only read. Stored credentials stay sealed as they are, so the key file is still the one to keep.

use std::{collections::BTreeMap, path::Path};

use anyhow::{Context, bail, ensure};
use futures::TryStreamExt as _;
use sqlx::{AnyConnection, AssertSqlSafe, Connection as _, Row as _, any::AnyRow};

use crate::store::{Backend, Cipher, Store};

/// Values bound per `INSERT` statement (PostgreSQL takes up to 65,535).
const VALUES_PER_STATEMENT: usize = 2_000;

/// Rows copied per table, by table name.
pub type CopyReport = BTreeMap<String, i64>;

/// A column of the target's schema and how its values are read from SQLite.
struct Column {
    name: String,
    integer: bool,
}

/// Copies the SQLite store at `from` into the empty PostgreSQL database at `to`; `key_file` is the store's key
/// (the target store is opened with it, as the bridge will open it).
pub async fn copy_database(from: &str, to: &str, key_file: &Path) -> anyhow::Result<CopyReport> {
    ensure!(
        Backend::from_url(from)? == Backend::Sqlite,
        "database.url is not an SQLite store: copy-database moves an SQLite store to PostgreSQL"
    );
    ensure!(Backend::from_url(to)? == Backend::Postgres, "--to must be a postgres:// or postgresql:// URL");
    let file = sqlite_file(from).context("database.url names no SQLite file")?;
    ensure!(Path::new(file).is_file(), "no SQLite store at {file}: check database.url in the config");
    // The key is not needed to copy sealed values, but a store moved without its key could never open them again.
    ensure!(
        key_file.is_file(),
        "no key file at {} (encryption.key_file): the store's sealed passwords need it; restore it first",
        key_file.display()
    );
    let cipher = Cipher::load_or_create(key_file)
        .with_context(|| format!("reading the key file {} (encryption.key_file)", key_file.display()))?;
    // Opening each store as the bridge does brings both schemas to this release's migrations.
    let source = Store::connect(from, 1, cipher.clone()).await.context("opening the SQLite store")?;
    let target = Store::connect(to, 1, cipher).await.context("connecting to PostgreSQL (--to)")?;
    let mut reader = source.pool().acquire().await?;
    let mut writer = target.pool().acquire().await?;
    let tables = source_tables(&mut reader).await?;
    for table in &tables {
        let rows = count(&mut writer, table).await?;
        ensure!(rows == 0, "the target database already holds {rows} rows in {table}: copy into an empty database");
    }

    let mut snapshot = reader.begin().await?;
    let mut transaction = writer.begin().await?;
    let mut report = CopyReport::new();
    for table in &tables {
        let columns = target_columns(&mut transaction, table).await?;
        let copied = copy_table(&mut snapshot, &mut transaction, table, &columns).await?;
        continue_sequences(&mut transaction, table).await?;
        report.insert(table.clone(), copied);
    }
    transaction.commit().await.context("committing the copy in PostgreSQL")?;
    snapshot.rollback().await?;

    for (table, copied) in &report {
        let (in_sqlite, in_postgres) = (count(&mut reader, table).await?, count(&mut writer, table).await?);
        ensure!(
            in_sqlite == *copied && in_postgres == *copied,
            "{table}: {in_sqlite} rows in SQLite, {copied} copied, {in_postgres} in PostgreSQL"
        );
    }
    Ok(report)
}

/// The file of an `sqlite://path` or `sqlite:path` URL, without its query.
fn sqlite_file(url: &str) -> Option<&str> {
    let rest = url.strip_prefix("sqlite://").or_else(|| url.strip_prefix("sqlite:"))?;
    let file = rest.split('?').next().unwrap_or_default();
    (!file.is_empty() && file != ":memory:").then_some(file)
}

/// The source's tables, but the migration record (the target has written its own).
async fn source_tables(reader: &mut AnyConnection) -> anyhow::Result<Vec<String>> {
    let names: Vec<String> = sqlx::query_scalar(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' \
         AND name <> 'lattice_migrations' ORDER BY name",
    )
    .fetch_all(reader)
    .await?;
    Ok(names)
}

async fn count(connection: &mut AnyConnection, table: &str) -> anyhow::Result<i64> {
    let sql = format!("SELECT COUNT(*) FROM {}", quoted(table));
    Ok(sqlx::query_scalar(AssertSqlSafe(sql)).fetch_one(connection).await?)
}

/// The target table's columns in order, each read from SQLite as the type PostgreSQL declares.
async fn target_columns(writer: &mut AnyConnection, table: &str) -> anyhow::Result<Vec<Column>> {
    let rows = sqlx::query(
        // information_schema's own types (`name`, `sql_identifier`) are not among the Any driver's.
        "SELECT column_name::text, data_type::text FROM information_schema.columns \
         WHERE table_schema = current_schema() AND table_name = $1 ORDER BY ordinal_position",
    )
    .bind(table)
    .fetch_all(writer)
    .await?;
    ensure!(!rows.is_empty(), "{table} is in the SQLite store but not in this release's schema");
    rows.iter()
        .map(|row| {
            let (name, kind): (String, String) = (row.try_get(0)?, row.try_get(1)?);
            let integer = match kind.as_str() {
                "bigint" | "integer" | "smallint" => true,
                "text" => false,
                other => bail!("{table}.{name} has the type {other}, which copy-database does not know"),
            };
            Ok(Column { name, integer })
        })
        .collect()
}

/// Streams `table`'s rows from SQLite into PostgreSQL in multi-row inserts; returns how many were copied.
async fn copy_table(
    reader: &mut AnyConnection,
    writer: &mut AnyConnection,
    table: &str,
    columns: &[Column],
) -> anyhow::Result<i64> {
    let names: Vec<String> = columns.iter().map(|column| quoted(&column.name)).collect();
    let select = format!("SELECT {} FROM {} ORDER BY rowid", names.join(", "), quoted(table));
    let mut rows = sqlx::query(AssertSqlSafe(select)).fetch(reader);
    let per_statement = (VALUES_PER_STATEMENT / columns.len()).max(1);
    let mut batch: Vec<AnyRow> = Vec::with_capacity(per_statement);
    let mut copied = 0;
    while let Some(row) = rows.try_next().await.with_context(|| format!("reading {table} from SQLite"))? {
        batch.push(row);
        if batch.len() == per_statement {
            copied += insert(writer, table, columns, &names, &batch).await?;
            batch.clear();
        }
    }
    if !batch.is_empty() {
        copied += insert(writer, table, columns, &names, &batch).await?;
    }
    Ok(copied)
}

async fn insert(
    writer: &mut AnyConnection,
    table: &str,
    columns: &[Column],
    names: &[String],
    rows: &[AnyRow],
) -> anyhow::Result<i64> {
    let mut parameter = 0;
    let tuples: Vec<String> = rows
        .iter()
        .map(|_| {
            let placeholders: Vec<String> = columns
                .iter()
                .map(|_| {
                    parameter += 1;
                    format!("${parameter}")
                })
                .collect();
            format!("({})", placeholders.join(", "))
        })
        .collect();
    let sql = format!("INSERT INTO {} ({}) VALUES {}", quoted(table), names.join(", "), tuples.join(", "));
    let mut query = sqlx::query(AssertSqlSafe(sql));
    for row in rows {
        for (index, column) in columns.iter().enumerate() {
            let read = |error| anyhow::anyhow!("reading {table}.{} from SQLite: {error}", column.name);
            query = if column.integer {
                query.bind(row.try_get::<Option<i64>, _>(index).map_err(read)?)
            } else {
                query.bind(row.try_get::<Option<String>, _>(index).map_err(read)?)
            };
        }
    }
    let done = query.execute(writer).await.with_context(|| format!("writing {table} to PostgreSQL"))?;
    Ok(i64::try_from(done.rows_affected())?)
}

/// Moves the sequences of `table`'s serial columns past the copied keys, so new rows do not collide with them.
async fn continue_sequences(writer: &mut AnyConnection, table: &str) -> anyhow::Result<()> {
    let serials: Vec<String> = sqlx::query_scalar(
        "SELECT column_name::text FROM information_schema.columns WHERE table_schema = current_schema() \
         AND table_name = $1 AND column_default LIKE 'nextval(%'",
    )
    .bind(table)
    .fetch_all(&mut *writer)
    .await?;
    for column in serials {
        let sql = format!(
            "SELECT setval(pg_get_serial_sequence($1, $2), COALESCE((SELECT MAX({}) FROM {}), 0) + 1, false)",
            quoted(&column),
            quoted(table)
        );
        sqlx::query(AssertSqlSafe(sql)).bind(table).bind(&column).execute(&mut *writer).await?;
    }
    Ok(())
}

/// An SQL identifier in double quotes (names come from the databases' own catalogues).
fn quoted(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlite_files_are_taken_from_both_url_forms() {
        let cases = [
            ("sqlite:///var/lib/lattice-irc/lattice-irc.db", Some("/var/lib/lattice-irc/lattice-irc.db")),
            ("sqlite://relative.db?mode=rwc", Some("relative.db")),
            ("sqlite:relative.db", Some("relative.db")),
            ("sqlite::memory:", None),
            ("postgres://localhost/lattice", None),
        ];
        for (url, file) in cases {
            assert_eq!(sqlite_file(url), file, "{url}");
        }
    }

    #[test]
    fn identifiers_are_quoted() {
        assert_eq!(quoted("portals"), "\"portals\"");
        assert_eq!(quoted("a\"b"), "\"a\"\"b\"");
    }
}
