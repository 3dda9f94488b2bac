//! Crash points for tests: `BINFERRY_FAILPOINT=<name>` aborts the process the
//! `BINFERRY_FAILPOINT_HIT`-th time (default 1) execution reaches [`hit`]`(name)`.
//!
//! Random SIGKILLs rarely land in a window of a few milliseconds; a named point makes the
//! crash a test needs (for instance between the BigQuery commit marker and the MERGE) certain.
//! Unset, a failpoint costs one relaxed atomic load.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

struct Armed {
    name: String,
    at: u64,
    hits: AtomicU64,
}

fn armed() -> Option<&'static Armed> {
    static ARMED: OnceLock<Option<Armed>> = OnceLock::new();
    ARMED
        .get_or_init(|| {
            let name = std::env::var("BINFERRY_FAILPOINT").ok().filter(|n| !n.is_empty())?;
            let at = std::env::var("BINFERRY_FAILPOINT_HIT").ok().and_then(|n| n.parse().ok()).unwrap_or(1);
            Some(Armed { name, at, hits: AtomicU64::new(0) })
        })
        .as_ref()
}

/// Abort here if the failpoint `name` is armed and due.
pub(crate) fn hit(name: &str) {
    if let Some(a) = armed()
        && a.name == name
        && a.hits.fetch_add(1, Ordering::Relaxed) + 1 == a.at
    {
        eprintln!("failpoint {name}: aborting");
        std::process::abort();
    }
}
