//! When an issuer's keys are fetched (again): when there are none yet, when they are older than
//! the issuer's `cacheDuration`, or when a token names a `kid` they lack (the issuer may have
//! rotated its keys) — but never twice within [`MIN_REFETCH_INTERVAL`], so a flood of tokens
//! with made-up `kid`s, or an issuer that is down, costs the issuer at most one request per
//! interval. Until a fetch succeeds the keys already held stay in use.
//!
//! (E2B's verifier refreshes its JWKS every `cacheDuration` through jwkset, e2b-dev/infra
//! `packages/auth/pkg/auth/internal/token/jwks/verifier.go` `newVerifier`; the refetch on an
//! unknown `kid` is what keyfunc's `RefreshUnknownKID` does, rate-limited likewise.)

use std::time::{Duration, Instant};

/// The shortest time between two fetches of one issuer's keys.
pub const MIN_REFETCH_INTERVAL: Duration = Duration::from_secs(5);

/// When the keys were last fetched, and last fetched successfully.
#[derive(Debug, Default, Clone, Copy)]
pub struct RefreshClock {
    last_attempt: Option<Instant>,
    last_success: Option<Instant>,
}

impl RefreshClock {
    /// Whether to fetch the keys at `now`; `unknown_kid` when a token named a `kid` the held
    /// keys lack.
    pub fn should_fetch(&self, now: Instant, cache_duration: Duration, unknown_kid: bool) -> bool {
        let may_try = self
            .last_attempt
            .is_none_or(|at| now.saturating_duration_since(at) >= MIN_REFETCH_INTERVAL);
        let wanted = match self.last_success {
            None => true,
            Some(at) => unknown_kid || now.saturating_duration_since(at) >= cache_duration,
        };
        wanted && may_try
    }

    /// Records a fetch that ended at `at` (the interval runs from the end of a fetch, so an
    /// issuer that hangs until the timeout is not asked again at once), and whether it succeeded.
    pub fn fetched(&mut self, at: Instant, ok: bool) {
        self.last_attempt = Some(at);
        if ok {
            self.last_success = Some(at);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CACHE: Duration = Duration::from_secs(300);
    const S: Duration = Duration::from_secs(1);

    #[test]
    fn keys_are_fetched_first_then_when_stale() {
        let t0 = Instant::now();
        let mut clock = RefreshClock::default();
        assert!(clock.should_fetch(t0, CACHE, false));
        clock.fetched(t0, true);
        assert!(!clock.should_fetch(t0 + 10 * S, CACHE, false));
        assert!(!clock.should_fetch(t0 + CACHE - S, CACHE, false));
        assert!(clock.should_fetch(t0 + CACHE, CACHE, false));
    }

    #[test]
    fn an_unknown_kid_refetches_at_most_once_per_interval() {
        let t0 = Instant::now();
        let mut clock = RefreshClock::default();
        clock.fetched(t0, true);
        // Right after a fetch, a flood of unknown kids fetches nothing.
        for ms in [0, 100, 4_999] {
            assert!(!clock.should_fetch(t0 + Duration::from_millis(ms), CACHE, true));
        }
        let t1 = t0 + MIN_REFETCH_INTERVAL;
        assert!(clock.should_fetch(t1, CACHE, true));
        clock.fetched(t1, true);
        assert!(!clock.should_fetch(t1 + S, CACHE, true));
        assert!(clock.should_fetch(t1 + MIN_REFETCH_INTERVAL, CACHE, true));
    }

    #[test]
    fn a_failing_issuer_is_retried_once_per_interval_and_old_keys_kept() {
        let t0 = Instant::now();
        let mut clock = RefreshClock::default();
        clock.fetched(t0, false);
        assert!(!clock.should_fetch(t0 + S, CACHE, false));
        assert!(clock.should_fetch(t0 + MIN_REFETCH_INTERVAL, CACHE, false));
        // Keys fetched once, stale, and the refresh failing: retried per interval, not per token.
        let mut clock = RefreshClock::default();
        clock.fetched(t0, true);
        let stale = t0 + CACHE;
        clock.fetched(stale, false);
        assert!(!clock.should_fetch(stale + S, CACHE, false));
        assert!(clock.should_fetch(stale + MIN_REFETCH_INTERVAL, CACHE, false));
        // A cache shorter than the interval still waits for the interval.
        let mut clock = RefreshClock::default();
        clock.fetched(t0, true);
        assert!(!clock.should_fetch(t0 + S, S, false));
    }
}
