//! Issue 32: with `LOGS_COLLECTOR_ADDRESS`, the binary also POSTs its log lines as JSON to E2B's
//! logs collector, in batches, from a bounded queue that drops (and counts) what does not fit —
//! and never in the way of delivery. Through the real binary, a real Redis stream and a real
//! webhook receiver; the collector is a sink on a real socket that is slow, then down
//! (connection refused), then back.

mod common;
mod support;

use common::{TestReceiver, free_port, http_get, wait_until};
use serde_json::{Value, json};
use std::io::Write;
use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::redis::{RedisOptions, RedisServer};

const SECRET: &str = "whk-logship-secret-5d1e";
const URL_TOKEN: &str = "qtoken-logship-93ab";
const REDIS_PASSWORD: &str = "redis-logship-pass-71";
const TEAM: &str = "0b8b8a4e-6f4e-4c4a-9a57-3a2f5d3b1c2d";
/// Generous: a debug build on a loaded 2-core CI machine. A blocked delivery path would take
/// the collector's 10 s timeout per line, or forever.
const DELIVERY_BOUND: Duration = Duration::from_secs(15);

/// One POST the sink received.
#[derive(Debug, Clone)]
struct Post {
    path: String,
    content_type: String,
    lines: Vec<Value>,
    raw: String,
}

/// A logs collector on a real socket: answers 200 after `delay` (slow), or is not there at all.
struct Sink {
    port: u16,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Sink {
    fn start(port: u16, posts: Arc<Mutex<Vec<Post>>>, delay: Duration) -> Self {
        let listener = TcpListener::bind(("127.0.0.1", port)).expect("the sink's port is free");
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let delay_ms = Arc::new(AtomicU64::new(delay.as_millis() as u64));
        let stop = Arc::new(AtomicBool::new(false));
        let (p, d, s) = (posts.clone(), delay_ms.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::SeqCst) {
                let Ok((mut stream, _)) = listener.accept() else {
                    std::thread::sleep(Duration::from_millis(10));
                    continue;
                };
                stream.set_nonblocking(false).unwrap();
                let (p, d) = (p.clone(), d.clone());
                std::thread::spawn(move || {
                    let Some(request) = common::read_request(&mut stream) else {
                        return;
                    };
                    std::thread::sleep(Duration::from_millis(d.load(Ordering::SeqCst)));
                    let raw = String::from_utf8(request.body).expect("log lines are UTF-8");
                    let lines = raw
                        .lines()
                        .map(|l| {
                            serde_json::from_str(l)
                                .unwrap_or_else(|e| panic!("not JSON ({e}): {l}"))
                        })
                        .collect();
                    p.lock().unwrap().push(Post {
                        path: request.path,
                        content_type: request
                            .headers
                            .get("content-type")
                            .cloned()
                            .unwrap_or_default(),
                        lines,
                        raw,
                    });
                    // One request per connection: closing the listener then refuses every
                    // next attempt (no pooled connection outlives the sink).
                    let _ = stream.write_all(
                        b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                    );
                });
            }
            // The listener is dropped here: connections are refused from now on.
        });
        Self {
            port,
            stop,
            thread: Some(thread),
        }
    }

    /// Closes the listening socket: the next connection is refused.
    fn down(mut self) -> u16 {
        self.stop.store(true, Ordering::SeqCst);
        self.thread.take().unwrap().join().unwrap();
        self.port
    }
}

fn xadd_events(conn: &mut redis::Connection, prefix: &str, n: usize) -> Vec<String> {
    (0..n)
        .map(|i| {
            let id = uuid::Uuid::new_v4().to_string();
            let event = json!({
                "id": id, "version": "v2", "type": "sandbox.lifecycle.created",
                "timestamp": jiff::Timestamp::now().to_string(),
                "event_category": "lifecycle", "event_label": "create",
                "sandbox_id": format!("{prefix}-{i}"), "sandbox_execution_id": "exec-1",
                "sandbox_template_id": "base", "sandbox_build_id": "build-1",
                "sandbox_team_id": TEAM,
            });
            let _: String = redis::cmd("XADD")
                .arg("sandbox.events.stream")
                .arg("*")
                .arg("payload")
                .arg(event.to_string())
                .query(conn)
                .unwrap();
            id
        })
        .collect()
}

/// Waits until the receiver has every one of `ids`; fails past [`DELIVERY_BOUND`].
fn delivered_within_bound(receiver: &TestReceiver, ids: &[String], phase: &str) -> Duration {
    let start = Instant::now();
    loop {
        let got = receiver.deliveries();
        if ids.iter().all(|id| got.iter().any(|d| &d.event_id == id)) {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < DELIVERY_BOUND,
            "{phase}: {} of {} events delivered after {DELIVERY_BOUND:?}",
            ids.iter()
                .filter(|id| got.iter().any(|d| &d.event_id == *id))
                .count(),
            ids.len()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn dropped(port: u16) -> u64 {
    let (status, page) = http_get(port, "/metrics");
    assert_eq!(status, 200);
    page.lines()
        .find_map(|l| l.strip_prefix("e2b_webhook_log_lines_dropped_total "))
        .expect("the dropped-lines counter is exported")
        .trim()
        .parse::<f64>()
        .unwrap() as u64
}

fn healthz_answers_quickly(port: u16, phase: &str) {
    let start = Instant::now();
    let (status, _) = http_get(port, "/healthz");
    assert_eq!(status, 200, "{phase}: /healthz");
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "{phase}: /healthz took {:?}",
        start.elapsed()
    );
}

#[test]
fn log_lines_reach_a_slow_then_down_then_back_collector_in_batches_without_touching_delivery() {
    let redis = RedisServer::start_with(RedisOptions {
        password: Some(REDIS_PASSWORD.to_owned()),
        ..RedisOptions::default()
    });
    let receiver = TestReceiver::start(0, SECRET, Arc::new(|_, _, _| 200));
    let posts = Arc::new(Mutex::new(Vec::new()));
    // Slow: every answer takes 0.8 s, so lines wait in the queue.
    let sink = Sink::start(0, posts.clone(), Duration::from_millis(800));
    let data = tempfile::tempdir().unwrap();
    let listen = free_port();
    let log = data.path().join("stderr.log");
    let _emitter = common::RunningEmitter::start_with_env(
        &[
            "--redis-url",
            &redis.url(),
            "--team-ids",
            TEAM,
            "--webhook-url",
            &format!("http://127.0.0.1:{}/hook?token={URL_TOKEN}", receiver.port),
            "--webhook-secret",
            SECRET,
            "--data-dir",
            data.path().join("d").to_str().unwrap(),
            "--listen",
            &format!("127.0.0.1:{listen}"),
        ],
        &[
            (
                "LOGS_COLLECTOR_ADDRESS",
                &format!("http://127.0.0.1:{}", sink.port),
            ),
            // Small, so that a collector that is down fills it within the test.
            ("LOGS_COLLECTOR_QUEUE", "32"),
            // A line per delivered event (the `debug` line of `deliver`).
            ("RUST_LOG", "info,e2b_webhook_emitter::deliver=debug"),
        ],
        log.clone(),
    );
    let mut conn = redis.connection();
    assert!(
        common::eventually(Duration::from_secs(30), || common::lease_active(listen)),
        "the emitter does not serve or hold the lease; its log:\n{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );

    // 1. Slow collector.
    let ids = xadd_events(&mut conn, "isb-slow", 30);
    let took = delivered_within_bound(&receiver, &ids, "slow collector");
    healthz_answers_quickly(listen, "slow collector");
    wait_until("lines reach the slow collector", || {
        (!posts.lock().unwrap().is_empty()).then_some(())
    });
    eprintln!("slow collector: 30 events delivered in {took:?}");

    // 2. Collector down: connection refused. Delivery goes on; lines are dropped and counted.
    let port = sink.down();
    let before = dropped(listen);
    let received_before_down = posts.lock().unwrap().len();
    let ids = xadd_events(&mut conn, "isb-down", 80);
    let took = delivered_within_bound(&receiver, &ids, "collector down");
    healthz_answers_quickly(listen, "collector down");
    let after = wait_until(
        "the dropped counter rises while the collector is down",
        || {
            let now = dropped(listen);
            (now > before).then_some(now)
        },
    );
    eprintln!("collector down: 80 events delivered in {took:?}; dropped {before} → {after}");
    // The shipper has met the refused connection (said once, on stderr only) before the
    // collector comes back.
    wait_until("the shipper meets a refused connection", || {
        std::fs::read_to_string(&log)
            .unwrap()
            .contains("cannot ship log lines to the logs collector")
            .then_some(())
    });
    let ids = xadd_events(&mut conn, "isb-still-down", 20);
    delivered_within_bound(&receiver, &ids, "collector still down");

    // 3. Back, and fast: what waited in the queue arrives, then new lines.
    let _sink = Sink::start(port, posts.clone(), Duration::ZERO);
    wait_until(
        "the lines that waited reach the collector once it is back",
        || (posts.lock().unwrap().len() > received_before_down).then_some(()),
    );
    let ids = xadd_events(&mut conn, "isb-back", 10);
    delivered_within_bound(&receiver, &ids, "collector back");
    wait_until(
        "the lines of events delivered after the collector came back arrive",
        || {
            posts
                .lock()
                .unwrap()
                .iter()
                .any(|p| p.raw.contains("isb-back-"))
                .then_some(())
        },
    );
    let posts = posts.lock().unwrap().clone();
    assert!(posts.len() > received_before_down);

    // Every delivery was made, once each.
    assert!(receiver.deliveries().iter().all(|d| d.signature_ok));

    // The requests: as E2B's services send them, to the address as given.
    for post in &posts {
        assert_eq!(post.path, "/");
        assert_eq!(post.content_type, "application/json");
        assert!(post.raw.ends_with('\n'));
        for line in &post.lines {
            assert_eq!(line["service"], "e2b-webhook-emitter", "{line}");
            assert_eq!(line["internal"], true, "{line}");
            assert!(line["pid"].as_u64().is_some(), "{line}");
            assert!(
                ["debug", "info", "warn", "error"].contains(&line["level"].as_str().unwrap()),
                "{line}"
            );
            assert!(line["message"].as_str().is_some(), "{line}");
            let at = line["timestamp"].as_str().unwrap();
            assert!(at.parse::<jiff::Timestamp>().is_ok(), "{at}");
        }
    }
    // Batches: some request carried several lines.
    let largest = posts.iter().map(|p| p.lines.len()).max().unwrap();
    assert!(largest > 1, "every request carried one line");
    // The startup line and a per-delivery line are there.
    let all: Vec<&Value> = posts.iter().flat_map(|p| &p.lines).collect();
    assert!(
        all.iter()
            .any(|l| l["level"] == "debug" && l.to_string().contains("isb-slow-"))
    );
    // The shipper's own complaints stay on stderr.
    assert!(!all.iter().any(|l| {
        l["message"]
            .as_str()
            .unwrap()
            .contains("cannot ship log lines")
    }));

    // No secret leaves the process in a shipped line.
    for post in &posts {
        for secret in [SECRET, URL_TOKEN, REDIS_PASSWORD] {
            assert!(
                !post.raw.contains(secret),
                "{secret} shipped in {}",
                post.raw
            );
        }
    }
}

#[test]
fn a_bad_address_exits_2_naming_the_setting() {
    for (var, value) in [
        ("LOGS_COLLECTOR_ADDRESS", "localhost:30006"),
        ("LOGS_COLLECTOR_QUEUE", "none"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let (code, _, stderr) = common::output(
            common::emitter()
                .arg("run")
                .args([
                    "--webhook-url",
                    "http://127.0.0.1:9/",
                    "--webhook-secret",
                    SECRET,
                ])
                .args(["--data-dir", dir.path().to_str().unwrap()])
                .env("LOGS_COLLECTOR_ADDRESS", "http://127.0.0.1:9")
                .env(var, value),
        );
        assert_eq!(code, 2, "{stderr}");
        assert!(stderr.starts_with(&format!("error: {var}")), "{stderr}");
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
    }
}
