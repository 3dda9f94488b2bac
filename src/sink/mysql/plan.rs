//! The MySQL sink's decisions, apart from the statements that carry them out: how a target
//! table must change to hold a schema version ([`plan_alters`]), and what to do with each
//! key of a batch given what the target holds for it ([`decide`]). Both are pure, so every
//! case is a line of a table-driven test.

use crate::error::{Error, ErrorKind, Result};
use crate::event::batch::RowOp;
use crate::schema::{ColumnSchema, ColumnType, TableSchema};

/// A source column's type in this target's DDL: as the source declares it, except that a
/// MySQL target, which has no UUID or INET types, holds their text.
pub(super) fn column_ddl(c: &ColumnSchema, mariadb: bool) -> String {
    let ascii = "CHARACTER SET ascii COLLATE ascii_general_ci";
    match &c.ty {
        ColumnType::Uuid if !mariadb => format!("char(36) {ascii}"),
        ColumnType::Inet4 if !mariadb => format!("varchar(15) {ascii}"),
        ColumnType::Inet6 if !mariadb => format!("varchar(45) {ascii}"),
        _ => c.mysql_ddl(),
    }
}

/// A column the target table has, as `information_schema` describes it.
#[derive(Clone, Debug)]
pub(super) struct TargetColumn {
    pub name: String,
    /// `None` when binferry does not understand the column's type (it is then left alone).
    pub ty: Option<ColumnType>,
}

/// One change of the target table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Alter {
    /// `MODIFY COLUMN column ddl`: a type that holds every value of the old one.
    Widen { column: String, from: String, ddl: String },
    /// `ADD COLUMN column ddl`: a source column, or one of binferry's own, that is missing.
    Add { column: String, ddl: String },
}

/// What a target table needs for a schema version.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(super) struct AlterPlan {
    /// In order.
    pub alters: Vec<Alter>,
    /// Target columns the source no longer has: kept (NULL for new rows), worth a warning.
    pub dropped: Vec<String>,
}

/// How the target table `have` must change to hold rows of `schema` (plus binferry's
/// `system` columns). `replay` is set when a replay applies old schema versions: a version
/// that lacks columns the target has is older than the target, and the table is left as it
/// is (`Ok(None)`); a column the target widened since stays wide.
///
/// A type change that could lose or change values is an `Unsupported` error: it stops the
/// table, with the fix.
pub(super) fn plan_alters(
    have: &[TargetColumn],
    schema: &TableSchema,
    system: &[(&str, &str)],
    mariadb: bool,
    replay: bool,
) -> Result<Option<AlterPlan>> {
    let ours = |name: &str| name.starts_with("_binferry_");
    if replay && have.iter().any(|h| !ours(&h.name) && !schema.columns.iter().any(|c| c.name == h.name)) {
        return Ok(None);
    }
    let mut plan = AlterPlan::default();
    for h in have.iter().filter(|h| !ours(&h.name)) {
        let Some(want) = schema.columns.iter().find(|c| c.name == h.name) else {
            plan.dropped.push(h.name.clone());
            continue;
        };
        let Some(have_ty) = &h.ty else { continue };
        let want_ddl = column_ddl(want, mariadb);
        if *have_ty == want.ty || have_ty.mysql_ddl() == want.ty.mysql_ddl() || have_ty.mysql_ddl() == want_ddl {
            continue;
        }
        // MariaDB's JSON is a LONGTEXT with a `json_valid` check: information_schema shows
        // the column binferry created as `json` as that.
        if mariadb && want.ty == ColumnType::Json && matches!(have_ty, ColumnType::Text { length_bytes: 4, .. }) {
            continue;
        }
        if replay && want.ty.widens_to(have_ty) {
            // Rows of an older, narrower version fit the column widened since.
            continue;
        }
        if !have_ty.widens_to(&want.ty) {
            return Err(Error::new(
                ErrorKind::Unsupported,
                format!(
                    "table {}: column `{}` changed from {} to {}, which can lose or change values",
                    schema.table,
                    h.name,
                    have_ty.mysql_ddl(),
                    want.ty.mysql_ddl()
                ),
            )
            .with_hint(format!(
                "exclude {} (source.exclude) and restart, or `binferry resync --table {}`, which rebuilds the target \
                 table with the new shape while its stale copy stays readable",
                schema.table.key(),
                schema.table.key()
            )));
        }
        let key = schema.primary_key.iter().any(|&k| schema.columns[k].name == h.name);
        let null = if key { "NOT NULL" } else { "NULL" };
        plan.alters.push(Alter::Widen {
            column: h.name.clone(),
            from: have_ty.mysql_ddl(),
            ddl: format!("{want_ddl} {null}"),
        });
    }
    let wanted = schema
        .columns
        .iter()
        .map(|c| {
            let default = c.default.as_ref().map(|d| format!(" DEFAULT {d}")).unwrap_or_default();
            (c.name.clone(), format!("{} NULL{default}", column_ddl(c, mariadb)))
        })
        .chain(system.iter().map(|(c, ty)| (c.to_string(), ty.to_string())));
    for (column, ddl) in wanted {
        if !have.iter().any(|h| h.name == column) {
            // Existing rows take the column's default, as they did in the source.
            plan.alters.push(Alter::Add { column, ddl });
        }
    }
    Ok(Some(plan))
}

/// What the target holds for a key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Stored {
    /// Sort key of the source position that wrote the row.
    pub pos: [u8; 16],
    /// Row hash of its values.
    pub hash: [u8; 16],
    /// Soft-deleted.
    pub deleted: bool,
}

/// What the target knows about a key besides its row: the positions of the newest delete
/// of the key (a tombstone, hard deletes only) and of the table (a TRUNCATE or re-copy).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct Tombstones {
    pub key: Option<[u8; 16]>,
    pub table: Option<[u8; 16]>,
}

/// What to do with one key of a batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum KeyAction {
    /// The target already has this change or a newer one: skip.
    Stale,
    /// Write the row; `changed` is false when the target row has the same values (it is
    /// rewritten for its position, and counted unchanged).
    Upsert { changed: bool },
    /// Mark the row deleted (soft deletes); `changed` as above.
    SoftDelete { changed: bool },
    /// Remove the row, if `present`, and leave a tombstone either way so that an older
    /// change that arrives later cannot bring it back.
    Delete { present: bool },
}

/// The per-key decision of the MySQL sink. A change is stale when the stored row, the key's
/// tombstone or the table's tombstone is at least as new (a replay, `overwrite_equal`,
/// rewrites rows at the same position to repair them).
pub(super) fn decide(
    op: &RowOp,
    pos: [u8; 16],
    stored: Option<&Stored>,
    tombs: Tombstones,
    overwrite_equal: bool,
    soft: bool,
) -> KeyAction {
    let stale = stored.is_some_and(|s| s.pos > pos || (s.pos == pos && !overwrite_equal))
        || tombs.key.is_some_and(|t| t >= pos)
        || tombs.table.is_some_and(|t| t >= pos);
    if stale {
        return KeyAction::Stale;
    }
    match op {
        RowOp::Upsert { hash, .. } => {
            KeyAction::Upsert { changed: !stored.is_some_and(|s| s.hash == *hash && !s.deleted) }
        }
        RowOp::Delete { .. } if soft => KeyAction::SoftDelete { changed: !stored.is_some_and(|s| s.deleted) },
        RowOp::Delete { .. } => KeyAction::Delete { present: stored.is_some() },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Value;
    use crate::position::Position;
    use crate::schema::TableRef;

    fn int(bytes: u8) -> ColumnType {
        ColumnType::Int { bytes, unsigned: false }
    }

    fn col(name: &str, ty: ColumnType) -> ColumnSchema {
        ColumnSchema { name: name.into(), ty, nullable: true, default: None, source_type: None }
    }

    fn schema(cols: Vec<ColumnSchema>) -> TableSchema {
        TableSchema { table: TableRef::new("d", "t"), columns: cols, primary_key: vec![0] }
    }

    fn have(cols: &[(&str, Option<ColumnType>)]) -> Vec<TargetColumn> {
        cols.iter().map(|(n, t)| TargetColumn { name: n.to_string(), ty: t.clone() }).collect()
    }

    const SYSTEM: &[(&str, &str)] = &[("_binferry_pos", "binary(16) NOT NULL")];

    #[test]
    fn a_json_column_on_mariadb_is_its_longtext() {
        let want = schema(vec![col("id", int(4)), col("j", ColumnType::Json)]);
        let bin = crate::schema::Charset { name: "utf8mb4".into(), collation: "utf8mb4_bin".into() };
        let have = have(&[("id", Some(int(4))), ("j", Some(ColumnType::Text { length_bytes: 4, charset: bin }))]);
        let plan = plan_alters(&have, &want, &[], true, false).unwrap().unwrap();
        assert_eq!((plan.alters, plan.dropped), (vec![], vec![]));
        // On MySQL a LONGTEXT is not a JSON column.
        assert!(plan_alters(&have, &want, &[], false, false).is_err());
    }

    #[test]
    fn alters_follow_the_source_and_never_lose_values() {
        let want = schema(vec![col("id", int(4)), col("v", int(8))]);
        let uuid = schema(vec![col("id", int(4)), col("u", ColumnType::Uuid)]);
        let narrower = schema(vec![col("id", int(4)), col("v", int(4))]);
        // (target columns, schema, replay, expected: Ok(alters, dropped) | Err(part of message))
        type Expect = std::result::Result<Option<(Vec<Alter>, Vec<&'static str>)>, &'static str>;
        let add = |c: &str, d: &str| Alter::Add { column: c.into(), ddl: d.into() };
        let cases: Vec<(&str, Vec<TargetColumn>, &TableSchema, bool, Expect)> = vec![
            (
                "same shape: nothing",
                have(&[("id", Some(int(4))), ("v", Some(int(8))), ("_binferry_pos", None)]),
                &want,
                false,
                Ok(Some((vec![], vec![]))),
            ),
            (
                "a new source column and a missing system column are added",
                have(&[("id", Some(int(4)))]),
                &want,
                false,
                Ok(Some((vec![add("v", "bigint NULL"), add("_binferry_pos", "binary(16) NOT NULL")], vec![]))),
            ),
            (
                "a wider type is a MODIFY, NOT NULL for a key column",
                have(&[("id", Some(int(2))), ("v", Some(int(8))), ("_binferry_pos", None)]),
                &want,
                false,
                Ok(Some((
                    vec![Alter::Widen { column: "id".into(), from: "smallint".into(), ddl: "int NOT NULL".into() }],
                    vec![],
                ))),
            ),
            (
                "a narrower type stops the table",
                have(&[("id", Some(int(4))), ("v", Some(int(8))), ("_binferry_pos", None)]),
                &narrower,
                false,
                Err("column `v` changed from bigint to int, which can lose or change values"),
            ),
            (
                "a column gone from the source is kept and reported",
                have(&[("id", Some(int(4))), ("v", Some(int(8))), ("old", Some(int(4))), ("_binferry_pos", None)]),
                &want,
                false,
                Ok(Some((vec![], vec!["old"]))),
            ),
            (
                "a type binferry does not understand is left alone",
                have(&[("id", Some(int(4))), ("v", None), ("_binferry_pos", None)]),
                &want,
                false,
                Ok(Some((vec![], vec![]))),
            ),
            (
                "a replay of an older version leaves a newer table alone",
                have(&[("id", Some(int(4))), ("v", Some(int(8))), ("newer", Some(int(4))), ("_binferry_pos", None)]),
                &want,
                true,
                Ok(None),
            ),
            (
                "a replay of a narrower version keeps the widened column",
                have(&[("id", Some(int(4))), ("v", Some(int(8))), ("_binferry_pos", None)]),
                &narrower,
                true,
                Ok(Some((vec![], vec![]))),
            ),
            (
                "UUID held as text on MySQL is not a change",
                have(&[
                    ("id", Some(int(4))),
                    ("u", Some(ColumnType::Char { chars: 36, charset: ascii() })),
                    ("_binferry_pos", None),
                ]),
                &uuid,
                false,
                Ok(Some((vec![], vec![]))),
            ),
        ];
        for (what, have, schema, replay, expect) in cases {
            let got = plan_alters(&have, schema, SYSTEM, false, replay);
            match (got, expect) {
                (Ok(got), Ok(want)) => {
                    let got = got.map(|p| (p.alters, p.dropped));
                    let want = want.map(|(a, d)| (a, d.into_iter().map(String::from).collect::<Vec<_>>()));
                    assert_eq!(got, want, "{what}");
                }
                (Err(e), Err(part)) => {
                    assert!(e.to_string().contains(part), "{what}: {e}");
                    assert_eq!(e.kind(), ErrorKind::Unsupported, "{what}");
                }
                (got, want) => panic!("{what}: got {:?}, want {want:?}", got.map(|p| p.map(|p| p.alters))),
            }
        }
    }

    fn ascii() -> crate::schema::Charset {
        crate::schema::Charset { name: "ascii".into(), collation: "ascii_general_ci".into() }
    }

    #[test]
    fn each_key_is_written_skipped_or_deleted_by_position() {
        let at = |n: u8| {
            let mut p = [0u8; 16];
            p[15] = n;
            p
        };
        let position = Position::new("binlog.000001", 4);
        let upsert =
            RowOp::Upsert { row: vec![Value::Int(1)], position: position.clone(), hash: [7; 16], copied: false };
        let delete = RowOp::Delete { key: vec![Value::Int(1)], before: vec![Value::Int(1)], position, timestamp: 0 };
        let row = |pos: u8, hash: u8, deleted: bool| Some(Stored { pos: at(pos), hash: [hash; 16], deleted });
        let none = Tombstones::default();
        let key_tomb = |n: u8| Tombstones { key: Some(at(n)), table: None };
        let table_tomb = |n: u8| Tombstones { key: None, table: Some(at(n)) };
        use KeyAction::*;
        // (what, change, its position, stored row, tombstones, overwrite_equal, soft, action)
        type Case<'a> = (&'a str, &'a RowOp, u8, Option<Stored>, Tombstones, bool, bool, KeyAction);
        let cases: Vec<Case> = vec![
            ("new key", &upsert, 5, None, none, false, false, Upsert { changed: true }),
            ("newer values", &upsert, 5, row(4, 1, false), none, false, false, Upsert { changed: true }),
            (
                "same values, newer position",
                &upsert,
                5,
                row(4, 7, false),
                none,
                false,
                false,
                Upsert { changed: false },
            ),
            ("older than the row", &upsert, 3, row(4, 1, false), none, false, false, Stale),
            ("same position", &upsert, 4, row(4, 1, false), none, false, false, Stale),
            (
                "same position, replay repairs",
                &upsert,
                4,
                row(4, 1, false),
                none,
                true,
                false,
                Upsert { changed: true },
            ),
            ("older than the key's delete", &upsert, 3, None, key_tomb(4), false, false, Stale),
            ("at the key's delete", &upsert, 4, None, key_tomb(4), false, false, Stale),
            ("newer than the key's delete", &upsert, 5, None, key_tomb(4), false, false, Upsert { changed: true }),
            ("older than a TRUNCATE", &upsert, 3, None, table_tomb(4), false, false, Stale),
            ("revives a soft-deleted row", &upsert, 5, row(4, 7, true), none, false, true, Upsert { changed: true }),
            ("delete of a present row", &delete, 5, row(4, 1, false), none, false, false, Delete { present: true }),
            ("delete of an absent row", &delete, 5, None, none, false, false, Delete { present: false }),
            ("delete older than the row", &delete, 3, row(4, 1, false), none, false, false, Stale),
            ("soft delete", &delete, 5, row(4, 1, false), none, false, true, SoftDelete { changed: true }),
            ("soft delete again", &delete, 5, row(4, 1, true), none, false, true, SoftDelete { changed: false }),
        ];
        for (what, op, pos, stored, tombs, overwrite, soft, want) in cases {
            assert_eq!(decide(op, at(pos), stored.as_ref(), tombs, overwrite, soft), want, "{what}");
        }
    }
}
