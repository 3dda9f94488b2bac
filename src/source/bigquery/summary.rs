//! A table's bucket summary at one round, and which buckets changed since the last one.
//!
//! The summary is what the source keeps between rounds (in its checkpoint): at most 256
//! buckets of a few numbers per table, whatever the table's size. The rows themselves are compared by
//! BigQuery, between the two rounds' timestamps ([`super::sql`]).

use std::collections::{BTreeMap, BTreeSet};

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

/// The tables a round diffs at once, without asking BigQuery for their summary at the round's
/// timestamp first: those the last round found changed. The summary exists to make an idle
/// table cheap (one scan instead of the diff's); for a table that changes every round it is
/// a query to wait for before the diff. Such a table is instead diffed with the previous
/// round alone while BigQuery computes its summary *at the previous round's timestamp*, in
/// parallel. That summary does two things: it is the base the diff's hashes bring up to date
/// ([`Delta`]), and where it differs from the one the previous round kept, it names the
/// buckets of commits that round could not see yet (visible after their timestamp), which
/// are then diffed with the settle margin too. So the margin costs nothing while no commit
/// is late, and rows changed in it are not sent again every round.
///
/// A table the diff finds unchanged goes back to its summary alone. Kept in memory, as a hint
/// only: after a restart every table starts with its summary.
#[derive(Debug, Default)]
pub(crate) struct DiffFirst {
    /// `dataset.table` of the tables the last round found changed.
    changed: BTreeSet<String>,
}

impl DiffFirst {
    /// Whether this round diffs `table` first.
    pub(crate) fn wants(&self, table: &str) -> bool {
        self.changed.contains(table)
    }

    /// Whether this round found rows of `table` changed (with a summary that still fits the
    /// table's size: one that does not is computed again, in a new bucket layout).
    pub(crate) fn record(&mut self, table: &str, changed: bool) {
        if changed {
            self.changed.insert(table.to_string());
        } else {
            self.changed.remove(table);
        }
    }
}

/// A row a diff found changed, as its bucket's summary sees it: the bucket, and the row's
/// hash (hex MD5, as in [`super::sql`]) at this round's timestamp and at the previous
/// round's, `None` where the row did not exist then.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct RowHashes {
    pub(crate) bucket: String,
    pub(crate) now: Option<String>,
    pub(crate) prev: Option<String>,
}

/// A table's summary at the previous round's timestamp brought up to this round by the rows
/// a diff between the two found changed: each takes its hash at the previous round out of
/// its bucket and puts its hash now in. Started from that summary as BigQuery computes it
/// now ([`DiffFirst`]), the result is the summary BigQuery would compute at this round's
/// timestamp, without the scan.
pub(crate) struct Delta {
    summary: TableSummary,
}

impl Delta {
    pub(crate) fn new(prev: TableSummary) -> Self {
        Delta { summary: prev }
    }

    pub(crate) fn apply(&mut self, row: &RowHashes) -> Result<()> {
        let (prev, now) = (row.prev.as_deref().map(hash60).transpose()?, row.now.as_deref().map(hash60).transpose()?);
        if prev.is_none() && now.is_none() {
            // Inserted and deleted within the settle margin: in neither summary.
            return Ok(());
        }
        let bucket = self.summary.buckets.entry(row.bucket.clone()).or_insert((0, 0));
        if let Some(h) = prev {
            bucket.0 = bucket.0.saturating_sub(1);
            bucket.1 ^= h;
        }
        if let Some(h) = now {
            bucket.0 += 1;
            bucket.1 ^= h;
        }
        Ok(())
    }

    /// The summary now: buckets left without rows are gone, as in BigQuery's.
    pub(crate) fn finish(mut self) -> TableSummary {
        self.summary.buckets.retain(|_, (rows, _)| *rows > 0);
        self.summary
    }
}

/// The summary's share of one row hash: `CAST(CONCAT('0x', SUBSTR(h, 1, 15)) AS INT64)`.
fn hash60(h: &str) -> Result<i64> {
    h.get(..15)
        .and_then(|prefix| i64::from_str_radix(prefix, 16).ok())
        .ok_or_else(|| Error::new(ErrorKind::Decode, format!("a row hash from BigQuery is not hex MD5: {h:?}")))
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
    fn a_delta_moves_each_changed_row_from_its_old_hash_to_its_new() {
        let (a, b, c) = ("0123456789abcdef0123456789abcdef", "fedcba9876543210fedcba9876543210", "00000000000000f");
        let (ha, hb, hc) = (0x0123456789abcde_i64, 0xfedcba987654321_i64, 0xf_i64);
        let row = |bucket: &str, now: Option<&str>, prev: Option<&str>| RowHashes {
            bucket: bucket.into(),
            now: now.map(String::from),
            prev: prev.map(String::from),
        };
        let mut d = Delta::new(summary(1, &[("1", 2, ha ^ hb), ("2", 1, hc), ("3", 1, 9)]));
        for r in [
            row("1", Some(c), Some(a)), // updated: a → c
            row("2", None, Some(c)),    // deleted: bucket 2 empties
            row("4", Some(b), None),    // inserted into a new bucket
            row("3", None, None),       // inserted and deleted in the margin: no part
            row("3", Some(a), Some(a)), // unchanged since the last round (sent for the margin)
        ] {
            d.apply(&r).unwrap();
        }
        assert_eq!(d.finish(), summary(1, &[("1", 2, hc ^ hb), ("3", 1, 9), ("4", 1, hb)]));
        assert!(Delta::new(summary(1, &[])).apply(&row("1", Some("xyz"), None)).is_err());
    }

    #[test]
    fn a_table_is_diffed_first_while_it_keeps_changing() {
        let mut d = DiffFirst::default();
        assert!(!d.wants("s.t"), "a table starts with its summary");
        d.record("s.t", true);
        assert!(d.wants("s.t") && !d.wants("s.other"));
        d.record("s.t", true);
        assert!(d.wants("s.t"));
        d.record("s.t", false);
        assert!(!d.wants("s.t"), "idle: the summary alone again");
    }

    /// The checkpoint carries every table's summary, and through Kafka it is one message
    /// (1 MB by default): a table's share stays small whatever its size.
    #[test]
    fn a_largest_summary_takes_a_few_kilobytes_of_the_checkpoint() {
        use crate::source::bigquery::sql::{MAX_BUCKET_DIGITS, bucket_digits};
        assert_eq!(bucket_digits(u64::MAX), MAX_BUCKET_DIGITS);
        let buckets = 16usize.pow(MAX_BUCKET_DIGITS);
        // A table of a billion rows; XORs of the full 60 bits.
        let name = |i: usize| format!("{i:0w$x}", w = MAX_BUCKET_DIGITS as usize);
        let full: Vec<(String, u64, i64)> =
            (0..buckets).map(|i| (name(i), 4_000_000, 0x0fff_ffff_ffff_ffff - i as i64)).collect();
        let full: Vec<(&str, u64, i64)> = full.iter().map(|(n, r, x)| (n.as_str(), *r, *x)).collect();
        let bytes = serde_json::to_vec(&summary(MAX_BUCKET_DIGITS, &full)).unwrap().len();
        assert!(bytes < 10_000, "{bytes} bytes: a hundred such tables would not fit in 1 MB");
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
