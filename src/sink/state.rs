//! The durable state a target keeps next to the data: which tables no longer replicate, and
//! how far each stream of the pipeline got at a DDL barrier.
//!
//! Both live in the target because they must survive the process and be shared by every
//! process of the pipeline: a table stopped by one stream stays stopped after a restart,
//! and a rename that several Kafka partitions carry copies of is applied once, after every
//! partition has applied what came before its copy.

use std::future::Future;

use crate::error::Result;
use crate::schema::TableRef;

/// A phase of a DDL barrier: a rename or drop that several buffer streams carry copies of
/// ([`crate::buffer::DdlCopies`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BarrierPhase {
    /// The stream has applied everything before its copy of the statement.
    Arrived,
    /// The statement is applied to the target.
    Applied,
}

impl BarrierPhase {
    /// The phase's name in the target's barrier table.
    pub fn as_str(self) -> &'static str {
        match self {
            BarrierPhase::Arrived => "arrived",
            BarrierPhase::Applied => "applied",
        }
    }
}

/// Stopped tables and DDL barriers, kept durably by the target.
///
/// # Contract
///
/// - [`TableState::stop_table`] joins the data path's open transaction: the stop becomes
///   durable with the commit of the offset that passes the table's last change, and is
///   discarded by a rollback. A crash in between replays the change that stopped it.
/// - Barrier marks are outside that transaction and durable at once, because the other
///   streams must see them while this one waits. Marking twice has no further effect.
pub trait TableState: Send {
    /// Tables that no longer replicate, with the reason each was stopped.
    fn stopped_tables(&mut self) -> impl Future<Output = Result<Vec<(TableRef, String)>>> + Send;

    /// Record that `table` no longer replicates because of `reason`, inside the open
    /// transaction. Recording a table that is already stopped replaces its reason.
    fn stop_table(&mut self, table: &TableRef, reason: &str) -> impl Future<Output = Result<()>> + Send;

    /// Record durably that this stream reached `phase` of `barrier` (a DDL statement several
    /// streams carry copies of).
    fn ddl_barrier_mark(&mut self, barrier: &str, phase: BarrierPhase) -> impl Future<Output = Result<()>> + Send;

    /// How many streams of this pipeline reached `phase` of `barrier`.
    fn ddl_barrier_count(&mut self, barrier: &str, phase: BarrierPhase) -> impl Future<Output = Result<u32>> + Send;
}

#[cfg(test)]
pub(crate) use memory::MemoryState;

#[cfg(test)]
mod memory {
    use std::collections::{HashMap, HashSet};
    use std::sync::{Arc, Mutex};

    use super::{BarrierPhase, TableState};
    use crate::error::Result;
    use crate::schema::TableRef;

    #[derive(Debug, Default)]
    struct Shared {
        stopped: HashMap<TableRef, String>,
        barriers: HashMap<(String, BarrierPhase), HashSet<String>>,
    }

    /// An in-memory [`TableState`] for tests, shared by the streams cloned from one value
    /// (each clone is one stream). Stops wait for [`MemoryState::commit`] as the contract
    /// says; the sink that owns this state calls it from its own commit and rollback.
    #[derive(Clone, Debug)]
    pub(crate) struct MemoryState {
        stream: String,
        shared: Arc<Mutex<Shared>>,
        pending: Vec<(TableRef, String)>,
    }

    impl MemoryState {
        pub(crate) fn new() -> Self {
            MemoryState { stream: "0".into(), shared: Arc::default(), pending: Vec::new() }
        }

        /// The same state, seen by another stream.
        pub(crate) fn for_stream(&self, stream: &str) -> Self {
            MemoryState { stream: stream.into(), shared: self.shared.clone(), pending: Vec::new() }
        }

        /// Make the stops of the open transaction durable.
        pub(crate) fn commit(&mut self) {
            let mut shared = self.shared.lock().unwrap();
            for (table, reason) in self.pending.drain(..) {
                shared.stopped.insert(table, reason);
            }
        }

        /// Discard the stops of the open transaction.
        pub(crate) fn rollback(&mut self) {
            self.pending.clear();
        }

        /// The durable stops, for assertions.
        pub(crate) fn stopped(&self) -> Vec<(TableRef, String)> {
            let mut stopped: Vec<_> =
                self.shared.lock().unwrap().stopped.iter().map(|(t, r)| (t.clone(), r.clone())).collect();
            stopped.sort_by_key(|(t, _)| t.to_string());
            stopped
        }
    }

    impl TableState for MemoryState {
        async fn stopped_tables(&mut self) -> Result<Vec<(TableRef, String)>> {
            Ok(self.stopped())
        }

        async fn stop_table(&mut self, table: &TableRef, reason: &str) -> Result<()> {
            self.pending.retain(|(t, _)| t != table);
            self.pending.push((table.clone(), reason.to_string()));
            Ok(())
        }

        async fn ddl_barrier_mark(&mut self, barrier: &str, phase: BarrierPhase) -> Result<()> {
            let mut shared = self.shared.lock().unwrap();
            shared.barriers.entry((barrier.to_string(), phase)).or_default().insert(self.stream.clone());
            Ok(())
        }

        async fn ddl_barrier_count(&mut self, barrier: &str, phase: BarrierPhase) -> Result<u32> {
            let shared = self.shared.lock().unwrap();
            Ok(shared.barriers.get(&(barrier.to_string(), phase)).map_or(0, |s| s.len() as u32))
        }
    }

    #[tokio::test]
    async fn stops_wait_for_the_commit_and_barriers_count_streams_once() {
        let mut a = MemoryState::new();
        let mut b = a.for_stream("1");
        let t = TableRef::new("db", "t");
        a.stop_table(&t, "first").await.unwrap();
        assert!(b.stopped_tables().await.unwrap().is_empty(), "a stop is not durable before the commit");
        a.rollback();
        a.commit();
        assert!(b.stopped_tables().await.unwrap().is_empty(), "a rolled-back stop is gone");
        a.stop_table(&t, "second").await.unwrap();
        a.commit();
        assert_eq!(b.stopped_tables().await.unwrap(), vec![(t, "second".to_string())]);

        for _ in 0..2 {
            a.ddl_barrier_mark("x", BarrierPhase::Arrived).await.unwrap();
        }
        assert_eq!(b.ddl_barrier_count("x", BarrierPhase::Arrived).await.unwrap(), 1);
        b.ddl_barrier_mark("x", BarrierPhase::Arrived).await.unwrap();
        assert_eq!(a.ddl_barrier_count("x", BarrierPhase::Arrived).await.unwrap(), 2);
        assert_eq!(a.ddl_barrier_count("x", BarrierPhase::Applied).await.unwrap(), 0);
    }
}
