//! A BigQuery table as the warehouse source reads it: its columns with their BigQuery types,
//! parsed from the `tables.get` resource, and the exact MySQL column each becomes.
//!
//! The mapping is pure and table-tested; docs/types.md ("BigQuery → MySQL") is its reference.
//! A column MySQL cannot hold exactly is refused here, before any row is read, with the
//! column, the reason and the fix.

use serde_json::Value as Json;

use crate::error::{Error, ErrorKind, Result};
use crate::schema::{Charset, ColumnSchema, ColumnType, TableRef, TableSchema};

/// MySQL's DECIMAL holds at most this many digits ...
const MYSQL_DECIMAL_PRECISION: u32 = 65;
/// ... of which at most this many after the point.
const MYSQL_DECIMAL_SCALE: u32 = 30;
/// An unparameterised STRING key column becomes `VARCHAR` of this many characters: InnoDB keys
/// are at most 3,072 bytes and a utf8mb4 character takes up to 4.
pub(crate) const KEY_STRING_CHARS: u32 = 768;
/// An unparameterised BYTES key column becomes `VARBINARY` of this many bytes (the InnoDB limit).
pub(crate) const KEY_BYTES: u32 = 3072;
/// The longest `VARCHAR` a parameterised `STRING(L)` becomes before it is a `LONGTEXT`.
const MAX_VARCHAR_CHARS: u64 = 16_383;

/// A column type as BigQuery declares it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum BqType {
    Int64,
    Float64,
    /// `NUMERIC(P, S)`; unparameterised NUMERIC is (38, 9).
    Numeric {
        precision: u32,
        scale: u32,
    },
    /// `BIGNUMERIC(P, S)`; unparameterised BIGNUMERIC is (76, 38) (76.76 digits).
    BigNumeric {
        precision: u32,
        scale: u32,
    },
    Bool,
    /// `STRING(L)`: at most L characters when declared.
    String {
        max_length: Option<u64>,
    },
    /// `BYTES(L)`: at most L bytes when declared.
    Bytes {
        max_length: Option<u64>,
    },
    Date,
    Datetime,
    Time,
    Timestamp,
    Json,
    Geography,
    /// `RECORD`/`STRUCT`, or any column in mode `REPEATED` (an ARRAY): carried as JSON text.
    Nested,
    /// A type MySQL has nothing exact for (`INTERVAL`, `RANGE`, and anything newer).
    Other(String),
}

/// One column of a warehouse table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct BqColumn {
    pub(crate) name: String,
    pub(crate) ty: BqType,
    /// Mode `REQUIRED`.
    pub(crate) required: bool,
}

/// A warehouse table: its name in the round's datasets, its columns and its key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct BqTable {
    pub(crate) project: String,
    pub(crate) dataset: String,
    pub(crate) name: String,
    pub(crate) columns: Vec<BqColumn>,
    /// Indexes into `columns`, in key order.
    pub(crate) key: Vec<usize>,
    /// When the table was created, µs since the epoch (`creationTime`), when BigQuery says:
    /// time travel cannot reach before it.
    pub(crate) created: Option<i64>,
}

impl BqTable {
    /// Parse a `tables.get` resource. `configured_key` (from the config) names the key
    /// columns where the table declares none, or overrides the declared `PRIMARY KEY ... NOT
    /// ENFORCED`.
    pub(crate) fn from_resource(resource: &Json, configured_key: Option<&[String]>) -> Result<BqTable> {
        let reference = &resource["tableReference"];
        let text = |v: &Json, what: &str| -> Result<String> {
            v.as_str().map(str::to_string).ok_or_else(|| {
                Error::new(ErrorKind::Decode, format!("BigQuery table resource: `{what}` missing or not text"))
            })
        };
        let project = text(&reference["projectId"], "tableReference.projectId")?;
        let dataset = text(&reference["datasetId"], "tableReference.datasetId")?;
        let name = text(&reference["tableId"], "tableReference.tableId")?;
        let fields = resource["schema"]["fields"].as_array().ok_or_else(|| {
            Error::new(ErrorKind::Decode, format!("BigQuery table {dataset}.{name}: the resource has no schema.fields"))
        })?;
        let columns = fields.iter().map(column).collect::<Result<Vec<_>>>()?;
        let declared: Vec<String> = resource["tableConstraints"]["primaryKey"]["columns"]
            .as_array()
            .map(|cols| cols.iter().filter_map(|c| c.as_str().map(str::to_string)).collect())
            .unwrap_or_default();
        let table_ref = format!("{dataset}.{name}");
        let key_names: Vec<String> = match configured_key {
            Some(k) if !k.is_empty() => k.to_vec(),
            _ => declared,
        };
        if key_names.is_empty() {
            return Err(Error::new(
                ErrorKind::Unsupported,
                format!("BigQuery table {table_ref} has no key: it declares no PRIMARY KEY and none is configured"),
            )
            .with_table(TableRef::new(dataset.clone(), name.clone()))
            .with_hint(format!(
                "binferry diffs rows by key: add `ALTER TABLE {table_ref} ADD PRIMARY KEY (id) NOT ENFORCED` in \
                 BigQuery, or set source.bigquery.keys.\"{table_ref}\" = [\"id\"] to the columns that identify a row"
            )));
        }
        let mut key = Vec::with_capacity(key_names.len());
        for k in &key_names {
            let i = columns.iter().position(|c| &c.name == k).ok_or_else(|| {
                Error::new(
                    ErrorKind::Unsupported,
                    format!("key column `{k}` of BigQuery table {table_ref} does not exist"),
                )
                .with_table(TableRef::new(dataset.clone(), name.clone()))
                .with_hint("check source.bigquery.keys against the table's columns")
            })?;
            key.push(i);
        }
        let created = resource["creationTime"].as_str().and_then(|ms| ms.parse::<i64>().ok()).map(|ms| ms * 1000);
        let table = BqTable { project, dataset, name, columns, key, created };
        for &k in &table.key {
            table.check_key_column(&table.columns[k])?;
        }
        Ok(table)
    }

    /// Leave out the `exclude`d columns (`tables.exclude_columns`): they are neither read nor
    /// hashed, so a change only to them is no change. Key columns cannot be left out.
    pub(crate) fn exclude(&mut self, exclude: &[String]) -> Result<()> {
        if exclude.is_empty() {
            return Ok(());
        }
        if let Some(&k) = self.key.iter().find(|&&k| exclude.contains(&self.columns[k].name)) {
            return Err(Error::new(
                ErrorKind::Config,
                format!("tables.exclude_columns: `{}` is a key column of {}", self.columns[k].name, self.table_ref()),
            )
            .with_hint("key columns identify rows in the target and cannot be excluded"));
        }
        let key_names: Vec<String> = self.key.iter().map(|&k| self.columns[k].name.clone()).collect();
        self.columns.retain(|c| !exclude.contains(&c.name));
        self.key = key_names.iter().filter_map(|n| self.columns.iter().position(|c| &c.name == n)).collect();
        Ok(())
    }

    /// The table's name on the MySQL side: the BigQuery dataset is the database.
    pub(crate) fn table_ref(&self) -> TableRef {
        TableRef::new(self.dataset.clone(), self.name.clone())
    }

    /// Whether column `i` is part of the key.
    pub(crate) fn is_key(&self, i: usize) -> bool {
        self.key.contains(&i)
    }

    fn check_key_column(&self, c: &BqColumn) -> Result<()> {
        // A FLOAT64 compares inexactly.
        let usable = c.ty.is_scalar() && !matches!(c.ty, BqType::Float64);
        if usable {
            return Ok(());
        }
        Err(Error::new(
            ErrorKind::Unsupported,
            format!("key column `{}` of BigQuery table {}.{} is {}", c.name, self.dataset, self.name, c.ty.name()),
        )
        .with_table(self.table_ref())
        .with_hint(
            "a key column must compare exactly in BigQuery and MySQL: INT64, NUMERIC, BIGNUMERIC, BOOL, STRING, \
             BYTES, DATE, DATETIME, TIME or TIMESTAMP (not FLOAT64, JSON, GEOGRAPHY, ARRAY or STRUCT); configure \
             other key columns in source.bigquery.keys",
        ))
    }

    /// The table as the MySQL side creates and writes it.
    pub(crate) fn schema(&self) -> Result<TableSchema> {
        let columns = self
            .columns
            .iter()
            .enumerate()
            .map(|(i, c)| self.column_schema(c, self.is_key(i)))
            .collect::<Result<Vec<_>>>()?;
        Ok(TableSchema { table: self.table_ref(), columns, primary_key: self.key.clone() })
    }

    fn column_schema(&self, c: &BqColumn, key: bool) -> Result<ColumnSchema> {
        let refuse = |why: String, fix: &str| {
            Error::new(
                ErrorKind::Unsupported,
                format!("column `{}` of BigQuery table {}.{}: {why}", c.name, self.dataset, self.name),
            )
            .with_table(self.table_ref())
            .with_hint(fix.to_string())
        };
        let text = |chars: Option<u64>| match chars {
            Some(n) if n <= MAX_VARCHAR_CHARS => ColumnType::VarChar { chars: n as u32, charset: utf8mb4(key) },
            _ if key => ColumnType::VarChar { chars: KEY_STRING_CHARS, charset: utf8mb4(true) },
            _ => ColumnType::Text { length_bytes: 4, charset: utf8mb4(false) },
        };
        let (ty, source_type) = match &c.ty {
            BqType::Int64 => (ColumnType::Int { bytes: 8, unsigned: false }, None),
            BqType::Float64 => (ColumnType::Double { unsigned: false }, None),
            BqType::Numeric { precision, scale } | BqType::BigNumeric { precision, scale } => {
                if *scale > MYSQL_DECIMAL_SCALE || *precision > MYSQL_DECIMAL_PRECISION {
                    return Err(refuse(
                        format!(
                            "{}({precision}, {scale}) does not fit MySQL's DECIMAL, which holds at most \
                             {MYSQL_DECIMAL_PRECISION} digits with {MYSQL_DECIMAL_SCALE} after the point",
                            c.ty.name()
                        ),
                        "declare the column with parameters MySQL can hold, e.g. BIGNUMERIC(65, 30) (or NUMERIC), \
                         or exclude it with tables.exclude_columns",
                    ));
                }
                let precision = (*precision).max(*scale).max(1);
                (ColumnType::Decimal { precision: precision as u8, scale: *scale as u8, unsigned: false }, None)
            }
            BqType::Bool => (ColumnType::Int { bytes: 1, unsigned: false }, Some("tinyint(1)".to_string())),
            BqType::String { max_length } => (text(*max_length), None),
            BqType::Bytes { max_length } => match max_length {
                Some(n) if *n <= 65_535 => (ColumnType::VarBinary { bytes: *n as u32 }, None),
                _ if key => (ColumnType::VarBinary { bytes: KEY_BYTES }, None),
                _ => (ColumnType::Blob { length_bytes: 4 }, None),
            },
            BqType::Date => (ColumnType::Date, None),
            BqType::Datetime => (ColumnType::DateTime { fsp: 6 }, None),
            BqType::Time => (ColumnType::Time { fsp: 6 }, None),
            // UTC, in a DATETIME: MySQL's TIMESTAMP ends in 2038 and BigQuery's runs to 9999.
            BqType::Timestamp => (ColumnType::DateTime { fsp: 6 }, None),
            BqType::Json | BqType::Nested => (ColumnType::Json, None),
            // Well-known text, as BigQuery writes it (WGS 84 longitude/latitude).
            BqType::Geography => (ColumnType::Text { length_bytes: 4, charset: utf8mb4(false) }, None),
            BqType::Other(name) => {
                return Err(refuse(
                    format!("type {name} has no exact MySQL equivalent"),
                    "exclude the column with tables.exclude_columns, or replicate a view that casts it (e.g. to \
                     STRING)",
                ));
            }
        };
        Ok(ColumnSchema { name: c.name.clone(), ty, nullable: !c.required && !key, default: None, source_type })
    }
}

impl BqType {
    /// A single value BigQuery and MySQL both hold as such: not JSON, GEOGRAPHY, an ARRAY or
    /// STRUCT (carried as text BigQuery writes), or a type binferry does not replicate.
    pub(crate) fn is_scalar(&self) -> bool {
        matches!(
            self,
            BqType::Int64
                | BqType::Float64
                | BqType::Numeric { .. }
                | BqType::BigNumeric { .. }
                | BqType::Bool
                | BqType::String { .. }
                | BqType::Bytes { .. }
                | BqType::Date
                | BqType::Datetime
                | BqType::Time
                | BqType::Timestamp
        )
    }

    /// The type's name as BigQuery's SQL spells it, for messages.
    pub(crate) fn name(&self) -> String {
        match self {
            BqType::Int64 => "INT64".into(),
            BqType::Float64 => "FLOAT64".into(),
            BqType::Numeric { .. } => "NUMERIC".into(),
            BqType::BigNumeric { .. } => "BIGNUMERIC".into(),
            BqType::Bool => "BOOL".into(),
            BqType::String { .. } => "STRING".into(),
            BqType::Bytes { .. } => "BYTES".into(),
            BqType::Date => "DATE".into(),
            BqType::Datetime => "DATETIME".into(),
            BqType::Time => "TIME".into(),
            BqType::Timestamp => "TIMESTAMP".into(),
            BqType::Json => "JSON".into(),
            BqType::Geography => "GEOGRAPHY".into(),
            BqType::Nested => "ARRAY or STRUCT".into(),
            BqType::Other(name) => name.clone(),
        }
    }
}

/// Key text compares byte for byte, as BigQuery compares it: a case-insensitive collation
/// would make `a` and `A` one MySQL row.
fn utf8mb4(key: bool) -> Charset {
    let collation = if key { "utf8mb4_bin" } else { "utf8mb4_general_ci" };
    Charset { name: "utf8mb4".into(), collation: collation.into() }
}

fn column(field: &Json) -> Result<BqColumn> {
    let name = field["name"]
        .as_str()
        .ok_or_else(|| Error::new(ErrorKind::Decode, "BigQuery table resource: a field has no name"))?
        .to_string();
    let mode = field["mode"].as_str().unwrap_or("NULLABLE");
    let number = |key: &str| -> Option<u64> {
        match &field[key] {
            Json::String(s) => s.parse().ok(),
            Json::Number(n) => n.as_u64(),
            _ => None,
        }
    };
    let kind = field["type"].as_str().unwrap_or_default().to_ascii_uppercase();
    let ty = if mode == "REPEATED" {
        BqType::Nested
    } else {
        match kind.as_str() {
            "INTEGER" | "INT64" => BqType::Int64,
            "FLOAT" | "FLOAT64" => BqType::Float64,
            "NUMERIC" => BqType::Numeric {
                precision: number("precision").unwrap_or(38) as u32,
                scale: number("scale").unwrap_or(if number("precision").is_some() { 0 } else { 9 }) as u32,
            },
            "BIGNUMERIC" => BqType::BigNumeric {
                precision: number("precision").unwrap_or(76) as u32,
                scale: number("scale").unwrap_or(if number("precision").is_some() { 0 } else { 38 }) as u32,
            },
            "BOOLEAN" | "BOOL" => BqType::Bool,
            "STRING" => BqType::String { max_length: number("maxLength") },
            "BYTES" => BqType::Bytes { max_length: number("maxLength") },
            "DATE" => BqType::Date,
            "DATETIME" => BqType::Datetime,
            "TIME" => BqType::Time,
            "TIMESTAMP" => BqType::Timestamp,
            "JSON" => BqType::Json,
            "GEOGRAPHY" => BqType::Geography,
            "RECORD" | "STRUCT" => BqType::Nested,
            other => BqType::Other(other.to_string()),
        }
    };
    Ok(BqColumn { name, ty, required: mode == "REQUIRED" })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// The emulator's answer to `tables.get` for a table with one column of every type.
    fn resource() -> Json {
        json!({
            "tableReference": {"projectId": "p", "datasetId": "shop", "tableId": "t"},
            "schema": {"fields": [
                {"name":"id","mode":"REQUIRED","type":"INTEGER"},
                {"name":"s","maxLength":"20","mode":"NULLABLE","type":"STRING"},
                {"name":"n","scale":"2","precision":"10","mode":"NULLABLE","type":"NUMERIC"},
                {"name":"bn","scale":"20","precision":"40","mode":"NULLABLE","type":"BIGNUMERIC"},
                {"name":"a","mode":"REPEATED","type":"INTEGER"},
                {"name":"st","mode":"NULLABLE","fields":[{"name":"x","type":"INTEGER"}],"type":"RECORD"},
                {"name":"j","mode":"NULLABLE","type":"JSON"},
                {"name":"g","mode":"NULLABLE","type":"GEOGRAPHY"},
                {"name":"b","mode":"NULLABLE","type":"BYTES"},
                {"name":"ts","mode":"NULLABLE","type":"TIMESTAMP"},
                {"name":"dt","mode":"NULLABLE","type":"DATETIME"},
                {"name":"d","mode":"NULLABLE","type":"DATE"},
                {"name":"tm","mode":"NULLABLE","type":"TIME"},
                {"name":"f","mode":"NULLABLE","type":"FLOAT"},
                {"name":"bo","mode":"NULLABLE","type":"BOOLEAN"},
                {"name":"txt","mode":"NULLABLE","type":"STRING"},
                {"name":"num","mode":"NULLABLE","type":"NUMERIC"}
            ]},
            "tableConstraints": {"primaryKey": {"columns": ["id"]}}
        })
    }

    #[test]
    fn every_type_maps_to_an_exact_mysql_column() {
        let table = BqTable::from_resource(&resource(), None).unwrap();
        let schema = table.schema().unwrap();
        let ddl: Vec<(String, String, bool)> =
            schema.columns.iter().map(|c| (c.name.clone(), c.mysql_ddl(), c.nullable)).collect();
        let expect = [
            ("id", "bigint", false),
            ("s", "varchar(20) CHARACTER SET utf8mb4 COLLATE utf8mb4_general_ci", true),
            ("n", "decimal(10,2)", true),
            ("bn", "decimal(40,20)", true),
            ("a", "json", true),
            ("st", "json", true),
            ("j", "json", true),
            ("g", "longtext CHARACTER SET utf8mb4 COLLATE utf8mb4_general_ci", true),
            ("b", "longblob", true),
            ("ts", "datetime(6)", true),
            ("dt", "datetime(6)", true),
            ("d", "date", true),
            ("tm", "time(6)", true),
            ("f", "double", true),
            ("bo", "tinyint(1)", true),
            ("txt", "longtext CHARACTER SET utf8mb4 COLLATE utf8mb4_general_ci", true),
            ("num", "decimal(38,9)", true),
        ];
        let expect: Vec<(String, String, bool)> =
            expect.iter().map(|(n, d, null)| (n.to_string(), d.to_string(), *null)).collect();
        assert_eq!(ddl, expect);
        assert_eq!(schema.primary_key, vec![0]);
        assert_eq!(schema.table, TableRef::new("shop", "t"));
    }

    #[test]
    fn key_columns_are_bounded_and_compare_bytewise() {
        let r = json!({
            "tableReference": {"projectId": "p", "datasetId": "d", "tableId": "k"},
            "schema": {"fields": [
                {"name":"name","type":"STRING"}, {"name":"blob","type":"BYTES"}, {"name":"v","type":"STRING"}
            ]}
        });
        let table = BqTable::from_resource(&r, Some(&["name".into(), "blob".into()])).unwrap();
        let schema = table.schema().unwrap();
        assert_eq!(schema.columns[0].mysql_ddl(), "varchar(768) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin");
        assert_eq!(schema.columns[1].mysql_ddl(), "varbinary(3072)");
        assert!(!schema.columns[0].nullable && !schema.columns[1].nullable);
        assert_eq!(schema.primary_key, vec![0, 1]);
    }

    #[test]
    fn what_mysql_cannot_hold_is_refused_with_the_column_and_the_fix() {
        let with = |fields: Json, key: &[&str]| {
            let r = json!({"tableReference": {"projectId": "p", "datasetId": "d", "tableId": "t"},
                           "schema": {"fields": fields}});
            let key: Vec<String> = key.iter().map(|k| k.to_string()).collect();
            BqTable::from_resource(&r, Some(&key)).and_then(|t| t.schema())
        };
        let cases: [(Json, &[&str], &str); 6] = [
            (json!([{"name":"id","type":"INTEGER"},{"name":"x","type":"BIGNUMERIC"}]), &["id"], "BIGNUMERIC(76, 38)"),
            (
                json!([{"name":"id","type":"INTEGER"},{"name":"x","type":"BIGNUMERIC","precision":"70","scale":"10"}]),
                &["id"],
                "BIGNUMERIC(70, 10)",
            ),
            (json!([{"name":"id","type":"INTEGER"},{"name":"x","type":"INTERVAL"}]), &["id"], "INTERVAL"),
            (json!([{"name":"id","type":"FLOAT"}]), &["id"], "key column `id`"),
            (json!([{"name":"id","type":"INTEGER","mode":"REPEATED"}]), &["id"], "ARRAY or STRUCT"),
            (json!([{"name":"id","type":"INTEGER"}]), &["nope"], "key column `nope`"),
        ];
        for (fields, key, expect) in cases {
            let e = with(fields.clone(), key).unwrap_err();
            assert!(e.to_string().contains(expect), "{fields}: {e}");
            assert!(e.hint().is_some(), "{fields}: no fix in {e}");
        }
        let e = BqTable::from_resource(
            &json!({"tableReference": {"projectId": "p", "datasetId": "d", "tableId": "t"},
                    "schema": {"fields": [{"name":"id","type":"INTEGER"}]}}),
            None,
        )
        .unwrap_err();
        assert!(e.to_string().contains("has no key"), "{e}");
        assert!(e.hint().unwrap_or_default().contains("NOT ENFORCED"), "{e}");
    }

    #[test]
    fn excluded_columns_leave_the_table_and_the_key_follows() {
        let mut t = BqTable::from_resource(&resource(), Some(&["s".into()])).unwrap();
        t.exclude(&["id".into(), "n".into()]).unwrap();
        assert_eq!(t.columns[t.key[0]].name, "s");
        assert!(!t.columns.iter().any(|c| c.name == "id" || c.name == "n"));
        let e = t.exclude(&["s".into()]).unwrap_err();
        assert!(e.to_string().contains("key column"), "{e}");
    }

    #[test]
    fn a_configured_key_overrides_the_declared_one() {
        let t = BqTable::from_resource(&resource(), Some(&["s".into()])).unwrap();
        assert_eq!(t.key, vec![1]);
        let t = BqTable::from_resource(&resource(), Some(&[])).unwrap();
        assert_eq!(t.key, vec![0]);
    }
}
