//! How long the binlog the reader still needs will stay on the source: measured every
//! minute into the telemetry, for the metric, `status` and the alert.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tracing::debug;

use crate::shutdown::Shutdown;
use crate::source::{SourceSettings, source_state};
use crate::telemetry::Stats;

/// How often the source's binlog list and retention are read.
const EVERY: Duration = Duration::from_secs(60);
/// How often before the first measurement (the reader has no position yet).
const FIRST: Duration = Duration::from_secs(2);

/// Measure until `stop`. The file the reader is in is the oldest it needs (the buffer holds
/// everything before); the time of the last event it read is when that file was written at
/// the latest, which makes the headroom a lower bound.
pub(super) async fn watch(settings: SourceSettings, stats: Arc<Stats>, stop: Shutdown) {
    let mut measured = false;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(if measured { EVERY } else { FIRST }) => {}
            _ = stop.triggered() => return,
        }
        let Some(position) = stats.source_position() else { continue };
        let read = stats.source_event_ts.load(Ordering::Relaxed);
        let read =
            if read > 0 { read } else { SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()) };
        match source_state(&settings, Some((&position.file, read))).await {
            Ok(state) => {
                stats.record_retention_headroom(state.retention_headroom_secs);
                measured = true;
            }
            // The reader reports an unreachable source itself; this is only a measurement.
            Err(e) => debug!(error = %e, "binlog retention not measured this time"),
        }
    }
}
