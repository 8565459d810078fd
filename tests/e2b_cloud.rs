//! The `e2b-cloud` format through the real binary: orchestrator-shaped entries on a real Redis
//! stream (empty `event_category` / `event_label`, as the orchestrator writes them) reach three
//! endpoints, one per signature encoding, as byte-exact golden bodies — the payload E2B Cloud
//! sends (e2b-dev/docs PR #197, e2b-dev/dashboard PR #324, e2b-dev/E2B issue #1103) — verified
//! by a receiver transcribed from E2B's current docs.

mod common;
mod support;

use common::{EmitterProcess, emitter, output, wait_until};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};
use support::redis::RedisServer;

const SECRET: &str = "e2b-golden-secret-ü";
const TEAM: &str = "0b8b8a4e-6f4e-4c4a-9a57-3a2f5d3b1c2d";
const OTHER_TEAM: &str = "9d3c1f0e-2a4b-4c6d-8e0f-1a2b3c4d5e6f";
const DOCS_WEBHOOK_ID: &str = "6f1c2d3e-4b5a-4c69-8d7e-0f1a2b3c4d5e";
const DEADLINE: Duration = Duration::from_secs(30);

/// A webhook receiver built from E2B's current docs (e2b-dev/docs
/// `docs/sandbox/lifecycle-events-webhooks.mdx`): `verify_webhook_signature` as printed there
/// checks URL-safe signatures. For the standard alphabet — what E2B Cloud was seen sending
/// (e2b-dev/E2B issue #1103) — the same function without its URL-safe replacement, with and
/// without stripping the padding. It answers 401 to a bad signature and prints each request as
/// a JSON line.
const DOCS_RECEIVER: &str = r#"
import base64, hashlib, json, sys
from http.server import BaseHTTPRequestHandler, HTTPServer

def verify_webhook_signature(secret: str, payload: str, payload_signature: str) -> bool:
    hash_bytes = hashlib.sha256((secret + payload).encode('utf-8')).digest()
    expected_signature = base64.b64encode(hash_bytes).decode('utf-8')
    expected_signature = expected_signature.replace('+', '-').replace('/', '_').rstrip('=')

    return expected_signature == payload_signature

def verify_standard(secret: str, payload: str, payload_signature: str, strip: bool) -> bool:
    hash_bytes = hashlib.sha256((secret + payload).encode('utf-8')).digest()
    expected_signature = base64.b64encode(hash_bytes).decode('utf-8')
    if strip:
        expected_signature = expected_signature.rstrip('=')
    return expected_signature == payload_signature

SECRET = sys.argv[1]

class Handler(BaseHTTPRequestHandler):
    def do_POST(self):
        raw = self.rfile.read(int(self.headers['Content-Length']))
        payload = raw.decode('utf-8')
        signature = self.headers.get('e2b-signature', '')
        if self.path == '/url-safe':
            valid = verify_webhook_signature(SECRET, payload, signature)
        elif self.path == '/standard':
            valid = verify_standard(SECRET, payload, signature, True)
        else:
            valid = verify_standard(SECRET, payload, signature, False)
        print(json.dumps({
            'path': self.path,
            'valid': valid,
            'signature': signature,
            'webhook_id': self.headers.get('e2b-webhook-id'),
            'delivery_id': self.headers.get('e2b-delivery-id'),
            'signature_version': self.headers.get('e2b-signature-version'),
            'body': payload,
        }), flush=True)
        self.send_response(200 if valid else 401)
        self.send_header('Content-Length', '2')
        self.end_headers()
        self.wfile.write(b'ok')

    def log_message(self, *args):
        pass

server = HTTPServer(('127.0.0.1', 0), Handler)
print(server.server_address[1], flush=True)
server.serve_forever()
"#;

/// One event as the orchestrator marshals it (Go struct order, map keys sorted, `<` escaped,
/// category and label empty) and the body E2B Cloud sends for it.
struct Golden {
    stream: String,
    body: String,
}

fn golden() -> Vec<Golden> {
    let head = |id: &str, kind: &str, second: u32| {
        format!(
            r#"{{"id":"{id}","version":"v2","type":"sandbox.lifecycle.{kind}","timestamp":"2026-05-14T10:00:0{second}.123456789Z","#
        )
    };
    let tail = |execution: &str| {
        format!(
            r#""sandbox_id":"isb-golden","sandbox_execution_id":"{execution}","sandbox_template_id":"base","sandbox_build_id":"0f5c1a2b-3c4d-4e5f-8a9b-0c1d2e3f4a5b","sandbox_team_id":"{TEAM}","events_ttl_days":7"#
        )
    };
    let metadata = r#""sandbox_metadata":{"owner":"ada \u003cada@example.com\u003e","run":"42"}"#;
    let execution = r#""execution":{"execution_time":3600000,"memory_mb":512,"started_at":"2026-05-14T09:00:00Z","vcpu_count":2}"#;
    // (id, type suffix, back-filled category and label, event_data, execution id, extra keys)
    type Case<'a> = (
        &'a str,
        &'a str,
        Option<(&'a str, &'a str)>,
        String,
        &'a str,
        &'a str,
    );
    let cases: [Case; 6] = [
        (
            "11111111-1111-4111-8111-111111111111",
            "created",
            Some(("lifecycle", "create")),
            format!("{{{metadata}}}"),
            "exec-1",
            "",
        ),
        (
            "22222222-2222-4222-8222-222222222222",
            "paused",
            Some(("lifecycle", "pause")),
            format!("{{{execution},{metadata}}}"),
            "exec-1",
            "",
        ),
        (
            "33333333-3333-4333-8333-333333333333",
            "resumed",
            Some(("lifecycle", "resume")),
            format!("{{{metadata}}}"),
            "exec-2",
            "",
        ),
        (
            "44444444-4444-4444-8444-444444444444",
            "updated",
            Some(("lifecycle", "update")),
            format!(
                r#"{{"network_egress":{{"allowed_cidrs":["10.0.0.0/8"],"allowed_domains":["example.com"],"denied_cidrs":null}},{metadata},"set_timeout":"2026-05-14T12:00:00Z"}}"#
            ),
            "exec-2",
            "",
        ),
        (
            "55555555-5555-4555-8555-555555555555",
            "checkpointed",
            // migration.go has no legacy pair for checkpointed: the fields stay empty.
            None,
            format!("{{{metadata}}}"),
            "exec-2",
            "",
        ),
        (
            "66666666-6666-4666-8666-666666666666",
            "killed",
            Some(("lifecycle", "kill")),
            format!(r#"{{{execution},"kill_reason":"timeout",{metadata}}}"#),
            "exec-2",
            // A field this version does not know is passed on, after the known ones.
            r#","future_field":{"a":1}"#,
        ),
    ];
    cases
        .iter()
        .enumerate()
        .map(|(i, (id, kind, legacy, data, exec, extra))| {
            let second = i as u32;
            let (category, label) = legacy.unwrap_or(("", ""));
            Golden {
                stream: format!(
                    r#"{}"event_category":"","event_label":"","event_data":{data},{}{extra}}}"#,
                    head(id, kind, second),
                    tail(exec)
                ),
                body: format!(
                    r#"{}"event_category":"{category}","event_label":"{label}","event_data":{data},{}{extra}}}"#,
                    head(id, kind, second),
                    tail(exec)
                ),
            }
        })
        .collect()
}

#[test]
fn orchestrator_entries_arrive_as_e2b_clouds_payload_in_every_signature_encoding() {
    let redis = RedisServer::start();
    let (mut receiver, requests) = start_docs_receiver();
    let port = receiver.port;
    let dir = tempfile::tempdir().unwrap();
    let events = [
        "sandbox.lifecycle.created",
        "sandbox.lifecycle.paused",
        "sandbox.lifecycle.resumed",
        "sandbox.lifecycle.updated",
        "sandbox.lifecycle.checkpointed",
        "sandbox.lifecycle.killed",
    ]
    .map(|t| format!("{t:?}"))
    .join(", ");
    let endpoint = |id: &str, path: &str, extra: &str| {
        format!(
            "[[endpoints]]\nid = \"{id}\"\nurl = \"http://127.0.0.1:{port}/{path}\"\nformat = \"e2b-cloud\"\nsecrets = [\"{SECRET}\"]\nevents = [{events}]\n{extra}"
        )
    };
    let config = [
        endpoint(
            "docs",
            "url-safe",
            &format!("webhook_id = \"{DOCS_WEBHOOK_ID}\"\n"),
        ),
        endpoint("live", "standard", "signature_encoding = \"standard\"\n"),
        endpoint(
            "padded",
            "standard-padded",
            "signature_encoding = \"standard-padded\"\n",
        ),
    ]
    .join("");
    let config_path = dir.path().join("endpoints.toml");
    std::fs::write(&config_path, config).unwrap();
    let log = dir.path().join("emitter.log");
    let mut service = EmitterProcess(
        emitter()
            .args(["run", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(dir.path().join("data"))
            .env("CONFIG_FILE", &config_path)
            .env("REDIS_URL", redis.host_port())
            .env("E2B_TEAM_IDS", TEAM)
            .env("REDIS_CONSUMER", "golden")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap(),
    );
    let mut conn = redis.connection();
    wait_until("the gate key", || {
        service.assert_running(&log);
        redis::cmd("EXISTS")
            .arg(format!("wh:{TEAM}"))
            .query::<bool>(&mut conn)
            .unwrap()
            .then_some(())
    });
    let golden = golden();
    // Another team's event on the same stream (someone else keeps its wh: key): never delivered.
    let foreign = golden[0].stream.replace(TEAM, OTHER_TEAM).replace(
        "11111111-1111-4111-8111-111111111111",
        "77777777-7777-4777-8777-777777777777",
    );
    for (i, case) in golden.iter().enumerate() {
        xadd(&mut conn, &case.stream);
        if i == 2 {
            xadd(&mut conn, &foreign);
        }
    }

    let expected = golden.len() * 3;
    let mut received: Vec<Value> = Vec::new();
    let deadline = Instant::now() + DEADLINE;
    while received.len() < expected {
        service.assert_running(&log);
        receiver.assert_running();
        assert!(
            Instant::now() < deadline,
            "{} of {expected} deliveries; log:\n{}",
            received.len(),
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        if let Ok(line) = requests.recv_timeout(Duration::from_millis(200)) {
            received.push(serde_json::from_str(&line).unwrap());
        }
    }
    // Nothing more arrives: in particular not the other team's event.
    std::thread::sleep(Duration::from_secs(1));
    while let Ok(line) = requests.try_recv() {
        received.push(serde_json::from_str(&line).unwrap());
    }
    assert_eq!(received.len(), expected, "{received:#?}");
    let log_text = std::fs::read_to_string(&log).unwrap();
    assert_eq!(
        log_text
            .matches("teams outside E2B_TEAM_IDS (another")
            .count(),
        1,
        "the skipped team is explained once:\n{log_text}"
    );

    let mut by_path: BTreeMap<String, Vec<&Value>> = BTreeMap::new();
    for request in &received {
        assert_eq!(
            request["valid"], true,
            "the docs' verifier accepts it: {request}"
        );
        assert_eq!(request["signature_version"], "v1");
        by_path
            .entry(request["path"].as_str().unwrap().to_owned())
            .or_default()
            .push(request);
    }
    let webhook_ids: BTreeMap<&str, String> = [
        ("/url-safe", DOCS_WEBHOOK_ID.to_owned()),
        ("/standard", default_webhook_id("live")),
        ("/standard-padded", default_webhook_id("padded")),
    ]
    .into();
    for (path, requests) in &by_path {
        let bodies: Vec<&str> = requests
            .iter()
            .map(|r| r["body"].as_str().unwrap())
            .collect();
        let want: Vec<&str> = golden.iter().map(|g| g.body.as_str()).collect();
        assert_eq!(
            bodies, want,
            "{path}: byte-exact bodies, in the order the orchestrator wrote them"
        );
        let delivery_ids: BTreeSet<&str> = requests
            .iter()
            .map(|r| r["delivery_id"].as_str().unwrap())
            .collect();
        assert_eq!(
            delivery_ids.len(),
            golden.len(),
            "{path}: one delivery id per event"
        );
        for request in requests {
            assert_eq!(request["webhook_id"], webhook_ids[path.as_str()], "{path}");
            let signature = request["signature"].as_str().unwrap();
            match path.as_str() {
                "/url-safe" => assert!(!signature.contains(['+', '/', '='])),
                "/standard" => assert!(!signature.contains(['-', '_', '='])),
                _ => assert!(signature.ends_with('=')),
            }
            // The emitter's own `verify` accepts every encoding.
            let file = dir.path().join("body.json");
            std::fs::write(&file, request["body"].as_str().unwrap()).unwrap();
            let (code, out, err) = output(
                emitter()
                    .args(["verify", "--format", "e2b-cloud", "--secret", SECRET])
                    .args(["--signature", signature])
                    .arg(&file),
            );
            assert_eq!(
                (code, out.trim()),
                (0, "valid"),
                "{path} {signature}: {err}"
            );
        }
    }
    assert_eq!(by_path.len(), 3, "{by_path:?}");
}

#[test]
fn receive_accepts_e2b_cloud_signatures_in_every_encoding() {
    let port = common::free_port();
    let mut receive = EmitterProcess(
        emitter()
            .args(["receive", "--format", "e2b-cloud", "--secret", SECRET])
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    common::wait_for_port(port, Duration::from_secs(10));
    let body = golden().remove(5).body;
    let digest = {
        use sha2::Digest;
        sha2::Sha256::digest([SECRET.as_bytes(), body.as_bytes()].concat())
    };
    use base64::Engine;
    use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE_NO_PAD};
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let post = |signature: &str, body: &str| {
        runtime.block_on(async {
            reqwest::Client::new()
                .post(format!("http://127.0.0.1:{port}/webhooks"))
                .header("e2b-signature", signature)
                .body(body.to_owned())
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        })
    };
    for signature in [
        URL_SAFE_NO_PAD.encode(digest),
        STANDARD_NO_PAD.encode(digest),
        STANDARD.encode(digest),
    ] {
        assert_eq!(post(&signature, &body), 200, "{signature}");
        assert_eq!(post(&signature, &body.replace("timeout", "request")), 401);
    }
    receive.stop();
    let mut printed = String::new();
    std::io::Read::read_to_string(receive.0.stdout.as_mut().unwrap(), &mut printed).unwrap();
    assert_eq!(printed.lines().count(), 3, "{printed}");
    for line in printed.lines() {
        let event: Value = serde_json::from_str(line).unwrap();
        assert_eq!(event["event_label"], "kill");
        assert_eq!(event["event_data"]["kill_reason"], "timeout");
    }
}

fn default_webhook_id(endpoint: &str) -> String {
    e2b_webhook_emitter::deliver::format::default_webhook_id(endpoint).to_string()
}

fn xadd(conn: &mut redis::Connection, payload: &str) {
    let _: String = redis::cmd("XADD")
        .arg("sandbox.events.stream")
        .arg("*")
        .arg("payload")
        .arg(payload)
        .query(conn)
        .unwrap();
}

struct Receiver {
    child: Child,
    port: u16,
}

impl Receiver {
    fn assert_running(&mut self) {
        if let Some(status) = self.child.try_wait().unwrap() {
            panic!("the docs receiver exited with {status}");
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts the Python receiver; its request lines arrive on the channel.
fn start_docs_receiver() -> (Receiver, mpsc::Receiver<String>) {
    let mut child = Command::new("python3")
        .args(["-c", DOCS_RECEIVER, SECRET])
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3 runs");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let port: u16 = lines
        .next()
        .expect("the receiver prints its port")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || forward(lines, tx));
    (Receiver { child, port }, rx)
}

fn forward(lines: std::io::Lines<BufReader<ChildStdout>>, tx: mpsc::Sender<String>) {
    for line in lines.map_while(Result::ok) {
        if tx.send(line).is_err() {
            return;
        }
    }
}

#[test]
fn send_test_takes_e2bs_type_names_and_sends_e2b_clouds_shape() {
    let (port, requests) = common::capture_server(Vec::new());
    let (code, out, err) = output(emitter().args([
        "send-test",
        "--url",
        &format!("http://127.0.0.1:{port}/hook"),
        "--secret",
        SECRET,
        "--format",
        "e2b-cloud",
        "--webhook-signature-encoding",
        "standard-padded",
        "--event",
        "sandbox.lifecycle.paused",
        "--team-id",
        TEAM,
    ]));
    assert_eq!(code, 0, "{out}{err}");
    let request = requests.recv_timeout(DEADLINE).unwrap();
    let body: Value = serde_json::from_slice(&request.body).unwrap();
    assert_eq!(body["type"], "sandbox.lifecycle.paused");
    assert_eq!(
        (&body["event_category"], &body["event_label"]),
        (&Value::from("lifecycle"), &Value::from("pause"))
    );
    assert_eq!(body["sandbox_team_id"], TEAM);
    assert!(request.headers["e2b-signature"].ends_with('='));
    let (code, _, err) = output(emitter().args([
        "send-test",
        "--url",
        &format!("http://127.0.0.1:{port}/hook"),
        "--secret",
        SECRET,
        "--event",
        "sandbox.lifecycle.exploded!",
    ]));
    assert_eq!(code, 2, "{err}");
    assert!(err.starts_with("error: --event"), "{err}");
}
