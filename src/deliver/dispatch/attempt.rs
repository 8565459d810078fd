//! One delivery attempt: rendered, sent (unless this instance stopped being the active one
//! meanwhile), and what its result means: the log line, the journal, the metrics, the retry
//! decision, the completion the outbox records and the sandbox's queue.

use super::Dispatcher;
use crate::deliver::endpoint::EndpointConfig;
use crate::deliver::error_class::ErrorClass;
use crate::deliver::format::{self, SignedRequest};
use crate::deliver::http::{DeliveryAttempt, WebhookClient};
use crate::deliver::journal::{Attempted, Exchange};
use crate::deliver::retry::RetryDecision;
use crate::deliver::schedule::Schedule;
use crate::leadership::Leadership;
use crate::outbox::{Completion, DeliveryState, PendingDelivery, StoredEvent};
use crate::util::time::now_ms;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// What the journal says of an attempt cut short by a stop (the drain deadline passed).
const CANCELED: &str =
    "canceled: the service stopped before the endpoint answered; the event stays in the outbox";

/// The result of one attempt, back from its task.
pub(super) struct Finished {
    seq: u64,
    sandbox: Arc<str>,
    result: AttemptResult,
}

pub(super) enum AttemptResult {
    Sent(Arc<StoredEvent>, DeliveryAttempt, Request),
    /// The pending row has no event record (should not happen; dead-lettered so it is visible).
    Missing,
    /// Not sent: this instance stopped being the active deliverer before the request.
    NotActive,
    /// Given up without an answer because the service stops (the drain deadline passed): the
    /// event stays pending in the outbox, as if the attempt had not been made.
    Canceled(Arc<StoredEvent>, Duration, Request),
}

/// The request an attempt made, kept for the delivery log.
pub(super) struct Request {
    rendered: SignedRequest,
    started_at: jiff::Timestamp,
}

impl Dispatcher {
    /// What the delivery log keeps of an attempt: the request moved in, not copied.
    fn exchange(
        &self,
        stored: &StoredEvent,
        request: Request,
        response: Option<crate::deliver::http::CapturedResponse>,
        error_class: Option<ErrorClass>,
    ) -> Exchange {
        Exchange {
            started_at: request.started_at,
            event_type: stored.event.lifecycle.event_type(),
            url: self.endpoint.url.clone(),
            request: request.rendered,
            response,
            error_class,
        }
    }

    pub(super) fn finish(
        &self,
        joined: Result<Finished, tokio::task::JoinError>,
        schedule: &mut Schedule,
        completions: &mut Vec<Completion>,
    ) {
        let Ok(done) = joined else {
            // The attempt task panicked or was aborted; its head stays pending on disk and is
            // retried after a restart. Nothing to record here.
            return;
        };
        let endpoint = self.endpoint.id.clone();
        let metrics = self.outbox.metrics();
        let Finished {
            seq,
            sandbox,
            result,
        } = done;
        let (stored, mut attempt, request) = match result {
            AttemptResult::Sent(stored, attempt, request) => (stored, attempt, request),
            // Stays pending on disk; the window is reloaded when this instance is active again.
            AttemptResult::NotActive => return,
            // Nothing is committed: the outbox delivers it again after the restart.
            AttemptResult::Canceled(stored, elapsed, request) => {
                let attempts = schedule.head_state(&sandbox).unwrap_or_default().attempts + 1;
                let exchange = self.exchange(&stored, request, None, Some(ErrorClass::Canceled));
                self.journal.record(Attempted {
                    endpoint,
                    event_id: stored.event.id().to_owned(),
                    sandbox_id: stored.event.sandbox_id().to_owned(),
                    label: stored.event.lifecycle.label().to_owned(),
                    outcome: "retry",
                    status: None,
                    attempt: attempts,
                    latency_ms: elapsed.as_millis() as u64,
                    error: Some(CANCELED.to_owned()),
                    test: false,
                    exchange: Some(exchange),
                });
                return;
            }
            AttemptResult::Missing => {
                tracing::error!(
                    endpoint,
                    seq,
                    "outbox entry has no stored event; dead-lettering it"
                );
                let state = DeliveryState {
                    sandbox_id: sandbox.to_string(),
                    last_error: Some("event record missing from the outbox".into()),
                    ..DeliveryState::default()
                };
                completions.push(Completion::Dead {
                    endpoint: endpoint.clone(),
                    seq,
                    state,
                });
                metrics.dead_letter(&endpoint);
                schedule.advance(&sandbox);
                return;
            }
        };
        let previous = schedule.head_state(&sandbox).unwrap_or_default();
        let attempts = previous.attempts + 1;
        let event = &stored.event;
        metrics.delivery(&endpoint, attempt.outcome.kind());
        let status = attempt
            .outcome
            .status()
            .map(|s| s.to_string())
            .unwrap_or_else(|| "-".into());
        let latency_ms = attempt.elapsed.as_millis() as u64;
        let mut exchange = Some(self.exchange(
            &stored,
            request,
            attempt.response.take(),
            attempt.outcome.error_class(),
        ));
        let mut record = |outcome: &'static str, error: Option<String>| Attempted {
            endpoint: endpoint.clone(),
            event_id: event.id().to_owned(),
            sandbox_id: event.sandbox_id().to_owned(),
            label: event.lifecycle.label().to_owned(),
            outcome,
            status: attempt.outcome.status(),
            attempt: attempts,
            latency_ms,
            error,
            test: false,
            exchange: exchange.take(),
        };
        if attempt.outcome.is_delivered() {
            self.journal.record(record("delivered", None));
            let since = event
                .timestamp()
                .map(|t| t.as_millisecond())
                .unwrap_or(stored.appended_at_ms);
            let seconds = (now_ms() - since).max(0) as f64 / 1000.0;
            // Registered webhooks' latency is one histogram for all of them (see `Metrics`).
            if self.share.is_some() {
                metrics.registered_delivery_latency(seconds);
            } else {
                metrics.delivery_latency(&endpoint, seconds);
            }
            // One line per success only at debug: the delivery log has every attempt, and at
            // info this line cost about 5 % of a delivery's instructions (BENCHMARKS.md).
            tracing::debug!(
                event_id = event.id(),
                sandbox_id = event.sandbox_id(),
                label = event.lifecycle.label(),
                endpoint,
                status,
                attempt = attempts,
                latency_ms,
                "delivered"
            );
            completions.push(Completion::Delivered { endpoint, seq });
            schedule.advance(&sandbox);
            return;
        }
        let error = attempt.outcome.describe();
        let age =
            Duration::from_millis(u64::try_from(now_ms() - stored.appended_at_ms).unwrap_or(0));
        let mut state = DeliveryState {
            sandbox_id: sandbox.to_string(),
            attempts,
            next_attempt_at_ms: 0,
            last_error: Some(error.clone()),
            last_status: attempt.outcome.status(),
        };
        match self.policy.decide(attempts, age, attempt.retry_after) {
            RetryDecision::RetryAfter(delay) => {
                self.journal.record(record("retry", Some(error.clone())));
                state.next_attempt_at_ms = now_ms() + delay.as_millis() as i64;
                tracing::warn!(
                    event_id = event.id(),
                    sandbox_id = event.sandbox_id(),
                    label = event.lifecycle.label(),
                    endpoint,
                    status,
                    attempt = attempts,
                    latency_ms,
                    error,
                    retry_in_ms = delay.as_millis() as u64,
                    "delivery failed; will retry"
                );
                metrics.retry(&endpoint);
                completions.push(Completion::Retry {
                    endpoint,
                    seq,
                    state: state.clone(),
                });
                schedule.reschedule(&sandbox, state);
            }
            RetryDecision::GiveUp => {
                self.journal.record(record("dead", Some(error.clone())));
                tracing::error!(
                    event_id = event.id(),
                    sandbox_id = event.sandbox_id(),
                    label = event.lifecycle.label(),
                    endpoint,
                    status,
                    attempt = attempts,
                    error,
                    "retry policy exhausted; moved to dead letters (replay with `e2b-webhook-emitter dead-letters replay`)"
                );
                metrics.dead_letter(&endpoint);
                completions.push(Completion::Dead {
                    endpoint,
                    seq,
                    state,
                });
                schedule.advance(&sandbox);
            }
        }
    }
}

/// Sends one attempt; `abandon` (the drain deadline of a stop) ends it without an answer.
pub(super) async fn attempt(
    client: WebhookClient,
    endpoint: Arc<EndpointConfig>,
    sandbox: Arc<str>,
    head: PendingDelivery,
    stored: Option<Arc<StoredEvent>>,
    (leadership, term, abandon): (Leadership, Option<u64>, CancellationToken),
) -> Finished {
    let result = match stored {
        // Checked again right before the request: a process frozen past its lease finds its
        // local deadline gone when it resumes, and sends nothing.
        Some(_) if leadership.delivery_term() != term => AttemptResult::NotActive,
        Some(stored) => {
            let started_at = jiff::Timestamp::now();
            let request = format::render(
                endpoint.format,
                &stored.event,
                &endpoint.identity(),
                &endpoint.secrets,
                head.state.attempts + 1,
                started_at,
            );
            let started = Instant::now();
            let sent = tokio::select! {
                sent = client.post(&endpoint.url, &request) => Some(sent),
                () = abandon.cancelled() => None,
            };
            let request = Request {
                rendered: request,
                started_at,
            };
            match sent {
                Some(sent) => AttemptResult::Sent(stored, sent, request),
                None => AttemptResult::Canceled(stored, started.elapsed(), request),
            }
        }
        None => AttemptResult::Missing,
    };
    Finished {
        seq: head.seq,
        sandbox,
        result,
    }
}
