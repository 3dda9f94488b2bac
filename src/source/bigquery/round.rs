//! One table's part of a round: its summary at the round's timestamp, then the rows to
//! apply, a page at a time (I/O around the pure parts in `sql`, `summary` and `values`).

use gcp_bigquery_client::model::table_row::TableRow;

use super::arrow_rows::{self, ArrowRows};
use super::sql::{TableSql, bucket_digits};
use super::summary::{Changed, RowHashes, SummaryRow, changed, from_rows, rows};
use super::table::BqTable;
use super::values::decode;
use crate::bigquery_api::{Api, Pages, TableStream};
use crate::error::{Error, ErrorKind, Result};
use crate::event::Value;
use crate::position::TableSummary;
use crate::schema::table_ref::TableRef;

/// Rows per page of a round's result: small enough that a page of wide rows stays a few
/// megabytes in memory, large enough that paging costs little next to the query.
const PAGE_ROWS: i32 = 5_000;

/// A row a round found changed: its values at the round's timestamp in table column order,
/// or, for a row deleted since the previous round, its key (other columns `Null`).
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct RowChange {
    pub(crate) deleted: bool,
    pub(crate) values: Vec<Value>,
    /// Its bucket and hashes, from a diff ([`Read::Changes`]); `None` for a whole read.
    pub(crate) hashes: Option<RowHashes>,
}

/// The moments a round diffs with: the previous round's timestamp and the start of the settle
/// margin before it (µs since the epoch).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Since {
    pub(crate) prev: i64,
    pub(crate) since: i64,
}

/// What one round reads of one table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Read {
    /// Nothing changed.
    Nothing,
    /// The rows that differ from the previous round, at timestamp `prev` (µs), or from the
    /// start of the settle margin before it, `since` (µs, at most `prev`; see
    /// [`TableSql::changes`]).
    Changes { prev: i64, since: i64, buckets: Option<Vec<String>> },
    /// Every row: the table's first round, or its previous state is out of reach.
    Everything,
}

/// One table's part of a round at timestamp `now` (µs since the epoch).
pub(crate) struct TableRound<'a> {
    api: &'a Api,
    table: &'a BqTable,
    /// Version of the schema the table is read with.
    schema_version: u64,
    now: i64,
    /// The Storage Read API's endpoint, for whole reads of tables it can read exactly.
    storage: Option<(&'a str, Moment)>,
}

/// Which rows a whole read through the Storage Read API must see.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Moment {
    /// Exactly those at the round's timestamp: a round's tables are one moment (linked
    /// tables stay consistent). A server that does not confirm the snapshot time (the
    /// emulator ignores it) is read over REST instead.
    Exact,
    /// Those at the timestamp or later: `verify` reads again what differs.
    AtLeast,
}

impl<'a> TableRound<'a> {
    pub(crate) fn new(api: &'a Api, table: &'a BqTable, schema_version: u64, now: i64) -> Self {
        TableRound { api, table, schema_version, now, storage: None }
    }

    /// Read the table whole through the Storage Read API at `endpoint` when it is given and
    /// the table's columns all have an exact Arrow form (see [`super::arrow_rows`]), seeing
    /// the rows of `moment`.
    pub(crate) fn with_storage(mut self, endpoint: Option<&'a str>, moment: Moment) -> Self {
        self.storage = endpoint.map(|e| (e, moment));
        self
    }

    /// The table's summary at `now`, with as many bucket digits as `prev` used, unless the
    /// table's size now suits another layout (re-bucketing renames every bucket, so that
    /// round reads all the differences: correct, and rare, since the layouts are 16-fold apart).
    pub(crate) async fn summary(&self, prev: Option<&TableSummary>) -> Result<TableSummary> {
        let digits = prev.map(|p| p.digits).unwrap_or(1);
        let summary = self.summary_with(digits).await?;
        let fits = bucket_digits(rows(&summary));
        if fits == digits { Ok(summary) } else { self.summary_with(fits).await }
    }

    /// The table's summary at `now` in buckets of `digits` hex digits.
    pub(crate) async fn summary_with(&self, digits: u32) -> Result<TableSummary> {
        let sql = TableSql::new(self.table).summary(digits, self.now);
        let mut pages = self.api.query_pages(&sql, PAGE_ROWS).await?;
        let mut buckets: Vec<SummaryRow> = Vec::new();
        while let Some(page) = pages.next_page().await? {
            for row in page {
                let cells = cells(&row);
                let text = |i: usize| cells.get(i).and_then(|c| c.as_str()).unwrap_or_default();
                let int = |i: usize| -> Result<i64> {
                    text(i).parse().map_err(|_| {
                        Error::new(
                            ErrorKind::Decode,
                            format!("summary of {}: cell {i} is {:?}", self.table.name, text(i)),
                        )
                    })
                };
                buckets.push((text(0).to_string(), int(1)? as u64, int(2)? as u64, int(3)?));
            }
        }
        from_rows(&self.table.table_ref(), self.schema_version, digits, buckets)
    }

    /// What this round must read of the table, given the previous round's timestamp and
    /// summary (none on the table's first round) and this round's summary. A table read
    /// with another schema than last time is read whole.
    pub(crate) fn plan(prev: Option<(Since, &TableSummary)>, now: &TableSummary) -> Read {
        match prev {
            None => Read::Everything,
            Some((_, before)) if before.schema_version != now.schema_version => Read::Everything,
            Some((Since { prev, since }, before)) => {
                let since = since.min(prev);
                match changed(before, now) {
                    Changed::Nothing => Read::Nothing,
                    Changed::Buckets(b) => Read::Changes { prev, since, buckets: Some(b) },
                    Changed::All => Read::Changes { prev, since, buckets: None },
                }
            }
        }
    }

    /// What a round diffs first of a table that keeps changing ([`super::summary::DiffFirst`]):
    /// every row that differs from the previous round, the margin left to [`Self::late`].
    pub(crate) fn diff_first(prev: i64) -> Read {
        Read::Changes { prev, since: prev, buckets: None }
    }

    /// What a table diffed first must also read: the buckets where its summary at the
    /// previous round's timestamp, as BigQuery computes it now (`at_prev`), differs from the
    /// one that round kept. They hold commits stamped before that round but visible only
    /// after it read the table; time travel now shows them at `prev` already, so only the
    /// settle margin finds them. Nothing when the margin is empty.
    pub(crate) fn late(Since { prev, since }: Since, kept: &TableSummary, at_prev: &TableSummary) -> Read {
        if since >= prev {
            return Read::Nothing;
        }
        match changed(kept, at_prev) {
            Changed::Nothing => Read::Nothing,
            Changed::Buckets(b) => Read::Changes { prev, since, buckets: Some(b) },
            Changed::All => Read::Changes { prev, since, buckets: None },
        }
    }

    /// Start reading what `read` names; the rows come a page at a time from [`Changes`].
    pub(crate) async fn read(&self, read: &Read, digits: u32) -> Result<Option<Changes<'a>>> {
        if let (Read::Everything, Some((endpoint, moment))) = (read, self.storage)
            && arrow_rows::readable(self.table)
        {
            let t = self.table;
            let names: Vec<String> = t.columns.iter().map(|c| c.name.clone()).collect();
            let mut stream = self.api.read_table(endpoint, &t.dataset, &t.name, &names, self.now).await?;
            if moment == Moment::Exact && !stream.snapshot {
                tracing::debug!(table = %t.table_ref(), "the read session ignores the round's timestamp: reading over REST");
            } else if let Some(rows) = ArrowRows::new(t, std::mem::take(&mut stream.schema))? {
                self.api.stats.record_bigquery_source_bytes(stream.bytes_scanned);
                return Ok(Some(Changes { table: t, from: RowSource::Storage(Box::new(Session { stream, rows })) }));
            } else {
                tracing::debug!(table = %t.table_ref(), "the read session's Arrow types are not exact: reading over REST");
            }
        }
        let sql = TableSql::new(self.table);
        let text = match read {
            Read::Nothing => return Ok(None),
            Read::Everything => sql.rows(digits, None, self.now),
            Read::Changes { prev, since, buckets } => {
                let since = (since < prev).then_some(*since);
                sql.changes(digits, buckets.as_deref(), self.now, *prev, since)
            }
        };
        let pages = self.api.query_pages(&text, PAGE_ROWS).await?;
        let hashed = matches!(read, Read::Changes { .. });
        Ok(Some(Changes { table: self.table, from: RowSource::Query { pages, hashed } }))
    }
}

/// Whether `e` says a diff reached before what BigQuery's time travel keeps: the previous
/// round (or the settle margin before it) is older than the dataset's time-travel window (7
/// days by default, 2 at least) or than the table. The table's past is then out of reach,
/// and the round reads it whole instead.
///
/// BigQuery says "Invalid snapshot time 1601168925462 for table p:d.t@1601168925462. Cannot
/// read before 1601573410026." The emulator says "No snapshot found at timestamp ..." or,
/// depending on its state, "Not found: Table ...": that one also means a table dropped since
/// the round read its shape, and then the whole read fails the same way and
/// [`dropped_meanwhile`] tells, one query later.
pub(crate) fn beyond_time_travel(e: &Error) -> bool {
    const SIGNS: [&str; 4] =
        ["Invalid snapshot time", "Cannot read before", "No snapshot found at timestamp", "Not found: Table"];
    e.kind() == ErrorKind::SourceSetting && SIGNS.iter().any(|s| e.detail().contains(s))
}

/// Whether `e`, a definite error of one table, comes from the table being dropped since it
/// was listed: a query of a dropped table is "Not found", its shape may fail with anything,
/// so BigQuery is asked whether the table still exists. A transient `e` says nothing.
pub(crate) async fn dropped(api: &Api, table: &TableRef, e: &Error) -> Result<bool> {
    if e.is_transient() {
        return Ok(false);
    }
    Ok(!api.table_exists(&table.db, &table.name).await?)
}

/// A table's definite error, unless the table was dropped since the round listed it: then
/// the error only says so, and the round is read again as after a transient error. The next
/// round no longer lists the table and drops it in the target as
/// `sink.mysql.on_source_drop` says; stopping the pipeline, or the table, would be wrong for
/// a drop the user meant.
pub(crate) async fn dropped_meanwhile(api: &Api, table: &TableRef, e: Error) -> Error {
    match dropped(api, table, &e).await {
        Ok(true) => Error::new(
            ErrorKind::SourceUnavailable,
            format!("{table} was dropped during the round ({}): the round is read again without it", e.detail()),
        ),
        // Still there (or `e` was transient): the error is the table's own.
        Ok(false) => e,
        // BigQuery did not answer the check: the round is read again, and tells.
        Err(check) if check.is_transient() => check,
        Err(_) => e,
    }
}

/// The changed rows of one table, a page at a time.
pub(crate) struct Changes<'a> {
    table: &'a BqTable,
    from: RowSource<'a>,
}

/// Where a table's rows come from.
enum RowSource<'a> {
    /// A query's result pages (REST); `hashed`: the rows of a diff, which end with their
    /// bucket and hashes.
    Query { pages: Pages<'a>, hashed: bool },
    /// A read session of the whole table (Arrow).
    Storage(Box<Session>),
}

/// A read session and the rows of its current batch.
struct Session {
    stream: TableStream,
    rows: ArrowRows,
}

impl Changes<'_> {
    /// The next page of changes, `None` after the last.
    pub(crate) async fn next_page(&mut self) -> Result<Option<Vec<RowChange>>> {
        let table = self.table;
        match &mut self.from {
            RowSource::Query { pages, hashed } => {
                let Some(page) = pages.next_page().await? else { return Ok(None) };
                page.iter().map(|row| decode_row(table, row, *hashed)).collect::<Result<Vec<_>>>().map(Some)
            }
            RowSource::Storage(session) => loop {
                if let Some(page) = session.rows.page(table, PAGE_ROWS as usize)? {
                    let change = |values| RowChange { deleted: false, values, hashes: None };
                    return Ok(Some(page.into_iter().map(change).collect()));
                }
                match session.stream.next_batch().await? {
                    Some(message) => session.rows.push(table, message)?,
                    None => return Ok(None),
                }
            },
        }
    }

    /// Bytes BigQuery scanned for the query or estimates for the read session (what real
    /// BigQuery bills), when it says.
    pub(crate) fn bytes_processed(&self) -> Option<u64> {
        match &self.from {
            RowSource::Query { pages, .. } => pages.bytes_processed,
            RowSource::Storage(session) => Some(session.stream.bytes_scanned),
        }
    }
}

/// One result row of a query: `_deleted`, then the table's columns, then, `hashed`, the
/// row's bucket and its hashes now and at the previous round (see [`super::sql`]).
fn decode_row(table: &BqTable, row: &TableRow, hashed: bool) -> Result<RowChange> {
    let cells = cells(row);
    let columns = &table.columns;
    let expected = columns.len() + 1 + if hashed { 3 } else { 0 };
    if cells.len() != expected {
        return Err(Error::new(
            ErrorKind::Decode,
            format!(
                "BigQuery table {}.{}: a result row has {} cells, expected {expected}",
                table.dataset,
                table.name,
                cells.len(),
            ),
        ));
    }
    let deleted = cells[0].as_str() == Some("true");
    let values = columns
        .iter()
        .zip(&cells[1..])
        .map(|(c, cell)| decode(&c.ty, cell, &c.name))
        .collect::<Result<Vec<_>>>()
        .map_err(|e| e.with_table(table.table_ref()))?;
    let hashes = hashed.then(|| {
        let text = |i: usize| cells[columns.len() + i].as_str().map(String::from);
        RowHashes { bucket: text(1).unwrap_or_default(), now: text(2), prev: text(3) }
    });
    Ok(RowChange { deleted, values, hashes })
}

fn cells(row: &TableRow) -> Vec<serde_json::Value> {
    row.columns
        .as_deref()
        .unwrap_or_default()
        .iter()
        .map(|c| c.value.clone().unwrap_or(serde_json::Value::Null))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary(version: u64, buckets: &[(&str, u64, i64)]) -> TableSummary {
        TableSummary {
            schema_version: version,
            digits: 1,
            buckets: buckets.iter().map(|(n, r, x)| (n.to_string(), (*r, *x))).collect(),
        }
    }

    #[test]
    fn a_past_beyond_time_travel_is_recognised() {
        let setting = |m: &str| Error::new(ErrorKind::SourceSetting, m);
        let cases = [
            (
                setting(
                    "Invalid snapshot time 1601168925462 for table p:d.t@1601168925462. Cannot read before \
                     1601573410026.",
                ),
                true,
            ),
            (setting("No snapshot found at timestamp 2026-11-19 03:21:13.504433+00"), true),
            (setting("Not found: Table d.recipes was not found in location US (HTTP 404, notFound)"), true),
            (setting("Unrecognized name: price"), false),
            (Error::new(ErrorKind::SourceUnavailable, "Cannot read before: timeout"), false),
        ];
        for (e, expect) in cases {
            assert_eq!(beyond_time_travel(&e), expect, "{e}");
        }
    }

    fn at(prev: i64, since: i64) -> Since {
        Since { prev, since }
    }

    #[test]
    fn a_table_diffed_first_reads_the_margin_only_where_a_commit_came_late() {
        let kept = summary(1, &[("a", 2, 5), ("b", 1, 7)]);
        let cases = [
            // BigQuery shows the previous round as that round saw it: no commit came late.
            (at(10, 4), kept.clone(), Read::Nothing),
            // A commit in bucket b became visible after the previous round read the table.
            (
                at(10, 4),
                summary(1, &[("a", 2, 5), ("b", 2, 9)]),
                Read::Changes { prev: 10, since: 4, buckets: Some(vec!["b".into()]) },
            ),
            // No margin (settle_secs = 0): nothing to read.
            (at(10, 10), summary(1, &[("a", 2, 5), ("b", 2, 9)]), Read::Nothing),
        ];
        for (since, at_prev, expect) in cases {
            assert_eq!(TableRound::late(since, &kept, &at_prev), expect, "{since:?} {at_prev:?}");
        }
        assert_eq!(TableRound::diff_first(10), Read::Changes { prev: 10, since: 10, buckets: None });
    }

    #[test]
    fn a_round_reads_what_changed_since_the_last_or_everything() {
        let before = summary(1, &[("a", 2, 5), ("b", 1, 7)]);
        let cases = [
            (None, summary(1, &[("a", 2, 5)]), Read::Everything),
            (Some((at(10, 4), &before)), before.clone(), Read::Nothing),
            (
                Some((at(10, 4), &before)),
                summary(1, &[("a", 2, 6), ("b", 1, 7)]),
                Read::Changes { prev: 10, since: 4, buckets: Some(vec!["a".into()]) },
            ),
            // A margin that would start after the previous round starts at it.
            (
                Some((at(10, 12), &before)),
                summary(1, &[("a", 2, 5), ("b", 2, 7)]),
                Read::Changes { prev: 10, since: 10, buckets: Some(vec!["b".into()]) },
            ),
            // Another shape (an added column): read whole, not diffed.
            (Some((at(10, 4), &before)), summary(2, &[("a", 2, 5), ("b", 1, 7)]), Read::Everything),
        ];
        for (prev, now, expect) in cases {
            assert_eq!(TableRound::plan(prev, &now), expect, "{prev:?} → {now:?}");
        }
    }
}

/// Against the BigQuery emulator that scripts/test.sh starts (`BINFERRY_BQ_PORT`, default
/// 19050): each test makes its own dataset and drops it.
#[cfg(test)]
mod emulator_tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;
    use crate::bigquery_api::{Auth, Side};
    use crate::source::bigquery::summary::Delta;

    struct Dataset {
        api: Api,
        name: String,
    }

    impl Dataset {
        async fn new(prefix: &str) -> Dataset {
            let port: u16 = std::env::var("BINFERRY_BQ_PORT").ok().and_then(|p| p.parse().ok()).unwrap_or(19050);
            let auth = Auth::Emulator(format!("http://127.0.0.1:{port}/bigquery/v2"));
            let api = Api::connect(Side::Source, &auth, "binferry-test", None, Duration::from_secs(60), Arc::default())
                .await
                .expect("the BigQuery emulator answers (scripts/bigquery.sh start)");
            let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
            let name = format!("{prefix}_{}_{nanos}", std::process::id());
            api.query(&format!("CREATE SCHEMA `{name}`")).await.unwrap();
            Dataset { api, name }
        }

        /// The table every test here reads: `recipes (id, name, price)`, keyed by `id`.
        async fn create_recipes(&self) {
            self.run(
                "CREATE TABLE DS.recipes (id INT64, name STRING, price NUMERIC(10, 2), PRIMARY KEY (id) NOT ENFORCED)",
            )
            .await;
        }

        async fn run(&self, sql: &str) {
            self.api.query(&sql.replace("DS", &self.name)).await.unwrap();
        }

        async fn now(&self) -> i64 {
            let rows = self.api.query(crate::source::bigquery::sql::NOW).await.unwrap();
            cells(&rows[0])[0].as_str().unwrap().parse().unwrap()
        }

        async fn table(&self, name: &str) -> BqTable {
            let resource = self.api.table_resource(&self.name, name).await.unwrap();
            BqTable::from_resource(&resource, None).unwrap()
        }

        async fn drop(self) {
            self.api.query(&format!("DROP SCHEMA `{}` CASCADE", self.name)).await.unwrap();
        }
    }

    /// The rows `read` finds, by key, without their hashes (see [`derived`]).
    async fn read_all(round: &TableRound<'_>, read: &Read, digits: u32) -> Vec<RowChange> {
        let mut out = read_hashed(round, read, digits).await;
        for row in &mut out {
            row.hashes = None;
        }
        out
    }

    async fn read_hashed(round: &TableRound<'_>, read: &Read, digits: u32) -> Vec<RowChange> {
        let mut out = Vec::new();
        if let Some(mut changes) = round.read(read, digits).await.unwrap() {
            while let Some(page) = changes.next_page().await.unwrap() {
                out.extend(page);
            }
        }
        out.sort_by_key(|c| match c.values[0] {
            Value::Int(i) => i,
            _ => i64::MAX,
        });
        out
    }

    /// `before` brought up to the round by the hashes of the rows `read` finds.
    async fn derived(round: &TableRound<'_>, read: &Read, before: &TableSummary) -> TableSummary {
        let mut delta = Delta::new(before.clone());
        for row in read_hashed(round, read, before.digits).await {
            delta.apply(row.hashes.as_ref().expect("a diff's rows carry their hashes")).unwrap();
        }
        delta.finish()
    }

    fn row(deleted: bool, id: i64, name: Option<&str>, price: Option<&str>) -> RowChange {
        let text = |v: Option<&str>, f: fn(String) -> Value| v.map(|s| f(s.to_string())).unwrap_or(Value::Null);
        let values = vec![Value::Int(id), text(name, Value::Text), text(price, Value::Decimal)];
        RowChange { deleted, values, hashes: None }
    }

    #[tokio::test]
    async fn rounds_find_exactly_the_rows_that_changed() {
        let ds = Dataset::new("round").await;
        ds.create_recipes().await;
        ds.run("INSERT INTO DS.recipes VALUES (1, 'soup', 1.5), (2, 'stew', 2.25), (3, 'pie', NULL)").await;
        let table = ds.table("recipes").await;

        // First round: everything.
        let t1 = ds.now().await;
        let round = TableRound::new(&ds.api, &table, 1, t1);
        let s1 = round.summary(None).await.unwrap();
        assert_eq!((s1.digits, rows(&s1)), (1, 3));
        let read = TableRound::plan(None, &s1);
        assert_eq!(read, Read::Everything);
        assert_eq!(
            read_all(&round, &read, s1.digits).await,
            vec![
                row(false, 1, Some("soup"), Some("1.50")),
                row(false, 2, Some("stew"), Some("2.25")),
                row(false, 3, Some("pie"), None)
            ]
        );

        // An UPDATE, a DELETE, an INSERT and an UPDATE that changes nothing.
        ds.run("UPDATE DS.recipes SET price = 2.5 WHERE id = 2").await;
        ds.run("DELETE FROM DS.recipes WHERE id = 3").await;
        ds.run("INSERT INTO DS.recipes VALUES (4, 'tart', 4)").await;
        ds.run("UPDATE DS.recipes SET name = 'soup' WHERE id = 1").await;
        let t2 = ds.now().await;
        let round = TableRound::new(&ds.api, &table, 1, t2);
        let s2 = round.summary(Some(&s1)).await.unwrap();
        let read = TableRound::plan(Some((Since { prev: t1, since: t1 }, &s1)), &s2);
        assert!(matches!(read, Read::Changes { .. }), "{read:?}");
        assert_eq!(
            read_all(&round, &read, s2.digits).await,
            vec![
                row(false, 2, Some("stew"), Some("2.50")),
                row(true, 3, None, None),
                row(false, 4, Some("tart"), Some("4.00"))
            ]
        );
        // Unfiltered, the same rows.
        let all = Read::Changes { prev: t1, since: t1, buckets: None };
        assert_eq!(read_all(&round, &all, s2.digits).await.len(), 3);
        // Their hashes bring the first summary to the one BigQuery computes now, filtered
        // or not: what a round that skips the summary keeps.
        assert_eq!(derived(&round, &all, &s1).await, s2);
        assert_eq!(derived(&round, &read, &s1).await, s2);

        // Nothing since: the summary says so, and nothing is read.
        let t3 = ds.now().await;
        let round = TableRound::new(&ds.api, &table, 1, t3);
        let s3 = round.summary(Some(&s2)).await.unwrap();
        assert_eq!(TableRound::plan(Some((Since { prev: t2, since: t1 }, &s2)), &s3), Read::Nothing);
        // A round is one moment: reading at t1 still shows the first state.
        let back = TableRound::new(&ds.api, &table, 1, t1);
        assert_eq!(read_all(&back, &Read::Everything, 1).await.len(), 3);
        ds.drop().await;
    }

    /// The diff of a round with a settle margin joins both earlier moments: a row inserted
    /// after the margin's start and deleted since the previous round is a delete (it exists
    /// at `prev` only), and a row changed inside the margin is sent again (a commit that
    /// became visible late looks like that).
    #[tokio::test]
    async fn a_round_with_a_margin_deletes_rows_younger_than_the_margin() {
        let ds = Dataset::new("margin").await;
        ds.create_recipes().await;
        ds.run("INSERT INTO DS.recipes VALUES (1, 'soup', 1.5), (2, 'stew', 2.25)").await;
        let since = ds.now().await;
        ds.run("INSERT INTO DS.recipes VALUES (5, 'young', 5)").await;
        ds.run("UPDATE DS.recipes SET name = 'late' WHERE id = 1").await;
        let prev = ds.now().await;
        let s1 = TableRound::new(&ds.api, &ds.table("recipes").await, 1, prev).summary(None).await.unwrap();
        ds.run("DELETE FROM DS.recipes WHERE id = 5").await;
        ds.run("UPDATE DS.recipes SET price = 3 WHERE id = 2").await;
        let now = ds.now().await;
        let table = ds.table("recipes").await;
        let round = TableRound::new(&ds.api, &table, 1, now);
        let s2 = round.summary(Some(&s1)).await.unwrap();
        let read = TableRound::plan(Some((Since { prev, since }, &s1)), &s2);
        assert!(matches!(read, Read::Changes { prev: p, since: s, .. } if p == prev && s == since), "{read:?}");
        let planned = read_all(&round, &read, s2.digits).await;
        assert!(planned.contains(&row(true, 5, None, None)) && planned.len() >= 2, "{planned:?}");
        // Row 1 changed inside the margin: the summaries of `prev` and `now` agree on its
        // bucket, so only an unfiltered diff shows it (a late commit changes the bucket).
        let all = Read::Changes { prev, since, buckets: None };
        assert_eq!(
            read_all(&round, &all, s2.digits).await,
            vec![
                row(false, 1, Some("late"), Some("1.50")),
                row(false, 2, Some("stew"), Some("3.00")),
                row(true, 5, None, None)
            ]
        );
        // The rows sent again for the margin leave the summary as it was.
        assert_eq!(derived(&round, &all, &s1).await, s2);
        // Diffed with `since` alone (the old way), the young row's delete went missing.
        let only_since = Read::Changes { prev: since, since, buckets: None };
        assert!(!read_all(&round, &only_since, s2.digits).await.iter().any(|c| c.deleted));
        ds.drop().await;
    }

    /// A commit that became visible only after the previous round read the table: simulated
    /// by a summary "kept" at a moment before the commit while the previous round's timestamp
    /// is after it (what a round sees when the commit is stamped before its timestamp but
    /// visible later). The diff with the previous round cannot see the row change; the summary
    /// at the previous round, as BigQuery shows it now, differs from the kept one in the row's
    /// bucket, and the margin's diff of that bucket finds the row.
    #[tokio::test]
    async fn a_commit_that_came_late_is_found_through_the_margin() {
        let ds = Dataset::new("late").await;
        ds.create_recipes().await;
        ds.run("INSERT INTO DS.recipes VALUES (1, 'soup', 1.5), (2, 'stew', 2.25), (3, 'pie', 3)").await;
        let table = ds.table("recipes").await;
        let since = ds.now().await;
        let kept = TableRound::new(&ds.api, &table, 1, since).summary(None).await.unwrap();
        ds.run("UPDATE DS.recipes SET name = 'late' WHERE id = 2").await;
        let prev = ds.now().await;
        let now = ds.now().await;
        let round = TableRound::new(&ds.api, &table, 1, now);
        assert!(read_all(&round, &TableRound::diff_first(prev), 1).await.is_empty(), "the diff alone misses it");
        let at_prev = TableRound::new(&ds.api, &table, 1, prev).summary_with(kept.digits).await.unwrap();
        let late = TableRound::late(Since { prev, since }, &kept, &at_prev);
        assert!(matches!(&late, Read::Changes { buckets: Some(b), .. } if b.len() == 1), "{late:?}");
        assert_eq!(read_all(&round, &late, 1).await, vec![row(false, 2, Some("late"), Some("2.25"))]);
        // With the summary the previous round would have kept had it seen the commit, no
        // bucket is late.
        assert_eq!(TableRound::late(Since { prev, since }, &at_prev, &at_prev), Read::Nothing);
        ds.drop().await;
    }

    /// A diff that reaches before what time travel keeps fails with an error the round
    /// recognises (the emulator keeps nothing before a table's creation; BigQuery nothing
    /// before its window), and reads the table whole instead.
    #[tokio::test]
    async fn a_diff_beyond_time_travel_is_recognised() {
        let ds = Dataset::new("beyond").await;
        let before = ds.now().await - 3_600_000_000;
        ds.create_recipes().await;
        ds.run("INSERT INTO DS.recipes VALUES (1, 'soup', 1.5)").await;
        let table = ds.table("recipes").await;
        let round = TableRound::new(&ds.api, &table, 1, ds.now().await);
        let read = Read::Changes { prev: before, since: before, buckets: None };
        let e = match round.read(&read, 1).await {
            Err(e) => e,
            Ok(Some(mut pages)) => pages.next_page().await.map(|_| ()).unwrap_err(),
            Ok(None) => panic!("a diff reads"),
        };
        assert!(beyond_time_travel(&e), "{e}");
        ds.drop().await;
    }

    /// A whole read through the Storage Read API gives exactly the values a REST read gives,
    /// type by type, NULLs and extremes included; a table with a column that has no exact
    /// Arrow form (JSON here; BIGNUMERIC beyond 18 fraction digits on the emulator) is read
    /// over REST even with the endpoint set.
    #[tokio::test]
    async fn a_whole_read_through_the_storage_api_equals_the_rest_read() {
        let ds = Dataset::new("storage").await;
        let grpc = format!(
            "http://127.0.0.1:{}",
            std::env::var("BINFERRY_BQ_GRPC_PORT").ok().and_then(|p| p.parse::<u16>().ok()).unwrap_or(19051)
        );
        ds.run(
            "CREATE TABLE DS.scalars (id INT64, i INT64, f FLOAT64, n NUMERIC, n2 NUMERIC(10, 2), bn BIGNUMERIC(40, 10),
                b BOOL, s STRING, s20 STRING(20), by BYTES, d DATE, dt DATETIME, t TIME, ts TIMESTAMP,
                PRIMARY KEY (id) NOT ENFORCED)",
        )
        .await;
        ds.run(
            "INSERT INTO DS.scalars VALUES
             (1, -9223372036854775808, 0.1, NUMERIC '99999999999999999999999999999.999999999', 12.5,
              BIGNUMERIC '123456789012345678.1234567891', true, 'grüße ☃ \\' \"', 'abc', FROM_HEX('0001ff'),
              DATE '0001-01-01', DATETIME '2024-02-29 23:59:59.999999', TIME '23:59:59.999999',
              TIMESTAMP '2038-01-19 03:14:08.000001 UTC'),
             (2, 9223372036854775807, -1.5e300, NUMERIC '-0.000000001', -0.01, BIGNUMERIC '-1', false, '', '', b'',
              DATE '9999-12-31', DATETIME '1000-01-01 00:00:00', TIME '00:00:00',
              TIMESTAMP '1969-12-31 23:59:59.999999 UTC'),
             (3, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL)",
        )
        .await;
        let table = ds.table("scalars").await;
        assert!(arrow_rows::readable(&table));
        let now = ds.now().await;
        let rest = read_all(&TableRound::new(&ds.api, &table, 1, now), &Read::Everything, 1).await;
        let round = TableRound::new(&ds.api, &table, 1, now).with_storage(Some(&grpc), Moment::AtLeast);
        let Some(Changes { from: RowSource::Storage(_), .. }) = round.read(&Read::Everything, 1).await.unwrap() else {
            panic!("a table of scalars is read through the Storage Read API");
        };
        let storage = read_all(&round, &Read::Everything, 1).await;
        assert_eq!(rest.len(), 3);
        assert_eq!(storage, rest);
        // The emulator ignores the session's snapshot time (a row added after `now` is in a
        // read at `now`), and does not confirm it: a round, which needs its moment exactly,
        // reads over REST there.
        ds.run("INSERT INTO DS.scalars (id) VALUES (4)").await;
        assert_eq!(read_all(&round, &Read::Everything, 1).await.len(), 4);
        let exact = TableRound::new(&ds.api, &table, 1, now).with_storage(Some(&grpc), Moment::Exact);
        let Some(Changes { from: RowSource::Query { .. }, .. }) = exact.read(&Read::Everything, 1).await.unwrap()
        else {
            panic!("a session that does not confirm the round's moment is not read");
        };
        assert_eq!(read_all(&exact, &Read::Everything, 1).await, rest);

        ds.run("CREATE TABLE DS.withjson (id INT64, j JSON, PRIMARY KEY (id) NOT ENFORCED)").await;
        assert!(!arrow_rows::readable(&ds.table("withjson").await));
        ds.drop().await;
    }

    #[tokio::test]
    async fn a_duplicate_key_is_reported_with_the_table() {
        let ds = Dataset::new("dupkey").await;
        ds.run("CREATE TABLE DS.t (id INT64, v STRING, PRIMARY KEY (id) NOT ENFORCED)").await;
        ds.run("INSERT INTO DS.t VALUES (1, 'a'), (1, 'b')").await;
        let table = ds.table("t").await;
        let now = ds.now().await;
        let e = TableRound::new(&ds.api, &table, 1, now).summary(None).await.unwrap_err();
        assert!(e.to_string().contains("share a key"), "{e}");
        assert_eq!(e.table().map(|t| t.name.as_str()), Some("t"));
        // The table is still there: the error is its own, and stops it.
        let e = dropped_meanwhile(&ds.api, &table.table_ref(), e).await;
        assert!(e.to_string().contains("share a key") && !e.is_transient(), "{e}");
        ds.drop().await;
    }

    /// A table dropped after the round listed it fails the round's queries ("Not found"):
    /// the round is read again, as after a transient error, rather than stopping the table
    /// or the pipeline; the next round no longer lists it.
    #[tokio::test]
    async fn a_table_dropped_during_a_round_makes_the_round_read_again() {
        let ds = Dataset::new("dropped").await;
        ds.create_recipes().await;
        ds.run("INSERT INTO DS.recipes VALUES (1, 'soup', 1.5)").await;
        let table = ds.table("recipes").await;
        ds.run("DROP TABLE DS.recipes").await;
        let now = ds.now().await;
        let e = TableRound::new(&ds.api, &table, 1, now).summary(None).await.unwrap_err();
        assert!(!e.is_transient(), "a query of a dropped table is refused: {e}");
        let e = dropped_meanwhile(&ds.api, &table.table_ref(), e).await;
        assert_eq!(e.kind(), ErrorKind::SourceUnavailable, "{e}");
        assert!(e.to_string().contains("was dropped during the round"), "{e}");
        assert!(!ds.api.table_exists(&ds.name, "recipes").await.unwrap());
        ds.drop().await;
    }
}
