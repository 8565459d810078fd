//! What waking a thread costs on this host, to read the emitter's CPU per event against.
//!
//! At the rates clusters run, each event arrives alone: every thread on its path (the runtime's
//! workers, the outbox's writer, the blocking pool) sleeps between events and is woken for it,
//! and in a virtual machine a wake-up costs tens of microseconds of CPU (a timer or an
//! inter-processor interrupt, the hypervisor's exit, the scheduler) where bare metal takes a few
//! (BENCHMARKS.md, issue 30's fifth round). So the latency rows count the emitter's context
//! switches per event, and this measures what one costs here: two threads pass a token back and
//! forth, `gap` apart like the events, and their CPU time is divided by the wake-ups.

use std::sync::mpsc;
use std::time::{Duration, Instant};

/// CPU time the calling thread has used, with nanosecond resolution (`/proc`'s ticks are 10 ms,
/// coarser than a few hundred round trips cost).
fn thread_cpu() -> Duration {
    let t = nix::time::clock_gettime(nix::time::ClockId::CLOCK_THREAD_CPUTIME_ID)
        .expect("CLOCK_THREAD_CPUTIME_ID");
    Duration::new(t.tv_sec() as u64, t.tv_nsec() as u32)
}

/// CPU µs per wake-up of a sleeping thread when one is woken every `gap` and answers at once:
/// `round_trips` passes there and back (two wake-ups each) over both threads' CPU time.
pub fn cpu_us_per_wakeup(gap: Duration, round_trips: usize) -> f64 {
    let (to_peer, peer_gets) = mpsc::channel::<()>();
    let (to_main, main_gets) = mpsc::channel::<()>();
    let peer = std::thread::spawn(move || {
        let start = thread_cpu();
        while peer_gets.recv().is_ok() {
            if to_main.send(()).is_err() {
                break;
            }
        }
        thread_cpu() - start
    });
    let start = thread_cpu();
    let mut next = Instant::now();
    for _ in 0..round_trips {
        next += gap;
        // The sleep is a wake-up too, as the emitter's timers and socket waits are; it is not
        // counted in the divisor, so the figure errs high, as the emitter's do.
        std::thread::sleep(next.saturating_duration_since(Instant::now()));
        to_peer.send(()).expect("the peer thread is running");
        main_gets.recv().expect("the peer thread answers");
    }
    let main = thread_cpu() - start;
    drop(to_peer);
    let peer = peer.join().expect("the peer thread");
    (main + peer).as_secs_f64() * 1e6 / (2 * round_trips) as f64
}

/// Voluntary and involuntary context switches of every thread of `pid` so far: how often its
/// threads went to sleep or were put off the CPU (`/proc/<pid>/task/*/status`; a thread that
/// ended meanwhile takes its count with it, so runs compare only while the threads stay).
pub fn context_switches(pid: u32) -> f64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return f64::NAN;
    };
    tasks
        .flatten()
        .filter_map(|task| std::fs::read_to_string(task.path().join("status")).ok())
        .flat_map(|status| {
            status
                .lines()
                .filter(|l| l.contains("ctxt_switches:"))
                .filter_map(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
                .collect::<Vec<_>>()
        })
        .sum()
}
