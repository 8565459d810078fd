//! Issue 29: registered webhooks' signing secrets are sealed at rest in Postgres under
//! `WEBHOOK_SECRETS_KEY` — rows the previous release wrote in plain text are sealed at start, a
//! `pg_dump` shows no secret, deliveries are still signed with each webhook's own secret (checked
//! by the verifier E2B's docs print), a rotation ("NEW,OLD", `webhook-secrets reseal`, NEW alone)
//! keeps every webhook delivering, and a key that cannot open the stored secrets, or none at
//! all, stops the start with one line naming the setting.

mod common;
mod support;

use common::events_api::{api_call, wait_for_api};
use common::{RunningEmitter, SECRETS_KEY, free_port};
use serde_json::json;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::str::FromStr;
use std::time::{Duration, Instant};
use support::docs_receiver::{Receiver, SECRET_A, SECRET_B, xadd};
use support::postgres::PostgresServer;
use support::redis::RedisServer;

/// Team A's secret as the release before sealing stored it, before the team replaced it.
const FIRST_SECRET_A: &str = "alpha-first-secret-replaced-later";
/// The key a rotation brings in (base64 of 32 bytes).
const NEW_KEY: &str = "bmV3LWtleS1icm91Z2h0LWluLWJ5LWEtcm90YXRpb24=";

/// Our schema as the release before sealing left it: its migrations (every one before the one
/// that adds the sealed column), applied by sqlx as that release applied them, as our role.
fn released_schema(pg: &PostgresServer) {
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/postgres/migrations");
    let mut names: Vec<String> = std::fs::read_dir(&source)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    let released = tempfile::tempdir().unwrap();
    for name in names
        .iter()
        .take_while(|n| !n.ends_with("_sealed_secrets.sql"))
    {
        std::fs::copy(source.join(name), released.path().join(name)).unwrap();
    }
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let options = sqlx::postgres::PgConnectOptions::from_str(&pg.url())
            .unwrap()
            .options([("search_path", "webhook_emitter")]);
        let pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(1)
            .connect_with(options)
            .await
            .unwrap();
        sqlx::query("CREATE SCHEMA webhook_emitter")
            .execute(&pool)
            .await
            .unwrap();
        sqlx::migrate::Migrator::new(released.path())
            .await
            .unwrap()
            .run(&pool)
            .await
            .unwrap();
    });
}

/// Registered webhooks only, from the orchestrator's stream, sealing with `key`.
fn start(
    pg: &PostgresServer,
    redis: &RedisServer,
    port: u16,
    data: &Path,
    key: &str,
) -> RunningEmitter {
    RunningEmitter::start_with_env(
        &[],
        &[
            ("POSTGRES_CONNECTION_STRING", &pg.url()),
            ("LISTEN_ADDR", &format!("127.0.0.1:{port}")),
            ("DATA_DIR", data.join("outbox").to_str().unwrap()),
            ("REDIS_URL", &redis.host_port()),
            ("API_ALLOW_PRIVATE_CIDRS", "127.0.0.1/32"),
            ("WEBHOOK_SECRETS_KEY", key),
        ],
        data.join(format!("emitter-{}.log", free_port())),
    )
}

/// The exit status, if the process ends within `wait`.
fn exits_within(emitter: &mut RunningEmitter, wait: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + wait;
    while Instant::now() < deadline {
        if let Some(status) = emitter.child.try_wait().unwrap() {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    None
}

/// The key id an envelope names (bytes 2–5), as hex.
fn key_id_of(pg: &PostgresServer, webhook: &str) -> String {
    pg.psql(&format!(
        "SELECT encode(substring(sealed_secret FROM 2 FOR 4), 'hex') FROM webhook_emitter.webhooks WHERE id = '{webhook}'"
    ))
}

/// Sends one `killed` event per team and checks that each arrives once, at its own webhook,
/// with a signature the docs' verifier accepts for that webhook's secret.
fn both_teams_delivered(
    redis: &RedisServer,
    receiver: &Receiver,
    (team_a, team_b): (&str, &str),
    round: &str,
    log: &dyn Fn() -> String,
) {
    let mut conn = redis.connection();
    xadd(&mut conn, &format!("a-{round}"), "killed", "sbx-a", team_a);
    xadd(&mut conn, &format!("b-{round}"), "killed", "sbx-b", team_b);
    let got = receiver.collect(2, Duration::from_secs(30));
    assert_eq!(got.len(), 2, "round {round}: {got:#?}\nlog:\n{}", log());
    for request in &got {
        assert_eq!(request["valid"], true, "round {round}: {request}");
        let team = if request["path"] == "/a" {
            team_a
        } else {
            team_b
        };
        assert_eq!(request["body"]["sandbox_team_id"], team, "{request}");
    }
}

#[test]
fn secrets_are_sealed_at_rest_survive_a_rotation_and_never_reach_a_dump() {
    let pg = PostgresServer::start();
    let redis = RedisServer::start();
    let receiver = Receiver::start();
    let (team_a, key_a) = pg.add_team("alpha");
    let (team_b, key_b) = pg.add_team("beta");
    let dir = tempfile::tempdir().unwrap();
    let data: PathBuf = dir.path().to_owned();

    // The release before sealing registered team A's webhook, its secret in clear (the one the
    // team replaces below).
    released_schema(&pg);
    let hook_a = pg.psql(&format!(
        "INSERT INTO webhook_emitter.webhooks (id, team_id, name, url, enabled, events, signature_secret)
         VALUES (gen_random_uuid(), '{team_a}', 'a', 'http://127.0.0.1:{}/a', true,
                 ARRAY['sandbox.lifecycle.killed'], '{FIRST_SECRET_A}')
         RETURNING id",
        receiver.port
    ));
    assert_eq!(
        pg.psql("SELECT count(*) FROM webhook_emitter.webhooks WHERE signature_secret IS NOT NULL"),
        "1"
    );

    // This release seals it at start.
    let port = free_port();
    let emitter = start(&pg, &redis, port, &data, SECRETS_KEY);
    wait_for_api(port, &key_a);
    assert_eq!(
        pg.psql(
            "SELECT count(*) FROM webhook_emitter.webhooks
              WHERE signature_secret IS NULL AND sealed_secret IS NOT NULL"
        ),
        "1",
        "log:\n{}",
        emitter.log_text()
    );
    assert!(
        emitter
            .log_text()
            .contains("sealed signing secrets stored in plain text"),
        "{}",
        emitter.log_text()
    );
    // During a rolling upgrade, an instance of the older release updates A's secret its way
    // (in clear, the envelope left as it was): this release signs with the new one and seals it.
    pg.psql(&format!(
        "UPDATE webhook_emitter.webhooks SET signature_secret = '{SECRET_A}', updated_at = now()
          WHERE id = '{hook_a}'"
    ));
    assert!(
        common::eventually(Duration::from_secs(10), || pg.psql(
            "SELECT count(*) FROM webhook_emitter.webhooks WHERE signature_secret IS NOT NULL"
        ) == "0"),
        "the older release's update is sealed; log:\n{}",
        emitter.log_text()
    );
    // Team B registers through the API: written sealed.
    let body = json!({
        "name": "b", "url": format!("http://127.0.0.1:{}/b", receiver.port), "enabled": true,
        "events": ["sandbox.lifecycle.killed"], "signatureSecret": SECRET_B,
    });
    let (status, created) = api_call(port, "POST", "/events/webhooks", Some(&key_b), Some(&body));
    assert_eq!(status, 201, "{created}");
    let hook_b = created["id"].as_str().unwrap().to_owned();
    assert_eq!(
        pg.psql("SELECT count(*) FROM webhook_emitter.webhooks WHERE signature_secret IS NOT NULL"),
        "0"
    );
    // Both webhooks wait for their gate keys, then sign with their own secrets.
    let mut conn = redis.connection();
    assert!(common::eventually(Duration::from_secs(10), || {
        support::docs_receiver::gate_exists(&mut conn, &team_a)
            && support::docs_receiver::gate_exists(&mut conn, &team_b)
    }));
    both_teams_delivered(&redis, &receiver, (&team_a, &team_b), "1", &|| {
        emitter.log_text()
    });

    // A dump of the whole database holds the webhooks but neither secret nor the key.
    let dump = pg.dump();
    assert!(
        dump.contains(&hook_a) && dump.contains(&hook_b),
        "the dump has the rows"
    );
    for secret in [SECRET_A, SECRET_B, FIRST_SECRET_A, SECRETS_KEY] {
        assert!(!dump.contains(secret), "the dump shows {secret}");
    }
    // Nor do the log and the metrics.
    for text in [emitter.log_text(), common::http_get(port, "/metrics").1] {
        for secret in [SECRET_A, SECRET_B, SECRETS_KEY] {
            assert!(!text.contains(secret), "{secret} in:\n{text}");
        }
    }
    drop(emitter);
    // The copy of the registered webhooks the instance keeps in DATA_DIR holds them sealed too.
    let mut files = vec![data.join("outbox")];
    let mut read = 0;
    while let Some(path) = files.pop() {
        if path.is_dir() {
            files.extend(std::fs::read_dir(&path).unwrap().map(|e| e.unwrap().path()));
        } else {
            let bytes = std::fs::read(&path).unwrap();
            read += bytes.len();
            for secret in [SECRET_A, SECRET_B] {
                let found = bytes.windows(secret.len()).any(|w| w == secret.as_bytes());
                assert!(!found, "{} holds {secret}", path.display());
            }
        }
    }
    assert!(read > 0, "the data directory was read");

    // Rotation, step 1: the new key first, the old one still opens; a new write uses the new key.
    let emitter = start(
        &pg,
        &redis,
        port,
        &data,
        &format!("{NEW_KEY},{SECRETS_KEY}"),
    );
    wait_for_api(port, &key_a);
    let old_id = key_id_of(&pg, &hook_b);
    let patch = json!({"signatureSecret": SECRET_B});
    let path_b = format!("/events/webhooks/{hook_b}");
    assert_eq!(
        api_call(port, "PATCH", &path_b, Some(&key_b), Some(&patch)).0,
        200
    );
    let new_id = key_id_of(&pg, &hook_b);
    assert_ne!(new_id, old_id, "written under the new key");
    assert_eq!(
        key_id_of(&pg, &hook_a),
        old_id,
        "A is still under the old key"
    );
    both_teams_delivered(&redis, &receiver, (&team_a, &team_b), "2", &|| {
        emitter.log_text()
    });
    drop(emitter);

    // A sealed secret copied onto another webhook's row does not open there: the reseal stops,
    // naming that webhook and the setting, and changes nothing.
    let sealed = |id: &str| {
        pg.psql(&format!(
            "SELECT encode(sealed_secret, 'hex') FROM webhook_emitter.webhooks WHERE id = '{id}'"
        ))
    };
    let (sealed_a, sealed_b) = (sealed(&hook_a), sealed(&hook_b));
    pg.psql(&format!(
        "UPDATE webhook_emitter.webhooks SET sealed_secret = decode('{sealed_a}', 'hex') WHERE id = '{hook_b}'"
    ));
    let reseal = |key: &str| {
        common::output(
            common::emitter()
                .args(["webhook-secrets", "reseal"])
                .env("POSTGRES_CONNECTION_STRING", pg.url())
                .env("WEBHOOK_SECRETS_KEY", key),
        )
    };
    let rotation = format!("{NEW_KEY},{SECRETS_KEY}");
    let (code, _, stderr) = reseal(&rotation);
    assert_eq!(code, 2, "{stderr}");
    let last = stderr.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("error: WEBHOOK_SECRETS_KEY: does not open the signing secrets of 1 ")
            && last.contains(&hook_b),
        "{stderr}"
    );
    assert!(stderr.contains("copied from another webhook"), "{stderr}");
    assert_eq!(sealed(&hook_a), sealed_a, "nothing changed");
    pg.psql(&format!(
        "UPDATE webhook_emitter.webhooks SET sealed_secret = decode('{sealed_b}', 'hex') WHERE id = '{hook_b}'"
    ));

    // Step 2: reseal every row under the new key; the counts say what moved.
    let (code, stdout, stderr) = reseal(&rotation);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(
        stdout.contains(&format!(
            "resealed 2 webhook signing secret(s) under key {new_id}; before: 1 under key {new_id} (current), 1 under key {old_id} (older), 0 in plain text"
        )),
        "{stdout}"
    );
    assert_eq!(key_id_of(&pg, &hook_a), new_id);
    assert!(!stdout.contains(NEW_KEY) && !stdout.contains(SECRETS_KEY));

    // The old key alone no longer opens them: one line naming the setting, exit 2.
    let mut stale = start(&pg, &redis, port, &data, SECRETS_KEY);
    let status = exits_within(&mut stale, Duration::from_secs(20));
    let log = stale.log_text();
    assert_eq!(status.and_then(|s| s.code()), Some(2), "{log}");
    let last = log.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("error: WEBHOOK_SECRETS_KEY: does not open the signing secrets of 2 registered webhook(s)"),
        "{log}"
    );
    assert!(
        !log.contains(SECRETS_KEY) && !log.contains(NEW_KEY),
        "{log}"
    );
    drop(stale);

    // Step 3: the new key alone delivers to both.
    let emitter = start(&pg, &redis, port, &data, NEW_KEY);
    wait_for_api(port, &key_a);
    both_teams_delivered(&redis, &receiver, (&team_a, &team_b), "3", &|| {
        emitter.log_text()
    });
    let dump = pg.dump();
    for secret in [SECRET_A, SECRET_B, SECRETS_KEY, NEW_KEY] {
        assert!(!dump.contains(secret), "the dump shows {secret}");
    }
}

#[test]
fn the_events_api_without_a_usable_key_stops_at_start_with_one_line() {
    // Refused before any connection: the database need not exist.
    let run = |key: Option<&str>| {
        let mut cmd = common::emitter();
        cmd.arg("run")
            .env(
                "POSTGRES_CONNECTION_STRING",
                "postgresql://e2b@127.0.0.1:1/e2b",
            )
            .env("DATA_DIR", tempfile::tempdir().unwrap().keep());
        match key {
            Some(key) => cmd.env("WEBHOOK_SECRETS_KEY", key),
            None => cmd.env_remove("WEBHOOK_SECRETS_KEY"),
        };
        common::output(&mut cmd)
    };
    for (key, says) in [
        (None, "is not set"),
        (Some("hunter2-not-a-key"), "is not base64"),
        (Some("c2hvcnQta2V5LWh1bnRlcjI="), "is 17 bytes"),
    ] {
        let (code, stdout, stderr) = run(key);
        assert_eq!(code, 2, "{stdout}{stderr}");
        let lines: Vec<&str> = stderr.lines().collect();
        assert_eq!(lines.len(), 1, "{stderr}");
        assert!(
            lines[0].starts_with("error: WEBHOOK_SECRETS_KEY (--webhook-secrets-key): ")
                && lines[0].contains(says)
                && lines[0].contains("openssl rand -base64 32"),
            "{stderr}"
        );
        if let Some(key) = key {
            assert!(!stderr.contains(key), "{stderr}");
        }
    }
}

/// A webhook whose secret stops opening while the service runs (its row altered, or sealed by an
/// instance holding a key this one lacks) is not a deleted webhook: what is queued for it, and
/// what arrives meanwhile, waits on disk and goes out, signed with its secret, once it opens.
#[test]
fn a_secret_that_stops_opening_holds_its_deliveries_instead_of_dropping_them() {
    let pg = PostgresServer::start();
    let redis = RedisServer::start();
    let receiver = Receiver::start();
    let (team_a, key_a) = pg.add_team("alpha");
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let emitter = start(&pg, &redis, port, dir.path(), SECRETS_KEY);
    wait_for_api(port, &key_a);
    let body = json!({
        "name": "a", "url": format!("http://127.0.0.1:{}/a", receiver.port), "enabled": true,
        "events": ["sandbox.lifecycle.killed"], "signatureSecret": SECRET_A,
    });
    let (status, created) = api_call(port, "POST", "/events/webhooks", Some(&key_a), Some(&body));
    assert_eq!(status, 201, "{created}");
    let hook = created["id"].as_str().unwrap().to_owned();
    let mut conn = redis.connection();
    assert!(common::eventually(Duration::from_secs(10), || {
        support::docs_receiver::gate_exists(&mut conn, &team_a)
    }));
    xadd(&mut conn, "before", "killed", "sbx-1", &team_a);
    let got = receiver.collect(1, Duration::from_secs(30));
    assert_eq!(got.len(), 1, "log:\n{}", emitter.log_text());
    assert_eq!(got[0]["valid"], true, "{}", got[0]);

    // Flip the last byte of the envelope (its tag): it no longer opens.
    let flip = format!(
        "UPDATE webhook_emitter.webhooks
            SET sealed_secret = set_byte(sealed_secret, length(sealed_secret) - 1,
                                         get_byte(sealed_secret, length(sealed_secret) - 1) # 255)
          WHERE id = '{hook}'"
    );
    pg.psql(&flip);
    assert!(
        common::eventually(Duration::from_secs(10), || emitter
            .log_text()
            .contains("signing secret does not open")),
        "{}",
        emitter.log_text()
    );
    xadd(&mut conn, "meanwhile", "killed", "sbx-2", &team_a);
    let early = receiver.collect(1, Duration::from_secs(4));
    assert!(early.is_empty(), "sent without its secret: {early:?}");

    // The key opens it again (the byte flipped back): the event that waited goes out, signed.
    pg.psql(&flip);
    let got = receiver.collect(1, Duration::from_secs(30));
    assert_eq!(
        got.len(),
        1,
        "the waiting event; log:\n{}",
        emitter.log_text()
    );
    assert_eq!(got[0]["valid"], true, "{}", got[0]);
    assert_eq!(got[0]["body"]["sandbox_id"], "sbx-2", "{}", got[0]);
    let log = emitter.log_text();
    assert!(!log.contains("no longer delivering to it"), "{log}");
    assert!(!log.contains("dropped deliveries"), "{log}");
}
