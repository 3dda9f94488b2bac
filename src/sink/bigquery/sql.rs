//! The SQL the BigQuery sink runs: table DDL and the MERGE that applies the changelog.
//!
//! Everything here is pure string building, unit-tested below and exercised against the
//! emulator by `tests/bigquery.rs`. Names are quoted with backticks; the few literals (stream
//! names, offsets, positions) come from binferry itself, and strings are escaped anyway.

use std::fmt::Write;

use super::types::BqType;

/// Column holding the [`crate::position::Position::sort_key`] of the change that wrote a row.
pub const POS: &str = "_binferry_pos";
/// Column holding the row hash.
pub const HASH: &str = "_binferry_hash";
/// Soft-delete tables: when the source deleted the row.
pub const DELETED_AT: &str = "_binferry_deleted_at";
/// Changelog: `U` (upsert), `C` (upsert of a row a table copy read: a snapshot, resync or
/// repair) or `D` (delete).
pub const OP: &str = "_binferry_op";
/// Changelog: the buffer stream (embedded log, Kafka partition) the change came from.
pub const STREAM: &str = "_binferry_stream";
/// Changelog: the batch label, the first buffer offset the appending batch could hold.
pub const BATCH: &str = "_binferry_batch";
/// Changelog: when the row was appended.
pub const APPENDED_AT: &str = "_binferry_appended_at";
/// Suffix of a table's changelog.
pub const CHANGELOG_SUFFIX: &str = "__changes";

/// The changelog's upserts (`U` and `C`), as an SQL condition on `alias`.
fn upserts(alias: &str) -> String {
    format!("{alias}.{OP} IN ('U', 'C')")
}

/// Batch commit markers, one row per writer commit (streamed with insertAll).
pub const COMMITS: &str = "_binferry_commits";
/// MERGE progress per stream (DML only).
pub const STATE: &str = "_binferry_state";
/// The target tables binferry manages: source, primary key, columns (DML only).
pub const TABLES: &str = "_binferry_tables";
/// Table-wide tombstones of TRUNCATE and DROP (DML only).
pub const TRUNCATES: &str = "_binferry_truncates";
/// Tables stopped by an incompatible change or an undecodable message (DML only).
pub const STOPPED: &str = "_binferry_stopped";
/// Streams that reached a DDL barrier (renames and drops that Kafka key partitions all carry).
pub const BARRIERS: &str = "_binferry_barriers";
/// Stopped tables a resync is rebuilding aside: shadow, kept name, phase (DML only).
pub const REBUILDS: &str = "_binferry_rebuilds";
/// The run registry: one row per run, replay (later resync, verify) of each pipeline (DML).
pub const RUNS: &str = "_binferry_runs";

/// Column-name prefixes BigQuery reserves (case-insensitive).
const RESERVED_PREFIXES: &[&str] = &["_table_", "_file_", "_partition", "_row_timestamp", "__root__", "_colidentifier"];

/// The BigQuery column of a source column. A name BigQuery accepts as it is (letters, digits
/// and `_`, not starting with a digit or a reserved prefix, at most 300 characters) and that
/// is not one of binferry's (`_binferry_...`) is kept. Any other name gets each other
/// character replaced by `_`, a `c_` in front where needed, and `__` plus eight hex digits of
/// a hash of the original name at the end: the same source name always gives the same column,
/// and two source names never give one.
pub fn column_name(source: &str) -> String {
    let lower = source.to_ascii_lowercase();
    let valid = !source.is_empty()
        && source.len() <= 300
        && source.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
        && !source.as_bytes()[0].is_ascii_digit()
        && !RESERVED_PREFIXES.iter().any(|p| lower.starts_with(p))
        && !lower.starts_with("_binferry_");
    if valid {
        return source.to_string();
    }
    let mut clean: String =
        source.chars().map(|c| if c.is_ascii_alphanumeric() || c == '_' { c } else { '_' }).take(280).collect();
    if clean.is_empty() || clean.as_bytes()[0].is_ascii_digit() || clean.starts_with('_') {
        clean.insert_str(0, "c_");
    }
    let hash = blake3::hash(source.as_bytes()).to_hex();
    format!("{clean}__{}", &hash[..8])
}

/// A quoted identifier.
pub fn ident(name: &str) -> String {
    format!("`{}`", name.replace('`', "\\`"))
}

/// A quoted table path.
pub fn path(project: &str, dataset: &str, table: &str) -> String {
    format!("`{project}.{dataset}.{}`", table.replace('`', "\\`"))
}

/// A string literal.
pub fn string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('\'');
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\'' => out.push_str("\\'"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c => out.push(c),
        }
    }
    out.push('\'');
    out
}

/// A BYTES value. `FROM_HEX` rather than a `b'\x..'` literal: the emulator reads escapes
/// above 0x7f in bytes literals as characters and stores their UTF-8 encoding.
pub fn bytes(b: &[u8]) -> String {
    let mut out = String::from("FROM_HEX('");
    for x in b {
        let _ = write!(out, "{x:02x}");
    }
    out.push_str("')");
    out
}

/// A target table's shape, as recorded in `_binferry_tables`.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct TableShape {
    /// Every column ever replicated, with its current type, in creation order.
    pub columns: Vec<(String, BqType)>,
    /// Primary-key column names.
    pub primary_key: Vec<String>,
    /// Whether the final table has `_binferry_deleted_at`.
    pub soft: bool,
}

/// One stream's changelog rows with batch labels in `(after, upto]`.
#[derive(Clone, Copy, Debug)]
pub struct LabelRange<'a> {
    pub stream: &'a str,
    pub after: i64,
    pub upto: i64,
}

/// Where the sink's tables are.
pub struct Names<'a> {
    pub project: &'a str,
    pub dataset: &'a str,
}

impl Names<'_> {
    pub fn table(&self, t: &str) -> String {
        path(self.project, self.dataset, t)
    }

    pub fn changelog(&self, t: &str) -> String {
        path(self.project, self.dataset, &format!("{t}{CHANGELOG_SUFFIX}"))
    }

    /// The bookkeeping tables (idempotent).
    pub fn create_meta(&self) -> String {
        [
            format!(
                "CREATE TABLE IF NOT EXISTS {} (stream STRING NOT NULL, `offset` INT64 NOT NULL, batch INT64 NOT NULL, \
                 position STRING, tables STRING, committed_at TIMESTAMP)",
                self.table(COMMITS)
            ),
            format!(
                "CREATE TABLE IF NOT EXISTS {} (stream STRING NOT NULL, merged_offset INT64 NOT NULL, position STRING, \
                 updated_at TIMESTAMP)",
                self.table(STATE)
            ),
            format!(
                "CREATE TABLE IF NOT EXISTS {} (table_name STRING NOT NULL, source_db STRING, source_table STRING, \
                 shape STRING, updated_at TIMESTAMP)",
                self.table(TABLES)
            ),
            format!(
                "CREATE TABLE IF NOT EXISTS {} (table_name STRING NOT NULL, pos BYTES NOT NULL, created_at TIMESTAMP)",
                self.table(TRUNCATES)
            ),
            format!(
                "CREATE TABLE IF NOT EXISTS {} (pipeline STRING NOT NULL, source_db STRING NOT NULL, \
                 source_table STRING NOT NULL, reason STRING, stopped_at TIMESTAMP)",
                self.table(STOPPED)
            ),
            format!(
                "CREATE TABLE IF NOT EXISTS {} (pipeline STRING NOT NULL, barrier STRING NOT NULL, \
                 stream STRING NOT NULL, phase STRING NOT NULL, reached_at TIMESTAMP)",
                self.table(BARRIERS)
            ),
            format!(
                "CREATE TABLE IF NOT EXISTS {} (pipeline STRING NOT NULL, table_name STRING NOT NULL, \
                 shadow STRING NOT NULL, kept STRING, phase STRING NOT NULL, started_at TIMESTAMP)",
                self.table(REBUILDS)
            ),
        ]
        .join(";\n")
    }

    /// Create the final table and its changelog.
    pub fn create_tables(
        &self,
        name: &str,
        shape: &TableShape,
        partition_by: Option<&str>,
        cluster_by: &[String],
    ) -> String {
        let cols = |out: &mut String, not_null_key: bool| {
            for (c, ty) in &shape.columns {
                let nn = if not_null_key && shape.primary_key.contains(c) { " NOT NULL" } else { "" };
                let _ = write!(out, "{} {ty}{nn}, ", ident(c));
            }
        };
        let mut fin = format!("CREATE TABLE IF NOT EXISTS {} (", self.table(name));
        cols(&mut fin, true);
        let _ = write!(fin, "{POS} BYTES NOT NULL, {HASH} BYTES");
        if shape.soft {
            let _ = write!(fin, ", {DELETED_AT} TIMESTAMP");
        }
        let pk: Vec<String> = shape.primary_key.iter().map(|c| ident(c)).collect();
        let _ = write!(fin, ", PRIMARY KEY ({}) NOT ENFORCED)", pk.join(", "));
        if let Some(p) = partition_by {
            let _ = write!(fin, " PARTITION BY {p}");
        }
        let cluster: Vec<String> = if cluster_by.is_empty() {
            shape.primary_key.iter().take(4).map(|c| ident(c)).collect()
        } else {
            cluster_by.iter().map(|c| ident(c)).collect()
        };
        let _ = write!(fin, " CLUSTER BY {}", cluster.join(", "));
        let mut log = format!("CREATE TABLE IF NOT EXISTS {} (", self.changelog(name));
        cols(&mut log, false);
        let _ = write!(
            log,
            "{POS} BYTES NOT NULL, {HASH} BYTES, {OP} STRING NOT NULL, {DELETED_AT} TIMESTAMP, {STREAM} STRING NOT NULL, \
             {BATCH} INT64 NOT NULL, {APPENDED_AT} TIMESTAMP) CLUSTER BY {}",
            shape.primary_key.iter().take(4).map(|c| ident(c)).collect::<Vec<_>>().join(", ")
        );
        format!("{fin};\n{log}")
    }

    /// The rows a TRUNCATE at `pos` removes from table `name`: those older than it, but not
    /// a key the changelog has an upsert of at or after it. A MERGE writes nothing for an
    /// upsert whose hash equals the row's, so such a row keeps its older position although
    /// the source still had it after `pos`: that is how a chunked copy's closing sweep (a
    /// TRUNCATE at the copy's first position, see `source::chunks`) keeps the rows the copy
    /// found unchanged, and a real TRUNCATE keeps an equal row inserted again after it.
    pub fn sweep(&self, name: &str, shape: &TableShape, pos: &str) -> String {
        let on =
            shape.primary_key.iter().map(|k| format!("C.{k} = T.{k}", k = ident(k))).collect::<Vec<_>>().join(" AND ");
        if on.is_empty() {
            return format!("DELETE FROM {} WHERE {POS} < {pos}", self.table(name));
        }
        format!(
            "DELETE FROM {table} T WHERE T.{POS} < {pos} AND NOT EXISTS (SELECT 1 FROM {log} C WHERE {on} AND C.{POS} >= {pos} AND {up})",
            table = self.table(name),
            log = self.changelog(name),
            up = upserts("C"),
        )
    }

    /// The MERGE that applies to table `name` the changelog rows of each range: a stream's
    /// rows with batch labels in `(after, upto]`.
    ///
    /// For every key those rows touch, the source is the key's newest change in the *whole*
    /// changelog (not older than the table's last TRUNCATE): so a MERGE never regresses a row,
    /// whatever ranges ran before, and the changelog doubles as the tombstone store of hard
    /// deletes. A change applies only when its position is newer than the row's (`>=` when
    /// `repair`, which also rewrites rows changed by hand); an upsert whose hash equals the
    /// row's writes nothing.
    pub fn merge(&self, name: &str, shape: &TableShape, ranges: &[LabelRange<'_>], repair: bool) -> String {
        let key = &shape.primary_key;
        let on = |a: &str, b: &str| {
            key.iter().map(|k| format!("{a}.{k} = {b}.{k}", k = ident(k))).collect::<Vec<_>>().join(" AND ")
        };
        let keys = key.iter().map(|k| ident(k)).collect::<Vec<_>>().join(", ");
        let ckeys = key.iter().map(|k| format!("C.{}", ident(k))).collect::<Vec<_>>().join(", ");
        let newer = if repair { format!("S.{POS} >= T.{POS}") } else { format!("S.{POS} > T.{POS}") };
        // A copied row (`C`) is written even when its hash is the row's: a resync or a repair
        // reads it from the source to correct the row, whose values may have been changed by
        // hand with its hash left alone.
        let changed = if repair {
            // A replay rewrites rows at the same position too: that repairs hand edits.
            "TRUE".to_string()
        } else {
            let revived = if shape.soft { format!(" OR T.{DELETED_AT} IS NOT NULL") } else { String::new() };
            format!("(S.{HASH} IS DISTINCT FROM T.{HASH}{revived} OR S.{OP} = 'C')")
        };
        let names: Vec<String> = shape.columns.iter().map(|(c, _)| ident(c)).collect();
        let mut set: Vec<String> = names.iter().map(|c| format!("{c} = S.{c}")).collect();
        set.push(format!("{POS} = S.{POS}"));
        set.push(format!("{HASH} = S.{HASH}"));
        let mut ins_cols = names.clone();
        ins_cols.push(POS.into());
        ins_cols.push(HASH.into());
        if shape.soft {
            // A typed NULL: the emulator's parser refuses a bare `= NULL` in MERGE ... UPDATE SET.
            set.push(format!("{DELETED_AT} = CAST(NULL AS TIMESTAMP)"));
            ins_cols.push(DELETED_AT.into());
        }
        let ins_vals: Vec<String> = ins_cols.iter().map(|c| format!("S.{c}")).collect();
        let ranges = ranges
            .iter()
            .map(|r| format!("({STREAM} = {} AND {BATCH} > {} AND {BATCH} <= {})", string(r.stream), r.after, r.upto))
            .collect::<Vec<_>>()
            .join(" OR ");
        let mut sql = format!(
            "MERGE {table} T USING (\n  SELECT C.* FROM {log} C\n  JOIN (SELECT DISTINCT {keys} FROM {log} \
             WHERE {ranges}) K ON {on_ck}\n  \
             WHERE C.{POS} >= (SELECT IFNULL(MAX(pos), b'') FROM {truncates} WHERE table_name = {tname})\n  \
             QUALIFY ROW_NUMBER() OVER (PARTITION BY {ckeys} ORDER BY C.{POS} DESC) = 1\n) S ON {on_ts}\n",
            table = self.table(name),
            log = self.changelog(name),
            on_ck = on("C", "K"),
            truncates = self.table(TRUNCATES),
            tname = string(name),
            on_ts = on("T", "S"),
        );
        if shape.soft {
            let _ = writeln!(
                sql,
                "WHEN MATCHED AND S.{OP} = 'D' AND {newer} THEN UPDATE SET {DELETED_AT} = S.{DELETED_AT}, {POS} = S.{POS}"
            );
        } else {
            let _ = writeln!(sql, "WHEN MATCHED AND S.{OP} = 'D' AND {newer} THEN DELETE");
        }
        let up = upserts("S");
        let _ = writeln!(sql, "WHEN MATCHED AND {up} AND {newer} AND {changed} THEN UPDATE SET {}", set.join(", "));
        let _ = write!(
            sql,
            "WHEN NOT MATCHED BY TARGET AND {up} THEN INSERT ({}) VALUES ({})",
            ins_cols.join(", "),
            ins_vals.join(", ")
        );
        if shape.soft {
            // A deleted key never seen by the table keeps its last image, marked deleted.
            let _ = write!(
                sql,
                "\nWHEN NOT MATCHED BY TARGET AND S.{OP} = 'D' THEN INSERT ({}) VALUES ({})",
                ins_cols.join(", "),
                ins_vals.join(", ")
            );
        }
        sql
    }

    /// Record for each stream that it has merged everything up to batch offset `upto`
    /// (never moving a stream's progress backward).
    pub fn set_merged(&self, progress: &[(&str, i64, &str)]) -> String {
        let rows = progress
            .iter()
            .map(|(stream, upto, position)| {
                format!(
                    "SELECT {} AS stream, {upto} AS merged_offset, {} AS position",
                    string(stream),
                    string(position)
                )
            })
            .collect::<Vec<_>>()
            .join(" UNION ALL ");
        format!(
            "MERGE {state} T USING ({rows}) S ON T.stream = S.stream\n\
             WHEN MATCHED THEN UPDATE SET merged_offset = GREATEST(T.merged_offset, S.merged_offset), \
             position = S.position, updated_at = CURRENT_TIMESTAMP()\n\
             WHEN NOT MATCHED THEN INSERT (stream, merged_offset, position, updated_at) \
             VALUES (S.stream, S.merged_offset, S.position, CURRENT_TIMESTAMP())",
            state = self.table(STATE),
        )
    }

    /// Record (or replace) the shape of target table `name`.
    pub fn set_shape(&self, name: &str, db: &str, table: &str, shape: &TableShape) -> String {
        let json = serde_json::to_string(shape).unwrap_or_default();
        format!(
            "DELETE FROM {t} WHERE table_name = {n};\nINSERT INTO {t} (table_name, source_db, source_table, shape, \
             updated_at) VALUES ({n}, {db}, {tb}, {json}, CURRENT_TIMESTAMP())",
            t = self.table(TABLES),
            n = string(name),
            db = string(db),
            tb = string(table),
            json = string(&json),
        )
    }

    /// Statements as one multi-statement script (one job). Not a transaction: each MERGE is
    /// atomic on its own, and re-running a MERGE is harmless, so a script cut short is simply
    /// run again. (The emulator also rejects MERGE inside `BEGIN TRANSACTION`.)
    pub fn script(statements: &[String]) -> String {
        statements.join(";\n")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape(soft: bool) -> TableShape {
        TableShape {
            columns: vec![("id".into(), BqType::Int64), ("name".into(), BqType::String)],
            primary_key: vec!["id".into()],
            soft,
        }
    }

    /// (source column, BigQuery column)
    #[test]
    fn column_names_map_deterministically_and_distinctly() {
        let cases = [
            ("id", "id"),
            ("Order_Total2", "Order_Total2"),
            ("special\"[`$]'_id", "special_______id__"),
            ("2nd", "c_2nd__"),
            ("_TABLE_x", "c__TABLE_x__"),
            ("_binferry_pos", "c__binferry_pos__"),
            ("naïve", "na_ve__"),
            ("a b", "a_b__"),
        ];
        for (source, want) in cases {
            let got = column_name(source);
            assert!(got.starts_with(want), "{source:?} -> {got}");
            assert_eq!(got, column_name(source), "deterministic");
            assert!(got.len() <= 300 && got.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'), "{got}");
        }
        assert_ne!(column_name("a b"), column_name("a-b"), "names that clean alike stay apart");
        assert_eq!(column_name(&"x".repeat(400)).len(), 280 + 10);
    }

    #[test]
    fn literals_are_escaped() {
        assert_eq!(string("it's a \\ test"), "'it\\'s a \\\\ test'");
        assert_eq!(bytes(&[0, 255]), "FROM_HEX('00ff')");
        assert_eq!(ident("we`ird"), "`we\\`ird`");
    }

    fn range(stream: &str, after: i64, upto: i64) -> [LabelRange<'_>; 1] {
        [LabelRange { stream, after, upto }]
    }

    #[test]
    fn a_sweep_keeps_keys_upserted_since() {
        let n = Names { project: "p", dataset: "d" };
        let sql = n.sweep("t", &shape(false), "b'AB'");
        assert!(sql.starts_with("DELETE FROM"), "{sql}");
        assert!(sql.contains("T._binferry_pos < b'AB' AND NOT EXISTS (SELECT 1 FROM"), "{sql}");
        assert!(
            sql.contains("C.`id` = T.`id` AND C._binferry_pos >= b'AB' AND C._binferry_op IN ('U', 'C'))"),
            "{sql}"
        );
    }

    #[test]
    fn merge_guards_by_position_and_hash() {
        let n = Names { project: "p", dataset: "d" };
        let sql = n.merge("shop_orders", &shape(false), &range("embedded", 10, 20), false);
        assert!(sql.contains("`p.d.shop_orders__changes`"));
        assert!(sql.contains("_binferry_batch > 10 AND _binferry_batch <= 20"));
        assert!(sql.contains("THEN DELETE"));
        assert!(
            sql.contains(
                "S._binferry_pos > T._binferry_pos AND (S._binferry_hash IS DISTINCT FROM T._binferry_hash OR S._binferry_op = 'C')"
            ),
            "{sql}"
        );
        assert!(!sql.contains("_binferry_deleted_at"));
        let soft = n.merge("shop_orders", &shape(true), &range("embedded", 10, 20), false);
        assert!(!soft.contains("THEN DELETE"));
        assert!(soft.contains("UPDATE SET _binferry_deleted_at = S._binferry_deleted_at"));
        let repair = n.merge("shop_orders", &shape(false), &range("replay", -1, 20), true);
        assert!(repair.contains("S._binferry_pos >= T._binferry_pos AND TRUE"));
    }

    #[test]
    fn one_merge_takes_the_ranges_of_several_streams() {
        let n = Names { project: "p", dataset: "d" };
        let ranges = [
            LabelRange { stream: "kafka:t/0", after: 4, upto: 9 },
            LabelRange { stream: "kafka:t/1", after: -1, upto: 3 },
        ];
        let sql = n.merge("t", &shape(false), &ranges, false);
        assert!(sql.contains(
            "WHERE (_binferry_stream = 'kafka:t/0' AND _binferry_batch > 4 AND _binferry_batch <= 9) OR \
             (_binferry_stream = 'kafka:t/1' AND _binferry_batch > -1 AND _binferry_batch <= 3)) K"
        ));
        assert_eq!(sql.matches("MERGE ").count(), 1);
        let state = n.set_merged(&[("kafka:t/0", 9, "b.1:4"), ("kafka:t/1", 3, "b.1:9")]);
        assert!(state.contains("SELECT 'kafka:t/0' AS stream, 9 AS merged_offset, 'b.1:4' AS position UNION ALL"));
        assert!(state.contains("GREATEST(T.merged_offset, S.merged_offset)"));
    }

    #[test]
    fn tables_declare_the_key_not_enforced_and_cluster_by_it() {
        let n = Names { project: "p", dataset: "d" };
        let sql = n.create_tables("t", &shape(false), Some("RANGE_BUCKET(id, GENERATE_ARRAY(0, 100, 10))"), &[]);
        assert!(sql.contains("`id` INT64 NOT NULL"));
        assert!(sql.contains("PRIMARY KEY (`id`) NOT ENFORCED) PARTITION BY RANGE_BUCKET"));
        assert!(sql.contains("CLUSTER BY `id`"));
        assert!(sql.contains("`p.d.t__changes`"));
    }
}
