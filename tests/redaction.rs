//! Issue 14, finding 4: a credential in a URL is found on no output surface — logs, `/status`,
//! `/readyz`, `/metrics`, `status`, `dead-letters list`, `send-test`, configuration errors, `--help`.

mod common;

use common::{
    RunningEmitter, capture_server, emitter, eventually, free_port, http_get, output, wait_for_port,
};
use std::time::Duration;

const TOKEN: &str = "tok3n-9f8e7d6c5b4a";
const PASSWORD: &str = "pa55w0rd-1a2b3c4d";
const SECRET: &str = "redaction-secret-0f1e2d3c4b5a";

fn assert_clean(surface: &str, text: &str) {
    for needle in [TOKEN, PASSWORD, SECRET] {
        assert!(
            !text.contains(needle),
            "{surface} shows {needle:?}:\n{text}"
        );
    }
}

/// A receiver refusing with 500, and a port nobody listens on (a network error).
fn hostile_urls() -> (String, String) {
    let (port, _requests) = capture_server(vec![(500, "no"); 1000]);
    std::mem::forget(_requests);
    let refused = free_port();
    (
        format!("http://user:{PASSWORD}@127.0.0.1:{port}/hook?token={TOKEN}"),
        format!("http://127.0.0.1:{refused}/down?token={TOKEN}"),
    )
}

#[test]
fn a_token_in_a_url_is_found_on_no_output_surface() {
    let dir = tempfile::tempdir().unwrap();
    let (rejecting, refused) = hostile_urls();
    let data = dir.path().join("d");
    let events = dir.path().join("events.ndjson");
    std::fs::write(&events, common::lifecycle_ndjson(2, 2).0).unwrap();
    let config = dir.path().join("c.toml");
    std::fs::write(
        &config,
        format!(
            "[[endpoints]]\nid = \"down\"\nurl = \"{refused}\"\nsecrets = [\"{SECRET}\"]\n\n\
             [retry]\nschedule = [\"100ms\"]\nmax_age = \"1s\"\n"
        ),
    )
    .unwrap();
    let nomad = format!(
        "http://nomad:{PASSWORD}@127.0.0.1:{}/?token={TOKEN}",
        free_port()
    );
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let mut running = RunningEmitter::start(
        &[
            "--config",
            config.to_str().unwrap(),
            "--webhook-url",
            &rejecting,
            "--webhook-secret",
            SECRET,
            "--data-dir",
            data.to_str().unwrap(),
            "--events-file",
            events.to_str().unwrap(),
            "--nomad-addr",
            &nomad,
            "--listen",
            &listen,
        ],
        dir.path().join("log"),
    );
    wait_for_port(port, Duration::from_secs(10));
    // Every event is dead-lettered on both endpoints: last errors are an HTTP 500 and a refusal.
    assert!(
        eventually(Duration::from_secs(30), || {
            let (_, status) = http_get(port, "/status");
            serde_json::from_str::<serde_json::Value>(&status)
                .map(|s| s["dead_letters"] == 8)
                .unwrap_or(false)
        }),
        "{}",
        running.log_text()
    );
    for path in ["/status", "/readyz", "/metrics", "/healthz"] {
        let (code, body) = http_get(port, path);
        assert_ne!(code, 0, "{path}");
        assert_clean(path, &body);
    }
    running.signal(nix::sys::signal::Signal::SIGTERM);
    running.child.wait().unwrap();
    let log = running.log_text();
    assert!(
        log.contains("127.0.0.1") && log.contains("?***"),
        "the log names the endpoint, redacted:\n{log}"
    );
    assert_clean("the service's log", &log);

    let data_dir = data.to_str().unwrap();
    for args in [
        vec!["status", "--data-dir", data_dir],
        vec!["status", "--json", "--data-dir", data_dir],
        vec!["dead-letters", "list", "--data-dir", data_dir],
        vec!["dead-letters", "list", "--json", "--data-dir", data_dir],
    ] {
        let (code, out, err) = output(emitter().args(&args));
        assert_eq!(code, 0, "{args:?}: {err}");
        assert_clean(&format!("{args:?}"), &(out + &err));
    }

    for url in [&rejecting, &refused] {
        let (code, out, err) = output(
            emitter()
                .args(["send-test", "--url", url, "--secret", SECRET])
                .args(["--webhook-timeout", "2s"]),
        );
        assert_eq!(code, 1, "{out}{err}");
        assert!(out.contains("POST http://"), "{out}");
        assert_clean("send-test", &(out + &err));
    }
}

#[test]
fn rejected_settings_and_help_never_repeat_a_credential() {
    for bad in [
        format!("http://user:{PASSWORD}@[::1/hook?token={TOKEN}"),
        format!("ftp://user:{PASSWORD}@example.com/hook?token={TOKEN}"),
    ] {
        let (code, out, err) = output(
            emitter()
                .args(["send-test", "--secret", SECRET])
                .env("WEBHOOK_URL", &bad),
        );
        assert_eq!(code, 2, "{out}{err}");
        assert!(err.contains("WEBHOOK_URL"), "{err}");
        assert_clean("a rejected WEBHOOK_URL", &(out + &err));
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("c.toml");
        std::fs::write(
            &config,
            format!("[[endpoints]]\nid = \"x\"\nurl = \"{bad}\"\nsecrets = [\"s\"]\n"),
        )
        .unwrap();
        let (code, out, err) =
            output(emitter().args(["run", "--config", config.to_str().unwrap()]));
        assert_eq!(code, 2, "{out}{err}");
        assert!(err.contains("endpoints[0].url"), "{err}");
        assert_clean("a rejected endpoints[].url", &(out + &err));
    }

    let url = format!("https://user:{PASSWORD}@hooks.example.com/e2b?token={TOKEN}");
    let redis = format!("redis://:{PASSWORD}@redis.internal:6379/0");
    for sub in [
        "run",
        "send-test",
        "receive",
        "sign",
        "verify",
        "backfill",
        "status",
    ] {
        let (code, out, err) = output(
            emitter()
                .args([sub, "--help"])
                .env("WEBHOOK_URL", &url)
                .env("WEBHOOK_SECRET", SECRET)
                .env("REDIS_URL", &redis)
                .env("REDIS_CLUSTER_URL", &redis)
                .env("NOMAD_ADDR", &url)
                .env("NOMAD_TOKEN", TOKEN),
        );
        assert_eq!(code, 0, "{sub}: {err}");
        assert_clean(&format!("{sub} --help"), &(out + &err));
    }
}

/// Every setting whose value can hold a credential hides it in `--help`; a new URL, secret,
/// token or password setting fails here until it does too.
#[test]
fn every_url_and_secret_setting_hides_its_environment_value() {
    use clap::CommandFactory;
    fn walk(cmd: &clap::Command, checked: &mut Vec<String>) {
        for arg in cmd.get_arguments() {
            let Some(env) = arg.get_env() else { continue };
            let env = env.to_string_lossy().into_owned();
            let sensitive = [
                "URL",
                "SECRET",
                "TOKEN",
                "PASSWORD",
                "ADDR",
                "CONNECTION",
                "ENDPOINT",
            ]
            .iter()
            .any(|word| env.contains(word))
                && env != "LISTEN_ADDR"
                && env != "API_LISTEN_ADDR";
            if sensitive {
                assert!(
                    arg.is_hide_env_values_set(),
                    "{} of `{}` shows its environment value in --help",
                    env,
                    cmd.get_name()
                );
                checked.push(env);
            }
        }
        for sub in cmd.get_subcommands() {
            walk(sub, checked);
        }
    }
    let mut checked = Vec::new();
    walk(&e2b_webhook_emitter::cli::Cli::command(), &mut checked);
    for expected in [
        "WEBHOOK_URL",
        "WEBHOOK_SECRET",
        "REDIS_URL",
        "NOMAD_ADDR",
        "NOMAD_TOKEN",
    ] {
        assert!(
            checked.iter().any(|e| e == expected),
            "{expected} not checked"
        );
    }
}
