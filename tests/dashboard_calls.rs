//! Issue 27: the calls E2B's dashboard made to its events service (the webhook pages and the
//! sandbox timeline, e2b-dev/dashboard before #518), made against the real binary with real
//! Postgres and Redis, and every answer checked field by field against E2B's document
//! (`shared/specs/openapi.argus.yaml`): list, create with `enabled` and a 32-character secret,
//! update, rotate the secret alone, deliveries with filters and a cursor, stats, a sandbox's
//! events with `orderAsc=true`, delete. Array query parameters are sent comma-separated, as the
//! dashboard's `openapi-fetch` client writes them.

mod common;
mod support;

use common::events_api::{api_call, wait_for_api};
use common::{RunningEmitter, eventually, free_port};
use serde_json::{Value, json};
use std::time::Duration;
use support::docs_receiver::{Receiver, SECRET_DASHBOARD};
use support::postgres::PostgresServer;
use support::redis::RedisServer;

const CREATED: &str = "sandbox.lifecycle.created";
const PAUSED: &str = "sandbox.lifecycle.paused";
const KILLED: &str = "sandbox.lifecycle.killed";

/// The keys of a JSON object, sorted.
fn keys(value: &Value) -> Vec<String> {
    let mut keys: Vec<String> = value
        .as_object()
        .unwrap_or_else(|| panic!("not an object: {value}"))
        .keys()
        .cloned()
        .collect();
    keys.sort();
    keys
}

fn is_uuid(value: &Value) -> bool {
    value
        .as_str()
        .is_some_and(|s| uuid::Uuid::parse_str(s).is_ok())
}

fn is_time(value: &Value) -> bool {
    value
        .as_str()
        .is_some_and(|s| s.parse::<jiff::Timestamp>().is_ok())
}

/// One orchestrator-shaped stream entry with a UUID id, as the orchestrator writes them, dated
/// now (the history keeps `EVENTS_TTL_DAYS`: an older date would be pruned).
fn xadd(conn: &mut redis::Connection, kind: &str, sandbox: &str, team: &str) -> String {
    let id = uuid::Uuid::new_v4().to_string();
    let payload = json!({
        "id": id, "version": "v2", "type": format!("sandbox.lifecycle.{kind}"),
        "timestamp": jiff::Timestamp::now().to_string(),
        "event_category": "", "event_label": "",
        "event_data": {"sandbox_metadata": {"page": "dashboard"}},
        "sandbox_id": sandbox, "sandbox_execution_id": "exec-1", "sandbox_template_id": "base",
        "sandbox_build_id": "0f5c1a2b-3c4d-4e5f-8a9b-0c1d2e3f4a5b", "sandbox_team_id": team,
    });
    let _: String = redis::cmd("XADD")
        .arg("sandbox.events.stream")
        .arg("*")
        .arg("payload")
        .arg(payload.to_string())
        .query(conn)
        .unwrap();
    id
}

#[test]
fn the_dashboards_calls_get_the_documents_answers() {
    let pg = PostgresServer::start();
    let redis = RedisServer::start();
    let receiver = Receiver::start();
    let (team, key) = pg.add_team("dashboard");
    let port = free_port();
    let dir = tempfile::tempdir().unwrap();
    let (listen, data) = (format!("127.0.0.1:{port}"), dir.path().join("data"));
    let emitter = RunningEmitter::start_with_env(
        &[],
        &[
            ("POSTGRES_CONNECTION_STRING", &pg.url()),
            ("LISTEN_ADDR", &listen),
            ("DATA_DIR", data.to_str().unwrap()),
            ("REDIS_URL", &redis.host_port()),
            ("API_ALLOW_PRIVATE_CIDRS", "127.0.0.1/32"),
        ],
        dir.path().join("emitter.log"),
    );
    wait_for_api(port, &key);
    let call = |method: &str, path: &str, body: Option<&Value>| {
        api_call(port, method, path, Some(&key), body)
    };

    // The list page of a team without webhooks.
    assert_eq!(call("GET", "/events/webhooks", None), (200, json!([])));

    // Add: the dashboard sends enabled and a secret of at least 32 characters (generated in the
    // browser), here one the receiver does not know yet.
    let url = format!("http://127.0.0.1:{}/dashboard", receiver.port);
    let (status, created) = call(
        "POST",
        "/events/webhooks",
        Some(&json!({
            "name": "Dashboard webhook", "url": url, "enabled": true,
            "events": [CREATED, KILLED, PAUSED],
            "signatureSecret": "first-secret-from-the-browser-0123456789",
        })),
    );
    assert_eq!(status, 201, "{created}");
    assert_eq!(
        keys(&created),
        [
            "createdAt",
            "enabled",
            "events",
            "id",
            "name",
            "teamId",
            "url"
        ],
        "WebhookCreation, signatureSecret write-only"
    );
    assert!(is_uuid(&created["id"]) && is_time(&created["createdAt"]));
    assert_eq!(created["teamId"], team.as_str());
    assert_eq!(created["url"], url.as_str());
    assert_eq!(created["enabled"], true);
    let id = created["id"].as_str().unwrap().to_owned();
    let path = format!("/events/webhooks/{id}");

    // Edit: name and events.
    let (status, updated) = call(
        "PATCH",
        &path,
        Some(&json!({"name": "Renamed", "events": [CREATED, KILLED]})),
    );
    assert_eq!(status, 200, "{updated}");
    assert_eq!(keys(&updated), keys(&created), "WebhookDetail");
    assert_eq!(updated["name"], "Renamed");
    assert_eq!(updated["events"], json!([CREATED, KILLED]));
    assert_eq!(updated["createdAt"], created["createdAt"]);

    // Rotate the secret alone: nothing else changes, and deliveries are signed with it.
    let (status, rotated) = call(
        "PATCH",
        &path,
        Some(&json!({"signatureSecret": SECRET_DASHBOARD})),
    );
    assert_eq!(status, 200, "{rotated}");
    assert_eq!(
        rotated, updated,
        "only the secret changed, and it is never shown"
    );
    assert_eq!(call("GET", &path, None), (200, updated.clone()));
    assert_eq!(
        call("GET", "/events/webhooks", None),
        (200, json!([updated]))
    );

    // A sandbox lives: created, paused (not subscribed), killed. The receiver answers 503 to
    // the first attempt of each event, then verifies with E2B's docs' function.
    let mut conn = redis.connection();
    assert!(
        eventually(Duration::from_secs(10), || {
            support::docs_receiver::gate_exists(&mut conn, &team)
        }),
        "the team's gate key; log:\n{}",
        emitter.log_text()
    );
    let created_id = xadd(&mut conn, "created", "isb-dash", &team);
    let paused_id = xadd(&mut conn, "paused", "isb-dash", &team);
    let killed_id = xadd(&mut conn, "killed", "isb-dash", &team);
    let got = receiver.collect(2, Duration::from_secs(60));
    assert_eq!(got.len(), 2, "{got:#?}\nlog:\n{}", emitter.log_text());
    assert!(
        got.iter().all(|r| r["valid"] == true),
        "signed with the rotated secret: {got:#?}"
    );

    // Deliveries: one group per event, newest first, every attempt.
    let deliveries = format!("{path}/deliveries");
    let mut listed = Value::Null;
    assert!(
        eventually(Duration::from_secs(20), || {
            listed = call("GET", &deliveries, None).1;
            listed["data"].as_array().is_some_and(|groups| {
                groups.len() == 2
                    && groups
                        .iter()
                        .all(|g| g["attempts"].as_array().is_some_and(|a| a.len() == 2))
            })
        }),
        "both events with both attempts in the delivery log: {listed}"
    );
    assert_eq!(keys(&listed), ["data", "nextCursor"]);
    assert_eq!(listed["nextCursor"], Value::Null, "one page holds it all");
    let groups = listed["data"].as_array().unwrap();
    assert_eq!(
        groups
            .iter()
            .map(|g| g["eventId"].as_str().unwrap())
            .collect::<Vec<_>>(),
        [killed_id.as_str(), created_id.as_str()],
        "newest first"
    );
    for group in groups {
        assert_eq!(
            keys(group),
            ["attempts", "eventId", "eventType", "sandboxId"]
        );
        assert_eq!(group["sandboxId"], "isb-dash");
        for attempt in group["attempts"].as_array().unwrap() {
            assert!(is_uuid(&attempt["id"]), "{attempt}");
            assert_eq!(attempt["teamId"], team.as_str());
            assert_eq!(attempt["webhookId"], id.as_str());
            assert_eq!(attempt["eventId"], group["eventId"]);
            assert_eq!(attempt["sandboxId"], "isb-dash");
            assert_eq!(attempt["eventType"], group["eventType"]);
            assert!(attempt["durationMs"].is_u64(), "{attempt}");
            assert!(is_time(&attempt["timestamp"]), "{attempt}");
            assert_eq!(attempt["requestUrl"], url.as_str());
            // The body as sent; the headers as JSON, the signature redacted.
            let body: Value = serde_json::from_str(attempt["requestBody"].as_str().unwrap())
                .expect("requestBody is the JSON sent");
            assert_eq!(body["id"], group["eventId"]);
            let headers = attempt["requestHeaders"].as_str().unwrap();
            let _: Value = serde_json::from_str(headers).expect("requestHeaders is JSON");
            assert!(!headers.contains(SECRET_DASHBOARD));
            let sent = got
                .iter()
                .find(|r| r["body"]["id"] == group["eventId"])
                .expect("the receiver saw the event");
            let signature = sent["signature"].as_str().expect("an e2b-signature header");
            assert!(
                !headers.contains(signature),
                "the signature is redacted: {headers}"
            );
            match attempt["status"].as_str().unwrap() {
                "failed" => {
                    assert_eq!(attempt["responseHttpStatusCode"], 503);
                    assert_eq!(attempt["errorClass"], "http_error");
                }
                "success" => {
                    assert_eq!(attempt["responseHttpStatusCode"], 200);
                    assert_eq!(attempt["errorClass"], Value::Null);
                    assert_eq!(attempt["responseBody"], "ok");
                }
                other => panic!("status {other}: {attempt}"),
            }
        }
    }
    assert!(
        !listed.to_string().contains(SECRET_DASHBOARD),
        "no secret anywhere in the answer"
    );

    // The filters the dashboard's deliveries tab offers, arrays comma-separated.
    let (status, only_created) = call(
        "GET",
        &format!("{deliveries}?eventType={CREATED}&orderAsc=true"),
        None,
    );
    assert_eq!(status, 200, "{only_created}");
    assert_eq!(only_created["data"].as_array().unwrap().len(), 1);
    assert_eq!(only_created["data"][0]["eventId"], created_id.as_str());
    let (_, failed) = call("GET", &format!("{deliveries}?deliveryStatus=failed"), None);
    let failed_attempts: Vec<&Value> = failed["data"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| g["attempts"].as_array().unwrap())
        .collect();
    assert_eq!(failed_attempts.len(), 2, "{failed}");
    assert!(failed_attempts.iter().all(|a| a["status"] == "failed"));
    let (_, both) = call(
        "GET",
        &format!("{deliveries}?deliveryStatus=failed,success&eventType={CREATED},{KILLED}"),
        None,
    );
    assert_eq!(both["data"].as_array().unwrap().len(), 2, "{both}");
    let (_, future) = call(
        "GET",
        &format!("{deliveries}?start=2999-01-01T00:00:00Z"),
        None,
    );
    assert_eq!(future, json!({"data": [], "nextCursor": null}));
    // A page of one, then the cursor to the next: nothing lost or repeated.
    let (_, first) = call("GET", &format!("{deliveries}?limit=1"), None);
    assert_eq!(first["data"][0]["eventId"], killed_id.as_str());
    let cursor = first["nextCursor"]
        .as_str()
        .expect("a next page")
        .to_owned();
    let (_, second) = call(
        "GET",
        &format!(
            "{deliveries}?limit=1&cursor={}",
            url::form_urlencoded::byte_serialize(cursor.as_bytes()).collect::<String>()
        ),
        None,
    );
    assert_eq!(
        second["data"][0]["eventId"],
        created_id.as_str(),
        "{second}"
    );
    assert_eq!(second["nextCursor"], Value::Null);
    for (query, field) in [
        ("limit=0", "limit"),
        ("limit=101", "limit"),
        ("deliveryStatus=lost", "deliveryStatus"),
        ("start=yesterday", "start"),
        ("cursor=not-a-cursor", "cursor"),
    ] {
        let (status, answer) = call("GET", &format!("{deliveries}?{query}"), None);
        assert_eq!(status, 400, "{query}: {answer}");
        assert!(
            answer["message"]
                .as_str()
                .is_some_and(|m| m.starts_with(&format!("{field}:"))),
            "{query}: {answer}"
        );
    }

    // Stats over the default range (the last 24 h): the four attempts, two failed.
    let (status, stats) = call("GET", &format!("{path}/stats"), None);
    assert_eq!(status, 200, "{stats}");
    assert_eq!(keys(&stats), ["buckets", "durationMs", "failed", "total"]);
    assert_eq!(
        (stats["total"].as_u64(), stats["failed"].as_u64()),
        (Some(4), Some(2))
    );
    let duration = &stats["durationMs"];
    assert_eq!(keys(duration), ["average", "maximum", "minimum"]);
    let (min, avg, max) = (
        duration["minimum"].as_f64().unwrap(),
        duration["average"].as_f64().unwrap(),
        duration["maximum"].as_f64().unwrap(),
    );
    assert!(min <= avg && avg <= max, "{duration}");
    let buckets = stats["buckets"].as_array().unwrap();
    assert!(
        buckets.len() >= 10,
        "tens of points for a chart: {}",
        buckets.len()
    );
    let summed: u64 = buckets.iter().map(|b| b["total"].as_u64().unwrap()).sum();
    assert_eq!(summed, 4);
    for bucket in buckets {
        assert_eq!(keys(bucket), ["durationMs", "failed", "timestamp", "total"]);
        assert!(is_time(&bucket["timestamp"]));
    }
    let (status, too_long) = call(
        "GET",
        &format!("{path}/stats?start=2026-11-01T00:00:00Z&end=2026-11-20T00:00:00Z"),
        None,
    );
    assert_eq!(status, 400, "{too_long}");

    // The sandbox's timeline, oldest first: every event of the team, subscribed or not.
    let (status, timeline) = call("GET", "/events/sandboxes/isb-dash?orderAsc=true", None);
    assert_eq!(status, 200, "{timeline}");
    let ids: Vec<&str> = timeline
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        [created_id.as_str(), paused_id.as_str(), killed_id.as_str()]
    );
    assert_eq!(timeline[1]["type"], PAUSED);
    assert_eq!(timeline[1]["eventLabel"], "pause");
    assert_eq!(timeline[1]["sandboxTeamId"], team.as_str());

    // Delete: 200 without a body; then it is gone.
    let (status, deleted) = call("DELETE", &path, None);
    assert_eq!((status, deleted), (200, Value::Null));
    let (status, gone) = call("GET", &path, None);
    assert_eq!((status, &gone["code"]), (404, &json!(404)), "{gone}");
    assert_eq!(call("GET", "/events/webhooks", None), (200, json!([])));
}
