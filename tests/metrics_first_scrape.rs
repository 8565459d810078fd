//! Issue 16 item 7: every counter an alert or dashboard needs exists at 0 from the first scrape.

mod common;

use common::{RunningEmitter, free_port, wait_for_port};
use std::time::Duration;

fn scrape(port: u16) -> String {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        reqwest::get(format!("http://127.0.0.1:{port}/metrics"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    })
}

#[test]
fn an_idle_instance_exports_every_counter_at_zero_for_every_configured_endpoint() {
    let dir = tempfile::tempdir().unwrap();
    let events = dir.path().join("events.ndjson");
    std::fs::write(&events, "").unwrap();
    let config = dir.path().join("c.toml");
    std::fs::write(
        &config,
        "[[endpoints]]\nid = \"billing\"\nurl = \"http://127.0.0.1:9/hook\"\nsecrets = [\"s3cr3t-billing\"]\n",
    )
    .unwrap();
    let port = free_port();
    let _running = RunningEmitter::start(
        &[
            "--webhook-url",
            "http://127.0.0.1:9/",
            "--webhook-secret",
            "s3cr3t-default",
            "--config",
            config.to_str().unwrap(),
            "--data-dir",
            dir.path().join("d").to_str().unwrap(),
            "--events-file",
            events.to_str().unwrap(),
            "--listen",
            &format!("127.0.0.1:{port}"),
        ],
        dir.path().join("log"),
    );
    wait_for_port(port, Duration::from_secs(10));
    let page = scrape(port);
    let mut expected = Vec::new();
    for endpoint in ["default", "billing"] {
        for outcome in ["delivered", "rejected", "timeout", "network"] {
            expected.push(format!(
                "e2b_webhook_deliveries_total{{endpoint=\"{endpoint}\",outcome=\"{outcome}\"}} 0"
            ));
        }
        expected.push(format!(
            "e2b_webhook_retries_total{{endpoint=\"{endpoint}\"}} 0"
        ));
        expected.push(format!(
            "e2b_webhook_dead_letters_total{{endpoint=\"{endpoint}\"}} 0"
        ));
        expected.push(format!(
            "e2b_webhook_delivery_latency_seconds_count{{endpoint=\"{endpoint}\"}} 0"
        ));
        expected.push(format!(
            "e2b_webhook_outbox_depth{{endpoint=\"{endpoint}\"}} 0"
        ));
    }
    for label in ["create", "kill", "pause", "resume", "update", "checkpoint"] {
        expected.push(format!(
            "e2b_webhook_events_received_total{{source=\"file\",type=\"{label}\"}} 0"
        ));
    }
    expected.push("e2b_webhook_malformed_inputs_total{source=\"file\"} 0".into());
    // Issue 32: what the alerts read. Alone (no Redis, no lease to share) the instance is the
    // one delivering; the outbox can be written; nothing was dropped.
    expected.push("e2b_webhook_leader 1".into());
    expected.push("e2b_webhook_outbox_writable 1".into());
    expected.push("e2b_webhook_log_lines_dropped_total 0".into());
    expected.push("e2b_webhook_event_history_dropped_total 0".into());
    let missing: Vec<&String> = expected
        .iter()
        .filter(|line| !page.lines().any(|l| l == line.as_str()))
        .collect();
    assert!(missing.is_empty(), "missing {missing:#?} in\n{page}");
}
