//! The writer: reads the buffer, batches and compacts changes, and applies
//! them to the sink in target transactions aligned with source transactions.
//!
//! # Transaction alignment
//!
//! The writer commits a target transaction only at a [`Record::Commit`], so a
//! reader of the target never sees part of a source transaction. Changes of
//! the transaction in progress are held apart ([`MAX_OPEN_CHANGES`] at most);
//! when a source transaction is larger than that, its changes are applied in
//! chunks into one open target transaction that commits at its end, so memory
//! stays bounded whatever the transaction size.
//!
//! The writer knows which source transaction is in progress (`txn.rs`): a log can
//! hold the beginning of a transaction whose end never follows (a reader that died
//! between publishing records and publishing the checkpoint that covers them), and
//! such a prefix is dropped, never committed with the next transaction. A target
//! transaction also never holds rows of two schema versions of one table: a table
//! whose shape changes is committed up to the last complete transaction before the
//! change, and altered outside any open transaction of its own.
//!
//! # Consistency
//!
//! Commits say whether the target is [consistent](Commit::consistent) once they are
//! applied: not while the initial snapshot copies tables one after another. The writer
//! logs each change of that state (`target consistent`) and reports it in [`Stats`].
//!
//! # Batching
//!
//! Complete transactions accumulate in one compacted [`Batch`] until it holds
//! `batch_max_rows` changes or `batch_max_bytes`, or `batch_max_delay` has
//! passed since its first change; then it is applied and committed together
//! with the buffer offset of its last `Commit` record. That offset, stored in
//! the target in the same transaction, is where the writer resumes after any
//! crash: nothing is applied twice and nothing is skipped.
//!
//! # DDL that several streams carry
//!
//! In Kafka's key layout every partition holds a copy of each rename and drop, in
//! order with its own rows. The writers of those partitions meet at a barrier
//! kept in the target before any of them applies it, so no row of the old shape
//! reaches the new one; copy 0 applies it, the others follow
//! ([`crate::buffer::DdlCopies`], [`TableState::ddl_barrier_mark`]).

mod barrier;
mod prefetch;
#[cfg(test)]
mod tests;
mod txn;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::shutdown::Shutdown;
use tracing::{debug, error, info, warn};

pub use crate::event::batch::{Batch, KeylessRow, RowOp, TableBatch};

use crate::buffer::{Item, Log, Poison};
use crate::config::WriterConfig;
use crate::error::{Error, ErrorKind, Result, Scope};
use crate::event::{ChangeEvent, Commit, Op, Record, SchemaChange, TableChange};
use crate::retry::Backoff;
use crate::schema::{TableRef, TableSchema};
use crate::sink::{BarrierPhase, Sink, TableState};
use crate::table_filter::TableFilter;
use crate::telemetry::{Applied, Stats, WriterUnapplied};
use barrier::Barrier;
use prefetch::{Fetched, Prefetch};
use txn::{Orphans, SourceTxn};

/// Records read from the buffer per call.
const READ_CHUNK: usize = 2048;
/// Changes of one source transaction held in memory before they are applied in a chunk.
pub const MAX_OPEN_CHANGES: usize = 10_000;
/// Longest wait for new records when idle.
const IDLE_WAIT: Duration = Duration::from_millis(500);

/// How often a writer whose tables other streams write too (the partitions of a Kafka topic
/// in the `key` layout) reads the stops those streams recorded in the target. A table one
/// partition's writer stopped (a value the target refused, an undecodable message) is then
/// skipped by every partition's writer from its next commit after this long, instead of
/// being written by the others until a resync. On BigQuery each look is a small query job.
const SHARED_STOPS_EVERY: Duration = Duration::from_secs(10);

/// Batching limits, and for replays where to start and which tables to apply.
#[derive(Clone, Debug)]
pub struct WriterSettings {
    /// Flush at this many changes.
    pub max_rows: usize,
    /// Flush at this many bytes.
    pub max_bytes: usize,
    /// Flush this long after the batch's first change.
    pub max_delay: Duration,
    /// Changes of one source transaction held in memory before they are applied in a chunk
    /// ([`MAX_OPEN_CHANGES`]; smaller in tests).
    pub max_open_changes: usize,
    /// Start at this buffer offset instead of after the target's applied offset (replay).
    pub start_at: Option<u64>,
    /// Apply only changes of these tables (replay of one table).
    pub only: Option<TableFilter>,
    /// The tables the configuration selects (`source.include` / `exclude`): records of a
    /// table excluded after they entered the buffer are passed over, not applied.
    pub tables: Option<TableFilter>,
}

impl WriterSettings {
    /// Whether changes of `table` are applied.
    fn selects(&self, table: &TableRef) -> bool {
        self.tables.as_ref().is_none_or(|f| f.matches(table)) && self.only.as_ref().is_none_or(|f| f.matches(table))
    }
}

impl From<&WriterConfig> for WriterSettings {
    fn from(c: &WriterConfig) -> Self {
        WriterSettings {
            max_rows: c.batch_max_rows,
            max_bytes: c.batch_max_bytes,
            max_delay: Duration::from_millis(c.batch_max_delay_ms),
            max_open_changes: MAX_OPEN_CHANGES,
            start_at: None,
            only: None,
            tables: None,
        }
    }
}

/// What a writer knows across its attempts (a failed attempt starts over from the target's
/// checkpoint with a new [`Writer`]).
#[derive(Default)]
struct Lasting {
    /// Prefixes of transactions that never complete in the log.
    orphans: Orphans,
    /// Whether the target holds one state of the source, as of the last commit that said.
    consistent: Option<bool>,
    /// Tables whose values the target refused, to stop in the next target transaction (they
    /// are recorded again by every attempt until a commit made them durable).
    to_stop: Vec<(TableRef, String)>,
    /// This writer's id in [`Stats::set_unapplied`].
    id: u64,
}

/// Takes a writer's unapplied changes out of the lag when it stops, however it stops.
struct Registered<'a> {
    stats: &'a Stats,
    id: u64,
}

impl Drop for Registered<'_> {
    fn drop(&mut self) {
        self.stats.unregister_writer(self.id);
    }
}

/// Why a writer attempt ended without an error.
enum Outcome {
    /// Asked to drain, it applied everything complete in the log.
    Drained,
    /// A transaction part of which is in the open target transaction never completes: the
    /// target transaction was rolled back; read again from the target's checkpoint.
    Rewind,
}

/// What the record just handled asks of the reading loop.
enum Step {
    Next,
    Rewind,
    Drained,
}

/// Run the writer until `drain` turns true and everything in the buffer is applied, or a
/// definite error occurs. Transient sink errors are retried from the target's checkpoint.
///
/// Long because it is the retry loop around one writer: resume from the target's offset, run,
/// classify the error, back off; splitting it would spread the restart rules over several
/// places.
pub async fn run<B: Log, S: Sink + TableState>(
    settings: WriterSettings,
    buffer: Arc<B>,
    mut sink: S,
    stats: Arc<Stats>,
    drain: Shutdown,
) -> Result<()> {
    let mut backoff = Backoff::default();
    let registered = Registered { stats: &stats, id: stats.register_writer() };
    let mut lasting = Lasting { id: registered.id, ..Lasting::default() };
    loop {
        let mut w = Writer::new(settings.clone(), buffer.as_ref(), &stats, &mut lasting);
        match w.run(&buffer, &mut sink, &drain, &mut backoff).await {
            Ok(Outcome::Drained) => return Ok(()),
            Ok(Outcome::Rewind) => info!("reading the buffer again from the target's checkpoint"),
            Err(e) => {
                sink.reset().await;
                if let Some(table) = e.stops_table().cloned() {
                    // One table's value or shape the target cannot hold: the target transaction
                    // is rolled back; apply again from the target's checkpoint, that table stopped.
                    error!(%table, error = %e, "table stopped; the other tables keep replicating");
                    stats.record_table_stopped(&table, &e.to_string());
                    lasting.to_stop.retain(|(t, _)| t != &table);
                    lasting.to_stop.push((table, e.to_string()));
                    continue;
                }
                match backoff.next_delay(&e) {
                    Some(delay) => {
                        warn!(error = %e, attempt = backoff.attempts(), "writer failed; retrying in {:.1}s from the target's checkpoint", delay.as_secs_f64());
                        stats.set_writer_activity(format!("waiting to retry after: {}", e.detail()));
                        stats.record_retry(e.kind().label(), &e.to_string());
                        tokio::time::sleep(delay).await;
                    }
                    None => return Err(e),
                }
            }
        }
    }
}

struct Writer<'a, B> {
    settings: WriterSettings,
    buffer: &'a B,
    stats: &'a Stats,
    lasting: &'a mut Lasting,
    schemas: HashMap<u64, Arc<TableSchema>>,
    /// Complete source transactions (and, while `mid_transaction`, chunks of the one in
    /// progress), compacted, not yet applied.
    batch: Batch,
    batch_started: Option<Instant>,
    /// The source transaction in progress: what the next records must agree with.
    txn: SourceTxn,
    /// Its changes read so far and not yet merged into the batch.
    held: Vec<ChangeEvent>,
    /// The last commit record merged into the batch, not yet committed to the target.
    last_commit: Option<(u64, Commit)>,
    /// The open target transaction holds part of the source transaction in progress (a
    /// chunk of a large one, or a DDL statement whose commit record comes next): nothing may
    /// be committed before that transaction's end.
    mid_transaction: bool,
    /// Schema version of each table written in the open target transaction while
    /// `mid_transaction` (the batch forgets what it applied).
    target_versions: HashMap<TableRef, u64>,
    /// A table was stopped in the open target transaction: commit at the next commit record.
    commit_next: bool,
    /// Tables stopped by an incompatible schema change: their changes are skipped.
    stopped: std::collections::HashSet<TableRef>,
    /// When the stops other streams recorded were last read; `None` where no other stream
    /// writes this log's tables (see [`SHARED_STOPS_EVERY`]).
    shared_stops_read: Option<tokio::time::Instant>,
    /// Source time of the oldest change read and not committed yet, overall and per table:
    /// what the lag is measured from (published to [`Stats`] when it changes, which is rarely).
    unapplied_since: Option<u64>,
    unapplied_tables: HashMap<TableRef, u64>,
}

impl<'a, B: Log> Writer<'a, B> {
    fn new(settings: WriterSettings, buffer: &'a B, stats: &'a Stats, lasting: &'a mut Lasting) -> Self {
        Writer {
            settings,
            buffer,
            stats,
            lasting,
            schemas: HashMap::new(),
            batch: Batch::default(),
            batch_started: None,
            txn: SourceTxn::default(),
            held: Vec::new(),
            last_commit: None,
            mid_transaction: false,
            target_versions: HashMap::new(),
            commit_next: false,
            stopped: Default::default(),
            shared_stops_read: None,
            unapplied_since: None,
            unapplied_tables: HashMap::new(),
        }
    }

    async fn run<S: Sink + TableState>(
        &mut self,
        log: &Arc<B>,
        sink: &mut S,
        drain: &Shutdown,
        backoff: &mut Backoff,
    ) -> Result<Outcome> {
        let applied = sink.applied_offset().await?;
        for (table, reason) in sink.stopped_tables().await? {
            warn!(%table, %reason, "table is stopped; its changes are skipped until it is resynchronised");
            self.stopped.insert(table);
        }
        for (table, reason) in self.lasting.to_stop.clone() {
            // Durable with the next commit, which passes the change the target refused at
            // the latest (reading starts before it).
            sink.stop_table(&table, &reason).await?;
            self.stopped.insert(table);
            self.commit_next = true;
        }
        if self.buffer.ddl_copies().await?.is_some() {
            self.shared_stops_read = Some(tokio::time::Instant::now());
        }
        let next = self.settings.start_at.unwrap_or(applied.map_or(0, |o| o + 1));
        if let Some(o) = applied {
            self.buffer.acknowledge(o);
        }
        self.stats.writer_next_offset.store(next, Ordering::Relaxed);
        debug!(next, "writer resuming");
        let mut prefetch = Prefetch::start(Arc::clone(log), next, READ_CHUNK, IDLE_WAIT);
        let mut waiting: Option<Fetched> = None;
        // When the writer first saw the drain request. Only a read that started after it
        // proves the log is exhausted: the source appended its last records before draining.
        let mut drain_seen: Option<Instant> = None;
        loop {
            let draining = drain.is_triggered();
            if draining && drain_seen.is_none() {
                drain_seen = Some(Instant::now());
            }
            let records = match waiting.take().or_else(|| prefetch.ready()) {
                Some(Fetched::Records(r)) => r,
                Some(Fetched::Failed(e)) => return Err(e),
                fetched => {
                    // Nothing ready: commit what is due, stop when draining and the log has
                    // been read to its end, or wait for records, the batch deadline or drain.
                    let caught_up = matches!((fetched, drain_seen), (Some(Fetched::CaughtUp(read_at)), Some(seen)) if read_at >= seen);
                    if self.due() || (draining && caught_up) {
                        self.flush_commit(sink, backoff).await?;
                    }
                    if draining && caught_up {
                        // Changes of a transaction whose end is not in the log yet stay there
                        // for the next run.
                        if self.mid_transaction {
                            sink.rollback().await?;
                        } else {
                            self.stats.set_writer_activity("the target's last deferred work (BigQuery: the MERGE)");
                            sink.idle(true).await?;
                        }
                        return Ok(Outcome::Drained);
                    }
                    if !self.mid_transaction {
                        self.stats.set_writer_activity("the target's deferred work (BigQuery: the MERGE)");
                        sink.idle(false).await?;
                    }
                    self.stats.set_writer_activity("waiting for records");
                    let wait = self
                        .batch_started
                        .map_or(IDLE_WAIT, |t| (t + self.settings.max_delay).saturating_duration_since(Instant::now()));
                    tokio::select! {
                        f = prefetch.next() => match f {
                            Some(f) => waiting = Some(f),
                            None => return Err(Error::internal("the writer's read-ahead task ended")),
                        },
                        _ = tokio::time::sleep(wait) => {}
                        _ = drain.triggered(), if !draining => {}
                    }
                    continue;
                }
            };
            for (offset, item) in records {
                match self.entry(sink, offset, item, drain, backoff).await? {
                    Step::Next => {}
                    Step::Rewind => return Ok(Outcome::Rewind),
                    Step::Drained => return Ok(Outcome::Drained),
                }
            }
        }
    }

    /// Handle one entry of the log.
    async fn entry<S: Sink + TableState>(
        &mut self,
        sink: &mut S,
        offset: u64,
        item: Item,
        drain: &Shutdown,
        backoff: &mut Backoff,
    ) -> Result<Step> {
        if self.lasting.orphans.contains(offset) {
            return Ok(Step::Next);
        }
        match item {
            Item::Record(Record::Change(ev)) => self.change(sink, offset, ev, backoff).await,
            Item::Record(Record::Ddl(ddl)) => self.ddl(sink, offset, ddl, drain, backoff).await,
            Item::Record(Record::Commit(c)) => self.commit_record(sink, offset, c, backoff).await,
            Item::Poison(p) => self.poison(sink, p).await.map(|()| Step::Next),
            Item::DeadLettered => Ok(Step::Next),
        }
    }

    async fn change<S: Sink + TableState>(
        &mut self,
        sink: &mut S,
        offset: u64,
        ev: ChangeEvent,
        backoff: &mut Backoff,
    ) -> Result<Step> {
        if !self.txn.continued_by(&ev) && self.drop_orphan(sink, offset).await? {
            return Ok(Step::Rewind);
        }
        // Every change counts for the transaction's identity, also those not applied here.
        self.txn.push_change(&ev, offset);
        if !self.settings.selects(&ev.table) {
            return Ok(Step::Next);
        }
        if self.stopped.contains(&ev.table) {
            self.stats.writer_skipped_stopped.fetch_add(1, Ordering::Relaxed);
            return Ok(Step::Next);
        }
        self.batch_started.get_or_insert_with(Instant::now);
        self.note_unapplied(&ev.table, ev.timestamp);
        self.held.push(ev);
        if self.held.len() >= self.settings.max_open_changes {
            // A large source transaction: apply what we have into the open target
            // transaction; it commits at the transaction's end. It gets a target transaction
            // of its own: the complete transactions before it are committed first, so that the
            // open one holds only this transaction's tables and shapes.
            self.flush_commit(sink, backoff).await?;
            self.merge_held(sink).await?;
            self.apply(sink).await?;
            self.mid_transaction = true;
        }
        Ok(Step::Next)
    }

    async fn ddl<S: Sink + TableState>(
        &mut self,
        sink: &mut S,
        offset: u64,
        ddl: SchemaChange,
        drain: &Shutdown,
        backoff: &mut Backoff,
    ) -> Result<Step> {
        // A DDL statement is a source transaction of its own: changes before it without their
        // commit never complete.
        if self.txn.is_open() && self.drop_orphan(sink, offset).await? {
            return Ok(Step::Rewind);
        }
        self.txn.start_ddl(&ddl, offset);
        if !self.settings.selects(&ddl.table) {
            return Ok(Step::Next);
        }
        // A resync's rebuild is the one statement a stopped table still takes: it starts it again.
        if self.stopped.contains(&ddl.table) && ddl.change != TableChange::Rebuild {
            // Not applied here, but streams with a copy of it may be waiting for this one
            // (they may not know of the stop yet).
            self.pass_barrier(sink, &ddl).await?;
            return Ok(Step::Next);
        }
        if let TableChange::Stop { reason } = &ddl.change {
            // The source cannot replicate the table from here on: record it with the commit
            // that follows (the table's rows before it stay, they are real changes).
            error!(table = %ddl.table, %reason, "table stopped by the source; the other tables keep replicating");
            self.stats.record_table_stopped(&ddl.table, reason);
            sink.stop_table(&ddl.table, reason).await?;
            self.stopped.insert(ddl.table);
            self.mid_transaction = true;
            return Ok(Step::Next);
        }
        // Commit everything before it (a target DDL statement may commit implicitly), then
        // apply it; its commit record right after stores the offset.
        self.flush_commit(sink, backoff).await?;
        self.note_unapplied(&ddl.table, ddl.timestamp);
        let barrier = self.ddl_barrier(sink, &ddl, drain).await?;
        if barrier == Barrier::Drained {
            // Not applied and not committed: the next run starts at it again.
            return Ok(Step::Drained);
        }
        let applied = match sink.apply_schema_change(&ddl).await {
            Ok(()) => self.ensure_shape(sink, &ddl).await,
            Err(e) => Err(e),
        };
        match applied {
            // A TRUNCATE (also how each snapshot copy of a table begins or ends) changes rows,
            // not shape; the end of a rebuild is the sink's to report.
            Ok(()) if matches!(ddl.change, TableChange::Truncate | TableChange::RebuildDone) => {}
            Ok(()) if ddl.change == TableChange::Rebuild => {
                if self.stopped.remove(&ddl.table) {
                    info!(table = %ddl.table, "stopped table replicates again: the resync rebuilds it with the source's shape");
                }
            }
            Ok(()) => self.stats.record_schema_applied(&ddl.table, &ddl.change.describe()),
            // A change the target cannot follow stops that table only.
            Err(e) if e.kind().scope() == Scope::Table => {
                error!(table = %ddl.table, error = %e, "table stopped; the other tables keep replicating");
                self.stats.record_table_stopped(&ddl.table, &e.to_string());
                sink.stop_table(&ddl.table, &e.to_string()).await?;
                self.stopped.insert(ddl.table.clone());
            }
            Err(e) => return Err(e),
        }
        if let Barrier::First(key) = barrier {
            sink.ddl_barrier_mark(&key, BarrierPhase::Applied).await?;
        }
        self.mid_transaction = true;
        Ok(Step::Next)
    }

    async fn commit_record<S: Sink + TableState>(
        &mut self,
        sink: &mut S,
        offset: u64,
        c: Commit,
        backoff: &mut Backoff,
    ) -> Result<Step> {
        if !self.txn.ended_by(&c) && self.drop_orphan(sink, offset).await? {
            return Ok(Step::Rewind);
        }
        self.txn.clear();
        // Rows of a table copy and source transactions never share a batch: a sink may write
        // copied rows apart from the transaction that records the offset (the MySQL sink, on
        // connections of their own, committed first), and a source transaction in the same
        // batch would then become visible after rows copied from a source state that already
        // includes it.
        let copies = self.held.iter().any(|ev| ev.op == Op::Snapshot);
        if !self.held.is_empty() && !self.batch.is_empty() && self.batch.holds_copies() != copies {
            self.flush_commit(sink, backoff).await?;
        }
        self.merge_held(sink).await?;
        self.last_commit = Some((offset, c));
        // A commit without changes (the consistency marker) is due on time too.
        self.batch_started.get_or_insert_with(Instant::now);
        let must = std::mem::take(&mut self.mid_transaction) | std::mem::take(&mut self.commit_next);
        if must || self.full() || self.due() {
            self.flush_commit(sink, backoff).await?;
        }
        Ok(Step::Next)
    }

    /// The transaction in progress never completes in this log: a reader published its
    /// beginning, died before the checkpoint that covers it, and its successor published again
    /// from an earlier checkpoint (the complete transaction, if it exists, comes again in full).
    /// Its changes are dropped. Returns true when part of it is already in the open target
    /// transaction: that transaction is rolled back, the prefix remembered, and the caller
    /// reads again from the target's checkpoint.
    async fn drop_orphan<S: Sink + TableState>(&mut self, sink: &mut S, at: u64) -> Result<bool> {
        let (first, records) = (self.txn.first_offset(), self.txn.records());
        warn!(
            first_offset = first,
            next_offset = at,
            records,
            "dropping the start of a source transaction that never completes in the buffer (a reader published \
             it, then restarted from an earlier checkpoint); no target transaction gets part of it"
        );
        self.stats.record_orphaned(records);
        self.held.clear();
        self.txn.clear();
        if !self.mid_transaction {
            return Ok(false);
        }
        self.lasting.orphans.add(first..at);
        sink.rollback().await?;
        Ok(true)
    }

    /// An undecodable message stops the table its key names, durably and loudly; without a
    /// readable key nothing safe can be skipped, so the stream stops with a definite error.
    async fn poison<S: Sink + TableState>(&mut self, sink: &mut S, poison: Poison) -> Result<()> {
        self.stats.record_poison();
        let Some(table) = poison.table else {
            return Err(Error::new(ErrorKind::Decode, poison.reason).with_hint(
                "inspect the message; to route undecodable messages to a dead-letter topic instead, \
                 set buffer.kafka.on_poison = \"dead_letter\"",
            ));
        };
        if self.stopped.contains(&table) || !self.settings.selects(&table) {
            return Ok(());
        }
        error!(%table, reason = %poison.reason, "undecodable message: table stopped; the other tables keep replicating");
        self.stats.record_table_stopped(&table, &format!("undecodable message: {}", poison.reason));
        // Its earlier changes in the open transaction go too: the table is now out of step and
        // needs a resync, and half of a source transaction must not reach it.
        self.held.retain(|e| e.table != table);
        self.batch.remove_table(&table);
        sink.stop_table(&table, &format!("undecodable message: {}", poison.reason)).await?;
        self.stopped.insert(table);
        // The stop is in the open target transaction: it must be durable at the latest with
        // the offset that passes this message.
        self.commit_next = true;
        Ok(())
    }

    fn full(&self) -> bool {
        self.batch.changes() >= self.settings.max_rows || self.batch.bytes() >= self.settings.max_bytes
    }

    fn due(&self) -> bool {
        self.last_commit.is_some() && self.batch_started.is_some_and(|t| t.elapsed() >= self.settings.max_delay)
    }

    /// After a statement that brings its table's shape (a copy's closing sweep): the target
    /// table exists with that shape, also when the copy had no rows. After the statement, so
    /// that it is the table as the statement leaves it (a resync's sweep follows the end of
    /// its rebuild, which swapped the rebuilt table in, or dropped it when it had no rows).
    async fn ensure_shape<S: Sink>(&mut self, sink: &mut S, ddl: &SchemaChange) -> Result<()> {
        let Some(version) = ddl.schema_version else { return Ok(()) };
        let schema = self.schema(version).await?;
        sink.ensure_table(&schema).await
    }

    async fn schema(&mut self, version: u64) -> Result<Arc<TableSchema>> {
        if let Some(s) = self.schemas.get(&version) {
            return Ok(Arc::clone(s));
        }
        let s = self.buffer.schema(version).await?.ok_or_else(|| {
            Error::new(
                ErrorKind::Buffer,
                format!("schema version {version:016x} is referenced by the buffer but not stored in it"),
            )
        })?;
        self.schemas.insert(version, Arc::clone(&s));
        Ok(s)
    }

    /// Move the held changes of the transaction in progress into the batch.
    ///
    /// Rows of two schema versions of one table never share a target transaction: the
    /// target table may have to be altered for the newer one, and a target transaction that
    /// wrote to it would hold the metadata lock the ALTER waits for. When the held changes
    /// bring a new version, the batch is committed first, before any of them joins it: it
    /// holds complete source transactions only, so that commit splits none.
    async fn merge_held<S: Sink + TableState>(&mut self, sink: &mut S) -> Result<()> {
        if self.held.is_empty() {
            return Ok(());
        }
        let held = std::mem::take(&mut self.held);
        let mut schemas = Vec::with_capacity(held.len());
        for ev in &held {
            schemas.push(self.schema(ev.schema_version).await?);
        }
        let switch = held.iter().find(|ev| self.version_in_target(&ev.table).is_some_and(|v| v != ev.schema_version));
        if let Some(ev) = switch {
            if self.mid_transaction {
                return Err(self.two_versions(ev));
            }
            self.flush_commit_inner(sink).await?;
        }
        for (ev, schema) in held.into_iter().zip(schemas) {
            if self.version_in_target(&ev.table).is_some_and(|v| v != ev.schema_version) {
                return Err(self.two_versions(&ev));
            }
            self.batch.push(ev, &schema)?;
        }
        // A flush above restarts the batch clock as if nothing followed it; these changes are
        // in the batch now and must be committed on time, not only when the next change
        // happens to arrive (on an idle source: never).
        self.batch_started.get_or_insert_with(Instant::now);
        Ok(())
    }

    /// The schema version of `table` in the batch or, while a source transaction is applied in
    /// chunks, in the open target transaction.
    fn version_in_target(&self, table: &TableRef) -> Option<u64> {
        self.batch.schema_version(table).or_else(|| self.target_versions.get(table).copied())
    }

    /// One source transaction with rows of one table in two schema versions. A source server
    /// never writes that (a schema change ends the transaction before it); only a buffer
    /// written by other hands can hold it, and it cannot be applied atomically.
    fn two_versions(&self, ev: &ChangeEvent) -> Error {
        Error::new(
            ErrorKind::Buffer,
            format!(
                "the source transaction that holds the change at {} has rows of {} in two schema versions \
                 ({:016x} and {:016x}): it cannot be applied as one target transaction",
                ev.position,
                ev.table,
                self.version_in_target(&ev.table).unwrap_or_default(),
                ev.schema_version,
            ),
        )
        .with_hint(format!(
            "the buffer holds records binferry's source would not write; exclude {} and resynchronise it",
            ev.table
        ))
    }

    /// Apply the batch into the open target transaction.
    /// Returns the number of row changes applied.
    async fn apply<S: Sink + TableState>(&mut self, sink: &mut S) -> Result<u64> {
        if self.batch.is_empty() {
            return Ok(0);
        }
        let schemas: Vec<Arc<TableSchema>> = self.batch.tables().map(|t| Arc::clone(&t.schema)).collect();
        for schema in schemas {
            match sink.ensure_table(&schema).await {
                Ok(()) => {}
                // An incompatible schema change stops that table only: recorded durably with
                // the next commit, its changes skipped from now on, the others go on.
                Err(e) if e.kind().scope() == Scope::Table => {
                    error!(table = %schema.table, error = %e, "table stopped; the other tables keep replicating");
                    self.stats.record_table_stopped(&schema.table, &e.to_string());
                    sink.stop_table(&schema.table, &e.to_string()).await?;
                    self.batch.remove_table(&schema.table);
                    self.stopped.insert(schema.table.clone());
                }
                Err(e) => return Err(e),
            }
        }
        if self.batch.is_empty() {
            self.batch = Batch::default();
            return Ok(0);
        }
        let per_table = sink.apply(&self.batch).await?;
        for t in self.batch.tables() {
            self.target_versions.insert(t.schema.table.clone(), t.version);
        }
        for (table, c) in &per_table.tables {
            let applied = Applied { written: c.written, unchanged: c.unchanged, stale: c.stale, compacted: 0 };
            self.stats.record_table_applied(table, applied);
        }
        let counts = per_table.total();
        self.stats.record_applied(Applied {
            written: counts.written,
            unchanged: counts.unchanged,
            stale: counts.stale,
            compacted: self.batch.compacted(),
        });
        self.batch = Batch::default();
        Ok(counts.written + counts.unchanged + counts.stale)
    }

    /// Apply the batch and commit it with the offset of the last complete transaction; a
    /// success resets the backoff.
    async fn flush_commit<S: Sink + TableState>(&mut self, sink: &mut S, backoff: &mut Backoff) -> Result<()> {
        if self.flush_commit_inner(sink).await? {
            backoff.reset();
        }
        Ok(())
    }

    /// Apply the batch and commit it with the offset of the last complete transaction.
    /// Returns whether it committed.
    async fn flush_commit_inner<S: Sink + TableState>(&mut self, sink: &mut S) -> Result<bool> {
        if self.mid_transaction {
            return Ok(false);
        }
        let Some((offset, commit)) = self.last_commit.take() else {
            return Ok(false);
        };
        self.adopt_shared_stops(sink).await?;
        self.stats.set_writer_activity(format!("applying a batch up to offset {offset} to the target"));
        let started = Instant::now();
        let applied = self.apply(sink).await?;
        self.stats.set_writer_activity(format!("committing offset {offset} to the target"));
        sink.commit(offset, &commit.position).await?;
        self.lasting.to_stop.clear();
        self.target_versions.clear();
        self.buffer.acknowledge(offset);
        self.batch_started = if self.held.is_empty() { None } else { Some(Instant::now()) };
        self.stats.record_commit();
        self.stats.record_recovered();
        self.stats.record_batch(applied, started.elapsed().as_secs_f64());
        self.stats.writer_next_offset.store(offset + 1, Ordering::Relaxed);
        self.stats.writer_applied_ts.fetch_max(commit.timestamp as u64, Ordering::Relaxed);
        self.note_consistency(&commit);
        self.unapplied_committed();
        Ok(true)
    }

    /// Skip, from the batch about to be applied on, the tables that other streams writing the
    /// same tables stopped (when [`SHARED_STOPS_EVERY`] has passed since the last look; a
    /// stream with nothing to apply does not look, so an idle pipeline runs no queries).
    ///
    /// A stop is never adopted after the resync that lifts it: a resync's rebuild deletes the
    /// table's stop as it is applied, and it is a DDL barrier, so no stream passes the
    /// rebuild before then. A stop read here therefore either comes after every rebuild this
    /// stream has passed, or before one it has yet to reach, which starts the table again.
    async fn adopt_shared_stops<S: TableState>(&mut self, sink: &mut S) -> Result<()> {
        let Some(read) = self.shared_stops_read else { return Ok(()) };
        if read.elapsed() < SHARED_STOPS_EVERY {
            return Ok(());
        }
        self.shared_stops_read = Some(tokio::time::Instant::now());
        for (table, reason) in sink.stopped_tables().await? {
            if self.stopped.insert(table.clone()) {
                // Not counted or alerted again: the stream that stopped it did that.
                warn!(%table, %reason, "table stopped by another partition's writer; its changes are skipped here too until it is resynchronised");
                self.held.retain(|e| e.table != table);
                self.batch.remove_table(&table);
            }
        }
        Ok(())
    }

    /// A change of `table` made at `ts` (source time) is read and not committed yet.
    fn note_unapplied(&mut self, table: &TableRef, ts: u32) {
        if self.unapplied_since.is_none() || !self.unapplied_tables.contains_key(table) {
            self.unapplied_since.get_or_insert(u64::from(ts));
            self.unapplied_tables.entry(table.clone()).or_insert(u64::from(ts));
            self.publish_unapplied();
        }
    }

    /// A commit made everything read durable but the transaction in progress.
    fn unapplied_committed(&mut self) {
        self.unapplied_since = None;
        self.unapplied_tables.clear();
        for ev in &self.held {
            self.unapplied_since.get_or_insert(u64::from(ev.timestamp));
            self.unapplied_tables.entry(ev.table.clone()).or_insert(u64::from(ev.timestamp));
        }
        self.publish_unapplied();
    }

    fn publish_unapplied(&self) {
        let tables = self.unapplied_tables.iter().map(|(t, ts)| (t.to_string(), *ts)).collect();
        self.stats.set_unapplied(self.lasting.id, WriterUnapplied { since: self.unapplied_since, tables });
    }

    /// Follow what the commits just made durable say about the target's consistency.
    fn note_consistency(&mut self, commit: &Commit) {
        let Some(now) = commit.consistent else { return };
        if self.lasting.consistent != Some(now) {
            if now {
                info!(
                    position = %commit.position,
                    "target consistent: from here on every target commit holds whole source transactions, \
                     and a reader of the target sees only states the source had"
                );
            } else {
                info!(
                    position = %commit.position,
                    "target not consistent yet: the initial snapshot is copying tables, or the stream has not \
                     passed the newest table copy; tables may be at different points of the source"
                );
            }
        }
        self.lasting.consistent = Some(now);
        self.stats.set_target_consistent(now);
    }
}
