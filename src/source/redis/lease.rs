//! The leader lease: one active deliverer per consumer group, a standby that takes over.
//!
//! The lease is one Redis key, set with `NX` and an expiry (`PX`) and renewed by its holder.
//! Its value carries a fencing number (a counter incremented for every lease granted), the
//! holder's name, when it took the lease and a random nonce, so no two grants have the same
//! value. Every command that changes what the group hands out — reading new entries, claiming
//! pending ones — runs in a Lua script that first checks the lease still holds that exact value
//! ([`fenced`]), so an instance that lost the lease while frozen cannot read again when it
//! resumes. Deliveries are fenced locally: [`Leadership`] lapses at a deadline on the monotonic
//! clock that ends before the lease can expire in Redis.
//!
//! Timing, from the lease's time to live (`LEADER_LEASE_TTL`, default 8 s): the holder renews
//! every quarter of it and counts itself active for three quarters of it after each renewal was
//! sent; a standby looks every eighth (at most 1 s) and takes a lease that has been absent for a
//! third of the time to live — long enough for the holder to put its lease back after Redis lost
//! its data (the renewal does that), short enough that a lost holder is replaced within
//! time to live + a third + a poll (about 11.5 s by default).
//!
//! A holder that stops gracefully replaces its lease with a released mark (`released|<holder>|<ms>`)
//! for one time to live, and any instance takes a released lease at once: only a missing key can
//! mean that Redis lost its data, so only a missing key is waited out. A rolling restart, or an
//! emitter restarted onto a backlog, then delivers without the absence wait. The mark expires so
//! that an older version (a rollback), which takes it for a lease held by someone, still takes
//! over as after a crash.

use super::keys::Keys;
use super::{RedisClient, RedisConnection};
use crate::leadership::Leadership;
use crate::metrics::Metrics;
use redis::{FromRedisValue, RedisError, Script};
use std::sync::{Arc, LazyLock};
use std::time::Duration;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Takes the lease if nobody holds it (missing or released), or if its holder has this instance's
/// name (a previous incarnation of it: a restarted process keeps its consumer name); returns the
/// new value, or nil.
const ACQUIRE: &str = r"
local current = redis.call('GET', KEYS[1])
if current and string.sub(current, 1, 9) ~= 'released|'
  and string.match(current, '^[^|]*|(.*)|[^|]*|[^|]*$') ~= ARGV[1] then return false end
local fence = redis.call('INCR', KEYS[2])
local value = fence .. '|' .. ARGV[1] .. '|' .. ARGV[2] .. '|' .. ARGV[3]
redis.call('SET', KEYS[1], value, 'PX', ARGV[4])
return value
";

/// Extends the lease if it is still ours (1), puts it back if it vanished — Redis lost its
/// data — (2), or reports that someone else holds it (0).
const RENEW: &str = r"
local current = redis.call('GET', KEYS[1])
if current == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
if current == false then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 2
end
return 0
";

/// Gives the lease up if it is still ours: ARGV[2], the released mark, takes its place for ARGV[3]
/// ms, so the standby need neither wait for it to expire nor for the absence window.
const RELEASE: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
  return 1
end
return 0
";

/// How a released lease's value starts; the rest is who released it and when (ms).
const RELEASED_PREFIX: &str = "released|";

/// Runs the command in ARGV[2..] only while the lease holds the value ARGV[1].
const FENCED: &str = r"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return redis.error_reply('FENCED this instance no longer holds the leader lease')
end
return redis.call(unpack(ARGV, 2))
";

/// The error code of a command refused by [`FENCED`].
pub(crate) const FENCED_CODE: &str = "FENCED";

/// Runs `command` (name and arguments) on the stream only while `token` is the lease's value.
pub(crate) async fn fenced<T: FromRedisValue>(
    conn: &mut RedisConnection,
    keys: &Keys,
    token: &str,
    command: &[String],
) -> Result<T, RedisError> {
    // Hashed once: the script's SHA-1 would otherwise be computed for every stream read.
    static SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(FENCED));
    let mut invocation = SCRIPT.key(keys.lease());
    invocation.key(&keys.stream).arg(token);
    for arg in command {
        invocation.arg(arg);
    }
    invocation.invoke_async(conn).await
}

/// Lease timing, all derived from the time to live.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LeaseTiming {
    /// How long the lease lives in Redis after each renewal.
    pub ttl: Duration,
}

impl LeaseTiming {
    fn renew_every(self) -> Duration {
        self.ttl / 4
    }

    /// How long after sending a renewal the holder still counts itself active.
    fn valid_for(self) -> Duration {
        self.ttl * 3 / 4
    }

    fn poll_every(self) -> Duration {
        (self.ttl / 8).min(Duration::from_secs(1))
    }

    fn absent_before_taking(self) -> Duration {
        self.ttl / 3
    }
}

/// A lease value, split into its parts.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct LeaseValue {
    pub(crate) fence: u64,
    pub(crate) holder: String,
    pub(crate) since_ms: i64,
}

/// Whether a lease value is the mark a holder left when it gave the lease up.
fn is_released(value: &str) -> bool {
    value.starts_with(RELEASED_PREFIX)
}

impl LeaseValue {
    pub(crate) fn parse(value: &str) -> Option<Self> {
        let mut parts = value.splitn(4, '|');
        let fence = parts.next()?.parse().ok()?;
        let holder = parts.next()?.to_owned();
        let since_ms = parts.next()?.parse().ok()?;
        Some(Self {
            fence,
            holder,
            since_ms,
        })
    }

    fn since_text(&self) -> Option<String> {
        jiff::Timestamp::from_millisecond(self.since_ms)
            .ok()
            .map(|t| t.to_string())
    }
}

/// Keeps or watches the lease until `stop`; then gives it up if held.
pub(crate) struct LeaseKeeper {
    pub(crate) client: Arc<RedisClient>,
    pub(crate) keys: Keys,
    pub(crate) me: String,
    pub(crate) timing: LeaseTiming,
    pub(crate) leadership: Leadership,
    pub(crate) metrics: Arc<Metrics>,
}

impl LeaseKeeper {
    pub(crate) async fn run(self, stop: CancellationToken) {
        let mut held: Option<String> = None;
        let mut last_problem: Option<String> = None;
        while !stop.is_cancelled() {
            let connected = tokio::select! {
                () = stop.cancelled() => break,
                conn = self.client.connect() => conn,
            };
            let result = match connected {
                Ok(mut conn) => {
                    if last_problem.take().is_some() {
                        tracing::info!("leader lease: Redis reachable again");
                    }
                    self.keep(&mut conn, &mut held, &stop).await
                }
                Err(e) => Err(e),
            };
            if let Err(e) = result {
                let problem = e.to_string();
                if last_problem.as_deref() != Some(&problem) {
                    tracing::warn!(error = %problem, "leader lease: Redis unavailable, retrying");
                    last_problem = Some(problem);
                }
            }
            self.note_lapse(&mut held);
            tokio::select! {
                () = stop.cancelled() => break,
                () = tokio::time::sleep(self.timing.poll_every()) => {}
            }
        }
        self.release(held).await;
    }

    /// Renews or watches on one connection until an error or `stop`.
    async fn keep(
        &self,
        conn: &mut RedisConnection,
        held: &mut Option<String>,
        stop: &CancellationToken,
    ) -> Result<(), RedisError> {
        let mut absent_since: Option<Instant> = None;
        let mut seen_holder: Option<String> = None;
        loop {
            self.note_lapse(held);
            let wait = match held.clone() {
                Some(value) => {
                    self.renew(conn, &value, held).await?;
                    self.timing.renew_every()
                }
                None => {
                    let current: Option<String> = redis::cmd("GET")
                        .arg(self.keys.lease())
                        .query_async(conn)
                        .await?;
                    self.observe(current.as_deref(), &mut seen_holder);
                    let holder = current
                        .as_deref()
                        .and_then(LeaseValue::parse)
                        .map(|v| v.holder);
                    let released = current.as_deref().is_some_and(is_released);
                    match current {
                        // Given up by its holder (a graceful stop), or held by our previous
                        // incarnation (a restart under the same name): ours to take at once.
                        Some(_) if released || holder.as_deref() == Some(self.me.as_str()) => {
                            absent_since = None;
                            self.acquire(conn, held).await?;
                        }
                        Some(_) => absent_since = None,
                        None => {
                            let since = *absent_since.get_or_insert_with(Instant::now);
                            if since.elapsed() >= self.timing.absent_before_taking() {
                                absent_since = None;
                                self.acquire(conn, held).await?;
                            }
                        }
                    }
                    self.timing.poll_every()
                }
            };
            self.metrics
                .leader
                .set(i64::from(self.leadership.is_active()));
            tokio::select! {
                () = stop.cancelled() => return Ok(()),
                () = tokio::time::sleep(wait) => {}
            }
        }
    }

    async fn acquire(
        &self,
        conn: &mut RedisConnection,
        held: &mut Option<String>,
    ) -> Result<(), RedisError> {
        let sent = Instant::now();
        let value: Option<String> = Script::new(ACQUIRE)
            .key(self.keys.lease())
            .key(self.keys.fence())
            .arg(&self.me)
            .arg(jiff::Timestamp::now().as_millisecond())
            .arg(uuid::Uuid::new_v4().simple().to_string())
            .arg(self.timing.ttl.as_millis() as u64)
            .invoke_async(conn)
            .await?;
        let Some(value) = value else {
            return Ok(());
        };
        self.leadership
            .activate_until(sent + self.timing.valid_for(), &value);
        let parsed = LeaseValue::parse(&value);
        self.leadership.observe_holder(
            Some(self.me.clone()),
            parsed.as_ref().and_then(LeaseValue::since_text),
            parsed.map(|p| p.fence),
        );
        tracing::info!(
            instance = %self.me,
            lease = %self.keys.lease(),
            ttl_ms = self.timing.ttl.as_millis() as u64,
            "took the leader lease: this instance is now the active deliverer"
        );
        *held = Some(value);
        Ok(())
    }

    async fn renew(
        &self,
        conn: &mut RedisConnection,
        value: &str,
        held: &mut Option<String>,
    ) -> Result<(), RedisError> {
        let sent = Instant::now();
        let outcome: i64 = Script::new(RENEW)
            .key(self.keys.lease())
            .arg(value)
            .arg(self.timing.ttl.as_millis() as u64)
            .invoke_async(conn)
            .await?;
        match outcome {
            1 | 2 => {
                if outcome == 2 {
                    tracing::warn!(
                        instance = %self.me,
                        "the leader lease had vanished from Redis (did Redis restart without its data?); this instance, its holder, set it again"
                    );
                }
                let was_active = self.leadership.is_active();
                self.leadership
                    .activate_until(sent + self.timing.valid_for(), value);
                if !was_active {
                    tracing::info!(
                        instance = %self.me,
                        "renewed the leader lease after a lapse: active again, taking over the pending entries first"
                    );
                }
            }
            _ => {
                self.leadership.step_down();
                *held = None;
                tracing::warn!(
                    instance = %self.me,
                    "lost the leader lease to another instance: stopped delivering, standing by"
                );
            }
        }
        Ok(())
    }

    /// Steps down when the local deadline passed without a renewal (frozen, or cut off).
    fn note_lapse(&self, held: &mut Option<String>) {
        if held.is_some() && self.leadership.lapsed() {
            tracing::warn!(
                instance = %self.me,
                "could not renew the leader lease in time: stopped delivering until it is renewed or another instance takes over"
            );
            self.leadership.step_down();
            // Kept: the next renewal may find the lease still ours (same value) and resume.
        }
        self.metrics
            .leader
            .set(i64::from(self.leadership.is_active()));
    }

    fn observe(&self, current: Option<&str>, seen: &mut Option<String>) {
        let parsed = current.and_then(LeaseValue::parse);
        let holder = parsed.as_ref().map(|p| p.holder.clone());
        if holder != *seen {
            match (&holder, current) {
                (Some(h), _) => {
                    tracing::info!(instance = %self.me, active = %h, "standing by; the active deliverer is {h}")
                }
                (None, Some(value)) if is_released(value) => {
                    tracing::info!(instance = %self.me, "the leader lease was given up by its holder; taking it")
                }
                (None, _) => {
                    tracing::info!(instance = %self.me, "the leader lease is free; taking it unless its holder puts it back")
                }
            }
            seen.clone_from(&holder);
        }
        self.leadership.observe_holder(
            holder,
            parsed.as_ref().and_then(LeaseValue::since_text),
            parsed.map(|p| p.fence),
        );
    }

    async fn release(&self, held: Option<String>) {
        self.leadership.step_down();
        self.metrics.leader.set(0);
        let Some(value) = held else { return };
        let released = async {
            let mut conn = self.client.connect().await?;
            let mark = format!(
                "{RELEASED_PREFIX}{}|{}",
                self.me,
                jiff::Timestamp::now().as_millisecond()
            );
            Script::new(RELEASE)
                .key(self.keys.lease())
                .arg(&value)
                .arg(mark)
                .arg(self.timing.ttl.as_millis() as u64)
                .invoke_async::<i64>(&mut conn)
                .await
        };
        match tokio::time::timeout(Duration::from_secs(2), released).await {
            Ok(Ok(1)) => {
                tracing::info!(instance = %self.me, "gave up the leader lease: another instance can take it at once")
            }
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "could not give up the leader lease; it expires by itself")
            }
            Err(_) => tracing::warn!("giving up the leader lease timed out; it expires by itself"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lease_values_carry_fence_holder_and_time() {
        let v = LeaseValue::parse("42|emitter.emitter[0]|1700000000000|abc").unwrap();
        assert_eq!(v.fence, 42);
        assert_eq!(v.holder, "emitter.emitter[0]");
        assert_eq!(v.since_text().unwrap(), "2023-11-14T22:13:20Z");
        assert_eq!(LeaseValue::parse("garbage"), None);
    }

    #[test]
    fn a_released_mark_names_no_holder() {
        let mark = format!("{RELEASED_PREFIX}emitter.emitter[0]|1700000000000");
        assert!(is_released(&mark));
        assert_eq!(LeaseValue::parse(&mark), None, "no fence: nobody holds it");
        assert!(!is_released("42|released|1700000000000|abc"));
    }

    #[test]
    fn takeover_after_a_lost_holder_stays_within_fifteen_seconds_by_default() {
        let t = LeaseTiming {
            ttl: Duration::from_secs(8),
        };
        assert!(
            t.valid_for() + t.renew_every() <= t.ttl,
            "local deadline before expiry"
        );
        assert!(
            t.absent_before_taking() > t.renew_every(),
            "the holder renews first"
        );
        let worst = t.ttl + t.absent_before_taking() + t.poll_every();
        assert!(worst <= Duration::from_secs(15), "{worst:?}");
    }
}
