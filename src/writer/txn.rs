//! The source transaction the writer is reading, and how it recognises one that never ends.
//!
//! A log can hold the beginning of a source transaction whose end never follows. The
//! embedded buffer appends a large transaction in pieces; a Kafka reader publishes a batch
//! of records before it publishes the checkpoint that covers them. When a reader dies
//! between the two, its successor publishes again from the older checkpoint, so the log
//! holds `… T1 | T2 prefix | T1 T2 …`: a prefix of T2, then transactions the log already
//! had. Closing the prefix with T1's commit would make a target commit hold part of T2
//! and T1 (two transactions, one of them half). So the writer tracks what it knows of the
//! transaction in progress and decides, for each record, whether it continues it:
//!
//! - changes of one transaction share its GTID (when the server has GTIDs), count their
//!   [`ChangeEvent::index`] up from 0, and have strictly increasing positions;
//! - snapshot rows (and a repair's deletes) and binlog rows never share a transaction;
//! - a DDL record is a transaction of its own: nothing but its commit follows it;
//! - a commit ends the transaction if it has the same GTID and kind, and a position not
//!   before its last change.
//!
//! A record that does not continue the transaction in progress shows that the transaction
//! was a prefix that never completed: the writer discards it (the complete transaction, if
//! the log has it, comes again in full). Every fact is optional — Kafka's `table` and `key`
//! layouts see only some changes of a transaction, MySQL without GTIDs has none, positions
//! of different binlog sequences do not compare — and a missing fact never splits a
//! transaction that is whole.

use std::cmp::Ordering;

use crate::event::{ChangeEvent, Commit, Op, SchemaChange};
use crate::position::{Gtid, Position};

/// What kind of source transaction is in progress.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// Binlog row changes.
    Binlog,
    /// Rows copied by the snapshot.
    Snapshot,
    /// A DDL statement (its commit follows).
    Ddl,
}

/// The identity of the source transaction in progress: what the next record must agree with.
#[derive(Clone, Debug, Default)]
pub(super) struct SourceTxn {
    /// `None` while no transaction is in progress.
    kind: Option<Kind>,
    gtid: Option<Gtid>,
    last_index: Option<u32>,
    last_position: Option<Position>,
    /// Offset of the transaction's first record in the log.
    first_offset: u64,
    /// Records of it seen so far (applied, held or skipped).
    records: u64,
}

impl SourceTxn {
    /// Whether a transaction is in progress (a record of it was seen, its commit not yet).
    pub(super) fn is_open(&self) -> bool {
        self.kind.is_some()
    }

    /// Offset of the first record of the transaction in progress.
    pub(super) fn first_offset(&self) -> u64 {
        self.first_offset
    }

    /// Records of the transaction in progress seen so far.
    pub(super) fn records(&self) -> u64 {
        self.records
    }

    /// Whether `ev` can belong to the transaction in progress (true when none is).
    pub(super) fn continued_by(&self, ev: &ChangeEvent) -> bool {
        let Some(kind) = self.kind else { return true };
        let ev_kind = kind_of(ev);
        kind == ev_kind
            && same_if_known(&self.gtid, &ev.gtid)
            && match (self.last_index, ev.index) {
                (Some(last), Some(i)) => i > last,
                _ => true,
            }
            && after_if_comparable(&ev.position, self.last_position.as_ref(), false)
    }

    /// Whether `c` is the commit of the transaction in progress (true when none is: it then
    /// ends an empty transaction).
    pub(super) fn ended_by(&self, c: &Commit) -> bool {
        let Some(kind) = self.kind else { return true };
        let kind_matches = match kind {
            Kind::Snapshot => c.snapshot,
            Kind::Binlog => !c.snapshot,
            // The snapshot opens each table copy with a TRUNCATE that a snapshot commit closes.
            Kind::Ddl => true,
        };
        // Snapshot commits carry the copy's position, below the numbered rows they close.
        kind_matches
            && same_if_known(&self.gtid, &c.gtid)
            && (kind == Kind::Snapshot || after_if_comparable(&c.position, self.last_position.as_ref(), true))
    }

    /// Record that `ev` at `offset` is part of the transaction in progress (starting one when
    /// none is). Call only when [`continued_by`](Self::continued_by) holds.
    pub(super) fn push_change(&mut self, ev: &ChangeEvent, offset: u64) {
        if self.kind.is_none() {
            self.kind = Some(kind_of(ev));
            self.first_offset = offset;
        }
        if ev.gtid.is_some() {
            self.gtid.clone_from(&ev.gtid);
        }
        if ev.index.is_some() {
            self.last_index = ev.index;
        }
        self.last_position = Some(ev.position.clone());
        self.records += 1;
    }

    /// Start the transaction of a DDL statement at `offset`. Call only when none is in progress.
    pub(super) fn start_ddl(&mut self, ddl: &SchemaChange, offset: u64) {
        *self = SourceTxn {
            kind: Some(Kind::Ddl),
            last_position: Some(ddl.position.clone()),
            first_offset: offset,
            records: 1,
            ..SourceTxn::default()
        };
    }

    /// The transaction ended (committed, or discarded as a prefix that never completed).
    pub(super) fn clear(&mut self) {
        *self = SourceTxn::default();
    }
}

/// Snapshot rows, and the deletes a repair writes beside them (no GTID, no index in a source
/// transaction), come from a read of the source; everything else from the binlog.
fn kind_of(ev: &ChangeEvent) -> Kind {
    let repair_delete = ev.op == Op::Delete && ev.index.is_none() && ev.gtid.is_none();
    if ev.op == Op::Snapshot || repair_delete { Kind::Snapshot } else { Kind::Binlog }
}

fn same_if_known(a: &Option<Gtid>, b: &Option<Gtid>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => a == b,
        _ => true,
    }
}

/// Whether `p` comes after `last` (or at it, when `or_equal`); positions that do not compare
/// (another binlog sequence) or a missing `last` do not count against it.
fn after_if_comparable(p: &Position, last: Option<&Position>, or_equal: bool) -> bool {
    match last.and_then(|l| p.partial_cmp(l)) {
        Some(Ordering::Greater) | None => true,
        Some(Ordering::Equal) => or_equal,
        Some(Ordering::Less) => false,
    }
}

/// Offset ranges of the log that hold prefixes of transactions that never completed, found
/// after part of one was already applied into the open target transaction. The writer then
/// rolls back and reads again from the target's checkpoint, passing over these ranges; they
/// are kept for the life of the process.
#[derive(Debug, Default)]
pub(super) struct Orphans {
    ranges: Vec<std::ops::Range<u64>>,
}

impl Orphans {
    /// Remember `range` as an orphaned prefix.
    pub(super) fn add(&mut self, range: std::ops::Range<u64>) {
        if !range.is_empty() && !self.ranges.contains(&range) {
            self.ranges.push(range);
        }
    }

    /// Whether `offset` lies in an orphaned prefix.
    pub(super) fn contains(&self, offset: u64) -> bool {
        self.ranges.iter().any(|r| r.contains(&offset))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::TableRef;

    fn gtid(seq: u64) -> Option<Gtid> {
        Some(Gtid::Mariadb { domain: 0, server: 1, seq })
    }

    fn change(offset: u64, row: u32, gtid_seq: Option<u64>, index: Option<u32>) -> ChangeEvent {
        ChangeEvent {
            table: TableRef::new("d", "t"),
            schema_version: 1,
            op: if index.is_none() && gtid_seq.is_none() { Op::Snapshot } else { Op::Insert },
            before: None,
            after: Some(vec![]),
            position: Position { file: "binlog.000001".into(), offset, row },
            timestamp: 0,
            gtid: gtid_seq.and_then(gtid),
            index,
        }
    }

    fn commit(offset: u64, gtid_seq: Option<u64>, snapshot: bool) -> Commit {
        Commit {
            position: Position::new("binlog.000001", offset),
            gtid: gtid_seq.and_then(gtid),
            timestamp: 0,
            snapshot,
            consistent: None,
        }
    }

    fn open_with(changes: &[ChangeEvent]) -> SourceTxn {
        let mut t = SourceTxn::default();
        for (i, c) in changes.iter().enumerate() {
            assert!(t.continued_by(c), "change {i} should continue");
            t.push_change(c, 10 + i as u64);
        }
        t
    }

    /// (description, open transaction, next change, continues?)
    #[test]
    fn which_changes_continue_the_transaction_in_progress() {
        let t = open_with(&[change(100, 0, Some(7), Some(0)), change(100, 1, Some(7), Some(1))]);
        let cases: Vec<(&str, ChangeEvent, bool)> = vec![
            ("next row, same gtid", change(200, 0, Some(7), Some(2)), true),
            ("another gtid", change(200, 0, Some(8), Some(2)), false),
            ("index restarts at 0: a republished transaction", change(200, 0, Some(7), Some(0)), false),
            ("index repeats", change(200, 0, Some(7), Some(1)), false),
            ("index jumps (a partition sees only some changes)", change(200, 0, Some(7), Some(9)), true),
            ("position goes back", change(90, 0, None, Some(2)), false),
            ("same position", change(100, 1, Some(7), Some(2)), false),
            ("no gtid, later position, next index", change(300, 0, None, Some(2)), true),
            ("a snapshot row", change(300, 1, None, None), false),
            (
                "another binlog sequence does not compare",
                ChangeEvent { position: Position::new("other.000001", 4), ..change(0, 0, Some(7), Some(2)) },
                true,
            ),
        ];
        for (what, ev, want) in cases {
            assert_eq!(t.continued_by(&ev), want, "{what}");
        }
        assert!(SourceTxn::default().continued_by(&change(1, 0, Some(1), Some(5))), "nothing open: anything starts");
    }

    #[test]
    fn snapshot_rows_continue_each_other_and_end_with_a_snapshot_commit() {
        let t = open_with(&[change(500, 1, None, None), change(500, 2, None, None)]);
        assert!(t.continued_by(&change(500, 3, None, None)));
        assert!(!t.continued_by(&change(500, 2, None, None)), "a row number repeats: a new copy");
        assert!(!t.continued_by(&change(600, 0, Some(1), Some(0))), "a binlog change");
        assert!(t.ended_by(&commit(500, None, true)), "the chunk's commit has the copy's position, row 0");
        assert!(!t.ended_by(&commit(900, Some(3), false)), "a binlog commit");
    }

    /// (description, commit, ends the open binlog transaction?)
    #[test]
    fn a_repair_deletes_inside_its_snapshot_transaction_but_a_binlog_delete_does_not() {
        let t = open_with(&[change(500, 1, None, None)]);
        let repair_delete =
            ChangeEvent { op: Op::Delete, before: Some(vec![]), after: None, ..change(500, 2, None, None) };
        assert!(t.continued_by(&repair_delete));
        let binlog_delete = ChangeEvent { op: Op::Delete, ..change(600, 0, Some(8), Some(0)) };
        assert!(!t.continued_by(&binlog_delete));
        let mut t = t;
        t.push_change(&repair_delete, 2);
        assert!(t.ended_by(&commit(500, None, true)));
        assert!(!t.ended_by(&commit(600, None, false)));
    }

    #[test]
    fn which_commits_end_the_transaction_in_progress() {
        let t = open_with(&[change(100, 0, Some(7), Some(0)), change(150, 0, Some(7), Some(1))]);
        let cases = [
            ("its commit", commit(180, Some(7), false), true),
            ("another transaction's commit", commit(180, Some(6), false), false),
            ("a commit before its last change: an earlier transaction, republished", commit(120, None, false), false),
            ("a snapshot chunk's commit", commit(180, None, true), false),
            ("no gtid, later position", commit(180, None, false), true),
        ];
        for (what, c, want) in cases {
            assert_eq!(t.ended_by(&c), want, "{what}");
        }
        assert!(SourceTxn::default().ended_by(&commit(1, None, false)), "an empty transaction");
    }

    #[test]
    fn a_ddl_statement_is_a_transaction_of_its_own() {
        let mut t = SourceTxn::default();
        let ddl = SchemaChange::new(
            TableRef::new("d", "t"),
            crate::event::TableChange::Truncate,
            Position::new("binlog.000001", 400),
            0,
        );
        t.start_ddl(&ddl, 30);
        assert!(t.is_open());
        assert_eq!((t.first_offset(), t.records()), (30, 1));
        assert!(!t.continued_by(&change(500, 0, Some(9), Some(0))), "a change after a DDL without its commit");
        assert!(t.ended_by(&commit(400, Some(9), false)), "its commit has the statement's position");
        assert!(t.ended_by(&commit(400, None, true)), "a snapshot's TRUNCATE ends with a snapshot commit");
        assert!(!t.ended_by(&commit(399, Some(9), false)), "a commit before the statement");
        t.clear();
        assert!(!t.is_open());
    }

    #[test]
    fn orphan_ranges_are_remembered() {
        let mut o = Orphans::default();
        o.add(10..15);
        o.add(10..15);
        o.add(20..20);
        assert!(o.contains(10) && o.contains(14));
        assert!(!o.contains(15) && !o.contains(9) && !o.contains(20));
        assert_eq!(o.ranges.len(), 1);
    }
}
