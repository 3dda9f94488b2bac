//! A compacted batch: the net effect of many changes, per table.
//!
//! **Tables with a primary key.** The changes to one key collapse to the newest
//! one (by source position): insert + updates → one upsert; insert + delete →
//! a delete (no row is written, but the delete's position is recorded so an
//! older replayed insert cannot bring the row back); an update of the primary
//! key → a delete of the old key and an upsert of the new one. A hot row costs
//! one target write per batch. Each key ends with a single operation, so the
//! sink may apply a table's deletes and upserts in any order.
//!
//! **Tables without a primary key** are identified by the hash of the whole
//! row. Identical rows are indistinguishable, so the batch keeps, per distinct
//! row, the multiplicity change of every individual row event (+1 insert, −1
//! delete; an update is −1 for the old row and +1 for the new), keyed by
//! source position. Keying by position makes a duplicated event count once;
//! the sink applies only the events newer than what the target has seen.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use super::hash::{encode_values, row_hash};
use crate::error::{Error, ErrorKind, Result};
use crate::event::{ChangeEvent, Op, Value};
use crate::position::Position;
use crate::schema::{TableRef, TableSchema};

/// The final operation on one row of a table with a primary key.
#[derive(Clone, Debug, PartialEq)]
pub enum RowOp {
    /// Insert or replace the row.
    Upsert {
        /// All column values in schema order.
        row: Vec<Value>,
        /// Source position of the change.
        position: Position,
        /// [`row_hash`] of `row`.
        hash: [u8; 16],
        /// Read by a table copy (snapshot, resync, repair), not from a source transaction:
        /// the sink may write it apart from the transaction that records the offset, since
        /// its position alone decides whether it applies.
        copied: bool,
    },
    /// Delete the row.
    Delete {
        /// Primary-key values in key order.
        key: Vec<Value>,
        /// The row as it was before the delete (soft deletes keep it).
        before: Vec<Value>,
        /// Source position of the change.
        position: Position,
        /// Source commit time of the delete, seconds since the epoch.
        timestamp: u32,
    },
}

impl RowOp {
    /// Source position of the operation.
    pub fn position(&self) -> &Position {
        match self {
            RowOp::Upsert { position, .. } | RowOp::Delete { position, .. } => position,
        }
    }

    /// Primary-key values of the row.
    pub fn key<'a>(&'a self, schema: &TableSchema) -> Vec<&'a Value> {
        match self {
            RowOp::Upsert { row, .. } => schema.primary_key.iter().filter_map(|&i| row.get(i)).collect(),
            RowOp::Delete { key, .. } => key.iter().collect(),
        }
    }
}

/// The pending multiplicity changes of one distinct row of a keyless table.
#[derive(Clone, Debug, PartialEq)]
pub struct KeylessRow {
    /// The row's values.
    pub row: Vec<Value>,
    /// +1 / −1 per row event, keyed by the event's [`Position::sort_key`].
    pub changes: BTreeMap<[u8; 16], i64>,
}

/// The compacted changes of one table.
#[derive(Debug)]
pub struct TableBatch {
    /// The schema all rows were decoded with.
    pub schema: Arc<TableSchema>,
    /// Its version, as the events carry it (not recomputed per event).
    pub version: u64,
    /// Tables with a primary key: final operation per encoded key.
    pub ops: HashMap<Vec<u8>, RowOp>,
    /// Tables without one: changes per row hash.
    pub keyless: HashMap<[u8; 16], KeylessRow>,
}

/// Compacted changes of many tables.
#[derive(Debug, Default)]
pub struct Batch {
    tables: BTreeMap<TableRef, TableBatch>,
    changes: usize,
    /// Of `changes`, rows read by a table copy.
    copied: usize,
    bytes: usize,
    compacted: u64,
}

impl Batch {
    /// Whether rows read by a table copy were merged (see [`RowOp::Upsert`]'s `copied`).
    pub fn holds_copies(&self) -> bool {
        self.copied > 0
    }

    /// Row changes merged so far (before compaction).
    pub fn changes(&self) -> usize {
        self.changes
    }

    /// Approximate bytes of row data merged so far.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Row changes that compaction folded into a later change of the same key.
    pub fn compacted(&self) -> u64 {
        self.compacted
    }

    /// Whether there is nothing to apply.
    pub fn is_empty(&self) -> bool {
        self.tables.values().all(|t| t.ops.is_empty() && t.keyless.is_empty())
    }

    /// The tables in the batch.
    pub fn tables(&self) -> impl Iterator<Item = &TableBatch> {
        self.tables.values()
    }

    /// Drop everything the batch holds for `table`.
    pub fn remove_table(&mut self, table: &TableRef) {
        self.tables.remove(table);
    }

    /// The schema version the batch holds for `table`, if any.
    pub fn schema_version(&self, table: &TableRef) -> Option<u64> {
        self.tables.get(table).map(|t| t.version)
    }

    /// Merge one change decoded with `schema`. The caller makes sure the batch holds no other
    /// schema version of the same table (see [`schema_version`](Self::schema_version)).
    ///
    /// One match over (what the batch holds for the key, the new change): the compaction
    /// rules are a single table, read top to bottom.
    pub fn push(&mut self, ev: ChangeEvent, schema: &Arc<TableSchema>) -> Result<()> {
        self.changes += 1;
        self.copied += usize::from(ev.op == Op::Snapshot);
        self.bytes += ev.approx_bytes();
        let missing = |what: &str| {
            Error::new(
                ErrorKind::Buffer,
                format!("{:?} event of {} at {} has no {what} image", ev.op, ev.table, ev.position),
            )
        };
        let check_len = |row: &[Value]| {
            if row.len() == schema.columns.len() {
                Ok(())
            } else {
                Err(Error::new(
                    ErrorKind::Buffer,
                    format!(
                        "row of {} has {} values, its schema {} columns",
                        ev.table,
                        row.len(),
                        schema.columns.len()
                    ),
                ))
            }
        };
        let (before, after) = match ev.op {
            Op::Insert | Op::Snapshot => (None, Some(ev.after.ok_or_else(|| missing("after"))?)),
            Op::Update => {
                (Some(ev.before.ok_or_else(|| missing("before"))?), Some(ev.after.ok_or_else(|| missing("after"))?))
            }
            Op::Delete => (Some(ev.before.ok_or_else(|| missing("before"))?), None),
        };
        for row in before.iter().chain(after.iter()) {
            check_len(row)?;
        }
        let entry = self.tables.entry(ev.table.clone()).or_insert_with(|| TableBatch {
            schema: Arc::clone(schema),
            version: ev.schema_version,
            ops: HashMap::new(),
            keyless: HashMap::new(),
        });
        if !schema.has_primary_key() {
            let pos = ev.position.sort_key()?;
            for (row, delta) in before.into_iter().map(|r| (r, -1)).chain(after.into_iter().map(|r| (r, 1))) {
                let hash = row_hash(&row);
                let k = entry.keyless.entry(hash).or_insert_with(|| KeylessRow { row, changes: BTreeMap::new() });
                // The same event twice (a crash-duplicated append) counts once.
                *k.changes.entry(pos).or_insert(0) = delta;
            }
            return Ok(());
        }
        let key_of = |row: &[Value]| -> (Vec<u8>, Vec<Value>) {
            let values: Vec<Value> = schema.primary_key.iter().map(|&i| row[i].clone()).collect();
            let mut key = Vec::with_capacity(32);
            encode_values(&values, &mut key);
            (key, values)
        };
        let mut fold = 0;
        let copied = ev.op == Op::Snapshot;
        match (before, after) {
            (None, Some(row)) => {
                let (key, _) = key_of(&row);
                let hash = row_hash(&row);
                fold += merge(&mut entry.ops, key, RowOp::Upsert { row, position: ev.position, hash, copied });
            }
            (Some(before), Some(row)) => {
                let (old_key, old_values) = key_of(&before);
                let (new_key, _) = key_of(&row);
                if old_key != new_key {
                    let del = RowOp::Delete {
                        key: old_values,
                        before,
                        position: ev.position.clone(),
                        timestamp: ev.timestamp,
                    };
                    fold += merge(&mut entry.ops, old_key, del);
                }
                let hash = row_hash(&row);
                fold += merge(&mut entry.ops, new_key, RowOp::Upsert { row, position: ev.position, hash, copied });
            }
            (Some(before), None) => {
                let (key, values) = key_of(&before);
                let del = RowOp::Delete { key: values, before, position: ev.position, timestamp: ev.timestamp };
                fold += merge(&mut entry.ops, key, del);
            }
            (None, None) => {}
        }
        self.compacted += fold;
        Ok(())
    }
}

/// Keep the newer of the existing and the new operation on a key; returns 1 when one was
/// folded away. A replayed (older) change never replaces a newer one.
fn merge(ops: &mut HashMap<Vec<u8>, RowOp>, key: Vec<u8>, op: RowOp) -> u64 {
    match ops.get_mut(&key) {
        None => {
            ops.insert(key, op);
            0
        }
        Some(existing) => {
            let newer = !matches!(op.position().partial_cmp(existing.position()), Some(std::cmp::Ordering::Less));
            if newer {
                *existing = op;
            }
            1
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::{ColumnSchema, ColumnType};

    fn schema(keyed: bool) -> Arc<TableSchema> {
        Arc::new(TableSchema {
            table: TableRef::new("d", "t"),
            columns: vec![
                ColumnSchema {
                    name: "id".into(),
                    ty: ColumnType::Int { bytes: 4, unsigned: false },
                    nullable: false,
                    default: None,
                    source_type: None,
                },
                ColumnSchema {
                    name: "v".into(),
                    ty: ColumnType::Int { bytes: 4, unsigned: false },
                    nullable: true,
                    default: None,
                    source_type: None,
                },
            ],
            primary_key: if keyed { vec![0] } else { vec![] },
        })
    }

    fn ev(op: Op, before: Option<(i64, i64)>, after: Option<(i64, i64)>, offset: u64) -> ChangeEvent {
        let row = |(a, b): (i64, i64)| vec![Value::Int(a), Value::Int(b)];
        ChangeEvent {
            table: TableRef::new("d", "t"),
            schema_version: 1,
            op,
            before: before.map(row),
            after: after.map(row),
            position: Position::new("binlog.000001", offset),
            timestamp: 0,
            gtid: None,
            index: None,
        }
    }

    fn ops(b: &Batch) -> Vec<RowOp> {
        let mut v: Vec<RowOp> = b.tables().flat_map(|t| t.ops.values().cloned()).collect();
        v.sort_by_key(|o| match o {
            RowOp::Upsert { row, .. } => format!("u{:?}", row[0]),
            RowOp::Delete { key, .. } => format!("d{:?}", key[0]),
        });
        v
    }

    #[test]
    fn hot_row_collapses_to_its_last_value() {
        let s = schema(true);
        let mut b = Batch::default();
        b.push(ev(Op::Insert, None, Some((1, 0)), 10), &s).unwrap();
        for i in 1..100 {
            b.push(ev(Op::Update, Some((1, i - 1)), Some((1, i)), 10 + i as u64), &s).unwrap();
        }
        assert_eq!(b.changes(), 100);
        assert_eq!(b.compacted(), 99);
        match &ops(&b)[..] {
            [RowOp::Upsert { row, .. }] => assert_eq!(row[1], Value::Int(99)),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn primary_key_update_is_delete_plus_upsert() {
        let s = schema(true);
        let mut b = Batch::default();
        b.push(ev(Op::Update, Some((1, 5)), Some((2, 5)), 10), &s).unwrap();
        let o = ops(&b);
        assert!(
            matches!(&o[0], RowOp::Delete { key, before, .. } if key == &vec![Value::Int(1)] && before[1] == Value::Int(5))
        );
        assert!(matches!(&o[1], RowOp::Upsert { row, .. } if row[0] == Value::Int(2)));
    }

    #[test]
    fn insert_then_delete_leaves_a_delete_and_replays_never_win() {
        let s = schema(true);
        let mut b = Batch::default();
        b.push(ev(Op::Insert, None, Some((1, 1)), 10), &s).unwrap();
        b.push(ev(Op::Delete, Some((1, 1)), None, 20), &s).unwrap();
        // a duplicate of the insert (crash-replayed) must not resurrect the row
        b.push(ev(Op::Insert, None, Some((1, 1)), 10), &s).unwrap();
        assert!(matches!(&ops(&b)[..], [RowOp::Delete { .. }]));
    }

    #[test]
    fn keyless_rows_count_each_event_once() {
        let s = schema(false);
        let mut b = Batch::default();
        b.push(ev(Op::Insert, None, Some((1, 1)), 10), &s).unwrap();
        b.push(ev(Op::Insert, None, Some((1, 1)), 11), &s).unwrap();
        b.push(ev(Op::Insert, None, Some((1, 1)), 11), &s).unwrap(); // duplicate event
        b.push(ev(Op::Update, Some((1, 1)), Some((2, 2)), 12), &s).unwrap();
        let t = b.tables().next().unwrap();
        let same = &t.keyless[&row_hash(&[Value::Int(1), Value::Int(1)])];
        assert_eq!(same.changes.values().sum::<i64>(), 1, "two inserts, one moved away");
        let moved = &t.keyless[&row_hash(&[Value::Int(2), Value::Int(2)])];
        assert_eq!(moved.changes.values().sum::<i64>(), 1);
    }
}
