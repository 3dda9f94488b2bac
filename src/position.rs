//! Binlog positions, GTIDs and checkpoints.
//!
//! A [`Position`] names one row change in one server's binlog: the binlog
//! file, the end offset of the event that carries it, and the row's index
//! inside that event. Positions of the same binlog sequence (same file base
//! name) are totally ordered; positions from different bases (another server,
//! a renamed `log_bin`) are not comparable at all, so `Position` is
//! `PartialOrd` and not `Ord`: code that compares positions has to decide what
//! to do when the answer is `None`.

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::error::{Error, ErrorKind, Result};
use crate::event::value::Value;
use crate::schema::TableRef;

/// A row change's place in the source binlog.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Position {
    /// Binlog file name, e.g. `binlog.000042`.
    pub file: String,
    /// End offset of the event in `file` (the server's `log_pos`).
    pub offset: u64,
    /// Index of the row inside a ROWS event; 0 for other events.
    pub row: u32,
}

impl Position {
    /// A position at an event boundary (row index 0).
    pub fn new(file: impl Into<String>, offset: u64) -> Self {
        Position { file: file.into(), offset, row: 0 }
    }

    /// The file's base name and sequence number: `binlog.000042` → (`binlog`, 42).
    pub fn file_parts(&self) -> Option<(&str, u64)> {
        let (base, seq) = self.file.rsplit_once('.')?;
        if seq.is_empty() || !seq.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        Some((base, seq.parse().ok()?))
    }

    /// A 16-byte big-endian key whose byte order equals the position order within one
    /// binlog sequence: sequence number (4 bytes), offset (8), row (4). Stored beside every
    /// target row so that SQL can compare positions with `<`.
    pub fn sort_key(&self) -> Result<[u8; 16]> {
        let (_, seq) = self.file_parts().ok_or_else(|| {
            Error::new(ErrorKind::Unsupported, format!("binlog file name {:?} has no numeric extension", self.file))
        })?;
        let seq = u32::try_from(seq).map_err(|_| {
            Error::new(ErrorKind::Unsupported, format!("binlog sequence number of {} exceeds 2^32", self.file))
        })?;
        let mut key = [0u8; 16];
        key[..4].copy_from_slice(&seq.to_be_bytes());
        key[4..12].copy_from_slice(&self.offset.to_be_bytes());
        key[12..].copy_from_slice(&self.row.to_be_bytes());
        Ok(key)
    }
}

impl Position {
    /// The position of the `row`th record of the BigQuery source's round at timestamp `at`
    /// (µs since the epoch): positions order by the round's timestamp, then by place in the
    /// round. The file base `bigquery-round` never compares with a binlog's.
    pub fn of_round(at: i64, row: u32) -> Position {
        // The "file" is the round's second, not its number: a restart from an older
        // checkpoint (Kafka's checkpoint topic may lag its data) numbers rounds again from
        // there, and a position must still sort after everything applied before it. Round
        // timestamps only grow (BigQuery's clock), so they order rounds whatever their number.
        let at = at.max(0);
        Position { file: format!("{ROUND_FILE_BASE}.{}", at / 1_000_000), offset: at as u64, row }
    }
}

/// The file base of [`Position::of_round`].
pub const ROUND_FILE_BASE: &str = "bigquery-round";

impl PartialOrd for Position {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        let (base_a, seq_a) = self.file_parts()?;
        let (base_b, seq_b) = other.file_parts()?;
        if base_a != base_b {
            return None;
        }
        Some((seq_a, self.offset, self.row).cmp(&(seq_b, other.offset, other.row)))
    }
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.file, self.offset)?;
        if self.row > 0 {
            write!(f, "#{}", self.row)?;
        }
        Ok(())
    }
}

/// The global transaction id of a source transaction.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "flavor", rename_all = "snake_case")]
pub enum Gtid {
    /// MariaDB `domain-server-sequence`.
    Mariadb { domain: u32, server: u32, seq: u64 },
    /// MySQL `uuid:n`.
    Mysql { uuid: String, gno: u64 },
}

impl Gtid {
    /// Decode the body of a MariaDB GTID event (type 0xa2): sequence number (u64 LE),
    /// domain id (u32 LE), flags (u8), then optional commit id / XA data that we do not need.
    /// The server id comes from the event header. Returns the GTID and the flags byte.
    pub fn decode_mariadb(body: &[u8], server: u32) -> Result<(Gtid, u8)> {
        if body.len() < 13 {
            return Err(Error::new(
                ErrorKind::Decode,
                format!("MariaDB GTID event body is {} bytes, expected at least 13", body.len()),
            ));
        }
        let mut seq = [0u8; 8];
        seq.copy_from_slice(&body[..8]);
        let mut domain = [0u8; 4];
        domain.copy_from_slice(&body[8..12]);
        Ok((Gtid::Mariadb { domain: u32::from_le_bytes(domain), server, seq: u64::from_le_bytes(seq) }, body[12]))
    }
}

/// Flag of a MariaDB GTID event: the transaction is a single statement with no
/// terminating XID/COMMIT (DDL, non-transactional engines).
pub const MARIADB_GTID_FL_STANDALONE: u8 = 1;

impl fmt::Display for Gtid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Gtid::Mariadb { domain, server, seq } => write!(f, "{domain}-{server}-{seq}"),
            Gtid::Mysql { uuid, gno } => write!(f, "{uuid}:{gno}"),
        }
    }
}

/// What the source has made durable in the buffer. Stored by the buffer in the
/// same atomic write as the events it covers, so it never passes an event that
/// is not durable and never moves backward.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SourceCheckpoint {
    /// Where streaming resumes: the end of the last source transaction whose
    /// changes are all in the buffer. `None` before the first snapshot began.
    pub resume: Option<Position>,
    /// GTID of that last transaction, when the server has GTIDs.
    pub gtid: Option<Gtid>,
    /// Progress of the initial snapshot.
    pub snapshot: SnapshotProgress,
    /// The BigQuery source's last complete round (`source.kind = "bigquery"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rounds: Option<RoundCheckpoint>,
}

/// Where the BigQuery source is: its last round whose changes are all in the buffer, and what
/// each table looked like then. A round reads what changed since this one's timestamp.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RoundCheckpoint {
    /// The round's number (from 1).
    pub round: u32,
    /// Its timestamp, µs since the epoch: every table was read as of this moment.
    pub at: i64,
    /// Each table's summary at that round, by `dataset.table`.
    pub tables: BTreeMap<String, TableSummary>,
    /// Tables the source stopped (a type MySQL cannot hold, no key), by `dataset.table`,
    /// with the reason: the stop is sent once, not every round.
    #[serde(default)]
    pub stopped: BTreeMap<String, String>,
    /// Tables `binferry resync` asked for, by `dataset.table`: the next round rebuilds and
    /// copies them whole. Recorded before the request is answered.
    #[serde(default)]
    pub resync: std::collections::BTreeSet<String>,
}

/// A warehouse table at one round: the version of its schema and its bucket summary.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableSummary {
    /// [`crate::schema::TableSchema::version`] of the shape it was read with: another shape is read whole.
    pub schema_version: u64,
    /// Hex digits of a bucket's name (16^digits buckets of keys).
    pub digits: u32,
    /// Non-empty buckets by name: (rows, XOR of the first 60 bits of their row hashes).
    pub buckets: BTreeMap<String, (u64, i64)>,
}

/// Which tables the initial snapshot has copied, and at which binlog position.
///
/// A table copied at position `P` must ignore binlog changes at or before `P`:
/// they are already part of the copy. When a crash interrupts the snapshot,
/// finished tables keep their position and the remaining ones are copied at a
/// newer one, while streaming resumes from the oldest; the per-table positions
/// make that consistent.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SnapshotProgress {
    /// All selected tables are copied.
    pub complete: bool,
    /// Copied tables (`db.table`) and the binlog position of their copy.
    pub tables: BTreeMap<String, Position>,
    /// Tables being copied in key chunks while the binlog streams (the initial snapshot of
    /// tables with a primary key, resyncs, and tables created while streaming), by
    /// `db.table`. A table leaves this map with its last chunk.
    #[serde(default)]
    pub chunked: BTreeMap<String, ChunkedCopy>,
}

/// How far the chunked copy of one table has come: what a restart resumes from.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ChunkedCopy {
    /// The table.
    pub table: TableRef,
    /// A position no chunk of the copy is older than (where streaming was when the copy was
    /// registered). When the last chunk is in, target rows older than it are the ones the
    /// source no longer has, and they are removed.
    pub start: Option<Position>,
    /// Primary key of the last row copied, in key order (`None`: no chunk yet).
    pub after: Option<Vec<Value>>,
    /// Chunks copied so far.
    pub chunks: u64,
    /// Rows copied so far.
    pub rows: u64,
    /// A resync asked for by an operator, rather than the initial snapshot.
    #[serde(default)]
    pub resync: bool,
    /// A table created while streaming: copied so that its target table exists from its
    /// creation on, with the shape it was created with, rather than from its first row. The
    /// target stays consistent meanwhile (every row of it also arrives through the binlog),
    /// and a copy that fails just ends (its first row creates the target table).
    #[serde(default)]
    pub fresh: bool,
}

impl ChunkedCopy {
    /// A copy of `table` from its first row, no chunk read yet, none of no older position
    /// than `start` (`None`: where streaming starts).
    pub fn new(table: TableRef, start: Option<Position>) -> Self {
        ChunkedCopy { table, start, after: None, chunks: 0, rows: 0, resync: false, fresh: false }
    }
}

impl SnapshotProgress {
    /// Whether a copy under way keeps the target from being consistent: any but those of
    /// tables created while streaming ([`ChunkedCopy::fresh`]).
    pub fn copying_for_consistency(&self) -> bool {
        self.chunked.values().any(|c| !c.fresh)
    }

    /// The newest table copy whose position is after `resume`, where streaming starts: until
    /// the stream reaches it, tables copied at it already hold changes the stream has yet to
    /// apply to the others. `None` when every copy is at or before `resume` (positions of
    /// another binlog sequence do not count).
    pub fn newest_copy_after(&self, resume: &Position) -> Option<Position> {
        let mut newest: Option<&Position> = None;
        for p in self.tables.values() {
            if matches!(p.partial_cmp(resume), Some(Ordering::Greater))
                && newest.is_none_or(|n| matches!(p.partial_cmp(n), Some(Ordering::Greater)))
            {
                newest = Some(p);
            }
        }
        newest.cloned()
    }

    /// Whether a binlog change of `table` at `pos` is already contained in the table's snapshot.
    pub fn covers(&self, table: &TableRef, pos: &Position) -> bool {
        match self.tables.get(&table.key()) {
            Some(at) => matches!(pos.partial_cmp(at), Some(Ordering::Less | Ordering::Equal)),
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(file: &str, offset: u64, row: u32) -> Position {
        Position { file: file.into(), offset, row }
    }

    #[test]
    fn order_within_one_binlog_sequence() {
        assert!(p("binlog.000001", 900, 0) < p("binlog.000002", 4, 0));
        assert!(p("binlog.000002", 100, 0) < p("binlog.000002", 100, 1));
        assert!(p("binlog.000002", 100, 7) < p("binlog.000002", 101, 0));
        assert!(p("binlog.000010", 4, 0) > p("binlog.000009", 4, 0), "numeric, not lexical");
        assert_eq!(p("b.1", 5, 0).partial_cmp(&p("b.1", 5, 0)), Some(Ordering::Equal));
    }

    #[test]
    fn different_bases_are_incomparable() {
        assert_eq!(p("binlog.000001", 4, 0).partial_cmp(&p("mysql-bin.000001", 4, 0)), None);
        assert_eq!(p("weird", 4, 0).partial_cmp(&p("weird", 5, 0)), None);
    }

    #[test]
    fn sort_key_order_matches_position_order() {
        let ps =
            [p("binlog.000001", 4, 0), p("binlog.000001", 4, 3), p("binlog.000001", 300, 0), p("binlog.000002", 4, 0)];
        for w in ps.windows(2) {
            assert!(w[0] < w[1]);
            assert!(w[0].sort_key().unwrap() < w[1].sort_key().unwrap());
        }
    }

    #[test]
    fn mariadb_gtid_event_decodes() {
        let mut body = Vec::new();
        body.extend_from_slice(&42u64.to_le_bytes());
        body.extend_from_slice(&7u32.to_le_bytes());
        body.push(MARIADB_GTID_FL_STANDALONE);
        let (gtid, flags) = Gtid::decode_mariadb(&body, 3).unwrap();
        assert_eq!(gtid.to_string(), "7-3-42");
        assert_eq!(flags, MARIADB_GTID_FL_STANDALONE);
        assert_eq!(Gtid::decode_mariadb(&body[..5], 3).unwrap_err().kind(), ErrorKind::Decode);
    }

    #[test]
    fn consistency_waits_for_the_newest_copy_after_the_resume_point() {
        let mut s = SnapshotProgress::default();
        let resume = p("binlog.000003", 500, 0);
        assert_eq!(s.newest_copy_after(&resume), None, "no copy");
        s.tables.insert("d.a".into(), resume.clone());
        assert_eq!(s.newest_copy_after(&resume), None, "an uninterrupted snapshot: one position");
        s.tables.insert("d.b".into(), p("binlog.000004", 90, 0));
        s.tables.insert("d.c".into(), p("binlog.000003", 900, 0));
        s.tables.insert("d.x".into(), p("other.000009", 1, 0));
        assert_eq!(s.newest_copy_after(&resume), Some(p("binlog.000004", 90, 0)));
    }

    #[test]
    fn snapshot_covers_changes_up_to_its_position() {
        let t = TableRef::new("shop", "orders");
        let mut s = SnapshotProgress::default();
        s.tables.insert(t.key(), p("binlog.000003", 500, 0));
        assert!(s.covers(&t, &p("binlog.000003", 400, 2)));
        assert!(s.covers(&t, &p("binlog.000003", 500, 0)));
        assert!(!s.covers(&t, &p("binlog.000003", 501, 0)));
        assert!(!s.covers(&TableRef::new("shop", "other"), &p("binlog.000001", 4, 0)));
    }
}
