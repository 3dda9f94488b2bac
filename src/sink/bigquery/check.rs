//! Preflight of a BigQuery target: credentials, dataset access, and the rights to create
//! tables and run jobs.

use std::sync::Arc;

use super::BigQuerySinkSettings;
use crate::bigquery_api::{Api, Auth, Side};
use crate::error::{Error, Result};

/// Preflight of a BigQuery target: credentials work, the dataset exists or can be created,
/// and query jobs run. An `Err` means the check could not run at all.
pub async fn check(settings: &BigQuerySinkSettings) -> Result<crate::check::Report> {
    let s = settings;
    let api =
        Api::connect(Side::Target, &s.auth, &s.project, s.location.as_deref(), s.timeout, Arc::clone(&s.stats)).await?;
    let endpoint = match &s.auth {
        Auth::Emulator(url) => format!(" at {url}"),
        _ => String::new(),
    };
    let mut r = crate::check::Report {
        server: format!("target BigQuery{endpoint}, project {}, dataset {}", s.project, s.dataset),
        ..Default::default()
    };
    let (setting, expected) = match &s.auth {
        Auth::Emulator(url) => ("sink.bigquery.endpoint", format!("a BigQuery API answering at {url}")),
        _ => ("sink.bigquery.project", format!("BigQuery answering for project {}", s.project)),
    };
    let problem = |e: &Error| crate::check::Problem {
        setting: setting.into(),
        expected: expected.clone(),
        found: e.detail().to_string(),
        fix: e.hint().unwrap_or("check the network, the endpoint and the credentials").to_string(),
        unreachable: e.is_transient(),
    };
    match api.dataset_exists(&s.dataset).await {
        Ok(true) => r.notes.push(format!("dataset {} exists", s.dataset)),
        Ok(false) => r.notes.push(format!("dataset {} does not exist yet: `run` creates it", s.dataset)),
        Err(e) => {
            r.problems.push(problem(&e));
            return Ok(r);
        }
    }
    match api.query("SELECT 1").await {
        Ok(_) => r.notes.push("query jobs run (MERGE and DDL need roles/bigquery.jobUser and dataEditor)".into()),
        Err(e) => r.problems.push(problem(&e)),
    }
    Ok(r)
}
