//! The service watcher: the orchestrators' Nomad-native service registrations, followed with
//! blocking queries on `GET /v1/service/<name>` (`index` + `wait`, answered when the
//! registrations change or the wait ends). This is what E2B's API reads
//! (e2b-dev/infra `packages/api/internal/orchestrator/discovery/nomad.go`), and what a task's
//! workload identity may read on every Nomad version with ACLs (Nomad's "Default Workload ACL
//! Policy" allows listing and reading service registrations).

use super::DiscoverySettings;
use super::client::NomadClient;
use super::link::Link;
use super::wire::ServiceRegistration;
use crate::cluster::{AllocationStatus, OrchestratorAllocation, OrchestratorSet};
use crate::util::backoff::Backoff;
use std::collections::BTreeMap;
use tokio_util::sync::CancellationToken;

pub(super) struct ServiceWatcher<'a> {
    client: &'a NomadClient,
    settings: &'a DiscoverySettings,
}

impl<'a> ServiceWatcher<'a> {
    pub fn new(client: &'a NomadClient, settings: &'a DiscoverySettings) -> Self {
        Self { client, settings }
    }

    /// Follows the registrations until `shutdown`; failures are reported and retried.
    /// `saved_index` is the index of the previous run: the first query still answers at once
    /// (the current registrations are needed now), and an answer below it means the cluster
    /// was rebuilt.
    pub async fn run(&self, link: &mut Link, saved_index: u64, shutdown: &CancellationToken) {
        let name = &self.settings.selector.service_name;
        let mut delays = Backoff::new(self.settings.backoff_min, self.settings.backoff_max);
        let mut index = 0;
        let mut known: BTreeMap<String, OrchestratorAllocation> = BTreeMap::new();
        while !shutdown.is_cancelled() {
            let answer = tokio::select! {
                _ = shutdown.cancelled() => break,
                answer = self.client.service(name, index, self.settings.blocking_wait) => answer,
            };
            let (registrations, answered_index) = match answer {
                Ok(answer) => answer,
                Err(error) => {
                    link.down(&error);
                    // After a failure the first answer is wanted at once: it says Nomad is
                    // back, and what changed meanwhile.
                    index = 0;
                    let delay = delays.next_delay();
                    tokio::select! {
                        _ = shutdown.cancelled() => break,
                        _ = tokio::time::sleep(delay) => {}
                    }
                    continue;
                }
            };
            delays.reset();
            if index == 0 && answered_index < saved_index {
                tracing::warn!(
                    nomad_index = answered_index,
                    saved_index,
                    "Nomad's index went backwards (cluster rebuilt?); following it from its current index"
                );
            }
            let next = self.orchestrators(&registrations);
            log_changes(&known, &next);
            known = next;
            // Ready first, then the set: whoever sees the set sees a ready component.
            link.up(
                format!(
                    "following registrations of service {name:?} at {}",
                    self.client.addr
                ),
                "discovering orchestrators through Nomad service registrations",
                known.len(),
            );
            link.publish(OrchestratorSet {
                listed: true,
                connected: true,
                allocations: known.clone(),
            });
            let unchanged = answered_index == index;
            if answered_index != index {
                link.index(answered_index);
                link.save_index(answered_index).await;
            }
            // Nomad's advice for blocking queries: an index that went backwards resets to 0, and
            // one below 1 must not be used (it would answer at once, forever).
            index = if answered_index < index {
                0
            } else {
                answered_index.max(1)
            };
            if unchanged {
                // The wait ended without a change; a proxy that answers at once must not turn
                // this into a busy loop.
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tokio::time::sleep(self.settings.backoff_min) => {}
                }
            }
        }
    }

    /// One entry per registered allocation; registrations without a usable address are
    /// skipped, as E2B's API skips them.
    fn orchestrators(
        &self,
        registrations: &[ServiceRegistration],
    ) -> BTreeMap<String, OrchestratorAllocation> {
        let default_port = self.settings.selector.default_port;
        registrations
            .iter()
            .filter_map(|r| {
                let address = r.address(default_port)?;
                let id = if r.alloc_id.is_empty() {
                    r.id.clone()
                } else {
                    r.alloc_id.clone()
                };
                Some((
                    id.clone(),
                    OrchestratorAllocation {
                        id,
                        job_id: r.job_id.clone(),
                        node_name: r.node_id.clone(),
                        status: AllocationStatus::Running,
                        address: Some(address),
                    },
                ))
            })
            .collect()
    }
}

fn log_changes(
    before: &BTreeMap<String, OrchestratorAllocation>,
    after: &BTreeMap<String, OrchestratorAllocation>,
) {
    for (id, orchestrator) in after {
        if before.get(id) != Some(orchestrator) {
            tracing::info!(
                allocation = %id,
                job = %orchestrator.job_id,
                node = %orchestrator.node_name,
                address = ?orchestrator.address,
                "orchestrator registered"
            );
        }
    }
    for (id, orchestrator) in before {
        if !after.contains_key(id) {
            tracing::info!(
                allocation = %id,
                node = %orchestrator.node_name,
                address = ?orchestrator.address,
                "orchestrator registration removed; its sandboxes are killed only if it also stops answering"
            );
        }
    }
}
