//! Discrete things that happened to a pipeline, kept briefly for whoever reports them (the
//! alerts): a table stopped, a schema change applied, with a sequence number so a reader
//! takes each once. Bounded: the oldest go when nobody reads.

use std::collections::VecDeque;

/// Events kept for readers that lag behind.
const KEPT: usize = 1024;

/// Something that happened, with when (seconds since the epoch).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OpsEvent {
    /// A table no longer replicates.
    TableStopped {
        /// `db.table`.
        table: String,
        /// Why, with the fix when known.
        reason: String,
        /// When.
        at: u64,
    },
    /// A schema change was applied to the target.
    SchemaApplied {
        /// `db.table`.
        table: String,
        /// What changed (`truncate`, `drop`, `rename to db.t2`, `column renames`, `new columns`).
        what: String,
        /// When.
        at: u64,
    },
}

/// The last [`KEPT`] events, numbered from 1.
#[derive(Debug, Default)]
pub(super) struct EventLog {
    events: VecDeque<(u64, OpsEvent)>,
    next: u64,
}

impl EventLog {
    pub(super) fn push(&mut self, e: OpsEvent) {
        self.next += 1;
        if self.events.len() == KEPT {
            self.events.pop_front();
        }
        self.events.push_back((self.next, e));
    }

    /// Events after number `after`, and the number to ask from next time.
    pub(super) fn since(&self, after: u64) -> (Vec<OpsEvent>, u64) {
        let events = self.events.iter().filter(|(n, _)| *n > after).map(|(_, e)| e.clone()).collect();
        (events, self.next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readers_take_each_event_once_and_the_log_stays_bounded() {
        let mut log = EventLog::default();
        let ev = |i: u64| OpsEvent::SchemaApplied { table: format!("d.t{i}"), what: "truncate".into(), at: i };
        log.push(ev(1));
        let (first, cursor) = log.since(0);
        assert_eq!(first, vec![ev(1)]);
        assert!(log.since(cursor).0.is_empty());
        for i in 0..(KEPT as u64 + 10) {
            log.push(ev(i));
        }
        let (all, _) = log.since(cursor);
        assert_eq!(all.len(), KEPT, "the oldest were dropped");
    }
}
