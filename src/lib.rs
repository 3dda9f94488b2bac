//! # binferry
//!
//! A streaming CDC replicator: it reads the row binlog of a MySQL or MariaDB
//! server, carries every row change through a durable buffer, and applies the
//! changes to a target as idempotent upserts and deletes, resuming exactly
//! after any crash.
//!
//! ```text
//!  MySQL/MariaDB ──binlog──► source ──Record──► buffer ──► writer ──► sink ──► target
//!    (snapshot reads) ─────►   │             (embedded |     │ batch,     (MySQL | BigQuery)
//!                              │              Kafka)         │
//!                              ▼ source checkpoint           ▼ compact, hash
//!                         (in the buffer, atomic        sink checkpoint (in the target,
//!                          with the records)             same transaction as the rows)
//! ```
//!
//! ## Guarantees
//!
//! 1. **Exactly-once effect.** Every change carries its binlog [`position`];
//!    the sink applies a change to a row only if it is newer than the
//!    position stored with the row, and stores the buffer offset it applied in
//!    the same target transaction as the rows.
//! 2. **Order.** Changes are applied in source commit order, and a target
//!    transaction never holds part of a source transaction (with Kafka's
//!    `table` and `key` layouts: per table, per row).
//! 3. **Nothing lost.** Checkpoints never move backward and never pass a
//!    change that is not durable downstream; purged binlogs and unsupported
//!    tables stop with a definite error.
//! 4. **Bounded memory.** Every stage holds a bounded number of changes.
//!
//! ## Layout
//!
//! - [`config`]: the TOML configuration and its validation.
//! - [`error`], [`retry`]: one error type with transient/definite kinds, one backoff policy.
//! - [`position`]: binlog positions (partially ordered), GTIDs, checkpoints.
//! - [`schema`]: table schemas and exact column types.
//! - [`event`]: change records and the versioned envelope.
//! - [`source`]: preflight, snapshot and binlog streaming.
//! - [`table_options`]: per-table rules (delete mode, excluded columns, tables without a key).
//! - [`buffer`]: the `Journal` (source side) and `Log` (writer side) traits, the embedded
//!   redb log, and Kafka (producer, partition logs, consumer-group sink workers).
//! - [`writer`]: batching, compaction, row hashes.
//! - [`sink`]: the `Sink` trait, the MySQL sink, and the BigQuery sink (changelog + MERGE,
//!   whose checkpoint is a commit marker in BigQuery rather than a transaction).
//! - `failpoint`: named crash points that tests arm with `BINFERRY_FAILPOINT`.
//! - [`pipeline`]: wiring, progress, shutdown.
//! - [`metrics`]: metric names.

pub mod buffer;
pub mod config;
pub mod error;
pub mod event;
pub(crate) mod failpoint;
pub mod metrics;
pub mod pipeline;
pub mod position;
pub mod retry;
pub mod schema;
pub mod sink;
pub mod source;
pub mod table_options;
pub mod writer;
