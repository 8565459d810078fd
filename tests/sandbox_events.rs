//! Issue 15: the lifecycle history through the real binary and a real PostgreSQL — every event
//! received is stored per team and served by `GET /events/sandboxes/{sandboxID}` and
//! `GET /events/sandboxes` with E2B's `offset`, `limit`, `orderAsc` and `types`, as E2B's
//! `SandboxEvent`.

mod common;
mod support;

use common::events_api::api_call;
use common::{RunningEmitter, eventually, free_port};
use serde_json::{Value, json};
use std::time::Duration;
use support::postgres::PostgresServer;

fn event(id: &str, kind: &str, second: u32, sandbox: &str, team: &str) -> Value {
    json!({
        "id": id,
        "version": "v2",
        "type": format!("sandbox.lifecycle.{kind}"),
        "timestamp": format!("2026-11-26T10:00:{second:02}Z"),
        "event_category": "",
        "event_label": "",
        "event_data": {"sandbox_metadata": {"run": "42"}},
        "sandbox_id": sandbox,
        "sandbox_execution_id": "exec-1",
        "sandbox_template_id": "base",
        "sandbox_build_id": "0f5c1a2b-3c4d-4e5f-8a9b-0c1d2e3f4a5b",
        "sandbox_team_id": team,
    })
}

fn ids(page: &Value) -> Vec<&str> {
    page.as_array()
        .unwrap_or_else(|| panic!("not a list: {page}"))
        .iter()
        .map(|e| e["id"].as_str().unwrap())
        .collect()
}

#[test]
fn each_team_reads_its_sandboxes_history_newest_or_oldest_first() {
    let pg = PostgresServer::start();
    let (team_a, key_a) = pg.add_team("alpha");
    let (team_b, key_b) = pg.add_team("beta");
    let dir = tempfile::tempdir().unwrap();
    let mut lines = vec![
        event("a-1", "created", 1, "sbx-a", &team_a),
        event("a-2", "paused", 2, "sbx-a", &team_a),
        event("b-1", "created", 3, "sbx-b", &team_b),
        event("a-3", "resumed", 4, "sbx-a", &team_a),
        event("a-4", "killed", 5, "sbx-a", &team_a),
        event("a-5", "created", 6, "sbx-a2", &team_a),
    ];
    // The same event twice (a re-read entry) is stored once.
    lines.push(lines[0].clone());
    let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
    let file = dir.path().join("events.ndjson");
    std::fs::write(&file, text).unwrap();
    let port = free_port();
    let (listen, data) = (format!("127.0.0.1:{port}"), dir.path().join("data"));
    // No endpoint wants these events: the history keeps them anyway.
    let emitter = RunningEmitter::start_with_env(
        &[],
        &[
            ("POSTGRES_CONNECTION_STRING", &pg.url()),
            ("LISTEN_ADDR", &listen),
            ("DATA_DIR", data.to_str().unwrap()),
            ("EVENTS_FILE", file.to_str().unwrap()),
        ],
        dir.path().join("emitter.log"),
    );
    let get = |path: &str, key: &str| api_call(port, "GET", path, Some(key), None);
    assert!(
        eventually(Duration::from_secs(30), || {
            let (status, page) = get("/events/sandboxes?limit=100", &key_a);
            status == 200 && page.as_array().is_some_and(|p| p.len() == 5)
        }),
        "team A's five events never showed; log:\n{}",
        emitter.log_text()
    );

    let (status, newest) = get("/events/sandboxes/sbx-a", &key_a);
    assert_eq!(status, 200, "{newest}");
    assert_eq!(
        ids(&newest),
        ["a-4", "a-3", "a-2", "a-1"],
        "newest first by default"
    );
    // E2B's `SandboxEvent`: the received v2 payload in camelCase, the deprecated category and
    // label back-filled from the type.
    assert_eq!(
        newest[3],
        json!({
            "id": "a-1", "version": "v2", "type": "sandbox.lifecycle.created",
            "eventCategory": "lifecycle", "eventLabel": "create",
            "eventData": {"sandbox_metadata": {"run": "42"}},
            "timestamp": "2026-11-26T10:00:01Z",
            "sandboxId": "sbx-a", "sandboxExecutionId": "exec-1", "sandboxTemplateId": "base",
            "sandboxBuildId": "0f5c1a2b-3c4d-4e5f-8a9b-0c1d2e3f4a5b", "sandboxTeamId": team_a,
        }),
        "stored as received, answered as E2B's document says"
    );
    // `types`, as the document sends it (repeated) and as E2B's dashboard does (comma-separated).
    let (_, repeated) = get(
        "/events/sandboxes?types=sandbox.lifecycle.paused&types=sandbox.lifecycle.killed",
        &key_a,
    );
    assert_eq!(ids(&repeated), ["a-4", "a-2"]);
    let (_, joined) = get(
        "/events/sandboxes/sbx-a?types=sandbox.lifecycle.created,sandbox.lifecycle.resumed&orderAsc=true",
        &key_a,
    );
    assert_eq!(ids(&joined), ["a-1", "a-3"]);
    let (_, oldest) = get("/events/sandboxes/sbx-a?orderAsc=true", &key_a);
    assert_eq!(ids(&oldest), ["a-1", "a-2", "a-3", "a-4"]);
    let (_, paged) = get(
        "/events/sandboxes/sbx-a?orderAsc=true&offset=1&limit=2",
        &key_a,
    );
    assert_eq!(ids(&paged), ["a-2", "a-3"]);
    let (_, all) = get("/events/sandboxes", &key_a);
    assert_eq!(ids(&all), ["a-5", "a-4", "a-3", "a-2", "a-1"]);
    let (_, two) = get("/events/sandboxes?limit=2", &key_a);
    assert_eq!(ids(&two), ["a-5", "a-4"]);

    // Another team sees nothing of A's.
    assert_eq!(get("/events/sandboxes/sbx-a", &key_b), (200, json!([])));
    let (_, b_all) = get("/events/sandboxes", &key_b);
    assert_eq!(ids(&b_all), ["b-1"]);

    for (query, field) in [
        ("limit=0", "limit"),
        ("limit=101", "limit"),
        ("offset=-1", "offset"),
        ("orderAsc=maybe", "orderAsc"),
        ("types=sandbox.lifecycle.", "types"),
        ("types=exploded", "types"),
    ] {
        let (status, answer) = get(&format!("/events/sandboxes?{query}"), &key_a);
        assert_eq!(status, 400, "{query}: {answer}");
        assert!(
            answer["message"]
                .as_str()
                .unwrap()
                .starts_with(&format!("{field}:")),
            "{answer}"
        );
    }
    assert_eq!(
        api_call(port, "GET", "/events/sandboxes", None, None).0,
        401
    );
    assert_eq!(
        pg.psql("SELECT count(*) FROM webhook_emitter.sandbox_events"),
        "6",
        "each event once"
    );
}

#[test]
fn events_past_their_retention_are_deleted() {
    let pg = PostgresServer::start();
    let (team, key) = pg.add_team("gamma");
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let (listen, data) = (format!("127.0.0.1:{port}"), dir.path().join("data"));
    let start = |log: &str| {
        RunningEmitter::start_with_env(
            &[],
            &[
                ("POSTGRES_CONNECTION_STRING", &pg.url()),
                ("LISTEN_ADDR", &listen),
                ("DATA_DIR", data.to_str().unwrap()),
                ("EVENTS_TTL_DAYS", "3"),
            ],
            dir.path().join(log),
        )
    };
    let first = start("first.log");
    assert!(eventually(Duration::from_secs(30), || {
        api_call(port, "GET", "/events/sandboxes", Some(&key), None).0 == 200
    }));
    drop(first);
    for (id, days_ago) in [("old", 4), ("recent", 2)] {
        let payload = event(id, "killed", 0, "sbx-r", &team);
        pg.psql(&format!(
            "INSERT INTO webhook_emitter.sandbox_events
                 (team_id, event_id, sandbox_id, event_type, occurred_at, payload)
             VALUES ('{team}', '{id}', 'sbx-r', 'sandbox.lifecycle.killed',
                     now() - interval '{days_ago} days', '{payload}')"
        ));
    }
    let _second = start("second.log");
    assert!(
        eventually(Duration::from_secs(30), || {
            let (_, page) = api_call(port, "GET", "/events/sandboxes", Some(&key), None);
            page.as_array()
                .is_some_and(|p| p.len() == 1 && p[0]["id"] == "recent")
        }),
        "the event older than EVENTS_TTL_DAYS was not deleted"
    );
}
