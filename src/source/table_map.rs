//! TABLE_MAP events → [`TableSchema`].
//!
//! Every transaction's ROWS events are preceded by a TABLE_MAP event for each
//! table they touch. With `binlog_row_metadata=FULL` it describes the table as
//! it was when the row was written: column names, types with their metadata,
//! signedness, charsets, ENUM/SET values and the primary key. Decoding rows
//! with it (not with the table's *current* definition) is what keeps old
//! binlog positions decodable after schema changes.

use std::collections::HashMap;

use mysql_async::binlog::events::{OptionalMetaExtractor, OptionalMetadataField, TableMapEvent};
use mysql_async::consts::ColumnType as MyType;

use crate::error::{Error, ErrorKind, Result};
use crate::schema::{Charset, ColumnSchema, ColumnType, TableRef, TableSchema};

use super::charset::is_decodable;

/// Collation id → character set, collation name and bytes per character, as the
/// source server defines them (MariaDB and MySQL number collations differently,
/// so the map is read from the server's `information_schema.COLLATIONS`).
#[derive(Clone, Debug, Default)]
pub(crate) struct Collations {
    by_id: HashMap<u16, (Charset, u32)>,
}

impl Collations {
    pub(crate) fn new(rows: impl IntoIterator<Item = (u16, String, String, u32)>) -> Self {
        let by_id = rows
            .into_iter()
            .map(|(id, charset, collation, maxlen)| (id, (Charset { name: charset, collation }, maxlen.max(1))))
            .collect();
        Collations { by_id }
    }

    /// Bytes per character of `charset`, at most.
    pub(crate) fn maxlen(&self, charset: &str) -> Option<u32> {
        self.by_id.values().find(|(cs, _)| cs.name == charset).map(|(_, n)| *n)
    }

    fn get(&self, id: u16) -> Result<&(Charset, u32)> {
        self.by_id.get(&id).ok_or_else(|| Error::new(ErrorKind::Unsupported, format!("unknown collation id {id}")))
    }
}

/// The binary pseudo-charset: such columns hold bytes, not text.
const BINARY_COLLATION: u16 = 63;

/// Build the schema of the table a TABLE_MAP event describes.
pub(crate) fn schema_from_table_map(tme: &TableMapEvent<'_>, collations: &Collations) -> Result<TableSchema> {
    let table = TableRef::new(tme.database_name(), tme.table_name());
    let ctx = |e: Error| e.context(format!("table {table}"));
    let io = |e: std::io::Error| Error::new(ErrorKind::Decode, format!("malformed TABLE_MAP optional metadata: {e}"));

    let meta = OptionalMetaExtractor::new(tme.iter_optional_meta()).map_err(io).map_err(ctx)?;
    let names: Vec<String> = meta
        .iter_column_name()
        .map(|n| n.map(|n| n.name().into_owned()))
        .collect::<std::io::Result<_>>()
        .map_err(io)
        .map_err(ctx)?;
    let count = tme.columns_count() as usize;
    if names.len() != count {
        return Err(Error::new(
            ErrorKind::SourceSetting,
            format!("binlog_row_metadata: expected FULL, found MINIMAL (TABLE_MAP of {table} carries no column names)"),
        )
        .with_hint(
            "SET GLOBAL binlog_row_metadata = 'FULL' and add binlog_row_metadata=FULL to the server configuration",
        ));
    }

    let mut enums = Vec::new();
    let mut sets = Vec::new();
    for field in tme.iter_optional_meta() {
        match field.map_err(io).map_err(ctx)? {
            OptionalMetadataField::EnumStrValue(v) => {
                for col in v.iter_values() {
                    let col = col.map_err(io).map_err(ctx)?;
                    enums.push(col.values().iter().map(|x| x.value().into_owned()).collect::<Vec<_>>());
                }
            }
            OptionalMetadataField::SetStrValue(v) => {
                for col in v.iter_values() {
                    let col = col.map_err(io).map_err(ctx)?;
                    sets.push(col.values().iter().map(|x| x.value().into_owned()).collect::<Vec<_>>());
                }
            }
            _ => {}
        }
    }
    let mut enums = enums.into_iter();
    let mut sets = sets.into_iter();
    let mut signedness = meta.iter_signedness();
    let mut charsets = meta.iter_charset();
    let mut enum_set_charsets = meta.iter_enum_and_set_charset();
    let nulls = tme.null_bitmask();

    let mut columns = Vec::with_capacity(count);
    for (i, name) in names.into_iter().enumerate() {
        let my_type = tme
            .get_column_type(i)
            .map_err(|e| Error::new(ErrorKind::Unsupported, format!("column `{name}`: {e}")))
            .map_err(ctx)?
            .ok_or_else(|| ctx(Error::new(ErrorKind::Decode, format!("column `{name}` has no type"))))?;
        let md = tme.get_column_metadata(i).unwrap_or(&[]);
        let md_byte = |k: usize| md.get(k).copied().unwrap_or(0);
        let unsigned = if my_type.is_numeric_type() { signedness.next().unwrap_or(false) } else { false };
        let collation = if my_type.is_character_type() {
            Some(charsets.next().transpose().map_err(io).map_err(ctx)?.unwrap_or(BINARY_COLLATION))
        } else if my_type.is_enum_or_set_type() {
            Some(enum_set_charsets.next().transpose().map_err(io).map_err(ctx)?.unwrap_or(BINARY_COLLATION))
        } else {
            None
        };
        let text = |id: u16| -> Result<Option<(Charset, u32)>> {
            if id == BINARY_COLLATION {
                return Ok(None);
            }
            let (cs, maxlen) = collations.get(id)?.clone();
            if !is_decodable(&cs.name, maxlen) {
                return Err(Error::new(
                    ErrorKind::Unsupported,
                    format!(
                        "column `{name}` uses character set {} ({maxlen} bytes per character), which binferry does not decode",
                        cs.name
                    ),
                )
                .with_hint("convert the column to utf8mb4, or exclude the table"));
            }
            Ok(Some((cs, maxlen)))
        };
        let ty = match my_type {
            MyType::MYSQL_TYPE_TINY => ColumnType::Int { bytes: 1, unsigned },
            MyType::MYSQL_TYPE_SHORT => ColumnType::Int { bytes: 2, unsigned },
            MyType::MYSQL_TYPE_INT24 => ColumnType::Int { bytes: 3, unsigned },
            MyType::MYSQL_TYPE_LONG => ColumnType::Int { bytes: 4, unsigned },
            MyType::MYSQL_TYPE_LONGLONG => ColumnType::Int { bytes: 8, unsigned },
            MyType::MYSQL_TYPE_NEWDECIMAL => ColumnType::Decimal { precision: md_byte(0), scale: md_byte(1), unsigned },
            MyType::MYSQL_TYPE_FLOAT => ColumnType::Float { unsigned },
            MyType::MYSQL_TYPE_DOUBLE => ColumnType::Double { unsigned },
            MyType::MYSQL_TYPE_BIT => ColumnType::Bit { bits: md_byte(1) * 8 + md_byte(0) },
            MyType::MYSQL_TYPE_YEAR => ColumnType::Year,
            MyType::MYSQL_TYPE_DATE | MyType::MYSQL_TYPE_NEWDATE => ColumnType::Date,
            MyType::MYSQL_TYPE_DATETIME => ColumnType::DateTime { fsp: 0 },
            MyType::MYSQL_TYPE_DATETIME2 => ColumnType::DateTime { fsp: md_byte(0) },
            MyType::MYSQL_TYPE_TIMESTAMP => ColumnType::Timestamp { fsp: 0 },
            MyType::MYSQL_TYPE_TIMESTAMP2 => ColumnType::Timestamp { fsp: md_byte(0) },
            MyType::MYSQL_TYPE_TIME => ColumnType::Time { fsp: 0 },
            MyType::MYSQL_TYPE_TIME2 => ColumnType::Time { fsp: md_byte(0) },
            MyType::MYSQL_TYPE_VARCHAR | MyType::MYSQL_TYPE_VAR_STRING => {
                let max_bytes = u16::from_le_bytes([md_byte(0), md_byte(1)]) as u32;
                match text(collation.unwrap_or(BINARY_COLLATION)).map_err(ctx)? {
                    None => ColumnType::VarBinary { bytes: max_bytes },
                    Some((charset, maxlen)) => ColumnType::VarChar { chars: max_bytes / maxlen, charset },
                }
            }
            MyType::MYSQL_TYPE_STRING => {
                // Same length decoding as the server's Field_string::pack metadata (see #37426).
                let (b0, b1) = (md_byte(0) as u32, md_byte(1) as u32);
                let len = if b0 & 0x30 != 0x30 { b1 | (((b0 & 0x30) ^ 0x30) << 4) } else { b1 };
                match text(collation.unwrap_or(BINARY_COLLATION)).map_err(ctx)? {
                    None => ColumnType::Binary { bytes: len },
                    Some((charset, maxlen)) => ColumnType::Char { chars: len / maxlen, charset },
                }
            }
            MyType::MYSQL_TYPE_ENUM | MyType::MYSQL_TYPE_SET => {
                let charset = match text(collation.unwrap_or(BINARY_COLLATION)).map_err(ctx)? {
                    Some((cs, _)) => cs,
                    None => Charset { name: "binary".into(), collation: "binary".into() },
                };
                let variants = if my_type == MyType::MYSQL_TYPE_ENUM { enums.next() } else { sets.next() };
                let variants = variants.ok_or_else(|| {
                    ctx(Error::new(
                        ErrorKind::SourceSetting,
                        format!("column `{name}`: TABLE_MAP carries no ENUM/SET values"),
                    )
                    .with_hint("set binlog_row_metadata=FULL on the source"))
                })?;
                if my_type == MyType::MYSQL_TYPE_ENUM {
                    ColumnType::Enum { variants, charset }
                } else {
                    ColumnType::Set { variants, charset }
                }
            }
            MyType::MYSQL_TYPE_TINY_BLOB
            | MyType::MYSQL_TYPE_MEDIUM_BLOB
            | MyType::MYSQL_TYPE_LONG_BLOB
            | MyType::MYSQL_TYPE_BLOB => {
                let length_bytes = md_byte(0).clamp(1, 4);
                match text(collation.unwrap_or(BINARY_COLLATION)).map_err(ctx)? {
                    None => ColumnType::Blob { length_bytes },
                    Some((charset, _)) => ColumnType::Text { length_bytes, charset },
                }
            }
            MyType::MYSQL_TYPE_JSON => ColumnType::Json,
            MyType::MYSQL_TYPE_GEOMETRY => ColumnType::Geometry,
            other => {
                return Err(ctx(Error::new(
                    ErrorKind::Unsupported,
                    format!("column `{name}` has binlog type {other:?}, not supported yet"),
                )
                .with_hint("exclude the table with `source.exclude`")));
            }
        };
        let nullable = nulls.get(i).map(|b| *b).unwrap_or(true);
        columns.push(ColumnSchema { name, ty, nullable, default: None, source_type: None });
    }

    let primary_key = meta
        .iter_primary_key()
        .map(|r| r.map(|i| i as usize))
        .collect::<std::io::Result<Vec<_>>>()
        .map_err(io)
        .map_err(ctx)?;
    if primary_key.iter().any(|&i| i >= columns.len()) {
        return Err(ctx(Error::new(ErrorKind::Decode, "TABLE_MAP primary key refers to a missing column")));
    }
    Ok(TableSchema { table, columns, primary_key })
}
