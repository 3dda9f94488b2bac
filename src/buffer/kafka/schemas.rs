//! The schema topic, read by sink workers.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};

use super::{KafkaSettings, unavailable};
use crate::error::{Error, ErrorKind, Result};
use crate::event::envelope;
use crate::schema::TableSchema;

/// How long catching up with the schema topic may take.
const READ_TIMEOUT: Duration = Duration::from_secs(60);

/// Schemas by version, read from the compacted schema topic on demand.
pub(crate) struct SchemaRegistry {
    topic: String,
    consumer: Mutex<Option<BaseConsumer>>,
    settings: KafkaSettings,
    known: Mutex<HashMap<u64, Arc<TableSchema>>>,
}

impl SchemaRegistry {
    pub(crate) fn new(settings: &KafkaSettings) -> Self {
        SchemaRegistry {
            topic: settings.topics.schemas(),
            consumer: Mutex::new(None),
            settings: settings.clone(),
            known: Mutex::new(HashMap::new()),
        }
    }

    /// A schema by version. The journal acknowledges a schema before any record naming it, so
    /// a miss after reading the topic to its end means it is not there at all.
    pub(crate) async fn get(self: &Arc<Self>, version: u64) -> Result<Option<Arc<TableSchema>>> {
        if let Some(s) = self.known.lock().ok().and_then(|k| k.get(&version).cloned()) {
            return Ok(Some(s));
        }
        let me = Arc::clone(self);
        tokio::task::spawn_blocking(move || me.catch_up())
            .await
            .map_err(|e| Error::internal(format!("Kafka schema task failed: {e}")))??;
        Ok(self.known.lock().ok().and_then(|k| k.get(&version).cloned()))
    }

    /// Read the schema topic from where this registry stopped to its current end.
    fn catch_up(&self) -> Result<()> {
        let mut slot = self.consumer.lock().map_err(|_| Error::internal("schema consumer lock poisoned"))?;
        if slot.is_none() {
            let c: BaseConsumer = self.settings.reader_config().create().map_err(|e| {
                Error::new(ErrorKind::Config, format!("buffer.kafka.consumer: cannot create a Kafka consumer: {e}"))
            })?;
            let mut tpl = TopicPartitionList::new();
            tpl.add_partition_offset(&self.topic, 0, Offset::Beginning)
                .map_err(|e| unavailable(e, format!("assigning Kafka topic {}", self.topic)))?;
            c.assign(&tpl).map_err(|e| unavailable(e, format!("assigning Kafka topic {}", self.topic)))?;
            *slot = Some(c);
        }
        let Some(consumer) = slot.as_ref() else { return Ok(()) };
        let (_, high) = consumer
            .fetch_watermarks(&self.topic, 0, READ_TIMEOUT)
            .map_err(|e| unavailable(e, format!("reading the end of Kafka topic {}", self.topic)))?;
        let deadline = std::time::Instant::now() + READ_TIMEOUT;
        loop {
            let position = consumer
                .position()
                .ok()
                .and_then(|p| p.find_partition(&self.topic, 0).map(|e| e.offset()))
                .and_then(|o| o.to_raw());
            if position.is_some_and(|p| p >= high) || high == 0 {
                return Ok(());
            }
            if std::time::Instant::now() > deadline {
                return Err(Error::new(
                    ErrorKind::BufferUnavailable,
                    format!("reading Kafka topic {} up to offset {high} timed out", self.topic),
                ));
            }
            let Some(msg) = consumer.poll(Duration::from_millis(200)) else { continue };
            let msg = msg.map_err(|e| unavailable(e, format!("reading Kafka topic {}", self.topic)))?;
            let Some(payload) = msg.payload() else { continue };
            let at = format!("{} offset {}", self.topic, msg.offset());
            let schema = envelope::decode_schema(payload, &at)?;
            if let Ok(mut known) = self.known.lock() {
                known.insert(schema.version(), Arc::new(schema));
            }
        }
    }
}
