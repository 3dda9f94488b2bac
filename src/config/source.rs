//! `[source]`: the MySQL/MariaDB server binferry reads (or, with `kind = "bigquery"`, the
//! BigQuery project), and TLS settings shared by every MySQL connection.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;

use super::invalid;
use crate::error::{Error, ErrorKind, Result};
use crate::table_filter::TableFilter;

/// `[source]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceConfig {
    /// What binferry reads: `mysql` (a MySQL/MariaDB binlog, the default) or `bigquery`
    /// (tables of a BigQuery project, diffed in rounds; `[source.bigquery]`).
    #[serde(default)]
    pub kind: SourceKind,
    /// Host name or IP address.
    #[serde(default = "super::default_host")]
    pub host: String,
    /// TCP port.
    #[serde(default = "super::default_port")]
    pub port: u16,
    /// Replication user (needs REPLICATION SLAVE, BINLOG MONITOR / REPLICATION CLIENT, SELECT).
    /// Required for `kind = "mysql"`.
    #[serde(default)]
    pub user: String,
    /// Name of the environment variable holding the password.
    #[serde(default)]
    pub password_env: Option<String>,
    /// File holding the password (first line), instead of an environment variable.
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// Replica server id presented to the source; must be unique among its replicas.
    /// Default: derived from the pipeline name.
    #[serde(default)]
    pub server_id: Option<u32>,
    /// Tables to replicate, as `database.table` glob patterns (BigQuery: `dataset.table`,
    /// with the dataset named, not a pattern).
    pub include: Vec<String>,
    /// Tables to leave out, as `database.table` glob patterns.
    #[serde(default)]
    pub exclude: Vec<String>,
    /// Seconds to wait for a connection.
    #[serde(default = "super::default_connect_timeout")]
    pub connect_timeout_secs: u64,
    /// `[source.tls]`: encryption of every connection to the source.
    #[serde(default)]
    pub tls: TlsConfig,
    /// `[source.bigquery]`, for `kind = "bigquery"`.
    #[serde(default)]
    pub bigquery: Option<BigQuerySourceConfig>,
}

/// What binferry reads.
#[derive(Debug, Deserialize, Clone, Copy, Default, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum SourceKind {
    /// The row binlog of a MySQL or MariaDB server.
    #[default]
    Mysql,
    /// Tables of a BigQuery project, diffed by row hash in rounds (docs/bigquery-source.md).
    Bigquery,
}

/// `[source.bigquery]`: the warehouse binferry mirrors into a MySQL target.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BigQuerySourceConfig {
    /// Google Cloud project that holds the datasets and runs the query jobs.
    pub project: String,
    /// Location of the datasets and of the jobs, e.g. `US`, `EU`.
    #[serde(default)]
    pub location: Option<String>,
    /// Service-account key file (JSON). Without it and without `endpoint`, application
    /// default credentials are used (`GOOGLE_APPLICATION_CREDENTIALS`, metadata server).
    #[serde(default)]
    pub credentials_file: Option<PathBuf>,
    /// REST base URL of an emulator, e.g. `http://127.0.0.1:19050/bigquery/v2`. Requests to
    /// it carry no credentials. Unset for Google's endpoint.
    #[serde(default)]
    pub endpoint: Option<String>,
    /// The Storage Read API's gRPC endpoint: whole-table reads (first copy, resync, a table
    /// beyond time travel, `verify`) of tables whose columns are all scalar go through it as
    /// Arrow instead of REST pages, about 27× faster on the emulator (BENCHMARKS.md). Google's
    /// is `https://bigquerystorage.googleapis.com` (not yet tried against real BigQuery);
    /// the emulator's is its `--grpc-port`. Unset: REST pages.
    #[serde(default)]
    pub storage_endpoint: Option<String>,
    /// Seconds from the start of one round to the start of the next (a round that takes
    /// longer is followed at once).
    #[serde(default = "super::default_bigquery_source_interval")]
    pub interval_secs: u64,
    /// Seconds a request (query job, page, table read) may take.
    #[serde(default = "super::default_bigquery_request_timeout")]
    pub request_timeout_secs: u64,
    /// A round that reads tables whole (their first round, new columns) applies their rows in
    /// its one target transaction while they hold at most this many rows together: a reader
    /// of the target never sees them half copied. Larger copies are written apart, faster and
    /// on several target connections, and the target counts as not consistent until the
    /// round's commit. 0: always apart.
    #[serde(default = "super::default_bigquery_atomic_copy_rows")]
    pub max_atomic_copy_rows: u64,
    /// Seconds before the last round's timestamp that a round's diff also looks back to. A
    /// commit's timestamp can precede the moment it becomes visible; a commit that was still
    /// in progress when a round read the table is found by the next round as long as it
    /// became visible within this margin. Only the key buckets where a commit came late are
    /// diffed with the margin (their rows changed in it are sent again and found unchanged by
    /// the target); 0 leaves it out.
    #[serde(default = "super::default_bigquery_settle")]
    pub settle_secs: u64,
    /// Queries a round runs at once for its tables' shapes and summaries. BigQuery runs a
    /// project's interactive queries concurrently (100 at once by default), and each takes a
    /// second or more: one at a time, rounds grow with the number of tables. 1: one at a time.
    #[serde(default = "super::default_bigquery_parallel_queries")]
    pub parallel_queries: usize,
    /// Key columns by `dataset.table`, for tables that declare no `PRIMARY KEY ... NOT
    /// ENFORCED` (or to use other columns than the declared key).
    #[serde(default)]
    pub keys: BTreeMap<String, Vec<String>>,
}

impl BigQuerySourceConfig {
    fn validate(&self) -> Result<()> {
        let valid_project = !self.project.is_empty()
            && self.project.len() <= 63
            && self.project.bytes().all(|c| c.is_ascii_alphanumeric() || b"-:.".contains(&c));
        if !valid_project {
            return Err(invalid("source.bigquery.project", format!("{:?} is not a valid project id", self.project)));
        }
        if self.interval_secs == 0 {
            return Err(invalid("source.bigquery.interval_secs", "must be at least 1"));
        }
        if self.request_timeout_secs == 0 {
            return Err(invalid("source.bigquery.request_timeout_secs", "must be at least 1"));
        }
        if !(1..=100).contains(&self.parallel_queries) {
            return Err(invalid(
                "source.bigquery.parallel_queries",
                format!(
                    "{} is not between 1 and 100 (BigQuery's default limit of concurrent queries)",
                    self.parallel_queries
                ),
            ));
        }
        if let Some(e) = &self.endpoint
            && !(e.starts_with("http://") || e.starts_with("https://"))
        {
            return Err(invalid("source.bigquery.endpoint", format!("{e:?} must be an http:// or https:// URL")));
        }
        if let Some(e) = &self.storage_endpoint
            && !(e.starts_with("http://") || e.starts_with("https://"))
        {
            return Err(invalid(
                "source.bigquery.storage_endpoint",
                format!("{e:?} must be an http:// or https:// URL, e.g. https://bigquerystorage.googleapis.com"),
            ));
        }
        if self.endpoint.is_some() && self.credentials_file.is_some() {
            return Err(invalid(
                "source.bigquery.credentials_file",
                "an emulator endpoint takes no credentials: set one of endpoint and credentials_file",
            ));
        }
        for (table, columns) in &self.keys {
            if table.split_once('.').is_none_or(|(d, t)| d.is_empty() || t.is_empty()) {
                return Err(invalid("source.bigquery.keys", format!("{table:?} must name a table as `dataset.table`")));
            }
            if columns.is_empty() {
                return Err(invalid("source.bigquery.keys", format!("{table:?} lists no key column")));
            }
        }
        Ok(())
    }
}

/// `[source.tls]`, `[sink.mysql.tls]`: how connections to a MySQL/MariaDB server are
/// encrypted, with the semantics of MySQL's `--ssl-mode` (see `connection.rs`).
#[derive(Debug, Deserialize, Clone, Default, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// `disabled`, `preferred` (default), `required`, `verify_ca` or `verify_identity`.
    #[serde(default)]
    pub mode: TlsMode,
    /// PEM file of the CA (or bundle) that signed the server's certificate (`verify_ca`,
    /// `verify_identity`); without it, the public CAs (webpki roots) are trusted.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate, for servers that require one (`REQUIRE X509`).
    #[serde(default)]
    pub cert_file: Option<PathBuf>,
    /// PEM private key of `cert_file`.
    #[serde(default)]
    pub key_file: Option<PathBuf>,
}

/// How a connection is encrypted.
#[derive(Debug, Deserialize, Clone, Copy, Default, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum TlsMode {
    /// Never.
    Disabled,
    /// When the server offers TLS, without checking its certificate; otherwise in plain text,
    /// with a warning (what MySQL's own clients do by default).
    #[default]
    Preferred,
    /// Always, without checking the certificate; a server without TLS is refused.
    Required,
    /// Always; the server's certificate must be signed by `ca_file` (or a public CA).
    VerifyCa,
    /// Always; the certificate must also be issued for the host binferry connects to.
    VerifyIdentity,
}

impl TlsMode {
    /// The mode as written in the config.
    pub fn as_str(self) -> &'static str {
        match self {
            TlsMode::Disabled => "disabled",
            TlsMode::Preferred => "preferred",
            TlsMode::Required => "required",
            TlsMode::VerifyCa => "verify_ca",
            TlsMode::VerifyIdentity => "verify_identity",
        }
    }
}

impl TlsConfig {
    /// A client certificate needs its key and the reverse; a CA file is used to verify.
    pub(super) fn validate(&self, field: &str) -> Result<()> {
        let bad = |f: &str, why: &str| Err(Error::new(ErrorKind::Config, format!("{field}.{f}: {why}")));
        match (&self.cert_file, &self.key_file) {
            (Some(_), None) => return bad("key_file", "missing: cert_file needs the key it was issued for"),
            (None, Some(_)) => return bad("cert_file", "missing: key_file needs its certificate"),
            _ => {}
        }
        if self.ca_file.is_some() && !matches!(self.mode, TlsMode::VerifyCa | TlsMode::VerifyIdentity) {
            return bad(
                "ca_file",
                "is used to verify the server: set mode = \"verify_ca\" or \"verify_identity\" (or remove it)",
            );
        }
        if self.mode == TlsMode::Disabled && self.cert_file.is_some() {
            return bad("cert_file", "a client certificate needs TLS, and mode = \"disabled\"");
        }
        Ok(())
    }
}

impl SourceConfig {
    pub(super) fn validate(&self) -> Result<()> {
        if self.include.is_empty() {
            return Err(invalid(
                "source.include",
                "must list at least one `database.table` pattern, e.g. [\"shop.*\"]",
            ));
        }
        TableFilter::new(&self.include, &self.exclude)?;
        if self.kind == SourceKind::Bigquery {
            let Some(bq) = &self.bigquery else {
                return Err(invalid(
                    "source.bigquery",
                    "missing: source.kind = \"bigquery\" needs a [source.bigquery] section with `project`",
                ));
            };
            for pattern in &self.include {
                let dataset = pattern.split_once('.').map(|(d, _)| d).unwrap_or_default();
                if dataset.is_empty() || dataset.contains(['*', '?', '[']) {
                    return Err(invalid(
                        "source.include",
                        format!(
                            "{pattern:?}: the BigQuery source reads named datasets: write `dataset.table` or `dataset.*`"
                        ),
                    ));
                }
            }
            return bq.validate();
        }
        if self.bigquery.is_some() {
            return Err(invalid("source.bigquery", "is read only with source.kind = \"bigquery\""));
        }
        if self.server_id == Some(0) {
            return Err(invalid("source.server_id", "must not be 0 (the server refuses replicas with id 0)"));
        }
        if self.user.is_empty() {
            return Err(invalid("source.user", "missing: the MySQL/MariaDB user binferry replicates as"));
        }
        self.tls.validate("source.tls")
    }
}
