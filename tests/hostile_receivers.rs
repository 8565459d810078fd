//! Issue 14, finding 1: a receiver's answer cannot exhaust memory or outlive the attempt's
//! timeout — an endless chunked 200, a 100 MB 500 and a trickling body, through the binary.

mod common;

use common::{
    RunningEmitter, emitter, eventually, free_port, http_get, output, read_request, wait_for_port,
};
use std::io::Write;
use std::net::TcpListener;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

const SECRET: &str = "hostile-secret-5e4d3c2b1a09";

/// What a hostile receiver sends after reading a request: a head, then `body` until the client
/// goes away.
#[derive(Clone, Copy)]
enum Answer {
    /// `200`, chunked, 64 KiB chunks forever.
    EndlessChunked200,
    /// `500` announcing and sending 100 MB.
    Huge500,
    /// `500` announcing 1 MB, sending a byte every 100 ms.
    Trickling500,
}

struct Hostile {
    port: u16,
    requests: Arc<AtomicUsize>,
    bytes_sent: Arc<AtomicU64>,
}

fn hostile(answer: Answer) -> Hostile {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let requests = Arc::new(AtomicUsize::new(0));
    let bytes_sent = Arc::new(AtomicU64::new(0));
    let (reqs, sent) = (requests.clone(), bytes_sent.clone());
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let (reqs, sent) = (reqs.clone(), sent.clone());
            std::thread::spawn(move || {
                while read_request(&mut stream).is_some() {
                    reqs.fetch_add(1, Ordering::SeqCst);
                    let chunk = vec![b'x'; 64 * 1024];
                    let result = match answer {
                        Answer::EndlessChunked200 => (|| -> std::io::Result<()> {
                            stream.write_all(
                                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
                            )?;
                            loop {
                                stream.write_all(b"10000\r\n")?;
                                stream.write_all(&chunk)?;
                                stream.write_all(b"\r\n")?;
                                sent.fetch_add(chunk.len() as u64, Ordering::Relaxed);
                            }
                        })(),
                        Answer::Huge500 => (|| -> std::io::Result<()> {
                            let total = 100 * 1024 * 1024;
                            stream.write_all(
                                format!("HTTP/1.1 500 X\r\nContent-Length: {total}\r\n\r\n")
                                    .as_bytes(),
                            )?;
                            for _ in 0..total / chunk.len() {
                                stream.write_all(&chunk)?;
                                sent.fetch_add(chunk.len() as u64, Ordering::Relaxed);
                            }
                            Ok(())
                        })(),
                        Answer::Trickling500 => (|| -> std::io::Result<()> {
                            stream.write_all(
                                b"HTTP/1.1 500 X\r\nContent-Length: 1000000\r\n\r\nslow",
                            )?;
                            loop {
                                std::thread::sleep(Duration::from_millis(100));
                                stream.write_all(b"x")?;
                            }
                        })(),
                    };
                    if result.is_err() {
                        return;
                    }
                }
            });
        }
    });
    Hostile {
        port,
        requests,
        bytes_sent,
    }
}

/// The process's peak resident memory (`VmHWM`) in KiB.
fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in /proc/<pid>/status")
}

/// Ten sandboxes at once against `receiver`; returns the running emitter and its ops port.
fn run_against(receiver: &Hostile, dir: &std::path::Path, extra: &[&str]) -> (RunningEmitter, u16) {
    let events = dir.join("events.ndjson");
    std::fs::write(&events, common::lifecycle_ndjson(10, 2).0).unwrap();
    let port = free_port();
    let url = format!("http://127.0.0.1:{}/hook", receiver.port);
    let listen = format!("127.0.0.1:{port}");
    let mut args = vec![
        "--webhook-url",
        &url,
        "--webhook-secret",
        SECRET,
        "--data-dir",
        dir.join("d").to_str().unwrap(),
        "--events-file",
        events.to_str().unwrap(),
        "--listen",
        &listen,
    ]
    .into_iter()
    .map(str::to_owned)
    .collect::<Vec<_>>();
    args.extend(extra.iter().map(|a| (*a).to_owned()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let running = RunningEmitter::start(&args, dir.join("log"));
    wait_for_port(port, Duration::from_secs(10));
    (running, port)
}

/// Generous for a debug build at rest (~20–40 MB); reading one of these bodies whole costs more.
const PEAK_RSS_LIMIT_KIB: u64 = 96 * 1024;

#[test]
fn an_endless_chunked_200_is_delivered_at_once_with_flat_memory() {
    let receiver = hostile(Answer::EndlessChunked200);
    let dir = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let (running, port) = run_against(&receiver, dir.path(), &[]);
    // 20 events; each attempt ends after 64 KiB, long before the 10 s timeout.
    let done = eventually(Duration::from_secs(30), || {
        receiver.requests.load(Ordering::SeqCst) >= 20
            && serde_json::from_str::<serde_json::Value>(&http_get(port, "/status").1)
                .map(|s| s["endpoints"][0]["depth"] == 0)
                .unwrap_or(false)
    });
    let peak = peak_rss_kib(running.child.id());
    assert!(
        done,
        "{}\n{}",
        http_get(port, "/status").1,
        running.log_text()
    );
    assert_eq!(receiver.requests.load(Ordering::SeqCst), 20);
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "deliveries waited for the body: {:?}",
        started.elapsed()
    );
    assert!(
        peak < PEAK_RSS_LIMIT_KIB,
        "peak RSS {peak} KiB while the receiver sent {} MB",
        receiver.bytes_sent.load(Ordering::Relaxed) >> 20
    );
    eprintln!(
        "endless 200: peak RSS {peak} KiB; receiver pushed {} MB in total",
        receiver.bytes_sent.load(Ordering::Relaxed) >> 20
    );
}

#[test]
fn a_100_mb_error_body_is_not_read_and_memory_stays_flat() {
    let receiver = hostile(Answer::Huge500);
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("c.toml");
    std::fs::write(
        &config,
        "[retry]\nschedule = [\"50ms\"]\nmax_age = \"3s\"\n",
    )
    .unwrap();
    let (running, port) = run_against(
        &receiver,
        dir.path(),
        &["--config", config.to_str().unwrap()],
    );
    // Every event is retried against the 500 until it is dead-lettered (20 dead letters).
    let dead = eventually(Duration::from_secs(60), || {
        serde_json::from_str::<serde_json::Value>(&http_get(port, "/status").1)
            .map(|s| s["dead_letters"] == 20)
            .unwrap_or(false)
    });
    let peak = peak_rss_kib(running.child.id());
    assert!(
        dead,
        "{}\n{}",
        http_get(port, "/status").1,
        running.log_text()
    );
    let attempts = receiver.requests.load(Ordering::SeqCst);
    assert!(
        peak < PEAK_RSS_LIMIT_KIB,
        "peak RSS {peak} KiB after {attempts} answers of 100 MB"
    );
    assert!(attempts >= 40, "only {attempts} attempts");
    eprintln!(
        "100 MB 500: peak RSS {peak} KiB over {attempts} attempts; receiver pushed {} MB",
        receiver.bytes_sent.load(Ordering::Relaxed) >> 20
    );
    running.signal(nix::sys::signal::Signal::SIGTERM);
    let mut running = running;
    running.child.wait().unwrap();
    let (code, out, err) = output(emitter().args([
        "dead-letters",
        "list",
        "--json",
        "--data-dir",
        dir.path().join("d").to_str().unwrap(),
    ]));
    assert_eq!(code, 0, "{err}");
    let first: serde_json::Value = serde_json::from_str(out.lines().next().unwrap()).unwrap();
    let reason = first["reason"].as_str().unwrap();
    assert!(reason.starts_with("HTTP 500: xxx"), "{reason}");
    assert!(
        reason.len() < 400,
        "the reason keeps a short prefix: {reason}"
    );
}

#[test]
fn a_trickling_body_does_not_outlive_the_attempt_timeout() {
    let receiver = hostile(Answer::Trickling500);
    let started = Instant::now();
    let (code, out, err) = output(emitter().args([
        "send-test",
        "--url",
        &format!("http://127.0.0.1:{}/hook", receiver.port),
        "--secret",
        SECRET,
        "--webhook-timeout",
        "1s",
    ]));
    let took = started.elapsed();
    assert_eq!(code, 1, "{out}{err}");
    assert!(took < Duration::from_secs(4), "took {took:?}");
    assert!(out.contains("HTTP 500: slow"), "{out}");

    let endless = hostile(Answer::EndlessChunked200);
    let started = Instant::now();
    let (code, out, err) = output(emitter().args([
        "send-test",
        "--url",
        &format!("http://127.0.0.1:{}/hook", endless.port),
        "--secret",
        SECRET,
    ]));
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
}
