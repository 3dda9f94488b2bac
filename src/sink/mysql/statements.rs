//! SQL text for the MySQL sink. Every statement uses placeholders; the shapes depend only
//! on the table and the number of rows, so prepared statements are reused.

use std::fmt::Write as _;

use crate::schema::{ColumnSchema, TableSchema};

/// Column holding the row's source position.
pub const POS_COLUMN: &str = "_binferry_pos";
/// Column holding the row hash.
pub const HASH_COLUMN: &str = "_binferry_hash";
/// Soft-delete marker column.
pub const DELETED_COLUMN: &str = "_binferry_deleted_at";
/// Copy number of a row of a keyless table (1..=multiplicity).
pub const DUP_COLUMN: &str = "_binferry_dup";
/// Name of the state table in the target database.
pub const STATE_TABLE: &str = "_binferry_state";
/// Tables stopped by incompatible schema changes.
pub const STOPPED_TABLE: &str = "_binferry_stopped";
/// Tables rebuilt aside by a resync, until the rebuilt table takes their place.
pub const REBUILDS_TABLE: &str = "_binferry_rebuilds";
/// The run registry: one row per run, replay (later resync, verify) of each pipeline.
pub const RUNS_TABLE: &str = "_binferry_runs";
/// Streams that reached a DDL barrier (renames and drops that Kafka key partitions all carry).
pub const BARRIER_TABLE: &str = "_binferry_barriers";
/// Name of the tombstone table in the target database.
pub const TOMBSTONE_TABLE: &str = "_binferry_tombstones";

/// Quote an identifier.
pub fn q(ident: &str) -> String {
    format!("`{}`", ident.replace('`', "``"))
}

fn repeat(one: &str, n: usize, sep: &str) -> String {
    vec![one; n].join(sep)
}

/// Statement builder for one target table.
pub struct Statements<'a> {
    /// `db`.`table`, quoted.
    pub table: String,
    db: String,
    schema: &'a TableSchema,
    soft: bool,
}

impl<'a> Statements<'a> {
    pub fn new(db: &str, table: &str, schema: &'a TableSchema, soft: bool) -> Self {
        Statements { table: format!("{}.{}", q(db), q(table)), db: q(db), schema, soft }
    }

    fn key_columns(&self) -> Vec<String> {
        self.schema.primary_key.iter().map(|&i| q(&self.schema.columns[i].name)).collect()
    }

    /// `CREATE TABLE IF NOT EXISTS` with the source columns, typed by `column_ddl`, and
    /// binferry's own.
    pub fn create(&self, column_ddl: impl Fn(&ColumnSchema) -> String) -> String {
        let mut ddl = format!("CREATE TABLE IF NOT EXISTS {} (", self.table);
        for (i, c) in self.schema.columns.iter().enumerate() {
            let null = if self.schema.primary_key.contains(&i) { "NOT NULL" } else { "NULL" };
            let _ = write!(ddl, "{} {} {null}, ", q(&c.name), column_ddl(c));
        }
        for (name, ty) in self.system_columns() {
            let _ = write!(ddl, "{name} {ty}, ");
        }
        let key = if self.schema.has_primary_key() {
            self.key_columns().join(", ")
        } else {
            format!("{HASH_COLUMN}, {DUP_COLUMN}")
        };
        let _ = write!(ddl, "PRIMARY KEY ({key})) ENGINE=InnoDB");
        ddl
    }

    /// binferry's columns of this table and their DDL.
    pub fn system_columns(&self) -> Vec<(&'static str, &'static str)> {
        let mut cols = vec![(POS_COLUMN, "BINARY(16) NOT NULL"), (HASH_COLUMN, "BINARY(16) NOT NULL")];
        if !self.schema.has_primary_key() {
            cols.push((DUP_COLUMN, "INT UNSIGNED NOT NULL"));
        }
        if self.soft {
            cols.push((DELETED_COLUMN, "DATETIME(6) NULL"));
        }
        cols
    }

    /// Stored position, hash and deleted flag of `n` keys: `SELECT key..., pos, hash, deleted`.
    pub fn select_state(&self, n: usize) -> String {
        let keys = self.key_columns();
        let one = if keys.len() == 1 { "?".to_string() } else { format!("({})", repeat("?", keys.len(), ",")) };
        let lhs = if keys.len() == 1 { keys[0].clone() } else { format!("({})", keys.join(", ")) };
        let deleted = if self.soft { format!("{DELETED_COLUMN} IS NOT NULL") } else { "0".into() };
        format!(
            "SELECT {}, {POS_COLUMN}, {HASH_COLUMN}, {deleted} FROM {} WHERE {lhs} IN ({})",
            keys.join(", "),
            self.table,
            repeat(&one, n, ",")
        )
    }

    /// Upsert of `n` rows: columns, position, hash (and deleted-at for soft-delete tables),
    /// guarded by position. `overwrite_equal` also rewrites rows whose stored position equals
    /// the change's (replay repairs drifted rows that way).
    pub fn upsert(&self, n: usize, overwrite_equal: bool) -> String {
        let cols: Vec<String> = self.schema.columns.iter().map(|c| q(&c.name)).collect();
        let mut all = cols.clone();
        all.push(POS_COLUMN.into());
        all.push(HASH_COLUMN.into());
        if self.soft {
            all.push(DELETED_COLUMN.into());
        }
        let one = format!("({})", repeat("?", all.len(), ","));
        let mut sql = format!("INSERT INTO {} ({}) VALUES {}", self.table, all.join(", "), repeat(&one, n, ","));
        let cmp = if overwrite_equal { ">=" } else { ">" };
        let newer = format!("VALUES({POS_COLUMN}) {cmp} {POS_COLUMN}");
        sql.push_str(" ON DUPLICATE KEY UPDATE ");
        for (i, c) in cols.iter().enumerate() {
            if !self.schema.primary_key.contains(&i) {
                let _ = write!(sql, "{c} = IF({newer}, VALUES({c}), {c}), ");
            }
        }
        if self.soft {
            let _ = write!(sql, "{DELETED_COLUMN} = IF({newer}, VALUES({DELETED_COLUMN}), {DELETED_COLUMN}), ");
        }
        // Assignments run left to right: the position, which the guard reads, goes last.
        let _ = write!(
            sql,
            "{HASH_COLUMN} = IF({newer}, VALUES({HASH_COLUMN}), {HASH_COLUMN}), \
             {POS_COLUMN} = IF({newer}, VALUES({POS_COLUMN}), {POS_COLUMN})"
        );
        sql
    }

    /// Delete of `n` keys, each only if the stored row is older than the delete.
    pub fn delete(&self, n: usize) -> String {
        let mut one = String::from("(");
        for k in self.key_columns() {
            let _ = write!(one, "{k} = ? AND ");
        }
        let _ = write!(one, "{POS_COLUMN} < ?)");
        format!("DELETE FROM {} WHERE {}", self.table, repeat(&one, n, " OR "))
    }

    /// Keyless tables: multiplicity and newest position of `n` row hashes.
    pub fn keyless_state(&self, n: usize) -> String {
        format!(
            "SELECT {HASH_COLUMN}, COUNT(*), MAX({POS_COLUMN}) FROM {} WHERE {HASH_COLUMN} IN ({}) GROUP BY {HASH_COLUMN}",
            self.table,
            repeat("?", n, ",")
        )
    }

    /// Keyless tables: insert `n` copies (columns, hash, copy number, position).
    pub fn keyless_insert(&self, n: usize) -> String {
        let mut all: Vec<String> = self.schema.columns.iter().map(|c| q(&c.name)).collect();
        all.extend([HASH_COLUMN.to_string(), DUP_COLUMN.to_string(), POS_COLUMN.to_string()]);
        let one = format!("({})", repeat("?", all.len(), ","));
        format!("INSERT INTO {} ({}) VALUES {}", self.table, all.join(", "), repeat(&one, n, ","))
    }

    /// Keyless tables: drop the copies above a multiplicity.
    pub fn keyless_trim(&self) -> String {
        format!("DELETE FROM {} WHERE {HASH_COLUMN} = ? AND {DUP_COLUMN} > ?", self.table)
    }

    /// Keyless tables: move the position of the remaining copies.
    pub fn keyless_touch(&self) -> String {
        format!("UPDATE {} SET {POS_COLUMN} = ? WHERE {HASH_COLUMN} = ?", self.table)
    }

    /// Tombstones of `n` key hashes of this table.
    pub fn select_tombstones(&self, n: usize) -> String {
        format!(
            "SELECT key_hash, pos FROM {}.{} WHERE table_name = ? AND key_hash IN ({})",
            self.db,
            q(TOMBSTONE_TABLE),
            repeat("?", n, ",")
        )
    }

    /// Record `n` tombstones `(table_name, key_hash, pos)`; a tombstone only moves forward.
    pub fn upsert_tombstones(&self, n: usize) -> String {
        format!(
            "INSERT INTO {}.{} (table_name, key_hash, pos, deleted_at) VALUES {} \
             ON DUPLICATE KEY UPDATE deleted_at = IF(VALUES(pos) > pos, VALUES(deleted_at), deleted_at), \
             pos = GREATEST(pos, VALUES(pos))",
            self.db,
            q(TOMBSTONE_TABLE),
            repeat("(?, ?, ?, UTC_TIMESTAMP(6))", n, ",")
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::{ColumnSchema, ColumnType, TableRef};

    fn schema(pk: Vec<usize>) -> TableSchema {
        TableSchema {
            table: TableRef::new("d", "t"),
            columns: vec![
                ColumnSchema {
                    name: "a".into(),
                    ty: ColumnType::Int { bytes: 4, unsigned: false },
                    nullable: false,
                    default: None,
                    source_type: None,
                },
                ColumnSchema {
                    name: "b".into(),
                    ty: ColumnType::Int { bytes: 4, unsigned: false },
                    nullable: true,
                    default: None,
                    source_type: None,
                },
            ],
            primary_key: pk,
        }
    }

    #[test]
    fn upsert_guards_every_assignment_and_sets_the_position_last() {
        let s = schema(vec![0]);
        let sql = Statements::new("r", "t", &s, false).upsert(2, false);
        assert!(
            sql.starts_with("INSERT INTO `r`.`t` (`a`, `b`, _binferry_pos, _binferry_hash) VALUES (?,?,?,?),(?,?,?,?)")
        );
        assert!(sql.contains("`b` = IF(VALUES(_binferry_pos) > _binferry_pos, VALUES(`b`), `b`)"));
        assert!(!sql.contains("`a` = IF"), "the key is never updated");
        assert!(sql.ends_with(
            "_binferry_pos = IF(VALUES(_binferry_pos) > _binferry_pos, VALUES(_binferry_pos), _binferry_pos)"
        ));
        assert!(Statements::new("r", "t", &s, false).upsert(1, true).contains(">= _binferry_pos"));
    }

    #[test]
    fn keyless_tables_are_keyed_by_hash_and_copy() {
        let s = schema(vec![]);
        let ddl = Statements::new("r", "t", &s, false).create(ColumnSchema::mysql_ddl);
        assert!(ddl.contains("_binferry_dup INT UNSIGNED NOT NULL"));
        assert!(ddl.ends_with("PRIMARY KEY (_binferry_hash, _binferry_dup)) ENGINE=InnoDB"), "{ddl}");
    }

    #[test]
    fn composite_keys_use_row_constructors() {
        let s = schema(vec![0, 1]);
        let sql = Statements::new("r", "t", &s, true).select_state(2);
        assert!(sql.contains("WHERE (`a`, `b`) IN ((?,?),(?,?))"), "{sql}");
        assert!(sql.contains("_binferry_deleted_at IS NOT NULL"), "{sql}");
    }
}
