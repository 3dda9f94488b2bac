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
    env.use_kafka("database");
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reader_and_worker_survive_sigkill() {
    let mut env = Env::new("kkill").await;
    env.use_kafka("database");
    let mut c = env.conn().await;
    create_schema(&mut c, &env.src).await;
    let mut w = Workload::new(&env.src, 12);
    w.seed(&mut c, 200).await;
    let load = env.background_load(13, 10_000, Duration::from_millis(4));
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
    env.use_kafka("table");
    let mut c = env.conn().await;
    create_schema(&mut c, &env.src).await;
    let mut w = Workload::new(&env.src, 14);
    w.seed(&mut c, 200).await;
    // Every table gets rows, so the snapshot creates every topic up front.
    for _ in 0..100 {
        w.step(&mut c).await;
    }
    // Both members own partitions (one topic per table, created by the snapshot) before the
    // workload starts and one of them dies in its middle.
    let (reader, a, b) = env.start_reader_and_two_workers().await;
    let load = env.background_load(15, 8_000, Duration::from_millis(3));
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

/// Write `payload` (and `key`) straight into partition 0 of the pipeline's topic for `db`, as
/// a foreign producer or a damaged message would.
async fn inject(env: &Env, key: Option<&[u8]>, payload: &[u8]) {
    use rdkafka::producer::{FutureProducer, FutureRecord};
    let producer: FutureProducer =
        rdkafka::ClientConfig::new().set("bootstrap.servers", common::kafka_brokers()).create().unwrap();
    let topic = format!("{}.{}", env.name, env.src);
    let mut record = FutureRecord::<[u8], [u8]>::to(&topic).partition(0).payload(payload);
    if let Some(k) = key {
        record = record.key(k);
    }
    producer.send(record, Duration::from_secs(30)).await.map_err(|(e, _)| e).unwrap();
}

async fn two_tables(env: &Env) -> mysql_async::Conn {
    let mut c = env.conn().await;
    for t in ["a", "b"] {
        c.query_drop(format!("CREATE TABLE `{}`.{t} (id INT PRIMARY KEY, v VARCHAR(20))", env.src)).await.unwrap();
        c.query_drop(format!("INSERT INTO `{}`.{t} VALUES (1, 'x'), (2, 'y')", env.src)).await.unwrap();
    }
    c
}

async fn target_has(env: &Env, table: &str, id: i32) -> bool {
    let mut t = env.target_pool.get_conn().await.unwrap();
    let n: Option<i64> =
        t.query_first(format!("SELECT COUNT(*) FROM `{}`.{table} WHERE id = {id}", env.dst)).await.unwrap_or(None);
    n == Some(1)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poison_message_stops_its_table_then_the_partition() {
    let mut env = Env::new("kpoison").await;
    env.use_kafka("database");
    let mut c = two_tables(&env).await;
    let bf = env.start();
    env.wait_equal(CONVERGE).await;

    let key = format!(r#"{{"db":"{}","table":"a"}}"#, env.src);
    inject(&env, Some(key.as_bytes()), b"{not an envelope").await;
    c.query_drop(format!("INSERT INTO `{}`.a VALUES (100, 'after')", env.src)).await.unwrap();
    c.query_drop(format!("INSERT INTO `{}`.b VALUES (100, 'after')", env.src)).await.unwrap();
    let start = std::time::Instant::now();
    while !target_has(&env, "b", 100).await {
        assert!(start.elapsed() < CONVERGE, "table b stopped replicating:\n{}", env.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Table a is stopped durably, with the message's origin; its later change is not applied.
    let mut t = env.target_pool.get_conn().await.unwrap();
    let reason: Option<String> = t
        .query_first(format!("SELECT reason FROM `{}`._binferry_stopped WHERE source_table = 'a'", env.dst))
        .await
        .unwrap();
    let reason = reason.unwrap_or_else(|| panic!("table a was not stopped:\n{}", env.log()));
    let origin = format!("Kafka topic {}.{} partition 0 offset", env.name, env.src);
    assert!(reason.contains(&origin), "{reason}");
    assert!(!target_has(&env, "a", 100).await);
    assert!(env.log().contains("undecodable message: table stopped"), "{}", env.log());

    // Without a readable key nothing can be skipped safely: the worker stops, saying where.
    inject(&env, None, b"\x00\x01garbage").await;
    let status = bf.wait_exit(CONVERGE);
    assert!(!status.success());
    let log = env.log();
    assert!(log.contains(&origin) && log.contains("dead_letter"), "{log}");
}

/// With the `key` layout a table's rows are spread over every partition, and an undecodable
/// message stops its table in one of them: the other partitions' writers must stop it too,
/// not keep writing it until a resync, and the resync brings it back in every partition.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_key_layout_a_table_one_partition_stopped_stops_in_every_partition() {
    let mut env = Env::new("kstopall").await;
    env.use_kafka("key");
    env.listen_on_a_free_port();
    let mut c = two_tables(&env).await;
    let bf = env.start();
    env.wait_equal(CONVERGE).await;
    let src = env.src.clone();

    let key = format!(r#"{{"db":"{src}","table":"a"}}"#);
    inject(&env, Some(key.as_bytes()), b"{not an envelope").await;
    // Rows of b on every partition make each writer commit, and so look at the stops (every
    // 10 s): wait until the three other partitions' writers skip a too.
    let adopted = "table stopped by another partition's writer";
    let start = std::time::Instant::now();
    let mut id = 100;
    while env.log().matches(adopted).count() < 3 {
        assert!(start.elapsed() < CONVERGE, "the other partitions never stopped table a:\n{}", env.log());
        c.query_drop(format!("INSERT INTO `{src}`.b VALUES ({id}, 'before')")).await.unwrap();
        id += 1;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert!(env.log().contains("undecodable message: table stopped"), "{}", env.log());

    // Now changes of a on every partition are skipped, b's applied.
    c.query_drop(format!("INSERT INTO `{src}`.a SELECT seq, 'after' FROM seq_1000_to_1039")).await.unwrap();
    c.query_drop(format!("INSERT INTO `{src}`.b SELECT seq, 'after' FROM seq_1000_to_1039")).await.unwrap();
    // b's rows are spread over the partitions too: once all 40 are in, every partition has
    // passed a's rows, which were written before them.
    let mut t = env.target_pool.get_conn().await.unwrap();
    let count = |table: &str| format!("SELECT COUNT(*) FROM `{}`.{table} WHERE id >= 1000", env.dst);
    let start = std::time::Instant::now();
    while t.query_first::<i64, _>(count("b")).await.unwrap() != Some(40) {
        assert!(start.elapsed() < CONVERGE, "b's rows did not all arrive:\n{}", env.log());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let applied_a = t.query_first::<i64, _>(count("a")).await.unwrap();
    assert_eq!(applied_a, Some(0), "a stopped table kept being written by the other partitions:\n{}", env.log());

    // A resync starts it again in every partition.
    let (ok, text) = env.resync(&[&format!("{src}.a")]);
    assert!(ok, "{text}\n{}", env.log());
    c.query_drop(format!("INSERT INTO `{src}`.a SELECT seq, 'resumed' FROM seq_2000_to_2039")).await.unwrap();
    env.wait_equal(CONVERGE).await;
    assert!(bf.interrupt(Duration::from_secs(60)).success(), "{}", env.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poison_message_goes_to_the_dead_letter_topic() {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::message::{Headers, Message};
    let mut env = Env::new("kdlq").await;
    env.use_kafka("database");
    env.set(&["buffer", "kafka", "on_poison"], "dead_letter");
    let mut c = two_tables(&env).await;
    let bf = env.start();
    env.wait_equal(CONVERGE).await;
    let key = format!(r#"{{"db":"{}","table":"a"}}"#, env.src);
    inject(&env, Some(key.as_bytes()), b"{\"v\":99,\"r\":{}}").await;
    c.query_drop(format!("INSERT INTO `{}`.a VALUES (100, 'after')", env.src)).await.unwrap();
    c.query_drop(format!("INSERT INTO `{}`.b VALUES (100, 'after')", env.src)).await.unwrap();
    // Nothing stops: both tables keep replicating.
    env.wait_equal(CONVERGE).await;
    assert!(env.log().contains("undecodable message routed to the dead-letter topic"), "{}", env.log());

    // The dead-letter topic holds the message as it was, with its origin in headers.
    let dlq = format!("{}-dead-letter", env.name);
    let consumer: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", common::kafka_brokers())
        .set("group.id", format!("{}-check", env.name))
        .create()
        .unwrap();
    let mut tpl = rdkafka::TopicPartitionList::new();
    tpl.add_partition_offset(&dlq, 0, rdkafka::Offset::Beginning).unwrap();
    consumer.assign(&tpl).unwrap();
    let msg = match consumer.poll(Duration::from_secs(30)) {
        Some(Ok(m)) => m.detach(),
        Some(Err(e)) => panic!("reading {dlq}: {e}"),
        None => panic!("nothing in {dlq}"),
    };
    assert_eq!(msg.payload(), Some(&b"{\"v\":99,\"r\":{}}"[..]));
    assert_eq!(msg.key(), Some(key.as_bytes()));
    let headers = msg.headers().expect("headers");
    let error = headers.iter().find(|h| h.key == "binferry-error").and_then(|h| h.value).unwrap();
    assert!(String::from_utf8_lossy(error).contains("envelope version 99"));
    assert!(headers.iter().any(|h| h.key == "binferry-offset"));
    assert!(bf.interrupt(Duration::from_secs(30)).success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_from_kafka_changes_nothing_and_repairs_drift() {
    let mut env = Env::new("kreplay").await;
    env.use_kafka("key");
    let mut c = env.conn().await;
    create_schema(&mut c, &env.src).await;
    let mut w = Workload::new(&env.src, 16);
    w.seed(&mut c, 200).await;
    let bf = env.start();
    w.run(&mut c, 2_000).await;
    env.wait_equal(CONVERGE).await;
    assert!(bf.interrupt(Duration::from_secs(60)).success());

    let before = env.target_checksums().await;
    let out = env.replay(&["--from-offset", "0"]);
    assert!(out.contains(" 0 rows written"), "{out}");
    assert_eq!(env.target_checksums().await, before, "replay changed a correct target");

    let mut t = env.target_pool.get_conn().await.unwrap();
    t.query_drop(format!("DELETE FROM `{}`.recipes ORDER BY id LIMIT 5", env.dst)).await.unwrap();
    t.query_drop(format!("UPDATE `{}`.ingredients SET name = 'tampered' ORDER BY id LIMIT 3", env.dst)).await.unwrap();
    assert!(env.diff().await.is_some());
    env.replay(&["--from-time", "0"]);
    assert_eq!(env.diff().await, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_reports_unreachable_brokers() {
    let mut env = Env::new("kcheck").await;
    env.use_kafka("database");
    // Reachable: the broker answers and the topics will be created.
    env.write_config();
    let cfg = env.config_path();
    let out = common::binferry_cmd(&["check", "--config", cfg.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("buffer: Kafka at") && text.contains("will be created"), "{text}");
    // Unreachable: a problem naming the setting, and exit 1.
    env.set(&["buffer", "kafka", "brokers"], "127.0.0.1:1");
    env.write_config();
    let out = common::binferry_cmd(&["check", "--config", cfg.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("problem: buffer.kafka.brokers: expected Kafka brokers answering"), "{text}");
}

/// In the key layout every partition holds rows of every table and a copy of each DDL record.
/// A rename or drop must wait until every partition has applied its rows from before the
/// statement, and then be applied once: rows of the old shape must not reach a renamed
/// column or table, and two partitions must not rename the same column.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_layout_applies_renames_and_drops_once_all_partitions_reach_them() {
    let mut env = Env::new("kddl").await;
    env.use_kafka("key");
    let db = env.src.clone();
    let mut c = env.conn().await;
    c.query_drop(format!("CREATE TABLE `{db}`.t (id INT PRIMARY KEY, name VARCHAR(40), n INT)")).await.unwrap();
    c.query_drop(format!("CREATE TABLE `{db}`.u (id INT PRIMARY KEY, v INT)")).await.unwrap();
    c.query_drop(format!("INSERT INTO `{db}`.t SELECT seq, CONCAT('r', seq), 0 FROM seq_1_to_400")).await.unwrap();
    c.query_drop(format!("INSERT INTO `{db}`.u SELECT seq, seq FROM seq_1_to_100")).await.unwrap();
    let bf = env.start();
    env.wait_equal(CONVERGE).await;
    let mut table = "t";
    let statements = [
        "ALTER TABLE `{db}`.t RENAME COLUMN name TO title",
        "ALTER TABLE `{db}`.t RENAME COLUMN title TO name",
        "RENAME TABLE `{db}`.t TO `{db}`.t2",
        "DROP TABLE `{db}`.u",
    ];
    for (round, ddl) in statements.iter().enumerate() {
        // Many small transactions over every partition, then the statement right behind them
        // and writes in the new shape right after it.
        for i in 0..150 {
            let id = (i * 7 + round) % 400 + 1;
            c.query_drop(format!("UPDATE `{db}`.`{table}` SET n = n + 1 WHERE id = {id}")).await.unwrap();
            if round < 3 {
                c.query_drop(format!("UPDATE `{db}`.u SET v = v + 1 WHERE id = {}", id % 100 + 1)).await.unwrap();
            }
        }
        c.query_drop(ddl.replace("{db}", &db)).await.unwrap();
        if ddl.starts_with("RENAME TABLE") {
            table = "t2";
        }
        let col = if round == 0 { "title" } else { "name" };
        c.query_drop(format!("UPDATE `{db}`.`{table}` SET {col} = CONCAT({col}, '+') WHERE id % 5 = {round}"))
            .await
            .unwrap();
    }
    env.wait_equal(CONVERGE).await;
    assert!(bf.interrupt(Duration::from_secs(60)).success(), "{}", env.log());
    // Each of the four statements: every partition arrived, and one applied it.
    let mut t = env.target_pool.get_conn().await.unwrap();
    let phases: Vec<(String, u64)> = t
        .query(format!("SELECT phase, COUNT(*) FROM `{}`._binferry_barriers GROUP BY phase ORDER BY phase", env.dst))
        .await
        .unwrap();
    assert_eq!(phases, [("applied".to_string(), 4), ("arrived".to_string(), 16)]);
}

/// The DDL barrier lives in the target: partitions owned by different worker processes meet
/// there too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_layout_barrier_holds_across_worker_processes() {
    let mut env = Env::new("kddl2").await;
    env.use_kafka("key");
    let db = env.src.clone();
    let mut c = env.conn().await;
    c.query_drop(format!("CREATE TABLE `{db}`.t (id INT PRIMARY KEY, name VARCHAR(40), n INT)")).await.unwrap();
    c.query_drop(format!("INSERT INTO `{db}`.t SELECT seq, CONCAT('r', seq), 0 FROM seq_1_to_400")).await.unwrap();
    let (reader, a, b) = env.start_reader_and_two_workers().await;
    env.wait_equal(CONVERGE).await;
    for i in 0..200 {
        c.query_drop(format!("UPDATE `{db}`.t SET n = n + 1 WHERE id = {}", i * 7 % 400 + 1)).await.unwrap();
    }
    c.query_drop(format!("ALTER TABLE `{db}`.t RENAME COLUMN name TO title")).await.unwrap();
    c.query_drop(format!("UPDATE `{db}`.t SET title = CONCAT(title, '+') WHERE id % 3 = 0")).await.unwrap();
    env.wait_equal(CONVERGE).await;
    let mut t = env.target_pool.get_conn().await.unwrap();
    let arrived: Vec<String> = t
        .query(format!("SELECT stream FROM `{}`._binferry_barriers WHERE phase = 'arrived' ORDER BY stream", env.dst))
        .await
        .unwrap();
    assert_eq!(arrived.len(), 4, "every partition arrived: {arrived:?}");
    assert!(reader.interrupt(Duration::from_secs(30)).success());
    assert!(a.interrupt(Duration::from_secs(60)).success(), "{}", env.log_of("a"));
    assert!(b.interrupt(Duration::from_secs(60)).success(), "{}", env.log_of("b"));
}

/// Under the `key` layout an UPDATE that moves a row's primary key must not leave the old key
/// behind. If the move's delete of the old key travelled with the new key, another partition's
/// writer than the one that inserted the old key would apply it: while the insert is still
/// uncommitted, that writer finds no row to delete, records the tombstone and commits, and the
/// insert commits after it; the row then stays in the target for good.
///
/// The test holds that window open instead of waiting for it: it holds the lock of a row that
/// the insert's target transaction writes after the moved rows (tables apply in name order),
/// until the other partitions have applied the moves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_layout_moves_primary_keys_without_leaving_the_old_key() {
    let mut env = Env::new("kmove").await;
    env.use_kafka("key");
    let (src, dst) = (env.src.clone(), env.dst.clone());
    let mut c = env.conn().await;
    c.query_drop(format!("CREATE TABLE `{src}`.a_moves (id BIGINT PRIMARY KEY, v INT)")).await.unwrap();
    c.query_drop(format!("CREATE TABLE `{src}`.z_pad (id BIGINT PRIMARY KEY, v VARCHAR(20))")).await.unwrap();
    c.query_drop(format!("INSERT INTO `{src}`.a_moves VALUES (0, 0)")).await.unwrap();
    c.query_drop(format!("INSERT INTO `{src}`.z_pad VALUES (0, 'seed')")).await.unwrap();
    let bf = env.start_streaming().await;
    env.wait_equal(CONVERGE).await;

    // Row 7 of z_pad, inserted in the target by the test and not committed: the writer of
    // its partition blocks on it, with the rows of a_moves it applied before still open.
    let mut hold = env.target_pool.get_conn().await.unwrap();
    hold.query_drop("START TRANSACTION").await.unwrap();
    hold.query_drop(format!(
        "INSERT INTO `{dst}`.z_pad (id, v, _binferry_pos, _binferry_hash) \
         SELECT 7, 'held', _binferry_pos, _binferry_hash FROM `{dst}`.z_pad WHERE id = 0"
    ))
    .await
    .unwrap();
    c.query_drop("START TRANSACTION").await.unwrap();
    c.query_drop(format!("INSERT INTO `{src}`.a_moves SELECT seq, seq FROM seq_1_to_40")).await.unwrap();
    c.query_drop(format!("INSERT INTO `{src}`.z_pad VALUES (7, 'row')")).await.unwrap();
    c.query_drop("COMMIT").await.unwrap();
    c.query_drop(format!("UPDATE `{src}`.a_moves SET id = id + 1000000 WHERE id BETWEEN 1 AND 40")).await.unwrap();
    // The moves reach the other partitions' writers meanwhile (the test cannot see when).
    tokio::time::sleep(Duration::from_secs(4)).await;
    hold.query_drop("ROLLBACK").await.unwrap();
    env.wait_equal(CONVERGE).await;
    assert!(bf.interrupt(Duration::from_secs(60)).success(), "{}", env.log());
}
