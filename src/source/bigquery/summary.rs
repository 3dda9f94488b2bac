//! A table's bucket summary at one round, and which buckets changed since the last one.
//!
//! The summary is what the source keeps between rounds (in its checkpoint): a few thousand
//! numbers per table, whatever the table's size. The rows themselves are compared by
//! BigQuery, between the two rounds' timestamps ([`super::sql`]).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::{Error, ErrorKind, Result};
use crate::schema::TableRef;

/// One bucket: how many rows, and the XOR of their hashes' first 60 bits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Bucket {
    pub(crate) rows: u64,
    pub(crate) xor: i64,
}

/// A table's buckets at one round.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Summary {
    /// Hex digits of a bucket's name ([`super::sql::bucket_digits`]).
    pub(crate) digits: u32,
    /// Non-empty buckets by name.
    pub(crate) buckets: BTreeMap<String, Bucket>,
}

/// One row of the summary query: bucket, rows, distinct keys, XOR.
pub(crate) type SummaryRow = (String, u64, u64, i64);

/// What a round must read of a table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Changed {
    /// Nothing: every bucket is as it was.
    Nothing,
    /// The rows of these buckets.
    Buckets(Vec<String>),
    /// Every row (the bucket layout changed, or most buckets did: one unfiltered query
    /// costs no more than a filtered one).
    All,
}

impl Summary {
    /// Build a summary from the summary query's rows. A bucket with fewer distinct keys than
    /// rows holds a duplicate key: BigQuery does not enforce keys, and two rows with one key
    /// cannot be one MySQL row, so that table stops with the fix.
    pub(crate) fn from_rows(table: &TableRef, digits: u32, rows: Vec<SummaryRow>) -> Result<Summary> {
        let mut buckets = BTreeMap::new();
        for (name, n, keys, xor) in rows {
            if keys != n {
                return Err(Error::new(
                    ErrorKind::Unsupported,
                    format!(
                        "BigQuery table {table} has rows that share a key ({n} rows, {keys} distinct keys in bucket \
                         {name})"
                    ),
                )
                .with_table(table.clone())
                .with_hint(
                    "BigQuery does not enforce PRIMARY KEY: remove the duplicates, or configure key columns that \
                     identify one row in source.bigquery.keys; then `binferry resync --table` it",
                ));
            }
            buckets.insert(name, Bucket { rows: n, xor });
        }
        Ok(Summary { digits, buckets })
    }

    /// Total rows.
    pub(crate) fn rows(&self) -> u64 {
        self.buckets.values().map(|b| b.rows).sum()
    }

    /// The buckets that differ from `prev`.
    pub(crate) fn changed_since(&self, prev: &Summary) -> Changed {
        if self.digits != prev.digits {
            return Changed::All;
        }
        let mut changed: Vec<String> = Vec::new();
        for (name, bucket) in &self.buckets {
            if prev.buckets.get(name) != Some(bucket) {
                changed.push(name.clone());
            }
        }
        changed.extend(prev.buckets.keys().filter(|name| !self.buckets.contains_key(*name)).cloned());
        changed.sort();
        let total = 16usize.saturating_pow(self.digits);
        match changed.len() {
            0 => Changed::Nothing,
            n if n * 2 > total => Changed::All,
            _ => Changed::Buckets(changed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary(digits: u32, buckets: &[(&str, u64, i64)]) -> Summary {
        Summary {
            digits,
            buckets: buckets.iter().map(|(n, rows, xor)| (n.to_string(), Bucket { rows: *rows, xor: *xor })).collect(),
        }
    }

    #[test]
    fn changed_buckets_are_those_added_removed_or_different() {
        let prev = summary(1, &[("0", 3, 7), ("1", 2, 5), ("2", 1, 1)]);
        let cases = [
            (summary(1, &[("0", 3, 7), ("1", 2, 5), ("2", 1, 1)]), Changed::Nothing),
            // Same count, other hash: an UPDATE.
            (summary(1, &[("0", 3, 8), ("1", 2, 5), ("2", 1, 1)]), Changed::Buckets(vec!["0".into()])),
            // A bucket emptied (its rows deleted) and one appeared.
            (summary(1, &[("0", 3, 7), ("1", 2, 5), ("3", 1, 9)]), Changed::Buckets(vec!["2".into(), "3".into()])),
            // Another bucket layout: everything.
            (summary(2, &[("00", 3, 7)]), Changed::All),
        ];
        for (now, expect) in cases {
            assert_eq!(now.changed_since(&prev), expect, "{now:?}");
        }
        // More than half of the 16 buckets changed: one unfiltered read.
        let many: Vec<(String, u64, i64)> = (0..9).map(|i| (format!("{i:x}"), 1, i)).collect();
        let many: Vec<(&str, u64, i64)> = many.iter().map(|(n, r, x)| (n.as_str(), *r, *x)).collect();
        assert_eq!(summary(1, &many).changed_since(&summary(1, &[])), Changed::All);
    }

    #[test]
    fn a_duplicate_key_stops_the_table_with_the_fix() {
        let t = TableRef::new("shop", "recipes");
        let s = Summary::from_rows(&t, 1, vec![("a".into(), 2, 2, 5), ("b".into(), 1, 1, 3)]).unwrap();
        assert_eq!(s.rows(), 3);
        let e = Summary::from_rows(&t, 1, vec![("a".into(), 3, 2, 5)]).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Unsupported);
        assert!(e.to_string().contains("shop.recipes") && e.to_string().contains("3 rows, 2 distinct"), "{e}");
        assert!(e.hint().is_some());
    }
}
