//! The retry policy, as data: a schedule of delays, jitter, a maximum age, `Retry-After` bounds.

use crate::util::duration::parse_duration;
use rand::RngExt;
use serde::Deserialize;
use std::time::Duration;

/// When to try again after a failed attempt, and when to give up.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    /// Delay before retry n (1-based); the last entry repeats.
    pub schedule: Vec<Duration>,
    /// Each delay is scaled by a random factor in `1 ± jitter`, so retries of many events spread out.
    pub jitter: f64,
    /// An event still undelivered this long after it entered the outbox is dead-lettered.
    pub max_age: Duration,
    /// A `Retry-After` longer than this is capped.
    pub max_retry_after: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        let s = Duration::from_secs;
        Self {
            schedule: vec![s(5), s(30), s(120), s(600), s(1800), s(3600)],
            jitter: 0.2,
            max_age: s(24 * 3600),
            max_retry_after: s(3600),
        }
    }
}

/// What to do after a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum RetryDecision {
    /// Try again after this delay.
    RetryAfter(Duration),
    /// The policy is exhausted: dead-letter the event.
    GiveUp,
}

impl RetryPolicy {
    /// Decides after `failed_attempts` failures, `age` after the event entered the outbox.
    pub fn decide(
        &self,
        failed_attempts: u32,
        age: Duration,
        retry_after: Option<Duration>,
    ) -> RetryDecision {
        if age >= self.max_age {
            return RetryDecision::GiveUp;
        }
        let index =
            (failed_attempts.max(1) as usize - 1).min(self.schedule.len().saturating_sub(1));
        let base = self.schedule.get(index).copied().unwrap_or_default();
        let jittered = if self.jitter > 0.0 && !base.is_zero() {
            let factor = rand::rng().random_range((1.0 - self.jitter)..=(1.0 + self.jitter));
            base.mul_f64(factor)
        } else {
            base
        };
        let wanted = match retry_after {
            Some(ra) => jittered.max(ra.min(self.max_retry_after)),
            None => jittered,
        };
        // The last attempt happens at the deadline rather than never.
        RetryDecision::RetryAfter(wanted.min(self.max_age - age))
    }
}

/// The `[retry]` table of the config file; durations as "5s", "2m", "1h".
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RetryToml {
    /// Delays between attempts.
    pub schedule: Option<Vec<String>>,
    /// Jitter fraction, 0 to 1.
    pub jitter: Option<f64>,
    /// Maximum age before dead-lettering.
    pub max_age: Option<String>,
    /// Cap on `Retry-After`.
    pub max_retry_after: Option<String>,
}

impl RetryToml {
    /// Applies the table over the defaults; errors name the key.
    pub fn into_policy(self) -> Result<RetryPolicy, (String, String)> {
        let mut policy = RetryPolicy::default();
        if let Some(list) = self.schedule {
            if list.is_empty() {
                return Err((
                    "retry.schedule".into(),
                    "must list at least one delay".into(),
                ));
            }
            policy.schedule = list
                .iter()
                .map(|s| parse_duration(s).map_err(|e| ("retry.schedule".to_owned(), e)))
                .collect::<Result<_, _>>()?;
        }
        if let Some(j) = self.jitter {
            if !(0.0..1.0).contains(&j) {
                return Err(("retry.jitter".into(), format!("{j} is not in [0, 1)")));
            }
            policy.jitter = j;
        }
        if let Some(s) = self.max_age {
            policy.max_age = parse_duration(&s).map_err(|e| ("retry.max_age".to_owned(), e))?;
        }
        if let Some(s) = self.max_retry_after {
            policy.max_retry_after =
                parse_duration(&s).map_err(|e| ("retry.max_retry_after".to_owned(), e))?;
        }
        Ok(policy)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_grows_then_repeats_its_last_step() {
        let policy = RetryPolicy {
            jitter: 0.0,
            ..RetryPolicy::default()
        };
        let day = Duration::from_secs(24 * 3600);
        let d = |n| match policy.decide(n, Duration::ZERO, None) {
            RetryDecision::RetryAfter(d) => d.as_secs(),
            RetryDecision::GiveUp => panic!("gave up"),
        };
        assert_eq!(
            [d(1), d(2), d(3), d(4), d(5), d(6), d(7), d(50)],
            [5, 30, 120, 600, 1800, 3600, 3600, 3600]
        );
        assert_eq!(policy.decide(3, day, None), RetryDecision::GiveUp);
    }

    #[test]
    fn jitter_stays_within_bounds() {
        let policy = RetryPolicy::default();
        for _ in 0..200 {
            let RetryDecision::RetryAfter(d) = policy.decide(2, Duration::ZERO, None) else {
                panic!()
            };
            assert!((24.0..=36.0).contains(&d.as_secs_f64()), "{d:?}");
        }
    }

    #[test]
    fn retry_after_is_honoured_within_bounds_and_deadline() {
        let policy = RetryPolicy {
            jitter: 0.0,
            ..RetryPolicy::default()
        };
        let at =
            |ra, age| policy.decide(1, Duration::from_secs(age), Some(Duration::from_secs(ra)));
        assert_eq!(
            at(60, 0),
            RetryDecision::RetryAfter(Duration::from_secs(60))
        );
        assert_eq!(at(1, 0), RetryDecision::RetryAfter(Duration::from_secs(5)));
        assert_eq!(
            at(100_000, 0),
            RetryDecision::RetryAfter(Duration::from_secs(3600))
        );
        // Never later than the maximum age.
        assert_eq!(
            at(600, 86_000),
            RetryDecision::RetryAfter(Duration::from_secs(400))
        );
    }

    #[test]
    fn toml_overrides_and_errors_name_the_key() {
        let t: RetryToml =
            toml::from_str("schedule = [\"1s\", \"2m\"]\nmax_age = \"1h 30m\"").unwrap();
        let p = t.into_policy().unwrap();
        assert_eq!(
            p.schedule,
            [Duration::from_secs(1), Duration::from_secs(120)]
        );
        assert_eq!(p.max_age, Duration::from_secs(5400));
        let bad: RetryToml = toml::from_str("max_age = \"forever\"").unwrap();
        assert_eq!(bad.into_policy().unwrap_err().0, "retry.max_age");
    }
}
