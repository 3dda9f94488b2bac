//! Preflight checks of the source server: settings, grants, retention, tables.
//!
//! Each problem reads `setting: expected X, found Y` with the fix beside it,
//! so the operator can correct all of them in one pass. `binferry check`
//! prints the report; `binferry run` refuses to start while it has problems.

use mysql_async::Conn;
use mysql_async::prelude::Queryable;

use super::catalog::{load_schema, quote};
use super::{ServerInfo, SourceSettings};
pub use crate::check::{Problem, Report};
use crate::connection::tls_state;
use crate::error::{Error, ErrorKind, Result};
use crate::position::Position;
use crate::schema::TableRef;

async fn variable(conn: &mut Conn, name: &str) -> Result<Option<String>> {
    let row: Option<(String, String)> = conn
        .exec_first("SHOW GLOBAL VARIABLES WHERE Variable_name = ?", (name,))
        .await
        .map_err(|e| Error::source_mysql(e, format!("reading {name}")))?;
    Ok(row.map(|(_, v)| v))
}

/// What the target can replicate, as far as the source check needs to know.
#[derive(Clone, Copy, Debug)]
pub struct TargetCaps {
    /// Tables without a primary key (the MySQL target keeps them as multisets; BigQuery
    /// stops them).
    pub keyless_tables: bool,
}

/// Check the source; an `Err` means the check itself could not run (unreachable server, bad login).
pub async fn check_source(settings: &SourceSettings, target: TargetCaps) -> Result<Report> {
    let mut conn = settings.connect().await?;
    let server = ServerInfo::query(&mut conn).await?;
    let mut r = Report { server: format!("source {} ({})", settings.address, server.version), ..Default::default() };
    let tls = tls_state(&mut conn).await.map_err(|e| Error::source_mysql(e, "reading the session's TLS status"))?;
    let (line, warning) = settings.endpoint().describe(&tls);
    r.notes.push(line);
    r.warnings.extend(warning);

    let (major, minor) = server.major_minor;
    let version_ok = if server.mariadb { (major, minor) >= (10, 5) } else { major >= 8 };
    if !version_ok {
        r.problem(
            "server version",
            "MariaDB >= 10.5 or MySQL >= 8.0 (they write column names into the binlog)",
            &server.version,
            "upgrade the server",
        );
    }
    check_row_logging(&mut conn, &mut r).await?;
    let server_id: u32 = variable(&mut conn, "server_id").await?.and_then(|v| v.parse().ok()).unwrap_or(0);
    if server_id == 0 {
        r.problem(
            "server_id",
            "a non-zero id",
            "0",
            "set server_id=1 (any unique non-zero value) in [mysqld]; requires a restart",
        );
    } else if server_id == settings.server_id {
        r.problem(
            "source.server_id",
            format!("an id different from the source's own ({server_id})"),
            settings.server_id.to_string(),
            "set a different source.server_id in the binferry config",
        );
    }
    if server.mariadb {
        let gtid = variable(&mut conn, "gtid_binlog_pos").await?.unwrap_or_default();
        r.notes.push(format!("GTIDs: MariaDB, gtid_binlog_pos = {}", if gtid.is_empty() { "(empty)" } else { &gtid }));
    } else {
        let mode = variable(&mut conn, "gtid_mode").await?.unwrap_or_else(|| "OFF".into());
        r.notes.push(format!(
            "GTIDs: gtid_mode = {mode}{}",
            if mode == "ON" { "" } else { " (positions are used; GTIDs are recommended for failover)" }
        ));
    }

    check_retention(&mut conn, &mut r).await?;
    check_grants(&mut conn, &server, &mut r).await?;
    check_tables(&mut conn, settings, server.mariadb, target, &mut r).await?;
    Ok(r)
}

/// The binlog must exist and log whole rows with their column names.
async fn check_row_logging(conn: &mut Conn, r: &mut Report) -> Result<()> {
    let need = |r: &mut Report, name: &str, expected: &str, found: Option<String>, fix: &str| {
        let found_s = found.clone().unwrap_or_else(|| "not supported by this server".into());
        if !found.is_some_and(|f| f.eq_ignore_ascii_case(expected)) {
            r.problem(name, expected, found_s, fix);
        }
    };
    let log_bin = variable(conn, "log_bin").await?;
    need(
        r,
        "log_bin",
        "ON",
        log_bin,
        "start the server with --log-bin (and a server id), e.g. log_bin=binlog in [mysqld]; requires a restart",
    );
    let format = variable(conn, "binlog_format").await?;
    need(r, "binlog_format", "ROW", format, "SET GLOBAL binlog_format = 'ROW' and add binlog_format=ROW to [mysqld]");
    let image = variable(conn, "binlog_row_image").await?;
    need(
        r,
        "binlog_row_image",
        "FULL",
        image,
        "SET GLOBAL binlog_row_image = 'FULL' and add binlog_row_image=FULL to [mysqld]",
    );
    let metadata = variable(conn, "binlog_row_metadata").await?;
    need(
        r,
        "binlog_row_metadata",
        "FULL",
        metadata,
        "SET GLOBAL binlog_row_metadata = 'FULL' and add binlog_row_metadata=FULL to [mysqld]",
    );
    Ok(())
}

/// Binlogs must outlive an outage of binferry: a purged binlog means a new snapshot.
async fn check_retention(conn: &mut Conn, r: &mut Report) -> Result<()> {
    // Retention: a binlog purged before binferry reads it means a resnapshot.
    let expire_secs = match variable(conn, "binlog_expire_logs_seconds").await? {
        Some(v) => v.parse::<u64>().unwrap_or(0),
        None => variable(conn, "expire_logs_days")
            .await?
            .and_then(|v| v.parse::<f64>().ok())
            .map(|d| (d * 86400.0) as u64)
            .unwrap_or(0),
    };
    if expire_secs != 0 && expire_secs < 86_400 {
        r.problem(
            "binlog_expire_logs_seconds",
            "at least 86400 (one day), or 0 to keep binlogs until purged by hand",
            expire_secs.to_string(),
            "SET GLOBAL binlog_expire_logs_seconds = 604800 (and in [mysqld]) so an outage of binferry does not outlive the binlog",
        );
    } else {
        r.notes.push(format!(
            "binlog retention: {}",
            if expire_secs == 0 { "unlimited".to_string() } else { format!("{} h", expire_secs / 3600) }
        ));
    }
    Ok(())
}

async fn check_grants(conn: &mut Conn, server: &ServerInfo, r: &mut Report) -> Result<()> {
    let grants: Vec<String> =
        conn.query("SHOW GRANTS").await.map_err(|e| Error::source_mysql(e, "reading the user's grants"))?;
    let global = global_privileges(&grants);
    let has = |p: &str| global.iter().any(|g| g == "ALL PRIVILEGES" || g == p);
    let user: String = conn
        .query_first("SELECT CURRENT_USER()")
        .await
        .map_err(|e| Error::source_mysql(e, "reading the current user"))?
        .unwrap_or_default();
    if !has("REPLICATION SLAVE") && !has("REPLICATION REPLICA") {
        r.problem(
            "grant REPLICATION SLAVE",
            "granted ON *.*",
            "missing",
            format!("GRANT REPLICATION SLAVE ON *.* TO {user}"),
        );
    }
    let monitor = if server.mariadb { "BINLOG MONITOR" } else { "REPLICATION CLIENT" };
    if !has("BINLOG MONITOR") && !has("REPLICATION CLIENT") && !has("SUPER") {
        r.problem(
            &format!("grant {monitor}"),
            "granted ON *.*",
            "missing",
            format!("GRANT {monitor} ON *.* TO {user}"),
        );
    }
    Ok(())
}

/// Privileges granted `ON *.*` by `SHOW GRANTS` lines.
fn global_privileges(grants: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    for g in grants {
        let Some(rest) = g.strip_prefix("GRANT ") else { continue };
        let Some((privs, scope)) = rest.split_once(" ON ") else {
            continue;
        };
        if !scope.trim_start().starts_with("*.*") {
            continue;
        }
        out.extend(privs.split(',').map(|p| p.trim().to_ascii_uppercase()));
    }
    out
}

async fn check_tables(
    conn: &mut Conn,
    settings: &SourceSettings,
    mariadb: bool,
    target: TargetCaps,
    r: &mut Report,
) -> Result<()> {
    let rows: Vec<(String, String)> = conn
        .query("SELECT TABLE_SCHEMA, TABLE_NAME FROM information_schema.TABLES WHERE TABLE_TYPE = 'BASE TABLE' ORDER BY 1, 2")
        .await
        .map_err(|e| Error::source_mysql(e, "listing tables"))?;
    let tables: Vec<TableRef> =
        rows.into_iter().map(|(d, t)| TableRef::new(d, t)).filter(|t| settings.filter.matches(t)).collect();
    if tables.is_empty() {
        r.notes.push(
            "no existing table matches source.include yet (tables created later are replicated from their creation)"
                .into(),
        );
    }
    for t in &tables {
        let shaped = load_schema(conn, t, mariadb).await.and_then(|s| {
            let keyless = !s.has_primary_key();
            settings.shape(s).map(|_| keyless)
        });
        match shaped {
            Ok(true) if target.keyless_tables => {
                r.notes.push(format!("table {t} has no primary key: replicated with the row hash as identity"))
            }
            Ok(true) => r.warnings.push(format!(
                "table {t} has no primary key, and the target keys rows by it: binferry stops this table (the others \
                 replicate). Fix: add a primary key, or exclude it with source.exclude = [\"{}\"]",
                t.key()
            )),
            Ok(false) => {}
            Err(e) if e.detail().ends_with("has no primary key") => r.warnings.push(format!(
                "table {t} has no primary key and its [[tables]] rule says without_primary_key = \"refuse\": binferry \
                 stops this table (the others replicate). Fix: ALTER TABLE {t} ADD PRIMARY KEY (...), or exclude it \
                 with source.exclude = [\"{}\"]",
                t.key()
            )),
            Err(e) if e.kind() == ErrorKind::Config => r.problem(
                &format!("table {t}"),
                "a valid [[tables]] rule",
                e.detail().to_string(),
                e.hint().unwrap_or("fix the rule").to_string(),
            ),
            Err(e) if e.kind() == ErrorKind::Unsupported => r.warnings.push(format!(
                "table {t}: {}: binferry stops this table (the others replicate). Fix: {}",
                e.detail(),
                e.hint().unwrap_or("exclude the table with source.exclude")
            )),
            Err(e) => return Err(e),
        }
    }
    if let Err(e) = conn.query_drop("SELECT 1").await {
        return Err(Error::source_mysql(e, "source connection"));
    }
    // SELECT must work on every selected table (information_schema hides tables without grants,
    // but column-level grants can still make the snapshot fail).
    for t in &tables {
        let sql = format!("SELECT * FROM {}.{} LIMIT 0", quote(&t.db), quote(&t.name));
        if let Err(e) = conn.query_drop(sql).await {
            r.problem(
                &format!("grant SELECT on {t}"),
                "granted",
                format!("denied ({e})"),
                format!("GRANT SELECT ON {}.* TO the replication user", t.db),
            );
        }
    }
    r.notes.push(format!("{} table(s) selected", tables.len()));
    Ok(())
}

/// The server's current binlog file and position.
pub(crate) async fn current_binlog_position(conn: &mut Conn) -> Result<(String, u64)> {
    let mut row: Option<mysql_async::Row> = match conn.query_first("SHOW MASTER STATUS").await {
        Ok(r) => r,
        Err(_) => conn
            .query_first("SHOW BINARY LOG STATUS")
            .await
            .map_err(|e| Error::source_mysql(e, "reading the binlog position"))?,
    };
    let file: Option<String> = row.as_mut().and_then(|r| r.take(0));
    let pos: Option<u64> = row.as_mut().and_then(|r| r.take(1));
    match (file, pos) {
        (Some(f), Some(p)) => Ok((f, p)),
        _ => Err(Error::new(ErrorKind::SourceSetting, "log_bin: expected ON, found OFF (SHOW MASTER STATUS is empty)")
            .with_hint("start the server with --log-bin")),
    }
}

/// Fail with a definite error when `resume`'s binlog file is gone.
pub(crate) async fn ensure_binlog_available(conn: &mut Conn, resume: &Position) -> Result<()> {
    let rows: Vec<mysql_async::Row> =
        conn.query("SHOW BINARY LOGS").await.map_err(|e| Error::source_mysql(e, "listing binlogs"))?;
    let files: Vec<String> = rows.into_iter().filter_map(|mut r| r.take::<String, _>(0)).collect();
    if files.contains(&resume.file) {
        return Ok(());
    }
    Err(Error::new(
        ErrorKind::BinlogPurged,
        format!(
            "checkpoint position {resume} is no longer on the source: binlog file {} was purged (oldest available: {})",
            resume.file,
            files.first().map(String::as_str).unwrap_or("none")
        ),
    )
    .with_hint("changes after the checkpoint are lost on the source; keep binlogs longer (binlog_expire_logs_seconds) and start over with a new buffer (delete buffer.embedded.path) and an empty target database, which takes a fresh snapshot"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_global_grants() {
        let g = vec![
            "GRANT REPLICATION SLAVE, BINLOG MONITOR ON *.* TO `cdc`@`%`".to_string(),
            "GRANT SELECT ON `shop`.* TO `cdc`@`%`".to_string(),
        ];
        assert_eq!(global_privileges(&g), vec!["REPLICATION SLAVE", "BINLOG MONITOR"]);
    }

    #[test]
    fn problem_format() {
        let p = Problem {
            setting: "binlog_format".into(),
            expected: "ROW".into(),
            found: "STATEMENT".into(),
            fix: "SET GLOBAL binlog_format='ROW'".into(),
            unreachable: false,
        };
        assert_eq!(
            p.to_string(),
            "binlog_format: expected ROW, found STATEMENT\n    fix: SET GLOBAL binlog_format='ROW'"
        );
    }
}
