//! `[sink]`: the target, MySQL/MariaDB or BigQuery.

use std::path::PathBuf;

use serde::Deserialize;

use super::{TlsConfig, invalid, is_identifier};
use crate::error::Result;

/// `[sink]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SinkConfig {
    /// Target implementation.
    #[serde(default)]
    pub kind: SinkKind,
    /// `[sink.mysql]`
    pub mysql: Option<MysqlSinkConfig>,
    /// `[sink.bigquery]`
    pub bigquery: Option<BigQuerySinkConfig>,
}

/// Target implementations.
#[derive(Debug, Deserialize, Default, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum SinkKind {
    /// A MySQL or MariaDB serving database.
    #[default]
    Mysql,
    /// Google BigQuery (or its local emulator).
    #[serde(rename = "bigquery")]
    BigQuery,
}

/// `[sink.bigquery]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BigQuerySinkConfig {
    /// Google Cloud project that holds the dataset and runs the query jobs.
    pub project: String,
    /// Dataset of the replicated tables; created (in `location`) when missing.
    pub dataset: String,
    /// Location of the dataset and of the jobs, e.g. `US`, `EU`, `europe-west1`.
    #[serde(default)]
    pub location: Option<String>,
    /// Target table name; `{db}` and `{table}` are replaced by the source names.
    #[serde(default = "super::default_bigquery_table_template")]
    pub table_name: String,
    /// Service-account key file (JSON). Without it and without `endpoint`, application
    /// default credentials are used (`GOOGLE_APPLICATION_CREDENTIALS`, gcloud, metadata server).
    #[serde(default)]
    pub credentials_file: Option<PathBuf>,
    /// REST base URL of an emulator, e.g. `http://127.0.0.1:19050/bigquery/v2`. Requests to
    /// it carry no credentials. Unset for Google's endpoint.
    #[serde(default)]
    pub endpoint: Option<String>,
    /// Seconds between MERGE runs that move the changelog into the tables.
    #[serde(default = "super::default_bigquery_merge_interval")]
    pub merge_interval_secs: u64,
    /// Seconds a request (insertAll, query job) may take.
    #[serde(default = "super::default_bigquery_request_timeout")]
    pub request_timeout_secs: u64,
    /// What a source `DROP TABLE` does to the BigQuery table: `keep` renames it to
    /// `<name>__dropped_<YYYYmmddHHMMSS>_<tag>` (six hex digits that tell two drops within a
    /// second apart); `drop` drops it.
    #[serde(default)]
    pub on_source_drop: DropMode,
    /// Rows per key range that `binferry verify` compares at a time (tables keyed by integer
    /// columns; others are compared whole). Each range is one query job.
    #[serde(default = "super::default_bigquery_verify_chunk_rows")]
    pub verify_chunk_rows: usize,
}

/// `[sink.mysql]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MysqlSinkConfig {
    /// Host name or IP address.
    #[serde(default = "super::default_host")]
    pub host: String,
    /// TCP port.
    #[serde(default = "super::default_port")]
    pub port: u16,
    /// Target user (needs CREATE, ALTER, SELECT, INSERT, UPDATE, DELETE on `database`).
    pub user: String,
    /// Name of the environment variable holding the password.
    #[serde(default)]
    pub password_env: Option<String>,
    /// File holding the password (first line).
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// Target database; created when missing. Holds the tables and `_binferry_state`.
    pub database: String,
    /// Target table name; `{db}` and `{table}` are replaced by the source names.
    #[serde(default = "super::default_table_template")]
    pub table_name: String,
    /// Seconds to wait for a connection.
    #[serde(default = "super::default_connect_timeout")]
    pub connect_timeout_secs: u64,
    /// What a source `DROP TABLE` does to the target table: `keep` renames it to
    /// `<name>__dropped_<YYYYmmddHHMMSS>_<tag>` (the data stays, marked; the tag, six hex
    /// digits, tells two drops within a second apart; a long name is shortened to 64
    /// characters); `drop` drops it.
    #[serde(default)]
    pub on_source_drop: DropMode,
    /// Connections that write the rows of a table copy (snapshot, resync, repair) at once,
    /// each part in its own transaction, besides the data and DDL connections. 1 writes them
    /// on the data connection.
    #[serde(default = "super::default_copy_connections")]
    pub copy_connections: usize,
    /// `[sink.mysql.tls]`: encryption of the connections to the target.
    #[serde(default)]
    pub tls: TlsConfig,
}

/// Target handling of a dropped source table.
#[derive(Debug, Deserialize, Default, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum DropMode {
    /// Keep the target table under a marked name.
    #[default]
    Keep,
    /// Drop the target table too.
    Drop,
}

impl SinkConfig {
    pub(super) fn validate(&self) -> Result<()> {
        if let Some(m) = &self.mysql {
            m.tls.validate("sink.mysql.tls")?;
        }
        match self.kind {
            SinkKind::Mysql => match &self.mysql {
                Some(m) => m.validate(),
                None => Err(invalid("sink.mysql", "missing: sink.kind = \"mysql\" needs a [sink.mysql] section")),
            },
            SinkKind::BigQuery => match &self.bigquery {
                Some(b) => b.validate(),
                None => Err(invalid(
                    "sink.bigquery",
                    "missing: sink.kind = \"bigquery\" needs a [sink.bigquery] section with `project` and `dataset`",
                )),
            },
        }
    }
}

impl MysqlSinkConfig {
    fn validate(&self) -> Result<()> {
        if !is_identifier(&self.database) {
            return Err(invalid(
                "sink.mysql.database",
                format!("{:?} is not a valid database name (letters, digits, `_`, `$`; at most 64)", self.database),
            ));
        }
        if !self.table_name.contains("{table}") {
            return Err(invalid("sink.mysql.table_name", format!("{:?} must contain {{table}}", self.table_name)));
        }
        if self.user.is_empty() {
            return Err(invalid("sink.mysql.user", "must not be empty"));
        }
        if !(1..=64).contains(&self.copy_connections) {
            return Err(invalid("sink.mysql.copy_connections", "must be between 1 and 64"));
        }
        Ok(())
    }
}

impl BigQuerySinkConfig {
    fn validate(&self) -> Result<()> {
        let id = |s: &str, max: usize, extra: &[u8]| {
            !s.is_empty() && s.len() <= max && s.bytes().all(|c| c.is_ascii_alphanumeric() || extra.contains(&c))
        };
        if !id(&self.project, 63, b"-:.") {
            return Err(invalid("sink.bigquery.project", format!("{:?} is not a valid project id", self.project)));
        }
        if !id(&self.dataset, 1024, b"_") {
            return Err(invalid(
                "sink.bigquery.dataset",
                format!("{:?} is not a valid dataset id (letters, digits, `_`)", self.dataset),
            ));
        }
        if !self.table_name.contains("{table}") {
            return Err(invalid("sink.bigquery.table_name", format!("{:?} must contain {{table}}", self.table_name)));
        }
        if self.merge_interval_secs == 0 {
            return Err(invalid("sink.bigquery.merge_interval_secs", "must be at least 1"));
        }
        if self.request_timeout_secs == 0 {
            return Err(invalid("sink.bigquery.request_timeout_secs", "must be at least 1"));
        }
        if self.verify_chunk_rows == 0 {
            return Err(invalid("sink.bigquery.verify_chunk_rows", "must be at least 1"));
        }
        if let Some(e) = &self.endpoint
            && !(e.starts_with("http://") || e.starts_with("https://"))
        {
            return Err(invalid("sink.bigquery.endpoint", format!("{e:?} must be an http:// or https:// URL")));
        }
        if self.endpoint.is_some() && self.credentials_file.is_some() {
            return Err(invalid(
                "sink.bigquery.credentials_file",
                "an emulator endpoint takes no credentials: set one of endpoint and credentials_file",
            ));
        }
        Ok(())
    }
}
