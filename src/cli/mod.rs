//! The command line: one binary, one subcommand per job.

mod backfill;
mod dead_letters;
mod delivery_log;
mod operate;
mod outbox;
mod status;
mod webhook_secrets;
mod webhook_tools;

use crate::config::{ConfigError, RunArgs, RunConfig};
use crate::server::logs::{LogShipper, ShipLayer};
use anyhow::Context;
use backfill::BackfillArgs;
use clap::{Parser, Subcommand};
use dead_letters::DeadLettersCommand;
use outbox::OutboxCommand;
use prometheus_client::metrics::counter::Counter;
use status::StatusArgs;
use std::process::ExitCode;
use std::time::Duration;
use webhook_tools::{ReceiveArgs, SendTestArgs, SignArgs, VerifyArgs};

/// Signed webhooks for every sandbox lifecycle change of a self-hosted E2B cluster.
#[derive(Debug, Parser)]
#[command(name = "e2b-webhook-emitter", version, propagate_version = true)]
pub struct Cli {
    /// Log format on stderr: text for a terminal, json for Nomad.
    #[arg(long, global = true, env = "LOG_FORMAT", default_value = "text", value_parser = ["text", "json"])]
    pub log_format: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the service: consume sources, keep the outbox, deliver signed webhooks.
    Run(Box<RunArgs>),
    /// Print the signature of a body (the signature alone on the last line).
    #[command(
        after_help = "Example:\n  printf %s \"$PAYLOAD\" | e2b-webhook-emitter sign --secret \"$WEBHOOK_SECRET\" -"
    )]
    Sign(SignArgs),
    /// Check a signature: exit 0 when valid, 1 when not (e2b-cloud: in any of its three encodings).
    Verify(VerifyArgs),
    /// Send one signed test event to the endpoint and report its answer.
    #[command(
        after_help = "Example:\n  e2b-webhook-emitter send-test --url https://example.com/api/webhooks/e2b --secret \"$WEBHOOK_SECRET\" --event kill"
    )]
    SendTest(SendTestArgs),
    /// A reference receiver: verify deliveries and print each accepted event as one JSON line.
    #[command(
        after_help = "Examples:\n  e2b-webhook-emitter receive --listen 127.0.0.1:3000 --secret \"$WEBHOOK_SECRET\"\n  e2b-webhook-emitter receive --format e2b-cloud --secret \"$WEBHOOK_SECRET\"\n\nWith e2b-cloud it verifies e2b-signature as E2B's docs do (URL-safe base64, no padding) and also in the standard alphabet, with or without padding, which E2B Cloud was seen sending; it prints E2B Cloud's snake_case payload."
    )]
    Receive(ReceiveArgs),
    /// Feed NDJSON orchestrator events (e.g. a ClickHouse sandbox_events export) through the pipeline.
    #[command(
        after_help = "Example:\n  e2b-webhook-emitter backfill --data-dir /tmp/backfill --url https://example.com/hook --secret \"$WEBHOOK_SECRET\" events.ndjson\n\nUse a DATA_DIR of its own while the service runs (the service holds its own)."
    )]
    Backfill(BackfillArgs),
    /// List or replay events that exhausted the retry policy (in Redis when REDIS_URL is set).
    #[command(subcommand)]
    DeadLetters(DeadLettersCommand),
    /// Take care of the outbox file itself.
    #[command(subcommand)]
    Outbox(OutboxCommand),
    /// Show the outbox depth, oldest pending event, dead letters and source positions.
    Status(StatusArgs),
    /// Recent delivery attempts of the running service, newest first, with filters.
    #[command(
        after_help = "Example:\n  e2b-webhook-emitter deliveries --admin-url http://127.0.0.1:9464 --sandbox isb7q2k9w1 --outcome dead"
    )]
    Deliveries(operate::DeliveriesArgs),
    /// Delivery attempts kept in Postgres (with POSTGRES_CONNECTION_STRING), newest first.
    #[command(
        after_help = "Example:\n  e2b-webhook-emitter delivery-log --webhook 6f1c2d3e-4b5a-4c69-8d7e-0f1a2b3c4d5e --limit 50"
    )]
    DeliveryLog(delivery_log::DeliveryLogArgs),
    /// Registered webhooks' signing secrets sealed in Postgres (WEBHOOK_SECRETS_KEY).
    #[command(
        subcommand,
        after_help = "Example, after a rotation (the new key first):\n  WEBHOOK_SECRETS_KEY=\"$NEW_KEY,$OLD_KEY\" e2b-webhook-emitter webhook-secrets reseal"
    )]
    WebhookSecrets(webhook_secrets::WebhookSecretsCommand),
    /// Run the whole pipeline on bundled sample events against an in-process verifying receiver.
    Demo,
}

/// Runs the parsed command line; configuration errors exit 2, other failures 1.
pub fn main(cli: Cli) -> ExitCode {
    // The demo prints its own progress and summary (which names every dead letter); a log line
    // would only break the progress line. RUST_LOG still turns logs on.
    let default_level = if matches!(cli.command, Command::Demo) {
        "off"
    } else {
        "info"
    };
    // One process-wide TLS provider for reqwest and redis (ring: no C toolchain beyond gcc),
    // installed before the log shipper's client exists.
    let _ = rustls::crypto::ring::default_provider().install_default();
    // `run` may also ship its log lines to E2B's logs collector; the layer is part of the
    // subscriber, so the setting is read before logging starts.
    let log_lines_dropped = Counter::default();
    let mut shipper = None;
    if let Command::Run(args) = &cli.command {
        match crate::config::log_shipping(&args.logs_collector) {
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::from(2);
            }
            Ok(None) => {}
            Ok(Some(settings)) => match LogShipper::start(settings, log_lines_dropped.clone()) {
                Ok(started) => shipper = Some(started),
                Err(e) => {
                    eprintln!("error: cannot start the log shipper: {e}");
                    return ExitCode::FAILURE;
                }
            },
        }
    }
    init_logging(
        &cli.log_format,
        default_level,
        shipper.as_mut().and_then(LogShipper::layer),
    );
    if matches!(
        cli.command,
        Command::Status(_)
            | Command::DeadLetters(_)
            | Command::Outbox(_)
            | Command::Sign(_)
            | Command::Verify(_)
            | Command::SendTest(_)
    ) {
        end_quietly_on_a_closed_pipe();
    }
    let code = match dispatch(cli.command, log_lines_dropped) {
        Ok(code) => code,
        Err(e) => {
            if let Some(config) = e.downcast_ref::<ConfigError>() {
                eprintln!("error: {config}");
                ExitCode::from(2)
            } else {
                // A library's error may quote a URL it was given, credentials included.
                let message = crate::util::redact::redact_urls_in(&format!("{e:#}"));
                eprintln!("error: {message}");
                ExitCode::FAILURE
            }
        }
    };
    if let Some(shipper) = shipper {
        shipper.stop(Duration::from_secs(3));
    }
    code
}

/// `dead-letters list --json | head` closes the pipe early; a one-shot command then ends
/// silently, as `cat` does, instead of failing with "Broken pipe". Rust ignores SIGPIPE by
/// default; the service keeps it ignored (a closed socket must never end it).
fn end_quietly_on_a_closed_pipe() {
    // SAFETY: restores the default disposition of one signal before any other thread exists.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

fn init_logging(format: &str, default_level: &str, ship: Option<ShipLayer>) {
    use std::io::IsTerminal;
    use tracing_subscriber::Layer as _;
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level));
    let stderr = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    let stderr = if format == "json" {
        stderr.json().flatten_event(true).boxed()
    } else {
        stderr.boxed()
    };
    // The filter applies to both: the collector gets the lines stderr gets.
    tracing_subscriber::registry()
        .with(filter)
        .with(stderr)
        .with(ship)
        .init();
}

/// A runtime for a command: tokio's default of one thread per CPU.
pub(super) fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    built(&mut tokio::runtime::Builder::new_multi_thread())
}

/// The service's runtime: `worker_threads` threads, not one per CPU of the host, which on a
/// Nomad client of many cores would be many threads for a job that reserves a fraction of one.
fn service_runtime(worker_threads: usize) -> anyhow::Result<tokio::runtime::Runtime> {
    built(tokio::runtime::Builder::new_multi_thread().worker_threads(worker_threads))
}

fn built(builder: &mut tokio::runtime::Builder) -> anyhow::Result<tokio::runtime::Runtime> {
    builder
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

fn dispatch(command: Command, log_lines_dropped: Counter) -> anyhow::Result<ExitCode> {
    match command {
        Command::Run(args) => {
            let config = RunConfig::from_args(&args)?;
            service_runtime(config.worker_threads)?
                .block_on(crate::service::run(config, log_lines_dropped))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Sign(args) => webhook_tools::sign(args),
        Command::Verify(args) => webhook_tools::verify(args),
        Command::SendTest(args) => runtime()?.block_on(webhook_tools::send_test(args)),
        Command::Receive(args) => runtime()?.block_on(webhook_tools::receive(args)),
        Command::Backfill(args) => runtime()?.block_on(backfill::backfill(args)),
        Command::DeadLetters(cmd) => dead_letters::dead_letters(cmd),
        Command::Status(args) => status::status(args),
        Command::Deliveries(args) => operate::deliveries(args),
        Command::DeliveryLog(args) => delivery_log::delivery_log(args),
        Command::WebhookSecrets(command) => webhook_secrets::webhook_secrets(command),
        Command::Outbox(OutboxCommand::MoveAside { storage }) => {
            outbox::move_aside(&storage.data_dir)
        }
        Command::Demo => {
            runtime()?.block_on(crate::demo::run())?;
            Ok(ExitCode::SUCCESS)
        }
    }
}
