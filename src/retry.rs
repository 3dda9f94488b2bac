//! The one retry policy: exponential backoff with jitter for transient
//! errors, immediate stop for definite ones.
//!
//! Components do not retry on their own; they return an [`Error`] and the
//! supervising loop (source or writer) calls [`Backoff::next_delay`], logs the
//! delay with the error so the operator sees why binferry is waiting, and
//! starts over from its last durable checkpoint.

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use tracing::warn;

use crate::error::{Error, Result};
use crate::shutdown::Shutdown;
use crate::telemetry::Stats;

/// First delay after a transient failure.
pub const DEFAULT_MIN_DELAY: Duration = Duration::from_millis(200);
/// Ceiling of the delay between attempts.
pub const DEFAULT_MAX_DELAY: Duration = Duration::from_secs(30);

/// Backoff state for one supervised loop; reset after a success.
pub struct Backoff {
    builder: ExponentialBuilder,
    current: backon::ExponentialBackoff,
    attempts: u32,
}

impl Default for Backoff {
    fn default() -> Self {
        Self::new(DEFAULT_MIN_DELAY, DEFAULT_MAX_DELAY)
    }
}

impl Backoff {
    /// Exponential backoff (factor 2, full jitter) between `min` and `max`, without a retry limit:
    /// a replication service waits for its servers rather than giving up.
    pub fn new(min: Duration, max: Duration) -> Self {
        let builder = ExponentialBuilder::default()
            .with_min_delay(min)
            .with_max_delay(max)
            .with_factor(2.0)
            .with_jitter()
            .without_max_times();
        Backoff { current: builder.build(), builder, attempts: 0 }
    }

    /// The delay before the next attempt after `err`, or `None` when `err` is definite.
    pub fn next_delay(&mut self, err: &Error) -> Option<Duration> {
        if !err.is_transient() {
            return None;
        }
        self.attempts += 1;
        Some(self.current.next().unwrap_or(DEFAULT_MAX_DELAY))
    }

    /// How many transient failures in a row.
    pub fn attempts(&self) -> u32 {
        self.attempts
    }

    /// After a failed attempt of a source's supervised loop: a definite `err` comes back;
    /// a transient one is counted as a source retry, logged with the delay and the place
    /// the loop starts again from (`from`), and waited out. Returns false when `shutdown`
    /// came during the wait (the loop then ends without error).
    pub async fn pause_source(&mut self, err: Error, from: &str, stats: &Stats, shutdown: &Shutdown) -> Result<bool> {
        let Some(delay) = self.next_delay(&err) else { return Err(err) };
        warn!(error = %err, attempt = self.attempts, from, "source failed; retrying in {:.1}s", delay.as_secs_f64());
        stats.record_source_retry(&err.to_string());
        tokio::select! {
            _ = tokio::time::sleep(delay) => Ok(true),
            _ = shutdown.triggered() => Ok(false),
        }
    }

    /// Forget earlier failures after progress was made.
    pub fn reset(&mut self) {
        if self.attempts > 0 {
            self.current = self.builder.build();
            self.attempts = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;

    #[test]
    fn definite_errors_are_not_retried() {
        let mut b = Backoff::default();
        assert!(b.next_delay(&Error::new(ErrorKind::BinlogPurged, "x")).is_none());
        assert_eq!(b.attempts(), 0);
    }

    #[test]
    fn transient_errors_back_off_up_to_the_ceiling() {
        let mut b = Backoff::new(Duration::from_millis(10), Duration::from_millis(100));
        let e = Error::new(ErrorKind::TargetUnavailable, "down");
        for _ in 0..20 {
            let d = b.next_delay(&e).expect("transient");
            assert!(d <= Duration::from_millis(200), "{d:?}");
        }
        assert_eq!(b.attempts(), 20);
        b.reset();
        assert_eq!(b.attempts(), 0);
    }
}
