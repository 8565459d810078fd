//! Guessing the admin token is slowed per client address: after `MAX_FAILURES` refused attempts
//! within `WINDOW`, every request from that address that needs the token is answered 429 until
//! the window ends — without looking at the token, so a correct guess in that time is not
//! recognized either. Other addresses, including the operator's, are not affected.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Refused attempts an address may make per window.
const MAX_FAILURES: u32 = 10;
/// The window the failures are counted in.
const WINDOW: Duration = Duration::from_secs(60);
/// Addresses remembered before stale ones are forgotten (bounds memory under a spray of sources).
const PRUNE_AT: usize = 4096;

/// Failed attempts per client address.
#[derive(Debug, Default)]
pub struct FailureThrottle {
    windows: Mutex<HashMap<IpAddr, (Instant, u32)>>,
}

impl FailureThrottle {
    /// How long `peer` must wait before it may try again; `None` when it may try now.
    pub fn blocked_for(&self, peer: IpAddr, now: Instant) -> Option<Duration> {
        let windows = self.windows.lock().expect("throttle lock poisoned");
        let &(start, failures) = windows.get(&peer)?;
        let left = WINDOW.checked_sub(now.duration_since(start))?;
        (failures >= MAX_FAILURES && !left.is_zero()).then_some(left)
    }

    /// Counts a refused attempt of `peer`; returns true when this one used up its allowance.
    pub fn failed(&self, peer: IpAddr, now: Instant) -> bool {
        let mut windows = self.windows.lock().expect("throttle lock poisoned");
        if windows.len() >= PRUNE_AT {
            windows.retain(|_, (start, _)| now.duration_since(*start) < WINDOW);
        }
        let entry = windows.entry(peer).or_insert((now, 0));
        if now.duration_since(entry.0) >= WINDOW {
            *entry = (now, 0);
        }
        entry.1 += 1;
        entry.1 == MAX_FAILURES
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_is_blocked_after_its_failures_until_the_window_ends_and_alone() {
        let throttle = FailureThrottle::default();
        let (guesser, operator): (IpAddr, IpAddr) =
            ("192.0.2.7".parse().unwrap(), "192.0.2.8".parse().unwrap());
        let t0 = Instant::now();
        for i in 1..MAX_FAILURES {
            assert!(!throttle.failed(guesser, t0));
            assert_eq!(throttle.blocked_for(guesser, t0), None, "after {i}");
        }
        assert!(throttle.failed(guesser, t0));
        let later = t0 + Duration::from_secs(15);
        assert_eq!(
            throttle.blocked_for(guesser, later),
            Some(WINDOW - Duration::from_secs(15))
        );
        assert_eq!(throttle.blocked_for(operator, later), None);
        assert_eq!(throttle.blocked_for(guesser, t0 + WINDOW), None);
        // A new window starts from nothing.
        assert!(!throttle.failed(guesser, t0 + WINDOW));
        assert_eq!(throttle.blocked_for(guesser, t0 + WINDOW), None);
    }

    #[test]
    fn stale_addresses_are_forgotten_when_many_have_failed() {
        let throttle = FailureThrottle::default();
        let t0 = Instant::now();
        for i in 0..PRUNE_AT as u32 {
            throttle.failed(IpAddr::from(i.to_be_bytes()), t0);
        }
        throttle.failed("192.0.2.1".parse().unwrap(), t0 + WINDOW);
        assert_eq!(throttle.windows.lock().unwrap().len(), 1);
    }
}
