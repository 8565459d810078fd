//! Issue 27, item 4: the events API with E2B's user authentication, `Authorization: Bearer
//! <JWT>` with `X-Team-ID`, through the real binary, a real PostgreSQL holding E2B's `users`,
//! `user_identities` and `users_teams`, and an OpenID Connect issuer started here
//! (`support/oidc_issuer.rs`) whose keys the tests generate and rotate.

mod common;
mod support;

use common::events_api::wait_for_api;
use common::{RunningEmitter, free_port};
use serde_json::{Value, json};
use std::net::IpAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use support::oidc_issuer::{OidcIssuer, SigningKey, assemble, sign_hs256};
use support::postgres::PostgresServer;

const AUDIENCE: &str = "e2b-dashboard";
/// The emitter refetches an issuer's keys at most this often (`user_auth::refresh`).
const REFETCH_INTERVAL: Duration = Duration::from_secs(5);

/// An emitter serving the events API with these token issuers.
fn start_emitter(
    pg: &PostgresServer,
    port: u16,
    provider_config: &str,
    log: &str,
) -> RunningEmitter {
    let dir = tempfile::tempdir().unwrap().keep();
    let listen = format!("127.0.0.1:{port}");
    let data = dir.join("data");
    RunningEmitter::start_with_env(
        &[],
        &[
            ("POSTGRES_CONNECTION_STRING", &pg.url()),
            ("LISTEN_ADDR", &listen),
            ("DATA_DIR", data.to_str().unwrap()),
            ("WEBHOOK_URL", "http://127.0.0.1:9/static"),
            ("WEBHOOK_SECRET", "static-secret-0123456789"),
            ("AUTH_PROVIDER_CONFIG", provider_config),
            // Refusals are logged at debug: the log must still hold no token.
            ("RUST_LOG", "info,e2b_webhook_emitter=debug"),
        ],
        dir.join(log),
    )
}

/// An answer of the API.
#[derive(Debug)]
struct Reply {
    status: u16,
    body: Value,
    text: String,
    retry_after: Option<String>,
}

/// `method path` with these headers, from the loopback address `from` (127.0.0.1 by default:
/// the failure throttle counts per address).
fn request(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&Value>,
    from: Option<&str>,
) -> Reply {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let from: IpAddr = from.unwrap_or("127.0.0.1").parse().unwrap();
        let client = reqwest::Client::builder()
            .local_address(from)
            .build()
            .unwrap();
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut request = client.request(method, format!("http://127.0.0.1:{port}{path}"));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        if let Some(body) = body {
            request = request
                .header("Content-Type", "application/json")
                .body(body.to_string());
        }
        let response = request.send().await.expect("the API answers");
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get("retry-after")
            .map(|v| v.to_str().unwrap().to_owned());
        let text = response.text().await.unwrap();
        Reply {
            status,
            body: serde_json::from_str(&text).unwrap_or(Value::Null),
            text,
            retry_after,
        }
    })
}

/// `GET path` with a bearer token and `X-Team-ID` (either left out when `None`).
fn get_as(
    port: u16,
    path: &str,
    token: Option<&str>,
    team: Option<&str>,
    from: Option<&str>,
) -> Reply {
    let bearer = token.map(|t| format!("Bearer {t}"));
    let mut headers = Vec::new();
    if let Some(bearer) = &bearer {
        headers.push(("Authorization", bearer.as_str()));
    }
    if let Some(team) = team {
        headers.push(("X-Team-ID", team));
    }
    request(port, "GET", path, &headers, None, from)
}

/// Registers a webhook with the team's API key; returns it as the API answered.
fn register(port: u16, key: &str, url: &str) -> Value {
    let body = json!({
        "name": "hook", "url": url, "events": ["sandbox.lifecycle.created"],
        "signatureSecret": "team-webhook-secret-5e4d3c2b1a",
    });
    let reply = request(
        port,
        "POST",
        "/events/webhooks",
        &[("X-API-Key", key)],
        Some(&body),
        None,
    );
    assert_eq!(reply.status, 201, "{}", reply.text);
    reply.body
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// Claims a dashboard session token carries: valid for five minutes.
fn claims(iss: &str, sub: &str) -> Value {
    json!({"iss": iss, "sub": sub, "aud": AUDIENCE, "exp": now() + 300, "iat": now(), "email": "ada@example.com"})
}

/// `claims` with `changes` applied.
fn with(mut claims: Value, changes: Value) -> Value {
    for (k, v) in changes.as_object().unwrap() {
        claims[k] = v.clone();
    }
    claims
}

/// Refused with `status` and E2B's `Error` body (`{code, message}`, nothing else), holding none
/// of `absent` (tokens, other teams' ids and webhooks).
fn assert_refused(reply: &Reply, status: u16, case: &str, absent: &[&str]) {
    assert_eq!(reply.status, status, "{case}: {}", reply.text);
    let error = reply
        .body
        .as_object()
        .unwrap_or_else(|| panic!("{case}: not JSON: {}", reply.text));
    assert_eq!(error.len(), 2, "{case}: {}", reply.text);
    assert_eq!(error["code"], status, "{case}");
    assert!(
        error["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{case}"
    );
    for text in absent {
        assert!(
            !reply.text.contains(text),
            "{case}: the answer holds {text}: {}",
            reply.text
        );
    }
}

/// Four teams and two users: Ada is in alpha, gamma (blocked: "unpaid invoice") and delta
/// (banned), Bob in beta; alpha and beta have registered one webhook each with their API keys.
/// An issuer signing with `k1` is the emitter's one token issuer (keys cached `cache`).
struct Fixture {
    pg: PostgresServer,
    key: SigningKey,
    issuer: OidcIssuer,
    emitter: RunningEmitter,
    port: u16,
    team_a: String,
    key_a: String,
    team_b: String,
    key_b: String,
    blocked: String,
    banned: String,
    hook_a: Value,
    hook_b: Value,
}

impl Fixture {
    fn start(cache: &str, log: &str) -> Self {
        let pg = PostgresServer::start();
        let (team_a, key_a) = pg.add_team("alpha");
        let (team_b, key_b) = pg.add_team("beta");
        let (blocked, _) = pg.add_team("gamma");
        let (banned, _) = pg.add_team("delta");
        pg.psql(&format!(
            "UPDATE public.teams SET is_blocked = true, blocked_reason = 'unpaid invoice' WHERE id = '{blocked}';
             UPDATE public.teams SET is_banned = true WHERE id = '{banned}'"
        ));
        let key = SigningKey::generate("k1");
        let issuer = OidcIssuer::start(&[&key]);
        let ada = pg.add_user("ada@example.com", issuer.url(), "ada");
        for team in [&team_a, &blocked, &banned] {
            pg.add_member(&ada, team);
        }
        let bob = pg.add_user("bob@example.com", issuer.url(), "bob");
        pg.add_member(&bob, &team_b);
        let port = free_port();
        let emitter = start_emitter(&pg, port, &issuer.provider_config(AUDIENCE, cache), log);
        wait_for_api(port, &key_a);
        let hook_a = register(port, &key_a, "https://hooks.example.com/alpha");
        let hook_b = register(port, &key_b, "https://hooks.example.com/beta");
        assert_eq!(hook_a["teamId"], team_a.as_str());
        assert_eq!(hook_b["teamId"], team_b.as_str());
        Self {
            pg,
            key,
            issuer,
            emitter,
            port,
            team_a,
            key_a,
            team_b,
            key_b,
            blocked,
            banned,
            hook_a,
            hook_b,
        }
    }
}

#[test]
fn a_members_token_reads_its_team_only_and_every_bad_token_is_refused() {
    let Fixture {
        pg,
        key,
        issuer,
        emitter,
        port,
        team_a,
        key_a: _,
        team_b,
        key_b,
        blocked,
        banned,
        hook_a,
        hook_b,
    } = Fixture::start("1h", "user.log");
    let (id_a, id_b) = (
        hook_a["id"].as_str().unwrap(),
        hook_b["id"].as_str().unwrap(),
    );
    // Nothing is fetched before a token arrives.
    assert_eq!(
        (issuer.discovery_requests(), issuer.jwks_requests()),
        (0, 0)
    );

    // Ada's token with her team: exactly that team's webhooks, field by field as registered.
    let token = key.sign(&claims(issuer.url(), "ada"));
    let mut tokens = vec![token.clone()];
    let reply = get_as(port, "/events/webhooks", Some(&token), Some(&team_a), None);
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(reply.body, json!([hook_a]));
    assert_eq!(reply.body[0]["teamId"], team_a.as_str());
    let reply = get_as(
        port,
        &format!("/events/webhooks/{id_a}"),
        Some(&token),
        Some(&team_a),
        None,
    );
    assert_eq!((reply.status, &reply.body), (200, &hook_a));
    // The other team's webhook by id is not there, as with an API key.
    let reply = get_as(
        port,
        &format!("/events/webhooks/{id_b}"),
        Some(&token),
        Some(&team_a),
        None,
    );
    assert_refused(&reply, 404, "team B's webhook", &[id_b, &team_b]);
    let reply = get_as(port, "/events/sandboxes", Some(&token), Some(&team_a), None);
    assert_eq!((reply.status, reply.body), (200, json!([])));
    // Team B's own key still sees only B's.
    let reply = request(
        port,
        "GET",
        "/events/webhooks",
        &[("X-API-Key", &key_b)],
        None,
        None,
    );
    assert_eq!(reply.body, json!([hook_b]));

    // Many requests, one discovery and one JWKS fetch.
    for _ in 0..20 {
        assert_eq!(
            get_as(port, "/events/webhooks", Some(&token), Some(&team_a), None).status,
            200
        );
    }
    assert_eq!(
        (issuer.discovery_requests(), issuer.jwks_requests()),
        (1, 1)
    );

    // Each refusal from its own address range (127.0.0.2), below the throttle's 20.
    let other = SigningKey::generate("k9");
    let iss = issuer.url();
    let valid_parts: Vec<&str> = token.split('.').collect();
    // Ada's signed token with the payload swapped for one naming Bob (a member of B).
    let bob_payload = assemble(&json!({}), &claims(iss, "bob"), b"");
    let bob_payload = bob_payload.split('.').nth(1).unwrap();
    let tampered = format!("{}.{bob_payload}.{}", valid_parts[0], valid_parts[2]);
    let cases: Vec<(&str, String, Option<&str>)> = vec![
        (
            "expired",
            key.sign(&with(claims(iss, "ada"), json!({"exp": now() - 60}))),
            Some(&team_a),
        ),
        (
            "not yet valid",
            key.sign(&with(claims(iss, "ada"), json!({"nbf": now() + 600}))),
            Some(&team_a),
        ),
        (
            "no exp",
            key.sign(&json!({"iss": iss, "sub": "ada", "aud": AUDIENCE})),
            Some(&team_a),
        ),
        (
            "wrong audience",
            key.sign(&with(claims(iss, "ada"), json!({"aud": "another-app"}))),
            Some(&team_a),
        ),
        (
            "wrong issuer",
            key.sign(&with(
                claims(iss, "ada"),
                json!({"iss": "https://evil.example.com"}),
            )),
            Some(&team_a),
        ),
        (
            "issuer not exact",
            key.sign(&with(claims(iss, "ada"), json!({"iss": format!("{iss}/")}))),
            Some(&team_a),
        ),
        (
            "alg none",
            assemble(
                &json!({"alg": "none", "kid": "k1"}),
                &claims(iss, "ada"),
                b"",
            ),
            Some(&team_a),
        ),
        (
            "HS256 keyed with the public key PEM",
            sign_hs256("k1", key.public_pem.as_bytes(), &claims(iss, "ada")),
            Some(&team_a),
        ),
        (
            "HS256 keyed with the public point",
            sign_hs256("k1", &key.public_raw, &claims(iss, "ada")),
            Some(&team_a),
        ),
        (
            "tampered payload (sub of a member of B)",
            tampered,
            Some(&team_b),
        ),
        (
            "unknown kid",
            other.sign(&claims(iss, "ada")),
            Some(&team_a),
        ),
        ("a team the user is not in", token.clone(), Some(&team_b)),
        (
            "a team that does not exist",
            token.clone(),
            Some("6f1c2e0a-5b7d-4c3e-9a1b-2d3c4e5f6a7b"),
        ),
        ("X-Team-ID missing", token.clone(), None),
        ("X-Team-ID not a UUID", token.clone(), Some("alpha")),
        (
            "an identity that is no user",
            key.sign(&claims(iss, "mallory")),
            Some(&team_a),
        ),
        ("not a JWT", "e2b_0011223344".to_owned(), Some(&team_a)),
    ];
    assert!(cases.len() < 20);
    for (case, bad, team) in &cases {
        tokens.push(bad.clone());
        let reply = get_as(
            port,
            "/events/webhooks",
            Some(bad),
            *team,
            Some("127.0.0.2"),
        );
        assert_refused(&reply, 401, case, &[bad, id_a, id_b, &team_b, &team_a]);
        if case.starts_with("X-Team-ID") {
            let message = reply.body["message"].as_str().unwrap();
            assert!(message.starts_with("X-Team-ID:"), "{case}: {message}");
        }
    }
    // A member of a banned or blocked team is told so: 403, as E2B answers.
    for (team, message) in [
        (&blocked, "team is blocked: unpaid invoice"),
        (&banned, "team is banned"),
    ] {
        let reply = get_as(
            port,
            "/events/webhooks",
            Some(&token),
            Some(team),
            Some("127.0.0.2"),
        );
        assert_refused(&reply, 403, message, &[&token, id_a, id_b]);
        assert_eq!(reply.body["message"], message);
    }
    // Writes are refused the same way: nothing registered for B with A's member's token.
    let body = json!({"name": "x", "url": "https://hooks.example.com/x", "events": ["sandbox.lifecycle.created"], "signatureSecret": "another-secret-0123456789"});
    let bearer = format!("Bearer {token}");
    let reply = request(
        port,
        "POST",
        "/events/webhooks",
        &[("Authorization", &bearer), ("X-Team-ID", &team_b)],
        Some(&body),
        Some("127.0.0.2"),
    );
    assert_refused(&reply, 401, "register for another team", &[&token]);
    let reply = request(
        port,
        "POST",
        "/events/webhooks",
        &[("Authorization", &bearer), ("X-Team-ID", &team_a)],
        Some(&body),
        None,
    );
    assert_eq!(reply.status, 201, "{}", reply.text);
    assert_eq!(reply.body["teamId"], team_a.as_str());
    assert_eq!(
        pg.psql(&format!(
            "SELECT count(*) FROM webhook_emitter.webhooks WHERE team_id = '{team_b}'"
        )),
        "1"
    );

    // No token, nor any part of its signature, reaches the log.
    let log = emitter.log_text();
    assert!(
        log.contains("bearer token refused"),
        "refusals are logged: {log}"
    );
    for token in &tokens {
        for part in token.split('.').filter(|p| p.len() > 20) {
            assert!(!log.contains(part), "the log holds a token part {part}");
        }
    }
}

#[test]
fn keys_are_fetched_once_and_again_for_a_new_kid_at_most_every_interval() {
    let f = Fixture::start("1h", "rotation.log");
    let (issuer, k1, port, team) = (&f.issuer, &f.key, f.port, &f.team_a);
    let k2 = SigningKey::generate("k2");

    let old = k1.sign(&claims(issuer.url(), "ada"));
    let new = k2.sign(&claims(issuer.url(), "ada"));
    for _ in 0..25 {
        assert_eq!(
            get_as(port, "/events/webhooks", Some(&old), Some(team), None).status,
            200
        );
    }
    assert_eq!(
        (issuer.discovery_requests(), issuer.jwks_requests()),
        (1, 1)
    );

    // A flood of tokens with a kid the issuer does not publish: one refetch, not one per token.
    std::thread::sleep(REFETCH_INTERVAL + Duration::from_millis(300));
    for _ in 0..15 {
        let reply = get_as(
            port,
            "/events/webhooks",
            Some(&new),
            Some(team),
            Some("127.0.0.3"),
        );
        assert_refused(&reply, 401, "unknown kid", &[&new]);
    }
    assert_eq!(
        (issuer.discovery_requests(), issuer.jwks_requests()),
        (1, 2)
    );

    // The issuer rotates: k2 is published. Within the interval the keys are not fetched again…
    issuer.publish(&[k1, &k2]);
    let reply = get_as(
        port,
        "/events/webhooks",
        Some(&new),
        Some(team),
        Some("127.0.0.3"),
    );
    assert_refused(&reply, 401, "new kid within the interval", &[&new]);
    assert_eq!(issuer.jwks_requests(), 2);
    // …after it, the new kid's token fetches them once and is accepted; the old key still works.
    std::thread::sleep(REFETCH_INTERVAL + Duration::from_millis(300));
    let reply = get_as(port, "/events/webhooks", Some(&new), Some(team), None);
    assert_eq!((reply.status, reply.body), (200, json!([f.hook_a])));
    assert_eq!(issuer.jwks_requests(), 3);
    for token in [&new, &old, &new] {
        assert_eq!(
            get_as(port, "/events/webhooks", Some(token), Some(team), None).status,
            200
        );
    }
    assert_eq!(
        (issuer.discovery_requests(), issuer.jwks_requests()),
        (1, 3)
    );
}

#[test]
fn an_api_key_goes_first_and_refused_bearer_tokens_are_throttled() {
    let Fixture {
        pg,
        key,
        issuer,
        emitter: _emitter,
        port,
        team_a,
        key_a,
        team_b: _,
        key_b,
        blocked,
        banned: _,
        hook_a,
        hook_b,
    } = Fixture::start("5m", "both.log");
    let token = key.sign(&claims(issuer.url(), "ada"));
    let expired = key.sign(&with(
        claims(issuer.url(), "ada"),
        json!({"exp": now() - 60}),
    ));
    let both = |api_key: &str, token: &str, team: &str, from: &str| {
        let bearer = format!("Bearer {token}");
        request(
            port,
            "GET",
            "/events/webhooks",
            &[
                ("X-API-Key", api_key),
                ("Authorization", &bearer),
                ("X-Team-ID", team),
            ],
            None,
            Some(from),
        )
    };

    // Both sent, both valid: the API key's team (E2B tries ApiKeyAuth first).
    assert_eq!(
        both(&key_b, &token, &team_a, "127.0.0.4").body,
        json!([hook_b])
    );
    // A refused key with a valid token: the token's team.
    assert_eq!(
        both("e2b_00", &token, &team_a, "127.0.0.4").body,
        json!([hook_a])
    );
    // A valid key with a refused token: the key's team.
    assert_eq!(
        both(&key_b, &expired, &team_a, "127.0.0.4").body,
        json!([hook_b])
    );
    // Neither: the first credential's answer; a blocked team's 403 wins over it.
    let reply = both("e2b_00", &expired, &team_a, "127.0.0.4");
    assert_refused(&reply, 401, "both refused", &[&expired, &team_a]);
    assert_eq!(reply.body["message"], "invalid API key");
    let reply = both("e2b_00", &token, &blocked, "127.0.0.4");
    assert_refused(&reply, 403, "bad key, blocked team", &[&token]);

    // 20 refused tokens from one address: then even a valid token is answered 429 there, while
    // another address is served.
    for _ in 0..20 {
        let reply = get_as(
            port,
            "/events/webhooks",
            Some(&expired),
            Some(&team_a),
            Some("127.0.0.5"),
        );
        assert_refused(&reply, 401, "expired", &[&expired]);
    }
    let reply = get_as(
        port,
        "/events/webhooks",
        Some(&token),
        Some(&team_a),
        Some("127.0.0.5"),
    );
    assert_refused(&reply, 429, "throttled", &[&token, &team_a]);
    assert!(reply.retry_after.is_some(), "{reply:?}");
    assert_eq!(
        get_as(
            port,
            "/events/webhooks",
            Some(&token),
            Some(&team_a),
            Some("127.0.0.6")
        )
        .status,
        200
    );
    // A valid token does not make key guessing free: each refused key counts all the same.
    for _ in 0..20 {
        assert_eq!(both("e2b_00", &token, &team_a, "127.0.0.7").status, 200);
    }
    assert_eq!(both("e2b_00", &token, &team_a, "127.0.0.7").status, 429);

    // An issuer whose discovery document declares another issuer is never trusted: its tokens
    // cannot be judged (503), and E2B's check of the document stands.
    let liar_key = SigningKey::generate("l1");
    let liar = OidcIssuer::start(&[&liar_key]);
    liar.declare_issuer("https://elsewhere.example.com");
    let lied_user = pg.add_user("eve@example.com", liar.url(), "eve");
    pg.add_member(&lied_user, &team_a);
    let liar_port = free_port();
    let _liar_emitter = start_emitter(
        &pg,
        liar_port,
        &liar.provider_config(AUDIENCE, "5m"),
        "liar.log",
    );
    wait_for_api(liar_port, &key_a);
    let lied = liar_key.sign(&claims(liar.url(), "eve"));
    let reply = get_as(
        liar_port,
        "/events/webhooks",
        Some(&lied),
        Some(&team_a),
        None,
    );
    assert_refused(
        &reply,
        503,
        "discovery names another issuer",
        &[&lied, &team_a],
    );
    assert_eq!(liar.jwks_requests(), 0);

    // Without issuers ({"jwt":[]}), every token is refused and keys keep working.
    let off_port = free_port();
    let _off = start_emitter(&pg, off_port, r#"{"jwt":[]}"#, "off.log");
    wait_for_api(off_port, &key_a);
    let reply = get_as(
        off_port,
        "/events/webhooks",
        Some(&token),
        Some(&team_a),
        None,
    );
    assert_refused(&reply, 401, "no issuers", &[&token]);
    assert_eq!(
        issuer.discovery_requests(),
        1,
        "the other emitter asked nothing"
    );

    // A bad value stops the binary with one line naming the setting.
    for bad in [
        "{",
        r#"{"jwt":[{"issuer":{"url":"http://auth.example.com","audiences":["e2b"]}}]}"#,
        r#"{"jwt":[{"issuer":{"url":"https://auth.example.com"}}]}"#,
    ] {
        let (code, _, stderr) = common::output(
            common::emitter()
                .arg("run")
                .env("WEBHOOK_URL", "http://127.0.0.1:9/")
                .env("WEBHOOK_SECRET", "static-secret-0123456789")
                .env("POSTGRES_CONNECTION_STRING", pg.url())
                .env("AUTH_PROVIDER_CONFIG", bad),
        );
        assert_eq!(code, 2, "{bad}: {stderr}");
        assert!(stderr.contains("AUTH_PROVIDER_CONFIG"), "{stderr}");
        assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    }
}
