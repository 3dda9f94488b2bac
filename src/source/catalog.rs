//! What the source's `information_schema` says about tables: the list of selected tables,
//! a table's schema (for the snapshot), and the facts the binlog's TABLE_MAP does not carry
//! (column defaults, MariaDB's UUID and INET types, the declared form of numeric types).
//!
//! The binlog reader completes each new TABLE_MAP schema with these facts. They describe the
//! table as it is *now*: a catch-up across a later change of a default or a declared type
//! uses the later one (README, Limitations).

use std::collections::HashMap;

use mysql_async::Conn;
use mysql_async::prelude::Queryable;

use crate::error::{Error, ErrorKind, Result};
use crate::mysql_codec::charset::is_decodable;
use crate::schema::{Charset, ColumnSchema, ColumnType, TableRef, TableSchema};

/// A quoted identifier.
pub(crate) fn quote(ident: &str) -> String {
    format!("`{}`", ident.replace('`', "``"))
}

/// The base tables of the server that `filter` selects.
pub(crate) async fn list_tables(conn: &mut Conn, filter: &crate::table_filter::TableFilter) -> Result<Vec<TableRef>> {
    let rows: Vec<(String, String)> = conn
        .query("SELECT TABLE_SCHEMA, TABLE_NAME FROM information_schema.TABLES WHERE TABLE_TYPE = 'BASE TABLE' ORDER BY 1, 2")
        .await
        .map_err(|e| Error::source_mysql(e, "listing tables"))?;
    Ok(rows.into_iter().map(|(d, t)| TableRef::new(d, t)).filter(|t| filter.matches(t)).collect())
}

/// What `information_schema.COLUMNS` says about one column beyond its binlog type.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct ColumnFacts {
    /// The default as a SQL expression usable in `ALTER TABLE ... DEFAULT`.
    pub default: Option<String>,
    /// `DATA_TYPE` (`int`, `uuid`, ...).
    pub data_type: String,
    /// `COLUMN_TYPE` (`tinyint(1)`, `int(5) unsigned zerofill`, ...).
    pub column_type: String,
}

/// The facts of every column of `table`, by column name.
pub(crate) async fn column_facts(
    conn: &mut Conn,
    table: &TableRef,
    mariadb: bool,
) -> Result<HashMap<String, ColumnFacts>> {
    let rows: Vec<(String, Option<String>, String, String, String)> = conn
        .exec(
            "SELECT COLUMN_NAME, COLUMN_DEFAULT, EXTRA, DATA_TYPE, COLUMN_TYPE FROM information_schema.COLUMNS \
             WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ?",
            (&table.db, &table.name),
        )
        .await
        .map_err(|e| Error::source_mysql(e, format!("reading the columns of {table}")))?;
    Ok(rows
        .into_iter()
        .map(|(name, default, extra, data_type, column_type)| {
            let facts = ColumnFacts {
                default: sql_default(mariadb, default, &extra),
                data_type: data_type.to_ascii_lowercase(),
                column_type,
            };
            (name, facts)
        })
        .collect())
}

/// Complete a schema read from a TABLE_MAP event with the facts of its columns: defaults,
/// MariaDB's UUID and INET types (the binlog shows them as `BINARY(n)`), and the declared
/// form of numeric types.
pub(crate) fn apply_facts(schema: &mut TableSchema, facts: &HashMap<String, ColumnFacts>) {
    for c in &mut schema.columns {
        let Some(f) = facts.get(&c.name) else { continue };
        c.default = f.default.clone();
        if let Ok(declared) = ColumnType::from_information_schema(&f.data_type, &f.column_type, None, None)
            && declared.binlog_storage().as_ref() == Some(&c.ty)
        {
            c.ty = declared;
        }
        c.source_type = declared_type(&c.ty, &f.column_type);
    }
}

/// The declared type, when it says more than [`ColumnType`] and a MySQL target should create
/// the column with it: `TINYINT(1)` (which ORMs and JDBC read as a boolean), `ZEROFILL` with
/// its width, `FLOAT(M,D)` / `DOUBLE(M,D)`. Other display widths mean nothing to a reader.
pub(crate) fn declared_type(ty: &ColumnType, column_type: &str) -> Option<String> {
    let lower = column_type.trim().to_ascii_lowercase();
    let meaningful = match ty {
        ColumnType::Int { bytes: 1, .. } if lower.starts_with("tinyint(1)") => true,
        ColumnType::Int { .. } | ColumnType::Decimal { .. } => lower.contains("zerofill"),
        ColumnType::Float { .. } | ColumnType::Double { .. } => lower.contains('(') || lower.contains("zerofill"),
        _ => false,
    };
    meaningful.then_some(lower)
}

/// A table's schema from `information_schema` (for the snapshot and preflight).
pub(crate) async fn load_schema(conn: &mut Conn, table: &TableRef, mariadb: bool) -> Result<TableSchema> {
    type ColRow = (String, String, String, Option<u64>, Option<String>, Option<String>, String, Option<u32>);
    let cols: Vec<ColRow> = conn
        .exec(
            "SELECT c.COLUMN_NAME, c.DATA_TYPE, c.COLUMN_TYPE, c.CHARACTER_MAXIMUM_LENGTH, c.CHARACTER_SET_NAME, \
             c.COLLATION_NAME, c.IS_NULLABLE, s.MAXLEN FROM information_schema.COLUMNS c \
             LEFT JOIN information_schema.CHARACTER_SETS s ON s.CHARACTER_SET_NAME = c.CHARACTER_SET_NAME \
             WHERE c.TABLE_SCHEMA = ? AND c.TABLE_NAME = ? ORDER BY c.ORDINAL_POSITION",
            (&table.db, &table.name),
        )
        .await
        .map_err(|e| Error::source_mysql(e, format!("reading the columns of {table}")))?;
    if cols.is_empty() {
        return Err(Error::new(ErrorKind::Unsupported, format!("table {table} not found or has no visible columns"))
            .with_hint("grant SELECT on the table to the replication user"));
    }
    let mut columns = Vec::with_capacity(cols.len());
    for (name, data_type, column_type, max_len, charset, collation, nullable, maxlen) in cols {
        let charset = match (charset, collation) {
            (Some(name), Some(collation)) if name != "binary" => Some(Charset { name, collation }),
            _ => None,
        };
        if let Some(cs) = &charset
            && !is_decodable(&cs.name, maxlen.unwrap_or(u32::MAX))
        {
            return Err(Error::new(
                ErrorKind::Unsupported,
                format!("column `{name}` of {table} uses character set {}, which binferry does not decode", cs.name),
            )
            .with_hint("convert the column to utf8mb4, or exclude the table"));
        }
        let ty = ColumnType::from_information_schema(&data_type, &column_type, max_len, charset)
            .map_err(|e| e.context(format!("column `{name}` of {table}")))?;
        let source_type = declared_type(&ty, &column_type);
        columns.push(ColumnSchema {
            name,
            ty,
            nullable: nullable.eq_ignore_ascii_case("YES"),
            default: None,
            source_type,
        });
    }
    let facts = column_facts(conn, table, mariadb).await?;
    for c in &mut columns {
        c.default = facts.get(&c.name).and_then(|f| f.default.clone());
    }
    let pk: Vec<String> = conn
        .exec(
            "SELECT COLUMN_NAME FROM information_schema.STATISTICS \
             WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? AND INDEX_NAME = 'PRIMARY' ORDER BY SEQ_IN_INDEX",
            (&table.db, &table.name),
        )
        .await
        .map_err(|e| Error::source_mysql(e, format!("reading the primary key of {table}")))?;
    let primary_key = pk
        .iter()
        .map(|k| {
            columns
                .iter()
                .position(|c: &ColumnSchema| &c.name == k)
                .ok_or_else(|| Error::internal(format!("primary key column {k} of {table} not found")))
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(TableSchema { table: table.clone(), columns, primary_key })
}

/// MariaDB reports defaults as SQL (`'text'`, `5`, `NULL`, `current_timestamp()`); MySQL
/// reports literal values unquoted and marks expressions `DEFAULT_GENERATED`.
fn sql_default(mariadb: bool, default: Option<String>, extra: &str) -> Option<String> {
    let d = default?;
    if mariadb {
        return (!d.eq_ignore_ascii_case("NULL")).then_some(d);
    }
    if extra.to_ascii_uppercase().contains("DEFAULT_GENERATED") {
        Some(format!("({d})"))
    } else {
        Some(format!("'{}'", d.replace('\\', "\\\\").replace('\'', "''")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (type, COLUMN_TYPE, declared type a target keeps)
    #[test]
    fn declared_types_that_a_reader_can_see_are_kept() {
        let int = |bytes, unsigned| ColumnType::Int { bytes, unsigned };
        let cases = [
            (int(1, false), "tinyint(1)", Some("tinyint(1)")),
            (int(1, false), "tinyint(4)", None),
            (int(4, true), "int(5) unsigned zerofill", Some("int(5) unsigned zerofill")),
            (int(4, false), "int(11)", None),
            (int(8, true), "bigint(20) unsigned", None),
            (ColumnType::Float { unsigned: false }, "float(7,3)", Some("float(7,3)")),
            (ColumnType::Float { unsigned: false }, "float", None),
            (ColumnType::Double { unsigned: false }, "double(10,2)", Some("double(10,2)")),
            (
                ColumnType::Decimal { precision: 8, scale: 2, unsigned: true },
                "decimal(8,2) unsigned zerofill",
                Some("decimal(8,2) unsigned zerofill"),
            ),
            (ColumnType::Decimal { precision: 8, scale: 2, unsigned: false }, "decimal(8,2)", None),
            (ColumnType::Date, "date", None),
        ];
        for (ty, column_type, want) in cases {
            assert_eq!(declared_type(&ty, column_type).as_deref(), want, "{column_type}");
        }
    }

    #[test]
    fn facts_complete_a_binlog_schema() {
        let col =
            |name: &str, ty| ColumnSchema { name: name.into(), ty, nullable: true, default: None, source_type: None };
        let mut s = TableSchema {
            table: TableRef::new("d", "t"),
            columns: vec![
                col("u", ColumnType::Binary { bytes: 16 }),
                col("ip", ColumnType::Binary { bytes: 4 }),
                col("raw", ColumnType::Binary { bytes: 16 }),
                col("flag", ColumnType::Int { bytes: 1, unsigned: false }),
            ],
            primary_key: vec![],
        };
        let f = |data_type: &str, column_type: &str, default: Option<&str>| ColumnFacts {
            default: default.map(String::from),
            data_type: data_type.into(),
            column_type: column_type.into(),
        };
        let facts: HashMap<String, ColumnFacts> = [
            ("u".to_string(), f("uuid", "uuid", None)),
            ("ip".to_string(), f("inet4", "inet4", Some("'0.0.0.0'"))),
            ("raw".to_string(), f("binary", "binary(16)", None)),
            ("flag".to_string(), f("tinyint", "tinyint(1)", Some("0"))),
        ]
        .into();
        apply_facts(&mut s, &facts);
        let types: Vec<&ColumnType> = s.columns.iter().map(|c| &c.ty).collect();
        assert_eq!(
            types,
            [
                &ColumnType::Uuid,
                &ColumnType::Inet4,
                &ColumnType::Binary { bytes: 16 },
                &ColumnType::Int { bytes: 1, unsigned: false }
            ]
        );
        assert_eq!(s.columns[1].default.as_deref(), Some("'0.0.0.0'"));
        assert_eq!(s.columns[3].source_type.as_deref(), Some("tinyint(1)"));
    }
}
