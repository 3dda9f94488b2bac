//! Schema changes followed while streaming, each with writes before, during and after it,
//! and a replay from before all of them that reproduces the same target.

mod common;

use std::time::Duration;

use common::Env;
use mysql_async::Conn;
use mysql_async::prelude::Queryable;

const CONVERGE: Duration = Duration::from_secs(120);

/// Inserts, updates and deletes on whatever columns `recipes` and `ingredients` have now.
async fn churn(c: &mut Conn, db: &str, ingredients: &str, round: i32) {
    for i in 0..20 {
        let id = round * 100 + i;
        c.query_drop(format!("INSERT INTO `{db}`.recipes (id, name) VALUES ({id}, 'r{id}')")).await.unwrap();
        c.query_drop(format!("INSERT INTO `{db}`.`{ingredients}` (id, label) VALUES ({id}, 'i{id}')")).await.unwrap();
    }
    c.query_drop(format!("UPDATE `{db}`.recipes SET name = LEFT(CONCAT(name, '+'), 10) WHERE id % 3 = 0"))
        .await
        .unwrap();
    c.query_drop(format!("DELETE FROM `{db}`.`{ingredients}` WHERE id % 7 = 0")).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schema_changes_are_followed_while_streaming() {
    let env = Env::new("ddl").await;
    let db = env.src.clone();
    let mut c = env.conn().await;
    c.query_drop(format!(
        "CREATE TABLE `{db}`.recipes (id INT PRIMARY KEY, name VARCHAR(10), qty INT DEFAULT 1, price DECIMAL(5,2) DEFAULT 1.50)"
    ))
    .await
    .unwrap();
    c.query_drop(format!("CREATE TABLE `{db}`.ingredients (id INT PRIMARY KEY, label VARCHAR(20), cost DECIMAL(5,2))"))
        .await
        .unwrap();
    churn(&mut c, &db, "ingredients", 1).await;
    let bf = env.start_streaming().await;
    churn(&mut c, &db, "ingredients", 2).await;
    env.wait_equal(CONVERGE).await;

    let steps: Vec<(&str, String)> = vec![
        ("create table", format!("CREATE TABLE `{db}`.newt (id INT PRIMARY KEY, x INT)")),
        // MariaDB: a drop and a create in one statement; the old rows must go from the target.
        ("create or replace table", format!("CREATE OR REPLACE TABLE `{db}`.newt (id INT PRIMARY KEY, x INT)")),
        // MariaDB logs it inside a transaction, before the rows it inserts: the rows of the
        // table it replaces must go all the same.
        (
            "create or replace table select",
            format!(
                "CREATE OR REPLACE TABLE `{db}`.newt (id INT PRIMARY KEY, x INT) SELECT id, id * 3 AS x FROM `{db}`.recipes WHERE id % 5 = 0"
            ),
        ),
        ("add column first", format!("ALTER TABLE `{db}`.recipes ADD COLUMN note VARCHAR(20) DEFAULT 'n/a' FIRST")),
        ("add column middle", format!("ALTER TABLE `{db}`.recipes ADD COLUMN mid INT DEFAULT 7 AFTER name")),
        (
            "add column last",
            format!("ALTER TABLE `{db}`.recipes ADD COLUMN made DATETIME(3) DEFAULT '2024-01-01 00:00:00.5'"),
        ),
        ("drop column", format!("ALTER TABLE `{db}`.recipes DROP COLUMN price")),
        ("rename column", format!("ALTER TABLE `{db}`.recipes RENAME COLUMN qty TO quantity")),
        ("int to bigint", format!("ALTER TABLE `{db}`.recipes MODIFY quantity BIGINT DEFAULT 1")),
        ("varchar(10) to varchar(100)", format!("ALTER TABLE `{db}`.recipes MODIFY name VARCHAR(100)")),
        ("decimal(5,2) to decimal(10,4)", format!("ALTER TABLE `{db}`.ingredients MODIFY cost DECIMAL(10,4)")),
        ("create index", format!("CREATE INDEX by_name ON `{db}`.recipes (name)")),
        ("drop index", format!("DROP INDEX by_name ON `{db}`.recipes")),
        ("rename table", format!("RENAME TABLE `{db}`.ingredients TO `{db}`.ingredients2")),
        ("truncate", format!("TRUNCATE TABLE `{db}`.recipes")),
        ("drop table", format!("DROP TABLE `{db}`.newt")),
    ];
    let mut ingredients = "ingredients";
    for (round, (what, ddl)) in steps.iter().enumerate() {
        let round = round as i32 + 3;
        churn(&mut c, &db, ingredients, round * 10).await;
        if *what == "drop table" {
            c.query_drop(format!("INSERT INTO `{db}`.newt VALUES ({round}, 2)")).await.unwrap();
        }
        c.query_drop(ddl).await.unwrap();
        if *what == "rename table" {
            ingredients = "ingredients2";
        }
        if *what == "create table" {
            c.query_drop(format!("INSERT INTO `{db}`.newt VALUES (1, 1), (2, 2)")).await.unwrap();
        }
        if *what == "create or replace table" {
            c.query_drop(format!("INSERT INTO `{db}`.newt VALUES (2, 20), (3, 30)")).await.unwrap();
        }
        if *what == "add column first" {
            c.query_drop(format!("UPDATE `{db}`.recipes SET note = 'set' WHERE id % 2 = 0")).await.unwrap();
        }
        churn(&mut c, &db, ingredients, round * 10 + 1).await;
        let start = std::time::Instant::now();
        while env.diff().await.is_some() && start.elapsed() < CONVERGE {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        if let Some(d) = env.diff().await {
            panic!("after {what}: {d}\n{}", env.log());
        }
    }
    let log = env.log();
    assert!(log.contains("column is no longer in the source; kept in the target"), "{log}");
    let mut t = env.target_pool.get_conn().await.unwrap();
    let kept: Vec<String> = t
        .exec("SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = ? AND TABLE_NAME LIKE 'newt\\_\\_dropped\\_%'", (&env.dst,))
        .await
        .unwrap();
    assert_eq!(kept.len(), 3, "the replaced tables and the dropped one are kept under marked names: {kept:?}");

    // A table created while streaming has its target table, with its columns, before any row.
    c.query_drop(format!(
        "CREATE TABLE `{db}`.emptyt (id INT PRIMARY KEY, label VARCHAR(20) DEFAULT 'x', made DATETIME(6))"
    ))
    .await
    .unwrap();
    // A keyless one cannot be copied in chunks: it gets its target table with its first row,
    // as before, and stops nothing. One dropped at once: its copy just ends; created again, it
    // replicates.
    c.query_drop(format!("CREATE TABLE `{db}`.nokey (a INT)")).await.unwrap();
    c.query_drop(format!("CREATE TABLE `{db}`.flash (id INT PRIMARY KEY)")).await.unwrap();
    c.query_drop(format!("DROP TABLE `{db}`.flash")).await.unwrap();
    c.query_drop(format!("CREATE TABLE `{db}`.flash (id INT PRIMARY KEY, v INT)")).await.unwrap();
    c.query_drop(format!("INSERT INTO `{db}`.flash VALUES (1, 1)")).await.unwrap();
    c.query_drop(format!("INSERT INTO `{db}`.nokey VALUES (1), (1)")).await.unwrap();
    let start = std::time::Instant::now();
    loop {
        let columns: Vec<String> = t
            .exec(
                "SELECT COLUMN_NAME FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = ? AND TABLE_NAME = 'emptyt' \
                 AND COLUMN_NAME NOT LIKE '\\_binferry\\_%' ORDER BY ORDINAL_POSITION",
                (&env.dst,),
            )
            .await
            .unwrap();
        if !columns.is_empty() {
            assert_eq!(columns, ["id", "label", "made"]);
            break;
        }
        assert!(start.elapsed() < CONVERGE, "the empty table has no target table:\n{}", env.log());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    env.wait_equal(CONVERGE).await;
    assert!(!env.log().contains("table stopped"), "{}", env.log());

    // A table whose name leaves no room for the mark within MySQL's 64 characters is kept too.
    let long = "a_table_with_a_name_long_enough_to_leave_no_room_for_a_mark";
    c.query_drop(format!("CREATE TABLE `{db}`.`{long}` (id INT PRIMARY KEY)")).await.unwrap();
    c.query_drop(format!("INSERT INTO `{db}`.`{long}` VALUES (1)")).await.unwrap();
    env.wait_equal(CONVERGE).await;
    c.query_drop(format!("DROP TABLE `{db}`.`{long}`")).await.unwrap();
    let start = std::time::Instant::now();
    loop {
        let kept: Vec<String> = t
            .exec(
                "SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = ? AND TABLE_NAME LIKE 'a\\_table\\_with%\\_\\_dropped\\_%'",
                (&env.dst,),
            )
            .await
            .unwrap();
        if kept.len() == 1 {
            assert_eq!(kept[0].chars().count(), 64, "{kept:?}");
            break;
        }
        assert!(start.elapsed() < CONVERGE, "the long-named table was not kept: {kept:?}\n{}", env.log());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(bf.interrupt(Duration::from_secs(60)).success());

    // A replay from before all of these changes reproduces the same target.
    let before = env.target_checksums().await;
    env.replay(&["--from-offset", "0"]);
    assert_eq!(env.target_checksums().await, before);
    assert_eq!(env.diff().await, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_incompatible_change_stops_only_that_table() {
    let env = Env::new("narrow").await;
    let db = env.src.clone();
    let mut c = env.conn().await;
    c.query_drop(format!("CREATE TABLE `{db}`.t (id INT PRIMARY KEY, v VARCHAR(100))")).await.unwrap();
    c.query_drop(format!("CREATE TABLE `{db}`.u (id INT PRIMARY KEY, w INT)")).await.unwrap();
    c.query_drop(format!("INSERT INTO `{db}`.t VALUES (1, '10'), (2, '20')")).await.unwrap();
    let mut bf = env.start_streaming().await;
    c.query_drop(format!("INSERT INTO `{db}`.t VALUES (3, '30')")).await.unwrap();
    env.wait_equal(CONVERGE).await;
    c.query_drop(format!("ALTER TABLE `{db}`.t MODIFY v INT")).await.unwrap();
    c.query_drop(format!("INSERT INTO `{db}`.t VALUES (4, 40)")).await.unwrap();
    c.query_drop(format!("INSERT INTO `{db}`.u VALUES (1, 1), (2, 2)")).await.unwrap();
    let count = |table: &'static str| {
        let pool = env.target_pool.clone();
        let dst = env.dst.clone();
        async move {
            let mut t = pool.get_conn().await.unwrap();
            let n: Option<u64> = t.query_first(format!("SELECT COUNT(*) FROM `{dst}`.`{table}`")).await.unwrap_or(None);
            n.unwrap_or(0)
        }
    };
    let start = std::time::Instant::now();
    while count("u").await < 2 {
        assert!(start.elapsed() < CONVERGE, "the other table stopped too:\n{}", env.log());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(bf.is_running(), "binferry stopped:\n{}", env.log());
    let log = env.log();
    assert!(log.contains("table stopped; the other tables keep replicating"), "{log}");
    assert!(log.contains("column `v` changed from varchar(100)") && log.contains("to int"), "{log}");
    assert!(log.contains("fix: "), "{log}");
    assert_eq!(count("t").await, 3, "nothing of the new shape was applied");
    // The stop is durable: after a restart `t` stays stopped and `u` goes on.
    assert!(bf.interrupt(Duration::from_secs(60)).success());
    // `check` tells the operator, without refusing to run.
    let out = common::binferry_cmd(&["check", "--config", env.config_path().to_str().unwrap()]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains(&format!("table {db}.t is STOPPED")), "{text}");
    bf = env.start();
    c.query_drop(format!("INSERT INTO `{db}`.u VALUES (3, 3)")).await.unwrap();
    c.query_drop(format!("INSERT INTO `{db}`.t VALUES (5, 50)")).await.unwrap();
    let start = std::time::Instant::now();
    while count("u").await < 3 {
        assert!(start.elapsed() < CONVERGE, "{}", env.log());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(count("t").await, 3);
    // The warning at start gives the reason the table was stopped for.
    let log = env.log();
    let warning = log.lines().find(|l| l.contains("table is stopped; its changes are skipped")).unwrap_or_default();
    assert!(warning.contains("column `v` changed from varchar(100)"), "{log}");
    assert!(bf.interrupt(Duration::from_secs(60)).success());
}

/// A transaction of a table's older schema still waiting in the batch when rows of its newer
/// schema arrive: the older rows are committed first, and the newer ones must still be
/// committed on time with no further writes to carry them. (They once waited for the next
/// change of any table, forever on an idle source: the flush for the schema switch restarted
/// the batch clock as if the batch were empty.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schema_switch_inside_a_pending_batch_is_committed_without_more_writes() {
    let mut env = Env::new("switch").await;
    // A long batch delay keeps the first UPDATE pending while the ALTER and the second
    // UPDATE arrive, whatever the machine's speed.
    env.set(&["writer", "batch_max_delay_ms"], 2000);
    let db = env.src.clone();
    let mut c = env.conn().await;
    c.query_drop(format!("CREATE TABLE `{db}`.t1 (id INT PRIMARY KEY, name VARCHAR(20), amount DECIMAL(5,2))"))
        .await
        .unwrap();
    c.query_drop(format!("INSERT INTO `{db}`.t1 SELECT seq, CONCAT('n', seq), seq / 4 FROM seq_1_to_40"))
        .await
        .unwrap();
    let bf = env.start_streaming().await;
    env.wait_equal(CONVERGE).await;
    c.query_drop(format!("ALTER TABLE `{db}`.t1 RENAME COLUMN name TO title")).await.unwrap();
    c.query_drop(format!("UPDATE `{db}`.t1 SET title = CONCAT(title, '!') WHERE id % 2 = 0")).await.unwrap();
    c.query_drop(format!("ALTER TABLE `{db}`.t1 MODIFY amount DECIMAL(10,4)")).await.unwrap();
    c.query_drop(format!("UPDATE `{db}`.t1 SET amount = amount + 0.0001 WHERE id < 5")).await.unwrap();
    // Nothing else is written: the last transaction must arrive on its own (it took a few
    // seconds; before the fix it never did).
    env.wait_equal(CONVERGE).await;
    assert!(bf.interrupt(Duration::from_secs(60)).success());
}
