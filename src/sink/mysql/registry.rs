//! What `binferry status` reads from a MySQL target (applied offsets, stopped tables, runs),
//! and the run registry `_binferry_runs` that `run` and `replay` write.
//!
//! Both use connections of their own, outside any data transaction: a status read must not
//! wait for the writer, and a run's row must be visible while the run goes on.

use mysql_async::prelude::{FromValue, Queryable};
use mysql_async::{Conn, Row};

use super::statements::q;
use super::{MysqlSinkSettings, REBUILDS_TABLE, RUNS_TABLE, STATE_TABLE, STOPPED_TABLE, table_exists};
use crate::error::{Error, ErrorKind, Result};
use crate::status::{RebuildingTable, RunOutcome, RunRecord, StoppedTable, StreamState, TargetState};

/// Runs `status` shows.
const RUNS_SHOWN: usize = 5;
/// Text format of the timestamps `status` shows (UTC).
const TIME: &str = "'%Y-%m-%d %H:%i:%s'";

/// The target's durable state for this pipeline. Tables not created yet read as empty.
pub async fn read_status(settings: &MysqlSinkSettings) -> Result<TargetState> {
    let mut conn = settings.connect().await?;
    let db = settings.database.clone();
    let pipeline = settings.pipeline.clone();
    let mut state = TargetState {
        description: format!("MySQL {}, database {}", settings.address, settings.database),
        ..Default::default()
    };
    let read = |what: &str| format!("reading {what} from the target");
    if table_exists(&mut conn, &db, STATE_TABLE).await? {
        let rows: Vec<Row> = conn
            .exec(
                format!(
                    "SELECT stream, applied_offset, source_file, source_offset, DATE_FORMAT(updated_at, {TIME}), \
                     CAST(UNIX_TIMESTAMP(updated_at) AS UNSIGNED) FROM {}.{} WHERE pipeline = ? ORDER BY stream",
                    q(&db),
                    q(STATE_TABLE)
                ),
                (&pipeline,),
            )
            .await
            .map_err(|e| Error::target_mysql(e, read(STATE_TABLE)))?;
        for r in rows {
            let file: String = col(&r, 2, STATE_TABLE)?;
            let offset: u64 = col(&r, 3, STATE_TABLE)?;
            state.streams.push(StreamState {
                stream: col(&r, 0, STATE_TABLE)?,
                applied_offset: col(&r, 1, STATE_TABLE)?,
                source_position: format!("{file}:{offset}"),
                updated_at: col(&r, 4, STATE_TABLE)?,
                updated_at_unix: col(&r, 5, STATE_TABLE)?,
            });
        }
    }
    if table_exists(&mut conn, &db, STOPPED_TABLE).await? {
        let rows: Vec<Row> = conn
            .exec(
                format!(
                    "SELECT source_db, source_table, reason, DATE_FORMAT(stopped_at, {TIME}) FROM {}.{} \
                     WHERE pipeline = ? ORDER BY stopped_at",
                    q(&db),
                    q(STOPPED_TABLE)
                ),
                (&pipeline,),
            )
            .await
            .map_err(|e| Error::target_mysql(e, read(STOPPED_TABLE)))?;
        for r in rows {
            let table = format!("{}.{}", col::<String>(&r, 0, STOPPED_TABLE)?, col::<String>(&r, 1, STOPPED_TABLE)?);
            let (reason, since) = (col(&r, 2, STOPPED_TABLE)?, col(&r, 3, STOPPED_TABLE)?);
            state.stopped.push(StoppedTable { fix: StoppedTable::fix_for(&table), table, reason, since });
        }
    }
    if table_exists(&mut conn, &db, REBUILDS_TABLE).await? {
        let rows: Vec<Row> = conn
            .exec(
                format!(
                    "SELECT table_name, shadow, DATE_FORMAT(started_at, {TIME}) FROM {}.{} \
                     WHERE pipeline = ? ORDER BY started_at",
                    q(&db),
                    q(REBUILDS_TABLE)
                ),
                (&pipeline,),
            )
            .await
            .map_err(|e| Error::target_mysql(e, read(REBUILDS_TABLE)))?;
        for r in rows {
            state.rebuilding.push(RebuildingTable {
                table: col(&r, 0, REBUILDS_TABLE)?,
                shadow: col(&r, 1, REBUILDS_TABLE)?,
                since: col(&r, 2, REBUILDS_TABLE)?,
            });
        }
    }
    if table_exists(&mut conn, &db, RUNS_TABLE).await? {
        let rows: Vec<Row> = conn
            .exec(
                format!(
                    "SELECT kind, DATE_FORMAT(started_at, {TIME}), DATE_FORMAT(ended_at, {TIME}), outcome, \
                     rows_written, error FROM {}.{} WHERE pipeline = ? ORDER BY run_id DESC LIMIT {RUNS_SHOWN}",
                    q(&db),
                    q(RUNS_TABLE)
                ),
                (&pipeline,),
            )
            .await
            .map_err(|e| Error::target_mysql(e, read(RUNS_TABLE)))?;
        for r in rows {
            state.runs.push(RunRecord {
                kind: col(&r, 0, RUNS_TABLE)?,
                started_at: col(&r, 1, RUNS_TABLE)?,
                ended_at: col(&r, 2, RUNS_TABLE)?,
                outcome: col(&r, 3, RUNS_TABLE)?,
                rows: col(&r, 4, RUNS_TABLE)?,
                error: col(&r, 5, RUNS_TABLE)?,
            });
        }
    }
    Ok(state)
}

/// Column `i` of a row of `table`, or an error that says the table was changed by hand
/// (never a panic on what the target returns).
fn col<T: FromValue>(row: &Row, i: usize, table: &str) -> Result<T> {
    match row.get_opt::<T, usize>(i) {
        Some(Ok(v)) => Ok(v),
        _ => Err(Error::new(
            ErrorKind::TargetRejected,
            format!("{table}: column {} of a row is missing or of an unexpected type", i + 1),
        )
        .with_hint(format!("{table} was changed by hand; restore its definition (binferry creates it)"))),
    }
}

async fn ensure_runs_table(conn: &mut Conn, db: &str) -> Result<()> {
    let sql = format!(
        "CREATE TABLE IF NOT EXISTS {}.{} (\
           run_id BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY, pipeline VARCHAR(64) NOT NULL, \
           kind VARCHAR(32) NOT NULL, host VARCHAR(255) NOT NULL, pid INT UNSIGNED NOT NULL, \
           started_at TIMESTAMP(6) NOT NULL, ended_at TIMESTAMP(6) NULL, outcome VARCHAR(16) NOT NULL, \
           rows_written BIGINT UNSIGNED NOT NULL DEFAULT 0, error TEXT NULL, KEY (pipeline, run_id)) ENGINE=InnoDB",
        q(db),
        q(RUNS_TABLE)
    );
    conn.query_drop(&sql).await.map_err(|e| Error::target_mysql(e, format!("creating {RUNS_TABLE}")))
}

/// Record the start of a run of `kind` by this process (`host`, `pid`); returns its id. Runs
/// of this pipeline on this host still marked running whose process is gone (`alive` says
/// no) are marked interrupted first: they died without a report (SIGKILL, a crash).
pub async fn run_started(
    settings: &MysqlSinkSettings,
    kind: &str,
    host: &str,
    pid: u32,
    alive: impl Fn(u32) -> bool,
) -> Result<u64> {
    let mut conn = settings.connect().await?;
    let db = settings.database.clone();
    conn.query_drop(format!("CREATE DATABASE IF NOT EXISTS {}", q(&db)))
        .await
        .map_err(|e| Error::target_mysql(e, "creating the target database"))?;
    ensure_runs_table(&mut conn, &db).await?;
    let table = format!("{}.{}", q(&db), q(RUNS_TABLE));
    let open: Vec<Row> = conn
        .exec(
            format!("SELECT run_id, pid FROM {table} WHERE pipeline = ? AND host = ? AND outcome = ?"),
            (&settings.pipeline, host, RunOutcome::Running.as_str()),
        )
        .await
        .map_err(|e| Error::target_mysql(e, format!("reading {RUNS_TABLE}")))?;
    let open: Vec<(u64, u32)> =
        open.iter().map(|r| Ok((col(r, 0, RUNS_TABLE)?, col(r, 1, RUNS_TABLE)?))).collect::<Result<_>>()?;
    for (id, other) in open.into_iter().filter(|(_, p)| *p != pid && !alive(*p)) {
        conn.exec_drop(
            format!("UPDATE {table} SET outcome = ?, error = ? WHERE run_id = ?"),
            (RunOutcome::Interrupted.as_str(), RunOutcome::INTERRUPTED_WHY, id),
        )
        .await
        .map_err(|e| Error::target_mysql(e, format!("updating {RUNS_TABLE}")))?;
        tracing::debug!(run_id = id, pid = other, "an earlier run ended without a report");
    }
    conn.exec_drop(
        format!(
            "INSERT INTO {table} (pipeline, kind, host, pid, started_at, outcome) VALUES (?, ?, ?, ?, UTC_TIMESTAMP(6), ?)"
        ),
        (&settings.pipeline, kind, host, pid, RunOutcome::Running.as_str()),
    )
    .await
    .map_err(|e| Error::target_mysql(e, format!("recording the run in {RUNS_TABLE}")))?;
    conn.last_insert_id().ok_or_else(|| Error::internal("no run id after the insert"))
}

/// Record how run `id` ended.
pub async fn run_ended(
    settings: &MysqlSinkSettings,
    id: u64,
    outcome: RunOutcome,
    rows: u64,
    error: Option<&str>,
) -> Result<()> {
    let mut conn = settings.connect().await?;
    conn.exec_drop(
        format!(
            "UPDATE {}.{} SET ended_at = UTC_TIMESTAMP(6), outcome = ?, rows_written = ?, error = ? WHERE run_id = ?",
            q(&settings.database),
            q(RUNS_TABLE)
        ),
        (outcome.as_str(), rows, error, id),
    )
    .await
    .map_err(|e| Error::target_mysql(e, format!("recording the end of the run in {RUNS_TABLE}")))
}
