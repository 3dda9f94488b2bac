//! What `binferry status` shows: the facts gathered from the target's state tables, the
//! source and the running process, and how they read as one screen of text or as JSON.
//!
//! The gathering is I/O and lives with each end (`sink` reads its state tables, `source` its
//! binlog positions, `pipeline::status` asks the running process); this module only holds
//! the facts and renders them, so both renderings are tested without servers.

use serde::Serialize;

/// Everything `status` knows about one pipeline.
#[derive(Clone, Debug, Default, Serialize)]
pub struct StatusReport {
    /// `pipeline.name`.
    pub pipeline: String,
    /// What the pipeline is doing: the running process's state, else "stopped".
    pub state: String,
    /// Whether a running process answered on its operations endpoint.
    pub running: bool,
    /// The running process's `/status`, as it answered (lag, backlog, per-table lag).
    pub process: Option<serde_json::Value>,
    /// The target's durable state.
    pub target: TargetState,
    /// The source's binlog, compared with what the target has applied.
    pub source: Option<SourceState>,
    /// Problems met while gathering (a server that did not answer): shown, never fatal.
    pub errors: Vec<String>,
}

/// The target's durable state: how far each stream applied, stopped tables, recent runs.
#[derive(Clone, Debug, Default, Serialize)]
pub struct TargetState {
    /// Where it is (`MySQL 127.0.0.1:3306, database shop_copy`, `BigQuery project.dataset`).
    pub description: String,
    /// One entry per buffer stream (the embedded log, or a Kafka partition).
    pub streams: Vec<StreamState>,
    /// Tables that no longer replicate.
    pub stopped: Vec<StoppedTable>,
    /// Stopped tables a resync is rebuilding aside: readers still see the
    /// stale copy.
    pub rebuilding: Vec<RebuildingTable>,
    /// The latest runs, newest first.
    pub runs: Vec<RunRecord>,
}

/// How far one buffer stream is applied.
#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct StreamState {
    /// The stream (`embedded`, or `topic/partition`).
    pub stream: String,
    /// The last buffer offset committed to the target.
    pub applied_offset: u64,
    /// The source position that commit reflects (`file:offset`).
    pub source_position: String,
    /// When it was committed (UTC).
    pub updated_at: String,
    /// The same, in seconds since the epoch.
    pub updated_at_unix: u64,
}

/// A target table rebuilt aside by a resync.
#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct RebuildingTable {
    /// The target table.
    pub table: String,
    /// The table its rows are written to until the copy is complete.
    pub shadow: String,
    /// When the rebuild started (UTC).
    pub since: String,
}

/// A table that no longer replicates.
#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct StoppedTable {
    /// `db.table` in the source.
    pub table: String,
    /// Why, as recorded when it stopped.
    pub reason: String,
    /// When (UTC).
    pub since: String,
    /// What to do about it.
    pub fix: String,
}

impl StoppedTable {
    /// The operator's way out of a stopped table, the same for every reason: fix the cause,
    /// then resynchronise the table.
    pub fn fix_for(table: &str) -> String {
        format!(
            "fix the cause above, then bring {table} back: `binferry resync --table {table}` copies it again and \
             rebuilds its target table with the source's shape (a source that stopped it in this run needs a \
             restart first)"
        )
    }
}

/// One run of the pipeline, as the run registry (`_binferry_runs`) recorded it.
#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct RunRecord {
    /// `run`, `replay` (later `resync`, `verify`).
    pub kind: String,
    /// Start time (UTC).
    pub started_at: String,
    /// End time (UTC), `None` while running or when the process died without saying.
    pub ended_at: Option<String>,
    /// `running`, `ok`, `failed`, or `interrupted` (a process that died without a report).
    pub outcome: String,
    /// Rows written to the target by that run.
    pub rows: u64,
    /// The error that ended it, if any.
    pub error: Option<String>,
}

/// How a run ended, as the run registry records it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RunOutcome {
    /// Still going (or died so recently that no successor has looked yet).
    Running,
    /// Ended on request (SIGINT, SIGTERM) or completed.
    Ok,
    /// Ended by an error, recorded with it.
    Failed,
    /// The process ended without a report (SIGKILL, a crash), found by a later run.
    Interrupted,
    /// A verify that found the target different from the source.
    Drift,
}

impl RunOutcome {
    /// The outcome's name in `_binferry_runs`.
    pub fn as_str(self) -> &'static str {
        match self {
            RunOutcome::Running => "running",
            RunOutcome::Ok => "ok",
            RunOutcome::Failed => "failed",
            RunOutcome::Interrupted => "interrupted",
            RunOutcome::Drift => "drift",
        }
    }

    /// The error recorded for an interrupted run.
    pub const INTERRUPTED_WHY: &'static str = "the process ended without a report (killed or crashed)";
}

/// The source's binlog, and how long the binlog the target's position needs will last.
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct SourceState {
    /// `host:port (version)`.
    pub server: String,
    /// The source's current binlog end (`file:offset`).
    pub position: String,
    /// Binlog files on the source, oldest first.
    pub oldest_binlog: Option<String>,
    /// `binlog_expire_logs_seconds` (0: kept until purged by hand).
    pub retention_secs: u64,
    /// Whether the binlog file the target's position is in is still on the source.
    pub needed_binlog_present: Option<bool>,
    /// Seconds until the binlog the target's position needs may be purged (lower bound,
    /// from the time of the last applied change), `None` when retention is unlimited or
    /// nothing is applied yet.
    pub retention_headroom_secs: Option<u64>,
}

/// Seconds until a binlog written at `written_at` is purged under `retention_secs`
/// (`None` when retention is unlimited).
pub fn retention_headroom(retention_secs: u64, written_at: u64, now: u64) -> Option<u64> {
    (retention_secs > 0).then(|| (written_at + retention_secs).saturating_sub(now))
}

impl StatusReport {
    /// One screen for people.
    pub fn render_text(&self) -> String {
        let mut out = String::new();
        let mut line = |s: String| {
            out.push_str(&s);
            out.push('\n');
        };
        line(format!("pipeline {}: {}", self.pipeline, self.state));
        if let Some(p) = &self.process {
            let num = |k: &str| p.get(k).and_then(|v| v.as_f64());
            if let Some(lag) = num("lag_seconds") {
                line(format!("  lag: {lag:.0} s"));
            }
            if let Some(pending) = p.get("buffer_pending").and_then(|v| v.as_u64()) {
                line(format!("  buffer backlog: {pending} records"));
            }
            if let Some(why) = p.get("not_ready_because").and_then(|v| v.as_str()) {
                line(format!("  not ready: {why}"));
            }
        } else {
            line("  no running process answered (lag and backlog need one; the rest is from the servers)".into());
        }
        if let Some(s) = &self.source {
            line(format!("source {}", s.server));
            line(format!("  binlog end: {}", s.position));
            let retention =
                if s.retention_secs == 0 { "unlimited".to_string() } else { format!("{} h", s.retention_secs / 3600) };
            line(format!("  binlog retention: {retention}"));
            match (s.needed_binlog_present, s.retention_headroom_secs) {
                (Some(false), _) => line(
                    "  PROBLEM: the binlog the target's position needs is purged: a restart cannot resume; \
                     start over with a new snapshot"
                        .into(),
                ),
                (_, Some(h)) => line(format!("  retention headroom: {:.1} h", h as f64 / 3600.0)),
                _ => {}
            }
        }
        line(format!("target {}", self.target.description));
        if self.target.streams.is_empty() {
            line("  nothing applied yet".into());
        }
        for st in &self.target.streams {
            line(format!(
                "  stream {}: offset {} applied (source {}) at {}",
                st.stream, st.applied_offset, st.source_position, st.updated_at
            ));
        }
        if let Some(tables) = self.process.as_ref().and_then(|p| p.get("tables")).and_then(|t| t.as_array()) {
            for t in tables {
                let name = t.get("table").and_then(|v| v.as_str()).unwrap_or("?");
                let lag = t.get("lag_seconds").and_then(|v| v.as_f64()).unwrap_or(0.0);
                line(format!("  table {name}: lag {lag:.0} s"));
            }
        }
        if self.target.stopped.is_empty() {
            line("stopped tables: none".into());
        } else {
            line(format!("stopped tables: {}", self.target.stopped.len()));
            for t in &self.target.stopped {
                line(format!("  {} since {}: {}", t.table, t.since, t.reason));
                line(format!("    fix: {}", t.fix));
            }
        }
        for t in &self.target.rebuilding {
            line(format!(
                "rebuilding {} since {}: readers see its stale copy until the copy into {} is complete",
                t.table, t.since, t.shadow
            ));
        }
        if !self.target.runs.is_empty() {
            line("last runs:".into());
            for r in &self.target.runs {
                let ended = r.ended_at.as_deref().unwrap_or("-");
                let error = r.error.as_deref().map(|e| format!(": {e}")).unwrap_or_default();
                line(format!("  {} {} → {ended} {} ({} rows){error}", r.kind, r.started_at, r.outcome, r.rows));
            }
        }
        for e in &self.errors {
            line(format!("could not read: {e}"));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report() -> StatusReport {
        StatusReport {
            pipeline: "shop".into(),
            state: "streaming".into(),
            running: true,
            process: Some(serde_json::json!({
                "lag_seconds": 2.0, "buffer_pending": 17, "not_ready_because": null,
                "tables": [{"table": "shop.orders", "lag_seconds": 2.0}]
            })),
            target: TargetState {
                description: "MySQL 127.0.0.1:3306, database copy".into(),
                streams: vec![StreamState {
                    stream: "embedded".into(),
                    applied_offset: 41,
                    source_position: "binlog.000003:1200".into(),
                    updated_at: "2026-11-28 10:00:00".into(),
                    updated_at_unix: 1_795_860_000,
                }],
                stopped: vec![StoppedTable {
                    table: "shop.legacy".into(),
                    reason: "unsupported column type".into(),
                    since: "2026-11-28 09:00:00".into(),
                    fix: StoppedTable::fix_for("shop.legacy"),
                }],
                rebuilding: vec![RebuildingTable {
                    table: "orders".into(),
                    shadow: "orders__rebuilding".into(),
                    since: "2026-11-28 09:30:00".into(),
                }],
                runs: vec![RunRecord {
                    kind: "run".into(),
                    started_at: "2026-11-28 08:00:00".into(),
                    ended_at: None,
                    outcome: "running".into(),
                    rows: 10,
                    error: None,
                }],
            },
            source: Some(SourceState {
                server: "127.0.0.1:3306 (10.11)".into(),
                position: "binlog.000003:1500".into(),
                oldest_binlog: Some("binlog.000001".into()),
                retention_secs: 7 * 86400,
                needed_binlog_present: Some(true),
                retention_headroom_secs: Some(3600 * 100),
            }),
            errors: vec![],
        }
    }

    #[test]
    fn text_shows_every_fact_on_one_screen() {
        let text = report().render_text();
        for want in [
            "pipeline shop: streaming",
            "lag: 2 s",
            "buffer backlog: 17 records",
            "binlog end: binlog.000003:1500",
            "retention headroom: 100.0 h",
            "stream embedded: offset 41 applied (source binlog.000003:1200)",
            "table shop.orders: lag 2 s",
            "shop.legacy since 2026-11-28 09:00:00: unsupported column type",
            "fix: fix the cause above, then bring shop.legacy back",
            "rebuilding orders since 2026-11-28 09:30:00: readers see its stale copy",
            "run 2026-11-28 08:00:00 → - running (10 rows)",
        ] {
            assert!(text.contains(want), "{want:?} not in:\n{text}");
        }
        assert!(text.lines().count() <= 24, "one screen:\n{text}");
    }

    #[test]
    fn a_stopped_pipeline_with_a_purged_binlog_says_so() {
        let mut r = report();
        r.running = false;
        r.process = None;
        r.state = "stopped".into();
        if let Some(s) = r.source.as_mut() {
            s.needed_binlog_present = Some(false);
        }
        let text = r.render_text();
        assert!(text.contains("no running process answered"), "{text}");
        assert!(text.contains("PROBLEM: the binlog the target's position needs is purged"), "{text}");
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["state"], "stopped");
        assert_eq!(json["target"]["stopped"][0]["table"], "shop.legacy");
    }

    #[test]
    fn headroom_counts_down_from_the_write() {
        assert_eq!(retention_headroom(0, 100, 200), None);
        assert_eq!(retention_headroom(1000, 100, 200), Some(900));
        assert_eq!(retention_headroom(50, 100, 200), Some(0));
    }
}
