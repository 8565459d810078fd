//! Issue 16: the admin API through the real binary — absent without ADMIN_TOKEN, 401 without a
//! hint, dead letters replayed while the service runs and seen delivered on the live feed, pause
//! and resume, test events, filters, capped bodies, every write logged.

mod common;

use common::{
    RunningEmitter, TestReceiver, eventually, free_port, lifecycle_ndjson, wait_for_port,
};
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

const SECRET: &str = "admin-test-secret-8d7c6b5a4f3e2d1c";
const TOKEN: &str = "admin-token-0f1e2d3c4b5a69788796a5b4";

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// (status, body) of a request to the emitter.
fn call(
    port: u16,
    method: &str,
    path: &str,
    auth: Option<&str>,
    body: Option<Value>,
) -> (u16, String) {
    rt().block_on(async {
        let client = reqwest::Client::new();
        let mut request = client.request(
            method.parse().unwrap(),
            format!("http://127.0.0.1:{port}{path}"),
        );
        if let Some(auth) = auth {
            request = request.header("authorization", auth);
        }
        if let Some(body) = body {
            request = request
                .header("content-type", "application/json")
                .body(body.to_string());
        }
        let response = request.send().await.unwrap();
        (response.status().as_u16(), response.text().await.unwrap())
    })
}

fn admin(port: u16, method: &str, path: &str, body: Option<Value>) -> Value {
    let (code, text) = call(port, method, path, Some(&format!("Bearer {TOKEN}")), body);
    assert_eq!(code, 200, "{method} {path}: {text}");
    serde_json::from_str(&text).unwrap()
}

struct Service {
    _dir: tempfile::TempDir,
    running: RunningEmitter,
    port: u16,
    receiver: TestReceiver,
    accept: Arc<AtomicBool>,
}

/// The emitter with the sample's sandbox isb00001 refused until `accept` is set (so its events
/// are dead-lettered within a second), everything else accepted.
fn start(admin_token: Option<&str>) -> Service {
    let dir = tempfile::tempdir().unwrap();
    let (events, _) = lifecycle_ndjson(3, 2);
    let file = dir.path().join("events.ndjson");
    std::fs::write(&file, events).unwrap();
    let config = dir.path().join("c.toml");
    std::fs::write(
        &config,
        "[retry]\nschedule = [\"100ms\"]\nmax_age = \"1s\"\n",
    )
    .unwrap();
    let accept = Arc::new(AtomicBool::new(false));
    let flag = accept.clone();
    let receiver = TestReceiver::start(
        0,
        SECRET,
        Arc::new(move |_: &str, sandbox: &str, _: u32| {
            if sandbox == "isb00001" && !flag.load(Ordering::SeqCst) {
                500
            } else {
                200
            }
        }),
    );
    let port = free_port();
    let url = format!("http://127.0.0.1:{}/hook", receiver.port);
    let listen = format!("127.0.0.1:{port}");
    let data = dir.path().join("d");
    let mut args = vec![
        "--webhook-url",
        &url,
        "--webhook-secret",
        SECRET,
        "--config",
        config.to_str().unwrap(),
        "--data-dir",
        data.to_str().unwrap(),
        "--events-file",
        file.to_str().unwrap(),
        "--listen",
        &listen,
        "--log-format",
        "json",
    ];
    // With the admin API the outbox is the service's alone, as the Nomad job runs it.
    if admin_token.is_some() {
        args.extend(["--outbox-exclusive", "true"]);
    }
    let running =
        RunningEmitter::start_with_admin_token(admin_token, &args, dir.path().join("log"));
    wait_for_port(port, Duration::from_secs(10));
    Service {
        _dir: dir,
        running,
        port,
        receiver,
        accept,
    }
}

#[test]
fn without_admin_token_nothing_admin_exists() {
    let s = start(None);
    for path in [
        "/",
        "/admin/v1/status",
        "/admin/v1/dead-letters",
        "/admin/v1/events/stream",
        "/console.js",
    ] {
        assert_eq!(
            call(s.port, "GET", path, Some(&format!("Bearer {TOKEN}")), None).0,
            404,
            "{path}"
        );
    }
    let replay = call(
        s.port,
        "POST",
        "/admin/v1/dead-letters/replay",
        None,
        Some(json!({"all": true})),
    );
    assert_eq!(replay.0, 404);
    assert_eq!(call(s.port, "GET", "/healthz", None, None).0, 200);
}

#[test]
fn a_wrong_or_missing_token_gets_the_same_401_and_a_weak_token_stops_startup() {
    let s = start(Some(TOKEN));
    let missing = call(s.port, "GET", "/admin/v1/dead-letters", None, None);
    let wrong = call(
        s.port,
        "GET",
        "/admin/v1/dead-letters",
        Some("Bearer admin-token-0f1e2d3c4b5a69788796a5b5"),
        None,
    );
    let basic = call(
        s.port,
        "GET",
        "/admin/v1/dead-letters",
        Some(&format!("Basic {TOKEN}")),
        None,
    );
    assert_eq!(missing.0, 401);
    assert_eq!(wrong, missing, "no hint which");
    assert_eq!(basic, missing);
    let write = call(
        s.port,
        "POST",
        "/admin/v1/endpoints/default/pause",
        Some("Bearer nope-nope-nope-nope"),
        None,
    );
    assert_eq!(write.0, 401);
    assert_eq!(
        call(s.port, "GET", "/admin/v1/events/stream", None, None).0,
        401
    );
    // The console page itself holds no data; its API calls need the token.
    assert_eq!(call(s.port, "GET", "/", None, None).0, 200);
    let status = admin(s.port, "GET", "/admin/v1/status", None);
    assert_eq!(status["lease"]["mode"], "single instance");
    let reconciliation = admin(s.port, "GET", "/admin/v1/reconciliation", None);
    assert_eq!(reconciliation, json!({"enabled": false}), "no NOMAD_ADDR");
    assert!(
        !s.running.log_text().contains(TOKEN),
        "the token is never logged"
    );

    let (code, _, stderr) = common::output(common::emitter().args([
        "run",
        "--webhook-url",
        "http://127.0.0.1:9/",
        "--webhook-secret",
        "x",
        "--admin-token",
        "short",
    ]));
    assert_eq!(code, 2);
    assert!(stderr.contains("ADMIN_TOKEN"), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
}

/// Reads the live feed in the background; returns the records seen so far.
fn follow_feed(port: u16) -> Arc<std::sync::Mutex<Vec<Value>>> {
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let out = seen.clone();
    std::thread::spawn(move || {
        rt().block_on(async move {
            let mut response = reqwest::Client::new()
                .get(format!("http://127.0.0.1:{port}/admin/v1/events/stream"))
                .header("authorization", format!("Bearer {TOKEN}"))
                .send()
                .await
                .unwrap();
            let mut buffer = String::new();
            while let Ok(Some(chunk)) = response.chunk().await {
                buffer.push_str(&String::from_utf8_lossy(&chunk));
                while let Some(end) = buffer.find("\n\n") {
                    let frame: String = buffer.drain(..end + 2).collect();
                    if frame.contains("event: delivery") {
                        let data = frame
                            .lines()
                            .find_map(|l| l.strip_prefix("data: "))
                            .unwrap();
                        out.lock()
                            .unwrap()
                            .push(serde_json::from_str(data).unwrap());
                    }
                }
            }
        });
    });
    seen
}

#[test]
fn dead_letters_replayed_while_running_are_seen_delivered_on_the_live_feed() {
    let s = start(Some(TOKEN));
    // isb00001's create is dead-lettered (and its kill behind it).
    let letters = || {
        admin(s.port, "GET", "/admin/v1/dead-letters", None)["dead_letters"]
            .as_array()
            .unwrap()
            .clone()
    };
    assert!(
        eventually(Duration::from_secs(20), || letters().len() == 2),
        "{:?}",
        letters()
    );
    let feed = follow_feed(s.port);
    std::thread::sleep(Duration::from_millis(300));

    // Deliveries recorded, filterable, cursor-paginated.
    let dead = admin(
        s.port,
        "GET",
        "/admin/v1/deliveries?sandbox=isb00001&outcome=dead",
        None,
    );
    assert_eq!(dead["items"].as_array().unwrap().len(), 2, "{dead}");
    let page1 = admin(
        s.port,
        "GET",
        "/admin/v1/deliveries?outcome=delivered&limit=2",
        None,
    );
    assert_eq!(page1["items"].as_array().unwrap().len(), 2);
    let cursor = page1["next_cursor"].as_u64().expect("more pages");
    let page2 = admin(
        s.port,
        "GET",
        &format!("/admin/v1/deliveries?outcome=delivered&limit=100&cursor={cursor}"),
        None,
    );
    assert_eq!(
        page2["items"].as_array().unwrap().len(),
        2,
        "4 delivered: 2 + 2 ({page2})"
    );
    assert!(page2["next_cursor"].is_null());
    let health = admin(s.port, "GET", "/admin/v1/endpoints", None);
    let default = &health["endpoints"][0];
    assert_eq!(default["id"], "default");
    assert_eq!(default["backlog"], 0);
    assert!(
        default["success_5m"]["attempts"].as_u64().unwrap() >= 6,
        "{health}"
    );
    assert!(default["success_5m"]["rate"].as_f64().unwrap() < 1.0);

    // Pause: the replayed letter waits in the outbox; nothing is dropped.
    admin(s.port, "POST", "/admin/v1/endpoints/default/pause", None);
    s.accept.store(true, Ordering::SeqCst);
    let first = letters()[0]["id"].as_u64().unwrap();
    let replay = admin(
        s.port,
        "POST",
        "/admin/v1/dead-letters/replay",
        Some(json!({"ids": [first]})),
    );
    assert_eq!(replay["replayed"], json!([first]));
    std::thread::sleep(Duration::from_millis(800));
    let isb1 = || {
        s.receiver
            .deliveries()
            .iter()
            .filter(|d| d.sandbox_id == "isb00001")
            .count()
    };
    assert_eq!(isb1(), 0, "paused: nothing sent");
    let paused = admin(s.port, "GET", "/admin/v1/endpoints", None);
    assert_eq!(paused["endpoints"][0]["paused"], true);
    assert_eq!(paused["endpoints"][0]["backlog"], 1);
    admin(s.port, "POST", "/admin/v1/endpoints/default/resume", None);
    assert!(eventually(Duration::from_secs(10), || isb1() == 1));
    // The rest, per endpoint; then the feed shows both delivered, without a restart.
    let rest = admin(
        s.port,
        "POST",
        "/admin/v1/dead-letters/replay",
        Some(json!({"all": true, "endpoint": "default"})),
    );
    assert_eq!(rest["replayed"].as_array().unwrap().len(), 1);
    assert!(eventually(Duration::from_secs(10), || isb1() == 2));
    assert!(letters().is_empty());
    assert!(
        eventually(Duration::from_secs(5), || {
            feed.lock()
                .unwrap()
                .iter()
                .filter(|r| r["sandbox_id"] == "isb00001" && r["outcome"] == "delivered")
                .count()
                == 2
        }),
        "{:?}",
        feed.lock().unwrap()
    );
    let order: Vec<String> = s
        .receiver
        .deliveries()
        .iter()
        .filter(|d| d.sandbox_id == "isb00001")
        .map(|d| d.label.clone())
        .collect();
    assert_eq!(order, ["create", "kill"]);

    // A test event goes to the endpoint now and shows on the feed.
    let sent = admin(
        s.port,
        "POST",
        "/admin/v1/endpoints/default/test-event",
        Some(json!({"event": "pause"})),
    );
    assert_eq!(sent["delivered"], true, "{sent}");
    assert!(
        s.receiver
            .deliveries()
            .iter()
            .any(|d| d.event_id == sent["event_id"].as_str().unwrap() && d.signature_ok)
    );
    assert!(eventually(Duration::from_secs(5), || feed
        .lock()
        .unwrap()
        .iter()
        .any(|r| r["test"] == true)));

    // Bad input: unknown endpoint, neither ids nor all, an oversized body.
    assert_eq!(
        call(
            s.port,
            "POST",
            "/admin/v1/endpoints/nope/pause",
            Some(&format!("Bearer {TOKEN}")),
            None
        )
        .0,
        404
    );
    assert_eq!(
        call(
            s.port,
            "POST",
            "/admin/v1/dead-letters/replay",
            Some(&format!("Bearer {TOKEN}")),
            Some(json!({}))
        )
        .0,
        400
    );
    let huge = json!({"ids": vec![1u64; 20_000]});
    assert_eq!(
        call(
            s.port,
            "POST",
            "/admin/v1/dead-letters/replay",
            Some(&format!("Bearer {TOKEN}")),
            Some(huge)
        )
        .0,
        413
    );

    // Every write is logged with what it changed.
    let log = s.running.log_text();
    for needle in [
        "admin: endpoint paused",
        "admin: endpoint resumed",
        "admin: replayed dead letters",
        "admin: sent a test event",
    ] {
        assert!(log.contains(needle), "no {needle:?} in\n{log}");
    }
    assert!(!log.contains(TOKEN));
}

#[test]
fn the_cli_replays_through_the_running_service_and_falls_back_to_the_data_directory() {
    let mut s = start(Some(TOKEN));
    let url = format!("http://127.0.0.1:{}", s.port);
    let data_dir = s._dir.path().join("d");
    let cli = |args: &[&str]| {
        common::output(
            common::emitter()
                .args(args)
                .env("ADMIN_URL", &url)
                .env("ADMIN_TOKEN", TOKEN)
                .env("DATA_DIR", &data_dir),
        )
    };
    assert!(eventually(Duration::from_secs(20), || {
        cli(&["dead-letters", "list", "--json"]).1.lines().count() == 2
    }));
    let (code, out, err) = cli(&["status"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("(single instance)") && out.contains("endpoint default: delivering"),
        "{out}"
    );
    let (code, out, _) = cli(&[
        "deliveries",
        "--sandbox",
        "isb00001",
        "--outcome",
        "dead",
        "--json",
    ]);
    assert_eq!(code, 0);
    assert_eq!(out.lines().count(), 2, "{out}");
    let (_, table, _) = cli(&["deliveries", "--outcome", "delivered"]);
    assert!(
        table.starts_with("TIME") && table.contains("isb00002"),
        "{table}"
    );

    // Replay while the service runs: delivered at once, no restart.
    s.accept.store(true, Ordering::SeqCst);
    let (code, out, err) = cli(&["dead-letters", "replay", "--all"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("replayed 2 dead letters; the running service is delivering them now"),
        "{out}"
    );
    assert!(eventually(Duration::from_secs(10), || {
        s.receiver
            .deliveries()
            .iter()
            .filter(|d| d.sandbox_id == "isb00001")
            .count()
            == 2
    }));
    assert!(
        s.running
            .log_text()
            .contains("admin: replayed dead letters")
    );

    // A wrong token is an error, not a reason to read the data directory.
    let (code, _, err) = common::output(common::emitter().args([
        "status",
        "--admin-url",
        &url,
        "--admin-token",
        "wrong-wrong-wrong-wrong",
    ]));
    assert_eq!(code, 1);
    assert!(
        err.contains("refused the admin token") && !err.contains("reading the data directory"),
        "{err}"
    );
    let (code, _, err) = common::output(common::emitter().args(["status", "--admin-url", &url]));
    assert_eq!(code, 2);
    assert!(err.contains("ADMIN_TOKEN"), "{err}");

    // The service keeps the outbox file to itself (OUTBOX_EXCLUSIVE: one fsync per commit instead
    // of two): reading the file says to ask the service instead, and nothing moves it aside.
    let (code, _, err) = common::output(
        common::emitter()
            .args(["status", "--data-dir"])
            .arg(&data_dir),
    );
    assert_ne!(code, 0);
    assert!(
        err.contains("held by a running emitter that keeps it to itself")
            && err.contains("--admin-url"),
        "{err}"
    );
    let (code, _, err) = common::output(
        common::emitter()
            .args(["outbox", "move-aside", "--data-dir"])
            .arg(&data_dir),
    );
    assert_ne!(code, 0);
    assert!(err.contains("in use by a running emitter"), "{err}");
    assert!(data_dir.join("outbox.redb").exists());

    // Service stopped: the same commands read the data directory.
    s.running.signal(nix::sys::signal::Signal::SIGTERM);
    s.running.child.wait().unwrap();
    let (code, out, err) = cli(&["status"]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("reading the data directory instead"), "{err}");
    assert!(
        out.contains("outbox:") && out.contains("0 dead letters"),
        "{out}"
    );
    let (code, out, _) = cli(&["dead-letters", "list"]);
    assert_eq!((code, out.trim()), (0, "no dead letters"));
    // The attempts outlive the service: its attempt log in the data directory answers.
    let (code, out, err) = cli(&[
        "deliveries",
        "--sandbox",
        "isb00001",
        "--outcome",
        "dead",
        "--json",
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("reading the data directory instead"), "{err}");
    assert_eq!(out.lines().count(), 2, "{out}");
    let (code, table, _) = cli(&["deliveries", "--sandbox", "isb00001", "--limit", "1"]);
    assert_eq!(code, 0);
    // Newest first: the replayed delivery comes before the dead letters it replaced.
    assert!(
        table.starts_with("TIME") && table.lines().nth(1).unwrap().contains("delivered"),
        "{table}"
    );
    let (code, _, err) = cli(&["deliveries", "--since", "yesterday"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--since"), "{err}");

    // Restarted, the service lists the attempts of its previous run and numbers on after them.
    let listen = format!("127.0.0.1:{}", s.port);
    let hook = format!("http://127.0.0.1:{}/hook", s.receiver.port);
    let restarted = RunningEmitter::start_with_admin_token(
        Some(TOKEN),
        &[
            "--webhook-url",
            &hook,
            "--webhook-secret",
            SECRET,
            "--data-dir",
            data_dir.to_str().unwrap(),
            "--listen",
            &listen,
        ],
        s._dir.path().join("log2"),
    );
    wait_for_port(s.port, Duration::from_secs(10));
    let before = admin(s.port, "GET", "/admin/v1/deliveries?sandbox=isb00001", None);
    let outcomes: Vec<&str> = before["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["outcome"].as_str().unwrap())
        .collect();
    assert_eq!(
        outcomes.iter().filter(|o| **o == "dead").count(),
        2,
        "{before}"
    );
    let newest = before["items"][0]["seq"].as_u64().unwrap();
    admin(
        s.port,
        "POST",
        "/admin/v1/endpoints/default/test-event",
        Some(json!({})),
    );
    let after = admin(s.port, "GET", "/admin/v1/deliveries?limit=1", None);
    assert!(
        after["items"][0]["seq"].as_u64().unwrap() > newest,
        "{after}"
    );
    drop(restarted);
}

#[test]
fn a_pause_outlives_a_restart_until_resumed() {
    let mut s = start(Some(TOKEN));
    admin(s.port, "POST", "/admin/v1/endpoints/default/pause", None);
    s.running.signal(nix::sys::signal::Signal::SIGTERM);
    s.running.child.wait().unwrap();
    let data = s._dir.path().join("d");
    let url = format!("http://127.0.0.1:{}/hook", s.receiver.port);
    let listen = format!("127.0.0.1:{}", s.port);
    let restarted = RunningEmitter::start(
        &[
            "--webhook-url",
            &url,
            "--webhook-secret",
            SECRET,
            "--data-dir",
            data.to_str().unwrap(),
            "--listen",
            &listen,
            "--admin-token",
            TOKEN,
        ],
        s._dir.path().join("log2"),
    );
    wait_for_port(s.port, Duration::from_secs(10));
    let endpoints = admin(s.port, "GET", "/admin/v1/endpoints", None);
    assert_eq!(endpoints["endpoints"][0]["paused"], true, "{endpoints}");
    assert!(
        restarted
            .log_text()
            .contains("endpoint paused by an operator")
    );
    admin(s.port, "POST", "/admin/v1/endpoints/default/resume", None);
    let endpoints = admin(s.port, "GET", "/admin/v1/endpoints", None);
    assert_eq!(endpoints["endpoints"][0]["paused"], false);
}

/// (status, headers) of a request from the local address `from`, redirects not followed.
fn call_from(
    from: &str,
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    form: Option<&str>,
) -> (u16, reqwest::header::HeaderMap) {
    rt().block_on(async {
        let client = reqwest::Client::builder()
            .local_address(from.parse::<std::net::IpAddr>().unwrap())
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        let mut request = client.request(
            method.parse().unwrap(),
            format!("http://127.0.0.1:{port}{path}"),
        );
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        if let Some(form) = form {
            request = request
                .header("content-type", "application/x-www-form-urlencoded")
                .body(form.to_owned());
        }
        let response = request.send().await.unwrap();
        (response.status().as_u16(), response.headers().clone())
    })
}

#[test]
fn the_console_cookie_never_holds_the_token_and_a_guessing_address_is_throttled_alone() {
    let s = start(Some(TOKEN));
    let (code, headers) = call_from(
        "127.0.0.1",
        s.port,
        "POST",
        "/login",
        &[],
        Some(&format!("token={TOKEN}")),
    );
    assert_eq!(code, 303);
    let set_cookie = headers["set-cookie"].to_str().unwrap().to_owned();
    assert!(
        set_cookie.contains("HttpOnly") && set_cookie.contains("SameSite=Strict"),
        "{set_cookie}"
    );
    assert!(
        !set_cookie.contains(TOKEN),
        "the cookie holds the token: {set_cookie}"
    );
    let session = set_cookie.split(';').next().unwrap().to_owned();
    let with_session = [("cookie", session.as_str())];
    assert_eq!(
        call_from(
            "127.0.0.1",
            s.port,
            "GET",
            "/admin/v1/endpoints",
            &with_session,
            None
        )
        .0,
        200
    );
    // The token itself in the cookie is not a session.
    let token_cookie = format!("e2b_admin={TOKEN}");
    assert_eq!(
        call_from(
            "127.0.0.1",
            s.port,
            "GET",
            "/admin/v1/endpoints",
            &[("cookie", &token_cookie)],
            None
        )
        .0,
        401
    );

    // An address guessing bearer tokens gets 401 ten times, then 429 — even for the right
    // token, over the API, `/status` and the login form — while another address goes on.
    let guess = [("authorization", "Bearer admin-token-guess-guess-guess-0000")];
    let right = format!("Bearer {TOKEN}");
    let codes: Vec<u16> = (0..11)
        .map(|_| {
            call_from(
                "127.0.0.2",
                s.port,
                "GET",
                "/admin/v1/dead-letters",
                &guess,
                None,
            )
            .0
        })
        .collect();
    assert_eq!(codes[..10], [401; 10]);
    let (code, headers) = call_from(
        "127.0.0.2",
        s.port,
        "GET",
        "/admin/v1/dead-letters",
        &guess,
        None,
    );
    assert_eq!(code, 429);
    let wait: u64 = headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=60).contains(&wait), "{wait}");
    for path in ["/admin/v1/dead-letters", "/status"] {
        assert_eq!(
            call_from(
                "127.0.0.2",
                s.port,
                "GET",
                path,
                &[("authorization", &right)],
                None
            )
            .0,
            429,
            "{path}"
        );
    }
    let (code, headers) = call_from(
        "127.0.0.2",
        s.port,
        "POST",
        "/login",
        &[],
        Some(&format!("token={TOKEN}")),
    );
    assert_eq!(code, 303);
    assert_eq!(headers["location"], "/?throttled");
    assert!(!headers.contains_key("set-cookie"));
    assert_eq!(
        call_from(
            "127.0.0.1",
            s.port,
            "GET",
            "/status",
            &[("authorization", &right)],
            None
        )
        .0,
        200
    );
    let log = s.running.log_text();
    assert!(
        log.contains("too many refused admin token attempts") && log.contains("127.0.0.2"),
        "{log}"
    );
}
