//! What an append tells the rest of the service: the dispatchers of the endpoints that got work
//! are woken, the events are kept in memory for delivery and counted, and copies go to the event
//! history when one is attached.

use super::{AppendReport, Outbox, StoredEvent};
use crate::event::SandboxEvent;
use std::sync::Arc;

impl Outbox {
    /// Also sends every newly received event to `history`, without ever waiting for it: when
    /// its buffer is full the event is left out of the history and counted. Set once.
    pub fn send_received_to(&self, history: tokio::sync::mpsc::Sender<SandboxEvent>) {
        let _ = self.received.set(history);
    }

    /// Copies of `events` for the history, when one is attached.
    pub(super) fn copies_for_history<'a>(
        &self,
        events: impl Iterator<Item = &'a SandboxEvent>,
    ) -> Option<Vec<SandboxEvent>> {
        self.received.get().map(|_| events.cloned().collect())
    }

    pub(super) fn send_to_history(&self, copies: Option<Vec<SandboxEvent>>, report: &AppendReport) {
        let (Some(history), Some(copies)) = (self.received.get(), copies) else {
            return;
        };
        for (event, new) in copies.into_iter().zip(&report.is_new) {
            if *new && history.try_send(event).is_err() {
                self.metrics.event_history_dropped.inc();
            }
        }
    }

    /// Keeps what was just stored for delivery in memory too (see [`super::recent`]).
    pub(super) fn keep_recent(
        &self,
        source: &str,
        events: Arc<Vec<SandboxEvent>>,
        report: &AppendReport,
    ) {
        // The write closure holding the other reference is gone once the append returned.
        let events = Arc::try_unwrap(events).unwrap_or_else(|shared| (*shared).clone());
        self.recent.keep(
            events
                .into_iter()
                .zip(&report.seqs)
                .filter_map(|(event, seq)| {
                    // Duplicates and events no endpoint wants got no sequence number.
                    let seq = (*seq)?;
                    let stored = StoredEvent {
                        event,
                        appended_at_ms: report.appended_at_ms,
                        source: source.to_owned(),
                    };
                    Some((seq, stored))
                }),
        );
    }

    pub(super) fn after_append(
        &self,
        source: &'static str,
        labels: &[String],
        report: &AppendReport,
    ) {
        for (label, new) in labels.iter().zip(&report.is_new) {
            if *new {
                self.metrics.event_received(source, label);
            }
        }
        if let Some(last) = report.last_seq {
            self.appended.send_replace(last);
            let wakers = self.wakers.lock().unwrap_or_else(|e| e.into_inner());
            for endpoint in &report.endpoints {
                if let Some(waker) = wakers.get(endpoint) {
                    waker.clone().wake();
                }
            }
        }
    }
}
