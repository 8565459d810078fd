//! A Nomad HTTP API stand-in modelling Nomad 1.8.x with ACLs (what E2B pins), written from
//! Nomad's public API documentation and issue tracker, for the endpoints the emitter uses:
//!
//! - `GET /v1/service/<name>?namespace=…&index=N&wait=…`: the registrations of a Nomad-native
//!   service, a blocking query answering with `X-Nomad-Index` once the service table's index
//!   passes `index` (or after `wait`). Every running orchestrator allocation registers service
//!   `orchestrator` on its gRPC port (e2b-dev/infra `orchestrator.hcl`); the registration goes
//!   when the allocation stops, fails or is lost, or when its node misses heartbeats
//!   (`deregister`, Nomad 1.8's behaviour, hashicorp/nomad#16983 / #26424).
//! - `GET /v1/var/<path>`: a Nomad Variable, or 404.
//!
//! - `GET /v1/event/stream?topic=…&namespace=…&index=N`: NDJSON frames
//!   `{"Index":N,"Events":[…]}`, a bare `{}` heartbeat every `heartbeat`, several events per
//!   frame when several allocations change at one index; `index=N` re-sends the frame at N and
//!   everything after it, and an index older than the buffer silently starts at the oldest
//!   frame kept; a slow reader is cut off with the plain-text line `event dropped from buffer`.
//! - `GET /v1/allocations?resources=true&namespace=…&filter=…`: a blocking query (`index` and
//!   `wait`) answering with `X-Nomad-Index`; the filter supports `Field == "v"` and
//!   `Field contains "v"` joined by `and`, which is what the emitter sends.
//!
//! Tokens: the management `token` is accepted everywhere. A workload identity (`workload_identity`,
//! a JWT) is accepted where Nomad's implicit workload policy allows it — service registrations
//! and the job's variables — and refused elsewhere as 1.8 refuses it: the event stream answers
//! 500 `acl token lookup failed: index error: UUID must be 36 characters` (its broker only looks
//! tokens up by secret id, hashicorp/nomad#18186, fixed in 1.9 by #24849), the allocation list
//! 403 `Permission denied` (no `read-job` in the implicit policy). Anything else is 403. The test
//! API adds allocations, changes their `ClientStatus`, cuts streams, and takes the server down
//! and up on the same port.
#![allow(dead_code)] // each test uses a different subset

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures_util::StreamExt;
use serde_json::{Value, json};
use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{broadcast, watch};

/// The management token of [`NomadOptions::nomad_1_8`].
pub const MANAGEMENT_TOKEN: &str = "5b3c8a2e-9f1d-4e7a-b6c5-0d2e4f6a8b1c";

/// A workload identity as Nomad hands it to a task with `identity { env = true }`: a signed JWT
/// (`header.claims.signature`, base64url) carrying the job's claims.
pub fn workload_identity_jwt() -> String {
    use base64::Engine;
    let b64 = |v: Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
    format!(
        "{}.{}.{}",
        b64(json!({"alg": "RS256", "kid": "6f1e0c9a", "typ": "JWT"})),
        b64(json!({
            "aud": "nomadproject.io",
            "nomad_namespace": "default",
            "nomad_job_id": "e2b-webhook-emitter",
            "nomad_allocation_id": "8c0bc1ac-de33-a3eb-7ae0-6bf378f9c71b",
            "nomad_task": "emitter",
            "sub": "global:default:e2b-webhook-emitter:emitter:emitter:default"
        })),
        "c2lnbmF0dXJlLW5vdC1jaGVja2VkLWJ5LXRoZS1zdGFuZC1pbg"
    )
}

/// How the stand-in behaves.
#[derive(Debug, Clone)]
pub struct NomadOptions {
    /// The management ACL token; `None` with no `workload_identity` means ACLs are off.
    pub token: Option<String>,
    /// A task's workload identity (a JWT), accepted only on services and variables.
    pub workload_identity: Option<String>,
    /// Time between `{}` heartbeats on an idle stream (Nomad: 30 s).
    pub heartbeat: Duration,
    /// Frames kept for `index=` resumption (Nomad's `event_buffer_size`, default 100).
    pub buffer: usize,
    /// Leave `AllocatedResources` out of event payloads (the list still has them).
    pub events_without_resources: bool,
}

impl Default for NomadOptions {
    fn default() -> Self {
        Self {
            token: None,
            workload_identity: None,
            heartbeat: Duration::from_millis(100),
            buffer: 100,
            events_without_resources: false,
        }
    }
}

impl NomadOptions {
    /// Nomad 1.8 with ACLs, as E2B runs it: a management token and the emitter's workload
    /// identity ([`workload_identity_jwt`]).
    pub fn nomad_1_8() -> Self {
        Self {
            token: Some(MANAGEMENT_TOKEN.into()),
            workload_identity: Some(workload_identity_jwt()),
            ..Self::default()
        }
    }
}

/// An allocation as the test describes it.
#[derive(Debug, Clone)]
pub struct AllocSpec {
    pub id: String,
    pub job_id: String,
    pub task_group: String,
    pub node_name: String,
    pub ip: String,
    /// The port labelled `orchestrator`.
    pub grpc_port: u16,
    pub client_status: String,
}

impl AllocSpec {
    /// A running orchestrator allocation reachable at 127.0.0.1:`grpc_port`.
    pub fn orchestrator(id: &str, grpc_port: u16) -> Self {
        Self {
            id: id.into(),
            job_id: "orchestrator-5e1f".into(),
            task_group: "client-orchestrator".into(),
            node_name: format!("node-{id}"),
            ip: "127.0.0.1".into(),
            grpc_port,
            client_status: "running".into(),
        }
    }
}

struct Shared {
    options: NomadOptions,
    /// The latest Raft index.
    index: u64,
    allocations: BTreeMap<String, Value>,
    /// The last `buffer` frames: (index, NDJSON line).
    frames: VecDeque<(u64, String)>,
    /// Index requested by every event stream request, in order.
    stream_requests: Vec<u64>,
    list_requests: usize,
    /// Service registrations by allocation id, and the service table's index.
    services: BTreeMap<String, Value>,
    services_index: u64,
    /// The `index` of every service query, in order.
    service_requests: Vec<u64>,
    /// Nomad Variables by path: their items.
    variables: BTreeMap<String, Value>,
}

#[derive(Clone)]
struct AppState {
    shared: Arc<Mutex<Shared>>,
    /// Every new frame, to the open streams.
    live: broadcast::Sender<(u64, String)>,
    /// Bumped to cut every open stream with "event dropped from buffer".
    drops: watch::Sender<u64>,
    /// The current index, for blocking queries.
    index: watch::Sender<u64>,
    /// Bumped when the server goes down: open streams end as a broken connection.
    downs: watch::Sender<u64>,
    /// The service table's index, for blocking service queries.
    services_index: watch::Sender<u64>,
    /// The `downs` count when this server started: a request of an earlier server ends.
    generation: u64,
}

/// Where the stand-in listens.
enum Bind {
    Tcp(SocketAddr),
    /// Like the Task API socket Nomad gives a task (`$NOMAD_SECRETS_DIR/api.sock`).
    Unix(PathBuf),
}

/// The running stand-in.
pub struct NomadStandin {
    bind: Bind,
    state: AppState,
}

impl NomadStandin {
    /// Starts on a free loopback port.
    pub async fn start(options: NomadOptions) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let bind = Bind::Tcp(listener.local_addr().unwrap());
        let standin = Self::new(options, bind);
        standin.serve(listener);
        standin
    }

    /// Starts on a Unix socket at `path`.
    pub fn start_unix(options: NomadOptions, path: &Path) -> Self {
        let listener = tokio::net::UnixListener::bind(path).unwrap();
        let standin = Self::new(options, Bind::Unix(path.to_owned()));
        standin.serve(listener);
        standin
    }

    fn new(options: NomadOptions, bind: Bind) -> Self {
        let state = AppState {
            shared: Arc::new(Mutex::new(Shared {
                options,
                index: 1,
                allocations: BTreeMap::new(),
                frames: VecDeque::new(),
                stream_requests: Vec::new(),
                list_requests: 0,
                services: BTreeMap::new(),
                services_index: 1,
                service_requests: Vec::new(),
                variables: BTreeMap::new(),
            })),
            live: broadcast::channel(1024).0,
            drops: watch::channel(0).0,
            index: watch::channel(1).0,
            downs: watch::channel(0).0,
            services_index: watch::channel(1).0,
            generation: 0,
        };
        Self { bind, state }
    }

    /// A port on which nothing listens yet; `up()` later starts the stand-in there.
    pub async fn down_at_start(options: NomadOptions) -> Self {
        let standin = Self::start(options).await;
        standin.down();
        standin
    }

    fn serve<L>(&self, listener: L)
    where
        L: axum::serve::Listener,
        L::Addr: std::fmt::Debug,
    {
        let state = AppState {
            generation: *self.state.downs.borrow(),
            ..self.state.clone()
        };
        let app = Router::new()
            .route("/v1/event/stream", get(event_stream))
            .route("/v1/allocations", get(list_allocations))
            .route("/v1/service/{name}", get(read_service))
            .route("/v1/var/{*path}", get(read_variable))
            .with_state(state);
        let mut downs = self.state.downs.subscribe();
        downs.mark_unchanged();
        // Graceful shutdown also closes idle keep-alive connections, so a client cannot keep
        // talking to a server that is "down" through its connection pool.
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = downs.changed().await;
                })
                .await;
        });
    }

    /// `http://127.0.0.1:PORT`, or `unix:///path` for a socket.
    pub fn url(&self) -> String {
        match &self.bind {
            Bind::Tcp(addr) => format!("http://{addr}"),
            Bind::Unix(path) => format!("unix://{}", path.display()),
        }
    }

    /// Stops listening and breaks every open connection.
    pub fn down(&self) {
        self.state.downs.send_modify(|n| *n += 1);
    }

    /// Listens again on the same port, keeping every allocation and frame.
    pub async fn up(&self) {
        let Bind::Tcp(addr) = self.bind else {
            panic!("only a TCP stand-in goes down and up");
        };
        let listener = loop {
            match tokio::net::TcpListener::bind(addr).await {
                Ok(l) => break l,
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        };
        self.serve(listener);
    }

    /// Cuts every open event stream the way Nomad cuts a slow reader.
    pub fn drop_streams(&self) {
        self.state.drops.send_modify(|n| *n += 1);
    }

    /// Adds a new allocation (a `PlanResult` event).
    pub fn add_allocation(&self, spec: &AllocSpec) {
        self.commit(|shared, index| {
            let alloc = allocation_json(spec, index);
            shared.allocations.insert(spec.id.clone(), alloc.clone());
            if spec.client_status == "running" {
                shared
                    .services
                    .insert(spec.id.clone(), registration_json(spec, index));
                shared.services_index = index;
            }
            vec![event("PlanResult", &alloc, index)]
        });
    }

    /// Sets the client status of several allocations at one index: one frame, several events.
    /// A terminal status also removes the allocations' service registrations.
    pub fn set_client_status(&self, ids: &[&str], status: &str) {
        self.commit(|shared, index| {
            let events = ids
                .iter()
                .map(|id| {
                    let alloc = shared
                        .allocations
                        .get_mut(*id)
                        .unwrap_or_else(|| panic!("no allocation {id}"));
                    alloc["ClientStatus"] = json!(status);
                    alloc["ModifyIndex"] = json!(index);
                    event("AllocationUpdated", alloc, index)
                })
                .collect();
            if is_terminal(status) {
                for id in ids {
                    if shared.services.remove(*id).is_some() {
                        shared.services_index = index;
                    }
                }
            }
            events
        });
        self.publish_services();
    }

    /// Changes an allocation without emitting any event, as if its event had been lost: only a
    /// re-list can reveal it.
    pub fn set_client_status_silently(&self, id: &str, status: &str) {
        let mut shared = self.state.shared.lock().unwrap();
        shared.index += 1;
        let index = shared.index;
        let alloc = shared.allocations.get_mut(id).unwrap();
        alloc["ClientStatus"] = json!(status);
        alloc["ModifyIndex"] = json!(index);
        if is_terminal(status) && shared.services.remove(id).is_some() {
            shared.services_index = index;
        }
        self.state.index.send_replace(index);
        drop(shared);
        self.publish_services();
    }

    /// Removes an allocation's service registration while the allocation keeps running, as
    /// Nomad 1.8 does when its node misses heartbeats (hashicorp/nomad#16983).
    pub fn deregister(&self, id: &str) {
        let mut shared = self.state.shared.lock().unwrap();
        shared.index += 1;
        let index = shared.index;
        assert!(shared.services.remove(id).is_some(), "no registration {id}");
        shared.services_index = index;
        self.state.index.send_replace(index);
        drop(shared);
        self.publish_services();
    }

    /// Stores a Nomad Variable.
    pub fn set_variable(&self, path: &str, items: Value) {
        let mut shared = self.state.shared.lock().unwrap();
        shared.variables.insert(path.to_owned(), items);
    }

    /// The `index` of every service query so far.
    pub fn service_requests(&self) -> Vec<u64> {
        self.state.shared.lock().unwrap().service_requests.clone()
    }

    /// The service table's index.
    pub fn services_index(&self) -> u64 {
        self.state.shared.lock().unwrap().services_index
    }

    fn publish_services(&self) {
        let index = self.state.shared.lock().unwrap().services_index;
        self.state.services_index.send_replace(index);
    }

    /// Forgets an allocation, as Nomad's garbage collector does with terminal ones.
    pub fn garbage_collect(&self, id: &str) {
        let mut shared = self.state.shared.lock().unwrap();
        shared.allocations.remove(id);
        shared.index += 1;
        if shared.services.remove(id).is_some() {
            shared.services_index = shared.index;
        }
        self.state.index.send_replace(shared.index);
        drop(shared);
        self.publish_services();
    }

    /// Emits a frame with an event of another topic, which the emitter must ignore.
    pub fn unrelated_event(&self) {
        self.commit(|_, index| {
            vec![json!({"Topic":"Job","Type":"JobRegistered","Key":"web","Namespace":"default","FilterKeys":null,"Index":index,"Payload":{"Job":{"ID":"web"}}})]
        });
    }

    /// The index requested by each event stream connection so far.
    pub fn stream_requests(&self) -> Vec<u64> {
        self.state.shared.lock().unwrap().stream_requests.clone()
    }

    /// How many allocation lists were asked for, refused ones included.
    pub fn list_requests(&self) -> usize {
        self.state.shared.lock().unwrap().list_requests
    }

    /// The latest index.
    pub fn index(&self) -> u64 {
        self.state.shared.lock().unwrap().index
    }

    fn commit(&self, events: impl FnOnce(&mut Shared, u64) -> Vec<Value>) {
        let mut shared = self.state.shared.lock().unwrap();
        shared.index += 1;
        let index = shared.index;
        let mut events = events(&mut shared, index);
        if shared.options.events_without_resources {
            for event in &mut events {
                if let Some(alloc) = event["Payload"]["Allocation"].as_object_mut() {
                    alloc.remove("AllocatedResources");
                }
            }
        }
        let line = json!({"Index": index, "Events": events}).to_string() + "\n";
        shared.frames.push_back((index, line.clone()));
        while shared.frames.len() > shared.options.buffer {
            shared.frames.pop_front();
        }
        // Sent under the lock, so a stream subscribing meanwhile sees it exactly once.
        let _ = self.state.live.send((index, line));
        self.state.index.send_replace(index);
    }
}

impl Drop for NomadStandin {
    fn drop(&mut self) {
        self.down();
    }
}

fn allocation_json(spec: &AllocSpec, index: u64) -> Value {
    let ports = json!([
        {"Label": "orchestrator-proxy", "Value": 5007, "To": 0, "HostNetwork": "default"},
        {"Label": "orchestrator", "Value": spec.grpc_port, "To": 0, "HostNetwork": "default"}
    ]);
    json!({
        "ID": spec.id,
        "Namespace": "default",
        "EvalID": format!("eval-{}", spec.id),
        "Name": format!("{}.{}[0]", spec.job_id, spec.task_group),
        "NodeID": format!("nodeid-{}", spec.node_name),
        "NodeName": spec.node_name,
        "JobID": spec.job_id,
        "JobType": "system",
        "TaskGroup": spec.task_group,
        "DesiredStatus": "run",
        "ClientStatus": spec.client_status,
        "AllocatedResources": {
            "Tasks": {"start": {"Cpu": {"CpuShares": 1000}, "Memory": {"MemoryMB": 1024}, "Networks": null}},
            "Shared": {
                "DiskMB": 0,
                "Networks": [{"Mode": "host", "Device": "", "CIDR": "", "IP": spec.ip, "MBits": 0, "ReservedPorts": ports, "DynamicPorts": null}],
                "Ports": [
                    {"Label": "orchestrator-proxy", "Value": 5007, "To": 0, "HostIP": spec.ip},
                    {"Label": "orchestrator", "Value": spec.grpc_port, "To": 0, "HostIP": spec.ip}
                ]
            }
        },
        "CreateIndex": index,
        "ModifyIndex": index,
        "CreateTime": 1_700_000_000_000_000_000_i64,
        "ModifyTime": 1_700_000_000_000_000_000_i64
    })
}

fn event(kind: &str, alloc: &Value, index: u64) -> Value {
    json!({
        "Topic": "Allocation",
        "Type": kind,
        "Key": alloc["ID"],
        "Namespace": alloc["Namespace"],
        "FilterKeys": [alloc["JobID"]],
        "Index": index,
        "Payload": {"Allocation": alloc}
    })
}

fn query(uri: &Uri) -> BTreeMap<String, String> {
    url::form_urlencoded::parse(uri.query().unwrap_or("").as_bytes())
        .into_owned()
        .collect()
}

/// What an endpoint lets a workload identity do on Nomad 1.8.
#[derive(Clone, Copy, PartialEq)]
enum Endpoint {
    /// Services and variables: allowed by the implicit workload policy.
    WorkloadReadable,
    /// `/v1/allocations`: needs `read-job`, which the implicit policy lacks.
    Allocations,
    /// `/v1/event/stream`: its broker resolves only ACL tokens' secret ids before 1.9.
    EventStream,
}

fn denied(state: &AppState, headers: &HeaderMap, endpoint: Endpoint) -> Option<Response> {
    let (token, identity) = {
        let shared = state.shared.lock().unwrap();
        (
            shared.options.token.clone(),
            shared.options.workload_identity.clone(),
        )
    };
    if token.is_none() && identity.is_none() {
        return None;
    }
    let given = headers.get("x-nomad-token").and_then(|v| v.to_str().ok());
    if given.is_some() && given == token.as_deref() {
        return None;
    }
    if given.is_some() && given == identity.as_deref() {
        return match endpoint {
            Endpoint::WorkloadReadable => None,
            Endpoint::Allocations => {
                Some((StatusCode::FORBIDDEN, "Permission denied").into_response())
            }
            Endpoint::EventStream => Some(
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "acl token lookup failed: index error: UUID must be 36 characters",
                )
                    .into_response(),
            ),
        };
    }
    Some((StatusCode::FORBIDDEN, "Permission denied").into_response())
}

fn is_terminal(status: &str) -> bool {
    matches!(status, "complete" | "failed" | "lost")
}

/// The registration Nomad keeps for service `orchestrator` of a running allocation.
fn registration_json(spec: &AllocSpec, index: u64) -> Value {
    json!({
        "ID": format!("_nomad-task-{}-{}-orchestrator-orchestrator", spec.id, spec.task_group),
        "ServiceName": "orchestrator",
        "Namespace": "default",
        "NodeID": format!("nodeid-{}", spec.node_name),
        "Datacenter": "dc1",
        "JobID": spec.job_id,
        "AllocID": spec.id,
        "Tags": [],
        "Address": spec.ip,
        "Port": spec.grpc_port,
        "CreateIndex": index,
        "ModifyIndex": index
    })
}

async fn read_service(
    State(state): State<AppState>,
    axum::extract::Path(name): axum::extract::Path<String>,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let params = query(&uri);
    let min_index: u64 = params
        .get("index")
        .and_then(|i| i.parse().ok())
        .unwrap_or(0);
    // Counted before the token check, so refused queries are seen too.
    state
        .shared
        .lock()
        .unwrap()
        .service_requests
        .push(min_index);
    if let Some(denied) = denied(&state, &headers, Endpoint::WorkloadReadable) {
        return denied;
    }
    let wait = params
        .get("wait")
        .and_then(|w| parse_go_duration(w))
        .unwrap_or(Duration::from_secs(300));
    let namespace = params
        .get("namespace")
        .cloned()
        .unwrap_or_else(|| "default".into());
    if min_index > 0 {
        let mut index = state.services_index.subscribe();
        let mut downs = state.downs.subscribe();
        let generation = state.generation;
        tokio::select! {
            _ = tokio::time::timeout(wait, index.wait_for(|i| *i > min_index)) => {}
            // The agent went away mid-query (even before this request got here): the client
            // sees a broken connection.
            _ = downs.wait_for(|g| *g != generation) => {
                let broken = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "server down");
                return Response::builder()
                    .header("x-nomad-index", min_index.to_string())
                    .body(Body::from_stream(futures_util::stream::iter([Err::<String, _>(broken)])))
                    .unwrap();
            }
        }
    }
    let shared = state.shared.lock().unwrap();
    let registrations: Vec<Value> = shared
        .services
        .values()
        .filter(|r| r["ServiceName"] == name.as_str() && r["Namespace"] == namespace.as_str())
        .cloned()
        .collect();
    (
        [("x-nomad-index", shared.services_index.to_string())],
        axum::Json(registrations),
    )
        .into_response()
}

async fn read_variable(
    State(state): State<AppState>,
    axum::extract::Path(path): axum::extract::Path<String>,
    headers: HeaderMap,
) -> Response {
    if let Some(denied) = denied(&state, &headers, Endpoint::WorkloadReadable) {
        return denied;
    }
    let shared = state.shared.lock().unwrap();
    match shared.variables.get(&path) {
        Some(items) => axum::Json(json!({
            "Namespace": "default",
            "Path": path,
            "Items": items,
            "CreateIndex": shared.index,
            "ModifyIndex": shared.index
        }))
        .into_response(),
        None => (StatusCode::NOT_FOUND, "variable not found").into_response(),
    }
}

async fn event_stream(State(state): State<AppState>, uri: Uri, headers: HeaderMap) -> Response {
    if let Some(denied) = denied(&state, &headers, Endpoint::EventStream) {
        return denied;
    }
    let params = query(&uri);
    let Ok(from) = params.get("index").map_or(Ok(0), |i| i.parse::<u64>()) else {
        return (StatusCode::BAD_REQUEST, "Unable to parse index").into_response();
    };
    let (replay, live, heartbeat) = {
        let mut shared = state.shared.lock().unwrap();
        shared.stream_requests.push(from);
        // index=0 starts at the head; otherwise the frame at `from` and later ones are re-sent,
        // and an index the buffer no longer holds starts at the oldest frame kept.
        let replay: Vec<(u64, String)> = if from == 0 {
            Vec::new()
        } else {
            shared
                .frames
                .iter()
                .filter(|(i, _)| *i >= from)
                .cloned()
                .collect()
        };
        (replay, state.live.subscribe(), shared.options.heartbeat)
    };
    let last_replayed = replay.last().map_or(0, |(i, _)| *i);
    let mut drops = state.drops.subscribe();
    drops.mark_unchanged();
    let mut downs = state.downs.subscribe();
    downs.mark_unchanged();
    let replay = futures_util::stream::iter(
        replay
            .into_iter()
            .map(|(_, line)| Ok::<_, std::io::Error>(line)),
    );
    let live = futures_util::stream::unfold(
        (live, drops, downs, false),
        move |(mut live, mut drops, mut downs, ended)| async move {
            if ended {
                return None;
            }
            let mut ticks =
                tokio::time::interval_at(tokio::time::Instant::now() + heartbeat, heartbeat);
            loop {
                tokio::select! {
                    _ = downs.changed() => {
                        let broken = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "server down");
                        return Some((Err(broken), (live, drops, downs, true)));
                    }
                    _ = drops.changed() => {
                        return Some((Ok("event dropped from buffer\n".to_owned()), (live, drops, downs, true)));
                    }
                    _ = ticks.tick() => return Some((Ok("{}\n".to_owned()), (live, drops, downs, false))),
                    frame = live.recv() => match frame {
                        Ok((index, line)) if index > last_replayed => {
                            return Some((Ok(line), (live, drops, downs, false)));
                        }
                        Ok(_) => {}
                        Err(_) => return Some((Ok("event dropped from buffer\n".to_owned()), (live, drops, downs, true))),
                    },
                }
            }
        },
    );
    let body = Body::from_stream(replay.chain(live));
    Response::builder()
        .header("content-type", "application/json")
        .body(body)
        .unwrap()
}

async fn list_allocations(State(state): State<AppState>, uri: Uri, headers: HeaderMap) -> Response {
    state.shared.lock().unwrap().list_requests += 1;
    if let Some(denied) = denied(&state, &headers, Endpoint::Allocations) {
        return denied;
    }
    let params = query(&uri);
    let min_index: u64 = params
        .get("index")
        .and_then(|i| i.parse().ok())
        .unwrap_or(0);
    let wait = params
        .get("wait")
        .and_then(|w| parse_go_duration(w))
        .unwrap_or(Duration::from_secs(300));
    let filter = match params.get("filter").map(|f| parse_filter(f)) {
        Some(Ok(f)) => f,
        Some(Err(e)) => {
            return (
                StatusCode::BAD_REQUEST,
                format!("failed to read filter expression: {e}"),
            )
                .into_response();
        }
        None => Vec::new(),
    };
    let namespace = params
        .get("namespace")
        .cloned()
        .unwrap_or_else(|| "default".into());
    let resources = params.get("resources").is_some_and(|r| r == "true");
    // A blocking query returns once the index passes `index`, or after `wait`.
    if min_index > 0 {
        let mut index = state.index.subscribe();
        let _ = tokio::time::timeout(wait, index.wait_for(|i| *i > min_index)).await;
    }
    let shared = state.shared.lock().unwrap();
    let stubs: Vec<Value> = shared
        .allocations
        .values()
        .filter(|a| a["Namespace"] == namespace.as_str())
        .filter(|a| filter.iter().all(|c| c.matches(a)))
        .map(|a| {
            let mut stub = a.clone();
            if !resources {
                stub.as_object_mut().unwrap().remove("AllocatedResources");
            }
            stub
        })
        .collect();
    (
        [("x-nomad-index", shared.index.to_string())],
        axum::Json(stubs),
    )
        .into_response()
}

struct Condition {
    field: String,
    contains: bool,
    value: String,
}

impl Condition {
    fn matches(&self, alloc: &Value) -> bool {
        let actual = alloc[&self.field].as_str().unwrap_or("");
        if self.contains {
            actual.contains(&self.value)
        } else {
            actual == self.value
        }
    }
}

fn parse_filter(filter: &str) -> Result<Vec<Condition>, String> {
    filter
        .split(" and ")
        .map(|clause| {
            let clause = clause.trim();
            let (field, contains, value) = if let Some((f, v)) = clause.split_once(" == ") {
                (f, false, v)
            } else if let Some((f, v)) = clause.split_once(" contains ") {
                (f, true, v)
            } else {
                return Err(format!("unsupported clause {clause:?}"));
            };
            let value: String = serde_json::from_str(value.trim())
                .map_err(|e| format!("value in {clause:?} is not a quoted string: {e}"))?;
            Ok(Condition {
                field: field.trim().to_owned(),
                contains,
                value,
            })
        })
        .collect()
}

fn parse_go_duration(text: &str) -> Option<Duration> {
    let split = text.find(|c: char| !c.is_ascii_digit())?;
    let (number, unit) = text.split_at(split);
    let number: u64 = number.parse().ok()?;
    Some(match unit {
        "ms" => Duration::from_millis(number),
        "s" => Duration::from_secs(number),
        "m" => Duration::from_secs(number * 60),
        _ => return None,
    })
}
