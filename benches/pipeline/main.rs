//! End-to-end benchmark: throughput, latency, memory and backlog drain of the real `run` service,
//! next to the loopback ceiling. Run it with `scripts/bench` (or `cargo bench --bench pipeline`);
//! the results and how to read them are in BENCHMARKS.md.
//!
//! Everything is real and on loopback: a `redis-server` child process; the release binary
//! (`run --redis-url … --team-ids … --webhook-url … --data-dir <tmp>`) with its durable outbox in a
//! temporary directory on the same disk as `/tmp`; a receiver (axum, on its own runtime in this
//! process) that verifies every `X-E2B-Signature` and answers 200. Events are written the way the
//! orchestrator writes them: `EXISTS wh:<team>`, then `XADD sandbox.events.stream * payload <json>`.
//! Each event's `timestamp` is the moment it is written; the receiver subtracts it from its own
//! clock, so the latency is "written to Redis → signed delivery received".
//!
//! Knobs (environment variables):
//! - `BENCH_RUNS` (3): runs per measurement; the table shows the median and min–max.
//! - `BENCH_EVENTS` (20000): events per throughput run (the 1-sandbox run uses a quarter).
//! - `BENCH_BACKLOG` (100000): events in the backlog run.
//! - `BENCH_LATENCY_SECS` (10): measured seconds at each fixed rate (after 1 s of warm-up).
//! - `BENCH_LATENCY_EXTRA_RATES` (none): more fixed rates after 100/s and 1 000/s, comma-separated
//!   events per second (to see at what rate commits start to be shared, say `3000,10000`).
//! - `BENCH_MAX_IN_FLIGHT` (64): `--max-in-flight`, and the load generator's connection count.
//! - `BENCH_PER_SANDBOX` (100): events per sandbox when comparing 1 with 10 000 sandboxes.
//! - `BENCH_CALLGRIND_EVENTS` (2000): events the emitter delivers under callgrind.
//! - `BENCH_ONLY`: a comma-separated subset of `ceiling,rate,latency,backlog` (`ceiling` also
//!   measures the HTTP floor: the same client alone on one thread, and its CPU per request) and
//!   issue 17's rows `https,formats,endpoints,ha,stream-backlog,sandboxes,instructions` (see
//!   rows.rs).
//! - `nginx` (issue 30): `BENCH_BACKLOG` events already in the stream drained into a real nginx,
//!   first request → last by its access log, against `wrk` on the same nginx (nginx.rs).
//! - `BENCH_EMITTER`: another emitter binary to drive (default: this build's release binary).

mod backlog;
mod emitter;
mod instructions;
mod measure;
mod nginx;
mod receiver;
mod redis_server;
mod rows;
mod runs;
mod settings;
mod syncs;
mod table;
mod targets;
/// The private CA and certificates of the `https` row, shared with the tests.
#[path = "../../tests/support/tls.rs"]
mod tls;
mod wakeups;
mod workload;

use futures_util::FutureExt as _;
use measure::machine;
use redis_server::RedisServer;
use settings::Settings;
use std::net::TcpListener as StdListener;
use std::panic::AssertUnwindSafe;
use std::path::Path;
use std::time::{Duration, Instant};
use table::Results;
use workload::Workload;

const STREAM: &str = "sandbox.events.stream";
const TEAM: &str = "5c5b7a1e-2f0d-4a57-9a3e-8d1f0b6c4e21";
const SECRET: &str = "bench-secret-0123456789abcdef0123456789abcdef";
const ENDPOINT_PATH: &str = "/api/webhooks/e2b";
/// How long any single wait may take before the benchmark gives up.
const PATIENCE: Duration = Duration::from_secs(180);

/// [`PATIENCE`] for a wait on `events` events: 1 ms more per event, so that the 1 000 000-event
/// run of the `sandboxes` row has room on a slow machine.
fn patience_for(events: usize) -> Duration {
    PATIENCE + Duration::from_millis(events as u64)
}

fn gate_key() -> String {
    format!("wh:{TEAM}")
}

fn free_port() -> u16 {
    StdListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
        .port()
}

/// Runs one row; a panic (a run that did not finish) is logged and listed in the table as
/// (row, first line of the message) instead of ending the benchmark and losing the other rows.
async fn guarded(failures: &mut Vec<(String, String)>, row: &str, work: impl Future<Output = ()>) {
    if let Err(panic) = AssertUnwindSafe(work).catch_unwind().await {
        let message = panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|m| (*m).to_owned()))
            .unwrap_or_else(|| "panicked".to_owned());
        log(format!("{row} failed: {message}"));
        let first = message.lines().next().unwrap_or_default().to_owned();
        failures.push((row.to_owned(), first));
    }
}

fn log(line: impl AsRef<str>) {
    eprintln!("[bench] {}", line.as_ref());
}

fn main() {
    let settings = Settings::from_env();
    let started = Instant::now();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("bench")
        .enable_all()
        .build()
        .expect("the benchmark's runtime");
    let redis = RedisServer::start();
    let mif = settings.max_in_flight;
    let runs = settings.runs;
    log(format!(
        "{} — {runs} runs, {} events per rate run, max-in-flight {mif}",
        machine(),
        settings.events
    ));

    let mut measured = Results {
        ceiling_bytes: f64::NAN,
        ..Results::default()
    };

    let mut failed = Vec::new();
    runtime.block_on(async {
        let failures = &mut failed;
        let mut conn = redis.connect().await;
        if settings.wants("ceiling") {
            guarded(failures, "ceiling", async {
                for r in 0..runs {
                    let (rate, bytes, busy) = runs::ceiling_run(settings.events, mif, None).await;
                    log(format!(
                        "ceiling run {}: {rate:.0} requests/s ({bytes:.0}-byte bodies), machine CPU {busy:.0} % busy",
                        r + 1
                    ));
                    measured.ceiling.push(rate);
                    measured.ceiling_busy.push(busy);
                    measured.ceiling_bytes = bytes;
                }
                for r in 0..runs {
                    let (rate, cpu_us) = runs::floor_run(settings.events, mif).await;
                    log(format!(
                        "floor run {}: a bare client on one thread, {rate:.0} requests/s, {cpu_us:.1} CPU-µs per request",
                        r + 1
                    ));
                    measured.floor.push((rate, cpu_us));
                }
            })
            .await;
        }
        if settings.wants("rate") {
            guarded(failures, "rate", async {
                for sandboxes in [10_000, 100, 1] {
                    let events = if sandboxes == 1 {
                        (settings.events / 4).max(1)
                    } else {
                        settings.events
                    };
                    let work = Workload { events, sandboxes };
                    let mut results = Vec::new();
                    for r in 0..runs {
                        let result =
                            runs::rate_run(&redis, &mut conn, work, mif, &format!("r{sandboxes}x{r}")).await;
                        log(format!(
                            "rate run {sandboxes} sandboxes #{}: {:.0} events/s, idle {:.1} MiB, peak {:.1} MiB, {:.0} CPU-ms per 1 000 events, machine CPU {:.0} % busy",
                            r + 1,
                            result.rate,
                            result.idle_rss,
                            result.peak_rss,
                            result.cpu_ms_per_1k,
                            result.machine_busy
                        ));
                        results.push(result);
                    }
                    measured.rates.push((sandboxes, events, results));
                }
            })
            .await;
        }
        if settings.wants("latency") {
            guarded(failures, "latency", async {
                for r in 0..runs {
                    let result =
                        runs::latency_run(&redis, &mut conn, mif, &settings, &format!("l{r}"))
                            .await;
                    for (rate, l) in settings.latency_rates.iter().zip(&result) {
                        log(format!(
                            "latency run #{} at {rate}/s: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms ({} events); emitter CPU {:.1} % of a core, {:.0} µs per event, {:.1} KiB written to disk and {:.2} fdatasync + fsync per event; {:.1} context switches per event, a wake-up costing {:.0} µs of CPU on this host",
                            r + 1,
                            l.p50,
                            l.p99,
                            l.max,
                            l.samples,
                            l.cpu_pct,
                            l.cpu_us_per_event,
                            l.disk_kib_per_event,
                            l.syncs_per_event,
                            l.switches_per_event,
                            l.host_us_per_wakeup
                        ));
                    }
                    measured.latencies.push(result);
                }
            })
            .await;
        }
        if settings.wants("backlog") {
            guarded(failures, "backlog", async {
                let result = backlog::backlog_run(
                    &redis,
                    &mut conn,
                    Workload {
                        events: settings.backlog,
                        sandboxes: 10_000.min(settings.backlog),
                    },
                    mif,
                ).await;
                log(format!(
                    "backlog: {} events committed in {:.1} s, outbox depth {}, peak RSS {:.1} MiB; drained in {:.1} s; peak RSS after drain {:.1} MiB",
                    result.events,
                    result.ingest_secs,
                    result.depth_seen,
                    result.rss_backlog,
                    result.drain_secs,
                    result.rss_after_drain
                ));
                measured.backlog = Some(result);
            })
            .await;
        }
        if settings.wants("nginx") {
            guarded(failures, "nginx", async {
                let work = Workload {
                    events: settings.backlog,
                    sandboxes: 1_000.min(settings.backlog),
                };
                for r in 0..runs {
                    let result =
                        nginx::nginx_backlog_run(&redis, &mut conn, work, mif, &format!("n{r}")).await;
                    match &result {
                        Ok(n) => log(format!(
                            "nginx run #{}: {} events first → last request in {:.2} s = {:.0}/s; wrk → the same nginx {:.0}/s ({:.2}×)",
                            r + 1,
                            n.events,
                            n.delivering_secs,
                            n.rate(),
                            n.wrk_rate,
                            n.rate() / n.wrk_rate
                        )),
                        Err(e) => log(format!("nginx run #{}: {e}", r + 1)),
                    }
                    let failed = result.is_err();
                    measured.nginx.push(result);
                    if failed {
                        break;
                    }
                }
            })
            .await;
        }
        rows::measure(&settings, &redis, &mut conn, &mut measured.issue, failures).await;
    });
    drop(redis);
    measured.failures = failed;

    let t = table::render(&settings, &measured, started.elapsed().as_secs_f64());
    println!("{t}");
    let out = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench-pipeline.md");
    if std::fs::write(&out, &t).is_ok() {
        log(format!("table saved to {}", out.display()));
    }
}
