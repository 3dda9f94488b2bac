//! Arrow record batches of the Storage Read API decoded into the same exact [`Value`]s as
//! [`super::values`] decodes REST cells into (an emulator test reads a table of every such
//! type both ways and compares value by value).
//!
//! Whole-table reads (a first copy, a resync, a table beyond time travel, `verify`) go this
//! way when `source.bigquery.storage_endpoint` is set (a round's only when the server
//! confirms the round's snapshot time, see [`super::round::Moment`]): measured side by side
//! on a 1M-row table, REST paging takes 27 s to deliver what a read session delivers in 1 s
//! (BENCHMARKS.md). Only tables whose every column has an Arrow form with REST's exact value
//! are read so ([`readable`]): JSON, ARRAY and STRUCT travel over REST as BigQuery's own
//! `TO_JSON_STRING` text and GEOGRAPHY as `ST_ASTEXT`, which a read session does not produce,
//! so a table with one of those is read over REST.
//!
//! A read session sends a stream's rows in large batches (the emulator: all at once, ~55 MB
//! for 1M rows); the batch is kept in its columnar form and turned into rows a page at a time.

use arrow_array::cast::AsArray;
use arrow_array::types::{
    Date32Type, Date64Type, Decimal128Type, Decimal256Type, Float64Type, Int64Type, Time64MicrosecondType,
    Time64NanosecondType, TimestampMicrosecondType, TimestampNanosecondType,
};
use arrow_array::{Array, RecordBatch};
use arrow_buffer::Buffer;
use arrow_ipc::reader::StreamDecoder;
use arrow_schema::{DataType, TimeUnit};

use super::table::{BqTable, BqType};
use super::values::{bad_value, decimal, finite};
use crate::error::{Error, ErrorKind, Result};
use crate::event::Value;
use crate::event::value::format_epoch;

/// Whether every column of `table` has an Arrow form whose value equals the REST one.
pub(crate) fn readable(table: &BqTable) -> bool {
    table.columns.iter().all(|c| c.ty.is_scalar())
}

/// Rows of one table's read session, from its IPC messages.
pub(crate) struct ArrowRows {
    decoder: StreamDecoder,
    /// For each table column, its index in the session's Arrow schema.
    positions: Vec<usize>,
    batch: Option<RecordBatch>,
    /// Rows of `batch` already returned.
    offset: usize,
}

impl ArrowRows {
    /// Start from the session's schema message; every column of `table` must be in it.
    /// `None` when a column's Arrow type cannot carry its values exactly: the emulator sends
    /// BIGNUMERIC as decimal128(38, 18), rounded beyond 18 fraction digits (BigQuery sends
    /// decimal256(76, 38)); such a table is read over REST.
    pub(crate) fn new(table: &BqTable, schema: Vec<u8>) -> Result<Option<Self>> {
        let arrow = arrow_ipc::convert::try_schema_from_ipc_buffer(&schema)
            .map_err(|e| malformed(table, &format!("its Arrow schema: {e}")))?;
        // The decoder takes the schema message too (it completes it with the first batch).
        let mut decoder = StreamDecoder::new();
        let mut buffer = Buffer::from(schema);
        decoder.decode(&mut buffer).map_err(|e| malformed(table, &format!("its Arrow schema: {e}")))?;
        let positions = table
            .columns
            .iter()
            .map(|c| {
                arrow.index_of(&c.name).map_err(|_| malformed(table, &format!("no column `{}` in the session", c.name)))
            })
            .collect::<Result<Vec<_>>>()?;
        let exact = table.columns.iter().zip(&positions).all(|(c, &at)| match (&c.ty, arrow.field(at).data_type()) {
            (BqType::Numeric { scale, .. } | BqType::BigNumeric { scale, .. }, DataType::Decimal128(_, s))
            | (BqType::Numeric { scale, .. } | BqType::BigNumeric { scale, .. }, DataType::Decimal256(_, s)) => {
                i64::from(*s) >= i64::from(*scale)
            }
            _ => true,
        });
        Ok(exact.then_some(ArrowRows { decoder, positions, batch: None, offset: 0 }))
    }

    /// Take the next record batch message; the rows of the one before must all be taken.
    pub(crate) fn push(&mut self, table: &BqTable, message: Vec<u8>) -> Result<()> {
        let mut buffer = Buffer::from(message);
        let mut batch = None;
        while !buffer.is_empty() {
            match self.decoder.decode(&mut buffer).map_err(|e| malformed(table, &format!("a record batch: {e}")))? {
                Some(b) if batch.is_none() => batch = Some(b),
                Some(_) => return Err(malformed(table, "two record batches in one message")),
                None => {}
            }
        }
        self.batch = batch;
        self.offset = 0;
        Ok(())
    }

    /// Up to `max` more rows of the current batch, each in table column order; `None` when
    /// it has no more (push the next message).
    pub(crate) fn page(&mut self, table: &BqTable, max: usize) -> Result<Option<Vec<Vec<Value>>>> {
        let Some(batch) = &self.batch else { return Ok(None) };
        if self.offset >= batch.num_rows() {
            self.batch = None;
            return Ok(None);
        }
        let end = (self.offset + max).min(batch.num_rows());
        let mut rows: Vec<Vec<Value>> = (self.offset..end).map(|_| Vec::with_capacity(self.positions.len())).collect();
        for (column, &at) in table.columns.iter().zip(&self.positions) {
            let array = batch.column(at);
            for (row, out) in (self.offset..end).zip(rows.iter_mut()) {
                out.push(
                    value(&column.ty, array.as_ref(), row, &column.name)
                        .map_err(|e| e.with_table(table.table_ref()))?,
                );
            }
        }
        self.offset = end;
        Ok(Some(rows))
    }
}

fn malformed(table: &BqTable, what: &str) -> Error {
    Error::new(
        ErrorKind::Decode,
        format!("BigQuery table {}.{}: the Storage Read API sent {what}", table.dataset, table.name),
    )
    .with_hint("unset source.bigquery.storage_endpoint to read the table over REST, and report the message above")
}

/// Row `row` of `array`, a column of type `ty` named `column`, as REST's cell would decode.
fn value(ty: &BqType, array: &dyn Array, row: usize, column: &str) -> Result<Value> {
    if array.is_null(row) {
        return Ok(Value::Null);
    }
    let unexpected = || {
        Error::new(
            ErrorKind::Decode,
            format!("column `{column}` ({}): the Storage Read API sent Arrow {}", ty.name(), array.data_type()),
        )
        .with_hint("unset source.bigquery.storage_endpoint to read the table over REST, and report the message above")
    };
    Ok(match (ty, array.data_type()) {
        (BqType::Int64, DataType::Int64) => Value::Int(array.as_primitive::<Int64Type>().value(row)),
        (BqType::Float64, DataType::Float64) => {
            let f = array.as_primitive::<Float64Type>().value(row);
            Value::Double(finite(f, column)?)
        }
        (BqType::Numeric { scale, .. } | BqType::BigNumeric { scale, .. }, DataType::Decimal128(..)) => {
            let text = array.as_primitive::<Decimal128Type>().value_as_string(row);
            Value::Decimal(
                decimal(&text, *scale)
                    .ok_or_else(|| bad_value(column, ty, &text, "not a decimal that fits the column's scale"))?,
            )
        }
        (BqType::Numeric { scale, .. } | BqType::BigNumeric { scale, .. }, DataType::Decimal256(..)) => {
            let text = array.as_primitive::<Decimal256Type>().value_as_string(row);
            Value::Decimal(
                decimal(&text, *scale)
                    .ok_or_else(|| bad_value(column, ty, &text, "not a decimal that fits the column's scale"))?,
            )
        }
        (BqType::Bool, DataType::Boolean) => Value::Int(i64::from(array.as_boolean().value(row))),
        (BqType::String { .. }, DataType::Utf8) => Value::Text(array.as_string::<i32>().value(row).to_string()),
        (BqType::String { .. }, DataType::LargeUtf8) => Value::Text(array.as_string::<i64>().value(row).to_string()),
        (BqType::String { .. }, DataType::Utf8View) => Value::Text(array.as_string_view().value(row).to_string()),
        (BqType::Bytes { .. }, DataType::Binary) => Value::Bytes(array.as_binary::<i32>().value(row).to_vec()),
        (BqType::Bytes { .. }, DataType::LargeBinary) => Value::Bytes(array.as_binary::<i64>().value(row).to_vec()),
        (BqType::Bytes { .. }, DataType::BinaryView) => Value::Bytes(array.as_binary_view().value(row).to_vec()),
        (BqType::Date, DataType::Date32) => {
            let days = i64::from(array.as_primitive::<Date32Type>().value(row));
            Value::Date(date_part(&format_epoch(days * 86_400, 0, 0)))
        }
        (BqType::Date, DataType::Date64) => {
            let ms = array.as_primitive::<Date64Type>().value(row);
            Value::Date(date_part(&format_epoch(ms.div_euclid(1_000), 0, 0)))
        }
        (BqType::Time, DataType::Time64(TimeUnit::Microsecond)) => {
            time_of_day(array.as_primitive::<Time64MicrosecondType>().value(row))
        }
        (BqType::Time, DataType::Time64(TimeUnit::Nanosecond)) => {
            time_of_day(array.as_primitive::<Time64NanosecondType>().value(row).div_euclid(1_000))
        }
        (BqType::Datetime | BqType::Timestamp, DataType::Timestamp(TimeUnit::Microsecond, _)) => {
            epoch_micros(array.as_primitive::<TimestampMicrosecondType>().value(row))
        }
        (BqType::Datetime | BqType::Timestamp, DataType::Timestamp(TimeUnit::Nanosecond, _)) => {
            epoch_micros(array.as_primitive::<TimestampNanosecondType>().value(row).div_euclid(1_000))
        }
        _ => return Err(unexpected()),
    })
}

/// `YYYY-MM-DD` of `format_epoch`'s `YYYY-MM-DD HH:MM:SS`.
fn date_part(datetime: &str) -> String {
    datetime.split(' ').next().unwrap_or(datetime).to_string()
}

/// `HH:MM:SS.ffffff` of a time of day in µs.
fn time_of_day(micros: i64) -> Value {
    let text = format_epoch(micros.div_euclid(1_000_000), micros.rem_euclid(1_000_000) as u32, 6);
    Value::Time(text.split(' ').nth(1).unwrap_or(&text).to_string())
}

/// `YYYY-MM-DD HH:MM:SS.ffffff` of µs since the epoch, as REST's TIMESTAMP and DATETIME.
fn epoch_micros(micros: i64) -> Value {
    Value::DateTime(format_epoch(micros.div_euclid(1_000_000), micros.rem_euclid(1_000_000) as u32, 6))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow_array::{
        ArrayRef, BinaryArray, BooleanArray, Date32Array, Decimal128Array, Float64Array, Int64Array, StringArray,
        Time64MicrosecondArray, TimestampMicrosecondArray,
    };

    use super::*;
    use crate::source::bigquery::values::decode;

    /// Each Arrow value decodes to what the REST cell of the same value decodes to.
    #[test]
    fn arrow_values_equal_rest_values() {
        let numeric = BqType::Numeric { precision: 10, scale: 2 };
        let cases: Vec<(BqType, ArrayRef, &str)> = vec![
            (BqType::Int64, Arc::new(Int64Array::from(vec![-42])), "-42"),
            (BqType::Float64, Arc::new(Float64Array::from(vec![0.1])), "0.1"),
            (
                numeric.clone(),
                Arc::new(Decimal128Array::from(vec![12_340_000_000]).with_precision_and_scale(38, 9).unwrap()),
                "12.34",
            ),
            (
                numeric.clone(),
                Arc::new(Decimal128Array::from(vec![-5_000_000_000]).with_precision_and_scale(38, 9).unwrap()),
                "-5",
            ),
            (BqType::Bool, Arc::new(BooleanArray::from(vec![true])), "true"),
            (BqType::String { max_length: None }, Arc::new(StringArray::from(vec!["tête"])), "tête"),
            (BqType::Bytes { max_length: None }, Arc::new(BinaryArray::from(vec![&b"\x00\xff"[..]])), "AP8="),
            (BqType::Date, Arc::new(Date32Array::from(vec![-719_162])), "0001-01-01"),
            (BqType::Date, Arc::new(Date32Array::from(vec![2_932_896])), "9999-12-31"),
            (BqType::Time, Arc::new(Time64MicrosecondArray::from(vec![86_399_999_999])), "23:59:59.999999"),
            (
                BqType::Datetime,
                Arc::new(TimestampMicrosecondArray::from(vec![1_700_000_000_123_456])),
                "2023-11-14T22:13:20.123456",
            ),
            (BqType::Timestamp, Arc::new(TimestampMicrosecondArray::from(vec![-1]).with_timezone("UTC")), "-1"),
        ];
        for (ty, array, rest) in cases {
            let want = decode(&ty, &serde_json::Value::String(rest.into()), "c").unwrap();
            assert_eq!(value(&ty, array.as_ref(), 0, "c").unwrap(), want, "{ty:?} {rest}");
        }
    }

    #[test]
    fn what_rest_refuses_arrow_refuses() {
        let nan: ArrayRef = Arc::new(Float64Array::from(vec![f64::NAN]));
        assert_eq!(value(&BqType::Float64, nan.as_ref(), 0, "c").unwrap_err().kind(), ErrorKind::ValueRejected);
        // More fraction digits than the column's scale.
        let fine: ArrayRef = Arc::new(Decimal128Array::from(vec![1_234]).with_precision_and_scale(38, 3).unwrap());
        let e = value(&BqType::Numeric { precision: 10, scale: 2 }, fine.as_ref(), 0, "c").unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Decode, "{e}");
        // An Arrow type that is not the column's.
        let text: ArrayRef = Arc::new(StringArray::from(vec!["1"]));
        let e = value(&BqType::Int64, text.as_ref(), 0, "c").unwrap_err();
        assert!(e.to_string().contains("Arrow Utf8"), "{e}");
        let null: ArrayRef = Arc::new(Int64Array::from(vec![None]));
        assert_eq!(value(&BqType::Int64, null.as_ref(), 0, "c").unwrap(), Value::Null);
    }
}
