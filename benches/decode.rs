//! Micro-benchmark of binlog row decoding: the ROWS events of a real MariaDB binlog
//! (`fixtures/items-1000-rows.binlog`: one 1,000-row INSERT into a table of ~200-byte rows,
//! captured from the project's MariaDB 10.11) decoded to exact values by the source's own
//! code (`binferry::source::decode_rows`). Run with `cargo bench --bench decode`.

use std::io::Cursor;

use binferry::schema::{Charset, ColumnSchema, ColumnType, TableRef, TableSchema};
use binferry::source::decode_rows;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use mysql_common::binlog::BinlogFile;
use mysql_common::binlog::consts::BinlogVersion;
use mysql_common::binlog::events::{Event, EventData};

const FIXTURE: &[u8] = include_bytes!("fixtures/items-1000-rows.binlog");

/// `fx.items` as created for the fixture.
fn schema() -> TableSchema {
    let cs = Charset { name: "utf8mb4".into(), collation: "utf8mb4_general_ci".into() };
    let col = |name: &str, ty: ColumnType| ColumnSchema {
        name: name.into(),
        ty,
        nullable: false,
        default: None,
        source_type: None,
    };
    TableSchema {
        table: TableRef::new("fx", "items"),
        columns: vec![
            col("id", ColumnType::Int { bytes: 8, unsigned: false }),
            col("cat", ColumnType::Int { bytes: 4, unsigned: false }),
            col("qty", ColumnType::Int { bytes: 4, unsigned: false }),
            col("price", ColumnType::Decimal { precision: 10, scale: 2, unsigned: false }),
            col("name", ColumnType::VarChar { chars: 64, charset: cs.clone() }),
            col("note", ColumnType::VarChar { chars: 120, charset: cs }),
            col("updated_at", ColumnType::Timestamp { fsp: 6 }),
        ],
        primary_key: vec![0],
    }
}

fn decode_bench(c: &mut Criterion) {
    let events: Vec<Event> = BinlogFile::new(BinlogVersion::Version4, Cursor::new(FIXTURE))
        .expect("binlog header")
        .collect::<Result<_, _>>()
        .expect("binlog events");
    let mut tme = None;
    let mut rows = Vec::new();
    for e in &events {
        match e.read_data().expect("event data") {
            Some(EventData::TableMapEvent(t)) => tme = Some(t.into_owned()),
            Some(EventData::RowsEvent(r)) => rows.push(r),
            _ => {}
        }
    }
    let tme = tme.expect("a TABLE_MAP event in the fixture");
    let schema = schema();
    let decoded: usize = rows.iter().map(|r| decode_rows(r, &tme, &schema).expect("decodes").len()).sum();
    assert_eq!(decoded, 1000, "the fixture holds 1,000 rows");
    let bytes: usize = rows.iter().map(|r| r.rows_data().len()).sum();

    let mut g = c.benchmark_group("binlog_decode");
    g.throughput(Throughput::Elements(decoded as u64));
    g.bench_function("1000_rows_of_200_bytes", |b| {
        b.iter(|| rows.iter().map(|r| decode_rows(r, &tme, &schema).unwrap().len()).sum::<usize>())
    });
    g.finish();
    let mut g = c.benchmark_group("binlog_decode_bytes");
    g.throughput(Throughput::Bytes(bytes as u64));
    g.bench_function("1000_rows_of_200_bytes", |b| {
        b.iter(|| rows.iter().map(|r| decode_rows(r, &tme, &schema).unwrap().len()).sum::<usize>())
    });
    g.finish();
}

criterion_group!(benches, decode_bench);
criterion_main!(benches);
