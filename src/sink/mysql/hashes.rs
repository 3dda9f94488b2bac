//! The target side of `binferry verify`: the hash of each row of a MySQL target table, by
//! key. Rows soft-deleted count as absent.
//!
//! Where it can, the hash is computed from the values the row holds ([`HashOf::Values`]),
//! not taken from the hash binferry stored with it (`_binferry_hash`). Why: a value changed
//! by hand that leaves the stored hash alone is otherwise invisible, and the writer even keeps
//! it (an upsert whose hash equals the stored one only moves the row's position). The values
//! are read with the snapshot's codec (the binary protocol, typed values) into the source's
//! shape, as the source side reads its rows, and hashed as the writer hashes them, so an
//! untouched row hashes to what the writer stored.
//!
//! That holds where a value reads back exactly as the writer got it: rows from the binlog in a
//! MariaDB target, whose columns have the source's types. A MySQL target stores some types in
//! another form (UUID and INET as text, JSON normalised), and a BigQuery source's values are not
//! in the MySQL column's form (a NUMERIC's scale): there the stored hash is compared
//! ([`HashOf::Stored`]).

use mysql_async::prelude::Queryable;

use super::rows::target_key;
use super::statements::q;
use super::{DELETED_COLUMN, HASH_COLUMN, MysqlSinkSettings, is_mariadb, table_exists};
use crate::drift::{KeyBounds, TableHashes};
use crate::error::{Error, ErrorKind, Result};
use crate::mysql_codec::{key_range, snapshot_row};
use crate::schema::TableSchema;

/// What a target row's hash is taken from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HashOf {
    /// The values the row holds, where they read back exactly (see the module docs); the
    /// stored hash elsewhere.
    Values,
    /// The hash binferry stored with the row.
    Stored,
}

/// The row hashes of the target table of `schema` (only the keys in `bounds`, when given);
/// empty when the table does not exist yet. The target's key columns have the source's types
/// and collations, so a key range selects the same keys on both sides.
pub async fn table_hashes(
    settings: &MysqlSinkSettings,
    schema: &TableSchema,
    bounds: Option<&KeyBounds>,
    of: HashOf,
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
    let values = of == HashOf::Values && is_mariadb(&mut conn).await?;
    // Values: the source's columns only (a column the source dropped stays in the target,
    // NULL for new rows, but is no part of the row the writer hashed). Stored: the key and
    // the hash.
    let select: Vec<String> = match values {
        true => schema.columns.iter().map(|c| q(&c.name)).collect(),
        false => keys.iter().cloned().chain([HASH_COLUMN.to_string()]).collect(),
    };
    let sql = format!("SELECT {} FROM {full}{filter}", select.join(", "));
    // Row by row as they arrive: a whole table (keyless, or keyed out of order) is compared
    // at once, and only its hashes stay in memory.
    let fail = |e| Error::target_mysql(e, format!("reading `{name}`"));
    let mut rows = conn.exec_iter(sql, params).await.map_err(fail)?;
    if values {
        while let Some(row) = rows.next().await.map_err(fail)? {
            let values = snapshot_row(row, &schema.columns).map_err(|e| e.context(format!("reading `{name}`")))?;
            out.add_row(schema, &values);
        }
        return Ok(out);
    }
    let malformed = || {
        Error::new(ErrorKind::TargetRejected, format!("`{name}`: a row without a 16-byte {HASH_COLUMN}"))
            .with_hint("the table was changed by hand; `binferry replay --table` rewrites its rows")
    };
    while let Some(mut row) = rows.next().await.map_err(fail)? {
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
