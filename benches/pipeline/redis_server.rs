//! The `redis-server` child process and the stream queries the phases wait on.

use crate::{STREAM, free_port};
use redis::AsyncCommands;
use redis::aio::MultiplexedConnection;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct RedisServer {
    pub child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl RedisServer {
    pub fn start() -> Self {
        let binary = ["/usr/bin/redis-server", "/usr/local/bin/redis-server"]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .unwrap_or("redis-server");
        let dir = tempfile::tempdir().expect("a temporary directory");
        let port = free_port();
        // No persistence: what is measured is the emitter's durability, not Redis's.
        let child = Command::new(binary)
            .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
            .arg("--dir")
            .arg(dir.path())
            .args(["--save", "", "--appendonly", "no"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting redis-server (scripts/bench installs it with apt-get)");
        let server = Self {
            child,
            port,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        server
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub async fn connect(&self) -> MultiplexedConnection {
        redis::Client::open(self.url())
            .expect("a Redis URL")
            .get_multiplexed_async_connection()
            .await
            .expect("connecting to the benchmark's Redis")
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The consumer group's last delivered id and pending count, if the group exists.
pub async fn group_progress(conn: &mut MultiplexedConnection) -> Option<(String, usize)> {
    let reply: redis::streams::StreamInfoGroupsReply = conn.xinfo_groups(STREAM).await.ok()?;
    reply
        .groups
        .into_iter()
        .next()
        .map(|g| (g.last_delivered_id, g.pending))
}
/// Forgets everything a previous run left, so that no run inherits another's state: the stream
/// and its group, the gate key, and the emitter's keys beside the stream (leader lease, fence,
/// generation, dead letters, the shared view of sandboxes). This Redis holds nothing else.
pub async fn reset_redis(conn: &mut MultiplexedConnection) {
    let _: () = redis::cmd("FLUSHALL")
        .arg("SYNC")
        .query_async(conn)
        .await
        .expect("FLUSHALL");
}
