//! Preflight of a BigQuery source: credentials, the datasets, query jobs, and each selected
//! table's key and types (a table binferry would stop is a warning with its fix).

use std::sync::Arc;

use super::{BigQuerySourceSettings, arrow_rows, discover, shape};
use crate::bigquery_api::Auth;
use crate::check::{Problem, Report};
use crate::error::{Error, Result, Scope};
use crate::telemetry::Stats;

/// Check what `run` will read. An `Err` means the check could not run at all.
pub async fn check(settings: &BigQuerySourceSettings) -> Result<Report> {
    let stats = Arc::new(Stats::default());
    let api = settings.api(&stats).await?;
    let endpoint = match &settings.auth {
        Auth::Emulator(url) => format!(" at {url}"),
        _ => String::new(),
    };
    let mut r = Report {
        server: format!(
            "source BigQuery{endpoint}, project {}, datasets {}",
            settings.project,
            settings.datasets.join(", ")
        ),
        ..Default::default()
    };
    let problem = |setting: &str, expected: &str, e: &Error| Problem {
        setting: setting.into(),
        expected: expected.into(),
        found: e.detail().to_string(),
        fix: e.hint().unwrap_or("check the network, the endpoint and the credentials").to_string(),
        unreachable: e.is_transient(),
    };
    let now = match super::bigquery_now(&api).await {
        Ok(now) => now,
        Err(e) => {
            let (setting, expected) = match &settings.auth {
                Auth::Emulator(url) => ("source.bigquery.endpoint", format!("a BigQuery API answering at {url}")),
                _ => ("source.bigquery.project", "query jobs that run (roles/bigquery.jobUser)".to_string()),
            };
            r.problems.push(problem(setting, &expected, &e));
            return Ok(r);
        }
    };
    let tables = match discover(&api, settings).await {
        Ok(t) => t,
        Err(e) => {
            r.problems.push(problem("source.include", "datasets binferry may list (roles/bigquery.dataViewer)", &e));
            return Ok(r);
        }
    };
    if tables.is_empty() {
        r.warnings.push(format!(
            "no table of datasets {} matches source.include: nothing to mirror yet (new tables are picked up by \
             the next round)",
            settings.datasets.join(", ")
        ));
    }
    let mut good = 0;
    let mut readable = None;
    for table in &tables {
        match shape(&api, settings, table).await {
            Ok(shaped) => {
                good += 1;
                if readable.is_none() && arrow_rows::readable(&shaped.bq) {
                    readable = Some(shaped.bq);
                }
            }
            Err(e) if e.kind().scope() == Scope::Table => r.warnings.push(format!(
                "{table} will be stopped: {}{}",
                e.detail(),
                e.hint().map(|h| format!("; fix: {h}")).unwrap_or_default()
            )),
            Err(e) => r.problems.push(problem(&format!("table {table}"), "a table binferry can read", &e)),
        }
    }
    r.notes.push(format!(
        "{good} of {} selected tables can be mirrored, every {} s",
        tables.len(),
        settings.interval.as_secs()
    ));
    // The Storage Read API: a read session of one table it would read (no rows are read).
    if let (Some(endpoint), Some(t)) = (&settings.storage, readable) {
        let names: Vec<String> = t.columns.iter().map(|c| c.name.clone()).collect();
        match api.read_table(endpoint, &t.dataset, &t.name, &names, now).await {
            Ok(session) if session.snapshot => {
                r.notes.push(format!("whole-table reads go through the Storage Read API at {endpoint}"));
            }
            Ok(_) => r.warnings.push(format!(
                "the Storage Read API at {endpoint} does not confirm a read session's snapshot time (the emulator \
                 ignores it): rounds read whole tables over REST, to keep a round's tables at one moment; verify \
                 reads through it"
            )),
            Err(e) => r.problems.push(problem(
                "source.bigquery.storage_endpoint",
                &format!("a Storage Read API answering at {endpoint} (roles/bigquery.readSessionUser)"),
                &e,
            )),
        }
    }
    Ok(r)
}
