//! The phases: the loopback ceiling, rate runs, latency runs and the backlog run.

use crate::emitter::{Emitter, Launch};
use crate::measure::{
    cpu_seconds, disk_bytes_written, machine_busy_since, machine_jiffies, percentile,
    proc_status_mib, thread_cpu_seconds, us_per_event,
};
use crate::receiver::{Check, Receiver};
use crate::redis_server::{RedisServer, reset_redis};
use crate::settings::Settings;
use crate::syncs::SyncCount;
use crate::tls::PrivateCa;
use crate::wakeups::{context_switches, cpu_us_per_wakeup};
use crate::workload::{Workload, event_json, write_burst, write_paced};
use crate::{ENDPOINT_PATH, SECRET};
use axum::body::Bytes;
use e2b_webhook_emitter::deliver::format::{self, WireFormat};
use e2b_webhook_emitter::deliver::sign::SecretSet;
use e2b_webhook_emitter::event::SandboxEvent;
use redis::aio::MultiplexedConnection;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// The loopback ceiling: `conns` connections POSTing a signed body of the emitter's size to the
/// same receiver, `requests` in all; over TLS when `tls` is given (reqwest's rustls, trusting the
/// CA, as the emitter does). Returns (requests/s, body bytes, machine CPU busy %).
pub async fn ceiling_run(
    requests: usize,
    conns: usize,
    tls: Option<&PrivateCa>,
) -> (f64, f64, f64) {
    let receiver = match tls {
        Some(ca) => Receiver::start_tls(
            Check::XE2bSignature,
            &[ENDPOINT_PATH],
            ca.server_config(LOOPBACK),
        ),
        None => Receiver::start(0),
    };
    let request = signed_request();
    let client = client_for(conns, tls);
    let url = receiver.url();
    let busy = machine_jiffies();
    let start = Instant::now();
    post_all(&client, &url, &request, conns, requests).await;
    let elapsed = start.elapsed();
    let busy = machine_busy_since(busy);
    receiver.check_signatures();
    let bytes = receiver.mean_body_bytes();
    drop(receiver);
    (requests as f64 / elapsed.as_secs_f64(), bytes, busy)
}

/// The client of the ceiling and floor runs: reqwest, as the emitter uses it, trusting `tls`'s CA.
fn client_for(conns: usize, tls: Option<&PrivateCa>) -> reqwest::Client {
    let mut client = reqwest::Client::builder()
        .pool_max_idle_per_host(conns)
        .tcp_nodelay(true);
    if let Some(ca) = tls {
        client = client.add_root_certificate(
            reqwest::Certificate::from_pem(ca.pem().as_bytes()).expect("the CA"),
        );
    }
    client.build().expect("a client")
}

/// A signed `X-E2B-Signature` request for one event, as the emitter renders it.
fn signed_request() -> format::SignedRequest {
    let json = event_json("c", 0, 1, 3, jiff::Timestamp::now());
    let event = SandboxEvent::parse(json.as_bytes()).expect("a valid event");
    let secrets = SecretSet::parse(SECRET).expect("a secret");
    format::render(
        WireFormat::XE2bSignature,
        &event,
        &format::EndpointIdentity::new("default"),
        &secrets,
        1,
        jiff::Timestamp::now(),
    )
}

/// `conns` tasks POSTing `request` to `url`, one request in flight each, `requests` in all.
async fn post_all(
    client: &reqwest::Client,
    url: &str,
    request: &format::SignedRequest,
    conns: usize,
    requests: usize,
) {
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..conns {
        let (client, url, next) = (client.clone(), url.to_owned(), next.clone());
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
}

/// The HTTP floor under the emitter's CPU per event: the ceiling's client alone on one thread
/// (its own current-thread runtime), with nothing else to do, against the same receiver. Its CPU
/// is read from `/proc/thread-self/stat`, counted as the emitter's is: user + system time,
/// including the loopback TCP work the kernel does on the sending thread. Returns (requests/s,
/// CPU-µs per request).
pub async fn floor_run(requests: usize, conns: usize) -> (f64, f64) {
    let receiver = Receiver::start(0);
    let (url, request) = (receiver.url(), signed_request());
    let client_thread = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("the client's runtime");
        runtime.block_on(async {
            let client = client_for(conns, None);
            // Connections are opened before the clock starts, as the emitter keeps them open.
            post_all(&client, &url, &request, conns, conns).await;
            let cpu = thread_cpu_seconds();
            let start = Instant::now();
            post_all(&client, &url, &request, conns, requests).await;
            (start.elapsed(), thread_cpu_seconds() - cpu)
        })
    });
    let (elapsed, cpu) = tokio::task::spawn_blocking(move || client_thread.join())
        .await
        .expect("the client's thread")
        .expect("the client's thread");
    receiver.check_signatures();
    drop(receiver);
    (
        requests as f64 / elapsed.as_secs_f64(),
        us_per_event(cpu, requests),
    )
}

#[derive(Default, Clone)]
pub struct RateResult {
    /// Events per second (each delivered to every endpoint).
    pub rate: f64,
    pub idle_rss: f64,
    /// Of the idle resident set, the anonymous part (heap, stacks): the rest is the executable's
    /// own pages, clean and shared with the page cache.
    pub idle_anon: f64,
    pub peak_rss: f64,
    /// CPU-ms per 1 000 events, which is also µs per event.
    pub cpu_ms_per_1k: f64,
    pub redis_cpu_ms_per_1k: f64,
    pub body_bytes: f64,
    pub duplicates: u64,
    pub machine_busy: f64,
    /// The standby's CPU from 1 s before the first write to the end, in % of one core (NaN
    /// without a standby).
    pub standby_cpu_pct: f64,
}

/// The address the TLS receiver's certificate is for.
const LOOPBACK: std::net::IpAddr = std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

/// The receiver's paths when the emitter has several endpoints.
const ENDPOINT_PATHS: [&str; 3] = ["/hooks/one", "/hooks/two", "/hooks/three"];

/// What a rate run runs besides the workload: the format and what the receiver checks, how many
/// endpoints, whether a standby instance runs next to the active one, whether the receiver
/// speaks TLS (with a certificate of a private CA the emitter gets as `--webhook-ca-file`).
#[derive(Clone, Copy)]
pub struct Setup {
    pub check: Check,
    pub format: Option<&'static str>,
    pub endpoints: usize,
    pub standby: bool,
    pub tls: bool,
}

impl Default for Setup {
    fn default() -> Self {
        Self {
            check: Check::XE2bSignature,
            format: None,
            endpoints: 1,
            standby: false,
            tls: false,
        }
    }
}

/// Writes the whole workload at once; measures first write → last delivery.
pub async fn rate_run(
    redis: &RedisServer,
    conn: &mut MultiplexedConnection,
    work: Workload,
    max_in_flight: usize,
    run: &str,
) -> RateResult {
    rate_run_with(redis, conn, work, max_in_flight, run, Setup::default()).await
}

/// [`rate_run`] with another format, several endpoints (from a config file: one `[[endpoints]]`
/// per receiver path, the run ends when every path got every event) or a standby instance.
pub async fn rate_run_with(
    redis: &RedisServer,
    conn: &mut MultiplexedConnection,
    work: Workload,
    max_in_flight: usize,
    run: &str,
    setup: Setup,
) -> RateResult {
    reset_redis(conn).await;
    let paths: &[&str] = if setup.endpoints > 1 {
        &ENDPOINT_PATHS[..setup.endpoints.min(ENDPOINT_PATHS.len())]
    } else {
        &[ENDPOINT_PATH]
    };
    let ca = setup.tls.then(|| PrivateCa::new("bench CA"));
    let receiver = match &ca {
        Some(ca) => Receiver::start_tls(setup.check, paths, ca.server_config(LOOPBACK)),
        None => Receiver::start_with(0, setup.check, paths),
    };
    let ca_dir = tempfile::tempdir().expect("a temporary directory");
    let mut launch = Launch::new(&receiver.url(), max_in_flight);
    launch.format = setup.format;
    if let Some(ca) = &ca {
        let file = ca_dir.path().join("ca.pem");
        std::fs::write(&file, ca.pem()).expect("writing the CA file");
        launch.ca_file = Some(file);
    }
    if paths.len() > 1 {
        launch.webhook_url = None;
        launch.config = (0..paths.len())
            .map(|i| {
                format!(
                    "[[endpoints]]\nid = \"bench-{i}\"\nurl = \"{}\"\nsecrets = [\"{SECRET}\"]\n\n",
                    receiver.url_of(i)
                )
            })
            .collect();
    }
    let mut emitter = Emitter::launch(redis, &launch);
    emitter.wait_active(conn).await;
    let standby = if setup.standby {
        let mut standby = Emitter::launch(
            redis,
            &Launch {
                consumer: "standby",
                ..launch.clone()
            },
        );
        standby.wait_ready(conn).await;
        assert!(
            !standby.is_leader().await,
            "the second instance took the lease from the active one"
        );
        Some(standby)
    } else {
        None
    };
    // The standby's CPU is read over the whole run, idle second included: it is small, and
    // /proc counts it in 10 ms ticks.
    let standby_cpu0 = standby
        .as_ref()
        .map(|s| (cpu_seconds(s.pid()), Instant::now()));
    tokio::time::sleep(Duration::from_secs(1)).await;
    let idle_rss = proc_status_mib(emitter.pid(), "VmHWM");
    let idle_anon = proc_status_mib(emitter.pid(), "RssAnon");
    let cpu0 = cpu_seconds(emitter.pid());
    let redis_cpu0 = cpu_seconds(redis.child.id());
    let busy = machine_jiffies();
    let (first, _) = write_burst(conn, run, work).await;
    let deliveries = work.events * paths.len();
    let last = tokio::task::block_in_place(|| receiver.wait_for(deliveries, "rate run"));
    assert!(
        receiver.per_path().iter().all(|n| *n == work.events),
        "not every endpoint got every event: {:?} of {}",
        receiver.per_path(),
        work.events
    );
    let machine_busy = machine_busy_since(busy);
    let rate = work.events as f64 / last.duration_since(first).as_secs_f64();
    // Let the last completions commit before reading CPU and memory.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let standby_cpu_pct = match (&standby, standby_cpu0) {
        (Some(s), Some((c0, t0))) => {
            100.0 * (cpu_seconds(s.pid()) - c0) / t0.elapsed().as_secs_f64()
        }
        _ => f64::NAN,
    };
    let result = RateResult {
        rate,
        idle_rss,
        idle_anon,
        peak_rss: proc_status_mib(emitter.pid(), "VmHWM"),
        cpu_ms_per_1k: us_per_event(cpu_seconds(emitter.pid()) - cpu0, work.events),
        redis_cpu_ms_per_1k: us_per_event(cpu_seconds(redis.child.id()) - redis_cpu0, work.events),
        body_bytes: receiver.mean_body_bytes(),
        duplicates: receiver.duplicates(),
        machine_busy,
        standby_cpu_pct,
    };
    receiver.check_signatures();
    if let Some(standby) = standby {
        standby.stop();
    }
    emitter.stop();
    result
}

#[derive(Default, Clone, Copy)]
pub struct Latency {
    pub p50: f64,
    pub p99: f64,
    pub max: f64,
    pub samples: usize,
    /// The emitter's CPU over the measured seconds, in % of one core: what an operator sizes for.
    pub cpu_pct: f64,
    /// The same per event, in µs.
    pub cpu_us_per_event: f64,
    /// What the emitter wrote to its disk per event, in KiB: with the rate, the write bandwidth
    /// an operator provisions.
    pub disk_kib_per_event: f64,
    /// `fdatasync` and `fsync` calls per event (`perf stat`; NaN when perf could not count).
    pub syncs_per_event: f64,
    /// The emitter's context switches per event, every thread: the wake-ups an event costs.
    pub switches_per_event: f64,
    /// What one wake-up costs on this host at the same pacing, in CPU µs ([`crate::wakeups`]).
    pub host_us_per_wakeup: f64,
}

/// Fixed rates (100/s, 1 000/s, then any extra ones), each with 1 s of warm-up; latency in ms.
pub async fn latency_run(
    redis: &RedisServer,
    conn: &mut MultiplexedConnection,
    max_in_flight: usize,
    settings: &Settings,
    run: &str,
) -> Vec<Latency> {
    let secs = settings.latency_secs;
    reset_redis(conn).await;
    let receiver = Receiver::start(0);
    let mut emitter = Emitter::start(redis, &receiver.url(), max_in_flight, "");
    emitter.wait_active(conn).await;
    let work = Workload {
        events: usize::MAX / 2,
        sandboxes: 1_000,
    };
    let mut out = Vec::new();
    let mut offset = 0;
    for rate in settings.latency_rates.iter().map(|r| f64::from(*r)) {
        offset += write_paced(conn, run, work, rate, 1.0, offset).await;
        // Attached before the window opens: perf takes a moment to.
        let syncs = tokio::task::block_in_place(|| SyncCount::start(emitter.pid()));
        let from = jiff::Timestamp::now().as_microsecond();
        let (cpu_from, wall_from) = (cpu_seconds(emitter.pid()), Instant::now());
        let disk_from = disk_bytes_written(emitter.pid());
        let switches_from = context_switches(emitter.pid());
        let written = write_paced(conn, run, work, rate, secs as f64, offset).await;
        offset += written;
        let to = jiff::Timestamp::now().as_microsecond();
        tokio::task::block_in_place(|| receiver.wait_for(offset, "latency run"));
        let syncs = tokio::task::block_in_place(|| syncs.and_then(SyncCount::stop));
        let cpu = cpu_seconds(emitter.pid()) - cpu_from;
        let disk = disk_bytes_written(emitter.pid()) - disk_from;
        let switches = context_switches(emitter.pid()) - switches_from;
        let wall = wall_from.elapsed().as_secs_f64();
        // Measured after the run, not during it, so the two do not share the CPU.
        let gap = Duration::from_secs_f64(1.0 / rate);
        let host_us_per_wakeup = tokio::task::block_in_place(|| cpu_us_per_wakeup(gap, 200));
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
            cpu_pct: 100.0 * cpu / wall,
            cpu_us_per_event: us_per_event(cpu, written),
            disk_kib_per_event: disk / 1024.0 / written as f64,
            syncs_per_event: syncs.map_or(f64::NAN, |n| n as f64 / written as f64),
            switches_per_event: switches / written as f64,
            host_us_per_wakeup,
        });
    }
    receiver.check_signatures();
    emitter.stop();
    out
}
