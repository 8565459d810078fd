//! Issue 14, finding 5: the ops port shows nothing but liveness, metrics and a bare readiness
//! answer without the admin token; `/status` and readiness details need `Bearer $ADMIN_TOKEN`.

mod common;

use common::{ADMIN_TOKEN, RunningEmitter, emitter, eventually, free_port, output, wait_for_port};
use std::time::Duration;

const SECRET: &str = "ops-port-secret-a1b2c3d4e5";

/// (status, WWW-Authenticate, body) of a GET with an optional bearer token.
fn get(port: u16, path: &str, token: Option<&str>) -> (u16, String, String) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut request = reqwest::Client::new().get(format!("http://127.0.0.1:{port}{path}"));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.unwrap();
        let challenge = response
            .headers()
            .get("www-authenticate")
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default();
        (
            response.status().as_u16(),
            challenge,
            response.text().await.unwrap(),
        )
    })
}

#[test]
fn readiness_details_and_status_need_the_admin_token() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data-dir-name");
    let redis_port = free_port();
    let nomad_port = free_port();
    let port = free_port();
    let identifiers = [
        "127.0.0.1",
        &redis_port.to_string(),
        &nomad_port.to_string(),
        "stream-name-x1",
        "group-name-x2",
        "consumer-name-x3",
        "data-dir-name",
    ];
    let running = RunningEmitter::start(
        &[
            "--webhook-url",
            &format!("http://127.0.0.1:{}/hook", free_port()),
            "--webhook-secret",
            SECRET,
            "--data-dir",
            data.to_str().unwrap(),
            "--redis-url",
            &format!("redis://127.0.0.1:{redis_port}"),
            "--redis-stream",
            "stream-name-x1",
            "--redis-group",
            "group-name-x2",
            "--redis-consumer",
            "consumer-name-x3",
            "--nomad-addr",
            &format!("http://127.0.0.1:{nomad_port}"),
            "--listen",
            &format!("127.0.0.1:{port}"),
        ],
        dir.path().join("log"),
    );
    wait_for_port(port, Duration::from_secs(10));

    // Open: liveness and metrics.
    let (code, _, body) = get(port, "/healthz", None);
    assert_eq!(code, 200, "{body}");
    let (code, _, body) = get(port, "/metrics", None);
    assert_eq!(code, 200);
    assert!(body.contains("e2b_webhook_"), "{body}");

    // Readiness without the token (or with a wrong one): the code and component names only.
    for token in [None, Some("wrong-token-0123456789abcdef")] {
        let (code, _, body) = get(port, "/readyz", token);
        assert_eq!(code, 503, "{body}");
        let json: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(json["ready"], false);
        assert_eq!(json["components"]["redis"]["ready"], false, "{body}");
        assert!(body.contains("redis: not ready"), "{body}");
        for identifier in identifiers {
            assert!(
                !body.contains(identifier),
                "/readyz shows {identifier}: {body}"
            );
        }
        let (code, challenge, body) = get(port, "/status", token);
        assert_eq!(code, 401, "{body}");
        assert_eq!(challenge, "Bearer");
        assert!(body.contains("Authorization: Bearer"), "{body}");
    }

    // With the token: what an operator needs to act.
    let redis_detail = format!("127.0.0.1:{redis_port}");
    assert!(
        eventually(Duration::from_secs(10), || {
            let (code, _, body) = get(port, "/readyz", Some(ADMIN_TOKEN));
            code == 503 && body.contains(&redis_detail)
        }),
        "{}",
        get(port, "/readyz", Some(ADMIN_TOKEN)).2
    );
    let (code, _, body) = get(port, "/status", Some(ADMIN_TOKEN));
    assert_eq!(code, 200, "{body}");
    let status: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert!(status["endpoints"].is_array(), "{body}");
    drop(running);
}

#[test]
fn without_an_admin_token_status_is_off_and_a_ready_service_answers_200_to_anyone() {
    let dir = tempfile::tempdir().unwrap();
    let events = dir.path().join("events.ndjson");
    std::fs::write(&events, "").unwrap();
    let port = free_port();
    let mut child = emitter()
        .args(["run", "--webhook-url", "http://127.0.0.1:9/hook"])
        .args(["--webhook-secret", SECRET, "--events-file"])
        .arg(&events)
        .arg("--data-dir")
        .arg(dir.path().join("d"))
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    wait_for_port(port, Duration::from_secs(10));
    // The Nomad job's check: a plain GET of /readyz, status code only.
    let (code, _, body) = get(port, "/readyz", None);
    assert_eq!(code, 200, "{body}");
    for token in [None, Some(ADMIN_TOKEN)] {
        let (code, _, body) = get(port, "/status", token);
        assert_eq!(code, 403, "{body}");
        assert!(body.contains("set ADMIN_TOKEN"), "{body}");
    }
    child.kill().unwrap();
    child.wait().unwrap();

    let (code, out, err) = output(
        emitter()
            .args(["run", "--webhook-url", "http://127.0.0.1:9/hook"])
            .args(["--webhook-secret", SECRET])
            .env("ADMIN_TOKEN", "short"),
    );
    assert_eq!(code, 2, "{out}{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("ADMIN_TOKEN") && !err.contains("short"),
        "{err}"
    );
}
