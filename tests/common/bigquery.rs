//! Reading the BigQuery emulator from tests, and comparing its tables with the source.

use std::time::{Duration, Instant};

use mysql_async::prelude::Queryable;
use serde_json::Value as Json;

use binferry::sink::bigquery::column_name;

use super::{Env, bigquery_endpoint, ensure_bigquery, quote};

/// The BigQuery table of source table `t` of database `src` (the default `{db}_{table}`, with
/// characters BigQuery does not allow in names replaced by `_`).
pub fn bq_table(src: &str, t: &str) -> String {
    format!("{src}_{t}").chars().map(|c| if c.is_ascii_alphanumeric() || c == '_' { c } else { '_' }).collect()
}

/// Project the emulator serves.
pub const PROJECT: &str = "binferry-test";

impl Env {
    /// Replicate into the emulator, in a dataset of this test's own, merging every second.
    pub fn use_bigquery(&mut self) {
        ensure_bigquery();
        self.remove(&["sink"]);
        self.set(&["sink", "kind"], "bigquery");
        self.set(&["sink", "bigquery", "project"], PROJECT);
        self.set(&["sink", "bigquery", "dataset"], self.dst.clone());
        self.set(&["sink", "bigquery", "endpoint"], bigquery_endpoint());
        self.set(&["sink", "bigquery", "merge_interval_secs"], 1);
    }

    /// Run a query on the emulator; rows of string cells (None for NULL). A job that lost a
    /// commit race with another test's job (DuckLake, "Conflict on update") runs again.
    pub async fn bq(&self, sql: &str) -> Result<Vec<Vec<Option<String>>>, String> {
        let mut attempt = 0;
        loop {
            match self.bq_once(sql).await {
                Err(e) if attempt < 5 && (e.contains("Failed to commit") || e.contains("Conflict on update")) => {
                    attempt += 1;
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                r => return r,
            }
        }
    }

    async fn bq_once(&self, sql: &str) -> Result<Vec<Vec<Option<String>>>, String> {
        let http = reqwest::Client::new();
        let body = serde_json::json!({ "query": sql, "useLegacySql": false, "timeoutMs": 120000 });
        let resp = http
            .post(format!("{}/projects/{PROJECT}/queries", bigquery_endpoint()))
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .map_err(|e| e.to_string())?;
        let text = resp.text().await.map_err(|e| e.to_string())?;
        let v: Json = serde_json::from_str(&text).map_err(|e| format!("{e}: {text}"))?;
        if v.get("error").is_some() {
            return Err(text);
        }
        let rows = v.get("rows").and_then(Json::as_array).cloned().unwrap_or_default();
        Ok(rows
            .iter()
            .map(|r| {
                r["f"]
                    .as_array()
                    .map(|cells| {
                        cells
                            .iter()
                            .map(|c| match &c["v"] {
                                Json::Null => None,
                                Json::String(s) => Some(s.clone()),
                                other => Some(other.to_string()),
                            })
                            .collect()
                    })
                    .unwrap_or_default()
            })
            .collect())
    }

    /// Difference between every source table and its BigQuery table (`{db}_{table}`), value
    /// by value: `None` when equal.
    pub async fn bq_diff(&self) -> Option<String> {
        let mut c = self.conn().await;
        c.query_drop("SET time_zone = '+00:00'").await.unwrap();
        for t in self.tables().await {
            let cols: Vec<(String, String, String)> = c
                .exec(
                    "SELECT COLUMN_NAME, DATA_TYPE, COLUMN_TYPE FROM information_schema.COLUMNS \
                     WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? ORDER BY ORDINAL_POSITION",
                    (&self.src, &t),
                )
                .await
                .unwrap();
            let checks: Vec<String> = c
                .exec(
                    "SELECT CHECK_CLAUSE FROM information_schema.CHECK_CONSTRAINTS WHERE CONSTRAINT_SCHEMA = ? AND TABLE_NAME = ?",
                    (&self.src, &t),
                )
                .await
                .unwrap_or_default();
            let pk: Vec<String> = c
                .exec("SELECT COLUMN_NAME FROM information_schema.STATISTICS WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? AND INDEX_NAME = 'PRIMARY' ORDER BY SEQ_IN_INDEX", (&self.src, &t))
                .await
                .unwrap();
            let is_json = |name: &str, ty: &str| {
                ty == "json" || checks.iter().any(|k| k.contains(&format!("json_valid(`{name}`)")))
            };
            let my: Vec<String> = cols
                .iter()
                .map(|(n, ty, _)| match ty.as_str() {
                    "blob" | "tinyblob" | "mediumblob" | "longblob" | "binary" | "varbinary" => {
                        format!("LOWER(HEX({}))", quote(n))
                    }
                    "bit" => format!("CAST({} + 0 AS CHAR)", quote(n)),
                    _ => format!("CAST({} AS CHAR)", quote(n)),
                })
                .collect();
            let bq: Vec<String> = cols
                .iter()
                .map(|(n, ty, _)| {
                    let n = format!("`{}`", column_name(n));
                    match ty.as_str() {
                        "timestamp" => format!("FORMAT_TIMESTAMP('%Y-%m-%d %H:%M:%E6S', {n})"),
                        "blob" | "tinyblob" | "mediumblob" | "longblob" | "binary" | "varbinary" => {
                            format!("TO_HEX({n})")
                        }
                        // MySQL's JSON type is a BigQuery JSON column; MariaDB's JSON is LONGTEXT
                        // (with a json_valid check), a STRING holding the text.
                        "json" => format!("TO_JSON_STRING({n})"),
                        _ => format!("CAST({n} AS STRING)"),
                    }
                })
                .collect();
            let my_order = pk.iter().map(|k| quote(k)).collect::<Vec<_>>().join(", ");
            let bq_order = pk.iter().map(|k| format!("`{}`", column_name(k))).collect::<Vec<_>>().join(", ");
            let source: Vec<mysql_async::Row> = c
                .query(format!("SELECT {} FROM {}.{} ORDER BY {my_order}", my.join(", "), quote(&self.src), quote(&t)))
                .await
                .unwrap();
            let source: Vec<Vec<Option<String>>> = source
                .into_iter()
                .map(|r| {
                    (0..r.len())
                        .map(|i| match r.as_ref(i) {
                            Some(mysql_async::Value::NULL) | None => None,
                            Some(mysql_async::Value::Bytes(b)) => Some(String::from_utf8_lossy(b).into_owned()),
                            Some(v) => Some(v.as_sql(true)),
                        })
                        .collect()
                })
                .collect();
            let table = bq_table(&self.src, &t);
            let target = match self
                .bq(&format!("SELECT {} FROM `{PROJECT}.{}.{table}` ORDER BY {bq_order}", bq.join(", "), self.dst))
                .await
            {
                Ok(rows) => rows,
                Err(_) if source.is_empty() => continue,
                Err(e) => return Some(format!("{t}: BigQuery table not readable: {e}")),
            };
            if source.len() != target.len() {
                return Some(format!("{t}: {} source rows, {} BigQuery rows", source.len(), target.len()));
            }
            for (a, b) in source.iter().zip(&target) {
                let same = a.len() == b.len()
                    && a.iter().zip(b).zip(&cols).all(|((x, y), (n, ty, _))| match (x, y) {
                        (None, None) => true,
                        (Some(x), Some(y)) if is_json(n, ty) => {
                            serde_json::from_str::<Json>(x).ok() == serde_json::from_str::<Json>(y).ok()
                        }
                        (Some(x), Some(y)) => same_text(x, y),
                        _ => false,
                    });
                if !same {
                    return Some(format!("{t}: source row {a:?} != BigQuery row {b:?}"));
                }
            }
        }
        None
    }

    /// Wait until BigQuery equals the source, or panic with the difference and the logs.
    pub async fn wait_bq_equal(&self, timeout: Duration) {
        let start = Instant::now();
        loop {
            match self.bq_diff().await {
                None => return,
                Some(d) if start.elapsed() > timeout => {
                    panic!("BigQuery did not converge in {timeout:?}: {d}\n{}", self.log_tails())
                }
                // Once a second, as binferry merges: each poll is a query per table, and the
                // emulator's CPU is what the BigQuery tests share.
                Some(_) => tokio::time::sleep(Duration::from_secs(1)).await,
            }
        }
    }

    /// Every column (binferry's included) of every BigQuery table, as text, ordered.
    pub async fn bq_dump(&self) -> Vec<Vec<Option<String>>> {
        let mut out = Vec::new();
        for t in self.tables().await {
            let table = bq_table(&self.src, &t);
            let rows = self
                .bq(&format!("SELECT TO_JSON_STRING(x) AS j FROM `{PROJECT}.{}.{table}` AS x ORDER BY j", self.dst))
                .await
                .unwrap_or_else(|e| panic!("{table}: {e}"));
            out.extend(rows);
        }
        out
    }
}

/// Equal as text after trimming trailing fraction zeros (`12.50` = `12.5`, `10:00:00.000` =
/// `10:00:00`), or as the same double (`1e-05` = `0.00001`).
pub fn same_text(a: &str, b: &str) -> bool {
    fn trim(s: &str) -> &str {
        match s.rsplit_once('.') {
            Some((_, frac)) if !frac.is_empty() && frac.bytes().all(|c| c.is_ascii_digit()) => {
                s.trim_end_matches('0').trim_end_matches('.')
            }
            _ => s,
        }
    }
    let exp = |s: &str| s.contains(['e', 'E']);
    trim(a) == trim(b)
        || ((exp(a) || exp(b)) && matches!((a.parse::<f64>(), b.parse::<f64>()), (Ok(x), Ok(y)) if x == y))
}
