//! `dead-letters list` and `replay`: the shared ones in Redis, else through the running service's
//! admin API, else in the data directory.

use super::{operate, runtime};
use crate::config::{ConfigError, RunArgs};
use clap::Subcommand;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

/// Where every instance's dead letters are: the service's Redis settings (from its environment).
#[derive(Debug, clap::Args)]
pub(super) struct SharedStoreArgs {
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
pub(super) enum DeadLettersCommand {
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

pub(super) fn dead_letters(cmd: DeadLettersCommand) -> anyhow::Result<ExitCode> {
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
