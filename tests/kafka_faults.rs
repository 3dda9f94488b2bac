//! Fault injection with librdkafka's mock cluster (in-process; no external broker can be told
//! to fail on cue): broker down and back up, produce request errors and leader changes while
//! the journal publishes. Every append must succeed (the idempotent producer retries inside),
//! and the partition must hold exactly the appended records, in order: nothing lost, nothing
//! doubled, nothing reordered. The mock cluster does not filter `read_committed` or store
//! transaction markers; binferry uses neither.

use std::sync::Arc;
use std::time::Duration;

use binferry::buffer::kafka::KafkaSettings;
use binferry::buffer::kafka::journal::KafkaJournal;
use binferry::buffer::kafka::partition::PartitionLog;
use binferry::buffer::{AppendBatch, Item, Journal, Log};
use binferry::config::Config;
use binferry::event::{ChangeEvent, Commit, Op, Record, Value};
use binferry::position::{Position, SourceCheckpoint};
use binferry::schema::ColumnType;
use binferry::schema::{ColumnSchema, TableRef, TableSchema};
use rdkafka::mocking::MockCluster;
use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};

const TOPIC: &str = "faults.shop";

fn settings(brokers: &str) -> KafkaSettings {
    let cfg = Config::from_toml(&format!(
        r#"
[pipeline]
name = "faults"
[source]
user = "root"
include = ["shop.*"]
[buffer]
kind = "kafka"
[buffer.kafka]
brokers = "{brokers}"
topic_prefix = "faults"
replication_factor = 3
[buffer.kafka.producer]
"retry.backoff.ms" = "50"
[sink.mysql]
user = "root"
database = "replica"
"#
    ))
    .unwrap();
    KafkaSettings::from_config(&cfg).unwrap()
}

fn schema() -> Arc<TableSchema> {
    let col = |name: &str| ColumnSchema {
        name: name.into(),
        ty: ColumnType::Int { bytes: 8, unsigned: false },
        nullable: false,
        default: None,
        source_type: None,
    };
    Arc::new(TableSchema {
        table: TableRef::new("shop", "orders"),
        columns: vec![col("id"), col("qty")],
        primary_key: vec![0],
    })
}

/// Transaction `n`: five changes and their commit, at increasing binlog positions.
fn transaction(n: u64, version: u64) -> Vec<Record> {
    let mut out = Vec::new();
    for i in 0..5u64 {
        out.push(Record::Change(ChangeEvent {
            table: TableRef::new("shop", "orders"),
            schema_version: version,
            op: Op::Insert,
            before: None,
            after: Some(vec![Value::Int((n * 5 + i) as i64), Value::Int(n as i64)]),
            position: Position { file: "binlog.000001".into(), offset: 1000 + n * 10, row: i as u32 },
            timestamp: 1_700_000_000,
            gtid: None,
            index: Some(i as u32),
        }));
    }
    out.push(Record::Commit(Commit {
        position: Position::new("binlog.000001", 1000 + n * 10 + 5),
        gtid: None,
        timestamp: 1_700_000_000,
        snapshot: false,
        consistent: Some(true),
    }));
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn no_lost_or_reordered_events_under_broker_faults() {
    let mock = MockCluster::new(3).unwrap();
    for topic in [TOPIC, "faults-schemas", "faults-checkpoints"] {
        mock.create_topic(topic, 1, 3).unwrap();
    }
    mock.partition_leader(TOPIC, 0, Some(1)).unwrap();
    let settings = settings(&mock.bootstrap_servers());
    let journal = KafkaJournal::new(settings.clone()).unwrap();
    let schema = schema();
    let mut expected = Vec::new();
    let mut n = 0u64;
    for phase in ["clean", "produce errors", "leader change", "broker down and up", "clean again"] {
        match phase {
            "produce errors" => mock.request_errors(
                RDKafkaApiKey::Produce,
                &[
                    RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION,
                    RDKafkaRespErr::RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT,
                    RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS,
                    RDKafkaRespErr::RD_KAFKA_RESP_ERR_LEADER_NOT_AVAILABLE,
                    RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS_AFTER_APPEND,
                ],
            ),
            "leader change" => mock.partition_leader(TOPIC, 0, Some(2)).unwrap(),
            // Appends start while the leader is down and finish after it returns.
            "broker down and up" => mock.broker_down(2).unwrap(),
            _ => {}
        }
        let phase_start = n;
        let clock = std::time::Instant::now();
        let appends = async {
            for _ in 0..20 {
                let records = transaction(n, schema.version());
                let checkpoint = SourceCheckpoint {
                    resume: Some(Position::new("binlog.000001", 1000 + n * 10 + 5)),
                    ..Default::default()
                };
                expected.extend(records.clone());
                journal
                    .append(AppendBatch { records, schemas: vec![Arc::clone(&schema)], checkpoint })
                    .await
                    .unwrap_or_else(|e| panic!("append failed during {phase}: {e}"));
                n += 1;
            }
        };
        if phase == "broker down and up" {
            let up = async {
                tokio::time::sleep(Duration::from_secs(2)).await;
                mock.broker_up(2).unwrap();
            };
            tokio::join!(appends, up);
        } else {
            appends.await;
        }
        assert_eq!(n - phase_start, 20, "{phase}");
        if phase == "broker down and up" {
            // The fault was real: the appends waited for the leader to come back.
            assert!(clock.elapsed() >= Duration::from_secs(1), "the appends did not wait for the broker");
        }
    }

    // The partition holds exactly what was appended, in order.
    let log = PartitionLog::open(&settings, TOPIC, 0).unwrap();
    let mut got: Vec<(u64, Item)> = Vec::new();
    let start = std::time::Instant::now();
    while got.len() < expected.len() {
        assert!(start.elapsed() < Duration::from_secs(60), "read {} of {}", got.len(), expected.len());
        let from = got.last().map_or(0, |(o, _)| o + 1);
        let more = log.read(from, 1000).await.unwrap();
        if more.is_empty() {
            log.wait_for(from, Duration::from_millis(200)).await;
        }
        got.extend(more);
    }
    let records: Vec<Record> = got
        .into_iter()
        .map(|(_, item)| match item {
            Item::Record(r) => r,
            other => panic!("unexpected entry {other:?}"),
        })
        .collect();
    assert_eq!(records.len(), expected.len());
    assert!(records == expected, "the partition differs from what was appended");
    assert!(log.read(expected.len() as u64, 10).await.unwrap().is_empty(), "more records than appended");
    assert_eq!(log.schema(schema.version()).await.unwrap().as_deref(), Some(&*schema));

    // A restarted reader resumes from the last acknowledged checkpoint.
    let fresh = KafkaJournal::new(settings).unwrap();
    let cp = fresh.checkpoint().await.unwrap();
    assert_eq!(cp.resume, Some(Position::new("binlog.000001", 1000 + (n - 1) * 10 + 5)));
}
