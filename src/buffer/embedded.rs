//! The embedded buffer: an append-only log in a local redb file.
//!
//! One redb write transaction per append holds the records, any new schemas
//! and the source checkpoint, so they become durable together (redb commits
//! with fsync by default). Offsets are the keys of the `events` table. The
//! value of each record is its append time (8 bytes, ms since the epoch)
//! followed by the envelope bytes; the time drives age-based retention.
//!
//! redb locks the file, so two binferry processes cannot share one buffer.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use tokio::sync::watch;

use super::{AppendBatch, Item, Journal, Log};
use crate::error::{Error, ErrorKind, Result};
use crate::event::envelope;
use crate::position::SourceCheckpoint;
use crate::schema::TableSchema;

const EVENTS: TableDefinition<u64, &[u8]> = TableDefinition::new("events");
const SCHEMAS: TableDefinition<u64, &[u8]> = TableDefinition::new("schemas");
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");

const META_CHECKPOINT: &str = "source_checkpoint";
const META_NEXT_OFFSET: &str = "next_offset";
const META_STORED_BYTES: &str = "stored_bytes";
const META_FORMAT: &str = "format";
/// Page cache of the redb file.
const CACHE_BYTES: usize = 32 * 1024 * 1024;
/// Layout version of this file; bumped when the tables above change meaning.
const FORMAT_VERSION: u64 = 1;

/// Retention settings.
#[derive(Clone, Copy, Debug)]
pub struct Retention {
    /// Drop the oldest acknowledged records beyond this many stored bytes.
    pub max_bytes: u64,
    /// Drop acknowledged records older than this.
    pub max_age: Duration,
}

/// The redb-backed buffer.
pub struct EmbeddedBuffer {
    db: Arc<Database>,
    path: PathBuf,
    retention: Retention,
    next_offset: watch::Sender<u64>,
    /// One past the highest acknowledged offset (0: nothing acknowledged).
    acked: AtomicU64,
    schemas: Mutex<HashMap<u64, Arc<TableSchema>>>,
}

fn storage(path: &Path) -> impl Fn(redb::Error) -> Error + '_ {
    move |e| Error::buffer(e, format!("embedded buffer {}", path.display()))
}

/// Create an empty buffer file so that a crash at any instant leaves either no file or a
/// complete one.
///
/// redb writes its header after creating the file; a process killed in between (binferry is
/// killed in its first milliseconds as readily as later) would leave a file that every later
/// start refuses as "not a redb database". So the file is built under a private name, synced,
/// and linked into place: `hard_link` fails instead of replacing a file another process linked
/// first.
fn create_atomically(path: &Path) -> Result<()> {
    let io = |what: &str, e: std::io::Error| {
        Error::new(ErrorKind::Buffer, format!("cannot {what} embedded buffer {}: {e}", path.display()))
    };
    let mut staging = path.as_os_str().to_owned();
    staging.push(format!(".creating.{}", std::process::id()));
    let staging = PathBuf::from(staging);
    // A leftover from a crashed creation by a process with the same id is garbage.
    let _ = std::fs::remove_file(&staging);
    let db = Database::builder().create(&staging).map_err(|e| storage(path)(e.into()))?;
    drop(db);
    std::fs::File::open(&staging).and_then(|f| f.sync_all()).map_err(|e| io("sync new", e))?;
    let linked = std::fs::hard_link(&staging, path);
    let _ = std::fs::remove_file(&staging);
    match linked {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(io("create", e)),
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(|e| io("sync the directory of", e))?;
    }
    Ok(())
}

impl EmbeddedBuffer {
    /// The offset the next append will get (number of records ever appended).
    pub fn next_offset(&self) -> u64 {
        *self.next_offset.borrow()
    }

    /// Open (or create) the buffer file.
    pub fn open(path: &Path, retention: Retention) -> Result<Self> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| {
                Error::new(
                    ErrorKind::Buffer,
                    format!("cannot create directory {} for the embedded buffer: {e}", dir.display()),
                )
            })?;
        }
        if !path.exists() {
            create_atomically(path)?;
        }
        // redb's default page cache is sized for databases that are read more than written;
        // a log that is appended and read once needs little, and memory must stay bounded.
        let db = Database::builder().set_cache_size(CACHE_BYTES).create(path).map_err(|e| match e {
            redb::DatabaseError::DatabaseAlreadyOpen => Error::new(
                ErrorKind::Buffer,
                format!("embedded buffer {} is already open in another binferry process", path.display()),
            )
            .with_hint("stop the other process, or give this pipeline its own buffer.embedded.path"),
            e => storage(path)(e.into()),
        })?;
        let err = storage(path);
        let txn = db.begin_write().map_err(|e| err(e.into()))?;
        let next = {
            let mut meta = txn.open_table(META).map_err(|e| err(e.into()))?;
            txn.open_table(EVENTS).map_err(|e| err(e.into()))?;
            txn.open_table(SCHEMAS).map_err(|e| err(e.into()))?;
            let format = meta.get(META_FORMAT).map_err(|e| err(e.into()))?.map(|v| u64_from(v.value()));
            match format {
                None => {
                    meta.insert(META_FORMAT, FORMAT_VERSION.to_be_bytes().as_slice()).map_err(|e| err(e.into()))?;
                }
                Some(Some(FORMAT_VERSION)) => {}
                Some(other) => {
                    return Err(Error::new(
                        ErrorKind::Buffer,
                        format!(
                            "embedded buffer {} has layout version {other:?}, this binferry reads {FORMAT_VERSION}",
                            path.display()
                        ),
                    ));
                }
            }
            meta_u64(&meta, META_NEXT_OFFSET).map_err(&err)?
        };
        txn.commit().map_err(|e| err(e.into()))?;
        let (tx, _) = watch::channel(next);
        Ok(EmbeddedBuffer {
            db: Arc::new(db),
            path: path.to_path_buf(),
            retention,
            next_offset: tx,
            acked: AtomicU64::new(0),
            schemas: Mutex::new(HashMap::new()),
        })
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Database, &Path) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let db = Arc::clone(&self.db);
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || f(&db, &path))
            .await
            .map_err(|e| Error::internal(format!("embedded buffer task failed: {e}")))?
    }

    /// Apply retention: drop acknowledged records that are too old or beyond the size limit.
    /// Returns how many records were dropped.
    pub async fn enforce_retention(&self) -> Result<u64> {
        self.enforce_retention_at(now_ms()).await
    }

    /// [`Self::enforce_retention`] as of `now` (unix ms): tests pass the clock so
    /// that a slow machine cannot age a record past the limit between two asserts.
    async fn enforce_retention_at(&self, now: u64) -> Result<u64> {
        let Some(acked) = self.acked.load(Ordering::Acquire).checked_sub(1) else {
            return Ok(0);
        };
        let retention = self.retention;
        self.blocking(move |db, path| {
            let err = storage(path);
            let max_age_ms = retention.max_age.as_millis() as u64;
            let txn = db.begin_write().map_err(|e| err(e.into()))?;
            let mut dropped = 0;
            {
                let mut events = txn.open_table(EVENTS).map_err(|e| err(e.into()))?;
                let mut meta = txn.open_table(META).map_err(|e| err(e.into()))?;
                let mut stored = meta_u64(&meta, META_STORED_BYTES).map_err(&err)?;
                loop {
                    let Some((offset, appended_ms, len)) = events.first().map_err(|e| err(e.into()))?.map(|(k, v)| {
                        (k.value(), v.value().get(..8).and_then(u64_from).unwrap_or(0), v.value().len() as u64)
                    }) else {
                        break;
                    };
                    let too_old = now.saturating_sub(appended_ms) > max_age_ms;
                    let too_big = stored > retention.max_bytes;
                    if offset > acked || !(too_old || too_big) {
                        break;
                    }
                    events.remove(offset).map_err(|e| err(e.into()))?;
                    stored = stored.saturating_sub(len);
                    dropped += 1;
                }
                meta.insert(META_STORED_BYTES, stored.to_be_bytes().as_slice()).map_err(|e| err(e.into()))?;
            }
            txn.commit().map_err(|e| err(e.into()))?;
            Ok(dropped)
        })
        .await
    }

    /// The first offset appended at or after `unix_ms` (the next offset when none was).
    pub async fn offset_at_time(&self, unix_ms: u64) -> Result<u64> {
        let next = self.next_offset();
        self.blocking(move |db, path| {
            let err = storage(path);
            let txn = db.begin_read().map_err(|e| err(e.into()))?;
            let events = txn.open_table(EVENTS).map_err(|e| err(e.into()))?;
            let Some(first) = events.first().map_err(|e| err(e.into()))?.map(|(k, _)| k.value()) else {
                return Ok(next);
            };
            // Offsets are contiguous and append times never decrease: binary search.
            let (mut lo, mut hi) = (first, next);
            while lo < hi {
                let mid = lo + (hi - lo) / 2;
                let at = events
                    .get(mid)
                    .map_err(|e| err(e.into()))?
                    .and_then(|v| v.value().get(..8).and_then(u64_from))
                    .unwrap_or(u64::MAX);
                if at < unix_ms {
                    lo = mid + 1;
                } else {
                    hi = mid;
                }
            }
            Ok(lo)
        })
        .await
    }

    /// The lowest offset still stored, if any.
    pub async fn first_offset(&self) -> Result<Option<u64>> {
        self.blocking(|db, path| {
            let err = storage(path);
            let txn = db.begin_read().map_err(|e| err(e.into()))?;
            let events = txn.open_table(EVENTS).map_err(|e| err(e.into()))?;
            Ok(events.first().map_err(|e| err(e.into()))?.map(|(k, _)| k.value()))
        })
        .await
    }
}

impl Journal for EmbeddedBuffer {
    async fn append(&self, batch: AppendBatch) -> Result<Option<u64>> {
        let mut encoded = Vec::with_capacity(batch.records.len());
        let now = now_ms().to_be_bytes();
        for r in &batch.records {
            let mut v = Vec::with_capacity(256);
            v.extend_from_slice(&now);
            v.extend_from_slice(&envelope::encode(r)?);
            encoded.push(v);
        }
        let schemas: Vec<(u64, Vec<u8>)> = batch
            .schemas
            .iter()
            .map(|s| Ok((s.version(), serde_json::to_vec(s.as_ref()).map_err(|e| Error::internal(e.to_string()))?)))
            .collect::<Result<_>>()?;
        let checkpoint = serde_json::to_vec(&batch.checkpoint).map_err(|e| Error::internal(e.to_string()))?;
        let (last, next) = self
            .blocking(move |db, path| {
                let err = storage(path);
                let txn = db.begin_write().map_err(|e| err(e.into()))?;
                let result;
                {
                    let mut events = txn.open_table(EVENTS).map_err(|e| err(e.into()))?;
                    let mut meta = txn.open_table(META).map_err(|e| err(e.into()))?;
                    let mut schema_table = txn.open_table(SCHEMAS).map_err(|e| err(e.into()))?;
                    let mut next = meta_u64(&meta, META_NEXT_OFFSET).map_err(&err)?;
                    let mut stored = meta_u64(&meta, META_STORED_BYTES).map_err(&err)?;
                    let mut last = None;
                    for value in &encoded {
                        events.insert(next, value.as_slice()).map_err(|e| err(e.into()))?;
                        stored += value.len() as u64;
                        last = Some(next);
                        next += 1;
                    }
                    for (version, json) in &schemas {
                        if schema_table.get(*version).map_err(|e| err(e.into()))?.is_none() {
                            schema_table.insert(*version, json.as_slice()).map_err(|e| err(e.into()))?;
                        }
                    }
                    meta.insert(META_NEXT_OFFSET, next.to_be_bytes().as_slice()).map_err(|e| err(e.into()))?;
                    meta.insert(META_STORED_BYTES, stored.to_be_bytes().as_slice()).map_err(|e| err(e.into()))?;
                    meta.insert(META_CHECKPOINT, checkpoint.as_slice()).map_err(|e| err(e.into()))?;
                    result = (last, next);
                }
                txn.commit().map_err(|e| err(e.into()))?;
                Ok(result)
            })
            .await?;
        if let Ok(mut cache) = self.schemas.lock() {
            for s in batch.schemas {
                cache.entry(s.version()).or_insert(s);
            }
        }
        self.next_offset.send_replace(next);
        Ok(last)
    }

    async fn checkpoint(&self) -> Result<SourceCheckpoint> {
        self.blocking(|db, path| {
            let err = storage(path);
            let txn = db.begin_read().map_err(|e| err(e.into()))?;
            let meta = txn.open_table(META).map_err(|e| err(e.into()))?;
            match meta.get(META_CHECKPOINT).map_err(|e| err(e.into()))? {
                None => Ok(SourceCheckpoint::default()),
                Some(v) => serde_json::from_slice(v.value()).map_err(|e| {
                    Error::new(
                        ErrorKind::Buffer,
                        format!("embedded buffer {}: unreadable source checkpoint: {e}", path.display()),
                    )
                }),
            }
        })
        .await
    }

    fn unapplied(&self) -> u64 {
        self.next_offset().saturating_sub(self.acked.load(Ordering::Acquire))
    }
}

impl Log for EmbeddedBuffer {
    async fn read(&self, from: u64, max: usize) -> Result<Vec<(u64, Item)>> {
        if from >= self.next_offset() {
            return Ok(Vec::new());
        }
        self.blocking(move |db, path| {
            let err = storage(path);
            let txn = db.begin_read().map_err(|e| err(e.into()))?;
            let events = txn.open_table(EVENTS).map_err(|e| err(e.into()))?;
            let mut out = Vec::with_capacity(max.min(4096));
            for (expected, entry) in (from..).zip(events.range(from..).map_err(|e| err(e.into()))?.take(max)) {
                let (k, v) = entry.map_err(|e| err(e.into()))?;
                let offset = k.value();
                if offset != expected {
                    return Err(Error::new(
                        ErrorKind::Buffer,
                        format!(
                            "embedded buffer {}: offset {expected} is no longer retained (oldest is {offset})",
                            path.display()
                        ),
                    )
                    .with_hint("raise buffer.embedded.retention_* or resynchronise the target from a fresh snapshot"));
                }
                let bytes = v.value();
                let body = bytes.get(8..).unwrap_or_default();
                let at = format!("{} offset {offset}", path.display());
                out.push((offset, Item::Record(envelope::decode(body, &at)?)));
            }
            Ok(out)
        })
        .await
    }

    async fn wait_for(&self, offset: u64, timeout: Duration) {
        let mut rx = self.next_offset.subscribe();
        let _ = tokio::time::timeout(timeout, rx.wait_for(|next| *next > offset)).await;
    }

    async fn schema(&self, version: u64) -> Result<Option<Arc<TableSchema>>> {
        if let Some(s) = self.schemas.lock().ok().and_then(|c| c.get(&version).cloned()) {
            return Ok(Some(s));
        }
        let found = self
            .blocking(move |db, path| {
                let err = storage(path);
                let txn = db.begin_read().map_err(|e| err(e.into()))?;
                let table = txn.open_table(SCHEMAS).map_err(|e| err(e.into()))?;
                match table.get(version).map_err(|e| err(e.into()))? {
                    None => Ok(None),
                    Some(v) => {
                        let at = format!("embedded buffer {} schema {version:016x}", path.display());
                        Ok(Some(Arc::new(envelope::decode_schema(v.value(), &at)?)))
                    }
                }
            })
            .await?;
        if let (Some(s), Ok(mut cache)) = (&found, self.schemas.lock()) {
            cache.insert(version, Arc::clone(s));
        }
        Ok(found)
    }

    fn acknowledge(&self, offset: u64) {
        self.acked.fetch_max(offset + 1, Ordering::AcqRel);
    }
}

/// A big-endian u64 stored under `key` in the meta table (0 when absent).
fn meta_u64(
    meta: &impl ReadableTable<&'static str, &'static [u8]>,
    key: &str,
) -> std::result::Result<u64, redb::Error> {
    Ok(meta.get(key)?.and_then(|v| u64_from(v.value())).unwrap_or(0))
}

fn u64_from(bytes: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(bytes.get(..8)?.try_into().ok()?))
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Commit, Record};
    use crate::position::Position;

    fn commit(n: u64) -> Record {
        Record::Commit(Commit {
            position: Position::new("binlog.000001", n),
            gtid: None,
            timestamp: 0,
            snapshot: false,
            consistent: None,
        })
    }

    fn retention() -> Retention {
        Retention { max_bytes: u64::MAX, max_age: Duration::from_secs(3600) }
    }

    #[tokio::test]
    async fn append_read_and_checkpoint_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("b.redb");
        {
            let b = EmbeddedBuffer::open(&path, retention()).unwrap();
            let cp = SourceCheckpoint { resume: Some(Position::new("binlog.000001", 3)), ..Default::default() };
            let last = b
                .append(AppendBatch { records: vec![commit(1), commit(2), commit(3)], schemas: vec![], checkpoint: cp })
                .await
                .unwrap();
            assert_eq!(last, Some(2));
            assert_eq!(b.next_offset(), 3);
        }
        let b = EmbeddedBuffer::open(&path, retention()).unwrap();
        assert_eq!(b.next_offset(), 3);
        assert_eq!(b.checkpoint().await.unwrap().resume, Some(Position::new("binlog.000001", 3)));
        let got = b.read(1, 10).await.unwrap();
        assert_eq!(got, vec![(1, Item::Record(commit(2))), (2, Item::Record(commit(3)))]);
        assert!(b.read(3, 10).await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn second_open_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("b.redb");
        let _a = EmbeddedBuffer::open(&path, retention()).unwrap();
        let e = EmbeddedBuffer::open(&path, retention()).err().expect("locked");
        assert!(e.to_string().contains("already open"), "{e}");
    }

    #[tokio::test]
    async fn creation_leaves_no_half_written_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("b.redb");
        // What a creation killed before its header was written leaves behind.
        let staging = dir.path().join(format!("b.redb.creating.{}", std::process::id()));
        std::fs::write(&staging, b"").unwrap();
        drop(EmbeddedBuffer::open(&path, retention()).unwrap());
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, vec![std::ffi::OsString::from("b.redb")]);
        // A file that is not a buffer is reported, never replaced.
        let other = dir.path().join("other.redb");
        std::fs::write(&other, b"not a database").unwrap();
        let e = EmbeddedBuffer::open(&other, retention()).err().expect("refused");
        assert_eq!(e.kind(), ErrorKind::Buffer);
        assert_eq!(std::fs::read(&other).unwrap(), b"not a database");
    }

    #[tokio::test]
    async fn retention_drops_only_acknowledged_records() {
        let dir = tempfile::tempdir().unwrap();
        let b = EmbeddedBuffer::open(
            &dir.path().join("b.redb"),
            Retention { max_bytes: 0, max_age: Duration::from_secs(3600) },
        )
        .unwrap();
        b.append(AppendBatch { records: (0..10).map(commit).collect(), ..Default::default() }).await.unwrap();
        assert_eq!(b.enforce_retention().await.unwrap(), 0, "nothing acknowledged yet");
        b.acknowledge(4);
        assert_eq!(b.enforce_retention().await.unwrap(), 5);
        assert_eq!(b.first_offset().await.unwrap(), Some(5));
        let e = b.read(2, 5).await.unwrap_err();
        assert!(e.to_string().contains("no longer retained"), "{e}");
        assert_eq!(b.read(5, 100).await.unwrap().len(), 5);
    }

    #[tokio::test]
    async fn retention_by_age_drops_old_acknowledged_records_and_keeps_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let b = EmbeddedBuffer::open(
            &dir.path().join("b.redb"),
            Retention { max_bytes: u64::MAX, max_age: Duration::from_millis(50) },
        )
        .unwrap();
        let first_appended = now_ms();
        b.append(AppendBatch { records: (0..6).map(commit).collect(), ..Default::default() }).await.unwrap();
        b.acknowledge(3);
        assert_eq!(b.enforce_retention_at(first_appended).await.unwrap(), 0, "young records stay, acknowledged or not");
        tokio::time::sleep(Duration::from_millis(120)).await;
        let second_appended = now_ms();
        b.append(AppendBatch { records: (6..8).map(commit).collect(), ..Default::default() }).await.unwrap();
        // The clock is passed, not read, so that 6 and 7 stay young however slow
        // the machine: 0..=5 are older than 50 ms at `later`, 6 and 7 are not.
        let later = second_appended + 10;
        // 0..=5 are old, but only 0..=3 are acknowledged (applied to the target).
        assert_eq!(b.enforce_retention_at(later).await.unwrap(), 4);
        b.acknowledge(7);
        // 4 and 5 go now; 6 and 7 are acknowledged but young.
        assert_eq!(b.enforce_retention_at(later).await.unwrap(), 2);
        assert_eq!(b.first_offset().await.unwrap(), Some(6));
        assert_eq!(b.read(6, 100).await.unwrap().len(), 2);
        // Once old, they go too: the public entry point reads the real clock.
        tokio::time::sleep(Duration::from_millis(60)).await;
        assert_eq!(b.enforce_retention().await.unwrap(), 2);
    }

    #[tokio::test]
    async fn offsets_are_found_by_append_time() {
        let dir = tempfile::tempdir().unwrap();
        let b = EmbeddedBuffer::open(&dir.path().join("b.redb"), retention()).unwrap();
        b.append(AppendBatch { records: (0..3).map(commit).collect(), ..Default::default() }).await.unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
        let t = now_ms();
        tokio::time::sleep(Duration::from_millis(5)).await;
        b.append(AppendBatch { records: (3..5).map(commit).collect(), ..Default::default() }).await.unwrap();
        assert_eq!(b.offset_at_time(0).await.unwrap(), 0);
        assert_eq!(b.offset_at_time(t).await.unwrap(), 3);
        assert_eq!(b.offset_at_time(u64::MAX).await.unwrap(), 5);
    }

    #[tokio::test]
    async fn wait_for_wakes_on_append() {
        let dir = tempfile::tempdir().unwrap();
        let b = Arc::new(EmbeddedBuffer::open(&dir.path().join("b.redb"), retention()).unwrap());
        let b2 = Arc::clone(&b);
        let waiter = tokio::spawn(async move {
            let t = std::time::Instant::now();
            b2.wait_for(0, Duration::from_secs(10)).await;
            t.elapsed()
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        b.append(AppendBatch { records: vec![commit(1)], ..Default::default() }).await.unwrap();
        assert!(waiter.await.unwrap() < Duration::from_secs(5));
    }
}
