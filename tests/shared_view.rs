//! The shared view of sandboxes (`{stream}:<group>:sandboxes`) is read in `HSCAN` pages, never
//! whole with `HGETALL`, so reading it costs memory by the page, not by the sandboxes it knows:
//! the reconciler's read and the tombstone sweep, against a real `redis-server`.

mod common;
mod support;

use common::{RunningEmitter, eventually};
use e2b_webhook_emitter::leadership::Leadership;
use e2b_webhook_emitter::metrics::Metrics;
use e2b_webhook_emitter::outbox::SandboxView;
use e2b_webhook_emitter::source::redis::{
    RedisConnectionSettings, RedisSettings, RedisStreamSource,
};
use e2b_webhook_emitter::team_scope::TeamScope;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;
use support::redis::RedisServer;

const STREAM: &str = "sandbox.events.stream";
/// More than a few pages of the emitter's `HSCAN COUNT`, and past the size Redis keeps a small
/// hash in (a listpack, which `HSCAN` returns in one reply whatever the count).
const SANDBOXES: usize = 3_000;

fn view_key(group: &str) -> String {
    format!("{{{STREAM}}}:{group}:sandboxes")
}

fn record_json(sandbox: &str, state: &str) -> String {
    serde_json::json!({
        "sandbox_id": sandbox, "state": state, "team_id": "t", "template_id": null,
        "execution_id": "e", "updated_at_ms": 5
    })
    .to_string()
}

/// Puts `fields` into the hash `key`, a thousand per command.
fn fill(conn: &mut redis::Connection, key: &str, fields: &[(String, String)]) {
    for chunk in fields.chunks(1000) {
        let _: () = redis::cmd("HSET").arg(key).arg(chunk).query(conn).unwrap();
    }
}

/// How often Redis ran `command` (from `INFO commandstats`).
fn calls(conn: &mut redis::Connection, command: &str) -> u64 {
    let info: String = redis::cmd("INFO").arg("commandstats").query(conn).unwrap();
    info.lines()
        .find_map(|line| line.strip_prefix(&format!("cmdstat_{command}:calls=")))
        .and_then(|rest| rest.split(',').next())
        .map_or(0, |n| n.parse().unwrap())
}

#[test]
fn the_reconcilers_read_returns_every_record_once_and_reads_in_pages() {
    let server = RedisServer::start();
    let mut conn = server.connection();
    let dir = tempfile::tempdir().unwrap();
    let metrics = Arc::new(Metrics::new());
    let outbox = common::default_outbox(dir.path(), metrics.clone());
    let settings = RedisSettings {
        connection: RedisConnectionSettings {
            host: "127.0.0.1".into(),
            port: server.port(),
            cluster: false,
            tls: None,
            username: None,
            password: None,
            db: 0,
        },
        stream: STREAM.into(),
        group: "g".into(),
        consumer: "c".into(),
        claim_idle: Duration::from_secs(60),
        trim: true,
        lease_ttl: Duration::from_secs(8),
    };
    let source = RedisStreamSource::new(
        settings,
        TeamScope::new(Vec::new(), false),
        outbox,
        metrics,
        Leadership::always_active(),
    )
    .unwrap();
    let view = source.shared_view();
    let runtime = tokio::runtime::Runtime::new().unwrap();

    // Records of running and paused sandboxes, tombstones of killed ones, and garbage.
    let mut fields = Vec::new();
    let mut expected = HashMap::new();
    for i in 0..SANDBOXES {
        let sandbox = format!("sbx-{i:05}");
        match i % 3 {
            0 => fields.push((sandbox, "8-0|".to_owned())),
            1 => {
                fields.push((
                    sandbox.clone(),
                    format!("7-0|{}", record_json(&sandbox, "running")),
                ));
                expected.insert(sandbox, "Running".to_owned());
            }
            _ => {
                fields.push((
                    sandbox.clone(),
                    format!("7-1|{}", record_json(&sandbox, "paused")),
                ));
                expected.insert(sandbox, "Paused".to_owned());
            }
        }
    }
    fields.push(("sbx-garbage".into(), "nonsense".into()));
    fill(&mut conn, &view_key("g"), &fields);

    let unbuilt = runtime.block_on(view.sandboxes()).unwrap_err();
    assert!(
        unbuilt.to_string().contains("not built yet"),
        "without the marker the view is not built: {unbuilt}"
    );

    fill(&mut conn, &view_key("g"), &[(":view".into(), "1".into())]);
    let scans_before = calls(&mut conn, "hscan");
    let records = runtime.block_on(view.sandboxes()).unwrap();
    let got: HashMap<String, String> = records
        .iter()
        .map(|r| (r.sandbox_id.clone(), format!("{:?}", r.state)))
        .collect();
    assert_eq!(records.len(), got.len(), "each sandbox once");
    assert_eq!(got, expected);
    let pages = calls(&mut conn, "hscan") - scans_before;
    assert!(
        pages >= (SANDBOXES / 1000) as u64,
        "read in pages: {pages} HSCAN calls for {SANDBOXES} fields"
    );
    assert_eq!(calls(&mut conn, "hgetall"), 0, "never read whole");
}

#[test]
fn the_tombstone_sweep_forgets_only_tombstones_no_entry_can_bring_back() {
    let server = RedisServer::start();
    let mut conn = server.connection();
    let group = "e2b-webhook-emitter";
    // The group has handed out everything up to 10-0 and nothing is pending: tombstones of
    // entries below 10-1 can go, later ones and records stay.
    let _: () = redis::cmd("XGROUP")
        .arg(&["CREATE", STREAM, group, "10-0", "MKSTREAM"])
        .query(&mut conn)
        .unwrap();
    let mut fields = vec![(":view".to_owned(), "1".to_owned())];
    let mut kept = HashSet::from([":view".to_owned()]);
    for i in 0..SANDBOXES {
        let sandbox = format!("sbx-{i:05}");
        match i % 3 {
            0 => fields.push((sandbox, "9-5|".to_owned())),
            1 => {
                fields.push((sandbox.clone(), "10-1|".to_owned()));
                kept.insert(sandbox);
            }
            _ => {
                fields.push((
                    sandbox.clone(),
                    format!("9-0|{}", record_json(&sandbox, "running")),
                ));
                kept.insert(sandbox);
            }
        }
    }
    fill(&mut conn, &view_key(group), &fields);

    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let running = RunningEmitter::start(
        &[
            "--redis-url",
            &server.host_port(),
            "--webhook-url",
            "http://127.0.0.1:1/hook",
            "--webhook-secret",
            "s",
            "--data-dir",
            data.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
        ],
        dir.path().join("emitter.log"),
    );
    let fields_left = |conn: &mut redis::Connection| -> HashSet<String> {
        redis::cmd("HKEYS")
            .arg(view_key(group))
            .query(conn)
            .unwrap()
    };
    let swept = eventually(Duration::from_secs(60), || {
        fields_left(&mut conn).len() == kept.len()
    });
    assert!(
        swept,
        "{} fields left, {} expected; log: {}",
        fields_left(&mut conn).len(),
        kept.len(),
        running.log_text()
    );
    assert_eq!(fields_left(&mut conn), kept);
    assert!(calls(&mut conn, "hscan") >= (SANDBOXES / 1000) as u64);
    assert_eq!(calls(&mut conn, "hgetall"), 0, "never read whole");
}
