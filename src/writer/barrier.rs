//! DDL barriers: a rename or drop that several buffer streams carry copies of is applied once,
//! by copy 0, after every stream has applied what came before its copy; the others wait until
//! it is applied ([`crate::buffer::DdlCopies`], [`TableState`]).

use std::time::{Duration, Instant};

use tracing::warn;

use super::Writer;
use crate::buffer::Log;
use crate::error::Result;
use crate::event::{SchemaChange, TableChange};
use crate::shutdown::Shutdown;
use crate::sink::{BarrierPhase, TableState};

/// First wait between two looks at a DDL barrier; it doubles up to [`BARRIER_POLL_MAX`].
const BARRIER_POLL: Duration = Duration::from_millis(100);

/// Longest wait between two looks at a DDL barrier (each look is a query, a job on BigQuery).
const BARRIER_POLL_MAX: Duration = Duration::from_secs(5);

/// How often a writer waiting at a DDL barrier says so.
const BARRIER_REPORT: Duration = Duration::from_secs(30);

/// Where a DDL statement stands with the other streams that carry copies of it.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Barrier {
    /// No other stream carries it.
    None,
    /// Every copy's stream has arrived and this is copy 0: it applies the statement, then
    /// marks the barrier (named by the key) applied.
    First(String),
    /// Every copy's stream has arrived and copy 0 has applied it.
    Other,
    /// The writer was asked to drain while waiting.
    Drained,
}

/// Wait until `want` streams reached `phase` of `barrier`; false when the writer is asked to
/// drain first.
async fn wait_barrier<S: TableState>(
    sink: &mut S,
    barrier: &str,
    phase: BarrierPhase,
    want: u32,
    drain: &Shutdown,
) -> Result<bool> {
    let started = Instant::now();
    let mut report_at = started + BARRIER_REPORT;
    let mut poll = BARRIER_POLL;
    loop {
        let reached = sink.ddl_barrier_count(barrier, phase).await?;
        if reached >= want {
            return Ok(true);
        }
        if drain.is_triggered() {
            return Ok(false);
        }
        if Instant::now() >= report_at {
            warn!(
                barrier,
                phase = phase.as_str(),
                reached,
                of = want,
                waited_s = started.elapsed().as_secs(),
                "waiting for the other partitions at a schema change; a partition no worker reads holds it up"
            );
            report_at += BARRIER_REPORT;
        }
        tokio::select! {
            _ = tokio::time::sleep(poll) => {}
            _ = drain.triggered() => {}
        }
        poll = (poll * 2).min(BARRIER_POLL_MAX);
    }
}

impl<B: Log> Writer<'_, B> {
    /// Before a rename or drop whose copies other streams carry
    /// ([`crate::buffer::DdlCopies`]): mark this stream's arrival, wait until every copy's
    /// stream has arrived (each has then applied everything before its copy), and unless
    /// this is copy 0, wait until copy 0 has applied the statement. Then this stream applies
    /// it too, which finds it done (sinks apply DDL idempotently) and brings the sink's own
    /// view up to date.
    pub(super) async fn ddl_barrier<S: TableState>(
        &self,
        sink: &mut S,
        ddl: &SchemaChange,
        drain: &Shutdown,
    ) -> Result<Barrier> {
        let Some((copies, key)) = self.barrier_of(ddl).await? else { return Ok(Barrier::None) };
        sink.ddl_barrier_mark(&key, BarrierPhase::Arrived).await?;
        if !wait_barrier(sink, &key, BarrierPhase::Arrived, copies.copies, drain).await? {
            return Ok(Barrier::Drained);
        }
        if copies.rank == 0 {
            return Ok(Barrier::First(key));
        }
        if !wait_barrier(sink, &key, BarrierPhase::Applied, 1, drain).await? {
            return Ok(Barrier::Drained);
        }
        Ok(Barrier::Other)
    }

    /// Mark a DDL barrier passed without applying the statement (its table is stopped).
    pub(super) async fn pass_barrier<S: TableState>(&self, sink: &mut S, ddl: &SchemaChange) -> Result<()> {
        if let Some((copies, key)) = self.barrier_of(ddl).await? {
            sink.ddl_barrier_mark(&key, BarrierPhase::Arrived).await?;
            if copies.rank == 0 {
                sink.ddl_barrier_mark(&key, BarrierPhase::Applied).await?;
            }
        }
        Ok(())
    }

    /// The copies of `ddl` and the name of their barrier, when it needs one. A TRUNCATE never
    /// does: it deletes only rows older than itself, so each copy applies it at its own pace;
    /// nor does a stop, which every copy records alike.
    async fn barrier_of(&self, ddl: &SchemaChange) -> Result<Option<(crate::buffer::DdlCopies, String)>> {
        if matches!(ddl.change, TableChange::Truncate | TableChange::Stop { .. }) {
            return Ok(None);
        }
        Ok(self.buffer.ddl_copies().await?.map(|copies| {
            let key = format!("{} {} at {}", copies.group, ddl.table, ddl.position);
            (copies, key)
        }))
    }
}
