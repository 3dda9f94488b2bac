//! The source side of `binferry verify`: each selected table's rows as row hashes, computed
//! exactly as the writer computes the hash it stores with every target row (the table's
//! rules applied, values decoded with the snapshot's codec).

use mysql_async::Row;
use mysql_async::prelude::Queryable;

use super::catalog::{list_tables, load_schema, quote};
use super::{ServerInfo, SourceSettings};
use crate::drift::TableHashes;
use crate::error::{Error, Result};
use crate::event::hash::{encode_values, row_hash};
use crate::mysql_codec::snapshot_row;
use crate::schema::{TableRef, TableSchema};
use crate::table_filter::TableFilter;

/// The tables the pipeline replicates, narrowed by `only` (`db.table` globs) when given.
pub async fn verified_tables(settings: &SourceSettings, only: Option<&TableFilter>) -> Result<Vec<TableRef>> {
    let mut conn = settings.connect().await?;
    let tables = list_tables(&mut conn, &settings.filter).await?;
    Ok(tables.into_iter().filter(|t| only.is_none_or(|f| f.matches(t))).collect())
}

/// The shape the target has for `table` and its rows' hashes, as the source has them now.
pub async fn table_hashes(settings: &SourceSettings, table: &TableRef) -> Result<(TableSchema, TableHashes)> {
    let mut conn = settings.connect().await?;
    let server = ServerInfo::query(&mut conn).await?;
    let (schema, _) = settings.shape(load_schema(&mut conn, table, server.mariadb).await?)?;
    let columns = schema.columns.iter().map(|c| quote(&c.name)).collect::<Vec<_>>().join(", ");
    let sql = format!("SELECT {columns} FROM {}.{}", quote(&table.db), quote(&table.name));
    // The binary protocol, as the snapshot reads: typed values, exact floats and temporals.
    let rows: Vec<Row> = conn.exec(sql, ()).await.map_err(|e| Error::source_mysql(e, format!("reading {table}")))?;
    let mut out = TableHashes::default();
    for row in rows {
        let values = snapshot_row(row, &schema.columns).map_err(|e| e.context(format!("reading {table}")))?;
        let hash = row_hash(&values);
        if schema.has_primary_key() {
            let key: Vec<_> = schema.primary_key.iter().map(|&i| values[i].clone()).collect();
            let mut encoded = Vec::new();
            encode_values(&key, &mut encoded);
            out.keyed.insert(encoded, (hash, key));
        } else {
            *out.keyless.entry(hash).or_insert(0) += 1;
        }
    }
    Ok((schema, out))
}
