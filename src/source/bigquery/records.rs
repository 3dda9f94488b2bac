//! The buffer records of one round, in the order that keeps the target exact and its linked
//! tables consistent. Pure: the driver feeds it rows and appends what it returns.
//!
//! A round's records, in buffer order:
//! 1. **Large copies** of tables read whole (a table's first round, a new shape), when they
//!    hold more rows than fit one target transaction (`max_atomic_copy_rows`): copied rows
//!    (`Op::Snapshot`), a page at a time, each page closed by a snapshot commit. They may be
//!    written apart from any transaction (a MySQL target writes them on several connections);
//!    the commits say `consistent: false`, since the other tables are not at this round yet.
//!    Each is followed by its sweep.
//! 2. **The round's transaction**: every change of every other table (`Op::Insert` for a new
//!    or changed row, `Op::Delete` for a deleted one), and the rows of the smaller copies,
//!    then one commit, `consistent: true`. The target applies it atomically: a reader never
//!    sees a recipe without its ingredients, not even on the first round.
//! 3. **Sweeps, drops and stops**, each a DDL record with its own commit. The sweep of a copied
//!    table is a TRUNCATE at the round's row 0: it removes exactly the target rows older than
//!    the copy (rows BigQuery no longer has), and every copied row is newer.
//!
//! Positions are [`Position::of_round`]: the round, its timestamp, and the record's place in
//! the round, so they only grow. A round cut short by a crash is read again from the last
//! checkpoint at a new timestamp; its changes count their index from 0 again, which tells the
//! writer that the earlier, uncommitted ones are orphans to drop (a change may have been
//! reverted since: applying it would be wrong).

use crate::error::{Error, Result};
use crate::event::{ChangeEvent, Commit, Op, Record, SchemaChange, TableChange, Value};
use crate::position::Position;
use crate::schema::TableRef;

/// Builds the records of round `round` at timestamp `at` (µs).
pub(crate) struct RoundRecords {
    round: u32,
    at: i64,
    /// Place of the next record in the round (0 is the sweeps').
    next_row: u32,
    /// Index of the next change of the round's transaction.
    next_index: u32,
    /// Whether the round wrote anything a reader of the target could see.
    wrote: bool,
}

impl RoundRecords {
    pub(crate) fn new(round: u32, at: i64) -> Self {
        RoundRecords { round, at, next_row: 1, next_index: 0, wrote: false }
    }

    /// The round's timestamp in seconds, the time of its records (and of the lag).
    pub(crate) fn timestamp(&self) -> u32 {
        u32::try_from(self.at.div_euclid(1_000_000)).unwrap_or(0)
    }

    fn position(&mut self) -> Result<Position> {
        let row = self.next_row;
        self.next_row = row
            .checked_add(1)
            .ok_or_else(|| Error::internal(format!("round {} has more than 2^32 records", self.round)))?;
        Ok(Position::of_round(self.at, row))
    }

    /// A row of a table read whole.
    pub(crate) fn copied(&mut self, table: &TableRef, schema_version: u64, values: Vec<Value>) -> Result<Record> {
        self.wrote = true;
        let position = self.position()?;
        Ok(Record::Change(ChangeEvent::snapshot(table.clone(), schema_version, values, position, self.timestamp())))
    }

    /// Closes a page of copied rows.
    pub(crate) fn copy_commit(&self) -> Record {
        Record::Commit(Commit {
            position: Position::of_round(self.at, 0),
            gtid: None,
            timestamp: self.timestamp(),
            snapshot: true,
            consistent: Some(false),
        })
    }

    /// A change of the round's transaction: the row's values, or for a deleted row its key
    /// (the other columns `Null`).
    pub(crate) fn change(
        &mut self,
        table: &TableRef,
        schema_version: u64,
        deleted: bool,
        values: Vec<Value>,
    ) -> Result<Record> {
        self.wrote = true;
        let position = self.position()?;
        let index = self.next_index;
        self.next_index += 1;
        let (op, before, after) =
            if deleted { (Op::Delete, Some(values), None) } else { (Op::Insert, None, Some(values)) };
        Ok(Record::Change(ChangeEvent {
            table: table.clone(),
            schema_version,
            op,
            before,
            after,
            position,
            timestamp: self.timestamp(),
            gtid: None,
            index: Some(index),
        }))
    }

    /// A statement about a whole table, with its commit: a resync's rebuild and its end
    /// (`Rebuild`, `RebuildDone`), a table gone from BigQuery (`Drop`), or one the source
    /// cannot read (`Stop`).
    pub(crate) fn table_change(&mut self, table: &TableRef, change: TableChange) -> [Record; 2] {
        self.statement(table, change, None)
    }

    /// The sweep after a table's copy (rows the target has and BigQuery no longer has), with
    /// its commit. It brings the table's shape `version`, so that an empty table gets its
    /// target table too.
    pub(crate) fn sweep(&mut self, table: &TableRef, version: u64) -> [Record; 2] {
        self.statement(table, TableChange::Truncate, Some(version))
    }

    fn statement(&mut self, table: &TableRef, change: TableChange, shape: Option<u64>) -> [Record; 2] {
        self.wrote = true;
        // Row 0: older than every row this round copied, so a sweep removes none of them.
        let position = Position::of_round(self.at, 0);
        let mut ddl = SchemaChange::new(table.clone(), change, position.clone(), self.timestamp());
        ddl.schema_version = shape;
        [
            Record::Ddl(ddl),
            // Not consistent yet: the round's own commit, which follows, is.
            Record::Commit(Commit {
                position,
                gtid: None,
                timestamp: self.timestamp(),
                snapshot: false,
                consistent: Some(false),
            }),
        ]
    }

    /// The commit of the round's transaction, when the round wrote anything: from it on the
    /// target holds every table as BigQuery had it at the round's timestamp.
    pub(crate) fn round_commit(&mut self) -> Result<Option<Record>> {
        if !self.wrote {
            return Ok(None);
        }
        let position = self.position()?;
        Ok(Some(Record::Commit(Commit {
            position,
            gtid: None,
            timestamp: self.timestamp(),
            snapshot: false,
            consistent: Some(true),
        })))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pos(r: &Record) -> Position {
        match r {
            Record::Change(c) => c.position.clone(),
            Record::Commit(c) => c.position.clone(),
            Record::Ddl(d) => d.position.clone(),
        }
    }

    #[test]
    fn a_round_copies_sweeps_then_commits_its_changes_at_growing_positions() {
        let t = TableRef::new("shop", "recipes");
        let u = TableRef::new("shop", "ingredients");
        let at = 1_795_907_667_348_215;
        let mut r = RoundRecords::new(7, at);
        assert_eq!(r.round_commit().unwrap(), None, "an empty round writes nothing");
        let copied = r.copied(&t, 1, vec![Value::Int(1)]).unwrap();
        let page = r.copy_commit();
        let sweep = r.sweep(&t, 1);
        let ins = r.change(&u, 2, false, vec![Value::Int(5), Value::Text("salt".into())]).unwrap();
        let del = r.change(&u, 2, true, vec![Value::Int(6), Value::Null]).unwrap();
        let commit = r.round_commit().unwrap().unwrap();

        assert!(matches!(&copied, Record::Change(c) if c.op == Op::Snapshot && c.index.is_none()));
        assert!(matches!(&page, Record::Commit(c) if c.snapshot && c.consistent == Some(false)));
        assert!(
            matches!(&sweep[0], Record::Ddl(d) if d.change == TableChange::Truncate && d.schema_version == Some(1))
        );
        assert!(matches!(&sweep[1], Record::Commit(c) if !c.snapshot));
        assert!(matches!(&ins, Record::Change(c) if c.op == Op::Insert && c.index == Some(0) && c.after.is_some()));
        assert!(matches!(&del, Record::Change(c) if c.op == Op::Delete && c.index == Some(1) && c.before.is_some()));
        assert!(matches!(&commit, Record::Commit(c) if !c.snapshot && c.consistent == Some(true)));

        // The sweep is older than every copied row; the round's records grow from there.
        assert!(pos(&sweep[0]) < pos(&copied));
        assert!(pos(&copied) < pos(&ins) && pos(&ins) < pos(&del) && pos(&del) < pos(&commit));
        // A later round's records are newer than all of this one's.
        let mut next = RoundRecords::new(8, at + 1);
        // A restart from an older checkpoint numbers rounds again from there: still newer.
        let mut again = RoundRecords::new(2, at + 2);
        assert!(pos(&commit) < pos(&again.change(&u, 2, false, vec![Value::Int(5)]).unwrap()));
        let later = next.change(&u, 2, false, vec![Value::Int(5)]).unwrap();
        assert!(pos(&commit) < pos(&later));
        assert_eq!(r.timestamp(), 1_795_907_667);
        assert_eq!(pos(&commit).to_string(), format!("bigquery-round.1795907667:{at}#4"));
    }
}
