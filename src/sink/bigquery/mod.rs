//! BigQuery target (issue #7, in progress): so far the exact type mapping.
//!
//! The write path (changelog appends and a scheduled MERGE with the checkpoint stored in
//! BigQuery) is not built yet; `sink.kind = "bigquery"` is not accepted until it is.

pub mod types;
