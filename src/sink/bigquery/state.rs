//! The sink's bookkeeping tables in the dataset: the stream's state and commits, truncates,
//! stopped tables and DDL barriers ([`TableState`]), created once per process and
//! garbage-collected on a schedule.

use std::collections::BTreeSet;

use tracing::{debug, warn};

use super::rows::now_text;
use super::schedule::When;
use super::sql::{self, BARRIERS, COMMITS, STATE, STOPPED, TABLES};
use super::sql::{TableShape, string};
use super::{BigQuerySink, Managed};
use crate::bigquery_api::Api;
use crate::error::{Error, ErrorKind, Result};
use crate::schema::TableRef;
use crate::sink::{BarrierPhase, TableState};

impl BigQuerySink {
    /// Create the dataset and bookkeeping tables, and load the stream's state.
    pub(super) async fn init(&mut self) -> Result<()> {
        if self.ready {
            return Ok(());
        }
        let api = self.api().await?;
        let n = self.settings.names();
        self.settings
            .meta_ready
            .get_or_try_init(|| async {
                api.ensure_dataset(&self.settings.dataset).await?;
                api.query(&n.create_meta()).await.map(|_| ())
            })
            .await?;
        let stream = string(&self.settings.stream_id());
        let rows = api
            .query(&format!(
                "SELECT (SELECT MAX(`offset`) FROM {c} WHERE stream = {stream}), \
                 (SELECT MAX(merged_offset) FROM {s} WHERE stream = {stream}), \
                 (SELECT position FROM {c} WHERE stream = {stream} ORDER BY `offset` DESC LIMIT 1)",
                c = n.table(COMMITS),
                s = n.table(STATE),
            ))
            .await?;
        let row = cells(rows.first());
        self.committed = row.first().and_then(|v| v.as_deref()).map(parse_i64).transpose()?.map(|o| o as u64);
        let merged = row.get(1).and_then(|v| v.as_deref()).map(parse_i64).transpose()?.unwrap_or(-1);
        let position = row.get(2).cloned().flatten().unwrap_or_default();
        // Tables whose committed changes a crash left unmerged.
        let rows = api
            .query(&format!(
                "SELECT DISTINCT tables FROM {} WHERE stream = {stream} AND `offset` > {merged}",
                n.table(COMMITS),
            ))
            .await?;
        self.load_tables(&api).await?;
        // A rebuild whose swap a crash interrupted is finished before any row is appended.
        self.load_rebuilds(&api).await?;
        let mut unmerged = BTreeSet::new();
        for r in rows {
            if let Some(Some(list)) = cells(Some(&r)).first() {
                let names: Vec<String> = serde_json::from_str(list).unwrap_or_default();
                unmerged.extend(names);
            }
        }
        let stream = self.settings.stream_id();
        self.settings.schedule.register(&stream, merged, self.repair);
        if let Some(committed) = self.committed {
            // A table dropped or renamed since has nothing left to merge under this name.
            let tables = unmerged.iter().filter_map(|t| self.tables.get_key_value(t).map(|(k, m)| (k, &m.shape)));
            self.settings.schedule.offer(&stream, committed as i64, &position, tables);
        }
        self.checked.clear();
        self.open.clear();
        self.ready = true;
        debug!(%stream, committed = ?self.committed, merged, unmerged = unmerged.len(), "BigQuery sink state loaded");
        Ok(())
    }

    /// The managed tables and their shapes, as `_binferry_tables` records them.
    pub(super) async fn load_tables(&mut self, api: &Api) -> Result<()> {
        let n = self.settings.names();
        let rows =
            api.query(&format!("SELECT table_name, source_db, source_table, shape FROM {}", n.table(TABLES))).await?;
        self.tables.clear();
        for r in rows {
            let c = cells(Some(&r));
            let (Some(Some(name)), Some(Some(db)), Some(Some(table)), Some(Some(shape))) =
                (c.first(), c.get(1), c.get(2), c.get(3))
            else {
                continue;
            };
            let shape: TableShape = serde_json::from_str(shape).map_err(|e| {
                Error::new(ErrorKind::TargetRejected, format!("{TABLES}: shape of {name} is unreadable: {e}"))
                    .with_hint(format!("the row was changed by hand; delete it from {TABLES} and resync the table"))
            })?;
            self.tables.insert(name.clone(), Managed { source: TableRef::new(db.clone(), table.clone()), shape });
        }
        Ok(())
    }

    /// Remove changelog and commit rows older than the buffer retains (nothing can replay
    /// them any more), at most hourly per process.
    pub(super) async fn collect_garbage(&mut self) -> Result<()> {
        if !self.settings.schedule.gc_due() {
            return Ok(());
        }
        let secs = self.settings.retention.as_secs().max(86_400);
        let n = self.settings.names();
        let cutoff = format!("TIMESTAMP_SUB(CURRENT_TIMESTAMP(), INTERVAL {secs} SECOND)");
        let mut statements: Vec<String> = self
            .tables
            .keys()
            .map(|t| format!("DELETE FROM {} WHERE {} < {cutoff}", n.changelog(t), sql::APPENDED_AT))
            .collect();
        // A partition arriving at a DDL barrier that late would have lost its records anyway.
        statements.push(format!(
            "DELETE FROM {} WHERE reached_at < TIMESTAMP_SUB(CURRENT_TIMESTAMP(), INTERVAL {} SECOND)",
            n.table(BARRIERS),
            secs.saturating_mul(2)
        ));
        // The newest marker of each stream stays: it is the stream's checkpoint.
        statements.push(format!(
            "DELETE FROM {c} AS o WHERE o.committed_at < {cutoff} AND o.`offset` < (SELECT MAX(m.`offset`) FROM {c} AS m \
             WHERE m.stream = o.stream)",
            c = n.table(COMMITS)
        ));
        if let Err(e) = self.query(&statements.join(";\n")).await {
            // Only costs storage: the next round tries again.
            warn!(error = %e, "removing expired BigQuery changelog rows failed");
        }
        Ok(())
    }

    /// Commit-time: the stops recorded since the last commit.
    pub(super) async fn record_stops(&mut self) -> Result<()> {
        if self.stops.is_empty() {
            return Ok(());
        }
        let n = self.settings.names();
        let values: Vec<String> = self
            .stops
            .iter()
            .map(|(t, reason)| {
                format!(
                    "({}, {}, {}, {}, CURRENT_TIMESTAMP())",
                    string(&self.settings.pipeline),
                    string(&t.db),
                    string(&t.name),
                    string(reason)
                )
            })
            .collect();
        let sql = format!(
            "INSERT INTO {} (pipeline, source_db, source_table, reason, stopped_at) VALUES {}",
            n.table(STOPPED),
            values.join(", ")
        );
        self.query(&sql).await?;
        self.stops.clear();
        Ok(())
    }
}

/// A result row's cells as optional strings.
pub(super) fn cells(row: Option<&gcp_bigquery_client::model::table_row::TableRow>) -> Vec<Option<String>> {
    row.and_then(|r| r.columns.as_ref())
        .map(|cs| {
            cs.iter()
                .map(|c| match &c.value {
                    Some(serde_json::Value::String(s)) => Some(s.clone()),
                    Some(serde_json::Value::Null) | None => None,
                    Some(v) => Some(v.to_string()),
                })
                .collect()
        })
        .unwrap_or_default()
}

pub(super) fn parse_i64(s: &str) -> Result<i64> {
    s.parse().map_err(|_| Error::new(ErrorKind::TargetRejected, format!("BigQuery returned {s:?} for an INT64")))
}

impl TableState for BigQuerySink {
    async fn stopped_tables(&mut self) -> Result<Vec<(TableRef, String)>> {
        self.init().await?;
        let sql = format!(
            "SELECT source_db, source_table, ANY_VALUE(reason) FROM {} WHERE pipeline = {} GROUP BY 1, 2",
            self.settings.names().table(STOPPED),
            string(&self.settings.pipeline)
        );
        let rows = self.query(&sql).await?;
        Ok(rows
            .iter()
            .filter_map(|r| match cells(Some(r)).as_slice() {
                [Some(d), Some(t), reason] => {
                    Some((TableRef::new(d.clone(), t.clone()), reason.clone().unwrap_or_default()))
                }
                _ => None,
            })
            .collect())
    }

    async fn stop_table(&mut self, table: &TableRef, reason: &str) -> Result<()> {
        self.stops.push((table.clone(), reason.to_string()));
        Ok(())
    }

    async fn ddl_barrier_mark(&mut self, barrier: &str, phase: BarrierPhase) -> Result<()> {
        self.init().await?;
        if phase == BarrierPhase::Arrived {
            // Arriving says this stream applied everything before the statement. On BigQuery
            // that includes the MERGE: the stream that applies the statement merges only its
            // own process's streams, and a rename or a rebuild's swap must find every
            // partition's committed rows in the table, not in a changelog left behind.
            self.merge(When::Now).await?;
        }
        let api = self.api().await?;
        let stream = self.settings.stream_id();
        let row = serde_json::json!({
            "pipeline": self.settings.pipeline,
            "barrier": barrier,
            "stream": stream,
            "phase": phase.as_str(),
            "reached_at": now_text(),
        });
        let id = blake3::hash(format!("{barrier}\0{stream}\0{}", phase.as_str()).as_bytes()).to_hex()[..32].to_string();
        api.insert_all(&self.settings.dataset, BARRIERS, vec![(id, row)]).await
    }

    async fn ddl_barrier_count(&mut self, barrier: &str, phase: BarrierPhase) -> Result<u32> {
        self.init().await?;
        // Only this stream's siblings count: a replay's streams (`replay-<ms>/kafka:t/0`) meet
        // among themselves, never with the live partitions (`kafka:t/0`).
        let stream = self.settings.stream_id();
        let siblings = stream.rsplit_once('/').map_or(stream.as_str(), |(family, _)| family);
        let sql = format!(
            "SELECT COUNT(DISTINCT stream) FROM {} WHERE pipeline = {} AND barrier = {} AND phase = {} \
             AND STARTS_WITH(stream, {})",
            self.settings.names().table(BARRIERS),
            string(&self.settings.pipeline),
            string(barrier),
            string(phase.as_str()),
            string(&format!("{siblings}/"))
        );
        let rows = self.query(&sql).await?;
        Ok(cells(rows.first()).first().and_then(|v| v.as_deref()).map(parse_i64).transpose()?.unwrap_or(0) as u32)
    }
}
