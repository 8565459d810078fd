//! The Redis source end to end: a real `redis-server`, the real binary, a receiver in the test.
//!
//! Events are written the way the orchestrator writes them (`XADD sandbox.events.stream * payload
//! <json>`), and every assertion polls with a deadline.

mod common;
mod support;

use common::wait_until;
use serde_json::{Value, json};
use std::collections::{BTreeSet, HashMap};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use support::redis::{Persistence, RedisOptions, RedisServer};

const STREAM: &str = "sandbox.events.stream";
const GROUP: &str = "e2b-webhook-emitter";
const SECRET: &str = "whk-test-secret-7f3a";
const TEAM_A: &str = "0b8b8a4e-6f4e-4c4a-9a57-3a2f5d3b1c2d";
const TEAM_B: &str = "9d3c1f0e-2a4b-4c6d-8e0f-1a2b3c4d5e6f";

// ---------------------------------------------------------------------------------------------
// Tests

#[test]
fn orchestrator_events_arrive_signed_mapped_and_in_order() {
    let password = "redis-pass-Qx81";
    let redis = RedisServer::start_with(RedisOptions {
        password: Some(password.to_owned()),
        ..RedisOptions::default()
    });
    let receiver = Receiver::start();
    let data = tempfile::tempdir().unwrap();
    let emitter = Emitter::start(EmitterArgs::new(&redis, &receiver, data.path()));
    let mut conn = redis.connection();
    wait_for_gate_keys(&mut conn, &[TEAM_A, TEAM_B]);

    let sandbox = "isb-lifecycle-1";
    let written = [
        (
            v2_event(
                "created",
                sandbox,
                TEAM_A,
                json!({"sandbox_metadata": {"user": "ü", "run": "42"}}),
            ),
            "create",
        ),
        (
            v2_event(
                "paused",
                sandbox,
                TEAM_A,
                json!({"execution": {"started_at": "2025-10-15T11:00:00Z", "vcpu_count": 2, "memory_mb": 512, "execution_time": 3_600_000}}),
            ),
            "pause",
        ),
        (v2_event("resumed", sandbox, TEAM_A, json!({})), "resume"),
        (v1_event("kill", sandbox, TEAM_A), "kill"),
        (
            v2_event(
                "killed",
                "isb-other-team",
                TEAM_B,
                json!({"kill_reason": "timeout"}),
            ),
            "kill",
        ),
    ];
    for (event, _) in &written {
        xadd_payload(&mut conn, &event.to_string());
    }

    let received = receiver.wait_for_count(written.len());
    for request in &received {
        assert_eq!(
            request.header("x-e2b-signature"),
            Some(openssl_hmac_sha256(SECRET, &request.body).as_str()),
            "the signature must be hex HMAC-SHA256 of the exact body (checked with openssl)"
        );
    }
    let by_id: HashMap<String, Value> = received
        .iter()
        .map(|r| {
            let body = r.json();
            (body["id"].as_str().unwrap().to_owned(), body)
        })
        .collect();
    for (event, label) in &written {
        let body = &by_id[event["id"].as_str().unwrap()];
        assert_eq!(body["eventCategory"], "sandbox");
        assert_eq!(body["eventLabel"], *label, "label of {event}");
        assert_eq!(body["sandboxId"], event["sandbox_id"]);
        assert_eq!(body["sandboxTeamId"], event["sandbox_team_id"]);
        assert_eq!(body["timestamp"], event["timestamp"]);
        assert_eq!(body["sandboxExecutionId"], event["sandbox_execution_id"]);
        if let Some(data) = event.get("event_data") {
            assert_eq!(
                body["eventData"], *data,
                "event data is passed on as received"
            );
        }
    }
    // One sandbox's events arrive in the order the orchestrator wrote them.
    let order: Vec<String> = received
        .iter()
        .map(Received::json)
        .filter(|b| b["sandboxId"] == sandbox)
        .map(|b| b["eventLabel"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(order, ["create", "pause", "resume", "kill"]);

    wait_until("every entry acknowledged", || {
        (pending_count(&mut conn) == 0).then_some(())
    });
    let logs = emitter.logs().join("\n");
    assert!(
        !logs.contains(password),
        "the Redis password must never be logged"
    );
    assert!(
        logs.contains(&format!("127.0.0.1:{}", redis.port())),
        "the Redis host:port is logged"
    );
}

#[test]
fn rediss_with_a_private_ca_and_a_password_in_the_url() {
    let password = "tls-pass-9Kd2";
    let redis = RedisServer::start_with(RedisOptions {
        tls: true,
        password: Some(password.to_owned()),
        ..RedisOptions::default()
    });
    let mut conn = redis.connection();
    let receiver = Receiver::start();
    let data = tempfile::tempdir().unwrap();
    let mut args = EmitterArgs::new(&redis, &receiver, data.path());
    assert!(args.redis_url.starts_with("rediss://"));
    let ca = base64::Engine::encode(
        &base64::engine::general_purpose::STANDARD,
        redis.tls_ca_pem(),
    );
    args.extra(&["--redis-tls-ca-base64", &ca]);
    let emitter = Emitter::start(args);
    wait_for_gate_keys(&mut conn, &[TEAM_A, TEAM_B]);

    let events: Vec<Value> = (0..2)
        .map(|i| v2_event("created", &format!("isb-tls-{i}"), TEAM_A, json!({})))
        .collect();
    for event in &events {
        xadd_payload(&mut conn, &event.to_string());
    }
    receiver.wait_for_ids(&ids_of(&events));
    assert!(
        !emitter.logs().join("\n").contains(password),
        "the Redis password must never be logged"
    );
}

#[test]
fn gate_keys_exist_with_an_expiry_for_configured_teams_only_and_outlive_a_stop() {
    let redis = RedisServer::start();
    let mut conn = redis.connection();
    let receiver = Receiver::start();
    let data = tempfile::tempdir().unwrap();
    let mut emitter = Emitter::start(EmitterArgs::new(&redis, &receiver, data.path()));
    wait_for_gate_keys(&mut conn, &[TEAM_A, TEAM_B]);

    let expected: BTreeSet<String> = [TEAM_A, TEAM_B].iter().map(|t| format!("wh:{t}")).collect();
    assert_eq!(scan_gate_keys(&mut conn), expected);
    for key in &expected {
        let ttl: i64 = redis::cmd("TTL").arg(key).query(&mut conn).unwrap();
        assert!(
            (1..=600).contains(&ttl),
            "{key} must expire by itself (TTL {ttl})"
        );
    }

    emitter.terminate();
    assert_eq!(
        scan_gate_keys(&mut conn),
        expected,
        "a normal stop must not delete the gate keys: the orchestrator keeps publishing through a restart"
    );
}

#[test]
fn without_teams_it_warns_and_sets_no_gate_key() {
    let redis = RedisServer::start();
    let mut conn = redis.connection();
    let receiver = Receiver::start();
    let data = tempfile::tempdir().unwrap();
    let mut args = EmitterArgs::new(&redis, &receiver, data.path());
    args.teams.clear();
    let emitter = Emitter::start(args);
    let warning = emitter.wait_for_log(|line| {
        line["level"] == "WARN"
            && line["message"]
                .as_str()
                .is_some_and(|m| m.contains("E2B_TEAM_IDS is empty"))
    });
    assert!(
        warning["message"]
            .as_str()
            .unwrap()
            .contains("set E2B_TEAM_IDS")
    );
    wait_until("the consumer group exists", || {
        group_exists(&mut conn).then_some(())
    });
    assert!(scan_gate_keys(&mut conn).is_empty());
}

#[test]
fn a_new_group_starts_at_the_end_of_an_existing_stream() {
    let redis = RedisServer::start();
    let mut conn = redis.connection();
    // History written before the emitter ever ran (for someone else, or a previous install).
    let old = v2_event("created", "isb-history", TEAM_A, json!({}));
    xadd_payload(&mut conn, &old.to_string());

    let receiver = Receiver::start();
    let data = tempfile::tempdir().unwrap();
    let _emitter = Emitter::start(EmitterArgs::new(&redis, &receiver, data.path()));
    wait_for_gate_keys(&mut conn, &[TEAM_A, TEAM_B]);
    let new = v2_event("killed", "isb-history", TEAM_A, json!({}));
    xadd_payload(&mut conn, &new.to_string());

    // Same sandbox, so the old event would have been delivered first had it been read.
    receiver.wait_for_ids(&ids_of(std::slice::from_ref(&new)));
    let delivered: Vec<String> = receiver
        .received()
        .iter()
        .map(|r| r.json()["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(delivered, [new["id"].as_str().unwrap()]);
}

#[test]
fn entries_this_consumer_read_but_never_acknowledged_are_delivered_when_it_returns() {
    let redis = RedisServer::start();
    let mut conn = redis.connection();
    create_group(&mut conn);
    let events: Vec<Value> = (0..3)
        .map(|i| v2_event("created", &format!("isb-pending-{i}"), TEAM_A, json!({})))
        .collect();
    for event in &events {
        xadd_payload(&mut conn, &event.to_string());
    }
    // What a crash between XREADGROUP and the outbox commit leaves behind.
    read_as(&mut conn, "emitter-a", 10);
    assert_eq!(pending_count(&mut conn), 3);

    let receiver = Receiver::start();
    let data = tempfile::tempdir().unwrap();
    let mut args = EmitterArgs::new(&redis, &receiver, data.path());
    args.extra(&["--redis-consumer", "emitter-a"]);
    let _emitter = Emitter::start(args);

    receiver.wait_for_ids(&ids_of(&events));
    wait_until("the re-read entries are acknowledged", || {
        (pending_count(&mut conn) == 0).then_some(())
    });
}

#[test]
fn sigkill_while_events_flow_loses_nothing() {
    let redis = RedisServer::start();
    let mut conn = redis.connection();
    let receiver = Receiver::start();
    let data = tempfile::tempdir().unwrap();
    let args = || {
        let mut args = EmitterArgs::new(&redis, &receiver, data.path());
        args.extra(&["--redis-consumer", "emitter-crash"]);
        args
    };
    let mut emitter = Emitter::start(args());
    wait_for_gate_keys(&mut conn, &[TEAM_A, TEAM_B]);

    let events: Vec<Value> = (0..400)
        .map(|i| {
            v2_event(
                ["created", "paused", "resumed", "killed"][i / 20 % 4],
                &format!("isb-crash-{}", i % 20),
                TEAM_A,
                json!({}),
            )
        })
        .collect();
    let (first, rest) = events.split_at(200);
    for event in first {
        xadd_payload(&mut conn, &event.to_string());
    }
    receiver.wait_for_count(1);
    emitter.kill();
    for event in rest {
        xadd_payload(&mut conn, &event.to_string());
    }
    let _restarted = Emitter::start(args());

    receiver.wait_for_ids(&ids_of(&events));
    // Redelivery after a crash may repeat an event, but never reorders a sandbox's events.
    for sandbox in 0..20 {
        let name = format!("isb-crash-{sandbox}");
        let written: Vec<String> = events
            .iter()
            .filter(|e| e["sandbox_id"] == name)
            .map(|e| e["id"].as_str().unwrap().to_owned())
            .collect();
        let mut first_seen: Vec<String> = Vec::new();
        for body in receiver.received().iter().map(Received::json) {
            let id = body["id"].as_str().unwrap().to_owned();
            if body["sandboxId"] == name.as_str() && !first_seen.contains(&id) {
                first_seen.push(id);
            }
        }
        assert_eq!(first_seen, written, "order of {name}");
    }
    wait_until("every entry acknowledged", || {
        (pending_count(&mut conn) == 0).then_some(())
    });
}

#[test]
fn entries_pending_for_a_dead_consumer_are_claimed_by_another_instance() {
    let redis = RedisServer::start();
    let mut conn = redis.connection();
    create_group(&mut conn);
    let events: Vec<Value> = (0..5)
        .map(|i| v2_event("killed", &format!("isb-claim-{i}"), TEAM_A, json!({})))
        .collect();
    for event in &events {
        xadd_payload(&mut conn, &event.to_string());
    }
    read_as(&mut conn, "dead-one", 10);
    assert_eq!(pending_of(&mut conn, "dead-one"), 5);

    let receiver = Receiver::start();
    let data = tempfile::tempdir().unwrap();
    let mut args = EmitterArgs::new(&redis, &receiver, data.path());
    args.extra(&["--redis-consumer", "emitter-b", "--redis-claim-idle", "1s"]);
    let emitter = Emitter::start(args);

    receiver.wait_for_ids(&ids_of(&events));
    wait_until("the claimed entries are acknowledged", || {
        (pending_count(&mut conn) == 0).then_some(())
    });
    // Becoming active, the instance claims the whole pending list before reading anything new.
    assert!(
        emitter
            .logs()
            .iter()
            .any(|l| l.contains("took over") && l.contains("\"claimed\":5")),
        "the takeover claims the dead consumer's five entries"
    );
}

#[test]
fn the_periodic_claim_leaves_its_own_backlog_alone_and_takes_what_others_left() {
    let redis = RedisServer::start();
    let mut conn = redis.connection();
    let receiver = Receiver::start();
    let data = tempfile::tempdir().unwrap();
    let mut args = EmitterArgs::new(&redis, &receiver, data.path());
    // A receiver that is down: the emitter's own entries stay pending, waiting for it.
    args.webhook_url = nobody_listens();
    // A sweep every 500 ms for entries idle over a second.
    args.extra(&["--redis-consumer", "emitter-a", "--redis-claim-idle", "1s"]);
    let emitter = Emitter::start(args);
    wait_for_gate_keys(&mut conn, &[TEAM_A, TEAM_B]);
    emitter.wait_until_redis_ready(true);
    for i in 0..5 {
        let event = v2_event("created", &format!("isb-own-{i}"), TEAM_A, json!({}));
        xadd_payload(&mut conn, &event.to_string());
    }
    wait_until("the emitter holds its five entries", || {
        (pending_of(&mut conn, "emitter-a") == 5).then_some(())
    });
    // Idle for three seconds, past five sweeps: none claimed them again (a claim counts as a
    // delivery), so a receiver's backlog is not read from Redis once more at every sweep.
    std::thread::sleep(std::time::Duration::from_secs(3));
    let times_delivered = |conn: &mut redis::Connection| -> Vec<(String, u64)> {
        let entries: Vec<(String, String, u64, u64)> = redis::cmd("XPENDING")
            .arg(STREAM)
            .arg(GROUP)
            .arg("-")
            .arg("+")
            .arg(100)
            .query(conn)
            .unwrap();
        entries.into_iter().map(|(id, _, _, n)| (id, n)).collect()
    };
    let own = times_delivered(&mut conn);
    assert_eq!(own.len(), 5);
    assert!(own.iter().all(|(_, n)| *n == 1), "{own:?}");
    // Another consumer reads three while the emitter is active, and goes away: after
    // REDIS_CLAIM_IDLE a sweep takes them over.
    let left = written_and_read_by(&mut conn, "gone-one", "isb-left");
    wait_until("the gone consumer's entries are claimed", || {
        (pending_of(&mut conn, "emitter-a") == 8 && pending_of(&mut conn, "gone-one") == 0)
            .then_some(())
    });
    let after = times_delivered(&mut conn);
    let claimed: Vec<&(String, u64)> = after.iter().filter(|(id, _)| left.contains(id)).collect();
    assert_eq!(claimed.len(), 3, "{after:?}");
    assert!(claimed.iter().all(|(_, n)| *n >= 2), "{after:?}");
}

#[test]
fn after_a_restart_undelivered_entries_stay_pending_until_delivered() {
    let redis = RedisServer::start();
    let mut conn = redis.connection();
    let receiver = Receiver::start();
    let data = tempfile::tempdir().unwrap();
    // Retries a second apart, so the last instance delivers at once what the others tried.
    let settings = tempfile::tempdir().unwrap();
    let config = settings.path().join("emitter.toml");
    std::fs::write(&config, "[retry]\nschedule = [\"1s\"]\n").unwrap();
    let args = || {
        let mut args = EmitterArgs::new(&redis, &receiver, data.path());
        // The receiver is down until the last instance.
        args.webhook_url = nobody_listens();
        args.extra(&["--redis-consumer", "emitter-a", "--config"]);
        args.extra(&[config.to_str().unwrap()]);
        args
    };
    let mut first = Emitter::start(args());
    wait_for_gate_keys(&mut conn, &[TEAM_A, TEAM_B]);
    first.wait_until_redis_ready(true);
    // Enough entries that the outbox's index of them grows several times as it is rebuilt.
    let events: Vec<Value> = (0..40)
        .map(|i| {
            v2_event(
                "created",
                &format!("isb-restart-pending-{i}"),
                TEAM_A,
                json!({}),
            )
        })
        .collect();
    for event in &events {
        xadd_payload(&mut conn, &event.to_string());
    }
    wait_until("the emitter holds every entry", || {
        (pending_of(&mut conn, "emitter-a") == events.len()).then_some(())
    });
    first.terminate();

    // Started again, still with the receiver down, it claims its entries back (the same ones its
    // outbox holds) and acknowledges none: nothing was delivered.
    let mut second = Emitter::start(args());
    second.wait_for_log(|l| {
        l["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("took over"))
    });
    std::thread::sleep(std::time::Duration::from_secs(2));
    assert_eq!(pending_of(&mut conn, "emitter-a"), events.len());
    second.terminate();

    let mut third = args();
    third.webhook_url = receiver.url();
    let _third = Emitter::start(third);
    receiver.wait_for_ids(&ids_of(&events));
    wait_until("every entry acknowledged once delivered", || {
        (pending_of(&mut conn, "emitter-a") == 0).then_some(())
    });
}

#[test]
fn redis_restart_loses_nothing_redis_kept_and_the_emitter_reconnects() {
    let mut redis = RedisServer::start_with(RedisOptions {
        persistence: Persistence::AppendFsyncAlways,
        ..RedisOptions::default()
    });
    let receiver = Receiver::start();
    let data = tempfile::tempdir().unwrap();
    let emitter = Emitter::start(EmitterArgs::new(&redis, &receiver, data.path()));
    let mut conn = redis.connection();
    wait_for_gate_keys(&mut conn, &[TEAM_A, TEAM_B]);
    emitter.wait_until_redis_ready(true);

    let before: Vec<Value> = (0..3)
        .map(|i| v2_event("created", &format!("isb-restart-{i}"), TEAM_A, json!({})))
        .collect();
    for event in &before {
        xadd_payload(&mut conn, &event.to_string());
    }
    receiver.wait_for_ids(&ids_of(&before));

    // Written and fsynced by Redis, then Redis dies, possibly before the emitter read them.
    let at_the_kill: Vec<Value> = (0..3)
        .map(|i| v2_event("paused", &format!("isb-restart-{i}"), TEAM_A, json!({})))
        .collect();
    for event in &at_the_kill {
        xadd_payload(&mut conn, &event.to_string());
    }
    redis.kill();
    emitter.wait_until_redis_ready(false);

    redis.restart();
    emitter.wait_until_redis_ready(true);
    let mut conn = redis.connection();
    let after: Vec<Value> = (0..3)
        .map(|i| v2_event("resumed", &format!("isb-restart-{i}"), TEAM_A, json!({})))
        .collect();
    for event in &after {
        xadd_payload(&mut conn, &event.to_string());
    }

    let all: Vec<Value> = before
        .iter()
        .chain(&at_the_kill)
        .chain(&after)
        .cloned()
        .collect();
    receiver.wait_for_ids(&ids_of(&all));
    wait_until("every entry acknowledged after the restart", || {
        (pending_count(&mut conn) == 0).then_some(())
    });
}

#[test]
fn malformed_entries_are_set_aside_and_the_entries_after_them_delivered() {
    let redis = RedisServer::start();
    let mut conn = redis.connection();
    let receiver = Receiver::start();
    let data = tempfile::tempdir().unwrap();
    let emitter = Emitter::start(EmitterArgs::new(&redis, &receiver, data.path()));
    wait_for_gate_keys(&mut conn, &[TEAM_A, TEAM_B]);

    let no_payload: String = redis::cmd("XADD")
        .arg(STREAM)
        .arg("*")
        .arg("data")
        .arg("not an event")
        .query(&mut conn)
        .unwrap();
    let not_json = xadd_payload(&mut conn, "{\"id\": \"truncated");
    let mut without_sandbox = v2_event("created", "x", TEAM_A, json!({}));
    without_sandbox
        .as_object_mut()
        .unwrap()
        .remove("sandbox_id");
    let missing_field = xadd_payload(&mut conn, &without_sandbox.to_string());
    let good = v2_event("created", "isb-after-bad", TEAM_A, json!({}));
    xadd_payload(&mut conn, &good.to_string());

    receiver.wait_for_ids(&ids_of(std::slice::from_ref(&good)));
    wait_until("every entry acknowledged", || {
        (pending_count(&mut conn) == 0).then_some(())
    });

    let letters = wait_until("three dead letters from redis", || {
        let letters = dead_letters(&redis);
        (letters.len() >= 3).then_some(letters)
    });
    let by_position: HashMap<&str, &Value> = letters
        .iter()
        .filter(|l| l["source"] == "redis")
        .map(|l| (l["position"].as_str().unwrap(), l))
        .collect();
    let reason = |id: &str| by_position[id]["reason"].as_str().unwrap().to_owned();
    assert!(
        reason(&no_payload).contains("payload"),
        "{}",
        reason(&no_payload)
    );
    assert!(reason(&not_json).contains("JSON"), "{}", reason(&not_json));
    assert!(
        reason(&missing_field).contains("sandbox_id"),
        "{}",
        reason(&missing_field)
    );
    assert_eq!(
        by_position[not_json.as_str()]["raw"],
        "{\"id\": \"truncated"
    );
    assert_eq!(by_position.len(), 3);

    for id in [&no_payload, &not_json, &missing_field] {
        assert!(
            emitter.logs().iter().any(|l| l.contains(id.as_str())),
            "the malformed entry {id} is logged with its stream id"
        );
    }
    let metrics = emitter.http_get("/metrics");
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("e2b_webhook_malformed_inputs_total{source=\"redis\"} 3")),
        "malformed entries are counted:\n{metrics}"
    );
}

#[test]
fn the_stream_is_trimmed_while_events_flow_but_never_past_a_pending_entry() {
    let redis = RedisServer::start();
    let mut conn = redis.connection();
    create_group(&mut conn);
    // Five entries another consumer has finished, then three it holds unacknowledged.
    let finished: Vec<String> = (0..5)
        .map(|i| {
            xadd_payload(
                &mut conn,
                &v2_event("created", &format!("isb-done-{i}"), TEAM_A, json!({})).to_string(),
            )
        })
        .collect();
    read_as(&mut conn, "slow-one", 5);
    let _: usize = redis::cmd("XACK")
        .arg(STREAM)
        .arg(GROUP)
        .arg(&finished)
        .query(&mut conn)
        .unwrap();

    let receiver = Receiver::start();
    let data = tempfile::tempdir().unwrap();
    let _emitter = Emitter::start(EmitterArgs::new(&redis, &receiver, data.path()));
    wait_for_gate_keys(&mut conn, &[TEAM_A, TEAM_B]);
    // Three entries another consumer reads while the emitter is active (written and read in one
    // MULTI, so the emitter cannot read them first) and holds unacknowledged. The emitter claims
    // another consumer's entries only when it takes over, or after REDIS_CLAIM_IDLE (60 s).
    let held = written_and_read_by(&mut conn, "slow-one", "isb-held");

    let mut flowing = Vec::new();
    for wave in 0..4 {
        let events: Vec<Value> = (0..100)
            .map(|i| v2_event("created", &format!("isb-w{wave}-{i}"), TEAM_A, json!({})))
            .collect();
        for event in &events {
            xadd_payload(&mut conn, &event.to_string());
        }
        flowing.extend(events);
        receiver.wait_for_ids(&ids_of(&flowing));
        // Everything from the oldest held entry on stays; the finished entries before it go.
        let expected_len = held.len() + flowing.len();
        wait_until("the finished entries are trimmed", || {
            (xlen(&mut conn) == expected_len).then_some(())
        });
        let first: Vec<(String, HashMap<String, String>)> = redis::cmd("XRANGE")
            .arg(STREAM)
            .arg("-")
            .arg("+")
            .arg("COUNT")
            .arg(held.len())
            .query(&mut conn)
            .unwrap();
        let first_ids: Vec<&str> = first.iter().map(|(id, _)| id.as_str()).collect();
        assert_eq!(
            first_ids, held,
            "entries pending for another consumer are kept"
        );
        assert!(
            first
                .iter()
                .all(|(_, fields)| fields.contains_key("payload"))
        );
    }

    // Once the slow consumer acknowledges, the stream is trimmed to nothing while idle.
    let _: usize = redis::cmd("XACK")
        .arg(STREAM)
        .arg(GROUP)
        .arg(&held)
        .query(&mut conn)
        .unwrap();
    wait_until(
        "the stream is trimmed to what is unfinished (nothing)",
        || (xlen(&mut conn) == 0).then_some(()),
    );
    // Trimming bounds the stream: it keeps working as more events flow.
    let more: Vec<Value> = (0..300)
        .map(|i| v2_event("killed", &format!("isb-more-{i}"), TEAM_A, json!({})))
        .collect();
    for event in &more {
        xadd_payload(&mut conn, &event.to_string());
    }
    receiver.wait_for_ids(&ids_of(&more));
    wait_until("the stream is empty again", || {
        (xlen(&mut conn) == 0).then_some(())
    });
}

#[test]
fn a_redis_cluster_url_is_consumed_the_same_way() {
    let redis = RedisServer::start_with(RedisOptions {
        cluster: true,
        ..RedisOptions::default()
    });
    let mut conn = redis.connection();
    let receiver = Receiver::start();
    let data = tempfile::tempdir().unwrap();
    let mut args = EmitterArgs::new(&redis, &receiver, data.path());
    args.redis_flag = "--redis-cluster-url";
    let _emitter = Emitter::start(args);
    wait_for_gate_keys(&mut conn, &[TEAM_A, TEAM_B]);

    let events: Vec<Value> = (0..10)
        .map(|i| v2_event("created", &format!("isb-cluster-{i}"), TEAM_B, json!({})))
        .collect();
    for event in &events {
        xadd_payload(&mut conn, &event.to_string());
    }
    receiver.wait_for_ids(&ids_of(&events));
    wait_until("acknowledged and trimmed", || {
        (pending_count(&mut conn) == 0 && xlen(&mut conn) == 0).then_some(())
    });
}

// ---------------------------------------------------------------------------------------------
// Events as the orchestrator marshals them

fn v2_event(kind: &str, sandbox: &str, team: &str, data: Value) -> Value {
    let label = match kind {
        "created" => "create",
        "killed" => "kill",
        "paused" => "pause",
        "resumed" => "resume",
        other => panic!("no label for {other}"),
    };
    let mut event = json!({
        "id": uuid::Uuid::new_v4().to_string(),
        "version": "v2",
        "type": format!("sandbox.lifecycle.{kind}"),
        "timestamp": "2025-10-15T12:00:00.123456789Z",
        "event_category": "lifecycle",
        "event_label": label,
        "event_data": data,
        "sandbox_id": sandbox,
        "sandbox_execution_id": format!("exec-{sandbox}"),
        "sandbox_template_id": "base",
        "sandbox_build_id": "build-1",
        "sandbox_team_id": team,
        "events_ttl_days": 7,
    });
    // Go's `omitempty` drops an empty event_data map.
    if event["event_data"]
        .as_object()
        .is_some_and(|d| d.is_empty())
    {
        event.as_object_mut().unwrap().remove("event_data");
    }
    event
}

/// An old-style event: only category and label say what happened (`type` marshals empty).
fn v1_event(label: &str, sandbox: &str, team: &str) -> Value {
    json!({
        "id": uuid::Uuid::new_v4().to_string(),
        "version": "v1",
        "type": "",
        "timestamp": "2025-10-15T12:30:00.5Z",
        "event_category": "lifecycle",
        "event_label": label,
        "sandbox_id": sandbox,
        "sandbox_execution_id": format!("exec-{sandbox}"),
        "sandbox_template_id": "base",
        "sandbox_build_id": "build-1",
        "sandbox_team_id": team,
    })
}

fn ids_of(events: &[Value]) -> BTreeSet<String> {
    events
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_owned())
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Redis helpers

fn xadd_payload(conn: &mut redis::Connection, payload: &str) -> String {
    redis::cmd("XADD")
        .arg(STREAM)
        .arg("*")
        .arg("payload")
        .arg(payload)
        .query(conn)
        .unwrap()
}

fn create_group(conn: &mut redis::Connection) {
    let () = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(STREAM)
        .arg(GROUP)
        .arg("$")
        .arg("MKSTREAM")
        .query(conn)
        .unwrap();
}

fn group_exists(conn: &mut redis::Connection) -> bool {
    let groups: redis::RedisResult<redis::streams::StreamInfoGroupsReply> =
        redis::cmd("XINFO").arg("GROUPS").arg(STREAM).query(conn);
    groups.is_ok_and(|g| g.groups.iter().any(|g| g.name == GROUP))
}

/// Reads up to `count` new entries as `consumer` and never acknowledges them.
/// Three new entries (events of sandboxes `<prefix>-0..2`) that `consumer` reads as they are
/// written, in one MULTI, so that no instance reads them first; their ids.
fn written_and_read_by(conn: &mut redis::Connection, consumer: &str, prefix: &str) -> Vec<String> {
    let mut pipe = redis::pipe();
    pipe.atomic();
    for i in 0..3 {
        let event = v2_event("created", &format!("{prefix}-{i}"), TEAM_A, json!({}));
        pipe.cmd("XADD")
            .arg(STREAM)
            .arg("*")
            .arg("payload")
            .arg(event.to_string());
    }
    pipe.cmd("XREADGROUP")
        .arg("GROUP")
        .arg(GROUP)
        .arg(consumer)
        .arg("COUNT")
        .arg(3)
        .arg("STREAMS")
        .arg(STREAM)
        .arg(">")
        .ignore();
    pipe.query(conn).unwrap()
}

/// A webhook URL on a loopback port where nothing listens (a receiver that is down).
fn nobody_listens() -> String {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    format!("http://{}/hooks/e2b", closed.local_addr().unwrap())
}

fn read_as(conn: &mut redis::Connection, consumer: &str, count: usize) {
    let _: redis::Value = redis::cmd("XREADGROUP")
        .arg("GROUP")
        .arg(GROUP)
        .arg(consumer)
        .arg("COUNT")
        .arg(count)
        .arg("STREAMS")
        .arg(STREAM)
        .arg(">")
        .query(conn)
        .unwrap();
}

fn pending_count(conn: &mut redis::Connection) -> usize {
    let summary: (usize, redis::Value, redis::Value, redis::Value) = redis::cmd("XPENDING")
        .arg(STREAM)
        .arg(GROUP)
        .query(conn)
        .unwrap();
    summary.0
}

fn pending_of(conn: &mut redis::Connection, consumer: &str) -> usize {
    let entries: Vec<(String, String, u64, u64)> = redis::cmd("XPENDING")
        .arg(STREAM)
        .arg(GROUP)
        .arg("-")
        .arg("+")
        .arg(1000)
        .arg(consumer)
        .query(conn)
        .unwrap();
    entries.len()
}

fn xlen(conn: &mut redis::Connection) -> usize {
    redis::cmd("XLEN").arg(STREAM).query(conn).unwrap()
}

fn scan_gate_keys(conn: &mut redis::Connection) -> BTreeSet<String> {
    let mut keys = BTreeSet::new();
    let mut cursor: u64 = 0;
    loop {
        let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg("wh:*")
            .arg("COUNT")
            .arg(1000)
            .query(conn)
            .unwrap();
        keys.extend(batch);
        if next == 0 {
            return keys;
        }
        cursor = next;
    }
}

fn wait_for_gate_keys(conn: &mut redis::Connection, teams: &[&str]) {
    wait_until("the gate keys exist", || {
        teams
            .iter()
            .all(|t| {
                redis::cmd("EXISTS")
                    .arg(format!("wh:{t}"))
                    .query::<i64>(conn)
                    .is_ok_and(|n| n == 1)
            })
            .then_some(())
    });
}

// ---------------------------------------------------------------------------------------------
// The emitter process

struct EmitterArgs {
    redis_flag: &'static str,
    redis_url: String,
    teams: Vec<&'static str>,
    webhook_url: String,
    data_dir: std::path::PathBuf,
    extra: Vec<String>,
}

impl EmitterArgs {
    fn new(redis: &RedisServer, receiver: &Receiver, data_dir: &Path) -> Self {
        Self {
            redis_flag: "--redis-url",
            redis_url: redis.url(),
            teams: vec![TEAM_A, TEAM_B],
            webhook_url: receiver.url(),
            data_dir: data_dir.to_owned(),
            extra: Vec::new(),
        }
    }

    fn extra(&mut self, args: &[&str]) {
        self.extra.extend(args.iter().map(|a| (*a).to_owned()));
    }
}

struct Emitter {
    child: Child,
    logs: Arc<Mutex<Vec<String>>>,
}

impl Emitter {
    fn start(args: EmitterArgs) -> Self {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_e2b-webhook-emitter"));
        cmd.arg("--log-format")
            .arg("json")
            .arg("run")
            .arg(args.redis_flag)
            .arg(&args.redis_url)
            .arg("--team-ids")
            .arg(args.teams.join(","))
            .arg("--webhook-url")
            .arg(&args.webhook_url)
            .arg("--webhook-secret")
            .arg(SECRET)
            .arg("--data-dir")
            .arg(&args.data_dir)
            .arg("--listen")
            .arg("127.0.0.1:0")
            .args(&args.extra);
        for inherited in [
            "REDIS_URL",
            "REDIS_CLUSTER_URL",
            "REDIS_TLS_ENABLED",
            "REDIS_TLS_CA_BASE64",
            "REDIS_PASSWORD",
            "REDIS_CONSUMER",
            "E2B_TEAM_IDS",
            "NOMAD_ADDR",
            "NOMAD_TOKEN",
            "NOMAD_ALLOC_ID",
            "CONFIG_FILE",
            "EVENTS_FILE",
            "WEBHOOK_EVENTS",
            "WEBHOOK_FORMAT",
        ] {
            cmd.env_remove(inherited);
        }
        let mut child = cmd
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting e2b-webhook-emitter");
        let logs = Arc::new(Mutex::new(Vec::new()));
        let stderr = child.stderr.take().unwrap();
        let sink = logs.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        Self { child, logs }
    }

    fn logs(&self) -> Vec<String> {
        self.logs.lock().unwrap().clone()
    }

    /// Waits for a JSON log line matching `matches`, failing if the process exits first.
    fn wait_for_log(&self, matches: impl Fn(&Value) -> bool) -> Value {
        wait_until("a log line", || {
            self.logs
                .lock()
                .unwrap()
                .iter()
                .filter_map(|l| serde_json::from_str::<Value>(l).ok())
                .find(|l| matches(l))
        })
    }

    /// The address of /metrics and /readyz, from the startup log.
    fn listen_addr(&self) -> SocketAddr {
        let line = self.wait_for_log(|l| {
            l["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("serving /metrics"))
        });
        line["addr"].as_str().unwrap().parse().unwrap()
    }

    fn http_get(&self, path: &str) -> String {
        let mut stream = TcpStream::connect(self.listen_addr()).unwrap();
        write!(stream, "GET {path} HTTP/1.0\r\nHost: emitter\r\n\r\n").unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).unwrap();
        response
    }

    /// Polls /readyz until the redis component's readiness is `ready`.
    fn wait_until_redis_ready(&self, ready: bool) {
        wait_until(&format!("/readyz reports redis ready={ready}"), || {
            let response = self.http_get("/readyz");
            let body = response.split("\r\n\r\n").nth(1)?;
            let state: Value = serde_json::from_str(body).ok()?;
            (state["components"]["redis"]["ready"] == ready).then_some(())
        });
    }

    /// SIGKILL: no shutdown code runs.
    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then waits for a clean exit.
    fn terminate(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
        let status = wait_until("the emitter exits after SIGTERM", || {
            self.child.try_wait().unwrap()
        });
        assert!(status.success(), "exit status after SIGTERM: {status}");
    }
}

impl Drop for Emitter {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!("--- emitter log ---\n{}", self.logs().join("\n"));
        }
    }
}

/// The shared dead letters, read from Redis as any instance would.
fn dead_letters(redis: &RedisServer) -> Vec<Value> {
    let output = Command::new(env!("CARGO_BIN_EXE_e2b-webhook-emitter"))
        .args(["dead-letters", "list", "--json", "--redis-url"])
        .arg(redis.url())
        .env_remove("REDIS_CLUSTER_URL")
        .output()
        .expect("running dead-letters list");
    assert!(
        output.status.success(),
        "dead-letters list failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

// ---------------------------------------------------------------------------------------------
// The receiving endpoint

#[derive(Debug, Clone)]
struct Received {
    headers: HashMap<String, String>,
    body: Vec<u8>,
}

impl Received {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(String::as_str)
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("the body is JSON")
    }
}

/// Records every request and answers 200.
struct Receiver {
    addr: SocketAddr,
    requests: Arc<Mutex<Vec<Received>>>,
    _runtime: tokio::runtime::Runtime,
}

impl Receiver {
    fn start() -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let requests: Arc<Mutex<Vec<Received>>> = Arc::default();
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let addr = listener.local_addr().unwrap();
        let app = axum::Router::new()
            .fallback(axum::routing::post(record))
            .with_state(requests.clone());
        runtime.spawn(async move { axum::serve(listener, app).await });
        Self {
            addr,
            requests,
            _runtime: runtime,
        }
    }

    fn url(&self) -> String {
        format!("http://{}/hooks/e2b", self.addr)
    }

    fn received(&self) -> Vec<Received> {
        self.requests.lock().unwrap().clone()
    }

    fn wait_for_count(&self, count: usize) -> Vec<Received> {
        wait_until(&format!("{count} deliveries"), || {
            let received = self.received();
            (received.len() >= count).then_some(received)
        })
    }

    fn wait_for_ids(&self, ids: &BTreeSet<String>) {
        wait_until(&format!("{} events delivered", ids.len()), || {
            let seen: BTreeSet<String> = self
                .received()
                .iter()
                .filter_map(|r| r.json()["id"].as_str().map(str::to_owned))
                .collect();
            ids.is_subset(&seen).then_some(())
        });
    }
}

async fn record(
    axum::extract::State(requests): axum::extract::State<Arc<Mutex<Vec<Received>>>>,
    headers: axum::http::HeaderMap,
    body: axum::body::Bytes,
) -> &'static str {
    let headers = headers
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_owned(),
                v.to_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    requests.lock().unwrap().push(Received {
        headers,
        body: body.to_vec(),
    });
    "{\"success\":true}"
}

/// Hex HMAC-SHA256 computed by `openssl dgst`, independently of the emitter's code.
fn openssl_hmac_sha256(key: &str, body: &[u8]) -> String {
    let mut child = Command::new("openssl")
        .args(["dgst", "-sha256", "-hmac", key])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("running openssl");
    child.stdin.take().unwrap().write_all(body).unwrap();
    let output = child.wait_with_output().unwrap();
    let text = String::from_utf8(output.stdout).unwrap();
    // "SHA2-256(stdin)= <hex>" (OpenSSL 3) or "(stdin)= <hex>" (1.1)
    text.rsplit("= ").next().unwrap().trim().to_owned()
}

// ---------------------------------------------------------------------------------------------
