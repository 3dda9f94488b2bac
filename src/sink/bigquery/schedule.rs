//! The MERGE schedule: one MERGE job per interval for the whole process, however many
//! streams it applies.
//!
//! With Kafka every partition is a stream with its own writer and sink. If each sink ran
//! its own MERGE job every interval, twelve partitions would issue 144 jobs a minute, and
//! their MERGEs of one table would run at the same time, which BigQuery queues or fails
//! as concurrent updates. So the sinks of one process share one schedule:
//!
//! - a sink *offers* its work after each commit marker: the stream, its committed offset
//!   and the tables the commit touched, with their shapes;
//! - whichever sink finds the interval elapsed *runs* the schedule: one script with one
//!   MERGE per table, taking the label ranges of every stream that touched it (streams of
//!   one table normally share its shape; streams that do not yet get a MERGE each), then
//!   the progress of every stream;
//! - the other sinks go on appending meanwhile; a sink that must see its work merged (at
//!   drain, before a DDL statement) waits for the running job and runs the rest.
//!
//! The durable state stays per stream (markers in `_binferry_commits`, progress in
//! `_binferry_state`), so the crash reasoning of the module docs is unchanged: the schedule
//! only decides *when* and *in which job* a stream's committed ranges are merged. What it
//! holds in memory is rebuilt from those tables when a sink (re)starts.

use std::collections::BTreeMap;
use std::sync::Mutex;

use std::time::{Duration, Instant};

use tracing::debug;

use super::sql::{LabelRange, Names, TableShape};
use crate::bigquery_api::Api;
use crate::error::Result;

/// How often expired changelog rows are removed (one job for the whole dataset).
const GC_INTERVAL: Duration = Duration::from_secs(3600);

/// When [`MergeSchedule::run`] runs a job.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum When {
    /// Only when the interval has passed since the last run and no other run is under way.
    Due,
    /// Now: after waiting for a run under way, whatever the interval.
    Now,
}

/// One stream's committed, not yet merged work.
#[derive(Debug)]
struct StreamWork {
    /// Batch label up to which the stream is merged (-1: nothing yet).
    merged: i64,
    /// The stream's highest commit marker offered.
    committed: i64,
    /// Source position of that commit.
    position: String,
    /// Tables with unmerged rows → (their shape, the highest offset that touched them).
    tables: BTreeMap<String, (TableShape, i64)>,
    /// MERGEs also rewrite rows at equal positions (replays).
    repair: bool,
}

/// One MERGE of a run: a table, in one shape, and the label ranges of the streams it takes.
#[derive(Debug)]
struct PlannedMerge {
    table: String,
    shape: TableShape,
    repair: bool,
    /// (stream, after, upto).
    ranges: Vec<(String, i64, i64)>,
}

/// What one run merges: a copy of the pending work taken when the run starts.
struct Plan {
    merges: Vec<PlannedMerge>,
    /// Per stream: the label merged up to after the run, and its position.
    progress: Vec<(String, i64, String)>,
}

/// The MERGE schedule of one process and dataset; see the module docs.
pub(super) struct MergeSchedule {
    interval: Duration,
    streams: Mutex<BTreeMap<String, StreamWork>>,
    /// Held while a run is under way; the time of the last run (or of the start).
    running: tokio::sync::Mutex<Instant>,
    last_gc: Mutex<Option<Instant>>,
}

impl MergeSchedule {
    pub(super) fn new(interval: Duration) -> Self {
        MergeSchedule {
            interval,
            streams: Mutex::new(BTreeMap::new()),
            // The first run comes one interval after start, like every other: a restart
            // loop must not turn into a MERGE loop.
            running: tokio::sync::Mutex::new(Instant::now()),
            last_gc: Mutex::new(None),
        }
    }

    fn streams(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, StreamWork>> {
        // The map stays consistent whatever panicked while holding it: every update is one
        // assignment or insertion.
        self.streams.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A sink of `stream` (re)started with its durable progress `merged`: its pending work is
    /// forgotten, and offered again from the durable markers (a failure may have come from a
    /// table the sink no longer knows). Progress never moves backward.
    pub(super) fn register(&self, stream: &str, merged: i64, repair: bool) {
        let mut streams = self.streams();
        let merged = streams.get(stream).map_or(merged, |w| w.merged.max(merged));
        streams.insert(
            stream.to_string(),
            StreamWork { merged, committed: merged, position: String::new(), tables: BTreeMap::new(), repair },
        );
    }

    /// The sink of `stream` is gone (a Kafka partition moved elsewhere): its committed work
    /// is merged by whoever takes the stream over, from the durable markers.
    pub(super) fn unregister(&self, stream: &str) {
        self.streams().remove(stream);
    }

    /// Committed work of `stream`: everything up to commit `committed` (at source `position`),
    /// touching `tables`.
    pub(super) fn offer<'a>(
        &self,
        stream: &str,
        committed: i64,
        position: &str,
        tables: impl IntoIterator<Item = (&'a String, &'a TableShape)>,
    ) {
        let mut streams = self.streams();
        let Some(w) = streams.get_mut(stream) else { return };
        if committed > w.committed {
            w.committed = committed;
            w.position = position.to_string();
        }
        for (name, shape) in tables {
            w.tables.insert(name.clone(), (shape.clone(), committed));
        }
    }

    /// The label up to which `stream` is merged.
    #[cfg(test)]
    fn merged(&self, stream: &str) -> Option<i64> {
        self.streams().get(stream).map(|w| w.merged)
    }

    /// Whether `stream` has committed work not merged yet.
    pub(super) fn pending(&self, stream: &str) -> bool {
        self.streams().get(stream).is_some_and(|w| !w.tables.is_empty() && w.committed > w.merged)
    }

    /// Whether the hourly removal of expired changelog rows is due (and claim it if so).
    pub(super) fn gc_due(&self) -> bool {
        let mut last = self.last_gc.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if last.is_some_and(|t| t.elapsed() < GC_INTERVAL) {
            return false;
        }
        *last = Some(Instant::now());
        true
    }

    fn plan(&self) -> Option<Plan> {
        let streams = self.streams();
        let mut merges: Vec<PlannedMerge> = Vec::new();
        let mut progress = Vec::new();
        for (stream, w) in streams.iter() {
            if w.tables.is_empty() || w.committed <= w.merged {
                continue;
            }
            for (table, (shape, _)) in &w.tables {
                let range = (stream.clone(), w.merged, w.committed);
                match merges.iter_mut().find(|m| &m.table == table && &m.shape == shape && m.repair == w.repair) {
                    Some(m) => m.ranges.push(range),
                    None => merges.push(PlannedMerge {
                        table: table.clone(),
                        shape: shape.clone(),
                        repair: w.repair,
                        ranges: vec![range],
                    }),
                }
            }
            progress.push((stream.clone(), w.committed, w.position.clone()));
        }
        (!progress.is_empty()).then_some(Plan { merges, progress })
    }

    /// Run the pending MERGEs in one job, if `when` says so and there are any. An error
    /// leaves everything pending for the next run.
    pub(super) async fn run(&self, api: &Api, names: &Names<'_>, when: When) -> Result<()> {
        let mut running = match when {
            When::Now => self.running.lock().await,
            When::Due => match self.running.try_lock() {
                Ok(g) if g.elapsed() >= self.interval => g,
                _ => return Ok(()),
            },
        };
        let Some(plan) = self.plan() else { return Ok(()) };
        let mut statements: Vec<String> = plan
            .merges
            .iter()
            .map(|m| {
                let ranges: Vec<LabelRange<'_>> = m
                    .ranges
                    .iter()
                    .map(|(stream, after, upto)| LabelRange { stream, after: *after, upto: *upto })
                    .collect();
                names.merge(&m.table, &m.shape, &ranges, m.repair)
            })
            .collect();
        let progress: Vec<(&str, i64, &str)> =
            plan.progress.iter().map(|(s, upto, pos)| (s.as_str(), *upto, pos.as_str())).collect();
        statements.push(names.set_merged(&progress));
        let started = Instant::now();
        crate::failpoint::hit("bigquery-before-merge");
        let result = api.query(&Names::script(&statements)).await;
        *running = Instant::now();
        result?;
        crate::failpoint::hit("bigquery-after-merge");
        api.stats.record_bigquery_merge();
        debug!(
            merges = plan.merges.len(),
            streams = plan.progress.len(),
            ms = started.elapsed().as_millis() as u64,
            "BigQuery MERGE done"
        );
        let mut streams = self.streams();
        for (stream, upto, _) in &plan.progress {
            let Some(w) = streams.get_mut(stream) else { continue };
            w.merged = w.merged.max(*upto);
            // Tables offered again while the job ran have rows past `upto`: they stay.
            w.tables.retain(|_, (_, touched)| *touched > *upto);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sink::bigquery::types::BqType;

    fn shape(columns: &[&str]) -> TableShape {
        TableShape {
            columns: columns.iter().map(|c| (c.to_string(), BqType::Int64)).collect(),
            primary_key: vec!["id".into()],
            soft: false,
        }
    }

    #[test]
    fn streams_of_one_table_and_shape_share_one_merge() {
        let s = MergeSchedule::new(Duration::from_secs(5));
        let (t, a) = ("t".to_string(), shape(&["id", "v"]));
        s.register("p0", -1, false);
        s.register("p1", 7, false);
        s.register("p2", 3, false);
        s.offer("p0", 4, "f:1", [(&t, &a)]);
        s.offer("p1", 9, "f:2", [(&t, &a)]);
        // A stream still on the table's older shape gets a MERGE of its own.
        let (u, b) = ("u".to_string(), shape(&["id"]));
        s.offer("p2", 5, "f:3", [(&t, &b), (&u, &b)]);
        let plan = s.plan().expect("work");
        assert_eq!(plan.merges.len(), 3);
        assert_eq!(plan.merges[0].ranges, vec![("p0".to_string(), -1, 4), ("p1".to_string(), 7, 9)]);
        assert_eq!(plan.progress.len(), 3);
        assert!(s.pending("p1"));
    }

    #[test]
    fn progress_never_moves_backward_and_offers_of_unknown_streams_are_ignored() {
        let s = MergeSchedule::new(Duration::from_secs(5));
        s.register("p0", 10, false);
        s.offer("p0", 12, "f:1", [(&"t".to_string(), &shape(&["id"]))]);
        assert!(s.pending("p0"));
        // A restarted sink starts from the durable state, which it offers again.
        s.register("p0", 4, false);
        assert_eq!(s.merged("p0"), Some(10));
        assert!(!s.pending("p0"));
        s.offer("gone", 3, "f:1", [(&"t".to_string(), &shape(&["id"]))]);
        assert!(s.plan().is_none());
        s.unregister("p0");
        assert_eq!(s.merged("p0"), None);
    }

    #[test]
    fn garbage_collection_is_claimed_once_per_interval() {
        let s = MergeSchedule::new(Duration::from_secs(5));
        assert!(s.gc_due());
        assert!(!s.gc_due());
    }
}
