//! The Kafka buffer end to end: MariaDB → Kafka-protocol broker (tansu, started by
//! `scripts/kafka.sh`) → MySQL target, compared row by row with the source.

mod common;

use std::time::Duration;

use common::Env;
use common::workload::{Workload, create_schema};
use mysql_async::prelude::Queryable;
use rand::Rng;

const CONVERGE: Duration = Duration::from_secs(120);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mixed_workload_through_kafka() {
    let mut env = Env::new("kmixed").await;
    env.use_kafka("database", "");
    let mut c = env.conn().await;
    create_schema(&mut c, &env.src).await;
    let mut w = Workload::new(&env.src, 11);
    w.seed(&mut c, 200).await;
    let bf = env.start();
    w.run(&mut c, 3_000).await;
    env.wait_equal(CONVERGE).await;
    let status = bf.interrupt(Duration::from_secs(30));
    let log = env.log();
    assert!(status.success(), "exit status {status:?}\n{log}");
    assert!(log.contains("partition assigned"), "the changes did not go through Kafka:\n{log}");
}

/// A paced workload in the background, spanning many seconds.
fn background_load(env: &Env, seed: u64, changes: u64, pause_ms: u64) -> tokio::task::JoinHandle<u64> {
    let (src, pool) = (env.src.clone(), env.pool.clone());
    tokio::spawn(async move {
        let mut c = pool.get_conn().await.unwrap();
        let mut w = Workload::new(&src, seed);
        w.next_ingredient_from(1_000_000);
        w.run_paced(&mut c, changes, Duration::from_millis(pause_ms)).await
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reader_and_worker_survive_sigkill() {
    let mut env = Env::new("kkill").await;
    env.use_kafka("database", "");
    let mut c = env.conn().await;
    create_schema(&mut c, &env.src).await;
    let mut w = Workload::new(&env.src, 12);
    w.seed(&mut c, 200).await;
    let load = background_load(&env, 13, 10_000, 4);
    let mut reader = env.start_role("reader", "reader");
    let mut worker = env.start_role("worker", "worker");
    let (mut reader_kills, mut worker_kills) = (0, 0);
    let mut turn = 0u32;
    while !load.is_finished() || reader_kills < 5 || worker_kills < 5 {
        let wait = rand::rng().random_range(300..1500);
        tokio::time::sleep(Duration::from_millis(wait)).await;
        if turn % 2 == 0 {
            reader.kill9();
            reader_kills += 1;
            reader = env.start_role("reader", "reader");
        } else {
            worker.kill9();
            worker_kills += 1;
            worker = env.start_role("worker", "worker");
        }
        turn += 1;
    }
    assert!(load.await.unwrap() >= 10_000);
    env.wait_equal(CONVERGE).await;
    assert!(reader.interrupt(Duration::from_secs(30)).success(), "{}", env.log_of("reader"));
    assert!(worker.interrupt(Duration::from_secs(60)).success(), "{}", env.log_of("worker"));
    assert!(env.diff().await.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_workers_share_partitions_and_the_survivor_takes_over() {
    let mut env = Env::new("kgroup").await;
    env.use_kafka("table", "");
    let mut c = env.conn().await;
    create_schema(&mut c, &env.src).await;
    let mut w = Workload::new(&env.src, 14);
    w.seed(&mut c, 200).await;
    // Every table gets rows, so the snapshot creates every topic up front.
    for _ in 0..100 {
        w.step(&mut c).await;
    }
    let reader = env.start_role("reader", "reader");
    let a = env.start_role("worker", "a");
    let b = env.start_role("worker", "b");
    // Both members own partitions (one topic per table, created by the snapshot) before the
    // workload starts and one of them dies in its middle.
    let start = std::time::Instant::now();
    while !(env.log_of("a").contains("partition assigned") && env.log_of("b").contains("partition assigned")) {
        assert!(
            start.elapsed() < Duration::from_secs(90),
            "partitions were not shared:\n--- a ---\n{}\n--- b ---\n{}",
            env.log_of("a"),
            env.log_of("b")
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let load = background_load(&env, 15, 8_000, 3);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(!load.is_finished(), "the workload ended before the kill; make it longer");
    a.kill9();
    let b_assigned = env.log_of("b").matches("partition assigned").count();
    // A table created now gets a topic the group has not seen yet: it must be picked up too.
    c.query_drop(format!("CREATE TABLE `{}`.late (id INT PRIMARY KEY, v VARCHAR(20))", env.src)).await.unwrap();
    c.query_drop(format!("INSERT INTO `{}`.late VALUES (1, 'one'), (2, 'two')", env.src)).await.unwrap();
    assert!(load.await.unwrap() >= 8_000);
    env.wait_equal(CONVERGE).await;
    assert!(
        env.log_of("b").matches("partition assigned").count() > b_assigned,
        "the survivor never took over:\n{}",
        env.log_of("b")
    );
    assert!(reader.interrupt(Duration::from_secs(30)).success());
    assert!(b.interrupt(Duration::from_secs(60)).success(), "{}", env.log_of("b"));
}
