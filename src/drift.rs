//! What `binferry verify` compares: the row hashes of one table on each side, and the keys
//! where they disagree. Pure; the reading is done by each end (`source::table_hashes`,
//! `source::bigquery::TableReader`, the MySQL sink's `table_hashes`), the waiting for changes
//! in flight by `pipeline::verify`.

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;

use crate::event::Value;
use crate::event::hash::{encode_values, row_hash};
use crate::schema::{ColumnType, TableSchema};

/// How a target holds a source value of a column type, where its form there differs from the
/// value itself (a BigQuery target holds MySQL's zero dates as NULL): the source's rows are
/// hashed in that form, so that they compare with the values read back from the target.
pub type HeldAs = fn(&ColumnType, Value) -> Value;

/// A target that holds every value as it is (MySQL).
pub fn as_is(_: &ColumnType, v: Value) -> Value {
    v
}

/// The rows of one table on one side, by their row hash.
#[derive(Clone, Debug, Default)]
pub struct TableHashes {
    /// Tables with a primary key: encoded key → (row hash, the key's values, for messages).
    pub keyed: BTreeMap<Vec<u8>, ([u8; 16], Vec<Value>)>,
    /// Tables without one: row hash → how many rows have it (the table is a multiset).
    pub keyless: HashMap<[u8; 16], u64>,
}

impl TableHashes {
    /// Count one row of `schema` (its values in column order), hashed exactly as the writer
    /// hashes the row it stores.
    pub fn add_row(&mut self, schema: &TableSchema, values: &[Value]) {
        let hash = row_hash(values);
        if schema.has_primary_key() {
            let key: Vec<_> = schema.primary_key.iter().filter_map(|&i| values.get(i).cloned()).collect();
            let mut encoded = Vec::new();
            encode_values(&key, &mut encoded);
            self.keyed.insert(encoded, (hash, key));
        } else {
            *self.keyless.entry(hash).or_insert(0) += 1;
        }
    }

    /// Rows counted.
    pub fn rows(&self) -> u64 {
        self.keyed.len() as u64 + self.keyless.values().sum::<u64>()
    }
}

/// A range of primary keys `(lower, upper]`; `None` ends are open. `verify` compares a
/// table one such chunk at a time.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct KeyBounds {
    /// Exclusive lower bound.
    pub lower: Option<Vec<Value>>,
    /// Inclusive upper bound.
    pub upper: Option<Vec<Value>>,
}

/// How the target differs from the source for one table.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Drift {
    /// Keys the source has and the target lacks.
    pub missing: Vec<String>,
    /// Keys the target has and the source does not.
    pub extra: Vec<String>,
    /// Keys whose row differs.
    pub different: Vec<String>,
    /// Keyless tables: rows (by hash) whose count differs, as `hash: source n, target m`.
    pub keyless: Vec<String>,
    /// The values of every drifted key (missing, extra or different), for `--repair`.
    #[serde(skip)]
    pub keys: Vec<Vec<Value>>,
}

impl Drift {
    /// No difference.
    pub fn is_empty(&self) -> bool {
        self.missing.is_empty() && self.extra.is_empty() && self.different.is_empty() && self.keyless.is_empty()
    }

    /// How many keys or rows differ.
    pub fn len(&self) -> usize {
        self.missing.len() + self.extra.len() + self.different.len() + self.keyless.len()
    }

    /// Add the differences of another chunk of the same table.
    pub fn extend(&mut self, other: Drift) {
        self.missing.extend(other.missing);
        self.extra.extend(other.extra);
        self.different.extend(other.different);
        self.keyless.extend(other.keyless);
        self.keys.extend(other.keys);
    }
}

/// How `target` differs from `source`.
pub fn diff(source: &TableHashes, target: &TableHashes) -> Drift {
    let show = |values: &[Value]| values.iter().map(show_value).collect::<Vec<_>>().join(", ");
    let mut d = Drift::default();
    for (k, (hash, values)) in &source.keyed {
        match target.keyed.get(k) {
            None => d.missing.push(show(values)),
            Some((t, _)) if t != hash => d.different.push(show(values)),
            Some(_) => continue,
        }
        d.keys.push(values.clone());
    }
    for (k, (_, values)) in &target.keyed {
        if !source.keyed.contains_key(k) {
            d.extra.push(show(values));
            d.keys.push(values.clone());
        }
    }
    let mut hashes: Vec<&[u8; 16]> = source.keyless.keys().chain(target.keyless.keys()).collect();
    hashes.sort();
    hashes.dedup();
    for h in hashes {
        let (s, t) = (source.keyless.get(h).copied().unwrap_or(0), target.keyless.get(h).copied().unwrap_or(0));
        if s != t {
            let hex: String = h.iter().map(|b| format!("{b:02x}")).collect();
            d.keyless.push(format!("row {hex}: source {s}, target {t}"));
        }
    }
    d
}

/// A key value for people: text as is, bytes in hex, the rest as its debug form.
fn show_value(v: &Value) -> String {
    match v {
        Value::Null => "NULL".into(),
        Value::Int(i) => i.to_string(),
        Value::UInt(u) => u.to_string(),
        Value::Text(s) => format!("'{s}'"),
        Value::Bytes(b) => format!("0x{}", b.iter().map(|x| format!("{x:02x}")).collect::<String>()),
        other => format!("{other:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keyed(rows: &[(i64, u8)]) -> TableHashes {
        let mut t = TableHashes::default();
        for &(k, h) in rows {
            let mut enc = Vec::new();
            crate::event::hash::encode_values(&[Value::Int(k)], &mut enc);
            t.keyed.insert(enc, ([h; 16], vec![Value::Int(k)]));
        }
        t
    }

    #[test]
    fn missing_extra_and_different_keys_are_named() {
        let source = keyed(&[(1, 1), (2, 2), (3, 3)]);
        let target = keyed(&[(1, 1), (3, 9), (4, 4)]);
        let d = diff(&source, &target);
        assert_eq!(d.missing, ["2"]);
        assert_eq!(d.different, ["3"]);
        assert_eq!(d.extra, ["4"]);
        assert_eq!(d.len(), 3);
        assert!(diff(&source, &source).is_empty());
    }

    #[test]
    fn keyless_tables_compare_as_multisets() {
        let mut source = TableHashes::default();
        source.keyless.insert([1; 16], 2);
        source.keyless.insert([2; 16], 1);
        let mut target = source.clone();
        assert!(diff(&source, &target).is_empty());
        target.keyless.insert([1; 16], 1);
        let d = diff(&source, &target);
        assert_eq!(d.keyless.len(), 1);
        assert!(d.keyless[0].ends_with("source 2, target 1"), "{:?}", d.keyless);
        assert_eq!(source.rows(), 3);
    }
}
