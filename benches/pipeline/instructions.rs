//! Instructions per delivered event: the emitter under `valgrind --tool=callgrind`, which counts
//! the instructions it executes (Ir) whatever else the machine is doing. This VM has no hardware
//! counters (`perf stat -e instructions`: not supported), so callgrind is the noise-free figure.
//!
//! Two runs of the same length: one delivers N events, one none. Start-up, the idle loops (lease
//! renewals, retry rounds, gate refreshes) and shut-down are in both, so
//! (Ir(N) − Ir(0)) / N is what one delivered event costs.

use crate::emitter::{Emitter, Launch};
use crate::log;
use crate::receiver::Receiver;
use crate::redis_server::{RedisServer, reset_redis};
use crate::workload::{Workload, write_burst};
use redis::aio::MultiplexedConnection;
use std::path::Path;
use std::time::{Duration, Instant};

/// Callgrind runs the binary 50–100× slower: start-up, the lease and the drain on SIGTERM take
/// that much longer too.
const CALLGRIND_PATIENCE: Duration = Duration::from_secs(120);

#[derive(Clone, Copy, Debug)]
pub struct Instructions {
    pub events: usize,
    /// Instructions of the run that delivered `events`.
    pub with_events: u64,
    /// Instructions of the run of the same length that delivered none.
    pub without: u64,
    /// Wall time of the loaded run, from ready to stop.
    pub held_secs: f64,
}

impl Instructions {
    pub fn per_event(&self) -> f64 {
        (self.with_events as f64 - self.without as f64) / self.events as f64
    }
}

pub fn valgrind_available() -> bool {
    std::process::Command::new("valgrind")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// N events, then none for as long; both under callgrind.
pub async fn instructions_run(
    redis: &RedisServer,
    conn: &mut MultiplexedConnection,
    work: Workload,
    max_in_flight: usize,
) -> Instructions {
    let (with_events, held) = callgrind_run(redis, conn, Some(work), max_in_flight, None).await;
    log(format!(
        "callgrind: {} events, {with_events} instructions in {:.1} s",
        work.events,
        held.as_secs_f64()
    ));
    let (without, _) = callgrind_run(redis, conn, None, max_in_flight, Some(held)).await;
    log(format!("callgrind: no events, {without} instructions"));
    Instructions {
        events: work.events,
        with_events,
        without,
        held_secs: held.as_secs_f64(),
    }
}

/// One emitter under callgrind: delivers `work` (then waits 1 s for the last commits), or idles
/// for `hold`. Returns its instruction count and how long it ran from ready to stop.
async fn callgrind_run(
    redis: &RedisServer,
    conn: &mut MultiplexedConnection,
    work: Option<Workload>,
    max_in_flight: usize,
    hold: Option<Duration>,
) -> (u64, Duration) {
    reset_redis(conn).await;
    let out = tempfile::tempdir().expect("a temporary directory");
    let out_file = out.path().join("callgrind.out");
    let receiver = Receiver::start(0);
    let mut emitter = Emitter::launch(
        redis,
        &Launch {
            wrapper: vec![
                "valgrind".into(),
                "--tool=callgrind".into(),
                format!("--callgrind-out-file={}", out_file.display()),
            ],
            patience: CALLGRIND_PATIENCE,
            ..Launch::new(&receiver.url(), max_in_flight)
        },
    );
    emitter.wait_active(conn).await;
    let ready = Instant::now();
    if let Some(work) = work {
        write_burst(conn, "i", work).await;
        tokio::task::block_in_place(|| receiver.wait_for(work.events, "callgrind run"));
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    if let Some(hold) = hold {
        tokio::time::sleep(hold.saturating_sub(ready.elapsed())).await;
    }
    let held = ready.elapsed();
    receiver.check_signatures();
    tokio::task::block_in_place(|| emitter.stop());
    keep_profile(&out_file, work.is_some());
    (instructions_in(&out_file), held)
}

/// With `BENCH_CALLGRIND_KEEP=<dir>`, the profile is copied there (`with-events.out`,
/// `without-events.out`) for `callgrind_annotate`: a build with symbols shows where the
/// instructions go by function.
fn keep_profile(out_file: &Path, with_events: bool) {
    let Some(dir) = std::env::var_os("BENCH_CALLGRIND_KEEP") else {
        return;
    };
    let name = if with_events {
        "with-events.out"
    } else {
        "without-events.out"
    };
    let kept = Path::new(&dir).join(name);
    std::fs::create_dir_all(&dir)
        .and_then(|()| std::fs::copy(out_file, &kept))
        .unwrap_or_else(|e| panic!("keeping the profile at {}: {e}", kept.display()));
    log(format!("callgrind: profile kept at {}", kept.display()));
}

/// The total from callgrind's output: its `summary:` (or `totals:`) line, Ir first.
fn instructions_in(path: &Path) -> u64 {
    let text =
        std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    text.lines()
        .find_map(|l| l.strip_prefix("summary:").or(l.strip_prefix("totals:")))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("{} has no summary line", path.display()))
}
