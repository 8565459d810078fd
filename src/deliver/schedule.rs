//! The dispatcher's plan, without I/O: per-sandbox queues of pending deliveries, and the heads
//! that may be attempted, ordered by when. Only a sandbox's oldest pending delivery is ever a head,
//! so one sandbox's events go out in order while other sandboxes proceed.

use crate::outbox::{DeliveryState, PendingDelivery};
use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::Arc;

/// In-memory scheduling state of one endpoint.
#[derive(Default)]
pub(super) struct Schedule {
    /// The highest sequence number loaded (the next read starts after it).
    pub(super) cursor: u64,
    /// Deliveries held, in flight or waiting.
    pub(super) loaded: usize,
    queues: HashMap<Arc<str>, VecDeque<PendingDelivery>>,
    /// Heads not in flight, by (not-before time, seq).
    ready: BTreeSet<(i64, u64)>,
    head_sandbox: HashMap<u64, Arc<str>>,
}

impl Schedule {
    /// Adds a pending delivery read from the outbox (in sequence order).
    pub(super) fn push(&mut self, row: PendingDelivery) {
        self.cursor = self.cursor.max(row.seq);
        self.loaded += 1;
        let sandbox: Arc<str> = match self.queues.get_key_value(row.state.sandbox_id.as_str()) {
            Some((k, _)) => k.clone(),
            None => Arc::from(row.state.sandbox_id.as_str()),
        };
        // Room for one: most sandboxes have one delivery loaded, and an empty `VecDeque` grows
        // to four at its first push (352 bytes a sandbox, 2.6 MiB of a window of 10 000 over as
        // many sandboxes).
        let queue = self
            .queues
            .entry(sandbox.clone())
            .or_insert_with(|| VecDeque::with_capacity(1));
        if queue.is_empty() {
            self.ready.insert((row.state.next_attempt_at_ms, row.seq));
            self.head_sandbox.insert(row.seq, sandbox);
        }
        queue.push_back(row);
    }

    /// Takes the next head whose time has come.
    pub(super) fn pop_due(&mut self, now_ms: i64) -> Option<(Arc<str>, PendingDelivery)> {
        let &(at, seq) = self.ready.first()?;
        if at > now_ms {
            return None;
        }
        self.ready.pop_first();
        let sandbox = self.head_sandbox.remove(&seq)?;
        let head = self.queues.get(&sandbox)?.front()?.clone();
        Some((sandbox, head))
    }

    /// The head of `sandbox` is finished (delivered or dead): the next one becomes eligible.
    pub(super) fn advance(&mut self, sandbox: &Arc<str>) {
        let Some(queue) = self.queues.get_mut(sandbox) else {
            return;
        };
        queue.pop_front();
        self.loaded -= 1;
        match queue.front() {
            Some(next) => {
                self.ready.insert((next.state.next_attempt_at_ms, next.seq));
                self.head_sandbox.insert(next.seq, sandbox.clone());
            }
            None => {
                self.queues.remove(sandbox);
            }
        }
    }

    /// The head of `sandbox` failed and waits until `state.next_attempt_at_ms`.
    pub(super) fn reschedule(&mut self, sandbox: &Arc<str>, state: DeliveryState) {
        let Some(head) = self.queues.get_mut(sandbox).and_then(|q| q.front_mut()) else {
            return;
        };
        head.state = state;
        self.ready.insert((head.state.next_attempt_at_ms, head.seq));
        self.head_sandbox.insert(head.seq, sandbox.clone());
    }

    /// The state of `sandbox`'s head (in flight or waiting).
    pub(super) fn head_state(&self, sandbox: &Arc<str>) -> Option<DeliveryState> {
        Some(self.queues.get(sandbox)?.front()?.state.clone())
    }

    /// When the earliest waiting head becomes due.
    pub(super) fn next_due(&self) -> Option<i64> {
        self.ready.first().map(|(at, _)| *at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(seq: u64, sandbox: &str, at_ms: i64) -> PendingDelivery {
        PendingDelivery {
            seq,
            state: DeliveryState {
                sandbox_id: sandbox.into(),
                attempts: 0,
                next_attempt_at_ms: at_ms,
                last_error: None,
                last_status: None,
            },
        }
    }

    fn drain_due(schedule: &mut Schedule, now_ms: i64) -> Vec<(String, u64)> {
        std::iter::from_fn(|| schedule.pop_due(now_ms))
            .map(|(sandbox, head)| (sandbox.to_string(), head.seq))
            .collect()
    }

    #[test]
    fn only_each_sandboxs_oldest_delivery_is_due_and_the_next_follows_its_advance() {
        let mut s = Schedule::default();
        for (seq, sandbox) in [(1, "a"), (2, "b"), (3, "a"), (4, "a"), (5, "c")] {
            s.push(row(seq, sandbox, 0));
        }
        assert_eq!((s.cursor, s.loaded), (5, 5));
        assert_eq!(
            drain_due(&mut s, 0),
            [("a".into(), 1), ("b".into(), 2), ("c".into(), 5)]
        );
        // While a's head is in flight nothing else of a is due.
        assert_eq!(s.pop_due(0), None);
        s.advance(&Arc::from("a"));
        assert_eq!(drain_due(&mut s, 0), [("a".into(), 3)]);
        s.advance(&Arc::from("a"));
        s.advance(&Arc::from("b"));
        assert_eq!(drain_due(&mut s, 0), [("a".into(), 4)]);
        assert_eq!(s.loaded, 2);
    }

    #[test]
    fn a_failed_head_waits_for_its_time_and_keeps_its_sandbox_behind_it() {
        let mut s = Schedule::default();
        s.push(row(1, "a", 0));
        s.push(row(2, "a", 0));
        s.push(row(3, "b", 0));
        let (a, head) = s.pop_due(0).unwrap();
        assert_eq!(head.seq, 1);
        let mut retry = head.state.clone();
        retry.attempts = 1;
        retry.next_attempt_at_ms = 5_000;
        s.reschedule(&a, retry);
        assert_eq!(s.next_due(), Some(0));
        assert_eq!(drain_due(&mut s, 4_999), [("b".into(), 3)]);
        assert_eq!(s.next_due(), Some(5_000));
        let (_, again) = s.pop_due(5_000).unwrap();
        assert_eq!((again.seq, again.state.attempts), (1, 1));
        assert_eq!(s.head_state(&a).unwrap().attempts, 1);
        assert_eq!(s.head_state(&Arc::from("ghost")), None);
    }

    #[test]
    fn heads_come_out_by_time_then_by_sequence() {
        let mut s = Schedule::default();
        s.push(row(7, "late", 300));
        s.push(row(8, "early", 100));
        s.push(row(9, "tie", 100));
        assert_eq!(s.next_due(), Some(100));
        assert_eq!(
            drain_due(&mut s, 1_000),
            [("early".into(), 8), ("tie".into(), 9), ("late".into(), 7)]
        );
        assert_eq!(s.next_due(), None);
    }

    #[test]
    fn finishing_an_unknown_sandbox_changes_nothing() {
        let mut s = Schedule::default();
        s.push(row(1, "a", 0));
        s.advance(&Arc::from("ghost"));
        s.reschedule(&Arc::from("ghost"), row(9, "ghost", 0).state);
        assert_eq!(s.loaded, 1);
        assert_eq!(drain_due(&mut s, 0), [("a".into(), 1)]);
    }
}
