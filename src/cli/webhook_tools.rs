//! Tools for whoever receives the webhooks: `sign` and `verify` a body, `send-test` one event to
//! an endpoint, `receive` as a reference receiver.

use crate::config::{ConfigError, WebhookArgs};
use crate::deliver::format;
use crate::deliver::http::WebhookClient;
use crate::event::Lifecycle;
use crate::receiver::{self, Verifier};
use crate::util::duration::parse_duration;
use anyhow::Context;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub(super) struct SignArgs {
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
pub(super) struct VerifyArgs {
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
pub(super) struct SendTestArgs {
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
    #[arg(long, env = "WEBHOOK_TIMEOUT", default_value = crate::config::DEFAULT_WEBHOOK_TIMEOUT)]
    webhook_timeout: String,
    /// PEM file of a private CA that signed the endpoint's certificate; trusted besides the public roots.
    #[arg(long, env = "WEBHOOK_CA_FILE", value_name = "FILE")]
    webhook_ca_file: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
pub(super) struct ReceiveArgs {
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

pub(super) fn sign(args: SignArgs) -> anyhow::Result<ExitCode> {
    let secrets = args.webhook.secrets()?;
    let body = read_body(&args.file)?;
    let format = args.webhook.format()?.definition();
    let identity = args.webhook.identity("sign")?;
    let id = args.id.unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    let signing = format::Signing {
        secrets: &secrets,
        webhook_id: identity.webhook_id,
        signature_encoding: identity.signature_encoding,
        message_id: &id,
        timestamp: args
            .timestamp
            .unwrap_or_else(|| jiff::Timestamp::now().as_second()),
    };
    let mut out = std::io::stdout().lock();
    for line in format.signature_lines(&signing, &body) {
        writeln!(out, "{line}")?;
    }
    Ok(ExitCode::SUCCESS)
}

pub(super) fn verify(args: VerifyArgs) -> anyhow::Result<ExitCode> {
    let secrets = args.webhook.secrets()?;
    let body = read_body(&args.file)?;
    let wire_format = args.webhook.format()?;
    let format = wire_format.definition();
    let id_and_timestamp = match (args.id.as_deref(), args.timestamp) {
        (Some(id), Some(ts)) => Some((id, ts)),
        _ if format.signs_id_and_timestamp() => {
            return Err(ConfigError::new("--id and --timestamp", format!("{wire_format} signatures cover the webhook-id and webhook-timestamp headers; pass both")).into());
        }
        _ => None,
    };
    let valid = format.verify(&secrets, &body, &args.signature, id_and_timestamp);
    if valid {
        println!("valid");
        Ok(ExitCode::SUCCESS)
    } else {
        println!("invalid: the signature does not match this body and secret");
        Ok(ExitCode::FAILURE)
    }
}

pub(super) async fn send_test(args: SendTestArgs) -> anyhow::Result<ExitCode> {
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
    let trusted_ca = crate::config::trusted_ca(
        args.webhook_ca_file.as_deref(),
        "WEBHOOK_CA_FILE (--webhook-ca-file)",
    )?;
    let client = WebhookClient::new(
        timeout,
        crate::deliver::http::DEFAULT_RESPONSE_BODY_LIMIT,
        trusted_ca.as_ref(),
    )?;
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

pub(super) async fn receive(args: ReceiveArgs) -> anyhow::Result<ExitCode> {
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
