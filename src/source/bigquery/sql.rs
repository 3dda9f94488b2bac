//! The SQL of a round, as text: pure, so each statement is pinned by a test and the same text
//! runs on real BigQuery and on the emulator (../shared/INFRA.md lists what the emulator
//! accepts; everything here is standard GoogleSQL).
//!
//! Three statements read a table at the round's timestamp (`FOR SYSTEM_TIME AS OF`, so every
//! table of a round shows one moment):
//! - [`TableSql::summary`]: per bucket of keys, the row count, the count of distinct keys (a
//!   duplicate key is an error, BigQuery does not enforce keys) and the XOR of the rows'
//!   hashes. Compared with the previous round's, it names the buckets that changed.
//! - [`TableSql::changes`]: the rows whose hash at this round's timestamp differs from their
//!   hash at the previous round's timestamp (`prev`) or at the start of the settle margin
//!   before it (`since`), in the changed buckets: new and changed rows with all their values,
//!   deleted rows with their key. BigQuery's time travel supplies the earlier hashes, so
//!   binferry keeps no per-row state, and only BigQuery hashes are ever compared.
//!
//!   Both earlier moments are needed. `prev` is the state the target was given: a row
//!   inserted shortly before the previous round and deleted since exists at `prev` only, and
//!   only a join with `prev` turns it into a delete. `since` catches a commit stamped before
//!   the previous round that became visible only after that round read the table: time travel
//!   now shows it at `prev` already, so only a join with an earlier moment sees it change.
//! - [`TableSql::rows`]: every row, for a table's first round.
//!
//! Output layout, shared by `changes` and `rows`: `_deleted` (BOOL), then one value per
//! column in table order (`_c0`, `_c1`, ...), each in the form [`super::values::decode`]
//! reads. Positional aliases keep a converted value (`UNIX_MICROS(ts) AS _c3`) from ever
//! shadowing the column that the row hash reads. `changes` adds three cells: the row's
//! bucket (`_b`) and its hashes at `now` (`_hn`) and at `prev` (`_ho`), NULL where the row
//! does not exist then. With them a round can bring the previous summary up to date itself
//! ([`super::summary::Delta`]) instead of asking BigQuery for a new one.
//!
//! The moments (microseconds since the epoch) and bucket names are written into the text as
//! literals, not passed as query parameters: the emulator runs any query that has parameters
//! two to three times slower (measured on a 1M-row table: a summary 0.8 s with literals, 2.0 s
//! with `@now`; a diff 1.0 s against 2.6 to 3.1 s), and BigQuery bills and plans both alike.
//! The moments are integers binferry formats; bucket names, which come back from BigQuery,
//! are quoted as string literals ([`string`]).

use super::table::{BqTable, BqType};

/// Buckets are the first `digits` hex digits of the MD5 of a row's key, so 16^digits of them.
pub(crate) const MAX_BUCKET_DIGITS: u32 = 2;

/// How many hex digits name a bucket for a table of `rows` rows: 16 buckets for small tables,
/// 256 above. More buckets would narrow a diff to fewer rows, but that saves nothing that
/// counts: BigQuery bills the diff's bytes whatever its `WHERE`, and both it and the emulator
/// scan every row to pick a bucket's. The summary returns one row per bucket every round,
/// and the checkpoint keeps them all: 256 buckets are at most about 9 KB of it per table, so
/// a hundred large tables fit in one Kafka message of the default 1 MB (4,096 buckets, as
/// earlier versions had, took about 130 KB per table, and seven tables filled it). A checkpoint
/// kept with more digits is read once more at 2, and that round diffs every bucket.
pub(crate) fn bucket_digits(rows: u64) -> u32 {
    match rows {
        0..=4_096 => 1,
        _ => MAX_BUCKET_DIGITS,
    }
}

/// A GoogleSQL string literal.
pub(crate) fn string(text: &str) -> String {
    format!("'{}'", text.replace('\\', "\\\\").replace('\'', "\\'"))
}

/// A GoogleSQL quoted identifier.
pub(crate) fn ident(name: &str) -> String {
    format!("`{}`", name.replace('\\', "\\\\").replace('`', "\\`"))
}

/// The statements of one table.
pub(crate) struct TableSql<'a> {
    table: &'a BqTable,
}

impl<'a> TableSql<'a> {
    pub(crate) fn new(table: &'a BqTable) -> Self {
        TableSql { table }
    }

    fn path(&self) -> String {
        let t = self.table;
        format!("{}.{}.{}", ident(&t.project), ident(&t.dataset), ident(&t.name))
    }

    /// The table as of `micros` since the epoch.
    fn as_of(&self, micros: i64) -> String {
        format!("{} FOR SYSTEM_TIME AS OF TIMESTAMP_MICROS({micros})", self.path())
    }

    /// `STRUCT(a AS a, ...)` of some columns, as JSON text. The aliases matter: without them
    /// the emulator writes empty field names.
    fn json_of(&self, columns: impl Iterator<Item = usize>) -> String {
        let fields: Vec<String> = columns
            .map(|i| {
                let c = ident(&self.table.columns[i].name);
                format!("{c} AS {c}")
            })
            .collect();
        format!("TO_JSON_STRING(STRUCT({}))", fields.join(", "))
    }

    /// The row's key as JSON text: what buckets and the diff's join use (it handles composite
    /// keys and NULLs alike).
    fn key_json(&self) -> String {
        self.json_of(self.table.key.iter().copied())
    }

    /// The row hash: MD5 of the whole row as JSON text, in hex.
    fn row_hash(&self) -> String {
        format!("TO_HEX(MD5({}))", self.json_of(0..self.table.columns.len()))
    }

    fn bucket(&self, digits: u32) -> String {
        format!("SUBSTR(TO_HEX(MD5({})), 1, {digits})", self.key_json())
    }

    /// Column `i` in the form that travels exactly over REST (see [`super::values`]).
    fn value(&self, i: usize) -> String {
        let c = ident(&self.table.columns[i].name);
        match self.table.columns[i].ty {
            BqType::Timestamp => format!("UNIX_MICROS({c})"),
            // TO_JSON_STRING(NULL) is the text `null`: a SQL NULL must stay one.
            BqType::Json | BqType::Nested => format!("IF({c} IS NULL, NULL, TO_JSON_STRING({c}))"),
            BqType::Geography => format!("ST_ASTEXT({c})"),
            _ => c,
        }
    }

    fn values(&self, columns: impl Iterator<Item = usize>) -> Vec<String> {
        columns.map(|i| format!("{} AS _c{i}", self.value(i))).collect()
    }

    fn bucket_filter(&self, digits: u32, buckets: Option<&[String]>) -> String {
        match buckets {
            Some(b) => {
                let names: Vec<String> = b.iter().map(|n| string(n)).collect();
                format!(" WHERE {} IN UNNEST([{}])", self.bucket(digits), names.join(", "))
            }
            None => String::new(),
        }
    }

    /// Per bucket at `now`: `_b` (hex text), `_n` rows, `_k` distinct keys, `_x` XOR of the
    /// first 60 bits of the row hashes.
    pub(crate) fn summary(&self, digits: u32, now: i64) -> String {
        format!(
            "SELECT SUBSTR(TO_HEX(MD5(_kj)), 1, {digits}) AS _b, COUNT(*) AS _n, COUNT(DISTINCT _kj) AS _k, \
             BIT_XOR(CAST(CONCAT('0x', SUBSTR(_h, 1, 15)) AS INT64)) AS _x \
             FROM (SELECT {} AS _kj, {} AS _h FROM {}) GROUP BY _b",
            self.key_json(),
            self.row_hash(),
            self.as_of(now)
        )
    }

    /// The rows that differ between `now` and `prev` or between `now` and `since`, in the
    /// layout of the module docs (see there why both). Without `since` (the settle margin is 0,
    /// or the table is younger than it), the join with `since` is left out. With `buckets`,
    /// only keys in those buckets.
    pub(crate) fn changes(
        &self,
        digits: u32,
        buckets: Option<&[String]>,
        now: i64,
        prev: i64,
        since: Option<i64>,
    ) -> String {
        let n = self.table.columns.len();
        let filter = self.bucket_filter(digits, buckets);
        let earlier = if since.is_some() { vec!["o", "s"] } else { vec!["o"] };
        let out: Vec<String> = (0..n)
            .map(|i| {
                if self.table.is_key(i) {
                    let all: Vec<String> = ["n"].iter().chain(&earlier).map(|t| format!("{t}._c{i}")).collect();
                    format!("COALESCE({}) AS _c{i}", all.join(", "))
                } else {
                    format!("n._c{i}")
                }
            })
            .collect();
        let key_only = |micros: i64| {
            format!(
                "(SELECT {}, {} AS _kj, {} AS _h FROM {}{filter})",
                self.values(self.table.key.iter().copied()).join(", "),
                self.key_json(),
                self.row_hash(),
                self.as_of(micros),
            )
        };
        let mut from = format!(
            "(SELECT {}, {} AS _kj, {} AS _h FROM {}{filter}) AS n FULL OUTER JOIN {} AS o ON n._kj = o._kj",
            self.values(0..n).join(", "),
            self.key_json(),
            self.row_hash(),
            self.as_of(now),
            key_only(prev),
        );
        let mut differs = "n._h IS DISTINCT FROM o._h".to_string();
        let mut kj = "n._kj, o._kj".to_string();
        if let Some(since) = since {
            from.push_str(&format!(" FULL OUTER JOIN {} AS s ON COALESCE(n._kj, o._kj) = s._kj", key_only(since)));
            differs.push_str(" OR n._h IS DISTINCT FROM s._h");
            kj.push_str(", s._kj");
        }
        format!(
            "SELECT n._kj IS NULL AS _deleted, {}, SUBSTR(TO_HEX(MD5(COALESCE({kj}))), 1, {digits}) AS _b, \
             n._h AS _hn, o._h AS _ho FROM {from} WHERE {differs}",
            out.join(", ")
        )
    }

    /// Every row at `now` (with `buckets`, of those buckets), in the layout of the module docs.
    pub(crate) fn rows(&self, digits: u32, buckets: Option<&[String]>, now: i64) -> String {
        format!(
            "SELECT FALSE AS _deleted, {} FROM {}{}",
            self.values(0..self.table.columns.len()).join(", "),
            self.as_of(now),
            self.bucket_filter(digits, buckets)
        )
    }
}

/// The round's timestamp, from BigQuery's own clock, in microseconds.
pub(crate) const NOW: &str = "SELECT UNIX_MICROS(CURRENT_TIMESTAMP()) AS now";

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::bigquery::table::BqColumn;

    fn table() -> BqTable {
        let col = |name: &str, ty: BqType| BqColumn { name: name.into(), ty, required: false };
        BqTable {
            project: "p".into(),
            dataset: "shop".into(),
            name: "recipe`s".into(),
            columns: vec![
                col("id", BqType::Int64),
                col("at", BqType::Timestamp),
                col("tags", BqType::Nested),
                col("g", BqType::Geography),
            ],
            key: vec![0],
            created: None,
        }
    }

    #[test]
    fn identifiers_and_strings_are_quoted_and_escaped() {
        assert_eq!(ident("a"), "`a`");
        assert_eq!(ident("we`ird\\"), "`we\\`ird\\\\`");
        assert_eq!(string("a"), "'a'");
        assert_eq!(string("it's\\"), "'it\\'s\\\\'");
    }

    #[test]
    fn the_statements_are_pinned() {
        let t = table();
        let sql = TableSql::new(&t);
        let kj = "TO_JSON_STRING(STRUCT(`id` AS `id`))";
        let h = "TO_HEX(MD5(TO_JSON_STRING(STRUCT(`id` AS `id`, `at` AS `at`, `tags` AS `tags`, `g` AS `g`))))";
        let from = |p: i64| format!("`p`.`shop`.`recipe\\`s` FOR SYSTEM_TIME AS OF TIMESTAMP_MICROS({p})");
        assert_eq!(
            sql.summary(2, 30),
            format!(
                "SELECT SUBSTR(TO_HEX(MD5(_kj)), 1, 2) AS _b, COUNT(*) AS _n, COUNT(DISTINCT _kj) AS _k, \
                 BIT_XOR(CAST(CONCAT('0x', SUBSTR(_h, 1, 15)) AS INT64)) AS _x \
                 FROM (SELECT {kj} AS _kj, {h} AS _h FROM {}) GROUP BY _b",
                from(30)
            )
        );
        let values = "`id` AS _c0, UNIX_MICROS(`at`) AS _c1, IF(`tags` IS NULL, NULL, TO_JSON_STRING(`tags`)) AS _c2, \
                      ST_ASTEXT(`g`) AS _c3";
        let filter = format!(" WHERE SUBSTR(TO_HEX(MD5({kj})), 1, 2) IN UNNEST(['0a', 'f\\'f'])");
        let buckets = ["0a".to_string(), "f'f".to_string()];
        assert_eq!(
            sql.changes(2, Some(&buckets), 30, 20, None),
            format!(
                "SELECT n._kj IS NULL AS _deleted, COALESCE(n._c0, o._c0) AS _c0, n._c1, n._c2, n._c3, \
                 SUBSTR(TO_HEX(MD5(COALESCE(n._kj, o._kj))), 1, 2) AS _b, n._h AS _hn, o._h AS _ho \
                 FROM (SELECT {values}, {kj} AS _kj, {h} AS _h FROM {}{filter}) AS n \
                 FULL OUTER JOIN (SELECT `id` AS _c0, {kj} AS _kj, {h} AS _h FROM {}{filter}) AS o \
                 ON n._kj = o._kj WHERE n._h IS DISTINCT FROM o._h",
                from(30),
                from(20)
            )
        );
        assert_eq!(
            sql.changes(1, None, 30, 20, Some(10)),
            format!(
                "SELECT n._kj IS NULL AS _deleted, COALESCE(n._c0, o._c0, s._c0) AS _c0, n._c1, n._c2, n._c3, \
                 SUBSTR(TO_HEX(MD5(COALESCE(n._kj, o._kj, s._kj))), 1, 1) AS _b, n._h AS _hn, o._h AS _ho \
                 FROM (SELECT {values}, {kj} AS _kj, {h} AS _h FROM {}) AS n \
                 FULL OUTER JOIN (SELECT `id` AS _c0, {kj} AS _kj, {h} AS _h FROM {}) AS o ON n._kj = o._kj \
                 FULL OUTER JOIN (SELECT `id` AS _c0, {kj} AS _kj, {h} AS _h FROM {}) AS s \
                 ON COALESCE(n._kj, o._kj) = s._kj WHERE n._h IS DISTINCT FROM o._h OR n._h IS DISTINCT FROM s._h",
                from(30),
                from(20),
                from(10)
            )
        );
        assert_eq!(sql.rows(1, None, 30), format!("SELECT FALSE AS _deleted, {values} FROM {}", from(30)));
        assert!(sql.changes(1, None, 30, 20, None).matches("WHERE").count() == 1);
    }

    #[test]
    fn buckets_grow_with_the_table_up_to_256() {
        for (rows, digits) in [(0, 1), (4_096, 1), (4_097, 2), (65_537, 2), (u64::MAX, 2)] {
            assert_eq!(bucket_digits(rows), digits, "{rows} rows");
        }
    }
}
