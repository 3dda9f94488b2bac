//! Exact MySQL/MariaDB column types, parsed from `information_schema` and
//! rendered back as DDL for a MySQL target.

use serde::{Deserialize, Serialize};

use crate::error::{Error, ErrorKind, Result};

/// Character set and collation of a text column.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Charset {
    /// Character set name (`utf8mb4`, `latin1`, ...).
    pub name: String,
    /// Collation name (`utf8mb4_general_ci`, ...).
    pub collation: String,
}

/// A column type, precise enough to render every value exactly and to create
/// an equivalent target column.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ColumnType {
    /// TINYINT (1), SMALLINT (2), MEDIUMINT (3), INT (4), BIGINT (8).
    Int { bytes: u8, unsigned: bool },
    /// DECIMAL(precision, scale).
    Decimal { precision: u8, scale: u8, unsigned: bool },
    /// FLOAT (4-byte IEEE 754).
    Float { unsigned: bool },
    /// DOUBLE (8-byte IEEE 754).
    Double { unsigned: bool },
    /// BIT(bits).
    Bit { bits: u8 },
    /// YEAR.
    Year,
    /// DATE.
    Date,
    /// DATETIME(fsp).
    DateTime { fsp: u8 },
    /// TIMESTAMP(fsp), replicated in UTC.
    Timestamp { fsp: u8 },
    /// TIME(fsp), including negative and > 24 h values.
    Time { fsp: u8 },
    /// CHAR(chars).
    Char { chars: u32, charset: Charset },
    /// VARCHAR(chars).
    VarChar { chars: u32, charset: Charset },
    /// BINARY(bytes).
    Binary { bytes: u32 },
    /// VARBINARY(bytes).
    VarBinary { bytes: u32 },
    /// TINYTEXT (1), TEXT (2), MEDIUMTEXT (3), LONGTEXT (4): the size of the length prefix.
    Text { length_bytes: u8, charset: Charset },
    /// TINYBLOB (1), BLOB (2), MEDIUMBLOB (3), LONGBLOB (4).
    Blob { length_bytes: u8 },
    /// ENUM('a', ...): values replicate by name.
    Enum { variants: Vec<String>, charset: Charset },
    /// SET('a', ...): values replicate as the comma-joined names.
    Set { variants: Vec<String>, charset: Charset },
    /// MySQL's binary JSON (MariaDB's JSON is LONGTEXT and arrives as `Text`).
    Json,
    /// GEOMETRY and its subtypes, in MySQL's internal format (SRID + WKB).
    Geometry,
    /// MariaDB's UUID: 16 bytes, replicated as MariaDB shows them (`8-4-4-4-12` hex digits).
    Uuid,
    /// MariaDB's INET4: 4 bytes, replicated as the dotted quad.
    Inet4,
    /// MariaDB's INET6: 16 bytes, replicated as MariaDB shows them (RFC 5952, IPv4-mapped and
    /// -compatible addresses dotted).
    Inet6,
}

impl ColumnType {
    /// Parse `information_schema.COLUMNS` data: `COLUMN_TYPE` (`int(10) unsigned`,
    /// `decimal(65,30)`, `enum('a','b')`, ...), the column's character set and
    /// collation when it has them, and the character set's maximum bytes per
    /// character is not needed because `CHARACTER_MAXIMUM_LENGTH` is in characters.
    pub fn from_information_schema(
        data_type: &str,
        column_type: &str,
        char_max_len: Option<u64>,
        charset: Option<Charset>,
    ) -> Result<Self> {
        let data_type = data_type.to_ascii_lowercase();
        let lower = column_type.to_ascii_lowercase();
        let unsigned = lower.contains(" unsigned");
        let args = paren_args(column_type);
        let num = |i: usize| -> Option<u32> { args.get(i).and_then(|a| a.trim().parse().ok()) };
        let chars = || -> Result<u32> {
            char_max_len
                .and_then(|n| u32::try_from(n).ok())
                .or_else(|| num(0))
                .ok_or_else(|| unsupported(column_type, "missing length"))
        };
        let cs = || charset.clone().ok_or_else(|| unsupported(column_type, "missing character set"));
        let fsp = || num(0).unwrap_or(0) as u8;
        Ok(match data_type.as_str() {
            "tinyint" | "bool" | "boolean" => ColumnType::Int { bytes: 1, unsigned },
            "smallint" => ColumnType::Int { bytes: 2, unsigned },
            "mediumint" => ColumnType::Int { bytes: 3, unsigned },
            "int" | "integer" => ColumnType::Int { bytes: 4, unsigned },
            "bigint" => ColumnType::Int { bytes: 8, unsigned },
            "decimal" | "numeric" => ColumnType::Decimal {
                precision: num(0).unwrap_or(10) as u8,
                scale: num(1).unwrap_or(0) as u8,
                unsigned,
            },
            "float" => ColumnType::Float { unsigned },
            "double" | "real" => ColumnType::Double { unsigned },
            "bit" => ColumnType::Bit { bits: num(0).unwrap_or(1) as u8 },
            "year" => ColumnType::Year,
            "date" => ColumnType::Date,
            "datetime" => ColumnType::DateTime { fsp: fsp() },
            "timestamp" => ColumnType::Timestamp { fsp: fsp() },
            "time" => ColumnType::Time { fsp: fsp() },
            "char" => ColumnType::Char { chars: chars()?, charset: cs()? },
            "varchar" => ColumnType::VarChar { chars: chars()?, charset: cs()? },
            "binary" => ColumnType::Binary { bytes: num(0).unwrap_or(1) },
            "varbinary" => {
                ColumnType::VarBinary { bytes: num(0).ok_or_else(|| unsupported(column_type, "missing length"))? }
            }
            "tinytext" => ColumnType::Text { length_bytes: 1, charset: cs()? },
            "text" => ColumnType::Text { length_bytes: 2, charset: cs()? },
            "mediumtext" => ColumnType::Text { length_bytes: 3, charset: cs()? },
            "longtext" => ColumnType::Text { length_bytes: 4, charset: cs()? },
            "tinyblob" => ColumnType::Blob { length_bytes: 1 },
            "blob" => ColumnType::Blob { length_bytes: 2 },
            "mediumblob" => ColumnType::Blob { length_bytes: 3 },
            "longblob" => ColumnType::Blob { length_bytes: 4 },
            "enum" => ColumnType::Enum { variants: quoted_list(column_type)?, charset: cs()? },
            "set" => ColumnType::Set { variants: quoted_list(column_type)?, charset: cs()? },
            "json" => ColumnType::Json,
            "geometry" | "point" | "linestring" | "polygon" | "multipoint" | "multilinestring" | "multipolygon"
            | "geometrycollection" | "geomcollection" => ColumnType::Geometry,
            "uuid" => ColumnType::Uuid,
            "inet4" => ColumnType::Inet4,
            "inet6" => ColumnType::Inet6,
            other => {
                return Err(unsupported(column_type, &format!("type `{other}` is not supported yet")));
            }
        })
    }

    /// The column's DDL type for a MySQL/MariaDB target.
    pub fn mysql_ddl(&self) -> String {
        let uns = |u: bool| if u { " unsigned" } else { "" };
        let cs = |c: &Charset| format!(" CHARACTER SET {} COLLATE {}", c.name, c.collation);
        match self {
            ColumnType::Int { bytes, unsigned } => {
                let name = match bytes {
                    1 => "tinyint",
                    2 => "smallint",
                    3 => "mediumint",
                    4 => "int",
                    _ => "bigint",
                };
                format!("{name}{}", uns(*unsigned))
            }
            ColumnType::Decimal { precision, scale, unsigned } => {
                format!("decimal({precision},{scale}){}", uns(*unsigned))
            }
            ColumnType::Float { unsigned } => format!("float{}", uns(*unsigned)),
            ColumnType::Double { unsigned } => format!("double{}", uns(*unsigned)),
            ColumnType::Bit { bits } => format!("bit({bits})"),
            ColumnType::Year => "year".into(),
            ColumnType::Date => "date".into(),
            ColumnType::DateTime { fsp } => format!("datetime({fsp})"),
            ColumnType::Timestamp { fsp } => format!("timestamp({fsp}) NULL"),
            ColumnType::Time { fsp } => format!("time({fsp})"),
            ColumnType::Char { chars, charset } => format!("char({chars}){}", cs(charset)),
            ColumnType::VarChar { chars, charset } => format!("varchar({chars}){}", cs(charset)),
            ColumnType::Binary { bytes } => format!("binary({bytes})"),
            ColumnType::VarBinary { bytes } => format!("varbinary({bytes})"),
            ColumnType::Text { length_bytes, charset } => {
                format!(
                    "{}{}",
                    ["tinytext", "text", "mediumtext", "longtext"][(*length_bytes).clamp(1, 4) as usize - 1],
                    cs(charset)
                )
            }
            ColumnType::Blob { length_bytes } => {
                ["tinyblob", "blob", "mediumblob", "longblob"][(*length_bytes).clamp(1, 4) as usize - 1].into()
            }
            ColumnType::Enum { variants, charset } => format!("enum({}){}", sql_list(variants), cs(charset)),
            ColumnType::Set { variants, charset } => format!("set({}){}", sql_list(variants), cs(charset)),
            ColumnType::Json => "json".into(),
            ColumnType::Geometry => "geometry".into(),
            ColumnType::Uuid => "uuid".into(),
            ColumnType::Inet4 => "inet4".into(),
            ColumnType::Inet6 => "inet6".into(),
        }
    }

    /// The binary column binlog events show for this type: MariaDB writes UUID and INET
    /// values as `BINARY(n)` rows, and only `information_schema` tells what they are.
    pub fn binlog_storage(&self) -> Option<ColumnType> {
        match self {
            ColumnType::Uuid | ColumnType::Inet6 => Some(ColumnType::Binary { bytes: 16 }),
            ColumnType::Inet4 => Some(ColumnType::Binary { bytes: 4 }),
            _ => None,
        }
    }

    /// Whether every value of `self` fits `new` unchanged, so that the target column can be
    /// widened in place (`INT` → `BIGINT`, `VARCHAR(10)` → `VARCHAR(100)`,
    /// `DECIMAL(5,2)` → `DECIMAL(10,4)`, more fractional digits, appended ENUM values...).
    pub fn widens_to(&self, new: &ColumnType) -> bool {
        use ColumnType as T;
        if self == new {
            return true;
        }
        let text_bytes = |t: &T| match t {
            T::Char { chars, charset } | T::VarChar { chars, charset } => Some((*chars as u64, charset.clone())),
            T::Text { length_bytes, charset } => Some(((1u64 << (8 * *length_bytes as u32)) - 1, charset.clone())),
            _ => None,
        };
        match (self, new) {
            (T::Int { bytes: b1, unsigned: u1 }, T::Int { bytes: b2, unsigned: u2 }) => {
                (u1 == u2 && b2 >= b1) || (*u1 && !*u2 && b2 > b1)
            }
            (
                T::Decimal { precision: p1, scale: s1, unsigned: u1 },
                T::Decimal { precision: p2, scale: s2, unsigned: u2 },
            ) => s2 >= s1 && (p2 - s2) >= (p1 - s1) && (!*u2 || *u1),
            (T::Float { .. }, T::Double { .. }) => true,
            (T::Bit { bits: a }, T::Bit { bits: b }) => b >= a,
            (T::DateTime { fsp: a }, T::DateTime { fsp: b })
            | (T::Timestamp { fsp: a }, T::Timestamp { fsp: b })
            | (T::Time { fsp: a }, T::Time { fsp: b }) => b >= a,
            (T::Binary { bytes: a } | T::VarBinary { bytes: a }, T::VarBinary { bytes: b }) => b >= a,
            (T::Binary { bytes: a }, T::Binary { bytes: b }) => b >= a,
            (T::VarBinary { .. } | T::Binary { .. }, T::Blob { .. }) => true,
            (T::Blob { length_bytes: a }, T::Blob { length_bytes: b }) => b >= a,
            (T::Enum { variants: a, charset: c1 }, T::Enum { variants: b, charset: c2 })
            | (T::Set { variants: a, charset: c1 }, T::Set { variants: b, charset: c2 }) => {
                c1 == c2 && b.len() >= a.len() && b.starts_with(a)
            }
            (old, new) => match (text_bytes(old), text_bytes(new)) {
                // CHAR pads and strips trailing spaces; keep CHAR → CHAR only.
                (Some(_), Some(_))
                    if matches!(old, T::Char { .. }) != matches!(new, T::Char { .. })
                        && matches!(new, T::Char { .. }) =>
                {
                    false
                }
                (Some((a, c1)), Some((b, c2))) => c1.name == c2.name && b >= a,
                _ => false,
            },
        }
    }

    /// The character set of a text-like column, `None` for binary and non-text types.
    pub fn charset(&self) -> Option<&Charset> {
        match self {
            ColumnType::Char { charset, .. }
            | ColumnType::VarChar { charset, .. }
            | ColumnType::Text { charset, .. }
            | ColumnType::Enum { charset, .. }
            | ColumnType::Set { charset, .. } => Some(charset),
            _ => None,
        }
    }
}

fn unsupported(column_type: &str, why: &str) -> Error {
    Error::new(ErrorKind::Unsupported, format!("column type `{column_type}`: {why}"))
}

/// `decimal(10,2) unsigned` → ["10", "2"]; nothing for types without parentheses.
fn paren_args(column_type: &str) -> Vec<String> {
    match (column_type.find('('), column_type.rfind(')')) {
        (Some(a), Some(b)) if b > a => column_type[a + 1..b].split(',').map(|s| s.to_string()).collect(),
        _ => Vec::new(),
    }
}

/// `enum('a','it''s','x,y')` → ["a", "it's", "x,y"].
fn quoted_list(column_type: &str) -> Result<Vec<String>> {
    let start = column_type.find('(').ok_or_else(|| unsupported(column_type, "no value list"))?;
    let mut out = Vec::new();
    let mut chars = column_type[start + 1..].chars().peekable();
    loop {
        match chars.next() {
            Some('\'') => {
                let mut v = String::new();
                loop {
                    match chars.next() {
                        Some('\'') if chars.peek() == Some(&'\'') => {
                            chars.next();
                            v.push('\'');
                        }
                        Some('\'') => break,
                        Some('\\') => match chars.next() {
                            Some(c) => v.push(c),
                            None => return Err(unsupported(column_type, "unterminated value")),
                        },
                        Some(c) => v.push(c),
                        None => return Err(unsupported(column_type, "unterminated value")),
                    }
                }
                out.push(v);
            }
            Some(',') | Some(' ') => {}
            Some(')') | None => break,
            Some(_) => return Err(unsupported(column_type, "unexpected character in value list")),
        }
    }
    Ok(out)
}

fn sql_list(values: &[String]) -> String {
    values.iter().map(|v| format!("'{}'", v.replace('\\', "\\\\").replace('\'', "''"))).collect::<Vec<_>>().join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utf8() -> Option<Charset> {
        Some(Charset { name: "utf8mb4".into(), collation: "utf8mb4_general_ci".into() })
    }

    #[test]
    fn parses_information_schema_types() {
        let t = |dt: &str, ct: &str| ColumnType::from_information_schema(dt, ct, None, utf8()).unwrap();
        assert_eq!(t("int", "int(10) unsigned"), ColumnType::Int { bytes: 4, unsigned: true });
        assert_eq!(t("bigint", "bigint(20)"), ColumnType::Int { bytes: 8, unsigned: false });
        assert_eq!(t("decimal", "decimal(65,30)"), ColumnType::Decimal { precision: 65, scale: 30, unsigned: false });
        assert_eq!(t("datetime", "datetime(6)"), ColumnType::DateTime { fsp: 6 });
        assert_eq!(t("time", "time"), ColumnType::Time { fsp: 0 });
        assert_eq!(t("varbinary", "varbinary(16)"), ColumnType::VarBinary { bytes: 16 });
        assert_eq!(
            t("enum", "enum('a','it''s','x,y')"),
            ColumnType::Enum { variants: vec!["a".into(), "it's".into(), "x,y".into()], charset: utf8().unwrap() }
        );
        let vc = ColumnType::from_information_schema("varchar", "varchar(100)", Some(100), utf8()).unwrap();
        assert_eq!(vc.mysql_ddl(), "varchar(100) CHARACTER SET utf8mb4 COLLATE utf8mb4_general_ci");
        assert!(ColumnType::from_information_schema("vector", "vector(3)", None, None).is_err());
    }

    #[test]
    fn widening_rules() {
        let t = |dt: &str, ct: &str| ColumnType::from_information_schema(dt, ct, None, utf8()).unwrap();
        assert!(t("int", "int").widens_to(&t("bigint", "bigint")));
        assert!(t("int", "int unsigned").widens_to(&t("bigint", "bigint")));
        assert!(!t("int", "int unsigned").widens_to(&t("int", "int")));
        assert!(!t("bigint", "bigint").widens_to(&t("int", "int")));
        assert!(t("varchar", "varchar(10)").widens_to(&t("varchar", "varchar(100)")));
        assert!(!t("varchar", "varchar(100)").widens_to(&t("varchar", "varchar(10)")));
        assert!(t("varchar", "varchar(100)").widens_to(&t("text", "text")));
        assert!(!t("varchar", "varchar(100)").widens_to(&t("int", "int")));
        assert!(t("decimal", "decimal(5,2)").widens_to(&t("decimal", "decimal(10,4)")));
        assert!(!t("decimal", "decimal(10,4)").widens_to(&t("decimal", "decimal(10,2)")));
        assert!(!t("decimal", "decimal(10,4)").widens_to(&t("decimal", "decimal(8,4)")));
        assert!(t("datetime", "datetime(0)").widens_to(&t("datetime", "datetime(6)")));
        assert!(t("enum", "enum('a')").widens_to(&t("enum", "enum('a','b')")));
        assert!(!t("enum", "enum('a','b')").widens_to(&t("enum", "enum('b','a')")));
    }

    #[test]
    fn ddl_round_trips_through_the_parser() {
        for (dt, ct) in
            [("int", "int unsigned"), ("decimal", "decimal(10,4)"), ("bit", "bit(5)"), ("set", "set('a','b')")]
        {
            let ty = ColumnType::from_information_schema(dt, ct, None, utf8()).unwrap();
            let ddl = ty.mysql_ddl();
            let dt2 = ddl.split(['(', ' ']).next().unwrap();
            assert_eq!(ColumnType::from_information_schema(dt2, &ddl, None, utf8()).unwrap(), ty, "{ddl}");
        }
    }
}
