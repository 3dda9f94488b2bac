//! The source side of `binferry verify`: each selected table's rows as row hashes, computed
//! exactly as the writer computes the hash it stores with every target row (the table's
//! rules applied, values decoded with the snapshot's codec).

use mysql_async::Conn;
use mysql_async::prelude::Queryable;

use super::catalog::{list_tables, load_schema, quote};
use super::chunks::{ChunkSql, is_chunkable, next_boundary};
use super::{ServerInfo, SourceSettings};
use crate::drift::{HeldAs, KeyBounds, TableHashes};
use crate::error::{Error, Result};
use crate::event::Value;
use crate::mysql_codec::snapshot_row;
use crate::schema::{TableRef, TableSchema};
use crate::table_filter::TableFilter;

/// The tables the pipeline replicates, narrowed by `only` (`db.table` globs) when given.
pub async fn verified_tables(settings: &SourceSettings, only: Option<&TableFilter>) -> Result<Vec<TableRef>> {
    let mut conn = settings.connect().await?;
    let tables = list_tables(&mut conn, &settings.filter).await?;
    Ok(tables.into_iter().filter(|t| only.is_none_or(|f| f.matches(t))).collect())
}

/// The shape the target has for `table` and its rows' hashes, as the source has them now and
/// in the form the target holds them (`held`).
pub async fn table_hashes(
    settings: &SourceSettings,
    table: &TableRef,
    held: HeldAs,
) -> Result<(TableSchema, TableHashes)> {
    let mut conn = settings.connect().await?;
    let server = ServerInfo::query(&mut conn).await?;
    let (schema, _) = settings.shape(load_schema(&mut conn, table, server.mariadb).await?)?;
    let columns = schema.columns.iter().map(|c| quote(&c.name)).collect::<Vec<_>>().join(", ");
    let sql = format!("SELECT {columns} FROM {}.{}", quote(&table.db), quote(&table.name));
    // The binary protocol, as the snapshot reads: typed values, exact floats and temporals.
    // Row by row as they arrive: a whole table's values never sit in memory, only its hashes.
    let fail = |e| Error::source_mysql(e, format!("reading {table}"));
    let mut result = conn.exec_iter(sql, ()).await.map_err(fail)?;
    let mut out = TableHashes::default();
    while let Some(row) = result.next().await.map_err(fail)? {
        let values = snapshot_row(row, &schema.columns).map_err(|e| e.context(format!("reading {table}")))?;
        let values: Vec<Value> = values.into_iter().zip(&schema.columns).map(|(v, c)| held(&c.ty, v)).collect();
        out.add_row(&schema, &values);
    }
    Ok((schema, out))
}

/// A table's rows as hashes, one key range at a time: `verify`'s source side for tables whose
/// key can be read in order (memory stays at one chunk, and a differing chunk is read again
/// alone).
pub struct HashChunks {
    conn: Conn,
    schema: TableSchema,
    held: HeldAs,
    sql: ChunkSql,
    rows: usize,
    lower: Option<Vec<Value>>,
    done: bool,
}

/// The chunks of `table` of about `rows` rows each, hashed in the form the target holds them
/// (`held`), or `None` when the table has no key that can be read in order (then it is
/// compared whole).
pub async fn hash_chunks(
    settings: &SourceSettings,
    table: &TableRef,
    rows: usize,
    held: HeldAs,
) -> Result<Option<HashChunks>> {
    let mut conn = settings.connect().await?;
    let server = ServerInfo::query(&mut conn).await?;
    let (schema, _) = settings.shape(load_schema(&mut conn, table, server.mariadb).await?)?;
    if !is_chunkable(&schema) {
        return Ok(None);
    }
    let sql = ChunkSql::new(&schema);
    Ok(Some(HashChunks { conn, schema, held, sql, rows, lower: None, done: false }))
}

impl HashChunks {
    /// The shape the target has for the table.
    pub fn schema(&self) -> &TableSchema {
        &self.schema
    }

    /// The next chunk's bounds and the source's hashes of its rows; `None` after the last.
    pub async fn next(&mut self) -> Result<Option<(KeyBounds, TableHashes)>> {
        if self.done {
            return Ok(None);
        }
        let upper = next_boundary(&mut self.conn, &self.sql, self.lower.as_deref(), self.rows).await?;
        let bounds = KeyBounds { lower: self.lower.take(), upper: upper.clone() };
        let hashes = self.read(&bounds).await?;
        self.done = upper.is_none();
        self.lower = upper;
        Ok(Some((bounds, hashes)))
    }

    /// The source's hashes of the rows in `bounds`, as they are now.
    pub async fn read(&mut self, bounds: &KeyBounds) -> Result<TableHashes> {
        let (sql, params) = self.sql.rows(bounds.lower.as_deref(), bounds.upper.as_deref());
        let table = &self.schema.table;
        let fail = |e| Error::source_mysql(e, format!("reading {table}"));
        let mut rows = self.conn.exec_iter(sql, params).await.map_err(fail)?;
        let mut out = TableHashes::default();
        while let Some(row) = rows.next().await.map_err(fail)? {
            let values = snapshot_row(row, &self.schema.columns).map_err(|e| e.context(format!("reading {table}")))?;
            let values: Vec<Value> =
                values.into_iter().zip(&self.schema.columns).map(|(v, c)| (self.held)(&c.ty, v)).collect();
            out.add_row(&self.schema, &values);
        }
        Ok(out)
    }
}
