//! Wiring: source task → buffer → writer task → sink, with supervision and shutdown.
//!
//! Shutdown is ordered so that nothing is lost and the next start has no gap:
//! on SIGINT/SIGTERM the source appends what it has read (checkpoint at the
//! last complete transaction) and stops; then the writer applies everything
//! the buffer holds up to the last complete transaction, commits, and stops.

mod replay;
mod stats;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::sync::watch;
use tracing::{error, info};

pub use replay::{ReplayFrom, ReplaySummary, replay};
pub use stats::Stats;

use crate::buffer::Buffer;
use crate::buffer::embedded::{EmbeddedBuffer, Retention};
use crate::config::Config;
use crate::error::{Error, ErrorKind, Result};
use crate::metrics;
use crate::sink::mysql::{MysqlSink, MysqlSinkSettings};
use crate::source::SourceSettings;
use crate::writer::{self, WriterSettings};

/// How often retention runs on the embedded buffer.
const RETENTION_INTERVAL: Duration = Duration::from_secs(60);

/// Run the pipeline described by `config` until `shutdown` turns true.
pub async fn run(config: &Config, shutdown: watch::Receiver<bool>) -> Result<()> {
    let source = SourceSettings::from_config(config)?;
    let sink = MysqlSink::new(MysqlSinkSettings::from_config(config)?);
    let buffer = Arc::new(open_buffer(config)?);
    info!(
        pipeline = %config.pipeline.name,
        buffer = %config.buffer.embedded.path.display(),
        next_offset = buffer.next_offset(),
        "pipeline starting"
    );

    let stats = Arc::new(Stats::default());
    let (drain_tx, drain_rx) = watch::channel(false);
    let (fail_tx, mut fail_rx) = watch::channel(false);

    // A failing task stops the other one through the same path as a signal.
    let source_shutdown = {
        let (tx, rx) = watch::channel(false);
        let mut sig = shutdown.clone();
        let mut fail = fail_rx.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = raised(&mut sig) => {}
                _ = raised(&mut fail) => {}
            }
            let _ = tx.send(true);
        });
        rx
    };
    let source_task =
        tokio::spawn(crate::source::run(source, Arc::clone(&buffer), Arc::clone(&stats), source_shutdown));
    let writer_task = tokio::spawn(writer::run(
        WriterSettings::from(&config.writer),
        Arc::clone(&buffer),
        sink,
        Arc::clone(&stats),
        drain_rx,
    ));
    let progress = tokio::spawn(progress_loop(
        Arc::clone(&buffer),
        Arc::clone(&stats),
        Duration::from_secs(config.log.progress_interval_secs),
    ));

    let mut source_task = source_task;
    let mut writer_task = writer_task;
    let mut retention = tokio::time::interval(RETENTION_INTERVAL);
    retention.tick().await;
    let mut source_result: Option<Result<()>> = None;
    let mut writer_result: Option<Result<()>> = None;
    while source_result.is_none() || writer_result.is_none() {
        tokio::select! {
            r = &mut source_task, if source_result.is_none() => {
                let r = joined(r, "source");
                if let Err(e) = &r {
                    error!(error = %e, "source stopped");
                    let _ = fail_tx.send(true);
                }
                // The source is done (shutdown or failure): let the writer drain and stop.
                let _ = drain_tx.send(true);
                source_result = Some(r);
            }
            r = &mut writer_task, if writer_result.is_none() => {
                let r = joined(r, "writer");
                if let Err(e) = &r {
                    error!(error = %e, "writer stopped");
                }
                let _ = fail_tx.send(true);
                writer_result = Some(r);
            }
            _ = retention.tick() => {
                if let Err(e) = buffer.enforce_retention().await {
                    error!(error = %e, "buffer retention failed");
                }
            }
            _ = fail_rx.changed() => {}
        }
    }
    progress.abort();
    log_progress(buffer.as_ref(), &stats, None);
    writer_result.unwrap_or(Ok(()))?;
    source_result.unwrap_or(Ok(()))?;
    info!("pipeline stopped cleanly");
    Ok(())
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

async fn progress_loop<B: Buffer>(buffer: Arc<B>, stats: Arc<Stats>, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.tick().await;
    let mut last = (0u64, 0u64, std::time::Instant::now());
    loop {
        tick.tick().await;
        log_progress(buffer.as_ref(), &stats, Some(&mut last));
    }
}

fn log_progress<B: Buffer>(buffer: &B, stats: &Stats, last: Option<&mut (u64, u64, std::time::Instant)>) {
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
    let next = buffer.next_offset();
    let applied = stats.writer_next_offset.load(Ordering::Relaxed);
    let lag = stats.lag_seconds(next);
    ::metrics::gauge!(metrics::REPLICATION_LAG_SECONDS).set(lag);
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
        buffer_pending = next.saturating_sub(applied),
        source_paused = stats.source_paused.load(Ordering::Relaxed),
        lag_seconds = lag,
        "progress"
    );
}

/// Resolves once `flag` is true (or its sender is gone). The guard `wait_for` returns is
/// dropped here, so callers can hold this future across awaits in `Send` tasks.
pub(crate) async fn raised(flag: &mut watch::Receiver<bool>) {
    let _ = flag.wait_for(|s| *s).await;
}
