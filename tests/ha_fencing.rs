//! Who may write the shared state, through the real binary against a real `redis-server` and
//! the Nomad 1.8 and orchestrator stand-ins: only the holder of the leader lease, checked in the
//! same Lua script as the write.
//!
//! - a reconciliation run that outlives its lease writes none of its events, even when its
//!   instance has won the lease back meanwhile;
//! - a takeover in the middle of the tombstone sweep: the old holder stops, the new one sweeps,
//!   no kill is lost or sent twice;
//! - the shared view rebuilt after Redis lost its data — by the holder that stays, and by a
//!   standby whose own reads are old — makes no false `create` or `kill`.

mod common;
mod support;

use common::eventually;
use nix::sys::signal::Signal;
use serde_json::Value;
use std::time::Duration;
use support::ha::*;
use support::redis::{Persistence, RedisOptions, RedisServer};

/// The shared view of sandboxes in Redis.
fn view_key() -> String {
    format!("{{{STREAM}}}:{GROUP}:sandboxes")
}

fn id_of(line: &str) -> String {
    serde_json::from_str::<Value>(line).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// Waits until every event of `lines` was delivered.
fn delivered(receiver: &common::TestReceiver, lines: &[&str]) {
    let ids: Vec<String> = lines.iter().map(|l| id_of(l)).collect();
    assert!(
        eventually(Duration::from_secs(30), || {
            let got = receiver.deliveries();
            ids.iter().all(|id| got.iter().any(|d| &d.event_id == id))
        }),
        "delivered: {ids:?}"
    );
}

/// Waits for `runs` more successful reconciliation runs of `instance`.
fn reconciles(instance: &Instance, runs: u64) {
    let from = reconcile_runs(instance);
    assert!(
        eventually(Duration::from_secs(30), || reconcile_runs(instance)
            >= from + runs),
        "{} reconciles; log:\n{}",
        instance.name,
        instance.log_text()
    );
}

/// Writes the events of `lines` as the orchestrator does and waits until they are delivered.
fn deliver(redis: &RedisServer, receiver: &common::TestReceiver, lines: &[&str]) {
    write_events(redis, &(lines.join("\n") + "\n"));
    delivered(receiver, lines);
}

#[test]
fn a_reconcile_run_that_outlives_its_lease_writes_nothing_even_after_winning_it_back() {
    let dir = tempfile::tempdir().unwrap();
    let redis = RedisServer::start();
    let cluster = Cluster::start();
    let receiver = accepting_receiver(0);
    // Running on the orchestrator; its `created` event is late.
    cluster.list(&["sbx-late"]);
    // Run 1 sees the difference; run 2, a grace later, decides a create — and waits half-way,
    // its `List` unanswered, until the test lets it go on.
    cluster.orchestrator.hold_from_call(2);
    let mut a = Instance::new(dir.path(), "a");
    a.extra = cluster.args_with("1s", "500ms");
    a.extra
        .extend(["--orchestrator-timeout", "300s", "--redis-trim", "false"].map(str::to_owned));
    a.start(&redis, receiver.port);
    assert!(eventually(Duration::from_secs(15), || a.is_active()));
    // b reads and delivers, but does not reconcile (no Nomad): any synthesized event is a's.
    let mut b = Instance::new(dir.path(), "b");
    b.extra = vec!["--redis-trim".into(), "false".into()];
    b.start(&redis, receiver.port);
    assert!(
        eventually(Duration::from_secs(30), || cluster
            .orchestrator
            .held_calls()
            == 1),
        "a's second run is waiting for the orchestrator; log:\n{}",
        a.log_text()
    );

    // a freezes past its lease; b takes over and delivers the late create.
    a.signal(Signal::SIGSTOP);
    assert!(
        eventually(Duration::from_secs(20), || b.is_active()),
        "b takes over from the frozen a"
    );
    let create = lifecycle_event("created", "sbx-late");
    deliver(&redis, &receiver, &[&create]);

    // a resumes as a standby; then b stops and a wins the lease back: a new lease value.
    a.signal(Signal::SIGCONT);
    assert!(
        eventually(Duration::from_secs(15), || !a.is_active()
            && a.status()["lease"]["holder"] == "b"),
        "a resumes as the standby"
    );
    b.signal(Signal::SIGTERM);
    b.wait_for_exit(Duration::from_secs(30));
    assert!(eventually(Duration::from_secs(15), || a.is_active()));

    // The run a began under its first lease goes on: what it decided then is not written.
    cluster.orchestrator.release();
    assert!(
        eventually(Duration::from_secs(20), || a
            .log_text()
            .contains("no longer holds the leader lease; not appended")),
        "the old run's create is refused; log:\n{}",
        a.log_text()
    );
    // Under its new lease a reconciles with the view b kept: the sandbox is known.
    reconciles(&a, 3);
    assert_eq!(
        synthetic(&receiver),
        Vec::<(String, String)>::new(),
        "no create from the run that outlived its lease"
    );
    assert!(
        stream_entries(&redis)
            .iter()
            .all(|e| e.get("source").map(String::as_str) != Some("reconcile")),
        "nothing synthesized reached the stream: {:?}",
        stream_entries(&redis)
    );
    assert_eq!(
        arrived(&receiver, "sbx-late"),
        vec![("create".to_owned(), id_of(&create))],
        "the orchestrator's own create, once"
    );
}

#[test]
fn a_takeover_during_the_tombstone_sweep_finishes_it_and_sends_no_kill_twice() {
    const OLD_TOMBSTONES: usize = 400_000;
    let dir = tempfile::tempdir().unwrap();
    let redis = RedisServer::start();
    let cluster = Cluster::start();
    let receiver = accepting_receiver(0);
    // A view with many tombstones of entries acknowledged long ago (below any entry the new
    // group can hand out), as after weeks of kills: the first sweep takes a while.
    let mut conn = redis.connection();
    let key = view_key();
    for chunk in (0..OLD_TOMBSTONES).collect::<Vec<_>>().chunks(2000) {
        let mut hset = redis::cmd("HSET");
        hset.arg(&key);
        for i in chunk {
            hset.arg(format!("sbx-gone-{i}")).arg("0-0|");
        }
        let _: i64 = hset.query(&mut conn).unwrap();
    }
    let hlen = |conn: &mut redis::Connection| -> usize {
        redis::cmd("HLEN").arg(&key).query(conn).unwrap()
    };
    let mut a = Instance::new(dir.path(), "a");
    let mut b = Instance::new(dir.path(), "b");
    for i in [&mut a, &mut b] {
        i.extra = cluster.args_with("500ms", "1s");
    }
    a.start(&redis, receiver.port);
    // a takes the lease and sweeps at once; it freezes half-way.
    assert!(
        eventually(Duration::from_secs(30), || hlen(&mut conn)
            < OLD_TOMBSTONES - 20_000),
        "a sweeps; log:\n{}",
        a.log_text()
    );
    a.signal(Signal::SIGSTOP);
    std::thread::sleep(Duration::from_millis(100));
    let left = hlen(&mut conn);
    assert!(
        left > 10_000,
        "a froze in the middle of its sweep ({left} fields left)"
    );

    // b takes over, finishes the sweep, and delivers creates and kills meanwhile.
    b.start(&redis, receiver.port);
    assert!(eventually(Duration::from_secs(20), || b.is_active()));
    let (k1, k2) = (
        lifecycle_event("created", "sbx-k1"),
        lifecycle_event("created", "sbx-k2"),
    );
    cluster.list(&["sbx-k1", "sbx-k2"]);
    deliver(&redis, &receiver, &[&k1, &k2]);
    let kill1 = lifecycle_event("killed", "sbx-k1");
    cluster.list(&["sbx-k2"]);
    deliver(&redis, &receiver, &[&kill1]);
    assert!(
        eventually(Duration::from_secs(60), || hlen(&mut conn) < 10),
        "b swept every old tombstone ({} fields left); log:\n{}",
        hlen(&mut conn),
        b.log_text()
    );

    // More old tombstones, which b leaves for its next sweep (in ten minutes).
    let mut hset = redis::cmd("HSET");
    hset.arg(&key);
    for i in 0..1000 {
        hset.arg(format!("sbx-gone-later-{i}")).arg("0-0|");
    }
    let _: i64 = hset.query(&mut conn).unwrap();

    // a resumes: its sweep ends — refused at its next page or batch, or cut short by the
    // timeout of the Redis command it was frozen in — and it removes nothing more. (What comes
    // after a sweep in its loop, a fenced read, tells that an unfenced sweep went on to the end.)
    a.signal(Signal::SIGCONT);
    assert!(
        eventually(Duration::from_secs(20), || {
            let log = a.log_text();
            [
                "stopped sweeping the shared view of sandboxes",
                "Redis source not consuming",
                "the leader lease is no longer ours",
            ]
            .iter()
            .any(|line| log.contains(line))
        }),
        "a stops sweeping; log:\n{}",
        a.log_text()
    );
    assert!(
        eventually(Duration::from_secs(20), || !a.is_active()
            && a.status()["lease"]["holder"] == "b"),
        "a stands by"
    );
    assert!(
        hlen(&mut conn) >= 1000,
        "the instance that lost the lease swept nothing more"
    );
    let kill2 = lifecycle_event("killed", "sbx-k2");
    cluster.list(&[]);
    deliver(&redis, &receiver, &[&kill2]);
    reconciles(&b, 4);
    let killed_view: String = redis::cmd("HGET")
        .arg(&key)
        .arg("sbx-k1")
        .query(&mut conn)
        .unwrap();
    assert!(
        killed_view.ends_with('|'),
        "the kill's tombstone is kept: {killed_view}"
    );
    assert_eq!(
        synthetic(&receiver),
        Vec::<(String, String)>::new(),
        "no kill made up for a sandbox whose kill was delivered"
    );
    for (sandbox, create, kill) in [("sbx-k1", &k1, &kill1), ("sbx-k2", &k2, &kill2)] {
        assert_eq!(
            arrived(&receiver, sandbox),
            vec![
                ("create".to_owned(), id_of(create)),
                ("kill".to_owned(), id_of(kill))
            ],
            "{sandbox}: each event once, in order"
        );
    }
    assert_eq!(receiver.deliveries().len(), 4, "nothing delivered twice");
}

#[test]
fn the_view_rebuilt_after_redis_lost_its_data_makes_no_false_create_or_kill() {
    let dir = tempfile::tempdir().unwrap();
    let mut redis = RedisServer::start_with(RedisOptions {
        persistence: Persistence::None,
        ..RedisOptions::default()
    });
    let cluster = Cluster::start();
    let receiver = accepting_receiver(0);
    let mut a = Instance::new(dir.path(), "a");
    let mut b = Instance::new(dir.path(), "b");
    for i in [&mut a, &mut b] {
        i.extra = cluster.args();
    }

    // b alone reads two creates.
    b.start(&redis, receiver.port);
    assert!(eventually(Duration::from_secs(15), || b.is_active()));
    let (x1, y) = (
        lifecycle_event("created", "sbx-x1"),
        lifecycle_event("created", "sbx-y"),
    );
    cluster.list(&["sbx-x1", "sbx-y"]);
    deliver(&redis, &receiver, &[&x1, &y]);

    // a takes over from b and reads what b never sees: sbx-y killed, sbx-z and sbx-w created.
    a.start(&redis, receiver.port);
    b.signal(Signal::SIGTERM);
    b.wait_for_exit(Duration::from_secs(30));
    assert!(eventually(Duration::from_secs(15), || a.is_active()));
    let (kill_y, z, w) = (
        lifecycle_event("killed", "sbx-y"),
        lifecycle_event("created", "sbx-z"),
        lifecycle_event("created", "sbx-w"),
    );
    cluster.list(&["sbx-x1", "sbx-z", "sbx-w"]);
    deliver(&redis, &receiver, &[&kill_y, &z, &w]);
    reconciles(&a, 3);

    // Redis restarts without its data; a keeps the lease and rebuilds the view from its
    // outbox — which never read sbx-x1's create.
    redis.restart();
    let mut conn = redis.connection();
    assert!(
        eventually(Duration::from_secs(30), || redis::cmd("HEXISTS")
            .arg(view_key())
            .arg(":view")
            .query::<bool>(&mut conn)
            .unwrap_or(false)),
        "the view is rebuilt; log:\n{}",
        a.log_text()
    );
    assert!(a.is_active(), "a kept the lease through the restart");
    reconciles(&a, 5);
    assert_eq!(
        synthetic(&receiver),
        Vec::<(String, String)>::new(),
        "no false create from the holder's rebuilt view; log:\n{}",
        a.log_text()
    );

    // b comes back as the standby, its own reads old (sbx-y running, sbx-z and sbx-w unknown),
    // and copies the shared view.
    b.start(&redis, receiver.port);
    assert!(
        eventually(Duration::from_secs(30), || b.status()["sandboxes"] == 3),
        "the standby's outbox holds the shared view's three sandboxes: {}",
        b.status()
    );
    // a's node is lost together with Redis's data: b rebuilds the view from its copy.
    a.kill9();
    redis.restart();
    let mut conn = redis.connection();
    assert!(eventually(Duration::from_secs(20), || b.is_active()));
    assert!(
        eventually(Duration::from_secs(30), || redis::cmd("HEXISTS")
            .arg(view_key())
            .arg(":view")
            .query::<bool>(&mut conn)
            .unwrap_or(false)),
        "b rebuilds the view; log:\n{}",
        b.log_text()
    );
    reconciles(&b, 5);
    assert_eq!(
        synthetic(&receiver),
        Vec::<(String, String)>::new(),
        "no false kill of sbx-y, no false create of sbx-z or sbx-w; log:\n{}",
        b.log_text()
    );

    // The reconciler still finds what really went missing.
    cluster.list(&["sbx-x1", "sbx-z", "sbx-w", "sbx-missed"]);
    assert!(
        eventually(Duration::from_secs(20), || synthetic(&receiver)
            == vec![("sbx-missed".to_owned(), "create".to_owned())]),
        "a synthesized create for the sandbox whose event never came: {:?}",
        synthetic(&receiver)
    );
}
