//! The BigQuery target end to end: MariaDB → embedded log or Kafka → the local BigQuery
//! emulator (`scripts/bigquery.sh`), compared value by value with queries on both sides.
//!
//! The emulator is DuckDB underneath: it holds decimals of at most 38 digits, so the type
//! matrix stays within that (BigQuery itself takes BIGNUMERIC up to 76 digits).

mod common;

use std::time::Duration;

use common::workload::{Workload, create_schema};
use common::{Binferry, Env};
use mysql_async::prelude::Queryable;
use rand::Rng;

/// How long a test waits for BigQuery to equal the source. Generous: the emulator (DuckDB
/// underneath) serves all of this file's tests at once on two cores, and a MERGE that takes
/// 1 s alone takes several under that load. A passing test stops waiting as soon as the
/// tables are equal.
const CONVERGE: Duration = Duration::from_secs(300);

/// The same after repeated SIGKILLs through Kafka's key layout: four partitions' worth of
/// MERGE jobs are redone after each kill, and in a full suite run (2026-11-29) the last
/// restart took more than 300 s of this load to catch up. A lost row never converges, so
/// the longer bound only costs time when the test fails.
const KILL_CONVERGE: Duration = Duration::from_secs(600);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mixed_workload_then_replay_from_zero_changes_nothing() {
    let mut env = Env::new("bqmixed").await;
    env.use_bigquery();
    let mut c = env.conn().await;
    create_schema(&mut c, &env.src).await;
    c.query_drop(format!("CREATE TABLE `{}`.empty (id INT PRIMARY KEY, v INT)", env.src)).await.unwrap();
    let mut w = Workload::new(&env.src, 21);
    w.seed(&mut c, 200).await;
    let bf = env.start();
    w.run(&mut c, 3_000).await;
    env.wait_bq_equal(CONVERGE).await;
    // An empty source table has its BigQuery table from its copy on, not from its first row.
    let table = common::bigquery::bq_table(&env.src, "empty");
    let empty = format!("SELECT COUNT(*) FROM `{}.{}.{table}`", common::bigquery::PROJECT, env.dst);
    let start = std::time::Instant::now();
    while env.bq(&empty).await != Ok(vec![vec![Some("0".to_string())]]) {
        assert!(start.elapsed() < CONVERGE, "no BigQuery table for `empty`\n{}", env.log_tails());
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let status = bf.interrupt(Duration::from_secs(60));
    assert!(status.success(), "exit status {status:?}\n{}", env.log());
    // `status` reads the same facts from BigQuery as from MySQL: progress and the run registry.
    let json = env.status_json();
    assert_eq!(json["target"]["streams"][0]["stream"], "embedded", "{json}");
    assert_eq!(json["target"]["runs"][0]["outcome"], "ok", "{json}");
    assert!(json["target"]["runs"][0]["rows"].as_u64().unwrap_or(0) > 0, "{json}");
    assert_eq!(json["errors"], serde_json::json!([]), "{json}");
    let deleted: Vec<u64> = c.query("SELECT COUNT(*) FROM ingredients").await.unwrap();
    assert!(deleted[0] > 0);

    let before = by_row(env.bq_dump().await);
    assert!(!before.is_empty());
    let out = env.replay(&["--from-offset", "0"]);
    assert!(out.contains("replayed"), "{out}");
    let after = by_row(env.bq_dump().await);
    // The same rows, values and hashes. A row's position may move forward, never back: a
    // MERGE writes nothing for a change whose hash equals the row's, and the chunked copy
    // re-reads rows the stream wrote first (same values, newer position); a replay rewrites
    // at equal or newer positions, so such a row takes its newest change's position.
    assert_eq!(
        after.keys().collect::<Vec<_>>(),
        before.keys().collect::<Vec<_>>(),
        "replay from offset 0 changed the BigQuery tables' rows"
    );
    for (row, pos) in &after {
        assert!(pos >= &before[row], "replay moved {row} back from {:?} to {pos:?}", before[row]);
    }
    assert_eq!(env.bq_diff().await, None);
}

/// Each BigQuery row (as JSON, without `_binferry_pos`) with its position's bytes.
fn by_row(dump: Vec<Vec<Option<String>>>) -> std::collections::BTreeMap<String, Vec<u8>> {
    dump.into_iter()
        .flatten()
        .flatten()
        .map(|json| {
            let mut row: serde_json::Value = serde_json::from_str(&json).unwrap_or_else(|e| panic!("{json}: {e}"));
            let pos = row.as_object_mut().and_then(|o| o.remove("_binferry_pos"));
            let pos = pos.as_ref().and_then(|p| p.as_str()).unwrap_or_else(|| panic!("no _binferry_pos in {json}"));
            (row.to_string(), escaped_bytes(pos))
        })
        .collect()
}

/// The bytes of the emulator's text form of BYTES: `\xNN` for a byte, other characters as
/// their UTF-8.
fn escaped_bytes(text: &str) -> Vec<u8> {
    let mut out = Vec::new();
    let mut rest = text;
    while !rest.is_empty() {
        if let Some(hex) = rest.strip_prefix("\\x").and_then(|r| r.get(..2))
            && let Ok(b) = u8::from_str_radix(hex, 16)
        {
            out.push(b);
            rest = &rest[4..];
            continue;
        }
        let c = rest.chars().next().unwrap_or_default();
        let mut buf = [0; 4];
        out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
        rest = &rest[c.len_utf8()..];
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mixed_workload_through_kafka_to_bigquery() {
    let mut env = Env::new("bqkafka").await;
    // The key layout spreads every table over the 4 partitions: 4 streams, each with its own
    // writer and sink, change the same BigQuery tables.
    env.use_kafka("key");
    env.use_bigquery();
    let mut c = env.conn().await;
    create_schema(&mut c, &env.src).await;
    let mut w = Workload::new(&env.src, 22);
    w.seed(&mut c, 100).await;
    let started = std::time::Instant::now();
    let bf = env.start();
    w.run(&mut c, 2_000).await;
    env.wait_bq_equal(CONVERGE).await;
    let status = bf.interrupt(Duration::from_secs(60));
    let secs = started.elapsed().as_secs();
    assert!(status.success(), "exit status {status:?}\n{}", env.log());
    assert!(env.log().contains("partition assigned"), "the changes did not go through Kafka");
    // The process's sinks share one MERGE schedule: at most one MERGE job per interval (1 s
    // here) for all partitions together, plus the one at drain. (A schedule per partition
    // would allow four per interval.)
    let merges = env.last_counter("bigquery_merges").expect("a progress line with bigquery_merges");
    assert!((1..=secs + 2).contains(&merges), "{merges} MERGE jobs in {secs} s\n{}", env.log());
}

/// Rows of the matrix: (snapshot rows, rows written while streaming).
const MATRIX_ROWS: [&str; 2] = [
    "(1, -128, 65535, -9223372036854775808, 18446744073709551615, 2155, b'10100101',
      -12345678.99, 12345678901234567890.123456789012345678,
      99999999999999999999999999999999999999999999999999999999999999999, 1.5, 0.30000000000000004,
      '1000-01-01', '9999-12-31 23:59:59.999999', '2038-01-19 03:14:07.999999', '-838:59:59.000000',
      'naïve', 'crème 🧄', 'line1\nline2 \\\\ ''quoted''', 'b c', 'x,z',
      x'00FF10', x'DEADBEEF', '{\"a\": [1, 2.50, \"ü\"], \"b\": null}',
      '-23:45:56.7', '-838:59:59.99', x'00000000000000000000000000000000', '123e4567-e89b-12d3-a456-426614174000',
      '::ffff:1.2.3.4', 'Žluťoučký kůň', CONVERT(X'815F82A0' USING sjis), 'Ünï 😀'),
     (2, 0, 0, 0, 0, 1901, b'0', 0, 0, 0, -0.25, -1e-300,
      '2024-02-29', '2024-02-29 12:00:00.000001', '1970-01-01 00:00:01', '838:59:59.999999',
      '', '', '', 'a', '', '', '', '[]',
      '-00:00:00.1', '-00:00:00.01', x'01', '00000000-0000-0000-0000-000000000000', '::', '', '', ''),
     (3, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
      NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
      NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL)",
    "(11, 1, 1, 1, 1, 2000, b'1', 1.5, 1.5, 1, 1, 1, '2000-01-01', '2000-01-01 00:00:00', '2000-01-01 00:00:00',
      '-00:00:00.1', 'c', 'v', 't', 'a', 'y', x'00', x'00', '{}',
      '-23:45:56.7', '-838:59:59.99', x'ff000000000000000000000000000000', 'ffffffff-ffff-ffff-ffff-ffffffffffff',
      '2001:db8::ff00:42:8329', 'Ďábelské ódy', CONVERT(X'8140A1' USING sjis), '𝄞'),
     (12, 2, 2, 2, 2, 2001, b'0', 2.5, 2.5, 2, 2, 2, '2001-01-01', '2001-01-01 00:00:00', '2001-01-01 00:00:00',
      '-838:59:59.000000', '', '', '', 'a', '', '', '', '[]',
      '-00:00:00.1', '-00:00:00.01', x'0100', '6ccd780c-baba-1026-9564-5b8c656024db', '1::3:4:5:6:7:8', 'ő', '', '')",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn type_matrix_is_exact_in_bigquery() {
    let mut env = Env::new("bqtypes").await;
    env.use_bigquery();
    let mut c = env.conn().await;
    c.query_drop("SET time_zone = '+00:00'").await.unwrap();
    c.query_drop(
        "CREATE TABLE matrix (
            id INT PRIMARY KEY,
            ti TINYINT, si SMALLINT UNSIGNED, bi BIGINT, bu BIGINT UNSIGNED, yr YEAR, bt BIT(8),
            d2 DECIMAL(10,2), d38 DECIMAL(38,18), d65 DECIMAL(65,0), fl FLOAT, db DOUBLE,
            dt DATE, dtm DATETIME(6), ts TIMESTAMP(6) NULL, tm TIME(6),
            ch CHAR(10), vc VARCHAR(50), tx TEXT, en ENUM('a','b c'), st SET('x','y','z'),
            bl BLOB, vb VARBINARY(16), js JSON,
            t1 TIME(1), t2 TIME(2), b16 BINARY(16), u UUID, i6 INET6,
            l2 VARCHAR(20) CHARACTER SET latin2, sj VARCHAR(20) CHARACTER SET sjis, u16 VARCHAR(20) CHARACTER SET utf16
        )",
    )
    .await
    .unwrap();
    // Column names BigQuery does not allow map to names it does, distinctly.
    c.query_drop(
        "CREATE TABLE `odd names` (id INT PRIMARY KEY, `special\"[``$]'_id` INT, `sp ace` VARCHAR(5), `select` INT)",
    )
    .await
    .unwrap();
    // A key no BigQuery date holds stops its table, loudly, and only it.
    c.query_drop("CREATE TABLE zerokey (d DATE, n INT, PRIMARY KEY (d, n))").await.unwrap();
    c.query_drop("SET SESSION sql_mode = 'NO_ENGINE_SUBSTITUTION'").await.unwrap();
    c.query_drop(format!("INSERT INTO matrix VALUES {}", MATRIX_ROWS[0])).await.unwrap();
    c.query_drop("INSERT INTO `odd names` VALUES (1, 2, 'a b', 3)").await.unwrap();
    c.query_drop("INSERT INTO zerokey VALUES ('2024-01-01', 1)").await.unwrap();
    let bf = env.start_streaming().await;
    // The binlog path: negative short-fraction TIMEs and BINARY(n) trailing zeros come out of
    // the row images differently from the snapshot.
    c.query_drop(format!("INSERT INTO matrix VALUES {}", MATRIX_ROWS[1])).await.unwrap();
    c.query_drop("UPDATE matrix SET t1 = '-00:00:00.2', b16 = x'0000' WHERE id = 1").await.unwrap();
    c.query_drop("INSERT INTO `odd names` VALUES (2, NULL, '', 4)").await.unwrap();
    c.query_drop("INSERT INTO zerokey VALUES ('0000-00-00', 2), ('2000-00-00', 3)").await.unwrap();
    env.diff_skip = vec!["zerokey".into()];
    env.wait_bq_equal(CONVERGE).await;
    // The exact BigQuery values, spelled out for the ones a float would have rounded.
    let table = format!("`binferry-test.{}.{}_matrix`", env.dst, env.src);
    let rows = env
        .bq(&format!(
            "SELECT CAST(bu AS STRING), CAST(d38 AS STRING), d65, CAST(d2 AS STRING), \
             CAST(dtm AS STRING), FORMAT_TIMESTAMP('%Y-%m-%d %H:%M:%E6S', ts), tm, TO_HEX(bl), \
             JSON_VALUE(js, '$.a[2]'), t1, t2, TO_HEX(b16), u, i6, l2, sj, u16 FROM {table} WHERE id IN (1, 11) \
             ORDER BY id"
        ))
        .await
        .unwrap();
    let row = |cells: &[&str]| -> Vec<Option<String>> {
        cells.iter().map(|s| (!s.is_empty()).then(|| s.to_string())).collect()
    };
    let want = vec![
        row(&[
            "18446744073709551615",
            "12345678901234567890.123456789012345678",
            "99999999999999999999999999999999999999999999999999999999999999999",
            "-12345678.99",
            "9999-12-31 23:59:59.999999",
            "2038-01-19 03:14:07.999999",
            "-838:59:59.000000",
            "00ff10",
            "ü",
            "-00:00:00.2",
            "-838:59:59.99",
            "00000000000000000000000000000000",
            "123e4567-e89b-12d3-a456-426614174000",
            "::ffff:1.2.3.4",
            "Žluťoučký kůň",
            "\\あ",
            "Ünï 😀",
        ]),
        row(&[
            "1",
            "1.500000000000000000",
            "1",
            "1.50",
            "2000-01-01 00:00:00",
            "2000-01-01 00:00:00.000000",
            "-00:00:00.100000",
            "00",
            "",
            "-23:45:56.7",
            "-838:59:59.99",
            "ff000000000000000000000000000000",
            "ffffffff-ffff-ffff-ffff-ffffffffffff",
            "2001:db8::ff00:42:8329",
            "Ďábelské ódy",
            "\u{3000}｡",
            "𝄞",
        ]),
    ];
    for (got, want) in rows.iter().zip(&want) {
        for (i, (g, w)) in got.iter().zip(want).enumerate() {
            let same = match (g, w) {
                (Some(g), Some(w)) => common::bigquery::same_text(g, w),
                (g, w) => g == w,
            };
            assert!(same, "column {i}: BigQuery has {g:?}, expected {w:?}");
        }
    }
    assert_eq!(rows.len(), 2);
    // `verify` reads every value back from BigQuery as the writer's value of its column type
    // and hashes it: every type of the matrix compares equal, with no false drift.
    for table in ["matrix", "odd names"] {
        let (code, text) = env.verify(&["--table", &format!("{}.{table}", env.src)]);
        assert_eq!(code, Some(0), "{table}: {text}");
        assert!(text.contains("target rows: equal"), "{table}: {text}");
    }
    // The zero-date key stopped its table with the key, the column and the fix.
    let stopped = env
        .bq(&format!("SELECT source_table, reason FROM `binferry-test.{}._binferry_stopped`", env.dst))
        .await
        .unwrap();
    assert_eq!(stopped.len(), 1, "{stopped:?}");
    let reason = stopped[0][1].clone().unwrap_or_default();
    assert_eq!(stopped[0][0].as_deref(), Some("zerokey"));
    for part in ["primary-key column `d` holds the date ", "give the row a real date"] {
        assert!(reason.contains(part), "{part:?} not in {reason}");
    }
    // Either zero-date row may be met first: both came in one statement.
    assert!(["0000-00-00", "2000-00-00"].iter().any(|d| reason.contains(&format!("the date {d}"))), "{reason}");
    bf.interrupt(Duration::from_secs(60));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_and_crashes_between_append_and_merge_lose_nothing() {
    let mut env = Env::new("bqkill").await;
    env.use_bigquery();
    let mut c = env.conn().await;
    create_schema(&mut c, &env.src).await;
    let mut w = Workload::new(&env.src, 23);
    w.seed(&mut c, 100).await;
    let load = env.background_load(24, 3_000, Duration::from_millis(5));
    let start = std::time::Instant::now();
    let mut bf = env.start();
    let mut kills = 0;
    while !load.is_finished() || kills < 5 {
        // Kill a run that works, not one still in its preflight checks: wait until it
        // streams, then a random moment of its snapshot, appends and MERGEs.
        let before = env.log().matches("streaming binlog").count();
        while env.log().matches("streaming binlog").count() == before {
            assert!(start.elapsed() < Duration::from_secs(600), "a run never streamed:\n{}", env.log_tails());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        tokio::time::sleep(Duration::from_millis(rand::rng().random_range(200..2500))).await;
        bf.kill9();
        kills += 1;
        bf = env.start();
    }
    load.await.unwrap();
    bf.kill9();
    // Crashes at the protocol's seams: after the commit marker (appended, not merged), and
    // right before the MERGE job. Changes come fast only in the first rounds, then trickle
    // (so that commits and MERGEs keep coming): under the whole suite's load the emulator's
    // first commits can take minutes, and changes made fast all that time would only
    // lengthen the final catch-up.
    for (n, failpoint) in ["bigquery-after-commit", "bigquery-before-merge"].into_iter().enumerate() {
        env.write_config();
        let log = env.dir.path().join(format!("failpoint-{n}.log"));
        let mut crashing = Binferry::start_with_env(
            &env.config_path(),
            &log,
            &[],
            &[("BINFERRY_FAILPOINT", failpoint), ("BINFERRY_FAILPOINT_HIT", "2")],
        );
        let mut w = Workload::new(&env.src, 30 + n as u64);
        w.next_ingredient_from(2_000_000 + 100_000 * n as u64);
        let waiting = std::time::Instant::now();
        let mut rounds = 0;
        while crashing.is_running() {
            let fast = rounds < 40;
            w.run(&mut c, if fast { 50 } else { 5 }).await;
            rounds += 1;
            assert!(
                waiting.elapsed() < Duration::from_secs(600),
                "failpoint {failpoint} was never reached:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
            tokio::time::sleep(Duration::from_millis(if fast { 100 } else { 1_000 })).await;
        }
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        assert!(text.contains(&format!("failpoint {failpoint}: aborting")), "{text}");
    }
    let bf = env.start();
    env.wait_bq_equal(CONVERGE).await;
    bf.interrupt(Duration::from_secs(60));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn added_column_appears_without_restart() {
    let mut env = Env::new("bqddl").await;
    env.use_bigquery();
    let mut c = env.conn().await;
    create_schema(&mut c, &env.src).await;
    let mut w = Workload::new(&env.src, 25);
    w.seed(&mut c, 50).await;
    let mut bf = env.start_streaming().await;
    env.wait_bq_equal(CONVERGE).await;
    c.query_drop("ALTER TABLE recipes ADD COLUMN source_url VARCHAR(200) NULL, ADD COLUMN cost DECIMAL(12,3) NULL")
        .await
        .unwrap();
    c.query_drop("UPDATE recipes SET source_url = CONCAT('https://example.org/', id), cost = id / 7 WHERE id % 3 = 0")
        .await
        .unwrap();
    w.run(&mut c, 200).await;
    env.wait_bq_equal(CONVERGE).await;
    assert!(bf.is_running(), "binferry restarted or stopped:\n{}", env.log());
    let cols = env
        .bq(&format!(
            "SELECT COUNT(*) FROM `binferry-test.{}.{}_recipes` WHERE source_url IS NOT NULL AND cost IS NOT NULL",
            env.dst, env.src
        ))
        .await
        .unwrap();
    assert_ne!(cols[0][0].as_deref(), Some("0"));
    bf.interrupt(Duration::from_secs(60));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_reports_the_emulator_or_its_absence() {
    let mut env = Env::new("bqcheck").await;
    env.use_bigquery();
    let cfg = env.write_config();
    let out = common::binferry_cmd(&["check", "--config", cfg.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("target BigQuery at") && text.contains("does not exist yet"), "{text}");
    // Nothing listens on port 1: a problem naming the setting, and exit 1.
    env.set(&["sink", "bigquery", "endpoint"], "http://127.0.0.1:1/bigquery/v2");
    env.write_config();
    let out = common::binferry_cmd(&["check", "--config", cfg.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("problem: sink.bigquery.endpoint: expected a BigQuery API answering at"), "{text}");
    assert!(text.contains("did not answer"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_table_without_primary_key_stops_alone() {
    let mut env = Env::new("bqkeyless").await;
    env.use_bigquery();
    let mut c = env.conn().await;
    c.query_drop("CREATE TABLE audit (at DATETIME, what VARCHAR(50))").await.unwrap();
    c.query_drop("CREATE TABLE kept (id INT PRIMARY KEY, v INT)").await.unwrap();
    c.query_drop("INSERT INTO audit VALUES (NOW(), 'x'), (NOW(), 'y')").await.unwrap();
    c.query_drop("INSERT INTO kept SELECT seq, seq * 2 FROM seq_1_to_100").await.unwrap();
    // `check` says what will happen to it: a warning, not "replicated with the row hash".
    let cfg = env.write_config();
    let out = common::binferry_cmd(&["check", "--config", cfg.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{text}");
    let warning = format!("warning: table {}.audit has no primary key, and the target keys rows by it", env.src);
    assert!(text.contains(&warning) && !text.contains("replicated with the row hash"), "{text}");
    let bf = env.start_streaming().await;
    c.query_drop("INSERT INTO audit VALUES (NOW(), 'z')").await.unwrap();
    c.query_drop("UPDATE kept SET v = v + 1 WHERE id <= 10").await.unwrap();
    let sum = format!("SELECT COUNT(*), SUM(v) FROM `binferry-test.{}.{}_kept`", env.dst, env.src);
    let want = vec![vec![Some("100".to_string()), Some("10110".to_string())]];
    let start = std::time::Instant::now();
    while env.bq(&sum).await.ok() != Some(want.clone()) {
        assert!(start.elapsed() < CONVERGE, "kept did not converge:\n{}", env.log());
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let log = env.log();
    assert!(
        log.contains("no primary key; the BigQuery target keys rows by it") && log.contains("table stopped"),
        "{log}"
    );
    let stopped =
        env.bq(&format!("SELECT source_table FROM `binferry-test.{}._binferry_stopped`", env.dst)).await.unwrap();
    assert_eq!(stopped, vec![vec![Some("audit".to_string())]]);
    bf.interrupt(Duration::from_secs(60));
    // After a restart the table stays stopped, for the reason it was stopped.
    let before = env.log().len();
    let bf = env.start_streaming().await;
    let start = std::time::Instant::now();
    while !env.log()[before..].contains("table is stopped; its changes are skipped") {
        assert!(start.elapsed() < CONVERGE, "{}", env.log_tails());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let line = env.log()[before..].lines().find(|l| l.contains("table is stopped")).unwrap_or_default().to_string();
    assert!(line.contains("no primary key; the BigQuery target keys rows by it"), "{line}");
    bf.interrupt(Duration::from_secs(60));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schema_changes_are_followed_live() {
    let mut env = Env::new("bqschema").await;
    env.use_bigquery();
    let mut c = env.conn().await;
    c.query_drop("CREATE TABLE t1 (id INT PRIMARY KEY, name VARCHAR(20), amount DECIMAL(5,2))").await.unwrap();
    c.query_drop("CREATE TABLE t2 (id INT PRIMARY KEY, v INT, w INT)").await.unwrap();
    c.query_drop("INSERT INTO t1 SELECT seq, CONCAT('n', seq), seq / 4 FROM seq_1_to_40").await.unwrap();
    c.query_drop("INSERT INTO t2 SELECT seq, seq, seq FROM seq_1_to_40").await.unwrap();
    let mut bf = env.start_streaming().await;
    env.wait_bq_equal(CONVERGE).await;
    // A renamed column, then right away a decimal widened in place (NUMERIC(5,2) →
    // NUMERIC(10,4)), so that rows of both schema versions meet in one batch.
    c.query_drop("ALTER TABLE t1 RENAME COLUMN name TO title").await.unwrap();
    c.query_drop("UPDATE t1 SET title = CONCAT(title, '!') WHERE id % 2 = 0").await.unwrap();
    c.query_drop("ALTER TABLE t1 MODIFY amount DECIMAL(10,4)").await.unwrap();
    c.query_drop("UPDATE t1 SET amount = amount + 0.0001 WHERE id < 5").await.unwrap();
    // A dropped column stays in BigQuery (NULL for new rows), with one warning.
    c.query_drop("ALTER TABLE t2 DROP COLUMN w").await.unwrap();
    c.query_drop("UPDATE t2 SET v = v + 1 WHERE id < 10").await.unwrap();
    env.wait_bq_equal(CONVERGE).await;
    assert!(env.log().contains("column is no longer in the source; kept in the target"), "{}", env.log());
    // TRUNCATE, then rows again; a table renamed and written to under its new name.
    c.query_drop("TRUNCATE TABLE t2").await.unwrap();
    c.query_drop("INSERT INTO t2 VALUES (1000, 1)").await.unwrap();
    c.query_drop("RENAME TABLE t1 TO t1_new").await.unwrap();
    c.query_drop("UPDATE t1_new SET amount = 1 WHERE id = 1").await.unwrap();
    env.wait_bq_equal(CONVERGE).await;
    c.query_drop("DROP TABLE t2").await.unwrap();
    c.query_drop("INSERT INTO t1_new VALUES (41, 'after drop', 2)").await.unwrap();
    env.wait_bq_equal(CONVERGE).await;
    assert!(bf.is_running(), "binferry stopped:\n{}", env.log());
    let log = env.log();
    assert!(!log.contains("table stopped") && !log.contains("ERROR"), "{log}");
    bf.interrupt(Duration::from_secs(60));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn soft_deletes_keep_rows_marked_and_a_reinsert_revives_them() {
    let mut env = Env::new("bqsoft").await;
    env.use_bigquery();
    env.add_table_rule(&format!("{}.t", env.src), &[("deletes", "soft".into())]);
    let mut c = env.conn().await;
    c.query_drop("CREATE TABLE t (id INT PRIMARY KEY, v INT)").await.unwrap();
    c.query_drop("INSERT INTO t SELECT seq, seq FROM seq_1_to_20").await.unwrap();
    let bf = env.start_streaming().await;
    let table = format!("`binferry-test.{}.{}_t`", env.dst, env.src);
    let wait = |sql: String, want: &'static str| {
        let env = &env;
        async move {
            let start = std::time::Instant::now();
            loop {
                let got = env.bq(&sql).await.ok().and_then(|r| r.first().and_then(|r| r.first().cloned()).flatten());
                if got.as_deref() == Some(want) {
                    return;
                }
                assert!(start.elapsed() < CONVERGE, "{sql}: {got:?}, want {want}\n{}", env.log_tails());
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    };
    wait(format!("SELECT COUNT(*) FROM {table}"), "20").await;
    c.query_drop("DELETE FROM t WHERE id <= 5").await.unwrap();
    // A key inserted and deleted between two MERGEs still arrives, marked deleted.
    c.query_drop("INSERT INTO t VALUES (99, 99)").await.unwrap();
    c.query_drop("DELETE FROM t WHERE id = 99").await.unwrap();
    wait(format!("SELECT COUNT(*) FROM {table} WHERE _binferry_deleted_at IS NOT NULL"), "6").await;
    wait(format!("SELECT COUNT(*) FROM {table} WHERE _binferry_deleted_at IS NULL"), "15").await;
    c.query_drop("INSERT INTO t VALUES (1, 100)").await.unwrap();
    wait(format!("SELECT CAST(v AS STRING) FROM {table} WHERE id = 1 AND _binferry_deleted_at IS NULL"), "100").await;
    wait(format!("SELECT COUNT(*) FROM {table} WHERE _binferry_deleted_at IS NOT NULL"), "5").await;
    bf.interrupt(Duration::from_secs(60));
}

/// Against real BigQuery, when `BINFERRY_BQ_LIVE_PROJECT` (a project the credentials may
/// create datasets in) and `GOOGLE_APPLICATION_CREDENTIALS` (a service-account key file) are
/// set; skipped otherwise.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_bigquery_mixed_workload() {
    let (Ok(project), Ok(key)) =
        (std::env::var("BINFERRY_BQ_LIVE_PROJECT"), std::env::var("GOOGLE_APPLICATION_CREDENTIALS"))
    else {
        eprintln!(
            "skipped: set BINFERRY_BQ_LIVE_PROJECT and GOOGLE_APPLICATION_CREDENTIALS (a service-account key with \
             roles/bigquery.dataEditor and roles/bigquery.jobUser) to run this test against real BigQuery"
        );
        return;
    };
    let mut env = Env::new("bqlive").await;
    env.remove(&["sink"]);
    env.set(&["sink", "kind"], "bigquery");
    env.set(&["sink", "bigquery", "project"], project.clone());
    env.set(&["sink", "bigquery", "dataset"], env.dst.clone());
    env.set(&["sink", "bigquery", "credentials_file"], key.clone());
    env.set(&["sink", "bigquery", "merge_interval_secs"], 5);
    let mut c = env.conn().await;
    create_schema(&mut c, &env.src).await;
    let mut w = Workload::new(&env.src, 26);
    w.seed(&mut c, 50).await;
    let bf = env.start();
    w.run(&mut c, 500).await;
    let client = gcp_bigquery_client::Client::from_service_account_key_file(&key).await.unwrap();
    let deadline = std::time::Instant::now() + CONVERGE;
    for t in env.tables().await {
        let n: Vec<u64> = c.query(format!("SELECT COUNT(*) FROM `{t}`")).await.unwrap();
        loop {
            let sql = format!("SELECT COUNT(*) FROM `{project}.{}.{}_{t}`", env.dst, env.src);
            let got = client
                .job()
                .query(&project, gcp_bigquery_client::model::query_request::QueryRequest::new(sql))
                .await
                .ok()
                .and_then(|r| r.rows)
                .and_then(|r| r.first().and_then(|r| r.columns.clone()))
                .and_then(|c| c.first().and_then(|c| c.value.clone()))
                .and_then(|v| v.as_str().and_then(|s| s.parse::<u64>().ok()));
            if got == Some(n[0]) {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "{t}: {got:?} BigQuery rows, {} source rows", n[0]);
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
    }
    bf.interrupt(Duration::from_secs(60));
    let _ = client.dataset().delete(&project, &env.dst, true).await;
}

/// Two streams of one process (two Kafka partitions, say) with committed work: one MERGE job
/// applies both, and a stream with nothing left to merge issues none. Sinks driven directly,
/// in this process, so that the job counter is theirs alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_streams_of_one_process_share_one_merge_job() {
    use binferry::event::{ChangeEvent, Op, Value};
    use binferry::position::Position;
    use binferry::schema::{ColumnSchema, ColumnType, TableRef, TableSchema};
    use binferry::sink::Sink;
    use binferry::sink::bigquery::{BigQuerySink, BigQuerySinkSettings};
    use binferry::writer::Batch;
    use std::sync::Arc;

    let mut env = Env::new("bqshare").await;
    env.use_bigquery();
    // No MERGE falls due during the test: only the drain below runs one.
    env.set(&["sink", "bigquery", "merge_interval_secs"], 3600);
    let config = binferry::config::Config::load(&env.write_config()).unwrap();
    let stats = Arc::new(binferry::telemetry::Stats::default());
    let settings = BigQuerySinkSettings::from_config(&config).unwrap().with_stats(Arc::clone(&stats));
    let merges_run = || stats.bigquery_merges.load(std::sync::atomic::Ordering::Relaxed);
    let col = |name: &str| ColumnSchema {
        name: name.into(),
        ty: ColumnType::Int { bytes: 8, unsigned: false },
        nullable: false,
        default: None,
        source_type: None,
    };
    let schema = Arc::new(TableSchema {
        table: TableRef::new(env.src.clone(), "t"),
        columns: vec![col("id"), col("v")],
        primary_key: vec![0],
    });
    let mut sinks = Vec::new();
    for p in 0..2i64 {
        let mut sink = BigQuerySink::new(settings.for_stream(format!("kafka:test/{p}")));
        sink.ensure_table(&schema).await.unwrap();
        let mut batch = Batch::default();
        for i in 0..3i64 {
            let id = p * 100 + i;
            let ev = ChangeEvent {
                table: schema.table.clone(),
                schema_version: schema.version(),
                op: Op::Insert,
                before: None,
                after: Some(vec![Value::Int(id), Value::Int(id * 10)]),
                position: Position { file: "binlog.000001".into(), offset: 1000 + id as u64, row: 0 },
                timestamp: 1_700_000_000,
                gtid: None,
                index: Some(i as u32),
            };
            batch.push(ev, &schema).unwrap();
        }
        sink.apply(&batch).await.unwrap();
        sink.commit(7, &Position::new("binlog.000001", 2000)).await.unwrap();
        sinks.push(sink);
    }
    let before = merges_run();
    sinks[0].idle(true).await.unwrap();
    assert_eq!(merges_run() - before, 1);
    // That one job applied the rows and the progress of both streams.
    let ds = format!("`{}.{}", common::bigquery::PROJECT, env.dst);
    let table = settings.target_table(&schema.table);
    let rows = env.bq(&format!("SELECT id, v FROM {ds}.{table}` ORDER BY id")).await.unwrap();
    let ids: Vec<_> = rows.iter().map(|r| r[0].clone().unwrap_or_default()).collect();
    assert_eq!(ids, ["0", "1", "2", "100", "101", "102"]);
    let state =
        env.bq(&format!("SELECT stream, merged_offset FROM {ds}._binferry_state` ORDER BY stream")).await.unwrap();
    let state: Vec<_> = state.iter().map(|r| (r[0].clone().unwrap_or_default(), r[1].clone())).collect();
    let stream = |p: i32| format!("{}/kafka:test/{p}", config.pipeline.name);
    assert_eq!(state, [(stream(0), Some("7".to_string())), (stream(1), Some("7".to_string()))]);
    // The second stream has nothing left to merge: no job.
    sinks[1].idle(true).await.unwrap();
    assert_eq!(merges_run() - before, 1);
}

/// Kafka's key layout into BigQuery: a column rename and a table rename right behind writes
/// that every partition carries. Each partition appends its older rows before the statement
/// is applied, and the statement is applied once (see the MySQL variant in tests/kafka.rs).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_layout_renames_wait_for_every_partition() {
    let mut env = Env::new("bqkddl").await;
    env.use_kafka("key");
    env.use_bigquery();
    let mut c = env.conn().await;
    c.query_drop("CREATE TABLE t (id INT PRIMARY KEY, name VARCHAR(40), n INT)").await.unwrap();
    c.query_drop("INSERT INTO t SELECT seq, CONCAT('r', seq), 0 FROM seq_1_to_200").await.unwrap();
    let bf = env.start();
    env.wait_bq_equal(CONVERGE).await;
    for i in 0..100 {
        c.query_drop(format!("UPDATE t SET n = n + 1 WHERE id = {}", i * 7 % 200 + 1)).await.unwrap();
    }
    c.query_drop("ALTER TABLE t RENAME COLUMN name TO title").await.unwrap();
    c.query_drop("UPDATE t SET title = CONCAT(title, '+') WHERE id % 3 = 0").await.unwrap();
    for i in 0..100 {
        c.query_drop(format!("UPDATE t SET n = n + 1 WHERE id = {}", i * 11 % 200 + 1)).await.unwrap();
    }
    c.query_drop("RENAME TABLE t TO t2").await.unwrap();
    c.query_drop("UPDATE t2 SET n = 0 WHERE id % 4 = 0").await.unwrap();
    env.wait_bq_equal(CONVERGE).await;
    assert!(bf.interrupt(Duration::from_secs(60)).success(), "{}", env.log());
    let ds = format!("`{}.{}", common::bigquery::PROJECT, env.dst);
    let applied = env
        .bq(&format!("SELECT COUNT(DISTINCT barrier) FROM {ds}._binferry_barriers` WHERE phase = 'applied'"))
        .await
        .unwrap();
    assert_eq!(applied, vec![vec![Some("2".to_string())]]);
}

/// Kafka key partitions applied by two worker processes: a rename is applied by the process
/// that owns partition 0, and the other process's committed rows must be merged by then, or
/// they stay behind under the old name (its MERGE finds no table). MERGEs run only every 20 s
/// here, so that the other process surely holds unmerged rows when the rename arrives: each
/// stream merges before it arrives at the rename's barrier.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_layout_rename_across_worker_processes_merges_every_partition_first() {
    let mut env = Env::new("bqkddl2").await;
    env.use_kafka("key");
    env.use_bigquery();
    env.set(&["sink", "bigquery", "merge_interval_secs"], 20);
    let db = env.src.clone();
    let mut c = env.conn().await;
    c.query_drop(format!("CREATE TABLE `{db}`.t (id INT PRIMARY KEY, n INT)")).await.unwrap();
    c.query_drop(format!("INSERT INTO `{db}`.t SELECT seq, 0 FROM seq_1_to_200")).await.unwrap();
    let (reader, a, b) = env.start_reader_and_two_workers().await;
    env.wait_bq_equal(CONVERGE).await;
    c.query_drop(format!("UPDATE `{db}`.t SET n = n + 1")).await.unwrap();
    c.query_drop(format!("RENAME TABLE `{db}`.t TO `{db}`.t2")).await.unwrap();
    env.wait_bq_equal(CONVERGE).await;
    assert!(reader.interrupt(Duration::from_secs(30)).success());
    assert!(a.interrupt(Duration::from_secs(60)).success(), "{}", env.log_of("a"));
    assert!(b.interrupt(Duration::from_secs(60)).success(), "{}", env.log_of("b"));
}

/// Four Kafka partitions in one process share MERGE jobs: one partition's job carries the
/// others' committed work and progress. SIGKILLs at random moments, and a crash right before a
/// shared MERGE job, lose and double nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_with_partitions_sharing_merge_jobs_loses_nothing() {
    let mut env = Env::new("bqkkill").await;
    env.use_kafka("key");
    env.use_bigquery();
    let mut c = env.conn().await;
    create_schema(&mut c, &env.src).await;
    let mut w = Workload::new(&env.src, 41);
    w.seed(&mut c, 100).await;
    let load = env.background_load(42, 2_000, Duration::from_millis(10));
    let mut kills = 0;
    while !load.is_finished() || kills < 3 {
        let bf = env.start();
        // Kill once partitions are being applied (a group join takes seconds here).
        let start = std::time::Instant::now();
        while !env.log().contains("partition assigned") && start.elapsed() < Duration::from_secs(60) {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        tokio::time::sleep(Duration::from_millis(rand::rng().random_range(500..3000))).await;
        bf.kill9();
        kills += 1;
        // The next start's log shows its own join; this one stays for failure messages.
        std::fs::rename(env.dir.path().join("binferry.log"), env.dir.path().join(format!("killed-{kills}.log"))).ok();
    }
    load.await.unwrap();
    // A crash right before a MERGE job that carries the work of several partitions.
    env.write_config();
    let log = env.dir.path().join("failpoint.log");
    let mut crashing = Binferry::start_with_env(
        &env.config_path(),
        &log,
        &[],
        &[("BINFERRY_FAILPOINT", "bigquery-before-merge"), ("BINFERRY_FAILPOINT_HIT", "2")],
    );
    let mut w = Workload::new(&env.src, 43);
    w.next_ingredient_from(2_000_000);
    let mut rounds = 0;
    while crashing.is_running() {
        w.run(&mut c, 50).await;
        rounds += 1;
        assert!(
            rounds < 600,
            "the failpoint was never reached:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(text.contains("failpoint bigquery-before-merge: aborting"), "{text}");
    let bf = env.start();
    env.wait_bq_equal(KILL_CONVERGE).await;
    assert!(bf.interrupt(Duration::from_secs(60)).success(), "{}", env.log());
}

/// `binferry resync` against BigQuery: rows changed and added by hand are corrected, and the
/// rows the copy found unchanged survive its closing sweep (a MERGE does not move their
/// position, so the sweep keeps keys the changelog upserted since the copy began).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resync_corrects_a_bigquery_table_and_keeps_unchanged_rows() {
    let mut env = Env::new("bqresync").await;
    env.use_bigquery();
    env.listen_on_a_free_port();
    // Chunks of 120 rows: a few per table, without slowing the initial copy down much (each
    // chunk waits for the emulator's commits of the one before).
    env.set(&["snapshot", "chunk_rows"], 120);
    let mut c = env.conn().await;
    create_schema(&mut c, &env.src).await;
    let mut w = Workload::new(&env.src, 27);
    w.seed(&mut c, 300).await;
    let bf = env.start_streaming().await;
    env.wait_bq_equal(CONVERGE).await;
    let table = format!("`binferry-test.{}.{}_recipes`", env.dst, env.src);
    env.bq(&format!("UPDATE {table} SET name = 'edited by hand', _binferry_hash = b'' WHERE id <= 5")).await.unwrap();
    env.bq(&format!(
        "INSERT INTO {table} SELECT * REPLACE (id + 5000000 AS id) FROM {table} WHERE id BETWEEN 10 AND 12"
    ))
    .await
    .unwrap();
    let (ok, text) = env.resync(&[&format!("{}.recipes", env.src)]);
    assert!(ok, "{text}\n{}", env.log_tails());
    env.wait_bq_equal(CONVERGE).await;
    let left =
        env.bq(&format!("SELECT COUNT(*) FROM {table} WHERE name = 'edited by hand' OR id >= 5000000")).await.unwrap();
    assert_eq!(left[0][0].as_deref(), Some("0"));
    bf.interrupt(Duration::from_secs(60));
}

/// `verify` and `verify --repair` on BigQuery, next to the running pipeline under load:
/// hand-made drift of each kind is named, repaired through the position-guarded path, and a
/// second verify finds none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_finds_and_repairs_drift_in_bigquery() {
    let mut env = Env::new("bqverify").await;
    env.use_bigquery();
    // Integer keys are compared a key range at a time: several ranges here.
    env.set(&["sink", "bigquery", "verify_chunk_rows"], 30);
    env.listen_on_a_free_port();
    let mut c = env.conn().await;
    create_schema(&mut c, &env.src).await;
    let mut w = Workload::new(&env.src, 28);
    w.seed(&mut c, 100).await;
    let bf = env.start_streaming().await;
    env.wait_bq_equal(CONVERGE).await;
    let verify = |args: &[&str]| env.verify(args);
    let (code, out) = verify(&[]);
    assert_eq!(code, Some(0), "{out}");
    let recipes = format!("`binferry-test.{}.{}_recipes`", env.dst, env.src);
    // A value changed with its hash left alone, a missing row, and a row (5000001) only
    // BigQuery has. A stored hash changed alone is no drift: verify compares the values the
    // target holds (a wrong hash costs the next MERGE of the row a rewrite, nothing more).
    env.bq(&format!("UPDATE {recipes} SET _binferry_hash = b'' WHERE id = 95")).await.unwrap();
    env.bq(&format!("UPDATE {recipes} SET name = CONCAT(name, ' (edited)') WHERE id = 94")).await.unwrap();
    env.bq(&format!("DELETE FROM {recipes} WHERE id = 96")).await.unwrap();
    env.bq(&format!("INSERT INTO {recipes} SELECT * REPLACE (5000001 AS id) FROM {recipes} WHERE id = 97"))
        .await
        .unwrap();
    let (code, out) = verify(&["--table", &format!("{}.recipes", env.src)]);
    assert_eq!(code, Some(3), "{out}");
    for want in ["missing in the target: 96", "only in the target: 5000001", "different: 94\n", " key ranges)"] {
        assert!(out.contains(want), "{want:?} not in:\n{out}");
    }
    let load = tokio::spawn({
        let (src, pool) = (env.src.clone(), env.pool.clone());
        async move {
            let mut c = pool.get_conn().await.unwrap();
            let mut w = Workload::new(&src, 29);
            w.next_ingredient_from(3_000_000);
            w.run_paced(&mut c, 300, Duration::from_millis(10)).await
        }
    });
    let (code, out) = verify(&["--repair", "--table", &format!("{}.recipes", env.src)]);
    assert_eq!(code, Some(0), "{out}\n{}", env.log_tails());
    assert!(out.contains("after the repair: equal"), "{out}");
    load.await.unwrap();
    env.wait_bq_equal(CONVERGE).await;
    let (code, out) = verify(&[]);
    assert_eq!(code, Some(0), "{out}");
    bf.interrupt(Duration::from_secs(60));
}

/// A table the BigQuery target stopped (a column type BigQuery cannot change in place) is
/// brought back by `binferry resync`: rebuilt aside in the source's new shape while the other
/// tables stream, then put in place by one `CREATE OR REPLACE TABLE … COPY`. The process is
/// made to crash right after that replace (failpoint), and the restarted one finishes the
/// swap. A reader of the table meanwhile sees the stale copy, then the rebuilt table, and
/// nothing in between: never a missing, empty or half-copied table.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resync_rebuilds_a_stopped_table_aside_and_a_crash_at_the_swap_finishes_it() {
    rebuild_aside("bqrebuild", None).await;
}

/// The same through four Kafka key partitions: the copy is spread over them, the swap waits
/// until every partition has applied and merged its share, and after the crash every
/// partition's sink finds the swap unfinished when it starts (one finishes it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resync_rebuilds_a_stopped_table_aside_through_kafka_key_partitions() {
    rebuild_aside("bqkrebuild", Some("key")).await;
}

async fn rebuild_aside(name: &str, kafka: Option<&str>) {
    use common::bigquery::{PROJECT, bq_table};
    use std::sync::atomic::{AtomicBool, Ordering};

    let mut env = Env::new(name).await;
    if let Some(layout) = kafka {
        env.use_kafka(layout);
    }
    env.use_bigquery();
    env.listen_on_a_free_port();
    env.set(&["snapshot", "chunk_rows"], 100);
    let (src, dst) = (env.src.clone(), env.dst.clone());
    let rows = 300i64;
    let mut c = env.conn().await;
    c.query_drop(format!("CREATE TABLE `{src}`.s (id INT PRIMARY KEY, v VARCHAR(20) NOT NULL)")).await.unwrap();
    c.query_drop(format!("CREATE TABLE `{src}`.other (id INT PRIMARY KEY, n INT)")).await.unwrap();
    c.query_drop(format!("INSERT INTO `{src}`.s SELECT seq, seq * 1000 FROM seq_1_to_{rows}")).await.unwrap();
    let bf = env.start_streaming().await;
    env.wait_bq_equal(CONVERGE).await;
    // BigQuery cannot turn a STRING column into INT64 in place: the table stops, the others
    // go on.
    c.query_drop(format!("ALTER TABLE `{src}`.s MODIFY v BIGINT NOT NULL")).await.unwrap();
    c.query_drop(format!("UPDATE `{src}`.s SET v = v + 1 WHERE id <= 50")).await.unwrap();
    c.query_drop(format!("DELETE FROM `{src}`.s WHERE id > {}", rows - 10)).await.unwrap();
    // Each partition that meets the change records the stop (readers group them), so count
    // the tables, not the rows.
    let stopped = format!(
        "SELECT COUNT(DISTINCT source_table) FROM `{PROJECT}.{dst}._binferry_stopped` WHERE source_table = 's'"
    );
    let count = |rows: Vec<Vec<Option<String>>>| rows[0][0].clone().unwrap_or_default();
    let start = std::time::Instant::now();
    loop {
        let n = count(env.bq(&stopped).await.unwrap());
        if n == "1" {
            break;
        }
        assert!(start.elapsed() < CONVERGE, "the table did not stop ({n} stopped):\n{}", env.log_tails());
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    // A second partition's record of the same stop (here written by hand, so that there surely
    // is one): `status` lists the table once.
    env.bq(&format!(
        "INSERT INTO `{PROJECT}.{dst}._binferry_stopped` (pipeline, source_db, source_table, reason, stopped_at) \
         SELECT pipeline, source_db, source_table, reason, stopped_at FROM `{PROJECT}.{dst}._binferry_stopped` \
         WHERE source_table = 's' LIMIT 1"
    ))
    .await
    .unwrap();
    let json = env.status_json();
    let listed = json["target"]["stopped"].as_array().map_or(0, |a| a.len());
    assert_eq!(listed, 1, "{json}");
    c.query_drop(format!("INSERT INTO `{src}`.other VALUES (1, 1)")).await.unwrap();
    assert!(bf.interrupt(Duration::from_secs(60)).success());
    env.process_env = vec![("BINFERRY_FAILPOINT".into(), "rebuild-after-rename".into())];
    let crashing = env.start_streaming().await;
    env.process_env.clear();

    let table = format!("`{PROJECT}.{dst}.{}`", bq_table(&src, "s"));
    let read = format!("SELECT COUNT(*), SUM(CAST(v AS INT64)) FROM {table}");
    let stale = (rows.to_string(), (1..=rows).map(|i| i * 1000).sum::<i64>().to_string());
    let stop = AtomicBool::new(false);
    // The stale copy (all rows, the old values), then the rebuilt table (the source's rows;
    // it moves on with the source afterwards, so only its count is fixed).
    let reader = async {
        let (mut seen_stale, mut seen_rebuilt) = (0u32, 0u32);
        while !stop.load(Ordering::Relaxed) {
            let got = env.bq(&read).await.map(|r| (r[0][0].clone().unwrap_or_default(), r[0][1].clone()));
            match got {
                Ok((n, Some(sum))) if (n.clone(), sum.clone()) == stale && seen_rebuilt == 0 => seen_stale += 1,
                Ok((n, Some(_))) if n == (rows - 10).to_string() && seen_stale > 0 => seen_rebuilt += 1,
                other => panic!(
                    "a reader saw {other:?} (stale copy {stale:?}) after {seen_stale} stale and {seen_rebuilt} rebuilt reads"
                ),
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        (seen_stale, seen_rebuilt)
    };
    let driver = async {
        let cfg = env.config_path();
        let table_arg = format!("{src}.s");
        // The process aborts at the failpoint, so the command may report it stopped answering.
        let _ = tokio::task::spawn_blocking(move || {
            std::process::Command::new(env!("CARGO_BIN_EXE_binferry"))
                .args(["resync", "--config", cfg.to_str().unwrap(), "--table", &table_arg])
                .output()
        })
        .await
        .unwrap();
        let status = tokio::task::spawn_blocking(move || crashing.wait_exit(CONVERGE)).await.unwrap();
        assert!(!status.success(), "the failpoint did not stop the process:\n{}", env.log_tails());
        assert!(env.log().contains("failpoint rebuild-after-rename: aborting"), "{}", env.log_tails());
        let bf = env.start_streaming().await;
        c.query_drop(format!("UPDATE `{src}`.s SET v = 7 WHERE id = 100")).await.unwrap();
        env.wait_bq_equal(CONVERGE).await;
        stop.store(true, Ordering::Relaxed);
        bf
    };
    let ((seen_stale, seen_rebuilt), bf) = tokio::join!(reader, driver);
    assert!(seen_stale > 0 && seen_rebuilt > 0, "the reader saw {seen_stale} stale and {seen_rebuilt} rebuilt reads");
    assert!(env.log().contains("stale copy stays readable"), "{}", env.log_tails());
    assert_eq!(count(env.bq(&stopped).await.unwrap()), "0", "the stop is cleared");
    let ty = env
        .bq(&format!(
            "SELECT data_type FROM `{PROJECT}.{dst}`.INFORMATION_SCHEMA.COLUMNS WHERE table_name = '{}' AND column_name = 'v'",
            bq_table(&src, "s")
        ))
        .await
        .unwrap();
    assert_eq!(ty[0][0].as_deref(), Some("INT64"), "rebuilt with the source's new shape");
    let aside = env
        .bq(&format!(
            "SELECT table_name FROM `{PROJECT}.{dst}`.INFORMATION_SCHEMA.TABLES WHERE STARTS_WITH(table_name, '{}__') \
             ORDER BY table_name",
            bq_table(&src, "s")
        ))
        .await
        .unwrap();
    let aside: Vec<String> = aside.into_iter().filter_map(|r| r[0].clone()).collect();
    assert_eq!(aside.len(), 2, "only the changelog and the stale copy are left beside the table: {aside:?}");
    assert!(aside[0].ends_with("__changes") && aside[1].contains("__stopped_"), "{aside:?}");
    let kept = env.bq(&format!("SELECT COUNT(*) FROM `{PROJECT}.{dst}.{}`", aside[1])).await.unwrap();
    assert_eq!(count(kept), rows.to_string(), "the stale copy is kept whole");
    let rebuilding = env.bq(&format!("SELECT COUNT(*) FROM `{PROJECT}.{dst}._binferry_rebuilds`")).await.unwrap();
    assert_eq!(count(rebuilding), "0", "the rebuild is over");
    assert!(bf.interrupt(Duration::from_secs(60)).success());
}
