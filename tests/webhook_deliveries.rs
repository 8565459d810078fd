//! Issue 27: E2B's delivery log and stats (`GET /events/webhooks/{id}/deliveries` and `…/stats`)
//! through the real binary, a real PostgreSQL and Redis, and receivers on real sockets: every
//! attempt as E2B's document shapes it (request and answer, signature and credentials hidden,
//! error classes from a 500, a timeout and the URL guard), groups per event, cursor pages that
//! neither repeat nor lose an event while attempts are written, every filter, and stats that
//! agree with what was delivered; attempts logged before the upgrade stay readable.

mod common;
mod support;

use common::events_api::{api_call, wait_for_api};
use common::{RunningEmitter, eventually, free_port};
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use support::docs_receiver::{gate_exists, xadd};
use support::postgres::PostgresServer;
use support::redis::RedisServer;

const SECRET: &str = "flaky-webhook-secret-0a1b2c3d4e5f";
const URL_PASSWORD: &str = "pw-7e2d9";
const URL_TOKEN: &str = "tok-secret-9f1c";
/// An event `/flaky` never accepts: after its 500, every retry times out, one every ~1.3 s.
const STUCK_EVENT: &str = "00000000-0000-4000-8000-000000000999";
/// Bytes of the body the flaky receiver answers its 500s with.
const BIG_BODY: usize = 10 * 1024;

/// One request a receiver got.
#[derive(Debug, Clone)]
struct Seen {
    path: String,
    event_id: String,
    attempt: u32,
    body: Vec<u8>,
    signature: String,
}

/// Receivers on one socket: `/flaky` answers each event's first attempt 500 with a 10 KiB body,
/// later ones 200 `ok` (except [`STUCK_EVENT`]'s, never answered in time); `/silent` never
/// answers in time.
struct Receivers {
    port: u16,
    seen: Arc<Mutex<Vec<Seen>>>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl Receivers {
    fn start() -> Self {
        use axum::body::Bytes;
        use axum::http::{HeaderMap, StatusCode, Uri};
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let port = listener.local_addr().unwrap().port();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        let handler = move |uri: Uri, headers: HeaderMap, body: Bytes| {
            let log = log.clone();
            async move {
                let header = |n: &str| {
                    headers
                        .get(n)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default()
                        .to_owned()
                };
                let event: Value = serde_json::from_slice(&body).unwrap_or_default();
                let attempt: u32 = header("e2b-delivery-attempt").parse().unwrap_or(0);
                log.lock().unwrap().push(Seen {
                    path: uri.path().to_owned(),
                    event_id: event["id"].as_str().unwrap_or_default().to_owned(),
                    attempt,
                    body: body.to_vec(),
                    signature: header("e2b-signature"),
                });
                let stuck = event["id"] == STUCK_EVENT;
                match uri.path() {
                    // Never answered in time: the silent path, and the stuck event's retries.
                    "/silent" => {
                        tokio::time::sleep(Duration::from_secs(60)).await;
                        (StatusCode::OK, [("x-receiver", "silent")], String::new())
                    }
                    _ if stuck && attempt > 1 => {
                        tokio::time::sleep(Duration::from_secs(60)).await;
                        (StatusCode::OK, [("x-receiver", "flaky")], String::new())
                    }
                    _ if attempt == 1 => (
                        StatusCode::INTERNAL_SERVER_ERROR,
                        [("x-receiver", "flaky")],
                        "x".repeat(BIG_BODY),
                    ),
                    _ => (StatusCode::OK, [("x-receiver", "flaky")], "ok".to_owned()),
                }
            }
        };
        let app = axum::Router::new().fallback(axum::routing::post(handler));
        runtime.spawn(async move { axum::serve(listener, app).await });
        Self {
            port,
            seen,
            runtime: Some(runtime),
        }
    }

    fn seen(&self, path: &str) -> Vec<Seen> {
        let seen = self.seen.lock().unwrap();
        seen.iter().filter(|s| s.path == path).cloned().collect()
    }
}

impl Drop for Receivers {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

/// Postgres, Redis, the receivers and the emitter (retries after 300 ms, 1 s timeout, loopback
/// 127.0.0.1 allowed for user webhooks), and a team with a key, and another team.
struct Setup {
    pg: PostgresServer,
    redis: RedisServer,
    receivers: Receivers,
    emitter: RunningEmitter,
    port: u16,
    team: String,
    key: String,
    other_key: String,
    _dir: tempfile::TempDir,
}

impl Setup {
    fn start() -> Self {
        Self::with_timeout("1s")
    }

    /// With this `WEBHOOK_TIMEOUT`.
    fn with_timeout(timeout: &str) -> Self {
        let pg = PostgresServer::start();
        let (team, key) = pg.add_team("deliveries");
        let (_other, other_key) = pg.add_team("others");
        Self::start_on(pg, (team, key, other_key), timeout)
    }

    fn start_on(pg: PostgresServer, team: (String, String, String), timeout: &str) -> Self {
        let (team, key, other_key) = team;
        let redis = RedisServer::start();
        let receivers = Receivers::start();
        let port = free_port();
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("retry.toml");
        std::fs::write(&config, "[retry]\nschedule = [\"300ms\"]\njitter = 0.0\n").unwrap();
        let (listen, data) = (format!("127.0.0.1:{port}"), dir.path().join("data"));
        let log = dir.path().join("emitter.log");
        let file = std::fs::File::create(&log).unwrap();
        let child = emitter_command()
            .arg("run")
            .envs([
                ("ADMIN_TOKEN", common::ADMIN_TOKEN),
                ("POSTGRES_CONNECTION_STRING", &pg.url()),
                ("LISTEN_ADDR", &listen),
                ("DATA_DIR", data.to_str().unwrap()),
                ("REDIS_URL", &redis.host_port()),
                ("CONFIG_FILE", config.to_str().unwrap()),
                ("API_ALLOW_PRIVATE_CIDRS", "127.0.0.1/32"),
                ("WEBHOOK_TIMEOUT", timeout),
            ])
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .unwrap();
        let emitter = RunningEmitter { child, log };
        wait_for_api(port, &key);
        Self {
            pg,
            redis,
            receivers,
            emitter,
            port,
            team,
            key,
            other_key,
            _dir: dir,
        }
    }

    fn register(&self, url: &str, events: Value) -> String {
        let body = json!({
            "name": "log", "url": url, "enabled": true, "events": events,
            "signatureSecret": SECRET,
        });
        let (status, created) = api_call(
            self.port,
            "POST",
            "/events/webhooks",
            Some(&self.key),
            Some(&body),
        );
        assert_eq!(status, 201, "{created}");
        created["id"].as_str().unwrap().to_owned()
    }

    fn get(&self, path: &str) -> (u16, Value) {
        api_call(self.port, "GET", path, Some(&self.key), None)
    }

    /// Waits until the team's gate key exists and the webhook `id` has its dispatcher.
    fn wait_routed(&self, id: &str) {
        let mut conn = self.redis.connection();
        let started = format!("delivering to a registered webhook webhook={id}");
        let routed = eventually(Duration::from_secs(15), || {
            gate_exists(&mut conn, &self.team) && self.emitter.log_text().contains(&started)
        });
        assert!(
            routed,
            "webhook {id} never routed; log:\n{}",
            self.emitter.log_text()
        );
    }

    fn send(&self, id: &str, kind: &str, sandbox: &str) {
        xadd(&mut self.redis.connection(), id, kind, sandbox, &self.team);
    }

    /// Every group of webhook `id`'s log, walking pages of `limit` with `query`.
    fn walk(&self, id: &str, query: &str, limit: usize) -> Vec<Value> {
        let mut groups = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let mut path = format!("/events/webhooks/{id}/deliveries?limit={limit}{query}");
            if let Some(c) = &cursor {
                path.push_str(&format!("&cursor={c}"));
            }
            let (status, page) = self.get(&path);
            assert_eq!(status, 200, "{path} → {page}");
            let data = page["data"].as_array().unwrap();
            assert!(data.len() <= limit);
            groups.extend(data.iter().cloned());
            match page["nextCursor"].as_str() {
                Some(next) => cursor = Some(next.to_owned()),
                None => {
                    assert!(page["nextCursor"].is_null(), "{page}");
                    return groups;
                }
            }
        }
    }
}

/// The binary under test, with none of the caller's settings: `EMITTER_BIN` when set — a
/// private copy, for a target directory several checkouts share, where
/// `target/debug/e2b-webhook-emitter` is whichever built last — else this build's.
fn emitter_command() -> std::process::Command {
    match std::env::var_os("EMITTER_BIN") {
        Some(path) => {
            let mut command = std::process::Command::new(path);
            command.env_clear();
            command
        }
        None => common::emitter(),
    }
}

fn event_ids(groups: &[Value]) -> Vec<String> {
    groups
        .iter()
        .map(|g| g["eventId"].as_str().unwrap().to_owned())
        .collect()
}

fn attempts(groups: &[Value]) -> Vec<Value> {
    groups
        .iter()
        .flat_map(|g| g["attempts"].as_array().unwrap().iter().cloned())
        .collect()
}

fn time(v: &Value) -> jiff::Timestamp {
    v.as_str().unwrap().parse().unwrap()
}

/// The first (earliest) attempt's time of each group: a group's place in the list.
fn first_times(groups: &[Value]) -> Vec<jiff::Timestamp> {
    groups
        .iter()
        .map(|g| {
            g["attempts"]
                .as_array()
                .unwrap()
                .iter()
                .map(|a| time(&a["timestamp"]))
                .min()
                .unwrap()
        })
        .collect()
}

/// `t` without its fraction (Postgres keeps microseconds: a range is given to it as it is).
fn whole_second(t: jiff::Timestamp) -> jiff::Timestamp {
    jiff::Timestamp::from_second(t.as_second()).unwrap()
}

fn event_id(n: usize) -> String {
    format!("00000000-0000-4000-8000-{n:012}")
}

#[test]
fn each_attempt_is_logged_as_e2b_shows_it_with_nothing_secret() {
    let setup = Setup::start();
    let started = jiff::Timestamp::now();
    let port = setup.receivers.port;
    let flaky = setup.register(
        &format!("http://user:{URL_PASSWORD}@127.0.0.1:{port}/flaky?token={URL_TOKEN}"),
        json!(["sandbox.lifecycle.killed"]),
    );
    let silent = setup.register(
        &format!("http://127.0.0.1:{port}/silent"),
        json!(["sandbox.lifecycle.killed"]),
    );
    // A webhook whose address the URL guard refuses when connecting (127.0.0.2 is not allowed):
    // as one registered before the operator narrowed API_ALLOW_PRIVATE_CIDRS.
    let guarded = setup.pg.psql(&format!(
        "INSERT INTO webhook_emitter.webhooks (id, team_id, name, url, enabled, events, signature_secret)
         VALUES (gen_random_uuid(), '{}', 'guarded', 'http://127.0.0.2:{port}/guarded', true,
                 ARRAY['sandbox.lifecycle.killed'], '{SECRET}') RETURNING id",
        setup.team
    ));
    for id in [&flaky, &silent, &guarded] {
        setup.wait_routed(id);
    }
    let event = event_id(1);
    setup.send(&event, "killed", "sbx-log-1");

    // The webhook's first page once its first event shows `attempts` attempts or more.
    let page_with = |id: &str, attempts: usize, what: &str| {
        let mut page = Value::Null;
        assert!(
            eventually(Duration::from_secs(20), || {
                let status;
                (status, page) = setup.get(&format!("/events/webhooks/{id}/deliveries"));
                assert_eq!(status, 200, "{page}");
                page["data"][0]["attempts"]
                    .as_array()
                    .is_some_and(|a| a.len() >= attempts)
            }),
            "{what}: {page}; log:\n{}",
            setup.emitter.log_text()
        );
        page
    };
    let page = page_with(&flaky, 2, "the 500 and the 200 of the flaky webhook");
    assert_eq!(
        page["data"][0]["attempts"].as_array().map(Vec::len),
        Some(2),
        "{page}"
    );
    let text = page.to_string();
    assert_eq!(page["nextCursor"], Value::Null);
    let groups = page["data"].as_array().unwrap();
    assert_eq!(groups.len(), 1, "{page}");
    let group = &groups[0];
    assert_eq!(group["eventId"], event.as_str());
    assert_eq!(group["eventType"], "sandbox.lifecycle.killed");
    assert_eq!(group["sandboxId"], "sbx-log-1");
    let mut keys: Vec<&str> = group
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    assert_eq!(keys, ["attempts", "eventId", "eventType", "sandboxId"]);

    // Newest first: the delivery, then the 500 that was retried.
    let (ok, failed) = (&group["attempts"][0], &group["attempts"][1]);
    let received = setup.receivers.seen("/flaky");
    assert_eq!(received.len(), 2, "{received:?}");
    assert!(received.iter().all(|s| s.event_id == event), "{received:?}");
    for (attempt, number, status) in [(failed, 1, 500), (ok, 2, 200)] {
        let mut keys: Vec<&str> = attempt
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        keys.sort_unstable();
        assert_eq!(
            keys,
            [
                "durationMs",
                "errorClass",
                "errorMessage",
                "eventId",
                "eventType",
                "id",
                "requestBody",
                "requestHeaders",
                "requestUrl",
                "responseBody",
                "responseHeaders",
                "responseHttpStatusCode",
                "sandboxId",
                "status",
                "teamId",
                "timestamp",
                "webhookId"
            ]
        );
        assert!(uuid::Uuid::parse_str(attempt["id"].as_str().unwrap()).is_ok());
        assert_eq!(attempt["teamId"], setup.team.as_str());
        assert_eq!(attempt["webhookId"], flaky.as_str());
        assert_eq!(attempt["eventId"], event.as_str());
        assert_eq!(attempt["sandboxId"], "sbx-log-1");
        assert_eq!(attempt["eventType"], "sandbox.lifecycle.killed");
        assert_eq!(attempt["responseHttpStatusCode"], status);
        assert!(attempt["durationMs"].is_i64());
        let at = time(&attempt["timestamp"]);
        assert!(at >= started && at <= jiff::Timestamp::now(), "{at}");
        // The body is the one that crossed the socket, byte for byte.
        let sent = received.iter().find(|s| s.attempt == number).unwrap();
        assert_eq!(
            attempt["requestBody"].as_str().unwrap().as_bytes(),
            sent.body
        );
        let headers: Value =
            serde_json::from_str(attempt["requestHeaders"].as_str().unwrap()).unwrap();
        assert_eq!(headers["content-type"], "application/json");
        assert_eq!(headers["e2b-delivery-attempt"], number.to_string());
        assert_eq!(headers["e2b-webhook-id"], flaky.as_str());
        assert_eq!(headers["e2b-signature-version"], "v1");
        assert_eq!(headers["e2b-signature"], "***");
        assert_eq!(
            attempt["requestUrl"],
            format!("http://***@127.0.0.1:{port}/flaky?***")
        );
        let answer: Value =
            serde_json::from_str(attempt["responseHeaders"].as_str().unwrap()).unwrap();
        assert_eq!(answer["x-receiver"], "flaky");
    }
    assert_ne!(ok["id"], failed["id"]);
    assert!(time(&failed["timestamp"]) < time(&ok["timestamp"]));
    assert_eq!(ok["status"], "success");
    assert_eq!(ok["errorClass"], Value::Null);
    assert_eq!(ok["errorMessage"], Value::Null);
    assert_eq!(ok["responseBody"], "ok");
    assert_eq!(failed["status"], "failed");
    assert_eq!(failed["errorClass"], "http_error");
    // 10 KiB answered, 4 KiB kept; the body says what went wrong, so no message.
    assert_eq!(failed["responseBody"], "x".repeat(4096));
    assert_eq!(failed["errorMessage"], Value::Null);
    // No secret anywhere: not the signing secret, not a signature sent, not the URL's.
    for secret in [SECRET, URL_PASSWORD, URL_TOKEN]
        .into_iter()
        .chain(received.iter().map(|s| s.signature.as_str()))
    {
        assert!(
            !secret.is_empty() && !text.contains(secret),
            "{secret} in {text}"
        );
    }

    // The receiver that never answers: a timeout after WEBHOOK_TIMEOUT, no answer.
    let page = page_with(&silent, 1, "a timed-out attempt");
    let attempt = page["data"][0]["attempts"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .clone();
    assert_eq!(attempt["status"], "failed");
    assert_eq!(attempt["errorClass"], "timeout");
    assert_eq!(attempt["errorMessage"], "timed out");
    assert_eq!(attempt["responseHttpStatusCode"], Value::Null);
    assert_eq!(attempt["responseBody"], Value::Null);
    assert_eq!(attempt["responseHeaders"], Value::Null);
    let took = attempt["durationMs"].as_i64().unwrap();
    assert!((900..5_000).contains(&took), "{took} ms");

    // The address the URL guard refuses: nothing sent, a request error saying why.
    let page = page_with(&guarded, 1, "a refused attempt");
    let attempt = &page["data"][0]["attempts"][0];
    assert_eq!(attempt["status"], "failed");
    assert_eq!(attempt["errorClass"], "request_error");
    assert!(
        attempt["errorMessage"]
            .as_str()
            .unwrap()
            .contains("may not reach inside the cluster"),
        "{attempt}"
    );
    assert_eq!(attempt["responseHttpStatusCode"], Value::Null);
    assert!(setup.receivers.seen("/guarded").is_empty());
    assert_eq!(
        attempt["requestUrl"],
        format!("http://127.0.0.2:{port}/guarded")
    );

    // Another team's webhook, a malformed id: not found. Bad parameters: 400 naming them.
    for path in [
        format!("/events/webhooks/{flaky}/deliveries"),
        format!("/events/webhooks/{flaky}/stats"),
    ] {
        let (status, answer) = api_call(setup.port, "GET", &path, Some(&setup.other_key), None);
        assert_eq!(
            (status, answer),
            (404, json!({"code": 404, "message": "webhook not found"}))
        );
    }
    for path in [
        "/events/webhooks/not-a-uuid/deliveries",
        "/events/webhooks/not-a-uuid/stats",
    ] {
        assert_eq!(setup.get(path).0, 404, "{path}");
    }
    for (query, field) in [
        ("limit=0", "limit"),
        ("limit=101", "limit"),
        ("orderAsc=maybe", "orderAsc"),
        ("cursor=garbage", "cursor"),
        ("deliveryStatus=delivered", "deliveryStatus"),
        ("eventType=exploded", "eventType"),
        ("start=yesterday", "start"),
        (
            "start=2026-12-02T00:00:00Z&end=2026-12-01T00:00:00Z",
            "start",
        ),
    ] {
        let (status, answer) = setup.get(&format!("/events/webhooks/{flaky}/deliveries?{query}"));
        assert_eq!(status, 400, "{query} → {answer}");
        assert_eq!(answer["code"], 400);
        let message = answer["message"].as_str().unwrap();
        assert!(
            message.starts_with(&format!("{field}: ")),
            "{query} → {message}"
        );
    }
    // Without a key: the same 401 as every other call.
    assert_eq!(
        api_call(
            setup.port,
            "GET",
            &format!("/events/webhooks/{flaky}/stats"),
            None,
            None
        )
        .0,
        401
    );
    let log_text = setup.emitter.log_text();
    for secret in [SECRET, URL_PASSWORD, URL_TOKEN] {
        assert!(!log_text.contains(secret), "{secret} in the log");
    }
}

#[test]
fn pages_filters_and_stats_agree_with_what_was_delivered() {
    let setup = Setup::start();
    let started = whole_second(jiff::Timestamp::now());
    let flaky = setup.register(
        &format!("http://127.0.0.1:{}/flaky", setup.receivers.port),
        json!(["sandbox.lifecycle.created", "sandbox.lifecycle.killed"]),
    );
    setup.wait_routed(&flaky);
    // 12 events, each a 500 then a 200: 24 attempts. Even ones created, odd ones killed.
    let kind = |n: usize| {
        if n.is_multiple_of(2) {
            "created"
        } else {
            "killed"
        }
    };
    for n in 0..12 {
        setup.send(&event_id(n), kind(n), &format!("sbx-{n}"));
    }
    let stats_path = format!("/events/webhooks/{flaky}/stats");
    let total_is = |want: i64| {
        let mut stats = (0, Value::Null);
        let reached = eventually(Duration::from_secs(30), || {
            stats = setup.get(&stats_path);
            stats.1["total"] == want
        });
        let log = setup.emitter.log_text();
        assert!(reached, "{want} attempts expected: {stats:?}; log:\n{log}");
        stats.1
    };
    total_is(24);
    let all = setup.walk(&flaky, "", 100);
    assert_eq!(all.len(), 12);
    let original: BTreeSet<String> = event_ids(&all).into_iter().collect();
    assert_eq!(original, (0..12).map(event_id).collect());
    for group in &all {
        let attempts = group["attempts"].as_array().unwrap();
        let statuses: Vec<&Value> = attempts
            .iter()
            .map(|a| &a["responseHttpStatusCode"])
            .collect();
        assert_eq!(statuses, [&json!(200), &json!(500)], "{group}");
    }

    // Newest first, 5 a page, while new events are delivered between the pages: the walk has
    // each of the 12 exactly once, in order, and none of the new ones (they come before page 1).
    let path = |cursor: &str| format!("/events/webhooks/{flaky}/deliveries?limit=5{cursor}");
    let (_, first) = setup.get(&path(""));
    let mut walked: Vec<Value> = first["data"].as_array().unwrap().clone();
    let mut cursor = first["nextCursor"].as_str().unwrap().to_owned();
    for n in 100..106 {
        setup.send(&event_id(n), kind(n), &format!("sbx-{n}"));
    }
    loop {
        // Pages are read while the new events' attempts (500s and retries) are being written.
        let (status, page) = setup.get(&path(&format!("&cursor={cursor}")));
        assert_eq!(status, 200, "{page}");
        walked.extend(page["data"].as_array().unwrap().iter().cloned());
        match page["nextCursor"].as_str() {
            Some(next) => cursor = next.to_owned(),
            None => break,
        }
        std::thread::sleep(Duration::from_millis(150));
    }
    let ids = event_ids(&walked);
    assert_eq!(ids.len(), 12, "{ids:?}");
    assert_eq!(ids.iter().cloned().collect::<BTreeSet<_>>(), original);
    let times = first_times(&walked);
    assert!(times.windows(2).all(|w| w[0] >= w[1]), "{times:?}");
    assert_eq!(ids, event_ids(&all), "the same order as one page of all");
    total_is(36);

    // Oldest first, 4 a page, while three more events are delivered: the 18 in order, each once;
    // anything after them is one of the three.
    let mut ascending = Vec::new();
    let mut cursor: Option<String> = None;
    let mut sent_more = false;
    loop {
        let mut path = format!("/events/webhooks/{flaky}/deliveries?limit=4&orderAsc=true");
        if let Some(c) = &cursor {
            path.push_str(&format!("&cursor={c}"));
        }
        let (_, page) = setup.get(&path);
        ascending.extend(page["data"].as_array().unwrap().iter().cloned());
        if !sent_more {
            for n in 200..203 {
                setup.send(&event_id(n), kind(n), &format!("sbx-{n}"));
            }
            sent_more = true;
        }
        match page["nextCursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    let ids = event_ids(&ascending);
    let unique: BTreeSet<&String> = ids.iter().collect();
    assert_eq!(unique.len(), ids.len(), "repeated: {ids:?}");
    let late: Vec<String> = (200..203).map(event_id).collect();
    let mut expected: Vec<String> = event_ids(&setup.walk(&flaky, "", 100))
        .into_iter()
        .filter(|id| !late.contains(id))
        .collect();
    expected.reverse();
    assert_eq!(expected.len(), 18);
    assert_eq!(ids[..18], expected[..]);
    assert!(ids[18..].iter().all(|id| late.contains(id)), "{ids:?}");
    let times = first_times(&ascending);
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "{times:?}");
    // Within a group, attempts follow the order too.
    assert_eq!(ascending[0]["attempts"][0]["responseHttpStatusCode"], 500);
    let stats = total_is(42);
    let everything = setup.walk(&flaky, "", 7);
    assert_eq!(everything.len(), 21);
    let every_attempt = attempts(&everything);
    assert_eq!(every_attempt.len(), 42);

    // deliveryStatus: only the attempts of that status, in every event's group.
    for (status, code) in [("failed", 500), ("success", 200)] {
        let groups = setup.walk(&flaky, &format!("&deliveryStatus={status}"), 10);
        assert_eq!(groups.len(), 21, "{status}");
        for group in &groups {
            let attempts = group["attempts"].as_array().unwrap();
            assert_eq!(attempts.len(), 1, "{group}");
            assert_eq!(attempts[0]["status"], status);
            assert_eq!(attempts[0]["responseHttpStatusCode"], code);
        }
    }
    assert_eq!(
        attempts(&setup.walk(&flaky, "&deliveryStatus=success,failed", 10)).len(),
        42
    );
    // eventType: comma-separated, or repeated; labels as E2B's registration takes them too.
    let killed = setup.walk(&flaky, "&eventType=sandbox.lifecycle.killed", 10);
    assert_eq!(killed.len(), 10, "events 1,3,…,11, 101,103,105, 201");
    assert!(
        killed
            .iter()
            .all(|g| g["eventType"] == "sandbox.lifecycle.killed")
    );
    assert_eq!(
        setup
            .walk(
                &flaky,
                "&eventType=sandbox.lifecycle.killed,sandbox.lifecycle.created",
                10
            )
            .len(),
        21
    );
    assert_eq!(
        setup
            .walk(
                &flaky,
                "&eventType=create&eventType=sandbox.lifecycle.paused",
                10
            )
            .len(),
        11
    );
    // start (inclusive) and end (exclusive), at an attempt's own time.
    let mut times: Vec<jiff::Timestamp> = every_attempt
        .iter()
        .map(|a| time(&a["timestamp"]))
        .collect();
    times.sort();
    let pivot = times[times.len() / 2];
    let from = attempts(&setup.walk(&flaky, &format!("&start={pivot}"), 10));
    assert_eq!(from.len(), times.iter().filter(|t| **t >= pivot).count());
    assert!(from.iter().all(|a| time(&a["timestamp"]) >= pivot));
    let before = attempts(&setup.walk(&flaky, &format!("&end={pivot}"), 10));
    assert_eq!(before.len(), times.iter().filter(|t| **t < pivot).count());
    assert_eq!(from.len() + before.len(), 42);
    let combined = setup.walk(
        &flaky,
        &format!("&start={pivot}&deliveryStatus=failed&eventType=kill&orderAsc=true"),
        3,
    );
    let want = every_attempt
        .iter()
        .filter(|a| {
            time(&a["timestamp"]) >= pivot
                && a["status"] == "failed"
                && a["eventType"] == "sandbox.lifecycle.killed"
        })
        .count();
    assert_eq!(attempts(&combined).len(), want);

    // Stats: the default range (the last 24 h) in 30-minute buckets; totals as delivered.
    let failed = every_attempt
        .iter()
        .filter(|a| a["status"] == "failed")
        .count();
    assert_eq!(
        (stats["total"].as_i64(), stats["failed"].as_i64()),
        (Some(42), Some(failed as i64))
    );
    assert_eq!(failed, 21);
    let buckets = stats["buckets"].as_array().unwrap();
    assert_eq!(buckets.len(), 48);
    let sum = |field: &str| {
        buckets
            .iter()
            .map(|b| b[field].as_i64().unwrap())
            .sum::<i64>()
    };
    assert_eq!((sum("total"), sum("failed")), (42, 21));
    let durations: Vec<i64> = every_attempt
        .iter()
        .map(|a| a["durationMs"].as_i64().unwrap())
        .collect();
    let d = &stats["durationMs"];
    assert_eq!(
        d["minimum"].as_f64().unwrap(),
        *durations.iter().min().unwrap() as f64
    );
    assert_eq!(
        d["maximum"].as_f64().unwrap(),
        *durations.iter().max().unwrap() as f64
    );
    let mean = durations.iter().sum::<i64>() as f64 / 42.0;
    assert!(
        (d["average"].as_f64().unwrap() - mean).abs() < 1e-6,
        "{d} vs {mean}"
    );

    // Each range: its bucket count and width, every attempt in the bucket its time falls in,
    // empty buckets present with zeros.
    let end = whole_second(jiff::Timestamp::now()) + jiff::SignedDuration::from_secs(60);
    for (hours, count, width) in [
        (4, 48, 300),
        (12, 48, 900),
        (24, 48, 1800),
        (7 * 24, 42, 14_400),
    ] {
        let start = end - jiff::SignedDuration::from_hours(hours);
        let (status, stats) = setup.get(&format!("{stats_path}?start={start}&end={end}"));
        assert_eq!(status, 200, "{stats}");
        let buckets = stats["buckets"].as_array().unwrap();
        assert_eq!(buckets.len(), count, "{hours} h");
        let mut want = vec![0i64; count];
        for t in &times {
            want[(t.duration_since(start).as_secs() / width) as usize] += 1;
        }
        for (i, bucket) in buckets.iter().enumerate() {
            let at = start + jiff::SignedDuration::from_secs(width * i as i64);
            assert_eq!(time(&bucket["timestamp"]), at, "{hours} h, bucket {i}");
            assert_eq!(
                bucket["total"].as_i64().unwrap(),
                want[i],
                "{hours} h, bucket {i}"
            );
            if want[i] == 0 {
                assert_eq!(bucket["failed"], 0);
                assert_eq!(
                    bucket["durationMs"],
                    json!({"minimum": 0.0, "average": 0.0, "maximum": 0.0})
                );
            }
        }
        assert_eq!(stats["total"], 42);
    }
    // A range before any attempt: every bucket there, all zero.
    let early = started - jiff::SignedDuration::from_hours(2);
    let (_, empty) = setup.get(&format!(
        "{stats_path}?start={}&end={early}",
        early - jiff::SignedDuration::from_hours(1)
    ));
    assert_eq!(empty["buckets"].as_array().unwrap().len(), 30);
    assert_eq!(
        (empty["total"].as_i64(), empty["failed"].as_i64()),
        (Some(0), Some(0))
    );
    assert_eq!(
        empty["durationMs"],
        json!({"minimum": 0.0, "average": 0.0, "maximum": 0.0})
    );
    // Over 7 days, start after end, a bad date: 400 naming the field.
    let week_and_a_second = end - jiff::SignedDuration::from_secs(7 * 24 * 3600 + 1);
    for (query, field) in [
        (format!("start={week_and_a_second}&end={end}"), "start"),
        (format!("start={end}&end={started}"), "start"),
        ("end=tomorrow".to_owned(), "end"),
    ] {
        let (status, answer) = setup.get(&format!("{stats_path}?{query}"));
        assert_eq!(status, 400, "{query} → {answer}");
        assert_eq!(answer["code"], 400);
        assert!(
            answer["message"]
                .as_str()
                .unwrap()
                .starts_with(&format!("{field}: ")),
            "{answer}"
        );
    }
    let seven_days = end - jiff::SignedDuration::from_hours(7 * 24);
    assert_eq!(
        setup
            .get(&format!("{stats_path}?start={seven_days}&end={end}"))
            .0,
        200
    );
}

#[test]
fn an_event_retried_while_pages_are_read_keeps_its_place() {
    // The oldest event of the log keeps getting attempts (timeouts) while pages are read: it is
    // listed once, at its first attempt's place, in both orders.
    let setup = Setup::start();
    let flaky = setup.register(
        &format!("http://127.0.0.1:{}/flaky", setup.receivers.port),
        json!(["sandbox.lifecycle.killed"]),
    );
    setup.wait_routed(&flaky);
    setup.send(STUCK_EVENT, "killed", "sbx-stuck");
    let stuck_attempts = || {
        setup
            .walk(&flaky, "", 100)
            .iter()
            .find(|g| g["eventId"] == STUCK_EVENT)
            .map_or(0, |g| g["attempts"].as_array().unwrap().len())
    };
    assert!(eventually(Duration::from_secs(15), || stuck_attempts() >= 1));
    for n in 0..12 {
        setup.send(&event_id(n), "killed", &format!("sbx-{n}"));
    }
    let done = |groups: &[Value]| {
        groups.len() == 13
            && groups
                .iter()
                .filter(|g| g["eventId"] != STUCK_EVENT)
                .all(|g| g["attempts"].as_array().unwrap().len() == 2)
    };
    assert!(eventually(Duration::from_secs(30), || done(
        &setup.walk(&flaky, "", 100)
    )));
    for ascending in [false, true] {
        let before = stuck_attempts();
        let mut groups = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let mut path =
                format!("/events/webhooks/{flaky}/deliveries?limit=5&orderAsc={ascending}");
            if let Some(c) = &cursor {
                path.push_str(&format!("&cursor={c}"));
            }
            let (_, page) = setup.get(&path);
            groups.extend(page["data"].as_array().unwrap().iter().cloned());
            match page["nextCursor"].as_str() {
                Some(next) => cursor = Some(next.to_owned()),
                None => break,
            }
            // Long enough for the stuck event to be tried again between two pages.
            std::thread::sleep(Duration::from_millis(1_500));
        }
        let ids = event_ids(&groups);
        assert_eq!(ids.len(), 13, "ascending {ascending}: {ids:?}");
        assert_eq!(ids.iter().collect::<BTreeSet<_>>().len(), 13, "{ids:?}");
        let place = if ascending { 0 } else { 12 };
        assert_eq!(ids[place], STUCK_EVENT, "ascending {ascending}: {ids:?}");
        assert!(
            stuck_attempts() > before,
            "the stuck event was not tried again while the pages were read"
        );
    }
}

#[test]
fn an_attempt_cut_short_by_a_stop_is_logged_as_canceled() {
    // The receiver never answers and the timeout is longer than the drain deadline (20 s).
    let setup = Setup::with_timeout("60s");
    let silent = setup.register(
        &format!("http://127.0.0.1:{}/silent", setup.receivers.port),
        json!(["sandbox.lifecycle.killed"]),
    );
    setup.wait_routed(&silent);
    setup.send(&event_id(7), "killed", "sbx-stop");
    assert!(
        eventually(Duration::from_secs(15), || !setup
            .receivers
            .seen("/silent")
            .is_empty()),
        "the attempt never started"
    );
    setup.emitter.signal(nix::sys::signal::Signal::SIGTERM);
    let mut emitter = setup.emitter;
    let stopped = eventually(Duration::from_secs(45), || {
        emitter.child.try_wait().unwrap().is_some()
    });
    assert!(stopped, "still running 45 s after SIGTERM");
    let log = emitter.log_text();
    assert!(log.contains("drain deadline reached"), "{log}");
    // Written by the delivery log after the dispatchers stopped (psql separates fields by `|`).
    let row = setup.pg.psql(&format!(
        "SELECT failure_class, outcome, coalesce(status::text, 'none'), response_body IS NULL,
                error, request_url
           FROM webhook_emitter.delivery_attempts WHERE endpoint = 'webhook:{silent}'"
    ));
    let fields: Vec<&str> = row.split('|').collect();
    assert_eq!(fields[..4], ["canceled", "retry", "none", "t"], "{row}");
    assert!(
        fields[4].starts_with("canceled: the service stopped"),
        "{row}"
    );
    assert_eq!(
        fields[5],
        format!("http://127.0.0.1:{}/silent", setup.receivers.port)
    );
}

/// sqlx's checksum of a migration: SHA-384 of its text.
fn checksum(sql: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha384::digest(sql.as_bytes()))
}

#[test]
fn attempts_logged_before_the_upgrade_are_read_with_what_they_have() {
    // Our schema as the previous version left it: its three migrations, recorded as sqlx
    // records them, and two attempts logged by it.
    let pg = PostgresServer::start();
    let (team, key) = pg.add_team("upgraded");
    let (_other, other_key) = pg.add_team("others");
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/postgres/migrations");
    let mut setup_sql = format!(
        "CREATE SCHEMA webhook_emitter AUTHORIZATION {role}; SET ROLE {role}; SET search_path = webhook_emitter;
         CREATE TABLE _sqlx_migrations (version BIGINT PRIMARY KEY, description TEXT NOT NULL,
             installed_on TIMESTAMPTZ NOT NULL DEFAULT now(), success BOOLEAN NOT NULL,
             checksum BYTEA NOT NULL, execution_time BIGINT NOT NULL);",
        role = support::postgres::EMITTER_ROLE
    );
    for name in [
        "20261126000001_webhooks.sql",
        "20261126000002_sandbox_events.sql",
        "20261126000003_delivery_attempts.sql",
    ] {
        let sql = std::fs::read_to_string(dir.join(name)).unwrap();
        let (version, description) = name.trim_end_matches(".sql").split_once('_').unwrap();
        setup_sql.push_str(&sql);
        setup_sql.push_str(&format!(
            "\n;INSERT INTO _sqlx_migrations VALUES ({version}, '{}', now(), true, '\\x{}', 1);",
            description.replace('_', " "),
            checksum(&sql)
        ));
    }
    let hook = uuid::Uuid::new_v4();
    setup_sql.push_str(&format!(
        "INSERT INTO webhooks (id, team_id, name, url, enabled, events, signature_secret)
         VALUES ('{hook}', '{team}', 'old', 'https://user:{URL_PASSWORD}@hooks.example.com/old?token={URL_TOKEN}',
                 false, ARRAY['sandbox.lifecycle.killed'], '{SECRET}');
         INSERT INTO delivery_attempts (attempted_at, endpoint, event_id, sandbox_id, event_type,
                 attempt, outcome, status, error_class, error, duration_ms)
         VALUES (now() - interval '1 hour', 'webhook:{hook}', 'old-1', 'sbx-old', 'kill', 1,
                 'retry', 503, 'http', 'HTTP 503', 250),
                (now() - interval '59 minutes', 'webhook:{hook}', 'old-1', 'sbx-old', 'kill', 2,
                 'delivered', 200, NULL, NULL, 12);"
    ));
    pg.psql(&setup_sql);

    let setup = Setup::start_on(pg, (team.clone(), key, other_key), "1s");
    let (status, page) = setup.get(&format!("/events/webhooks/{hook}/deliveries"));
    assert_eq!(status, 200, "{page}");
    let group = &page["data"][0];
    assert_eq!(group["eventType"], "sandbox.lifecycle.killed");
    let (ok, failed) = (&group["attempts"][0], &group["attempts"][1]);
    assert_eq!(
        (ok["status"].as_str(), failed["status"].as_str()),
        (Some("success"), Some("failed"))
    );
    assert_eq!(failed["errorClass"], "http_error");
    assert_eq!(failed["errorMessage"], "HTTP 503");
    assert_eq!(failed["responseHttpStatusCode"], 503);
    assert_eq!(failed["durationMs"], 250);
    assert_eq!(failed["requestBody"], "");
    assert_eq!(failed["requestHeaders"], "{}");
    assert_eq!(
        failed["requestUrl"],
        "https://***@hooks.example.com/old?***"
    );
    assert_eq!(failed["responseBody"], Value::Null);
    assert_eq!(ok["errorClass"], Value::Null);
    assert_eq!(ok["teamId"], team.as_str());
    // Started when it finished, less its duration.
    let finished: jiff::Timestamp = setup
        .pg
        .psql(&format!(
            "SELECT to_char(attempted_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')
               FROM webhook_emitter.delivery_attempts WHERE endpoint = 'webhook:{hook}' AND attempt = 1"
        ))
        .parse()
        .unwrap();
    assert_eq!(
        time(&failed["timestamp"]),
        finished - jiff::SignedDuration::from_millis(250)
    );
    assert!(!page.to_string().contains(URL_PASSWORD) && !page.to_string().contains(URL_TOKEN));
    let (_, stats) = setup.get(&format!("/events/webhooks/{hook}/stats"));
    assert_eq!(
        (stats["total"].as_i64(), stats["failed"].as_i64()),
        (Some(2), Some(1))
    );

    // The operator's CLI reads them as before.
    let (code, stdout, stderr) = common::output(
        emitter_command()
            .args(["delivery-log", "--webhook", &hook.to_string(), "--json"])
            .env("POSTGRES_CONNECTION_STRING", setup.pg.url()),
    );
    assert_eq!(code, 0, "{stderr}");
    let lines: Vec<Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2, "{stdout}");
    assert_eq!(
        (
            &lines[0]["outcome"],
            &lines[0]["eventType"],
            &lines[1]["errorClass"]
        ),
        (&json!("delivered"), &json!("kill"), &json!("http"))
    );
}

/// Issue 27's measurement, run by hand:
/// `cargo test --locked --test webhook_deliveries measure -- --ignored --nocapture` (with
/// `EMITTER_BIN=<a copy of the binary>` when the target directory is shared).
/// A week of one busy webhook — `BENCH_ATTEMPTS` attempts (1 000 000 by default): 750 000 events,
/// a third of them a 500 and a retry a minute later, bodies of a few hundred bytes — among as many
/// attempts of 20 other webhooks, in the real Postgres of the tests (their settings: no fsync).
/// Times the stats call and the first and a deep page through the API (10 calls each), and
/// prints `EXPLAIN (ANALYZE, BUFFERS)` of their queries with the same parameters and `jit = off`,
/// as the emitter's connections have it.
#[test]
#[ignore = "a measurement: a minute or more of inserting, run by hand"]
fn measure_a_week_of_a_busy_webhook() {
    use e2b_webhook_emitter::postgres::delivery_pages::{
        Cursor, PageRequest, page_queries_for_explain,
    };
    use std::time::Instant;
    let setup = Setup::start();
    let hook = setup.register(
        "https://hooks.example.com/busy",
        json!(["sandbox.lifecycle.killed"]),
    );
    let endpoint = format!("webhook:{hook}");
    let busy: u64 = std::env::var("BENCH_ATTEMPTS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(1_000_000);
    // First attempts: every other one the busy webhook's, spread evenly over the last 7 days;
    // one in three a 500, retried (200) a minute later. Busy: 3/4 × 2/3 + 1/4 × … = `busy`.
    let first_attempts = busy * 3 / 2;
    let insert = Instant::now();
    setup.pg.psql(&format!(
        "INSERT INTO webhook_emitter.delivery_attempts
              (attempted_at, started_at, endpoint, event_id, sandbox_id, event_type, full_event_type,
               attempt, outcome, status, error_class, failure_class, error, duration_ms,
               request_url, request_headers, request_body, response_headers, response_body)
         SELECT t + interval '40 milliseconds', t, e.endpoint, e.event_id, 'sbx-' || (g % 5000),
                'kill', 'sandbox.lifecycle.killed', 1,
                CASE WHEN g % 3 = 0 THEN 'retry' ELSE 'delivered' END,
                CASE WHEN g % 3 = 0 THEN 500 ELSE 200 END,
                CASE WHEN g % 3 = 0 THEN 'http' END, CASE WHEN g % 3 = 0 THEN 'http_error' END,
                CASE WHEN g % 3 = 0 THEN 'HTTP 500' END, 20 + g % 200,
                'https://hooks.example.com/busy',
                '{{\"content-type\":\"application/json\",\"e2b-signature\":\"***\"}}',
                '{{\"id\":\"' || e.event_id || '\",\"type\":\"sandbox.lifecycle.killed\"}}',
                '{{\"content-type\":\"text/plain\"}}', repeat('r', 200 + g % 300)
           FROM generate_series(1, {first_attempts}) AS g,
                LATERAL (SELECT now() - interval '7 days'
                                + (g::float8 / {first_attempts}) * interval '7 days' AS t) AS at,
                LATERAL (SELECT CASE WHEN g % 2 = 0 THEN '{endpoint}'
                                     ELSE 'webhook:noise-' || (g % 20) END AS endpoint,
                                md5(g::text)::uuid::text AS event_id) AS e;
         INSERT INTO webhook_emitter.delivery_attempts
              (attempted_at, started_at, endpoint, event_id, sandbox_id, event_type, full_event_type,
               attempt, outcome, status, duration_ms, request_url, request_headers, request_body,
               response_headers, response_body)
         SELECT started_at + interval '1 minute', started_at + interval '1 minute', endpoint,
                event_id, sandbox_id, event_type, full_event_type, 2, 'delivered', 200, 15,
                request_url, request_headers, request_body, response_headers, 'ok'
           FROM webhook_emitter.delivery_attempts WHERE outcome = 'retry';"
    ));
    let inserted = insert.elapsed();
    setup
        .pg
        .psql("VACUUM ANALYZE webhook_emitter.delivery_attempts");
    println!(
        "inserted in {inserted:?} (then VACUUM ANALYZE); busy webhook | all rows | table with indexes | the two new indexes: {}",
        setup.pg.psql(&format!(
            "SELECT count(*) FILTER (WHERE endpoint = '{endpoint}') || ' | ' || count(*) || ' | ' ||
                    pg_size_pretty(pg_total_relation_size('webhook_emitter.delivery_attempts')) || ' | ' ||
                    pg_size_pretty(pg_relation_size('webhook_emitter.delivery_attempts_endpoint_started')) || ', ' ||
                    pg_size_pretty(pg_relation_size('webhook_emitter.delivery_attempts_endpoint_event'))
               FROM webhook_emitter.delivery_attempts"
        ))
    );

    let timed = |what: &str, path: &str| {
        let mut took = Vec::new();
        let mut answer = Value::Null;
        for _ in 0..10 {
            let at = Instant::now();
            let (status, body) = setup.get(path);
            took.push(at.elapsed());
            assert_eq!(status, 200, "{body}");
            answer = body;
        }
        let first = took[0];
        took.sort();
        println!(
            "{what}: first {first:?}, median {:?}, max {:?} (10 calls through the API)",
            took[5], took[9]
        );
        answer
    };
    let end = whole_second(jiff::Timestamp::now());
    let week = end - jiff::SignedDuration::from_hours(7 * 24);
    let stats = timed(
        "stats, 7 days (42 buckets of 4 h)",
        &format!("/events/webhooks/{hook}/stats?start={week}&end={end}"),
    );
    println!("  total {} failed {}", stats["total"], stats["failed"]);
    timed(
        "stats, the last 24 h (48 buckets of 30 min)",
        &format!("/events/webhooks/{hook}/stats"),
    );
    timed(
        "first page (25 events, newest first)",
        &format!("/events/webhooks/{hook}/deliveries"),
    );
    // A deep page: 5 days back (500 000 attempts down), from a cursor at that position.
    let position = setup.pg.psql(&format!(
        "SELECT (extract(epoch FROM started_at) * 1000000)::bigint || ' ' || seq
           FROM webhook_emitter.delivery_attempts WHERE endpoint = '{endpoint}'
          ORDER BY started_at DESC, seq DESC OFFSET {} LIMIT 1",
        busy / 2
    ));
    let (started_us, seq) = position.split_once(' ').unwrap();
    let deep = Cursor {
        started_us: started_us.parse().unwrap(),
        seq: seq.parse().unwrap(),
    };
    let page = timed(
        "deep page (25 events, 500 000 attempts down)",
        &format!(
            "/events/webhooks/{hook}/deliveries?cursor={}",
            deep.encode()
        ),
    );
    println!(
        "  it starts at {}",
        page["data"][0]["attempts"][0]["timestamp"]
    );
    timed(
        "first page of failed attempts only",
        &format!("/events/webhooks/{hook}/deliveries?deliveryStatus=failed"),
    );
    timed(
        "oldest first, first page",
        &format!("/events/webhooks/{hook}/deliveries?orderAsc=true"),
    );

    let explain = |label: &str, sql: &str| {
        println!(
            "\n== EXPLAIN (ANALYZE, BUFFERS) {label}\n{}",
            setup
                .pg
                .psql(&format!("SET jit = off; EXPLAIN (ANALYZE, BUFFERS) {sql}"))
        );
    };
    let stats_sql = e2b_webhook_emitter::postgres::delivery_stats::STATS_SQL
        .replace("$1", &format!("'{endpoint}'"))
        .replace("$2", &format!("'{week}'"))
        .replace("$3", &format!("'{end}'"))
        .replace("$4", "14400");
    explain("stats over 7 days", &stats_sql);
    for (label, after) in [("first page", None), ("deep page", Some(deep))] {
        let request = PageRequest {
            filter: Default::default(),
            ascending: false,
            limit: 25,
            after,
        };
        let [(keys, key_params), (rows, _)] = page_queries_for_explain(&request);
        let mut keys = keys.replace("$1", &format!("'{endpoint}'"));
        for (i, param) in key_params.iter().enumerate().rev() {
            keys = keys.replace(&format!("${}", i + 3), param);
        }
        explain(
            &format!("{label}: its 25 events (and whether more follow)"),
            &keys.replace("$2", "26"),
        );
        let ids = setup.pg.psql(&format!(
            "SELECT string_agg(quote_literal(event_id), ',') FROM ({}) AS page",
            keys.replace("$2", "25")
        ));
        let rows = rows
            .replace("$1", &format!("'{endpoint}'"))
            .replace("$2::text[]", &format!("ARRAY[{ids}]::text[]"));
        explain(&format!("{label}: their attempts"), &rows);
    }
}
