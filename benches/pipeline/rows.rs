//! Issue 17's rows, each selectable with `BENCH_ONLY`:
//! - `https`: the loopback ceiling over TLS, then the 10 000-sandbox rate run to an `https://`
//!   receiver in this process (rustls, a certificate of a private CA given to the emitter with
//!   `--webhook-ca-file`), every signature checked.
//! - `formats`: the 10 000-sandbox rate run in `e2b-cloud` and `standard-webhooks`, every
//!   signature checked with the crate's own verifiers.
//! - `endpoints`: three endpoints from a config file; the run ends when each got every event.
//! - `ha`: an active and a standby instance (own `--data-dir`, own `--redis-consumer`).
//! - `stream-backlog`: the workload already in the stream when the emitter starts, drained into a
//!   receiver that checks nothing, next to the streaming rate into the same receiver.
//! - `sandboxes`: peak RSS with a backlog over as many sandboxes as events, and the rate with 1
//!   vs 10 000 sandboxes at `BENCH_PER_SANDBOX` events each.
//! - `instructions`: instructions per delivered event under callgrind.

use crate::backlog::{BacklogResult, StreamBacklogResult, backlog_run, stream_backlog_run};
use crate::instructions::{Instructions, instructions_run, valgrind_available};
use crate::receiver::Check;
use crate::redis_server::RedisServer;
use crate::runs::{RateResult, Setup, ceiling_run, rate_run, rate_run_with};
use crate::settings::Settings;
use crate::tls::PrivateCa;
use crate::workload::Workload;
use crate::{guarded, log};
use redis::aio::MultiplexedConnection;

/// The rows besides the throughput, latency and backlog tables.
#[derive(Default)]
pub struct IssueRows {
    /// The loopback ceiling over TLS: (requests/s, machine CPU busy %) per run.
    pub tls_ceiling: Vec<(f64, f64)>,
    pub https: Vec<RateResult>,
    /// (format, runs).
    pub formats: Vec<(&'static str, Vec<RateResult>)>,
    pub endpoints: Vec<RateResult>,
    pub ha: Vec<RateResult>,
    /// (drained from the stream, streaming into the same receiver).
    pub stream_backlog: Vec<(StreamBacklogResult, RateResult)>,
    pub sandboxes_rss: Option<BacklogResult>,
    /// (sandboxes, events, runs): 1 and 10 000 sandboxes.
    pub sandboxes_rate: Vec<(usize, usize, Vec<RateResult>)>,
    /// Or why not.
    pub instructions: Option<Result<Instructions, String>>,
}

impl IssueRows {
    /// Whether any row goes into the throughput table.
    pub fn any_rate(&self) -> bool {
        !(self.tls_ceiling.is_empty()
            && self.https.is_empty()
            && self.formats.is_empty()
            && self.endpoints.is_empty()
            && self.ha.is_empty()
            && self.stream_backlog.is_empty()
            && self.sandboxes_rate.is_empty())
    }
}

/// The sandboxes of the throughput rows.
const MANY_SANDBOXES: usize = 10_000;
/// The sandboxes of the stream backlog (issue 17 item 4).
const STREAM_BACKLOG_SANDBOXES: usize = 1_000;
/// The sandboxes of the callgrind runs: enough to keep every delivery slot busy.
const CALLGRIND_SANDBOXES: usize = 100;

pub async fn measure(
    settings: &Settings,
    redis: &RedisServer,
    conn: &mut MultiplexedConnection,
    rows: &mut IssueRows,
    failures: &mut Vec<(String, String)>,
) {
    let mif = settings.max_in_flight;
    let runs = settings.runs;
    let many = Workload {
        events: settings.events,
        sandboxes: MANY_SANDBOXES.min(settings.events),
    };
    let rated = |what: &str, r: usize, result: &RateResult| {
        log(format!(
            "{what} #{}: {:.0} events/s, {:.0} CPU-µs per event, peak {:.1} MiB{}",
            r + 1,
            result.rate,
            result.cpu_ms_per_1k,
            result.peak_rss,
            if result.standby_cpu_pct.is_finite() {
                format!(", standby {:.1} % of a core", result.standby_cpu_pct)
            } else {
                String::new()
            }
        ));
    };
    if settings.wants("https") {
        guarded(failures, "https", async {
            let ca = PrivateCa::new("bench CA");
            for r in 0..runs {
                let (rate, bytes, busy) = ceiling_run(settings.events, mif, Some(&ca)).await;
                log(format!(
                    "TLS ceiling run {}: {rate:.0} requests/s ({bytes:.0}-byte bodies), machine CPU {busy:.0} % busy",
                    r + 1
                ));
                rows.tls_ceiling.push((rate, busy));
            }
            let setup = Setup {
                tls: true,
                ..Setup::default()
            };
            for r in 0..runs {
                let result = rate_run_with(redis, conn, many, mif, &format!("t{r}"), setup).await;
                rated("https://", r, &result);
                rows.https.push(result);
            }
        })
        .await;
    }
    if settings.wants("formats") {
        guarded(failures, "formats", async {
            for (format, check) in [
                ("e2b-cloud", Check::E2bCloud),
                ("standard-webhooks", Check::StandardWebhooks),
            ] {
                let setup = Setup {
                    check,
                    format: Some(format),
                    ..Setup::default()
                };
                let mut results = Vec::new();
                for r in 0..runs {
                    let result =
                        rate_run_with(redis, conn, many, mif, &format!("f{format}{r}"), setup)
                            .await;
                    rated(format, r, &result);
                    results.push(result);
                }
                rows.formats.push((format, results));
            }
        })
        .await;
    }
    if settings.wants("endpoints") {
        guarded(failures, "endpoints", async {
            let setup = Setup {
                endpoints: 3,
                ..Setup::default()
            };
            for r in 0..runs {
                let result = rate_run_with(redis, conn, many, mif, &format!("e{r}"), setup).await;
                rated("three endpoints", r, &result);
                rows.endpoints.push(result);
            }
        })
        .await;
    }
    if settings.wants("ha") {
        guarded(failures, "ha", async {
            let setup = Setup {
                standby: true,
                ..Setup::default()
            };
            for r in 0..runs {
                let result = rate_run_with(redis, conn, many, mif, &format!("h{r}"), setup).await;
                rated("active + standby", r, &result);
                rows.ha.push(result);
            }
        })
        .await;
    }
    if settings.wants("stream-backlog") {
        guarded(failures, "stream-backlog", async {
            let work = Workload {
                events: settings.backlog,
                sandboxes: STREAM_BACKLOG_SANDBOXES.min(settings.backlog),
            };
            let streaming_setup = Setup {
                check: Check::Nothing,
                ..Setup::default()
            };
            for r in 0..runs {
                let drained = stream_backlog_run(redis, conn, work, mif, &format!("s{r}")).await;
                log(format!(
                    "stream backlog #{}: {} events over {} sandboxes: lease after {:.2} s, first delivery after {:.2} s, all after {:.2} s ({:.0} events/s; {:.0}/s once delivering); per 0.5 s: {}",
                    r + 1,
                    drained.events,
                    drained.sandboxes,
                    drained.to_leader_secs,
                    drained.to_first_secs,
                    drained.total_secs,
                    drained.rate(),
                    drained.delivering_rate(),
                    drained
                        .curve
                        .iter()
                        .map(|v| format!("{v:.0}"))
                        .collect::<Vec<_>>()
                        .join(" ")
                ));
                let streaming =
                    rate_run_with(redis, conn, work, mif, &format!("S{r}"), streaming_setup).await;
                rated("streaming into the same receiver", r, &streaming);
                rows.stream_backlog.push((drained, streaming));
            }
        })
        .await;
    }
    if settings.wants("sandboxes") {
        guarded(failures, "sandboxes", async {
            let result = backlog_run(
                redis,
                conn,
                Workload {
                    events: settings.backlog,
                    sandboxes: settings.backlog,
                },
                mif,
            )
            .await;
            log(format!(
                "backlog over {} sandboxes: peak RSS {:.1} MiB, drained in {:.1} s",
                settings.backlog, result.rss_backlog, result.drain_secs
            ));
            rows.sandboxes_rss = Some(result);
            for sandboxes in [1, MANY_SANDBOXES] {
                let work = Workload {
                    events: sandboxes * settings.per_sandbox,
                    sandboxes,
                };
                let mut results = Vec::new();
                for r in 0..runs {
                    let result =
                        rate_run(redis, conn, work, mif, &format!("n{sandboxes}x{r}")).await;
                    rated(&format!("{sandboxes} sandbox(es)"), r, &result);
                    results.push(result);
                }
                rows.sandboxes_rate.push((sandboxes, work.events, results));
            }
        })
        .await;
    }
    if settings.wants("instructions") {
        guarded(failures, "instructions", async {
            rows.instructions = Some(if valgrind_available() {
                let work = Workload {
                    events: settings.callgrind_events,
                    sandboxes: CALLGRIND_SANDBOXES.min(settings.callgrind_events),
                };
                Ok(instructions_run(redis, conn, work, mif).await)
            } else {
                Err("valgrind is not installed (scripts/bench installs it)".to_owned())
            });
        })
        .await;
    }
}
