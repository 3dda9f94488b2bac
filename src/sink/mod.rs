//! Sinks apply compacted batches to a target.
//!
//! # Delivery contract
//!
//! - The writer calls [`Sink::apply`] zero or more times, then
//!   [`Sink::commit`] with the buffer offset of the last record the applied
//!   batches cover. Everything applied since the previous commit and the
//!   offset must become durable **atomically**: after a crash the target holds
//!   either all of it or none of it.
//! - The one exception: a batch that holds nothing but rows a table copy read
//!   (`RowOp::Upsert { copied: true, .. }`; the writer never batches them with
//!   source transactions) may become durable before its commit, in parts. Such
//!   rows belong to no source transaction and their positions alone decide
//!   whether they apply, so after a crash they are applied again as stale or
//!   equal rows.
//! - [`Sink::applied_offset`] returns the offset of the last commit. The writer
//!   resumes right after it; a sink must never report an offset whose changes
//!   are not durable, and the stored offset never moves backward.
//! - Every change carries its source position. A sink applies a change to a
//!   row only if it is newer than the position stored with that row, so
//!   duplicates delivered by upstream stages have no effect.
//!
//! A target is two things the writer uses together: the data path ([`Sink`]) and the
//! durable state it keeps about tables and about the pipeline's other streams
//! ([`TableState`]: stopped tables, DDL barriers). They are separate traits so that the
//! writer's stop and barrier logic can be tested against [`MemoryState`] alone.

pub mod bigquery;
pub mod mysql;
mod rebuild;
mod state;
mod target;

#[cfg(test)]
pub(crate) use state::MemoryState;
pub use state::{BarrierPhase, TableState};
pub use target::{RunId, Target, TargetSettings};

use std::future::Future;

use crate::error::Result;
use crate::event::SchemaChange;
use crate::event::batch::Batch;
use crate::position::Position;
use crate::schema::{TableRef, TableSchema};

/// `YYYYmmddHHMMSS` of `timestamp`, for the names target tables are kept under
/// (`<name>__dropped_<stamp>`, `<name>__stopped_<stamp>`): the same statement gives the same
/// name however often it is applied.
pub(crate) fn name_stamp(timestamp: u32) -> String {
    crate::event::value::format_epoch(i64::from(timestamp), 0, 0).replace(['-', ':', ' '], "")
}

/// The name target table `name` is kept under when `drop` (a DROP TABLE or the drop half of
/// a `CREATE OR REPLACE TABLE`) removes it from the source:
/// `<name>__dropped_<stamp>_<tag>`, at most `max_chars` long (see [`marked_name`]).
///
/// The tag, six hex digits of a hash of the statement's position, tells apart two drops of
/// one name within a second (a table replaced twice in a row), which the stamp alone would
/// take for one drop applied twice. The same statement always gives the same name, so a sink
/// sees that a drop applied again (a replay, a retry) is done.
pub(crate) fn dropped_name(name: &str, drop: &SchemaChange, max_chars: usize) -> String {
    let mut hash = blake3::Hasher::new();
    hash.update(drop.position.file.as_bytes());
    hash.update(&drop.position.offset.to_be_bytes());
    marked_name(name, &format!("__dropped_{}_{}", name_stamp(drop.timestamp), tag(hash)), max_chars)
}

/// `<name><suffix>`, at most `max_chars` long: a name too long for that keeps its beginning
/// and a tag of the whole name (six hex digits), so two long names that begin alike stay
/// apart. The same name always gives the same result.
pub(crate) fn marked_name(name: &str, suffix: &str, max_chars: usize) -> String {
    if name.chars().count() + suffix.chars().count() <= max_chars {
        return format!("{name}{suffix}");
    }
    let mut hash = blake3::Hasher::new();
    hash.update(name.as_bytes());
    let tag = format!("_{}", tag(hash));
    let room = max_chars.saturating_sub(suffix.chars().count() + tag.len());
    let kept: String = name.chars().take(room).collect();
    format!("{kept}{tag}{suffix}")
}

/// Six hex digits of `hash`.
fn tag(hash: blake3::Hasher) -> String {
    hash.finalize().as_bytes()[..3].iter().map(|b| format!("{b:02x}")).collect()
}

/// What applying a batch did, per table (for the per-table counters); [`BatchCounts::total`]
/// sums them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BatchCounts {
    /// Each table of the batch with its counts.
    pub tables: Vec<(TableRef, ApplyCounts)>,
}

impl BatchCounts {
    /// All tables together.
    pub fn total(&self) -> ApplyCounts {
        self.tables.iter().fold(ApplyCounts::default(), |a, (_, c)| ApplyCounts {
            written: a.written + c.written,
            unchanged: a.unchanged + c.unchanged,
            stale: a.stale + c.stale,
        })
    }
}

/// What applying a batch did, row by row.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ApplyCounts {
    /// Rows inserted, updated or deleted in the target.
    pub written: u64,
    /// Changes whose row already had these values (same hash): no data written.
    pub unchanged: u64,
    /// Changes older than what the target holds (replays, duplicates): skipped.
    pub stale: u64,
}

impl std::ops::AddAssign for ApplyCounts {
    fn add_assign(&mut self, other: ApplyCounts) {
        self.written += other.written;
        self.unchanged += other.unchanged;
        self.stale += other.stale;
    }
}

/// The data path of a target. See the module docs for the contract.
pub trait Sink: Send {
    /// Offset of the last committed buffer record, `None` when nothing was ever applied.
    fn applied_offset(&mut self) -> impl Future<Output = Result<Option<u64>>> + Send;

    /// Create or extend the target table for `schema` (outside the data transaction).
    fn ensure_table(&mut self, schema: &TableSchema) -> impl Future<Output = Result<()>> + Send;

    /// Apply a batch inside the open target transaction (starting one if needed).
    fn apply(&mut self, batch: &Batch) -> impl Future<Output = Result<BatchCounts>> + Send;

    /// Apply a DDL change (truncate, drop, renames) in source order. Must be idempotent: after
    /// a crash it may be applied again before the offset that covers it is committed.
    fn apply_schema_change(&mut self, change: &SchemaChange) -> impl Future<Output = Result<()>> + Send;

    /// Commit the open transaction together with `offset` (and the source `position` it reflects).
    fn commit(&mut self, offset: u64, position: &Position) -> impl Future<Output = Result<()>> + Send;

    /// Abandon the open transaction.
    fn rollback(&mut self) -> impl Future<Output = Result<()>> + Send;

    /// Drop connections after a failure; the next call reconnects.
    fn reset(&mut self) -> impl Future<Output = ()> + Send;

    /// Called when the writer has nothing to apply and no target transaction is open (and
    /// once more with `draining` before it stops): time for deferred work, such as the
    /// BigQuery MERGE that must run on a schedule even when no new change arrives.
    fn idle(&mut self, draining: bool) -> impl Future<Output = Result<()>> + Send {
        let _ = draining;
        async { Ok(()) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::TableChange;

    #[test]
    fn a_dropped_table_is_kept_under_a_name_of_its_own_statement() {
        let drop = |offset: u64| {
            SchemaChange::new(
                TableRef::new("d", "t"),
                TableChange::Drop,
                Position::new("binlog.000001", offset),
                1_700_000_000,
            )
        };
        let name = dropped_name("t", &drop(1802), 64);
        assert!(name.starts_with("t__dropped_20231114221320_") && name.len() == 32, "{name}");
        // Applied again (a replay, a retry): the same name, so the sink sees it is done.
        assert_eq!(name, dropped_name("t", &drop(1802), 64));
        // Replaced twice within one second: two tables kept.
        assert_ne!(name, dropped_name("t", &drop(2600), 64));
        // MySQL's 64 characters: a long name is shortened, and two that begin alike stay apart.
        let long = "a_table_name_that_is_long_enough_to_need_shortening_x";
        let (x, y) = (dropped_name(long, &drop(1802), 64), dropped_name(&long.replace("_x", "_y"), &drop(1802), 64));
        assert_eq!((x.chars().count(), y.chars().count()), (64, 64));
        assert_ne!(x, y);
        assert!(x.starts_with("a_table_name_that_is_long"), "{x}");
        assert_eq!(dropped_name(long, &drop(1802), 1024), format!("{long}{}", &x[x.find("__dropped_").unwrap()..]));
    }

    #[test]
    fn a_marked_name_fits_and_long_names_that_begin_alike_stay_apart() {
        assert_eq!(marked_name("recipes", "__rebuilding", 64), "recipes__rebuilding");
        let long = "a_table_name_that_is_long_enough_to_need_shortening_x";
        let (x, y) =
            (marked_name(long, "__rebuilding", 64), marked_name(&long.replace("_x", "_y"), "__rebuilding", 64));
        assert_eq!((x.chars().count(), y.chars().count()), (64, 64));
        assert_ne!(x, y);
        assert!(x.starts_with("a_table_name_that_is_long") && x.ends_with("__rebuilding"), "{x}");
        assert_eq!(x, marked_name(long, "__rebuilding", 64));
        // Characters, not bytes, as MySQL counts them.
        let wide = "é".repeat(60);
        assert_eq!(marked_name(&wide, "__rebuilding", 64).chars().count(), 64);
    }
}
