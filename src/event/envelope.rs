//! The versioned envelope: how a [`Record`] is stored in the buffer.
//!
//! Version 1 is JSON: `{"v":1,"r":{"change":{...}}}` or
//! `{"v":1,"r":{"commit":{...}}}`. JSON keeps the buffer readable by any tool;
//! the explicit version lets a newer binferry change the format while an older
//! one refuses such records clearly instead of misreading them.

use serde::{Deserialize, Serialize};

use super::Record;
use crate::error::{Error, ErrorKind, Result};
use crate::schema::TableSchema;

/// The envelope version this binferry writes and reads.
pub const ENVELOPE_VERSION: u32 = 1;

#[derive(Serialize)]
struct EnvelopeRef<'a> {
    v: u32,
    r: &'a Record,
}

#[derive(Deserialize)]
struct EnvelopeOwned {
    v: u32,
    r: Record,
}

#[derive(Deserialize)]
struct VersionProbe {
    v: u32,
}

/// Encode a record.
pub fn encode(record: &Record) -> Result<Vec<u8>> {
    serde_json::to_vec(&EnvelopeRef { v: ENVELOPE_VERSION, r: record })
        .map_err(|e| Error::new(ErrorKind::Internal, format!("cannot encode record: {e}")))
}

/// Decode a record; `at` names where the bytes came from for the error message.
pub fn decode(bytes: &[u8], at: &dyn std::fmt::Display) -> Result<Record> {
    match serde_json::from_slice::<EnvelopeOwned>(bytes) {
        Ok(env) if env.v == ENVELOPE_VERSION => Ok(env.r),
        Ok(env) => Err(version_error(env.v, at)),
        Err(e) => match serde_json::from_slice::<VersionProbe>(bytes) {
            Ok(p) if p.v != ENVELOPE_VERSION => Err(version_error(p.v, at)),
            _ => Err(Error::new(ErrorKind::Buffer, format!("malformed record at {at}: {e}"))
                .with_hint("the buffer holds data binferry did not write or that was damaged; restore it or resynchronise the target from a fresh snapshot")),
        },
    }
}

/// Decode a stored [`TableSchema`]; `at` names where it came from.
pub fn decode_schema(bytes: &[u8], at: &dyn std::fmt::Display) -> Result<TableSchema> {
    let bad = |why: String| Error::new(ErrorKind::Buffer, format!("unreadable schema at {at}: {why}"));
    let schema = serde_json::from_slice::<TableSchema>(bytes).map_err(|e| bad(e.to_string()))?;
    if schema.primary_key.iter().any(|&i| i >= schema.columns.len()) {
        return Err(bad("its primary key refers to a missing column".into()));
    }
    Ok(schema)
}

fn version_error(v: u32, at: &dyn std::fmt::Display) -> Error {
    Error::new(
        ErrorKind::Buffer,
        format!("record at {at} has envelope version {v}, this binferry reads version {ENVELOPE_VERSION}"),
    )
    .with_hint("run a binferry release that supports this envelope version")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{ChangeEvent, Commit, Op, SchemaChange, TableChange, Value};
    use crate::position::{Gtid, Position};
    use crate::schema::TableRef;

    fn change() -> Record {
        Record::Change(ChangeEvent {
            table: TableRef::new("shop", "orders"),
            schema_version: 7,
            op: Op::Update,
            before: Some(vec![Value::Int(1), Value::Text("a".into())]),
            after: Some(vec![Value::Int(1), Value::Bytes(vec![0, 255, 10])]),
            position: Position { file: "binlog.000001".into(), offset: 400, row: 2 },
            timestamp: 1_700_000_000,
            gtid: None,
            index: None,
        })
    }

    #[test]
    fn round_trips() {
        for r in [
            change(),
            Record::Commit(Commit {
                position: Position::new("binlog.000001", 431),
                gtid: Some(Gtid::Mariadb { domain: 0, server: 1, seq: 9 }),
                timestamp: 5,
                snapshot: false,
                consistent: Some(true),
            }),
        ] {
            let bytes = encode(&r).unwrap();
            assert_eq!(decode(&bytes, &"test").unwrap(), r);
        }
    }

    /// A sweep's shape is optional both ways: written only when set, and a record written
    /// before it existed reads as none (an older consumer ignores the field).
    #[test]
    fn a_statement_carries_its_shape_only_when_it_has_one() {
        let sweep = SchemaChange::new(
            TableRef::new("shop", "orders"),
            TableChange::Truncate,
            Position::new("binlog.000002", 1300),
            1_790_000_000,
        );
        let plain = String::from_utf8(encode(&Record::Ddl(sweep.clone())).unwrap()).unwrap();
        assert!(!plain.contains("schema_version"), "{plain}");
        let shaped = Record::Ddl(sweep.with_shape(0x2a));
        let json = String::from_utf8(encode(&shaped).unwrap()).unwrap();
        assert!(json.contains(r#""schema_version":42"#), "{json}");
        assert_eq!(decode(json.as_bytes(), &"test").unwrap(), shaped);
    }

    #[test]
    fn golden_format_v1() {
        let json = String::from_utf8(encode(&change()).unwrap()).unwrap();
        assert_eq!(
            json,
            r#"{"v":1,"r":{"change":{"table":{"db":"shop","name":"orders"},"schema_version":7,"op":"update","before":[{"int":1},{"text":"a"}],"after":[{"int":1},{"bytes":"AP8K"}],"position":{"file":"binlog.000001","offset":400,"row":2},"timestamp":1700000000}}}"#
        );
    }

    /// One record of each kind, with every optional field set, as pinned in
    /// `tests/golden/envelope-v1.jsonl` (a file, so other consumers can test against it too).
    fn golden_records() -> Vec<Record> {
        let gtid = Gtid::Mariadb { domain: 0, server: 1, seq: 42 };
        vec![
            Record::Change(ChangeEvent {
                table: TableRef::new("shop", "orders"),
                schema_version: 0x1234_5678_9abc_def0,
                op: Op::Insert,
                before: None,
                after: Some(vec![
                    Value::Int(-7),
                    Value::UInt(u64::MAX),
                    Value::Decimal("12.50".into()),
                    Value::Text("crème 🧄".into()),
                    Value::Null,
                    Value::DateTime("2026-11-22 03:04:05.123456".into()),
                    Value::Double(0.1),
                    Value::Json(r#"{"a":[1,2]}"#.into()),
                ]),
                position: Position { file: "binlog.000002".into(), offset: 1234, row: 0 },
                timestamp: 1_790_000_000,
                gtid: Some(gtid.clone()),
                index: Some(3),
            }),
            Record::Commit(Commit {
                position: Position::new("binlog.000002", 1300),
                gtid: Some(gtid),
                timestamp: 1_790_000_000,
                snapshot: false,
                consistent: None,
            }),
            Record::Commit(Commit {
                position: Position::new("binlog.000002", 1350),
                gtid: None,
                timestamp: 1_790_000_000,
                snapshot: true,
                consistent: Some(false),
            }),
            Record::Ddl(SchemaChange::new(
                TableRef::new("shop", "orders"),
                TableChange::RenameTo(TableRef::new("shop", "orders_v2")),
                Position::new("binlog.000002", 1400),
                1_790_000_001,
            )),
            Record::Ddl(SchemaChange::new(
                TableRef::new("shop", "legacy"),
                TableChange::Stop { reason: "column `c` uses character set gb18030".into() },
                Position::new("binlog.000002", 1500),
                1_790_000_002,
            )),
        ]
    }

    #[test]
    fn golden_file_v1() {
        let golden = include_str!("../../tests/golden/envelope-v1.jsonl");
        let lines: Vec<&str> = golden.lines().collect();
        let records = golden_records();
        assert_eq!(lines.len(), records.len());
        for (line, record) in lines.iter().zip(&records) {
            assert_eq!(String::from_utf8(encode(record).unwrap()).unwrap(), *line);
            assert_eq!(&decode(line.as_bytes(), &"golden").unwrap(), record);
        }
    }

    /// Any value of any variant MySQL can store (no NaN or infinity).
    fn any_value() -> impl proptest::strategy::Strategy<Value = Value> {
        use proptest::prelude::*;
        let digits = "-?[0-9]{1,35}\\.[0-9]{0,30}";
        prop_oneof![
            Just(Value::Null),
            any::<i64>().prop_map(Value::Int),
            any::<u64>().prop_map(Value::UInt),
            any::<f32>().prop_filter("finite", |f| f.is_finite()).prop_map(Value::Float),
            any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(Value::Double),
            digits.prop_map(Value::Decimal),
            any::<String>().prop_map(Value::Text),
            proptest::collection::vec(any::<u8>(), 0..300).prop_map(Value::Bytes),
            "[0-9]{4}-[0-9]{2}-[0-9]{2}".prop_map(Value::Date),
            "[0-9]{4}-[0-9]{2}-[0-9]{2} [0-9]{2}:[0-9]{2}:[0-9]{2}(\\.[0-9]{1,6})?".prop_map(Value::DateTime),
            "-?[0-9]{2,3}:[0-5][0-9]:[0-5][0-9](\\.[0-9]{1,6})?".prop_map(Value::Time),
            any::<u16>().prop_map(Value::Year),
            any::<u64>().prop_map(Value::Bit),
            any::<String>().prop_map(|s| Value::Json(serde_json::json!({ "k": s, "n": [1, 2.5] }).to_string())),
        ]
    }

    fn bits(v: &Value) -> Option<u64> {
        match v {
            Value::Float(f) => Some(f.to_bits() as u64),
            Value::Double(d) => Some(d.to_bits()),
            _ => None,
        }
    }

    proptest::proptest! {
        #[test]
        fn every_value_round_trips_bit_exact(
            before in proptest::collection::vec(any_value(), 0..12),
            after in proptest::collection::vec(any_value(), 0..12),
            seq in proptest::option::of(proptest::prelude::any::<u64>()),
            index in proptest::option::of(proptest::prelude::any::<u32>()),
        ) {
            let r = Record::Change(ChangeEvent {
                table: TableRef::new("d", "t"),
                schema_version: 1,
                op: Op::Update,
                before: Some(before.clone()),
                after: Some(after.clone()),
                position: Position::new("binlog.000001", 4),
                timestamp: 0,
                gtid: seq.map(|seq| Gtid::Mariadb { domain: 1, server: 2, seq }),
                index,
            });
            let decoded = decode(&encode(&r).unwrap(), &"prop").unwrap();
            proptest::prop_assert_eq!(&decoded, &r);
            let Record::Change(back) = decoded else { panic!("not a change") };
            let (b2, a2) = (back.before.unwrap(), back.after.unwrap());
            proptest::prop_assert_eq!(&b2, &before);
            proptest::prop_assert_eq!(&a2, &after);
            // PartialEq treats -0.0 and 0.0 alike: compare float bits too.
            for (x, y) in b2.iter().chain(&a2).zip(before.iter().chain(&after)) {
                proptest::prop_assert_eq!(bits(x), bits(y));
            }
        }
    }

    #[test]
    fn newer_versions_and_garbage_are_refused_clearly() {
        let e = decode(br#"{"v":2,"r":{"something":"new"}}"#, &"offset 5").unwrap_err();
        assert!(e.to_string().contains("envelope version 2"), "{e}");
        assert!(e.to_string().contains("offset 5"), "{e}");
        let e = decode(b"\xff\x00garbage", &"offset 6").unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Buffer);
        assert!(e.to_string().contains("malformed record at offset 6"), "{e}");
    }
}
