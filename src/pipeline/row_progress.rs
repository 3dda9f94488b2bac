//! Progress of a command that works through rows (`resync`, `verify`): a bar with rows, rate
//! and ETA on a terminal, a log line every [`LOG_EVERY`] otherwise.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use mysql_async::prelude::Queryable;
use tracing::info;

use crate::config::Config;
use crate::error::{Error, Result};
use crate::source::SourceSettings;

/// How often a line is logged when the output is not a terminal.
const LOG_EVERY: Duration = Duration::from_secs(10);

/// Rows done out of an estimate.
pub(super) struct RowProgress {
    what: String,
    estimate: u64,
    rows: u64,
    bar: Option<ProgressBar>,
    started: Instant,
    logged: Instant,
}

impl RowProgress {
    /// Start showing `what`, out of about `estimate` rows (the source's estimate; 0: unknown).
    pub(super) fn new(what: String, estimate: u64) -> Self {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = ProgressBar::new(estimate.max(1));
            bar.set_style(
                ProgressStyle::with_template("{msg} [{bar:30}] {human_pos}/{human_len} rows, {per_sec}, ETA {eta}")
                    .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
            bar.set_message(what.clone());
            bar
        });
        RowProgress { what, estimate, rows: 0, bar, started: Instant::now(), logged: Instant::now() }
    }

    /// `rows` are done in all.
    pub(super) fn set(&mut self, rows: u64) {
        self.rows = rows;
        match &self.bar {
            Some(bar) => {
                bar.set_length(self.estimate.max(rows));
                bar.set_position(rows);
            }
            None if self.logged.elapsed() >= LOG_EVERY => {
                self.logged = Instant::now();
                let rate = rows as f64 / self.started.elapsed().as_secs_f64().max(0.001);
                info!(what = %self.what, rows, estimate = self.estimate, rows_per_s = format!("{rate:.0}"), "progress");
            }
            None => {}
        }
    }

    /// `rows` more are done.
    pub(super) fn add(&mut self, rows: u64) {
        self.set(self.rows + rows);
    }

    /// Rows done so far.
    pub(super) fn rows(&self) -> u64 {
        self.rows
    }

    /// Clear the bar.
    pub(super) fn finish(self) {
        if let Some(bar) = self.bar {
            bar.finish_and_clear();
        }
    }
}

/// The source's estimate of the tables' rows (`information_schema.TABLES.TABLE_ROWS`), for
/// the ETA.
pub(super) async fn estimate_rows(config: &Config, tables: &[String]) -> Result<u64> {
    let source = SourceSettings::from_config(config)?;
    let mut conn = source.connect().await?;
    let mut total = 0;
    for t in tables {
        let Some((db, name)) = t.split_once('.') else { continue };
        let n: Option<Option<u64>> = conn
            .exec_first(
                "SELECT TABLE_ROWS FROM information_schema.TABLES WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ?",
                (db, name),
            )
            .await
            .map_err(|e| Error::source_mysql(e, "estimating table sizes"))?;
        total += n.flatten().unwrap_or(0);
    }
    Ok(total)
}
