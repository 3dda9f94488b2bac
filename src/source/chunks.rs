//! Copying tables in primary-key chunks while the binlog streams: the initial snapshot of
//! every table with a primary key, `binferry resync`, and the first chunk of a table created
//! while streaming (which gives its target table the shape the table had then).
//!
//! # The technique, and why this variant
//!
//! DBLog and Flink CDC copy a table in key chunks next to the binlog stream and reconcile
//! each chunk with the binlog events that overlap it. DBLog writes low and high watermark
//! rows into a source table and drops, from the chunk held in memory, every key the stream
//! changes between them; Flink CDC reads the binlog between the two watermarks again for
//! each chunk and replays it onto the chunk. Both exist because their sinks cannot tell an
//! older row from a newer one.
//!
//! binferry's sinks can: every target row carries the source position that wrote it, and a
//! change applies only when it is newer (DESIGN.md, guarantee 1; hard deletes leave
//! tombstones). So a chunk needs one exact fact, not a reconciliation pass: **the binlog
//! position its read view corresponds to**. Each chunk is read in its own short
//! `START TRANSACTION WITH CONSISTENT SNAPSHOT`, for which MariaDB reports exactly that
//! position (`binlog_snapshot_file` / `binlog_snapshot_position`, lock-free), and its rows
//! enter the buffer *at* that position `P`:
//!
//! - a change committed before `P` is in the chunk, and if the stream delivers it after the
//!   chunk, its older position makes it stale — or it is an identical image re-applied;
//! - a change committed after `P` is not in the chunk and has a newer position: whether the
//!   stream delivers it before the chunk (the chunk row is then stale and skipped) or after,
//!   the target ends with it.
//!
//! Every key's last applied state is therefore its newest source state, whichever order
//! chunk rows and binlog events reach the buffer in. Nothing is written to the source, no
//! lock is taken, and no transaction lives longer than one chunk's `SELECT`.
//!
//! Two rules keep this exact:
//!
//! - The stream takes a chunk only between transactions and once it has read up to `P`, and
//!   refuses it (the chunk is read again) when a statement naming the table arrived after
//!   the table's columns were read: the chunk could hold an older shape.
//! - A table's copy ends with a sweep: a TRUNCATE record at the position where streaming was
//!   when the copy was registered (not the first chunk's: parallel readers do not always read
//!   the first chunk first). Every chunk is read after it, and every row the copy wrote got a
//!   position at least that new (an upsert of an unchanged row still moves its position), so
//!   the sweep removes exactly the target rows the source no longer has, and the table is
//!   never emptied on the way (a resync keeps it readable). A resync's rows are numbered from
//!   2^31 within their position, so that on a source whose binlog has not moved since an
//!   earlier copy they still sort after that copy's rows.
//!
//! On MySQL, which has no `binlog_snapshot_position`, `P` is the binlog end read just before
//! the chunk's transaction starts. A transaction already in the binlog but whose engine
//! commit lands after the read view starts would then be older than `P` and missing from
//! the chunk: a window of the length of one group commit. `binferry verify` finds such a
//! row; MariaDB has no such window.
//!
//! # Order, parallelism and resuming
//!
//! Boundaries come from the primary key index (`... ORDER BY key LIMIT 1 OFFSET n-1`), one
//! after the other; up to `snapshot.parallel` chunks are read at once, each on its own
//! connection, and offered to the stream in key order. The checkpoint, written in the same
//! buffer append as a chunk's rows, records the chunk's upper bound, so a restart resumes
//! after the last chunk the buffer holds.
//!
//! Tables without a primary key, or whose key has a type whose SQL order differs from its
//! value order (ENUM, SET) or that cannot be compared (JSON, spatial), are not chunked: the
//! initial snapshot copies them whole in one consistent read before streaming starts.

use std::sync::Arc;

use futures_util::{TryStreamExt, stream};
use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Pool, Row};
use tokio::sync::{mpsc, oneshot};
use tokio_util::task::AbortOnDropHandle;
use tracing::info;

use super::catalog::{load_schema, quote};
use super::{ServerInfo, SourceSettings};
use crate::error::{Error, ErrorKind, Result};
use crate::event::Value;
use crate::mysql_codec::{key_range, param, snapshot_row};
use crate::position::Position;
use crate::schema::{ColumnSchema, ColumnType, TableRef, TableSchema};
use crate::shutdown::Shutdown;

/// A table to copy, from the key after `after`.
#[derive(Clone, Debug)]
pub(super) struct CopyJob {
    pub table: TableRef,
    pub after: Option<Vec<Value>>,
    /// A repair: only these keys, in one read.
    pub keys: Option<Vec<Vec<Value>>>,
}

/// What the copier hands the stream.
pub(super) enum Offer {
    /// A chunk read from the source; the stream answers on `reply`.
    Chunk(Chunk, oneshot::Sender<Verdict>),
    /// The table cannot be copied (its schema or a value binferry cannot read, or the table
    /// is gone): the stream stops it with `reason`.
    Failed { table: TableRef, reason: String, repair: bool },
}

/// One chunk of a table's rows, read at one exact binlog position.
pub(super) struct Chunk {
    pub table: TableRef,
    pub schema: Arc<TableSchema>,
    /// Binlog end before the table's columns were read: a statement naming the table after it
    /// may have changed them.
    pub schema_at: Position,
    /// The binlog position the chunk's read view corresponds to.
    pub at: Position,
    /// Rows, in key order, as the writer's values.
    pub rows: Vec<Vec<Value>>,
    /// The chunk's upper key bound (inclusive), where the next chunk starts; `None` for the
    /// table's last chunk.
    pub upper: Option<Vec<Value>>,
    /// A repair's keys (the rows read are those of them the source has).
    pub repair: Option<Vec<Vec<Value>>>,
}

/// The stream's answer to a chunk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Verdict {
    /// In the buffer (with the checkpoint that records it).
    Taken,
    /// The table's columns may have changed since they were read: read its schema and this
    /// chunk again.
    Again,
    /// The table is no longer being copied (dropped, renamed, stopped): drop the copy.
    Abandon,
}

/// Whether the stream takes a chunk now, given what it knows. Pure, so that the rules are
/// tested apart from the stream.
///
/// `stream_at` is where the stream is, between transactions; `last_ddl` the position of the
/// newest statement that named the table.
pub(super) fn judge(
    copying: bool,
    stopped: bool,
    chunk_at: &Position,
    schema_at: &Position,
    stream_at: Option<&Position>,
    last_ddl: Option<&Position>,
) -> Result<Option<Verdict>> {
    use std::cmp::Ordering::*;
    if !copying || stopped {
        return Ok(Some(Verdict::Abandon));
    }
    let Some(stream_at) = stream_at else { return Ok(None) };
    match stream_at.partial_cmp(chunk_at) {
        Some(Less) => return Ok(None),
        Some(_) => {}
        None => {
            return Err(Error::new(
                ErrorKind::SourceSetting,
                format!(
                    "the binlog stream is at {stream_at} and a snapshot chunk at {chunk_at}: not one binlog sequence"
                ),
            )
            .with_hint("the source's log_bin base name changed while binferry ran; restart binferry"));
        }
    }
    if last_ddl.is_some_and(|d| !matches!(d.partial_cmp(schema_at), Some(Less | Equal))) {
        return Ok(Some(Verdict::Again));
    }
    Ok(Some(Verdict::Taken))
}

/// Whether `ty` can be part of a chunked key: SQL compares it with a bound parameter in the
/// same order as `ORDER BY` sorts it.
fn chunkable(ty: &ColumnType) -> bool {
    use ColumnType::*;
    matches!(
        ty,
        Int { .. }
            | Decimal { .. }
            | Year
            | Date
            | DateTime { .. }
            | Timestamp { .. }
            | Time { .. }
            | Char { .. }
            | VarChar { .. }
            | Binary { .. }
            | VarBinary { .. }
            | Uuid
            | Inet4
            | Inet6
            | Bit { .. }
    )
}

/// Whether `schema` is copied in chunks (else whole, before streaming).
pub(super) fn is_chunkable(schema: &TableSchema) -> bool {
    schema.has_primary_key() && schema.primary_key.iter().all(|&i| chunkable(&schema.columns[i].ty))
}

/// The queries of one table's chunked copy. Pure SQL text, tested below.
pub(super) struct ChunkSql {
    table: String,
    columns: String,
    keys: Vec<String>,
    /// The key's columns, to read bounds with.
    key_columns: Vec<ColumnSchema>,
}

impl ChunkSql {
    pub(super) fn new(schema: &TableSchema) -> Self {
        ChunkSql {
            table: format!("{}.{}", quote(&schema.table.db), quote(&schema.table.name)),
            columns: schema.columns.iter().map(|c| quote(&c.name)).collect::<Vec<_>>().join(", "),
            keys: schema.primary_key.iter().map(|&i| quote(&schema.columns[i].name)).collect(),
            key_columns: schema.primary_key.iter().map(|&i| schema.columns[i].clone()).collect(),
        }
    }

    /// The key `rows` rows after `after` (the upper bound of the chunk that starts there).
    fn boundary(&self, after: bool, rows: usize) -> String {
        format!(
            "SELECT {} FROM {}{} ORDER BY {} LIMIT 1 OFFSET {}",
            self.keys.join(", "),
            self.table,
            if after { format!(" WHERE {}", key_range::compare(&self.keys, true)) } else { String::new() },
            self.keys.join(", "),
            rows.saturating_sub(1)
        )
    }

    /// The rows whose key is one of `n` keys: `(k1 = ? AND k2 = ?) OR ...`, parameters key by key.
    fn by_keys(&self, n: usize) -> String {
        let one = self.keys.iter().map(|k| format!("{k} = ?")).collect::<Vec<_>>().join(" AND ");
        let any = vec![format!("({one})"); n].join(" OR ");
        format!("SELECT {} FROM {} WHERE {any}", self.columns, self.table)
    }

    /// The rows of the chunk `(lower, upper]` (`None`: open), and the query's parameters.
    pub(super) fn rows(&self, lower: Option<&[Value]>, upper: Option<&[Value]>) -> (String, Vec<mysql_async::Value>) {
        let (cond, params) = key_range::filter(&self.keys, lower, upper);
        let filter = if cond.is_empty() { String::new() } else { format!(" WHERE {}", cond.join(" AND ")) };
        (format!("SELECT {} FROM {}{filter} ORDER BY {}", self.columns, self.table, self.keys.join(", ")), params)
    }
}

/// A key range `(lower, upper]` of one table; `None` bounds are open.
struct Range {
    lower: Option<Vec<Value>>,
    upper: Option<Vec<Value>>,
}

/// Copies the tables the stream asks for, one table at a time, several chunks at once.
pub(super) struct Copier {
    pub settings: SourceSettings,
    pub server: ServerInfo,
    pub offers: mpsc::Sender<Offer>,
}

impl Copier {
    /// Copy each job the stream sends until the stream ends (`jobs` closes) or shutdown.
    /// Errors that retrying fixes (the source unreachable) end the copier, and the source
    /// restarts from its checkpoint; a table that cannot be copied is offered as failed.
    pub(super) async fn run(self, mut jobs: mpsc::Receiver<CopyJob>, shutdown: Shutdown) -> Result<()> {
        let pool = self.settings.endpoint().pool().await?;
        let result = async {
            loop {
                let job = tokio::select! {
                    job = jobs.recv() => job,
                    _ = shutdown.triggered() => None,
                };
                let Some(job) = job else { return Ok(()) };
                let table = job.table.clone();
                let repair = job.keys.is_some();
                let done = match job.keys {
                    Some(keys) => self.repair(&pool, table.clone(), keys).await,
                    None => self.copy(&pool, job, &shutdown).await,
                };
                match done {
                    Ok(()) => {}
                    Err(e) if e.is_transient() && !repair => return Err(e),
                    Err(e) => {
                        let reason = format!("{} {table}: {e}", if repair { "repairing" } else { "copying" });
                        if self.offers.send(Offer::Failed { table, reason, repair }).await.is_err() {
                            return Ok(());
                        }
                    }
                }
            }
        }
        .await;
        pool.disconnect().await.ok();
        result
    }

    /// Copy one table from `job.after` to its end, or until the stream abandons it.
    async fn copy(&self, pool: &Pool, job: CopyJob, shutdown: &Shutdown) -> Result<()> {
        let mut after = job.after;
        let table = job.table;
        info!(%table, resumed = after.is_some(), "copying table in chunks");
        'schema: loop {
            let mut conn = pool.get_conn().await.map_err(|e| Error::source_mysql(e, "snapshot connection"))?;
            let schema_at = binlog_end(&mut conn).await?;
            let (schema, _) = self.settings.shape(load_schema(&mut conn, &table, self.server.mariadb).await?)?;
            if !is_chunkable(&schema) {
                return Err(Error::new(
                    ErrorKind::Unsupported,
                    format!("{table} has no primary key, or one of a type that cannot be read in key order"),
                )
                .with_hint("stop binferry, delete the table's target rows, and start it again with a fresh buffer to copy it whole; or add a primary key"));
            }
            let schema = Arc::new(schema);
            let sql = Arc::new(ChunkSql::new(&schema));
            let rows = self.settings.chunk_rows;
            let ranges = stream::try_unfold((conn, after.clone(), false), {
                let sql = Arc::clone(&sql);
                move |(mut conn, lower, done)| {
                    let sql = Arc::clone(&sql);
                    async move {
                        if done {
                            return Ok(None);
                        }
                        let upper = next_boundary(&mut conn, &sql, lower.as_deref(), rows).await?;
                        let last = upper.is_none();
                        let range = Range { lower, upper: upper.clone() };
                        Ok(Some((range, (conn, upper, last))))
                    }
                }
            });
            // Each read is its own task. A future inside `try_buffered` is polled only while
            // this loop polls the stream, and the loop spends most of its time waiting for the
            // stream's verdict on the chunk before: the reads ahead would stall with it (their
            // rows filling the socket), and the parallel readers would take turns instead.
            // Dropping a handle (the copy abandoned or shut down) aborts its read.
            let mariadb = self.server.mariadb;
            let chunks = ranges
                .map_ok(|range| {
                    let read = read_chunk(
                        pool.clone(),
                        mariadb,
                        Arc::clone(&schema),
                        Arc::clone(&sql),
                        schema_at.clone(),
                        range,
                    );
                    let handle = AbortOnDropHandle::new(tokio::spawn(read));
                    async move { handle.await.map_err(|e| Error::internal(format!("a chunk reader failed: {e}")))? }
                })
                .try_buffered(self.settings.snapshot_parallel);
            let mut chunks = std::pin::pin!(chunks);
            while let Some(chunk) = chunks.try_next().await? {
                if shutdown.is_triggered() {
                    return Ok(());
                }
                let upper = chunk.upper.clone();
                let (tx, rx) = oneshot::channel();
                if self.offers.send(Offer::Chunk(chunk, tx)).await.is_err() {
                    return Ok(());
                }
                match rx.await {
                    Ok(Verdict::Taken) => {}
                    Ok(Verdict::Again) => {
                        info!(%table, "the table changed shape during its copy: reading its columns and the chunk again");
                        continue 'schema;
                    }
                    Ok(Verdict::Abandon) | Err(_) => return Ok(()),
                }
                match upper {
                    Some(u) => after = Some(u),
                    None => return Ok(()),
                }
            }
            return Ok(());
        }
    }

    /// Read `keys` of `table` in one consistent read and offer them as a repair chunk.
    async fn repair(&self, pool: &Pool, table: TableRef, keys: Vec<Vec<Value>>) -> Result<()> {
        loop {
            let mut conn = pool.get_conn().await.map_err(|e| Error::source_mysql(e, "repair connection"))?;
            let schema_at = binlog_end(&mut conn).await?;
            let (schema, _) = self.settings.shape(load_schema(&mut conn, &table, self.server.mariadb).await?)?;
            if !schema.has_primary_key() {
                return Err(Error::new(
                    ErrorKind::Unsupported,
                    format!("{table} has no primary key: its rows have no key to repair by"),
                )
                .with_hint(format!("resync the table instead: binferry resync --table {}", table.key())));
            }
            let sql = ChunkSql::new(&schema);
            let at = begin_chunk(&mut conn, self.server.mariadb).await?;
            let mut rows = Vec::with_capacity(keys.len());
            for group in keys.chunks(KEYS_PER_QUERY) {
                let params: Vec<mysql_async::Value> = group.iter().flat_map(|k| k.iter().map(param)).collect();
                let raw: Vec<Row> = conn
                    .exec(sql.by_keys(group.len()), params)
                    .await
                    .map_err(|e| Error::source_mysql(e, format!("reading keys of {table} to repair")))?;
                for row in raw {
                    rows.push(snapshot_row(row, &schema.columns).map_err(|e| e.context(format!("repairing {table}")))?);
                }
            }
            conn.query_drop("COMMIT").await.map_err(|e| Error::source_mysql(e, "ending a repair's read"))?;
            let chunk = Chunk {
                table: table.clone(),
                schema: Arc::new(schema),
                schema_at,
                at,
                rows,
                upper: None,
                repair: Some(keys.clone()),
            };
            let (tx, rx) = oneshot::channel();
            if self.offers.send(Offer::Chunk(chunk, tx)).await.is_err() {
                return Ok(());
            }
            match rx.await {
                Ok(Verdict::Again) => continue,
                Ok(_) | Err(_) => return Ok(()),
            }
        }
    }
}

/// Read one chunk in its own consistent-read transaction, with the position it is at. Owns
/// what it uses, so that it runs as a task of its own.
async fn read_chunk(
    pool: Pool,
    mariadb: bool,
    schema: Arc<TableSchema>,
    sql: Arc<ChunkSql>,
    schema_at: Position,
    range: Range,
) -> Result<Chunk> {
    let table = schema.table.clone();
    let mut conn = pool.get_conn().await.map_err(|e| Error::source_mysql(e, "snapshot connection"))?;
    let at = begin_chunk(&mut conn, mariadb).await?;
    let (query, params) = sql.rows(range.lower.as_deref(), range.upper.as_deref());
    let raw: Vec<Row> =
        conn.exec(query, params).await.map_err(|e| Error::source_mysql(e, format!("reading a chunk of {table}")))?;
    conn.query_drop("COMMIT").await.map_err(|e| Error::source_mysql(e, "ending a chunk's read"))?;
    let rows = raw
        .into_iter()
        .map(|row| snapshot_row(row, &schema.columns))
        .collect::<Result<Vec<_>>>()
        .map_err(|e| e.context(format!("a chunk of {table}")))?;
    Ok(Chunk { table, schema, schema_at, at, rows, upper: range.upper, repair: None })
}

/// Keys per query of a repair.
const KEYS_PER_QUERY: usize = 500;

/// The upper bound of the chunk after `lower`: the key `rows` rows further, or `None` when
/// fewer rows remain (the last chunk is open-ended).
pub(super) async fn next_boundary(
    conn: &mut Conn,
    sql: &ChunkSql,
    lower: Option<&[Value]>,
    rows: usize,
) -> Result<Option<Vec<Value>>> {
    let params = lower.map(key_range::expand).unwrap_or_default();
    let row: Option<Row> = conn
        .exec_first(sql.boundary(lower.is_some(), rows), params)
        .await
        .map_err(|e| Error::source_mysql(e, format!("finding a chunk boundary in {}", sql.table)))?;
    row.map(|row| {
        snapshot_row(row, &sql.key_columns).map_err(|e| e.context(format!("a chunk boundary of {}", sql.table)))
    })
    .transpose()
}

/// Start the read-only transaction of one chunk and return the binlog position its read view
/// corresponds to (see the module docs for MySQL).
async fn begin_chunk(conn: &mut Conn, mariadb: bool) -> Result<Position> {
    let err = |e| Error::source_mysql(e, "starting a chunk's read");
    conn.query_drop("SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ").await.map_err(err)?;
    if mariadb {
        conn.query_drop("START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY").await.map_err(err)?;
        let rows: Vec<(String, String)> = conn.query("SHOW STATUS LIKE 'binlog_snapshot_%'").await.map_err(err)?;
        let get = |name: &str| rows.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.clone());
        match (get("binlog_snapshot_file").filter(|f| !f.is_empty()), get("binlog_snapshot_position")) {
            (Some(f), Some(p)) => match p.parse::<u64>() {
                Ok(p) => Ok(Position::new(f, p)),
                Err(_) => Err(Error::new(
                    ErrorKind::SourceSetting,
                    format!("binlog_snapshot_position: expected a number, found {p:?}"),
                )),
            },
            _ => Err(Error::new(
                ErrorKind::SourceSetting,
                "binlog_snapshot_file: expected a binlog file, found none (is log_bin enabled?)",
            )),
        }
    } else {
        let at = binlog_end(conn).await?;
        conn.query_drop("START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY").await.map_err(err)?;
        Ok(at)
    }
}

/// The binlog end now.
async fn binlog_end(conn: &mut Conn) -> Result<Position> {
    let (file, pos) = super::preflight::current_binlog_position(conn).await?;
    Ok(Position::new(file, pos))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::ColumnSchema;

    fn p(offset: u64) -> Position {
        Position::new("binlog.000002", offset)
    }

    #[test]
    fn the_stream_takes_a_chunk_once_past_it_and_only_with_current_columns() {
        use Verdict::*;
        let other = Position::new("other.000001", 5);
        // (what, copying, stopped, chunk at, schema at, stream at, last ddl, expected)
        type Case = (&'static str, bool, bool, u64, u64, Option<Position>, Option<Position>, Option<Verdict>);
        let cases: Vec<Case> = vec![
            ("not copied any more", false, false, 100, 90, Some(p(200)), None, Some(Abandon)),
            ("table stopped", true, true, 100, 90, Some(p(200)), None, Some(Abandon)),
            ("stream not started", true, false, 100, 90, None, None, None),
            ("stream before the chunk: wait", true, false, 100, 90, Some(p(99)), None, None),
            ("stream at the chunk", true, false, 100, 90, Some(p(100)), None, Some(Taken)),
            ("stream past the chunk", true, false, 100, 90, Some(p(300)), None, Some(Taken)),
            ("DDL before the columns were read", true, false, 100, 90, Some(p(300)), Some(p(80)), Some(Taken)),
            ("DDL at the columns' read", true, false, 100, 90, Some(p(300)), Some(p(90)), Some(Taken)),
            ("DDL after the columns were read", true, false, 100, 90, Some(p(300)), Some(p(95)), Some(Again)),
            ("DDL after the chunk", true, false, 100, 90, Some(p(300)), Some(p(250)), Some(Again)),
            ("DDL of another binlog sequence", true, false, 100, 90, Some(p(300)), Some(other.clone()), Some(Again)),
        ];
        for (what, copying, stopped, at, schema_at, stream, ddl, want) in cases {
            let got = judge(copying, stopped, &p(at), &p(schema_at), stream.as_ref(), ddl.as_ref()).unwrap();
            assert_eq!(got, want, "{what}");
        }
        let err = judge(true, false, &p(100), &p(90), Some(&other), None).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::SourceSetting);
    }

    fn col(name: &str, ty: ColumnType) -> ColumnSchema {
        ColumnSchema { name: name.into(), ty, nullable: false, default: None, source_type: None }
    }

    fn schema(key: Vec<usize>) -> TableSchema {
        let int = ColumnType::Int { bytes: 4, unsigned: false };
        let text = ColumnType::VarChar {
            chars: 10,
            charset: crate::schema::Charset { name: "utf8mb4".into(), collation: "utf8mb4_bin".into() },
        };
        TableSchema {
            table: TableRef::new("d", "t"),
            columns: vec![col("a", int.clone()), col("b", text), col("c", int)],
            primary_key: key,
        }
    }

    #[test]
    fn chunk_queries_compare_keys_lexicographically() {
        let one = ChunkSql::new(&schema(vec![0]));
        assert_eq!(one.boundary(false, 100), "SELECT `a` FROM `d`.`t` ORDER BY `a` LIMIT 1 OFFSET 99");
        assert_eq!(one.boundary(true, 100), "SELECT `a` FROM `d`.`t` WHERE `a` > ? ORDER BY `a` LIMIT 1 OFFSET 99");
        let (lo, hi) = ([Value::Int(1)], [Value::Int(9)]);
        assert_eq!(
            one.rows(Some(&lo), Some(&hi)).0,
            "SELECT `a`, `b`, `c` FROM `d`.`t` WHERE `a` > ? AND `a` <= ? ORDER BY `a`"
        );
        assert_eq!(one.rows(None, None).0, "SELECT `a`, `b`, `c` FROM `d`.`t` ORDER BY `a`");
        let two = ChunkSql::new(&schema(vec![1, 0]));
        assert_eq!(
            two.by_keys(2),
            "SELECT `a`, `b`, `c` FROM `d`.`t` WHERE (`b` = ? AND `a` = ?) OR (`b` = ? AND `a` = ?)"
        );
    }

    #[test]
    fn only_keys_sql_orders_like_their_values_are_chunked() {
        assert!(is_chunkable(&schema(vec![0, 1])));
        assert!(!is_chunkable(&schema(vec![])), "no key");
        let mut with_enum = schema(vec![0]);
        with_enum.columns[0].ty = ColumnType::Enum {
            variants: vec!["x".into()],
            charset: crate::schema::Charset { name: "utf8mb4".into(), collation: "utf8mb4_bin".into() },
        };
        assert!(!is_chunkable(&with_enum), "ENUM sorts by index but compares as text");
    }
}
