//! A table's bucket summary at one round, and which buckets changed since the last one.
//!
//! The summary is what the source keeps between rounds (in its checkpoint): a few thousand
//! numbers per table, whatever the table's size. The rows themselves are compared by
//! BigQuery, between the two rounds' timestamps ([`super::sql`]).

use std::collections::BTreeMap;

use crate::error::{Error, ErrorKind, Result};
use crate::position::TableSummary;
use crate::schema::TableRef;

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

/// Build a summary from the summary query's rows. A bucket with fewer distinct keys than
/// rows holds a duplicate key: BigQuery does not enforce keys, and two rows with one key
/// cannot be one MySQL row, so that table stops with the fix.
pub(crate) fn from_rows(
    table: &TableRef,
    schema_version: u64,
    digits: u32,
    rows: Vec<SummaryRow>,
) -> Result<TableSummary> {
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
                 identify one row in source.bigquery.keys",
            ));
        }
        buckets.insert(name, (n, xor));
    }
    Ok(TableSummary { schema_version, digits, buckets })
}

/// Total rows.
pub(crate) fn rows(s: &TableSummary) -> u64 {
    s.buckets.values().map(|b| b.0).sum()
}

/// The buckets of `now` that differ from `prev`.
pub(crate) fn changed(prev: &TableSummary, now: &TableSummary) -> Changed {
    if now.digits != prev.digits {
        return Changed::All;
    }
    let mut names: Vec<String> =
        now.buckets.iter().filter(|(name, b)| prev.buckets.get(*name) != Some(b)).map(|(n, _)| n.clone()).collect();
    names.extend(prev.buckets.keys().filter(|name| !now.buckets.contains_key(*name)).cloned());
    names.sort();
    let total = 16usize.saturating_pow(now.digits);
    match names.len() {
        0 => Changed::Nothing,
        n if n * 2 > total => Changed::All,
        _ => Changed::Buckets(names),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary(digits: u32, buckets: &[(&str, u64, i64)]) -> TableSummary {
        TableSummary {
            schema_version: 1,
            digits,
            buckets: buckets.iter().map(|(n, rows, xor)| (n.to_string(), (*rows, *xor))).collect(),
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
            assert_eq!(changed(&prev, &now), expect, "{now:?}");
        }
        // More than half of the 16 buckets changed: one unfiltered read.
        let many: Vec<(String, u64, i64)> = (0..9).map(|i| (format!("{i:x}"), 1, i)).collect();
        let many: Vec<(&str, u64, i64)> = many.iter().map(|(n, r, x)| (n.as_str(), *r, *x)).collect();
        assert_eq!(changed(&summary(1, &[]), &summary(1, &many)), Changed::All);
    }

    #[test]
    fn a_duplicate_key_stops_the_table_with_the_fix() {
        let t = TableRef::new("shop", "recipes");
        let s = from_rows(&t, 7, 1, vec![("a".into(), 2, 2, 5), ("b".into(), 1, 1, 3)]).unwrap();
        assert_eq!((rows(&s), s.schema_version), (3, 7));
        let e = from_rows(&t, 7, 1, vec![("a".into(), 3, 2, 5)]).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Unsupported);
        assert!(e.to_string().contains("shop.recipes") && e.to_string().contains("3 rows, 2 distinct"), "{e}");
        assert!(e.hint().is_some());
    }
}
