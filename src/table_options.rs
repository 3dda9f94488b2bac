//! Per-table options: `[[tables]]` rules in the config, matched by glob over
//! `db.table`; the first matching rule wins, tables no rule matches get the
//! defaults.

use globset::{Glob, GlobMatcher};
use serde::Deserialize;

use crate::error::{Error, ErrorKind, Result};
use crate::schema::TableRef;

/// How a source DELETE reaches the target.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum DeleteMode {
    /// Delete the target row.
    #[default]
    Hard,
    /// Keep the row and set `_binferry_deleted_at` to the source commit time; a later
    /// insert of the same key clears it again.
    Soft,
}

/// What to do with a table that has no primary key.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum KeylessMode {
    /// Replicate it: rows are identified by their hash, identical rows are kept as many
    /// times as the source has them (a multiset).
    #[default]
    Hash,
    /// Do not replicate it: the table is stopped with an error naming it (recorded in the
    /// target; `binferry check` warns about it), the others replicate.
    Refuse,
}

/// One `[[tables]]` rule.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TableRule {
    /// Glob over `db.table`, e.g. `shop.audit_*`.
    pub pattern: String,
    /// `hard` (default) or `soft`.
    #[serde(default)]
    pub deletes: DeleteMode,
    /// Columns not replicated (never read into the buffer). Updates that change only these
    /// columns are dropped at the source. Primary-key columns cannot be excluded.
    #[serde(default)]
    pub exclude_columns: Vec<String>,
    /// `hash` (default) or `refuse`, for tables without a primary key.
    #[serde(default)]
    pub without_primary_key: KeylessMode,
    /// BigQuery: the table's `PARTITION BY` expression when it is created, e.g.
    /// `DATE(created_at)` or `RANGE_BUCKET(id, GENERATE_ARRAY(0, 1000000, 1000))`.
    #[serde(default)]
    pub partition_by: Option<String>,
    /// BigQuery: clustering columns (at most 4) when the table is created; default: the
    /// primary-key columns (the MERGE joins on them).
    #[serde(default)]
    pub cluster_by: Vec<String>,
}

/// The options that apply to one table.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TableOptions {
    /// Delete handling.
    pub deletes: DeleteMode,
    /// Columns left out.
    pub exclude_columns: Vec<String>,
    /// Handling of a missing primary key.
    pub without_primary_key: KeylessMode,
    /// BigQuery `PARTITION BY` expression.
    pub partition_by: Option<String>,
    /// BigQuery clustering columns (empty: the primary key).
    pub cluster_by: Vec<String>,
}

/// Compiled `[[tables]]` rules.
#[derive(Clone, Debug, Default)]
pub struct TableRules {
    rules: Vec<(GlobMatcher, TableOptions)>,
}

impl TableRules {
    /// Compile the rules; errors name the offending rule.
    pub fn new(rules: &[TableRule]) -> Result<Self> {
        let mut out = Vec::with_capacity(rules.len());
        for (i, r) in rules.iter().enumerate() {
            let field = format!("tables[{i}].pattern");
            if !r.pattern.contains('.') {
                return Err(Error::new(
                    ErrorKind::Config,
                    format!("{field}: {:?} must have the form `database.table`", r.pattern),
                ));
            }
            let glob = Glob::new(&r.pattern)
                .map_err(|e| Error::new(ErrorKind::Config, format!("{field}: invalid pattern {:?}: {e}", r.pattern)))?;
            if r.cluster_by.len() > 4 {
                return Err(Error::new(
                    ErrorKind::Config,
                    format!(
                        "tables[{i}].cluster_by: BigQuery clusters by at most 4 columns, found {}",
                        r.cluster_by.len()
                    ),
                ));
            }
            out.push((
                glob.compile_matcher(),
                TableOptions {
                    deletes: r.deletes,
                    exclude_columns: r.exclude_columns.clone(),
                    without_primary_key: r.without_primary_key,
                    partition_by: r.partition_by.clone(),
                    cluster_by: r.cluster_by.clone(),
                },
            ));
        }
        Ok(TableRules { rules: out })
    }

    /// The options of `table`.
    pub fn options(&self, table: &TableRef) -> TableOptions {
        let key = table.key();
        self.rules.iter().find(|(m, _)| m.is_match(&key)).map(|(_, o)| o.clone()).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_matching_rule_wins() {
        let rules = TableRules::new(&[
            TableRule {
                pattern: "shop.audit_*".into(),
                deletes: DeleteMode::Soft,
                exclude_columns: vec!["secret".into()],
                without_primary_key: KeylessMode::Refuse,
                partition_by: None,
                cluster_by: vec![],
            },
            TableRule {
                pattern: "shop.*".into(),
                deletes: DeleteMode::Hard,
                exclude_columns: vec![],
                without_primary_key: KeylessMode::Hash,
                partition_by: None,
                cluster_by: vec![],
            },
        ])
        .unwrap();
        let audit = rules.options(&TableRef::new("shop", "audit_log"));
        assert_eq!(audit.deletes, DeleteMode::Soft);
        assert_eq!(audit.exclude_columns, vec!["secret".to_string()]);
        assert_eq!(rules.options(&TableRef::new("shop", "orders")).deletes, DeleteMode::Hard);
        assert_eq!(rules.options(&TableRef::new("crm", "x")), TableOptions::default());
    }
}
