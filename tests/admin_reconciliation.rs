//! Issue 16: the reconciliation panel's data (`/admin/v1/reconciliation`) through the binary,
//! against the Nomad 1.8 and orchestrator stand-ins: the orchestrators known, the last run and
//! what it synthesized.

mod common;
mod support;

use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;
use support::nomad_standin::{AllocSpec, NomadOptions, NomadStandin, workload_identity_jwt};
use support::orchestrator_standin::{OrchestratorStandin, sandbox};

const TEAM: &str = "0b8b8a4e-6f4e-4c4a-9a57-3a2f5d3b1c2d";
const TOKEN: &str = "reconcile-admin-token-2c4e6a8b";

fn reconciliation(listen: &str) -> Value {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let response = reqwest::Client::new()
            .get(format!("http://{listen}/admin/v1/reconciliation"))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        serde_json::from_str(&response.text().await.unwrap()).unwrap()
    })
}

#[test]
fn the_reconciliation_panel_shows_orchestrators_the_last_run_and_its_findings() {
    const SECRET: &str = "reconcile-admin-secret";
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let nomad = runtime.block_on(NomadStandin::start(NomadOptions::nomad_1_8()));
    let orchestrator = runtime.block_on(OrchestratorStandin::start());
    orchestrator.set_sandboxes(vec![sandbox("sbx-unannounced", TEAM, "exec-u")]);
    nomad.add_allocation(&AllocSpec::orchestrator("alloc-a", orchestrator.port()));
    let receiver = common::TestReceiver::start(0, SECRET, Arc::new(|_, _, _| 200));
    let dir = tempfile::tempdir().unwrap();
    let listen = format!("127.0.0.1:{}", common::free_port());
    let emitter = common::RunningEmitter::start(
        &[
            "--webhook-url",
            &format!("http://127.0.0.1:{}/hook", receiver.port),
            "--webhook-secret",
            SECRET,
            "--nomad-addr",
            &nomad.url(),
            "--nomad-token",
            &workload_identity_jwt(),
            "--data-dir",
            dir.path().join("data").to_str().unwrap(),
            "--listen",
            &listen,
            "--reconcile-interval",
            "200ms",
            "--reconcile-grace",
            "400ms",
            "--admin-token",
            TOKEN,
        ],
        dir.path().join("emitter.log"),
    );
    common::wait_for_port(
        listen.rsplit(':').next().unwrap().parse().unwrap(),
        Duration::from_secs(10),
    );
    let mut last = Value::Null;
    let found = common::eventually(Duration::from_secs(20), || {
        last = reconciliation(&listen);
        last["last_findings"]
            .as_array()
            .is_some_and(|f| !f.is_empty())
    });
    assert!(found, "{last}\n{}", emitter.log_text());
    assert_eq!(last["enabled"], true);
    assert_eq!(last["last_outcome"], "ok", "{last}");
    assert!(last["last_run_at_ms"].as_i64().unwrap() > 0);
    let orchestrators = last["orchestrators"].as_array().unwrap();
    assert_eq!(orchestrators.len(), 1, "{last}");
    assert!(
        orchestrators[0]
            .as_str()
            .unwrap()
            .contains(&orchestrator.port().to_string()),
        "{last}"
    );
    assert_eq!(
        last["last_findings"][0],
        serde_json::json!({"sandbox_id": "sbx-unannounced", "label": "create", "reason": "missed_create"})
    );
    assert!(common::eventually(Duration::from_secs(10), || receiver
        .deliveries()
        .iter()
        .any(|d| d.sandbox_id == "sbx-unannounced")));
}
