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
//! as the rows ([`Sink`] contract), except for a batch of rows a table copy read:
//! those are applied in parts on `copy_connections` connections of their own,
//! each part committed before the offset (the contract's exception). Tables are created on a separate
//! connection, because DDL would implicitly commit the open data transaction.
//! Values travel as binary-protocol parameters: floats keep their exact bits
//! and nothing needs escaping.

mod check;
mod hashes;
mod plan;
mod rebuild;
mod registry;
mod rows;
mod state;
mod statements;

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use mysql_async::prelude::Queryable;
use mysql_async::{Conn, OptsBuilder};
use tracing::{info, warn};

pub use check::check;
pub use hashes::{HashOf, table_hashes};
pub use registry::{read_status, run_ended, run_started};
pub use statements::{
    BARRIER_TABLE, DELETED_COLUMN, DUP_COLUMN, HASH_COLUMN, POS_COLUMN, REBUILDS_TABLE, RUNS_TABLE, STATE_TABLE,
    STOPPED_TABLE, TOMBSTONE_TABLE,
};

use super::{ApplyCounts, BatchCounts, Sink, dropped_name};
use crate::config::{Config, DEFAULT_TARGET_PASSWORD_ENV, DropMode, resolve_password};
use crate::connection::{Endpoint, Role};
use crate::error::{Error, ErrorKind, Result};
use crate::event::batch::{Batch, RowOp};
use crate::event::{SchemaChange, TableChange};
use crate::position::Position;
use crate::schema::{TableRef, TableSchema};
use crate::table_options::{DeleteMode, TableRules};
use plan::{Alter, TargetColumn, column_ddl, plan_alters};
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
/// The longest table name the target takes, in characters (MySQL names).
const MAX_NAME_CHARS: usize = 64;
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
    /// Connections that apply a table copy's rows at once (`MysqlSink::apply_copied`).
    copy_connections: usize,
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
            copy_connections: m.copy_connections,
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
    /// Connections for copied rows, opened on first use.
    copy_conns: Vec<Conn>,
    in_txn: bool,
    /// Table written to (a target table, or its shadow) → the schema version it was last
    /// checked against.
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
    /// Target tables rebuilt aside by a resync (`rebuild`), loaded with the state tables.
    rebuilding: crate::sink::rebuild::Rebuilding,
}

impl MysqlSink {
    /// A sink that connects lazily.
    pub fn new(settings: MysqlSinkSettings) -> Self {
        MysqlSink {
            settings,
            data: None,
            ddl: None,
            copy_conns: Vec::new(),
            in_txn: false,
            tables: HashMap::new(),
            owners: HashMap::new(),
            state_ready: false,
            overwrite_equal: false,
            last_gc: None,
            warned_dropped: HashSet::new(),
            mariadb: true,
            rebuilding: Default::default(),
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
            let mut conn = self.settings.connect().await?;
            // Each statement reads the latest committed rows: a transaction that reaches a
            // table created meanwhile (a round or source transaction whose later tables are new
            // to the target, created on the DDL connection) would otherwise fail on MariaDB
            // with "Table definition has changed" (1412), its read view being older than the
            // table. Nothing here needs a snapshot across statements: every write carries its
            // own position guard. It also takes no gap locks against other streams' writers.
            conn.query_drop("SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED")
                .await
                .map_err(|e| Error::target_mysql(e, "setting up the data connection"))?;
            self.data = Some(conn);
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

    /// `name` exists again although its DROP or RENAME (at `pos`) was applied before: a replay
    /// of older changes re-created it (a table is made ready before its rows turn out stale).
    /// Rows older than the statement belong to the table that moved away; when nothing newer
    /// is left the table is only that ghost and goes, otherwise (the source re-created the
    /// name later) only the older rows go.
    async fn clear_replayed(&mut self, db: &str, name: &str, pos: [u8; 16]) -> Result<()> {
        let full = format!("{}.{}", q(db), q(name));
        let newer: Option<u8> = self
            .ddl_conn()
            .await?
            .exec_first(format!("SELECT 1 FROM {full} WHERE {POS_COLUMN} >= ? LIMIT 1"), (pos.to_vec(),))
            .await
            .map_err(|e| Error::target_mysql(e, format!("reading `{name}`")))?;
        if newer.is_none() {
            self.ddl(&format!("DROP TABLE {full}")).await?;
            info!(table = %name, "table re-created by a replay of changes older than its drop or rename removed");
        } else {
            self.ddl_conn()
                .await?
                .exec_drop(format!("DELETE FROM {full} WHERE {POS_COLUMN} < ?"), (pos.to_vec(),))
                .await
                .map_err(|e| Error::target_mysql(e, format!("clearing `{name}`")))?;
        }
        Ok(())
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

    async fn begin(&mut self) -> Result<()> {
        if !self.in_txn {
            self.data().await?.query_drop("START TRANSACTION").await.map_err(|e| Error::target_mysql(e, "BEGIN"))?;
            self.in_txn = true;
        }
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

    /// Long because it is the whole sequence of one table's DDL: ownership check, catalog
    /// read, the pure plan ([`plan_alters`]), then the statements the plan lists, in order.
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
        self.ensure_state().await?;
        // Rows of a table rebuilt aside go to its shadow, which gets the shape.
        let (logical, name) = (name.clone(), self.rebuilding.stored_in(&name));
        let st = Statements::new(&self.settings.database, &name, schema, soft);
        let system = st.system_columns();
        let version = schema.version();
        if self.tables.get(&name) == Some(&version) {
            return Ok(());
        }
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
            self.owners.insert(logical, schema.table.clone());
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
        self.owners.insert(logical, schema.table.clone());
        self.tables.insert(name, version);
        Ok(())
    }

    async fn apply(&mut self, batch: &Batch) -> Result<BatchCounts> {
        self.begin().await?;
        let mut out = BatchCounts::default();
        // Only a batch of nothing but copied rows is applied apart (`apply_copied`): a
        // source transaction in it must not become visible after them.
        let apart = batch
            .tables()
            .all(|t| t.keyless.is_empty() && t.ops.values().all(|op| matches!(op, RowOp::Upsert { copied: true, .. })));
        for t in batch.tables() {
            let name = self.settings.target_table(&t.schema.table);
            let mut counts = ApplyCounts::default();
            if t.schema.has_primary_key() {
                self.apply_keyed(t, &name, apart, &mut counts).await?;
            } else {
                self.apply_keyless(t, &name, &mut counts).await?;
            }
            out.tables.push((t.schema.table.clone(), counts));
        }
        Ok(out)
    }

    /// One arm per kind of statement (truncate, drop, renames, column renames), each a few
    /// target statements with its tombstone: kept together so the idempotence of each is
    /// visible next to the others.
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
                // A table rebuilt aside: its shadow (the stale copy takes no rows).
                let stored = self.rebuilding.stored_in(&name);
                self.begin().await?;
                let conn = self.data().await?;
                if table_exists(conn, &db, &stored).await? {
                    let sql = format!("DELETE FROM {}.{} WHERE {POS_COLUMN} < ?", q(&db), q(&stored));
                    conn.exec_drop(sql, (pos.to_vec(),))
                        .await
                        .map_err(|e| Error::target_mysql(e, format!("emptying `{stored}`")))?;
                }
                self.table_tombstone(&change.table, &name, pos).await?;
                info!(table = %name, "rows older than the TRUNCATE (or than a fresh snapshot copy) removed");
            }
            TableChange::Drop => {
                // A shadow being filled goes; the stale copy is what the table was.
                self.abandon_rebuild(&name).await?;
                let kept = dropped_name(&name, change, MAX_NAME_CHARS);
                let conn = self.ddl_conn().await?;
                let present = table_exists(conn, &db, &name).await?;
                // Idempotent: a replayed or re-applied drop whose marked table exists is done.
                let already = table_exists(conn, &db, &kept).await?;
                if present && already {
                    self.clear_replayed(&db, &name, pos).await?;
                } else if present {
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
                // The rebuilt table is put in place first, even if its copy is not complete:
                // the copy goes on under the new name.
                self.finish_rebuild(&name).await?;
                let new = self.settings.target_table(to);
                let conn = self.ddl_conn().await?;
                let (from_exists, to_exists) =
                    (table_exists(conn, &db, &name).await?, table_exists(conn, &db, &new).await?);
                // Idempotent: after a crash the rename may already be done.
                if from_exists && !to_exists {
                    self.ddl(&format!("RENAME TABLE {full} TO {}.{}", q(&db), q(&new))).await?;
                    info!(from = %name, to = %new, "target table renamed");
                } else if from_exists {
                    self.clear_replayed(&db, &name, pos).await?;
                }
                // Replayed changes from before the rename must not refill the old name.
                self.table_tombstone(&change.table, &name, pos).await?;
                self.tables.remove(&name);
                self.owners.remove(&name);
                self.tables.remove(&new);
            }
            // The writer records stops itself (`TableState::stop_table`).
            TableChange::Stop { .. } => {}
            // Only a stopped table is rebuilt, aside (`rebuild`); for any other this refreshes
            // what the sink knows (another stream may have started it).
            TableChange::Rebuild => self.start_rebuild(&change.table, &name, change.timestamp).await?,
            // A name taken by hand stops this table only, with the fix.
            TableChange::RebuildDone => {
                self.finish_rebuild(&name).await.map_err(|e| e.with_table(change.table.clone()))?
            }
            TableChange::RenameColumns(renames) => {
                let name = self.rebuilding.stored_in(&name);
                let full = format!("{}.{}", q(&db), q(&name));
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
        self.copy_conns.clear();
        self.tables.clear();
        self.state_ready = false;
    }
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

/// Whether the target server is MariaDB (it has the UUID and INET types, and JSON is its
/// LONGTEXT), not MySQL.
async fn is_mariadb(conn: &mut Conn) -> Result<bool> {
    let version: Option<String> = conn
        .query_first("SELECT VERSION()")
        .await
        .map_err(|e| Error::target_mysql(e, "reading the target's version"))?;
    Ok(version.is_some_and(|v| v.to_ascii_lowercase().contains("mariadb")))
}
