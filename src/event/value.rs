//! Column values, exact for every supported type.
//!
//! Temporal values are kept in MySQL's own text form (`YYYY-MM-DD
//! HH:MM:SS[.ffffff]`, `[-]HHH:MM:SS[.ffffff]`) with exactly the column's
//! fractional digits, and TIMESTAMPs in UTC: this form is what a MySQL target
//! accepts without conversion, and it is the same whether the row came from
//! the binlog or from a snapshot query. Decimals are decimal strings, never
//! floats.

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// One column value.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Value {
    /// SQL NULL.
    Null,
    /// Signed integer types.
    Int(i64),
    /// Unsigned integer types.
    #[serde(rename = "uint")]
    UInt(u64),
    /// FLOAT, bit-exact.
    Float(f32),
    /// DOUBLE, bit-exact.
    Double(f64),
    /// DECIMAL as a canonical decimal string with exactly `scale` fraction digits.
    Decimal(String),
    /// Character data, decoded from the column's character set.
    Text(String),
    /// Binary data (BINARY, VARBINARY, BLOB, GEOMETRY).
    Bytes(#[serde(serialize_with = "ser_b64", deserialize_with = "de_b64")] Vec<u8>),
    /// DATE: `YYYY-MM-DD`.
    Date(String),
    /// DATETIME or TIMESTAMP (UTC): `YYYY-MM-DD HH:MM:SS[.f]`.
    #[serde(rename = "datetime")]
    DateTime(String),
    /// TIME: `[-]H:MM:SS[.f]` with hours up to 838.
    Time(String),
    /// YEAR (0 or 1901..=2155).
    Year(u16),
    /// BIT(n) as an unsigned integer.
    Bit(u64),
    /// JSON document text.
    Json(String),
}

impl Value {
    /// Approximate in-memory size, used by batch limits.
    pub fn approx_bytes(&self) -> usize {
        16 + match self {
            Value::Decimal(s)
            | Value::Text(s)
            | Value::Date(s)
            | Value::DateTime(s)
            | Value::Time(s)
            | Value::Json(s) => s.len(),
            Value::Bytes(b) => b.len(),
            _ => 0,
        }
    }

    /// Whether this is SQL NULL.
    pub fn is_null(&self) -> bool {
        matches!(self, Value::Null)
    }
}

fn fraction(us: u32, fsp: u8) -> String {
    if fsp == 0 {
        return String::new();
    }
    let digits = format!("{us:06}");
    format!(".{}", &digits[..(fsp as usize).min(6)])
}

#[allow(clippy::too_many_arguments)]
pub(crate) fn format_datetime(y: i64, mo: u8, d: u8, h: u8, mi: u8, s: u8, us: u32, fsp: u8) -> String {
    format!("{y:04}-{mo:02}-{d:02} {h:02}:{mi:02}:{s:02}{}", fraction(us, fsp))
}

pub(crate) fn format_time(neg: bool, days: u32, h: u8, m: u8, s: u8, us: u32, fsp: u8) -> String {
    let hours = days as u64 * 24 + h as u64;
    let zero = hours == 0 && m == 0 && s == 0 && us == 0;
    let sign = if neg && !zero { "-" } else { "" };
    format!("{sign}{hours:02}:{m:02}:{s:02}{}", fraction(us, fsp))
}

/// Seconds since the epoch (UTC) as a datetime; 0 is MySQL's zero timestamp.
pub(crate) fn format_epoch(secs: i64, micros: u32, fsp: u8) -> String {
    if secs == 0 && micros == 0 {
        return format_datetime(0, 0, 0, 0, 0, 0, 0, fsp);
    }
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format_datetime(y, m, d, (rem / 3600) as u8, (rem % 3600 / 60) as u8, (rem % 60) as u8, micros, fsp)
}

/// Howard Hinnant's `civil_from_days`: days since 1970-01-01 → (year, month, day).
fn civil_from_days(z: i64) -> (i64, u8, u8) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u8;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u8;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

fn ser_b64<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
    use base64::Engine;
    s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(bytes))
}

fn de_b64<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
    use base64::Engine;
    let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
    base64::engine::general_purpose::STANDARD.decode(s.as_bytes()).map_err(serde::de::Error::custom)
}
