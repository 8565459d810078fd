//! `dead-letters list` and `replay`: the shared ones in Redis, else through the running service's
//! admin API, else in the data directory.

use super::{operate, runtime};
use crate::config::{ConfigError, DataDirArgs, RedisArgs};
use crate::dead_letters::DeadLetterStore;
use clap::Subcommand;
use std::io::Write;
use std::process::ExitCode;

/// Where every instance's dead letters are: the service's Redis settings (from its environment).
#[derive(Debug, clap::Args)]
pub(super) struct SharedStoreArgs {
    #[command(flatten)]
    redis: RedisArgs,
}

impl SharedStoreArgs {
    /// The Redis settings, checked as `run` checks them; `None` without Redis.
    fn redis(&self) -> Result<Option<crate::config::RedisSettings>, ConfigError> {
        crate::config::shared_redis_config(&self.redis)
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
        #[command(flatten)]
        storage: DataDirArgs,
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
        #[command(flatten)]
        storage: DataDirArgs,
        /// Replay every dead letter.
        #[arg(long, conflicts_with = "ids")]
        all: bool,
        /// Dead-letter ids, as listed.
        #[arg(required_unless_present = "all")]
        ids: Vec<u64>,
    },
}

/// Where the dead letters are: Redis, else the data directory; and whether to ask the running
/// service's admin API first (without Redis, it holds its outbox while it runs).
fn store(
    shared: &SharedStoreArgs,
    storage: DataDirArgs,
) -> anyhow::Result<(Box<dyn DeadLetterStore>, bool)> {
    let redis = shared.redis()?;
    let ask_service = redis.is_none();
    Ok((
        crate::dead_letters::stopped(storage.data_dir, redis),
        ask_service,
    ))
}

pub(super) fn dead_letters(cmd: DeadLettersCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        DeadLettersCommand::List {
            shared,
            remote,
            storage,
            json,
        } => {
            let (store, ask_service) = store(&shared, storage)?;
            let from_service = if ask_service {
                operate::dead_letters(&remote)?
            } else {
                None
            };
            let letters = match from_service {
                Some(letters) => letters,
                None => runtime()?.block_on(store.list())?,
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
            storage,
            all,
            ids,
        } => {
            let wanted = if all { None } else { Some(ids.as_slice()) };
            let (store, ask_service) = store(&shared, storage)?;
            if ask_service
                && let Some(code) = operate::replay(&remote, &ids, all, endpoint.as_deref())?
            {
                return Ok(code);
            }
            let report = runtime()?.block_on(store.replay(wanted, endpoint.as_deref()))?;
            for (id, why) in &report.skipped {
                eprintln!("skipped {id}: {why}");
            }
            for (id, place) in &report.placed {
                eprintln!("dead letter {id} is {place}");
            }
            println!(
                "replayed {} dead letters; {}",
                report.replayed.len(),
                store.delivered()
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
