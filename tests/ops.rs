//! The operations endpoint of a running pipeline: `/metrics` moves with the workload,
//! `/healthz` and `/readyz` answer, `/status` needs the token and never shows a secret.
//! (`/readyz` during a target outage is checked in `tests/writer.rs`, which stops a target.)
//! Lag is true: 0 on an idle source, the backlog's age right after a restart.

mod common;

use std::time::{Duration, Instant};

use common::Env;
use common::workload::{Workload, create_schema};
use mysql_async::prelude::Queryable;

const CONVERGE: Duration = Duration::from_secs(120);
const TOKEN: &str = "ops-token-Zq81";

/// The value of the first sample of `name` in Prometheus text.
fn sample(metrics: &str, name: &str) -> Option<f64> {
    metrics
        .lines()
        .filter(|l| !l.starts_with('#'))
        .find(|l| l.split([' ', '{']).next() == Some(name))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_health_and_status_follow_the_pipeline() {
    let mut env = Env::new("ops").await;
    env.set(&["http", "token_env"], "BF_OPS_TOKEN");
    env.set(&["http", "ready_max_lag_secs"], 30);
    env.process_env = vec![("BF_OPS_TOKEN".into(), TOKEN.into())];
    let mut c = env.conn().await;
    create_schema(&mut c, &env.src).await;
    let mut w = Workload::new(&env.src, 41);
    w.seed(&mut c, 50).await;
    let bf = env.start();
    let base = env.http_base().await;
    let http = reqwest::Client::new();
    let get = |path: &str| http.get(format!("{base}{path}")).send();

    assert_eq!(get("/healthz").await.unwrap().status(), 200);
    w.run(&mut c, 300).await;
    env.wait_equal(CONVERGE).await;
    let first = get("/metrics").await.unwrap().text().await.unwrap();
    let written = sample(&first, "binferry_writer_rows_written_total").unwrap_or(0.0);
    assert!(written > 0.0, "no rows written in:\n{first}");
    assert!(sample(&first, "binferry_source_events_total").unwrap_or(0.0) > 0.0, "{first}");
    assert!(sample(&first, "binferry_writer_commits_total").unwrap_or(0.0) > 0.0, "{first}");
    assert!(sample(&first, "binferry_replication_lag_seconds").is_some(), "{first}");

    // More changes: the counters move.
    w.run(&mut c, 200).await;
    env.wait_equal(CONVERGE).await;
    let second = get("/metrics").await.unwrap().text().await.unwrap();
    assert!(sample(&second, "binferry_writer_rows_written_total").unwrap_or(0.0) > written, "{second}");

    // Caught up on an idle source: ready, and the lag drops to 0 once the reader has seen the
    // end of the binlog (a heartbeat at the latest), without any new change.
    let start = Instant::now();
    loop {
        let r = get("/readyz").await.unwrap();
        let (code, body) = (r.status(), r.text().await.unwrap());
        let status = http.get(format!("{base}/status")).bearer_auth(TOKEN).send().await.unwrap();
        let lag = status.json::<serde_json::Value>().await.unwrap()["lag_seconds"].as_f64();
        if code == 200 && lag == Some(0.0) {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(30), "never ready: {code} {body}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // /status: refused without the token, JSON with it.
    assert_eq!(get("/status").await.unwrap().status(), 401);
    let wrong = http.get(format!("{base}/status")).bearer_auth("nope").send().await.unwrap();
    assert_eq!(wrong.status(), 401);
    let status = http.get(format!("{base}/status")).bearer_auth(TOKEN).send().await.unwrap();
    assert_eq!(status.status(), 200);
    let text = status.text().await.unwrap();
    let json: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(json["pipeline"], env.name.as_str(), "{text}");
    assert_eq!(json["state"], "streaming", "{text}");
    assert_eq!(json["ready"], true, "{text}");
    assert!(json["target_rows_written"].as_u64().unwrap_or(0) > 0, "{text}");
    assert!(json["source_position"].as_str().is_some_and(|p| p.starts_with("binlog.")), "{text}");
    assert_eq!(json["lag_seconds"].as_f64(), Some(0.0), "{text}");
    // The token is a secret: never in the log or in what the endpoint serves.
    for (what, body) in [("status", &text), ("metrics", &second), ("log", &env.log())] {
        assert!(!body.contains(TOKEN), "the token leaked into {what}");
    }
    assert!(bf.interrupt(Duration::from_secs(60)).success());
}

/// SIGKILL and restart while a backlog waits (the target rows are locked): the restarted
/// process reports the backlog's age, overall and for the table, not 0 and not the time since
/// it started; once the backlog is applied the lag is 0 on the idle source.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lag_after_a_restart_is_the_age_of_the_backlog() {
    let env = Env::new("lagrestart").await;
    let mut c = env.conn().await;
    c.query_drop(format!("CREATE TABLE `{}`.t (id INT PRIMARY KEY, v INT)", env.src)).await.unwrap();
    c.query_drop(format!("CREATE TABLE `{}`.u (id INT AUTO_INCREMENT PRIMARY KEY)", env.src)).await.unwrap();
    c.query_drop(format!("INSERT INTO `{}`.t VALUES (1, 1)", env.src)).await.unwrap();
    let bf = env.start_streaming().await;
    env.wait_equal(CONVERGE).await;
    // The writer cannot insert while a transaction holds every row and gap of the target
    // table (for up to innodb_lock_wait_timeout, 50 s, then it retries); the reader keeps
    // buffering. (Not LOCK TABLES: it also blocks the writer's CREATE DATABASE IF NOT EXISTS.)
    let mut lock = env.target_pool.get_conn().await.unwrap();
    lock.query_drop("START TRANSACTION").await.unwrap();
    lock.query_drop(format!("SELECT * FROM `{}`.t FOR UPDATE", env.dst)).await.unwrap();
    c.query_drop(format!("INSERT INTO `{}`.t VALUES (2, 2)", env.src)).await.unwrap();
    let inserted = Instant::now();
    // The source stays busy with another table: the reader's newest change is always recent,
    // so only the writer's oldest unapplied change can show the backlog's age.
    let busy = format!("INSERT INTO `{}`.u VALUES ()", env.src);
    while inserted.elapsed() < Duration::from_secs(3) {
        c.query_drop(&busy).await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bf.kill9();
    let backlog_age = 4.0;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (bf, base) = env.start_with_endpoint().await;
    let table = format!("{}.t", env.src);
    let start = Instant::now();
    loop {
        c.query_drop(&busy).await.unwrap();
        let status = Env::status(&base, None).await;
        let lag = status.as_ref().and_then(|s| s["lag_seconds"].as_f64()).unwrap_or(0.0);
        let table_lag = status
            .as_ref()
            .and_then(|s| {
                s["tables"].as_array()?.iter().find(|t| t["table"] == table.as_str())?["lag_seconds"].as_f64()
            })
            .unwrap_or(0.0);
        if lag >= backlog_age && table_lag >= backlog_age {
            // The backlog's age: not the age of the binlog file, not of anything older.
            let most = inserted.elapsed().as_secs_f64() + 2.0;
            assert!(lag <= most && table_lag <= most, "lag {lag} / {table_lag} s for a {most} s old backlog");
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(30), "the lag hides the backlog: {status:?}\n{}", env.log());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    lock.query_drop("COMMIT").await.unwrap();
    env.wait_equal(CONVERGE).await;
    let start = Instant::now();
    loop {
        let status = Env::status(&base, None).await;
        if status.as_ref().and_then(|s| s["lag_seconds"].as_f64()) == Some(0.0) {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(30), "lag not 0 on an idle source: {status:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(bf.interrupt(Duration::from_secs(60)).success());
}

/// `binferry status [--json]` (tests in the suite build the binary): its stdout.
fn status_of(env: &Env, json: bool) -> String {
    let cfg = env.config_path();
    let mut args = vec!["status", "--config", cfg.to_str().unwrap()];
    if json {
        args.push("--json");
    }
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_binferry")).args(&args).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "status failed: {text}{}", String::from_utf8_lossy(&out.stderr));
    text
}

/// A loopback port nobody listens on now (`status` must know the running process's port).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// `status` with the pipeline running, stopped and killed: state, lag, position and
/// retention, per-stream progress, a stopped table with its fix, and the run registry
/// (running → ok; a SIGKILLed run is found interrupted by the next).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_reports_the_pipeline_running_stopped_and_killed() {
    let mut env = Env::new("status").await;
    env.set(&["http", "listen"], format!("127.0.0.1:{}", free_port()));
    env.add_table_rule(&format!("{}.keyless", env.src), &[("without_primary_key", "refuse".into())]);
    let db = env.src.clone();
    let mut c = env.conn().await;
    c.query_drop(format!("CREATE TABLE `{db}`.t (id INT PRIMARY KEY, v INT)")).await.unwrap();
    c.query_drop(format!("INSERT INTO `{db}`.t VALUES (1, 1), (2, 2)")).await.unwrap();
    let bf = env.start_streaming().await;
    c.query_drop(format!("CREATE TABLE `{db}`.keyless (a INT)")).await.unwrap();
    c.query_drop(format!("INSERT INTO `{db}`.keyless VALUES (1)")).await.unwrap();
    c.query_drop(format!("INSERT INTO `{db}`.t VALUES (3, 3)")).await.unwrap();
    env.diff_skip = vec!["keyless".into()];
    env.wait_equal(CONVERGE).await;

    let text = status_of(&env, false);
    for want in [
        format!("pipeline {}: streaming", env.name),
        "lag: ".into(),
        "binlog end: binlog.".into(),
        "stream embedded: offset ".into(),
        format!("table {db}.t: lag "),
        "stopped tables: 1".into(),
        format!("{db}.keyless since "),
        "has no primary key".into(),
        format!("fix: fix the cause above, then bring {db}.keyless back"),
        "last runs:".into(),
        " running (".into(),
    ] {
        assert!(text.contains(&want), "{want:?} not in:\n{text}");
    }
    let json: serde_json::Value = serde_json::from_str(&status_of(&env, true)).unwrap();
    assert_eq!(json["running"], true, "{json}");
    assert!(json["process"]["lag_seconds"].is_number(), "{json}");
    assert_eq!(json["target"]["streams"][0]["stream"], "embedded", "{json}");
    assert!(json["source"]["position"].as_str().is_some_and(|p| p.starts_with("binlog.")), "{json}");
    assert_eq!(json["source"]["needed_binlog_present"], true, "{json}");
    assert_eq!(json["target"]["runs"][0]["outcome"], "running", "{json}");

    assert!(bf.interrupt(Duration::from_secs(60)).success());
    let text = status_of(&env, false);
    assert!(text.contains(&format!("pipeline {}: stopped", env.name)), "{text}");
    assert!(text.contains("no running process answered"), "{text}");
    let json: serde_json::Value = serde_json::from_str(&status_of(&env, true)).unwrap();
    assert_eq!(json["running"], false, "{json}");
    let run = &json["target"]["runs"][0];
    assert_eq!(run["outcome"], "ok", "{json}");
    assert!(run["rows"].as_u64().unwrap_or(0) >= 3, "{json}");
    assert!(run["ended_at"].is_string(), "{json}");

    // A run killed without a chance to report is marked interrupted by the next one.
    env.start_streaming().await.kill9();
    let bf = env.start_streaming().await;
    let json: serde_json::Value = serde_json::from_str(&status_of(&env, true)).unwrap();
    let outcomes: Vec<&str> =
        json["target"]["runs"].as_array().unwrap().iter().filter_map(|r| r["outcome"].as_str()).collect();
    assert_eq!(&outcomes[..3], ["running", "interrupted", "ok"], "{json}");
    assert!(bf.interrupt(Duration::from_secs(60)).success());
}
