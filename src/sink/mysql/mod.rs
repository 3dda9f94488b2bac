//! The MySQL/MariaDB sink.
//!
//! # Target layout
//!
//! Each target table has the source columns and primary key, plus
//! `_binferry_pos` (the 16-byte [`Position::sort_key`] of the change that last
//! wrote the row) and `_binferry_hash` (the [row hash](crate::event::hash)).
//! Soft-delete tables add `_binferry_deleted_at`. Tables without a primary key
//! are keyed by (`_binferry_hash`, `_binferry_dup`): a row that appears *n*
//! times in the source appears *n* times in the target, numbered 1..=n.
//! `_binferry_state` holds the applied buffer offset, and
//! `_binferry_tombstones` the positions of hard deletes.
//!
//! # Idempotence by position
//!
//! For each batch and table, the sink first reads the stored position and hash
//! of every key the batch touches, and the tombstones of those keys. Then:
//!
//! - an upsert older than the stored row or than the key's tombstone is stale
//!   and skipped (a replayed or duplicated change);
//! - an upsert whose hash equals the stored hash changes no data: only the
//!   position moves (counted as *unchanged*);
//! - a hard delete removes the row and records a tombstone at its position,
//!   so that an older insert replayed later cannot bring the row back;
//! - a soft delete keeps the row with `_binferry_deleted_at` set; a newer
//!   insert of the key clears it.
//!
//! Every statement also carries the position guard itself
//! (`IF(VALUES(_binferry_pos) > _binferry_pos, ...)`, `... AND _binferry_pos <
//! ?`), so correctness does not depend on the read alone. Tombstones are kept
//! as long as the buffer keeps events that could be replayed.
//!
//! The applied offset is written to `_binferry_state` in the same transaction
//! as the rows ([`Sink`] contract). Tables are created on a separate
//! connection, because DDL would implicitly commit the open data transaction.
//! Values travel as binary-protocol parameters: floats keep their exact bits
//! and nothing needs escaping.

mod check;
mod plan;
mod statements;

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use mysql_async::prelude::Queryable;
use mysql_async::{Conn, OptsBuilder, Row, Value as MyValue};
use tracing::{info, warn};

pub use check::check;
pub use statements::{
    BARRIER_TABLE, DELETED_COLUMN, DUP_COLUMN, HASH_COLUMN, POS_COLUMN, STATE_TABLE, STOPPED_TABLE, TOMBSTONE_TABLE,
};

use super::{ApplyCounts, BarrierPhase, Sink};
use crate::config::{Config, DEFAULT_TARGET_PASSWORD_ENV, DropMode, resolve_password};
use crate::connection::{Endpoint, Role};
use crate::error::{Error, ErrorKind, Result};
use crate::event::batch::{Batch, KeylessRow, RowOp, TableBatch};
use crate::event::hash::{encode_values, row_hash};
use crate::event::value::format_epoch;
use crate::event::{SchemaChange, TableChange, Value};
use crate::mysql_codec::{Origin, convert};
use crate::position::Position;
use crate::schema::{TableRef, TableSchema};
use crate::table_options::{DeleteMode, TableRules};
use plan::{Alter, KeyAction, Stored, TargetColumn, Tombstones, column_ddl, decide, plan_alters};
use statements::{Statements, q};

/// Rows per multi-row statement (a power of two; smaller chunks halve down to 1). 1,024 was
/// measured too: no faster catch-up, 30 MB more peak memory (BENCHMARKS.md).
const ROWS_PER_STATEMENT: usize = 256;
/// The protocol's limit of placeholders per statement.
const MAX_PLACEHOLDERS: usize = 65_535;
/// Prepared statements kept per connection.
const STATEMENT_CACHE: usize = 512;
/// The stream id of the embedded buffer in `_binferry_state`.
const EMBEDDED_STREAM: &str = "embedded";
/// Key hash of a table-wide tombstone (TRUNCATE, DROP): no change older than it applies.
const TABLE_TOMBSTONE: [u8; 16] = [0; 16];
/// How often expired tombstones and DDL barriers are removed.
const GC_INTERVAL: Duration = Duration::from_secs(600);

/// Connection settings and options of a MySQL target.
#[derive(Clone)]
pub struct MysqlSinkSettings {
    endpoint: Endpoint,
    /// `host:port`, for messages.
    pub address: String,
    /// Target database.
    pub database: String,
    table_template: String,
    pub(crate) pipeline: String,
    rules: TableRules,
    tombstone_retention: Duration,
    on_drop: DropMode,
    /// Which buffer stream this sink applies: its row in `_binferry_state`.
    stream: String,
}

impl MysqlSinkSettings {
    /// Resolve settings (and the password) from the config.
    pub fn from_config(config: &Config) -> Result<Self> {
        let m = config.sink.mysql.as_ref().ok_or_else(|| Error::new(ErrorKind::Config, "sink.mysql: missing"))?;
        let password = resolve_password("sink.mysql", &m.password_env, &m.password_file, DEFAULT_TARGET_PASSWORD_ENV)?;
        let opts = OptsBuilder::default()
            .user(Some(m.user.clone()))
            .pass(Some(password.expose().to_string()))
            .stmt_cache_size(STATEMENT_CACHE)
            .init(vec![
                // UTC: TIMESTAMP values arrive in UTC. No zero-date checks: the source allowed
                // them. STRICT_ALL_TABLES: never truncate silently.
                "SET time_zone = '+00:00'",
                "SET NAMES utf8mb4",
                "SET SESSION sql_mode = 'STRICT_ALL_TABLES,NO_AUTO_VALUE_ON_ZERO,NO_ENGINE_SUBSTITUTION'",
                "SET SESSION foreign_key_checks = 0",
                // A DDL statement waiting for a metadata lock fails instead of hanging forever.
                "SET SESSION lock_wait_timeout = 120",
            ]);
        let timeout = Duration::from_secs(m.connect_timeout_secs);
        let endpoint = Endpoint::new(Role::Target, "sink.mysql", &m.host, m.port, opts, m.tls.clone(), timeout);
        Ok(MysqlSinkSettings {
            address: endpoint.address(),
            endpoint,
            database: m.database.clone(),
            table_template: m.table_name.clone(),
            pipeline: config.pipeline.name.clone(),
            rules: config.table_rules()?,
            tombstone_retention: Duration::from_secs(match (&config.buffer.kind, &config.buffer.kafka) {
                (crate::config::BufferKind::Kafka, Some(k)) => k.retention_secs,
                _ => config.buffer.embedded.retention_max_age_secs,
            }),
            on_drop: m.on_source_drop,
            stream: EMBEDDED_STREAM.into(),
        })
    }

    /// The same target, applying another buffer stream (a Kafka partition): each stream keeps
    /// its own applied offset.
    pub fn for_stream(&self, stream: impl Into<String>) -> Self {
        MysqlSinkSettings { stream: stream.into(), ..self.clone() }
    }

    async fn connect(&self) -> Result<Conn> {
        self.endpoint.connect().await
    }

    /// The target table name for a source table.
    pub fn target_table(&self, t: &TableRef) -> String {
        self.table_template.replace("{db}", &t.db).replace("{table}", &t.name)
    }

    fn soft(&self, t: &TableRef) -> bool {
        self.rules.options(t).deletes == DeleteMode::Soft
    }
}

/// The MySQL sink.
pub struct MysqlSink {
    settings: MysqlSinkSettings,
    data: Option<Conn>,
    ddl: Option<Conn>,
    in_txn: bool,
    /// Target table → the schema version it was last checked against.
    tables: HashMap<String, u64>,
    /// Source table each target table is fed from (detects template collisions).
    owners: HashMap<String, TableRef>,
    state_ready: bool,
    overwrite_equal: bool,
    last_gc: Option<Instant>,
    /// (target table, column) already warned about as dropped in the source.
    warned_dropped: HashSet<(String, String)>,
    /// The target is MariaDB (it has the UUID and INET types); learnt with the state tables.
    mariadb: bool,
}

impl MysqlSink {
    /// A sink that connects lazily.
    pub fn new(settings: MysqlSinkSettings) -> Self {
        MysqlSink {
            settings,
            data: None,
            ddl: None,
            in_txn: false,
            tables: HashMap::new(),
            owners: HashMap::new(),
            state_ready: false,
            overwrite_equal: false,
            last_gc: None,
            warned_dropped: HashSet::new(),
            mariadb: true,
        }
    }

    /// Replay mode: also rewrite rows whose stored position equals the change's, which
    /// repairs rows changed in the target by hand. Never rewrites newer rows.
    pub fn overwrite_equal_positions(mut self, on: bool) -> Self {
        self.overwrite_equal = on;
        self
    }

    /// Preflight of the target.
    pub async fn check(settings: &MysqlSinkSettings) -> Result<crate::check::Report> {
        check::check(settings).await
    }

    async fn data(&mut self) -> Result<&mut Conn> {
        if self.data.is_none() {
            self.data = Some(self.settings.connect().await?);
        }
        self.data.as_mut().ok_or_else(|| Error::internal("no data connection"))
    }

    /// The connection for DDL and catalog reads, opened on first use. Separate from the data
    /// connection, whose open transaction a DDL statement would commit implicitly.
    async fn ddl_conn(&mut self) -> Result<&mut Conn> {
        if self.ddl.is_none() {
            self.ddl = Some(self.settings.connect().await?);
        }
        self.ddl.as_mut().ok_or_else(|| Error::internal("no DDL connection"))
    }

    async fn ddl(&mut self, sql: &str) -> Result<()> {
        let conn = self.ddl_conn().await?;
        conn.query_drop(sql).await.map_err(|e| Error::target_mysql(e, format!("target DDL `{sql}`")))
    }

    /// Record a table-wide tombstone for target table `name` in the data transaction: no change
    /// older than `pos` applies to that name any more (TRUNCATE, DROP, RENAME).
    async fn table_tombstone(&mut self, table: &TableRef, name: &str, pos: [u8; 16]) -> Result<()> {
        let db = self.settings.database.clone();
        let schema = TableSchema { table: table.clone(), columns: vec![], primary_key: vec![] };
        let st = Statements::new(&db, name, &schema, false);
        self.begin().await?;
        self.write_tombstones(&st, name, vec![(TABLE_TOMBSTONE, pos)]).await
    }

    async fn ensure_state(&mut self) -> Result<()> {
        if self.state_ready {
            return Ok(());
        }
        let db = q(&self.settings.database);
        let version: Option<String> = self
            .ddl_conn()
            .await?
            .query_first("SELECT VERSION()")
            .await
            .map_err(|e| Error::target_mysql(e, "VERSION()"))?;
        self.mariadb = version.is_some_and(|v| v.to_ascii_lowercase().contains("mariadb"));
        self.ddl(&format!("CREATE DATABASE IF NOT EXISTS {db}")).await?;
        self.ddl(&format!(
            "CREATE TABLE IF NOT EXISTS {db}.{} (\
               pipeline VARCHAR(64) NOT NULL, stream VARCHAR(255) NOT NULL, \
               applied_offset BIGINT UNSIGNED NOT NULL, source_file VARCHAR(512) NOT NULL, \
               source_offset BIGINT UNSIGNED NOT NULL, updated_at TIMESTAMP(6) NOT NULL, \
               PRIMARY KEY (pipeline, stream)) ENGINE=InnoDB",
            q(STATE_TABLE)
        ))
        .await?;
        self.ddl(&format!(
            "CREATE TABLE IF NOT EXISTS {db}.{} (\
               table_name VARCHAR(255) NOT NULL, key_hash BINARY(16) NOT NULL, pos BINARY(16) NOT NULL, \
               deleted_at TIMESTAMP(6) NOT NULL, PRIMARY KEY (table_name, key_hash), KEY (deleted_at)) ENGINE=InnoDB",
            q(TOMBSTONE_TABLE)
        ))
        .await?;
        self.ddl(&format!(
            "CREATE TABLE IF NOT EXISTS {db}.{} (\
               pipeline VARCHAR(64) NOT NULL, source_db VARCHAR(64) NOT NULL, source_table VARCHAR(64) NOT NULL, \
               reason TEXT NOT NULL, stopped_at TIMESTAMP(6) NOT NULL, \
               PRIMARY KEY (pipeline, source_db, source_table)) ENGINE=InnoDB",
            q(STOPPED_TABLE)
        ))
        .await?;
        self.ddl(&format!(
            "CREATE TABLE IF NOT EXISTS {db}.{} (\
               pipeline VARCHAR(64) NOT NULL, barrier_hash BINARY(16) NOT NULL, stream VARCHAR(255) NOT NULL, \
               phase VARCHAR(16) NOT NULL, barrier TEXT NOT NULL, reached_at TIMESTAMP(6) NOT NULL, \
               PRIMARY KEY (pipeline, barrier_hash, phase, stream)) ENGINE=InnoDB",
            q(BARRIER_TABLE)
        ))
        .await?;
        self.state_ready = true;
        Ok(())
    }

    async fn begin(&mut self) -> Result<()> {
        if !self.in_txn {
            self.data().await?.query_drop("START TRANSACTION").await.map_err(|e| Error::target_mysql(e, "BEGIN"))?;
            self.in_txn = true;
        }
        Ok(())
    }

    /// Execute `sql(n)` over `rows` in power-of-two chunks; each row is `per_row` parameters.
    /// Returns the rows of SELECTs.
    async fn chunked(
        &mut self,
        rows: Vec<Vec<MyValue>>,
        per_row: usize,
        prefix: &[MyValue],
        sql: impl Fn(usize) -> String,
        what: &str,
    ) -> Result<Vec<Row>> {
        let mut max = ROWS_PER_STATEMENT;
        while max > 1 && max * per_row + prefix.len() > MAX_PLACEHOLDERS {
            max /= 2;
        }
        let mut out = Vec::new();
        let mut remaining = rows.len();
        // Values move into the statement parameters: no copy of row data per chunk.
        let mut rows = rows.into_iter();
        while remaining > 0 {
            let mut n = max;
            while n > remaining {
                n /= 2;
            }
            let mut params = Vec::with_capacity(prefix.len() + n * per_row);
            params.extend_from_slice(prefix);
            params.extend(rows.by_ref().take(n).flatten());
            let conn = self.data().await?;
            let result: Vec<Row> = conn.exec(sql(n), params).await.map_err(|e| Error::target_mysql(e, what))?;
            out.extend(result);
            remaining -= n;
        }
        Ok(out)
    }

    async fn tombstones(
        &mut self,
        st: &Statements<'_>,
        table: &str,
        hashes: Vec<[u8; 16]>,
    ) -> Result<HashMap<[u8; 16], [u8; 16]>> {
        if hashes.is_empty() {
            return Ok(HashMap::new());
        }
        let rows = hashes.into_iter().map(|h| vec![MyValue::Bytes(h.to_vec())]).collect();
        let found = self
            .chunked(
                rows,
                1,
                &[MyValue::Bytes(table.as_bytes().to_vec())],
                |n| st.select_tombstones(n),
                "reading tombstones",
            )
            .await?;
        Ok(found
            .into_iter()
            .filter_map(|mut r| Some((bytes16(r.take::<Vec<u8>, _>(0)?)?, bytes16(r.take::<Vec<u8>, _>(1)?)?)))
            .collect())
    }

    async fn write_tombstones(
        &mut self,
        st: &Statements<'_>,
        table: &str,
        stones: Vec<([u8; 16], [u8; 16])>,
    ) -> Result<()> {
        let rows = stones
            .into_iter()
            .map(|(h, p)| {
                vec![MyValue::Bytes(table.as_bytes().to_vec()), MyValue::Bytes(h.to_vec()), MyValue::Bytes(p.to_vec())]
            })
            .collect();
        self.chunked(rows, 3, &[], |n| st.upsert_tombstones(n), "recording tombstones").await?;
        Ok(())
    }

    async fn apply_keyed(&mut self, t: &TableBatch, name: &str, counts: &mut ApplyCounts) -> Result<()> {
        let schema = &t.schema;
        let soft = self.settings.soft(&schema.table);
        let st = Statements::new(&self.settings.database, name, schema, soft);
        // 1. What the target holds for these keys.
        let ops: Vec<(&Vec<u8>, &RowOp)> = t.ops.iter().collect();
        let key_rows = ops.iter().map(|(_, op)| op.key(schema).into_iter().map(param).collect()).collect();
        let found = self
            .chunked(key_rows, schema.primary_key.len(), &[], |n| st.select_state(n), "reading target rows")
            .await?;
        let mut stored: HashMap<Vec<u8>, Stored> = HashMap::with_capacity(found.len());
        for row in found {
            let (key, s) = stored_row(row, schema)?;
            stored.insert(key, s);
        }
        let mut lookup: Vec<[u8; 16]> = if soft { Vec::new() } else { ops.iter().map(|(k, _)| key_hash(k)).collect() };
        lookup.push(TABLE_TOMBSTONE);
        let tombs = self.tombstones(&st, name, lookup).await?;
        let table_tomb = tombs.get(&TABLE_TOMBSTONE).copied();
        // 2. Decide per key.
        let mut upserts: Vec<Vec<MyValue>> = Vec::new();
        let mut deletes: Vec<Vec<MyValue>> = Vec::new();
        let mut stones: Vec<([u8; 16], [u8; 16])> = Vec::new();
        for (key, op) in ops {
            let pos = op.position().sort_key()?;
            let known = Tombstones { key: tombs.get(&key_hash(key)).copied(), table: table_tomb };
            let count = |changed: bool, counts: &mut ApplyCounts| match changed {
                true => counts.written += 1,
                false => counts.unchanged += 1,
            };
            match (decide(op, pos, stored.get(key), known, self.overwrite_equal, soft), op) {
                (KeyAction::Stale, _) => counts.stale += 1,
                (KeyAction::Upsert { changed }, RowOp::Upsert { row, hash, .. }) => {
                    count(changed, counts);
                    let mut p: Vec<MyValue> = row.iter().map(param).collect();
                    p.push(MyValue::Bytes(pos.to_vec()));
                    p.push(MyValue::Bytes(hash.to_vec()));
                    if soft {
                        p.push(MyValue::NULL);
                    }
                    upserts.push(p);
                }
                (KeyAction::SoftDelete { changed }, RowOp::Delete { before, timestamp, .. }) => {
                    count(changed, counts);
                    let mut p: Vec<MyValue> = before.iter().map(param).collect();
                    p.push(MyValue::Bytes(pos.to_vec()));
                    p.push(MyValue::Bytes(row_hash(before).to_vec()));
                    p.push(MyValue::Bytes(format_epoch(*timestamp as i64, 0, 6).into_bytes()));
                    upserts.push(p);
                }
                (KeyAction::Delete { present }, RowOp::Delete { key: key_values, .. }) => {
                    count(present, counts);
                    if present {
                        let mut p: Vec<MyValue> = key_values.iter().map(param).collect();
                        p.push(MyValue::Bytes(pos.to_vec()));
                        deletes.push(p);
                    }
                    stones.push((key_hash(key), pos));
                }
                (action, _) => return Err(Error::internal(format!("{action:?} decided for another kind of change"))),
            }
        }
        // 3. Write.
        let upsert_width = schema.columns.len() + 2 + usize::from(soft);
        let overwrite = self.overwrite_equal;
        self.chunked(deletes, schema.primary_key.len() + 1, &[], |n| st.delete(n), &format!("deleting from `{name}`"))
            .await?;
        let written = self
            .chunked(upserts, upsert_width, &[], |n| st.upsert(n, overwrite), &format!("writing to `{name}`"))
            .await;
        if let Err(e) = written {
            return Err(self.locate_rejected(e, t, name).await);
        }
        self.write_tombstones(&st, name, stones).await?;
        Ok(())
    }

    /// A multi-row statement failed because the target refused a value: find the row, by
    /// writing the batch's rows of `t` one by one (the writer rolls all of it back next), and
    /// name the table, the row's key, the column and the value. Other errors pass unchanged.
    async fn locate_rejected(&mut self, e: Error, t: &TableBatch, name: &str) -> Error {
        if e.kind() != ErrorKind::ValueRejected {
            return e;
        }
        let schema = &t.schema;
        let keyed = schema.has_primary_key();
        let soft = keyed && self.settings.soft(&schema.table);
        let db = self.settings.database.clone();
        let st = Statements::new(&db, name, schema, soft);
        let sql = if keyed { st.upsert(1, self.overwrite_equal) } else { st.keyless_insert(1) };
        let rows: Vec<&Vec<Value>> = if keyed {
            t.ops.values().filter_map(|op| if let RowOp::Upsert { row, .. } = op { Some(row) } else { None }).collect()
        } else {
            t.keyless.values().map(|k| &k.row).collect()
        };
        for row in rows {
            let mut p: Vec<MyValue> = row.iter().map(param).collect();
            // Position and hash of zero: a probe that never wins over a stored row.
            if keyed {
                p.extend([MyValue::Bytes(vec![0; 16]), MyValue::Bytes(vec![0; 16])]);
                if soft {
                    p.push(MyValue::NULL);
                }
            } else {
                p.extend([MyValue::Bytes(vec![0; 16]), MyValue::UInt(u32::MAX as u64), MyValue::Bytes(vec![0; 16])]);
            }
            let tried = match self.data().await {
                Ok(conn) => {
                    conn.exec_drop(&sql, p).await.map_err(|e| Error::target_mysql(e, format!("writing to `{name}`")))
                }
                Err(e) => return e,
            };
            match tried {
                Ok(()) => {}
                Err(one) if one.kind() == ErrorKind::ValueRejected => return rejected_row(schema, row, &one),
                Err(other) => return other,
            }
        }
        e.with_table(schema.table.clone())
    }

    async fn apply_keyless(&mut self, t: &TableBatch, name: &str, counts: &mut ApplyCounts) -> Result<()> {
        let schema = &t.schema;
        let st = Statements::new(&self.settings.database, name, schema, false);
        let rows: Vec<(&[u8; 16], &KeylessRow)> = t.keyless.iter().collect();
        let hashes: Vec<Vec<MyValue>> = rows.iter().map(|(h, _)| vec![MyValue::Bytes(h.to_vec())]).collect();
        let found = self.chunked(hashes, 1, &[], |n| st.keyless_state(n), "reading target rows").await?;
        let mut stored: HashMap<[u8; 16], (u64, [u8; 16])> = HashMap::new();
        for mut r in found {
            let hash = r.take::<Vec<u8>, _>(0).and_then(bytes16);
            let count = r.take::<u64, _>(1);
            let pos = r.take::<Vec<u8>, _>(2).and_then(bytes16);
            if let (Some(h), Some(c), Some(p)) = (hash, count, pos) {
                stored.insert(h, (c, p));
            }
        }
        let mut lookup: Vec<[u8; 16]> = rows.iter().map(|(h, _)| **h).collect();
        lookup.push(TABLE_TOMBSTONE);
        let tombs = self.tombstones(&st, name, lookup).await?;
        let table_tomb = tombs.get(&TABLE_TOMBSTONE).copied().unwrap_or([0; 16]);
        let mut inserts: Vec<Vec<MyValue>> = Vec::new();
        let mut stones = Vec::new();
        for (hash, k) in rows {
            let (count, stored_pos) = stored.get(hash).copied().unwrap_or((0, [0; 16]));
            let floor = tombs.get(hash).map_or(stored_pos, |t| (*t).max(stored_pos)).max(table_tomb);
            let fresh: Vec<(&[u8; 16], &i64)> =
                k.changes.range((std::ops::Bound::Excluded(floor), std::ops::Bound::Unbounded)).collect();
            let Some(newest) = fresh.last().map(|(p, _)| **p) else {
                counts.stale += k.changes.len() as u64;
                continue;
            };
            counts.stale += (k.changes.len() - fresh.len()) as u64;
            let delta: i64 = fresh.iter().map(|(_, d)| **d).sum();
            let target = count as i64 + delta;
            if target < 0 {
                warn!(table = %name, "a row deleted in the source is missing in the target (drift); its count stays 0");
            }
            let target = target.max(0) as u64;
            counts.written += count.abs_diff(target).max(1);
            for dup in count + 1..=target {
                let mut p: Vec<MyValue> = k.row.iter().map(param).collect();
                p.extend([MyValue::Bytes(hash.to_vec()), MyValue::UInt(dup), MyValue::Bytes(newest.to_vec())]);
                inserts.push(p);
            }
            let conn = self.data().await?;
            if target < count {
                conn.exec_drop(st.keyless_trim(), (hash.to_vec(), target))
                    .await
                    .map_err(|e| Error::target_mysql(e, format!("deleting from `{name}`")))?;
            }
            if target > 0 && count > 0 {
                conn.exec_drop(st.keyless_touch(), (newest.to_vec(), hash.to_vec()))
                    .await
                    .map_err(|e| Error::target_mysql(e, format!("updating `{name}`")))?;
            }
            if target == 0 {
                stones.push((*hash, newest));
            }
        }
        let width = schema.columns.len() + 3;
        let written =
            self.chunked(inserts, width, &[], |n| st.keyless_insert(n), &format!("writing to `{name}`")).await;
        if let Err(e) = written {
            return Err(self.locate_rejected(e, t, name).await);
        }
        self.write_tombstones(&st, name, stones).await?;
        Ok(())
    }

    /// Remove tombstones and DDL barriers older than the buffer retains: no record that could
    /// need them can be read any more. (A barrier is kept twice as long: a partition arriving
    /// at it that late would have lost its records anyway.)
    async fn collect_garbage(&mut self) -> Result<()> {
        if self.last_gc.is_some_and(|t| t.elapsed() < GC_INTERVAL) {
            return Ok(());
        }
        self.last_gc = Some(Instant::now());
        let sql = format!(
            "DELETE FROM {}.{} WHERE deleted_at < UTC_TIMESTAMP(6) - INTERVAL ? SECOND",
            q(&self.settings.database),
            q(TOMBSTONE_TABLE)
        );
        let barriers = format!(
            "DELETE FROM {}.{} WHERE reached_at < UTC_TIMESTAMP(6) - INTERVAL ? SECOND",
            q(&self.settings.database),
            q(BARRIER_TABLE)
        );
        let secs = self.settings.tombstone_retention.as_secs();
        let conn = self.data().await?;
        conn.exec_drop(sql, (secs,)).await.map_err(|e| Error::target_mysql(e, "removing expired tombstones"))?;
        let removed = conn.affected_rows();
        if removed > 0 {
            info!(removed, "expired tombstones removed");
        }
        conn.exec_drop(barriers, (secs.saturating_mul(2),))
            .await
            .map_err(|e| Error::target_mysql(e, "removing expired DDL barriers"))?;
        Ok(())
    }
}

impl Sink for MysqlSink {
    async fn applied_offset(&mut self) -> Result<Option<u64>> {
        self.ensure_state().await?;
        let sql = format!(
            "SELECT applied_offset FROM {}.{} WHERE pipeline = ? AND stream = ?",
            q(&self.settings.database),
            q(STATE_TABLE)
        );
        let params = (self.settings.pipeline.clone(), self.settings.stream.clone());
        let conn = self.data().await?;
        conn.exec_first(sql, params).await.map_err(|e| Error::target_mysql(e, "reading the applied offset"))
    }

    async fn ensure_table(&mut self, schema: &TableSchema) -> Result<()> {
        let name = self.settings.target_table(&schema.table);
        if let Some(owner) = self.owners.get(&name) {
            if owner != &schema.table {
                return Err(Error::new(
                    ErrorKind::Config,
                    format!(
                        "sink.mysql.table_name: source tables {owner} and {} both map to target table `{name}`",
                        schema.table
                    ),
                )
                .with_hint("use a template that includes {db}, e.g. table_name = \"{db}_{table}\""));
            }
        }
        let soft = self.settings.soft(&schema.table);
        if soft && !schema.has_primary_key() {
            return Err(Error::new(
                ErrorKind::Config,
                format!("tables: deletes = \"soft\" needs a primary key, and {} has none", schema.table),
            )
            .with_hint("use deletes = \"hard\" for this table"));
        }
        let st = Statements::new(&self.settings.database, &name, schema, soft);
        let system = st.system_columns();
        let version = schema.version();
        if self.tables.get(&name) == Some(&version) {
            return Ok(());
        }
        self.ensure_state().await?;
        let mariadb = self.mariadb;
        self.ddl(&st.create(|c| column_ddl(c, mariadb))).await?;
        // The table may predate this schema version or this rule: compare column by column.
        let database = self.settings.database.clone();
        let conn = self.ddl_conn().await?;
        type TargetCol = (String, String, String, Option<u64>, Option<String>, Option<String>);
        let rows: Vec<TargetCol> = conn
            .exec(
                "SELECT COLUMN_NAME, DATA_TYPE, COLUMN_TYPE, CHARACTER_MAXIMUM_LENGTH, CHARACTER_SET_NAME, COLLATION_NAME \
                 FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ?",
                (&database, &name),
            )
            .await
            .map_err(|e| Error::target_mysql(e, format!("reading columns of `{name}`")))?;
        // A replay applies older schema versions too: `plan_alters` leaves a table alone
        // that is newer than the version (it has columns the version lacks).
        let have: Vec<TargetColumn> = rows
            .into_iter()
            .map(|(col, data_type, column_type, max_len, cs, coll)| {
                let charset = cs.zip(coll).map(|(name, collation)| crate::schema::Charset { name, collation });
                let ty =
                    crate::schema::ColumnType::from_information_schema(&data_type, &column_type, max_len, charset).ok();
                TargetColumn { name: col, ty }
            })
            .collect();
        let Some(plan) = plan_alters(&have, schema, &system, self.mariadb, self.overwrite_equal)? else {
            // A replay of a version older than the target table: left as it is.
            self.owners.insert(name.clone(), schema.table.clone());
            self.tables.insert(name, version);
            return Ok(());
        };
        for col in plan.dropped {
            if self.warned_dropped.insert((name.clone(), col.clone())) {
                warn!(table = %name, column = %col, "column is no longer in the source; kept in the target (NULL for new rows)");
            }
        }
        for alter in plan.alters {
            match alter {
                Alter::Widen { column, from, ddl } => {
                    info!(table = %name, column = %column, from = %from, to = %ddl, "widening target column");
                    self.ddl(&format!("ALTER TABLE {} MODIFY COLUMN {} {ddl}", st.table, q(&column))).await?;
                }
                Alter::Add { column, ddl } => {
                    info!(table = %name, column = %column, "adding column to target table");
                    self.ddl(&format!("ALTER TABLE {} ADD COLUMN {} {ddl}", st.table, q(&column))).await?;
                }
            }
        }
        self.owners.insert(name.clone(), schema.table.clone());
        self.tables.insert(name, version);
        Ok(())
    }

    async fn apply(&mut self, batch: &Batch) -> Result<ApplyCounts> {
        self.begin().await?;
        let mut counts = ApplyCounts::default();
        for t in batch.tables() {
            let name = self.settings.target_table(&t.schema.table);
            if t.schema.has_primary_key() {
                self.apply_keyed(t, &name, &mut counts).await?;
            } else {
                self.apply_keyless(t, &name, &mut counts).await?;
            }
        }
        Ok(counts)
    }

    async fn apply_schema_change(&mut self, change: &SchemaChange) -> Result<()> {
        self.ensure_state().await?;
        let name = self.settings.target_table(&change.table);
        let db = self.settings.database.clone();
        let pos = change.position.sort_key()?;
        let full = format!("{}.{}", q(&db), q(&name));
        match &change.change {
            TableChange::Truncate => {
                // DELETE, not TRUNCATE: it stays inside the transaction that records the offset.
                // Only rows older than the TRUNCATE go: with a key-partitioned Kafka layout each
                // partition applies it at its own pace, after newer rows from other partitions.
                self.begin().await?;
                let conn = self.data().await?;
                if table_exists(conn, &db, &name).await? {
                    conn.exec_drop(format!("DELETE FROM {full} WHERE {POS_COLUMN} < ?"), (pos.to_vec(),))
                        .await
                        .map_err(|e| Error::target_mysql(e, format!("emptying `{name}`")))?;
                }
                self.table_tombstone(&change.table, &name, pos).await?;
                info!(table = %name, "rows older than the TRUNCATE (or than a fresh snapshot copy) removed");
            }
            TableChange::Drop => {
                let stamp = format_epoch(change.timestamp as i64, 0, 0).replace(['-', ':', ' '], "");
                let kept = format!("{name}__dropped_{stamp}");
                let conn = self.ddl_conn().await?;
                let present = table_exists(conn, &db, &name).await?;
                // Idempotent: a replayed or re-applied drop whose marked table exists is done.
                let already = table_exists(conn, &db, &kept).await?;
                if present && !already {
                    match self.settings.on_drop {
                        DropMode::Drop => self.ddl(&format!("DROP TABLE {full}")).await?,
                        DropMode::Keep => {
                            self.ddl(&format!("RENAME TABLE {full} TO {}.{}", q(&db), q(&kept))).await?;
                            info!(table = %name, kept_as = %kept, "source table dropped; target table kept");
                        }
                    }
                }
                // Changes from before the drop must never reach a table re-created under this name.
                self.table_tombstone(&change.table, &name, pos).await?;
                self.tables.remove(&name);
                self.owners.remove(&name);
            }
            TableChange::RenameTo(to) => {
                let new = self.settings.target_table(to);
                let conn = self.ddl_conn().await?;
                let (from_exists, to_exists) =
                    (table_exists(conn, &db, &name).await?, table_exists(conn, &db, &new).await?);
                // Idempotent: after a crash the rename may already be done.
                if from_exists && !to_exists {
                    self.ddl(&format!("RENAME TABLE {full} TO {}.{}", q(&db), q(&new))).await?;
                    info!(from = %name, to = %new, "target table renamed");
                }
                // Replayed changes from before the rename must not refill the old name.
                self.table_tombstone(&change.table, &name, pos).await?;
                self.tables.remove(&name);
                self.owners.remove(&name);
                self.tables.remove(&new);
            }
            // The writer records stops itself (`Sink::stop_table`).
            TableChange::Stop { .. } => {}
            TableChange::RenameColumns(renames) => {
                let cols: Vec<String> = self
                    .ddl_conn()
                    .await?
                    .exec(
                        "SELECT COLUMN_NAME FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ?",
                        (&db, &name),
                    )
                    .await
                    .map_err(|e| Error::target_mysql(e, format!("reading columns of `{name}`")))?;
                for (from, to) in renames {
                    if cols.contains(from) && !cols.contains(to) {
                        self.ddl(&format!("ALTER TABLE {full} RENAME COLUMN {} TO {}", q(from), q(to))).await?;
                        info!(table = %name, from = %from, to = %to, "target column renamed");
                    }
                }
                self.tables.remove(&name);
            }
        }
        Ok(())
    }

    async fn stopped_tables(&mut self) -> Result<Vec<(TableRef, String)>> {
        self.ensure_state().await?;
        let sql = format!(
            "SELECT source_db, source_table, reason FROM {}.{} WHERE pipeline = ?",
            q(&self.settings.database),
            q(STOPPED_TABLE)
        );
        let pipeline = self.settings.pipeline.clone();
        let rows: Vec<(String, String, String)> = self
            .data()
            .await?
            .exec(sql, (pipeline,))
            .await
            .map_err(|e| Error::target_mysql(e, "reading stopped tables"))?;
        Ok(rows.into_iter().map(|(d, t, reason)| (TableRef::new(d, t), reason)).collect())
    }

    async fn stop_table(&mut self, table: &TableRef, reason: &str) -> Result<()> {
        self.ensure_state().await?;
        self.begin().await?;
        let sql = format!(
            "INSERT INTO {}.{} (pipeline, source_db, source_table, reason, stopped_at) VALUES (?, ?, ?, ?, UTC_TIMESTAMP(6)) \
             ON DUPLICATE KEY UPDATE reason = VALUES(reason)",
            q(&self.settings.database),
            q(STOPPED_TABLE)
        );
        let params = (self.settings.pipeline.clone(), table.db.clone(), table.name.clone(), reason.to_string());
        self.data().await?.exec_drop(sql, params).await.map_err(|e| Error::target_mysql(e, "recording a stopped table"))
    }

    async fn commit(&mut self, offset: u64, position: &Position) -> Result<()> {
        self.begin().await?;
        let sql = format!(
            "INSERT INTO {}.{} (pipeline, stream, applied_offset, source_file, source_offset, updated_at) \
             VALUES (?, ?, ?, ?, ?, UTC_TIMESTAMP(6)) ON DUPLICATE KEY UPDATE \
             source_file = IF(VALUES(applied_offset) > applied_offset, VALUES(source_file), source_file), \
             source_offset = IF(VALUES(applied_offset) > applied_offset, VALUES(source_offset), source_offset), \
             updated_at = VALUES(updated_at), \
             applied_offset = GREATEST(applied_offset, VALUES(applied_offset))",
            q(&self.settings.database),
            q(STATE_TABLE)
        );
        let params = (
            self.settings.pipeline.clone(),
            self.settings.stream.clone(),
            offset,
            position.file.clone(),
            position.offset,
        );
        let conn = self.data().await?;
        conn.exec_drop(sql, params).await.map_err(|e| Error::target_mysql(e, "recording the applied offset"))?;
        conn.query_drop("COMMIT").await.map_err(|e| Error::target_mysql(e, "committing to the target"))?;
        self.in_txn = false;
        self.collect_garbage().await
    }

    async fn rollback(&mut self) -> Result<()> {
        if self.in_txn {
            self.in_txn = false;
            self.data().await?.query_drop("ROLLBACK").await.map_err(|e| Error::target_mysql(e, "ROLLBACK"))?;
        }
        Ok(())
    }

    async fn reset(&mut self) {
        self.in_txn = false;
        self.data = None;
        self.ddl = None;
        self.tables.clear();
        self.state_ready = false;
    }

    async fn ddl_barrier_mark(&mut self, barrier: &str, phase: BarrierPhase) -> Result<()> {
        self.ensure_state().await?;
        let sql = format!(
            "INSERT IGNORE INTO {}.{} (pipeline, barrier_hash, stream, phase, barrier, reached_at) \
             VALUES (?, ?, ?, ?, ?, UTC_TIMESTAMP(6))",
            q(&self.settings.database),
            q(BARRIER_TABLE)
        );
        let params = (
            self.settings.pipeline.clone(),
            barrier_hash(barrier).to_vec(),
            self.settings.stream.clone(),
            phase.as_str(),
            barrier.to_string(),
        );
        self.ddl_conn().await?.exec_drop(sql, params).await.map_err(|e| Error::target_mysql(e, "marking a DDL barrier"))
    }

    async fn ddl_barrier_count(&mut self, barrier: &str, phase: BarrierPhase) -> Result<u32> {
        self.ensure_state().await?;
        let sql = format!(
            "SELECT COUNT(*) FROM {}.{} WHERE pipeline = ? AND barrier_hash = ? AND phase = ?",
            q(&self.settings.database),
            q(BARRIER_TABLE)
        );
        let params = (self.settings.pipeline.clone(), barrier_hash(barrier).to_vec(), phase.as_str());
        let n: Option<u64> = self
            .ddl_conn()
            .await?
            .exec_first(sql, params)
            .await
            .map_err(|e| Error::target_mysql(e, "reading a DDL barrier"))?;
        Ok(n.unwrap_or(0) as u32)
    }
}

/// The error of a row the target refused: its table, key, column and value, and the fix.
fn rejected_row(schema: &TableSchema, row: &[Value], e: &Error) -> Error {
    let key: Vec<String> = if schema.has_primary_key() {
        schema
            .primary_key
            .iter()
            .filter_map(|&i| Some(format!("{} = {}", schema.columns.get(i)?.name, show(row.get(i)?))))
            .collect()
    } else {
        vec![format!("row hash {}", row_hash(row).iter().map(|b| format!("{b:02x}")).collect::<String>())]
    };
    // The server names the column in its message (`c`, 'c' or `db`.`t`.`c`).
    let column = schema.columns.iter().enumerate().find(|(_, c)| {
        let m = e.detail();
        m.contains(&format!("`{}`", c.name)) || m.contains(&format!("'{}'", c.name))
    });
    let value = match column {
        Some((i, c)) => format!(", column `{}` = {}", c.name, row.get(i).map_or_else(String::new, show)),
        None => String::new(),
    };
    Error::new(
        ErrorKind::ValueRejected,
        format!("the target refused the row of {} with key ({}){value}: {}", schema.table, key.join(", "), e.detail()),
    )
    .with_hint(format!(
        "fix the value in the source, or give the target column a type that holds it; then rebuild the table: \
         delete its row from {STOPPED_TABLE} and copy it again from a fresh snapshot"
    ))
    .with_table(schema.table.clone())
}

/// A value for a message, shortened.
fn show(v: &Value) -> String {
    let text = match v {
        Value::Null => "NULL".to_string(),
        Value::Int(i) => i.to_string(),
        Value::UInt(u) | Value::Bit(u) => u.to_string(),
        Value::Year(y) => y.to_string(),
        Value::Float(f) => f.to_string(),
        Value::Double(d) => d.to_string(),
        Value::Bytes(b) => format!("x'{}'", b.iter().take(32).map(|x| format!("{x:02x}")).collect::<String>()),
        Value::Decimal(s) | Value::Text(s) | Value::Date(s) | Value::DateTime(s) | Value::Time(s) | Value::Json(s) => {
            format!("'{}'", s.chars().take(64).collect::<String>())
        }
    };
    if text.chars().count() > 80 { format!("{}…", text.chars().take(80).collect::<String>()) } else { text }
}

/// The fixed-size key of a barrier (its text can be longer than an index allows).
fn barrier_hash(barrier: &str) -> [u8; 16] {
    let mut out = [0u8; 16];
    out.copy_from_slice(&blake3::hash(barrier.as_bytes()).as_bytes()[..16]);
    out
}

async fn table_exists(conn: &mut Conn, db: &str, table: &str) -> Result<bool> {
    let n: Option<u64> = conn
        .exec_first(
            "SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ?",
            (db, table),
        )
        .await
        .map_err(|e| Error::target_mysql(e, "looking up a target table"))?;
    Ok(n.unwrap_or(0) > 0)
}

/// Decode one `select_state` row: key values (as the target returns them), position, hash, deleted.
fn stored_row(mut row: Row, schema: &TableSchema) -> Result<(Vec<u8>, Stored)> {
    let n = schema.primary_key.len();
    let mut key = Vec::with_capacity(n);
    for (i, &ci) in schema.primary_key.iter().enumerate() {
        let v: MyValue = row.take(i).unwrap_or(MyValue::NULL);
        key.push(convert(v, &schema.columns[ci], Origin::Snapshot)?);
    }
    let mut encoded = Vec::new();
    encode_values(&key, &mut encoded);
    let bad = || {
        Error::new(
            ErrorKind::TargetRejected,
            format!("target table of {} has malformed binferry columns", schema.table),
        )
    };
    let pos = row.take::<Vec<u8>, _>(n).and_then(bytes16).ok_or_else(bad)?;
    let hash = row.take::<Vec<u8>, _>(n + 1).and_then(bytes16).ok_or_else(bad)?;
    let deleted = row.take::<i64, _>(n + 2).unwrap_or(0) != 0;
    Ok((encoded, Stored { pos, hash, deleted }))
}

fn bytes16(v: Vec<u8>) -> Option<[u8; 16]> {
    v.try_into().ok()
}

/// Tombstone key of an encoded primary key.
fn key_hash(encoded_key: &[u8]) -> [u8; 16] {
    let h = blake3::hash(encoded_key);
    let mut out = [0u8; 16];
    out.copy_from_slice(&h.as_bytes()[..16]);
    out
}

/// The binary-protocol parameter for `v`. Temporal values and decimals travel as their
/// exact text, which the server parses without rounding; text travels as utf8mb4 and is
/// converted by the server to the column's character set.
fn param(v: &Value) -> MyValue {
    match v {
        Value::Null => MyValue::NULL,
        Value::Int(i) => MyValue::Int(*i),
        Value::UInt(u) | Value::Bit(u) => MyValue::UInt(*u),
        Value::Year(y) => MyValue::UInt(*y as u64),
        Value::Float(f) => MyValue::Float(*f),
        Value::Double(d) => MyValue::Double(*d),
        Value::Decimal(s) | Value::Date(s) | Value::DateTime(s) | Value::Time(s) | Value::Text(s) | Value::Json(s) => {
            MyValue::Bytes(s.as_bytes().to_vec())
        }
        Value::Bytes(b) => MyValue::Bytes(b.clone()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floats_travel_bit_exact() {
        assert_eq!(param(&Value::Double(0.14231597459159417)), MyValue::Double(0.14231597459159417));
        assert_eq!(param(&Value::Float(-0.0)), MyValue::Float(-0.0));
        assert_eq!(param(&Value::Text("é".into())), MyValue::Bytes("é".as_bytes().to_vec()));
    }
}
