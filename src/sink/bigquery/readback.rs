//! A BigQuery row read back as the writer's values, so that `binferry verify` compares what
//! the target *holds* with the source, not only the hash binferry stored beside it: a value
//! changed by hand in BigQuery, with `_binferry_hash` left alone, shows as drift.
//!
//! The mapping inverts [`super::rows::json_value`] column type by column type. Two things the
//! write does not keep are put in the same form on both sides instead ([`as_held`]): MySQL's
//! zero dates, which BigQuery holds as NULL, and JSON documents, which BigQuery stores
//! normalised (key order, spacing, `1.0` as `1`). A cell that does not read back as a value
//! of its column makes its row differ, which is what it is: not what binferry wrote.
//!
//! Pure: the reading is `hashes.rs`.

use base64::Engine;

use super::rows::zero_date;
use super::sql::column_name;
use crate::event::Value;
use crate::event::value::{format_datetime, format_epoch};
use crate::mysql_codec::normalize_decimal;
use crate::schema::{ColumnSchema, ColumnType};

/// The SELECT expression that reads column `col` back: its own text, except TIMESTAMP, whose
/// text differs between BigQuery's REST answers (seconds as a float) and is read as exact
/// microseconds instead.
pub(super) fn select_expr(col: &ColumnSchema) -> String {
    let name = super::sql::ident(&column_name(&col.name));
    match col.ty {
        ColumnType::Timestamp { .. } => format!("CAST(UNIX_MICROS({name}) AS STRING)"),
        _ => name,
    }
}

/// The writer's value of one cell of a column of type `ty` (its text as
/// [`select_expr`] reads it), in the form [`as_held`] gives the source's value; `None` when
/// the text is no value the writer could have written.
pub(super) fn value_of(ty: &ColumnType, cell: Option<&str>) -> Option<Value> {
    let Some(text) = cell else { return Some(Value::Null) };
    Some(match ty {
        ColumnType::Int { unsigned: true, .. } => Value::UInt(text.parse().ok()?),
        ColumnType::Int { .. } => Value::Int(text.parse().ok()?),
        ColumnType::Year => Value::Year(text.parse().ok()?),
        ColumnType::Bit { .. } => Value::Bit(text.parse().ok()?),
        ColumnType::Decimal { scale, .. } => Value::Decimal(normalize_decimal(&plain_decimal(text)?, *scale)?),
        // The writer sent FLOAT's shortest decimal form as a FLOAT64: that double's text reads
        // back as the same float.
        ColumnType::Float { .. } => Value::Float(finite(text.parse().ok()?)?),
        ColumnType::Double { .. } => Value::Double(finite(text.parse().ok()?)?),
        ColumnType::Date => Value::Date(date(text)?),
        ColumnType::DateTime { fsp } => Value::DateTime(datetime(text, *fsp)?),
        ColumnType::Timestamp { fsp } => {
            let micros: i64 = text.parse().ok()?;
            let secs = micros.div_euclid(1_000_000);
            Value::DateTime(format_epoch(secs, micros.rem_euclid(1_000_000) as u32, *fsp))
        }
        ColumnType::Time { .. } => Value::Time(text.to_string()),
        ColumnType::Char { .. }
        | ColumnType::VarChar { .. }
        | ColumnType::Text { .. }
        | ColumnType::Enum { .. }
        | ColumnType::Set { .. }
        | ColumnType::Uuid
        | ColumnType::Inet4
        | ColumnType::Inet6 => Value::Text(text.to_string()),
        ColumnType::Binary { .. } | ColumnType::VarBinary { .. } | ColumnType::Blob { .. } | ColumnType::Geometry => {
            Value::Bytes(base64::engine::general_purpose::STANDARD.decode(text).ok()?)
        }
        ColumnType::Json => Value::Json(canonical_json(text)),
    })
}

/// The source's value `v` of a column of type `ty` as BigQuery holds it: a zero date is NULL
/// there, and a JSON document is compared in its canonical form.
pub fn as_held(ty: &ColumnType, v: Value) -> Value {
    match v {
        Value::Date(s) | Value::DateTime(s) if zero_date(&s) => Value::Null,
        Value::Json(s) if matches!(ty, ColumnType::Json) => Value::Json(canonical_json(&s)),
        v => v,
    }
}

/// A decimal's text without an exponent (`1.5E-7` → `0.00000015`), shifted exactly, digit by
/// digit: never through a float.
fn plain_decimal(text: &str) -> Option<String> {
    let Some((mantissa, exp)) = text.split_once(['e', 'E']) else { return Some(text.to_string()) };
    let exp: i32 = exp.parse().ok()?;
    let (sign, digits) = match mantissa.strip_prefix('-') {
        Some(rest) => ("-", rest),
        None => ("", mantissa.strip_prefix('+').unwrap_or(mantissa)),
    };
    let (int, frac) = digits.split_once('.').unwrap_or((digits, ""));
    let all = format!("{int}{frac}");
    if all.is_empty() || !all.bytes().all(|b| b.is_ascii_digit()) || exp.unsigned_abs() > 100 {
        return None;
    }
    // Where the point goes, counted in `all`'s digits from its left.
    let point = int.len() as i32 + exp;
    Some(if point <= 0 {
        format!("{sign}0.{}{all}", "0".repeat(point.unsigned_abs() as usize))
    } else if point as usize >= all.len() {
        format!("{sign}{all}{}", "0".repeat(point as usize - all.len()))
    } else {
        let (a, b) = all.split_at(point as usize);
        format!("{sign}{a}.{b}")
    })
}

fn finite<F: Into<f64> + Copy>(f: F) -> Option<F> {
    f.into().is_finite().then_some(f)
}

/// `YYYY-MM-DD`, checked.
fn date(text: &str) -> Option<String> {
    let (y, m, d) = ymd(text)?;
    Some(format!("{y:04}-{m:02}-{d:02}"))
}

fn ymd(text: &str) -> Option<(i64, u8, u8)> {
    let mut parts = text.splitn(3, '-');
    let y = parts.next()?.parse().ok()?;
    let m = parts.next()?.parse().ok()?;
    let d = parts.next()?.parse().ok()?;
    Some((y, m, d))
}

/// BigQuery's DATETIME text (`YYYY-MM-DD[T ]HH:MM:SS[.f]`, as many fraction digits as it
/// likes) in MySQL's form with exactly `fsp` of them.
fn datetime(text: &str, fsp: u8) -> Option<String> {
    let (day, time) = text.split_once(['T', ' '])?;
    let (y, mo, d) = ymd(day)?;
    let (hms, frac) = time.split_once('.').unwrap_or((time, ""));
    let mut hms = hms.splitn(3, ':');
    let h = hms.next()?.parse().ok()?;
    let mi = hms.next()?.parse().ok()?;
    let s = hms.next()?.parse().ok()?;
    if frac.len() > 6 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let us = format!("{frac:0<6}").parse().ok()?;
    // A fraction finer than the column's cannot have come from the writer.
    if fsp < 6 && us % 10u32.pow(6 - fsp as u32) != 0 {
        return None;
    }
    Some(format_datetime(y, mo, d, h, mi, s, us, fsp))
}

/// A JSON document in one form whatever wrote it: keys sorted, no spaces, and a number with
/// no fraction written as an integer (BigQuery keeps `1.0` as `1`). Text that is not JSON is
/// kept as it is.
fn canonical_json(text: &str) -> String {
    fn canonical(v: serde_json::Value) -> serde_json::Value {
        use serde_json::Value as J;
        match v {
            J::Number(n) => match n.as_f64() {
                Some(f) if n.is_f64() && f.fract() == 0.0 && f.abs() < 9.007_199_254_740_992e15 => J::from(f as i64),
                _ => J::Number(n),
            },
            J::Array(a) => J::Array(a.into_iter().map(canonical).collect()),
            // serde_json's map is ordered by key.
            J::Object(o) => J::Object(o.into_iter().map(|(k, v)| (k, canonical(v))).collect()),
            other => other,
        }
    }
    match serde_json::from_str::<serde_json::Value>(text) {
        Ok(v) => canonical(v).to_string(),
        Err(_) => text.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::Charset;

    fn text() -> ColumnType {
        ColumnType::VarChar { chars: 10, charset: Charset { name: "utf8mb4".into(), collation: "utf8mb4_bin".into() } }
    }

    /// (column type, the text BigQuery answers, the writer's value) for every column type.
    #[test]
    fn every_column_type_reads_back_as_the_writers_value() {
        let cases: Vec<(ColumnType, Option<&str>, Option<Value>)> = vec![
            (ColumnType::Int { bytes: 4, unsigned: false }, Some("-7"), Some(Value::Int(-7))),
            (ColumnType::Int { bytes: 8, unsigned: true }, Some("18446744073709551615"), Some(Value::UInt(u64::MAX))),
            (ColumnType::Int { bytes: 4, unsigned: false }, Some("x"), None),
            (ColumnType::Int { bytes: 4, unsigned: false }, None, Some(Value::Null)),
            (ColumnType::Year, Some("2024"), Some(Value::Year(2024))),
            (ColumnType::Bit { bits: 64 }, Some("18446744073709551615"), Some(Value::Bit(u64::MAX))),
            // BigQuery drops a NUMERIC's trailing zeros; MySQL's form has the column's scale.
            (dec(10, 2), Some("1.5"), Some(Value::Decimal("1.50".into()))),
            (dec(10, 2), Some("-0.5"), Some(Value::Decimal("-0.50".into()))),
            (dec(10, 0), Some("12"), Some(Value::Decimal("12".into()))),
            (dec(10, 2), Some("1.505"), None),
            // An exponent form, as a JSON number may come: shifted exactly.
            (dec(38, 18), Some("1.5E-7"), Some(Value::Decimal("0.000000150000000000".into()))),
            (dec(65, 0), Some("9.99E+2"), Some(Value::Decimal("999".into()))),
            (dec(10, 2), Some("-2.5e1"), Some(Value::Decimal("-25.00".into()))),
            (ColumnType::Float { unsigned: false }, Some("0.1"), Some(Value::Float(0.1))),
            (ColumnType::Double { unsigned: false }, Some("0.30000000000000004"), Some(Value::Double(0.1 + 0.2))),
            (ColumnType::Double { unsigned: false }, Some("1E300"), Some(Value::Double(1e300))),
            (ColumnType::Date, Some("2024-02-29"), Some(Value::Date("2024-02-29".into()))),
            (ColumnType::DateTime { fsp: 0 }, Some("2024-02-29T23:59:58"), Some(dt("2024-02-29 23:59:58"))),
            (ColumnType::DateTime { fsp: 3 }, Some("2024-02-29T23:59:58.12"), Some(dt("2024-02-29 23:59:58.120"))),
            (ColumnType::DateTime { fsp: 6 }, Some("2024-02-29 00:00:00"), Some(dt("2024-02-29 00:00:00.000000"))),
            // Finer than the column: not written by binferry.
            (ColumnType::DateTime { fsp: 0 }, Some("2024-02-29T23:59:58.5"), None),
            (ColumnType::Timestamp { fsp: 6 }, Some("1709251198000001"), Some(dt("2024-02-29 23:59:58.000001"))),
            (ColumnType::Timestamp { fsp: 0 }, Some("-1000000"), Some(dt("1969-12-31 23:59:59"))),
            (ColumnType::Time { fsp: 1 }, Some("-838:59:59.0"), Some(Value::Time("-838:59:59.0".into()))),
            (text(), Some("grüße"), Some(Value::Text("grüße".into()))),
            (
                ColumnType::Uuid,
                Some("00000000-0000-0000-0000-000000000001"),
                Some(Value::Text("00000000-0000-0000-0000-000000000001".into())),
            ),
            (ColumnType::Binary { bytes: 3 }, Some("AAEA"), Some(Value::Bytes(vec![0, 1, 0]))),
            (ColumnType::Blob { length_bytes: 2 }, Some("not base64!"), None),
            (ColumnType::Json, Some(r#"{"b":[1,2.5],"a":1}"#), Some(Value::Json(r#"{"a":1,"b":[1,2.5]}"#.into()))),
        ];
        for (ty, cell, want) in cases {
            assert_eq!(value_of(&ty, cell), want, "{ty:?} {cell:?}");
        }
    }

    #[test]
    fn the_sources_values_take_the_form_bigquery_holds() {
        let date = ColumnType::Date;
        assert_eq!(as_held(&date, Value::Date("0000-00-00".into())), Value::Null);
        assert_eq!(as_held(&date, Value::Date("2024-00-01".into())), Value::Null);
        assert_eq!(as_held(&date, Value::Date("2024-01-01".into())), Value::Date("2024-01-01".into()));
        let zero = Value::DateTime("0000-00-00 00:00:00".into());
        assert_eq!(as_held(&ColumnType::Timestamp { fsp: 0 }, zero), Value::Null);
        // MySQL's and BigQuery's forms of one document meet.
        let mysql = as_held(&ColumnType::Json, Value::Json(r#"{"b": [1, 2.0], "a": "x"}"#.into()));
        let bigquery = value_of(&ColumnType::Json, Some(r#"{"a":"x","b":[1,2]}"#));
        assert_eq!(Some(mysql), bigquery);
        assert_eq!(as_held(&text(), Value::Text(" a ".into())), Value::Text(" a ".into()));
    }

    fn dec(precision: u8, scale: u8) -> ColumnType {
        ColumnType::Decimal { precision, scale, unsigned: false }
    }

    fn dt(s: &str) -> Value {
        Value::DateTime(s.into())
    }
}
