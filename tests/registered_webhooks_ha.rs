//! Issue 15: a registered webhook on an HA pair — both instances learn of it from Postgres
//! within seconds, and its events keep being delivered while Postgres is down, through a
//! failover to the standby, and by an instance restarted while Postgres is still down.

mod common;
mod support;

use common::events_api::{api_call, wait_for_api};
use common::{RunningEmitter, eventually, free_port, http_get, lease_active};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::time::Duration;
use support::docs_receiver::{Receiver, SECRET_A, gate_exists, xadd};
use support::postgres::PostgresServer;
use support::redis::RedisServer;

struct Instance {
    name: &'static str,
    port: u16,
    data: PathBuf,
    log: PathBuf,
    running: Option<RunningEmitter>,
}

impl Instance {
    fn new(dir: &Path, name: &'static str) -> Self {
        Self {
            name,
            port: free_port(),
            data: dir.join(format!("data-{name}")),
            log: dir.join(format!("{name}.log")),
            running: None,
        }
    }

    fn start(&mut self, pg: &PostgresServer, redis: &RedisServer) {
        let listen = format!("127.0.0.1:{}", self.port);
        self.running = Some(RunningEmitter::start_with_env(
            &[],
            &[
                ("POSTGRES_CONNECTION_STRING", &pg.url()),
                ("LISTEN_ADDR", &listen),
                ("DATA_DIR", self.data.to_str().unwrap()),
                ("REDIS_URL", &redis.host_port()),
                ("REDIS_CONSUMER", self.name),
                ("LEADER_LEASE_TTL", "2s"),
                ("API_ALLOW_PRIVATE_CIDRS", "127.0.0.1/32"),
            ],
            self.log.clone(),
        ));
        common::wait_for_port(self.port, Duration::from_secs(10));
    }

    fn is_active(&self) -> bool {
        lease_active(self.port)
    }

    /// Whether its outbox routes events to `endpoint` (it appears in `/status`).
    fn knows(&self, endpoint: &str) -> bool {
        let (code, body) = http_get(self.port, "/metrics");
        code == 200 && body.contains(endpoint)
    }

    fn kill9(&mut self) {
        if let Some(running) = self.running.take() {
            running.kill9();
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// Waits for the delivery of event `id` (earlier events may arrive again: at least once).
fn delivered(receiver: &Receiver, id: &str, wait: Duration) -> Option<Value> {
    let deadline = std::time::Instant::now() + wait;
    while std::time::Instant::now() < deadline {
        for request in receiver.collect(1, Duration::from_millis(500)) {
            if request["body"]["id"] == id {
                return Some(request);
            }
        }
    }
    None
}

#[test]
fn a_registered_webhook_survives_a_postgres_outage_and_a_failover() {
    let mut pg = PostgresServer::start();
    let redis = RedisServer::start();
    let receiver = Receiver::start();
    let (team, key) = pg.add_team("ha-team");
    let dir = tempfile::tempdir().unwrap();
    let mut a = Instance::new(dir.path(), "a");
    let mut b = Instance::new(dir.path(), "b");
    a.start(&pg, &redis);
    b.start(&pg, &redis);
    wait_for_api(a.port, &key);
    // Registered through one instance…
    let body = json!({
        "name": "ha", "url": format!("http://127.0.0.1:{}/a", receiver.port),
        "enabled": true, "events": ["sandbox.lifecycle.killed"], "signatureSecret": SECRET_A,
    });
    let (status, created) = api_call(a.port, "POST", "/events/webhooks", Some(&key), Some(&body));
    assert_eq!(status, 201, "{created}");
    let endpoint = format!("webhook:{}", created["id"].as_str().unwrap());
    // …both know it within seconds.
    assert!(
        eventually(Duration::from_secs(10), || a.knows(&endpoint)
            && b.knows(&endpoint)),
        "both instances deliver to the new webhook"
    );
    let mut conn = redis.connection();
    assert!(eventually(Duration::from_secs(10), || gate_exists(
        &mut conn, &team
    )));

    // Postgres goes down: delivery goes on.
    pg.kill();
    xadd(&mut conn, "ha-1", "killed", "sbx-1", &team);
    let got = delivered(&receiver, "ha-1", Duration::from_secs(20));
    let got = got.unwrap_or_else(|| panic!("a: {}\nb: {}", a.log(), b.log()));
    assert_eq!(got["valid"], true);

    // The active instance is lost while Postgres is still down: the standby delivers.
    assert!(eventually(Duration::from_secs(10), || a.is_active() || b.is_active()));
    let (active, standby) = if a.is_active() {
        (&mut a, &mut b)
    } else {
        (&mut b, &mut a)
    };
    active.kill9();
    xadd(&mut conn, "ha-2", "killed", "sbx-2", &team);
    let got = delivered(&receiver, "ha-2", Duration::from_secs(30));
    let got = got.unwrap_or_else(|| panic!("the standby took over: {}", standby.log()));
    assert_eq!(got["valid"], true);

    // The lost instance comes back, Postgres still down: it knows the webhook from its outbox.
    active.start(&pg, &redis);
    assert!(
        eventually(Duration::from_secs(10), || active.knows(&endpoint)),
        "restarted without Postgres, it restored the webhook: {}",
        active.log()
    );
    standby.kill9();
    xadd(&mut conn, "ha-3", "killed", "sbx-3", &team);
    let got = delivered(&receiver, "ha-3", Duration::from_secs(30));
    assert!(
        got.is_some(),
        "the restarted instance delivers: {}",
        active.log()
    );

    // Postgres is back: the API answers again.
    pg.restart();
    wait_for_api(active.port, &key);
}
