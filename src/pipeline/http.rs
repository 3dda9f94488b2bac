//! The operations endpoint: `/metrics` (Prometheus text), `/healthz`, `/readyz` and
//! `/status` (JSON), served by the running pipeline.
//!
//! It listens on loopback unless the configuration names another address
//! (`[http] listen`); a non-loopback address without a token is refused by config
//! validation. When `http.token_env` names a variable, `/status` needs
//! `Authorization: Bearer <token>`; `/metrics` and the probes never do (scrapers and
//! orchestrators call them without credentials, and they carry no row data).
//!
//! Everything served is read from the pipeline's [`Stats`]; the endpoint holds no state of
//! its own and never blocks replication: a slow client only slows its own request.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use serde::Serialize;
use tokio::net::TcpListener;
use tracing::info;

use crate::config::Secret;
use crate::error::{Error, ErrorKind, Result};
use crate::shutdown::Shutdown;
use crate::telemetry::Stats;

/// What the endpoint serves and checks.
#[derive(Clone)]
pub(super) struct Endpoint {
    /// The pipeline's name, in `/status`.
    pub pipeline: String,
    /// Counters and positions.
    pub stats: Arc<Stats>,
    /// The Prometheus recorder's view.
    pub metrics: PrometheusHandle,
    /// `/readyz` fails while the lag is above this.
    pub ready_max_lag: Duration,
    /// The buffer's end offset, when it is one stream (for the lag).
    pub backlog: super::Backlog,
    /// Required for `/status` when set.
    pub token: Option<Secret>,
    /// Whether this process reads the source (`/readyz` then waits for it to stream).
    pub reads: bool,
    /// Requests to the source, when this process reads it (`POST /resync`).
    pub control: Option<crate::source::Control>,
}

/// The process's Prometheus recorder, installed on first use. The `metrics` facade has one
/// global recorder per process, so its handle is the one process-wide value here.
pub(super) fn prometheus() -> Result<PrometheusHandle> {
    static HANDLE: OnceLock<std::result::Result<PrometheusHandle, String>> = OnceLock::new();
    HANDLE
        .get_or_init(|| PrometheusBuilder::new().install_recorder().map_err(|e| e.to_string()))
        .clone()
        .map_err(|e| Error::new(ErrorKind::Internal, format!("installing the Prometheus recorder: {e}")))
}

/// Bind `listen`, before anything starts: a port in use is a configuration problem.
pub(super) async fn bind(listen: SocketAddr) -> Result<TcpListener> {
    TcpListener::bind(listen).await.map_err(|e| {
        Error::new(ErrorKind::Config, format!("http.listen: cannot listen on {listen}: {e}"))
            .with_hint("choose a free port with [http] listen = \"127.0.0.1:PORT\" (each pipeline on a host needs its own), or listen = \"\" to turn the endpoint off")
    })
}

/// Serve until `shutdown`; serving errors end the task and are logged.
pub(super) fn serve(listener: TcpListener, endpoint: Endpoint, shutdown: Shutdown) -> tokio::task::JoinHandle<()> {
    let bound = listener.local_addr().map(|a| a.to_string()).unwrap_or_default();
    info!(addr = %bound, "operations endpoint listening: /metrics /healthz /readyz /status /resync /repair");
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/status", get(status))
        .route("/resync", post(resync))
        .route("/repair", post(repair))
        .with_state(Arc::new(endpoint));
    tokio::spawn(async move {
        let served = axum::serve(listener, app).with_graceful_shutdown(async move { shutdown.triggered().await }).await;
        if let Err(e) = served {
            tracing::error!(error = %e, "operations endpoint stopped");
        }
    })
}

async fn metrics(State(e): State<Arc<Endpoint>>) -> Response {
    e.stats.record_lag((e.backlog)());
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], e.metrics.render()).into_response()
}

/// The process answers: its tasks are scheduled. (A stopped pipeline exits, so there is no
/// "alive but dead" state to report.)
async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(e): State<Arc<Endpoint>>) -> Response {
    match e.unready() {
        None => (StatusCode::OK, "ready\n".to_string()).into_response(),
        Some(why) => (StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {why}\n")).into_response(),
    }
}

async fn status(State(e): State<Arc<Endpoint>>, headers: HeaderMap) -> Response {
    if let Some(refused) = e.refuse(&headers) {
        return refused;
    }
    axum::Json(e.status()).into_response()
}

/// What `POST /repair` takes.
#[derive(Debug, serde::Deserialize)]
pub(super) struct RepairRequest {
    /// `db.table`.
    pub db: String,
    pub table: String,
    /// The keys to rewrite, each its primary key's values in key order.
    pub keys: Vec<Vec<crate::event::Value>>,
}

/// `POST /repair`: rewrite keys of one table as the source has them now, through the
/// position-guarded path (what `binferry verify --repair` sends). Answers once the rows are
/// in the buffer: `{"rewritten": n, "deleted": n, "kept": n}`.
async fn repair(State(e): State<Arc<Endpoint>>, headers: HeaderMap, body: axum::body::Bytes) -> Response {
    let (control, request) = match e.control_request::<RepairRequest>(&headers, &body, "{\"db\", \"table\", \"keys\"}")
    {
        Ok(r) => r,
        Err(refused) => return *refused,
    };
    let table = crate::schema::TableRef::new(request.db, request.table);
    answer(control.repair(table, request.keys).await)
}

/// What `POST /resync` takes.
#[derive(Debug, serde::Deserialize)]
pub(super) struct ResyncRequest {
    /// `db.table` patterns (globs allowed).
    pub tables: Vec<String>,
}

/// `POST /resync`: copy tables again in chunks while the others stream. Answers once the
/// request is durable in the reader's checkpoint: `{"started": [...], "already": [...]}`.
async fn resync(State(e): State<Arc<Endpoint>>, headers: HeaderMap, body: axum::body::Bytes) -> Response {
    let (control, request) =
        match e.control_request::<ResyncRequest>(&headers, &body, "{\"tables\": [\"db.table\", ...]}") {
            Ok(r) => r,
            Err(refused) => return *refused,
        };
    answer(control.resync(&request.tables).await)
}

/// A request to the source's answer: JSON, or the error with 400 when the request is at fault
/// and 503 when the source could not take it now.
fn answer<T: Serialize>(result: Result<T>) -> Response {
    match result {
        Ok(done) => axum::Json(done).into_response(),
        Err(err) => {
            let code = match err.kind() {
                ErrorKind::Config | ErrorKind::Unsupported => StatusCode::BAD_REQUEST,
                _ => StatusCode::SERVICE_UNAVAILABLE,
            };
            (code, format!("{err}\n")).into_response()
        }
    }
}

/// Compare without an early exit, so the time taken says nothing about the token.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// `/status`: the facts `binferry status --json` shows for a running pipeline.
#[derive(Debug, Serialize)]
pub(super) struct Status {
    pipeline: String,
    state: &'static str,
    ready: bool,
    not_ready_because: Option<String>,
    lag_seconds: f64,
    source_position: Option<String>,
    source_caught_up: bool,
    source_paused: bool,
    source_events: u64,
    source_transactions: u64,
    snapshot_rows: u64,
    target_rows_written: u64,
    target_rows_unchanged: u64,
    target_rows_stale: u64,
    target_commits: u64,
    target_consistent: Option<bool>,
    writer_activity: String,
    writer_retrying: bool,
    buffer_pending: Option<u64>,
    /// Every table a writer of this process has had changes of, with its lag.
    tables: Vec<TableLag>,
    /// Tables being copied in chunks (initial snapshot, resyncs).
    copies: Vec<crate::telemetry::CopyProgress>,
}

/// One table's lag in [`Status`].
#[derive(Debug, Serialize)]
struct TableLag {
    table: String,
    lag_seconds: f64,
}

impl Endpoint {
    /// The source's control handle and the parsed body of a request to it, or the refusal:
    /// no token, a process that does not read the source, a body that is not `expected`.
    fn control_request<T: serde::de::DeserializeOwned>(
        &self,
        headers: &HeaderMap,
        body: &[u8],
        expected: &str,
    ) -> std::result::Result<(&crate::source::Control, T), Box<Response>> {
        if let Some(refused) = self.refuse(headers) {
            return Err(Box::new(refused));
        }
        let Some(control) = &self.control else {
            let text = "this process does not read the source (--role worker): ask the reader\n";
            return Err(Box::new((StatusCode::CONFLICT, text).into_response()));
        };
        let request = serde_json::from_slice(body).map_err(|err| {
            Box::new((StatusCode::BAD_REQUEST, format!("expected {expected}: {err}\n")).into_response())
        })?;
        Ok((control, request))
    }

    /// The refusal of a request without the bearer token, when one is configured.
    fn refuse(&self, headers: &HeaderMap) -> Option<Response> {
        let token = self.token.as_ref()?;
        let given =
            headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer "));
        if given.is_some_and(|g| constant_time_eq(g.as_bytes(), token.expose().as_bytes())) {
            return None;
        }
        Some((StatusCode::UNAUTHORIZED, "a bearer token is required (http.token_env)\n").into_response())
    }

    fn lag(&self) -> f64 {
        self.stats.lag((self.backlog)())
    }

    /// Why the pipeline is not ready, if it is not: the writer is retrying a failure, the
    /// reader is still copying tables or has not started streaming, or the lag is over the
    /// bound. (Not "the reader is at the end of the binlog": under steady load it never is
    /// between two heartbeats, and the lag already says how far behind it is.)
    fn unready(&self) -> Option<String> {
        let s = &self.stats;
        if s.writer_retrying.load(Ordering::Relaxed) {
            return Some(format!("the writer is retrying: {}", s.writer_activity()));
        }
        if self.reads && s.snapshot_running.load(Ordering::Relaxed) {
            return Some("the initial snapshot is copying tables".into());
        }
        if self.reads && s.source_position().is_none() && !s.source_caught_up.load(Ordering::Relaxed) {
            return Some("the source is not streaming yet".into());
        }
        let lag = self.lag();
        if lag > self.ready_max_lag.as_secs_f64() {
            return Some(format!("lag {lag:.0} s is over http.ready_max_lag_secs = {}", self.ready_max_lag.as_secs()));
        }
        None
    }

    fn status(&self) -> Status {
        let s = &self.stats;
        let load = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
        let why = self.unready();
        let retrying = s.writer_retrying.load(Ordering::Relaxed);
        let caught_up = s.source_caught_up.load(Ordering::Relaxed);
        let state = if retrying {
            "waiting for target"
        } else if s.snapshot_running.load(Ordering::Relaxed) {
            "snapshot"
        } else if !self.reads || caught_up || s.source_position().is_some() {
            "streaming"
        } else {
            "starting"
        };
        let end = (self.backlog)();
        Status {
            pipeline: self.pipeline.clone(),
            state,
            ready: why.is_none(),
            not_ready_because: why,
            lag_seconds: self.lag(),
            source_position: s.source_position().map(|p| p.to_string()),
            source_caught_up: caught_up,
            source_paused: s.source_paused.load(Ordering::Relaxed),
            source_events: load(&s.source_events),
            source_transactions: load(&s.source_txns),
            snapshot_rows: load(&s.snapshot_rows),
            target_rows_written: load(&s.writer_rows),
            target_rows_unchanged: load(&s.writer_unchanged),
            target_rows_stale: load(&s.writer_stale),
            target_commits: load(&s.writer_commits),
            target_consistent: s.target_consistent(),
            writer_activity: s.writer_activity(),
            writer_retrying: retrying,
            buffer_pending: s.pending(end),
            tables: s.table_lags().into_iter().map(|(table, lag_seconds)| TableLag { table, lag_seconds }).collect(),
            copies: s.copies(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_compare_whole() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secret2"));
        assert!(!constant_time_eq(b"", b"x"));
    }
}
