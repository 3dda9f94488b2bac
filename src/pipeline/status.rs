//! `binferry status`: gathers what the target's state tables, the source and the running
//! process (its `/status`, when it answers) say about a pipeline into one
//! [`StatusReport`]. Works whether `run` is running or not; a part that cannot be read is
//! named in the report, never fatal.

use std::time::Duration;

use crate::config::Config;
use crate::error::Result;
use crate::sink::TargetSettings;
use crate::source::{SourceSettings, source_state};
use crate::status::StatusReport;

/// How long the running process gets to answer.
const PROCESS_TIMEOUT: Duration = Duration::from_secs(3);

/// Gather the status of the pipeline `config` describes.
pub async fn status(config: &Config) -> Result<StatusReport> {
    let mut report = StatusReport { pipeline: config.pipeline.name.clone(), ..Default::default() };
    match process_status(config).await {
        Ok(Some(p)) => {
            report.state = p.get("state").and_then(|s| s.as_str()).unwrap_or("running").to_string();
            report.running = true;
            report.process = Some(p);
        }
        Ok(None) => {}
        Err(e) => report.errors.push(e),
    }
    match TargetSettings::from_config(config) {
        Ok(t) => match t.read_status().await {
            Ok(state) => report.target = state,
            Err(e) => report.errors.push(format!("target: {e}")),
        },
        Err(e) => report.errors.push(format!("target: {e}")),
    }
    // The oldest position the target holds: the binlog a restart from the target would need.
    let needed = report
        .target
        .streams
        .iter()
        .filter_map(|s| Some((s.source_position.rsplit_once(':')?.0.to_string(), s.updated_at_unix)))
        .min();
    // The BigQuery source has no binlog to report on: its rounds show in the positions.
    match SourceSettings::from_config(config) {
        _ if config.source.kind == crate::config::SourceKind::Bigquery => {}
        Ok(s) => match source_state(&s, needed.as_ref().map(|(f, t)| (f.as_str(), *t))).await {
            Ok(state) => report.source = Some(state),
            Err(e) => report.errors.push(format!("source: {e}")),
        },
        Err(e) => report.errors.push(format!("source: {e}")),
    }
    if !report.running {
        report.state = stopped_state(&report);
    }
    Ok(report)
}

/// The state of a pipeline no process answers for, from its last run.
fn stopped_state(report: &StatusReport) -> String {
    match report.target.runs.first() {
        Some(r) if r.outcome == "failed" => {
            format!("stopped with error: {}", r.error.as_deref().unwrap_or("(not recorded)"))
        }
        Some(r) if r.outcome == "running" => {
            "not answering (a run is recorded as running: its endpoint is off or unreachable, or it was killed)".into()
        }
        _ => "stopped".into(),
    }
}

/// The running process's `/status`: `Ok(None)` when none answers at `http.listen` (not
/// running, the endpoint off, or a port chosen at start).
pub(super) async fn process_status(config: &Config) -> std::result::Result<Option<serde_json::Value>, String> {
    let Ok(Some(addr)) = config.http.address() else { return Ok(None) };
    if addr.port() == 0 {
        return Ok(None);
    }
    let client = reqwest::Client::builder().timeout(PROCESS_TIMEOUT).build().map_err(|e| e.to_string())?;
    let mut req = client.get(format!("http://{addr}/status"));
    if let Ok(Some(token)) = config.http.token() {
        req = req.bearer_auth(token.expose());
    }
    let resp = match req.send().await {
        Ok(r) => r,
        Err(_) => return Ok(None),
    };
    if !resp.status().is_success() {
        return Err(format!("the process at {addr} answered /status with {}", resp.status()));
    }
    resp.json().await.map(Some).map_err(|e| format!("the process at {addr} answered /status unreadably: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::RunRecord;

    #[test]
    fn a_stopped_pipeline_reads_its_last_run() {
        let mut r = StatusReport::default();
        assert_eq!(stopped_state(&r), "stopped");
        r.target.runs.push(RunRecord {
            outcome: "failed".into(),
            error: Some("target unreachable".into()),
            ..Default::default()
        });
        assert_eq!(stopped_state(&r), "stopped with error: target unreachable");
        r.target.runs[0].outcome = "running".into();
        assert!(stopped_state(&r).starts_with("not answering"));
    }
}
