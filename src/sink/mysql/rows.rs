//! Applying a batch's rows. For each table: read the stored position and hash of every key
//! the batch touches and their tombstones, decide per key ([`decide`], pure and tested in
//! `plan`), then write in multi-row statements that carry the position guard themselves.

use std::collections::HashMap;

use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Row, Value as MyValue};
use tracing::warn;

use super::plan::{KeyAction, Stored, Tombstones, decide};
use super::statements::Statements;
use super::{MAX_PLACEHOLDERS, MysqlSink, ROWS_PER_STATEMENT, TABLE_TOMBSTONE};
use crate::error::{Error, ErrorKind, Result};
use crate::event::Value;
use crate::event::batch::{KeylessRow, RowOp, TableBatch};
use crate::event::hash::{encode_values, row_hash};
use crate::event::value::format_epoch;
use crate::mysql_codec::{Origin, convert, param};
use crate::schema::TableSchema;
use crate::sink::ApplyCounts;

/// Execute `sql(n)` over `rows` on `conn` in power-of-two chunks; each row is `per_row`
/// parameters. Returns the rows of SELECTs.
async fn run_chunked(
    conn: &mut Conn,
    rows: Vec<Vec<MyValue>>,
    per_row: usize,
    prefix: &[MyValue],
    sql: &impl Fn(usize) -> String,
    what: &str,
) -> Result<Vec<Row>> {
    let mut max = ROWS_PER_STATEMENT;
    while max > 1 && max * per_row + prefix.len() > MAX_PLACEHOLDERS {
        max /= 2;
    }
    let mut out = Vec::new();
    let mut remaining = rows.len();
    // Values move into the statement parameters: no copy of row data per chunk.
    let mut rows = rows.into_iter();
    while remaining > 0 {
        let mut n = max;
        while n > remaining {
            n /= 2;
        }
        let mut params = Vec::with_capacity(prefix.len() + n * per_row);
        params.extend_from_slice(prefix);
        params.extend(rows.by_ref().take(n).flatten());
        let result: Vec<Row> = conn.exec(sql(n), params).await.map_err(|e| Error::target_mysql(e, what))?;
        out.extend(result);
        remaining -= n;
    }
    Ok(out)
}

/// The tombstones of `hashes` (key hashes, or [`TABLE_TOMBSTONE`]) of target table `table`.
async fn read_tombstones(
    conn: &mut Conn,
    st: &Statements<'_>,
    table: &str,
    hashes: Vec<[u8; 16]>,
) -> Result<HashMap<[u8; 16], [u8; 16]>> {
    if hashes.is_empty() {
        return Ok(HashMap::new());
    }
    let rows = hashes.into_iter().map(|h| vec![MyValue::Bytes(h.to_vec())]).collect();
    let prefix = [MyValue::Bytes(table.as_bytes().to_vec())];
    let found = run_chunked(conn, rows, 1, &prefix, &|n| st.select_tombstones(n), "reading tombstones").await?;
    Ok(found
        .into_iter()
        .filter_map(|mut r| Some((bytes16(r.take::<Vec<u8>, _>(0)?)?, bytes16(r.take::<Vec<u8>, _>(1)?)?)))
        .collect())
}

/// What a table's changes do to the keys they touch, given what the target holds.
#[derive(Default)]
struct Decided {
    upserts: Vec<Vec<MyValue>>,
    deletes: Vec<Vec<MyValue>>,
    stones: Vec<([u8; 16], [u8; 16])>,
    counts: ApplyCounts,
}

/// Read on `conn` what target table `table` holds for the keys of `ops` (stored position
/// and hash, tombstones), and decide per key ([`decide`]).
async fn read_and_decide(
    conn: &mut Conn,
    st: &Statements<'_>,
    schema: &TableSchema,
    table: &str,
    ops: &[(&Vec<u8>, &RowOp)],
    soft: bool,
    overwrite_equal: bool,
) -> Result<Decided> {
    let key_rows = ops.iter().map(|(_, op)| op.key(schema).into_iter().map(param).collect()).collect();
    let found =
        run_chunked(conn, key_rows, schema.primary_key.len(), &[], &|n| st.select_state(n), "reading target rows")
            .await?;
    let mut stored: HashMap<Vec<u8>, Stored> = HashMap::with_capacity(found.len());
    for row in found {
        let (key, s) = stored_row(row, schema)?;
        stored.insert(key, s);
    }
    let mut lookup: Vec<[u8; 16]> = if soft { Vec::new() } else { ops.iter().map(|(k, _)| key_hash(k)).collect() };
    lookup.push(TABLE_TOMBSTONE);
    let tombs = read_tombstones(conn, st, table, lookup).await?;
    let table_tomb = tombs.get(&TABLE_TOMBSTONE).copied();
    let mut out = Decided::default();
    let counts = &mut out.counts;
    for &(key, op) in ops {
        let pos = op.position().sort_key()?;
        let known = Tombstones { key: tombs.get(&key_hash(key)).copied(), table: table_tomb };
        let count = |changed: bool, counts: &mut ApplyCounts| match changed {
            true => counts.written += 1,
            false => counts.unchanged += 1,
        };
        match (decide(op, pos, stored.get(key), known, overwrite_equal, soft), op) {
            (KeyAction::Stale, _) => counts.stale += 1,
            (KeyAction::Upsert { changed }, RowOp::Upsert { row, hash, .. }) => {
                count(changed, counts);
                let mut p: Vec<MyValue> = row.iter().map(param).collect();
                p.push(MyValue::Bytes(pos.to_vec()));
                p.push(MyValue::Bytes(hash.to_vec()));
                if soft {
                    p.push(MyValue::NULL);
                }
                out.upserts.push(p);
            }
            (KeyAction::SoftDelete { changed }, RowOp::Delete { before, timestamp, .. }) => {
                count(changed, counts);
                let mut p: Vec<MyValue> = before.iter().map(param).collect();
                p.push(MyValue::Bytes(pos.to_vec()));
                p.push(MyValue::Bytes(row_hash(before).to_vec()));
                p.push(MyValue::Bytes(format_epoch(*timestamp as i64, 0, 6).into_bytes()));
                out.upserts.push(p);
            }
            (KeyAction::Delete { present }, RowOp::Delete { key: key_values, .. }) => {
                count(present, counts);
                if present {
                    let mut p: Vec<MyValue> = key_values.iter().map(param).collect();
                    p.push(MyValue::Bytes(pos.to_vec()));
                    out.deletes.push(p);
                }
                out.stones.push((key_hash(key), pos));
            }
            (action, _) => return Err(Error::internal(format!("{action:?} decided for another kind of change"))),
        }
    }
    Ok(out)
}

/// `d`, which a batch of copied rows decided: upserts only (a copy deletes nothing).
fn only_upserts(d: Decided) -> Result<Decided> {
    match d.deletes.is_empty() && d.stones.is_empty() {
        true => Ok(d),
        false => Err(Error::internal("a batch of copied rows decided deletes")),
    }
}

/// How many of `rows` copied rows each copy connection writes: whole statements of
/// `per_statement` rows, spread evenly over at most `connections`, in order. One part when
/// the rows fill no more than one statement (a second connection would only add a commit).
fn copy_parts(rows: usize, connections: usize, per_statement: usize) -> Vec<usize> {
    let statements = rows.div_ceil(per_statement.max(1));
    let parts = statements.min(connections.max(1)).max(1);
    let per_part = statements.div_ceil(parts) * per_statement.max(1);
    let mut out = Vec::with_capacity(parts);
    let mut left = rows;
    while left > 0 {
        let n = per_part.min(left);
        out.push(n);
        left -= n;
    }
    out
}

impl MysqlSink {
    /// Execute `sql(n)` over `rows` on the data connection (see [`run_chunked`]).
    async fn chunked(
        &mut self,
        rows: Vec<Vec<MyValue>>,
        per_row: usize,
        prefix: &[MyValue],
        sql: impl Fn(usize) -> String,
        what: &str,
    ) -> Result<Vec<Row>> {
        let conn = self.data().await?;
        run_chunked(conn, rows, per_row, prefix, &sql, what).await
    }

    /// Apply a batch's rows of one table that a table copy read (`ops`, in key order): on up
    /// to `sink.mysql.copy_connections` connections at once, each part read, decided and
    /// written in a transaction of its own, all committed before this returns.
    ///
    /// Why: one connection runs one statement at a time, so a copy applied on the data
    /// connection alone keeps the target server on one core, waiting between statements.
    /// Why it is safe apart from the transaction that records the offset: a copied row
    /// belongs to no source transaction, and its position alone decides whether it applies
    /// (every statement carries the guard). The parts commit before the offset that passes
    /// them does; a crash in between applies them again on restart, as stale or equal rows.
    /// Their connections read committed, so that parts on neighbouring keys take no gap
    /// locks against each other (a deadlock would still be retried with the batch).
    async fn apply_copied(
        &mut self,
        st: &Statements<'_>,
        schema: &TableSchema,
        name: &str,
        ops: &[(&Vec<u8>, &RowOp)],
        soft: bool,
    ) -> Result<ApplyCounts> {
        let overwrite = self.overwrite_equal;
        let width = schema.columns.len() + 2 + usize::from(soft);
        let what = format!("writing to `{name}`");
        let parts = copy_parts(ops.len(), self.settings.copy_connections, ROWS_PER_STATEMENT);
        if parts.len() <= 1 {
            // One statement's worth: on the data connection, in the batch's transaction.
            let conn = self.data().await?;
            let d = only_upserts(read_and_decide(conn, st, schema, name, ops, soft, overwrite).await?)?;
            run_chunked(conn, d.upserts, width, &[], &|n| st.upsert(n, overwrite), &what).await?;
            return Ok(d.counts);
        }
        while self.copy_conns.len() < parts.len() {
            let mut conn = self.settings.connect().await?;
            conn.query_drop("SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED")
                .await
                .map_err(|e| Error::target_mysql(e, "setting up a copy connection"))?;
            self.copy_conns.push(conn);
        }
        let mut rest = ops;
        let mut work = Vec::with_capacity(parts.len());
        for (conn, n) in self.copy_conns.iter_mut().zip(parts) {
            let (part, tail) = rest.split_at(n);
            rest = tail;
            let what = &what;
            work.push(async move {
                conn.query_drop("START TRANSACTION").await.map_err(|e| Error::target_mysql(e, "BEGIN"))?;
                let d = only_upserts(read_and_decide(conn, st, schema, name, part, soft, overwrite).await?)?;
                run_chunked(conn, d.upserts, width, &[], &|n| st.upsert(n, overwrite), what).await?;
                conn.query_drop("COMMIT").await.map_err(|e| Error::target_mysql(e, "committing copied rows"))?;
                Ok::<_, Error>(d.counts)
            });
        }
        match futures_util::future::try_join_all(work).await {
            Ok(all) => Ok(all.into_iter().fold(ApplyCounts::default(), |mut sum, c| {
                sum += c;
                sum
            })),
            Err(e) => {
                // A part may be mid-transaction: closing its connection rolls it back.
                self.copy_conns.clear();
                Err(e)
            }
        }
    }

    async fn tombstones(
        &mut self,
        st: &Statements<'_>,
        table: &str,
        hashes: Vec<[u8; 16]>,
    ) -> Result<HashMap<[u8; 16], [u8; 16]>> {
        let conn = self.data().await?;
        read_tombstones(conn, st, table, hashes).await
    }

    pub(super) async fn write_tombstones(
        &mut self,
        st: &Statements<'_>,
        table: &str,
        stones: Vec<([u8; 16], [u8; 16])>,
    ) -> Result<()> {
        let rows = stones
            .into_iter()
            .map(|(h, p)| {
                vec![MyValue::Bytes(table.as_bytes().to_vec()), MyValue::Bytes(h.to_vec()), MyValue::Bytes(p.to_vec())]
            })
            .collect();
        self.chunked(rows, 3, &[], |n| st.upsert_tombstones(n), "recording tombstones").await?;
        Ok(())
    }

    /// `apart`: the batch holds only copied rows, which are then read, decided and written
    /// in parts on the copy connections ([`Self::apply_copied`]).
    pub(super) async fn apply_keyed(
        &mut self,
        t: &TableBatch,
        name: &str,
        apart: bool,
        counts: &mut ApplyCounts,
    ) -> Result<()> {
        let schema = &t.schema;
        let soft = self.settings.soft(&schema.table);
        // Rows go to the table's shadow while it is rebuilt aside; tombstones stay under its
        // name.
        let stored = self.rebuilding.stored_in(name);
        let st = Statements::new(&self.settings.database, &stored, schema, soft);
        let mut ops: Vec<(&Vec<u8>, &RowOp)> = t.ops.iter().collect();
        let overwrite = self.overwrite_equal;
        if apart {
            // In key order, so that each copy connection gets a range of its own.
            ops.sort_unstable_by(|a, b| a.0.cmp(b.0));
            let done = self.apply_copied(&st, schema, name, &ops, soft).await;
            return match done {
                Ok(c) => {
                    *counts += c;
                    Ok(())
                }
                Err(e) => Err(self.locate_rejected(e, t, name).await),
            };
        }
        let conn = self.data().await?;
        let d = read_and_decide(conn, &st, schema, name, &ops, soft, overwrite).await?;
        *counts += d.counts;
        // Copied rows in a batch with other changes go with them, in its transaction.
        let upsert_width = schema.columns.len() + 2 + usize::from(soft);
        self.chunked(
            d.deletes,
            schema.primary_key.len() + 1,
            &[],
            |n| st.delete(n),
            &format!("deleting from `{name}`"),
        )
        .await?;
        let written = self
            .chunked(d.upserts, upsert_width, &[], |n| st.upsert(n, overwrite), &format!("writing to `{name}`"))
            .await;
        if let Err(e) = written {
            return Err(self.locate_rejected(e, t, name).await);
        }
        self.write_tombstones(&st, name, d.stones).await?;
        Ok(())
    }

    /// A multi-row statement failed because the target refused a value: find the row, by
    /// writing the batch's rows of `t` one by one (the writer rolls all of it back next), and
    /// name the table, the row's key, the column and the value. Other errors pass unchanged.
    async fn locate_rejected(&mut self, e: Error, t: &TableBatch, name: &str) -> Error {
        if e.kind() != ErrorKind::ValueRejected {
            return e;
        }
        let schema = &t.schema;
        let keyed = schema.has_primary_key();
        let soft = keyed && self.settings.soft(&schema.table);
        let (db, stored) = (self.settings.database.clone(), self.rebuilding.stored_in(name));
        let st = Statements::new(&db, &stored, schema, soft);
        let sql = if keyed { st.upsert(1, self.overwrite_equal) } else { st.keyless_insert(1) };
        let rows: Vec<&Vec<Value>> = if keyed {
            t.ops.values().filter_map(|op| if let RowOp::Upsert { row, .. } = op { Some(row) } else { None }).collect()
        } else {
            t.keyless.values().map(|k| &k.row).collect()
        };
        for row in rows {
            let mut p: Vec<MyValue> = row.iter().map(param).collect();
            // Position and hash of zero: a probe that never wins over a stored row.
            if keyed {
                p.extend([MyValue::Bytes(vec![0; 16]), MyValue::Bytes(vec![0; 16])]);
                if soft {
                    p.push(MyValue::NULL);
                }
            } else {
                p.extend([MyValue::Bytes(vec![0; 16]), MyValue::UInt(u32::MAX as u64), MyValue::Bytes(vec![0; 16])]);
            }
            let tried = match self.data().await {
                Ok(conn) => {
                    conn.exec_drop(&sql, p).await.map_err(|e| Error::target_mysql(e, format!("writing to `{name}`")))
                }
                Err(e) => return e,
            };
            match tried {
                Ok(()) => {}
                Err(one) if one.kind() == ErrorKind::ValueRejected => return rejected_row(schema, row, &one),
                Err(other) => return other,
            }
        }
        e.with_table(schema.table.clone())
    }

    pub(super) async fn apply_keyless(&mut self, t: &TableBatch, name: &str, counts: &mut ApplyCounts) -> Result<()> {
        let schema = &t.schema;
        let stored = self.rebuilding.stored_in(name);
        let st = Statements::new(&self.settings.database, &stored, schema, false);
        let rows: Vec<(&[u8; 16], &KeylessRow)> = t.keyless.iter().collect();
        let hashes: Vec<Vec<MyValue>> = rows.iter().map(|(h, _)| vec![MyValue::Bytes(h.to_vec())]).collect();
        let found = self.chunked(hashes, 1, &[], |n| st.keyless_state(n), "reading target rows").await?;
        let mut stored: HashMap<[u8; 16], (u64, [u8; 16])> = HashMap::new();
        for mut r in found {
            let hash = r.take::<Vec<u8>, _>(0).and_then(bytes16);
            let count = r.take::<u64, _>(1);
            let pos = r.take::<Vec<u8>, _>(2).and_then(bytes16);
            if let (Some(h), Some(c), Some(p)) = (hash, count, pos) {
                stored.insert(h, (c, p));
            }
        }
        let mut lookup: Vec<[u8; 16]> = rows.iter().map(|(h, _)| **h).collect();
        lookup.push(TABLE_TOMBSTONE);
        let tombs = self.tombstones(&st, name, lookup).await?;
        let table_tomb = tombs.get(&TABLE_TOMBSTONE).copied().unwrap_or([0; 16]);
        let mut inserts: Vec<Vec<MyValue>> = Vec::new();
        let mut stones = Vec::new();
        for (hash, k) in rows {
            let (count, stored_pos) = stored.get(hash).copied().unwrap_or((0, [0; 16]));
            let floor = tombs.get(hash).map_or(stored_pos, |t| (*t).max(stored_pos)).max(table_tomb);
            let fresh: Vec<(&[u8; 16], &i64)> =
                k.changes.range((std::ops::Bound::Excluded(floor), std::ops::Bound::Unbounded)).collect();
            let Some(newest) = fresh.last().map(|(p, _)| **p) else {
                counts.stale += k.changes.len() as u64;
                continue;
            };
            counts.stale += (k.changes.len() - fresh.len()) as u64;
            let delta: i64 = fresh.iter().map(|(_, d)| **d).sum();
            let target = count as i64 + delta;
            if target < 0 {
                warn!(table = %name, "a row deleted in the source is missing in the target (drift); its count stays 0");
            }
            let target = target.max(0) as u64;
            counts.written += count.abs_diff(target).max(1);
            for dup in count + 1..=target {
                let mut p: Vec<MyValue> = k.row.iter().map(param).collect();
                p.extend([MyValue::Bytes(hash.to_vec()), MyValue::UInt(dup), MyValue::Bytes(newest.to_vec())]);
                inserts.push(p);
            }
            let conn = self.data().await?;
            if target < count {
                conn.exec_drop(st.keyless_trim(), (hash.to_vec(), target))
                    .await
                    .map_err(|e| Error::target_mysql(e, format!("deleting from `{name}`")))?;
            }
            if target > 0 && count > 0 {
                conn.exec_drop(st.keyless_touch(), (newest.to_vec(), hash.to_vec()))
                    .await
                    .map_err(|e| Error::target_mysql(e, format!("updating `{name}`")))?;
            }
            if target == 0 {
                stones.push((*hash, newest));
            }
        }
        let width = schema.columns.len() + 3;
        let written =
            self.chunked(inserts, width, &[], |n| st.keyless_insert(n), &format!("writing to `{name}`")).await;
        if let Err(e) = written {
            return Err(self.locate_rejected(e, t, name).await);
        }
        self.write_tombstones(&st, name, stones).await?;
        Ok(())
    }
}

/// The error of a row the target refused: its table, key, column and value, and the fix.
fn rejected_row(schema: &TableSchema, row: &[Value], e: &Error) -> Error {
    let key: Vec<String> = if schema.has_primary_key() {
        schema
            .primary_key
            .iter()
            .filter_map(|&i| Some(format!("{} = {}", schema.columns.get(i)?.name, show(row.get(i)?))))
            .collect()
    } else {
        vec![format!("row hash {}", row_hash(row).iter().map(|b| format!("{b:02x}")).collect::<String>())]
    };
    // The server names the column in its message (`c`, 'c' or `db`.`t`.`c`).
    let column = schema.columns.iter().enumerate().find(|(_, c)| {
        let m = e.detail();
        m.contains(&format!("`{}`", c.name)) || m.contains(&format!("'{}'", c.name))
    });
    let value = match column {
        Some((i, c)) => format!(", column `{}` = {}", c.name, row.get(i).map_or_else(String::new, show)),
        None => String::new(),
    };
    Error::new(
        ErrorKind::ValueRejected,
        format!("the target refused the row of {} with key ({}){value}: {}", schema.table, key.join(", "), e.detail()),
    )
    .with_hint(format!(
        "fix the value in the source, or give the target column a type that holds it; then `binferry resync \
         --table {}` rebuilds the table (the stale copy stays readable meanwhile)",
        schema.table
    ))
    .with_table(schema.table.clone())
}

/// A value for a message, shortened.
fn show(v: &Value) -> String {
    let text = match v {
        Value::Null => "NULL".to_string(),
        Value::Int(i) => i.to_string(),
        Value::UInt(u) | Value::Bit(u) => u.to_string(),
        Value::Year(y) => y.to_string(),
        Value::Float(f) => f.to_string(),
        Value::Double(d) => d.to_string(),
        Value::Bytes(b) => format!("x'{}'", b.iter().take(32).map(|x| format!("{x:02x}")).collect::<String>()),
        Value::Decimal(s) | Value::Text(s) | Value::Date(s) | Value::DateTime(s) | Value::Time(s) | Value::Json(s) => {
            format!("'{}'", s.chars().take(64).collect::<String>())
        }
    };
    if text.chars().count() > 80 { format!("{}…", text.chars().take(80).collect::<String>()) } else { text }
}

/// The primary key in the first columns of a target `row`, decoded with the source's codec
/// (as the target returns them): its encoding (how batches key rows) and its values.
pub(super) fn target_key(row: &mut Row, schema: &TableSchema) -> Result<(Vec<u8>, Vec<Value>)> {
    let mut key = Vec::with_capacity(schema.primary_key.len());
    for (i, &ci) in schema.primary_key.iter().enumerate() {
        let v: MyValue = row.take(i).unwrap_or(MyValue::NULL);
        key.push(convert(v, &schema.columns[ci], Origin::Snapshot)?);
    }
    let mut encoded = Vec::new();
    encode_values(&key, &mut encoded);
    Ok((encoded, key))
}

/// Decode one `select_state` row: key values (as the target returns them), position, hash, deleted.
fn stored_row(mut row: Row, schema: &TableSchema) -> Result<(Vec<u8>, Stored)> {
    let n = schema.primary_key.len();
    let (encoded, _) = target_key(&mut row, schema)?;
    let bad = || {
        Error::new(
            ErrorKind::TargetRejected,
            format!("target table of {} has malformed binferry columns", schema.table),
        )
    };
    let pos = row.take::<Vec<u8>, _>(n).and_then(bytes16).ok_or_else(bad)?;
    let hash = row.take::<Vec<u8>, _>(n + 1).and_then(bytes16).ok_or_else(bad)?;
    let deleted = row.take::<i64, _>(n + 2).unwrap_or(0) != 0;
    Ok((encoded, Stored { pos, hash, deleted }))
}

fn bytes16(v: Vec<u8>) -> Option<[u8; 16]> {
    v.try_into().ok()
}

/// Tombstone key of an encoded primary key.
fn key_hash(encoded_key: &[u8]) -> [u8; 16] {
    let h = blake3::hash(encoded_key);
    let mut out = [0u8; 16];
    out.copy_from_slice(&h.as_bytes()[..16]);
    out
}

#[cfg(test)]
mod tests {
    use super::copy_parts;

    #[test]
    fn copied_rows_are_split_into_whole_statements_over_the_connections() {
        // (rows, connections, rows per statement, parts)
        let cases: Vec<(usize, usize, usize, Vec<usize>)> = vec![
            (0, 4, 256, vec![]),
            (1, 4, 256, vec![1]),
            (256, 4, 256, vec![256]),
            (257, 4, 256, vec![256, 1]),
            (5_000, 4, 256, vec![1_280, 1_280, 1_280, 1_160]),
            (10_000, 4, 256, vec![2_560, 2_560, 2_560, 2_320]),
            (1_000, 1, 256, vec![1_000]),
            (600, 8, 256, vec![256, 256, 88]),
        ];
        for (rows, connections, per_statement, want) in cases {
            let got = copy_parts(rows, connections, per_statement);
            assert_eq!(got, want, "{rows} rows on {connections} connections");
            assert_eq!(got.iter().sum::<usize>(), rows);
        }
    }
}
