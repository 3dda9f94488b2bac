//! [`Shutdown`]: the one way a task is asked to stop.
//!
//! A task that must stop takes a `Shutdown` and selects on [`Shutdown::triggered`] wherever it
//! waits; whoever owns it calls [`Shutdown::trigger`]. A [`Shutdown::child`] is triggered with
//! its parent or on its own, which is how the pipeline stops the source both on a signal and
//! when the writer fails, without a task that joins two flags. Triggering is permanent: a task
//! that checks after the fact still sees it.

use tokio_util::sync::CancellationToken;

/// A stop request shared by the tasks it concerns. Cloning shares it.
#[derive(Clone, Debug, Default)]
pub struct Shutdown(CancellationToken);

impl Shutdown {
    /// Not triggered yet.
    pub fn new() -> Self {
        Shutdown(CancellationToken::new())
    }

    /// Already triggered: for a writer that should apply what the buffer holds and stop
    /// (replay, tests).
    pub fn triggered_now() -> Self {
        let s = Self::new();
        s.trigger();
        s
    }

    /// A stop request that is triggered with this one, or on its own without affecting it.
    pub fn child(&self) -> Self {
        Shutdown(self.0.child_token())
    }

    /// Ask every holder (and every child) to stop.
    pub fn trigger(&self) {
        self.0.cancel();
    }

    /// Whether a stop was asked for.
    pub fn is_triggered(&self) -> bool {
        self.0.is_cancelled()
    }

    /// Resolves once a stop is asked for (at once if it already was). Cancel-safe: use it in
    /// `select!`.
    pub async fn triggered(&self) {
        self.0.cancelled().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_child_stops_with_its_parent_not_the_other_way() {
        let parent = Shutdown::new();
        let child = parent.child();
        child.trigger();
        assert!(child.is_triggered());
        assert!(!parent.is_triggered());
        let other = parent.child();
        parent.trigger();
        other.triggered().await;
        assert!(other.is_triggered());
        assert!(Shutdown::triggered_now().is_triggered());
    }
}
