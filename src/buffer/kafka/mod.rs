//! Kafka as the buffer: the reader publishes, sink workers in a consumer group apply.
//!
//! # Why it is shaped this way
//!
//! Kafka gives ordering per partition only, and the writer needs one totally ordered stream
//! to apply source transactions atomically. So the unit of work is a partition: each one is a
//! [`Log`](super::Log) of its own ([`partition::PartitionLog`]), applied by one writer, with
//! its applied offset stored in the target next to the data (`_binferry_state`, stream
//! `kafka:<topic>/<partition>`). The group only decides which worker owns which partition;
//! its committed offsets are progress information for operators, never read back.
//!
//! The [layout](crate::config::KafkaLayout) decides what a partition holds, and with it how
//! much consistency survives scaling out:
//!
//! | layout | topics | ordered and atomic per |
//! |---|---|---|
//! | `database` (default) | `<prefix>.<db>`, 1 partition | database: source transactions stay whole |
//! | `table` | `<prefix>.<db>.<table>`, 1 partition | table: a transaction over several tables lands table by table |
//! | `key` | `<prefix>.<db>`, `partitions` partitions | row: keyed by table and primary key |
//!
//! A `commit` record goes to every partition that received a change of its transaction, so
//! each partition's writer knows where transactions end; a commit without changes (the point
//! where the target becomes consistent after the initial snapshot) goes to every partition. DDL records (TRUNCATE, DROP, RENAME)
//! go to every partition of the table's topic: each applies them idempotently, in order with
//! its own rows.
//!
//! # Source checkpoints
//!
//! [`journal::KafkaJournal`] produces with the idempotent producer (no duplicates or
//! reordering from its own retries) and waits until the brokers acknowledged every record of a
//! batch before it writes the source checkpoint to the compacted `<prefix>-checkpoints` topic.
//! A crash between the two re-publishes the batch on restart: duplicates, never gaps, and the
//! writer ignores changes older than what the target holds. Kafka transactions are not used:
//! they would only save those duplicates, and not every Kafka-protocol broker supports them.
//!
//! Schemas go to the compacted `<prefix>-schemas` topic (key: version), acknowledged before
//! the first record that references them.
//!
//! # Poison messages
//!
//! A message that does not decode stops the table its key names (recorded in the target, like
//! an incompatible schema change), or the partition when the key is unreadable too; with
//! `on_poison = "dead_letter"` it is copied to the dead-letter topic with its origin in
//! headers, counted and logged instead. Nothing is skipped silently.

pub(crate) mod admin;
pub mod check;
pub mod group;
pub mod journal;
pub mod partition;
mod schemas;

use std::collections::BTreeMap;
use std::path::Path;

use rdkafka::ClientConfig;
use serde::{Deserialize, Serialize};

use crate::config::{Config, KafkaBufferConfig, KafkaLayout, PoisonMode};
use crate::error::{Error, ErrorKind, Result};
use crate::schema::TableRef;

/// Longest topic name Kafka accepts.
const MAX_TOPIC: usize = 249;

pub use crate::config::kafka::{MANAGED_PROPERTIES, is_topic_name};

/// Everything the Kafka buffer needs, resolved from the config (secrets included).
#[derive(Clone)]
pub struct KafkaSettings {
    /// Pipeline name: the checkpoint key.
    pub pipeline: String,
    /// Topic names.
    pub topics: Topics,
    /// Topic layout.
    pub layout: KafkaLayout,
    /// Partitions of created `key` layout topics.
    pub partitions: i32,
    /// Replication factor of created topics.
    pub replication_factor: i32,
    /// `retention.ms` of created data topics.
    pub retention_ms: u64,
    /// Create missing topics.
    pub create_topics: bool,
    /// Consumer group of the sink workers.
    pub group_id: String,
    /// What to do with undecodable messages.
    pub on_poison: PoisonMode,
    brokers: String,
    client: BTreeMap<String, String>,
    producer: BTreeMap<String, String>,
    consumer: BTreeMap<String, String>,
}

impl std::fmt::Debug for KafkaSettings {
    // Property values may be secrets: only names are shown.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaSettings")
            .field("brokers", &self.brokers)
            .field("topic_prefix", &self.topics.prefix)
            .field("layout", &self.layout)
            .field("group_id", &self.group_id)
            .field("client_properties", &self.client.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl KafkaSettings {
    /// Resolve the `[buffer.kafka]` section; reads `env:` and `file:` property values.
    pub fn from_config(config: &Config) -> Result<Self> {
        let k: &KafkaBufferConfig = config.buffer.kafka.as_ref().ok_or_else(|| {
            Error::new(
                ErrorKind::Config,
                "buffer.kafka: missing: buffer.kind = \"kafka\" needs a [buffer.kafka] section",
            )
        })?;
        let prefix = k.topic_prefix.clone().unwrap_or_else(|| sanitize(&config.pipeline.name));
        let resolve = |section: &str, props: &BTreeMap<String, String>| -> Result<BTreeMap<String, String>> {
            props
                .iter()
                .map(|(name, value)| {
                    Ok((name.clone(), resolve_secret(&format!("buffer.kafka.{section}.{name}"), value)?))
                })
                .collect()
        };
        Ok(KafkaSettings {
            pipeline: config.pipeline.name.clone(),
            topics: Topics {
                dead_letter: k.dead_letter_topic.clone().unwrap_or_else(|| format!("{prefix}-dead-letter")),
                prefix,
            },
            layout: k.layout,
            partitions: if k.layout == KafkaLayout::Key { k.partitions } else { 1 },
            replication_factor: k.replication_factor,
            retention_ms: k.retention_secs.saturating_mul(1000),
            create_topics: k.create_topics,
            group_id: k.group_id.clone().unwrap_or_else(|| format!("binferry-{}", config.pipeline.name)),
            on_poison: k.on_poison,
            brokers: k.brokers.clone(),
            client: resolve("client", &k.client)?,
            producer: resolve("producer", &k.producer)?,
            consumer: resolve("consumer", &k.consumer)?,
        })
    }

    /// The brokers, for messages.
    pub fn brokers(&self) -> &str {
        &self.brokers
    }

    fn base(&self) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.brokers);
        for (k, v) in &self.client {
            c.set(k, v);
        }
        c
    }

    /// Producer properties: idempotent, acknowledged by all in-sync replicas.
    pub(crate) fn producer_config(&self) -> ClientConfig {
        let mut c = self.base();
        c.set("enable.idempotence", "true").set("acks", "all");
        for (k, v) in &self.producer {
            c.set(k, v);
        }
        c
    }

    /// Properties of a consumer that reads assigned partitions without a group.
    pub(crate) fn reader_config(&self) -> ClientConfig {
        let mut c = self.base();
        // Bounded memory: librdkafka prefetches up to 64 MiB per partition by default.
        c.set("queued.max.messages.kbytes", "16384");
        // A requested offset that retention removed must be an error, never a silent jump.
        c.set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "error")
            .set("isolation.level", "read_committed")
            // Required by librdkafka for offset storage; never joined (no subscribe).
            .set("group.id", format!("{}-reader", self.group_id));
        for (k, v) in &self.consumer {
            c.set(k, v);
        }
        c
    }

    /// Properties of the group member that decides partition ownership.
    pub(crate) fn group_config(&self) -> ClientConfig {
        let mut c = self.base();
        // Defaults the consumer section may override: new per-table topics are found within
        // seconds, and a dead worker's partitions move within seconds, not minutes.
        // Round robin: the range assignor hands partition 0 of every single-partition topic to
        // the same member, which would leave all but one worker idle in the `table` layout.
        c.set("partition.assignment.strategy", "roundrobin")
            .set("topic.metadata.refresh.interval.ms", "5000")
            .set("session.timeout.ms", "10000")
            .set("heartbeat.interval.ms", "3000");
        c.set("group.id", &self.group_id)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest");
        for (k, v) in &self.consumer {
            c.set(k, v);
        }
        c
    }
}

/// `env:NAME` → that environment variable, `file:PATH` → that file's content (trimmed).
fn resolve_secret(field: &str, value: &str) -> Result<String> {
    if let Some(var) = value.strip_prefix("env:") {
        return std::env::var(var).map_err(|_| {
            Error::new(ErrorKind::Config, format!("{field}: environment variable {var} is not set"))
                .with_hint(format!("export {var}, or give the value directly"))
        });
    }
    if let Some(path) = value.strip_prefix("file:") {
        crate::config::warn_if_readable_by_others(field, Path::new(path));
        return std::fs::read_to_string(path)
            .map(|s| s.trim_end_matches(['\n', '\r']).to_string())
            .map_err(|e| Error::new(ErrorKind::Config, format!("{field}: cannot read {path}: {e}")));
    }
    Ok(value.to_string())
}

/// Topic names of one pipeline.
#[derive(Clone, Debug)]
pub struct Topics {
    /// Prefix of the data topics (`<prefix>.<db>[.<table>]`).
    pub prefix: String,
    /// Where undecodable messages go in `dead_letter` mode.
    pub dead_letter: String,
}

impl Topics {
    /// The compacted topic holding source checkpoints (key: pipeline name).
    pub fn checkpoints(&self) -> String {
        format!("{}-checkpoints", self.prefix)
    }

    /// The compacted topic holding table schemas (key: version).
    pub fn schemas(&self) -> String {
        format!("{}-schemas", self.prefix)
    }

    /// The data topic of `table` in `layout`.
    pub fn data(&self, layout: KafkaLayout, table: &TableRef) -> String {
        let name = match layout {
            KafkaLayout::Database | KafkaLayout::Key => format!("{}.{}", self.prefix, sanitize(&table.db)),
            KafkaLayout::Table => format!("{}.{}.{}", self.prefix, sanitize(&table.db), sanitize(&table.name)),
        };
        if name.len() <= MAX_TOPIC {
            name
        } else {
            // Too long: keep a readable start and make it unique with a hash of the whole.
            let hash = blake3::hash(name.as_bytes()).to_hex();
            format!("{}-{}", &name[..MAX_TOPIC - 17], &hash[..16])
        }
    }

    /// Regular expression (librdkafka `^` syntax) matching every data topic of the pipeline.
    pub fn data_pattern(&self) -> String {
        let mut escaped = String::new();
        for c in self.prefix.chars() {
            if !(c.is_ascii_alphanumeric() || c == '_' || c == '-') {
                escaped.push('\\');
            }
            escaped.push(c);
        }
        format!("^{escaped}\\..*")
    }
}

/// A database or table name as a topic name part: kept when it is already valid; otherwise
/// invalid characters become `_` and a hash of the original keeps distinct names distinct.
fn sanitize(name: &str) -> String {
    let clean: String =
        name.chars().map(|c| if c.is_ascii_alphanumeric() || c == '_' || c == '-' { c } else { '_' }).collect();
    if clean == name && !name.is_empty() {
        clean
    } else {
        format!("{clean}-{}", &blake3::hash(name.as_bytes()).to_hex()[..8])
    }
}

/// The message key: table and primary key, JSON, so any consumer can read it and compaction
/// or partitioning by key keeps one row's changes together.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub struct MessageKey {
    /// Source database.
    pub db: String,
    /// Source table.
    pub table: String,
    /// Primary key values (absent for keyless tables, DDL and commits).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pk: Option<Vec<crate::event::Value>>,
}

impl MessageKey {
    /// The key bytes of a record of `table` (with its primary key values, if any).
    pub fn encode(table: &TableRef, pk: Option<Vec<crate::event::Value>>) -> Result<Vec<u8>> {
        serde_json::to_vec(&MessageKey { db: table.db.clone(), table: table.name.clone(), pk })
            .map_err(|e| Error::internal(format!("cannot encode a message key: {e}")))
    }

    /// The table a key names, if the bytes are a key at all.
    pub fn table_of(bytes: &[u8]) -> Option<TableRef> {
        serde_json::from_slice::<MessageKey>(bytes).ok().map(|k| TableRef::new(k.db, k.table))
    }
}

/// A Kafka offset as a buffer offset; Kafka never hands out negative ones for messages.
fn offset_u64(offset: i64) -> u64 {
    u64::try_from(offset).unwrap_or(0)
}

/// Errors talking to brokers are transient: brokers come back.
fn unavailable(e: rdkafka::error::KafkaError, what: impl std::fmt::Display) -> Error {
    // A message over the size limit (the producer's `message.max.bytes`, or the broker's or
    // topic's) is refused the same way every time: retrying cannot help.
    if e.rdkafka_error_code() == Some(rdkafka::types::RDKafkaErrorCode::MessageSizeTooLarge) {
        return Error::new(ErrorKind::Buffer, format!("{what}: {e}")).with_hint(
            "a message is larger than Kafka accepts (a row with large values; or the BigQuery source's \
             checkpoint, which carries every table's bucket summaries, up to about 9 KB a table): raise \
             buffer.kafka.producer.\"message.max.bytes\" and the topic's max.message.bytes (or the broker's \
             message.max.bytes) together",
        );
    }
    Error::new(ErrorKind::BufferUnavailable, format!("{what}: {e}"))
        .with_hint("check that the Kafka brokers (buffer.kafka.brokers) are reachable; binferry retries meanwhile")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topics() -> Topics {
        Topics { prefix: "bf".into(), dead_letter: "bf-dead-letter".into() }
    }

    #[test]
    fn an_oversized_message_is_definite_and_says_what_to_raise() {
        use rdkafka::error::KafkaError;
        use rdkafka::types::RDKafkaErrorCode;
        let e = unavailable(KafkaError::MessageProduction(RDKafkaErrorCode::MessageSizeTooLarge), "producing");
        assert!(!e.is_transient(), "{e}");
        assert!(e.to_string().contains("message.max.bytes"), "{e}");
        let e = unavailable(KafkaError::MessageProduction(RDKafkaErrorCode::BrokerTransportFailure), "producing");
        assert!(e.is_transient(), "{e}");
    }

    #[test]
    fn topic_names_follow_the_layout_and_stay_distinct() {
        let t = topics();
        let orders = TableRef::new("shop", "orders");
        assert_eq!(t.data(KafkaLayout::Database, &orders), "bf.shop");
        assert_eq!(t.data(KafkaLayout::Key, &orders), "bf.shop");
        assert_eq!(t.data(KafkaLayout::Table, &orders), "bf.shop.orders");
        // `.` separates parts, so names containing one are rewritten, distinctly.
        let a = t.data(KafkaLayout::Table, &TableRef::new("a.b", "c"));
        let b = t.data(KafkaLayout::Table, &TableRef::new("a", "b.c"));
        assert_ne!(a, b);
        assert!(is_topic_name(&a) && is_topic_name(&b), "{a} {b}");
        let long = t.data(KafkaLayout::Table, &TableRef::new("d".repeat(64), "t".repeat(200)));
        assert!(long.len() <= MAX_TOPIC);
        assert!(!t.checkpoints().starts_with("bf."), "internal topics never match the data pattern");
        assert_eq!(t.data_pattern(), "^bf\\..*");
    }

    #[test]
    fn keys_name_their_table() {
        let key = MessageKey { db: "shop".into(), table: "orders".into(), pk: Some(vec![crate::event::Value::Int(7)]) };
        let bytes = serde_json::to_vec(&key).unwrap();
        assert_eq!(String::from_utf8_lossy(&bytes), r#"{"db":"shop","table":"orders","pk":[{"int":7}]}"#);
        assert_eq!(MessageKey::table_of(&bytes), Some(TableRef::new("shop", "orders")));
        assert_eq!(MessageKey::table_of(b"garbage"), None);
    }

    #[test]
    fn secrets_come_from_the_environment_or_files() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("pw");
        std::fs::write(&f, "s3cret\n").unwrap();
        assert_eq!(resolve_secret("x", &format!("file:{}", f.display())).unwrap(), "s3cret");
        assert_eq!(resolve_secret("x", "plain").unwrap(), "plain");
        let e = resolve_secret("buffer.kafka.client.sasl.password", "env:BINFERRY_TEST_SURELY_UNSET").unwrap_err();
        assert!(e.to_string().contains("BINFERRY_TEST_SURELY_UNSET is not set"), "{e}");
    }
}
