//! Issue 3: at least once through SIGKILL, order per sandbox, a receiver that is down,
//! dead letters past the maximum age and `replay`, backfill with malformed lines.

mod common;

use common::{
    RunningEmitter, TestReceiver, emitter, eventually, first_arrivals, free_port, lifecycle_ndjson,
    output,
};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

const SECRET: &str = "delivery-test-secret-0123456789abcdef";

fn config_file(dir: &std::path::Path, retry: &str) -> String {
    let path = dir.join("config.toml");
    std::fs::write(&path, format!("[retry]\n{retry}\n")).unwrap();
    path.display().to_string()
}

#[test]
fn sigkill_at_random_moments_loses_nothing_and_keeps_order_per_sandbox() {
    let dir = tempfile::tempdir().unwrap();
    let (events, expected) = lifecycle_ndjson(60, 50); // 3 000 events
    let events_file = dir.path().join("events.ndjson");
    std::fs::write(&events_file, &events).unwrap();
    // Fail about one request in five, deterministically per (event, attempt).
    let decide = Arc::new(|id: &str, _: &str, attempt: u32| {
        let h = id.bytes().fold(attempt as u64 * 7919, |h, b| {
            h.wrapping_mul(31).wrapping_add(b as u64)
        });
        if h % 5 == 0 { 503 } else { 200 }
    });
    let receiver = TestReceiver::start(0, SECRET, decide);
    let config = config_file(
        dir.path(),
        "schedule = [\"20ms\", \"50ms\", \"100ms\"]\nmax_age = \"1h\"",
    );
    let url = format!("http://127.0.0.1:{}/hook", receiver.port);
    let data = dir.path().join("data");
    let args = [
        "--webhook-url",
        &url,
        "--webhook-secret",
        SECRET,
        "--config",
        &config,
        "--data-dir",
        data.to_str().unwrap(),
        "--events-file",
        events_file.to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
        "--max-in-flight",
        "16",
    ];
    let log = dir.path().join("emitter.log");
    let total: usize = expected.values().map(Vec::len).sum();
    let delivered_ids = || {
        receiver
            .deliveries()
            .iter()
            .map(|d| d.event_id.clone())
            .collect::<HashSet<_>>()
            .len()
    };
    let mut kills = 0;
    let mut rng_state = 0x2545F4914F6CDD1Du64;
    for round in 0..5 {
        let running = RunningEmitter::start(&args, log.clone());
        if round == 4 {
            assert!(
                eventually(Duration::from_secs(120), || delivered_ids() == total),
                "only {} of {total} events arrived; log tail: {}",
                delivered_ids(),
                running
                    .log_text()
                    .lines()
                    .rev()
                    .take(20)
                    .collect::<Vec<_>>()
                    .join("\n")
            );
            break;
        }
        // A random moment: after 100–900 ms, or once a random share of events arrived.
        rng_state ^= rng_state << 13;
        rng_state ^= rng_state >> 7;
        rng_state ^= rng_state << 17;
        let wait = Duration::from_millis(100 + rng_state % 800);
        let target = delivered_ids() + (rng_state % 400) as usize;
        eventually(wait, || delivered_ids() >= target);
        running.kill9();
        kills += 1;
    }
    assert_eq!(kills, 4);
    let deliveries = receiver.deliveries();
    assert!(
        deliveries.iter().all(|d| d.signature_ok),
        "every delivery is correctly signed"
    );
    let all_ids: HashSet<&String> = expected.values().flatten().collect();
    for d in &deliveries {
        assert!(
            all_ids.contains(&d.event_id),
            "a duplicate only ever repeats a real event id: {}",
            d.event_id
        );
    }
    let firsts = first_arrivals(&deliveries);
    for (sandbox, ids) in &expected {
        assert_eq!(
            firsts.get(sandbox),
            Some(ids),
            "first deliveries of {sandbox} in order"
        );
    }
    // Same event, same endpoint: the same delivery id on every repeat.
    let mut delivery_ids: HashMap<&str, &str> = HashMap::new();
    for d in &deliveries {
        assert_eq!(
            *delivery_ids.entry(&d.event_id).or_insert(&d.delivery_id),
            d.delivery_id.as_str()
        );
    }
}

#[test]
fn a_receiver_that_is_down_then_back_gets_everything_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let (events, expected) = lifecycle_ndjson(20, 6);
    let events_file = dir.path().join("events.ndjson");
    std::fs::write(&events_file, &events).unwrap();
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}/hook");
    let config = config_file(
        dir.path(),
        "schedule = [\"100ms\", \"200ms\", \"400ms\"]\nmax_age = \"1h\"",
    );
    let data = dir.path().join("data");
    let running = RunningEmitter::start(
        &[
            "--webhook-url",
            &url,
            "--webhook-secret",
            SECRET,
            "--config",
            &config,
            "--data-dir",
            data.to_str().unwrap(),
            "--events-file",
            events_file.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
        ],
        dir.path().join("emitter.log"),
    );
    // Nothing listens: the emitter retries (connection refused) for a while.
    assert!(
        eventually(Duration::from_secs(20), || running
            .log_text()
            .contains("will retry")),
        "{}",
        running.log_text()
    );
    std::thread::sleep(Duration::from_secs(1));
    let receiver = TestReceiver::start(port, SECRET, Arc::new(|_: &str, _: &str, _: u32| 200));
    let total: usize = expected.values().map(Vec::len).sum();
    assert!(
        eventually(Duration::from_secs(30), || receiver.deliveries().len()
            >= total),
        "{} of {total}",
        receiver.deliveries().len()
    );
    let deliveries = receiver.deliveries();
    assert_eq!(deliveries.len(), total, "no duplicates without a crash");
    assert!(
        deliveries.iter().any(|d| d.attempt > 1),
        "some were retries"
    );
    assert_eq!(first_arrivals(&deliveries), expected);
    drop(running);
}

#[test]
fn events_past_max_age_are_dead_lettered_and_replay_brings_them_back() {
    let dir = tempfile::tempdir().unwrap();
    let (events, expected) = lifecycle_ndjson(3, 2);
    let events_file = dir.path().join("events.ndjson");
    std::fs::write(&events_file, &events).unwrap();
    let refuse = Arc::new(AtomicBool::new(true));
    let refuse_flag = refuse.clone();
    // Sandbox isb00001 is refused until the test flips the flag.
    let receiver = TestReceiver::start(
        0,
        SECRET,
        Arc::new(move |_: &str, sandbox: &str, _: u32| {
            if sandbox == "isb00001" && refuse_flag.load(Ordering::SeqCst) {
                422
            } else {
                200
            }
        }),
    );
    let url = format!("http://127.0.0.1:{}/hook", receiver.port);
    let config = config_file(dir.path(), "schedule = [\"100ms\"]\nmax_age = \"1s\"");
    let data = dir.path().join("data");
    let data_s = data.to_str().unwrap().to_owned();
    let args = [
        "--webhook-url",
        url.as_str(),
        "--webhook-secret",
        SECRET,
        "--config",
        &config,
        "--data-dir",
        &data_s,
        "--events-file",
        events_file.to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
    ];
    let running = RunningEmitter::start(&args, dir.path().join("emitter.log"));
    // The other sandboxes are not held up by the failing one.
    assert!(
        eventually(Duration::from_secs(20), || receiver.deliveries().len() == 4),
        "{:?}",
        receiver.deliveries()
    );
    // Only the first event of isb00001 is attempted; the second waits behind it (order), then
    // both exhaust the 1 s maximum age in turn.
    let list = || output(emitter().args(["dead-letters", "list", "--json", "--data-dir", &data_s]));
    assert!(
        eventually(Duration::from_secs(20), || list().1.lines().count() == 2),
        "dead letters: {:?}\nlog: {}",
        list(),
        running.log_text()
    );
    let (code, out, err) = list();
    assert_eq!(code, 0, "{err}");
    let letters: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(
        letters.iter().all(|l| l["sandbox_id"] == "isb00001"
            && l["last_status"] == 422
            && l["endpoint"] == "default"),
        "{out}"
    );
    assert!(letters[0]["reason"].as_str().unwrap().contains("HTTP 422"));
    let (_, table, _) = output(emitter().args(["dead-letters", "list", "--data-dir", &data_s]));
    assert!(
        table.contains("isb00001") && table.contains("HTTP 422"),
        "{table}"
    );
    assert!(running.log_text().contains("moved to dead letters"));
    // Replay needs the service stopped: while it runs, the command says so.
    let (code, _, err) =
        output(emitter().args(["dead-letters", "replay", "--all", "--data-dir", &data_s]));
    assert_ne!(code, 0);
    assert!(err.contains("DATA_DIR"), "{err}");
    running.signal(nix::sys::signal::Signal::SIGTERM);
    let mut running = running;
    assert!(running.child.wait().unwrap().success());
    let (code, out, err) =
        output(emitter().args(["dead-letters", "replay", "--all", "--data-dir", &data_s]));
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("replayed 2"), "{out}");
    refuse.store(false, Ordering::SeqCst);
    let _running = RunningEmitter::start(&args, dir.path().join("emitter2.log"));
    assert!(eventually(Duration::from_secs(20), || receiver
        .deliveries()
        .len()
        == 6));
    assert_eq!(
        first_arrivals(&receiver.deliveries()),
        expected,
        "replayed in order"
    );
    let (_, out, _) = list();
    assert_eq!(
        out.lines().count(),
        0,
        "replayed letters leave the dead-letter store"
    );
}

#[test]
fn backfill_reports_malformed_lines_and_delivers_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let (events, expected) = lifecycle_ndjson(4, 3);
    let mut lines: Vec<&str> = events.lines().collect();
    lines.insert(5, "{not json");
    lines.insert(
        9,
        r#"{"id":"x","type":"sandbox.lifecycle.created","sandbox_id":"s"}"#,
    );
    let receiver = TestReceiver::start(0, SECRET, Arc::new(|_: &str, _: &str, _: u32| 200));
    let url = format!("http://127.0.0.1:{}/hook", receiver.port);
    let data = dir.path().join("data");
    let mut child = emitter()
        .args([
            "backfill",
            "--webhook-url",
            &url,
            "--webhook-secret",
            SECRET,
            "--data-dir",
            data.to_str().unwrap(),
            "-",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all((lines.join("\n") + "\n").as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(1),
        "malformed lines make backfill exit 1: {stderr}"
    );
    assert!(
        stderr.contains("line=6") && stderr.contains("line=10"),
        "line numbers are reported: {stderr}"
    );
    assert!(stderr.contains("2 malformed"), "{stderr}");
    assert_eq!(first_arrivals(&receiver.deliveries()), expected);
    let (_, listed, _) = output(emitter().args([
        "dead-letters",
        "list",
        "--json",
        "--data-dir",
        data.to_str().unwrap(),
    ]));
    let positions: Vec<String> = listed
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["position"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(positions, ["line 6", "line 10"]);
}
