//! The command line: one binary, one subcommand per job.

use crate::config::{ConfigError, RunArgs, RunConfig, WebhookArgs};
use crate::deliver::format::{self, WireFormat};
use crate::deliver::http::WebhookClient;
use crate::deliver::retry::parse_duration;
use crate::deliver::sign;
use crate::event::{Lifecycle, SandboxEvent};
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
    /// Check a signature: exit 0 when valid, 1 when not.
    Verify(VerifyArgs),
    /// Send one signed test event to the endpoint and report its answer.
    #[command(
        after_help = "Example:\n  e2b-webhook-emitter send-test --url https://example.com/api/webhooks/e2b --secret \"$WEBHOOK_SECRET\" --event kill"
    )]
    SendTest(SendTestArgs),
    /// A reference receiver: verify deliveries and print each accepted event as one JSON line.
    #[command(
        after_help = "Example:\n  e2b-webhook-emitter receive --listen 127.0.0.1:3000 --secret \"$WEBHOOK_SECRET\""
    )]
    Receive(ReceiveArgs),
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
    /// Lifecycle label of the test event: create, kill, pause, resume, update or checkpoint.
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
}

/// Runs the parsed command line; configuration errors exit 2, other failures 1.
pub fn main(cli: Cli) -> ExitCode {
    init_logging(&cli.log_format);
    // One process-wide TLS provider for reqwest and redis (ring: no C toolchain beyond gcc).
    let _ = rustls::crypto::ring::default_provider().install_default();
    match dispatch(cli.command) {
        Ok(code) => code,
        Err(e) => {
            if let Some(config) = e.downcast_ref::<ConfigError>() {
                eprintln!("error: {config}");
                ExitCode::from(2)
            } else {
                eprintln!("error: {e:#}");
                ExitCode::FAILURE
            }
        }
    }
}

fn init_logging(format: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
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
            sign::e2b_cloud_signature(secrets.primary(), &body)
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
    let lifecycle = Lifecycle::from_label(&args.event);
    if matches!(lifecycle, Lifecycle::Unknown(_)) {
        return Err(ConfigError::new(
            "--event",
            format!(
                "{:?} is not one of create, kill, pause, resume, update, checkpoint",
                args.event
            ),
        )
        .into());
    }
    let mut fields = serde_json::Map::new();
    fields.insert("id".into(), uuid::Uuid::new_v4().to_string().into());
    fields.insert(
        "timestamp".into(),
        jiff::Timestamp::now().to_string().into(),
    );
    fields.insert(
        "event_data".into(),
        serde_json::json!({"sandbox_metadata": {"e2b-webhook-emitter": "send-test"}}),
    );
    fields.insert("sandbox_id".into(), args.sandbox_id.clone().into());
    fields.insert("sandbox_team_id".into(), args.team_id.clone().into());
    let event = SandboxEvent::new(lifecycle, fields)
        .map_err(|e| ConfigError::new("--team-id / --sandbox-id", e.to_string()))?;
    let request = format::render(
        format,
        &event,
        "send-test",
        &secrets,
        1,
        jiff::Timestamp::now(),
    );
    let client = WebhookClient::new(timeout)?;
    let attempt = client.post(&url, &request).await;
    println!(
        "POST {url} ({format}): {} in {} ms",
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
    axum::serve(listener, receiver::router(verifier, tx))
        .with_graceful_shutdown(crate::service::shutdown_signal())
        .await?;
    printer.abort();
    Ok(ExitCode::SUCCESS)
}
