//! The target side of `binferry verify` on BigQuery: every row's values read back as the
//! writer's values ([`super::readback`]) and hashed as the writer hashes a row, so that a
//! value changed by hand shows as drift even where `_binferry_hash` was left alone. Rows
//! soft-deleted count as absent.
//!
//! A table keyed by integer columns is read one key range at a time, the source's chunks
//! ([`compares_in_ranges`]): integers compare alike on both sides, and the table is clustered
//! by its key, so each range's query job scans about its range. Other tables are read whole
//! (BigQuery compares strings by bytes, not by the source's collation, so a range would not
//! select the same keys). Either way one query job reads the rows, its result a page at a
//! time.

use std::sync::Arc;

use super::readback::{select_expr, value_of};
use super::sql::{DELETED_AT, column_name, ident};
use super::state::cells;
use super::{BigQuerySinkSettings, registry};
use crate::bigquery_api::{Api, Side};
use crate::drift::{KeyBounds, TableHashes};
use crate::error::{Error, ErrorKind, Result};
use crate::event::Value;
use crate::event::hash::{encode_values, row_hash};
use crate::schema::{ColumnType, TableSchema};
use crate::table_options::DeleteMode;

/// What a row that does not read back as the writer's values hashes to: no row hashes to it
/// in practice, so the row shows as different.
const NOT_A_HASH: [u8; 16] = [0xff; 16];
/// Rows per page of the query's result.
const PAGE: i32 = 20_000;

/// Whether the BigQuery table of `schema` can be compared one key range at a time: its key
/// columns are integers BigQuery holds as INT64 (a BIGINT UNSIGNED is a NUMERIC there).
pub fn compares_in_ranges(schema: &TableSchema) -> bool {
    schema.has_primary_key()
        && schema.primary_key.iter().all(|&i| {
            matches!(schema.columns.get(i).map(|c| &c.ty), Some(ColumnType::Int { bytes, unsigned }) if !(*bytes == 8 && *unsigned))
        })
}

/// The conditions that select the keys in `bounds` on BigQuery (`key > lower`, `key <=
/// upper`, lexicographic over the key columns `keys`), with the bounds written as literals
/// (the emulator runs queries with parameters several times slower); `None` when a bound is
/// not an integer ([`compares_in_ranges`]).
fn range_conditions(keys: &[String], bounds: &KeyBounds) -> Option<Vec<String>> {
    let literal = |v: &Value| match v {
        Value::Int(i) => Some(i.to_string()),
        Value::UInt(u) if *u <= i64::MAX as u64 => Some(u.to_string()),
        _ => None,
    };
    let compare = |bound: &[Value], strict: bool| -> Option<String> {
        let n = keys.len().min(bound.len());
        let mut terms = Vec::with_capacity(n);
        for i in 0..n {
            let mut parts: Vec<String> = Vec::with_capacity(i + 1);
            for j in 0..i {
                parts.push(format!("{} = {}", keys[j], literal(&bound[j])?));
            }
            let op = match (strict, i + 1 == n) {
                (true, _) => ">",
                (false, true) => "<=",
                (false, false) => "<",
            };
            parts.push(format!("{} {op} {}", keys[i], literal(&bound[i])?));
            terms.push(format!("({})", parts.join(" AND ")));
        }
        Some(format!("({})", terms.join(" OR ")))
    };
    let mut out = Vec::new();
    if let Some(lower) = &bounds.lower {
        out.push(compare(lower, true)?);
    }
    if let Some(upper) = &bounds.upper {
        out.push(compare(upper, false)?);
    }
    Some(out)
}

/// The rows of the BigQuery table of `schema` (those in `bounds` when given), hashed from the
/// values it holds (the source's side hashes its values in the same form:
/// [`super::as_held`]); empty when the table does not exist yet.
pub async fn table_hashes(
    settings: &BigQuerySinkSettings,
    schema: &TableSchema,
    bounds: Option<&KeyBounds>,
) -> Result<TableHashes> {
    let table = &schema.table;
    if !schema.has_primary_key() {
        return Err(Error::new(
            ErrorKind::Unsupported,
            format!("{table}: the BigQuery target holds only tables with a primary key"),
        ));
    }
    let api = Api::connect(
        Side::Target,
        &settings.auth,
        &settings.project,
        settings.location.as_deref(),
        settings.timeout,
        Arc::clone(&settings.stats),
    )
    .await?;
    let name = settings.target_table(table);
    let mut out = TableHashes::default();
    if !registry::has_table(&api, settings, &name).await? {
        return Ok(out);
    }
    let select: Vec<String> = schema.columns.iter().map(select_expr).collect();
    let mut cond = Vec::new();
    if settings.rules.options(table).deletes == DeleteMode::Soft {
        cond.push(format!("{DELETED_AT} IS NULL"));
    }
    if let Some(bounds) = bounds {
        let keys: Vec<String> =
            schema.primary_key.iter().map(|&i| ident(&column_name(&schema.columns[i].name))).collect();
        let range = range_conditions(&keys, bounds).ok_or_else(|| {
            Error::internal(format!("{table}: a key range on BigQuery needs integer bounds, got {bounds:?}"))
        })?;
        cond.extend(range);
    }
    let filter = if cond.is_empty() { String::new() } else { format!(" WHERE {}", cond.join(" AND ")) };
    let from = format!("`{}`.`{}`.{}", settings.project, settings.dataset, ident(&name));
    let mut pages = api.query_pages(&format!("SELECT {} FROM {from}{filter}", select.join(", ")), PAGE).await?;
    while let Some(page) = pages.next_page().await? {
        for row in &page {
            let (hash, key) = hashed_row(schema, &name, &cells(Some(row)))?;
            let mut encoded = Vec::new();
            encode_values(&key, &mut encoded);
            out.keyed.insert(encoded, (hash, key));
        }
    }
    Ok(out)
}

/// One row of target table `name` (its cells as [`select_expr`] reads them): its hash and key
/// values. A cell binferry could not have written makes the row differ; its key must read.
fn hashed_row(schema: &TableSchema, name: &str, cells: &[Option<String>]) -> Result<([u8; 16], Vec<Value>)> {
    let read = |i: usize| value_of(&schema.columns.get(i)?.ty, cells.get(i)?.as_deref());
    let key: Option<Vec<Value>> = schema.primary_key.iter().map(|&i| read(i)).collect();
    let key = key.ok_or_else(|| {
        Error::new(
            ErrorKind::Unsupported,
            format!("{name}: a row whose primary key does not read back as a value binferry wrote"),
        )
        .with_hint("find the row changed by hand in BigQuery and correct or delete it, then verify again")
    })?;
    let values: Option<Vec<Value>> = (0..schema.columns.len()).map(read).collect();
    Ok((values.map_or(NOT_A_HASH, |v| row_hash(&v)), key))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::{ColumnSchema, TableRef};

    fn schema() -> TableSchema {
        let col =
            |name: &str, ty| ColumnSchema { name: name.into(), ty, nullable: true, default: None, source_type: None };
        TableSchema {
            table: TableRef::new("d", "t"),
            columns: vec![
                col("id", ColumnType::Int { bytes: 4, unsigned: false }),
                col("price", ColumnType::Decimal { precision: 10, scale: 2, unsigned: false }),
            ],
            primary_key: vec![0],
        }
    }

    #[test]
    fn key_ranges_are_written_for_integer_keys_only() {
        let b = |lower: Option<Vec<Value>>, upper: Option<Vec<Value>>| KeyBounds { lower, upper };
        let one = ["`id`".to_string()];
        assert_eq!(
            range_conditions(&one, &b(Some(vec![Value::Int(-5)]), Some(vec![Value::UInt(9)]))),
            Some(vec!["((`id` > -5))".to_string(), "((`id` <= 9))".to_string()])
        );
        assert_eq!(range_conditions(&one, &b(None, None)), Some(vec![]));
        let two = ["`a`".to_string(), "`b`".to_string()];
        assert_eq!(
            range_conditions(&two, &b(None, Some(vec![Value::Int(1), Value::Int(2)]))),
            Some(vec!["((`a` < 1) OR (`a` = 1 AND `b` <= 2))".to_string()])
        );
        assert_eq!(range_conditions(&one, &b(Some(vec![Value::Text("x".into())]), None)), None);
        assert_eq!(range_conditions(&one, &b(Some(vec![Value::UInt(u64::MAX)]), None)), None);

        let mut s = schema();
        assert!(compares_in_ranges(&s));
        s.columns[0].ty = ColumnType::Int { bytes: 8, unsigned: true };
        assert!(!compares_in_ranges(&s), "a BIGINT UNSIGNED is a NUMERIC in BigQuery");
        s.primary_key = vec![1];
        assert!(!compares_in_ranges(&s));
        s.primary_key.clear();
        assert!(!compares_in_ranges(&s));
    }

    #[test]
    fn a_row_hashes_as_the_writer_hashed_its_values() {
        let cells = [Some("7".to_string()), Some("1.5".to_string())];
        let (hash, key) = hashed_row(&schema(), "t", &cells).unwrap();
        assert_eq!(key, vec![Value::Int(7)]);
        assert_eq!(hash, row_hash(&[Value::Int(7), Value::Decimal("1.50".into())]));
        // A value binferry could not have written (a finer scale): the row differs.
        let cells = [Some("7".to_string()), Some("1.505".to_string())];
        assert_eq!(hashed_row(&schema(), "t", &cells).unwrap(), (NOT_A_HASH, vec![Value::Int(7)]));
        // A key that does not read back: the table cannot be compared, with the fix.
        let cells = [Some("seven".to_string()), None];
        let e = hashed_row(&schema(), "t", &cells).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Unsupported);
        assert!(e.hint().is_some_and(|h| h.contains("changed by hand")), "{e:?}");
    }
}
