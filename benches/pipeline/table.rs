//! The markdown table: every row next to its target, ✅ or ❌.

use crate::backlog::BacklogResult;
use crate::measure::{Spread, machine, num, show};
use crate::rows::IssueRows;
use crate::runs::{Latency, RateResult};
use crate::settings::Settings;
use crate::targets;
use std::fmt::Write as _;

/// Everything the phases measured.
#[derive(Default)]
pub struct Results {
    pub ceiling: Vec<f64>,
    pub ceiling_busy: Vec<f64>,
    pub ceiling_bytes: f64,
    /// The HTTP floor: a bare client's (requests/s, CPU-µs per request).
    pub floor: Vec<(f64, f64)>,
    /// (sandboxes, events, runs).
    pub rates: Vec<(usize, usize, Vec<RateResult>)>,
    pub latencies: Vec<Vec<Latency>>,
    pub backlog: Option<BacklogResult>,
    /// Issue 30's `nginx` runs, or why one could not run.
    pub nginx: Vec<Result<crate::nginx::NginxResult, String>>,
    pub issue: IssueRows,
    /// Rows that did not finish: (row, why).
    pub failures: Vec<(String, String)>,
}

impl Results {
    /// What the rates are compared with: the faster of the two client rows (the ceiling's
    /// multi-threaded client and the floor's single-threaded one), medians. Either can come out
    /// low on a noisy machine, and a low reference would flatter the ratio.
    pub fn reference_ceiling(&self) -> Option<f64> {
        let floor: Vec<f64> = self.floor.iter().map(|(rate, _)| *rate).collect();
        [Spread::of(&self.ceiling), Spread::of(&floor)]
            .into_iter()
            .flatten()
            .map(|s| s.median)
            .reduce(f64::max)
    }
}

pub fn verdict(ok: bool) -> &'static str {
    if ok { "✅" } else { "❌" }
}

/// `rates` as shares of `reference`: median (min–max).
fn share_of(rates: &[f64], reference: Option<f64>) -> String {
    reference.map_or("n/a".to_owned(), |c| {
        show(&rates.iter().map(|r| r / c).collect::<Vec<_>>(), 2)
    })
}

/// One row of the throughput table: the runs' median (min–max) of each column.
fn throughput_row(
    t: &mut String,
    label: &str,
    events: usize,
    results: &[RateResult],
    ceiling_median: Option<f64>,
) {
    let rate: Vec<f64> = results.iter().map(|r| r.rate).collect();
    let ratio = share_of(&rate, ceiling_median);
    let peak: Vec<f64> = results.iter().map(|r| r.peak_rss).collect();
    let cpu: Vec<f64> = results.iter().map(|r| r.cpu_ms_per_1k).collect();
    let rcpu: Vec<f64> = results.iter().map(|r| r.redis_cpu_ms_per_1k).collect();
    let bytes = results.first().map_or(0.0, |r| r.body_bytes);
    let dups: u64 = results.iter().map(|r| r.duplicates).sum();
    let busy: Vec<f64> = results.iter().map(|r| r.machine_busy).collect();
    let _ = writeln!(
        t,
        "| {label} ({bytes:.0}-byte bodies{}) | {} | {} | {ratio} | {} | {} | {} | {} % |",
        if dups > 0 {
            format!(", {dups} repeats")
        } else {
            String::new()
        },
        num(events as f64, 0),
        show(&rate, 0),
        show(&peak, 1),
        show(&cpu, 0),
        show(&rcpu, 0),
        show(&busy, 0),
    );
}

pub fn render(settings: &Settings, results: &Results, elapsed_secs: f64) -> String {
    let Results {
        ceiling,
        ceiling_busy,
        ceiling_bytes,
        floor,
        rates,
        latencies,
        backlog,
        nginx: _,
        issue: _,
        failures,
    } = results;
    let runs = settings.runs;
    let mif = settings.max_in_flight;

    let mut t = String::new();
    let _ = writeln!(
        t,
        "\n## e2b-webhook-emitter pipeline benchmark\n\n{}; {runs} run(s) per row: median (min–max).\nmax-in-flight {mif}; outbox fsync on every commit; Redis and receiver on loopback.\n",
        machine()
    );
    let ceiling_median = results.reference_ceiling();
    if !ceiling.is_empty() || !rates.is_empty() || results.issue.any_rate() {
        let _ = writeln!(
            t,
            "### Throughput\n\n| what | events | events/s | × ceiling | peak RSS (MiB) | emitter CPU-ms / 1 000 events | redis CPU-ms / 1 000 events | machine CPU busy |\n|---|---:|---:|---:|---:|---:|---:|---:|"
        );
        if !ceiling.is_empty() {
            let _ = writeln!(
                t,
                "| loopback ceiling: reqwest, {mif} connections, {ceiling_bytes:.0}-byte signed body | {} | {} | {} | – | – | – | {} % |",
                num(settings.events as f64, 0),
                show(ceiling, 0),
                share_of(ceiling, ceiling_median),
                show(ceiling_busy, 0)
            );
        }
        if !floor.is_empty() {
            let rate: Vec<f64> = floor.iter().map(|(r, _)| *r).collect();
            let cpu: Vec<f64> = floor.iter().map(|(_, c)| *c).collect();
            let _ = writeln!(
                t,
                "| HTTP floor: the same client alone on one thread, {mif} requests in flight; its CPU per request is the least an event's delivery can cost here | {} | {} | {} | – | {} | – | – |",
                num(settings.events as f64, 0),
                show(&rate, 0),
                share_of(&rate, ceiling_median),
                show(&cpu, 1)
            );
        }
        for (sandboxes, events, results) in rates {
            let label = format!(
                "end to end, {} sandbox{}",
                num(*sandboxes as f64, 0),
                if *sandboxes == 1 { "" } else { "es" }
            );
            throughput_row(&mut t, &label, *events, results, ceiling_median);
        }
        let tls_ceiling: Vec<f64> = results.issue.tls_ceiling.iter().map(|(r, _)| *r).collect();
        if !tls_ceiling.is_empty() {
            let busy: Vec<f64> = results.issue.tls_ceiling.iter().map(|(_, b)| *b).collect();
            let _ = writeln!(
                t,
                "| TLS ceiling: the same over `https://` (rustls both ends, {mif} connections kept open), the reference of the next row | {} | {} | 1.00 | – | – | – | {} % |",
                num(settings.events as f64, 0),
                show(&tls_ceiling, 0),
                show(&busy, 0)
            );
        }
        if !results.issue.https.is_empty() {
            throughput_row(
                &mut t,
                "end to end to an `https://` receiver, 10 000 sandboxes, × the TLS ceiling",
                settings.events,
                &results.issue.https,
                Spread::of(&tls_ceiling).map(|s| s.median),
            );
        }
        let issue_rows: [(&str, usize, &[RateResult]); 2] = [
            (
                "three endpoints, 10 000 sandboxes, each event to all three",
                settings.events,
                &results.issue.endpoints,
            ),
            (
                "active + standby instance, 10 000 sandboxes",
                settings.events,
                &results.issue.ha,
            ),
        ];
        for (format, runs) in &results.issue.formats {
            let label = format!("end to end, 10 000 sandboxes, `{format}`");
            throughput_row(&mut t, &label, settings.events, runs, ceiling_median);
        }
        for (label, events, runs) in issue_rows {
            if !runs.is_empty() {
                throughput_row(&mut t, label, events, runs, ceiling_median);
            }
        }
        for (sandboxes, events, runs) in &results.issue.sandboxes_rate {
            let label = format!(
                "{} sandbox{} × {} events",
                num(*sandboxes as f64, 0),
                if *sandboxes == 1 { "" } else { "es" },
                settings.per_sandbox
            );
            throughput_row(&mut t, &label, *events, runs, ceiling_median);
        }
        if let Some((drained, _)) = results.issue.stream_backlog.first() {
            let label = format!(
                "streaming into a receiver that checks nothing, {} sandboxes",
                num(drained.sandboxes as f64, 0)
            );
            let runs: Vec<RateResult> = results
                .issue
                .stream_backlog
                .iter()
                .map(|(_, streaming)| streaming.clone())
                .collect();
            throughput_row(&mut t, &label, drained.events, &runs, ceiling_median);
        }
    }
    if !latencies.is_empty() {
        let _ = writeln!(
            t,
            "\n### Latency: event written to Redis → signed delivery received ({} s per rate, after 1 s warm-up; 1 000 sandboxes; emitter CPU over the measured seconds, from /proc)\n\n| rate | events per run | p50 (ms) | p99 (ms) | max (ms) | emitter CPU (% of one core) | emitter CPU-µs per event | disk written per event (KiB, /proc/<pid>/io) | `fdatasync` + `fsync` per event (`perf stat`) | context switches per event (all threads) | CPU-µs per wake-up on this host, same pacing |\n|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
            settings.latency_secs
        );
        for (i, rate) in settings.latency_rates.iter().enumerate() {
            let rate = format!("{}/s", num(f64::from(*rate), 0));
            let pick = |f: fn(&Latency) -> f64| -> Vec<f64> {
                latencies.iter().filter_map(|r| r.get(i)).map(f).collect()
            };
            let samples = latencies
                .first()
                .and_then(|r| r.get(i))
                .map_or(0, |l| l.samples);
            let _ = writeln!(
                t,
                "| {rate} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                num(samples as f64, 0),
                show(&pick(|l| l.p50), 2),
                show(&pick(|l| l.p99), 2),
                show(&pick(|l| l.max), 2),
                show(&pick(|l| l.cpu_pct), 1),
                show(&pick(|l| l.cpu_us_per_event), 0),
                show(&pick(|l| l.disk_kib_per_event), 1),
                show(&pick(|l| l.syncs_per_event), 2),
                show(&pick(|l| l.switches_per_event), 1),
                show(&pick(|l| l.host_us_per_wakeup), 0)
            );
        }
    }
    let idle: Vec<f64> = rates
        .iter()
        .flat_map(|(_, _, r)| r.iter().map(|r| r.idle_rss))
        .collect();
    if !idle.is_empty() || backlog.is_some() {
        let _ = writeln!(
            t,
            "\n### Memory and backlog\n\n| measure | result | target |\n|---|---:|---|"
        );
    }
    if let Some(s) = Spread::of(&idle) {
        let _ = writeln!(
            t,
            "| peak RSS idle (VmHWM: started, Redis source consuming, nothing to do) | {} MiB | ≤ 10 MiB {} |",
            s.show(1),
            verdict(s.median <= 10.0)
        );
    }
    let anon: Vec<f64> = rates
        .iter()
        .flat_map(|(_, _, r)| r.iter().map(|r| r.idle_anon))
        .collect();
    if !anon.is_empty() {
        let _ = writeln!(
            t,
            "| of which anonymous (RssAnon: heap, stacks; the rest is the executable's own pages, clean and shared with the page cache) | {} MiB | – |",
            show(&anon, 1)
        );
    }
    if let Some((_, _, results)) = rates.iter().find(|(s, _, _)| *s == 10_000) {
        let peak: Vec<f64> = results.iter().map(|r| r.peak_rss).collect();
        let _ = writeln!(
            t,
            "| peak RSS under load (10 000 sandboxes, full speed) | {} MiB | – |",
            show(&peak, 1)
        );
    }
    if let Some(b) = backlog {
        let _ = writeln!(
            t,
            "| peak RSS with a {}-event backlog (receiver down, `status` depth {}) | {:.1} MiB | ≤ 64 MiB {} |",
            num(b.events as f64, 0),
            num(b.depth_seen as f64, 0),
            b.rss_backlog,
            verdict(b.rss_backlog <= 64.0)
        );
        let _ = writeln!(
            t,
            "| backlog written to Redis → committed to the outbox (receiver down) | {:.1} s ({} events/s) | – |",
            b.ingest_secs,
            num(b.events as f64 / b.ingest_secs, 0)
        );
        let _ = writeln!(
            t,
            "| backlog drain: receiver up → all {} delivered (retry schedule 1 s) | {:.1} s ({} events/s) | – |",
            num(b.events as f64, 0),
            b.drain_secs,
            num(b.events as f64 / b.drain_secs, 0)
        );
        let _ = writeln!(
            t,
            "| peak RSS including the drain | {:.1} MiB | – |",
            b.rss_after_drain
        );
    }
    t.push_str(&targets::render(settings, results));
    t.push_str(&targets::render_outbox(results));
    if !failures.is_empty() {
        let _ = writeln!(
            t,
            "\n### Rows that did not finish ❌\n\n| row | why (the log above has the rest) |\n|---|---|"
        );
        for (row, why) in failures {
            let _ = writeln!(t, "| `{row}` | {} |", why.replace('|', "\\|"));
        }
    }
    let _ = writeln!(
        t,
        "\nWhole benchmark (without the build): {:.0} s.",
        elapsed_secs
    );
    t
}
