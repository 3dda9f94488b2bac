//! The source: reads a MySQL/MariaDB server and appends change events to the buffer.
//!
//! # Snapshot, then stream
//!
//! On the first start the source copies the existing rows of every selected
//! table (`snapshot.rs`) inside one `START TRANSACTION WITH CONSISTENT
//! SNAPSHOT`; MariaDB reports the binlog position that snapshot corresponds to
//! (`binlog_snapshot_file` / `binlog_snapshot_position`), so no global read
//! lock is taken. Streaming then starts exactly at that position: every change
//! committed before it is in the copy, every change after it comes from the
//! binlog, so nothing is lost or doubled.
//!
//! If the process dies mid-snapshot, finished tables are not copied again: the
//! checkpoint records each finished table with the position of its copy. The
//! remaining tables are copied in a new consistent snapshot at a newer
//! position, streaming resumes from the oldest position, and binlog changes to
//! a table at or before its own copy position are dropped (they are in the
//! copy already).
//!
//! # Checkpoints
//!
//! The source appends records in batches; every append carries the position
//! after the last *complete* source transaction in the buffer, written
//! atomically with the records. A restart resumes there. Records of a
//! transaction that was cut by a crash may be appended twice; the writer's
//! position check makes that harmless (DESIGN.md, guarantee 1).

mod binlog;
mod catalog;
mod chunks;
mod control;
mod resync;

mod ddl;

mod binlog_status;
mod hashes;
pub mod preflight;

pub mod bigquery;
mod snapshot;
mod table_map;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::shutdown::Shutdown;
use mysql_async::prelude::Queryable;
use mysql_async::{Conn, OptsBuilder};
use tokio::sync::mpsc;
use tracing::info;

use crate::table_filter::TableFilter;
pub use binlog::{RowImages, decode_rows};
pub use binlog_status::source_state;
pub use control::{Control, Inbox, Repaired, Resynced, control};
pub use hashes::{HashChunks, hash_chunks, table_hashes, verified_tables};

use crate::buffer::Journal;
use crate::config::{Config, DEFAULT_SOURCE_PASSWORD_ENV, SnapshotMode, resolve_password};
use crate::connection::{Endpoint, Role};
use crate::error::{Error, ErrorKind, Result};
use crate::retry::Backoff;
use crate::schema::TableSchema;
use crate::table_options::{KeylessMode, TableRules};
use crate::telemetry::Stats;
use table_map::Collations;

/// Everything the source needs, resolved from the config.
#[derive(Clone)]
pub struct SourceSettings {
    endpoint: Endpoint,
    /// `host:port`, for messages.
    pub address: String,
    /// Replica server id.
    pub server_id: u32,
    /// Table selection.
    pub filter: TableFilter,
    /// Snapshot mode.
    pub snapshot_mode: SnapshotMode,
    /// Rows per snapshot chunk.
    pub chunk_rows: usize,
    /// Chunks of one table read at the same time.
    pub snapshot_parallel: usize,
    /// Per-table options.
    pub rules: TableRules,
    /// Pause at transaction boundaries while the buffer holds this many unapplied records (0: never).
    pub max_unapplied: u64,
}

impl SourceSettings {
    /// Resolve settings (and the password) from the config.
    pub fn from_config(config: &Config) -> Result<Self> {
        let s = &config.source;
        let password = resolve_password("source", &s.password_env, &s.password_file, DEFAULT_SOURCE_PASSWORD_ENV)?;
        let opts = OptsBuilder::default()
            .user(Some(s.user.clone()))
            .pass(Some(password.expose().to_string()))
            .max_allowed_packet(Some(1 << 30))
            // UTC and utf8mb4 make snapshot values identical to binlog values (see decode.rs).
            .init(vec!["SET time_zone = '+00:00'", "SET NAMES utf8mb4"]);
        let timeout = Duration::from_secs(s.connect_timeout_secs);
        let endpoint = Endpoint::new(Role::Source, "source", &s.host, s.port, opts, s.tls.clone(), timeout);
        Ok(SourceSettings {
            address: endpoint.address(),
            endpoint,
            server_id: config.server_id(),
            filter: TableFilter::new(&s.include, &s.exclude)?,
            snapshot_mode: config.snapshot.mode,
            chunk_rows: config.snapshot.chunk_rows,
            snapshot_parallel: config.snapshot.parallel,
            rules: config.table_rules()?,
            max_unapplied: config.buffer.embedded.max_unapplied_records,
        })
    }

    /// A new connection to the source, encrypted as `source.tls` says.
    pub async fn connect(&self) -> Result<Conn> {
        self.endpoint.connect().await
    }

    /// The source server and how binferry connects to it.
    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }
}

impl SourceSettings {
    /// Apply the table's options to a freshly read schema: refuse a keyless table when so
    /// configured, and leave out excluded columns. Returns the schema to replicate and the
    /// indexes of the source columns it keeps (`None`: all of them).
    pub(crate) fn shape(&self, schema: TableSchema) -> Result<(TableSchema, Option<Vec<usize>>)> {
        let options = self.rules.options(&schema.table);
        if !schema.has_primary_key() && options.without_primary_key == KeylessMode::Refuse {
            return Err(Error::new(ErrorKind::Unsupported, format!("table {} has no primary key", schema.table)).with_hint(
                format!(
                    "add a primary key, exclude the table (source.exclude = [\"{}\"]), or set without_primary_key = \"hash\" in its [[tables]] rule",
                    schema.table.key()
                ),
            ));
        }
        schema.project(&options.exclude_columns)
    }
}

/// Flavor and version of the source server.
#[derive(Clone, Debug)]
pub struct ServerInfo {
    /// `SELECT VERSION()`.
    pub version: String,
    /// MariaDB or MySQL.
    pub mariadb: bool,
    /// (major, minor).
    pub major_minor: (u32, u32),
}

impl ServerInfo {
    pub(crate) async fn query(conn: &mut Conn) -> Result<Self> {
        let version: String = conn
            .query_first("SELECT VERSION()")
            .await
            .map_err(|e| Error::source_mysql(e, "reading server version"))?
            .unwrap_or_default();
        let mut parts = version.split(|c: char| !c.is_ascii_digit()).filter(|p| !p.is_empty());
        let major = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
        let minor = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
        Ok(ServerInfo {
            mariadb: version.to_ascii_lowercase().contains("mariadb"),
            major_minor: (major, minor),
            version,
        })
    }
}

pub(crate) async fn load_collations(conn: &mut Conn) -> Result<Collations> {
    let rows: Vec<(u16, String, String, u32)> = conn
        .query(
            "SELECT c.ID, c.CHARACTER_SET_NAME, c.COLLATION_NAME, s.MAXLEN \
             FROM information_schema.COLLATIONS c JOIN information_schema.CHARACTER_SETS s \
             ON s.CHARACTER_SET_NAME = c.CHARACTER_SET_NAME WHERE c.ID IS NOT NULL",
        )
        .await
        .map_err(|e| Error::source_mysql(e, "reading the source's collations"))?;
    Ok(Collations::new(rows))
}

/// Run the source until `shutdown` turns true or a definite error occurs; transient errors
/// are retried with backoff from the last checkpoint.
pub async fn run<B: Journal>(
    settings: SourceSettings,
    buffer: Arc<B>,
    stats: Arc<Stats>,
    shutdown: Shutdown,
    mut inbox: Inbox,
) -> Result<()> {
    let mut backoff = Backoff::default();
    loop {
        let Err(e) = run_once(&settings, &buffer, &stats, &shutdown, &mut backoff, &mut inbox).await else {
            return Ok(());
        };
        if !backoff.pause_source(e, "the last checkpoint", &stats, &shutdown).await? {
            return Ok(());
        }
    }
}

async fn run_once<B: Journal>(
    settings: &SourceSettings,
    buffer: &Arc<B>,
    stats: &Arc<Stats>,
    shutdown: &Shutdown,
    backoff: &mut Backoff,
    inbox: &mut Inbox,
) -> Result<()> {
    let mut checkpoint = buffer.checkpoint().await?;
    let mut conn = settings.connect().await?;
    let server = ServerInfo::query(&mut conn).await?;
    let collations = load_collations(&mut conn).await?;

    if !checkpoint.snapshot.complete {
        match settings.snapshot_mode {
            SnapshotMode::Initial => {
                let pool = settings.endpoint.pool().await?;
                stats.snapshot_running.store(true, Ordering::Relaxed);
                let done =
                    snapshot::run(&pool, &server, buffer.as_ref(), settings, &mut checkpoint, stats, shutdown).await;
                stats.snapshot_running.store(false, Ordering::Relaxed);
                pool.disconnect().await.ok();
                if !done? {
                    return Ok(()); // shut down mid-snapshot; resumable
                }
            }
            SnapshotMode::Never => {
                if checkpoint.resume.is_none() {
                    let (file, pos) = preflight::current_binlog_position(&mut conn).await?;
                    info!(position = %format!("{file}:{pos}"), "snapshot.mode = never: streaming from the current binlog end");
                    checkpoint.resume = Some(crate::position::Position::new(file, pos));
                }
                checkpoint.snapshot.complete = true;
                buffer.append(crate::buffer::AppendBatch::checkpoint_only(checkpoint.clone())).await?;
            }
        }
    }
    let resume =
        checkpoint.resume.clone().ok_or_else(|| Error::internal("snapshot finished without a resume position"))?;
    preflight::ensure_binlog_available(&mut conn, &resume).await?;
    drop(conn);
    // The chunked copies (snapshot and resyncs) run beside the stream, which takes their
    // chunks into the buffer between transactions; see `chunks.rs`.
    let jobs: Vec<chunks::CopyJob> = checkpoint
        .snapshot
        .chunked
        .values()
        .map(|c| chunks::CopyJob { table: c.table.clone(), after: c.after.clone(), keys: None })
        .collect();
    let (offers_tx, offers) = mpsc::channel(1);
    let (jobs_tx, jobs_rx) = mpsc::channel(COPY_JOB_QUEUE.max(jobs.len()));
    for job in jobs {
        jobs_tx.try_send(job).map_err(|_| Error::internal("copy job queue full at start"))?;
    }
    let copier = chunks::Copier { settings: settings.clone(), server: server.clone(), offers: offers_tx };
    let copying = copier.run(jobs_rx, shutdown.clone());
    let link = binlog::CopyLink::new(jobs_tx, offers, inbox);
    let streaming =
        binlog::stream(settings, &server, collations, buffer.as_ref(), checkpoint, stats, shutdown, backoff, link);
    tokio::pin!(streaming);
    tokio::select! {
        r = &mut streaming => r,
        r = copying => {
            r?;
            streaming.await
        }
    }
}

/// Now, in Unix seconds, for the timestamps of records the source makes itself.
fn now_secs() -> u32 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as u32).unwrap_or(0)
}

/// Tables waiting to be copied in chunks, beyond those a restart resumes.
const COPY_JOB_QUEUE: usize = 1024;
