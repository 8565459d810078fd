//! The reconciliation decision, free of I/O: compare what the outbox believes with what the
//! orchestrators list, and report a difference only once it has lasted.

use super::orchestrator::ListedSandbox;
use crate::cluster::OrchestratorSet;
use crate::event::Lifecycle;
use crate::outbox::{SandboxRecord, SandboxState};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

/// Where a sandbox was last seen running.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Placement {
    /// The orchestrator allocation whose `List` showed it. The allocation, not the
    /// orchestrator's `client_id`: a node keeps its client id when its orchestrator allocation
    /// is replaced, and the replacement does not have the old one's sandboxes.
    pub allocation: String,
    /// Where that orchestrator answered: once Nomad no longer lists it, it is still asked
    /// there until it stops answering.
    #[serde(default)]
    pub address: Option<SocketAddr>,
    /// Its execution then.
    pub execution_id: String,
    /// When (ms since the epoch).
    pub seen_at_ms: i64,
}

/// What one orchestrator said in this run.
#[derive(Debug, Clone)]
pub(crate) enum Listing {
    /// Its sandboxes.
    Answered(Vec<ListedSandbox>),
    /// No answer (or no address to ask): says nothing about its sandboxes.
    Silent,
}

/// Why a sandbox we believed running is gone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum KillReason {
    /// Its orchestrator left Nomad (deregistered, or its allocation ended) and does not answer.
    OrchestratorLost,
    /// No orchestrator has it any more.
    Vanished,
}

impl KillReason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::OrchestratorLost => "orchestrator_lost",
            Self::Vanished => "vanished",
        }
    }
}

/// A difference that lasted long enough to act on.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Finding {
    /// Running on an orchestrator, but its `created` (or `resumed`) event never came.
    Missed {
        lifecycle: Lifecycle,
        sandbox: ListedSandbox,
    },
    /// Believed running, but no orchestrator has it.
    Gone {
        record: SandboxRecord,
        reason: KillReason,
    },
}

impl Finding {
    /// The `reason` label of the synthesized-events metric.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Missed {
                lifecycle: Lifecycle::Resumed,
                ..
            } => "missed_resume",
            Self::Missed { .. } => "missed_create",
            Self::Gone { reason, .. } => reason.as_str(),
        }
    }

    fn suspicion(&self) -> Suspicion {
        match self {
            Self::Missed {
                lifecycle: Lifecycle::Resumed,
                ..
            } => Suspicion::Resumed,
            Self::Missed { .. } => Suspicion::Created,
            Self::Gone { .. } => Suspicion::Killed,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Suspicion {
    Created,
    Resumed,
    Killed,
}

#[derive(Debug, Clone, Copy)]
struct Suspect {
    kind: Suspicion,
    first_seen_ms: i64,
    runs: u32,
}

/// Everything one run looks at.
pub(crate) struct Observation<'a> {
    pub now_ms: i64,
    /// The outbox's view: sandboxes running or paused according to the events.
    pub records: &'a [SandboxRecord],
    pub orchestrators: &'a OrchestratorSet,
    /// One entry per orchestrator asked, by allocation id: every running one, and those Nomad
    /// no longer lists that still hold a placement.
    pub listings: &'a BTreeMap<String, Listing>,
    /// The address each allocation was asked at.
    pub addresses: &'a BTreeMap<String, SocketAddr>,
}

/// What the reconciler remembers between runs.
#[derive(Debug, Default)]
pub(crate) struct Memory {
    /// Persisted: lets a kill name the lost orchestrator, even after a restart.
    pub placements: BTreeMap<String, Placement>,
    /// In memory only: a restart begins every suspicion anew, which only delays.
    suspects: BTreeMap<String, Suspect>,
}

impl Memory {
    pub fn with_placements(placements: BTreeMap<String, Placement>) -> Self {
        Self {
            placements,
            suspects: BTreeMap::new(),
        }
    }

    /// Drops every suspicion: runs must be consecutive, and a skipped run breaks the chain.
    pub fn forget_suspects(&mut self) {
        self.suspects.clear();
    }

    /// Compares, updates placements and suspicions, and returns the differences seen on at
    /// least two consecutive runs spanning at least `grace`.
    pub fn decide(&mut self, observation: &Observation<'_>, grace: Duration) -> Vec<Finding> {
        let now = observation.now_ms;
        let records: BTreeMap<&str, &SandboxRecord> = observation
            .records
            .iter()
            .map(|r| (r.sandbox_id.as_str(), r))
            .collect();
        // Where each listed sandbox runs; an orchestrator Nomad still lists wins over a departed
        // one answering at the same address, so placements follow the current allocation.
        let mut listed: BTreeMap<&str, (&str, &ListedSandbox)> = BTreeMap::new();
        let by_preference = observation
            .listings
            .iter()
            .filter(|(a, _)| observation.orchestrators.is_running(a))
            .chain(
                observation
                    .listings
                    .iter()
                    .filter(|(a, _)| !observation.orchestrators.is_running(a)),
            );
        for (allocation, listing) in by_preference {
            if let Listing::Answered(sandboxes) = listing {
                for sandbox in sandboxes {
                    listed
                        .entry(sandbox.sandbox_id.as_str())
                        .or_insert((allocation.as_str(), sandbox));
                }
            }
        }

        let mut candidates: Vec<(String, Finding)> = Vec::new();
        for (&sandbox_id, &(allocation, sandbox)) in &listed {
            self.placements.insert(
                sandbox_id.to_owned(),
                Placement {
                    allocation: allocation.to_owned(),
                    address: observation.addresses.get(allocation).copied(),
                    execution_id: sandbox.execution_id.clone(),
                    seen_at_ms: now,
                },
            );
            let lifecycle = match records.get(sandbox_id) {
                None => Lifecycle::Created,
                // Paused, yet running under a new execution: the resume event was missed. The
                // same execution still listed is a pause in progress, not a resume.
                Some(r)
                    if r.state == SandboxState::Paused
                        && !sandbox.execution_id.is_empty()
                        && r.execution_id
                            .as_deref()
                            .is_some_and(|e| e != sandbox.execution_id) =>
                {
                    Lifecycle::Resumed
                }
                Some(_) => continue,
            };
            candidates.push((
                sandbox_id.to_owned(),
                Finding::Missed {
                    lifecycle,
                    sandbox: sandbox.clone(),
                },
            ));
        }

        let answered = |allocation: &str| {
            matches!(
                observation.listings.get(allocation),
                Some(Listing::Answered(_))
            )
        };
        // Without a known placement a sandbox could be on any orchestrator: it is gone only if
        // every one answered and the set is current (an orchestrator added while Nomad was
        // unreachable would be missing from it).
        let everyone_answered = observation.orchestrators.connected
            && observation.orchestrators.running().all(|a| answered(&a.id));
        for record in observation.records {
            // Paused sandboxes leave the list without dying: never a kill.
            if record.state != SandboxState::Running
                || listed.contains_key(record.sandbox_id.as_str())
            {
                continue;
            }
            let placement = self
                .placements
                .get(&record.sandbox_id)
                .filter(|p| placement_is_current(p, record));
            // The rule (DESIGN §4, docs/reconciliation.md): an orchestrator that answers is
            // believed, whether or not Nomad lists it; one that does not answer is only given
            // up once Nomad no longer lists it either, on two runs spanning the grace period.
            let reason = match placement {
                Some(p) => match observation.listings.get(&p.allocation) {
                    Some(Listing::Answered(_)) => Some(KillReason::Vanished),
                    // Listed by Nomad but silent (restarting, overloaded, partitioned from us).
                    _ if observation.orchestrators.is_running(&p.allocation) => None,
                    // Gone from Nomad and silent, or gone with no address left to ask.
                    _ => Some(KillReason::OrchestratorLost),
                },
                None => everyone_answered.then_some(KillReason::Vanished),
            };
            if let Some(reason) = reason {
                candidates.push((
                    record.sandbox_id.clone(),
                    Finding::Gone {
                        record: record.clone(),
                        reason,
                    },
                ));
            }
        }

        let grace_ms = i64::try_from(grace.as_millis()).unwrap_or(i64::MAX);
        let mut suspects = BTreeMap::new();
        let mut findings = Vec::new();
        for (sandbox_id, finding) in candidates {
            let kind = finding.suspicion();
            let suspect = match self.suspects.get(&sandbox_id) {
                Some(s) if s.kind == kind => Suspect {
                    runs: s.runs + 1,
                    ..*s
                },
                _ => Suspect {
                    kind,
                    first_seen_ms: now,
                    runs: 1,
                },
            };
            if suspect.runs >= 2 && now - suspect.first_seen_ms >= grace_ms {
                if matches!(finding, Finding::Gone { .. }) {
                    self.placements.remove(&sandbox_id);
                }
                findings.push(finding);
            } else {
                suspects.insert(sandbox_id, suspect);
            }
        }
        self.suspects = suspects;
        self.placements
            .retain(|id, _| records.contains_key(id.as_str()) || listed.contains_key(id.as_str()));
        findings
    }
}

/// Whether the placement still describes the sandbox: nothing happened to it since it was
/// seen there (a later resume may have put it on another orchestrator).
fn placement_is_current(placement: &Placement, record: &SandboxRecord) -> bool {
    let same_execution = !placement.execution_id.is_empty()
        && record.execution_id.as_deref() == Some(placement.execution_id.as_str());
    same_execution || record.updated_at_ms <= placement.seen_at_ms
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::{AllocationStatus, OrchestratorAllocation};

    const GRACE: Duration = Duration::from_millis(1000);

    fn record(id: &str, state: SandboxState, execution: &str) -> SandboxRecord {
        SandboxRecord {
            sandbox_id: id.into(),
            state,
            team_id: "0b8b8a4e-6f4e-4c4a-9a57-3a2f5d3b1c2d".into(),
            template_id: Some("base".into()),
            execution_id: Some(execution.into()),
            updated_at_ms: 0,
        }
    }

    fn listed(id: &str, execution: &str) -> ListedSandbox {
        ListedSandbox {
            sandbox_id: id.into(),
            team_id: "0b8b8a4e-6f4e-4c4a-9a57-3a2f5d3b1c2d".into(),
            execution_id: execution.into(),
            template_id: "base".into(),
            build_id: "b".into(),
            metadata: BTreeMap::new(),
            ..ListedSandbox::default()
        }
    }

    fn set(statuses: &[(&str, AllocationStatus)]) -> OrchestratorSet {
        OrchestratorSet {
            listed: true,
            connected: true,
            allocations: statuses
                .iter()
                .map(|(id, status)| {
                    (
                        (*id).to_owned(),
                        OrchestratorAllocation {
                            id: (*id).into(),
                            job_id: "orchestrator-1".into(),
                            node_name: "n".into(),
                            status: status.clone(),
                            address: Some("127.0.0.1:5008".parse().unwrap()),
                        },
                    )
                })
                .collect(),
        }
    }

    fn run(
        memory: &mut Memory,
        now_ms: i64,
        records: &[SandboxRecord],
        orchestrators: &OrchestratorSet,
        listings: Vec<(&str, Listing)>,
    ) -> Vec<Finding> {
        let listings = listings
            .into_iter()
            .map(|(a, l)| (a.to_owned(), l))
            .collect();
        memory.decide(
            &Observation {
                now_ms,
                records,
                orchestrators,
                listings: &listings,
                addresses: &BTreeMap::new(),
            },
            GRACE,
        )
    }

    fn reasons(findings: &[Finding]) -> Vec<&'static str> {
        findings.iter().map(Finding::reason).collect()
    }

    #[test]
    fn a_difference_needs_two_runs_spanning_the_grace_period() {
        let mut m = Memory::default();
        let nomad = set(&[("a", AllocationStatus::Running)]);
        let answer = || vec![("a", Listing::Answered(vec![listed("s1", "e1")]))];
        assert!(run(&mut m, 1_000, &[], &nomad, answer()).is_empty());
        // Second run, but within the grace period.
        assert!(run(&mut m, 1_500, &[], &nomad, answer()).is_empty());
        assert_eq!(
            reasons(&run(&mut m, 2_000, &[], &nomad, answer())),
            ["missed_create"]
        );
        // A skipped run breaks the chain.
        m.forget_suspects();
        assert!(run(&mut m, 9_000, &[], &nomad, answer()).is_empty());
    }

    #[test]
    fn lost_orchestrator_kills_what_it_ran_and_silent_one_kills_nothing() {
        let mut m = Memory::default();
        let records = [
            record("s1", SandboxState::Running, "e1"),
            record("s2", SandboxState::Running, "e2"),
        ];
        let both = set(&[
            ("a", AllocationStatus::Running),
            ("b", AllocationStatus::Running),
        ]);
        let listings = || {
            vec![
                ("a", Listing::Answered(vec![listed("s1", "e1")])),
                ("b", Listing::Answered(vec![listed("s2", "e2")])),
            ]
        };
        assert!(run(&mut m, 1_000, &records, &both, listings()).is_empty());
        // b is silent but running: its sandbox is not killed, however long it lasts.
        for now in [2_000, 5_000, 9_000] {
            let found = run(
                &mut m,
                now,
                &records,
                &both,
                vec![
                    ("a", Listing::Answered(vec![listed("s1", "e1")])),
                    ("b", Listing::Silent),
                ],
            );
            assert!(found.is_empty(), "{found:?}");
        }
        // b is lost: s2 is killed as orchestrator_lost once the grace period has passed.
        let lost = set(&[
            ("a", AllocationStatus::Running),
            ("b", AllocationStatus::Lost),
        ]);
        let only_a = || vec![("a", Listing::Answered(vec![listed("s1", "e1")]))];
        assert!(run(&mut m, 10_000, &records, &lost, only_a()).is_empty());
        let found = run(&mut m, 11_000, &records, &lost, only_a());
        assert_eq!(reasons(&found), ["orchestrator_lost"]);
        assert!(matches!(&found[0], Finding::Gone { record, .. } if record.sandbox_id == "s2"));
        // Garbage-collected allocations count as gone too.
        let mut m = Memory::default();
        assert!(run(&mut m, 1_000, &records, &both, listings()).is_empty());
        let gc = set(&[("a", AllocationStatus::Running)]);
        assert!(run(&mut m, 2_000, &records, &gc, only_a()).is_empty());
        assert_eq!(
            reasons(&run(&mut m, 3_000, &records, &gc, only_a())),
            ["orchestrator_lost"]
        );
    }

    #[test]
    fn an_orchestrator_gone_from_nomad_but_answering_is_still_reconciled_and_kills_nothing() {
        let mut m = Memory::default();
        let records = [
            record("s1", SandboxState::Running, "e1"),
            record("s2", SandboxState::Running, "e2"),
        ];
        let registered = set(&[("a", AllocationStatus::Running)]);
        let both = || {
            vec![(
                "a",
                Listing::Answered(vec![listed("s1", "e1"), listed("s2", "e2")]),
            )]
        };
        assert!(run(&mut m, 1_000, &records, &registered, both()).is_empty());
        // Its registration is gone (a missed heartbeat on Nomad 1.8), yet it answers: no kill,
        // however long it lasts, while it lists its sandboxes.
        let deregistered = set(&[]);
        for now in [2_000, 4_000, 8_000] {
            assert!(run(&mut m, now, &records, &deregistered, both()).is_empty());
        }
        // Still answering, but s2 is no longer listed: vanished, not orchestrator_lost.
        let only_s1 = || vec![("a", Listing::Answered(vec![listed("s1", "e1")]))];
        assert!(run(&mut m, 9_000, &records, &deregistered, only_s1()).is_empty());
        assert_eq!(
            reasons(&run(&mut m, 10_000, &records, &deregistered, only_s1())),
            ["vanished"]
        );
        // Then it stops answering too: s1 goes as orchestrator_lost, once.
        let silent = || vec![("a", Listing::Silent)];
        let records = [record("s1", SandboxState::Running, "e1")];
        assert!(run(&mut m, 11_000, &records, &deregistered, silent()).is_empty());
        assert_eq!(
            reasons(&run(&mut m, 12_000, &records, &deregistered, silent())),
            ["orchestrator_lost"]
        );
        assert!(run(&mut m, 13_000, &[], &deregistered, vec![]).is_empty());
    }

    #[test]
    fn a_restarted_orchestrator_makes_what_it_no_longer_lists_vanished() {
        let mut m = Memory::default();
        let records = [
            record("s1", SandboxState::Running, "e1"),
            record("s2", SandboxState::Running, "e2"),
        ];
        let old = set(&[("a", AllocationStatus::Running)]);
        let answer = vec![(
            "a",
            Listing::Answered(vec![listed("s1", "e1"), listed("s2", "e2")]),
        )];
        assert!(run(&mut m, 1_000, &records, &old, answer).is_empty());
        // Replaced by allocation b on the same node and port: the old one's address is answered
        // by the new process, which has none of the old sandboxes but a new one.
        let new = set(&[("b", AllocationStatus::Running)]);
        let answers = || {
            vec![
                ("a", Listing::Answered(vec![listed("s3", "e3")])),
                ("b", Listing::Answered(vec![listed("s3", "e3")])),
            ]
        };
        let records = [
            record("s1", SandboxState::Running, "e1"),
            record("s2", SandboxState::Running, "e2"),
            record("s3", SandboxState::Running, "e3"),
        ];
        assert!(run(&mut m, 2_000, &records, &new, answers()).is_empty());
        assert_eq!(
            m.placements["s3"].allocation, "b",
            "the registered allocation wins"
        );
        assert_eq!(
            reasons(&run(&mut m, 3_000, &records, &new, answers())),
            ["vanished", "vanished"]
        );
    }

    #[test]
    fn paused_sandboxes_are_never_killed_and_a_missed_resume_is_found() {
        let mut m = Memory::default();
        let nomad = set(&[("a", AllocationStatus::Running)]);
        let paused = [record("s1", SandboxState::Paused, "e1")];
        for now in [1_000, 3_000, 5_000] {
            assert!(
                run(
                    &mut m,
                    now,
                    &paused,
                    &nomad,
                    vec![("a", Listing::Answered(vec![]))]
                )
                .is_empty()
            );
        }
        // Still listed under the paused execution: a pause in progress, nothing to say.
        for now in [6_000, 8_000] {
            let answer = vec![("a", Listing::Answered(vec![listed("s1", "e1")]))];
            assert!(run(&mut m, now, &paused, &nomad, answer).is_empty());
        }
        // Listed under a new execution: the resume event was missed.
        let answer = || vec![("a", Listing::Answered(vec![listed("s1", "e2")]))];
        assert!(run(&mut m, 9_000, &paused, &nomad, answer()).is_empty());
        assert_eq!(
            reasons(&run(&mut m, 10_000, &paused, &nomad, answer())),
            ["missed_resume"]
        );
    }

    #[test]
    fn unknown_placement_is_vanished_only_when_every_orchestrator_answered_on_a_current_set() {
        let records = [record("s1", SandboxState::Running, "e1")];
        let mut nomad = set(&[
            ("a", AllocationStatus::Running),
            ("b", AllocationStatus::Running),
        ]);
        let mut m = Memory::default();
        let partial = || vec![("a", Listing::Answered(vec![])), ("b", Listing::Silent)];
        assert!(run(&mut m, 1_000, &records, &nomad, partial()).is_empty());
        assert!(run(&mut m, 5_000, &records, &nomad, partial()).is_empty());
        let all = || {
            vec![
                ("a", Listing::Answered(vec![])),
                ("b", Listing::Answered(vec![])),
            ]
        };
        nomad.connected = false;
        assert!(run(&mut m, 6_000, &records, &nomad, all()).is_empty());
        assert!(run(&mut m, 9_000, &records, &nomad, all()).is_empty());
        nomad.connected = true;
        assert!(run(&mut m, 10_000, &records, &nomad, all()).is_empty());
        assert_eq!(
            reasons(&run(&mut m, 11_000, &records, &nomad, all())),
            ["vanished"]
        );
    }

    #[test]
    fn a_placement_older_than_the_latest_event_is_not_trusted() {
        let mut m = Memory::default();
        let nomad = set(&[
            ("a", AllocationStatus::Running),
            ("b", AllocationStatus::Running),
        ]);
        let running = [record("s1", SandboxState::Running, "e1")];
        run(
            &mut m,
            1_000,
            &running,
            &nomad,
            vec![
                ("a", Listing::Answered(vec![listed("s1", "e1")])),
                ("b", Listing::Answered(vec![])),
            ],
        );
        // Resumed (new execution, later event) while b does not answer: it may be on b.
        let mut resumed = record("s1", SandboxState::Running, "e2");
        resumed.updated_at_ms = 1_500;
        let silent_b = || vec![("a", Listing::Answered(vec![])), ("b", Listing::Silent)];
        for now in [2_000, 4_000, 6_000] {
            assert!(
                run(
                    &mut m,
                    now,
                    std::slice::from_ref(&resumed),
                    &nomad,
                    silent_b()
                )
                .is_empty()
            );
        }
    }
}
