//! The initial snapshot's whole-table copies: tables that cannot be copied in key chunks
//! (see [`super::chunks`]) are copied in one consistent read, at the binlog position
//! streaming starts from (see the [module docs](super) for the reasoning). This also
//! registers the other tables for the chunked copy.

use std::sync::Arc;

use crate::shutdown::Shutdown;
use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Pool, Row};
use tracing::{error, info};

use super::catalog::{list_tables, load_schema, quote};
use super::{ServerInfo, SourceSettings, now_secs};
use crate::buffer::{AppendBatch, Journal};
use crate::error::{Error, ErrorKind, Result};
use crate::event::{ChangeEvent, Commit, Record, SchemaChange, TableChange};
use crate::mysql_codec::{Origin, convert};
use crate::position::{ChunkedCopy, Position, SourceCheckpoint};
use crate::schema::TableRef;
use crate::telemetry::Stats;

/// Copy whole every selected table not yet in `checkpoint` that cannot be chunked, and
/// register the others for the chunked copy. Returns `false` when interrupted by shutdown.
///
/// Long because it is the sequence of one consistent copy: lock, positions, per-table copy,
/// commit records; each step is short and depends on the one before.
pub(super) async fn run<B: Journal>(
    pool: &Pool,
    server: &ServerInfo,
    buffer: &B,
    settings: &SourceSettings,
    checkpoint: &mut SourceCheckpoint,
    stats: &Stats,
    shutdown: &Shutdown,
) -> Result<bool> {
    let mut conn = pool.get_conn().await.map_err(|e| Error::source_mysql(e, "snapshot connection"))?;
    let tables: Vec<TableRef> = list_tables(&mut conn, &settings.filter).await?;
    let (whole, chunked) = plan(&mut conn, server, settings, checkpoint, tables).await?;
    for table in chunked {
        checkpoint.snapshot.chunked.insert(table.key(), ChunkedCopy::new(table, None));
    }
    if whole.is_empty() {
        let (file, pos) = super::preflight::current_binlog_position(&mut conn).await?;
        checkpoint.resume.get_or_insert(Position::new(file, pos));
        start_copies_at_resume(checkpoint);
        checkpoint.snapshot.complete = true;
        buffer.append(completion(checkpoint)).await?;
        info!(chunked = checkpoint.snapshot.chunked.len(), "snapshot: every table is copied in chunks while streaming");
        return Ok(true);
    }
    let at = begin_consistent_snapshot(&mut conn, server).await?;
    if checkpoint.resume.is_none() {
        checkpoint.resume = Some(at.clone());
    }
    start_copies_at_resume(checkpoint);
    info!(
        whole = whole.len(),
        chunked = checkpoint.snapshot.chunked.len(),
        position = %at,
        "snapshot started: tables without a usable primary key are copied whole now, the others in chunks while streaming"
    );
    for (done, table) in whole.iter().enumerate() {
        stats.record_snapshot_remaining(whole.len() - done + checkpoint.snapshot.chunked.len());
        let copy = TableCopy { table, at: &at, settings, stats };
        match copy.run(&mut conn, server, buffer, checkpoint, shutdown).await? {
            Copied::Rows(rows) => info!(%table, rows, "table copied"),
            Copied::Interrupted(rows) => {
                info!(%table, copied = rows, "snapshot interrupted; finished tables will not be copied again");
                return Ok(false);
            }
            Copied::Stopped(reason) => {
                // One table the source cannot read stops alone: the writer records it, the
                // other tables are copied, and the copy counts as done (its stop is durable).
                error!(%table, %reason, "table stopped; the snapshot goes on with the other tables");
                checkpoint.snapshot.tables.insert(table.key(), at.clone());
                let stop =
                    Record::Ddl(SchemaChange::new(table.clone(), TableChange::Stop { reason }, at.clone(), now_secs()));
                let records = vec![stop, chunk_commit(&at)];
                buffer.append(AppendBatch { records, schemas: vec![], checkpoint: checkpoint.clone() }).await?;
            }
        }
    }
    conn.query_drop("COMMIT").await.map_err(|e| Error::source_mysql(e, "ending the snapshot transaction"))?;
    checkpoint.snapshot.complete = true;
    buffer.append(completion(checkpoint)).await?;
    stats.record_snapshot_remaining(checkpoint.snapshot.chunked.len());
    info!(position = %at, "whole-table copies complete");
    Ok(true)
}

/// The chunked copies start where streaming does: every chunk is read later, so its position
/// is at least that (with parallel readers, the first chunk in key order is not always the
/// first read), and the closing sweep at it removes only rows older than the whole copy.
fn start_copies_at_resume(checkpoint: &mut SourceCheckpoint) {
    if let Some(resume) = checkpoint.resume.clone() {
        for copy in checkpoint.snapshot.chunked.values_mut() {
            copy.start.get_or_insert_with(|| resume.clone());
        }
    }
}

/// Split the tables not copied yet into those copied whole now (no primary key, or one that
/// cannot be read in key order; also tables whose schema binferry cannot read, which the
/// whole copy stops with the reason) and those copied in chunks while streaming.
async fn plan(
    conn: &mut Conn,
    server: &ServerInfo,
    settings: &SourceSettings,
    checkpoint: &SourceCheckpoint,
    tables: Vec<TableRef>,
) -> Result<(Vec<TableRef>, Vec<TableRef>)> {
    let (mut whole, mut chunked) = (vec![], vec![]);
    for table in tables {
        let key = table.key();
        if checkpoint.snapshot.tables.contains_key(&key) || checkpoint.snapshot.chunked.contains_key(&key) {
            continue;
        }
        match load_schema(conn, &table, server.mariadb).await.and_then(|s| settings.shape(s)) {
            Ok((schema, _)) if super::chunks::is_chunkable(&schema) => chunked.push(table),
            Ok(_) => whole.push(table),
            Err(e) if e.kind() == ErrorKind::Unsupported => whole.push(table),
            Err(e) => return Err(e),
        }
    }
    Ok((whole, chunked))
}

/// How copying one table ended.
enum Copied {
    /// Every row copied.
    Rows(u64),
    /// Shutdown after this many rows; the table is copied again next time.
    Interrupted(u64),
    /// The table cannot be read exactly (a type or character set binferry does not decode,
    /// a value it cannot read): the reason and the fix.
    Stopped(String),
}

/// The copy of one table inside the snapshot transaction.
struct TableCopy<'a> {
    table: &'a TableRef,
    at: &'a Position,
    settings: &'a SourceSettings,
    stats: &'a Stats,
}

impl TableCopy<'_> {
    async fn run<B: Journal>(
        &self,
        conn: &mut Conn,
        server: &ServerInfo,
        buffer: &B,
        checkpoint: &mut SourceCheckpoint,
        shutdown: &Shutdown,
    ) -> Result<Copied> {
        let (table, at) = (self.table, self.at);
        let schema = match load_schema(conn, table, server.mariadb).await.and_then(|s| self.settings.shape(s)) {
            Ok((schema, _)) => Arc::new(schema),
            Err(e) if e.kind() == ErrorKind::Unsupported => return Ok(Copied::Stopped(e.to_string())),
            Err(e) => return Err(e),
        };
        let version = schema.version();
        let columns = schema.columns.iter().map(|c| quote(&c.name)).collect::<Vec<_>>().join(", ");
        let sql = format!("SELECT {columns} FROM {}.{}", quote(&table.db), quote(&table.name));
        let mut result =
            conn.exec_iter(sql, ()).await.map_err(|e| Error::source_mysql(e, format!("snapshot of {table}")))?;
        let mut chunk: Vec<Record> = Vec::with_capacity(self.settings.chunk_rows + 3);
        // First, clear what an interrupted earlier copy of this table may have written: those
        // rows are from an older snapshot, and deletes between it and this one are skipped for
        // this table (its binlog events count only from this snapshot on). A TRUNCATE at the
        // snapshot position removes exactly the rows older than this copy and nothing newer.
        // It brings the table's shape, so an empty table gets its target table too.
        chunk.push(Record::Ddl(
            SchemaChange::new(table.clone(), TableChange::Truncate, at.clone(), now_secs()).with_shape(version),
        ));
        chunk.push(chunk_commit(at));
        let mut copied = 0u64;
        // Row 0 is the TRUNCATE's position; copied rows sort after it.
        let mut next_row: u32 = 1;
        let mut schemas = vec![Arc::clone(&schema)];
        loop {
            let row: Option<Row> =
                result.next().await.map_err(|e| Error::source_mysql(e, format!("snapshot of {table}")))?;
            let done = row.is_none();
            if let Some(row) = row {
                let decoded = row
                    .unwrap()
                    .into_iter()
                    .zip(&schema.columns)
                    .map(|(v, c)| convert(v, c, Origin::Snapshot))
                    .collect::<Result<Vec<_>>>();
                let values = match decoded {
                    Ok(v) => v,
                    Err(e) if matches!(e.kind(), ErrorKind::Decode | ErrorKind::Unsupported) => {
                        // Rows copied so far stay; the stop that follows them says the table
                        // needs a resync.
                        drop(result);
                        return Ok(Copied::Stopped(format!("snapshot of {table}: {e}")));
                    }
                    Err(e) => return Err(e.context(format!("snapshot of {table}"))),
                };
                // Every copied row gets its own position under the snapshot's offset: identical
                // rows of a keyless table must stay distinct events, and all of them still sort
                // before the first binlog event after the snapshot (a larger offset).
                let position = Position { row: next_row, ..at.clone() };
                next_row = next_row.saturating_add(1);
                chunk.push(Record::Change(ChangeEvent::snapshot(table.clone(), version, values, position, now_secs())));
            }
            if chunk.len() >= self.settings.chunk_rows || done {
                let rows = chunk.iter().filter(|r| matches!(r, Record::Change(_))).count() as u64;
                if rows > 0 {
                    chunk.push(chunk_commit(at));
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
                self.stats.record_snapshot_rows(rows);
                if done {
                    return Ok(Copied::Rows(copied));
                }
                if shutdown.is_triggered() {
                    return Ok(Copied::Interrupted(copied));
                }
            }
        }
    }
}

/// The last append of the whole-table copies: the checkpoint that marks them complete and,
/// when every table was copied at the position streaming starts from and none is left to
/// copy in chunks, a commit without changes saying the target is consistent from there.
/// (After an interrupted snapshot the tables were copied at different positions; the stream
/// says it once it reaches the newest copy, or once the last chunked copy ends.)
fn completion(checkpoint: &SourceCheckpoint) -> AppendBatch {
    let mut batch = AppendBatch::checkpoint_only(checkpoint.clone());
    if let Some(resume) = &checkpoint.resume
        && !checkpoint.snapshot.copying_for_consistency()
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

/// The commit that closes a chunk of a table copy (the target is not consistent yet).
fn chunk_commit(at: &Position) -> Record {
    Record::Commit(Commit::copy_chunk(at.clone(), now_secs()))
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
