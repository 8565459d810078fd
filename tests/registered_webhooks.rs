//! Issue 15: webhooks a team registers through the events API receive that team's events from
//! the orchestrator's stream — through the same outbox and dispatchers as configured endpoints,
//! in E2B Cloud's format, signed with the webhook's own secret and verified by the function
//! printed in E2B's current docs — while another team's events go to that team's webhook only.
//! The `wh:<team>` gate key lives exactly while the team has an enabled webhook.

mod common;
mod support;

use common::events_api::{api_call, wait_for_api};
use common::{RunningEmitter, TestReceiver, eventually, free_port};
use serde_json::{Value, json};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use support::docs_receiver::{Receiver, SECRET_A, SECRET_B, gate_exists, xadd};
use support::postgres::PostgresServer;
use support::redis::RedisServer;

/// The emitter serving registered webhooks only (no `WEBHOOK_URL`, no `E2B_TEAM_IDS`) from `pg`
/// and `redis` on `port`, its data and log in `dir`; loopback is allowed, where the receivers
/// are (user webhooks may not reach it otherwise). `extra` adds settings.
fn start_registered_only(
    pg: &PostgresServer,
    redis: &RedisServer,
    port: u16,
    dir: &Path,
    args: &[&str],
    extra: &[(&str, &str)],
) -> RunningEmitter {
    let (url, listen, data, redis_url) = (
        pg.url(),
        format!("127.0.0.1:{port}"),
        dir.join("data").to_str().unwrap().to_owned(),
        redis.host_port(),
    );
    let mut env = vec![
        ("POSTGRES_CONNECTION_STRING", url.as_str()),
        ("LISTEN_ADDR", listen.as_str()),
        ("DATA_DIR", data.as_str()),
        ("REDIS_URL", redis_url.as_str()),
        ("API_ALLOW_PRIVATE_CIDRS", "127.0.0.1/32"),
    ];
    env.extend_from_slice(extra);
    RunningEmitter::start_with_env(args, &env, dir.join("emitter.log"))
}

#[test]
fn each_team_gets_its_own_events_signed_with_its_own_secret() {
    let pg = PostgresServer::start();
    let redis = RedisServer::start();
    let receiver = Receiver::start();
    let (team_a, key_a) = pg.add_team("alpha");
    let (team_b, key_b) = pg.add_team("beta");
    let (team_c, _key_c) = pg.add_team("gamma");
    let port = free_port();
    let dir = tempfile::tempdir().unwrap();
    let emitter = start_registered_only(&pg, &redis, port, dir.path(), &[], &[]);
    let mut conn = redis.connection();
    wait_for_api(port, &key_a);
    assert!(!gate_exists(&mut conn, &team_a), "no webhook, no gate key");

    let register = |key: &str, path: &str, secret: &str, events: Value| {
        let body = json!({
            "name": path, "url": format!("http://127.0.0.1:{}{path}", receiver.port),
            "enabled": true, "events": events, "signatureSecret": secret,
        });
        let (status, created) = api_call(port, "POST", "/events/webhooks", Some(key), Some(&body));
        assert_eq!(status, 201, "{created}");
        created["id"].as_str().unwrap().to_owned()
    };
    let hook_a = register(
        &key_a,
        "/a",
        SECRET_A,
        json!(["sandbox.lifecycle.created", "sandbox.lifecycle.killed"]),
    );
    let hook_b = register(&key_b, "/b", SECRET_B, json!(["sandbox.lifecycle.killed"]));
    // Within seconds the teams are served: their gate keys exist.
    assert!(
        eventually(Duration::from_secs(10), || gate_exists(&mut conn, &team_a)
            && gate_exists(&mut conn, &team_b)),
        "gate keys of the registered teams; log:\n{}",
        emitter.log_text()
    );
    assert!(!gate_exists(&mut conn, &team_c));

    xadd(&mut conn, "a-1", "created", "sbx-a", &team_a);
    xadd(&mut conn, "b-1", "created", "sbx-b", &team_b); // B subscribed to killed only
    xadd(&mut conn, "c-1", "created", "sbx-c", &team_c); // nobody's
    xadd(&mut conn, "a-2", "killed", "sbx-a", &team_a);
    xadd(&mut conn, "b-2", "killed", "sbx-b", &team_b);
    let got = receiver.collect(3, Duration::from_secs(30));
    // Nothing else arrives.
    let extra = receiver.collect(1, Duration::from_secs(2));
    assert!(extra.is_empty(), "unexpected: {extra:#?}");
    assert_eq!(got.len(), 3, "{got:#?}\nlog:\n{}", emitter.log_text());
    let of = |path: &str| -> Vec<&Value> { got.iter().filter(|r| r["path"] == path).collect() };
    let (to_a, to_b) = (of("/a"), of("/b"));
    assert_eq!(
        to_a.iter()
            .map(|r| r["body"]["id"].as_str().unwrap())
            .collect::<Vec<_>>(),
        ["a-1", "a-2"],
        "team A's events, in order"
    );
    assert_eq!(
        to_b.iter()
            .map(|r| r["body"]["id"].as_str().unwrap())
            .collect::<Vec<_>>(),
        ["b-2"]
    );
    for request in &got {
        assert_eq!(
            request["valid"], true,
            "the docs' verifier accepts it: {request}"
        );
        // E2B Cloud's payload (see tests/e2b_cloud.rs): the v2 event, category and label filled.
        assert_eq!(request["body"]["version"], "v2", "{request}");
    }
    assert_eq!(to_a[0]["webhook_id"], hook_a.as_str());
    assert_eq!(to_b[0]["webhook_id"], hook_b.as_str());
    assert_eq!(to_a[0]["body"]["sandbox_team_id"], team_a.as_str());
    assert_eq!(to_a[0]["body"]["event_label"], "create");
    assert_eq!(to_a[0]["body"]["type"], "sandbox.lifecycle.created");

    // Per-team views join on this series (deploy/grafana): each webhook's endpoint and team.
    let info = |hook: &str, team: &str| {
        format!(
            "e2b_webhook_registered_webhook_info{{endpoint=\"webhook:{hook}\",team=\"{team}\"}} 1"
        )
    };
    let metrics = common::http_get(port, "/metrics").1;
    assert!(metrics.contains(&info(&hook_a, &team_a)), "{metrics}");
    assert!(metrics.contains(&info(&hook_b, &team_b)), "{metrics}");

    // Disabling B's webhook and deleting A's: their gate keys go, nothing more is delivered.
    let patch = json!({"enabled": false});
    let path_b = format!("/events/webhooks/{hook_b}");
    assert_eq!(
        api_call(port, "PATCH", &path_b, Some(&key_b), Some(&patch)).0,
        200
    );
    let path_a = format!("/events/webhooks/{hook_a}");
    assert_eq!(api_call(port, "DELETE", &path_a, Some(&key_a), None).0, 200);
    assert!(
        eventually(Duration::from_secs(10), || !gate_exists(&mut conn, &team_a)
            && !gate_exists(&mut conn, &team_b)),
        "the gate keys outlived the webhooks"
    );
    xadd(&mut conn, "a-3", "killed", "sbx-a2", &team_a);
    xadd(&mut conn, "b-3", "killed", "sbx-b2", &team_b);
    let late = receiver.collect(1, Duration::from_secs(3));
    assert!(late.is_empty(), "delivered after removal: {late:#?}");
    let metrics = common::http_get(port, "/metrics").1;
    assert!(
        !metrics.contains("e2b_webhook_registered_webhook_info{"),
        "{metrics}"
    );

    // Enabled again, B is served again and receives new events.
    let patch = json!({"enabled": true});
    assert_eq!(
        api_call(port, "PATCH", &path_b, Some(&key_b), Some(&patch)).0,
        200
    );
    assert!(eventually(Duration::from_secs(10), || gate_exists(
        &mut conn, &team_b
    )));
    xadd(&mut conn, "b-4", "killed", "sbx-b3", &team_b);
    let again = receiver.collect(1, Duration::from_secs(20));
    assert_eq!(again.len(), 1, "{again:#?}");
    assert_eq!(again[0]["body"]["id"], "b-4");
    assert_eq!(again[0]["valid"], true);

    let log = emitter.log_text();
    for secret in [SECRET_A, SECRET_B, key_a.as_str(), key_b.as_str()] {
        assert!(!log.contains(secret), "a secret reached the log:\n{log}");
    }

    // The outbox keeps the webhooks (secrets included) for a restart; `status` on the data
    // directory says how many, never what.
    drop(emitter);
    for json in [true, false] {
        let mut status = common::emitter();
        status
            .args(["status", "--data-dir"])
            .arg(dir.path().join("data"));
        if json {
            status.arg("--json");
        }
        let (code, out, err) = common::output(&mut status);
        assert_eq!(code, 0, "{out}{err}");
        // How many were saved depends on the last poll before the stop: the count, not which.
        let shown = if json {
            r#""registered_webhooks":{"webhooks":"#
        } else {
            r#"registered_webhooks: {"webhooks":"#
        };
        assert!(out.contains(shown), "{out}");
        for secret in [SECRET_A, SECRET_B] {
            assert!(!out.contains(secret), "a secret reached `status`:\n{out}");
        }
    }
}

#[test]
fn a_registered_url_is_checked_again_when_connecting() {
    let pg = PostgresServer::start();
    let receiver = Receiver::start();
    let (team, key) = pg.add_team("delta");
    let dir = tempfile::tempdir().unwrap();
    let events = dir.path().join("events.ndjson");
    let port = free_port();
    let (listen, data) = (format!("127.0.0.1:{port}"), dir.path().join("data"));
    let url = pg.url();
    let env = |allow: &'static str| -> Vec<(&'static str, String)> {
        vec![
            ("POSTGRES_CONNECTION_STRING", url.clone()),
            ("LISTEN_ADDR", listen.clone()),
            ("DATA_DIR", data.to_str().unwrap().to_owned()),
            ("API_ALLOW_PRIVATE_CIDRS", allow.to_owned()),
        ]
    };
    let start = |env: Vec<(&'static str, String)>, extra: &[(&'static str, String)], log: &str| {
        let mut all = env;
        all.extend(extra.iter().cloned());
        let all: Vec<(&str, &str)> = all.iter().map(|(k, v)| (*k, v.as_str())).collect();
        RunningEmitter::start_with_env(&[], &all, dir.path().join(log))
    };
    // Registered while loopback was allowed…
    let first = start(env("127.0.0.1/32"), &[], "first.log");
    wait_for_api(port, &key);
    let body = json!({
        "name": "loopback", "url": format!("http://127.0.0.1:{}/a", receiver.port),
        "enabled": true, "events": ["sandbox.lifecycle.killed"], "signatureSecret": SECRET_A,
    });
    assert_eq!(
        api_call(port, "POST", "/events/webhooks", Some(&key), Some(&body)).0,
        201
    );
    drop(first);
    // …and delivered after the operator withdrew the allowance: refused at connect time.
    let line = json!({
        "id": "d-1", "version": "v2", "type": "sandbox.lifecycle.killed",
        "timestamp": "2026-11-26T10:00:00Z", "sandbox_id": "sbx-d", "sandbox_team_id": team,
    });
    std::fs::write(&events, format!("{line}\n")).unwrap();
    let second = start(
        env(""),
        &[("EVENTS_FILE", events.to_str().unwrap().to_owned())],
        "second.log",
    );
    assert!(
        eventually(Duration::from_secs(20), || second
            .log_text()
            .contains("webhooks may not reach inside the cluster")),
        "no connect-time refusal in the log:\n{}",
        second.log_text()
    );
    assert!(receiver.collect(1, Duration::from_secs(2)).is_empty());
}

#[test]
fn every_attempt_is_in_the_delivery_log_for_the_team_and_the_cli() {
    let pg = PostgresServer::start();
    let redis = RedisServer::start();
    let receiver = Receiver::start();
    let (team, key) = pg.add_team("epsilon");
    let (_other, other_key) = pg.add_team("zeta");
    let port = free_port();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("retry.toml");
    std::fs::write(&config, "[retry]\nschedule = [\"300ms\"]\njitter = 0.0\n").unwrap();
    let emitter = start_registered_only(
        &pg,
        &redis,
        port,
        dir.path(),
        &[],
        &[("CONFIG_FILE", config.to_str().unwrap())],
    );
    let mut conn = redis.connection();
    wait_for_api(port, &key);
    let body = json!({
        "name": "flaky", "url": format!("http://127.0.0.1:{}/flaky", receiver.port),
        "enabled": true, "events": ["sandbox.lifecycle.killed"], "signatureSecret": SECRET_A,
    });
    let (status, created) = api_call(port, "POST", "/events/webhooks", Some(&key), Some(&body));
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_str().unwrap().to_owned();
    assert!(eventually(Duration::from_secs(10), || gate_exists(
        &mut conn, &team
    )));
    xadd(&mut conn, "e-1", "killed", "sbx-e", &team);
    let got = receiver.collect(1, Duration::from_secs(20));
    assert_eq!(
        got.len(),
        1,
        "delivered after one 503; log:\n{}",
        emitter.log_text()
    );

    let path = format!("/events/webhooks/{id}/deliveries");
    let mut log = Value::Null;
    assert!(
        eventually(Duration::from_secs(10), || {
            log = api_call(port, "GET", &path, Some(&key), None).1;
            log["data"][0]["attempts"]
                .as_array()
                .is_some_and(|a| a.len() == 2)
        }),
        "two attempts of one event expected in the delivery log: {log}"
    );
    // One group for the event; newest first: the delivery, then the 503 that was retried.
    assert_eq!(log["data"].as_array().unwrap().len(), 1, "{log}");
    assert_eq!(log["nextCursor"], Value::Null);
    let group = &log["data"][0];
    assert_eq!(group["eventId"], "e-1");
    assert_eq!(group["sandboxId"], "sbx-e");
    assert_eq!(group["eventType"], "sandbox.lifecycle.killed");
    let attempts = group["attempts"].as_array().unwrap();
    assert_eq!(attempts[0]["status"], "success", "{log}");
    assert_eq!(attempts[0]["responseHttpStatusCode"], 200);
    assert!(attempts[0]["errorClass"].is_null());
    assert_eq!(attempts[1]["status"], "failed");
    assert_eq!(attempts[1]["responseHttpStatusCode"], 503);
    assert_eq!(attempts[1]["errorClass"], "http_error");
    for attempt in attempts {
        assert_eq!(attempt["eventId"], "e-1");
        assert_eq!(attempt["webhookId"], id.as_str());
        assert_eq!(attempt["teamId"], team.as_str());
        assert!(attempt["durationMs"].is_i64());
        assert!(
            attempt["timestamp"]
                .as_str()
                .unwrap()
                .parse::<jiff::Timestamp>()
                .is_ok()
        );
    }
    let (_, oldest) = api_call(
        port,
        "GET",
        &format!("{path}?orderAsc=true&limit=1"),
        Some(&key),
        None,
    );
    assert_eq!(oldest["data"][0]["attempts"][0]["status"], "failed");
    // Another team's webhook is not found.
    assert_eq!(api_call(port, "GET", &path, Some(&other_key), None).0, 404);

    // The CLI reads the same log from Postgres.
    let (code, stdout, stderr) = common::output(
        common::emitter()
            .args(["delivery-log", "--webhook", &id, "--json"])
            .env("POSTGRES_CONNECTION_STRING", pg.url()),
    );
    assert_eq!(code, 0, "{stderr}");
    let lines: Vec<Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2, "{stdout}");
    assert_eq!(lines[0]["outcome"], "delivered");
    assert_eq!(lines[1]["status"], 503);
    assert!(
        !stdout.contains(support::postgres::EMITTER_PASSWORD)
            && !stderr.contains(support::postgres::EMITTER_PASSWORD)
    );
}

/// The backlog gauges of a registered webhook follow its backlog down to nothing: once what it
/// held is delivered, its `outbox_depth` series no longer shows the old depth (an alert on the
/// backlog would otherwise keep firing for a webhook that caught up).
#[test]
fn a_registered_webhooks_backlog_gauge_returns_to_zero_once_it_catches_up() {
    let pg = PostgresServer::start();
    let redis = RedisServer::start();
    let (team, key) = pg.add_team("alpha");
    let accept = Arc::new(AtomicBool::new(false));
    let decide = accept.clone();
    let receiver = TestReceiver::start(
        0,
        SECRET_A,
        Arc::new(move |_: &str, _: &str, _: u32| {
            if decide.load(Ordering::SeqCst) {
                200
            } else {
                503
            }
        }),
    );
    let port = free_port();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("c.toml");
    std::fs::write(
        &config,
        "[retry]\nschedule = [\"200ms\"]\nmax_age = \"5m\"\n",
    )
    .unwrap();
    let args = ["--config", config.to_str().unwrap()];
    let emitter = start_registered_only(&pg, &redis, port, dir.path(), &args, &[]);
    wait_for_api(port, &key);
    let body = json!({
        "name": "catching-up", "url": format!("http://127.0.0.1:{}/hook", receiver.port),
        "enabled": true, "events": ["sandbox.lifecycle.killed"], "signatureSecret": SECRET_A,
    });
    let (status, created) = api_call(port, "POST", "/events/webhooks", Some(&key), Some(&body));
    assert_eq!(status, 201, "{created}");
    let hook = created["id"].as_str().unwrap().to_owned();
    let mut conn = redis.connection();
    assert!(eventually(Duration::from_secs(10), || gate_exists(
        &mut conn, &team
    )));
    xadd(&mut conn, "k-1", "killed", "sbx-1", &team);
    let depth = |n: u32| format!("e2b_webhook_outbox_depth{{endpoint=\"webhook:{hook}\"}} {n}");
    assert!(
        eventually(Duration::from_secs(20), || common::http_get(
            port, "/metrics"
        )
        .1
        .contains(&depth(1))),
        "the refused event is counted as its backlog; log:\n{}",
        emitter.log_text()
    );

    accept.store(true, Ordering::SeqCst);
    assert!(
        eventually(Duration::from_secs(20), || !receiver
            .accepted
            .lock()
            .unwrap()
            .is_empty()),
        "{}",
        emitter.log_text()
    );
    assert!(
        eventually(Duration::from_secs(10), || !common::http_get(
            port, "/metrics"
        )
        .1
        .contains(&depth(1))),
        "{}",
        common::http_get(port, "/metrics").1
    );
}

/// A registered webhook with nothing to deliver has no dispatcher running (thousands of idle
/// webhooks cost no task each): it starts with the event that comes for it, ends a few seconds
/// after it caught up, and the next event starts it again — every event delivered once, in order.
#[test]
fn an_idle_webhooks_dispatcher_ends_and_its_next_event_starts_it_again() {
    let pg = PostgresServer::start();
    let redis = RedisServer::start();
    let receiver = Receiver::start();
    let (team, key) = pg.add_team("alpha");
    let port = free_port();
    let dir = tempfile::tempdir().unwrap();
    let emitter = start_registered_only(&pg, &redis, port, dir.path(), &[], &[]);
    wait_for_api(port, &key);
    let body = json!({
        "name": "a", "url": format!("http://127.0.0.1:{}/a", receiver.port),
        "enabled": true, "signatureSecret": SECRET_A, "events": [
            "sandbox.lifecycle.created", "sandbox.lifecycle.paused",
            "sandbox.lifecycle.resumed", "sandbox.lifecycle.killed",
        ],
    });
    let (status, created) = api_call(port, "POST", "/events/webhooks", Some(&key), Some(&body));
    assert_eq!(status, 201, "{created}");
    let mut conn = redis.connection();
    assert!(eventually(Duration::from_secs(10), || gate_exists(
        &mut conn, &team
    )));
    let delivering = |n: u32| {
        let page = common::http_get(port, "/metrics").1;
        page.contains(&format!("e2b_webhook_registered_webhooks_delivering {n}\n"))
            && page.contains("e2b_webhook_registered_webhook_info{")
    };
    assert!(
        eventually(Duration::from_secs(10), || delivering(0)),
        "an idle registered webhook has no dispatcher running:\n{}",
        common::http_get(port, "/metrics").1
    );

    xadd(&mut conn, "idle-1", "created", "sbx-idle", &team);
    let first = receiver.collect(1, Duration::from_secs(20));
    assert_eq!(first.len(), 1, "{}", emitter.log_text());
    // Caught up: it ends after a few seconds with nothing to do.
    assert!(
        eventually(Duration::from_secs(20), || delivering(0)),
        "{}",
        common::http_get(port, "/metrics").1
    );

    for (id, kind) in [
        ("idle-2", "paused"),
        ("idle-3", "resumed"),
        ("idle-4", "killed"),
    ] {
        xadd(&mut conn, id, kind, "sbx-idle", &team);
    }
    let mut rest = receiver.collect(3, Duration::from_secs(20));
    // None twice: nothing more comes.
    rest.extend(receiver.collect(1, Duration::from_secs(2)));
    let ids: Vec<&str> = first
        .iter()
        .chain(&rest)
        .map(|r| r["body"]["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        ["idle-1", "idle-2", "idle-3", "idle-4"],
        "{}",
        emitter.log_text()
    );
    assert!(first.iter().chain(&rest).all(|r| r["valid"] == true));
    assert!(eventually(Duration::from_secs(20), || delivering(0)));
}
