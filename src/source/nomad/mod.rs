//! Orchestrator discovery through Nomad. The result is an [`OrchestratorSet`] on a `watch`
//! channel, read by the reconciler.
//!
//! Two ways, chosen by [`DiscoveryMode`]:
//!
//! - **Service registrations** (default): blocking queries on `GET /v1/service/orchestrator`,
//!   the Nomad-native service every E2B orchestrator registers on its gRPC port and that E2B's
//!   own API reads (e2b-dev/infra `packages/api/internal/orchestrator/discovery/nomad.go`). A
//!   task's workload identity may read service registrations without any policy (Nomad's
//!   "Default Workload ACL Policy"), so this needs neither `read-job` nor the event stream.
//!   Nomad deletes the registrations of an allocation when it stops, and on 1.8 also when its
//!   node misses heartbeats (hashicorp/nomad#16983; only 1.10 waits for the allocation to be
//!   marked lost, #26424) — so a registration that disappears does not prove the orchestrator is
//!   gone: the reconciler still asks it, and kills nothing while it answers.
//! - **Allocations**: the allocation event stream plus a re-list after every (re)connect. It
//!   names a `lost` allocation directly, but needs `read-job`, and Nomad before 1.9 refuses a
//!   workload identity on the event stream (hashicorp/nomad#18186, fixed in 1.9 by #24849).
//!   When Nomad refuses the token, discovery falls back to service registrations by itself.

mod allocations;
mod client;
mod error;
mod link;
mod services;
mod stream;
mod wire;

pub use error::NomadError;

use crate::cluster::OrchestratorSet;
use crate::metrics::Metrics;
use crate::outbox::Outbox;
use crate::util::secret::Secret;
use client::NomadClient;
use link::Link;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use url::Url;

/// Outbox state key holding the last Nomad index processed (decimal).
pub const INDEX_STATE_KEY: &str = "nomad.last_index";

/// How orchestrators are found.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum DiscoveryMode {
    /// Nomad service registrations of the orchestrator service (works with a workload identity).
    #[default]
    Services,
    /// The allocation event stream (needs `read-job`, and Nomad ≥ 1.9 for a workload identity);
    /// falls back to `Services` when refused.
    Allocations,
}

impl std::str::FromStr for DiscoveryMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "services" => Ok(Self::Services),
            "allocations" => Ok(Self::Allocations),
            other => Err(format!(
                "{other:?} is not a discovery mode; use services or allocations"
            )),
        }
    }
}

/// Which allocations are orchestrators, and which of their ports serves gRPC.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrchestratorSelector {
    /// Name of the Nomad service the orchestrators register.
    pub service_name: String,
    /// Task group of the orchestrator job.
    pub task_group: String,
    /// Start of the orchestrator job's id (the job is `orchestrator-<hash>`, new on every deploy).
    pub job_prefix: String,
    /// Label of the gRPC port in the job's `network` block.
    pub port_label: String,
    /// Port used when Nomad reports none.
    pub default_port: u16,
}

impl Default for OrchestratorSelector {
    /// What e2b-dev/infra deploys: service `orchestrator`, job `orchestrator-<hash>`, group
    /// `client-orchestrator`, port `orchestrator` = 5008.
    fn default() -> Self {
        Self {
            service_name: "orchestrator".into(),
            task_group: "client-orchestrator".into(),
            job_prefix: "orchestrator".into(),
            port_label: "orchestrator".into(),
            default_port: 5008,
        }
    }
}

/// How to reach the Nomad API.
#[derive(Debug, Clone)]
pub struct NomadConfig {
    /// API address: `http(s)://…`, or `unix:///…/api.sock` (the Task API socket).
    pub addr: Url,
    /// ACL token or the task's workload identity (a JWT).
    pub token: Option<Secret>,
    /// Namespace of the orchestrator job.
    pub namespace: String,
    /// CA certificate file.
    pub cacert: Option<PathBuf>,
    /// Client certificate file.
    pub client_cert: Option<PathBuf>,
    /// Client key file.
    pub client_key: Option<PathBuf>,
}

/// Timing of discovery: the defaults suit a real Nomad, tests shorten them.
#[derive(Debug, Clone)]
pub struct DiscoverySettings {
    /// Services or allocations.
    pub mode: DiscoveryMode,
    /// Which allocations are orchestrators.
    pub selector: OrchestratorSelector,
    /// Longest wait of one blocking query (Nomad caps it at 10 minutes).
    pub blocking_wait: Duration,
    /// Nomad sends a `{}` heartbeat every 30 s; a stream silent for longer than this is
    /// presumed dead (a half-open connection) and reopened.
    pub stream_idle_timeout: Duration,
    /// First delay before reconnecting after a failure.
    pub backoff_min: Duration,
    /// Longest delay between reconnection attempts.
    pub backoff_max: Duration,
    /// Timeout of a non-blocking request, and of connecting.
    pub request_timeout: Duration,
}

impl Default for DiscoverySettings {
    fn default() -> Self {
        Self {
            mode: DiscoveryMode::default(),
            selector: OrchestratorSelector::default(),
            blocking_wait: Duration::from_secs(300),
            stream_idle_timeout: Duration::from_secs(75),
            backoff_min: Duration::from_millis(500),
            backoff_max: Duration::from_secs(30),
            request_timeout: Duration::from_secs(30),
        }
    }
}

/// Follows the orchestrators in one Nomad namespace and publishes them.
pub struct OrchestratorDiscovery {
    client: NomadClient,
    settings: DiscoverySettings,
    link: Link,
}

impl OrchestratorDiscovery {
    /// Builds discovery; fails only on unusable configuration (TLS files, token).
    pub fn new(
        config: &NomadConfig,
        settings: DiscoverySettings,
        metrics: Arc<Metrics>,
        outbox: Outbox,
    ) -> Result<Self, NomadError> {
        Ok(Self {
            client: NomadClient::new(config, settings.request_timeout)?,
            settings,
            link: Link::new(metrics, outbox),
        })
    }

    /// The orchestrators as currently known; changes whenever the set does.
    pub fn orchestrators(&self) -> watch::Receiver<OrchestratorSet> {
        self.link.subscribe()
    }

    /// Follows Nomad until `shutdown`, reconnecting with backoff; Nomad being down or refusing
    /// the token is reported on the `nomad` component, never fatal.
    pub async fn run(mut self, shutdown: CancellationToken) {
        let index = self.link.load_index().await;
        self.link.connecting();
        if self.settings.mode == DiscoveryMode::Allocations {
            let watcher = allocations::AllocationWatcher::new(&self.client, &self.settings);
            match watcher.run(&mut self.link, index, &shutdown).await {
                None => {
                    self.link.stopped();
                    return;
                }
                Some(refusal) => tracing::warn!(
                    reason = %refusal,
                    service = %self.settings.selector.service_name,
                    "Nomad refuses this token on the allocation API; discovering orchestrators \
                     through service registrations instead"
                ),
            }
        }
        let watcher = services::ServiceWatcher::new(&self.client, &self.settings);
        watcher.run(&mut self.link, index, &shutdown).await;
        self.link.stopped();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_discovery_mode_is_parsed_by_name() {
        assert_eq!("services".parse(), Ok(DiscoveryMode::Services));
        assert_eq!("allocations".parse(), Ok(DiscoveryMode::Allocations));
        assert!("events".parse::<DiscoveryMode>().is_err());
        assert_eq!(DiscoveryMode::default(), DiscoveryMode::Services);
    }
}
