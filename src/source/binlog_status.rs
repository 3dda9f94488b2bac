//! The source side of `binferry status`: where the binlog ends now, which binlogs are still
//! on the server, and how long the one the target's position is in will last.

use mysql_async::prelude::Queryable;

use super::{ServerInfo, SourceSettings};
use crate::error::{Error, Result};
use crate::status::{SourceState, retention_headroom};

/// The source's binlog compared with `needed`: the binlog file of the target's position and
/// when the target applied it (seconds since the epoch).
pub async fn source_state(settings: &SourceSettings, needed: Option<(&str, u64)>) -> Result<SourceState> {
    let mut conn = settings.connect().await?;
    let server = ServerInfo::query(&mut conn).await?;
    let read = |what: &str| format!("reading {what} from the source");
    let master: Option<mysql_async::Row> =
        conn.query_first("SHOW MASTER STATUS").await.map_err(|e| Error::source_mysql(e, read("SHOW MASTER STATUS")))?;
    let position = master
        .and_then(|r| Some(format!("{}:{}", r.get_opt::<String, _>(0)?.ok()?, r.get_opt::<u64, _>(1)?.ok()?)))
        .unwrap_or_else(|| "(binary logging is off)".into());
    let logs: Vec<mysql_async::Row> =
        conn.query("SHOW BINARY LOGS").await.map_err(|e| Error::source_mysql(e, read("SHOW BINARY LOGS")))?;
    let files: Vec<String> = logs.into_iter().filter_map(|r| r.get_opt::<String, _>(0)?.ok()).collect();
    let expire: Option<(String, String)> = conn
        .query_first("SHOW GLOBAL VARIABLES WHERE Variable_name = 'binlog_expire_logs_seconds'")
        .await
        .map_err(|e| Error::source_mysql(e, read("binlog_expire_logs_seconds")))?;
    let retention_secs = match expire {
        Some((_, v)) => v.parse().unwrap_or(0),
        None => {
            let days: Option<(String, String)> = conn
                .query_first("SHOW GLOBAL VARIABLES WHERE Variable_name = 'expire_logs_days'")
                .await
                .map_err(|e| Error::source_mysql(e, read("expire_logs_days")))?;
            days.and_then(|(_, d)| d.parse::<f64>().ok()).map_or(0, |d| (d * 86_400.0) as u64)
        }
    };
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let current = files.last().cloned();
    let (present, headroom) = match needed {
        None => (None, None),
        Some((file, applied_at)) => {
            let present = files.iter().any(|f| f == file);
            // The file being written now is not purged. An older one is purged once the
            // retention has passed since its last write, which the server does not report;
            // the estimate is the time the target applied a position in it. When the target
            // was behind then, the source wrote it earlier and the real headroom is shorter
            // by that lag (`status` shows the lag next to it).
            let headroom = if current.as_deref() == Some(file) {
                (retention_secs > 0).then_some(retention_secs)
            } else {
                retention_headroom(retention_secs, applied_at, now)
            };
            (Some(present), if present { headroom } else { Some(0) })
        }
    };
    Ok(SourceState {
        server: format!("{} ({})", settings.address, server.version),
        position,
        oldest_binlog: files.first().cloned(),
        retention_secs,
        needed_binlog_present: present,
        retention_headroom_secs: headroom,
    })
}
