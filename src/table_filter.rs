//! Which source tables are replicated: include and exclude glob patterns over `db.table`.

use globset::{Glob, GlobSet, GlobSetBuilder};

use crate::error::{Error, ErrorKind, Result};
use crate::schema::TableRef;

/// Databases that are never replicated, whatever the patterns say.
const SYSTEM_DATABASES: &[&str] = &["mysql", "information_schema", "performance_schema", "sys"];

/// A compiled table selection.
#[derive(Clone, Debug)]
pub struct TableFilter {
    include: GlobSet,
    exclude: GlobSet,
}

impl TableFilter {
    /// Compile `include` and `exclude` patterns such as `shop.*`, `shop.order_?`, `*.audit_log`.
    pub fn new(include: &[String], exclude: &[String]) -> Result<Self> {
        Ok(TableFilter { include: build("source.include", include)?, exclude: build("source.exclude", exclude)? })
    }

    /// The tables `patterns` match, as given in `field` (a command's `--table`): an error
    /// names that field, not the configuration's `source.include`.
    pub fn only(field: &str, patterns: &[String]) -> Result<Self> {
        Ok(TableFilter { include: build(field, patterns)?, exclude: GlobSet::empty() })
    }

    /// Whether `table` is replicated.
    pub fn matches(&self, table: &TableRef) -> bool {
        if SYSTEM_DATABASES.contains(&table.db.as_str()) {
            return false;
        }
        let key = table.key();
        self.include.is_match(&key) && !self.exclude.is_match(&key)
    }
}

fn build(field: &str, patterns: &[String]) -> Result<GlobSet> {
    let mut b = GlobSetBuilder::new();
    for p in patterns {
        if !p.contains('.') {
            return Err(Error::new(
                ErrorKind::Config,
                format!("{field}: pattern {p:?} must have the form `database.table` (globs allowed, e.g. `shop.*`)"),
            ));
        }
        let glob =
            Glob::new(p).map_err(|e| Error::new(ErrorKind::Config, format!("{field}: invalid pattern {p:?}: {e}")))?;
        b.add(glob);
    }
    b.build().map_err(|e| Error::new(ErrorKind::Config, format!("{field}: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(inc: &[&str], exc: &[&str]) -> TableFilter {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        TableFilter::new(&s(inc), &s(exc)).unwrap()
    }

    #[test]
    fn include_exclude_globs() {
        let filter = f(&["shop.*", "crm.customers"], &["shop.tmp_*"]);
        assert!(filter.matches(&TableRef::new("shop", "orders")));
        assert!(!filter.matches(&TableRef::new("shop", "tmp_x")));
        assert!(filter.matches(&TableRef::new("crm", "customers")));
        assert!(!filter.matches(&TableRef::new("crm", "leads")));
        assert!(!f(&["*.*"], &[]).matches(&TableRef::new("mysql", "user")));
    }

    #[test]
    fn bad_patterns_name_the_field() {
        let e = TableFilter::new(&["shop".into()], &[]).unwrap_err();
        assert!(e.to_string().contains("source.include"), "{e}");
        let e = TableFilter::new(&["a.*".into()], &["x.[".into()]).unwrap_err();
        assert!(e.to_string().contains("source.exclude"), "{e}");
        let e = TableFilter::only("--table", &["shop".into()]).unwrap_err();
        assert!(e.to_string().contains("--table: pattern \"shop\" must have the form"), "{e}");
        assert!(!e.to_string().contains("source.include"), "{e}");
        let only = TableFilter::only("--table", &["shop.o*".into()]).unwrap();
        assert!(only.matches(&TableRef::new("shop", "orders")) && !only.matches(&TableRef::new("shop", "items")));
    }
}
