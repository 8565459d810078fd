//! High availability through the real binary: two instances (or one, restarted) against a real
//! `redis-server`, a receiver on a real socket. Each instance posts to its own path
//! (`/from-<name>`), so the receiver knows who delivered what.
//!
//! The lease lives 2 s here (`LEADER_LEASE_TTL`; 8 s by default) so failovers are quick.

mod common;
mod support;

use common::{Delivery, TestReceiver, eventually, free_port};
use serde_json::Value;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::ha::*;
use support::orchestrator_standin::sandbox;
use support::redis::{Persistence, RedisOptions, RedisServer};

// ---------------------------------------------------------------------------------------------

#[test]
fn a_lost_node_strands_nothing_the_standby_delivers_its_backlog_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let redis = RedisServer::start();
    let receiver_port = free_port(); // nothing listens yet: the receiver is down
    let mut a = Instance::new(dir.path(), "a");
    let mut b = Instance::new(dir.path(), "b");
    a.start(&redis, receiver_port);
    b.start(&redis, receiver_port);
    let first = wait_for_active(&[&a, &b], Duration::from_secs(20));

    let (events, expected) = common::lifecycle_ndjson(150, 20); // 3 000 events
    write_events(&redis, &events);
    // Read by the active instance into its outbox, undelivered: all pending in the group.
    assert!(
        eventually(Duration::from_secs(30), || pending(&redis) == 3000),
        "the active instance reads all 3 000 entries (pending: {})",
        pending(&redis)
    );
    std::thread::sleep(Duration::from_millis(500)); // some attempts fail meanwhile

    // The node is lost: the process dies and its disk is gone.
    let (lost, standby) = if first == 0 {
        (&mut a, &mut b)
    } else {
        (&mut b, &mut a)
    };
    lost.kill9();
    std::fs::remove_dir_all(&lost.data).unwrap();
    let killed_at = Instant::now();

    let receiver = accepting_receiver(receiver_port);
    assert!(
        eventually(Duration::from_secs(15), || standby.is_active()),
        "the standby takes over"
    );
    let took_over_after = killed_at.elapsed();
    wait_all_delivered(&receiver, &expected, Duration::from_secs(120));
    let deliveries = receiver.deliveries();
    assert_all_delivered_in_order(&deliveries, &expected);
    assert!(
        deliveries.iter().all(|d| d.path == standby.path()),
        "only the survivor delivered"
    );
    assert!(
        eventually(Duration::from_secs(15), || pending(&redis) == 0),
        "every entry is acknowledged once delivered (pending: {})",
        pending(&redis)
    );
    eprintln!("takeover {took_over_after:?} after the kill (lease ttl {LEASE_TTL})");
}

#[test]
fn two_healthy_instances_deliver_each_event_once() {
    let dir = tempfile::tempdir().unwrap();
    let redis = RedisServer::start();
    let receiver = accepting_receiver(0);
    let mut a = Instance::new(dir.path(), "a");
    let mut b = Instance::new(dir.path(), "b");
    a.start(&redis, receiver.port);
    b.start(&redis, receiver.port);
    let active = wait_for_active(&[&a, &b], Duration::from_secs(20));
    let (active, standby) = if active == 0 { (&a, &b) } else { (&b, &a) };
    assert_eq!(
        standby.readyz(),
        200,
        "a healthy standby is ready, so Nomad keeps it"
    );
    assert!(active.metrics().contains("e2b_webhook_leader 1"));
    assert!(standby.metrics().contains("e2b_webhook_leader 0"));
    assert!(
        eventually(
            Duration::from_secs(5),
            || standby.status()["lease"]["holder"] == active.name.as_str()
        ),
        "the standby shows who holds the lease: {}",
        standby.status()
    );
    let status = standby.status();
    assert!(status["lease"]["since"].is_string(), "{status}");
    assert!(status["lease"]["fence"].as_u64() >= Some(1), "{status}");

    let (events, expected) = common::lifecycle_ndjson(100, 20); // 2 000 events
    write_events(&redis, &events);
    let deliveries = each_delivered_once_and_acknowledged(&redis, &receiver, &expected);
    assert!(deliveries.iter().all(|d| d.path == active.path()));
}

#[test]
fn a_graceful_stop_hands_the_lease_over_at_once_and_delivers_nothing_twice() {
    let dir = tempfile::tempdir().unwrap();
    let redis = RedisServer::start();
    // Slow enough answers that deliveries are in flight when the active instance is stopped.
    let receiver = TestReceiver::start_slow(
        0,
        SECRET,
        Arc::new(|_: &str, _: &str, _: u32| 200),
        Duration::from_millis(2),
    );
    // A lease absent for 4 s (a third of 12 s) is taken; a released one at once.
    let mut a = Instance::new(dir.path(), "a");
    let mut b = Instance::new(dir.path(), "b");
    a.lease_ttl = "12s";
    b.lease_ttl = "12s";
    a.start(&redis, receiver.port);
    b.start(&redis, receiver.port);
    let first = wait_for_active(&[&a, &b], Duration::from_secs(20));
    let (active, standby) = if first == 0 {
        (&mut a, &mut b)
    } else {
        (&mut b, &mut a)
    };

    let (events, expected) = common::lifecycle_ndjson(100, 20); // 2 000 events
    let lines: Vec<&str> = events.lines().collect();
    let (before, after) = lines.split_at(1000);
    write_events(&redis, &before.join("\n"));
    assert!(
        eventually(Duration::from_secs(30), || receiver.deliveries().len()
            >= 300),
        "deliveries start"
    );
    active.signal(nix::sys::signal::Signal::SIGTERM);
    write_events(&redis, &after.join("\n"));
    let stopping = active.wait_for_exit(Duration::from_secs(60));
    let exited_at = Instant::now();
    assert!(
        eventually(Duration::from_secs(10), || standby.is_active()),
        "the standby takes over"
    );
    let took_over_after = exited_at.elapsed();
    assert!(
        took_over_after < Duration::from_secs(3),
        "a released lease is taken at once, not after it was absent for 4 s: {took_over_after:?}"
    );
    assert!(
        stopping.log_text().contains("gave up the leader lease"),
        "the stopped instance released its lease"
    );

    // The stopped instance acknowledged what it delivered before giving the lease up, so the
    // standby's claim of every pending entry found none of those.
    let deliveries = each_delivered_once_and_acknowledged(&redis, &receiver, &expected);
    let by_standby = deliveries
        .iter()
        .filter(|d| d.path == standby.path())
        .count();
    assert!(
        by_standby > 0 && by_standby < 2000,
        "both delivered a part ({by_standby} by the standby)"
    );
    eprintln!("takeover {took_over_after:?} after the graceful stop (lease ttl 12s)");
}

#[test]
fn a_released_lease_expires_so_that_an_older_version_takes_over_after_a_rollback() {
    let dir = tempfile::tempdir().unwrap();
    let redis = RedisServer::start();
    let mut a = Instance::new(dir.path(), "a");
    a.start(&redis, free_port());
    assert!(eventually(Duration::from_secs(15), || a.is_active()));
    a.signal(nix::sys::signal::Signal::SIGTERM);
    a.wait_for_exit(Duration::from_secs(30));
    let mut conn = redis.connection();
    let key = format!("{{{STREAM}}}:{GROUP}:leader");
    let value: String = redis::cmd("GET").arg(&key).query(&mut conn).unwrap();
    let ttl_ms: i64 = redis::cmd("PTTL").arg(&key).query(&mut conn).unwrap();
    assert!(value.starts_with("released|a|"), "{value}");
    // An older version knows no released mark: it waits for the key to vanish, as after a crash.
    assert!(
        ttl_ms > 0 && ttl_ms <= 2000,
        "the mark lives one time to live ({LEASE_TTL}): {ttl_ms} ms"
    );
}

#[test]
fn a_frozen_leader_is_replaced_and_stops_delivering_when_it_resumes() {
    use nix::sys::signal::Signal;
    let dir = tempfile::tempdir().unwrap();
    let redis = RedisServer::start();
    let receiver = accepting_receiver(0);
    let mut a = Instance::new(dir.path(), "a");
    let mut b = Instance::new(dir.path(), "b");
    a.extra = vec!["--max-in-flight".into(), "8".into()];
    b.extra = a.extra.clone();
    a.start(&redis, receiver.port);
    b.start(&redis, receiver.port);
    let first = wait_for_active(&[&a, &b], Duration::from_secs(20));
    let (frozen, other) = if first == 0 { (&a, &b) } else { (&b, &a) };

    // Events keep coming while the leader is frozen and replaced.
    let (events, expected) = common::lifecycle_ndjson(60, 20); // 1 200 events
    let writer = write_in_background(&redis.url(), &events, 20, Duration::from_millis(100));
    std::thread::sleep(Duration::from_millis(1500));
    frozen.signal(Signal::SIGSTOP);
    let stopped_at = Instant::now();
    assert!(
        eventually(Duration::from_secs(15), || other.is_active()),
        "the standby takes over from the frozen leader"
    );
    let takeover = stopped_at.elapsed();
    std::thread::sleep(Duration::from_secs(1));
    let resumed_at = Instant::now();
    frozen.signal(Signal::SIGCONT);
    writer.join().unwrap();
    wait_all_delivered(&receiver, &expected, Duration::from_secs(60));
    assert!(
        eventually(Duration::from_secs(10), || !frozen.is_active()
            && frozen.status()["lease"]["holder"] == other.name.as_str()),
        "the resumed instance is a standby and sees who holds the lease"
    );
    assert_eq!(frozen.readyz(), 200, "and it stays ready");
    std::thread::sleep(Duration::from_secs(1));

    let deliveries = receiver.deliveries();
    assert_all_delivered_in_order(&deliveries, &expected);
    // After it resumed, the old leader sent at most what it had in flight when it froze.
    let late: Vec<&Delivery> = deliveries
        .iter()
        .filter(|d| d.path == frozen.path() && d.at > resumed_at)
        .collect();
    assert!(
        late.len() <= 8,
        "{} requests from the old leader after it resumed",
        late.len()
    );
    // No event went out from both in the same window: everything the old leader sent after
    // the takeover began was in flight before it froze.
    let by_frozen_after_freeze = deliveries
        .iter()
        .filter(|d| d.path == frozen.path() && d.at > stopped_at + Duration::from_millis(50))
        .count();
    assert!(by_frozen_after_freeze <= 8, "{by_frozen_after_freeze}");
    let frozen_log = frozen.log_text();
    assert!(
        frozen_log.contains("stopped delivering"),
        "the old leader logs that it stepped down"
    );
    eprintln!(
        "takeover {takeover:?} after SIGSTOP; {} deliveries, {} distinct",
        deliveries.len(),
        deliveries
            .iter()
            .map(|d| &d.event_id)
            .collect::<HashSet<_>>()
            .len()
    );
}

#[test]
fn a_redis_restart_without_data_loses_nothing_already_read() {
    let dir = tempfile::tempdir().unwrap();
    let mut redis = RedisServer::start_with(RedisOptions {
        persistence: Persistence::None,
        ..RedisOptions::default()
    });
    let receiver_port = free_port();
    let mut a = Instance::new(dir.path(), "a");
    let mut b = Instance::new(dir.path(), "b");
    a.start(&redis, receiver_port);
    b.start(&redis, receiver_port);
    wait_for_active(&[&a, &b], Duration::from_secs(20));

    let (events, expected) = common::lifecycle_ndjson(30, 10);
    write_events(&redis, &events);
    assert!(
        eventually(Duration::from_secs(30), || pending(&redis) == 300),
        "the active instance read every entry"
    );
    redis.restart(); // no persistence: the stream, the group, the lease are gone
    let receiver = accepting_receiver(receiver_port);
    wait_all_delivered(&receiver, &expected, Duration::from_secs(60));
    assert_all_delivered_in_order(&receiver.deliveries(), &expected);

    // And the pipeline goes on with the new Redis.
    let active = wait_for_active(&[&a, &b], Duration::from_secs(20));
    let mut conn = redis.connection();
    assert!(
        eventually(Duration::from_secs(20), || {
            redis::cmd("EXISTS")
                .arg(format!("wh:{TEAM}"))
                .query::<i64>(&mut conn)
                .unwrap_or(0)
                == 1
        }),
        "the gate key is set again"
    );
    let (more, more_expected) = common::lifecycle_ndjson(5, 2);
    let more = more.replace("-8000-", "-9000-"); // new event ids
    let more_expected: HashMap<String, Vec<String>> = more_expected
        .into_iter()
        .map(|(s, ids)| {
            (
                s,
                ids.into_iter()
                    .map(|i| i.replace("-8000-", "-9000-"))
                    .collect(),
            )
        })
        .collect();
    write_events(&redis, &more);
    wait_all_delivered(&receiver, &more_expected, Duration::from_secs(30));
    let _ = active;
}

#[test]
fn a_dead_letter_set_aside_by_one_instance_is_listed_and_replayed_through_the_other() {
    let dir = tempfile::tempdir().unwrap();
    let redis = RedisServer::start();
    let refuse = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let receiver = {
        let refuse = refuse.clone();
        TestReceiver::start(
            0,
            SECRET,
            Arc::new(move |_: &str, sandbox: &str, _: u32| {
                if sandbox == "isb00000" && refuse.load(std::sync::atomic::Ordering::SeqCst) {
                    422
                } else {
                    200
                }
            }),
        )
    };
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        "[retry]\nschedule = [\"100ms\"]\nmax_age = \"1s\"\n",
    )
    .unwrap();
    let mut a = Instance::new(dir.path(), "a");
    let mut b = Instance::new(dir.path(), "b");
    for i in [&mut a, &mut b] {
        i.extra = vec!["--config".into(), config.display().to_string()];
    }
    a.start(&redis, receiver.port);
    b.start(&redis, receiver.port);
    let first = wait_for_active(&[&a, &b], Duration::from_secs(20));
    let (events, _) = common::lifecycle_ndjson(1, 1); // isb00000 created
    write_events(&redis, &events);

    assert!(
        eventually(Duration::from_secs(20), || shared_dead_letters(&redis)
            .len()
            == 1),
        "the dead letter is in Redis"
    );
    let letter = shared_dead_letters(&redis).remove(0);
    assert_eq!(letter["sandbox_id"], "isb00000");
    assert_eq!(letter["endpoint"], "default");
    assert!(
        letter["reason"].as_str().unwrap().contains("422"),
        "{letter}"
    );
    assert!(
        eventually(Duration::from_secs(10), || pending(&redis) == 0),
        "its entry is acknowledged once the dead letter is stored"
    );

    // The instance that set it aside stops; the other becomes active and gets the replay.
    let (gone, other) = if first == 0 {
        (&mut a, &mut b)
    } else {
        (&mut b, &mut a)
    };
    gone.signal(nix::sys::signal::Signal::SIGTERM);
    assert!(eventually(Duration::from_secs(15), || other.is_active()));
    refuse.store(false, std::sync::atomic::Ordering::SeqCst);
    let id = letter["id"].as_u64().unwrap().to_string();
    let (code, out, err) = common::output(
        common::emitter()
            .args(["dead-letters", "replay", "--redis-url"])
            .arg(redis.url())
            .arg(&id),
    );
    assert_eq!(code, 0, "{out}{err}");
    let event_id = letter["event_id"].as_str().unwrap().to_owned();
    assert!(
        eventually(Duration::from_secs(20), || receiver
            .deliveries()
            .iter()
            .any(|d| d.event_id == event_id && d.path == other.path())),
        "the replayed event is delivered by the other instance"
    );
    assert!(
        shared_dead_letters(&redis).is_empty(),
        "a replayed dead letter leaves the list"
    );
}

#[test]
fn restarts_under_new_consumer_names_keep_order_and_lose_nothing() {
    let dir = tempfile::tempdir().unwrap();

    let redis = RedisServer::start();
    // Fail about one request in five, deterministically per (event, attempt).
    let decide = Arc::new(|id: &str, _: &str, attempt: u32| {
        let h = id.bytes().fold(attempt as u64 * 7919, |h, b| {
            h.wrapping_mul(31).wrapping_add(b as u64)
        });
        if h % 5 == 0 { 503 } else { 200 }
    });
    let receiver = TestReceiver::start(0, SECRET, decide);
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        "[retry]\nschedule = [\"20ms\", \"50ms\", \"100ms\"]\nmax_age = \"1h\"\n",
    )
    .unwrap();
    let (events, expected) = common::lifecycle_ndjson(150, 20); // 3 000 events
    let config_arg = config.display().to_string();
    let incarnation = |round: usize| {
        // A new name each time, as a rescheduled allocation (or a shell without HOSTNAME) gets,
        // and a new DATA_DIR: what the previous one had read is known only to Redis.
        let mut instance = Instance::new(dir.path(), &format!("incarnation-{round}"));
        instance.extra = vec!["--config".into(), config_arg.clone()];
        instance
    };
    // The orchestrator publishes once the gate key exists, which is after the group exists.
    let mut first = incarnation(0);
    first.start(&redis, receiver.port);
    assert!(eventually(Duration::from_secs(15), || first.is_active()));
    let writer = write_in_background(&redis.url(), &events, 100, Duration::from_millis(200));
    let mut kills = 0;
    let mut rng: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = Some(first);
    for round in 0..6 {
        let mut instance = next.take().unwrap_or_else(|| {
            let mut instance = incarnation(round);
            instance.start(&redis, receiver.port);
            instance
        });
        if round == 5 {
            writer_done(&writer);
            wait_all_delivered(&receiver, &expected, Duration::from_secs(120));
            break;
        }
        assert!(eventually(Duration::from_secs(15), || instance.is_active()));
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        std::thread::sleep(Duration::from_millis(300 + rng % 1200));
        instance.kill9();
        kills += 1;
    }
    writer.join().unwrap();
    assert_eq!(kills, 5);
    assert_all_delivered_in_order(&receiver.deliveries(), &expected);
}

#[test]
fn a_synthesized_event_goes_through_the_stream_and_survives_the_loss_of_the_active_node() {
    let dir = tempfile::tempdir().unwrap();
    let redis = RedisServer::start();
    let cluster = Cluster::start();
    // Running on the orchestrator; its `created` event never came.
    cluster
        .orchestrator
        .set_sandboxes(vec![sandbox("sbx-unannounced", TEAM, "exec-u")]);
    let receiver_port = free_port(); // the receiver is down
    let mut a = Instance::new(dir.path(), "a");
    let mut b = Instance::new(dir.path(), "b");
    for i in [&mut a, &mut b] {
        // Keep acknowledged entries, so the test sees what went through the stream.
        i.extra = cluster.args();
        i.extra.extend(["--redis-trim".into(), "false".into()]);
    }
    a.start(&redis, receiver_port);
    assert!(eventually(Duration::from_secs(15), || a.is_active()));
    b.start(&redis, receiver_port);

    // The reconciler appends its create to the stream, marked as its own, and the active
    // instance reads it like any entry: it is pending in the group until delivered.
    let synthesized = |redis: &RedisServer| -> Vec<Value> {
        stream_entries(redis)
            .into_iter()
            .filter(|e| e.get("source").map(String::as_str) == Some("reconcile"))
            .map(|e| serde_json::from_str(&e["payload"]).unwrap())
            .collect()
    };
    assert!(
        eventually(Duration::from_secs(20), || synthesized(&redis).len() == 1
            && pending(&redis) == 1),
        "the synthesized create is appended to the stream and read (entries: {:?}); log:\n{}",
        stream_entries(&redis),
        a.log_text()
    );
    let create = synthesized(&redis).remove(0);
    assert_eq!(create["sandbox_id"], "sbx-unannounced");
    assert_eq!(create["type"], "sandbox.lifecycle.created");
    assert_eq!(create["event_data"]["synthetic"], true);
    // Counted once committed to the outbox, just after the read.
    let counted = eventually(Duration::from_secs(10), || {
        a.metrics()
            .contains(r#"e2b_webhook_events_received_total{source="reconcile",type="create"} 1"#)
    });
    assert!(
        counted,
        "read back from the stream as the reconciler's: {}",
        a.metrics()
            .lines()
            .filter(|l| l.contains("events_received"))
            .collect::<Vec<_>>()
            .join("\n")
    );

    // The node is lost before the receiver took it: the other instance delivers it.
    a.kill9();
    std::fs::remove_dir_all(&a.data).unwrap();
    let receiver = accepting_receiver(receiver_port);
    assert!(
        eventually(Duration::from_secs(30), || !arrived(
            &receiver,
            "sbx-unannounced"
        )
        .is_empty()),
        "the survivor delivers the synthesized create; log:\n{}",
        b.log_text()
    );
    std::thread::sleep(Duration::from_secs(2)); // several reconcile runs on the survivor
    let got = arrived(&receiver, "sbx-unannounced");
    assert_eq!(
        got,
        vec![(
            "create".to_owned(),
            create["id"].as_str().unwrap().to_owned()
        )],
        "the same event, once, and no second create from the survivor's reconciler"
    );
    assert!(receiver.deliveries().iter().all(|d| d.path == b.path()));
    assert!(eventually(Duration::from_secs(10), || pending(&redis) == 0));
}

#[test]
fn backfill_with_redis_appends_to_the_stream_and_survives_the_loss_of_the_active_node() {
    let dir = tempfile::tempdir().unwrap();
    let redis = RedisServer::start();
    let receiver_port = free_port(); // the receiver is down
    let mut a = Instance::new(dir.path(), "a");
    let mut b = Instance::new(dir.path(), "b");
    a.start(&redis, receiver_port);
    assert!(eventually(Duration::from_secs(15), || a.is_active()));
    b.start(&redis, receiver_port);

    let (events, expected) = common::lifecycle_ndjson(10, 6); // 60 events
    let file = dir.path().join("export.ndjson");
    std::fs::write(&file, &events).unwrap();
    let backfill_log = dir.path().join("backfill.log");
    let log = std::fs::File::create(&backfill_log).unwrap();
    let mut backfill = common::emitter()
        .args(["backfill", "--redis-url"])
        .arg(redis.url())
        .args(["--team-ids", TEAM, "--webhook-url"])
        .arg(format!("http://127.0.0.1:{receiver_port}/from-backfill"))
        .args(["--webhook-secret", SECRET, "--data-dir"])
        .arg(dir.path().join("data-backfill"))
        .arg(&file)
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    let backfilled = |redis: &RedisServer| {
        stream_entries(redis)
            .iter()
            .filter(|e| e.get("source").map(String::as_str) == Some("backfill"))
            .count()
    };
    assert!(
        eventually(Duration::from_secs(20), || pending(&redis) == 60),
        "the backfill's events are in the stream and read by the active instance (pending {}, in the stream {})",
        pending(&redis),
        backfilled(&redis)
    );
    assert_eq!(backfilled(&redis), 60, "each marked as the backfill's");
    assert!(
        backfill.try_wait().unwrap().is_none(),
        "backfill waits until they are delivered"
    );
    assert!(
        !dir.path().join("data-backfill").exists(),
        "with Redis, backfill keeps no outbox of its own"
    );

    a.kill9();
    std::fs::remove_dir_all(&a.data).unwrap();
    let receiver = accepting_receiver(receiver_port);
    wait_all_delivered(&receiver, &expected, Duration::from_secs(60));
    let deliveries = receiver.deliveries();
    assert_all_delivered_in_order(&deliveries, &expected);
    assert!(deliveries.iter().all(|d| d.path == b.path()));
    let exited = eventually(Duration::from_secs(20), || {
        backfill.try_wait().unwrap().is_some()
    });
    let output = std::fs::read_to_string(&backfill_log).unwrap();
    assert!(
        exited,
        "backfill returns once they are delivered:\n{output}"
    );
    assert!(backfill.wait().unwrap().success(), "{output}");
    assert!(output.contains("backfill done: 60 events"), "{output}");
}

#[test]
fn an_instance_that_takes_over_reconciles_with_what_every_instance_read() {
    let dir = tempfile::tempdir().unwrap();
    let redis = RedisServer::start();
    let cluster = Cluster::start();
    let receiver = accepting_receiver(0);
    let mut a = Instance::new(dir.path(), "a");
    let mut b = Instance::new(dir.path(), "b");
    for i in [&mut a, &mut b] {
        i.extra = cluster.args();
    }
    let delivered = |ids: &[&str]| {
        let wanted: Vec<&str> = ids.to_vec();
        assert!(
            eventually(Duration::from_secs(20), || {
                let got = receiver.deliveries();
                wanted.iter().all(|w| got.iter().any(|d| d.event_id == *w))
            }),
            "delivered"
        );
    };
    let id_of = |line: &str| -> String {
        serde_json::from_str::<Value>(line).unwrap()["id"]
            .as_str()
            .unwrap()
            .to_owned()
    };

    // b alone reads two creates: its own view has both.
    b.start(&redis, receiver.port);
    assert!(eventually(Duration::from_secs(15), || b.is_active()));
    let (old1, old2) = (
        lifecycle_event("created", "sbx-old-1"),
        lifecycle_event("created", "sbx-old-2"),
    );
    cluster.list(&["sbx-old-1", "sbx-old-2"]);
    write_events(&redis, &format!("{old1}\n{old2}\n"));
    delivered(&[&id_of(&old1), &id_of(&old2)]);

    // a takes over from b, which stops, and reads a kill and a create b never sees.
    a.start(&redis, receiver.port);
    b.signal(nix::sys::signal::Signal::SIGTERM);
    assert!(eventually(Duration::from_secs(15), || a.is_active()));
    b.running.take().unwrap().child.wait().unwrap();
    let (kill1, new3) = (
        lifecycle_event("killed", "sbx-old-1"),
        lifecycle_event("created", "sbx-new-3"),
    );
    write_events(&redis, &format!("{kill1}\n{new3}\n"));
    cluster.list(&["sbx-old-2", "sbx-new-3"]);
    delivered(&[&id_of(&kill1), &id_of(&new3)]);
    // a never read sbx-old-2's create: it compares with the shared view, not its own.
    let runs = reconcile_runs(&a);
    assert!(
        eventually(Duration::from_secs(20), || reconcile_runs(&a) >= runs + 5),
        "a reconciles; log:\n{}",
        a.log_text()
    );

    // b comes back as the standby with its old view (sbx-old-1 running, sbx-new-3 unknown),
    // and takes over when a's node is lost.
    b.start(&redis, receiver.port);
    std::thread::sleep(Duration::from_secs(1));
    a.kill9();
    std::fs::remove_dir_all(&a.data).unwrap();
    assert!(eventually(Duration::from_secs(15), || b.is_active()));
    assert!(
        eventually(Duration::from_secs(20), || reconcile_runs(&b) >= 5),
        "b reconciles after taking over; log:\n{}",
        b.log_text()
    );
    assert_eq!(
        synthetic(&receiver),
        Vec::<(String, String)>::new(),
        "no false create or kill from either instance's own stale view"
    );

    // The reconciler of b still finds what really went missing.
    cluster.list(&["sbx-old-2", "sbx-new-3", "sbx-missed-4"]);
    assert!(
        eventually(Duration::from_secs(20), || synthetic(&receiver)
            == vec![("sbx-missed-4".to_owned(), "create".to_owned())]),
        "a synthesized create for the sandbox whose event never came: {:?}; log:\n{}",
        synthetic(&receiver),
        b.log_text()
    );
}

#[test]
fn backfill_with_redis_sets_malformed_lines_aside_where_every_instance_sees_them() {
    let dir = tempfile::tempdir().unwrap();
    let redis = RedisServer::start();
    let receiver = accepting_receiver(0);
    let mut a = Instance::new(dir.path(), "a");
    a.start(&redis, receiver.port);
    assert!(eventually(Duration::from_secs(15), || a.is_active()));
    let (events, expected) = common::lifecycle_ndjson(2, 2);
    let file = dir.path().join("export.ndjson");
    std::fs::write(&file, format!("{events}{{not an event\n")).unwrap();
    let (code, out, err) = common::output(
        common::emitter()
            .args(["backfill", "--redis-url"])
            .arg(redis.url())
            .args(["--team-ids", TEAM, "--webhook-url"])
            .arg(format!("http://127.0.0.1:{}/unused", receiver.port))
            .args(["--webhook-secret", SECRET])
            .arg(&file),
    );
    assert_eq!(code, 1, "a malformed line makes backfill fail:\n{out}{err}");
    assert!(err.contains("1 malformed"), "{err}");
    wait_all_delivered(&receiver, &expected, Duration::from_secs(20));
    let letters = shared_dead_letters(&redis);
    assert_eq!(letters.len(), 1, "{letters:?}");
    assert_eq!(letters[0]["source"], "backfill");
    assert_eq!(letters[0]["position"], "line 5");
    assert_eq!(letters[0]["raw"], "{not an event");

    // Without the service's consumer group, backfill appends nothing and says why.
    let (code, _, err) = common::output(
        common::emitter()
            .args(["backfill", "--redis-url"])
            .arg(redis.url())
            .args(["--redis-group", "nobody", "--webhook-url"])
            .arg(format!("http://127.0.0.1:{}/unused", receiver.port))
            .args(["--webhook-secret", SECRET])
            .arg(&file),
    );
    assert_ne!(code, 0);
    assert!(err.contains("no consumer group nobody"), "{err}");
}
