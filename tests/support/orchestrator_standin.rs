//! An orchestrator stand-in: a real tonic gRPC server implementing `SandboxService/List` from
//! the emitter's own `proto/orchestrator.proto`, whose sandbox list a test can change. Every
//! sandbox it lists carries an `envd_access_token`, so tests can check it never leaks.
#![allow(dead_code)] // each test uses a different subset

use e2b_webhook_emitter::reconcile::proto::sandbox_service_server::{
    SandboxService, SandboxServiceServer,
};
use e2b_webhook_emitter::reconcile::proto::{RunningSandbox, SandboxConfig, SandboxListResponse};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

/// The token every listed sandbox carries; it must appear nowhere the emitter writes.
pub const ENVD_TOKEN: &str = "envd-token-MUST-NOT-LEAK";

#[derive(Clone)]
struct Service {
    sandboxes: Arc<Mutex<Vec<RunningSandbox>>>,
    calls: Arc<AtomicUsize>,
    failing: Arc<AtomicBool>,
    /// Calls numbered (from 1) at or above this wait until released; 0: none waits.
    hold_from: Arc<AtomicUsize>,
    /// Calls waiting now.
    waiting: Arc<AtomicUsize>,
    /// Bumped when waiting calls are released.
    released: Arc<tokio::sync::watch::Sender<u64>>,
}

impl Default for Service {
    fn default() -> Self {
        Self {
            sandboxes: Arc::default(),
            calls: Arc::default(),
            failing: Arc::default(),
            hold_from: Arc::default(),
            waiting: Arc::default(),
            released: Arc::new(tokio::sync::watch::channel(0).0),
        }
    }
}

#[tonic::async_trait]
impl SandboxService for Service {
    async fn list(&self, _: Request<()>) -> Result<Response<SandboxListResponse>, Status> {
        let number = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
        let mut released = self.released.subscribe();
        let held = |hold_from: usize| hold_from != 0 && number >= hold_from;
        if held(self.hold_from.load(Ordering::SeqCst)) {
            self.waiting.fetch_add(1, Ordering::SeqCst);
            while held(self.hold_from.load(Ordering::SeqCst)) {
                if released.changed().await.is_err() {
                    break;
                }
            }
            self.waiting.fetch_sub(1, Ordering::SeqCst);
        }
        if self.failing.load(Ordering::SeqCst) {
            return Err(Status::unavailable("orchestrator is shutting down"));
        }
        let sandboxes = self.sandboxes.lock().unwrap().clone();
        Ok(Response::new(SandboxListResponse { sandboxes }))
    }
}

/// A running stand-in; stops when dropped.
pub struct OrchestratorStandin {
    addr: SocketAddr,
    service: Service,
    stop: CancellationToken,
}

impl OrchestratorStandin {
    /// Serves on a free loopback port.
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let service = Service::default();
        let stop = CancellationToken::new();
        let server = tonic::transport::Server::builder()
            .add_service(SandboxServiceServer::new(service.clone()))
            .serve_with_incoming_shutdown(
                tokio_stream::wrappers::TcpListenerStream::new(listener),
                stop.clone().cancelled_owned(),
            );
        tokio::spawn(server);
        Self {
            addr,
            service,
            stop,
        }
    }

    /// The gRPC port.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Replaces the listed sandboxes.
    pub fn set_sandboxes(&self, sandboxes: Vec<RunningSandbox>) {
        *self.service.sandboxes.lock().unwrap() = sandboxes;
    }

    /// Makes `List` fail (UNAVAILABLE) or answer again.
    pub fn set_failing(&self, failing: bool) {
        self.service.failing.store(failing, Ordering::SeqCst);
    }

    /// From the `n`th `List` call on (counting from 1, all calls so far included), calls wait
    /// without answering until [`Self::release`]: a reconciliation run stopped half-way.
    pub fn hold_from_call(&self, n: usize) {
        self.service.hold_from.store(n, Ordering::SeqCst);
    }

    /// Lets held calls answer (with the sandboxes listed now) and holds no more.
    pub fn release(&self) {
        self.service.hold_from.store(0, Ordering::SeqCst);
        self.service.released.send_modify(|n| *n += 1);
    }

    /// `List` calls waiting to answer now.
    pub fn held_calls(&self) -> usize {
        self.service.waiting.load(Ordering::SeqCst)
    }

    /// `List` calls served so far.
    pub fn calls(&self) -> usize {
        self.service.calls.load(Ordering::SeqCst)
    }
}

impl Drop for OrchestratorStandin {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// A running sandbox as the orchestrator lists it, secret token included.
pub fn sandbox(sandbox_id: &str, team_id: &str, execution_id: &str) -> RunningSandbox {
    RunningSandbox {
        config: Some(SandboxConfig {
            template_id: "base".into(),
            build_id: "build-1".into(),
            sandbox_id: sandbox_id.into(),
            metadata: [("owner".to_owned(), "tests".to_owned())].into(),
            team_id: team_id.into(),
            base_template_id: "base".into(),
            envd_access_token: Some(ENVD_TOKEN.into()),
            execution_id: execution_id.into(),
            vcpu: 2,
            ram_mb: 512,
            events_ttl_days: 7,
        }),
        client_id: "client-1".into(),
        start_time: Some(prost_types::Timestamp {
            seconds: 1_700_000_000,
            nanos: 0,
        }),
        end_time: None,
        sandbox_id: sandbox_id.into(),
        team_id: team_id.into(),
        execution_id: execution_id.into(),
        vcpu: 2,
        ram_mb: 512,
    }
}
