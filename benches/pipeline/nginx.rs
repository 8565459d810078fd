//! Issue 30's `nginx` row, as a new user would try it: a backlog already in the stream drained
//! into a real nginx (`return 200`), timed from its first request to its last by nginx's own
//! access log, against what `wrk` gets from the same nginx with the same body.
//!
//! Needs `nginx` and `wrk` (Debian's packages, which `scripts/bench` installs); without them the
//! row says so instead of a figure.

use crate::backlog::leave_as_an_earlier_instance;
use crate::emitter::{Emitter, Launch};
use crate::redis_server::RedisServer;
use crate::workload::{Workload, event_json, write_burst};
use crate::{free_port, patience_for};
use redis::aio::MultiplexedConnection;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// What one run measured.
#[derive(Debug, Clone)]
pub struct NginxResult {
    pub events: usize,
    /// nginx's first request → its last, by the access log's `$msec`.
    pub delivering_secs: f64,
    /// `wrk` against the same nginx (requests/s), just before.
    pub wrk_rate: f64,
}

impl NginxResult {
    pub fn rate(&self) -> f64 {
        self.events as f64 / self.delivering_secs
    }
}

/// An nginx answering 200 to everything on a loopback port, logging each request's time.
struct Nginx {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl Nginx {
    fn start() -> Result<Self, String> {
        let binary = ["/usr/sbin/nginx", "/usr/bin/nginx"]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .ok_or("nginx is not installed (apt-get install nginx-light)")?;
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let port = free_port();
        let root = dir.path().display();
        // One worker, like the emitter's two cores shared with it; keep-alive as nginx's default.
        let conf = format!(
            "daemon off; worker_processes 1; pid {root}/nginx.pid; error_log {root}/error.log;
events {{ worker_connections 1024; }}
http {{
  client_body_temp_path {root}/body; proxy_temp_path {root}/proxy;
  fastcgi_temp_path {root}/fastcgi; uwsgi_temp_path {root}/uwsgi; scgi_temp_path {root}/scgi;
  log_format t '$msec'; access_log {root}/access.log t buffer=64k flush=100ms;
  keepalive_requests 1000000;
  server {{ listen 127.0.0.1:{port}; location / {{ return 200; }} }}
}}
"
        );
        std::fs::write(dir.path().join("nginx.conf"), conf).map_err(|e| e.to_string())?;
        let child = Command::new(binary)
            .arg("-c")
            .arg(dir.path().join("nginx.conf"))
            .arg("-p")
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start nginx: {e}"))?;
        let nginx = Self { child, port, dir };
        let deadline = Instant::now() + Duration::from_secs(5);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if Instant::now() > deadline {
                return Err("nginx did not listen within 5 s".into());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(nginx)
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/webhook", self.port)
    }

    fn access_log(&self) -> PathBuf {
        self.dir.path().join("access.log")
    }

    /// The times (s) of the requests logged so far.
    fn request_times(&self) -> Vec<f64> {
        std::fs::read_to_string(self.access_log())
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect()
    }

    /// Starts the log afresh (nginx reopens it on SIGUSR1).
    fn clear_log(&self) {
        let _ = std::fs::remove_file(self.access_log());
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGUSR1);
        std::thread::sleep(Duration::from_millis(300));
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `wrk` POSTing an event-sized body to `url` for 5 s: requests/s.
fn wrk_rate(url: &str, dir: &Path) -> Result<f64, String> {
    let body = event_json("wrk", 0, 0, 1, jiff::Timestamp::now());
    let script = dir.join("post.lua");
    std::fs::write(
        &script,
        format!(
            "wrk.method = \"POST\"\nwrk.headers[\"Content-Type\"] = \"application/json\"\nwrk.body = [[{body}]]\n"
        ),
    )
    .map_err(|e| e.to_string())?;
    let out = Command::new("wrk")
        .args(["-t1", "-c64", "-d5s", "-s"])
        .arg(&script)
        .arg(url)
        .output()
        .map_err(|e| format!("wrk is not installed (apt-get install wrk): {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .find_map(|l| l.strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| format!("no rate in wrk's output: {text}"))
}

/// The backlog (`work`) written to the stream before the emitter starts, drained into nginx.
pub async fn nginx_backlog_run(
    redis: &RedisServer,
    conn: &mut MultiplexedConnection,
    work: Workload,
    max_in_flight: usize,
    run: &str,
) -> Result<NginxResult, String> {
    crate::redis_server::reset_redis(conn).await;
    let nginx = Nginx::start()?;
    let wrk_rate = tokio::task::block_in_place(|| wrk_rate(&nginx.url(), nginx.dir.path()))?;
    leave_as_an_earlier_instance(redis, conn, &nginx.url(), max_in_flight).await;
    write_burst(conn, run, work).await;
    tokio::task::block_in_place(|| nginx.clear_log());
    let emitter = Emitter::launch(redis, &Launch::new(&nginx.url(), max_in_flight));
    let deadline = Instant::now() + patience_for(work.events);
    let times = loop {
        let times = nginx.request_times();
        if times.len() >= work.events {
            break times;
        }
        if Instant::now() > deadline {
            return Err(format!(
                "nginx got {} of {} events:\n{}",
                times.len(),
                work.events,
                emitter.log_tail()
            ));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    emitter.stop();
    let first = times.iter().copied().fold(f64::INFINITY, f64::min);
    let last = times.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    Ok(NginxResult {
        events: times.len(),
        delivering_secs: (last - first).max(0.001),
        wrk_rate,
    })
}
