//! One BigQuery table read whole at one moment, two ways, side by side in one run (the
//! measurement behind BENCHMARKS.md, "BigQuery source: REST paging or the Storage Read API"):
//!
//! - **REST paging**, as binferry's BigQuery source reads a table today: `jobs.query` of
//!   `SELECT * FROM t FOR SYSTEM_TIME AS OF …` then `getQueryResults` pages of 5,000 rows,
//!   each page's JSON parsed (REST cannot be read any other way).
//! - **The Storage Read API**: `CreateReadSession` (Arrow, the same snapshot time, one
//!   stream) then `ReadRows`, with the gRPC receive limit raised (the emulator sends ~44 MB
//!   messages for a 1M-row table). The Arrow record batches are counted, not decoded: this
//!   crate has no Arrow reader, so the Storage side's time is transfer only, a lower bound.
//!
//! Usage (the emulator of `scripts/bigquery.sh`; `scripts/bench_from_bigquery.sh` runs it on
//! its benchmark table): `cargo run --release --example bigquery_read_paths -- DATASET TABLE`.
//! Ports: `BINFERRY_BQ_PORT` (REST, 19050), `BINFERRY_BQ_GRPC_PORT` (gRPC, 19051); the
//! project is `binferry-test`. It prints one Markdown table row per path.

use std::time::{Duration, Instant};

use gcp_bigquery_client::google::cloud::bigquery::storage::v1::big_query_read_client::BigQueryReadClient;
use gcp_bigquery_client::google::cloud::bigquery::storage::v1::read_session::TableModifiers;
use gcp_bigquery_client::google::cloud::bigquery::storage::v1::{
    CreateReadSessionRequest, DataFormat, ReadRowsRequest, ReadSession, read_rows_response,
};
use serde_json::{Value, json};

const PROJECT: &str = "binferry-test";
const PAGE_ROWS: u64 = 5_000;

type Failure = Box<dyn std::error::Error>;

#[tokio::main]
async fn main() -> Result<(), Failure> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [dataset, table] = args.as_slice() else {
        return Err("usage: bigquery_read_paths DATASET TABLE".into());
    };
    let port = |var: &str, default: u16| std::env::var(var).ok().and_then(|p| p.parse().ok()).unwrap_or(default);
    let rest = format!("http://127.0.0.1:{}/bigquery/v2/projects/{PROJECT}", port("BINFERRY_BQ_PORT", 19050));
    let grpc = format!("http://127.0.0.1:{}", port("BINFERRY_BQ_GRPC_PORT", 19051));
    let http = reqwest::Client::new();

    // One moment for both reads, from BigQuery's clock.
    let now = query(&http, &rest, "SELECT UNIX_MICROS(CURRENT_TIMESTAMP())").await?;
    let now: i64 = now["rows"][0]["f"][0]["v"].as_str().ok_or("no clock reading")?.parse()?;

    println!("| path | rows | bytes received | seconds | rows/s |");
    println!("|---|---:|---:|---:|---:|");
    let (rows, bytes, took) = read_rest(&http, &rest, dataset, table, now).await?;
    report("REST paging (JSON, 5,000-row pages)", rows, bytes, took);
    let (rows, bytes, took) = read_storage(&grpc, dataset, table, now).await?;
    report("Storage Read API (Arrow, not decoded)", rows, bytes, took);
    Ok(())
}

fn report(path: &str, rows: u64, bytes: u64, took: Duration) {
    let secs = took.as_secs_f64();
    println!("| {path} | {rows} | {bytes} | {secs:.1} | {:.0} |", rows as f64 / secs.max(1e-9));
}

/// Every row by `jobs.query` and `getQueryResults` pages: rows, body bytes, time.
async fn read_rest(
    http: &reqwest::Client,
    rest: &str,
    dataset: &str,
    table: &str,
    now: i64,
) -> Result<(u64, u64, Duration), Failure> {
    let started = Instant::now();
    let sql = format!("SELECT * FROM `{PROJECT}.{dataset}.{table}` FOR SYSTEM_TIME AS OF TIMESTAMP_MICROS({now})");
    let body = json!({ "query": sql, "useLegacySql": false, "maxResults": PAGE_ROWS, "timeoutMs": 300_000 });
    let (mut page, mut bytes) = send(http.post(format!("{rest}/queries")).body(body.to_string())).await?;
    let job = page["jobReference"]["jobId"].as_str().unwrap_or_default().to_string();
    let mut rows = 0u64;
    loop {
        if page["jobComplete"].as_bool() == Some(false) {
            tokio::time::sleep(Duration::from_millis(200)).await;
        } else {
            rows += page["rows"].as_array().map_or(0, |r| r.len() as u64);
        }
        let token = page["pageToken"].as_str().filter(|t| !t.is_empty()).map(str::to_string);
        let done = page["jobComplete"].as_bool() != Some(false) && token.is_none();
        if done {
            return Ok((rows, bytes, started.elapsed()));
        }
        if job.is_empty() {
            return Err("more pages but no job id".into());
        }
        let mut url = reqwest::Url::parse(&format!("{rest}/queries/{job}"))?;
        url.query_pairs_mut().append_pair("maxResults", &PAGE_ROWS.to_string());
        if let Some(t) = &token {
            url.query_pairs_mut().append_pair("pageToken", t);
        }
        let (next, n) = send(http.get(url)).await?;
        page = next;
        bytes += n;
    }
}

async fn query(http: &reqwest::Client, rest: &str, sql: &str) -> Result<Value, Failure> {
    let body = json!({ "query": sql, "useLegacySql": false });
    Ok(send(http.post(format!("{rest}/queries")).body(body.to_string())).await?.0)
}

/// Send a request and parse its JSON reply: the reply and its size.
async fn send(req: reqwest::RequestBuilder) -> Result<(Value, u64), Failure> {
    let resp = req.header("content-type", "application/json").send().await?;
    let status = resp.status();
    let body = resp.bytes().await?;
    let value: Value = serde_json::from_slice(&body)?;
    if !status.is_success() {
        return Err(format!("HTTP {status}: {}", value["error"]["message"]).into());
    }
    Ok((value, body.len() as u64))
}

/// Every row by one read session's streams: rows, Arrow bytes, time.
async fn read_storage(grpc: &str, dataset: &str, table: &str, now: i64) -> Result<(u64, u64, Duration), Failure> {
    let started = Instant::now();
    let mut client = BigQueryReadClient::connect(grpc.to_string())
        .await?
        .max_decoding_message_size(256 << 20)
        .max_encoding_message_size(16 << 20);
    let session = ReadSession {
        table: format!("projects/{PROJECT}/datasets/{dataset}/tables/{table}"),
        data_format: DataFormat::Arrow as i32,
        table_modifiers: Some(TableModifiers {
            snapshot_time: Some(prost_types::Timestamp {
                seconds: now.div_euclid(1_000_000),
                nanos: (now.rem_euclid(1_000_000) * 1_000) as i32,
            }),
        }),
        ..Default::default()
    };
    let request = CreateReadSessionRequest {
        parent: format!("projects/{PROJECT}"),
        read_session: Some(session),
        max_stream_count: 1,
        ..Default::default()
    };
    let session = client.create_read_session(request).await?.into_inner();
    let (mut rows, mut bytes) = (0u64, 0u64);
    for stream in &session.streams {
        let mut replies =
            client.read_rows(ReadRowsRequest { read_stream: stream.name.clone(), offset: 0 }).await?.into_inner();
        while let Some(reply) = replies.message().await? {
            rows += u64::try_from(reply.row_count).unwrap_or(0);
            if let Some(read_rows_response::Rows::ArrowRecordBatch(batch)) = &reply.rows {
                bytes += batch.serialized_record_batch.len() as u64;
            }
        }
    }
    Ok((rows, bytes, started.elapsed()))
}
