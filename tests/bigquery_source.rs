//! The BigQuery source end to end: tables in the local BigQuery emulator
//! (`scripts/bigquery.sh`), mutated by DML jobs, mirrored into MariaDB, compared value by
//! value. Each test has its own dataset and target database.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::{Env, bigquery_endpoint, ensure_bigquery};
use mysql_async::prelude::Queryable;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// How long a test waits for MySQL to equal BigQuery: the emulator serves every BigQuery test
/// at once on two cores. A passing test stops waiting as soon as the tables are equal.
const CONVERGE: Duration = Duration::from_secs(240);

/// A test's warehouse: a dataset of its own in the emulator, dropped at the end.
struct Warehouse {
    env: Env,
    ds: String,
}

impl Warehouse {
    async fn new(prefix: &str) -> Warehouse {
        ensure_bigquery();
        let mut env = Env::new(prefix).await;
        let ds = format!("{}_wh", env.name);
        env.bq(&format!("CREATE SCHEMA `{ds}`")).await.unwrap();
        for field in ["host", "port", "user"] {
            env.remove(&["source", field]);
        }
        env.set(&["source", "kind"], "bigquery");
        env.set(&["source", "include"], vec![format!("{ds}.*")]);
        env.set(&["source", "bigquery", "project"], common::bigquery::PROJECT);
        env.set(&["source", "bigquery", "endpoint"], bigquery_endpoint());
        // Whole reads try the Storage Read API: `verify` reads through it; a round, which needs
        // its timestamp exactly, reads over REST on the emulator (it ignores the snapshot time).
        env.set(&["source", "bigquery", "storage_endpoint"], common::bigquery_storage_endpoint());
        env.set(&["source", "bigquery", "interval_secs"], 1);
        Warehouse { env, ds }
    }

    /// Run `sql` on the emulator, `DS` standing for the dataset.
    async fn run(&self, sql: &str) {
        let sql = sql.replace("DS", &format!("`{}`", self.ds));
        if let Err(e) = self.env.bq(&sql).await {
            panic!("{sql}: {e}");
        }
    }

    async fn rows(&self, sql: &str) -> Vec<Vec<Option<String>>> {
        self.env.bq(&sql.replace("DS", &format!("`{}`", self.ds))).await.unwrap()
    }

    async fn target_rows(&self, sql: &str) -> Vec<Vec<Option<String>>> {
        let mut c = self.env.target_pool.get_conn().await.unwrap();
        let rows: Vec<mysql_async::Row> =
            c.query(sql.replace("DST", &format!("`{}`", self.env.dst))).await.unwrap_or_default();
        rows.into_iter()
            .map(|r| (0..r.len()).map(|i| r.get::<Option<String>, _>(i).unwrap_or(None)).collect())
            .collect()
    }

    /// Wait until `bq` (on the emulator) and `my` (on the target) give the same rows, decimals
    /// compared by value; panics with the difference after [`CONVERGE`].
    async fn wait_same(&self, bq: &str, my: &str) {
        let start = Instant::now();
        loop {
            let (a, b) = (normalise(self.rows(bq).await), normalise(self.target_rows(my).await));
            if a == b {
                return;
            }
            if start.elapsed() > CONVERGE {
                let keep = format!("/tmp/{}.log", self.env.name);
                std::fs::write(&keep, self.env.log()).ok();
                let only_bq: Vec<_> = a.iter().filter(|r| !b.contains(r)).take(5).collect();
                let only_my: Vec<_> = b.iter().filter(|r| !a.contains(r)).take(5).collect();
                panic!(
                    "MySQL differs from BigQuery after {CONVERGE:?} ({} vs {} rows)\nonly in BigQuery: {only_bq:?}\nonly in \
                     MySQL: {only_my:?}\n{}",
                    a.len(),
                    b.len(),
                    self.env.log_tails()
                );
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }

    async fn drop(self) {
        self.env.bq(&format!("DROP SCHEMA `{}` CASCADE", self.ds)).await.ok();
    }
}

/// Decimal text by value (`1.50` and `1.5` are one number), rows in order.
fn normalise(rows: Vec<Vec<Option<String>>>) -> Vec<Vec<Option<String>>> {
    let mut rows: Vec<Vec<Option<String>>> = rows
        .into_iter()
        .map(|r| {
            r.into_iter()
                .map(|c| {
                    c.map(|s| {
                        let numeric = !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit() || b == b'.' || b == b'-');
                        if numeric && s.contains('.') {
                            s.trim_end_matches('0').trim_end_matches('.').to_string()
                        } else {
                            s
                        }
                    })
                })
                .collect()
        })
        .collect();
    rows.sort();
    rows
}

/// The linked tables of the serving API and what a reader of MySQL must always find true:
/// every recipe's `servings` equals the number of its ingredient links, and every link's
/// recipe exists. Each mutation keeps both in one BigQuery transaction, so a MySQL state that
/// breaks them is a round half applied.
const LINKED: &str = "
    CREATE TABLE DS.recipes (id INT64, name STRING, servings INT64, price NUMERIC(10, 2), PRIMARY KEY (id) NOT ENFORCED);
    CREATE TABLE DS.ingredients (id INT64, name STRING, PRIMARY KEY (id) NOT ENFORCED);
    CREATE TABLE DS.recipe_ingredients (recipe_id INT64, ingredient_id INT64, grams INT64,
        PRIMARY KEY (recipe_id, ingredient_id) NOT ENFORCED);";

/// What the reader saw: consistent reads made, and the first broken invariant.
#[derive(Default)]
struct Reader {
    reads: AtomicU64,
    broken: std::sync::Mutex<Option<String>>,
}

async fn read_invariants(pool: mysql_async::Pool, dst: String, reader: Arc<Reader>, stop: Arc<AtomicBool>) {
    while !stop.load(Ordering::Relaxed) {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let Ok(mut c) = pool.get_conn().await else { continue };
        if c.query_drop("START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY").await.is_err() {
            continue;
        }
        let recipes: Result<Vec<(i64, i64)>, _> = c.query(format!("SELECT id, servings FROM `{dst}`.recipes")).await;
        let links: Result<Vec<(i64, i64)>, _> =
            c.query(format!("SELECT recipe_id, COUNT(*) FROM `{dst}`.recipe_ingredients GROUP BY recipe_id")).await;
        c.query_drop("COMMIT").await.ok();
        // Before the first round the tables do not exist yet.
        let (Ok(recipes), Ok(links)) = (recipes, links) else { continue };
        let servings: BTreeMap<i64, i64> = recipes.into_iter().collect();
        let links: BTreeMap<i64, i64> = links.into_iter().collect();
        let bad = servings
            .iter()
            .find(|(id, n)| links.get(id).copied().unwrap_or(0) != **n)
            .map(|(id, n)| format!("recipe {id} has servings {n} but {:?} links", links.get(id)))
            .or_else(|| {
                links.keys().find(|id| !servings.contains_key(id)).map(|id| format!("links of missing recipe {id}"))
            });
        if let Some(bad) = bad {
            reader.broken.lock().unwrap().get_or_insert(bad);
        }
        reader.reads.fetch_add(1, Ordering::Relaxed);
    }
}

/// One BigQuery transaction of the workload, keeping the invariants, with the test's model
/// of the warehouse (recipe id → its ingredient ids).
fn mutation(rng: &mut StdRng, step: u32, model: &mut BTreeMap<i64, Vec<i64>>, next_id: &mut i64) -> String {
    let pick_ingredients = |rng: &mut StdRng, n: usize| {
        let mut ids: Vec<i64> = (1..=8).collect();
        let mut out = Vec::new();
        for _ in 0..n {
            out.push(ids.remove(rng.random_range(0..ids.len())));
        }
        out
    };
    let existing: Vec<i64> = model.keys().copied().collect();
    match rng.random_range(0..5) {
        // A new recipe with its ingredients.
        0 | 1 => {
            let id = *next_id;
            *next_id += 1;
            let n = rng.random_range(1..4);
            let ings = pick_ingredients(rng, n);
            let links: Vec<String> = ings.iter().map(|i| format!("({id}, {i}, {})", 10 * i)).collect();
            model.insert(id, ings.clone());
            format!(
                "BEGIN TRANSACTION; INSERT INTO DS.recipes VALUES ({id}, 'recipe {id}', {}, {}.25); \
                 INSERT INTO DS.recipe_ingredients VALUES {}; COMMIT TRANSACTION;",
                ings.len(),
                id % 7,
                links.join(", ")
            )
        }
        // One more ingredient for an existing recipe.
        2 if !existing.is_empty() => {
            let id = existing[rng.random_range(0..existing.len())];
            let have = model.get(&id).cloned().unwrap_or_default();
            let Some(ing) = (1..=8).find(|i| !have.contains(i)) else { return format!("SELECT {step}") };
            model.entry(id).or_default().push(ing);
            format!(
                "BEGIN TRANSACTION; INSERT INTO DS.recipe_ingredients VALUES ({id}, {ing}, 5); \
                 UPDATE DS.recipes SET servings = servings + 1 WHERE id = {id}; COMMIT TRANSACTION;"
            )
        }
        // A recipe and its links deleted.
        3 if !existing.is_empty() => {
            let id = existing[rng.random_range(0..existing.len())];
            model.remove(&id);
            format!(
                "BEGIN TRANSACTION; DELETE FROM DS.recipe_ingredients WHERE recipe_id = {id}; \
                 DELETE FROM DS.recipes WHERE id = {id}; COMMIT TRANSACTION;"
            )
        }
        // Ingredient names change (a MERGE: the emulator runs MERGE only outside a
        // multi-statement transaction, and one statement is atomic by itself) and prices
        // of many recipes at once.
        _ => {
            let ing = rng.random_range(1..=8);
            if step % 2 == 0 {
                format!(
                    "MERGE DS.ingredients T USING (SELECT {ing} AS id, 'ingredient {ing} v{step}' AS name) S \
                     ON T.id = S.id WHEN MATCHED THEN UPDATE SET name = S.name \
                     WHEN NOT MATCHED THEN INSERT (id, name) VALUES (S.id, S.name)"
                )
            } else {
                format!("UPDATE DS.recipes SET price = price + 1 WHERE MOD(id, 3) = {}", step % 3)
            }
        }
    }
}

const RECIPES_BQ: &str =
    "SELECT CAST(id AS STRING), name, CAST(servings AS STRING), CAST(price AS STRING) FROM DS.recipes";
const RECIPES_MY: &str = "SELECT CAST(id AS CHAR), name, CAST(servings AS CHAR), CAST(price AS CHAR) FROM DST.recipes";
const INGREDIENTS_BQ: &str = "SELECT CAST(id AS STRING), name FROM DS.ingredients";
const INGREDIENTS_MY: &str = "SELECT CAST(id AS CHAR), name FROM DST.ingredients";
const LINKS_BQ: &str = "SELECT CAST(recipe_id AS STRING), CAST(ingredient_id AS STRING), CAST(grams AS STRING) \
                        FROM DS.recipe_ingredients";
const LINKS_MY: &str = "SELECT CAST(recipe_id AS CHAR), CAST(ingredient_id AS CHAR), CAST(grams AS CHAR) \
                        FROM DST.recipe_ingredients";

/// Acceptance: three linked tables mutated by INSERT/UPDATE/DELETE/MERGE transactions while
/// binferry runs and is SIGKILLed at 6 random moments (and aborted twice in the middle of a
/// round); MySQL ends equal value by value, and a reader of MySQL never sees a round half
/// applied.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn linked_tables_stay_consistent_through_mutations_and_sigkills() {
    linked_tables("bqsrc_linked", false, 8).await;
}

/// The same through the Kafka buffer (one ordered topic, the `database` layout): four crashes,
/// one of them in the middle of a round. Rounds re-published after a crash from an older
/// checkpoint reach Kafka beside their first, partial publication.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn linked_tables_stay_consistent_through_kafka() {
    linked_tables("bqsrc_kafka", true, 4).await;
}

/// Mutate the linked tables while binferry runs and crashes `crashes` times (every third
/// crash at the mid-round failpoint, the others SIGKILLs at random moments).
async fn linked_tables(prefix: &str, kafka: bool, crashes: u32) {
    let mut wh = Warehouse::new(prefix).await;
    if kafka {
        wh.env.use_kafka("database");
    }
    // `binferry verify` asks the running process whether it has caught up, at a fixed port.
    wh.env.listen_on_a_free_port();
    wh.run(LINKED).await;
    let names: Vec<String> = (1..=8).map(|i| format!("({i}, 'ingredient {i}')")).collect();
    wh.run(&format!("INSERT INTO DS.ingredients VALUES {}", names.join(", "))).await;
    let mut rng = StdRng::seed_from_u64(18);
    let mut model = BTreeMap::new();
    let mut next_id = 1;
    for step in 0..6 {
        let sql = mutation(&mut rng, step, &mut model, &mut next_id);
        wh.run(&sql).await;
    }

    let reader = Arc::new(Reader::default());
    let stop = Arc::new(AtomicBool::new(false));
    let reading = tokio::spawn(read_invariants(
        wh.env.target_pool.clone(),
        wh.env.dst.clone(),
        Arc::clone(&reader),
        Arc::clone(&stop),
    ));
    let mut binferry = wh.env.start();
    let mut crashed = 0;
    for step in 6..6 + 6 * crashes {
        let sql = mutation(&mut rng, step, &mut model, &mut next_id);
        wh.run(&sql).await;
        // Crashes every sixth step: SIGKILLs at random moments, and every third an abort
        // right after a page of a round was appended without the round's end (a random
        // moment lands inside a round of a few hundred ms only now and then; the failpoint
        // makes that case certain).
        if step % 6 == 5 {
            crashed += 1;
            if crashed % 3 != 0 {
                tokio::time::sleep(Duration::from_millis(rng.random_range(0..1500))).await;
                binferry.kill9();
            } else {
                binferry.kill9();
                wh.env.process_env = vec![("BINFERRY_FAILPOINT".into(), "bigquery-source-mid-round".into())];
                let crashing = wh.env.start();
                // The next round with changes aborts after its first page.
                let sql = mutation(&mut rng, step + 100, &mut model, &mut next_id);
                wh.run(&sql).await;
                let status = crashing.wait_exit(Duration::from_secs(120));
                assert!(!status.success(), "the failpoint aborts the process");
                wh.env.process_env.clear();
            }
            binferry = wh.env.start();
        }
    }
    assert_eq!(crashed, crashes);
    wh.wait_same(RECIPES_BQ, RECIPES_MY).await;
    wh.wait_same(INGREDIENTS_BQ, INGREDIENTS_MY).await;
    wh.wait_same(LINKS_BQ, LINKS_MY).await;
    // `verify` right after a change in BigQuery: a table that differs because the change is
    // not applied yet is read again after the next round, and ends equal.
    let sql = mutation(&mut rng, 1000, &mut model, &mut next_id);
    wh.run(&sql).await;
    let cfg = wh.env.config_path();
    let out = common::binferry_cmd(&["verify", "--config", cfg.to_str().unwrap()]);
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success() && text.contains("no drift in 3 tables"), "{text}\n{}", wh.env.log_tails());
    // Tables that keep changing are diffed without a summary first (their summary derived
    // from the diff). Whether two rounds in a row found changes above depends on timing, so
    // changes come one a round until a round says it did; the tables must end equal again,
    // and the reader keeps checking meanwhile.
    let diffed_first = |log: String| {
        log.lines()
            .any(|l| l.contains("BigQuery round done") && l.contains("diffed_first=") && !l.contains("diffed_first=0"))
    };
    for step in 2000..2020 {
        if diffed_first(wh.env.log()) {
            break;
        }
        let sql = mutation(&mut rng, step, &mut model, &mut next_id);
        wh.run(&sql).await;
        tokio::time::sleep(Duration::from_millis(700)).await;
    }
    assert!(diffed_first(wh.env.log()), "no round diffed a table first\n{}", wh.env.log_tails());
    wh.wait_same(RECIPES_BQ, RECIPES_MY).await;
    wh.wait_same(INGREDIENTS_BQ, INGREDIENTS_MY).await;
    wh.wait_same(LINKS_BQ, LINKS_MY).await;
    stop.store(true, Ordering::Relaxed);
    reading.await.unwrap();
    binferry.kill9();
    assert!(reader.reads.load(Ordering::Relaxed) > 20, "the reader read the target");
    if let Some(broken) = reader.broken.lock().unwrap().take() {
        panic!("a reader of MySQL saw a round half applied: {broken}");
    }
    wh.drop().await;
}

/// Acceptance: every BigQuery type arrives in MySQL exactly, value by value (first copy, then
/// a round's update and delete). BYTES are written with FROM_HEX: the emulator stores the
/// escape `\xff` of a bytes literal as the UTF-8 of U+00FF.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_bigquery_type_arrives_exactly() {
    let wh = Warehouse::new("bqsrc_types").await;
    wh.run(
        "CREATE TABLE DS.types (id INT64, i INT64, f FLOAT64, n NUMERIC, bn BIGNUMERIC(40, 20), b BOOL, s STRING,
            s20 STRING(20), by BYTES, d DATE, dt DATETIME, t TIME, ts TIMESTAMP, j JSON, arr ARRAY<INT64>,
            st STRUCT<x INT64, y STRING>, g GEOGRAPHY, PRIMARY KEY (id) NOT ENFORCED)",
    )
    .await;
    wh.run(
        "INSERT INTO DS.types VALUES
         (1, -9223372036854775808, 0.1, NUMERIC '99999999999999999999999999999.999999999',
          BIGNUMERIC '123456789012345678.12345678901234567891',
          true, 'grüße ☃ \\' \"', 'abc', FROM_HEX('0001ff'), DATE '0001-01-01', DATETIME '2024-02-29 23:59:59.999999',
          TIME '23:59:59.999999', TIMESTAMP '2038-01-19 03:14:08.000001 UTC', JSON '{\"a\": [1, 2.5, \"x\"], \"b\": null}',
          [1, 2, 3], STRUCT(1 AS x, 'a' AS y), ST_GEOGPOINT(1.5, 2)),
         (2, 9223372036854775807, -1.5e300, NUMERIC '-0.000000001', BIGNUMERIC '-1', false, '', '', b'', DATE '9999-12-31',
          DATETIME '1000-01-01 00:00:00', TIME '00:00:00', TIMESTAMP '1969-12-31 23:59:59.999999 UTC', JSON 'null',
          [], STRUCT(NULL AS x, NULL AS y), ST_GEOGPOINT(-180, -90)),
         (3, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL)",
    )
    .await;
    let binferry = wh.env.start();
    let text = "SELECT CAST(id AS CHAR), CAST(i AS CHAR), CAST(n AS CHAR), CAST(bn AS CHAR), CAST(b AS CHAR), s, s20, \
                HEX(`by`), CAST(d AS CHAR), CAST(dt AS CHAR), CAST(t AS CHAR), CAST(ts AS CHAR), g \
                FROM DST.types ORDER BY id";
    let expected = |rows: &[[Option<&str>; 13]]| -> Vec<Vec<Option<String>>> {
        rows.iter().map(|r| r.iter().map(|c| c.map(str::to_string)).collect()).collect()
    };
    let want = expected(&[
        [
            Some("1"),
            Some("-9223372036854775808"),
            Some("99999999999999999999999999999.999999999"),
            Some("123456789012345678.12345678901234567891"),
            Some("1"),
            Some("grüße ☃ ' \""),
            Some("abc"),
            Some("0001FF"),
            Some("0001-01-01"),
            Some("2024-02-29 23:59:59.999999"),
            Some("23:59:59.999999"),
            Some("2038-01-19 03:14:08.000001"),
            Some("POINT(1.5 2)"),
        ],
        [
            Some("2"),
            Some("9223372036854775807"),
            Some("-0.000000001"),
            Some("-1.00000000000000000000"),
            Some("0"),
            Some(""),
            Some(""),
            Some(""),
            Some("9999-12-31"),
            Some("1000-01-01 00:00:00.000000"),
            Some("00:00:00.000000"),
            Some("1969-12-31 23:59:59.999999"),
            Some("POINT(-180 -90)"),
        ],
        [Some("3"), None, None, None, None, None, None, None, None, None, None, None, None],
    ]);
    let start = Instant::now();
    loop {
        let got = wh.target_rows(text).await;
        if got == want {
            break;
        }
        assert!(start.elapsed() < CONVERGE, "types differ:\n got {got:?}\nwant {want:?}\n{}", wh.env.log_tails());
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    // Doubles bit for bit, JSON by value, over the binary protocol.
    let mut c = wh.env.target_pool.get_conn().await.unwrap();
    type JsonRow = (i64, Option<f64>, Option<String>, Option<String>, Option<String>);
    let rows: Vec<JsonRow> =
        c.exec(format!("SELECT id, f, j, arr, st FROM `{}`.types ORDER BY id", wh.env.dst), ()).await.unwrap();
    let json = |s: &Option<String>| s.as_deref().map(|s| serde_json::from_str::<serde_json::Value>(s).unwrap());
    let v = |s: &str| Some(serde_json::from_str::<serde_json::Value>(s).unwrap());
    assert_eq!(rows[0].1.map(f64::to_bits), Some(0.1f64.to_bits()));
    assert_eq!(rows[1].1.map(f64::to_bits), Some((-1.5e300f64).to_bits()));
    assert_eq!(rows[2].1, None);
    assert_eq!(json(&rows[0].2), v(r#"{"a": [1, 2.5, "x"], "b": null}"#));
    assert_eq!(json(&rows[0].3), v("[1, 2, 3]"));
    assert_eq!(json(&rows[0].4), v(r#"{"x": 1, "y": "a"}"#));
    assert_eq!(json(&rows[1].2), v("null"));
    assert_eq!(json(&rows[1].3), v("[]"));
    assert_eq!(json(&rows[1].4), v(r#"{"x": null, "y": null}"#));
    assert_eq!((rows[2].2.as_deref(), rows[2].3.as_deref(), rows[2].4.as_deref()), (None, None, None));
    // Returned to the pool: the Env's clean-up waits for every connection.
    drop(c);

    // A round: one row changes every column (replaced in one transaction: the emulator's
    // UPDATE cannot set an ARRAY), one is deleted.
    wh.run(
        "BEGIN TRANSACTION; DELETE FROM DS.types WHERE id = 3; INSERT INTO DS.types VALUES (3, 7, 2.5, NUMERIC '1.5', \
         BIGNUMERIC '2', true, 'x', 'y', FROM_HEX('02'), DATE '2020-01-01', DATETIME '2020-01-01 01:02:03', \
         TIME '01:02:03.5', TIMESTAMP '2020-01-01 00:00:00 UTC', JSON '[1]', [4], STRUCT(2 AS x, 'b' AS y), \
         ST_GEOGPOINT(3, 4)); COMMIT TRANSACTION;",
    )
    .await;
    wh.run("DELETE FROM DS.types WHERE id = 2").await;
    let start = Instant::now();
    let want3 = vec![
        Some("3"),
        Some("7"),
        Some("1.500000000"),
        Some("2.00000000000000000000"),
        Some("1"),
        Some("x"),
        Some("y"),
        Some("02"),
        Some("2020-01-01"),
        Some("2020-01-01 01:02:03.000000"),
        Some("01:02:03.500000"),
        Some("2020-01-01 00:00:00.000000"),
        Some("POINT(3 4)"),
    ];
    let want3: Vec<Option<String>> = want3.into_iter().map(|c| c.map(str::to_string)).collect();
    loop {
        let got = wh.target_rows(text).await;
        if got.len() == 2 && got[0] == want[0] && got[1] == want3 {
            break;
        }
        assert!(start.elapsed() < CONVERGE, "after the round:\n got {got:?}\n{}", wh.env.log_tails());
        tokio::time::sleep(Duration::from_millis(300)).await;
    }

    // A column added in BigQuery appears in MySQL, with its values (the table is read whole
    // once with its new shape).
    wh.run("ALTER TABLE DS.types ADD COLUMN added STRING").await;
    wh.run("UPDATE DS.types SET added = CONCAT('v', CAST(id AS STRING)) WHERE id IN (1, 3)").await;
    wh.wait_same(
        "SELECT CAST(id AS STRING), added, CAST(i AS STRING) FROM DS.types",
        "SELECT CAST(id AS CHAR), added, CAST(i AS CHAR) FROM DST.types",
    )
    .await;
    binferry.kill9();
    wh.drop().await;
}

/// Acceptance: a table without a key, a column type MySQL cannot hold and a duplicate key
/// each stop their table with a message naming it and the fix, and the other tables keep
/// syncing; `check` names them beforehand, and an unreachable endpoint is a problem. Once
/// fixed, `resync` brings a stopped table back, and it rewrites a table edited by hand.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_tables_stop_alone_with_the_fix() {
    let mut wh = Warehouse::new("bqsrc_bad").await;
    // `binferry resync` finds the running process at a fixed port.
    wh.env.listen_on_a_free_port();
    wh.run(
        "CREATE TABLE DS.good (id INT64, v STRING, PRIMARY KEY (id) NOT ENFORCED);
         CREATE TABLE DS.nokey (id INT64, v STRING);
         CREATE TABLE DS.wide (id INT64, v BIGNUMERIC, PRIMARY KEY (id) NOT ENFORCED);
         CREATE TABLE DS.dup (id INT64, v STRING, PRIMARY KEY (id) NOT ENFORCED);
         CREATE TABLE DS.empty (id INT64, v STRING, PRIMARY KEY (id) NOT ENFORCED);",
    )
    .await;
    wh.run("INSERT INTO DS.good VALUES (1, 'a'); INSERT INTO DS.nokey VALUES (1, 'a'); INSERT INTO DS.dup VALUES (1, 'a'), (1, 'b');")
        .await;

    let cfg = wh.env.write_config();
    let out = common::binferry_cmd(&["check", "--config", cfg.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        text.contains(&format!("warning: {}.nokey will be stopped", wh.ds)) && text.contains("NOT ENFORCED"),
        "{text}"
    );
    assert!(
        text.contains(&format!("warning: {}.wide will be stopped", wh.ds)) && text.contains("BIGNUMERIC(76, 38)"),
        "{text}"
    );
    assert!(text.contains("3 of 5 selected tables can be mirrored"), "{text}");
    assert!(text.contains("does not confirm a read session's snapshot time"), "{text}");

    let binferry = wh.env.start();
    let stopped = "SELECT source_table, reason FROM DST._binferry_stopped ORDER BY 1";
    let start = Instant::now();
    loop {
        let rows = wh.target_rows(stopped).await;
        if rows.len() == 3 {
            let reason = |t: &str| rows.iter().find(|r| r[0].as_deref() == Some(t)).and_then(|r| r[1].clone()).unwrap();
            assert!(
                reason("nokey").contains("has no key") && reason("nokey").contains("source.bigquery.keys"),
                "{rows:?}"
            );
            assert!(reason("wide").contains("column `v`") && reason("wide").contains("BIGNUMERIC(65, 30)"), "{rows:?}");
            assert!(reason("dup").contains("share a key"), "{rows:?}");
            break;
        }
        assert!(start.elapsed() < CONVERGE, "stopped tables: {rows:?}\n{}", wh.env.log_tails());
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    // The good table keeps syncing.
    wh.run("INSERT INTO DS.good VALUES (2, 'b'); UPDATE DS.good SET v = 'c' WHERE id = 1").await;
    wh.wait_same("SELECT CAST(id AS STRING), v FROM DS.good", "SELECT CAST(id AS CHAR), v FROM DST.good").await;
    // An empty table has its MySQL table from its first copy on, not from its first row.
    let empty = "SELECT CAST(COUNT(*) AS CHAR) FROM DST.empty";
    assert_eq!(wh.target_rows(empty).await, vec![vec![Some("0".to_string())]], "{}", wh.env.log_tails());

    // `resync` brings a fixed table back, and rewrites a table edited by hand in MySQL.
    wh.run("DELETE FROM DS.dup WHERE v = 'b'").await;
    let mut c = wh.env.target_pool.get_conn().await.unwrap();
    c.query_drop(format!("UPDATE `{0}`.good SET v = 'by hand' WHERE id = 2; INSERT INTO `{0}`.good (id, v, _binferry_pos, _binferry_hash) SELECT 99, 'extra', _binferry_pos, _binferry_hash FROM `{0}`.good WHERE id = 1", wh.env.dst))
        .await
        .unwrap();
    drop(c);
    let (ok, text) = wh.env.resync(&[&format!("{}.dup", wh.ds), &format!("{}.good", wh.ds)]);
    assert!(ok && text.contains("resync complete"), "{text}\n{}", wh.env.log_tails());
    wh.wait_same("SELECT CAST(id AS STRING), v FROM DS.good", "SELECT CAST(id AS CHAR), v FROM DST.good").await;
    wh.wait_same("SELECT CAST(id AS STRING), v FROM DS.dup", "SELECT CAST(id AS CHAR), v FROM DST.dup").await;
    let rows = wh.target_rows(stopped).await;
    assert_eq!(rows.iter().filter_map(|r| r[0].clone()).collect::<Vec<_>>(), vec!["nokey", "wide"], "{rows:?}");
    // A table dropped in BigQuery is kept aside in MySQL (`on_source_drop = "keep"`), whether
    // the drop lands between rounds or inside one (that round is read again without it), and
    // the other tables go on.
    wh.run("DROP TABLE DS.dup").await;
    let tables = format!(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = '{}' AND table_name LIKE 'dup%' ORDER BY 1",
        wh.env.dst
    );
    let start = Instant::now();
    loop {
        let rows = wh.target_rows(&tables).await;
        if rows.len() == 1 && rows[0][0].as_deref().is_some_and(|t| t.starts_with("dup__dropped_")) {
            break;
        }
        assert!(start.elapsed() < CONVERGE, "dup in MySQL: {rows:?}\n{}", wh.env.log_tails());
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    wh.run("INSERT INTO DS.good VALUES (3, 'after the drop')").await;
    wh.wait_same("SELECT CAST(id AS STRING), v FROM DS.good", "SELECT CAST(id AS CHAR), v FROM DST.good").await;
    binferry.kill9();
    // `status` reports rounds and the stopped tables.
    let out = common::binferry_cmd(&["status", "--config", cfg.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success() && text.contains("bigquery-round.") && text.contains("nokey"), "{text}");
    assert!(!text.contains("source:"), "no binlog errors for a BigQuery source: {text}");
    // `verify` compares BigQuery's rows with MySQL's: equal, then a row deleted by hand in
    // MySQL is drift (exit 3), and the tables the source stops are not compared; `--repair`
    // is refused with the command that repairs a BigQuery-sourced table.
    let verify = |args: &[&str]| wh.env.verify(args);
    let good = format!("{}.good", wh.ds);
    let (code, text) = verify(&["--table", &good]);
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains(&format!("{good}: 3 source rows, 3 target rows: equal")), "{text}");
    let mut c = wh.env.target_pool.get_conn().await.unwrap();
    c.query_drop(format!("DELETE FROM `{}`.good WHERE id = 2", wh.env.dst)).await.unwrap();
    drop(c);
    let (code, text) = verify(&["--table", &good]);
    assert_eq!(code, Some(3), "{text}");
    assert!(text.contains("DRIFT: 1 keys") && text.contains("missing in the target: 2"), "{text}");
    let (code, text) = verify(&[]);
    assert_eq!(code, Some(3), "{text}");
    assert!(text.contains(&format!("{}.nokey: NOT COMPARED", wh.ds)), "{text}");
    assert!(
        text.contains("drift in 1 of 4 tables") && !text.contains(".dup"),
        "the dropped table is not listed: {text}"
    );
    let (code, text) = verify(&["--repair"]);
    assert_eq!(code, Some(2), "a configuration error: {text}");
    assert!(text.contains("binferry resync --table DATASET.TABLE"), "{text}");

    // Nothing listens on port 1: a problem naming the setting, and exit 1.
    wh.env.set(&["source", "bigquery", "storage_endpoint"], "http://127.0.0.1:1");
    wh.env.write_config();
    let out = common::binferry_cmd(&["check", "--config", cfg.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("problem: source.bigquery.storage_endpoint: expected a Storage Read API answering at"),
        "{text}"
    );
    wh.env.set(&["source", "bigquery", "endpoint"], "http://127.0.0.1:1/bigquery/v2");
    wh.env.write_config();
    let out = common::binferry_cmd(&["check", "--config", cfg.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("problem: source.bigquery.endpoint: expected a BigQuery API answering at"), "{text}");
    wh.drop().await;
}
