//! Streaming the binlog into the buffer.
//!
//! One replication connection (`COM_BINLOG_DUMP` from the checkpoint's file
//! and offset). Events are turned into [`Record`]s and appended in batches:
//! after at most [`FLUSH_MAX_RECORDS`] records, or [`FLUSH_MAX_DELAY`] after
//! the first unflushed record, whichever comes first, so latency stays in
//! milliseconds while each fsync covers many events. Memory is bounded by the
//! same limit: a large source transaction is appended in pieces, with the
//! checkpoint held at the last complete transaction.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::shutdown::Shutdown;
use futures_util::StreamExt;
use mysql_async::BinlogStreamRequest;
use mysql_async::binlog::events::{EventData, RowsEventData, TableMapEvent};
use mysql_async::binlog::value::BinlogValue;
use mysql_async::prelude::Queryable;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;
use tracing::{debug, error, info, warn};

use super::catalog::{apply_facts, column_facts};
use super::chunks::{Chunk, CopyJob, Offer, Verdict, judge};
use super::control::{Inbox, Repaired, Request, Resynced};
use super::ddl::{Ddl, classify};
use super::resync::{self, Candidate};
use super::table_map::{Collations, schema_from_table_map};
use super::{ServerInfo, SourceSettings, now_secs};
use crate::buffer::{AppendBatch, Journal};
use crate::error::{Error, ErrorKind, Result};
use crate::event::hash::encode_values;
use crate::event::{ChangeEvent, Commit, Op, Record, SchemaChange, TableChange, Value};
use crate::mysql_codec::charset::Charsets;
use crate::mysql_codec::{Origin, convert};
use crate::position::{ChunkedCopy, Gtid, MARIADB_GTID_FL_STANDALONE, Position, SourceCheckpoint};
use crate::retry::Backoff;
use crate::schema::{TableRef, TableSchema};
use crate::table_options::DeleteMode;
use crate::telemetry::{CopyProgress, Stats};

/// Append after this many pending records.
const FLUSH_MAX_RECORDS: usize = 4096;
/// Append at the latest this long after the first pending record.
const FLUSH_MAX_DELAY: Duration = Duration::from_millis(10);
/// Persist a checkpoint that moved without records (unselected tables) this often.
const IDLE_CHECKPOINT_INTERVAL: Duration = Duration::from_secs(1);
/// Ask the server for a heartbeat when the binlog is idle (nanoseconds).
const HEARTBEAT_PERIOD_NS: u64 = 1_000_000_000;
/// MariaDB's GTID event type.
const MARIADB_GTID_EVENT: u8 = 0xa2;
/// Resync requests whose tables are being read from the catalog at once; more wait in the
/// inbox.
const RESYNC_CHECKS: usize = 4;

/// A resync request's tables read from the catalog, and who waits for the answer.
type ResyncCheck = (Result<Vec<Candidate>>, oneshot::Sender<Result<Resynced>>);

struct CachedTable {
    /// Raw TABLE_MAP body: an identical body means an identical schema.
    raw: Vec<u8>,
    /// `None` when the table is not selected.
    schema: Option<Arc<TableSchema>>,
    /// `schema`'s version, computed once rather than per ROWS event.
    version: u64,
    /// Changes at or before this position are part of the table's snapshot.
    skip_until: Option<Position>,
    /// Source column indexes kept after `exclude_columns` (`None`: all).
    keep: Option<Vec<usize>>,
}

/// The stream's side of the chunked copies ([`super::chunks`]): where jobs go, where chunks
/// come from, and what the stream knows that decides whether it takes one.
pub(super) struct CopyLink<'a> {
    /// Resync requests.
    inbox: &'a mut Inbox,
    /// Whether anyone can still send requests (an endpoint holds the [`super::Control`]).
    inbox_open: bool,
    /// Resync requests whose tables are being read from the catalog ([`resync::candidates`]),
    /// at most [`RESYNC_CHECKS`]; dropped, and their callers told to try again, when the
    /// stream ends.
    checks: JoinSet<ResyncCheck>,
    jobs: mpsc::Sender<CopyJob>,
    /// Copies and repairs the full job queue could not take yet, sent in order as it frees: a
    /// resync of more tables than the queue holds. Bounded by the tables being copied or
    /// repaired, one job each (a job left here under a table's old name after a rename fails
    /// harmlessly: that copy is gone).
    waiting: VecDeque<CopyJob>,
    offers: mpsc::Receiver<Offer>,
    /// The chunk offered and not yet taken (the copier waits for the verdict).
    held: Option<(Chunk, oneshot::Sender<Verdict>)>,
    /// Since when the held chunk waits, and when that was last logged ([`HELD_CHUNK_REPORT`]).
    held_since: Option<(Instant, Instant)>,
    /// Per table being copied, the position of the newest statement that named it.
    last_ddl: HashMap<String, Position>,
    /// Schema versions already handed to the buffer with a chunk.
    schemas_sent: HashSet<u64>,
    /// Repairs under way, by table: who waits for the answer.
    repairs: HashMap<String, oneshot::Sender<Result<Repaired>>>,
    /// The copier still runs (its channel is open).
    open: bool,
    /// Progress log: the last time a line was written.
    logged_at: Instant,
}

impl<'a> CopyLink<'a> {
    /// Hand `job` to the copier, or keep it until the queue has room.
    fn send(&mut self, job: CopyJob) {
        match self.jobs.try_send(job) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(job)) => {
                debug!(table = %job.table, waiting = self.waiting.len() + 1, "copy queue full: the copy waits its turn");
                self.waiting.push_back(job);
            }
            // The copier ended; the source restarts and resumes every copy from the checkpoint.
            Err(mpsc::error::TrySendError::Closed(_)) => {}
        }
    }

    /// The copy queue has room (`permit`): the first waiting job takes it.
    fn release_waiting(&mut self, permit: Result<mpsc::Permit<'_, CopyJob>, mpsc::error::SendError<()>>) {
        match permit {
            Ok(permit) => {
                if let Some(job) = self.waiting.pop_front() {
                    permit.send(job);
                }
            }
            // The copier ended: the restart resumes these copies from the checkpoint.
            Err(_) => self.waiting.clear(),
        }
    }

    pub(super) fn new(jobs: mpsc::Sender<CopyJob>, offers: mpsc::Receiver<Offer>, inbox: &'a mut Inbox) -> Self {
        CopyLink {
            inbox,
            inbox_open: true,
            checks: JoinSet::new(),
            jobs,
            waiting: VecDeque::new(),
            offers,
            held: None,
            held_since: None,
            last_ddl: HashMap::new(),
            schemas_sent: HashSet::new(),
            repairs: HashMap::new(),
            open: true,
            logged_at: Instant::now(),
        }
    }
}

/// Take a chunk only while the writer has at most this many records to apply per chunk row
/// of the configured size: the writer applies the buffer in order, so a flood of chunk rows
/// would delay the binlog changes of every other table behind it.
const CHUNK_BACKLOG_CHUNKS: u64 = 2;
/// How often a held chunk is looked at again while the binlog is quiet.
const CHUNK_RECHECK: Duration = Duration::from_millis(20);
/// Row numbers of the rows a resync or a repair writes start here. Positions count from the
/// binlog: on a source whose binlog has not moved since an earlier copy of the table, both
/// copies read at the same position, and the later one must still sort after the earlier
/// (whose rows are numbered from 1) for the position guard and the closing sweep to prefer it.
const RECOPY_ROW_BASE: u32 = 1 << 31;
/// How often a chunked copy in progress is logged.
const COPY_PROGRESS_INTERVAL: Duration = Duration::from_secs(10);
/// A chunk the stream has held this long is logged, with what it waits for, and again each
/// time as long: a copy that makes no progress says why.
const HELD_CHUNK_REPORT: Duration = Duration::from_secs(20);

struct Streamer<'a> {
    collations: Collations,
    settings: &'a SourceSettings,
    stats: &'a Stats,
    checkpoint: SourceCheckpoint,
    checkpoint_dirty: bool,
    tables: HashMap<u64, CachedTable>,
    new_schemas: Vec<Arc<TableSchema>>,
    /// Tables whose new schema still needs what `information_schema` says of its columns and
    /// its character sets' tables (async, before its rows).
    pending_resolve: Vec<u64>,
    /// How the source converts the character sets seen so far.
    charsets: Charsets,
    /// Tables this run cannot replicate, with the reason, to record at the next commit.
    stops: Vec<(TableRef, String)>,
    /// Tables stopped in this run: their TABLE_MAPs are not decoded again.
    stopped: HashSet<TableRef>,
    /// Connection for those lookups, opened on first need and kept.
    meta: Option<mysql_async::Conn>,
    mariadb: bool,
    pending: Vec<Record>,
    first_pending_at: Option<Instant>,
    current_file: String,
    in_txn: bool,
    txn_gtid: Option<Gtid>,
    /// Changes of the current transaction so far (the next change's index).
    txn_index: u32,
    txn_has_changes: bool,
    events_seen: u64,
    /// Bytes of binlog events read since the last flush.
    bytes_read: u64,
    /// The server checksums events and no FORMAT_DESCRIPTION arrived yet: the artificial
    /// ROTATE that opens the stream still carries its 4 CRC bytes after the file name.
    rotate_has_crc: bool,
    /// The newest table copy of an interrupted snapshot, while the stream is before it: until
    /// the stream reaches it, the target is not consistent ([`Commit::consistent`]).
    consistent_from: Option<Position>,
    /// The end of the last event read: where the stream is.
    at: Option<Position>,
    /// Resynced tables whose `rebuild` record waits for the end of the transaction in progress.
    rebuilds: Vec<TableRef>,
    copy: CopyLink<'a>,
}

/// Long because it is the event loop: one `select!` arm per event source (shutdown, flush
/// deadline, binlog, idle tick) with backpressure between transactions.
#[allow(clippy::too_many_arguments)]
pub(super) async fn stream<B: Journal>(
    settings: &SourceSettings,
    server: &ServerInfo,
    collations: Collations,
    buffer: &B,
    checkpoint: SourceCheckpoint,
    stats: &Stats,
    shutdown: &Shutdown,
    backoff: &mut Backoff,
    copy: CopyLink<'_>,
) -> Result<()> {
    let resume = checkpoint.resume.clone().ok_or_else(|| Error::internal("stream without resume position"))?;
    let (mut binlog, checksums) = open_binlog(settings, server, &resume).await?;
    info!(position = %resume, server_id = settings.server_id, "streaming binlog");
    stats.record_source_recovered();

    let mut st = Streamer {
        collations,
        settings,
        stats,
        current_file: resume.file.clone(),
        checkpoint,
        checkpoint_dirty: false,
        tables: HashMap::new(),
        new_schemas: Vec::new(),
        pending_resolve: Vec::new(),
        charsets: Charsets::default(),
        stops: Vec::new(),
        stopped: HashSet::new(),
        meta: None,
        mariadb: server.mariadb,
        pending: Vec::new(),
        first_pending_at: None,
        in_txn: false,
        txn_gtid: None,
        txn_index: 0,
        txn_has_changes: false,
        events_seen: 0,
        bytes_read: 0,
        rotate_has_crc: checksums,
        consistent_from: None,
        at: None,
        rebuilds: Vec::new(),
        copy,
    };
    // A resync that had not read its first chunk may not have its `rebuild` in the buffer.
    st.rebuilds = st
        .checkpoint
        .snapshot
        .chunked
        .values()
        .filter(|c| c.resync && c.start.is_none())
        .map(|c| c.table.clone())
        .collect();
    st.record_copy_progress();
    for c in st.checkpoint.snapshot.chunked.values().filter(|c| c.chunks > 0) {
        info!(table = %c.table, chunks = c.chunks, rows = c.rows, "chunked copy resumes after its last chunk");
    }
    st.consistent_from = st.checkpoint.snapshot.newest_copy_after(&resume);
    if let Some(p) = &st.consistent_from {
        info!(
            from = %resume,
            consistent_from = %p,
            "an interrupted snapshot copied tables at different positions: the target becomes consistent \
             once the stream reaches the newest copy"
        );
    }
    let mut idle_tick = tokio::time::interval(IDLE_CHECKPOINT_INTERVAL);
    idle_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut chunk_tick = tokio::time::interval(CHUNK_RECHECK);
    chunk_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // A handle of its own, so that waiting for room in the copy queue borrows nothing of `st`.
    let jobs = st.copy.jobs.clone();
    loop {
        let deadline = st.first_pending_at.map(|t| tokio::time::Instant::from_std(t + FLUSH_MAX_DELAY));
        tokio::select! {
            biased;
            _ = shutdown.triggered() => {
                st.flush(buffer).await?;
                // Closing tells the server to end its dump thread now rather than at its next write.
                let _ = tokio::time::timeout(Duration::from_secs(2), binlog.close()).await;
                info!(position = ?st.checkpoint.resume.as_ref().map(|p| p.to_string()), "source stopped");
                return Ok(());
            }
            _ = tokio::time::sleep_until(deadline.unwrap_or_else(tokio::time::Instant::now)), if deadline.is_some() => {
                st.flush(buffer).await?;
                backoff.reset();
            }
            event = binlog.next() => {
                let event = match event {
                    Some(Ok(ev)) => ev,
                    Some(Err(e)) => return Err(purged_hint(Error::source_mysql(e, "reading the binlog"), &resume)),
                    None => return Err(Error::new(ErrorKind::SourceUnavailable, "the source closed the binlog stream")),
                };
                st.handle(&event, |id| binlog.get_tme(id))?;
                st.resolve(settings).await?;
                st.take_held_chunk(buffer).await?;
                if st.pending.len() >= FLUSH_MAX_RECORDS {
                    st.flush(buffer).await?;
                    backoff.reset();
                }
                // Backpressure: between transactions, wait while the target is far behind.
                // (Never inside one: the writer commits only at its end, so waiting there
                // could wait forever.)
                let waiting = buffer.unapplied() + st.pending.len() as u64;
                if !st.in_txn && settings.max_unapplied > 0 && waiting >= settings.max_unapplied {
                    st.flush(buffer).await?;
                    st.stats.source_paused.store(true, Ordering::Relaxed);
                    while buffer.unapplied() >= settings.max_unapplied && !shutdown.is_triggered() {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    st.stats.source_paused.store(false, Ordering::Relaxed);
                }
            }
            offer = st.copy.offers.recv(), if st.copy.open && st.copy.held.is_none() => {
                match offer {
                    Some(Offer::Chunk(chunk, reply)) => {
                        st.copy.held = Some((chunk, reply));
                        st.take_held_chunk(buffer).await?;
                    }
                    Some(Offer::Failed { table, reason, repair: false }) => st.copy_failed(table, reason),
                    Some(Offer::Failed { table, reason, repair: true }) => {
                        if let Some(reply) = st.copy.repairs.remove(&table.key()) {
                            let _ = reply.send(Err(Error::new(ErrorKind::SourceSetting, reason)));
                        }
                    }
                    // The copier ended (shutdown, or an error the source restart handles).
                    None => st.copy.open = false,
                }
            }
            _ = chunk_tick.tick(), if st.copy.held.is_some() => st.take_held_chunk(buffer).await?,
            permit = jobs.reserve(), if !st.copy.waiting.is_empty() => st.copy.release_waiting(permit),
            request = st.copy.inbox.rx.recv(), if st.copy.inbox_open && st.copy.checks.len() < RESYNC_CHECKS => match request {
                Some(Request::Resync { tables, reply }) => {
                    let (settings, mariadb) = (settings.clone(), st.mariadb);
                    st.copy.checks.spawn(async move { (resync::candidates(&settings, mariadb, &tables).await, reply) });
                }
                Some(Request::Repair { table, keys, reply }) => st.start_repair(table, keys, reply),
                None => st.copy.inbox_open = false,
            },
            Some(checked) = st.copy.checks.join_next(), if !st.copy.checks.is_empty() => match checked {
                Ok((candidates, reply)) => {
                    let answer = match candidates {
                        Ok(candidates) => st.start_resync(candidates, buffer).await?,
                        Err(e) => Err(e),
                    };
                    let _ = reply.send(answer);
                }
                // Its caller hears that the source did not answer, and can ask again.
                Err(e) => error!(error = %e, "reading a resync request's tables failed"),
            },
            _ = idle_tick.tick() => {
                if st.checkpoint_dirty && st.pending.is_empty() {
                    st.flush(buffer).await?;
                }
            }
        }
    }
}

/// Ask the source for its binlog from `resume`; also says whether events carry checksums.
async fn open_binlog(
    settings: &SourceSettings,
    server: &ServerInfo,
    resume: &Position,
) -> Result<(mysql_async::BinlogStream, bool)> {
    let mut conn = settings.connect().await?;
    if server.mariadb {
        // Capability 4 (MARIA_SLAVE_CAPABILITY_GTID): send GTID events as such, not as fake BEGINs.
        conn.query_drop("SET @mariadb_slave_capability = 4")
            .await
            .map_err(|e| Error::source_mysql(e, "preparing the binlog connection"))?;
    }
    conn.query_drop(format!("SET @master_heartbeat_period = {HEARTBEAT_PERIOD_NS}"))
        .await
        .map_err(|e| Error::source_mysql(e, "preparing the binlog connection"))?;
    let checksum: Option<(String, String)> = conn
        .query_first("SHOW GLOBAL VARIABLES LIKE 'binlog_checksum'")
        .await
        .map_err(|e| Error::source_mysql(e, "reading binlog_checksum"))?;
    let checksums = checksum.is_some_and(|(_, v)| !v.eq_ignore_ascii_case("NONE"));
    let request =
        BinlogStreamRequest::new(settings.server_id).with_filename(resume.file.as_bytes()).with_pos(resume.offset);
    let binlog = conn
        .get_binlog_stream(request)
        .await
        .map_err(|e| purged_hint(Error::source_mysql(e, format!("requesting the binlog at {resume}")), resume))?;
    Ok((binlog, checksums))
}

fn purged_hint(e: Error, resume: &Position) -> Error {
    if e.kind() == ErrorKind::BinlogPurged {
        e.context(format!("checkpoint position {resume} is no longer on the source"))
            .with_hint("the binlog was purged before binferry read it: raise binlog_expire_logs_seconds, then start over with a fresh buffer and target (a new snapshot)")
    } else {
        e
    }
}

impl Streamer<'_> {
    fn handle<'t>(
        &mut self,
        event: &mysql_async::binlog::events::Event,
        tme: impl Fn(u64) -> Option<&'t TableMapEvent<'static>>,
    ) -> Result<()> {
        let header = event.header();
        let log_pos = header.log_pos() as u64;
        self.events_seen += 1;
        self.bytes_read += u64::from(header.event_size());
        if header.event_type_raw() == MARIADB_GTID_EVENT {
            let (gtid, flags) = Gtid::decode_mariadb(event.data(), header.server_id())?;
            self.txn_gtid = Some(gtid);
            self.in_txn = flags & MARIADB_GTID_FL_STANDALONE == 0;
            return Ok(());
        }
        let data = event.read_data().map_err(|e| {
            Error::new(ErrorKind::Decode, format!("binlog event at {}:{log_pos}: {e}", self.current_file))
        })?;
        // Where the stream is after this event (a rotate names the next file, a heartbeat is
        // handled below).
        let moves = !matches!(&data, Some(EventData::RotateEvent(_) | EventData::HeartbeatEvent));
        match data {
            Some(EventData::RotateEvent(r)) => {
                let raw = r.name_raw();
                let raw = if self.rotate_has_crc && raw.len() > 4 { &raw[..raw.len() - 4] } else { raw };
                self.current_file = String::from_utf8(raw.to_vec()).map_err(|_| {
                    Error::new(ErrorKind::Decode, format!("ROTATE event names a non-UTF-8 binlog file {raw:?}"))
                })?;
            }
            Some(EventData::FormatDescriptionEvent(_)) => self.rotate_has_crc = false,
            Some(EventData::TableMapEvent(t)) => self.on_table_map(&t, event.data())?,
            Some(EventData::RowsEvent(rows)) => {
                let table = tme(rows.table_id());
                self.on_rows(&rows, table, log_pos, header.timestamp())?;
            }
            Some(EventData::XidEvent(_)) => self.on_commit(log_pos, header.timestamp()),
            Some(EventData::QueryEvent(q)) => {
                let sql = q.query();
                if sql.eq_ignore_ascii_case("BEGIN") {
                    self.in_txn = true;
                } else if sql.eq_ignore_ascii_case("COMMIT") || !self.in_txn {
                    // COMMIT of a non-transactional engine, or a standalone statement (DDL).
                    if !sql.eq_ignore_ascii_case("COMMIT") {
                        debug!(query = %sql, "standalone statement");
                        let db = q.schema().into_owned();
                        if self.on_ddl(&sql, &db, log_pos, header.timestamp()) {
                            self.txn_has_changes = true;
                        }
                    }
                    self.on_commit(log_pos, header.timestamp());
                } else {
                    let db = q.schema().into_owned();
                    self.on_statement_in_txn(&sql, &db, log_pos, header.timestamp());
                }
            }
            Some(EventData::HeartbeatEvent) => {
                self.stats.source_caught_up.store(true, Ordering::Relaxed);
                if log_pos > 0 {
                    self.at = Some(Position::new(self.current_file.clone(), log_pos));
                }
                // The stream is at the binlog's end: if that is past the newest table copy,
                // the target becomes consistent even without a transaction to say so.
                if !self.in_txn {
                    let at = Position::new(self.current_file.clone(), log_pos);
                    if self.reaches_consistency(&at) {
                        self.push_consistency_marker(at, header.timestamp());
                    }
                }
            }
            _ => {}
        }
        if log_pos > 0 && moves {
            self.at = Some(Position::new(self.current_file.clone(), log_pos));
        }
        Ok(())
    }

    fn on_table_map(&mut self, t: &TableMapEvent<'_>, raw: &[u8]) -> Result<()> {
        if let Some(c) = self.tables.get(&t.table_id()) {
            if c.raw == raw {
                return Ok(());
            }
        }
        let table = TableRef::new(t.database_name(), t.table_name());
        let shaped = match self.settings.filter.matches(&table) && !self.stopped.contains(&table) {
            true => match schema_from_table_map(t, &self.collations).and_then(|s| self.settings.shape(s)) {
                Ok(shaped) => Some(shaped),
                // A type or character set binferry does not decode stops this table only.
                Err(e) if e.kind() == ErrorKind::Unsupported => {
                    self.stop(table.clone(), e.to_string());
                    None
                }
                Err(e) => return Err(e),
            },
            false => None,
        };
        let (schema, skip_until, keep) = match shaped {
            Some((schema, keep)) => {
                self.pending_resolve.push(t.table_id());
                (Some(Arc::new(schema)), self.checkpoint.snapshot.tables.get(&table.key()).cloned(), keep)
            }
            None => (None, None, None),
        };
        let version = schema.as_ref().map_or(0, |s| s.version());
        self.tables.insert(t.table_id(), CachedTable { raw: raw.to_vec(), schema, version, skip_until, keep });
        Ok(())
    }

    /// Long because it decodes one rows event into changes: before/after images per row,
    /// the keep and skip rules of the table, and one error path per way a row can fail to
    /// decode.
    fn on_rows(
        &mut self,
        rows: &RowsEventData<'_>,
        tme: Option<&TableMapEvent<'static>>,
        log_pos: u64,
        ts: u32,
    ) -> Result<()> {
        let Some(cached) = self.tables.get(&rows.table_id()) else {
            return Err(Error::new(
                ErrorKind::Decode,
                format!("ROWS event at {}:{log_pos} without a TABLE_MAP", self.current_file),
            ));
        };
        let Some(schema) = cached.schema.clone() else {
            return Ok(());
        };
        let tme = tme.ok_or_else(|| {
            Error::new(ErrorKind::Decode, format!("no TABLE_MAP for ROWS event at {}:{log_pos}", self.current_file))
        })?;
        let op = match rows {
            RowsEventData::WriteRowsEvent(_) | RowsEventData::WriteRowsEventV1(_) => Op::Insert,
            RowsEventData::UpdateRowsEvent(_) | RowsEventData::UpdateRowsEventV1(_) => Op::Update,
            RowsEventData::DeleteRowsEvent(_) | RowsEventData::DeleteRowsEventV1(_) => Op::Delete,
            RowsEventData::PartialUpdateRowsEvent(_) => {
                return Err(Error::new(
                    ErrorKind::SourceSetting,
                    "binlog_row_value_options: expected '' (full JSON images), found PARTIAL_JSON",
                )
                .with_hint("SET GLOBAL binlog_row_value_options = ''"));
            }
        };
        let n = tme.columns_count() as usize;
        for image in [rows.columns_before_image(), rows.columns_after_image()].into_iter().flatten() {
            if image.count_ones() != n {
                return Err(Error::new(
                    ErrorKind::SourceSetting,
                    format!(
                        "binlog_row_image: expected FULL, found a partial row image for {} at {}:{log_pos}",
                        schema.table, self.current_file
                    ),
                )
                .with_hint(
                    "SET GLOBAL binlog_row_image = 'FULL' and add binlog_row_image=FULL to the server configuration",
                ));
            }
        }
        let skip_until = cached.skip_until.clone();
        let keep = cached.keep.clone();
        let version = cached.version;
        for (i, row) in rows.rows(tme).enumerate() {
            let (before, after) = row.map_err(|e| {
                Error::new(
                    ErrorKind::Decode,
                    format!("row {i} of {} at {}:{log_pos}: {e}", schema.table, self.current_file),
                )
            })?;
            let position = Position { file: self.current_file.clone(), offset: log_pos, row: i as u32 };
            if skip_until.as_ref().is_some_and(|s| {
                matches!(position.partial_cmp(s), Some(std::cmp::Ordering::Less | std::cmp::Ordering::Equal))
            }) {
                continue;
            }
            let decode = |r| values(r, &schema, keep.as_deref(), &position, &self.charsets);
            let (before, after) = match (before.map(decode).transpose(), after.map(decode).transpose()) {
                (Ok(b), Ok(a)) => (b, a),
                (Err(e), _) | (_, Err(e)) if matches!(e.kind(), ErrorKind::Decode | ErrorKind::Unsupported) => {
                    // A value binferry cannot read exactly stops its table from here on.
                    self.stop(schema.table.clone(), e.to_string());
                    return Ok(());
                }
                (Err(e), _) | (_, Err(e)) => return Err(e),
            };
            if op == Op::Update && before == after {
                // Only excluded columns changed: nothing to replicate.
                self.stats.source_unchanged.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            self.push(Record::Change(ChangeEvent {
                table: schema.table.clone(),
                schema_version: version,
                op,
                before,
                after,
                position,
                timestamp: ts,
                gtid: self.txn_gtid.clone(),
                index: Some(self.txn_index),
            }));
            self.txn_index += 1;
            self.txn_has_changes = true;
        }
        Ok(())
    }

    /// Complete new schemas with what `information_schema` says of their columns (defaults,
    /// MariaDB's UUID and INET types, declared numeric types) and read the tables of their
    /// character sets, then register them for the buffer. A table whose character set cannot
    /// be read stops alone.
    async fn resolve(&mut self, settings: &SourceSettings) -> Result<()> {
        if self.pending_resolve.is_empty() {
            return Ok(());
        }
        if self.meta.is_none() {
            self.meta = Some(settings.connect().await?);
        }
        for id in std::mem::take(&mut self.pending_resolve) {
            let Some(schema) = self.tables.get(&id).and_then(|c| c.schema.clone()) else { continue };
            let Some(conn) = self.meta.as_mut() else { return Err(Error::internal("no metadata connection")) };
            let facts = column_facts(conn, &schema.table, self.mariadb).await?;
            let mut patched = (*schema).clone();
            apply_facts(&mut patched, &facts);
            let mut unreadable = None;
            for cs in patched.columns.iter().filter_map(|c| c.ty.charset()) {
                let maxlen = self.collations.maxlen(&cs.name).unwrap_or(u32::MAX);
                match self.charsets.load(conn, &cs.name, maxlen).await {
                    Ok(()) => {}
                    Err(e) if e.kind() == ErrorKind::Unsupported => unreadable = Some(e),
                    Err(e) => return Err(e),
                }
            }
            if let Some(e) = unreadable {
                self.stop(patched.table.clone(), e.to_string());
                continue;
            }
            let patched = Arc::new(patched);
            if let Some(cached) = self.tables.get_mut(&id) {
                cached.version = patched.version();
                cached.schema = Some(Arc::clone(&patched));
            }
            self.new_schemas.push(patched);
        }
        Ok(())
    }

    /// This run cannot replicate `table` any more: skip its rows from here on, and record the
    /// stop (a `stop` record, which the writer makes durable in the target) once the current
    /// transaction has ended.
    fn stop(&mut self, table: TableRef, reason: String) {
        for cached in self.tables.values_mut() {
            if cached.schema.as_ref().is_some_and(|s| s.table == table) {
                cached.schema = None;
            }
        }
        if self.stopped.insert(table.clone()) {
            error!(%table, %reason, "table stopped: the source cannot replicate it; the other tables keep replicating");
            self.stops.push((table, reason));
        }
    }

    /// Turn a row- or name-affecting DDL statement on replicated tables into records; says
    /// whether it queued any.
    fn on_ddl(&mut self, sql: &str, default_db: &str, log_pos: u64, ts: u32) -> bool {
        let position = Position::new(self.current_file.clone(), log_pos);
        self.note_statement(sql, &position);
        let Some(ddl) = classify(sql, default_db) else { return false };
        let selected = |t: &TableRef| self.settings.filter.matches(t);
        let mut changes = Vec::new();
        let mut created = None;
        match ddl {
            Ddl::Truncate(t) if selected(&t) => changes.push((t, TableChange::Truncate)),
            Ddl::Drop(ts) => changes.extend(ts.into_iter().filter(|t| selected(t)).map(|t| (t, TableChange::Drop))),
            // The old table and its rows are gone; the new one is created as below.
            Ddl::Replace(t) if selected(&t) => {
                changes.push((t.clone(), TableChange::Drop));
                created = Some(t);
            }
            Ddl::Create(t) if selected(&t) => created = Some(t),
            Ddl::RenameTables(pairs) => {
                for (from, to) in pairs {
                    match (selected(&from), selected(&to)) {
                        (true, true) => changes.push((from, TableChange::RenameTo(to))),
                        (true, false) => changes.push((from, TableChange::Drop)),
                        (false, true) => warn!(
                            table = %to,
                            "a table entered the replicated tables by RENAME; its existing rows are not in the target, \
                             only its changes from now on"
                        ),
                        (false, false) => {}
                    }
                }
            }
            Ddl::RenameColumns(t, renames) if selected(&t) => changes.push((t, TableChange::RenameColumns(renames))),
            _ => {}
        }
        let queued = !changes.is_empty();
        for (table, change) in changes {
            self.follow_copy(&table, &change);
            info!(%table, ?change, position = %position, "schema change");
            self.push(Record::Ddl(SchemaChange::new(table, change, position.clone(), ts)));
        }
        if let Some(table) = created {
            self.copy_created(table, position);
        }
        queued
    }

    /// A table was created at `at`. It brings its shape with its first row, and a table that
    /// stays empty would have no target table: copy it, as a resync would, so that its target
    /// table exists from here on with the shape the copy read (the copy's checks make sure no
    /// statement changed it after the copy read it unseen). Only its first chunk, usually
    /// empty, is copied (see [`ChunkedCopy::fresh`]); a table that cannot be copied in chunks
    /// (no primary key) gets its target table with its first row, as before.
    fn copy_created(&mut self, table: TableRef, at: Position) {
        let key = table.key();
        if self.stopped.contains(&table) || self.checkpoint.snapshot.chunked.contains_key(&key) {
            return;
        }
        debug!(%table, "table created: copying it so that its target table exists");
        let copy = ChunkedCopy { fresh: true, ..ChunkedCopy::new(table.clone(), Some(at)) };
        self.checkpoint.snapshot.chunked.insert(key, copy);
        self.checkpoint_dirty = true;
        self.copy.send(CopyJob { table, after: None, keys: None });
    }

    /// A statement inside a transaction. Row-based binlogs log DML as row events, so the one
    /// statement that matters here is MariaDB's `CREATE [OR REPLACE] TABLE ... SELECT`: the
    /// transaction holds the CREATE (the drop of the table it replaces), then the rows it
    /// inserts, then the commit.
    ///
    /// A DDL record is a transaction of its own for the writer, so the statement becomes one,
    /// committed at its own position, before the transaction's rows (which commit at the
    /// XID as usual). A reader of the target may see the replaced table gone and the new
    /// one without rows between the two commits; the source is not atomic there either. The
    /// source checkpoint stays at the transaction's start: after a crash the statement comes
    /// again, and a drop applied twice is harmless (the sinks' drops are idempotent).
    fn on_statement_in_txn(&mut self, sql: &str, default_db: &str, log_pos: u64, ts: u32) {
        if self.txn_has_changes {
            // After rows of the same transaction (no server logs DDL there): splitting it
            // would leave those rows without their commit, so it is left alone.
            self.note_statement(sql, &Position::new(self.current_file.clone(), log_pos));
            if classify(sql, default_db).is_some() {
                warn!(query = %sql, "a DDL statement after row changes inside a transaction is not applied to the target");
            }
            return;
        }
        if self.on_ddl(sql, default_db, log_pos, ts) {
            let consistent = Some(self.consistent_with(false));
            let position = Position::new(self.current_file.clone(), log_pos);
            self.push(Record::Commit(Commit { position, gtid: None, timestamp: ts, snapshot: false, consistent }));
        }
    }

    fn on_commit(&mut self, log_pos: u64, ts: u32) {
        let position = Position::new(self.current_file.clone(), log_pos);
        let reaches = self.reaches_consistency(&position);
        let consistent = Some(self.consistent_with(reaches));
        if self.txn_has_changes {
            self.push(Record::Commit(Commit {
                position: position.clone(),
                gtid: self.txn_gtid.clone(),
                timestamp: ts,
                snapshot: false,
                consistent,
            }));
            if reaches {
                self.consistent_from = None;
            }
            self.stats.source_txns.fetch_add(1, Ordering::Relaxed);
            self.stats.source_changed(ts as u64);
        } else if reaches {
            self.push_consistency_marker(position.clone(), ts);
        }
        // Tables stopped during the transaction: each stop is a transaction of its own after it.
        self.push_stops(&position, ts, consistent);
        self.push_rebuilds(&position, ts);
        self.stats.source_event_ts.store(ts as u64, Ordering::Relaxed);
        self.stats.source_caught_up.store(false, Ordering::Relaxed);
        self.checkpoint.resume = Some(position);
        self.checkpoint.gtid = self.txn_gtid.take();
        self.checkpoint_dirty = true;
        self.in_txn = false;
        self.txn_has_changes = false;
        self.txn_index = 0;
    }

    /// Whether the target is consistent once what the stream has read so far is applied;
    /// `reaches`: the stream has just reached the newest table copy it was waiting for.
    fn consistent_with(&self, reaches: bool) -> bool {
        (self.consistent_from.is_none() || reaches) && !self.checkpoint.snapshot.copying_for_consistency()
    }

    /// Whether the stream, at `at`, reaches the newest table copy it was waiting for.
    fn reaches_consistency(&self, at: &Position) -> bool {
        self.consistent_from
            .as_ref()
            .is_some_and(|p| matches!(at.partial_cmp(p), Some(std::cmp::Ordering::Greater | std::cmp::Ordering::Equal)))
    }

    /// A commit without changes at `at` that tells the writers the target is consistent from
    /// here on (the transactions before it that reach the target made it so).
    fn push_consistency_marker(&mut self, at: Position, ts: u32) {
        info!(position = %at, "the stream reached the newest table copy of the snapshot");
        self.consistent_from = None;
        if self.checkpoint.snapshot.copying_for_consistency() {
            return; // the last chunk says it
        }
        self.push(Record::Commit(Commit::consistency_marker(at, ts)));
    }

    /// Remember, for every table being copied in chunks, the newest statement that names it
    /// (any DDL: a chunk read with the columns from before it is read again). Matching the
    /// name in the text errs on the side of reading again.
    fn note_statement(&mut self, sql: &str, at: &Position) {
        if self.checkpoint.snapshot.chunked.is_empty() {
            return;
        }
        let lower = sql.to_ascii_lowercase();
        for (key, copy) in &self.checkpoint.snapshot.chunked {
            if names(&lower, &copy.table.name.to_ascii_lowercase()) {
                self.copy.last_ddl.insert(key.clone(), at.clone());
            }
        }
    }

    /// A table being copied was dropped or renamed: a dropped table's copy ends; a renamed
    /// one continues under its new name from the same key (the rows are the same).
    fn follow_copy(&mut self, table: &TableRef, change: &TableChange) {
        let chunked = &mut self.checkpoint.snapshot.chunked;
        let Some(mut copy) = chunked.remove(&table.key()) else { return };
        self.checkpoint_dirty = true;
        match change {
            TableChange::Drop => info!(%table, "table dropped during its chunked copy: the copy ends"),
            TableChange::RenameTo(to) => {
                info!(from = %table, %to, "table renamed during its chunked copy: the copy goes on under the new name");
                copy.table = to.clone();
                let job = CopyJob { table: to.clone(), after: copy.after.clone(), keys: None };
                chunked.insert(to.key(), copy);
                self.copy.send(job);
            }
            _ => {
                chunked.insert(table.key(), copy);
            }
        }
        self.record_copy_progress();
    }

    /// The copier cannot copy `table`: stop it (the stop says why and that a resync fixes it).
    /// The copy of a table created while streaming just ends: the table may be gone already,
    /// or have no primary key, and its rows bring its shape all the same.
    fn copy_failed(&mut self, table: TableRef, reason: String) {
        let Some(copy) = self.checkpoint.snapshot.chunked.remove(&table.key()) else {
            return; // dropped or renamed meanwhile
        };
        self.checkpoint_dirty = true;
        if copy.fresh {
            info!(%table, %reason, "a table created while streaming was not copied: its first row creates its target table");
            return;
        }
        self.stop(table, reason);
        if !self.in_txn
            && let Some(at) = self.at.clone()
        {
            self.push_stops(&at, now_secs(), Some(false));
        }
        self.record_copy_progress();
    }

    /// Log a chunk held for [`HELD_CHUNK_REPORT`] and more, with what it waits for.
    fn report_held_chunk(&mut self) {
        let Some((chunk, _)) = &self.copy.held else {
            self.copy.held_since = None;
            return;
        };
        let now = Instant::now();
        let (since, reported) = *self.copy.held_since.get_or_insert((now, now));
        if now.duration_since(reported) < HELD_CHUNK_REPORT {
            return;
        }
        self.copy.held_since = Some((since, now));
        info!(
            table = %chunk.table,
            chunk_at = %chunk.at,
            stream_at = ?self.at.as_ref().map(|p| p.to_string()),
            inside_transaction = self.in_txn,
            waiting_s = now.duration_since(since).as_secs(),
            "a copied chunk waits for the binlog stream to reach its position"
        );
    }

    /// Take the held chunk into the buffer if the stream can now (see [`judge`]), or answer
    /// that it must be read again or dropped.
    async fn take_held_chunk<B: Journal>(&mut self, buffer: &B) -> Result<()> {
        self.report_held_chunk();
        if self.in_txn {
            return Ok(());
        }
        let Some((chunk, _)) = &self.copy.held else { return Ok(()) };
        let key = chunk.table.key();
        let copying = match chunk.repair {
            Some(_) => self.copy.repairs.contains_key(&key),
            None => self.checkpoint.snapshot.chunked.contains_key(&key),
        };
        let verdict = judge(
            copying,
            self.stopped.contains(&chunk.table),
            &chunk.at,
            &chunk.schema_at,
            self.at.as_ref(),
            self.copy.last_ddl.get(&key),
        )?;
        let Some(verdict) = verdict else { return Ok(()) };
        if verdict == Verdict::Taken {
            let limit = CHUNK_BACKLOG_CHUNKS * self.settings.chunk_rows as u64;
            if buffer.unapplied() + self.pending.len() as u64 > limit {
                return Ok(()); // the writer catches up first; the chunk tick looks again
            }
        }
        let Some((chunk, reply)) = self.copy.held.take() else { return Ok(()) };
        self.copy.held_since = None;
        if !self.rebuilds.is_empty()
            && let Some(at) = self.at.clone()
        {
            // After a restart on a quiet source: the rebuilds go before the first chunk.
            self.push_rebuilds(&at, now_secs());
        }
        match (verdict, chunk.repair.is_some()) {
            (Verdict::Taken, false) => {
                self.push_chunk(chunk);
                self.flush(buffer).await?;
            }
            (Verdict::Taken, true) => {
                let waiting = self.copy.repairs.remove(&key);
                let repaired = self.push_repair(chunk);
                self.flush(buffer).await?;
                info!(table = %key, rewritten = repaired.rewritten, deleted = repaired.deleted, "repair in the buffer");
                if let Some(w) = waiting {
                    let _ = w.send(Ok(repaired));
                }
            }
            (Verdict::Abandon, true) => {
                if let Some(w) = self.copy.repairs.remove(&key) {
                    let _ = w.send(Err(Error::new(
                        ErrorKind::Unsupported,
                        format!("{key} is stopped: it cannot be repaired"),
                    )
                    .with_hint("see the table's stop reason (binferry status)")));
                }
            }
            _ => {}
        }
        // The copier may have ended meanwhile; nothing then waits for the answer.
        let _ = reply.send(verdict);
        Ok(())
    }

    /// Queue a chunk's rows at its position, record its progress in the checkpoint (appended
    /// with them), and after a table's last chunk, the sweep of rows the source no longer has.
    fn push_chunk(&mut self, chunk: Chunk) {
        let Chunk { table, schema, at, rows, upper, .. } = chunk;
        let ts = now_secs();
        let n = rows.len() as u64;
        let version = schema.version();
        if self.copy.schemas_sent.insert(version) {
            self.new_schemas.push(Arc::clone(&schema));
        }
        let key = table.key();
        let base = match self.checkpoint.snapshot.chunked.get(&key) {
            Some(c) if c.resync => RECOPY_ROW_BASE,
            _ => 0,
        };
        // The copy of a table created while streaming changes nothing about consistency.
        let fresh = self.checkpoint.snapshot.chunked.get(&key).is_some_and(|c| c.fresh);
        let chunk_commit = |at: &Position| {
            let commit = Commit::copy_chunk(at.clone(), ts);
            if fresh { Commit { consistent: None, ..commit } } else { commit }
        };
        for (i, values) in rows.into_iter().enumerate() {
            // Row 0 is the chunk's commit.
            let position = Position { row: base + i as u32 + 1, ..at.clone() };
            self.push(Record::Change(ChangeEvent::snapshot(table.clone(), version, values, position, ts)));
        }
        self.push(Record::Commit(chunk_commit(&at)));
        if !fresh {
            self.stats.record_snapshot_rows(n);
        }
        self.checkpoint_dirty = true;
        let Some(copy) = self.checkpoint.snapshot.chunked.get_mut(&key) else { return };
        // Set where streaming was when the copy was registered, and lowered to any chunk
        // read at an older position: the binlog end read then may include a transaction
        // whose commit a chunk's read view did not see yet (group commit), and the sweep
        // must not remove that chunk's rows.
        let floor = Position { row: base, ..at.clone() };
        let start = match copy.start.take() {
            Some(s) if matches!(s.partial_cmp(&floor), Some(std::cmp::Ordering::Less | std::cmp::Ordering::Equal)) => s,
            _ => floor,
        };
        copy.start = Some(start.clone());
        copy.after = upper.clone();
        copy.chunks += 1;
        copy.rows += n;
        // A created table's copy ends with its first chunk: its rows also come from the
        // binlog, all of them since its creation, so what the copy is for, the shape at a
        // known position, is there. (Catching up, the table can have many rows by now.)
        if upper.is_some() && !fresh {
            self.log_copy_progress();
            self.record_copy_progress();
            return;
        }
        let done = self.checkpoint.snapshot.chunked.remove(&key);
        info!(
            %table,
            rows = done.as_ref().map_or(0, |c| c.rows),
            chunks = done.as_ref().map_or(0, |c| c.chunks),
            resync = done.as_ref().is_some_and(|c| c.resync),
            created = fresh,
            "table copied"
        );
        if done.as_ref().is_some_and(|c| c.resync) {
            // Every row of the copy is before this. A target that rebuilt a stopped table aside
            // puts it in place now. With Kafka key partitions it is a DDL barrier, so no
            // partition applies the sweep below before every partition has applied its share
            // of the copy: a sweep ahead of a slower partition would delete rows whose fresh
            // copy is still on its way there, and a reader would miss them meanwhile.
            self.push(Record::Ddl(SchemaChange::new(table.clone(), TableChange::RebuildDone, start.clone(), ts)));
            self.push(Record::Commit(Commit::copy_chunk(start.clone(), ts)));
        }
        // Every row this copy wrote has a position at or after `start`: older rows are the ones
        // the source does not have (a TRUNCATE at `start` removes exactly those). It brings the
        // shape the last chunk was read with, so an empty table gets its target table too.
        self.push(Record::Ddl(SchemaChange::new(table, TableChange::Truncate, start.clone(), ts).with_shape(version)));
        self.push(Record::Commit(chunk_commit(&start)));
        self.copy.last_ddl.remove(&key);
        self.record_copy_progress();
        if !fresh && self.consistent_with(false) {
            info!("snapshot complete: every chunked copy is in the buffer");
            self.push(Record::Commit(Commit::consistency_marker(at, ts)));
        }
    }

    /// Start copying again, in chunks, the tables of a resync request (read from the catalog
    /// by [`resync::candidates`]); durable before it answers. The outer result is the
    /// stream's own failure (the buffer), the inner one the request's answer.
    async fn start_resync<B: Journal>(&mut self, candidates: Vec<Candidate>, buffer: &B) -> Result<Result<Resynced>> {
        // A created table's copy ends with its first chunk ([`ChunkedCopy::fresh`]): a resync
        // of it starts a whole copy, which takes that one's chunks over (the copy it queues
        // after it then finds nothing to do).
        let chunked = &self.checkpoint.snapshot.chunked;
        let copying = |t: &TableRef| chunked.get(&t.key()).is_some_and(|c| !c.fresh);
        let out = match resync::plan(candidates, &self.stopped, copying) {
            Ok(out) => out,
            Err(e) => return Ok(Err(e)),
        };
        // Every chunk is read after this, so its position is at least this one; rows of an
        // earlier copy at this very position (an idle source) have smaller row numbers.
        let start =
            self.at.clone().or_else(|| self.checkpoint.resume.clone()).map(|p| Position { row: RECOPY_ROW_BASE, ..p });
        for table in &out.started {
            let copy = ChunkedCopy { resync: true, ..ChunkedCopy::new(table.clone(), start.clone()) };
            self.checkpoint.snapshot.chunked.insert(table.key(), copy);
            self.rebuilds.push(table.clone());
            info!(%table, "resync requested: copying the table again in chunks while streaming");
        }
        if !self.in_txn
            && let Some(at) = self.at.clone().or_else(|| self.checkpoint.resume.clone())
        {
            self.push_rebuilds(&at, now_secs());
        }
        self.checkpoint_dirty = true;
        self.flush(buffer).await?;
        for table in &out.started {
            self.copy.send(CopyJob { table: table.clone(), after: None, keys: None });
        }
        self.record_copy_progress();
        Ok(Ok(out))
    }

    /// Start a repair of `keys` of `table`: the copier reads them in one consistent read and
    /// the stream answers `reply` once they are in the buffer.
    fn start_repair(&mut self, table: TableRef, keys: Vec<Vec<Value>>, reply: oneshot::Sender<Result<Repaired>>) {
        let refuse = |why: String, hint: &str| Err(Error::new(ErrorKind::Config, why).with_hint(hint.to_string()));
        let key = table.key();
        let answer = if !self.settings.filter.matches(&table) {
            refuse(format!("{table} is not replicated"), "name a table of source.include")
        } else if self.checkpoint.snapshot.chunked.contains_key(&key) {
            refuse(format!("{table} is being copied (snapshot or resync)"), "repair once its copy is complete")
        } else if self.copy.repairs.contains_key(&key) {
            refuse(format!("a repair of {table} is under way"), "wait for it, then verify again")
        } else if keys.is_empty() {
            Ok(Repaired::default())
        } else {
            // Behind the copies queued before it, if any: the caller waits for the answer.
            self.copy.send(CopyJob { table, after: None, keys: Some(keys) });
            self.copy.repairs.insert(key, reply);
            return;
        };
        let _ = reply.send(answer);
    }

    /// Queue a repair chunk: the rows the source has for the keys as snapshot rows at the
    /// chunk's position, and a delete at that position for each key it does not have. The
    /// position guard keeps whatever the stream has applied since.
    fn push_repair(&mut self, chunk: Chunk) -> Repaired {
        let Chunk { table, schema, at, rows, repair, .. } = chunk;
        let ts = now_secs();
        let version = schema.version();
        if self.copy.schemas_sent.insert(version) {
            self.new_schemas.push(Arc::clone(&schema));
        }
        let encode = |key: &[Value]| {
            let mut out = Vec::new();
            encode_values(key, &mut out);
            out
        };
        let present: HashSet<Vec<u8>> = rows
            .iter()
            .map(|r| encode(&schema.primary_key.iter().map(|&i| r[i].clone()).collect::<Vec<_>>()))
            .collect();
        let mut out = Repaired { rewritten: rows.len() as u64, deleted: 0, kept: 0 };
        // After an earlier copy's rows at this very position (see [`RECOPY_ROW_BASE`]).
        let mut next = RECOPY_ROW_BASE + 1;
        let mut next_position = || {
            next += 1;
            Position { row: next - 1, ..at.clone() }
        };
        let mut records: Vec<Record> = rows
            .into_iter()
            .map(|r| Record::Change(ChangeEvent::snapshot(table.clone(), version, r, next_position(), ts)))
            .collect();
        let soft = self.settings.rules.options(&table).deletes == DeleteMode::Soft;
        for key in repair.unwrap_or_default().into_iter().filter(|k| !present.contains(&encode(k))) {
            if soft {
                // A soft delete keeps the row's last image, which the source no longer has:
                // the target row stays as it is, reported.
                warn!(%table, key = ?key, "a row the source does not have stays in a soft-delete table; delete it by hand");
                out.kept += 1;
                continue;
            }
            // Only the key identifies the row to delete; the other columns are unknown.
            let mut before = vec![Value::Null; schema.columns.len()];
            for (&i, v) in schema.primary_key.iter().zip(key) {
                before[i] = v;
            }
            let delete = ChangeEvent {
                op: Op::Delete,
                before: Some(before),
                after: None,
                ..ChangeEvent::snapshot(table.clone(), version, vec![], next_position(), ts)
            };
            records.push(Record::Change(delete));
            out.deleted += 1;
        }
        for r in records {
            self.push(r);
        }
        self.push(Record::Commit(Commit::copy_chunk(at.clone(), ts)));
        out
    }

    /// Export what is left to copy.
    fn record_copy_progress(&self) {
        // A created table's copy is over in a moment, and not what operators follow.
        let copies = self.checkpoint.snapshot.chunked.values().filter(|c| !c.fresh);
        self.stats.set_copies(
            copies
                .map(|c| CopyProgress { table: c.table.key(), rows: c.rows, chunks: c.chunks, resync: c.resync })
                .collect(),
        );
    }

    /// Every [`COPY_PROGRESS_INTERVAL`], one line per table being copied.
    fn log_copy_progress(&mut self) {
        if self.copy.logged_at.elapsed() < COPY_PROGRESS_INTERVAL {
            return;
        }
        self.copy.logged_at = Instant::now();
        for c in self.checkpoint.snapshot.chunked.values().filter(|c| c.chunks > 0) {
            info!(table = %c.table, rows = c.rows, chunks = c.chunks, "copying in chunks");
        }
    }

    /// Queue the stops recorded since the last commit, each a transaction of its own at `at`.
    fn push_stops(&mut self, at: &Position, ts: u32, consistent: Option<bool>) {
        for (table, reason) in std::mem::take(&mut self.stops) {
            let change = TableChange::Stop { reason };
            self.push(Record::Ddl(SchemaChange::new(table, change, at.clone(), ts)));
            let commit = Commit { position: at.clone(), gtid: None, timestamp: ts, snapshot: false, consistent };
            self.push(Record::Commit(commit));
        }
    }

    /// Queue a `rebuild` record for each resynced table waiting for one, each a transaction
    /// of its own at `at`, before the table's first chunk: a target that stopped the table
    /// starts it again with the shape the chunks bring.
    fn push_rebuilds(&mut self, at: &Position, ts: u32) {
        for table in std::mem::take(&mut self.rebuilds) {
            self.push(Record::Ddl(SchemaChange::new(table, TableChange::Rebuild, at.clone(), ts)));
            self.push(Record::Commit(Commit {
                position: at.clone(),
                gtid: None,
                timestamp: ts,
                snapshot: false,
                consistent: Some(false),
            }));
        }
    }

    fn push(&mut self, record: Record) {
        if self.first_pending_at.is_none() {
            self.first_pending_at = Some(Instant::now());
        }
        self.pending.push(record);
    }

    /// Append pending records with the checkpoint of the last complete transaction.
    async fn flush<B: Journal>(&mut self, buffer: &B) -> Result<()> {
        if self.pending.is_empty() && !self.checkpoint_dirty {
            return Ok(());
        }
        let records = std::mem::take(&mut self.pending);
        let changes = records.iter().filter(|r| matches!(r, Record::Change(_))).count() as u64;
        let batch = AppendBatch {
            records,
            schemas: std::mem::take(&mut self.new_schemas),
            checkpoint: self.checkpoint.clone(),
        };
        buffer.append(batch).await?;
        self.first_pending_at = None;
        self.checkpoint_dirty = false;
        self.stats.record_source_events(changes);
        self.stats.record_source_bytes(std::mem::take(&mut self.bytes_read));
        if let Some(p) = &self.checkpoint.resume {
            self.stats.set_source_position(p);
        }
        Ok(())
    }
}

/// Whether `sql` (lowercase) contains `name` (lowercase) as a whole identifier, not as part
/// of a longer one (`big` in `BIGINT`).
fn names(sql: &str, name: &str) -> bool {
    let ident = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '$';
    sql.match_indices(name).any(|(i, _)| {
        let before = sql[..i].chars().next_back();
        let after = sql[i + name.len()..].chars().next();
        !before.is_some_and(ident) && !after.is_some_and(ident)
    })
}

/// The before and after images of one row of a ROWS event.
pub type RowImages = (Option<Vec<Value>>, Option<Vec<Value>>);

/// Decode every row image of a ROWS event into exact values: the per-row work of the
/// source, without the bookkeeping around it. Public for the decode micro-benchmark.
pub fn decode_rows(rows: &RowsEventData<'_>, tme: &TableMapEvent<'_>, schema: &TableSchema) -> Result<Vec<RowImages>> {
    let at = Position::new("-", 0);
    // UTF-8 and the other Unicode sets need no table of the server.
    let charsets = Charsets::default();
    rows.rows(tme)
        .map(|row| {
            let (before, after) =
                row.map_err(|e| Error::new(ErrorKind::Decode, format!("row of {}: {e}", schema.table)))?;
            Ok((
                before.map(|r| values(r, schema, None, &at, &charsets)).transpose()?,
                after.map(|r| values(r, schema, None, &at, &charsets)).transpose()?,
            ))
        })
        .collect()
}

fn values(
    row: mysql_async::binlog::row::BinlogRow,
    schema: &TableSchema,
    keep: Option<&[usize]>,
    at: &Position,
    charsets: &Charsets,
) -> Result<Vec<Value>> {
    let mut raw = row.unwrap();
    if let Some(keep) = keep {
        let mut all: Vec<Option<BinlogValue<'static>>> = raw.into_iter().map(Some).collect();
        raw = keep.iter().filter_map(|&i| all.get_mut(i).and_then(Option::take)).collect();
    }
    if raw.len() != schema.columns.len() {
        return Err(Error::new(
            ErrorKind::Decode,
            format!("row of {} at {at} has {} values for {} columns", schema.table, raw.len(), schema.columns.len()),
        ));
    }
    raw.into_iter()
        .zip(&schema.columns)
        .map(|(v, col)| match v {
            BinlogValue::Value(v) => convert(v, col, Origin::Binlog(charsets))
                .map_err(|e| e.context(format!("column `{}` of {} at {at}", col.name, schema.table))),
            BinlogValue::Jsonb(j) => {
                let json = serde_json::Value::try_from(j).map_err(|e| {
                    Error::new(
                        ErrorKind::Decode,
                        format!("column `{}` of {} at {at}: invalid JSON: {e}", col.name, schema.table),
                    )
                })?;
                Ok(Value::Json(json.to_string()))
            }
            BinlogValue::JsonDiff(_) => Err(Error::new(
                ErrorKind::SourceSetting,
                "binlog_row_value_options: expected '' (full JSON images), found PARTIAL_JSON",
            )
            .with_hint("SET GLOBAL binlog_row_value_options = ''")),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::{CopyJob, CopyLink, names};
    use crate::schema::TableRef;
    use tokio::sync::mpsc;

    fn job(name: &str) -> CopyJob {
        CopyJob { table: TableRef::new("db", name), after: None, keys: None }
    }

    /// A resync of more tables than the copy queue holds: every copy starts in turn (they
    /// waited for the next restart before).
    #[tokio::test]
    async fn copies_beyond_the_queue_wait_their_turn_in_order() {
        let (_control, mut inbox) = crate::source::control::control();
        let (jobs, mut rx) = mpsc::channel(2);
        let (_offers_tx, offers) = mpsc::channel(1);
        let mut link = CopyLink::new(jobs.clone(), offers, &mut inbox);
        for name in ["a", "b", "c", "d"] {
            link.send(job(name));
        }
        assert_eq!(link.waiting.iter().map(|j| j.table.name.as_str()).collect::<Vec<_>>(), ["c", "d"]);
        let mut copied = Vec::new();
        while let Ok(j) = rx.try_recv() {
            copied.push(j.table.name);
        }
        assert_eq!(copied, ["a", "b"]);
        while !link.waiting.is_empty() {
            link.release_waiting(jobs.reserve().await);
            copied.push(rx.recv().await.expect("a job").table.name);
        }
        assert_eq!(copied, ["a", "b", "c", "d"]);
        // The copier ended: nothing waits for a queue nobody reads.
        link.send(job("e"));
        link.send(job("f"));
        link.send(job("g"));
        drop(rx);
        link.release_waiting(jobs.reserve().await);
        assert!(link.waiting.is_empty());
        link.send(job("h"));
        assert!(link.waiting.is_empty());
    }

    #[test]
    fn a_statement_names_a_table_only_as_a_whole_identifier() {
        assert!(names("alter table `shop`.`big` add c int", "big"));
        assert!(names("alter table big modify v int", "big"));
        assert!(!names("create table other (id bigint)", "big"));
        assert!(!names("alter table big_old add c int", "big"));
        assert!(names("rename table big to big2", "big"));
    }
}
