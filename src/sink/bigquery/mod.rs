//! The BigQuery sink: a changelog per table, applied by a scheduled MERGE.
//!
//! # Why a changelog and a MERGE
//!
//! BigQuery has no row-level upsert that a stream could call per change: DML statements are
//! jobs, each scanning tables and counted against quotas. So the sink splits the work:
//!
//! 1. **Append.** Every writer batch is appended with insertAll to `<table>__changes`, the
//!    table's changelog: the row image (the before image for deletes), its source position
//!    (`_binferry_pos`), hash, operation, stream and *batch label* (the first buffer offset
//!    the batch can hold: the previous commit's offset + 1). Each row has an insert id
//!    derived from stream, position and key, so a retried append is dropped by BigQuery's
//!    best-effort dedup, and harmless when it is not.
//! 2. **Commit.** After every append of the batch succeeded, one commit marker row
//!    (`_binferry_commits`: stream, offset, label, touched tables) is appended. The marker is
//!    the sink checkpoint: [`Sink::applied_offset`] is the highest marker of the stream. A
//!    crash before it leaves changelog rows without a marker; the writer then re-reads the
//!    same records and appends them again under the same label.
//! 3. **MERGE.** Every `merge_interval_secs` (and when the writer drains), one query job runs
//!    a script: a MERGE per table touched since the last run, then the new MERGE progress of
//!    each stream in `_binferry_state`. A MERGE takes the keys of the changelog rows with
//!    labels in (merged, committed] of each stream it serves, and for each such key its
//!    newest change in the whole changelog. It applies a change only if its position is
//!    newer than the row's, and writes nothing when the row hash is equal. The streams of one
//!    process (Kafka partitions) share that job and each table's MERGE (see `schedule.rs`).
//!
//! # Why a crash at any point neither loses nor doubles a change
//!
//! - *Before or during an append*: no marker, so the writer resumes before the batch and
//!   appends it again; duplicate changelog rows have equal positions and apply once.
//! - *Between the marker and the MERGE*: the marker is durable, the changes are in the
//!   changelog, and `_binferry_state` still has the older merged offset, so the next run
//!   (after restart: the tables named by the unmerged markers) merges them.
//! - *During the MERGEs, or after them and before the state*: each MERGE is atomic, and
//!   re-running one is harmless because it is guarded by position; the state moves only
//!   after all of them. (The script is not one transaction: tables reach a MERGE point one
//!   after the other, a few hundred milliseconds apart.)
//! - *Rows appended but not committed* (an orphan of a crashed batch) may reach the table
//!   early with a later MERGE: they are real source changes that the buffer still holds and
//!   will deliver again, and the position guard orders them.
//!
//! Deletes are remembered by the changelog itself (it is the tombstone store), so a replay
//! of an older insert cannot bring a deleted row back; TRUNCATE and DROP add table-wide
//! tombstones (`_binferry_truncates`). The changelog keeps rows as long as the buffer
//! retains records; older rows are removed hourly.
//!
//! # Cost
//!
//! Per process and interval: at most one query job (the script with all MERGEs, for every
//! partition the process applies), plus up to three per DDL statement of the source. With the
//! default 5 s interval that is at most 12 MERGE jobs per minute per process
//! (`binferry_bigquery_merges_total`; `binferry_bigquery_jobs_total` counts every job). Each MERGE scans
//! the changelog of its table, which is clustered by the primary key, and the final table.
//! Raise `merge_interval_secs` to trade latency for fewer jobs.

mod check;
mod hashes;
mod readback;
mod rebuild;
mod registry;
mod rows;
mod schedule;
mod sql;
mod state;
pub mod types;

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use tracing::{info, warn};

pub use hashes::{compares_in_ranges, table_hashes};
pub use readback::as_held;
pub use sql::{
    BARRIERS, CHANGELOG_SUFFIX, COMMITS, DELETED_AT, HASH, POS, STATE, STOPPED, TABLES, TRUNCATES, column_name,
};

use super::{ApplyCounts, BatchCounts, Sink, dropped_name};
use crate::bigquery_api::{Api, Auth, Side};
use crate::config::{BufferKind, Config, DropMode};
use crate::error::{Error, ErrorKind, Result};
use crate::event::batch::{Batch, RowOp};
use crate::event::{SchemaChange, TableChange};
use crate::position::Position;
use crate::schema::{TableRef, TableSchema};
use crate::table_options::{DeleteMode, TableRules};
use crate::telemetry::Stats;
pub use check::check;
pub use registry::{read_status, run_ended, run_started};
use rows::{RowContext, changelog_row, now_text};
use schedule::{MergeSchedule, When};
use sql::{Names, TableShape, bytes, string};
use types::{BqType, bigquery_type, widens_to};

/// The longest table name the target takes, in characters (BigQuery table names).
const MAX_NAME_CHARS: usize = 1024;
/// Rows per insertAll request (the limit is 50,000). Each request costs a round trip and,
/// on the emulator, ~0.15 s of overhead: 500-row requests ran at 2.2k rows/s there, 5,000-row
/// ones at 7.2k rows/s (BENCHMARKS.md).
const ROWS_PER_INSERT: usize = 5_000;
/// Approximate bytes of JSON per insertAll request (the limit is 10 MB).
const BYTES_PER_INSERT: usize = 8 * 1024 * 1024;
/// The stream id of the embedded buffer.
const EMBEDDED_STREAM: &str = "embedded";

/// Where and how to write.
#[derive(Clone)]
pub struct BigQuerySinkSettings {
    auth: Auth,
    /// Project id.
    pub project: String,
    /// Dataset id.
    pub dataset: String,
    location: Option<String>,
    table_template: String,
    timeout: Duration,
    rules: TableRules,
    retention: Duration,
    on_drop: DropMode,
    pipeline: String,
    stream: String,
    /// Shared by every sink built from these settings: one MERGE job per interval for the
    /// whole process (`schedule.rs`).
    schedule: Arc<MergeSchedule>,
    /// Where jobs, MERGE runs and changelog rows are counted (the pipeline's, once
    /// [`Self::with_stats`] is called).
    stats: Arc<Stats>,
    /// The dataset and bookkeeping tables exist: created once per process, not by each of
    /// its sinks at the same moment (the emulator fails concurrent CREATE TABLEs of one table).
    meta_ready: Arc<tokio::sync::OnceCell<()>>,
    /// Held while a stream of this process creates or extends a table: the partitions of
    /// one topic meet the same new table at once, and BigQuery (and more so the emulator's
    /// catalog) fails concurrent DDL of one table with conflicts that would only be retried.
    ddl: Arc<tokio::sync::Mutex<()>>,
}

impl BigQuerySinkSettings {
    /// Settings from `[sink.bigquery]`.
    pub fn from_config(config: &Config) -> Result<Self> {
        let b = config.sink.bigquery.as_ref().ok_or_else(|| Error::new(ErrorKind::Config, "sink.bigquery: missing"))?;
        let auth = match (&b.endpoint, &b.credentials_file) {
            (Some(url), _) => Auth::Emulator(url.clone()),
            (None, Some(f)) => Auth::KeyFile(f.clone()),
            (None, None) => Auth::ApplicationDefault,
        };
        Ok(BigQuerySinkSettings {
            auth,
            project: b.project.clone(),
            dataset: b.dataset.clone(),
            location: b.location.clone(),
            table_template: b.table_name.clone(),
            timeout: Duration::from_secs(b.request_timeout_secs),
            rules: config.table_rules()?,
            retention: Duration::from_secs(match (&config.buffer.kind, &config.buffer.kafka) {
                (BufferKind::Kafka, Some(k)) => k.retention_secs,
                _ => config.buffer.embedded.retention_max_age_secs,
            }),
            on_drop: b.on_source_drop,
            pipeline: config.pipeline.name.clone(),
            stream: EMBEDDED_STREAM.into(),
            schedule: Arc::new(MergeSchedule::new(Duration::from_secs(b.merge_interval_secs))),
            meta_ready: Arc::new(tokio::sync::OnceCell::new()),
            stats: Arc::new(Stats::default()),
            ddl: Arc::new(tokio::sync::Mutex::new(())),
        })
    }

    /// The same target, applying another buffer stream (a Kafka partition, a replay).
    pub fn for_stream(&self, stream: impl Into<String>) -> Self {
        BigQuerySinkSettings { stream: stream.into(), ..self.clone() }
    }

    /// Count jobs, MERGE runs and changelog rows into `stats` (all streams made from these
    /// settings afterwards share it).
    pub fn with_stats(self, stats: Arc<Stats>) -> Self {
        BigQuerySinkSettings { stats, ..self }
    }

    /// The BigQuery table name of a source table: the template, with characters BigQuery
    /// does not allow in names replaced by `_`.
    pub fn target_table(&self, t: &TableRef) -> String {
        self.table_template
            .replace("{db}", &t.db)
            .replace("{table}", &t.name)
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() || c == '_' { c } else { '_' })
            .collect()
    }

    fn names(&self) -> Names<'_> {
        Names { project: &self.project, dataset: &self.dataset }
    }

    /// This stream's id in the bookkeeping tables.
    fn stream_id(&self) -> String {
        format!("{}/{}", self.pipeline, self.stream)
    }
}

/// A target table binferry manages.
#[derive(Clone, Debug)]
struct Managed {
    source: TableRef,
    shape: TableShape,
}

/// The BigQuery sink. See the module docs for the protocol.
pub struct BigQuerySink {
    settings: BigQuerySinkSettings,
    api: Option<Api>,
    /// Bookkeeping tables exist and the stream's state is loaded.
    ready: bool,
    /// Target table → source and shape, as in `_binferry_tables`.
    tables: HashMap<String, Managed>,
    /// Target table → schema version last checked.
    checked: HashMap<String, u64>,
    /// Highest commit marker of the stream.
    committed: Option<u64>,
    /// Tables appended to since the last commit.
    open: BTreeSet<String>,
    /// Stops to record with the next commit.
    stops: Vec<(TableRef, String)>,
    /// (target table, column) dropped at the source and already warned about.
    warned_dropped: HashSet<(String, String)>,
    repair: bool,
    /// Target tables rebuilt aside, as `_binferry_rebuilds` records them (`rebuild.rs`).
    rebuilding: crate::sink::rebuild::Rebuilding,
}

impl BigQuerySink {
    /// A sink that connects lazily.
    pub fn new(settings: BigQuerySinkSettings) -> Self {
        BigQuerySink {
            settings,
            api: None,
            ready: false,
            tables: HashMap::new(),
            checked: HashMap::new(),
            committed: None,
            open: BTreeSet::new(),
            stops: Vec::new(),
            warned_dropped: HashSet::new(),
            repair: false,
            rebuilding: Default::default(),
        }
    }

    /// The batch label of rows appended now: the first buffer offset after the last commit.
    fn label(&self) -> i64 {
        self.committed.map_or(0, |o| o as i64 + 1)
    }

    /// Replay mode: MERGEs also rewrite rows at equal positions, which repairs rows changed
    /// by hand, and never rewrite newer rows. Give a replay its own stream id.
    pub fn overwrite_equal_positions(mut self, on: bool) -> Self {
        self.repair = on;
        self
    }

    async fn api(&mut self) -> Result<Api> {
        if self.api.is_none() {
            let s = &self.settings;
            self.api = Some(
                Api::connect(Side::Target, &s.auth, &s.project, s.location.as_deref(), s.timeout, Arc::clone(&s.stats))
                    .await?,
            );
        }
        self.api.clone().ok_or_else(|| Error::internal("no BigQuery client"))
    }

    async fn query(&mut self, sql: &str) -> Result<Vec<gcp_bigquery_client::model::table_row::TableRow>> {
        let api = self.api().await?;
        api.query(sql).await
    }

    /// Merge the committed changelog rows: through the process's schedule, which runs one
    /// job for the pending work of every stream.
    async fn merge(&mut self, when: When) -> Result<()> {
        let api = self.api().await?;
        self.settings.schedule.run(&api, &self.settings.names(), when).await
    }

    /// The shape a source schema asks for.
    fn shape_of(&self, schema: &TableSchema) -> TableShape {
        TableShape {
            columns: schema.columns.iter().map(|c| (sql::column_name(&c.name), bigquery_type(&c.ty))).collect(),
            primary_key: schema
                .primary_key
                .iter()
                .filter_map(|&i| schema.columns.get(i))
                .map(|c| sql::column_name(&c.name))
                .collect(),
            soft: self.settings.rules.options(&schema.table).deletes == DeleteMode::Soft,
        }
    }

    /// Statements that bring `have` to hold `want` in place, and the resulting shape.
    fn evolve(name: &str, have: &TableShape, want: &TableShape, n: &Names<'_>) -> Result<(Vec<String>, TableShape)> {
        if have.primary_key != want.primary_key {
            return Err(Error::new(
                ErrorKind::Unsupported,
                format!(
                    "{name}: the primary key changed from ({}) to ({}); BigQuery rows are keyed by it",
                    have.primary_key.join(", "),
                    want.primary_key.join(", ")
                ),
            )
            .with_hint("resync the table: drop the BigQuery table and its __changes table, then `binferry replay`"));
        }
        let mut out = Vec::new();
        let mut next = have.clone();
        for (col, ty) in &want.columns {
            match next.columns.iter_mut().find(|(c, _)| c == col) {
                None => {
                    for t in [n.table(name), n.changelog(name)] {
                        out.push(format!("ALTER TABLE {t} ADD COLUMN IF NOT EXISTS {} {ty}", sql::ident(col)));
                    }
                    next.columns.push((col.clone(), ty.clone()));
                }
                Some((_, old)) if old == ty || widens_to(ty, old) => {}
                Some((_, old)) if widens_to(old, ty) => {
                    for t in [n.table(name), n.changelog(name)] {
                        out.push(format!("ALTER TABLE {t} ALTER COLUMN {} SET DATA TYPE {ty}", sql::ident(col)));
                    }
                    *old = ty.clone();
                }
                Some((_, old)) => {
                    return Err(Error::new(
                        ErrorKind::Unsupported,
                        format!("{name}.{col}: BigQuery cannot change {old} to {ty} in place"),
                    )
                    .with_hint("resync the table: drop the BigQuery table and its __changes table, then replay"));
                }
            }
        }
        if want.soft && !have.soft {
            out.push(format!("ALTER TABLE {} ADD COLUMN IF NOT EXISTS {DELETED_AT} TIMESTAMP", n.table(name)));
            next.soft = true;
        }
        Ok((out, next))
    }
}

impl Drop for BigQuerySink {
    fn drop(&mut self) {
        // A Kafka partition that moved away: its new owner merges what is left, from the
        // durable markers, and this process must not merge that stream any more.
        self.settings.schedule.unregister(&self.settings.stream_id());
    }
}

impl Sink for BigQuerySink {
    async fn applied_offset(&mut self) -> Result<Option<u64>> {
        self.init().await?;
        Ok(self.committed)
    }

    async fn ensure_table(&mut self, schema: &TableSchema) -> Result<()> {
        self.init().await?;
        // A table rebuilt aside: its shadow is created and extended.
        let name = self.rebuilding.stored_in(&self.settings.target_table(&schema.table));
        if self.checked.get(&name) == Some(&schema.version()) {
            return Ok(());
        }
        if !schema.has_primary_key() {
            return Err(Error::new(
                ErrorKind::Unsupported,
                format!("{}: no primary key; the BigQuery target keys rows by it", schema.table),
            )
            .with_hint("add a primary key to the source table, exclude it from source.include, or replicate it to a MySQL target"));
        }
        let want = self.shape_of(schema);
        let n = self.settings.names();
        let (statements, shape) = match self.tables.get(&name) {
            Some(m) if m.source != schema.table => {
                return Err(Error::new(
                    ErrorKind::Unsupported,
                    format!("{}: target table {name} already replicates {}", schema.table, m.source),
                )
                .with_hint(
                    "make sink.bigquery.table_name give each source table its own name, e.g. \"{db}_{table}\"",
                ));
            }
            Some(m) => {
                for (col, _) in &m.shape.columns {
                    let dropped = !want.columns.iter().any(|(c, _)| c == col);
                    if dropped && self.warned_dropped.insert((name.clone(), col.clone())) {
                        warn!(table = %name, column = %col, "column is no longer in the source; kept in the target (NULL for new rows)");
                    }
                }
                Self::evolve(&name, &m.shape, &want, &n)?
            }
            None => {
                let opts = self.settings.rules.options(&schema.table);
                (vec![n.create_tables(&name, &want, opts.partition_by.as_deref(), &opts.cluster_by)], want)
            }
        };
        if !statements.is_empty() {
            let mut all = statements;
            all.push(n.set_shape(&name, &schema.table.db, &schema.table.name, &shape));
            let ddl = Arc::clone(&self.settings.ddl);
            let _one_at_a_time = ddl.lock().await;
            self.query(&all.join(";\n")).await?;
            info!(table = %schema.table, target = %name, "BigQuery table created or extended");
            self.tables.insert(name.clone(), Managed { source: schema.table.clone(), shape });
        }
        self.checked.insert(name, schema.version());
        Ok(())
    }

    async fn apply(&mut self, batch: &Batch) -> Result<BatchCounts> {
        self.init().await?;
        let api = self.api().await?;
        let stream = self.settings.stream_id();
        let appended_at = now_text();
        let ctx = RowContext { stream: &stream, batch: self.label(), appended_at: &appended_at };
        let mut out = BatchCounts::default();
        for tb in batch.tables() {
            let mut counts = ApplyCounts::default();
            if !tb.keyless.is_empty() {
                return Err(Error::new(ErrorKind::Unsupported, format!("{}: no primary key", tb.schema.table)));
            }
            let name = self.rebuilding.stored_in(&self.settings.target_table(&tb.schema.table));
            let shape = self
                .tables
                .get(&name)
                .map(|m| &m.shape)
                .ok_or_else(|| Error::internal(format!("{name}: rows before its table was ensured")))?;
            let types: Vec<BqType> = tb
                .schema
                .columns
                .iter()
                .map(|c| {
                    let column = sql::column_name(&c.name);
                    shape
                        .columns
                        .iter()
                        .find(|(n, _)| n == &column)
                        .map_or_else(|| bigquery_type(&c.ty), |(_, t)| t.clone())
                })
                .collect();
            let mut chunk = Vec::with_capacity(ROWS_PER_INSERT.min(tb.ops.len()));
            let mut chunk_bytes = 0;
            let changelog = format!("{name}{CHANGELOG_SUFFIX}");
            let names_len: usize = tb.schema.columns.iter().map(|c| c.name.len() + 4).sum();
            // A value BigQuery cannot hold stops this table, not the pipeline.
            let scoped =
                |e: Error| if e.kind() == ErrorKind::ValueRejected { e.with_table(tb.schema.table.clone()) } else { e };
            for op in tb.ops.values() {
                let row = changelog_row(op, &tb.schema, &types, &ctx).map_err(scoped)?;
                // JSON size, roughly: values (bytes grow by a third in base64), names, quoting.
                let values = match op {
                    RowOp::Upsert { row, .. } => row,
                    RowOp::Delete { before, .. } => before,
                };
                chunk_bytes += 300 + values.iter().map(|v| v.approx_bytes() * 4 / 3).sum::<usize>() + names_len;
                chunk.push(row);
                if chunk.len() >= ROWS_PER_INSERT || chunk_bytes >= BYTES_PER_INSERT {
                    counts.written += chunk.len() as u64;
                    api.insert_all(&self.settings.dataset, &changelog, std::mem::take(&mut chunk))
                        .await
                        .map_err(scoped)?;
                    chunk_bytes = 0;
                }
            }
            counts.written += chunk.len() as u64;
            api.insert_all(&self.settings.dataset, &changelog, chunk).await.map_err(scoped)?;
            self.open.insert(name);
            out.tables.push((tb.schema.table.clone(), counts));
        }
        self.settings.stats.record_bigquery_changelog_rows(out.total().written);
        Ok(out)
    }

    /// One arm per kind of statement, each a short list of jobs with its changelog
    /// tombstone: kept together so the idempotence of each is visible next to the others.
    async fn apply_schema_change(&mut self, change: &SchemaChange) -> Result<()> {
        self.init().await?;
        // Rows already committed reach the table under its current name and columns first.
        self.merge(When::Now).await?;
        // Another stream may have applied this statement already (Kafka key partitions each
        // carry a copy): decide from the recorded shapes, not from this sink's memory.
        let api = self.api().await?;
        self.load_tables(&api).await?;
        let name = self.settings.target_table(&change.table);
        // The rebuild's own records, and what other statements do to a table rebuilt aside.
        let mut aside_dropped = false;
        match &change.change {
            TableChange::Rebuild => {
                self.start_rebuild(&change.table, &name, change.timestamp).await?;
                self.checked.clear();
                return Ok(());
            }
            TableChange::RebuildDone => {
                self.finish_rebuild(&api, &name).await?;
                self.checked.clear();
                return Ok(());
            }
            // The partly copied table takes the name first, as on a MySQL target.
            TableChange::RenameTo(_) => self.finish_rebuild(&api, &name).await?,
            // The shadow goes; the stale copy is then what the source dropped.
            TableChange::Drop => aside_dropped = self.abandon_rebuild(&api, &name).await?,
            // Every stream applies the rebuild's records itself (they are DDL barriers), so
            // this sink's view of where the table's rows go is current: no query.
            _ => {}
        }
        let n = self.settings.names();
        // TRUNCATE and column renames apply to the shadow of a table rebuilt aside.
        let stored = self.rebuilding.stored_in(&name);
        let pos = bytes(&change.position.sort_key()?);
        let tombstone = format!(
            "INSERT INTO {} (table_name, pos, created_at) VALUES ({}, {pos}, CURRENT_TIMESTAMP())",
            n.table(TRUNCATES),
            string(&stored)
        );
        let managed = self.tables.get(&stored).cloned();
        let mut statements = vec![];
        match (&change.change, managed) {
            (TableChange::Truncate, m) => {
                statements.push(tombstone);
                if let Some(m) = m {
                    statements.push(n.sweep(&stored, &m.shape, &pos));
                }
            }
            (TableChange::Drop, m) if m.is_some() || aside_dropped => {
                match self.settings.on_drop {
                    DropMode::Keep => {
                        statements.push(format!(
                            "ALTER TABLE IF EXISTS {} RENAME TO {}",
                            n.table(&name),
                            sql::ident(&dropped_name(&name, change, MAX_NAME_CHARS))
                        ));
                    }
                    DropMode::Drop => statements.push(format!("DROP TABLE IF EXISTS {}", n.table(&name))),
                }
                statements.push(format!("DROP TABLE IF EXISTS {}", n.changelog(&name)));
                statements.push(format!("DELETE FROM {} WHERE table_name = {}", n.table(TABLES), string(&name)));
                statements.push(tombstone);
                self.tables.remove(&name);
            }
            (TableChange::Drop, _) => statements.push(tombstone),
            (TableChange::RenameTo(to), Some(m)) => {
                let new = self.settings.target_table(to);
                if self.tables.contains_key(&new) {
                    return Err(Error::new(
                        ErrorKind::Unsupported,
                        format!("{} renamed to {to}, but BigQuery table {new} already exists", change.table),
                    )
                    .with_hint("drop the BigQuery table of the new name, then resync"));
                }
                statements.push(format!("ALTER TABLE IF EXISTS {} RENAME TO {}", n.table(&name), sql::ident(&new)));
                statements.push(format!(
                    "ALTER TABLE IF EXISTS {} RENAME TO {}",
                    n.changelog(&name),
                    sql::ident(&format!("{new}{CHANGELOG_SUFFIX}"))
                ));
                statements.push(format!("DELETE FROM {} WHERE table_name = {}", n.table(TABLES), string(&name)));
                statements.push(n.set_shape(&new, &to.db, &to.name, &m.shape));
                self.tables.remove(&name);
                self.tables.insert(new, Managed { source: to.clone(), shape: m.shape });
            }
            // The writer records stops itself (`TableState::stop_table`); a rebuild's records
            // were handled above.
            (TableChange::RenameTo(_), None)
            | (TableChange::RenameColumns(_), None)
            | (TableChange::Stop { .. }, _)
            | (TableChange::Rebuild | TableChange::RebuildDone, _) => {}
            (TableChange::RenameColumns(pairs), Some(mut m)) => {
                for (from, to) in pairs {
                    let (from, to) = (&sql::column_name(from), &sql::column_name(to));
                    let Some(col) = m.shape.columns.iter_mut().find(|(c, _)| c == from) else { continue };
                    col.0 = to.clone();
                    for k in m.shape.primary_key.iter_mut().filter(|k| *k == from) {
                        *k = to.clone();
                    }
                    for t in [n.table(&stored), n.changelog(&stored)] {
                        statements.push(format!(
                            "ALTER TABLE {t} RENAME COLUMN {} TO {}",
                            sql::ident(from),
                            sql::ident(to)
                        ));
                    }
                }
                statements.push(n.set_shape(&stored, &m.source.db, &m.source.name, &m.shape));
                self.tables.insert(stored.clone(), m);
            }
        }
        self.checked.clear();
        if !statements.is_empty() {
            self.query(&statements.join(";\n")).await?;
        }
        Ok(())
    }

    async fn commit(&mut self, offset: u64, position: &Position) -> Result<()> {
        self.init().await?;
        self.record_stops().await?;
        let api = self.api().await?;
        let stream = self.settings.stream_id();
        let tables: Vec<&String> = self.open.iter().collect();
        let marker = serde_json::json!({
            "stream": stream,
            "offset": offset,
            "batch": self.label(),
            "position": position.to_string(),
            "tables": serde_json::to_string(&tables).unwrap_or_default(),
            "committed_at": now_text(),
        });
        let id = blake3::hash(format!("{stream}\0{offset}").as_bytes()).to_hex()[..32].to_string();
        api.insert_all(&self.settings.dataset, COMMITS, vec![(id, marker)]).await?;
        self.committed = Some(offset);
        let open = std::mem::take(&mut self.open);
        let tables = open.iter().filter_map(|t| self.tables.get_key_value(t).map(|(k, m)| (k, &m.shape)));
        self.settings.schedule.offer(&stream, offset as i64, &position.to_string(), tables);
        crate::failpoint::hit("bigquery-after-commit");
        self.merge(When::Due).await
    }

    async fn rollback(&mut self) -> Result<()> {
        // Appended rows stay in the changelog without a marker: the writer appends them again.
        self.open.clear();
        self.stops.clear();
        Ok(())
    }

    async fn idle(&mut self, draining: bool) -> Result<()> {
        if !self.ready {
            return Ok(());
        }
        if draining {
            if self.settings.schedule.pending(&self.settings.stream_id()) {
                self.merge(When::Now).await?;
            }
        } else {
            self.merge(When::Due).await?;
            self.collect_garbage().await?;
        }
        Ok(())
    }

    async fn reset(&mut self) {
        // Reload the stream's state from BigQuery: a failure may have left any step undone.
        self.ready = false;
        self.open.clear();
        self.stops.clear();
    }
}
