//! Issue 17's and issue 30's targets, each next to what this run measured: ✅ met, ❌ not met
//! (reported, not hidden), – no target (recorded for comparison).

use crate::measure::{Spread, num};
use crate::runs::RateResult;
use crate::settings::Settings;
use crate::table::Results;
use std::fmt::Write as _;

/// The emitter CPU per delivered event, at full rate.
const CPU_US_PER_EVENT: f64 = 20.0;
/// End-to-end rate as a share of the loopback ceiling measured in the same run (the faster of
/// the ceiling and floor rows, [`Results::reference_ceiling`]).
const SHARE_OF_CEILING: f64 = 0.5;
const P99_MS_AT_1000: f64 = 2.0;
const IDLE_RSS_MIB: f64 = 10.0;
const BACKLOG_RSS_MIB: f64 = 64.0;
/// 1 vs 10 000 sandboxes: within this share of each other.
const SANDBOX_SPREAD: f64 = 0.2;
/// Issue 30: what an event written to disk may cost, at 100 and at 1 000 events/s.
const DISK_KIB_PER_EVENT: f64 = 4.0;
/// Issue 30: a stream backlog drained into nginx, over what `wrk` gets from the same nginx.
const NGINX_RATIO: f64 = 0.4;
/// Issue 30: the emitter's CPU per event at 100 events/s and at 1 000 events/s.
const CPU_US_AT_RATE: [(f64, &str); 2] = [(200.0, "100"), (100.0, "1 000")];
/// Issue 30: `fdatasync` per event at 1 000 events/s (commits shared by the events that arrive
/// while one runs).
const SYNCS_PER_EVENT_AT_1000: f64 = 0.5;

fn median(values: impl IntoIterator<Item = f64>) -> Option<f64> {
    Spread::of(&values.into_iter().collect::<Vec<_>>()).map(|s| s.median)
}

fn rate(runs: &[RateResult]) -> Option<f64> {
    median(runs.iter().map(|r| r.rate))
}

fn cpu(runs: &[RateResult]) -> Option<f64> {
    median(runs.iter().map(|r| r.cpu_ms_per_1k))
}

struct Rows(String);

impl Rows {
    fn add(&mut self, measure: &str, result: String, target: &str, ok: Option<bool>) {
        let mark = match ok {
            Some(true) => "✅",
            Some(false) => "❌",
            None => "–",
        };
        let _ = writeln!(self.0, "| {measure} | {result} | {target} | {mark} |");
    }

    /// "x× the ceiling" against ≥ ½, when both are known.
    fn share(&mut self, measure: &str, per_second: Option<f64>, ceiling: Option<f64>) {
        self.share_of(measure, per_second, ceiling, "≥ 0.5× the ceiling");
    }

    /// [`Self::share`] against another ceiling, named in `target`.
    fn share_of(
        &mut self,
        measure: &str,
        per_second: Option<f64>,
        ceiling: Option<f64>,
        target: &str,
    ) {
        if let (Some(r), Some(c)) = (per_second, ceiling) {
            self.add(
                measure,
                format!("{} /s = {:.2}×", num(r, 0), r / c),
                target,
                Some(r / c >= SHARE_OF_CEILING),
            );
        }
    }

    fn cpu(&mut self, measure: &str, us: Option<f64>) {
        if let Some(us) = us {
            self.add(
                measure,
                format!("{us:.0} µs"),
                "≤ 20 µs",
                Some(us <= CPU_US_PER_EVENT),
            );
        }
    }
}

pub fn render(settings: &Settings, results: &Results) -> String {
    let mut rows = Rows(String::new());
    let issue = &results.issue;
    let ceiling = results.reference_ceiling();
    let steady = results
        .rates
        .iter()
        .find(|(s, _, _)| *s == 10_000)
        .map(|(_, _, runs)| runs.as_slice());
    rows.cpu(
        "emitter CPU per delivered event at full rate (10 000 sandboxes)",
        steady.and_then(cpu),
    );
    let floor = median(results.floor.iter().map(|(_, cpu)| *cpu));
    if let (Some(emitter), Some(floor)) = (steady.and_then(cpu), floor) {
        rows.add(
            "… of which the HTTP floor (a bare client's CPU per request) / everything else",
            format!("{floor:.1} µs / {:.0} µs", emitter - floor),
            "–",
            None,
        );
    }
    rows.share(
        "end-to-end rate, 10 000 sandboxes",
        steady.and_then(rate),
        ceiling,
    );
    if let Some(p99) = median(
        results
            .latencies
            .iter()
            .filter_map(|r| r.get(1))
            .map(|l| l.p99),
    ) {
        rows.add(
            "p99 event → receiver 2xx at 1 000 events/s",
            format!("{p99:.2} ms"),
            "≤ 2 ms",
            Some(p99 <= P99_MS_AT_1000),
        );
    }
    if let Some(idle) = median(
        results
            .rates
            .iter()
            .flat_map(|(_, _, r)| r.iter().map(|r| r.idle_rss)),
    ) {
        rows.add(
            "peak RSS idle",
            format!("{idle:.1} MiB"),
            "≤ 10 MiB",
            Some(idle <= IDLE_RSS_MIB),
        );
    }
    if let Some(b) = &results.backlog {
        rows.add(
            &format!("peak RSS with a {}-event backlog", num(b.events as f64, 0)),
            format!("{:.1} MiB", b.rss_backlog),
            "≤ 64 MiB",
            Some(b.rss_backlog <= BACKLOG_RSS_MIB),
        );
        let drain = b.events as f64 / b.drain_secs;
        let steady_rate = steady.and_then(rate);
        rows.add(
            &format!(
                "backlog drain of {} events (outbox, receiver back up)",
                num(b.events as f64, 0)
            ),
            format!("{} /s", num(drain, 0)),
            &steady_rate.map_or("≥ the steady rate".to_owned(), |s| {
                format!("≥ the steady rate ({} /s)", num(s, 0))
            }),
            steady_rate.map(|s| drain >= s),
        );
    }
    if let Some(rss) = &issue.sandboxes_rss {
        rows.add(
            &format!(
                "peak RSS, {} events over as many sandboxes (receiver down)",
                num(rss.events as f64, 0)
            ),
            format!("{:.1} MiB", rss.rss_backlog),
            "≤ 64 MiB",
            Some(rss.rss_backlog <= BACKLOG_RSS_MIB),
        );
    }
    if let [(1, _, one), (_, _, many)] = issue.sandboxes_rate.as_slice()
        && let (Some(one), Some(many)) = (rate(one), rate(many))
    {
        let ratio = one / many;
        rows.add(
            &format!(
                "rate with 1 vs 10 000 sandboxes ({} events each)",
                settings.per_sandbox
            ),
            format!("{} vs {} /s = {ratio:.2}×", num(one, 0), num(many, 0)),
            "within 20 %",
            Some((1.0 - SANDBOX_SPREAD..=1.0 / (1.0 - SANDBOX_SPREAD)).contains(&ratio)),
        );
    }
    if let Some((drained, _)) = issue.stream_backlog.first() {
        let drain = median(issue.stream_backlog.iter().map(|(d, _)| d.rate()));
        let streaming = median(issue.stream_backlog.iter().map(|(_, s)| s.rate));
        if let (Some(drain), Some(streaming)) = (drain, streaming) {
            rows.add(
                &format!(
                    "{} events over {} sandboxes already in the stream at start, emitter start → all delivered to a receiver that checks nothing",
                    num(drained.events as f64, 0),
                    num(drained.sandboxes as f64, 0)
                ),
                format!("{} /s = {:.2}× streaming", num(drain, 0), drain / streaming),
                &format!("≥ the streaming rate into it ({} /s)", num(streaming, 0)),
                Some(drain >= streaming),
            );
        }
    }
    let tls_ceiling = median(issue.tls_ceiling.iter().map(|(r, _)| *r));
    if let (Some(tls), Some(plain)) = (tls_ceiling, ceiling) {
        rows.add(
            "TLS ceiling next to the plain loopback ceiling",
            format!(
                "{} vs {} /s = {:.2}×",
                num(tls, 0),
                num(plain, 0),
                tls / plain
            ),
            "– (what TLS costs the machine)",
            None,
        );
    }
    rows.share_of(
        "`https://`: rate",
        rate(&issue.https),
        tls_ceiling,
        "≥ 0.5× the TLS ceiling",
    );
    rows.cpu("`https://`: emitter CPU per event", cpu(&issue.https));
    for (format, runs) in &issue.formats {
        rows.share(&format!("`{format}`: rate"), rate(runs), ceiling);
        rows.cpu(&format!("`{format}`: emitter CPU per event"), cpu(runs));
    }
    if !issue.endpoints.is_empty() {
        rows.share(
            "three endpoints: deliveries",
            rate(&issue.endpoints).map(|r| 3.0 * r),
            ceiling,
        );
        rows.cpu(
            "three endpoints: emitter CPU per delivery",
            cpu(&issue.endpoints).map(|c| c / 3.0),
        );
    }
    if !issue.ha.is_empty() {
        rows.share("active + standby: rate", rate(&issue.ha), ceiling);
        rows.cpu("active + standby: active's CPU per event", cpu(&issue.ha));
        if let Some(pct) = median(issue.ha.iter().map(|r| r.standby_cpu_pct)) {
            rows.add(
                "active + standby: the standby's CPU (1 s idle, then the run)",
                format!("{pct:.1} % of a core"),
                "– (none in the issue)",
                None,
            );
        }
    }
    match &issue.instructions {
        Some(Ok(i)) => rows.add(
            &format!(
                "instructions per delivered event (callgrind, emitter alone, {} events in {:.0} s, and as long without)",
                num(i.events as f64, 0),
                i.held_secs
            ),
            num(i.per_event(), 0),
            "– (recorded to compare builds)",
            None,
        ),
        Some(Err(why)) => rows.add(
            "instructions per delivered event",
            format!("not measured: {why}"),
            "–",
            None,
        ),
        None => {}
    }
    let mut t = String::new();
    if !rows.0.is_empty() {
        let _ = writeln!(
            t,
            "\n### Issue 17's targets\n\n| measure | result | target | met |\n|---|---:|---|:-:|\n{}",
            rows.0
        );
    }
    t
}

/// Issue 30's rows: what an event costs at the rates clusters run (the latency runs).
pub fn render_outbox(results: &Results) -> String {
    let mut rows = Rows(String::new());
    let at = |runs: &[Vec<crate::runs::Latency>], i: usize, f: fn(&crate::runs::Latency) -> f64| {
        median(
            runs.iter()
                .filter_map(|r| r.get(i))
                .map(f)
                .filter(|v| !v.is_nan()),
        )
    };
    for (i, (cpu_target, rate)) in CPU_US_AT_RATE.iter().enumerate() {
        if let Some(kib) = at(&results.latencies, i, |l| l.disk_kib_per_event) {
            rows.add(
                &format!("disk written per event at {rate} events/s (`write_bytes`)"),
                format!("{kib:.1} KiB"),
                "≤ 4 KiB",
                Some(kib <= DISK_KIB_PER_EVENT),
            );
        }
        if let Some(us) = at(&results.latencies, i, |l| l.cpu_us_per_event) {
            rows.add(
                &format!("emitter CPU per event at {rate} events/s (one event at a time)"),
                format!("{us:.0} µs"),
                &format!("≤ {cpu_target:.0} µs"),
                Some(us <= *cpu_target),
            );
        }
        if let Some(syncs) = at(&results.latencies, i, |l| l.syncs_per_event) {
            let target = (i == 1).then_some(SYNCS_PER_EVENT_AT_1000);
            rows.add(
                &format!("`fdatasync` + `fsync` per event at {rate} events/s (`perf stat`)"),
                format!("{syncs:.2}"),
                &target.map_or("– (recorded)".to_owned(), |t| {
                    format!("≤ {t} (commits shared)")
                }),
                target.map(|t| syncs <= t),
            );
        }
    }
    let nginx: Vec<_> = results
        .nginx
        .iter()
        .filter_map(|r| r.as_ref().ok())
        .collect();
    let of = |f: fn(&crate::nginx::NginxResult) -> f64| median(nginx.iter().map(|n| f(n)));
    match (
        of(|n| n.rate() / n.wrk_rate),
        results.nginx.iter().find_map(|r| r.as_ref().err()),
    ) {
        (Some(ratio), _) => {
            let (rates, wrk) = (of(|n| n.rate()), of(|n| n.wrk_rate));
            rows.add(
                "stream backlog → nginx, first request → last, over `wrk` → the same nginx",
                format!(
                    "{} /s over {} /s = {ratio:.2}×",
                    num(rates.unwrap_or(f64::NAN), 0),
                    num(wrk.unwrap_or(f64::NAN), 0)
                ),
                "≥ 0.4×",
                Some(ratio >= NGINX_RATIO),
            );
        }
        (None, Some(why)) => rows.add(
            "stream backlog → nginx, over `wrk` → the same nginx",
            format!("not measured: {}", why.lines().next().unwrap_or_default()),
            "≥ 0.4×",
            None,
        ),
        (None, None) => {}
    }
    let mut t = String::new();
    if !rows.0.is_empty() {
        let _ = writeln!(
            t,
            "\n### Issue 30's targets (what an event costs at the rates clusters run)\n\n| measure | result | target | met |\n|---|---:|---|:-:|\n{}",
            rows.0
        );
    }
    t
}
