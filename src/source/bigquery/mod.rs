//! The BigQuery source (warehouse → MySQL): rounds of hashed-row diffs computed in BigQuery.
//!
//! BigQuery has no binlog. Each round reads every selected table at one timestamp `T`
//! (`FOR SYSTEM_TIME AS OF`), so linked tables are seen at one moment, and finds what changed
//! since the previous round's timestamp `P`:
//!
//! 1. **Summary.** Per bucket of keys (the first hex digits of the MD5 of the key), the row
//!    count and the XOR of the row hashes at `T` ([`sql::TableSql::summary`]). Buckets equal
//!    to the previous round's are unchanged; an idle table costs this one query.
//! 2. **Changed rows.** For the changed buckets, BigQuery joins the rows at `T` with the rows
//!    at `P` by key and returns those whose hash differs ([`sql::TableSql::changes`]): new and
//!    changed rows whole, deleted rows by key. The previous round's row hashes are not stored
//!    anywhere: time travel recomputes them, in BigQuery, from the same rows. So binferry's
//!    state is a few thousand numbers per table ([`summary::Summary`]), whatever the table's
//!    size, and BigQuery hashes are only ever compared with BigQuery hashes.
//! 3. A table's first round, or a round whose `P` has left BigQuery's time-travel window,
//!    reads every row ([`sql::TableSql::rows`]).
//!
//! Rows hash as `TO_HEX(MD5(TO_JSON_STRING(STRUCT(c1 AS c1, ...))))`: valid on BigQuery and
//! on the emulator, whose JSON text differs from BigQuery's (so its hashes must never meet
//! real BigQuery's: they do not, both ends of every comparison come from one engine).
//!
//! docs/bigquery-source.md describes the source for users; `table` maps types, `values`
//! decodes cells, `sql` writes the statements, `summary` compares buckets, and `round` runs a
//! table's part of a round.

mod round;
mod sql;
mod summary;
mod table;
mod values;
