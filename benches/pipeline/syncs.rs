//! Counting the emitter's `fdatasync` and `fsync` calls over a measured window (issue 30's
//! "fdatasync per event"): `perf stat` attached to the process counts the kernel's syscall
//! tracepoints in every thread, those started later included, without stopping the emitter (a
//! tracer that stops it at each call, as strace does, makes commits slower and so shared by more
//! events: under strace a smoke run counted 0.95 per event at 1 000/s, half of what perf counts).

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

const EVENTS: &str = "syscalls:sys_enter_fdatasync,syscalls:sys_enter_fsync";

/// A `perf stat` counting one process's syncs until [`Self::stop`].
pub struct SyncCount {
    perf: Child,
    out: PathBuf,
    _dir: tempfile::TempDir,
}

impl SyncCount {
    /// Starts counting the syncs of `pid`; `None` when perf cannot (not installed, or tracepoints
    /// not allowed: `kernel.perf_event_paranoid` above 1 without root, no tracefs).
    pub fn start(pid: u32) -> Option<Self> {
        let dir = tempfile::tempdir().ok()?;
        let out = dir.path().join("perf.csv");
        let perf = Command::new("perf")
            .args(["stat", "-x,", "-e", EVENTS, "-p", &pid.to_string(), "-o"])
            .arg(&out)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .ok()?;
        // perf has attached once it has opened its counters; give it that moment.
        std::thread::sleep(std::time::Duration::from_millis(200));
        Some(Self {
            perf,
            out,
            _dir: dir,
        })
    }

    /// Stops counting (SIGINT makes perf print its counts) and returns the calls counted.
    pub fn stop(mut self) -> Option<u64> {
        let pid = nix::unistd::Pid::from_raw(self.perf.id() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT).ok()?;
        self.perf.wait().ok()?;
        let text = std::fs::read_to_string(&self.out).ok()?;
        let counts: Vec<u64> = text
            .lines()
            .filter(|line| line.contains("syscalls:sys_enter_"))
            .map(|line| line.split(',').next()?.trim().parse().ok())
            .collect::<Option<_>>()?;
        (counts.len() == 2).then(|| counts.iter().sum())
    }
}
