//! The end-to-end benchmark: `scripts/bench.sh [--quick]` (see BENCHMARKS.md).
//!
//! Everything runs on this machine against the project's MariaDB (and the tansu broker for
//! the Kafka path), with the release `binferry` binary as users run it. Each scenario gets
//! fresh databases. Results are printed as a Markdown table, peers and baselines next to
//! binferry's numbers with the ratio.
//!
//! Methods, briefly (BENCHMARKS.md explains them):
//! - catch-up: changes are written while binferry is stopped (it took the empty snapshot
//!   first), then binferry starts and the clock runs until a marker row committed last is
//!   visible in the target. The target is then compared with the source, table checksum by
//!   table checksum.
//! - latency: a paced generator commits marker rows and notes when each COMMIT returned; a
//!   poller on the target notes when each row appears (polling every 2 ms).
//! - decode only: the source half of binferry, in process, into a journal that discards.
//! - memory: VmHWM of the binferry process at the end of each run.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use binferry::buffer::{AppendBatch, Journal};
use binferry::config::Config;
use binferry::error::Result as BfResult;
use binferry::position::{Position, SourceCheckpoint};
use binferry::telemetry::Stats;
use mysql_async::prelude::Queryable;
use mysql_async::{Conn, OptsBuilder, Pool};
use tokio::sync::watch;

type AnyResult<T> = std::result::Result<T, Box<dyn std::error::Error + Send + Sync>>;

/// Sizes of one run.
#[derive(Clone, Copy)]
struct Scale {
    catchup_changes: u64,
    snapshot_rows: u64,
    big_txn_rows: u64,
    latency_secs: u64,
    rate_per_s: u64,
    python_events: u64,
    /// Rows of the table `verify-bigquery` copies into the emulator and verifies.
    verify_bigquery_rows: u64,
}

const FULL: Scale = Scale {
    catchup_changes: 1_000_000,
    snapshot_rows: 5_000_000,
    big_txn_rows: 1_000_000,
    latency_secs: 60,
    rate_per_s: 1_000,
    python_events: 30_000,
    verify_bigquery_rows: 200_000,
};
const QUICK: Scale = Scale {
    catchup_changes: 50_000,
    snapshot_rows: 100_000,
    big_txn_rows: 50_000,
    latency_secs: 5,
    rate_per_s: 200,
    python_events: 2_000,
    verify_bigquery_rows: 20_000,
};

/// One line of the results table.
struct Row {
    scenario: String,
    value: f64,
    unit: &'static str,
    note: String,
}

struct Bench {
    port: u16,
    pool: Pool,
    bin: PathBuf,
    root: PathBuf,
    work: tempfile::TempDir,
    kafka: Option<String>,
    /// REST base URL of a BigQuery emulator (`BINFERRY_BENCH_BIGQUERY`).
    bigquery: Option<String>,
    /// A MariaDB serving TLS (`BINFERRY_BENCH_TLS_PORT`, its CA in `BINFERRY_BENCH_TLS_CA`).
    tls_server: Option<(u16, PathBuf)>,
    /// Host name and `tls` table body of both connections in the configs written now.
    connection: (String, String),
    rows: Vec<Row>,
    n: u32,
}

const ITEMS: &str = "CREATE TABLE items (id BIGINT PRIMARY KEY, cat INT NOT NULL, qty INT NOT NULL, \
    price DECIMAL(10,2) NOT NULL, name VARCHAR(64) NOT NULL, note VARCHAR(120) NOT NULL, \
    updated_at TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6) ON UPDATE CURRENT_TIMESTAMP(6), \
    KEY (updated_at))";
const MARKER: &str = "CREATE TABLE marker (id BIGINT PRIMARY KEY, v INT NOT NULL)";
/// Columns of a ~200-byte `items` row from a sequence number `seq`.
const ITEM_VALUES: &str =
    "seq, seq % 100, seq % 1000, (seq % 100000) / 100, CONCAT('item-', seq), REPEAT(CHAR(97 + seq % 26), 110), NOW(6)";

impl Bench {
    fn say(&self, what: &str) {
        eprintln!("[bench] {what}");
    }

    async fn conn(&self) -> AnyResult<Conn> {
        Ok(self.pool.get_conn().await?)
    }

    /// Fresh source and target databases; returns their names.
    async fn databases(&mut self, tag: &str) -> AnyResult<(String, String)> {
        self.n += 1;
        let src = format!("bench_{tag}_{}_{}", std::process::id(), self.n);
        let dst = format!("{src}_dst");
        let mut c = self.conn().await?;
        c.query_drop(format!("DROP DATABASE IF EXISTS `{src}`")).await?;
        c.query_drop(format!("DROP DATABASE IF EXISTS `{dst}`")).await?;
        c.query_drop(format!("CREATE DATABASE `{src}`")).await?;
        Ok((src, dst))
    }

    async fn drop_databases(&self, dbs: &[&str]) -> AnyResult<()> {
        let mut c = self.conn().await?;
        for db in dbs {
            c.query_drop(format!("DROP DATABASE IF EXISTS `{db}`")).await?;
        }
        Ok(())
    }

    fn config(&self, name: &str, src: &str, dst: &str, kafka: bool) -> String {
        let mut cfg = format!(
            r#"
[pipeline]
name = "{name}"
[source]
host = "{host}"
port = {port}
user = "root"
include = ["{src}.*"]
[source.tls]
{tls}
[buffer.embedded]
path = "{dir}/{name}.redb"
[sink.mysql]
host = "{host}"
port = {port}
user = "root"
database = "{dst}"
[sink.mysql.tls]
{tls}
[log]
progress_interval_secs = 5
"#,
            port = self.port,
            dir = self.work.path().display(),
            host = self.connection.0,
            tls = self.connection.1,
        );
        if kafka && let Some(brokers) = &self.kafka {
            cfg.push_str(&format!(
                "[buffer]\nkind = \"kafka\"\n[buffer.kafka]\nbrokers = \"{brokers}\"\ntopic_prefix = \"{name}\"\n"
            ));
        }
        cfg
    }

    fn start(&self, name: &str, cfg: &str) -> AnyResult<Child> {
        let path = self.work.path().join(format!("{name}.toml"));
        std::fs::write(&path, cfg)?;
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.log_path(name))?;
        // BINFERRY_BENCH_PERF=DIR: profile each run with `perf record` into DIR/<name>.data
        // (the peak RSS reported is then perf's, not binferry's).
        let mut cmd = match std::env::var("BINFERRY_BENCH_PERF") {
            Ok(dir) if !dir.is_empty() => {
                let mut c = Command::new("perf");
                c.args(["record", "-g", "-o"]).arg(format!("{dir}/{name}.data")).arg("--").arg(&self.bin);
                c
            }
            _ => Command::new(&self.bin),
        };
        Ok(cmd.args(["run", "--skip-checks", "--config"]).arg(&path).stdout(log.try_clone()?).stderr(log).spawn()?)
    }

    fn log_path(&self, name: &str) -> PathBuf {
        self.work.path().join(format!("{name}.log"))
    }

    async fn wait_log(&self, name: &str, needle: &str, timeout: Duration) -> AnyResult<()> {
        let start = Instant::now();
        loop {
            let log = std::fs::read_to_string(self.log_path(name)).unwrap_or_default();
            if log.contains(needle) {
                return Ok(());
            }
            if start.elapsed() > timeout {
                return Err(format!("{name}: no {needle:?} within {timeout:?}; log:\n{log}").into());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Stop binferry (SIGINT), returning its peak RSS in MB.
    fn stop(&self, mut child: Child) -> AnyResult<f64> {
        let rss = peak_rss_mb(child.id());
        // SAFETY: plain signal to a child we own.
        unsafe {
            libc::kill(child.id() as i32, libc::SIGINT);
        }
        let start = Instant::now();
        while child.try_wait()?.is_none() {
            if start.elapsed() > Duration::from_secs(120) {
                let _ = child.kill();
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(rss)
    }

    async fn wait_marker(&self, dst: &str, id: u64, timeout: Duration) -> AnyResult<()> {
        let mut c = self.conn().await?;
        let start = Instant::now();
        loop {
            let found: Option<u64> =
                c.query_first(format!("SELECT id FROM `{dst}`.marker WHERE id = {id}")).await.unwrap_or(None);
            if found.is_some() {
                return Ok(());
            }
            if start.elapsed() > timeout {
                return Err(format!("marker {id} not in {dst} after {timeout:?}").into());
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    async fn checksums_equal(&self, src: &str, dst: &str, tables: &[&str]) -> AnyResult<bool> {
        let mut c = self.conn().await?;
        for t in tables {
            let q = |db: &str| {
                format!(
                    "SELECT COUNT(*), COALESCE(BIT_XOR(CRC32(CONCAT_WS('#', id, cat, qty, price, name, note))), 0) \
                     FROM `{db}`.`{t}`"
                )
            };
            let a: Option<(u64, u64)> = c.query_first(q(src)).await?;
            let b: Option<(u64, u64)> = c.query_first(q(dst)).await.unwrap_or(None);
            if a != b {
                return Ok(false);
            }
        }
        Ok(true)
    }

    fn push(&mut self, scenario: impl Into<String>, value: f64, unit: &'static str, note: impl Into<String>) {
        let row = Row { scenario: scenario.into(), value, unit, note: note.into() };
        eprintln!("[bench] => {}: {:.1} {} {}", row.scenario, row.value, row.unit, row.note);
        self.rows.push(row);
    }
}

/// The last progress line's `name=value` counter in a binferry log (0 when absent).
fn last_counter(log: &str, name: &str) -> i64 {
    let key = format!("{name}=");
    log.lines()
        .rev()
        .find_map(|l| {
            let at = l.find(&key)? + key.len();
            l[at..].split(|c: char| !c.is_ascii_digit()).next()?.parse().ok()
        })
        .unwrap_or(0)
}

/// The first row of query `sql` on the BigQuery emulator at `url`, as text cells.
async fn bq_first_row(http: &reqwest::Client, url: &str, sql: String) -> AnyResult<Vec<String>> {
    let body = format!("{{\"query\": {}, \"useLegacySql\": false}}", serde_json::Value::String(sql));
    let text = http
        .post(format!("{url}/projects/binferry-test/queries"))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await?
        .text()
        .await?;
    let v: serde_json::Value = serde_json::from_str(&text)?;
    Ok(v["rows"][0]["f"]
        .as_array()
        .map(|a| a.iter().map(|c| c["v"].as_str().unwrap_or("").to_string()).collect())
        .unwrap_or_default())
}

fn peak_rss_mb(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("VmHWM:"))?.split_whitespace().nth(1)?.parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

/// CPU seconds (user + system) a process has used so far.
fn cpu_secs(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { return 0.0 };
    // Fields after the command name (which may contain spaces): state is field 3.
    let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else { return 0.0 };
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    (ticks(11) + ticks(12)) / hz
}

/// The pid of the MariaDB server on `port`.
fn server_pid(port: u16) -> Option<u32> {
    let out = Command::new("pgrep").args(["-f", &format!("mariadbd.*--port={port}")]).output().ok()?;
    String::from_utf8(out.stdout).ok()?.lines().next()?.trim().parse().ok()
}

fn now_us() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_micros() as u64).unwrap_or(0)
}

/// Write `total` row changes into `items`: 40 % inserts in 5,000-row transactions, 1 % as
/// single-row transactions, 40 % updates and 19 % deletes in 5,000-row transactions.
/// Returns the exact number of row changes.
async fn generate(c: &mut Conn, db: &str, total: u64) -> AnyResult<u64> {
    c.query_drop(format!("USE `{db}`")).await?;
    let big = (total * 40 / 100).max(5_000);
    let small = (total / 100).max(10);
    let mut changes = 0;
    let mut next = 1u64;
    while next <= big {
        let end = (next + 4_999).min(big);
        c.query_drop(format!("INSERT INTO items SELECT {ITEM_VALUES} FROM seq_{next}_to_{end}")).await?;
        changes += end - next + 1;
        next = end + 1;
    }
    for i in 0..small {
        let seq = big + 1 + i;
        c.query_drop(format!("INSERT INTO items SELECT {ITEM_VALUES} FROM seq_{seq}_to_{seq}")).await?;
        changes += 1;
    }
    let updates = total * 40 / 100;
    let mut done = 0;
    while done < updates {
        let a = 1 + done % big;
        let b = (a + 4_999).min(big);
        let n: u64 = {
            c.query_drop(format!("UPDATE items SET qty = qty + 1, note = REVERSE(note) WHERE id BETWEEN {a} AND {b}"))
                .await?;
            c.affected_rows()
        };
        done += b - a + 1;
        changes += n;
    }
    let deletes = total.saturating_sub(changes);
    let mut from = 1u64;
    let mut deleted = 0;
    while deleted < deletes && from <= big {
        let to = (from + 4_999).min(from + deletes - deleted - 1).min(big);
        c.query_drop(format!("DELETE FROM items WHERE id BETWEEN {from} AND {to}")).await?;
        deleted += c.affected_rows();
        from = to + 1;
    }
    Ok(changes + deleted)
}

/// A journal that keeps nothing: the source half of binferry measured alone.
struct Discard {
    start: SourceCheckpoint,
}

impl Journal for Discard {
    async fn append(&self, _batch: AppendBatch) -> BfResult<Option<u64>> {
        Ok(None)
    }
    async fn checkpoint(&self) -> BfResult<SourceCheckpoint> {
        Ok(self.start.clone())
    }
    fn unapplied(&self) -> u64 {
        0
    }
}

async fn master_position(c: &mut Conn) -> AnyResult<(String, u64)> {
    let row: Option<mysql_async::Row> = c.query_first("SHOW MASTER STATUS").await?;
    let row = row.ok_or("SHOW MASTER STATUS returned nothing: is the binlog on?")?;
    let file: String = row.get(0).ok_or("no file")?;
    let pos: u64 = row.get(1).ok_or("no position")?;
    Ok((file, pos))
}

impl Bench {
    /// Catch-up through `buffer`, plus decode-only and the decode peers on the same binlog
    /// (first run only), plus the LOAD DATA ceiling.
    async fn catch_up(&mut self, scale: Scale, kafka: bool) -> AnyResult<()> {
        let (tag, label) = if kafka { ("kafka", "Kafka buffer") } else { ("embedded", "embedded buffer") };
        self.catch_up_as(scale, kafka, tag, label, true).await
    }

    /// The embedded catch-up on a server that serves TLS, once with both connections in
    /// clear and once with both over TLS with the certificate verified: the same server, the
    /// same workload, in one run.
    async fn catch_up_tls(&mut self, scale: Scale) -> AnyResult<()> {
        let Some((port, ca)) = self.tls_server.clone() else { return Ok(()) };
        let plain_server = (self.port, self.pool.clone());
        self.port = port;
        self.pool = Pool::new(root_opts(port));
        let verified = format!("mode = \"verify_identity\"\nca_file = \"{}\"", ca.display());
        let runs = [
            ("plain", "embedded buffer, plain connections", "mode = \"disabled\"".to_string()),
            ("tls", "embedded buffer, TLS verify_identity", verified),
        ];
        for (tag, label, tls) in runs {
            // `localhost`: the name the test certificate is issued for; the same for both runs.
            self.connection = ("localhost".into(), tls);
            self.catch_up_as(scale, false, tag, label, false).await?;
        }
        self.connection = default_connection();
        let tls_pool = std::mem::replace(&mut self.pool, plain_server.1);
        self.port = plain_server.0;
        tls_pool.disconnect().await?;
        Ok(())
    }

    async fn catch_up_as(&mut self, scale: Scale, kafka: bool, tag: &str, label: &str, peers: bool) -> AnyResult<()> {
        let (src, dst) = self.databases(&format!("cu{tag}")).await?;
        let mut c = self.conn().await?;
        c.query_drop(format!("USE `{src}`")).await?;
        c.query_drop(ITEMS).await?;
        c.query_drop(MARKER).await?;
        let name = format!("bcu{tag}{}", std::process::id());
        let cfg = self.config(&name, &src, &dst, kafka);
        // The empty snapshot first, so that every change below waits in the binlog.
        let bf = self.start(&name, &cfg)?;
        self.wait_log(&name, "streaming binlog", Duration::from_secs(60)).await?;
        self.stop(bf)?;
        let (file, pos) = master_position(&mut c).await?;
        self.say(&format!(
            "catch-up ({label}): writing {} row changes while binferry is stopped",
            scale.catchup_changes
        ));
        let changes = generate(&mut c, &src, scale.catchup_changes).await?;
        c.query_drop(format!("INSERT INTO `{src}`.marker VALUES (1, 1)")).await?;
        let (end_file, end_pos) = master_position(&mut c).await?;

        let server = server_pid(self.port);
        let server_cpu0 = server.map_or(0.0, cpu_secs);
        let t0 = Instant::now();
        let bf = self.start(&name, &cfg)?;
        self.wait_marker(&dst, 1, Duration::from_secs(1800)).await?;
        let secs = t0.elapsed().as_secs_f64();
        let ours_cpu = cpu_secs(bf.id());
        let server_cpu = server.map_or(0.0, cpu_secs) - server_cpu0;
        let rss = self.stop(bf)?;
        let equal = self.checksums_equal(&src, &dst, &["items"]).await?;
        let rate = changes as f64 / secs;
        self.push(
            format!("catch-up, {label} → MySQL ({changes} changes)"),
            rate,
            "rows/s",
            format!(
                "{secs:.1} s; target equals source: {equal}; CPU: binferry {ours_cpu:.1} s, MariaDB {server_cpu:.1} s \
                 (of {:.1} core-seconds)",
                secs * 2.0
            ),
        );
        self.push(format!("peak RSS, catch-up {label}"), rss, "MB", "");

        if peers && !kafka {
            self.decode_only(&src, (&file, pos), (&end_file, end_pos), changes, scale).await?;
            self.load_data_ceiling(&src, changes, rate).await?;
        }
        self.drop_databases(&[&src, &dst]).await
    }

    /// Catch-up into the BigQuery emulator: rows/s until the marker row is queryable there,
    /// and the query jobs binferry issued per minute meanwhile (MERGEs, DDL, checkpoint reads).
    async fn catch_up_bigquery(&mut self, scale: Scale) -> AnyResult<()> {
        let Some(url) = self.bigquery.clone() else { return Ok(()) };
        // The emulator takes ~4,600 insertAll rows/s: a smaller run says as much.
        let total = scale.catchup_changes.min(100_000);
        let (src, _) = self.databases("cubq").await?;
        let dataset = format!("bench_{}_{}", std::process::id(), self.n);
        let mut c = self.conn().await?;
        c.query_drop(format!("USE `{src}`")).await?;
        c.query_drop(ITEMS).await?;
        c.query_drop(MARKER).await?;
        let name = format!("bcubq{}", std::process::id());
        let cfg = self.bigquery_config(&name, &src, &dataset, &url, "");
        let bf = self.start(&name, &cfg)?;
        self.wait_log(&name, "streaming binlog", Duration::from_secs(60)).await?;
        self.stop(bf)?;
        self.say(&format!(
            "catch-up (embedded → BigQuery emulator): writing {total} row changes while binferry is stopped"
        ));
        let changes = generate(&mut c, &src, total).await?;
        c.query_drop(format!("INSERT INTO `{src}`.marker VALUES (1, 1)")).await?;
        let t0 = Instant::now();
        let bf = self.start(&name, &cfg)?;
        let http = reqwest::Client::new();
        let query = |sql: String| bq_first_row(&http, &url, sql);
        let marker = format!("SELECT COUNT(*) FROM `binferry-test.{dataset}.{src}_marker`");
        loop {
            if query(marker.clone()).await.ok().and_then(|c| c.first().cloned()).as_deref() == Some("1") {
                break;
            }
            if t0.elapsed() > Duration::from_secs(1800) {
                return Err("the marker did not reach BigQuery within 30 minutes".into());
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        let secs = t0.elapsed().as_secs_f64();
        tokio::time::sleep(Duration::from_secs(6)).await; // one more progress line
        let rss = self.stop(bf)?;
        // The counter is per process: the last progress line is the catch-up run's own.
        let jobs = last_counter(&std::fs::read_to_string(self.log_path(&name))?, "bigquery_jobs");
        let src_sum: Option<(u64, String)> =
            c.query_first(format!("SELECT COUNT(*), CAST(SUM(qty) AS CHAR) FROM `{src}`.items")).await?;
        let bq_sum =
            query(format!("SELECT COUNT(*), CAST(SUM(qty) AS STRING) FROM `binferry-test.{dataset}.{src}_items`"))
                .await?;
        let equal = src_sum.map(|(n, s)| vec![n.to_string(), s]) == Some(bq_sum);
        self.push(
            format!("catch-up, embedded buffer → BigQuery emulator ({changes} changes)"),
            changes as f64 / secs,
            "rows/s",
            format!(
                "{secs:.1} s; {jobs} query jobs = {:.1} jobs/min; count and SUM(qty) equal: {equal}; peak RSS {rss:.0} MB",
                jobs as f64 * 60.0 / secs
            ),
        );
        let _ =
            http.delete(format!("{url}/projects/binferry-test/datasets/{dataset}?deleteContents=true")).send().await;
        self.drop_databases(&[&src]).await
    }

    /// The config of run `name` from `src` into `dataset` of the emulator at `url`, with
    /// `extra` lines in `[sink.bigquery]`.
    fn bigquery_config(&self, name: &str, src: &str, dataset: &str, url: &str, extra: &str) -> String {
        self.config(name, src, "unused", false).replace(
            "[sink.mysql]",
            &format!(
                "[sink]\nkind = \"bigquery\"\n[sink.bigquery]\nproject = \"binferry-test\"\ndataset = \"{dataset}\"\n\
                 endpoint = \"{url}\"\n{extra}[sink.mysql]"
            ),
        )
    }

    /// `binferry verify` of a table copied into the BigQuery emulator: in key ranges of a tenth
    /// of the table, and in one range (as a table keyed other than by integers is compared
    /// whole). Time and the verify process's peak RSS.
    async fn verify_bigquery(&mut self, scale: Scale) -> AnyResult<()> {
        let Some(url) = self.bigquery.clone() else { return Ok(()) };
        let rows = scale.verify_bigquery_rows;
        let (src, _) = self.databases("vbq").await?;
        let dataset = format!("bench_{}_{}", std::process::id(), self.n);
        let mut c = self.conn().await?;
        c.query_drop(format!("USE `{src}`")).await?;
        c.query_drop(ITEMS).await?;
        self.say(&format!("verify on BigQuery: copying a {rows}-row table into the emulator"));
        c.query_drop(format!("INSERT INTO items SELECT {ITEM_VALUES} FROM seq_1_to_{rows}")).await?;
        let name = format!("bvbq{}", std::process::id());
        let cfg = self.bigquery_config(&name, &src, &dataset, &url, "");
        let bf = self.start(&name, &cfg)?;
        let http = reqwest::Client::new();
        let count = format!("SELECT COUNT(*) FROM `binferry-test.{dataset}.{src}_items`");
        let t0 = Instant::now();
        while bq_first_row(&http, &url, count.clone()).await.ok().and_then(|c| c.first().cloned())
            != Some(rows.to_string())
        {
            if t0.elapsed() > Duration::from_secs(3600) {
                return Err("the table did not reach BigQuery within an hour".into());
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        // Stopping merges what is left: verify then finds no change in flight.
        self.stop(bf)?;
        let ranges = (rows / 10).max(1);
        for (how, chunk) in
            [(format!("in key ranges of {ranges} rows"), ranges), ("in one range".into(), 1_000_000_000)]
        {
            let path = self.work.path().join(format!("{name}-verify.toml"));
            let extra = format!("verify_chunk_rows = {chunk}\n");
            std::fs::write(&path, self.bigquery_config(&name, &src, &dataset, &url, &extra))?;
            let t = Instant::now();
            let mut child = Command::new(&self.bin)
                .args(["verify", "--table", &format!("{src}.items"), "--config"])
                .arg(&path)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()?;
            // VmHWM only grows: the last reading before the exit is the peak.
            let mut rss = 0.0f64;
            let status = loop {
                rss = rss.max(peak_rss_mb(child.id()));
                if let Some(status) = child.try_wait()? {
                    break status;
                }
                std::thread::sleep(Duration::from_millis(20));
            };
            self.push(
                format!("verify of a {rows}-row table on the BigQuery emulator, {how}"),
                t.elapsed().as_secs_f64(),
                "s",
                format!("exit {:?}; peak RSS of verify {rss:.0} MB", status.code()),
            );
        }
        let _ =
            http.delete(format!("{url}/projects/binferry-test/datasets/{dataset}?deleteContents=true")).send().await;
        self.drop_databases(&[&src]).await
    }

    /// Decode speed over the binlog range `from`..`to` (file, position) holding `changes` rows.
    async fn decode_only(
        &mut self,
        src: &str,
        from: (&str, u64),
        to: (&str, u64),
        changes: u64,
        scale: Scale,
    ) -> AnyResult<()> {
        let ((file, pos), (end_file, end_pos)) = (from, to);
        let cfg = Config::from_toml(&format!(
            "[source]\nport = {}\nuser = \"root\"\ninclude = [\"{src}.*\"]\n[sink.mysql]\nuser = \"root\"\ndatabase = \"unused\"\n",
            self.port
        ))?;
        let settings = binferry::source::SourceSettings::from_config(&cfg)?;
        let mut start = SourceCheckpoint { resume: Some(Position::new(file, pos)), ..Default::default() };
        start.snapshot.complete = true;
        let journal = Arc::new(Discard { start });
        let stats = Arc::new(Stats::default());
        let stop = binferry::shutdown::Shutdown::new();
        let t0 = Instant::now();
        let task = tokio::spawn(binferry::source::run(
            settings,
            journal,
            Arc::clone(&stats),
            stop.clone(),
            binferry::source::control().1,
        ));
        let end = Position::new(end_file, end_pos);
        loop {
            tokio::time::sleep(Duration::from_millis(5)).await;
            let at = stats.source_position();
            if at.as_ref().and_then(|p| p.partial_cmp(&end)).is_some_and(|o| o != std::cmp::Ordering::Less) {
                break;
            }
            if t0.elapsed() > Duration::from_secs(600) {
                return Err("decode-only did not reach the end of the binlog".into());
            }
        }
        let secs = t0.elapsed().as_secs_f64();
        stop.trigger();
        let _ = task.await;
        let events = stats.source_events.load(Ordering::Relaxed);
        let ours = events as f64 / secs;
        self.push(
            "decode only (binferry source, discarding journal)",
            ours,
            "row events/s",
            format!("{events} events in {secs:.2} s"),
        );

        // mariadb-binlog: the C reader, decoding rows to pseudo-SQL (-v).
        let t0 = Instant::now();
        let mut cmd = Command::new("mariadb-binlog");
        cmd.args(["--read-from-remote-server", "--host=127.0.0.1", "--user=root", "-v"])
            .arg(format!("--port={}", self.port))
            .arg(format!("--start-position={pos}"))
            .arg(file)
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if file == end_file {
            cmd.arg(format!("--stop-position={end_pos}"));
        } else {
            cmd.arg("--to-last-log");
        }
        let ok = cmd.status().map(|s| s.success()).unwrap_or(false);
        let secs_c = t0.elapsed().as_secs_f64();
        if ok {
            let rate = changes as f64 / secs_c;
            self.push("decode: mariadb-binlog -v", rate, "row events/s", format!("binferry = {:.2}×", ours / rate));
        } else {
            self.push("decode: mariadb-binlog -v", 0.0, "row events/s", "failed to run");
        }

        // mysql-replication (Python), on a sample: it is ~1,000× slower.
        let py = self.root.join("scripts/peers/pyrepl_decode.py");
        let out = Command::new(self.root.join("scripts/peers.sh"))
            .args(["python", py.to_str().unwrap_or_default()])
            .args([self.port.to_string(), file.to_string(), pos.to_string(), scale.python_events.to_string()])
            .stderr(Stdio::inherit())
            .output();
        match out.ok().filter(|o| o.status.success()).and_then(|o| String::from_utf8(o.stdout).ok()) {
            Some(text) => {
                let rate: f64 = text.trim().parse().unwrap_or(0.0);
                let note = if rate > 0.0 { format!("binferry = {:.0}×", ours / rate) } else { "no rate".into() };
                self.push(
                    format!("decode: mysql-replication (Python), first {} row events", scale.python_events),
                    rate,
                    "row events/s",
                    note,
                );
            }
            None => self.push("decode: mysql-replication (Python)", 0.0, "row events/s", "could not run"),
        }
        Ok(())
    }

    /// The apply ceiling: LOAD DATA of as many ~200-byte rows into the target server.
    async fn load_data_ceiling(&mut self, src: &str, changes: u64, ours: f64) -> AnyResult<()> {
        let tsv = self.work.path().join("items.tsv");
        {
            use std::io::Write as _;
            let mut f = std::io::BufWriter::new(std::fs::File::create(&tsv)?);
            let ts = "2026-11-22 00:00:00.000000";
            for seq in 1..=changes {
                let note: String = std::iter::repeat_n((b'a' + (seq % 26) as u8) as char, 110).collect();
                writeln!(
                    f,
                    "{seq}\t{}\t{}\t{}.{:02}\titem-{seq}\t{note}\t{ts}",
                    seq % 100,
                    seq % 1000,
                    (seq % 100000) / 100,
                    seq % 100
                )?;
            }
        }
        let db = format!("{src}_load");
        let mut c = self.conn().await?;
        c.query_drop(format!("CREATE DATABASE `{db}`")).await?;
        c.query_drop(format!("USE `{db}`")).await?;
        c.query_drop(ITEMS).await?;
        let t0 = Instant::now();
        let status = Command::new(self.root.join("scripts/mariadb.sh"))
            .args(["client", "--local-infile=1", &db, "-e"])
            .arg(format!("LOAD DATA LOCAL INFILE '{}' INTO TABLE items", tsv.display()))
            .status()?;
        let secs = t0.elapsed().as_secs_f64();
        let rate = changes as f64 / secs;
        let note = if status.success() {
            format!("binferry catch-up = {:.0} % of it", 100.0 * ours / rate)
        } else {
            "failed".into()
        };
        self.push(format!("apply ceiling: LOAD DATA of {changes} rows"), rate, "rows/s", note);
        self.drop_databases(&[&db]).await
    }

    /// Steady state: marker rows at a fixed rate; commit-to-visible latency in the target.
    async fn latency(&mut self, scale: Scale) -> AnyResult<()> {
        let (src, dst) = self.databases("lat").await?;
        let mut c = self.conn().await?;
        c.query_drop(format!("USE `{src}`")).await?;
        c.query_drop(MARKER).await?;
        c.query_drop(ITEMS).await?;
        let name = format!("blat{}", std::process::id());
        let cfg = self.config(&name, &src, &dst, false);
        let bf = self.start(&name, &cfg)?;
        self.wait_log(&name, "streaming binlog", Duration::from_secs(60)).await?;
        let (committed, seen) = self.paced_run(&src, &dst, scale).await?;
        let rss = self.stop(bf)?;
        report_latency(self, "binferry, embedded buffer", &committed, &seen, scale);
        self.push("peak RSS, steady state", rss, "MB", "");

        // The polling baseline at the same load: SELECT ... WHERE updated_at > last every
        // second, upserted into the target; deletes are invisible to it.
        let (src2, dst2) = self.databases("poll").await?;
        let mut c = self.conn().await?;
        c.query_drop(format!("USE `{src2}`")).await?;
        c.query_drop(MARKER).await?;
        c.query_drop(ITEMS).await?;
        c.query_drop(format!("CREATE DATABASE `{dst2}`")).await?;
        c.query_drop(format!("CREATE TABLE `{dst2}`.items LIKE `{src2}`.items")).await?;
        c.query_drop(format!("CREATE TABLE `{dst2}`.marker LIKE `{src2}`.marker")).await?;
        c.query_drop(format!("ALTER TABLE `{src2}`.marker ADD COLUMN updated_at TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6) ON UPDATE CURRENT_TIMESTAMP(6), ADD KEY (updated_at)")).await?;
        let (stop_tx, stop_rx) = watch::channel(false);
        let poller = tokio::spawn(poll_copy(self.pool.clone(), src2.clone(), dst2.clone(), stop_rx));
        let (committed, seen) = self.paced_run(&src2, &dst2, scale).await?;
        let _ = stop_tx.send(true);
        let _ = poller.await;
        report_latency(self, "polling updated_at every 1 s (baseline)", &committed, &seen, scale);
        let mut c = self.conn().await?;
        let missed: Option<u64> = c
            .query_first(format!(
                "SELECT COUNT(*) FROM `{dst2}`.items t LEFT JOIN `{src2}`.items s USING (id) WHERE s.id IS NULL"
            ))
            .await?;
        self.push(
            "polling baseline: deleted rows still in its target",
            missed.unwrap_or(0) as f64,
            "rows",
            "binferry: 0 (deletes are binlog events)",
        );
        self.drop_databases(&[&src, &dst, &src2, &dst2]).await
    }

    /// `paced_run` without the item rows (the snapshot benchmark's table is `items`).
    async fn paced_markers(
        &self,
        src: &str,
        dst: &str,
        scale: Scale,
    ) -> AnyResult<(HashMap<u64, u64>, HashMap<u64, u64>)> {
        self.paced(src, dst, scale, false).await
    }

    /// Commit marker rows at `rate_per_s` for `latency_secs` (plus item inserts and deletes),
    /// polling `dst` for them. Returns commit and first-seen times (µs) per marker.
    async fn paced_run(&self, src: &str, dst: &str, scale: Scale) -> AnyResult<(HashMap<u64, u64>, HashMap<u64, u64>)> {
        self.paced(src, dst, scale, true).await
    }

    async fn paced(
        &self,
        src: &str,
        dst: &str,
        scale: Scale,
        items: bool,
    ) -> AnyResult<(HashMap<u64, u64>, HashMap<u64, u64>)> {
        let (stop_tx, stop_rx) = watch::channel(false);
        let watcher = tokio::spawn(watch_markers(self.pool.clone(), dst.to_string(), stop_rx));
        let mut c = self.conn().await?;
        c.query_drop(format!("USE `{src}`")).await?;
        let mut committed = HashMap::new();
        let total = scale.latency_secs * scale.rate_per_s;
        let every = Duration::from_micros(1_000_000 / scale.rate_per_s.max(1));
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        for id in 1..=total {
            tick.tick().await;
            if items && id % 10 == 0 {
                // Some real rows too, half of them deleted again about two seconds later
                // (long enough for a poller to have copied them).
                c.query_drop(format!("INSERT INTO items SELECT {ITEM_VALUES} FROM seq_{id}_to_{id}")).await?;
                let old = id.saturating_sub(2 * scale.rate_per_s);
                if id % 20 == 0 && old > 0 && old % 10 == 0 {
                    c.query_drop(format!("DELETE FROM items WHERE id = {old}")).await?;
                }
            }
            c.query_drop(format!("INSERT INTO marker (id, v) VALUES ({id}, 0)")).await?;
            committed.insert(id, now_us());
        }
        tokio::time::sleep(Duration::from_secs(3)).await;
        let _ = stop_tx.send(true);
        let seen = watcher.await??;
        Ok((committed, seen))
    }
}

/// First-seen time of each marker row in `dst`, polling every 2 ms.
async fn watch_markers(pool: Pool, dst: String, stop: watch::Receiver<bool>) -> AnyResult<HashMap<u64, u64>> {
    let mut c = pool.get_conn().await?;
    let mut seen = HashMap::new();
    let mut last = 0u64;
    while !*stop.borrow() {
        let ids: Vec<u64> =
            c.query(format!("SELECT id FROM `{dst}`.marker WHERE id > {last} ORDER BY id")).await.unwrap_or_default();
        let t = now_us();
        for id in ids {
            seen.entry(id).or_insert(t);
            last = last.max(id);
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    Ok(seen)
}

/// The `updated_at` polling approach: every second, copy rows changed since the last poll.
async fn poll_copy(pool: Pool, src: String, dst: String, stop: watch::Receiver<bool>) -> AnyResult<()> {
    let mut c = pool.get_conn().await?;
    let mut last: String = "1970-01-01 00:00:00".into();
    while !*stop.borrow() {
        let now: Option<String> = c.query_first("SELECT DATE_FORMAT(NOW(6), '%Y-%m-%d %H:%i:%s.%f')").await?;
        let now = now.unwrap_or_default();
        for t in ["items", "marker"] {
            let cols = if t == "marker" { "id, v" } else { "*" };
            c.query_drop(format!(
                "REPLACE INTO `{dst}`.{t} SELECT {cols} FROM `{src}`.{t} WHERE updated_at > '{last}' AND updated_at <= '{now}'"
            ))
            .await?;
        }
        last = now;
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    Ok(())
}

fn report_latency(b: &mut Bench, what: &str, committed: &HashMap<u64, u64>, seen: &HashMap<u64, u64>, scale: Scale) {
    let mut lat: Vec<u64> = committed.iter().filter_map(|(id, c)| seen.get(id).map(|s| s.saturating_sub(*c))).collect();
    lat.sort_unstable();
    let missing = committed.len() - lat.len();
    let pct =
        |p: f64| lat.get(((lat.len() as f64 * p) as usize).min(lat.len().saturating_sub(1))).copied().unwrap_or(0);
    let ms = |us: u64| us as f64 / 1000.0;
    let note = format!(
        "{} tx/s for {} s; p95 {:.0} ms, p99 {:.0} ms, max {:.0} ms{}",
        scale.rate_per_s,
        scale.latency_secs,
        ms(pct(0.95)),
        ms(pct(0.99)),
        ms(lat.last().copied().unwrap_or(0)),
        if missing > 0 { format!("; {missing} never seen") } else { String::new() }
    );
    b.push(format!("latency p50, {what}"), ms(pct(0.50)), "ms", note);
    b.push(format!("latency p99, {what}"), ms(pct(0.99)), "ms", "");
}

impl Bench {
    /// Initial copy of one large table, and the `mariadb-dump | mariadb` baseline.
    async fn snapshot(&mut self, scale: Scale) -> AnyResult<()> {
        let (src, dst) = self.databases("snap").await?;
        let mut c = self.conn().await?;
        c.query_drop(format!("USE `{src}`")).await?;
        c.query_drop(ITEMS).await?;
        self.say(&format!("snapshot: filling a {}-row table", scale.snapshot_rows));
        let mut next = 1;
        while next <= scale.snapshot_rows {
            let end = (next + 99_999).min(scale.snapshot_rows);
            c.query_drop(format!("INSERT INTO items SELECT {ITEM_VALUES} FROM seq_{next}_to_{end}")).await?;
            next = end + 1;
        }
        c.query_drop(MARKER).await?;
        let name = format!("bsnap{}", std::process::id());
        let cfg = self.config(&name, &src, &dst, false);
        let t0 = Instant::now();
        let bf = self.start(&name, &cfg)?;
        // Another table's changes at 200 tx/s while the copy runs (the first part of it).
        self.wait_log(&name, "streaming binlog", Duration::from_secs(60)).await?;
        let during = Scale { rate_per_s: 200, latency_secs: (scale.snapshot_rows / 250_000).clamp(2, 30), ..scale };
        let (committed, seen) = self.paced_markers(&src, &dst, during).await?;
        let copying = !std::fs::read_to_string(self.log_path(&name)).unwrap_or_default().contains("snapshot complete");
        report_latency(
            self,
            &format!("another table during the snapshot{}", if copying { "" } else { " (it ended first)" }),
            &committed,
            &seen,
            during,
        );
        self.wait_log(&name, "snapshot complete", Duration::from_secs(3600)).await?;
        // The snapshot's last chunk commits in the target right after; wait for all rows.
        loop {
            let n: Option<u64> = c.query_first(format!("SELECT COUNT(*) FROM `{dst}`.items")).await.unwrap_or(None);
            if n == Some(scale.snapshot_rows) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let secs = t0.elapsed().as_secs_f64();
        // `verify` of the copied table (no drift expected), next to the running pipeline.
        let t1 = Instant::now();
        let verified = Command::new(&self.bin)
            .args(["verify", "--table", &format!("{src}.items"), "--config"])
            .arg(self.work.path().join(format!("{name}.toml")))
            .output()?;
        let verify_secs = t1.elapsed().as_secs_f64();
        let rss = self.stop(bf)?;
        let ours = scale.snapshot_rows as f64 / secs;

        let dump_db = format!("{src}_dump");
        c.query_drop(format!("CREATE DATABASE `{dump_db}`")).await?;
        let t0 = Instant::now();
        let script = format!(
            "{root}/scripts/mariadb.sh dump --single-transaction {src} items | {root}/scripts/mariadb.sh client {dump_db}",
            root = self.root.display()
        );
        let ok = Command::new("bash").args(["-o", "pipefail", "-c", &script]).status()?.success();
        let dump_secs = t0.elapsed().as_secs_f64();
        let dump_rate = scale.snapshot_rows as f64 / dump_secs;
        self.push(
            format!("snapshot, {} rows (binferry)", scale.snapshot_rows),
            ours,
            "rows/s",
            format!(
                "{secs:.1} s; mariadb-dump | mariadb = {dump_rate:.0} rows/s{}; ratio {:.2}",
                if ok { "" } else { " (FAILED)" },
                ours / dump_rate
            ),
        );
        self.push("snapshot: mariadb-dump | mariadb (baseline)", dump_rate, "rows/s", format!("{dump_secs:.1} s"));
        self.push(
            format!("verify of the {}-row table", scale.snapshot_rows),
            verify_secs,
            "s",
            format!("exit {:?}; the dump baseline copies it in {dump_secs:.1} s", verified.status.code()),
        );
        self.push("peak RSS, snapshot", rss, "MB", "");
        self.drop_databases(&[&src, &dst, &dump_db]).await
    }

    /// One source transaction of `big_txn_rows` rows: memory stays bounded.
    async fn big_transaction(&mut self, scale: Scale) -> AnyResult<()> {
        let (src, dst) = self.databases("big").await?;
        let mut c = self.conn().await?;
        c.query_drop(format!("USE `{src}`")).await?;
        c.query_drop(ITEMS).await?;
        c.query_drop(MARKER).await?;
        let name = format!("bbig{}", std::process::id());
        let cfg = self.config(&name, &src, &dst, false);
        let bf = self.start(&name, &cfg)?;
        self.wait_log(&name, "streaming binlog", Duration::from_secs(60)).await?;
        let t0 = Instant::now();
        c.query_drop(format!("INSERT INTO items SELECT {ITEM_VALUES} FROM seq_1_to_{}", scale.big_txn_rows)).await?;
        c.query_drop("INSERT INTO marker VALUES (1, 1)").await?;
        self.wait_marker(&dst, 1, Duration::from_secs(1800)).await?;
        let secs = t0.elapsed().as_secs_f64();
        let rss = self.stop(bf)?;
        self.push(
            format!("peak RSS, one {}-row transaction", scale.big_txn_rows),
            rss,
            "MB",
            format!("applied in {secs:.1} s ({:.0} rows/s, commit to visible)", scale.big_txn_rows as f64 / secs),
        );
        self.drop_databases(&[&src, &dst]).await
    }
}

fn root_opts(port: u16) -> OptsBuilder {
    OptsBuilder::default().ip_or_hostname("127.0.0.1").tcp_port(port).user(Some("root")).prefer_socket(false)
}

/// The project's server, in clear (it serves no TLS).
fn default_connection() -> (String, String) {
    ("127.0.0.1".into(), "mode = \"disabled\"".into())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> AnyResult<()> {
    let args: Vec<String> = std::env::args().collect();
    let quick = args.iter().any(|a| a == "--quick");
    let only: Option<String> = args.iter().position(|a| a == "--only").and_then(|i| args.get(i + 1).cloned());
    let mut scale = if quick { QUICK } else { FULL };
    // A smaller snapshot for a quicker look (profiling, trying a change); BENCHMARKS.md
    // numbers use the default.
    if let Some(rows) = std::env::var("BINFERRY_BENCH_SNAPSHOT_ROWS").ok().and_then(|r| r.parse().ok()) {
        scale.snapshot_rows = rows;
    }
    let port: u16 = std::env::var("BINFERRY_MARIADB_PORT").ok().and_then(|p| p.parse().ok()).unwrap_or(3407);
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let bin = std::env::var("BINFERRY_BIN").map(PathBuf::from).unwrap_or_else(|_| {
        let target = std::env::var("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|_| root.join("target"));
        target.join("release/binferry")
    });
    if !Path::new(&bin).exists() {
        return Err(format!("{} not found: build it with `cargo build --release`", bin.display()).into());
    }
    let tls_server = match (std::env::var("BINFERRY_BENCH_TLS_PORT"), std::env::var("BINFERRY_BENCH_TLS_CA")) {
        (Ok(port), Ok(ca)) if !port.is_empty() => Some((port.parse()?, PathBuf::from(ca))),
        _ => None,
    };
    let mut b = Bench {
        port,
        pool: Pool::new(root_opts(port)),
        bin,
        root,
        work: tempfile::tempdir()?,
        kafka: std::env::var("BINFERRY_BENCH_KAFKA").ok().filter(|s| !s.is_empty()),
        bigquery: std::env::var("BINFERRY_BENCH_BIGQUERY").ok().filter(|s| !s.is_empty()),
        tls_server,
        connection: default_connection(),
        rows: Vec::new(),
        n: 0,
    };
    let run = |s: &str| only.as_deref().is_none_or(|o| o == s);
    if run("catchup") {
        b.catch_up(scale, false).await?;
        if b.kafka.is_some() {
            b.catch_up(scale, true).await?;
        }
    }
    if (run("catchup") || run("catchup-bigquery")) && b.bigquery.is_some() {
        b.catch_up_bigquery(scale).await?;
    }
    if run("verify-bigquery") && b.bigquery.is_some() {
        b.verify_bigquery(scale).await?;
    }
    if run("catchup-tls") {
        b.catch_up_tls(scale).await?;
    }
    if run("latency") {
        b.latency(scale).await?;
    }
    if run("snapshot") {
        b.snapshot(scale).await?;
    }
    if run("bigtxn") {
        b.big_transaction(scale).await?;
    }
    println!("| scenario | result | unit | notes |");
    println!("|---|---:|---|---|");
    for r in &b.rows {
        let cell = |s: &str| s.replace('|', "\\|");
        println!("| {} | {:.1} | {} | {} |", cell(&r.scenario), r.value, r.unit, cell(&r.note));
    }
    b.pool.disconnect().await?;
    Ok(())
}
