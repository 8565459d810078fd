//! Issue 7: metrics move with deliveries, graceful SIGTERM, no secret in logs, `status`.

mod common;
mod support;

use common::{
    RunningEmitter, TestReceiver, emitter, eventually, free_port, http_get, lifecycle_ndjson,
    output, wait_for_port,
};
use std::sync::Arc;
use std::time::{Duration, Instant};

const SECRET: &str = "ops-secret-4f1c2b9a8e7d6c5b4a39281706f5e4d3";

/// The sum of every sample of `name` whose labels contain all of `labels`.
fn metric(page: &str, name: &str, labels: &[&str]) -> f64 {
    page.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.split(['{', ' ']).next() == Some(name))
        .filter(|l| labels.iter().all(|want| l.contains(want)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[test]
fn metrics_count_deliveries_retries_and_dead_letters_while_events_flow() {
    let dir = tempfile::tempdir().unwrap();
    let (events, expected) = lifecycle_ndjson(10, 4);
    let file = dir.path().join("events.ndjson");
    std::fs::write(&file, events).unwrap();
    let config = dir.path().join("c.toml");
    std::fs::write(
        &config,
        "[retry]\nschedule = [\"100ms\"]\nmax_age = \"2s\"\n",
    )
    .unwrap();
    // First attempts fail for sandbox isb00002; isb00009 is always refused (dead letters).
    let receiver = TestReceiver::start(
        0,
        SECRET,
        Arc::new(
            |_: &str, sandbox: &str, attempt: u32| match (sandbox, attempt) {
                ("isb00009", _) => 500,
                ("isb00002", 1) => 503,
                _ => 200,
            },
        ),
    );
    let port = free_port();
    let running = RunningEmitter::start(
        &[
            "--webhook-url",
            &format!("http://127.0.0.1:{}/", receiver.port),
            "--webhook-secret",
            SECRET,
            "--config",
            config.to_str().unwrap(),
            "--data-dir",
            dir.path().join("d").to_str().unwrap(),
            "--events-file",
            file.to_str().unwrap(),
            "--listen",
            &format!("127.0.0.1:{port}"),
        ],
        dir.path().join("log"),
    );
    wait_for_port(port, Duration::from_secs(10));
    let total: usize = expected.values().map(Vec::len).sum();
    let delivered_ok = total - 4;
    let page = || http_get(port, "/metrics").1;
    assert!(
        eventually(Duration::from_secs(30), || metric(
            &page(),
            "e2b_webhook_dead_letters_total",
            &[]
        ) >= 1.0
            && metric(
                &page(),
                "e2b_webhook_deliveries_total",
                &["outcome=\"delivered\""]
            ) >= delivered_ok as f64),
        "{}",
        page()
    );
    let p = page();
    assert_eq!(
        metric(
            &p,
            "e2b_webhook_events_received_total",
            &["source=\"file\""]
        ),
        total as f64
    );
    assert_eq!(
        metric(&p, "e2b_webhook_events_received_total", &["type=\"kill\""]),
        10.0
    );
    assert_eq!(
        metric(
            &p,
            "e2b_webhook_deliveries_total",
            &["outcome=\"delivered\"", "endpoint=\"default\""]
        ),
        delivered_ok as f64
    );
    assert!(
        metric(
            &p,
            "e2b_webhook_deliveries_total",
            &["outcome=\"rejected\""]
        ) >= 3.0,
        "{p}"
    );
    assert!(metric(&p, "e2b_webhook_retries_total", &[]) >= 2.0, "{p}");
    assert!(
        metric(&p, "e2b_webhook_delivery_latency_seconds_count", &[]) >= delivered_ok as f64,
        "{p}"
    );
    // The refused sandbox's first event is dead, the next one waits behind it and dies too.
    assert!(
        eventually(Duration::from_secs(20), || metric(
            &page(),
            "e2b_webhook_dead_letters_total",
            &[]
        ) == 4.0),
        "{}",
        page()
    );
    assert!(
        eventually(Duration::from_secs(10), || metric(
            &page(),
            "e2b_webhook_outbox_depth",
            &["endpoint=\"default\""]
        ) == 0.0),
        "{}",
        page()
    );
    let (code, health) = http_get(port, "/healthz");
    assert_eq!(code, 200, "{health}");
    let (code, ready) = http_get(port, "/readyz");
    assert_eq!(code, 200, "{ready}");
    let (code, status) = http_get(port, "/status");
    assert_eq!(code, 200);
    let status: serde_json::Value = serde_json::from_str(&status).unwrap();
    assert_eq!(status["dead_letters"], 4);
    // The `status` command reads the same data directory while the service runs.
    let (code, out, err) = output(emitter().args([
        "status",
        "--data-dir",
        dir.path().join("d").to_str().unwrap(),
    ]));
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("4 dead letters") && out.contains("endpoint default: 0 pending"),
        "{out}"
    );
    assert!(!p.contains(SECRET));
    drop(running);
}

#[test]
fn sigterm_drains_in_flight_deliveries_exits_zero_and_a_restart_delivers_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let (events, expected) = lifecycle_ndjson(40, 5);
    let file = dir.path().join("events.ndjson");
    std::fs::write(&file, events).unwrap();
    let receiver = TestReceiver::start_slow(
        0,
        SECRET,
        Arc::new(|_: &str, _: &str, _: u32| 200),
        Duration::from_millis(300),
    );
    let url = format!("http://127.0.0.1:{}/", receiver.port);
    let data = dir.path().join("d");
    let args = [
        "--webhook-url",
        url.as_str(),
        "--webhook-secret",
        SECRET,
        "--data-dir",
        data.to_str().unwrap(),
        "--events-file",
        file.to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
        "--max-in-flight",
        "8",
    ];
    let mut running = RunningEmitter::start(&args, dir.path().join("log"));
    assert!(eventually(Duration::from_secs(20), || receiver
        .deliveries()
        .len()
        >= 16));
    let requests_before = receiver.requests.load(std::sync::atomic::Ordering::SeqCst);
    let started = Instant::now();
    running.signal(nix::sys::signal::Signal::SIGTERM);
    let status = running.child.wait().unwrap();
    assert!(
        status.success(),
        "exit status {status:?}; log: {}",
        running.log_text()
    );
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "within the drain deadline"
    );
    let log = running.log_text();
    assert!(log.contains("stopping"), "{log}");
    // Requests in flight at SIGTERM were allowed to finish (answered, not cut off).
    assert!(
        receiver.deliveries().len()
            >= requests_before.min(receiver.requests.load(std::sync::atomic::Ordering::SeqCst)) - 1
    );
    let total: usize = expected.values().map(Vec::len).sum();
    assert!(
        receiver.deliveries().len() < total,
        "the test stops mid-stream"
    );
    let _second = RunningEmitter::start(&args, dir.path().join("log2"));
    assert!(eventually(Duration::from_secs(60), || {
        let ids: std::collections::HashSet<String> = receiver
            .deliveries()
            .into_iter()
            .map(|d| d.event_id)
            .collect();
        ids.len() == total
    }));
}

#[test]
fn a_second_signal_exits_at_once_and_nothing_committed_is_lost() {
    let dir = tempfile::tempdir().unwrap();
    let (events, expected) = lifecycle_ndjson(10, 2);
    let file = dir.path().join("events.ndjson");
    std::fs::write(&file, events).unwrap();
    // A receiver that hangs far longer than the drain deadline.
    let hang = TestReceiver::start_slow(
        0,
        SECRET,
        Arc::new(|_: &str, _: &str, _: u32| 200),
        Duration::from_secs(60),
    );
    let url = format!("http://127.0.0.1:{}/", hang.port);
    let data = dir.path().join("d");
    let args = [
        "--webhook-url",
        url.as_str(),
        "--webhook-secret",
        SECRET,
        "--data-dir",
        data.to_str().unwrap(),
        "--events-file",
        file.to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
    ];
    let mut running = RunningEmitter::start(&args, dir.path().join("log"));
    assert!(eventually(Duration::from_secs(10), || hang
        .requests
        .load(std::sync::atomic::Ordering::SeqCst)
        >= 5));
    running.signal(nix::sys::signal::Signal::SIGTERM);
    std::thread::sleep(Duration::from_millis(300));
    let started = Instant::now();
    running.signal(nix::sys::signal::Signal::SIGTERM);
    let status = running.child.wait().unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "a second signal exits at once"
    );
    assert!(!status.success());
    hang.stop();
    let receiver = TestReceiver::start(0, SECRET, Arc::new(|_: &str, _: &str, _: u32| 200));
    let url = format!("http://127.0.0.1:{}/", receiver.port);
    let args2 = [
        "--webhook-url",
        url.as_str(),
        "--webhook-secret",
        SECRET,
        "--data-dir",
        data.to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
    ];
    let _again = RunningEmitter::start(&args2, dir.path().join("log2"));
    let total: usize = expected.values().map(Vec::len).sum();
    assert!(
        eventually(Duration::from_secs(30), || receiver.deliveries().len()
            >= total),
        "{} of {total}",
        receiver.deliveries().len()
    );
}

#[test]
fn logs_of_a_full_run_never_contain_a_secret() {
    let dir = tempfile::tempdir().unwrap();
    let (events, _) = lifecycle_ndjson(3, 3);
    let file = dir.path().join("events.ndjson");
    std::fs::write(&file, events).unwrap();
    let receiver = TestReceiver::start(
        0,
        SECRET,
        Arc::new(|_: &str, sandbox: &str, attempt: u32| {
            if sandbox == "isb00001" && attempt < 3 {
                401
            } else {
                200
            }
        }),
    );
    let config = dir.path().join("c.toml");
    std::fs::write(&config, "[retry]\nschedule = [\"50ms\"]\n").unwrap();
    let redis_password = "redis-pass-9b8a7c6d5e4f";
    // A real Redis behind the password: with Redis, only the lease holder delivers.
    let redis = support::redis::RedisServer::start_with(support::redis::RedisOptions {
        password: Some(redis_password.to_owned()),
        ..support::redis::RedisOptions::default()
    });
    let nomad_token = "nomad-token-1a2b3c4d5e6f";
    let port = free_port();
    let running = RunningEmitter::start(
        &[
            "--webhook-url",
            &format!(
                "http://user:basic-pass-xyz@127.0.0.1:{}/hook",
                receiver.port
            ),
            "--webhook-secret",
            SECRET,
            "--config",
            config.to_str().unwrap(),
            "--data-dir",
            dir.path().join("d").to_str().unwrap(),
            "--events-file",
            file.to_str().unwrap(),
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--redis-url",
            &format!("redis://:{redis_password}@127.0.0.1:{}/0", redis.port()),
            "--nomad-addr",
            &format!("http://127.0.0.1:{}", free_port()),
            "--nomad-token",
            nomad_token,
            "--log-format",
            "json",
        ],
        dir.path().join("log"),
    );
    wait_for_port(port, Duration::from_secs(10));
    assert!(
        eventually(Duration::from_secs(20), || receiver.deliveries().len() == 9),
        "{}",
        running.log_text()
    );
    std::thread::sleep(Duration::from_secs(1));
    let (_, metrics) = http_get(port, "/metrics");
    let (_, ready) = http_get(port, "/readyz");
    running.signal(nix::sys::signal::Signal::SIGTERM);
    let mut running = running;
    running.child.wait().unwrap();
    let log = running.log_text();
    assert!(log.lines().count() > 10, "a full run logs: {log}");
    for line in log.lines() {
        serde_json::from_str::<serde_json::Value>(line)
            .unwrap_or_else(|e| panic!("JSON log line ({e}): {line}"));
    }
    assert!(
        log.contains("\"status\":\"401\""),
        "retries are logged: {log}"
    );
    for secret in [SECRET, redis_password, nomad_token, "basic-pass-xyz"] {
        assert!(!log.contains(secret), "{secret} leaked into the logs");
        assert!(
            !metrics.contains(secret) && !ready.contains(secret),
            "{secret} leaked into metrics or readiness"
        );
    }
}
