//! Failed API keys are rate-limited per client address: after `MAX_FAILURES` in a window, that
//! address is answered 429 without a database lookup until the window ends. Only failures
//! count, so a client with a valid key is never slowed. (A keyed rate-limiter crate would count
//! every request, valid ones too: it cannot be asked before the key is known to be bad.)

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Failures allowed per address and window.
const MAX_FAILURES: u32 = 20;
const WINDOW: Duration = Duration::from_secs(60);
/// Addresses remembered at most; past this, expired windows are dropped, then the oldest.
const MAX_TRACKED: usize = 10_000;

/// Recent failures per client address.
#[derive(Debug, Default)]
pub struct AuthFailures {
    seen: Mutex<HashMap<IpAddr, (Instant, u32)>>,
}

impl AuthFailures {
    /// Whether `client` has used up its failures for the current window.
    pub fn exhausted(&self, client: IpAddr, now: Instant) -> bool {
        let seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        seen.get(&client).is_some_and(|(start, count)| {
            now.duration_since(*start) < WINDOW && *count >= MAX_FAILURES
        })
    }

    /// Counts one failure of `client`.
    pub fn record(&self, client: IpAddr, now: Instant) {
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        if seen.len() >= MAX_TRACKED && !seen.contains_key(&client) {
            seen.retain(|_, (start, _)| now.duration_since(*start) < WINDOW);
            if seen.len() >= MAX_TRACKED
                && let Some(oldest) = seen
                    .iter()
                    .min_by_key(|(_, (start, _))| *start)
                    .map(|(ip, _)| *ip)
            {
                seen.remove(&oldest);
            }
        }
        let entry = seen.entry(client).or_insert((now, 0));
        if now.duration_since(entry.0) >= WINDOW {
            *entry = (now, 0);
        }
        entry.1 += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_is_stopped_after_its_failures_until_the_window_ends() {
        let failures = AuthFailures::default();
        let (a, b): (IpAddr, IpAddr) = ("192.0.2.1".parse().unwrap(), "192.0.2.2".parse().unwrap());
        let t0 = Instant::now();
        for _ in 0..MAX_FAILURES {
            assert!(!failures.exhausted(a, t0));
            failures.record(a, t0);
        }
        assert!(failures.exhausted(a, t0));
        assert!(
            !failures.exhausted(b, t0),
            "another address is not affected"
        );
        assert!(
            !failures.exhausted(a, t0 + WINDOW),
            "a new window starts afresh"
        );
        failures.record(a, t0 + WINDOW);
        assert!(!failures.exhausted(a, t0 + WINDOW));
    }
}
