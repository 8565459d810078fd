//! The receiver the emitter delivers to: axum on its own thread and runtime.

use crate::{ENDPOINT_PATH, SECRET, patience_for};
use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use e2b_webhook_emitter::deliver::sign::{self, SecretSet};
use serde::Deserialize;
use std::collections::HashSet;
use std::net::TcpListener as StdListener;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What the receiver checks before it answers 200.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Check {
    /// `X-E2B-Signature` (the default format).
    XE2bSignature,
    /// `e2b-signature`, with the crate's own `sign::verify_e2b_cloud`.
    E2bCloud,
    /// `webhook-id`, `webhook-timestamp`, `webhook-signature`, with `sign::verify_standard_webhooks`.
    StandardWebhooks,
    /// Nothing, like nginx's `return 200`: only the event id is read, to know when the run is done.
    Nothing,
}

impl Check {
    fn passes(self, secrets: &SecretSet, headers: &HeaderMap, body: &[u8]) -> bool {
        let header = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
        };
        match self {
            Check::XE2bSignature => sign::verify_x_e2b(secrets, body, header("x-e2b-signature")),
            Check::E2bCloud => sign::verify_e2b_cloud(secrets, body, header("e2b-signature")),
            Check::StandardWebhooks => header("webhook-timestamp").parse::<i64>().is_ok_and(|ts| {
                sign::verify_standard_webhooks(
                    secrets,
                    header("webhook-id"),
                    ts,
                    body,
                    header("webhook-signature"),
                )
            }),
            Check::Nothing => true,
        }
    }
}

#[derive(Default)]
pub struct ReceiverStats {
    pub requests: AtomicU64,
    pub bad_signatures: AtomicU64,
    pub body_bytes: AtomicU64,
    /// Distinct (path, event id) pairs received.
    pub distinct: AtomicUsize,
    /// When the first request arrived (µs since `epoch`, 0 before).
    pub first_us: AtomicU64,
    /// When the latest new event id arrived (µs since `epoch`).
    pub last_new_us: AtomicU64,
    /// (index of the path, event id).
    pub ids: Mutex<HashSet<(usize, String)>>,
    /// Distinct event ids per path.
    pub per_path: Vec<AtomicUsize>,
    /// (written at, latency), µs.
    pub latencies: Mutex<Vec<(i64, i64)>>,
}

/// The event id and timestamp: at the top of the body (`x-e2b-signature`, `e2b-cloud`), or the id
/// under `data` (`standard-webhooks`, which wraps the whole event).
#[derive(Deserialize)]
pub struct Probe {
    id: Option<String>,
    timestamp: Option<String>,
    data: Option<ProbeData>,
}

#[derive(Deserialize)]
pub struct ProbeData {
    id: String,
}

/// A fast receiver: checks the signature, notes latency and event id, answers 200. It runs on
/// its own thread and runtime (two workers), apart from the benchmark's; over plain HTTP, or over
/// TLS (rustls) with a certificate a private CA signed.
pub struct Receiver {
    scheme: &'static str,
    port: u16,
    paths: Vec<String>,
    epoch: Instant,
    pub stats: Arc<ReceiverStats>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Receiver {
    /// The default receiver: one path, `X-E2B-Signature` verified.
    pub fn start(port: u16) -> Self {
        Self::start_with(port, Check::XE2bSignature, &[ENDPOINT_PATH])
    }

    pub fn start_with(port: u16, check: Check, paths: &[&str]) -> Self {
        Self::spawn(port, check, paths, None)
    }

    /// Over TLS with `tls` (HTTP/1.1, as the emitter speaks), on any free port.
    pub fn start_tls(check: Check, paths: &[&str], tls: Arc<rustls::ServerConfig>) -> Self {
        Self::spawn(0, check, paths, Some(tls))
    }

    fn spawn(
        port: u16,
        check: Check,
        paths: &[&str],
        tls: Option<Arc<rustls::ServerConfig>>,
    ) -> Self {
        let scheme = if tls.is_some() { "https" } else { "http" };
        let listener = StdListener::bind(("127.0.0.1", port)).expect("binding the receiver");
        listener
            .set_nonblocking(true)
            .expect("a non-blocking socket");
        let port = listener.local_addr().expect("local address").port();
        let stats = Arc::new(ReceiverStats {
            per_path: paths.iter().map(|_| AtomicUsize::new(0)).collect(),
            ..ReceiverStats::default()
        });
        let epoch = Instant::now();
        let secrets = SecretSet::parse(SECRET).expect("a secret");
        let mut app = axum::Router::new();
        for (index, path) in paths.iter().enumerate() {
            let (st, secrets) = (stats.clone(), secrets.clone());
            let handler = move |headers: HeaderMap, body: Bytes| {
                let (st, secrets) = (st.clone(), secrets.clone());
                async move { receive(&st, epoch, index, check, &secrets, &headers, &body) }
            };
            app = app.route(path, axum::routing::post(handler));
        }
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
                    match tls {
                        None => tokio::select! {
                            _ = axum::serve(listener, app) => {}
                            _ = stopped => {}
                        },
                        Some(tls) => tokio::select! {
                            _ = serve_tls(listener, app, tls) => {}
                            _ = stopped => {}
                        },
                    }
                });
                // Drops the connection tasks too: clients see their connections close.
                runtime.shutdown_timeout(Duration::from_secs(1));
            })
            .expect("the receiver's thread");
        Self {
            scheme,
            port,
            paths: paths.iter().map(|p| (*p).to_owned()).collect(),
            epoch,
            stats,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// The URL of the first path.
    pub fn url(&self) -> String {
        self.url_of(0)
    }

    pub fn url_of(&self, path: usize) -> String {
        format!(
            "{}://127.0.0.1:{}{}",
            self.scheme, self.port, self.paths[path]
        )
    }

    /// Distinct event ids that arrived on each path.
    pub fn per_path(&self) -> Vec<usize> {
        self.stats
            .per_path
            .iter()
            .map(|n| n.load(Ordering::Acquire))
            .collect()
    }

    /// When the first request arrived, if one did.
    pub fn first_request(&self) -> Option<Instant> {
        match self.stats.first_us.load(Ordering::Relaxed) {
            0 => None,
            us => Some(self.epoch + Duration::from_micros(us)),
        }
    }

    pub fn distinct(&self) -> usize {
        self.stats.distinct.load(Ordering::Acquire)
    }

    /// Waits until `n` distinct events arrived; returns when the last of them did.
    pub fn wait_for(&self, n: usize, what: &str) -> Instant {
        let patience = patience_for(n);
        let deadline = Instant::now() + patience;
        while self.distinct() < n {
            assert!(
                Instant::now() < deadline,
                "{what}: only {} of {n} events arrived within {patience:?}",
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
        assert_eq!(
            bad, 0,
            "{bad} deliveries had a bad signature or no event id"
        );
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

/// Serves `app` over TLS: each connection's handshake, then HTTP/1.1 on it, as a TLS-terminating
/// web server does (`TCP_NODELAY` on, as nginx's default).
async fn serve_tls(
    listener: tokio::net::TcpListener,
    app: axum::Router,
    tls: Arc<rustls::ServerConfig>,
) {
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let (acceptor, app) = (acceptor.clone(), app.clone());
        tokio::spawn(async move {
            let Ok(stream) = acceptor.accept(tcp).await else {
                return;
            };
            let service = hyper_util::service::TowerToHyperService::new(app);
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                .await;
        });
    }
}

/// One request: check, note, answer.
fn receive(
    st: &ReceiverStats,
    epoch: Instant,
    index: usize,
    check: Check,
    secrets: &SecretSet,
    headers: &HeaderMap,
    body: &[u8],
) -> (StatusCode, &'static str) {
    let now = jiff::Timestamp::now();
    let since_epoch = (epoch.elapsed().as_micros() as u64).max(1);
    let _ = st
        .first_us
        .compare_exchange(0, since_epoch, Ordering::Relaxed, Ordering::Relaxed);
    st.requests.fetch_add(1, Ordering::Relaxed);
    st.body_bytes
        .fetch_add(body.len() as u64, Ordering::Relaxed);
    if !check.passes(secrets, headers, body) {
        st.bad_signatures.fetch_add(1, Ordering::Relaxed);
        return (StatusCode::UNAUTHORIZED, "{\"success\":false}");
    }
    let probe = serde_json::from_slice::<Probe>(body).ok();
    let Some((id, timestamp)) =
        probe.and_then(|p| Some((p.id.or(p.data.map(|d| d.id))?, p.timestamp)))
    else {
        st.bad_signatures.fetch_add(1, Ordering::Relaxed);
        return (StatusCode::BAD_REQUEST, "{\"success\":false}");
    };
    if let Some(written) = timestamp.and_then(|t| t.parse::<jiff::Timestamp>().ok()) {
        let w = written.as_microsecond();
        st.latencies
            .lock()
            .expect("latencies")
            .push((w, now.as_microsecond() - w));
    }
    if st.ids.lock().expect("ids").insert((index, id)) {
        st.last_new_us
            .fetch_max(epoch.elapsed().as_micros() as u64, Ordering::Relaxed);
        st.per_path[index].fetch_add(1, Ordering::Release);
        st.distinct.fetch_add(1, Ordering::Release);
    }
    (StatusCode::OK, "{\"success\":true}")
}
