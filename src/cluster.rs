//! The cluster as the reconciler needs to know it: the orchestrator allocations that Nomad
//! discovery (`source::nomad`) publishes, and their client status. Plain data, no I/O.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;

/// `ClientStatus` of a Nomad allocation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AllocationStatus {
    /// Placed, not started yet.
    Pending,
    /// Running (every orchestrator with a service registration is).
    Running,
    /// Stopped normally (a deploy replaced it, or it was stopped).
    Complete,
    /// Exited with an error.
    Failed,
    /// Its node stopped heartbeating and Nomad gave up on it.
    Lost,
    /// Its node is disconnected but may come back (`max_client_disconnect`).
    Unknown,
    /// A status this version does not know.
    Other(String),
}

impl AllocationStatus {
    /// From Nomad's `ClientStatus` text.
    pub fn parse(status: &str) -> Self {
        match status {
            "pending" => Self::Pending,
            "running" => Self::Running,
            "complete" => Self::Complete,
            "failed" => Self::Failed,
            "lost" => Self::Lost,
            "unknown" => Self::Unknown,
            other => Self::Other(other.to_owned()),
        }
    }

    /// Whether the allocation is finished for good: whatever ran in it is gone.
    pub fn is_terminal(&self) -> bool {
        matches!(self, Self::Complete | Self::Failed | Self::Lost)
    }
}

impl fmt::Display for AllocationStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Pending => "pending",
            Self::Running => "running",
            Self::Complete => "complete",
            Self::Failed => "failed",
            Self::Lost => "lost",
            Self::Unknown => "unknown",
            Self::Other(s) => s,
        })
    }
}

/// One orchestrator allocation as Nomad last described it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrchestratorAllocation {
    /// Allocation id.
    pub id: String,
    /// Job id (`orchestrator-<hash>`).
    pub job_id: String,
    /// The Nomad node it runs on (its name from allocations, its id from registrations).
    pub node_name: String,
    /// Client status.
    pub status: AllocationStatus,
    /// The gRPC address, once Nomad has reported one.
    pub address: Option<SocketAddr>,
}

/// What discovery knows about the orchestrators, published on every change.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OrchestratorSet {
    /// Nomad has been listed at least once since start; before that an empty set means
    /// "not known yet", not "no orchestrators".
    pub listed: bool,
    /// Discovery is following Nomad, so the set is current; while not, changes may be missing.
    pub connected: bool,
    /// Orchestrator allocations Nomad still lists, by id: from the event stream terminal ones
    /// included until garbage-collected; from service registrations only those registered.
    pub allocations: BTreeMap<String, OrchestratorAllocation>,
}

impl OrchestratorSet {
    /// The allocations whose client status is `running`.
    pub fn running(&self) -> impl Iterator<Item = &OrchestratorAllocation> {
        self.allocations
            .values()
            .filter(|a| a.status == AllocationStatus::Running)
    }

    /// Whether Nomad still lists the allocation as running: a registered (or running)
    /// orchestrator that does not answer is no reason to kill its sandboxes.
    pub fn is_running(&self, allocation: &str) -> bool {
        self.allocations
            .get(allocation)
            .is_some_and(|a| a.status == AllocationStatus::Running)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_running_allocation_counts_as_listed() {
        let mut set = OrchestratorSet::default();
        for (id, status) in [
            ("a", AllocationStatus::Running),
            ("b", AllocationStatus::Lost),
        ] {
            set.allocations.insert(
                id.into(),
                OrchestratorAllocation {
                    id: id.into(),
                    job_id: "orchestrator-1".into(),
                    node_name: "n".into(),
                    status,
                    address: None,
                },
            );
        }
        assert!(set.is_running("a"));
        assert!(!set.is_running("b") && !set.is_running("c"));
        assert_eq!(set.running().count(), 1);
    }
}
