//! The Kafka buffer end to end: MariaDB → Kafka-protocol broker (tansu, started by
//! `scripts/kafka.sh`) → MySQL target, compared row by row with the source.

mod common;

use std::time::Duration;

use common::Env;
use common::workload::{Workload, create_schema};

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
