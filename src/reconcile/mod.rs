//! Reconciliation (DESIGN §4): periodically compares the sandboxes the events say are running
//! with what each orchestrator's `List` returns, and synthesizes the events nobody sent — a
//! `create` for a sandbox we never heard of, a `kill` for one no orchestrator has any more.
//!
//! It acts only on differences that lasted two consecutive runs spanning the grace period, and
//! only while the event source is healthy and caught up, so that an event merely in flight is
//! never contradicted.

mod orchestrator;
mod plan;
mod report;

pub use report::{ReconcileReport, SynthesizedView};

/// Code generated from `proto/orchestrator.proto`: the `SandboxService` client, and the server
/// trait that tests implement to stand in for an orchestrator.
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod proto {
    tonic::include_proto!("_");
}

use crate::cluster::OrchestratorSet;
use crate::event::{EventError, Lifecycle, SandboxEvent};
use crate::health::StreamProgress;
use crate::leadership::Leadership;
use crate::metrics::Metrics;
use crate::outbox::{EventIntake, Outbox, SandboxRecord, SandboxView};
use orchestrator::{ListedSandbox, OrchestratorClients};
use plan::{Finding, Listing, Memory, Observation, Placement};
use serde_json::{Map, Value, json};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
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

/// A sandbox as last listed, and when.
#[derive(Debug, Clone)]
struct Seen {
    sandbox: ListedSandbox,
    at_ms: i64,
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
        if !findings.is_empty() && !self.append(findings).await {
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

    /// The orchestrators to ask, by allocation id: every one Nomad lists as running, and every
    /// one it no longer lists that still holds a placement (it may only have lost its
    /// registration, hashicorp/nomad#16983), at the address where it last answered.
    fn targets(&self, orchestrators: &OrchestratorSet) -> BTreeMap<String, Option<SocketAddr>> {
        let mut targets: BTreeMap<String, Option<SocketAddr>> = orchestrators
            .running()
            .map(|a| (a.id.clone(), a.address))
            .collect();
        for placement in self.memory.placements.values() {
            targets
                .entry(placement.allocation.clone())
                .or_insert(placement.address);
        }
        targets
    }

    /// `List` on every target at once, one call per address; silent ones are logged once per
    /// change. Returns the listings and the address each allocation was asked at.
    async fn list_all(
        &mut self,
        orchestrators: &OrchestratorSet,
    ) -> (BTreeMap<String, Listing>, BTreeMap<String, SocketAddr>) {
        let targets = self.targets(orchestrators);
        let addresses: BTreeMap<String, SocketAddr> = targets
            .iter()
            .filter_map(|(id, addr)| addr.map(|a| (id.clone(), a)))
            .collect();
        let distinct: HashSet<SocketAddr> = addresses.values().copied().collect();
        self.clients.retain(&distinct);
        let calls: Vec<_> = distinct
            .into_iter()
            .map(|addr| {
                let client = self.clients.client(addr);
                async move {
                    let result = match client {
                        Ok(client) => orchestrator::list(client).await,
                        Err(e) => Err(e),
                    };
                    (addr, result)
                }
            })
            .collect();
        let answers: HashMap<SocketAddr, Result<Vec<_>, String>> =
            futures_util::future::join_all(calls)
                .await
                .into_iter()
                .collect();
        let mut listings = BTreeMap::new();
        for (id, addr) in &targets {
            let result = match addr {
                Some(addr) => answers[addr].clone(),
                None => Err("Nomad reported no address for it".to_owned()),
            };
            let registered = orchestrators.is_running(id);
            let listing = match result {
                Ok(sandboxes) => {
                    if self.silent.remove(id).is_some() {
                        tracing::info!(allocation = %id, "orchestrator answers List again");
                    }
                    Listing::Answered(sandboxes)
                }
                Err(error) => {
                    if self.silent.get(id) != Some(&error) {
                        if registered {
                            tracing::warn!(
                                allocation = %id,
                                %error,
                                "orchestrator does not answer List; its sandboxes are left alone while Nomad lists it"
                            );
                        } else {
                            tracing::warn!(
                                allocation = %id,
                                %error,
                                "orchestrator left Nomad and does not answer List; its sandboxes are killed as orchestrator_lost unless it answers within the grace period"
                            );
                        }
                        self.silent.insert(id.clone(), error);
                    }
                    Listing::Silent
                }
            };
            listings.insert(id.clone(), listing);
        }
        self.silent.retain(|id, _| listings.contains_key(id));
        (listings, addresses)
    }

    /// Whether `team` is served (every team when none is configured).
    fn serves(&self, team: &str) -> bool {
        crate::event::team_in_scope(&self.settings.teams, team)
    }

    /// Removes other teams' sandboxes from the answers: `List` returns every team's, and
    /// nothing about them may leave the process.
    fn drop_other_teams(&self, listings: &mut BTreeMap<String, Listing>) {
        let mut skipped = 0;
        for listing in listings.values_mut() {
            if let Listing::Answered(sandboxes) = listing {
                let before = sandboxes.len();
                sandboxes.retain(|sandbox| self.serves(&sandbox.team_id));
                skipped += before - sandboxes.len();
            }
        }
        if skipped > 0 {
            self.metrics.other_team_skipped(SOURCE, skipped as u64);
        }
    }

    /// Keeps the latest `List` entry of every sandbox listed now, and the last one of those
    /// believed running; forgets the rest.
    fn remember_listed(
        &mut self,
        listings: &BTreeMap<String, Listing>,
        records: &[SandboxRecord],
        now_ms: i64,
    ) {
        for listing in listings.values() {
            if let Listing::Answered(sandboxes) = listing {
                for sandbox in sandboxes {
                    self.last_listed.insert(
                        sandbox.sandbox_id.clone(),
                        Seen {
                            sandbox: sandbox.clone(),
                            at_ms: now_ms,
                        },
                    );
                }
            }
        }
        let believed: HashSet<&str> = records.iter().map(|r| r.sandbox_id.as_str()).collect();
        self.last_listed
            .retain(|id, seen| seen.at_ms == now_ms || believed.contains(id.as_str()));
    }

    /// Appends the synthesized events in one durable batch; false when that failed.
    async fn append(&mut self, findings: Vec<Finding>) -> bool {
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
        match self.intake.submit(SOURCE, events).await {
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

/// The event the orchestrator would have sent (`sandboxes.go` in e2b-dev/infra's orchestrator),
/// marked `"synthetic": true`: a create or resume carries the sandbox's metadata, a kill its
/// `kill_reason` and, when the sandbox was listed before it went, the `execution` block of its
/// last listing (`execution_time` up to when it was last seen running).
fn synthesize(finding: &Finding, last_seen: Option<&Seen>) -> Result<SandboxEvent, EventError> {
    let mut fields = Map::new();
    fields.insert("id".into(), Value::from(Uuid::new_v4().to_string()));
    fields.insert(
        "timestamp".into(),
        Value::from(jiff::Timestamp::now().to_string()),
    );
    let mut data = Map::new();
    let (lifecycle, sandbox) = match finding {
        Finding::Missed { lifecycle, sandbox } => {
            if !sandbox.metadata.is_empty() {
                data.insert("sandbox_metadata".into(), json!(sandbox.metadata));
            }
            (lifecycle.clone(), Some(sandbox))
        }
        Finding::Gone { record, reason } => {
            // The last listing of this very execution, if it was seen.
            let seen = last_seen.filter(|seen| {
                record
                    .execution_id
                    .as_deref()
                    .is_none_or(|execution| execution == seen.sandbox.execution_id)
            });
            let listed = seen.map(|seen| &seen.sandbox);
            fields.insert("sandbox_id".into(), Value::from(record.sandbox_id.as_str()));
            // What the events said wins; the last listing fills the rest.
            if let Some(execution) = &record.execution_id {
                fields.insert(
                    "sandbox_execution_id".into(),
                    Value::from(execution.as_str()),
                );
            }
            if let Some(template) = &record.template_id {
                fields.insert("sandbox_template_id".into(), Value::from(template.as_str()));
            }
            fields.insert(
                "sandbox_team_id".into(),
                Value::from(record.team_id.as_str()),
            );
            if let Some(seen) = seen
                && let Some(started_at) = seen.sandbox.started_at
            {
                data.insert(
                    "execution".into(),
                    json!({
                        // Go's time.RFC3339: whole seconds, UTC.
                        "started_at": started_at.strftime("%Y-%m-%dT%H:%M:%SZ").to_string(),
                        "vcpu_count": seen.sandbox.vcpu,
                        "memory_mb": seen.sandbox.ram_mb,
                        "execution_time": (seen.at_ms - started_at.as_millisecond()).max(0),
                    }),
                );
            }
            data.insert("kill_reason".into(), Value::from(reason.as_str()));
            (Lifecycle::Killed, listed)
        }
    };
    if let Some(sandbox) = sandbox {
        for (key, value) in [
            ("sandbox_id", &sandbox.sandbox_id),
            ("sandbox_execution_id", &sandbox.execution_id),
            ("sandbox_template_id", &sandbox.template_id),
            ("sandbox_build_id", &sandbox.build_id),
            ("sandbox_team_id", &sandbox.team_id),
        ] {
            fields
                .entry(key)
                .or_insert_with(|| Value::from(value.as_str()));
        }
        if sandbox.events_ttl_days != 0 {
            fields.insert(
                "events_ttl_days".into(),
                Value::from(sandbox.events_ttl_days),
            );
        }
    }
    data.insert("synthetic".into(), Value::Bool(true));
    fields.insert("event_data".into(), Value::Object(data));
    SandboxEvent::new(lifecycle, fields)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outbox::{SandboxRecord, SandboxState};
    use orchestrator::ListedSandbox;
    use plan::KillReason;

    const TEAM: &str = "0b8b8a4e-6f4e-4c4a-9a57-3a2f5d3b1c2d";

    fn listed() -> ListedSandbox {
        ListedSandbox {
            sandbox_id: "s1".into(),
            team_id: TEAM.into(),
            execution_id: "e1".into(),
            template_id: "base".into(),
            build_id: "b1".into(),
            metadata: [("user".to_owned(), "ada".to_owned())].into(),
            started_at: Some(jiff::Timestamp::from_second(1_700_000_000).unwrap()),
            vcpu: 2,
            ram_mb: 512,
            events_ttl_days: 7,
        }
    }

    #[test]
    fn a_synthesized_create_is_shaped_like_the_orchestrators() {
        let create = synthesize(
            &Finding::Missed {
                lifecycle: Lifecycle::Created,
                sandbox: listed(),
            },
            None,
        )
        .unwrap();
        let raw = create.raw();
        let keys: Vec<&str> = raw.keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            [
                "id",
                "version",
                "type",
                "timestamp",
                "event_category",
                "event_label",
                "event_data",
                "sandbox_id",
                "sandbox_execution_id",
                "sandbox_template_id",
                "sandbox_build_id",
                "sandbox_team_id",
                "events_ttl_days"
            ]
        );
        assert_eq!(raw["type"], "sandbox.lifecycle.created");
        assert_eq!(raw["version"], "v2");
        assert_eq!(
            (raw["event_category"].as_str(), raw["event_label"].as_str()),
            (Some(""), Some(""))
        );
        assert_eq!(raw["sandbox_build_id"], "b1");
        assert_eq!(raw["events_ttl_days"], 7);
        assert_eq!(
            create.event_data().unwrap(),
            json!({"sandbox_metadata": {"user": "ada"}, "synthetic": true})
                .as_object()
                .unwrap()
        );
        assert!(Uuid::parse_str(create.id()).is_ok());
        let age =
            jiff::Timestamp::now().as_millisecond() - create.timestamp().unwrap().as_millisecond();
        assert!((0..5_000).contains(&age));
    }

    fn record(execution: &str) -> SandboxRecord {
        SandboxRecord {
            sandbox_id: "s1".into(),
            state: SandboxState::Running,
            team_id: TEAM.into(),
            template_id: Some("base".into()),
            execution_id: Some(execution.into()),
            updated_at_ms: 0,
        }
    }

    #[test]
    fn a_synthesized_kill_carries_the_execution_block_of_its_last_listing() {
        let seen = Seen {
            sandbox: listed(),
            at_ms: 1_700_000_090_500,
        };
        let kill = synthesize(
            &Finding::Gone {
                record: record("e1"),
                reason: KillReason::OrchestratorLost,
            },
            Some(&seen),
        )
        .unwrap();
        assert_eq!(kill.lifecycle, Lifecycle::Killed);
        assert_eq!(kill.raw()["event_label"], "");
        assert_eq!(kill.raw()["sandbox_execution_id"], "e1");
        assert_eq!(kill.raw()["sandbox_build_id"], "b1");
        assert_eq!(
            kill.event_data().unwrap(),
            json!({
                "execution": {"started_at": "2023-11-14T22:13:20Z", "vcpu_count": 2, "memory_mb": 512, "execution_time": 90_500},
                "kill_reason": "orchestrator_lost",
                "synthetic": true
            })
            .as_object()
            .unwrap()
        );

        // A listing of an earlier execution says nothing about this one.
        let other = synthesize(
            &Finding::Gone {
                record: record("e2"),
                reason: KillReason::Vanished,
            },
            Some(&seen),
        )
        .unwrap();
        assert_eq!(
            other.event_data().unwrap(),
            json!({"kill_reason": "vanished", "synthetic": true})
                .as_object()
                .unwrap()
        );
        assert_eq!(other.raw()["sandbox_execution_id"], "e2");
        assert_eq!(other.raw()["sandbox_build_id"], "");
        assert_ne!(kill.id(), other.id());
    }
}
