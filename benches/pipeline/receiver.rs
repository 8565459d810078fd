//! The receiver the emitter delivers to: axum on its own thread and runtime.

use crate::{ENDPOINT_PATH, PATIENCE, SECRET};
use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use e2b_webhook_emitter::deliver::sign::{self, SecretSet};
use serde::Deserialize;
use std::collections::HashSet;
use std::net::TcpListener as StdListener;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Default)]
pub struct ReceiverStats {
    pub requests: AtomicU64,
    pub bad_signatures: AtomicU64,
    pub body_bytes: AtomicU64,
    /// Distinct event ids received.
    pub distinct: AtomicUsize,
    /// When the latest new event id arrived (µs since `epoch`).
    pub last_new_us: AtomicU64,
    pub ids: Mutex<HashSet<String>>,
    /// (written at, latency), µs.
    pub latencies: Mutex<Vec<(i64, i64)>>,
}

#[derive(Deserialize)]
pub struct Probe {
    id: String,
    timestamp: String,
}

/// A fast receiver: verifies the signature, notes latency and event id, answers 200. It runs on
/// its own thread and runtime (two workers), apart from the benchmark's.
pub struct Receiver {
    port: u16,
    epoch: Instant,
    pub stats: Arc<ReceiverStats>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Receiver {
    pub fn start(port: u16) -> Self {
        let listener = StdListener::bind(("127.0.0.1", port)).expect("binding the receiver");
        listener
            .set_nonblocking(true)
            .expect("a non-blocking socket");
        let port = listener.local_addr().expect("local address").port();
        let stats = Arc::new(ReceiverStats::default());
        let epoch = Instant::now();
        let secrets = SecretSet::parse(SECRET).expect("a secret");
        let st = stats.clone();
        let handler = move |headers: HeaderMap, body: Bytes| {
            let (st, secrets) = (st.clone(), secrets.clone());
            async move {
                let now = jiff::Timestamp::now();
                st.requests.fetch_add(1, Ordering::Relaxed);
                st.body_bytes
                    .fetch_add(body.len() as u64, Ordering::Relaxed);
                let signature = headers
                    .get("x-e2b-signature")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default();
                if !sign::verify_x_e2b(&secrets, &body, signature) {
                    st.bad_signatures.fetch_add(1, Ordering::Relaxed);
                    return (StatusCode::UNAUTHORIZED, "{\"success\":false}");
                }
                let Ok(probe) = serde_json::from_slice::<Probe>(&body) else {
                    return (StatusCode::BAD_REQUEST, "{\"success\":false}");
                };
                if let Ok(written) = probe.timestamp.parse::<jiff::Timestamp>() {
                    let w = written.as_microsecond();
                    st.latencies
                        .lock()
                        .expect("latencies")
                        .push((w, now.as_microsecond() - w));
                }
                if st.ids.lock().expect("ids").insert(probe.id) {
                    st.last_new_us
                        .fetch_max(epoch.elapsed().as_micros() as u64, Ordering::Relaxed);
                    st.distinct.fetch_add(1, Ordering::Release);
                }
                (StatusCode::OK, "{\"success\":true}")
            }
        };
        let app = axum::Router::new().route(ENDPOINT_PATH, axum::routing::post(handler));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("receiver".into())
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .thread_name("receiver")
                    .enable_all()
                    .build()
                    .expect("the receiver's runtime");
                runtime.block_on(async move {
                    let listener =
                        tokio::net::TcpListener::from_std(listener).expect("a tokio listener");
                    tokio::select! {
                        _ = axum::serve(listener, app) => {}
                        _ = stopped => {}
                    }
                });
                // Drops the connection tasks too: clients see their connections close.
                runtime.shutdown_timeout(Duration::from_secs(1));
            })
            .expect("the receiver's thread");
        Self {
            port,
            epoch,
            stats,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}{ENDPOINT_PATH}", self.port)
    }

    pub fn distinct(&self) -> usize {
        self.stats.distinct.load(Ordering::Acquire)
    }

    /// Waits until `n` distinct events arrived; returns when the last of them did.
    pub fn wait_for(&self, n: usize, what: &str) -> Instant {
        let deadline = Instant::now() + PATIENCE;
        while self.distinct() < n {
            assert!(
                Instant::now() < deadline,
                "{what}: only {} of {n} events arrived within {PATIENCE:?}",
                self.distinct()
            );
            std::thread::sleep(Duration::from_millis(2));
        }
        self.epoch + Duration::from_micros(self.stats.last_new_us.load(Ordering::Relaxed))
    }

    pub fn mean_body_bytes(&self) -> f64 {
        self.stats.body_bytes.load(Ordering::Relaxed) as f64
            / self.stats.requests.load(Ordering::Relaxed).max(1) as f64
    }

    pub fn check_signatures(&self) {
        let bad = self.stats.bad_signatures.load(Ordering::Relaxed);
        assert_eq!(bad, 0, "{bad} deliveries had a bad signature");
    }

    pub fn duplicates(&self) -> u64 {
        self.stats
            .requests
            .load(Ordering::Relaxed)
            .saturating_sub(self.distinct() as u64)
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
