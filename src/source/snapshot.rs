//! The initial snapshot: existing rows, consistent with the binlog position
//! streaming starts from (see the [module docs](super) for the reasoning).

use std::sync::Arc;
use std::sync::atomic::Ordering;

use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Pool, Row};
use tokio::sync::watch;
use tracing::info;

use super::decode::{Origin, convert};
use super::{ServerInfo, SourceSettings};
use crate::buffer::{AppendBatch, Journal};
use crate::error::{Error, ErrorKind, Result};
use crate::event::{ChangeEvent, Commit, Op, Record, SchemaChange, TableChange};
use crate::pipeline::Stats;
use crate::position::{Position, SourceCheckpoint};
use crate::schema::{Charset, ColumnSchema, ColumnType, TableRef, TableSchema};

/// Copy every selected table not yet in `checkpoint`. Returns `false` when interrupted by shutdown.
pub(super) async fn run<B: Journal>(
    pool: &Pool,
    server: &ServerInfo,
    buffer: &B,
    settings: &SourceSettings,
    checkpoint: &mut SourceCheckpoint,
    stats: &Stats,
    shutdown: &watch::Receiver<bool>,
) -> Result<bool> {
    let mut conn = pool.get_conn().await.map_err(|e| Error::source_mysql(e, "snapshot connection"))?;
    let tables: Vec<TableRef> = list_tables(&mut conn, &settings.filter).await?;
    let remaining: Vec<TableRef> =
        tables.into_iter().filter(|t| !checkpoint.snapshot.tables.contains_key(&t.key())).collect();
    if remaining.is_empty() {
        let (file, pos) = super::preflight::current_binlog_position(&mut conn).await?;
        checkpoint.resume.get_or_insert(Position::new(file, pos));
        checkpoint.snapshot.complete = true;
        buffer.append(completion(checkpoint)).await?;
        return Ok(true);
    }
    let at = begin_consistent_snapshot(&mut conn, server).await?;
    if checkpoint.resume.is_none() {
        checkpoint.resume = Some(at.clone());
    }
    info!(tables = remaining.len(), position = %at, "snapshot started");
    for table in &remaining {
        let (schema, _) = settings.shape(load_schema(&mut conn, table, server.mariadb).await?)?;
        let schema = Arc::new(schema);
        let version = schema.version();
        let columns = schema.columns.iter().map(|c| quote(&c.name)).collect::<Vec<_>>().join(", ");
        let sql = format!("SELECT {columns} FROM {}.{}", quote(&table.db), quote(&table.name));
        let mut result =
            conn.exec_iter(sql, ()).await.map_err(|e| Error::source_mysql(e, format!("snapshot of {table}")))?;
        let mut chunk: Vec<Record> = Vec::with_capacity(settings.chunk_rows + 3);
        // First, clear what an interrupted earlier copy of this table may have written: those
        // rows are from an older snapshot, and deletes between it and this one are skipped for
        // this table (its binlog events count only from this snapshot on). A TRUNCATE at the
        // snapshot position removes exactly the rows older than this copy and nothing newer.
        chunk.push(Record::Ddl(SchemaChange {
            table: table.clone(),
            change: TableChange::Truncate,
            position: at.clone(),
            timestamp: now_secs(),
        }));
        chunk.push(Record::Commit(Commit {
            position: at.clone(),
            gtid: None,
            timestamp: now_secs(),
            snapshot: true,
            consistent: Some(false),
        }));
        let mut copied = 0u64;
        // Row 0 is the TRUNCATE's position; copied rows sort after it.
        let mut next_row: u32 = 1;
        let mut schemas = vec![Arc::clone(&schema)];
        loop {
            let row: Option<Row> =
                result.next().await.map_err(|e| Error::source_mysql(e, format!("snapshot of {table}")))?;
            let done = row.is_none();
            if let Some(row) = row {
                let raw = row.unwrap();
                let values = raw
                    .into_iter()
                    .zip(&schema.columns)
                    .map(|(v, c)| convert(v, c, Origin::Snapshot))
                    .collect::<Result<Vec<_>>>()
                    .map_err(|e| e.context(format!("snapshot of {table}")))?;
                // Every copied row gets its own position under the snapshot's offset: identical
                // rows of a keyless table must stay distinct events, and all of them still sort
                // before the first binlog event after the snapshot (a larger offset).
                let position = Position { row: next_row, ..at.clone() };
                next_row = next_row.saturating_add(1);
                chunk.push(Record::Change(ChangeEvent {
                    table: table.clone(),
                    schema_version: version,
                    op: Op::Snapshot,
                    before: None,
                    after: Some(values),
                    position,
                    timestamp: now_secs(),
                    gtid: None,
                    index: None,
                }));
            }
            if chunk.len() >= settings.chunk_rows || done {
                let rows = chunk.iter().filter(|r| matches!(r, Record::Change(_))).count() as u64;
                if rows > 0 {
                    chunk.push(Record::Commit(Commit {
                        position: at.clone(),
                        gtid: None,
                        timestamp: now_secs(),
                        snapshot: true,
                        consistent: Some(false),
                    }));
                }
                if done {
                    checkpoint.snapshot.tables.insert(table.key(), at.clone());
                }
                buffer
                    .append(AppendBatch {
                        records: std::mem::take(&mut chunk),
                        schemas: std::mem::take(&mut schemas),
                        checkpoint: checkpoint.clone(),
                    })
                    .await?;
                copied += rows;
                stats.snapshot_rows.fetch_add(rows, Ordering::Relaxed);
                if done {
                    break;
                }
                if *shutdown.borrow() {
                    info!(%table, copied, "snapshot interrupted; finished tables will not be copied again");
                    return Ok(false);
                }
            }
        }
        info!(%table, rows = copied, "table copied");
    }
    conn.query_drop("COMMIT").await.map_err(|e| Error::source_mysql(e, "ending the snapshot transaction"))?;
    checkpoint.snapshot.complete = true;
    buffer.append(completion(checkpoint)).await?;
    info!(position = %at, "snapshot complete");
    Ok(true)
}

/// The last append of a snapshot: the checkpoint that marks it complete and, when every table
/// was copied at the position streaming starts from, a commit without changes saying the
/// target is consistent from there. (After an interrupted snapshot the tables were copied at
/// different positions; the stream says it once it reaches the newest copy.)
fn completion(checkpoint: &SourceCheckpoint) -> AppendBatch {
    let mut batch = AppendBatch::checkpoint_only(checkpoint.clone());
    if let Some(resume) = &checkpoint.resume
        && checkpoint.snapshot.newest_copy_after(resume).is_none()
    {
        batch.records.push(Record::Commit(Commit {
            position: resume.clone(),
            gtid: None,
            timestamp: now_secs(),
            snapshot: true,
            consistent: Some(true),
        }));
    }
    batch
}

/// Start a consistent-read transaction and return the binlog position it corresponds to.
async fn begin_consistent_snapshot(conn: &mut Conn, server: &ServerInfo) -> Result<Position> {
    let err = |e| Error::source_mysql(e, "starting the snapshot transaction");
    conn.query_drop("SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ").await.map_err(err)?;
    if server.mariadb {
        // MariaDB makes the snapshot and the binlog position agree without locks.
        conn.query_drop("START TRANSACTION WITH CONSISTENT SNAPSHOT").await.map_err(err)?;
        let rows: Vec<(String, String)> = conn.query("SHOW STATUS LIKE 'binlog_snapshot_%'").await.map_err(err)?;
        let get = |name: &str| rows.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.clone());
        let file = get("binlog_snapshot_file").filter(|f| !f.is_empty());
        let pos = get("binlog_snapshot_position").and_then(|p| p.parse::<u64>().ok());
        match (file, pos) {
            (Some(f), Some(p)) => Ok(Position::new(f, p)),
            _ => Err(Error::new(
                ErrorKind::SourceSetting,
                "binlog_snapshot_file: expected a binlog file, found none (is log_bin enabled?)",
            )),
        }
    } else {
        // MySQL has no lock-free equivalent: hold a global read lock only while the
        // transaction starts and the position is read (milliseconds). Needs RELOAD.
        conn.query_drop("FLUSH TABLES WITH READ LOCK").await.map_err(|e| {
            Error::source_mysql(e, "locking tables for the snapshot position")
                .with_hint("grant RELOAD to the replication user, or use snapshot.mode = \"never\"")
        })?;
        let started = async {
            conn.query_drop("START TRANSACTION WITH CONSISTENT SNAPSHOT").await.map_err(err)?;
            super::preflight::current_binlog_position(conn).await
        }
        .await;
        conn.query_drop("UNLOCK TABLES").await.map_err(err)?;
        let (f, p) = started?;
        Ok(Position::new(f, p))
    }
}

async fn list_tables(conn: &mut Conn, filter: &super::TableFilter) -> Result<Vec<TableRef>> {
    let rows: Vec<(String, String)> = conn
        .query("SELECT TABLE_SCHEMA, TABLE_NAME FROM information_schema.TABLES WHERE TABLE_TYPE = 'BASE TABLE' ORDER BY 1, 2")
        .await
        .map_err(|e| Error::source_mysql(e, "listing tables"))?;
    Ok(rows.into_iter().map(|(d, t)| TableRef::new(d, t)).filter(|t| filter.matches(t)).collect())
}

/// A table's schema from `information_schema`.
pub(crate) async fn load_schema(conn: &mut Conn, table: &TableRef, mariadb: bool) -> Result<TableSchema> {
    type ColRow = (String, String, String, Option<u64>, Option<String>, Option<String>, String);
    let cols: Vec<ColRow> = conn
        .exec(
            "SELECT COLUMN_NAME, DATA_TYPE, COLUMN_TYPE, CHARACTER_MAXIMUM_LENGTH, CHARACTER_SET_NAME, COLLATION_NAME, \
             IS_NULLABLE FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? ORDER BY ORDINAL_POSITION",
            (&table.db, &table.name),
        )
        .await
        .map_err(|e| Error::source_mysql(e, format!("reading the columns of {table}")))?;
    if cols.is_empty() {
        return Err(Error::new(ErrorKind::Unsupported, format!("table {table} not found or has no visible columns"))
            .with_hint("grant SELECT on the table to the replication user"));
    }
    let mut columns = Vec::with_capacity(cols.len());
    for (name, data_type, column_type, max_len, charset, collation, nullable) in cols {
        let charset = match (charset, collation) {
            (Some(name), Some(collation)) if name != "binary" => Some(Charset { name, collation }),
            _ => None,
        };
        if let Some(cs) = &charset {
            if !super::decode::is_supported_charset(&cs.name) {
                return Err(Error::new(
                    ErrorKind::Unsupported,
                    format!(
                        "column `{name}` of {table} uses character set {}, which binferry does not decode yet",
                        cs.name
                    ),
                )
                .with_hint("convert the column to utf8mb4 or exclude the table"));
            }
        }
        let ty = ColumnType::from_information_schema(&data_type, &column_type, max_len, charset)
            .map_err(|e| e.context(format!("column `{name}` of {table}")))?;
        columns.push(ColumnSchema { name, ty, nullable: nullable.eq_ignore_ascii_case("YES"), default: None });
    }
    let defaults = column_defaults(conn, table, mariadb).await?;
    for c in &mut columns {
        c.default = defaults.get(&c.name).cloned().flatten();
    }
    let pk: Vec<String> = conn
        .exec(
            "SELECT COLUMN_NAME FROM information_schema.STATISTICS \
             WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? AND INDEX_NAME = 'PRIMARY' ORDER BY SEQ_IN_INDEX",
            (&table.db, &table.name),
        )
        .await
        .map_err(|e| Error::source_mysql(e, format!("reading the primary key of {table}")))?;
    let primary_key = pk
        .iter()
        .map(|k| {
            columns
                .iter()
                .position(|c: &ColumnSchema| &c.name == k)
                .ok_or_else(|| Error::internal(format!("primary key column {k} of {table} not found")))
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(TableSchema { table: table.clone(), columns, primary_key })
}

/// Column defaults of `table` as SQL expressions usable in `ALTER TABLE ... DEFAULT`.
pub(crate) async fn column_defaults(
    conn: &mut Conn,
    table: &TableRef,
    mariadb: bool,
) -> Result<std::collections::HashMap<String, Option<String>>> {
    let rows: Vec<(String, Option<String>, String)> = conn
        .exec(
            "SELECT COLUMN_NAME, COLUMN_DEFAULT, EXTRA FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ?",
            (&table.db, &table.name),
        )
        .await
        .map_err(|e| Error::source_mysql(e, format!("reading the column defaults of {table}")))?;
    Ok(rows.into_iter().map(|(name, default, extra)| (name, sql_default(mariadb, default, &extra))).collect())
}

/// MariaDB reports defaults as SQL (`'text'`, `5`, `NULL`, `current_timestamp()`); MySQL
/// reports literal values unquoted and marks expressions `DEFAULT_GENERATED`.
fn sql_default(mariadb: bool, default: Option<String>, extra: &str) -> Option<String> {
    let d = default?;
    if mariadb {
        return (!d.eq_ignore_ascii_case("NULL")).then_some(d);
    }
    if extra.to_ascii_uppercase().contains("DEFAULT_GENERATED") {
        Some(format!("({d})"))
    } else {
        Some(format!("'{}'", d.replace('\\', "\\\\").replace('\'', "''")))
    }
}

pub(crate) fn quote(ident: &str) -> String {
    format!("`{}`", ident.replace('`', "``"))
}

fn now_secs() -> u32 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as u32).unwrap_or(0)
}
