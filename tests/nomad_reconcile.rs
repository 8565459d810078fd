//! Orchestrator discovery through Nomad and reconciliation with the orchestrators (issues 5 and
//! 12), through the library API with a real outbox in a temporary directory, a Nomad 1.8
//! stand-in over real HTTP (the emitter authenticates with a workload identity JWT and discovers
//! orchestrators by service registrations, unless a test is about the allocation stream) and
//! orchestrator stand-ins over real gRPC.

mod common;
mod support;

use e2b_webhook_emitter::cluster::{AllocationStatus, OrchestratorSet};
use e2b_webhook_emitter::config::{EndpointConfig, NomadConfig};
use e2b_webhook_emitter::deliver::format::WireFormat;
use e2b_webhook_emitter::deliver::retry::RetryPolicy;
use e2b_webhook_emitter::deliver::sign::SecretSet;
use e2b_webhook_emitter::event::{EventFilter, Lifecycle, SandboxEvent};
use e2b_webhook_emitter::health::StreamProgress;
use e2b_webhook_emitter::metrics::Metrics;
use e2b_webhook_emitter::outbox::{Outbox, SandboxState};
use e2b_webhook_emitter::reconcile::{ReconcileSettings, Reconciler};
use e2b_webhook_emitter::service::Pipeline;
use e2b_webhook_emitter::source::nomad::{DiscoveryMode, DiscoverySettings, OrchestratorDiscovery};
use e2b_webhook_emitter::util::secret::Secret;
use serde_json::{Map, Value, json};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use support::nomad_standin::{
    AllocSpec, MANAGEMENT_TOKEN, NomadOptions, NomadStandin, workload_identity_jwt,
};
use support::orchestrator_standin::{ENVD_TOKEN, OrchestratorStandin, sandbox};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

const TEAM: &str = "0b8b8a4e-6f4e-4c4a-9a57-3a2f5d3b1c2d";
/// Generous: CI machines are slow; polling returns as soon as the condition holds.
const DEADLINE: Duration = Duration::from_secs(15);

fn discovery_settings(mode: DiscoveryMode) -> DiscoverySettings {
    DiscoverySettings {
        mode,
        blocking_wait: Duration::from_secs(2),
        stream_idle_timeout: Duration::from_millis(1500),
        backoff_min: Duration::from_millis(50),
        backoff_max: Duration::from_millis(300),
        request_timeout: Duration::from_secs(2),
        ..DiscoverySettings::default()
    }
}

fn reconcile_settings() -> ReconcileSettings {
    ReconcileSettings {
        interval: Duration::from_millis(100),
        grace: Duration::from_millis(300),
        rpc_timeout: Duration::from_secs(1),
        teams: Vec::new(),
        ..ReconcileSettings::default()
    }
}

fn nomad_config(nomad: &NomadStandin, token: Option<&str>) -> NomadConfig {
    NomadConfig {
        addr: nomad.url().parse().unwrap(),
        token: token.map(Secret::new),
        namespace: "default".into(),
        cacert: None,
        client_cert: None,
        client_key: None,
    }
}

/// The emitter's Nomad watcher and reconciler on a real outbox.
struct Emitter {
    _dir: Option<tempfile::TempDir>,
    outbox: Outbox,
    metrics: Arc<Metrics>,
    orchestrators: watch::Receiver<OrchestratorSet>,
    shutdown: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
}

impl Emitter {
    /// Discovery by service registrations, authenticated with the workload identity.
    async fn start(nomad: &NomadStandin) -> Self {
        let jwt = workload_identity_jwt();
        Self::start_with(
            nomad,
            Some(&jwt),
            DiscoveryMode::Services,
            reconcile_settings(),
        )
        .await
    }

    async fn start_with(
        nomad: &NomadStandin,
        token: Option<&str>,
        mode: DiscoveryMode,
        settings: ReconcileSettings,
    ) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let metrics = Arc::new(Metrics::new());
        let outbox = common::default_outbox(dir.path(), metrics.clone());
        let mut emitter = Self::with_outbox(outbox, metrics, nomad, token, mode, settings);
        emitter._dir = Some(dir);
        emitter
    }

    fn with_outbox(
        outbox: Outbox,
        metrics: Arc<Metrics>,
        nomad: &NomadStandin,
        token: Option<&str>,
        mode: DiscoveryMode,
        settings: ReconcileSettings,
    ) -> Self {
        let discovery = OrchestratorDiscovery::new(
            &nomad_config(nomad, token),
            discovery_settings(mode),
            metrics.clone(),
            outbox.clone(),
        )
        .unwrap();
        let orchestrators = discovery.orchestrators();
        let reconciler = Reconciler::new(
            outbox.clone(),
            metrics.clone(),
            discovery.orchestrators(),
            settings,
        );
        let shutdown = CancellationToken::new();
        let tasks = vec![
            tokio::spawn(discovery.run(shutdown.clone())),
            tokio::spawn(reconciler.run(shutdown.clone())),
        ];
        Self {
            _dir: None,
            outbox,
            metrics,
            orchestrators,
            shutdown,
            tasks,
        }
    }

    /// Appends an event as a source would.
    async fn event(&self, lifecycle: Lifecycle, sandbox_id: &str, execution: &str) {
        let mut fields = Map::new();
        fields.insert("id".into(), json!(uuid::Uuid::new_v4().to_string()));
        fields.insert(
            "timestamp".into(),
            json!(jiff::Timestamp::now().to_string()),
        );
        fields.insert("sandbox_id".into(), json!(sandbox_id));
        fields.insert("sandbox_team_id".into(), json!(TEAM));
        fields.insert("sandbox_execution_id".into(), json!(execution));
        fields.insert("sandbox_template_id".into(), json!("base"));
        let event = SandboxEvent::new(lifecycle, fields).unwrap();
        self.outbox.append("redis", vec![event]).await.unwrap();
    }

    /// Every event the reconciler appended, oldest first.
    async fn synthesized(&self) -> Vec<SandboxEvent> {
        let pending = self
            .outbox
            .pending_after("default", 0, 10_000)
            .await
            .unwrap();
        let seqs = pending.iter().map(|p| p.seq).collect();
        self.outbox
            .events(seqs)
            .await
            .unwrap()
            .into_iter()
            .map(|stored| stored.expect("a pending event has its record"))
            .filter(|stored| stored.source == "reconcile")
            .map(|stored| stored.event)
            .collect()
    }

    fn component(&self, name: &str) -> Option<(bool, String)> {
        self.metrics
            .components()
            .get(name)
            .map(|c| (c.ready, c.detail.clone()))
    }

    async fn stop(self) {
        self.shutdown.cancel();
        for task in self.tasks {
            tokio::time::timeout(Duration::from_secs(5), task)
                .await
                .expect("the watcher and reconciler stop on shutdown")
                .unwrap();
        }
    }
}

/// Polls `check` until it returns `Some`, failing with `what` after the deadline.
async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Waits until the orchestrator set satisfies `check`, failing with `what` after the deadline.
async fn until(
    set: &mut watch::Receiver<OrchestratorSet>,
    what: &str,
    check: impl FnMut(&OrchestratorSet) -> bool,
) {
    tokio::time::timeout(DEADLINE, set.wait_for(check))
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for: {what}"))
        .expect("the watcher is running");
}

/// Waits until an orchestrator has answered `more` further `List` calls: that many more
/// reconciliation runs have happened.
async fn runs(orchestrator: &OrchestratorStandin, more: usize) {
    let target = orchestrator.calls() + more;
    eventually("more reconciliation runs", || async {
        (orchestrator.calls() >= target).then_some(())
    })
    .await;
}

fn kills_of(events: &[SandboxEvent], sandbox_id: &str) -> Vec<SandboxEvent> {
    events
        .iter()
        .filter(|e| e.lifecycle == Lifecycle::Killed && e.sandbox_id() == sandbox_id)
        .cloned()
        .collect()
}

fn data(event: &SandboxEvent, key: &str) -> Value {
    event
        .event_data()
        .and_then(|d| d.get(key))
        .cloned()
        .unwrap_or(Value::Null)
}

fn assert_no_token(events: &[SandboxEvent], metrics: &Metrics) {
    for event in events {
        let json = String::from_utf8(event.to_json()).unwrap();
        assert!(!json.contains(ENVD_TOKEN), "envd token forwarded: {json}");
    }
    assert!(!metrics.render().contains(ENVD_TOKEN));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_orchestrator_allocation_kills_each_of_its_sandboxes_once() {
    let a = OrchestratorStandin::start().await;
    let b = OrchestratorStandin::start().await;
    a.set_sandboxes(vec![
        sandbox("sbx-a1", TEAM, "ea1"),
        sandbox("sbx-a2", TEAM, "ea2"),
    ]);
    b.set_sandboxes(vec![sandbox("sbx-b1", TEAM, "eb1")]);
    let nomad = NomadStandin::start(NomadOptions::nomad_1_8()).await;
    nomad.add_allocation(&AllocSpec::orchestrator("alloc-a", a.port()));
    nomad.add_allocation(&AllocSpec::orchestrator("alloc-b", b.port()));
    let emitter = Emitter::start(&nomad).await;
    for (id, exec) in [("sbx-a1", "ea1"), ("sbx-a2", "ea2"), ("sbx-b1", "eb1")] {
        emitter.event(Lifecycle::Created, id, exec).await;
    }
    // Several runs in which both orchestrators list their sandboxes: placements are known.
    runs(&a, 3).await;
    runs(&b, 1).await;
    assert!(emitter.synthesized().await.is_empty());
    assert_eq!(emitter.metrics.orchestrators_known.get(), 2);

    // Its node is lost: Nomad removes the registration, and the orchestrator stops answering.
    let lost_at = tokio::time::Instant::now();
    a.set_failing(true);
    nomad.set_client_status(&["alloc-a"], "lost");
    let mut set = emitter.orchestrators.clone();
    tokio::time::timeout(
        Duration::from_secs(3),
        set.wait_for(|s| !s.is_running("alloc-a")),
    )
    .await
    .expect("a blocking query notices the removed registration within seconds")
    .unwrap();
    assert!(lost_at.elapsed() < Duration::from_secs(3));
    assert_eq!(emitter.metrics.orchestrators_known.get(), 1);

    let kills = eventually(
        "kills for both sandboxes of the lost orchestrator",
        || async {
            let events = emitter.synthesized().await;
            (kills_of(&events, "sbx-a1").len() == 1 && kills_of(&events, "sbx-a2").len() == 1)
                .then_some(events)
        },
    )
    .await;
    for kill in &kills {
        assert_eq!(data(kill, "kill_reason"), "orchestrator_lost");
        assert_eq!(data(kill, "synthetic"), true);
        assert_eq!(kill.raw()["version"], "v2");
        assert_eq!(kill.raw()["type"], "sandbox.lifecycle.killed");
        assert_eq!(kill.team_id(), TEAM);
        assert!(uuid::Uuid::parse_str(kill.id()).is_ok());
        let age =
            jiff::Timestamp::now().as_millisecond() - kill.timestamp().unwrap().as_millisecond();
        assert!(
            (0..10_000).contains(&age),
            "timestamp is the synthesis time"
        );
    }
    // Further runs add nothing: each kill exactly once, and B's sandbox is untouched.
    runs(&b, 5).await;
    let events = emitter.synthesized().await;
    assert_eq!(events.len(), 2, "{events:?}");
    assert!(kills_of(&events, "sbx-b1").is_empty());
    let left: Vec<String> = emitter
        .outbox
        .sandboxes()
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.sandbox_id)
        .collect();
    assert_eq!(left, ["sbx-b1"]);
    let metrics = emitter.metrics.render();
    assert!(
        metrics.contains(
            r#"e2b_webhook_synthesized_events_total{type="kill",reason="orchestrator_lost"} 2"#
        ),
        "{metrics}"
    );
    assert!(metrics.contains(r#"e2b_webhook_reconcile_runs_total{result="ok"}"#));
    assert_no_token(&events, &emitter.metrics);
    emitter.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listed_sandbox_whose_created_event_never_came_gets_a_synthesized_create() {
    let a = OrchestratorStandin::start().await;
    a.set_sandboxes(vec![
        sandbox("sbx-known", TEAM, "e1"),
        sandbox("sbx-missed", TEAM, "e2"),
    ]);
    let nomad = NomadStandin::start(NomadOptions::nomad_1_8()).await;
    nomad.add_allocation(&AllocSpec::orchestrator("alloc-a", a.port()));
    let emitter = Emitter::start(&nomad).await;
    emitter.event(Lifecycle::Created, "sbx-known", "e1").await;

    let created = eventually("a synthesized create", || async {
        let events = emitter.synthesized().await;
        (!events.is_empty()).then_some(events)
    })
    .await;
    assert_eq!(created.len(), 1, "{created:?}");
    let create = &created[0];
    assert_eq!(create.sandbox_id(), "sbx-missed");
    assert_eq!(create.lifecycle, Lifecycle::Created);
    assert_eq!(
        create.raw()["event_label"],
        "",
        "as the orchestrator writes it"
    );
    assert_eq!(create.raw()["sandbox_execution_id"], "e2");
    assert_eq!(create.raw()["sandbox_template_id"], "base");
    assert_eq!(create.raw()["sandbox_build_id"], "build-1");
    assert_eq!(create.team_id(), TEAM);
    assert_eq!(data(create, "synthetic"), true);
    assert_eq!(data(create, "sandbox_metadata"), json!({"owner": "tests"}));

    runs(&a, 5).await;
    let events = emitter.synthesized().await;
    assert_eq!(events.len(), 1, "one create, not one per run: {events:?}");
    let records = emitter.outbox.sandboxes().await.unwrap();
    assert!(
        records
            .iter()
            .any(|r| r.sandbox_id == "sbx-missed" && r.state == SandboxState::Running)
    );
    assert_no_token(&events, &emitter.metrics);
    emitter.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_sandbox_gone_from_list_gets_no_kill_but_a_vanished_one_does() {
    let a = OrchestratorStandin::start().await;
    a.set_sandboxes(vec![
        sandbox("sbx-paused", TEAM, "e1"),
        sandbox("sbx-died", TEAM, "e2"),
    ]);
    let nomad = NomadStandin::start(NomadOptions::nomad_1_8()).await;
    nomad.add_allocation(&AllocSpec::orchestrator("alloc-a", a.port()));
    let emitter = Emitter::start(&nomad).await;
    emitter.event(Lifecycle::Created, "sbx-paused", "e1").await;
    emitter.event(Lifecycle::Created, "sbx-died", "e2").await;
    runs(&a, 3).await;

    // Both leave the list; only one of them was paused.
    emitter.event(Lifecycle::Paused, "sbx-paused", "e1").await;
    a.set_sandboxes(vec![]);
    let kill = eventually("a vanished kill for the sandbox that died", || async {
        kills_of(&emitter.synthesized().await, "sbx-died").pop()
    })
    .await;
    assert_eq!(data(&kill, "kill_reason"), "vanished");
    // The paused one had the same runs to be killed in, and more now: still no kill.
    runs(&a, 6).await;
    let events = emitter.synthesized().await;
    assert!(kills_of(&events, "sbx-paused").is_empty(), "{events:?}");
    assert_eq!(events.len(), 1);
    let records = emitter.outbox.sandboxes().await.unwrap();
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].state, SandboxState::Paused);
    emitter.stop().await;
}

fn skipped_runs(metrics: &Metrics) -> u64 {
    metrics
        .render()
        .lines()
        .find_map(|l| l.strip_prefix(r#"e2b_webhook_reconcile_runs_total{result="skipped"} "#))
        .map_or(0, |n| n.parse().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconciliation_waits_while_the_redis_source_is_not_ready_or_lags() {
    let a = OrchestratorStandin::start().await;
    a.set_sandboxes(vec![sandbox("sbx-unknown", TEAM, "e1")]);
    let nomad = NomadStandin::start(NomadOptions::nomad_1_8()).await;
    nomad.add_allocation(&AllocSpec::orchestrator("alloc-a", a.port()));
    // What the Redis source publishes about its reading, driven by hand.
    let (stream, progress) = watch::channel(StreamProgress::Starting);
    let settings = ReconcileSettings {
        stream: Some(progress),
        ..reconcile_settings()
    };
    let jwt = workload_identity_jwt();
    let emitter = Emitter::start_with(&nomad, Some(&jwt), DiscoveryMode::Services, settings).await;
    let skipped_at_least = |n: u64| {
        let metrics = emitter.metrics.clone();
        async move {
            eventually("more skipped runs", || async {
                (skipped_runs(&metrics) >= n).then_some(())
            })
            .await
        }
    };
    // No Redis source yet, then one that is not ready, then one that lags.
    skipped_at_least(4).await;
    stream.send_replace(StreamProgress::NotReady("cannot reach Redis".into()));
    skipped_at_least(skipped_runs(&emitter.metrics) + 4).await;
    stream.send_replace(StreamProgress::Reading { lag: Some(7) });
    skipped_at_least(skipped_runs(&emitter.metrics) + 4).await;
    assert!(emitter.synthesized().await.is_empty());
    assert_eq!(a.calls(), 0, "a skipped run asks no orchestrator");

    // Caught up: the difference is acted on.
    stream.send_replace(StreamProgress::Reading { lag: Some(0) });
    let created = eventually("a create once Redis is caught up", || async {
        let events = emitter.synthesized().await;
        (!events.is_empty()).then_some(events)
    })
    .await;
    assert_eq!(created[0].sandbox_id(), "sbx-unknown");
    emitter.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_orchestrator_that_does_not_answer_keeps_its_sandboxes_until_it_leaves_nomad() {
    let a = OrchestratorStandin::start().await;
    a.set_sandboxes(vec![sandbox("sbx-1", TEAM, "e1")]);
    let nomad = NomadStandin::start(NomadOptions::nomad_1_8()).await;
    nomad.add_allocation(&AllocSpec::orchestrator("alloc-a", a.port()));
    let emitter = Emitter::start(&nomad).await;
    emitter.event(Lifecycle::Created, "sbx-1", "e1").await;
    runs(&a, 3).await;

    a.set_failing(true);
    runs(&a, 8).await;
    assert!(
        emitter.synthesized().await.is_empty(),
        "a silent orchestrator is no reason to kill"
    );

    nomad.set_client_status(&["alloc-a"], "failed");
    let kill = eventually("a kill once the allocation failed", || async {
        kills_of(&emitter.synthesized().await, "sbx-1").pop()
    })
    .await;
    assert_eq!(data(&kill, "kill_reason"), "orchestrator_lost");
    emitter.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_orchestrator_announced_without_its_address_is_found_through_the_list() {
    let a = OrchestratorStandin::start().await;
    a.set_sandboxes(vec![sandbox("sbx-1", TEAM, "e1")]);
    let nomad = NomadStandin::start(NomadOptions {
        events_without_resources: true,
        ..NomadOptions::nomad_1_8()
    })
    .await;
    let emitter = Emitter::start_with(
        &nomad,
        Some(MANAGEMENT_TOKEN),
        DiscoveryMode::Allocations,
        reconcile_settings(),
    )
    .await;
    let mut set = emitter.orchestrators.clone();
    until(&mut set, "the first connection", |s| s.connected).await;
    let lists = nomad.list_requests();
    nomad.add_allocation(&AllocSpec::orchestrator("alloc-a", a.port()));
    until(&mut set, "the new orchestrator with its address", |s| {
        s.connected
            && s.running()
                .any(|o| o.address.is_some_and(|a| a.port() != 5008))
    })
    .await;
    assert!(
        nomad.list_requests() > lists,
        "the address came from a re-list"
    );
    runs(&a, 1).await;
    emitter.stop().await;
}

/// Waits until `statuses` holds at least `count` entries.
async fn recorded(statuses: &Mutex<Vec<AllocationStatus>>, count: usize) {
    eventually("the status to be recorded", || async {
        (statuses.lock().unwrap().len() >= count).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_task_api_unix_socket_works_like_nomad_addr_over_http() {
    let a = OrchestratorStandin::start().await;
    a.set_sandboxes(vec![sandbox("sbx-1", TEAM, "e1")]);
    let socket_dir = tempfile::tempdir().unwrap();
    let nomad = NomadStandin::start_unix(
        NomadOptions::nomad_1_8(),
        &socket_dir.path().join("api.sock"),
    );
    nomad.add_allocation(&AllocSpec::orchestrator("alloc-a", a.port()));
    assert!(nomad.url().starts_with("unix:///"));
    let emitter = Emitter::start(&nomad).await;
    let mut set = emitter.orchestrators.clone();
    until(&mut set, "the orchestrator, through the socket", |s| {
        s.connected && s.running().count() == 1
    })
    .await;
    nomad.set_client_status(&["alloc-a"], "complete");
    until(
        &mut set,
        "the removed registration through the socket",
        |s| s.running().count() == 0,
    )
    .await;
    emitter.stop().await;
}

/// Records every status an allocation goes through, as the reconciler sees it.
fn record_statuses(
    mut set: watch::Receiver<OrchestratorSet>,
    allocation: &'static str,
) -> Arc<Mutex<Vec<AllocationStatus>>> {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    tokio::spawn(async move {
        loop {
            let status = set
                .borrow_and_update()
                .allocations
                .get(allocation)
                .map(|a| a.status.clone());
            if let Some(status) = status {
                let mut log = log.lock().unwrap();
                if log.last() != Some(&status) {
                    log.push(status);
                }
            }
            if set.changed().await.is_err() {
                return;
            }
        }
    });
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_and_resumed_stream_neither_repeats_nor_misses_a_transition() {
    let c = OrchestratorStandin::start().await;
    c.set_sandboxes(vec![sandbox("sbx-c", TEAM, "ec")]);
    let d = OrchestratorStandin::start().await;
    // A small buffer, as a busy cluster's is: a resume index can fall out of it.
    let nomad = NomadStandin::start(NomadOptions {
        buffer: 3,
        ..NomadOptions::nomad_1_8()
    })
    .await;
    let emitter = Emitter::start_with(
        &nomad,
        Some(MANAGEMENT_TOKEN),
        DiscoveryMode::Allocations,
        reconcile_settings(),
    )
    .await;
    let c_statuses = record_statuses(emitter.orchestrators.clone(), "alloc-c");
    let d_statuses = record_statuses(emitter.orchestrators.clone(), "alloc-d");
    let mut set = emitter.orchestrators.clone();
    until(&mut set, "the first connection", |s| s.connected).await;

    // Through the stream: a new allocation, pending then running, several events in a frame.
    let mut spec_c = AllocSpec::orchestrator("alloc-c", c.port());
    spec_c.client_status = "pending".into();
    let mut spec_d = AllocSpec::orchestrator("alloc-d", d.port());
    spec_d.client_status = "pending".into();
    nomad.add_allocation(&spec_c);
    nomad.add_allocation(&spec_d);
    nomad.unrelated_event();
    // The set is a watch channel: an observer sees the latest state, so each state is
    // awaited before the next change to be sure the recorders see it.
    recorded(&c_statuses, 1).await;
    recorded(&d_statuses, 1).await;
    nomad.set_client_status(&["alloc-c", "alloc-d"], "running");
    until(&mut set, "both allocations running", |s| {
        s.running().count() == 2
    })
    .await;
    recorded(&c_statuses, 2).await;
    recorded(&d_statuses, 2).await;
    emitter.event(Lifecycle::Created, "sbx-c", "ec").await;
    runs(&c, 3).await;

    // Nomad cuts the stream as it cuts a slow reader; while the emitter reconnects, alloc-c is
    // lost with its event (re-sent on resume) ...
    let connections = nomad.stream_requests().len();
    nomad.drop_streams();
    c.set_failing(true);
    nomad.set_client_status(&["alloc-c"], "lost");
    eventually("a reconnection after the drop", || async {
        (nomad.stream_requests().len() > connections).then_some(())
    })
    .await;
    // ... then Nomad goes down; meanwhile alloc-d fails and enough else happens that its frame
    // leaves the buffer: only the re-list on reconnect can reveal it.
    nomad.down();
    eventually("the watcher notices Nomad is down", || async {
        (!emitter.orchestrators.borrow().connected).then_some(())
    })
    .await;
    nomad.set_client_status(&["alloc-d"], "failed");
    for _ in 0..4 {
        nomad.unrelated_event();
    }
    nomad.up().await;
    until(
        &mut set,
        "alloc-d failed, seen after the reconnection",
        |s| {
            s.connected
                && s.allocations.get("alloc-d").map(|a| &a.status)
                    == Some(&AllocationStatus::Failed)
        },
    )
    .await;

    // More traffic after the resume.
    nomad.unrelated_event();
    eventually("the kill for the lost orchestrator's sandbox", || async {
        (kills_of(&emitter.synthesized().await, "sbx-c").len() == 1).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;

    use AllocationStatus::{Failed, Lost, Pending, Running};
    assert_eq!(*c_statuses.lock().unwrap(), [Pending, Running, Lost]);
    assert_eq!(*d_statuses.lock().unwrap(), [Pending, Running, Failed]);
    let events = emitter.synthesized().await;
    assert_eq!(kills_of(&events, "sbx-c").len(), 1, "{events:?}");
    assert_eq!(
        data(&kills_of(&events, "sbx-c")[0], "kill_reason"),
        "orchestrator_lost"
    );
    // Every reconnection resumed from the index the emitter had reached, never going back.
    let requests = nomad.stream_requests();
    assert!(requests.len() >= 3, "{requests:?}");
    assert!(requests.windows(2).all(|w| w[0] <= w[1]), "{requests:?}");
    assert!(
        nomad.list_requests() >= requests.len(),
        "a re-list before every stream"
    );
    eventually("the last index processed is Nomad's", || async {
        (emitter.metrics.nomad_last_index.get() as u64 == nomad.index()).then_some(())
    })
    .await;
    let outbox = emitter.outbox.clone();
    emitter.stop().await;
    let saved = outbox
        .load_state("nomad.last_index")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(String::from_utf8(saved).unwrap(), nomad.index().to_string());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nomad_down_at_start_or_later_is_retried_and_delivery_goes_on() {
    let (port, requests) = capture_receiver();
    let a = OrchestratorStandin::start().await;
    let nomad = NomadStandin::down_at_start(NomadOptions::nomad_1_8()).await;
    nomad.add_allocation(&AllocSpec::orchestrator("alloc-a", a.port()));

    let dir = tempfile::tempdir().unwrap();
    let metrics = Arc::new(Metrics::new());
    let endpoint = EndpointConfig {
        id: "default".into(),
        url: format!("http://127.0.0.1:{port}/hook").parse().unwrap(),
        format: WireFormat::default(),
        secrets: SecretSet::parse("s3cret").unwrap(),
        events: EventFilter::parse("*").unwrap(),
        timeout: Duration::from_secs(5),
        webhook_id: uuid::Uuid::nil(),
        signature_encoding: Default::default(),
        response_body_limit: 64 * 1024,
        trusted_ca: None,
    };
    let pipeline = Pipeline::start(
        dir.path(),
        &[endpoint],
        &RetryPolicy::default(),
        4,
        metrics.clone(),
    )
    .unwrap();
    let jwt = workload_identity_jwt();
    let emitter = Emitter::with_outbox(
        pipeline.outbox.clone(),
        metrics.clone(),
        &nomad,
        Some(&jwt),
        DiscoveryMode::Services,
        reconcile_settings(),
    );

    // Nomad is down: the watcher says so and keeps trying; events are still delivered.
    let (ready, detail) = eventually("the nomad component reports the failure", || async {
        emitter
            .component("nomad")
            .filter(|(ready, d)| !ready && d.contains("cannot reach Nomad"))
    })
    .await;
    assert!(!ready && detail.contains("NOMAD_ADDR"), "{detail}");
    emitter.event(Lifecycle::Created, "sbx-1", "e1").await;
    assert_eq!(delivered_sandbox(&requests), "sbx-1");
    assert!(!emitter.orchestrators.borrow().listed);

    nomad.up().await;
    let mut set = emitter.orchestrators.clone();
    until(&mut set, "a connection once Nomad is up", |s| {
        s.connected && s.running().count() == 1
    })
    .await;
    assert!(emitter.component("nomad").unwrap().0);

    // Down again later: reported, retried, and delivery still goes on.
    nomad.down();
    eventually("the watcher notices Nomad went down", || async {
        emitter.component("nomad").filter(|(ready, _)| !ready)
    })
    .await;
    emitter.event(Lifecycle::Created, "sbx-2", "e2").await;
    assert_eq!(delivered_sandbox(&requests), "sbx-2");
    nomad.up().await;
    eventually("the watcher reconnects", || async {
        emitter.component("nomad").filter(|(ready, _)| *ready)
    })
    .await;
    emitter.stop().await;
    pipeline.stop().await.unwrap();
}

#[tokio::test(flavor = "current_thread")]
async fn a_refused_token_is_reported_clearly_and_logged_once() {
    let logs = CapturedLogs::default();
    let _guard = tracing::subscriber::set_default(
        tracing_subscriber::fmt()
            .with_writer(logs.clone())
            .with_ansi(false)
            .finish(),
    );
    let nomad = NomadStandin::start(NomadOptions::nomad_1_8()).await;
    let emitter = Emitter::start_with(
        &nomad,
        Some("wrong-token-SECRET"),
        DiscoveryMode::Services,
        reconcile_settings(),
    )
    .await;
    let (_, detail) = eventually("the nomad component reports the 403", || async {
        emitter
            .component("nomad")
            .filter(|(_, d)| d.contains("403"))
    })
    .await;
    assert!(
        detail.contains("cannot read service registrations")
            && detail.contains("Permission denied"),
        "{detail}"
    );
    // Discovery keeps retrying (with backoff), but says it once.
    let before = nomad.service_requests().len();
    eventually("several more attempts", || async {
        (nomad.service_requests().len() >= before + 4).then_some(())
    })
    .await;
    let text = logs.text();
    assert_eq!(
        text.matches("cannot read service registrations").count(),
        1,
        "{text}"
    );
    assert!(!text.contains("wrong-token-SECRET") && !detail.contains("wrong-token-SECRET"));
    assert!(!emitter.orchestrators.borrow().listed);
    emitter.stop().await;
}

/// Nomad 1.8 refuses a workload identity on the event stream (hashicorp/nomad#18186) and on
/// the allocation list: discovery in `allocations` mode says so once and goes on with service
/// registrations, without an error loop.
#[tokio::test(flavor = "current_thread")]
async fn allocations_mode_falls_back_to_services_when_nomad_refuses_the_identity() {
    let logs = CapturedLogs::default();
    let _guard = tracing::subscriber::set_default(
        tracing_subscriber::fmt()
            .with_writer(logs.clone())
            .with_ansi(false)
            .finish(),
    );
    let a = OrchestratorStandin::start().await;
    a.set_sandboxes(vec![sandbox("sbx-1", TEAM, "e1")]);
    let nomad = NomadStandin::start(NomadOptions::nomad_1_8()).await;
    nomad.add_allocation(&AllocSpec::orchestrator("alloc-a", a.port()));
    let jwt = workload_identity_jwt();
    let emitter = Emitter::start_with(
        &nomad,
        Some(&jwt),
        DiscoveryMode::Allocations,
        reconcile_settings(),
    )
    .await;
    let mut set = emitter.orchestrators.clone();
    until(&mut set, "the orchestrator, from its registration", |s| {
        s.connected && s.is_running("alloc-a")
    })
    .await;
    assert!(
        emitter.component("nomad").unwrap().0,
        "ready after the fallback"
    );
    emitter.event(Lifecycle::Created, "sbx-1", "e1").await;
    runs(&a, 3).await;
    let before = nomad.list_requests();
    nomad.set_client_status(&["alloc-a"], "complete");
    until(&mut set, "the registration removed", |s| {
        !s.is_running("alloc-a")
    })
    .await;
    let text = logs.text();
    assert_eq!(
        text.matches("discovering orchestrators through service registrations instead")
            .count(),
        1,
        "{text}"
    );
    assert!(
        !text.contains("ERROR"),
        "a fallback is not an error: {text}"
    );
    assert!(!text.contains(&jwt), "the identity leaked into the log");
    assert_eq!(nomad.list_requests(), before, "no more allocation requests");
    emitter.stop().await;
}

#[derive(Clone, Default)]
struct CapturedLogs(Arc<Mutex<Vec<u8>>>);

impl CapturedLogs {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

impl std::io::Write for CapturedLogs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for CapturedLogs {
    type Writer = CapturedLogs;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

/// A webhook receiver answering 200; each request body arrives on the channel.
fn capture_receiver() -> (u16, std::sync::mpsc::Receiver<Vec<u8>>) {
    use std::io::{BufRead, BufReader, Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let tx = tx.clone();
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                loop {
                    let mut length = 0;
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 {
                        return;
                    }
                    loop {
                        let mut header = String::new();
                        reader.read_line(&mut header).unwrap();
                        let header = header.trim_end().to_ascii_lowercase();
                        if header.is_empty() {
                            break;
                        }
                        if let Some(v) = header.strip_prefix("content-length:") {
                            length = v.trim().parse().unwrap();
                        }
                    }
                    let mut body = vec![0; length];
                    reader.read_exact(&mut body).unwrap();
                    let reply = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
                    stream.write_all(reply.as_bytes()).unwrap();
                    let _ = tx.send(body);
                }
            });
        }
    });
    (port, rx)
}

/// The sandbox id of the next delivered webhook.
fn delivered_sandbox(requests: &std::sync::mpsc::Receiver<Vec<u8>>) -> String {
    let body = tokio::task::block_in_place(|| requests.recv_timeout(DEADLINE))
        .expect("the event is delivered while Nomad is unreachable");
    let body: Value = serde_json::from_slice(&body).unwrap();
    body["sandboxId"].as_str().unwrap().to_owned()
}

/// The real binary: events from EVENTS_FILE are delivered while NOMAD_ADDR is down; once Nomad
/// is up discovery connects with the workload identity, finds the orchestrator, and survives
/// Nomad going down again; the token appears nowhere in the log.
#[test]
fn the_binary_delivers_while_nomad_is_down_and_follows_nomad_once_up() {
    const SECRET: &str = "binary-test-secret";
    let jwt = workload_identity_jwt();
    let nomad_token = jwt.as_str();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let nomad = runtime.block_on(NomadStandin::down_at_start(NomadOptions::nomad_1_8()));
    let orchestrator = runtime.block_on(OrchestratorStandin::start());
    nomad.add_allocation(&AllocSpec::orchestrator("alloc-a", orchestrator.port()));
    let receiver = common::TestReceiver::start(0, SECRET, Arc::new(|_, _, _| 200));
    let dir = tempfile::tempdir().unwrap();
    let (events, _) = common::lifecycle_ndjson(3, 2);
    let events_file = dir.path().join("events.ndjson");
    std::fs::write(&events_file, events).unwrap();
    let listen = format!("127.0.0.1:{}", common::free_port());
    let emitter = common::RunningEmitter::start(
        &[
            "--webhook-url",
            &format!("http://127.0.0.1:{}/hook", receiver.port),
            "--webhook-secret",
            SECRET,
            "--events-file",
            events_file.to_str().unwrap(),
            "--nomad-addr",
            &nomad.url(),
            "--nomad-token",
            nomad_token,
            "--data-dir",
            dir.path().join("data").to_str().unwrap(),
            "--listen",
            &listen,
        ],
        dir.path().join("emitter.log"),
    );
    let metric = |line: &str| {
        common::eventually(DEADLINE, || {
            common::http_get_body(&listen, "/metrics")
                .lines()
                .any(|l| l == line)
        })
    };

    assert!(
        common::eventually(DEADLINE, || receiver.deliveries().len() == 6),
        "every event is delivered while Nomad is down; log:\n{}",
        emitter.log_text()
    );
    assert!(metric(r#"e2b_webhook_source_connected{source="nomad"} 0"#));

    runtime.block_on(nomad.up());
    assert!(
        metric(r#"e2b_webhook_source_connected{source="nomad"} 1"#),
        "the watcher connects once Nomad is up; log:\n{}",
        emitter.log_text()
    );
    assert!(metric("e2b_webhook_orchestrators_known 1"));

    nomad.down();
    assert!(metric(r#"e2b_webhook_source_connected{source="nomad"} 0"#));
    runtime.block_on(nomad.up());
    assert!(metric(r#"e2b_webhook_source_connected{source="nomad"} 1"#));

    emitter.signal(nix::sys::signal::Signal::SIGTERM);
    let mut emitter = emitter;
    let exited = common::eventually(DEADLINE, || emitter.child.try_wait().unwrap().is_some());
    assert!(exited, "the emitter stops on SIGTERM");
    assert!(emitter.child.wait().unwrap().success());
    let log = emitter.log_text();
    assert!(log.contains("cannot reach Nomad"), "{log}");
    assert!(
        !log.contains(nomad_token),
        "the Nomad token leaked into the log"
    );
}

/// GET over HTTP/1.0; the status code, or 0 when nothing answers yet.
fn http_status(addr: &str, path: &str) -> u16 {
    use std::io::{Read, Write};
    let Ok(mut stream) = std::net::TcpStream::connect(addr) else {
        return 0;
    };
    let _ = write!(stream, "GET {path} HTTP/1.0\r\nHost: emitter\r\n\r\n");
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    response
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or(0)
}

/// Issue 12's "done when", through the real binary with a workload identity JWT as NOMAD_TOKEN
/// against the Nomad 1.8 stand-in (event stream and allocation list refused, services
/// readable): `/readyz` is 200, and every reconciliation case holds at a verifying receiver —
/// a signed `create` for an unannounced sandbox, `vanished` for one its answering orchestrator
/// no longer lists, no kill for a paused one or for those of an orchestrator that merely does
/// not answer, `orchestrator_lost` once for each sandbox of an orchestrator that left Nomad and
/// stopped answering; `envd_access_token` appears nowhere.
#[test]
fn the_binary_reconciles_every_case_with_a_workload_identity_on_nomad_1_8() {
    const SECRET: &str = "reconcile-binary-secret";
    let jwt = workload_identity_jwt();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let nomad = runtime.block_on(NomadStandin::start(NomadOptions::nomad_1_8()));
    let a = runtime.block_on(OrchestratorStandin::start());
    let b = runtime.block_on(OrchestratorStandin::start());
    a.set_sandboxes(vec![
        sandbox("isb00000", TEAM, "exec-0"),
        sandbox("isb00001", TEAM, "exec-0"),
        sandbox("sbx-unannounced", TEAM, "exec-u"),
    ]);
    b.set_sandboxes(vec![
        sandbox("sbx-b-stays", TEAM, "exec-b1"),
        sandbox("sbx-b-dies", TEAM, "exec-b2"),
        sandbox("sbx-b-paused", TEAM, "exec-bp"),
    ]);
    nomad.add_allocation(&AllocSpec::orchestrator("alloc-a", a.port()));
    nomad.add_allocation(&AllocSpec::orchestrator("alloc-b", b.port()));
    let receiver = common::TestReceiver::start(0, SECRET, Arc::new(|_, _, _| 200));
    let dir = tempfile::tempdir().unwrap();
    let event = |label: &str, kind: &str, sandbox: &str, execution: &str| {
        json!({
            "version": "v2",
            "id": uuid::Uuid::new_v4().to_string(),
            "type": format!("sandbox.lifecycle.{kind}"),
            "event_category": "",
            "event_label": label,
            "timestamp": jiff::Timestamp::now().to_string(),
            "sandbox_id": sandbox,
            "sandbox_execution_id": execution,
            "sandbox_template_id": "base",
            "sandbox_build_id": "build-1",
            "sandbox_team_id": TEAM
        })
        .to_string()
            + "\n"
    };
    let events: String = [
        event("", "created", "isb00000", "exec-0"),
        event("", "created", "isb00001", "exec-0"),
        event("", "created", "sbx-b-stays", "exec-b1"),
        event("", "created", "sbx-b-dies", "exec-b2"),
        event("", "created", "sbx-b-paused", "exec-bp"),
        event("", "paused", "sbx-b-paused", "exec-bp"),
    ]
    .concat();
    let events_file = dir.path().join("events.ndjson");
    std::fs::write(&events_file, events).unwrap();
    let listen = format!("127.0.0.1:{}", common::free_port());
    let emitter = common::RunningEmitter::start(
        &[
            "--webhook-url",
            &format!("http://127.0.0.1:{}/hook", receiver.port),
            "--webhook-secret",
            SECRET,
            "--events-file",
            events_file.to_str().unwrap(),
            "--nomad-addr",
            &nomad.url(),
            "--nomad-token",
            &jwt,
            "--data-dir",
            dir.path().join("data").to_str().unwrap(),
            "--listen",
            &listen,
            "--reconcile-interval",
            "200ms",
            "--reconcile-grace",
            "400ms",
            "--log-format",
            "json",
        ],
        dir.path().join("emitter.log"),
    );
    assert!(
        common::eventually(DEADLINE, || http_status(&listen, "/readyz") == 200),
        "/readyz 200 with only the workload identity; log:\n{}",
        emitter.log_text()
    );
    let labels_of = |sandbox: &str| -> Vec<String> {
        receiver
            .deliveries()
            .into_iter()
            .filter(|d| d.sandbox_id == sandbox)
            .map(|d| d.label)
            .collect()
    };
    let last_is_kill =
        |sandbox: &str| labels_of(sandbox).last().map(String::as_str) == Some("kill");

    // Unannounced: a synthesized create.
    assert!(
        common::eventually(DEADLINE, || labels_of("sbx-unannounced") == ["create"]),
        "a synthesized create; log:\n{}",
        emitter.log_text()
    );
    // b answers but no longer lists two sandboxes: the running one vanished, the paused one
    // is left alone.
    b.set_sandboxes(vec![sandbox("sbx-b-stays", TEAM, "exec-b1")]);
    assert!(
        common::eventually(DEADLINE, || last_is_kill("sbx-b-dies")),
        "a vanished kill; got {:?}",
        receiver.deliveries()
    );
    // b stops answering while Nomad still lists it: nothing is killed.
    b.set_failing(true);
    let b_calls = b.calls();
    assert!(common::eventually(DEADLINE, || b.calls() >= b_calls + 5));
    // a's node is lost: its registration goes and it stops answering.
    a.set_failing(true);
    nomad.set_client_status(&["alloc-a"], "lost");
    assert!(
        common::eventually(DEADLINE, || {
            ["isb00000", "isb00001", "sbx-unannounced"]
                .iter()
                .all(|s| last_is_kill(s))
        }),
        "a kill for every sandbox of the lost orchestrator; got {:?}",
        receiver.deliveries()
    );
    // More runs change nothing.
    let b_calls = b.calls();
    assert!(common::eventually(DEADLINE, || b.calls() >= b_calls + 5));
    let deliveries = receiver.deliveries();
    assert!(deliveries.iter().all(|d| d.signature_ok));
    let kills: Vec<&common::Delivery> = deliveries.iter().filter(|d| d.label == "kill").collect();
    let reason_of = |sandbox: &str| {
        kills
            .iter()
            .filter(|k| k.sandbox_id == sandbox)
            .map(|k| {
                k.body["eventData"]["kill_reason"]
                    .as_str()
                    .unwrap()
                    .to_owned()
            })
            .collect::<Vec<_>>()
    };
    for lost in ["isb00000", "isb00001", "sbx-unannounced"] {
        assert_eq!(reason_of(lost), ["orchestrator_lost"], "{lost} once");
    }
    assert_eq!(reason_of("sbx-b-dies"), ["vanished"]);
    assert!(reason_of("sbx-b-stays").is_empty(), "merely unreachable");
    assert!(reason_of("sbx-b-paused").is_empty(), "paused");
    assert_eq!(kills.len(), 4, "{deliveries:?}");
    for kill in &kills {
        assert_eq!(kill.body["eventData"]["synthetic"], true);
        assert_eq!(kill.body["type"], "sandbox.lifecycle.killed");
    }
    assert_eq!(http_status(&listen, "/readyz"), 200);
    // Discovery used only what the identity may read: blocking service queries.
    let requests = nomad.service_requests();
    assert!(
        requests.iter().any(|i| *i > 0),
        "blocking queries: {requests:?}"
    );
    assert_eq!(nomad.list_requests(), 0);
    assert!(nomad.stream_requests().is_empty());
    let everything = format!(
        "{}{}{}{:?}",
        emitter.log_text(),
        common::http_get_body(&listen, "/metrics"),
        common::http_get_body(&listen, "/status"),
        deliveries
    );
    assert!(!everything.contains(ENVD_TOKEN), "envd_access_token leaked");
    assert!(!everything.contains(&jwt), "the workload identity leaked");
}

/// Nomad 1.8 removes a registration when the node misses heartbeats, even if the orchestrator
/// still runs (hashicorp/nomad#16983): while it answers it is still reconciled and nothing of
/// it is killed as lost; a sandbox it no longer lists is `vanished`; once it stops answering
/// too, its sandboxes are `orchestrator_lost`, each once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_orchestrator_gone_from_the_catalog_is_killed_only_once_it_stops_answering() {
    let a = OrchestratorStandin::start().await;
    a.set_sandboxes(vec![
        sandbox("sbx-1", TEAM, "e1"),
        sandbox("sbx-2", TEAM, "e2"),
    ]);
    let nomad = NomadStandin::start(NomadOptions::nomad_1_8()).await;
    nomad.add_allocation(&AllocSpec::orchestrator("alloc-a", a.port()));
    let emitter = Emitter::start(&nomad).await;
    emitter.event(Lifecycle::Created, "sbx-1", "e1").await;
    emitter.event(Lifecycle::Created, "sbx-2", "e2").await;
    runs(&a, 3).await;

    nomad.deregister("alloc-a");
    let mut set = emitter.orchestrators.clone();
    until(&mut set, "the registration gone", |s| {
        !s.is_running("alloc-a")
    })
    .await;
    assert_eq!(emitter.metrics.orchestrators_known.get(), 0);
    runs(&a, 6).await;
    assert!(
        emitter.synthesized().await.is_empty(),
        "still answering: still reconciled, no kill"
    );

    a.set_sandboxes(vec![sandbox("sbx-1", TEAM, "e1")]);
    let vanished = eventually(
        "a vanished kill from the deregistered orchestrator",
        || async { kills_of(&emitter.synthesized().await, "sbx-2").pop() },
    )
    .await;
    assert_eq!(data(&vanished, "kill_reason"), "vanished");

    a.set_failing(true);
    let lost = eventually("orchestrator_lost once it stops answering", || async {
        kills_of(&emitter.synthesized().await, "sbx-1").pop()
    })
    .await;
    assert_eq!(data(&lost, "kill_reason"), "orchestrator_lost");
    // No placement points at it any more, so it is not asked again: wait ten intervals.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let events = emitter.synthesized().await;
    assert_eq!(events.len(), 2, "each kill once: {events:?}");
    assert_no_token(&events, &emitter.metrics);
    emitter.stop().await;
}

/// A restarted orchestrator (E2B runs it with `restart { attempts = 0 }`, so a new allocation
/// on the same node and port) has none of the earlier process's sandboxes: those are
/// `vanished`, not `orchestrator_lost`, and what the new one runs is kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_orchestrator_makes_its_earlier_sandboxes_vanished() {
    let a = OrchestratorStandin::start().await;
    a.set_sandboxes(vec![sandbox("sbx-old", TEAM, "e1")]);
    let nomad = NomadStandin::start(NomadOptions::nomad_1_8()).await;
    nomad.add_allocation(&AllocSpec::orchestrator("alloc-1", a.port()));
    let emitter = Emitter::start(&nomad).await;
    emitter.event(Lifecycle::Created, "sbx-old", "e1").await;
    runs(&a, 3).await;

    // The process restarts: the old allocation fails, a new one registers on the same port and
    // lists only what was created since.
    a.set_sandboxes(vec![sandbox("sbx-new", TEAM, "e9")]);
    emitter.event(Lifecycle::Created, "sbx-new", "e9").await;
    nomad.set_client_status(&["alloc-1"], "failed");
    nomad.add_allocation(&AllocSpec::orchestrator("alloc-2", a.port()));
    let kill = eventually("the earlier sandbox vanished", || async {
        kills_of(&emitter.synthesized().await, "sbx-old").pop()
    })
    .await;
    assert_eq!(data(&kill, "kill_reason"), "vanished");
    runs(&a, 5).await;
    let events = emitter.synthesized().await;
    assert_eq!(events.len(), 1, "{events:?}");
    emitter.stop().await;
}

/// The index and the observations survive a restart: an orchestrator that left Nomad and
/// stopped answering while the emitter was down still gets its sandboxes killed as
/// `orchestrator_lost` afterwards, and discovery resumes from the saved index.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn placements_and_the_index_are_kept_across_a_restart() {
    let a = OrchestratorStandin::start().await;
    a.set_sandboxes(vec![sandbox("sbx-1", TEAM, "e1")]);
    let b = OrchestratorStandin::start().await;
    let nomad = NomadStandin::start(NomadOptions::nomad_1_8()).await;
    nomad.add_allocation(&AllocSpec::orchestrator("alloc-a", a.port()));
    nomad.add_allocation(&AllocSpec::orchestrator("alloc-b", b.port()));
    let dir = tempfile::tempdir().unwrap();
    let jwt = workload_identity_jwt();
    let start = |metrics: Arc<Metrics>| {
        let outbox = common::default_outbox(dir.path(), metrics.clone());
        Emitter::with_outbox(
            outbox,
            metrics,
            &nomad,
            Some(&jwt),
            DiscoveryMode::Services,
            reconcile_settings(),
        )
    };
    let emitter = start(Arc::new(Metrics::new()));
    emitter.event(Lifecycle::Created, "sbx-1", "e1").await;
    runs(&a, 3).await;
    let outbox = emitter.outbox.clone();
    emitter.stop().await;
    let saved = outbox
        .load_state("nomad.last_index")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        String::from_utf8(saved).unwrap(),
        nomad.services_index().to_string()
    );
    drop(outbox);

    // While the emitter is down, a's node is lost.
    a.set_failing(true);
    nomad.set_client_status(&["alloc-a"], "lost");
    let emitter = start(Arc::new(Metrics::new()));
    let kill = eventually("orchestrator_lost after the restart", || async {
        kills_of(&emitter.synthesized().await, "sbx-1").pop()
    })
    .await;
    assert_eq!(data(&kill, "kill_reason"), "orchestrator_lost");
    assert_eq!(
        emitter.metrics.nomad_last_index.get() as u64,
        nomad.services_index()
    );
    emitter.stop().await;
}

/// The stand-in behaves as Nomad 1.8 does with a workload identity: refused on the event
/// stream (500, the token lookup failure of hashicorp/nomad#18186) and the allocation list
/// (403), accepted on service registrations (a blocking query with `X-Nomad-Index`) and on the
/// job's variables.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stand_in_models_nomad_1_8_for_a_workload_identity() {
    let nomad = NomadStandin::start(NomadOptions::nomad_1_8()).await;
    nomad.add_allocation(&AllocSpec::orchestrator("alloc-a", 5008));
    nomad.set_variable(
        "nomad/jobs/e2b-webhook-emitter",
        json!({"webhook_secret": "x"}),
    );
    let http = reqwest::Client::new();
    let jwt = workload_identity_jwt();
    let get = |path: &str, token: &str| {
        http.get(format!("{}{path}", nomad.url()))
            .header("X-Nomad-Token", token)
            .send()
    };
    let stream = get("/v1/event/stream?topic=Allocation&index=0", &jwt)
        .await
        .unwrap();
    assert_eq!(stream.status(), 500);
    assert!(
        stream
            .text()
            .await
            .unwrap()
            .contains("acl token lookup failed")
    );
    assert_eq!(get("/v1/allocations", &jwt).await.unwrap().status(), 403);
    assert_eq!(
        get("/v1/allocations", MANAGEMENT_TOKEN)
            .await
            .unwrap()
            .status(),
        200
    );
    let var = get("/v1/var/nomad/jobs/e2b-webhook-emitter", &jwt)
        .await
        .unwrap();
    assert_eq!(var.status(), 200);
    assert_eq!(
        get("/v1/service/orchestrator", "not-a-token")
            .await
            .unwrap()
            .status(),
        403
    );

    let answer = get("/v1/service/orchestrator", &jwt).await.unwrap();
    assert_eq!(answer.status(), 200);
    let index: u64 = answer.headers()["x-nomad-index"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let registrations: Value = serde_json::from_str(&answer.text().await.unwrap()).unwrap();
    assert_eq!(registrations[0]["AllocID"], "alloc-a");
    assert_eq!(registrations[0]["Port"], 5008);
    // A blocking query waits for a change ...
    let started = tokio::time::Instant::now();
    let blocked = get(
        &format!("/v1/service/orchestrator?index={index}&wait=300ms"),
        &jwt,
    )
    .await
    .unwrap();
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert_eq!(
        blocked.headers()["x-nomad-index"].to_str().unwrap(),
        index.to_string()
    );
    // ... and answers as soon as the allocation stops, without its registration.
    let waiting = tokio::spawn(get(
        &format!("/v1/service/orchestrator?index={index}&wait=10s"),
        &jwt,
    ));
    tokio::time::sleep(Duration::from_millis(100)).await;
    let stopped_at = tokio::time::Instant::now();
    nomad.set_client_status(&["alloc-a"], "complete");
    let changed = waiting.await.unwrap().unwrap();
    assert!(stopped_at.elapsed() < Duration::from_secs(2));
    let registrations: Value = serde_json::from_str(&changed.text().await.unwrap()).unwrap();
    assert_eq!(registrations, json!([]));
}
