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
