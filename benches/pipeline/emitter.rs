//! The emitter under test: the real release binary as a child process.

use crate::redis_server::RedisServer;
use crate::{SECRET, TEAM, free_port, gate_key};
use redis::AsyncCommands;
use redis::aio::MultiplexedConnection;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The binary under test: the release build, or `BENCH_EMITTER` (to compare two builds, or to
/// profile one with symbols).
pub fn emitter_binary() -> PathBuf {
    std::env::var_os("BENCH_EMITTER")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_e2b-webhook-emitter")))
}

pub struct Emitter {
    child: Child,
    listen: u16,
    dir: tempfile::TempDir,
}

impl Emitter {
    pub fn start(
        redis: &RedisServer,
        webhook_url: &str,
        max_in_flight: usize,
        config: &str,
    ) -> Self {
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

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(self.dir.path().join("emitter.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// Waits until the emitter consumes the stream: the gate key exists (it is set right after the
    /// consumer group is created, so the orchestrator would now publish) and `/readyz` says so.
    pub async fn wait_ready(&mut self, conn: &mut MultiplexedConnection) {
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
    pub fn outbox_depth(&self) -> u64 {
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
    pub fn stop(mut self) {
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
