//! What the writers have read and not yet made durable in the target: the source time of the
//! oldest such change, per writer and per table. Lag is measured from it, so that it is true
//! when the source is idle (nothing unapplied: 0, not the age of the last change) and right
//! after a restart (the first change the writer reads again is the backlog's oldest, not
//! "now").

use std::collections::{BTreeMap, HashMap};

/// One writer's oldest unapplied change, overall and per table (seconds since the epoch).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WriterUnapplied {
    /// Source time of the oldest change read and not committed; `None` when everything read
    /// is committed.
    pub since: Option<u64>,
    /// The same, per table (`db.table`).
    pub tables: BTreeMap<String, u64>,
}

/// The unapplied changes of every writer of the process, and every table ever seen.
#[derive(Debug, Default)]
pub(super) struct Unapplied {
    writers: HashMap<u64, WriterUnapplied>,
    next_id: u64,
    /// Tables a writer ever had changes of: each keeps a lag series, 0 when caught up.
    tables: std::collections::BTreeSet<String>,
}

impl Unapplied {
    pub(super) fn register(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    pub(super) fn set(&mut self, writer: u64, state: WriterUnapplied) {
        self.tables.extend(state.tables.keys().cloned());
        self.writers.insert(writer, state);
    }

    pub(super) fn remove(&mut self, writer: u64) {
        self.writers.remove(&writer);
    }

    /// The oldest unapplied change of any writer.
    pub(super) fn oldest(&self) -> Option<u64> {
        self.writers.values().filter_map(|w| w.since).min()
    }

    /// Every table seen, with the oldest unapplied change of it if any.
    pub(super) fn tables(&self) -> Vec<(String, Option<u64>)> {
        self.tables
            .iter()
            .map(|t| (t.clone(), self.writers.values().filter_map(|w| w.tables.get(t).copied()).min()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_oldest_change_of_any_writer_counts_and_tables_stay_known() {
        let mut u = Unapplied::default();
        let (a, b) = (u.register(), u.register());
        assert_ne!(a, b);
        assert_eq!(u.oldest(), None);
        u.set(a, WriterUnapplied { since: Some(50), tables: [("d.t".to_string(), 50)].into() });
        u.set(
            b,
            WriterUnapplied { since: Some(40), tables: [("d.t".to_string(), 45), ("d.u".to_string(), 40)].into() },
        );
        assert_eq!(u.oldest(), Some(40));
        assert_eq!(u.tables(), vec![("d.t".to_string(), Some(45)), ("d.u".to_string(), Some(40))]);
        // b committed everything: d.u is caught up but still listed.
        u.set(b, WriterUnapplied::default());
        assert_eq!(u.oldest(), Some(50));
        assert_eq!(u.tables(), vec![("d.t".to_string(), Some(50)), ("d.u".to_string(), None)]);
        u.remove(a);
        assert_eq!(u.oldest(), None);
    }
}
