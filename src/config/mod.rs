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

pub mod http;
pub mod kafka;

use std::fmt;
use std::path::{Path, PathBuf};

use figment::Figment;
use figment::providers::{Env, Format, Toml};
use serde::Deserialize;

use crate::error::{Error, ErrorKind, Result};
use crate::table_filter::TableFilter;
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
/// Snapshot rows per buffer append (and per target transaction).
pub const DEFAULT_SNAPSHOT_CHUNK_ROWS: usize = 5_000;
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

/// `[source]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceConfig {
    /// Host name or IP address.
    #[serde(default = "default_host")]
    pub host: String,
    /// TCP port.
    #[serde(default = "default_port")]
    pub port: u16,
    /// Replication user (needs REPLICATION SLAVE, BINLOG MONITOR / REPLICATION CLIENT, SELECT).
    pub user: String,
    /// Name of the environment variable holding the password.
    #[serde(default)]
    pub password_env: Option<String>,
    /// File holding the password (first line), instead of an environment variable.
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// Replica server id presented to the source; must be unique among its replicas.
    /// Default: derived from the pipeline name.
    #[serde(default)]
    pub server_id: Option<u32>,
    /// Tables to replicate, as `database.table` glob patterns.
    pub include: Vec<String>,
    /// Tables to leave out, as `database.table` glob patterns.
    #[serde(default)]
    pub exclude: Vec<String>,
    /// Seconds to wait for a connection.
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout_secs: u64,
    /// `[source.tls]`: encryption of every connection to the source.
    #[serde(default)]
    pub tls: TlsConfig,
}

/// `[source.tls]`, `[sink.mysql.tls]`: how connections to a MySQL/MariaDB server are
/// encrypted, with the semantics of MySQL's `--ssl-mode` (see `connection.rs`).
#[derive(Debug, Deserialize, Clone, Default, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// `disabled`, `preferred` (default), `required`, `verify_ca` or `verify_identity`.
    #[serde(default)]
    pub mode: TlsMode,
    /// PEM file of the CA (or bundle) that signed the server's certificate (`verify_ca`,
    /// `verify_identity`); without it, the public CAs (webpki roots) are trusted.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate, for servers that require one (`REQUIRE X509`).
    #[serde(default)]
    pub cert_file: Option<PathBuf>,
    /// PEM private key of `cert_file`.
    #[serde(default)]
    pub key_file: Option<PathBuf>,
}

/// How a connection is encrypted.
#[derive(Debug, Deserialize, Clone, Copy, Default, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum TlsMode {
    /// Never.
    Disabled,
    /// When the server offers TLS, without checking its certificate; otherwise in plain text,
    /// with a warning (what MySQL's own clients do by default).
    #[default]
    Preferred,
    /// Always, without checking the certificate; a server without TLS is refused.
    Required,
    /// Always; the server's certificate must be signed by `ca_file` (or a public CA).
    VerifyCa,
    /// Always; the certificate must also be issued for the host binferry connects to.
    VerifyIdentity,
}

impl TlsMode {
    /// The mode as written in the config.
    pub fn as_str(self) -> &'static str {
        match self {
            TlsMode::Disabled => "disabled",
            TlsMode::Preferred => "preferred",
            TlsMode::Required => "required",
            TlsMode::VerifyCa => "verify_ca",
            TlsMode::VerifyIdentity => "verify_identity",
        }
    }
}

/// `[buffer]`
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct BufferConfig {
    /// Buffer implementation.
    #[serde(default)]
    pub kind: BufferKind,
    /// `[buffer.embedded]`
    #[serde(default)]
    pub embedded: EmbeddedBufferConfig,
    /// `[buffer.kafka]` (required when `kind = "kafka"`).
    pub kafka: Option<KafkaBufferConfig>,
}

/// Buffer implementations.
#[derive(Debug, Deserialize, Default, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum BufferKind {
    /// A local redb file: zero setup, one machine.
    #[default]
    Embedded,
    /// Kafka topics: durable across machines, read by sink workers in a consumer group.
    Kafka,
}

/// How change records are spread over Kafka topics.
#[derive(Debug, Deserialize, Default, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum KafkaLayout {
    /// One single-partition topic per source database: the database stays totally ordered and
    /// source transactions are applied atomically.
    #[default]
    Database,
    /// One single-partition topic per table: tables are applied in parallel; a source
    /// transaction touching several tables is atomic per table only.
    Table,
    /// One topic per database with `partitions` partitions, keyed by table and primary key:
    /// most parallel; ordering and atomicity hold per row only.
    Key,
}

/// What a sink worker does with a Kafka message it cannot decode.
#[derive(Debug, Deserialize, Default, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum PoisonMode {
    /// Stop the table the message key names (durably, in the target), or the partition when the
    /// key is unreadable too, with an error naming topic, partition and offset.
    #[default]
    Stop,
    /// Copy the message to the dead-letter topic, count it, log it, and go on.
    DeadLetter,
}

/// `[buffer.kafka]`
#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct KafkaBufferConfig {
    /// Bootstrap brokers, `host:port[,host:port...]` (librdkafka `bootstrap.servers`).
    pub brokers: String,
    /// Prefix of every topic name; default: the pipeline name.
    pub topic_prefix: Option<String>,
    /// How records are spread over topics.
    #[serde(default)]
    pub layout: KafkaLayout,
    /// Partitions of the topics binferry creates in the `key` layout (other layouts use 1).
    #[serde(default = "default_kafka_partitions")]
    pub partitions: i32,
    /// Replication factor of the topics binferry creates; -1: the broker's default.
    #[serde(default = "default_kafka_replication")]
    pub replication_factor: i32,
    /// Retention of the data topics binferry creates (`retention.ms`): how far back replay
    /// reaches; the MySQL target also keeps delete tombstones this long.
    #[serde(default = "default_retention_age")]
    pub retention_secs: u64,
    /// Create missing topics (data topics as they are needed, the checkpoint and schema topics
    /// compacted). Off: topics must exist, and a missing one is an error naming it.
    #[serde(default = "default_true")]
    pub create_topics: bool,
    /// Consumer group of the sink workers; default: `binferry-<pipeline name>`.
    pub group_id: Option<String>,
    /// What a sink worker does with an undecodable message.
    #[serde(default)]
    pub on_poison: PoisonMode,
    /// Dead-letter topic; default: `<topic_prefix>-dead-letter`.
    pub dead_letter_topic: Option<String>,
    /// librdkafka properties for every client (security: `security.protocol`, `sasl.*`,
    /// `ssl.*`). A value `env:NAME` is read from that environment variable and `file:PATH`
    /// from that file, so secrets stay out of the file; values are never logged.
    #[serde(default)]
    pub client: std::collections::BTreeMap<String, String>,
    /// librdkafka properties for the producer only (e.g. `linger.ms`, `compression.type`).
    #[serde(default)]
    pub producer: std::collections::BTreeMap<String, String>,
    /// librdkafka properties for the consumers only (e.g. `fetch.max.bytes`).
    #[serde(default)]
    pub consumer: std::collections::BTreeMap<String, String>,
}

/// `[buffer.embedded]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmbeddedBufferConfig {
    /// Path of the redb file (created when missing).
    #[serde(default = "default_buffer_path")]
    pub path: PathBuf,
    /// Drop the oldest applied events once the log exceeds this many bytes.
    #[serde(default = "default_retention_bytes")]
    pub retention_max_bytes: u64,
    /// Drop applied events older than this many seconds.
    #[serde(default = "default_retention_age")]
    pub retention_max_age_secs: u64,
    /// Pause reading the binlog (at a transaction boundary) while this many records wait
    /// for the target. 0: never pause.
    #[serde(default = "default_max_unapplied")]
    pub max_unapplied_records: u64,
}

impl Default for EmbeddedBufferConfig {
    fn default() -> Self {
        EmbeddedBufferConfig {
            path: default_buffer_path(),
            retention_max_bytes: DEFAULT_RETENTION_MAX_BYTES,
            retention_max_age_secs: DEFAULT_RETENTION_MAX_AGE_SECS,
            max_unapplied_records: DEFAULT_MAX_UNAPPLIED_RECORDS,
        }
    }
}

/// `[sink]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SinkConfig {
    /// Target implementation.
    #[serde(default)]
    pub kind: SinkKind,
    /// `[sink.mysql]`
    pub mysql: Option<MysqlSinkConfig>,
    /// `[sink.bigquery]`
    pub bigquery: Option<BigQuerySinkConfig>,
}

/// Target implementations.
#[derive(Debug, Deserialize, Default, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum SinkKind {
    /// A MySQL or MariaDB serving database.
    #[default]
    Mysql,
    /// Google BigQuery (or its local emulator).
    #[serde(rename = "bigquery")]
    BigQuery,
}

/// `[sink.bigquery]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BigQuerySinkConfig {
    /// Google Cloud project that holds the dataset and runs the query jobs.
    pub project: String,
    /// Dataset of the replicated tables; created (in `location`) when missing.
    pub dataset: String,
    /// Location of the dataset and of the jobs, e.g. `US`, `EU`, `europe-west1`.
    #[serde(default)]
    pub location: Option<String>,
    /// Target table name; `{db}` and `{table}` are replaced by the source names.
    #[serde(default = "default_bigquery_table_template")]
    pub table_name: String,
    /// Service-account key file (JSON). Without it and without `endpoint`, application
    /// default credentials are used (`GOOGLE_APPLICATION_CREDENTIALS`, gcloud, metadata server).
    #[serde(default)]
    pub credentials_file: Option<PathBuf>,
    /// REST base URL of an emulator, e.g. `http://127.0.0.1:19050/bigquery/v2`. Requests to
    /// it carry no credentials. Unset for Google's endpoint.
    #[serde(default)]
    pub endpoint: Option<String>,
    /// Seconds between MERGE runs that move the changelog into the tables.
    #[serde(default = "default_bigquery_merge_interval")]
    pub merge_interval_secs: u64,
    /// Seconds a request (insertAll, query job) may take.
    #[serde(default = "default_bigquery_request_timeout")]
    pub request_timeout_secs: u64,
    /// What a source `DROP TABLE` does to the BigQuery table: `keep` renames it to
    /// `<name>__dropped_<YYYYmmddHHMMSS>`; `drop` drops it.
    #[serde(default)]
    pub on_source_drop: DropMode,
}
/// `[sink.mysql]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MysqlSinkConfig {
    /// Host name or IP address.
    #[serde(default = "default_host")]
    pub host: String,
    /// TCP port.
    #[serde(default = "default_port")]
    pub port: u16,
    /// Target user (needs CREATE, ALTER, SELECT, INSERT, UPDATE, DELETE on `database`).
    pub user: String,
    /// Name of the environment variable holding the password.
    #[serde(default)]
    pub password_env: Option<String>,
    /// File holding the password (first line).
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// Target database; created when missing. Holds the tables and `_binferry_state`.
    pub database: String,
    /// Target table name; `{db}` and `{table}` are replaced by the source names.
    #[serde(default = "default_table_template")]
    pub table_name: String,
    /// Seconds to wait for a connection.
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout_secs: u64,
    /// What a source `DROP TABLE` does to the target table: `keep` renames it to
    /// `<name>__dropped_<YYYYmmddHHMMSS>` (the data stays, marked); `drop` drops it.
    #[serde(default)]
    pub on_source_drop: DropMode,
    /// `[sink.mysql.tls]`: encryption of the connections to the target.
    #[serde(default)]
    pub tls: TlsConfig,
}

/// Target handling of a dropped source table.
#[derive(Debug, Deserialize, Default, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum DropMode {
    /// Keep the target table under a marked name.
    #[default]
    Keep,
    /// Drop the target table too.
    Drop,
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
    /// Rows per buffer append and per target transaction while copying.
    #[serde(default = "default_chunk_rows")]
    pub chunk_rows: usize,
}

impl Default for SnapshotConfig {
    fn default() -> Self {
        SnapshotConfig { mode: SnapshotMode::default(), chunk_rows: DEFAULT_SNAPSHOT_CHUNK_ROWS }
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
fn default_progress_interval() -> u64 {
    DEFAULT_PROGRESS_INTERVAL_SECS
}

/// A password or token, read from an environment variable or a file.
///
/// `Debug` prints `***`. There is deliberately no `Display` (and no `Serialize`): a secret
/// cannot end up in a `format!("{}")`, a log field or a status document by accident; the one
/// way to the text is [`expose`](Self::expose), at the call that hands it to a client library.
///
/// ```compile_fail
/// let secret = binferry::config::Secret::default();
/// let _ = format!("{secret}"); // no Display
/// ```
#[derive(Clone, Default)]
pub struct Secret(String);

impl Secret {
    /// Wrap a secret read from the environment or a file.
    pub(crate) fn new(secret: String) -> Self {
        Secret(secret)
    }

    /// The secret itself; call only where it is handed to a client library.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
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

    /// Check values that need no I/O: non-empty selections, valid patterns and names,
    /// positive limits, a configured target for the chosen sink.
    pub fn validate(&self) -> Result<()> {
        let bad = |field: &str, why: String| Err(Error::new(ErrorKind::Config, format!("{field}: {why}")));
        if self.pipeline.name.is_empty() || self.pipeline.name.len() > 64 {
            return bad("pipeline.name", "must be 1 to 64 characters".into());
        }
        if self.pipeline.drain_timeout_secs == 0 {
            return bad("pipeline.drain_timeout_secs", "must be at least 1".into());
        }
        if self.source.include.is_empty() {
            return bad("source.include", "must list at least one `database.table` pattern, e.g. [\"shop.*\"]".into());
        }
        TableFilter::new(&self.source.include, &self.source.exclude)?;
        TableRules::new(&self.tables)?;
        self.http.validate()?;
        if self.source.server_id == Some(0) {
            return bad("source.server_id", "must not be 0 (the server refuses replicas with id 0)".into());
        }
        if self.source.user.is_empty() {
            return bad("source.user", "must not be empty".into());
        }
        self.source.tls.validate("source.tls")?;
        if let Some(m) = &self.sink.mysql {
            m.tls.validate("sink.mysql.tls")?;
        }
        match self.sink.kind {
            SinkKind::Mysql => {
                let Some(m) = &self.sink.mysql else {
                    return bad("sink.mysql", "missing: sink.kind = \"mysql\" needs a [sink.mysql] section".into());
                };
                if !is_identifier(&m.database) {
                    return bad(
                        "sink.mysql.database",
                        format!(
                            "{:?} is not a valid database name (letters, digits, `_`, `$`; at most 64)",
                            m.database
                        ),
                    );
                }
                if !m.table_name.contains("{table}") {
                    return bad("sink.mysql.table_name", format!("{:?} must contain {{table}}", m.table_name));
                }
                if m.user.is_empty() {
                    return bad("sink.mysql.user", "must not be empty".into());
                }
            }
            SinkKind::BigQuery => {
                let Some(b) = &self.sink.bigquery else {
                    return bad(
                        "sink.bigquery",
                        "missing: sink.kind = \"bigquery\" needs a [sink.bigquery] section with `project` and `dataset`"
                            .into(),
                    );
                };
                let id = |s: &str, max: usize, extra: &[u8]| {
                    !s.is_empty()
                        && s.len() <= max
                        && s.bytes().all(|c| c.is_ascii_alphanumeric() || extra.contains(&c))
                };
                if !id(&b.project, 63, b"-:.") {
                    return bad("sink.bigquery.project", format!("{:?} is not a valid project id", b.project));
                }
                if !id(&b.dataset, 1024, b"_") {
                    return bad(
                        "sink.bigquery.dataset",
                        format!("{:?} is not a valid dataset id (letters, digits, `_`)", b.dataset),
                    );
                }
                if !b.table_name.contains("{table}") {
                    return bad("sink.bigquery.table_name", format!("{:?} must contain {{table}}", b.table_name));
                }
                if b.merge_interval_secs == 0 {
                    return bad("sink.bigquery.merge_interval_secs", "must be at least 1".into());
                }
                if b.request_timeout_secs == 0 {
                    return bad("sink.bigquery.request_timeout_secs", "must be at least 1".into());
                }
                if let Some(e) = &b.endpoint
                    && !(e.starts_with("http://") || e.starts_with("https://"))
                {
                    return bad("sink.bigquery.endpoint", format!("{e:?} must be an http:// or https:// URL"));
                }
                if b.endpoint.is_some() && b.credentials_file.is_some() {
                    return bad(
                        "sink.bigquery.credentials_file",
                        "an emulator endpoint takes no credentials: set one of endpoint and credentials_file".into(),
                    );
                }
            }
        }
        if self.buffer.kind == BufferKind::Kafka {
            let Some(k) = &self.buffer.kafka else {
                return bad(
                    "buffer.kafka",
                    "missing: buffer.kind = \"kafka\" needs a [buffer.kafka] section with `brokers`".into(),
                );
            };
            if k.brokers.trim().is_empty() {
                return bad("buffer.kafka.brokers", "must list at least one host:port".into());
            }
            if k.partitions < 1 {
                return bad("buffer.kafka.partitions", format!("must be at least 1, found {}", k.partitions));
            }
            if k.replication_factor == 0 || k.replication_factor < -1 {
                return bad(
                    "buffer.kafka.replication_factor",
                    format!("must be -1 (broker default) or at least 1, found {}", k.replication_factor),
                );
            }
            if let Some(p) = &k.topic_prefix
                && !kafka::is_topic_name(p)
            {
                return bad(
                    "buffer.kafka.topic_prefix",
                    format!("{p:?} is not a valid topic name part (letters, digits, `.`, `_`, `-`; at most 200)"),
                );
            }
            if let Some(t) = &k.dead_letter_topic
                && !kafka::is_topic_name(t)
            {
                return bad("buffer.kafka.dead_letter_topic", format!("{t:?} is not a valid topic name"));
            }
            for (section, props) in [("client", &k.client), ("producer", &k.producer), ("consumer", &k.consumer)] {
                if let Some(p) = props.keys().find(|p| kafka::MANAGED_PROPERTIES.contains(&p.as_str())) {
                    return bad(
                        &format!("buffer.kafka.{section}.{p}"),
                        "is set by binferry itself (delivery guarantees depend on it) and cannot be overridden".into(),
                    );
                }
            }
        }
        if self.writer.batch_max_rows == 0 {
            return bad("writer.batch_max_rows", "must be at least 1".into());
        }
        if self.writer.batch_max_bytes < 1024 {
            return bad("writer.batch_max_bytes", "must be at least 1024".into());
        }
        if self.writer.batch_max_delay_ms == 0 {
            return bad("writer.batch_max_delay_ms", "must be at least 1".into());
        }
        if self.snapshot.chunk_rows == 0 {
            return bad("snapshot.chunk_rows", "must be at least 1".into());
        }
        if self.log.progress_interval_secs == 0 {
            return bad("log.progress_interval_secs", "must be at least 1".into());
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

impl TlsConfig {
    /// A client certificate needs its key and the reverse; a CA file is used to verify.
    fn validate(&self, field: &str) -> Result<()> {
        let bad = |f: &str, why: &str| Err(Error::new(ErrorKind::Config, format!("{field}.{f}: {why}")));
        match (&self.cert_file, &self.key_file) {
            (Some(_), None) => return bad("key_file", "missing: cert_file needs the key it was issued for"),
            (None, Some(_)) => return bad("cert_file", "missing: key_file needs its certificate"),
            _ => {}
        }
        if self.ca_file.is_some() && !matches!(self.mode, TlsMode::VerifyCa | TlsMode::VerifyIdentity) {
            return bad(
                "ca_file",
                "is used to verify the server: set mode = \"verify_ca\" or \"verify_identity\" (or remove it)",
            );
        }
        if self.mode == TlsMode::Disabled && self.cert_file.is_some() {
            return bad("cert_file", "a client certificate needs TLS, and mode = \"disabled\"");
        }
        Ok(())
    }
}

/// Resolve a password from `password_file`, `password_env` or the default variable.
pub(crate) fn resolve_password(
    field: &str,
    env: &Option<String>,
    file: &Option<PathBuf>,
    default_env: &str,
) -> Result<Secret> {
    if let Some(path) = file {
        let text = std::fs::read_to_string(path).map_err(|e| {
            Error::new(ErrorKind::Config, format!("{field}.password_file: cannot read {}: {e}", path.display()))
        })?;
        warn_if_readable_by_others(&format!("{field}.password_file"), path);
        return Ok(Secret(text.lines().next().unwrap_or("").to_string()));
    }
    match env {
        Some(var) => std::env::var(var).map(Secret).map_err(|_| {
            Error::new(ErrorKind::Config, format!("{field}.password_env: environment variable {var} is not set"))
                .with_hint(format!("export {var}=... or remove password_env to use {default_env}"))
        }),
        None => Ok(Secret(std::env::var(default_env).unwrap_or_default())),
    }
}

/// A file holding a secret should be readable by its owner only: say so when it is not.
pub(crate) fn warn_if_readable_by_others(field: &str, path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(meta) = std::fs::metadata(path) {
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            tracing::warn!(
                field,
                file = %path.display(),
                mode = format!("{mode:o}"),
                "a file holding a secret can be read by other users; fix: chmod 600 it"
            );
        }
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
    fn secrets_do_not_print() {
        assert_eq!(format!("{:?}", Secret("hunter2".into())), "***");
    }
}
