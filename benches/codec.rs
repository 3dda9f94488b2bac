//! Micro-benchmarks of the per-row hot paths: envelope encode/decode, row hashing, and
//! batch compaction, per row and per MB. Run with `cargo bench --bench codec`; results go
//! in BENCHMARKS.md. Binlog row decoding is in `benches/decode.rs`.

use std::sync::Arc;

use binferry::event::hash::row_hash;
use binferry::event::{ChangeEvent, Op, Record, Value, envelope};
use binferry::position::Position;
use binferry::schema::{Charset, ColumnSchema, ColumnType, TableRef, TableSchema};
use binferry::writer::Batch;
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};

/// A ~200-byte row like the end-to-end benchmark's: ids, text, decimal, double, datetime.
fn row(i: i64) -> Vec<Value> {
    vec![
        Value::Int(i),
        Value::Text(format!("recipe number {i} with a reasonably long name")),
        Value::UInt(4),
        Value::Decimal("1234.56".into()),
        Value::Double(0.142_315_974_591_594_17 * i as f64),
        Value::DateTime("2026-11-22 03:04:05.123456".into()),
        Value::Text("x".repeat(80)),
    ]
}

fn schema() -> Arc<TableSchema> {
    let cs = Charset { name: "utf8mb4".into(), collation: "utf8mb4_general_ci".into() };
    let col = |name: &str, ty: ColumnType| ColumnSchema {
        name: name.into(),
        ty,
        nullable: true,
        default: None,
        source_type: None,
    };
    Arc::new(TableSchema {
        table: TableRef::new("bench", "recipes"),
        columns: vec![
            col("id", ColumnType::Int { bytes: 4, unsigned: false }),
            col("name", ColumnType::VarChar { chars: 100, charset: cs.clone() }),
            col("servings", ColumnType::Int { bytes: 2, unsigned: true }),
            col("price", ColumnType::Decimal { precision: 10, scale: 2, unsigned: false }),
            col("rating", ColumnType::Double { unsigned: false }),
            col("created", ColumnType::DateTime { fsp: 6 }),
            col("notes", ColumnType::Text { length_bytes: 2, charset: cs }),
        ],
        primary_key: vec![0],
    })
}

fn event(i: i64, op: Op) -> ChangeEvent {
    ChangeEvent {
        table: TableRef::new("bench", "recipes"),
        schema_version: 1,
        op,
        before: if op == Op::Update { Some(row(i)) } else { None },
        after: Some(row(i)),
        position: Position { file: "binlog.000001".into(), offset: 1000 + i as u64, row: 0 },
        timestamp: 1_700_000_000,
        gtid: None,
        index: None,
    }
}

fn envelope_bench(c: &mut Criterion) {
    let record = Record::Change(event(7, Op::Update));
    let bytes = envelope::encode(&record).unwrap();
    let mut g = c.benchmark_group("envelope");
    g.throughput(Throughput::Elements(1));
    g.bench_function("encode_update", |b| b.iter(|| envelope::encode(std::hint::black_box(&record)).unwrap()));
    g.bench_function("decode_update", |b| b.iter(|| envelope::decode(std::hint::black_box(&bytes), &"bench").unwrap()));
    g.finish();
    // The same, per MB of envelope.
    let mut g = c.benchmark_group("envelope_bytes");
    g.throughput(Throughput::Bytes(bytes.len() as u64));
    g.bench_function("encode_update", |b| b.iter(|| envelope::encode(std::hint::black_box(&record)).unwrap()));
    g.bench_function("decode_update", |b| b.iter(|| envelope::decode(std::hint::black_box(&bytes), &"bench").unwrap()));
    g.finish();
}

/// Bytes of a row's values as the envelope carries them (the basis of the per-MB figures).
fn row_bytes(r: &[Value]) -> u64 {
    serde_json::to_vec(r).map_or(0, |v| v.len() as u64)
}

fn hash_bench(c: &mut Criterion) {
    let r = row(42);
    let mut g = c.benchmark_group("row_hash");
    g.throughput(Throughput::Elements(1));
    g.bench_function("200_byte_row", |b| b.iter(|| row_hash(std::hint::black_box(&r))));
    g.finish();
    let mut g = c.benchmark_group("row_hash_bytes");
    g.throughput(Throughput::Bytes(row_bytes(&r)));
    g.bench_function("200_byte_row", |b| b.iter(|| row_hash(std::hint::black_box(&r))));
    g.finish();
}

fn compaction_bench(c: &mut Criterion) {
    let s = schema();
    // 10,000 changes over 1,000 keys: the compaction ratio of a hot workload.
    let events: Vec<ChangeEvent> =
        (0..10_000).map(|i| event(i % 1000, if i < 1000 { Op::Insert } else { Op::Update })).collect();
    let mut g = c.benchmark_group("compaction");
    g.throughput(Throughput::Elements(events.len() as u64));
    let total: u64 = events.iter().map(|e| e.after.as_deref().map_or(0, row_bytes)).sum();
    compaction_run(&mut g, &events, &s);
    g.finish();
    let mut g = c.benchmark_group("compaction_bytes");
    g.throughput(Throughput::Bytes(total));
    compaction_run(&mut g, &events, &s);
    g.finish();
}

fn compaction_run(
    g: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    events: &[ChangeEvent],
    s: &Arc<TableSchema>,
) {
    g.bench_function("10k_changes_1k_keys", |b| {
        b.iter_batched(
            || events.to_vec(),
            |evs| {
                let mut batch = Batch::default();
                for e in evs {
                    batch.push(e, s).unwrap();
                }
                batch
            },
            BatchSize::LargeInput,
        )
    });
}

criterion_group!(benches, envelope_bench, hash_bench, compaction_bench);
criterion_main!(benches);
