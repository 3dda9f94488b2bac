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

use crate::mysql_codec::charset::is_decodable;

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
///
/// Long because it walks the optional metadata blocks of a TABLE_MAP in their wire order, each
/// consumed by one column type; the per-type decoding itself is [`column_type`], tested
/// table-driven.
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
        let unsigned = if my_type.is_numeric_type() { signedness.next().unwrap_or(false) } else { false };
        let collation = if my_type.is_character_type() {
            Some(charsets.next().transpose().map_err(io).map_err(ctx)?.unwrap_or(BINARY_COLLATION))
        } else if my_type.is_enum_or_set_type() {
            Some(enum_set_charsets.next().transpose().map_err(io).map_err(ctx)?.unwrap_or(BINARY_COLLATION))
        } else {
            None
        };
        let text = match collation {
            Some(id) => text_of(collations, id, &name).map_err(ctx)?,
            None => None,
        };
        let variants = || if my_type == MyType::MYSQL_TYPE_ENUM { enums.next() } else { sets.next() };
        let ty = column_type(my_type, md, unsigned, text, variants)
            .map_err(|e| ctx(e.context(format!("column `{name}`"))))?;
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

/// The character set of a text column (`None` for the binary pseudo-charset), refused when
/// binferry cannot decode it.
fn text_of(collations: &Collations, id: u16, column: &str) -> Result<Option<(Charset, u32)>> {
    if id == BINARY_COLLATION {
        return Ok(None);
    }
    let (cs, maxlen) = collations.get(id)?.clone();
    if !is_decodable(&cs.name, maxlen) {
        return Err(Error::new(
            ErrorKind::Unsupported,
            format!(
                "column `{column}` uses character set {} ({maxlen} bytes per character), which binferry does not decode",
                cs.name
            ),
        )
        .with_hint("convert the column to utf8mb4, or exclude the table"));
    }
    Ok(Some((cs, maxlen)))
}

/// One column's type from its binlog type and TABLE_MAP metadata bytes (their layout is the
/// server's `Field::save_field_metadata` for each type), its signedness, its character set
/// (`None`: binary) and, for ENUM/SET, its values.
fn column_type(
    my_type: MyType,
    md: &[u8],
    unsigned: bool,
    text: Option<(Charset, u32)>,
    variants: impl FnOnce() -> Option<Vec<String>>,
) -> Result<ColumnType> {
    let md_byte = |k: usize| md.get(k).copied().unwrap_or(0);
    Ok(match my_type {
        MyType::MYSQL_TYPE_TINY => ColumnType::Int { bytes: 1, unsigned },
        MyType::MYSQL_TYPE_SHORT => ColumnType::Int { bytes: 2, unsigned },
        MyType::MYSQL_TYPE_INT24 => ColumnType::Int { bytes: 3, unsigned },
        MyType::MYSQL_TYPE_LONG => ColumnType::Int { bytes: 4, unsigned },
        MyType::MYSQL_TYPE_LONGLONG => ColumnType::Int { bytes: 8, unsigned },
        MyType::MYSQL_TYPE_NEWDECIMAL => ColumnType::Decimal { precision: md_byte(0), scale: md_byte(1), unsigned },
        MyType::MYSQL_TYPE_FLOAT => ColumnType::Float { unsigned },
        MyType::MYSQL_TYPE_DOUBLE => ColumnType::Double { unsigned },
        // Bits beyond whole bytes in byte 0, whole bytes in byte 1.
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
            // Maximum length in bytes, two bytes little-endian.
            let max_bytes = u16::from_le_bytes([md_byte(0), md_byte(1)]) as u32;
            match text {
                None => ColumnType::VarBinary { bytes: max_bytes },
                Some((charset, maxlen)) => ColumnType::VarChar { chars: max_bytes / maxlen, charset },
            }
        }
        MyType::MYSQL_TYPE_STRING => {
            // Same length decoding as the server's Field_string::pack metadata (see #37426):
            // byte 0 is the real type with the length's bits 8-9 folded in, byte 1 its low byte.
            let (b0, b1) = (md_byte(0) as u32, md_byte(1) as u32);
            let len = if b0 & 0x30 != 0x30 { b1 | (((b0 & 0x30) ^ 0x30) << 4) } else { b1 };
            match text {
                None => ColumnType::Binary { bytes: len },
                Some((charset, maxlen)) => ColumnType::Char { chars: len / maxlen, charset },
            }
        }
        MyType::MYSQL_TYPE_ENUM | MyType::MYSQL_TYPE_SET => {
            let charset = match text {
                Some((cs, _)) => cs,
                None => Charset { name: "binary".into(), collation: "binary".into() },
            };
            let variants = variants().ok_or_else(|| {
                Error::new(ErrorKind::SourceSetting, "TABLE_MAP carries no ENUM/SET values")
                    .with_hint("set binlog_row_metadata=FULL on the source")
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
            // Bytes of the length prefix: 1 TINY, 2 plain, 3 MEDIUM, 4 LONG.
            let length_bytes = md_byte(0).clamp(1, 4);
            match text {
                None => ColumnType::Blob { length_bytes },
                Some((charset, _)) => ColumnType::Text { length_bytes, charset },
            }
        }
        MyType::MYSQL_TYPE_JSON => ColumnType::Json,
        MyType::MYSQL_TYPE_GEOMETRY => ColumnType::Geometry,
        other => {
            return Err(Error::new(ErrorKind::Unsupported, format!("binlog type {other:?}, not supported yet"))
                .with_hint("exclude the table with `source.exclude`"));
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utf8mb4() -> Option<(Charset, u32)> {
        Some((Charset { name: "utf8mb4".into(), collation: "utf8mb4_general_ci".into() }, 4))
    }

    #[test]
    fn every_binlog_type_and_metadata_layout_decodes() {
        use ColumnType as C;
        use MyType as M;
        let cs = || utf8mb4().map(|(c, _)| c).unwrap_or_else(|| unreachable!());
        // (binlog type, metadata bytes, unsigned, charset, expected type)
        type Case = (M, &'static [u8], bool, Option<(Charset, u32)>, C);
        let cases: Vec<Case> = vec![
            (M::MYSQL_TYPE_TINY, &[], true, None, C::Int { bytes: 1, unsigned: true }),
            (M::MYSQL_TYPE_SHORT, &[], false, None, C::Int { bytes: 2, unsigned: false }),
            (M::MYSQL_TYPE_INT24, &[], false, None, C::Int { bytes: 3, unsigned: false }),
            (M::MYSQL_TYPE_LONG, &[], true, None, C::Int { bytes: 4, unsigned: true }),
            (M::MYSQL_TYPE_LONGLONG, &[], true, None, C::Int { bytes: 8, unsigned: true }),
            (
                M::MYSQL_TYPE_NEWDECIMAL,
                &[65, 30],
                false,
                None,
                C::Decimal { precision: 65, scale: 30, unsigned: false },
            ),
            (M::MYSQL_TYPE_FLOAT, &[4], false, None, C::Float { unsigned: false }),
            (M::MYSQL_TYPE_DOUBLE, &[8], true, None, C::Double { unsigned: true }),
            // BIT(13): one whole byte and 5 bits.
            (M::MYSQL_TYPE_BIT, &[5, 1], false, None, C::Bit { bits: 13 }),
            (M::MYSQL_TYPE_BIT, &[0, 8], false, None, C::Bit { bits: 64 }),
            (M::MYSQL_TYPE_YEAR, &[], false, None, C::Year),
            (M::MYSQL_TYPE_DATE, &[], false, None, C::Date),
            (M::MYSQL_TYPE_DATETIME, &[], false, None, C::DateTime { fsp: 0 }),
            (M::MYSQL_TYPE_DATETIME2, &[6], false, None, C::DateTime { fsp: 6 }),
            (M::MYSQL_TYPE_TIMESTAMP, &[], false, None, C::Timestamp { fsp: 0 }),
            (M::MYSQL_TYPE_TIMESTAMP2, &[3], false, None, C::Timestamp { fsp: 3 }),
            (M::MYSQL_TYPE_TIME, &[], false, None, C::Time { fsp: 0 }),
            (M::MYSQL_TYPE_TIME2, &[2], false, None, C::Time { fsp: 2 }),
            // VARCHAR(300) utf8mb4: 1,200 bytes, little-endian.
            (M::MYSQL_TYPE_VARCHAR, &[0xB0, 0x04], false, utf8mb4(), C::VarChar { chars: 300, charset: cs() }),
            (M::MYSQL_TYPE_VARCHAR, &[16, 0], false, None, C::VarBinary { bytes: 16 }),
            // CHAR(255) utf8mb4: 1,020 bytes = 0x3FC; bits 8-9 folded into byte 0 (0xFE ^ 0x30).
            (M::MYSQL_TYPE_STRING, &[0xCE, 0xFC], false, utf8mb4(), C::Char { chars: 255, charset: cs() }),
            (M::MYSQL_TYPE_STRING, &[0xFE, 16], false, None, C::Binary { bytes: 16 }),
            (M::MYSQL_TYPE_BLOB, &[1], false, None, C::Blob { length_bytes: 1 }),
            (M::MYSQL_TYPE_BLOB, &[4], false, utf8mb4(), C::Text { length_bytes: 4, charset: cs() }),
            (M::MYSQL_TYPE_BLOB, &[9], false, None, C::Blob { length_bytes: 4 }),
            (M::MYSQL_TYPE_JSON, &[4], false, None, C::Json),
            (M::MYSQL_TYPE_GEOMETRY, &[4], false, None, C::Geometry),
        ];
        for (my, md, unsigned, text, want) in cases {
            let got = column_type(my, md, unsigned, text, || None);
            assert_eq!(got.ok(), Some(want), "{my:?} {md:?}");
        }
        let values = || Some(vec!["a".to_string(), "b".to_string()]);
        let e = column_type(M::MYSQL_TYPE_ENUM, &[], false, utf8mb4(), values);
        assert_eq!(e.ok(), Some(C::Enum { variants: vec!["a".into(), "b".into()], charset: cs() }));
        let s = column_type(M::MYSQL_TYPE_SET, &[], false, None, values);
        assert!(matches!(s, Ok(C::Set { charset, .. }) if charset.name == "binary"));
        let missing = column_type(M::MYSQL_TYPE_ENUM, &[], false, utf8mb4(), || None).unwrap_err();
        assert_eq!(missing.kind(), ErrorKind::SourceSetting);
        let unknown = column_type(M::MYSQL_TYPE_NULL, &[], false, None, || None).unwrap_err();
        assert_eq!(unknown.kind(), ErrorKind::Unsupported);
    }

    #[test]
    fn text_in_a_charset_binferry_cannot_decode_is_refused() {
        let c = Collations::new([
            (33, "utf8mb3".into(), "utf8mb3_general_ci".into(), 3),
            (200, "nosuch".into(), "nosuch_bin".into(), 7),
        ]);
        assert_eq!(text_of(&c, BINARY_COLLATION, "c").ok(), Some(None));
        assert!(matches!(text_of(&c, 33, "c"), Ok(Some((cs, 3))) if cs.name == "utf8mb3"));
        let e = text_of(&c, 200, "c").unwrap_err();
        assert!(e.to_string().contains("character set nosuch"), "{e}");
        assert_eq!(text_of(&c, 999, "c").unwrap_err().kind(), ErrorKind::Unsupported);
    }
}
