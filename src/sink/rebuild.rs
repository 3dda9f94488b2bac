//! What both targets call a table rebuilt aside (`binferry resync` of a stopped table): the
//! shadow its rows go to, the name its stale copy is kept under, and how far the swap is. Each
//! sink decides the statements of its swap from these (`sink::mysql::rebuild`,
//! `sink::bigquery::rebuild`); both keep them in a `_binferry_rebuilds` table.

use std::collections::HashMap;

use crate::error::{Error, ErrorKind, Result};

use super::{marked_name, name_stamp};

/// The state table both targets record rebuilds in.
const REBUILDS: &str = "_binferry_rebuilds";

/// Where a table's rows go while it is rebuilt aside, and where its stale copy goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Aside {
    /// The table the rows are written to meanwhile.
    pub shadow: String,
    /// The name the stale copy is kept under when the shadow takes its place; empty when
    /// there is none to keep (BigQuery: the table did not exist when the swap began).
    pub kept: String,
    pub phase: Phase,
}

/// How far a rebuild is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Phase {
    /// The copy goes on; rows go to the shadow.
    Copying,
    /// The shadow is taking the table's place (the swap may be partly or wholly done).
    Swapping,
    /// The copy wrote no rows: the stale copy is kept and the table dropped (BigQuery; a
    /// MySQL target renames the stale copy aside in one statement, which needs no phase).
    Emptying,
}

impl Phase {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Phase::Copying => "copying",
            Phase::Swapping => "swapping",
            Phase::Emptying => "emptying",
        }
    }

    pub(crate) fn parse(s: &str) -> Result<Self> {
        match s {
            "copying" => Ok(Phase::Copying),
            "swapping" => Ok(Phase::Swapping),
            "emptying" => Ok(Phase::Emptying),
            other => Err(Error::new(
                ErrorKind::TargetRejected,
                format!("{REBUILDS}: unknown phase \"{other}\" (expected copying, swapping or emptying)"),
            )
            .with_hint(format!("{REBUILDS} was changed by hand; resync the table again"))),
        }
    }
}

impl Aside {
    /// The names for rebuilding target table `name`, started at `timestamp` (the resync's),
    /// each at most `max_chars` long (see [`marked_name`]).
    pub(crate) fn new(name: &str, timestamp: u32, max_chars: usize) -> Self {
        let stamp = name_stamp(timestamp);
        Aside {
            shadow: marked_name(name, "__rebuilding", max_chars),
            kept: marked_name(name, &format!("__stopped_{stamp}"), max_chars),
            phase: Phase::Copying,
        }
    }
}

/// What a sink knows of the tables rebuilt aside, by target table: where their rows go. Kept
/// in step with `_binferry_rebuilds` by the sink (loaded at start-up, set at each rebuild
/// record, and read again where another stream may have moved it on).
#[derive(Debug, Default)]
pub(crate) struct Rebuilding(HashMap<String, Aside>);

impl Rebuilding {
    /// The table target table `name`'s rows are written to: its shadow while it is rebuilt
    /// aside, else the table itself.
    pub(crate) fn stored_in(&self, name: &str) -> String {
        self.0.get(name).map_or_else(|| name.to_string(), |a| a.shadow.clone())
    }

    pub(crate) fn get(&self, name: &str) -> Option<&Aside> {
        self.0.get(name)
    }

    /// Record how target table `name`'s rebuild stands; `None`: it is not rebuilt aside.
    pub(crate) fn set(&mut self, name: &str, aside: Option<&Aside>) {
        match aside {
            Some(a) => self.0.insert(name.to_string(), a.clone()),
            None => self.0.remove(name),
        };
    }

    pub(crate) fn clear(&mut self) {
        self.0.clear();
    }
}

/// Which of the tables a rebuild involves exist.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Present {
    pub live: bool,
    pub shadow: bool,
    pub kept: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_stopped_and_dropped_convention() {
        let a = Aside::new("recipes", 1_795_953_600, 64);
        assert_eq!((a.shadow.as_str(), a.kept.as_str()), ("recipes__rebuilding", "recipes__stopped_20261129120000"));
        assert_eq!(a.phase, Phase::Copying);
        for p in [Phase::Copying, Phase::Swapping, Phase::Emptying] {
            assert_eq!(Phase::parse(p.as_str()).unwrap(), p);
        }
        let e = Phase::parse("done").unwrap_err();
        assert!(e.to_string().contains("_binferry_rebuilds: unknown phase \"done\""), "{e}");
    }

    #[test]
    fn rows_go_to_the_shadow_only_while_a_table_is_rebuilt() {
        let mut r = Rebuilding::default();
        assert_eq!(r.stored_in("t"), "t");
        r.set("t", Some(&Aside::new("t", 0, 64)));
        assert_eq!((r.stored_in("t"), r.stored_in("u")), ("t__rebuilding".to_string(), "u".to_string()));
        r.set("t", None);
        assert_eq!(r.stored_in("t"), "t");
    }
}
