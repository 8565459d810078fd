//! Counting the emitter's `fdatasync` and `fsync` calls (issue 30's "fdatasync per event"), with
//! `strace` wrapped around the binary.
//!
//! `--seccomp-bpf` stops the emitter only at the traced calls, not at every system call, so it
//! runs close to its usual speed; still, its CPU is not read from this run (the tracer's stops
//! cost the emitter some), only the calls. `-ttt` stamps each call, so the calls of a measured
//! window are counted and start-up and shutdown are left out.

use std::path::{Path, PathBuf};

/// One emitter run's trace file.
pub struct SyncTrace {
    file: PathBuf,
}

impl SyncTrace {
    /// A trace written to `dir`.
    pub fn in_dir(dir: &Path) -> Self {
        Self {
            file: dir.join("syncs.strace"),
        }
    }

    /// The command the emitter runs under.
    pub fn wrapper(&self) -> Vec<String> {
        [
            "strace",
            "-f",
            "--seccomp-bpf",
            "-qq",
            "-ttt",
            "-e",
            "signal=none",
            "-e",
            "trace=fdatasync,fsync",
            "-o",
        ]
        .into_iter()
        .map(str::to_owned)
        .chain([self.file.display().to_string()])
        .collect()
    }

    /// Calls that began in `[from_us, to_us]` (µs since the epoch). Read after the emitter has
    /// stopped, when strace has written everything.
    pub fn count(&self, from_us: i64, to_us: i64) -> usize {
        let text = std::fs::read_to_string(&self.file).unwrap_or_default();
        text.lines()
            .filter(|line| line.contains("fdatasync(") || line.contains("fsync("))
            .filter_map(|line| line.split_whitespace().nth(1)?.parse::<f64>().ok())
            .map(|seconds| (seconds * 1e6) as i64)
            .filter(|us| (from_us..=to_us).contains(us))
            .count()
    }
}

/// Whether strace is there to count with.
pub fn strace_installed() -> bool {
    std::process::Command::new("strace")
        .arg("-V")
        .output()
        .is_ok_and(|o| o.status.success())
}
