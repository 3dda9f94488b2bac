//! The durable, ordered log between source and writer.
//!
//! # Contract
//!
//! - [`Buffer::append`] makes a batch of records durable **together with** the
//!   source checkpoint that covers them and the schemas they reference, in one
//!   atomic step: after a crash either all of it is there or none of it. This
//!   is what lets the source resume exactly where the buffer ends.
//! - Records get consecutive offsets starting at 0; offsets never change and
//!   are never reused. [`Buffer::read`] returns them in offset order, from any
//!   offset still retained: that is how the writer resumes and how replay
//!   works.
//! - Schemas are kept forever (they are small), so a record read long after it
//!   was written decodes with the schema it was written with.
//! - Retention drops only records at or below the offset the writer
//!   [acknowledged](Buffer::acknowledge) as durable in the target.

pub mod embedded;

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

/// A durable, ordered log of records with offsets. See the module docs for the contract.
pub trait Buffer: Send + Sync + 'static {
    /// Durably append records, schemas and checkpoint atomically; returns the offset of the
    /// last appended record, if any.
    fn append(&self, batch: AppendBatch) -> impl Future<Output = Result<Option<u64>>> + Send;

    /// Up to `max` records starting at offset `from`, in order. Empty when `from` is past the end.
    fn read(&self, from: u64, max: usize) -> impl Future<Output = Result<Vec<(u64, Record)>>> + Send;

    /// Wait until a record with offset `offset` exists, or `timeout` passes.
    fn wait_for(&self, offset: u64, timeout: Duration) -> impl Future<Output = ()> + Send;

    /// The offset the next append will get (number of records ever appended).
    fn next_offset(&self) -> u64;

    /// The stored source checkpoint (default when nothing was appended yet).
    fn checkpoint(&self) -> impl Future<Output = Result<SourceCheckpoint>> + Send;

    /// A schema by version.
    fn schema(&self, version: u64) -> impl Future<Output = Result<Option<Arc<TableSchema>>>> + Send;

    /// Records up to and including `offset` are durable in the target; retention may drop them.
    fn acknowledge(&self, offset: u64);

    /// Records appended but not yet acknowledged by the writer.
    fn unapplied(&self) -> u64;
}
