//! The command line: one binary, one subcommand per job.

mod delivery_log;
mod operate;

use crate::config::{ConfigError, RunArgs, RunConfig, WebhookArgs};
use crate::deliver::format::{self, WireFormat};
use crate::deliver::http::WebhookClient;
use crate::deliver::retry::parse_duration;
use crate::deliver::sign;
use crate::event::Lifecycle;
use crate::receiver::{self, Verifier};
use anyhow::Context;
use clap::{Parser, Subcommand};
use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;

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
    /// Run the whole pipeline on bundled sample events against an in-process verifying receiver.
    Demo,
}

#[derive(Debug, clap::Args)]
struct BackfillArgs {
    #[command(flatten)]
    run: Box<RunArgs>,
    /// NDJSON file, one event per line; - reads standard input.
    file: PathBuf,
}

/// Where every instance's dead letters are: the service's Redis settings (from its environment).
#[derive(Debug, clap::Args)]
struct SharedStoreArgs {
    /// The service's Redis (as `run` reads it); when set, the shared dead letters there are used.
    #[arg(long, env = "REDIS_URL", hide_env_values = true, value_name = "ADDR")]
    redis_url: Option<String>,
    /// The service's Redis Cluster seed node.
    #[arg(
        long,
        env = "REDIS_CLUSTER_URL",
        hide_env_values = true,
        value_name = "ADDR"
    )]
    redis_cluster_url: Option<String>,
    /// TLS to Redis, as `run` reads it.
    #[arg(long, env = "REDIS_TLS_ENABLED", value_name = "BOOL")]
    redis_tls_enabled: Option<String>,
    /// Redis password, as `run` reads it.
    #[arg(long, env = "REDIS_PASSWORD", hide_env_values = true)]
    redis_password: Option<String>,
    /// CA for TLS to Redis, as `run` reads it.
    #[arg(long, env = "REDIS_TLS_CA_BASE64", value_name = "BASE64")]
    redis_tls_ca_base64: Option<String>,
    /// The orchestrator's event stream key.
    #[arg(long, env = "REDIS_STREAM", default_value = "sandbox.events.stream")]
    redis_stream: String,
    /// The service's consumer group.
    #[arg(long, env = "REDIS_GROUP", default_value = "e2b-webhook-emitter")]
    redis_group: String,
}

impl SharedStoreArgs {
    /// The Redis settings, checked as `run` checks them; `None` without Redis.
    fn redis(&self) -> Result<Option<crate::config::RedisConfig>, ConfigError> {
        crate::config::redis_config(&RunArgs {
            redis_url: self.redis_url.clone(),
            redis_cluster_url: self.redis_cluster_url.clone(),
            redis_tls_enabled: self.redis_tls_enabled.clone(),
            redis_password: self.redis_password.clone(),
            redis_tls_ca_base64: self.redis_tls_ca_base64.clone(),
            redis_stream: self.redis_stream.clone(),
            redis_group: self.redis_group.clone(),
            // Not used here, but checked: the service's defaults.
            redis_claim_idle: "60s".into(),
            leader_lease_ttl: "8s".into(),
            ..RunArgs::default()
        })
    }
}

#[derive(Debug, Subcommand)]
enum DeadLettersCommand {
    /// Show dead letters (a table, or JSON lines with --json). With the service's Redis settings
    /// (REDIS_URL …) they are the shared ones every instance sees; else those in --data-dir.
    List {
        #[command(flatten)]
        shared: SharedStoreArgs,
        #[command(flatten)]
        remote: operate::RemoteArgs,
        /// Directory of the outbox.
        #[arg(long, env = "DATA_DIR", default_value = "data")]
        data_dir: PathBuf,
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
    },
    /// Put dead letters back: with Redis, onto the stream (the active instance delivers them at
    /// once); else through the running service's admin API (delivered at once), or in the data
    /// directory while the service is stopped.
    Replay {
        #[command(flatten)]
        shared: SharedStoreArgs,
        #[command(flatten)]
        remote: operate::RemoteArgs,
        /// Only the dead letters of this endpoint.
        #[arg(long)]
        endpoint: Option<String>,
        /// Directory of the outbox.
        #[arg(long, env = "DATA_DIR", default_value = "data")]
        data_dir: PathBuf,
        /// Replay every dead letter.
        #[arg(long, conflicts_with = "ids")]
        all: bool,
        /// Dead-letter ids, as listed.
        #[arg(required_unless_present = "all")]
        ids: Vec<u64>,
    },
}

#[derive(Debug, Subcommand)]
enum OutboxCommand {
    /// Rename a damaged (or unwanted) outbox to outbox.redb.aside-<time>, so the service starts
    /// over with an empty one; says what is lost. Stop the service first.
    MoveAside {
        /// Directory of the outbox.
        #[arg(long, env = "DATA_DIR", default_value = "data")]
        data_dir: PathBuf,
    },
}

#[derive(Debug, clap::Args)]
struct StatusArgs {
    #[command(flatten)]
    remote: operate::RemoteArgs,
    /// Directory of the outbox.
    #[arg(long, env = "DATA_DIR", default_value = "data")]
    data_dir: PathBuf,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, clap::Args)]
struct SignArgs {
    #[command(flatten)]
    webhook: WebhookArgs,
    /// Message id (standard-webhooks only; default: a new UUID).
    #[arg(long)]
    id: Option<String>,
    /// Unix timestamp in seconds (standard-webhooks only; default: now).
    #[arg(long)]
    timestamp: Option<i64>,
    /// The body, byte for byte; - reads standard input.
    #[arg(default_value = "-")]
    file: PathBuf,
}

#[derive(Debug, clap::Args)]
struct VerifyArgs {
    #[command(flatten)]
    webhook: WebhookArgs,
    /// The signature header's value.
    #[arg(long)]
    signature: String,
    /// `webhook-id` (standard-webhooks only).
    #[arg(long)]
    id: Option<String>,
    /// `webhook-timestamp` (standard-webhooks only).
    #[arg(long)]
    timestamp: Option<i64>,
    /// The body, byte for byte; - reads standard input.
    #[arg(default_value = "-")]
    file: PathBuf,
}

#[derive(Debug, clap::Args)]
struct SendTestArgs {
    #[command(flatten)]
    webhook: WebhookArgs,
    /// The test event: a label (create, kill, pause, resume, update, checkpoint) or E2B's type (sandbox.lifecycle.killed, …).
    #[arg(long, default_value = "kill")]
    event: String,
    /// Sandbox id of the test event.
    #[arg(long, default_value = "e2b-webhook-emitter-test")]
    sandbox_id: String,
    /// Team UUID of the test event.
    #[arg(long, default_value = "00000000-0000-0000-0000-000000000000")]
    team_id: String,
    /// Request timeout.
    #[arg(long, env = "WEBHOOK_TIMEOUT", default_value = "10s")]
    webhook_timeout: String,
}

#[derive(Debug, clap::Args)]
struct ReceiveArgs {
    #[command(flatten)]
    webhook: WebhookArgs,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:3000")]
    listen: String,
    /// A request's head must arrive within this (an idle keep-alive connection is closed after it).
    #[arg(long, default_value = "10s", value_name = "DURATION")]
    header_timeout: String,
    /// Reading a request's body and answering it must end within this (else 408).
    #[arg(long, default_value = "30s", value_name = "DURATION")]
    request_timeout: String,
    /// Connections open at once; more wait in the listen backlog.
    #[arg(long, default_value_t = 1024)]
    max_connections: usize,
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
    init_logging(&cli.log_format, default_level);
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
    // One process-wide TLS provider for reqwest and redis (ring: no C toolchain beyond gcc).
    let _ = rustls::crypto::ring::default_provider().install_default();
    match dispatch(cli.command) {
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
    }
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

fn init_logging(format: &str, default_level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level));
    use std::io::IsTerminal;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    if format == "json" {
        builder.json().flatten_event(true).init();
    } else {
        builder.init();
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

fn dispatch(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Run(args) => {
            let config = RunConfig::from_args(&args)?;
            runtime()?.block_on(crate::service::run(config))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Sign(args) => sign_command(args),
        Command::Verify(args) => verify_command(args),
        Command::SendTest(args) => runtime()?.block_on(send_test(args)),
        Command::Receive(args) => runtime()?.block_on(receive(args)),
        Command::Backfill(args) => runtime()?.block_on(backfill(args)),
        Command::DeadLetters(cmd) => dead_letters(cmd),
        Command::Status(args) => status(args),
        Command::Deliveries(args) => operate::deliveries(args),
        Command::DeliveryLog(args) => delivery_log::delivery_log(args),
        Command::Outbox(OutboxCommand::MoveAside { data_dir }) => move_aside(&data_dir),
        Command::Demo => {
            runtime()?.block_on(crate::demo::run())?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn read_body(file: &PathBuf) -> anyhow::Result<Vec<u8>> {
    let mut body = Vec::new();
    if file.as_os_str() == "-" {
        std::io::stdin()
            .read_to_end(&mut body)
            .context("cannot read the body from standard input")?;
    } else {
        body = std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?;
    }
    Ok(body)
}

fn sign_command(args: SignArgs) -> anyhow::Result<ExitCode> {
    let secrets = args.webhook.secrets()?;
    let body = read_body(&args.file)?;
    let mut out = std::io::stdout().lock();
    match args.webhook.format()? {
        WireFormat::XE2bSignature => {
            writeln!(out, "{}", sign::x_e2b_signature(secrets.primary(), &body))?
        }
        WireFormat::E2bCloud => writeln!(
            out,
            "{}",
            sign::e2b_cloud_signature(
                secrets.primary(),
                &body,
                args.webhook.identity("sign")?.signature_encoding
            )
        )?,
        WireFormat::StandardWebhooks => {
            let id = args.id.unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
            let ts = args
                .timestamp
                .unwrap_or_else(|| jiff::Timestamp::now().as_second());
            writeln!(out, "webhook-id: {id}")?;
            writeln!(out, "webhook-timestamp: {ts}")?;
            writeln!(
                out,
                "{}",
                sign::standard_webhooks_header(&secrets, &id, ts, &body)
            )?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn verify_command(args: VerifyArgs) -> anyhow::Result<ExitCode> {
    let secrets = args.webhook.secrets()?;
    let body = read_body(&args.file)?;
    let valid = match args.webhook.format()? {
        WireFormat::XE2bSignature => sign::verify_x_e2b(&secrets, &body, &args.signature),
        WireFormat::E2bCloud => sign::verify_e2b_cloud(&secrets, &body, &args.signature),
        WireFormat::StandardWebhooks => {
            let (Some(id), Some(ts)) = (args.id, args.timestamp) else {
                return Err(ConfigError::new("--id and --timestamp", "standard-webhooks signatures cover the webhook-id and webhook-timestamp headers; pass both").into());
            };
            sign::verify_standard_webhooks(&secrets, &id, ts, &body, &args.signature)
        }
    };
    if valid {
        println!("valid");
        Ok(ExitCode::SUCCESS)
    } else {
        println!("invalid: the signature does not match this body and secret");
        Ok(ExitCode::FAILURE)
    }
}

async fn send_test(args: SendTestArgs) -> anyhow::Result<ExitCode> {
    let url = args.webhook.url()?;
    let secrets = args.webhook.secrets()?;
    let format = args.webhook.format()?;
    let timeout = parse_duration(&args.webhook_timeout)
        .map_err(|e| ConfigError::new("WEBHOOK_TIMEOUT (--webhook-timeout)", e))?;
    let lifecycle = match Lifecycle::from_name(&args.event) {
        Ok(Lifecycle::Unknown(t)) => {
            return Err(ConfigError::new(
                "--event",
                format!("{t:?} is a type this version cannot build a test event for"),
            )
            .into());
        }
        Ok(known) => known,
        Err(e) => return Err(ConfigError::new("--event", e).into()),
    };
    let event =
        crate::deliver::probe::test_event(lifecycle, &args.sandbox_id, &args.team_id, "send-test")
            .map_err(|e| ConfigError::new("--team-id / --sandbox-id", e.to_string()))?;
    let request = format::render(
        format,
        &event,
        &args.webhook.identity("send-test")?,
        &secrets,
        1,
        jiff::Timestamp::now(),
    );
    let client = WebhookClient::new(timeout, crate::deliver::http::DEFAULT_RESPONSE_BODY_LIMIT)?;
    let attempt = client.post(&url, &request).await;
    println!(
        "POST {} ({format}): {} in {} ms",
        crate::util::redact::redact_url(&url),
        attempt.outcome.describe(),
        attempt.elapsed.as_millis()
    );
    if attempt.outcome.is_delivered() {
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!(
            "error: the endpoint did not accept the test event; check the URL, the secret and the format the receiver expects"
        );
        Ok(ExitCode::FAILURE)
    }
}

async fn receive(args: ReceiveArgs) -> anyhow::Result<ExitCode> {
    let verifier = Verifier::new(args.webhook.format()?, args.webhook.secrets()?);
    let timeout = |setting: &str, text: &str| match parse_duration(text) {
        Ok(d) if !d.is_zero() => Ok(d),
        Ok(_) => Err(ConfigError::new(setting, "must be more than 0s")),
        Err(e) => Err(ConfigError::new(setting, e)),
    };
    if args.max_connections == 0 {
        return Err(ConfigError::new("--max-connections", "must be at least 1").into());
    }
    let limits = crate::server::listen::ConnectionLimits {
        header_timeout: timeout("--header-timeout", &args.header_timeout)?,
        request_timeout: timeout("--request-timeout", &args.request_timeout)?,
        max_connections: args.max_connections,
    };
    let listener = tokio::net::TcpListener::bind(&args.listen)
        .await
        .map_err(|e| {
            ConfigError::new("--listen", format!("cannot listen on {}: {e}", args.listen))
        })?;
    tracing::info!(addr = %listener.local_addr()?, "receiving webhooks");
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let printer = tokio::spawn(async move {
        while let Some(accepted) = rx.recv().await {
            let receiver::Accepted { body, .. } = accepted;
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "{body}");
            let _ = out.flush();
        }
    });
    crate::server::listen::serve(
        listener,
        receiver::router(verifier, tx),
        limits,
        crate::service::shutdown_signal(),
    )
    .await?;
    // Every accepted request was answered 200 before its line was printed: print what is still
    // queued (the channel closes with the server), within a bound in case a connection lingers.
    let _ = tokio::time::timeout(std::time::Duration::from_secs(2), printer).await;
    Ok(ExitCode::SUCCESS)
}

async fn backfill(args: BackfillArgs) -> anyhow::Result<ExitCode> {
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
async fn backfill_through_stream(
    redis: &crate::config::RedisConfig,
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

fn dead_letters(cmd: DeadLettersCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        DeadLettersCommand::List {
            shared,
            remote,
            data_dir,
            json,
        } => {
            let letters = match shared.redis()? {
                Some(redis) => runtime()?.block_on(async {
                    crate::source::redis::SharedDeadLetters::connect(&redis)
                        .await?
                        .list()
                        .await
                })?,
                None => match operate::dead_letters(&remote)? {
                    Some(letters) => letters,
                    None => crate::outbox::OutboxReader::open(&data_dir)?.dead_letters()?,
                },
            };
            let mut out = std::io::stdout().lock();
            if json {
                for letter in &letters {
                    writeln!(out, "{}", serde_json::to_string(letter)?)?;
                }
            } else if letters.is_empty() {
                writeln!(out, "no dead letters")?;
            } else {
                writeln!(
                    out,
                    "{:>6}  {:<25}  {:<12}  {:<10}  {:<20}  {:>8}  REASON",
                    "ID", "DEAD AT", "ENDPOINT", "LABEL", "SANDBOX", "ATTEMPTS"
                )?;
                for l in &letters {
                    let when = jiff::Timestamp::from_millisecond(l.dead_at_ms)
                        .map(|t| t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string())
                        .unwrap_or_default();
                    let what = l.label.clone().unwrap_or_else(|| "malformed".into());
                    let sandbox = l
                        .sandbox_id
                        .clone()
                        .or_else(|| l.position.clone())
                        .unwrap_or_default();
                    writeln!(
                        out,
                        "{:>6}  {:<25}  {:<12}  {:<10}  {:<20}  {:>8}  {}",
                        l.id,
                        when,
                        l.endpoint.as_deref().unwrap_or(&l.source),
                        what,
                        sandbox,
                        l.attempts,
                        l.reason
                    )?;
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        DeadLettersCommand::Replay {
            shared,
            remote,
            endpoint,
            data_dir,
            all,
            ids,
        } => {
            let wanted = if all { None } else { Some(ids.as_slice()) };
            if let Some(redis) = shared.redis()? {
                let report = runtime()?.block_on(async {
                    crate::source::redis::SharedDeadLetters::connect(&redis)
                        .await?
                        .replay(wanted, endpoint.as_deref())
                        .await
                })?;
                for (id, why) in &report.skipped {
                    eprintln!("skipped {id}: {why}");
                }
                for (id, entry) in &report.replayed {
                    eprintln!("dead letter {id} is back on the stream as entry {entry}");
                }
                println!(
                    "replayed {} dead letters; the active instance delivers them now",
                    report.replayed.len()
                );
                return Ok(
                    if report.skipped.is_empty() || !report.replayed.is_empty() {
                        ExitCode::SUCCESS
                    } else {
                        ExitCode::FAILURE
                    },
                );
            }
            if let Some(code) = operate::replay(&remote, &ids, all, endpoint.as_deref())? {
                return Ok(code);
            }
            let report =
                crate::outbox::replay_dead_letters(&data_dir, wanted, endpoint.as_deref())?;
            for (id, why) in &report.skipped {
                eprintln!("skipped {id}: {why}");
            }
            println!(
                "replayed {} dead letters; they are delivered when the service runs",
                report.replayed.len()
            );
            Ok(
                if report.skipped.is_empty() || !report.replayed.is_empty() {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::FAILURE
                },
            )
        }
    }
}

fn move_aside(data_dir: &std::path::Path) -> anyhow::Result<ExitCode> {
    let moved = crate::outbox::move_aside(data_dir)?;
    if moved.database.as_os_str().is_empty() {
        println!("the outbox file was already gone; its marker is moved aside");
    } else {
        println!(
            "moved the outbox to {} (kept for inspection)",
            moved.database.display()
        );
    }
    match (moved.events, moved.dead_letters) {
        (Some(events), Some(dead)) => println!(
            "lost with it: {events} events not yet delivered everywhere and {dead} dead letters"
        ),
        _ => println!("lost with it: whatever it held (it could not be read to count)"),
    }
    println!(
        "events a source has not acknowledged yet are read again; the next start creates an empty outbox in {}",
        data_dir.display()
    );
    Ok(ExitCode::SUCCESS)
}

fn status(args: StatusArgs) -> anyhow::Result<ExitCode> {
    if let Some(code) = operate::status(&args.remote, args.json)? {
        return Ok(code);
    }
    let reader = crate::outbox::OutboxReader::open(&args.data_dir)?;
    let status = reader.status()?;
    let states = reader.states()?;
    if args.json {
        let positions: serde_json::Map<String, serde_json::Value> = states
            .iter()
            .map(|(k, v)| {
                (
                    k.clone(),
                    serde_json::from_slice(v)
                        .unwrap_or_else(|_| String::from_utf8_lossy(v).into_owned().into()),
                )
            })
            .collect();
        println!(
            "{}",
            serde_json::json!({"outbox": status, "sources": positions})
        );
        return Ok(ExitCode::SUCCESS);
    }
    let now = jiff::Timestamp::now().as_millisecond();
    println!(
        "outbox: {} events stored, {} dead letters, {} sandboxes tracked",
        status.events, status.dead_letters, status.sandboxes
    );
    for e in &status.endpoints {
        let oldest = e
            .oldest_appended_at_ms
            .map(|t| format!("oldest {}s old", (now - t) / 1000))
            .unwrap_or_else(|| "nothing pending".into());
        let error = e
            .oldest_last_error
            .as_deref()
            .map(|err| format!(", last error: {err}"))
            .unwrap_or_default();
        println!(
            "  endpoint {}: {} pending, {oldest}{error}",
            e.endpoint, e.depth
        );
    }
    for (key, value) in &states {
        let text = String::from_utf8_lossy(value);
        let shown: String = text.chars().take(120).collect();
        println!("  {key}: {shown}");
    }
    Ok(ExitCode::SUCCESS)
}
