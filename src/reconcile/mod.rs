//! Reconciliation (DESIGN §4): periodically compares the sandboxes the events say are running
//! with what each orchestrator's `List` returns, and synthesizes the events nobody sent — a
//! `create` for a sandbox we never heard of, a `kill` for one no orchestrator has any more.
//!
//! It acts only on differences that lasted two consecutive runs spanning the grace period, and
//! only while the event source is healthy and caught up, so that an event merely in flight is
//! never contradicted.

mod listing;
mod orchestrator;
mod plan;
mod report;
mod synthesize;

pub use report::{ReconcileReport, SynthesizedView};

/// Code generated from `proto/orchestrator.proto`: the `SandboxService` client, and the server
/// trait that tests implement to stand in for an orchestrator.
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod proto {
    tonic::include_proto!("_");
}

use crate::cluster::OrchestratorSet;
use crate::health::StreamProgress;
use crate::leadership::Leadership;
use crate::metrics::Metrics;
use crate::outbox::{EventIntake, Outbox, SandboxView};
use orchestrator::OrchestratorClients;
use plan::{Finding, Memory, Observation, Placement};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use synthesize::{Seen, synthesize};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// Outbox state key of the reconciler's memory (where each sandbox was last seen).
pub const STATE_KEY: &str = "reconcile.placements";

/// The `source` of synthesized events in the outbox.
pub const SOURCE: &str = "reconcile";

/// How often and how cautiously to reconcile.
#[derive(Debug, Clone)]
pub struct ReconcileSettings {
    /// Time between runs.
    pub interval: Duration,
    /// A difference must be seen on two consecutive runs at least this far apart.
    pub grace: Duration,
    /// Timeout of one orchestrator's `List` (and of connecting to it).
    pub rpc_timeout: Duration,
    /// With a Redis source: reconcile only while it reads and has no lag.
    pub stream: Option<watch::Receiver<StreamProgress>>,
    /// The teams served; sandboxes of other teams are ignored. Empty: every team.
    pub teams: Vec<Uuid>,
    /// Only the active instance reconciles (a standby's view of the sandboxes is not current).
    pub leadership: Leadership,
}

impl Default for ReconcileSettings {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(30),
            grace: Duration::from_secs(60),
            rpc_timeout: Duration::from_secs(10),
            stream: None,
            teams: Vec::new(),
            leadership: Leadership::always_active(),
        }
    }
}

/// What a run did, as counted by `reconcile_runs`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Ok,
    Skipped,
    Error,
}

impl Outcome {
    fn label(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Skipped => "skipped",
            Self::Error => "error",
        }
    }
}

/// Compares the outbox's running sandboxes with the orchestrators' and fills the gaps.
pub struct Reconciler {
    outbox: Outbox,
    /// Where synthesized events go: the outbox, or with Redis the stream.
    intake: Arc<dyn EventIntake>,
    /// What the events say runs: the outbox's view, or with Redis the shared one.
    view: Arc<dyn SandboxView>,
    metrics: Arc<Metrics>,
    orchestrators: watch::Receiver<OrchestratorSet>,
    settings: ReconcileSettings,
    clients: OrchestratorClients,
    memory: Memory,
    /// Why the last run was skipped, to log each reason once rather than every interval.
    skip_reason: Option<String>,
    /// The last error of each orchestrator that failed to answer, logged once per change.
    silent: BTreeMap<String, String>,
    /// The last `List` entry of each sandbox still listed or believed running: what a kill's
    /// `execution` block is made of once the sandbox is gone. In memory only.
    last_listed: BTreeMap<String, Seen>,
    /// What the last run did, for operators.
    report: watch::Sender<ReconcileReport>,
    /// What the current run synthesized.
    synthesized: Vec<SynthesizedView>,
}

impl Reconciler {
    /// A reconciler reading orchestrators from a
    /// [`OrchestratorDiscovery`](crate::source::nomad::OrchestratorDiscovery).
    pub fn new(
        outbox: Outbox,
        metrics: Arc<Metrics>,
        orchestrators: watch::Receiver<OrchestratorSet>,
        settings: ReconcileSettings,
    ) -> Self {
        Self {
            intake: Arc::new(outbox.clone()),
            view: Arc::new(outbox.clone()),
            outbox,
            metrics,
            orchestrators,
            clients: OrchestratorClients::new(settings.rpc_timeout),
            settings,
            memory: Memory::default(),
            skip_reason: None,
            silent: BTreeMap::new(),
            last_listed: BTreeMap::new(),
            report: watch::channel(ReconcileReport::default()).0,
            synthesized: Vec::new(),
        }
    }

    /// Synthesized events go to `intake`, and runs compare the orchestrators with `view`
    /// (with Redis: the stream and the view every instance shares).
    pub fn with_shared(mut self, intake: Arc<dyn EventIntake>, view: Arc<dyn SandboxView>) -> Self {
        self.intake = intake;
        self.view = view;
        self
    }

    /// A read-only view of what the last run did.
    pub fn report(&self) -> watch::Receiver<ReconcileReport> {
        self.report.subscribe()
    }

    fn publish(&mut self, outcome: Outcome) {
        let orchestrators = self
            .orchestrators
            .borrow()
            .running()
            .map(|a| match a.address {
                Some(addr) => format!("{} ({addr})", a.id),
                None => a.id.clone(),
            })
            .collect();
        let now = jiff::Timestamp::now().as_millisecond();
        let findings = std::mem::take(&mut self.synthesized);
        self.report.send_modify(|r| {
            r.orchestrators = orchestrators;
            r.silent = self
                .silent
                .iter()
                .map(|(id, e)| format!("{id}: {e}"))
                .collect();
            r.last_run_at_ms = Some(now);
            r.last_outcome = Some(outcome.label());
            r.skip_reason = self.skip_reason.clone();
            if !findings.is_empty() {
                r.last_findings = findings;
                r.last_findings_at_ms = Some(now);
            }
        });
    }

    /// Runs every interval until `shutdown`. Failures are logged and counted, never fatal.
    pub async fn run(mut self, shutdown: CancellationToken) {
        self.memory = Memory::with_placements(self.load_placements().await);
        let start = tokio::time::Instant::now() + self.settings.interval;
        let mut ticks = tokio::time::interval_at(start, self.settings.interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = ticks.tick() => {
                    let outcome = self.run_once().await;
                    self.metrics.reconcile_run(outcome.label());
                    self.publish(outcome);
                }
            }
        }
    }

    async fn run_once(&mut self) -> Outcome {
        let orchestrators = self.orchestrators.borrow().clone();
        if let Some(reason) = self.gate(&orchestrators) {
            self.memory.forget_suspects();
            if self.skip_reason.as_deref() != Some(reason.as_str()) {
                tracing::info!(%reason, "reconciliation paused");
                self.skip_reason = Some(reason);
            }
            return Outcome::Skipped;
        }
        if self.skip_reason.take().is_some() {
            tracing::info!("reconciliation resumed");
        }
        // The lease this run decides under: its events are written only while the lease still
        // has this value, so a run that outlives its lease (a frozen process, a takeover, even
        // one this instance won back) writes nothing it decided from an older view.
        let lease = self.settings.leadership.token();
        let mut records = match self.view.sandboxes().await {
            Ok(records) => records,
            Err(e) => {
                tracing::error!(error = %e, "reconciliation cannot read which sandboxes the events say are running");
                return Outcome::Error;
            }
        };
        records.retain(|record| self.serves(&record.team_id));
        let (mut listings, addresses) = self.list_all(&orchestrators).await;
        self.drop_other_teams(&mut listings);
        let now_ms = jiff::Timestamp::now().as_millisecond();
        self.remember_listed(&listings, &records, now_ms);
        let findings = self.memory.decide(
            &Observation {
                now_ms,
                records: &records,
                orchestrators: &orchestrators,
                listings: &listings,
                addresses: &addresses,
            },
            self.settings.grace,
        );
        let mut outcome = Outcome::Ok;
        if !findings.is_empty() && !self.append(findings, lease).await {
            outcome = Outcome::Error;
        }
        if let Err(e) = self.save_placements().await {
            tracing::error!(error = %e, "reconciliation cannot save its state");
            outcome = Outcome::Error;
        }
        outcome
    }

    /// Why reconciling now could contradict events still on their way, if it could.
    fn gate(&self, orchestrators: &OrchestratorSet) -> Option<String> {
        if !orchestrators.listed {
            return Some(
                "waiting for the first list of orchestrator allocations from Nomad".into(),
            );
        }
        if self.settings.leadership.delivery_term().is_none() {
            return Some("standing by: another instance is the active deliverer".into());
        }
        self.settings
            .stream
            .as_ref()
            .and_then(|stream| stream.borrow().behind())
    }

    /// Appends the synthesized events in one durable batch; false when that failed.
    async fn append(&mut self, findings: Vec<Finding>, lease: Option<String>) -> bool {
        let mut events = Vec::with_capacity(findings.len());
        let mut reasons = Vec::with_capacity(findings.len());
        for finding in &findings {
            let sandbox_id = match finding {
                Finding::Missed { sandbox, .. } => &sandbox.sandbox_id,
                Finding::Gone { record, .. } => &record.sandbox_id,
            };
            match synthesize(finding, self.last_listed.get(sandbox_id)) {
                Ok(event) => {
                    tracing::info!(
                        sandbox = event.sandbox_id(),
                        event = event.lifecycle.label(),
                        reason = finding.reason(),
                        id = event.id(),
                        "synthesized a lifecycle event nobody sent"
                    );
                    reasons.push(finding.reason());
                    self.synthesized.push(SynthesizedView {
                        sandbox_id: event.sandbox_id().to_owned(),
                        label: event.lifecycle.label().to_owned(),
                        reason: finding.reason().to_owned(),
                    });
                    events.push(event);
                }
                Err(e) => tracing::warn!(
                    error = %e,
                    reason = finding.reason(),
                    "cannot synthesize an event for an orchestrator's sandbox; skipping it"
                ),
            }
        }
        let labels: Vec<String> = events
            .iter()
            .map(|e| e.lifecycle.label().to_owned())
            .collect();
        match self.intake.submit_under_lease(SOURCE, events, lease).await {
            Ok(is_new) => {
                for ((label, reason), new) in labels.iter().zip(&reasons).zip(&is_new) {
                    if *new {
                        self.metrics.synthesized(label, reason);
                    }
                }
                true
            }
            Err(e) => {
                tracing::error!(
                    error = %e,
                    "reconciliation cannot append its events; the next runs will find the differences again"
                );
                false
            }
        }
    }

    async fn load_placements(&self) -> BTreeMap<String, Placement> {
        match self.outbox.load_state(STATE_KEY).await {
            Ok(Some(bytes)) => serde_json::from_slice(&bytes).unwrap_or_else(|e| {
                tracing::warn!(error = %e, "reconciliation state unreadable; starting without it");
                BTreeMap::new()
            }),
            Ok(None) => BTreeMap::new(),
            Err(e) => {
                tracing::warn!(
                    error = %e,
                    "cannot read the reconciliation state; starting without it"
                );
                BTreeMap::new()
            }
        }
    }

    async fn save_placements(&self) -> Result<(), crate::outbox::OutboxError> {
        let bytes = serde_json::to_vec(&self.memory.placements)
            .expect("a map of strings and integers always serializes");
        self.outbox.save_state(STATE_KEY, bytes).await
    }
}
