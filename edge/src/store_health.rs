//! `StoreHealth`: whether the store answered lately, shared by everything that reads it, so an
//! outage is logged once (not once per read), handshakes for unknown names stop waiting on a
//! store that is down, and the store is probed again with a back-off.

use std::{
    sync::{
        Mutex, PoisonError,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use tracing::{debug, info, warn};

/// The first wait before asking a store that failed again from a handshake.
const FIRST_BACKOFF: Duration = Duration::from_millis(500);
/// The longest such wait.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

#[derive(Debug, Default)]
struct State {
    /// Failed reads in a row; 0 while the store answers.
    failures: u32,
    /// When a handshake may ask the store again.
    retry_at: Option<Instant>,
}

/// The store's recent record of answering.
#[derive(Debug, Default)]
pub(crate) struct StoreHealth {
    state: Mutex<State>,
    manifest_loaded: AtomicBool,
}

impl StoreHealth {
    /// A read failed with `error`; the first failure of an outage is logged as a warning, the
    /// rest at debug level.
    pub(crate) fn failed(&self, now: Instant, what: &str, error: &dyn std::fmt::Display) {
        let failures = {
            let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
            state.failures = state.failures.saturating_add(1);
            let backoff = FIRST_BACKOFF
                .saturating_mul(1 << (state.failures - 1).min(16))
                .min(MAX_BACKOFF);
            state.retry_at = Some(now + backoff);
            state.failures
        };
        if failures == 1 {
            warn!(
                error = %error,
                "the store cannot be read ({what}): serving cached certificates, the default one for other names, and retrying"
            );
        } else {
            debug!(error = %error, failures, "the store still cannot be read ({what})");
        }
    }

    /// A read succeeded; the end of an outage is logged.
    pub(crate) fn succeeded(&self) {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if state.failures > 0 {
            info!(failed_reads = state.failures, "the store can be read again");
            *state = State::default();
        }
    }

    /// Whether a handshake should ask the store now: it answered last time, or the back-off
    /// since its last failure is over.
    pub(crate) fn worth_asking(&self, now: Instant) -> bool {
        let state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        state.retry_at.is_none_or(|at| now >= at)
    }

    /// Whether the last read failed.
    pub(crate) fn is_down(&self) -> bool {
        self.state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .failures
            > 0
    }

    /// The manifest was read (or found absent) at least once.
    pub(crate) fn set_manifest_loaded(&self) {
        self.manifest_loaded.store(true, Ordering::Release);
    }

    /// Whether the manifest was read (or found absent) at least once.
    pub(crate) fn manifest_loaded(&self) -> bool {
        self.manifest_loaded.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backs_off_after_failures_and_resets_on_success() {
        let health = StoreHealth::default();
        let t0 = Instant::now();
        assert!(health.worth_asking(t0));
        health.failed(t0, "test", &"refused");
        assert!(health.is_down());
        assert!(!health.worth_asking(t0 + Duration::from_millis(499)));
        assert!(health.worth_asking(t0 + Duration::from_millis(500)));
        health.failed(t0, "test", &"refused");
        assert!(!health.worth_asking(t0 + Duration::from_millis(999)));
        for _ in 0..40 {
            health.failed(t0, "test", &"refused");
        }
        assert!(health.worth_asking(t0 + MAX_BACKOFF));
        health.succeeded();
        assert!(!health.is_down());
        assert!(health.worth_asking(t0));
    }
}
