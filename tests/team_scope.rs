//! Team scope through the real binary: per-endpoint `teams` route each team's stream events to its
//! own URL and secret, as E2B Cloud's per-team webhooks do; the orchestrator's `List` answers with
//! every team's sandboxes, yet with `E2B_TEAM_IDS` set only the served team's get synthesized
//! webhooks — shaped like the orchestrator's own events (base template, build, `events_ttl_days`,
//! an `execution` block on the kill) and sent in the `e2b-cloud` format.

mod common;
mod support;

use common::{CapturedRequest, RunningEmitter, capture_server, eventually, free_port};
use serde_json::{Value, json};
use std::sync::mpsc;
use std::time::Duration;
use support::nomad_standin::{AllocSpec, NomadOptions, NomadStandin};
use support::orchestrator_standin::{OrchestratorStandin, sandbox};

const SECRET: &str = "team-scope-secret";
const TEAM: &str = "0b8b8a4e-6f4e-4c4a-9a57-3a2f5d3b1c2d";
const OTHER_TEAM: &str = "9d3c1f0e-2a4b-4c6d-8e0f-1a2b3c4d5e6f";
const DEADLINE: Duration = Duration::from_secs(30);
const THIRD_TEAM: &str = "5a0e1f2d-3c4b-4a69-8877-665544332211";

#[test]
fn per_endpoint_teams_route_each_team_to_its_own_url_and_secret() {
    let redis = support::redis::RedisServer::start();
    let (port_a, to_a) = capture_server(Vec::new());
    let (port_b, to_b) = capture_server(Vec::new());
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("endpoints.toml");
    std::fs::write(
        &config,
        format!(
            "[[endpoints]]\nid = \"team-a\"\nurl = \"http://127.0.0.1:{port_a}/a\"\nformat = \"e2b-cloud\"\nsecrets = [\"secret-a\"]\nteams = [\"{TEAM}\"]\n\
             [[endpoints]]\nid = \"team-b\"\nurl = \"http://127.0.0.1:{port_b}/b\"\nformat = \"e2b-cloud\"\nsecrets = [\"secret-b\"]\nteams = [\"{OTHER_TEAM}\"]\n"
        ),
    )
    .unwrap();
    // No E2B_TEAM_IDS: the teams the endpoints name are the ones served.
    let emitter = RunningEmitter::start(
        &[
            "--config",
            config.to_str().unwrap(),
            "--redis-url",
            &redis.host_port(),
            "--redis-consumer",
            "teams",
            "--data-dir",
            dir.path().join("data").to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
        ],
        dir.path().join("emitter.log"),
    );
    let mut conn = redis.connection();
    assert!(
        eventually(DEADLINE, || {
            [TEAM, OTHER_TEAM].iter().all(|team| {
                redis::cmd("EXISTS")
                    .arg(format!("wh:{team}"))
                    .query::<bool>(&mut conn)
                    .unwrap()
            })
        }),
        "gate keys for both endpoints' teams; log:\n{}",
        emitter.log_text()
    );
    for (sandbox, team) in [
        ("isb-a", TEAM),
        ("isb-b", OTHER_TEAM),
        ("isb-c", THIRD_TEAM),
    ] {
        let event = json!({
            "id": uuid::Uuid::new_v4().to_string(),
            "version": "v2",
            "type": "sandbox.lifecycle.created",
            "timestamp": "2026-05-14T10:00:00Z",
            "event_category": "",
            "event_label": "",
            "sandbox_id": sandbox,
            "sandbox_execution_id": "exec-1",
            "sandbox_template_id": "base",
            "sandbox_build_id": "build-1",
            "sandbox_team_id": team,
        });
        let _: String = redis::cmd("XADD")
            .arg("sandbox.events.stream")
            .arg("*")
            .arg("payload")
            .arg(event.to_string())
            .query(&mut conn)
            .unwrap();
    }
    for (requests, secret, sandbox) in [(&to_a, "secret-a", "isb-a"), (&to_b, "secret-b", "isb-b")]
    {
        let request = requests
            .recv_timeout(DEADLINE)
            .unwrap_or_else(|_| panic!("no delivery of {sandbox}; log:\n{}", emitter.log_text()));
        let body: Value = serde_json::from_slice(&request.body).unwrap();
        assert_eq!(body["sandbox_id"], sandbox);
        assert_eq!(
            request.headers["e2b-signature"],
            e2b_signature(secret, &request.body)
        );
    }
    std::thread::sleep(Duration::from_secs(1));
    assert!(
        to_a.try_recv().is_err() && to_b.try_recv().is_err(),
        "one event each, none of the third team"
    );
}

fn e2b_signature(secret: &str, body: &[u8]) -> String {
    use base64::Engine;
    use sha2::Digest;
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(sha2::Sha256::digest([secret.as_bytes(), body].concat()))
}

#[test]
fn listed_sandboxes_of_other_teams_produce_no_webhook() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let nomad = runtime.block_on(NomadStandin::start(NomadOptions::default()));
    let orchestrator = runtime.block_on(OrchestratorStandin::start());
    orchestrator.set_sandboxes(vec![
        sandbox("isb-ours", TEAM, "exec-1"),
        sandbox("isb-theirs", OTHER_TEAM, "exec-2"),
    ]);
    nomad.add_allocation(&AllocSpec::orchestrator("alloc-a", orchestrator.port()));
    let (port, requests) = capture_server(Vec::new());
    let listen = format!("127.0.0.1:{}", free_port());
    let dir = tempfile::tempdir().unwrap();
    let emitter = RunningEmitter::start(
        &[
            "--webhook-url",
            &format!("http://127.0.0.1:{port}/hook"),
            "--webhook-secret",
            SECRET,
            "--webhook-format",
            "e2b-cloud",
            "--team-ids",
            TEAM,
            "--nomad-addr",
            &nomad.url(),
            "--data-dir",
            dir.path().join("data").to_str().unwrap(),
            "--listen",
            &listen,
            "--reconcile-interval",
            "200ms",
            "--reconcile-grace",
            "300ms",
        ],
        dir.path().join("emitter.log"),
    );

    let create = next_body(&requests, &emitter);
    assert_eq!(create["sandbox_id"], "isb-ours", "{create}");
    assert_eq!(
        (
            &create["type"],
            &create["event_category"],
            &create["event_label"]
        ),
        (
            &json!("sandbox.lifecycle.created"),
            &json!("lifecycle"),
            &json!("create")
        )
    );
    assert_eq!(create["version"], "v2");
    assert_eq!(create["sandbox_template_id"], "base");
    assert_eq!(create["sandbox_build_id"], "build-1");
    assert_eq!(create["sandbox_execution_id"], "exec-1");
    assert_eq!(create["events_ttl_days"], 7);
    assert_eq!(
        create["event_data"],
        json!({"sandbox_metadata": {"owner": "tests"}, "synthetic": true})
    );

    // More runs, still nothing about the other team's sandbox.
    std::thread::sleep(Duration::from_secs(1));
    assert!(
        requests.try_recv().is_err(),
        "only the served team's sandbox is announced"
    );
    let metrics = http_get(&listen, "/metrics");
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with(r#"e2b_webhook_other_team_events_total{source="reconcile"}"#)),
        "{metrics}"
    );

    // Its node is lost: the registration goes, the orchestrator stops answering. A kill for
    // ours only, with the execution of its last listing.
    orchestrator.set_failing(true);
    nomad.set_client_status(&["alloc-a"], "lost");
    let kill = next_body(&requests, &emitter);
    assert_eq!(kill["sandbox_id"], "isb-ours", "{kill}");
    assert_eq!(kill["event_label"], "kill");
    let data = &kill["event_data"];
    assert_eq!(data["kill_reason"], "orchestrator_lost");
    assert_eq!(data["synthetic"], true);
    let execution = &data["execution"];
    assert_eq!(execution["started_at"], "2023-11-14T22:13:20Z", "{kill}");
    assert_eq!(
        (&execution["vcpu_count"], &execution["memory_mb"]),
        (&json!(2), &json!(512))
    );
    assert!(execution["execution_time"].as_i64().unwrap() > 0, "{kill}");
    std::thread::sleep(Duration::from_secs(1));
    assert!(
        requests.try_recv().is_err(),
        "no kill for the other team's sandbox"
    );
    let log = emitter.log_text();
    assert!(!log.contains(support::orchestrator_standin::ENVD_TOKEN));
}

/// The next delivered body, its `e2b-signature` checked as E2B's docs compute it.
fn next_body(requests: &mpsc::Receiver<CapturedRequest>, emitter: &RunningEmitter) -> Value {
    let request = requests.recv_timeout(DEADLINE).unwrap_or_else(|_| {
        panic!("no delivery; log:\n{}", emitter.log_text());
    });
    assert_eq!(
        request.headers["e2b-signature"],
        e2b_signature(SECRET, &request.body)
    );
    serde_json::from_slice(&request.body).unwrap()
}

fn http_get(addr: &str, path: &str) -> String {
    use std::io::{Read, Write};
    let mut text = String::new();
    assert!(
        eventually(DEADLINE, || {
            let Ok(mut stream) = std::net::TcpStream::connect(addr) else {
                return false;
            };
            write!(stream, "GET {path} HTTP/1.0\r\nHost: emitter\r\n\r\n").unwrap();
            text.clear();
            stream.read_to_string(&mut text).is_ok()
        }),
        "nothing answers on {addr}"
    );
    text
}
