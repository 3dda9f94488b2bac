//! The target side of `binferry verify` on BigQuery: the row hash binferry stored with each
//! row (`_binferry_hash`), by key, read after a MERGE. Rows soft-deleted count as absent.
//!
//! BigQuery returns every cell as text, so a key is read back into the writer's value only
//! for key types whose text is exact both ways: integers and character strings. Other key
//! types make the table NOT COMPARED, with the reason. Rows are read in key order, a page
//! at a time (`LIMIT ... OFFSET ...`: each page re-reads the ones before it in BigQuery,
//! which bills the table's key columns once per page).

use std::sync::Arc;

use super::sql::{DELETED_AT, HASH, column_name, ident};
use super::state::cells;
use super::{BigQuerySinkSettings, registry};
use crate::bigquery_api::{Api, Side};
use crate::drift::TableHashes;
use crate::error::{Error, ErrorKind, Result};
use crate::event::Value;
use crate::event::hash::encode_values;
use crate::schema::{ColumnType, TableSchema};
use crate::table_options::DeleteMode;

/// What a stored hash that is not 16 bytes reads as: no row hashes to it in practice, so
/// the row shows as different.
const NOT_A_HASH: [u8; 16] = [0xff; 16];
/// Rows per page.
const PAGE: usize = 50_000;

/// Whether BigQuery's text of a key column reads back as exactly the writer's value.
fn readable(ty: &ColumnType) -> bool {
    matches!(ty, ColumnType::Int { .. } | ColumnType::Char { .. } | ColumnType::VarChar { .. })
}

/// The writer's value of one key cell.
fn key_value(ty: &ColumnType, text: &str) -> Option<Value> {
    match ty {
        ColumnType::Int { unsigned: true, .. } => text.parse().ok().map(Value::UInt),
        ColumnType::Int { .. } => text.parse().ok().map(Value::Int),
        _ => Some(Value::Text(text.to_string())),
    }
}

/// The stored hashes of the BigQuery table of `schema`; empty when it does not exist yet.
pub async fn table_hashes(settings: &BigQuerySinkSettings, schema: &TableSchema) -> Result<TableHashes> {
    let table = &schema.table;
    let keys: Vec<&ColumnType> = schema.primary_key.iter().map(|&i| &schema.columns[i].ty).collect();
    if keys.is_empty() || !keys.iter().all(|t| readable(t)) {
        return Err(Error::new(
            ErrorKind::Unsupported,
            format!("{table}: verify on BigQuery compares tables keyed by integers or character strings"),
        )
        .with_hint("compare this table by count and sums for now, or resync it"));
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
    let key_cols: Vec<String> =
        schema.primary_key.iter().map(|&i| ident(&column_name(&schema.columns[i].name))).collect();
    let select: Vec<String> = key_cols.iter().map(|k| format!("CAST({k} AS STRING)")).collect();
    let live = if settings.rules.options(table).deletes == DeleteMode::Soft {
        format!(" WHERE {DELETED_AT} IS NULL")
    } else {
        String::new()
    };
    let from = format!("`{}`.`{}`.{}", settings.project, settings.dataset, ident(&name));
    let mut offset = 0usize;
    loop {
        let sql = format!(
            "SELECT {}, TO_HEX({HASH}) FROM {from}{live} ORDER BY {} LIMIT {PAGE} OFFSET {offset}",
            select.join(", "),
            key_cols.join(", ")
        );
        let rows = api.query(&sql).await?;
        let n = rows.len();
        for row in &rows {
            let cells = cells(Some(row));
            let bad = || Error::new(ErrorKind::TargetRejected, format!("{name}: a row without its primary key"));
            let (key_cells, hash_cell) = cells.split_at(keys.len());
            // A hash that is not binferry's (changed by hand) differs from every real one.
            let hash = hash_cell.first().cloned().flatten().and_then(|h| hex16(&h)).unwrap_or(NOT_A_HASH);
            let key = key_cells
                .iter()
                .zip(&keys)
                .map(|(c, ty)| c.as_deref().and_then(|t| key_value(ty, t)))
                .collect::<Option<Vec<_>>>()
                .ok_or_else(bad)?;
            let mut encoded = Vec::new();
            encode_values(&key, &mut encoded);
            out.keyed.insert(encoded, (hash, key));
        }
        if n < PAGE {
            return Ok(out);
        }
        offset += n;
    }
}

fn hex16(s: &str) -> Option<[u8; 16]> {
    if s.len() != 32 {
        return None;
    }
    let mut out = [0u8; 16];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_read_back_as_the_writers_values() {
        let int = ColumnType::Int { bytes: 4, unsigned: false };
        let uint = ColumnType::Int { bytes: 8, unsigned: true };
        assert_eq!(key_value(&int, "-7"), Some(Value::Int(-7)));
        assert_eq!(key_value(&uint, "18446744073709551615"), Some(Value::UInt(u64::MAX)));
        assert_eq!(key_value(&int, "x"), None);
        assert!(!readable(&ColumnType::Date), "dates read back in another text form");
        assert_eq!(
            hex16("000102030405060708090a0b0c0d0e0f"),
            Some([0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15])
        );
        assert_eq!(hex16("00"), None);
    }
}
