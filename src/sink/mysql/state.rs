//! The sink's own tables in the target database: the applied offset per stream, tombstones,
//! stopped tables, tables rebuilt aside (`rebuild`) and DDL barriers ([`TableState`]),
//! created on first use and garbage-collected on a schedule.

use std::time::Instant;

use mysql_async::prelude::Queryable;
use tracing::info;

use super::statements::q;
use super::{
    BARRIER_TABLE, GC_INTERVAL, MysqlSink, REBUILDS_TABLE, STATE_TABLE, STOPPED_TABLE, TOMBSTONE_TABLE, is_mariadb,
};
use crate::error::{Error, Result};
use crate::schema::TableRef;
use crate::sink::{BarrierPhase, TableState};

impl MysqlSink {
    pub(super) async fn ensure_state(&mut self) -> Result<()> {
        if self.state_ready {
            return Ok(());
        }
        let db = q(&self.settings.database);
        self.mariadb = is_mariadb(self.ddl_conn().await?).await?;
        self.ddl(&format!("CREATE DATABASE IF NOT EXISTS {db}")).await?;
        self.ddl(&format!(
            "CREATE TABLE IF NOT EXISTS {db}.{} (\
               pipeline VARCHAR(64) NOT NULL, stream VARCHAR(255) NOT NULL, \
               applied_offset BIGINT UNSIGNED NOT NULL, source_file VARCHAR(512) NOT NULL, \
               source_offset BIGINT UNSIGNED NOT NULL, updated_at TIMESTAMP(6) NOT NULL, \
               PRIMARY KEY (pipeline, stream)) ENGINE=InnoDB",
            q(STATE_TABLE)
        ))
        .await?;
        self.ddl(&format!(
            "CREATE TABLE IF NOT EXISTS {db}.{} (\
               table_name VARCHAR(255) NOT NULL, key_hash BINARY(16) NOT NULL, pos BINARY(16) NOT NULL, \
               deleted_at TIMESTAMP(6) NOT NULL, PRIMARY KEY (table_name, key_hash), KEY (deleted_at)) ENGINE=InnoDB",
            q(TOMBSTONE_TABLE)
        ))
        .await?;
        self.ddl(&format!(
            "CREATE TABLE IF NOT EXISTS {db}.{} (\
               pipeline VARCHAR(64) NOT NULL, source_db VARCHAR(64) NOT NULL, source_table VARCHAR(64) NOT NULL, \
               reason TEXT NOT NULL, stopped_at TIMESTAMP(6) NOT NULL, \
               PRIMARY KEY (pipeline, source_db, source_table)) ENGINE=InnoDB",
            q(STOPPED_TABLE)
        ))
        .await?;
        self.ddl(&format!(
            "CREATE TABLE IF NOT EXISTS {db}.{} (\
               pipeline VARCHAR(64) NOT NULL, barrier_hash BINARY(16) NOT NULL, stream VARCHAR(255) NOT NULL, \
               phase VARCHAR(16) NOT NULL, barrier TEXT NOT NULL, reached_at TIMESTAMP(6) NOT NULL, \
               PRIMARY KEY (pipeline, barrier_hash, phase, stream)) ENGINE=InnoDB",
            q(BARRIER_TABLE)
        ))
        .await?;
        self.ddl(&format!(
            "CREATE TABLE IF NOT EXISTS {db}.{} (\
               pipeline VARCHAR(64) NOT NULL, table_name VARCHAR(255) NOT NULL, shadow VARCHAR(255) NOT NULL, \
               kept VARCHAR(255) NOT NULL, phase VARCHAR(16) NOT NULL, started_at TIMESTAMP(6) NOT NULL, \
               PRIMARY KEY (pipeline, table_name)) ENGINE=InnoDB",
            q(REBUILDS_TABLE)
        ))
        .await?;
        // Ready before the rebuilds load: finishing one reads the stop table.
        self.state_ready = true;
        if let Err(e) = self.load_rebuilds().await {
            self.state_ready = false;
            return Err(e);
        }
        Ok(())
    }

    /// Remove tombstones and DDL barriers older than the buffer retains: no record that could
    /// need them can be read any more. (A barrier is kept twice as long: a partition arriving
    /// at it that late would have lost its records anyway.)
    pub(super) async fn collect_garbage(&mut self) -> Result<()> {
        if self.last_gc.is_some_and(|t| t.elapsed() < GC_INTERVAL) {
            return Ok(());
        }
        self.last_gc = Some(Instant::now());
        let sql = format!(
            "DELETE FROM {}.{} WHERE deleted_at < UTC_TIMESTAMP(6) - INTERVAL ? SECOND",
            q(&self.settings.database),
            q(TOMBSTONE_TABLE)
        );
        let barriers = format!(
            "DELETE FROM {}.{} WHERE reached_at < UTC_TIMESTAMP(6) - INTERVAL ? SECOND",
            q(&self.settings.database),
            q(BARRIER_TABLE)
        );
        let secs = self.settings.tombstone_retention.as_secs();
        let conn = self.data().await?;
        conn.exec_drop(sql, (secs,)).await.map_err(|e| Error::target_mysql(e, "removing expired tombstones"))?;
        let removed = conn.affected_rows();
        if removed > 0 {
            info!(removed, "expired tombstones removed");
        }
        conn.exec_drop(barriers, (secs.saturating_mul(2),))
            .await
            .map_err(|e| Error::target_mysql(e, "removing expired DDL barriers"))?;
        Ok(())
    }
}

/// The fixed-size key of a barrier (its text can be longer than an index allows).
fn barrier_hash(barrier: &str) -> [u8; 16] {
    let mut out = [0u8; 16];
    out.copy_from_slice(&blake3::hash(barrier.as_bytes()).as_bytes()[..16]);
    out
}

impl TableState for MysqlSink {
    async fn stopped_tables(&mut self) -> Result<Vec<(TableRef, String)>> {
        self.ensure_state().await?;
        let sql = format!(
            "SELECT source_db, source_table, reason FROM {}.{} WHERE pipeline = ?",
            q(&self.settings.database),
            q(STOPPED_TABLE)
        );
        let pipeline = self.settings.pipeline.clone();
        let rows: Vec<(String, String, String)> = self
            .data()
            .await?
            .exec(sql, (pipeline,))
            .await
            .map_err(|e| Error::target_mysql(e, "reading stopped tables"))?;
        Ok(rows.into_iter().map(|(d, t, reason)| (TableRef::new(d, t), reason)).collect())
    }

    async fn stop_table(&mut self, table: &TableRef, reason: &str) -> Result<()> {
        self.ensure_state().await?;
        self.begin().await?;
        let sql = format!(
            "INSERT INTO {}.{} (pipeline, source_db, source_table, reason, stopped_at) VALUES (?, ?, ?, ?, UTC_TIMESTAMP(6)) \
             ON DUPLICATE KEY UPDATE reason = VALUES(reason)",
            q(&self.settings.database),
            q(STOPPED_TABLE)
        );
        let params = (self.settings.pipeline.clone(), table.db.clone(), table.name.clone(), reason.to_string());
        self.data().await?.exec_drop(sql, params).await.map_err(|e| Error::target_mysql(e, "recording a stopped table"))
    }

    async fn ddl_barrier_mark(&mut self, barrier: &str, phase: BarrierPhase) -> Result<()> {
        self.ensure_state().await?;
        let sql = format!(
            "INSERT IGNORE INTO {}.{} (pipeline, barrier_hash, stream, phase, barrier, reached_at) \
             VALUES (?, ?, ?, ?, ?, UTC_TIMESTAMP(6))",
            q(&self.settings.database),
            q(BARRIER_TABLE)
        );
        let params = (
            self.settings.pipeline.clone(),
            barrier_hash(barrier).to_vec(),
            self.settings.stream.clone(),
            phase.as_str(),
            barrier.to_string(),
        );
        self.ddl_conn().await?.exec_drop(sql, params).await.map_err(|e| Error::target_mysql(e, "marking a DDL barrier"))
    }

    async fn ddl_barrier_count(&mut self, barrier: &str, phase: BarrierPhase) -> Result<u32> {
        self.ensure_state().await?;
        let sql = format!(
            "SELECT COUNT(*) FROM {}.{} WHERE pipeline = ? AND barrier_hash = ? AND phase = ?",
            q(&self.settings.database),
            q(BARRIER_TABLE)
        );
        let params = (self.settings.pipeline.clone(), barrier_hash(barrier).to_vec(), phase.as_str());
        let n: Option<u64> = self
            .ddl_conn()
            .await?
            .exec_first(sql, params)
            .await
            .map_err(|e| Error::target_mysql(e, "reading a DDL barrier"))?;
        Ok(n.unwrap_or(0) as u32)
    }
}
