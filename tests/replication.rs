//! End-to-end replication against the real MariaDB: MariaDB binlog → embedded buffer →
//! MySQL target, compared row by row with the source.

mod common;

use std::time::Duration;

use common::workload::{Workload, create_schema};
use common::{Binferry, Env};
use mysql_async::prelude::Queryable;
use rand::{Rng, SeedableRng};

const CONVERGE: Duration = Duration::from_secs(120);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mixed_workload_replicates_row_by_row() {
    let env = Env::new("mixed").await;
    let mut c = env.conn().await;
    create_schema(&mut c, &env.src).await;
    // Empty at the snapshot: copied in chunks (keyed) and whole (keyless).
    let src = &env.src;
    c.query_drop(format!("CREATE TABLE `{src}`.empty_keyed (id INT PRIMARY KEY, v INT)")).await.unwrap();
    c.query_drop(format!("CREATE TABLE `{src}`.empty_keyless (v INT)")).await.unwrap();
    let mut w = Workload::new(&env.src, 1);
    w.seed(&mut c, 300).await;
    let bf = env.start();
    let changes = w.run(&mut c, 10_000).await;
    assert!(changes >= 10_000);
    env.wait_equal(CONVERGE).await;
    // An empty source table has its target table from its copy on, not from its first row.
    let mut tc = env.target_pool.get_conn().await.unwrap();
    for t in ["empty_keyed", "empty_keyless"] {
        let count = format!("SELECT COUNT(*) FROM `{}`.`{t}`", env.dst);
        let start = std::time::Instant::now();
        while tc.query_first::<u64, _>(&count).await.ok().flatten() != Some(0) {
            assert!(start.elapsed() < CONVERGE, "no target table {t}\n{}", env.log_tails());
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
    drop(tc);
    let status = bf.interrupt(Duration::from_secs(30));
    assert!(status.success(), "exit status {status:?}\n{}", env.log());
}

/// One source transaction larger than the writer holds at once (10,000 changes, applied into
/// the open target transaction as they come) that reaches, after them, a table the target does
/// not have yet (created empty, its first rows in this
/// transaction): the target table is created while the target transaction is open, and the
/// transaction still applies whole, the first time (MariaDB refuses a read of a table newer
/// than a repeatable-read transaction's view: "Table definition has changed", 1412).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_transaction_reaching_a_new_table_applies_at_once() {
    let env = Env::new("newtable").await;
    let src = env.src.clone();
    let mut c = env.conn().await;
    c.query_drop(format!("CREATE TABLE `{src}`.a (id INT PRIMARY KEY, v INT)")).await.unwrap();
    c.query_drop(format!("INSERT INTO `{src}`.a VALUES (1, 1)")).await.unwrap();
    let bf = env.start();
    env.wait_equal(CONVERGE).await;
    c.query_drop(format!("CREATE TABLE `{src}`.b (id INT PRIMARY KEY, v INT)")).await.unwrap();
    c.query_drop(format!(
        "START TRANSACTION; INSERT INTO `{src}`.a SELECT seq, seq FROM seq_2_to_10200; \
         INSERT INTO `{src}`.b VALUES (1, 1), (2, 2); COMMIT"
    ))
    .await
    .unwrap();
    env.wait_equal(CONVERGE).await;
    let log = env.log();
    assert!(!log.contains("retrying"), "the transaction failed before it applied:\n{}", env.log_tails());
    assert!(bf.interrupt(Duration::from_secs(60)).success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn survives_sigkill_at_random_moments() {
    let env = Env::new("sigkill").await;
    let mut c = env.conn().await;
    create_schema(&mut c, &env.src).await;
    let mut w = Workload::new(&env.src, 2);
    w.seed(&mut c, 300).await;

    // Paced so that the workload spans many seconds and every kill lands inside it.
    let load = env.background_load(3, 12_000, Duration::from_millis(3));
    let mut kills_during_load = 0;
    let mut bf = env.start();
    while !load.is_finished() {
        let wait = rand::rng().random_range(200..1200);
        tokio::time::sleep(Duration::from_millis(wait)).await;
        if load.is_finished() {
            break;
        }
        bf.kill9();
        kills_during_load += 1;
        bf = env.start();
    }
    assert!(load.await.unwrap() >= 12_000);
    assert!(kills_during_load >= 5, "only {kills_during_load} kills during the workload");
    env.wait_equal(CONVERGE).await;
    assert!(bf.interrupt(Duration::from_secs(30)).success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_with_concurrent_writes_loses_and_doubles_nothing() {
    let mut env = Env::new("snapshot").await;
    env.set(&["snapshot", "chunk_rows"], 500);
    // Copy batches split over 2 connections here (4, the default, in the SIGKILL test).
    env.set(&["sink", "mysql", "copy_connections"], 2);
    let mut c = env.conn().await;
    create_schema(&mut c, &env.src).await;
    let mut w = Workload::new(&env.src, 4);
    w.seed(&mut c, 40_000).await;
    for _ in 0..200 {
        w.step(&mut c).await;
    }
    // Writes start before binferry and go on while it copies the existing rows.
    let src = env.src.clone();
    let pool = env.pool.clone();
    let load = tokio::spawn(async move {
        let mut c = pool.get_conn().await.unwrap();
        let mut w = Workload::new(&src, 5);
        w.next_ingredient_from(2_000_000);
        w.run(&mut c, 5_000).await
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let bf = env.start();
    load.await.unwrap();
    env.wait_equal(CONVERGE).await;
    env.wait_log("snapshot complete", Duration::from_secs(60)).await;
    assert!(bf.interrupt(Duration::from_secs(30)).success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interrupted_snapshot_does_not_copy_finished_tables_again() {
    let mut env = Env::new("snapresume").await;
    env.set(&["snapshot", "chunk_rows"], 200);
    let mut c = env.conn().await;
    create_schema(&mut c, &env.src).await;
    // `ingredients` sorts first and is small; `recipes` is large and slow to copy.
    let mut w = Workload::new(&env.src, 6);
    for _ in 0..50 {
        w.step(&mut c).await;
    }
    w.seed(&mut c, 60_000).await;
    let bf = env.start();
    let start = std::time::Instant::now();
    while !env.log().contains(&format!("table copied table={}.ingredients", env.src)) {
        assert!(start.elapsed() < Duration::from_secs(60), "{}", env.log());
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // Kill once part of `recipes` has reached the target.
    let mut t = env.target_pool.get_conn().await.unwrap();
    loop {
        let n: Option<u64> = t.query_first(format!("SELECT COUNT(*) FROM `{}`.recipes", env.dst)).await.unwrap_or(None);
        if n.unwrap_or(0) > 0 {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(60), "{}", env.log());
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    bf.kill9();
    assert!(!env.log().contains("snapshot complete"), "the snapshot finished before the kill; make the table larger");
    let before = env.log().len();
    w.run(&mut c, 500).await;
    // Rows the interrupted copy may already have carried are deleted before the copy resumes:
    // the new copy must not leave them behind (its binlog for this table starts after them).
    c.query_drop(format!(
        "DELETE FROM `{0}`.recipe_ingredients WHERE recipe_id IN (SELECT id FROM (SELECT id FROM `{0}`.recipes ORDER BY id LIMIT 50) x)",
        env.src
    ))
    .await
    .unwrap();
    c.query_drop(format!("DELETE FROM `{}`.recipes ORDER BY id LIMIT 50", env.src)).await.unwrap();
    let bf = env.start();
    env.wait_equal(CONVERGE).await;
    let second_run = env.log()[before..].to_string();
    assert!(!second_run.contains(&format!("table copied table={}.ingredients", env.src)), "{second_run}");
    assert!(second_run.contains(&format!("table copied table={}.recipes", env.src)), "{second_run}");
    assert!(bf.interrupt(Duration::from_secs(30)).success());
}

/// The chunked snapshot of a 1M-row table, with writes to it throughout and SIGKILLs at
/// random moments of the copy: the target ends equal to the source, and every restart
/// resumes after the last chunk the buffer holds (never from the first row).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunked_snapshot_resumes_after_the_last_chunk_through_sigkills() {
    const ROWS: u64 = 1_000_000;
    const CHUNK: u64 = 4_000;
    let mut env = Env::new("chunkkill").await;
    env.set(&["snapshot", "chunk_rows"], CHUNK as i64);
    env.set(&["snapshot", "parallel"], 3);
    let mut c = env.conn().await;
    let big = format!("`{}`.big", env.src);
    c.query_drop(format!("CREATE TABLE {big} (id BIGINT PRIMARY KEY, v VARCHAR(40), n INT)")).await.unwrap();
    c.query_drop(format!("INSERT INTO {big} SELECT seq, MD5(seq), seq FROM seq_1_to_{ROWS}")).await.unwrap();
    // Updates, deletes and inserts across the key range while the copy runs.
    let pool = env.pool.clone();
    let writes = tokio::spawn({
        let big = big.clone();
        async move {
            let mut c = pool.get_conn().await.unwrap();
            let mut n = 0u64;
            let mut rng = rand::rngs::StdRng::seed_from_u64(17);
            for i in 0..4_000u64 {
                let id = rng.random_range(1..=ROWS);
                let sql = match i % 3 {
                    0 => format!("UPDATE {big} SET v = 'changed {i}', n = n + 1 WHERE id = {id}"),
                    1 => format!("DELETE FROM {big} WHERE id = {id}"),
                    _ => format!("INSERT INTO {big} VALUES ({}, 'new {i}', {i})", ROWS + i + 1),
                };
                c.query_drop(sql).await.unwrap();
                n += 1;
                tokio::time::sleep(Duration::from_millis(4)).await;
            }
            n
        }
    });
    let mut bf = env.start();
    let mut kills = 0;
    let mut resumed_at: Vec<u64> = Vec::new();
    let start = std::time::Instant::now();
    loop {
        let wait = rand::rng().random_range(400..1500);
        tokio::time::sleep(Duration::from_millis(wait)).await;
        let log = env.log();
        if log.contains("snapshot complete") || kills >= 8 {
            break;
        }
        bf.kill9();
        kills += 1;
        let before = env.log().len();
        bf = env.start();
        // The restart says where it resumes (right after it starts streaming), unless the
        // killed run had not taken a chunk yet.
        while !env.log()[before..].contains("streaming binlog") {
            assert!(start.elapsed() < Duration::from_secs(300), "{}", env.log_tails());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        let log = env.log();
        let line = log[before..].lines().find(|l| l.contains("chunked copy resumes after its last chunk"));
        if let Some(n) = line.and_then(|l| l.split("chunks=").nth(1)).and_then(|r| r.split_whitespace().next()) {
            resumed_at.push(n.parse().unwrap());
        }
    }
    assert!(kills >= 5, "only {kills} kills during the copy: make the table larger\n{}", env.log_tails());
    assert!(resumed_at.len() >= 4, "restarts did not resume a copy in progress: {resumed_at:?}");
    assert!(resumed_at.windows(2).all(|w| w[0] <= w[1]), "a restart went back: {resumed_at:?}");
    assert!(resumed_at.last().is_some_and(|&n| n > 0), "no restart found a chunk to resume after: {resumed_at:?}");
    writes.await.unwrap();
    env.wait_equal(Duration::from_secs(300)).await;
    // Every chunk was read about once: a copy that restarted from the first row would read
    // at least a chunk per key range per run.
    let log = env.log();
    let done = log.lines().find(|l| l.contains("table copied") && l.contains(".big")).expect("table copied line");
    let chunks: u64 = done.split("chunks=").nth(1).and_then(|r| r.split_whitespace().next()).unwrap().parse().unwrap();
    let ranges = (ROWS + 4_000) / CHUNK + 1;
    eprintln!("{kills} kills, restarts resumed after chunks {resumed_at:?}, {chunks} chunks in all");
    assert!(chunks <= ranges + kills as u64, "{chunks} chunks for {ranges} key ranges and {kills} kills");
    assert!(bf.interrupt(Duration::from_secs(30)).success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_exits_zero_and_the_next_run_continues_without_gap() {
    let env = Env::new("ctrlc").await;
    let mut c = env.conn().await;
    create_schema(&mut c, &env.src).await;
    let mut w = Workload::new(&env.src, 7);
    w.seed(&mut c, 100).await;
    let bf = env.start();
    w.run(&mut c, 2_000).await;
    let status = bf.interrupt(Duration::from_secs(60));
    assert!(status.success(), "exit status {status:?}\n{}", env.log());
    assert!(env.log().contains("pipeline stopped cleanly"));
    // Changes made while binferry is down are picked up by the next run.
    w.run(&mut c, 2_000).await;
    let bf = env.start();
    env.wait_equal(CONVERGE).await;
    assert!(bf.interrupt(Duration::from_secs(60)).success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_target_settings_stop_clearly() {
    // A target database name clash between two source tables is a definite error, not data loss.
    let mut env = Env::new("clash").await;
    let mut c = env.conn().await;
    c.query_drop_simple(&format!("CREATE TABLE `{}`.a (id INT PRIMARY KEY)", env.src)).await;
    let other = format!("{}_x", env.src);
    c.query_drop_simple(&format!("CREATE DATABASE `{other}`")).await;
    c.query_drop_simple(&format!("CREATE TABLE `{other}`.a (id INT PRIMARY KEY)")).await;
    c.query_drop_simple(&format!("INSERT INTO `{}`.a VALUES (1)", env.src)).await;
    c.query_drop_simple(&format!("INSERT INTO `{other}`.a VALUES (2)")).await;
    env.set(&["source", "include"], vec![format!("{}.*", env.src), format!("{other}.*")]);
    env.write_config();
    let bf = Binferry::start(&env.config_path(), &env.dir.path().join("binferry.log"));
    let status = bf.wait_exit(Duration::from_secs(60));
    c.query_drop_simple(&format!("DROP DATABASE `{other}`")).await;
    assert!(!status.success());
    assert!(env.log().contains("both map to target table"), "{}", env.log());
}

trait QuerySimple {
    async fn query_drop_simple(&mut self, sql: &str);
}

impl QuerySimple for mysql_async::Conn {
    async fn query_drop_simple(&mut self, sql: &str) {
        use mysql_async::prelude::Queryable;
        self.query_drop(sql).await.unwrap();
    }
}
