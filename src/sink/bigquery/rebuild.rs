//! Rebuilding a stopped table aside, for `binferry resync` of a table the target stopped (an
//! incompatible schema change, a value BigQuery refused).
//!
//! As on a MySQL target (`sink::mysql::rebuild`), the stale copy stays the table readers query
//! until the copy is complete. From the resync's
//! [`TableChange::Rebuild`](crate::event::TableChange::Rebuild) record on, the table's rows go
//! to a shadow `<name>__rebuilding` with a changelog and MERGEs of its own; the first row
//! creates it in the source's new shape. At `RebuildDone` (after the copy's last chunk, before its
//! sweep) the committed changelog rows are merged and the shadow takes the table's place.
//!
//! BigQuery renames one table per statement, and no statement renames two at once. But
//! `CREATE OR REPLACE TABLE t COPY s` replaces a table in one step for its readers (a table
//! copy: no scan is billed). So the swap is a short list of [`Step`]s:
//!
//! 1. the stale copy is kept: `CREATE TABLE t__stopped_<time> COPY t`;
//! 2. `CREATE OR REPLACE TABLE t COPY t__rebuilding`: readers switch here, from every stale
//!    row to every rebuilt one;
//! 3. the shadow is dropped; then its changelog becomes the table's, and its shape (in
//!    `_binferry_tables`) and tombstones (in `_binferry_truncates`) move to the table's name.
//!
//! These statements are not one transaction. So the rebuild's row in `_binferry_rebuilds` gets
//! the phase `swapping` before step 1, and [`plan_swap`] decides, from the phase and the tables
//! present, which steps a crash left to do. A source table that had no rows left no shadow:
//! then the stale copy is kept and the table dropped (phase `emptying`); it comes back, empty,
//! with the copy's closing sweep, which brings the table's shape.
//!
//! Both records are DDL barriers with Kafka key partitions (`writer::barrier`), and a BigQuery
//! stream merges its committed rows before it arrives at one (`ddl_barrier_mark`): the shadow
//! holds every partition's part of the copy when it takes the table's place.

use tracing::info;

use super::sql::{self, Names, REBUILDS, STOPPED, TABLES, TRUNCATES, string};
use super::state::cells;
use super::{BigQuerySink, CHANGELOG_SUFFIX};
use crate::bigquery_api::Api;
use crate::error::{Error, ErrorKind, Result};
use crate::schema::TableRef;
use crate::sink::TableState;
use crate::sink::rebuild::{Aside, Phase, Present};

/// One statement of a swap (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Step {
    /// Copy the stale table to its kept name.
    KeepStale,
    /// Replace the table by a copy of the shadow.
    Replace,
    DropShadow,
    /// Drop the stale table (its copy was kept; the source table is empty).
    DropLive,
}

/// The phase to record and the steps that finish the rebuild of `name`, given what exists.
/// Pure, so that every crash point is tested.
pub(super) fn plan_swap(name: &str, aside: &Aside, present: Present) -> Result<(Aside, Vec<Step>)> {
    let mut next = aside.clone();
    let steps = match aside.phase {
        Phase::Copying if present.live && present.kept => {
            // Unsupported: it stops this table only (the caller names it); the others go on.
            return Err(Error::new(
                ErrorKind::Unsupported,
                format!("cannot keep the stale copy of BigQuery table {name}: {} exists already", aside.kept),
            )
            .with_hint(format!("rename or drop BigQuery table {}, then resync the table again", aside.kept)));
        }
        Phase::Copying if present.shadow => {
            next.phase = Phase::Swapping;
            if !present.live {
                next.kept = String::new();
            }
            let keep = present.live.then_some(Step::KeepStale);
            keep.into_iter().chain([Step::Replace, Step::DropShadow]).collect()
        }
        Phase::Copying if present.live => {
            next.phase = Phase::Emptying;
            vec![Step::KeepStale, Step::DropLive]
        }
        Phase::Copying => vec![],
        Phase::Swapping if present.shadow => {
            let keep = (!aside.kept.is_empty() && present.live && !present.kept).then_some(Step::KeepStale);
            keep.into_iter().chain([Step::Replace, Step::DropShadow]).collect()
        }
        Phase::Swapping => vec![],
        Phase::Emptying => {
            let keep = (present.live && !present.kept).then_some(Step::KeepStale);
            keep.into_iter().chain(present.live.then_some(Step::DropLive)).collect()
        }
    };
    Ok((next, steps))
}

impl Step {
    fn sql(self, n: &Names<'_>, name: &str, aside: &Aside) -> String {
        match self {
            Step::KeepStale => {
                format!("CREATE TABLE IF NOT EXISTS {} COPY {}", n.table(&aside.kept), n.table(name))
            }
            Step::Replace => format!("CREATE OR REPLACE TABLE {} COPY {}", n.table(name), n.table(&aside.shadow)),
            Step::DropShadow => format!("DROP TABLE IF EXISTS {}", n.table(&aside.shadow)),
            Step::DropLive => format!("DROP TABLE IF EXISTS {}", n.table(name)),
        }
    }
}

/// A rebuild from the cells `shadow, kept, phase` of a `_binferry_rebuilds` row.
fn aside_of(c: &[Option<String>]) -> Result<Aside> {
    let text = |i: usize| c.get(i).cloned().flatten().unwrap_or_default();
    Ok(Aside { shadow: text(0), kept: text(1), phase: Phase::parse(&text(2))? })
}

/// The statements that remove a shadow no reader saw: the table, its changelog, its shape and
/// its tombstones.
fn discard(n: &Names<'_>, shadow: &str) -> [String; 4] {
    [
        format!("DROP TABLE IF EXISTS {}", n.table(shadow)),
        format!("DROP TABLE IF EXISTS {}", n.changelog(shadow)),
        format!("DELETE FROM {} WHERE table_name = {}", n.table(TABLES), string(shadow)),
        format!("DELETE FROM {} WHERE table_name = {}", n.table(TRUNCATES), string(shadow)),
    ]
}

impl BigQuerySink {
    /// Read the rebuilds under way. One whose swap had started before a crash is finished
    /// first, before any row is applied (a row for the table must not reach the shadow).
    pub(super) async fn load_rebuilds(&mut self, api: &Api) -> Result<()> {
        let n = self.settings.names();
        let sql = format!(
            "SELECT table_name, shadow, kept, phase FROM {} WHERE pipeline = {}",
            n.table(REBUILDS),
            string(&self.settings.pipeline)
        );
        let rows = api.query(&sql).await?;
        self.rebuilding.clear();
        let mut unfinished = Vec::new();
        for r in rows {
            let c = cells(Some(&r));
            let name = c.first().cloned().flatten().unwrap_or_default();
            let aside = aside_of(c.get(1..).unwrap_or(&[]))?;
            if aside.phase != Phase::Copying {
                unfinished.push(name.clone());
            }
            self.rebuilding.set(&name, Some(&aside));
        }
        for name in unfinished {
            self.finish_rebuild(api, &name).await?;
        }
        Ok(())
    }

    /// Refresh this sink's view of target table `name`'s rebuild: another stream's sink may
    /// have started or finished it.
    async fn reload_rebuild(&mut self, api: &Api, name: &str) -> Result<Option<Aside>> {
        let sql = format!(
            "SELECT shadow, kept, phase FROM {} WHERE pipeline = {} AND table_name = {} LIMIT 1",
            self.settings.names().table(REBUILDS),
            string(&self.settings.pipeline),
            string(name)
        );
        let rows = api.query(&sql).await?;
        let aside = rows.first().map(|r| aside_of(&cells(Some(r)))).transpose()?;
        self.rebuilding.set(name, aside.as_ref());
        Ok(aside)
    }

    /// `Rebuild` of source table `table` (target table `name`): when the table is stopped,
    /// its rows go to a fresh shadow from here on and its stop is cleared (the stop row goes
    /// last, so a crash before it starts the rebuild again). Otherwise (not stopped, or
    /// another stream did this) only the view is refreshed.
    pub(super) async fn start_rebuild(&mut self, table: &TableRef, name: &str, timestamp: u32) -> Result<()> {
        let api = self.api().await?;
        let stopped = self.stopped_tables().await?.into_iter().any(|(t, _)| &t == table);
        let earlier = self.reload_rebuild(&api, name).await?;
        if !stopped {
            return Ok(());
        }
        let n = self.settings.names();
        let mut statements = Vec::new();
        // An earlier rebuild that stopped again left a shadow no reader ever saw.
        if let Some(old) = earlier {
            statements.extend(discard(&n, &old.shadow));
        }
        // The stale copy keeps its rows but takes no more: its changelog goes.
        statements.push(format!("DROP TABLE IF EXISTS {}", n.changelog(name)));
        statements.push(format!("DELETE FROM {} WHERE table_name = {}", n.table(TABLES), string(name)));
        let aside = Aside::new(name, timestamp, super::MAX_NAME_CHARS);
        statements.push(self.delete_rebuild(name));
        statements.push(format!(
            "INSERT INTO {} (pipeline, table_name, shadow, kept, phase, started_at) \
             VALUES ({}, {}, {}, {}, {}, CURRENT_TIMESTAMP())",
            n.table(REBUILDS),
            string(&self.settings.pipeline),
            string(name),
            string(&aside.shadow),
            string(&aside.kept),
            string(aside.phase.as_str())
        ));
        statements.push(format!(
            "DELETE FROM {} WHERE pipeline = {} AND source_db = {} AND source_table = {}",
            n.table(STOPPED),
            string(&self.settings.pipeline),
            string(&table.db),
            string(&table.name)
        ));
        api.query(&statements.join(";\n")).await?;
        info!(table = %name, shadow = %aside.shadow, "stopped table rebuilt aside; the stale copy stays readable until the copy is complete");
        self.tables.remove(name);
        self.rebuilding.set(name, Some(&aside));
        Ok(())
    }

    /// Put the rebuilt table in place of target table `name` (see [`plan_swap`]) and end its
    /// rebuild; nothing when it is not rebuilt aside. Committed changelog rows must be merged
    /// before (the caller's).
    pub(super) async fn finish_rebuild(&mut self, api: &Api, name: &str) -> Result<()> {
        // One stream of this process at a time: after a crash mid-swap every Kafka partition's
        // sink finds the swap unfinished when it starts, and the first to get here finishes it
        // (the others then find its row gone).
        let ddl = std::sync::Arc::clone(&self.settings.ddl);
        let _one_at_a_time = ddl.lock().await;
        let Some(aside) = self.reload_rebuild(api, name).await? else {
            // Another stream's sink put the rebuilt table in place.
            return Ok(());
        };
        let listed = api.list_tables(&self.settings.dataset).await?;
        let has = |t: &str| listed.iter().any(|l| l == t);
        let present = Present { live: has(name), shadow: has(&aside.shadow), kept: has(&aside.kept) };
        let (next, steps) = plan_swap(name, &aside, present)?;
        let n = self.settings.names();
        if next != aside {
            api.query(&format!(
                "UPDATE {} SET phase = {}, kept = {} WHERE pipeline = {} AND table_name = {}",
                n.table(REBUILDS),
                string(next.phase.as_str()),
                string(&next.kept),
                string(&self.settings.pipeline),
                string(name)
            ))
            .await?;
        }
        for step in &steps {
            if *step == Step::Replace {
                crate::failpoint::hit("rebuild-before-rename");
            }
            api.query(&step.sql(&n, name, &next)).await?;
            if *step == Step::Replace {
                crate::failpoint::hit("rebuild-after-rename");
            }
        }
        // Bookkeeping, each statement idempotent: the shadow's changelog, shape and
        // tombstones become the table's; the rebuild's row goes last.
        let rename_rows = |t: &str| {
            format!(
                "UPDATE {} SET table_name = {} WHERE table_name = {}",
                n.table(t),
                string(name),
                string(&next.shadow)
            )
        };
        let script = [
            format!(
                "ALTER TABLE IF EXISTS {} RENAME TO {}",
                n.changelog(&next.shadow),
                sql::ident(&format!("{name}{CHANGELOG_SUFFIX}"))
            ),
            rename_rows(TABLES),
            rename_rows(TRUNCATES),
            self.delete_rebuild(name),
        ];
        api.query(&script.join(";\n")).await?;
        self.rebuilding.set(name, None);
        self.load_tables(api).await?;
        self.checked.clear();
        let kept = if steps.contains(&Step::KeepStale) || present.kept { next.kept.as_str() } else { "" };
        info!(table = %name, kept_as = %kept, "rebuilt table in place");
        Ok(())
    }

    /// The source dropped target table `name`'s table while it was rebuilt aside: its shadow,
    /// which no reader saw, goes. Returns whether it was rebuilt aside (the stale copy is then
    /// the table to drop or keep).
    pub(super) async fn abandon_rebuild(&mut self, api: &Api, name: &str) -> Result<bool> {
        let Some(aside) = self.reload_rebuild(api, name).await? else { return Ok(false) };
        let mut script = discard(&self.settings.names(), &aside.shadow).to_vec();
        script.push(self.delete_rebuild(name));
        api.query(&script.join(";\n")).await?;
        self.rebuilding.set(name, None);
        self.tables.remove(&aside.shadow);
        Ok(true)
    }

    fn delete_rebuild(&self, name: &str) -> String {
        format!(
            "DELETE FROM {} WHERE pipeline = {} AND table_name = {}",
            self.settings.names().table(REBUILDS),
            string(&self.settings.pipeline),
            string(name)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEPT: &str = "t__stopped_20261129120000";

    fn aside(phase: Phase) -> Aside {
        Aside { shadow: "t__rebuilding".into(), kept: KEPT.into(), phase }
    }

    /// Every crash point of a swap, and the cases the copy leaves: (phase, live, shadow,
    /// kept) → the phase recorded, whether a stale copy is kept, and the steps.
    #[test]
    fn a_swap_is_finished_from_whatever_a_crash_left() {
        use Step::*;
        type Case<'a> = (Phase, bool, bool, bool, Phase, bool, &'a [Step]);
        let cases: &[Case] = &[
            // The copy wrote rows: the stale copy is kept, the shadow takes its place.
            (Phase::Copying, true, true, false, Phase::Swapping, true, &[KeepStale, Replace, DropShadow]),
            // Crash after the phase was recorded: the same.
            (Phase::Swapping, true, true, false, Phase::Swapping, true, &[KeepStale, Replace, DropShadow]),
            // Crash after the stale copy was kept, or after the replace: replace again (the
            // shadow takes no rows any more), then drop it.
            (Phase::Swapping, true, true, true, Phase::Swapping, true, &[Replace, DropShadow]),
            // Crash after the shadow was dropped: only the bookkeeping is left.
            (Phase::Swapping, true, false, true, Phase::Swapping, true, &[]),
            // The table had never been created (stopped at its first row): nothing to keep.
            (Phase::Copying, false, true, false, Phase::Swapping, false, &[Replace, DropShadow]),
            // The source table is empty: the stale copy is kept, the table dropped.
            (Phase::Copying, true, false, false, Phase::Emptying, true, &[KeepStale, DropLive]),
            (Phase::Emptying, true, false, true, Phase::Emptying, true, &[DropLive]),
            (Phase::Emptying, false, false, true, Phase::Emptying, true, &[]),
            // Nothing was ever created.
            (Phase::Copying, false, false, false, Phase::Copying, true, &[]),
        ];
        for &(phase, live, shadow, kept, next_phase, keeps, want) in cases {
            let present = Present { live, shadow, kept };
            let (next, steps) = plan_swap("t", &aside(phase), present).unwrap();
            assert_eq!(steps, want, "{phase:?} {present:?}");
            assert_eq!(next.phase, next_phase, "{phase:?} {present:?}");
            assert_eq!(!next.kept.is_empty(), keeps, "{phase:?} {present:?}");
        }
        // A swap into a table that never existed, resumed after the replace: the table there
        // is the rebuilt one, not a stale copy to keep.
        let resumed = Aside { kept: String::new(), ..aside(Phase::Swapping) };
        let present = Present { live: true, shadow: true, kept: false };
        assert_eq!(plan_swap("t", &resumed, present).unwrap().1, [Replace, DropShadow]);
    }

    #[test]
    fn a_swap_that_would_overwrite_a_kept_copy_stops_the_table_with_the_fix() {
        for shadow in [true, false] {
            let present = Present { live: true, shadow, kept: true };
            let e = plan_swap("t", &aside(Phase::Copying), present).unwrap_err();
            assert!(e.to_string().contains(&format!("{KEPT} exists already")), "{e}");
            assert!(e.hint().is_some_and(|h| h.contains("rename or drop")), "{e:?}");
            assert_eq!(e.kind().scope(), crate::error::Scope::Table);
        }
    }

    #[test]
    fn steps_copy_and_replace_whole_tables() {
        let n = Names { project: "p", dataset: "d" };
        let a = aside(Phase::Swapping);
        assert_eq!(Step::KeepStale.sql(&n, "t", &a), format!("CREATE TABLE IF NOT EXISTS `p.d.{KEPT}` COPY `p.d.t`"));
        assert_eq!(Step::Replace.sql(&n, "t", &a), "CREATE OR REPLACE TABLE `p.d.t` COPY `p.d.t__rebuilding`");
        assert_eq!(Step::DropShadow.sql(&n, "t", &a), "DROP TABLE IF EXISTS `p.d.t__rebuilding`");
        assert_eq!(Step::DropLive.sql(&n, "t", &a), "DROP TABLE IF EXISTS `p.d.t`");
    }
}
