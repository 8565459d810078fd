//! Guessing a credential (the admin token, a team's API key) is slowed per client address: after
//! its allowance of refused attempts within `WINDOW`, every request from that address that needs
//! the credential is answered 429 until the window ends — without the credential being looked at,
//! so a correct guess in that time is not recognized either. Only refusals count, so a client
//! with a valid credential is never slowed, and other addresses are not affected. (A keyed
//! rate-limiter crate counts every request: it cannot be asked before the credential is known to
//! be wrong.) Behind a proxy every client shares the proxy's address.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The window refusals are counted in.
const WINDOW: Duration = Duration::from_secs(60);
/// Addresses remembered at most; past this, expired windows are dropped, then the oldest.
const MAX_TRACKED: usize = 10_000;

/// Refused attempts per client address.
#[derive(Debug)]
pub struct FailureThrottle {
    /// Refusals an address may have per window.
    allowance: u32,
    windows: Mutex<HashMap<IpAddr, (Instant, u32)>>,
}

impl FailureThrottle {
    /// A throttle allowing `allowance` refusals per address and minute.
    pub fn new(allowance: u32) -> Self {
        Self {
            allowance,
            windows: Mutex::default(),
        }
    }

    /// How long `peer` must wait before it may try again; `None` when it may try now.
    pub fn blocked_for(&self, peer: IpAddr, now: Instant) -> Option<Duration> {
        let windows = self.windows.lock().unwrap_or_else(|p| p.into_inner());
        let &(start, failures) = windows.get(&peer)?;
        let left = WINDOW.checked_sub(now.duration_since(start))?;
        (failures >= self.allowance && !left.is_zero()).then_some(left)
    }

    /// Counts a refused attempt of `peer`; returns true when this one used up its allowance.
    pub fn failed(&self, peer: IpAddr, now: Instant) -> bool {
        let mut windows = self.windows.lock().unwrap_or_else(|p| p.into_inner());
        if windows.len() >= MAX_TRACKED && !windows.contains_key(&peer) {
            windows.retain(|_, (start, _)| now.duration_since(*start) < WINDOW);
            if windows.len() >= MAX_TRACKED
                && let Some(oldest) = windows
                    .iter()
                    .min_by_key(|(_, (start, _))| *start)
                    .map(|(ip, _)| *ip)
            {
                windows.remove(&oldest);
            }
        }
        let entry = windows.entry(peer).or_insert((now, 0));
        if now.duration_since(entry.0) >= WINDOW {
            *entry = (now, 0);
        }
        entry.1 += 1;
        entry.1 == self.allowance
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALLOWANCE: u32 = 10;

    #[test]
    fn an_address_is_blocked_after_its_failures_until_the_window_ends_and_alone() {
        let throttle = FailureThrottle::new(ALLOWANCE);
        let (guesser, operator): (IpAddr, IpAddr) =
            ("192.0.2.7".parse().unwrap(), "192.0.2.8".parse().unwrap());
        let t0 = Instant::now();
        for i in 1..ALLOWANCE {
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
    fn memory_stays_bounded_under_a_spray_of_addresses() {
        let throttle = FailureThrottle::new(ALLOWANCE);
        let t0 = Instant::now();
        for i in 0..(MAX_TRACKED as u32 + 50) {
            throttle.failed(
                IpAddr::from(i.to_be_bytes()),
                t0 + Duration::from_millis(i.into()),
            );
        }
        assert_eq!(throttle.windows.lock().unwrap().len(), MAX_TRACKED);
        // Expired windows go first.
        throttle.failed("192.0.2.1".parse().unwrap(), t0 + WINDOW * 2);
        assert_eq!(throttle.windows.lock().unwrap().len(), 1);
    }
}
