//! Issue 14, finding 7: an input set aside as malformed keeps its original bytes — as text when
//! it is UTF-8, in base64 when it is not — and a non-UTF-8 line does not stop the file source.

mod common;

use base64::Engine;
use common::{TestReceiver, emitter, lifecycle_ndjson, output};
use std::io::Write;
use std::sync::Arc;

const SECRET: &str = "set-aside-secret-77aa66bb";

#[test]
fn binary_and_text_inputs_are_kept_byte_for_byte() {
    let dir = tempfile::tempdir().unwrap();
    let (events, _) = lifecycle_ndjson(2, 2);
    let binary: &[u8] = b"\xff\xfe{\"id\":\x00\x80 not utf-8";
    let text = "{oops ünïcode";
    let mut input = Vec::new();
    let mut lines = events.lines();
    input.extend_from_slice(lines.next().unwrap().as_bytes());
    input.push(b'\n');
    input.extend_from_slice(binary);
    input.push(b'\n');
    input.extend_from_slice(text.as_bytes());
    input.push(b'\n');
    for line in lines {
        input.extend_from_slice(line.as_bytes());
        input.push(b'\n');
    }
    let receiver = TestReceiver::start(0, SECRET, Arc::new(|_: &str, _: &str, _: u32| 200));
    let data = dir.path().join("data");
    let mut child = emitter()
        .args(["backfill", "--webhook-secret", SECRET, "--webhook-url"])
        .arg(format!("http://127.0.0.1:{}/hook", receiver.port))
        .arg("--data-dir")
        .arg(&data)
        .arg("-")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(&input).unwrap();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(1),
        "malformed lines: exit 1: {stderr}"
    );
    // The line after the binary one was still read: all four events were delivered.
    assert_eq!(receiver.deliveries().len(), 4, "{stderr}");

    let (code, listed, err) = output(
        emitter()
            .args(["dead-letters", "list", "--json", "--data-dir"])
            .arg(&data),
    );
    assert_eq!(code, 0, "{err}");
    let letters: Vec<serde_json::Value> = listed
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(letters.len(), 2, "{listed}");
    let kept = letters
        .iter()
        .find(|l| l["position"] == "line 2")
        .expect("the binary line");
    assert!(kept["raw"].is_null(), "{kept}");
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(kept["raw_base64"].as_str().unwrap())
        .unwrap();
    assert_eq!(bytes, binary);
    let kept = letters
        .iter()
        .find(|l| l["position"] == "line 3")
        .expect("the text line");
    assert_eq!(kept["raw"], text);
    assert!(kept["raw_base64"].is_null(), "{kept}");

    // `dead-letters list --json | head -1`: the reader goes away; the command ends quietly.
    let mut child = emitter()
        .args(["dead-letters", "list", "--json", "--data-dir"])
        .arg(&data)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("Broken pipe"), "{stderr}");
}
