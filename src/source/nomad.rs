//! Watches the orchestrators' Nomad allocations: the event stream reports a change within
//! seconds, and a full re-list on every (re)connect makes sure a gap in the stream (a dropped
//! connection, an index older than Nomad's small event buffer) cannot hide one.
//!
//! The result is an [`OrchestratorSet`] on a `watch` channel, read by the reconciler.

use crate::config::NomadConfig;
use crate::deliver::http::error_chain;
use crate::deliver::sign::Secret;
use crate::outbox::Outbox;
use crate::server::metrics::Metrics;
use backon::{BackoffBuilder, ExponentialBuilder};
use bytes::Bytes;
use futures_util::StreamExt;
use futures_util::stream::BoxStream;
use reqwest::StatusCode;
use reqwest::header::{HeaderName, HeaderValue};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use url::Url;

/// Outbox state key holding the last Nomad event index processed (decimal).
pub const INDEX_STATE_KEY: &str = "nomad.last_index";

/// How often, at most, the processed index is written to the outbox while frames arrive.
const INDEX_SAVE_INTERVAL: Duration = Duration::from_secs(10);

const TOKEN_HEADER: HeaderName = HeaderName::from_static("x-nomad-token");
const INDEX_HEADER: &str = "x-nomad-index";

/// Which allocations are orchestrators, and which of their ports serves gRPC.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrchestratorSelector {
    /// Task group of the orchestrator job.
    pub task_group: String,
    /// Start of the orchestrator job's id (the job is `orchestrator-<hash>`, new on every deploy).
    pub job_prefix: String,
    /// Label of the gRPC port in the job's `network` block.
    pub port_label: String,
    /// Port used when the allocation labels none.
    pub default_port: u16,
}

impl Default for OrchestratorSelector {
    /// What e2b-dev/infra deploys: job `orchestrator-<hash>`, group `client-orchestrator`,
    /// port `orchestrator` = 5008.
    fn default() -> Self {
        Self {
            task_group: "client-orchestrator".into(),
            job_prefix: "orchestrator".into(),
            port_label: "orchestrator".into(),
            default_port: 5008,
        }
    }
}

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

/// Timing of the watcher: the defaults suit a real Nomad, tests shorten them.
#[derive(Debug, Clone)]
pub struct WatcherSettings {
    /// Which allocations are orchestrators.
    pub selector: OrchestratorSelector,
    /// Nomad sends a `{}` heartbeat every 30 s; a stream silent for longer than this is
    /// presumed dead (a half-open connection) and reopened.
    pub stream_idle_timeout: Duration,
    /// First delay before reconnecting after a failure.
    pub backoff_min: Duration,
    /// Longest delay between reconnection attempts.
    pub backoff_max: Duration,
    /// Timeout of the allocation list request, and of connecting.
    pub request_timeout: Duration,
}

impl Default for WatcherSettings {
    fn default() -> Self {
        Self {
            selector: OrchestratorSelector::default(),
            stream_idle_timeout: Duration::from_secs(75),
            backoff_min: Duration::from_millis(500),
            backoff_max: Duration::from_secs(30),
            request_timeout: Duration::from_secs(30),
        }
    }
}

/// `ClientStatus` of a Nomad allocation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AllocationStatus {
    /// Placed, not started yet.
    Pending,
    /// Running.
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
    fn parse(status: &str) -> Self {
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
    /// Name of the Nomad node it runs on.
    pub node_name: String,
    /// Client status.
    pub status: AllocationStatus,
    /// The gRPC address, once Nomad has reported one.
    pub address: Option<SocketAddr>,
}

/// What the watcher knows about the orchestrators, published on every change.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OrchestratorSet {
    /// Nomad has been listed at least once since start; before that an empty set means
    /// "not known yet", not "no orchestrators".
    pub listed: bool,
    /// The event stream is open, so the set is current; while not, changes may be missing.
    pub connected: bool,
    /// Orchestrator allocations Nomad still lists, terminal ones included, by id; an
    /// allocation garbage-collected by Nomad is dropped.
    pub allocations: BTreeMap<String, OrchestratorAllocation>,
}

impl OrchestratorSet {
    /// The allocations whose client status is `running`.
    pub fn running(&self) -> impl Iterator<Item = &OrchestratorAllocation> {
        self.allocations
            .values()
            .filter(|a| a.status == AllocationStatus::Running)
    }
}

/// Why the watcher cannot be built, or why talking to Nomad failed.
#[derive(Debug, thiserror::Error)]
pub enum NomadError {
    /// A TLS file could not be read.
    #[error("cannot read {setting} {}: {source}", path.display())]
    ReadFile {
        /// The setting naming the file.
        setting: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A TLS file is not usable PEM.
    #[error("{setting} {} is not a PEM certificate/key reqwest accepts: {reason}", path.display())]
    Pem {
        /// The setting naming the file.
        setting: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// Only one half of the client certificate pair is configured.
    #[error(
        "NOMAD_CLIENT_CERT and NOMAD_CLIENT_KEY must be set together for mTLS; set both or neither"
    )]
    HalfIdentity,
    /// The token cannot be sent as a header.
    #[error(
        "NOMAD_TOKEN contains characters not allowed in an HTTP header; check for a stray newline"
    )]
    BadToken,
    /// The HTTP client could not be built.
    #[error("cannot build the Nomad HTTP client: {0}")]
    Client(String),
    /// Nomad did not answer.
    #[error(
        "cannot reach Nomad at {addr}: {reason}; check NOMAD_ADDR and that the Nomad agent is up"
    )]
    Unreachable {
        /// NOMAD_ADDR.
        addr: String,
        /// The transport error.
        reason: String,
    },
    /// The token lacks the ACL capability.
    #[error(
        "Nomad answered 403 ({body}): NOMAD_TOKEN lacks `read-job` on namespace {namespace:?}; \
         attach a policy with namespace \"{namespace}\" {{ capabilities = [\"read-job\"] }} to the token"
    )]
    Forbidden {
        /// NOMAD_NAMESPACE.
        namespace: String,
        /// What Nomad said ("Permission denied", "ACL token not found").
        body: String,
    },
    /// Any other unexpected HTTP status.
    #[error("Nomad answered {status} to {path}: {body}")]
    Status {
        /// The API path.
        path: &'static str,
        /// The status.
        status: StatusCode,
        /// The start of the body.
        body: String,
    },
    /// A response could not be decoded.
    #[error("Nomad sent a malformed {what}: {reason}")]
    Malformed {
        /// What was being decoded.
        what: &'static str,
        /// The decoding error.
        reason: String,
    },
    /// The event stream ended; Nomad writes the reason as plain text
    /// ("event dropped from buffer" when this reader was too slow).
    #[error("the Nomad event stream closed: {0}")]
    StreamClosed(String),
    /// No heartbeat arrived in time.
    #[error("the Nomad event stream sent nothing, not even a heartbeat, for {0:?}")]
    StreamSilent(Duration),
}

impl NomadError {
    fn transport(addr: &str, e: reqwest::Error) -> Self {
        Self::Unreachable {
            addr: addr.to_owned(),
            reason: error_chain(&e.without_url()),
        }
    }
}

/// Parses `NOMAD_ADDR`: `http(s)://host[:port]`, or `unix:///absolute/path/api.sock` (the
/// Task API socket inside a Nomad task, `$NOMAD_SECRETS_DIR/api.sock`).
pub fn parse_nomad_addr(raw: &str) -> Result<Url, String> {
    if !raw.trim().starts_with("unix:") {
        return crate::config::parse_http_url(raw);
    }
    match Url::parse(raw.trim()) {
        Ok(url) if url.host_str().unwrap_or("").is_empty() && url.path().len() > 1 => Ok(url),
        _ => Err(format!(
            "{raw:?} is not a socket path; expected unix:///absolute/path/api.sock"
        )),
    }
}

/// A Nomad HTTP API client for the two calls the watcher makes.
struct NomadClient {
    http: reqwest::Client,
    /// NOMAD_ADDR without credentials or query, for messages.
    addr: String,
    /// Where requests go: NOMAD_ADDR, or a placeholder host when a Unix socket carries them.
    base: Url,
    token: Option<HeaderValue>,
    namespace: String,
    request_timeout: Duration,
}

impl NomadClient {
    fn new(config: &NomadConfig, request_timeout: Duration) -> Result<Self, NomadError> {
        let mut builder = reqwest::Client::builder()
            .connect_timeout(request_timeout)
            .tcp_keepalive(Duration::from_secs(30))
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("e2b-webhook-emitter/", env!("CARGO_PKG_VERSION")));
        if let Some(path) = &config.cacert {
            let pem = read_pem("NOMAD_CACERT", path)?;
            let cert = reqwest::Certificate::from_pem(&pem).map_err(|e| NomadError::Pem {
                setting: "NOMAD_CACERT",
                path: path.clone(),
                reason: error_chain(&e),
            })?;
            builder = builder.add_root_certificate(cert);
        }
        match (&config.client_cert, &config.client_key) {
            (Some(cert), Some(key)) => {
                let mut pem = read_pem("NOMAD_CLIENT_CERT", cert)?;
                pem.push(b'\n');
                pem.extend(read_pem("NOMAD_CLIENT_KEY", key)?);
                let identity = reqwest::Identity::from_pem(&pem).map_err(|e| NomadError::Pem {
                    setting: "NOMAD_CLIENT_CERT/NOMAD_CLIENT_KEY",
                    path: cert.clone(),
                    reason: error_chain(&e),
                })?;
                builder = builder.identity(identity);
            }
            (None, None) => {}
            _ => return Err(NomadError::HalfIdentity),
        }
        // Nomad's Task API socket speaks plain HTTP; the host in the URL is then only a placeholder.
        let base = if config.addr.scheme() == "unix" {
            builder = builder.unix_socket(PathBuf::from(config.addr.path()));
            Url::parse("http://localhost/").expect("a constant, valid URL")
        } else {
            config.addr.clone()
        };
        let token = config.token.as_ref().map(token_header).transpose()?;
        Ok(Self {
            http: builder
                .build()
                .map_err(|e| NomadError::Client(error_chain(&e)))?,
            addr: crate::service::redacted_url(&config.addr),
            base,
            token,
            namespace: config.namespace.clone(),
            request_timeout,
        })
    }

    fn url(&self, segments: &[&str]) -> Url {
        let mut url = self.base.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().extend(segments);
        }
        url
    }

    fn get(&self, url: Url) -> reqwest::RequestBuilder {
        let request = self.http.get(url);
        match &self.token {
            Some(token) => request.header(TOKEN_HEADER, token.clone()),
            None => request,
        }
    }

    /// Every allocation passing `filter`, and the index the answer reflects.
    async fn list_allocations(
        &self,
        filter: &str,
    ) -> Result<(Vec<NomadAllocation>, u64), NomadError> {
        let mut url = self.url(&["v1", "allocations"]);
        url.query_pairs_mut()
            .append_pair("resources", "true")
            .append_pair("namespace", &self.namespace)
            .append_pair("filter", filter);
        let response = self
            .get(url)
            .timeout(self.request_timeout)
            .send()
            .await
            .map_err(|e| NomadError::transport(&self.addr, e))?;
        let response = self.check(response, "/v1/allocations").await?;
        let index = response
            .headers()
            .get(INDEX_HEADER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
            .ok_or_else(|| NomadError::Malformed {
                what: "allocation list",
                reason: "no X-Nomad-Index header".into(),
            })?;
        let body = response
            .bytes()
            .await
            .map_err(|e| NomadError::transport(&self.addr, e))?;
        let allocations: Vec<NomadAllocation> =
            serde_json::from_slice(&body).map_err(|e| NomadError::Malformed {
                what: "allocation list",
                reason: e.to_string(),
            })?;
        Ok((allocations, index))
    }

    /// Opens the allocation event stream at `index` (Nomad re-sends the frame at that index).
    async fn event_stream(&self, index: u64, idle: Duration) -> Result<FrameReader, NomadError> {
        let mut url = self.url(&["v1", "event", "stream"]);
        url.query_pairs_mut()
            .append_pair("topic", "Allocation")
            .append_pair("namespace", &self.namespace)
            .append_pair("index", &index.to_string());
        // Nomad sends the response head with the first frame, which may be the first
        // heartbeat: waiting for it is bounded by the idle timeout, like every later read.
        let response = tokio::time::timeout(idle, self.get(url).send())
            .await
            .map_err(|_| NomadError::StreamSilent(idle))?
            .map_err(|e| NomadError::transport(&self.addr, e))?;
        let response = self.check(response, "/v1/event/stream").await?;
        Ok(FrameReader {
            body: response.bytes_stream().boxed(),
            buffer: Vec::new(),
            idle,
            addr: self.addr.clone(),
        })
    }

    async fn check(
        &self,
        response: reqwest::Response,
        path: &'static str,
    ) -> Result<reqwest::Response, NomadError> {
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let body = response.text().await.unwrap_or_default();
        let body: String = body.trim().chars().take(200).collect();
        if status == StatusCode::FORBIDDEN {
            Err(NomadError::Forbidden {
                namespace: self.namespace.clone(),
                body,
            })
        } else {
            Err(NomadError::Status { path, status, body })
        }
    }
}

fn read_pem(setting: &'static str, path: &Path) -> Result<Vec<u8>, NomadError> {
    std::fs::read(path).map_err(|source| NomadError::ReadFile {
        setting,
        path: path.to_owned(),
        source,
    })
}

fn token_header(token: &Secret) -> Result<HeaderValue, NomadError> {
    let mut value = HeaderValue::from_bytes(token.as_bytes()).map_err(|_| NomadError::BadToken)?;
    value.set_sensitive(true);
    Ok(value)
}

/// One NDJSON frame of the event stream; a heartbeat is `{}` (index 0, no events).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct EventFrame {
    #[serde(default)]
    index: u64,
    #[serde(default)]
    events: Option<Vec<NomadEvent>>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct NomadEvent {
    #[serde(default)]
    topic: String,
    #[serde(default)]
    payload: Option<EventPayload>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct EventPayload {
    #[serde(default)]
    allocation: Option<NomadAllocation>,
}

/// The fields of a Nomad allocation (full or list stub) the watcher reads.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct NomadAllocation {
    #[serde(rename = "ID")]
    id: String,
    #[serde(rename = "JobID", default)]
    job_id: String,
    #[serde(default)]
    task_group: String,
    #[serde(default)]
    node_name: String,
    #[serde(default)]
    client_status: String,
    #[serde(default)]
    allocated_resources: Option<AllocatedResources>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct AllocatedResources {
    #[serde(default)]
    shared: Option<SharedResources>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct SharedResources {
    #[serde(default)]
    networks: Option<Vec<NetworkResource>>,
    #[serde(default)]
    ports: Option<Vec<PortMapping>>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct NetworkResource {
    #[serde(rename = "IP", default)]
    ip: String,
    #[serde(default)]
    reserved_ports: Option<Vec<Port>>,
    #[serde(default)]
    dynamic_ports: Option<Vec<Port>>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Port {
    #[serde(default)]
    label: String,
    value: u16,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct PortMapping {
    #[serde(default)]
    label: String,
    value: u16,
}

impl NomadAllocation {
    /// `Shared.Networks[0].IP` (what the E2B API dials) and the labelled port: from the
    /// network's reserved or dynamic ports, else the group's port mappings, else the default.
    fn address(&self, selector: &OrchestratorSelector) -> Option<SocketAddr> {
        let shared = self.allocated_resources.as_ref()?.shared.as_ref()?;
        let network = shared.networks.as_ref()?.first()?;
        let ip: IpAddr = network.ip.parse().ok()?;
        let labelled = |ports: &Option<Vec<Port>>| {
            ports
                .iter()
                .flatten()
                .find(|p| p.label == selector.port_label)
                .map(|p| p.value)
        };
        let port = labelled(&network.reserved_ports)
            .or_else(|| labelled(&network.dynamic_ports))
            .or_else(|| {
                shared
                    .ports
                    .iter()
                    .flatten()
                    .find(|p| p.label == selector.port_label)
                    .map(|p| p.value)
            })
            .unwrap_or(selector.default_port);
        Some(SocketAddr::new(ip, port))
    }
}

/// Reads frames off the event stream body, with an idle watchdog.
struct FrameReader {
    body: BoxStream<'static, reqwest::Result<Bytes>>,
    buffer: Vec<u8>,
    idle: Duration,
    addr: String,
}

impl FrameReader {
    /// The next frame, heartbeats included.
    async fn next(&mut self) -> Result<EventFrame, NomadError> {
        loop {
            if let Some(frame) = self.take_frame()? {
                return Ok(frame);
            }
            match tokio::time::timeout(self.idle, self.body.next()).await {
                Err(_) => return Err(NomadError::StreamSilent(self.idle)),
                Ok(Some(Ok(chunk))) => self.buffer.extend_from_slice(&chunk),
                Ok(Some(Err(e))) => return Err(NomadError::transport(&self.addr, e)),
                Ok(None) => {
                    let rest = String::from_utf8_lossy(&self.buffer).trim().to_owned();
                    return Err(NomadError::StreamClosed(if rest.is_empty() {
                        "Nomad ended the response".into()
                    } else {
                        rest
                    }));
                }
            }
        }
    }

    /// Decodes one complete frame from the buffer, if there is one.
    fn take_frame(&mut self) -> Result<Option<EventFrame>, NomadError> {
        let start = self.buffer.iter().position(|b| !b.is_ascii_whitespace());
        let Some(start) = start else {
            self.buffer.clear();
            return Ok(None);
        };
        self.buffer.drain(..start);
        if self.buffer[0] != b'{' {
            // Not JSON: after the stream has started Nomad can only report an error as plain
            // text appended to the body (e.g. "event dropped from buffer"), then it closes.
            return match self.buffer.iter().position(|b| *b == b'\n') {
                Some(end) => Err(NomadError::StreamClosed(
                    String::from_utf8_lossy(&self.buffer[..end])
                        .trim()
                        .to_owned(),
                )),
                None => Ok(None),
            };
        }
        let mut frames =
            serde_json::Deserializer::from_slice(&self.buffer).into_iter::<EventFrame>();
        match frames.next() {
            Some(Ok(frame)) => {
                let used = frames.byte_offset();
                self.buffer.drain(..used);
                Ok(Some(frame))
            }
            Some(Err(e)) if e.is_eof() => Ok(None),
            Some(Err(e)) => Err(NomadError::Malformed {
                what: "event stream frame",
                reason: e.to_string(),
            }),
            None => Ok(None),
        }
    }
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

    fn needs_address(&self) -> bool {
        self.allocations
            .values()
            .any(|a| a.status == AllocationStatus::Running && a.address.is_none())
    }
}

/// Whether Nomad is reachable, logged once per change rather than on every retry.
enum Health {
    Starting,
    Up,
    Down(String),
}

/// Follows the orchestrator allocations of one Nomad namespace and publishes them.
pub struct NomadAllocationWatcher {
    client: NomadClient,
    settings: WatcherSettings,
    metrics: Arc<Metrics>,
    outbox: Outbox,
    set: watch::Sender<OrchestratorSet>,
}

impl NomadAllocationWatcher {
    /// Builds the watcher; fails only on unusable configuration (TLS files, token).
    pub fn new(
        config: &NomadConfig,
        settings: WatcherSettings,
        metrics: Arc<Metrics>,
        outbox: Outbox,
    ) -> Result<Self, NomadError> {
        Ok(Self {
            client: NomadClient::new(config, settings.request_timeout)?,
            settings,
            metrics,
            outbox,
            set: watch::channel(OrchestratorSet::default()).0,
        })
    }

    /// The orchestrators as currently known; changes whenever the set does.
    pub fn orchestrators(&self) -> watch::Receiver<OrchestratorSet> {
        self.set.subscribe()
    }

    /// Watches until `shutdown`, reconnecting with backoff; Nomad being down or refusing
    /// the token is reported on the `nomad` component, never fatal.
    pub async fn run(self, shutdown: CancellationToken) {
        let mut tracker = Tracker {
            selector: self.settings.selector.clone(),
            allocations: BTreeMap::new(),
            last_index: self.load_index().await,
            listed: false,
        };
        let mut health = Health::Starting;
        let backoff = ExponentialBuilder::new()
            .with_min_delay(self.settings.backoff_min)
            .with_max_delay(self.settings.backoff_max)
            .with_jitter()
            .without_max_times();
        let mut delays = backoff.build();
        self.metrics
            .set_component("nomad", false, "connecting to Nomad");
        while !shutdown.is_cancelled() {
            let mut streaming = false;
            let result = self
                .session(&mut tracker, &mut health, &mut streaming, &shutdown)
                .await;
            self.publish(&tracker, false);
            self.save_index(tracker.last_index).await;
            let Err(error) = result else { break };
            if streaming {
                // A connection that worked: start the next wait from the shortest delay.
                delays = backoff.build();
            }
            self.report_down(&mut health, &error);
            let delay = delays.next().unwrap_or(self.settings.backoff_max);
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep(delay) => {}
            }
        }
        self.metrics.set_component("nomad", false, "stopped");
    }

    /// One connection: list, then follow the stream until it fails or `shutdown`.
    async fn session(
        &self,
        tracker: &mut Tracker,
        health: &mut Health,
        streaming: &mut bool,
        shutdown: &CancellationToken,
    ) -> Result<(), NomadError> {
        let filter = self.settings.selector.list_filter();
        self.relist(tracker, &filter, false).await?;
        // The list reflects every change up to its index; the stream resumes there, so the
        // two together leave no gap, and frames at or below it are dropped as already applied.
        let idle = self.settings.stream_idle_timeout;
        let mut frames = tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            opened = self.client.event_stream(tracker.last_index, idle) => opened?,
        };
        *streaming = true;
        self.report_up(health, tracker);
        self.publish(tracker, true);
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
            self.metrics.nomad_last_index.set(gauge(frame.index));
            if changed && tracker.needs_address() {
                // An event without resources for a new orchestrator: the list has them.
                self.relist(tracker, &filter, true).await?;
            }
            self.publish(tracker, true);
            if saved_at.elapsed() >= INDEX_SAVE_INTERVAL {
                self.save_index(tracker.last_index).await;
                saved_at = Instant::now();
            }
        }
    }

    /// Lists the orchestrator allocations and applies the list; `streaming` says whether the
    /// event stream is open meanwhile (the set stays marked connected).
    async fn relist(
        &self,
        tracker: &mut Tracker,
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
        self.metrics.nomad_last_index.set(gauge(tracker.last_index));
        self.publish(tracker, streaming);
        Ok(())
    }

    fn publish(&self, tracker: &Tracker, connected: bool) {
        let next = OrchestratorSet {
            listed: tracker.listed,
            connected,
            allocations: tracker.allocations.clone(),
        };
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

    fn report_up(&self, health: &mut Health, tracker: &Tracker) {
        let running = tracker
            .allocations
            .values()
            .filter(|a| a.status == AllocationStatus::Running)
            .count();
        // The live count is the orchestrators_known gauge; the detail stays true while connected.
        let detail = format!("following orchestrator allocations at {}", self.client.addr);
        self.metrics.set_component("nomad", true, detail);
        match health {
            Health::Up => {}
            Health::Starting => tracing::info!(
                addr = %self.client.addr,
                orchestrators = running,
                "watching orchestrator allocations in Nomad"
            ),
            Health::Down(_) => tracing::info!(
                addr = %self.client.addr,
                orchestrators = running,
                "reconnected to Nomad"
            ),
        }
        *health = Health::Up;
    }

    fn report_down(&self, health: &mut Health, error: &NomadError) {
        let message = error.to_string();
        self.metrics.set_component("nomad", false, &message);
        if matches!(health, Health::Down(previous) if *previous == message) {
            return;
        }
        match error {
            NomadError::Forbidden { .. } => {
                tracing::error!(error = %message, "Nomad allocation watcher")
            }
            _ => {
                tracing::warn!(error = %message, "Nomad allocation watcher; retrying with backoff")
            }
        }
        *health = Health::Down(message);
    }

    async fn load_index(&self) -> u64 {
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

    async fn save_index(&self, index: u64) {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn alloc(json: &str) -> NomadAllocation {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn address_prefers_the_labelled_port_of_the_first_network() {
        let selector = OrchestratorSelector::default();
        let a = alloc(
            r#"{"ID":"a","AllocatedResources":{"Shared":{"Networks":[{"IP":"10.0.0.7","ReservedPorts":[{"Label":"orchestrator-proxy","Value":5007},{"Label":"orchestrator","Value":5018}]}]}}}"#,
        );
        assert_eq!(a.address(&selector), Some("10.0.0.7:5018".parse().unwrap()));
        let dynamic = alloc(
            r#"{"ID":"a","AllocatedResources":{"Shared":{"Networks":[{"IP":"10.0.0.7","ReservedPorts":null,"DynamicPorts":[{"Label":"orchestrator","Value":23456}]}]}}}"#,
        );
        assert_eq!(
            dynamic.address(&selector),
            Some("10.0.0.7:23456".parse().unwrap())
        );
        let group_ports = alloc(
            r#"{"ID":"a","AllocatedResources":{"Shared":{"Networks":[{"IP":"10.0.0.7"}],"Ports":[{"Label":"orchestrator","Value":6008,"To":0,"HostIP":"10.0.0.7"}]}}}"#,
        );
        assert_eq!(
            group_ports.address(&selector),
            Some("10.0.0.7:6008".parse().unwrap())
        );
        let unlabelled =
            alloc(r#"{"ID":"a","AllocatedResources":{"Shared":{"Networks":[{"IP":"10.0.0.7"}]}}}"#);
        assert_eq!(
            unlabelled.address(&selector),
            Some("10.0.0.7:5008".parse().unwrap())
        );
        assert_eq!(alloc(r#"{"ID":"a"}"#).address(&selector), None);
    }

    #[test]
    fn nomad_addr_is_http_or_the_task_api_socket() {
        let socket = parse_nomad_addr("unix:///alloc/secrets/api.sock").unwrap();
        assert_eq!(
            (socket.scheme(), socket.path()),
            ("unix", "/alloc/secrets/api.sock")
        );
        assert!(parse_nomad_addr("https://nomad.service.consul:4646").is_ok());
        assert!(parse_nomad_addr("unix://relative.sock").is_err());
        assert!(parse_nomad_addr("unix:").is_err());
        assert!(parse_nomad_addr("ftp://nomad").is_err());
    }

    #[test]
    fn unusable_tls_settings_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let config =
            |cacert: Option<PathBuf>, cert: Option<PathBuf>, key: Option<PathBuf>| NomadConfig {
                addr: Url::parse("https://nomad:4646").unwrap(),
                token: Some(Secret::new("tok")),
                namespace: "default".into(),
                cacert,
                client_cert: cert,
                client_key: key,
            };
        let timeout = Duration::from_secs(1);
        let missing = dir.path().join("missing.pem");
        let err = NomadClient::new(&config(Some(missing), None, None), timeout)
            .err()
            .unwrap();
        assert!(
            err.to_string().starts_with("cannot read NOMAD_CACERT"),
            "{err}"
        );
        let garbage = dir.path().join("garbage.pem");
        std::fs::write(&garbage, "not a certificate").unwrap();
        let half = config(None, Some(garbage.clone()), None);
        assert!(matches!(
            NomadClient::new(&half, timeout),
            Err(NomadError::HalfIdentity)
        ));
        let bad_identity = config(None, Some(garbage.clone()), Some(garbage));
        let err = NomadClient::new(&bad_identity, timeout).err().unwrap();
        assert!(matches!(err, NomadError::Pem { .. }), "{err}");
        let mut bad_token = config(None, None, None);
        bad_token.token = Some(Secret::new("line\nbreak"));
        assert!(matches!(
            NomadClient::new(&bad_token, timeout),
            Err(NomadError::BadToken)
        ));
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

    fn reader(chunks: Vec<&'static str>) -> FrameReader {
        let stream = futures_util::stream::iter(chunks.into_iter().map(|c| Ok(Bytes::from(c))));
        FrameReader {
            body: stream.boxed(),
            buffer: Vec::new(),
            idle: Duration::from_secs(5),
            addr: "http://nomad:4646".into(),
        }
    }

    #[tokio::test]
    async fn frames_split_across_chunks_heartbeats_and_the_closing_error_text() {
        let mut r = reader(vec![
            "{}\n{\"Index\":5,\"Eve",
            "nts\":[{\"Topic\":\"Allocation\",\"Payload\":{\"Allocation\":{\"ID\":\"a\"}}},{\"Topic\":\"Allocation\",\"Payload\":{\"Allocation\":{\"ID\":\"b\"}}}]}\n",
            "event dropped from buffer\n",
        ]);
        let heartbeat = r.next().await.unwrap();
        assert_eq!((heartbeat.index, heartbeat.events.is_none()), (0, true));
        let frame = r.next().await.unwrap();
        assert_eq!(frame.index, 5);
        assert_eq!(frame.events.unwrap().len(), 2);
        let err = r.next().await.unwrap_err();
        assert_eq!(
            err.to_string(),
            "the Nomad event stream closed: event dropped from buffer"
        );
    }

    #[tokio::test]
    async fn an_error_text_without_newline_is_reported_at_the_end() {
        let mut r = reader(vec!["{}", "Permission denied"]);
        r.next().await.unwrap();
        assert!(
            matches!(r.next().await, Err(NomadError::StreamClosed(t)) if t == "Permission denied")
        );
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
