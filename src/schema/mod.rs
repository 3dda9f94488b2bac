//! Table schemas as binferry sees them.
//!
//! A [`TableSchema`] is built from the source's own description of a table:
//! the binlog's TABLE_MAP event while streaming (with
//! `binlog_row_metadata=FULL` it carries names, signedness, charsets,
//! ENUM/SET values and the primary key), or `information_schema` for the
//! initial snapshot. Both paths produce the same [`ColumnType`]s, so a row
//! decodes to the same [`crate::event::Value`]s whichever way it was read.
//!
//! Every schema has a [`TableSchema::version`], a fingerprint of its content.
//! Change events carry the version they were decoded with and the buffer
//! keeps every version, so an event replayed from an old offset is applied
//! with the schema it was written with.

mod column_type;
pub mod table_ref;

use serde::{Deserialize, Serialize};

pub use column_type::{Charset, ColumnType};
pub use table_ref::TableRef;

use crate::error::{Error, ErrorKind, Result};

/// One column of a source table.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ColumnSchema {
    /// Column name.
    pub name: String,
    /// Exact type.
    #[serde(rename = "type")]
    pub ty: ColumnType,
    /// Whether the column accepts NULL.
    pub nullable: bool,
    /// The column's default as a SQL expression, when binferry looked it up (for columns added
    /// by a schema change: existing target rows take this value, as they did in the source).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<String>,
    /// The type as the source declares it, when that says more than [`ColumnType`] to a
    /// reader of a MySQL target: `tinyint(1)`, `int(5) unsigned zerofill`, `float(7,3)`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_type: Option<String>,
}

impl ColumnSchema {
    /// The column's type in a MySQL/MariaDB target's DDL: as the source declares it where
    /// that matters ([`ColumnSchema::source_type`]), otherwise [`ColumnType::mysql_ddl`].
    pub fn mysql_ddl(&self) -> String {
        self.source_type.clone().unwrap_or_else(|| self.ty.mysql_ddl())
    }
}

/// The shape of a source table at one point of the binlog.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct TableSchema {
    /// The table.
    pub table: TableRef,
    /// Columns in source order.
    pub columns: Vec<ColumnSchema>,
    /// Indexes into `columns` of the primary key, in key order; empty when the table has none.
    pub primary_key: Vec<usize>,
}

impl TableSchema {
    /// A fingerprint of the whole schema (table, columns, types, key). Equal schemas have
    /// equal versions on every machine and in every binferry version that keeps this encoding.
    pub fn version(&self) -> u64 {
        // serde_json of these plain structs is deterministic (field order is declaration order).
        let bytes = serde_json::to_vec(self).unwrap_or_default();
        let hash = blake3::derive_key("binferry schema version v1", &bytes);
        u64::from_be_bytes([hash[0], hash[1], hash[2], hash[3], hash[4], hash[5], hash[6], hash[7]])
    }

    /// Column names in order.
    pub fn column_names(&self) -> impl Iterator<Item = &str> {
        self.columns.iter().map(|c| c.name.as_str())
    }

    /// Whether the table has a primary key.
    pub fn has_primary_key(&self) -> bool {
        !self.primary_key.is_empty()
    }

    /// The schema without the `exclude`d columns, and the indexes of the kept columns
    /// (`None` when nothing is excluded). Excluding a primary-key column is an error.
    pub fn project(self, exclude: &[String]) -> Result<(TableSchema, Option<Vec<usize>>)> {
        if exclude.is_empty() || !self.columns.iter().any(|c| exclude.contains(&c.name)) {
            return Ok((self, None));
        }
        for &k in &self.primary_key {
            if exclude.contains(&self.columns[k].name) {
                return Err(Error::new(
                    ErrorKind::Config,
                    format!(
                        "tables.exclude_columns: `{}` is part of the primary key of {}",
                        self.columns[k].name, self.table
                    ),
                )
                .with_hint("primary-key columns identify rows in the target and cannot be excluded"));
            }
        }
        let keep: Vec<usize> = (0..self.columns.len()).filter(|&i| !exclude.contains(&self.columns[i].name)).collect();
        let columns = keep.iter().map(|&i| self.columns[i].clone()).collect();
        let primary_key =
            self.primary_key.iter().map(|k| keep.iter().position(|i| i == k).unwrap_or(usize::MAX)).collect();
        Ok((TableSchema { table: self.table, columns, primary_key }, Some(keep)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schema(col: &str) -> TableSchema {
        TableSchema {
            table: TableRef::new("d", "t"),
            columns: vec![ColumnSchema {
                name: col.into(),
                ty: ColumnType::Int { bytes: 4, unsigned: false },
                nullable: false,
                default: None,
                source_type: None,
            }],
            primary_key: vec![0],
        }
    }

    #[test]
    fn projection_drops_columns_and_remaps_the_key() {
        let mut s = schema("id");
        s.columns.insert(
            0,
            ColumnSchema {
                name: "secret".into(),
                ty: ColumnType::Json,
                nullable: true,
                default: None,
                source_type: None,
            },
        );
        s.primary_key = vec![1];
        let (p, keep) = s.clone().project(&["secret".into()]).unwrap();
        assert_eq!(keep, Some(vec![1]));
        assert_eq!(p.primary_key, vec![0]);
        assert_eq!(p.column_names().collect::<Vec<_>>(), vec!["id"]);
        assert!(s.clone().project(&["id".into()]).is_err());
        assert_eq!(s.clone().project(&["nope".into()]).unwrap().1, None);
    }

    #[test]
    fn version_is_stable_and_content_sensitive() {
        assert_eq!(schema("id").version(), schema("id").version());
        assert_ne!(schema("id").version(), schema("id2").version());
        // Pinned: the version is part of the buffer format; changing it orphans stored schemas.
        assert_eq!(format!("{:016x}", schema("id").version()), "dd9923ad5b78e8b2");
    }
}
