//! Issue 14, finding 6: `receive` survives a slowloris — idle and half-sent connections are
//! closed after the header timeout, at most `--max-connections` are open at once, and valid
//! requests are answered throughout.

mod common;

use common::{emitter, free_port, wait_for_port};
use std::os::unix::process::CommandExt;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const SECRET: &str = "slowloris-secret-8d7c6b5a";
/// Below what the attack opens, so a receiver without limits runs out of descriptors.
const OPEN_FILE_LIMIT: u64 = 256;
const MAX_CONNECTIONS: usize = 128;
const SLOW_CLIENTS: usize = 300;
const IDLE_CLIENTS: usize = 100;

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// Sends a request head a header line at a time, never finishing it; reconnects when cut off.
async fn slow_client(port: u16, cut: Arc<AtomicUsize>) {
    loop {
        let Ok(Ok(mut stream)) = tokio::time::timeout(
            Duration::from_secs(3),
            tokio::net::TcpStream::connect(("127.0.0.1", port)),
        )
        .await
        else {
            continue;
        };
        if stream
            .write_all(b"POST /api/webhooks/e2b HTTP/1.1\r\nHost: x\r\n")
            .await
            .is_err()
        {
            continue;
        }
        loop {
            tokio::time::sleep(Duration::from_millis(300)).await;
            if stream.write_all(b"X-Slow: 1\r\n").await.is_err() {
                cut.fetch_add(1, Ordering::Relaxed);
                break;
            }
        }
    }
}

/// Connects and sends nothing; reconnects when the server closes the connection.
async fn idle_client(port: u16, cut: Arc<AtomicUsize>) {
    loop {
        let Ok(Ok(mut stream)) = tokio::time::timeout(
            Duration::from_secs(3),
            tokio::net::TcpStream::connect(("127.0.0.1", port)),
        )
        .await
        else {
            continue;
        };
        let mut buf = [0u8; 64];
        // Returns 0 (or an error) once the server closes it.
        let _ = stream.read(&mut buf).await;
        cut.fetch_add(1, Ordering::Relaxed);
    }
}

#[test]
fn a_slowloris_is_cut_off_and_valid_requests_are_still_answered() {
    let port = free_port();
    let mut receiver = emitter();
    receiver
        .args(["receive", "--listen", &format!("127.0.0.1:{port}")])
        .args(["--secret", SECRET, "--header-timeout", "1s"])
        .args(["--max-connections", &MAX_CONNECTIONS.to_string()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    // SAFETY: setrlimit is async-signal-safe; it only lowers this child's own limit.
    unsafe {
        receiver.pre_exec(|| {
            let limit = libc::rlimit {
                rlim_cur: OPEN_FILE_LIMIT,
                rlim_max: OPEN_FILE_LIMIT,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = receiver.spawn().unwrap();
    wait_for_port(port, Duration::from_secs(10));

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let cut = Arc::new(AtomicUsize::new(0));
    for _ in 0..SLOW_CLIENTS {
        runtime.spawn(slow_client(port, cut.clone()));
    }
    for _ in 0..IDLE_CLIENTS {
        runtime.spawn(idle_client(port, cut.clone()));
    }
    // Let the attack fill every slot first.
    std::thread::sleep(Duration::from_secs(2));

    let body = r#"{"eventCategory":"sandbox","eventLabel":"kill","sandboxId":"sb-valid","sandboxTeamId":"t","timestamp":"2025-10-15T12:00:00Z"}"#;
    let secret = e2b_webhook_emitter::util::secret::Secret::new(SECRET);
    let signature = e2b_webhook_emitter::deliver::sign::x_e2b_signature(&secret, body.as_bytes());
    let mut latencies = Vec::new();
    let mut peak_fds = 0;
    for _ in 0..15 {
        let started = Instant::now();
        let status = runtime.block_on(async {
            let client = reqwest::Client::builder()
                .pool_max_idle_per_host(0)
                .timeout(Duration::from_secs(15))
                .build()
                .unwrap();
            client
                .post(format!("http://127.0.0.1:{port}/api/webhooks/e2b"))
                .header("x-e2b-signature", &signature)
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await
                .map(|r| r.status().as_u16())
                .map_err(|e| e.to_string())
        });
        latencies.push(started.elapsed());
        peak_fds = peak_fds.max(open_fds(child.id()));
        assert_eq!(
            status,
            Ok(200),
            "a valid request under attack (after {:?}; {} attack connections cut so far)",
            started.elapsed(),
            cut.load(Ordering::Relaxed)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let cut = cut.load(Ordering::Relaxed);
    runtime.shutdown_background();
    child.kill().unwrap();
    child.wait().unwrap();
    latencies.sort();
    eprintln!(
        "valid requests under a {}-connection slowloris: median {:?}, max {:?}; {cut} attack \
         connections cut; at most {peak_fds} descriptors open",
        SLOW_CLIENTS + IDLE_CLIENTS,
        latencies[latencies.len() / 2],
        latencies[latencies.len() - 1]
    );
    assert!(
        cut >= SLOW_CLIENTS + IDLE_CLIENTS,
        "only {cut} attack connections were cut off"
    );
    assert!(
        peak_fds <= MAX_CONNECTIONS + 32,
        "{peak_fds} descriptors open with --max-connections {MAX_CONNECTIONS}"
    );
}
