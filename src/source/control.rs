//! Requests to the running source from the operations endpoint: `binferry resync` and
//! `binferry verify --repair`.
//!
//! The binlog stream owns the checkpoint, so it is the one that starts a resync: it records
//! the table's chunked copy in the checkpoint (durable before it answers) and hands it to the
//! copier. A request therefore survives a crash the moment it is answered.

use tokio::sync::{mpsc, oneshot};

use crate::error::{Error, ErrorKind, Result};
use crate::event::Value;
use crate::schema::TableRef;
use crate::table_filter::TableFilter;

/// Requests waiting for the stream; more are refused as busy.
const QUEUE: usize = 16;

/// A request to the running source.
pub(super) enum Request {
    /// Copy again, in chunks while streaming, every replicated table `tables` matches.
    Resync { tables: TableFilter, reply: oneshot::Sender<Result<Resynced>> },
    /// Read these keys of `table` again at one position and rewrite them through the
    /// position-guarded path: present rows are upserted, absent ones deleted.
    Repair { table: TableRef, keys: Vec<Vec<Value>>, reply: oneshot::Sender<Result<Repaired>> },
}

/// What a repair wrote into the buffer.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Repaired {
    /// Keys the source has: their rows, as they are now.
    pub rewritten: u64,
    /// Keys the source does not have: deletes.
    pub deleted: u64,
    /// Keys the source does not have, left in a soft-delete table (which keeps each deleted
    /// row's last image, and the source has none to give).
    #[serde(default)]
    pub kept: u64,
}

/// What a resync request started.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Resynced {
    /// Tables whose copy starts now.
    pub started: Vec<TableRef>,
    /// Tables already being copied (their copy goes on).
    pub already: Vec<TableRef>,
}

/// The handle the operations endpoint holds.
#[derive(Clone)]
pub struct Control {
    tx: mpsc::Sender<Request>,
}

/// The stream's side: requests arrive here.
pub struct Inbox {
    pub(super) rx: mpsc::Receiver<Request>,
}

/// A connected pair.
pub fn control() -> (Control, Inbox) {
    let (tx, rx) = mpsc::channel(QUEUE);
    (Control { tx }, Inbox { rx })
}

impl Control {
    /// Ask the source to resync the tables `patterns` (`db.table` globs) match.
    pub async fn resync(&self, patterns: &[String]) -> Result<Resynced> {
        // `tables` is the field of `POST /resync` that carries them; the CLI checks its
        // `--table` patterns itself before it sends them.
        let tables = TableFilter::only("tables", patterns)?;
        let (reply, answer) = oneshot::channel();
        self.tx.try_send(Request::Resync { tables, reply }).map_err(|_| {
            Error::new(ErrorKind::SourceUnavailable, "the source is busy or not running; try again in a moment")
        })?;
        answer.await.map_err(|_| {
            Error::new(ErrorKind::SourceUnavailable, "the source restarted before it answered; try again")
        })?
    }

    /// Ask the source to rewrite `keys` of `table` as they are now; answers once the rows
    /// (and deletes) are in the buffer.
    pub async fn repair(&self, table: TableRef, keys: Vec<Vec<Value>>) -> Result<Repaired> {
        let (reply, answer) = oneshot::channel();
        self.tx.try_send(Request::Repair { table, keys, reply }).map_err(|_| {
            Error::new(ErrorKind::SourceUnavailable, "the source is busy or not running; try again in a moment")
        })?;
        answer.await.map_err(|_| {
            Error::new(
                ErrorKind::SourceUnavailable,
                "the source restarted before the repair was in the buffer; run it again",
            )
        })?
    }
}
