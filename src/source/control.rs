//! Requests to the running source from the operations endpoint: `binferry resync`.
//!
//! The binlog stream owns the checkpoint, so it is the one that starts a resync: it records
//! the table's chunked copy in the checkpoint (durable before it answers) and hands it to the
//! copier. A request therefore survives a crash the moment it is answered.

use tokio::sync::{mpsc, oneshot};

use crate::error::{Error, ErrorKind, Result};
use crate::schema::TableRef;
use crate::table_filter::TableFilter;

/// Requests waiting for the stream; more are refused as busy.
const QUEUE: usize = 16;

/// A request to the running source.
pub(super) enum Request {
    /// Copy again, in chunks while streaming, every replicated table `tables` matches.
    Resync { tables: TableFilter, reply: oneshot::Sender<Result<Resynced>> },
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
        let tables = TableFilter::new(patterns, &[])?;
        let (reply, answer) = oneshot::channel();
        self.tx.try_send(Request::Resync { tables, reply }).map_err(|_| {
            Error::new(ErrorKind::SourceUnavailable, "the source is busy or not running; try again in a moment")
        })?;
        answer.await.map_err(|_| {
            Error::new(ErrorKind::SourceUnavailable, "the source restarted before it answered; try again")
        })?
    }
}
