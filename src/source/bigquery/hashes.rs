//! The BigQuery side of `binferry verify`: each selected table's rows at one moment, hashed
//! exactly as the writer hashes the rows it stores in MySQL (values decoded as a round
//! decodes them, excluded columns left out), so the comparison is with the target's stored
//! hashes and never with hashes BigQuery computed.

use std::sync::Arc;
use std::time::Duration;

use super::round::{Moment, Read, TableRound, dropped};
use super::{BigQuerySourceSettings, bigquery_now, discover, shape};
use crate::bigquery_api::Api;
use crate::drift::TableHashes;
use crate::error::Result;
use crate::schema::{TableRef, TableSchema};
use crate::table_filter::TableFilter;
use crate::telemetry::Stats;

/// Reads selected BigQuery tables whole for `verify`.
pub struct TableReader {
    api: Api,
    settings: BigQuerySourceSettings,
}

impl TableReader {
    /// A reader with the source's settings (credentials, endpoint, keys, rules).
    pub async fn connect(settings: BigQuerySourceSettings) -> Result<Self> {
        let api = settings.api(&Arc::new(Stats::default())).await?;
        Ok(TableReader { api, settings })
    }

    /// The tables the pipeline mirrors, narrowed by `only` (`dataset.table` globs) when given.
    pub async fn tables(&self, only: Option<&TableFilter>) -> Result<Vec<TableRef>> {
        let tables = discover(&self.api, &self.settings).await?;
        Ok(tables.into_iter().filter(|t| only.is_none_or(|f| f.matches(t))).collect())
    }

    /// How long a change made in BigQuery takes at most to enter a round: the interval
    /// between rounds, and a round's own time.
    pub fn round_period(&self) -> Duration {
        self.settings.interval + Duration::from_secs(2)
    }

    /// The shape MySQL has for `table` and its rows' hashes as BigQuery has them now; `None`
    /// when the table no longer exists (dropped since it was listed). A table the source
    /// would stop (no key, a type MySQL cannot hold) is an error of the table's scope.
    pub async fn table_hashes(&self, table: &TableRef) -> Result<Option<(TableSchema, TableHashes)>> {
        match self.read(table).await {
            Ok(read) => Ok(Some(read)),
            Err(e) if dropped(&self.api, table, &e).await? => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn read(&self, table: &TableRef) -> Result<(TableSchema, TableHashes)> {
        let shaped = shape(&self.api, &self.settings, table).await?;
        let now = bigquery_now(&self.api).await?;
        let round = TableRound::new(&self.api, &shaped.bq, shaped.schema.version(), now)
            .with_storage(self.settings.storage.as_deref(), Moment::AtLeast);
        let mut out = TableHashes::default();
        if let Some(mut pages) = round.read(&Read::Everything, 1).await? {
            while let Some(page) = pages.next_page().await? {
                for row in page {
                    out.add_row(&shaped.schema, &row.values);
                }
            }
        }
        Ok((TableSchema::clone(&shaped.schema), out))
    }
}

#[cfg(test)]
mod emulator_tests {
    use super::*;
    use crate::config::Config;

    /// A table that is not there (dropped after `verify` listed it) reads as `None`, not as
    /// an error that fails the whole verify; a table that is there reads its rows.
    #[tokio::test]
    async fn a_table_gone_since_the_listing_reads_as_none() {
        let port: u16 = std::env::var("BINFERRY_BQ_PORT").ok().and_then(|p| p.parse().ok()).unwrap_or(19050);
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
        let ds = format!("verify_gone_{}_{nanos}", std::process::id());
        let config = Config::from_toml(&format!(
            "[source]\nkind = \"bigquery\"\ninclude = [\"{ds}.*\"]\n[source.bigquery]\nproject = \"binferry-test\"\n\
             endpoint = \"http://127.0.0.1:{port}/bigquery/v2\"\n[sink.mysql]\nuser = \"root\"\ndatabase = \"unused\"\n"
        ))
        .unwrap();
        let reader = TableReader::connect(BigQuerySourceSettings::from_config(&config).unwrap())
            .await
            .expect("the BigQuery emulator answers (scripts/bigquery.sh start)");
        reader.api.query(&format!("CREATE SCHEMA `{ds}`")).await.unwrap();
        reader
            .api
            .query(&format!(
                "CREATE TABLE `{ds}`.t (id INT64, v STRING, PRIMARY KEY (id) NOT ENFORCED); INSERT INTO `{ds}`.t VALUES (1, 'a')"
            ))
            .await
            .unwrap();
        let (_, hashes) = reader.table_hashes(&TableRef::new(&ds, "t")).await.unwrap().expect("the table is there");
        assert_eq!(hashes.rows(), 1);
        assert!(reader.table_hashes(&TableRef::new(&ds, "gone")).await.unwrap().is_none());
        reader.api.query(&format!("DROP SCHEMA `{ds}` CASCADE")).await.unwrap();
    }
}
