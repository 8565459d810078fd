//! `https://` endpoints signed by a private CA: `WEBHOOK_CA_FILE` / `--webhook-ca-file` for the
//! endpoint of `WEBHOOK_URL`, `ca_file` per `[[endpoints]]`. Real sockets: the emitter's rustls
//! client, a TLS terminator with an `rcgen`-made certificate, and the signature-checking receiver.

mod common;
mod support;

use common::{RunningEmitter, TestReceiver, emitter, eventually, lifecycle_ndjson, output};
use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use support::tls::{PrivateCa, TlsTerminator};

const SECRET: &str = "https-test-secret-0123456789abcdef";

/// Distinct event ids answered 2xx on `path`.
fn delivered_on(receiver: &TestReceiver, path: &str) -> HashSet<String> {
    receiver
        .deliveries()
        .into_iter()
        .filter(|d| d.path == path)
        .map(|d| d.event_id)
        .collect()
}

/// The emitter's JSON log lines about failed attempts of `endpoint`: (attempt, error).
fn failed_attempts(log: &str, endpoint: &str) -> Vec<(u64, String)> {
    log.lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|v| v["message"] == "delivery failed; will retry" && v["endpoint"] == endpoint)
        .map(|v| {
            (
                v["attempt"].as_u64().unwrap_or(0),
                v["error"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

#[test]
fn a_private_ca_is_trusted_by_the_endpoints_configured_with_it_and_by_no_other() {
    let dir = tempfile::tempdir().unwrap();
    let receiver = TestReceiver::start(0, SECRET, Arc::new(|_: &str, _: &str, _: u32| 200));
    let ca = PrivateCa::new("emitter test CA");
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, ca.pem()).unwrap();
    let tls = TlsTerminator::start(receiver.port, ca.server_config([127, 0, 0, 1].into()));
    let base = format!("https://127.0.0.1:{}", tls.port);

    let (events, order) = lifecycle_ndjson(4, 3);
    let expected: HashSet<String> = order.into_values().flatten().collect();
    let events_file = dir.path().join("events.ndjson");
    std::fs::write(&events_file, events).unwrap();
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        format!(
            "[retry]\nschedule = [\"100ms\"]\nmax_age = \"1h\"\n\
             [[endpoints]]\nid = \"file\"\nurl = \"{base}/file\"\nsecrets = [\"{SECRET}\"]\nca_file = {ca:?}\n\
             [[endpoints]]\nid = \"untrusting\"\nurl = \"{base}/untrusting\"\nsecrets = [\"{SECRET}\"]\n",
            ca = ca_file.display().to_string()
        ),
    )
    .unwrap();
    let data = dir.path().join("data");
    let running = RunningEmitter::start(
        &[
            "--log-format",
            "json",
            "--webhook-url",
            &format!("{base}/flag"),
            "--webhook-secret",
            SECRET,
            "--webhook-ca-file",
            ca_file.to_str().unwrap(),
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

    let all_arrived = eventually(Duration::from_secs(60), || {
        delivered_on(&receiver, "/flag") == expected && delivered_on(&receiver, "/file") == expected
    });
    assert!(
        all_arrived,
        "every event reaches both endpoints that trust the CA (flag: {}, file: {} of {}); log: {}",
        delivered_on(&receiver, "/flag").len(),
        delivered_on(&receiver, "/file").len(),
        expected.len(),
        running.log_text()
    );
    assert!(receiver.deliveries().iter().all(|d| d.signature_ok));

    // The endpoint without the CA fails its handshakes, and each failure is retried.
    let retried = eventually(Duration::from_secs(30), || {
        failed_attempts(&running.log_text(), "untrusting")
            .iter()
            .any(|(attempt, _)| *attempt >= 3)
    });
    let failures = failed_attempts(&running.log_text(), "untrusting");
    assert!(
        retried,
        "attempts to the untrusting endpoint fail and are retried: {failures:?}; log: {}",
        running.log_text()
    );
    assert!(
        failures
            .iter()
            .all(|(_, error)| error.contains("network error") && error.contains("certificate")),
        "they fail on the server's certificate: {failures:?}"
    );
    assert!(delivered_on(&receiver, "/untrusting").is_empty());
    assert!(
        !receiver
            .deliveries()
            .iter()
            .any(|d| d.path == "/untrusting"),
        "nothing reached the receiver through an untrusted handshake"
    );
    assert!(tls.failed_handshakes.load(Ordering::SeqCst) >= 3);
    assert!(tls.handshakes.load(Ordering::SeqCst) >= 1);

    // `send-test` reads the same setting.
    let send_test = |ca_file: Option<&std::path::Path>| {
        let mut command = emitter();
        command.args([
            "send-test",
            "--url",
            &format!("{base}/send-test"),
            "--secret",
            SECRET,
        ]);
        if let Some(file) = ca_file {
            command.arg("--webhook-ca-file").arg(file);
        }
        output(&mut command)
    };
    let (code, out, err) = send_test(None);
    assert_eq!(code, 1, "{out}{err}");
    assert!(out.contains("certificate"), "{out}");
    assert!(delivered_on(&receiver, "/send-test").is_empty());
    let (code, out, err) = send_test(Some(&ca_file));
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(delivered_on(&receiver, "/send-test").len(), 1);
    assert!(receiver.deliveries().iter().all(|d| d.signature_ok));
}

#[test]
fn a_ca_file_that_cannot_be_used_is_one_line_naming_the_setting_and_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path.display().to_string()
    };
    let missing = dir.path().join("missing.pem").display().to_string();
    let not_pem = write("notes.txt", "this is not a certificate\n");
    let key_only = write(
        "key.pem",
        "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
    );
    let config = |ca_file: &str| {
        write(
            "config.toml",
            &format!(
                "[[endpoints]]\nid = \"a\"\nurl = \"https://127.0.0.1:1/x\"\nsecrets = [\"s\"]\nca_file = {ca_file:?}\n"
            ),
        )
    };
    let data = dir.path().join("data").display().to_string();
    for (file, why) in [
        (&missing, "cannot read"),
        (&not_pem, "holds no certificate"),
        (&key_only, "holds no certificate"),
    ] {
        // The flag, the environment variable and the config file's field.
        let by_flag = output(emitter().args([
            "run",
            "--webhook-url",
            "https://127.0.0.1:1/x",
            "--webhook-secret",
            "s",
            "--webhook-ca-file",
            file,
            "--data-dir",
            &data,
        ]));
        let by_env = output(
            emitter()
                .args(["run", "--data-dir", &data])
                .env("WEBHOOK_URL", "https://127.0.0.1:1/x")
                .env("WEBHOOK_SECRET", "s")
                .env("WEBHOOK_CA_FILE", file),
        );
        let by_file =
            output(emitter().args(["run", "--config", &config(file), "--data-dir", &data]));
        for ((code, out, err), setting) in [
            (by_flag, "WEBHOOK_CA_FILE (--webhook-ca-file)"),
            (by_env, "WEBHOOK_CA_FILE (--webhook-ca-file)"),
            (by_file, "endpoints[0].ca_file"),
        ] {
            assert_eq!(code, 2, "{file}: {out}{err}");
            let lines: Vec<&str> = err.lines().collect();
            assert_eq!(lines.len(), 1, "{file}: {err}");
            assert!(lines[0].contains(setting), "{file}: {err}");
            assert!(lines[0].contains(why), "{file}: {err}");
            assert!(lines[0].contains(file.as_str()), "{file}: {err}");
        }
    }
}
