//! The allocation watcher: the orchestrators' allocations through Nomad's event stream, which
//! reports a change within seconds, and a full re-list on every (re)connect so that a gap in
//! the stream (a dropped connection, an index older than Nomad's small event buffer) cannot hide
//! one. Needs `read-job`; a token Nomad refuses ends it, and discovery falls back to services.

use super::client::NomadClient;
use super::error::NomadError;
use super::link::Link;
use super::wire::NomadAllocation;
use super::{DiscoverySettings, OrchestratorSelector};
use crate::cluster::{AllocationStatus, OrchestratorAllocation, OrchestratorSet};
use crate::util::backoff::Backoff;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// How often, at most, the processed index is written to the outbox while frames arrive.
const INDEX_SAVE_INTERVAL: Duration = Duration::from_secs(10);

impl OrchestratorSelector {
    fn selects(&self, alloc: &NomadAllocation) -> bool {
        alloc.task_group == self.task_group && alloc.job_id.starts_with(&self.job_prefix)
    }

    /// The list filter Nomad evaluates server-side; `contains` is the closest bexpr has to a
    /// prefix test, so `selects` still checks the prefix.
    fn list_filter(&self) -> String {
        format!(
            "TaskGroup == {} and JobID contains {}",
            bexpr_string(&self.task_group),
            bexpr_string(&self.job_prefix)
        )
    }
}

fn bexpr_string(value: &str) -> String {
    format!("\"{}\"", value.replace('\\', "\\\\").replace('"', "\\\""))
}

/// The allocations being tracked and the last index applied to them.
struct Tracker {
    selector: OrchestratorSelector,
    allocations: BTreeMap<String, OrchestratorAllocation>,
    last_index: u64,
    /// Whether a full list has been applied since start.
    listed: bool,
}

impl Tracker {
    /// Applies one allocation's current state; returns true when something changed.
    /// Applying a state twice changes nothing, so a re-sent frame is harmless.
    fn apply(&mut self, alloc: &NomadAllocation) -> bool {
        if !self.selector.selects(alloc) {
            return false;
        }
        let status = AllocationStatus::parse(&alloc.client_status);
        // A stream event may omit resources; the address Nomad gave earlier still holds.
        let address = alloc
            .address(&self.selector)
            .or_else(|| self.allocations.get(&alloc.id).and_then(|a| a.address));
        let next = OrchestratorAllocation {
            id: alloc.id.clone(),
            job_id: alloc.job_id.clone(),
            node_name: alloc.node_name.clone(),
            status,
            address,
        };
        match self.allocations.get(&alloc.id) {
            Some(current) if *current == next => false,
            current => {
                let from = current.map_or("new".to_owned(), |c| c.status.to_string());
                tracing::info!(
                    allocation = %next.id,
                    job = %next.job_id,
                    node = %next.node_name,
                    address = ?next.address,
                    "orchestrator allocation {from} -> {}",
                    next.status
                );
                self.allocations.insert(next.id.clone(), next);
                true
            }
        }
    }

    /// Replaces the tracked state with a full list: applies every listed allocation and drops
    /// those Nomad no longer lists (garbage-collected); returns true when something changed.
    fn replace(&mut self, listed: &[NomadAllocation]) -> bool {
        let mut changed = false;
        for alloc in listed {
            changed |= self.apply(alloc);
        }
        let before = self.allocations.len();
        self.allocations
            .retain(|id, _| listed.iter().any(|a| &a.id == id));
        changed || self.allocations.len() != before
    }

    fn set(&self, connected: bool) -> OrchestratorSet {
        OrchestratorSet {
            listed: self.listed,
            connected,
            allocations: self.allocations.clone(),
        }
    }

    fn needs_address(&self) -> bool {
        self.allocations
            .values()
            .any(|a| a.status == AllocationStatus::Running && a.address.is_none())
    }
}

pub(super) struct AllocationWatcher<'a> {
    client: &'a NomadClient,
    settings: &'a DiscoverySettings,
}

impl<'a> AllocationWatcher<'a> {
    pub fn new(client: &'a NomadClient, settings: &'a DiscoverySettings) -> Self {
        Self { client, settings }
    }

    /// Watches until `shutdown` (`None`), or until Nomad refuses the token (that error).
    pub async fn run(
        &self,
        link: &mut Link,
        index: u64,
        shutdown: &CancellationToken,
    ) -> Option<NomadError> {
        let mut tracker = Tracker {
            selector: self.settings.selector.clone(),
            allocations: BTreeMap::new(),
            last_index: index,
            listed: false,
        };
        let mut delays = Backoff::new(self.settings.backoff_min, self.settings.backoff_max);
        while !shutdown.is_cancelled() {
            let mut streaming = false;
            let result = self
                .session(&mut tracker, link, &mut streaming, shutdown)
                .await;
            link.publish(tracker.set(false));
            link.save_index(tracker.last_index).await;
            let Err(error) = result else { break };
            if error.is_allocation_refusal() {
                return Some(error);
            }
            if streaming {
                // A connection that worked: start the next wait from the shortest delay.
                delays.reset();
            }
            link.down(&error);
            let delay = delays.next_delay();
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep(delay) => {}
            }
        }
        None
    }

    /// One connection: list, then follow the stream until it fails or `shutdown`.
    async fn session(
        &self,
        tracker: &mut Tracker,
        link: &mut Link,
        streaming: &mut bool,
        shutdown: &CancellationToken,
    ) -> Result<(), NomadError> {
        let filter = self.settings.selector.list_filter();
        self.relist(tracker, link, &filter, false).await?;
        // The list reflects every change up to its index; the stream resumes there, so the
        // two together leave no gap, and frames at or below it are dropped as already applied.
        let idle = self.settings.stream_idle_timeout;
        let mut frames = tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            opened = self.client.event_stream(tracker.last_index, idle) => opened?,
        };
        *streaming = true;
        let set = tracker.set(true);
        link.up(
            format!("following orchestrator allocations at {}", self.client.addr),
            "watching orchestrator allocations in Nomad",
            set.running().count(),
        );
        link.publish(set);
        let mut saved_at = Instant::now();
        loop {
            let frame = tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                frame = frames.next() => frame?,
            };
            let Some(events) = frame.events else { continue };
            if frame.index <= tracker.last_index {
                continue;
            }
            let mut changed = false;
            for event in &events {
                if event.topic != "Allocation" {
                    continue;
                }
                if let Some(alloc) = event.payload.as_ref().and_then(|p| p.allocation.as_ref()) {
                    changed |= tracker.apply(alloc);
                }
            }
            tracker.last_index = frame.index;
            link.index(frame.index);
            if changed && tracker.needs_address() {
                // An event without resources for a new orchestrator: the list has them.
                self.relist(tracker, link, &filter, true).await?;
            }
            link.publish(tracker.set(true));
            if saved_at.elapsed() >= INDEX_SAVE_INTERVAL {
                link.save_index(tracker.last_index).await;
                saved_at = Instant::now();
            }
        }
    }

    /// Lists the orchestrator allocations and applies the list; `streaming` says whether the
    /// event stream is open meanwhile (the set stays marked connected).
    async fn relist(
        &self,
        tracker: &mut Tracker,
        link: &Link,
        filter: &str,
        streaming: bool,
    ) -> Result<(), NomadError> {
        let (allocations, index) = self.client.list_allocations(filter).await?;
        if index < tracker.last_index {
            // Indexes only grow within one Nomad cluster; a smaller one means the cluster was
            // rebuilt, and keeping the old index would drop every frame from now on.
            tracing::warn!(
                nomad_index = index,
                saved_index = tracker.last_index,
                "Nomad's index went backwards (cluster rebuilt?); following it from its current index"
            );
            tracker.last_index = index;
        }
        tracker.replace(&allocations);
        tracker.listed = true;
        tracker.last_index = tracker.last_index.max(index);
        link.index(tracker.last_index);
        link.publish(tracker.set(streaming));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alloc(json: &str) -> NomadAllocation {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn selector_matches_group_and_job_prefix_and_quotes_its_filter() {
        let selector = OrchestratorSelector::default();
        let tg = |job: &str, group: &str| {
            alloc(&format!(
                r#"{{"ID":"a","JobID":"{job}","TaskGroup":"{group}"}}"#
            ))
        };
        assert!(selector.selects(&tg("orchestrator-3f2a", "client-orchestrator")));
        assert!(!selector.selects(&tg("template-manager", "client-orchestrator")));
        assert!(!selector.selects(&tg("my-orchestrator", "client-orchestrator")));
        assert!(!selector.selects(&tg("orchestrator-3f2a", "template-manager")));
        assert_eq!(
            selector.list_filter(),
            r#"TaskGroup == "client-orchestrator" and JobID contains "orchestrator""#
        );
        assert_eq!(bexpr_string(r#"a"b\c"#), r#""a\"b\\c""#);
    }

    #[test]
    fn tracker_applies_states_idempotently_and_forgets_garbage_collected_allocations() {
        let mut t = Tracker {
            selector: OrchestratorSelector::default(),
            allocations: BTreeMap::new(),
            last_index: 0,
            listed: false,
        };
        let running = alloc(
            r#"{"ID":"a","JobID":"orchestrator-1","TaskGroup":"client-orchestrator","ClientStatus":"running","AllocatedResources":{"Shared":{"Networks":[{"IP":"10.0.0.1"}]}}}"#,
        );
        assert!(t.apply(&running));
        assert!(!t.apply(&running));
        // A later event without resources keeps the address.
        let lost = alloc(
            r#"{"ID":"a","JobID":"orchestrator-1","TaskGroup":"client-orchestrator","ClientStatus":"lost"}"#,
        );
        assert!(t.apply(&lost));
        assert_eq!(t.allocations["a"].status, AllocationStatus::Lost);
        assert!(t.allocations["a"].status.is_terminal());
        assert_eq!(
            t.allocations["a"].address,
            Some("10.0.0.1:5008".parse().unwrap())
        );
        assert!(t.replace(&[]));
        assert!(t.allocations.is_empty());
    }
}
