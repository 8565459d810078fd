//! Issue 15: E2B Cloud's webhook management API through the real binary, on a real PostgreSQL
//! holding E2B's `teams` and `team_api_keys`, with keys hashed the way E2B hashes them.

mod common;
mod support;

use common::events_api::{api_call, wait_for_api};
use common::{RunningEmitter, free_port};
use serde_json::{Value, json};
use std::time::Duration;
use support::postgres::{EMITTER_PASSWORD, PostgresServer};

const SECRET: &str = "team-webhook-secret-5e4d3c2b1a";

/// An emitter serving the events API on `port` (a static endpoint too, which nothing reaches).
fn start_emitter(
    pg: &PostgresServer,
    port: u16,
    extra_env: &[(&str, &str)],
    log: &str,
) -> RunningEmitter {
    let dir = tempfile::tempdir().unwrap().keep();
    let listen = format!("127.0.0.1:{port}");
    let data = dir.join("data");
    let mut env = vec![
        ("POSTGRES_CONNECTION_STRING", pg.url()),
        ("LISTEN_ADDR", listen),
        ("DATA_DIR", data.display().to_string()),
        ("WEBHOOK_URL", "http://127.0.0.1:9/static".to_owned()),
        ("WEBHOOK_SECRET", "static-secret-0123456789".to_owned()),
    ];
    env.extend(extra_env.iter().map(|(k, v)| (*k, (*v).to_owned())));
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    RunningEmitter::start_with_env(&[], &env, dir.join(log))
}

fn registration(url: &str) -> Value {
    json!({
        "name": "My Sandbox Webhook",
        "url": url,
        "enabled": true,
        "events": ["sandbox.lifecycle.created", "sandbox.lifecycle.killed"],
        "signatureSecret": SECRET,
    })
}

#[test]
fn a_team_manages_its_webhooks_and_sees_no_other_teams() {
    let pg = PostgresServer::start();
    let (team_a, key_a) = pg.add_team("alpha");
    let (_team_b, key_b) = pg.add_team("beta");
    let port = free_port();
    let emitter = start_emitter(&pg, port, &[], "crud.log");
    wait_for_api(port, &key_a);

    let (status, created) = api_call(
        port,
        "POST",
        "/events/webhooks",
        Some(&key_a),
        Some(&registration("https://hooks.example.com/e2b")),
    );
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_str().unwrap().to_owned();
    assert_eq!(created["teamId"], team_a.as_str());
    assert_eq!(created["name"], "My Sandbox Webhook");
    assert_eq!(created["url"], "https://hooks.example.com/e2b");
    assert_eq!(created["enabled"], true);
    assert_eq!(
        created["events"],
        json!(["sandbox.lifecycle.created", "sandbox.lifecycle.killed"])
    );
    assert!(
        created["createdAt"]
            .as_str()
            .unwrap()
            .parse::<jiff::Timestamp>()
            .is_ok(),
        "{created}"
    );
    let mut keys: Vec<&str> = created
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "createdAt",
            "enabled",
            "events",
            "id",
            "name",
            "teamId",
            "url"
        ]
    );

    // The row is in our schema, under team A.
    assert_eq!(
        pg.psql(&format!(
            "SELECT team_id FROM webhook_emitter.webhooks WHERE id = '{id}'"
        )),
        team_a
    );

    let (status, list) = api_call(port, "GET", "/events/webhooks", Some(&key_a), None);
    assert_eq!((status, list.as_array().unwrap().len()), (200, 1));
    assert_eq!(list[0], created);
    let path = format!("/events/webhooks/{id}");
    assert_eq!(
        api_call(port, "GET", &path, Some(&key_a), None),
        (200, created.clone())
    );

    // Team B sees nothing of team A's.
    let (status, list) = api_call(port, "GET", "/events/webhooks", Some(&key_b), None);
    assert_eq!((status, list), (200, json!([])));
    assert_eq!(api_call(port, "GET", &path, Some(&key_b), None).0, 404);
    let patch = json!({"enabled": false});
    assert_eq!(
        api_call(port, "PATCH", &path, Some(&key_b), Some(&patch)).0,
        404
    );
    assert_eq!(api_call(port, "DELETE", &path, Some(&key_b), None).0, 404);

    // An update replaces exactly the fields sent.
    let patch = json!({
        "url": "https://hooks.example.com/v2",
        "enabled": false,
        "events": ["sandbox.lifecycle.paused"],
        "signatureSecret": "a-rotated-secret-0f9e8d7c",
    });
    let (status, updated) = api_call(port, "PATCH", &path, Some(&key_a), Some(&patch));
    assert_eq!(status, 200, "{updated}");
    assert_eq!(updated["url"], "https://hooks.example.com/v2");
    assert_eq!(updated["enabled"], false);
    assert_eq!(updated["events"], json!(["sandbox.lifecycle.paused"]));
    assert_eq!(updated["name"], "My Sandbox Webhook");
    assert_eq!(updated["createdAt"], created["createdAt"]);
    assert!(updated.get("signatureSecret").is_none());
    // The new secret is stored sealed (issue 29), never in clear.
    assert_eq!(
        pg.psql(&format!(
            "SELECT signature_secret IS NULL AND position('a-rotated-secret'::bytea IN sealed_secret) = 0
               FROM webhook_emitter.webhooks WHERE id = '{id}'"
        )),
        "t"
    );

    assert_eq!(api_call(port, "DELETE", &path, Some(&key_a), None).0, 200);
    assert_eq!(api_call(port, "GET", &path, Some(&key_a), None).0, 404);
    assert_eq!(api_call(port, "DELETE", &path, Some(&key_a), None).0, 404);
    assert_eq!(
        api_call(
            port,
            "GET",
            "/events/webhooks/not-a-uuid",
            Some(&key_a),
            None
        )
        .0,
        404
    );

    // Neither the team's secrets nor the database password reach the log.
    let log = emitter.log_text();
    for secret in [
        SECRET,
        "a-rotated-secret-0f9e8d7c",
        EMITTER_PASSWORD,
        key_a.as_str(),
    ] {
        assert!(
            !log.contains(secret),
            "{secret} leaked into the log:\n{log}"
        );
    }
}

#[test]
fn bad_keys_get_one_answer_and_bad_input_changes_nothing() {
    let pg = PostgresServer::start();
    let (_team, key) = pg.add_team("gamma");
    let (blocked_team, blocked_key) = pg.add_team("blocked");
    let (banned_team, banned_key) = pg.add_team("banned");
    let port = free_port();
    let _emitter = start_emitter(&pg, port, &[], "refusals.log");
    wait_for_api(port, &key);
    // A team an operator blocks or bans loses access at its next request.
    assert_eq!(
        api_call(port, "GET", "/events/webhooks", Some(&blocked_key), None).0,
        200
    );
    pg.psql(&format!(
        "UPDATE public.teams SET is_blocked = true WHERE id = '{blocked_team}'"
    ));
    pg.psql(&format!(
        "UPDATE public.teams SET is_banned = true WHERE id = '{banned_team}'"
    ));

    let unknown = format!("e2b_{}", "ab".repeat(20));
    let mut answers = Vec::new();
    for presented in [
        None,
        Some("not-a-key"),
        Some("e2b_zz"),
        Some(unknown.as_str()),
        Some(blocked_key.as_str()),
        Some(banned_key.as_str()),
    ] {
        answers.push(api_call(port, "GET", "/events/webhooks", presented, None));
    }
    assert_eq!(answers[0].0, 401, "{:?}", answers[0]);
    assert!(
        answers.iter().all(|a| *a == answers[0]),
        "every refusal must look the same: {answers:#?}"
    );

    // Each bad field is refused with 400 naming it, and nothing is stored.
    let cases: Vec<(Value, &str)> = vec![
        (registration("ftp://hooks.example.com/"), "url"),
        (registration("not a url"), "url"),
        (registration("http://127.0.0.1:8080/hook"), "url"),
        (registration("http://10.0.0.1/"), "url"),
        (registration("http://localhost:8080/"), "url"),
        (registration("http://[::1]/"), "url"),
        (
            registration("http://169.254.169.254/latest/meta-data"),
            "url",
        ),
        (
            json!({"name": "n", "url": "https://hooks.example.com/", "enabled": true,
                   "events": ["sandbox.lifecycle.exploded"], "signatureSecret": SECRET}),
            "events",
        ),
        (
            json!({"name": "n", "url": "https://hooks.example.com/", "enabled": true,
                   "events": ["sandbox.lifecycle.killed"], "signatureSecret": "short"}),
            "signatureSecret",
        ),
        (
            json!({"name": "n", "url": "https://hooks.example.com/", "enabled": true,
                   "events": ["sandbox.lifecycle.killed"]}),
            "signatureSecret",
        ),
        (
            json!({"url": "https://hooks.example.com/", "enabled": true,
                   "events": ["sandbox.lifecycle.killed"], "signatureSecret": SECRET}),
            "name",
        ),
    ];
    for (body, field) in cases {
        let (status, answer) = api_call(port, "POST", "/events/webhooks", Some(&key), Some(&body));
        assert_eq!(status, 400, "{body} → {answer}");
        let message = answer["message"].as_str().unwrap_or_default();
        assert!(
            message.starts_with(&format!("{field}:")),
            "{body} → {message}"
        );
        assert_eq!(answer["code"], 400);
    }
    assert_eq!(
        pg.psql("SELECT count(*) FROM webhook_emitter.webhooks"),
        "0"
    );

    // An update with a bad field changes nothing either.
    let (_, created) = api_call(
        port,
        "POST",
        "/events/webhooks",
        Some(&key),
        Some(&registration("https://hooks.example.com/ok")),
    );
    let path = format!("/events/webhooks/{}", created["id"].as_str().unwrap());
    let bad = json!({"enabled": false, "url": "http://192.168.1.10/"});
    let (status, answer) = api_call(port, "PATCH", &path, Some(&key), Some(&bad));
    assert_eq!(status, 400, "{answer}");
    assert_eq!(
        api_call(port, "GET", &path, Some(&key), None),
        (200, created)
    );
}

#[test]
fn failed_keys_are_rate_limited_and_private_ranges_can_be_allowed() {
    let pg = PostgresServer::start();
    let (_team, key) = pg.add_team("delta");
    let port = free_port();
    let _emitter = start_emitter(
        &pg,
        port,
        &[("API_ALLOW_PRIVATE_CIDRS", "10.20.0.0/16")],
        "limits.log",
    );
    wait_for_api(port, &key);
    let allowed = registration("http://10.20.1.2:8080/hook");
    assert_eq!(
        api_call(port, "POST", "/events/webhooks", Some(&key), Some(&allowed)).0,
        201
    );
    let outside = registration("http://10.21.1.2:8080/hook");
    assert_eq!(
        api_call(port, "POST", "/events/webhooks", Some(&key), Some(&outside)).0,
        400
    );

    let wrong = format!("e2b_{}", "cd".repeat(20));
    let statuses: Vec<u16> = (0..30)
        .map(|_| api_call(port, "GET", "/events/webhooks", Some(&wrong), None).0)
        .collect();
    assert!(statuses[..20].iter().all(|s| *s == 401), "{statuses:?}");
    assert!(statuses[20..].iter().all(|s| *s == 429), "{statuses:?}");
    // While an address cools down it is not asked about any key (answering a valid one would
    // tell a guesser it found one).
    assert_eq!(
        api_call(port, "GET", "/events/webhooks", Some(&key), None).0,
        429
    );
    // Naming another client does not help where no proxy is trusted.
    assert_eq!(list_as(port, &key, "198.51.100.1"), 429);
}

/// `GET /events/webhooks` with `key`, the request saying it was forwarded for `client`.
fn list_as(port: u16, key: &str, client: &str) -> u16 {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        reqwest::Client::new()
            .get(format!("http://127.0.0.1:{port}/events/webhooks"))
            .header("X-API-Key", key)
            .header("X-Forwarded-For", client)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    })
}

#[test]
fn behind_a_trusted_proxy_one_clients_bad_keys_throttle_that_client_only() {
    let pg = PostgresServer::start();
    let (_team, key) = pg.add_team("proxied");
    let port = free_port();
    // The test stands in for E2B's Traefik: it connects from loopback and says for whom.
    let _emitter = start_emitter(
        &pg,
        port,
        &[("API_TRUSTED_PROXIES", "127.0.0.0/8")],
        "proxied.log",
    );
    wait_for_api(port, &key);
    let wrong = format!("e2b_{}", "ef".repeat(20));
    let statuses: Vec<u16> = (0..25)
        .map(|_| list_as(port, &wrong, "203.0.113.5"))
        .collect();
    assert!(statuses[..20].iter().all(|s| *s == 401), "{statuses:?}");
    assert!(statuses[20..].iter().all(|s| *s == 429), "{statuses:?}");
    // That client cools down; every other team's clients behind the same proxy go on.
    assert_eq!(list_as(port, &key, "203.0.113.5"), 429);
    assert_eq!(list_as(port, &key, "203.0.113.6"), 200);
    // What a client wrote itself, left of what the proxy appended, is not believed.
    assert_eq!(list_as(port, &key, "203.0.113.6, 203.0.113.5"), 429);
}

#[test]
fn postgres_down_answers_503_and_the_api_can_have_its_own_port() {
    let mut pg = PostgresServer::start();
    let (_team, key) = pg.add_team("epsilon");
    let (ops_port, api_port) = (free_port(), free_port());
    let api_addr = format!("127.0.0.1:{api_port}");
    let _emitter = start_emitter(&pg, ops_port, &[("API_LISTEN_ADDR", &api_addr)], "down.log");
    wait_for_api(api_port, &key);
    // Apart from the API, LISTEN_ADDR keeps only the operator's endpoints.
    assert_eq!(
        api_call(ops_port, "GET", "/events/webhooks", Some(&key), None).0,
        404
    );
    let (status, answer) = api_call(api_port, "GET", "/metrics", None, None);
    assert_eq!((status, &answer["code"]), (404, &json!(404)), "{answer}");
    // E2B's document's health check, without a key: what the job's Nomad check asks.
    assert_eq!(api_call(api_port, "GET", "/health", None, None).0, 200);

    pg.kill();
    let (status, answer) = api_call(api_port, "GET", "/events/webhooks", Some(&key), None);
    assert_eq!(status, 503, "{answer}");
    // The process is healthy: the ingress keeps routing, each call says what is down.
    assert_eq!(api_call(api_port, "GET", "/health", None, None).0, 200);
    assert!(!answer.to_string().contains(EMITTER_PASSWORD));
    // The service itself goes on.
    assert_eq!(common::http_get(ops_port, "/healthz").0, 200);

    pg.restart();
    wait_for_api(api_port, &key);
}

#[test]
fn without_a_database_the_api_is_off_and_bad_settings_exit_2() {
    let port = free_port();
    let dir = tempfile::tempdir().unwrap();
    let listen = format!("127.0.0.1:{port}");
    let data = dir.path().join("data");
    let _emitter = RunningEmitter::start_with_env(
        &[],
        &[
            ("LISTEN_ADDR", &listen),
            ("DATA_DIR", data.to_str().unwrap()),
            ("WEBHOOK_URL", "http://127.0.0.1:9/static"),
            ("WEBHOOK_SECRET", "static-secret-0123456789"),
        ],
        dir.path().join("off.log"),
    );
    common::wait_for_port(port, Duration::from_secs(10));
    assert_eq!(
        api_call(port, "GET", "/events/webhooks", Some("e2b_00"), None).0,
        404
    );

    for (var, value, named) in [
        (
            "API_ALLOW_PRIVATE_CIDRS",
            "10.0.0.0/8",
            "API_ALLOW_PRIVATE_CIDRS",
        ),
        (
            "POSTGRES_CONNECTION_STRING",
            "::::",
            "POSTGRES_CONNECTION_STRING",
        ),
    ] {
        let (code, _, stderr) = common::output(
            common::emitter()
                .arg("run")
                .env("WEBHOOK_URL", "http://127.0.0.1:9/")
                .env("WEBHOOK_SECRET", "static-secret-0123456789")
                .env(var, value),
        );
        assert_eq!(code, 2, "{stderr}");
        assert!(stderr.contains(named), "{stderr}");
        assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    }
}

/// Status, `Content-Type` and body of a raw request to the loopback `port`.
fn raw_call(
    port: u16,
    method: &str,
    path: &str,
    key: Option<&str>,
    body: Vec<u8>,
) -> (u16, String, Value) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut request = reqwest::Client::new()
            .request(method, format!("http://127.0.0.1:{port}{path}"))
            .header("Content-Type", "application/json");
        if let Some(key) = key {
            request = request.header("X-API-Key", key);
        }
        let response = request.body(body).send().await.unwrap();
        let status = response.status().as_u16();
        let content_type = response
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default();
        let text = response.text().await.unwrap();
        (
            status,
            content_type,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    })
}

#[test]
fn every_refusal_under_events_is_e2bs_error_body_in_json() {
    let pg = PostgresServer::start();
    let (_team, key) = pg.add_team("zeta");
    let port = free_port();
    let _emitter = start_emitter(&pg, port, &[], "errors.log");
    wait_for_api(port, &key);
    let key = Some(key.as_str());
    for (method, path, with_key, body, status) in [
        ("GET", "/events/nothing-here", key, Vec::new(), 404),
        ("GET", "/events", None, Vec::new(), 404),
        ("POST", "/events/sandboxes/sbx/extra", key, Vec::new(), 404),
        ("PUT", "/events/webhooks", key, Vec::new(), 405),
        ("DELETE", "/events/sandboxes", None, Vec::new(), 405),
        ("POST", "/events/webhooks", key, vec![b'x'; 64 * 1024], 413),
        ("POST", "/events/webhooks", key, b"[1]".to_vec(), 400),
        ("GET", "/events/webhooks", None, Vec::new(), 401),
    ] {
        let (got, content_type, answer) = raw_call(port, method, path, with_key, body);
        assert_eq!(got, status, "{method} {path}: {answer}");
        assert!(
            content_type.starts_with("application/json"),
            "{method} {path}: {content_type}"
        );
        assert_eq!(answer["code"], status, "{method} {path}: {answer}");
        assert!(
            answer["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{method} {path}: {answer}"
        );
    }
    // The health check of E2B's document answers without a key and without a body.
    let (status, _, answer) = raw_call(port, "GET", "/health", None, Vec::new());
    assert_eq!((status, answer), (200, Value::String(String::new())));
}
