//! A real `redis-server` for tests: a free loopback port, a private data directory, killed on drop.
#![allow(dead_code)] // each test crate uses a different subset

use crate::common::free_port;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a starting server may take to answer PING.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// How the server keeps its data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Persistence {
    /// Nothing on disk (`--save ""`, no AOF): a restart starts empty.
    None,
    /// Every write is in the append-only file before Redis answers it, so a kill loses nothing.
    AppendFsyncAlways,
}

/// Options for [`RedisServer::start_with`].
#[derive(Debug, Clone)]
pub struct RedisOptions {
    /// How data is kept.
    pub persistence: Persistence,
    /// `requirepass`, when set.
    pub password: Option<String>,
    /// Run as a one-node Redis Cluster owning every slot.
    pub cluster: bool,
    /// Accept only TLS, with a certificate for 127.0.0.1 signed by a private CA.
    pub tls: bool,
}

impl Default for RedisOptions {
    fn default() -> Self {
        Self {
            persistence: Persistence::None,
            password: None,
            cluster: false,
            tls: false,
        }
    }
}

/// A running `redis-server` child process.
pub struct RedisServer {
    child: Option<Child>,
    port: u16,
    cluster_bus_port: u16,
    dir: tempfile::TempDir,
    options: RedisOptions,
}

impl RedisServer {
    /// A throwaway server: no persistence, no password.
    pub fn start() -> Self {
        Self::start_with(RedisOptions::default())
    }

    /// A server with `options`, answering PING (and, in cluster mode, with every slot served).
    pub fn start_with(options: RedisOptions) -> Self {
        let mut server = Self {
            child: None,
            port: free_port(),
            cluster_bus_port: free_port(),
            dir: tempfile::tempdir().expect("creating a temporary directory for Redis"),
            options,
        };
        if server.options.tls {
            server.make_certificates();
        }
        // A free port can be taken by another test between `free_port` and redis-server's bind:
        // then it exits at once, and the server starts again on other ports.
        for attempt in 1.. {
            match server.try_spawn() {
                Ok(()) => break,
                Err(log) if log.contains("Address already in use") && attempt < 5 => {
                    server.port = free_port();
                    server.cluster_bus_port = free_port();
                    for stale in ["redis.log", "nodes.conf"] {
                        let _ = std::fs::remove_file(server.dir.path().join(stale));
                    }
                }
                Err(log) => panic!("redis-server exited before answering PING; its log:\n{log}"),
            }
        }
        if server.options.cluster {
            server.assign_all_slots();
        }
        server
    }

    /// The loopback port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `redis[s]://[:password@]127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        let scheme = if self.options.tls { "rediss" } else { "redis" };
        match &self.options.password {
            Some(password) => format!("{scheme}://:{password}@127.0.0.1:{}", self.port),
            None => format!("{scheme}://127.0.0.1:{}", self.port),
        }
    }

    /// `127.0.0.1:<port>`, the bare form the orchestrator's `REDIS_URL` takes.
    pub fn host_port(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The private CA certificate (PEM) that signed the server's TLS certificate.
    pub fn tls_ca_pem(&self) -> Vec<u8> {
        std::fs::read(self.dir.path().join("ca.pem")).expect("the CA of a TLS test server")
    }

    /// A fresh synchronous connection.
    pub fn connection(&self) -> redis::Connection {
        self.client()
            .and_then(|c| c.get_connection_with_timeout(Duration::from_secs(2)))
            .unwrap_or_else(|e| {
                panic!(
                    "cannot connect to the test Redis on port {}: {e}",
                    self.port
                )
            })
    }

    fn client(&self) -> redis::RedisResult<redis::Client> {
        if !self.options.tls {
            return redis::Client::open(self.url());
        }
        let _ = rustls::crypto::ring::default_provider().install_default();
        let certs = redis::TlsCertificates {
            client_tls: None,
            root_cert: Some(self.tls_ca_pem()),
        };
        redis::Client::build_with_tls(self.url(), certs)
    }

    /// Kills the server with SIGKILL: only what it had written to disk survives.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port with the same data directory.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    fn spawn(&mut self) {
        if let Err(log) = self.try_spawn() {
            panic!("redis-server exited before answering PING; its log:\n{log}");
        }
    }

    /// Starts redis-server and waits for its PING; its log when it exits first.
    fn try_spawn(&mut self) -> Result<(), String> {
        let mut cmd = Command::new(redis_server_binary());
        cmd.arg("--bind").arg("127.0.0.1");
        if self.options.tls {
            // `--port 0` turns plain TCP off: every client must speak TLS.
            let file = |name: &str| self.dir.path().join(name);
            cmd.args(["--port", "0", "--tls-port", &self.port.to_string()])
                .arg("--tls-cert-file")
                .arg(file("server.pem"))
                .arg("--tls-key-file")
                .arg(file("server.key"))
                .arg("--tls-ca-cert-file")
                .arg(file("ca.pem"))
                .args(["--tls-auth-clients", "no"]);
        } else {
            cmd.arg("--port").arg(self.port.to_string());
        }
        cmd.arg("--dir")
            .arg(self.dir.path())
            .arg("--logfile")
            .arg(self.dir.path().join("redis.log"))
            .arg("--save")
            .arg("");
        match self.options.persistence {
            Persistence::None => cmd.args(["--appendonly", "no"]),
            Persistence::AppendFsyncAlways => {
                cmd.args(["--appendonly", "yes", "--appendfsync", "always"])
            }
        };
        if let Some(password) = &self.options.password {
            cmd.arg("--requirepass").arg(password);
        }
        if self.options.cluster {
            // The bus port is given: the default, port + 10000, may not exist for a high port.
            cmd.args(["--cluster-enabled", "yes", "--cluster-port"])
                .arg(self.cluster_bus_port.to_string())
                .arg("--cluster-config-file")
                .arg(self.dir.path().join("nodes.conf"));
            if self.options.tls {
                // Nodes then announce their TLS port, and the bus speaks TLS too.
                cmd.args(["--tls-cluster", "yes"]);
            }
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start redis-server (install it, e.g. apt-get install redis-server): {e}"
                )
            });
        self.child = Some(child);
        self.wait_for_ping()
    }

    fn wait_for_ping(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let answer = self
                .client()
                .and_then(|c| c.get_connection_with_timeout(Duration::from_millis(500)))
                .and_then(|mut c| redis::cmd("PING").query::<String>(&mut c));
            if answer.is_ok() {
                return Ok(());
            }
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                self.child = None;
                return Err(format!("(exit {status})\n{}", self.log()));
            }
            assert!(
                Instant::now() < deadline,
                "redis-server on port {} did not answer PING within {START_TIMEOUT:?} ({answer:?}); its log:\n{}",
                self.port,
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// A private CA and a server certificate for 127.0.0.1, made with the openssl CLI.
    fn make_certificates(&self) {
        let dir = self.dir.path();
        std::fs::write(
            dir.join("server.ext"),
            "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n",
        )
        .unwrap();
        let steps = [
            "req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=redis-test-CA -keyout ca.key -out ca.pem",
            "req -newkey rsa:2048 -nodes -subj /CN=127.0.0.1 -keyout server.key -out server.csr",
            "x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 -extfile server.ext -out server.pem",
        ];
        for step in steps {
            let output = Command::new("openssl")
                .args(step.split_whitespace())
                .current_dir(dir)
                .output()
                .expect("running openssl to make test certificates");
            assert!(
                output.status.success(),
                "openssl {step} failed: {}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
    }

    fn assign_all_slots(&self) {
        let mut conn = self.connection();
        let () = redis::cmd("CLUSTER")
            .arg("ADDSLOTSRANGE")
            .arg(0)
            .arg(16383)
            .query(&mut conn)
            .expect("CLUSTER ADDSLOTSRANGE");
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let info: String = redis::cmd("CLUSTER")
                .arg("INFO")
                .query(&mut conn)
                .expect("CLUSTER INFO");
            if info.contains("cluster_state:ok") {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the one-node cluster did not become ready: {info}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("redis.log")).unwrap_or_default()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// `redis-server` from `REDIS_SERVER` or the PATH.
fn redis_server_binary() -> PathBuf {
    std::env::var_os("REDIS_SERVER")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("redis-server"))
}
