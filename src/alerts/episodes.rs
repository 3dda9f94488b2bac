//! Which alerts to send, from what the pipeline's telemetry says now: pure, so every rule,
//! episode and the rate limit are tested without servers or clocks.
//!
//! An *episode* is one stretch of time a condition holds. Each fires once, when it has held
//! for its duration, and sends "resolved" when it clears (lag, a failing target or source).
//! A stopped table fires once per table and process (it stays stopped until resynchronised);
//! a schema change applied is one information message. The rate limit holds back what goes
//! over `alerting.max_per_hour` and says how many in the next message that passes; a
//! resolution is sent only for an episode whose start was sent.

use std::collections::{HashMap, HashSet, VecDeque};

use super::message::{Alert, Severity, Status};
use crate::config::alerts::AlertingConfig;
use crate::event::value::format_epoch;
use crate::status::StoppedTable;
use crate::telemetry::OpsEvent;

/// What the telemetry says at one moment.
#[derive(Clone, Debug, Default)]
pub struct Observation {
    /// Seconds since the epoch.
    pub now: u64,
    /// The pipeline's lag (s).
    pub lag: f64,
    /// Since when the writer fails to reach or commit to the target (0: it does not).
    pub target_failing_since: u64,
    /// Its last error.
    pub target_error: String,
    /// Since when the source fails (0: it does not).
    pub source_failing_since: u64,
    /// Its last error.
    pub source_error: String,
    /// Seconds until the binlog the reader needs may be purged (`None`: unlimited, unknown).
    pub retention_headroom: Option<u64>,
    /// Events since the last observation.
    pub events: Vec<OpsEvent>,
}

/// An episode in progress.
struct Episode {
    /// The message that started it (resolved from it).
    alert: Alert,
    /// Whether that message passed the rate limit.
    announced: bool,
}

/// The alert rules and the episodes in progress.
pub struct Engine {
    pipeline: String,
    rules: AlertingConfig,
    lag_over_since: Option<u64>,
    episodes: HashMap<&'static str, Episode>,
    stopped_seen: HashSet<String>,
    sent: VecDeque<u64>,
    suppressed: u64,
}

const LAG: &str = "lag";
const TARGET: &str = "target";
const SOURCE: &str = "source";
const RETENTION: &str = "retention";

impl Engine {
    /// Rules of `pipeline`.
    pub fn new(pipeline: &str, rules: AlertingConfig) -> Engine {
        Engine {
            pipeline: pipeline.to_string(),
            rules,
            lag_over_since: None,
            episodes: HashMap::new(),
            stopped_seen: HashSet::new(),
            sent: VecDeque::new(),
            suppressed: 0,
        }
    }

    /// The messages to send now.
    pub fn observe(&mut self, o: &Observation) -> Vec<Alert> {
        let mut out = Vec::new();
        // Lag over the bound for long enough.
        let over = o.lag > self.rules.lag_max_secs as f64;
        let since = if over { *self.lag_over_since.get_or_insert(o.now) } else { 0 };
        if !over {
            self.lag_over_since = None;
        }
        let lasting = over && o.now.saturating_sub(since) >= self.rules.lag_for_secs;
        let detail = format!(
            "lag {:.0} s, bound alerting.lag_max_secs = {} s for alerting.lag_for_secs = {} s",
            o.lag, self.rules.lag_max_secs, self.rules.lag_for_secs
        );
        let fix = "run `binferry status`: a failing or slow target, a large source transaction, or a backlog \
                   after downtime; lag falls once the writer catches up";
        self.condition(LAG, lasting, Severity::Warning, "lag over the bound", since, &detail, fix, o.now, &mut out);
        // A failing target or source, for long enough.
        for (key, failing_since, error, what, fix) in [
            (
                TARGET,
                o.target_failing_since,
                &o.target_error,
                "target failing",
                "check that the target is up, reachable and accepts binferry's writes; binferry retries from its \
                 checkpoint and loses nothing",
            ),
            (
                SOURCE,
                o.source_failing_since,
                &o.source_error,
                "source failing",
                "check that the source is up and reachable and its binlog is readable; binferry retries from its \
                 checkpoint and loses nothing (unless the binlog is purged meanwhile)",
            ),
        ] {
            let holds = failing_since > 0 && o.now.saturating_sub(failing_since) >= self.rules.unreachable_for_secs;
            let detail = if failing_since > 0 {
                format!("failing for {} s: {error}", o.now.saturating_sub(failing_since))
            } else {
                "works again".to_string()
            };
            self.condition(key, holds, Severity::Critical, what, failing_since, &detail, fix, o.now, &mut out);
        }
        // The binlog the reader needs is about to be purged.
        let short = o.retention_headroom.is_some_and(|h| h < self.rules.retention_min_secs);
        let detail = match o.retention_headroom {
            Some(h) => format!(
                "the binlog the reader still needs may be purged in {:.1} h (alerting.retention_min_secs = {:.1} h)",
                h as f64 / 3600.0,
                self.rules.retention_min_secs as f64 / 3600.0
            ),
            None => "retention is unlimited".into(),
        };
        let fix = "let the reader catch up (see the lag), or raise binlog_expire_logs_seconds on the source; once \
                   purged, the pipeline needs a new snapshot";
        let since = if short { o.now } else { 0 };
        self.condition(
            RETENTION,
            short,
            Severity::Warning,
            "binlog retention running out",
            since,
            &detail,
            fix,
            o.now,
            &mut out,
        );
        for e in &o.events {
            match e {
                OpsEvent::TableStopped { table, reason, at } => {
                    if self.stopped_seen.insert(table.clone()) {
                        let a = self.alert(
                            Severity::Critical,
                            "table stopped",
                            Some(table),
                            *at,
                            reason,
                            &StoppedTable::fix_for(table),
                        );
                        out.extend(self.limit(a, o.now));
                    }
                }
                OpsEvent::SchemaApplied { table, what, at } if self.rules.schema_changes => {
                    let a = self.alert(Severity::Info, "schema change applied", Some(table), *at, what, "");
                    out.extend(self.limit(a, o.now));
                }
                OpsEvent::SchemaApplied { .. } => {}
            }
        }
        out
    }

    /// The message for a pipeline that stopped on a definite error (sent as binferry exits).
    pub fn pipeline_stopped(&mut self, error: &str, now: u64) -> Option<Alert> {
        let fix = "fix what the error says, then start binferry again; it resumes from its checkpoints";
        let a = self.alert(Severity::Critical, "pipeline stopped", None, now, error, fix);
        self.limit(a, now)
    }

    /// Fire or resolve the episode `key` as `holds` says.
    #[allow(clippy::too_many_arguments)]
    fn condition(
        &mut self,
        key: &'static str,
        holds: bool,
        severity: Severity,
        what: &str,
        since: u64,
        detail: &str,
        fix: &str,
        now: u64,
        out: &mut Vec<Alert>,
    ) {
        // Once an episode fired its condition keeps holding (its time only grows); when it
        // does not, the episode ended, also when a new one has begun since.
        if holds {
            if !self.episodes.contains_key(key) {
                let alert = self.alert(severity, what, None, since, detail, fix);
                let sent = self.limit(alert.clone(), now);
                let announced = sent.is_some();
                out.extend(sent);
                self.episodes.insert(key, Episode { alert, announced });
            }
        } else if let Some(ep) = self.episodes.remove(key).filter(|ep| ep.announced) {
            let resolved = Alert { status: Status::Resolved, detail: detail.to_string(), ..ep.alert };
            out.extend(self.limit(resolved, now));
        }
    }

    fn alert(
        &self,
        severity: Severity,
        what: &str,
        table: Option<&String>,
        since: u64,
        detail: &str,
        fix: &str,
    ) -> Alert {
        Alert {
            pipeline: self.pipeline.clone(),
            status: Status::Firing,
            severity,
            alert: what.to_string(),
            table: table.cloned(),
            since: format_epoch(since as i64, 0, 0),
            detail: detail.to_string(),
            fix: fix.to_string(),
            suppressed: 0,
        }
    }

    /// Pass `a` if fewer than `max_per_hour` messages went out in the last hour.
    fn limit(&mut self, mut a: Alert, now: u64) -> Option<Alert> {
        while self.sent.front().is_some_and(|t| now.saturating_sub(*t) >= 3600) {
            self.sent.pop_front();
        }
        if self.sent.len() >= self.rules.max_per_hour as usize {
            self.suppressed += 1;
            return None;
        }
        self.sent.push_back(now);
        a.suppressed = std::mem::take(&mut self.suppressed);
        Some(a)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn engine(max_per_hour: u32) -> Engine {
        let rules = AlertingConfig {
            lag_max_secs: 10,
            lag_for_secs: 30,
            unreachable_for_secs: 60,
            retention_min_secs: 3600,
            max_per_hour,
            schema_changes: true,
        };
        Engine::new("p", rules)
    }

    fn at(now: u64, lag: f64) -> Observation {
        Observation { now, lag, ..Default::default() }
    }

    #[test]
    fn lag_fires_once_after_its_duration_and_resolves() {
        let mut e = engine(100);
        assert!(e.observe(&at(1000, 50.0)).is_empty(), "not for long enough yet");
        assert!(e.observe(&at(1020, 50.0)).is_empty());
        let fired = e.observe(&at(1030, 60.0));
        assert_eq!(fired.len(), 1);
        assert_eq!((fired[0].status, fired[0].severity), (Status::Firing, Severity::Warning));
        assert!(fired[0].detail.contains("lag 60 s"), "{}", fired[0].detail);
        assert!(e.observe(&at(1100, 80.0)).is_empty(), "one message per episode");
        let resolved = e.observe(&at(1200, 1.0));
        assert_eq!(resolved.len(), 1);
        assert_eq!(resolved[0].status, Status::Resolved);
        assert!(e.observe(&at(1300, 1.0)).is_empty());
        // A short spike is no episode.
        assert!(e.observe(&at(1400, 50.0)).is_empty());
        assert!(e.observe(&at(1410, 1.0)).is_empty());
    }

    #[test]
    fn a_failing_target_fires_after_the_bound_and_resolves_when_it_works() {
        let mut e = engine(100);
        let mut o =
            Observation { now: 100, target_failing_since: 90, target_error: "refused".into(), ..Default::default() };
        assert!(e.observe(&o).is_empty());
        o.now = 150;
        let fired = e.observe(&o);
        assert_eq!(fired.len(), 1);
        assert_eq!(fired[0].alert, "target failing");
        assert!(fired[0].detail.contains("failing for 60 s: refused"), "{}", fired[0].detail);
        o.now = 400;
        assert!(e.observe(&o).is_empty());
        o.target_failing_since = 0;
        let resolved = e.observe(&o);
        assert_eq!(resolved.iter().map(|a| a.status).collect::<Vec<_>>(), [Status::Resolved]);
    }

    #[test]
    fn retention_running_out_warns_and_resolves() {
        let mut e = engine(100);
        let with = |now, h| Observation { now, retention_headroom: h, ..Default::default() };
        assert!(e.observe(&with(10, Some(7200))).is_empty());
        let fired = e.observe(&with(20, Some(1800)));
        assert_eq!(fired.len(), 1);
        assert!(fired[0].detail.contains("purged in 0.5 h"), "{}", fired[0].detail);
        assert!(e.observe(&with(30, Some(1700))).is_empty());
        let resolved = e.observe(&with(40, None));
        assert_eq!(resolved.iter().map(|a| a.status).collect::<Vec<_>>(), [Status::Resolved]);
    }

    #[test]
    fn a_stopped_table_fires_once_with_its_fix_and_schema_changes_inform() {
        let mut e = engine(100);
        let stop = OpsEvent::TableStopped { table: "d.t".into(), reason: "no primary key".into(), at: 5 };
        let info = OpsEvent::SchemaApplied { table: "d.u".into(), what: "truncate".into(), at: 6 };
        let o = Observation { now: 10, events: vec![stop.clone(), info, stop], ..Default::default() };
        let sent = e.observe(&o);
        assert_eq!(sent.len(), 2, "{sent:?}");
        assert_eq!(sent[0].table.as_deref(), Some("d.t"));
        assert!(sent[0].fix.contains("d.t"));
        assert_eq!(sent[1].severity, Severity::Info);
    }

    #[test]
    fn the_rate_limit_holds_back_a_storm_and_says_so() {
        let mut e = engine(2);
        let stops: Vec<OpsEvent> =
            (0..5).map(|i| OpsEvent::TableStopped { table: format!("d.t{i}"), reason: "x".into(), at: 1 }).collect();
        let sent = e.observe(&Observation { now: 10, events: stops, ..Default::default() });
        assert_eq!(sent.len(), 2);
        // An hour later the next message passes, saying what was held back.
        let late = OpsEvent::TableStopped { table: "d.late".into(), reason: "x".into(), at: 3700 };
        let sent = e.observe(&Observation { now: 3700, events: vec![late], ..Default::default() });
        assert_eq!(sent.len(), 1);
        assert_eq!(sent[0].suppressed, 3);
    }

    #[test]
    fn a_resolution_follows_only_a_start_that_was_sent() {
        let mut e = engine(1);
        let stop = OpsEvent::TableStopped { table: "d.t".into(), reason: "x".into(), at: 1 };
        assert_eq!(e.observe(&Observation { now: 1, events: vec![stop], ..Default::default() }).len(), 1);
        // The lag episode starts while the limit is used up: neither start nor end is sent.
        assert!(e.observe(&at(10, 50.0)).is_empty());
        assert!(e.observe(&at(60, 50.0)).is_empty());
        assert!(e.observe(&at(4000, 0.0)).is_empty());
    }
}
