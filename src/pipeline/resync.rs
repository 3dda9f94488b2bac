//! `binferry resync`: ask the running pipeline to copy tables again, online, and follow the
//! copy until it is in the buffer.
//!
//! The request goes to the running process's operations endpoint (`POST /resync`), because
//! the reader owns the checkpoint the copy is recorded in (see `source::control`); the
//! answer comes once the request is durable, so a crash after it still resyncs. The other
//! tables keep streaming, and the target table stays readable throughout: rows are
//! corrected in place, and rows the source no longer has are removed when its last chunk is
//! in (see `source::chunks`).

use std::time::Duration;

use serde::Deserialize;
use tracing::info;

use super::row_progress::RowProgress;
use crate::config::Config;
use crate::error::{Error, ErrorKind, Result};
use crate::sink::TargetSettings;
use crate::source::Resynced;
use crate::table_filter::TableFilter;
use crate::telemetry::CopyProgress;

/// How often the copy's progress is read.
const POLL: Duration = Duration::from_millis(500);
/// How long to wait for the writer to apply the copy once it is in the buffer.
const APPLY_WAIT: Duration = Duration::from_secs(600);

/// What `resync` did.
#[derive(Debug, Default, serde::Serialize)]
pub struct ResyncSummary {
    /// Tables whose copy started, and those that were already being copied.
    pub requested: Resynced,
    /// Rows copied (when it waited).
    pub rows: u64,
    /// Whether it waited for the copies to reach the buffer.
    pub waited: bool,
}

/// Ask the running pipeline to resync the tables `patterns` match; with `wait`, follow the
/// copies until their last chunk is in the buffer.
pub async fn resync(config: &Config, patterns: &[String], wait: bool) -> Result<ResyncSummary> {
    // Checked here, so that a bad pattern is reported as the option the user typed.
    TableFilter::only("--table", patterns)?;
    let target = TargetSettings::from_config(config)?;
    let requested = request(config, patterns).await?;
    let record = super::runs::RunRecord::start(&target, "resync").await;
    for t in &requested.started {
        info!(table = %t, "resync started");
    }
    for t in &requested.already {
        info!(table = %t, "already being copied; its copy goes on");
    }
    let mut summary = ResyncSummary { requested, rows: 0, waited: wait };
    if wait {
        let tables: Vec<String> =
            summary.requested.started.iter().chain(&summary.requested.already).map(|t| t.key()).collect();
        match follow(config, &tables).await {
            Ok(rows) => summary.rows = rows,
            Err(e) => {
                record.finish(Some(&e), 0).await;
                return Err(e);
            }
        }
    }
    record.finish(None, summary.rows).await;
    Ok(summary)
}

/// `POST /resync` to the running process.
async fn request(config: &Config, patterns: &[String]) -> Result<Resynced> {
    super::process::post(config, "/resync", &serde_json::json!({ "tables": patterns })).await
}

/// What `/status` says about copies.
#[derive(Deserialize)]
struct Copies {
    #[serde(default)]
    copies: Vec<CopyProgress>,
}

/// Follow the copies of `tables` until none is left; returns the rows copied.
async fn follow(config: &Config, tables: &[String]) -> Result<u64> {
    let estimate = super::row_progress::estimate_rows(config, tables).await.unwrap_or(0);
    let mut progress = RowProgress::new(format!("resync {}", tables.join(", ")), estimate);
    loop {
        tokio::time::sleep(POLL).await;
        let status =
            super::status::process_status(config).await.map_err(|e| Error::new(ErrorKind::SourceUnavailable, e))?;
        let Some(status) = status else {
            return Err(Error::new(
                ErrorKind::SourceUnavailable,
                "the running binferry stopped answering during the resync",
            )
            .with_hint("the copy resumes where it was when `binferry run` starts again; `binferry status` shows it"));
        };
        let copies: Copies = serde_json::from_value(status).map_err(|e| {
            Error::new(ErrorKind::Internal, format!("the running binferry's /status is unreadable: {e}"))
        })?;
        let mine: Vec<&CopyProgress> = copies.copies.iter().filter(|c| tables.contains(&c.table)).collect();
        if mine.is_empty() {
            break;
        }
        progress.set(progress.rows().max(mine.iter().map(|c| c.rows).sum()));
    }
    let rows = progress.rows();
    progress.finish();
    // The last chunk is in the buffer; the resync is done once the writer has applied it.
    if !super::process::caught_up(config, APPLY_WAIT).await {
        return Err(Error::new(
            ErrorKind::TargetUnavailable,
            format!("the copy is in the buffer, but the writer did not apply it within {APPLY_WAIT:?}"),
        )
        .with_hint("`binferry status` shows what the writer is doing; the resync completes on its own"));
    }
    Ok(rows)
}
