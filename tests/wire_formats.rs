//! Issue 2: the three wire formats, checked on the bytes that crossed a real socket by
//! implementations that are not ours (openssl, the Python of E2B's docs, the `standardwebhooks`
//! package).

mod common;

use common::{CapturedRequest, capture_server, emitter, free_port, output, wait_for_port};
use e2b_webhook_emitter::deliver::format::{EndpointIdentity, WireFormat, render};
use e2b_webhook_emitter::deliver::http::{Outcome, WebhookClient};
use e2b_webhook_emitter::deliver::sign::SecretSet;
use e2b_webhook_emitter::event::SandboxEvent;
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

const TEAM: &str = "0b8b8a4e-6f4e-4c4a-9a57-3a2f5d3b1c2d";

/// A killed event with non-ASCII metadata padded to `size` bytes of metadata.
fn big_event(size: usize) -> SandboxEvent {
    let unit = "é漢🙂 sandbox ";
    let blob: String = unit.repeat(size / unit.len() + 1);
    let json = serde_json::json!({
        "id": "7c9e6679-7425-40de-944b-e07fc1f90ae7",
        "version": "v2",
        "type": "sandbox.lifecycle.killed",
        "timestamp": "2025-10-15T12:00:00.123456789Z",
        "event_category": "lifecycle",
        "event_label": "kill",
        "event_data": {
            "sandbox_metadata": {"blob": blob, "naïve": "ümlaut"},
            "execution": {"started_at": "2025-10-15T11:00:00Z", "vcpu_count": 2, "memory_mb": 512, "execution_time": 3_600_000},
            "kill_reason": "timeout"
        },
        "sandbox_id": "isbx-ünïcode",
        "sandbox_execution_id": "exec-1",
        "sandbox_template_id": "base",
        "sandbox_build_id": "build-1",
        "sandbox_team_id": TEAM,
        "events_ttl_days": 7
    });
    SandboxEvent::from_value(json).unwrap()
}

/// Sends one rendered request over a real socket and returns what arrived.
fn deliver(format: WireFormat, secrets: &str, event: &SandboxEvent) -> CapturedRequest {
    let (port, rx) = capture_server(vec![]);
    let secrets = SecretSet::parse(secrets).unwrap();
    let request = render(
        format,
        event,
        &EndpointIdentity::new("primary"),
        &secrets,
        1,
        jiff::Timestamp::now(),
    );
    let url = format!("http://127.0.0.1:{port}/hook").parse().unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let attempt = rt.block_on(
        WebhookClient::new(Duration::from_secs(5), 64 * 1024, None)
            .unwrap()
            .post(&url, &request),
    );
    assert_eq!(attempt.outcome, Outcome::Delivered { status: 200 });
    let got = rx.recv_timeout(Duration::from_secs(5)).unwrap();
    assert_eq!(
        got.body, request.body,
        "the body on the wire is the body that was signed"
    );
    got
}

fn python(script: &str, args: &[&str], stdin: &[u8]) -> (i32, String) {
    let mut child = Command::new("python3")
        .arg("-c")
        .arg(script)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 runs");
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    let out = child.wait_with_output().unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.code().unwrap_or(-1), text.trim().to_owned())
}

fn openssl_hmac_hex(secret: &str, body: &[u8]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("body");
    std::fs::write(&path, body).unwrap();
    let (code, out, err) = output(
        Command::new("openssl")
            .args(["dgst", "-sha256", "-hmac", secret])
            .arg(&path),
    );
    assert_eq!(code, 0, "openssl failed: {err}");
    out.trim().rsplit(' ').next().unwrap().to_owned()
}

#[test]
fn x_e2b_signature_matches_openssl_on_a_64_kib_non_ascii_body() {
    let secret = "0f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0";
    for size in [16, 64 * 1024] {
        let got = deliver(WireFormat::XE2bSignature, secret, &big_event(size));
        assert!(got.body.len() >= size);
        assert_eq!(got.method, "POST");
        assert_eq!(got.headers["content-type"], "application/json");
        assert!(got.headers["user-agent"].starts_with("e2b-webhook-emitter/"));
        assert_eq!(got.headers["e2b-delivery-attempt"], "1");
        assert_eq!(
            got.headers["x-e2b-signature"],
            openssl_hmac_hex(secret, &got.body)
        );
        let body: serde_json::Value = serde_json::from_slice(&got.body).unwrap();
        assert_eq!(body["eventLabel"], "kill");
        assert_eq!(body["sandboxId"], "isbx-ünïcode");
        assert_eq!(body["eventData"]["kill_reason"], "timeout");
        assert_eq!(body["eventData"]["execution"]["execution_time"], 3_600_000);
        let text = String::from_utf8(got.body.clone()).unwrap();
        assert!(
            text.starts_with(r#"{"eventCategory":"sandbox","eventLabel":"kill","sandboxId":"#),
            "{}",
            &text[..80]
        );
        // A wrong secret does not match.
        assert_ne!(
            got.headers["x-e2b-signature"],
            openssl_hmac_hex("other", &got.body)
        );
    }
}

/// The Python verifier of E2B's current docs (e2b-dev/docs
/// `docs/sandbox/lifecycle-events-webhooks.mdx`, "Webhook verification"), transcribed.
const E2B_DOCS_VERIFY: &str = r#"
import hashlib, base64, sys
def verify_webhook_signature(secret: str, payload: str, payload_signature: str) -> bool:
    hash_bytes = hashlib.sha256((secret + payload).encode('utf-8')).digest()
    expected_signature = base64.b64encode(hash_bytes).decode('utf-8')
    expected_signature = expected_signature.replace('+', '-').replace('/', '_').rstrip('=')
    return expected_signature == payload_signature
payload = sys.stdin.buffer.read().decode('utf-8')
ok = verify_webhook_signature(sys.argv[1], payload, sys.argv[2])
print("valid" if ok else "invalid")
sys.exit(0 if ok else 1)
"#;

#[test]
fn e2b_cloud_signature_matches_the_python_of_e2bs_docs() {
    let secret = "e2b-cloud-secret-ütf8";
    for size in [16, 64 * 1024] {
        let got = deliver(WireFormat::E2bCloud, secret, &big_event(size));
        let sig = &got.headers["e2b-signature"];
        assert_eq!(got.headers["e2b-signature-version"], "v1");
        assert_eq!(
            got.headers["e2b-webhook-id"],
            e2b_webhook_emitter::deliver::format::default_webhook_id("primary").to_string()
        );
        assert!(!sig.contains('=') && !sig.contains('+') && !sig.contains('/'));
        let (code, out) = python(E2B_DOCS_VERIFY, &[secret, sig], &got.body);
        assert_eq!((code, out.as_str()), (0, "valid"));
        let mut tampered = got.body.clone();
        tampered[10] ^= 1;
        assert_eq!(python(E2B_DOCS_VERIFY, &[secret, sig], &tampered).0, 1);
        let body: serde_json::Value = serde_json::from_slice(&got.body).unwrap();
        assert_eq!(body["type"], "sandbox.lifecycle.killed");
        assert_eq!(body["sandbox_id"], "isbx-ünïcode");
        assert_eq!(body["event_data"]["kill_reason"], "timeout");
    }
}

/// Verifies with the `standardwebhooks` package from PyPI, once per secret.
const STANDARD_WEBHOOKS_VERIFY: &str = r#"
import sys, json
from standardwebhooks.webhooks import Webhook
body = sys.stdin.buffer.read()
headers = json.loads(sys.argv[2])
Webhook(sys.argv[1]).verify(body, headers)
print("valid")
"#;

/// The spec's algorithm with Python's hmac, for secrets that are not `whsec_` (raw bytes).
const SPEC_HMAC_VERIFY: &str = r#"
import sys, json, hmac, hashlib, base64
body = sys.stdin.buffer.read()
h = json.loads(sys.argv[2])
msg = h["webhook-id"].encode() + b"." + h["webhook-timestamp"].encode() + b"." + body
want = "v1," + base64.b64encode(hmac.new(sys.argv[1].encode(), msg, hashlib.sha256).digest()).decode()
ok = any(hmac.compare_digest(want, s) for s in h["webhook-signature"].split(" "))
print("valid" if ok else "invalid")
sys.exit(0 if ok else 1)
"#;

#[test]
fn standard_webhooks_signatures_verify_with_the_reference_package_for_every_rotated_secret() {
    let new = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    let old = "whsec_c2VjcmV0LW9sZC1zZWNyZXQtb2xkLXNlY3JldA==";
    for size in [16, 64 * 1024] {
        let event = big_event(size);
        let got = deliver(
            WireFormat::StandardWebhooks,
            &format!("{new} {old}"),
            &event,
        );
        assert_eq!(got.headers["webhook-id"], event.id());
        assert_eq!(got.headers["webhook-signature"].split(' ').count(), 2);
        let headers = serde_json::json!({
            "webhook-id": got.headers["webhook-id"],
            "webhook-timestamp": got.headers["webhook-timestamp"],
            "webhook-signature": got.headers["webhook-signature"],
        })
        .to_string();
        for secret in [new, old] {
            let (code, out) = python(STANDARD_WEBHOOKS_VERIFY, &[secret, &headers], &got.body);
            assert_eq!((code, out.as_str()), (0, "valid"), "secret {secret}");
        }
        let (code, _) = python(
            STANDARD_WEBHOOKS_VERIFY,
            &["whsec_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", &headers],
            &got.body,
        );
        assert_ne!(code, 0, "an unrelated secret must not verify");
        let body: serde_json::Value = serde_json::from_slice(&got.body).unwrap();
        assert_eq!(body["data"]["sandbox_id"], "isbx-ünïcode");
    }
    let raw = "plain-text-secret";
    let got = deliver(WireFormat::StandardWebhooks, raw, &big_event(64));
    let headers = serde_json::json!({
        "webhook-id": got.headers["webhook-id"],
        "webhook-timestamp": got.headers["webhook-timestamp"],
        "webhook-signature": got.headers["webhook-signature"],
    })
    .to_string();
    assert_eq!(
        python(SPEC_HMAC_VERIFY, &[raw, &headers], &got.body),
        (0, "valid".to_owned())
    );
    assert_eq!(
        python(SPEC_HMAC_VERIFY, &["other", &headers], &got.body).0,
        1
    );
}

#[test]
fn sign_and_verify_commands_agree_with_openssl() {
    let secret = "cli-secret";
    let body = big_event(64 * 1024).to_json();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("body.json");
    std::fs::write(&file, &body).unwrap();
    let (code, out, err) = output(emitter().args(["sign", "--secret", secret]).arg(&file));
    assert_eq!(code, 0, "{err}");
    let signature = out.lines().last().unwrap().to_owned();
    assert_eq!(signature, openssl_hmac_hex(secret, &body));
    let (code, out, _) = output(
        emitter()
            .args(["verify", "--secret", secret, "--signature", &signature])
            .arg(&file),
    );
    assert_eq!((code, out.trim()), (0, "valid"));
    std::fs::write(&file, [&body[..], b" "].concat()).unwrap();
    let (code, _, _) = output(
        emitter()
            .args(["verify", "--secret", secret, "--signature", &signature])
            .arg(&file),
    );
    assert_eq!(code, 1, "a changed body must not verify");
    // standard-webhooks: the signature covers id and timestamp too.
    let (code, out, _) = output(
        emitter()
            .args([
                "sign",
                "--format",
                "standard-webhooks",
                "--secret",
                secret,
                "--id",
                "msg_1",
                "--timestamp",
                "1700000000",
            ])
            .arg(&file),
    );
    assert_eq!(code, 0);
    let sig = out.lines().last().unwrap().to_owned();
    assert!(out.contains("webhook-id: msg_1") && sig.starts_with("v1,"));
    let verify = |ts: &str| {
        output(
            emitter()
                .args([
                    "verify",
                    "--format",
                    "standard-webhooks",
                    "--secret",
                    secret,
                    "--id",
                    "msg_1",
                    "--timestamp",
                    ts,
                    "--signature",
                    &sig,
                ])
                .arg(&file),
        )
        .0
    };
    assert_eq!(verify("1700000000"), 0);
    assert_eq!(verify("1700000001"), 1);
}

#[test]
fn receive_accepts_valid_rejects_unsigned_and_malformed() {
    let port = free_port();
    let secret = "receiver-secret";
    let child = emitter()
        .args([
            "receive",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--secret",
            secret,
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_port(port, Duration::from_secs(10));
    let post = |body: &[u8], sig: Option<String>| -> u16 {
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async {
            let mut req = reqwest::Client::new()
                .post(format!("http://127.0.0.1:{port}/api/webhooks/e2b"))
                .body(body.to_vec());
            if let Some(sig) = sig {
                req = req.header("X-E2B-Signature", sig);
            }
            req.send().await.unwrap().status().as_u16()
        })
    };
    let good = br#"{"eventCategory":"sandbox","eventLabel":"kill","sandboxId":"s-1"}"#;
    assert_eq!(post(good, Some(openssl_hmac_hex(secret, good))), 200);
    assert_eq!(post(good, None), 401);
    assert_eq!(post(good, Some(openssl_hmac_hex("wrong", good))), 401);
    assert_eq!(
        post(b"not json", Some(openssl_hmac_hex(secret, b"not json"))),
        400
    );
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        lines.len(),
        1,
        "only the accepted event is printed: {stdout}"
    );
    let printed: serde_json::Value = serde_json::from_str(lines[0]).unwrap();
    assert_eq!(printed["sandboxId"], "s-1");
    assert!(
        stderr.contains("missing x-e2b-signature header"),
        "{stderr}"
    );
    assert!(stderr.contains("not JSON"), "{stderr}");
    assert!(!stderr.contains(secret), "the secret must not be logged");
}

#[test]
fn send_test_reports_the_answer_and_fails_on_non_2xx() {
    let (port, rx) = capture_server(vec![(401, "{\"error\":\"bad signature\"}")]);
    let url = format!("http://127.0.0.1:{port}/hook");
    let (code, out, err) = output(emitter().args([
        "send-test",
        "--url",
        &url,
        "--secret",
        "s",
        "--event",
        "pause",
        "--sandbox-id",
        "sbx-9",
        "--team-id",
        TEAM,
    ]));
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        out.contains("HTTP 401") && out.contains("bad signature"),
        "{out}"
    );
    let first = rx.recv_timeout(Duration::from_secs(5)).unwrap();
    let body: serde_json::Value = serde_json::from_slice(&first.body).unwrap();
    assert_eq!(
        (
            body["eventLabel"].as_str(),
            body["sandboxId"].as_str(),
            body["sandboxTeamId"].as_str()
        ),
        (Some("pause"), Some("sbx-9"), Some(TEAM))
    );
    assert_eq!(
        first.headers["x-e2b-signature"],
        openssl_hmac_hex("s", &first.body)
    );
    let (code, out, _) = output(emitter().args(["send-test", "--url", &url, "--secret", "s"]));
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("HTTP 200"), "{out}");
    let (code, out, _) = output(emitter().args([
        "send-test",
        "--url",
        &format!("http://127.0.0.1:{}/", free_port()),
        "--secret",
        "s",
    ]));
    assert_eq!(code, 1);
    assert!(out.contains("network error"), "{out}");
}

#[test]
fn bad_configuration_is_one_line_naming_the_setting_and_exit_2() {
    let cases: &[(&[&str], &str)] = &[
        (&["run", "--webhook-secret", "s"], "WEBHOOK_URL"),
        (
            &["run", "--webhook-url", "ftp://x", "--webhook-secret", "s"],
            "WEBHOOK_URL",
        ),
        (
            &["run", "--webhook-url", "http://x", "--webhook-secret", ""],
            "WEBHOOK_SECRET",
        ),
        (
            &[
                "run",
                "--webhook-url",
                "http://x",
                "--webhook-secret",
                "s",
                "--webhook-format",
                "xml",
            ],
            "WEBHOOK_FORMAT",
        ),
        (
            &[
                "run",
                "--webhook-url",
                "http://x",
                "--webhook-secret",
                "s",
                "--webhook-events",
                "explode",
            ],
            "WEBHOOK_EVENTS",
        ),
        (
            &[
                "run",
                "--webhook-url",
                "http://x",
                "--webhook-secret",
                "s",
                "--team-ids",
                "team-1",
            ],
            "E2B_TEAM_IDS",
        ),
        (
            &[
                "run",
                "--webhook-url",
                "http://x",
                "--webhook-secret",
                "s",
                "--redis-url",
                "http://r",
            ],
            "REDIS_URL",
        ),
        (
            &[
                "run",
                "--webhook-url",
                "http://x",
                "--webhook-secret",
                "s",
                "--listen",
                "nowhere",
            ],
            "LISTEN_ADDR",
        ),
        (&["send-test", "--url", "http://x"], "WEBHOOK_SECRET"),
    ];
    for (args, setting) in cases {
        let (code, out, err) = output(emitter().args(*args));
        assert_eq!(code, 2, "{args:?}: {out}{err}");
        let lines: Vec<&str> = err.lines().collect();
        assert_eq!(lines.len(), 1, "{args:?}: {err}");
        assert!(lines[0].contains(setting), "{args:?}: {err}");
    }
    // The secret's value never appears in an error.
    let (_, _, err) = output(emitter().args([
        "run",
        "--webhook-url",
        "ftp://x",
        "--webhook-secret",
        "hunter2-very-secret",
    ]));
    assert!(!err.contains("hunter2"));
    // Environment variables work like flags.
    let (code, _, err) = output(
        emitter()
            .arg("run")
            .env("WEBHOOK_URL", "http://x")
            .env("WEBHOOK_SECRET", "s")
            .env("WEBHOOK_FORMAT", "nope"),
    );
    assert_eq!(code, 2);
    assert!(err.contains("WEBHOOK_FORMAT"), "{err}");
}
