//! Many teams on one emitter, for the isolation test and the many-teams benchmark rows: teams
//! in E2B's tables, one registered webhook each (through the events API), orchestrator-shaped
//! events per team, and one receiver whose path says which team a request is for and how that
//! team's receiver behaves (fast, hanging, failing). It checks E2B Cloud's signature on its own
//! (SHA-256 over the secret then the body, base64 URL-safe without padding, as E2B's docs print
//! it), notes when each event arrived, and how many requests each team had open at once.
#![allow(dead_code)] // the test and the measurements use different parts

use base64::Engine;
use serde_json::json;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How a team's receiver answers.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Behaviour {
    /// 200 at once.
    Fast,
    /// Holds the request far longer than any attempt timeout.
    Hang,
    /// 500 to everything.
    Fail,
}

/// Longer than every attempt timeout the tests and benchmarks set.
const HANG: Duration = Duration::from_secs(600);

/// One event a team's receiver accepted.
#[derive(Debug, Clone)]
pub struct Arrival {
    pub team: usize,
    pub event_id: String,
    pub sandbox_id: String,
    pub at: Instant,
    pub signature_ok: bool,
}

struct State {
    behaviours: Vec<Behaviour>,
    secrets: Vec<String>,
    arrivals: Mutex<Vec<Arrival>>,
    open: Vec<AtomicUsize>,
    max_open: Vec<AtomicUsize>,
    /// When each hanging request started.
    hung_at: Mutex<Vec<Instant>>,
    requests: Vec<AtomicUsize>,
}

/// Counts a request open while its handler runs (an answer, or the client giving up).
struct Open<'a>(&'a State, usize);

impl<'a> Open<'a> {
    fn enter(state: &'a State, team: usize) -> Self {
        let now = state.open[team].fetch_add(1, Ordering::SeqCst) + 1;
        state.max_open[team].fetch_max(now, Ordering::SeqCst);
        state.requests[team].fetch_add(1, Ordering::SeqCst);
        Self(state, team)
    }
}

impl Drop for Open<'_> {
    fn drop(&mut self) {
        self.0.open[self.1].fetch_sub(1, Ordering::SeqCst);
    }
}

/// The receiver of every team's webhook, on a real socket (axum on its own runtime).
pub struct TeamsReceiver {
    pub port: u16,
    state: Arc<State>,
    runtime: Option<tokio::runtime::Runtime>,
}

/// The signing secret of team `n`'s webhook (E2B's dashboard wants at least 32 characters).
pub fn secret_of(n: usize) -> String {
    format!("team-{n:05}-signing-secret-0123456789abcdef")
}

/// E2B Cloud's signature, computed here rather than by the emitter's code.
fn e2b_cloud_signature(secret: &str, body: &[u8]) -> String {
    let mut hash = Sha256::new();
    hash.update(secret.as_bytes());
    hash.update(body);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(hash.finalize())
}

impl TeamsReceiver {
    /// Team `n` answers as `behaviours[n]`.
    pub fn start(behaviours: Vec<Behaviour>) -> Self {
        let count = behaviours.len();
        let state = Arc::new(State {
            secrets: (0..count).map(secret_of).collect(),
            behaviours,
            arrivals: Mutex::default(),
            open: (0..count).map(|_| AtomicUsize::new(0)).collect(),
            max_open: (0..count).map(|_| AtomicUsize::new(0)).collect(),
            hung_at: Mutex::default(),
            requests: (0..count).map(|_| AtomicUsize::new(0)).collect(),
        });
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let port = listener.local_addr().unwrap().port();
        let shared = state.clone();
        let handler = move |axum::extract::Path(team): axum::extract::Path<usize>,
                            headers: axum::http::HeaderMap,
                            body: axum::body::Bytes| {
            let state = shared.clone();
            async move {
                let _open = Open::enter(&state, team);
                match state.behaviours[team] {
                    Behaviour::Hang => {
                        state.hung_at.lock().unwrap().push(Instant::now());
                        tokio::time::sleep(HANG).await;
                        (axum::http::StatusCode::OK, "late")
                    }
                    Behaviour::Fail => (
                        axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                        "failing on purpose",
                    ),
                    Behaviour::Fast => {
                        let signature = headers
                            .get("e2b-signature")
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or_default();
                        let json: serde_json::Value =
                            serde_json::from_slice(&body).unwrap_or_default();
                        let field = |k: &str| json[k].as_str().unwrap_or_default().to_owned();
                        state.arrivals.lock().unwrap().push(Arrival {
                            team,
                            event_id: field("id"),
                            sandbox_id: field("sandbox_id"),
                            at: Instant::now(),
                            signature_ok: signature
                                == e2b_cloud_signature(&state.secrets[team], &body),
                        });
                        (axum::http::StatusCode::OK, "{}")
                    }
                }
            }
        };
        let app = axum::Router::new().route("/t/{team}", axum::routing::post(handler));
        runtime.spawn(async move { axum::serve(listener, app).await });
        Self {
            port,
            state,
            runtime: Some(runtime),
        }
    }

    /// Every event accepted so far, in arrival order.
    pub fn arrivals(&self) -> Vec<Arrival> {
        self.state.arrivals.lock().unwrap().clone()
    }

    /// How many events were accepted so far.
    pub fn accepted(&self) -> usize {
        self.state.arrivals.lock().unwrap().len()
    }

    /// Requests of team `n` open right now.
    pub fn open(&self, team: usize) -> usize {
        self.state.open[team].load(Ordering::SeqCst)
    }

    /// The most requests of team `n` open at once.
    pub fn max_open(&self, team: usize) -> usize {
        self.state.max_open[team].load(Ordering::SeqCst)
    }

    /// Requests team `n` received.
    pub fn requests(&self, team: usize) -> usize {
        self.state.requests[team].load(Ordering::SeqCst)
    }

    /// When the first hanging request started.
    pub fn first_hang(&self) -> Option<Instant> {
        self.state.hung_at.lock().unwrap().iter().min().copied()
    }
}

impl Drop for TeamsReceiver {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

/// Registers one webhook per team (every event type) through the events API on `api_port`,
/// pointing at team n's path of `receiver_port`; returns their ids.
pub fn register_webhooks(api_port: u16, keys: &[String], receiver_port: u16) -> Vec<String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let client = reqwest::Client::new();
    runtime.block_on(async {
        let mut ids = Vec::with_capacity(keys.len());
        for (n, key) in keys.iter().enumerate() {
            let body = json!({
                "name": format!("team {n}"),
                "url": format!("http://127.0.0.1:{receiver_port}/t/{n}"),
                "enabled": true,
                "events": ["sandbox.lifecycle.created", "sandbox.lifecycle.killed",
                           "sandbox.lifecycle.paused", "sandbox.lifecycle.resumed"],
                "signatureSecret": secret_of(n),
            });
            let response = client
                .post(format!("http://127.0.0.1:{api_port}/events/webhooks"))
                .header("X-API-Key", key)
                .header("Content-Type", "application/json")
                .body(body.to_string())
                .send()
                .await
                .unwrap();
            let status = response.status().as_u16();
            let text = response.text().await.unwrap_or_default();
            let created: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
            assert_eq!(status, 201, "registering team {n}'s webhook: {created}");
            ids.push(created["id"].as_str().unwrap().to_owned());
        }
        ids
    })
}

/// How many registered webhooks the emitter delivers to (its `registered_webhook_info` series).
pub fn webhooks_served(listen_port: u16) -> usize {
    crate::common::http_get(listen_port, "/metrics")
        .1
        .lines()
        .filter(|l| l.starts_with("e2b_webhook_registered_webhook_info{"))
        .count()
}

/// A sandbox's life in `count` events (created, then paused/resumed, killed last), in order.
pub fn lifecycle(count: usize) -> Vec<&'static str> {
    (0..count)
        .map(|i| match i {
            0 => "created",
            i if i + 1 == count => "killed",
            i if i % 2 == 1 => "paused",
            _ => "resumed",
        })
        .collect()
}

/// Writes `events` per sandbox for each of `sandboxes` of team `n` as the orchestrator writes
/// them; returns when each event id was written.
pub fn send_events(
    conn: &mut redis::Connection,
    team: (usize, &str),
    sandboxes: usize,
    events: usize,
) -> HashMap<String, Instant> {
    let (n, team_id) = team;
    let mut written = HashMap::new();
    for s in 0..sandboxes {
        let sandbox = format!("sbx-{n}-{s}");
        for (e, kind) in lifecycle(events).into_iter().enumerate() {
            let id = format!("ev-{n}-{s}-{e}");
            written.insert(id.clone(), Instant::now());
            super::docs_receiver::xadd(conn, &id, kind, &sandbox, team_id);
        }
    }
    written
}

/// The `q` quantile (0..=1) of `values`, nearest rank.
pub fn quantile(values: &mut [Duration], q: f64) -> Duration {
    values.sort();
    if values.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((q * values.len() as f64).ceil() as usize).clamp(1, values.len());
    values[rank - 1]
}

/// Resident and peak resident memory of process `pid` in KiB (`VmRSS`, `VmHWM`).
pub fn rss_kib(pid: u32) -> (u64, u64) {
    let (rss, peak, _) = proc_status(pid);
    (rss, peak)
}

/// Starts measuring the peak resident memory (`VmHWM`) of process `pid` afresh (Linux ≥ 4.0).
pub fn reset_peak(pid: u32) {
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5").unwrap();
}

/// The threads process `pid` runs now.
pub fn threads(pid: u32) -> u64 {
    proc_status(pid).2
}

fn proc_status(pid: u32) -> (u64, u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"), field("Threads:"))
}
