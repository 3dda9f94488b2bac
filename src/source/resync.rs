//! Which tables a resync request copies.
//!
//! The tables a request names are read from the source's catalog in a task of their own
//! ([`candidates`]), not in the stream loop: a pattern such as `db.*` can match thousands of
//! tables, each a few `information_schema` queries, and the other tables' changes must keep
//! flowing meanwhile. The stream then decides with what only it knows (tables it stopped,
//! copies under way) in [`plan`], which is pure.

use std::collections::HashSet;

use super::SourceSettings;
use super::catalog::{list_tables, load_schema};
use super::chunks::is_chunkable;
use super::control::Resynced;
use crate::error::{Error, ErrorKind, Result};
use crate::schema::TableRef;
use crate::table_filter::TableFilter;

/// A replicated table a request matches, as the catalog describes it now.
pub(super) struct Candidate {
    table: TableRef,
    /// Whether it can be copied in key chunks; an error when its shape cannot be read.
    chunkable: Result<bool>,
}

/// The replicated tables `tables` matches, each with whether it can be copied in chunks. Its
/// own connection: the stream's is busy with the binlog.
pub(super) async fn candidates(
    settings: &SourceSettings,
    mariadb: bool,
    tables: &TableFilter,
) -> Result<Vec<Candidate>> {
    let mut conn = settings.connect().await?;
    let listed = list_tables(&mut conn, &settings.filter).await?;
    let mut out = Vec::new();
    for table in listed.into_iter().filter(|t| tables.matches(t)) {
        let chunkable = match load_schema(&mut conn, &table, mariadb).await {
            Ok(schema) => settings.shape(schema).map(|(schema, _)| is_chunkable(&schema)),
            // The connection is gone: nothing more can be read.
            Err(e) if e.kind() == ErrorKind::SourceUnavailable => return Err(e),
            Err(e) => Err(e),
        };
        out.push(Candidate { table, chunkable });
    }
    Ok(out)
}

/// What a request starts, given the tables this run stopped and whether a table is being
/// copied already. All or nothing: the first table that cannot be resynced refuses the
/// request, with the fix.
pub(super) fn plan(
    candidates: Vec<Candidate>,
    stopped: &HashSet<TableRef>,
    copying: impl Fn(&TableRef) -> bool,
) -> Result<Resynced> {
    let mut out = Resynced::default();
    for Candidate { table, chunkable } in candidates {
        if stopped.contains(&table) {
            return Err(Error::new(
                ErrorKind::Unsupported,
                format!("{table} was stopped by the source in this run: it cannot read the table"),
            )
            .with_hint(
                "see the table's stop reason (binferry status); fix what it names, restart binferry, then resync",
            ));
        }
        if copying(&table) {
            out.already.push(table);
            continue;
        }
        // Refused here rather than by the copier, which would stop the table.
        match chunkable {
            Ok(true) => out.started.push(table),
            Ok(false) => {
                return Err(Error::new(
                    ErrorKind::Unsupported,
                    format!("{table} has no primary key, or one of a type that cannot be read in key order: resync copies tables in key chunks"),
                )
                .with_hint("add a primary key to the table; or stop binferry, delete the table's target rows, and start it again with a fresh buffer"));
            }
            Err(e) => return Err(e),
        }
    }
    if out.started.is_empty() && out.already.is_empty() {
        return Err(Error::new(ErrorKind::Config, "no replicated table matches the resync's --table patterns")
            .with_hint("name tables as db.table (globs allowed) among source.include"));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(name: &str) -> TableRef {
        TableRef::new("shop", name)
    }

    fn candidate(name: &str, chunkable: Result<bool>) -> Candidate {
        Candidate { table: t(name), chunkable }
    }

    #[test]
    fn a_request_starts_the_tables_not_already_copying() {
        let copying = |table: &TableRef| table.name == "orders";
        let planned = plan(
            vec![candidate("items", Ok(true)), candidate("orders", Ok(true)), candidate("users", Ok(true))],
            &HashSet::new(),
            copying,
        )
        .unwrap();
        assert_eq!(planned, Resynced { started: vec![t("items"), t("users")], already: vec![t("orders")] });
        // Only tables already copying: nothing starts, and that is an answer, not an error.
        let planned = plan(vec![candidate("orders", Ok(true))], &HashSet::new(), copying).unwrap();
        assert_eq!(planned, Resynced { started: vec![], already: vec![t("orders")] });
    }

    #[test]
    fn a_table_that_cannot_be_resynced_refuses_the_whole_request_with_the_fix() {
        let none = |_: &TableRef| false;
        // (candidates, tables stopped in this run, the refusal's kind, what it says, its hint)
        type Case = (Vec<Candidate>, HashSet<TableRef>, ErrorKind, &'static str, &'static str);
        let cases: Vec<Case> = vec![
            (
                vec![candidate("items", Ok(true)), candidate("logs", Ok(false))],
                HashSet::new(),
                ErrorKind::Unsupported,
                "shop.logs has no primary key",
                "add a primary key",
            ),
            (
                vec![candidate("items", Ok(true)), candidate("odd", Ok(true))],
                HashSet::from([t("odd")]),
                ErrorKind::Unsupported,
                "shop.odd was stopped by the source in this run",
                "restart binferry, then resync",
            ),
            // The stop comes first: its fix is the one that helps, even when the shape cannot
            // be read either (often for the same reason).
            (
                vec![candidate("odd", Err(Error::new(ErrorKind::Unsupported, "unknown type")))],
                HashSet::from([t("odd")]),
                ErrorKind::Unsupported,
                "was stopped by the source",
                "restart binferry",
            ),
            (
                vec![candidate("gone", Err(Error::new(ErrorKind::Config, "table shop.gone does not exist")))],
                HashSet::new(),
                ErrorKind::Config,
                "shop.gone does not exist",
                "",
            ),
            (vec![], HashSet::new(), ErrorKind::Config, "no replicated table matches", "source.include"),
        ];
        for (candidates, stopped, kind, says, hint) in cases {
            let e = plan(candidates, &stopped, none).unwrap_err();
            assert_eq!(e.kind(), kind, "{e}");
            assert!(e.to_string().contains(says), "{e}");
            assert!(e.hint().unwrap_or_default().contains(hint), "{e}");
        }
    }
}
