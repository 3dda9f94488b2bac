//! From the MySQL client's values to binferry's exact [`Value`]s.
//!
//! Rows reach binferry two ways: decoded from binlog ROWS events (raw storage
//! formats: ENUM as an index, SET as a bitmask, TIMESTAMP as epoch seconds,
//! strings in the column's character set) and read by snapshot queries over
//! the binary protocol (ENUM/SET as names, TIMESTAMP as a UTC datetime
//! because the snapshot session runs with `time_zone='+00:00'`, strings in
//! utf8mb4 because that is the connection's character set). Both must give the
//! same `Value` for the same stored data, or the target would hold two
//! versions of one row; this module is the one place that guarantees it.

use mysql_async::Value as My;

use crate::error::{Error, ErrorKind, Result};
use crate::event::Value;
use crate::event::value::{format_datetime, format_epoch, format_time};
use crate::schema::{ColumnSchema, ColumnType};

/// Where a value was read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Origin {
    /// A binlog row image.
    Binlog,
    /// A snapshot query on a utf8mb4, UTC session.
    Snapshot,
}

/// Convert one value of `col`.
pub(crate) fn convert(v: My, col: &ColumnSchema, origin: Origin) -> Result<Value> {
    if matches!(v, My::NULL) {
        return Ok(Value::Null);
    }
    let bad = |v: &My| {
        Error::new(ErrorKind::Decode, format!("column `{}` ({}): unexpected value {v:?}", col.name, col.ty.mysql_ddl()))
    };
    Ok(match &col.ty {
        ColumnType::Int { bytes, unsigned: true } => Value::UInt(match v {
            My::UInt(u) => u,
            // The binlog decoder returns unsigned small types as Int; reinterpret in the column's width.
            My::Int(i) => (i as u64) & width_mask(*bytes),
            My::Bytes(ref b) => parse_ascii(b).ok_or_else(|| bad(&v))?,
            _ => return Err(bad(&v)),
        }),
        ColumnType::Int { bytes, .. } => Value::Int(match v {
            // mysql_common reads a signed 24-bit binlog value without sign extension
            // (0xFFFFFF comes back as 16777215 instead of -1): extend it here.
            My::Int(i) if origin == Origin::Binlog && *bytes == 3 && (0x80_0000..=0xFF_FFFF).contains(&i) => {
                i - 0x100_0000
            }
            My::Int(i) => i,
            My::UInt(u) => i64::try_from(u).map_err(|_| bad(&v))?,
            My::Bytes(ref b) => parse_ascii(b).ok_or_else(|| bad(&v))?,
            _ => return Err(bad(&v)),
        }),
        ColumnType::Decimal { scale, .. } => match v {
            My::Bytes(ref b) => {
                let s = std::str::from_utf8(b).map_err(|_| bad(&v))?;
                Value::Decimal(normalize_decimal(s, *scale).ok_or_else(|| bad(&v))?)
            }
            _ => return Err(bad(&v)),
        },
        ColumnType::Float { .. } => match v {
            My::Float(f) => Value::Float(f),
            My::Double(d) => Value::Float(d as f32),
            _ => return Err(bad(&v)),
        },
        ColumnType::Double { .. } => match v {
            My::Double(d) => Value::Double(d),
            My::Float(f) => Value::Double(f as f64),
            _ => return Err(bad(&v)),
        },
        ColumnType::Bit { .. } => match v {
            My::Bytes(ref b) if b.len() <= 8 => Value::Bit(b.iter().fold(0u64, |acc, x| (acc << 8) | *x as u64)),
            My::Int(i) => Value::Bit(i as u64),
            My::UInt(u) => Value::Bit(u),
            _ => return Err(bad(&v)),
        },
        ColumnType::Year => {
            let y: u64 = match v {
                My::Int(i) => u64::try_from(i).map_err(|_| bad(&v))?,
                My::UInt(u) => u,
                My::Bytes(ref b) => parse_ascii(b).ok_or_else(|| bad(&v))?,
                _ => return Err(bad(&v)),
            };
            // The binlog stores YEAR as (year - 1900) and 0 for `0000`; the client library
            // adds 1900 unconditionally, so 1900 (not a valid YEAR) means 0000.
            let y = if origin == Origin::Binlog && y == 1900 { 0 } else { y };
            Value::Year(u16::try_from(y).map_err(|_| bad(&v))?)
        }
        ColumnType::Date => match v {
            My::Date(y, m, d, ..) => Value::Date(format!("{y:04}-{m:02}-{d:02}")),
            My::Bytes(ref b) => Value::Date(String::from_utf8(b.clone()).map_err(|_| bad(&v))?),
            _ => return Err(bad(&v)),
        },
        ColumnType::DateTime { fsp } => match v {
            My::Date(y, mo, d, h, mi, s, us) => Value::DateTime(format_datetime(y as i64, mo, d, h, mi, s, us, *fsp)),
            _ => return Err(bad(&v)),
        },
        ColumnType::Timestamp { fsp } => match (origin, &v) {
            (_, My::Date(y, mo, d, h, mi, s, us)) => {
                Value::DateTime(format_datetime(*y as i64, *mo, *d, *h, *mi, *s, *us, *fsp))
            }
            // TIMESTAMP2 in the binlog: "seconds[.micros]" since the epoch, UTC.
            (Origin::Binlog, My::Bytes(b)) => {
                let s = std::str::from_utf8(b).map_err(|_| bad(&v))?;
                let (secs, micros) = match s.split_once('.') {
                    Some((a, b)) => (a.parse::<i64>().ok(), b.parse::<u32>().ok()),
                    None => (s.parse::<i64>().ok(), Some(0)),
                };
                let (secs, micros) = secs.zip(micros).ok_or_else(|| bad(&v))?;
                Value::DateTime(format_epoch(secs, micros, *fsp))
            }
            (Origin::Binlog, My::Int(secs)) => Value::DateTime(format_epoch(*secs, 0, *fsp)),
            _ => return Err(bad(&v)),
        },
        ColumnType::Time { fsp } => match v {
            My::Time(neg, days, h, m, s, us) => Value::Time(format_time(neg, days, h, m, s, us, *fsp)),
            _ => return Err(bad(&v)),
        },
        ColumnType::Char { charset, .. } | ColumnType::VarChar { charset, .. } | ColumnType::Text { charset, .. } => {
            match v {
                My::Bytes(b) => Value::Text(
                    decode_text(b, &charset.name, origin).map_err(|e| e.context(format!("column `{}`", col.name)))?,
                ),
                _ => return Err(bad(&v)),
            }
        }
        ColumnType::Binary { .. } | ColumnType::VarBinary { .. } | ColumnType::Blob { .. } | ColumnType::Geometry => {
            match v {
                My::Bytes(b) => Value::Bytes(b),
                _ => return Err(bad(&v)),
            }
        }
        ColumnType::Enum { variants, charset } => match (origin, v) {
            (Origin::Binlog, My::Int(i)) => Value::Text(match i {
                0 => String::new(), // the "invalid value" index MySQL stores for ''
                i => variants.get((i - 1) as usize).cloned().ok_or_else(|| bad(&My::Int(i)))?,
            }),
            (_, My::Bytes(b)) => Value::Text(decode_text(b, &charset.name, origin)?),
            (_, other) => return Err(bad(&other)),
        },
        ColumnType::Set { variants, charset } => match (origin, v) {
            (Origin::Binlog, My::Bytes(b)) => {
                let mut bits = 0u64;
                for (i, byte) in b.iter().enumerate().take(8) {
                    bits |= (*byte as u64) << (8 * i);
                }
                let names: Vec<&str> = variants
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| bits & (1 << i) != 0)
                    .map(|(_, n)| n.as_str())
                    .collect();
                Value::Text(names.join(","))
            }
            (_, My::Bytes(b)) => Value::Text(decode_text(b, &charset.name, origin)?),
            (_, other) => return Err(bad(&other)),
        },
        ColumnType::Json => match v {
            My::Bytes(b) => Value::Json(String::from_utf8(b).map_err(|e| bad(&My::Bytes(e.into_bytes())))?),
            _ => return Err(bad(&v)),
        },
    })
}

fn width_mask(bytes: u8) -> u64 {
    if bytes >= 8 { u64::MAX } else { (1u64 << (8 * bytes as u32)) - 1 }
}

fn parse_ascii<T: std::str::FromStr>(b: &[u8]) -> Option<T> {
    std::str::from_utf8(b).ok()?.trim().parse().ok()
}

/// Character sets whose bytes binferry decodes itself. Others are refused at
/// schema time with a clear error rather than replicated wrongly.
pub(crate) fn is_supported_charset(name: &str) -> bool {
    matches!(name, "utf8mb4" | "utf8mb3" | "utf8" | "ascii" | "latin1")
}

fn decode_text(bytes: Vec<u8>, charset: &str, origin: Origin) -> Result<String> {
    // Snapshot sessions receive every string converted to utf8mb4 by the server.
    let charset = if origin == Origin::Snapshot { "utf8mb4" } else { charset };
    match charset {
        "latin1" => Ok(bytes.iter().map(|&b| cp1252(b)).collect()),
        _ => {
            String::from_utf8(bytes).map_err(|e| Error::new(ErrorKind::Decode, format!("invalid {charset} text: {e}")))
        }
    }
}

/// MySQL's `latin1` is Windows-1252, with the five undefined bytes mapped to C1 controls.
fn cp1252(b: u8) -> char {
    const HIGH: [u16; 32] = [
        0x20AC, 0x0081, 0x201A, 0x0192, 0x201E, 0x2026, 0x2020, 0x2021, 0x02C6, 0x2030, 0x0160, 0x2039, 0x0152, 0x008D,
        0x017D, 0x008F, 0x0090, 0x2018, 0x2019, 0x201C, 0x201D, 0x2022, 0x2013, 0x2014, 0x02DC, 0x2122, 0x0161, 0x203A,
        0x0153, 0x009D, 0x017E, 0x0178,
    ];
    match b {
        0x80..=0x9f => char::from_u32(HIGH[(b - 0x80) as usize] as u32).unwrap_or('\u{FFFD}'),
        _ => b as char,
    }
}

/// Canonical decimal text: optional `-`, integer digits without leading zeros (at least one),
/// and exactly `scale` fraction digits. `-0.00` becomes `0.00`.
pub(crate) fn normalize_decimal(s: &str, scale: u8) -> Option<String> {
    let s = s.trim();
    let (neg, digits) = match s.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, s.strip_prefix('+').unwrap_or(s)),
    };
    let (int, frac) = digits.split_once('.').unwrap_or((digits, ""));
    if int.is_empty() && frac.is_empty()
        || !int.bytes().all(|b| b.is_ascii_digit())
        || !frac.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    let int = int.trim_start_matches('0');
    let int = if int.is_empty() { "0" } else { int };
    let scale = scale as usize;
    let mut frac = frac.to_string();
    if frac.len() > scale {
        // Only zeros may be dropped: anything else would change the value.
        if frac[scale..].bytes().any(|b| b != b'0') {
            return None;
        }
        frac.truncate(scale);
    }
    while frac.len() < scale {
        frac.push('0');
    }
    let is_zero = int == "0" && frac.bytes().all(|b| b == b'0');
    let mut out = String::with_capacity(int.len() + frac.len() + 2);
    if neg && !is_zero {
        out.push('-');
    }
    out.push_str(int);
    if scale > 0 {
        out.push('.');
        out.push_str(&frac);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::Charset;

    fn col(ty: ColumnType) -> ColumnSchema {
        ColumnSchema { name: "c".into(), ty, nullable: true, default: None }
    }

    #[test]
    fn decimals_are_canonical_and_exact() {
        assert_eq!(normalize_decimal("0012.5", 2).as_deref(), Some("12.50"));
        assert_eq!(normalize_decimal("-0.000", 3).as_deref(), Some("0.000"));
        assert_eq!(normalize_decimal("-.5", 1).as_deref(), Some("-0.5"));
        assert_eq!(normalize_decimal("7", 0).as_deref(), Some("7"));
        assert_eq!(normalize_decimal("1.230", 2).as_deref(), Some("1.23"));
        assert_eq!(normalize_decimal("1.235", 2), None, "never rounds");
        let big = format!("{}.{}", "9".repeat(35), "9".repeat(30));
        assert_eq!(normalize_decimal(&big, 30).as_deref(), Some(big.as_str()));
    }

    #[test]
    fn timestamps_from_binlog_and_snapshot_agree() {
        let c = col(ColumnType::Timestamp { fsp: 6 });
        let from_binlog = convert(My::Bytes(b"1700000000.000123".to_vec()), &c, Origin::Binlog).unwrap();
        let from_snapshot = convert(My::Date(2023, 11, 14, 22, 13, 20, 123), &c, Origin::Snapshot).unwrap();
        assert_eq!(from_binlog, Value::DateTime("2023-11-14 22:13:20.000123".into()));
        assert_eq!(from_binlog, from_snapshot);
        assert_eq!(format_epoch(951_782_400, 0, 0), "2000-02-29 00:00:00");
        assert_eq!(format_epoch(0, 0, 2), "0000-00-00 00:00:00.00");
    }

    #[test]
    fn time_keeps_sign_and_long_hours() {
        let c = col(ColumnType::Time { fsp: 3 });
        assert_eq!(
            convert(My::Time(true, 34, 22, 59, 59, 500_000), &c, Origin::Binlog).unwrap(),
            Value::Time("-838:59:59.500".into())
        );
        assert_eq!(
            convert(My::Time(false, 0, 1, 2, 3, 0), &c, Origin::Snapshot).unwrap(),
            Value::Time("01:02:03.000".into())
        );
    }

    #[test]
    fn enum_and_set_replicate_by_name() {
        let cs = Charset { name: "utf8mb4".into(), collation: "utf8mb4_general_ci".into() };
        let e = col(ColumnType::Enum { variants: vec!["a".into(), "b".into()], charset: cs.clone() });
        assert_eq!(convert(My::Int(2), &e, Origin::Binlog).unwrap(), Value::Text("b".into()));
        assert_eq!(convert(My::Bytes(b"b".to_vec()), &e, Origin::Snapshot).unwrap(), Value::Text("b".into()));
        let s = col(ColumnType::Set { variants: vec!["x".into(), "y".into(), "z".into()], charset: cs });
        assert_eq!(convert(My::Bytes(vec![0b101]), &s, Origin::Binlog).unwrap(), Value::Text("x,z".into()));
    }

    #[test]
    fn signed_mediumint_from_the_binlog_is_sign_extended() {
        let c = col(ColumnType::Int { bytes: 3, unsigned: false });
        assert_eq!(convert(My::Int(0xFF_FFFF), &c, Origin::Binlog).unwrap(), Value::Int(-1));
        assert_eq!(convert(My::Int(0x80_0000), &c, Origin::Binlog).unwrap(), Value::Int(-8_388_608));
        assert_eq!(convert(My::Int(8_388_607), &c, Origin::Binlog).unwrap(), Value::Int(8_388_607));
        assert_eq!(convert(My::Int(-1), &c, Origin::Snapshot).unwrap(), Value::Int(-1));
    }

    #[test]
    fn unsigned_and_year_edges() {
        let u8c = col(ColumnType::Int { bytes: 1, unsigned: true });
        assert_eq!(convert(My::Int(-1), &u8c, Origin::Binlog).unwrap(), Value::UInt(255));
        let u64c = col(ColumnType::Int { bytes: 8, unsigned: true });
        assert_eq!(convert(My::UInt(u64::MAX), &u64c, Origin::Binlog).unwrap(), Value::UInt(u64::MAX));
        let y = col(ColumnType::Year);
        assert_eq!(convert(My::Bytes(b"1900".to_vec()), &y, Origin::Binlog).unwrap(), Value::Year(0));
        assert_eq!(convert(My::Int(2155), &y, Origin::Snapshot).unwrap(), Value::Year(2155));
    }

    #[test]
    fn latin1_is_windows_1252() {
        assert_eq!(decode_text(vec![0x80, b'a', 0xe9], "latin1", Origin::Binlog).unwrap(), "€aé");
        assert!(decode_text(vec![0xff], "utf8mb4", Origin::Binlog).is_err());
    }
}
