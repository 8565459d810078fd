//! What deliveries just did, for people watching: the recent attempts (a bounded ring, kept on
//! disk too by [`AttemptLog`]), a live feed of them, and per-endpoint success rates by the minute.
//! Nothing here decides anything; the outbox stays the record of what is owed.

mod attempt_log;
mod exchange;

pub use attempt_log::AttemptLog;
use attempt_log::LogSender;
pub use exchange::Exchange;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use tokio::sync::broadcast;

/// Attempts kept for `/admin/v1/deliveries`; older ones are forgotten.
const RECENT: usize = 10_000;
/// Attempts a live-feed subscriber may fall behind before it is told it missed some; a slow
/// subscriber never holds up delivery.
const FEED_BUFFER: usize = 1024;
/// Minutes of success-rate history per endpoint.
const MINUTES: usize = 60;

/// One delivery attempt as an operator sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeliveryRecord {
    /// Increasing number of this record (the pagination cursor).
    pub seq: u64,
    /// When the attempt finished (ms since the epoch).
    pub at_ms: i64,
    /// Endpoint id.
    pub endpoint: String,
    /// Event id.
    pub event_id: String,
    /// Sandbox id.
    pub sandbox_id: String,
    /// Lifecycle label.
    pub label: String,
    /// `delivered`, `retry` (failed, tried again later) or `dead` (moved to dead letters).
    pub outcome: String,
    /// HTTP status, when there was an answer.
    pub status: Option<u16>,
    /// Attempt number (1, 2, …).
    pub attempt: u32,
    /// How long the attempt took.
    pub latency_ms: u64,
    /// Why it failed, when it did.
    pub error: Option<String>,
    /// Sent by an operator's test, not from the outbox.
    pub test: bool,
    /// The request and the answer, for the delivery log in Postgres: on the live feed only (not
    /// kept in the recent attempts, the file or the admin API's answers).
    #[serde(skip)]
    pub exchange: Option<Arc<Exchange>>,
}

/// What a finished attempt reports, before it gets its number and time.
#[derive(Debug, Clone)]
pub struct Attempted {
    /// Endpoint id.
    pub endpoint: String,
    /// Event id.
    pub event_id: String,
    /// Sandbox id.
    pub sandbox_id: String,
    /// Lifecycle label.
    pub label: String,
    /// `delivered`, `retry` or `dead`.
    pub outcome: &'static str,
    /// HTTP status, when there was an answer.
    pub status: Option<u16>,
    /// Attempt number.
    pub attempt: u32,
    /// How long the attempt took.
    pub latency_ms: u64,
    /// Why it failed.
    pub error: Option<String>,
    /// Sent by an operator's test.
    pub test: bool,
    /// The request and the answer, for the live feed.
    pub exchange: Option<Exchange>,
}

/// Which recent attempts to list; every set field must match.
#[derive(Debug, Clone, Default)]
pub struct DeliveryQuery {
    /// Endpoint id.
    pub endpoint: Option<String>,
    /// Sandbox id.
    pub sandbox_id: Option<String>,
    /// Event id.
    pub event_id: Option<String>,
    /// `delivered`, `retry` or `dead`.
    pub outcome: Option<String>,
    /// Finished at or after (ms).
    pub since_ms: Option<i64>,
    /// Finished before (ms).
    pub until_ms: Option<i64>,
    /// Only records older than this cursor (a `seq`), for the next page.
    pub before: Option<u64>,
    /// Page size.
    pub limit: usize,
}

impl DeliveryQuery {
    /// A time bound as the API and the CLI take it: RFC 3339, or milliseconds since the epoch.
    pub fn parse_time(text: &str) -> Option<i64> {
        text.parse::<i64>().ok().or_else(|| {
            text.parse::<jiff::Timestamp>()
                .ok()
                .map(|t| t.as_millisecond())
        })
    }

    fn matches(&self, r: &DeliveryRecord) -> bool {
        let eq = |want: &Option<String>, have: &str| want.as_deref().is_none_or(|w| w == have);
        eq(&self.endpoint, &r.endpoint)
            && eq(&self.sandbox_id, &r.sandbox_id)
            && eq(&self.event_id, &r.event_id)
            && eq(&self.outcome, &r.outcome)
            && self.since_ms.is_none_or(|t| r.at_ms >= t)
            && self.until_ms.is_none_or(|t| r.at_ms < t)
            && self.before.is_none_or(|c| r.seq < c)
    }
}

/// The page of `records` (oldest first) that `query` asks for, newest first.
pub fn page<'a>(
    records: impl DoubleEndedIterator<Item = &'a DeliveryRecord>,
    query: &DeliveryQuery,
) -> DeliveryPage {
    let limit = query.limit.max(1);
    let mut items: Vec<DeliveryRecord> = records
        .rev()
        .filter(|r| query.matches(r))
        .take(limit + 1)
        .cloned()
        .collect();
    let more = items.len() > limit;
    items.truncate(limit);
    let next_cursor = more.then(|| items.last().map(|r| r.seq)).flatten();
    DeliveryPage { items, next_cursor }
}

/// One page of recent attempts, newest first.
#[derive(Debug, Clone, Serialize)]
pub struct DeliveryPage {
    /// The attempts.
    pub items: Vec<DeliveryRecord>,
    /// Pass as `cursor` for the next (older) page; none when this is the last.
    pub next_cursor: Option<u64>,
}

/// Attempts and successes of one endpoint over a window.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct SuccessRate {
    /// Attempts made.
    pub attempts: u64,
    /// Attempts answered 2xx.
    pub delivered: u64,
    /// delivered / attempts; none without attempts.
    pub rate: Option<f64>,
}

/// Per-minute attempt counts of one endpoint: (minute since the epoch, attempts, delivered).
#[derive(Default)]
struct Minutes(VecDeque<(i64, u64, u64)>);

impl Minutes {
    fn add(&mut self, minute: i64, delivered: bool) {
        match self.0.back_mut() {
            Some((m, attempts, ok)) if *m == minute => {
                *attempts += 1;
                *ok += u64::from(delivered);
            }
            _ => self.0.push_back((minute, 1, u64::from(delivered))),
        }
        while self.0.len() > MINUTES {
            self.0.pop_front();
        }
    }

    /// Over the last `window` minutes, the current one included.
    fn rate(&self, now_minute: i64, window: i64) -> SuccessRate {
        let (attempts, delivered) = self
            .0
            .iter()
            .filter(|(m, _, _)| *m > now_minute - window)
            .fold((0, 0), |(a, d), (_, ma, md)| (a + ma, d + md));
        SuccessRate {
            attempts,
            delivered,
            rate: (attempts > 0).then(|| delivered as f64 / attempts as f64),
        }
    }
}

struct Inner {
    next_seq: u64,
    recent: VecDeque<DeliveryRecord>,
    minutes: BTreeMap<String, Minutes>,
}

impl Inner {
    fn remember(&mut self, record: DeliveryRecord) {
        // Operators' test events say nothing about the endpoint's real traffic.
        if !record.test {
            self.minutes
                .entry(record.endpoint.clone())
                .or_default()
                .add(
                    record.at_ms.div_euclid(60_000),
                    record.outcome == "delivered",
                );
        }
        self.recent.push_back(record);
        while self.recent.len() > RECENT {
            self.recent.pop_front();
        }
    }
}

/// The journal shared by every dispatcher and the admin API.
pub struct DeliveryJournal {
    inner: Mutex<Inner>,
    feed: broadcast::Sender<DeliveryRecord>,
    log: Option<LogSender>,
}

impl Default for DeliveryJournal {
    fn default() -> Self {
        Self::new()
    }
}

impl DeliveryJournal {
    /// An empty journal, kept in memory only.
    pub fn new() -> Self {
        Self {
            inner: Mutex::new(Inner {
                next_seq: 1,
                recent: VecDeque::new(),
                minutes: BTreeMap::new(),
            }),
            feed: broadcast::channel(FEED_BUFFER).0,
            log: None,
        }
    }

    /// A journal that starts from the history in `log` and appends every attempt to it.
    pub fn persisted(log: &AttemptLog) -> std::io::Result<Self> {
        let mut journal = Self::new();
        let history = log.read()?;
        {
            let inner = journal.inner.get_mut().expect("journal lock poisoned");
            let start = history.len().saturating_sub(RECENT);
            for record in history.into_iter().skip(start) {
                inner.next_seq = inner.next_seq.max(record.seq + 1);
                inner.remember(record);
            }
        }
        journal.log = Some(log.start_writer()?);
        Ok(journal)
    }

    /// Records an attempt and tells live subscribers; never waits for them.
    pub fn record(&self, attempted: Attempted) {
        self.record_at(attempted, jiff::Timestamp::now().as_millisecond());
    }

    fn record_at(&self, a: Attempted, at_ms: i64) {
        let record = {
            let mut inner = self.inner.lock().expect("journal lock poisoned");
            let record = DeliveryRecord {
                seq: inner.next_seq,
                at_ms,
                endpoint: a.endpoint,
                event_id: a.event_id,
                sandbox_id: a.sandbox_id,
                label: a.label,
                outcome: a.outcome.to_owned(),
                status: a.status,
                attempt: a.attempt,
                latency_ms: a.latency_ms,
                error: a.error,
                test: a.test,
                exchange: None,
            };
            inner.next_seq += 1;
            // The request and answer travel on the feed only: the ring and the file keep the
            // outcome, so they stay small.
            inner.remember(record.clone());
            record
        };
        if let Some(log) = &self.log {
            log.send(record.clone());
        }
        let record = DeliveryRecord {
            exchange: a.exchange.map(Arc::new),
            ..record
        };
        // No subscriber is fine: nobody is watching.
        let _ = self.feed.send(record);
    }

    /// Recent attempts matching `query`, newest first.
    pub fn query(&self, query: &DeliveryQuery) -> DeliveryPage {
        let inner = self.inner.lock().expect("journal lock poisoned");
        page(inner.recent.iter(), query)
    }

    /// Success rate of `endpoint` over the last `minutes` minutes (at most 60).
    pub fn success_rate(&self, endpoint: &str, minutes: i64) -> SuccessRate {
        let now_minute = jiff::Timestamp::now().as_millisecond().div_euclid(60_000);
        let inner = self.inner.lock().expect("journal lock poisoned");
        inner
            .minutes
            .get(endpoint)
            .map(|m| m.rate(now_minute, minutes))
            .unwrap_or_default()
    }

    /// A live feed of attempts from now on; a receiver that falls more than the buffer behind
    /// gets `RecvError::Lagged` with the number it missed.
    pub fn subscribe(&self) -> broadcast::Receiver<DeliveryRecord> {
        self.feed.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attempt(endpoint: &str, sandbox: &str, outcome: &'static str) -> Attempted {
        Attempted {
            endpoint: endpoint.into(),
            event_id: format!("ev-{sandbox}"),
            sandbox_id: sandbox.into(),
            label: "create".into(),
            outcome,
            status: Some(200),
            attempt: 1,
            latency_ms: 3,
            error: None,
            test: false,
            exchange: None,
        }
    }

    #[test]
    fn pages_run_newest_first_and_filters_combine() {
        let journal = DeliveryJournal::new();
        for i in 0..5 {
            journal.record_at(attempt("a", &format!("s{i}"), "delivered"), 1_000 + i);
            journal.record_at(attempt("b", &format!("s{i}"), "retry"), 1_000 + i);
        }
        let first = journal.query(&DeliveryQuery {
            endpoint: Some("a".into()),
            limit: 2,
            ..DeliveryQuery::default()
        });
        let sandboxes: Vec<_> = first.items.iter().map(|r| r.sandbox_id.as_str()).collect();
        assert_eq!(sandboxes, ["s4", "s3"]);
        let second = journal.query(&DeliveryQuery {
            endpoint: Some("a".into()),
            before: first.next_cursor,
            limit: 10,
            ..DeliveryQuery::default()
        });
        let sandboxes: Vec<_> = second.items.iter().map(|r| r.sandbox_id.as_str()).collect();
        assert_eq!(sandboxes, ["s2", "s1", "s0"]);
        assert_eq!(second.next_cursor, None);
        let retries_of_s1 = journal.query(&DeliveryQuery {
            sandbox_id: Some("s1".into()),
            outcome: Some("retry".into()),
            since_ms: Some(1_001),
            until_ms: Some(1_002),
            limit: 10,
            ..DeliveryQuery::default()
        });
        assert_eq!(retries_of_s1.items.len(), 1);
        assert_eq!(retries_of_s1.items[0].endpoint, "b");
    }

    #[test]
    fn a_persisted_journal_starts_from_its_history_and_continues_its_numbers() {
        let dir = tempfile::tempdir().unwrap();
        let log = AttemptLog::new(dir.path());
        let journal = DeliveryJournal::persisted(&log).unwrap();
        journal.record(attempt("a", "s1", "delivered"));
        journal.record(attempt("a", "s2", "retry"));
        for _ in 0..500 {
            if log.read().unwrap().len() == 2 {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        drop(journal);
        let again = DeliveryJournal::persisted(&log).unwrap();
        again.record(attempt("a", "s3", "delivered"));
        let all = again.query(&DeliveryQuery {
            limit: 10,
            ..DeliveryQuery::default()
        });
        let seen: Vec<_> = all
            .items
            .iter()
            .map(|r| (r.seq, r.sandbox_id.as_str()))
            .collect();
        assert_eq!(seen, [(3, "s3"), (2, "s2"), (1, "s1")]);
        let rate = again.success_rate("a", 5);
        assert_eq!((rate.attempts, rate.delivered), (3, 2));
    }

    #[test]
    fn success_rate_counts_only_the_window() {
        let mut m = Minutes::default();
        m.add(100, true);
        m.add(100, false);
        m.add(130, true);
        m.add(131, true);
        let last5 = m.rate(131, 5);
        assert_eq!((last5.attempts, last5.delivered), (2, 2));
        let last60 = m.rate(131, 60);
        assert_eq!((last60.attempts, last60.delivered), (4, 3));
        assert_eq!(last60.rate, Some(0.75));
        assert_eq!(m.rate(300, 5).rate, None);
    }

    #[test]
    fn the_request_and_answer_travel_on_the_feed_only() {
        let journal = DeliveryJournal::new();
        let mut feed = journal.subscribe();
        let exchange = Exchange {
            started_at: jiff::Timestamp::UNIX_EPOCH,
            event_type: "sandbox.lifecycle.created".into(),
            url: "https://hooks.example.com/e2b".parse().unwrap(),
            request: crate::deliver::format::SignedRequest {
                body: b"{}".to_vec(),
                headers: vec![("e2b-signature", "sig-value".into())],
            },
            response: None,
            error_class: None,
        };
        journal.record(Attempted {
            exchange: Some(exchange.clone()),
            ..attempt("a", "s1", "delivered")
        });
        let fed = feed.try_recv().unwrap();
        assert_eq!(fed.exchange.as_deref(), Some(&exchange));
        let kept = journal.query(&DeliveryQuery {
            limit: 10,
            ..DeliveryQuery::default()
        });
        assert_eq!(kept.items[0].exchange, None);
        let shown = serde_json::to_string(&fed).unwrap();
        assert!(
            !shown.contains("sig-value") && !shown.contains("hooks.example.com"),
            "{shown}"
        );
        assert!(!format!("{fed:?}").contains("sig-value"));
    }

    #[test]
    fn a_slow_subscriber_is_told_what_it_missed_and_never_blocks_recording() {
        let journal = DeliveryJournal::new();
        let mut slow = journal.subscribe();
        for i in 0..(FEED_BUFFER + 10) {
            journal.record(attempt("a", &format!("s{i}"), "delivered"));
        }
        match slow.try_recv() {
            Err(broadcast::error::TryRecvError::Lagged(missed)) => assert_eq!(missed, 10),
            other => panic!("expected a lag notice, got {other:?}"),
        }
        assert_eq!(slow.try_recv().unwrap().sandbox_id, "s10");
    }
}
