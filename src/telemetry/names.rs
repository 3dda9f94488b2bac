//! Every metric name in one place, so dashboards and code agree.
//!
//! Metrics go through the `metrics` facade; the Prometheus endpoint arrives
//! with the operations work. Progress lines in the log report the same numbers.

/// Row changes appended to the buffer by the source (counter).
pub const SOURCE_EVENTS: &str = "binferry_source_events_total";
/// Rows copied by the initial snapshot (counter).
pub const SNAPSHOT_ROWS: &str = "binferry_snapshot_rows_total";
/// Row writes issued to the target after compaction (counter).
pub const WRITER_ROWS_WRITTEN: &str = "binferry_writer_rows_written_total";
/// Changes whose row already had the same values (equal hash): no data written (counter).
pub const WRITER_ROWS_UNCHANGED: &str = "binferry_writer_rows_unchanged_total";
/// Changes older than the target's row (replays, duplicates): skipped (counter).
pub const WRITER_ROWS_STALE: &str = "binferry_writer_rows_stale_total";
/// Row changes folded into a later change of the same key within a batch (counter).
pub const WRITER_ROWS_COMPACTED: &str = "binferry_writer_rows_compacted_total";
/// Target transactions committed (counter).
pub const WRITER_COMMITS: &str = "binferry_writer_commits_total";
/// Seconds from a source commit to its target commit (gauge, per pipeline).
pub const REPLICATION_LAG_SECONDS: &str = "binferry_replication_lag_seconds";
/// Seconds since the oldest change of a table not yet visible in the target (gauge, label
/// `table`): 0 when caught up.
pub const TABLE_LAG_SECONDS: &str = "binferry_table_lag_seconds";
/// Records of source transactions that never complete in the buffer, dropped by the writer
/// (a reader published them, then restarted from an earlier checkpoint) (counter).
pub const WRITER_ORPHANED_RECORDS: &str = "binferry_writer_orphaned_records_total";
/// Undecodable buffer messages that stopped a table or the stream (counter).
pub const WRITER_POISON_MESSAGES: &str = "binferry_writer_poison_messages_total";
/// Undecodable Kafka messages routed to the dead-letter topic (counter).
pub const KAFKA_DEAD_LETTERS: &str = "binferry_kafka_dead_letters_total";
/// Records and schemas acknowledged by the Kafka brokers (counter).
pub const KAFKA_PRODUCED: &str = "binferry_kafka_produced_total";
/// Counter: BigQuery query jobs issued (MERGE runs, DDL, checkpoint reads).
pub const BIGQUERY_JOBS: &str = "binferry_bigquery_jobs_total";
/// Counter: rows appended to BigQuery changelog tables with insertAll.
pub const BIGQUERY_CHANGELOG_ROWS: &str = "binferry_bigquery_changelog_rows_total";
/// Counter: MERGE runs that moved changelog rows into the BigQuery tables.
pub const BIGQUERY_MERGES: &str = "binferry_bigquery_merges_total";
/// Counter: rounds of the BigQuery source completed (every table read at one timestamp).
pub const BIGQUERY_SOURCE_ROUNDS: &str = "binferry_bigquery_source_rounds_total";
/// Counter: bytes the BigQuery source's queries scanned, as BigQuery reports them (what
/// on-demand pricing bills; the emulator reports 0).
pub const BIGQUERY_SOURCE_BYTES_SCANNED: &str = "binferry_bigquery_source_bytes_scanned_total";
/// Gauge: seconds the last BigQuery source round took.
pub const BIGQUERY_SOURCE_ROUND_SECONDS: &str = "binferry_bigquery_source_round_seconds";
/// Seconds to apply one batch and commit it in the target (histogram).
pub const WRITER_COMMIT_SECONDS: &str = "binferry_writer_commit_seconds";
/// Row changes in one committed batch, after compaction (histogram).
pub const WRITER_BATCH_ROWS: &str = "binferry_writer_batch_rows";
/// Writer failures that are retried, by error kind (counter, label `kind`).
pub const WRITER_RETRIES: &str = "binferry_writer_retries_total";
/// Tables stopped (an incompatible schema change, a value the target refuses, an
/// undecodable message) (counter).
pub const TABLES_STOPPED: &str = "binferry_tables_stopped_total";
/// Records in the embedded buffer the writer has not applied yet (gauge).
pub const BUFFER_PENDING_RECORDS: &str = "binferry_buffer_pending_records";
/// Whether the writer waits to retry a failing target: 1 yes, 0 no (gauge).
pub const WRITER_RETRYING: &str = "binferry_writer_retrying";
/// The number of the binlog file the reader's checkpoint is in (`binlog.000042` → 42) (gauge).
pub const SOURCE_BINLOG_FILE: &str = "binferry_source_binlog_file";
/// The offset of the reader's checkpoint in that file (gauge).
pub const SOURCE_BINLOG_OFFSET: &str = "binferry_source_binlog_offset";
/// Bytes of binlog events read from the source (counter).
pub const SOURCE_BYTES: &str = "binferry_source_bytes_total";
/// Seconds since the writer last committed to the target (gauge): grows on an idle source
/// too; with a backlog it means the writer is stuck.
pub const CHECKPOINT_AGE_SECONDS: &str = "binferry_checkpoint_age_seconds";
/// Rows written to the target, per table (counter, label `table`).
pub const TABLE_ROWS_WRITTEN: &str = "binferry_table_rows_written_total";
/// Changes whose row already had the same values, per table (counter, label `table`).
pub const TABLE_ROWS_UNCHANGED: &str = "binferry_table_rows_unchanged_total";
/// Changes older than the target's row, per table (counter, label `table`).
pub const TABLE_ROWS_STALE: &str = "binferry_table_rows_stale_total";
/// Tables the initial snapshot still has to copy (gauge).
pub const SNAPSHOT_TABLES_REMAINING: &str = "binferry_snapshot_tables_remaining";
/// Gauge: tables `binferry resync` is copying again.
pub const RESYNC_TABLES_RUNNING: &str = "binferry_resync_tables_running";
/// Seconds until the oldest binlog the reader still needs may be purged by the source's
/// retention, a lower bound (gauge; absent with unlimited retention).
pub const BINLOG_RETENTION_HEADROOM_SECONDS: &str = "binferry_binlog_retention_headroom_seconds";

/// Every name above, for tests that check dashboards and documentation against it.
pub const ALL: &[&str] = &[
    SOURCE_EVENTS,
    SNAPSHOT_ROWS,
    WRITER_ROWS_WRITTEN,
    WRITER_ROWS_UNCHANGED,
    WRITER_ROWS_STALE,
    WRITER_ROWS_COMPACTED,
    WRITER_COMMITS,
    REPLICATION_LAG_SECONDS,
    TABLE_LAG_SECONDS,
    WRITER_ORPHANED_RECORDS,
    WRITER_POISON_MESSAGES,
    KAFKA_DEAD_LETTERS,
    KAFKA_PRODUCED,
    BIGQUERY_JOBS,
    BIGQUERY_CHANGELOG_ROWS,
    BIGQUERY_MERGES,
    BIGQUERY_SOURCE_ROUNDS,
    BIGQUERY_SOURCE_BYTES_SCANNED,
    BIGQUERY_SOURCE_ROUND_SECONDS,
    WRITER_COMMIT_SECONDS,
    WRITER_BATCH_ROWS,
    WRITER_RETRIES,
    TABLES_STOPPED,
    BUFFER_PENDING_RECORDS,
    WRITER_RETRYING,
    SOURCE_BYTES,
    SOURCE_BINLOG_FILE,
    SOURCE_BINLOG_OFFSET,
    CHECKPOINT_AGE_SECONDS,
    TABLE_ROWS_WRITTEN,
    TABLE_ROWS_UNCHANGED,
    TABLE_ROWS_STALE,
    SNAPSHOT_TABLES_REMAINING,
    RESYNC_TABLES_RUNNING,
    BINLOG_RETENTION_HEADROOM_SECONDS,
];

#[cfg(test)]
mod tests {
    use super::*;

    /// Every `binferry_*` series the text mentions, without the suffixes Prometheus adds
    /// to summaries and histograms.
    fn series(text: &str) -> Vec<String> {
        let mut out = Vec::new();
        let mut rest = text;
        while let Some(i) = rest.find("binferry_") {
            let name: String =
                rest[i..].chars().take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_').collect();
            rest = &rest[i + name.len()..];
            let base = ["_bucket", "_sum", "_count"].iter().find_map(|s| name.strip_suffix(s)).unwrap_or(&name);
            out.push(base.to_string());
        }
        out
    }

    #[test]
    fn the_dashboard_queries_only_metrics_that_exist() {
        let dashboard = include_str!("../../config/grafana/binferry-dashboard.json");
        let used = series(dashboard);
        assert!(used.len() > 15, "{used:?}");
        for name in &used {
            assert!(ALL.contains(&name.as_str()), "the dashboard queries {name}, which binferry does not export");
        }
        // And the dashboard shows every metric there is.
        for name in ALL {
            assert!(used.iter().any(|u| u == name), "{name} is on no dashboard panel");
        }
    }

    #[test]
    fn names_are_unique_and_prefixed() {
        let mut seen = std::collections::HashSet::new();
        for name in ALL {
            assert!(name.starts_with("binferry_") && seen.insert(name), "{name}");
        }
        assert_eq!(series("x binferry_a_sum binferry_b_total{"), ["binferry_a", "binferry_b_total"]);
    }
}
