//! The operations endpoint of a running pipeline: `/metrics` moves with the workload,
//! `/healthz` and `/readyz` answer, `/status` needs the token and never shows a secret.
//! (`/readyz` during a target outage is checked in `tests/writer.rs`, which stops a target.)

mod common;

use std::time::{Duration, Instant};

use common::Env;
use common::workload::{Workload, create_schema};

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
