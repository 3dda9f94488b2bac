//! Asking the running `binferry run` through its operations endpoint: what `resync` and
//! `verify` (its rounds and `--repair`) need from the process that owns the reader.

use std::time::{Duration, Instant};

use crate::config::Config;
use crate::error::{Error, ErrorKind, Result};

/// How long to wait for the running process's answer to a request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// How often the running process is asked whether it has caught up.
const POLL: Duration = Duration::from_millis(500);

/// `POST` `body` to `path` of the running process's operations endpoint, and read its JSON
/// answer; what `resync` and `verify --repair` ask.
pub(super) async fn post<T: serde::de::DeserializeOwned>(
    config: &Config,
    path: &str,
    body: &serde_json::Value,
) -> Result<T> {
    let addr = match config.http.address()? {
        Some(a) if a.port() != 0 => a,
        _ => {
            return Err(Error::new(
                ErrorKind::Config,
                "this asks the running `binferry run` through its operations endpoint, and http.listen names no fixed port",
            )
            .with_hint("set [http] listen = \"127.0.0.1:PORT\" and restart `binferry run`"));
        }
    };
    let client = reqwest::Client::builder()
        .timeout(REQUEST_TIMEOUT)
        .build()
        .map_err(|e| Error::new(ErrorKind::Internal, format!("HTTP client: {e}")))?;
    let mut req = client.post(format!("http://{addr}{path}")).json(body);
    if let Some(token) = config.http.token()? {
        req = req.bearer_auth(token.expose());
    }
    let resp = req.send().await.map_err(|e| {
        Error::new(ErrorKind::SourceUnavailable, format!("no running binferry answers at {addr}: {e}"))
            .with_hint("this runs online: start `binferry run` with this config first")
    })?;
    let status = resp.status();
    let text = resp.text().await.unwrap_or_default();
    if !status.is_success() {
        let kind = if status.is_client_error() { ErrorKind::Config } else { ErrorKind::SourceUnavailable };
        return Err(Error::new(kind, format!("the running binferry refused {path} ({status}): {}", text.trim())));
    }
    serde_json::from_str(&text)
        .map_err(|e| Error::new(ErrorKind::Internal, format!("the running binferry answered unreadably: {e}: {text}")))
}

/// Wait until the running process says it has applied everything it has read; false when
/// none answers (nothing is in flight then) or it does not catch up within `wait`.
pub(super) async fn caught_up(config: &Config, wait: Duration) -> bool {
    let start = Instant::now();
    // Past anything already read when the comparison started.
    tokio::time::sleep(POLL).await;
    loop {
        let Ok(Some(status)) = super::status::process_status(config).await else { return false };
        let lag = status.get("lag_seconds").and_then(|v| v.as_f64()).unwrap_or(f64::MAX);
        let pending = status.get("buffer_pending").and_then(|v| v.as_u64()).unwrap_or(0);
        if lag == 0.0 && pending == 0 {
            return true;
        }
        if start.elapsed() > wait {
            return false;
        }
        tokio::time::sleep(POLL).await;
    }
}
