//! Wiring: source task → buffer → writer task → sink, with supervision and shutdown.
//!
//! Shutdown is ordered so that nothing is lost and the next start has no gap:
//! on SIGINT/SIGTERM the source appends what it has read (checkpoint at the
//! last complete transaction) and stops; then the writer applies everything
//! the buffer holds up to the last complete transaction, commits, and stops.

mod http;
mod process;
mod replay;
mod resync;
mod retention;
mod row_progress;
mod runs;
mod status;
mod verify;
mod workers;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tracing::{error, info, warn};

pub use replay::{ReplayFrom, ReplaySummary, replay};
pub use resync::{ResyncSummary, resync};
pub use status::status;
pub use verify::{TableVerdict, VerifyReport, verify};

use crate::buffer::Journal;
use crate::buffer::embedded::{EmbeddedBuffer, Retention};
use crate::buffer::kafka::KafkaSettings;
use crate::buffer::kafka::journal::KafkaJournal;
use crate::config::{BufferKind, Config, SourceKind};
use crate::error::{Error, ErrorKind, Result};
use crate::shutdown::Shutdown;
use crate::sink::TargetSettings;
use crate::source::SourceSettings;
use crate::source::bigquery::BigQuerySourceSettings;
use crate::table_filter::TableFilter;
use crate::telemetry::Stats;
use crate::writer::{self, WriterSettings};

/// How often retention runs on the embedded buffer.
const RETENTION_INTERVAL: Duration = Duration::from_secs(60);

/// Which parts of the pipeline a process runs. With the embedded buffer both always run in
/// one process; with Kafka, readers and sink workers may run on different machines.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Role {
    /// The binlog reader and a sink worker.
    #[default]
    All,
    /// Only the binlog reader (publishes to Kafka).
    Reader,
    /// Only a sink worker (a member of the consumer group).
    Worker,
}

impl Role {
    fn reads(self) -> bool {
        self != Role::Worker
    }
    fn writes(self) -> bool {
        self != Role::Reader
    }
}

type Task = tokio::task::JoinHandle<Result<()>>;

/// Run the pipeline described by `config` until `shutdown` is triggered, recorded in the
/// target's run registry.
pub async fn run(config: &Config, role: Role, shutdown: Shutdown) -> Result<()> {
    let stats = Arc::new(Stats::default());
    let target = TargetSettings::from_config(config)?;
    let kind = match role {
        Role::All => "run",
        Role::Reader => "run --role reader",
        Role::Worker => "run --role worker",
    };
    let record = runs::RunRecord::start(&target, kind).await;
    let observers_stop = Shutdown::new();
    let alerter = crate::alerts::Alerter::start(config, Arc::clone(&stats), observers_stop.clone())?;
    if role.reads() && config.source.kind == SourceKind::Mysql {
        tokio::spawn(retention::watch(
            SourceSettings::from_config(config)?,
            Arc::clone(&stats),
            observers_stop.clone(),
        ));
    }
    let result = run_pipeline(config, role, shutdown, target.clone(), Arc::clone(&stats)).await;
    observers_stop.trigger();
    if let (Some(alerter), Err(e)) = (&alerter, &result) {
        alerter.pipeline_stopped(&e.to_string()).await;
    }
    record.finish(result.as_ref().err(), stats.writer_rows.load(Ordering::Relaxed)).await;
    result
}

/// Long because it only wires: it opens the buffer, starts each role's task with its child
/// shutdown token, and supervises them; it holds no decision of its own.
async fn run_pipeline(
    config: &Config,
    role: Role,
    shutdown: Shutdown,
    target: TargetSettings,
    stats: Arc<Stats>,
) -> Result<()> {
    // The writer drains once the source has stopped, never on the signal itself: what the
    // source appended last is applied before binferry exits.
    let drain = Shutdown::new();
    // A failing task stops the source the same way a signal does.
    let fail = shutdown.child();
    let source_shutdown = fail.clone();
    let sink_settings = target.with_stats(Arc::clone(&stats));
    let listener = match config.http.address()? {
        Some(addr) => Some(http::bind(addr).await?),
        None => None,
    };
    // `POST /resync` reaches the source through this; without an endpoint nobody can ask.
    let (control, inbox) = crate::source::control();
    // What differs per buffer: the two tasks, what retention runs on, and the backlog offset.
    let (source, writer, retention_of, backlog): (Option<Task>, Option<Task>, _, Backlog) = match config.buffer.kind {
        BufferKind::Embedded => {
            if role != Role::All {
                return Err(Error::new(
                    ErrorKind::Config,
                    format!("--role {role:?}: only the Kafka buffer splits readers and sink workers"),
                )
                .with_hint("run without --role, or set buffer.kind = \"kafka\""));
            }
            let buffer = Arc::new(open_buffer(config)?);
            info!(
                pipeline = %config.pipeline.name,
                buffer = %config.buffer.embedded.path.display(),
                next_offset = buffer.next_offset(),
                "pipeline starting"
            );
            let source_task = spawn_source(config, Arc::clone(&buffer), Arc::clone(&stats), source_shutdown, inbox)?;
            let writer_task = tokio::spawn(writer::run(
                writer_settings(config)?,
                Arc::clone(&buffer),
                sink_settings.sink(),
                Arc::clone(&stats),
                drain.clone(),
            ));
            let b = Arc::clone(&buffer);
            (Some(source_task), Some(writer_task), Some(buffer), Arc::new(move || Some(b.next_offset())))
        }
        BufferKind::Kafka => {
            let kafka = KafkaSettings::from_config(config)?;
            info!(pipeline = %config.pipeline.name, brokers = %kafka.brokers(), topic_prefix = %kafka.topics.prefix,
                layout = ?kafka.layout, ?role, "pipeline starting");
            let source_task = match role.reads() {
                true => {
                    let journal = Arc::new(KafkaJournal::new(kafka.clone())?.with_stats(Arc::clone(&stats)));
                    Some(spawn_source(config, journal, Arc::clone(&stats), source_shutdown, inbox)?)
                }
                false => None,
            };
            let writer_task = match role.writes() {
                true => {
                    let ws = writer_settings(config)?;
                    let make_sink = move |stream: &str| sink_settings.for_stream(stream).sink();
                    Some(tokio::spawn(workers::run(kafka, ws, make_sink, Arc::clone(&stats), drain.clone())))
                }
                false => None,
            };
            // Partitions have offsets of their own: there is no single backlog offset.
            (source_task, writer_task, None, Arc::new(|| None))
        }
    };
    let http_stop = Shutdown::new();
    let http = match listener {
        Some(listener) => {
            let endpoint = http::Endpoint {
                pipeline: config.pipeline.name.clone(),
                stats: Arc::clone(&stats),
                metrics: http::prometheus()?,
                ready_max_lag: Duration::from_secs(config.http.ready_max_lag_secs),
                backlog: Arc::clone(&backlog),
                token: config.http.token()?,
                reads: role.reads(),
                control: role.reads().then_some(control),
            };
            Some(http::serve(listener, endpoint, http_stop.clone()))
        }
        None => None,
    };
    let progress = tokio::spawn(progress_loop(
        Arc::clone(&backlog),
        Arc::clone(&stats),
        Duration::from_secs(config.log.progress_interval_secs),
    ));
    let tasks = Tasks { source, writer, drain_now: drain, fail };
    let drain = Drain { timeout: Duration::from_secs(config.pipeline.drain_timeout_secs), stats: Arc::clone(&stats) };
    let result = supervise(tasks, shutdown, retention_of, drain).await;
    progress.abort();
    http_stop.trigger();
    if let Some(http) = http {
        let _ = http.await;
    }
    log_progress(backlog.as_ref(), &stats, None);
    result
}

/// Start the source `source.kind` names, appending to `journal`.
fn spawn_source<B: Journal>(
    config: &Config,
    journal: Arc<B>,
    stats: Arc<Stats>,
    shutdown: Shutdown,
    inbox: crate::source::Inbox,
) -> Result<Task> {
    Ok(match config.source.kind {
        SourceKind::Mysql => {
            let source = SourceSettings::from_config(config)?;
            tokio::spawn(crate::source::run(source, journal, stats, shutdown, inbox))
        }
        SourceKind::Bigquery => {
            let source = BigQuerySourceSettings::from_config(config)?;
            tokio::spawn(crate::source::bigquery::run(source, journal, stats, shutdown, inbox))
        }
    })
}

/// The buffer's end offset, when the buffer is one stream (the embedded log).
type Backlog = Arc<dyn Fn() -> Option<u64> + Send + Sync>;

/// How long the writer may drain at shutdown, and what it reports meanwhile.
struct Drain {
    timeout: Duration,
    stats: Arc<Stats>,
}

/// How often a draining writer says what it is waiting for.
const DRAIN_REPORT: Duration = Duration::from_secs(10);

struct Tasks {
    source: Option<Task>,
    writer: Option<Task>,
    /// Triggered when the writer should apply what the buffer holds and stop.
    drain_now: Shutdown,
    /// Triggered when a task failed (and on the signal): stops the source.
    fail: Shutdown,
}

/// Wait for both tasks. A failing task stops the other one through the same path as a
/// signal; the writer drains once the source is done (or, without a source, on the signal).
async fn supervise(
    t: Tasks,
    shutdown: Shutdown,
    retention_of: Option<Arc<EmbeddedBuffer>>,
    drain: Drain,
) -> Result<()> {
    let Tasks { source, writer, drain_now, fail } = t;
    let mut source_result: Option<Result<()>> = if source.is_none() { Some(Ok(())) } else { None };
    let mut writer_result: Option<Result<()>> = if writer.is_none() { Some(Ok(())) } else { None };
    let mut source_task = source.unwrap_or_else(|| tokio::spawn(async { Ok(()) }));
    let mut writer_task = writer.unwrap_or_else(|| tokio::spawn(async { Ok(()) }));
    let no_source = source_result.is_some();
    let mut retention = tokio::time::interval(RETENTION_INTERVAL);
    retention.tick().await;
    let mut drain_until: Option<tokio::time::Instant> = None;
    let mut drain_report = tokio::time::interval(DRAIN_REPORT);
    let mut cut_short = false;
    while source_result.is_none() || writer_result.is_none() {
        if drain_now.is_triggered() && drain_until.is_none() {
            drain_until = Some(tokio::time::Instant::now() + drain.timeout);
            drain_report.reset();
        }
        let draining = drain_until.is_some() && writer_result.is_none();
        tokio::select! {
            _ = drain_report.tick(), if draining => {
                info!(
                    waiting_for = %drain.stats.writer_activity(),
                    next_offset = drain.stats.writer_next_offset.load(Ordering::Relaxed),
                    "draining: the writer applies what the buffer holds before binferry stops"
                );
            }
            _ = tokio::time::sleep_until(drain_until.unwrap_or_else(tokio::time::Instant::now)), if draining => {
                warn!(
                    timeout_s = drain.timeout.as_secs(),
                    waiting_for = %drain.stats.writer_activity(),
                    "the writer did not finish draining in time (pipeline.drain_timeout_secs); stopping without it: \
                     nothing is lost, the next run applies the rest from the target's checkpoint"
                );
                writer_task.abort();
                let _ = (&mut writer_task).await;
                writer_result = Some(Ok(()));
                cut_short = true;
            }
            r = &mut source_task, if source_result.is_none() => {
                let r = joined(r, "source");
                if let Err(e) = &r {
                    error!(error = %e, "source stopped");
                    fail.trigger();
                }
                // The source is done (shutdown or failure): let the writer drain and stop.
                drain_now.trigger();
                source_result = Some(r);
            }
            r = &mut writer_task, if writer_result.is_none() => {
                let r = joined(r, "writer");
                if let Err(e) = &r {
                    error!(error = %e, "writer stopped");
                }
                fail.trigger();
                writer_result = Some(r);
            }
            _ = retention.tick(), if retention_of.is_some() => {
                if let Some(b) = &retention_of
                    && let Err(e) = b.enforce_retention().await
                {
                    error!(error = %e, "buffer retention failed");
                }
            }
            _ = shutdown.triggered(), if no_source && !drain_now.is_triggered() => drain_now.trigger(),
        }
    }
    writer_result.unwrap_or(Ok(()))?;
    source_result.unwrap_or(Ok(()))?;
    if !cut_short {
        info!("pipeline stopped cleanly");
    }
    Ok(())
}

/// The writer's settings: batching, and the tables the configuration selects (records of a
/// table excluded since they were buffered are passed over).
pub(crate) fn writer_settings(config: &Config) -> Result<WriterSettings> {
    let mut ws = WriterSettings::from(&config.writer);
    ws.tables = Some(TableFilter::new(&config.source.include, &config.source.exclude)?);
    Ok(ws)
}

/// Open the configured embedded buffer.
pub(crate) fn open_buffer(config: &Config) -> Result<EmbeddedBuffer> {
    let e = &config.buffer.embedded;
    EmbeddedBuffer::open(
        &e.path,
        Retention { max_bytes: e.retention_max_bytes, max_age: Duration::from_secs(e.retention_max_age_secs) },
    )
}

fn joined(r: std::result::Result<Result<()>, tokio::task::JoinError>, what: &str) -> Result<()> {
    r.map_err(|e| Error::new(ErrorKind::Internal, format!("{what} task panicked: {e}")))?
}

async fn progress_loop(backlog: Backlog, stats: Arc<Stats>, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.tick().await;
    let mut last = (0u64, 0u64, std::time::Instant::now());
    loop {
        tick.tick().await;
        log_progress(backlog.as_ref(), &stats, Some(&mut last));
    }
}

/// One progress line. `backlog` gives the buffer's end offset when the buffer is one stream.
fn log_progress(backlog: &dyn Fn() -> Option<u64>, stats: &Stats, last: Option<&mut (u64, u64, std::time::Instant)>) {
    let events = stats.source_events.load(Ordering::Relaxed);
    let rows = stats.writer_rows.load(Ordering::Relaxed);
    let (src_rate, dst_rate) = match last {
        Some(l) => {
            let secs = l.2.elapsed().as_secs_f64().max(0.001);
            let r = ((events - l.0) as f64 / secs, (rows - l.1) as f64 / secs);
            *l = (events, rows, std::time::Instant::now());
            r
        }
        None => (0.0, 0.0),
    };
    let end = backlog();
    let lag = stats.record_lag(end);
    info!(
        source_position = %stats.source_position().map(|p| p.to_string()).unwrap_or_else(|| "-".into()),
        source_events = events,
        source_transactions = stats.source_txns.load(Ordering::Relaxed),
        source_events_per_s = format!("{src_rate:.0}"),
        snapshot_rows = stats.snapshot_rows.load(Ordering::Relaxed),
        target_rows_written = rows,
        target_rows_unchanged = stats.writer_unchanged.load(Ordering::Relaxed),
        target_rows_stale = stats.writer_stale.load(Ordering::Relaxed),
        rows_compacted = stats.writer_compacted.load(Ordering::Relaxed),
        source_updates_dropped = stats.source_unchanged.load(Ordering::Relaxed),
        skipped_stopped_tables = stats.writer_skipped_stopped.load(Ordering::Relaxed),
        target_rows_per_s = format!("{dst_rate:.0}"),
        target_commits = stats.writer_commits.load(Ordering::Relaxed),
        bigquery_jobs = stats.bigquery_jobs.load(Ordering::Relaxed),
        bigquery_merges = stats.bigquery_merges.load(Ordering::Relaxed),
        buffer_pending = %stats.pending(end).map(|n| n.to_string()).unwrap_or_else(|| "-".into()),
        source_paused = stats.source_paused.load(Ordering::Relaxed),
        lag_seconds = lag,
        "progress"
    );
}
