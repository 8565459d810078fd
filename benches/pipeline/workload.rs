//! Orchestrator-shaped events and the writers that put them into the stream.

use crate::{STREAM, TEAM, gate_key};
use redis::AsyncCommands;
use redis::aio::MultiplexedConnection;
use std::time::{Duration, Instant};

/// Events per Redis pipeline when writing as fast as possible.
const WRITE_CHUNK: usize = 200;

/// Which events a run writes: `events` spread round-robin over `sandboxes`; each sandbox goes
/// created → paused → resumed → … → killed.
#[derive(Clone, Copy)]
pub struct Workload {
    pub events: usize,
    pub sandboxes: usize,
}

impl Workload {
    /// Sandbox index, position in its own sequence, and the length of its sequence.
    pub fn slot(&self, i: usize) -> (usize, usize, usize) {
        let s = i % self.sandboxes;
        let j = i / self.sandboxes;
        let per = self.events / self.sandboxes + usize::from(s < self.events % self.sandboxes);
        (s, j, per)
    }
}

pub fn event_json(run: &str, sandbox: usize, j: usize, per: usize, now: jiff::Timestamp) -> String {
    let (kind, label) = if j == 0 {
        ("created", "create")
    } else if j + 1 == per {
        ("killed", "kill")
    } else if j % 2 == 1 {
        ("paused", "pause")
    } else {
        ("resumed", "resume")
    };
    let mut data = serde_json::json!({
        "sandbox_metadata": {"user": "bench", "run": run, "purpose": "load test"}
    });
    if kind == "killed" || kind == "paused" {
        data["execution"] = serde_json::json!({
            "started_at": "2026-01-01T00:00:00Z",
            "vcpu_count": 2,
            "memory_mb": 512,
            "execution_time": 60_000
        });
    }
    if kind == "killed" {
        data["kill_reason"] = "requested".into();
    }
    serde_json::json!({
        "id": uuid::Uuid::new_v4().to_string(),
        "version": "v2",
        "type": format!("sandbox.lifecycle.{kind}"),
        // RFC 3339 with nanoseconds, as the orchestrator writes it.
        "timestamp": format!("{now:.9}"),
        "event_category": "lifecycle",
        "event_label": label,
        "event_data": data,
        "sandbox_id": format!("i{run}{sandbox:07}"),
        "sandbox_execution_id": format!("{:08x}-exec-{j}", sandbox),
        "sandbox_template_id": "base-template-v1",
        "sandbox_build_id": "6a0e5d6c-6b0e-4a38-9f8c-2f1d6f2b9e11",
        "sandbox_team_id": TEAM,
    })
    .to_string()
}

/// Writes the whole workload as fast as Redis takes it: per event `EXISTS wh:<team>` and `XADD`,
/// pipelined [`WRITE_CHUNK`] events at a time. Returns when the first chunk went out and the last
/// entry id.
pub async fn write_burst(
    conn: &mut MultiplexedConnection,
    run: &str,
    work: Workload,
) -> (Instant, String) {
    let mut first = None;
    let mut last_id = String::new();
    let mut i = 0;
    while i < work.events {
        let end = (i + WRITE_CHUNK).min(work.events);
        let now = jiff::Timestamp::now();
        let mut pipe = redis::pipe();
        for k in i..end {
            let (s, j, per) = work.slot(k);
            pipe.cmd("EXISTS").arg(gate_key());
            pipe.cmd("XADD")
                .arg(STREAM)
                .arg("*")
                .arg("payload")
                .arg(event_json(run, s, j, per, now));
        }
        first.get_or_insert_with(Instant::now);
        let replies: Vec<redis::Value> = pipe
            .query_async(conn)
            .await
            .expect("writing events to Redis");
        for pair in replies.chunks(2) {
            assert!(
                matches!(pair[0], redis::Value::Int(1)),
                "the gate key {} vanished: the orchestrator would stop publishing",
                gate_key()
            );
        }
        if let Some(redis::Value::BulkString(id)) = replies.last() {
            last_id = String::from_utf8_lossy(id).into_owned();
        }
        i = end;
    }
    (first.expect("at least one event"), last_id)
}

/// Writes at a fixed `rate` for `secs` seconds, one event at a time like the orchestrator
/// (`EXISTS`, then `XADD`). Returns how many events it wrote.
pub async fn write_paced(
    conn: &mut MultiplexedConnection,
    run: &str,
    work: Workload,
    rate: f64,
    secs: f64,
    offset: usize,
) -> usize {
    let total = (rate * secs) as usize;
    let start = tokio::time::Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut written = 0;
    while written < total {
        tick.tick().await;
        let due = ((start.elapsed().as_secs_f64() * rate) as usize).min(total);
        while written < due {
            let exists: i64 = conn.exists(gate_key()).await.expect("EXISTS");
            assert_eq!(exists, 1, "the gate key vanished");
            let (s, j, per) = work.slot(offset + written);
            let json = event_json(run, s, j, per, jiff::Timestamp::now());
            let _: String = redis::cmd("XADD")
                .arg(STREAM)
                .arg("*")
                .arg("payload")
                .arg(json)
                .query_async(conn)
                .await
                .expect("XADD");
            written += 1;
        }
    }
    total
}
