//! Once-per-state-change logging for loops that retry a failing dependency: the first failure is
//! logged at warn, repeats are only counted, and the recovery is logged at info with the count.

use std::sync::Mutex;

/// Tracks whether one dependency of one loop is failing.
#[derive(Debug)]
pub struct FailureLatch {
    what: &'static str,
    failing: Mutex<Option<u64>>,
}

impl FailureLatch {
    /// A latch for `what` (e.g. `hub`, `queue`), used as the `dependency` log field.
    pub const fn new(what: &'static str) -> Self {
        Self {
            what,
            failing: Mutex::new(None),
        }
    }

    /// Records a failure; logs only when the dependency turns from healthy to failing. Returns
    /// whether this was such a transition.
    pub fn fail(&self, call: &'static str, error: &dyn std::fmt::Display) -> bool {
        let mut f = self.failing.lock().unwrap_or_else(|p| p.into_inner());
        match f.as_mut() {
            Some(n) => {
                *n += 1;
                false
            }
            None => {
                *f = Some(1);
                tracing::warn!(dependency = self.what, call, error = %error, "dependency_failing");
                true
            }
        }
    }

    /// Records a success; logs when the dependency recovers.
    pub fn ok(&self) {
        let mut f = self.failing.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = f.take() {
            tracing::info!(
                dependency = self.what,
                failed_attempts = n,
                "dependency_recovered"
            );
        }
    }

    /// Whether the last call failed.
    pub fn is_failing(&self) -> bool {
        self.failing
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logs_only_transitions() {
        let l = FailureLatch::new("hub");
        assert!(l.fail("poll", &"boom"));
        assert!(!l.fail("poll", &"boom"));
        assert!(l.is_failing());
        l.ok();
        assert!(!l.is_failing());
        assert!(
            l.fail("poll", &"boom again"),
            "a new outage is logged again"
        );
    }
}
