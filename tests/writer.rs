//! The writer's guarantees under load, against the real MariaDB: replay is idempotent, hot
//! keys compact, readers never see half a source transaction, a 1,000,000-row transaction
//! streams in bounded memory, a target outage is waited out, keyless tables replicate as
//! multisets, soft deletes keep and revive rows, excluded columns stay out.

mod common;

use std::time::{Duration, Instant};

use common::workload::{Workload, create_schema};
use common::{Env, Server};
use mysql_async::prelude::Queryable;

const CONVERGE: Duration = Duration::from_secs(180);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_from_zero_twice_changes_nothing_and_repairs_drift() {
    let env = Env::new("replay").await;
    let mut c = env.conn().await;
    create_schema(&mut c, &env.src).await;
    let mut w = Workload::new(&env.src, 11);
    w.seed(&mut c, 300).await;
    let bf = env.start();
    w.run(&mut c, 6_000).await;
    env.wait_equal(CONVERGE).await;
    assert!(bf.interrupt(Duration::from_secs(60)).success());

    let before = env.target_checksums().await;
    for round in 1..=2 {
        let out = env.replay(&["--from-offset", "0"]);
        assert!(out.contains(" 0 rows written"), "round {round}: {out}");
        assert_eq!(env.target_checksums().await, before, "round {round} changed the target");
    }
    assert_eq!(env.diff().await, None);

    // Drift: rows deleted and changed by hand in the target come back with a replay.
    let mut t = env.target_pool.get_conn().await.unwrap();
    t.query_drop(format!("DELETE FROM `{}`.recipes ORDER BY id LIMIT 5", env.dst)).await.unwrap();
    t.query_drop(format!("UPDATE `{}`.ingredients SET name = 'tampered' ORDER BY id LIMIT 3", env.dst)).await.unwrap();
    assert!(env.diff().await.is_some());
    env.replay(&["--from-time", "0"]);
    assert_eq!(env.diff().await, None);
    // One table only.
    t.query_drop(format!("DELETE FROM `{}`.recipe_ingredients LIMIT 2", env.dst)).await.unwrap();
    let out = env.replay(&["--from-offset", "0", "--table", &format!("{}.recipe_ingredients", env.src)]);
    assert!(out.contains(" 2 rows written"), "{out}");
    assert_eq!(env.diff().await, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hot_key_updated_10000_times_costs_few_target_writes() {
    let env = Env::new("hotkey").await;
    let mut c = env.conn().await;
    c.query_drop(format!(
        "CREATE TABLE `{}`.counter (id INT PRIMARY KEY, n BIGINT NOT NULL, note VARCHAR(20))",
        env.src
    ))
    .await
    .unwrap();
    c.query_drop(format!("INSERT INTO `{}`.counter VALUES (1, 0, 'a')", env.src)).await.unwrap();
    let bf = env.start_streaming().await;
    for i in 1..=10_000 {
        // Small transactions: one update each (autocommit).
        c.query_drop(format!("UPDATE `{}`.counter SET n = {i} WHERE id = 1", env.src)).await.unwrap();
    }
    env.wait_equal(CONVERGE).await;
    let n: u64 = c.query_first(format!("SELECT n FROM `{}`.counter", env.dst)).await.unwrap().unwrap();
    assert_eq!(n, 10_000);
    assert!(bf.interrupt(Duration::from_secs(60)).success());
    let written = env.last_counter("target_rows_written").unwrap();
    let compacted = env.last_counter("rows_compacted").unwrap();
    println!("hot key: 10000 updates -> {written} target writes, {compacted} compacted");
    assert!(written < 1_000, "{written} target writes for 10,000 updates");
    assert!(compacted > 9_000, "only {compacted} changes compacted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readers_of_the_target_never_see_half_a_transaction() {
    let mut env = Env::new("atomic").await;
    // Tiny batches, so that batch boundaries fall everywhere a non-aligned writer would cut.
    env.set(&["writer", "batch_max_rows"], 3);
    env.set(&["writer", "batch_max_delay_ms"], 1);
    let mut c = env.conn().await;
    c.query_drop(format!("CREATE TABLE `{}`.recipes (id INT PRIMARY KEY, stock INT NOT NULL)", env.src)).await.unwrap();
    c.query_drop(format!("CREATE TABLE `{}`.recipe_ingredients (id INT PRIMARY KEY, stock INT NOT NULL)", env.src))
        .await
        .unwrap();
    // The initial copy of existing rows is not one source transaction (tables are copied one
    // after the other), so the stock arrives after the snapshot, in one source transaction.
    let bf = env.start_streaming().await;
    c.query_drop("START TRANSACTION").await.unwrap();
    c.query_drop(format!("INSERT INTO `{}`.recipes SELECT seq, 100 FROM seq_1_to_50", env.src)).await.unwrap();
    c.query_drop(format!("INSERT INTO `{}`.recipe_ingredients SELECT seq, 100 FROM seq_1_to_50", env.src))
        .await
        .unwrap();
    c.query_drop("COMMIT").await.unwrap();
    const TOTAL: i64 = 100 * 100;

    let pool = env.target_pool.clone();
    let dst = env.dst.clone();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop2 = stop.clone();
    let reader = tokio::spawn(async move {
        let mut t = pool.get_conn().await.unwrap();
        let (mut checks, mut violations) = (0u64, Vec::new());
        while !stop2.load(std::sync::atomic::Ordering::Relaxed) {
            if t.query_drop("START TRANSACTION WITH CONSISTENT SNAPSHOT").await.is_err() {
                continue;
            }
            let a: Result<Option<Option<i64>>, _> =
                t.query_first(format!("SELECT SUM(stock) FROM `{dst}`.recipes")).await;
            let b: Result<Option<Option<i64>>, _> =
                t.query_first(format!("SELECT SUM(stock) FROM `{dst}`.recipe_ingredients")).await;
            let _ = t.query_drop("COMMIT").await;
            if let (Ok(Some(Some(a))), Ok(Some(b))) = (a, b) {
                let sum = a + b.unwrap_or(0);
                checks += 1;
                if sum != TOTAL {
                    violations.push(sum);
                }
            }
        }
        (checks, violations)
    });
    // Each transaction moves stock between a recipe and an ingredient row, in both tables.
    use rand::Rng;
    for _ in 0..1_500 {
        let (r, i, k) = {
            let mut rng = rand::rng();
            (rng.random_range(1..=50), rng.random_range(1..=50), rng.random_range(1..=5))
        };
        c.query_drop("START TRANSACTION").await.unwrap();
        c.query_drop(format!("UPDATE `{}`.recipes SET stock = stock - {k} WHERE id = {r}", env.src)).await.unwrap();
        c.query_drop(format!("UPDATE `{}`.recipe_ingredients SET stock = stock + {k} WHERE id = {i}", env.src))
            .await
            .unwrap();
        c.query_drop("COMMIT").await.unwrap();
    }
    env.wait_equal(CONVERGE).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (checks, violations) = reader.await.unwrap();
    println!("reader checked the invariant {checks} times");
    assert!(checks > 50, "the reader barely ran ({checks} checks)");
    assert!(violations.is_empty(), "a reader saw half a transaction: sums {violations:?}");
    let commits = env.last_counter("target_commits").unwrap_or(0);
    assert!(commits > 100, "batches were not small: {commits} commits");
    assert!(bf.interrupt(Duration::from_secs(60)).success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_million_row_transaction_streams_in_bounded_memory() {
    let env = Env::new("bigtxn").await;
    let mut c = env.conn().await;
    c.query_drop(format!(
        "CREATE TABLE `{}`.events (id INT PRIMARY KEY, kind VARCHAR(20) NOT NULL, amount DECIMAL(12,2), payload VARCHAR(160))",
        env.src
    ))
    .await
    .unwrap();
    let bf = env.start();
    // ~200-byte rows, one source transaction.
    c.query_drop(format!(
        "INSERT INTO `{}`.events SELECT seq, 'purchase', seq / 100, RPAD(CONCAT('payload ', seq), 160, '.') FROM seq_1_to_1000000",
        env.src
    ))
    .await
    .unwrap();
    let source = env.checksum(&env.src, "events").await;
    // A reader of the target must see none or all of the transaction, never a chunk of it.
    let pool = env.target_pool.clone();
    let dst = env.dst.clone();
    let reader = tokio::spawn(async move {
        let mut t = pool.get_conn().await.unwrap();
        let mut seen = std::collections::BTreeSet::new();
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(900) {
            let n: Option<u64> = t.query_first(format!("SELECT COUNT(*) FROM `{dst}`.events")).await.unwrap_or(None);
            let n = n.unwrap_or(0);
            seen.insert(n);
            if n == 1_000_000 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        seen
    });
    let start = Instant::now();
    loop {
        if env.checksum(&env.dst, "events").await == source {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(900), "not replicated in 15 minutes\n{}", env.log());
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let seen = reader.await.unwrap();
    assert!(seen.iter().all(|n| *n == 0 || *n == 1_000_000), "a reader saw part of the transaction: {seen:?}");
    let peak_kb = bf.peak_rss_kb().unwrap();
    println!(
        "1,000,000-row transaction: replicated in {:.1}s, peak RSS {} MB",
        start.elapsed().as_secs_f64(),
        peak_kb / 1024
    );
    assert!(peak_kb < 300 * 1024, "peak RSS {} MB", peak_kb / 1024);
    assert!(bf.interrupt(Duration::from_secs(60)).success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_target_outage_is_waited_out_and_nothing_is_lost() {
    let mut env = Env::new("outage").await.with_target(Server::start(&[]));
    // A small backpressure limit: while the target is down the reader must pause, not run on.
    env.set(&["buffer", "embedded", "max_unapplied_records"], 300);
    let mut c = env.conn().await;
    create_schema(&mut c, &env.src).await;
    let mut w = Workload::new(&env.src, 12);
    w.seed(&mut c, 200).await;
    let bf = env.start();
    w.run(&mut c, 1_000).await;
    env.wait_equal(CONVERGE).await;
    let readyz = format!("{}/readyz", env.http_base().await);
    let ready = || async { reqwest::get(&readyz).await.map(|r| r.status().as_u16()).unwrap_or(0) };
    // What the reader logs from the outage on: its backlog there is what this test bounds.
    // (Before, a table copy's chunks wait on their own bound, two chunks' rows, not on
    // `max_unapplied_records`: README, Backpressure.)
    let logged_before_outage = env.log().len();
    env.target_server().stop();
    let down = Instant::now();
    let mut unready = false;
    while down.elapsed() < Duration::from_secs(30) {
        w.step(&mut c).await;
        tokio::time::sleep(Duration::from_millis(20)).await;
        if !unready && down.elapsed() > Duration::from_secs(5) {
            unready = ready().await == 503;
        }
    }
    assert!(unready, "/readyz stayed ready with the target down");
    env.target_server().restart();
    w.run(&mut c, 500).await;
    env.wait_equal(CONVERGE).await;
    let start = Instant::now();
    while ready().await != 200 {
        assert!(start.elapsed() < Duration::from_secs(60), "/readyz never ready again after the outage");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let log = env.log();
    assert!(log.contains("writer failed; retrying in"), "{log}");
    assert!(log.contains("target unavailable"), "{log}");
    assert!(log.contains("source_paused=true"), "the reader never paused:\n{log}");
    let most = log[logged_before_outage..]
        .lines()
        .filter_map(|l| l.split("buffer_pending=").nth(1)?.split(' ').next()?.parse::<u64>().ok())
        .max()
        .unwrap_or(0);
    // The limit, plus at most one transaction that started before it was reached.
    assert!(most < 300 + 100, "{most} records waited for the target\n{log}");
    assert!(bf.interrupt(Duration::from_secs(60)).success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keyless_table_replicates_as_a_multiset() {
    let env = Env::new("keyless").await;
    let mut c = env.conn().await;
    c.query_drop(format!("CREATE TABLE `{}`.log (level VARCHAR(10), msg VARCHAR(50), n INT)", env.src)).await.unwrap();
    c.query_drop(format!(
        "INSERT INTO `{}`.log VALUES ('info','start',1),('info','start',1),('warn','disk',2)",
        env.src
    ))
    .await
    .unwrap();
    let mut bf = env.start();
    use rand::Rng;
    for i in 0..600 {
        let (k, kill) = {
            let mut rng = rand::rng();
            (rng.random_range(0..6), rng.random_range(0..150) == 0)
        };
        let sql = match k {
            0 | 1 => format!("INSERT INTO `{}`.log VALUES ('info','start',1),('info','dup',{})", env.src, i % 3),
            2 => format!("DELETE FROM `{}`.log WHERE msg = 'start' LIMIT 1", env.src),
            3 => format!("UPDATE `{}`.log SET n = n + 1 WHERE msg = 'dup' LIMIT 1", env.src),
            4 => format!("UPDATE `{}`.log SET msg = 'start' WHERE level = 'warn' LIMIT 1", env.src),
            _ => format!("INSERT INTO `{}`.log VALUES ('warn','disk',2),('warn','disk',2)", env.src),
        };
        c.query_drop(sql).await.unwrap();
        if kill {
            // Crashes cut transactions: duplicated events must still count once.
            bf.kill9();
            bf = env.start();
        }
    }
    env.wait_equal(CONVERGE).await;
    assert!(bf.interrupt(Duration::from_secs(60)).success());
    // Replay adds nothing.
    env.replay(&["--from-offset", "0"]);
    assert_eq!(env.diff().await, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn soft_deletes_keep_rows_and_a_reinsert_revives_them() {
    let mut env = Env::new("soft").await;
    env.add_table_rule(&format!("{}.customers", env.src), &[("deletes", "soft".into())]);
    let mut c = env.conn().await;
    c.query_drop(format!("CREATE TABLE `{}`.customers (id INT PRIMARY KEY, name VARCHAR(40))", env.src)).await.unwrap();
    c.query_drop(format!("INSERT INTO `{}`.customers VALUES (1,'ann'),(2,'bob'),(3,'cy')", env.src)).await.unwrap();
    let bf = env.start_streaming().await;
    c.query_drop(format!("DELETE FROM `{}`.customers WHERE id IN (2, 3)", env.src)).await.unwrap();
    c.query_drop(format!("INSERT INTO `{}`.customers VALUES (4,'dee')", env.src)).await.unwrap();
    c.query_drop(format!("DELETE FROM `{}`.customers WHERE id = 4", env.src)).await.unwrap();
    c.query_drop(format!("INSERT INTO `{}`.customers VALUES (3,'cy again')", env.src)).await.unwrap();
    let mut t = env.target_pool.get_conn().await.unwrap();
    let q = format!("SELECT id, name, _binferry_deleted_at IS NOT NULL FROM `{}`.customers ORDER BY id", env.dst);
    let want = vec![(1, "ann".to_string(), 0), (2, "bob".into(), 1), (3, "cy again".into(), 0), (4, "dee".into(), 1)];
    let start = Instant::now();
    loop {
        let got: Vec<(i32, String, i32)> = t.query(&q).await.unwrap_or_default();
        if got == want {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(60), "target: {got:?}\n{}", env.log());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let live: Vec<(i32, String)> = t
        .query(format!("SELECT id, name FROM `{}`.customers WHERE _binferry_deleted_at IS NULL ORDER BY id", env.dst))
        .await
        .unwrap();
    let source: Vec<(i32, String)> =
        c.query(format!("SELECT id, name FROM `{}`.customers ORDER BY id", env.src)).await.unwrap();
    assert_eq!(live, source);
    assert!(bf.interrupt(Duration::from_secs(60)).success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn excluded_columns_never_reach_the_target() {
    let mut env = Env::new("exclude").await;
    env.add_table_rule(&format!("{}.users", env.src), &[("exclude_columns", vec!["password_hash"].into())]);
    let mut c = env.conn().await;
    c.query_drop(format!(
        "CREATE TABLE `{}`.users (id INT PRIMARY KEY, email VARCHAR(40), password_hash VARBINARY(32))",
        env.src
    ))
    .await
    .unwrap();
    c.query_drop(format!("INSERT INTO `{}`.users VALUES (1,'a@x','s1'),(2,'b@x','s2')", env.src)).await.unwrap();
    let bf = env.start_streaming().await;
    for i in 0..50 {
        c.query_drop(format!("UPDATE `{}`.users SET password_hash = 'h{i}'", env.src)).await.unwrap();
    }
    c.query_drop(format!("UPDATE `{}`.users SET email = 'new@x' WHERE id = 2", env.src)).await.unwrap();
    let mut t = env.target_pool.get_conn().await.unwrap();
    let start = Instant::now();
    loop {
        let rows: Vec<(i32, String)> =
            t.query(format!("SELECT id, email FROM `{}`.users ORDER BY id", env.dst)).await.unwrap_or_default();
        if rows == vec![(1, "a@x".to_string()), (2, "new@x".to_string())] {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(60), "{rows:?}\n{}", env.log());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let cols: Vec<String> = t
        .exec(
            "SELECT COLUMN_NAME FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = ? AND TABLE_NAME = 'users'",
            (&env.dst,),
        )
        .await
        .unwrap();
    assert!(!cols.contains(&"password_hash".to_string()), "{cols:?}");
    assert!(bf.interrupt(Duration::from_secs(60)).success());
    assert!(env.last_counter("source_updates_dropped").unwrap() >= 100, "password-only updates were replicated");
}
