//! Shared test helpers: the binary, free ports, a capturing HTTP server on a real socket.
#![allow(dead_code)] // each test crate uses a different subset

pub mod events_api;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::Command;
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The binary under test.
pub fn binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_e2b-webhook-emitter"))
}

/// `WEBHOOK_SECRETS_KEY` of the tests (base64 of 32 bytes): the events API needs one.
pub const SECRETS_KEY: &str = "dGVzdC1rZXktb2YtdGhlLWVtaXR0ZXItdGVzdHMtMzI=";

/// A command running the binary, with the secret-bearing variables of the caller removed and
/// the tests' [`SECRETS_KEY`] given.
pub fn emitter() -> Command {
    emitter_at(&binary())
}

/// Like [`emitter`], running another build of it (an earlier release for upgrade tests, the
/// release build a benchmark drives).
pub fn emitter_at(binary: &std::path::Path) -> Command {
    let mut cmd = Command::new(binary);
    for var in [
        "WEBHOOK_URL",
        "WEBHOOK_SECRET",
        "WEBHOOK_FORMAT",
        "WEBHOOK_EVENTS",
        "REDIS_URL",
        "REDIS_CLUSTER_URL",
        "REDIS_TLS_ENABLED",
        "REDIS_TLS_CA_BASE64",
        "REDIS_PASSWORD",
        "NOMAD_ADDR",
        "NOMAD_TOKEN",
        "DATA_DIR",
        "LISTEN_ADDR",
        "CONFIG_FILE",
        "E2B_TEAM_IDS",
        "EVENTS_FILE",
        "RUST_LOG",
        "LOG_FORMAT",
        "ADMIN_TOKEN",
        "OUTBOX_EXCLUSIVE",
        "ADMIN_URL",
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "LOGS_COLLECTOR_ADDRESS",
        "LOGS_COLLECTOR_QUEUE",
        "POSTGRES_CONNECTION_STRING",
        "DATABASE_URL",
        "API_LISTEN_ADDR",
        "API_ALLOW_PRIVATE_CIDRS",
        "AUTH_PROVIDER_CONFIG",
        "WEBHOOKS_PER_TEAM",
    ] {
        cmd.env_remove(var);
    }
    cmd.env("WEBHOOK_SECRETS_KEY", SECRETS_KEY);
    cmd
}

/// A loopback port nobody listens on right now, for a server a test starts next.
///
/// Taken below the kernel's ephemeral range where there is room: a port in that range can also
/// be given to an outgoing connection (to Redis, PostgreSQL, a receiver) between this check and
/// the server's bind. Within one test binary no port is handed out twice.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    const LOWEST: u32 = 10_000;
    static HANDED_OUT: AtomicU32 = AtomicU32::new(0);
    let ephemeral_start = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse::<u32>().ok())
        .unwrap_or(0);
    if ephemeral_start > LOWEST + 1_000 {
        let span = ephemeral_start - LOWEST;
        // Test binaries that run at once start at different places.
        let start = std::process::id().wrapping_mul(7_919) % span;
        for _ in 0..span {
            let n = HANDED_OUT.fetch_add(1, Ordering::Relaxed);
            let port = u16::try_from(LOWEST + (start + n) % span).expect("below 65 536");
            if TcpListener::bind(("127.0.0.1", port)).is_ok() {
                return port;
            }
        }
    }
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Waits until something accepts connections on `port`.
pub fn wait_for_port(port: u16, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "nothing listens on port {port} after {timeout:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// One HTTP request as it arrived on the socket.
#[derive(Debug, Clone)]
pub struct CapturedRequest {
    pub method: String,
    pub path: String,
    /// Lowercased header names.
    pub headers: HashMap<String, String>,
    pub body: Vec<u8>,
}

/// Reads one HTTP/1.1 request (Content-Length bodies) from a stream.
pub fn read_request(stream: &mut TcpStream) -> Option<CapturedRequest> {
    let mut reader = BufReader::new(stream.try_clone().ok()?);
    let mut line = String::new();
    if reader.read_line(&mut line).ok()? == 0 {
        return None;
    }
    let mut parts = line.split_whitespace();
    let method = parts.next()?.to_owned();
    let path = parts.next()?.to_owned();
    let mut headers = HashMap::new();
    loop {
        let mut h = String::new();
        reader.read_line(&mut h).ok()?;
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        let (k, v) = h.split_once(':')?;
        headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_owned());
    }
    let len: usize = headers
        .get("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0; len];
    reader.read_exact(&mut body).ok()?;
    Some(CapturedRequest {
        method,
        path,
        headers,
        body,
    })
}

/// Serves `responses` in turn (status, body) on a real socket, then 200s; returns the requests.
pub fn capture_server(
    responses: Vec<(u16, &'static str)>,
) -> (u16, mpsc::Receiver<CapturedRequest>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut responses = responses.into_iter();
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            while let Some(req) = read_request(&mut stream) {
                let (status, body) = responses.next().unwrap_or((200, "{\"success\":true}"));
                let reply = format!(
                    "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                    body.len()
                );
                let _ = stream.write_all(reply.as_bytes());
                if tx.send(req).is_err() {
                    return;
                }
            }
        }
    });
    (port, rx)
}

/// Runs a command and returns (exit code, stdout, stderr).
pub fn output(cmd: &mut Command) -> (i32, String, String) {
    let out = cmd.output().expect("the command runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Inputs that make the binary do a bit of everything it counts: a receiver that refuses one
/// sandbox's events (`isb00000`) for good with 400, an events file of three sandboxes'
/// lifecycles and one malformed line, and a config file whose retry policy dead-letters the
/// refused events within a second.
pub struct Activity {
    pub receiver: TestReceiver,
    pub events_file: PathBuf,
    pub config: PathBuf,
}

impl Activity {
    /// Starts the receiver (verifying with `secret`) and writes the files into `dir`.
    pub fn prepare(dir: &std::path::Path, secret: &str) -> Self {
        let receiver = TestReceiver::start(
            0,
            secret,
            std::sync::Arc::new(|_, sandbox, _| if sandbox == "isb00000" { 400 } else { 200 }),
        );
        let (mut events, _) = lifecycle_ndjson(3, 2);
        events.push_str("not an event\n");
        let events_file = dir.join("events.ndjson");
        std::fs::write(&events_file, events).unwrap();
        let config = dir.join("c.toml");
        std::fs::write(
            &config,
            "[retry]\nschedule = [\"100ms\"]\nmax_age = \"1s\"\n",
        )
        .unwrap();
        Self {
            receiver,
            events_file,
            config,
        }
    }
}

/// One request the test receiver answered 2xx.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub event_id: String,
    pub sandbox_id: String,
    pub label: String,
    pub delivery_id: String,
    pub attempt: u32,
    pub signature_ok: bool,
    pub body: serde_json::Value,
    /// The request path (tests give each instance its own).
    pub path: String,
    /// When the receiver answered it.
    pub at: Instant,
}

/// Decides the status for a request: (event id, sandbox id, attempt header) → HTTP status.
pub type Decide = dyn Fn(&str, &str, u32) -> u16 + Send + Sync;

/// A webhook receiver on a real socket (axum on its own runtime) that verifies `X-E2B-Signature`,
/// answers what `decide` says, and records every request it answered 2xx, in arrival order.
pub struct TestReceiver {
    pub port: u16,
    pub accepted: std::sync::Arc<std::sync::Mutex<Vec<Delivery>>>,
    pub requests: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl TestReceiver {
    /// Starts on `port` (0: any free port).
    pub fn start(port: u16, secret: &str, decide: std::sync::Arc<Decide>) -> Self {
        Self::start_slow(port, secret, decide, Duration::ZERO)
    }

    /// Like `start`, but every answer takes `delay`.
    pub fn start_slow(
        port: u16,
        secret: &str,
        decide: std::sync::Arc<Decide>,
        delay: Duration,
    ) -> Self {
        use axum::body::Bytes;
        use axum::http::HeaderMap;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind(("127.0.0.1", port)))
            .unwrap();
        let port = listener.local_addr().unwrap().port();
        let accepted = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let requests = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let secrets = e2b_webhook_emitter::deliver::sign::SecretSet::parse(secret).unwrap();
        let (acc, reqs) = (accepted.clone(), requests.clone());
        let handler = move |uri: axum::http::Uri, headers: HeaderMap, body: Bytes| {
            let (acc, reqs, decide, secrets) =
                (acc.clone(), reqs.clone(), decide.clone(), secrets.clone());
            async move {
                reqs.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                tokio::time::sleep(delay).await;
                let header = |n: &str| {
                    headers
                        .get(n)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default()
                        .to_owned()
                };
                let signature_ok = e2b_webhook_emitter::deliver::sign::verify_x_e2b(
                    &secrets,
                    &body,
                    &header("x-e2b-signature"),
                );
                let json: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
                let event_id = json["id"].as_str().unwrap_or_default().to_owned();
                let sandbox_id = json["sandboxId"].as_str().unwrap_or_default().to_owned();
                let attempt: u32 = header("e2b-delivery-attempt").parse().unwrap_or(0);
                let status = decide(&event_id, &sandbox_id, attempt);
                if (200..300).contains(&status) {
                    let body = json.clone();
                    acc.lock().unwrap().push(Delivery {
                        body,
                        event_id,
                        sandbox_id,
                        label: json["eventLabel"].as_str().unwrap_or_default().to_owned(),
                        delivery_id: header("e2b-delivery-id"),
                        attempt,
                        signature_ok,
                        path: uri.path().to_owned(),
                        at: Instant::now(),
                    });
                }
                (axum::http::StatusCode::from_u16(status).unwrap(), "{}")
            }
        };
        let app = axum::Router::new().fallback(axum::routing::post(handler));
        runtime.spawn(async move { axum::serve(listener, app).await });
        Self {
            port,
            accepted,
            requests,
            runtime: Some(runtime),
        }
    }

    /// Everything answered 2xx so far.
    pub fn deliveries(&self) -> Vec<Delivery> {
        self.accepted.lock().unwrap().clone()
    }

    /// Stops listening (connections are closed).
    pub fn stop(mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_timeout(Duration::from_secs(1));
        }
    }
}

impl Drop for TestReceiver {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

/// GET `path` on the loopback `port` with the tests' admin token: (status, body); status 0
/// when nothing answers.
pub fn http_get(port: u16, path: &str) -> (u16, String) {
    http_get_as(port, path, Some(ADMIN_TOKEN))
}

/// Like [`http_get`], with this bearer token (none: no `Authorization` header).
pub fn http_get_as(port: u16, path: &str, token: Option<&str>) -> (u16, String) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut request = reqwest::Client::new().get(format!("http://127.0.0.1:{port}{path}"));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        match request.send().await {
            Ok(r) => (r.status().as_u16(), r.text().await.unwrap_or_default()),
            Err(_) => (0, String::new()),
        }
    })
}

/// The body of `GET path` at `addr` (`host:port`) over a plain HTTP/1.0 connection, with the
/// tests' admin token; empty when nothing answers.
pub fn http_get_body(addr: &str, path: &str) -> String {
    let Ok(mut stream) = TcpStream::connect(addr) else {
        return String::new();
    };
    let _ = write!(
        stream,
        "GET {path} HTTP/1.0\r\nHost: emitter\r\nAuthorization: Bearer {ADMIN_TOKEN}\r\n\r\n"
    );
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    response
        .split("\r\n\r\n")
        .nth(1)
        .unwrap_or_default()
        .to_owned()
}

/// Whether the instance on `port` holds the leader lease, as its `/status` says.
pub fn lease_active(port: u16) -> bool {
    let (code, body) = http_get(port, "/status");
    code == 200
        && serde_json::from_str::<serde_json::Value>(&body)
            .is_ok_and(|s| s["lease"]["active"] == true)
}

/// Polls `check` until it returns true or `timeout` passes; returns whether it did.
pub fn eventually(timeout: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if check() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    check()
}

/// Polls `probe` until it returns a value; fails the test naming `what` after 30 s (generous:
/// debug builds on a loaded CI machine).
pub fn wait_until<T>(what: &str, mut probe: impl FnMut() -> Option<T>) -> T {
    const DEADLINE: Duration = Duration::from_secs(30);
    let deadline = Instant::now() + DEADLINE;
    loop {
        if let Some(value) = probe() {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {DEADLINE:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// First arrivals per sandbox, in arrival order (repeats of an event id left out).
pub fn first_arrivals(deliveries: &[Delivery]) -> HashMap<String, Vec<String>> {
    let mut seen = std::collections::HashSet::new();
    let mut out: HashMap<String, Vec<String>> = HashMap::new();
    for d in deliveries {
        if seen.insert(d.event_id.clone()) {
            out.entry(d.sandbox_id.clone())
                .or_default()
                .push(d.event_id.clone());
        }
    }
    out
}

/// NDJSON of `per_sandbox` events (created, then alternating pause/resume, then killed) for
/// `sandboxes` sandboxes, interleaved; returns the text and the event ids in order per sandbox.
pub fn lifecycle_ndjson(
    sandboxes: usize,
    per_sandbox: usize,
) -> (String, HashMap<String, Vec<String>>) {
    let team = "0b8b8a4e-6f4e-4c4a-9a57-3a2f5d3b1c2d";
    let mut text = String::new();
    let mut order: HashMap<String, Vec<String>> = HashMap::new();
    for step in 0..per_sandbox {
        for s in 0..sandboxes {
            let sandbox = format!("isb{s:05}");
            let (kind, label) = if step == 0 {
                ("created", "create")
            } else if step == per_sandbox - 1 {
                ("killed", "kill")
            } else if step % 2 == 1 {
                ("paused", "pause")
            } else {
                ("resumed", "resume")
            };
            let id = format!("00000000-0000-4000-8000-{:06}{:06}", s, step);
            let line = serde_json::json!({
                "id": id, "version": "v2", "type": format!("sandbox.lifecycle.{kind}"),
                "timestamp": jiff::Timestamp::now().to_string(), "event_category": "lifecycle", "event_label": label,
                "sandbox_id": sandbox, "sandbox_execution_id": format!("exec-{step}"), "sandbox_template_id": "base",
                "sandbox_build_id": "b1", "sandbox_team_id": team
            });
            text.push_str(&line.to_string());
            text.push('\n');
            order.entry(sandbox).or_default().push(id);
        }
    }
    (text, order)
}

/// A running `e2b-webhook-emitter run`, its stderr captured to a file.
pub struct RunningEmitter {
    pub child: std::process::Child,
    pub log: PathBuf,
}

impl RunningEmitter {
    /// Starts `run` with the given extra arguments; logs go to `log`.
    /// `ADMIN_TOKEN` is [`ADMIN_TOKEN`], so tests can read `/status`.
    pub fn start(args: &[&str], log: PathBuf) -> Self {
        Self::start_with_admin_token(Some(ADMIN_TOKEN), args, log)
    }

    /// Like [`Self::start`], with this `ADMIN_TOKEN` (none: admin API, console and `/status` off).
    pub fn start_with_admin_token(token: Option<&str>, args: &[&str], log: PathBuf) -> Self {
        Self::spawn(token, args, &[], log)
    }

    /// Like [`Self::start`], with extra environment variables.
    pub fn start_with_env(args: &[&str], env: &[(&str, &str)], log: PathBuf) -> Self {
        Self::spawn(Some(ADMIN_TOKEN), args, env, log)
    }

    /// Like [`Self::start`], running another build of the binary (see [`emitter_at`]).
    pub fn start_binary(binary: &std::path::Path, args: &[&str], log: PathBuf) -> Self {
        Self::spawn_at(binary, Some(ADMIN_TOKEN), args, &[], log)
    }

    fn spawn(token: Option<&str>, args: &[&str], env: &[(&str, &str)], log: PathBuf) -> Self {
        Self::spawn_at(&binary(), token, args, env, log)
    }

    fn spawn_at(
        binary: &std::path::Path,
        token: Option<&str>,
        args: &[&str],
        env: &[(&str, &str)],
        log: PathBuf,
    ) -> Self {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap();
        let mut command = emitter_at(binary);
        if let Some(token) = token {
            command.env("ADMIN_TOKEN", token);
        }
        let child = command
            .arg("run")
            .args(args)
            .envs(env.iter().copied())
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .unwrap();
        Self { child, log }
    }

    /// Sends a signal to the process.
    pub fn signal(&self, signal: nix::sys::signal::Signal) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.child.id() as i32), signal).unwrap();
    }

    /// SIGKILL and reap.
    pub fn kill9(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// The log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for RunningEmitter {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The binary started by a test with its own flags, environment and output; killed when dropped.
pub struct EmitterProcess(pub std::process::Child);

impl EmitterProcess {
    /// Fails the test, showing `log`, if the process has exited.
    pub fn assert_running(&mut self, log: &std::path::Path) {
        if let Some(status) = self.0.try_wait().unwrap() {
            panic!(
                "the emitter exited with {status}; log:\n{}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
    }

    /// SIGTERM, and waits for it to exit.
    pub fn stop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.0.id() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
        let _ = self.0.wait();
    }
}

impl Drop for EmitterProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// An outbox in `dir` with one endpoint, `default`, taking every event: as one instance without
/// Redis opens it, readable by other processes.
pub fn default_outbox(
    dir: &std::path::Path,
    metrics: std::sync::Arc<e2b_webhook_emitter::metrics::Metrics>,
) -> e2b_webhook_emitter::outbox::Outbox {
    use e2b_webhook_emitter::outbox::{FileSharing, Outbox, Route};
    let routes = vec![Route {
        endpoint: "default".into(),
        filter: e2b_webhook_emitter::event::EventFilter::parse("*").unwrap(),
    }];
    Outbox::open(dir, routes, metrics, false, FileSharing::WithReaders).unwrap()
}

/// The admin token the tests give the service (`ADMIN_TOKEN`) and send as `Bearer`.
pub const ADMIN_TOKEN: &str = "admin-token-7c6b5a493827161504f3e2d1";
