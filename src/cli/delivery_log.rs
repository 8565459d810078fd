//! `delivery-log`: the delivery attempts kept in Postgres (with the events API on), newest first,
//! for a registered webhook or a configured endpoint — also when the service is not running.

use crate::config::{ConfigError, DatabaseArgs};
use crate::postgres::Database;
use crate::postgres::sandbox_events::Page;
use crate::postgres::webhooks::endpoint_id;
use std::io::Write;
use std::process::ExitCode;

/// Flags of `delivery-log`.
#[derive(Debug, clap::Args)]
pub(super) struct DeliveryLogArgs {
    #[command(flatten)]
    database: DatabaseArgs,
    /// A registered webhook's id.
    #[arg(long, value_name = "UUID", conflicts_with = "endpoint")]
    webhook: Option<uuid::Uuid>,
    /// A configured endpoint's id (`default` for WEBHOOK_URL).
    #[arg(long, value_name = "ID")]
    endpoint: Option<String>,
    /// Attempts to show (1–100).
    #[arg(long, default_value_t = 20)]
    limit: i64,
    /// Attempts to skip.
    #[arg(long, default_value_t = 0)]
    offset: i64,
    /// One JSON object per line instead of columns.
    #[arg(long)]
    json: bool,
}

pub(super) fn delivery_log(args: DeliveryLogArgs) -> anyhow::Result<ExitCode> {
    let settings = args.database.settings()?.ok_or_else(|| {
        ConfigError::new(
            "POSTGRES_CONNECTION_STRING (--postgres-connection-string)",
            "is not set; the delivery log lives in E2B's Postgres",
        )
    })?;
    let endpoint = match (args.webhook, args.endpoint) {
        (Some(id), _) => endpoint_id(id),
        (None, Some(endpoint)) => endpoint,
        (None, None) => {
            return Err(
                ConfigError::new("--webhook", "pass --webhook <UUID> or --endpoint <ID>").into(),
            );
        }
    };
    if !(1..=100).contains(&args.limit) || args.offset < 0 {
        return Err(
            ConfigError::new("--limit / --offset", "limit 1–100, offset at least 0").into(),
        );
    }
    let page = Page {
        offset: args.offset,
        limit: args.limit,
        ascending: false,
    };
    let attempts = super::runtime()?.block_on(async {
        // The pool needs the runtime.
        let database =
            Database::new(&settings).map_err(crate::postgres::StoreError::Unavailable)?;
        database.use_existing_schema().await?;
        database.endpoint_attempts(&endpoint, page).await
    })?;
    let mut out = std::io::stdout().lock();
    for a in &attempts {
        if args.json {
            writeln!(out, "{}", serde_json::to_string(a)?)?;
        } else {
            let answer = match (&a.status, &a.error) {
                (Some(status), _) => status.to_string(),
                (None, Some(error)) => error.clone(),
                (None, None) => "-".into(),
            };
            writeln!(
                out,
                "{}  {}  {}  attempt {}  {}  {}  {} ms",
                a.attempted_at,
                a.event_id,
                a.sandbox_id,
                a.attempt,
                a.outcome,
                answer,
                a.duration_ms
            )?;
        }
    }
    if attempts.is_empty() && !args.json {
        writeln!(out, "no delivery attempts logged for {endpoint}")?;
    }
    Ok(ExitCode::SUCCESS)
}
