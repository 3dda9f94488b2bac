//! Sink workers as a consumer group: the group decides which worker owns which partition.
//! This module only keeps the membership; the pipeline runs a writer per owned partition.
//!
//! The group member never consumes records itself (its partitions are paused): each owned
//! partition gets a [`PartitionLog`] that starts at the offset the target recorded for it.
//! When the group takes a partition away, the revoke callback blocks until the
//! [`Revocation`] is released, which the pipeline does once that partition's writer has
//! committed its complete transactions and rolled back the rest, so a partition is never
//! applied by two workers at once and nothing is committed past what was applied.
//! (Even if that went wrong, rows carry their source position and older changes never
//! overwrite newer ones.)

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex, mpsc as std_mpsc};
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use tokio::sync::mpsc;
use tracing::{error, info, warn};

use super::KafkaSettings;
use super::admin::{Admin, TopicRole};
use super::partition::PartitionLog;
use super::schemas::SchemaRegistry;
use crate::config::PoisonMode;
use crate::error::{Error, ErrorKind, Result};
use crate::shutdown::Shutdown;
use crate::telemetry::Stats;

/// How long a revoked partition's writer may take to finish its batch before it is cut off
/// (its open target transaction then rolls back with its connection).
pub const REVOKE_TIMEOUT: Duration = Duration::from_secs(60);
/// How often applied offsets are committed to the group, for monitoring.
const PROGRESS_COMMIT_INTERVAL: Duration = Duration::from_secs(5);

/// A partition: topic and number.
pub type PartitionId = (String, i32);

enum GroupEvent {
    Assigned(Vec<PartitionId>),
    Revoked(Vec<PartitionId>, std_mpsc::SyncSender<()>),
    Failed(Error),
}

struct GroupContext {
    events: mpsc::Sender<GroupEvent>,
}

impl ClientContext for GroupContext {
    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        // A pattern subscription matching no topic yet is the normal state of a fresh
        // pipeline (topics appear with the first records), not an error.
        if error.rdkafka_error_code() == Some(rdkafka::types::RDKafkaErrorCode::UnknownTopicOrPartition) {
            tracing::debug!(%error, reason, "no data topic yet");
        } else {
            error!(%error, reason, "Kafka client error");
        }
    }
}

fn partitions_of(tpl: &TopicPartitionList) -> Vec<PartitionId> {
    tpl.elements().iter().map(|e| (e.topic().to_string(), e.partition())).collect()
}

impl ConsumerContext for GroupContext {
    fn pre_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(tpl) = rebalance {
            let (tx, rx) = std_mpsc::sync_channel(1);
            // Runs on the group thread, never on the async runtime: blocking is allowed, and
            // required: the partitions must be released before the group reassigns them.
            if self.events.blocking_send(GroupEvent::Revoked(partitions_of(tpl), tx)).is_ok() {
                let _ = rx.recv_timeout(REVOKE_TIMEOUT + Duration::from_secs(5));
            }
        }
    }

    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(tpl) => {
                info!(partitions = tpl.count(), "consumer group assignment received");
                // The member only holds ownership; partition readers fetch the records.
                if let Err(e) = consumer.pause(tpl) {
                    warn!(error = %e, "cannot pause the group member's partitions");
                }
                let _ = self.events.blocking_send(GroupEvent::Assigned(partitions_of(tpl)));
            }
            Rebalance::Error(e) => {
                let _ = self.events.blocking_send(GroupEvent::Failed(Error::new(
                    ErrorKind::BufferUnavailable,
                    format!("Kafka consumer group rebalance failed: {e}"),
                )));
            }
            Rebalance::Revoke(_) => {}
        }
    }
}

/// This worker's membership in the consumer group: which partitions it owns, as a stream of
/// [`Assignment`]s. It never runs writers; the pipeline's worker pool does, and answers each
/// revocation once their writers have committed.
pub struct Membership {
    settings: KafkaSettings,
    stats: Arc<Stats>,
    schemas: Arc<SchemaRegistry>,
    events: mpsc::Receiver<GroupEvent>,
    /// Applied offset per owned partition, committed to the group for monitoring.
    acked: Arc<Mutex<HashMap<PartitionId, Arc<AtomicI64>>>>,
    stop: Arc<AtomicBool>,
    member: std::thread::JoinHandle<()>,
    /// Assignments received and not handed out yet.
    pending: VecDeque<Result<Assignment>>,
}

/// A change of what this worker owns.
pub enum Assignment {
    /// A partition is now this worker's: apply `log` until `close` is triggered.
    Assigned {
        /// The partition.
        id: PartitionId,
        /// Its reader, starting wherever the writer asks (the target's checkpoint).
        log: Box<PartitionLog>,
        /// Ends the reader; the writer applying it should drain on the same signal.
        close: Shutdown,
    },
    /// The group takes these partitions away. Close their writers, wait until they have
    /// committed, then [`Revocation::release`]: the group reassigns them only after that.
    Revoked(Revocation),
}

/// A pending revocation; the group waits until it is released (or dropped).
pub struct Revocation {
    /// The partitions taken away.
    pub partitions: Vec<PartitionId>,
    done: std_mpsc::SyncSender<()>,
    acked: Arc<Mutex<HashMap<PartitionId, Arc<AtomicI64>>>>,
}

impl Revocation {
    /// Their writers have stopped: let the group hand the partitions to another worker.
    pub fn release(self) {
        if let Ok(mut a) = self.acked.lock() {
            for id in &self.partitions {
                a.remove(id);
            }
        }
        let _ = self.done.send(());
    }
}

impl Membership {
    /// Join the consumer group of `settings` (creating the dead-letter topic first when one
    /// is configured).
    pub async fn join(settings: KafkaSettings, stats: Arc<Stats>) -> Result<Self> {
        if settings.on_poison == PoisonMode::DeadLetter {
            Admin::new(&settings)?.ensure(&settings.topics.dead_letter, TopicRole::DeadLetter).await?;
        }
        let (events_tx, events) = mpsc::channel(16);
        let consumer: BaseConsumer<GroupContext> =
            settings.group_config().create_with_context(GroupContext { events: events_tx.clone() }).map_err(|e| {
                Error::new(ErrorKind::Config, format!("buffer.kafka.consumer: cannot create the group consumer: {e}"))
            })?;
        let pattern = settings.topics.data_pattern();
        consumer
            .subscribe(&[pattern.as_str()])
            .map_err(|e| Error::new(ErrorKind::BufferUnavailable, format!("subscribing to {pattern}: {e}")))?;
        info!(group = %settings.group_id, topics = %pattern, "sink worker joined the consumer group");
        let acked: Arc<Mutex<HashMap<PartitionId, Arc<AtomicI64>>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let member = {
            let (acked, stop) = (Arc::clone(&acked), Arc::clone(&stop));
            std::thread::Builder::new()
                .name("binferry-group".into())
                .spawn(move || member_loop(consumer, &acked, &stop, &events_tx))
                .map_err(|e| Error::internal(format!("cannot start the group thread: {e}")))?
        };
        let schemas = Arc::new(SchemaRegistry::new(&settings));
        Ok(Membership { settings, stats, schemas, events, acked, stop, member, pending: VecDeque::new() })
    }

    /// The next change of ownership; `None` once the group thread is gone.
    pub async fn next(&mut self) -> Option<Result<Assignment>> {
        loop {
            // The group reports a whole assignment at once; it is handed out one by one.
            if let Some(a) = self.pending.pop_front() {
                return Some(a);
            }
            match self.events.recv().await? {
                GroupEvent::Assigned(parts) => {
                    for id in parts {
                        let a = self.assigned(id);
                        self.pending.push_back(a);
                    }
                }
                GroupEvent::Revoked(partitions, done) => {
                    let acked = Arc::clone(&self.acked);
                    return Some(Ok(Assignment::Revoked(Revocation { partitions, done, acked })));
                }
                GroupEvent::Failed(e) => warn!(error = %e, "consumer group trouble; librdkafka retries"),
            }
        }
    }

    fn assigned(&self, id: PartitionId) -> Result<Assignment> {
        let counter = Arc::new(AtomicI64::new(-1));
        if let Ok(mut a) = self.acked.lock() {
            a.insert(id.clone(), Arc::clone(&counter));
        }
        let close = Shutdown::new();
        let log = PartitionLog::new(&self.settings, &id.0, id.1, Arc::clone(&self.schemas), close.clone(), counter)?
            .with_stats(Arc::clone(&self.stats));
        info!(topic = %id.0, partition = id.1, "partition assigned");
        Ok(Assignment::Assigned { id, log: Box::new(log), close })
    }

    /// Leave the group (the caller has closed every partition's writer).
    pub async fn leave(self) -> Result<()> {
        self.stop.store(true, Ordering::Release);
        // Revokes the member may still announce while leaving need no one: its partitions are closed.
        drop(self.events);
        let member = self.member;
        tokio::task::spawn_blocking(move || member.join())
            .await
            .map_err(|e| Error::internal(format!("group thread join failed: {e}")))?
            .map_err(|_| Error::internal("the group thread panicked"))
    }
}

/// The group member's thread: keeps membership alive and reports applied offsets.
fn member_loop(
    consumer: BaseConsumer<GroupContext>,
    acked: &Mutex<HashMap<PartitionId, Arc<AtomicI64>>>,
    stop: &AtomicBool,
    events: &mpsc::Sender<GroupEvent>,
) {
    let mut last_commit = std::time::Instant::now();
    let mut committed: HashMap<PartitionId, i64> = HashMap::new();
    while !stop.load(Ordering::Acquire) {
        // Partitions are paused: polling serves rebalances, heartbeats and errors only.
        if let Some(Err(e)) = consumer.poll(Duration::from_millis(100))
            && e.rdkafka_error_code() != Some(rdkafka::types::RDKafkaErrorCode::UnknownTopicOrPartition)
        {
            let _ = events.try_send(GroupEvent::Failed(Error::new(
                ErrorKind::BufferUnavailable,
                format!("Kafka consumer group: {e}"),
            )));
        }
        if last_commit.elapsed() < PROGRESS_COMMIT_INTERVAL {
            continue;
        }
        last_commit = std::time::Instant::now();
        let mut tpl = TopicPartitionList::new();
        if let Ok(a) = acked.lock() {
            for (id, counter) in a.iter() {
                let applied = counter.load(Ordering::Acquire);
                if applied >= 0 && committed.get(id) != Some(&applied) {
                    // Kafka's convention: the committed offset is the next one to read.
                    let _ = tpl.add_partition_offset(&id.0, id.1, Offset::Offset(applied + 1));
                    committed.insert(id.clone(), applied);
                }
            }
        }
        if tpl.count() > 0 {
            // Progress information only: the target's own record is what resumes.
            let _ = consumer.commit(&tpl, CommitMode::Async);
        }
    }
    consumer.unsubscribe();
}
