//! A webhook receiver built on the signature check printed in E2B's current docs, and
//! orchestrator-shaped stream entries, for the registered-webhook tests.
#![allow(dead_code)] // each test crate uses a different subset

use serde_json::{Value, json};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// A receiver built on `verify_webhook_signature` exactly as e2b-dev/docs
/// `docs/sandbox/lifecycle-events-webhooks.mdx` prints it; the secret is chosen by the path
/// (one per registered webhook). Prints each request as a JSON line.
const DOCS_RECEIVER: &str = r#"
import base64, hashlib, json, sys
from http.server import BaseHTTPRequestHandler, HTTPServer

def verify_webhook_signature(secret: str, payload: str, payload_signature: str) -> bool:
    hash_bytes = hashlib.sha256((secret + payload).encode('utf-8')).digest()
    expected_signature = base64.b64encode(hash_bytes).decode('utf-8')
    expected_signature = expected_signature.replace('+', '-').replace('/', '_').rstrip('=')

    return expected_signature == payload_signature

SECRETS = json.loads(sys.argv[1])
SEEN = set()

class Handler(BaseHTTPRequestHandler):
    def do_POST(self):
        raw = self.rfile.read(int(self.headers['Content-Length']))
        payload = raw.decode('utf-8')
        valid = verify_webhook_signature(SECRETS.get(self.path, ''), payload, self.headers.get('e2b-signature', ''))
        # /flaky and /dashboard answer 503 to the first attempt of each event.
        if self.path in ('/flaky', '/dashboard') and payload not in SEEN:
            SEEN.add(payload)
            self.send_response(503)
            self.send_header('Content-Length', '0')
            self.end_headers()
            return
        print(json.dumps({
            'path': self.path,
            'valid': valid,
            'webhook_id': self.headers.get('e2b-webhook-id'),
            'signature': self.headers.get('e2b-signature'),
            'body': json.loads(payload),
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

pub const SECRET_A: &str = "alpha-webhook-secret-1f2e3d";
pub const SECRET_B: &str = "beta-webhook-secret-9a8b7c6d";
/// At least 32 characters, as E2B's dashboard requires of a secret it generates or accepts.
pub const SECRET_DASHBOARD: &str = "dashboard-webhook-secret-0123456789abcdef";

pub struct Receiver {
    child: Child,
    pub port: u16,
    lines: mpsc::Receiver<Value>,
}

impl Receiver {
    pub fn start() -> Self {
        let secrets = json!({
            "/a": SECRET_A, "/b": SECRET_B, "/flaky": SECRET_A, "/dashboard": SECRET_DASHBOARD,
        })
        .to_string();
        let mut child = Command::new("python3")
            .args(["-c", DOCS_RECEIVER, &secrets])
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3 runs");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let port = lines.next().unwrap().unwrap().trim().parse().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                if tx.send(serde_json::from_str(&line).unwrap()).is_err() {
                    return;
                }
            }
        });
        Self {
            child,
            port,
            lines: rx,
        }
    }

    /// Every request that arrives within `wait`.
    pub fn collect(&self, count: usize, wait: Duration) -> Vec<Value> {
        let deadline = Instant::now() + wait;
        let mut got = Vec::new();
        while got.len() < count && Instant::now() < deadline {
            if let Ok(request) = self.lines.recv_timeout(Duration::from_millis(100)) {
                got.push(request);
            }
        }
        got
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An orchestrator-shaped entry (empty category and label, as the orchestrator writes them).
pub fn xadd(conn: &mut redis::Connection, id: &str, kind: &str, sandbox: &str, team: &str) {
    let payload = json!({
        "id": id,
        "version": "v2",
        "type": format!("sandbox.lifecycle.{kind}"),
        "timestamp": "2026-11-26T10:00:00.123456789Z",
        "event_category": "",
        "event_label": "",
        "event_data": null,
        "sandbox_id": sandbox,
        "sandbox_execution_id": "exec-1",
        "sandbox_template_id": "base",
        "sandbox_build_id": "0f5c1a2b-3c4d-4e5f-8a9b-0c1d2e3f4a5b",
        "sandbox_team_id": team,
    });
    let _: String = redis::cmd("XADD")
        .arg("sandbox.events.stream")
        .arg("*")
        .arg("payload")
        .arg(payload.to_string())
        .query(conn)
        .unwrap();
}

pub fn gate_exists(conn: &mut redis::Connection, team: &str) -> bool {
    redis::cmd("EXISTS")
        .arg(format!("wh:{team}"))
        .query::<bool>(conn)
        .unwrap()
}
