//! Alerts: the pipeline tells people when it needs them, once per episode, and when it is
//! fine again.
//!
//! Every second the rules ([`episodes`], pure) look at the pipeline's telemetry: the lag, how
//! long the target or the source has been failing, tables stopped and schema changes applied.
//! The messages they produce go to every `[[alerts]]` channel through a bounded queue per
//! channel; a delivery task per channel sends and retries. A channel that fails is logged
//! and retried a few times, then the message is dropped: alerting never blocks or stops
//! replication, and a full queue drops (and logs) rather than waits. When the pipeline stops
//! on a definite error, that message is sent directly before binferry exits.
//!
//! Messages say what, which table, since when, and the fix; they hold no secret (no password
//! reaches the telemetry, and channel errors are stripped of URLs, which can hold tokens).

mod channels;
mod episodes;
mod message;

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::mpsc;
use tracing::{info, warn};

pub use episodes::{Engine, Observation};
pub use message::{Alert, Severity, Status};

use crate::config::Config;
use crate::error::Result;
use crate::shutdown::Shutdown;
use crate::telemetry::Stats;
use channels::Channel;

/// How often the rules look at the telemetry.
const EVALUATE_EVERY: Duration = Duration::from_secs(1);
/// Messages waiting for one channel.
const QUEUE: usize = 64;
/// The waits before each retry of a failed delivery.
const RETRY_WAITS: [Duration; 3] = [Duration::from_secs(2), Duration::from_secs(10), Duration::from_secs(30)];
/// How long the last message (the pipeline stopped) may take before binferry exits anyway.
const LAST_MESSAGE_TIMEOUT: Duration = Duration::from_secs(20);

/// The running alerts of one pipeline.
pub struct Alerter {
    engine: Arc<Mutex<Engine>>,
    channels: Vec<Arc<Channel>>,
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

impl Alerter {
    /// Start the rules and the delivery tasks, until `stop`; `None` when no channel is
    /// configured. A channel whose secret is missing is a configuration error, at start.
    pub fn start(config: &Config, stats: Arc<Stats>, stop: Shutdown) -> Result<Option<Alerter>> {
        if config.alerts.is_empty() {
            return Ok(None);
        }
        let channels: Vec<Arc<Channel>> =
            config.alerts.iter().map(Channel::from_config).map(|c| c.map(Arc::new)).collect::<Result<_>>()?;
        let engine = Arc::new(Mutex::new(Engine::new(&config.pipeline.name, config.alerting.clone())));
        let mut queues = Vec::new();
        for channel in &channels {
            let (tx, rx) = mpsc::channel(QUEUE);
            queues.push((channel.label.clone(), tx));
            tokio::spawn(deliver(Arc::clone(channel), rx));
        }
        tokio::spawn(evaluate(Arc::clone(&engine), stats, queues, stop));
        info!(channels = channels.len(), "alerts on");
        Ok(Some(Alerter { engine, channels }))
    }

    /// The pipeline stopped on `error`: tell every channel now (binferry is about to exit).
    pub async fn pipeline_stopped(&self, error: &str) {
        let Some(alert) = self.engine.lock().ok().and_then(|mut e| e.pipeline_stopped(error, now())) else { return };
        let sends = self.channels.iter().map(|c| {
            let alert = alert.clone();
            async move {
                if let Err(e) = c.send(&alert).await {
                    warn!(channel = %c.label, error = %e, "could not send the alert that the pipeline stopped");
                }
            }
        });
        let _ = tokio::time::timeout(LAST_MESSAGE_TIMEOUT, futures_util::future::join_all(sends)).await;
    }
}

/// Look at the telemetry every second and queue what the rules say.
async fn evaluate(
    engine: Arc<Mutex<Engine>>,
    stats: Arc<Stats>,
    queues: Vec<(String, mpsc::Sender<Alert>)>,
    stop: Shutdown,
) {
    let mut cursor = 0;
    let mut tick = tokio::time::interval(EVALUATE_EVERY);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.triggered() => return,
        }
        let (events, next) = stats.events_since(cursor);
        cursor = next;
        let (target_error, source_error) = stats.last_errors();
        let o = Observation {
            now: now(),
            lag: stats.last_lag(),
            target_failing_since: stats.target_failing_since.load(std::sync::atomic::Ordering::Relaxed),
            target_error,
            source_failing_since: stats.source_failing_since.load(std::sync::atomic::Ordering::Relaxed),
            source_error,
            retention_headroom: stats.retention_headroom(),
            events,
        };
        let alerts = match engine.lock() {
            Ok(mut e) => e.observe(&o),
            Err(_) => return,
        };
        for alert in alerts {
            info!(alert = %alert.subject(), "alert");
            for (label, tx) in &queues {
                if tx.try_send(alert.clone()).is_err() {
                    warn!(channel = %label, alert = %alert.subject(), "alert channel is behind: message dropped");
                }
            }
        }
    }
}

/// Send each queued message, retrying a failed delivery a few times.
async fn deliver(channel: Arc<Channel>, mut rx: mpsc::Receiver<Alert>) {
    while let Some(alert) = rx.recv().await {
        let mut waits = RETRY_WAITS.iter();
        loop {
            match channel.send(&alert).await {
                Ok(()) => break,
                Err(e) => match waits.next() {
                    Some(wait) => {
                        warn!(channel = %channel.label, error = %e, retry_in_s = wait.as_secs(), "alert not delivered");
                        tokio::time::sleep(*wait).await;
                    }
                    None => {
                        warn!(channel = %channel.label, error = %e, alert = %alert.subject(), "alert dropped after retries");
                        break;
                    }
                },
            }
        }
    }
}
