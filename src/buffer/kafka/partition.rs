//! One Kafka partition as a [`Log`]: what one writer applies.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Header, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Offset, TopicPartitionList};
use tokio::sync::Mutex;
use tracing::warn;

use super::admin::Admin;
use super::schemas::SchemaRegistry;
use super::{KafkaSettings, MessageKey, offset_u64, unavailable};
use crate::buffer::{DdlCopies, Item, Log, Poison};
use crate::config::{KafkaLayout, PoisonMode};
use crate::error::{Error, ErrorKind, Result};
use crate::event::envelope;
use crate::schema::TableSchema;
use crate::shutdown::Shutdown;
use crate::telemetry::Stats;

/// How long a bounded reader waits for a record it knows exists.
const END_WAIT: Duration = Duration::from_secs(30);

/// Reads one partition from any offset; see [`Log`].
pub struct PartitionLog {
    topic: String,
    partition: i32,
    consumer: StreamConsumer,
    schemas: Arc<SchemaRegistry>,
    /// Set when `on_poison = "dead_letter"`.
    dead_letter: Option<(FutureProducer, String)>,
    state: Mutex<ReadState>,
    /// Once true, reads return nothing: the writer finishes what it holds and stops.
    closing: Shutdown,
    /// Highest offset applied to the target (-1: none), for the group's progress commits.
    acked: Arc<AtomicI64>,
    /// Replay: read exactly up to this offset (exclusive), waiting for records before it.
    end: Option<u64>,
    /// In the key layout, every partition of the topic holds a copy of each DDL record:
    /// the settings to count them with, once ([`Log::ddl_copies`]).
    key_layout: Option<KafkaSettings>,
    copies: tokio::sync::OnceCell<Option<DdlCopies>>,
    /// Where dead letters are counted.
    stats: Arc<Stats>,
}

struct ReadState {
    /// The offset the consumer fetches next; `None` until assigned.
    next: Option<u64>,
    /// Entries received while waiting, handed out by the next read.
    pending: VecDeque<(u64, Item)>,
    /// An error met while waiting, reported by the next read.
    error: Option<Error>,
}

impl PartitionLog {
    /// A reader of `topic`/`partition`. `closing` ends reading; `acked` receives the applied offset.
    pub(crate) fn new(
        settings: &KafkaSettings,
        topic: &str,
        partition: i32,
        schemas: Arc<SchemaRegistry>,
        closing: Shutdown,
        acked: Arc<AtomicI64>,
    ) -> Result<Self> {
        let consumer: StreamConsumer = settings.reader_config().create().map_err(|e| {
            Error::new(ErrorKind::Config, format!("buffer.kafka.consumer: cannot create a Kafka consumer: {e}"))
        })?;
        let dead_letter = match settings.on_poison {
            PoisonMode::Stop => None,
            PoisonMode::DeadLetter => {
                let p: FutureProducer = settings.producer_config().create().map_err(|e| {
                    Error::new(ErrorKind::Config, format!("buffer.kafka.producer: cannot create a Kafka producer: {e}"))
                })?;
                Some((p, settings.topics.dead_letter.clone()))
            }
        };
        Ok(PartitionLog {
            topic: topic.to_string(),
            partition,
            consumer,
            schemas,
            dead_letter,
            state: Mutex::new(ReadState { next: None, pending: VecDeque::new(), error: None }),
            closing,
            acked,
            end: None,
            key_layout: (settings.layout == KafkaLayout::Key).then(|| settings.clone()),
            copies: tokio::sync::OnceCell::new(),
            stats: Arc::new(Stats::default()),
        })
    }

    /// Count dead letters into the pipeline's `stats`.
    pub(crate) fn with_stats(self, stats: Arc<Stats>) -> Self {
        PartitionLog { stats, ..self }
    }

    /// A standalone reader of `topic`/`partition` (tools and tests): its own schema cache,
    /// never closed from outside.
    pub fn open(settings: &KafkaSettings, topic: &str, partition: i32) -> Result<Self> {
        let schemas = Arc::new(SchemaRegistry::new(settings));
        let log = Self::new(settings, topic, partition, schemas, Shutdown::new(), Arc::new(AtomicI64::new(-1)))?;
        Ok(log)
    }

    /// A standalone reader that ends at `end` (exclusive): every offset before it is read,
    /// waiting for it if needed, and a read at `end` is empty. For replays.
    pub fn open_until(settings: &KafkaSettings, topic: &str, partition: i32, end: u64) -> Result<Self> {
        let mut log = Self::open(settings, topic, partition)?;
        log.end = Some(end);
        Ok(log)
    }

    /// The stream name of this partition in the target's `_binferry_state`.
    pub fn stream(&self) -> String {
        stream_name(&self.topic, self.partition)
    }

    fn seek(&self, st: &mut ReadState, from: u64) -> Result<()> {
        let mut tpl = TopicPartitionList::new();
        let offset = i64::try_from(from).map_err(|_| Error::internal(format!("offset {from} out of range")))?;
        tpl.add_partition_offset(&self.topic, self.partition, Offset::Offset(offset))
            .and_then(|()| self.consumer.assign(&tpl))
            .map_err(|e| unavailable(e, format!("assigning Kafka partition {}/{}", self.topic, self.partition)))?;
        st.next = Some(from);
        st.pending.clear();
        st.error = None;
        Ok(())
    }

    /// Turn one message into an entry; undecodable ones become poison or dead letters.
    async fn entry(&self, msg: &BorrowedMessage<'_>) -> Result<(u64, Item)> {
        let offset = offset_u64(msg.offset());
        let at = format!("Kafka topic {} partition {} offset {offset}", self.topic, self.partition);
        let decoded = match msg.payload() {
            Some(bytes) => envelope::decode(bytes, &at),
            None => Err(Error::new(ErrorKind::Buffer, format!("message without a value at {at}"))),
        };
        let err = match decoded {
            Ok(r) => return Ok((offset, Item::Record(r))),
            Err(e) => e,
        };
        let Some((producer, dlq)) = &self.dead_letter else {
            let table = msg.key().and_then(MessageKey::table_of);
            return Ok((offset, Item::Poison(Poison { table, reason: err.to_string() })));
        };
        let reason = err.to_string();
        let partition = self.partition.to_string();
        let off = offset.to_string();
        let headers = OwnedHeaders::new()
            .insert(Header { key: "binferry-topic", value: Some(self.topic.as_str()) })
            .insert(Header { key: "binferry-partition", value: Some(partition.as_str()) })
            .insert(Header { key: "binferry-offset", value: Some(off.as_str()) })
            .insert(Header { key: "binferry-error", value: Some(reason.as_str()) });
        let mut record = FutureRecord::<[u8], [u8]>::to(dlq).headers(headers);
        if let Some(k) = msg.key() {
            record = record.key(k);
        }
        if let Some(p) = msg.payload() {
            record = record.payload(p);
        }
        producer
            .send(record, Duration::from_secs(60))
            .await
            .map_err(|(e, _)| unavailable(e, format!("copying the undecodable message at {at} to {dlq}")))?;
        self.stats.record_kafka_dead_letter();
        warn!(topic = %self.topic, partition = self.partition, offset, dead_letter_topic = %dlq, error = %reason,
            "undecodable message routed to the dead-letter topic");
        Ok((offset, Item::DeadLettered))
    }

    fn failed(&self, e: KafkaError, from: u64) -> Error {
        if e.rdkafka_error_code() == Some(RDKafkaErrorCode::OffsetOutOfRange) {
            return Error::new(
                ErrorKind::Buffer,
                format!(
                    "Kafka partition {}/{}: offset {from} is no longer retained (or not yet written)",
                    self.topic, self.partition
                ),
            )
            .with_hint(
                "the target missed records that retention removed: resynchronise it from a fresh snapshot \
                 (new topic_prefix and empty target), and keep topics longer (retention.ms)",
            );
        }
        unavailable(e, format!("reading Kafka partition {}/{}", self.topic, self.partition))
    }
}

/// The `_binferry_state` stream of a partition.
pub fn stream_name(topic: &str, partition: i32) -> String {
    format!("kafka:{topic}/{partition}")
}

impl Log for PartitionLog {
    async fn read(&self, from: u64, max: usize) -> Result<Vec<(u64, Item)>> {
        if self.closing.is_triggered() {
            return Ok(Vec::new());
        }
        let mut st = self.state.lock().await;
        if st.next != Some(from) && st.pending.front().is_none_or(|(o, _)| *o != from) {
            self.seek(&mut st, from)?;
        }
        if let Some(e) = st.error.take() {
            return Err(e);
        }
        let mut out: Vec<(u64, Item)> = Vec::new();
        while out.len() < max {
            if let Some(e) = st.pending.pop_front() {
                out.push(e);
                continue;
            }
            // Only what has already arrived: the writer waits in `wait_for`.
            match tokio::time::timeout(Duration::ZERO, self.consumer.recv()).await {
                Ok(Ok(msg)) => out.push(self.entry(&msg).await?),
                Ok(Err(e)) => return Err(self.failed(e, from)),
                Err(_) => break,
            }
        }
        if let Some(end) = self.end {
            if out.is_empty() && from < end {
                // Bounded read: the records before `end` exist, so wait for them.
                match tokio::time::timeout(END_WAIT, self.consumer.recv()).await {
                    Ok(Ok(msg)) => out.push(self.entry(&msg).await?),
                    Ok(Err(e)) => return Err(self.failed(e, from)),
                    Err(_) => {
                        return Err(Error::new(
                            ErrorKind::BufferUnavailable,
                            format!(
                                "Kafka partition {}/{}: no record at offset {from} within {END_WAIT:?} (end is {end})",
                                self.topic, self.partition
                            ),
                        ));
                    }
                }
            }
            out.retain(|(o, _)| *o < end);
        }
        if let Some((last, _)) = out.last() {
            st.next = Some(last + 1);
        }
        Ok(out)
    }

    async fn wait_for(&self, offset: u64, timeout: Duration) {
        if self.closing.is_triggered() {
            tokio::time::sleep(timeout.min(Duration::from_millis(50))).await;
            return;
        }
        let mut st = self.state.lock().await;
        if !st.pending.is_empty() {
            return;
        }
        if st.next != Some(offset) && self.seek(&mut st, offset).is_err() {
            return;
        }
        tokio::select! {
            r = tokio::time::timeout(timeout, self.consumer.recv()) => match r {
                Ok(Ok(msg)) => match self.entry(&msg).await {
                    Ok(entry) => st.pending.push_back(entry),
                    Err(e) => st.error = Some(e),
                },
                Ok(Err(e)) => st.error = Some(self.failed(e, offset)),
                Err(_) => {}
            },
            _ = self.closing.triggered() => {}
        }
    }

    async fn schema(&self, version: u64) -> Result<Option<Arc<TableSchema>>> {
        self.schemas.get(version).await
    }

    fn acknowledge(&self, offset: u64) {
        self.acked.fetch_max(i64::try_from(offset).unwrap_or(i64::MAX), Ordering::AcqRel);
    }

    async fn ddl_copies(&self) -> Result<Option<DdlCopies>> {
        let Some(settings) = &self.key_layout else { return Ok(None) };
        let copies = self
            .copies
            .get_or_try_init(|| async {
                // The reader wrote each DDL record to every partition the topic had then. A
                // topic whose partitions were added since would wait for copies that never
                // come; binferry never adds partitions itself.
                let n = Admin::new(settings)?.partitions(&self.topic).await?.unwrap_or(1);
                Ok::<_, Error>((n > 1).then(|| DdlCopies {
                    group: self.topic.clone(),
                    copies: n as u32,
                    rank: self.partition as u32,
                }))
            })
            .await?;
        Ok(copies.clone())
    }
}
