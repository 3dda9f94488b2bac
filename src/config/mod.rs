//! Typed configuration.
//!
//! One TOML file, optionally overridden by environment variables named
//! `BINFERRY__SECTION__FIELD` (for example `BINFERRY__SOURCE__PORT=3307`).
//! Every field is documented in `config/binferry.example.toml` with its
//! default; unknown fields are errors. Passwords never appear in the file:
//! they come from an environment variable or a file named by the config, and
//! [`Secret`] keeps them out of logs and `Debug` output.
//!
//! [`Config::validate`] checks everything that can be checked without I/O;
//! reaching the servers is `binferry check`'s job.

pub mod alerts;
mod buffer;
pub mod http;
pub mod kafka;
mod secret;
mod sink;
mod source;

pub use buffer::{BufferConfig, BufferKind, EmbeddedBufferConfig, KafkaBufferConfig, KafkaLayout, PoisonMode};
pub use secret::Secret;
pub(crate) use secret::{resolve_password, warn_if_readable_by_others};
pub use sink::{BigQuerySinkConfig, DropMode, MysqlSinkConfig, SinkConfig, SinkKind};
pub use source::{BigQuerySourceConfig, SourceConfig, SourceKind, TlsConfig, TlsMode};

use std::fmt;
use std::path::{Path, PathBuf};

use figment::Figment;
use figment::providers::{Env, Format, Toml};
use serde::Deserialize;

use crate::error::{Error, ErrorKind, Result};
use crate::table_options::{TableRule, TableRules};

/// Default pipeline name; it keys the target's `_binferry_state` row.
pub const DEFAULT_PIPELINE_NAME: &str = "default";
/// Seconds the writer may take to drain at shutdown.
pub const DEFAULT_DRAIN_TIMEOUT_SECS: u64 = 60;
/// Default MySQL port.
pub const DEFAULT_MYSQL_PORT: u16 = 3306;
/// Default host of source and target.
pub const DEFAULT_HOST: &str = "127.0.0.1";
/// Environment variable holding the source password unless `source.password_env` says otherwise.
pub const DEFAULT_SOURCE_PASSWORD_ENV: &str = "BINFERRY_SOURCE_PASSWORD";
/// Environment variable holding the target password unless `sink.mysql.password_env` says otherwise.
pub const DEFAULT_TARGET_PASSWORD_ENV: &str = "BINFERRY_TARGET_PASSWORD";
/// Seconds to wait for a connection to a server.
pub const DEFAULT_CONNECT_TIMEOUT_SECS: u64 = 10;
/// Embedded buffer file.
pub const DEFAULT_BUFFER_PATH: &str = "binferry-data/buffer.redb";
/// Keep at most this many bytes of applied events in the embedded buffer (10 GiB).
pub const DEFAULT_RETENTION_MAX_BYTES: u64 = 10 * 1024 * 1024 * 1024;
/// Keep applied events at most this long (7 days).
pub const DEFAULT_RETENTION_MAX_AGE_SECS: u64 = 7 * 24 * 3600;
/// Pause the binlog reader while this many records wait for the target.
pub const DEFAULT_MAX_UNAPPLIED_RECORDS: u64 = 5_000_000;
/// Flush a batch to the target once it holds this many row changes.
pub const DEFAULT_BATCH_MAX_ROWS: usize = 10_000;
/// Flush a batch once its row changes take this many bytes (16 MiB).
pub const DEFAULT_BATCH_MAX_BYTES: usize = 16 * 1024 * 1024;
/// Flush a batch at the latest this long after its first change arrived.
pub const DEFAULT_BATCH_MAX_DELAY_MS: u64 = 100;
/// Snapshot rows per chunk: per source query, buffer append and target transaction.
pub const DEFAULT_SNAPSHOT_CHUNK_ROWS: usize = 5_000;
/// Chunks of one table read at the same time, each on its own source connection.
pub const DEFAULT_SNAPSHOT_PARALLEL: usize = 4;
/// Target connections that write a table copy's rows at once (MySQL target).
pub const DEFAULT_COPY_CONNECTIONS: usize = 4;
/// Interval of the progress log line.
pub const DEFAULT_PROGRESS_INTERVAL_SECS: u64 = 10;
/// Target table name template.
pub const DEFAULT_TABLE_TEMPLATE: &str = "{table}";
/// Partitions of topics created in the Kafka `key` layout.
pub const DEFAULT_KAFKA_PARTITIONS: i32 = 12;
/// Replication factor of created topics: the broker's default.
pub const DEFAULT_KAFKA_REPLICATION_FACTOR: i32 = -1;
/// BigQuery target table name template.
pub const DEFAULT_BIGQUERY_TABLE_TEMPLATE: &str = "{db}_{table}";
/// Seconds between two MERGE runs of a BigQuery sink stream (each run is one query job).
pub const DEFAULT_BIGQUERY_MERGE_INTERVAL_SECS: u64 = 5;
/// Rows of one key range that `verify` compares at a time on a BigQuery target (one query
/// job each; the table is clustered by its key, so a job scans about its range).
pub const DEFAULT_BIGQUERY_VERIFY_CHUNK_ROWS: usize = 100_000;
/// Default seconds between the rounds of the BigQuery source.
pub const DEFAULT_BIGQUERY_SOURCE_INTERVAL_SECS: u64 = 5;
/// Default seconds before the last round that the BigQuery source's diffs start.
pub const DEFAULT_BIGQUERY_SETTLE_SECS: u64 = 30;
/// Default most rows the BigQuery source copies inside one round's transaction.
pub const DEFAULT_BIGQUERY_ATOMIC_COPY_ROWS: u64 = 1_000_000;
/// Seconds a BigQuery request may take before it counts as failed (and is retried).
pub const DEFAULT_BIGQUERY_REQUEST_TIMEOUT_SECS: u64 = 120;

/// The whole configuration.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Pipeline identity.
    #[serde(default)]
    pub pipeline: PipelineConfig,
    /// The MySQL/MariaDB server whose binlog is read.
    pub source: SourceConfig,
    /// Where change events wait between source and writer.
    #[serde(default)]
    pub buffer: BufferConfig,
    /// Where changes are applied.
    pub sink: SinkConfig,
    /// Batching of target writes.
    #[serde(default)]
    pub writer: WriterConfig,
    /// Initial copy of existing rows.
    #[serde(default)]
    pub snapshot: SnapshotConfig,
    /// Logging.
    #[serde(default)]
    pub log: LogConfig,
    /// The operations endpoint.
    #[serde(default)]
    pub http: http::HttpConfig,
    /// Per-table options (`[[tables]]`), first match wins.
    #[serde(default)]
    pub tables: Vec<TableRule>,
    /// When alerts fire.
    #[serde(default)]
    pub alerting: alerts::AlertingConfig,
    /// Where alerts go (`[[alerts]]`, any number).
    #[serde(default)]
    pub alerts: Vec<alerts::AlertChannelConfig>,
}

/// `[pipeline]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineConfig {
    /// Name of this pipeline; two pipelines writing to one target need different names.
    #[serde(default = "default_pipeline_name")]
    pub name: String,
    /// On SIGINT/SIGTERM, how long the writer may take to apply and commit what the buffer
    /// holds before binferry stops without it (safe: the next run applies it).
    #[serde(default = "default_drain_timeout")]
    pub drain_timeout_secs: u64,
}

impl Default for PipelineConfig {
    fn default() -> Self {
        PipelineConfig { name: default_pipeline_name(), drain_timeout_secs: DEFAULT_DRAIN_TIMEOUT_SECS }
    }
}

/// `[writer]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WriterConfig {
    /// Flush once a batch holds this many row changes.
    #[serde(default = "default_batch_rows")]
    pub batch_max_rows: usize,
    /// Flush once a batch holds this many bytes of row data.
    #[serde(default = "default_batch_bytes")]
    pub batch_max_bytes: usize,
    /// Flush at the latest this many milliseconds after the batch's first change.
    #[serde(default = "default_batch_delay")]
    pub batch_max_delay_ms: u64,
}

impl Default for WriterConfig {
    fn default() -> Self {
        WriterConfig {
            batch_max_rows: DEFAULT_BATCH_MAX_ROWS,
            batch_max_bytes: DEFAULT_BATCH_MAX_BYTES,
            batch_max_delay_ms: DEFAULT_BATCH_MAX_DELAY_MS,
        }
    }
}

/// `[snapshot]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnapshotConfig {
    /// `initial`: copy existing rows before streaming; `never`: stream from the current binlog end.
    #[serde(default)]
    pub mode: SnapshotMode,
    /// Rows per chunk: per source query, buffer append and target transaction while copying.
    #[serde(default = "default_chunk_rows")]
    pub chunk_rows: usize,
    /// Chunks of a table read at the same time, each on its own source connection.
    #[serde(default = "default_snapshot_parallel")]
    pub parallel: usize,
}

impl Default for SnapshotConfig {
    fn default() -> Self {
        SnapshotConfig {
            mode: SnapshotMode::default(),
            chunk_rows: DEFAULT_SNAPSHOT_CHUNK_ROWS,
            parallel: DEFAULT_SNAPSHOT_PARALLEL,
        }
    }
}

/// Snapshot modes.
#[derive(Debug, Deserialize, Default, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum SnapshotMode {
    /// Copy existing rows first.
    #[default]
    Initial,
    /// Only stream changes made after the first start.
    Never,
}

/// `[log]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    /// `text` or `json`.
    #[serde(default)]
    pub format: LogFormat,
    /// Seconds between progress lines (throughput, positions, lag).
    #[serde(default = "default_progress_interval")]
    pub progress_interval_secs: u64,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig { format: LogFormat::default(), progress_interval_secs: DEFAULT_PROGRESS_INTERVAL_SECS }
    }
}

/// Log formats.
#[derive(Debug, Deserialize, Default, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

fn default_drain_timeout() -> u64 {
    DEFAULT_DRAIN_TIMEOUT_SECS
}

fn default_pipeline_name() -> String {
    DEFAULT_PIPELINE_NAME.into()
}
fn default_host() -> String {
    DEFAULT_HOST.into()
}
fn default_port() -> u16 {
    DEFAULT_MYSQL_PORT
}
fn default_connect_timeout() -> u64 {
    DEFAULT_CONNECT_TIMEOUT_SECS
}
fn default_copy_connections() -> usize {
    DEFAULT_COPY_CONNECTIONS
}
fn default_buffer_path() -> PathBuf {
    DEFAULT_BUFFER_PATH.into()
}
fn default_retention_bytes() -> u64 {
    DEFAULT_RETENTION_MAX_BYTES
}
fn default_retention_age() -> u64 {
    DEFAULT_RETENTION_MAX_AGE_SECS
}
fn default_max_unapplied() -> u64 {
    DEFAULT_MAX_UNAPPLIED_RECORDS
}
fn default_kafka_partitions() -> i32 {
    DEFAULT_KAFKA_PARTITIONS
}
fn default_kafka_replication() -> i32 {
    DEFAULT_KAFKA_REPLICATION_FACTOR
}
fn default_true() -> bool {
    true
}
fn default_bigquery_table_template() -> String {
    DEFAULT_BIGQUERY_TABLE_TEMPLATE.into()
}
fn default_bigquery_merge_interval() -> u64 {
    DEFAULT_BIGQUERY_MERGE_INTERVAL_SECS
}
fn default_bigquery_verify_chunk_rows() -> usize {
    DEFAULT_BIGQUERY_VERIFY_CHUNK_ROWS
}
fn default_bigquery_settle() -> u64 {
    DEFAULT_BIGQUERY_SETTLE_SECS
}
fn default_bigquery_parallel_queries() -> usize {
    8
}
fn default_bigquery_atomic_copy_rows() -> u64 {
    DEFAULT_BIGQUERY_ATOMIC_COPY_ROWS
}
fn default_bigquery_source_interval() -> u64 {
    DEFAULT_BIGQUERY_SOURCE_INTERVAL_SECS
}
fn default_bigquery_request_timeout() -> u64 {
    DEFAULT_BIGQUERY_REQUEST_TIMEOUT_SECS
}
fn default_table_template() -> String {
    DEFAULT_TABLE_TEMPLATE.into()
}
fn default_batch_rows() -> usize {
    DEFAULT_BATCH_MAX_ROWS
}
fn default_batch_bytes() -> usize {
    DEFAULT_BATCH_MAX_BYTES
}
fn default_batch_delay() -> u64 {
    DEFAULT_BATCH_MAX_DELAY_MS
}
fn default_chunk_rows() -> usize {
    DEFAULT_SNAPSHOT_CHUNK_ROWS
}
fn default_snapshot_parallel() -> usize {
    DEFAULT_SNAPSHOT_PARALLEL
}
fn default_progress_interval() -> u64 {
    DEFAULT_PROGRESS_INTERVAL_SECS
}

impl Config {
    /// Read `path` and `BINFERRY__*` overrides, then [`validate`](Self::validate).
    pub fn load(path: &Path) -> Result<Self> {
        if !path.exists() {
            return Err(Error::new(ErrorKind::Config, format!("config file {} does not exist", path.display()))
                .with_hint("pass --config FILE; config/binferry.example.toml documents every field"));
        }
        let figment = Figment::new().merge(Toml::file(path)).merge(Env::prefixed("BINFERRY__").split("__"));
        Self::from_figment(figment)
    }

    /// Parse a TOML string (tests and embedding).
    pub fn from_toml(toml: &str) -> Result<Self> {
        Self::from_figment(Figment::new().merge(Toml::string(toml)))
    }

    fn from_figment(figment: Figment) -> Result<Self> {
        let config: Config = figment.extract().map_err(|e| {
            let msgs: Vec<String> = e.into_iter().map(|e| describe_figment_error(&e)).collect();
            Error::new(ErrorKind::Config, msgs.join("; "))
        })?;
        config.validate()?;
        Ok(config)
    }

    /// Check values that need no I/O, section by section: non-empty selections, valid
    /// patterns and names, positive limits, a configured target for the chosen sink.
    pub fn validate(&self) -> Result<()> {
        self.pipeline.validate()?;
        self.source.validate()?;
        TableRules::new(&self.tables)?;
        self.http.validate()?;
        self.sink.validate()?;
        self.buffer.validate()?;
        self.writer.validate()?;
        self.alerting.validate()?;
        for (i, channel) in self.alerts.iter().enumerate() {
            channel.validate(i)?;
        }
        if self.snapshot.chunk_rows == 0 {
            return Err(invalid("snapshot.chunk_rows", "must be at least 1"));
        }
        if !(1..=64).contains(&self.snapshot.parallel) {
            return Err(invalid("snapshot.parallel", "must be between 1 and 64"));
        }
        if self.log.progress_interval_secs == 0 {
            return Err(invalid("log.progress_interval_secs", "must be at least 1"));
        }
        if self.source.kind == SourceKind::Bigquery && self.sink.kind != SinkKind::Mysql {
            return Err(invalid(
                "sink.kind",
                "the BigQuery source mirrors tables into a MySQL/MariaDB target: set sink.kind = \"mysql\"",
            ));
        }
        Ok(())
    }

    /// The compiled `[[tables]]` rules (valid after [`validate`](Self::validate)).
    pub fn table_rules(&self) -> Result<TableRules> {
        TableRules::new(&self.tables)
    }

    /// The replica server id: configured, or derived from the pipeline name so that pipelines
    /// with different names never kick each other off the source (a server drops the older
    /// connection of two replicas with one id).
    pub fn server_id(&self) -> u32 {
        self.source.server_id.unwrap_or_else(|| {
            let h = blake3::hash(self.pipeline.name.as_bytes());
            let b = h.as_bytes();
            0x8000_0000 | (u32::from_be_bytes([b[0], b[1], b[2], b[3]]) & 0x7fff_ffff)
        })
    }
}

/// The error of an invalid field: which field, and why.
fn invalid(field: &str, why: impl fmt::Display) -> Error {
    Error::new(ErrorKind::Config, format!("{field}: {why}"))
}

impl PipelineConfig {
    fn validate(&self) -> Result<()> {
        if self.name.is_empty() || self.name.len() > 64 {
            return Err(invalid("pipeline.name", "must be 1 to 64 characters"));
        }
        if self.drain_timeout_secs == 0 {
            return Err(invalid("pipeline.drain_timeout_secs", "must be at least 1"));
        }
        Ok(())
    }
}

impl WriterConfig {
    fn validate(&self) -> Result<()> {
        if self.batch_max_rows == 0 {
            return Err(invalid("writer.batch_max_rows", "must be at least 1"));
        }
        if self.batch_max_bytes < 1024 {
            return Err(invalid("writer.batch_max_bytes", "must be at least 1024"));
        }
        if self.batch_max_delay_ms == 0 {
            return Err(invalid("writer.batch_max_delay_ms", "must be at least 1"));
        }
        Ok(())
    }
}

fn is_identifier(s: &str) -> bool {
    !s.is_empty() && s.len() <= 64 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'$')
}

/// The dotted path of field `f` under `path` (figment sometimes ends `path` with it already).
fn field_path(path: &[String], f: &str) -> String {
    match path.last() {
        Some(last) if last == f => path.join("."),
        Some(_) => format!("{}.{f}", path.join(".")),
        None => f.to_string(),
    }
}

fn describe_figment_error(e: &figment::Error) -> String {
    let path = e.path.join(".");
    let mut msg = e.kind.to_string();
    if !path.is_empty() {
        msg = format!("{path}: {msg}");
    }
    match &e.kind {
        figment::error::Kind::MissingField(f) => format!("{}: missing field (required)", field_path(&e.path, f)),
        figment::error::Kind::UnknownField(f, _) => format!("{}: unknown field ({})", field_path(&e.path, f), e.kind),
        _ => msg,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
        [source]
        user = "repl"
        include = ["shop.*"]
        [sink.mysql]
        user = "w"
        database = "replica"
    "#;

    #[test]
    fn minimal_config_gets_documented_defaults() {
        let c = Config::from_toml(MINIMAL).unwrap();
        assert_eq!(c.source.port, DEFAULT_MYSQL_PORT);
        assert_eq!(c.writer.batch_max_rows, DEFAULT_BATCH_MAX_ROWS);
        assert_eq!(c.buffer.embedded.path, PathBuf::from(DEFAULT_BUFFER_PATH));
        assert_eq!(c.snapshot.mode, SnapshotMode::Initial);
        assert!(c.server_id() >= 0x8000_0000);
    }

    #[test]
    fn unknown_field_is_named() {
        let e = Config::from_toml(&format!("{MINIMAL}\n[writer]\nbatch_rows = 5\n")).unwrap_err();
        assert!(e.to_string().contains("writer.batch_rows"), "{e}");
    }

    #[test]
    fn an_unknown_field_is_named_once() {
        let e = Config::from_toml(&MINIMAL.replace("include = [\"shop.*\"]", "included = [\"shop.*\"]")).unwrap_err();
        assert!(e.to_string().contains("source.included: unknown field"), "{e}");
        assert!(!e.to_string().contains("included.included"), "{e}");
    }

    #[test]
    fn missing_field_is_named() {
        let e = Config::from_toml("[source]\nuser = \"x\"\n[sink.mysql]\nuser=\"w\"\ndatabase=\"r\"\n").unwrap_err();
        assert!(e.to_string().contains("source.include"), "{e}");
    }

    #[test]
    fn bad_value_is_named() {
        let e = Config::from_toml(&MINIMAL.replace("user = \"repl\"", "user = \"repl\"\nport = \"many\"")).unwrap_err();
        assert!(e.to_string().contains("source.port"), "{e}");
        let e = Config::from_toml(&format!("{MINIMAL}\n[writer]\nbatch_max_rows = 0\n")).unwrap_err();
        assert!(e.to_string().contains("writer.batch_max_rows"), "{e}");
        let e = Config::from_toml(&MINIMAL.replace("\"replica\"", "\"bad name\"")).unwrap_err();
        assert!(e.to_string().contains("sink.mysql.database"), "{e}");
    }

    #[test]
    fn example_config_is_valid_and_shows_the_defaults() {
        let text = include_str!("../../config/binferry.example.toml");
        let c = Config::from_toml(text).unwrap();
        assert_eq!(c.writer.batch_max_rows, DEFAULT_BATCH_MAX_ROWS);
        assert_eq!(c.writer.batch_max_bytes, DEFAULT_BATCH_MAX_BYTES);
        assert_eq!(c.writer.batch_max_delay_ms, DEFAULT_BATCH_MAX_DELAY_MS);
        assert_eq!(c.buffer.embedded.retention_max_bytes, DEFAULT_RETENTION_MAX_BYTES);
        assert_eq!(c.buffer.embedded.retention_max_age_secs, DEFAULT_RETENTION_MAX_AGE_SECS);
        assert_eq!(c.snapshot.chunk_rows, DEFAULT_SNAPSHOT_CHUNK_ROWS);
        assert_eq!(c.buffer.embedded.max_unapplied_records, DEFAULT_MAX_UNAPPLIED_RECORDS);
        assert_eq!(c.log.progress_interval_secs, DEFAULT_PROGRESS_INTERVAL_SECS);
        assert_eq!(c.source.connect_timeout_secs, DEFAULT_CONNECT_TIMEOUT_SECS);
        assert_eq!(c.sink.mysql.as_ref().unwrap().table_name, DEFAULT_TABLE_TEMPLATE);
        assert_eq!(c.source.tls.mode, TlsMode::default());
        assert_eq!(c.sink.mysql.as_ref().unwrap().tls.mode, TlsMode::default());
        let alerting = alerts::AlertingConfig::default();
        assert_eq!(
            (c.alerting.lag_max_secs, c.alerting.lag_for_secs, c.alerting.unreachable_for_secs),
            (alerting.lag_max_secs, alerting.lag_for_secs, alerting.unreachable_for_secs)
        );
        assert_eq!(c.alerting.max_per_hour, alerting.max_per_hour);
        // The commented channels are valid too.
        let channels: String = text
            .lines()
            .skip_while(|l| !l.starts_with("# [[alerts]]"))
            .map(|l| l.strip_prefix("# ").unwrap_or(l))
            .filter(|l| !l.starts_with('#'))
            .collect::<Vec<_>>()
            .join("\n");
        let c = Config::from_toml(&format!("{text}\n{channels}")).unwrap();
        assert_eq!(c.alerts.len(), 3);
    }

    #[test]
    fn alert_channels_are_checked_and_named() {
        let base = include_str!("../../config/binferry.example.toml");
        for (channel, field) in [
            ("kind = \"webhook\"", "alerts[0].url: set exactly one of url and url_env"),
            ("kind = \"webhook\"\nurl = \"ftp://x\"", "alerts[0].url"),
            ("kind = \"telegram\"\nchat_id = \"1\"", "alerts[0].bot_token_env: missing"),
            ("kind = \"email\"\nsmtp_host = \"h\"\nfrom = \"a@b\"", "alerts[0].to: must list"),
            ("kind = \"pager\"", "kind"),
            (
                "kind = \"email\"\nsmtp_host = \"h\"\nfrom = \"a@b\"\nto = [\"c@d\"]\ntls = \"none\"\nca_file = \"/ca.pem\"",
                "alerts[0].ca_file: verifies TLS",
            ),
        ] {
            let e = Config::from_toml(&format!("{base}\n[[alerts]]\n{channel}\n")).unwrap_err();
            assert!(e.to_string().contains(field), "{channel}: {e}");
        }
    }

    #[test]
    fn bigquery_sink_settings_are_checked_and_named() {
        let base = "[source]\nuser = \"repl\"\ninclude = [\"shop.*\"]\n[sink]\nkind = \"bigquery\"\n";
        let e = Config::from_toml(base).unwrap_err();
        assert!(e.to_string().contains("sink.bigquery: missing"), "{e}");
        let ok = format!("{base}[sink.bigquery]\nproject = \"my-project\"\ndataset = \"shop_replica\"\n");
        let c = Config::from_toml(&ok).unwrap();
        let b = c.sink.bigquery.as_ref().unwrap();
        assert_eq!(b.table_name, DEFAULT_BIGQUERY_TABLE_TEMPLATE);
        assert_eq!(b.merge_interval_secs, DEFAULT_BIGQUERY_MERGE_INTERVAL_SECS);
        for (extra, field) in [
            ("merge_interval_secs = 0", "sink.bigquery.merge_interval_secs"),
            ("endpoint = \"localhost:19050\"", "sink.bigquery.endpoint"),
            ("table_name = \"fixed\"", "sink.bigquery.table_name"),
            ("endpoint = \"http://x\"\ncredentials_file = \"k.json\"", "sink.bigquery.credentials_file"),
        ] {
            let e = Config::from_toml(&format!("{ok}{extra}\n")).unwrap_err();
            assert!(e.to_string().contains(field), "{extra}: {e}");
        }
        let e = Config::from_toml(&ok.replace("shop_replica", "shop-replica")).unwrap_err();
        assert!(e.to_string().contains("sink.bigquery.dataset"), "{e}");
    }

    #[test]
    fn bigquery_source_settings_are_checked_and_named() {
        let base = "[source]\nkind = \"bigquery\"\ninclude = [\"catalog.*\"]\n\
                    [sink.mysql]\nuser = \"w\"\ndatabase = \"catalog\"\n[source.bigquery]\nproject = \"my-project\"\n";
        let c = Config::from_toml(base).unwrap();
        let b = c.source.bigquery.as_ref().unwrap();
        assert_eq!((b.parallel_queries, b.settle_secs), (8, DEFAULT_BIGQUERY_SETTLE_SECS));
        for (extra, field) in [
            ("interval_secs = 0", "source.bigquery.interval_secs"),
            ("request_timeout_secs = 0", "source.bigquery.request_timeout_secs"),
            ("parallel_queries = 0", "source.bigquery.parallel_queries: 0 is not between 1 and 100"),
            ("parallel_queries = 101", "source.bigquery.parallel_queries: 101 is not between 1 and 100"),
            ("storage_endpoint = \"localhost:19051\"", "source.bigquery.storage_endpoint"),
            ("endpoint = \"http://x\"\ncredentials_file = \"k.json\"", "source.bigquery.credentials_file"),
        ] {
            let e = Config::from_toml(&format!("{base}{extra}\n")).unwrap_err();
            assert!(e.to_string().contains(field), "{extra}: {e}");
        }
    }

    #[test]
    fn copy_connections_default_to_4_and_are_bounded() {
        let base = include_str!("../../config/binferry.example.toml");
        let c = Config::from_toml(&base.replace("copy_connections = 4\n", "")).unwrap();
        assert_eq!(c.sink.mysql.as_ref().map(|m| m.copy_connections), Some(DEFAULT_COPY_CONNECTIONS));
        for bad in ["0", "65"] {
            let e = Config::from_toml(&base.replace("copy_connections = 4", &format!("copy_connections = {bad}")))
                .unwrap_err();
            assert!(e.to_string().contains("sink.mysql.copy_connections: must be between 1 and 64"), "{bad}: {e}");
        }
    }

    #[test]
    fn secrets_do_not_print() {
        assert_eq!(format!("{:?}", Secret::new("hunter2".into())), "***");
    }
}
