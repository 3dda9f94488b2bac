//! `binferry replay`: re-apply the buffer from a stored offset.
//!
//! Replay runs the ordinary writer from the chosen offset to the end of the
//! buffer. Because the sink applies a change only when it is at least as new as
//! the target row (and never when a tombstone is newer), replaying any range
//! any number of times leaves a correct target identical, and it repairs rows
//! that were changed or deleted in the target by hand: those are rewritten to
//! the newest state the replayed range holds. The applied offset stored in the
//! target never moves backward.
//!
//! With the embedded buffer, replay runs while `binferry run` is stopped: the
//! file can be opened by one process at a time, so a running pipeline makes
//! replay refuse to start rather than race it. With Kafka, replay reads every
//! partition of the pipeline's topics up to its end at the start of the replay,
//! while sink workers may go on: both only ever move a row forward.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use tracing::info;

use super::open_buffer;
use crate::buffer::kafka::KafkaSettings;
use crate::buffer::kafka::admin::Admin;
use crate::buffer::kafka::partition::PartitionLog;
use crate::config::{BufferKind, Config};
use crate::error::{Error, ErrorKind, Result};
use crate::shutdown::Shutdown;
use crate::sink::TargetSettings;
use crate::table_filter::TableFilter;
use crate::telemetry::Stats;
use crate::writer;

/// Where a replay starts.
#[derive(Clone, Debug)]
pub enum ReplayFrom {
    /// A buffer offset.
    Offset(u64),
    /// The first record appended at or after this time (ms since the Unix epoch).
    Time(u64),
}

/// What a replay did.
#[derive(Clone, Debug, Default)]
pub struct ReplaySummary {
    /// First offset replayed.
    pub from: u64,
    /// One past the last offset replayed.
    pub to: u64,
    /// Rows written.
    pub written: u64,
    /// Changes whose rows were already up to date.
    pub unchanged: u64,
    /// Changes older than the target's rows.
    pub stale: u64,
}

/// Replay the buffer from `from` into the target, optionally only for `table` (`db.table`).
pub async fn replay(config: &Config, from: ReplayFrom, table: Option<&str>) -> Result<ReplaySummary> {
    let target = TargetSettings::from_config(config)?;
    let record = super::runs::RunRecord::start(&target, "replay").await;
    let result = match config.buffer.kind {
        BufferKind::Embedded => replay_embedded(config, from, table).await,
        BufferKind::Kafka => replay_kafka(config, from, table).await,
    };
    let rows = result.as_ref().map_or(0, |s| s.written);
    record.finish(result.as_ref().err(), rows).await;
    result
}

/// Kafka: every partition of the pipeline's data topics, from `from` (the same offset in each
/// partition, or each partition's first offset at the time) to its end when replay starts.
/// Sink workers may keep running meanwhile: both sides only ever move rows forward.
async fn replay_kafka(config: &Config, from: ReplayFrom, table: Option<&str>) -> Result<ReplaySummary> {
    let kafka = KafkaSettings::from_config(config)?;
    let admin = Admin::new(&kafka)?;
    let only = table.map(|t| TableFilter::only("--table", &[t.to_string()])).transpose()?;
    let sink_settings = TargetSettings::from_config(config)?;
    let stats = Arc::new(Stats::default());
    let mut summary = ReplaySummary { from: u64::MAX, ..Default::default() };
    for (topic, partition, low, high) in admin.data_partitions().await? {
        let start = match from {
            ReplayFrom::Offset(o) => o,
            ReplayFrom::Time(ms) => admin.offset_at_time(&topic, partition, ms).await?,
        };
        if start < low {
            return Err(Error::new(
                ErrorKind::Buffer,
                format!("{topic}/{partition}: offset {start} is no longer retained: the oldest is {low}"),
            )
            .with_hint(format!("replay from offset {low} or later, or keep the topic longer (retention.ms)")));
        }
        if start >= high {
            continue;
        }
        info!(%topic, partition, from = start, to = high, table = table.unwrap_or("all"), "replaying partition");
        let log = PartitionLog::open_until(&kafka, &topic, partition, high)?;
        let sink = sink_settings.for_stream(log.stream()).replay_sink(&log.stream());
        let mut settings = super::writer_settings(config)?;
        settings.start_at = Some(start);
        settings.only = only.clone();
        let drain = Shutdown::triggered_now();
        writer::run(settings, Arc::new(log), sink, Arc::clone(&stats), drain).await?;
        summary.from = summary.from.min(start);
        summary.to = summary.to.max(high);
    }
    if summary.from == u64::MAX {
        summary.from = summary.to;
    }
    summary.written = stats.writer_rows.load(Ordering::Relaxed);
    summary.unchanged = stats.writer_unchanged.load(Ordering::Relaxed);
    summary.stale = stats.writer_stale.load(Ordering::Relaxed);
    info!(?summary, "replay finished");
    Ok(summary)
}

async fn replay_embedded(config: &Config, from: ReplayFrom, table: Option<&str>) -> Result<ReplaySummary> {
    let buffer = Arc::new(open_buffer(config)?);
    let first = buffer.first_offset().await?.unwrap_or(buffer.next_offset());
    let start = match from {
        ReplayFrom::Offset(o) => o,
        ReplayFrom::Time(ms) => buffer.offset_at_time(ms).await?,
    };
    if start < first {
        return Err(Error::new(
            ErrorKind::Buffer,
            format!("offset {start} is no longer retained: the oldest record in the buffer is {first}"),
        )
        .with_hint(format!("replay from offset {first} or later, or raise buffer.embedded.retention_*")));
    }
    let end = buffer.next_offset();
    let only = table.map(|t| TableFilter::only("--table", &[t.to_string()])).transpose()?;
    let mut settings = super::writer_settings(config)?;
    settings.start_at = Some(start);
    settings.only = only;
    let sink = TargetSettings::from_config(config)?.replay_sink("embedded");
    info!(from = start, to = end, table = table.unwrap_or("all"), "replay started");
    let stats = Arc::new(Stats::default());
    // Drain from the start: the writer stops at the end of the buffer.
    let drain = Shutdown::triggered_now();
    writer::run(settings, Arc::clone(&buffer), sink, Arc::clone(&stats), drain).await?;
    let summary = ReplaySummary {
        from: start,
        to: end,
        written: stats.writer_rows.load(Ordering::Relaxed),
        unchanged: stats.writer_unchanged.load(Ordering::Relaxed),
        stale: stats.writer_stale.load(Ordering::Relaxed),
    };
    info!(?summary, "replay finished");
    Ok(summary)
}
