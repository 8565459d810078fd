//! Asking the orchestrators: whom to ask, every one at once, only the served teams' sandboxes
//! kept, and the last listing of each sandbox remembered (a kill's `execution` block).

use super::orchestrator;
use super::plan::Listing;
use super::synthesize::Seen;
use super::{Reconciler, SOURCE};
use crate::cluster::OrchestratorSet;
use crate::outbox::SandboxRecord;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;

impl Reconciler {
    /// The orchestrators to ask, by allocation id: every one Nomad lists as running, and every
    /// one it no longer lists that still holds a placement (it may only have lost its
    /// registration, hashicorp/nomad#16983), at the address where it last answered.
    pub(super) fn targets(
        &self,
        orchestrators: &OrchestratorSet,
    ) -> BTreeMap<String, Option<SocketAddr>> {
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
    pub(super) async fn list_all(
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
    pub(super) fn serves(&self, team: &str) -> bool {
        crate::event::team_in_scope(&self.settings.teams, team)
    }

    /// Removes other teams' sandboxes from the answers: `List` returns every team's, and
    /// nothing about them may leave the process.
    pub(super) fn drop_other_teams(&self, listings: &mut BTreeMap<String, Listing>) {
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
    pub(super) fn remember_listed(
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
}
