//! The BigQuery source (warehouse → MySQL): rounds of hashed-row diffs computed in BigQuery.
//!
//! BigQuery has no binlog. Each round reads every selected table at one timestamp `T`
//! (`FOR SYSTEM_TIME AS OF`), so linked tables are seen at one moment, and finds what changed
//! since the previous round's timestamp `P`:
//!
//! 1. **Summary.** Per bucket of keys (the first hex digits of the MD5 of the key), the row
//!    count and the XOR of the row hashes at `T` ([`sql::TableSql::summary`]). Buckets equal
//!    to the previous round's are unchanged; an idle table costs this one query.
//! 2. **Changed rows.** For the changed buckets, BigQuery joins the rows at `T` with the rows
//!    at `P` by key and returns those whose hash differs ([`sql::TableSql::changes`]): new and
//!    changed rows whole, deleted rows by key. The previous round's row hashes are not stored
//!    anywhere: time travel recomputes them, in BigQuery, from the same rows. So binferry's
//!    state is at most 256 buckets of a few numbers per table ([`TableSummary`](crate::position::TableSummary)),
//!    whatever the table's size, and BigQuery hashes are only ever compared with BigQuery
//!    hashes.
//! 3. A table's first round, or a round whose `P` has left BigQuery's time-travel window,
//!    reads every row ([`sql::TableSql::rows`]).
//!
//! Every diff runs next to the table's summary at `P` as BigQuery shows it now: where that
//! differs from the summary the previous round kept, a commit became visible after its
//! timestamp, and only those buckets are diffed with the settle margin too ([`read_diff`]).
//! A table the last round found changed skips step 1: it is diffed at once, and the round
//! derives its summary from the diff's row hashes ([`summary::DiffFirst`], [`summary::Delta`]).
//!
//! Rows hash as `TO_HEX(MD5(TO_JSON_STRING(STRUCT(c1 AS c1, ...))))`: valid on BigQuery and
//! on the emulator, whose JSON text differs from BigQuery's (so its hashes must never meet
//! real BigQuery's: they do not, both ends of every comparison come from one engine).
//!
//! docs/bigquery-source.md describes the source for users; `table` maps types, `values`
//! decodes cells, `sql` writes the statements, `summary` compares buckets, `round` runs a
//! table's part of a round, and `records` orders a round's buffer records (copies, then
//! sweeps, then one transaction with every change). This file runs rounds.

mod arrow_rows;
mod check;
mod hashes;
mod records;
mod round;
mod sql;
mod summary;
mod table;
mod values;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use futures_util::{StreamExt, stream};
use tracing::{debug, info, warn};

use super::control::{Inbox, Request, Resynced};
use crate::bigquery_api::{Api, Auth, Side};
use crate::buffer::{AppendBatch, Journal};
use crate::config::Config;
use crate::error::{Error, ErrorKind, Result, Scope};
use crate::event::{Record, TableChange};
use crate::position::{Position, RoundCheckpoint, SourceCheckpoint, TableSummary};
use crate::retry::Backoff;
use crate::schema::{TableRef, TableSchema};
use crate::shutdown::Shutdown;
use crate::table_filter::TableFilter;
use crate::table_options::TableRules;
use crate::telemetry::{CopyProgress, Stats};
use records::RoundRecords;
use round::{Moment, Read, Since, TableRound};
use summary::{Delta, DiffFirst};
use table::BqTable;

pub use check::check;
pub use hashes::TableReader;

/// Records appended to the buffer at once, at most: a page of a round's result is appended
/// when it is read, and the records between pages (sweeps, stops) when this many gather.
const APPEND_RECORDS: usize = 5_000;

/// Everything the BigQuery source needs, resolved from the config.
#[derive(Clone)]
pub struct BigQuerySourceSettings {
    auth: Auth,
    project: String,
    location: Option<String>,
    timeout: Duration,
    /// The datasets the include patterns name.
    datasets: Vec<String>,
    filter: TableFilter,
    keys: BTreeMap<String, Vec<String>>,
    interval: Duration,
    rules: TableRules,
    /// Wait before a round while the buffer holds this many unapplied records (0: never).
    max_unapplied: u64,
    /// Tables read whole join the round's transaction up to this many rows together.
    max_atomic_copy_rows: u64,
    /// How far before the last round's timestamp a diff also looks. A commit's timestamp can be
    /// older than the moment it becomes visible (the emulator stamps a commit with the start
    /// of its transaction): a round reading `AS OF T` at T misses a commit stamped just
    /// before T that is still committing, and a later diff from T would miss it too, since
    /// time travel then shows it before T. In the buckets where such a commit came late (see
    /// [`read_diff`]), rows changed in this margin are sent again; the target finds those it
    /// has unchanged (equal hash).
    settle: Duration,
    /// `source.bigquery.storage_endpoint`: whole-table reads through the Storage Read API.
    storage: Option<String>,
    /// Shape and summary queries of a round in flight at once.
    parallel_queries: usize,
}

impl BigQuerySourceSettings {
    /// Resolve the settings from a validated config with `source.kind = "bigquery"`.
    pub fn from_config(config: &Config) -> Result<Self> {
        let s = &config.source;
        let bq = s.bigquery.as_ref().ok_or_else(|| {
            Error::new(ErrorKind::Config, "source.bigquery: missing: source.kind = \"bigquery\" needs it")
        })?;
        let auth = match (&bq.endpoint, &bq.credentials_file) {
            (Some(url), _) => Auth::Emulator(url.clone()),
            (None, Some(f)) => Auth::KeyFile(f.clone()),
            (None, None) => Auth::ApplicationDefault,
        };
        let datasets: BTreeSet<String> =
            s.include.iter().filter_map(|p| p.split_once('.').map(|(d, _)| d.to_string())).collect();
        Ok(BigQuerySourceSettings {
            auth,
            project: bq.project.clone(),
            location: bq.location.clone(),
            timeout: Duration::from_secs(bq.request_timeout_secs),
            datasets: datasets.into_iter().collect(),
            filter: TableFilter::new(&s.include, &s.exclude)?,
            keys: bq.keys.clone(),
            interval: Duration::from_secs(bq.interval_secs),
            rules: config.table_rules()?,
            max_unapplied: config.buffer.embedded.max_unapplied_records,
            max_atomic_copy_rows: bq.max_atomic_copy_rows,
            settle: Duration::from_secs(bq.settle_secs),
            storage: bq.storage_endpoint.clone(),
            parallel_queries: bq.parallel_queries,
        })
    }

    async fn api(&self, stats: &Arc<Stats>) -> Result<Api> {
        Api::connect(Side::Source, &self.auth, &self.project, self.location.as_deref(), self.timeout, Arc::clone(stats))
            .await
    }
}

/// Run rounds until `shutdown` turns true or a definite error occurs; transient errors are
/// retried with backoff from the last checkpoint (the round is read again, at a new time).
/// `binferry resync` requests arrive through `inbox`, between rounds.
pub async fn run<B: Journal>(
    settings: BigQuerySourceSettings,
    buffer: Arc<B>,
    stats: Arc<Stats>,
    shutdown: Shutdown,
    mut inbox: Inbox,
) -> Result<()> {
    let mut backoff = Backoff::default();
    loop {
        let Err(e) = run_rounds(&settings, &buffer, &stats, &shutdown, &mut backoff, &mut inbox).await else {
            return Ok(());
        };
        if !backoff.pause_source(e, "the last complete round", &stats, &shutdown).await? {
            return Ok(());
        }
    }
}

async fn run_rounds<B: Journal>(
    settings: &BigQuerySourceSettings,
    buffer: &Arc<B>,
    stats: &Arc<Stats>,
    shutdown: &Shutdown,
    backoff: &mut Backoff,
    inbox: &mut Inbox,
) -> Result<()> {
    let api = settings.api(stats).await?;
    let mut checkpoint = buffer.checkpoint().await?;
    let mut diff_first = DiffFirst::default();
    show_resyncs(&checkpoint, stats);
    loop {
        // Backpressure: a target that falls behind slows the rounds, not the memory.
        while settings.max_unapplied > 0 && buffer.unapplied() > settings.max_unapplied {
            stats.source_paused.store(true, Ordering::Relaxed);
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                _ = shutdown.triggered() => return Ok(()),
            }
        }
        stats.source_paused.store(false, Ordering::Relaxed);
        let started = Instant::now();
        let round = tokio::select! {
            r = run_round(&api, settings, buffer.as_ref(), &mut checkpoint, &mut diff_first, stats) => r?,
            // A round cut short is read again after a restart: nothing of it is committed.
            _ = shutdown.triggered() => return Ok(()),
        };
        backoff.reset();
        stats.record_source_recovered();
        stats.record_bigquery_round(started.elapsed());
        stats.source_caught_up.store(true, Ordering::Relaxed);
        info!(
            round = round.number,
            changes = round.changes,
            copied = round.copied,
            bytes_scanned = round.bytes,
            secs = format!("{:.1}", started.elapsed().as_secs_f64()),
            diffed_first = round.diffed_first,
            "BigQuery round done"
        );
        show_resyncs(&checkpoint, stats);
        let next = started + settings.interval;
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(next.into()) => break,
                _ = shutdown.triggered() => return Ok(()),
                Some(request) = inbox.rx.recv() => {
                    answer(request, &api, settings, buffer.as_ref(), &mut checkpoint).await?;
                    show_resyncs(&checkpoint, stats);
                }
            }
        }
    }
}

/// Answer a request of the operations endpoint. A resync is recorded in the checkpoint,
/// durably, before it is answered; the next round rebuilds and copies the tables.
async fn answer<B: Journal>(
    request: Request,
    api: &Api,
    settings: &BigQuerySourceSettings,
    buffer: &B,
    checkpoint: &mut SourceCheckpoint,
) -> Result<()> {
    match request {
        Request::Resync { tables, reply } => {
            let found = match discover(api, settings).await {
                Ok(found) => found,
                Err(e) => {
                    let _ = reply.send(Err(Error::new(e.kind(), e.to_string())));
                    return if e.is_transient() { Ok(()) } else { Err(e) };
                }
            };
            let rounds = checkpoint.rounds.get_or_insert_with(RoundCheckpoint::default);
            let mut resynced = Resynced::default();
            for t in found.into_iter().filter(|t| tables.matches(t)) {
                if rounds.resync.insert(t.key()) {
                    resynced.started.push(t);
                } else {
                    resynced.already.push(t);
                }
            }
            if !resynced.started.is_empty() {
                buffer.append(AppendBatch::checkpoint_only(checkpoint.clone())).await?;
                info!(tables = ?resynced.started, "resync requested: the next round copies the tables again");
            }
            let _ = reply.send(Ok(resynced));
        }
        Request::Repair { reply, .. } => {
            let _ = reply.send(Err(Error::new(
                ErrorKind::Config,
                "verify --repair reads a MySQL/MariaDB source; the BigQuery source repairs with `binferry resync`",
            )));
        }
    }
    Ok(())
}

/// Resyncs waiting for the next round, for `/status` (and `binferry resync`, which follows them).
fn show_resyncs(checkpoint: &SourceCheckpoint, stats: &Stats) {
    let waiting = checkpoint.rounds.as_ref().map(|r| r.resync.clone()).unwrap_or_default();
    stats.set_copies(
        waiting.into_iter().map(|table| CopyProgress { table, rows: 0, chunks: 0, resync: true }).collect(),
    );
}

/// What a round did, for its log line.
struct RoundDone {
    number: u32,
    changes: u64,
    copied: u64,
    bytes: u64,
    /// Tables diffed without a summary first ([`DiffFirst`]).
    diffed_first: u32,
}

/// Appends a round's records a batch at a time, with the checkpoint of the last complete
/// round: until the round's end, a restart reads it again.
struct Outbox<'a, B> {
    buffer: &'a B,
    checkpoint: SourceCheckpoint,
    records: Vec<Record>,
    schemas: BTreeMap<u64, Arc<TableSchema>>,
}

impl<B: Journal> Outbox<'_, B> {
    async fn push(
        &mut self,
        records: impl IntoIterator<Item = Record>,
        schema: Option<&Arc<TableSchema>>,
    ) -> Result<()> {
        self.records.extend(records);
        if let Some(s) = schema {
            self.schemas.entry(s.version()).or_insert_with(|| Arc::clone(s));
        }
        if self.records.len() >= APPEND_RECORDS {
            self.flush().await?;
        }
        Ok(())
    }

    /// A page of the round is done: append it (a round's records are never all in memory).
    async fn page_done(&mut self) -> Result<()> {
        self.flush().await?;
        // The crash a test needs: part of a round durable, its end not.
        crate::failpoint::hit("bigquery-source-mid-round");
        Ok(())
    }

    async fn flush(&mut self) -> Result<()> {
        let batch = AppendBatch {
            records: std::mem::take(&mut self.records),
            schemas: std::mem::take(&mut self.schemas).into_values().collect(),
            checkpoint: self.checkpoint.clone(),
        };
        self.buffer.append(batch).await.map(|_| ())
    }
}

/// A table as this round reads it.
#[derive(Clone)]
struct Shaped {
    bq: BqTable,
    schema: Arc<TableSchema>,
}

async fn shape(api: &Api, settings: &BigQuerySourceSettings, table: &TableRef) -> Result<Shaped> {
    let resource = api.table_resource(&table.db, &table.name).await?;
    let mut bq = BqTable::from_resource(&resource, settings.keys.get(&table.key()).map(Vec::as_slice))?;
    bq.exclude(&settings.rules.options(table).exclude_columns)?;
    let schema = Arc::new(bq.schema()?);
    Ok(Shaped { bq, schema })
}

/// The selected tables of the configured datasets, in name order.
async fn discover(api: &Api, settings: &BigQuerySourceSettings) -> Result<Vec<TableRef>> {
    let mut tables = Vec::new();
    for dataset in &settings.datasets {
        for name in api.list_tables(dataset).await? {
            let t = TableRef::new(dataset.clone(), name);
            if settings.filter.matches(&t) {
                tables.push(t);
            }
        }
    }
    tables.sort();
    Ok(tables)
}

/// Microseconds since the epoch on BigQuery's clock.
async fn bigquery_now(api: &Api) -> Result<i64> {
    let rows = api.query(sql::NOW).await?;
    let cell = rows.first().and_then(|r| r.columns.as_ref()).and_then(|c| c.first()).and_then(|c| c.value.as_ref());
    cell.and_then(|v| v.as_str()).and_then(|s| s.parse().ok()).ok_or_else(|| {
        Error::new(ErrorKind::SourceUnavailable, format!("BigQuery answered {cell:?} to `{}`", sql::NOW))
    })
}

/// How a round reads tables' rows: through the API, or for whole tables the Storage Read API
/// when configured, at the round's timestamp.
#[derive(Clone, Copy)]
struct Reads<'a> {
    api: &'a Api,
    storage: Option<&'a str>,
    now: i64,
}

/// A table this round reads rows of.
struct Planned {
    shaped: Shaped,
    read: Read,
    digits: u32,
    /// Rows at the round's timestamp.
    rows: u64,
    /// The moments a diff of the table looks back to.
    since: Since,
    /// The summary the previous round kept (none on a table's first round).
    kept: Option<TableSummary>,
    /// Diffed first, without a summary at the round's timestamp: the round derives it from
    /// the diff ([`DiffFirst`]).
    derive: bool,
}

/// A table's summary at the round's timestamp, or how the round gets it.
enum Summarized {
    /// BigQuery computed it.
    Read(TableSummary),
    /// The table is diffed first: the diff brings the previous round's up to date.
    Derive(TableSummary),
}

/// Where a table's rows go in the round's records (see `records`).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Placement {
    /// Copied rows, apart from the round's transaction, a snapshot commit per page.
    Apart,
    /// Changes of the round's transaction.
    Round,
}

/// The summary the last round kept of table `key`, which the round diffs against: none for a
/// table resynced, or created (dropped and created again) since, which have no past to diff
/// with and are read whole.
fn past<'a>(prev: &'a RoundCheckpoint, key: &str, created: Option<i64>) -> Option<&'a TableSummary> {
    let recreated = created.is_some_and(|c| c > prev.at);
    if prev.resync.contains(key) || recreated { None } else { prev.tables.get(key) }
}

/// One round: every selected table at one timestamp, into the buffer (see `records`).
async fn run_round<B: Journal>(
    api: &Api,
    settings: &BigQuerySourceSettings,
    buffer: &B,
    checkpoint: &mut SourceCheckpoint,
    diff_first: &mut DiffFirst,
    stats: &Arc<Stats>,
) -> Result<RoundDone> {
    let prev = checkpoint.rounds.clone().unwrap_or_default();
    let number = prev
        .round
        .checked_add(1)
        .ok_or_else(|| Error::internal("the BigQuery source ran out of round numbers (2^32)"))?;
    // Shapes first, then the round's timestamp: a column added after its table's shape was
    // read is simply not read this round (the next one sees the new shape and reads the table
    // whole); read the other way round, the columns would be newer than the timestamp.
    let tables = discover(api, settings).await?;
    // A stopped table is left alone until a resync asks for it.
    let wanted = |t: &TableRef| prev.resync.contains(&t.key()) || !prev.stopped.contains_key(&t.key());
    // The futures are listed first: a stream over a lazy iterator with closures cannot be held
    // across an await in a spawned task (rustc's "FnOnce is not general enough").
    let shaping: Vec<_> =
        tables.iter().filter(|t| wanted(t)).map(|t| async move { (t.key(), shape(api, settings, t).await) }).collect();
    let mut shapes: BTreeMap<String, Result<Shaped>> =
        stream::iter(shaping).buffered(settings.parallel_queries).collect().await;
    let now = bigquery_now(api).await?;
    if now <= prev.at {
        return Err(Error::new(
            ErrorKind::SourceUnavailable,
            format!("BigQuery's clock reads {now} µs, not after the last round's {} µs", prev.at),
        ));
    }
    let reads = Reads { api, storage: settings.storage.as_deref(), now };
    let mut records = RoundRecords::new(number, now);
    let mut out = Outbox { buffer, checkpoint: checkpoint.clone(), records: Vec::new(), schemas: BTreeMap::new() };
    // Resyncs asked for are done by this round: a rebuild (which also starts a stopped table
    // again), then a copy of the whole table.
    let mut next = RoundCheckpoint {
        round: number,
        at: now,
        tables: BTreeMap::new(),
        stopped: prev.stopped.clone(),
        resync: Default::default(),
    };
    let mut done = RoundDone { number, changes: 0, copied: 0, bytes: 0, diffed_first: 0 };

    // Each table's summary, all at once (a few queries in flight): on real BigQuery each takes
    // a second or more, so one after the other they would add up with the tables.
    let summaries: Vec<Option<Result<(Shaped, Summarized)>>> = {
        let (prev, diff_first) = (&prev, &*diff_first);
        let summarizing: Vec<_> = tables
            .iter()
            .map(|table| {
                let key = table.key();
                let shaped = wanted(table).then(|| {
                    shapes.remove(&key).unwrap_or_else(|| Err(Error::internal(format!("{table} was not shaped"))))
                });
                async move {
                    let shaped = match shaped? {
                        Ok(s) => s,
                        Err(e) => return Some(Err(e)),
                    };
                    let version = shaped.schema.version();
                    let before = past(prev, &key, shaped.bq.created);
                    if let Some(b) = before.filter(|b| b.schema_version == version && diff_first.wants(&key)) {
                        return Some(Ok((shaped, Summarized::Derive(b.clone()))));
                    }
                    let round = TableRound::new(api, &shaped.bq, version, now);
                    Some(round.summary(before).await.map_err(changed_meanwhile).map(|s| (shaped, Summarized::Read(s))))
                }
            })
            .collect();
        stream::iter(summarizing).buffered(settings.parallel_queries).collect().await
    };

    // What to read of each table.
    let mut planned = Vec::new();
    for (table, summarized) in tables.iter().zip(summaries) {
        let key = table.key();
        let Some(summarized) = summarized else { continue };
        if prev.resync.contains(&key) {
            next.stopped.remove(&key);
            out.push(records.table_change(table, TableChange::Rebuild), None).await?;
        }
        let (shaped, summarized) = match summarized {
            Ok(r) => r,
            Err(e) => match round::dropped_meanwhile(api, table, e).await {
                e if e.kind().scope() == Scope::Table => {
                    stop(&mut records, &mut out, &mut next, table, &e).await?;
                    continue;
                }
                e => return Err(e),
            },
        };
        // The diff looks back to `settle` before the last round too: a commit whose timestamp
        // is before a round's but which became visible only after that round read the table
        // is in no summary yet, and its timestamp is older than the last round (see `settle`).
        // It still joins the last round's rows: those are what the target was given (see
        // `TableSql::changes`). Time travel cannot reach before the table's creation (a
        // second after it, for clocks that disagree by a little).
        let (created, before) = (shaped.bq.created, past(&prev, &key, shaped.bq.created));
        let settled = prev.at.saturating_sub(settings.settle.as_micros().min(i64::MAX as u128) as i64);
        let since = settled.max(created.map_or(i64::MIN, |c| c.saturating_add(1_000_000).min(prev.at)));
        let since = Since { prev: prev.at, since };
        let (read, summary, derive) = match summarized {
            Summarized::Read(summary) => (TableRound::plan(before.map(|s| (since, s)), &summary), summary, false),
            // Kept as it was until the diff brings it up to date.
            Summarized::Derive(before) => (TableRound::diff_first(prev.at), before, true),
        };
        let (digits, rows) = (summary.digits, summary::rows(&summary));
        next.tables.insert(key.clone(), summary);
        if read == Read::Nothing {
            diff_first.record(&key, false);
        } else {
            planned.push(Planned { shaped, read, digits, rows, since, kept: before.cloned(), derive });
        }
    }
    // Tables read whole go into the round's transaction while they are small enough for one
    // target transaction; larger copies are written apart, the target marked not consistent
    // until the round's commit.
    let copy_rows: u64 = planned.iter().filter(|p| p.read == Read::Everything).map(|p| p.rows).sum();
    let atomic = copy_rows <= settings.max_atomic_copy_rows;
    let mut sweeps = Vec::new();
    let mut late_stops = Vec::new();
    let mut into_round = Vec::new();
    for p in planned {
        if p.read == Read::Everything && !atomic {
            let table = p.shaped.bq.table_ref();
            diff_first.record(&table.key(), false);
            match read_rows(reads, &p, &p.read, Placement::Apart, &mut records, &mut out, stats).await {
                Ok((rows, bytes)) => {
                    done.copied += rows;
                    done.bytes += bytes;
                    sweep(&mut records, &mut out, &table, &p.shaped.schema, prev.resync.contains(&table.key())).await?;
                }
                Err(e) => match round::dropped_meanwhile(api, &table, e).await {
                    e if e.kind().scope() == Scope::Table => {
                        next.tables.remove(&table.key());
                        stop(&mut records, &mut out, &mut next, &table, &e).await?;
                    }
                    e => return Err(e),
                },
            }
        } else {
            into_round.push(p);
        }
    }
    // The round's transaction. A table whose rows cannot be read stops after it: the rows
    // read before are its true state at this round, and it gets no more.
    for p in &into_round {
        let table = p.shaped.bq.table_ref();
        let key = table.key();
        done.diffed_first += u32::from(p.derive);
        let mut read = match (&p.read, &p.kept) {
            (Read::Changes { .. }, Some(kept)) => {
                read_diff(reads, p, kept, &mut records, &mut out, stats).await.map(|(rows, bytes, derived)| {
                    match derived {
                        Some(s) => {
                            let fits = sql::bucket_digits(summary::rows(&s)) == s.digits;
                            diff_first.record(&key, fits && rows > 0);
                            next.tables.insert(key.clone(), s);
                        }
                        None => diff_first.record(&key, rows > 0),
                    }
                    (rows, bytes)
                })
            }
            _ => read_rows(reads, p, &p.read, Placement::Round, &mut records, &mut out, stats).await.inspect(|_| {
                diff_first.record(&key, false);
            }),
        };
        // The previous round is older than BigQuery's time travel keeps (binferry was stopped
        // for days): the table's past is out of reach, so it is read whole and swept. A failed
        // query appended nothing of it.
        let mut whole = p.read == Read::Everything;
        if let Err(e) = &read
            && !whole
            && round::beyond_time_travel(e)
        {
            warn!(%table, error = %e, "the last round is beyond BigQuery's time travel: reading the table whole");
            diff_first.record(&key, false);
            read = read_rows(reads, p, &Read::Everything, Placement::Round, &mut records, &mut out, stats).await;
            whole = true;
            // Diffed first, the table has no summary at this round yet: BigQuery computes it.
            if read.is_ok() && p.derive {
                let round = TableRound::new(api, &p.shaped.bq, p.shaped.schema.version(), now);
                match round.summary(p.kept.as_ref()).await.map_err(changed_meanwhile) {
                    Ok(summary) => _ = next.tables.insert(key.clone(), summary),
                    Err(e) => read = Err(e),
                }
            }
        }
        match read {
            Ok((rows, bytes)) => {
                if whole {
                    done.copied += rows;
                    sweeps.push((table, Arc::clone(&p.shaped.schema)));
                } else {
                    done.changes += rows;
                }
                done.bytes += bytes;
            }
            Err(e) => match round::dropped_meanwhile(api, &table, e).await {
                e if e.kind().scope() == Scope::Table => {
                    next.tables.remove(&table.key());
                    late_stops.push((table, e));
                }
                e => return Err(e),
            },
        }
    }
    let committed = records.round_commit()?;
    if committed.is_some() {
        stats.source_txns.fetch_add(1, Ordering::Relaxed);
        stats.source_changed(u64::from(records.timestamp()));
    }
    out.push(committed, None).await?;
    // After it: the sweeps of the tables it copied (rows the target has and BigQuery no
    // longer has; none on a first copy), tables gone from BigQuery, and tables stopped.
    for (table, schema) in &sweeps {
        sweep(&mut records, &mut out, table, schema, prev.resync.contains(&table.key())).await?;
    }
    for gone in prev.tables.keys().filter(|k| !next.tables.contains_key(*k) && !next.stopped.contains_key(*k)) {
        if let Some((db, name)) = gone.split_once('.') {
            let table = TableRef::new(db, name);
            if !tables.contains(&table) {
                info!(%table, "table gone from BigQuery: dropped in the target as sink.mysql.on_source_drop says");
                out.push(records.table_change(&table, TableChange::Drop), None).await?;
            }
        }
    }
    for (table, e) in late_stops {
        stop(&mut records, &mut out, &mut next, &table, &e).await?;
    }
    checkpoint.rounds = Some(next);
    out.checkpoint = checkpoint.clone();
    out.flush().await?;
    stats.record_source_events(done.changes + done.copied);
    stats.source_event_ts.store(u64::from(records.timestamp()), Ordering::Relaxed);
    stats.set_source_position(&Position::of_round(now, 0));
    Ok(done)
}

/// A column the shape names is missing at the round's timestamp: the table was changed
/// (a column dropped or renamed) between the shape's read and the timestamp. The round is
/// read again (BigQuery says "Unrecognized name: c").
fn changed_meanwhile(e: Error) -> Error {
    if e.kind() == ErrorKind::SourceSetting && e.detail().contains("Unrecognized name") {
        return Error::new(ErrorKind::SourceUnavailable, format!("a table changed during the round: {}", e.detail()));
    }
    e
}

/// Read what `read` names of one table into the round's records, a page at a time. Returns
/// rows and bytes scanned.
async fn read_rows<B: Journal>(
    reads: Reads<'_>,
    p: &Planned,
    read: &Read,
    into: Placement,
    records: &mut RoundRecords,
    out: &mut Outbox<'_, B>,
    stats: &Arc<Stats>,
) -> Result<(u64, u64)> {
    let round = TableRound::new(reads.api, &p.shaped.bq, p.shaped.schema.version(), reads.now)
        .with_storage(reads.storage, Moment::Exact);
    let pages = round.read(read, p.digits).await.map_err(changed_meanwhile)?;
    append_rows(p, *read == Read::Everything, pages, into, records, out, None, stats).await
}

/// Diff a table with the previous round: the diff itself (of the changed buckets, or of all
/// for a table diffed first) and, in parallel, the table's summary at the previous round as
/// BigQuery shows it now; then whatever that summary says came late, with the settle margin
/// ([`TableRound::late`]). So rows changed in the margin are sent again only in buckets where
/// a commit came late, not every round. A table diffed first ([`DiffFirst`]) gets its summary
/// at this round from the diff's hashes, on the base of the one at the previous round.
/// Returns rows, bytes scanned and that summary.
async fn read_diff<B: Journal>(
    reads: Reads<'_>,
    p: &Planned,
    kept: &TableSummary,
    records: &mut RoundRecords,
    out: &mut Outbox<'_, B>,
    stats: &Arc<Stats>,
) -> Result<(u64, u64, Option<TableSummary>)> {
    let (bq, version) = (&p.shaped.bq, p.shaped.schema.version());
    let (round, then) =
        (TableRound::new(reads.api, bq, version, reads.now), TableRound::new(reads.api, bq, version, p.since.prev));
    let diff = match &p.read {
        Read::Changes { prev, buckets, .. } => Read::Changes { prev: *prev, since: *prev, buckets: buckets.clone() },
        other => other.clone(),
    };
    let (at_prev, pages) = tokio::join!(then.summary_with(kept.digits), round.read(&diff, p.digits));
    let (at_prev, pages) = (at_prev.map_err(changed_meanwhile)?, pages.map_err(changed_meanwhile)?);
    let mut delta = p.derive.then(|| Delta::new(at_prev.clone()));
    let (mut rows, mut bytes) =
        append_rows(p, false, pages, Placement::Round, records, out, delta.as_mut(), stats).await?;
    let late = TableRound::late(p.since, kept, &at_prev);
    if late != Read::Nothing {
        debug!(table = %bq.table_ref(), ?late, "commits came late since the last round: diffing them with the settle margin");
        let (more, more_bytes) = read_rows(reads, p, &late, Placement::Round, records, out, stats).await?;
        rows += more;
        bytes += more_bytes;
    }
    Ok((rows, bytes, delta.map(Delta::finish)))
}

/// Append a table's rows from `pages` to the round's records, a page at a time, bringing
/// `delta` up to date with their hashes. Returns rows and bytes scanned.
#[allow(clippy::too_many_arguments)]
async fn append_rows<B: Journal>(
    p: &Planned,
    whole: bool,
    pages: Option<round::Changes<'_>>,
    into: Placement,
    records: &mut RoundRecords,
    out: &mut Outbox<'_, B>,
    mut delta: Option<&mut Delta>,
    stats: &Arc<Stats>,
) -> Result<(u64, u64)> {
    let Some(mut pages) = pages else { return Ok((0, 0)) };
    let version = p.shaped.schema.version();
    let table = p.shaped.bq.table_ref();
    let bytes = pages.bytes_processed().unwrap_or(0);
    let mut n = 0u64;
    while let Some(page) = pages.next_page().await? {
        let mut batch = Vec::with_capacity(page.len() + 1);
        for row in page {
            if let (Some(delta), Some(hashes)) = (delta.as_deref_mut(), &row.hashes) {
                delta.apply(hashes).map_err(|e| e.with_table(table.clone()))?;
            }
            batch.push(match into {
                Placement::Apart => records.copied(&table, version, row.values)?,
                Placement::Round => records.change(&table, version, row.deleted, row.values)?,
            });
        }
        n += batch.len() as u64;
        if whole {
            stats.record_snapshot_rows(batch.len() as u64);
        }
        if into == Placement::Apart {
            batch.push(records.copy_commit());
        }
        out.push(batch, Some(&p.shaped.schema)).await?;
        out.page_done().await?;
    }
    if whole {
        info!(%table, rows = n, "BigQuery table copied");
    }
    Ok((n, bytes))
}

/// The sweep after a table's copy (rows the target has and BigQuery no longer has), after a
/// resync's copy preceded by the end of its rebuild: a target that rebuilt the table aside
/// puts it in place, and Kafka key partitions meet there (a DDL barrier), so that none sweeps
/// before every one has applied its share of the copy. The sweep brings the table's shape
/// (`schema`), so that an empty table gets its target table too.
async fn sweep<B: Journal>(
    records: &mut RoundRecords,
    out: &mut Outbox<'_, B>,
    table: &TableRef,
    schema: &Arc<TableSchema>,
    resynced: bool,
) -> Result<()> {
    if resynced {
        out.push(records.table_change(table, TableChange::RebuildDone), None).await?;
    }
    out.push(records.sweep(table, schema.version()), Some(schema)).await
}

/// Stop a table the source cannot read, once: the writer records it in the target with the
/// fix, and the other tables go on.
async fn stop<B: Journal>(
    records: &mut RoundRecords,
    out: &mut Outbox<'_, B>,
    next: &mut RoundCheckpoint,
    table: &TableRef,
    e: &Error,
) -> Result<()> {
    let reason = e.to_string();
    warn!(%table, error = %reason, "BigQuery table stopped; the other tables keep syncing");
    next.stopped.insert(table.key(), reason.clone());
    out.push(records.table_change(table, TableChange::Stop { reason }), None).await
}
