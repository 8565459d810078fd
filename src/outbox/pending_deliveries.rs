//! The deliveries still to make, per endpoint, and the state of those tried before, kept small:
//! a receiver down for an hour leaves one failed delivery per sandbox, and with a hundred
//! thousand sandboxes a whole `DeliveryState` each (the sandbox's id and the error's text on the
//! heap) took 17 MB (issue 30's eighth round, BENCHMARKS.md). Here a failed delivery is 32 bytes
//! and a shared error text: the sandbox is its event's, and failures mostly share a handful of
//! errors.

use super::DeliveryState;
use super::live_keys::SharedStrings;
use super::seq_map::SeqMap;
use std::collections::HashMap;
use std::sync::Arc;

/// Endpoint → seq → how its delivery went so far (`None`: not tried yet).
#[derive(Debug, Default, PartialEq)]
pub(super) struct PendingDeliveries {
    by_endpoint: HashMap<String, SeqMap<Option<Box<Tried>>>>,
    /// The last errors' texts, each kept once.
    errors: SharedStrings,
}

/// A delivery tried before: a `DeliveryState` without its sandbox.
#[derive(Debug, PartialEq)]
pub(super) struct Tried {
    attempts: u32,
    last_status: Option<u16>,
    next_attempt_at_ms: i64,
    last_error: Option<Arc<str>>,
}

impl Tried {
    /// The state, for a delivery of `sandbox_id`'s event.
    pub(super) fn state(&self, sandbox_id: String) -> DeliveryState {
        DeliveryState {
            sandbox_id,
            attempts: self.attempts,
            next_attempt_at_ms: self.next_attempt_at_ms,
            last_error: self.last_error.as_deref().map(str::to_owned),
            last_status: self.last_status,
        }
    }
}

impl PendingDeliveries {
    /// Adds the delivery of `seq` to `endpoint`, untried, unless it is there (an event copied
    /// forward keeps the state its deliveries have).
    pub(super) fn add(&mut self, endpoint: String, seq: u64) {
        self.by_endpoint
            .entry(endpoint)
            .or_default()
            .insert_if_absent(seq, || None);
    }

    /// Records how the delivery of `seq` to `endpoint` went, if it is still to make.
    pub(super) fn set_state(&mut self, endpoint: &str, seq: u64, state: DeliveryState) {
        let Some(slot) = self
            .by_endpoint
            .get_mut(endpoint)
            .and_then(|p| p.get_mut(seq))
        else {
            return;
        };
        let tried = state.was_tried().then(|| {
            Box::new(Tried {
                attempts: state.attempts,
                last_status: state.last_status,
                next_attempt_at_ms: state.next_attempt_at_ms,
                last_error: state.last_error.map(|e| self.errors.get(&e)),
            })
        });
        if let Some(before) = std::mem::replace(slot, tried) {
            release(&mut self.errors, *before);
        }
    }

    /// The delivery of `seq` to `endpoint` is over.
    pub(super) fn remove(&mut self, endpoint: &str, seq: u64) {
        let Some(pending) = self.by_endpoint.get_mut(endpoint) else {
            return;
        };
        if let Some(Some(tried)) = pending.remove(seq) {
            release(&mut self.errors, *tried);
        }
        if pending.is_empty() {
            self.by_endpoint.remove(endpoint);
        }
    }

    /// The deliveries of `seq` are over everywhere.
    pub(super) fn remove_everywhere(&mut self, seq: u64) {
        for endpoint in self.endpoints_with(seq) {
            self.remove(&endpoint, seq);
        }
    }

    /// The endpoints the delivery of `seq` is still to make to.
    pub(super) fn endpoints_with(&self, seq: u64) -> Vec<String> {
        self.by_endpoint
            .iter()
            .filter(|(_, p)| p.contains(seq))
            .map(|(endpoint, _)| endpoint.clone())
            .collect()
    }

    pub(super) fn anywhere(&self, seq: u64) -> bool {
        self.by_endpoint.values().any(|p| p.contains(seq))
    }

    /// The deliveries to `endpoint` numbered above `after`, oldest first.
    pub(super) fn after(
        &self,
        endpoint: &str,
        after: u64,
    ) -> impl Iterator<Item = (u64, Option<&Tried>)> {
        self.by_endpoint
            .get(endpoint)
            .into_iter()
            .flat_map(move |p| p.iter_after(after))
            .map(|(seq, tried)| (seq, tried.as_deref()))
    }

    /// Per endpoint with something pending, by name: how much, and its oldest delivery.
    pub(super) fn backlogs(&self) -> Vec<(&str, u64, u64, Option<&Tried>)> {
        let mut out: Vec<_> = self
            .by_endpoint
            .iter()
            .filter_map(|(endpoint, pending)| {
                let (seq, tried) = pending.first()?;
                Some((
                    endpoint.as_str(),
                    pending.len() as u64,
                    seq,
                    tried.as_deref(),
                ))
            })
            .collect();
        out.sort_by(|a, b| a.0.cmp(b.0));
        out
    }

    /// Up to `limit` deliveries tried before, after (endpoint, seq) `after`, by endpoint and
    /// seq.
    pub(super) fn tried_after(
        &self,
        after: Option<(&str, u64)>,
        limit: usize,
    ) -> Vec<(&str, u64, &Tried)> {
        let mut endpoints: Vec<&str> = self
            .by_endpoint
            .keys()
            .map(String::as_str)
            .filter(|e| after.is_none_or(|(last, _)| *e >= last))
            .collect();
        endpoints.sort_unstable();
        endpoints
            .into_iter()
            .flat_map(|endpoint| {
                let from = after
                    .filter(|(last, _)| *last == endpoint)
                    .map_or(0, |(_, seq)| seq);
                self.after(endpoint, from)
                    .filter_map(move |(seq, tried)| Some((endpoint, seq, tried?)))
            })
            .take(limit)
            .collect()
    }
}

fn release(errors: &mut SharedStrings, tried: Tried) {
    if let Some(error) = tried.last_error {
        errors.release(error);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failed(error: &str) -> DeliveryState {
        DeliveryState {
            sandbox_id: "sb".into(),
            attempts: 2,
            next_attempt_at_ms: 10,
            last_error: Some(error.into()),
            last_status: Some(503),
        }
    }

    #[test]
    fn a_tried_delivery_reads_back_with_its_events_sandbox() {
        let mut pending = PendingDeliveries::default();
        pending.add("a".into(), 1);
        pending.set_state("a", 1, failed("HTTP 503"));
        pending.set_state("a", 2, failed("not pending: ignored"));
        let states: Vec<_> = pending
            .after("a", 0)
            .map(|(seq, tried)| (seq, tried.map(|t| t.state("sb".into()))))
            .collect();
        assert_eq!(states, [(1, Some(failed("HTTP 503")))]);
        pending.set_state("a", 1, DeliveryState::default());
        assert!(pending.after("a", 0).all(|(_, tried)| tried.is_none()));
    }

    #[test]
    fn an_error_text_is_kept_once_while_a_delivery_holds_it() {
        let mut pending = PendingDeliveries::default();
        for seq in 1..=3 {
            pending.add("a".into(), seq);
            pending.add("b".into(), seq);
            pending.set_state("a", seq, failed("connection refused"));
        }
        pending.set_state("b", 1, failed("timed out"));
        assert_eq!(pending.errors.len(), 2);
        pending.remove("a", 1);
        pending.remove_everywhere(2);
        assert_eq!(pending.errors.len(), 2, "delivery 3 still holds the first");
        pending.remove("b", 1);
        pending.set_state("a", 3, failed("HTTP 500"));
        assert_eq!(pending.errors.len(), 1);
        let mut endpoints = pending.endpoints_with(3);
        endpoints.sort();
        assert_eq!(endpoints, ["a", "b"]);
        pending.remove_everywhere(3);
        assert_eq!(pending, PendingDeliveries::default());
    }

    #[test]
    fn tried_deliveries_are_read_in_pages_by_endpoint_then_seq() {
        let mut pending = PendingDeliveries::default();
        for (endpoint, seq) in [("b", 1), ("a", 5), ("a", 2), ("a", 9), ("b", 3)] {
            pending.add(endpoint.into(), seq);
            if seq != 9 {
                pending.set_state(endpoint, seq, failed("x"));
            }
        }
        let first: Vec<_> = pending
            .tried_after(None, 2)
            .iter()
            .map(|t| (t.0, t.1))
            .collect();
        let rest: Vec<_> = pending
            .tried_after(Some(("a", 5)), 5)
            .iter()
            .map(|t| (t.0, t.1))
            .collect();
        assert_eq!(first, [("a", 2), ("a", 5)]);
        assert_eq!(rest, [("b", 1), ("b", 3)], "untried 9 left out");
    }
}
