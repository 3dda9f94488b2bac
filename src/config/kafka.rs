//! What the configuration knows about Kafka without talking to it: which names are valid
//! topic names and which client properties binferry owns. Here, not in the buffer, because
//! validation needs them and the configuration depends on no adapter.

/// librdkafka properties binferry sets itself; the guarantees depend on them.
pub const MANAGED_PROPERTIES: &[&str] = &[
    "bootstrap.servers",
    "enable.idempotence",
    "acks",
    "group.id",
    "enable.auto.commit",
    "enable.auto.offset.store",
    "auto.offset.reset",
    "isolation.level",
];

/// Whether `name` may be used as (part of) a Kafka topic name.
pub fn is_topic_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 200
        && name != "."
        && name != ".."
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}
