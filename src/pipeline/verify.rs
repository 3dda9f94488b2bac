//! `binferry verify`: compare every replicated table of the source with the target by row
//! hash, and say which keys differ (missing, extra, different).
//!
//! It runs beside `run`. A key can differ only because its change is still in flight (read
//! by the reader, not yet committed by the writer), so differing tables are read again,
//! up to [`ROUNDS`] times, each time once the running process reports that it has caught up
//! (lag 0 and nothing in its buffer); a key is drift only when it differs every time. With
//! no running process nothing is in flight and one round decides.
//!
//! With a MySQL target, a table keyed in order is compared one key range at a time (the
//! chunk boundaries of the snapshot, read from the source's key index; the target's key
//! columns have the source's types and collations, so the same range selects the same keys):
//! memory stays at one chunk, and only a chunk that differs is read again. Other tables, and
//! every table on BigQuery (which orders strings by bytes), are read whole. With
//! `--repair` it sends the drifted keys to the running process (`POST /repair`), waits until
//! they are applied, and compares those tables again.
//!
//! With a BigQuery source, each table is read whole from BigQuery at one moment and hashed as
//! the writer hashes rows (`source::bigquery::TableReader`); `--repair` is refused there
//! (`binferry resync --table` copies a drifted table again).

use std::time::Duration;

use serde::Serialize;
use tracing::info;

use super::row_progress::RowProgress;
use crate::config::{Config, DEFAULT_BIGQUERY_VERIFY_CHUNK_ROWS, SourceKind};
use crate::drift::{Drift, HeldAs, KeyBounds, TableHashes, as_is, diff};
use crate::error::{Error, ErrorKind, Result, Scope};
use crate::schema::{TableRef, TableSchema};
use crate::sink::TargetSettings;
use crate::sink::mysql::HashOf;
use crate::source::bigquery::{BigQuerySourceSettings, TableReader};
use crate::source::{HashChunks, Repaired, SourceSettings, hash_chunks, table_hashes, verified_tables};
use crate::status::RunOutcome;
use crate::table_filter::TableFilter;

/// Reads of a differing table (or chunk) before its differences count as drift.
const ROUNDS: usize = 3;

/// What `verify` found.
#[derive(Clone, Debug, Default, Serialize)]
pub struct VerifyReport {
    /// One entry per table compared.
    pub tables: Vec<TableVerdict>,
}

/// One table's comparison.
#[derive(Clone, Debug, Default, Serialize)]
pub struct TableVerdict {
    /// `db.table` in the source.
    pub table: String,
    /// Rows in the source.
    pub source_rows: u64,
    /// Rows in the target (not soft-deleted).
    pub target_rows: u64,
    /// How many times it was read (more than once when it differed at first); for a table
    /// compared in chunks, the most any chunk was read.
    pub rounds: usize,
    /// Key ranges it was compared in (1: whole).
    pub chunks: u64,
    /// The keys that still differ.
    pub drift: Drift,
    /// Why the table could not be compared (a value or shape the source cannot read, a table
    /// its rule refuses); the other tables are compared all the same.
    pub not_compared: Option<String>,
    /// With `--repair`: what the repair wrote.
    pub repaired: Option<Repaired>,
    /// With `--repair`: what still differs when compared again after the repair was applied.
    pub after_repair: Option<Drift>,
    /// The table, for the repair request.
    #[serde(skip)]
    table_ref: Option<TableRef>,
}

impl VerifyReport {
    /// Whether any table drifted.
    pub fn drifted(&self) -> bool {
        self.tables.iter().any(|t| !t.drift.is_empty())
    }

    /// Whether drift remains: found and not repaired (or found again after the repair).
    pub fn drift_remains(&self) -> bool {
        self.tables.iter().any(|t| match &t.after_repair {
            Some(after) => !after.is_empty(),
            None => !t.drift.is_empty(),
        })
    }

    /// Whether some table could not be compared.
    pub fn incomplete(&self) -> bool {
        self.tables.iter().any(|t| t.not_compared.is_some())
    }

    /// Text for people: one line per table, then the drifted keys (at most `shown` each).
    pub fn render_text(&self, shown: usize) -> String {
        let mut out = String::new();
        for t in &self.tables {
            if let Some(why) = &t.not_compared {
                out.push_str(&format!("{}: NOT COMPARED: {why}\n", t.table));
                continue;
            }
            let verdict =
                if t.drift.is_empty() { "equal".to_string() } else { format!("DRIFT: {} keys", t.drift.len()) };
            let chunks = if t.chunks > 1 { format!(" (in {} key ranges)", t.chunks) } else { String::new() };
            out.push_str(&format!(
                "{}: {} source rows, {} target rows{chunks}: {verdict}\n",
                t.table, t.source_rows, t.target_rows
            ));
            for (what, keys) in [
                ("missing in the target", &t.drift.missing),
                ("only in the target", &t.drift.extra),
                ("different", &t.drift.different),
                ("keyless", &t.drift.keyless),
            ] {
                if keys.is_empty() {
                    continue;
                }
                let more = keys.len().saturating_sub(shown);
                let list = keys.iter().take(shown).cloned().collect::<Vec<_>>().join("; ");
                let more = if more > 0 { format!(" (and {more} more)") } else { String::new() };
                out.push_str(&format!("  {what}: {list}{more}\n"));
            }
            if let Some(r) = &t.repaired {
                out.push_str(&format!("  repaired: {} rewritten, {} deleted", r.rewritten, r.deleted));
                if r.kept > 0 {
                    out.push_str(&format!(", {} left in the soft-delete table (delete them by hand)", r.kept));
                }
                out.push('\n');
            }
            match &t.after_repair {
                Some(after) if after.is_empty() => out.push_str("  after the repair: equal\n"),
                Some(after) => out.push_str(&format!("  after the repair: still DRIFT: {} keys\n", after.len())),
                None => {}
            }
        }
        let drifted = self.tables.iter().filter(|t| !t.drift.is_empty()).count();
        let skipped = self.tables.iter().filter(|t| t.not_compared.is_some()).count();
        if skipped > 0 {
            out.push_str(&format!("{skipped} tables not compared\n"));
        }
        if drifted == 0 {
            out.push_str(&format!("no drift in {} tables\n", self.tables.len()));
        } else if self.tables.iter().any(|t| t.after_repair.is_some()) && !self.drift_remains() {
            out.push_str(&format!("drift in {drifted} of {} tables, repaired\n", self.tables.len()));
        } else {
            out.push_str(&format!(
                "drift in {drifted} of {} tables; to repair: `binferry verify --repair` (just the drifted keys) or \
                 `binferry resync --table DB.TABLE`, both while run runs\n",
                self.tables.len()
            ));
        }
        out
    }
}

/// Compare the tables `pattern` selects (all replicated tables without one); `wait` bounds
/// each wait for the running process to catch up.
pub async fn verify(config: &Config, pattern: Option<&str>, wait: Duration, repair: bool) -> Result<VerifyReport> {
    let bigquery = config.source.kind == SourceKind::Bigquery;
    if bigquery && repair {
        return Err(Error::new(
            ErrorKind::Config,
            "`binferry verify --repair` rewrites keys through a MySQL source; source.kind = \"bigquery\" repairs whole \
             tables",
        )
        .with_hint("run `binferry verify` to find the drifted tables, then `binferry resync --table DATASET.TABLE`"));
    }
    let target = TargetSettings::from_config(config)?;
    let only = pattern.map(|p| TableFilter::only("--table", &[p.to_string()])).transpose()?;
    let record = super::runs::RunRecord::start(&target, "verify").await;
    let result = if bigquery {
        compare_bigquery(config, &target, only.as_ref(), wait).await
    } else {
        match SourceSettings::from_config(config) {
            Ok(source) => {
                let mut result = compare_all(config, &source, &target, only.as_ref(), wait).await;
                if repair && let Ok(report) = &mut result {
                    if let Err(e) = repair_all(config, &source, &target, report, wait).await {
                        result = Err(e);
                    }
                }
                result
            }
            Err(e) => Err(e),
        }
    };
    match &result {
        Ok(r) if r.drifted() => {
            let drifted: Vec<&str> =
                r.tables.iter().filter(|t| !t.drift.is_empty()).map(|t| t.table.as_str()).collect();
            let what = format!("drift in {}", drifted.join(", "));
            record.finish_as(RunOutcome::Drift, 0, Some(&what)).await;
        }
        Ok(_) => record.finish(None, 0).await,
        Err(e) => record.finish(Some(e), 0).await,
    }
    result
}

async fn compare_all(
    config: &Config,
    source: &SourceSettings,
    target: &TargetSettings,
    only: Option<&TableFilter>,
    wait: Duration,
) -> Result<VerifyReport> {
    let mut report = VerifyReport::default();
    let tables = verified_tables(source, only).await?;
    let keys: Vec<String> = tables.iter().map(|t| t.key()).collect();
    let estimate = super::row_progress::estimate_rows(config, &keys).await.unwrap_or(0);
    let mut progress = RowProgress::new(format!("verify {} tables", tables.len()), estimate);
    for table in tables {
        let mut verdict =
            TableVerdict { table: table.to_string(), table_ref: Some(table.clone()), ..Default::default() };
        // One chunk's rows, twice (a side each), in memory: on MySQL the snapshot's chunk;
        // on BigQuery larger ones, each a query job.
        let rows = match target {
            TargetSettings::Mysql(_) => config.snapshot.chunk_rows,
            TargetSettings::BigQuery(_) => {
                config.sink.bigquery.as_ref().map_or(DEFAULT_BIGQUERY_VERIFY_CHUNK_ROWS, |b| b.verify_chunk_rows)
            }
        };
        let chunks = match hash_chunks(source, &table, rows, held_as(target)).await {
            Ok(Some(c)) if in_ranges(target, c.schema()) => Some(c),
            Ok(_) => None,
            Err(e) if not_comparable(&e) => {
                verdict.not_compared = Some(e.to_string());
                report.tables.push(verdict);
                continue;
            }
            Err(e) => return Err(e),
        };
        match chunks {
            Some(chunks) => match compare_chunks(config, target, chunks, &mut verdict, wait, &mut progress).await {
                Ok(()) => {}
                // A key the target's text cannot give back (BigQuery): this table only.
                Err(e) if e.kind() == ErrorKind::Unsupported => verdict.not_compared = Some(e.to_string()),
                Err(e) => return Err(e),
            },
            None => {
                compare_whole(config, Origin::Mysql(source), target, &table, &mut verdict, wait).await?;
                progress.add(verdict.source_rows);
            }
        }
        report.tables.push(verdict);
    }
    progress.finish();
    Ok(report)
}

/// Compare the mirrored BigQuery tables with MySQL, each whole: BigQuery's rows at one
/// moment, hashed as the writer hashes them, against the hashes MySQL stores.
async fn compare_bigquery(
    config: &Config,
    target: &TargetSettings,
    only: Option<&TableFilter>,
    wait: Duration,
) -> Result<VerifyReport> {
    let reader = TableReader::connect(BigQuerySourceSettings::from_config(config)?).await?;
    let tables = reader.tables(only).await?;
    let mut progress = RowProgress::new(format!("verify {} tables", tables.len()), 0);
    let mut report = VerifyReport::default();
    for table in tables {
        let mut verdict =
            TableVerdict { table: table.to_string(), table_ref: Some(table.clone()), ..Default::default() };
        compare_whole(config, Origin::BigQuery(&reader), target, &table, &mut verdict, wait).await?;
        progress.add(verdict.source_rows);
        report.tables.push(verdict);
    }
    progress.finish();
    Ok(report)
}

/// Compare one table chunk by chunk (tables keyed in an order both sides share): memory stays at
/// one chunk, and a chunk that differs is read again alone, on both sides, once the running
/// pipeline has caught up, up to [`ROUNDS`] times.
async fn compare_chunks(
    config: &Config,
    target: &TargetSettings,
    mut chunks: HashChunks,
    verdict: &mut TableVerdict,
    wait: Duration,
    progress: &mut RowProgress,
) -> Result<()> {
    let schema = chunks.schema().clone();
    verdict.rounds = 1;
    while let Some((bounds, mut s)) = chunks.next().await? {
        verdict.chunks += 1;
        let mut t = target_hashes(target, &schema, Some(&bounds), HashOf::Values).await?;
        let mut drift = diff(&s, &t);
        let mut round = 1;
        while !drift.is_empty() && round < ROUNDS {
            info!(table = %schema.table, keys = drift.len(), round, "keys of a chunk differ; reading it again once the running pipeline has caught up");
            if !super::process::caught_up(config, wait).await {
                break;
            }
            settle(config).await;
            round += 1;
            s = chunks.read(&bounds).await?;
            t = target_hashes(target, &schema, Some(&bounds), HashOf::Values).await?;
            drift = diff(&s, &t);
        }
        verdict.rounds = verdict.rounds.max(round);
        verdict.source_rows += s.rows();
        verdict.target_rows += t.rows();
        verdict.drift.extend(drift);
        progress.add(s.rows());
    }
    Ok(())
}

/// Where [`compare_whole`] reads a table's rows.
#[derive(Clone, Copy)]
enum Origin<'a> {
    /// The MySQL/MariaDB source of a binlog pipeline.
    Mysql(&'a SourceSettings),
    /// The BigQuery source of a round pipeline.
    BigQuery(&'a TableReader),
}

impl Origin<'_> {
    /// What the target's hashes are taken from: a BigQuery source's values are not in the
    /// MySQL column's form (a NUMERIC's scale), so its rows compare by the stored hash.
    fn hash_of(self) -> HashOf {
        match self {
            Origin::Mysql(_) => HashOf::Values,
            Origin::BigQuery(_) => HashOf::Stored,
        }
    }

    /// The table's shape in the target and its rows' hashes at one moment; `None` when the
    /// table was dropped since it was listed (BigQuery).
    async fn table_hashes(self, table: &TableRef, held: HeldAs) -> Result<Option<(TableSchema, TableHashes)>> {
        match self {
            Origin::Mysql(source) => table_hashes(source, table, held).await.map(Some),
            Origin::BigQuery(reader) => reader.table_hashes(table).await,
        }
    }

    /// Wait until a change made at the source before the last read has reached the target:
    /// false when the running process did not catch up within `wait` (no use reading again).
    async fn passed_on(self, config: &Config, wait: Duration) -> bool {
        if !super::process::caught_up(config, wait).await {
            return false;
        }
        match self {
            Origin::Mysql(_) => {
                settle(config).await;
                true
            }
            // A change made in BigQuery just before the read enters the next round, which may
            // start only now.
            Origin::BigQuery(reader) => {
                tokio::time::sleep(reader.round_period()).await;
                super::process::caught_up(config, wait).await
            }
        }
    }
}

/// Compare one table whole (keyless tables, keys that cannot be read in order, a BigQuery
/// source or target), reading it again while it differs once the running pipeline has passed
/// on what the source had at the read, up to [`ROUNDS`] times.
async fn compare_whole(
    config: &Config,
    origin: Origin<'_>,
    target: &TargetSettings,
    table: &TableRef,
    verdict: &mut TableVerdict,
    wait: Duration,
) -> Result<()> {
    verdict.chunks = 1;
    for round in 1..=ROUNDS {
        let (schema, s) = match origin.table_hashes(table, held_as(target)).await {
            Ok(Some(read)) => read,
            Ok(None) => {
                verdict.not_compared = Some("dropped at the source while verify ran".into());
                return Ok(());
            }
            // One table the source cannot read (as the snapshot or a round would stop it)
            // stops only its own comparison.
            Err(e) if not_comparable(&e) => {
                verdict.not_compared = Some(e.to_string());
                return Ok(());
            }
            Err(e) => return Err(e),
        };
        let t = match target_hashes(target, &schema, None, origin.hash_of()).await {
            Ok(t) => t,
            // A key type the target's text cannot give back exactly (BigQuery).
            Err(e) if e.kind() == ErrorKind::Unsupported => {
                verdict.not_compared = Some(e.to_string());
                return Ok(());
            }
            Err(e) => return Err(e),
        };
        verdict.rounds = round;
        verdict.source_rows = s.rows();
        verdict.target_rows = t.rows();
        verdict.drift = diff(&s, &t);
        if verdict.drift.is_empty() || round == ROUNDS {
            break;
        }
        let keys = verdict.drift.len();
        info!(%table, keys, round, "keys differ; reading again once the running pipeline has passed them on");
        if !origin.passed_on(config, wait).await {
            break;
        }
    }
    Ok(())
}

/// A source's error that stops one table (as replicating it would), not the whole verify.
fn not_comparable(e: &Error) -> bool {
    e.kind() == ErrorKind::Decode || e.kind().scope() == Scope::Table
}

/// Rewrite every drifted key through the running process (`POST /repair`), wait until it is
/// applied, and compare each repaired table again.
async fn repair_all(
    config: &Config,
    source: &SourceSettings,
    target: &TargetSettings,
    report: &mut VerifyReport,
    wait: Duration,
) -> Result<()> {
    let mut repaired_any = false;
    for verdict in report.tables.iter_mut().filter(|t| !t.drift.keys.is_empty()) {
        let Some(table) = verdict.table_ref.clone() else { continue };
        let body = serde_json::json!({ "db": table.db, "table": table.name, "keys": verdict.drift.keys });
        let done: Repaired = super::process::post(config, "/repair", &body).await?;
        info!(%table, rewritten = done.rewritten, deleted = done.deleted, kept = done.kept, "repair sent");
        verdict.repaired = Some(done);
        repaired_any = true;
    }
    if !repaired_any {
        return Ok(());
    }
    if !super::process::caught_up(config, wait).await {
        return Err(Error::new(
            ErrorKind::TargetUnavailable,
            "the repair is in the buffer but was not applied in time",
        )
        .with_hint("raise --wait-secs, or verify again once `binferry status` shows the lag at 0"));
    }
    settle(config).await;
    for verdict in report.tables.iter_mut().filter(|t| t.repaired.is_some()) {
        let Some(table) = verdict.table_ref.clone() else { continue };
        let (schema, s) = table_hashes(source, &table, held_as(target)).await?;
        let t = target_hashes(target, &schema, None, HashOf::Values).await?;
        verdict.after_repair = Some(diff(&s, &t));
    }
    Ok(())
}

/// Whether `target` selects the same keys as the source for a key range of `schema`: a MySQL
/// target has the source's key types and collations; BigQuery only for integer keys.
fn in_ranges(target: &TargetSettings, schema: &TableSchema) -> bool {
    match target {
        TargetSettings::Mysql(_) => true,
        TargetSettings::BigQuery(_) => crate::sink::bigquery::compares_in_ranges(schema),
    }
}

/// The form `target` holds a source's values in (compared with the values read back from it).
fn held_as(target: &TargetSettings) -> HeldAs {
    match target {
        TargetSettings::Mysql(_) => as_is,
        TargetSettings::BigQuery(_) => crate::sink::bigquery::as_held,
    }
}

/// The target's row hashes of the table of `schema`: of the values it holds, except on a
/// MySQL target where `of` says the stored hashes (`sink::mysql::HashOf`).
async fn target_hashes(
    target: &TargetSettings,
    schema: &TableSchema,
    bounds: Option<&KeyBounds>,
    of: HashOf,
) -> Result<TableHashes> {
    match target {
        TargetSettings::Mysql(m) => crate::sink::mysql::table_hashes(m, schema, bounds, of).await,
        // Ranges only where `in_ranges` allows: the caller's chunks.
        TargetSettings::BigQuery(b) => crate::sink::bigquery::table_hashes(b, schema, bounds).await,
    }
}

/// After the writer has committed, a BigQuery target applies its changelog at the next
/// scheduled MERGE: wait for it before reading again.
async fn settle(config: &Config) {
    if let Some(bq) = &config.sink.bigquery
        && config.sink.kind == crate::config::SinkKind::BigQuery
    {
        tokio::time::sleep(Duration::from_secs(bq.merge_interval_secs + 1)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_names_each_table_and_the_drifted_keys() {
        let mut report = VerifyReport::default();
        report.tables.push(TableVerdict {
            table: "d.a".into(),
            source_rows: 3,
            target_rows: 3,
            rounds: 1,
            ..Default::default()
        });
        assert!(report.render_text(5).ends_with("no drift in 1 tables\n"));
        let drift = Drift {
            missing: vec!["1".into(), "2".into(), "3".into()],
            different: vec!["7".into()],
            ..Default::default()
        };
        report.tables.push(TableVerdict {
            table: "d.b".into(),
            source_rows: 5,
            target_rows: 2,
            rounds: 3,
            drift,
            ..Default::default()
        });
        report.tables.push(TableVerdict {
            table: "d.c".into(),
            not_compared: Some("unsupported: table d.c has no primary key".into()),
            ..Default::default()
        });
        let text = report.render_text(2);
        assert!(report.drifted());
        assert!(text.contains("d.b: 5 source rows, 2 target rows: DRIFT: 4 keys"), "{text}");
        assert!(text.contains("missing in the target: 1; 2 (and 1 more)"), "{text}");
        assert!(text.contains("different: 7"), "{text}");
        assert!(text.contains("d.c: NOT COMPARED: unsupported"), "{text}");
        assert!(text.contains("1 tables not compared"), "{text}");
        assert!(text.contains("drift in 1 of 3 tables"), "{text}");
        assert!(report.incomplete());
    }
}
