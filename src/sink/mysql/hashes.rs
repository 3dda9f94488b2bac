//! The target side of `binferry verify`: the row hashes binferry stored with each row of a
//! MySQL target table (`_binferry_hash`), by key. Rows soft-deleted count as absent.

use mysql_async::Row;
use mysql_async::prelude::Queryable;

use super::rows::target_key;
use super::statements::q;
use super::{DELETED_COLUMN, HASH_COLUMN, MysqlSinkSettings, table_exists};
use crate::drift::{KeyBounds, TableHashes};
use crate::error::{Error, ErrorKind, Result};
use crate::mysql_codec::key_range;
use crate::schema::TableSchema;

/// The stored hashes of the target table of `schema` (only the keys in `bounds`, when given);
/// empty when the table does not exist yet. The target's key columns have the source's types
/// and collations, so a key range selects the same keys on both sides.
pub async fn table_hashes(
    settings: &MysqlSinkSettings,
    schema: &TableSchema,
    bounds: Option<&KeyBounds>,
) -> Result<TableHashes> {
    let mut conn = settings.connect().await?;
    let name = settings.target_table(&schema.table);
    let mut out = TableHashes::default();
    if !table_exists(&mut conn, &settings.database, &name).await? {
        return Ok(out);
    }
    let full = format!("{}.{}", q(&settings.database), q(&name));
    let keys: Vec<String> = schema.primary_key.iter().map(|&i| q(&schema.columns[i].name)).collect();
    let (mut cond, params) = match bounds {
        Some(b) => key_range::filter(&keys, b.lower.as_deref(), b.upper.as_deref()),
        None => (vec![], vec![]),
    };
    if settings.soft(&schema.table) {
        cond.push(format!("{DELETED_COLUMN} IS NULL"));
    }
    let filter = if cond.is_empty() { String::new() } else { format!(" WHERE {}", cond.join(" AND ")) };
    let mut select = keys.clone();
    select.push(HASH_COLUMN.to_string());
    let sql = format!("SELECT {} FROM {full}{filter}", select.join(", "));
    // The binary protocol, as the sink reads keys back: typed values.
    let rows: Vec<Row> =
        conn.exec(sql, params).await.map_err(|e| Error::target_mysql(e, format!("reading `{name}`")))?;
    let malformed = || {
        Error::new(ErrorKind::TargetRejected, format!("`{name}`: a row without a 16-byte {HASH_COLUMN}"))
            .with_hint("the table was changed by hand; `binferry replay --table` rewrites its rows")
    };
    for mut row in rows {
        let n = keys.len();
        let hash: [u8; 16] = row.take::<Vec<u8>, _>(n).and_then(|h| h.try_into().ok()).ok_or_else(malformed)?;
        if n == 0 {
            *out.keyless.entry(hash).or_insert(0) += 1;
            continue;
        }
        let (encoded, key) = target_key(&mut row, schema)?;
        out.keyed.insert(encoded, (hash, key));
    }
    Ok(out)
}
