//! The BigQuery REST client (gcp-bigquery-client), the Storage Read API's gRPC client (its
//! generated `BigQueryReadClient`, for whole-table reads as Arrow), their authentication, and
//! the mapping of BigQuery's answers onto binferry's error kinds: one client for the BigQuery
//! sink and the BigQuery source, which differ only in the [`Side`] their errors name.
//!
//! Rate limits (HTTP 429, `rateLimitExceeded`, concurrent-DML conflicts) and server errors
//! (5xx, timeouts, dropped connections) are transient and retried by the writer's policy.
//! Permission, missing-dataset and invalid-statement answers are definite: they stop with the
//! fix, because retrying cannot change them.

use std::sync::Arc;

use std::time::{Duration, Instant};

use async_trait::async_trait;
use gcp_bigquery_client::Client;
use gcp_bigquery_client::auth::Authenticator;
use gcp_bigquery_client::client_builder::ClientBuilder;
use gcp_bigquery_client::error::BQError;
use gcp_bigquery_client::google::cloud::bigquery::storage::v1::big_query_read_client::BigQueryReadClient;
use gcp_bigquery_client::google::cloud::bigquery::storage::v1::read_session::{self, TableModifiers, TableReadOptions};
use gcp_bigquery_client::google::cloud::bigquery::storage::v1::{
    CreateReadSessionRequest, DataFormat, ReadRowsRequest, ReadRowsResponse, ReadSession, read_rows_response,
};
use gcp_bigquery_client::model::dataset::Dataset;
use gcp_bigquery_client::model::get_query_results_parameters::GetQueryResultsParameters;
use gcp_bigquery_client::model::query_request::QueryRequest;
use gcp_bigquery_client::model::table_data_insert_all_request::TableDataInsertAllRequest;
use gcp_bigquery_client::model::table_data_insert_all_request_rows::TableDataInsertAllRequestRows;
use gcp_bigquery_client::model::table_row::TableRow;
use tonic::codec::Streaming;
use tonic::metadata::MetadataValue;
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};

use crate::error::{Error, ErrorKind, Result};
use crate::telemetry::Stats;

/// How often an unfinished query job is polled.
const POLL_INTERVAL: Duration = Duration::from_millis(250);

/// Rows per page when [`Api::query`] collects a whole (small) result.
const QUERY_PAGE_ROWS: i32 = 10_000;

/// Requests to an emulator carry a placeholder token: it checks none.
#[derive(Clone)]
struct NoAuth;

#[async_trait]
impl Authenticator for NoAuth {
    async fn access_token(&self) -> std::result::Result<String, BQError> {
        Ok("emulator".into())
    }
}

/// Which end of the pipeline BigQuery is: it decides the error kinds (a source that does not
/// answer is `SourceUnavailable`) and the settings the fixes name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Side {
    /// `source.kind = "bigquery"`: binferry reads.
    Source,
    /// `sink.kind = "bigquery"`: binferry writes.
    Target,
}

impl Side {
    /// The config section its settings live in.
    fn settings(self) -> &'static str {
        match self {
            Side::Source => "source.bigquery",
            Side::Target => "sink.bigquery",
        }
    }

    fn unavailable(self) -> ErrorKind {
        match self {
            Side::Source => ErrorKind::SourceUnavailable,
            Side::Target => ErrorKind::TargetUnavailable,
        }
    }

    /// A refusal that retrying cannot change.
    fn rejected(self) -> ErrorKind {
        match self {
            Side::Source => ErrorKind::SourceSetting,
            Side::Target => ErrorKind::TargetRejected,
        }
    }

    /// A refusal for lack of rights or credentials.
    fn denied(self) -> ErrorKind {
        match self {
            Side::Source => ErrorKind::SourcePermission,
            Side::Target => ErrorKind::TargetRejected,
        }
    }
}

/// How the client authenticates.
#[derive(Clone, Debug)]
pub(crate) enum Auth {
    /// An emulator at this REST base URL, without credentials.
    Emulator(String),
    /// A service-account key file.
    KeyFile(std::path::PathBuf),
    /// Application default credentials.
    ApplicationDefault,
}

/// The OAuth scope of every BigQuery request.
const SCOPE: &str = "https://www.googleapis.com/auth/bigquery";
/// BigQuery's REST base URL.
const BASE_URL: &str = "https://bigquery.googleapis.com/bigquery/v2";

/// Tokens for the requests binferry sends itself, outside the client (`tables.get`, whose
/// full answer the client's typed model cuts short: it keeps no NUMERIC(P, S) or STRING(L)
/// parameters and no table constraints).
#[derive(Clone)]
enum Tokens {
    /// An emulator checks none.
    None,
    Oauth(yup_oauth2::authenticator::DefaultAuthenticator),
}

impl Tokens {
    async fn new(auth: &Auth) -> std::result::Result<Tokens, String> {
        use yup_oauth2::authenticator::ApplicationDefaultCredentialsTypes as Adc;
        match auth {
            Auth::Emulator(_) => Ok(Tokens::None),
            Auth::KeyFile(path) => {
                let key = yup_oauth2::read_service_account_key(path).await.map_err(|e| e.to_string())?;
                let a =
                    yup_oauth2::ServiceAccountAuthenticator::builder(key).build().await.map_err(|e| e.to_string())?;
                Ok(Tokens::Oauth(a))
            }
            Auth::ApplicationDefault => {
                let opts = yup_oauth2::ApplicationDefaultCredentialsFlowOpts::default();
                let a = match yup_oauth2::ApplicationDefaultCredentialsAuthenticator::builder(opts).await {
                    Adc::InstanceMetadata(b) => b.build().await,
                    Adc::ServiceAccount(b) => b.build().await,
                }
                .map_err(|e| e.to_string())?;
                Ok(Tokens::Oauth(a))
            }
        }
    }

    async fn bearer(&self) -> std::result::Result<Option<String>, String> {
        match self {
            Tokens::None => Ok(None),
            Tokens::Oauth(a) => {
                let t = a.token(&[SCOPE]).await.map_err(|e| e.to_string())?;
                t.token().map(|t| Some(t.to_string())).ok_or_else(|| "no access token was issued".to_string())
            }
        }
    }
}

/// The result of one query job, read a page at a time: a large result never sits in memory
/// whole. BigQuery keeps the result of a job, so the query runs once however many pages.
pub(crate) struct Pages<'a> {
    api: &'a Api,
    what: String,
    /// Empty when BigQuery answered at once without one (then there is one page).
    job_id: String,
    page_rows: i32,
    first: Option<Vec<TableRow>>,
    /// The next page's token; `None` after the last page.
    token: Option<String>,
    /// Bytes the job scanned (what real BigQuery bills), when it says.
    pub(crate) bytes_processed: Option<u64>,
}

impl Pages<'_> {
    /// The next page of rows, `None` after the last.
    pub(crate) async fn next_page(&mut self) -> Result<Option<Vec<TableRow>>> {
        if let Some(rows) = self.first.take() {
            return Ok(Some(rows));
        }
        let Some(token) = self.token.take() else { return Ok(None) };
        if self.job_id.is_empty() {
            return Err(Error::new(self.api.side.unavailable(), format!("{}: more pages but no job id", self.what)));
        }
        let params = GetQueryResultsParameters {
            location: self.api.location.clone(),
            page_token: Some(token),
            max_results: Some(self.page_rows),
            ..Default::default()
        };
        let r = self
            .api
            .client
            .job()
            .get_query_results(&self.api.project, &self.job_id, params)
            .await
            .map_err(|e| classify(self.api.side, e, &self.what))?;
        check_errors(self.api.side, r.errors.as_deref(), &self.what)?;
        self.token = r.page_token.filter(|t| !t.is_empty());
        Ok(Some(r.rows.unwrap_or_default()))
    }
}

/// Messages of one table read through the Storage Read API (Arrow IPC, encapsulated): the
/// schema, then record batches as the streams of the read session deliver them.
pub(crate) struct TableStream {
    client: BigQueryReadClient<Channel>,
    side: Side,
    what: String,
    bearer: Option<String>,
    /// Streams not read yet, last first.
    streams: Vec<String>,
    current: Option<Streaming<ReadRowsResponse>>,
    /// The IPC schema message.
    pub(crate) schema: Vec<u8>,
    /// What BigQuery estimates the read scans (what it bills).
    pub(crate) bytes_scanned: u64,
    /// The server confirmed reading the rows as they were at the asked moment.
    pub(crate) snapshot: bool,
}

impl TableStream {
    /// The next IPC record batch message, `None` after the last.
    pub(crate) async fn next_batch(&mut self) -> Result<Option<Vec<u8>>> {
        loop {
            if let Some(replies) = &mut self.current {
                match replies.message().await {
                    Ok(Some(reply)) => match reply.rows {
                        Some(read_rows_response::Rows::ArrowRecordBatch(b)) => {
                            return Ok(Some(b.serialized_record_batch));
                        }
                        // A reply of statistics only.
                        None => continue,
                        Some(read_rows_response::Rows::AvroRows(_)) => {
                            return Err(Error::new(
                                self.side.rejected(),
                                format!("{}: Avro rows, Arrow asked", self.what),
                            ));
                        }
                    },
                    Ok(None) => self.current = None,
                    Err(status) => return Err(grpc_error(self.side, &status, &self.what)),
                }
            }
            let Some(stream) = self.streams.pop() else { return Ok(None) };
            let request = ReadRowsRequest { read_stream: stream.clone(), offset: 0 };
            let request = grpc_request(request, self.bearer.as_deref(), &format!("read_stream={stream}"))?;
            let replies =
                self.client.read_rows(request).await.map_err(|status| grpc_error(self.side, &status, &self.what))?;
            self.current = Some(replies.into_inner());
        }
    }
}

/// A gRPC request with the bearer token (none for an emulator) and the routing header
/// BigQuery's Storage API asks for.
fn grpc_request<T>(message: T, bearer: Option<&str>, routing: &str) -> Result<tonic::Request<T>> {
    let mut request = tonic::Request::new(message);
    let header = |v: String| {
        MetadataValue::try_from(v).map_err(|e| Error::internal(format!("a gRPC header that is not ASCII: {e}")))
    };
    if let Some(token) = bearer {
        request.metadata_mut().insert("authorization", header(format!("Bearer {token}"))?);
    }
    request.metadata_mut().insert("x-goog-request-params", header(routing.to_string())?);
    Ok(request)
}

/// The Storage API's messages are large: a 1M-row table can arrive as one ~55 MB batch (the
/// emulator sends a stream's rows at once; BigQuery at most 100 MiB per message).
const STORAGE_MESSAGE_BYTES: usize = 512 << 20;

/// One project's BigQuery API, with binferry's error mapping.
#[derive(Clone)]
pub(crate) struct Api {
    client: Client,
    side: Side,
    http: reqwest::Client,
    base_url: String,
    tokens: Tokens,
    pub(crate) project: String,
    location: Option<String>,
    timeout: Duration,
    /// Where the jobs and MERGE runs are counted.
    pub(crate) stats: Arc<Stats>,
}

impl Api {
    pub(crate) async fn connect(
        side: Side,
        auth: &Auth,
        project: &str,
        location: Option<&str>,
        timeout: Duration,
        stats: Arc<Stats>,
    ) -> Result<Api> {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| Error::new(ErrorKind::Internal, format!("building the HTTP client: {e}")))?;
        let mut builder = ClientBuilder::new();
        builder.with_client(http.clone());
        let base_url = match auth {
            Auth::Emulator(url) => url.trim_end_matches('/').to_string(),
            _ => BASE_URL.to_string(),
        };
        let credentials_hint = || {
            format!(
                "set {}.credentials_file to a service-account key (JSON), or provide application default \
                 credentials (GOOGLE_APPLICATION_CREDENTIALS, `gcloud auth application-default login`)",
                side.settings()
            )
        };
        // Only the source reads table resources itself; the sink keeps the client's own flows.
        let tokens = match side {
            Side::Source => Tokens::new(auth).await.map_err(|e| {
                Error::new(ErrorKind::Config, format!("BigQuery credentials: {e}")).with_hint(credentials_hint())
            })?,
            Side::Target => Tokens::None,
        };
        let client = match auth {
            Auth::Emulator(url) => {
                builder.with_v2_base_url(url.trim_end_matches('/').to_string());
                builder.build_from_authenticator(Arc::new(NoAuth)).await
            }
            Auth::KeyFile(path) => {
                let setting = format!("{}.credentials_file", side.settings());
                crate::config::warn_if_readable_by_others(&setting, path);
                let p = path
                    .to_str()
                    .ok_or_else(|| Error::new(ErrorKind::Config, format!("{setting}: {path:?} is not UTF-8")))?;
                builder.build_from_service_account_key_file(p).await
            }
            Auth::ApplicationDefault => builder.build_from_application_default_credentials().await,
        }
        .map_err(|e| {
            Error::new(ErrorKind::Config, format!("BigQuery credentials: {e}")).with_hint(credentials_hint())
        })?;
        Ok(Api {
            client,
            side,
            http,
            base_url,
            tokens,
            project: project.to_string(),
            location: location.map(str::to_string),
            timeout,
            stats,
        })
    }

    /// Whether `dataset` exists.
    pub(crate) async fn dataset_exists(&self, dataset: &str) -> Result<bool> {
        match self.client.dataset().get(&self.project, dataset).await {
            Ok(_) => Ok(true),
            Err(e) if status(&e) == Some(404) => Ok(false),
            Err(e) => Err(classify(self.side, e, &format!("reading dataset {}.{dataset}", self.project))),
        }
    }

    /// Create `dataset` when it does not exist.
    pub(crate) async fn ensure_dataset(&self, dataset: &str) -> Result<()> {
        match self.client.dataset().get(&self.project, dataset).await {
            Ok(_) => return Ok(()),
            Err(e) if status(&e) == Some(404) => {}
            Err(e) => return Err(classify(self.side, e, &format!("reading dataset {}.{dataset}", self.project))),
        }
        let mut ds = Dataset::new(&self.project, dataset);
        if let Some(l) = &self.location {
            ds = ds.location(l);
        }
        match self.client.dataset().create(ds).await {
            Ok(_) => Ok(()),
            // Created meanwhile by another worker.
            Err(e) if status(&e) == Some(409) => Ok(()),
            Err(e) => Err(classify(self.side, e, &format!("creating dataset {}.{dataset}", self.project))),
        }
    }

    /// Run one query job (a statement or a script) to completion and return all its rows
    /// (for results known to be small: statements, scripts, metadata).
    pub(crate) async fn query(&self, sql: &str) -> Result<Vec<TableRow>> {
        let mut pages = self.query_pages(sql, QUERY_PAGE_ROWS).await?;
        let mut rows = Vec::new();
        while let Some(page) = pages.next_page().await? {
            rows.extend(page);
        }
        Ok(rows)
    }

    /// Run a query; its rows come a page (at most `page_rows` rows) at a time.
    pub(crate) async fn query_pages(&self, sql: &str, page_rows: i32) -> Result<Pages<'_>> {
        let mut req = QueryRequest::new(sql);
        req.use_legacy_sql = false;
        req.location = self.location.clone();
        req.max_results = Some(page_rows);
        req.timeout_ms = Some(self.timeout.as_millis().min(i32::MAX as u128) as i32);
        self.stats.record_bigquery_job();
        let what = format!("query job `{}`", abbreviate(sql));
        tracing::debug!(sql = %abbreviate(sql), "BigQuery query");
        let resp = self.client.job().query(&self.project, req).await.map_err(|e| classify(self.side, e, &what))?;
        check_errors(self.side, resp.errors.as_deref(), &what)?;
        // A job BigQuery answered at once may come without an id; paging or polling needs one.
        let job_id = resp.job_reference.and_then(|r| r.job_id).unwrap_or_default();
        let bytes_processed = resp.total_bytes_processed.and_then(|b| b.parse().ok());
        if self.side == Side::Source {
            self.stats.record_bigquery_source_bytes(bytes_processed.unwrap_or(0));
        }
        let mut pages = Pages { api: self, what, job_id, page_rows, first: None, token: None, bytes_processed };
        if resp.job_complete.unwrap_or(false) {
            pages.first = Some(resp.rows.unwrap_or_default());
            pages.token = resp.page_token.filter(|t| !t.is_empty());
            return Ok(pages);
        }
        // Still running after the request's wait: poll until its first page is ready.
        if pages.job_id.is_empty() {
            return Err(Error::new(self.side.unavailable(), format!("{}: no job id returned", pages.what)));
        }
        let deadline = Instant::now() + self.timeout;
        loop {
            tokio::time::sleep(POLL_INTERVAL).await;
            let params = GetQueryResultsParameters {
                location: self.location.clone(),
                max_results: Some(page_rows),
                ..Default::default()
            };
            let r = self
                .client
                .job()
                .get_query_results(&self.project, &pages.job_id, params)
                .await
                .map_err(|e| classify(self.side, e, &pages.what))?;
            check_errors(self.side, r.errors.as_deref(), &pages.what)?;
            if r.job_complete.unwrap_or(false) {
                pages.first = Some(r.rows.unwrap_or_default());
                pages.token = r.page_token.filter(|t| !t.is_empty());
                return Ok(pages);
            }
            if Instant::now() > deadline {
                return Err(Error::new(
                    self.side.unavailable(),
                    format!("{}: job {} still running after {:?}", pages.what, pages.job_id, self.timeout),
                ));
            }
        }
    }

    /// The full `tables.get` resource of a table, as BigQuery sends it.
    pub(crate) async fn table_resource(&self, dataset: &str, table: &str) -> Result<serde_json::Value> {
        let what = format!("reading table {}.{dataset}.{table}", self.project);
        self.table_get(dataset, table, &what)
            .await?
            .map_err(|refused| by_reason(self.side, refused.code, &refused.reason, &refused.message, &what))
    }

    /// Read `columns` of `dataset.table` whole, as they were at `at` (µs since the epoch),
    /// through the Storage Read API at `endpoint` (`https://bigquerystorage.googleapis.com`,
    /// or an emulator's gRPC address), as Arrow. [`TableStream::snapshot`] says whether the
    /// server confirmed that moment (the emulator reads the latest rows).
    pub(crate) async fn read_table(
        &self,
        endpoint: &str,
        dataset: &str,
        table: &str,
        columns: &[String],
        at: i64,
    ) -> Result<TableStream> {
        let what = format!("Storage Read API session of {}.{dataset}.{table} at {endpoint}", self.project);
        let unavailable =
            |e: tonic::transport::Error| Error::new(self.side.unavailable(), format!("{what}: cannot connect: {e}"));
        let mut channel = Endpoint::from_shared(endpoint.to_string())
            .map_err(|e| Error::new(ErrorKind::Config, format!("{what}: not a URL: {e}")))?
            .connect_timeout(Duration::from_secs(10));
        if endpoint.starts_with("https://") {
            channel = channel.tls_config(ClientTlsConfig::new().with_native_roots()).map_err(unavailable)?;
        }
        let mut client = BigQueryReadClient::new(channel.connect().await.map_err(unavailable)?)
            .max_decoding_message_size(STORAGE_MESSAGE_BYTES);
        let bearer = self.tokens.bearer().await.map_err(|e| {
            Error::new(self.side.denied(), format!("{what}: no access token: {e}")).with_hint(format!(
                "check {}.credentials_file or the application default credentials",
                self.side.settings()
            ))
        })?;
        let path = format!("projects/{}/datasets/{dataset}/tables/{table}", self.project);
        let snapshot_time = prost_types::Timestamp {
            seconds: at.div_euclid(1_000_000),
            nanos: (at.rem_euclid(1_000_000) * 1_000) as i32,
        };
        let session = ReadSession {
            table: path.clone(),
            data_format: DataFormat::Arrow as i32,
            table_modifiers: Some(TableModifiers { snapshot_time: Some(snapshot_time) }),
            read_options: Some(TableReadOptions { selected_fields: columns.to_vec(), ..Default::default() }),
            ..Default::default()
        };
        let request = CreateReadSessionRequest {
            parent: format!("projects/{}", self.project),
            read_session: Some(session),
            // One stream: the rows go into one buffer in order anyway.
            max_stream_count: 1,
            ..Default::default()
        };
        let request = grpc_request(request, bearer.as_deref(), &format!("read_session.table={path}"))?;
        let session = client
            .create_read_session(request)
            .await
            .map_err(|status| grpc_error(self.side, &status, &what))?
            .into_inner();
        let schema = match session.schema {
            Some(read_session::Schema::ArrowSchema(s)) => s.serialized_schema,
            _ => return Err(Error::new(self.side.rejected(), format!("{what}: the session has no Arrow schema"))),
        };
        // BigQuery returns the session with the modifiers it applies; the emulator ignores
        // `snapshot_time` (it reads the latest rows) and returns none.
        let snapshot = session.table_modifiers.and_then(|m| m.snapshot_time) == Some(snapshot_time);
        // Counted by the caller if it reads the session (a round may not: see `snapshot`).
        let bytes_scanned = u64::try_from(session.estimated_total_bytes_scanned).unwrap_or(0);
        Ok(TableStream {
            client,
            side: self.side,
            what,
            bearer,
            streams: session.streams.into_iter().rev().map(|s| s.name).collect(),
            current: None,
            schema,
            bytes_scanned,
            snapshot,
        })
    }

    /// Whether `dataset.table` exists (a dataset that does not exist holds no table).
    pub(crate) async fn table_exists(&self, dataset: &str, table: &str) -> Result<bool> {
        let what = format!("reading table {}.{dataset}.{table}", self.project);
        match self.table_get(dataset, table, &what).await? {
            Ok(_) => Ok(true),
            Err(refused) if refused.code == 404 => Ok(false),
            Err(refused) => Err(by_reason(self.side, refused.code, &refused.reason, &refused.message, &what)),
        }
    }

    /// `tables.get`, the resource as BigQuery sends it. A refusal comes back as such, for the
    /// caller to tell "not found" from the other answers.
    async fn table_get(
        &self,
        dataset: &str,
        table: &str,
        what: &str,
    ) -> Result<std::result::Result<serde_json::Value, Refused>> {
        let mut url = reqwest::Url::parse(&self.base_url)
            .map_err(|e| Error::new(ErrorKind::Config, format!("BigQuery endpoint {}: {e}", self.base_url)))?;
        url.path_segments_mut()
            .map_err(|_| {
                Error::new(ErrorKind::Config, format!("BigQuery endpoint {} is not a base URL", self.base_url))
            })?
            .extend(["projects", &self.project, "datasets", dataset, "tables", table]);
        let mut req = self.http.get(url);
        let token = self.tokens.bearer().await.map_err(|e| {
            Error::new(self.side.denied(), format!("{what}: no access token: {e}")).with_hint(format!(
                "check {}.credentials_file or the application default credentials",
                self.side.settings()
            ))
        })?;
        if let Some(token) = token {
            req = req.bearer_auth(token);
        }
        let unavailable =
            |e: reqwest::Error| Error::new(self.side.unavailable(), format!("{what}: BigQuery did not answer: {e}"));
        let resp = req.send().await.map_err(unavailable)?;
        let status = resp.status();
        let body = resp.bytes().await.map_err(unavailable)?;
        let json: serde_json::Value = serde_json::from_slice(&body).map_err(|e| {
            Error::new(self.side.unavailable(), format!("{what}: HTTP {status} with a body that is not JSON: {e}"))
        })?;
        if !status.is_success() {
            return Ok(Err(Refused {
                code: i64::from(status.as_u16()),
                reason: json["error"]["errors"][0]["reason"].as_str().unwrap_or_default().to_string(),
                message: json["error"]["message"].as_str().unwrap_or_default().to_string(),
            }));
        }
        Ok(Ok(json))
    }

    /// The names of the tables in `dataset`.
    pub(crate) async fn list_tables(&self, dataset: &str) -> Result<Vec<String>> {
        let what = format!("listing the tables of {}.{dataset}", self.project);
        let mut names = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut options = gcp_bigquery_client::table::ListOptions::default().max_results(1000);
            if let Some(t) = token.take() {
                options = options.page_token(t);
            }
            let list = self
                .client
                .table()
                .list(&self.project, dataset, options)
                .await
                .map_err(|e| classify(self.side, e, &what))?;
            names.extend(list.tables.unwrap_or_default().into_iter().map(|t| t.table_reference.table_id));
            match list.next_page_token.filter(|t| !t.is_empty()) {
                Some(t) => token = Some(t),
                None => return Ok(names),
            }
        }
    }

    /// Stream rows into `table` with insertAll; `rows` are (insert id, JSON object).
    pub(crate) async fn insert_all(
        &self,
        dataset: &str,
        table: &str,
        rows: Vec<(String, serde_json::Value)>,
    ) -> Result<()> {
        if rows.is_empty() {
            return Ok(());
        }
        let n = rows.len();
        let mut req = TableDataInsertAllRequest::new();
        req.add_rows(
            rows.into_iter().map(|(id, json)| TableDataInsertAllRequestRows { insert_id: Some(id), json }).collect(),
        )
        .map_err(|e| Error::internal(format!("encoding insertAll rows: {e}")))?;
        let what = format!("insertAll of {n} rows into {dataset}.{table}");
        tracing::debug!(rows = n, %table, "BigQuery insertAll");
        let resp = self
            .client
            .tabledata()
            .insert_all(&self.project, dataset, table, req)
            .await
            .map_err(|e| classify(self.side, e, &what))?;
        if let Some(errors) = resp.insert_errors.filter(|e| !e.is_empty()) {
            // A bad value fails its row and stops the others ("stopped"): name the first real one.
            let first = errors
                .iter()
                .flat_map(|r| r.errors.iter().flatten().map(move |e| (r.index, e)))
                .find(|(_, e)| e.reason.as_deref() != Some("stopped"));
            let detail = match first {
                Some((index, e)) => format!(
                    "{what}: row {} rejected: {} (column {:?}, reason {})",
                    index.unwrap_or(-1),
                    e.message.as_deref().unwrap_or(""),
                    e.location.as_deref().unwrap_or(""),
                    e.reason.as_deref().unwrap_or("?")
                ),
                None => format!("{what}: {} rows rejected", errors.len()),
            };
            return Err(Error::new(ErrorKind::ValueRejected, detail).with_hint(
                "a value does not fit its BigQuery column (docs/types.md gives the mapping): fix the value in the \
                 source, then bring the table back with `binferry resync --table <db.table>`",
            ));
        }
        Ok(())
    }
}

/// A REST call BigQuery answered with an error status.
struct Refused {
    code: i64,
    reason: String,
    message: String,
}

/// The HTTP status of a BigQuery error answer.
fn status(e: &BQError) -> Option<i64> {
    match e {
        BQError::ResponseError { error } => Some(error.error.code),
        _ => None,
    }
}

fn check_errors(
    side: Side,
    errors: Option<&[gcp_bigquery_client::model::error_proto::ErrorProto]>,
    what: &str,
) -> Result<()> {
    let Some(e) = errors.and_then(|e| e.first()) else { return Ok(()) };
    let reason = e.reason.clone().unwrap_or_default();
    let message = e.message.clone().unwrap_or_default();
    Err(by_reason(side, 0, &reason, &message, what))
}

/// Map a client error onto an [`ErrorKind`] with the fix.
pub(crate) fn classify(side: Side, e: BQError, what: &str) -> Error {
    match e {
        BQError::ResponseError { error } => {
            let reason = error.error.errors.first().and_then(|m| m.get("reason")).cloned().unwrap_or_default();
            by_reason(side, error.error.code, &reason, &error.error.message, what)
        }
        BQError::RequestError(e) => Error::new(side.unavailable(), format!("{what}: BigQuery did not answer: {e}")),
        e @ (BQError::AuthError(_) | BQError::YupAuthError(_) | BQError::NoToken) => {
            Error::new(side.denied(), format!("{what}: authentication failed: {e}")).with_hint(format!(
                "check {}.credentials_file or the application default credentials, and that the key is not revoked",
                side.settings()
            ))
        }
        e @ (BQError::InvalidServiceAccountKey(_)
        | BQError::InvalidServiceAccountAuthenticator(_)
        | BQError::InvalidInstalledFlowAuthenticator(_)
        | BQError::InvalidApplicationDefaultCredentialsAuthenticator(_)
        | BQError::InvalidAuthorizedUserAuthenticator(_)) => {
            Error::new(ErrorKind::Config, format!("{what}: the credentials cannot be used: {e}")).with_hint(format!(
                "check that {}.credentials_file (or GOOGLE_APPLICATION_CREDENTIALS) names a readable service \
                 account key in JSON",
                side.settings()
            ))
        }
        // The network or the client's own plumbing: gone once the connection is back.
        e @ (BQError::TonicTransportError(_) | BQError::ConnectionPoolError(_) | BQError::SemaphorePermitError(_)) => {
            Error::new(side.unavailable(), format!("{what}: BigQuery did not answer: {e}"))
        }
        BQError::TonicStatusError(status) => grpc_error(side, &status, what),
        // Anything else is not known to pass by itself (a reply binferry does not understand, a
        // client bug): definite, with the full message, rather than retried forever.
        e => Error::new(side.rejected(), format!("{what}: unexpected BigQuery client error: {e}"))
            .with_hint("this is not a known transient failure; report it with the message above"),
    }
}

/// A gRPC status (the Storage APIs) as binferry's error.
fn grpc_error(side: Side, status: &tonic::Status, what: &str) -> Error {
    by_grpc_status(side, i32::from(status.code()), status.message(), what)
}

/// A gRPC status (the Storage API), by its numeric code: DEADLINE_EXCEEDED 4, NOT_FOUND 5,
/// PERMISSION_DENIED 7, RESOURCE_EXHAUSTED 8, ABORTED 10, INTERNAL 13, UNAVAILABLE 14,
/// UNAUTHENTICATED 16.
fn by_grpc_status(side: Side, code: i32, message: &str, what: &str) -> Error {
    let detail = format!("{what}: {message} (gRPC status {code})");
    match code {
        4 | 8 | 10 | 13 | 14 => Error::new(side.unavailable(), detail),
        _ if is_conflict(message) => Error::new(side.unavailable(), detail),
        7 | 16 => by_reason(side, 403, "accessDenied", message, what),
        5 => by_reason(side, 404, "notFound", message, what),
        _ => Error::new(side.rejected(), detail),
    }
}

fn by_reason(side: Side, code: i64, reason: &str, message: &str, what: &str) -> Error {
    let detail = format!("{what}: {message} (HTTP {code}, {reason})");
    let transient = matches!(code, 408 | 429 | 500 | 502 | 503 | 504)
        || matches!(reason, "rateLimitExceeded" | "backendError" | "internalError" | "jobRateLimitExceeded")
        || is_conflict(message);
    if transient {
        return Error::new(side.unavailable(), detail);
    }
    match (side, code) {
        (Side::Target, 401 | 403) => Error::new(side.denied(), detail).with_hint(
            "grant the service account roles/bigquery.dataEditor on the dataset and roles/bigquery.jobUser on \
             the project",
        ),
        (Side::Source, 401 | 403) => Error::new(side.denied(), detail).with_hint(
            "grant the service account roles/bigquery.dataViewer on the dataset and roles/bigquery.jobUser on \
             the project",
        ),
        (Side::Target, 404) => Error::new(side.rejected(), detail).with_hint(
            "check sink.bigquery.project and dataset; binferry creates the dataset and its tables, so a \
             missing one was deleted while it ran: restart it, then `binferry replay` to refill",
        ),
        (Side::Source, 404) => Error::new(side.rejected(), detail)
            .with_hint("check source.bigquery.project and dataset, and that the table still exists"),
        (Side::Target, _) => Error::new(side.rejected(), detail)
            .with_hint("a table was changed by hand or a value does not fit; see docs/bigquery.md"),
        (Side::Source, _) => Error::new(side.rejected(), detail)
            .with_hint("BigQuery refused binferry's query: see docs/bigquery-source.md for what the source needs"),
    }
}

/// Two jobs changed the same table or catalog at once: BigQuery's "could not serialize access
/// … due to concurrent update" / "aborted due to concurrent update", and the emulator's
/// "Failed to commit DuckLake transaction" and "Conflict on update!" (two CREATE TABLE IF NOT
/// EXISTS of one table at once). The emulator's catalog also answers a concurrent CREATE with
/// `Duplicate key "… table_id: …" violates primary key constraint` or `PRIMARY KEY or UNIQUE
/// constraint violation: duplicate key "…"`: BigQuery itself never
/// enforces a primary key (they are all `NOT ENFORCED`), so that message can only be the catalog
/// race. Running the job again resolves it.
fn is_conflict(message: &str) -> bool {
    message.contains("concurrent update")
        || message.contains("violates primary key constraint")
        || message.contains("PRIMARY KEY or UNIQUE constraint violation")
        || message.contains("Transaction conflict")
        || message.contains("Failed to commit DuckLake transaction")
        || message.contains("Conflict on update")
}

fn abbreviate(sql: &str) -> String {
    let one_line: String = sql.split_whitespace().collect::<Vec<_>>().join(" ");
    match one_line.char_indices().nth(120) {
        Some((i, _)) => format!("{}…", &one_line[..i]),
        None => one_line,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_errors_are_transient_only_when_known_to_pass() {
        let cases: Vec<(BQError, ErrorKind)> = vec![
            (BQError::ConnectionPoolError("exhausted".into()), ErrorKind::TargetUnavailable),
            (BQError::NoToken, ErrorKind::TargetRejected),
            (BQError::InvalidServiceAccountKey(std::io::Error::other("bad json")), ErrorKind::Config),
            (BQError::NoDataAvailable, ErrorKind::TargetRejected),
            (BQError::InvalidColumnName { col_name: "x".into() }, ErrorKind::TargetRejected),
        ];
        for (e, want) in cases {
            let shown = e.to_string();
            let got = classify(Side::Target, e, "test");
            assert_eq!(got.kind(), want, "{shown}");
            assert!(got.to_string().contains(&shown), "the full message is kept: {got}");
        }
        for (code, transient) in [(14, true), (4, true), (10, true), (3, false), (7, false), (5, false)] {
            assert_eq!(by_grpc_status(Side::Target, code, "m", "x").is_transient(), transient, "gRPC {code}");
        }
        assert!(by_grpc_status(Side::Target, 9, "Transaction conflict", "x").is_transient());
    }

    #[test]
    fn rate_limits_and_server_errors_are_transient() {
        assert!(by_reason(Side::Target, 429, "rateLimitExceeded", "slow down", "x").is_transient());
        assert!(by_reason(Side::Target, 503, "backendError", "try again", "x").is_transient());
        assert!(
            by_reason(
                Side::Target,
                400,
                "invalidQuery",
                "Could not serialize access to table due to concurrent update",
                "x"
            )
            .is_transient()
        );
        assert!(
            by_reason(
                Side::Target,
                400,
                "invalidQuery",
                "Failed to commit: Failed to commit DuckLake transaction.",
                "x"
            )
            .is_transient()
        );
        assert!(by_reason(Side::Target, 400, "invalidQuery", "Conflict on update!", "x").is_transient());
        assert!(
            by_reason(
                Side::Target,
                400,
                "invalidQuery",
                "Duplicate key \"project_id: p, dataset_id: d, table_id: t__changes\" violates primary key constraint.",
                "x"
            )
            .is_transient()
        );
        assert!(
            by_reason(
                Side::Target,
                400,
                "invalidQuery",
                "Failed to commit: PRIMARY KEY or UNIQUE constraint violation: duplicate key \"p, d, t\"",
                "x"
            )
            .is_transient()
        );
        assert!(!by_reason(Side::Target, 400, "invalid", "Provided Schema does not match Table", "x").is_transient());
    }

    #[test]
    fn permissions_and_missing_tables_are_definite_with_a_fix() {
        let e = by_reason(Side::Target, 403, "accessDenied", "Access Denied", "insertAll");
        assert_eq!(e.kind(), ErrorKind::TargetRejected);
        assert!(e.hint().unwrap_or("").contains("dataEditor"));
        let e = by_reason(Side::Target, 404, "notFound", "Not found: Dataset p:d", "q");
        assert_eq!(e.kind(), ErrorKind::TargetRejected);
        assert!(!e.is_transient());
    }

    #[test]
    fn a_source_names_its_own_kinds_and_settings() {
        let e = by_reason(Side::Source, 403, "accessDenied", "Access Denied", "q");
        assert_eq!(e.kind(), ErrorKind::SourcePermission);
        assert!(e.hint().unwrap_or("").contains("dataViewer"));
        assert_eq!(by_reason(Side::Source, 503, "backendError", "m", "q").kind(), ErrorKind::SourceUnavailable);
        assert_eq!(by_reason(Side::Source, 404, "notFound", "m", "q").kind(), ErrorKind::SourceSetting);
        let e = classify(Side::Source, BQError::NoToken, "q");
        assert!(e.hint().unwrap_or("").contains("source.bigquery.credentials_file"), "{e}");
    }
}
