//! The phases: the loopback ceiling, rate runs, latency runs and the backlog run.

use crate::emitter::Emitter;
use crate::measure::{
    cpu_seconds, machine_busy_since, machine_jiffies, percentile, proc_status_mib,
};
use crate::receiver::Receiver;
use crate::redis_server::{RedisServer, group_progress, reset_redis};
use crate::workload::{Workload, event_json, write_burst, write_paced};
use crate::{ENDPOINT_PATH, PATIENCE, SECRET, free_port};
use axum::body::Bytes;
use e2b_webhook_emitter::deliver::format::{self, WireFormat};
use e2b_webhook_emitter::deliver::sign::SecretSet;
use e2b_webhook_emitter::event::SandboxEvent;
use redis::aio::MultiplexedConnection;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// The loopback ceiling: `conns` connections POSTing a signed body of the emitter's size to the
/// same receiver, `requests` in all. Returns (requests/s, body bytes, machine CPU busy %).
pub async fn ceiling_run(requests: usize, conns: usize) -> (f64, f64, f64) {
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
pub struct RateResult {
    pub rate: f64,
    pub idle_rss: f64,
    pub peak_rss: f64,
    pub cpu_ms_per_1k: f64,
    pub redis_cpu_ms_per_1k: f64,
    pub body_bytes: f64,
    pub duplicates: u64,
    pub machine_busy: f64,
}

/// Writes the whole workload at once; measures first write → last delivery.
pub async fn rate_run(
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
pub struct Latency {
    pub p50: f64,
    pub p99: f64,
    pub max: f64,
    pub samples: usize,
}

/// Fixed rates (100/s, then 1 000/s), each with 1 s of warm-up; latency in ms.
pub async fn latency_run(
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
pub struct BacklogResult {
    pub events: usize,
    pub ingest_secs: f64,
    pub rss_backlog: f64,
    pub rss_after_drain: f64,
    pub drain_secs: f64,
    pub depth_seen: u64,
}

/// Receiver down while `events` are written; RSS once all are in the outbox; then the receiver
/// starts and the drain is timed. Retries every second (`[retry] schedule = ["1s"]`).
pub async fn backlog_run(
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
