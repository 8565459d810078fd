//! Issue 29: one team's slow, hanging or failing receiver costs that team only. 100 teams with
//! a registered webhook each on real Postgres and Redis: one receiver hangs past the attempt
//! timeout, one answers 500 to everything, the other 98 are fast. The bad teams are given a
//! backlog on many sandboxes first, so without per-team shares they would take every attempt
//! slot. The timings themselves are measured by the ignored `measure_*` runs (`scripts/bench`,
//! BENCHMARKS.md "Many teams").

mod common;
mod support;

use common::events_api::wait_for_api;
use common::{RunningEmitter, eventually, free_port};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use support::many_teams::{
    Behaviour, TeamsReceiver, quantile, register_webhooks, rss_kib, send_events, threads,
};
use support::postgres::PostgresServer;
use support::redis::RedisServer;

const TEAMS: usize = 100;
const HANGING: usize = 0;
const FAILING: usize = 1;
/// Events per fast team, on one sandbox (so they must also arrive in order).
const EVENTS_PER_TEAM: usize = 5;
/// Sandboxes (one event each) of each bad team: far more than a team's share.
const BAD_BACKLOG: usize = 40;

/// Postgres, Redis and the emitter (the given binary and settings) with `teams` teams, each
/// with a webhook registered to `receiver`.
struct Cluster {
    _pg: PostgresServer,
    redis: RedisServer,
    emitter: RunningEmitter,
    teams: Vec<String>,
    _dir: tempfile::TempDir,
}

impl Cluster {
    fn start(binary: &Path, teams: usize, receiver: u16, settings: &[(&str, &str)]) -> Self {
        let pg = PostgresServer::start();
        let redis = RedisServer::start();
        let added = pg.add_teams("tenant", teams);
        let port = free_port();
        let dir = tempfile::tempdir().unwrap();
        let (listen, data) = (format!("127.0.0.1:{port}"), dir.path().join("data"));
        let mut env = vec![
            ("POSTGRES_CONNECTION_STRING", pg.url()),
            ("LISTEN_ADDR", listen),
            ("DATA_DIR", data.to_str().unwrap().to_owned()),
            ("REDIS_URL", redis.host_port()),
            ("API_ALLOW_PRIVATE_CIDRS", "127.0.0.1/32".to_owned()),
        ];
        env.extend(settings.iter().map(|(k, v)| (*k, (*v).to_owned())));
        let log = dir.path().join("emitter.log");
        let child = common::emitter_at(binary)
            .env("ADMIN_TOKEN", common::ADMIN_TOKEN)
            .arg("run")
            .envs(env)
            .stdout(std::fs::File::create(&log).unwrap())
            .stderr(std::fs::OpenOptions::new().append(true).open(&log).unwrap())
            .spawn()
            .unwrap();
        let emitter = RunningEmitter { child, log };
        let keys: Vec<String> = added.iter().map(|(_, key)| key.clone()).collect();
        if let Some(key) = keys.first() {
            wait_for_api(port, key);
        } else {
            common::wait_for_port(port, Duration::from_secs(30));
        }
        register_webhooks(port, &keys, receiver);
        // Every webhook has its dispatcher, and its team's gate key is set.
        assert!(
            eventually(
                Duration::from_secs(120),
                || support::many_teams::webhooks_served(port) == teams
            ),
            "not every webhook is served; log:\n{}",
            emitter.log_text()
        );
        let mut conn = redis.connection();
        for (team, _) in &added {
            assert!(
                eventually(Duration::from_secs(30), || {
                    support::docs_receiver::gate_exists(&mut conn, team)
                }),
                "team {team} is not served"
            );
        }
        Self {
            _pg: pg,
            redis,
            emitter,
            teams: added.into_iter().map(|(team, _)| team).collect(),
            _dir: dir,
        }
    }

    fn pid(&self) -> u32 {
        self.emitter.child.id()
    }
}

/// What one run with 100 teams measured.
struct Run {
    /// Fast teams' latency, event written to Redis → accepted by its receiver.
    latencies: Vec<Duration>,
    /// When the last fast event arrived.
    last_fast: Instant,
}

/// Sends the bad teams' backlogs (when `bad`), waits until the hanging team holds `hold`
/// requests open, then sends every fast team's events and waits for all of them.
fn run_teams(
    cluster: &Cluster,
    receiver: &TeamsReceiver,
    bad: bool,
    hold: usize,
) -> (Run, HashMap<String, Instant>) {
    let mut conn = cluster.redis.connection();
    if bad {
        for team in [HANGING, FAILING] {
            send_events(&mut conn, (team, &cluster.teams[team]), BAD_BACKLOG, 1);
        }
        assert!(
            eventually(Duration::from_secs(60), || receiver.open(HANGING) >= hold),
            "the hanging receiver never held {hold} requests (it holds {}); log:\n{}",
            receiver.open(HANGING),
            cluster.emitter.log_text()
        );
    }
    let fast: Vec<usize> = (0..TEAMS)
        .filter(|n| !bad || ![HANGING, FAILING].contains(n))
        .collect();
    let mut written = HashMap::new();
    for &n in &fast {
        written.extend(send_events(
            &mut conn,
            (n, &cluster.teams[n]),
            1,
            EVENTS_PER_TEAM,
        ));
    }
    let expected = fast.len() * EVENTS_PER_TEAM;
    assert!(
        eventually(Duration::from_secs(120), || receiver.accepted() >= expected),
        "{} of {expected} fast deliveries arrived; log:\n{}",
        receiver.accepted(),
        cluster.emitter.log_text()
    );
    let arrivals = receiver.arrivals();
    let latencies = arrivals
        .iter()
        .filter_map(|a| Some(a.at - *written.get(&a.event_id)?))
        .collect();
    let last_fast = arrivals.iter().map(|a| a.at).max().unwrap();
    (
        Run {
            latencies,
            last_fast,
        },
        written,
    )
}

fn behaviours(bad: bool) -> Vec<Behaviour> {
    (0..TEAMS)
        .map(|n| match n {
            HANGING if bad => Behaviour::Hang,
            FAILING if bad => Behaviour::Fail,
            _ => Behaviour::Fast,
        })
        .collect()
}

#[test]
fn a_hanging_and_a_failing_receiver_cost_their_own_teams_only() {
    const SHARE: usize = 4;
    const TIMEOUT: Duration = Duration::from_secs(20);
    let receiver = TeamsReceiver::start(behaviours(true));
    // A total of 16 attempts: without per-team shares the two bad teams' 80 sandboxes would take
    // all 16 slots, and the fast teams would wait for the hanging attempts to time out.
    let cluster = Cluster::start(
        &common::binary(),
        TEAMS,
        receiver.port,
        &[
            ("TEAM_DELIVERY_CONCURRENCY", "4"),
            ("REGISTERED_DELIVERY_CONCURRENCY", "16"),
            ("WEBHOOK_TIMEOUT", "20s"),
        ],
    );
    let (run, _) = run_teams(&cluster, &receiver, true, SHARE);

    // Every fast delivery arrived while the hanging receiver still held its first attempts:
    // none of them waited for a hanging attempt to time out.
    let hung_from = receiver
        .first_hang()
        .expect("the hanging receiver was called");
    assert!(
        run.last_fast < hung_from + TIMEOUT,
        "the last fast delivery came {:?} after the first hanging attempt (timeout {TIMEOUT:?})",
        run.last_fast - hung_from
    );
    // Each bad team held at most its share of attempts, however large its backlog.
    for team in [HANGING, FAILING] {
        assert!(
            receiver.max_open(team) <= SHARE,
            "team {team} had {} requests open at once; its share is {SHARE}",
            receiver.max_open(team)
        );
    }
    assert!(
        receiver.requests(FAILING) >= SHARE,
        "the failing team was tried"
    );
    // The fast teams got everything, signed with their own secrets, in order.
    let arrivals = receiver.arrivals();
    assert!(arrivals.iter().all(|a| a.signature_ok), "a bad signature");
    let mut per_team: HashMap<usize, Vec<String>> = HashMap::new();
    for arrival in &arrivals {
        per_team
            .entry(arrival.team)
            .or_default()
            .push(arrival.event_id.clone());
    }
    assert_eq!(per_team.len(), TEAMS - 2);
    for (team, ids) in per_team {
        let expected: Vec<String> = (0..EVENTS_PER_TEAM)
            .map(|e| format!("ev-{team}-0-{e}"))
            .collect();
        assert_eq!(ids, expected, "team {team}'s events, once each, in order");
    }
    let mut latencies = run.latencies;
    eprintln!(
        "fast teams' latency with a hanging and a failing receiver: p50 {:?}, p99 {:?}, max {:?}",
        quantile(&mut latencies, 0.5),
        quantile(&mut latencies, 0.99),
        quantile(&mut latencies, 1.0)
    );
}

/// The binary the measurements drive: `BENCH_EMITTER` (scripts/bench sets the release build),
/// else this build's.
fn measured_binary() -> PathBuf {
    std::env::var_os("BENCH_EMITTER")
        .map(PathBuf::from)
        .unwrap_or_else(common::binary)
}

/// The isolation row of `scripts/bench`: fast teams' p99 latency with the default settings,
/// without and then with a hanging and a failing receiver (each run on fresh servers).
#[test]
#[ignore = "a measurement: scripts/bench runs it"]
fn measure_isolation() {
    let runs: usize = std::env::var("BENCH_RUNS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(3);
    let mut rows = Vec::new();
    for _ in 0..runs {
        let mut p99 = [Duration::ZERO; 2];
        for (i, bad) in [false, true].into_iter().enumerate() {
            let receiver = TeamsReceiver::start(behaviours(bad));
            let cluster = Cluster::start(&measured_binary(), TEAMS, receiver.port, &[]);
            let (mut run, _) = run_teams(&cluster, &receiver, bad, 8);
            p99[i] = quantile(&mut run.latencies, 0.99);
        }
        rows.push((p99[0], p99[1]));
    }
    let ratio = |(good, bad): &(Duration, Duration)| bad.as_secs_f64() / good.as_secs_f64();
    rows.sort_by(|a, b| ratio(a).total_cmp(&ratio(b)));
    let median = rows[rows.len() / 2];
    println!(
        "| isolation: fast teams' p99 with/without bad receivers (100 teams × {EVENTS_PER_TEAM} events; one hangs, one answers 500) | {:.0} ms / {:.0} ms = {:.2}× (runs: {}) | ≤ 2× |",
        median.1.as_secs_f64() * 1000.0,
        median.0.as_secs_f64() * 1000.0,
        ratio(&median),
        rows.iter()
            .map(|r| format!("{:.2}×", ratio(r)))
            .collect::<Vec<_>>()
            .join(", ")
    );
}

/// The memory rows of `scripts/bench`: the emitter's RSS at rest with N registered webhooks,
/// and its peak while delivering 5 events to each (`BENCH_WEBHOOKS`, default 0,1000,3000,10000).
#[test]
#[ignore = "a measurement: scripts/bench runs it"]
fn measure_memory_against_webhooks() {
    let counts: Vec<usize> = std::env::var("BENCH_WEBHOOKS")
        .unwrap_or_else(|_| "0,1000,3000,10000".into())
        .split(',')
        .map(|n| n.trim().parse().unwrap())
        .collect();
    let mut base_rest = None;
    for count in counts {
        let receiver = TeamsReceiver::start(vec![Behaviour::Fast; count.max(1)]);
        let cluster = Cluster::start(&measured_binary(), count, receiver.port, &[]);
        std::thread::sleep(Duration::from_secs(5));
        // Registering thousands of webhooks has a peak of its own (the API, Postgres, starting
        // the dispatchers); the delivery's is measured apart from it.
        let (rest, registering_peak) = rss_kib(cluster.pid());
        support::many_teams::reset_peak(cluster.pid());
        let base = *base_rest.get_or_insert(rest);
        let started = Instant::now();
        let mut conn = cluster.redis.connection();
        for (n, team) in cluster.teams.iter().enumerate() {
            send_events(&mut conn, (n, team), 1, EVENTS_PER_TEAM);
        }
        let expected = count * EVENTS_PER_TEAM;
        let pid = cluster.pid();
        let mut most_threads = threads(pid);
        assert!(
            eventually(Duration::from_secs(600), || {
                most_threads = most_threads.max(threads(pid));
                receiver.accepted() >= expected
            }),
            "{} of {expected} deliveries; log tail:\n{}",
            receiver.accepted(),
            cluster.emitter.log_text()
        );
        let took = started.elapsed();
        let (after, peak) = rss_kib(cluster.pid());
        let per_webhook = if count == 0 {
            "–".to_owned()
        } else {
            format!("{:.1} KiB", rest.saturating_sub(base) as f64 / count as f64)
        };
        println!(
            "| memory: {count} registered webhooks | at rest {:.1} MiB ({per_webhook} per webhook over 0; peak while registering {:.1} MiB), peak {:.1} MiB delivering {expected} events in {:.1} s, {:.1} MiB after; at most {most_threads} threads | ≤ 5 KiB per webhook; peak ≤ 128 MiB at 10 000 |",
            rest as f64 / 1024.0,
            registering_peak as f64 / 1024.0,
            peak as f64 / 1024.0,
            took.as_secs_f64(),
            after as f64 / 1024.0,
        );
    }
}
