//! Two (or more) instances of the real binary against one `redis-server`, for the HA tests:
//! each instance posts to its own path (`/from-<name>`), so the receiver knows who delivered
//! what; a Nomad 1.8 stand-in with one orchestrator for the reconciler.
#![allow(dead_code)] // each test crate uses a different subset

use super::nomad_standin::{AllocSpec, NomadOptions, NomadStandin, workload_identity_jwt};
use super::orchestrator_standin::OrchestratorStandin;
use super::redis::RedisServer;
use crate::common::{
    self, Delivery, RunningEmitter, TestReceiver, eventually, first_arrivals, free_port, http_get,
};
use serde_json::Value;
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

pub const SECRET: &str = "ha-secret-5b0e3c1d9a7f46e2b8c4";
pub const TEAM: &str = "0b8b8a4e-6f4e-4c4a-9a57-3a2f5d3b1c2d";
pub const STREAM: &str = "sandbox.events.stream";
pub const GROUP: &str = "e2b-webhook-emitter";
pub const LEASE_TTL: &str = "2s";

/// One emitter instance: its name (consumer name and URL path), data directory and ops port.
pub struct Instance {
    pub name: String,
    pub data: PathBuf,
    pub listen: u16,
    pub extra: Vec<String>,
    pub lease_ttl: &'static str,
    pub running: Option<RunningEmitter>,
    /// Another build of the binary to run (an earlier release); `None`: the one under test.
    pub binary: Option<PathBuf>,
    pub log: PathBuf,
}

impl Instance {
    pub fn new(dir: &Path, name: &str) -> Self {
        Self {
            name: name.to_owned(),
            data: dir.join(format!("data-{name}")),
            listen: free_port(),
            extra: Vec::new(),
            lease_ttl: LEASE_TTL,
            running: None,
            binary: None,
            log: dir.join(format!("{name}.log")),
        }
    }

    pub fn start(&mut self, redis: &RedisServer, receiver_port: u16) {
        let url = format!("http://127.0.0.1:{receiver_port}/from-{}", self.name);
        let listen = format!("127.0.0.1:{}", self.listen);
        let mut args: Vec<String> = [
            "--redis-url",
            &redis.url(),
            "--redis-consumer",
            &self.name,
            "--team-ids",
            TEAM,
            "--webhook-url",
            &url,
            "--webhook-secret",
            SECRET,
            "--data-dir",
            self.data.to_str().unwrap(),
            "--listen",
            &listen,
            "--leader-lease-ttl",
            self.lease_ttl,
            "--log-format",
            "json",
        ]
        .map(str::to_owned)
        .to_vec();
        args.extend(self.extra.iter().cloned());
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        self.running = Some(match &self.binary {
            Some(binary) => RunningEmitter::start_binary(binary, &args, self.log.clone()),
            None => RunningEmitter::start(&args, self.log.clone()),
        });
        common::wait_for_port(self.listen, Duration::from_secs(10));
    }

    pub fn status(&self) -> Value {
        let (code, body) = http_get(self.listen, "/status");
        if code != 200 {
            return Value::Null;
        }
        serde_json::from_str(&body).unwrap_or(Value::Null)
    }

    pub fn is_active(&self) -> bool {
        common::lease_active(self.listen)
    }

    pub fn readyz(&self) -> u16 {
        http_get(self.listen, "/readyz").0
    }

    pub fn metrics(&self) -> String {
        http_get(self.listen, "/metrics").1
    }

    pub fn signal(&self, signal: nix::sys::signal::Signal) {
        self.running.as_ref().expect("running").signal(signal);
    }

    /// Waits for a process told to stop (SIGTERM; a second one would exit at once) to drain and
    /// exit; returns it, for its log.
    pub fn wait_for_exit(&mut self, timeout: Duration) -> RunningEmitter {
        let mut stopping = self.running.take().expect("running");
        let exited = eventually(timeout, || stopping.child.try_wait().unwrap().is_some());
        assert!(exited, "{} drains and exits within {timeout:?}", self.name);
        stopping
    }

    pub fn kill9(&mut self) {
        if let Some(running) = self.running.take() {
            running.kill9();
        }
    }

    pub fn path(&self) -> String {
        format!("/from-{}", self.name)
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- {} log ---\n{}", self.name, self.log_text());
        }
    }
}

/// Waits until exactly one of `instances` is active; returns its index.
pub fn wait_for_active(instances: &[&Instance], timeout: Duration) -> usize {
    let mut active = None;
    let found = eventually(timeout, || {
        let now: Vec<usize> = (0..instances.len())
            .filter(|&i| instances[i].is_active())
            .collect();
        active = (now.len() == 1).then(|| now[0]);
        active.is_some()
    });
    assert!(
        found,
        "exactly one instance becomes active within {timeout:?}"
    );
    active.unwrap()
}

/// Writes NDJSON events as the orchestrator does (`XADD … payload <json>`), pipelined.
pub fn write_events(redis: &RedisServer, ndjson: &str) {
    let mut conn = redis.connection();
    let lines: Vec<&str> = ndjson.lines().collect();
    for chunk in lines.chunks(200) {
        let () = payload_xadds(chunk).query(&mut conn).unwrap();
    }
}

/// One `XADD … payload <line>` per line, in one pipeline, as the orchestrator writes them.
fn payload_xadds(lines: &[impl AsRef<str>]) -> redis::Pipeline {
    let mut pipe = redis::pipe();
    for line in lines {
        pipe.cmd("XADD")
            .arg(STREAM)
            .arg("*")
            .arg("payload")
            .arg(line.as_ref())
            .ignore();
    }
    pipe
}

/// Entries read by the group and not acknowledged yet.
pub fn pending(redis: &RedisServer) -> u64 {
    let mut conn = redis.connection();
    let summary: redis::Value = redis::cmd("XPENDING")
        .arg(STREAM)
        .arg(GROUP)
        .query(&mut conn)
        .unwrap_or(redis::Value::Nil);
    match summary {
        redis::Value::Array(parts) => match parts.first() {
            Some(redis::Value::Int(n)) => *n as u64,
            _ => 0,
        },
        _ => 0,
    }
}

/// A receiver that accepts everything, on `port` (0: any).
pub fn accepting_receiver(port: u16) -> TestReceiver {
    TestReceiver::start(port, SECRET, Arc::new(|_: &str, _: &str, _: u32| 200))
}

/// Every event arrived, correctly signed, and the first delivery of each sandbox's events came
/// in the order they were written.
pub fn assert_all_delivered_in_order(
    deliveries: &[Delivery],
    expected: &HashMap<String, Vec<String>>,
) {
    assert!(
        deliveries.iter().all(|d| d.signature_ok),
        "every delivery is correctly signed"
    );
    let all: HashSet<&String> = expected.values().flatten().collect();
    let got: HashSet<&String> = deliveries.iter().map(|d| &d.event_id).collect();
    let missing = all.difference(&got).count();
    assert_eq!(
        missing,
        0,
        "{missing} of {} events never arrived",
        all.len()
    );
    assert!(got.is_subset(&all), "only events that were written arrive");
    let firsts = first_arrivals(deliveries);
    for (sandbox, ids) in expected {
        assert_eq!(
            firsts.get(sandbox),
            Some(ids),
            "first deliveries of {sandbox} in order"
        );
    }
    let mut delivery_ids: HashMap<&str, &str> = HashMap::new();
    for d in deliveries {
        assert_eq!(
            *delivery_ids.entry(&d.event_id).or_insert(&d.delivery_id),
            d.delivery_id.as_str(),
            "a repeat carries the same e2b-delivery-id"
        );
    }
}

/// Waits until every event arrived and every entry is acknowledged, lets late repeats arrive,
/// then checks each event came once, in order; returns the deliveries.
pub fn each_delivered_once_and_acknowledged(
    redis: &RedisServer,
    receiver: &TestReceiver,
    expected: &HashMap<String, Vec<String>>,
) -> Vec<Delivery> {
    wait_all_delivered(receiver, expected, Duration::from_secs(60));
    assert!(
        eventually(Duration::from_secs(10), || pending(redis) == 0),
        "all acknowledged"
    );
    std::thread::sleep(Duration::from_millis(500));
    let deliveries = receiver.deliveries();
    assert_all_delivered_in_order(&deliveries, expected);
    let total: usize = expected.values().map(Vec::len).sum();
    assert_eq!(deliveries.len(), total, "each event delivered exactly once");
    deliveries
}

pub fn wait_all_delivered(
    receiver: &TestReceiver,
    expected: &HashMap<String, Vec<String>>,
    timeout: Duration,
) {
    let total: HashSet<&String> = expected.values().flatten().collect();
    let arrived = eventually(timeout, || {
        let got: HashSet<String> = receiver
            .deliveries()
            .into_iter()
            .map(|d| d.event_id)
            .collect();
        total.iter().all(|id| got.contains(*id))
    });
    if !arrived {
        let got: HashSet<String> = receiver
            .deliveries()
            .into_iter()
            .map(|d| d.event_id)
            .collect();
        let missing = total.iter().filter(|id| !got.contains(**id)).count();
        panic!(
            "{missing} of {} events not delivered within {timeout:?}",
            total.len()
        );
    }
}

pub fn writer_done(writer: &std::thread::JoinHandle<()>) {
    assert!(
        eventually(Duration::from_secs(60), || writer.is_finished()),
        "all events written"
    );
}

// --- every source goes through the stream ----------------------------------------------------

/// The stream's entries, oldest first: each entry's fields by name.
pub fn stream_entries(redis: &RedisServer) -> Vec<HashMap<String, String>> {
    let mut conn = redis.connection();
    let reply: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
        .arg(STREAM)
        .arg("-")
        .arg("+")
        .query(&mut conn)
        .unwrap();
    reply
        .ids
        .into_iter()
        .map(|entry| {
            entry
                .map
                .into_iter()
                .map(|(k, v)| (k, redis::from_redis_value::<String>(v).unwrap_or_default()))
                .collect()
        })
        .collect()
}

/// A Nomad 1.8 stand-in with one orchestrator allocation, on a runtime of its own.
pub struct Cluster {
    pub nomad: NomadStandin,
    pub orchestrator: OrchestratorStandin,
    _runtime: tokio::runtime::Runtime,
}

impl Cluster {
    pub fn start() -> Self {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let nomad = runtime.block_on(NomadStandin::start(NomadOptions::nomad_1_8()));
        let orchestrator = runtime.block_on(OrchestratorStandin::start());
        nomad.add_allocation(&AllocSpec::orchestrator("alloc-a", orchestrator.port()));
        Self {
            nomad,
            orchestrator,
            _runtime: runtime,
        }
    }

    /// Makes the orchestrator list these sandboxes of [`TEAM`], each with the execution
    /// `exec-<id>` (as [`lifecycle_event`] writes it), and no other.
    pub fn list(&self, ids: &[&str]) {
        self.orchestrator.set_sandboxes(
            ids.iter()
                .map(|id| super::orchestrator_standin::sandbox(id, TEAM, &format!("exec-{id}")))
                .collect(),
        );
    }

    /// `run` arguments: discover the orchestrators through Nomad, reconcile quickly.
    pub fn args(&self) -> Vec<String> {
        self.args_with("200ms", "400ms")
    }

    /// `run` arguments: discover the orchestrators through Nomad, reconcile every `interval`
    /// with a grace of `grace`.
    pub fn args_with(&self, interval: &str, grace: &str) -> Vec<String> {
        [
            "--nomad-addr",
            &self.nomad.url(),
            "--nomad-token",
            &workload_identity_jwt(),
            "--reconcile-interval",
            interval,
            "--reconcile-grace",
            grace,
        ]
        .map(str::to_owned)
        .to_vec()
    }
}

/// The ids of `sandbox`'s events that arrived, by label, first arrivals only, in order.
pub fn arrived(receiver: &TestReceiver, sandbox: &str) -> Vec<(String, String)> {
    let mut seen = HashSet::new();
    receiver
        .deliveries()
        .into_iter()
        .filter(|d| d.sandbox_id == sandbox && seen.insert(d.event_id.clone()))
        .map(|d| (d.label, d.event_id))
        .collect()
}

/// One orchestrator event as NDJSON, for sandbox `sandbox`.
pub fn lifecycle_event(kind: &str, sandbox: &str) -> String {
    serde_json::json!({
        "id": uuid::Uuid::new_v4().to_string(), "version": "v2",
        "type": format!("sandbox.lifecycle.{kind}"), "timestamp": jiff::Timestamp::now().to_string(),
        "event_category": "", "event_label": "", "sandbox_id": sandbox,
        "sandbox_execution_id": format!("exec-{sandbox}"), "sandbox_template_id": "base",
        "sandbox_build_id": "b1", "sandbox_team_id": TEAM
    })
    .to_string()
}

/// Successful reconciliation runs of an instance so far.
pub fn reconcile_runs(instance: &Instance) -> u64 {
    instance
        .metrics()
        .lines()
        .find(|l| l.starts_with(r#"e2b_webhook_reconcile_runs_total{result="ok"}"#))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0)
}

/// Deliveries of events the emitter made up.
pub fn synthetic(receiver: &TestReceiver) -> Vec<(String, String)> {
    receiver
        .deliveries()
        .into_iter()
        .filter(|d| d.body["eventData"]["synthetic"] == true)
        .map(|d| (d.sandbox_id, d.label))
        .collect()
}

/// The dead letters in Redis, as `dead-letters list --json` prints them.
pub fn shared_dead_letters(redis: &RedisServer) -> Vec<Value> {
    let (code, out, err) = common::output(
        common::emitter()
            .args(["dead-letters", "list", "--json", "--redis-url"])
            .arg(redis.url()),
    );
    assert_eq!(code, 0, "{err}");
    out.lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Appends `events` (one JSON line each) to the orchestrator's stream from a thread, `chunk` at a
/// time with `pause` between, so they keep coming while a test stops and starts instances.
pub fn write_in_background(
    redis_url: &str,
    events: &str,
    chunk: usize,
    pause: Duration,
) -> std::thread::JoinHandle<()> {
    let url = redis_url.to_owned();
    let lines: Vec<String> = events.lines().map(str::to_owned).collect();
    std::thread::spawn(move || {
        let mut conn = redis::Client::open(url).unwrap().get_connection().unwrap();
        for lines in lines.chunks(chunk) {
            let () = payload_xadds(lines).query(&mut conn).unwrap();
            std::thread::sleep(pause);
        }
    })
}
