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
//!
//! The MySQL target reads key values back with the same conversion, which is why this
//! module sits below both the source and the sinks.

pub(crate) mod charset;
pub(crate) mod key_range;

use mysql_async::Value as My;

use crate::error::{Error, ErrorKind, Result};
use crate::event::Value;
use crate::event::value::{format_datetime, format_epoch, format_time};
use crate::schema::{ColumnSchema, ColumnType};
use charset::Charsets;

/// The binary-protocol parameter for `v`. Temporal values and decimals travel as their
/// exact text, which the server parses without rounding; text travels as utf8mb4 and is
/// converted by the server to the column's character set.
pub(crate) fn param(v: &Value) -> My {
    match v {
        Value::Null => My::NULL,
        Value::Int(i) => My::Int(*i),
        Value::UInt(u) | Value::Bit(u) => My::UInt(*u),
        Value::Year(y) => My::UInt(*y as u64),
        Value::Float(f) => My::Float(*f),
        Value::Double(d) => My::Double(*d),
        Value::Decimal(s) | Value::Date(s) | Value::DateTime(s) | Value::Time(s) | Value::Text(s) | Value::Json(s) => {
            My::Bytes(s.as_bytes().to_vec())
        }
        Value::Bytes(b) => My::Bytes(b.clone()),
    }
}

/// The values of a row a snapshot query read (binary protocol, `columns` in order).
pub(crate) fn snapshot_row(row: mysql_async::Row, columns: &[ColumnSchema]) -> Result<Vec<Value>> {
    row.unwrap().into_iter().zip(columns).map(|(v, c)| convert(v, c, Origin::Snapshot)).collect()
}

/// Where a value was read.
#[derive(Clone, Copy)]
pub(crate) enum Origin<'a> {
    /// A binlog row image; text is in the column's character set, decoded with these tables
    /// of the source server (loaded for every character set of the table before its rows).
    Binlog(&'a Charsets),
    /// A snapshot query on a utf8mb4, UTC session (the server converted the text).
    Snapshot,
}

impl Origin<'_> {
    fn binlog(&self) -> bool {
        matches!(self, Origin::Binlog(_))
    }
}

/// Convert one value of `col`.
///
/// One match arm per column type: the whole MySQL → binferry value mapping in one table, tested
/// per type.
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
            My::Int(i) if origin.binlog() && *bytes == 3 && (0x80_0000..=0xFF_FFFF).contains(&i) => i - 0x100_0000,
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
            let y = if origin.binlog() && y == 1900 { 0 } else { y };
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
            (Origin::Binlog(_), My::Bytes(b)) => {
                let s = std::str::from_utf8(b).map_err(|_| bad(&v))?;
                let (secs, micros) = match s.split_once('.') {
                    Some((a, b)) => (a.parse::<i64>().ok(), b.parse::<u32>().ok()),
                    None => (s.parse::<i64>().ok(), Some(0)),
                };
                let (secs, micros) = secs.zip(micros).ok_or_else(|| bad(&v))?;
                Value::DateTime(format_epoch(secs, micros, *fsp))
            }
            (Origin::Binlog(_), My::Int(secs)) => Value::DateTime(format_epoch(*secs, 0, *fsp)),
            _ => return Err(bad(&v)),
        },
        ColumnType::Time { fsp } => match v {
            My::Time(neg, days, h, m, s, us) if origin.binlog() && matches!(fsp, 1 | 2) => {
                let (neg, days, h, m, s, us) = repair_time2_short_fraction(neg, days, h, m, s, us);
                Value::Time(format_time(neg, days, h, m, s, us, *fsp))
            }
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
        // The binlog strips BINARY(n)'s trailing zero bytes, which are part of the value: the
        // snapshot and the server itself return all n bytes.
        ColumnType::Binary { bytes } => match v {
            My::Bytes(b) if origin.binlog() => Value::Bytes(padded(b, *bytes as usize)),
            My::Bytes(b) => Value::Bytes(b),
            _ => return Err(bad(&v)),
        },
        ColumnType::VarBinary { .. } | ColumnType::Blob { .. } | ColumnType::Geometry => match v {
            My::Bytes(b) => Value::Bytes(b),
            _ => return Err(bad(&v)),
        },
        // MariaDB's UUID and INET types: their bytes in the binlog (trailing zeros stripped as
        // for BINARY), their text in a snapshot.
        ColumnType::Uuid | ColumnType::Inet4 | ColumnType::Inet6 => match v {
            My::Bytes(b) if origin.binlog() => {
                Value::Text(format_fixed_binary(&col.ty, &b).ok_or_else(|| bad(&My::Bytes(b.clone())))?)
            }
            My::Bytes(b) => Value::Text(String::from_utf8(b).map_err(|e| bad(&My::Bytes(e.into_bytes())))?),
            _ => return Err(bad(&v)),
        },
        ColumnType::Enum { variants, charset } => match (origin, v) {
            (Origin::Binlog(_), My::Int(i)) => Value::Text(match i {
                0 => String::new(), // the "invalid value" index MySQL stores for ''
                i => variants.get((i - 1) as usize).cloned().ok_or_else(|| bad(&My::Int(i)))?,
            }),
            (_, My::Bytes(b)) => Value::Text(decode_text(b, &charset.name, origin)?),
            (_, other) => return Err(bad(&other)),
        },
        ColumnType::Set { variants, charset } => match (origin, v) {
            (Origin::Binlog(_), My::Bytes(b)) => {
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

fn decode_text(bytes: Vec<u8>, charset: &str, origin: Origin) -> Result<String> {
    match origin {
        // Snapshot sessions receive every string converted to utf8mb4 by the server.
        Origin::Snapshot => String::from_utf8(bytes)
            .map_err(|e| Error::new(ErrorKind::Decode, format!("invalid utf8mb4 text from the source: {e}"))),
        Origin::Binlog(charsets) => charsets
            .get(charset)
            .ok_or_else(|| {
                Error::new(ErrorKind::Unsupported, format!("character set {charset} was not read from the source"))
            })?
            .decode(bytes),
    }
}

/// `b` padded with zero bytes to `len`.
fn padded(mut b: Vec<u8>, len: usize) -> Vec<u8> {
    if b.len() < len {
        b.resize(len, 0);
    }
    b
}

/// The text MariaDB shows for the bytes of a UUID, INET4 or INET6 value (the binlog strips
/// trailing zero bytes; they are put back first). `None` for a value of the wrong length.
fn format_fixed_binary(ty: &ColumnType, b: &[u8]) -> Option<String> {
    match ty {
        ColumnType::Uuid if b.len() <= 16 => {
            let b = padded(b.to_vec(), 16);
            let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
            Some(format!("{}-{}-{}-{}-{}", &hex[..8], &hex[8..12], &hex[12..16], &hex[16..20], &hex[20..]))
        }
        ColumnType::Inet4 if b.len() <= 4 => {
            let b = padded(b.to_vec(), 4);
            Some(format!("{}.{}.{}.{}", b[0], b[1], b[2], b[3]))
        }
        ColumnType::Inet6 if b.len() <= 16 => {
            let mut a = [0u8; 16];
            a[..b.len()].copy_from_slice(b);
            Some(format_inet6(a))
        }
        _ => None,
    }
}

/// An IPv6 address as MariaDB's INET6 shows it: the IPv4-mapped (`::ffff:a.b.c.d`) and
/// -compatible (`::a.b.c.d`, but `::` and `::1`) forms dotted; otherwise lowercase hex
/// groups without leading zeros, the first longest run of zero groups as `::` even when it
/// is one group long (`1::3:4:5:6:7:8`; RFC 5952 and Rust's `Ipv6Addr` would not compress
/// it, nor dot the compatible form).
fn format_inet6(a: [u8; 16]) -> String {
    let dotted = |b: &[u8]| format!("{}.{}.{}.{}", b[0], b[1], b[2], b[3]);
    let words: Vec<u16> = a.chunks_exact(2).map(|w| u16::from_be_bytes([w[0], w[1]])).collect();
    if words[..5].iter().all(|w| *w == 0) {
        if words[5] == 0xffff {
            return format!("::ffff:{}", dotted(&a[12..]));
        }
        let low = u32::from_be_bytes([a[12], a[13], a[14], a[15]]);
        if words[5] == 0 && low > 1 {
            return format!("::{}", dotted(&a[12..]));
        }
    }
    // The first longest run of zero words.
    let (mut best, mut run) = ((0, 0), (0, 0));
    for (i, w) in words.iter().enumerate() {
        if *w == 0 {
            if run.1 == 0 {
                run.0 = i;
            }
            run.1 += 1;
            if run.1 > best.1 {
                best = run;
            }
        } else {
            run.1 = 0;
        }
    }
    let hex = |ws: &[u16]| ws.iter().map(|w| format!("{w:x}")).collect::<Vec<_>>().join(":");
    if best.1 == 0 {
        return hex(&words);
    }
    format!("{}::{}", hex(&words[..best.0]), hex(&words[best.0 + best.1..]))
}

/// mysql_common 0.37 decodes binlog TIME(1) and TIME(2) values that are negative and have a
/// fraction wrongly: `my_time_packed_from_binary` subtracts 0x100 from the fraction byte in
/// a `u32` (`frac -= 0x100`), which wraps and adds 2^32 · 10,000 µs to the packed value, so
/// `-00:00:00.1` comes out as `624:63:63.1` and `-838:59:59.99` as `-213:59:59.99` (TIME(0)
/// and TIME(3) to TIME(6) are right). The wrapped values are recognisable: a correct value
/// with one or two fraction digits has at most 990,000 µs, and is negative only without a
/// fraction. This undoes the wrap. Not reported upstream (blackbeam/rust_mysql_common) yet:
/// this environment cannot reach GitHub; the report belongs there, and this function can go
/// once a fixed mysql_common is in use (the unit test below then fails on purpose).
fn repair_time2_short_fraction(neg: bool, days: u32, h: u8, m: u8, s: u8, us: u32) -> (bool, u32, u8, u8, u8, u32) {
    if !((neg && us > 0) || us > 990_000) {
        return (neg, days, h, m, s, us);
    }
    const WRAP: i64 = (1 << 32) * 10_000;
    let hms = ((days as i64 * 24 + h as i64) << 12) | ((m as i64) << 6) | s as i64;
    let abs = (hms << 24) | us as i64;
    let packed = if neg { -abs } else { abs } - WRAP;
    let abs = packed.abs();
    let hms = abs >> 24;
    let hours = (hms >> 12) as u32;
    (packed < 0, hours / 24, (hours % 24) as u8, ((hms >> 6) & 63) as u8, (hms & 63) as u8, (abs & 0xFF_FFFF) as u32)
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
    #[test]
    fn parameters_keep_floats_bit_exact_and_text_as_utf8() {
        assert_eq!(param(&Value::Double(0.14231597459159417)), My::Double(0.14231597459159417));
        assert_eq!(param(&Value::Float(-0.0)), My::Float(-0.0));
        assert_eq!(param(&Value::Text("é".into())), My::Bytes("é".as_bytes().to_vec()));
    }

    use super::*;
    use crate::schema::Charset;

    fn col(ty: ColumnType) -> ColumnSchema {
        ColumnSchema { name: "c".into(), ty, nullable: true, default: None, source_type: None }
    }

    /// Binlog origin with only the decoders that need no table of the server.
    fn binlog() -> Origin<'static> {
        static CHARSETS: std::sync::LazyLock<Charsets> = std::sync::LazyLock::new(Charsets::default);
        Origin::Binlog(&CHARSETS)
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
        let from_binlog = convert(My::Bytes(b"1700000000.000123".to_vec()), &c, binlog()).unwrap();
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
            convert(My::Time(true, 34, 22, 59, 59, 500_000), &c, binlog()).unwrap(),
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
        assert_eq!(convert(My::Int(2), &e, binlog()).unwrap(), Value::Text("b".into()));
        assert_eq!(convert(My::Bytes(b"b".to_vec()), &e, Origin::Snapshot).unwrap(), Value::Text("b".into()));
        let s = col(ColumnType::Set { variants: vec!["x".into(), "y".into(), "z".into()], charset: cs });
        assert_eq!(convert(My::Bytes(vec![0b101]), &s, binlog()).unwrap(), Value::Text("x,z".into()));
    }

    #[test]
    fn signed_mediumint_from_the_binlog_is_sign_extended() {
        let c = col(ColumnType::Int { bytes: 3, unsigned: false });
        assert_eq!(convert(My::Int(0xFF_FFFF), &c, binlog()).unwrap(), Value::Int(-1));
        assert_eq!(convert(My::Int(0x80_0000), &c, binlog()).unwrap(), Value::Int(-8_388_608));
        assert_eq!(convert(My::Int(8_388_607), &c, binlog()).unwrap(), Value::Int(8_388_607));
        assert_eq!(convert(My::Int(-1), &c, Origin::Snapshot).unwrap(), Value::Int(-1));
    }

    #[test]
    fn unsigned_and_year_edges() {
        let u8c = col(ColumnType::Int { bytes: 1, unsigned: true });
        assert_eq!(convert(My::Int(-1), &u8c, binlog()).unwrap(), Value::UInt(255));
        let u64c = col(ColumnType::Int { bytes: 8, unsigned: true });
        assert_eq!(convert(My::UInt(u64::MAX), &u64c, binlog()).unwrap(), Value::UInt(u64::MAX));
        let y = col(ColumnType::Year);
        assert_eq!(convert(My::Bytes(b"1900".to_vec()), &y, binlog()).unwrap(), Value::Year(0));
        assert_eq!(convert(My::Int(2155), &y, Origin::Snapshot).unwrap(), Value::Year(2155));
    }

    #[test]
    fn text_is_decoded_with_the_source_servers_tables() {
        assert!(decode_text(vec![0xff], "utf8mb4", binlog()).is_err());
        assert_eq!(
            decode_text("é".as_bytes().to_vec(), "latin2", Origin::Snapshot).unwrap(),
            "é",
            "the server converted it"
        );
        let e = decode_text(vec![0xe9], "latin2", binlog()).unwrap_err();
        assert!(e.to_string().contains("latin2 was not read"), "{e}");
    }

    /// What mysql_common 0.37 makes of a TIME2 value with `fsp` fraction digits: MySQL's
    /// on-disk encoding (`my_time_packed_to_binary`), then mysql_common's own decoder.
    fn through_mysql_common(neg: bool, hms: (i64, i64, i64), us: i64, fsp: u32) -> My {
        let (h, m, s) = hms;
        let abs = (((h << 12) | (m << 6) | s) << 24) | us;
        let packed = if neg { -abs } else { abs };
        let mut disk = Vec::new();
        if fsp >= 5 {
            disk.extend_from_slice(&((packed + 0x8000_0000_0000) as u64).to_be_bytes()[2..]);
        } else {
            let int_part = (packed >> 24) + 0x80_0000;
            disk.extend_from_slice(&(int_part as u32).to_be_bytes()[1..]);
            match fsp {
                1 | 2 => disk.push(((packed % (1 << 24)) / 10_000) as i8 as u8),
                3 | 4 => disk.extend_from_slice(&(((packed % (1 << 24)) / 100) as i16).to_be_bytes()),
                _ => {}
            }
        }
        let decoded = mysql_common::binlog::misc::my_time_packed_from_binary(&disk[..], fsp).unwrap();
        mysql_common::binlog::misc::time_from_packed(decoded)
    }

    #[test]
    fn negative_times_with_one_or_two_fraction_digits_are_repaired() {
        let c = |fsp| col(ColumnType::Time { fsp });
        // The values of issue #12's report, as mysql_common decodes them and as they are.
        for (neg, hms, us, fsp, want, broken) in [
            (true, (23, 45, 56), 700_000, 1, "-23:45:56.7", "601:18:07.1"),
            (true, (838, 59, 59), 990_000, 2, "-838:59:59.99", "-213:59:59.99"),
            (true, (0, 0, 0), 100_000, 1, "-00:00:00.1", "624:63:63.1"),
        ] {
            let raw = through_mysql_common(neg, hms, us, fsp);
            let My::Time(n, d, h, m, s, u) = raw.clone() else { panic!("{raw:?}") };
            assert_eq!(format_time(n, d, h, m, s, u, fsp as u8), broken, "the bug this repairs is still there");
            assert_eq!(convert(raw, &c(fsp as u8), binlog()).unwrap(), Value::Time(want.into()));
        }
        // Every fraction of every second of a range of negative and positive times, at every
        // precision: the repaired value is the value.
        for fsp in 0..=6u32 {
            let step = 10u64.pow(6 - fsp) as i64;
            for secs in [0i64, 1, 59, 3_599, 86_399, 86_400, 3_020_399] {
                for frac in [0, 1, 5, 9, 10, 50, 99, 999, 999_999].map(|f| (f * step) % 1_000_000) {
                    for neg in [false, true] {
                        let hms = (secs / 3600, secs / 60 % 60, secs % 60);
                        let raw = through_mysql_common(neg, hms, frac, fsp);
                        let got = convert(raw, &c(fsp as u8), binlog()).unwrap();
                        let (d, h) = ((hms.0 / 24) as u32, (hms.0 % 24) as u8);
                        let want = format_time(neg, d, h, hms.1 as u8, hms.2 as u8, frac as u32, fsp as u8);
                        assert_eq!(got, Value::Time(want), "fsp {fsp}, {}{secs}s {frac}us", if neg { "-" } else { "" });
                    }
                }
            }
        }
    }

    #[test]
    fn binary_values_keep_their_trailing_zero_bytes() {
        let c = col(ColumnType::Binary { bytes: 4 });
        assert_eq!(convert(My::Bytes(vec![1, 0xff]), &c, binlog()).unwrap(), Value::Bytes(vec![1, 0xff, 0, 0]));
        assert_eq!(convert(My::Bytes(vec![]), &c, binlog()).unwrap(), Value::Bytes(vec![0; 4]));
        assert_eq!(convert(My::Bytes(vec![1, 0, 0, 0]), &c, Origin::Snapshot).unwrap(), Value::Bytes(vec![1, 0, 0, 0]));
        let v = col(ColumnType::VarBinary { bytes: 4 });
        assert_eq!(
            convert(My::Bytes(vec![1]), &v, binlog()).unwrap(),
            Value::Bytes(vec![1]),
            "VARBINARY keeps its length"
        );
    }

    /// (bytes as the binlog has them, trailing zeros stripped; what MariaDB 10.11 shows).
    #[test]
    fn uuid_and_inet_values_read_as_mariadb_shows_them() {
        let hex = |s: &str| {
            (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect::<Vec<_>>()
        };
        let cases = [
            (ColumnType::Uuid, "123e4567e89b12d3a4564266141740", "123e4567-e89b-12d3-a456-426614174000"),
            (ColumnType::Uuid, "", "00000000-0000-0000-0000-000000000000"),
            (ColumnType::Inet4, "c0a80001", "192.168.0.1"),
            (ColumnType::Inet4, "", "0.0.0.0"),
            (ColumnType::Inet4, "0a0000ff", "10.0.0.255"),
            (ColumnType::Inet6, "20010db8000000000000ff0000428329", "2001:db8::ff00:42:8329"),
            (ColumnType::Inet6, "00000000000000000000ffff01020304", "::ffff:1.2.3.4"),
            (ColumnType::Inet6, "", "::"),
            (ColumnType::Inet6, "fe8", "fe80::"),
            (ColumnType::Inet6, "fe800000000000000000000000000001", "fe80::1"),
            (ColumnType::Inet6, "00000000000000000000000001020304", "::1.2.3.4"),
            (ColumnType::Inet6, "00000000000000000000000000000001", "::1"),
            (ColumnType::Inet6, "00010000000000010000000000000001", "1:0:0:1::1"),
            (ColumnType::Inet6, "00010000000000000001000000000001", "1::1:0:0:1"),
            (ColumnType::Inet6, "00000000000000000000ffff", "::ffff:0.0.0.0"),
            (ColumnType::Inet6, "0064ff9b000000000000000001020304", "64:ff9b::102:304"),
            (ColumnType::Inet6, "00000000000000000000000100000000", "::1:0:0"),
            (ColumnType::Inet6, "00000000000000000000fffe01020304", "::fffe:102:304"),
            (ColumnType::Inet6, "00010002000300040005000600070008", "1:2:3:4:5:6:7:8"),
            (ColumnType::Inet6, "00000002000300040005000600070008", "::2:3:4:5:6:7:8"),
            (ColumnType::Inet6, "00010000000300040005000600070008", "1::3:4:5:6:7:8"),
            (ColumnType::Inet6, "00010002000300040005000600070000", "1:2:3:4:5:6:7::"),
            (ColumnType::Inet6, "00010000000000040000000600070008", "1::4:0:6:7:8"),
            (ColumnType::Inet6, "00010000000300000000000600070008", "1:0:3::6:7:8"),
            (ColumnType::Inet6, "00000000000300040005000600000000", "::3:4:5:6:0:0"),
            (ColumnType::Inet6, "00000000000000000000000000010000", "::0.1.0.0"),
            (ColumnType::Inet6, "00000000000000000000ffff00000001", "::ffff:0.0.0.1"),
            (ColumnType::Inet6, "00000000000000000000000100000001", "::1:0:1"),
        ];
        for (ty, bytes, want) in cases {
            let c = col(ty.clone());
            let b = if bytes == "fe8" { vec![0xfe, 0x80] } else { hex(bytes) };
            assert_eq!(convert(My::Bytes(b), &c, binlog()).unwrap(), Value::Text(want.into()), "{ty:?} {bytes}");
            assert_eq!(
                convert(My::Bytes(want.as_bytes().to_vec()), &c, Origin::Snapshot).unwrap(),
                Value::Text(want.into())
            );
        }
        assert!(convert(My::Bytes(vec![1; 5]), &col(ColumnType::Inet4), binlog()).is_err());
    }
}
