//! Issue 28: the team portal at `/portal/` on the events API's listener, in Debian's Chromium
//! (headless, driven by playwright-core from tests/browser) against the real binary, a real
//! PostgreSQL and Redis, and a receiver on a real socket that checks every signature itself.
//! Team A signs in (a wrong key first), adds a webhook with the keyboard only, sees a delivery
//! arrive and expands it, rotates the secret, filters the failures, re-sends the dead letter,
//! sees the chart, sends a test event, reads a sandbox's timeline and signs out; team B then sees
//! none of it. Plain HTTP from here: no change without the CSRF token or from another origin, no
//! reach into another team's webhooks, nothing of the session or key in the database or the log.
//! The screenshots go to docs/ with PORTAL_SCREENSHOTS_TO_DOCS=1.

mod common;
mod support;

use base64::Engine;
use common::events_api::{api_call, wait_for_api};
use common::{RunningEmitter, eventually, free_port};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use support::postgres::PostgresServer;
use support::redis::RedisServer;

const EVENT_1: &str = "5e1f0000-0000-4000-8000-000000000001";
const EVENT_2: &str = "5e1f0000-0000-4000-8000-000000000002";
const SANDBOX_1: &str = "sbx-portal-1";
const SANDBOX_2: &str = "sbx-portal-2";
/// Would run as script if the portal ever put a name or an answer into the page as markup.
const HOSTILE: &str =
    "<script>window.__pwned=1</script>\"><img src=x onerror=\"window.__pwned=2\">";
const SECRET_B: &str = "team-b-webhook-secret-0123456789abcdef";

/// What the receiver got: (event id, sandbox id, body, `e2b-signature`).
type Seen = Arc<Mutex<Vec<(String, String, Vec<u8>, String)>>>;

/// A receiver on a real socket: answers 200 `accepted`, or — while `refusing` — 503 with a
/// hostile body.
fn receiver(refusing: Arc<AtomicBool>, seen: Seen) -> (u16, tokio::runtime::Runtime) {
    use axum::body::Bytes;
    use axum::http::{HeaderMap, StatusCode};
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let port = listener.local_addr().unwrap().port();
    let handler = move |headers: HeaderMap, body: Bytes| {
        let (refusing, seen) = (refusing.clone(), seen.clone());
        async move {
            let event: Value = serde_json::from_slice(&body).unwrap_or_default();
            let signature = headers
                .get("e2b-signature")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default();
            seen.lock().unwrap().push((
                event["id"].as_str().unwrap_or_default().to_owned(),
                event["sandbox_id"].as_str().unwrap_or_default().to_owned(),
                body.to_vec(),
                signature.to_owned(),
            ));
            if refusing.load(Ordering::SeqCst) {
                (StatusCode::SERVICE_UNAVAILABLE, HOSTILE.to_owned())
            } else {
                (StatusCode::OK, "accepted".to_owned())
            }
        }
    };
    let app = axum::Router::new().fallback(axum::routing::post(handler));
    runtime.spawn(async move { axum::serve(listener, app).await });
    (port, runtime)
}

/// E2B's documented signature: base64url without padding of sha256(secret ‖ body).
fn e2b_signature(secret: &str, body: &[u8]) -> String {
    let mut digest = Sha256::new();
    digest.update(secret.as_bytes());
    digest.update(body);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(digest.finalize())
}

fn xadd(redis: &RedisServer, id: &str, sandbox: &str, team: &str) {
    let payload = json!({
        "id": id, "version": "v2", "type": "sandbox.lifecycle.created",
        "timestamp": jiff::Timestamp::now().to_string(), "event_category": "", "event_label": "",
        "sandbox_id": sandbox, "sandbox_execution_id": "exec-1", "sandbox_template_id": "base",
        "sandbox_build_id": "b-1", "sandbox_team_id": team,
    });
    let mut conn = redis.connection();
    let _: String = redis::cmd("XADD")
        .arg("sandbox.events.stream")
        .arg("*")
        .arg("payload")
        .arg(payload.to_string())
        .query(&mut conn)
        .unwrap();
}

/// A portal session from plain HTTP: (cookie header value, CSRF token).
fn sign_in(port: u16, key: &str) -> (String, String) {
    let response = portal_call(
        port,
        "POST",
        "/portal/api/session",
        &[("X-API-Key", key)],
        None,
    );
    assert_eq!(response.0, 201, "{:?}", response.2);
    let cookie = response.1.split(';').next().unwrap().to_owned();
    (cookie, response.2["csrfToken"].as_str().unwrap().to_owned())
}

/// (status, Set-Cookie, JSON body) of a request with these headers.
fn portal_call(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&Value>,
) -> (u16, String, Value) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut request =
            reqwest::Client::new().request(method, format!("http://127.0.0.1:{port}{path}"));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        if let Some(body) = body {
            request = request
                .header("Content-Type", "application/json")
                .body(body.to_string());
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let cookie = response
            .headers()
            .get("set-cookie")
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default();
        let text = response.text().await.unwrap_or_default();
        (
            status,
            cookie,
            serde_json::from_str(&text).unwrap_or(Value::Null),
        )
    })
}

#[test]
fn a_team_manages_its_webhooks_in_the_portal_in_chromium_and_sees_only_its_own() {
    let browser_dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/browser");
    assert!(
        std::path::Path::new(browser_dir)
            .join("node_modules/playwright-core")
            .exists(),
        "playwright-core is missing: scripts/test installs it (npm ci --prefix tests/browser)"
    );
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    let pg = PostgresServer::start();
    let (team_a, key_a) = pg.add_team("portal-a");
    let (team_b, key_b) = pg.add_team("portal-b");
    let redis = RedisServer::start();
    let refusing = Arc::new(AtomicBool::new(false));
    let seen: Seen = Arc::default();
    let (receiver_port, _receiver) = receiver(refusing.clone(), seen.clone());
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("retry.toml");
    std::fs::write(
        &config,
        "[retry]\nschedule = [\"100ms\"]\nmax_age = \"1s\"\njitter = 0.0\n",
    )
    .unwrap();
    let (ops, port) = (free_port(), free_port());
    // An instance on these ports, with its own data directory; both share Postgres and Redis.
    let instance = |name: &str, ops: u16, port: u16| {
        let running = RunningEmitter::start_with_env(
            &[],
            &[
                ("POSTGRES_CONNECTION_STRING", &pg.url()),
                ("LISTEN_ADDR", &format!("127.0.0.1:{ops}")),
                ("API_LISTEN_ADDR", &format!("127.0.0.1:{port}")),
                ("DATA_DIR", dir.path().join(name).to_str().unwrap()),
                ("REDIS_URL", &redis.host_port()),
                ("CONFIG_FILE", config.to_str().unwrap()),
                ("API_ALLOW_PRIVATE_CIDRS", "127.0.0.1/32"),
            ],
            dir.path().join(format!("{name}.log")),
        );
        wait_for_api(port, &key_a);
        running
    };
    let running = instance("first", ops, port);
    let receiver_url = format!("http://127.0.0.1:{receiver_port}/hook?token=receiver-query-secret");
    let register_b = || {
        let (status, created) = api_call(
            port,
            "POST",
            "/events/webhooks",
            Some(&key_b),
            Some(
                &json!({"name": "team B's hook", "url": receiver_url, "enabled": true,
                "events": ["sandbox.lifecycle.created"], "signatureSecret": SECRET_B}),
            ),
        );
        assert_eq!(status, 201, "{created}");
        created["id"].as_str().unwrap().to_owned()
    };
    let webhook_b = register_b();

    let shots = tempfile::tempdir().unwrap();
    let mut node = Command::new("node")
        .arg("portal.mjs")
        .current_dir(browser_dir)
        .envs([
            ("PORTAL_URL", format!("http://127.0.0.1:{port}/portal/")),
            ("PORTAL_SHOTS", shots.path().to_str().unwrap().to_owned()),
            ("CHROMIUM", chromium),
            ("KEY_A", key_a.clone()),
            ("KEY_B", key_b.clone()),
            ("WEBHOOK_B", webhook_b.clone()),
            ("RECEIVER_URL", receiver_url.clone()),
            ("HOSTILE_NAME", HOSTILE.to_owned()),
            ("EVENT_1", EVENT_1.to_owned()),
            ("EVENT_2", EVENT_2.to_owned()),
            ("SANDBOX_1", SANDBOX_1.to_owned()),
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("node runs");
    let mut to_browser = node.stdin.take().unwrap();
    let mut from_browser = BufReader::new(node.stdout.take().unwrap()).lines();
    let mut expect = |step: &str| -> Vec<String> {
        let line = from_browser.next().map(|l| l.unwrap()).unwrap_or_default();
        let words: Vec<String> = line.split(' ').map(str::to_owned).collect();
        assert_eq!(
            words[0],
            step,
            "the browser step before {step:?} failed (see its error above)\n{}",
            running.log_text()
        );
        words[1..].to_vec()
    };
    let signed_by = |event: &str, secret: &str| {
        seen.lock().unwrap().iter().any(|(id, _, body, signature)| {
            id == event && *signature == e2b_signature(secret, body)
        })
    };

    expect("signed-in");
    let added = expect("added");
    let (webhook_a, secret) = (added[0].clone(), added[1].clone());
    let routed = format!("delivering to a registered webhook webhook={webhook_a}");
    assert!(eventually(Duration::from_secs(15), || running
        .log_text()
        .contains(&routed)));
    xadd(&redis, EVENT_1, SANDBOX_1, &team_a);
    assert!(
        eventually(Duration::from_secs(15), || signed_by(EVENT_1, &secret)),
        "the receiver verified the first event with the secret the browser generated"
    );
    writeln!(to_browser, "go").unwrap();
    expect("delivery-seen");

    let rotated = expect("rotated")[0].clone();
    refusing.store(true, Ordering::SeqCst);
    // The new secret is in use once the webhook's dispatcher restarted with it.
    assert!(eventually(Duration::from_secs(15), || running
        .log_text()
        .matches(&routed)
        .count()
        >= 2));
    xadd(&redis, EVENT_2, SANDBOX_2, &team_a);
    let dead_letters = |key: &str, webhook: &str| {
        api_call(
            port,
            "GET",
            &format!("/portal/api/webhooks/{webhook}/dead-letters"),
            Some(key),
            None,
        )
    };
    assert!(
        eventually(Duration::from_secs(20), || {
            dead_letters(&key_a, &webhook_a).1["data"]
                .as_array()
                .is_some_and(|d| d.len() == 1)
        }),
        "{}",
        running.log_text()
    );
    assert!(
        signed_by(EVENT_2, &rotated),
        "signed with the rotated secret"
    );
    // Team B cannot see or re-send team A's dead letter, whatever it names.
    assert_eq!(dead_letters(&key_b, &webhook_a).0, 404);
    let dead_id = dead_letters(&key_a, &webhook_a).1["data"][0]["id"].clone();
    let (b_cookie, b_csrf) = sign_in(port, &key_b);
    let b_headers = [
        ("Cookie", b_cookie.as_str()),
        ("X-CSRF-Token", b_csrf.as_str()),
    ];
    for path in [
        format!("/portal/api/webhooks/{webhook_a}/dead-letters/replay"),
        format!("/portal/api/webhooks/{webhook_b}/dead-letters/replay"),
    ] {
        let answer = portal_call(
            port,
            "POST",
            &path,
            &b_headers,
            Some(&json!({"ids": [dead_id]})),
        );
        assert!(
            answer.0 == 404 || answer.2["replayed"] == json!([]),
            "team B re-sent team A's dead letter: {answer:?}"
        );
    }
    writeln!(to_browser, "go").unwrap();
    expect("dead-letter-seen");
    refusing.store(false, Ordering::SeqCst);
    writeln!(to_browser, "go").unwrap();
    expect("re-sent");
    assert!(eventually(Duration::from_secs(10), || signed_by(
        EVENT_2, &rotated
    ) && seen
        .lock()
        .unwrap()
        .len()
        >= 3));
    expect("team-b-checked");
    assert!(node.wait().unwrap().success());
    assert_eq!(
        api_call(
            port,
            "GET",
            &format!("/events/webhooks/{webhook_b}"),
            Some(&key_b),
            None
        )
        .0,
        404,
        "deleted from the page"
    );
    let webhook_b = register_b();

    // Plain HTTP: a session changes nothing without its CSRF token or from another site, and
    // reaches nothing of another team.
    let (a_cookie, a_csrf) = sign_in(port, &key_a);
    let rename = json!({"name": "renamed"});
    let path_a = format!("/portal/events/webhooks/{webhook_a}");
    let path_b = format!("/portal/events/webhooks/{webhook_b}");
    let cookie_only = [("Cookie", a_cookie.as_str())];
    let with_csrf = [
        ("Cookie", a_cookie.as_str()),
        ("X-CSRF-Token", a_csrf.as_str()),
    ];
    let forged = [
        ("Cookie", a_cookie.as_str()),
        ("X-CSRF-Token", b_csrf.as_str()),
    ];
    let cross_site = [
        ("Cookie", a_cookie.as_str()),
        ("X-CSRF-Token", a_csrf.as_str()),
        ("Origin", "http://evil.example"),
    ];
    for headers in [&cookie_only[..], &forged[..], &cross_site[..]] {
        let answer = portal_call(port, "PATCH", &path_a, headers, Some(&rename));
        assert_eq!(answer.0, 403, "{headers:?}: {answer:?}");
        assert!(
            answer.2["message"].is_string(),
            "E2B's error body: {answer:?}"
        );
        assert_eq!(portal_call(port, "DELETE", &path_a, headers, None).0, 403);
    }
    assert_eq!(portal_call(port, "GET", &path_a, &cookie_only, None).0, 200);
    assert_eq!(portal_call(port, "GET", &path_b, &with_csrf, None).0, 404);
    assert_eq!(
        portal_call(port, "PATCH", &path_b, &with_csrf, Some(&rename)).0,
        404
    );
    assert_eq!(
        portal_call(port, "DELETE", &path_b, &with_csrf, None).0,
        404
    );
    assert_eq!(
        portal_call(
            port,
            "POST",
            &format!("/portal/api/webhooks/{webhook_b}/test"),
            &with_csrf,
            None
        )
        .0,
        404
    );
    let listed = portal_call(port, "GET", "/events/webhooks", &cookie_only, None);
    assert_eq!(listed.2.as_array().map(Vec::len), Some(1), "{listed:?}");
    assert_eq!(
        portal_call(port, "PATCH", &path_a, &with_csrf, Some(&rename)).0,
        200
    );
    assert_eq!(
        api_call(
            port,
            "GET",
            path_b.trim_start_matches("/portal"),
            Some(&key_b),
            None
        )
        .1["name"],
        "team B's hook",
        "team B's webhook is unchanged"
    );
    // Signing in: a wrong key is refused, and another site cannot sign a browser in.
    let wrong = portal_call(
        port,
        "POST",
        "/portal/api/session",
        &[("X-API-Key", "e2b_00ff")],
        None,
    );
    assert_eq!(wrong.0, 401);
    let foreign = portal_call(
        port,
        "POST",
        "/portal/api/session",
        &[
            ("X-API-Key", key_a.as_str()),
            ("Origin", "http://evil.example"),
        ],
        None,
    );
    assert_eq!(foreign.0, 403);
    // Behind a proxy the operator trusts... none here: a client's X-Forwarded-Proto is ignored,
    // and the cookie is HttpOnly, SameSite=Strict, with an expiry.
    let plain = portal_call(
        port,
        "POST",
        "/portal/api/session",
        &[
            ("X-API-Key", key_a.as_str()),
            ("X-Forwarded-Proto", "https"),
        ],
        None,
    );
    assert!(
        plain
            .1
            .contains("HttpOnly; SameSite=Strict; Path=/portal; Max-Age="),
        "{}",
        plain.1
    );
    assert!(!plain.1.contains("Secure"));
    // The database holds hashes only; signing out ends the session everywhere.
    let sessions =
        pg.psql("SELECT encode(id_hash, 'hex'), api_key_hash FROM webhook_emitter.portal_sessions");
    let session_id = a_cookie.trim_start_matches("e2b_portal=");
    assert!(sessions.contains(&hex::encode(Sha256::digest(session_id.as_bytes()))));
    assert!(!sessions.contains(session_id) && !sessions.contains(&key_a[4..]));
    // A second instance (as behind Traefik) knows the session, and signing out there ends it on
    // the first.
    let second_port = free_port();
    let second = instance("second", free_port(), second_port);
    assert_eq!(
        portal_call(second_port, "GET", &path_a, &cookie_only, None).0,
        200
    );
    assert_eq!(
        portal_call(
            second_port,
            "DELETE",
            "/portal/api/session",
            &with_csrf,
            None
        )
        .0,
        204
    );
    assert_eq!(portal_call(port, "GET", &path_a, &cookie_only, None).0, 401);
    assert_eq!(
        portal_call(second_port, "GET", &path_a, &cookie_only, None).0,
        401
    );
    // Deleting the key ends the sessions opened with it.
    let (still, _) = sign_in(port, &key_b);
    pg.psql(&format!(
        "DELETE FROM public.team_api_keys WHERE team_id = '{team_b}'"
    ));
    assert_eq!(
        portal_call(
            port,
            "GET",
            "/events/webhooks",
            &[("Cookie", still.as_str())],
            None
        )
        .0,
        401
    );

    // Guessing keys at the sign-in is throttled as at the API: after 20 refusals a minute, even
    // the right key is answered 429 (last, on the second instance: it locks out 127.0.0.1).
    let guess = |key: &str| {
        portal_call(
            second_port,
            "POST",
            "/portal/api/session",
            &[("X-API-Key", key)],
            None,
        )
        .0
    };
    let refusals: Vec<u16> = (0..20).map(|_| guess("e2b_00ff")).collect();
    assert!(refusals.iter().all(|s| *s == 401), "{refusals:?}");
    assert_eq!(guess(&key_a), 429);
    let log = running.log_text() + &second.log_text();
    for secret in [
        &key_a,
        &key_b,
        &secret,
        &rotated,
        &session_id.to_owned(),
        &a_csrf,
    ] {
        assert!(!log.contains(secret.as_str()), "the log holds a secret");
    }
    assert!(log.contains("portal: re-sent dead letters"), "{log}");
    let docs = std::env::var_os("PORTAL_SCREENSHOTS_TO_DOCS").is_some();
    for name in [
        "portal-list",
        "portal-add-webhook",
        "portal-overview",
        "portal-deliveries",
    ] {
        let png = std::fs::read(shots.path().join(format!("{name}.png"))).unwrap();
        assert!(
            png.starts_with(b"\x89PNG") && png.len() > 10_000,
            "{name}: a real screenshot"
        );
        if docs {
            let to = format!("{}/docs/{name}.png", env!("CARGO_MANIFEST_DIR"));
            std::fs::write(to, &png).unwrap();
        }
    }
}
