//! Prometheus metrics, shared by every stage through one `Arc`. Every layer reports here; only
//! the ops server (`/metrics`) and the OTLP exporter read it. Component readiness has its own
//! state ([`Readiness`], read by `/readyz`); the metrics observe it as gauges.

use crate::health::{ComponentState, Readiness};
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::collections::BTreeMap;
use std::sync::atomic::AtomicU64;

type Labels = Vec<(&'static str, String)>;

fn labels(pairs: &[(&'static str, &str)]) -> Labels {
    pairs.iter().map(|(k, v)| (*k, (*v).to_owned())).collect()
}

/// Every `outcome` of `deliveries_total` (`DeliveryOutcome::kind`).
const DELIVERY_OUTCOMES: [&str; 4] = ["delivered", "rejected", "timeout", "network"];
/// The lifecycle labels events are counted under (`Lifecycle::label` of the known types).
const LIFECYCLE_LABELS: [&str; 6] = ["create", "kill", "pause", "resume", "update", "checkpoint"];
/// Every `result` of `reconcile_runs_total`.
const RECONCILE_RESULTS: [&str; 3] = ["ok", "skipped", "error"];
/// What reconciliation can synthesize, as (`type`, `reason`).
const SYNTHESIZED_KINDS: [(&str, &str); 4] = [
    ("create", "missed_create"),
    ("resume", "missed_resume"),
    ("kill", "orchestrator_lost"),
    ("kill", "vanished"),
];

/// The latency buckets: 1 ms to about 9 minutes, doubling.
fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 20))
}

/// Every metric the service exports, and the readiness they observe.
pub struct Metrics {
    registry: Registry,
    events_received: Family<Labels, Counter>,
    malformed_inputs: Family<Labels, Counter>,
    other_team_events: Family<Labels, Counter>,
    deliveries: Family<Labels, Counter>,
    retries: Family<Labels, Counter>,
    delivery_latency: Family<Labels, Histogram>,
    /// All registered webhooks' latency together: one histogram per webhook would be 23 series
    /// each, hundreds of thousands for an operator serving thousands of teams.
    registered_delivery_latency: Histogram,
    dead_letters: Family<Labels, Counter>,
    outbox_depth: Family<Labels, Gauge>,
    outbox_oldest_age: Family<Labels, Gauge<f64, AtomicU64>>,
    source_connected: Family<Labels, Gauge>,
    registered_webhooks: Family<Labels, Gauge>,
    /// Registered webhooks whose dispatcher runs now (the others cost no task).
    pub registered_delivering: Gauge,
    /// Entries in the Redis stream not yet delivered to our group (`XINFO GROUPS` lag).
    pub redis_lag: Gauge,
    /// The last Nomad event stream index processed.
    pub nomad_last_index: Gauge,
    /// Orchestrator allocations currently running.
    pub orchestrators_known: Gauge,
    /// 1 while this instance holds the leader lease (the active deliverer).
    pub leader: Gauge,
    /// Events not stored in the lifecycle history because its writer fell behind.
    pub event_history_dropped: Counter,
    /// Log lines not shipped to the logs collector (`LOGS_COLLECTOR_ADDRESS`): its queue was
    /// full, a line was too long, or the collector refused them.
    pub log_lines_dropped: Counter,
    /// 1 while the outbox can be written; 0 in the disk-full (or other write error) state.
    outbox_writable: Gauge,
    reconcile_runs: Family<Labels, Counter>,
    synthesized_events: Family<Labels, Counter>,
    readiness: Readiness,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Registers every metric under the `e2b_webhook_` prefix.
    pub fn new() -> Self {
        Self::with_log_lines_dropped(Counter::default())
    }

    /// Like [`Self::new`], exporting `log_lines_dropped`, the counter the log shipper (started
    /// before the service) already counts in.
    pub fn with_log_lines_dropped(log_lines_dropped: Counter) -> Self {
        let mut registry = Registry::with_prefix("e2b_webhook");
        let m = Self {
            events_received: Family::default(),
            malformed_inputs: Family::default(),
            other_team_events: Family::default(),
            deliveries: Family::default(),
            retries: Family::default(),
            delivery_latency: Family::new_with_constructor(latency_histogram),
            registered_delivery_latency: latency_histogram(),
            dead_letters: Family::default(),
            outbox_depth: Family::default(),
            outbox_oldest_age: Family::default(),
            source_connected: Family::default(),
            registered_webhooks: Family::default(),
            registered_delivering: Gauge::default(),
            redis_lag: Gauge::default(),
            nomad_last_index: Gauge::default(),
            orchestrators_known: Gauge::default(),
            leader: Gauge::default(),
            event_history_dropped: Counter::default(),
            log_lines_dropped,
            outbox_writable: Gauge::default(),
            reconcile_runs: Family::default(),
            synthesized_events: Family::default(),
            readiness: Readiness::observed_by(|_, _| {}),
            registry: Registry::default(),
        };
        registry.register(
            "events_received",
            "Lifecycle events accepted into the outbox, by source and label",
            m.events_received.clone(),
        );
        registry.register(
            "malformed_inputs",
            "Inputs set aside because they are not valid events, by source",
            m.malformed_inputs.clone(),
        );
        registry.register(
            "other_team_events",
            "Events and listed sandboxes of teams outside E2B_TEAM_IDS, skipped, by source",
            m.other_team_events.clone(),
        );
        registry.register(
            "event_history_dropped",
            "Events left out of the lifecycle history (GET /events/sandboxes) because its writer fell behind",
            m.event_history_dropped.clone(),
        );
        registry.register(
            "log_lines_dropped",
            "Log lines not shipped to the logs collector (LOGS_COLLECTOR_ADDRESS): queue full, line too long, or refused",
            m.log_lines_dropped.clone(),
        );
        registry.register(
            "deliveries",
            "Delivery attempts by endpoint and outcome (delivered, rejected, timeout, network)",
            m.deliveries.clone(),
        );
        registry.register(
            "retries",
            "Failed attempts scheduled for a retry, by endpoint",
            m.retries.clone(),
        );
        registry.register(
            "delivery_latency_seconds",
            "Time from the event's timestamp to its 2xx answer, by endpoint",
            m.delivery_latency.clone(),
        );
        registry.register(
            "registered_delivery_latency_seconds",
            "Time from the event's timestamp to its 2xx answer, for all webhooks registered through the events API together",
            m.registered_delivery_latency.clone(),
        );
        registry.register(
            "dead_letters",
            "Events moved to the dead-letter store, by endpoint",
            m.dead_letters.clone(),
        );
        registry.register(
            "outbox_depth",
            "Events waiting for delivery, by endpoint",
            m.outbox_depth.clone(),
        );
        registry.register(
            "outbox_oldest_age_seconds",
            "Age of the oldest undelivered event, by endpoint",
            m.outbox_oldest_age.clone(),
        );
        registry.register(
            "outbox_writable",
            "1 while the outbox can be written; 0 when the disk is full or another write error stops the sources",
            m.outbox_writable.clone(),
        );
        registry.register(
            "source_connected",
            "1 when the source is connected, by source",
            m.source_connected.clone(),
        );
        registry.register(
            "registered_webhook_info",
            "1 for each webhook registered through the events API that this instance delivers to: its endpoint label and team, to view deliveries per team",
            m.registered_webhooks.clone(),
        );
        registry.register(
            "registered_webhooks_delivering",
            "Registered webhooks with a dispatcher running: deliveries to make, or one made in the last 5 s",
            m.registered_delivering.clone(),
        );
        registry.register(
            "redis_lag",
            "Stream entries not yet read by our consumer group",
            m.redis_lag.clone(),
        );
        registry.register(
            "nomad_last_index",
            "Last Nomad event index processed",
            m.nomad_last_index.clone(),
        );
        registry.register(
            "orchestrators_known",
            "Orchestrator allocations currently tracked as running",
            m.orchestrators_known.clone(),
        );
        registry.register(
            "leader",
            "1 while this instance holds the leader lease and delivers; 0 on a standby",
            m.leader.clone(),
        );
        registry.register(
            "reconcile_runs",
            "Reconciliation runs by result",
            m.reconcile_runs.clone(),
        );
        registry.register(
            "synthesized_events",
            "Events synthesized by reconciliation, by label and reason",
            m.synthesized_events.clone(),
        );
        // Readiness is observed: `outbox_writable` and `source_connected` follow its reports.
        let (writable, connected) = (m.outbox_writable.clone(), m.source_connected.clone());
        let readiness = Readiness::observed_by(move |name, ready| {
            if name == "outbox" {
                writable.set(i64::from(ready));
            } else {
                connected
                    .get_or_create(&labels(&[("source", name)]))
                    .set(i64::from(ready));
            }
        });
        Self {
            registry,
            readiness,
            ..m
        }
    }

    /// Exports every counter of one endpoint at 0, so `rate()` and alerts have a series from
    /// the first scrape on, before anything happened.
    pub fn prepare_endpoint(&self, endpoint: &str) {
        for outcome in DELIVERY_OUTCOMES {
            let _ = self
                .deliveries
                .get_or_create(&labels(&[("endpoint", endpoint), ("outcome", outcome)]));
        }
        let l = labels(&[("endpoint", endpoint)]);
        let _ = self.retries.get_or_create(&l);
        let _ = self.dead_letters.get_or_create(&l);
        let _ = self.delivery_latency.get_or_create(&l);
        let _ = self.outbox_depth.get_or_create(&l);
        let _ = self.outbox_oldest_age.get_or_create(&l);
    }

    /// Exports the counters of one source at 0, for every known lifecycle label.
    pub fn prepare_source(&self, source: &str) {
        for label in LIFECYCLE_LABELS {
            let _ = self
                .events_received
                .get_or_create(&labels(&[("source", source), ("type", label)]));
        }
        let _ = self
            .malformed_inputs
            .get_or_create(&labels(&[("source", source)]));
    }

    /// Exports the reconciliation counters at 0 (when reconciliation is configured).
    pub fn prepare_reconcile(&self) {
        for result in RECONCILE_RESULTS {
            let _ = self
                .reconcile_runs
                .get_or_create(&labels(&[("result", result)]));
        }
        for (label, reason) in SYNTHESIZED_KINDS {
            let _ = self
                .synthesized_events
                .get_or_create(&labels(&[("type", label), ("reason", reason)]));
        }
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        encode(&mut out, &self.registry).expect("writing to a String cannot fail");
        out
    }

    /// Counts an event accepted into the outbox.
    pub fn event_received(&self, source: &str, label: &str) {
        self.events_received
            .get_or_create(&labels(&[("source", source), ("type", label)]))
            .inc();
    }

    /// Counts an input set aside as malformed.
    pub fn malformed_input(&self, source: &str) {
        self.malformed_inputs
            .get_or_create(&labels(&[("source", source)]))
            .inc();
    }

    /// Counts `count` events or listed sandboxes of another team, skipped by `source`.
    pub fn other_team_skipped(&self, source: &str, count: u64) {
        self.other_team_events
            .get_or_create(&labels(&[("source", source)]))
            .inc_by(count);
    }

    /// Counts one delivery attempt's outcome.
    pub fn delivery(&self, endpoint: &str, outcome: &str) {
        self.deliveries
            .get_or_create(&labels(&[("endpoint", endpoint), ("outcome", outcome)]))
            .inc();
    }

    /// Counts a scheduled retry.
    pub fn retry(&self, endpoint: &str) {
        self.retries
            .get_or_create(&labels(&[("endpoint", endpoint)]))
            .inc();
    }

    /// Records the event-time-to-2xx latency.
    pub fn delivery_latency(&self, endpoint: &str, seconds: f64) {
        self.delivery_latency
            .get_or_create(&labels(&[("endpoint", endpoint)]))
            .observe(seconds);
    }

    /// Records the event-time-to-2xx latency of a registered webhook.
    pub fn registered_delivery_latency(&self, seconds: f64) {
        self.registered_delivery_latency.observe(seconds);
    }

    /// Counts a dead letter.
    pub fn dead_letter(&self, endpoint: &str) {
        self.dead_letters
            .get_or_create(&labels(&[("endpoint", endpoint)]))
            .inc();
    }

    /// Sets the backlog of one endpoint.
    pub fn set_outbox(&self, endpoint: &str, depth: u64, oldest_age_seconds: f64) {
        let l = labels(&[("endpoint", endpoint)]);
        self.outbox_depth.get_or_create(&l).set(depth as i64);
        self.outbox_oldest_age
            .get_or_create(&l)
            .set(oldest_age_seconds);
    }

    /// Drops the backlog series of one endpoint (a registered webhook that caught up: thousands
    /// of them at 0 would only cost memory and scrape time).
    pub fn clear_outbox(&self, endpoint: &str) {
        let l = labels(&[("endpoint", endpoint)]);
        self.outbox_depth.remove(&l);
        self.outbox_oldest_age.remove(&l);
    }

    /// Drops every series of one endpoint (a registered webhook deleted or disabled).
    pub fn forget_endpoint(&self, endpoint: &str) {
        for outcome in DELIVERY_OUTCOMES {
            self.deliveries
                .remove(&labels(&[("endpoint", endpoint), ("outcome", outcome)]));
        }
        let l = labels(&[("endpoint", endpoint)]);
        self.retries.remove(&l);
        self.dead_letters.remove(&l);
        self.delivery_latency.remove(&l);
        self.clear_outbox(endpoint);
    }

    /// A registered webhook is delivered to: `endpoint` belongs to `team` (per-team views join
    /// the per-endpoint series on it).
    pub fn registered_webhook(&self, endpoint: &str, team: &str) {
        self.registered_webhooks
            .get_or_create(&labels(&[("endpoint", endpoint), ("team", team)]))
            .set(1);
    }

    /// A registered webhook was deleted or disabled.
    pub fn registered_webhook_gone(&self, endpoint: &str, team: &str) {
        self.registered_webhooks
            .remove(&labels(&[("endpoint", endpoint), ("team", team)]));
    }

    /// Counts a reconciliation run.
    pub fn reconcile_run(&self, result: &str) {
        self.reconcile_runs
            .get_or_create(&labels(&[("result", result)]))
            .inc();
    }

    /// Counts a synthesized event.
    pub fn synthesized(&self, label: &str, reason: &str) {
        self.synthesized_events
            .get_or_create(&labels(&[("type", label), ("reason", reason)]))
            .inc();
    }

    /// The readiness these metrics observe: parts report to it, `/readyz` reads it.
    pub fn readiness(&self) -> Readiness {
        self.readiness.clone()
    }

    /// Reports to [`Self::readiness`] (for parts that hold only the metrics: the outbox).
    pub fn set_component(&self, name: &'static str, ready: bool, detail: impl Into<String>) {
        self.readiness.set(name, ready, detail);
    }

    /// Like [`Self::set_component`], with a reason anyone may read (`"disk full"`).
    pub fn set_component_with_summary(
        &self,
        name: &'static str,
        ready: bool,
        summary: &'static str,
        detail: impl Into<String>,
    ) {
        self.readiness.report(name, ready, summary, detail);
    }

    /// Every component's state, as observed.
    pub fn components(&self) -> BTreeMap<&'static str, ComponentState> {
        self.readiness.components()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_gauges_observe_readiness() {
        let metrics = Metrics::new();
        let readiness = metrics.readiness();
        readiness.set("redis", true, "consuming");
        readiness.set("outbox", true, "writable");
        let text = metrics.render();
        assert!(
            text.contains("e2b_webhook_source_connected{source=\"redis\"} 1"),
            "{text}"
        );
        assert!(text.contains("e2b_webhook_outbox_writable 1"), "{text}");
        readiness.report("outbox", false, "disk full", "no space left");
        readiness.set("redis", false, "connection refused");
        let text = metrics.render();
        assert!(
            text.contains("e2b_webhook_source_connected{source=\"redis\"} 0"),
            "{text}"
        );
        assert!(text.contains("e2b_webhook_outbox_writable 0"), "{text}");
        assert!(!metrics.components()["outbox"].ready);
    }
}
