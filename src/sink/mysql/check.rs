//! Preflight of a MySQL target: reachable, and the privileges to create and write tables.

use std::collections::HashSet;

use mysql_async::prelude::Queryable;

use super::MysqlSinkSettings;
use crate::check::{Problem, Report};
use crate::connection::tls_state;
use crate::error::{Error, Result};

/// Privileges the target user needs on the target database.
const NEEDED: [&str; 6] = ["CREATE", "ALTER", "SELECT", "INSERT", "UPDATE", "DELETE"];

/// Check the target; an `Err` means the check could not run (unreachable, bad login).
pub async fn check(settings: &MysqlSinkSettings) -> Result<Report> {
    let mut conn = settings.connect().await?;
    let version: String = conn
        .query_first("SELECT VERSION()")
        .await
        .map_err(|e| Error::target_mysql(e, "reading version"))?
        .unwrap_or_default();
    let mut r = Report {
        server: format!("target {} ({version}), database `{}`", settings.address, settings.database),
        ..Default::default()
    };
    let tls = tls_state(&mut conn).await.map_err(|e| Error::target_mysql(e, "reading the session's TLS status"))?;
    let (line, warning) = settings.endpoint.describe(&tls);
    r.notes.push(line);
    r.warnings.extend(warning);
    let grants: Vec<String> = conn.query("SHOW GRANTS").await.map_err(|e| Error::target_mysql(e, "reading grants"))?;
    let user: String = conn
        .query_first("SELECT CURRENT_USER()")
        .await
        .map_err(|e| Error::target_mysql(e, "reading the current user"))?
        .unwrap_or_default();
    let db = &settings.database;
    let mut granted: HashSet<String> = HashSet::new();
    for g in &grants {
        let Some(rest) = g.strip_prefix("GRANT ") else { continue };
        let Some((privs, scope)) = rest.split_once(" ON ") else { continue };
        let scope = scope.trim_start();
        let applies = scope.starts_with("*.*")
            || scope.starts_with(&format!("`{db}`.*"))
            || scope.starts_with(&format!("`{}`.*", db.replace('_', "\\_")));
        if applies {
            granted.extend(privs.split(',').map(|p| p.trim().to_ascii_uppercase()));
        }
    }
    let all = granted.contains("ALL PRIVILEGES") || granted.contains("ALL");
    let missing: Vec<&str> = NEEDED.iter().copied().filter(|p| !all && !granted.contains(*p)).collect();
    if !missing.is_empty() {
        r.problems.push(Problem {
            setting: format!("target grants on `{db}`"),
            expected: NEEDED.join(", "),
            found: format!("missing {}", missing.join(", ")),
            fix: format!("GRANT {} ON `{db}`.* TO {user}", NEEDED.join(", ")),
            unreachable: false,
        });
    }
    r.notes.push(format!("target reachable as {user}"));
    // Tables stopped by an incompatible schema change (the table may not exist yet).
    let stopped: Vec<(String, String, String)> = conn
        .exec(
            format!(
                "SELECT source_db, source_table, reason FROM `{}`.`{}` WHERE pipeline = ?",
                db.replace('`', "``"),
                super::STOPPED_TABLE
            ),
            (&settings.pipeline,),
        )
        .await
        .unwrap_or_default();
    for (d, t, reason) in stopped {
        r.notes.push(format!(
            "table {d}.{t} is STOPPED and not replicating: {reason} (fix the cause, then `binferry resync --table {d}.{t}` rebuilds it)"
        ));
    }
    Ok(r)
}
