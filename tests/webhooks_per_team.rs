//! Issue 29: a team registers at most WEBHOOKS_PER_TEAM webhooks. Concurrent registrations
//! through two instances sharing one Postgres (an HA pair) cannot pass the limit together; the
//! one too many is answered 400 in E2B's `Error` body saying what to do, and nothing is stored;
//! other teams are not affected, and a deletion makes room again.

mod common;
mod support;

use common::events_api::{api_call, wait_for_api};
use common::{RunningEmitter, free_port};
use serde_json::{Value, json};
use std::sync::{Arc, Barrier};
use support::postgres::PostgresServer;

const LIMIT: usize = 3;

fn start(pg: &PostgresServer, port: u16, dir: &std::path::Path) -> RunningEmitter {
    let data = dir.join(format!("data-{port}"));
    RunningEmitter::start_with_env(
        &[],
        &[
            ("POSTGRES_CONNECTION_STRING", &pg.url()),
            ("LISTEN_ADDR", &format!("127.0.0.1:{port}")),
            ("DATA_DIR", data.to_str().unwrap()),
            ("WEBHOOK_URL", "http://127.0.0.1:9/static"),
            ("WEBHOOK_SECRET", "static-secret-0123456789"),
            ("WEBHOOKS_PER_TEAM", &LIMIT.to_string()),
        ],
        dir.join(format!("emitter-{port}.log")),
    )
}

fn registration(n: usize) -> Value {
    json!({
        "name": format!("hook {n}"),
        "url": format!("https://hooks.example.com/{n}"),
        "enabled": true,
        "events": ["sandbox.lifecycle.killed"],
        "signatureSecret": "team-webhook-secret-5e4d3c2b1a",
    })
}

#[test]
fn concurrent_registrations_never_pass_the_teams_limit() {
    let pg = PostgresServer::start();
    let (team_a, key_a) = pg.add_team("alpha");
    let (_team_b, key_b) = pg.add_team("beta");
    let dir = tempfile::tempdir().unwrap();
    let ports = [free_port(), free_port()];
    let _emitters: Vec<RunningEmitter> = ports.iter().map(|p| start(&pg, *p, dir.path())).collect();
    for port in ports {
        wait_for_api(port, &key_a);
    }

    // Forty registrations at once, alternating between the two instances.
    const TRIES: usize = 40;
    let barrier = Arc::new(Barrier::new(TRIES));
    let answers: Vec<(u16, Value)> = (0..TRIES)
        .map(|n| {
            let (barrier, key) = (barrier.clone(), key_a.clone());
            std::thread::spawn(move || {
                barrier.wait();
                api_call(
                    ports[n % 2],
                    "POST",
                    "/events/webhooks",
                    Some(&key),
                    Some(&registration(n)),
                )
            })
        })
        .collect::<Vec<_>>()
        .into_iter()
        .map(|t| t.join().unwrap())
        .collect();
    let created = answers.iter().filter(|(s, _)| *s == 201).count();
    assert_eq!(created, LIMIT, "{answers:#?}");
    for (status, body) in answers.iter().filter(|(s, _)| *s != 201) {
        assert_eq!(*status, 400, "{body}");
        assert_eq!(body["code"], 400, "{body}");
        let message = body["message"].as_str().unwrap();
        assert!(
            message.contains(&format!("already has {LIMIT} webhooks"))
                && message.contains("DELETE /events/webhooks/{id}")
                && message.contains("WEBHOOKS_PER_TEAM"),
            "{message}"
        );
    }
    // Nothing beyond the limit was stored, whichever instance answered.
    let stored = pg.psql(&format!(
        "SELECT count(*) FROM webhook_emitter.webhooks WHERE team_id = '{team_a}'"
    ));
    assert_eq!(stored, LIMIT.to_string());
    let (_, listed) = api_call(ports[1], "GET", "/events/webhooks", Some(&key_a), None);
    assert_eq!(listed.as_array().unwrap().len(), LIMIT);

    // Another team's limit is its own.
    let (status, body) = api_call(
        ports[0],
        "POST",
        "/events/webhooks",
        Some(&key_b),
        Some(&registration(99)),
    );
    assert_eq!(status, 201, "{body}");

    // A deletion makes room for one more, not two.
    let id = listed[0]["id"].as_str().unwrap();
    let path = format!("/events/webhooks/{id}");
    assert_eq!(
        api_call(ports[0], "DELETE", &path, Some(&key_a), None).0,
        200
    );
    let again = |n| {
        api_call(
            ports[1],
            "POST",
            "/events/webhooks",
            Some(&key_a),
            Some(&registration(n)),
        )
        .0
    };
    assert_eq!(again(100), 201);
    assert_eq!(again(101), 400);
}
