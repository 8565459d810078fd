//! End-to-end benchmark: throughput, latency, memory and backlog drain of the real `run` service,
//! next to the loopback ceiling. Run it with `scripts/bench` (or `cargo bench --bench pipeline`);
//! the results and how to read them are in BENCHMARKS.md.
//!
//! Everything is real and on loopback: a `redis-server` child process; the release binary
//! (`run --redis-url … --team-ids … --webhook-url … --data-dir <tmp>`) with its durable outbox in a
//! temporary directory on the same disk as `/tmp`; a receiver (axum, on its own runtime in this
//! process) that verifies every `X-E2B-Signature` and answers 200. Events are written the way the
//! orchestrator writes them: `EXISTS wh:<team>`, then `XADD sandbox.events.stream * payload <json>`.
//! Each event's `timestamp` is the moment it is written; the receiver subtracts it from its own
//! clock, so the latency is "written to Redis → signed delivery received".
//!
//! Knobs (environment variables):
//! - `BENCH_RUNS` (3): runs per measurement; the table shows the median and min–max.
//! - `BENCH_EVENTS` (20000): events per throughput run (the 1-sandbox run uses a quarter).
//! - `BENCH_BACKLOG` (100000): events in the backlog run.
//! - `BENCH_LATENCY_SECS` (10): measured seconds at each fixed rate (after 1 s of warm-up).
//! - `BENCH_MAX_IN_FLIGHT` (64): `--max-in-flight`, and the load generator's connection count.
//! - `BENCH_ONLY`: a comma-separated subset of `ceiling,rate,latency,backlog`.
//! - `BENCH_EMITTER`: another emitter binary to drive (default: this build's release binary).

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use e2b_webhook_emitter::deliver::format::{self, WireFormat};
use e2b_webhook_emitter::deliver::sign::{self, SecretSet};
use e2b_webhook_emitter::event::SandboxEvent;
use redis::AsyncCommands;
use redis::aio::MultiplexedConnection;
use serde::Deserialize;
use std::collections::HashSet;
use std::fmt::Write as _;
use std::net::TcpListener as StdListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const STREAM: &str = "sandbox.events.stream";
const TEAM: &str = "5c5b7a1e-2f0d-4a57-9a3e-8d1f0b6c4e21";
const SECRET: &str = "bench-secret-0123456789abcdef0123456789abcdef";
const ENDPOINT_PATH: &str = "/api/webhooks/e2b";
/// Events per Redis pipeline when writing as fast as possible.
const WRITE_CHUNK: usize = 200;
/// How long any single wait may take before the benchmark gives up.
const PATIENCE: Duration = Duration::from_secs(180);
/// Linux reports process CPU time in ticks of 1/100 s (`CLK_TCK`).
const TICKS_PER_SEC: f64 = 100.0;

fn gate_key() -> String {
    format!("wh:{TEAM}")
}

// ---------------------------------------------------------------------------------------------
// Settings
// ---------------------------------------------------------------------------------------------

struct Settings {
    runs: usize,
    events: usize,
    backlog: usize,
    latency_secs: u64,
    max_in_flight: usize,
    only: Option<Vec<String>>,
}

impl Settings {
    fn from_env() -> Self {
        let num = |name: &str, default: usize| -> usize {
            std::env::var(name)
                .ok()
                .and_then(|v| v.trim().parse().ok())
                .filter(|v| *v > 0)
                .unwrap_or(default)
        };
        Self {
            runs: num("BENCH_RUNS", 3),
            events: num("BENCH_EVENTS", 20_000),
            backlog: num("BENCH_BACKLOG", 100_000),
            latency_secs: num("BENCH_LATENCY_SECS", 10) as u64,
            max_in_flight: num("BENCH_MAX_IN_FLIGHT", 64),
            only: std::env::var("BENCH_ONLY")
                .ok()
                .filter(|v| !v.trim().is_empty())
                .map(|v| v.split(',').map(|s| s.trim().to_owned()).collect()),
        }
    }

    fn wants(&self, phase: &str) -> bool {
        self.only
            .as_ref()
            .is_none_or(|o| o.iter().any(|p| p == phase))
    }
}

// ---------------------------------------------------------------------------------------------
// Small helpers: ports, /proc, statistics
// ---------------------------------------------------------------------------------------------

fn free_port() -> u16 {
    StdListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
        .port()
}

/// A `kB` line of `/proc/<pid>/status` (VmHWM: peak resident set; VmRSS: current), in MiB.
fn proc_status_mib(pid: u32, field: &str) -> f64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    text.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

/// User + system CPU seconds a process has used so far.
fn cpu_seconds(pid: u32) -> f64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may contain spaces) start at field 3 (state).
    let Some((_, rest)) = text.rsplit_once(')') else {
        return f64::NAN;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let tick = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok());
    match (tick(11), tick(12)) {
        (Some(u), Some(s)) => (u + s) / TICKS_PER_SEC,
        _ => f64::NAN,
    }
}

/// Busy and total jiffies of the whole machine (all CPUs), from `/proc/stat`.
fn machine_jiffies() -> (f64, f64) {
    let text = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let Some(cpu) = text.lines().find(|l| l.starts_with("cpu ")) else {
        return (f64::NAN, f64::NAN);
    };
    let v: Vec<f64> = cpu
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal …; idle and iowait are not busy.
    let total: f64 = v.iter().take(8).sum();
    let idle = v.get(3).copied().unwrap_or(0.0) + v.get(4).copied().unwrap_or(0.0);
    (total - idle, total)
}

/// Share of the machine's CPU time that was busy since `start` (a [`machine_jiffies`] reading).
fn machine_busy_since(start: (f64, f64)) -> f64 {
    let now = machine_jiffies();
    100.0 * (now.0 - start.0) / (now.1 - start.1)
}

/// Median, min and max of some runs.
#[derive(Clone, Copy, Debug)]
struct Spread {
    median: f64,
    min: f64,
    max: f64,
    n: usize,
}

impl Spread {
    fn of(values: &[f64]) -> Option<Self> {
        let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
        if v.is_empty() {
            return None;
        }
        v.sort_by(f64::total_cmp);
        let mid = v.len() / 2;
        let median = if v.len() % 2 == 1 {
            v[mid]
        } else {
            (v[mid - 1] + v[mid]) / 2.0
        };
        Some(Self {
            median,
            min: v[0],
            max: v[v.len() - 1],
            n: v.len(),
        })
    }

    /// "1 234 (1 200–1 300)" with `digits` decimals; the range only when there are several runs.
    fn show(&self, digits: usize) -> String {
        if self.n > 1 {
            format!(
                "{} ({}–{})",
                num(self.median, digits),
                num(self.min, digits),
                num(self.max, digits)
            )
        } else {
            num(self.median, digits)
        }
    }
}

fn show(values: &[f64], digits: usize) -> String {
    Spread::of(values).map_or_else(|| "n/a".to_owned(), |s| s.show(digits))
}

/// A number with a thin space between thousands, for the table.
fn num(value: f64, digits: usize) -> String {
    let text = format!("{value:.digits$}");
    let (int, frac) = text.split_once('.').unwrap_or((&text, ""));
    let (sign, int) = int.strip_prefix('-').map_or(("", int), |i| ("-", i));
    let mut grouped = String::new();
    for (i, c) in int.chars().enumerate() {
        if i > 0 && (int.len() - i) % 3 == 0 {
            grouped.push('\u{202f}');
        }
        grouped.push(c);
    }
    if frac.is_empty() {
        format!("{sign}{grouped}")
    } else {
        format!("{sign}{grouped}.{frac}")
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn log(line: impl AsRef<str>) {
    eprintln!("[bench] {}", line.as_ref());
}

// ---------------------------------------------------------------------------------------------
// Orchestrator-shaped events
// ---------------------------------------------------------------------------------------------

/// Which events a run writes: `events` spread round-robin over `sandboxes`; each sandbox goes
/// created → paused → resumed → … → killed.
#[derive(Clone, Copy)]
struct Workload {
    events: usize,
    sandboxes: usize,
}

impl Workload {
    /// Sandbox index, position in its own sequence, and the length of its sequence.
    fn slot(&self, i: usize) -> (usize, usize, usize) {
        let s = i % self.sandboxes;
        let j = i / self.sandboxes;
        let per = self.events / self.sandboxes + usize::from(s < self.events % self.sandboxes);
        (s, j, per)
    }
}

fn event_json(run: &str, sandbox: usize, j: usize, per: usize, now: jiff::Timestamp) -> String {
    let (kind, label) = if j == 0 {
        ("created", "create")
    } else if j + 1 == per {
        ("killed", "kill")
    } else if j % 2 == 1 {
        ("paused", "pause")
    } else {
        ("resumed", "resume")
    };
    let mut data = serde_json::json!({
        "sandbox_metadata": {"user": "bench", "run": run, "purpose": "load test"}
    });
    if kind == "killed" || kind == "paused" {
        data["execution"] = serde_json::json!({
            "started_at": "2026-01-01T00:00:00Z",
            "vcpu_count": 2,
            "memory_mb": 512,
            "execution_time": 60_000
        });
    }
    if kind == "killed" {
        data["kill_reason"] = "requested".into();
    }
    serde_json::json!({
        "id": uuid::Uuid::new_v4().to_string(),
        "version": "v2",
        "type": format!("sandbox.lifecycle.{kind}"),
        // RFC 3339 with nanoseconds, as the orchestrator writes it.
        "timestamp": format!("{now:.9}"),
        "event_category": "lifecycle",
        "event_label": label,
        "event_data": data,
        "sandbox_id": format!("i{run}{sandbox:07}"),
        "sandbox_execution_id": format!("{:08x}-exec-{j}", sandbox),
        "sandbox_template_id": "base-template-v1",
        "sandbox_build_id": "6a0e5d6c-6b0e-4a38-9f8c-2f1d6f2b9e11",
        "sandbox_team_id": TEAM,
    })
    .to_string()
}

/// Writes the whole workload as fast as Redis takes it: per event `EXISTS wh:<team>` and `XADD`,
/// pipelined [`WRITE_CHUNK`] events at a time. Returns when the first chunk went out and the last
/// entry id.
async fn write_burst(
    conn: &mut MultiplexedConnection,
    run: &str,
    work: Workload,
) -> (Instant, String) {
    let mut first = None;
    let mut last_id = String::new();
    let mut i = 0;
    while i < work.events {
        let end = (i + WRITE_CHUNK).min(work.events);
        let now = jiff::Timestamp::now();
        let mut pipe = redis::pipe();
        for k in i..end {
            let (s, j, per) = work.slot(k);
            pipe.cmd("EXISTS").arg(gate_key());
            pipe.cmd("XADD")
                .arg(STREAM)
                .arg("*")
                .arg("payload")
                .arg(event_json(run, s, j, per, now));
        }
        first.get_or_insert_with(Instant::now);
        let replies: Vec<redis::Value> = pipe
            .query_async(conn)
            .await
            .expect("writing events to Redis");
        for pair in replies.chunks(2) {
            assert!(
                matches!(pair[0], redis::Value::Int(1)),
                "the gate key {} vanished: the orchestrator would stop publishing",
                gate_key()
            );
        }
        if let Some(redis::Value::BulkString(id)) = replies.last() {
            last_id = String::from_utf8_lossy(id).into_owned();
        }
        i = end;
    }
    (first.expect("at least one event"), last_id)
}

/// Writes at a fixed `rate` for `secs` seconds, one event at a time like the orchestrator
/// (`EXISTS`, then `XADD`). Returns how many events it wrote.
async fn write_paced(
    conn: &mut MultiplexedConnection,
    run: &str,
    work: Workload,
    rate: f64,
    secs: f64,
    offset: usize,
) -> usize {
    let total = (rate * secs) as usize;
    let start = tokio::time::Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut written = 0;
    while written < total {
        tick.tick().await;
        let due = ((start.elapsed().as_secs_f64() * rate) as usize).min(total);
        while written < due {
            let exists: i64 = conn.exists(gate_key()).await.expect("EXISTS");
            assert_eq!(exists, 1, "the gate key vanished");
            let (s, j, per) = work.slot(offset + written);
            let json = event_json(run, s, j, per, jiff::Timestamp::now());
            let _: String = redis::cmd("XADD")
                .arg(STREAM)
                .arg("*")
                .arg("payload")
                .arg(json)
                .query_async(conn)
                .await
                .expect("XADD");
            written += 1;
        }
    }
    total
}

// ---------------------------------------------------------------------------------------------
// Redis
// ---------------------------------------------------------------------------------------------

struct RedisServer {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl RedisServer {
    fn start() -> Self {
        let binary = ["/usr/bin/redis-server", "/usr/local/bin/redis-server"]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .unwrap_or("redis-server");
        let dir = tempfile::tempdir().expect("a temporary directory");
        let port = free_port();
        // No persistence: what is measured is the emitter's durability, not Redis's.
        let child = Command::new(binary)
            .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
            .arg("--dir")
            .arg(dir.path())
            .args(["--save", "", "--appendonly", "no"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting redis-server (scripts/bench installs it with apt-get)");
        let server = Self {
            child,
            port,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        server
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    async fn connect(&self) -> MultiplexedConnection {
        redis::Client::open(self.url())
            .expect("a Redis URL")
            .get_multiplexed_async_connection()
            .await
            .expect("connecting to the benchmark's Redis")
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The consumer group's last delivered id and pending count, if the group exists.
async fn group_progress(conn: &mut MultiplexedConnection) -> Option<(String, usize)> {
    let reply: redis::streams::StreamInfoGroupsReply = conn.xinfo_groups(STREAM).await.ok()?;
    reply
        .groups
        .into_iter()
        .next()
        .map(|g| (g.last_delivered_id, g.pending))
}

// ---------------------------------------------------------------------------------------------
// The receiver
// ---------------------------------------------------------------------------------------------

#[derive(Default)]
struct ReceiverStats {
    requests: AtomicU64,
    bad_signatures: AtomicU64,
    body_bytes: AtomicU64,
    /// Distinct event ids received.
    distinct: AtomicUsize,
    /// When the latest new event id arrived (µs since `epoch`).
    last_new_us: AtomicU64,
    ids: Mutex<HashSet<String>>,
    /// (written at, latency), µs.
    latencies: Mutex<Vec<(i64, i64)>>,
}

#[derive(Deserialize)]
struct Probe {
    id: String,
    timestamp: String,
}

/// A fast receiver: verifies the signature, notes latency and event id, answers 200. It runs on
/// its own thread and runtime (two workers), apart from the benchmark's.
struct Receiver {
    port: u16,
    epoch: Instant,
    stats: Arc<ReceiverStats>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Receiver {
    fn start(port: u16) -> Self {
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

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}{ENDPOINT_PATH}", self.port)
    }

    fn distinct(&self) -> usize {
        self.stats.distinct.load(Ordering::Acquire)
    }

    /// Waits until `n` distinct events arrived; returns when the last of them did.
    fn wait_for(&self, n: usize, what: &str) -> Instant {
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

    fn mean_body_bytes(&self) -> f64 {
        self.stats.body_bytes.load(Ordering::Relaxed) as f64
            / self.stats.requests.load(Ordering::Relaxed).max(1) as f64
    }

    fn check_signatures(&self) {
        let bad = self.stats.bad_signatures.load(Ordering::Relaxed);
        assert_eq!(bad, 0, "{bad} deliveries had a bad signature");
    }

    fn duplicates(&self) -> u64 {
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

// ---------------------------------------------------------------------------------------------
// The emitter (the real release binary)
// ---------------------------------------------------------------------------------------------

/// The binary under test: the release build, or `BENCH_EMITTER` (to compare two builds, or to
/// profile one with symbols).
fn emitter_binary() -> PathBuf {
    std::env::var_os("BENCH_EMITTER")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_e2b-webhook-emitter")))
}

struct Emitter {
    child: Child,
    listen: u16,
    dir: tempfile::TempDir,
}

impl Emitter {
    fn start(redis: &RedisServer, webhook_url: &str, max_in_flight: usize, config: &str) -> Self {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let listen = free_port();
        let log = std::fs::File::create(dir.path().join("emitter.log")).expect("a log file");
        let mut cmd = Command::new(emitter_binary());
        for var in [
            "WEBHOOK_URL",
            "WEBHOOK_FORMAT",
            "WEBHOOK_EVENTS",
            "REDIS_URL",
            "REDIS_CLUSTER_URL",
            "NOMAD_ADDR",
            "NOMAD_TOKEN",
            "DATA_DIR",
            "LISTEN_ADDR",
            "CONFIG_FILE",
            "E2B_TEAM_IDS",
            "EVENTS_FILE",
            "MAX_IN_FLIGHT",
            "RUST_LOG",
        ] {
            cmd.env_remove(var);
        }
        // JSON logs at the default level (info: one line per delivery), as in the Nomad job.
        cmd.env("WEBHOOK_SECRET", SECRET)
            .args(["run", "--log-format", "json"]);
        if !config.is_empty() {
            let path = dir.path().join("emitter.toml");
            std::fs::write(&path, config).expect("writing the config file");
            cmd.arg("--config").arg(path);
        }
        cmd.args(["--redis-url", &redis.url(), "--team-ids", TEAM])
            .args(["--redis-consumer", "bench"])
            .args(["--webhook-url", webhook_url])
            .args(["--max-in-flight", &max_in_flight.to_string()])
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .args(["--listen", &format!("127.0.0.1:{listen}")])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        let child = cmd.spawn().expect("starting the emitter");
        Self { child, listen, dir }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(self.dir.path().join("emitter.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// Waits until the emitter consumes the stream: the gate key exists (it is set right after the
    /// consumer group is created, so the orchestrator would now publish) and `/readyz` says so.
    async fn wait_ready(&mut self, conn: &mut MultiplexedConnection) {
        let http = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("the emitter exited with {status}:\n{}", self.log_tail());
            }
            let gate: i64 = conn.exists(gate_key()).await.unwrap_or(0);
            let ready = http
                .get(format!("http://127.0.0.1:{}/readyz", self.listen))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            if gate == 1 && ready {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the emitter did not become ready:\n{}",
                self.log_tail()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// `status --json` of the running service's outbox: the depth of the endpoint.
    fn outbox_depth(&self) -> u64 {
        let out = Command::new(emitter_binary())
            .args(["status", "--json", "--data-dir"])
            .arg(self.data_dir())
            .output()
            .expect("running status");
        let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "status --json printed no JSON ({e}): {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )
        });
        json["outbox"]["endpoints"]
            .as_array()
            .map_or(0, |e| e.iter().filter_map(|e| e["depth"].as_u64()).sum())
    }

    /// SIGTERM, then wait (the service drains for at most 20 s).
    fn stop(mut self) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Emitter {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Forgets the previous run: the stream (and its group) and the gate key.
async fn reset_redis(conn: &mut MultiplexedConnection) {
    let _: () = redis::cmd("DEL")
        .arg(STREAM)
        .arg(gate_key())
        .query_async(conn)
        .await
        .expect("DEL");
}

// ---------------------------------------------------------------------------------------------
// Phases
// ---------------------------------------------------------------------------------------------

/// The loopback ceiling: `conns` connections POSTing a signed body of the emitter's size to the
/// same receiver, `requests` in all. Returns (requests/s, body bytes, machine CPU busy %).
async fn ceiling_run(requests: usize, conns: usize) -> (f64, f64, f64) {
    let receiver = Receiver::start(0);
    let json = event_json("c", 0, 1, 3, jiff::Timestamp::now());
    let event = SandboxEvent::parse(json.as_bytes()).expect("a valid event");
    let secrets = SecretSet::parse(SECRET).expect("a secret");
    let request = format::render(
        WireFormat::XE2bSignature,
        &event,
        &format::EndpointIdentity::new("default"),
        &secrets,
        1,
        jiff::Timestamp::now(),
    );
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(conns)
        .tcp_nodelay(true)
        .build()
        .expect("a client");
    let url = receiver.url();
    let next = Arc::new(AtomicUsize::new(0));
    let busy = machine_jiffies();
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..conns {
        let (client, url, next) = (client.clone(), url.clone(), next.clone());
        let (headers, body) = (request.headers.clone(), Bytes::from(request.body.clone()));
        tasks.spawn(async move {
            while next.fetch_add(1, Ordering::Relaxed) < requests {
                let mut builder = client.post(&url);
                for (name, value) in &headers {
                    builder = builder.header(*name, value);
                }
                let response = builder.body(body.clone()).send().await.expect("a POST");
                assert!(response.status().is_success());
                let _ = response.bytes().await;
            }
        });
    }
    while tasks.join_next().await.is_some() {}
    let elapsed = start.elapsed();
    let busy = machine_busy_since(busy);
    receiver.check_signatures();
    let bytes = receiver.mean_body_bytes();
    drop(receiver);
    (requests as f64 / elapsed.as_secs_f64(), bytes, busy)
}

#[derive(Default, Clone)]
struct RateResult {
    rate: f64,
    idle_rss: f64,
    peak_rss: f64,
    cpu_ms_per_1k: f64,
    redis_cpu_ms_per_1k: f64,
    body_bytes: f64,
    duplicates: u64,
    machine_busy: f64,
}

/// Writes the whole workload at once; measures first write → last delivery.
async fn rate_run(
    redis: &RedisServer,
    conn: &mut MultiplexedConnection,
    work: Workload,
    max_in_flight: usize,
    run: &str,
) -> RateResult {
    reset_redis(conn).await;
    let receiver = Receiver::start(0);
    let mut emitter = Emitter::start(redis, &receiver.url(), max_in_flight, "");
    emitter.wait_ready(conn).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let idle_rss = proc_status_mib(emitter.pid(), "VmHWM");
    let cpu0 = cpu_seconds(emitter.pid());
    let redis_cpu0 = cpu_seconds(redis.child.id());
    let busy = machine_jiffies();
    let (first, _) = write_burst(conn, run, work).await;
    let last = tokio::task::block_in_place(|| receiver.wait_for(work.events, "rate run"));
    let machine_busy = machine_busy_since(busy);
    let rate = work.events as f64 / last.duration_since(first).as_secs_f64();
    // Let the last completions commit before reading CPU and memory.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let result = RateResult {
        rate,
        idle_rss,
        peak_rss: proc_status_mib(emitter.pid(), "VmHWM"),
        cpu_ms_per_1k: (cpu_seconds(emitter.pid()) - cpu0) * 1e6 / work.events as f64,
        redis_cpu_ms_per_1k: (cpu_seconds(redis.child.id()) - redis_cpu0) * 1e6
            / work.events as f64,
        body_bytes: receiver.mean_body_bytes(),
        duplicates: receiver.duplicates(),
        machine_busy,
    };
    receiver.check_signatures();
    emitter.stop();
    result
}

#[derive(Default, Clone, Copy)]
struct Latency {
    p50: f64,
    p99: f64,
    max: f64,
    samples: usize,
}

/// Fixed rates (100/s, then 1 000/s), each with 1 s of warm-up; latency in ms.
async fn latency_run(
    redis: &RedisServer,
    conn: &mut MultiplexedConnection,
    max_in_flight: usize,
    secs: u64,
    run: &str,
) -> Vec<Latency> {
    reset_redis(conn).await;
    let receiver = Receiver::start(0);
    let mut emitter = Emitter::start(redis, &receiver.url(), max_in_flight, "");
    emitter.wait_ready(conn).await;
    let work = Workload {
        events: usize::MAX / 2,
        sandboxes: 1_000,
    };
    let mut out = Vec::new();
    let mut offset = 0;
    for rate in [100.0, 1_000.0] {
        offset += write_paced(conn, run, work, rate, 1.0, offset).await;
        let from = jiff::Timestamp::now().as_microsecond();
        offset += write_paced(conn, run, work, rate, secs as f64, offset).await;
        let to = jiff::Timestamp::now().as_microsecond();
        tokio::task::block_in_place(|| receiver.wait_for(offset, "latency run"));
        let mut ms: Vec<f64> = receiver
            .stats
            .latencies
            .lock()
            .expect("latencies")
            .iter()
            .filter(|(w, _)| (from..=to).contains(w))
            .map(|(_, l)| *l as f64 / 1000.0)
            .collect();
        ms.sort_by(f64::total_cmp);
        out.push(Latency {
            p50: percentile(&ms, 50.0),
            p99: percentile(&ms, 99.0),
            max: ms.last().copied().unwrap_or(f64::NAN),
            samples: ms.len(),
        });
    }
    receiver.check_signatures();
    emitter.stop();
    out
}

#[derive(Default, Clone)]
struct BacklogResult {
    events: usize,
    ingest_secs: f64,
    rss_backlog: f64,
    rss_after_drain: f64,
    drain_secs: f64,
    depth_seen: u64,
}

/// Receiver down while `events` are written; RSS once all are in the outbox; then the receiver
/// starts and the drain is timed. Retries every second (`[retry] schedule = ["1s"]`).
async fn backlog_run(
    redis: &RedisServer,
    conn: &mut MultiplexedConnection,
    events: usize,
    max_in_flight: usize,
) -> BacklogResult {
    reset_redis(conn).await;
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}{ENDPOINT_PATH}");
    let config = "[retry]\nschedule = [\"1s\"]\n";
    let mut emitter = Emitter::start(redis, &url, max_in_flight, config);
    emitter.wait_ready(conn).await;
    let work = Workload {
        events,
        sandboxes: 10_000.min(events),
    };
    let (first, last_id) = write_burst(conn, "b", work).await;
    // All read into the outbox = the group has handed out the last entry and every entry is
    // pending (acknowledged only once delivered; the receiver is down).
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Some((delivered, pending)) = group_progress(conn).await
            && delivered == last_id
            && pending == events
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the backlog was not committed:\n{}",
            emitter.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let ingest_secs = first.elapsed().as_secs_f64();
    let depth_seen = tokio::task::block_in_place(|| emitter.outbox_depth());
    // Let a few retry rounds go by with the whole backlog on disk.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let rss_backlog = proc_status_mib(emitter.pid(), "VmHWM");
    let start = Instant::now();
    let receiver = Receiver::start(port);
    let last = tokio::task::block_in_place(|| receiver.wait_for(events, "backlog drain"));
    let drain_secs = last.duration_since(start).as_secs_f64();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let rss_after_drain = proc_status_mib(emitter.pid(), "VmHWM");
    receiver.check_signatures();
    emitter.stop();
    BacklogResult {
        events,
        ingest_secs,
        rss_backlog,
        rss_after_drain,
        drain_secs,
        depth_seen,
    }
}

// ---------------------------------------------------------------------------------------------
// Main
// ---------------------------------------------------------------------------------------------

fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name")?.split_once(':'))
        .map_or("unknown CPU".to_owned(), |(_, m)| m.trim().to_owned());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mem = std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        .map_or(String::new(), |kb| {
            format!(", {:.0} GiB RAM", kb / 1024.0 / 1024.0)
        });
    format!("{cores} cores, {model}{mem}")
}

fn verdict(ok: bool) -> &'static str {
    if ok { "✅" } else { "❌" }
}

fn main() {
    let settings = Settings::from_env();
    let started = Instant::now();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("bench")
        .enable_all()
        .build()
        .expect("the benchmark's runtime");
    let redis = RedisServer::start();
    let mif = settings.max_in_flight;
    let runs = settings.runs;
    log(format!(
        "{} — {runs} runs, {} events per rate run, max-in-flight {mif}",
        machine(),
        settings.events
    ));

    let mut ceiling = Vec::new();
    let mut ceiling_busy = Vec::new();
    let mut ceiling_bytes = f64::NAN;
    let mut rates: Vec<(usize, usize, Vec<RateResult>)> = Vec::new();
    let mut latencies: Vec<Vec<Latency>> = Vec::new();
    let mut backlog: Option<BacklogResult> = None;

    runtime.block_on(async {
        let mut conn = redis.connect().await;
        if settings.wants("ceiling") {
            for r in 0..runs {
                let (rate, bytes, busy) = ceiling_run(settings.events, mif).await;
                log(format!(
                    "ceiling run {}: {rate:.0} requests/s ({bytes:.0}-byte bodies), machine CPU {busy:.0} % busy",
                    r + 1
                ));
                ceiling.push(rate);
                ceiling_busy.push(busy);
                ceiling_bytes = bytes;
            }
        }
        if settings.wants("rate") {
            for sandboxes in [10_000, 100, 1] {
                let events = if sandboxes == 1 {
                    (settings.events / 4).max(1)
                } else {
                    settings.events
                };
                let work = Workload { events, sandboxes };
                let mut results = Vec::new();
                for r in 0..runs {
                    let result =
                        rate_run(&redis, &mut conn, work, mif, &format!("r{sandboxes}x{r}")).await;
                    log(format!(
                        "rate run {sandboxes} sandboxes #{}: {:.0} events/s, idle {:.1} MiB, peak {:.1} MiB, {:.0} CPU-ms per 1 000 events, machine CPU {:.0} % busy",
                        r + 1,
                        result.rate,
                        result.idle_rss,
                        result.peak_rss,
                        result.cpu_ms_per_1k,
                        result.machine_busy
                    ));
                    results.push(result);
                }
                rates.push((sandboxes, events, results));
            }
        }
        if settings.wants("latency") {
            for r in 0..runs {
                let result =
                    latency_run(&redis, &mut conn, mif, settings.latency_secs, &format!("l{r}"))
                        .await;
                for (rate, l) in [100, 1000].iter().zip(&result) {
                    log(format!(
                        "latency run #{} at {rate}/s: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms ({} events)",
                        r + 1,
                        l.p50,
                        l.p99,
                        l.max,
                        l.samples
                    ));
                }
                latencies.push(result);
            }
        }
        if settings.wants("backlog") {
            let result = backlog_run(&redis, &mut conn, settings.backlog, mif).await;
            log(format!(
                "backlog: {} events committed in {:.1} s, outbox depth {}, peak RSS {:.1} MiB; drained in {:.1} s; peak RSS after drain {:.1} MiB",
                result.events,
                result.ingest_secs,
                result.depth_seen,
                result.rss_backlog,
                result.drain_secs,
                result.rss_after_drain
            ));
            backlog = Some(result);
        }
    });
    drop(redis);

    // ------------------------------------------------------------------ the table
    let mut t = String::new();
    let _ = writeln!(
        t,
        "\n## e2b-webhook-emitter pipeline benchmark\n\n{}; {runs} run(s) per row: median (min–max).\nmax-in-flight {mif}; outbox fsync on every commit; Redis and receiver on loopback.\n",
        machine()
    );
    let ceiling_median = Spread::of(&ceiling).map(|s| s.median);
    if !ceiling.is_empty() || !rates.is_empty() {
        let _ = writeln!(
            t,
            "### Throughput\n\n| what | events | events/s | × ceiling | peak RSS (MiB) | emitter CPU-ms / 1 000 events | redis CPU-ms / 1 000 events | machine CPU busy |\n|---|---:|---:|---:|---:|---:|---:|---:|"
        );
        if !ceiling.is_empty() {
            let _ = writeln!(
                t,
                "| loopback ceiling: reqwest, {mif} connections, {ceiling_bytes:.0}-byte signed body | {} | {} | 1.00 | – | – | – | {} % |",
                num(settings.events as f64, 0),
                show(&ceiling, 0),
                show(&ceiling_busy, 0)
            );
        }
        for (sandboxes, events, results) in &rates {
            let rate: Vec<f64> = results.iter().map(|r| r.rate).collect();
            let ratio = ceiling_median.map_or("n/a".to_owned(), |c| {
                show(&rate.iter().map(|r| r / c).collect::<Vec<_>>(), 2)
            });
            let peak: Vec<f64> = results.iter().map(|r| r.peak_rss).collect();
            let cpu: Vec<f64> = results.iter().map(|r| r.cpu_ms_per_1k).collect();
            let rcpu: Vec<f64> = results.iter().map(|r| r.redis_cpu_ms_per_1k).collect();
            let bytes = results.first().map_or(0.0, |r| r.body_bytes);
            let dups: u64 = results.iter().map(|r| r.duplicates).sum();
            let busy: Vec<f64> = results.iter().map(|r| r.machine_busy).collect();
            let _ = writeln!(
                t,
                "| end to end, {} sandbox{} ({bytes:.0}-byte bodies{}) | {} | {} | {ratio} | {} | {} | {} | {} % |",
                num(*sandboxes as f64, 0),
                if *sandboxes == 1 { "" } else { "es" },
                if dups > 0 {
                    format!(", {dups} repeats")
                } else {
                    String::new()
                },
                num(*events as f64, 0),
                show(&rate, 0),
                show(&peak, 1),
                show(&cpu, 0),
                show(&rcpu, 0),
                show(&busy, 0),
            );
        }
    }
    if !latencies.is_empty() {
        let _ = writeln!(
            t,
            "\n### Latency: event written to Redis → signed delivery received ({} s per rate, after 1 s warm-up; 1 000 sandboxes)\n\n| rate | events per run | p50 (ms) | p99 (ms) | max (ms) |\n|---:|---:|---:|---:|---:|",
            settings.latency_secs
        );
        for (i, rate) in ["100/s", "1 000/s"].iter().enumerate() {
            let pick = |f: fn(&Latency) -> f64| -> Vec<f64> {
                latencies.iter().filter_map(|r| r.get(i)).map(f).collect()
            };
            let samples = latencies
                .first()
                .and_then(|r| r.get(i))
                .map_or(0, |l| l.samples);
            let _ = writeln!(
                t,
                "| {rate} | {} | {} | {} | {} |",
                num(samples as f64, 0),
                show(&pick(|l| l.p50), 2),
                show(&pick(|l| l.p99), 2),
                show(&pick(|l| l.max), 2)
            );
        }
    }
    let idle: Vec<f64> = rates
        .iter()
        .flat_map(|(_, _, r)| r.iter().map(|r| r.idle_rss))
        .collect();
    let _ = writeln!(
        t,
        "\n### Memory and backlog\n\n| measure | result | target |\n|---|---:|---|"
    );
    if let Some(s) = Spread::of(&idle) {
        let _ = writeln!(
            t,
            "| peak RSS idle (VmHWM: started, Redis source consuming, nothing to do) | {} MiB | < 20 MiB {} |",
            s.show(1),
            verdict(s.max < 20.0)
        );
    }
    if let Some((_, _, results)) = rates.iter().find(|(s, _, _)| *s == 10_000) {
        let peak: Vec<f64> = results.iter().map(|r| r.peak_rss).collect();
        let _ = writeln!(
            t,
            "| peak RSS under load (10 000 sandboxes, full speed) | {} MiB | – |",
            show(&peak, 1)
        );
    }
    if let Some(b) = &backlog {
        let _ = writeln!(
            t,
            "| peak RSS with a {}-event backlog (receiver down, `status` depth {}) | {:.1} MiB | < 64 MiB {} |",
            num(b.events as f64, 0),
            num(b.depth_seen as f64, 0),
            b.rss_backlog,
            verdict(b.rss_backlog < 64.0)
        );
        let _ = writeln!(
            t,
            "| backlog written to Redis → committed to the outbox (receiver down) | {:.1} s ({} events/s) | – |",
            b.ingest_secs,
            num(b.events as f64 / b.ingest_secs, 0)
        );
        let _ = writeln!(
            t,
            "| backlog drain: receiver up → all {} delivered (retry schedule 1 s) | {:.1} s ({} events/s) | – |",
            num(b.events as f64, 0),
            b.drain_secs,
            num(b.events as f64 / b.drain_secs, 0)
        );
        let _ = writeln!(
            t,
            "| peak RSS including the drain | {:.1} MiB | – |",
            b.rss_after_drain
        );
    }
    let mut targets = Vec::new();
    if let (Some(c), Some((_, _, results))) =
        (ceiling_median, rates.iter().find(|(s, _, _)| *s == 10_000))
    {
        let rate = Spread::of(&results.iter().map(|r| r.rate).collect::<Vec<_>>())
            .map_or(0.0, |s| s.median);
        targets.push(format!(
            "end-to-end rate ≥ ½ ceiling: {:.2} × {}",
            rate / c,
            verdict(rate / c >= 0.5)
        ));
    }
    if let Some(p99) = Spread::of(
        &latencies
            .iter()
            .filter_map(|r| r.get(1))
            .map(|l| l.p99)
            .collect::<Vec<_>>(),
    ) {
        targets.push(format!(
            "p99 < 10 ms at 1 000/s: {:.2} ms {}",
            p99.median,
            verdict(p99.median < 10.0)
        ));
    }
    if !targets.is_empty() {
        let _ = writeln!(t, "\nTargets: {}.", targets.join("; "));
    }
    let _ = writeln!(
        t,
        "\nWhole benchmark (without the build): {:.0} s.",
        started.elapsed().as_secs_f64()
    );
    println!("{t}");
    let out = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench-pipeline.md");
    if std::fs::write(&out, &t).is_ok() {
        log(format!("table saved to {}", out.display()));
    }
}
