//! Column values as insertAll JSON, exactly (see `docs/types.md`).
//!
//! Decimals and 64-bit unsigned integers travel as strings, never as JSON numbers, so no
//! parser on the way rounds them through a double. FLOAT goes as its shortest decimal form
//! (what MySQL shows for it), DOUBLE bit-exact. MySQL's zero dates (`0000-00-00`), which no
//! BigQuery temporal type can hold, become NULL.

use base64::Engine;
use serde_json::{Map, Value as Json};

use super::sql::{APPENDED_AT, BATCH, DELETED_AT, HASH, OP, POS, STREAM, column_name};
use super::types::BqType;
use crate::error::{Error, ErrorKind, Result};
use crate::event::Value;
use crate::event::batch::RowOp;
use crate::event::value::format_epoch;
use crate::schema::TableSchema;

fn b64(b: &[u8]) -> Json {
    Json::String(base64::engine::general_purpose::STANDARD.encode(b))
}

/// Whether a MySQL date/datetime text is a zero or partly-zero date, which no BigQuery
/// temporal type holds: it is written as NULL.
pub(super) fn zero_date(s: &str) -> bool {
    s.starts_with("0000-") || s.get(5..7) == Some("00") || s.get(8..10) == Some("00")
}

/// One value for a column of BigQuery type `ty`.
pub fn json_value(v: &Value, ty: &BqType) -> Json {
    let numeric = matches!(ty, BqType::Numeric { .. } | BqType::BigNumeric { .. } | BqType::String);
    match v {
        Value::Null => Json::Null,
        Value::Int(i) if numeric => Json::String(i.to_string()),
        Value::Int(i) => Json::from(*i),
        Value::UInt(u) | Value::Bit(u) if numeric || *u > i64::MAX as u64 => Json::String(u.to_string()),
        Value::UInt(u) | Value::Bit(u) => Json::from(*u),
        Value::Year(y) => Json::from(*y),
        Value::Float(f) => f.to_string().parse::<f64>().map(Json::from).unwrap_or(Json::Null),
        Value::Double(d) => serde_json::Number::from_f64(*d).map(Json::Number).unwrap_or(Json::Null),
        Value::Decimal(s) | Value::Text(s) | Value::Time(s) | Value::Json(s) => Json::String(s.clone()),
        Value::Bytes(b) if matches!(ty, BqType::String) => Json::String(String::from_utf8_lossy(b).into_owned()),
        Value::Bytes(b) => b64(b),
        Value::Date(s) | Value::DateTime(s) if zero_date(s) => Json::Null,
        Value::Date(s) | Value::DateTime(s) => Json::String(s.clone()),
    }
}

/// Everything a changelog row needs besides the change itself.
pub struct RowContext<'a> {
    pub stream: &'a str,
    pub batch: i64,
    pub appended_at: &'a str,
}

/// Now, as a TIMESTAMP text.
pub fn now_text() -> String {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    format_epoch(now.as_secs() as i64, now.subsec_micros(), 6)
}

/// The changelog row of one operation, with its insert id.
pub fn changelog_row(
    op: &RowOp,
    schema: &TableSchema,
    types: &[BqType],
    ctx: &RowContext<'_>,
) -> Result<(String, Json)> {
    let mut obj = Map::with_capacity(schema.columns.len() + 7);
    let pos = op.position().sort_key()?;
    let mut id = blake3::Hasher::new();
    // The table too: snapshot rows of different tables share positions (and often keys).
    id.update(ctx.stream.as_bytes());
    id.update(schema.table.key().as_bytes());
    id.update(&pos);
    let (values, kind): (&[Value], &str) = match op {
        RowOp::Upsert { row, hash, copied, .. } => {
            obj.insert(HASH.into(), b64(hash));
            (row, if *copied { "C" } else { "U" })
        }
        RowOp::Delete { before, timestamp, .. } => {
            obj.insert(DELETED_AT.into(), Json::String(format_epoch(*timestamp as i64, 0, 0)));
            (before, "D")
        }
    };
    // A key BigQuery cannot hold exactly would match no row (NULL never equals NULL) or the
    // wrong one: the table stops instead of losing the row.
    for (&i, v) in schema.primary_key.iter().zip(op.key(schema)) {
        if let (Value::Date(s) | Value::DateTime(s), Some(c)) = (v, schema.columns.get(i))
            && zero_date(s)
        {
            return Err(Error::new(
                ErrorKind::ValueRejected,
                format!(
                    "{}: primary-key column `{}` holds the date {s}, which no BigQuery date or timestamp can hold",
                    schema.table, c.name
                ),
            )
            .with_hint(
                "give the row a real date in the source (or exclude the table, or replicate it to a MySQL target); \
                 then bring the table back with `binferry resync --table <db.table>`",
            ));
        }
    }
    if values.len() == schema.columns.len() {
        for ((c, v), ty) in schema.columns.iter().zip(values).zip(types) {
            obj.insert(column_name(&c.name), json_value(v, ty));
        }
    } else if let RowOp::Delete { key, .. } = op {
        // No full before image: the key is enough for a hard delete.
        for (&i, v) in schema.primary_key.iter().zip(key) {
            if let (Some(c), Some(ty)) = (schema.columns.get(i), types.get(i)) {
                obj.insert(column_name(&c.name), json_value(v, ty));
            }
        }
    }
    for &i in &schema.primary_key {
        if let Some(v) = schema.columns.get(i).and_then(|c| obj.get(&column_name(&c.name))) {
            id.update(v.to_string().as_bytes());
        }
    }
    obj.insert(POS.into(), b64(&pos));
    obj.insert(OP.into(), Json::String(kind.into()));
    obj.insert(STREAM.into(), Json::String(ctx.stream.into()));
    obj.insert(BATCH.into(), Json::from(ctx.batch));
    obj.insert(APPENDED_AT.into(), Json::String(ctx.appended_at.into()));
    // The same change appended twice (a retry after a crash) has the same id: BigQuery drops
    // the copy when it can, and the MERGE ignores it when it cannot.
    Ok((id.finalize().to_hex()[..32].to_string(), Json::Object(obj)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_numbers_travel_as_strings() {
        let n20 = BqType::Numeric { precision: 20, scale: 0 };
        assert_eq!(json_value(&Value::UInt(u64::MAX), &n20), Json::String("18446744073709551615".into()));
        assert_eq!(json_value(&Value::UInt(7), &BqType::Int64), Json::from(7));
        assert_eq!(json_value(&Value::Int(-7), &n20), Json::String("-7".into()));
        let dec = BqType::BigNumeric { precision: 65, scale: 30 };
        assert_eq!(json_value(&Value::Decimal("-1.500".into()), &dec), Json::String("-1.500".into()));
        assert_eq!(json_value(&Value::Float(0.1), &BqType::Float64), Json::from(0.1f64));
        assert_eq!(json_value(&Value::Double(0.1 + 0.2), &BqType::Float64), Json::from(0.1f64 + 0.2));
    }

    #[test]
    fn zero_dates_become_null_and_bytes_base64() {
        assert_eq!(json_value(&Value::Date("0000-00-00".into()), &BqType::Date), Json::Null);
        assert_eq!(json_value(&Value::DateTime("2024-00-10 00:00:00".into()), &BqType::DateTime), Json::Null);
        assert_eq!(
            json_value(&Value::DateTime("2024-02-29 23:59:59.000001".into()), &BqType::DateTime),
            Json::String("2024-02-29 23:59:59.000001".into())
        );
        assert_eq!(json_value(&Value::Bytes(vec![0, 255]), &BqType::Bytes), Json::String("AP8=".into()));
    }
}
