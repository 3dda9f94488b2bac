//! The BigQuery REST client (gcp-bigquery-client), its authentication, and the mapping of
//! BigQuery's answers onto binferry's error kinds.
//!
//! Rate limits (HTTP 429, `rateLimitExceeded`, concurrent-DML conflicts) and server errors
//! (5xx, timeouts, dropped connections) are transient and retried by the writer's policy.
//! Permission, missing-dataset and invalid-statement answers are definite: they stop with the
//! fix, because retrying cannot change them.

use std::sync::Arc;

use std::time::{Duration, Instant};

use async_trait::async_trait;
use gcp_bigquery_client::Client;
use gcp_bigquery_client::auth::Authenticator;
use gcp_bigquery_client::client_builder::ClientBuilder;
use gcp_bigquery_client::error::BQError;
use gcp_bigquery_client::model::dataset::Dataset;
use gcp_bigquery_client::model::get_query_results_parameters::GetQueryResultsParameters;
use gcp_bigquery_client::model::query_request::QueryRequest;
use gcp_bigquery_client::model::table_data_insert_all_request::TableDataInsertAllRequest;
use gcp_bigquery_client::model::table_data_insert_all_request_rows::TableDataInsertAllRequestRows;
use gcp_bigquery_client::model::table_row::TableRow;

use crate::error::{Error, ErrorKind, Result};
use crate::telemetry::Stats;

/// How often an unfinished query job is polled.
const POLL_INTERVAL: Duration = Duration::from_millis(250);

/// Requests to an emulator carry a placeholder token: it checks none.
#[derive(Clone)]
struct NoAuth;

#[async_trait]
impl Authenticator for NoAuth {
    async fn access_token(&self) -> std::result::Result<String, BQError> {
        Ok("emulator".into())
    }
}

/// How the client authenticates.
#[derive(Clone, Debug)]
pub(crate) enum Auth {
    /// An emulator at this REST base URL, without credentials.
    Emulator(String),
    /// A service-account key file.
    KeyFile(std::path::PathBuf),
    /// Application default credentials.
    ApplicationDefault,
}

/// One project's BigQuery API, with binferry's error mapping.
#[derive(Clone)]
pub(crate) struct Api {
    client: Client,
    pub(crate) project: String,
    location: Option<String>,
    timeout: Duration,
    /// Where the jobs and MERGE runs are counted.
    pub(super) stats: Arc<Stats>,
}

impl Api {
    pub(crate) async fn connect(
        auth: &Auth,
        project: &str,
        location: Option<&str>,
        timeout: Duration,
        stats: Arc<Stats>,
    ) -> Result<Api> {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| Error::new(ErrorKind::Internal, format!("building the HTTP client: {e}")))?;
        let mut builder = ClientBuilder::new();
        builder.with_client(http);
        let client = match auth {
            Auth::Emulator(url) => {
                builder.with_v2_base_url(url.trim_end_matches('/').to_string());
                builder.build_from_authenticator(Arc::new(NoAuth)).await
            }
            Auth::KeyFile(path) => {
                crate::config::warn_if_readable_by_others("sink.bigquery.credentials_file", path);
                let p = path.to_str().ok_or_else(|| {
                    Error::new(ErrorKind::Config, format!("sink.bigquery.credentials_file: {path:?} is not UTF-8"))
                })?;
                builder.build_from_service_account_key_file(p).await
            }
            Auth::ApplicationDefault => builder.build_from_application_default_credentials().await,
        }
        .map_err(|e| {
            Error::new(ErrorKind::Config, format!("BigQuery credentials: {e}")).with_hint(
                "set sink.bigquery.credentials_file to a service-account key (JSON), or provide application \
                 default credentials (GOOGLE_APPLICATION_CREDENTIALS, `gcloud auth application-default login`)",
            )
        })?;
        Ok(Api { client, project: project.to_string(), location: location.map(str::to_string), timeout, stats })
    }

    /// Whether `dataset` exists.
    pub(crate) async fn dataset_exists(&self, dataset: &str) -> Result<bool> {
        match self.client.dataset().get(&self.project, dataset).await {
            Ok(_) => Ok(true),
            Err(e) if status(&e) == Some(404) => Ok(false),
            Err(e) => Err(classify(e, &format!("reading dataset {}.{dataset}", self.project))),
        }
    }

    /// Create `dataset` when it does not exist.
    pub(crate) async fn ensure_dataset(&self, dataset: &str) -> Result<()> {
        match self.client.dataset().get(&self.project, dataset).await {
            Ok(_) => return Ok(()),
            Err(e) if status(&e) == Some(404) => {}
            Err(e) => return Err(classify(e, &format!("reading dataset {}.{dataset}", self.project))),
        }
        let mut ds = Dataset::new(&self.project, dataset);
        if let Some(l) = &self.location {
            ds = ds.location(l);
        }
        match self.client.dataset().create(ds).await {
            Ok(_) => Ok(()),
            // Created meanwhile by another worker.
            Err(e) if status(&e) == Some(409) => Ok(()),
            Err(e) => Err(classify(e, &format!("creating dataset {}.{dataset}", self.project))),
        }
    }

    /// Run one query job (a statement or a script) to completion and return its rows.
    pub(crate) async fn query(&self, sql: &str) -> Result<Vec<TableRow>> {
        let mut req = QueryRequest::new(sql);
        req.use_legacy_sql = false;
        req.location = self.location.clone();
        req.timeout_ms = Some(self.timeout.as_millis().min(i32::MAX as u128) as i32);
        self.stats.record_bigquery_job();
        let what = || format!("query job `{}`", abbreviate(sql));
        tracing::debug!(sql = %abbreviate(sql), "BigQuery job");
        let resp = self.client.job().query(&self.project, req).await.map_err(|e| classify(e, &what()))?;
        check_errors(resp.errors.as_deref(), &what())?;
        if resp.job_complete.unwrap_or(false) {
            return Ok(resp.rows.unwrap_or_default());
        }
        // Still running after the request's wait: poll its results until it completes.
        let job_id = resp
            .job_reference
            .and_then(|r| r.job_id)
            .ok_or_else(|| Error::new(ErrorKind::TargetUnavailable, format!("{}: no job id returned", what())))?;
        let deadline = Instant::now() + self.timeout;
        loop {
            tokio::time::sleep(POLL_INTERVAL).await;
            let params = GetQueryResultsParameters { location: self.location.clone(), ..Default::default() };
            let r = self
                .client
                .job()
                .get_query_results(&self.project, &job_id, params)
                .await
                .map_err(|e| classify(e, &what()))?;
            check_errors(r.errors.as_deref(), &what())?;
            if r.job_complete.unwrap_or(false) {
                return Ok(r.rows.unwrap_or_default());
            }
            if Instant::now() > deadline {
                return Err(Error::new(
                    ErrorKind::TargetUnavailable,
                    format!("{}: job {job_id} still running after {:?}", what(), self.timeout),
                ));
            }
        }
    }

    /// Stream rows into `table` with insertAll; `rows` are (insert id, JSON object).
    pub(crate) async fn insert_all(
        &self,
        dataset: &str,
        table: &str,
        rows: Vec<(String, serde_json::Value)>,
    ) -> Result<()> {
        if rows.is_empty() {
            return Ok(());
        }
        let n = rows.len();
        let mut req = TableDataInsertAllRequest::new();
        req.add_rows(
            rows.into_iter().map(|(id, json)| TableDataInsertAllRequestRows { insert_id: Some(id), json }).collect(),
        )
        .map_err(|e| Error::internal(format!("encoding insertAll rows: {e}")))?;
        let what = format!("insertAll of {n} rows into {dataset}.{table}");
        tracing::debug!(rows = n, %table, "BigQuery insertAll");
        let resp = self
            .client
            .tabledata()
            .insert_all(&self.project, dataset, table, req)
            .await
            .map_err(|e| classify(e, &what))?;
        if let Some(errors) = resp.insert_errors.filter(|e| !e.is_empty()) {
            // A bad value fails its row and stops the others ("stopped"): name the first real one.
            let first = errors
                .iter()
                .flat_map(|r| r.errors.iter().flatten().map(move |e| (r.index, e)))
                .find(|(_, e)| e.reason.as_deref() != Some("stopped"));
            let detail = match first {
                Some((index, e)) => format!(
                    "{what}: row {} rejected: {} (column {:?}, reason {})",
                    index.unwrap_or(-1),
                    e.message.as_deref().unwrap_or(""),
                    e.location.as_deref().unwrap_or(""),
                    e.reason.as_deref().unwrap_or("?")
                ),
                None => format!("{what}: {} rows rejected", errors.len()),
            };
            return Err(Error::new(ErrorKind::ValueRejected, detail).with_hint(
                "a value does not fit its BigQuery column (docs/types.md gives the mapping): fix the value in the \
                 source, then rebuild the table (delete its row from _binferry_stopped, drop its BigQuery tables and \
                 replay)",
            ));
        }
        Ok(())
    }
}

/// The HTTP status of a BigQuery error answer.
fn status(e: &BQError) -> Option<i64> {
    match e {
        BQError::ResponseError { error } => Some(error.error.code),
        _ => None,
    }
}

fn check_errors(errors: Option<&[gcp_bigquery_client::model::error_proto::ErrorProto]>, what: &str) -> Result<()> {
    let Some(e) = errors.and_then(|e| e.first()) else { return Ok(()) };
    let reason = e.reason.clone().unwrap_or_default();
    let message = e.message.clone().unwrap_or_default();
    Err(by_reason(0, &reason, &message, what))
}

/// Map a client error onto an [`ErrorKind`] with the fix.
pub(crate) fn classify(e: BQError, what: &str) -> Error {
    match e {
        BQError::ResponseError { error } => {
            let reason = error.error.errors.first().and_then(|m| m.get("reason")).cloned().unwrap_or_default();
            by_reason(error.error.code, &reason, &error.error.message, what)
        }
        BQError::RequestError(e) => {
            Error::new(ErrorKind::TargetUnavailable, format!("{what}: BigQuery did not answer: {e}"))
        }
        e @ (BQError::AuthError(_) | BQError::YupAuthError(_) | BQError::NoToken) => {
            Error::new(ErrorKind::TargetRejected, format!("{what}: authentication failed: {e}")).with_hint(
                "check sink.bigquery.credentials_file or the application default credentials, and that the key \
                 is not revoked",
            )
        }
        e @ (BQError::InvalidServiceAccountKey(_)
        | BQError::InvalidServiceAccountAuthenticator(_)
        | BQError::InvalidInstalledFlowAuthenticator(_)
        | BQError::InvalidApplicationDefaultCredentialsAuthenticator(_)
        | BQError::InvalidAuthorizedUserAuthenticator(_)) => {
            Error::new(ErrorKind::Config, format!("{what}: the credentials cannot be used: {e}")).with_hint(
                "check that sink.bigquery.credentials_file (or GOOGLE_APPLICATION_CREDENTIALS) names a readable \
                 service account key in JSON",
            )
        }
        // The network or the client's own plumbing: gone once the connection is back.
        e @ (BQError::TonicTransportError(_) | BQError::ConnectionPoolError(_) | BQError::SemaphorePermitError(_)) => {
            Error::new(ErrorKind::TargetUnavailable, format!("{what}: BigQuery did not answer: {e}"))
        }
        BQError::TonicStatusError(status) => by_grpc_status(i32::from(status.code()), status.message(), what),
        // Anything else is not known to pass by itself (a reply binferry does not understand, a
        // client bug): definite, with the full message, rather than retried forever.
        e => Error::new(ErrorKind::TargetRejected, format!("{what}: unexpected BigQuery client error: {e}"))
            .with_hint("this is not a known transient failure; report it with the message above"),
    }
}

/// A gRPC status (the Storage API), by its numeric code: DEADLINE_EXCEEDED 4, NOT_FOUND 5,
/// PERMISSION_DENIED 7, RESOURCE_EXHAUSTED 8, ABORTED 10, INTERNAL 13, UNAVAILABLE 14,
/// UNAUTHENTICATED 16.
fn by_grpc_status(code: i32, message: &str, what: &str) -> Error {
    let detail = format!("{what}: {message} (gRPC status {code})");
    match code {
        4 | 8 | 10 | 13 | 14 => Error::new(ErrorKind::TargetUnavailable, detail),
        _ if is_conflict(message) => Error::new(ErrorKind::TargetUnavailable, detail),
        7 | 16 => by_reason(403, "accessDenied", message, what),
        5 => by_reason(404, "notFound", message, what),
        _ => Error::new(ErrorKind::TargetRejected, detail),
    }
}

fn by_reason(code: i64, reason: &str, message: &str, what: &str) -> Error {
    let detail = format!("{what}: {message} (HTTP {code}, {reason})");
    let transient = matches!(code, 408 | 429 | 500 | 502 | 503 | 504)
        || matches!(reason, "rateLimitExceeded" | "backendError" | "internalError" | "jobRateLimitExceeded")
        || is_conflict(message);
    if transient {
        return Error::new(ErrorKind::TargetUnavailable, detail);
    }
    match (code, reason) {
        (401 | 403, _) => Error::new(ErrorKind::TargetRejected, detail).with_hint(
            "grant the service account roles/bigquery.dataEditor on the dataset and roles/bigquery.jobUser on \
             the project",
        ),
        (404, _) => Error::new(ErrorKind::TargetRejected, detail).with_hint(
            "check sink.bigquery.project and dataset; binferry creates the dataset and its tables, so a \
             missing one was deleted while it ran: restart it, then `binferry replay` to refill",
        ),
        _ => Error::new(ErrorKind::TargetRejected, detail)
            .with_hint("a table was changed by hand or a value does not fit; see docs/bigquery.md"),
    }
}

/// Two jobs changed the same table or catalog at once: BigQuery's "could not serialize access
/// … due to concurrent update" / "aborted due to concurrent update", and the emulator's
/// "Failed to commit DuckLake transaction" and "Conflict on update!" (two CREATE TABLE IF NOT
/// EXISTS of one table at once). The emulator's catalog also answers a concurrent CREATE with
/// `Duplicate key "… table_id: …" violates primary key constraint` or `PRIMARY KEY or UNIQUE
/// constraint violation: duplicate key "…"`: BigQuery itself never
/// enforces a primary key (they are all `NOT ENFORCED`), so that message can only be the catalog
/// race. Running the job again resolves it.
fn is_conflict(message: &str) -> bool {
    message.contains("concurrent update")
        || message.contains("violates primary key constraint")
        || message.contains("PRIMARY KEY or UNIQUE constraint violation")
        || message.contains("Transaction conflict")
        || message.contains("Failed to commit DuckLake transaction")
        || message.contains("Conflict on update")
}

fn abbreviate(sql: &str) -> String {
    let one_line: String = sql.split_whitespace().collect::<Vec<_>>().join(" ");
    match one_line.char_indices().nth(120) {
        Some((i, _)) => format!("{}…", &one_line[..i]),
        None => one_line,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_errors_are_transient_only_when_known_to_pass() {
        let cases: Vec<(BQError, ErrorKind)> = vec![
            (BQError::ConnectionPoolError("exhausted".into()), ErrorKind::TargetUnavailable),
            (BQError::NoToken, ErrorKind::TargetRejected),
            (BQError::InvalidServiceAccountKey(std::io::Error::other("bad json")), ErrorKind::Config),
            (BQError::NoDataAvailable, ErrorKind::TargetRejected),
            (BQError::InvalidColumnName { col_name: "x".into() }, ErrorKind::TargetRejected),
        ];
        for (e, want) in cases {
            let shown = e.to_string();
            let got = classify(e, "test");
            assert_eq!(got.kind(), want, "{shown}");
            assert!(got.to_string().contains(&shown), "the full message is kept: {got}");
        }
        for (code, transient) in [(14, true), (4, true), (10, true), (3, false), (7, false), (5, false)] {
            assert_eq!(by_grpc_status(code, "m", "x").is_transient(), transient, "gRPC {code}");
        }
        assert!(by_grpc_status(9, "Transaction conflict", "x").is_transient());
    }

    #[test]
    fn rate_limits_and_server_errors_are_transient() {
        assert!(by_reason(429, "rateLimitExceeded", "slow down", "x").is_transient());
        assert!(by_reason(503, "backendError", "try again", "x").is_transient());
        assert!(
            by_reason(400, "invalidQuery", "Could not serialize access to table due to concurrent update", "x")
                .is_transient()
        );
        assert!(
            by_reason(400, "invalidQuery", "Failed to commit: Failed to commit DuckLake transaction.", "x")
                .is_transient()
        );
        assert!(by_reason(400, "invalidQuery", "Conflict on update!", "x").is_transient());
        assert!(
            by_reason(
                400,
                "invalidQuery",
                "Duplicate key \"project_id: p, dataset_id: d, table_id: t__changes\" violates primary key constraint.",
                "x"
            )
            .is_transient()
        );
        assert!(
            by_reason(
                400,
                "invalidQuery",
                "Failed to commit: PRIMARY KEY or UNIQUE constraint violation: duplicate key \"p, d, t\"",
                "x"
            )
            .is_transient()
        );
        assert!(!by_reason(400, "invalid", "Provided Schema does not match Table", "x").is_transient());
    }

    #[test]
    fn permissions_and_missing_tables_are_definite_with_a_fix() {
        let e = by_reason(403, "accessDenied", "Access Denied", "insertAll");
        assert_eq!(e.kind(), ErrorKind::TargetRejected);
        assert!(e.hint().unwrap_or("").contains("dataEditor"));
        let e = by_reason(404, "notFound", "Not found: Dataset p:d", "q");
        assert_eq!(e.kind(), ErrorKind::TargetRejected);
        assert!(!e.is_transient());
    }
}
