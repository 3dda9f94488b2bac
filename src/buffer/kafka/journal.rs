//! The source side: publishing records, schemas and checkpoints to Kafka.

use std::borrow::Cow;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Offset, TopicPartitionList};
use serde::{Deserialize, Serialize};

use super::admin::{Admin, TopicRole};
use super::{KafkaSettings, MessageKey, unavailable};
use crate::buffer::{AppendBatch, Journal};
use crate::config::KafkaLayout;
use crate::error::{Error, ErrorKind, Result};
use crate::event::{ChangeEvent, Record, envelope};
use crate::position::SourceCheckpoint;
use crate::telemetry::Stats;

/// How long reading the checkpoint topic may take at start-up.
const CHECKPOINT_READ_TIMEOUT: Duration = Duration::from_secs(60);

/// The checkpoint message, versioned like the envelope.
#[derive(Serialize, Deserialize)]
struct CheckpointMessage {
    v: u32,
    checkpoint: SourceCheckpoint,
}
const CHECKPOINT_VERSION: u32 = 1;

/// Publishes what the source reads. See the [module docs](super) for the guarantees.
pub struct KafkaJournal {
    settings: KafkaSettings,
    admin: Admin,
    /// Rebuilt after a failed append: an idempotent producer can be left in a fatal state.
    producer: Mutex<Option<FutureProducer>>,
    /// Serialises appends (records must reach each partition in source order).
    state: tokio::sync::Mutex<State>,
    /// The last checkpoint the brokers acknowledged in this process.
    last_checkpoint: Mutex<Option<SourceCheckpoint>>,
    /// Where acknowledged records are counted.
    stats: Arc<Stats>,
}

#[derive(Default)]
struct State {
    /// Known topics and their partition counts.
    topics: HashMap<String, i32>,
    /// Schema versions acknowledged in the schema topic by this process.
    published: HashSet<u64>,
    /// Primary key column indexes by schema version (routing needs the key).
    keys: HashMap<u64, Vec<usize>>,
    /// Partitions holding changes of the transaction in progress: its commit goes to each.
    touched: BTreeSet<(String, i32)>,
}

impl KafkaJournal {
    /// A journal for `settings`; connects lazily.
    pub fn new(settings: KafkaSettings) -> Result<Self> {
        let admin = Admin::new(&settings)?;
        Ok(KafkaJournal {
            settings,
            admin,
            producer: Mutex::new(None),
            state: tokio::sync::Mutex::new(State::default()),
            last_checkpoint: Mutex::new(None),
            stats: Arc::new(Stats::default()),
        })
    }

    /// Count what the brokers acknowledge into the pipeline's `stats`.
    pub fn with_stats(self, stats: Arc<Stats>) -> Self {
        KafkaJournal { stats, ..self }
    }

    fn producer(&self) -> Result<FutureProducer> {
        let mut slot = self.producer.lock().map_err(|_| Error::internal("Kafka producer lock poisoned"))?;
        if let Some(p) = slot.as_ref() {
            return Ok(p.clone());
        }
        let p: FutureProducer = self.settings.producer_config().create().map_err(|e| {
            Error::new(ErrorKind::Config, format!("buffer.kafka.producer: cannot create the Kafka producer: {e}"))
        })?;
        *slot = Some(p.clone());
        Ok(p)
    }

    async fn partitions(&self, st: &mut State, topic: &str, role: TopicRole) -> Result<i32> {
        if let Some(n) = st.topics.get(topic) {
            return Ok(*n);
        }
        let n = self.admin.ensure(topic, role).await?;
        st.topics.insert(topic.to_string(), n);
        Ok(n)
    }

    /// Where a record goes: the messages it becomes, each with its key and partitions. A
    /// record is one message, except a primary-key move in the `key` layout whose old and new
    /// keys live in different partitions: that is two ([`ChangeEvent::split_key_move`]).
    async fn route<'r>(&self, st: &mut State, record: &'r Record) -> Result<Vec<Routed<'r>>> {
        let layout = self.settings.layout;
        match record {
            Record::Change(ev) => {
                let topic = self.settings.topics.data(layout, &ev.table);
                let n = self.partitions(st, &topic, TopicRole::Data).await?;
                let key_cols = st.keys.get(&ev.schema_version).ok_or_else(|| {
                    Error::internal(format!(
                        "schema {:016x} of {} was not handed to the journal",
                        ev.schema_version, ev.table
                    ))
                })?;
                let per_key = layout == KafkaLayout::Key && n > 1;
                if per_key && let Some((delete, insert)) = ev.split_key_move(key_cols) {
                    let (old, new) = (keyed(&delete, key_cols, n)?, keyed(&insert, key_cols, n)?);
                    if old.1 != new.1 {
                        let mut out = Vec::with_capacity(2);
                        for ((key, partition), piece) in [(old, delete), (new, insert)] {
                            st.touched.insert((topic.clone(), partition));
                            out.push(Routed {
                                key: Some(key),
                                record: Cow::Owned(Record::Change(piece)),
                                to: vec![(topic.clone(), partition)],
                            });
                        }
                        return Ok(out);
                    }
                }
                let (key, partition) = keyed(ev, key_cols, if per_key { n } else { 1 })?;
                st.touched.insert((topic.clone(), partition));
                Ok(vec![Routed { key: Some(key), record: Cow::Borrowed(record), to: vec![(topic, partition)] }])
            }
            Record::Ddl(ddl) => {
                let topic = self.settings.topics.data(layout, &ddl.table);
                let n = self.partitions(st, &topic, TopicRole::Data).await?;
                let key = MessageKey::encode(&ddl.table, None)?;
                let all: Vec<(String, i32)> = (0..n).map(|p| (topic.clone(), p)).collect();
                st.touched.extend(all.iter().cloned());
                Ok(vec![Routed { key: Some(key), record: Cow::Borrowed(record), to: all }])
            }
            Record::Commit(_) => {
                let touched: Vec<(String, i32)> = std::mem::take(&mut st.touched).into_iter().collect();
                let to = match touched.is_empty() {
                    false => touched,
                    // A commit without changes marks the point where the target becomes
                    // consistent (`Commit::consistent`): news for every partition's writer.
                    true => self.admin.data_topic_partitions().await?,
                };
                Ok(vec![Routed { key: None, record: Cow::Borrowed(record), to }])
            }
        }
    }

    async fn publish(&self, batch: &AppendBatch) -> Result<()> {
        let mut st = self.state.lock().await;
        let producer = self.producer()?;
        let topics = &self.settings.topics;

        // Schemas first, acknowledged before any record that names them.
        let mut pending = Vec::new();
        let schema_topic = topics.schemas();
        let fresh: Vec<_> = batch.schemas.iter().filter(|s| !st.published.contains(&s.version())).cloned().collect();
        if !fresh.is_empty() {
            self.partitions(&mut st, &schema_topic, TopicRole::Compacted).await?;
        }
        for s in &fresh {
            let value =
                serde_json::to_vec(&**s).map_err(|e| Error::internal(format!("cannot encode a schema: {e}")))?;
            let key = format!("{:016x}", s.version());
            pending.push(send(&producer, &schema_topic, 0, Some(key.as_bytes()), &value).await?);
        }
        for s in &batch.schemas {
            st.keys.insert(s.version(), s.primary_key.clone());
        }
        delivered(pending, "schemas").await?;
        st.published.extend(fresh.iter().map(|s| s.version()));

        let mut pending = Vec::with_capacity(batch.records.len());
        for record in &batch.records {
            for message in self.route(&mut st, record).await? {
                let payload = envelope::encode(&message.record)?;
                for (topic, partition) in message.to {
                    pending.push(send(&producer, &topic, partition, message.key.as_deref(), &payload).await?);
                }
            }
        }
        let produced = pending.len() as u64;
        delivered(pending, "change records").await?;
        // The window the writer must survive: complete transactions and the start of another
        // are in the topic, the checkpoint still before them (tests crash here on purpose).
        let ends_inside = batch.records.last().is_some_and(|r| !matches!(r, Record::Commit(_)));
        if ends_inside && batch.records.iter().any(|r| matches!(r, Record::Commit(_))) {
            crate::failpoint::hit("kafka-before-checkpoint-mid-transaction");
        }
        self.stats.record_kafka_produced(produced);

        // Only now may the checkpoint move past these records.
        let cp_topic = topics.checkpoints();
        self.partitions(&mut st, &cp_topic, TopicRole::Compacted).await?;
        let value =
            serde_json::to_vec(&CheckpointMessage { v: CHECKPOINT_VERSION, checkpoint: batch.checkpoint.clone() })
                .map_err(|e| Error::internal(format!("cannot encode the checkpoint: {e}")))?;
        let f = send(&producer, &cp_topic, 0, Some(self.settings.pipeline.as_bytes()), &value).await?;
        delivered(vec![f], "the source checkpoint").await?;
        if let Ok(mut last) = self.last_checkpoint.lock() {
            *last = Some(batch.checkpoint.clone());
        }
        Ok(())
    }

    /// Read the newest checkpoint of this pipeline from the checkpoint topic.
    async fn read_checkpoint(&self) -> Result<SourceCheckpoint> {
        let topic = self.settings.topics.checkpoints();
        if self.admin.partitions(&topic).await?.is_none() {
            return Ok(SourceCheckpoint::default());
        }
        let consumer: BaseConsumer = self.settings.reader_config().create().map_err(|e| {
            Error::new(ErrorKind::Config, format!("buffer.kafka.consumer: cannot create a Kafka consumer: {e}"))
        })?;
        let pipeline = self.settings.pipeline.clone();
        let cp = tokio::task::spawn_blocking(move || newest_checkpoint(&consumer, &topic, &pipeline))
            .await
            .map_err(|e| Error::internal(format!("Kafka checkpoint task failed: {e}")))??;
        tracing::info!(
            resume = %cp.resume.as_ref().map_or_else(|| "-".to_string(), |p| p.to_string()),
            snapshot_complete = cp.snapshot.complete,
            "source checkpoint read from Kafka"
        );
        Ok(cp)
    }
}

/// One message to produce: its key, what it carries (a record, or a piece of one) and the
/// partitions it goes to.
struct Routed<'r> {
    key: Option<Vec<u8>>,
    record: Cow<'r, Record>,
    to: Vec<(String, i32)>,
}

/// The message key of change `ev` (`key_cols`: its table's primary key) and its partition of
/// `partitions`: by the key's hash, so that each key's changes stay in order in one partition.
/// A keyless table has no row identity that survives an update: its rows all go to one
/// partition (chosen by table), so that its multiset stays consistent.
fn keyed(ev: &ChangeEvent, key_cols: &[usize], partitions: i32) -> Result<(Vec<u8>, i32)> {
    let pk = ev.after.as_ref().or(ev.before.as_ref()).and_then(|row| ChangeEvent::key_of(row, key_cols));
    let keyed = pk.is_some();
    let key = MessageKey::encode(&ev.table, pk)?;
    if partitions <= 1 {
        return Ok((key, 0));
    }
    let basis = if keyed { key.clone() } else { format!("{}\0{}", ev.table.db, ev.table.name).into_bytes() };
    let h = blake3::hash(&basis);
    let mut first = [0u8; 8];
    first.copy_from_slice(&h.as_bytes()[..8]);
    Ok((key, (u64::from_be_bytes(first) % partitions as u64) as i32))
}

/// Scan the checkpoint partition from its start to its end; the last value for `pipeline`
/// wins. (The topic is compacted, so this stays short.)
fn newest_checkpoint(consumer: &BaseConsumer, topic: &str, pipeline: &str) -> Result<SourceCheckpoint> {
    let (low, high) = consumer
        .fetch_watermarks(topic, 0, CHECKPOINT_READ_TIMEOUT)
        .map_err(|e| unavailable(e, format!("reading the end of Kafka topic {topic}")))?;
    let mut found = SourceCheckpoint::default();
    if high <= low {
        return Ok(found);
    }
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, Offset::Offset(low))
        .map_err(|e| unavailable(e, format!("assigning Kafka topic {topic}")))?;
    consumer.assign(&tpl).map_err(|e| unavailable(e, format!("assigning Kafka topic {topic}")))?;
    let deadline = std::time::Instant::now() + CHECKPOINT_READ_TIMEOUT;
    let mut next = low;
    while next < high {
        if std::time::Instant::now() > deadline {
            return Err(Error::new(
                ErrorKind::BufferUnavailable,
                format!("reading Kafka topic {topic} up to offset {high} timed out at {next}"),
            ));
        }
        let Some(msg) = consumer.poll(Duration::from_millis(200)) else { continue };
        let msg = msg.map_err(|e| unavailable(e, format!("reading Kafka topic {topic}")))?;
        next = msg.offset() + 1;
        if msg.key() != Some(pipeline.as_bytes()) {
            continue;
        }
        let Some(payload) = msg.payload() else { continue };
        let m: CheckpointMessage = serde_json::from_slice(payload).map_err(|e| {
            Error::new(ErrorKind::Buffer, format!("unreadable checkpoint at {topic} offset {}: {e}", msg.offset()))
                .with_hint(
                    "the checkpoint topic holds data binferry did not write; give the pipeline a fresh topic_prefix",
                )
        })?;
        if m.v != CHECKPOINT_VERSION {
            return Err(Error::new(
                ErrorKind::Buffer,
                format!(
                    "checkpoint at {topic} offset {} has version {}, this binferry reads {CHECKPOINT_VERSION}",
                    msg.offset(),
                    m.v
                ),
            )
            .with_hint("run a binferry release that supports it"));
        }
        found = m.checkpoint;
    }
    Ok(found)
}

/// Enqueue one message, waiting while the producer's local queue is full.
async fn send(
    producer: &FutureProducer,
    topic: &str,
    partition: i32,
    key: Option<&[u8]>,
    payload: &[u8],
) -> Result<DeliveryFuture> {
    loop {
        let mut record = FutureRecord::<[u8], [u8]>::to(topic).partition(partition).payload(payload);
        if let Some(k) = key {
            record = record.key(k);
        }
        match producer.send_result(record) {
            Ok(f) => return Ok(f),
            Err((e, _)) if e.rdkafka_error_code() == Some(RDKafkaErrorCode::QueueFull) => {
                // Bounded memory: wait for deliveries to drain the local queue.
                producer.poll(Duration::from_millis(10));
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            Err((e, _)) => return Err(unavailable(e, format!("producing to Kafka topic {topic}"))),
        }
    }
}

/// Wait until the brokers acknowledged every message, in order.
async fn delivered(pending: Vec<DeliveryFuture>, what: &str) -> Result<()> {
    for f in pending {
        match f.await {
            Ok(Ok(_)) => {}
            Ok(Err((e, _))) => return Err(unavailable(e, format!("Kafka did not acknowledge {what}"))),
            Err(_) => {
                return Err(Error::new(
                    ErrorKind::BufferUnavailable,
                    format!("Kafka producer gone while sending {what}"),
                ));
            }
        }
    }
    Ok(())
}

impl Journal for KafkaJournal {
    async fn append(&self, batch: AppendBatch) -> Result<Option<u64>> {
        match self.publish(&batch).await {
            Ok(()) => Ok(None),
            Err(e) => {
                // Start clean: the source resumes from the last acknowledged checkpoint, so the
                // partial transaction bookkeeping and the producer's state go.
                self.state.lock().await.touched.clear();
                if let Ok(mut p) = self.producer.lock() {
                    *p = None;
                }
                Err(e)
            }
        }
    }

    async fn checkpoint(&self) -> Result<SourceCheckpoint> {
        if let Some(cp) = self.last_checkpoint.lock().ok().and_then(|c| c.clone()) {
            return Ok(cp);
        }
        self.read_checkpoint().await
    }

    fn unapplied(&self) -> u64 {
        // The topics' retention, not the writer, bounds what Kafka holds: never pause the reader.
        0
    }
}
