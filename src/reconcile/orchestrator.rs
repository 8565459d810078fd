//! The one gRPC call the emitter makes: `SandboxService/List` on each orchestrator.

use super::proto::sandbox_service_client::SandboxServiceClient;
use super::proto::{RunningSandbox, SandboxConfig};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;
use tonic::transport::{Channel, Endpoint};

/// A `List` answer can hold thousands of sandboxes; tonic's 4 MiB default is too tight.
const MAX_LIST_BYTES: usize = 64 << 20;

impl fmt::Debug for SandboxConfig {
    /// Names the sandbox only: the config holds `envd_access_token`, which must never be printed.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SandboxConfig")
            .field("sandbox_id", &self.sandbox_id)
            .field("template_id", &self.template_id)
            .finish_non_exhaustive()
    }
}

/// What the reconciler keeps of one listed sandbox: the fields of a lifecycle event, no more.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct ListedSandbox {
    pub sandbox_id: String,
    pub team_id: String,
    pub execution_id: String,
    /// The base template, as the orchestrator's events carry it (`sandbox_template_id`).
    pub template_id: String,
    pub build_id: String,
    pub metadata: BTreeMap<String, String>,
    /// When the current execution started.
    pub started_at: Option<jiff::Timestamp>,
    pub vcpu: i64,
    pub ram_mb: i64,
    /// 0 when the orchestrator does not say.
    pub events_ttl_days: i64,
}

impl From<RunningSandbox> for ListedSandbox {
    fn from(sandbox: RunningSandbox) -> Self {
        // The config is consumed here: its envd_access_token and every field not copied out are
        // dropped with it, so they cannot reach a log line or an event.
        let config = sandbox.config.unwrap_or_default();
        // The scalar fields are the current ones (`config` is deprecated upstream and filled only
        // for old readers); the config is read for what they leave empty or do not carry.
        let either = |top: String, nested: String| if top.is_empty() { nested } else { top };
        let either_number = |top: i64, nested: i64| if top == 0 { nested } else { top };
        Self {
            sandbox_id: either(sandbox.sandbox_id, config.sandbox_id),
            team_id: either(sandbox.team_id, config.team_id),
            execution_id: either(sandbox.execution_id, config.execution_id),
            template_id: either(config.base_template_id, config.template_id),
            build_id: config.build_id,
            metadata: config.metadata.into_iter().collect(),
            started_at: sandbox
                .start_time
                .filter(|t| t.seconds != 0 || t.nanos != 0)
                .and_then(|t| jiff::Timestamp::new(t.seconds, t.nanos).ok()),
            vcpu: either_number(sandbox.vcpu, config.vcpu),
            ram_mb: either_number(sandbox.ram_mb, config.ram_mb),
            events_ttl_days: config.events_ttl_days,
        }
    }
}

/// One gRPC channel per orchestrator address, reused across runs.
pub(crate) struct OrchestratorClients {
    timeout: Duration,
    clients: HashMap<SocketAddr, SandboxServiceClient<Channel>>,
}

impl OrchestratorClients {
    pub fn new(timeout: Duration) -> Self {
        Self {
            timeout,
            clients: HashMap::new(),
        }
    }

    /// Closes the channels of orchestrators no longer running.
    pub fn retain(&mut self, running: &HashSet<SocketAddr>) {
        self.clients.retain(|addr, _| running.contains(addr));
    }

    /// A client for `addr`; it connects on first use, plaintext as the orchestrator serves.
    pub fn client(&mut self, addr: SocketAddr) -> Result<SandboxServiceClient<Channel>, String> {
        if let Some(client) = self.clients.get(&addr) {
            return Ok(client.clone());
        }
        let endpoint = Endpoint::from_shared(format!("http://{addr}"))
            .map_err(|e| format!("invalid orchestrator address {addr}: {e}"))?
            .connect_timeout(self.timeout)
            .timeout(self.timeout);
        let client = SandboxServiceClient::new(endpoint.connect_lazy())
            .max_decoding_message_size(MAX_LIST_BYTES);
        self.clients.insert(addr, client.clone());
        Ok(client)
    }
}

/// Calls `List` and keeps only what events need.
pub(crate) async fn list(
    mut client: SandboxServiceClient<Channel>,
) -> Result<Vec<ListedSandbox>, String> {
    match client.list(()).await {
        Ok(response) => Ok(response
            .into_inner()
            .sandboxes
            .into_iter()
            .map(ListedSandbox::from)
            .collect()),
        Err(status) => Err(describe(&status)),
    }
}

fn describe(status: &tonic::Status) -> String {
    let mut text = format!("{:?}: {}", status.code(), status.message());
    let mut source = std::error::Error::source(status);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listed_sandbox_keeps_event_fields_and_debug_never_shows_the_token() {
        let config = SandboxConfig {
            template_id: "snapshot-of-base".into(),
            base_template_id: "base".into(),
            build_id: "b1".into(),
            vcpu: 4,
            ram_mb: 1024,
            events_ttl_days: 30,
            sandbox_id: "isb1".into(),
            team_id: "t".into(),
            execution_id: "e1".into(),
            envd_access_token: Some("tok-SECRET".into()),
            metadata: [("k".to_owned(), "v".to_owned())].into(),
        };
        assert!(!format!("{config:?}").contains("tok-SECRET"));
        let running = RunningSandbox {
            config: Some(config),
            client_id: "node-1".into(),
            start_time: Some(prost_types::Timestamp {
                seconds: 1_700_000_000,
                nanos: 0,
            }),
            vcpu: 2,
            ..Default::default()
        };
        assert!(!format!("{running:?}").contains("tok-SECRET"));
        let listed = ListedSandbox::from(running);
        assert_eq!(
            (
                listed.sandbox_id.as_str(),
                listed.team_id.as_str(),
                listed.execution_id.as_str()
            ),
            ("isb1", "t", "e1")
        );
        assert_eq!(
            (listed.template_id.as_str(), listed.build_id.as_str()),
            ("base", "b1")
        );
        assert_eq!(listed.metadata["k"], "v");
        // Scalars win; the config fills what they leave empty.
        assert_eq!((listed.vcpu, listed.ram_mb), (2, 1024));
        assert_eq!(listed.events_ttl_days, 30);
        assert_eq!(
            listed.started_at,
            Some(jiff::Timestamp::from_second(1_700_000_000).unwrap())
        );
        assert!(!format!("{listed:?}").contains("tok-SECRET"));
    }
}
