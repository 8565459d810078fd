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
/// freed pages go back to the kernel after a second instead of ten — by one background thread:
/// without it pages are only purged when the program allocates again, so a service gone quiet
/// (thousands of webhooks registered, then idle) kept the garbage of its last burst, 25 MiB with
/// 10 000 webhooks (BENCHMARKS.md, "Many teams"). `_RJEM_MALLOC_CONF` in the environment
/// overrides them.
#[cfg(target_os = "linux")]
#[unsafe(export_name = "_rjem_malloc_conf")]
static JEMALLOC_OPTIONS: &u8 =
    &b"narenas:2,dirty_decay_ms:1000,muzzy_decay_ms:0,background_thread:true,max_background_threads:1\0"[0];

fn main() -> ExitCode {
    let cli = e2b_webhook_emitter::cli::Cli::parse();
    e2b_webhook_emitter::cli::main(cli)
}
