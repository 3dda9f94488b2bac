//! What `binferry status` reads from a BigQuery target (committed offsets, stopped tables,
//! runs), and the run registry `_binferry_runs` that `run` and `replay` write: the same facts
//! as the MySQL target keeps, as query jobs.

use std::sync::Arc;

use super::BigQuerySinkSettings;
use super::sql::{COMMITS, REBUILDS, RUNS, STOPPED, string};
use super::state::cells;
use crate::bigquery_api::{Api, Side};
use crate::error::Result;
use crate::status::{RebuildingTable, RunOutcome, RunRecord, StoppedTable, StreamState, TargetState};

/// Runs `status` shows.
const RUNS_SHOWN: usize = 5;
/// Text format of the timestamps `status` shows (UTC).
const TIME: &str = "'%Y-%m-%d %H:%M:%S'";

async fn api(s: &BigQuerySinkSettings) -> Result<Api> {
    Api::connect(Side::Target, &s.auth, &s.project, s.location.as_deref(), s.timeout, Arc::clone(&s.stats)).await
}

/// Whether the dataset has `table` (bookkeeping tables appear with the first run).
pub(super) async fn has_table(api: &Api, s: &BigQuerySinkSettings, table: &str) -> Result<bool> {
    let rows = api
        .query(&format!(
            "SELECT COUNT(*) FROM `{}`.`{}`.INFORMATION_SCHEMA.TABLES WHERE table_name = {}",
            s.project,
            s.dataset,
            string(table)
        ))
        .await?;
    Ok(cells(rows.first()).first().cloned().flatten().is_some_and(|n| n != "0"))
}

/// The target's durable state for this pipeline. Tables not created yet read as empty.
pub async fn read_status(s: &BigQuerySinkSettings) -> Result<TargetState> {
    let api = api(s).await?;
    let n = s.names();
    let mut state = TargetState { description: format!("BigQuery {}.{}", s.project, s.dataset), ..Default::default() };
    let prefix = string(&format!("{}/%", s.pipeline));
    let pipeline = string(&s.pipeline);
    if has_table(&api, s, COMMITS).await? {
        // The committed offset and position of each stream (MERGE moves them into the tables
        // within `merge_interval_secs`).
        let rows = api
            .query(&format!(
                "SELECT stream, `offset`, position, FORMAT_TIMESTAMP({TIME}, committed_at), UNIX_SECONDS(committed_at) \
                 FROM {} \
                 WHERE stream LIKE {prefix} AND stream NOT LIKE 'replay-%' \
                 QUALIFY ROW_NUMBER() OVER (PARTITION BY stream ORDER BY `offset` DESC) = 1 ORDER BY stream",
                n.table(COMMITS)
            ))
            .await?;
        for r in rows {
            let c = cells(Some(&r));
            let text = |i: usize| c.get(i).cloned().flatten().unwrap_or_default();
            state.streams.push(StreamState {
                stream: text(0).trim_start_matches(&format!("{}/", s.pipeline)).to_string(),
                applied_offset: text(1).parse().unwrap_or(0),
                source_position: text(2),
                updated_at: text(3),
                updated_at_unix: text(4).parse().unwrap_or(0),
            });
        }
    }
    if has_table(&api, s, STOPPED).await? {
        let rows = api
            .query(&format!(
                // Grouped: every Kafka partition that meets the cause records the stop (an
                // insert; BigQuery has no upsert outside a MERGE job), the first says since when.
                "SELECT source_db, source_table, ANY_VALUE(reason), FORMAT_TIMESTAMP({TIME}, MIN(stopped_at)) FROM {} \
                 WHERE pipeline = {pipeline} GROUP BY 1, 2 ORDER BY MIN(stopped_at)",
                n.table(STOPPED)
            ))
            .await?;
        for r in rows {
            let c = cells(Some(&r));
            let text = |i: usize| c.get(i).cloned().flatten().unwrap_or_default();
            let table = format!("{}.{}", text(0), text(1));
            state.stopped.push(StoppedTable {
                fix: StoppedTable::fix_for(&table),
                table,
                reason: text(2),
                since: text(3),
            });
        }
    }
    if has_table(&api, s, REBUILDS).await? {
        let rows = api
            .query(&format!(
                "SELECT table_name, shadow, FORMAT_TIMESTAMP({TIME}, started_at) FROM {} \
                 WHERE pipeline = {pipeline} ORDER BY started_at",
                n.table(REBUILDS)
            ))
            .await?;
        for r in rows {
            let c = cells(Some(&r));
            let text = |i: usize| c.get(i).cloned().flatten().unwrap_or_default();
            state.rebuilding.push(RebuildingTable { table: text(0), shadow: text(1), since: text(2) });
        }
    }
    if has_table(&api, s, RUNS).await? {
        let rows = api
            .query(&format!(
                "SELECT kind, FORMAT_TIMESTAMP({TIME}, started_at), FORMAT_TIMESTAMP({TIME}, ended_at), outcome, \
                 rows_written, error FROM {} WHERE pipeline = {pipeline} ORDER BY started_at DESC LIMIT {RUNS_SHOWN}",
                n.table(RUNS)
            ))
            .await?;
        for r in rows {
            let c = cells(Some(&r));
            let text = |i: usize| c.get(i).cloned().flatten();
            state.runs.push(RunRecord {
                kind: text(0).unwrap_or_default(),
                started_at: text(1).unwrap_or_default(),
                ended_at: text(2),
                outcome: text(3).unwrap_or_default(),
                rows: text(4).and_then(|v| v.parse().ok()).unwrap_or(0),
                error: text(5),
            });
        }
    }
    Ok(state)
}

/// Record the start of a run of `kind` by this process (`host`, `pid`); returns its id. Runs
/// of this pipeline on this host still marked running whose process is gone are marked
/// interrupted first.
pub async fn run_started(
    s: &BigQuerySinkSettings,
    kind: &str,
    host: &str,
    pid: u32,
    alive: impl Fn(u32) -> bool,
) -> Result<String> {
    let api = api(s).await?;
    api.ensure_dataset(&s.dataset).await?;
    let n = s.names();
    let table = n.table(RUNS);
    api.query(&format!(
        "CREATE TABLE IF NOT EXISTS {table} (run_id STRING NOT NULL, pipeline STRING NOT NULL, kind STRING, \
         host STRING, pid INT64, started_at TIMESTAMP, ended_at TIMESTAMP, outcome STRING, rows_written INT64, \
         error STRING)"
    ))
    .await?;
    let (pipeline, host_s) = (string(&s.pipeline), string(host));
    let running = string(RunOutcome::Running.as_str());
    let open = api
        .query(&format!(
            "SELECT run_id, pid FROM {table} WHERE pipeline = {pipeline} AND host = {host_s} AND outcome = {running}"
        ))
        .await?;
    let gone: Vec<String> = open
        .iter()
        .filter_map(|r| {
            let c = cells(Some(r));
            let id = c.first().cloned().flatten()?;
            let p: u32 = c.get(1).cloned().flatten()?.parse().ok()?;
            (p != pid && !alive(p)).then(|| string(&id))
        })
        .collect();
    if !gone.is_empty() {
        api.query(&format!(
            "UPDATE {table} SET outcome = {}, error = {} WHERE run_id IN ({})",
            string(RunOutcome::Interrupted.as_str()),
            string(RunOutcome::INTERRUPTED_WHY),
            gone.join(", ")
        ))
        .await?;
    }
    let ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis());
    let id = format!("{host}-{pid}-{ms}");
    api.query(&format!(
        "INSERT INTO {table} (run_id, pipeline, kind, host, pid, started_at, outcome, rows_written) \
         VALUES ({}, {pipeline}, {}, {host_s}, {pid}, CURRENT_TIMESTAMP(), {running}, 0)",
        string(&id),
        string(kind)
    ))
    .await?;
    Ok(id)
}

/// Record how run `id` ended.
pub async fn run_ended(
    s: &BigQuerySinkSettings,
    id: &str,
    outcome: RunOutcome,
    rows: u64,
    error: Option<&str>,
) -> Result<()> {
    let api = api(s).await?;
    let error = error.map_or_else(|| "NULL".to_string(), string);
    api.query(&format!(
        "UPDATE {} SET ended_at = CURRENT_TIMESTAMP(), outcome = {}, rows_written = {rows}, error = {error} \
         WHERE run_id = {}",
        s.names().table(RUNS),
        string(outcome.as_str()),
        string(id)
    ))
    .await
    .map(|_| ())
}
