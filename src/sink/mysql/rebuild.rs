//! Rebuilding a stopped table aside, for `binferry resync` of a table the target stopped (an
//! incompatible schema change, a value it refused).
//!
//! The stale copy stays the table readers query until the copy is complete. From the
//! resync's [`TableChange::Rebuild`](crate::event::TableChange::Rebuild) record on, the
//! table's rows go to a shadow table `<name>__rebuilding`, which the first row creates with
//! the source's new shape. At `RebuildDone` (after the copy's last chunk, before its sweep) one
//! `RENAME TABLE` moves the stale copy to `<name>__stopped_<time>` and the shadow to
//! `<name>`. MySQL renames several tables in one atomic statement, so a reader sees the stale
//! rows, then all the new ones: never a missing or half-filled table.
//!
//! The durable state is a row of `_binferry_rebuilds` per table being rebuilt, written in
//! the transaction that removes the table's stop row. Its phase says whether the swap
//! started: after a crash that is the one fact the tables present cannot tell (see
//! [`plan_swap`]). Tombstones stay under the table's own name: they are facts about source
//! positions, and hold for the shadow as much as for the stale copy.
//!
//! Both records are DDL barriers with Kafka key partitions (`writer::barrier`): every
//! stream's sink applies them, so each learns where the table's rows go at the same record
//! of its stream.

use mysql_async::prelude::Queryable;
use tracing::info;

use super::statements::q;
use super::{MysqlSink, REBUILDS_TABLE, STOPPED_TABLE, table_exists};
use crate::error::{Error, ErrorKind, Result};
use crate::schema::TableRef;
use crate::sink::TableState;
use crate::sink::rebuild::{Aside, Phase, Present};

/// How long a sink waits for another to finish a rebuild's swap (a few renames).
const SWAP_LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(60);

/// The renames `(from, to)` that finish the rebuild of `name`, in one statement, given what
/// exists; none when there is nothing left to do. Pure, so that every crash point is tested.
///
/// - The shadow exists: the stale copy (if any) moves aside and the shadow takes its place.
/// - The shadow is gone in the swapping phase: the rename was done before a crash.
/// - The shadow is gone while copying: the copy wrote no row (the source table is empty), so
///   the stale copy only moves aside. The table comes back, empty, with the copy's closing
///   sweep right after, which brings the table's shape.
pub(super) fn plan_swap(name: &str, aside: &Aside, present: Present) -> Result<Vec<(String, String)>> {
    let live = (name.to_string(), aside.kept.clone());
    let shadow = (aside.shadow.clone(), name.to_string());
    match (present.shadow, aside.phase) {
        // Unsupported: it stops this table only (the caller names it); the others go on.
        (true, _) if present.live && present.kept => Err(Error::new(
            ErrorKind::Unsupported,
            format!("cannot move the stale copy of `{name}` aside: `{}` exists already", aside.kept),
        )
        .with_hint(format!("rename or drop `{}` in the target, then resync the table again", aside.kept))),
        (true, _) if present.live => Ok(vec![live, shadow]),
        (true, _) => Ok(vec![shadow]),
        // Swapping: the rename was done before a crash. (Emptying is BigQuery's: never here.)
        (false, Phase::Swapping | Phase::Emptying) => Ok(vec![]),
        (false, Phase::Copying) if present.live && !present.kept => Ok(vec![live]),
        (false, Phase::Copying) => Ok(vec![]),
    }
}

impl MysqlSink {
    /// Read the rebuilds under way. One whose swap had started before a crash is finished
    /// first, before any row is applied (a replayed row must not recreate its shadow).
    pub(super) async fn load_rebuilds(&mut self) -> Result<()> {
        let sql = format!(
            "SELECT table_name, shadow, kept, phase FROM {}.{} WHERE pipeline = ?",
            q(&self.settings.database),
            q(REBUILDS_TABLE)
        );
        let pipeline = self.settings.pipeline.clone();
        let rows: Vec<(String, String, String, String)> = self
            .ddl_conn()
            .await?
            .exec(sql, (pipeline,))
            .await
            .map_err(|e| Error::target_mysql(e, "reading the tables being rebuilt"))?;
        self.rebuilding.clear();
        for (name, shadow, kept, phase) in rows {
            let aside = Aside { shadow, kept, phase: Phase::parse(&phase)? };
            let swapping = aside.phase == Phase::Swapping;
            self.rebuilding.set(&name, Some(&aside));
            if swapping {
                self.finish_rebuild(&name).await?;
            }
        }
        Ok(())
    }

    /// Refresh this sink's view of target table `name`'s rebuild from the target: another
    /// stream's sink may have started or finished it.
    async fn reload_rebuild(&mut self, name: &str) -> Result<Option<Aside>> {
        let sql = format!(
            "SELECT shadow, kept, phase FROM {}.{} WHERE pipeline = ? AND table_name = ?",
            q(&self.settings.database),
            q(REBUILDS_TABLE)
        );
        let params = (self.settings.pipeline.clone(), name.to_string());
        let row: Option<(String, String, String)> = self
            .ddl_conn()
            .await?
            .exec_first(sql, params)
            .await
            .map_err(|e| Error::target_mysql(e, "reading a table being rebuilt"))?;
        let aside = match row {
            Some((shadow, kept, phase)) => Some(Aside { shadow, kept, phase: Phase::parse(&phase)? }),
            None => None,
        };
        self.rebuilding.set(name, aside.as_ref());
        Ok(aside)
    }

    /// `Rebuild` of source table `table` (target table `name`): when the table is stopped,
    /// its rows go to a fresh shadow from here on and its stop is cleared, in one
    /// transaction. Otherwise (not stopped, or another stream did this) only the view is
    /// refreshed.
    pub(super) async fn start_rebuild(&mut self, table: &TableRef, name: &str, timestamp: u32) -> Result<()> {
        let stopped = self.stopped_tables().await?.into_iter().any(|(t, _)| &t == table);
        if !stopped {
            self.reload_rebuild(name).await?;
            return Ok(());
        }
        // An earlier rebuild that stopped again left a shadow no reader ever saw.
        if let Some(old) = self.reload_rebuild(name).await? {
            self.ddl(&format!("DROP TABLE IF EXISTS {}.{}", q(&self.settings.database), q(&old.shadow))).await?;
        }
        let aside = Aside::new(name, timestamp, super::MAX_NAME_CHARS);
        let (db, pipeline) = (q(&self.settings.database), self.settings.pipeline.clone());
        let conn = self.ddl_conn().await?;
        let fail = |e| Error::target_mysql(e, "starting the rebuild of a stopped table");
        conn.query_drop("START TRANSACTION").await.map_err(fail)?;
        conn.exec_drop(
            format!("DELETE FROM {db}.{} WHERE pipeline = ? AND source_db = ? AND source_table = ?", q(STOPPED_TABLE)),
            (pipeline.clone(), table.db.clone(), table.name.clone()),
        )
        .await
        .map_err(fail)?;
        conn.exec_drop(
            format!(
                "REPLACE INTO {db}.{} (pipeline, table_name, shadow, kept, phase, started_at) \
                 VALUES (?, ?, ?, ?, ?, UTC_TIMESTAMP(6))",
                q(REBUILDS_TABLE)
            ),
            (pipeline, name.to_string(), aside.shadow.clone(), aside.kept.clone(), aside.phase.as_str()),
        )
        .await
        .map_err(fail)?;
        conn.query_drop("COMMIT").await.map_err(fail)?;
        info!(table = %name, shadow = %aside.shadow, "stopped table rebuilt aside; the stale copy stays readable until the copy is complete");
        self.rebuilding.set(name, Some(&aside));
        self.forget(name);
        Ok(())
    }

    /// Put the rebuilt table in place of target table `name` (see [`plan_swap`]) and end its
    /// rebuild; nothing when it is not rebuilt aside.
    ///
    /// Several sinks can get here at once: after a crash mid-swap every Kafka partition's sink
    /// (and every worker process's) finds the swap unfinished at start-up. Each would find the
    /// shadow present and rename it, and all but the first rename would fail on a shadow that
    /// is gone. So the swap holds a named lock of the target server, and what is left to do is
    /// read under it.
    pub(super) async fn finish_rebuild(&mut self, name: &str) -> Result<()> {
        let lock = format!("{}.{}", self.settings.database, name);
        let got: Option<Option<i64>> = self
            .ddl_conn()
            .await?
            .exec_first(
                "SELECT GET_LOCK(CONCAT('binferry-rebuild-', MD5(?)), ?)",
                (lock.clone(), SWAP_LOCK_WAIT.as_secs()),
            )
            .await
            .map_err(|e| Error::target_mysql(e, "waiting for the lock of a rebuild's swap"))?;
        if got.flatten() != Some(1) {
            return Err(Error::new(
                ErrorKind::TargetUnavailable,
                format!(
                    "another connection held the lock of the rebuild of `{name}` for {} s",
                    SWAP_LOCK_WAIT.as_secs()
                ),
            )
            .with_hint(
                "another binferry process is finishing the swap, or a session holds the named lock \
                 `binferry-rebuild-<md5 of database.table>`; this is retried",
            ));
        }
        let swapped = self.swap_locked(name).await;
        // Released with the session too, should this connection fail.
        let released = match self.ddl_conn().await {
            Ok(conn) => conn
                .exec_drop("DO RELEASE_LOCK(CONCAT('binferry-rebuild-', MD5(?)))", (lock,))
                .await
                .map_err(|e| Error::target_mysql(e, "releasing the lock of a rebuild's swap")),
            Err(e) => Err(e),
        };
        swapped.and(released)
    }

    /// [`Self::finish_rebuild`] under its lock.
    async fn swap_locked(&mut self, name: &str) -> Result<()> {
        let known = self.rebuilding.get(name).cloned();
        let Some(mut aside) = self.reload_rebuild(name).await? else {
            // Another stream's sink put the rebuilt table in place: what this one knew of the
            // name's shape is of the stale copy.
            if let Some(known) = known {
                self.forget(name);
                self.forget(&known.shadow);
            }
            return Ok(());
        };
        let db = self.settings.database.clone();
        let conn = self.ddl_conn().await?;
        let present = Present {
            live: table_exists(conn, &db, name).await?,
            shadow: table_exists(conn, &db, &aside.shadow).await?,
            kept: table_exists(conn, &db, &aside.kept).await?,
        };
        let renames = plan_swap(name, &aside, present)?;
        if renames.iter().any(|(from, _)| from == &aside.shadow) && aside.phase != Phase::Swapping {
            self.set_phase(name, Phase::Swapping).await?;
            aside.phase = Phase::Swapping;
        }
        if !renames.is_empty() {
            crate::failpoint::hit("rebuild-before-rename");
            let list: Vec<String> =
                renames.iter().map(|(from, to)| format!("{}.{} TO {}.{}", q(&db), q(from), q(&db), q(to))).collect();
            self.ddl(&format!("RENAME TABLE {}", list.join(", "))).await?;
            crate::failpoint::hit("rebuild-after-rename");
        }
        self.end_rebuild(name).await?;
        self.forget(name);
        self.forget(&aside.shadow);
        let kept = if present.live && renames.iter().any(|(from, _)| from == name) { aside.kept.as_str() } else { "" };
        info!(table = %name, kept_as = %kept, "rebuilt table in place");
        Ok(())
    }

    /// The source dropped target table `name`'s table while it was rebuilt aside: its shadow,
    /// which no reader saw, goes; the stale copy is then dropped or kept as any dropped table.
    pub(super) async fn abandon_rebuild(&mut self, name: &str) -> Result<()> {
        let Some(aside) = self.reload_rebuild(name).await? else { return Ok(()) };
        let db = q(&self.settings.database);
        self.ddl(&format!("DROP TABLE IF EXISTS {db}.{}", q(&aside.shadow))).await?;
        self.end_rebuild(name).await?;
        self.forget(&aside.shadow);
        Ok(())
    }

    /// Remove target table `name`'s rebuild row: its rows go to the table itself again.
    async fn end_rebuild(&mut self, name: &str) -> Result<()> {
        let sql = format!(
            "DELETE FROM {}.{} WHERE pipeline = ? AND table_name = ?",
            q(&self.settings.database),
            q(REBUILDS_TABLE)
        );
        let params = (self.settings.pipeline.clone(), name.to_string());
        self.ddl_conn()
            .await?
            .exec_drop(sql, params)
            .await
            .map_err(|e| Error::target_mysql(e, "ending the rebuild of a table"))?;
        self.rebuilding.set(name, None);
        Ok(())
    }

    async fn set_phase(&mut self, name: &str, phase: Phase) -> Result<()> {
        let sql = format!(
            "UPDATE {}.{} SET phase = ? WHERE pipeline = ? AND table_name = ?",
            q(&self.settings.database),
            q(REBUILDS_TABLE)
        );
        let params = (phase.as_str(), self.settings.pipeline.clone(), name.to_string());
        self.ddl_conn()
            .await?
            .exec_drop(sql, params)
            .await
            .map_err(|e| Error::target_mysql(e, "recording a rebuild's phase"))
    }

    /// Forget what this sink knows of target table `name`'s shape: it is another table now.
    fn forget(&mut self, name: &str) {
        self.tables.remove(name);
        self.owners.remove(name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn aside(phase: Phase) -> Aside {
        Aside { shadow: "t__rebuilding".into(), kept: "t__stopped_20261129120000".into(), phase }
    }

    fn renames(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect()
    }

    /// Every crash point of a swap, and the cases the copy leaves: (phase, live, shadow,
    /// kept) → renames.
    #[test]
    fn a_swap_is_finished_from_whatever_a_crash_left() {
        let (kept, shadow) = ("t__stopped_20261129120000", "t__rebuilding");
        type Case<'a> = (Phase, bool, bool, bool, &'a [(&'a str, &'a str)]);
        let cases: &[Case] = &[
            // The copy wrote rows: the stale copy moves aside, the shadow takes its place.
            (Phase::Copying, true, true, false, &[("t", kept), (shadow, "t")]),
            // Crash after the phase was recorded, before the rename: the same.
            (Phase::Swapping, true, true, false, &[("t", kept), (shadow, "t")]),
            // The table had never been created (stopped at its first row).
            (Phase::Copying, false, true, false, &[(shadow, "t")]),
            // Crash after the rename: done; the table there is the rebuilt one.
            (Phase::Swapping, true, false, true, &[]),
            (Phase::Swapping, true, false, false, &[]),
            // The source table is empty: the stale copy only moves aside.
            (Phase::Copying, true, false, false, &[("t", kept)]),
            // ... and a crash after that rename: done.
            (Phase::Copying, false, false, true, &[]),
            (Phase::Copying, false, false, false, &[]),
        ];
        for &(phase, live, shadow_present, kept_present, want) in cases {
            let present = Present { live, shadow: shadow_present, kept: kept_present };
            let got = plan_swap("t", &aside(phase), present).unwrap();
            assert_eq!(got, renames(want), "{phase:?} {present:?}");
        }
    }

    #[test]
    fn a_swap_that_would_overwrite_a_kept_copy_stops_the_table_with_the_fix() {
        let present = Present { live: true, shadow: true, kept: true };
        let e = plan_swap("t", &aside(Phase::Copying), present).unwrap_err();
        assert!(e.to_string().contains("`t__stopped_20261129120000` exists already"), "{e}");
        assert!(e.hint().is_some_and(|h| h.contains("rename or drop")), "{e:?}");
        // A name taken by hand stops that table, not the pipeline.
        assert_eq!(e.kind().scope(), crate::error::Scope::Table);
    }
}
