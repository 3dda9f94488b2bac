//! Reading ahead of the writer.
//!
//! Without it the writer alternates: read and decode a chunk, merge it, apply a batch to the
//! target, wait for the target, read the next chunk. The target's round trips and the
//! buffer's reads and decoding then never overlap. The prefetcher reads on its own task
//! into a bounded channel, so the next records are ready when a batch has been applied.
//! The bound keeps memory flat: at most [`DEPTH`] chunks wait.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::buffer::{Item, Log};
use crate::error::Error;

/// Chunks read ahead at most.
const DEPTH: usize = 4;

/// What the prefetcher hands over.
pub(super) enum Fetched {
    /// The next entries, in order.
    Records(Vec<(u64, Item)>),
    /// The log had nothing at the next offset when a read that started at this instant
    /// returned: the writer was caught up then.
    CaughtUp(Instant),
    /// Reading failed; the prefetcher has stopped.
    Failed(Error),
}

/// A running read-ahead from one offset. Dropping it stops the reading.
pub(super) struct Prefetch {
    rx: mpsc::Receiver<Fetched>,
    task: JoinHandle<()>,
}

impl Prefetch {
    /// Start reading `log` at `from`, `chunk` entries per read; waits up to `idle` for new
    /// records when caught up.
    pub(super) fn start<L: Log>(log: Arc<L>, from: u64, chunk: usize, idle: Duration) -> Self {
        let (tx, rx) = mpsc::channel(DEPTH);
        let task = tokio::spawn(async move {
            let mut next = from;
            loop {
                let started = Instant::now();
                let fetched = match log.read(next, chunk).await {
                    Ok(v) if v.is_empty() => Fetched::CaughtUp(started),
                    Ok(v) => {
                        next = v.last().map_or(next, |(o, _)| o + 1);
                        Fetched::Records(v)
                    }
                    Err(e) => {
                        let _ = tx.send(Fetched::Failed(e)).await;
                        return;
                    }
                };
                let caught_up = matches!(fetched, Fetched::CaughtUp(_));
                if tx.send(fetched).await.is_err() {
                    return;
                }
                if caught_up {
                    log.wait_for(next, idle).await;
                }
            }
        });
        Prefetch { rx, task }
    }

    /// What is ready now, without waiting.
    pub(super) fn ready(&mut self) -> Option<Fetched> {
        self.rx.try_recv().ok()
    }

    /// Wait for the next hand-over (`None` if the prefetcher is gone).
    pub(super) async fn next(&mut self) -> Option<Fetched> {
        self.rx.recv().await
    }
}

impl Drop for Prefetch {
    fn drop(&mut self) {
        self.task.abort();
    }
}
