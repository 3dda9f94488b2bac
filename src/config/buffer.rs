//! `[buffer]`: the embedded log or Kafka.

use std::path::PathBuf;

use serde::Deserialize;

use super::{
    DEFAULT_MAX_UNAPPLIED_RECORDS, DEFAULT_RETENTION_MAX_AGE_SECS, DEFAULT_RETENTION_MAX_BYTES, default_buffer_path,
    invalid, kafka,
};
use crate::error::Result;

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
    #[serde(default = "super::default_kafka_partitions")]
    pub partitions: i32,
    /// Replication factor of the topics binferry creates; -1: the broker's default.
    #[serde(default = "super::default_kafka_replication")]
    pub replication_factor: i32,
    /// Retention of the data topics binferry creates (`retention.ms`): how far back replay
    /// reaches; the MySQL target also keeps delete tombstones this long.
    #[serde(default = "super::default_retention_age")]
    pub retention_secs: u64,
    /// Create missing topics (data topics as they are needed, the checkpoint and schema topics
    /// compacted). Off: topics must exist, and a missing one is an error naming it.
    #[serde(default = "super::default_true")]
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
    #[serde(default = "super::default_buffer_path")]
    pub path: PathBuf,
    /// Drop the oldest applied events once the log exceeds this many bytes.
    #[serde(default = "super::default_retention_bytes")]
    pub retention_max_bytes: u64,
    /// Drop applied events older than this many seconds.
    #[serde(default = "super::default_retention_age")]
    pub retention_max_age_secs: u64,
    /// Pause reading the binlog (at a transaction boundary) while this many records wait
    /// for the target. 0: never pause.
    #[serde(default = "super::default_max_unapplied")]
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

impl BufferConfig {
    pub(super) fn validate(&self) -> Result<()> {
        match (self.kind, &self.kafka) {
            (BufferKind::Kafka, Some(k)) => k.validate(),
            (BufferKind::Kafka, None) => Err(invalid(
                "buffer.kafka",
                "missing: buffer.kind = \"kafka\" needs a [buffer.kafka] section with `brokers`",
            )),
            _ => Ok(()),
        }
    }
}

impl KafkaBufferConfig {
    fn validate(&self) -> Result<()> {
        if self.brokers.trim().is_empty() {
            return Err(invalid("buffer.kafka.brokers", "must list at least one host:port"));
        }
        if self.partitions < 1 {
            return Err(invalid("buffer.kafka.partitions", format!("must be at least 1, found {}", self.partitions)));
        }
        if self.replication_factor == 0 || self.replication_factor < -1 {
            return Err(invalid(
                "buffer.kafka.replication_factor",
                format!("must be -1 (broker default) or at least 1, found {}", self.replication_factor),
            ));
        }
        if let Some(p) = &self.topic_prefix
            && !kafka::is_topic_name(p)
        {
            return Err(invalid(
                "buffer.kafka.topic_prefix",
                format!("{p:?} is not a valid topic name part (letters, digits, `.`, `_`, `-`; at most 200)"),
            ));
        }
        if let Some(t) = &self.dead_letter_topic
            && !kafka::is_topic_name(t)
        {
            return Err(invalid("buffer.kafka.dead_letter_topic", format!("{t:?} is not a valid topic name")));
        }
        for (section, props) in [("client", &self.client), ("producer", &self.producer), ("consumer", &self.consumer)] {
            if let Some(p) = props.keys().find(|p| kafka::MANAGED_PROPERTIES.contains(&p.as_str())) {
                return Err(invalid(
                    &format!("buffer.kafka.{section}.{p}"),
                    "is set by binferry itself (delivery guarantees depend on it) and cannot be overridden",
                ));
            }
        }
        Ok(())
    }
}
