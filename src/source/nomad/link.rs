//! What discovery tells the rest of the process: the orchestrator set on its `watch` channel,
//! the `nomad` health component (logged once per change, not on every retry), the
//! `orchestrators_known` and `nomad_last_index` gauges, and the index kept in the outbox.

use super::{INDEX_STATE_KEY, NomadError};
use crate::cluster::OrchestratorSet;
use crate::health::Readiness;
use crate::metrics::Metrics;
use crate::outbox::Outbox;
use std::sync::Arc;
use tokio::sync::watch;

/// Whether Nomad is reachable, as last logged.
enum Health {
    Starting,
    Up,
    Down(String),
}

pub(super) struct Link {
    set: watch::Sender<OrchestratorSet>,
    metrics: Arc<Metrics>,
    readiness: Readiness,
    outbox: Outbox,
    health: Health,
}

/// The component's name in the readiness report.
const COMPONENT: &str = "nomad";

impl Link {
    pub fn new(metrics: Arc<Metrics>, outbox: Outbox) -> Self {
        Self {
            set: watch::channel(OrchestratorSet::default()).0,
            readiness: metrics.readiness(),
            metrics,
            outbox,
            health: Health::Starting,
        }
    }

    pub fn subscribe(&self) -> watch::Receiver<OrchestratorSet> {
        self.set.subscribe()
    }

    pub fn connecting(&self) {
        self.readiness.set(COMPONENT, false, "connecting to Nomad");
    }

    pub fn stopped(&self) {
        self.readiness.set(COMPONENT, false, "stopped");
    }

    /// Publishes the set when it changed, and the count of running orchestrators.
    pub fn publish(&self, next: OrchestratorSet) {
        self.metrics
            .orchestrators_known
            .set(gauge(next.running().count() as u64));
        self.set.send_if_modified(|current| {
            let changed = *current != next;
            if changed {
                *current = next;
            }
            changed
        });
    }

    /// Marks the published set as not current any more (Nomad unreachable).
    pub fn disconnected(&self) {
        self.set.send_if_modified(|current| {
            let changed = current.connected;
            current.connected = false;
            changed
        });
    }

    pub fn index(&self, index: u64) {
        self.metrics.nomad_last_index.set(gauge(index));
    }

    /// Nomad answers: ready, and said once.
    pub fn up(&mut self, detail: String, what: &'static str, running: usize) {
        self.readiness.set(COMPONENT, true, &detail);
        match self.health {
            Health::Up => {}
            Health::Starting => tracing::info!(%detail, orchestrators = running, "{what}"),
            Health::Down(_) => {
                tracing::info!(%detail, orchestrators = running, "reconnected to Nomad")
            }
        }
        self.health = Health::Up;
    }

    /// Nomad failed: not ready, said once per distinct error.
    pub fn down(&mut self, error: &NomadError) {
        let message = error.to_string();
        self.readiness.set(COMPONENT, false, &message);
        self.disconnected();
        if matches!(&self.health, Health::Down(previous) if *previous == message) {
            return;
        }
        match error {
            NomadError::Forbidden { .. } | NomadError::ServicesForbidden { .. } => {
                tracing::error!(error = %message, "Nomad orchestrator discovery")
            }
            _ => tracing::warn!(
                error = %message,
                "Nomad orchestrator discovery; retrying with backoff"
            ),
        }
        self.health = Health::Down(message);
    }

    pub async fn load_index(&self) -> u64 {
        match self.outbox.load_state(INDEX_STATE_KEY).await {
            Ok(Some(bytes)) => String::from_utf8_lossy(&bytes).trim().parse().unwrap_or(0),
            Ok(None) => 0,
            Err(e) => {
                tracing::warn!(
                    error = %e,
                    "cannot read the saved Nomad index; starting from Nomad's current one"
                );
                0
            }
        }
    }

    pub async fn save_index(&self, index: u64) {
        if index == 0 {
            return;
        }
        if let Err(e) = self
            .outbox
            .save_state(INDEX_STATE_KEY, index.to_string().into_bytes())
            .await
        {
            tracing::warn!(
                error = %e,
                "cannot save the Nomad index; it is only an optimization, continuing"
            );
        }
    }
}

fn gauge(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}
