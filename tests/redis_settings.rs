//! The orchestrator's own Redis environment, copied unchanged, through the real binary against a
//! real `redis-server`: the shapes E2B deploys (e2b-dev/infra `iac/provider-{gcp,aws}/main.tf`,
//! `packages/shared/pkg/factories/redis.go`) and the contradictions that must stop startup.

mod common;
mod support;

use common::{CapturedRequest, EmitterProcess, capture_server, emitter, wait_until};
use serde_json::json;
use std::collections::BTreeSet;
use std::process::Stdio;
use std::sync::mpsc;
use std::time::{Duration, Instant};
use support::redis::{RedisOptions, RedisServer};

const SECRET: &str = "whk-settings-secret";
const TEAM: &str = "0b8b8a4e-6f4e-4c4a-9a57-3a2f5d3b1c2d";
const DEADLINE: Duration = Duration::from_secs(30);

/// The orchestrator's Redis variables, exactly as a Nomad job would set them (empty ones included).
struct OrchestratorEnv {
    redis_url: String,
    redis_cluster_url: String,
    tls_enabled: &'static str,
    ca_base64: String,
    password: Option<String>,
}

impl OrchestratorEnv {
    fn vars(&self) -> Vec<(&'static str, String)> {
        let mut vars = vec![
            ("REDIS_URL", self.redis_url.clone()),
            ("REDIS_CLUSTER_URL", self.redis_cluster_url.clone()),
            ("REDIS_TLS_ENABLED", self.tls_enabled.to_owned()),
            ("REDIS_TLS_CA_BASE64", self.ca_base64.clone()),
        ];
        if let Some(password) = &self.password {
            vars.push(("REDIS_PASSWORD", password.clone()));
        }
        vars
    }
}

fn ca_base64(redis: &RedisServer) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(redis.tls_ca_pem())
}

#[test]
fn the_self_managed_shape_a_bare_host_port_without_tls() {
    let redis = RedisServer::start();
    // AWS without managed Redis: REDIS_URL=redis.service.consul:6379, TLS "false", no cluster.
    delivers_orchestrator_events(
        &redis,
        OrchestratorEnv {
            redis_url: redis.host_port(),
            redis_cluster_url: String::new(),
            tls_enabled: "false",
            ca_base64: String::new(),
            password: None,
        },
    );
}

#[test]
fn a_bare_host_port_with_tls_a_private_ca_and_redis_password() {
    let password = "azure-access-key-Zq7";
    let redis = RedisServer::start_with(RedisOptions {
        tls: true,
        password: Some(password.to_owned()),
        ..RedisOptions::default()
    });
    let logs = delivers_orchestrator_events(
        &redis,
        OrchestratorEnv {
            redis_url: redis.host_port(),
            redis_cluster_url: String::new(),
            tls_enabled: "true",
            ca_base64: ca_base64(&redis),
            password: Some(password.to_owned()),
        },
    );
    assert!(
        !logs.contains(password),
        "REDIS_PASSWORD must never be logged"
    );
}

#[test]
fn the_gcp_shape_a_cluster_node_over_tls_with_a_private_ca() {
    let redis = RedisServer::start_with(RedisOptions {
        cluster: true,
        tls: true,
        ..RedisOptions::default()
    });
    // GCP with managed Redis: REDIS_URL empty, REDIS_CLUSTER_URL=<ip>:<port>, TLS and its CA.
    delivers_orchestrator_events(
        &redis,
        OrchestratorEnv {
            redis_url: String::new(),
            redis_cluster_url: redis.host_port(),
            tls_enabled: "true",
            ca_base64: ca_base64(&redis),
            password: None,
        },
    );
}

#[test]
fn a_cluster_node_over_tls_with_redis_password() {
    let password = "cluster-access-key-4Rt";
    let redis = RedisServer::start_with(RedisOptions {
        cluster: true,
        tls: true,
        password: Some(password.to_owned()),
        ..RedisOptions::default()
    });
    let logs = delivers_orchestrator_events(
        &redis,
        OrchestratorEnv {
            redis_url: String::new(),
            redis_cluster_url: redis.host_port(),
            tls_enabled: "true",
            ca_base64: ca_base64(&redis),
            password: Some(password.to_owned()),
        },
    );
    assert!(
        !logs.contains(password),
        "REDIS_PASSWORD must never be logged"
    );
}

#[test]
fn a_plaintext_cluster_node_as_a_bare_host_port() {
    let redis = RedisServer::start_with(RedisOptions {
        cluster: true,
        ..RedisOptions::default()
    });
    delivers_orchestrator_events(
        &redis,
        OrchestratorEnv {
            redis_url: String::new(),
            redis_cluster_url: redis.host_port(),
            tls_enabled: "",
            ca_base64: String::new(),
            password: None,
        },
    );
}

#[test]
fn contradictory_settings_exit_2_with_one_line_naming_the_setting() {
    let cases: [(&[(&str, &str)], &str); 6] = [
        (
            &[
                ("REDIS_URL", "redis://10.0.0.5:6379"),
                ("REDIS_TLS_ENABLED", "true"),
            ],
            "REDIS_URL",
        ),
        (
            &[
                ("REDIS_CLUSTER_URL", "rediss://10.0.0.5:6379"),
                ("REDIS_TLS_ENABLED", "false"),
            ],
            "REDIS_TLS_ENABLED",
        ),
        (
            &[
                ("REDIS_URL", "10.0.0.5:6379"),
                (
                    "REDIS_TLS_CA_BASE64",
                    "LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0tCg==",
                ),
            ],
            "REDIS_TLS_CA_BASE64",
        ),
        (
            &[
                ("REDIS_URL", "10.0.0.5:6379"),
                ("REDIS_PASSWORD", "pw-never-printed"),
            ],
            "REDIS_PASSWORD",
        ),
        (
            &[("REDIS_URL", "10.0.0.5:6379"), ("REDIS_TLS_ENABLED", "yes")],
            "REDIS_TLS_ENABLED",
        ),
        (
            &[
                ("REDIS_URL", "10.0.0.5:6379"),
                ("REDIS_TLS_ENABLED", "true"),
                ("REDIS_TLS_CA_BASE64", "bm8gY2VydGlmaWNhdGUgaGVyZQ=="),
            ],
            "REDIS_TLS_CA_BASE64",
        ),
    ];
    let data = tempfile::tempdir().unwrap();
    for (vars, setting) in cases {
        let output = emitter()
            .args(["run", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(data.path())
            .env("WEBHOOK_URL", "http://127.0.0.1:9/hook")
            .env("WEBHOOK_SECRET", SECRET)
            .envs(vars.iter().copied())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{vars:?}: {stderr}");
        let lines: Vec<&str> = stderr.lines().collect();
        assert_eq!(lines.len(), 1, "{vars:?}: one line, got {stderr}");
        assert!(
            lines[0].starts_with(&format!("error: {setting} ")),
            "{vars:?} must name {setting}: {stderr}"
        );
        assert!(!stderr.contains("pw-never-printed"), "{stderr}");
    }
}

/// Starts the emitter with only `env` for Redis, writes orchestrator-shaped events, and checks
/// that every one is delivered; returns the emitter's log.
fn delivers_orchestrator_events(redis: &RedisServer, env: OrchestratorEnv) -> String {
    let (port, requests) = capture_server(Vec::new());
    let data = tempfile::tempdir().unwrap();
    let log = data.path().join("emitter.log");
    let mut emitter = EmitterProcess(
        emitter()
            .args(["run", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(data.path().join("data"))
            .env("WEBHOOK_URL", format!("http://127.0.0.1:{port}/hook"))
            .env("WEBHOOK_SECRET", SECRET)
            .env("E2B_TEAM_IDS", TEAM)
            .env("REDIS_CONSUMER", "settings-test")
            .envs(env.vars())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap(),
    );
    let mut conn = redis.connection();
    let gate = format!("wh:{TEAM}");
    wait_until("the gate key", || {
        emitter.assert_running(&log);
        redis::cmd("EXISTS")
            .arg(&gate)
            .query::<bool>(&mut conn)
            .unwrap()
            .then_some(())
    });
    let mut written = BTreeSet::new();
    for (i, kind) in ["created", "paused", "resumed", "killed"]
        .iter()
        .enumerate()
    {
        let id = uuid::Uuid::new_v4().to_string();
        // As the orchestrator marshals a v2 event: category and label empty.
        let event = json!({
            "id": id,
            "version": "v2",
            "type": format!("sandbox.lifecycle.{kind}"),
            "timestamp": format!("2026-05-14T10:00:0{i}.123456789Z"),
            "event_category": "",
            "event_label": "",
            "sandbox_id": "isb-settings",
            "sandbox_execution_id": "exec-1",
            "sandbox_template_id": "base",
            "sandbox_build_id": "build-1",
            "sandbox_team_id": TEAM,
        });
        let _: String = redis::cmd("XADD")
            .arg("sandbox.events.stream")
            .arg("*")
            .arg("payload")
            .arg(event.to_string())
            .query(&mut conn)
            .unwrap();
        written.insert(id);
    }
    let received = receive_ids(&requests, written.len(), &mut emitter, &log);
    assert_eq!(received, written);
    std::fs::read_to_string(&log).unwrap()
}

fn receive_ids(
    requests: &mpsc::Receiver<CapturedRequest>,
    count: usize,
    emitter: &mut EmitterProcess,
    log: &std::path::Path,
) -> BTreeSet<String> {
    let mut ids = BTreeSet::new();
    let deadline = Instant::now() + DEADLINE;
    while ids.len() < count {
        emitter.assert_running(log);
        assert!(
            Instant::now() < deadline,
            "only {} of {count} events arrived; log:\n{}",
            ids.len(),
            std::fs::read_to_string(log).unwrap_or_default()
        );
        if let Ok(request) = requests.recv_timeout(Duration::from_millis(200)) {
            let body: serde_json::Value = serde_json::from_slice(&request.body).unwrap();
            ids.insert(body["id"].as_str().unwrap().to_owned());
        }
    }
    ids
}
