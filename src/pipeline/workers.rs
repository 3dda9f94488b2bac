//! The Kafka worker pool: one writer per partition this worker owns in the consumer group.
//!
//! Membership lives in the buffer ([`Membership`]); this is where writers are started when a
//! partition is assigned and closed (drained and committed) before a revocation is released,
//! so a partition is never applied by two workers at once.

use std::collections::HashMap;
use std::sync::Arc;

use tokio::task::JoinSet;
use tracing::{error, warn};

use crate::buffer::kafka::KafkaSettings;
use crate::buffer::kafka::group::{Assignment, Membership, PartitionId, REVOKE_TIMEOUT};
use crate::buffer::kafka::partition::PartitionLog;
use crate::error::{Error, Result};
use crate::shutdown::Shutdown;
use crate::sink::{Sink, TableState};
use crate::telemetry::Stats;
use crate::writer::{self, WriterSettings};

type Writers = JoinSet<(PartitionId, Result<()>)>;

/// Run a writer for every partition this member is given, until `drain` is triggered (then
/// each finishes its batch) or a partition fails with a definite error.
pub(super) async fn run<S, F>(
    settings: KafkaSettings,
    writer_settings: WriterSettings,
    make_sink: F,
    stats: Arc<Stats>,
    drain: Shutdown,
) -> Result<()>
where
    S: Sink + TableState + Send + 'static,
    F: Fn(&str) -> S,
{
    let mut membership = Membership::join(settings, Arc::clone(&stats)).await?;
    let mut owned: HashMap<PartitionId, Shutdown> = HashMap::new();
    let mut tasks: Writers = JoinSet::new();
    let mut failure: Option<Error> = None;
    loop {
        tokio::select! {
            next = membership.next() => match next {
                Some(Ok(Assignment::Assigned { id, log, close })) => {
                    if owned.contains_key(&id) {
                        continue;
                    }
                    let sink = make_sink(&log.stream());
                    let (ws, st, key, drain) = (writer_settings.clone(), Arc::clone(&stats), id.clone(), close.clone());
                    tasks.spawn(async move { (key, writer::run(ws, Arc::<PartitionLog>::from(log), sink, st, drain).await) });
                    owned.insert(id, close);
                }
                Some(Ok(Assignment::Revoked(revocation))) => {
                    close(&revocation.partitions, &mut owned, &mut tasks, &mut failure).await;
                    revocation.release();
                }
                Some(Err(e)) => {
                    failure = Some(e);
                    break;
                }
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
            _ = drain.triggered() => break,
        }
    }
    // Every partition finishes its batch; then the member leaves the group.
    let all: Vec<PartitionId> = owned.keys().cloned().collect();
    close(&all, &mut owned, &mut tasks, &mut failure).await;
    membership.leave().await?;
    match failure {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// Close `parts`: readers stop, writers commit their complete transactions and return.
async fn close(
    parts: &[PartitionId],
    owned: &mut HashMap<PartitionId, Shutdown>,
    tasks: &mut Writers,
    failure: &mut Option<Error>,
) {
    let mut waiting = 0;
    for id in parts {
        if let Some(close) = owned.get(id) {
            close.trigger();
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
}
