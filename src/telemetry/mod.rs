//! Telemetry: the one API through which every part of binferry counts what it does.
//!
//! A [`Stats`] belongs to one pipeline. Each `record_*` method updates the pipeline's own
//! counter (read by the progress line, the drain report and `status`) *and* the `metrics`
//! facade under the name [`names`] gives it, so the two never disagree and no module keeps a
//! counter of its own. Exporting the facade (a Prometheus endpoint) is one recorder
//! installed in `main`; nothing here changes for it.
//!
//! This module sits in the lowest layer: sources, buffers, sinks and the writer all record
//! into it, and it imports nothing of theirs.

mod events;
pub mod names;
mod unapplied;

pub use events::OpsEvent;
pub use unapplied::WriterUnapplied;

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::position::Position;

/// Counters and positions of one pipeline.
#[derive(Default)]
pub struct Stats {
    /// Row changes appended by the source.
    pub source_events: AtomicU64,
    /// Source transactions with selected changes.
    pub source_txns: AtomicU64,
    /// Timestamp (s) of the last source commit seen.
    pub source_event_ts: AtomicU64,
    /// Timestamp (s) of the last source commit with selected changes.
    pub source_change_ts: AtomicU64,
    /// Timestamp (s) of the first source commit with selected changes read by this process.
    pub source_first_change_ts: AtomicU64,
    /// The source received a heartbeat since its last event: it has read the binlog to its end.
    pub source_caught_up: AtomicBool,
    /// Updates dropped because only excluded columns changed.
    pub source_unchanged: AtomicU64,
    /// The source waits for the writer (backpressure).
    pub source_paused: AtomicBool,
    /// Rows copied by the snapshot.
    pub snapshot_rows: AtomicU64,
    /// Rows written to the target (after compaction).
    pub writer_rows: AtomicU64,
    /// Changes that found their row already up to date.
    pub writer_unchanged: AtomicU64,
    /// Changes older than the target's rows (skipped).
    pub writer_stale: AtomicU64,
    /// Changes folded by compaction.
    pub writer_compacted: AtomicU64,
    /// Changes skipped because their table is stopped.
    pub writer_skipped_stopped: AtomicU64,
    /// Target commits.
    pub writer_commits: AtomicU64,
    /// Next buffer offset the writer will apply.
    pub writer_next_offset: AtomicU64,
    /// Source commit timestamp (s) of the last applied transaction.
    pub writer_applied_ts: AtomicU64,
    /// The writer failed and waits to retry (the target is unreachable or refused a commit).
    pub writer_retrying: AtomicBool,
    /// The initial snapshot is copying tables.
    pub snapshot_running: AtomicBool,
    /// BigQuery query jobs issued (MERGE runs, DDL, checkpoint reads).
    pub bigquery_jobs: AtomicU64,
    /// BigQuery MERGE runs.
    pub bigquery_merges: AtomicU64,
    /// Whether the target holds one state of the source: 0 unknown, 1 no, 2 yes.
    target_consistent: AtomicU8,
    /// What the writer is doing right now, for the drain's progress lines.
    writer_activity: Mutex<String>,
    source_position: Mutex<Option<Position>>,
    /// What each writer has read and not yet committed ([`Self::set_unapplied`]).
    unapplied: Mutex<unapplied::Unapplied>,
    /// Since when (s) the writer has been failing to reach or commit to the target; 0: it
    /// is not.
    pub target_failing_since: AtomicU64,
    /// Since when (s) the source has been failing (unreachable, connection lost); 0: it is not.
    pub source_failing_since: AtomicU64,
    /// The last error of each, for messages.
    last_errors: Mutex<(String, String)>,
    /// Tables stopped and schema changes applied, for the alerts.
    events: Mutex<events::EventLog>,
    /// The lag last computed by [`Self::record_lag`] (f64 bits), for readers without the buffer.
    last_lag: AtomicU64,
    /// When (s) the writer last committed to the target; 0: not yet.
    pub writer_committed_at: AtomicU64,
    /// One more than the seconds until the oldest binlog the reader needs may be purged
    /// (0: unlimited or not known yet).
    retention_headroom: AtomicU64,
    /// Tables being copied in chunks (snapshot and resyncs), as the reader last recorded them.
    copies: Mutex<Vec<CopyProgress>>,
}

/// How far one table's chunked copy has come.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CopyProgress {
    /// `db.table`.
    pub table: String,
    /// Rows in the buffer so far.
    pub rows: u64,
    /// Chunks in the buffer so far.
    pub chunks: u64,
    /// Asked for by `binferry resync` (else the initial snapshot).
    pub resync: bool,
}

/// What one target commit's rows came to, as the writer records it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Applied {
    /// Rows written.
    pub written: u64,
    /// Rows that already had the same values.
    pub unchanged: u64,
    /// Changes older than the target's rows.
    pub stale: u64,
    /// Changes folded into a later change of the same key.
    pub compacted: u64,
}

impl Stats {
    /// Row changes the source appended to the buffer.
    pub(crate) fn record_source_events(&self, changes: u64) {
        self.source_events.fetch_add(changes, Ordering::Relaxed);
        ::metrics::counter!(names::SOURCE_EVENTS).increment(changes);
    }

    /// Bytes of binlog events the source read.
    pub(crate) fn record_source_bytes(&self, bytes: u64) {
        ::metrics::counter!(names::SOURCE_BYTES).increment(bytes);
    }

    /// Tables the snapshot still has to copy.
    pub(crate) fn record_snapshot_remaining(&self, tables: usize) {
        ::metrics::gauge!(names::SNAPSHOT_TABLES_REMAINING).set(tables as f64);
    }

    /// The chunked copies in progress. The snapshot counts as running while one of them is
    /// the initial snapshot's (a resync leaves the pipeline ready: its other tables stream).
    pub(crate) fn set_copies(&self, copies: Vec<CopyProgress>) {
        self.record_snapshot_remaining(copies.len());
        ::metrics::gauge!(names::RESYNC_TABLES_RUNNING).set(copies.iter().filter(|c| c.resync).count() as f64);
        self.snapshot_running.store(copies.iter().any(|c| !c.resync), Ordering::Relaxed);
        *self.copies.lock().unwrap_or_else(|p| p.into_inner()) = copies;
    }

    /// The chunked copies in progress.
    pub fn copies(&self) -> Vec<CopyProgress> {
        self.copies.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// What one batch did to `table`: rows written, unchanged, stale (compaction is counted
    /// per pipeline only).
    pub(crate) fn record_table_applied(&self, table: &impl std::fmt::Display, counts: Applied) {
        let table = table.to_string();
        ::metrics::counter!(names::TABLE_ROWS_WRITTEN, "table" => table.clone()).increment(counts.written);
        ::metrics::counter!(names::TABLE_ROWS_UNCHANGED, "table" => table.clone()).increment(counts.unchanged);
        ::metrics::counter!(names::TABLE_ROWS_STALE, "table" => table).increment(counts.stale);
    }

    /// Seconds until the oldest binlog the reader needs may be purged; `None`: unlimited.
    pub(crate) fn record_retention_headroom(&self, secs: Option<u64>) {
        self.retention_headroom.store(secs.map_or(0, |s| s.saturating_add(1)), Ordering::Relaxed);
        if let Some(s) = secs {
            ::metrics::gauge!(names::BINLOG_RETENTION_HEADROOM_SECONDS).set(s as f64);
        }
    }

    /// The binlog retention headroom last measured, when limited.
    pub fn retention_headroom(&self) -> Option<u64> {
        self.retention_headroom.load(Ordering::Relaxed).checked_sub(1)
    }

    /// Rows the snapshot copied.
    pub(crate) fn record_snapshot_rows(&self, rows: u64) {
        self.snapshot_rows.fetch_add(rows, Ordering::Relaxed);
        ::metrics::counter!(names::SNAPSHOT_ROWS).increment(rows);
    }

    /// The rows of one batch, applied (not yet committed).
    pub(crate) fn record_applied(&self, a: Applied) {
        self.writer_rows.fetch_add(a.written, Ordering::Relaxed);
        self.writer_unchanged.fetch_add(a.unchanged, Ordering::Relaxed);
        self.writer_stale.fetch_add(a.stale, Ordering::Relaxed);
        self.writer_compacted.fetch_add(a.compacted, Ordering::Relaxed);
        ::metrics::counter!(names::WRITER_ROWS_WRITTEN).increment(a.written);
        ::metrics::counter!(names::WRITER_ROWS_UNCHANGED).increment(a.unchanged);
        ::metrics::counter!(names::WRITER_ROWS_STALE).increment(a.stale);
        ::metrics::counter!(names::WRITER_ROWS_COMPACTED).increment(a.compacted);
    }

    /// A target commit.
    pub(crate) fn record_commit(&self) {
        self.writer_commits.fetch_add(1, Ordering::Relaxed);
        self.writer_committed_at.store(now(), Ordering::Relaxed);
        ::metrics::counter!(names::WRITER_COMMITS).increment(1);
    }

    /// Records of source transactions that never complete, dropped by the writer.
    pub(crate) fn record_orphaned(&self, records: u64) {
        ::metrics::counter!(names::WRITER_ORPHANED_RECORDS).increment(records);
    }

    /// An undecodable buffer message that stopped a table or the stream.
    pub(crate) fn record_poison(&self) {
        ::metrics::counter!(names::WRITER_POISON_MESSAGES).increment(1);
    }

    /// Records and schemas the Kafka brokers acknowledged.
    pub(crate) fn record_kafka_produced(&self, records: u64) {
        ::metrics::counter!(names::KAFKA_PRODUCED).increment(records);
    }

    /// An undecodable Kafka message routed to the dead-letter topic.
    pub(crate) fn record_kafka_dead_letter(&self) {
        ::metrics::counter!(names::KAFKA_DEAD_LETTERS).increment(1);
    }

    /// A BigQuery query job issued.
    pub(crate) fn record_bigquery_job(&self) {
        self.bigquery_jobs.fetch_add(1, Ordering::Relaxed);
        ::metrics::counter!(names::BIGQUERY_JOBS).increment(1);
    }

    /// A round of the BigQuery source completed.
    pub(crate) fn record_bigquery_round(&self, took: std::time::Duration) {
        ::metrics::counter!(names::BIGQUERY_SOURCE_ROUNDS).increment(1);
        ::metrics::gauge!(names::BIGQUERY_SOURCE_ROUND_SECONDS).set(took.as_secs_f64());
    }

    /// Bytes a query of the BigQuery source scanned.
    pub(crate) fn record_bigquery_source_bytes(&self, bytes: u64) {
        ::metrics::counter!(names::BIGQUERY_SOURCE_BYTES_SCANNED).increment(bytes);
    }

    /// A BigQuery MERGE run completed.
    pub(crate) fn record_bigquery_merge(&self) {
        self.bigquery_merges.fetch_add(1, Ordering::Relaxed);
        ::metrics::counter!(names::BIGQUERY_MERGES).increment(1);
    }

    /// Rows appended to BigQuery changelog tables.
    pub(crate) fn record_bigquery_changelog_rows(&self, rows: u64) {
        ::metrics::counter!(names::BIGQUERY_CHANGELOG_ROWS).increment(rows);
    }

    /// The replication lag: how old the oldest change not yet visible in the target is.
    ///
    /// - A writer holds changes it has read and not committed: the age of the oldest of them
    ///   (after a restart, the first change read again is the backlog's oldest), or the
    ///   reader's lag when that is larger (changes still in the binlog are older).
    /// - Otherwise, from the buffer's end offset when the buffer is one stream (the embedded
    ///   log), from commit times when it has no single offset (Kafka, `None`): 0 once the
    ///   reader has reached the end of the binlog and everything is applied, however long
    ///   the source has been idle.
    pub fn lag(&self, buffer_end: Option<u64>) -> f64 {
        if let Some(since) = self.unapplied.lock().ok().and_then(|u| u.oldest()) {
            return age(since).max(self.reader_lag());
        }
        match buffer_end {
            Some(end) => self.lag_seconds(end),
            None => self.lag_seconds_by_time(),
        }
    }

    /// How far the reader is behind the end of the source's binlog: 0 once a heartbeat said
    /// it reached the end, else the age of the last source commit it read.
    fn reader_lag(&self) -> f64 {
        if self.source_caught_up.load(Ordering::Relaxed) {
            0.0
        } else {
            age(self.source_event_ts.load(Ordering::Relaxed))
        }
    }

    /// The lag of each table a writer of this process has had changes of: the age of its
    /// oldest unapplied change, or the reader's lag when that is larger (the binlog not read
    /// yet may hold changes of it).
    pub fn table_lags(&self) -> Vec<(String, f64)> {
        let tables = self.unapplied.lock().map(|u| u.tables()).unwrap_or_default();
        let reader = self.reader_lag();
        tables.into_iter().map(|(t, since)| (t, since.map_or(0.0, age).max(reader))).collect()
    }

    /// The lag as last published (every progress interval, and at each `/metrics` scrape).
    pub fn last_lag(&self) -> f64 {
        f64::from_bits(self.last_lag.load(Ordering::Relaxed))
    }

    /// A new writer, for [`Self::set_unapplied`].
    pub(crate) fn register_writer(&self) -> u64 {
        self.unapplied.lock().map(|mut u| u.register()).unwrap_or(0)
    }

    /// What writer `id` has read and not yet committed (replaces what it said before).
    pub(crate) fn set_unapplied(&self, id: u64, state: WriterUnapplied) {
        if let Ok(mut u) = self.unapplied.lock() {
            u.set(id, state);
        }
    }

    /// Writer `id` stopped; what it had not applied stays in the buffer for its successor.
    pub(crate) fn unregister_writer(&self, id: u64) {
        if let Ok(mut u) = self.unapplied.lock() {
            u.remove(id);
        }
    }

    /// Records the writer has not applied yet, when the buffer is one stream.
    pub fn pending(&self, buffer_end: Option<u64>) -> Option<u64> {
        buffer_end.map(|end| end.saturating_sub(self.writer_next_offset.load(Ordering::Relaxed)))
    }

    /// Compute the lag and publish it, with the backlog, as gauges; returns the lag.
    pub(crate) fn record_lag(&self, buffer_end: Option<u64>) -> f64 {
        let lag = self.lag(buffer_end);
        self.last_lag.store(lag.to_bits(), Ordering::Relaxed);
        ::metrics::gauge!(names::REPLICATION_LAG_SECONDS).set(lag);
        for (table, lag) in self.table_lags() {
            ::metrics::gauge!(names::TABLE_LAG_SECONDS, "table" => table).set(lag);
        }
        let committed = self.writer_committed_at.load(Ordering::Relaxed);
        if committed > 0 {
            ::metrics::gauge!(names::CHECKPOINT_AGE_SECONDS).set(age(committed));
        }
        if let Some(p) = self.pending(buffer_end) {
            ::metrics::gauge!(names::BUFFER_PENDING_RECORDS).set(p as f64);
        }
        lag
    }

    /// One batch applied and committed: its rows and how long it took.
    pub(crate) fn record_batch(&self, rows: u64, seconds: f64) {
        ::metrics::histogram!(names::WRITER_BATCH_ROWS).record(rows as f64);
        ::metrics::histogram!(names::WRITER_COMMIT_SECONDS).record(seconds);
    }

    /// The writer failed with a transient error of `kind` and waits to retry.
    pub(crate) fn record_retry(&self, kind: &'static str, error: &str) {
        self.writer_retrying.store(true, Ordering::Relaxed);
        let _ = self.target_failing_since.compare_exchange(0, now(), Ordering::Relaxed, Ordering::Relaxed);
        if let Ok(mut e) = self.last_errors.lock() {
            e.0 = error.to_string();
        }
        ::metrics::counter!(names::WRITER_RETRIES, "kind" => kind).increment(1);
        ::metrics::gauge!(names::WRITER_RETRYING).set(1.0);
    }

    /// A commit went through: the target works again.
    pub(crate) fn record_recovered(&self) {
        self.target_failing_since.store(0, Ordering::Relaxed);
        if self.writer_retrying.swap(false, Ordering::Relaxed) {
            ::metrics::gauge!(names::WRITER_RETRYING).set(0.0);
        }
    }

    /// A table stopped, and why.
    pub(crate) fn record_table_stopped(&self, table: &impl std::fmt::Display, reason: &str) {
        ::metrics::counter!(names::TABLES_STOPPED).increment(1);
        self.push_event(OpsEvent::TableStopped { table: table.to_string(), reason: reason.to_string(), at: now() });
    }

    /// A schema change (`what`) was applied to `table` in the target.
    pub(crate) fn record_schema_applied(&self, table: &impl std::fmt::Display, what: &str) {
        self.push_event(OpsEvent::SchemaApplied { table: table.to_string(), what: what.to_string(), at: now() });
    }

    fn push_event(&self, e: OpsEvent) {
        if let Ok(mut log) = self.events.lock() {
            log.push(e);
        }
    }

    /// Events after number `after` (0: all kept), and the number to ask from next time.
    pub fn events_since(&self, after: u64) -> (Vec<OpsEvent>, u64) {
        self.events.lock().map(|log| log.since(after)).unwrap_or_default()
    }

    /// The source failed with a transient error and waits to retry.
    pub(crate) fn record_source_retry(&self, error: &str) {
        let _ = self.source_failing_since.compare_exchange(0, now(), Ordering::Relaxed, Ordering::Relaxed);
        if let Ok(mut e) = self.last_errors.lock() {
            e.1 = error.to_string();
        }
    }

    /// The source streams again.
    pub(crate) fn record_source_recovered(&self) {
        self.source_failing_since.store(0, Ordering::Relaxed);
    }

    /// The last transient errors of the writer (target) and the source.
    pub fn last_errors(&self) -> (String, String) {
        self.last_errors.lock().map(|e| e.clone()).unwrap_or_default()
    }

    pub(crate) fn set_source_position(&self, p: &Position) {
        if let Some(n) = p.file.rsplit('.').next().and_then(|n| n.parse::<u64>().ok()) {
            ::metrics::gauge!(names::SOURCE_BINLOG_FILE).set(n as f64);
        }
        ::metrics::gauge!(names::SOURCE_BINLOG_OFFSET).set(p.offset as f64);
        if let Ok(mut g) = self.source_position.lock() {
            *g = Some(p.clone());
        }
    }

    pub(crate) fn set_writer_activity(&self, what: impl Into<String>) {
        if let Ok(mut a) = self.writer_activity.lock() {
            *a = what.into();
        }
    }

    /// What the writer is doing right now (empty before it starts).
    pub fn writer_activity(&self) -> String {
        self.writer_activity.lock().map(|a| a.clone()).unwrap_or_default()
    }

    pub(crate) fn set_target_consistent(&self, consistent: bool) {
        self.target_consistent.store(if consistent { 2 } else { 1 }, Ordering::Relaxed);
    }

    /// Whether the target holds one state of the source, as the last commit that said so
    /// made durable (`None` before any did in this process).
    pub fn target_consistent(&self) -> Option<bool> {
        match self.target_consistent.load(Ordering::Relaxed) {
            0 => None,
            n => Some(n == 2),
        }
    }

    /// The source checkpoint position last appended.
    pub fn source_position(&self) -> Option<Position> {
        self.source_position.lock().ok().and_then(|g| g.clone())
    }

    /// Record a source commit with selected changes at `ts` (for [`Self::lag_seconds_by_time`]).
    pub(crate) fn source_changed(&self, ts: u64) {
        self.source_change_ts.store(ts, Ordering::Relaxed);
        let _ = self.source_first_change_ts.compare_exchange(0, ts, Ordering::Relaxed, Ordering::Relaxed);
    }

    /// Lag when the buffer has no single offset to compare with (Kafka). The writer is behind
    /// while the last commit with changes it applied is older than the last one the reader
    /// published; the lag is then the age of the last applied commit (or of the first commit
    /// read, when none was applied yet).
    pub fn lag_seconds_by_time(&self) -> f64 {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        let age = |ts: u64| if ts == 0 { 0.0 } else { now.saturating_sub(ts) as f64 };
        let changed = self.source_change_ts.load(Ordering::Relaxed);
        let applied = self.writer_applied_ts.load(Ordering::Relaxed);
        if changed > applied {
            return age(if applied > 0 { applied } else { self.source_first_change_ts.load(Ordering::Relaxed) });
        }
        if self.source_caught_up.load(Ordering::Relaxed) {
            0.0
        } else {
            age(self.source_event_ts.load(Ordering::Relaxed))
        }
    }

    /// Seconds the target is behind the source server, with the one-second resolution of
    /// binlog timestamps:
    /// - the writer has records to apply: the age of the last source commit it applied;
    /// - it has applied everything but the reader has not reached the end of the binlog (no
    ///   heartbeat since the last event): the age of the last source commit read;
    /// - both are caught up: 0.
    pub fn lag_seconds(&self, buffer_next: u64) -> f64 {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        let age = |ts: u64| if ts == 0 { 0.0 } else { now.saturating_sub(ts) as f64 };
        let read = self.source_event_ts.load(Ordering::Relaxed);
        if self.writer_next_offset.load(Ordering::Relaxed) < buffer_next {
            let applied = self.writer_applied_ts.load(Ordering::Relaxed);
            return age(if applied > 0 { applied } else { read });
        }
        if self.source_caught_up.load(Ordering::Relaxed) { 0.0 } else { age(read) }
    }
}

/// Seconds since the epoch.
fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// Seconds since `ts` (seconds since the epoch); 0 for an unknown time (0).
fn age(ts: u64) -> f64 {
    if ts == 0 { 0.0 } else { now().saturating_sub(ts) as f64 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lag_is_the_age_of_the_oldest_unapplied_change() {
        let s = Stats::default();
        // An hour-old change applied, the source idle since: caught up means 0.
        s.writer_applied_ts.store(now() - 3600, Ordering::Relaxed);
        s.source_caught_up.store(true, Ordering::Relaxed);
        assert_eq!(s.lag(None), 0.0);
        // A new change read, not committed yet: its age, not the hour since the last one.
        let w = s.register_writer();
        s.set_unapplied(w, WriterUnapplied { since: Some(now() - 2), tables: [("d.t".into(), now() - 2)].into() });
        assert!((2.0..10.0).contains(&s.lag(None)), "{}", s.lag(None));
        assert!((2.0..10.0).contains(&s.table_lags()[0].1));
        // A restarted writer reads the backlog again from its oldest change.
        s.set_unapplied(w, WriterUnapplied { since: Some(now() - 600), tables: [("d.t".into(), now() - 600)].into() });
        assert!(s.lag(Some(0)) >= 600.0);
        // Committed: 0 again, and the table stays listed with 0.
        s.set_unapplied(w, WriterUnapplied::default());
        assert_eq!(s.lag(None), 0.0);
        assert_eq!(s.table_lags(), vec![("d.t".to_string(), 0.0)]);
    }

    fn now() -> u64 {
        SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
    }

    #[test]
    fn lag_by_time_follows_the_writer() {
        let s = Stats::default();
        assert_eq!(s.lag_seconds_by_time(), 0.0, "nothing happened yet");
        s.source_caught_up.store(true, Ordering::Relaxed);
        // The reader published changes from 20 s ago on; the writer applied nothing yet.
        s.source_changed(now() - 20);
        s.source_changed(now());
        assert!(s.lag_seconds_by_time() >= 20.0);
        // The writer applied up to 5 s behind what the reader published.
        s.writer_applied_ts.store(now() - 5, Ordering::Relaxed);
        assert!(s.lag_seconds_by_time() >= 5.0);
        // Caught up on both sides; commits without selected changes do not count.
        s.writer_applied_ts.store(s.source_change_ts.load(Ordering::Relaxed), Ordering::Relaxed);
        s.source_event_ts.store(now() + 3, Ordering::Relaxed);
        assert_eq!(s.lag_seconds_by_time(), 0.0);
    }

    #[test]
    fn lag_follows_the_slowest_stage() {
        let s = Stats::default();
        assert_eq!(s.lag_seconds(0), 0.0, "nothing happened yet");
        // The reader is 30 s behind the server; the writer has applied all it has.
        s.source_event_ts.store(now() - 30, Ordering::Relaxed);
        s.writer_next_offset.store(10, Ordering::Relaxed);
        assert!(s.lag_seconds(10) >= 30.0);
        // A heartbeat: the reader reached the end of the binlog.
        s.source_caught_up.store(true, Ordering::Relaxed);
        assert_eq!(s.lag_seconds(10), 0.0);
        // The writer is behind: the age of what it applied last.
        s.writer_applied_ts.store(now() - 5, Ordering::Relaxed);
        assert!((5.0..30.0).contains(&s.lag_seconds(20)));
    }
}
