//! A checkpoint whose binlog file was purged stops with a definite error naming the
//! position and the remedy, and applies nothing.

mod common;

use std::time::Duration;

use common::{Env, Server};
use mysql_async::prelude::Queryable;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purged_checkpoint_stops_with_position_and_remedy() {
    let env = Env::on_server(Server::start(&[]), "purged").await;
    let mut c = env.conn().await;
    c.query_drop(format!("CREATE TABLE `{}`.t (id INT PRIMARY KEY, v VARCHAR(20))", env.src)).await.unwrap();
    c.query_drop(format!("INSERT INTO `{}`.t VALUES (1, 'a'), (2, 'b')", env.src)).await.unwrap();
    let bf = env.start();
    env.wait_equal(Duration::from_secs(60)).await;
    assert!(bf.interrupt(Duration::from_secs(30)).success());

    // While binferry is down, changes land in a binlog that is then purged.
    c.query_drop(format!("INSERT INTO `{}`.t VALUES (3, 'lost')", env.src)).await.unwrap();
    c.query_drop("FLUSH BINARY LOGS").await.unwrap();
    c.query_drop("FLUSH BINARY LOGS").await.unwrap();
    let (current, _): (String, u64) = {
        let mut row: mysql_async::Row = c.query_first("SHOW MASTER STATUS").await.unwrap().unwrap();
        (row.take(0).unwrap(), row.take(1).unwrap())
    };
    // The server keeps a file that a replication connection still reads; the old one
    // goes away within a heartbeat period.
    let start = std::time::Instant::now();
    loop {
        c.query_drop(format!("PURGE BINARY LOGS TO '{current}'")).await.unwrap();
        let (first, _size): (String, u64) = c.query_first("SHOW BINARY LOGS").await.unwrap().unwrap();
        if first == current {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(20), "binlogs before {current} are not purged");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let mut bf = env.start();
    let start = std::time::Instant::now();
    while bf.is_running() && start.elapsed() < Duration::from_secs(60) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let log = env.log();
    assert!(!bf.is_running(), "binferry kept running:\n{log}");
    let status = bf.wait_exit(Duration::from_secs(1));
    assert!(!status.success());
    assert!(log.contains("binlog purged: checkpoint position binlog.000001:"), "{log}");
    assert!(log.contains(&format!("oldest available: {current}")), "{log}");
    assert!(log.contains("fix: "), "{log}");
    let n: u64 = c.query_first(format!("SELECT COUNT(*) FROM `{}`.t", env.dst)).await.unwrap().unwrap();
    assert_eq!(n, 2, "nothing after the purged position was applied");
}
