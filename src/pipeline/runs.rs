//! Recording each run in the target's run registry (`_binferry_runs`): a row when a run
//! starts, its outcome, rows and error when it ends. The registry is for people and `status`;
//! a target that cannot record a run is logged and never stops replication.

use tracing::warn;

use crate::error::Error;
use crate::sink::{RunId, TargetSettings};
use crate::status::RunOutcome;

/// One run's row in the registry, while the run goes on.
pub(crate) struct RunRecord {
    target: TargetSettings,
    id: Option<RunId>,
}

impl RunRecord {
    /// Record that a run of `kind` starts (and mark runs of this host whose process is gone as
    /// interrupted).
    pub(crate) async fn start(target: &TargetSettings, kind: &str) -> RunRecord {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_else(|_| "unknown".into());
        let alive = |pid: u32| std::path::Path::new(&format!("/proc/{pid}")).exists();
        let id = match target.run_started(kind, &host, std::process::id(), alive).await {
            Ok(id) => Some(id),
            Err(e) => {
                warn!(error = %e, "the run registry (_binferry_runs) could not record this run; replication goes on");
                None
            }
        };
        RunRecord { target: target.clone(), id }
    }

    /// Record how the run ended: with `error` or not, and `rows` written.
    pub(crate) async fn finish(self, error: Option<&Error>, rows: u64) {
        match error {
            None => self.finish_as(RunOutcome::Ok, rows, None).await,
            Some(e) => self.finish_as(RunOutcome::Failed, rows, Some(&e.to_string())).await,
        }
    }

    /// Record that the run ended with `outcome`, `rows`, and `error` (what it found).
    pub(crate) async fn finish_as(self, outcome: RunOutcome, rows: u64, error: Option<&str>) {
        let Some(id) = &self.id else { return };
        if let Err(e) = self.target.run_ended(id, outcome, rows, error).await {
            warn!(error = %e, "the run registry (_binferry_runs) could not record the end of this run");
        }
    }
}
