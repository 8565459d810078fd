//! The knobs, from environment variables (listed at the top of main.rs).

pub struct Settings {
    pub runs: usize,
    pub events: usize,
    pub backlog: usize,
    pub latency_secs: u64,
    /// Events per second of the latency runs: 100 and 1 000 (issue 30's targets), then any
    /// from `BENCH_LATENCY_EXTRA_RATES`.
    pub latency_rates: Vec<u32>,
    pub max_in_flight: usize,
    /// Events per sandbox in the 1 vs 10 000 sandboxes comparison.
    pub per_sandbox: usize,
    /// Events in the loaded callgrind run.
    pub callgrind_events: usize,
    pub only: Option<Vec<String>>,
}

impl Settings {
    pub fn from_env() -> Self {
        let num = |name: &str, default: usize| -> usize {
            std::env::var(name)
                .ok()
                .and_then(|v| v.trim().parse().ok())
                .filter(|v| *v > 0)
                .unwrap_or(default)
        };
        Self {
            runs: num("BENCH_RUNS", 3),
            events: num("BENCH_EVENTS", 20_000),
            backlog: num("BENCH_BACKLOG", 100_000),
            latency_secs: num("BENCH_LATENCY_SECS", 10) as u64,
            latency_rates: [100, 1_000]
                .into_iter()
                .chain(
                    std::env::var("BENCH_LATENCY_EXTRA_RATES")
                        .unwrap_or_default()
                        .split(',')
                        .filter_map(|r| r.trim().parse().ok())
                        .filter(|r| *r > 0),
                )
                .collect(),
            max_in_flight: num("BENCH_MAX_IN_FLIGHT", 64),
            per_sandbox: num("BENCH_PER_SANDBOX", 100),
            callgrind_events: num("BENCH_CALLGRIND_EVENTS", 2_000),
            only: std::env::var("BENCH_ONLY")
                .ok()
                .filter(|v| !v.trim().is_empty())
                .map(|v| v.split(',').map(|s| s.trim().to_owned()).collect()),
        }
    }

    pub fn wants(&self, phase: &str) -> bool {
        self.only
            .as_ref()
            .is_none_or(|o| o.iter().any(|p| p == phase))
    }
}
