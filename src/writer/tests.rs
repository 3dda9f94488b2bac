//! The writer's guarantees, deterministically: an in-memory [`Log`] scripted with the records a
//! real source writes (prefixes of transactions a crashed reader never completed, republished
//! transactions, schema switches, DDL, large transactions), and a model target that checks, at
//! every commit, that what became durable is the state after some prefix of the complete
//! source transactions, and that offsets never move backward. A faulty wrapper loses replies
//! of writes that succeeded, before and after commit. Time is paused (tokio's test clock),
//! so retries with backoff cost nothing.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::shutdown::Shutdown;
use proptest::prelude::*;

use super::{RowOp, WriterSettings, run};
use crate::buffer::DdlCopies;
use crate::buffer::{Item, Log, Poison};
use crate::error::{Error, ErrorKind, Result};
use crate::event::{ChangeEvent, Commit, Op, Record, SchemaChange, TableChange, Value};
use crate::position::{Gtid, Position};
use crate::schema::{ColumnSchema, ColumnType, TableRef, TableSchema};
use crate::sink::{ApplyCounts, BarrierPhase, BatchCounts, MemoryState, Sink, TableState};
use crate::telemetry::Stats;
use crate::writer::Batch;

/// A target state: (table, key) → value.
type State = BTreeMap<(String, i64), i64>;

const TABLES: [&str; 2] = ["a", "b"];

fn schema(table: &str, version: u8) -> Arc<TableSchema> {
    let int = ColumnType::Int { bytes: 4, unsigned: false };
    Arc::new(TableSchema {
        table: TableRef::new("d", table),
        columns: vec![
            ColumnSchema { name: "id".into(), ty: int.clone(), nullable: false, default: None, source_type: None },
            // Versions differ by the column's default: a schema change that travels in TABLE_MAP.
            ColumnSchema {
                name: "v".into(),
                ty: int,
                nullable: true,
                default: Some(version.to_string()),
                source_type: None,
            },
        ],
        primary_key: vec![0],
    })
}

// ---------------------------------------------------------------------------------------------
// The source: complete transactions, their records, and the state after each.

/// One statement of a generated source transaction.
#[derive(Clone, Debug)]
enum Stmt {
    /// Insert or update `key` of `table` to `value`.
    Put(usize, i64, i64),
    /// Delete `key` of `table` (a no-op when absent).
    Del(usize, i64),
}

/// A generated source transaction.
#[derive(Clone, Debug)]
enum Txn {
    Rows(Vec<Stmt>),
    Truncate(usize),
    /// `DROP TABLE`: a statement the buffer's streams each carry a copy of.
    Drop(usize),
    /// The table's shape changes (a new schema version on its next rows).
    Alter(usize),
}

/// The records of each complete source transaction and the states they lead to.
struct Source {
    /// Records of transaction k (its last record is its commit).
    txns: Vec<Vec<Record>>,
    /// `states[k]`: the target state after transactions 0..k.
    states: Vec<State>,
    schemas: HashMap<u64, Arc<TableSchema>>,
}

impl Source {
    fn build(txns: &[Txn]) -> Source {
        let mut version = [1u8; 2];
        let mut schemas = HashMap::new();
        for t in TABLES {
            for v in 1..=20 {
                let s = schema(t, v);
                schemas.insert(s.version(), s);
            }
        }
        let mut state = State::new();
        let mut out = Source { txns: vec![], states: vec![state.clone()], schemas };
        for (k, txn) in txns.iter().enumerate() {
            let base = 1000 * (k as u64 + 1);
            let pos = |i: u64| Position::new("binlog.000001", base + i);
            let gtid = Some(Gtid::Mariadb { domain: 0, server: 1, seq: k as u64 + 1 });
            let mut records = Vec::new();
            let mut commit_pos = pos(999);
            match txn {
                Txn::Rows(stmts) => {
                    let mut index = 0;
                    for (i, s) in stmts.iter().enumerate() {
                        let (t, key) = match s {
                            Stmt::Put(t, key, _) | Stmt::Del(t, key) => (*t, *key),
                        };
                        let name = TABLES[t].to_string();
                        let before = state.get(&(name.clone(), key)).map(|v| vec![Value::Int(key), Value::Int(*v)]);
                        let (op, after) = match s {
                            Stmt::Put(_, _, value) => {
                                state.insert((name.clone(), key), *value);
                                let op = if before.is_some() { Op::Update } else { Op::Insert };
                                (op, Some(vec![Value::Int(key), Value::Int(*value)]))
                            }
                            Stmt::Del(..) if before.is_some() => {
                                state.remove(&(name.clone(), key));
                                (Op::Delete, None)
                            }
                            Stmt::Del(..) => continue,
                        };
                        let before = if op == Op::Insert { None } else { before };
                        records.push(Record::Change(ChangeEvent {
                            table: TableRef::new("d", name),
                            schema_version: schema(TABLES[t], version[t]).version(),
                            op,
                            before,
                            after,
                            position: pos(i as u64 + 1),
                            timestamp: 0,
                            gtid: gtid.clone(),
                            index: Some(index),
                        }));
                        index += 1;
                    }
                }
                Txn::Truncate(t) => {
                    state.retain(|(table, _), _| table != TABLES[*t]);
                    commit_pos = pos(1);
                    records.push(Record::Ddl(SchemaChange::new(
                        TableRef::new("d", TABLES[*t]),
                        TableChange::Truncate,
                        commit_pos.clone(),
                        0,
                    )));
                }
                Txn::Drop(t) => {
                    state.retain(|(table, _), _| table != TABLES[*t]);
                    commit_pos = pos(1);
                    records.push(Record::Ddl(SchemaChange::new(
                        TableRef::new("d", TABLES[*t]),
                        TableChange::Drop,
                        commit_pos.clone(),
                        0,
                    )));
                }
                Txn::Alter(t) => {
                    // Column changes travel in the next TABLE_MAP: no record of their own.
                    version[*t] = (version[*t] + 1).min(20);
                    out.txns.push(records);
                    out.states.push(state.clone());
                    continue;
                }
            }
            // A TRUNCATE also opens each snapshot copy of a table, closed by a snapshot commit.
            let snapshot = matches!(txn, Txn::Truncate(_)) && k % 2 == 0;
            records.push(Record::Commit(Commit {
                position: commit_pos,
                gtid: if snapshot { None } else { gtid },
                timestamp: 0,
                snapshot,
                consistent: Some(true),
            }));
            out.txns.push(records);
            out.states.push(state.clone());
        }
        out
    }

    /// The log a reader writes that crashes per `runs`: each run publishes from its checkpoint
    /// and dies after `cut` records (possibly mid-transaction); its checkpoint then stood `lag`
    /// transactions behind what it had published completely (Kafka writes it after a batch
    /// of records), but never before the previous one. A last run publishes to the end.
    fn log(&self, runs: &[(usize, usize)]) -> Vec<Record> {
        let mut log = Vec::new();
        let mut checkpoint = 0;
        for &(lag, cut) in runs.iter().chain([(0, usize::MAX)].iter()) {
            let mut published = 0;
            let mut complete = 0;
            'run: for txn in &self.txns[checkpoint..] {
                for r in txn {
                    if published == cut {
                        break 'run;
                    }
                    log.push(r.clone());
                    published += 1;
                }
                complete += 1;
            }
            checkpoint = (checkpoint + complete).saturating_sub(lag).max(checkpoint);
        }
        log
    }
}

// ---------------------------------------------------------------------------------------------
// The log.

/// A scripted log: records, and messages that do not decode (a Kafka log can hold them).
struct MemLog {
    records: Vec<Record>,
    /// Offsets of undecodable messages, with the table their key names.
    poison: HashMap<usize, Option<TableRef>>,
    schemas: HashMap<u64, Arc<TableSchema>>,
    acked: AtomicU64,
    /// The other logs that carry copies of this one's DDL, as a Kafka partition has.
    copies: Option<DdlCopies>,
    /// Records at this index and after are not written yet: reads end before them.
    visible: AtomicUsize,
}

impl MemLog {
    fn new(records: Vec<Record>, schemas: HashMap<u64, Arc<TableSchema>>) -> Arc<Self> {
        Arc::new(MemLog {
            records,
            poison: HashMap::new(),
            schemas,
            acked: AtomicU64::new(0),
            copies: None,
            visible: AtomicUsize::new(usize::MAX),
        })
    }
}

impl Log for MemLog {
    async fn read(&self, from: u64, max: usize) -> Result<Vec<(u64, Item)>> {
        let from = usize::try_from(from).unwrap_or(usize::MAX);
        Ok(self
            .records
            .iter()
            .enumerate()
            .skip(from)
            .take(max)
            .take_while(|(i, _)| *i < self.visible.load(Ordering::Relaxed))
            .map(|(i, r)| {
                let item = match self.poison.get(&i) {
                    Some(table) => Item::Poison(Poison { table: table.clone(), reason: format!("garbage at {i}") }),
                    None => Item::Record(r.clone()),
                };
                (i as u64, item)
            })
            .collect())
    }

    async fn wait_for(&self, _offset: u64, timeout: Duration) {
        tokio::time::sleep(timeout).await;
    }

    async fn schema(&self, version: u64) -> Result<Option<Arc<TableSchema>>> {
        Ok(self.schemas.get(&version).cloned())
    }

    fn acknowledge(&self, offset: u64) {
        self.acked.fetch_max(offset + 1, Ordering::Relaxed);
    }

    async fn ddl_copies(&self) -> Result<Option<DdlCopies>> {
        Ok(self.copies.clone())
    }
}

// ---------------------------------------------------------------------------------------------
// The model target.

#[derive(Clone, Debug, Default)]
struct Tables {
    rows: BTreeMap<(String, i64), (i64, [u8; 16])>,
    key_tombstones: BTreeMap<(String, i64), [u8; 16]>,
    table_tombstones: BTreeMap<String, [u8; 16]>,
}

impl Tables {
    fn state(&self) -> State {
        self.rows.iter().map(|(k, (v, _))| (k.clone(), *v)).collect()
    }

    fn stale(&self, key: &(String, i64), pos: [u8; 16]) -> bool {
        self.rows.get(key).is_some_and(|(_, p)| *p >= pos)
            || self.key_tombstones.get(key).is_some_and(|p| *p >= pos)
            || self.table_tombstones.get(&key.0).is_some_and(|p| *p >= pos)
    }
}

/// What the model target saw, shared with the test.
#[derive(Debug, Default)]
struct Target {
    durable: Tables,
    offset: Option<u64>,
    /// `Some` while a target transaction is open.
    open: Option<Tables>,
    /// Schema version of each table written in the open transaction.
    written: HashMap<String, u64>,
    /// Schema version each table was last made ready for.
    shapes: HashMap<String, u64>,
    commits: Vec<u64>,
    /// The barrier of each DDL statement applied, as it stood then (see [`AtApply`]).
    ddl_applied: Vec<AtApply>,
    /// Index into the expected states of the last durable state.
    reached: usize,
    violations: Vec<String>,
}

/// The group of the logs that carry copies of each other's DDL in these tests.
const BARRIER_GROUP: &str = "topic";

/// A [`Sink`] over the model target that checks every commit against the source's states.
struct ModelSink {
    target: Arc<Mutex<Target>>,
    states: Arc<Vec<State>>,
    /// The log, to look up what a committed offset's commit record says.
    log: Arc<MemLog>,
    /// Stopped tables and DDL barriers.
    state: MemoryState,
}

/// What the state said about a DDL barrier when a stream applied its statement.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct AtApply {
    arrived: u32,
    applied: u32,
}

impl ModelSink {
    fn with<T>(&self, f: impl FnOnce(&mut Target) -> T) -> T {
        f(&mut self.target.lock().unwrap())
    }
}

fn int(v: &Value) -> i64 {
    match v {
        Value::Int(i) => *i,
        other => panic!("model tables hold integers, got {other:?}"),
    }
}

impl Sink for ModelSink {
    async fn applied_offset(&mut self) -> Result<Option<u64>> {
        Ok(self.with(|t| t.offset))
    }

    async fn ensure_table(&mut self, schema: &TableSchema) -> Result<()> {
        self.with(|t| {
            let name = schema.table.name.clone();
            if t.written.get(&name).is_some_and(|v| *v != schema.version()) {
                t.violations.push(format!(
                    "table {name} changes shape while the open target transaction holds its rows: the ALTER \
                     waits for this transaction's own metadata lock"
                ));
            }
            t.shapes.insert(name, schema.version());
        });
        Ok(())
    }

    async fn apply(&mut self, batch: &Batch) -> Result<BatchCounts> {
        self.with(|t| {
            let mut out = BatchCounts::default();
            // A sink may write copied rows apart (committed first): a batch must not hold
            // them together with a source transaction's changes.
            let copied = |op: &RowOp| matches!(op, RowOp::Upsert { copied: true, .. });
            let ops = || batch.tables().flat_map(|tb| tb.ops.values());
            if ops().any(copied) && !ops().all(copied) {
                t.violations.push("a batch holds copied rows together with a source transaction's changes".into());
            }
            let mut open = t.open.take().unwrap_or_else(|| t.durable.clone());
            for tb in batch.tables() {
                let mut counts = ApplyCounts::default();
                let name = tb.schema.table.name.clone();
                if t.shapes.get(&name) != Some(&tb.version) {
                    t.violations.push(format!("rows of {name} applied without ensure_table for their version"));
                }
                t.written.insert(name.clone(), tb.version);
                for op in tb.ops.values() {
                    let pos = op.position().sort_key().expect("model positions have a numbered file");
                    let key = (name.clone(), int(&op.key(&tb.schema)[0].clone()));
                    if open.stale(&key, pos) {
                        counts.stale += 1;
                        continue;
                    }
                    counts.written += 1;
                    match op {
                        RowOp::Upsert { row, .. } => {
                            open.rows.insert(key, (int(&row[1]), pos));
                        }
                        RowOp::Delete { .. } => {
                            open.rows.remove(&key);
                            open.key_tombstones.insert(key, pos);
                        }
                    }
                }
                out.tables.push((tb.schema.table.clone(), counts));
            }
            t.open = Some(open);
            Ok(out)
        })
    }

    async fn apply_schema_change(&mut self, change: &SchemaChange) -> Result<()> {
        let key = format!("{BARRIER_GROUP} {} at {}", change.table, change.position);
        let at = AtApply {
            arrived: self.state.ddl_barrier_count(&key, BarrierPhase::Arrived).await?,
            applied: self.state.ddl_barrier_count(&key, BarrierPhase::Applied).await?,
        };
        self.with(|t| t.ddl_applied.push(at));
        self.with(|t| {
            let mut open = t.open.take().unwrap_or_else(|| t.durable.clone());
            let pos = change.position.sort_key().expect("numbered file");
            if matches!(change.change, TableChange::Truncate | TableChange::Drop) {
                open.rows.retain(|(table, _), (_, p)| table != &change.table.name || *p >= pos);
                let tomb = open.table_tombstones.entry(change.table.name.clone()).or_default();
                *tomb = (*tomb).max(pos);
            }
            t.open = Some(open);
        });
        Ok(())
    }

    async fn commit(&mut self, offset: u64, _position: &Position) -> Result<()> {
        let says_consistent = matches!(
            self.log.records.get(offset as usize),
            Some(Record::Commit(Commit { consistent: Some(true), .. }))
        );
        self.with(|t| {
            if let Some(open) = t.open.take() {
                t.durable = open;
            }
            t.written.clear();
            if t.offset.is_some_and(|o| o > offset) {
                t.violations.push(format!("the applied offset moved backward: {:?} -> {offset}", t.offset));
            }
            t.offset = Some(t.offset.map_or(offset, |o| o.max(offset)));
            t.commits.push(offset);
            let state = t.durable.state();
            match (t.reached..self.states.len()).find(|&k| self.states[k] == state) {
                Some(k) => t.reached = k,
                None if says_consistent => t.violations.push(format!(
                    "commit at offset {offset} made a state durable that is not the state after any prefix of the \
                     complete source transactions from #{} on: {state:?}",
                    t.reached
                )),
                None => {}
            }
        });
        self.state.commit();
        Ok(())
    }

    async fn rollback(&mut self) -> Result<()> {
        self.state.rollback();
        self.with(|t| {
            t.open = None;
            t.written.clear();
        });
        Ok(())
    }

    async fn reset(&mut self) {
        let _ = self.rollback().await;
    }
}

impl TableState for ModelSink {
    async fn stopped_tables(&mut self) -> Result<Vec<(TableRef, String)>> {
        self.state.stopped_tables().await
    }

    async fn stop_table(&mut self, table: &TableRef, reason: &str) -> Result<()> {
        self.state.stop_table(table, reason).await
    }

    async fn ddl_barrier_mark(&mut self, barrier: &str, phase: BarrierPhase) -> Result<()> {
        self.state.ddl_barrier_mark(barrier, phase).await
    }

    async fn ddl_barrier_count(&mut self, barrier: &str, phase: BarrierPhase) -> Result<u32> {
        self.state.ddl_barrier_count(barrier, phase).await
    }
}

// ---------------------------------------------------------------------------------------------
// Faults: a sink whose replies get lost.

/// Which call fails, counting calls of that method from 1.
#[derive(Clone, Debug, Default)]
struct Faults {
    /// `apply` calls that succeed, then lose their reply.
    apply_reply_lost: Vec<usize>,
    /// `commit` calls that commit, then lose their reply.
    commit_reply_lost: Vec<usize>,
    /// `commit` calls that fail before anything is committed.
    commit_refused: Vec<usize>,
}

struct FaultySink {
    inner: ModelSink,
    faults: Faults,
    applies: usize,
    commits: usize,
}

fn lost(what: &str) -> Error {
    Error::new(ErrorKind::TargetUnavailable, format!("injected: the reply to {what} was lost"))
}

impl Sink for FaultySink {
    async fn applied_offset(&mut self) -> Result<Option<u64>> {
        self.inner.applied_offset().await
    }
    async fn ensure_table(&mut self, schema: &TableSchema) -> Result<()> {
        self.inner.ensure_table(schema).await
    }
    async fn apply(&mut self, batch: &Batch) -> Result<BatchCounts> {
        self.applies += 1;
        let counts = self.inner.apply(batch).await?;
        if self.faults.apply_reply_lost.contains(&self.applies) {
            return Err(lost("apply"));
        }
        Ok(counts)
    }
    async fn apply_schema_change(&mut self, change: &SchemaChange) -> Result<()> {
        self.inner.apply_schema_change(change).await
    }
    async fn commit(&mut self, offset: u64, position: &Position) -> Result<()> {
        self.commits += 1;
        if self.faults.commit_refused.contains(&self.commits) {
            return Err(lost("commit (before it committed)"));
        }
        self.inner.commit(offset, position).await?;
        if self.faults.commit_reply_lost.contains(&self.commits) {
            return Err(lost("commit (after it committed)"));
        }
        Ok(())
    }
    async fn rollback(&mut self) -> Result<()> {
        self.inner.rollback().await
    }
    async fn reset(&mut self) {
        self.inner.reset().await
    }
}

impl TableState for FaultySink {
    async fn stopped_tables(&mut self) -> Result<Vec<(TableRef, String)>> {
        self.inner.stopped_tables().await
    }

    async fn stop_table(&mut self, table: &TableRef, reason: &str) -> Result<()> {
        self.inner.stop_table(table, reason).await
    }

    async fn ddl_barrier_mark(&mut self, barrier: &str, phase: BarrierPhase) -> Result<()> {
        self.inner.ddl_barrier_mark(barrier, phase).await
    }

    async fn ddl_barrier_count(&mut self, barrier: &str, phase: BarrierPhase) -> Result<u32> {
        self.inner.ddl_barrier_count(barrier, phase).await
    }
}

// ---------------------------------------------------------------------------------------------
// Running the writer.

fn settings(max_rows: usize, max_open_changes: usize) -> WriterSettings {
    WriterSettings {
        max_rows,
        max_bytes: usize::MAX,
        // Long: batches close by size or at the end of the log, as when a batch is pending
        // while more transactions arrive.
        max_delay: Duration::from_secs(3600),
        max_open_changes,
        start_at: None,
        only: None,
        tables: None,
    }
}

struct Outcome {
    target: Target,
    states: Arc<Vec<State>>,
    stats: Arc<Stats>,
    result: Result<()>,
}

/// Apply `records` to a model target through the writer until the log is exhausted.
fn apply_log(
    records: Vec<Record>,
    schemas: HashMap<u64, Arc<TableSchema>>,
    states: Vec<State>,
    settings: WriterSettings,
    faults: Faults,
) -> Outcome {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_time().start_paused(true).build().unwrap();
    let log = MemLog::new(records, schemas);
    let target = Arc::new(Mutex::new(Target::default()));
    let states = Arc::new(states);
    let sink = FaultySink {
        inner: ModelSink {
            target: Arc::clone(&target),
            states: Arc::clone(&states),
            log: Arc::clone(&log),
            state: MemoryState::new(),
        },
        faults,
        applies: 0,
        commits: 0,
    };
    let stats = Arc::new(Stats::default());
    // Drained from the start: the writer stops once it has read the log to its end.
    let drain = Shutdown::triggered_now();
    let result = runtime.block_on(run(settings, log, sink, Arc::clone(&stats), drain));
    let target = std::mem::take(&mut *target.lock().unwrap());
    Outcome { target, states, stats, result }
}

impl Outcome {
    /// Every commit was a prefix of whole transactions, offsets never moved backward, and in
    /// the end every complete transaction is applied.
    fn assert_whole(&self) {
        assert!(self.result.is_ok(), "the writer failed: {:?}", self.result.as_ref().err());
        assert!(self.target.violations.is_empty(), "{:#?}", self.target.violations);
        assert!(self.target.open.is_none(), "a target transaction was left open");
        let last = self.states.last().unwrap();
        assert_eq!(&self.target.durable.state(), last, "the target does not hold every complete transaction");
    }
}

// ---------------------------------------------------------------------------------------------
// The cases found with real servers, one test each.

fn put(t: usize, key: i64, value: i64) -> Stmt {
    Stmt::Put(t, key, value)
}

/// Issue #12, case 1: `txn1: UPDATE a; INSERT b`, `ALTER TABLE b`, `txn2: UPDATE a; INSERT b`,
/// all in one pending batch. The batch used to be committed when b's new version arrived,
/// with a's change of txn2 already in it.
#[test]
fn a_schema_switch_never_commits_part_of_a_transaction() {
    let source = Source::build(&[
        Txn::Rows(vec![put(0, 1, 0)]),
        Txn::Rows(vec![put(0, 1, 1), put(1, 1, 1)]),
        Txn::Alter(1),
        Txn::Rows(vec![put(0, 1, 2), put(1, 2, 2)]),
    ]);
    let out = apply_log(
        source.log(&[]),
        source.schemas.clone(),
        source.states.clone(),
        settings(100, 100),
        Faults::default(),
    );
    out.assert_whole();
}

/// Issue #12, case 2: a Kafka reader published T1 and the start of T2, died before the
/// checkpoint, and its successor published T1 and T2 again. T2's prefix used to be committed
/// together with T1's second copy.
#[test]
fn a_republished_prefix_is_dropped_not_committed_with_the_next_transaction() {
    let source = Source::build(&[
        Txn::Rows(vec![put(0, 1, 10)]),
        Txn::Rows(vec![put(0, 1, 20), put(1, 1, 20)]),
        Txn::Rows(vec![put(0, 2, 30), put(1, 2, 30), put(1, 3, 30)]),
    ]);
    // The first run publishes T0, T1 and one change of T2; its checkpoint is before T1.
    let log = source.log(&[(1, 2 + 3 + 1)]);
    for max_rows in [1, 100] {
        let out = apply_log(
            log.clone(),
            source.schemas.clone(),
            source.states.clone(),
            settings(max_rows, 100),
            Faults::default(),
        );
        out.assert_whole();
    }
}

/// A prefix larger than the writer holds in memory: part of it is already in the open target
/// transaction when it turns out never to complete. The writer rolls back and reads again,
/// passing over it.
#[test]
fn a_prefix_applied_in_chunks_is_rolled_back_and_passed_over() {
    let big: Vec<Stmt> = (0..9).map(|k| put(1, k, 7)).collect();
    let source = Source::build(&[
        Txn::Rows(vec![put(0, 1, 1)]),
        Txn::Rows(vec![put(0, 1, 2)]),
        Txn::Rows(big),
        Txn::Rows(vec![put(0, 1, 3), put(1, 100, 3)]),
    ]);
    // The first run publishes T0, T1 and 7 of T2's 9 changes, its checkpoint before T1.
    let log = source.log(&[(1, 2 + 2 + 7)]);
    let out = apply_log(log, source.schemas.clone(), source.states.clone(), settings(100, 3), Faults::default());
    out.assert_whole();
}

/// Issue #12, case 3: after an interrupted snapshot, table a was copied at P1 and table b at
/// P2 > P1; streaming starts at P1. Until the stream passes P2 the target holds no state of
/// the source, and the writer must not say it is consistent; from the commit that passes P2
/// on it must.
#[test]
fn consistency_is_reported_only_once_the_stream_passes_the_newest_copy() {
    let p = |offset: u64, row: u32| Position { file: "binlog.000001".into(), offset, row };
    let va = schema("a", 1);
    let vb = schema("b", 1);
    let snap = |t: &Arc<TableSchema>, at: u64, row: u32, key: i64, v: i64| {
        Record::Change(ChangeEvent {
            table: t.table.clone(),
            schema_version: t.version(),
            op: Op::Snapshot,
            before: None,
            after: Some(vec![Value::Int(key), Value::Int(v)]),
            position: p(at, row),
            timestamp: 0,
            gtid: None,
            index: None,
        })
    };
    let commit = |at: u64, snapshot: bool, consistent: bool| {
        Record::Commit(Commit { position: p(at, 0), gtid: None, timestamp: 0, snapshot, consistent: Some(consistent) })
    };
    // One transaction moves 5 from a.1 to b.1 at 1500; a was copied at 1000 (before it),
    // b at 2000 (after it). The source's states: before (a=10, b=0), after (a=5, b=5).
    let transfer = |index: u32, t: &Arc<TableSchema>, before: i64, after: i64| {
        Record::Change(ChangeEvent {
            table: t.table.clone(),
            schema_version: t.version(),
            op: Op::Update,
            before: Some(vec![Value::Int(1), Value::Int(before)]),
            after: Some(vec![Value::Int(1), Value::Int(after)]),
            position: p(1500, index),
            timestamp: 0,
            gtid: Some(Gtid::Mariadb { domain: 0, server: 1, seq: 9 }),
            index: Some(index),
        })
    };
    // Each copy starts as the snapshot writes it: a TRUNCATE at the copy's position, closed
    // by a snapshot commit.
    let truncate = |t: &Arc<TableSchema>, at: u64| {
        Record::Ddl(SchemaChange::new(t.table.clone(), TableChange::Truncate, p(at, 0), 0))
    };
    let records = vec![
        truncate(&va, 1000),
        commit(1000, true, false),
        snap(&va, 1000, 1, 1, 10),
        commit(1000, true, false),
        truncate(&vb, 2000),
        commit(2000, true, false),
        snap(&vb, 2000, 1, 1, 5),
        commit(2000, true, false),
        // Streaming from P1 = 1000: the transfer is pending (b's copy already holds it).
        transfer(0, &va, 10, 5),
        transfer(1, &vb, 0, 5),
        commit(1501, false, false),
        // The stream reaches P2: a commit without changes says the target is consistent.
        commit(2000, false, true),
    ];
    let schemas: HashMap<u64, Arc<TableSchema>> = [(va.version(), va), (vb.version(), vb)].into();
    let s = |a: i64, b: i64| -> State { [(("a".to_string(), 1), a), (("b".to_string(), 1), b)].into() };
    let states = vec![State::new(), s(10, 0), s(5, 5)];
    for max_rows in [1, 100] {
        let out =
            apply_log(records.clone(), schemas.clone(), states.clone(), settings(max_rows, 100), Faults::default());
        out.assert_whole();
        assert_eq!(out.stats.target_consistent(), Some(true), "max_rows {max_rows}");
    }
}

/// A copy's closing sweep brings the table's shape: the target table is made ready for it
/// even when the copy had no rows (an empty source table), and a sweep without one (a
/// TRUNCATE of the source) makes nothing ready.
#[test]
fn a_copy_of_an_empty_table_makes_its_target_table() {
    let p = |offset: u64| Position { file: "binlog.000001".into(), offset, row: 0 };
    let va = schema("a", 3);
    let vb = schema("b", 1);
    let records = vec![
        Record::Ddl(SchemaChange::new(va.table.clone(), TableChange::Truncate, p(1000), 0).with_shape(va.version())),
        Record::Commit(Commit::copy_chunk(p(1000), 0)),
        Record::Ddl(SchemaChange::new(vb.table.clone(), TableChange::Truncate, p(1100), 0)),
        Record::Commit(Commit::copy_chunk(p(1100), 0)),
    ];
    let schemas: HashMap<u64, Arc<TableSchema>> = [(va.version(), Arc::clone(&va)), (vb.version(), vb)].into();
    let out = apply_log(records, schemas, vec![State::new()], settings(100, 100), Faults::default());
    out.assert_whole();
    assert_eq!(out.target.shapes, HashMap::from([("a".to_string(), va.version())]));
}

/// A message that does not decode, in the middle of a transaction, names table b: b stops
/// (durably, with the commit that passes the message) and loses the changes of that
/// transaction too; a goes on with every change. A message whose key names no table stops
/// the stream with a definite error.
#[test]
fn a_poison_message_stops_its_table_and_nothing_else() {
    let source = Source::build(&[
        Txn::Rows(vec![put(0, 1, 1), put(1, 1, 1)]),
        Txn::Rows(vec![put(0, 1, 2), put(1, 2, 2), put(0, 3, 2)]),
        Txn::Rows(vec![put(1, 1, 3), put(0, 1, 3)]),
    ]);
    let log = source.log(&[]);
    // T1's second record (b's insert) does not decode.
    let poisoned = log
        .iter()
        .position(|r| matches!(r, Record::Change(ev) if ev.table.name == "b" && ev.position.offset == 2002))
        .unwrap();
    let run_with = |table: Option<TableRef>| {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_time().start_paused(true).build().unwrap();
        let mut memlog = MemLog {
            records: log.clone(),
            poison: HashMap::new(),
            schemas: source.schemas.clone(),
            acked: AtomicU64::new(0),
            copies: None,
            visible: AtomicUsize::new(usize::MAX),
        };
        memlog.poison.insert(poisoned, table);
        let memlog = Arc::new(memlog);
        let target = Arc::new(Mutex::new(Target::default()));
        // The check by source states does not apply: b leaves them on purpose.
        let state = MemoryState::new();
        let sink = ModelSink {
            target: Arc::clone(&target),
            states: Arc::new(vec![]),
            log: Arc::clone(&memlog),
            state: state.clone(),
        };
        let drain = Shutdown::triggered_now();
        let result = runtime.block_on(run(settings(2, 100), memlog, sink, Arc::new(Stats::default()), drain));
        let target = std::mem::take(&mut *target.lock().unwrap());
        (result, target, state.stopped())
    };
    let (result, target, stopped) = run_with(Some(TableRef::new("d", "b")));
    assert!(result.is_ok(), "{:?}", result.err());
    assert_eq!(stopped.len(), 1, "{stopped:?}");
    assert_eq!(stopped[0].0, TableRef::new("d", "b"));
    assert!(stopped[0].1.contains("undecodable message"), "{stopped:?}");
    let state = target.durable.state();
    let want: State = [(("a".to_string(), 1), 3), (("a".to_string(), 3), 2), (("b".to_string(), 1), 1)].into();
    assert_eq!(state, want, "a has every change; b keeps what it had before the message");
    let (result, _, _) = run_with(None);
    let e = result.expect_err("an unreadable key stops the stream");
    assert_eq!(e.kind(), ErrorKind::Decode);
    assert!(e.hint().is_some_and(|h| h.contains("dead_letter")), "{e}");
}

/// Replies lost after an apply, after a commit, and a commit refused: the writer retries from
/// the target's checkpoint, and the target still only ever holds whole transactions.
#[test]
fn lost_replies_neither_lose_nor_split_a_transaction() {
    let txns: Vec<Txn> = (0..12)
        .map(|k| match k % 4 {
            0 => Txn::Rows(vec![put(0, k % 3, k), put(1, k % 5, k)]),
            1 => Txn::Rows(vec![Stmt::Del(1, (k - 1) % 5), put(0, 9, k)]),
            2 => Txn::Rows((0..5).map(|i| put(1, i, k)).collect()),
            _ => Txn::Truncate(0),
        })
        .collect();
    let source = Source::build(&txns);
    let log = source.log(&[(2, 9), (0, 14)]);
    for faults in [
        Faults { apply_reply_lost: vec![1, 3, 4], ..Faults::default() },
        Faults { commit_reply_lost: vec![1, 2, 5], ..Faults::default() },
        Faults { commit_refused: vec![2, 3, 6], ..Faults::default() },
    ] {
        let out = apply_log(log.clone(), source.schemas.clone(), source.states.clone(), settings(3, 4), faults.clone());
        out.assert_whole();
        let sorted = out.target.commits.windows(2).all(|w| w[0] <= w[1]);
        assert!(sorted, "{faults:?}: commits {:?}", out.target.commits);
    }
}

// ---------------------------------------------------------------------------------------------
// Random interleavings.

/// Run one writer per log until each has committed its last record, the logs being the first
/// of `copies` that carry copies of each other's DDL; the streams share one [`MemoryState`].
/// `drain_at_start` drains the writers before they run.
fn apply_copies(sources: &[Source], copies: u32, drain_at_start: bool) -> (Vec<(Target, Result<()>)>, MemoryState) {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_time().start_paused(true).build().unwrap();
    let shared = MemoryState::new();
    let drain = if drain_at_start { Shutdown::triggered_now() } else { Shutdown::new() };
    let mut targets = Vec::new();
    let mut runs = Vec::new();
    for (rank, source) in sources.iter().enumerate() {
        let records = source.log(&[]);
        let last = records.len() as u64 - 1;
        let log = Arc::new(MemLog {
            records,
            poison: HashMap::new(),
            schemas: source.schemas.clone(),
            acked: AtomicU64::new(0),
            copies: Some(DdlCopies { group: BARRIER_GROUP.into(), copies, rank: rank as u32 }),
            visible: AtomicUsize::new(usize::MAX),
        });
        let target = Arc::new(Mutex::new(Target::default()));
        let sink = ModelSink {
            target: Arc::clone(&target),
            states: Arc::new(source.states.clone()),
            log: Arc::clone(&log),
            state: shared.for_stream(&rank.to_string()),
        };
        targets.push((Arc::clone(&target), last));
        runs.push(run(settings(100, 1000), log, sink, Arc::new(Stats::default()), drain.child()));
    }
    let watch = async {
        // Drain once every stream has committed its whole log (or at once, when asked to).
        for _ in 0..10_000 {
            if targets.iter().all(|(t, last)| t.lock().unwrap().offset == Some(*last)) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        drain.trigger();
    };
    let (results, ()) = runtime.block_on(async { tokio::join!(futures_util::future::join_all(runs), watch) });
    let outcomes =
        targets.iter().zip(results).map(|((t, _), r)| (std::mem::take(&mut *t.lock().unwrap()), r)).collect();
    (outcomes, shared)
}

/// Each stream's part of a source that drops table b halfway: keys of its own, the same DROP.
fn stream_with_drop(k: i64) -> Source {
    Source::build(&[
        Txn::Rows(vec![put(0, k, 1), put(1, k, 1)]),
        Txn::Drop(1),
        Txn::Rows(vec![put(0, k + 10, 2), put(1, k, 2)]),
    ])
}

#[test]
fn a_statement_several_streams_carry_is_applied_first_by_copy_0_after_every_stream_arrived() {
    let sources: Vec<Source> = (1..=3).map(stream_with_drop).collect();
    let (outcomes, _) = apply_copies(&sources, 3, false);
    for (rank, (target, result)) in outcomes.iter().enumerate() {
        assert!(result.is_ok(), "stream {rank}: {:?}", result.as_ref().err());
        assert!(target.violations.is_empty(), "stream {rank}: {:#?}", target.violations);
        assert_eq!(&target.durable.state(), sources[rank].states.last().unwrap(), "stream {rank}");
        let [at] = target.ddl_applied[..] else { panic!("stream {rank} applied {:?}", target.ddl_applied) };
        assert_eq!(at.arrived, 3, "stream {rank} applied the DROP before every stream had arrived at it");
        let want_applied = if rank == 0 { 0 } else { 1 };
        assert_eq!(at.applied, want_applied, "stream {rank}: only copy 0 applies first, the others after it");
    }
}

#[test]
fn a_stream_asked_to_drain_at_a_barrier_stops_before_the_statement() {
    // Only copy 0 of 2 runs: copy 1 never arrives, so the barrier cannot open.
    let sources = [stream_with_drop(1)];
    let (outcomes, state) = apply_copies(&sources, 2, true);
    let (target, result) = &outcomes[0];
    assert!(result.is_ok(), "{:?}", result.as_ref().err());
    assert!(target.ddl_applied.is_empty(), "the DROP was applied without its barrier: {:?}", target.ddl_applied);
    assert_eq!(&target.durable.state(), &sources[0].states[1], "everything before the DROP, nothing after it");
    assert!(state.stopped().is_empty());
}

#[test]
fn a_stopped_table_stays_stopped_for_the_next_writer() {
    // The first run stops b by a poison message; a second run over a clean log must not apply
    // b's changes, because the stop is durable state.
    let source =
        Source::build(&[Txn::Rows(vec![put(0, 1, 1), put(1, 1, 1)]), Txn::Rows(vec![put(0, 2, 2), put(1, 2, 2)])]);
    let runtime = tokio::runtime::Builder::new_current_thread().enable_time().start_paused(true).build().unwrap();
    let state = MemoryState::new();
    let target = Arc::new(Mutex::new(Target::default()));
    for poisoned in [true, false] {
        let records = source.log(&[]);
        let mut log = MemLog::new(records.clone(), source.schemas.clone());
        if poisoned {
            let at = records.iter().position(|r| matches!(r, Record::Change(ev) if ev.table.name == "b")).unwrap();
            Arc::get_mut(&mut log).unwrap().poison.insert(at, Some(TableRef::new("d", "b")));
        }
        let sink = ModelSink {
            target: Arc::clone(&target),
            states: Arc::new(vec![]),
            log: Arc::clone(&log),
            state: state.clone(),
        };
        let result = runtime.block_on(run(
            settings(100, 1000),
            log,
            sink,
            Arc::new(Stats::default()),
            Shutdown::triggered_now(),
        ));
        assert!(result.is_ok(), "{:?}", result.err());
    }
    let held = target.lock().unwrap().durable.state();
    assert!(held.keys().all(|(t, _)| t == "a"), "b replicated after it was stopped: {held:?}");
    assert_eq!(held.len(), 2);
    assert_eq!(state.stopped().len(), 1);
}

#[test]
fn a_table_another_partition_stopped_is_skipped_here_from_the_next_batch_on() {
    // Two partitions of one table set (the Kafka key layout). Partition 0 stops b at an
    // undecodable message; partition 1 has applied b's first rows by then, and its later
    // rows of b arrive more than SHARED_STOPS_EVERY later: they must be skipped, a's applied.
    let runtime = tokio::runtime::Builder::new_current_thread().enable_time().start_paused(true).build().unwrap();
    let shared = MemoryState::new();
    let drain = Shutdown::new();
    let zero = Source::build(&[Txn::Rows(vec![put(0, 1, 1), put(1, 1, 1)])]);
    let one =
        Source::build(&[Txn::Rows(vec![put(0, 2, 1), put(1, 2, 1)]), Txn::Rows(vec![put(0, 3, 1), put(1, 3, 1)])]);
    let logs: Vec<Arc<MemLog>> = [&zero, &one]
        .iter()
        .enumerate()
        .map(|(rank, source)| {
            let records = source.log(&[]);
            let mut poison = HashMap::new();
            if rank == 0 {
                let at = records.iter().position(|r| matches!(r, Record::Change(ev) if ev.table.name == "b")).unwrap();
                poison.insert(at, Some(TableRef::new("d", "b")));
            }
            Arc::new(MemLog {
                records,
                poison,
                schemas: source.schemas.clone(),
                acked: AtomicU64::new(0),
                copies: Some(DdlCopies { group: BARRIER_GROUP.into(), copies: 2, rank: rank as u32 }),
                visible: AtomicUsize::new(usize::MAX),
            })
        })
        .collect();
    // Partition 1 holds only its first transaction at first.
    let first_end = logs[1].records.iter().position(|r| matches!(r, Record::Commit(_))).unwrap() + 1;
    logs[1].visible.store(first_end, Ordering::Relaxed);
    let targets: Vec<_> = (0..2).map(|_| Arc::new(Mutex::new(Target::default()))).collect();
    let runs: Vec<_> = (0..2)
        .map(|rank| {
            let sink = ModelSink {
                target: Arc::clone(&targets[rank]),
                states: Arc::new(vec![]),
                log: Arc::clone(&logs[rank]),
                state: shared.for_stream(&rank.to_string()),
            };
            // A batch is due at two changes: each transaction here is one batch.
            run(settings(2, 1000), Arc::clone(&logs[rank]), sink, Arc::new(Stats::default()), drain.child())
        })
        .collect();
    let last = |rank: usize| logs[rank].records.len() as u64 - 1;
    let committed = |rank: usize, offset: u64| targets[rank].lock().unwrap().offset == Some(offset);
    let watch = async {
        while !(committed(0, last(0)) && committed(1, first_end as u64 - 1)) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(shared.stopped().len(), 1, "partition 0 did not stop b");
        tokio::time::sleep(super::SHARED_STOPS_EVERY + Duration::from_secs(1)).await;
        logs[1].visible.store(usize::MAX, Ordering::Relaxed);
        while !committed(1, last(1)) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        drain.trigger();
    };
    let (results, ()) = runtime.block_on(async { tokio::join!(futures_util::future::join_all(runs), watch) });
    for r in results {
        assert!(r.is_ok(), "{:?}", r.err());
    }
    let held = targets[1].lock().unwrap().durable.state();
    let keys: Vec<_> = held.keys().cloned().collect();
    let want: Vec<(String, i64)> = vec![("a".into(), 2), ("a".into(), 3), ("b".into(), 2)];
    assert_eq!(keys, want, "partition 1 must apply b's rows from before it knew of the stop, and none after");
}

fn any_txn() -> impl Strategy<Value = Txn> {
    let stmt = prop_oneof![
        4 => (0..2usize, 0..6i64, 0..100i64).prop_map(|(t, k, v)| Stmt::Put(t, k, v)),
        1 => (0..2usize, 0..6i64).prop_map(|(t, k)| Stmt::Del(t, k)),
    ];
    prop_oneof![
        8 => prop::collection::vec(stmt, 1..8).prop_map(Txn::Rows),
        1 => (0..2usize).prop_map(Txn::Truncate),
        1 => (0..2usize).prop_map(Txn::Alter),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    /// Whatever the crashes of the reader (prefixes, republished transactions, checkpoints
    /// lagging), the batch sizes, large transactions and lost replies: at every commit the
    /// target holds the state after a prefix of the complete source transactions, never
    /// going back, and in the end all of them.
    #[test]
    fn every_commit_holds_whole_transactions_in_order(
        txns in prop::collection::vec(any_txn(), 1..14),
        runs in prop::collection::vec((0..3usize, 0..30usize), 0..4),
        max_rows in 1..10usize,
        max_open in 2..12usize,
        apply_lost in prop::collection::vec(1..20usize, 0..2),
        commit_lost in prop::collection::vec(1..12usize, 0..2),
    ) {
        let source = Source::build(&txns);
        let log = source.log(&runs);
        let faults = Faults { apply_reply_lost: apply_lost, commit_reply_lost: commit_lost, ..Faults::default() };
        let out = apply_log(log, source.schemas.clone(), source.states.clone(), settings(max_rows, max_open), faults);
        prop_assert!(out.result.is_ok(), "{:?}", out.result.err());
        prop_assert!(out.target.violations.is_empty(), "{:#?}", out.target.violations);
        prop_assert_eq!(&out.target.durable.state(), source.states.last().unwrap());
    }
}
