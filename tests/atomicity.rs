//! A reader of the target never sees half a source transaction, against the real servers:
//! a schema change inside a pending batch (held in place by a metadata lock on the target),
//! a Kafka reader killed after publishing the start of a transaction, an interrupted
//! snapshot, schema changes under load; and `run` waits for servers that are not up yet.

mod common;

use std::time::{Duration, Instant};

use common::bank::{self, Bank, Reader};
use common::{Binferry, Env, Server};
use mysql_async::prelude::Queryable;

const CONVERGE: Duration = Duration::from_secs(180);

/// The sentence of README.md's guarantees that these tests hold binferry to.
const PROMISE: &str = "From the moment binferry logs `target consistent`, every target commit holds whole source \
transactions only, and a reader of the target sees only states the source had.";

async fn wait_for_log(env: &Env, what: &str, after: usize, timeout: Duration) {
    let start = Instant::now();
    while !env.log().get(after..).is_some_and(|l| l.contains(what)) {
        let events: Vec<String> = env.log().lines().filter(|l| !l.contains(" progress ")).map(String::from).collect();
        assert!(start.elapsed() < timeout, "no `{what}` in the log within {timeout:?}:\n{}", events.join("\n"));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[test]
fn the_readme_makes_the_promise_these_tests_check() {
    let readme = include_str!("../README.md").split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(readme.contains(PROMISE), "README.md no longer says: {PROMISE}");
}

/// Issue #12, case 1. `txn1: UPDATE a; INSERT b`, `ALTER TABLE b ADD COLUMN`, `txn2: UPDATE a;
/// INSERT b` arrive in one pending batch. A target session holds a metadata lock on `b`, so
/// the ALTER binferry issues waits. A writer that committed the batch when `b`'s new shape
/// arrived, with `a`'s change of txn2 already in it, showed `a` ahead of `b` for as long as
/// the lock was held.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schema_change_inside_a_pending_batch_splits_no_transaction() {
    let mut env = Env::new("mdl").await;
    env.set(&["writer", "batch_max_delay_ms"], 2000);
    let db = env.src.clone();
    let mut c = env.conn().await;
    c.query_drop(format!("CREATE TABLE `{db}`.a (id INT PRIMARY KEY, v INT NOT NULL)")).await.unwrap();
    c.query_drop(format!("CREATE TABLE `{db}`.b (id INT PRIMARY KEY, a_v INT NOT NULL)")).await.unwrap();
    c.query_drop(format!("INSERT INTO `{db}`.a VALUES (1, 1)")).await.unwrap();
    c.query_drop(format!("INSERT INTO `{db}`.b VALUES (1, 1)")).await.unwrap();
    let bf = env.start_streaming().await;
    env.wait_equal(CONVERGE).await;

    // Invariant in every source state: a.v = the number of b rows. Read by the session that
    // holds the lock: READ COMMITTED, one statement, so each read sees the latest commits.
    let mut lock = env.target_pool.get_conn().await.unwrap();
    lock.query_drop("SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED").await.unwrap();
    lock.query_drop("START TRANSACTION").await.unwrap();
    let _: Vec<i32> = lock.query(format!("SELECT id FROM `{}`.b", env.dst)).await.unwrap();
    let read = format!("SELECT (SELECT v FROM `{0}`.a WHERE id = 1), (SELECT COUNT(*) FROM `{0}`.b)", env.dst);

    for sql in [
        "START TRANSACTION",
        "UPDATE a SET v = 2 WHERE id = 1",
        "INSERT INTO b VALUES (2, 2)",
        "COMMIT",
        "ALTER TABLE b ADD COLUMN extra INT NOT NULL DEFAULT 7",
        "START TRANSACTION",
        "UPDATE a SET v = 3 WHERE id = 1",
        "INSERT INTO b (id, a_v) VALUES (3, 3)",
        "COMMIT",
    ] {
        c.query_drop(format!("USE `{db}`")).await.unwrap();
        c.query_drop(sql).await.unwrap();
    }
    // The batch delay passes and binferry commits what it may; its ALTER of `b` then waits for
    // the lock. Watch the target meanwhile.
    let (mut seen, mut split) = (Vec::new(), Vec::new());
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(5) {
        let (v, n): (i64, i64) = lock.query_first(&read).await.unwrap().unwrap();
        if v != n {
            split.push((v, n));
        }
        seen.push(v);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(split.is_empty(), "the target showed half a transaction (a.v, rows of b): {split:?}");
    assert!(seen.contains(&2), "txn1 should reach the target before the ALTER; saw a.v = {seen:?}");
    lock.query_drop("COMMIT").await.unwrap();
    drop(lock);
    env.wait_equal(CONVERGE).await;
    assert!(bf.interrupt(Duration::from_secs(60)).success());
}

/// Issue #12, case 2. A Kafka reader publishes a small transaction and the start of a large
/// one in one batch, and dies before publishing the checkpoint (twice); each successor
/// publishes both again. The worker must drop the orphaned start instead of committing it
/// with the small transaction's second copy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_killed_after_publishing_part_of_a_transaction_splits_none() {
    let mut env = Env::new("kprefix").await;
    env.use_kafka("database");
    let mut c = env.conn().await;
    bank::create(&mut c, &env.src).await;
    let mut bank = Bank::new(&env.src, 7, 1);
    let _worker = env.start_role("worker", "worker");
    let reader = env.start_role("reader", "reader");
    bank.transfer(&mut c, 2).await;
    env.wait_equal(CONVERGE).await;
    let polling = Reader::spawn(env.target_pool.clone(), env.dst.clone(), || true);
    assert!(reader.interrupt(Duration::from_secs(60)).success());

    // Waiting in the binlog: the next reader reads both at once, and its first batch holds the
    // small one and the start of the large one.
    bank.transfer(&mut c, 2).await;
    bank.transfer(&mut c, 6_000).await;
    let (mut crashes, mut attempts) = (0, 0);
    while crashes < 2 {
        attempts += 1;
        assert!(attempts <= 6, "the reader never cut a batch inside the large transaction:\n{}", env.log_tails());
        let mut crash = Binferry::start_with_env(
            &env.config_path(),
            &env.dir.path().join("crash.log"),
            &["--role", "reader"],
            &[("BINFERRY_FAILPOINT", "kafka-before-checkpoint-mid-transaction")],
        );
        // When the batch is cut inside the large transaction the failpoint fires within
        // seconds of the start; a reader still running after 30 s has published the pair
        // whole, and waiting longer only delays the next attempt.
        let start = std::time::Instant::now();
        while crash.is_running() && start.elapsed() < Duration::from_secs(30) {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        if crash.is_running() {
            // A slow reader may flush its batch (10 ms deadline) right after the small
            // transaction's commit: it then publishes both whole and never reaches the
            // failpoint. Not the case under test: stop it and queue the pair again.
            if !crash.interrupt(Duration::from_secs(60)).success() {
                crashes += 1;
            }
            bank.transfer(&mut c, 2).await;
            bank.transfer(&mut c, 6_000).await;
            continue;
        }
        assert!(!crash.wait_exit(Duration::from_secs(5)).success());
        crashes += 1;
        // The worker holds what was published; the reader of the target watches.
        tokio::time::sleep(Duration::from_secs(3)).await;
    }
    assert!(env.log_of("crash").contains("failpoint kafka-before-checkpoint-mid-transaction: aborting"));
    let reader = env.start_role("reader", "reader");
    env.wait_equal(CONVERGE).await;
    let (checks, violations) = polling.finish().await;
    assert!(checks > 20, "the reader barely ran ({checks} reads)");
    assert!(violations.is_empty(), "a reader saw half a transaction: {violations:?}\n{}", env.log_tails());
    assert!(
        env.log_of("worker").contains("dropping the start of a source transaction that never completes"),
        "{}",
        env.log_tails()
    );
    assert!(reader.interrupt(Duration::from_secs(60)).success());
}

/// Issue #12, case 3, with the chunked snapshot of issue #17. A snapshot interrupted after the
/// first table resumes its chunked copies after the restart while transfers stream. The
/// target becomes consistent only once the last chunk is in, and binferry says so then, not
/// before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_an_interrupted_snapshot_the_target_is_consistent_from_when_binferry_says_so() {
    let mut env = Env::new("snapcons").await;
    env.set(&["snapshot", "chunk_rows"], 500);
    let mut c = env.conn().await;
    bank::create(&mut c, &env.src).await;
    bank::history(&mut c, &env.src, 40_000).await;
    // Tables are copied in name order: accounts, audit (large), transfers.
    let bf = env.start();
    wait_for_log(&env, &format!("table copied table={}.accounts", env.src), 0, Duration::from_secs(60)).await;
    bf.kill9();
    assert!(!env.log().contains("snapshot complete"), "the snapshot finished before the kill:\n{}", env.log());

    // Transfers run through the restart; the resumed copy of audit and transfers is taken at
    // a later position than the accounts' copy.
    let pool = env.pool.clone();
    let src = env.src.clone();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let running = std::sync::Arc::clone(&stop);
    let load = tokio::spawn(async move {
        let mut c = pool.get_conn().await.unwrap();
        let mut bank = Bank::new(&src, 3, 1_000_000);
        while !running.load(std::sync::atomic::Ordering::Relaxed) {
            bank.step(&mut c).await;
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    });
    tokio::time::sleep(Duration::from_secs(1)).await;
    let restart = env.log().len();
    let log_path = env.dir.path().join("binferry.log");
    let gate = move || {
        std::fs::read_to_string(&log_path)
            .is_ok_and(|l| l.get(restart..).is_some_and(|l| l.contains("target consistent:")))
    };
    let polling = Reader::spawn(env.target_pool.clone(), env.dst.clone(), gate);
    let bf = env.start();
    wait_for_log(&env, "target consistent:", restart, CONVERGE).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    load.await.unwrap();
    env.wait_equal(CONVERGE).await;
    let (checks, violations) = polling.finish().await;
    assert!(checks > 20, "the reader barely ran ({checks} reads after `target consistent`)");
    assert!(violations.is_empty(), "after `target consistent` a reader saw: {violations:?}\n{}", env.log_tails());
    let second = &env.log()[restart..];
    let streaming = second.find("streaming binlog").expect("streaming");
    let consistent = second.find("target consistent:").expect("consistent");
    let complete = second.find("snapshot complete").expect("the chunked copies complete");
    assert!(streaming < consistent, "binferry said consistent before streaming:\n{second}");
    assert!(complete < consistent, "binferry said consistent before the last chunk:\n{second}");
    assert!(bf.interrupt(Duration::from_secs(60)).success());
}

/// Schema changes while 1,000 transactions flow in small batches: no reader of the target ever sees
/// half a transaction, before or after a change of a table's shape.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readers_never_see_half_a_transaction_while_the_schema_changes() {
    let mut env = Env::new("ddlload").await;
    env.set(&["writer", "batch_max_rows"], 7);
    env.set(&["writer", "batch_max_delay_ms"], 20);
    let mut c = env.conn().await;
    bank::create(&mut c, &env.src).await;
    let bf = env.start_streaming().await;
    wait_for_log(&env, "target consistent:", 0, CONVERGE).await;
    let polling = Reader::spawn(env.target_pool.clone(), env.dst.clone(), || true);
    let mut bank = Bank::new(&env.src, 5, 1);
    for i in 0..1_000 {
        bank.step(&mut c).await;
        tokio::time::sleep(Duration::from_millis(5)).await;
        // Columns added with defaults, and widened: the changes binferry follows in place.
        let ddl = match i % 100 {
            30 => format!("ALTER TABLE `{}`.audit ADD COLUMN c{i} INT NOT NULL DEFAULT {i}", env.src),
            60 => format!("ALTER TABLE `{}`.audit MODIFY note VARCHAR({}) NULL", env.src, 64 + i),
            80 => format!("ALTER TABLE `{}`.transfers ADD COLUMN memo{i} VARCHAR(10) NULL", env.src),
            _ => continue,
        };
        c.query_drop(ddl).await.unwrap();
    }
    env.wait_equal(CONVERGE).await;
    let (checks, violations) = polling.finish().await;
    assert!(checks > 50, "the reader barely ran ({checks} reads)");
    assert!(violations.is_empty(), "a reader saw half a transaction: {violations:?}");
    assert!(bf.interrupt(Duration::from_secs(60)).success());
}

/// A supervisor may start binferry before its databases: `run` waits for the source and the
/// target, saying so at each attempt, and replicates once both answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_waits_for_servers_that_are_not_up_yet() {
    let env = Env::on_server(Server::start(&[]), "waits").await.with_target(Server::start(&[]));
    let mut c = env.conn().await;
    c.query_drop(format!("CREATE TABLE `{}`.t (id INT PRIMARY KEY, v VARCHAR(20))", env.src)).await.unwrap();
    c.query_drop(format!("INSERT INTO `{}`.t VALUES (1, 'before')", env.src)).await.unwrap();
    drop(c);
    let source = env.owned_server();
    source.stop();
    env.target_server().stop();

    let mut bf = env.start();
    wait_for_log(&env, "a server does not answer yet", 0, Duration::from_secs(30)).await;
    let first = env.log().matches("a server does not answer yet").count();
    source.restart();
    // Still waiting, now for the target only.
    let start = Instant::now();
    while env.log().matches("a server does not answer yet").count() < first + 2 {
        assert!(start.elapsed() < Duration::from_secs(60), "{}", env.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let tail = env.log().lines().rev().find(|l| l.contains("a server does not answer yet")).unwrap_or("").to_string();
    assert!(tail.contains("target"), "after the source came up it should wait for the target: {tail}");
    assert!(bf.is_running(), "binferry gave up:\n{}", env.log());
    env.target_server().restart();
    let mut c = env.conn().await;
    c.query_drop(format!("INSERT INTO `{}`.t VALUES (2, 'after')", env.src)).await.unwrap();
    env.wait_equal(CONVERGE).await;
    assert!(bf.interrupt(Duration::from_secs(60)).success());
}
