//! The README's curl + openssl signature test runs as written against `receive`.

mod common;

use std::process::Command;

fn readme_block(name: &str) -> String {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let begin = format!("<!-- {name}:begin -->");
    let end = format!("<!-- {name}:end -->");
    let start = readme.find(&begin).expect("begin marker") + begin.len();
    let stop = readme.find(&end).expect("end marker");
    let block = &readme[start..stop];
    let code = block
        .trim()
        .strip_prefix("```bash")
        .expect("a bash fence")
        .strip_suffix("```")
        .expect("closing fence");
    code.to_owned()
}

#[test]
fn readme_curl_signature_test_runs_as_written() {
    let script = readme_block("signature-test");
    assert!(
        script.contains("openssl dgst -sha256 -hmac"),
        "the block is seed 000's test"
    );
    let bin_dir = common::binary().parent().unwrap().to_owned();
    let path = format!("{}:{}", bin_dir.display(), std::env::var("PATH").unwrap());
    let out = Command::new("bash")
        .arg("-c")
        .arg(&script)
        .env("PATH", path)
        .env_remove("WEBHOOK_SECRET")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(
        stdout.contains(r#"{"success":true}"#),
        "accepted request: {stdout}\n{stderr}"
    );
    assert!(
        stdout.lines().any(|l| l.trim() == "401"),
        "tampered request must be refused: {stdout}"
    );
    let printed: Vec<serde_json::Value> = stdout
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .filter(|v: &serde_json::Value| v.get("sandboxId").is_some())
        .collect();
    assert_eq!(
        printed.len(),
        1,
        "exactly the accepted event is printed by the receiver: {stdout}"
    );
    assert_eq!(printed[0]["eventLabel"], "kill");
    assert_eq!(printed[0]["sandboxId"], "test-123");
}
