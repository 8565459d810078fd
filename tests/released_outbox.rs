//! Issue 30's upgrade path: the binary starts on an outbox written by the released one (a3c3d93)
//! with work pending, and delivers every event once, in order per sandbox, keeping the dead
//! letter. The fixture and how it was made: tests/fixtures/released-outbox/README.md. Today the
//! store is the same redb file; once the outbox's format changes, this is the migration's test.

mod common;

use common::{RunningEmitter, TestReceiver, emitter, eventually, first_arrivals, lifecycle_ndjson};
use std::sync::Arc;
use std::time::Duration;

/// The secret the fixture's emitter ran with (its deliveries are signed at delivery time).
const SECRET: &str = "released-outbox-secret-0123456789abcdef";

#[test]
fn an_outbox_written_by_the_released_binary_is_delivered_once_and_in_order() {
    let fixture = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/released-outbox"
    );
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    for file in ["outbox.redb", "outbox.id"] {
        std::fs::copy(format!("{fixture}/{file}"), data.join(file)).unwrap();
    }
    // The events the released binary read (the fixture's events.ndjson, made by the same helper):
    // 5 sandboxes × 4 events, all pending there after failed attempts.
    let (_, expected) = lifecycle_ndjson(5, 4);
    let total: usize = expected.values().map(Vec::len).sum();
    // Nothing new to read: what arrives comes from the outbox alone.
    let events_file = dir.path().join("none.ndjson");
    std::fs::write(&events_file, "").unwrap();
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        "[retry]\nschedule = [\"100ms\"]\nmax_age = \"87600h\"\n",
    )
    .unwrap();
    let receiver = TestReceiver::start(0, SECRET, Arc::new(|_: &str, _: &str, _: u32| 200));
    let url = format!("http://127.0.0.1:{}/hook", receiver.port);
    let mut running = RunningEmitter::start(
        &[
            "--webhook-url",
            &url,
            "--webhook-secret",
            SECRET,
            "--config",
            config.to_str().unwrap(),
            "--data-dir",
            data.to_str().unwrap(),
            "--events-file",
            events_file.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
        ],
        dir.path().join("emitter.log"),
    );
    assert!(
        eventually(Duration::from_secs(30), || receiver.deliveries().len()
            >= total),
        "{} of {total} arrived; log:\n{}",
        receiver.deliveries().len(),
        running.log_text()
    );
    // Room for a repeat to show up.
    std::thread::sleep(Duration::from_millis(500));
    let deliveries = receiver.deliveries();
    assert_eq!(deliveries.len(), total, "each event once");
    assert!(deliveries.iter().all(|d| d.signature_ok));
    // Only each sandbox's oldest event was tried (deliveries are ordered per sandbox): its
    // delivery continues the released binary's count of attempts.
    for sandbox in expected.keys() {
        let head = deliveries
            .iter()
            .find(|d| &d.sandbox_id == sandbox)
            .unwrap();
        assert!(head.attempt > 2, "{sandbox}: attempt {}", head.attempt);
    }
    assert_eq!(
        first_arrivals(&deliveries),
        expected,
        "in order per sandbox"
    );
    running.signal(nix::sys::signal::Signal::SIGTERM);
    let _ = running.child.wait();

    // The malformed line the released binary set aside is still a dead letter.
    let (code, stdout, stderr) = common::output(
        emitter()
            .args(["dead-letters", "list", "--json", "--data-dir"])
            .arg(&data),
    );
    assert_eq!(code, 0, "{stderr}");
    let letters: Vec<serde_json::Value> = stdout
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(letters.len(), 1, "{stdout}");
    assert_eq!(letters[0]["raw"], "not an event", "{stdout}");
}
