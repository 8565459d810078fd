use clap::Parser;
use std::process::ExitCode;

/// jemalloc instead of glibc's malloc: on the delivery path glibc's malloc and free took about a
/// quarter of the emitter's CPU, and their arena locks most of its `futex` calls (BENCHMARKS.md,
/// "Results after issue 17's second round"). mimalloc was faster still but missed the memory
/// targets by far.
#[cfg(target_os = "linux")]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's options, read before `main` (tikv-jemalloc-sys prefixes its symbols with `_rjem_`).
/// Two arenas, as glibc was limited to, keep the resident memory of a large backlog where it was;
/// freed pages go back to the kernel after a second instead of ten. `_RJEM_MALLOC_CONF` in the
/// environment overrides them.
#[cfg(target_os = "linux")]
#[unsafe(export_name = "_rjem_malloc_conf")]
static JEMALLOC_OPTIONS: &u8 = &b"narenas:2,dirty_decay_ms:1000,muzzy_decay_ms:0\0"[0];

fn main() -> ExitCode {
    let cli = e2b_webhook_emitter::cli::Cli::parse();
    e2b_webhook_emitter::cli::main(cli)
}
