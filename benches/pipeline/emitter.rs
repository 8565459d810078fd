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

/// How to start one emitter.
#[derive(Clone)]
pub struct Launch {
    /// `--webhook-url`; `None` when the config file names the endpoints.
    pub webhook_url: Option<String>,
    /// `--webhook-format`, when not the default.
    pub format: Option<&'static str>,
    /// `--webhook-ca-file`: the private CA of an `https://` receiver.
    pub ca_file: Option<PathBuf>,
    /// `--redis-consumer`: its name in the group and in the leader lease.
    pub consumer: &'static str,
    pub max_in_flight: usize,
    /// The `--config` file's text; empty for none.
    pub config: String,
    /// A command the binary runs under (valgrind), empty for none.
    pub wrapper: Vec<String>,
    /// How long start-up, and the drain on SIGTERM, may take.
    pub patience: Duration,
}

impl Launch {
    pub fn new(webhook_url: &str, max_in_flight: usize) -> Self {
        Self {
            webhook_url: Some(webhook_url.to_owned()),
            format: None,
            ca_file: None,
            consumer: "bench",
            max_in_flight,
            config: String::new(),
            wrapper: Vec::new(),
            patience: Duration::from_secs(30),
        }
    }
}

pub struct Emitter {
    child: Child,
    listen: u16,
    patience: Duration,
    dir: tempfile::TempDir,
}

impl Emitter {
    pub fn start(
        redis: &RedisServer,
        webhook_url: &str,
        max_in_flight: usize,
        config: &str,
    ) -> Self {
        Self::launch(
            redis,
            &Launch {
                config: config.to_owned(),
                ..Launch::new(webhook_url, max_in_flight)
            },
        )
    }

    pub fn launch(redis: &RedisServer, how: &Launch) -> Self {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let listen = free_port();
        let log = std::fs::File::create(dir.path().join("emitter.log")).expect("a log file");
        let mut cmd = match how.wrapper.split_first() {
            Some((program, args)) => {
                let mut cmd = Command::new(program);
                cmd.args(args).arg(emitter_binary());
                cmd
            }
            None => Command::new(emitter_binary()),
        };
        for var in [
            "WEBHOOK_URL",
            "WEBHOOK_FORMAT",
            "WEBHOOK_EVENTS",
            "WEBHOOK_CA_FILE",
            "REDIS_URL",
            "REDIS_CLUSTER_URL",
            "REDIS_CONSUMER",
            "NOMAD_ADDR",
            "NOMAD_TOKEN",
            "DATA_DIR",
            "LISTEN_ADDR",
            "CONFIG_FILE",
            "E2B_TEAM_IDS",
            "EVENTS_FILE",
            "MAX_IN_FLIGHT",
            "OUTBOX_EXCLUSIVE",
            "RUST_LOG",
        ] {
            cmd.env_remove(var);
        }
        // JSON logs at the default level (info: a line per retry or dead letter), as in the Nomad
        // job.
        cmd.env("WEBHOOK_SECRET", SECRET)
            .args(["run", "--log-format", "json"]);
        if !how.config.is_empty() {
            let path = dir.path().join("emitter.toml");
            std::fs::write(&path, &how.config).expect("writing the config file");
            cmd.arg("--config").arg(path);
        }
        if let Some(url) = &how.webhook_url {
            cmd.args(["--webhook-url", url]);
        }
        if let Some(format) = how.format {
            cmd.args(["--webhook-format", format]);
        }
        if let Some(ca_file) = &how.ca_file {
            cmd.arg("--webhook-ca-file").arg(ca_file);
        }
        cmd.args(["--redis-url", &redis.url(), "--team-ids", TEAM])
            .args(["--redis-consumer", how.consumer])
            .args(["--max-in-flight", &how.max_in_flight.to_string()])
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .args(["--listen", &format!("127.0.0.1:{listen}")])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        let child = cmd.spawn().expect("starting the emitter");
        Self {
            child,
            listen,
            patience: how.patience,
            dir,
        }
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
        let deadline = Instant::now() + self.patience;
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

    /// [`Self::wait_ready`], then until this instance holds the leader lease: a fresh instance
    /// takes a lease only after seeing it absent for a third of its time to live (2.7 s by default,
    /// src/source/redis/lease.rs), and reads nothing before that.
    pub async fn wait_active(&mut self, conn: &mut MultiplexedConnection) {
        self.wait_ready(conn).await;
        let deadline = Instant::now() + self.patience;
        while !self.is_leader().await {
            assert!(
                Instant::now() < deadline,
                "the emitter did not take the leader lease:\n{}",
                self.log_tail()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Whether this instance holds the leader lease (`e2b_webhook_leader` on `/metrics`).
    pub async fn is_leader(&self) -> bool {
        let Ok(response) = reqwest::get(format!("http://127.0.0.1:{}/metrics", self.listen)).await
        else {
            return false;
        };
        let text = response.text().await.unwrap_or_default();
        text.lines()
            .find_map(|l| l.strip_prefix("e2b_webhook_leader "))
            .is_some_and(|v| v.trim() == "1")
    }

    /// SIGTERM, then wait (the service drains for at most 20 s).
    pub fn stop(mut self) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + self.patience;
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
