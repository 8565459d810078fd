//! `backfill`: NDJSON orchestrator events fed through the pipeline, or onto the stream with Redis.

use crate::config::{RunArgs, RunConfig};
use anyhow::Context;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub(super) struct BackfillArgs {
    #[command(flatten)]
    run: Box<RunArgs>,
    /// NDJSON file, one event per line; - reads standard input.
    file: PathBuf,
}

pub(super) async fn backfill(args: BackfillArgs) -> anyhow::Result<ExitCode> {
    let config = RunConfig::from_args(&args.run)?;
    if let Some(redis) = &config.redis {
        return backfill_through_stream(redis, &args.file).await;
    }
    let metrics = std::sync::Arc::new(crate::metrics::Metrics::new());
    let mut pipeline = crate::service::Pipeline::start(
        &config.data_dir,
        &config.endpoints,
        &config.retry,
        config.max_in_flight,
        metrics,
    )?;
    let report = if args.file.as_os_str() == "-" {
        crate::source::file::read_ndjson(
            tokio::io::BufReader::new(tokio::io::stdin()),
            "backfill",
            &pipeline.outbox,
        )
        .await?
    } else {
        let file = tokio::fs::File::open(&args.file)
            .await
            .with_context(|| format!("cannot open {}", args.file.display()))?;
        crate::source::file::read_ndjson(
            tokio::io::BufReader::new(file),
            "backfill",
            &pipeline.outbox,
        )
        .await?
    };
    eprintln!(
        "read {} lines: {} events queued, {} already queued, {} malformed (set aside; see `dead-letters list`)",
        report.lines, report.appended, report.duplicates, report.malformed
    );
    let stopped = pipeline
        .run_until_idle_or_signal(|status| {
            let depth = status.pending();
            eprint!(
                "\r  {depth} pending, {} dead letters   ",
                status.dead_letters
            );
            let _ = std::io::stderr().flush();
        })
        .await?;
    eprintln!();
    let status = pipeline.outbox.status().await?;
    pipeline.stop().await?;
    let left = status.pending();
    if stopped {
        eprintln!(
            "interrupted: {left} events stay in {}; run backfill again (same --data-dir) to finish",
            config.data_dir.display()
        );
        return Ok(ExitCode::FAILURE);
    }
    println!(
        "backfill done: {} events delivered or dead-lettered; {} dead letters in {}",
        report.appended,
        status.dead_letters,
        config.data_dir.display()
    );
    Ok(if report.malformed > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// With Redis, `backfill` appends to the stream: the active instance delivers the events, in
/// order with everything else, and they survive the loss of any node. Waits until the group
/// has delivered (or dead-lettered) them.
pub(super) async fn backfill_through_stream(
    redis: &crate::config::RedisSettings,
    file: &std::path::Path,
) -> anyhow::Result<ExitCode> {
    let intake = crate::source::redis::StreamIntake::connect(redis)
        .await
        .context(
            "backfill appends to the stream the running service reads; start the service first",
        )?;
    let report = if file.as_os_str() == "-" {
        crate::source::file::read_ndjson(
            tokio::io::BufReader::new(tokio::io::stdin()),
            "backfill",
            &intake,
        )
        .await?
    } else {
        let input = tokio::fs::File::open(file)
            .await
            .with_context(|| format!("cannot open {}", file.display()))?;
        crate::source::file::read_ndjson(tokio::io::BufReader::new(input), "backfill", &intake)
            .await?
    };
    eprintln!(
        "read {} lines: {} events appended to {} for the active instance, {} malformed (set aside; see `dead-letters list`)",
        report.lines, report.appended, redis.stream, report.malformed
    );
    let waiting = async {
        loop {
            match intake.progress().await {
                Ok(progress) if progress.finished() => return,
                Ok(progress) => {
                    eprint!("\r  {} pending   ", progress.pending);
                    let _ = std::io::stderr().flush();
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read the group's progress; trying again")
                }
            }
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
    };
    tokio::select! {
        () = waiting => {}
        () = crate::service::shutdown_signal() => {
            eprintln!();
            eprintln!("interrupted: the events are in the stream and the active instance delivers them anyway");
            return Ok(ExitCode::FAILURE);
        }
    }
    eprintln!();
    println!(
        "backfill done: {} events delivered or dead-lettered by the active instance",
        report.appended
    );
    Ok(if report.malformed > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}
