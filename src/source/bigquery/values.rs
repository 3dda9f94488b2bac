//! BigQuery's REST cells (`{"v": ...}`) decoded into exact [`Value`]s for a MySQL target.
//!
//! The queries in [`super::sql`] select each column in the form that travels exactly over
//! REST: a TIMESTAMP as `UNIX_MICROS` (BigQuery's own REST text for it is a float in
//! seconds, which has no room for every microsecond), JSON, ARRAY and STRUCT as
//! `TO_JSON_STRING` (NULL kept NULL), GEOGRAPHY as `ST_ASTEXT`.
//! Everything else is BigQuery's REST text: NUMERIC as decimal text, BYTES as base64,
//! DATETIME with a `T`, FLOAT64 as a shortest round-trip decimal.

use base64::Engine;
use serde_json::Value as Json;

use super::table::BqType;
use crate::error::{Error, ErrorKind, Result};
use crate::event::Value;
use crate::event::value::format_epoch;

/// Decode one cell of a column of type `ty`. `column` names it in errors.
pub(crate) fn decode(ty: &BqType, cell: &Json, column: &str) -> Result<Value> {
    let text = match cell {
        Json::Null => return Ok(Value::Null),
        Json::String(s) => s.as_str(),
        other => return Err(bad_value(column, ty, &other.to_string(), "expected text")),
    };
    let bad = |why: &str| bad_value(column, ty, text, why);
    Ok(match ty {
        BqType::Int64 => Value::Int(text.parse().map_err(|_| bad("not an INT64"))?),
        BqType::Float64 => {
            let f: f64 = text.parse().map_err(|_| bad("not a FLOAT64"))?;
            Value::Double(finite(f, column)?)
        }
        BqType::Numeric { scale, .. } | BqType::BigNumeric { scale, .. } => {
            Value::Decimal(decimal(text, *scale).ok_or_else(|| bad("not a decimal that fits the column's scale"))?)
        }
        BqType::Bool => match text {
            "true" => Value::Int(1),
            "false" => Value::Int(0),
            _ => return Err(bad("not a BOOL")),
        },
        BqType::String { .. } | BqType::Geography => Value::Text(text.to_string()),
        BqType::Bytes { .. } => {
            Value::Bytes(base64::engine::general_purpose::STANDARD.decode(text).map_err(|_| bad("not base64 (BYTES)"))?)
        }
        BqType::Date => {
            if !is_date(text) {
                return Err(bad("not a DATE"));
            }
            Value::Date(text.to_string())
        }
        BqType::Datetime => {
            let (date, time) = text.split_once(['T', ' ']).ok_or_else(|| bad("not a DATETIME"))?;
            if !is_date(date) {
                return Err(bad("not a DATETIME"));
            }
            Value::DateTime(format!("{date} {}", time6(time).ok_or_else(|| bad("not a DATETIME"))?))
        }
        BqType::Time => Value::Time(time6(text).ok_or_else(|| bad("not a TIME"))?),
        BqType::Timestamp => {
            let micros: i64 = text.parse().map_err(|_| bad("not UNIX_MICROS of a TIMESTAMP"))?;
            Value::DateTime(format_epoch(micros.div_euclid(1_000_000), micros.rem_euclid(1_000_000) as u32, 6))
        }
        BqType::Json | BqType::Nested => Value::Json(text.to_string()),
        BqType::Other(_) => return Err(bad("a type binferry does not replicate")),
    })
}

/// A FLOAT64 that MySQL's DOUBLE can hold: no NaN or infinity.
pub(super) fn finite(f: f64, column: &str) -> Result<f64> {
    if f.is_finite() {
        return Ok(f);
    }
    Err(Error::new(
        ErrorKind::ValueRejected,
        format!("column `{column}`: FLOAT64 value {f} has no MySQL DOUBLE equivalent"),
    )
    .with_hint("MySQL stores no NaN or infinity: replace it in BigQuery (e.g. with NULL)"))
}

pub(super) fn bad_value(column: &str, ty: &BqType, text: &str, why: &str) -> Error {
    let shown: String = text.chars().take(80).collect();
    Error::new(ErrorKind::Decode, format!("column `{column}` ({}): BigQuery sent {shown:?}: {why}", ty.name()))
}

/// `YYYY-MM-DD`.
fn is_date(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 10
        && b[4] == b'-'
        && b[7] == b'-'
        && b.iter().enumerate().all(|(i, c)| i == 4 || i == 7 || c.is_ascii_digit())
}

/// `HH:MM:SS[.f…]` with exactly six fraction digits, as a `TIME(6)`/`DATETIME(6)` holds it.
fn time6(s: &str) -> Option<String> {
    let (hms, frac) = s.split_once('.').unwrap_or((s, ""));
    let b = hms.as_bytes();
    let ok = b.len() == 8
        && b[2] == b':'
        && b[5] == b':'
        && b.iter().enumerate().all(|(i, c)| i == 2 || i == 5 || c.is_ascii_digit());
    if !ok || frac.len() > 6 || !frac.bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    Some(format!("{hms}.{frac:0<6}"))
}

/// A decimal's text with exactly `scale` fraction digits (MySQL's canonical form, which the
/// row hash and the target compare). BigQuery writes NUMERIC without exponent and without
/// trailing zeros; more fraction digits than the scale cannot come from a column of that scale.
pub(super) fn decimal(text: &str, scale: u32) -> Option<String> {
    let (sign, digits) = match text.strip_prefix('-') {
        Some(rest) => ("-", rest),
        None => ("", text.strip_prefix('+').unwrap_or(text)),
    };
    let (int, frac) = digits.split_once('.').unwrap_or((digits, ""));
    let frac = frac.trim_end_matches('0');
    if int.is_empty() && frac.is_empty()
        || !int.bytes().all(|c| c.is_ascii_digit())
        || !frac.bytes().all(|c| c.is_ascii_digit())
        || frac.len() > scale as usize
    {
        return None;
    }
    let int = int.trim_start_matches('0');
    let int = if int.is_empty() { "0" } else { int };
    let zero = int == "0" && frac.is_empty();
    let sign = if zero { "" } else { sign };
    if scale == 0 {
        return Some(format!("{sign}{int}"));
    }
    Some(format!("{sign}{int}.{frac:0<width$}", width = scale as usize))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn numeric(scale: u32) -> BqType {
        BqType::Numeric { precision: 38, scale }
    }

    #[test]
    fn cells_decode_exactly() {
        let cases: Vec<(BqType, Json, Value)> = vec![
            (BqType::Int64, json!("-9223372036854775808"), Value::Int(i64::MIN)),
            (BqType::Float64, json!("0.1"), Value::Double(0.1)),
            (BqType::Float64, json!("1.0E-5"), Value::Double(1.0e-5)),
            (numeric(9), json!("1.5"), Value::Decimal("1.500000000".into())),
            (numeric(9), json!("-0.000000001"), Value::Decimal("-0.000000001".into())),
            (numeric(2), json!("-0"), Value::Decimal("0.00".into())),
            (
                numeric(0),
                json!("12345678901234567890123456789"),
                Value::Decimal("12345678901234567890123456789".into()),
            ),
            (
                BqType::BigNumeric { precision: 65, scale: 30 },
                json!("1.000000000000000000000000000001"),
                Value::Decimal("1.000000000000000000000000000001".into()),
            ),
            (BqType::Bool, json!("true"), Value::Int(1)),
            (BqType::Bool, json!("false"), Value::Int(0)),
            (BqType::String { max_length: None }, json!("grüße ☃"), Value::Text("grüße ☃".into())),
            (BqType::Bytes { max_length: None }, json!("AAH/"), Value::Bytes(vec![0, 1, 255])),
            (BqType::Date, json!("0001-01-01"), Value::Date("0001-01-01".into())),
            (BqType::Datetime, json!("2024-02-29T23:59:59"), Value::DateTime("2024-02-29 23:59:59.000000".into())),
            (BqType::Datetime, json!("2024-02-29T01:02:03.5"), Value::DateTime("2024-02-29 01:02:03.500000".into())),
            (BqType::Time, json!("23:59:59.999999"), Value::Time("23:59:59.999999".into())),
            (BqType::Timestamp, json!("1795907667348215"), Value::DateTime("2026-11-28 23:14:27.348215".into())),
            (BqType::Timestamp, json!("-1"), Value::DateTime("1969-12-31 23:59:59.999999".into())),
            (BqType::Json, json!("{\"a\":[1,2]}"), Value::Json("{\"a\":[1,2]}".into())),
            (BqType::Nested, json!("[1,2,3]"), Value::Json("[1,2,3]".into())),
            (BqType::Geography, json!("POINT(1 2)"), Value::Text("POINT(1 2)".into())),
            (BqType::Int64, Json::Null, Value::Null),
        ];
        for (ty, cell, expect) in cases {
            assert_eq!(decode(&ty, &cell, "c").unwrap(), expect, "{ty:?} {cell}");
        }
    }

    #[test]
    fn malformed_cells_are_errors_naming_the_column() {
        let cases: Vec<(BqType, Json)> = vec![
            (BqType::Int64, json!("1.5")),
            (BqType::Int64, json!(12)),
            (numeric(2), json!("1.234")),
            (numeric(2), json!("1e5")),
            (numeric(2), json!(".")),
            (BqType::Bool, json!("yes")),
            (BqType::Bytes { max_length: None }, json!("!!")),
            (BqType::Date, json!("2024-1-1")),
            (BqType::Datetime, json!("2024-01-01")),
            (BqType::Time, json!("1:02:03")),
            (BqType::Time, json!("01:02:03.1234567")),
            (BqType::Timestamp, json!("1.7e9")),
            (BqType::Other("INTERVAL".into()), json!("1-2")),
        ];
        for (ty, cell) in cases {
            let e = decode(&ty, &cell, "price").unwrap_err();
            assert!(e.to_string().contains("column `price`"), "{ty:?} {cell}: {e}");
        }
        let e = decode(&BqType::Float64, &json!("NaN"), "price").unwrap_err();
        assert_eq!(e.kind(), ErrorKind::ValueRejected);
        assert!(e.hint().is_some());
    }
}
