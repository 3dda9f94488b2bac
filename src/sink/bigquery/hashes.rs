//! The target side of `binferry verify` on BigQuery: every row's values read back as the
//! writer's values ([`super::readback`]) and hashed as the writer hashes a row, so that a
//! value changed by hand shows as drift even where `_binferry_hash` was left alone. Rows
//! soft-deleted count as absent.
//!
//! One query job reads the table, its result a page at a time: BigQuery bills the columns
//! read once.

use std::sync::Arc;

use super::readback::{select_expr, value_of};
use super::sql::DELETED_AT;
use super::state::cells;
use super::{BigQuerySinkSettings, registry};
use crate::bigquery_api::{Api, Side};
use crate::drift::TableHashes;
use crate::error::{Error, ErrorKind, Result};
use crate::event::Value;
use crate::event::hash::{encode_values, row_hash};
use crate::schema::TableSchema;
use crate::table_options::DeleteMode;

/// What a row that does not read back as the writer's values hashes to: no row hashes to it
/// in practice, so the row shows as different.
const NOT_A_HASH: [u8; 16] = [0xff; 16];
/// Rows per page of the query's result.
const PAGE: i32 = 20_000;

/// The rows of the BigQuery table of `schema`, hashed from the values it holds (the
/// source's side hashes its values in the same form: [`super::as_held`]); empty when the
/// table does not exist yet.
pub async fn table_hashes(settings: &BigQuerySinkSettings, schema: &TableSchema) -> Result<TableHashes> {
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
    let live = if settings.rules.options(table).deletes == DeleteMode::Soft {
        format!(" WHERE {DELETED_AT} IS NULL")
    } else {
        String::new()
    };
    let from = format!("`{}`.`{}`.{}", settings.project, settings.dataset, super::sql::ident(&name));
    let mut pages = api.query_pages(&format!("SELECT {} FROM {from}{live}", select.join(", ")), PAGE).await?;
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
    use crate::schema::{ColumnSchema, ColumnType, TableRef};

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
