//! `status`, `dead-letters` and `deliveries` against the running service's admin API
//! (`--admin-url` / `ADMIN_URL`, `ADMIN_TOKEN`). When nothing answers there, the callers fall back
//! to the data directory, so these commands work whether the service runs or not.

use crate::admin::client::{AdminClient, AdminClientError};
use crate::config::ConfigError;
use crate::deliver::journal::{AttemptLog, DeliveryQuery, page};
use anyhow::Context;
use serde_json::{Value, json};
use std::io::Write;
use std::process::ExitCode;

/// Where the running service's admin API is.
#[derive(Debug, clap::Args)]
pub(super) struct RemoteArgs {
    /// The running service's LISTEN_ADDR as a URL (e.g. http://127.0.0.1:9464): its admin API is
    /// used when it answers, the data directory otherwise.
    #[arg(long, env = "ADMIN_URL", hide_env_values = true)]
    admin_url: Option<String>,
    /// The service's ADMIN_TOKEN.
    #[arg(long, env = "ADMIN_TOKEN", hide_env_values = true)]
    admin_token: Option<String>,
}

/// Filters of `deliveries`.
#[derive(Debug, clap::Args)]
pub(super) struct DeliveriesArgs {
    #[command(flatten)]
    remote: RemoteArgs,
    /// Only this endpoint.
    #[arg(long)]
    endpoint: Option<String>,
    /// Only this sandbox.
    #[arg(long)]
    sandbox: Option<String>,
    /// Only this event id.
    #[arg(long)]
    event_id: Option<String>,
    /// Only this outcome: delivered, retry, dead or rejected (a failed test event).
    #[arg(long)]
    outcome: Option<String>,
    /// Only attempts at or after this time (RFC 3339).
    #[arg(long)]
    since: Option<String>,
    /// Only attempts before this time (RFC 3339).
    #[arg(long)]
    until: Option<String>,
    /// Continue after a previous page (its `next cursor`).
    #[arg(long)]
    cursor: Option<u64>,
    /// Attempts per page.
    #[arg(long, default_value_t = 50)]
    limit: usize,
    /// One JSON object per line.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    storage: crate::config::DataDirArgs,
}

impl RemoteArgs {
    fn client(&self) -> anyhow::Result<Option<AdminClient>> {
        let Some(url) = self.admin_url.as_deref().filter(|u| !u.is_empty()) else {
            return Ok(None);
        };
        let token = self
            .admin_token
            .as_deref()
            .filter(|t| !t.is_empty())
            .ok_or_else(|| {
                ConfigError::new(
                    "ADMIN_TOKEN (--admin-token)",
                    "needed with ADMIN_URL: the service's admin token",
                )
            })?;
        Ok(Some(AdminClient::new(url, token).map_err(|e| {
            ConfigError::new("ADMIN_URL (--admin-url)", e.to_string())
        })?))
    }
}

/// Runs `call` against the service; `None` means "fall back to the data directory".
fn ask<T>(
    remote: &RemoteArgs,
    call: impl AsyncFnOnce(&AdminClient) -> Result<T, AdminClientError>,
) -> anyhow::Result<Option<T>> {
    let Some(client) = remote.client()? else {
        return Ok(None);
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    match runtime.block_on(call(&client)) {
        Ok(answer) => Ok(Some(answer)),
        Err(e @ AdminClientError::Unreachable { .. }) => {
            eprintln!("note: {e}; reading the data directory instead");
            Ok(None)
        }
        Err(e) => Err(e.into()),
    }
}

/// The page `args` asks for, from the attempt log the service left in its data directory.
fn deliveries_on_disk(args: &DeliveriesArgs) -> anyhow::Result<Value> {
    let time = |setting: &'static str, value: &Option<String>| {
        value
            .as_deref()
            .map(|v| {
                DeliveryQuery::parse_time(v).ok_or_else(|| {
                    ConfigError::new(setting, "an RFC 3339 time or milliseconds since the epoch")
                })
            })
            .transpose()
    };
    let query = DeliveryQuery {
        endpoint: args.endpoint.clone(),
        sandbox_id: args.sandbox.clone(),
        event_id: args.event_id.clone(),
        outcome: args.outcome.clone(),
        since_ms: time("--since", &args.since)?,
        until_ms: time("--until", &args.until)?,
        before: args.cursor,
        limit: args.limit,
    };
    if !args.storage.data_dir.is_dir() {
        anyhow::bail!(
            "no service answered and {} is not a data directory: pass --admin-url (ADMIN_URL) of the running service or its --data-dir (DATA_DIR)",
            args.storage.data_dir.display()
        );
    }
    let log = AttemptLog::new(&args.storage.data_dir);
    let records = log.read().with_context(|| {
        format!(
            "cannot read the delivery attempt log in {}; check DATA_DIR (--data-dir)",
            args.storage.data_dir.display()
        )
    })?;
    Ok(serde_json::to_value(page(records.iter(), &query))?)
}

fn when(ms: Option<i64>) -> String {
    ms.and_then(|t| jiff::Timestamp::from_millisecond(t).ok())
        .map(|t| t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_default()
}

/// `status` from the service; `None` when it does not answer.
pub(super) fn status(remote: &RemoteArgs, as_json: bool) -> anyhow::Result<Option<ExitCode>> {
    let Some(status) = ask(remote, async |c| c.get("/status", &[]).await)? else {
        return Ok(None);
    };
    let mut out = std::io::stdout().lock();
    if as_json {
        writeln!(out, "{status}")?;
        return Ok(Some(ExitCode::SUCCESS));
    }
    let outbox = &status["outbox"];
    writeln!(
        out,
        "service {} ({}): {} events stored, {} dead letters, {} sandboxes tracked",
        status["version"].as_str().unwrap_or("?"),
        status["lease"]["mode"].as_str().unwrap_or("?"),
        outbox["events"],
        outbox["dead_letters"],
        outbox["sandboxes"]
    )?;
    let rate = |r: &Value| match r["rate"].as_f64() {
        Some(rate) => format!("{:.1} % of {}", rate * 100.0, r["attempts"]),
        None => "no attempts".into(),
    };
    for e in status["endpoints"].as_array().into_iter().flatten() {
        let oldest = match e["oldest_pending_age_s"].as_i64() {
            Some(age) => format!("oldest {age}s old"),
            None => "nothing pending".into(),
        };
        let error = e["oldest_last_error"]
            .as_str()
            .map(|err| format!(", last error: {err}"))
            .unwrap_or_default();
        writeln!(
            out,
            "  endpoint {}: {}, {} pending, {oldest}, success 5 min {} · 60 min {}{error}",
            e["id"].as_str().unwrap_or("?"),
            if e["paused"] == true {
                "PAUSED"
            } else {
                "delivering"
            },
            e["backlog"],
            rate(&e["success_5m"]),
            rate(&e["success_60m"]),
        )?;
    }
    for (name, c) in status["components"].as_object().into_iter().flatten() {
        writeln!(
            out,
            "  {name}: {} ({})",
            if c["ready"] == true {
                "ready"
            } else {
                "NOT READY"
            },
            c["detail"].as_str().unwrap_or_default()
        )?;
    }
    Ok(Some(ExitCode::SUCCESS))
}

/// `dead-letters list` from the service: the letters as the data directory would give them.
pub(super) fn dead_letters(
    remote: &RemoteArgs,
) -> anyhow::Result<Option<Vec<crate::outbox::DeadLetter>>> {
    let Some(answer) = ask(remote, async |c| c.get("/dead-letters", &[]).await)? else {
        return Ok(None);
    };
    Ok(Some(serde_json::from_value(
        answer["dead_letters"].clone(),
    )?))
}

/// `dead-letters replay` through the service, which delivers them at once.
pub(super) fn replay(
    remote: &RemoteArgs,
    ids: &[u64],
    all: bool,
    endpoint: Option<&str>,
) -> anyhow::Result<Option<ExitCode>> {
    let body = json!({"ids": if all { Vec::new() } else { ids.to_vec() }, "all": all, "endpoint": endpoint});
    let Some(report) = ask(remote, async |c| {
        c.post("/dead-letters/replay", &body).await
    })?
    else {
        return Ok(None);
    };
    let skipped = report["skipped"].as_array().cloned().unwrap_or_default();
    for s in &skipped {
        eprintln!(
            "skipped {}: {}",
            s["id"],
            s["reason"].as_str().unwrap_or_default()
        );
    }
    let replayed = report["replayed"].as_array().map_or(0, Vec::len);
    println!("replayed {replayed} dead letters; the running service is delivering them now");
    Ok(Some(if skipped.is_empty() || replayed > 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }))
}

/// `deliveries`: recent attempts, newest first, from the running service, else from the attempt
/// log in the data directory.
pub(super) fn deliveries(args: DeliveriesArgs) -> anyhow::Result<ExitCode> {
    let mut query: Vec<(&str, String)> = vec![("limit", args.limit.to_string())];
    for (name, value) in [
        ("endpoint", args.endpoint.clone()),
        ("sandbox", args.sandbox.clone()),
        ("event_id", args.event_id.clone()),
        ("outcome", args.outcome.clone()),
        ("since", args.since.clone()),
        ("until", args.until.clone()),
        ("cursor", args.cursor.map(|c| c.to_string())),
    ] {
        if let Some(value) = value {
            query.push((name, value));
        }
    }
    let page = match ask(&args.remote, async |c| c.get("/deliveries", &query).await)? {
        Some(page) => page,
        None => deliveries_on_disk(&args)?,
    };
    let mut out = std::io::stdout().lock();
    let items = page["items"].as_array().cloned().unwrap_or_default();
    if args.json {
        for item in &items {
            writeln!(out, "{item}")?;
        }
    } else if items.is_empty() {
        writeln!(out, "no deliveries match")?;
    } else {
        writeln!(
            out,
            "{:<20}  {:<12}  {:<10}  {:<20}  {:<9}  {:>6}  {:>7}  {:>8}  ERROR",
            "TIME", "ENDPOINT", "LABEL", "SANDBOX", "OUTCOME", "STATUS", "ATTEMPT", "LATENCY"
        )?;
        for d in &items {
            let text = |k: &str| d[k].as_str().unwrap_or_default().to_owned();
            writeln!(
                out,
                "{:<20}  {:<12}  {:<10}  {:<20}  {:<9}  {:>6}  {:>7}  {:>6}ms  {}",
                when(d["at_ms"].as_i64()),
                text("endpoint"),
                text("label") + if d["test"] == true { " (test)" } else { "" },
                text("sandbox_id"),
                text("outcome"),
                d["status"]
                    .as_u64()
                    .map(|s| s.to_string())
                    .unwrap_or("-".into()),
                d["attempt"],
                d["latency_ms"],
                text("error")
            )?;
        }
    }
    if let Some(cursor) = page["next_cursor"].as_u64() {
        eprintln!("more: --cursor {cursor}");
    }
    Ok(ExitCode::SUCCESS)
}
