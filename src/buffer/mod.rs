//! The durable, ordered log between source and writer.
//!
//! The source appends through [`Journal`]; a writer reads one ordered stream through [`Log`].
//! The embedded buffer is both in one redb file. With Kafka the journal is a producer and each
//! partition is a log of its own, read by whichever sink worker owns it ([`kafka`]).
//!
//! # Contract
//!
//! - [`Journal::append`] makes a batch of records durable **together with** the
//!   source checkpoint that covers them and the schemas they reference, in one
//!   atomic step: after a crash either all of it is there or none of it. This
//!   is what lets the source resume exactly where the buffer ends.
//! - Records get consecutive offsets starting at 0; offsets never change and
//!   are never reused. [`Log::read`] returns them in offset order, from any
//!   offset still retained: that is how the writer resumes and how replay
//!   works.
//! - Schemas are kept forever (they are small), so a record read long after it
//!   was written decodes with the schema it was written with.
//! - Retention drops only records at or below the offset the writer
//!   [acknowledged](Log::acknowledge) as durable in the target.

pub mod embedded;
pub mod kafka;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use crate::error::Result;
use crate::event::Record;
use crate::position::SourceCheckpoint;
use crate::schema::TableSchema;

/// What the source appends in one atomic step.
#[derive(Debug, Default)]
pub struct AppendBatch {
    /// Records in source order.
    pub records: Vec<Record>,
    /// Schemas referenced by the records (already-known versions are ignored).
    pub schemas: Vec<Arc<TableSchema>>,
    /// The source checkpoint once these records are durable.
    pub checkpoint: SourceCheckpoint,
}

impl AppendBatch {
    /// A batch that only moves the checkpoint (progress without selected changes).
    pub fn checkpoint_only(checkpoint: SourceCheckpoint) -> Self {
        AppendBatch { checkpoint, ..Default::default() }
    }
}

/// Where the source appends: the write side of a buffer.
pub trait Journal: Send + Sync + 'static {
    /// Durably append records, schemas and checkpoint atomically; returns the offset of the
    /// last appended record, if the buffer numbers records with one sequence.
    fn append(&self, batch: AppendBatch) -> impl Future<Output = Result<Option<u64>>> + Send;

    /// The stored source checkpoint (default when nothing was appended yet).
    fn checkpoint(&self) -> impl Future<Output = Result<SourceCheckpoint>> + Send;

    /// Records appended but not yet acknowledged by the writer, for backpressure. A buffer
    /// whose retention does not depend on the writer (Kafka) returns 0.
    fn unapplied(&self) -> u64;
}

/// What the writer reads: one totally ordered stream of records with offsets (the embedded
/// log, or one Kafka partition).
pub trait Log: Send + Sync + 'static {
    /// Up to `max` entries starting at offset `from`, in order; offsets may have gaps. Empty when
    /// nothing is available yet.
    fn read(&self, from: u64, max: usize) -> impl Future<Output = Result<Vec<(u64, Item)>>> + Send;

    /// Wait until a record with offset `offset` may exist, or `timeout` passes.
    fn wait_for(&self, offset: u64, timeout: Duration) -> impl Future<Output = ()> + Send;

    /// A schema by version.
    fn schema(&self, version: u64) -> impl Future<Output = Result<Option<Arc<TableSchema>>>> + Send;

    /// Records up to and including `offset` are durable in the target; retention may drop them.
    fn acknowledge(&self, offset: u64);

    /// Whether this log's DDL records are copies of one statement written to several logs (the
    /// partitions of a Kafka topic in the key layout), and which copy this log holds. `None`
    /// for a log that is the only one to carry its DDL (the embedded log, single-partition
    /// topics). See [`DdlCopies`].
    fn ddl_copies(&self) -> impl Future<Output = Result<Option<DdlCopies>>> + Send {
        async { Ok(None) }
    }
}

/// Logs that each carry a copy of every DDL record of their tables, in order with their own
/// changes: the partitions of a Kafka topic in the key layout.
///
/// A rename or drop changes what the rows of *every* copy's log look like to the target. So
/// it may be applied only when each log has applied all its changes from before the
/// statement, and then once: the writer of copy 0 applies it while the others wait at their
/// copies, then they go on (see `writer`). The target holds the barrier
/// ([`crate::sink::TableState::ddl_barrier_mark`]), so the logs may be read by different processes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DdlCopies {
    /// What the copies have in common (the topic): names the barrier with the statement.
    pub group: String,
    /// How many logs carry each DDL record.
    pub copies: u32,
    /// This log's number among them (0..copies): copy 0 applies the statement.
    pub rank: u32,
}

/// One entry of a [`Log`].
#[derive(Debug, PartialEq)]
pub enum Item {
    /// A decoded record.
    Record(Record),
    /// A message that cannot be decoded (only a buffer written by other hands, Kafka, has
    /// them: the embedded log fails instead, since its own records must always decode).
    Poison(Poison),
    /// An undecodable message already copied to the dead-letter topic (counted and logged
    /// there): the writer moves past it.
    DeadLettered,
}

/// An undecodable message, with what is known about it.
#[derive(Debug, PartialEq)]
pub struct Poison {
    /// The table named by the message key, when the key is readable.
    pub table: Option<crate::schema::TableRef>,
    /// What is wrong and where (topic, partition, offset).
    pub reason: String,
}
