use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    limit_malloc_arenas();
    let cli = e2b_webhook_emitter::cli::Cli::parse();
    e2b_webhook_emitter::cli::main(cli)
}

/// glibc gives each thread that allocates an arena of its own; with the blocking pool's threads
/// that alone roughly doubled the resident memory under a large backlog (see BENCHMARKS.md).
/// Two arenas cost no measurable throughput here.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn limit_malloc_arenas() {
    // SAFETY: mallopt only changes allocator tuning; it runs before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn limit_malloc_arenas() {}
