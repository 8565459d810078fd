//! Issue 16 item 5: the console in a real browser. Debian's Chromium (headless, driven over the
//! DevTools protocol by playwright-core from tests/browser, no browser download) logs in, sees a
//! delivery arrive live, and replays a dead letter from the page and watches it delivered. The
//! screenshot it takes is kept as docs/console.png.

mod common;
mod support;

use common::{RunningEmitter, TestReceiver, eventually, free_port, wait_for_port};
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

const SECRET: &str = "console-secret-5e4d3c2b1a09f8e7";
const TOKEN: &str = "console-token-1a2b3c4d5e6f7a8b9c0d";
const TEAM: &str = "0b8b8a4e-6f4e-4c4a-9a57-3a2f5d3b1c2d";
const DEAD: &str = "ideadletter1";
const LIVE: &str = "ilivedelivery1";
/// Would run as script if the console ever put event text into the page as HTML.
const HOSTILE: &str = "<img src=x onerror=\"window.__pwned=1\"><script>window.__pwned=2</script>";

fn event(id: &str, label_type: &str, sandbox: &str) -> String {
    serde_json::json!({
        "id": id, "version": "v2", "type": format!("sandbox.lifecycle.{label_type}"),
        "timestamp": jiff::Timestamp::now().to_string(), "event_category": "", "event_label": "",
        "sandbox_id": sandbox, "sandbox_execution_id": "exec-1", "sandbox_template_id": "base",
        "sandbox_build_id": "b-1", "sandbox_team_id": TEAM,
    })
    .to_string()
}

#[test]
fn an_operator_logs_in_sees_deliveries_live_and_replays_a_dead_letter_in_chromium() {
    let browser_dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/browser");
    assert!(
        std::path::Path::new(browser_dir)
            .join("node_modules/playwright-core")
            .exists(),
        "playwright-core is missing: scripts/test installs it (npm ci --prefix tests/browser)"
    );
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(
        std::path::Path::new(&chromium).exists(),
        "Debian's chromium is missing: scripts/test installs it (apt-get install chromium)"
    );
    let redis = support::redis::RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let events = dir.path().join("events.ndjson");
    std::fs::write(
        &events,
        event("9e0a1b2c-0000-4000-8000-000000000001", "created", DEAD) + "\n",
    )
    .unwrap();
    let config = dir.path().join("c.toml");
    std::fs::write(
        &config,
        "[retry]\nschedule = [\"100ms\"]\nmax_age = \"1s\"\n",
    )
    .unwrap();
    let accept_dead = Arc::new(AtomicBool::new(false));
    let flag = accept_dead.clone();
    let receiver = TestReceiver::start(
        0,
        SECRET,
        Arc::new(move |_: &str, sandbox: &str, _: u32| {
            if sandbox == DEAD && !flag.load(Ordering::SeqCst) {
                503
            } else {
                200
            }
        }),
    );
    let port = free_port();
    let running = RunningEmitter::start(
        &[
            "--webhook-url",
            &format!("http://127.0.0.1:{}/hook", receiver.port),
            "--webhook-secret",
            SECRET,
            "--config",
            config.to_str().unwrap(),
            "--data-dir",
            dir.path().join("d").to_str().unwrap(),
            "--events-file",
            events.to_str().unwrap(),
            "--redis-url",
            &redis.url(),
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--admin-token",
            TOKEN,
        ],
        dir.path().join("log"),
    );
    wait_for_port(port, Duration::from_secs(10));
    let dead_letters = || {
        let out = common::output(common::emitter().args([
            "dead-letters",
            "list",
            "--json",
            "--admin-url",
            &format!("http://127.0.0.1:{port}"),
            "--admin-token",
            TOKEN,
        ]));
        out.1.lines().count()
    };
    assert!(
        eventually(Duration::from_secs(20), || dead_letters() == 1),
        "{}",
        running.log_text()
    );

    // docs/console.png is a copy of one run's screenshot (CONSOLE_SCREENSHOT_TO_DOCS=1 refreshes it).
    let screenshot = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("console.png");
    let mut node = Command::new("node")
        .arg("console.mjs")
        .current_dir(browser_dir)
        .env("CONSOLE_URL", format!("http://127.0.0.1:{port}/"))
        .env("CONSOLE_TOKEN", TOKEN)
        .env("CONSOLE_SCREENSHOT", &screenshot)
        .env("CHROMIUM", &chromium)
        .env("LIVE_SANDBOX", LIVE)
        .env("DEAD_SANDBOX", DEAD)
        .env("HOSTILE_SANDBOX", HOSTILE)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("node runs");
    let mut to_browser = node.stdin.take().unwrap();
    let mut from_browser = BufReader::new(node.stdout.take().unwrap()).lines();
    let mut expect = |word: &str| {
        let line = from_browser.next().map(|l| l.unwrap());
        assert_eq!(
            line.as_deref(),
            Some(word),
            "the browser step before {word:?} failed (see its error above)\n{}",
            running.log_text()
        );
    };

    expect("logged-in");
    // Now, with the page open, the orchestrator writes two events to its stream.
    let mut conn = redis.connection();
    for (n, sandbox) in [(2, LIVE), (3, HOSTILE)] {
        let payload = event(
            &format!("9e0a1b2c-0000-4000-8000-00000000000{n}"),
            "created",
            sandbox,
        );
        let _: String = redis::cmd("XADD")
            .arg("sandbox.events.stream")
            .arg("*")
            .arg("payload")
            .arg(payload)
            .query(&mut conn)
            .unwrap();
    }
    writeln!(to_browser, "go").unwrap();
    expect("live-seen");
    assert!(
        receiver
            .deliveries()
            .iter()
            .any(|d| d.sandbox_id == LIVE && d.signature_ok)
    );

    // The receiver is fixed; the operator replays the dead letter from the console.
    accept_dead.store(true, Ordering::SeqCst);
    writeln!(to_browser, "go").unwrap();
    expect("replayed");
    assert!(node.wait().unwrap().success());
    assert!(
        receiver
            .deliveries()
            .iter()
            .any(|d| d.sandbox_id == DEAD && d.signature_ok)
    );
    assert_eq!(dead_letters(), 0);
    let png = std::fs::read(&screenshot).unwrap();
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 10_000,
        "a real screenshot"
    );
    if std::env::var_os("CONSOLE_SCREENSHOT_TO_DOCS").is_some() {
        std::fs::write(
            concat!(env!("CARGO_MANIFEST_DIR"), "/docs/console.png"),
            &png,
        )
        .unwrap();
    }
    let log = running.log_text();
    assert!(log.contains("admin: replayed dead letters"), "{log}");
    assert!(!log.contains(TOKEN));
}
