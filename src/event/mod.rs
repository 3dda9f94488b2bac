//! The change events that flow from the source through the buffer to a sink.
//!
//! The source appends a stream of [`Record`]s: a [`ChangeEvent`] per changed
//! row, and a [`Commit`] at the end of every source transaction (and after
//! every chunk of the initial snapshot). Writers commit to the target only at
//! `Commit` records, which is how a target never shows half a source
//! transaction. The on-disk / on-wire form is the versioned [`envelope`].

pub mod batch;
pub mod envelope;
pub mod hash;
pub(crate) mod value;

use serde::{Deserialize, Serialize};

pub use value::Value;

use crate::position::{Gtid, Position};
use crate::schema::TableRef;

/// What happened to a row.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Op {
    /// A row copied by the initial snapshot (applied as an upsert).
    Snapshot,
    /// INSERT: `after` is set.
    Insert,
    /// UPDATE: `before` and `after` are set; the primary key may have changed.
    Update,
    /// DELETE: `before` is set.
    Delete,
}

/// One row change.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ChangeEvent {
    /// The source table.
    pub table: TableRef,
    /// [`crate::schema::TableSchema::version`] of the schema the row was decoded with.
    pub schema_version: u64,
    /// The operation.
    pub op: Op,
    /// Row image before the change (UPDATE, DELETE), in schema column order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub before: Option<Vec<Value>>,
    /// Row image after the change (INSERT, UPDATE, snapshot), in schema column order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<Vec<Value>>,
    /// Where the change is in the source binlog (for snapshot rows: the snapshot's position).
    pub position: Position,
    /// Source event time, seconds since the Unix epoch.
    pub timestamp: u32,
    /// GTID of the source transaction, when the server has GTIDs (not for snapshot rows).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gtid: Option<crate::position::Gtid>,
    /// Index of this change inside its source transaction, from 0 (not for snapshot rows).
    /// With the transaction's GTID or commit position it identifies the change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index: Option<u32>,
}

/// The end of a source transaction (or of a snapshot chunk).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Commit {
    /// Position of the commit event; streaming may resume right after it.
    pub position: Position,
    /// The transaction's GTID, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gtid: Option<Gtid>,
    /// Commit time, seconds since the Unix epoch.
    pub timestamp: u32,
    /// Whether this closes a chunk of snapshot rows rather than a binlog transaction.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub snapshot: bool,
    /// Whether a target that has applied everything up to and including this commit holds a
    /// state the source had at one point of its binlog, every table at the same point.
    /// `Some(false)` while the initial snapshot copies tables and, after an interrupted
    /// snapshot, until the binlog stream passes the newest table copy (tables copied at a
    /// later position already hold the changes the stream still applies to the others);
    /// `Some(true)` from then on. Absent in records written by binferry before 0.2.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consistent: Option<bool>,
}

/// A DDL statement that changes rows or names in a way TABLE_MAP events cannot show.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SchemaChange {
    /// The source table it applies to.
    pub table: TableRef,
    /// What happened.
    pub change: TableChange,
    /// Position of the statement.
    pub position: Position,
    /// Statement time, seconds since the Unix epoch.
    pub timestamp: u32,
    /// The table's schema version at this statement, when the record brings the table's
    /// shape: the sweep that ends a table copy carries the shape the copy read, so that a
    /// consumer creates the table even when the copy had no rows (an empty source table has
    /// its target table from its copy on, not from its first row). Absent otherwise and in
    /// older records; an older consumer ignores it (and creates the table with its first row).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema_version: Option<u64>,
}

impl SchemaChange {
    /// A statement about `table` at `position`, without a shape.
    pub fn new(table: TableRef, change: TableChange, position: Position, timestamp: u32) -> Self {
        SchemaChange { table, change, position, timestamp, schema_version: None }
    }

    /// The same, bringing the table's shape `version` (see [`SchemaChange::schema_version`]).
    pub fn with_shape(self, version: u64) -> Self {
        SchemaChange { schema_version: Some(version), ..self }
    }
}

/// The kinds of [`SchemaChange`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TableChange {
    /// `TRUNCATE`: every row is gone.
    Truncate,
    /// `DROP TABLE`, or a rename out of the replicated tables.
    Drop,
    /// `RENAME TABLE` to another replicated name.
    RenameTo(TableRef),
    /// Column renames `(from, to)`.
    RenameColumns(Vec<(String, String)>),
    /// The source cannot replicate the table from here on (a column type or character set it
    /// does not decode, a value it cannot read): the writer stops the table durably, with the
    /// reason, and the other tables go on.
    Stop {
        /// What is wrong and how to fix it.
        reason: String,
    },
    /// `binferry resync` copies the table again from the records that follow. A consumer that
    /// stopped the table (an incompatible schema change, a value it refused) starts it again,
    /// rebuilt aside with the shape of those records, and keeps the stale copy readable until
    /// [`TableChange::RebuildDone`]; one that did not stop it ignores this.
    Rebuild,
    /// The copy a [`TableChange::Rebuild`] started is complete (it follows the copy's last
    /// rows and precedes its sweep): a consumer that rebuilt the table aside puts the rebuilt
    /// table in its place at once. Streams that carry copies of it meet there (a DDL barrier),
    /// so that no stream sweeps before every stream has applied its share of the copy.
    RebuildDone,
}

impl TableChange {
    /// A short description for people (`truncate`, `drop`, `rename to db.t2`).
    pub fn describe(&self) -> String {
        match self {
            TableChange::Truncate => "truncate".into(),
            TableChange::Drop => "drop".into(),
            TableChange::RenameTo(to) => format!("rename to {to}"),
            TableChange::RenameColumns(cols) => {
                let list: Vec<String> = cols.iter().map(|(a, b)| format!("{a} → {b}")).collect();
                format!("column renames {}", list.join(", "))
            }
            TableChange::Stop { reason } => format!("stop: {reason}"),
            TableChange::Rebuild => "rebuild (resync)".into(),
            TableChange::RebuildDone => "rebuild done (resync)".into(),
        }
    }
}

impl Commit {
    /// The commit that closes a chunk of copied rows (or a copy's sweep) at `position`: the
    /// target is not consistent yet.
    pub fn copy_chunk(position: Position, timestamp: u32) -> Self {
        Commit { position, gtid: None, timestamp, snapshot: true, consistent: Some(false) }
    }

    /// A commit without changes saying that the target is consistent from `position` on.
    pub fn consistency_marker(position: Position, timestamp: u32) -> Self {
        Commit { position, gtid: None, timestamp, snapshot: false, consistent: Some(true) }
    }
}

/// An entry of the buffer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Record {
    /// A row change.
    Change(ChangeEvent),
    /// A transaction boundary.
    Commit(Commit),
    /// A DDL statement applied in source order (always followed by its own `Commit`).
    Ddl(SchemaChange),
}

impl ChangeEvent {
    /// A row read from the source by a snapshot, resync or repair query, at `position`
    /// (no GTID, no index: it belongs to no source transaction).
    pub fn snapshot(
        table: TableRef,
        schema_version: u64,
        values: Vec<Value>,
        position: Position,
        timestamp: u32,
    ) -> Self {
        ChangeEvent {
            table,
            schema_version,
            op: Op::Snapshot,
            before: None,
            after: Some(values),
            position,
            timestamp,
            gtid: None,
            index: None,
        }
    }

    /// The primary key values of `row` (`key_columns` are its indexes); `None` when the
    /// table has no primary key or a column is missing.
    pub fn key_of(row: &[Value], key_columns: &[usize]) -> Option<Vec<Value>> {
        if key_columns.is_empty() {
            return None;
        }
        key_columns.iter().map(|&i| row.get(i).cloned()).collect()
    }

    /// An UPDATE that changed the row's primary key, as the DELETE of its old key and the
    /// INSERT of its new key (in that order); `None` for any other change.
    ///
    /// Why: a buffer that orders changes per key (Kafka's `key` layout) must carry the old
    /// key's end in the old key's order. Travelling with the new key, the delete could be
    /// applied by one writer while another still applies the old key's earlier insert, and
    /// the insert could land after the delete (a row the source no longer has). The pieces
    /// keep the update's position, GTID and index: each is one fact of the same change, and
    /// a writer treats an update that moved a key as exactly this delete and insert.
    pub fn split_key_move(&self, key_columns: &[usize]) -> Option<(ChangeEvent, ChangeEvent)> {
        let (Op::Update, Some(before), Some(after)) = (self.op, &self.before, &self.after) else {
            return None;
        };
        let old = Self::key_of(before, key_columns)?;
        if Some(old) == Self::key_of(after, key_columns) {
            return None;
        }
        let delete = ChangeEvent { op: Op::Delete, after: None, ..self.clone() };
        let insert = ChangeEvent { op: Op::Insert, before: None, ..self.clone() };
        Some((delete, insert))
    }

    /// Approximate in-memory size, used by batch limits.
    pub fn approx_bytes(&self) -> usize {
        let row = |r: &Option<Vec<Value>>| r.as_ref().map_or(0, |v| v.iter().map(Value::approx_bytes).sum());
        64 + self.table.db.len()
            + self.table.name.len()
            + self.position.file.len()
            + row(&self.before)
            + row(&self.after)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn update(before: (i64, i64), after: (i64, i64)) -> ChangeEvent {
        ChangeEvent {
            table: TableRef::new("d", "t"),
            schema_version: 7,
            op: Op::Update,
            before: Some(vec![Value::Int(before.0), Value::Int(before.1)]),
            after: Some(vec![Value::Int(after.0), Value::Int(after.1)]),
            position: Position::new("b.000001", 400),
            timestamp: 1,
            gtid: Some(Gtid::Mariadb { domain: 0, server: 1, seq: 9 }),
            index: Some(3),
        }
    }

    #[test]
    fn a_key_move_splits_into_the_old_keys_delete_and_the_new_keys_insert() {
        let ev = update((1, 5), (2, 6));
        let (delete, insert) = ev.split_key_move(&[0]).expect("the key moved");
        assert_eq!((delete.op, delete.before.as_ref(), delete.after.as_ref()), (Op::Delete, ev.before.as_ref(), None));
        assert_eq!((insert.op, insert.before.as_ref(), insert.after.as_ref()), (Op::Insert, None, ev.after.as_ref()));
        for piece in [&delete, &insert] {
            // The same change: position, transaction and index are kept.
            assert_eq!((&piece.position, &piece.gtid, piece.index), (&ev.position, &ev.gtid, ev.index));
        }
    }

    #[test]
    fn only_an_update_that_moves_the_key_splits() {
        // The key (column 0) stays: a value changed.
        assert_eq!(update((1, 5), (1, 6)).split_key_move(&[0]), None);
        // A composite key of which one column moved.
        assert!(update((1, 5), (1, 6)).split_key_move(&[0, 1]).is_some());
        // No primary key: nothing identifies the row across the update.
        assert_eq!(update((1, 5), (2, 6)).split_key_move(&[]), None);
        // A key column the row does not have (a schema mismatch) decides nothing.
        assert_eq!(update((1, 5), (2, 6)).split_key_move(&[4]), None);
        let insert = ChangeEvent { op: Op::Insert, before: None, ..update((1, 5), (2, 6)) };
        assert_eq!(insert.split_key_move(&[0]), None);
    }
}
