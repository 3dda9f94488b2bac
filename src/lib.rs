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
//! ## Layers
//!
//! Modules form layers, and an import only ever points to a lower one
//! (`tests/layers.rs` checks it on every test run, along with the absence of any
//! import cycle between files). From the bottom:
//!
//! 0. **Data and vocabulary**, imported by everything, importing nothing above:
//!    - [`error`], [`retry`]: one error type with transient/definite kinds and the
//!      scope each kind stops (a table or the pipeline), one backoff policy.
//!    - [`position`]: binlog positions (partially ordered), GTIDs, checkpoints.
//!    - [`schema`]: table names, table schemas and exact column types.
//!    - [`event`]: change records, the versioned envelope, the writer's batches
//!      ([`event::batch`]) and row hashes ([`event::hash`]): what the writer hands a sink.
//!    - [`table_filter`], [`table_options`]: which tables replicate and the per-table rules.
//!    - [`check`]: what `binferry check` reports about a server.
//!    - [`telemetry`]: the one counting API (progress line and `metrics` facade), and every
//!      metric name.
//!    - [`shutdown`]: the one stop signal.
//!    - `failpoint`: named crash points that tests arm with `BINFERRY_FAILPOINT`.
//! 1. [`config`]: the TOML configuration and its validation (pure, no adapter).
//! 2. Client pieces shared by a source and a sink: [`connection`] (MySQL TLS,
//!    credentials), `mysql_codec` (MySQL values and character sets → exact values) and
//!    `bigquery_api` (the BigQuery REST client, its retriability and error hints).
//! 3. [`buffer`]: the `Journal` (source side) and `Log` (writer side) traits, the embedded
//!    redb log, Kafka (producer, partition logs, consumer-group membership).
//! 4. The ends, independent of each other: [`source`] (preflight, snapshot, binlog
//!    streaming into a `Journal`) and [`sink`] (the `Sink` data path and the `TableState`
//!    it keeps durably — stopped tables, DDL barriers — the MySQL sink, the BigQuery sink
//!    with its changelog + MERGE protocol), and [`alerts`] (rules over the telemetry, and
//!    delivery to webhooks, Telegram and email).
//! 5. [`writer`]: a `Log` and a `Sink` + `TableState` → target transactions aligned with
//!    source ones; its stop and barrier logic is tested against an in-memory `TableState`.
//! 6. [`pipeline`]: supervision and wiring: `run`, the Kafka worker pool, replay, and the
//!    operations endpoint (`/metrics`, `/healthz`, `/readyz`, `/status`).
//!
//! The `binferry` binary (`main.rs`) is the command line on top.

pub mod alerts;
pub(crate) mod bigquery_api;
pub mod buffer;
pub mod check;
pub mod config;
pub mod connection;
pub mod drift;
pub mod error;
pub mod event;
pub(crate) mod failpoint;
pub(crate) mod mysql_codec;
pub mod pipeline;
pub mod position;
pub mod retry;
pub mod schema;
pub mod shutdown;
pub mod sink;
pub mod source;
pub mod status;
pub mod table_filter;
pub mod table_options;
pub mod telemetry;
pub mod writer;
