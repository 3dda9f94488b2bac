//! The configured target: one type over the sinks, so the pipeline, Kafka workers and
//! replay are written once.

use super::bigquery::{BigQuerySink, BigQuerySinkSettings};
use super::mysql::{MysqlSink, MysqlSinkSettings};
use super::{BarrierPhase, BatchCounts, Sink, TableState};
use crate::config::{Config, SinkKind};
use crate::error::Result;
use crate::event::SchemaChange;
use crate::event::batch::Batch;
use crate::position::Position;
use crate::schema::{TableRef, TableSchema};
use crate::status::{RunOutcome, TargetState};

/// Settings of the configured sink. One per process, cloned per stream: the size difference
/// of the variants does not matter.
#[derive(Clone)]
#[allow(clippy::large_enum_variant)]
pub enum TargetSettings {
    /// `sink.kind = "mysql"`.
    Mysql(MysqlSinkSettings),
    /// `sink.kind = "bigquery"`.
    BigQuery(BigQuerySinkSettings),
}

impl TargetSettings {
    /// The sink `config` selects.
    pub fn from_config(config: &Config) -> Result<Self> {
        Ok(match config.sink.kind {
            SinkKind::Mysql => TargetSettings::Mysql(MysqlSinkSettings::from_config(config)?),
            SinkKind::BigQuery => TargetSettings::BigQuery(BigQuerySinkSettings::from_config(config)?),
        })
    }

    /// Count what the sinks do into the pipeline's `stats` (the MySQL sink's counts are
    /// recorded by the writer; only BigQuery has jobs of its own).
    pub fn with_stats(self, stats: std::sync::Arc<crate::telemetry::Stats>) -> Self {
        match self {
            TargetSettings::Mysql(s) => TargetSettings::Mysql(s),
            TargetSettings::BigQuery(s) => TargetSettings::BigQuery(s.with_stats(stats)),
        }
    }

    /// The same target, applying another buffer stream.
    pub fn for_stream(&self, stream: impl Into<String>) -> Self {
        match self {
            TargetSettings::Mysql(s) => TargetSettings::Mysql(s.for_stream(stream)),
            TargetSettings::BigQuery(s) => TargetSettings::BigQuery(s.for_stream(stream)),
        }
    }

    /// The sink of the ordinary pipeline.
    pub fn sink(&self) -> Target {
        match self {
            TargetSettings::Mysql(s) => Target::Mysql(MysqlSink::new(s.clone())),
            TargetSettings::BigQuery(s) => Target::BigQuery(BigQuerySink::new(s.clone())),
        }
    }

    /// The sink of a replay of `stream`: rewrites rows at equal positions (repairs), never
    /// newer ones. BigQuery replays get a stream id of their own, so that their MERGE
    /// progress starts at the replay's first offset rather than the pipeline's.
    pub fn replay_sink(&self, stream: &str) -> Target {
        match self {
            TargetSettings::Mysql(s) => Target::Mysql(MysqlSink::new(s.clone()).overwrite_equal_positions(true)),
            TargetSettings::BigQuery(s) => {
                let ms =
                    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis());
                let s = s.for_stream(format!("replay-{ms}/{stream}"));
                Target::BigQuery(BigQuerySink::new(s).overwrite_equal_positions(true))
            }
        }
    }
}

/// A run's row in the target's run registry (`_binferry_runs`).
#[derive(Clone, Debug)]
pub enum RunId {
    /// The MySQL registry's `run_id`.
    Mysql(u64),
    /// The BigQuery registry's `run_id`.
    BigQuery(String),
}

impl TargetSettings {
    /// The target's durable state for `binferry status`.
    pub async fn read_status(&self) -> Result<TargetState> {
        match self {
            TargetSettings::Mysql(s) => super::mysql::read_status(s).await,
            TargetSettings::BigQuery(s) => super::bigquery::read_status(s).await,
        }
    }

    /// Record the start of a run of `kind` by process `pid` on `host` in the run registry;
    /// earlier runs on this host whose process is gone (`alive`) are marked interrupted.
    pub async fn run_started(&self, kind: &str, host: &str, pid: u32, alive: impl Fn(u32) -> bool) -> Result<RunId> {
        match self {
            TargetSettings::Mysql(s) => super::mysql::run_started(s, kind, host, pid, alive).await.map(RunId::Mysql),
            TargetSettings::BigQuery(s) => {
                super::bigquery::run_started(s, kind, host, pid, alive).await.map(RunId::BigQuery)
            }
        }
    }

    /// Record how run `id` ended.
    pub async fn run_ended(&self, id: &RunId, outcome: RunOutcome, rows: u64, error: Option<&str>) -> Result<()> {
        match (self, id) {
            (TargetSettings::Mysql(s), RunId::Mysql(id)) => super::mysql::run_ended(s, *id, outcome, rows, error).await,
            (TargetSettings::BigQuery(s), RunId::BigQuery(id)) => {
                super::bigquery::run_ended(s, id, outcome, rows, error).await
            }
            _ => Err(crate::error::Error::internal("a run id of another kind of target")),
        }
    }
}

/// The configured sink. One per writer, created once: the size difference of the variants
/// does not matter.
#[allow(clippy::large_enum_variant)]
pub enum Target {
    /// A MySQL/MariaDB target.
    Mysql(MysqlSink),
    /// A BigQuery target.
    BigQuery(BigQuerySink),
}

macro_rules! each {
    ($self:ident, $s:ident => $e:expr) => {
        match $self {
            Target::Mysql($s) => $e,
            Target::BigQuery($s) => $e,
        }
    };
}

impl Sink for Target {
    async fn applied_offset(&mut self) -> Result<Option<u64>> {
        each!(self, s => s.applied_offset().await)
    }

    async fn ensure_table(&mut self, schema: &TableSchema) -> Result<()> {
        each!(self, s => s.ensure_table(schema).await)
    }

    async fn apply(&mut self, batch: &Batch) -> Result<BatchCounts> {
        each!(self, s => s.apply(batch).await)
    }

    async fn apply_schema_change(&mut self, change: &SchemaChange) -> Result<()> {
        each!(self, s => s.apply_schema_change(change).await)
    }

    async fn commit(&mut self, offset: u64, position: &Position) -> Result<()> {
        each!(self, s => s.commit(offset, position).await)
    }

    async fn rollback(&mut self) -> Result<()> {
        each!(self, s => s.rollback().await)
    }

    async fn reset(&mut self) {
        each!(self, s => s.reset().await)
    }

    async fn idle(&mut self, draining: bool) -> Result<()> {
        each!(self, s => s.idle(draining).await)
    }
}

impl TableState for Target {
    async fn stopped_tables(&mut self) -> Result<Vec<(TableRef, String)>> {
        each!(self, s => s.stopped_tables().await)
    }

    async fn stop_table(&mut self, table: &TableRef, reason: &str) -> Result<()> {
        each!(self, s => s.stop_table(table, reason).await)
    }

    async fn ddl_barrier_mark(&mut self, barrier: &str, phase: BarrierPhase) -> Result<()> {
        each!(self, s => s.ddl_barrier_mark(barrier, phase).await)
    }

    async fn ddl_barrier_count(&mut self, barrier: &str, phase: BarrierPhase) -> Result<u32> {
        each!(self, s => s.ddl_barrier_count(barrier, phase).await)
    }
}
