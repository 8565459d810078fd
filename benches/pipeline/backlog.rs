//! Backlogs: events that wait in the outbox for a receiver that is down, and events that wait in
//! the stream for an emitter that is not running yet.

use crate::emitter::{Emitter, Launch};
use crate::measure::proc_status_mib;
use crate::receiver::{Check, Receiver};
use crate::redis_server::{RedisServer, group_progress, reset_redis};
use crate::workload::{Workload, write_burst};
use crate::{ENDPOINT_PATH, free_port, patience_for};
use redis::aio::MultiplexedConnection;
use std::time::{Duration, Instant};

#[derive(Default, Clone)]
pub struct BacklogResult {
    pub events: usize,
    pub ingest_secs: f64,
    pub rss_backlog: f64,
    pub rss_after_drain: f64,
    pub drain_secs: f64,
    pub depth_seen: u64,
}

/// Receiver down while the workload is written; RSS once all are in the outbox; then the receiver
/// starts and the drain is timed. Retries every second (`[retry] schedule = ["1s"]`).
pub async fn backlog_run(
    redis: &RedisServer,
    conn: &mut MultiplexedConnection,
    work: Workload,
    max_in_flight: usize,
) -> BacklogResult {
    let events = work.events;
    reset_redis(conn).await;
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}{ENDPOINT_PATH}");
    let config = "[retry]\nschedule = [\"1s\"]\n";
    let mut emitter = Emitter::start(redis, &url, max_in_flight, config);
    emitter.wait_active(conn).await;
    let (first, last_id) = write_burst(conn, "b", work).await;
    // All read from the stream = the group has handed out the last entry and every entry is
    // pending (acknowledged only once delivered; the receiver is down).
    let deadline = Instant::now() + patience_for(events);
    loop {
        if let Some((delivered, pending)) = group_progress(conn).await
            && delivered == last_id
            && pending == events
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the backlog was not committed:\n{}",
            emitter.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The group hands entries out before the outbox commits them: wait for `status` to count
    // them all.
    let depth_seen = loop {
        let depth = tokio::task::block_in_place(|| emitter.outbox_depth());
        if depth >= events as u64 || Instant::now() >= deadline {
            break depth;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let ingest_secs = first.elapsed().as_secs_f64();
    // Let a few retry rounds go by with the whole backlog on disk.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let rss_backlog = proc_status_mib(emitter.pid(), "VmHWM");
    let start = Instant::now();
    let receiver = Receiver::start(port);
    let last = tokio::task::block_in_place(|| receiver.wait_for(events, "backlog drain"));
    let drain_secs = last.duration_since(start).as_secs_f64();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let rss_after_drain = proc_status_mib(emitter.pid(), "VmHWM");
    receiver.check_signatures();
    emitter.stop();
    BacklogResult {
        events,
        ingest_secs,
        rss_backlog,
        rss_after_drain,
        drain_secs,
        depth_seen,
    }
}

#[derive(Default, Clone)]
pub struct StreamBacklogResult {
    pub events: usize,
    pub sandboxes: usize,
    /// Emitter started → it holds the leader lease.
    pub to_leader_secs: f64,
    /// Emitter started → the first delivery arrived.
    pub to_first_secs: f64,
    /// Emitter started → all delivered.
    pub total_secs: f64,
    /// First delivery → last.
    pub delivering_secs: f64,
    /// Distinct deliveries per second, each 0.5 s after the first delivery.
    pub curve: Vec<f64>,
}

impl StreamBacklogResult {
    /// events / (start → all delivered).
    pub fn rate(&self) -> f64 {
        self.events as f64 / self.total_secs
    }

    /// events / (first delivery → last): the rate once it delivers.
    pub fn delivering_rate(&self) -> f64 {
        self.events as f64 / self.delivering_secs
    }
}

/// What an earlier instance leaves when it stops (SIGTERM, as on an update): the group (at the
/// end of the then empty stream), the gate key, so the orchestrator publishes, and its lease
/// given up. The backlog rows write their events after this, before their emitter starts.
pub async fn leave_as_an_earlier_instance(
    redis: &RedisServer,
    conn: &mut MultiplexedConnection,
    webhook_url: &str,
    max_in_flight: usize,
) {
    let mut earlier = Emitter::launch(redis, &Launch::new(webhook_url, max_in_flight));
    earlier.wait_active(conn).await;
    earlier.stop();
}

/// Issue 17 item 4: the workload is already in the stream when the emitter starts (its consumer
/// group exists, as after a restart or an outage), and drains into a receiver that answers 200
/// without checking anything.
pub async fn stream_backlog_run(
    redis: &RedisServer,
    conn: &mut MultiplexedConnection,
    work: Workload,
    max_in_flight: usize,
    run: &str,
) -> StreamBacklogResult {
    reset_redis(conn).await;
    let receiver = Receiver::start_with(0, Check::Nothing, &[ENDPOINT_PATH]);
    leave_as_an_earlier_instance(redis, conn, &receiver.url(), max_in_flight).await;
    drop(receiver);
    write_burst(conn, run, work).await;
    let receiver = Receiver::start_with(0, Check::Nothing, &[ENDPOINT_PATH]);
    let started = Instant::now();
    let mut emitter = Emitter::launch(redis, &Launch::new(&receiver.url(), max_in_flight));
    emitter.wait_active(conn).await;
    let to_leader_secs = started.elapsed().as_secs_f64();
    let mut curve = Vec::new();
    let deadline = Instant::now() + patience_for(work.events);
    let mut mark: Option<(Instant, usize)> = None;
    while receiver.distinct() < work.events {
        assert!(
            Instant::now() < deadline,
            "stream backlog: only {} of {} events arrived:\n{}",
            receiver.distinct(),
            work.events,
            emitter.log_tail()
        );
        if let Some(first) = receiver.first_request() {
            let (at, seen) = *mark.get_or_insert((first, 0));
            if at.elapsed() >= Duration::from_millis(500) {
                let now = receiver.distinct();
                curve.push((now - seen) as f64 / at.elapsed().as_secs_f64());
                mark = Some((Instant::now(), now));
            }
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let last = receiver.wait_for(work.events, "stream backlog");
    let first = receiver.first_request().expect("a first delivery");
    receiver.check_signatures();
    emitter.stop();
    StreamBacklogResult {
        events: work.events,
        sandboxes: work.sandboxes,
        to_leader_secs,
        to_first_secs: first.duration_since(started).as_secs_f64(),
        total_secs: last.duration_since(started).as_secs_f64(),
        delivering_secs: last.duration_since(first).as_secs_f64(),
        curve,
    }
}
