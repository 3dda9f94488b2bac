//! Sink workers as a consumer group: the group decides which worker owns which partition;
//! each owned partition is applied by its own writer.
//!
//! The group member never consumes records itself (its partitions are paused): each owned
//! partition gets a [`PartitionLog`] that starts at the offset the target recorded for it.
//! When the group takes a partition away, the revoke callback blocks until that partition's
//! writer has committed its complete transactions and rolled back the rest, so a partition
//! is never applied by two workers at once and nothing is committed past what was applied.
//! (Even if that went wrong, rows carry their source position and older changes never
//! overwrite newer ones.)

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex, mpsc as std_mpsc};
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tracing::{error, info, warn};

use super::KafkaSettings;
use super::admin::{Admin, TopicRole};
use super::partition::PartitionLog;
use super::schemas::SchemaRegistry;
use crate::config::PoisonMode;
use crate::error::{Error, ErrorKind, Result};
use crate::pipeline::Stats;
use crate::sink::Sink;
use crate::writer::{self, WriterSettings};

/// How long a revoked partition's writer may take to finish its batch before it is cut off
/// (its open target transaction then rolls back with its connection).
const REVOKE_TIMEOUT: Duration = Duration::from_secs(60);
/// How often applied offsets are committed to the group, for monitoring.
const PROGRESS_COMMIT_INTERVAL: Duration = Duration::from_secs(5);

type PartitionId = (String, i32);

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

/// Run sink workers for every partition this member is given, until `drain` turns true (then
/// each finishes its batch) or a partition fails with a definite error.
pub async fn run<S, F>(
    settings: KafkaSettings,
    writer_settings: WriterSettings,
    make_sink: F,
    stats: Arc<Stats>,
    mut drain: watch::Receiver<bool>,
) -> Result<()>
where
    S: Sink + Send + 'static,
    F: Fn(&str) -> S,
{
    if settings.on_poison == PoisonMode::DeadLetter {
        Admin::new(&settings)?.ensure(&settings.topics.dead_letter, TopicRole::DeadLetter).await?;
    }
    let (events_tx, mut events) = mpsc::channel(16);
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
        let (acked, stop, events) = (Arc::clone(&acked), Arc::clone(&stop), events_tx);
        std::thread::Builder::new()
            .name("binferry-group".into())
            .spawn(move || member_loop(consumer, &acked, &stop, &events))
            .map_err(|e| Error::internal(format!("cannot start the group thread: {e}")))?
    };

    let schemas = Arc::new(SchemaRegistry::new(&settings));
    let mut owned: HashMap<PartitionId, watch::Sender<bool>> = HashMap::new();
    let mut tasks: JoinSet<(PartitionId, Result<()>)> = JoinSet::new();
    let mut failure: Option<Error> = None;
    loop {
        tokio::select! {
            ev = events.recv() => match ev {
                Some(GroupEvent::Assigned(parts)) => {
                    for id in parts {
                        if owned.contains_key(&id) {
                            continue;
                        }
                        let (close_tx, close_rx) = watch::channel(false);
                        let counter = Arc::new(AtomicI64::new(-1));
                        if let Ok(mut a) = acked.lock() {
                            a.insert(id.clone(), Arc::clone(&counter));
                        }
                        let log = PartitionLog::new(&settings, &id.0, id.1, Arc::clone(&schemas), close_rx.clone(), counter)?;
                        let sink = make_sink(&log.stream());
                        info!(topic = %id.0, partition = id.1, "partition assigned");
                        let (ws, st, key) = (writer_settings.clone(), Arc::clone(&stats), id.clone());
                        tasks.spawn(async move { (key, writer::run(ws, Arc::new(log), sink, st, close_rx).await) });
                        owned.insert(id, close_tx);
                    }
                }
                Some(GroupEvent::Revoked(parts, done)) => {
                    close(&parts, &mut owned, &mut tasks, &acked, &mut failure).await;
                    let _ = done.send(());
                }
                Some(GroupEvent::Failed(e)) => warn!(error = %e, "consumer group trouble; librdkafka retries"),
                None => break,
            },
            Some(joined) = tasks.join_next(), if !tasks.is_empty() => {
                let (id, result) = joined.map_err(|e| Error::internal(format!("partition writer panicked: {e}")))?;
                owned.remove(&id);
                if let Err(e) = result {
                    error!(topic = %id.0, partition = id.1, error = %e, "partition writer stopped");
                    failure = Some(e);
                    break;
                }
            }
            _ = crate::pipeline::raised(&mut drain) => break,
        }
    }
    // Every partition finishes its batch; then the member leaves the group.
    let all: Vec<PartitionId> = owned.keys().cloned().collect();
    close(&all, &mut owned, &mut tasks, &acked, &mut failure).await;
    stop.store(true, Ordering::Release);
    // Revokes the member may still announce while leaving need no one: its partitions are closed.
    drop(events);
    tokio::task::spawn_blocking(move || member.join())
        .await
        .map_err(|e| Error::internal(format!("group thread join failed: {e}")))?
        .map_err(|_| Error::internal("the group thread panicked"))?;
    match failure {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// Close `parts`: readers stop, writers commit their complete transactions and return.
async fn close(
    parts: &[PartitionId],
    owned: &mut HashMap<PartitionId, watch::Sender<bool>>,
    tasks: &mut JoinSet<(PartitionId, Result<()>)>,
    acked: &Mutex<HashMap<PartitionId, Arc<AtomicI64>>>,
    failure: &mut Option<Error>,
) {
    let mut waiting = 0;
    for id in parts {
        if let Some(tx) = owned.get(id) {
            let _ = tx.send(true);
            waiting += 1;
        }
    }
    let deadline = tokio::time::Instant::now() + REVOKE_TIMEOUT;
    while waiting > 0 {
        match tokio::time::timeout_at(deadline, tasks.join_next()).await {
            Ok(Some(Ok((id, result)))) => {
                if parts.contains(&id) {
                    waiting -= 1;
                }
                owned.remove(&id);
                if let Err(e) = result {
                    error!(topic = %id.0, partition = id.1, error = %e, "partition writer stopped");
                    failure.get_or_insert(e);
                }
            }
            Ok(Some(Err(e))) => {
                failure.get_or_insert(Error::internal(format!("partition writer panicked: {e}")));
                waiting -= 1;
            }
            Ok(None) => break,
            Err(_) => {
                // Cut off: dropping the writer drops its connection, which rolls back.
                warn!("partition writers did not finish within {REVOKE_TIMEOUT:?}; abandoning their batches");
                tasks.abort_all();
                while tasks.join_next().await.is_some() {}
                owned.clear();
                break;
            }
        }
    }
    if let Ok(mut a) = acked.lock() {
        for id in parts {
            a.remove(id);
        }
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
