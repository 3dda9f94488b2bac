//! Topic creation and metadata.

use std::sync::Arc;
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::types::RDKafkaErrorCode;

use super::{KafkaSettings, unavailable};
use crate::error::{Error, ErrorKind, Result};

/// How long a metadata or admin request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// What a topic is for: decides its partitions and cleanup policy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum TopicRole {
    /// Change records: the layout's partitions, time retention.
    Data,
    /// Checkpoints and schemas: one partition, compacted (the latest value per key is kept).
    Compacted,
    /// Undecodable messages: one partition, time retention.
    DeadLetter,
}

/// Creates topics (when allowed) and reports partition counts.
pub(crate) struct Admin {
    settings: KafkaSettings,
    admin: AdminClient<DefaultClientContext>,
    metadata: Arc<BaseConsumer>,
}

impl Admin {
    pub(crate) fn new(settings: &KafkaSettings) -> Result<Self> {
        let admin = settings.base().create().map_err(|e| {
            Error::new(ErrorKind::Config, format!("buffer.kafka: cannot create a Kafka admin client: {e}"))
        })?;
        let metadata = settings
            .reader_config()
            .create()
            .map_err(|e| Error::new(ErrorKind::Config, format!("buffer.kafka: cannot create a Kafka client: {e}")))?;
        Ok(Admin { settings: settings.clone(), admin, metadata: Arc::new(metadata) })
    }

    /// Partitions of `topic`, creating it first when it is missing and creation is allowed.
    pub(crate) async fn ensure(&self, topic: &str, role: TopicRole) -> Result<i32> {
        if let Some(n) = self.partitions(topic).await? {
            return Ok(n);
        }
        if !self.settings.create_topics {
            return Err(Error::new(ErrorKind::Buffer, format!("Kafka topic {topic} does not exist"))
                .with_hint("create it, or set buffer.kafka.create_topics = true"));
        }
        let partitions = if role == TopicRole::Data { self.settings.partitions } else { 1 };
        let replication = TopicReplication::Fixed(self.settings.replication_factor);
        let retention = self.settings.retention_ms.to_string();
        let new = match role {
            TopicRole::Compacted => NewTopic::new(topic, 1, replication).set("cleanup.policy", "compact"),
            TopicRole::Data => NewTopic::new(topic, partitions, replication).set("retention.ms", &retention),
            TopicRole::DeadLetter => NewTopic::new(topic, 1, replication),
        };
        let opts = AdminOptions::new().operation_timeout(Some(REQUEST_TIMEOUT));
        let results = self
            .admin
            .create_topics([&new], &opts)
            .await
            .map_err(|e| unavailable(e, format!("creating Kafka topic {topic}")))?;
        for r in results {
            match r {
                Ok(_) => tracing::info!(topic, partitions, ?role, "created Kafka topic"),
                // Another process created it first: fine.
                Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((_, code)) => {
                    return Err(Error::new(ErrorKind::Buffer, format!("creating Kafka topic {topic}: {code}"))
                        .with_hint("create the topic yourself, or grant binferry's Kafka user CREATE on it"));
                }
            }
        }
        // Metadata follows creation with a delay on some brokers.
        for _ in 0..100 {
            if let Some(n) = self.partitions(topic).await? {
                return Ok(n);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Err(Error::new(ErrorKind::BufferUnavailable, format!("Kafka topic {topic} was created but does not show up")))
    }

    /// Every partition of the data topics of this pipeline, with its low and high watermarks.
    /// Every partition of the pipeline's data topics, without offsets.
    pub(crate) async fn data_topic_partitions(&self) -> Result<Vec<(String, i32)>> {
        let consumer = Arc::clone(&self.metadata);
        let prefix = format!("{}.", self.settings.topics.prefix);
        tokio::task::spawn_blocking(move || {
            let md =
                consumer.fetch_metadata(None, REQUEST_TIMEOUT).map_err(|e| unavailable(e, "listing Kafka topics"))?;
            let mut out: Vec<(String, i32)> = md
                .topics()
                .iter()
                .filter(|t| t.name().starts_with(&prefix))
                .flat_map(|t| t.partitions().iter().map(|p| (t.name().to_string(), p.id())))
                .collect();
            out.sort();
            Ok(out)
        })
        .await
        .map_err(|e| Error::internal(format!("Kafka metadata task failed: {e}")))?
    }

    pub(crate) async fn data_partitions(&self) -> Result<Vec<(String, i32, u64, u64)>> {
        let consumer = Arc::clone(&self.metadata);
        let prefix = format!("{}.", self.settings.topics.prefix);
        tokio::task::spawn_blocking(move || {
            let md =
                consumer.fetch_metadata(None, REQUEST_TIMEOUT).map_err(|e| unavailable(e, "listing Kafka topics"))?;
            let mut out = Vec::new();
            for t in md.topics().iter().filter(|t| t.name().starts_with(&prefix)) {
                for p in t.partitions() {
                    let (low, high) = consumer
                        .fetch_watermarks(t.name(), p.id(), REQUEST_TIMEOUT)
                        .map_err(|e| unavailable(e, format!("reading offsets of {}/{}", t.name(), p.id())))?;
                    out.push((t.name().to_string(), p.id(), super::offset_u64(low), super::offset_u64(high)));
                }
            }
            out.sort();
            Ok(out)
        })
        .await
        .map_err(|e| Error::internal(format!("Kafka metadata task failed: {e}")))?
    }

    /// The first offset of `topic`/`partition` with a timestamp at or after `unix_ms` (the end
    /// when there is none).
    pub(crate) async fn offset_at_time(&self, topic: &str, partition: i32, unix_ms: u64) -> Result<u64> {
        let consumer = Arc::clone(&self.metadata);
        let name = topic.to_string();
        let ms = i64::try_from(unix_ms).unwrap_or(i64::MAX);
        tokio::task::spawn_blocking(move || {
            let mut tpl = rdkafka::TopicPartitionList::new();
            tpl.add_partition_offset(&name, partition, rdkafka::Offset::Offset(ms))
                .map_err(|e| unavailable(e, format!("looking up a time in {name}")))?;
            let found = consumer
                .offsets_for_times(tpl, REQUEST_TIMEOUT)
                .map_err(|e| unavailable(e, format!("looking up a time in {name}")))?;
            let offset = found.find_partition(&name, partition).map(|e| e.offset());
            match offset {
                Some(rdkafka::Offset::Offset(o)) => Ok(super::offset_u64(o)),
                _ => {
                    let (_, high) = consumer
                        .fetch_watermarks(&name, partition, REQUEST_TIMEOUT)
                        .map_err(|e| unavailable(e, format!("reading offsets of {name}/{partition}")))?;
                    Ok(super::offset_u64(high))
                }
            }
        })
        .await
        .map_err(|e| Error::internal(format!("Kafka metadata task failed: {e}")))?
    }

    /// Partitions of `topic`, `None` when it does not exist.
    pub(crate) async fn partitions(&self, topic: &str) -> Result<Option<i32>> {
        let consumer = Arc::clone(&self.metadata);
        let name = topic.to_string();
        // librdkafka's metadata call blocks; it is short and rare (once per topic).
        let md = tokio::task::spawn_blocking(move || consumer.fetch_metadata(Some(&name), REQUEST_TIMEOUT))
            .await
            .map_err(|e| Error::internal(format!("Kafka metadata task failed: {e}")))?
            .map_err(|e| unavailable(e, format!("reading metadata of Kafka topic {topic}")))?;
        let Some(t) = md.topics().iter().find(|t| t.name() == topic) else { return Ok(None) };
        match t.error().map(RDKafkaErrorCode::from) {
            None if !t.partitions().is_empty() => Ok(Some(t.partitions().len() as i32)),
            Some(RDKafkaErrorCode::UnknownTopicOrPartition) => Ok(None),
            // Anything else (a leader election, a broker starting) says nothing about whether
            // the topic exists: taking it for "missing" would, for the checkpoint topic, start
            // the pipeline over from a new snapshot.
            other => Err(Error::new(
                ErrorKind::BufferUnavailable,
                format!(
                    "Kafka topic {topic} is not available yet ({})",
                    other.map_or_else(|| "no partitions".to_string(), |c| c.to_string())
                ),
            )),
        }
    }
}
