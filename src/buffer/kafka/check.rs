//! `binferry check` for the Kafka buffer: brokers reachable, topics there or creatable.

use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};

use super::KafkaSettings;
use crate::check::{Problem, Report};
use crate::error::{Error, ErrorKind, Result};

/// How long the brokers get to answer.
const CHECK_TIMEOUT: Duration = Duration::from_secs(10);

/// Check that the brokers answer, and that the pipeline's topics exist or may be created.
pub async fn check(settings: &KafkaSettings) -> Result<Report> {
    let mut report = Report { server: format!("buffer: Kafka at {}", settings.brokers()), ..Default::default() };
    let consumer: BaseConsumer = settings
        .reader_config()
        .create()
        .map_err(|e| Error::new(ErrorKind::Config, format!("buffer.kafka: cannot create a Kafka client: {e}")))?;
    let metadata = tokio::task::spawn_blocking(move || consumer.fetch_metadata(None, CHECK_TIMEOUT))
        .await
        .map_err(|e| Error::internal(format!("Kafka check task failed: {e}")))?;
    let md = match metadata {
        Ok(md) => md,
        Err(e) => {
            report.problems.push(Problem {
                setting: "buffer.kafka.brokers".into(),
                expected: format!("Kafka brokers answering within {}s", CHECK_TIMEOUT.as_secs()),
                found: e.to_string(),
                fix: "check the addresses, that the brokers run and are reachable from here, and the \
                      security settings in [buffer.kafka.client]"
                    .into(),
                unreachable: true,
            });
            return Ok(report);
        }
    };
    report.notes.push(format!("{} broker(s) answered", md.brokers().len()));
    let prefix = format!("{}.", settings.topics.prefix);
    let data = md.topics().iter().filter(|t| t.name().starts_with(&prefix)).count();
    report.notes.push(format!("{data} data topic(s) named {prefix}*"));
    for internal in [settings.topics.checkpoints(), settings.topics.schemas()] {
        let exists = md.topics().iter().any(|t| t.name() == internal && t.error().is_none());
        if exists {
            report.notes.push(format!("topic {internal} exists"));
        } else if settings.create_topics {
            report.notes.push(format!("topic {internal} will be created"));
        } else {
            report.problems.push(Problem {
                setting: format!("Kafka topic {internal}"),
                expected: "an existing compacted topic (buffer.kafka.create_topics = false)".into(),
                found: "no such topic".into(),
                fix:
                    "create it with one partition and cleanup.policy=compact, or set buffer.kafka.create_topics = true"
                        .into(),
                unreachable: false,
            });
        }
    }
    Ok(report)
}
